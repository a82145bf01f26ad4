//! Reading a streamed Messages answer: named events, closed by `message_stop`.
//!
//! A stream is `message_start` (the message's id, model, role and input usage), then
//! per content block a `content_block_start` `{index, content_block}`, its
//! `content_block_delta`s (`text_delta`, `input_json_delta` fragments of a tool's
//! input, `thinking_delta`; `signature_delta` and `citations_delta` carry nothing a
//! span shows) and a `content_block_stop`, then `message_delta` (stop reason,
//! cumulative output usage, and in newer APIs the input counts again) and
//! `message_stop`; `ping`s anywhere, and an `error` event is the stream's error.
//!
//! A [`MessagesStream`] parses each event's JSON once into small borrowing structs
//! (the [`lenient`](crate::protocol::lenient) fields, and [`Obj`] for nested objects,
//! so a mistyped field costs that field, not the event) and keeps blocks by index:
//! in index order at the end, whatever order they came in; a delta for a block
//! never started starts one of the delta's kind rather than being lost; a second
//! start of a block does not make a second block. What is kept is capped by a
//! [`Budget`] ([`crate::protocol::limits`]). Events after `message_stop` are not part
//! of the answer and change nothing. At the end the answer becomes one choice (as a
//! whole body would, see [`super::response`]) and is rendered as that body.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use celgate_engine::exchange::{Exchange, ToolCall};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::lenient::{Int, Text};
use super::super::limits::{Budget, MAX_ERROR_BYTES, MAX_TRACKED, truncate};
use super::super::sse::SseEvent;
use super::super::stream::{EventRead, StreamAccumulator, StreamEnd};
use super::super::tokens::set_usage;
use super::{Counts, choice, input_text};

/// Accumulates the events of one Messages stream.
#[derive(Debug, Default)]
pub(crate) struct MessagesStream {
    acc: Accumulated,
    /// The message of the first error the stream reported.
    error: Option<String>,
    /// The data of that error event, when it was JSON.
    error_body: Option<String>,
}

impl MessagesStream {
    /// Records the first error the stream reported (`error.message`, else the data).
    fn record_error(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let message = match serde_json::from_slice::<Value>(data) {
            Ok(v) => {
                self.error_body = Some(String::from_utf8_lossy(data).into_owned());
                match v.pointer("/error/message").or_else(|| v.get("message")) {
                    Some(Value::String(m)) => m.clone(),
                    _ => v.to_string(),
                }
            }
            Err(_) => String::from_utf8_lossy(data).into_owned(),
        };
        self.error = Some(truncate(message, MAX_ERROR_BYTES));
    }
}

impl StreamAccumulator for MessagesStream {
    fn event(&mut self, event: &SseEvent<'_>) -> EventRead {
        let data = event.data.trim_ascii();
        let named_error = event.name == b"error";
        // An event is an object (serde would also read an array as the struct).
        let parsed = match data.first() {
            Some(b'{') => serde_json::from_slice::<RawEvent<'_>>(data).ok(),
            _ => None,
        };
        let raw = match parsed {
            Some(raw) => raw,
            None if named_error && !self.acc.stopped => {
                self.record_error(data);
                return EventRead::Read;
            }
            None => return EventRead::Malformed,
        };
        if self.acc.stopped {
            return EventRead::Read;
        }
        // The data's `type` says what the event is; its SSE name when it has none.
        let kind = match &raw.kind.0 {
            Some(kind) => EventKind::of(kind),
            None => EventKind::of(std::str::from_utf8(event.name).unwrap_or_default()),
        };
        if named_error || kind == EventKind::Error {
            self.record_error(data);
            return EventRead::Read;
        }
        self.acc.apply(kind, raw);
        match kind {
            // Text, thinking and tool input arrive as block deltas.
            EventKind::BlockDelta => EventRead::Output,
            _ => EventRead::Read,
        }
    }

