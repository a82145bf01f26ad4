//! Reading an OpenAI stream: `data:` chunks of deltas, closed by `data: [DONE]`.
//!
//! A [`ChatStream`] is the family's [`StreamAccumulator`]: fed each event by the
//! protocol-free framing (see [`crate::protocol::stream`]), it parses the event's
//! JSON once into small borrowing structs ([`RawChunk`], built of
//! [`lenient`](crate::protocol::lenient) fields: a string without escapes is not
//! copied) and applies the deltas: content and legacy `text` appended per choice,
//! tool-call argument fragments joined per call `index`, the first id, model and
//! role kept, the last usage. Memory grows with what the span keeps, not with the
//! bytes received, and that is capped by a [`Budget`] (see
//! [`crate::protocol::limits`]). An `event: error`, or a payload with an `error`
//! member, is the stream's error. At the end the answer is written into the
//! [`Exchange`] and rendered as the equivalent non-streaming `chat.completion` (or
//! `text_completion`) body.

use std::borrow::Cow;

use celgate_engine::exchange::{Choice, Exchange, Operation, ToolCall};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::lenient::{Int, Text};
use super::super::limits::{Budget, MAX_ERROR_BYTES, MAX_TRACKED, truncate};
use super::super::sse::SseEvent;
use super::super::stream::{EventRead, StreamAccumulator, StreamEnd};
use super::super::tokens::{Usage, set_usage};
use super::token_details;

/// Accumulates the events of one chat (or legacy completion) stream.
#[derive(Debug)]
pub struct ChatStream {
    /// Legacy [`Operation::TextCompletion`] streams render as a `text_completion`.
    operation: Operation,
    acc: Accumulated,
    /// The message of the first error the stream reported.
    error: Option<String>,
}

impl ChatStream {
    /// A fresh reader for a stream of `operation`'s answers.
    pub fn new(operation: Operation) -> Self {
        ChatStream {
            operation,
            acc: Accumulated::default(),
            error: None,
        }
    }

    /// Records the first error the stream reported.
    fn record_error(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let (message, is_json) = match serde_json::from_slice::<Value>(data) {
            Ok(v) => (error_message(&v), true),
            Err(_) => (String::from_utf8_lossy(data).into_owned(), false),
        };
        self.error = Some(truncate(message, MAX_ERROR_BYTES));
        if is_json {
            self.acc.error_body = Some(String::from_utf8_lossy(data).into_owned());
        }
    }
}

impl StreamAccumulator for ChatStream {
    fn event(&mut self, event: &SseEvent<'_>) -> EventRead {
        let is_error = event.name == b"error";
        let data = event.data.trim_ascii();
        match serde_json::from_slice::<RawChunk<'_>>(data) {
            Ok(chunk) if !is_error && chunk.error.is_none() => {
                if self.acc.apply(chunk) {
                    return EventRead::Output;
                }
            }
            Ok(_) => self.record_error(data),
            Err(_) if is_error => self.record_error(data),
            Err(_) => return EventRead::Malformed,
        }
        EventRead::Read
    }

    /// Writes `choices` (always), `response_model`, `response_id` and the token counts
    /// (when the stream carried them), and `response_body`: the response rendered as
    /// the equivalent non-streaming `chat.completion` (or `text_completion`) JSON, or
    /// the error payload when the stream carried nothing else.
    fn finish(self: Box<Self>, ex: &mut Exchange, render_body: bool) -> StreamEnd {
        let ChatStream {
            operation,
            acc,
            error,
        } = *self;
        let truncated = acc.budget.truncated;
        let mut choices: Vec<Choice> = acc
            .choices
            .into_iter()
            .map(ChoiceState::into_choice)
            .collect();
        choices.sort_by_key(|c| c.index);

        if !render_body {
            // Nothing reads the body.
        } else if acc.saw_chunk {
            let header = Header {
                id: acc.id.as_deref(),
                model: acc.model.as_deref(),
                created: acc.created,
                system_fingerprint: acc.system_fingerprint.as_deref(),
            };
            ex.response_body = render(operation, &header, &choices, acc.usage.as_ref());
        } else if let Some(body) = acc.error_body {
            ex.response_body = Some(body);
        }
        if let Some(id) = acc.id {
            ex.response_id = Some(id);
        }
        if let Some(model) = acc.model {
            ex.response_model = Some(model);
        }
        if let Some((usage, _, _)) = acc.usage {
            set_usage(ex, usage);
        }
        ex.choices = choices;
        ex.response_truncated |= truncated;
        StreamEnd { error, truncated }
    }
}

