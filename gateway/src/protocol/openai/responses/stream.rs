//! Reading a Responses stream: typed events, the whole response in the last one.
//!
//! A [`ResponsesStream`] keeps the output items by `output_index` and applies the
//! events to them: `response.output_item.added` opens an item (its type, a call's
//! `call_id` and name), `response.output_text.delta`, `.reasoning_summary_text.delta`,
//! `.reasoning_text.delta`, `.function_call_arguments.delta` and
//! `.custom_tool_call_input.delta` append to its parts and arguments, and the
//! `.done` events and `response.output_item.done` replace them with the whole text
//! or item (preferred: it is what the backend settled on). Every event carrying a
//! `response` object (`response.created`, `.in_progress`, and the final
//! `.completed`, `.failed`, `.incomplete`) gives the id, model and status; the final
//! one also the usage, which a Responses stream carries nowhere else, and its
//! `output`, which replaces what the deltas built. So a stream cut before its end
//! still yields the text its deltas carried, and a whole one the same choice as the
//! equivalent JSON body (see `response.rs`). An `error` event (or a `response.failed`
//! error) is the stream's error. Events after the final one are not read: the
//! SDKs stop there, so they are no part of the answer.
//!
//! Memory follows what the span keeps, capped by a [`Budget`] (text, labels) and
//! [`MAX_TRACKED`] items and text parts; text replaced by a `.done` event is given
//! back to the budget.

use std::borrow::Cow;

use celgate_engine::exchange::Exchange;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::super::lenient::{Int, Text};
use super::super::super::limits::{Budget, MAX_ERROR_BYTES, MAX_TEXT_BYTES, MAX_TRACKED, truncate};
use super::super::super::sse::SseEvent;
use super::super::super::stream::{EventRead, StreamAccumulator, StreamEnd};
use super::super::super::tokens::set_usage;
use super::FINAL_EVENTS;
use super::response::{EventResponse, Item, Kind, Part, ResponseFields, choice, usage};

/// Accumulates the events of one Responses stream.
#[derive(Debug)]
pub struct ResponsesStream {
    id: Option<String>,
    model: Option<String>,
    status: Option<String>,
    incomplete_reason: Option<String>,
    /// The final response's `error`, as sent.
    response_error: Option<Value>,
    /// The final response's `usage`, as sent.
    usage: Option<Map<String, Value>>,
    /// A response object or an output item went by: the stream is an answer.
    answered: bool,
    /// The final event went by; what follows it is not part of the answer (the
    /// SDKs stop reading there).
    finished: bool,
    /// Output items, sorted by `output_index`.
    items: Vec<(u32, Item)>,
    /// Text parts that may still be kept, all items together.
    parts_left: usize,
    budget: Budget,
    /// The message of the first error the stream reported.
    error: Option<String>,
    /// The data of the first error event, when it was JSON.
    error_body: Option<String>,
}

impl Default for ResponsesStream {
    fn default() -> Self {
        ResponsesStream {
            id: None,
            model: None,
            status: None,
            incomplete_reason: None,
            response_error: None,
            usage: None,
            answered: false,
            finished: false,
            items: Vec::new(),
            parts_left: MAX_TRACKED,
            budget: Budget::default(),
            error: None,
            error_body: None,
        }
    }
}

/// Which text of an item an event is about.
#[derive(Clone, Copy)]
enum Field {
    /// A message's `output_text` parts.
    Text,
    /// A reasoning item's summary parts.
    Summary,
    /// A reasoning item's `reasoning_text` parts.
    ReasoningText,
    /// A function call's arguments.
    Arguments,
    /// A custom tool call's input.
    Input,
}

impl Field {
    /// The kind of item this text belongs to.
    fn kind(self) -> Kind {
        match self {
            Field::Text => Kind::Message,
            Field::Summary | Field::ReasoningText => Kind::Reasoning,
            Field::Arguments => Kind::FunctionCall,
            Field::Input => Kind::CustomToolCall,
        }
    }

    /// For a `.delta` or `.done` event type: the text it is about.
    fn of_event(kind: &str) -> Option<(Field, bool)> {
        let (stem, done) = match kind.strip_suffix(".delta") {
            Some(stem) => (stem, false),
            None => (kind.strip_suffix(".done")?, true),
        };
        let field = match stem {
            "response.output_text" => Field::Text,
            "response.reasoning_summary_text" => Field::Summary,
            "response.reasoning_text" => Field::ReasoningText,
            "response.function_call_arguments" => Field::Arguments,
            "response.custom_tool_call_input" => Field::Input,
            _ => return None,
        };
        Some((field, done))
    }
}

