//! Metrics exports as the [`Receiver`](super::Receiver) keeps them: each export
//! call with its data points flattened into readable [`Point`]s (histograms, sums
//! and gauges; the GenAI metrics are histograms).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde_json::{Map, Value};

use super::{ExportCall, attributes};

/// One data point of one metric, as received.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub metric: String,
    pub unit: String,
    /// `histogram`, `sum`, `gauge` or `other`.
    pub kind: &'static str,
    /// OTLP's `AggregationTemporality`: 1 delta, 2 cumulative (0 for a gauge).
    pub temporality: i32,
    /// Typed like a span's attributes.
    pub attributes: Map<String, Value>,
    pub resource: Map<String, Value>,
    pub scope_name: String,
    /// Histograms: the count and sum; sums and gauges: count 0 and the value.
    pub count: u64,
    pub sum: f64,
    pub bucket_counts: Vec<u64>,
    pub explicit_bounds: Vec<f64>,
    pub start_unix_nano: u64,
    pub time_unix_nano: u64,
}

impl Point {
    /// Attribute `key` when it is a string.
    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
}

/// One metrics export call and its points.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsExport {
    /// Path, headers, status (`spans` is 0).
    pub call: ExportCall,
    pub points: Vec<Point>,
}

/// Flattens an export request into [`Point`]s.
pub fn decode(request: &ExportMetricsServiceRequest) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for sm in &rm.scope_metrics {
            let scope_name = sm
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for metric in &sm.metrics {
                let point = |kind| Point {
                    metric: metric.name.clone(),
                    unit: metric.unit.clone(),
                    kind,
                    temporality: 0,
                    attributes: Map::new(),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    count: 0,
                    sum: 0.0,
                    bucket_counts: Vec::new(),
                    explicit_bounds: Vec::new(),
                    start_unix_nano: 0,
                    time_unix_nano: 0,
                };
                out.extend(points(metric.data.as_ref(), point));
            }
        }
    }
    out
}

/// The points of one metric's data; `blank` makes a point of a kind with the
/// metric's name, unit, resource and scope.
fn points(data: Option<&Data>, blank: impl Fn(&'static str) -> Point) -> Vec<Point> {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
    let number = |v: &Option<N>| match v {
        Some(N::AsDouble(d)) => *d,
        Some(N::AsInt(i)) => *i as f64,
        None => 0.0,
    };
    match data {
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| Point {
                temporality: h.aggregation_temporality,
                attributes: attributes(&p.attributes),
                count: p.count,
                sum: p.sum.unwrap_or_default(),
                bucket_counts: p.bucket_counts.clone(),
                explicit_bounds: p.explicit_bounds.clone(),
                start_unix_nano: p.start_time_unix_nano,
                time_unix_nano: p.time_unix_nano,
                ..blank("histogram")
            })
            .collect(),
        Some(Data::Sum(s)) => s
            .data_points
            .iter()
            .map(|p| Point {
                temporality: s.aggregation_temporality,
                attributes: attributes(&p.attributes),
                sum: number(&p.value),
                start_unix_nano: p.start_time_unix_nano,
                time_unix_nano: p.time_unix_nano,
                ..blank("sum")
            })
            .collect(),
        Some(Data::Gauge(g)) => g
            .data_points
            .iter()
            .map(|p| Point {
                attributes: attributes(&p.attributes),
                sum: number(&p.value),
                time_unix_nano: p.time_unix_nano,
                ..blank("gauge")
            })
            .collect(),
        Some(_) => vec![blank("other")],
        None => Vec::new(),
    }
}
