//! A backend that echoes its own key (issue 11, "hostile" #4): the real `celgate`
//! binary in front of the scripted upstream's `echo-key-*` scripts, which put the key
//! the gateway sent (`Authorization: Bearer <key>`) into a 401 body, response headers,
//! completion text, a stream split in the middle of the key, an SSE error event and a
//! gzip body.
//!
//! For each: the upstream really sent the key; the client's raw bytes (headers and
//! body) never hold it; the exported span holds it nowhere (attributes, status
//! message, name: the whole decoded span is searched); neither the access log nor the
//! gateway's logs (at `debug`) hold it; and `celgate_secrets_redacted_total` counts
//! every occurrence. The mask has the key's length, so `content-length` stays right.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use http::Method;
use serde_json::Value;
use support::otlp::{Receiver, Span};
use support::{
    BACKEND_KEY, Gateway, Parent, StreamReply, Upstream, chat_body, config_yaml, metric, span_of,
};

/// How long any one client call may take before the test fails instead of hanging.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The counter of masked key occurrences for the test's one backend.
const REDACTED: &str = "celgate_secrets_redacted_total{backend=\"scripted\"}";

/// What one `echo-key-*` request left behind.
struct Echoed {
    reply: StreamReply,
    span: Span,
    upstream: celgate_upstream::RecordedResponse,
    gateway: Gateway,
    /// `celgate_secrets_redacted_total{backend="scripted"}` after the request.
    redacted: f64,
}

