//! The OpenAI API family: chat completions, legacy completions and embeddings, and
//! every server that speaks them (vLLM, Ollama, Azure, OpenRouter, ...).
//!
//! The three endpoints share one body shape: a request is a top-level object with
//! `model`, `stream`, `tools` and sampling parameters beside its prompt, an answer
//! has `id`, `model`, `usage` and (but for embeddings) `choices`, a stream is
//! `data:` chunks of deltas closed by `data: [DONE]`. So the family reads them all
//! the same way (`request`, `response`, `chat_stream`) and each endpoint module
//! only declares an [`Endpoint`]: its path, its [`Operation`], where its prompt is
//! and whether its answer has choices. This module holds what the family shares on
//! the wire: content parts and tool calls (in requests and answers alike), the
//! `usage` object, the error shape, and the family's parsers keyed by operation
//! (what cli.rs and the fuzz targets call; [`Operation::Other`] reads leniently).
//!
//! Request parsing is the one place where a malformed body is refused (the client
//! gets an OpenAI-style 400 carrying the [`ParseError`] message), so it rejects only
//! what makes the exchange unusable (not JSON, not an object, `messages` that is not
//! a list of role-carrying objects, ...) and is lenient about everything else:
//! unknown keys, extra fields, content-part types it does not know. Response parsing
//! never judges the backend: a body that is JSON but has an unexpected shape simply
//! yields less information.

use celgate_engine::exchange::{Exchange, Operation, TokenDetails, ToolCall};
use http::{Method, StatusCode};
use serde_json::{Map, Value};

use super::json::{ParseError, string_field};
use super::stream::{FinalEvent, SseAccumulator, StreamAccumulator};
use super::tokens::json_count;
use super::{BackendAuth, Protocol, RequestFacts};
use chat_stream::ChatStream;

pub mod chat;
mod chat_stream;
pub mod completions;
pub mod embeddings;
mod request;
mod response;
pub mod responses;
mod usage;

/// One endpoint of the family, as a [`Protocol`].
#[derive(Debug)]
pub struct Endpoint {
    /// What its calls are.
    operation: Operation,
    /// Its path (requests are `POST`s); also its route label.
    path: &'static str,
    /// Reads its prompt out of the request's top-level fields.
    read_prompt: request::ReadPrompt,
    /// Its answers carry `choices` and are kept as `response_body` (embeddings
    /// answers are vectors: large and useless in a trace).
    choices: bool,
}

impl Protocol for Endpoint {
    fn recognises(&self, method: &Method, path: &str) -> bool {
        method == Method::POST && path == self.path
    }

    fn route(&self) -> &'static str {
        self.path
    }

    fn operation(&self) -> Operation {
        self.operation
    }

    fn parse_request(&self, body: &[u8], ex: &mut Exchange) -> Result<RequestFacts, ParseError> {
        request::parse(self.operation, self.read_prompt, body, ex)
    }

    fn parse_response(&self, body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
        response::parse(self.choices, body, ex)
    }

    fn parse_response_owned(&self, body: Vec<u8>, ex: &mut Exchange) -> Result<(), ParseError> {
        response::parse_owned(self.choices, body, ex)
    }

    fn stream(&self) -> Box<dyn StreamAccumulator> {
        Box::new(ChatStream::new(self.operation))
    }

    fn final_event(&self) -> FinalEvent {
        FinalEvent::Data("[DONE]")
    }

    fn error_body(
        &self,
        _status: StatusCode,
        message: &str,
        kind: &str,
        code: Option<&str>,
    ) -> Value {
        error_body(message, kind, code)
    }

    fn backend_auth(&self) -> BackendAuth {
        BackendAuth::Bearer
    }
}

/// The endpoint whose calls are `operation`; `None` for [`Operation::Other`].
pub fn for_operation(operation: Operation) -> Option<&'static Endpoint> {
    match operation {
        Operation::Chat => Some(&chat::CHAT),
        Operation::TextCompletion => Some(&completions::COMPLETIONS),
        Operation::Embeddings => Some(&embeddings::EMBEDDINGS),
        Operation::GenerateContent | Operation::Other => None,
    }
}

/// Parses a request body of `operation`'s endpoint into `ex` (see
/// [`Protocol::parse_request`]).
///
/// Sets `operation`, `request_model`, `streaming`, `prompt` (from `messages`, `prompt`
/// or `input` depending on `operation`), `tools`, `params` (every other top-level key,
/// in request order; for a duplicated key the last value wins at the first position)
/// and `request_body`. `request_body` is set even when parsing fails, so a rejected
/// call can still be traced.
///
/// For [`Operation::Other`] only the generic fields are read; `messages` is used when
/// it is well-formed and ignored otherwise.
///
/// A top-level key given twice means its last value everywhere (`model` included), as
/// it does to most JSON parsers; [`RequestFacts::duplicate_keys`] tells the caller, so
/// the proxy can forward a body that says the same to every parser upstream.
pub fn parse_request(
    operation: Operation,
    body: &[u8],
    ex: &mut Exchange,
) -> Result<RequestFacts, ParseError> {
    match for_operation(operation) {
        Some(endpoint) => endpoint.parse_request(body, ex),
        None => request::parse(operation, chat::lenient_prompt, body, ex),
    }
}

