//! Getting spans out of the process without ever slowing a request down.
//!
//! Requests hand finished spans to [`Exporter::submit`], which never blocks: the
//! span goes into a bounded queue, or is dropped and counted when the queue is full
//! (a dead or slow collector). One dedicated thread drains the queue in batches
//! (`OTEL_BSP_*` settings) and sends them with opentelemetry-otlp's exporter
//! (gRPC or HTTP protobuf) on its own small runtime, so export work never competes
//! with the proxy's runtime. A reload that changes the endpoint swaps the exporter
//! on that thread between two batches: spans already queued are not lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celgate_engine::AttrValue;
use celgate_engine::config::OtlpProtocol;
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

/// Handle to the export thread. Cheap to share (`Arc`).
pub struct Exporter {
    tx: SyncSender<Msg>,
    stats: Arc<ExportStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Exporter {
    /// Starts the export thread and builds the exporter for `settings`; fails if
    /// the exporter cannot be built (a malformed endpoint, say).
    pub fn start(settings: &ExportSettings) -> Result<Exporter, ExportError> {
        let (tx, rx) = mpsc::sync_channel(settings.batch.max_queue_size);
        let stats = Arc::new(ExportStats::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_stats = Arc::clone(&stats);
        let initial = settings.clone();
        let thread = std::thread::Builder::new()
            .name("celgate-export".into())
            .spawn(move || run(rx, initial, worker_stats, ready_tx))
            .map_err(|e| ExportError::Build {
                endpoint: String::new(),
                reason: format!("cannot start the export thread: {e}"),
            })?;
        ready_rx.recv().map_err(|_| ExportError::Stopped)??;
        Ok(Exporter {
            tx,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a span for export; never blocks. A full queue drops it (counted).
    pub fn submit(&self, span: SpanData) {
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
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
        done.recv().map_err(|_| ExportError::Stopped)?
    }

    /// Sends everything queued so far; waits at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// Flushes and stops the thread; waits at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Shutdown(ack)).is_ok()
            && done.recv_timeout(timeout).is_ok()
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

fn run(
    rx: Receiver<Msg>,
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
        let wait = next_flush.saturating_duration_since(Instant::now());
        let msg = rx.recv_timeout(wait);
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
                drain(&rx, &mut batch, &rt, &sink, &settings, &stats, &mut failing);
                let _ = ack.send(());
            }
            Ok(Msg::Reconfigure(new, ack)) => {
                drain(&rx, &mut batch, &rt, &sink, &settings, &stats, &mut failing);
                match build_sink(&rt, &new) {
                    Ok(new_sink) => {
                        shutdown_sink(&rt, sink);
                        sink = new_sink;
                        settings = *new;
                        failing = false;
                        let _ = ack.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = ack.send(Err(e));
                    }
                }
            }
            Ok(Msg::Shutdown(ack)) => {
                drain(&rx, &mut batch, &rt, &sink, &settings, &stats, &mut failing);
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
    rx: &Receiver<Msg>,
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
    let spans = std::mem::take(batch);
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
                Ok(Err(e)) => Err(e.to_string()),
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

/// The resource every exported span carries.
pub fn resource(settings: &ExportSettings) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            settings
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), otel_value(v.clone()))),
        )
        .build()
}

fn build_sink(
    rt: &tokio::runtime::Runtime,
    settings: &ExportSettings,
) -> Result<Sink, ExportError> {
    let (endpoint, protocol, headers) = match &settings.target {
        ExportTarget::Disabled => return Ok(Sink::Disabled),
        ExportTarget::Stdout => return Ok(Sink::Stdout),
        ExportTarget::Otlp {
            endpoint,
            protocol,
            headers,
        } => (endpoint, *protocol, headers),
    };
    let build_err = |reason: String| ExportError::Build {
        endpoint: endpoint.clone(),
        reason,
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
            if endpoint.starts_with("https://") {
                builder = builder.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_enabled_roots(),
                );
            }
            builder.build()
        }
        OtlpProtocol::Http => {
            let client = HeaderClient {
                inner: opentelemetry_http::hyper::HyperClient::new(
                    crate::upstream::https_connector(),
                    settings.batch.export_timeout,
                    None,
                ),
                headers: header_map(headers).map_err(build_err)?,
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
        self.inner.send_bytes(request).await
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
