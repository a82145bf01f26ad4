//! Watching a response go by, and turning the whole exchange into a span.
//!
//! [`ObservedBody`] wraps the backend's response body: each chunk is handed to
//! the client the moment it arrives (nothing is buffered on the way) and, on the
//! side, to a [`Capture`] that rebuilds what the span needs (`crate::capture`).
//! When the body ends, fails, stalls, or is dropped because the client went away,
//! the [`Outcome`] names how the call ended and [`InFlight::finish`] evaluates the
//! config generation the request started with into one
//! [`Finished`] record, handed to the [`Sinks`](crate::sinks::Sinks) (export,
//! metrics, access log): this module knows nothing of what they do with it. At
//! shutdown, bodies still open when the drain deadline passes are ended through the
//! [`Cutoff`](crate::cutoff::Cutoff), so their spans are queued before the
//! exporter stops.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use celgate_engine::exchange::Exchange;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::futures::OwnedNotified;

use crate::capture::Capture;
use crate::error_type::ErrorType;
use crate::record::Finished;
use crate::redact::Tally;
use crate::state::{BoxError, Generation, Shared};
use crate::trace_context::SpanIds;

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

/// A request on its way: everything the span and the access-log line need.
pub struct InFlight {
    pub shared: Arc<Shared>,
    /// The config generation this request uses from start to end.
    pub generation: Arc<Generation>,
    pub exchange: Exchange,
    /// The wire protocol the request speaks; `None` for a path passed through unread.
    pub protocol: Option<&'static dyn crate::protocol::Protocol>,
    /// The protocol the request belongs to (its side routes too): the shape of
    /// celgate's own errors.
    pub owner: Option<&'static dyn crate::protocol::Protocol>,
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
    /// Evaluates the span (when sampled) and hands the finished record to the sinks.
    pub fn finish(mut self, outcome: Outcome) {
        self.complete(outcome);
    }

    fn complete(&mut self, outcome: Outcome) {
        self.finished = true;
        let mut exchange = std::mem::take(&mut self.exchange);
        let elapsed = self.start.elapsed();
        exchange.response.duration_ms = Some(elapsed.as_secs_f64() * 1e3);
        // Messages may quote backend text: no key leaves in one.
        let status_message = outcome.describe(&mut exchange).map(|m| self.mask(m));
        let end_time = SystemTime::now();
        let plan = &self.generation.plan;
        let span = self.sampled.then(|| plan.evaluate(&exchange));
        // Backend and client text (an error message, a model name) can be
        // megabytes: the span's limits apply to the status message too.
        let status_message = (span.is_some() && exchange.error_type.is_some()).then(|| {
            let mut m = status_message.unwrap_or_default();
            celgate_engine::attributes::truncate_str(&mut m, plan.max_value_length());
            m
        });
        let record = Finished {
            exchange,
            span,
            status_message,
            ids: self.ids,
            sampled: self.sampled,
            start_time: self.start_time,
            end_time,
            elapsed,
            route: std::mem::take(&mut self.route),
            backend: self.backend.take(),
            host: self.host.take(),
            version: self.version,
            access_log: self.generation.settings.server.access_log,
        };
        self.shared.sinks.accept(record);
    }

    /// `message` with the generation's backend keys masked, and those found counted.
    pub(crate) fn mask(&self, message: String) -> String {
        let (message, found) = self.generation.settings.redactor.mask_str(message);
        if found > 0 {
            let backend = self.backend.as_deref().unwrap_or_default();
            let metric = &self.shared.sinks.metrics.secrets_redacted;
            Tally::new(metric, backend, "in an error message").add(found);
        }
        message
    }
}

impl Outcome {
    /// Writes the outcome's `error.type` (and, when none was sent, the status) into
    /// `ex`; returns the span's status message, when the call failed.
    fn describe(&self, ex: &mut Exchange) -> Option<String> {
        let mut fail = |kind: ErrorType| ex.error_type = Some(kind.as_str().to_owned());
        match self {
            Outcome::Refused(m) => Some(m.clone()),
            Outcome::Complete => ex
                .error_type
                .as_deref()
                .map(|code| format!("backend answered with HTTP {code}")),
            Outcome::Incomplete => {
                fail(ErrorType::StreamIncomplete);
                Some(
                    "the backend closed the stream before it finished (no [DONE], a choice without finish_reason)"
                        .into(),
                )
            }
            Outcome::Invalid(why) => {
                fail(ErrorType::InvalidResponse);
                Some(why.clone())
            }
            Outcome::StreamError(message) => {
                fail(ErrorType::StreamError);
                Some(format!(
                    "the backend reported an error mid-stream: {message}"
                ))
            }
            Outcome::Cut(e) => {
                fail(ErrorType::StreamCut);
                Some(format!("the backend's response was cut off: {e}"))
            }
            Outcome::Stalled(d) => {
                fail(ErrorType::Timeout);
                Some(format!(
                    "the backend sent nothing for {d:?} (its `idleTimeout`)"
                ))
            }
            Outcome::ClientGone => {
                fail(ErrorType::ClientDisconnected);
                // Nothing was answered: nginx's "client closed request".
                ex.response.status.get_or_insert(499);
                Some("the client went away before the response ended".into())
            }
            Outcome::Shutdown => {
                fail(ErrorType::Shutdown);
                // Nothing was answered: the gateway is going away.
                ex.response.status.get_or_insert(503);
                Some(
                    "the gateway shut down before the response ended (server.shutdownTimeout passed)"
                        .into(),
                )
            }
        }
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
        cutoff.opened();
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

    /// Records the time to first token once the capture holds output. An error
    /// answer (4xx, 5xx) has none: its body is the backend's complaint, not the
    /// model's first token.
    fn mark_first_token(&mut self) {
        let Some(flight) = self.flight.as_mut() else {
            return;
        };
        let answered = flight
            .exchange
            .response
            .status
            .is_some_and(|s| (200..300).contains(&s));
        if answered
            && flight.exchange.time_to_first_token_ms.is_none()
            && self.capture.has_output() == Some(true)
        {
            let elapsed = flight.start.elapsed();
            flight.exchange.time_to_first_token_ms = Some(elapsed.as_secs_f64() * 1000.0);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        let shared = Arc::clone(&flight.shared);
        self.conclude(flight, outcome);
        // Counted closed once the span is queued.
        shared.cutoff.closed();
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
                    this.mark_first_token();
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
