//! The response body every answer is: a queue of frames sent in order, each after an
//! optional delay (a stall before one of them), and an end that is normal, a lingering
//! one, a failure (hyper then aborts the connection) or a TCP reset. Fault scripts set
//! these fields; the body also feeds the answer's [`ResponseLog`] as frames leave.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::record::{ResponseEnd, ResponseLog};

/// Pause between the last event of a `cut-after-*` stream and the abort, so the events
/// are flushed to the socket before the connection is torn down (hyper drops buffered
/// output when a body fails).
const CUT_PAUSE: Duration = Duration::from_millis(50);

/// How a body ends after its last event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum End {
    /// Normally.
    #[default]
    Finish,
    /// With an error: hyper aborts the connection (h2: `RST_STREAM`).
    Fail,
    /// With a TCP reset of the connection.
    Reset,
    /// Already ended (failed or reset); nothing more to send.
    Over,
}

/// The failure a `cut-after-*` body reports so hyper aborts the connection.
#[derive(Debug, thiserror::Error)]
#[error("scripted upstream cut the stream")]
pub(crate) struct StreamCut;

/// A response body: a queue of frames sent with an optional delay before each, and an
/// optional failure (or reset) at the end.
#[derive(Debug)]
pub(crate) struct ScriptedBody {
    pub(crate) events: VecDeque<Bytes>,
    /// Waited before each event (zero: none).
    pub(crate) delay: Duration,
    /// Before event `.0` (0-based), wait `.1` instead of `delay`.
    pub(crate) stall: Option<(usize, Duration)>,
    /// After the last event, wait this long before ending (`End::Finish` only).
    pub(crate) linger: Option<Duration>,
    /// Events sent so far.
    sent: usize,
    /// What happens after the last event.
    pub(crate) end: End,
    /// The running delay, if any.
    timer: Option<Pin<Box<Sleep>>>,
    /// Length of a non-streamed body, so it gets a `content-length`.
    pub(crate) exact_len: Option<u64>,
    /// Asks the connection to reset itself (`End::Reset`).
    pub(crate) reset: Option<Arc<Notify>>,
    /// What was sent, recorded when the body is dropped.
    pub(crate) log: Option<ResponseLog>,
}

impl ScriptedBody {
    pub(crate) fn new(events: VecDeque<Bytes>, exact_len: Option<u64>) -> ScriptedBody {
        ScriptedBody {
            events,
            delay: Duration::ZERO,
            stall: None,
            linger: None,
            sent: 0,
            end: End::Finish,
            timer: None,
            exact_len,
            reset: None,
            log: None,
        }
    }

    /// A whole body sent at once.
    pub(crate) fn full(bytes: Bytes) -> ScriptedBody {
        let len = u64::try_from(bytes.len()).ok();
        ScriptedBody::new(VecDeque::from([bytes]), len)
    }

    fn ended(&mut self, end: ResponseEnd) {
        if let Some(log) = &mut self.log {
            log.ended(end);
        }
    }
}

impl Drop for ScriptedBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.finish();
        }
    }
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = self.get_mut();
        let pause = if !this.events.is_empty() {
            match this.stall {
                Some((at, pause)) if at == this.sent => pause,
                _ => this.delay,
            }
        } else {
            match this.end {
                End::Finish if this.linger.is_some() => {
                    let pause = this.linger.unwrap_or_default();
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                    ready!(timer.as_mut().poll(cx));
                    this.timer = None;
                    this.linger = None;
                    this.ended(ResponseEnd::Complete);
                    return Poll::Ready(None);
                }
                End::Finish => {
                    this.ended(ResponseEnd::Complete);
                    return Poll::Ready(None);
                }
                End::Fail | End::Reset => CUT_PAUSE,
                End::Over => return Poll::Pending,
            }
        };
        if !pause.is_zero() {
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            ready!(timer.as_mut().poll(cx));
            this.timer = None;
        }
        match this.events.pop_front() {
            Some(event) => {
                this.sent += 1;
                if let Some(log) = &mut this.log {
                    log.sent(&event);
                }
                if this.events.is_empty() && this.end == End::Finish {
                    // hyper may not poll again once the body says it is over.
                    this.ended(ResponseEnd::Complete);
                }
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
            None => match std::mem::replace(&mut this.end, End::Over) {
                End::Reset if this.reset.is_some() => {
                    this.ended(ResponseEnd::Reset);
                    if let Some(reset) = &this.reset {
                        reset.notify_one();
                    }
                    // The connection is torn down under this body; nothing more.
                    Poll::Pending
                }
                _ => {
                    this.ended(ResponseEnd::Cut);
                    Poll::Ready(Some(Err(StreamCut)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_empty() && self.end == End::Finish && self.linger.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) if !self.events.is_empty() => SizeHint::with_exact(len),
            Some(_) => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
