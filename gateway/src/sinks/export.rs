//! The export sink: a finished, sampled call encoded as an OTLP span on the
//! request's thread and queued with the [`Exporter`] (which never blocks; see
//! `crate::export`).

use crate::export::Exporter;
use crate::export::otlp::{SpanParts, encode_span};
use crate::record::Finished;

/// Queues the span of `record`, if it was sampled.
pub fn accept(exporter: &Exporter, record: Finished) {
    if let Some(span) = &record.span {
        exporter.submit(encode_span(&SpanParts {
            record: span,
            ids: &record.ids,
            start: record.start_time,
            end: record.end_time,
            error: record.status_message.as_deref(),
        }));
    }
}
