//! The OTLP metrics push (`OTEL_METRICS_EXPORTER=otlp`): the OTel SDK's meter
//! provider with a `PeriodicReader`, whose own thread collects every
//! `OTEL_METRIC_EXPORT_INTERVAL` and hands the batch to [`Push`], which sends it with
//! `opentelemetry-otlp` (gRPC or HTTP protobuf).
//!
//! The reader's thread runs the export future on a plain executor, where tonic and
//! hyper find no runtime (OTel 0.33's known pitfall: and a shutdown from a
//! current-thread runtime can deadlock). So [`Push`] owns a small current-thread
//! runtime of its own and blocks on it from the reader's thread: the transports get
//! their runtime, the proxy's runtime never runs an export, and recording stays an
//! in-memory aggregation on the request path. A dead or slow collector costs the
//! reader's thread an export timeout, never a request. A reload that changes the
//! collector swaps the transport between two exports; the aggregated values stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use celgate_engine::config::OtlpProtocol;
use celgate_engine::redact::mask_url;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{
    MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus_client::metrics::counter::Counter;

use super::otlp::Instruments;
use crate::settings::Secret;
use crate::settings::metrics::{OtlpMetrics, OtlpMetricsTarget, Temporality};

/// Why the metrics push cannot start or follow a reload. Endpoints are masked.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot start the metrics export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot build the OTLP metrics exporter for {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
}

/// The running push: the meter provider (which owns the reader's thread) and a
/// handle on the transport for reloads.
pub struct MetricsPush {
    provider: SdkMeterProvider,
    push: Arc<Push>,
}

impl MetricsPush {
    /// Starts the reader's thread and builds the transport for `settings`; the
    /// returned instruments record into it. Blocks briefly (the transport is built
    /// in its runtime): call it off the proxy's runtime.
    pub fn start(
        settings: &OtlpMetrics,
        resource: &[(String, celgate_engine::AttrValue)],
    ) -> Result<(MetricsPush, Instruments), PushError> {
        let resource = sdk_resource(resource);
        let push = Arc::new(Push::new(settings)?);
        let reader = PeriodicReader::builder(SharedPush(Arc::clone(&push)))
            .with_interval(settings.interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let scope = opentelemetry::InstrumentationScope::builder("celgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let instruments = Instruments::new(&provider.meter_with_scope(scope));
        Ok((MetricsPush { provider, push }, instruments))
    }

    /// Points the push at `target` from the next export on; the values recorded
    /// so far are kept. Blocks while the transport is built: call it off the
    /// proxy's runtime.
    pub fn reconfigure(&self, target: &OtlpMetricsTarget) -> Result<(), PushError> {
        self.push.reconfigure(target)
    }

    /// Where the push goes now, masked, for the log.
    pub fn describe(&self) -> String {
        self.push.describe()
    }

    /// Failed pushes so far (for `/metrics`).
    pub fn failures(&self) -> Counter {
        self.push.failures.clone()
    }

    /// Pushes what was recorded since the last export and stops the reader's
    /// thread. Waits at most about 5 s (the SDK's bound); the push itself is
    /// bounded by `OTEL_METRIC_EXPORT_TIMEOUT`. Call it off the proxy's runtime.
    pub fn shutdown(&self) -> bool {
        match self.provider.shutdown() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "the last metrics push to {} did not finish: {e}",
                    self.describe()
                );
                false
            }
        }
    }
}

/// What the reader's thread exports through (the reader takes its exporter by
/// value; reloads keep a handle).
#[derive(Debug)]
struct SharedPush(Arc<Push>);

impl PushMetricExporter for SharedPush {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.0.export(metrics)
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.0.temporality
    }
}

/// The transport in service and what it was built for.
struct Transport {
    exporter: MetricExporter,
    target: OtlpMetricsTarget,
}

/// Sends collected metrics on its own runtime, from the reader's thread.
struct Push {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    transport: ArcSwap<Transport>,
    temporality: opentelemetry_sdk::metrics::Temporality,
    export_timeout: Duration,
    /// Whether the last export failed: failures are logged once, then the
    /// recovery.
    failing: AtomicBool,
    failures: Counter,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push").finish_non_exhaustive()
    }
}

