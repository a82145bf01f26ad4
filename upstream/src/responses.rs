//! OpenAI's Responses API: `POST /v1/responses` answers one `response` object, or with
//! `"stream": true` its typed events, each with a `sequence_number`
//! (`response.created`, `response.in_progress`, per output item `…output_item.added`,
//! its parts and deltas, `…output_item.done`, then `response.completed` carrying the
//! whole response, or `response.incomplete` when cut at `max_output_tokens`). Output
//! items: a `reasoning` item when `reasoning` is asked (with its summary when
//! `reasoning.summary` is set), then a `message` or `function_call`s. The answer is
//! remembered ([`crate::store`]) unless `store` is false, for `GET` / `DELETE` /
//! `input_items` on `/v1/responses/{id}`. Codex's request shape (no `instructions`,
//! `developer` messages, `namespace` tools, `include`) is read; unknown fields are
//! ignored.

use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::CREATED;
use crate::body::ScriptedBody;
use crate::dialect::{Dialect, Problem};
use crate::pace::Pace;
use crate::request::{at, word_count};
use crate::store::{ResponseStore, Stored};
use crate::turn::{Call, Last, Offered, Reply, Said, Turn, fragments, hash_of, reply};
use crate::wire::{EVENT_STREAM, Ids, json_response, named_event, streamed_response};

/// The answer to a Responses request, paced as `pace` says, remembered in `store`
/// unless the request says `"store": false`.
pub(crate) fn responses(
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    pace: &Pace,
    store: &ResponseStore,
) -> Response<ScriptedBody> {
    let reply = reply(&turn(request));
    let items = output_items(&reply, request, ids.seq);
    let response = response_object(request, ids, &reply, &items);
    if request.get("store").and_then(Value::as_bool) != Some(false) {
        let stored = Stored {
            response: response.clone(),
            input_items: input_items(request, ids.seq),
        };
        store.put(response_id(ids.seq), stored);
    }
    if !pace.streams(request) {
        return json_response(StatusCode::OK, ids.seq, &response);
    }
    let events = events(request, ids, &reply, &items, &response);
    streamed_response(ids.seq, events, EVENT_STREAM, pace)
}

/// `GET /v1/responses/{id}`.
pub(crate) fn retrieve(store: &ResponseStore, id: &str, seq: usize) -> Response<ScriptedBody> {
    match store.get(id) {
        Some(stored) => json_response(StatusCode::OK, seq, &stored.response),
        None => not_found(id, seq),
    }
}

/// `DELETE /v1/responses/{id}`.
pub(crate) fn delete(store: &ResponseStore, id: &str, seq: usize) -> Response<ScriptedBody> {
    if store.delete(id) {
        let body = json!({"id": id, "object": "response", "deleted": true});
        json_response(StatusCode::OK, seq, &body)
    } else {
        not_found(id, seq)
    }
}

/// `GET /v1/responses/{id}/input_items`: newest first unless `order=asc` (OpenAI's
/// default is `desc`).
pub(crate) fn list_input_items(
    store: &ResponseStore,
    id: &str,
    query: Option<&str>,
    seq: usize,
) -> Response<ScriptedBody> {
    let Some(stored) = store.get(id) else {
        return not_found(id, seq);
    };
    let mut data = stored.input_items;
    let ascending = query.is_some_and(|q| q.split('&').any(|pair| pair == "order=asc"));
    if !ascending {
        data.reverse();
    }
    let first_id = data.first().and_then(|i| i.get("id")).cloned();
    let last_id = data.last().and_then(|i| i.get("id")).cloned();
    let body = json!({
        "object": "list", "data": data, "first_id": first_id, "last_id": last_id,
        "has_more": false
    });
    json_response(StatusCode::OK, seq, &body)
}

fn not_found(id: &str, seq: usize) -> Response<ScriptedBody> {
    let message = format!("Response with id '{id}' not found.");
    Dialect::Responses.error(
        StatusCode::NOT_FOUND,
        seq,
        Problem::InvalidRequest,
        &message,
    )
}

fn response_id(seq: usize) -> String {
    format!("resp_scripted{seq}")
}

