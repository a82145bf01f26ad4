//! The metrics sink: a finished call as request counters, expression errors and
//! the GenAI client metrics. Label values are bounded by [`Metrics`]' methods (a
//! backend that accepts any model name, `models: ["*"]`, lets clients choose them).

use crate::metrics::Metrics;
use crate::record::Finished;

/// Records `record` in `metrics`.
pub fn accept(metrics: &Metrics, record: &Finished) {
    metrics.record_request(
        &record.route,
        record.backend.as_deref().unwrap_or(""),
        record.status(),
        record.client_name(),
    );
    for key in record.expression_errors() {
        metrics.record_expression_error(key);
    }
    if let Some(call) = record.genai_call() {
        metrics.record_genai(&call);
    }
}
