//! `POST /v1/responses`: the OpenAI Responses API (Codex, the OpenAI Agents SDK,
//! `client.responses.create`), read into the same exchange as chat.
//!
//! Responses speaks in *items* rather than messages: the request's `input` is a
//! string or a list of items (messages, `function_call`s, `function_call_output`s,
//! reasoning, hosted-tool calls, references), the answer's `output` is a list of
//! items, and a stream is typed events (`response.output_text.delta`, ...) that end
//! with the whole response in `response.completed`, `response.failed` or
//! `response.incomplete` (no `data: [DONE]`). This module maps them onto the chat
//! vocabulary of the [`Exchange`] (`request.rs`, `response.rs`, `stream.rs`) and
//! shares the rest with its family: the error shape, the token breakdowns, the
//! lenient stream fields. Only `POST /v1/responses` is read; `GET`/`DELETE
//! /v1/responses/{id}` and `/input_items` are side routes the proxy forwards
//! untraced.
//!
//! The mapping, decided once:
//! - `instructions` is the first system instruction and the `system` message that
//!   opens the prompt; `system`/`developer` input messages stay where they are (roles
//!   kept) and their text follows it in `llm.systemInstructions`, as in chat.
//! - `function_call` items are `tool_calls` of an `assistant` message (consecutive
//!   calls share one), `function_call_output` items `tool` messages; the free-form
//!   `custom_tool_call`/`_output` items (Codex's `apply_patch`) are read the same
//!   way, their `input` as the arguments. Reasoning, hosted-tool calls
//!   (`web_search_call`, ...) and `item_reference`s carry no prompt text.
//! - `user`, else `safety_identifier`, is `llm.userId`; every top-level key but
//!   `model`, `input`, `instructions`, `tools`, `stream`, `metadata`, `user` and
//!   `safety_identifier` is a parameter.
//! - An answer is one choice (index 0): the `output_text` of its message items
//!   joined with `\n` (refusals, like chat's `message.refusal`, are not content),
//!   its function and custom tool calls (id = `call_id`), and as reasoning the
//!   summaries of its reasoning items (a reasoning item without a summary gives its
//!   `reasoning_text` content, as open-weight models served this way send).
//! - Responses reports no finish reason, so one is derived from `status`:
//!   `completed` is `stop`, or `tool_calls` when the output calls a function (chat's
//!   spelling, so `llm.finishReasons` means the same across the family);
//!   `incomplete` is `incomplete_details.reason` (`max_output_tokens`,
//!   `content_filter`; `incomplete` when it gives none); `failed` is `error`;
//!   `cancelled` is `cancelled`; a response still `in_progress` (or a stream cut
//!   before its final event) has none.
//! - Tokens are `usage` as reported: `input_tokens` (cached ones included, as the
//!   GenAI conventions want), `input_tokens_details.cached_tokens`, `output_tokens`
//!   (reasoning included), `output_tokens_details.reasoning_tokens`, `total_tokens`.
//!   A stream carries them only in its final event.

use celgate_engine::exchange::{Exchange, Operation};
use http::{Method, StatusCode};
use serde_json::Value;

use super::super::json::ParseError;
use super::super::stream::{FinalEvent, StreamAccumulator};
use super::super::{BackendAuth, Protocol, RequestFacts};

mod request;
mod response;
mod stream;

pub use stream::ResponsesStream;

/// The path of the one Responses call celgate reads.
const PATH: &str = "/v1/responses";

/// The events that end a Responses stream: each carries the whole response.
pub const FINAL_EVENTS: &[&str] = &[
    "response.completed",
    "response.failed",
    "response.incomplete",
];

/// The OpenAI Responses protocol.
#[derive(Debug)]
pub struct Responses;

/// `POST /v1/responses`.
pub static RESPONSES: Responses = Responses;

impl Protocol for Responses {
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
        request::parse(body, ex)
    }

    fn parse_response(&self, body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
        ex.response_body = Some(String::from_utf8_lossy(body).into_owned());
        response::parse(body, ex)
    }

    fn parse_response_owned(&self, body: Vec<u8>, ex: &mut Exchange) -> Result<(), ParseError> {
        let parsed = response::parse(&body, ex);
        ex.response_body = Some(match String::from_utf8(body) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        });
        parsed
    }

    fn stream(&self) -> Box<dyn StreamAccumulator> {
        Box::new(ResponsesStream::default())
    }

    fn final_event(&self) -> FinalEvent {
        FinalEvent::AnyNamed(FINAL_EVENTS)
    }

    fn error_body(
        &self,
        _status: StatusCode,
        message: &str,
        kind: &str,
        code: Option<&str>,
    ) -> Value {
        super::error_body(message, kind, code)
    }

    fn backend_auth(&self) -> BackendAuth {
        BackendAuth::Bearer
    }

    /// OpenAI's API and the servers compatible with it: not Anthropic's or Gemini's
    /// own (their keys and paths are not OpenAI's).
    fn serves(&self, provider: &str) -> bool {
        !matches!(provider, "anthropic" | "gemini")
    }

    /// A stored answer and what hangs off it: `GET`/`DELETE /v1/responses/{id}`,
    /// `GET /v1/responses/{id}/input_items`, `POST /v1/responses/{id}/cancel`.
    fn side_route(&self, _method: &Method, path: &str) -> bool {
        path.strip_prefix("/v1/responses/")
            .is_some_and(|rest| !rest.is_empty())
    }
}

/// The finish reason of a response in `status` (see the module doc): Responses
/// reports none, so it is derived, in chat's vocabulary where chat has a word.
fn finish_reason(status: Option<&str>, incomplete: Option<&str>, calls: bool) -> Option<String> {
    let reason = match status? {
        "completed" if calls => "tool_calls",
        "completed" => "stop",
        "incomplete" => incomplete.unwrap_or("incomplete"),
        "failed" => "error",
        "cancelled" => "cancelled",
        _ => return None,
    };
    Some(reason.to_owned())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
