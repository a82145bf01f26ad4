//! Getting spans out of the process without ever slowing a request down.
//!
//! Requests hand finished spans to [`Exporter::submit`] already encoded as OTLP
//! protobuf (`otlp`, on the request's thread: the encoding is the one cost that
//! grows with traffic, so it scales with the proxy's cores instead of piling up
//! on one export thread). `submit` never blocks: the span goes into a bounded
//! queue, or is dropped and counted when the queue is full (a dead or slow
//! collector). One dedicated thread drains the queue in batches (`OTEL_BSP_*`
//! settings), frames them into an `ExportTraceServiceRequest` in a reused buffer
//! and sends it (`transport`: OTLP/HTTP or gRPC over the gateway's hyper client)
//! on its own small runtime, with up to [`IN_FLIGHT`] requests outstanding so one
//! slow round trip does not stall the queue. A reload that changes the endpoint
//! swaps the transport on that thread between two batches: spans already queued
//! are not lost.
//!
//! A request carries at most [`MAX_EXPORT_BYTES`], below the 4 MiB a gRPC
//! collector accepts by default: one large span cannot make the collector refuse
//! the batch and lose the spans beside it (a span is itself capped at
//! [`otlp::MAX_SPAN_BYTES`] when encoded).

pub mod otlp;
mod stdout;
pub mod transport;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use celgate_engine::AttrValue;
use celgate_engine::plan::{DEFAULT_MAX_VALUE_LENGTH, MAX_NAME_LENGTH};
use tokio::task::JoinSet;

use crate::settings::{ExportSettings, ExportTarget};
use otlp::BatchFrame;
use transport::Transport;

/// Export requests outstanding at once: enough to hide a collector's round trip
/// behind the next batch, few enough that a slow collector holds little memory.
pub const IN_FLIGHT: usize = 4;

/// Counters the admin endpoint and tests read.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans lost: queue full, export failed or timed out.
    pub dropped: AtomicU64,
    /// Failed export calls.
    pub failed_exports: AtomicU64,
}

/// Why an exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot build the OTLP exporter for `{endpoint}`: {reason}")]
    Build { endpoint: String, reason: String },
    #[error("the export thread has stopped")]
    Stopped,
}

enum Msg {
    /// One span, encoded (`otlp::encode_span`).
    Span(Vec<u8>),
    Flush(mpsc::Sender<()>),
    Reconfigure(Box<ExportSettings>, mpsc::Sender<Result<(), ExportError>>),
    Shutdown(mpsc::Sender<()>),
}

/// How requests wake the export thread: not once per span (a futex wake and a
/// context switch on every request, measured at ~18% of the export cost) but when
/// a batch's worth is queued, or for a control message. Between wakes the thread
/// sleeps until its schedule delay.
#[derive(Debug, Default)]
struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
    /// Spans in the queue.
    queued: AtomicUsize,
    /// Queued spans that make `submit` ring: a batch, or half the queue if smaller.
    threshold: AtomicUsize,
}

impl Doorbell {
    fn threshold_for(settings: &ExportSettings) -> usize {
        let b = &settings.batch;
        b.max_export_batch_size.min(b.max_queue_size / 2).max(1)
    }

    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_one();
    }

    /// Waits until rung or `timeout` passes, and clears the bell.
    fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut rung, _) = self
            .cv
            .wait_timeout_while(rung, timeout, |rung| !*rung)
            .unwrap_or_else(PoisonError::into_inner);
        *rung = false;
    }
}

