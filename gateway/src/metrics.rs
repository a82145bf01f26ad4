//! Prometheus metrics for `/metrics` on the admin port.
//!
//! Besides celgate's own counters (requests, reloads, spans, expression errors)
//! this records the OTel GenAI client metrics `gen_ai.client.token.usage` and
//! `gen_ai.client.operation.duration` with the bucket boundaries the semantic
//! conventions advise. Label values that a client controls (the requested model)
//! are only used once a backend accepted them, so a client cannot blow up the
//! number of series.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::export::ExportStats;

/// `gen_ai.client.token.usage` boundaries (OTel GenAI semantic conventions).
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// `gen_ai.client.operation.duration` boundaries in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub backend: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpressionLabels {
    pub attribute: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenAiLabels {
    pub gen_ai_operation_name: String,
    pub gen_ai_provider_name: String,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    pub server_address: String,
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_operation_name: String,
    pub gen_ai_provider_name: String,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    pub server_address: String,
    pub gen_ai_token_type: &'static str,
}

/// All metrics of the process; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub expression_errors: Family<ExpressionLabels, Counter>,
    /// Backend keys masked in responses, by the backend that sent them.
    pub secrets_redacted: Family<BackendLabels, Counter>,
    pub token_usage: Family<TokenLabels, Histogram>,
    pub duration: Family<GenAiLabels, Histogram>,
}

impl Metrics {
    /// A registry holding celgate's metrics; `export` and `generation` are read
    /// at each scrape.
    pub fn new(
        export: Arc<ExportStats>,
        generation: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let expression_errors = Family::<ExpressionLabels, Counter>::default();
        let secrets_redacted = Family::<BackendLabels, Counter>::default();
        let token_usage = Family::<TokenLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(TOKEN_BUCKETS)) as fn() -> Histogram,
        );
        let duration = Family::<GenAiLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "celgate_requests",
            "Proxied requests by route, backend and HTTP status",
            requests.clone(),
        );
        registry.register(
            "celgate_config_reloads",
            "Config reloads by result (ok, error, unchanged)",
            reloads.clone(),
        );
        registry.register(
            "celgate_expression_errors",
            "Attribute expressions that failed at run time, by attribute key",
            expression_errors.clone(),
        );
        registry.register(
            "celgate_secrets_redacted",
            "Backend keys masked in responses (body, headers, span), by the backend that sent them",
            secrets_redacted.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used (gen_ai.client.token.usage)",
            Unit::Other("token".into()),
            token_usage.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration (gen_ai.client.operation.duration)",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_collector(Box::new(Snapshot { export, generation }));
        Metrics {
            registry,
            requests,
            reloads,
            expression_errors,
            secrets_redacted,
            token_usage,
            duration,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Values owned elsewhere, read at scrape time.
struct Snapshot {
    export: Arc<ExportStats>,
    generation: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "celgate_spans_exported",
                "Spans the collector accepted",
                &self.export.exported,
            ),
            (
                "celgate_spans_dropped",
                "Spans lost: export queue full, export failed or timed out",
                &self.export.dropped,
            ),
            (
                "celgate_span_export_failures",
                "Failed export calls",
                &self.export.failed_exports,
            ),
        ];
        for (name, help, value) in counters {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(m)?;
        }
        let m = encoder.encode_descriptor(
            "celgate_config_generation",
            "Generation of the config in service (1 at start, +1 per reload)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new((self.generation)() as i64).encode(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_genai_histograms_with_semconv_buckets() {
        let stats = Arc::new(ExportStats::default());
        stats.exported.fetch_add(3, Ordering::Relaxed);
        let m = Metrics::new(stats, Arc::new(|| 7));
        m.token_usage
            .get_or_create(&TokenLabels {
                gen_ai_operation_name: "chat".into(),
                gen_ai_provider_name: "openai".into(),
                gen_ai_request_model: "gpt-4o".into(),
                gen_ai_response_model: "gpt-4o".into(),
                server_address: "api.openai.com".into(),
                gen_ai_token_type: "input",
            })
            .observe(10.0);
        let text = m.render();
        assert!(text.contains("celgate_spans_exported_total 3"), "{text}");
        assert!(text.contains("celgate_config_generation 7"), "{text}");
        assert!(
            text.contains(
                "gen_ai_client_token_usage_token_bucket{le=\"16.0\",gen_ai_operation_name=\"chat\""
            ),
            "{text}"
        );
        assert!(text.contains("gen_ai_token_type=\"input\""), "{text}");
    }
}