    /// Writes the one choice (when the stream carried a message), id, model, token
    /// counts and `response_truncated`, and `response_body`: the answer rendered as
    /// the equivalent non-streamed message, or the error event's data when the stream
    /// carried nothing else.
    fn finish(self: Box<Self>, ex: &mut Exchange, render_body: bool) -> StreamEnd {
        let MessagesStream {
            acc,
            error,
            error_body,
        } = *self;
        let truncated = acc.budget.truncated;
        let mut blocks = acc.blocks;
        blocks.sort_by_key(|b| b.index);
        let blocks: Vec<Kept> = blocks.into_iter().filter_map(Block::kept).collect();
        let role = acc.role.unwrap_or_else(|| "assistant".to_owned());
        if !render_body {
            // Nothing reads the body.
        } else if acc.saw_message {
            let rendered = RenderedMessage {
                id: acc.id.as_deref(),
                kind: "message",
                role: &role,
                model: acc.model.as_deref(),
                content: blocks.iter().map(Kept::rendered).collect(),
                stop_reason: acc.stop_reason.as_deref(),
                stop_sequence: acc.stop_sequence.as_deref(),
                usage: acc.counts.any().then_some(acc.counts.into()),
            };
            ex.response_body = serde_json::to_string(&rendered).ok();
        } else if let Some(body) = error_body {
            ex.response_body = Some(body);
        }
        if acc.saw_message {
            let (mut texts, mut thinking, mut calls) = (Vec::new(), Vec::new(), Vec::new());
            for block in blocks {
                match block {
                    Kept::Text(text) => texts.push(text),
                    Kept::Thinking(text) => thinking.push(text),
                    Kept::Tool(call) => calls.push(call),
                    Kept::Redacted => {}
                }
            }
            ex.choices = vec![choice(role, texts, thinking, calls, acc.stop_reason)];
        } else {
            ex.choices = Vec::new();
        }
        if let Some(id) = acc.id {
            ex.response_id = Some(id);
        }
        if let Some(model) = acc.model {
            ex.response_model = Some(model);
        }
        if acc.counts.any() {
            set_usage(ex, acc.counts.usage());
        }
        ex.response_truncated |= truncated;
        StreamEnd { error, truncated }
    }
}

/// What the stream's events have said so far.
#[derive(Debug, Default)]
struct Accumulated {
    /// An event of the message was applied (`message_start`, a block, `message_delta`).
    saw_message: bool,
    /// `message_stop` went by: what follows is not part of the answer.
    stopped: bool,
    id: Option<String>,
    model: Option<String>,
    role: Option<String>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    /// The latest value of each usage count.
    counts: Counts,
    /// In the order they were started; sorted by index at the end.
    blocks: Vec<Block>,
    budget: Budget,
}

#[derive(Debug)]
struct Block {
    index: u32,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Text(String),
    Thinking(String),
    Redacted,
    Tool {
        call: ToolCall,
        /// The `input` its start carried (`{}` from the API), as text.
        start_input: String,
        /// Its `input_json_delta` fragments joined, once one came.
        json: Option<String>,
    },
    /// A block a span shows nothing of (server tool use and results, ...): kept so
    /// its deltas do not start a block of another kind.
    Other,
}

/// The events of a Messages stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventKind {
    MessageStart,
    BlockStart,
    BlockDelta,
    BlockStop,
    MessageDelta,
    MessageStop,
    Error,
    /// `ping`, and event types a newer API may add.
    Other,
}

impl EventKind {
    fn of(name: &str) -> EventKind {
        match name {
            "message_start" => EventKind::MessageStart,
            "content_block_start" => EventKind::BlockStart,
            "content_block_delta" => EventKind::BlockDelta,
            "content_block_stop" => EventKind::BlockStop,
            "message_delta" => EventKind::MessageDelta,
            "message_stop" => EventKind::MessageStop,
            "error" => EventKind::Error,
            _ => EventKind::Other,
        }
    }
}

