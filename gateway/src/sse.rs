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
//!   arguments, not with the bytes received;
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

use crate::openai::{integral_f64, set_usage};

/// The longest line (and the largest event `data`) the accumulator buffers. Anything
/// longer is dropped and its event counted in [`StreamSummary::malformed_events`]; no
/// legitimate chunk of an OpenAI stream comes near this.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Buffers that grew past this are shrunk back after use, so one large event does not
/// pin its memory for the rest of the stream.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// Longest error message kept in [`StreamSummary::error`], in bytes.
const MAX_ERROR_BYTES: usize = 4096;

/// At most this many distinct choices (and tool calls per choice) are tracked; more is
/// not a real response and would make the per-delta lookups quadratic.
const MAX_TRACKED: usize = 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How a stream went, beyond what is written into the [`Exchange`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The terminating `data: [DONE]` was received; `false` means the stream was cut
    /// (or the backend does not send it).
    pub saw_done: bool,
    /// Events that carried data, `[DONE]` and malformed ones included.
    pub events: u64,
    /// Events whose data was not JSON (or was too large to buffer).
    pub malformed_events: u64,
    /// The message of the first error the stream reported (an `event: error`, or a
    /// payload with an `error` member), truncated to a few KiB.
    pub error: Option<String>,
}

/// Accumulates an OpenAI-compatible SSE stream fed in arbitrary chunks.
///
/// ```
/// use celgate::sse::SseAccumulator;
/// use celgate_engine::exchange::{Exchange, Operation};
///
/// let mut acc = SseAccumulator::new(Operation::Chat);
/// acc.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel");
/// acc.feed(b"lo\"}}]}\n\ndata: [DONE]\n\n");
/// let mut ex = Exchange::default();
/// let summary = acc.finish(&mut ex);
/// assert!(summary.saw_done);
/// assert_eq!(ex.choices[0].content.as_deref(), Some("Hello"));
/// ```
#[derive(Debug)]
pub struct SseAccumulator {
    operation: Operation,
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
    /// The pending event outgrew [`MAX_LINE_BYTES`]; it is dropped as malformed.
    event_overflow: bool,
    summary: StreamSummary,
    acc: Accumulated,
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
    /// `(prompt, completion, total)` from the last chunk carrying usage.
    usage: Option<(Option<i64>, Option<i64>, Option<i64>)>,
    /// The data of the first error event, when it was JSON.
    error_body: Option<String>,
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
            line: Vec::new(),
            discarding_line: false,
            skip_lf: false,
            first_line: true,
            data: Vec::new(),
            has_data: false,
            event_is_error: false,
            event_overflow: false,
            summary: StreamSummary::default(),
            acc: Accumulated::default(),
        }
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
        let mut choices: Vec<Choice> = acc
            .choices
            .into_iter()
            .map(ChoiceState::into_choice)
            .collect();
        choices.sort_by_key(|c| c.index);

        if acc.saw_chunk {
            let header = Header {
                id: acc.id.as_deref(),
                model: acc.model.as_deref(),
                created: acc.created,
                system_fingerprint: acc.system_fingerprint.as_deref(),
            };
            ex.response_body = render(self.operation, &header, &choices, acc.usage);
        } else if let Some(body) = acc.error_body {
            ex.response_body = Some(body);
        }
        if let Some(id) = acc.id {
            ex.response_id = Some(id);
        }
        if let Some(model) = acc.model {
            ex.response_model = Some(model);
        }
        if let Some((input, output, total)) = acc.usage {
            set_usage(ex, input, output, total);
        }
        ex.choices = choices;
        self.summary
    }

    /// A line ended inside the current chunk; `tail` is its part in this chunk.
    fn end_line(&mut self, tail: &[u8]) {
        if self.discarding_line {
            self.discarding_line = false;
            return;
        }
        if self.line.is_empty() {
            self.process_line(tail);
            return;
        }
        if self.line.len() + tail.len() > MAX_LINE_BYTES {
            self.overflow_line();
            self.discarding_line = false;
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
            b"event" => self.event_is_error = value == b"error",
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
        if std::mem::take(&mut self.event_overflow) {
            self.summary.events += 1;
            self.summary.malformed_events += 1;
        } else if self.has_data {
            self.summary.events += 1;
            let data = self.data.trim_ascii();
            if data == b"[DONE]" {
                self.summary.saw_done = true;
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
            self.usage = Some((
                usage.prompt_tokens.0,
                usage.completion_tokens.0,
                usage.total_tokens.0,
            ));
        }
        for raw in chunk.choices.unwrap_or_default() {
            let Some(choice) = choice_mut(&mut self.choices, raw.index.as_u32().unwrap_or(0))
            else {
                continue;
            };
            if let Some(delta) = raw.delta {
                set_once(&mut choice.role, delta.role.0);
                append(&mut choice.content, delta.content.0);
                for call in delta.tool_calls.unwrap_or_default() {
                    apply_tool_call(&mut choice.tool_calls, call);
                }
                if let Some(f) = delta.function_call {
                    let call = choice.function_call.get_or_insert_with(ToolCall::default);
                    apply_function(call, f);
                }
            }
            append(&mut choice.content, raw.text.0);
            if let Some(reason) = raw.finish_reason.0.filter(|r| !r.is_empty()) {
                choice.finish_reason = Some(reason.into_owned());
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

fn append(slot: &mut Option<String>, fragment: Option<Cow<'_, str>>) {
    if let Some(fragment) = fragment {
        match slot {
            Some(s) => s.push_str(&fragment),
            None => *slot = Some(fragment.into_owned()),
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
fn apply_tool_call(calls: &mut Vec<ToolCallState>, raw: RawToolCall<'_>) {
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
        None if calls.len() < MAX_TRACKED => {
            calls.push(ToolCallState {
                index,
                call: ToolCall::default(),
            });
            calls.len() - 1
        }
        None => return,
    };
    let Some(state) = calls.get_mut(pos) else {
        return;
    };
    if let Some(id) = id
        && state.call.id.is_empty()
    {
        state.call.id = id.into_owned();
    }
    if let Some(f) = raw.function {
        apply_function(&mut state.call, f);
    }
}

fn apply_function(call: &mut ToolCall, f: RawFunction<'_>) {
    if call.name.is_empty()
        && let Some(name) = f.name.0
    {
        call.name = name.into_owned();
    }
    if let Some(args) = f.arguments.0 {
        call.arguments.push_str(&args);
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
    usage: Option<RenderedUsage>,
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
struct RenderedUsage {
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_tokens: Option<i64>,
}

/// Renders the accumulated stream as the body a non-streaming call would have had.
fn render(
    operation: Operation,
    header: &Header<'_>,
    choices: &[Choice],
    usage: Option<(Option<i64>, Option<i64>, Option<i64>)>,
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
        usage: usage.map(|(input, output, total)| RenderedUsage {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: total.or_else(|| input?.checked_add(output?)),
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
