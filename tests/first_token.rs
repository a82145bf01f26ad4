//! Time to first token outside the span: the access log's `ttft` (text, last and
//! only when set) and `ttft_ms` (JSON), and the Prometheus histogram
//! `gen_ai.server.time_to_first_token`, both the same measurement as the span's
//! `llm.timeToFirstToken`, through the real binary.

#[path = "support/mod.rs"]
mod support;

use serde_json::{Map, Value};
use support::calls::{post_stream, runtime};
use support::otlp::Receiver;
use support::{Gateway, Parent, SPAN_TIMEOUT, Upstream, chat_body, get, metric, span_of, streamed};

/// The scripted model whose streamed answers are cut after three events.
const CUT: &str = "cut-after-3";

fn config(format: &str, receiver: &Receiver, upstream: &Upstream) -> String {
    let base = support::config_yaml("jaeger", &receiver.endpoint(), "http", &upstream.base_url());
    // The span carries the variable, so the log can be checked against it.
    let base = base.replace(
        "    randomSampling: true\n",
        "    randomSampling: true\n    fields:\n      add:\n        test.ttft: llm.timeToFirstToken\n",
    );
    format!("{base}server:\n  accessLog:\n    format: {format}\n")
}

/// One streamed call of `model`: its access-log line and its span's TTFT (ms).
fn call(gateway: &Gateway, receiver: &Receiver, model: &str) -> (String, Option<f64>) {
    let parent = Parent::new();
    let tp = parent.traceparent(true);
    let rt = runtime();
    let body = streamed(chat_body(model, "Stream please"));
    let reply = rt.block_on(post_stream(
        &gateway.base_url(),
        "/chat/completions",
        &body,
        &[("traceparent", tp.as_str())],
    ));
    assert_eq!(reply.status, 200);
    let span = span_of(receiver, &parent.trace_id, model, gateway);
    let line = gateway
        .wait_for_stdout(&span.trace_id, SPAN_TIMEOUT)
        .unwrap_or_else(|| panic!("no access-log line for {model}\n{}", gateway.stdout()));
    (line, span.attr("test.ttft").and_then(Value::as_f64))
}

#[test]
fn the_text_access_log_ends_with_the_spans_time_to_first_token() {
    let (upstream, receiver) = (Upstream::start(), Receiver::http());
    let gateway = Gateway::start(&config("text", &receiver, &upstream), &[]);
    let (line, ttft) = call(&gateway, &receiver, "gpt-4o-mini");
    let ttft = ttft.expect("a streamed answer has a first token");
    let last = line.split_whitespace().last().unwrap_or_default();
    assert_eq!(last, format!("ttft={ttft:.0}ms"), "{line}");
    let duration: f64 = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("duration=")?.strip_suffix("ms"))
        .and_then(|d| d.parse().ok())
        .expect("a duration");
    assert!(
        ttft.round() <= duration,
        "first token after the end: {line}"
    );

    // A call that failed before any output has no `ttft` field at all.
    let rt = runtime();
    let reply = rt.block_on(post_stream(
        &gateway.base_url(),
        "/chat/completions",
        &chat_body("error-500", "Hi"),
        &[],
    ));
    assert_eq!(reply.status, 500);
    let line = gateway
        .wait_for_stdout("error=500", SPAN_TIMEOUT)
        .unwrap_or_else(|| panic!("no line for the 500\n{}", gateway.stdout()));
    assert!(!line.contains("ttft="), "{line}");
}

#[test]
fn the_json_access_log_carries_it_as_a_number() {
    let (upstream, receiver) = (Upstream::start(), Receiver::http());
    let gateway = Gateway::start(&config("json", &receiver, &upstream), &[]);
    let (line, ttft) = call(&gateway, &receiver, "gpt-4o-mini");
    let fields: Map<String, Value> =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let logged = fields["ttft_ms"].as_f64().expect("ttft_ms is a number");
    let ttft = ttft.expect("a streamed answer has a first token");
    assert!((logged - ttft).abs() < 0.001, "{logged} vs span {ttft}");
}

#[test]
fn the_histogram_counts_successful_answers_with_the_genai_labels() {
    let (upstream, receiver) = (Upstream::start(), Receiver::http());
    let gateway = Gateway::start(&config("json", &receiver, &upstream), &[]);
    for model in ["gpt-4o-mini", "gpt-4o-mini", CUT] {
        let (_, ttft) = call(&gateway, &receiver, model);
        assert!(ttft.is_some(), "{model}: output came before any cut");
    }
    let address = upstream.addr().ip().to_string();
    let labels = |model: &str| {
        format!(
            "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"{model}\",gen_ai_response_model=\"{model}\",server_address=\"{address}\""
        )
    };
    let text = runtime()
        .block_on(get(&format!("{}/metrics", gateway.admin_url())))
        .text();
    let count = |model: &str| {
        metric(
            &text,
            &format!(
                "gen_ai_server_time_to_first_token_seconds_count{{{}}}",
                labels(model)
            ),
        )
    };
    assert_eq!(count("gpt-4o-mini"), Some(2.0), "{text}");
    // The cut stream had a first token but did not succeed: not counted.
    assert_eq!(count(CUT), None, "{text}");
    let ten_seconds = format!(
        "gen_ai_server_time_to_first_token_seconds_bucket{{le=\"10.0\",{}}}",
        labels("gpt-4o-mini")
    );
    assert!(
        metric(&text, &ten_seconds).is_some(),
        "semconv buckets: {text}"
    );
}
