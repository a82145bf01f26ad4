//! `POST /v1/chat/completions`: the assistant's reply to the last user message, or two
//! parallel calls to the request's tools, as one `chat.completion` or as a stream of
//! `chat.completion.chunk`s (a word per delta; tool-call arguments in interleaved
//! fragments). The crate doc says what each answer contains.

use std::collections::VecDeque;

use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::CREATED;
use crate::body::ScriptedBody;
use crate::pace::Pace;
use crate::request::{limit_words, token_limit, wants_usage, word_count, words};
use crate::turn::{call_hash, fragments, reply_text, synthesized_arguments};
use crate::wire::{Ids, json_response, sse_response};

/// Bytes of content per event of a streamed `big-<MB>` answer (and of a `flood-<MB>`
/// one).
pub(crate) const BIG_PIECE_BYTES: usize = 1024;

/// One tool call of a reply.
#[derive(Clone, Debug)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// The assistant's reply to a chat request.
#[derive(Clone, Debug)]
enum ChatReply {
    /// Text, as the words a stream sends one per delta; `truncated` means it stopped at
    /// the token limit.
    Text {
        words: Vec<String>,
        truncated: bool,
    },
    ToolCalls(Vec<ToolCall>),
}

/// The answer to a chat request, paced as `pace` says.
pub(crate) fn chat(
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    pace: &Pace,
) -> Response<ScriptedBody> {
    let (reply, prompt_tokens) = reply(request, pace);
    let usage = usage(prompt_tokens, &reply);
    let id = format!("chatcmpl-scripted{}", ids.seq);
    if !pace.streams(request) {
        let body = completion(&reply, &id, ids, usage);
        return json_response(StatusCode::OK, ids.seq, &body);
    }
    let chunks = chunks(&reply, &id, ids, usage, wants_usage(request));
    sse_response(ids.seq, &chunks, pace)
}

/// The reply to `request` and its prompt's token count.
fn reply(request: &Map<String, Value>, pace: &Pace) -> (ChatReply, usize) {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| message_text(m.get("content").unwrap_or(&Value::Null)));
    let prompt_tokens = messages
        .iter()
        .map(|m| word_count(&message_text(m.get("content").unwrap_or(&Value::Null))))
        .sum::<usize>()
        .max(1);

    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let last_is_user = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("user");
    let tools_allowed = request.get("tool_choice").and_then(Value::as_str) != Some("none");

    let called = match tools.first() {
        Some(first) if last_is_user && tools_allowed => {
            Some([first, tools.get(1).unwrap_or(first)])
        }
        _ => None,
    };
    let reply = if let Some(mib) = pace.big {
        ChatReply::Text {
            words: big_pieces(mib),
            truncated: false,
        }
    } else if let Some(called) = called {
        let text = user_text.unwrap_or_default();
        ChatReply::ToolCalls(
            called
                .iter()
                .enumerate()
                .map(|(index, tool)| tool_call(index, tool, &text))
                .collect(),
        )
    } else {
        let content = reply_text(user_text.as_deref());
        let (words, truncated) = limit_words(words(&content), token_limit(request));
        ChatReply::Text { words, truncated }
    };
    (reply, prompt_tokens)
}

/// The `usage` of a reply.
fn usage(prompt_tokens: usize, reply: &ChatReply) -> Value {
    let completion_tokens = match reply {
        ChatReply::Text { words, .. } => words.len(),
        ChatReply::ToolCalls(calls) => calls.iter().map(|c| fragments(&c.arguments).len()).sum(),
    };
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// The non-streamed `chat.completion`.
fn completion(reply: &ChatReply, id: &str, ids: &Ids<'_>, usage: Value) -> Value {
    let (message, finish_reason) = match reply {
        ChatReply::Text { words, truncated } => (
            json!({"role": "assistant", "content": words.concat(), "refusal": null}),
            if *truncated { "length" } else { "stop" },
        ),
        ChatReply::ToolCalls(calls) => (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": calls.iter().map(|c| json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}
                })).collect::<Vec<_>>(),
                "refusal": null
            }),
            "tool_calls",
        ),
    };
    json!({
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": ids.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": usage,
        "system_fingerprint": "fp_scripted"
    })
}

