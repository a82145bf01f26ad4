//! The side copy of a response: what the span reads of the backend's answer.
//!
//! [`ObservedBody`](crate::observe::ObservedBody) feeds every chunk it passes to
//! the client into a [`Capture`] as well, which rebuilds what the span needs: the
//! SSE accumulator for streams, a bounded copy for JSON, and a gzip decoder in front
//! of either when a backend compresses although celgate asked it not to (bounded,
//! so a small body cannot expand into unbounded memory). At the end it writes the
//! answer into the exchange and reports what was wrong with it ([`Findings`]), from
//! which the observe phase names the call's outcome.

use bytes::Bytes;
use celgate_engine::exchange::Exchange;

use crate::protocol::{Protocol, SseAccumulator};
use crate::redact::{StreamRedactor, Tally};

/// What the side copy of a response keeps.
pub enum Capture {
    /// Pass-through paths and bodies in an encoding celgate does not read: nothing
    /// to parse.
    Nothing,
    /// `text/event-stream`: accumulated event by event.
    /// Held inline: its reader (the protocol's accumulator) is boxed already.
    Sse(SseAccumulator),
    /// A JSON body, kept up to `limit` bytes.
    Json {
        /// Reads the body once it is whole.
        protocol: &'static dyn Protocol,
        buf: Vec<u8>,
        limit: usize,
        overflow: bool,
    },
    /// A gzip-compressed body (a backend that compresses although celgate asked for
    /// no encoding): decompressed on the side, then captured as the inner capture
    /// says. The client still gets the compressed bytes untouched.
    Gzip(Box<Gunzip>),
}

/// Decompresses a gzip body for a [`Capture`], without letting a small body expand
/// into unbounded memory.
pub struct Gunzip {
    decoder: flate2::write::GzDecoder<Vec<u8>>,
    inner: Capture,
    /// Decompressed bytes so far.
    decoded: usize,
    /// Most decompressed bytes captured; past it the capture gives up.
    limit: usize,
    /// Why decompression stopped, if it did; the capture is then abandoned.
    stopped: Option<GunzipStop>,
    /// Masks backend keys in the decompressed bytes before the capture reads them.
    redact: Option<(StreamRedactor, Tally)>,
}

/// Why a [`Gunzip`] stopped.
#[derive(Debug)]
enum GunzipStop {
    /// The body is not valid gzip (the message says how).
    Corrupt(String),
    /// It decompresses to more than the limit: too big to read, not wrong.
    TooLarge,
}

/// Most bytes a JSON capture reserves before they arrive.
const MAX_RESERVED_BYTES: usize = 8 << 20;

/// Compressed bytes decompressed per step: deflate expands at most ~1032:1, so one
/// step produces at most ~4 MiB before the limit is checked.
const GUNZIP_STEP: usize = 4096;

impl Gunzip {
    fn feed(&mut self, chunk: &[u8]) {
        use std::io::Write as _;
        if self.stopped.is_some() {
            return;
        }
        for piece in chunk.chunks(GUNZIP_STEP) {
            if let Err(e) = self.decoder.write_all(piece) {
                self.stop(GunzipStop::Corrupt(format!(
                    "the backend's gzip body does not decompress: {e}"
                )));
                return;
            }
            if !self.drain() {
                return;
            }
        }
    }

    /// Hands what was decompressed to the inner capture; `false` once over the limit.
    fn drain(&mut self) -> bool {
        let out = std::mem::take(self.decoder.get_mut());
        self.decoded = self.decoded.saturating_add(out.len());
        if self.decoded > self.limit {
            tracing::debug!(
                "the backend's gzip body decompresses to more than {} bytes; not read for the span",
                self.limit
            );
            self.stop(GunzipStop::TooLarge);
            return false;
        }
        match &mut self.redact {
            Some((stream, tally)) => {
                let out = stream.push(Bytes::from(out));
                tally.add(stream.take_found());
                self.inner.feed(&out);
            }
            None => self.inner.feed(&out),
        }
        true
    }

    fn stop(&mut self, why: GunzipStop) {
        self.stopped = Some(why);
        self.inner = Capture::Nothing;
    }

