//! `text/event-stream` framing: the bytes of a stream in, its events out.
//!
//! The gateway forwards a streamed response to the client byte for byte as it arrives
//! and feeds the *same* chunks to an [`SseFramer`] on the side, which hands each
//! complete event to an [`EventSink`] (the protocol's stream reader, see
//! [`crate::protocol::SseAccumulator`]). It knows the event-stream format and no
//! protocol: what an event *means* (a delta, an error, the end) is the sink's
//! business. This sits on the hot path of every streamed call, so:
//!
//! - chunk boundaries are arbitrary (an event, a line, a `\r\n` or a UTF-8 character
//!   may be split); complete lines are parsed straight out of the caller's chunk and
//!   only an incomplete trailing line is copied (capped at [`MAX_LINE_BYTES`]);
//! - the raw stream is never kept: an event's data is buffered until its blank line,
//!   then lent to the sink ([`SseEvent`] borrows it) and the buffer is reused, so
//!   nothing is allocated per event once the buffers have grown.
//!
//! Parsing follows the WHATWG event-stream rules (`data:` with or without the space,
//! `:` comments, `event:`/`id:`/`retry:` fields, multi-line data joined with `\n`,
//! LF, CRLF or CR line endings, a leading BOM) with two deliberate differences: a
//! final event that is not followed by a blank line is still dispatched at
//! [`finish`](SseFramer::finish) (a backend that closes without the last terminator
//! still sent it), and an over-long line or event is dropped and reported to
//! [`EventSink::oversized`] instead of being buffered without bound.

/// The longest line (and the largest event `data`) the framer buffers. Anything
/// longer is dropped and its event reported as oversized; no legitimate chunk of an
/// LLM stream comes near this.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Buffers that grew past this are shrunk back after use, so one large event does not
/// pin its memory for the rest of the stream.
pub(crate) const RETAINED_CAPACITY: usize = 64 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One event of the stream, lent to the sink for the duration of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The value of its (last) `event:` field; empty when it had none (the WHATWG
    /// default type, `message`).
    pub name: &'a [u8],
    /// Its `data:` lines joined with `\n`, exactly as sent (not trimmed).
    pub data: &'a [u8],
}

/// What receives a stream's events from an [`SseFramer`].
pub trait EventSink {
    /// An event with at least one `data` line (possibly empty) ended.
    fn event(&mut self, event: SseEvent<'_>);
    /// An event was dropped because one of its lines, or its data, outgrew
    /// [`MAX_LINE_BYTES`].
    fn oversized(&mut self);
}

/// Splits a stream fed in arbitrary chunks into [`SseEvent`]s.
///
/// ```
/// use celgate::protocol::sse::{EventSink, SseEvent, SseFramer};
///
/// #[derive(Default)]
/// struct Names(Vec<String>);
/// impl EventSink for Names {
///     fn event(&mut self, e: SseEvent<'_>) {
///         self.0.push(format!("{}={}", String::from_utf8_lossy(e.name), String::from_utf8_lossy(e.data)));
///     }
///     fn oversized(&mut self) {}
/// }
///
/// let (mut framer, mut sink) = (SseFramer::default(), Names::default());
/// framer.feed(b"event: ping\ndata: a\r\nda", &mut sink);
/// framer.feed(b"ta: b\n\ndata: [DONE]", &mut sink);
/// framer.finish(&mut sink);
/// assert_eq!(sink.0, ["ping=a\nb", "=[DONE]"]);
/// ```
#[derive(Debug, Default)]
pub struct SseFramer {
    /// The incomplete trailing line of the last chunk.
    line: Vec<u8>,
    /// The current line outgrew [`MAX_LINE_BYTES`]: drop bytes until its end.
    discarding_line: bool,
    /// The last chunk ended in `\r`; a `\n` opening the next one belongs to it.
    skip_lf: bool,
    /// A line has been processed (a leading BOM is stripped from the first only).
    started: bool,
    /// The pending event's data lines, joined with `\n`.
    data: Vec<u8>,
    /// The pending event has at least one `data` line (possibly empty).
    has_data: bool,
    /// The pending event's name (its last `event:` field).
    name: Vec<u8>,
    /// The pending event outgrew [`MAX_LINE_BYTES`]; it is dropped.
    overflow: bool,
}

impl SseFramer {
    /// Consumes the next bytes of the stream, exactly as received, handing every
    /// event they complete to `sink`.
    pub fn feed<S: EventSink>(&mut self, chunk: &[u8], sink: &mut S) {
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
            self.end_line(line, sink);
            rest = after;
        }
        self.push_partial(rest);
    }

