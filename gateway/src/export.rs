//! Getting spans out of the process without ever slowing a request down.
//!
//! Requests hand finished spans to [`Exporter::submit`], which never blocks: the
//! span goes into a bounded queue, or is dropped and counted when the queue is full
//! (a dead or slow collector). One dedicated thread drains the queue in batches
//! (`OTEL_BSP_*` settings) and sends them with opentelemetry-otlp's exporter
//! (gRPC or HTTP protobuf) on its own small runtime, so export work never competes
//! with the proxy's runtime. A reload that changes the endpoint swaps the exporter
//! on that thread between two batches: spans already queued are not lost.
//!
//! A batch is sent in parts of at most [`MAX_EXPORT_BYTES`] encoded (an upper
//! bound computed from the spans' strings, see [`encoded_bound`]), below the 4 MiB
//! a gRPC collector accepts by default: one large span cannot make the collector
//! refuse the batch and lose the spans beside it. A span too large to fit alone
//! has its longest strings cut until it does.

use celgate_engine::attributes::cut_str;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use celgate_engine::AttrValue;
use celgate_engine::config::OtlpProtocol;
use celgate_engine::plan::{DEFAULT_MAX_VALUE_LENGTH, MAX_NAME_LENGTH};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::settings::{ExportSettings, ExportTarget, Secret};

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
    Span(Box<SpanData>),
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
    pub fn submit(&self, span: SpanData) {
        // Counted before the send, so the thread's decrement always follows it.
        let queued = self.bell.queued.fetch_add(1, Ordering::Relaxed) + 1;
        match self.tx.try_send(Msg::Span(Box::new(span))) {
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
    Otlp(Box<opentelemetry_otlp::SpanExporter>),
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::Disabled => "none",
            Sink::Stdout => "stdout",
            Sink::Otlp(_) => "otlp",
        }
    }
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

fn run(
    rx: Receiver<Msg>,
    bell: Arc<Doorbell>,
    initial: ExportSettings,
    stats: Arc<ExportStats>,
    ready: mpsc::Sender<Result<(), ExportError>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ExportError::Build {
                endpoint: String::new(),
                reason: format!("cannot start the export runtime: {e}"),
            }));
            return;
        }
    };
    let mut settings = initial;
    let mut sink = match build_sink(&rt, &settings) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch: Vec<SpanData> = Vec::new();
    let mut next_flush = Instant::now() + settings.batch.schedule_delay;
    let mut failing = false;
    loop {
        let queue = Queue {
            rx: &rx,
            bell: &bell,
        };
        let msg = queue.next(next_flush);
        match msg {
            Ok(Msg::Span(span)) => {
                batch.push(*span);
                if batch.len() >= settings.batch.max_export_batch_size {
                    export(&rt, &sink, &settings, &mut batch, &stats, &mut failing);
                    next_flush = Instant::now() + settings.batch.schedule_delay;
                }
                continue;
            }
            Ok(Msg::Flush(ack)) => {
                drain(
                    &queue,
                    &mut batch,
                    &rt,
                    &sink,
                    &settings,
                    &stats,
                    &mut failing,
                );
                let _ = ack.send(());
            }
            Ok(Msg::Reconfigure(new, ack)) => {
                drain(
                    &queue,
                    &mut batch,
                    &rt,
                    &sink,
                    &settings,
                    &stats,
                    &mut failing,
                );
                match build_sink(&rt, &new) {
                    Ok(new_sink) => {
                        shutdown_sink(&rt, sink);
                        sink = new_sink;
                        settings = *new;
                        bell.threshold
                            .store(Doorbell::threshold_for(&settings), Ordering::Relaxed);
                        failing = false;
                        let _ = ack.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = ack.send(Err(e));
                    }
                }
            }
            Ok(Msg::Shutdown(ack)) => {
                drain(
                    &queue,
                    &mut batch,
                    &rt,
                    &sink,
                    &settings,
                    &stats,
                    &mut failing,
                );
                shutdown_sink(&rt, sink);
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&rt, &sink, &settings, &mut batch, &stats, &mut failing);
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&rt, &sink, &settings, &mut batch, &stats, &mut failing);
                shutdown_sink(&rt, sink);
                return;
            }
        }
        next_flush = Instant::now() + settings.batch.schedule_delay;
    }
}

