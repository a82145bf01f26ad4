//! How each protocol says something went wrong. The endpoint a request is for decides
//! its [`Dialect`], and every error answer (a bad body, a fault script's 500 or 429,
//! an `echo-key-401`) and mid-stream error event (`sse-error`) is written in it, as
//! the real API would: OpenAI `{"error":{"message","type","param","code"}}`, Anthropic
//! `{"type":"error","error":{"type","message"}}` (and a `request-id` header), Gemini
//! `{"error":{"code","message","status"}}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::ScriptedBody;
use crate::wire::{error_response, json_response};

/// The error shape of a protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Chat, legacy completions, embeddings.
    #[default]
    OpenAi,
    /// Responses: OpenAI's error bodies, but typed and numbered stream events.
    Responses,
    /// Messages.
    Anthropic,
    /// generateContent.
    Gemini,
}

/// What went wrong, in the words each dialect has for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The request is wrong (400, 404, 405, 413).
    InvalidRequest,
    /// The key is wrong (401).
    Unauthorized,
    /// Too many requests (429).
    RateLimited,
    /// The server failed (500, 503).
    Server,
}

impl Dialect {
    /// An error answer with `status`.
    pub(crate) fn error(
        self,
        status: StatusCode,
        seq: usize,
        problem: Problem,
        message: &str,
    ) -> Response<ScriptedBody> {
        match self {
            Dialect::OpenAi | Dialect::Responses => {
                let (kind, code) = match problem {
                    Problem::InvalidRequest => ("invalid_request_error", None),
                    Problem::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
                    Problem::RateLimited => ("requests", Some("rate_limit_exceeded")),
                    Problem::Server => ("server_error", None),
                };
                error_response(status, seq, message, kind, code)
            }
            Dialect::Anthropic => {
                let body = json!({
                    "type": "error",
                    "error": {"type": anthropic_kind(status, problem), "message": message},
                    "request_id": format!("req_scripted{seq}")
                });
                with_anthropic_request_id(json_response(status, seq, &body), seq)
            }
            Dialect::Gemini => {
                let body = json!({"error": {
                    "code": status.as_u16(),
                    "message": message,
                    "status": gemini_status(status, problem)
                }});
                json_response(status, seq, &body)
            }
        }
    }

    /// A mid-stream error event; `sequence` is the number of events before it (the
    /// Responses API numbers its events).
    pub(crate) fn stream_error(self, message: &str, sequence: usize) -> Bytes {
        let text = match self {
            Dialect::OpenAi => {
                let error = json!({"error": {
                    "message": message, "type": "server_error", "param": null, "code": null
                }});
                format!("event: error\ndata: {error}\n\n")
            }
            Dialect::Responses => {
                let error = json!({
                    "type": "error",
                    "code": "server_error",
                    "message": message,
                    "param": null,
                    "sequence_number": sequence
                });
                format!("event: error\ndata: {error}\n\n")
            }
            Dialect::Anthropic => {
                let error = json!({
                    "type": "error",
                    "error": {"type": "api_error", "message": message}
                });
                format!("event: error\ndata: {error}\n\n")
            }
            Dialect::Gemini => {
                let error =
                    json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}});
                format!("data: {error}\r\n\r\n")
            }
        };
        Bytes::from(text)
    }
}

/// Anthropic's `error.type` for a status.
fn anthropic_kind(status: StatusCode, problem: Problem) -> &'static str {
    match (problem, status.as_u16()) {
        (Problem::Unauthorized, _) => "authentication_error",
        (Problem::RateLimited, _) => "rate_limit_error",
        (Problem::Server, 529) => "overloaded_error",
        (Problem::Server, _) => "api_error",
        (Problem::InvalidRequest, 404 | 405) => "not_found_error",
        (Problem::InvalidRequest, 413) => "request_too_large",
        (Problem::InvalidRequest, _) => "invalid_request_error",
    }
}

/// Gemini's (Google RPC) `error.status` for a status.
fn gemini_status(status: StatusCode, problem: Problem) -> &'static str {
    match (problem, status.as_u16()) {
        (Problem::Unauthorized, _) => "UNAUTHENTICATED",
        (Problem::RateLimited, _) => "RESOURCE_EXHAUSTED",
        (Problem::Server, 503) => "UNAVAILABLE",
        (Problem::Server, _) => "INTERNAL",
        (Problem::InvalidRequest, 404) => "NOT_FOUND",
        (Problem::InvalidRequest, _) => "INVALID_ARGUMENT",
    }
}

/// Anthropic names its request id `request-id`; the answer keeps `x-request-id` too.
pub(crate) fn with_anthropic_request_id(
    mut response: Response<ScriptedBody>,
    seq: usize,
) -> Response<ScriptedBody> {
    if let Ok(value) = HeaderValue::from_str(&format!("req_scripted{seq}")) {
        response.headers_mut().insert("request-id", value);
    }
    response
}
