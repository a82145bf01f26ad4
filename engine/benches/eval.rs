//! Per-request evaluation and config-compile benchmarks.
//!
//! Run: `cargo bench -p celgate-engine --bench eval`. Bars (from the issue): the full
//! Phoenix preset <= 10 µs per request, Jaeger without content <= 3 µs, compiling all
//! four presets <= 5 ms. Results and the machine they ran on are in BENCHMARKS.md.
//! Every case evaluates the same realistic exchange, `celgate_engine::fixture::
//! bookshop_chat` (shared with the tests and fuzz targets).
//!
//! The benches allocate with mimalloc, as the `celgate` binary does: an evaluation
//! allocates its attributes' strings, and its time depends on the allocator.

use std::hint::black_box;
use std::time::Duration;

use celgate_engine::fixture::bookshop_chat;
use celgate_engine::{LoadOptions, TracingPlan, load};
use criterion::{Criterion, criterion_group};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The seed Phoenix config from the agentgateway docs (snake_case aliases).
const SEED_PHOENIX: &str = r#"config:
  tracing:
    otlpEndpoint: http://localhost:4317
    randomSampling: true
    fields:
      add:
        span.name: '"openai.chat"'
        openinference.span.kind: '"LLM"'
        llm.system: "llm.provider"
        llm.input_messages: 'flatten_recursive(llm.prompt.map(c, {"message": c}))'
        llm.output_messages: 'flatten_recursive(llm.completion.map(c, {"role":"assistant", "content": c}))'
        llm.token_count.completion: "llm.output_tokens"
        llm.token_count.prompt: "llm.input_tokens"
        llm.token_count.total: "llm.total_tokens"
"#;

/// The floor: one plain field access.
const SINGLE_FIELD: &str = r#"config:
  tracing:
    fields:
      add:
        gen_ai.request.model: llm.requestModel
"#;

const PRESETS: [&str; 4] = ["phoenix", "jaeger", "langfuse", "openllmetry"];

fn preset_config(name: &str) -> String {
    format!("config:\n  tracing:\n    preset: {name}\n")
}

fn plan(yaml: &str) -> TracingPlan {
    let loaded = load(yaml, &LoadOptions::default()).expect("bench config loads");
    loaded.plan
}

fn evaluate(c: &mut Criterion) {
    let ex = bookshop_chat();
    let cases: Vec<(&str, String)> = vec![
        ("phoenix", preset_config("phoenix")),
        ("jaeger_no_content", preset_config("jaeger")),
        ("langfuse", preset_config("langfuse")),
        ("openllmetry", preset_config("openllmetry")),
        ("seed_phoenix", SEED_PHOENIX.to_owned()),
        ("single_field", SINGLE_FIELD.to_owned()),
    ];
    let mut g = c.benchmark_group("evaluate");
    for (name, yaml) in &cases {
        let plan = plan(yaml);
        // A bench that silently measures an error path would be meaningless.
        let rec = plan.evaluate(&ex);
        assert!(
            rec.errors.is_empty(),
            "{name}: runtime errors {:?}",
            rec.errors
        );
        assert!(!rec.attributes.is_empty(), "{name}: no attributes");
        g.bench_function(*name, |b| b.iter(|| plan.evaluate(black_box(&ex))));
    }
    g.finish();
}

fn compile(c: &mut Criterion) {
    let configs: Vec<String> = PRESETS.iter().map(|p| preset_config(p)).collect();
    let mut g = c.benchmark_group("compile");
    // One iteration = four loads (parse YAML, merge preset, compile every
    // expression). Loading again what was loaded before (a reload, a preset
    // used by several configs) takes compiled expressions from the engine's
    // cache: that is `all_four_presets`. `all_four_presets_cold` empties the
    // cache first, so every expression goes through the `cel` parser.
    g.bench_function("all_four_presets", |b| {
        b.iter(|| {
            for yaml in &configs {
                black_box(load(black_box(yaml), &LoadOptions::default()).unwrap());
            }
        })
    });
    g.bench_function("all_four_presets_cold", |b| {
        b.iter(|| {
            for yaml in &configs {
                celgate_engine::compile::clear_cache();
                black_box(load(black_box(yaml), &LoadOptions::default()).unwrap());
            }
        })
    });
    g.finish();
}

fn config() -> Criterion {
    // The machine is shared: keep the whole run to a couple of minutes.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = evaluate, compile }

/// `CELGATE_PROFILE=CASE:N` runs one case N times without criterion, for
/// `valgrind --tool=callgrind` (instruction counts are repeatable on a noisy
/// machine, timings are not). CASE is an `evaluate` case, `compile` or
/// `compile_cold`.
fn profile(spec: &str) {
    let (case, n) = spec.split_once(':').unwrap_or((spec, "1000"));
    let n: usize = n.parse().expect("CELGATE_PROFILE=CASE:N");
    if case == "compile" || case == "compile_cold" {
        let configs: Vec<String> = PRESETS.iter().map(|p| preset_config(p)).collect();
        for _ in 0..n {
            for yaml in &configs {
                if case == "compile_cold" {
                    celgate_engine::compile::clear_cache();
                }
                black_box(load(black_box(yaml), &LoadOptions::default()).unwrap());
            }
        }
        return;
    }
    let yaml = match case {
        "jaeger_no_content" => preset_config("jaeger"),
        "seed_phoenix" => SEED_PHOENIX.to_owned(),
        "single_field" => SINGLE_FIELD.to_owned(),
        preset => preset_config(preset),
    };
    let plan = plan(&yaml);
    let ex = bookshop_chat();
    for _ in 0..n {
        black_box(plan.evaluate(black_box(&ex)));
    }
}

fn main() {
    if let Ok(spec) = std::env::var("CELGATE_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