/// What the stream's chunks have said so far.
#[derive(Debug, Default)]
struct Accumulated {
    /// At least one non-error JSON chunk was applied.
    saw_chunk: bool,
    id: Option<String>,
    model: Option<String>,
    created: Option<i64>,
    system_fingerprint: Option<String>,
    choices: Vec<ChoiceState>,
    /// From the last chunk carrying usage, with its details objects as sent (for
    /// the rendered body).
    usage: Option<(Usage, Option<Value>, Option<Value>)>,
    /// The data of the first error event, when it was JSON.
    error_body: Option<String>,
    /// What may still be kept.
    budget: Budget,
}

#[derive(Debug)]
struct ChoiceState {
    index: u32,
    role: Option<String>,
    content: Option<String>,
    tool_calls: Vec<ToolCallState>,
    /// The legacy `function_call` delta stream.
    function_call: Option<ToolCall>,
    finish_reason: Option<String>,
}

#[derive(Debug)]
struct ToolCallState {
    /// The `index` deltas refer to it by.
    index: u32,
    call: ToolCall,
}

/// The human-readable message of an error payload: `error.message`, a bare `error`
/// string, a top-level `message`, or the JSON itself.
fn error_message(v: &Value) -> String {
    let err = v.get("error").filter(|e| !e.is_null()).unwrap_or(v);
    match err {
        Value::String(s) => s.clone(),
        Value::Object(m) => match m.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => err.to_string(),
        },
        other => other.to_string(),
    }
}

impl Accumulated {
    /// Applies one chunk; whether it carried output (text or a tool call).
    fn apply(&mut self, chunk: RawChunk<'_>) -> bool {
        let mut output = false;
        self.saw_chunk = true;
        set_once(&mut self.id, chunk.id.0);
        set_once(&mut self.model, chunk.model.0);
        set_once(&mut self.system_fingerprint, chunk.system_fingerprint.0);
        if self.created.is_none() {
            self.created = chunk.created.0;
        }
        if let Some(usage) = chunk.usage {
            let details = token_details(
                usage.prompt_tokens_details.as_ref(),
                usage.completion_tokens_details.as_ref(),
            );
            self.usage = Some((
                Usage {
                    input: usage.prompt_tokens.count(),
                    output: usage.completion_tokens.count(),
                    total: usage.total_tokens.count(),
                    details,
                },
                usage.prompt_tokens_details.filter(|v| !v.is_null()),
                usage.completion_tokens_details.filter(|v| !v.is_null()),
            ));
        }
        let budget = &mut self.budget;
        for raw in chunk.choices.unwrap_or_default() {
            let index = raw.index.as_u32().unwrap_or(0);
            let Some(choice) = choice_mut(&mut self.choices, index) else {
                budget.truncated = true;
                continue;
            };
            if let Some(delta) = raw.delta {
                if choice.role.is_none()
                    && let Some(role) = delta.role.0.filter(|r| !r.is_empty())
                {
                    choice.role = Some(budget.label(role));
                }
                output |= append(&mut choice.content, delta.content.0, budget);
                for call in delta.tool_calls.unwrap_or_default() {
                    output = true;
                    apply_tool_call(&mut choice.tool_calls, call, budget);
                }
                if let Some(f) = delta.function_call {
                    output = true;
                    let call = choice.function_call.get_or_insert_with(ToolCall::default);
                    apply_function(call, f, budget);
                }
            }
            output |= append(&mut choice.content, raw.text.0, budget);
            if let Some(reason) = raw.finish_reason.0.filter(|r| !r.is_empty()) {
                choice.finish_reason = Some(budget.label(reason));
            }
        }
        output
    }
}

