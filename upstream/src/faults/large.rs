//! The answers too large to build as a `Value`: `flood-<MB>` (a stream of identical
//! 1 KiB deltas sharing one buffer, so hundreds of MiB cost the upstream nothing) and
//! `choices-<n>` (one JSON body of `n` short choices, written as text).

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::CREATED;
use crate::body::ScriptedBody;
use crate::chat::BIG_PIECE_BYTES;
use crate::wire::{Ids, insert_request_id, json_text_response};

/// A `flood-<MB>` answer: `mib` MiB of content in identical 1 KiB deltas. The events
/// share one buffer, so the upstream sends hundreds of MiB without holding them.
pub(super) fn flood(ids: &Ids<'_>, mib: usize) -> Response<ScriptedBody> {
    let id = format!("chatcmpl-scripted{}", ids.seq);
    let chunk = |delta: Value, finish_reason: Value| {
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": ids.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let piece = "x".repeat(BIG_PIECE_BYTES);
    let content = chunk(json!({"content": piece}), Value::Null);
    let count = mib * (1 << 20) / BIG_PIECE_BYTES;
    let mut events = VecDeque::with_capacity(count + 3);
    events.push_back(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    events.extend(std::iter::repeat_n(content, count));
    events.push_back(chunk(json!({}), json!("stop")));
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    let mut response = Response::new(ScriptedBody::new(events, None));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    insert_request_id(headers, ids.seq);
    response
}

/// A `choices-<n>` answer: one JSON body with `n` short choices (~90 bytes each, so
/// 300k fit under the gateway's 32 MiB capture limit), written as text (a `Value` of
/// a million choices would cost the upstream a gigabyte).
pub(super) fn many_choices(ids: &Ids<'_>, n: usize) -> Response<ScriptedBody> {
    use std::fmt::Write as _;
    let mut body = format!(
        r#"{{"id":"chatcmpl-scripted{}","object":"chat.completion","created":{CREATED},"model":{},"choices":["#,
        ids.seq,
        json!(ids.model)
    );
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"index":{i},"message":{{"role":"assistant","content":"c{i:07}"}},"finish_reason":"stop"}}"#
        );
    }
    let _ = write!(
        body,
        r#"],"usage":{{"prompt_tokens":1,"completion_tokens":{n},"total_tokens":{}}}}}"#,
        n + 1
    );
    json_text_response(StatusCode::OK, ids.seq, Bytes::from(body))
}
