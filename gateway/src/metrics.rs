//! Prometheus metrics for `/metrics` on the admin port.
//!
//! Besides celgate's own counters (requests, reloads, spans, expression errors)
//! this records the OTel GenAI client metrics `gen_ai.client.token.usage` and
//! `gen_ai.client.operation.duration`, and the server metric
//! `gen_ai.server.time_to_first_token` (the gateway serves its clients; the
//! time is its own, from request arrival), with the bucket boundaries the
//! semantic conventions advise.
//!
//! Label values a client or a backend chooses (the requested and answered model,
//! the path, the error type) are bounded as Prometheus advises, or one client could
//! make `/metrics` hundreds of megabytes (with `models: ["*"]` a backend accepts any
//! name): each value is cut to [`MAX_LABEL_LEN`] bytes, and each label of each
//! family keeps the first [`MAX_LABEL_VALUES`] distinct values it saw; later new
//! values are counted under [`OTHER`]. As labels combine (a request model with
//! each response model), a GenAI family also keeps at most [`MAX_SERIES`]
//! combinations of them; calls with a new one past that are counted with all
//! those labels `other`. Recording goes through [`Metrics`]' methods, which apply
//! the bounds.
//!
//! A call's series are found through [`series`]: the bounded labels and the
//! family lookups are done once per distinct set of values, not on every call.
//!
//! With `OTEL_METRICS_EXPORTER=otlp` the same methods also record the GenAI
//! histograms into OTel instruments ([`otlp`]) with the values bounded here, and
//! [`push`] sends them to a collector.

pub mod otlp;
pub mod push;
pub mod series;

use celgate_engine::attributes::cut_str as cut;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

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

/// `gen_ai.server.time_to_first_token` boundaries in seconds.
pub const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Longest label value, in bytes; longer values are cut at a character boundary.
pub const MAX_LABEL_LEN: usize = 128;
/// Distinct values one label of one family takes; new values past these are
/// counted as [`OTHER`].
pub const MAX_LABEL_VALUES: usize = 100;
/// Distinct combinations of the bounded labels one GenAI family keeps.
pub const MAX_SERIES: usize = 500;
/// The label value standing for every value past [`MAX_LABEL_VALUES`].
pub const OTHER: &str = "other";

/// The values one label of one family has taken so far.
#[derive(Debug, Default)]
struct LabelValues {
    seen: RwLock<HashSet<Box<str>>>,
}

impl LabelValues {
    /// `value` as this label may carry it: cut to [`MAX_LABEL_LEN`], and
    /// [`OTHER`] once the label has [`MAX_LABEL_VALUES`] other values.
    fn bound(&self, value: &str) -> String {
        self.bound_to(cut(value, MAX_LABEL_LEN), MAX_LABEL_VALUES)
    }

    /// `value`, or [`OTHER`] once `max` other values were seen.
    fn bound_to(&self, value: &str, max: usize) -> String {
        let known = self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(value);
        if known {
            return value.to_owned();
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if seen.len() < max || seen.contains(value) {
            seen.insert(value.into());
            value.to_owned()
        } else {
            OTHER.to_owned()
        }
    }
}

/// The bounded labels of the two GenAI families.
#[derive(Debug, Default)]
struct GenAiBounds {
    provider: LabelValues,
    request_model: LabelValues,
    response_model: LabelValues,
    server_address: LabelValues,
    error_type: LabelValues,
    /// Combinations of the five above.
    series: LabelValues,
}

/// The bounded labels of one GenAI call, in [`GenAiLabels`] order.
#[derive(Debug)]
struct Bounded {
    provider: String,
    request_model: String,
    response_model: String,
    server_address: String,
    error_type: String,
}

impl GenAiBounds {
    fn bound(&self, call: &GenAiCall<'_>) -> Bounded {
        let mut b = Bounded {
            provider: self.provider.bound(call.provider),
            request_model: self.request_model.bound(call.request_model),
            response_model: self.response_model.bound(call.response_model),
            server_address: self.server_address.bound(call.server_address),
            error_type: self.error_type.bound(call.error_type),
        };
        let combination = [
            &b.provider,
            &b.request_model,
            &b.response_model,
            &b.server_address,
            &b.error_type,
        ]
        .map(String::as_str)
        .join("\0");
        if self.series.bound_to(&combination, MAX_SERIES) == OTHER {
            for label in [
                &mut b.provider,
                &mut b.request_model,
                &mut b.response_model,
                &mut b.server_address,
                &mut b.error_type,
            ] {
                *label = OTHER.to_owned();
            }
        }
        b
    }
}

impl Bounded {
    /// The labels of a time-to-first-token series.
    fn model_labels(&self, operation: &str) -> ModelLabels {
        ModelLabels {
            gen_ai_operation_name: operation.to_owned(),
            gen_ai_provider_name: self.provider.clone(),
            gen_ai_request_model: self.request_model.clone(),
            gen_ai_response_model: self.response_model.clone(),
            server_address: self.server_address.clone(),
        }
    }

