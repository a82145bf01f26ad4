//! Anthropic's Messages API: `POST /v1/messages` answers one `message`, or with
//! `"stream": true` the event sequence the real API sends (`message_start`, per block
//! `content_block_start` / `content_block_delta` / `content_block_stop`, a `ping`
//! after the first start, `message_delta` with the stop reason and cumulative usage,
//! `message_stop`); `POST /v1/messages/count_tokens` answers `{"input_tokens": N}`.
//! What is said comes from [`crate::turn`]; this module reads Anthropic's request
//! (system blocks, content blocks, `tools`, `tool_choice`, `thinking`) and writes its
//! answer, counting the words of blocks marked `cache_control` apart, as Anthropic
//! reports cache reads apart from `input_tokens`.

use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::ScriptedBody;
use crate::dialect::with_anthropic_request_id;
use crate::pace::Pace;
use crate::request::{at, token_limit, word_count};
use crate::turn::{Call, Last, Offered, Reply, Said, Turn, fragments, hash_of, reply};
use crate::wire::{EVENT_STREAM, Ids, json_response, named_event, streamed_response};

/// Words of a request's input: all of them, and those in `cache_control` blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Input {
    total: usize,
    cached: usize,
}

impl Input {
    /// `input_tokens`: the words outside cached blocks (all words count at least 1).
    fn uncached(self) -> usize {
        self.total.max(1) - self.cached.min(self.total.max(1))
    }
}

/// The answer to a Messages request, paced as `pace` says.
pub(crate) fn messages(
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    pace: &Pace,
) -> Response<ScriptedBody> {
    let reply = reply(&turn(request));
    let input = input(request);
    let response = if pace.streams(request) {
        let events = events(&reply, ids, input);
        streamed_response(ids.seq, events, EVENT_STREAM, pace)
    } else {
        json_response(StatusCode::OK, ids.seq, &message(&reply, ids, input))
    };
    with_anthropic_request_id(response, ids.seq)
}

/// `POST /v1/messages/count_tokens`: the words of the whole input.
pub(crate) fn count_tokens(request: &Map<String, Value>, seq: usize) -> Response<ScriptedBody> {
    let body = json!({"input_tokens": input(request).total.max(1)});
    with_anthropic_request_id(json_response(StatusCode::OK, seq, &body), seq)
}

/// The request read into a turn.
fn turn(request: &Map<String, Value>) -> Turn<'_> {
    let messages = array(request.get("messages"));
    let user_text = messages
        .iter()
        .rev()
        .filter(|m| role(m) == Some("user"))
        .map(|m| text_of(m.get("content")))
        .find(|text| !text.is_empty());
    let last = match messages.last() {
        Some(m) if role(m) == Some("user") => {
            let results = tool_results(m.get("content"));
            if results.is_empty() {
                Last::User(text_of(m.get("content")))
            } else {
                Last::ToolResult(results.join(" "))
            }
        }
        _ => Last::Other,
    };
    let tools = array(request.get("tools"))
        .iter()
        // Server tools (`web_search_20250305`, ...) are run by Anthropic, not called.
        .filter(|t| {
            t.get("type")
                .and_then(Value::as_str)
                .is_none_or(|k| k == "custom")
        })
        .filter_map(|t| {
            Some(Offered {
                name: t.get("name")?.as_str()?,
                schema: t.get("input_schema"),
                namespace: None,
            })
        })
        .collect();
    let thinking = request
        .get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str);
    Turn {
        last,
        user_text,
        tools,
        tools_allowed: at(request, "/tool_choice/type").and_then(Value::as_str) != Some("none"),
        limit: token_limit(request),
        thinking: matches!(thinking, Some("enabled" | "adaptive")),
    }
}

fn array(value: Option<&Value>) -> &[Value] {
    value
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

/// The text of a `content` (or `system`): a string, or its `text` blocks joined by a
/// space.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The texts of the `tool_result` blocks of a `content`.
fn tool_results(content: Option<&Value>) -> Vec<String> {
    array(content)
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| text_of(b.get("content")))
        .collect()
}

/// Words of the system prompt and every message's text and tool results.
fn input(request: &Map<String, Value>) -> Input {
    let mut input = Input::default();
    let mut add = |block: &Value, text: &str| {
        let words = word_count(text);
        input.total += words;
        if block.get("cache_control").is_some_and(|c| !c.is_null()) {
            input.cached += words;
        }
    };
    let mut count = |content: Option<&Value>| match content {
        Some(Value::String(text)) => add(&Value::Null, text),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => add(
                        block,
                        block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ),
                    Some("tool_result") => add(block, &text_of(block.get("content"))),
                    _ => {}
                }
            }
        }
        _ => {}
    };
    count(request.get("system"));
    for message in array(request.get("messages")) {
        count(message.get("content"));
    }
    input
}

/// `stop_reason` of a reply.
fn stop_reason(reply: &Reply) -> &'static str {
    match &reply.said {
        Said::Calls(_) => "tool_use",
        Said::Text {
            truncated: true, ..
        } => "max_tokens",
        Said::Text { .. } => "end_turn",
    }
}

