//! Watching a response go by, and turning the whole exchange into a span.
//!
//! [`ObservedBody`] wraps the backend's response body: each chunk is handed to
//! the client the moment it arrives (nothing is buffered on the way) and, on the
//! side, to a [`Capture`] that rebuilds what the span needs (the SSE accumulator
//! for streams, a bounded copy for JSON). When the body ends, fails, stalls, or is
//! dropped because the client went away, [`InFlight::finish`] evaluates the
//! config generation the request started with and queues the span.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use celgate_engine::exchange::{Exchange, Operation};
use celgate_engine::{SpanKind, SpanRecord, SpanStatus};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::access_log;
use crate::openai;
use crate::redact::{StreamRedactor, Tally};
use crate::sse::SseAccumulator;
use crate::state::{BoxError, Generation, Shared};
use crate::trace_context::SpanIds;

/// What the side copy of a response keeps.
pub enum Capture {
    /// Pass-through paths and bodies in an encoding celgate does not read: nothing
    /// to parse.
    Nothing,
    /// `text/event-stream`: accumulated event by event.
    Sse(Box<SseAccumulator>),
    /// A JSON body, kept up to `limit` bytes.
    Json {
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
    /// capture and, when the body was not valid gzip, why.
    fn finish(mut self) -> (Capture, Option<String>) {
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
        let corrupt = match self.stopped {
            Some(GunzipStop::Corrupt(why)) => Some(why),
            Some(GunzipStop::TooLarge) | None => None,
        };
        (self.inner, corrupt)
    }
}

/// What reading a finished response found, beyond what went into the exchange.
#[derive(Debug, Default)]
struct Findings {
    /// A stream ended without `[DONE]` and with a choice left unfinished.
    unfinished: bool,
    /// The body is not what an OpenAI-compatible backend sends (not JSON, data
    /// events that are not JSON).
    invalid: Option<String>,
    /// The stream itself reported an error.
    stream_error: Option<String>,
}

impl Capture {
    /// A stream, accumulated; `body` says whether the answer is rendered into
    /// `response_body` at the end.
    pub fn sse(operation: Operation, body: bool) -> Capture {
        let acc = SseAccumulator::new(operation);
        Capture::Sse(Box::new(if body { acc } else { acc.without_body() }))
    }

