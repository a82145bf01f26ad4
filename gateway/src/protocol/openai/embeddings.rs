//! `POST /v1/embeddings`: the texts to embed in `input`.
//!
//! `input` is a string or an array of them (one user message each; token-id arrays
//! carry no text and are skipped). Answers yield model, id and usage only: their
//! `data` (the vectors) is skipped unread and the body is not kept for the span.
//! Embeddings are not streamed; a backend that streams anyway is read as chat deltas.

use celgate_engine::exchange::{Message, Operation};

use super::super::json::ParseError;
use super::Endpoint;
use super::request::{PromptFields, texts_as_user_messages};

/// The embeddings endpoint.
pub static EMBEDDINGS: Endpoint = Endpoint {
    operation: Operation::Embeddings,
    path: "/v1/embeddings",
    read_prompt: prompt,
    choices: false,
};

/// The texts of an embeddings request: its `input`.
fn prompt(fields: PromptFields) -> Result<Vec<Message>, ParseError> {
    texts_as_user_messages("input", fields.input)
}
