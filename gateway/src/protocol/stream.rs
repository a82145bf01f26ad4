//! Reading a streamed answer: the framer's events, handed to the protocol's reader.
//!
//! An [`SseAccumulator`] is what the proxy feeds a streamed response's chunks to. It
//! joins the protocol-free [`SseFramer`] to a protocol's [`StreamAccumulator`] (made
//! by [`Protocol::stream`](super::Protocol::stream)), one virtual call per event: the
//! accumulator reads each event's data (borrowing it, allocating only for what the
//! span keeps) and writes the response side of the [`Exchange`] at the end. Whether
//! the protocol's [`FinalEvent`] went by is decided here, from the protocol's
//! declaration, so every protocol ends its streams by the same rule; the
//! [`StreamSummary`] says how the stream went.

use std::fmt;

use celgate_engine::exchange::Exchange;

use super::sse::{EventSink, SseEvent, SseFramer};

/// How a streaming protocol says its answer is over. Once this event has been
/// forwarded the client has the whole answer, so a client that hangs up after it (the
/// official SDKs stop reading there) has completed the call, not abandoned it. A
/// protocol names its final event in [`Protocol::final_event`](super::Protocol::final_event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalEvent {
    /// An event whose data is exactly this (surrounding ASCII whitespace aside):
    /// `[DONE]` for OpenAI chat and legacy completions. The event itself carries no
    /// answer and is not handed to the accumulator.
    Data(&'static str),
    /// An event of this name, whatever its data: e.g. `message_stop` (Anthropic
    /// Messages). Its data is read like any other event's.
    Named(&'static str),
    /// An event of any of these names, for a protocol whose answer ends in one of
    /// several ways: `response.completed`, `response.failed` or `response.incomplete`
    /// (OpenAI Responses). Its data is read like any other event's.
    AnyNamed(&'static [&'static str]),
    /// No event is final by its name or data: the answer is complete once the
    /// accumulator has read what completes it ([`StreamAccumulator::saw_final`]), e.g.
    /// Gemini, whose stream just ends after a chunk carrying a `finishReason`.
    Accumulator,
}

/// What a [`StreamAccumulator`] made of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventRead {
    /// Read (applied to the answer, or recorded as the stream's error).
    Read,
    /// Read, and it carried output: text, reasoning or a tool call. The first such
    /// event marks the answer's time to first token.
    Output,
    /// Not what the protocol sends (e.g. data that is not JSON); skipped and counted
    /// in [`StreamSummary::malformed_events`].
    Malformed,
}

/// What a [`StreamAccumulator`] reports at the end, beyond the [`Exchange`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEnd {
    /// The message of the first error the stream reported, truncated to
    /// [`MAX_ERROR_BYTES`](super::limits::MAX_ERROR_BYTES).
    pub error: Option<String>,
    /// Something the stream carried was left out of the span (a cap of
    /// [`super::limits`] was reached).
    pub truncated: bool,
}

/// A protocol's reader of its stream events: fed each event in order, it writes the
/// response side of the exchange at the end.
pub trait StreamAccumulator: Send + fmt::Debug {
    /// Reads one event. Called for every event but the protocol's
    /// [`FinalEvent::Data`] one. Must not allocate for what it does not keep.
    fn event(&mut self, event: &SseEvent<'_>) -> EventRead;

    /// Writes the accumulated answer into `ex` (`choices`, model, id, token counts,
    /// `response_truncated`, and `response_body` when `render_body`: the answer as
    /// the equivalent non-streaming body).
    fn finish(self: Box<Self>, ex: &mut Exchange, render_body: bool) -> StreamEnd;

    /// Whether the events read so far complete the answer; asked at the end of the
    /// stream when the protocol's final event is [`FinalEvent::Accumulator`].
    fn saw_final(&self) -> bool {
        false
    }
}

/// How a stream went, beyond what is written into the [`Exchange`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The protocol's final event ([`FinalEvent`], `data: [DONE]` for OpenAI) was
    /// received; `false` means the stream was cut (or the backend does not send it).
    pub saw_final: bool,
    /// Events that carried data, the final one and malformed ones included.
    pub events: u64,
    /// Events whose data the protocol could not read (or too large to buffer).
    pub malformed_events: u64,
    /// The message of the first error the stream reported (for OpenAI an
    /// `event: error`, or a payload with an `error` member), truncated to a few KiB.
    pub error: Option<String>,
    /// Something the stream carried was left out of the span (a cap was reached:
    /// text, a label, choices or tool calls).
    pub truncated: bool,
}