impl Push {
    fn new(settings: &OtlpMetrics) -> Result<Push, PushError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("celgate-metrics")
            .build()
            .map_err(PushError::Runtime)?;
        let temporality = match settings.temporality {
            Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
            Temporality::LowMemory => opentelemetry_sdk::metrics::Temporality::LowMemory,
        };
        let exporter = build(&runtime, &settings.target, temporality)?;
        Ok(Push {
            runtime: Some(runtime),
            transport: ArcSwap::from_pointee(Transport {
                exporter,
                target: settings.target.clone(),
            }),
            temporality,
            export_timeout: settings.export_timeout,
            failing: AtomicBool::new(false),
            failures: Counter::default(),
        })
    }

    fn reconfigure(&self, target: &OtlpMetricsTarget) -> Result<(), PushError> {
        let Some(runtime) = &self.runtime else {
            return Ok(());
        };
        let exporter = build(runtime, target, self.temporality)?;
        self.transport.store(Arc::new(Transport {
            exporter,
            target: target.clone(),
        }));
        Ok(())
    }

    fn describe(&self) -> String {
        let t = self.transport.load();
        format!(
            "{} over OTLP/{:?}",
            mask_url(&t.target.endpoint),
            t.target.protocol
        )
    }

    /// One export, within `OTEL_METRIC_EXPORT_TIMEOUT`; runs on the reader's thread.
    fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let Some(runtime) = &self.runtime else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let transport = self.transport.load_full();
        let within = self.export_timeout;
        let result = runtime.block_on(async {
            match tokio::time::timeout(within, transport.exporter.export(metrics)).await {
                Ok(result) => result,
                Err(_) => Err(OTelSdkError::Timeout(within)),
            }
        });
        self.note(&result, &transport.target);
        result
    }

    /// Logs the first failure of a run of them, and the recovery.
    fn note(&self, result: &OTelSdkResult, target: &OtlpMetricsTarget) {
        let endpoint = mask_url(&target.endpoint);
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "celgate::metrics", "metrics push to {endpoint} recovered");
                }
            }
            Err(e) => {
                self.failures.inc();
                if !self.failing.swap(true, Ordering::Relaxed) {
                    let e = match e {
                        OTelSdkError::Timeout(t) => {
                            format!("no answer within {t:?} (OTEL_METRIC_EXPORT_TIMEOUT)")
                        }
                        // The SDK passes tonic's and hyper's errors on as text.
                        e => crate::tls::with_reason(e.to_string(), "collector"),
                    };
                    tracing::warn!(target: "celgate::metrics", "metrics push to {endpoint} ({:?}) failed: {e}; the values are pushed again, cumulated, at the next interval; further failures are not logged until it recovers", target.protocol);
                }
            }
        }
    }
}

impl Drop for Push {
    fn drop(&mut self) {
        // The last handle may go on the proxy's runtime, where a runtime cannot be
        // dropped blocking.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The OTLP transport for `target`, built inside `runtime` (tonic and hyper spawn
/// their connection tasks there).
fn build(
    runtime: &tokio::runtime::Runtime,
    target: &OtlpMetricsTarget,
    temporality: opentelemetry_sdk::metrics::Temporality,
) -> Result<MetricExporter, PushError> {
    let build_err = |reason: String| PushError::Build {
        endpoint: mask_url(&target.endpoint),
        reason,
    };
    // The collector's TLS (system roots, its CA file, a client identity) for https.
    let tls = match target.endpoint.starts_with("https://") {
        true => Some(crate::tls::client_config(&target.tls).map_err(|e| build_err(e.to_string()))?),
        false => None,
    };
    let _guard = runtime.enter();
    let builder = MetricExporter::builder().with_temporality(temporality);
    match target.protocol {
        OtlpProtocol::Grpc => {
            let mut builder = builder
                .with_tonic()
                .with_endpoint(target.endpoint.clone())
                .with_timeout(target.timeout)
                .with_interceptor(Metadata::new(&target.headers).map_err(build_err)?);
            if let Some(config) = tls {
                let channel = crate::tls::grpc_channel(&target.endpoint, config, target.timeout);
                builder = builder.with_channel(channel.map_err(build_err)?);
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
                    target.timeout,
                    None,
                ),
                headers: crate::export::transport::configured_headers(&target.headers)
                    .map_err(build_err)?,
            };
            builder
                .with_http()
                .with_http_client(client)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(target.endpoint.clone())
                .with_timeout(target.timeout)
                .build()
        }
    }
    .map_err(|e| build_err(e.to_string()))
}

/// Sets the resolved headers on every gRPC export, over whatever the exporter took
/// from the environment itself (they are a subset of ours, by name).
#[derive(Clone)]
struct Metadata(
    Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
);

impl Metadata {
    fn new(headers: &[(String, Secret)]) -> Result<Metadata, String> {
        headers
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
            .collect::<Result<_, String>>()
            .map(Metadata)
    }
}

impl tonic::service::Interceptor for Metadata {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (k, v) in &self.0 {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        Ok(req)
    }
}

/// Our hyper client (rustls with ring, like the proxy) with the resolved headers
/// set last, so they win over what the exporter read from the environment.
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

/// The spans' resource (see `crate::export::resource`, already bounded) as the
/// SDK's, so metrics and spans name the same service.
fn sdk_resource(attrs: &[(String, celgate_engine::AttrValue)]) -> Resource {
    use celgate_engine::AttrValue;
    use opentelemetry::{Array, KeyValue, StringValue, Value};
    let value = |v: &AttrValue| match v.clone() {
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
    };
    Resource::builder_empty()
        .with_attributes(
            attrs
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), value(v))),
        )
        .build()
}
