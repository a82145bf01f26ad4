//! Where finished calls go: the span exporter, the metrics, the access log.
//!
//! The observe phase hands each [`Finished`] record to [`Sinks::accept`] and is done
//! with it; each sink takes its own view (linkerd2-proxy style: the trace layer
//! hands a finished span to a sink and knows nothing of what the sink does). None
//! blocks a proxy worker: the exporter queues spans for its own thread, metrics are
//! atomic counters, and the access log hands lines to its writer thread.

pub mod access_log;
pub mod export;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use crate::export::Exporter;
use crate::metrics::Metrics;
use crate::metrics::otlp::Instruments;
use crate::metrics::push::MetricsPush;
use crate::record::Finished;

use self::access_log::AccessLog;

/// The sinks of the process; they own what they write to.
pub struct Sinks {
    pub exporter: Exporter,
    pub metrics: Metrics,
    /// The OTLP metrics push, when `OTEL_METRICS_EXPORTER` has `otlp`.
    pub metrics_push: Option<MetricsPush>,
    pub access_log: AccessLog,
}

impl Sinks {
    /// The sinks, exporting through `exporter` and, if given, pushing metrics
    /// through `push` (recorded into its instruments); the metrics read
    /// `generation` (the generation in service) at each scrape, and the access log
    /// writes to stdout.
    pub fn new(
        exporter: Exporter,
        push: Option<(MetricsPush, Instruments)>,
        generation: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Sinks {
        let mut metrics = Metrics::new(exporter.stats_handle(), generation);
        let mut metrics_push = None;
        if let Some((push, instruments)) = push {
            metrics = metrics.with_otlp(instruments, push.failures());
            metrics_push = Some(push);
        }
        let access_log = AccessLog::stdout(metrics.access_log_dropped.clone());
        Sinks {
            exporter,
            metrics,
            metrics_push,
            access_log,
        }
    }

    /// One finished call, to every sink.
    pub fn accept(&self, record: Finished) {
        self.access_log.accept(&record);
        metrics::accept(&self.metrics, &record);
        export::accept(&self.exporter, record);
    }

    /// The last metrics push, if metrics are pushed; waits about 5 s at most.
    pub fn close_metrics_push(&self) -> bool {
        self.metrics_push.as_ref().is_none_or(MetricsPush::shutdown)
    }

    /// Writes the access-log lines still queued, waiting at most `within` (the
    /// exporter is shut down on its own: it may need longer).
    pub fn close_access_log(&self, within: Duration) -> bool {
        self.access_log.close(within)
    }
}