    /// A JSON body kept up to `limit` bytes; `expected` (its `content-length`) sizes
    /// the buffer once instead of letting it grow by doubling, up to
    /// [`MAX_RESERVED_BYTES`] (a length is only a claim until the bytes arrive).
    pub fn json(limit: usize, expected: Option<u64>) -> Capture {
        let capacity = expected
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= limit)
            .unwrap_or(0)
            .min(MAX_RESERVED_BYTES);
        Capture::Json {
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

    fn feed(&mut self, chunk: &[u8]) {
        match self {
            Capture::Nothing => {}
            Capture::Sse(acc) => acc.feed(chunk),
            Capture::Json {
                buf,
                limit,
                overflow,
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
    fn finish(self, ex: &mut Exchange) -> Findings {
        let mut findings = Findings::default();
        match self {
            Capture::Nothing => {}
            Capture::Gzip(gunzip) => {
                let (inner, corrupt) = gunzip.finish();
                findings = inner.finish(ex);
                // A body that does not even decompress is not an answer either (the
                // client got the same bytes).
                if let Some(why) = corrupt {
                    findings.invalid = Some(why);
                }
            }
            Capture::Sse(acc) => {
                let summary = acc.finish(ex);
                findings.unfinished =
                    !summary.saw_done && ex.choices.iter().any(|c| c.finish_reason.is_none());
                findings.stream_error = summary.error;
                if summary.malformed_events > 0 {
                    findings.invalid = Some(format!(
                        "{} of the {} events the backend streamed carry data that is not JSON",
                        summary.malformed_events, summary.events
                    ));
                }
            }
            Capture::Json { buf, overflow, .. } => {
                if !overflow
                    && !buf.is_empty()
                    && let Err(e) = openai::parse_response_owned(ex.operation, buf, ex)
                {
                    // The client still gets the body as it came.
                    findings.invalid = Some(format!("the backend's answer is not valid JSON: {e}"));
                }
            }
        }
        findings
    }
}

/// How a response ended.
#[derive(Debug)]
pub enum Outcome {
    /// celgate answered itself with an error (bad request, no route, upstream
    /// unreachable); the message says why.
    Refused(String),
    /// The backend's body ended normally.
    Complete,
    /// The backend closed a stream cleanly but early: no `[DONE]`, and a choice
    /// without a finish reason.
    Incomplete,
    /// The body ended normally but is not a valid answer (not JSON, or stream
    /// events that are not JSON); the message says what.
    Invalid(String),
    /// The stream carried an error (`event: error`, or data with an `error`
    /// member); the backend's message.
    StreamError(String),
    /// The backend's body failed mid-way (connection reset, cut stream).
    Cut(String),
    /// The backend went silent for longer than its `idleTimeout`.
    Stalled(Duration),
    /// The client went away before the body ended.
    ClientGone,
}

/// A request on its way: everything the span and the access-log line need.
pub struct InFlight {
    pub shared: Arc<Shared>,
    /// The config generation this request uses from start to end.
    pub generation: Arc<Generation>,
    pub exchange: Exchange,
    pub ids: SpanIds,
    pub sampled: bool,
    pub start: Instant,
    pub start_time: SystemTime,
    pub route: String,
    pub backend: Option<String>,
    pub host: Option<String>,
    pub version: http::Version,
    /// Set once the span is queued; a request dropped before that (the client
    /// hung up while celgate waited for the body or the backend) is finished by
    /// `Drop` as [`Outcome::ClientGone`].
    pub finished: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.complete(Outcome::ClientGone);
        }
    }
}

impl InFlight {
    /// Evaluates the span, queues it for export (when sampled) and writes the
    /// access-log line.
    pub fn finish(mut self, outcome: Outcome) {
        self.complete(outcome);
    }

    fn complete(&mut self, outcome: Outcome) {
        self.finished = true;
        let ex = &mut self.exchange;
        let elapsed = self.start.elapsed();
        ex.response.duration_ms = Some(elapsed.as_secs_f64() * 1e3);
        let status_message = match &outcome {
            Outcome::Refused(m) => Some(m.clone()),
            Outcome::Complete => ex
                .error_type
                .as_deref()
                .map(|code| format!("backend answered with HTTP {code}")),
            Outcome::Incomplete => {
                ex.error_type = Some("stream_incomplete".into());
                Some(
                    "the backend closed the stream before it finished (no [DONE], a choice without finish_reason)"
                        .into(),
                )
            }
            Outcome::Invalid(why) => {
                ex.error_type = Some("invalid_response".into());
                Some(why.clone())
            }
            Outcome::StreamError(message) => {
                ex.error_type = Some("stream_error".into());
                Some(format!(
                    "the backend reported an error mid-stream: {message}"
                ))
            }
            Outcome::Cut(e) => {
                ex.error_type = Some("stream_cut".into());
                Some(format!("the backend's response was cut off: {e}"))
            }
            Outcome::Stalled(d) => {
                ex.error_type = Some("timeout".into());
                Some(format!(
                    "the backend sent nothing for {d:?} (its `idleTimeout`)"
                ))
            }
            Outcome::ClientGone => {
                ex.error_type = Some("client_disconnected".into());
                // Nothing was answered: nginx's "client closed request".
                ex.response.status.get_or_insert(499);
                Some("the client went away before the response ended".into())
            }
        };
        // Messages may quote backend text: no key leaves in one.
        let status_message = status_message.map(|m| {
            let (m, found) = self.generation.settings.redactor.mask_str(m);
            if found > 0 {
                let backend = self.backend.as_deref().unwrap_or_default();
                let metric = &self.shared.metrics.secrets_redacted;
                Tally::new(metric, backend, "in an error message").add(found);
            }
            m
        });
        let end_time = SystemTime::now();
        let plan = &self.generation.plan;
        let record = if self.sampled {
            Some(plan.evaluate(ex))
        } else {
            None
        };
        let format = self.generation.settings.server.access_log;
        access_log::write(
            format,
            &access_log::Entry {
                route: &self.route,
                backend: self.backend.as_deref(),
                endpoint: ex
                    .backend_host
                    .as_ref()
                    .map(|h| format!("{h}:{}", ex.backend_port.unwrap_or_default())),
                src_addr: ex.source_address.clone(),
                method: &ex.request.method,
                host: self.host.as_deref(),
                path: &ex.request.path,
                version: version_str(self.version),
                status: ex.response.status.unwrap_or_default(),
                trace_id: self.ids.trace_id.to_string(),
                span_id: self.ids.span_id.to_string(),
                sampled: self.sampled,
                provider: (!ex.provider.is_empty()).then_some(ex.provider.as_str()),
                request_model: ex.request_model.as_deref(),
                response_model: ex.response_model.as_deref(),
                input_tokens: ex.input_tokens,
                output_tokens: ex.output_tokens,
                streaming: ex.streaming,
                duration_ms: elapsed.as_secs_f64() * 1e3,
                error: ex.error_type.as_deref(),
            },
        );
        record_metrics(
            &self.shared.metrics,
            &self.route,
            self.backend.as_deref(),
            ex,
            record.as_ref(),
            elapsed,
        );
        if let Some(record) = record {
            let error = ex.error_type.is_some();
            let span = span_data(
                record,
                &self.ids,
                self.start_time,
                end_time,
                error.then(|| status_message.unwrap_or_default()),
            );
            self.shared.exporter.submit(span);
        }
    }
}

/// Request counters, expression errors, and the GenAI client metrics for calls a
/// backend accepted.
fn record_metrics(
    metrics: &crate::metrics::Metrics,
    route: &str,
    backend: Option<&str>,
    ex: &Exchange,
    record: Option<&SpanRecord>,
    elapsed: Duration,
) {
    use crate::metrics::{ExpressionLabels, GenAiLabels, RequestLabels, TokenLabels};
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.to_owned(),
            backend: backend.unwrap_or("").to_owned(),
            status: ex.response.status.unwrap_or_default(),
        })
        .inc();
    for (key, _) in record.map(|r| r.errors.as_slice()).unwrap_or_default() {
        metrics
            .expression_errors
            .get_or_create(&ExpressionLabels {
                attribute: key.clone(),
            })
            .inc();
    }
    // Only routed calls: their model names were accepted by a backend's list, so
    // clients cannot mint new label values.
    if backend.is_none() || ex.operation == Operation::Other {
        return;
    }
    let base = GenAiLabels {
        gen_ai_operation_name: ex.operation.as_str().to_owned(),
        gen_ai_provider_name: ex.provider.clone(),
        gen_ai_request_model: ex.request_model.clone().unwrap_or_default(),
        gen_ai_response_model: ex.response_model.clone().unwrap_or_default(),
        server_address: ex.backend_host.clone().unwrap_or_default(),
        error_type: ex.error_type.clone().unwrap_or_default(),
    };
    metrics
        .duration
        .get_or_create(&base)
        .observe(elapsed.as_secs_f64());
    for (kind, n) in [("input", ex.input_tokens), ("output", ex.output_tokens)] {
        if let Some(n) = n {
            metrics
                .token_usage
                .get_or_create(&TokenLabels {
                    gen_ai_operation_name: base.gen_ai_operation_name.clone(),
                    gen_ai_provider_name: base.gen_ai_provider_name.clone(),
                    gen_ai_request_model: base.gen_ai_request_model.clone(),
                    gen_ai_response_model: base.gen_ai_response_model.clone(),
                    server_address: base.server_address.clone(),
                    gen_ai_token_type: kind,
                })
                .observe(n as f64);
        }
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

/// The instrumentation scope of every span, built once.
static SCOPE: std::sync::LazyLock<InstrumentationScope> = std::sync::LazyLock::new(|| {
    InstrumentationScope::builder("celgate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// The engine's record as an OTel span.
fn span_data(
    record: SpanRecord,
    ids: &SpanIds,
    start: SystemTime,
    end: SystemTime,
    error: Option<String>,
) -> SpanData {
    let span_context = SpanContext::new(
        ids.trace_id,
        ids.span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let status = record.status;
    let attributes = record
        .attributes
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, crate::export::otel_value(v)))
        .collect();
    SpanData {
        span_context,
        parent_span_id: ids.parent.map_or(SpanId::INVALID, |p| p.span_id),
        parent_span_is_remote: ids.parent.is_some(),
        span_kind: match record.kind {
            SpanKind::Client => opentelemetry::trace::SpanKind::Client,
            SpanKind::Server => opentelemetry::trace::SpanKind::Server,
            SpanKind::Internal => opentelemetry::trace::SpanKind::Internal,
            SpanKind::Producer => opentelemetry::trace::SpanKind::Producer,
            SpanKind::Consumer => opentelemetry::trace::SpanKind::Consumer,
        },
        name: record.name.into(),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: record.dropped_attributes as u32,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match (error, status) {
            (Some(message), _) => opentelemetry::trace::Status::error(message),
            (None, SpanStatus::Ok) => opentelemetry::trace::Status::Ok,
            (None, SpanStatus::Error) => {
                opentelemetry::trace::Status::error("marked failed by the span.status expression")
            }
            (None, SpanStatus::Unset) => opentelemetry::trace::Status::Unset,
        },
        instrumentation_scope: SCOPE.clone(),
    }
}

/// An error and its causes, `outer: inner: root` (hyper's own message alone says
/// "error reading a body from connection"; the cause says reset, EOF, ...).
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The backend's response body on its way to the client.
pub struct ObservedBody<B: Body<Data = Bytes> + Unpin> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    capture: Capture,
    flight: Option<InFlight>,
}

impl<B: Body<Data = Bytes> + Unpin> ObservedBody<B> {
    pub fn new(inner: B, idle: Duration, capture: Capture, flight: InFlight) -> Self {
        ObservedBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            capture,
            flight: Some(flight),
        }
    }

    fn finish(&mut self, mut outcome: Outcome) {
        let Some(mut flight) = self.flight.take() else {
            return;
        };
        let capture = std::mem::replace(&mut self.capture, Capture::Nothing);
        let ex = &mut flight.exchange;
        let findings = capture.finish(ex);
        // A body that ended normally can still be a failed answer. An HTTP error
        // status already names the failure and keeps its `error.type`.
        if let Outcome::Complete = outcome
            && ex.error_type.is_none()
        {
            if let Some(message) = findings.stream_error {
                outcome = Outcome::StreamError(message);
            } else if let Some(why) = findings.invalid {
                outcome = Outcome::Invalid(why);
            } else if findings.unfinished {
                // Ended without `[DONE]` and with a choice left unfinished: the
                // backend stopped early although the connection closed cleanly.
                outcome = Outcome::Incomplete;
            }
        }
        flight.finish(outcome);
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.capture.feed(data);
                }
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                if this.inner.is_end_stream() {
                    this.finish(Outcome::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                this.finish(Outcome::Cut(with_causes(&*e)));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(Outcome::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.flight.is_some() && this.timer.as_mut().poll(cx).is_ready() {
                    let idle = this.idle;
                    this.finish(Outcome::Stalled(idle));
                    return Poll::Ready(Some(Err(
                        format!("backend sent nothing for {idle:?}").into()
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body<Data = Bytes> + Unpin> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        if self.flight.is_some() {
            // A body known to be over (empty, or its length fully sent) may be
            // dropped without a final poll: that is not a client going away.
            let outcome = if self.inner.is_end_stream() {
                Outcome::Complete
            } else {
                Outcome::ClientGone
            };
            self.finish(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            Capture::gzip(Capture::json(1 << 20, None), 1 << 20),
            &[&compressed],
        );
        assert!(findings.invalid.is_none(), "{findings:?}");
        assert_eq!(whole.response_id.as_deref(), Some("chatcmpl-1"));
        let bytes: Vec<&[u8]> = compressed.chunks(1).collect();
        let (split, _) = read(Capture::gzip(Capture::json(1 << 20, None), 1 << 20), &bytes);
        assert_eq!(split.choices, whole.choices);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_without_an_error() {
        // 64 MiB of zeros compress to ~64 KiB.
        let bomb = gzip(&vec![0_u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let mut capture = Capture::gzip(Capture::json(1 << 30, None), 1 << 20);
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
            Capture::gzip(Capture::json(1 << 20, None), 1 << 20),
            &[b"plain text, not gzip"],
        );
        assert!(findings.invalid.unwrap().contains("gzip"));
        let truncated = gzip(ANSWER);
        let (_, findings) = read(
            Capture::gzip(Capture::json(1 << 20, None), 1 << 20),
            &[&truncated[..truncated.len() - 4]],
        );
        assert!(findings.invalid.is_some());
        let (ex, findings) = read(Capture::json(1 << 20, Some(10)), &[&ANSWER[..40]]);
        assert!(findings.invalid.unwrap().contains("not valid JSON"));
        assert_eq!(
            ex.response_body.as_deref().map(str::as_bytes),
            Some(&ANSWER[..40])
        );
    }

    #[test]
    fn stream_findings_name_errors_malformed_events_and_early_ends() {
        let (_, f) = read(
            Capture::sse(Operation::Chat, true),
            &[b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {oops\n\n"],
        );
        assert!(f.unfinished);
        assert!(f.invalid.unwrap().contains("1 of the 2 events"));
        let (_, f) = read(
            Capture::sse(Operation::Chat, true),
            &[b"event: error\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\n"],
        );
        assert_eq!(f.stream_error.as_deref(), Some("overloaded"));
    }

    #[test]
    fn causes_are_kept_once_each() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error reading a body from connection")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let reset = std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "Connection reset by peer",
        );
        assert_eq!(
            with_causes(&Outer(reset)),
            "error reading a body from connection: Connection reset by peer"
        );
    }
}