    /// The end of the body: the rest of the decompressed data; returns the inner
    /// capture, when the body was not valid gzip why, and whether it decompressed to
    /// more than the limit (then the capture has nothing).
    fn finish(mut self) -> (Capture, Option<String>, bool) {
        if self.stopped.is_none() {
            match self.decoder.try_finish() {
                Ok(()) => {
                    if self.drain()
                        && let Some((stream, tally)) = &mut self.redact
                    {
                        let tail = stream.finish();
                        tally.add(stream.take_found());
                        self.inner.feed(&tail);
                    }
                }
                Err(e) => self.stop(GunzipStop::Corrupt(format!(
                    "the backend's gzip body is truncated: {e}"
                ))),
            }
        }
        let (corrupt, too_large) = match self.stopped {
            Some(GunzipStop::Corrupt(why)) => (Some(why), false),
            Some(GunzipStop::TooLarge) => (None, true),
            None => (None, false),
        };
        (self.inner, corrupt, too_large)
    }
}

/// What reading a finished response found, beyond what went into the exchange.
#[derive(Debug, Default)]
pub struct Findings {
    /// The protocol's final event (`data: [DONE]` for OpenAI streams) went by: the
    /// client has the whole answer, so a client that hangs up now is done, not gone.
    pub answered: bool,
    /// A stream ended without `[DONE]` and with a choice left unfinished.
    pub unfinished: bool,
    /// The body is not what an OpenAI-compatible backend sends (not JSON, data
    /// events that are not JSON).
    pub invalid: Option<String>,
    /// The stream itself reported an error.
    pub stream_error: Option<String>,
}

impl Capture {
    /// A stream, accumulated; `body` says whether the answer is rendered into
    /// `response_body` at the end.
    pub fn sse(protocol: &dyn Protocol, body: bool) -> Capture {
        let acc = SseAccumulator::for_protocol(protocol);
        Capture::Sse(if body { acc } else { acc.without_body() })
    }

