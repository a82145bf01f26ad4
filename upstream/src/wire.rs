//! Answers as HTTP responses: a JSON body, a stream of events (paced as the request's
//! [`Pace`] says; OpenAI's chunks ending in `data: [DONE]`, or another protocol's
//! events), and OpenAI's error body `{"error":{"message","type","param","code"}}`
//! (the other protocols' error shapes are in [`crate::dialect`]). Every answer carries
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

/// The content type of an SSE answer.
pub(crate) const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// An SSE answer: one `data:` event per chunk, then `data: [DONE]`, paced by `pace`.
pub(crate) fn sse_response(seq: usize, chunks: &[Value], pace: &Pace) -> Response<ScriptedBody> {
    let mut events: VecDeque<Bytes> = chunks
        .iter()
        .map(|chunk| Bytes::from(format!("data: {chunk}\n\n")))
        .collect();
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    streamed_response(seq, events, EVENT_STREAM, pace)
}

/// A named SSE event, `event: NAME` then its data (Anthropic's and Responses' way).
pub(crate) fn named_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A streamed answer of `events` (the last one ends the stream: `[DONE]`,
/// `message_stop`, ...), paced by `pace`; a cut stream never sends the last one.
pub(crate) fn streamed_response(
    seq: usize,
    mut events: VecDeque<Bytes>,
    content_type: &'static str,
    pace: &Pace,
) -> Response<ScriptedBody> {
    if let Some(n) = pace.cut_after {
        events.truncate(n.min(events.len().saturating_sub(1)));
    }
    let mut body = ScriptedBody::new(events, None);
    body.delay = pace.delay;
    body.stall = pace.stall;
    body.end = pace.end;
    body.linger = pace.linger;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
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