/// The items of `input`: a string is one user message.
fn input_list(request: &Map<String, Value>) -> Vec<Value> {
    match request.get("input") {
        Some(Value::String(text)) => {
            vec![json!({"type": "message", "role": "user", "content": text})]
        }
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn kind(item: &Value) -> Option<&str> {
    item.get("type").and_then(Value::as_str).or_else(|| {
        // A message may leave its type out.
        item.get("role").map(|_| "message")
    })
}

/// The text of a message item's `content` (a string, or its parts' `text`), or of a
/// function call's `output`.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The request read into a turn.
fn turn(request: &Map<String, Value>) -> Turn<'_> {
    let items = input_list(request);
    let is_user = |item: &Value| {
        kind(item) == Some("message") && item.get("role").and_then(Value::as_str) == Some("user")
    };
    let user_text = items
        .iter()
        .rev()
        .filter(|i| is_user(i))
        .map(|i| text_of(i.get("content")))
        .find(|text| !text.is_empty());
    let trailing_outputs: Vec<String> = items
        .iter()
        .rev()
        .take_while(|i| kind(i) == Some("function_call_output"))
        .map(|i| text_of(i.get("output")))
        .collect();
    let last = match items.last() {
        Some(_) if !trailing_outputs.is_empty() => Last::ToolResult(
            trailing_outputs
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Some(item) if is_user(item) => Last::User(text_of(item.get("content"))),
        _ => Last::Other,
    };
    Turn {
        last,
        user_text,
        tools: offered_tools(request),
        tools_allowed: request.get("tool_choice").and_then(Value::as_str) != Some("none"),
        limit: request
            .get("max_output_tokens")
            .and_then(Value::as_u64)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        thinking: request.get("reasoning").is_some_and(Value::is_object),
    }
}

/// The function tools of a request, those nested in `namespace` tools included.
fn offered_tools(request: &Map<String, Value>) -> Vec<Offered<'_>> {
    let mut offered = Vec::new();
    let tools = request.get("tools").and_then(Value::as_array);
    for tool in tools.into_iter().flatten() {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => offered.extend(function(tool, None)),
            Some("namespace") => {
                let namespace = tool.get("name").and_then(Value::as_str);
                let nested = tool.get("tools").and_then(Value::as_array);
                offered.extend(
                    nested
                        .into_iter()
                        .flatten()
                        .filter_map(|t| function(t, namespace)),
                );
            }
            _ => {}
        }
    }
    offered
}

fn function<'a>(tool: &'a Value, namespace: Option<&'a str>) -> Option<Offered<'a>> {
    Some(Offered {
        name: tool.get("name")?.as_str()?,
        schema: tool.get("parameters"),
        namespace,
    })
}

/// Words of `instructions`, every message's text and every function call output; the
/// cached half when `prompt_cache_key` is set.
fn input_tokens(request: &Map<String, Value>) -> (usize, usize) {
    let instructions = request
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let words: usize = input_list(request)
        .iter()
        .map(|item| match kind(item) {
            Some("message") => word_count(&text_of(item.get("content"))),
            Some("function_call_output") => word_count(&text_of(item.get("output"))),
            _ => 0,
        })
        .sum();
    let total = (word_count(instructions) + words).max(1);
    let cached = if request
        .get("prompt_cache_key")
        .is_some_and(|k| !k.is_null())
    {
        total / 2
    } else {
        0
    };
    (total, cached)
}

/// One output item, with what its stream events need.
#[derive(Clone, Debug)]
enum Item {
    Reasoning {
        id: String,
        summary: Option<Vec<String>>,
        done: Value,
    },
    Message {
        id: String,
        words: Vec<String>,
        done: Value,
    },
    FunctionCall {
        id: String,
        call: Call,
        done: Value,
    },
}

impl Item {
    fn done(&self) -> &Value {
        match self {
            Item::Reasoning { done, .. }
            | Item::Message { done, .. }
            | Item::FunctionCall { done, .. } => done,
        }
    }
}