/// Exports what is queued right now (spans only; control messages wait their turn).
fn drain(
    rx: &Queue<'_>,
    batch: &mut Vec<SpanData>,
    rt: &tokio::runtime::Runtime,
    sink: &Sink,
    settings: &ExportSettings,
    stats: &ExportStats,
    failing: &mut bool,
) {
    let mut deferred = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Span(s) => {
                batch.push(*s);
                if batch.len() >= settings.batch.max_export_batch_size {
                    export(rt, sink, settings, batch, stats, failing);
                }
            }
            other => deferred.push(other),
        }
        if deferred.len() > 16 {
            break;
        }
    }
    export(rt, sink, settings, batch, stats, failing);
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

/// Most bytes one export request carries, by [`encoded_bound`]: under the 4 MiB
/// default message limit of gRPC collectors (and of OTLP/HTTP ones, which allow
/// more), with room for the resource, the scope and framing.
pub const MAX_EXPORT_BYTES: usize = 3 * 1024 * 1024;

fn export(
    rt: &tokio::runtime::Runtime,
    sink: &Sink,
    settings: &ExportSettings,
    batch: &mut Vec<SpanData>,
    stats: &ExportStats,
    failing: &mut bool,
) {
    if batch.is_empty() {
        return;
    }
    let budget = MAX_EXPORT_BYTES.saturating_sub(resource_bound(settings));
    for part in split_by_size(std::mem::take(batch), budget.max(64 * 1024)) {
        send(rt, sink, settings, part, stats, failing);
    }
}