impl StreamAccumulator for ResponsesStream {
    fn event(&mut self, event: &SseEvent<'_>) -> EventRead {
        if self.finished {
            return EventRead::Read;
        }
        let data = event.data.trim_ascii();
        let mut raw = match serde_json::from_slice::<RawEvent<'_>>(data) {
            Ok(raw) => raw,
            Err(_) if event.name == b"error" => {
                self.record_error(String::from_utf8_lossy(data).into_owned(), None);
                return EventRead::Read;
            }
            Err(_) => return EventRead::Malformed,
        };
        // The data's `type`, else the event's name (borrowed, not copied).
        let kind = (raw.kind.0.take()).unwrap_or_else(|| String::from_utf8_lossy(event.name));
        // Text, reasoning and call arguments arrive as `*.delta` events.
        let output = kind.ends_with(".delta");
        self.apply(&kind, raw, data);
        if output {
            return EventRead::Output;
        }
        EventRead::Read
    }

    /// Writes `choices` (one, when the stream was an answer), `response_id`,
    /// `response_model`, the token counts, and `response_body`: the answer rendered
    /// as the equivalent Responses body, or the error event's data when the stream
    /// carried nothing else.
    fn finish(self: Box<Self>, ex: &mut Exchange, render_body: bool) -> StreamEnd {
        let s = *self;
        let items: Vec<Item> = s.items.into_iter().map(|(_, item)| item).collect();
        if render_body {
            ex.response_body = if s.answered {
                let rendered = serde_json::json!({
                    "id": s.id,
                    "object": "response",
                    "model": s.model,
                    "status": s.status,
                    "output": items.iter().map(Item::render).collect::<Vec<_>>(),
                    "incomplete_details": s.incomplete_reason.as_ref().map(|r| serde_json::json!({"reason": r})),
                    "error": s.response_error,
                    "usage": s.usage,
                });
                serde_json::to_string(&rendered).ok()
            } else {
                s.error_body
            };
        }
        if s.answered {
            let status = s.status.as_deref();
            ex.choices = vec![choice(&items, status, s.incomplete_reason.as_deref())];
        }
        if let Some(id) = s.id {
            ex.response_id = Some(id);
        }
        if let Some(model) = s.model {
            ex.response_model = Some(model);
        }
        if let Some(u) = &s.usage {
            set_usage(ex, usage(u));
        }
        let truncated = s.budget.truncated;
        ex.response_truncated |= truncated;
        StreamEnd {
            error: s.error,
            truncated,
        }
    }
}