/// The `chat.completion.chunk`s of a stream (without `[DONE]`); a final `choices: []`
/// chunk carries `usage` when the request asked for it (and then every other chunk
/// has `"usage": null`).
fn chunks(
    reply: &ChatReply,
    id: &str,
    ids: &Ids<'_>,
    usage: Value,
    include_usage: bool,
) -> Vec<Value> {
    let chunk = |delta: Value, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": ids.model,
            "system_fingerprint": "fp_scripted",
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason
            }]
        });
        if include_usage && let Value::Object(object) = &mut chunk {
            object.insert("usage".to_owned(), Value::Null);
        }
        chunk
    };

    let mut chunks = Vec::new();
    match reply {
        ChatReply::Text { words, truncated } => {
            chunks.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            for word in words {
                chunks.push(chunk(json!({"content": word}), Value::Null));
            }
            let reason = if *truncated { "length" } else { "stop" };
            chunks.push(chunk(json!({}), json!(reason)));
        }
        ChatReply::ToolCalls(calls) => tool_call_chunks(calls, &chunk, &mut chunks),
    }
    if include_usage {
        chunks.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": ids.model,
            "system_fingerprint": "fp_scripted",
            "choices": [],
            "usage": usage
        }));
    }
    chunks
}

/// The chunks of a tool-call reply: each call's first delta (its id and name), then
/// the calls' argument fragments alternating, then the finish.
fn tool_call_chunks(
    calls: &[ToolCall],
    chunk: &impl Fn(Value, Value) -> Value,
    chunks: &mut Vec<Value>,
) {
    for (index, call) in calls.iter().enumerate() {
        let header = json!([{
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""}
        }]);
        let delta = if index == 0 {
            json!({"role": "assistant", "content": null, "tool_calls": header, "refusal": null})
        } else {
            json!({"tool_calls": header})
        };
        chunks.push(chunk(delta, Value::Null));
    }
    // Alternate the calls' argument fragments, as OpenAI interleaves parallel calls.
    let mut pending: Vec<VecDeque<String>> = calls
        .iter()
        .map(|c| fragments(&c.arguments).into())
        .collect();
    while pending.iter().any(|p| !p.is_empty()) {
        for (index, fragments) in pending.iter_mut().enumerate() {
            if let Some(fragment) = fragments.pop_front() {
                chunks.push(chunk(
                    json!({"tool_calls": [{
                        "index": index,
                        "function": {"arguments": fragment}
                    }]}),
                    Value::Null,
                ));
            }
        }
    }
    chunks.push(chunk(json!({}), json!("tool_calls")));
}

/// Builds call `index` of a tool-call reply to `tool` (an OpenAI `tools` entry).
fn tool_call(index: usize, tool: &Value, user_text: &str) -> ToolCall {
    let function = tool.get("function").unwrap_or(tool);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("tool")
        .to_owned();
    let arguments = synthesized_arguments(function.get("parameters"), user_text);
    let arguments = Value::Object(arguments).to_string();
    let id = format!("call_{}", call_hash(index, &name, &arguments));
    ToolCall {
        id,
        name,
        arguments,
    }
}

/// The text of a message's `content`: a string, or the `text` of its content parts
/// joined with a space.
pub(crate) fn message_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(text) => Some(text.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The content of a `big-<MB>` answer: `mib` MiB of ASCII in pieces of
/// [`BIG_PIECE_BYTES`], each starting with its number so a misplaced piece shows.
pub(crate) fn big_pieces(mib: usize) -> Vec<String> {
    const FILLER: &str = " The quick brown fox jumps over the lazy dog.";
    let count = mib * (1 << 20) / BIG_PIECE_BYTES;
    (0..count)
        .map(|i| {
            let mut piece = format!("[{i:07}]");
            while piece.len() < BIG_PIECE_BYTES {
                piece.push_str(FILLER);
            }
            piece.truncate(BIG_PIECE_BYTES);
            piece
        })
        .collect()
}
