//! Bounds on client connections: how many may be open at once
//! (`server.maxConnections`), how long one may sit with no request in flight
//! (`server.requestTimeout`, for HTTP/2 as for HTTP/1), and how often a failure to
//! accept is logged.
//!
//! hyper bounds an HTTP/1 connection's wait for request headers itself; an HTTP/2
//! connection it keeps for as long as the client likes, even one that sent only the
//! preface, or a header block whose CONTINUATION never comes (no request reaches the
//! service until the block ends). Such sockets used to pile up until the process ran
//! out of descriptors. So each connection counts the requests in flight on it (a
//! response body included, until it ends or is dropped) and is shut down gracefully
//! once none has been in flight for `requestTimeout`; one that has not closed
//! [`CLOSE_GRACE`] later, still with nothing in flight (an HTTP/2 client that never
//! acknowledges the PING that follows GOAWAY), is dropped. The same happens on
//! SIGTERM, so an idle connection cannot hold the drain for `shutdownTimeout`.
//!
//! The default for `server.maxConnections` (what the open-file limit holds) is
//! [`crate::fd_budget`]'s.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// How long a connection asked to close, with nothing in flight, may take to do so
/// before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The proxy's open client connections, against `server.maxConnections`.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
}

/// One admitted connection; frees its place when dropped.
#[derive(Debug)]
pub struct Admitted(Arc<Connections>);

impl Connections {
    /// A place for one more connection, unless `max` are open.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<Admitted> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(Arc::clone(self)))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Requests in flight on one connection.
#[derive(Debug)]
pub struct Activity {
    in_flight: watch::Sender<usize>,
}

/// One request in flight (its response body included); ends when dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: watch::channel(0).0,
        })
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.send_modify(|n| *n += 1);
        Busy(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `limit` without a break
    /// (counted from the call, or from the last request to end).
    pub async fn idle_for(&self, limit: Duration) {
        let mut changes = self.in_flight.subscribe();
        loop {
            let idle = *changes.borrow_and_update() == 0;
            if idle {
                if tokio::time::timeout(limit, changes.changed())
                    .await
                    .is_err()
                {
                    return;
                }
            } else if changes.changed().await.is_err() {
                // Cannot happen (`self` holds the sender); never idle then.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request in flight until it ends or is dropped,
/// so a long stream counts as activity for as long as it runs.
#[derive(Debug)]
pub struct BusyBody<B> {
    inner: B,
    busy: Option<Busy>,
}

impl<B> BusyBody<B> {
    pub fn new(inner: B, busy: Busy) -> BusyBody<B> {
        BusyBody {
            inner,
            busy: Some(busy),
        }
    }
}

impl<B: Body + Unpin> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ended<E> {
    /// The connection finished by itself (the client closed, or a graceful
    /// shutdown completed), with hyper's verdict.
    Finished(Result<(), E>),
    /// Asked to close, it had not after [`CLOSE_GRACE`] with nothing in flight, and
    /// was dropped.
    Dropped(Closing),
}

/// Why a connection was asked to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// No request in flight for `requestTimeout`.
    Idle,
    /// The gateway is shutting down.
    Stopping,
}

/// Drives `conn` until it ends. Once no request has been in flight for `idle`, or
/// `stop` turns true, it is shut down gracefully with `graceful_shutdown` (HTTP/2:
/// GOAWAY; requests in flight finish), and dropped if it has not closed
/// [`CLOSE_GRACE`] after its last request ended.
pub async fn drive<C, E>(
    conn: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) -> Ended<E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    let closing = tokio::select! {
        ended = conn.as_mut() => return Ended::Finished(ended),
        () = activity.idle_for(idle) => Closing::Idle,
        _ = stop.wait_for(|stopping| *stopping) => Closing::Stopping,
    };
    graceful_shutdown(conn.as_mut());
    tokio::select! {
        ended = conn.as_mut() => Ended::Finished(ended),
        () = activity.idle_for(CLOSE_GRACE) => Ended::Dropped(closing),
    }
}

/// Logs a recurring failure (EMFILE on accept, a full connection table) once per
/// window instead of once per occurrence: the first at once, the rest counted and
/// reported with the next line.
#[derive(Debug)]
pub struct Throttled {
    window: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttled {
    pub fn new(window: Duration) -> Throttled {
        Throttled {
            window,
            last: None,
            unlogged: 0,
        }
    }

    /// Another occurrence at `now`: `Some(n)` when it should be logged, `n` being the
    /// occurrences not logged since the last line; `None` to stay quiet.
    pub fn occurred(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.window => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_the_limit_and_resumes_when_one_goes() {
        let connections = Arc::new(Connections::default());
        let a = connections.admit(2).expect("first");
        let _b = connections.admit(2).expect("second");
        assert!(connections.admit(2).is_none());
        assert_eq!(connections.open(), 2);
        drop(a);
        assert!(connections.admit(2).is_some());
        // A reload that lowers the limit admits nobody until enough have gone.
        assert!(connections.admit(1).is_none());
    }

    #[test]
    fn a_burst_of_failures_is_logged_once_per_window() {
        let start = Instant::now();
        let mut log = Throttled::new(Duration::from_secs(10));
        assert_eq!(log.occurred(start), Some(0));
        for i in 1..=100 {
            assert_eq!(log.occurred(start + Duration::from_millis(i)), None);
        }
        assert_eq!(log.occurred(start + Duration::from_secs(11)), Some(100));
        assert_eq!(log.occurred(start + Duration::from_secs(12)), None);
    }

    #[tokio::test]
    async fn idle_counts_from_the_last_request_and_never_during_one() {
        // Lower bounds only: a loaded machine can make these later, never earlier.
        let limit = Duration::from_millis(100);
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle_for(limit).await;
        assert!(started.elapsed() >= limit);

        // In flight for 300 ms: not idle until `limit` after it ends.
        let busy = activity.begin();
        let started = Instant::now();
        let ((), ended) = tokio::join!(activity.idle_for(limit), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(busy);
            Instant::now()
        });
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(ended.elapsed() >= limit, "idle before `limit` had passed");
    }

    #[tokio::test]
    async fn a_busy_body_ends_its_request_when_it_ends() {
        use http_body_util::BodyExt;
        let activity = Activity::new();
        let body = BusyBody::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"hi")),
            activity.begin(),
        );
        assert_eq!(*activity.in_flight.borrow(), 1);
        let mut body = body;
        while body.frame().await.is_some() {}
        assert_eq!(*activity.in_flight.borrow(), 0);
    }
}
