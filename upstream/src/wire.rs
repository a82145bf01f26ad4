//! OpenAI-shaped answers as HTTP responses: a JSON body, an SSE stream of chunks
//! ending in `data: [DONE]` (paced as the request's [`Pace`] says), and the error body
//! `{"error":{"message","type","param","code"}}`. Every answer carries
//! `x-request-id: req_scripted{N}`, `N` being its request's position ([`Ids`]).

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::body::ScriptedBody;
use crate::pace::Pace;

/// What identifies one answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ids<'a> {
    /// 1-based position of the request.
    pub(crate) seq: usize,
    /// The request's model, echoed in the response.
    pub(crate) model: &'a str,
}

/// A JSON answer (`content-length` set).
pub(crate) fn json_response(
    status: StatusCode,
    seq: usize,
    body: &Value,
) -> Response<ScriptedBody> {
    json_text_response(status, seq, Bytes::from(body.to_string()))
}

/// A JSON answer whose text is already written.
pub(crate) fn json_text_response(
    status: StatusCode,
    seq: usize,
    body: Bytes,
) -> Response<ScriptedBody> {
    let mut response = Response::new(ScriptedBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert_request_id(headers, seq);
    response
}

/// An SSE answer: one `data:` event per chunk, then `data: [DONE]`, paced by `pace`.
pub(crate) fn sse_response(seq: usize, chunks: &[Value], pace: &Pace) -> Response<ScriptedBody> {
    let mut events: VecDeque<Bytes> = chunks
        .iter()
        .map(|chunk| Bytes::from(format!("data: {chunk}\n\n")))
        .collect();
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    if let Some(n) = pace.cut_after {
        // Never let `[DONE]` through a cut stream, however large `n` is.
        events.truncate(n.min(events.len() - 1));
    }
    let mut body = ScriptedBody::new(events, None);
    body.delay = pace.delay;
    body.stall = pace.stall;
    body.end = pace.end;
    body.linger = pace.linger;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    insert_request_id(headers, seq);
    response
}

pub(crate) fn insert_request_id(headers: &mut http::HeaderMap, seq: usize) {
    if let Ok(value) = HeaderValue::from_str(&format!("req_scripted{seq}")) {
        headers.insert("x-request-id", value);
    }
}

/// An OpenAI-style error: `{"error":{"message","type","param":null,"code"}}`.
pub(crate) fn error_response(
    status: StatusCode,
    seq: usize,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<ScriptedBody> {
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    json_response(status, seq, &body)
}

pub(crate) fn invalid_request(
    status: StatusCode,
    seq: usize,
    message: &str,
) -> Response<ScriptedBody> {
    error_response(status, seq, message, "invalid_request_error", None)
}
