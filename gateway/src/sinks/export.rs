//! The export sink: a finished, sampled call as an OTel span, queued with the
//! [`Exporter`] (which never blocks; see `crate::export`).

use std::time::SystemTime;

use celgate_engine::{SpanKind, SpanRecord, SpanStatus};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::export::Exporter;
use crate::record::Finished;
use crate::trace_context::SpanIds;

/// Queues the span of `record`, if it was sampled.
pub fn accept(exporter: &Exporter, record: Finished) {
    if let Some(span) = record.span {
        exporter.submit(span_data(
            span,
            &record.ids,
            record.start_time,
            record.end_time,
            record.status_message,
        ));
    }
}

/// The instrumentation scope of every span, built once.
static SCOPE: std::sync::LazyLock<InstrumentationScope> = std::sync::LazyLock::new(|| {
    InstrumentationScope::builder("celgate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// The engine's record as an OTel span.
fn span_data(
    record: SpanRecord,
    ids: &SpanIds,
    start: SystemTime,
    end: SystemTime,
    error: Option<String>,
) -> SpanData {
    let span_context = SpanContext::new(
        ids.trace_id,
        ids.span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let status = record.status;
    let attributes = record
        .attributes
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, crate::export::otel_value(v)))
        .collect();
    SpanData {
        span_context,
        parent_span_id: ids.parent.map_or(SpanId::INVALID, |p| p.span_id),
        parent_span_is_remote: ids.parent.is_some(),
        span_kind: match record.kind {
            SpanKind::Client => opentelemetry::trace::SpanKind::Client,
            SpanKind::Server => opentelemetry::trace::SpanKind::Server,
            SpanKind::Internal => opentelemetry::trace::SpanKind::Internal,
            SpanKind::Producer => opentelemetry::trace::SpanKind::Producer,
            SpanKind::Consumer => opentelemetry::trace::SpanKind::Consumer,
        },
        name: record.name.into(),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: record.dropped_attributes as u32,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match (error, status) {
            (Some(message), _) => opentelemetry::trace::Status::error(message),
            (None, SpanStatus::Ok) => opentelemetry::trace::Status::Ok,
            (None, SpanStatus::Error) => {
                opentelemetry::trace::Status::error("marked failed by the span.status expression")
            }
            (None, SpanStatus::Unset) => opentelemetry::trace::Status::Unset,
        },
        instrumentation_scope: SCOPE.clone(),
    }
}
