//! Gemini's `generateContent` family (the model is in the path, not the body):
//! `:generateContent` answers one `GenerateContentResponse`; `:streamGenerateContent`
//! the same split into chunks, a word per chunk (a function call per chunk), the last
//! one carrying `finishReason` and `usageMetadata` — as SSE `data:` events with
//! `?alt=sse` (CRLF-terminated, as Google sends them), else one JSON array written
//! chunk by chunk; `:countTokens` answers `{"totalTokens": N}`. This module reads
//! Gemini's request (`systemInstruction`, `contents` with `user`/`model` parts,
//! `tools[].functionDeclarations`, `toolConfig`, `generationConfig`) into a
//! [`crate::turn::Turn`] and writes the reply in Gemini's shape.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::ScriptedBody;
use crate::pace::Pace;
use crate::request::{at, word_count};
use crate::turn::{Last, Offered, Reply, Said, Turn, reply};
use crate::wire::{EVENT_STREAM, Ids, json_response, streamed_response};

/// How a Gemini answer is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// One `GenerateContentResponse`.
    Whole,
    /// SSE, a chunk per `data:` event.
    Sse,
    /// One JSON array of chunks, sent chunk by chunk.
    Array,
}

/// The answer to a generate call, framed as `framing` says unless the fault script
/// forces a stream (SSE then) or one body.
pub(crate) fn generate(
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    pace: &Pace,
    framing: Framing,
) -> Response<ScriptedBody> {
    let reply = reply(&turn(request));
    let usage = usage(request, &reply);
    let framing = match framing {
        _ if !pace.streams_when(framing != Framing::Whole) => Framing::Whole,
        Framing::Whole => Framing::Sse,
        streamed => streamed,
    };
    let chunks = match framing {
        Framing::Whole => {
            let body = chunk(ids, parts(&reply), Some((finish_reason(&reply), usage)));
            return json_response(StatusCode::OK, ids.seq, &body);
        }
        Framing::Sse | Framing::Array => chunks(&reply, ids, usage),
    };
    let events: VecDeque<Bytes> = if framing == Framing::Sse {
        chunks
            .iter()
            .map(|c| Bytes::from(format!("data: {c}\r\n\r\n")))
            .collect()
    } else {
        let mut events: VecDeque<Bytes> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| Bytes::from(format!("{}{c}", if i == 0 { "[" } else { ",\r\n" })))
            .collect();
        events.push_back(Bytes::from_static(b"]"));
        events
    };
    let content_type = if framing == Framing::Sse {
        EVENT_STREAM
    } else {
        "application/json; charset=UTF-8"
    };
    streamed_response(ids.seq, events, content_type, pace)
}

/// `:countTokens`: the words of the prompt (of `contents`, or of a wrapped
/// `generateContentRequest`).
pub(crate) fn count_tokens(request: &Map<String, Value>, seq: usize) -> Response<ScriptedBody> {
    let request = match request.get("generateContentRequest") {
        Some(Value::Object(inner)) => inner,
        _ => request,
    };
    let (prompt, cached) = prompt_tokens(request);
    let mut body = json!({
        "totalTokens": prompt,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    });
    if let Some(cached) = cached {
        body["cachedContentTokenCount"] = json!(cached);
    }
    json_response(StatusCode::OK, seq, &body)
}

fn array(value: Option<&Value>) -> &[Value] {
    value
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn parts_of(content: &Value) -> &[Value] {
    array(content.get("parts"))
}

/// A content is the user's unless it says `model` (Gemini lets `role` out).
fn is_user(content: &Value) -> bool {
    content
        .get("role")
        .and_then(Value::as_str)
        .is_none_or(|r| r == "user")
}

/// The text of a content's `text` parts (thoughts left out), joined by a space.
fn text_of(content: &Value) -> String {
    parts_of(content)
        .iter()
        .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text of a `functionResponse`: its `response` when that holds one string
/// member (`{"output": "..."}`, as Gemini CLI sends), else the response as JSON.
fn function_response_text(part: &Value) -> Option<String> {
    let response = part.get("functionResponse")?.get("response")?;
    let single = response
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.values().next())
        .and_then(Value::as_str);
    Some(single.map_or_else(|| response.to_string(), str::to_owned))
}

/// The request read into a turn.
fn turn(request: &Map<String, Value>) -> Turn<'_> {
    let contents = array(request.get("contents"));
    let user_text = contents
        .iter()
        .rev()
        .filter(|c| is_user(c))
        .map(text_of)
        .find(|text| !text.is_empty());
    let last = match contents.last() {
        Some(content) if is_user(content) => {
            let results: Vec<String> = parts_of(content)
                .iter()
                .filter_map(function_response_text)
                .collect();
            if results.is_empty() {
                Last::User(text_of(content))
            } else {
                Last::ToolResult(results.join(" "))
            }
        }
        _ => Last::Other,
    };
    let tools = array(request.get("tools"))
        .iter()
        .flat_map(|tool| array(tool.get("functionDeclarations")))
        .filter_map(|declaration| {
            Some(Offered {
                name: declaration.get("name")?.as_str()?,
                schema: declaration
                    .get("parameters")
                    .or_else(|| declaration.get("parametersJsonSchema")),
                namespace: None,
            })
        })
        .collect();
    let mode = at(request, "/toolConfig/functionCallingConfig/mode").and_then(Value::as_str);
    Turn {
        last,
        user_text,
        tools,
        tools_allowed: mode != Some("NONE"),
        limit: at(request, "/generationConfig/maxOutputTokens")
            .and_then(Value::as_u64)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        thinking: at(request, "/generationConfig/thinkingConfig/includeThoughts")
            .and_then(Value::as_bool)
            == Some(true),
    }
}