/// Accumulates a protocol's SSE stream fed in arbitrary chunks.
///
/// ```
/// use celgate::protocol::{self, SseAccumulator};
/// use celgate_engine::exchange::Exchange;
///
/// let chat = protocol::for_request(&http::Method::POST, "/v1/chat/completions").unwrap();
/// let mut acc = SseAccumulator::for_protocol(chat);
/// acc.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel");
/// acc.feed(b"lo\"}}]}\n\ndata: [DONE]\n\n");
/// let mut ex = Exchange::default();
/// let summary = acc.finish(&mut ex);
/// assert!(summary.saw_final);
/// assert_eq!(ex.choices[0].content.as_deref(), Some("Hello"));
/// ```
#[derive(Debug)]
pub struct SseAccumulator {
    framer: SseFramer,
    reader: Reader,
    /// Render the accumulated answer into `response_body` at the end; off when
    /// no expression reads it (it is as large as the whole answer).
    render_body: bool,
}

/// The framer's sink: counts events, spots the final one, hands the rest on.
#[derive(Debug)]
struct Reader {
    final_event: FinalEvent,
    accumulator: Box<dyn StreamAccumulator>,
    saw_final: bool,
    saw_output: bool,
    events: u64,
    malformed_events: u64,
}

impl EventSink for Reader {
    fn event(&mut self, event: SseEvent<'_>) {
        self.events += 1;
        match self.final_event {
            FinalEvent::Data(end) if event.data.trim_ascii() == end.as_bytes() => {
                self.saw_final = true;
                return;
            }
            FinalEvent::Named(name) if event.name == name.as_bytes() => self.saw_final = true,
            FinalEvent::AnyNamed(names) if names.iter().any(|n| event.name == n.as_bytes()) => {
                self.saw_final = true;
            }
            _ => {}
        }
        match self.accumulator.event(&event) {
            EventRead::Read => {}
            EventRead::Output => self.saw_output = true,
            EventRead::Malformed => self.malformed_events += 1,
        }
    }

    fn oversized(&mut self) {
        self.events += 1;
        self.malformed_events += 1;
    }
}

impl SseAccumulator {
    /// A fresh accumulator for a stream of `protocol`'s answers.
    pub fn for_protocol(protocol: &dyn super::Protocol) -> Self {
        Self::with_accumulator(protocol.final_event(), protocol.stream())
    }

    /// A fresh accumulator reading events with `accumulator`, the stream ending at
    /// `final_event`.
    pub fn with_accumulator(
        final_event: FinalEvent,
        accumulator: Box<dyn StreamAccumulator>,
    ) -> Self {
        SseAccumulator {
            framer: SseFramer::default(),
            reader: Reader {
                final_event,
                accumulator,
                saw_final: false,
                saw_output: false,
                events: 0,
                malformed_events: 0,
            },
            render_body: true,
        }
    }

    /// Ends the stream at `final_event` instead of the protocol's own.
    pub fn with_final_event(mut self, final_event: FinalEvent) -> Self {
        self.reader.final_event = final_event;
        self
    }

    /// Leaves `response_body` unset at the end, for configs that never read it.
    pub fn without_body(mut self) -> Self {
        self.render_body = false;
        self
    }

    /// Whether an event so far carried output ([`EventRead::Output`]).
    pub fn saw_output(&self) -> bool {
        self.reader.saw_output
    }

    /// Consumes the next bytes of the stream, exactly as received.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.framer.feed(chunk, &mut self.reader);
    }

    /// Ends the stream: processes a final line and event that were not terminated,
    /// writes the accumulated response into `ex` and reports how the stream went.
    pub fn finish(mut self, ex: &mut Exchange) -> StreamSummary {
        self.framer.finish(&mut self.reader);
        let reader = self.reader;
        let saw_final = reader.saw_final
            || (reader.final_event == FinalEvent::Accumulator && reader.accumulator.saw_final());
        let end = reader.accumulator.finish(ex, self.render_body);
        StreamSummary {
            saw_final,
            events: reader.events,
            malformed_events: reader.malformed_events,
            error: end.error,
            truncated: end.truncated,
        }
    }

    /// Bytes buffered for the current line: (length, capacity).
    #[cfg(test)]
    pub(crate) fn buffered_line(&self) -> (usize, usize) {
        self.framer.buffered_line()
    }
}
