//! `POST /v1/completions`: legacy text completions, the prompt in `prompt`.
//!
//! `prompt` is a string or an array of them (one user message each; token-id arrays
//! carry no text and are skipped). Answers carry `choices[].text`, streams text
//! deltas; both are read by the family and a stream renders as a `text_completion`.

use celgate_engine::exchange::{Message, Operation};

use super::super::json::ParseError;
use super::Endpoint;
use super::request::{PromptFields, texts_as_user_messages};

/// The legacy completions endpoint.
pub static COMPLETIONS: Endpoint = Endpoint {
    operation: Operation::TextCompletion,
    path: "/v1/completions",
    read_prompt: prompt,
    choices: true,
};

/// The prompt of a legacy completion: its `prompt` text(s).
fn prompt(fields: PromptFields) -> Result<Vec<Message>, ParseError> {
    texts_as_user_messages("prompt", fields.prompt)
}