    /// A JSON body kept up to `limit` bytes; `expected` (its `content-length`) sizes
    /// the buffer once instead of letting it grow by doubling, up to
    /// [`MAX_RESERVED_BYTES`] (a length is only a claim until the bytes arrive).
    pub fn json(protocol: &'static dyn Protocol, limit: usize, expected: Option<u64>) -> Capture {
        let capacity = expected
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= limit)
            .unwrap_or(0)
            .min(MAX_RESERVED_BYTES);
        Capture::Json {
            protocol,
            buf: Vec::with_capacity(capacity),
            limit,
            overflow: false,
        }
    }

    /// `inner`, read from a gzip-compressed body of at most `limit` bytes once
    /// decompressed.
    pub fn gzip(inner: Capture, limit: usize) -> Capture {
        Capture::Gzip(Box::new(Gunzip {
            decoder: flate2::write::GzDecoder::new(Vec::new()),
            inner,
            decoded: 0,
            limit,
            stopped: None,
            redact: None,
        }))
    }

    /// A gzip capture whose decompressed bytes are masked by `redact` (the client's
    /// compressed bytes are not: masking them would mean re-encoding the body).
    pub fn redact_decoded(mut self, redact: Option<(StreamRedactor, Tally)>) -> Capture {
        if let Capture::Gzip(gunzip) = &mut self {
            gunzip.redact = redact;
        }
        self
    }

    /// Whether what was fed so far holds output: a streamed event with text,
    /// reasoning or a tool call, or any byte of a JSON answer. `None` when nothing
    /// is read (a pass-through body).
    pub fn has_output(&self) -> Option<bool> {
        match self {
            Capture::Nothing => None,
            Capture::Sse(acc) => Some(acc.saw_output()),
            Capture::Json { buf, overflow, .. } => Some(!buf.is_empty() || *overflow),
            Capture::Gzip(gunzip) => gunzip.inner.has_output(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Capture::Nothing => {}
            Capture::Sse(acc) => acc.feed(chunk),
            Capture::Json {
                buf,
                limit,
                overflow,
                ..
            } => {
                if buf.len() + chunk.len() <= *limit {
                    buf.extend_from_slice(chunk);
                } else {
                    *overflow = true;
                }
            }
            Capture::Gzip(gunzip) => gunzip.feed(chunk),
        }
    }

    /// Writes what was captured into `ex` and says what was wrong with it.
    pub fn finish(self, ex: &mut Exchange) -> Findings {
        let mut findings = Findings::default();
        match self {
            Capture::Nothing => {}
            Capture::Gzip(gunzip) => {
                let (inner, corrupt, too_large) = gunzip.finish();
                findings = inner.finish(ex);
                // Decompressed past the limit: the span has none of the answer.
                ex.response_truncated |= too_large;
                // A body that does not even decompress is not an answer either (the
                // client got the same bytes).
                if let Some(why) = corrupt {
                    findings.invalid = Some(why);
                }
            }
            Capture::Sse(acc) => {
                let summary = acc.finish(ex);
                findings.answered = summary.saw_final;
                findings.unfinished =
                    !summary.saw_final && ex.choices.iter().any(|c| c.finish_reason.is_none());
                findings.stream_error = summary.error;
                if summary.malformed_events > 0 {
                    findings.invalid = Some(format!(
                        "{} of the {} events the backend streamed carry data that is not JSON",
                        summary.malformed_events, summary.events
                    ));
                }
            }
            Capture::Json {
                protocol,
                buf,
                overflow,
                ..
            } => {
                // Longer than the capture limit: the span has none of the body.
                ex.response_truncated |= overflow;
                if !overflow
                    && !buf.is_empty()
                    && let Err(e) = protocol.parse_response_owned(buf, ex)
                {
                    // The client still gets the body as it came.
                    findings.invalid = Some(format!("the backend's answer is not valid JSON: {e}"));
                }
            }
        }
        findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::chat::CHAT;
    use celgate_engine::exchange::Operation;
    use std::io::Write as _;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn read(capture: Capture, chunks: &[&[u8]]) -> (Exchange, Findings) {
        let mut capture = capture;
        for chunk in chunks {
            capture.feed(chunk);
        }
        let mut ex = Exchange {
            operation: Operation::Chat,
            ..Exchange::default()
        };
        let findings = capture.finish(&mut ex);
        (ex, findings)
    }

    const ANSWER: &[u8] = br#"{"id":"chatcmpl-1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#;

    #[test]
    fn a_gzip_body_is_read_through_in_any_chunking() {
        let compressed = gzip(ANSWER);
        let (whole, findings) = read(
            Capture::gzip(Capture::json(&CHAT, 1 << 20, None), 1 << 20),
            &[&compressed],
        );
        assert!(findings.invalid.is_none(), "{findings:?}");
        assert_eq!(whole.response_id.as_deref(), Some("chatcmpl-1"));
        let bytes: Vec<&[u8]> = compressed.chunks(1).collect();
        let (split, _) = read(
            Capture::gzip(Capture::json(&CHAT, 1 << 20, None), 1 << 20),
            &bytes,
        );
        assert_eq!(split.choices, whole.choices);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_without_an_error() {
        // 64 MiB of zeros compress to ~64 KiB.
        let bomb = gzip(&vec![0_u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let mut capture = Capture::gzip(Capture::json(&CHAT, 1 << 30, None), 1 << 20);
        capture.feed(&bomb);
        let Capture::Gzip(g) = &capture else {
            unreachable!()
        };
        assert!(matches!(g.stopped, Some(GunzipStop::TooLarge)));
        assert!(g.decoded <= (1 << 20) + GUNZIP_STEP * 1100, "{}", g.decoded);
        let (ex, findings) = read(capture, &[]);
        assert!(findings.invalid.is_none(), "too big is not wrong");
        assert!(ex.response_body.is_none());
    }

    #[test]
    fn a_body_that_is_not_gzip_or_not_json_is_invalid() {
        let (_, findings) = read(
            Capture::gzip(Capture::json(&CHAT, 1 << 20, None), 1 << 20),
            &[b"plain text, not gzip"],
        );
        assert!(findings.invalid.unwrap().contains("gzip"));
        let truncated = gzip(ANSWER);
        let (_, findings) = read(
            Capture::gzip(Capture::json(&CHAT, 1 << 20, None), 1 << 20),
            &[&truncated[..truncated.len() - 4]],
        );
        assert!(findings.invalid.is_some());
        let (ex, findings) = read(Capture::json(&CHAT, 1 << 20, Some(10)), &[&ANSWER[..40]]);
        assert!(findings.invalid.unwrap().contains("not valid JSON"));
        assert_eq!(
            ex.response_body.as_deref().map(str::as_bytes),
            Some(&ANSWER[..40])
        );
    }

    #[test]
    fn stream_findings_name_errors_malformed_events_and_early_ends() {
        let (_, f) = read(
            Capture::sse(&CHAT, true),
            &[b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {oops\n\n"],
        );
        assert!(f.unfinished);
        assert!(f.invalid.unwrap().contains("1 of the 2 events"));
        let (_, f) = read(
            Capture::sse(&CHAT, true),
            &[b"event: error\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\n"],
        );
        assert_eq!(f.stream_error.as_deref(), Some("overloaded"));
    }
}