/// Words of the system instruction, texts and function responses; the cached half
/// when the request names a `cachedContent`.
fn prompt_tokens(request: &Map<String, Value>) -> (usize, Option<usize>) {
    let content_words = |content: &Value| {
        word_count(&text_of(content))
            + parts_of(content)
                .iter()
                .filter_map(function_response_text)
                .map(|t| word_count(&t))
                .sum::<usize>()
    };
    let system = request.get("systemInstruction").map_or(0, content_words);
    let contents: usize = array(request.get("contents"))
        .iter()
        .map(content_words)
        .sum();
    let prompt = (system + contents).max(1);
    let cached = request
        .get("cachedContent")
        .is_some_and(|c| !c.is_null())
        .then_some(prompt / 2);
    (prompt, cached)
}

/// `usageMetadata`: `thoughtsTokenCount` only when thoughts were asked,
/// `cachedContentTokenCount` only with a `cachedContent`.
fn usage(request: &Map<String, Value>, reply: &Reply) -> Value {
    let (prompt, cached) = prompt_tokens(request);
    let candidates = reply.said_tokens();
    let thoughts = reply.thinking_tokens();
    let mut usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    });
    if reply.thinking.is_some() {
        usage["thoughtsTokenCount"] = json!(thoughts);
    }
    if let Some(cached) = cached {
        usage["cachedContentTokenCount"] = json!(cached);
    }
    usage
}

fn finish_reason(reply: &Reply) -> &'static str {
    if reply.truncated() {
        "MAX_TOKENS"
    } else {
        "STOP"
    }
}

/// The parts of a reply: its thought, then its text or function calls.
fn parts(reply: &Reply) -> Vec<Value> {
    let mut parts = Vec::new();
    if let Some(thinking) = reply.thinking_text() {
        parts.push(json!({"text": thinking, "thought": true}));
    }
    match &reply.said {
        Said::Text { words, .. } => parts.push(json!({"text": words.concat()})),
        Said::Calls(calls) => parts.extend(calls.iter().map(
            |call| json!({"functionCall": {"name": call.name, "args": call.arguments_json()}}),
        )),
    }
    parts
}

/// The streamed chunks: a thought word, a text word or a function call each; the last
/// one carries the finish reason and the usage.
fn chunks(reply: &Reply, ids: &Ids<'_>, usage: Value) -> Vec<Value> {
    let mut pieces: Vec<Value> = Vec::new();
    for word in reply.thinking.iter().flatten() {
        pieces.push(json!({"text": word, "thought": true}));
    }
    match &reply.said {
        Said::Text { words, .. } if words.is_empty() => pieces.push(json!({"text": ""})),
        Said::Text { words, .. } => pieces.extend(words.iter().map(|w| json!({"text": w}))),
        Said::Calls(calls) => pieces.extend(calls.iter().map(
            |call| json!({"functionCall": {"name": call.name, "args": call.arguments_json()}}),
        )),
    }
    let last = pieces.len().saturating_sub(1);
    let mut finish = Some((finish_reason(reply), usage));
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            chunk(
                ids,
                vec![part],
                if i == last { finish.take() } else { None },
            )
        })
        .collect()
}

/// One `GenerateContentResponse` with these parts; `end`: its finish reason and usage.
fn chunk(ids: &Ids<'_>, parts: Vec<Value>, end: Option<(&str, Value)>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let mut chunk = json!({
        "candidates": [],
        "modelVersion": ids.model,
        "responseId": format!("scripted-{}", ids.seq)
    });
    if let Some((reason, usage)) = end {
        candidate["finishReason"] = json!(reason);
        chunk["usageMetadata"] = usage;
    }
    chunk["candidates"] = json!([candidate]);
    chunk
}