fn mask() -> String {
    "*".repeat(BACKEND_KEY.len())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Sends one chat request for `model` through a fresh gateway (Phoenix preset, so the
/// span carries the response body as `output.value`; logs at `debug`).
fn echo(model: &str) -> Echoed {
    echo_with(model, false, &[])
}

/// [`echo`], the backend forwarding the client's own `Authorization` when
/// `passthrough`, the request carrying `headers`.
fn echo_with(model: &str, passthrough: bool, headers: &[(&str, &str)]) -> Echoed {
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let mut config = config_yaml(
        "phoenix",
        &receiver.endpoint(),
        "grpc",
        &upstream.base_url(),
    );
    if passthrough {
        // config_yaml's one backend is the file's last entry.
        config.push_str("    authPassthrough: true\n");
    }
    let gateway = Gateway::start(&config, &[("RUST_LOG", "debug")]);
    let parent = Parent::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the test runtime");
    let url = format!("{}/chat/completions", gateway.base_url());
    let traceparent = parent.traceparent(true);
    let mut headers = headers.to_vec();
    headers.push(("traceparent", traceparent.as_str()));
    let reply = runtime.block_on(async {
        tokio::time::timeout(
            CALL_TIMEOUT,
            support::stream(
                Method::POST,
                &url,
                chat_body(model, "hi").to_string(),
                &headers,
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer to {model} within {CALL_TIMEOUT:?}"))
    });
    let span = span_of(&receiver, &parent.trace_id, model, &gateway);
    let upstream = upstream
        .wait_for_response(1, CALL_TIMEOUT)
        .expect("the upstream finished its answer");
    let metrics = runtime.block_on(support::get(&format!("{}/metrics", gateway.admin_url())));
    let redacted = metric(&metrics.text(), REDACTED).unwrap_or(0.0);
    Echoed {
        reply,
        span,
        upstream,
        gateway,
        redacted,
    }
}

/// The upstream sent the backend key, and it reached no one: not the client (raw
/// header names, values and body), not the span, not the access log or the logs.
fn assert_key_kept_in(e: &Echoed, what: &str) {
    assert_kept_in(e, BACKEND_KEY, what);
}

/// [`assert_key_kept_in`] for any `key`.
fn assert_kept_in(e: &Echoed, key: &str, what: &str) {
    let sent = e
        .upstream
        .headers
        .iter()
        .any(|(n, v)| n.contains(key) || v.contains(key))
        || contains(&e.upstream.body, key);
    assert!(
        sent || e
            .upstream
            .headers
            .iter()
            .any(|(n, _)| n == "content-encoding"),
        "{what}: the script did not echo the key; nothing is tested"
    );
    for (name, value) in &e.reply.headers {
        assert!(
            !contains(name.as_str().as_bytes(), key) && !contains(value.as_bytes(), key),
            "{what}: the client got the key in a header: {name}: {value:?}"
        );
    }
    let body = e.reply.body();
    let compressed = e.reply.headers.contains_key("content-encoding");
    if !compressed {
        assert!(
            !contains(&body, key),
            "{what}: the client got the key in the body: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let span = format!("{:?}", e.span);
    assert!(
        !span.contains(key),
        "{what}: the span holds the key: {span}"
    );
    let stdout = e.gateway.stdout();
    let stderr = e.gateway.stderr();
    assert!(!stdout.contains(key), "{what}: stdout: {stdout}");
    assert!(!stderr.contains(key), "{what}: stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

fn output_value(span: &Span) -> &str {
    span.str_attr("output.value").unwrap_or_default()
}

#[test]
fn a_401_body_quoting_the_key_is_masked_for_client_and_span() {
    let e = echo("echo-key-401");
    assert_key_kept_in(&e, "401 body");
    assert_eq!(e.reply.status.as_u16(), 401);
    let body: Value = serde_json::from_slice(&e.reply.body()).expect("still JSON");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&mask()), "{message}");
    assert_eq!(
        e.reply.body().len(),
        e.upstream.body.len(),
        "same-length mask"
    );
    assert!(output_value(&e.span).contains(&mask()), "{:?}", e.span);
    assert_eq!(e.redacted, 1.0);
}

#[test]
fn response_headers_echoing_the_key_are_masked_or_dropped() {
    let e = echo("echo-key-header");
    assert_key_kept_in(&e, "headers");
    let echoed = e
        .reply
        .headers
        .get("x-echoed-authorization")
        .and_then(|v| v.to_str().ok());
    assert_eq!(echoed, Some(format!("Bearer {}", mask()).as_str()));
    assert!(
        !e.reply
            .headers
            .keys()
            .any(|n| n.as_str().starts_with("x-key-")),
        "a header named after the key is dropped: {:?}",
        e.reply.headers
    );
    // One in a value, one in a name.
    assert_eq!(e.redacted, 2.0);
}

#[test]
fn completion_text_echoing_the_key_is_masked_and_the_length_still_fits() {
    let e = echo("echo-key-text");
    assert_key_kept_in(&e, "completion text");
    assert_eq!(e.reply.error, None, "content-length still matches the body");
    let length = e
        .reply
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    assert_eq!(length, Some(e.reply.body().len()));
    let body: Value = serde_json::from_slice(&e.reply.body()).expect("still JSON");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("Scripted reply to: my key is {}", mask())
    );
    assert!(output_value(&e.span).contains(&mask()), "{:?}", e.span);
    assert_eq!(e.redacted, 1.0);
}

#[test]
fn a_key_split_across_stream_chunks_is_still_masked() {
    let e = echo("echo-key-stream");
    assert_key_kept_in(&e, "split stream");
    assert_eq!(e.reply.error, None);
    let content: String = e
        .reply
        .events()
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, format!("Scripted reply to: my key is {}", mask()));
    assert_eq!(e.reply.body().len(), e.upstream.body.len());
    assert!(e.reply.body().ends_with(b"data: [DONE]\n\n"));
    assert_eq!(e.redacted, 1.0);
}

#[test]
fn an_sse_error_event_quoting_the_key_is_masked_in_the_status_message() {
    let e = echo("echo-key-sse-error");
    assert_key_kept_in(&e, "SSE error event");
    assert_eq!(e.span.status_code, "ERROR", "{:?}", e.span);
    assert_eq!(e.span.str_attr("error.type"), Some("stream_error"));
    assert!(
        e.span.status_message.contains(&mask()),
        "{}",
        e.span.status_message
    );
    assert_eq!(e.redacted, 1.0);
}

#[test]
fn a_gzip_body_reaches_the_client_as_sent_and_the_span_masked() {
    let e = echo("echo-key-gzip");
    assert_key_kept_in(&e, "gzip body");
    // Documented: compressed bytes are not rewritten (the client gets what the
    // backend sent); the span reads the decompressed body, masked.
    assert_eq!(e.reply.body(), e.upstream.body);
    assert!(output_value(&e.span).contains(&mask()), "{:?}", e.span);
    assert_eq!(e.redacted, 1.0);
}

#[test]
fn a_normal_answer_is_not_touched() {
    let e = echo("gpt-4o");
    assert_eq!(e.reply.body(), e.upstream.body);
    assert_eq!(e.redacted, 0.0);
}

#[test]
fn with_auth_passthrough_the_clients_own_key_is_masked_too() {
    let own = "sk-client-own-key-0042";
    let authorization = format!("Bearer {own}");
    let e = echo_with(
        "echo-key-401",
        true,
        &[("authorization", authorization.as_str())],
    );
    assert!(
        contains(&e.upstream.body, own),
        "the upstream got and echoed the client's key"
    );
    assert_kept_in(&e, own, "passthrough 401 body");
    assert!(output_value(&e.span).contains(&"*".repeat(own.len())));
    assert_eq!(e.redacted, 1.0);
}
