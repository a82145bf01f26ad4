//! Incremental accumulation of OpenAI-compatible SSE streams (`text/event-stream`).
//!
//! The gateway forwards a streamed response to the client byte for byte as it arrives
//! and feeds the *same* chunks to an [`SseAccumulator`] on the side; when the stream
//! ends, [`SseAccumulator::finish`] writes the accumulated response into the
//! [`Exchange`]. This sits on the hot path of every streamed call, so:
//!
//! - chunk boundaries are arbitrary (an event, a line, a `\r\n` or a UTF-8 character
//!   may be split); complete lines are parsed straight out of the caller's chunk and
//!   only an incomplete trailing line is copied (capped at [`MAX_LINE_BYTES`]);
//! - the raw stream is never kept: memory grows with the accumulated text and tool-call
//!   arguments, not with the bytes received, and those are capped
//!   ([`MAX_TEXT_BYTES`] in all, [`MAX_LABEL_BYTES`] per id, name, role or finish
//!   reason, [`MAX_TRACKED`] choices and tool calls): past a cap the span keeps what it
//!   has and says so ([`StreamSummary::truncated`]), the client still gets every byte;
//! - each event's JSON is parsed once into small borrowing structs.
//!
//! Parsing follows the WHATWG event-stream rules (`data:` with or without the space,
//! `:` comments, `event:`/`id:`/`retry:` fields, multi-line data joined with `\n`,
//! LF, CRLF or CR line endings, a leading BOM) with two deliberate differences: a
//! final event that is not followed by a blank line is still processed at
//! [`finish`](SseAccumulator::finish) (a backend that closes without the last
//! terminator still sent it), and an over-long line or event is dropped and counted
//! as malformed instead of being buffered without bound.

use std::borrow::Cow;
use std::fmt;

use celgate_engine::exchange::{Choice, Exchange, Operation, ToolCall};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::openai::{Usage, integral_f64, set_usage, token_details};

/// The longest line (and the largest event `data`) the accumulator buffers. Anything
/// longer is dropped and its event counted in [`StreamSummary::malformed_events`]; no
/// legitimate chunk of an OpenAI stream comes near this.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Buffers that grew past this are shrunk back after use, so one large event does not
/// pin its memory for the rest of the stream.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// Longest error message kept in [`StreamSummary::error`], in bytes.
const MAX_ERROR_BYTES: usize = 4096;

/// At most this many distinct choices (and tool calls in all) are tracked; more is
/// not a real response and would make the per-delta lookups quadratic.
pub const MAX_TRACKED: usize = 1024;

/// Most bytes of text (content and tool-call arguments, all choices together) a
/// stream's span keeps; the rest is dropped and the summary says it was truncated.
pub const MAX_TEXT_BYTES: usize = 8 << 20;

/// Longest id, name, role or finish reason kept (real ones are a few dozen bytes).
pub const MAX_LABEL_BYTES: usize = 256;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How a streaming protocol says its answer is over. Once this event has been
/// forwarded the client has the whole answer, so a client that hangs up after it (the
/// official SDKs stop reading there) has completed the call, not abandoned it. A new
/// protocol only names its final event here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalEvent {
    /// An event whose data is exactly this: `[DONE]` for OpenAI chat and legacy
    /// completions.
    Data(&'static str),
    /// An event of this name, whatever its data: e.g. `message_stop` (Anthropic
    /// Messages) or `response.completed` (OpenAI Responses).
    Named(&'static str),
}

impl FinalEvent {
    /// The final event of `operation`'s streams.
    pub fn of(operation: Operation) -> FinalEvent {
        match operation {
            Operation::Chat
            | Operation::TextCompletion
            | Operation::Embeddings
            | Operation::Other => FinalEvent::Data("[DONE]"),
        }
    }
}

/// How a stream went, beyond what is written into the [`Exchange`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The protocol's final event ([`FinalEvent`], `data: [DONE]` for OpenAI) was
    /// received; `false` means the stream was cut (or the backend does not send it).
    pub saw_final: bool,
    /// Events that carried data, `[DONE]` and malformed ones included.
    pub events: u64,
    /// Events whose data was not JSON (or was too large to buffer).
    pub malformed_events: u64,
    /// The message of the first error the stream reported (an `event: error`, or a
    /// payload with an `error` member), truncated to a few KiB.
    pub error: Option<String>,
    /// Something the stream carried was left out of the span (a cap was reached:
    /// text, a label, choices or tool calls).
    pub truncated: bool,
}

