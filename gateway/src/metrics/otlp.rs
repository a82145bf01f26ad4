//! The GenAI metrics as OTel instruments, for the OTLP push: the same three
//! histograms `/metrics` has (`gen_ai.client.token.usage`,
//! `gen_ai.client.operation.duration`, `gen_ai.server.time_to_first_token`), with
//! the semantic conventions' names, units, attributes and the same explicit bucket
//! boundaries. [`Metrics`](super::Metrics) records into both from one call, with the
//! attribute values it has already bounded, so the push has the same label bounds
//! as the Prometheus families. An empty value (no response model, no error) is
//! left out rather than sent as `""`, as OTel attributes are meant to be.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};

use super::{Bounded, DURATION_BUCKETS, TOKEN_BUCKETS, TTFT_BUCKETS};

/// The push's instruments; recording aggregates in memory (the reader's thread
/// collects).
pub struct Instruments {
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
}

impl Instruments {
    pub fn new(meter: &Meter) -> Instruments {
        Instruments {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            time_to_first_token: meter
                .f64_histogram("gen_ai.server.time_to_first_token")
                .with_unit("s")
                .with_description(
                    "Time to the first output of a successful answer, from request arrival",
                )
                .with_boundaries(TTFT_BUCKETS.to_vec())
                .build(),
        }
    }

    /// `gen_ai.client.operation.duration`, with `error.type` when the call failed.
    pub(super) fn duration(&self, operation: &'static str, b: &Bounded, seconds: f64) {
        let mut attrs = attributes(operation, b);
        push(&mut attrs, "error.type", &b.error_type);
        self.duration.record(seconds, &attrs);
    }

    /// `gen_ai.client.token.usage` of one `kind` (`input`, `output`).
    pub(super) fn tokens(&self, operation: &'static str, b: &Bounded, kind: &'static str, n: i64) {
        let mut attrs = attributes(operation, b);
        attrs.push(KeyValue::new("gen_ai.token.type", kind));
        self.token_usage.record(n.max(0) as u64, &attrs);
    }

    /// `gen_ai.server.time_to_first_token` (successful calls only: no `error.type`).
    pub(super) fn first_token(&self, operation: &'static str, b: &Bounded, seconds: f64) {
        self.time_to_first_token
            .record(seconds, &attributes(operation, b));
    }
}

/// The attributes every GenAI instrument carries.
fn attributes(operation: &'static str, b: &Bounded) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(7);
    attrs.push(KeyValue::new("gen_ai.operation.name", operation));
    push(&mut attrs, "gen_ai.provider.name", &b.provider);
    push(&mut attrs, "gen_ai.request.model", &b.request_model);
    push(&mut attrs, "gen_ai.response.model", &b.response_model);
    push(&mut attrs, "server.address", &b.server_address);
    attrs
}