/// Sets `slot` from the first non-empty value (Azure opens with an empty `id` and
/// `model`).
fn set_once(slot: &mut Option<String>, value: Option<Cow<'_, str>>) {
    if slot.is_none()
        && let Some(v) = value.filter(|v| !v.is_empty())
    {
        *slot = Some(v.into_owned());
    }
}

/// Appends what of `fragment` the budget still allows; whether there was text.
fn append(slot: &mut Option<String>, fragment: Option<Cow<'_, str>>, budget: &mut Budget) -> bool {
    let Some(fragment) = fragment else {
        return false;
    };
    let kept = budget.text(&fragment);
    match slot {
        Some(s) => s.push_str(kept),
        None => *slot = Some(kept.to_owned()),
    }
    !fragment.is_empty()
}

fn choice_mut(choices: &mut Vec<ChoiceState>, index: u32) -> Option<&mut ChoiceState> {
    let pos = match choices.iter().position(|c| c.index == index) {
        Some(pos) => pos,
        None if choices.len() < MAX_TRACKED => {
            choices.push(ChoiceState {
                index,
                role: None,
                content: None,
                tool_calls: Vec::new(),
                function_call: None,
                finish_reason: None,
            });
            choices.len() - 1
        }
        None => return None,
    };
    choices.get_mut(pos)
}

/// Applies one `tool_calls[]` delta: the first delta of a call carries its id and
/// name, later ones (same `index`) carry argument fragments to append.
fn apply_tool_call(calls: &mut Vec<ToolCallState>, raw: RawToolCall<'_>, budget: &mut Budget) {
    let id = raw.id.0.filter(|id| !id.is_empty());
    let index = match raw.index.as_u32() {
        Some(index) => index,
        // Some OpenAI-compatible servers omit `index`: a new id starts a new call,
        // anything else continues the call it names or the last one.
        None => match &id {
            Some(id) => match calls.iter().find(|c| c.call.id == **id) {
                Some(c) => c.index,
                None => calls
                    .iter()
                    .map(|c| c.index.saturating_add(1))
                    .max()
                    .unwrap_or(0),
            },
            None => calls.last().map_or(0, |c| c.index),
        },
    };
    let pos = match calls.iter().position(|c| c.index == index) {
        Some(pos) => pos,
        None if budget.calls_left > 0 => {
            budget.calls_left -= 1;
            calls.push(ToolCallState {
                index,
                call: ToolCall::default(),
            });
            calls.len() - 1
        }
        None => {
            budget.truncated = true;
            return;
        }
    };
    let Some(state) = calls.get_mut(pos) else {
        return;
    };
    if let Some(id) = id
        && state.call.id.is_empty()
    {
        state.call.id = budget.label(id);
    }
    if let Some(f) = raw.function {
        apply_function(&mut state.call, f, budget);
    }
}

fn apply_function(call: &mut ToolCall, f: RawFunction<'_>, budget: &mut Budget) {
    if call.name.is_empty()
        && let Some(name) = f.name.0
    {
        call.name = budget.label(name);
    }
    if let Some(args) = f.arguments.0 {
        call.arguments.push_str(budget.text(&args));
    }
}

impl ChoiceState {
    fn into_choice(self) -> Choice {
        let mut calls = self.tool_calls;
        calls.sort_by_key(|c| c.index);
        let mut tool_calls: Vec<ToolCall> = calls.into_iter().map(|c| c.call).collect();
        tool_calls.extend(self.function_call);
        Choice {
            index: self.index,
            role: self.role.unwrap_or_else(|| "assistant".to_owned()),
            content: self.content,
            tool_calls,
            finish_reason: self.finish_reason,
            reasoning: None,
        }
    }
}

// ---------------------------------------------------------------------------------
// Rendering the equivalent non-streaming response.

/// The response-level fields of the rendered body.
struct Header<'a> {
    id: Option<&'a str>,
    model: Option<&'a str>,
    created: Option<i64>,
    system_fingerprint: Option<&'a str>,
}