/// Accumulates an OpenAI-compatible SSE stream fed in arbitrary chunks.
///
/// ```
/// use celgate::protocol::sse::SseAccumulator;
/// use celgate_engine::exchange::{Exchange, Operation};
///
/// let mut acc = SseAccumulator::new(Operation::Chat);
/// acc.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel");
/// acc.feed(b"lo\"}}]}\n\ndata: [DONE]\n\n");
/// let mut ex = Exchange::default();
/// let summary = acc.finish(&mut ex);
/// assert!(summary.saw_final);
/// assert_eq!(ex.choices[0].content.as_deref(), Some("Hello"));
/// ```
#[derive(Debug)]
pub struct SseAccumulator {
    operation: Operation,
    /// How this protocol's stream ends.
    final_event: FinalEvent,
    /// The incomplete trailing line of the last chunk.
    line: Vec<u8>,
    /// The current line outgrew [`MAX_LINE_BYTES`]: drop bytes until its end.
    discarding_line: bool,
    /// The last chunk ended in `\r`; a `\n` opening the next one belongs to it.
    skip_lf: bool,
    /// No line has been processed yet (a leading BOM is stripped from the first).
    first_line: bool,
    /// The pending event's data lines, joined with `\n`.
    data: Vec<u8>,
    /// The pending event has at least one `data` line (possibly empty).
    has_data: bool,
    /// The pending event is named `error`.
    event_is_error: bool,
    /// The pending event is named as the protocol's [`FinalEvent::Named`].
    event_is_final: bool,
    /// The pending event outgrew [`MAX_LINE_BYTES`]; it is dropped as malformed.
    event_overflow: bool,
    summary: StreamSummary,
    acc: Accumulated,
    /// Render the accumulated answer into `response_body` at the end; off when
    /// no expression reads it (it is as large as the whole answer).
    render_body: bool,
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

/// What of a stream's text may still be kept, and whether anything was left out.
#[derive(Debug)]
struct Budget {
    /// Bytes of content and arguments still allowed.
    text_left: usize,
    /// Tool calls (all choices together) that may still be tracked.
    calls_left: usize,
    /// Something was left out.
    truncated: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            text_left: MAX_TEXT_BYTES,
            calls_left: MAX_TRACKED,
            truncated: false,
        }
    }
}

