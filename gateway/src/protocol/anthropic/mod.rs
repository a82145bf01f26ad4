//! Anthropic's Messages API, `POST /v1/messages`: what Claude Code and the official
//! `anthropic` SDKs speak.
//!
//! Its shapes differ from OpenAI's in every place a span looks: the system prompt is
//! a top-level `system` (a string or text blocks) rather than a message, content is
//! a list of typed blocks (`text`, `image`, `tool_use`, `tool_result`, `thinking`,
//! ...), an answer is one message whose `content` blocks carry text, tool calls and
//! reasoning side by side, usage reports cached input apart from `input_tokens`, and
//! a stream is named events (`message_start`, `content_block_delta`, ...) closed by
//! `message_stop` rather than `data:` chunks closed by `[DONE]`. So the protocol is
//! its own module: [`request`] reads a request into the chat vocabulary the engine
//! speaks (system first, tool results as `tool` messages, tool use as `tool_calls`),
//! [`metadata`] finds the session and user a client names in `metadata.user_id`,
//! [`response`] reads a whole answer, [`stream`] accumulates a streamed one. This
//! module holds what they share: a block's text, a tool input as text, the usage
//! object's token rule, and the error shape celgate answers in.
//!
//! Token counts follow the engine's rule (see `llm.inputTokens`): Anthropic reports
//! `input_tokens` *without* the cached part, so the input count is
//! `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`, the cache
//! counts are its details, and the total (which Anthropic does not report) is input
//! plus output. Text blocks of an answer are joined as they stand (citations split one
//! sentence over several blocks), thinking blocks with `\n`.

use celgate_engine::exchange::{Api, Choice, Exchange, Operation, TokenDetails, ToolCall};
use http::{Method, StatusCode};
use serde_json::{Map, Value};

use super::json::{ParseError, string_field};
use super::stream::{FinalEvent, StreamAccumulator};
use super::tokens::{Usage, json_count};
use super::{BackendAuth, Protocol, RequestFacts};

mod metadata;
mod request;
mod response;
mod stream;

/// The Messages API as a [`Protocol`].
#[derive(Debug)]
pub struct Messages;

/// The Messages endpoint.
pub static MESSAGES: Messages = Messages;

/// Its one path (Claude Code adds `?beta=true`, a query the path does not carry).
const PATH: &str = "/v1/messages";

impl Protocol for Messages {
    fn recognises(&self, method: &Method, path: &str) -> bool {
        method == Method::POST && path == PATH
    }

    fn route(&self) -> &'static str {
        PATH
    }

    fn operation(&self) -> Operation {
        Operation::Chat
    }

    fn parse_request(&self, body: &[u8], ex: &mut Exchange) -> Result<RequestFacts, ParseError> {
        ex.operation = Operation::Chat;
        ex.api = Api::Messages;
        request::parse(body, ex)
    }

    fn parse_response(&self, body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
        response::parse(body, ex)
    }

    fn parse_response_owned(&self, body: Vec<u8>, ex: &mut Exchange) -> Result<(), ParseError> {
        response::parse_owned(body, ex)
    }

    fn stream(&self) -> Box<dyn StreamAccumulator> {
        Box::new(stream::MessagesStream::default())
    }

    fn final_event(&self) -> FinalEvent {
        FinalEvent::Named("message_stop")
    }

    fn error_body(
        &self,
        status: StatusCode,
        message: &str,
        kind: &str,
        _code: Option<&str>,
    ) -> Value {
        error_body(status, message, kind)
    }

    fn backend_auth(&self) -> BackendAuth {
        BackendAuth::Header("x-api-key")
    }

    /// Anthropic's own API: `provider: anthropic` backends only.
    fn serves(&self, provider: &str) -> bool {
        provider == "anthropic"
    }

    /// `POST /v1/messages/count_tokens`: forwarded to an Anthropic backend unread
    /// (it runs no model, so it is not a call to trace).
    fn side_route(&self, method: &Method, path: &str) -> bool {
        method == Method::POST && path == COUNT_TOKENS_PATH
    }
}

