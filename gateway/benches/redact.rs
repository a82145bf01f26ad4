//! What masking backend keys costs a response that holds none (the normal case), and
//! one that echoes a key.
//!
//! Run: `cargo bench -p celgate --bench redact`. Each case pushes one whole response
//! through a fresh [`StreamRedactor`] with two realistic keys (a 51-byte `sk-proj-`
//! key and a 32-byte Azure-style hex key), as the proxy does per request:
//! `sse_chat` is a streamed chat answer of 120 `chat.completion.chunk` events
//! (~26 KiB), `json_chat` a 4 KiB JSON answer, `headers` the mask of a typical
//! response's 12 headers. `passthrough_*` runs the same loop without a redactor (what
//! the proxy does when no backend has a key), so the difference is the cost.
//! `passthrough_request_sse_chat` builds a redactor for the request first, with the
//! client's own key added (`authPassthrough`). Results are in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use celgate::redact::Redactor;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};

const KEYS: [&str; 2] = [
    "sk-proj-Zx8Qm2Lr7Vt4Nw9Ks3Hd6Fb1Jc5Pg0Ya2Ue8Io4Wq7Er",
    "3f9c1a7e5b2d4c6a8e0f1b3d5c7a9e2f",
];

fn sse_chunks(echo: bool) -> Vec<Bytes> {
    (0..120)
        .map(|i| {
            let word = if echo && i == 60 { KEYS[0] } else { "word" };
            Bytes::from(format!(
                "data: {{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1750000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_7c2d4b1a\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" {word}{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
            ))
        })
        .collect()
}

fn json_body() -> Vec<Bytes> {
    let content = "The quick brown fox jumps over the lazy dog. ".repeat(80);
    vec![Bytes::from(format!(
        "{{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1750000000,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{content}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":700,\"total_tokens\":710}}}}"
    ))]
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("date", "Sun, 15 Jun 2025 15:06:40 GMT"),
        ("cache-control", "no-cache, must-revalidate"),
        ("openai-organization", "user-abc123"),
        ("openai-processing-ms", "312"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-tokens", "29998852"),
        ("x-request-id", "req_5e8f2c9a1b7d4e6f8a0c2b4d6e8f0a1c"),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("cf-ray", "8f1c2a3b4d5e6f70-AMS"),
        ("alt-svc", "h3=\":443\"; ma=86400"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h
}

/// One response through a fresh stream redactor, as the proxy does per request.
fn through(redactor: &Arc<Redactor>, chunks: &[Bytes]) -> usize {
    let mut stream = redactor.stream();
    let mut out = 0;
    for chunk in chunks {
        out += black_box(stream.push(chunk.clone())).len();
    }
    out + stream.finish().len()
}

/// The same loop without a redactor: what the proxy does when there is no key.
fn plain(chunks: &[Bytes]) -> usize {
    chunks.iter().map(|c| black_box(c.clone()).len()).sum()
}

fn bench(c: &mut Criterion) {
    let keys = Arc::new(Redactor::new(KEYS));
    let sse = sse_chunks(false);
    let echoed = sse_chunks(true);
    let json = json_body();
    let mut g = c.benchmark_group("redact");
    g.bench_function("passthrough_sse_chat", |b| {
        b.iter(|| plain(black_box(&sse)))
    });
    g.bench_function("sse_chat", |b| b.iter(|| through(&keys, black_box(&sse))));
    g.bench_function("sse_chat_echoing_a_key", |b| {
        b.iter(|| through(&keys, black_box(&echoed)))
    });
    g.bench_function("passthrough_json_chat", |b| {
        b.iter(|| plain(black_box(&json)))
    });
    g.bench_function("json_chat", |b| b.iter(|| through(&keys, black_box(&json))));
    let typical = headers();
    g.bench_function("headers", |b| {
        b.iter_batched_ref(
            || typical.clone(),
            |h| keys.mask_headers(h),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("build_per_generation", |b| {
        b.iter(|| Redactor::new(black_box(KEYS)))
    });
    // `authPassthrough`: the generation's keys plus the client's, per request.
    g.bench_function("passthrough_request_sse_chat", |b| {
        b.iter(|| {
            let own = Arc::new(keys.with([black_box("sk-client-own-key-0042")]));
            through(&own, black_box(&sse))
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