/// Handle to the export thread. Cheap to share (`Arc`).
pub struct Exporter {
    tx: SyncSender<Msg>,
    bell: Arc<Doorbell>,
    stats: Arc<ExportStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Exporter {
    /// Starts the export thread and builds the exporter for `settings`; fails if
    /// the exporter cannot be built (a malformed endpoint, say).
    pub fn start(settings: &ExportSettings) -> Result<Exporter, ExportError> {
        let (tx, rx) = mpsc::sync_channel(settings.batch.max_queue_size);
        let stats = Arc::new(ExportStats::default());
        let bell = Arc::new(Doorbell::default());
        bell.threshold
            .store(Doorbell::threshold_for(settings), Ordering::Relaxed);
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_stats = Arc::clone(&stats);
        let worker_bell = Arc::clone(&bell);
        let initial = settings.clone();
        let thread = std::thread::Builder::new()
            .name("celgate-export".into())
            .spawn(move || run(rx, worker_bell, initial, worker_stats, ready_tx))
            .map_err(|e| ExportError::Build {
                endpoint: String::new(),
                reason: format!("cannot start the export thread: {e}"),
            })?;
        ready_rx.recv().map_err(|_| ExportError::Stopped)??;
        Ok(Exporter {
            tx,
            bell,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a span for export; never blocks. A full queue drops it (counted).
    pub fn submit(&self, span: Vec<u8>) {
        // Counted before the send, so the thread's decrement always follows it.
        let queued = self.bell.queued.fetch_add(1, Ordering::Relaxed) + 1;
        match self.tx.try_send(Msg::Span(span)) {
            Ok(()) => {
                if queued == self.bell.threshold.load(Ordering::Relaxed) {
                    self.bell.ring();
                }
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.bell.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Replaces the exporter (new endpoint, protocol or headers) after sending what
    /// is queued with the old one. Blocks until done: call it off the runtime.
    pub fn reconfigure(&self, settings: &ExportSettings) -> Result<(), ExportError> {
        let (ack, done) = mpsc::channel();
        self.tx
            .send(Msg::Reconfigure(Box::new(settings.clone()), ack))
            .map_err(|_| ExportError::Stopped)?;
        self.bell.ring();
        done.recv().map_err(|_| ExportError::Stopped)?
    }

    /// Sends everything queued so far; waits at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        self.bell.ring();
        done.recv_timeout(timeout).is_ok()
    }

    /// Flushes and stops the thread; waits at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Shutdown(ack)).is_ok()
            && {
                self.bell.ring();
                done.recv_timeout(timeout).is_ok()
            }
            && let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }

    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// The counters, shared (for the metrics registry).
    pub fn stats_handle(&self) -> Arc<ExportStats> {
        Arc::clone(&self.stats)
    }
}

/// Where a batch goes.
enum Sink {
    Disabled,
    Stdout,
    Otlp(Arc<Transport>),
}

/// The export thread's end of the queue: takes messages and keeps the doorbell's
/// count of queued spans.
struct Queue<'q> {
    rx: &'q Receiver<Msg>,
    bell: &'q Doorbell,
}

impl Queue<'_> {
    fn try_recv(&self) -> Result<Msg, TryRecvError> {
        let msg = self.rx.try_recv()?;
        if let Msg::Span(_) = msg {
            self.bell.queued.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(msg)
    }

    /// The next message, waiting on the doorbell (not on the channel, so that
    /// senders never wake this thread) until `deadline`.
    fn next(&self, deadline: Instant) -> Result<Msg, RecvTimeoutError> {
        loop {
            match self.try_recv() {
                Ok(msg) => return Ok(msg),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            self.bell.wait(deadline - now);
        }
    }
}

/// Most bytes one export request carries: under the 4 MiB default message limit
/// of gRPC collectors (and of OTLP/HTTP ones, which allow more), with room for
/// framing.
pub const MAX_EXPORT_BYTES: usize = 3 * 1024 * 1024;

/// What a send task needs to count and report its outcome.
struct Outcome {
    stats: Arc<ExportStats>,
    /// Set while exports fail, so a dead collector logs once, not per batch.
    failing: std::sync::atomic::AtomicBool,
    /// The endpoint (never carries credentials: settings refuse them).
    target: String,
}

impl Outcome {
    fn record(&self, n: u64, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "celgate::export", "span export to {} recovered", self.target);
                }
            }
            Err(e) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                self.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target: "celgate::export", "span export to {} failed, {n} spans dropped: {e}; further failures are only counted until it recovers", self.target);
                }
            }
        }
    }
}

/// The export thread's state: the current sink and its settings, the queued
/// spans of the batch being built, and the requests in flight.
struct Worker {
    rt: tokio::runtime::Runtime,
    sink: Sink,
    settings: ExportSettings,
    frame: BatchFrame,
    outcome: Arc<Outcome>,
    batch: Vec<Vec<u8>>,
    /// Bytes `batch` adds to a request.
    batch_bytes: usize,
    /// The requests in flight (at most [`IN_FLIGHT`]).
    tasks: JoinSet<()>,
}