/// Parses a non-streaming response body of `operation`'s endpoint into `ex`.
///
/// Sets `response_model`, `response_id`, `choices` (chat `message`s or legacy `text`),
/// the token counts (`total_tokens` is computed when the backend only sent the two
/// parts) and `response_body`. An error body (`{"error": {...}}`) is not a parse
/// error: it simply has no choices. Embeddings responses only yield model, id and
/// usage, and their body is *not* copied into `response_body` (the vectors are large
/// and useless in a trace); their `data` is skipped without being materialized.
///
/// Only a body that is not JSON or not an object is an error; any other unexpected
/// shape yields less information. Of a key given twice, the last one counts (as for
/// the client's JSON parser), even when its value is not of the expected type. Values
/// of keys it does not read are skipped without checking that their text is UTF-8, so
/// stray bytes in such a field cost the span nothing.
pub fn parse_response(
    operation: Operation,
    body: &[u8],
    ex: &mut Exchange,
) -> Result<(), ParseError> {
    response::parse(has_choices(operation), body, ex)
}

/// [`parse_response`] for a body the caller no longer needs: it becomes
/// `response_body` without being copied (a large answer is held once, not twice).
pub fn parse_response_owned(
    operation: Operation,
    body: Vec<u8>,
    ex: &mut Exchange,
) -> Result<(), ParseError> {
    response::parse_owned(has_choices(operation), body, ex)
}

/// A reader for a stream of `operation`'s answers (legacy
/// [`Operation::TextCompletion`] streams render as a `text_completion`; an operation
/// without an endpoint reads as chat).
pub fn stream_accumulator(operation: Operation) -> SseAccumulator {
    SseAccumulator::with_accumulator(
        FinalEvent::Data("[DONE]"),
        Box::new(ChatStream::new(operation)),
    )
}

/// Whether `operation`'s answers carry choices (all but embeddings').
fn has_choices(operation: Operation) -> bool {
    for_operation(operation).is_none_or(|endpoint| endpoint.choices)
}

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The token breakdowns from a usage object's `prompt_tokens_details` and
/// `completion_tokens_details` (anything not an object reads as no details).
pub(crate) fn token_details(prompt: Option<&Value>, completion: Option<&Value>) -> TokenDetails {
    let count = |details: Option<&Value>, key: &str| details?.get(key).and_then(json_count);
    TokenDetails {
        cache_read: count(prompt, "cached_tokens"),
        cache_write: count(prompt, "cache_write_tokens"),
        input_audio: count(prompt, "audio_tokens"),
        reasoning: count(completion, "reasoning_tokens"),
        output_audio: count(completion, "audio_tokens"),
    }
}

/// The text of a `content` value: a string as is; for an array of content parts, the
/// text parts joined with `\n` (image, audio and file parts are skipped). `None` when
/// there is no text at all.
pub(crate) fn content_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(parts) => {
            let mut texts = parts.into_iter().filter_map(|part| match part {
                Value::String(s) => Some(s),
                Value::Object(mut part) => {
                    let is_text = matches!(
                        part.get("type").and_then(Value::as_str),
                        Some("text" | "input_text" | "output_text")
                    );
                    if is_text {
                        string_field(&mut part, "text")
                    } else {
                        None
                    }
                }
                _ => None,
            });
            let mut joined = texts.next()?;
            for text in texts {
                joined.push('\n');
                joined.push_str(&text);
            }
            Some(joined)
        }
        _ => None,
    }
}

/// A `tool_calls[]` element: `{id, type: "function", function: {name, arguments}}`
/// (custom tools, `{type: "custom", custom: {name, input}}`, are read the same way).
pub(crate) fn tool_call(mut call: Map<String, Value>) -> ToolCall {
    let id = string_field(&mut call, "id").unwrap_or_default();
    let (name, arguments) = match call.remove("function") {
        Some(Value::Object(mut f)) => (
            string_field(&mut f, "name").unwrap_or_default(),
            arguments_text(f.remove("arguments")),
        ),
        _ => match call.remove("custom") {
            Some(Value::Object(mut c)) => (
                string_field(&mut c, "name").unwrap_or_default(),
                arguments_text(c.remove("input")),
            ),
            _ => (String::new(), String::new()),
        },
    };
    ToolCall {
        id,
        name,
        arguments,
    }
}

/// The legacy single `function_call: {name, arguments}`; it has no id.
pub(crate) fn function_call(mut call: Map<String, Value>) -> ToolCall {
    ToolCall {
        id: String::new(),
        name: string_field(&mut call, "name").unwrap_or_default(),
        arguments: arguments_text(call.remove("arguments")),
    }
}

/// Tool-call arguments as text. They are a JSON document *as a string* on the wire;
/// some clients send the object itself, which is rendered back to JSON text.
pub(crate) fn arguments_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
