//! Self-tests of the integration-test harness in `tests/support/`: the OTLP receiver
//! decodes what a real OTLP exporter sends (gRPC and HTTP), the scripted upstream is
//! usable from sync code and records what it receives, and the gateway launcher parses
//! the binary's readiness line and reports a failed start with its output.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue, Value as OtelValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use serde_json::json;
use support::otlp::{self, Receiver};
use support::{Gateway, Upstream};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";
const PARENT_ID: &str = "a3ce929d0e0e4736";

/// One span with every attribute type, as a gateway would export it.
fn sample_span() -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_750_000_000_000_000_000);
    let mut events = SpanEvents::default();
    events.events.push(Event::new(
        "first_token",
        start + Duration::from_millis(5),
        vec![KeyValue::new("index", 0_i64)],
        0,
    ));
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_hex(TRACE_ID).unwrap(),
            SpanId::from_hex(SPAN_ID).unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "v1")]).unwrap(),
        ),
        parent_span_id: SpanId::from_hex(PARENT_ID).unwrap(),
        parent_span_is_remote: true,
        span_kind: SpanKind::Client,
        name: "chat gpt-4o-mini".into(),
        start_time: start,
        end_time: start + Duration::from_millis(250),
        attributes: vec![
            KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::new("gen_ai.usage.input_tokens", 42_i64),
            KeyValue::new("gen_ai.request.temperature", 0.25_f64),
            KeyValue::new("gen_ai.request.integral_double", 2.0_f64),
            KeyValue::new("llm.is_streaming", true),
            KeyValue::new(
                "gen_ai.response.finish_reasons",
                OtelValue::Array(
                    vec![StringValue::from("stop"), StringValue::from("length")].into(),
                ),
            ),
            KeyValue::new("ints", OtelValue::Array(vec![1_i64, 2, 3].into())),
        ],
        dropped_attributes_count: 3,
        events,
        links: SpanLinks::default(),
        status: Status::error("upstream returned 500"),
        instrumentation_scope: InstrumentationScope::builder("celgate")
            .with_version("0.1.0")
            .build(),
    }
}

fn sample_resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("celgate-harness")
        .with_attributes([KeyValue::new("deployment.environment", "test")])
        .build()
}