impl Worker {
    fn new(settings: ExportSettings, stats: Arc<ExportStats>) -> Result<Worker, ExportError> {
        // One I/O thread drives the sends (and hyper's connections) while this
        // thread keeps draining the queue.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("celgate-export-io")
            .enable_all()
            .build()
            .map_err(|e| ExportError::Build {
                endpoint: String::new(),
                reason: format!("cannot start the export runtime: {e}"),
            })?;
        let sink = build_sink(&rt, &settings)?;
        Ok(Worker {
            frame: BatchFrame::new(&resource(&settings)),
            outcome: Arc::new(Outcome {
                stats,
                failing: Default::default(),
                target: target_name(&settings.target).to_owned(),
            }),
            rt,
            sink,
            settings,
            batch: Vec::new(),
            batch_bytes: 0,
            tasks: JoinSet::new(),
        })
    }

    /// Adds a span; sends the batch when it is full (by count or by bytes).
    fn push(&mut self, span: Vec<u8>) {
        let cost = BatchFrame::span_cost(&span);
        if self.batch_bytes + cost + self.frame.overhead() > MAX_EXPORT_BYTES {
            self.export();
        }
        self.batch_bytes += cost;
        self.batch.push(span);
        if self.batch.len() >= self.settings.batch.max_export_batch_size {
            self.export();
        }
    }

    /// Sends the batch built so far (waiting for a free slot if [`IN_FLIGHT`]
    /// requests are out).
    fn export(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let n = spans.len() as u64;
        let transport = match &self.sink {
            Sink::Disabled => return self.outcome.record(n, Ok(())),
            Sink::Stdout => {
                stdout::print_spans(spans.iter().map(Vec::as_slice));
                return self.outcome.record(n, Ok(()));
            }
            Sink::Otlp(t) => Arc::clone(t),
        };
        let mut message = Vec::new();
        self.frame.encode(
            spans.iter().map(Vec::as_slice),
            transport.header_room(),
            &mut message,
        );
        drop(spans);
        while self.tasks.try_join_next().is_some() {}
        if self.tasks.len() >= IN_FLIGHT {
            self.rt.block_on(self.tasks.join_next());
        }
        let outcome = Arc::clone(&self.outcome);
        let timeout = self.settings.batch.export_timeout;
        self.tasks.spawn_on(
            async move {
                let result = match tokio::time::timeout(timeout, transport.send(message)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "no answer within {timeout:?} (OTEL_BSP_EXPORT_TIMEOUT)"
                    )),
                };
                outcome.record(n, result);
            },
            self.rt.handle(),
        );
    }

    /// Sends the batch and waits until no request is in flight.
    fn settle(&mut self) {
        self.export();
        let tasks = &mut self.tasks;
        self.rt
            .block_on(async { while tasks.join_next().await.is_some() {} });
    }

    /// Switches to `new` settings (after settling what the old sink had).
    fn reconfigure(&mut self, new: ExportSettings) -> Result<(), ExportError> {
        self.settle();
        self.sink = build_sink(&self.rt, &new)?;
        self.frame = BatchFrame::new(&resource(&new));
        self.outcome = Arc::new(Outcome {
            stats: Arc::clone(&self.outcome.stats),
            failing: Default::default(),
            target: target_name(&new.target).to_owned(),
        });
        self.settings = new;
        Ok(())
    }

    fn stop(mut self) {
        self.settle();
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

fn run(
    rx: Receiver<Msg>,
    bell: Arc<Doorbell>,
    initial: ExportSettings,
    stats: Arc<ExportStats>,
    ready: mpsc::Sender<Result<(), ExportError>>,
) {
    let mut worker = match Worker::new(initial, stats) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let queue = Queue {
        rx: &rx,
        bell: &bell,
    };
    let mut next_flush = Instant::now() + worker.settings.batch.schedule_delay;
    loop {
        match queue.next(next_flush) {
            Ok(Msg::Span(span)) => {
                worker.push(span);
                if worker.batch.is_empty() {
                    next_flush = Instant::now() + worker.settings.batch.schedule_delay;
                }
                continue;
            }
            Ok(Msg::Flush(ack)) => {
                drain(&queue, &mut worker);
                let _ = ack.send(());
            }
            Ok(Msg::Reconfigure(new, ack)) => {
                drain(&queue, &mut worker);
                let result = worker.reconfigure(*new);
                bell.threshold
                    .store(Doorbell::threshold_for(&worker.settings), Ordering::Relaxed);
                let _ = ack.send(result);
            }
            Ok(Msg::Shutdown(ack)) => {
                drain(&queue, &mut worker);
                worker.stop();
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => worker.export(),
            Err(RecvTimeoutError::Disconnected) => return worker.stop(),
        }
        next_flush = Instant::now() + worker.settings.batch.schedule_delay;
    }
}

/// Exports what is queued right now and waits for it (spans only; control
/// messages that arrive meanwhile are answered after).
fn drain(rx: &Queue<'_>, worker: &mut Worker) {
    let mut deferred = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Span(s) => worker.push(s),
            other => deferred.push(other),
        }
        if deferred.len() > 16 {
            break;
        }
    }
    worker.settle();
    // Control messages that arrived meanwhile are answered as if they were flushes;
    // they are rare (reloads, shutdown) and their senders wait on the ack.
    for msg in deferred {
        match msg {
            Msg::Flush(ack) | Msg::Shutdown(ack) => {
                let _ = ack.send(());
            }
            Msg::Reconfigure(_, ack) => {
                let _ = ack.send(Err(ExportError::Build {
                    endpoint: String::new(),
                    reason: "another reconfiguration was in progress; retry".into(),
                }));
            }
            Msg::Span(_) => {}
        }
    }
}