impl ResponsesStream {
    /// Applies one event of type `kind`.
    fn apply(&mut self, kind: &str, raw: RawEvent<'_>, data: &[u8]) {
        if kind == "error" || raw.error.as_ref().is_some_and(|e| !e.is_null()) {
            let message = raw.message.0.map(Cow::into_owned);
            let message = message.unwrap_or_else(|| error_message(raw.error.as_ref(), data));
            self.record_error(message, Some(data));
            return;
        }
        if let Some(response) = raw.response.0 {
            self.apply_response(response);
        }
        if FINAL_EVENTS.contains(&kind) {
            self.finished = true;
            return;
        }
        let output_index = raw.output_index.as_u32().unwrap_or(0);
        if let Some((field, done)) = Field::of_event(kind) {
            let part = match field {
                Field::Summary => raw.summary_index.as_u32(),
                _ => raw.content_index.as_u32(),
            };
            let text = match (done, field) {
                (false, _) => raw.delta.0,
                (true, Field::Arguments) => raw.arguments.0,
                (true, Field::Input) => raw.input.0,
                (true, _) => raw.text.0,
            };
            if let Some(text) = text {
                self.text(output_index, field, part.unwrap_or(0), &text, done);
            }
            if done && let Some(name) = raw.name.0 {
                self.name(output_index, field, name);
            }
            return;
        }
        match kind {
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = raw.item.and_then(Item::from_value) {
                    self.item(output_index, item, kind.ends_with(".done"));
                }
            }
            "response.content_part.added" => {
                self.part_added(output_index, Field::Text, raw.content_index, raw.part)
            }
            "response.reasoning_summary_part.added" => {
                self.part_added(output_index, Field::Summary, raw.summary_index, raw.part)
            }
            _ => {}
        }
    }

    /// Records what a response object says; the final one's `output`, when it has
    /// items, replaces what the events built.
    fn apply_response(&mut self, r: ResponseFields) {
        self.answered = true;
        let budget = &mut self.budget;
        let label = |slot: &mut Option<String>, v: Option<String>, budget: &mut Budget| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                *slot = Some(budget.label(Cow::Owned(v)));
            }
        };
        let reason = r.incomplete_reason().map(str::to_owned);
        label(&mut self.incomplete_reason, reason, budget);
        label(&mut self.id, r.id, budget);
        label(&mut self.model, r.model, budget);
        label(&mut self.status, r.status, budget);
        budget.truncated |= r.truncated;
        if let Some(usage) = r.usage {
            self.usage = Some(usage);
        }
        if let Some(error) = r.error {
            let message = error_message(Some(&error), b"");
            self.record_error(message, None);
            self.response_error = Some(error);
        }
        if let Some(output) = r.output.filter(|o| !o.is_empty()) {
            self.items.clear();
            self.budget.text_left = MAX_TEXT_BYTES;
            self.parts_left = MAX_TRACKED;
            for (index, item) in (0..).zip(output) {
                self.item(index, item, true);
            }
        }
    }

    /// An output item opened (`done`: false) or finished (`done`: the whole item,
    /// which replaces what the events built).
    fn item(&mut self, index: u32, item: Item, done: bool) {
        let pos = match self.items.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(pos) if !done => {
                // Opened twice: the first one's metadata stays, its call gets a name.
                let (_, slot) = &mut self.items[pos];
                if slot.kind == item.kind && slot.call.name.is_empty() {
                    slot.call.id = self.budget.label(Cow::Owned(item.call.id));
                    slot.call.name = self.budget.label(Cow::Owned(item.call.name));
                }
                return;
            }
            Ok(pos) => {
                let old = self.items.remove(pos).1;
                self.budget.text_left += old.text_bytes();
                self.parts_left += old.text.len() + old.reasoning_text.len();
                pos
            }
            Err(pos) if self.items.len() < MAX_TRACKED => pos,
            Err(_) => {
                self.budget.truncated = true;
                return;
            }
        };
        let item = self.charge(item);
        self.items.insert(pos, (index, item));
    }

    /// `item` cut to what the budget still allows.
    fn charge(&mut self, mut item: Item) -> Item {
        let budget = &mut self.budget;
        let mut parts = |parts: &mut Vec<Part>, budget: &mut Budget| {
            if parts.len() > self.parts_left {
                parts.truncate(self.parts_left);
                budget.truncated = true;
            }
            self.parts_left -= parts.len();
            for (_, text) in parts.iter_mut() {
                let kept = budget.text(text).len();
                text.truncate(kept);
            }
        };
        parts(&mut item.text, budget);
        parts(&mut item.reasoning_text, budget);
        let kept = budget.text(&item.call.arguments).len();
        item.call.arguments.truncate(kept);
        let label = |s: String, budget: &mut Budget| budget.label(Cow::Owned(s));
        item.id = item.id.map(|id| label(id, budget));
        item.call.id = label(std::mem::take(&mut item.call.id), budget);
        item.call.name = label(std::mem::take(&mut item.call.name), budget);
        if let Kind::Other(kind) = &mut item.kind {
            *kind = label(std::mem::take(kind), budget);
        }
        item
    }

    /// The position of the item at `index` if it is of `kind`, opened when there is
    /// none yet (a delta for an item never announced still counts); `None` when it
    /// is of another kind or no more items may be tracked.
    fn slot(&mut self, index: u32, kind: Kind) -> Option<usize> {
        let pos = match self.items.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(pos) => pos,
            Err(pos) if self.items.len() < MAX_TRACKED => {
                self.answered = true;
                self.items.insert(pos, (index, Item::new(kind.clone())));
                pos
            }
            Err(_) => {
                self.budget.truncated = true;
                return None;
            }
        };
        (self.items[pos].1.kind == kind).then_some(pos)
    }

    /// A fragment (`done`: false) or the whole (`done`: true) of one text of the
    /// item at `index`.
    fn text(&mut self, index: u32, field: Field, part: u32, text: &str, done: bool) {
        let Some(pos) = self.slot(index, field.kind()) else {
            return;
        };
        let item = &mut self.items[pos].1;
        let budget = &mut self.budget;
        let slot = match field {
            Field::Arguments | Field::Input => &mut item.call.arguments,
            Field::Text | Field::Summary | Field::ReasoningText => {
                let parts = match field {
                    Field::ReasoningText => &mut item.reasoning_text,
                    _ => &mut item.text,
                };
                match part_mut(parts, part, &mut self.parts_left) {
                    Some(slot) => slot,
                    None => {
                        budget.truncated = true;
                        return;
                    }
                }
            }
        };
        if done {
            budget.text_left += slot.len();
            slot.clear();
        }
        slot.push_str(budget.text(text));
    }

    /// The name a `.done` event of a call gives, when the call has none yet.
    fn name(&mut self, index: u32, field: Field, name: Cow<'_, str>) {
        if !matches!(field, Field::Arguments | Field::Input) {
            return;
        }
        let budget_label = |budget: &mut Budget, name| budget.label(name);
        let Ok(pos) = self.items.binary_search_by_key(&index, |(i, _)| *i) else {
            return;
        };
        let (_, item) = &mut self.items[pos];
        if item.kind == field.kind() && item.call.name.is_empty() {
            item.call.name = budget_label(&mut self.budget, name);
        }
    }

    /// A text part announced (`content_part.added`, `reasoning_summary_part.added`):
    /// an `output_text` or `summary_text` part opens, with the text it holds.
    fn part_added(&mut self, index: u32, field: Field, part: Int, value: Option<Value>) {
        let Some(Value::Object(mut value)) = value else {
            return;
        };
        let expected = match field {
            Field::Summary => "summary_text",
            _ => "output_text",
        };
        if value.get("type").and_then(Value::as_str) != Some(expected) {
            return;
        }
        let text = match value.remove("text") {
            Some(Value::String(text)) => text,
            _ => String::new(),
        };
        let part = part.as_u32().unwrap_or(0);
        let Some(pos) = self.slot(index, field.kind()) else {
            return;
        };
        let item = &mut self.items[pos].1;
        match part_mut(&mut item.text, part, &mut self.parts_left) {
            Some(slot) if slot.is_empty() => slot.push_str(self.budget.text(&text)),
            Some(_) => {}
            None => self.budget.truncated = true,
        }
    }

    /// Records the first error the stream reported; `data`: the event's JSON.
    fn record_error(&mut self, message: String, data: Option<&[u8]>) {
        if self.error.is_some() {
            return;
        }
        self.error = Some(truncate(message, MAX_ERROR_BYTES));
        self.error_body = data.map(|d| String::from_utf8_lossy(d).into_owned());
    }
}