#[derive(Serialize)]
struct RenderedCompletion<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    choices: Vec<RenderedChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<RenderedUsage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RenderedChoice<'a> {
    Chat {
        index: u32,
        message: RenderedMessage<'a>,
        finish_reason: Option<&'a str>,
    },
    Text {
        text: &'a str,
        index: u32,
        finish_reason: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct RenderedMessage<'a> {
    role: &'a str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<RenderedToolCall<'a>>,
}

#[derive(Serialize)]
struct RenderedToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: RenderedFunction<'a>,
}

#[derive(Serialize)]
struct RenderedFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct RenderedUsage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<&'a Value>,
}

/// Renders the accumulated stream as the body a non-streaming call would have had.
fn render(
    operation: Operation,
    header: &Header<'_>,
    choices: &[Choice],
    usage: Option<&(Usage, Option<Value>, Option<Value>)>,
) -> Option<String> {
    let text = operation == Operation::TextCompletion;
    let rendered = RenderedCompletion {
        id: header.id,
        object: if text {
            "text_completion"
        } else {
            "chat.completion"
        },
        created: header.created,
        model: header.model,
        choices: choices
            .iter()
            .map(|c| {
                if text {
                    RenderedChoice::Text {
                        text: c.content.as_deref().unwrap_or_default(),
                        index: c.index,
                        finish_reason: c.finish_reason.as_deref(),
                    }
                } else {
                    RenderedChoice::Chat {
                        index: c.index,
                        message: RenderedMessage {
                            role: &c.role,
                            content: c.content.as_deref(),
                            tool_calls: c
                                .tool_calls
                                .iter()
                                .map(|t| RenderedToolCall {
                                    id: &t.id,
                                    kind: "function",
                                    function: RenderedFunction {
                                        name: &t.name,
                                        arguments: &t.arguments,
                                    },
                                })
                                .collect(),
                        },
                        finish_reason: c.finish_reason.as_deref(),
                    }
                }
            })
            .collect(),
        usage: usage.map(|(u, prompt_details, completion_details)| RenderedUsage {
            prompt_tokens: u.input,
            completion_tokens: u.output,
            total_tokens: u.total.or_else(|| u.input?.checked_add(u.output?)),
            prompt_tokens_details: prompt_details.as_ref(),
            completion_tokens_details: completion_details.as_ref(),
        }),
        system_fingerprint: header.system_fingerprint,
    };
    serde_json::to_string(&rendered).ok()
}

// ---------------------------------------------------------------------------------
// The chunk JSON, parsed leniently: a field of an unexpected type reads as absent
// instead of making the whole event malformed.

#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(default)]
    created: Int,
    #[serde(borrow, default)]
    system_fingerprint: Text<'a>,
    #[serde(borrow, default)]
    choices: Option<Vec<RawChoice<'a>>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawChoice<'a> {
    #[serde(default)]
    index: Int,
    #[serde(borrow, default)]
    delta: Option<RawDelta<'a>>,
    /// Legacy text completions.
    #[serde(borrow, default)]
    text: Text<'a>,
    #[serde(borrow, default)]
    finish_reason: Text<'a>,
}

#[derive(Deserialize)]
struct RawDelta<'a> {
    #[serde(borrow, default)]
    role: Text<'a>,
    #[serde(borrow, default)]
    content: Text<'a>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<RawToolCall<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<RawFunction<'a>>,
}

#[derive(Deserialize)]
struct RawToolCall<'a> {
    #[serde(default)]
    index: Int,
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    function: Option<RawFunction<'a>>,
}

#[derive(Deserialize)]
struct RawFunction<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(borrow, default)]
    arguments: Text<'a>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Int,
    #[serde(default)]
    completion_tokens: Int,
    #[serde(default)]
    total_tokens: Int,
    /// Kept as sent (any JSON, null included) so an odd value cannot make the
    /// whole event unreadable.
    #[serde(default)]
    prompt_tokens_details: Option<Value>,
    #[serde(default)]
    completion_tokens_details: Option<Value>,
}

#[cfg(test)]
#[path = "chat_stream_tests.rs"]
mod tests;