fn target_name(t: &ExportTarget) -> &str {
    match t {
        ExportTarget::Disabled => "nowhere",
        ExportTarget::Stdout => "stdout",
        ExportTarget::Otlp { endpoint, .. } => endpoint,
    }
}

/// The resource every exported span carries. Entries from the environment
/// (`OTEL_RESOURCE_ATTRIBUTES`) are bounded like the config's: keys to
/// [`MAX_NAME_LENGTH`], values to the default `limits.maxValueLength`.
pub fn resource(settings: &ExportSettings) -> Vec<(String, AttrValue)> {
    settings
        .resource
        .iter()
        .map(|(k, v)| {
            let mut key = k.clone();
            celgate_engine::attributes::truncate_str(&mut key, MAX_NAME_LENGTH);
            let mut value = v.clone();
            value.truncate(DEFAULT_MAX_VALUE_LENGTH);
            (key, value)
        })
        .collect()
}

fn build_sink(
    rt: &tokio::runtime::Runtime,
    settings: &ExportSettings,
) -> Result<Sink, ExportError> {
    let ExportTarget::Otlp {
        endpoint,
        protocol,
        headers,
        tls,
    } = &settings.target
    else {
        return Ok(match settings.target {
            ExportTarget::Stdout => Sink::Stdout,
            _ => Sink::Disabled,
        });
    };
    // hyper's connector is built inside the export runtime.
    let _guard = rt.enter();
    Transport::new(endpoint, *protocol, headers, tls)
        .map(|t| Sink::Otlp(Arc::new(t)))
        .map_err(|reason| ExportError::Build {
            endpoint: endpoint.clone(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::BatchSettings;

    fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while !ok() {
            assert!(
                Instant::now() < end,
                "{what} did not happen within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_full_batch_wakes_the_thread_and_a_partial_one_waits_for_its_delay() {
        let settings = ExportSettings {
            target: ExportTarget::Disabled,
            batch: BatchSettings {
                max_queue_size: 64,
                max_export_batch_size: 4,
                // Long enough that only the doorbell can explain an early export.
                schedule_delay: Duration::from_secs(60),
                export_timeout: Duration::from_secs(1),
            },
            resource: Vec::new(),
        };
        let exporter = Exporter::start(&settings).expect("start the exporter");
        let exported = || exporter.stats().exported.load(Ordering::Relaxed);
        let span = || vec![0x2a, 0x01, b's'];
        for _ in 0..3 {
            exporter.submit(span());
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            exported(),
            0,
            "a partial batch waits for the schedule delay"
        );
        // A batch's worth more rings the bell: one full batch goes at once (the
        // thread may already hold some of the first three, so exactly one batch).
        for _ in 0..4 {
            exporter.submit(span());
        }
        wait_for("the full batch's export", Duration::from_secs(10), || {
            exported() == 4
        });
        assert!(exporter.flush(Duration::from_secs(10)));
        assert_eq!(exported(), 7);
        assert_eq!(exporter.bell.queued.load(Ordering::Relaxed), 0);
        exporter.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn environment_resource_entries_are_bounded() {
        let settings = ExportSettings {
            target: ExportTarget::Disabled,
            batch: BatchSettings::default(),
            resource: vec![(
                "k".repeat(MAX_NAME_LENGTH + 10),
                AttrValue::String("v".repeat(DEFAULT_MAX_VALUE_LENGTH + 10)),
            )],
        };
        let r = resource(&settings);
        assert_eq!(r[0].0.len(), MAX_NAME_LENGTH);
        assert!(matches!(&r[0].1, AttrValue::String(s) if s.len() <= DEFAULT_MAX_VALUE_LENGTH));
    }
}