    /// Ends the stream: processes a final line and event that were not terminated.
    pub fn finish<S: EventSink>(&mut self, sink: &mut S) {
        if !self.discarding_line && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, sink);
        }
        self.dispatch(sink);
    }

    /// A line ended inside the current chunk; `tail` is its part in this chunk.
    fn end_line<S: EventSink>(&mut self, tail: &[u8], sink: &mut S) {
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
            self.process_line(tail, sink);
            return;
        }
        self.line.extend_from_slice(tail);
        let mut line = std::mem::take(&mut self.line);
        self.process_line(&line, sink);
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
        self.overflow = true;
        self.line.clear();
        self.line.shrink_to(RETAINED_CAPACITY);
    }

    /// Interprets one complete line (without its terminator).
    fn process_line<S: EventSink>(&mut self, mut line: &[u8], sink: &mut S) {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(sink);
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
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            _ => {} // `id`, `retry` and unknown fields carry nothing we record
        }
    }

    fn push_data(&mut self, value: &[u8]) {
        if self.overflow {
            return;
        }
        let needed = self.data.len() + value.len() + usize::from(self.has_data);
        if needed > MAX_LINE_BYTES {
            self.overflow = true;
            self.data.clear();
            return;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    /// A blank line (or the end of the stream): hand the pending event, if any, to
    /// the sink and start afresh.
    fn dispatch<S: EventSink>(&mut self, sink: &mut S) {
        if std::mem::take(&mut self.overflow) {
            sink.oversized();
        } else if self.has_data {
            sink.event(SseEvent {
                name: &self.name,
                data: &self.data,
            });
        }
        self.has_data = false;
        for buf in [&mut self.data, &mut self.name] {
            buf.clear();
            if buf.capacity() > RETAINED_CAPACITY {
                buf.shrink_to(RETAINED_CAPACITY);
            }
        }
    }

    /// Bytes buffered for the current line (a test's window on the memory bound).
    #[cfg(test)]
    pub(crate) fn buffered_line(&self) -> (usize, usize) {
        (self.line.len(), self.line.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a sink saw: each event as `name|data`, an oversized one as `!`.
    #[derive(Default, Debug, PartialEq)]
    struct Seen(Vec<String>);

    impl EventSink for Seen {
        fn event(&mut self, e: SseEvent<'_>) {
            let (name, data) = (
                String::from_utf8_lossy(e.name),
                String::from_utf8_lossy(e.data),
            );
            self.0.push(format!("{name}|{data}"));
        }
        fn oversized(&mut self) {
            self.0.push("!".to_owned());
        }
    }

    fn frame<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Seen {
        let (mut framer, mut seen) = (SseFramer::default(), Seen::default());
        for chunk in chunks {
            framer.feed(chunk, &mut seen);
        }
        framer.finish(&mut seen);
        seen
    }

    /// Framed whole, a byte at a time and in chunks of every size up to 9: the same.
    fn frame_all_ways(stream: &[u8]) -> Seen {
        let whole = frame([stream]);
        for size in 1..10 {
            assert_eq!(frame(stream.chunks(size)), whole, "chunks of {size}");
        }
        whole
    }

    #[test]
    fn fields_comments_and_multi_line_data() {
        let stream = concat!(
            "\u{feff}: comment\n\n",
            "retry: 3000\nid: 1\nevent: first\nevent: second\ndata:a\n\n",
            "data: b\ndata:  c\ndata\nunknown: x\n\n",
            "event: no-data\n\n",
            "data: after\n\n",
        );
        assert_eq!(
            frame_all_ways(stream.as_bytes()).0,
            ["second|a", "|b\n c\n", "|after"],
            "the last event name counts, one space is stripped, a name without data is no event"
        );
    }

    #[test]
    fn every_line_ending_frames_alike() {
        let lf = "event: e\ndata: 1\n\ndata: 2\n\n";
        let want = frame_all_ways(lf.as_bytes());
        assert_eq!(want.0, ["e|1", "|2"]);
        for other in [lf.replace('\n', "\r\n"), lf.replace('\n', "\r")] {
            assert_eq!(frame_all_ways(other.as_bytes()), want, "{other:?}");
        }
    }

    #[test]
    fn an_unterminated_last_event_is_dispatched_at_the_end() {
        for tail in ["data: end", "data: end\n", "data: end\r"] {
            assert_eq!(frame_all_ways(tail.as_bytes()).0, ["|end"], "{tail:?}");
        }
        assert!(frame_all_ways(b"").0.is_empty());
        assert!(frame_all_ways(b"<html>502</html>\n").0.is_empty());
    }

    #[test]
    fn over_long_lines_and_events_are_reported_not_buffered() {
        let mut stream = b"data: ".to_vec();
        stream.resize(MAX_LINE_BYTES + 1, b'x');
        stream.extend_from_slice(b"\n\n: ");
        stream.resize(stream.len() + MAX_LINE_BYTES, b'c');
        stream.extend_from_slice(b"\n\n");
        stream.extend_from_slice(&b"data: 0123456789\n".repeat(MAX_LINE_BYTES / 10));
        stream.extend_from_slice(b"\ndata: ok\n\n");
        let whole = frame([stream.as_slice()]);
        assert_eq!(whole.0, ["!", "!", "!", "|ok"]);
        for size in [7, 4096, MAX_LINE_BYTES + 3] {
            assert_eq!(frame(stream.chunks(size)), whole, "{size}");
        }
        let (mut framer, mut seen) = (SseFramer::default(), Seen::default());
        for chunk in stream.chunks(64 * 1024) {
            framer.feed(chunk, &mut seen);
            let (len, capacity) = framer.buffered_line();
            assert!(len <= MAX_LINE_BYTES && capacity <= MAX_LINE_BYTES + 64 * 1024);
        }
    }
}