/// The output items of a reply, finished.
fn output_items(reply: &Reply, request: &Map<String, Value>, seq: usize) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(thinking) = &reply.thinking {
        let summary = at(request, "/reasoning/summary").is_some_and(|s| !s.is_null());
        let id = format!("rs_scripted{seq}");
        let text = thinking.concat();
        let parts: Vec<Value> = if summary {
            vec![json!({"type": "summary_text", "text": text})]
        } else {
            Vec::new()
        };
        let mut done = json!({"id": id, "type": "reasoning", "summary": parts});
        if includes(request, "reasoning.encrypted_content") {
            done["encrypted_content"] =
                json!(BASE64.encode(format!("scripted-reasoning:{:016x}", hash_of(&text))));
        }
        let summary = summary.then(|| thinking.clone());
        items.push(Item::Reasoning { id, summary, done });
    }
    match &reply.said {
        Said::Text { words, .. } => {
            let id = format!("msg_scripted{seq}");
            let done = message_item(&id, "completed", vec![output_text(&words.concat())]);
            items.push(Item::Message {
                id,
                words: words.clone(),
                done,
            });
        }
        Said::Calls(calls) => {
            for call in calls {
                let id = format!("fc_{}", call.hash);
                let done = function_call_item(&id, call, "completed", &call.arguments);
                items.push(Item::FunctionCall {
                    id,
                    call: call.clone(),
                    done,
                });
            }
        }
    }
    items
}

fn includes(request: &Map<String, Value>, what: &str) -> bool {
    request
        .get("include")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|i| i.as_str() == Some(what)))
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn function_call_item(id: &str, call: &Call, status: &str, arguments: &str) -> Value {
    let mut item = json!({
        "id": id, "type": "function_call", "status": status, "arguments": arguments,
        "call_id": format!("call_{}", call.hash), "name": call.name
    });
    if let Some(namespace) = &call.namespace {
        item["namespace"] = json!(namespace);
    }
    item
}

/// The `response` object, finished (`completed`, or `incomplete` when cut at
/// `max_output_tokens`); request parameters are echoed as OpenAI does.
fn response_object(
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    reply: &Reply,
    items: &[Item],
) -> Value {
    let (input, cached) = input_tokens(request);
    let output = reply.output_tokens();
    let mut response = skeleton(request, ids);
    response["status"] = json!(if reply.truncated() {
        "incomplete"
    } else {
        "completed"
    });
    if reply.truncated() {
        response["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    response["output"] = json!(items.iter().map(Item::done).collect::<Vec<_>>());
    response["usage"] = json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reply.thinking_tokens()},
        "total_tokens": input + output
    });
    response
}

/// The `response` object as it starts: `in_progress`, no output, no usage.
fn skeleton(request: &Map<String, Value>, ids: &Ids<'_>) -> Value {
    let param = |name: &str, default: Value| request.get(name).cloned().unwrap_or(default);
    json!({
        "id": response_id(ids.seq),
        "object": "response",
        "created_at": CREATED,
        "status": "in_progress",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": param("instructions", Value::Null),
        "max_output_tokens": param("max_output_tokens", Value::Null),
        "model": ids.model,
        "output": [],
        "parallel_tool_calls": param("parallel_tool_calls", json!(true)),
        "previous_response_id": param("previous_response_id", Value::Null),
        "reasoning": {
            "effort": at(request, "/reasoning/effort").cloned().unwrap_or(Value::Null),
            "summary": at(request, "/reasoning/summary").cloned().unwrap_or(Value::Null)
        },
        "store": param("store", json!(true)),
        "temperature": param("temperature", json!(1.0)),
        "text": param("text", json!({"format": {"type": "text"}})),
        "tool_choice": param("tool_choice", json!("auto")),
        "tools": param("tools", json!([])),
        "top_p": param("top_p", json!(1.0)),
        "truncation": "disabled",
        "usage": null,
        "user": null,
        "metadata": param("metadata", json!({}))
    })
}

/// Numbers the events of a stream as they are written.
struct Sequence {
    events: VecDeque<Bytes>,
}

impl Sequence {
    fn push(&mut self, kind: &str, mut event: Value) {
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.events.len());
        self.events.push_back(named_event(kind, &event));
    }
}