impl Budget {
    /// The part of a text fragment that still fits, cut on a character boundary.
    fn text<'s>(&mut self, fragment: &'s str) -> &'s str {
        let kept = prefix(fragment, self.text_left);
        self.text_left -= kept.len();
        self.truncated |= kept.len() < fragment.len();
        kept
    }

    /// A label (id, name, role, finish reason) cut to [`MAX_LABEL_BYTES`].
    fn label(&mut self, label: Cow<'_, str>) -> String {
        let kept = prefix(&label, MAX_LABEL_BYTES);
        if kept.len() < label.len() {
            self.truncated = true;
            kept.to_owned()
        } else {
            label.into_owned()
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

impl SseAccumulator {
    /// A fresh accumulator for a stream of the given operation (legacy
    /// [`Operation::TextCompletion`] streams render as a `text_completion`).
    pub fn new(operation: Operation) -> Self {
        SseAccumulator {
            operation,
            final_event: FinalEvent::of(operation),
            line: Vec::new(),
            discarding_line: false,
            skip_lf: false,
            first_line: true,
            data: Vec::new(),
            has_data: false,
            event_is_error: false,
            event_is_final: false,
            event_overflow: false,
            summary: StreamSummary::default(),
            acc: Accumulated::default(),
            render_body: true,
        }
    }

    /// Ends the stream at `final_event` instead of the operation's own.
    pub fn with_final_event(mut self, final_event: FinalEvent) -> Self {
        self.final_event = final_event;
        self
    }

    /// Leaves `response_body` unset at the end, for configs that never read it.
    pub fn without_body(mut self) -> Self {
        self.render_body = false;
        self
    }

    /// Consumes the next bytes of the stream, exactly as received.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if self.skip_lf
            && let Some((&first, tail)) = rest.split_first()
        {
            self.skip_lf = false;
            if first == b'\n' {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, tail) = rest.split_at(pos);
            let Some((&terminator, mut after)) = tail.split_first() else {
                break;
            };
            if terminator == b'\r' {
                match after.split_first() {
                    Some((&b'\n', a)) => after = a,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            self.end_line(line);
            rest = after;
        }
        self.push_partial(rest);
    }

    /// Ends the stream: processes a final line and event that were not terminated,
    /// writes the accumulated response into `ex` and reports how the stream went.
    ///
    /// Writes `choices` (always), `response_model`, `response_id` and the token counts
    /// (when the stream carried them), and `response_body`: the response rendered as
    /// the equivalent non-streaming `chat.completion` (or `text_completion`) JSON, or
    /// the error payload when the stream carried nothing else.
    pub fn finish(mut self, ex: &mut Exchange) -> StreamSummary {
        if !self.discarding_line && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line);
        }
        self.dispatch();

        let acc = self.acc;
        self.summary.truncated = acc.budget.truncated;
        let mut choices: Vec<Choice> = acc
            .choices
            .into_iter()
            .map(ChoiceState::into_choice)
            .collect();
        choices.sort_by_key(|c| c.index);

        if !self.render_body {
            // Nothing reads the body.
        } else if acc.saw_chunk {
            let header = Header {
                id: acc.id.as_deref(),
                model: acc.model.as_deref(),
                created: acc.created,
                system_fingerprint: acc.system_fingerprint.as_deref(),
            };
            ex.response_body = render(self.operation, &header, &choices, acc.usage.as_ref());
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
        ex.response_truncated |= self.summary.truncated;
        self.summary
    }

    /// A line ended inside the current chunk; `tail` is its part in this chunk.
    fn end_line(&mut self, tail: &[u8]) {
        if self.discarding_line {
            self.discarding_line = false;
            return;
        }
        if self.line.len() + tail.len() > MAX_LINE_BYTES {
            self.overflow_line();
            self.discarding_line = false;
            return;
        }
        if self.line.is_empty() {
            // The whole line is in this chunk: parse it in place, no copy.
            self.process_line(tail);
            return;
        }
        self.line.extend_from_slice(tail);
        let mut line = std::mem::take(&mut self.line);
        self.process_line(&line);
        line.clear();
        if line.capacity() > RETAINED_CAPACITY {
            line.shrink_to(RETAINED_CAPACITY);
        }
        self.line = line;
    }

    /// Buffers the unterminated end of a chunk.
    fn push_partial(&mut self, part: &[u8]) {
        if part.is_empty() || self.discarding_line {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE_BYTES {
            self.overflow_line();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn overflow_line(&mut self) {
        self.discarding_line = true;
        self.event_overflow = true;
        self.line.clear();
        self.line.shrink_to(RETAINED_CAPACITY);
    }

    /// Interprets one complete line (without its terminator).
    fn process_line(&mut self, mut line: &[u8]) {
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        let mut parts = line.splitn(2, |&b| b == b':');
        let field = parts.next().unwrap_or_default();
        let value = parts.next();
        if field.is_empty() {
            return; // a `:` comment (keep-alive)
        }
        let value = value.unwrap_or_default();
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"data" => self.push_data(value),
            b"event" => {
                self.event_is_error = value == b"error";
                self.event_is_final =
                    matches!(self.final_event, FinalEvent::Named(name) if name.as_bytes() == value);
            }
            _ => {} // `id`, `retry` and unknown fields carry nothing we record
        }
    }

    fn push_data(&mut self, value: &[u8]) {
        if self.event_overflow {
            return;
        }
        let needed = self.data.len() + value.len() + usize::from(self.has_data);
        if needed > MAX_LINE_BYTES {
            self.event_overflow = true;
            self.data.clear();
            return;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    /// A blank line (or the end of the stream): handle the pending event, if any.
    fn dispatch(&mut self) {
        let is_error = std::mem::take(&mut self.event_is_error);
        let is_final = std::mem::take(&mut self.event_is_final);
        if std::mem::take(&mut self.event_overflow) {
            self.summary.events += 1;
            self.summary.malformed_events += 1;
        } else if self.has_data {
            self.summary.events += 1;
            let data = self.data.trim_ascii();
            self.summary.saw_final |= is_final;
            if matches!(self.final_event, FinalEvent::Data(end) if end.as_bytes() == data) {
                self.summary.saw_final = true;
            } else {
                match serde_json::from_slice::<RawChunk<'_>>(data) {
                    Ok(chunk) if !is_error && chunk.error.is_none() => self.acc.apply(chunk),
                    Ok(_) => record_error(&mut self.summary, &mut self.acc, data),
                    Err(_) if is_error => record_error(&mut self.summary, &mut self.acc, data),
                    Err(_) => self.summary.malformed_events += 1,
                }
            }
        }
        self.has_data = false;
        self.data.clear();
        if self.data.capacity() > RETAINED_CAPACITY {
            self.data.shrink_to(RETAINED_CAPACITY);
        }
    }
}

/// Records the first error the stream reported.
fn record_error(summary: &mut StreamSummary, acc: &mut Accumulated, data: &[u8]) {
    if summary.error.is_some() {
        return;
    }
    let (message, is_json) = match serde_json::from_slice::<Value>(data) {
        Ok(v) => (error_message(&v), true),
        Err(_) => (String::from_utf8_lossy(data).into_owned(), false),
    };
    summary.error = Some(truncate(message, MAX_ERROR_BYTES));
    if is_json {
        acc.error_body = Some(String::from_utf8_lossy(data).into_owned());
    }
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

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Accumulated {
    fn apply(&mut self, chunk: RawChunk<'_>) {
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
                append(&mut choice.content, delta.content.0, budget);
                for call in delta.tool_calls.unwrap_or_default() {
                    apply_tool_call(&mut choice.tool_calls, call, budget);
                }
                if let Some(f) = delta.function_call {
                    let call = choice.function_call.get_or_insert_with(ToolCall::default);
                    apply_function(call, f, budget);
                }
            }
            append(&mut choice.content, raw.text.0, budget);
            if let Some(reason) = raw.finish_reason.0.filter(|r| !r.is_empty()) {
                choice.finish_reason = Some(budget.label(reason));
            }
        }
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

/// Appends what of `fragment` the budget still allows.
fn append(slot: &mut Option<String>, fragment: Option<Cow<'_, str>>, budget: &mut Budget) {
    if let Some(fragment) = fragment {
        let kept = budget.text(&fragment);
        match slot {
            Some(s) => s.push_str(kept),
            None => *slot = Some(kept.to_owned()),
        }
    }
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

/// A string borrowed from the event data when it has no escapes; any non-string
/// value reads as `None`.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

/// An integer; any other value (including fractions) reads as `None`.
#[derive(Default)]
struct Int(Option<i64>);

impl Int {
    fn as_u32(&self) -> Option<u32> {
        self.0.and_then(|i| u32::try_from(i).ok())
    }

    /// A token count: a negative one is no count at all.
    fn count(&self) -> Option<i64> {
        self.0.filter(|n| *n >= 0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntVisitor)
    }
}

struct TextVisitor;

/// Skips any value, yielding `Default` for it.
macro_rules! skip_other_values {
    ($out:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(<$out>::default())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$out, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(<$out>::default())
        }
    };
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v))))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'de>, E> {
        Ok(Text(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'de>, E> {
        Ok(Text(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'de>, E> {
        Ok(Text(None))
    }

    skip_other_values!(Text<'de>);
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Int;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
        Ok(Int(Some(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
        Ok(Int(i64::try_from(v).ok()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
        Ok(Int(integral_f64(v)))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Int, E> {
        Ok(Int(None))
    }

    skip_other_values!(Int);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::parse_response;
    use celgate_engine::exchange::TokenDetails;
    use serde_json::json;

    const CHAT_STREAM: &[u8] = fixture!("chat_stream.sse");
    const TOOLS_STREAM: &[u8] = fixture!("tools_stream.sse");
    const CHAT_TEXT: &str =
        "May or September: Lisbon’s weather is warm and sunny, with fewer crowds than in summer.";

    use crate::test_rng::Rng;

    fn run_chunks<'a>(
        op: Operation,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Exchange, StreamSummary) {
        let mut acc = SseAccumulator::new(op);
        for chunk in chunks {
            acc.feed(chunk);
        }
        let mut ex = Exchange::default();
        let summary = acc.finish(&mut ex);
        (ex, summary)
    }

    fn run(op: Operation, stream: &[u8]) -> (Exchange, StreamSummary) {
        run_chunks(op, [stream])
    }

    fn run_str(stream: &str) -> (Exchange, StreamSummary) {
        run(Operation::Chat, stream.as_bytes())
    }

    /// Feeds `stream` whole, one byte at a time, and in many random chunkings (empty
    /// chunks included), asserting that every way gives the same result.
    fn run_all_chunkings(op: Operation, stream: &[u8]) -> (Exchange, StreamSummary) {
        let whole = run(op, stream);
        assert_eq!(run_chunks(op, stream.chunks(1)), whole, "byte at a time");
        let mut rng = Rng(0x5EED_CE16_A7E0_0001);
        for _ in 0..200 {
            let max = 1 + rng.below(64);
            let mut chunks = Vec::new();
            let mut rest = stream;
            while !rest.is_empty() {
                let (head, tail) = rest.split_at(rng.below(max + 1).min(rest.len()));
                chunks.push(head);
                rest = tail;
            }
            assert_eq!(run_chunks(op, chunks), whole, "random chunking");
        }
        whole
    }

    fn crlf(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(stream.len() * 2);
        for &b in stream {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        }
    }

    #[test]
    fn chat_stream_fixture() {
        let (ex, summary) = run_all_chunkings(Operation::Chat, CHAT_STREAM);
        assert_eq!(
            summary,
            StreamSummary {
                saw_final: true,
                events: 23,
                malformed_events: 0,
                error: None,
                truncated: false,
            }
        );
        assert_eq!(
            ex.choices,
            vec![Choice {
                index: 0,
                role: "assistant".to_owned(),
                content: Some(CHAT_TEXT.to_owned()),
                tool_calls: vec![],
                finish_reason: Some("stop".to_owned()),
            }]
        );
        assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-stream789"));
        assert_eq!(ex.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(42), Some(19), Some(61))
        );

        let body: Value =
            serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(
            body,
            json!({
                "id": "chatcmpl-stream789",
                "object": "chat.completion",
                "created": 1721900100,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": CHAT_TEXT},
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": 42, "completion_tokens": 19, "total_tokens": 61,
                    "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
                    "completion_tokens_details": {
                        "accepted_prediction_tokens": 0, "audio_tokens": 0,
                        "reasoning_tokens": 0, "rejected_prediction_tokens": 0
                    }
                },
                "system_fingerprint": "fp_0ba0d124f1"
            })
        );
        assert_eq!(
            ex.token_details,
            TokenDetails {
                cache_read: Some(0),
                cache_write: None,
                input_audio: Some(0),
                reasoning: Some(0),
                output_audio: Some(0),
            }
        );
    }

    #[test]
    fn without_body_reads_everything_but_renders_no_body() {
        let mut with = SseAccumulator::new(Operation::Chat);
        let mut without = SseAccumulator::new(Operation::Chat).without_body();
        with.feed(CHAT_STREAM);
        without.feed(CHAT_STREAM);
        let (mut a, mut b) = (Exchange::default(), Exchange::default());
        with.finish(&mut a);
        without.finish(&mut b);
        assert!(a.response_body.is_some());
        assert_eq!(b.response_body, None);
        a.response_body = None;
        assert_eq!(a, b);
    }

    #[test]
    fn tools_stream_fixture() {
        let (ex, summary) = run_all_chunkings(Operation::Chat, TOOLS_STREAM);
        assert!(summary.saw_final);
        assert_eq!(summary.malformed_events, 0);
        assert_eq!(summary.error, None);
        assert_eq!(summary.events, 17);
        assert_eq!(
            ex.choices,
            vec![Choice {
                index: 0,
                role: "assistant".to_owned(),
                content: None,
                tool_calls: vec![
                    call(
                        "call_wX3kQ9ZpLm2v",
                        "get_weather",
                        r#"{"location":"Paris, France","unit":"celsius"}"#
                    ),
                    call(
                        "call_T7fYb0RnHs4c",
                        "get_time",
                        r#"{"timezone":"Asia/Tokyo"}"#
                    ),
                ],
                finish_reason: Some("tool_calls".to_owned()),
            }]
        );
        assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-tools456"));
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(96), Some(48), Some(144))
        );

        let body: Value =
            serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"],
            json!([
                {"id": "call_wX3kQ9ZpLm2v", "type": "function", "function": {
                    "name": "get_weather", "arguments": "{\"location\":\"Paris, France\",\"unit\":\"celsius\"}"}},
                {"id": "call_T7fYb0RnHs4c", "type": "function", "function": {
                    "name": "get_time", "arguments": "{\"timezone\":\"Asia/Tokyo\"}"}}
            ])
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    }

    /// The synthesized body, parsed as a non-streaming response, describes the same
    /// response the stream did.
    #[test]
    fn rendered_body_round_trips_through_parse_response() {
        for stream in [CHAT_STREAM, TOOLS_STREAM] {
            let (streamed, _) = run(Operation::Chat, stream);
            let body = streamed.response_body.clone().unwrap_or_default();
            let mut parsed = Exchange::default();
            parse_response(Operation::Chat, body.as_bytes(), &mut parsed).unwrap();
            assert_eq!(parsed.choices, streamed.choices);
            assert_eq!(parsed.response_id, streamed.response_id);
            assert_eq!(parsed.response_model, streamed.response_model);
            assert_eq!(
                (
                    parsed.input_tokens,
                    parsed.output_tokens,
                    parsed.total_tokens
                ),
                (
                    streamed.input_tokens,
                    streamed.output_tokens,
                    streamed.total_tokens
                )
            );
            assert_eq!(parsed.response_body.as_deref(), Some(body.as_str()));
        }
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let expected = run(Operation::Chat, CHAT_STREAM);
        let crlf_stream = crlf(CHAT_STREAM);
        assert_eq!(run_all_chunkings(Operation::Chat, &crlf_stream), expected);
        let cr_stream: Vec<u8> = CHAT_STREAM
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b })
            .collect();
        assert_eq!(run_all_chunkings(Operation::Chat, &cr_stream), expected);
        let tools_crlf = crlf(TOOLS_STREAM);
        assert_eq!(
            run_all_chunkings(Operation::Chat, &tools_crlf),
            run(Operation::Chat, TOOLS_STREAM)
        );
    }

    #[test]
    fn sse_field_syntax() {
        let stream = concat!(
            "\u{feff}: OPENROUTER PROCESSING\n",
            "\n",
            "retry: 3000\n",
            "id: 1\n",
            "event: message\n",
            "data:{\"id\":\"x1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"a\"}}]}\n",
            "\n",
            ": keep-alive\n",
            "data: {\"choices\":[{\"index\":0,\n",
            "data: \"delta\":{\"content\":\"b\\nc\"}}]}\n",
            "unknown-field: whatever\n",
            "data\n",
            "\n",
            "data:  {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" d\"},\"finish_reason\":\"stop\"}]}\n",
            "\n",
            "data:[DONE]\n",
            "\n",
        );
        let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
        assert_eq!(
            summary,
            StreamSummary {
                saw_final: true,
                events: 4,
                malformed_events: 0,
                error: None,
                truncated: false,
            }
        );
        // Multi-line data is joined with "\n" (inside JSON that is whitespace); a bare
        // `data` line adds an empty line; only one space after the colon is stripped.
        assert_eq!(ex.choices[0].content.as_deref(), Some("ab\nc d"));
        assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(ex.response_id.as_deref(), Some("x1"));
    }

    #[test]
    fn final_event_without_blank_line_is_processed() {
        for tail in ["data: [DONE]", "data: [DONE]\n", "data: [DONE]\r"] {
            let stream =
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n{tail}");
            let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
            assert!(summary.saw_final, "{tail:?}");
            assert_eq!(summary.events, 2);
            assert_eq!(ex.choices[0].content.as_deref(), Some("hi"));
        }
        let (ex, summary) = run_str("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}");
        assert!(!summary.saw_final);
        assert_eq!(ex.choices[0].content.as_deref(), Some("x"));
    }

    #[test]
    fn malformed_event_is_counted_and_skipped() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lost\"\n\n",
            "data: not json at all\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" two\"}}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
        assert_eq!(summary.events, 5);
        assert_eq!(summary.malformed_events, 2);
        assert!(summary.saw_final);
        assert_eq!(ex.choices[0].content.as_deref(), Some("one two"));
    }

    #[test]
    fn stream_cut_before_done() {
        // Cut in the middle of the usage chunk's JSON.
        let cut = CHAT_STREAM.len() - 200;
        let (ex, summary) = run_all_chunkings(Operation::Chat, &CHAT_STREAM[..cut]);
        assert!(!summary.saw_final);
        assert_eq!(summary.malformed_events, 1, "the truncated last event");
        assert_eq!(summary.events, 22);
        assert_eq!(ex.choices[0].content.as_deref(), Some(CHAT_TEXT));
        assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (None, None, None)
        );
        let body: Value =
            serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
        assert!(body.get("usage").is_none());

        // Cut mid-content: what arrived is kept.
        let at = CHAT_STREAM
            .windows(9)
            .position(|w| w == b" weather\"")
            .unwrap_or_default();
        let (ex, summary) = run(Operation::Chat, &CHAT_STREAM[..at]);
        assert!(!summary.saw_final);
        assert_eq!(
            ex.choices[0].content.as_deref(),
            Some("May or September: Lisbon’s")
        );
        assert_eq!(ex.choices[0].finish_reason, None);
    }

    #[test]
    fn error_events_are_recorded() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
            "event: error\n",
            "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n",
        );
        let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
        assert_eq!(
            summary.error.as_deref(),
            Some("The server had an error while processing your request.")
        );
        assert!(!summary.saw_final);
        assert_eq!(summary.malformed_events, 0);
        assert_eq!(ex.choices[0].content.as_deref(), Some("par"));

        // An error payload without an event name, as the only thing in the stream.
        let error = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let (ex, summary) = run_str(&format!("data: {error}\n\n"));
        assert_eq!(summary.error.as_deref(), Some("Rate limit reached"));
        assert!(ex.choices.is_empty());
        assert_eq!(ex.response_body.as_deref(), Some(error));

        // A plain-text error event, a bare string error; only the first is kept.
        let (_, summary) =
            run_str("event: error\ndata: upstream timed out\n\ndata: {\"error\":\"later\"}\n\n");
        assert_eq!(summary.error.as_deref(), Some("upstream timed out"));
        assert_eq!(summary.malformed_events, 0);
        let (_, summary) = run_str("data: {\"error\":\"overloaded\"}\n\n");
        assert_eq!(summary.error.as_deref(), Some("overloaded"));
    }

    #[test]
    fn legacy_text_completion_stream() {
        let stream = concat!(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\"\\n\\nScoops\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\" of joy\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (ex, summary) = run_all_chunkings(Operation::TextCompletion, stream.as_bytes());
        assert!(summary.saw_final);
        assert_eq!(ex.choices[0].content.as_deref(), Some("\n\nScoops of joy"));
        assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("length"));
        let body = ex.response_body.clone().unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1,
                "model": "gpt-3.5-turbo-instruct",
                "choices": [{"text": "\n\nScoops of joy", "index": 0, "finish_reason": "length"}]
            })
        );
        let mut parsed = Exchange::default();
        parse_response(Operation::TextCompletion, body.as_bytes(), &mut parsed).unwrap();
        assert_eq!(parsed.choices, ex.choices);
    }

    #[test]
    fn several_choices_interleaved() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"B\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"A\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"},{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        );
        let (ex, _) = run_all_chunkings(Operation::Chat, stream.as_bytes());
        let got: Vec<_> = ex
            .choices
            .iter()
            .map(|c| (c.index, c.content.as_deref(), c.finish_reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (0, Some("Aa"), Some("length")),
                (1, Some("Bb"), Some("stop"))
            ]
        );
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (Some(3), Some(4), Some(7))
        );
        let body: Value =
            serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
    }

    #[test]
    fn tool_calls_without_index_and_legacy_function_call() {
        // Some OpenAI-compatible servers omit `index` and send each call whole.
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"function_call\":{\"name\":\"legacy\",\"arguments\":\"{\\\"q\\\"\"}}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"function_call\":{\"arguments\":\":2}\"}},\"finish_reason\":\"function_call\"}]}\n\n",
        );
        let (ex, _) = run_all_chunkings(Operation::Chat, stream.as_bytes());
        assert_eq!(
            ex.choices[0].tool_calls,
            vec![
                call("a", "f", r#"{"x":1}"#),
                call("b", "g", "{}"),
                call("", "legacy", r#"{"q":2}"#)
            ]
        );
        assert_eq!(ex.choices[0].role, "assistant");
    }

    #[test]
    fn azure_style_empty_prelude_and_odd_types_are_tolerated() {
        let stream = concat!(
            "data: {\"id\":\"\",\"model\":\"\",\"created\":0,\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n",
            "data: {\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\",\"created\":\"soon\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":5},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\",\"content_filter_results\":{}}],\"usage\":null}\n\n",
        );
        let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
        assert_eq!(summary.malformed_events, 0);
        assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-az"));
        assert_eq!(ex.response_model.as_deref(), Some("gpt-4o"));
        assert_eq!(ex.choices[0].content.as_deref(), Some("ok"));
        assert_eq!(ex.input_tokens, None);
    }

    #[test]
    fn oversized_line_is_dropped_not_buffered() {
        let mut acc = SseAccumulator::new(Operation::Chat);
        acc.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: \"");
        let filler = vec![b'x'; 64 * 1024];
        for _ in 0..(MAX_LINE_BYTES / filler.len() + 2) {
            acc.feed(&filler);
            assert!(acc.line.len() <= MAX_LINE_BYTES);
        }
        assert!(acc.line.capacity() <= RETAINED_CAPACITY);
        acc.feed(
            b"\"\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n",
        );
        let mut ex = Exchange::default();
        let summary = acc.finish(&mut ex);
        assert_eq!(summary.events, 4);
        assert_eq!(summary.malformed_events, 1);
        assert!(summary.saw_final);
        assert_eq!(ex.choices[0].content.as_deref(), Some("ab"));

        // The same when the huge line arrives in one chunk (it is never copied whole),
        // and when an event's data lines add up past the limit.
        let mut big = b"data: ".to_vec();
        big.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 1));
        big.extend_from_slice(b"\n\n");
        big.extend_from_slice(&b"data: 0123456789\n".repeat(MAX_LINE_BYTES / 10));
        big.extend_from_slice(b"\ndata: [DONE]\n\n");
        let (_, summary) = run(Operation::Chat, &big);
        assert_eq!(
            (summary.events, summary.malformed_events, summary.saw_final),
            (3, 2, true)
        );
    }

    #[test]
    fn an_over_long_line_is_dropped_however_it_is_chunked() {
        // A line one byte over the limit whose data alone fits: it used to be parsed
        // when it arrived in one chunk and dropped when split, so the span depended on
        // how the network cut the stream.
        let chunk = br#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#;
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(chunk);
        line.resize(MAX_LINE_BYTES + 1, b' ');
        let mut stream = line.clone();
        stream.extend_from_slice(b"\n\n: ");
        // An over-long comment line too.
        stream.resize(stream.len() + MAX_LINE_BYTES, b'c');
        stream.extend_from_slice(b"\r\n\ndata: [DONE]\n\n");
        let whole = run(Operation::Chat, &stream);
        assert_eq!(
            whole.1,
            StreamSummary {
                saw_final: true,
                events: 3,
                malformed_events: 2,
                error: None,
                truncated: false,
            }
        );
        assert!(whole.0.choices.is_empty());
        for size in [1, 7, 4096, MAX_LINE_BYTES, MAX_LINE_BYTES + 3] {
            assert_eq!(
                run_chunks(Operation::Chat, stream.chunks(size)),
                whole,
                "{size}"
            );
        }
        // One byte shorter and it is an ordinary event, in one chunk or many.
        line.truncate(MAX_LINE_BYTES);
        line.extend_from_slice(b"\n\n");
        let whole = run(Operation::Chat, &line);
        assert_eq!(whole.0.choices[0].content.as_deref(), Some("a"));
        assert_eq!(run_chunks(Operation::Chat, line.chunks(4096)), whole);
    }

    #[test]
    fn what_the_span_keeps_is_capped_and_the_summary_says_so() {
        // Text: 9 MiB of content in 1 KiB deltas keeps 8 MiB, cut on a character.
        let mut acc = SseAccumulator::new(Operation::Chat);
        let piece = "é".repeat(512);
        let event =
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{piece}\"}}}}]}}\n\n");
        for _ in 0..(9 << 10) {
            acc.feed(event.as_bytes());
        }
        acc.feed(b"data: [DONE]\n\n");
        let mut ex = Exchange::default();
        let summary = acc.finish(&mut ex);
        assert!(summary.truncated && summary.saw_final);
        assert!(ex.response_truncated);
        let content = ex.choices[0].content.as_deref().unwrap_or_default();
        assert_eq!(content.len(), MAX_TEXT_BYTES);

        // Labels, choices and tool calls.
        let long = "n".repeat(MAX_LABEL_BYTES + 10);
        let (ex, summary) = run_str(&format!(
            "data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"{long}\",\"function\":{{\"name\":\"f\"}}}}]}},\"finish_reason\":\"{long}\"}}]}}\n\n"
        ));
        assert!(summary.truncated);
        assert_eq!(ex.choices[0].tool_calls[0].id.len(), MAX_LABEL_BYTES);
        assert_eq!(
            ex.choices[0].finish_reason.as_deref().map(str::len),
            Some(MAX_LABEL_BYTES)
        );
        let many: String = (0..MAX_TRACKED + 5)
            .map(|i| format!("data: {{\"choices\":[{{\"index\":{i},\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"c{i}\"}}]}}}}]}}\n\n"))
            .collect();
        let (ex, summary) = run_str(&many);
        assert!(summary.truncated);
        assert_eq!(ex.choices.len(), MAX_TRACKED);
        let calls: usize = ex.choices.iter().map(|c| c.tool_calls.len()).sum();
        assert_eq!(calls, MAX_TRACKED);

        // An ordinary stream is not truncated.
        let (ex, summary) = run(Operation::Chat, CHAT_STREAM);
        assert!(!summary.truncated && !ex.response_truncated);
    }

    #[test]
    fn a_named_final_event_ends_the_stream_like_done() {
        let stream = concat!(
            "event: content_block_delta\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let mut acc = SseAccumulator::new(Operation::Chat)
            .with_final_event(FinalEvent::Named("message_stop"));
        acc.feed(stream.as_bytes());
        let mut ex = Exchange::default();
        assert!(acc.finish(&mut ex).saw_final);
        // Under OpenAI's rules the same stream never finished.
        let (_, summary) = run_str(stream);
        assert!(!summary.saw_final);
    }

    #[test]
    fn negative_token_counts_are_no_counts() {
        let (ex, _) = run_str(concat!(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":3,",
            "\"total_tokens\":-2,\"completion_tokens_details\":{\"reasoning_tokens\":-1}}}\n\n"
        ));
        assert_eq!(
            (ex.input_tokens, ex.output_tokens, ex.total_tokens),
            (None, Some(3), None)
        );
        assert_eq!(ex.token_details.reasoning, None);
        let body: Value =
            serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(
            body["usage"],
            json!({"completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": -1}})
        );
    }

    #[test]
    fn empty_and_non_sse_input() {
        let (ex, summary) = run(Operation::Chat, b"");
        assert_eq!(summary, StreamSummary::default());
        assert!(ex.choices.is_empty());
        assert_eq!(ex.response_body, None);

        let (ex, summary) = run(
            Operation::Chat,
            b"<html><body>502 Bad Gateway</body></html>\n",
        );
        assert_eq!(summary.events, 0);
        assert_eq!(ex.response_body, None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(42);
        let alphabet = b"data:event: error\r\n{}[]\",0123DONE\xe2\x80\x99\xff";
        for _ in 0..300 {
            let len = rng.below(2000);
            let stream: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let _ = run_chunks(Operation::Chat, stream.chunks(1 + rng.below(50)));
        }
        // Mutated fixtures.
        for round in 0..300 {
            let mut stream = if round % 2 == 0 {
                CHAT_STREAM
            } else {
                TOOLS_STREAM
            }
            .to_vec();
            for _ in 0..=rng.below(8) {
                let at = rng.below(stream.len());
                stream[at] = alphabet[rng.below(alphabet.len())];
            }
            let _ = run_chunks(Operation::Chat, stream.chunks(1 + rng.below(100)));
        }
    }
}