impl Accumulated {
    fn apply(&mut self, kind: EventKind, raw: RawEvent<'_>) {
        match kind {
            EventKind::MessageStart => self.start(raw.message.0),
            EventKind::BlockStart => self.block_start(raw.index.as_u32(), raw.content_block.0),
            EventKind::BlockDelta => self.block_delta(raw.index.as_u32(), raw.delta.0),
            EventKind::BlockStop => self.saw_message = true,
            EventKind::MessageDelta => self.message_delta(raw.delta.0, raw.usage.0),
            EventKind::MessageStop => self.stopped = true,
            EventKind::Error | EventKind::Other => {}
        }
    }

    fn start(&mut self, message: Option<RawMessage<'_>>) {
        self.saw_message = true;
        let Some(message) = message else { return };
        let budget = &mut self.budget;
        set_once(&mut self.id, message.id.0, budget);
        set_once(&mut self.model, message.model.0, budget);
        set_once(&mut self.role, message.role.0, budget);
        set_once(&mut self.stop_reason, message.stop_reason.0, budget);
        if let Some(usage) = message.usage.0 {
            self.counts.update(&usage);
        }
    }

    fn block_start(&mut self, index: Option<u32>, block: Option<RawBlock<'_>>) {
        self.saw_message = true;
        let (Some(index), Some(block)) = (index, block) else {
            return;
        };
        let budget = &mut self.budget;
        if let Some(pos) = position(&self.blocks, index) {
            // Started again: fill in what the first start lacked, nothing more.
            if let Some(Block {
                kind: Kind::Tool { call, .. },
                ..
            }) = self.blocks.get_mut(pos)
            {
                fill_label(&mut call.id, block.id.0, budget);
                fill_label(&mut call.name, block.name.0, budget);
            }
            return;
        }
        let kind = match block.kind.0.as_deref() {
            Some("text") => Kind::Text(kept_text(block.text.0, budget)),
            Some("thinking") => Kind::Thinking(kept_text(block.thinking.0, budget)),
            Some("redacted_thinking") => Kind::Redacted,
            Some("tool_use") if budget.calls_left > 0 => {
                budget.calls_left -= 1;
                let mut call = ToolCall::default();
                fill_label(&mut call.id, block.id.0, budget);
                fill_label(&mut call.name, block.name.0, budget);
                let input = input_text(block.input);
                Kind::Tool {
                    call,
                    start_input: budget.text(&input).to_owned(),
                    json: None,
                }
            }
            Some("tool_use") => {
                budget.truncated = true;
                Kind::Other
            }
            _ => Kind::Other,
        };
        self.push(index, kind);
    }

    fn block_delta(&mut self, index: Option<u32>, delta: Option<RawDelta<'_>>) {
        self.saw_message = true;
        let (Some(index), Some(delta)) = (index, delta) else {
            return;
        };
        let pos = match position(&self.blocks, index) {
            Some(pos) => pos,
            None => {
                // Never started: start it as the delta's kind says.
                let kind = match delta.kind.0.as_deref() {
                    Some("text_delta") => Kind::Text(String::new()),
                    Some("thinking_delta") => Kind::Thinking(String::new()),
                    Some("input_json_delta") if self.budget.calls_left > 0 => {
                        self.budget.calls_left -= 1;
                        Kind::Tool {
                            call: ToolCall::default(),
                            start_input: String::new(),
                            json: None,
                        }
                    }
                    _ => return,
                };
                match self.push(index, kind) {
                    Some(pos) => pos,
                    None => return,
                }
            }
        };
        let Some(block) = self.blocks.get_mut(pos) else {
            return;
        };
        let budget = &mut self.budget;
        match (&mut block.kind, delta.kind.0.as_deref()) {
            (Kind::Text(text), Some("text_delta")) => append(text, delta.text.0, budget),
            (Kind::Thinking(text), Some("thinking_delta")) => {
                append(text, delta.thinking.0, budget);
            }
            (Kind::Tool { json, .. }, Some("input_json_delta")) => {
                append(json.get_or_insert_default(), delta.partial_json.0, budget);
            }
            // signature_delta, citations_delta, a delta of another block's kind.
            _ => {}
        }
    }

