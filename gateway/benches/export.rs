//! What exporting a span costs celgate's threads: encoding it as OTLP protobuf on the
//! request's thread, and framing a batch of them on the export thread.
//!
//! Run: `cargo bench -p celgate --bench export`. The span is the phoenix preset's
//! for the engine benches' exchange (`celgate_engine::fixture::bookshop_chat`: a
//! 10-message chat with its raw request and response bodies), content on.
//! `encode_span/phoenix_chat` times `export::otlp::encode_span` of it, as the span
//! sink calls it once per request; `batch_frame/512_spans` times
//! `BatchFrame::encode` of a full default batch (512 such spans) into a reused
//! buffer, as the export thread does per request to the collector (a phoenix span of
//! this chat is ~6.8 KB, so the exporter itself would cut such a batch at
//! `MAX_EXPORT_BYTES`, 3 MiB, after ~460 spans; 512 is the batch-size bound). Results are in
//! BENCHMARKS.md. The bench checks first that the span carries the preset's
//! attributes and that the batch holds every span's bytes, so it cannot time an
//! empty path.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use celgate::export::otlp::{BatchFrame, SpanParts, encode_span};
use celgate::trace_context::SpanIds;
use celgate_engine::fixture::bookshop_chat;
use celgate_engine::{AttrValue, LoadOptions, SpanRecord, load};
use criterion::{Criterion, criterion_group, criterion_main};

/// The default `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
const BATCH: usize = 512;

fn phoenix_record() -> SpanRecord {
    let loaded = load(
        "config:\n  tracing:\n    preset: phoenix\n",
        &LoadOptions::default(),
    )
    .expect("the phoenix preset loads");
    let record = loaded.plan.evaluate(&bookshop_chat());
    assert!(
        record.errors.is_empty(),
        "runtime errors {:?}",
        record.errors
    );
    assert!(
        record.attributes.len() > 20,
        "only {} attributes",
        record.attributes.len()
    );
    record
}

fn resource() -> Vec<(String, AttrValue)> {
    [
        ("service.name", "celgate"),
        ("service.version", env!("CARGO_PKG_VERSION")),
        ("telemetry.sdk.name", "celgate"),
        ("telemetry.sdk.language", "rust"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), AttrValue::String(v.to_owned())))
    .collect()
}

fn bench(c: &mut Criterion) {
    let record = phoenix_record();
    let ids = SpanIds::new(None);
    let start = SystemTime::now();
    let parts = SpanParts {
        record: &record,
        ids: &ids,
        start,
        end: start + Duration::from_millis(420),
        error: None,
    };
    let span = encode_span(&parts);
    assert!(span.len() > 2000, "a {}-byte span", span.len());
    c.bench_function("encode_span/phoenix_chat", |b| {
        b.iter(|| encode_span(black_box(&parts)))
    });

    let spans: Vec<Vec<u8>> = (0..BATCH).map(|_| span.clone()).collect();
    let frame = BatchFrame::new(&resource());
    let mut out = Vec::new();
    frame.encode(spans.iter().map(Vec::as_slice), 5, &mut out);
    assert!(out.len() > BATCH * span.len(), "a {}-byte batch", out.len());
    eprintln!(
        "a phoenix span is {} bytes, a batch of {BATCH} {} bytes",
        span.len(),
        out.len()
    );
    c.bench_function("batch_frame/512_spans", |b| {
        b.iter(|| {
            frame.encode(black_box(spans.iter().map(Vec::as_slice)), 5, &mut out);
            black_box(out.len())
        })
    });
}

fn config() -> Criterion {
    // The machine is shared: keep the run short.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