/// The events of a streamed answer.
fn events(
    request: &Map<String, Value>,
    ids: &Ids<'_>,
    reply: &Reply,
    items: &[Item],
    response: &Value,
) -> VecDeque<Bytes> {
    let mut sequence = Sequence {
        events: VecDeque::new(),
    };
    let start = skeleton(request, ids);
    sequence.push("response.created", json!({"response": start}));
    sequence.push("response.in_progress", json!({"response": start}));
    for (index, item) in items.iter().enumerate() {
        item_events(&mut sequence, index, item);
    }
    let last = if reply.truncated() {
        "response.incomplete"
    } else {
        "response.completed"
    };
    sequence.push(last, json!({"response": response}));
    sequence.events
}

/// The events of output item `index`, from `…output_item.added` to `…output_item.done`.
fn item_events(sequence: &mut Sequence, index: usize, item: &Item) {
    match item {
        Item::Reasoning { id, summary, .. } => {
            let added = json!({"id": id, "type": "reasoning", "summary": []});
            sequence.push(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            );
            if let Some(words) = summary {
                summary_events(sequence, index, id, words);
            }
        }
        Item::Message { id, words, .. } => {
            let added = message_item(id, "in_progress", Vec::new());
            sequence.push(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            );
            text_events(sequence, index, id, words);
        }
        Item::FunctionCall { id, call, .. } => {
            let added = function_call_item(id, call, "in_progress", "");
            sequence.push(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            );
            for fragment in fragments(&call.arguments) {
                let delta = json!({"item_id": id, "output_index": index, "delta": fragment});
                sequence.push("response.function_call_arguments.delta", delta);
            }
            let done = json!({
                "item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments
            });
            sequence.push("response.function_call_arguments.done", done);
        }
    }
    sequence.push(
        "response.output_item.done",
        json!({"output_index": index, "item": item.done()}),
    );
}

/// A message's text part: added, a delta per word, done.
fn text_events(sequence: &mut Sequence, index: usize, id: &str, words: &[String]) {
    let at = json!({"item_id": id, "output_index": index, "content_index": 0});
    let with = |extra: Value| {
        let mut event = at.clone();
        if let (Value::Object(event), Value::Object(extra)) = (&mut event, extra) {
            event.extend(extra);
        }
        event
    };
    sequence.push(
        "response.content_part.added",
        with(json!({"part": output_text("")})),
    );
    for word in words {
        sequence.push(
            "response.output_text.delta",
            with(json!({"delta": word, "logprobs": []})),
        );
    }
    let text = words.concat();
    sequence.push(
        "response.output_text.done",
        with(json!({"text": text, "logprobs": []})),
    );
    sequence.push(
        "response.content_part.done",
        with(json!({"part": output_text(&text)})),
    );
}

/// A reasoning item's summary part: added, a delta per word, done.
fn summary_events(sequence: &mut Sequence, index: usize, id: &str, words: &[String]) {
    let at = |extra: Value| {
        let mut event = json!({"item_id": id, "output_index": index, "summary_index": 0});
        if let (Value::Object(event), Value::Object(extra)) = (&mut event, extra) {
            event.extend(extra);
        }
        event
    };
    let part = |text: &str| json!({"type": "summary_text", "text": text});
    sequence.push(
        "response.reasoning_summary_part.added",
        at(json!({"part": part("")})),
    );
    for word in words {
        sequence.push(
            "response.reasoning_summary_text.delta",
            at(json!({"delta": word})),
        );
    }
    let text = words.concat();
    sequence.push(
        "response.reasoning_summary_text.done",
        at(json!({"text": text})),
    );
    sequence.push(
        "response.reasoning_summary_part.done",
        at(json!({"part": part(&text)})),
    );
}

/// The request's input as items with ids, for `input_items`.
fn input_items(request: &Map<String, Value>, seq: usize) -> Vec<Value> {
    input_list(request)
        .into_iter()
        .enumerate()
        .map(|(index, mut item)| {
            if !item.is_object() {
                return item;
            }
            if item.get("type").is_none() && item.get("role").is_some() {
                item["type"] = json!("message");
            }
            if let Some(Value::String(text)) = item.get("content") {
                item["content"] = json!([{"type": "input_text", "text": text}]);
            }
            if item.get("id").is_none_or(Value::is_null) {
                item["id"] = json!(format!("msg_scripted{seq}_input{index}"));
            }
            item
        })
        .collect()
}
