//! The `echo-key-*` scripts: a careless backend that quotes the key it received (the
//! request's `Authorization: Bearer <key>`) in a 401, in headers, in a reply's text,
//! in a stream event split in the middle of the key, in an error event, or gzipped.
//! They exist to prove the gateway masks its backend keys wherever they come back.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::Echo;
use crate::body::ScriptedBody;
use crate::chat::chat;
use crate::pace::Pace;
use crate::shape::Shape;
use crate::wire::{Ids, error_response};

/// The key a request carried: its `Authorization: Bearer <key>` value (empty when
/// there is none).
pub(super) fn received_key(headers: &http::HeaderMap) -> String {
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    value
        .strip_prefix("Bearer ")
        .map_or(value.clone(), str::to_owned)
}

/// Pause before each frame of an `echo-key-stream` answer, so the two halves of the key
/// reach the gateway as separate reads.
const ECHO_FRAME_PAUSE: Duration = Duration::from_millis(20);

/// The answer of an `echo-key-*` script (see the crate doc).
pub(super) fn echo_key(
    echo: Echo,
    key: &str,
    request: &Map<String, Value>,
    ids: &Ids<'_>,
) -> Response<ScriptedBody> {
    let mut pace = Pace::default();
    match echo {
        Echo::Unauthorized => {
            let message = format!(
                "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            return error_response(
                StatusCode::UNAUTHORIZED,
                ids.seq,
                &message,
                "invalid_request_error",
                Some("invalid_api_key"),
            );
        }
        Echo::Header => {
            let mut response = chat(request, ids, &pace);
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
    let mut request = request.clone();
    request.insert(
        "messages".into(),
        json!([{"role": "user", "content": format!("my key is {key}")}]),
    );
    let mut response = chat(&request, ids, &pace);
    let body = response.body_mut();
    match echo {
        Echo::Stream => {
            body.events = split_in_the_middle(std::mem::take(&mut body.events), key.as_bytes());
            body.delay = ECHO_FRAME_PAUSE;
        }
        Echo::StreamError => {
            body.events.truncate(2);
            let error = json!({"error": {
                "message": format!("Invalid API key {key} (echo-key-sse-error)."),
                "type": "invalid_request_error",
                "param": null,
                "code": "invalid_api_key"
            }});
            body.events
                .push_back(Bytes::from(format!("event: error\ndata: {error}\n\n")));
        }
        Echo::Gzip => return Shape::Gzip.apply(response),
        Echo::Unauthorized | Echo::Header | Echo::Text => {}
    }
    response
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