/// Anthropic's token counting endpoint.
const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";

/// An error celgate answers itself, in Anthropic's shape:
/// `{"type": "error", "error": {"type", "message"}}`. Anthropic's error object has
/// no `code`; the message (written for the operator) says what the code would.
pub fn error_body(status: StatusCode, message: &str, kind: &str) -> Value {
    serde_json::json!({
        "type": "error",
        "error": {"type": error_type(status, kind), "message": message},
    })
}

/// Anthropic's error `type` for an error of OpenAI `kind` answered with `status`:
/// the kinds that name a cause keep it, the generic ones (`invalid_request_error`,
/// `upstream_error`) take the type Anthropic documents for the status.
fn error_type(status: StatusCode, kind: &str) -> &'static str {
    match kind {
        "authentication_error" => return "authentication_error",
        "permission_error" => return "permission_error",
        "not_found_error" => return "not_found_error",
        "rate_limit_error" => return "rate_limit_error",
        "timeout" => return "timeout_error",
        _ => {}
    }
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The four counts of an Anthropic `usage` object, as reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cache_creation: Option<i64>,
    pub cache_read: Option<i64>,
}

impl Counts {
    /// The counts of a `usage` object (mistyped or negative ones are none).
    fn of(usage: &Map<String, Value>) -> Counts {
        let count = |key: &str| usage.get(key).and_then(json_count);
        Counts {
            input: count("input_tokens"),
            output: count("output_tokens"),
            cache_creation: count("cache_creation_input_tokens"),
            cache_read: count("cache_read_input_tokens"),
        }
    }

    /// The exchange's usage: input counts the cached tokens too (the OTel GenAI
    /// rule), the cache counts are its details; no total, so it is input + output.
    fn usage(self) -> Usage {
        let input = sum([self.input, self.cache_read, self.cache_creation]);
        Usage {
            input,
            output: self.output,
            total: None,
            details: TokenDetails {
                cache_read: self.cache_read,
                cache_write: self.cache_creation,
                ..TokenDetails::default()
            },
        }
    }

    /// Whether the usage object said anything at all.
    fn any(self) -> bool {
        self != Counts::default()
    }
}

/// The sum of the counts present; `None` when none is (or it overflows).
fn sum(counts: [Option<i64>; 3]) -> Option<i64> {
    let mut present = counts.into_iter().flatten();
    let first = present.next()?;
    present.try_fold(first, i64::checked_add)
}

/// A tool's `input` as the text a span shows: an object (the API's shape) as compact
/// JSON, a string (what some clients send) as is, nothing as `""`.
pub(crate) fn input_text(input: Option<Value>) -> String {
    match input {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

/// A `tool_use` block `{id, name, input}` as a tool call.
fn tool_use(mut block: Map<String, Value>) -> ToolCall {
    ToolCall {
        id: string_field(&mut block, "id").unwrap_or_default(),
        name: string_field(&mut block, "name").unwrap_or_default(),
        arguments: input_text(block.remove("input")),
    }
}

/// The one choice of an answer, from what its content blocks said: text blocks
/// joined as they stand, thinking blocks joined with `\n`.
fn choice(
    role: String,
    texts: Vec<String>,
    thinking: Vec<String>,
    tool_calls: Vec<ToolCall>,
    stop_reason: Option<String>,
) -> Choice {
    Choice {
        index: 0,
        role,
        content: join(texts, ""),
        tool_calls,
        finish_reason: stop_reason,
        reasoning: join(thinking, "\n"),
    }
}

/// A block's `type`, `""` when it has none.
fn block_type(block: &Map<String, Value>) -> &str {
    block
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Joins `parts` with `sep`; `None` when there are none.
fn join(parts: impl IntoIterator<Item = String>, sep: &str) -> Option<String> {
    let mut parts = parts.into_iter();
    let mut joined = parts.next()?;
    for part in parts {
        joined.push_str(sep);
        joined.push_str(&part);
    }
    Some(joined)
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
