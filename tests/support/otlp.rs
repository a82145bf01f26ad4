//! An OTLP receiver for tests: decodes the protobuf an exporter really sends, over
//! gRPC ([`Receiver::grpc`]) or OTLP/HTTP ([`Receiver::http`]): spans, and metrics
//! exports ([`Receiver::wait_for_point`]).
//!
//! The API is synchronous so tests that drive the `celgate` binary as a process can use
//! it without a runtime: the server runs on a thread of its own with its own tokio
//! runtime, and stops when the [`Receiver`] is dropped. How exports are read and
//! answered is [`server`]'s, shared with the load runs' counting sink
//! (`gateway/examples/otlp_sink.rs`); this file keeps what tests assert on: every export
//! call, and its spans decoded into readable [`Span`]s.
//!
//! ```ignore
//! let otlp = Receiver::grpc();
//! // ... point an exporter at otlp.endpoint() ...
//! let spans = otlp.wait_for(1, Duration::from_secs(10));
//! assert_eq!(spans[0].str_attr("gen_ai.request.model"), Some("gpt-4o-mini"));
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::HeaderMap;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Map, Number, Value};
use tokio::sync::oneshot;

pub mod metrics;
pub mod server;

#[allow(unused_imports)]
pub use metrics::{MetricsExport, Point};

#[allow(unused_imports)]
pub use server::{GRPC_EXPORT_PATH, GRPC_METRICS_PATH, Protocol};

/// One span as received, with OTLP's enums and ids in readable form.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Lowercase hex; `""` when absent.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// The W3C `tracestate`, `""` when absent.
    pub trace_state: String,
    pub name: String,
    /// `INTERNAL`, `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER` or `UNSPECIFIED`
    /// (`UNKNOWN(n)` for a value outside the enum).
    pub kind: String,
    /// `UNSET`, `OK` or `ERROR` (`UNSET` when the span has no status).
    pub status_code: String,
    pub status_message: String,
    /// Attributes with their OTLP types kept apart: string → `String`, int →
    /// `Number` with `is_i64()`, double → `Number` with `is_f64()` (NaN and infinities,
    /// which JSON cannot hold, become the strings `NaN`, `inf`, `-inf`), bool → `Bool`,
    /// array → `Array` of those, kvlist → `Object`, bytes → lowercase hex `String`, an
    /// empty value → `Null`. A key given twice keeps its last value.
    pub attributes: Map<String, Value>,
    /// The resource's attributes, typed the same way.
    pub resource: Map<String, Value>,
    pub scope_name: String,
    pub scope_version: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// OTLP span flags (bits 0–7: W3C trace flags; bits 8–9: parent-is-remote).
    pub flags: u32,
    /// Attributes the exporter had to drop (attribute limits).
    pub dropped_attributes_count: u32,
    pub events: Vec<Event>,
}

/// A span event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Map<String, Value>,
}

impl Span {
    /// Attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// Attribute `key` when it is a string.
    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }

    /// Attribute `key` when it is an int.
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }

    /// Resource attribute `key` when it is a string.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(Value::as_str)
    }
}

/// One export request as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportCall {
    /// The request path (OTLP/HTTP), or [`GRPC_EXPORT_PATH`].
    pub path: String,
    /// Headers (gRPC: request metadata), names lowercase, values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    /// The HTTP status answered (gRPC: 200).
    pub status: u16,
    /// Spans decoded from it (0 when it was rejected).
    pub spans: usize,
}

impl ExportCall {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the receiver got so far.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    exports: Vec<ExportCall>,
    metrics: Vec<MetricsExport>,
}

/// [`Received`] plus a condition variable signalled on every change.
#[derive(Debug, Default)]
struct Store {
    received: Mutex<Received>,
    changed: Condvar,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, call: ExportCall, spans: Vec<Span>) {
        let mut received = self.lock();
        received.exports.push(call);
        received.spans.extend(spans);
        self.changed.notify_all();
    }
}

impl server::Recorder for Store {
    fn accepted(&self, export: &server::Export<'_>, request: &ExportTraceServiceRequest) {
        let spans = decode(request);
        self.push(ExportCall::from((export, spans.len())), spans);
    }

