//! Watching a response go by, and turning the whole exchange into a span.
//!
//! [`ObservedBody`] wraps the backend's response body: each chunk is handed to
//! the client the moment it arrives (nothing is buffered on the way) and, on the
//! side, to a [`Capture`] that rebuilds what the span needs (the SSE accumulator
//! for streams, a bounded copy for JSON). When the body ends, fails, stalls, or is
//! dropped because the client went away, [`InFlight::finish`] evaluates the
//! config generation the request started with and queues the span. At shutdown,
//! bodies still open when the drain deadline passes are ended through the
//! [`Cutoff`], so their spans are queued before the exporter stops.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use celgate_engine::exchange::{Exchange, Operation};
use celgate_engine::{SpanKind, SpanRecord, SpanStatus};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

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
struct Findings {
    /// The protocol's final event (`data: [DONE]` for OpenAI streams) went by: the
    /// client has the whole answer, so a client that hangs up now is done, not gone.
    answered: bool,
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
            Capture::Json { buf, overflow, .. } => {
                // Longer than the capture limit: the span has none of the body.
                ex.response_truncated |= overflow;
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
    /// The gateway shut down before the body ended (`server.shutdownTimeout`
    /// passed).
    Shutdown,
}

/// The end of the shutdown drain, for the bodies still open then.
///
/// When `server.shutdownTimeout` passes, [`serve`](crate::server::serve) calls
/// [`cut`](Cutoff::cut): every [`ObservedBody`] still streaming ends at its next poll
/// (it waits on the signal, so a silent backend does not hold it) with
/// [`Outcome::Shutdown`], which queues its span. The server then waits, briefly, until
/// [`open`](Cutoff::open) is zero before it stops the exporter.
#[derive(Debug, Default)]
pub struct Cutoff {
    cut: AtomicBool,
    signal: Arc<Notify>,
    /// Bodies whose span is not queued yet.
    open: AtomicUsize,
}

impl Cutoff {
    /// Ends every open body now, and any body opened from now on at its first poll.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.signal.notify_waiters();
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Bodies whose span is not queued yet.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits until no body is open, at most `within`; returns how many still are.
    pub async fn wait_closed(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.open()
    }

    /// The signal a body waits on; it completes on [`cut`](Cutoff::cut) even when
    /// it was created (not yet polled) before.
    fn signal(&self) -> Pin<Box<OwnedNotified>> {
        Box::pin(Arc::clone(&self.signal).notified_owned())
    }
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
            let outcome = if self.shared.cutoff.is_cut() {
                Outcome::Shutdown
            } else {
                Outcome::ClientGone
            };
            self.complete(outcome);
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
            Outcome::Shutdown => {
                ex.error_type = Some("shutdown".into());
                // Nothing was answered: the gateway is going away.
                ex.response.status.get_or_insert(503);
                Some(
                    "the gateway shut down before the response ended (server.shutdownTimeout passed)"
                        .into(),
                )
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
                client: ex.client.as_deref().map(|c| c.name.as_str()),
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
            // Backend and client text (an error message, a model name) can be
            // megabytes: the span's limits apply to the status message too.
            let status_message = status_message.map(|mut m| {
                celgate_engine::attributes::truncate_str(&mut m, plan.max_value_length());
                m
            });
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
/// backend accepted. Label values are bounded by [`crate::metrics::Metrics`]: a
/// backend that accepts any model name (`models: ["*"]`) lets clients choose them.
fn record_metrics(
    metrics: &crate::metrics::Metrics,
    route: &str,
    backend: Option<&str>,
    ex: &Exchange,
    record: Option<&SpanRecord>,
    elapsed: Duration,
) {
    let client = ex.client.as_deref().map_or("", |c| c.name.as_str());
    metrics.record_request(
        route,
        backend.unwrap_or(""),
        ex.response.status.unwrap_or_default(),
        client,
    );
    for (key, _) in record.map(|r| r.errors.as_slice()).unwrap_or_default() {
        metrics.record_expression_error(key);
    }
    // Only routed calls of a known operation.
    if backend.is_none() || ex.operation == Operation::Other {
        return;
    }
    metrics.record_genai(&crate::metrics::GenAiCall {
        operation: ex.operation.as_str(),
        provider: &ex.provider,
        request_model: ex.request_model.as_deref().unwrap_or_default(),
        response_model: ex.response_model.as_deref().unwrap_or_default(),
        server_address: ex.backend_host.as_deref().unwrap_or_default(),
        error_type: ex.error_type.as_deref().unwrap_or_default(),
        seconds: elapsed.as_secs_f64(),
        input_tokens: ex.input_tokens,
        output_tokens: ex.output_tokens,
    });
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
    /// Completes when the shutdown drain is over ([`Cutoff::cut`]).
    cutoff: Pin<Box<OwnedNotified>>,
    /// The waker `cutoff` was last polled with: polling it takes a lock shared by
    /// all bodies, so it is polled again only for another waker.
    cutoff_waker: Option<std::task::Waker>,
    capture: Capture,
    flight: Option<InFlight>,
}

impl<B: Body<Data = Bytes> + Unpin> ObservedBody<B> {
    pub fn new(inner: B, idle: Duration, capture: Capture, flight: InFlight) -> Self {
        let cutoff = &flight.shared.cutoff;
        cutoff.open.fetch_add(1, Ordering::SeqCst);
        ObservedBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            cutoff: cutoff.signal(),
            cutoff_waker: None,
            capture,
            flight: Some(flight),
        }
    }

    /// Ends the body as [`Outcome::Shutdown`] once the drain is over: the span is
    /// queued, and the client sees the body fail. `waiting`: the backend has nothing
    /// for now, so the body must be woken by the cutoff itself.
    fn poll_cutoff(&mut self, cx: &mut Context<'_>, waiting: bool) -> Option<BoxError> {
        let shared = &self.flight.as_ref()?.shared;
        let mut cut = shared.cutoff.is_cut();
        if !cut
            && waiting
            && !self
                .cutoff_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            cut = self.cutoff.as_mut().poll(cx).is_ready();
            self.cutoff_waker = Some(cx.waker().clone());
        }
        if !cut {
            return None;
        }
        self.finish(Outcome::Shutdown);
        Some("the gateway is shutting down".into())
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        let shared = Arc::clone(&flight.shared);
        self.conclude(flight, outcome);
        // Counted closed once the span is queued.
        shared.cutoff.open.fetch_sub(1, Ordering::SeqCst);
    }

    fn conclude(&mut self, mut flight: InFlight, mut outcome: Outcome) {
        let capture = std::mem::replace(&mut self.capture, Capture::Nothing);
        let ex = &mut flight.exchange;
        let findings = capture.finish(ex);
        // A client that hangs up once the final event went by has the whole answer:
        // the official SDKs stop reading at `[DONE]` and close, often before the
        // backend's end of body arrives. Likewise for a shutdown that comes then.
        if let Outcome::ClientGone | Outcome::Shutdown = outcome
            && findings.answered
        {
            outcome = Outcome::Complete;
        }
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
        if let Some(e) = this.poll_cutoff(cx, false) {
            return Poll::Ready(Some(Err(e)));
        }
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
                if let Some(e) = this.poll_cutoff(cx, true) {
                    return Poll::Ready(Some(Err(e)));
                }
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
            let cut = self
                .flight
                .as_ref()
                .is_some_and(|f| f.shared.cutoff.is_cut());
            let outcome = if self.inner.is_end_stream() {
                Outcome::Complete
            } else if cut {
                Outcome::Shutdown
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