/// `spans` in order, in parts whose [`encoded_bound`]s add up to at most
/// `budget`; a span over `budget` alone is cut to fit ([`fit`]).
fn split_by_size(spans: Vec<SpanData>, budget: usize) -> Vec<Vec<SpanData>> {
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut size = 0;
    for mut span in spans {
        let mut n = encoded_bound(&span);
        if n > budget {
            fit(&mut span, budget);
            n = encoded_bound(&span);
        }
        if size + n > budget && !part.is_empty() {
            parts.push(std::mem::take(&mut part));
            size = 0;
        }
        size += n;
        part.push(span);
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// Protobuf framing of one length-delimited field: a tag and a length varint.
const FIELD: usize = 6;
/// Every fixed-size field of a span (ids, times, kind, flags, counts), framed.
const SPAN_FIXED: usize = 128;

/// At least the bytes `span` takes in an OTLP `ExportTraceServiceRequest`: its
/// strings plus generous framing for each (lengths and tags of at most 6 bytes,
/// scalars of at most 11).
pub fn encoded_bound(span: &SpanData) -> usize {
    let status = match &span.status {
        opentelemetry::trace::Status::Error { description } => description.len(),
        _ => 0,
    };
    let attributes: usize = span.attributes.iter().map(key_value_bound).sum();
    let events: usize = span
        .events
        .iter()
        .map(|e| {
            3 * FIELD + 24 + e.name.len() + e.attributes.iter().map(key_value_bound).sum::<usize>()
        })
        .sum();
    let links: usize = span
        .links
        .iter()
        .map(|l| 4 * FIELD + 40 + l.attributes.iter().map(key_value_bound).sum::<usize>())
        .sum();
    SPAN_FIXED
        + 4 * FIELD
        + span.name.len()
        + status
        + span.span_context.trace_state().header().len()
        + attributes
        + events
        + links
}

/// A `KeyValue` (key, `AnyValue`) framed.
fn key_value_bound(kv: &KeyValue) -> usize {
    3 * FIELD + kv.key.as_str().len() + value_bound(&kv.value)
}

fn value_bound(v: &Value) -> usize {
    match v {
        Value::String(s) => FIELD + s.as_str().len(),
        Value::Array(Array::String(a)) => {
            FIELD
                + a.iter()
                    .map(|s| 2 * FIELD + s.as_str().len())
                    .sum::<usize>()
        }
        Value::Array(Array::I64(a)) => FIELD + a.len() * (FIELD + 11),
        Value::Array(Array::F64(a)) => FIELD + a.len() * (FIELD + 9),
        Value::Array(Array::Bool(a)) => FIELD + a.len() * (FIELD + 2),
        _ => 11,
    }
}

/// The resource as sent once per request, framed.
fn resource_bound(settings: &ExportSettings) -> usize {
    1024 + settings
        .resource
        .iter()
        .map(|(k, v)| 3 * FIELD + k.len() + value_bound(&otel_value(v.clone())))
        .sum::<usize>()
}

/// Cuts the strings of a span over `budget` (attribute values, then its name and
/// status message) to an equal share each, until it fits.
fn fit(span: &mut SpanData, budget: usize) {
    let strings = span.attributes.len() + 2;
    let share = (budget / 2 / strings).max(16);
    for kv in &mut span.attributes {
        cut_value(&mut kv.value, share);
    }
    if span.name.len() > share {
        span.name = cut_str(&span.name, share).to_owned().into();
    }
    if let opentelemetry::trace::Status::Error { description } = &mut span.status
        && description.len() > share
    {
        *description = cut_str(description, share).to_owned().into();
    }
    // Keys and numbers are not cut: a span that still does not fit has that
    // many attributes (the plan caps them at `limits.maxAttributes`), so drop
    // the last ones.
    while encoded_bound(span) > budget && span.attributes.pop().is_some() {
        span.dropped_attributes_count += 1;
    }
}

fn cut_value(v: &mut Value, max: usize) {
    match v {
        Value::String(s) if s.as_str().len() > max => {
            *s = StringValue::from(cut_str(s.as_str(), max).to_owned());
        }
        Value::Array(Array::String(a)) => {
            let each = (max / a.len().max(1)).max(16);
            for s in a.iter_mut().filter(|s| s.as_str().len() > each) {
                *s = StringValue::from(cut_str(s.as_str(), each).to_owned());
            }
        }
        _ => {}
    }
}

/// Sends one part of a batch and counts the outcome.
fn send(
    rt: &tokio::runtime::Runtime,
    sink: &Sink,
    settings: &ExportSettings,
    spans: Vec<SpanData>,
    stats: &ExportStats,
    failing: &mut bool,
) {
    let n = spans.len() as u64;
    let result = match sink {
        Sink::Disabled => Ok(()),
        Sink::Stdout => {
            print_spans(&spans);
            Ok(())
        }
        Sink::Otlp(exporter) => {
            // The timer must be created inside the runtime: build it in the block.
            let timeout = settings.batch.export_timeout;
            match rt.block_on(async { tokio::time::timeout(timeout, exporter.export(spans)).await })
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(crate::tls::with_reason(e.to_string(), "collector")),
                Err(_) => Err(format!(
                    "no answer within {:?} (OTEL_BSP_EXPORT_TIMEOUT)",
                    settings.batch.export_timeout
                )),
            }
        }
    };
    match result {
        Ok(()) => {
            stats.exported.fetch_add(n, Ordering::Relaxed);
            if *failing {
                tracing::info!(target: "celgate::export", "span export to {} recovered", target_name(&settings.target));
                *failing = false;
            }
        }
        Err(e) => {
            stats.dropped.fetch_add(n, Ordering::Relaxed);
            stats.failed_exports.fetch_add(1, Ordering::Relaxed);
            if !*failing {
                tracing::warn!(target: "celgate::export", "span export to {} ({}) failed, {n} spans dropped: {e}; further failures are only counted until it recovers", target_name(&settings.target), sink.name());
                *failing = true;
            }
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

fn shutdown_sink(rt: &tokio::runtime::Runtime, sink: Sink) {
    if let Sink::Otlp(exporter) = sink {
        let _guard = rt.enter();
        let _ = exporter.shutdown_with_timeout(Duration::from_secs(1));
    }
}

/// The resource every exported span carries. Entries from the environment
/// (`OTEL_RESOURCE_ATTRIBUTES`) are bounded like the config's: keys to
/// [`MAX_NAME_LENGTH`], values to the default `limits.maxValueLength`.
pub fn resource(settings: &ExportSettings) -> Resource {
    Resource::builder_empty()
        .with_attributes(settings.resource.iter().map(|(k, v)| {
            let mut key = k.clone();
            celgate_engine::attributes::truncate_str(&mut key, MAX_NAME_LENGTH);
            let mut value = v.clone();
            value.truncate(DEFAULT_MAX_VALUE_LENGTH);
            KeyValue::new(key, otel_value(value))
        }))
        .build()
}

fn build_sink(
    rt: &tokio::runtime::Runtime,
    settings: &ExportSettings,
) -> Result<Sink, ExportError> {
    let (endpoint, protocol, headers, tls) = match &settings.target {
        ExportTarget::Disabled => return Ok(Sink::Disabled),
        ExportTarget::Stdout => return Ok(Sink::Stdout),
        ExportTarget::Otlp {
            endpoint,
            protocol,
            headers,
            tls,
        } => (endpoint, *protocol, headers, tls),
    };
    let build_err = |reason: String| ExportError::Build {
        endpoint: endpoint.clone(),
        reason,
    };
    // The collector's TLS (system roots, its CA file, a client identity) for https.
    let tls = match endpoint.starts_with("https://") {
        true => Some(crate::tls::client_config(tls).map_err(|e| build_err(e.to_string()))?),
        false => None,
    };
    // tonic and hyper spawn connection tasks: build inside the export runtime.
    let _guard = rt.enter();
    let mut exporter = match protocol {
        OtlpProtocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(settings.batch.export_timeout)
                .with_interceptor(HeaderInterceptor::new(headers).map_err(build_err)?);
            if let Some(config) = tls {
                let timeout = settings.batch.export_timeout;
                builder = builder.with_channel(
                    crate::tls::grpc_channel(endpoint, config, timeout).map_err(build_err)?,
                );
            }
            builder.build()
        }
        OtlpProtocol::Http => {
            let client = HeaderClient {
                inner: opentelemetry_http::hyper::HyperClient::new(
                    match tls {
                        Some(config) => {
                            crate::upstream::https_connector_from(Arc::unwrap_or_clone(config))
                        }
                        None => crate::upstream::https_connector(),
                    },
                    settings.batch.export_timeout,
                    None,
                ),
                headers: header_map(headers).map_err(build_err)?,
                tls_warned: Default::default(),
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint.clone())
                .with_timeout(settings.batch.export_timeout)
                .build()
        }
    }
    .map_err(|e| build_err(e.to_string()))?;
    exporter.set_resource(&resource(settings));
    Ok(Sink::Otlp(Box::new(exporter)))
}

fn header_map(headers: &[(String, Secret)]) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("`{k}` is not a valid header name"))?;
        let mut value = http::HeaderValue::from_str(v.expose())
            .map_err(|_| format!("the value of header `{k}` is not a valid header value"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// Sets the configured headers on every gRPC export, after (so over) whatever the
/// exporter took from `OTEL_EXPORTER_OTLP_HEADERS`: the config wins.
#[derive(Clone)]
struct HeaderInterceptor {
    metadata: Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
}

impl HeaderInterceptor {
    fn new(headers: &[(String, Secret)]) -> Result<HeaderInterceptor, String> {
        let metadata = headers
            .iter()
            .map(|(k, v)| {
                let key = k
                    .parse()
                    .map_err(|_| format!("`{k}` is not a valid gRPC metadata name"))?;
                let value = v
                    .expose()
                    .parse()
                    .map_err(|_| format!("the value of header `{k}` is not valid gRPC metadata"))?;
                Ok((key, value))
            })
            .collect::<Result<_, String>>()?;
        Ok(HeaderInterceptor { metadata })
    }
}

impl tonic::service::Interceptor for HeaderInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (k, v) in &self.metadata {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        Ok(req)
    }
}

/// Our hyper client (rustls with ring, like the proxy) with the configured headers
/// set last, so they win over `OTEL_EXPORTER_OTLP_HEADERS`.
#[derive(Debug)]
struct HeaderClient {
    inner: opentelemetry_http::hyper::HyperClient<crate::upstream::HttpsConnector>,
    headers: http::HeaderMap,
    /// A TLS failure was logged and no send succeeded since.
    tls_warned: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HeaderClient {
    async fn send_bytes(
        &self,
        mut request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        for (k, v) in &self.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        let uri = request.uri().clone();
        let sent = self.inner.send_bytes(request).await;
        // opentelemetry-otlp reports any failure to send as "network error": a
        // TLS reason is logged here, once until a send succeeds.
        match &sent {
            Ok(_) => self.tls_warned.store(false, Ordering::Relaxed),
            Err(e) => {
                if let Some(reason) = crate::tls::explain(e.as_ref(), "collector")
                    && !self.tls_warned.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(target: "celgate::export", "span export to {uri} failed: {reason}");
                }
            }
        }
        sent
    }
}

/// An engine attribute value as an OTel value.
pub fn otel_value(v: AttrValue) -> Value {
    match v {
        AttrValue::String(s) => Value::String(StringValue::from(s)),
        AttrValue::Int(i) => Value::I64(i),
        AttrValue::Double(d) => Value::F64(d),
        AttrValue::Bool(b) => Value::Bool(b),
        AttrValue::StringArray(a) => Value::Array(Array::String(
            a.into_iter().map(StringValue::from).collect(),
        )),
        AttrValue::IntArray(a) => Value::Array(Array::I64(a)),
        AttrValue::DoubleArray(a) => Value::Array(Array::F64(a)),
        AttrValue::BoolArray(a) => Value::Array(Array::Bool(a)),
    }
}

/// `otlpEndpoint: stdout`: one readable block per span, for the demo and debugging.
fn print_spans(spans: &[SpanData]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for s in spans {
        let _ = writeln!(
            out,
            "── span {:?} {} kind={:?} status={:?} trace={} span={}",
            s.name,
            s.end_time
                .duration_since(s.start_time)
                .map(|d| format!("{:.1}ms", d.as_secs_f64() * 1e3))
                .unwrap_or_default(),
            s.span_kind,
            s.status,
            s.span_context.trace_id(),
            s.span_context.span_id()
        );
        for kv in &s.attributes {
            let _ = writeln!(out, "   {} = {}", kv.key, display_value(&kv.value));
        }
    }
    let _ = out.flush();
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let s = s.as_str();
            let shown: String = s.chars().take(200).collect();
            if shown.len() < s.len() {
                format!("{shown:?}… ({} bytes)", s.len())
            } else {
                format!("{shown:?}")
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::BatchSettings;
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanContext, SpanKind, Status};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::time::SystemTime;

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: "s".into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        }
    }

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

    fn big_span(attrs: usize, each: usize) -> SpanData {
        let mut s = span();
        s.attributes = (0..attrs)
            .map(|i| KeyValue::new(format!("a{i}"), "x".repeat(each)))
            .collect();
        s
    }

    #[test]
    fn a_batch_is_split_into_parts_under_the_budget_in_order() {
        // 150 spans of ~64 KiB: 9.4 MiB in all.
        let spans: Vec<SpanData> = (0..150)
            .map(|i| {
                let mut s = big_span(2, 32 * 1024);
                s.name = format!("s{i}").into();
                s
            })
            .collect();
        let parts = split_by_size(spans, MAX_EXPORT_BYTES);
        assert!(parts.len() >= 4, "{} parts", parts.len());
        let names: Vec<String> = parts.iter().flatten().map(|s| s.name.to_string()).collect();
        let expected: Vec<String> = (0..150).map(|i| format!("s{i}")).collect();
        assert_eq!(names, expected, "nothing lost, nothing reordered");
        for part in &parts {
            let size: usize = part.iter().map(encoded_bound).sum();
            assert!(size <= MAX_EXPORT_BYTES, "{size}");
        }
    }

    #[test]
    fn the_bound_is_above_the_real_encoded_size() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let mut s = big_span(3, 1000);
        s.attributes.push(KeyValue::new("n", 7i64));
        s.attributes.push(KeyValue::new(
            "arr",
            Value::Array(Array::String(vec!["ab".into(), "cd".into()])),
        ));
        s.name = "n".repeat(300).into();
        s.status = Status::error("e".repeat(200));
        s.span_context = SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([2; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("k", "v")]).unwrap(),
        );
        s.parent_span_id = SpanId::from_bytes([3; 8]);
        let bound = encoded_bound(&s);
        // What the span really takes in an export request: the `Span` message
        // plus its field tag and length in `ScopeSpans`.
        use prost::Message as _;
        let real = opentelemetry_proto::tonic::trace::v1::Span::from(s).encoded_len();
        let real = real + 1 + prost::length_delimiter_len(real);
        assert!(bound >= real, "bound {bound} < encoded {real}");
        assert!(bound < real + 600, "not wildly above: {bound} vs {real}");
    }

    #[test]
    fn a_span_too_large_alone_is_cut_to_fit() {
        let mut s = big_span(8, 1024 * 1024);
        s.name = "n".repeat(2 * 1024 * 1024).into();
        s.status = Status::error("e".repeat(2 * 1024 * 1024));
        let parts = split_by_size(vec![span(), s, span()], MAX_EXPORT_BYTES);
        let all: Vec<&SpanData> = parts.iter().flatten().collect();
        assert_eq!(all.len(), 3);
        let cut = all[1];
        assert!(encoded_bound(cut) <= MAX_EXPORT_BYTES);
        assert_eq!(cut.attributes.len(), 8, "values are cut, attributes kept");
        assert!(cut.name.len() < 1024 * 1024);
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
}