    fn message_delta(&mut self, delta: Option<RawDelta<'_>>, usage: Option<RawUsage>) {
        self.saw_message = true;
        if let Some(delta) = delta {
            let budget = &mut self.budget;
            if let Some(reason) = delta.stop_reason.0 {
                self.stop_reason = Some(budget.label(reason));
            }
            if let Some(sequence) = delta.stop_sequence.0 {
                self.stop_sequence = Some(budget.label(sequence));
            }
        }
        if let Some(usage) = usage {
            self.counts.update(&usage);
        }
    }

    /// Adds a block at `index`; its position, or `None` past [`MAX_TRACKED`] blocks.
    fn push(&mut self, index: u32, kind: Kind) -> Option<usize> {
        if self.blocks.len() >= MAX_TRACKED {
            self.budget.truncated = true;
            return None;
        }
        self.blocks.push(Block { index, kind });
        Some(self.blocks.len() - 1)
    }
}

/// Where the block at `index` is (deltas almost always go to the last one started).
fn position(blocks: &[Block], index: u32) -> Option<usize> {
    match blocks.last() {
        Some(last) if last.index == index => Some(blocks.len() - 1),
        _ => blocks.iter().position(|b| b.index == index),
    }
}

/// Sets `slot` from the first non-empty value, cut to a label.
fn set_once(slot: &mut Option<String>, value: Option<Cow<'_, str>>, budget: &mut Budget) {
    if slot.is_none()
        && let Some(v) = value.filter(|v| !v.is_empty())
    {
        *slot = Some(budget.label(v));
    }
}

/// Sets an empty label from `value`.
fn fill_label(slot: &mut String, value: Option<Cow<'_, str>>, budget: &mut Budget) {
    if slot.is_empty()
        && let Some(v) = value
    {
        *slot = budget.label(v);
    }
}

/// What of `text` the budget allows, as a new string.
fn kept_text(text: Option<Cow<'_, str>>, budget: &mut Budget) -> String {
    text.map(|t| budget.text(&t).to_owned()).unwrap_or_default()
}

/// Appends what of `fragment` the budget still allows.
fn append(slot: &mut String, fragment: Option<Cow<'_, str>>, budget: &mut Budget) {
    if let Some(fragment) = fragment {
        slot.push_str(budget.text(&fragment));
    }
}

impl Counts {
    /// Takes each count the event reports (a later `message_delta` repeats or
    /// supersedes `message_start`'s).
    fn update(&mut self, usage: &RawUsage) {
        let take = |slot: &mut Option<i64>, count: &Int| {
            if let Some(n) = count.count() {
                *slot = Some(n);
            }
        };
        take(&mut self.input, &usage.input_tokens);
        take(&mut self.output, &usage.output_tokens);
        take(&mut self.cache_creation, &usage.cache_creation_input_tokens);
        take(&mut self.cache_read, &usage.cache_read_input_tokens);
    }
}

// ---------------------------------------------------------------------------------
// The blocks kept, and the equivalent non-streamed message.

/// A block as the answer has it at the end.
enum Kept {
    Text(String),
    Thinking(String),
    Redacted,
    Tool(ToolCall),
}

impl Block {
    fn kept(self) -> Option<Kept> {
        Some(match self.kind {
            Kind::Text(text) => Kept::Text(text),
            Kind::Thinking(text) => Kept::Thinking(text),
            Kind::Redacted => Kept::Redacted,
            Kind::Tool {
                mut call,
                start_input,
                json,
            } => {
                call.arguments = match json {
                    Some(joined) => compact(joined),
                    None => start_input,
                };
                Kept::Tool(call)
            }
            Kind::Other => return None,
        })
    }
}

/// Streamed input JSON as a whole body has it: the compact text of the object the
/// fragments make (as a body's `input` object reads); fragments that make no JSON
/// value (a cut stream) or only a string stay as joined.
fn compact(joined: String) -> String {
    match serde_json::from_str::<Value>(&joined) {
        Ok(value) if !value.is_string() => value.to_string(),
        _ => joined,
    }
}