    /// The labels of a duration series.
    fn genai_labels(&self, operation: &str) -> GenAiLabels {
        let m = self.model_labels(operation);
        GenAiLabels {
            gen_ai_operation_name: m.gen_ai_operation_name,
            gen_ai_provider_name: m.gen_ai_provider_name,
            gen_ai_request_model: m.gen_ai_request_model,
            gen_ai_response_model: m.gen_ai_response_model,
            server_address: m.server_address,
            error_type: self.error_type.clone(),
        }
    }

    /// The labels of a token-usage series of `kind` tokens.
    fn token_labels(&self, operation: &str, kind: &'static str) -> TokenLabels {
        let m = self.model_labels(operation);
        TokenLabels {
            gen_ai_operation_name: m.gen_ai_operation_name,
            gen_ai_provider_name: m.gen_ai_provider_name,
            gen_ai_request_model: m.gen_ai_request_model,
            gen_ai_response_model: m.gen_ai_response_model,
            server_address: m.server_address,
            gen_ai_token_type: kind,
        }
    }
}

/// The series one set of GenAI label values records into, each family's resolved
/// when a call first records into it (a call without tokens creates no token
/// series, as before the cache).
#[derive(Debug, Default)]
struct GenAiSeries {
    duration: OnceLock<(Bounded, Histogram)>,
    first_token: OnceLock<(Bounded, Histogram)>,
    token_labels: OnceLock<Bounded>,
    /// Input, output.
    tokens: [OnceLock<Histogram>; 2],
}

/// One GenAI call as [`Metrics::record_genai`] records it; values unbounded.
#[derive(Debug)]
pub struct GenAiCall<'a> {
    pub operation: &'static str,
    pub provider: &'a str,
    pub request_model: &'a str,
    pub response_model: &'a str,
    pub server_address: &'a str,
    pub error_type: &'a str,
    pub seconds: f64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    /// Seconds to the first output of the answer, when some came.
    pub time_to_first_token: Option<f64>,
}

