//! The OTLP metrics push (`OTEL_METRICS_EXPORTER`) through the real binary: after a
//! chat and a streamed call against the scripted upstream, a real OTLP receiver gets
//! the GenAI histograms with the semantic conventions' names, units, attributes and
//! bucket boundaries, over gRPC and OTLP/HTTP; the metrics variables override the
//! generic ones and the config's collector, headers arrive, secrets stay out of the
//! log and `/config`; `none` pushes nothing and turns `/metrics` off; a graceful
//! shutdown pushes what was recorded last; a reload follows the config's collector;
//! a bad value stops the start with a message naming the variable.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::Value;
use support::answer::{answer_from_json, answer_from_stream};
use support::calls::{post, post_stream, runtime};
use support::otlp::{GRPC_METRICS_PATH, Point, Protocol, Receiver, ReceiverOptions};
use support::{
    Gateway, SPAN_TIMEOUT, Signal, Upstream, chat_body, config_without_endpoint, get, metric,
    streamed,
};

/// `gen_ai.client.token.usage` boundaries, as the GenAI semantic conventions advise.
const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// `gen_ai.client.operation.duration` boundaries (seconds).
const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token` boundaries (seconds).
const TTFT_BOUNDS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How long the pushed points may take to arrive (the push runs every 100 ms).
const PUSH_TIMEOUT: Duration = Duration::from_secs(15);

const MODEL: &str = "gpt-4o-mini";

/// The token counts of the calls made, as their answers reported them.
#[derive(Debug, Default)]
struct Sent {
    input: i64,
    output: i64,
    response_model: String,
}

/// One chat and one streamed chat of [`MODEL`]; their usage, summed.
fn two_calls(gateway: &Gateway) -> Sent {
    let rt = runtime();
    let reply = rt.block_on(post(
        &gateway.base_url(),
        "/chat/completions",
        &chat_body(MODEL, "Hi"),
        &[],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let chat = answer_from_json(&reply.text());
    let response_model = reply.json()["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stream = rt.block_on(post_stream(
        &gateway.base_url(),
        "/chat/completions",
        &streamed(chat_body(MODEL, "Stream please")),
        &[],
    ));
    assert_eq!(stream.status, 200);
    let streamed = answer_from_stream(&stream.events());
    Sent {
        input: chat.prompt_tokens + streamed.prompt_tokens,
        output: chat.completion_tokens.unwrap_or_default()
            + streamed.completion_tokens.unwrap_or_default(),
        response_model,
    }
}

/// A point of `metric` for [`MODEL`] (and `token_type`, if given) with at least
/// `count` observations.
fn point_of<'a>(
    metric: &'a str,
    token_type: Option<&'a str>,
    count: u64,
) -> impl Fn(&Point) -> bool + 'a {
    move |p| {
        p.metric == metric
            && p.str_attr("gen_ai.request.model") == Some(MODEL)
            && token_type.is_none_or(|t| p.str_attr("gen_ai.token.type") == Some(t))
            && p.count >= count
    }
}

/// Waits for the point `matches` picks; fails with what did arrive.
fn wait_point(receiver: &Receiver, what: &str, matches: impl Fn(&Point) -> bool) -> Point {
    receiver
        .wait_for_point(PUSH_TIMEOUT, matches)
        .map(|(p, _)| p)
        .unwrap_or_else(|| {
            panic!(
                "no {what} within {PUSH_TIMEOUT:?}; received: {:#?}",
                receiver.metrics_exports()
            )
        })
}

/// The GenAI attributes every point of these calls carries, and only those.
fn assert_genai_attributes(p: &Point, sent: &Sent, extra: &[(&str, &str)]) {
    let mut want = serde_json::Map::new();
    for (k, v) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", MODEL),
        ("gen_ai.response.model", sent.response_model.as_str()),
        ("server.address", "127.0.0.1"),
    ]
    .iter()
    .chain(extra)
    {
        want.insert((*k).to_owned(), Value::String((*v).to_owned()));
    }
    assert_eq!(p.attributes, want, "{}", p.metric);
}

/// Checks the three histograms a receiver got for [`two_calls`]' `sent`.
fn assert_genai_histograms(receiver: &Receiver, sent: &Sent) {
    let usage = "gen_ai.client.token.usage";
    let input = wait_point(
        receiver,
        "input token usage",
        point_of(usage, Some("input"), 2),
    );
    let output = wait_point(
        receiver,
        "output token usage",
        point_of(usage, Some("output"), 2),
    );
    assert_eq!(
        (input.count, input.sum),
        (2, sent.input as f64),
        "{input:?}"
    );
    assert_eq!(
        (output.count, output.sum),
        (2, sent.output as f64),
        "{output:?}"
    );
    for (p, kind) in [(&input, "input"), (&output, "output")] {
        assert_eq!((p.kind, p.unit.as_str()), ("histogram", "{token}"));
        assert_eq!(p.explicit_bounds, TOKEN_BOUNDS);
        assert_eq!(p.bucket_counts.len(), TOKEN_BOUNDS.len() + 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 2);
        assert_eq!(p.temporality, 2, "cumulative");
        assert_genai_attributes(p, sent, &[("gen_ai.token.type", kind)]);
        assert_eq!(
            p.resource.get("service.name"),
            Some(&Value::from("celgate"))
        );
        assert_eq!(p.scope_name, "celgate");
    }
    let duration = "gen_ai.client.operation.duration";
    let d = wait_point(receiver, duration, point_of(duration, None, 2));
    assert_eq!((d.count, d.unit.as_str()), (2, "s"));
    assert_eq!(d.explicit_bounds, DURATION_BOUNDS);
    assert!(d.sum > 0.0, "{d:?}");
    // Both calls succeeded: no `error.type`.
    assert_genai_attributes(&d, sent, &[]);
    let ttft = "gen_ai.server.time_to_first_token";
    let t = wait_point(receiver, ttft, point_of(ttft, None, 1));
    assert_eq!(t.unit, "s");
    assert_eq!(t.explicit_bounds, TTFT_BOUNDS);
    assert!(t.sum > 0.0 && t.sum <= d.sum, "{t:?} vs {d:?}");
    assert_genai_attributes(&t, sent, &[]);
}

#[test]
fn genai_histograms_reach_a_grpc_collector_with_the_semconv_boundaries_and_headers() {
    let (upstream, receiver) = (Upstream::start(), Receiver::grpc());
    // No endpoint variable: metrics go to the config's trace collector.
    let config = support::config_yaml(
        "openllmetry",
        &receiver.endpoint(),
        "grpc",
        &upstream.base_url(),
    );
    let gateway = Gateway::start(
        &config,
        &[
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-collector-team=gate%20keepers",
            ),
        ],
    );
    let sent = two_calls(&gateway);
    assert_genai_histograms(&receiver, &sent);
    let (_, call) = receiver
        .wait_for_point(PUSH_TIMEOUT, |p| p.metric == "gen_ai.client.token.usage")
        .expect("a token usage export");
    assert_eq!(call.path, GRPC_METRICS_PATH);
    assert_eq!(call.header("x-collector-team"), Some("gate keepers"));
    // `otlp` alone: the pull endpoint is off, and says which variable did it.
    let rt = runtime();
    let reply = rt.block_on(get(&format!("{}/metrics", gateway.admin_url())));
    assert_eq!(reply.status, 404);
    let text = reply.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("OTEL_METRICS_EXPORTER is `otlp`"), "{text}");
}

#[test]
fn over_http_metrics_go_to_v1_metrics_beside_the_traces_and_match_the_scrape() {
    let (upstream, receiver) = (Upstream::start(), Receiver::http());
    let config = support::config_yaml(
        "openllmetry",
        &receiver.endpoint(),
        "http",
        &upstream.base_url(),
    );
    let gateway = Gateway::start(
        &config,
        &[
            ("OTEL_METRICS_EXPORTER", "otlp,prometheus"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ],
    );
    let sent = two_calls(&gateway);
    assert_genai_histograms(&receiver, &sent);
    let exports = receiver.metrics_exports();
    assert!(
        exports.iter().all(|e| e.call.path == "/v1/metrics"),
        "{exports:#?}"
    );
    assert!(
        receiver.wait_for(2, SPAN_TIMEOUT).len() >= 2,
        "the spans still arrive on /v1/traces"
    );
    // Both exporters: the scrape counts what the push counts.
    let rt = runtime();
    let scrape = rt.block_on(get(&format!("{}/metrics", gateway.admin_url())));
    assert_eq!(scrape.status, 200);
    let series = format!(
        "gen_ai_client_token_usage_token_sum{{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"{MODEL}\",gen_ai_response_model=\"{}\",server_address=\"127.0.0.1\",gen_ai_token_type=\"output\"}}",
        sent.response_model
    );
    assert_eq!(
        metric(&scrape.text(), &series),
        Some(sent.output as f64),
        "{}",
        scrape.text()
    );
}

#[test]
fn the_metrics_variables_override_the_generic_ones_and_their_secrets_stay_hidden() {
    let upstream = Upstream::start();
    let (generic, metrics) = (Receiver::http(), Receiver::http());
    let url = format!("{}/collector/v1/metrics", metrics.endpoint());
    let mut gateway = Gateway::start(
        &config_without_endpoint(&upstream),
        &[
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &generic.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-generic=1,authorization=Bearer generic-token",
            ),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &url),
            (
                "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                "authorization=Bearer metrics-token-77",
            ),
        ],
    );
    let sent = two_calls(&gateway);
    assert_genai_histograms(&metrics, &sent);
    let exports = metrics.metrics_exports();
    for e in &exports {
        // The signal-specific URL is used as given.
        assert_eq!(e.call.path, "/collector/v1/metrics");
        assert_eq!(
            e.call.header("authorization"),
            Some("Bearer metrics-token-77")
        );
        assert_eq!(e.call.header("x-generic"), Some("1"));
    }
    // The generic collector gets the spans, and no metrics at all.
    assert!(generic.wait_for(2, SPAN_TIMEOUT).len() >= 2);
    assert!(
        support::wait_until(PUSH_TIMEOUT, || metrics.metrics_exports().len()
            >= exports.len() + 2),
        "the push goes on"
    );
    assert!(generic.metrics_exports().is_empty());
    let trace_auth: Vec<_> = generic
        .exports()
        .iter()
        .map(|e| e.header("authorization").map(str::to_owned))
        .collect();
    assert!(
        trace_auth
            .iter()
            .all(|a| a.as_deref() == Some("Bearer generic-token")),
        "the metrics header stays with the metrics: {trace_auth:?}"
    );
    let rt = runtime();
    let config = rt.block_on(get(&format!("{}/config", gateway.admin_url())));
    let shown = config.json();
    assert_eq!(
        shown["metrics"]["otlp"]["endpoint"].as_str(),
        Some(url.as_str()),
        "{shown:#}"
    );
    assert_eq!(shown["metrics"]["otlp"]["headers"]["authorization"], "***");
    gateway.send_signal(Signal::Term);
    gateway
        .wait_exit(Duration::from_secs(30))
        .expect("celgate exits on SIGTERM");
    for text in [config.text(), gateway.stderr(), gateway.stdout()] {
        assert!(!text.contains("metrics-token-77"), "{text}");
    }
}

#[test]
fn none_pushes_nothing_not_even_at_shutdown_and_turns_metrics_off() {
    let (upstream, receiver) = (Upstream::start(), Receiver::grpc());
    let config = support::config_yaml(
        "openllmetry",
        &receiver.endpoint(),
        "grpc",
        &upstream.base_url(),
    );
    let mut gateway = Gateway::start(
        &config,
        &[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "50"),
        ],
    );
    two_calls(&gateway);
    assert!(
        receiver.wait_for(2, SPAN_TIMEOUT).len() >= 2,
        "spans are exported"
    );
    let rt = runtime();
    let reply = rt.block_on(get(&format!("{}/metrics", gateway.admin_url())));
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.text(),
        "/metrics is off: OTEL_METRICS_EXPORTER is `none`, which has no `prometheus`\n"
    );
    // A graceful stop pushes what was recorded, when there is a push (the next
    // test): here there is none.
    gateway.send_signal(Signal::Term);
    let status = gateway
        .wait_exit(Duration::from_secs(30))
        .expect("celgate exits on SIGTERM");
    assert!(status.success(), "{status}\n{}", gateway.stderr());
    assert_eq!(receiver.metrics_exports(), []);
}

#[test]
fn a_graceful_shutdown_pushes_what_was_recorded_since_the_last_interval() {
    let (upstream, receiver) = (Upstream::start(), Receiver::grpc());
    let config = support::config_yaml(
        "openllmetry",
        &receiver.endpoint(),
        "grpc",
        &upstream.base_url(),
    );
    // The default interval (60 s): the only push in this test is the last one.
    let mut gateway = Gateway::start(&config, &[("OTEL_METRICS_EXPORTER", "otlp")]);
    let sent = two_calls(&gateway);
    gateway.send_signal(Signal::Term);
    let status = gateway
        .wait_exit(Duration::from_secs(30))
        .expect("celgate exits on SIGTERM");
    assert!(status.success(), "{status}\n{}", gateway.stderr());
    let (input, _) = receiver
        .wait_for_point(
            Duration::ZERO,
            point_of("gen_ai.client.token.usage", Some("input"), 2),
        )
        .unwrap_or_else(|| {
            panic!(
                "nothing pushed at shutdown: {:#?}\n{}",
                receiver.metrics_exports(),
                gateway.stderr()
            )
        });
    assert_eq!(input.sum, sent.input as f64);
}

#[test]
fn a_reload_moves_the_push_with_the_configs_collector() {
    let upstream = Upstream::start();
    let (first, second) = (Receiver::http(), Receiver::http());
    let config = |r: &Receiver| {
        support::config_yaml("openllmetry", &r.endpoint(), "http", &upstream.base_url())
    };
    let gateway = Gateway::start(
        &config(&first),
        &[
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ],
    );
    let sent = two_calls(&gateway);
    wait_point(
        &first,
        "the first collector's usage",
        point_of("gen_ai.client.token.usage", Some("input"), 2),
    );
    std::fs::write(gateway.config_path(), config(&second)).expect("rewrite config.yaml");
    gateway
        .wait_for_stderr("metrics push now goes to", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no reload of the push\n{}", gateway.stderr()));
    // The values recorded before the reload move along: the push is cumulative.
    let input = wait_point(
        &second,
        "the second collector's usage",
        point_of("gen_ai.client.token.usage", Some("input"), 2),
    );
    assert_eq!(input.sum, sent.input as f64);
}

#[test]
fn a_dead_collector_is_counted_logged_once_and_fails_no_request() {
    let upstream = Upstream::start();
    let dead = format!("http://127.0.0.1:{}", support::closed_port());
    let gateway = Gateway::start(
        &config_without_endpoint(&upstream),
        &[
            ("OTEL_METRICS_EXPORTER", "otlp,prometheus"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "50"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &dead),
        ],
    );
    let rt = runtime();
    let failures = || {
        let scrape = rt.block_on(get(&format!("{}/metrics", gateway.admin_url())));
        metric(&scrape.text(), "celgate_metrics_push_failures_total").unwrap_or_default()
    };
    // Requests keep being answered while the push keeps failing.
    let mut rounds = 0;
    while failures() < 3.0 {
        two_calls(&gateway);
        rounds += 1;
        assert!(
            rounds < 500,
            "the push never failed three times\n{}",
            gateway.stderr()
        );
    }
    let warnings = gateway.stderr().matches("metrics push to").count();
    assert_eq!(
        warnings,
        1,
        "failures are logged once:\n{}",
        gateway.stderr()
    );
}

#[test]
fn a_collector_that_never_answers_holds_the_exit_a_few_seconds_at_most() {
    let upstream = Upstream::start();
    let silent = Receiver::with(
        Protocol::Grpc,
        ReceiverOptions {
            delay: Duration::from_secs(120),
            ..ReceiverOptions::default()
        },
    );
    let mut gateway = Gateway::start(
        &config_without_endpoint(&upstream),
        &[
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &silent.endpoint()),
            // Neither timeout ends the last push within a minute.
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "60000"),
            ("OTEL_METRIC_EXPORT_TIMEOUT", "60000"),
        ],
    );
    two_calls(&gateway);
    gateway.send_signal(Signal::Term);
    let status = gateway
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30 s after SIGTERM\n{}", gateway.stderr()));
    assert!(status.success(), "{status}\n{}", gateway.stderr());
    assert!(
        gateway.stderr().contains("the last metrics push to"),
        "the unfinished push is logged\n{}",
        gateway.stderr()
    );
}

#[test]
fn a_bad_value_stops_the_start_naming_the_variable() {
    let upstream = Upstream::start();
    for (var, value) in [
        ("OTEL_METRICS_EXPORTER", "otlp,statsd"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
    ] {
        let mut builder = Gateway::builder(&config_without_endpoint(&upstream)).env(var, value);
        if var != "OTEL_METRICS_EXPORTER" {
            builder = builder.env("OTEL_METRICS_EXPORTER", "otlp");
        }
        let error = builder.try_start().expect_err("a bad value is refused");
        assert_eq!(error.status.and_then(|s| s.code()), Some(1), "{error}");
        assert!(
            error.stderr.contains(&format!("{var} is `{value}`")),
            "{var}: {}",
            error.stderr
        );
    }
}
