//! Where spans go: a dead or silent collector never fails a request, and the standard
//! `OTEL_EXPORTER_OTLP_*` variables alone make the gateway export (gRPC and
//! OTLP/HTTP).

#[path = "support/mod.rs"]
mod support;

use support::calls::{post, post_stream, runtime};
use support::otlp::Receiver;
use support::{
    Gateway, SPAN_TIMEOUT, Upstream, chat_body, closed_port, config_without_endpoint, streamed,
};

// ---------------------------------------------------------------------------------------
// 6. A dead collector never fails a request
// ---------------------------------------------------------------------------------------

#[test]
fn an_unreachable_collector_never_fails_a_request() {
    let upstream = Upstream::start();
    let rt = runtime();
    // A collector that accepts connections (the kernel completes them: backlog) but
    // never reads or answers, for as long as the test runs.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the black hole");
    let blackhole_port = blackhole.local_addr().unwrap().port();
    for (protocol, port) in [
        ("grpc", closed_port()),
        ("http", closed_port()),
        ("grpc", blackhole_port),
        ("http", blackhole_port),
    ] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let gateway = Gateway::start(
            &support::config_yaml("phoenix", &endpoint, protocol, &upstream.base_url()),
            &[],
        );
        let proxy = gateway.base_url();
        let statuses = rt.block_on(async {
            let mut statuses = Vec::new();
            for i in 0..20 {
                let body = if i % 2 == 0 {
                    chat_body("gpt-4o-mini", &format!("call {i}"))
                } else {
                    streamed(chat_body("gpt-4o-mini", &format!("call {i}")))
                };
                let reply = post_stream(&proxy, "/chat/completions", &body, &[]).await;
                assert_eq!(reply.error, None);
                statuses.push(reply.status.as_u16());
            }
            statuses
        });
        assert_eq!(statuses, [200; 20], "{protocol} to port {port}");
        if port != blackhole_port {
            // The spans were really built and sent somewhere dead (not disabled).
            assert!(
                gateway
                    .wait_for_stderr("span export to", SPAN_TIMEOUT)
                    .is_some(),
                "{protocol}: no export failure logged\n{}",
                gateway.stderr()
            );
        }
    }
    drop(blackhole);
}

// ---------------------------------------------------------------------------------------
// 7. The standard OTEL_EXPORTER_OTLP_* variables
// ---------------------------------------------------------------------------------------

fn exports_to(receiver: &Receiver, env: &[(&str, &str)]) {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config_without_endpoint(&upstream), env);
    let rt = runtime();
    let reply = rt.block_on(post(
        &gateway.base_url(),
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi"),
        &[],
    ));
    assert_eq!(reply.status, 200);
    let spans = receiver.wait_for(1, SPAN_TIMEOUT);
    assert_eq!(spans.len(), 1, "{env:?}\n{}", gateway.stderr());
    assert_eq!(spans[0].name, "openai.chat");
}

#[test]
fn otel_exporter_otlp_endpoint_alone_exports_over_grpc() {
    let receiver = Receiver::grpc();
    exports_to(
        &receiver,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())],
    );
}

#[test]
fn otel_exporter_otlp_endpoint_with_http_protobuf_exports_over_http() {
    let receiver = Receiver::http();
    exports_to(
        &receiver,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    let exports = receiver.exports();
    assert!(
        exports
            .iter()
            .all(|e| e.path == "/v1/traces" && e.status == 200),
        "{exports:?}"
    );
}