fn push(attrs: &mut Vec<KeyValue>, key: &'static str, value: &str) {
    if !value.is_empty() {
        attrs.push(KeyValue::new(key, value.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::ExportStats;
    use crate::metrics::{GenAiCall, Metrics};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
    use std::sync::{Arc, Mutex};

    /// `(metric name, boundaries, [(sorted attributes, count, sum)])` of one
    /// collection.
    type Histograms = Vec<(String, Vec<f64>, Vec<(Vec<String>, u64, f64)>)>;

    /// Keeps the last collection it was handed, summarised.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Histograms>>);

    impl PushMetricExporter for Capture {
        async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
            *self.0.lock().unwrap() = histograms(metrics);
            Ok(())
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: std::time::Duration) -> OTelSdkResult {
            Ok(())
        }
        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    /// A provider whose reader collects on `force_flush`, into a [`Capture`].
    fn provider() -> (SdkMeterProvider, Capture) {
        let capture = Capture::default();
        let reader = PeriodicReader::builder(capture.clone()).build();
        (
            SdkMeterProvider::builder().with_reader(reader).build(),
            capture,
        )
    }

    fn collected(provider: &SdkMeterProvider, capture: &Capture) -> Histograms {
        provider.force_flush().unwrap();
        capture.0.lock().unwrap().clone()
    }

    fn call<'a>(model: &'a str, error_type: &'a str) -> GenAiCall<'a> {
        GenAiCall {
            operation: "chat",
            provider: "openai",
            request_model: model,
            response_model: model,
            server_address: "api.openai.com",
            error_type,
            seconds: 0.1,
            input_tokens: Some(3),
            output_tokens: Some(4),
            time_to_first_token: Some(0.03),
        }
    }

    fn histograms(metrics: &ResourceMetrics) -> Histograms {
        let mut out = Vec::new();
        for scope in metrics.scope_metrics() {
            for metric in scope.metrics() {
                let mut bounds = Vec::new();
                let mut points = Vec::new();
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            bounds = p.bounds().collect();
                            points.push((attrs(p.attributes()), p.count(), p.sum()));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            bounds = p.bounds().collect();
                            points.push((attrs(p.attributes()), p.count(), p.sum() as f64));
                        }
                    }
                    _ => panic!("{} is not a histogram", metric.name()),
                }
                points.sort_by(|a, b| a.0.cmp(&b.0));
                out.push((metric.name().to_owned(), bounds, points));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn attrs<'a>(kvs: impl Iterator<Item = &'a KeyValue>) -> Vec<String> {
        let mut out: Vec<String> = kvs.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        out.sort();
        out
    }

    #[test]
    fn one_call_is_recorded_in_both_with_the_same_bounds() {
        let (provider, capture) = provider();
        let metrics = Metrics::new(Arc::new(ExportStats::default()), Arc::new(|| 1)).with_otlp(
            Instruments::new(&provider.meter("test")),
            Default::default(),
        );
        metrics.record_genai(&call("gpt-4o", ""));
        metrics.record_genai(&call("gpt-4o", "stream_cut"));
        let got = collected(&provider, &capture);
        let names: Vec<&str> = got.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "gen_ai.client.operation.duration",
                "gen_ai.client.token.usage",
                "gen_ai.server.time_to_first_token"
            ]
        );
        let base = [
            "gen_ai.operation.name=chat",
            "gen_ai.provider.name=openai",
            "gen_ai.request.model=gpt-4o",
            "gen_ai.response.model=gpt-4o",
            "server.address=api.openai.com",
        ];
        let with = |extra: &str| {
            let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            v.push(extra.to_owned());
            v.sort();
            v
        };
        let (_, bounds, points) = &got[0];
        assert_eq!(bounds, &DURATION_BUCKETS.to_vec());
        let ok: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            points,
            &vec![
                (with("error.type=stream_cut"), 1, 0.1),
                (ok.clone(), 1, 0.1)
            ]
        );
        let (_, bounds, points) = &got[1];
        assert_eq!(bounds, &TOKEN_BUCKETS.to_vec());
        assert_eq!(
            points,
            &vec![
                (with("gen_ai.token.type=input"), 2, 6.0),
                (with("gen_ai.token.type=output"), 2, 8.0)
            ]
        );
        let (_, bounds, points) = &got[2];
        assert_eq!(bounds, &TTFT_BUCKETS.to_vec());
        assert_eq!(points, &vec![(ok, 1, 0.03)], "successful calls only");
    }

    #[test]
    fn values_past_the_bounds_are_other_in_the_push_too() {
        let (provider, capture) = provider();
        let metrics = Metrics::new(Arc::new(ExportStats::default()), Arc::new(|| 1)).with_otlp(
            Instruments::new(&provider.meter("test")),
            Default::default(),
        );
        let names: Vec<String> = (0..300).map(|i| format!("m-{i}")).collect();
        for name in &names {
            metrics.record_genai(&call(name, ""));
        }
        let got = collected(&provider, &capture);
        let (_, _, points) = &got[0];
        assert_eq!(points.len(), crate::metrics::MAX_LABEL_VALUES + 1);
        let other = points
            .iter()
            .find(|p| p.0.contains(&"gen_ai.request.model=other".to_owned()))
            .expect("an `other` series");
        assert_eq!(other.1, 300 - crate::metrics::MAX_LABEL_VALUES as u64);
    }
}