impl Kept {
    fn rendered(&self) -> RenderedBlock<'_> {
        match self {
            Kept::Text(text) => RenderedBlock::Text { text },
            Kept::Thinking(thinking) => RenderedBlock::Thinking { thinking },
            Kept::Redacted => RenderedBlock::RedactedThinking {},
            Kept::Tool(call) => RenderedBlock::ToolUse {
                id: &call.id,
                name: &call.name,
                input: rendered_input(&call.arguments),
            },
        }
    }
}

/// A tool input as the body has it: the JSON value its text is, when the text is
/// exactly that value's compact form; else the text as a string (which a body reader
/// takes as is).
fn rendered_input(arguments: &str) -> RenderedInput<'_> {
    if let Ok(value) = serde_json::from_str::<Value>(arguments)
        && !value.is_string()
        && serde_json::to_string(&value).is_ok_and(|compact| compact == arguments)
    {
        return RenderedInput::Json(value);
    }
    RenderedInput::Text(arguments)
}

#[derive(Serialize)]
struct RenderedMessage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    content: Vec<RenderedBlock<'a>>,
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<RenderedUsage>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RenderedBlock<'a> {
    Text {
        text: &'a str,
    },
    Thinking {
        thinking: &'a str,
    },
    RedactedThinking {},
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: RenderedInput<'a>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum RenderedInput<'a> {
    Json(Value),
    Text(&'a str),
}

#[derive(Serialize)]
struct RenderedUsage {
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens: Option<i64>,
}

impl From<Counts> for RenderedUsage {
    fn from(c: Counts) -> Self {
        RenderedUsage {
            input_tokens: c.input,
            cache_creation_input_tokens: c.cache_creation,
            cache_read_input_tokens: c.cache_read,
            output_tokens: c.output,
        }
    }
}

// ---------------------------------------------------------------------------------
// The event JSON, parsed leniently: a field of an unexpected type reads as absent
// instead of making the whole event malformed.

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow, default)]
    message: Obj<RawMessage<'a>>,
    #[serde(default)]
    index: Int,
    #[serde(borrow, default)]
    content_block: Obj<RawBlock<'a>>,
    #[serde(borrow, default)]
    delta: Obj<RawDelta<'a>>,
    #[serde(default)]
    usage: Obj<RawUsage>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(borrow, default)]
    role: Text<'a>,
    #[serde(borrow, default)]
    stop_reason: Text<'a>,
    #[serde(default)]
    usage: Obj<RawUsage>,
}

#[derive(Deserialize)]
struct RawBlock<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow, default)]
    text: Text<'a>,
    #[serde(borrow, default)]
    thinking: Text<'a>,
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(default)]
    input: Option<Value>,
}

/// A `content_block_delta`'s or a `message_delta`'s `delta`.
#[derive(Deserialize)]
struct RawDelta<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow, default)]
    text: Text<'a>,
    #[serde(borrow, default)]
    partial_json: Text<'a>,
    #[serde(borrow, default)]
    thinking: Text<'a>,
    #[serde(borrow, default)]
    stop_reason: Text<'a>,
    #[serde(borrow, default)]
    stop_sequence: Text<'a>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    input_tokens: Int,
    #[serde(default)]
    output_tokens: Int,
    #[serde(default)]
    cache_creation_input_tokens: Int,
    #[serde(default)]
    cache_read_input_tokens: Int,
}

/// A nested object read as `T`; any other value (`"delta": "x"`) reads as `None`
/// rather than making the event unreadable.
struct Obj<T>(Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Obj<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Obj(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Obj<T>, E> {
        Ok(Obj(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Obj<T>, E> {
        Ok(Obj(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Obj<T>, E> {
        Ok(Obj(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Obj<T>, E> {
        Ok(Obj(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Obj<T>, E> {
        Ok(Obj(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Obj<T>, E> {
        Ok(Obj(None))
    }
}