    fn rejected(&self, export: &server::Export<'_>) {
        self.push(ExportCall::from((export, 0)), Vec::new());
    }

    fn accepted_metrics(&self, export: &server::Export<'_>, request: &ExportMetricsServiceRequest) {
        let mut received = self.lock();
        received.metrics.push(MetricsExport {
            call: ExportCall::from((export, 0)),
            points: metrics::decode(request),
        });
        self.changed.notify_all();
    }
}

impl From<(&server::Export<'_>, usize)> for ExportCall {
    fn from((export, spans): (&server::Export<'_>, usize)) -> ExportCall {
        ExportCall {
            path: export.path.to_owned(),
            headers: header_list(export.headers),
            status: export.status.as_u16(),
            spans,
        }
    }
}

/// How a [`Receiver`] is started: [`Receiver::with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiverOptions {
    /// Listen on this port of `127.0.0.1` (a collector coming back where a dead one
    /// was); `None`: a free port.
    pub port: Option<u16>,
    /// Wait this long before handling each export (a slow collector): the export is
    /// recorded and answered after the wait.
    pub delay: Duration,
}

/// A running OTLP trace receiver on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    protocol: Protocol,
    store: Arc<Store>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// An OTLP/gRPC `TraceService` (h2c) on a free port.
    pub fn grpc() -> Receiver {
        Receiver::start(Protocol::Grpc)
    }

    /// An OTLP/HTTP receiver on a free port: `POST` with `Content-Type:
    /// application/x-protobuf` to any path ending in `/v1/traces` decodes an
    /// `ExportTraceServiceRequest` and answers 200 with an encoded
    /// `ExportTraceServiceResponse`. Another content type (OTLP/JSON included) or a
    /// `Content-Encoding` gets 415, an undecodable body 400, a body over
    /// [`server::MAX_BODY_BYTES`] 413, another method 405, another path 404. Every
    /// request is recorded in [`exports`](Receiver::exports).
    pub fn http() -> Receiver {
        Receiver::start(Protocol::Http)
    }

    fn start(protocol: Protocol) -> Receiver {
        Receiver::with(protocol, ReceiverOptions::default())
    }

    /// A receiver speaking `protocol` as `options` say.
    pub fn with(protocol: Protocol, options: ReceiverOptions) -> Receiver {
        // Bind here so the port is known (and ready) before this returns.
        let listener = std::net::TcpListener::bind(("127.0.0.1", options.port.unwrap_or(0)))
            .unwrap_or_else(|e| panic!("bind the OTLP receiver ({options:?}): {e}"));
        listener
            .set_nonblocking(true)
            .expect("make the OTLP listener non-blocking");
        let addr = listener.local_addr().expect("OTLP listener address");
        let store = Arc::new(Store::default());
        let (shutdown, stopped) = oneshot::channel();
        let thread_store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name(format!("otlp-{protocol:?}-{}", addr.port()))
            .spawn(move || serve(listener, protocol, options.delay, thread_store, stopped))
            .expect("spawn the OTLP receiver thread");
        Receiver {
            addr,
            protocol,
            store,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: what `OTEL_EXPORTER_OTLP_ENDPOINT` or a config's
    /// `otlpEndpoint` takes (OTLP/HTTP exporters append `/v1/traces` to it).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1/traces`: the full OTLP/HTTP traces URL
    /// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint())
    }

    /// The transport it speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Every span decoded so far, in order of arrival.
    pub fn spans(&self) -> Vec<Span> {
        self.store.lock().spans.clone()
    }

    /// Waits until at least `n` spans arrived or `timeout` passed, and returns the spans
    /// received by then (possibly fewer than `n`: the caller asserts).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        let mut received = self.store.lock();
        while received.spans.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            received = self
                .store
                .changed
                .wait_timeout(received, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        received.spans.clone()
    }

    /// Waits until a span matching `matches` arrived or `timeout` passed; returns the
    /// first match (the caller asserts on `None`).
    pub fn wait_for_span(
        &self,
        timeout: Duration,
        matches: impl Fn(&Span) -> bool,
    ) -> Option<Span> {
        let deadline = Instant::now() + timeout;
        let mut received = self.store.lock();
        loop {
            if let Some(span) = received.spans.iter().find(|s| matches(s)) {
                return Some(span.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            received = self
                .store
                .changed
                .wait_timeout(received, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Every trace export request received so far (OTLP/HTTP: rejected ones too, of
    /// either signal), in order.
    pub fn exports(&self) -> Vec<ExportCall> {
        self.store.lock().exports.clone()
    }

    /// Every metrics export accepted so far, in order.
    pub fn metrics_exports(&self) -> Vec<MetricsExport> {
        self.store.lock().metrics.clone()
    }

    /// Waits until a metrics export has a point matching `matches` or `timeout`
    /// passed; returns the matching point of the latest such export (cumulative
    /// points grow from export to export) and that export's call.
    pub fn wait_for_point(
        &self,
        timeout: Duration,
        matches: impl Fn(&Point) -> bool,
    ) -> Option<(Point, ExportCall)> {
        let deadline = Instant::now() + timeout;
        let mut received = self.store.lock();
        loop {
            let found = received.metrics.iter().rev().find_map(|export| {
                let point = export.points.iter().find(|p| matches(p))?;
                Some((point.clone(), export.call.clone()))
            });
            if found.is_some() {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            received = self
                .store
                .changed
                .wait_timeout(received, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The receiver thread: accepts connections until `stopped` fires, then drops the
/// runtime (and with it every open connection).
fn serve(
    listener: std::net::TcpListener,
    protocol: Protocol,
    delay: Duration,
    store: Arc<Store>,
    mut stopped: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the OTLP receiver runtime");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("register the OTLP listener");
        loop {
            let stream = tokio::select! {
                _ = &mut stopped => return,
                stream = server::accept(&listener) => stream,
            };
            let store = Arc::clone(&store);
            tokio::spawn(server::serve_connection(stream, protocol, delay, store));
        }
    });
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Flattens an export request into [`Span`]s.
pub fn decode(request: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            let (scope_name, scope_version) = scope_spans
                .scope
                .as_ref()
                .map(|s| (s.name.clone(), s.version.clone()))
                .unwrap_or_default();
            for span in &scope_spans.spans {
                let status = span.status.clone().unwrap_or_default();
                spans.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    trace_state: span.trace_state.clone(),
                    name: span.name.clone(),
                    kind: match span.kind {
                        0 => "UNSPECIFIED".to_owned(),
                        1 => "INTERNAL".to_owned(),
                        2 => "SERVER".to_owned(),
                        3 => "CLIENT".to_owned(),
                        4 => "PRODUCER".to_owned(),
                        5 => "CONSUMER".to_owned(),
                        other => format!("UNKNOWN({other})"),
                    },
                    status_code: match status.code {
                        0 => "UNSET".to_owned(),
                        1 => "OK".to_owned(),
                        2 => "ERROR".to_owned(),
                        other => format!("UNKNOWN({other})"),
                    },
                    status_message: status.message,
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    scope_version: scope_version.clone(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    flags: span.flags,
                    dropped_attributes_count: span.dropped_attributes_count,
                    events: span
                        .events
                        .iter()
                        .map(|e| Event {
                            name: e.name.clone(),
                            time_unix_nano: e.time_unix_nano,
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    spans
}

fn attributes(list: &[KeyValue]) -> Map<String, Value> {
    list.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn value(any: Option<&AnyValue>) -> Value {
    use any_value::Value as V;
    match any.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::Number(Number::from(*i)),
        Some(V::DoubleValue(d)) => Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        Some(V::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(|v| value(Some(v))).collect())
        }
        Some(V::KvlistValue(list)) => Value::Object(attributes(&list.values)),
        Some(V::BytesValue(bytes)) => Value::String(hex(bytes)),
        // Profiles-only; meaningless in a trace.
        Some(V::StringValueStrindex(_)) => Value::Null,
    }
}

/// Lowercase hex, `""` for no bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
