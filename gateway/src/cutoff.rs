//! The end of the shutdown drain: the signal that ends the response bodies still
//! open when `server.shutdownTimeout` passes, and the count of bodies whose span is
//! not queued yet.
//!
//! Shared state (`Shared::cutoff`) that the server cuts and every
//! [`ObservedBody`](crate::observe::ObservedBody) watches; its own module so the
//! shared state needs nothing of the observe phase.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// The end of the shutdown drain, for the bodies still open then.
///
/// When `server.shutdownTimeout` passes, [`serve`](crate::server::serve) calls
/// [`cut`](Cutoff::cut): every [`ObservedBody`](crate::observe::ObservedBody) still
/// streaming ends at its next poll (it waits on the signal, so a silent backend does
/// not hold it) with `Outcome::Shutdown`, which queues its span. The server then waits, briefly, until
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

    /// One more body whose span is not queued yet.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    /// A body's span is queued.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
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
    pub fn signal(&self) -> Pin<Box<OwnedNotified>> {
        Box::pin(Arc::clone(&self.signal).notified_owned())
    }
}