/// The decoded form of [`sample_span`] and [`sample_resource`].
fn assert_sample(span: &otlp::Span) {
    assert_eq!(span.trace_id, TRACE_ID);
    assert_eq!(span.span_id, SPAN_ID);
    assert_eq!(span.parent_span_id, PARENT_ID);
    assert_eq!(span.trace_state, "vendor=v1");
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.kind, "CLIENT");
    assert_eq!(span.status_code, "ERROR");
    assert_eq!(span.status_message, "upstream returned 500");
    assert_eq!(span.scope_name, "celgate");
    assert_eq!(span.scope_version, "0.1.0");
    assert_eq!(span.start_unix_nano, 1_750_000_000_000_000_000);
    assert_eq!(span.end_unix_nano, 1_750_000_000_250_000_000);
    // Sampled, and the parent is remote (bits 8 and 9).
    assert_eq!(span.flags, 0x01 | 0x100 | 0x200);
    assert_eq!(span.dropped_attributes_count, 3);
    assert_eq!(
        serde_json::Value::Object(span.attributes.clone()),
        json!({
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 42,
            "gen_ai.request.temperature": 0.25,
            "gen_ai.request.integral_double": 2.0,
            "llm.is_streaming": true,
            "gen_ai.response.finish_reasons": ["stop", "length"],
            "ints": [1, 2, 3]
        })
    );
    // Types survive: an int stays an int, a double stays a double even when integral.
    assert!(span.attr("gen_ai.usage.input_tokens").unwrap().is_i64());
    assert!(
        span.attr("gen_ai.request.integral_double")
            .unwrap()
            .is_f64()
    );
    assert_eq!(span.str_attr("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(span.int_attr("gen_ai.usage.input_tokens"), Some(42));
    assert_eq!(span.resource_str("service.name"), Some("celgate-harness"));
    assert_eq!(span.resource_str("deployment.environment"), Some("test"));
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "first_token");
    assert_eq!(span.events[0].attributes["index"], json!(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_receiver_decodes_a_real_otlp_export() {
    let receiver = Receiver::grpc();
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", "Basic dGVzdDp0ZXN0".parse().unwrap());
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(receiver.endpoint())
        .with_timeout(Duration::from_secs(10))
        .with_metadata(metadata)
        .build()
        .unwrap();
    exporter.set_resource(&sample_resource());
    exporter.export(vec![sample_span()]).await.unwrap();

    let spans = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(spans.len(), 1);
    assert_sample(&spans[0]);
    let exports = receiver.exports();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].path, otlp::GRPC_EXPORT_PATH);
    assert_eq!(exports[0].status, 200);
    assert_eq!(exports[0].spans, 1);
    assert_eq!(
        exports[0].header("Authorization"),
        Some("Basic dGVzdDp0ZXN0")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_receiver_decodes_a_real_otlp_export() {
    let receiver = Receiver::http();
    // Any path ending in /v1/traces is accepted (Langfuse's, for one).
    let url = format!("{}/api/public/otel/v1/traces", receiver.endpoint());
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .with_http_client(
            opentelemetry_http::hyper::HyperClient::with_default_connector(
                Duration::from_secs(10),
                None,
            ),
        )
        .with_headers(HashMap::from([(
            "x-tenant".to_owned(),
            "harness".to_owned(),
        )]))
        .build()
        .unwrap();
    exporter.set_resource(&sample_resource());
    exporter.export(vec![sample_span()]).await.unwrap();

    let spans = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(spans.len(), 1);
    assert_sample(&spans[0]);
    let exports = receiver.exports();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].path, "/api/public/otel/v1/traces");
    assert_eq!(exports[0].status, 200);
    assert_eq!(exports[0].header("x-tenant"), Some("harness"));
    assert_eq!(
        exports[0].header("content-type"),
        Some("application/x-protobuf")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_receiver_rejects_json_and_other_paths() {
    let receiver = Receiver::http();
    let json_export =
        support::post_json(&receiver.traces_url(), &json!({"resourceSpans": []}), &[]).await;
    assert_eq!(json_export.status, 415);
    let elsewhere = support::send(
        http::Method::POST,
        &format!("{}/v1/logs", receiver.endpoint()),
        "",
        &[("content-type", "application/x-protobuf")],
    )
    .await;
    assert_eq!(elsewhere.status, 404);
    let garbage = support::send(
        http::Method::POST,
        &receiver.traces_url(),
        vec![0xff_u8, 0xff, 0xff],
        &[("content-type", "application/x-protobuf")],
    )
    .await;
    assert_eq!(garbage.status, 400);

    // An empty protobuf export is valid: 200 with an encoded response, no spans.
    let empty = support::send(
        http::Method::POST,
        &receiver.traces_url(),
        "",
        &[("content-type", "application/x-protobuf")],
    )
    .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.headers["content-type"], "application/x-protobuf");

    let statuses: Vec<(String, u16)> = receiver
        .exports()
        .into_iter()
        .map(|e| (e.path, e.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("/v1/traces".to_owned(), 415),
            ("/v1/logs".to_owned(), 404),
            ("/v1/traces".to_owned(), 400),
            ("/v1/traces".to_owned(), 200),
        ]
    );
    assert!(receiver.spans().is_empty());
    // Nothing comes: wait_for gives up at its timeout with what it has.
    let started = std::time::Instant::now();
    assert!(receiver.wait_for(1, Duration::from_millis(200)).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn sync_upstream_records_headers_and_bodies() {
    let upstream = Upstream::start();
    assert_eq!(
        upstream.base_url(),
        format!("http://{}/v1", upstream.addr())
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello there"}]
    });
    let reply = runtime.block_on(support::post_json(
        &format!("{}/chat/completions", upstream.base_url()),
        &body,
        &[
            ("authorization", "Bearer sk-backend"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    ));
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "Scripted reply to: Hello there"
    );

    let streamed = runtime.block_on(support::post_stream(
        &format!("{}/chat/completions", upstream.base_url()),
        &json!({"model": "cut-after-3", "messages": [], "stream": true}),
    ));
    assert_eq!(streamed.events().len(), 3);
    assert!(streamed.error.is_some());

    let requests = upstream.wait_for_requests(2, Duration::from_secs(5));
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.header("authorization"), Some("Bearer sk-backend"));
    assert_eq!(
        first.header("TraceParent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.json(), Some(body));
    assert_eq!(requests[1].json().unwrap()["model"], "cut-after-3");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_helpers_can_be_started_and_dropped_inside_an_async_test() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let models = support::get(&format!("{}/models", upstream.base_url())).await;
    assert_eq!(models.status, 200);
    drop(upstream);
    drop(receiver);
}

#[test]
fn listening_lines_are_parsed() {
    use support::parse_listening;
    let addr = |s: &str| Some(s.parse().unwrap());
    assert_eq!(
        parse_listening(
            "2026-11-21T10:00:00Z  INFO celgate: proxy listening on 127.0.0.1:40123",
            "proxy"
        ),
        addr("127.0.0.1:40123")
    );
    // Coloured, as tracing-subscriber prints without NO_COLOR.
    assert_eq!(
        parse_listening(
            "\u{1b}[2m2026-11-21T10:00:00.123456Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m admin listening on 127.0.0.1:9901",
            "admin"
        ),
        addr("127.0.0.1:9901")
    );
    // A JSON log record (CELGATE_LOG_FORMAT=json).
    assert_eq!(
        parse_listening(
            r#"{"timestamp":"2026-11-21T10:00:00Z","level":"INFO","fields":{"message":"proxy listening on [::1]:8080"}}"#,
            "proxy"
        ),
        addr("[::1]:8080")
    );
    assert_eq!(
        parse_listening("admin listening on 127.0.0.1:9901", "proxy"),
        None
    );
    assert_eq!(parse_listening("proxy listening on nowhere", "proxy"), None);
}

#[test]
fn config_yaml_passes_celgate_check() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    for preset in ["jaeger", "langfuse", "phoenix", "openllmetry"] {
        for protocol in ["grpc", "http"] {
            let yaml =
                support::config_yaml(preset, &receiver.endpoint(), protocol, &upstream.base_url());
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, &yaml).unwrap();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_celgate"))
                .arg("check")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{yaml}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_gateway_that_cannot_start_reports_its_output() {
    let error = Gateway::builder("listen: [this is not\n")
        .try_start()
        .expect_err("an invalid config must not start");
    let status = error.status.expect("it exits instead of hanging");
    assert!(!status.success());
    assert!(!error.stderr.is_empty(), "stderr is captured");
    let message = error.to_string();
    assert!(message.contains("exited before it was ready"), "{message}");
    assert!(message.contains(&error.stderr), "{message}");
}

/// The launcher against the real binary: ready once `proxy listening on` is logged,
/// the admin address is parsed too, and SIGTERM ends the process cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_starts_and_stops_on_sigterm() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let mut gateway = Gateway::start(
        &support::config_yaml(
            "phoenix",
            &receiver.endpoint(),
            "http",
            &upstream.base_url(),
        ),
        &[],
    );
    assert!(gateway.base_url().starts_with("http://127.0.0.1:"));
    assert!(gateway.base_url().ends_with("/v1"));
    assert_ne!(gateway.addr().port(), 0);
    let health = support::get(&format!("{}/healthz", gateway.admin_url())).await;
    assert_eq!(health.status, 200, "{}", gateway.stderr());
    assert!(gateway.stderr().contains("proxy listening on"));

    gateway.send_signal(support::Signal::Term);
    let status = gateway.wait_exit(Duration::from_secs(35));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
}

/// The whole chain with the real binary: client → celgate → scripted upstream, span →
/// OTLP receiver, then a clean SIGTERM shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_end_to_end() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let mut gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        support::post_json(
            &format!("{}/chat/completions", gateway.base_url()),
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}),
            &[("authorization", "Bearer sk-client")],
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer from the proxy\n{}", gateway.stderr()));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "Scripted reply to: Hi"
    );

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let expected_key = format!("Bearer {}", support::BACKEND_KEY);
    assert_eq!(
        requests[0].header("authorization"),
        Some(expected_key.as_str())
    );
    assert!(requests[0].header("traceparent").is_some());

    let spans = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(spans.len(), 1, "{}", gateway.stderr());
    assert_eq!(
        spans[0].str_attr("gen_ai.request.model"),
        Some("gpt-4o-mini")
    );

    let health = support::get(&format!("{}/healthz", gateway.admin_url())).await;
    assert_eq!(health.status, 200);
    gateway.send_signal(support::Signal::Term);
    let status = gateway.wait_exit(Duration::from_secs(35));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
}