impl GenAiCall<'_> {
    /// The values its series are cached by: each as its label bound would cut it.
    fn series_key(&self) -> [&str; 6] {
        [
            self.operation,
            cut(self.provider, MAX_LABEL_LEN),
            cut(self.request_model, MAX_LABEL_LEN),
            cut(self.response_model, MAX_LABEL_LEN),
            cut(self.server_address, MAX_LABEL_LEN),
            cut(self.error_type, MAX_LABEL_LEN),
        ]
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub backend: String,
    pub status: u16,
    /// The authenticated client's name; empty when client keys are off or the
    /// request was refused. Names come from the keys file, so they are bounded.
    pub client: String,
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

/// The GenAI labels of a metric recorded for successful calls only: no
/// `error_type`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub gen_ai_operation_name: String,
    pub gen_ai_provider_name: String,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    pub server_address: String,
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
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    pub token_usage: Family<TokenLabels, Histogram>,
    pub duration: Family<GenAiLabels, Histogram>,
    pub time_to_first_token: Family<ModelLabels, Histogram>,
    request_bounds: [LabelValues; 2],
    expression_bounds: LabelValues,
    token_bounds: GenAiBounds,
    duration_bounds: GenAiBounds,
    ttft_bounds: GenAiBounds,
    request_series: series::SeriesCache<Counter>,
    genai_series: series::SeriesCache<Arc<GenAiSeries>>,
    /// The OTLP push's instruments, when `OTEL_METRICS_EXPORTER` has `otlp`.
    otlp: Option<otlp::Instruments>,
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
        let access_log_dropped = Counter::default();
        let token_usage = Family::<TokenLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(TOKEN_BUCKETS)) as fn() -> Histogram,
        );
        let duration = Family::<GenAiLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        let time_to_first_token = Family::<ModelLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(TTFT_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "celgate_requests",
            "Proxied requests by route, backend, HTTP status and client",
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
        registry.register(
            "celgate_access_log_dropped",
            "Access-log lines dropped because stdout could not take them fast enough",
            access_log_dropped.clone(),
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
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to the first output of a successful answer, from request arrival (gen_ai.server.time_to_first_token)",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        registry.register_collector(Box::new(Snapshot { export, generation }));
        Metrics {
            registry,
            requests,
            reloads,
            expression_errors,
            secrets_redacted,
            access_log_dropped,
            token_usage,
            duration,
            time_to_first_token,
            request_bounds: Default::default(),
            expression_bounds: LabelValues::default(),
            token_bounds: GenAiBounds::default(),
            duration_bounds: GenAiBounds::default(),
            ttft_bounds: GenAiBounds::default(),
            request_series: Default::default(),
            genai_series: Default::default(),
            otlp: None,
        }
    }

    /// These metrics, also recording the GenAI histograms into `instruments` and
    /// counting the push's `failures`.
    pub fn with_otlp(mut self, instruments: otlp::Instruments, failures: Counter) -> Metrics {
        self.registry.register(
            "celgate_metrics_push_failures",
            "Failed OTLP metrics pushes (the next push carries their values, cumulated)",
            failures,
        );
        self.otlp = Some(instruments);
        self
    }

    /// Counts one proxied request.
    /// `client` needs no bound of its own: names come from the keys file.
    pub fn record_request(&self, route: &str, backend: &str, status: u16, client: &str) {
        let resolve = || self.request_counter(route, backend, status, client);
        let counter = match http::StatusCode::from_u16(status) {
            Ok(code) => {
                let (route, backend) = (cut(route, MAX_LABEL_LEN), cut(backend, MAX_LABEL_LEN));
                let key = [route, backend, code.as_str(), client];
                self.request_series.get(&key, resolve)
            }
            Err(_) => resolve(),
        };
        counter.inc();
    }

    /// The request counter of these values, its labels bounded.
    fn request_counter(&self, route: &str, backend: &str, status: u16, client: &str) -> Counter {
        let [routes, backends] = &self.request_bounds;
        self.requests
            .get_or_create(&RequestLabels {
                route: routes.bound(route),
                backend: backends.bound(backend),
                status,
                client: client.to_owned(),
            })
            .clone()
    }

    /// Counts one run-time failure of the expression of attribute `key`.
    pub fn record_expression_error(&self, key: &str) {
        self.expression_errors
            .get_or_create(&ExpressionLabels {
                attribute: self.expression_bounds.bound(key),
            })
            .inc();
    }

    /// Records a GenAI call's duration, token counts and (successful calls)
    /// time to first token.
    pub fn record_genai(&self, call: &GenAiCall<'_>) {
        let series = self.genai_series.get(&call.series_key(), Arc::default);
        self.record_first_token(call, &series);
        let (b, duration) = series.duration.get_or_init(|| {
            let b = self.duration_bounds.bound(call);
            let h = self.duration.get_or_create(&b.genai_labels(call.operation));
            let h = h.clone();
            (b, h)
        });
        if let Some(o) = &self.otlp {
            o.duration(call.operation, b, call.seconds);
        }
        duration.observe(call.seconds);
        if call.input_tokens.is_none() && call.output_tokens.is_none() {
            return;
        }
        let b = series
            .token_labels
            .get_or_init(|| self.token_bounds.bound(call));
        let kinds = [("input", call.input_tokens), ("output", call.output_tokens)];
        for ((kind, n), histogram) in kinds.into_iter().zip(&series.tokens) {
            let Some(n) = n else { continue };
            if let Some(o) = &self.otlp {
                o.tokens(call.operation, b, kind, n);
            }
            let histogram = histogram.get_or_init(|| {
                let h = self
                    .token_usage
                    .get_or_create(&b.token_labels(call.operation, kind));
                h.clone()
            });
            histogram.observe(n as f64);
        }
    }

    /// `gen_ai.server.time_to_first_token`: for successful responses only, as
    /// the conventions define it.
    fn record_first_token(&self, call: &GenAiCall<'_>, series: &GenAiSeries) {
        let Some(seconds) = call.time_to_first_token else {
            return;
        };
        if !call.error_type.is_empty() {
            return;
        }
        let (b, histogram) = series.first_token.get_or_init(|| {
            let b = self.ttft_bounds.bound(call);
            let h = self
                .time_to_first_token
                .get_or_create(&b.model_labels(call.operation));
            let h = h.clone();
            (b, h)
        });
        if let Some(o) = &self.otlp {
            o.first_token(call.operation, b, seconds);
        }
        histogram.observe(seconds);
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

    fn call(model: &str) -> GenAiCall<'_> {
        GenAiCall {
            operation: "chat",
            provider: "openai",
            request_model: model,
            response_model: model,
            server_address: "api.openai.com",
            error_type: "",
            seconds: 0.1,
            input_tokens: Some(3),
            output_tokens: Some(4),
            time_to_first_token: Some(0.03),
        }
    }

    #[test]
    fn time_to_first_token_is_a_histogram_of_successful_calls() {
        let m = Metrics::new(Arc::new(ExportStats::default()), Arc::new(|| 1));
        m.record_genai(&call("gpt-4o"));
        m.record_genai(&GenAiCall {
            error_type: "stream_cut",
            ..call("gpt-4o")
        });
        m.record_genai(&GenAiCall {
            time_to_first_token: None,
            ..call("gpt-4o")
        });
        let text = m.render();
        let labels = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o\",gen_ai_response_model=\"gpt-4o\",server_address=\"api.openai.com\"";
        assert!(
            text.contains(&format!(
                "gen_ai_server_time_to_first_token_seconds_count{{{labels}}} 1"
            )),
            "{text}"
        );
        // 30 ms falls in the 0.04 s bucket, not the 0.02 s one.
        assert!(text.contains(&format!(
            "gen_ai_server_time_to_first_token_seconds_bucket{{le=\"0.02\",{labels}}} 0"
        )));
        assert!(text.contains(&format!(
            "gen_ai_server_time_to_first_token_seconds_bucket{{le=\"0.04\",{labels}}} 1"
        )));
        assert!(text.contains("le=\"10.0\""), "the semconv boundaries");
    }

    #[test]
    fn client_chosen_label_values_are_cut_and_folded_into_other() {
        let m = Metrics::new(Arc::new(ExportStats::default()), Arc::new(|| 1));
        let small = m.render().len();
        let names: Vec<String> = (0..3000)
            .map(|i| format!("{i:04}-{}", "m".repeat(200)))
            .collect();
        for name in &names {
            m.record_genai(&call(name));
            m.record_request(&format!("/{name}/v1/chat/completions"), "b", 200, "");
        }
        let text = m.render();
        // 100 values per label, each at most 128 bytes, in four families of
        // histograms: about 100 series per family (the request and response
        // model are the same here), not 3,000 (that would be ~100 MB).
        assert!(
            text.len() - small < 4_500_000,
            "/metrics grew by {} bytes",
            text.len() - small
        );
        let first = cut(&names[0], MAX_LABEL_LEN);
        assert!(
            text.contains(&format!(
                "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"{first}\",gen_ai_response_model=\"{first}\",server_address=\"api.openai.com\",error_type=\"\"}} 1"
            )),
            "the first names keep their own series"
        );
        assert!(
            text.contains(&format!(
                "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"other\",gen_ai_response_model=\"other\",server_address=\"api.openai.com\",error_type=\"\"}} {}",
                3000 - MAX_LABEL_VALUES
            )),
            "the rest are counted as `other`"
        );
        assert!(
            !text.contains(&names[0]),
            "values are cut to {MAX_LABEL_LEN} bytes"
        );
        assert!(text.contains("route=\"other\""));
    }

    #[test]
    fn a_repeated_call_counts_in_the_series_its_first_call_resolved() {
        let m = Metrics::new(Arc::new(ExportStats::default()), Arc::new(|| 1));
        let names: Vec<String> = (0..series::MAX_CACHED + 50)
            .map(|i| format!("model-{i}"))
            .collect();
        for _ in 0..2 {
            for name in &names {
                m.record_genai(&call(name));
                m.record_request("/v1/chat/completions", name, 200, "");
            }
        }
        let text = m.render();
        let count = |model: &str| {
            format!(
                "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"{model}\",gen_ai_response_model=\"{model}\",server_address=\"api.openai.com\",error_type=\"\"}}"
            )
        };
        assert!(
            text.contains(&format!("{} 2\n", count("model-0"))),
            "{text}"
        );
        // Past the label bound every call counts as `other`, cached or not (the
        // last 50 names were never cached: the cache was full).
        let others = 2 * (names.len() - MAX_LABEL_VALUES);
        assert!(text.contains(&format!("{} {others}\n", count("other"))));
        assert!(text.contains(&format!(
            "celgate_requests_total{{route=\"/v1/chat/completions\",backend=\"other\",status=\"200\",client=\"\"}} {others}\n"
        )));
    }

    #[test]
    fn a_call_without_tokens_creates_no_token_series() {
        let m = Metrics::new(Arc::new(ExportStats::default()), Arc::new(|| 1));
        let no_tokens = || GenAiCall {
            input_tokens: None,
            output_tokens: None,
            ..call("gpt-4o")
        };
        m.record_genai(&no_tokens());
        m.record_genai(&no_tokens());
        assert!(
            !m.render()
                .contains("gen_ai_client_token_usage_token_count{")
        );
        m.record_genai(&GenAiCall {
            output_tokens: None,
            ..call("gpt-4o")
        });
        let text = m.render();
        assert!(text.contains("gen_ai_token_type=\"input\"} 1"), "{text}");
        assert!(!text.contains("gen_ai_token_type=\"output\""), "{text}");
    }

    #[test]
    fn combinations_of_bounded_labels_are_capped_too() {
        let m = Metrics::new(Arc::new(ExportStats::default()), Arc::new(|| 1));
        // 100 request models × 100 response models: each label within its bound,
        // 10,000 combinations.
        for i in 0..MAX_LABEL_VALUES {
            for j in 0..MAX_LABEL_VALUES {
                let (req, resp) = (format!("req-{i}"), format!("resp-{j}"));
                m.record_genai(&GenAiCall {
                    request_model: &req,
                    response_model: &resp,
                    ..call("")
                });
            }
        }
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("gen_ai_client_operation_duration_seconds_count{"))
            .count();
        assert_eq!(series, MAX_SERIES + 1, "the first {MAX_SERIES} and `other`");
        assert!(text.contains(&format!(
            "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"other\",gen_ai_request_model=\"other\",gen_ai_response_model=\"other\",server_address=\"other\",error_type=\"other\"}} {}",
            MAX_LABEL_VALUES * MAX_LABEL_VALUES - MAX_SERIES
        )));
    }

    #[test]
    fn label_values_are_cut_on_a_character_boundary() {
        let values = LabelValues::default();
        let long = "é".repeat(100);
        let bounded = values.bound(&long);
        assert_eq!(bounded.len(), MAX_LABEL_LEN);
        assert!(long.starts_with(&bounded));
        // A value already seen (here: cut to the same prefix) keeps its series.
        assert_eq!(values.bound(&format!("{bounded}x")), bounded);
    }
}