/// `usage` of a message with `output` tokens.
fn usage(input: Input, output: usize) -> Value {
    json!({
        "input_tokens": input.uncached(),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": input.cached,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "service_tier": "standard"
    })
}

/// The signature of a thinking block (opaque, derived from its text).
fn signature(thinking: &str) -> String {
    BASE64.encode(format!("scripted-signature:{:016x}", hash_of(thinking)))
}

fn tool_use_id(call: &Call) -> String {
    format!("toolu_{}", call.hash)
}

/// The non-streamed `message`.
fn message(reply: &Reply, ids: &Ids<'_>, input: Input) -> Value {
    let mut content = Vec::new();
    if let Some(thinking) = reply.thinking_text() {
        content.push(json!({
            "type": "thinking", "signature": signature(&thinking), "thinking": thinking
        }));
    }
    match &reply.said {
        Said::Text { words, .. } => content.push(json!({"type": "text", "text": words.concat()})),
        Said::Calls(calls) => content.extend(calls.iter().map(|call| {
            json!({
                "type": "tool_use", "id": tool_use_id(call), "name": call.name,
                "input": call.arguments_json()
            })
        })),
    }
    let mut message = envelope(
        ids,
        json!(content),
        Value::Null,
        usage(input, reply.output_tokens()),
    );
    message["stop_reason"] = json!(stop_reason(reply));
    message
}

/// A `message` object with these members.
fn envelope(ids: &Ids<'_>, content: Value, stop_reason: Value, usage: Value) -> Value {
    json!({
        "id": format!("msg_scripted{}", ids.seq),
        "type": "message",
        "role": "assistant",
        "model": ids.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage
    })
}

/// The events of a streamed answer.
fn events(reply: &Reply, ids: &Ids<'_>, input: Input) -> VecDeque<Bytes> {
    let mut events = VecDeque::new();
    let start = envelope(ids, json!([]), Value::Null, usage(input, 1));
    events.push_back(named_event(
        "message_start",
        &json!({"type": "message_start", "message": start}),
    ));
    let mut blocks = Blocks {
        events: &mut events,
        index: 0,
    };
    if let Some(thinking) = &reply.thinking {
        let text = thinking.concat();
        blocks.block(
            json!({"type": "thinking", "thinking": "", "signature": ""}),
            thinking
                .iter()
                .map(|w| json!({"type": "thinking_delta", "thinking": w}))
                .chain([json!({"type": "signature_delta", "signature": signature(&text)})]),
        );
    }
    match &reply.said {
        Said::Text { words, .. } => blocks.block(
            json!({"type": "text", "text": ""}),
            words
                .iter()
                .map(|w| json!({"type": "text_delta", "text": w})),
        ),
        Said::Calls(calls) => {
            for call in calls {
                let start = json!({
                    "type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}
                });
                // The real API opens every tool_use block with an empty fragment.
                let pieces = std::iter::once(String::new()).chain(fragments(&call.arguments));
                blocks.block(
                    start,
                    pieces.map(|p| json!({"type": "input_json_delta", "partial_json": p})),
                );
            }
        }
    }
    let mut final_usage = usage(input, reply.output_tokens());
    if let Value::Object(usage) = &mut final_usage {
        usage.remove("cache_creation");
        usage.remove("service_tier");
    }
    events.push_back(named_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null},
            "usage": final_usage
        }),
    ));
    events.push_back(named_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    events
}

/// Writes content blocks into a stream, numbering them; a `ping` follows the first
/// block's start, as the real API sends it.
struct Blocks<'a> {
    events: &'a mut VecDeque<Bytes>,
    index: usize,
}

impl Blocks<'_> {
    fn block(&mut self, start: Value, deltas: impl Iterator<Item = Value>) {
        let index = self.index;
        self.events.push_back(named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        if index == 0 {
            self.events
                .push_back(named_event("ping", &json!({"type": "ping"})));
        }
        for delta in deltas {
            self.events.push_back(named_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        self.events.push_back(named_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        self.index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            _ => Map::new(),
        }
    }

    #[test]
    fn cached_blocks_are_counted_apart() {
        let request = object(json!({
            "system": [
                {"type": "text", "text": "one two", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "three"}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "four five six", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "seven"}
                ]},
                {"role": "system", "content": "eight"}
            ]
        }));
        assert_eq!(
            input(&request),
            Input {
                total: 8,
                cached: 5
            }
        );
        assert_eq!(input(&request).uncached(), 3);
    }

    #[test]
    fn a_tool_result_turn_is_read_as_one() {
        let request = object(json!({"messages": [
            {"role": "user", "content": "call Read"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "file body"}]}]}
        ]}));
        let turn = turn(&request);
        assert_eq!(turn.last, Last::ToolResult("file body".into()));
        assert_eq!(turn.user_text.as_deref(), Some("call Read"));
    }
}
