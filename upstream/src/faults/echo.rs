//! The `echo-key-*` scripts: a careless backend that quotes the key it received (where
//! the request's protocol sends it) in a 401, in headers, in a reply's text,
//! in a stream event split in the middle of the key, in an error event, or gzipped.
//! They exist to prove the gateway masks its backend keys wherever they come back.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::Echo;
use crate::body::ScriptedBody;
use crate::dialect::{Dialect, Problem};
use crate::pace::Pace;
use crate::request::Endpoint;
use crate::route::{query_value, respond};
use crate::shape::Shape;
use crate::store::ResponseStore;
use crate::wire::Ids;

/// The key a request carried, where its protocol sends it (empty when there is none):
/// `Authorization: Bearer <key>` (OpenAI; Anthropic's fallback), `x-api-key`
/// (Anthropic), `x-goog-api-key` or `?key=` (Gemini).
pub(super) fn received_key(parts: &Parts, dialect: Dialect) -> String {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let bearer = || {
        let value = header(header::AUTHORIZATION.as_str()).unwrap_or_default();
        value
            .strip_prefix("Bearer ")
            .map_or(value.clone(), str::to_owned)
    };
    match dialect {
        Dialect::OpenAi | Dialect::Responses => bearer(),
        Dialect::Anthropic => header("x-api-key").unwrap_or_else(bearer),
        Dialect::Gemini => header("x-goog-api-key")
            .or_else(|| query_value(parts.uri.query(), "key").map(str::to_owned))
            .unwrap_or_default(),
    }
}

/// Pause before each frame of an `echo-key-stream` answer, so the two halves of the key
/// reach the gateway as separate reads.
const ECHO_FRAME_PAUSE: Duration = Duration::from_millis(20);

/// The answer of an `echo-key-*` script (see the crate doc) on a conversational
/// endpoint.
pub(super) fn echo_key(
    echo: Echo,
    key: &str,
    endpoint: Endpoint,
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    store: &ResponseStore,
) -> Response<ScriptedBody> {
    let dialect = endpoint.dialect();
    let mut pace = Pace::default();
    match echo {
        Echo::Unauthorized => {
            let message = match dialect {
                Dialect::Anthropic => format!("invalid x-api-key: {key}"),
                Dialect::Gemini => {
                    format!("API key not valid: {key}. Please pass a valid API key.")
                }
                Dialect::OpenAi | Dialect::Responses => format!(
                    "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."
                ),
            };
            return dialect.error(
                StatusCode::UNAUTHORIZED,
                ids.seq,
                Problem::Unauthorized,
                &message,
            );
        }
        Echo::Header => {
            let mut response = respond(endpoint, request, ids, &pace, store);
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}")) {
                headers.insert("x-echoed-authorization", value);
            }
            if let Ok(name) = http::HeaderName::from_bytes(format!("x-key-{key}").as_bytes()) {
                headers.insert(name, HeaderValue::from_static("1"));
            }
            return response;
        }
        Echo::Text | Echo::Gzip => pace.force_plain = true,
        Echo::Stream | Echo::StreamError => pace.force_stream = true,
    }
    let request = saying(endpoint, request, &format!("my key is {key}"));
    let mut response = respond(endpoint, &request, ids, &pace, store);
    let body = response.body_mut();
    match echo {
        Echo::Stream => {
            body.events = split_in_the_middle(std::mem::take(&mut body.events), key.as_bytes());
            body.delay = ECHO_FRAME_PAUSE;
        }
        Echo::StreamError => {
            body.events.truncate(2);
            let message = format!("Invalid API key {key} (echo-key-sse-error).");
            body.events.push_back(dialect.stream_error(&message, 2));
        }
        Echo::Gzip => return Shape::Gzip.apply(response),
        Echo::Unauthorized | Echo::Header | Echo::Text => {}
    }
    response
}

/// `request` with its conversation replaced by one user message saying `text`, in
/// the endpoint's protocol.
fn saying(endpoint: Endpoint, request: &Map<String, Value>, text: &str) -> Map<String, Value> {
    let mut request = request.clone();
    let (field, conversation) = match endpoint.dialect() {
        Dialect::OpenAi => ("messages", json!([{"role": "user", "content": text}])),
        Dialect::Anthropic => ("messages", json!([{"role": "user", "content": text}])),
        Dialect::Responses => ("input", json!(text)),
        Dialect::Gemini => (
            "contents",
            json!([{"role": "user", "parts": [{"text": text}]}]),
        ),
    };
    request.insert(field.into(), conversation);
    request
}

/// `frames` with each one that holds `needle` cut in two in the middle of it.
fn split_in_the_middle(frames: VecDeque<Bytes>, needle: &[u8]) -> VecDeque<Bytes> {
    let mut out = VecDeque::new();
    for frame in frames {
        let at = (!needle.is_empty())
            .then(|| frame.windows(needle.len()).position(|w| w == needle))
            .flatten();
        match at {
            Some(at) => {
                let middle = at + needle.len() / 2;
                out.push_back(frame.slice(..middle));
                out.push_back(frame.slice(middle..));
            }
            None => out.push_back(frame),
        }
    }
    out
}