/// The part at `index` of `parts` (kept sorted), opened when new while
/// `parts_left` allows.
fn part_mut<'p>(
    parts: &'p mut Vec<Part>,
    index: u32,
    parts_left: &mut usize,
) -> Option<&'p mut String> {
    let pos = match parts.binary_search_by_key(&index, |(i, _)| *i) {
        Ok(pos) => pos,
        Err(pos) if *parts_left > 0 => {
            *parts_left -= 1;
            parts.insert(pos, (index, String::new()));
            pos
        }
        Err(_) => return None,
    };
    parts.get_mut(pos).map(|(_, text)| text)
}

/// The message of an error: `error.message`, a bare `error` string, or the JSON
/// (the event's data when there is no `error`).
fn error_message(error: Option<&Value>, data: &[u8]) -> String {
    match error {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => match m.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => Value::Object(m.clone()).to_string(),
        },
        Some(other) => other.to_string(),
        None => String::from_utf8_lossy(data).into_owned(),
    }
}

/// One event's JSON, read leniently: a field of an unexpected type reads as absent.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Text<'a>,
    #[serde(default)]
    output_index: Int,
    #[serde(default)]
    content_index: Int,
    #[serde(default)]
    summary_index: Int,
    #[serde(borrow, default)]
    delta: Text<'a>,
    /// `.done` of a text: the whole text.
    #[serde(borrow, default)]
    text: Text<'a>,
    /// `response.function_call_arguments.done`.
    #[serde(borrow, default)]
    arguments: Text<'a>,
    /// `response.custom_tool_call_input.done`.
    #[serde(borrow, default)]
    input: Text<'a>,
    #[serde(borrow, default)]
    name: Text<'a>,
    /// An `error` event's message.
    #[serde(borrow, default)]
    message: Text<'a>,
    /// `response.output_item.added` / `.done`.
    #[serde(default)]
    item: Option<Value>,
    /// `response.content_part.added`, `response.reasoning_summary_part.added`.
    #[serde(default)]
    part: Option<Value>,
    #[serde(default)]
    response: EventResponse,
    #[serde(default)]
    error: Option<Value>,
}
