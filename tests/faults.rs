//! Fault harness: the real `celgate` binary in front of the scripted upstream's fault
//! scripts and in front of failing collectors, each test a pass/fail verdict.
//!
//! `tests/gateway.rs` already covers upstream 500/429, refused, a hung backend's timeout,
//! a cut stream, a slow drip, clients going away, a dead and a black-holed collector (a
//! few sequential calls each) and SIGTERM mid-stream. This file covers what those leave
//! out:
//!
//! 1. upstream faults: a TCP reset mid-stream, a malformed SSE stream, an error event
//!    mid-stream, a 200 that is not JSON, gzip answers (plain and streamed) the gateway
//!    was not asking for, 10 MiB answers (plain and streamed), a stream that stalls
//!    (cut by a short `idleTimeout`; let through by the default one). For each: the
//!    client gets byte for byte what the upstream sent, or a clean error; the span
//!    says what went wrong; the gateway logs no panic, lets go of every upstream
//!    exchange, and its file descriptors return to where they were;
//! 2. collector faults under load: down (then back on the same port), black-holed and
//!    slow, over gRPC and OTLP/HTTP: every request succeeds within a bound while the
//!    export fails or hangs, and `/metrics` counts the dropped spans;
//! 3. a config reload storm under load: 100 Kubernetes-style updates in 10 s, no
//!    failed request, the last config in service, reload counters that add up, no
//!    descriptor growth;
//! 4. hostile sizes (issue 11): thousands of long model names against `/metrics`, a
//!    5 MiB model name and a batch over the collector's 4 MiB limit against export, a
//!    quadratic expression on a 6,000-message request against the proxy's latency.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use celgate_upstream::{RecordedResponse, ResponseEnd};
use http::Method;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::otlp::{Protocol, Receiver, ReceiverOptions, Span};
use support::{
    BACKEND_KEY_ENV, Gateway, OpenFd, Parent, SPAN_TIMEOUT, StreamReply, Upstream,
    assert_error_span, assert_ok_span, chat_body, closed_port, describe_fds, metric, span_of,
    streamed, wait_until,
};

/// How long any one client call may take before the test fails instead of hanging.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the gateway may take to let go of connections and descriptors.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Held by each test that puts the gateway under load (collector faults, reload
/// storm): on 2 cores, two such tests at once would measure each other's CPU use, not
/// the gateway's latency. The lighter tests still run alongside.
fn one_load_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOAD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the test runtime")
}

/// `POST {base}/chat/completions` with `body` and a `traceparent` of `parent`,
/// recording the answer frame by frame.
async fn call(base: &str, body: &Value, parent: &Parent) -> StreamReply {
    let url = format!("{base}/chat/completions");
    let traceparent = parent.traceparent(true);
    tokio::time::timeout(
        CALL_TIMEOUT,
        support::stream(
            Method::POST,
            &url,
            body.to_string(),
            &[("traceparent", traceparent.as_str())],
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("no complete answer from {url} within {CALL_TIMEOUT:?}"))
}

/// The gateway's descriptors that stay whatever the traffic: everything but
/// connections to `upstream_port` (pooled, they live until the upstream closes them)
/// and accepted client connections (closing asynchronously after a client hangs up).
fn steady_fds(gateway: &Gateway, upstream_port: u16, own_ports: &[u16]) -> Vec<OpenFd> {
    gateway
        .open_fds()
        .into_iter()
        .filter(|f| match f.tcp {
            Some(t) if t.remote_port == upstream_port => false,
            Some(t) if own_ports.contains(&t.local_port) && t.state != "LISTEN" => false,
            _ => true,
        })
        .collect()
}

/// Waits until the gateway holds no more descriptors than `baseline` (after the
/// upstream went away, so pooled connections must close too); fails listing both.
fn assert_fds_back_to(gateway: &Gateway, baseline: &[OpenFd], what: &str) {
    let mut now = Vec::new();
    let settled = wait_until(SETTLE_TIMEOUT, || {
        now = gateway.open_fds();
        now.len() <= baseline.len()
    });
    assert!(
        settled,
        "{what}: the gateway holds {} descriptors {SETTLE_TIMEOUT:?} after the traffic ended, {} before it\n--- now ---\n{}--- before ---\n{}",
        now.len(),
        baseline.len(),
        describe_fds(&now),
        describe_fds(baseline)
    );
}

fn assert_no_panic(gateway: &Gateway) {
    let stderr = gateway.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the gateway panicked:\n{stderr}"
    );
}

/// The upstream's answer to the request that carried `parent`'s trace (the gateway
/// forwards a `traceparent` in the same trace).
fn upstream_answer(upstream: &Upstream, parent: &Parent) -> RecordedResponse {
    let seq = upstream
        .requests()
        .iter()
        .position(|r| {
            r.header("traceparent")
                .is_some_and(|tp| tp.contains(&parent.trace_id))
        })
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("trace {} never reached the upstream", parent.trace_id));
    upstream
        .wait_for_response(seq, SETTLE_TIMEOUT)
        .unwrap_or_else(|| panic!("the upstream never finished answering request {seq}"))
}

/// The client got exactly the bytes the upstream sent.
fn assert_same_bytes(what: &str, client: &StreamReply, upstream: &RecordedResponse) {
    let got = client.body();
    if got != upstream.body {
        let at = got
            .iter()
            .zip(upstream.body.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(upstream.body.len()));
        panic!(
            "{what}: the client got {} bytes, the upstream sent {}; first difference at byte {at}\nclient:   {:?}\nupstream: {:?}",
            got.len(),
            upstream.body.len(),
            String::from_utf8_lossy(&got[at.saturating_sub(40)..(at + 40).min(got.len())]),
            String::from_utf8_lossy(
                &upstream.body[at.saturating_sub(40)..(at + 40).min(upstream.body.len())]
            ),
        );
    }
}

fn header<'a>(reply: &'a StreamReply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

fn finish_reasons(span: &Span) -> Option<Vec<String>> {
    span.attr("gen_ai.response.finish_reasons")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
}

// ---------------------------------------------------------------------------------------
// 1. Upstream faults
// ---------------------------------------------------------------------------------------

#[test]
fn upstream_faults_get_a_faithful_answer_or_a_clean_error_and_leave_nothing_open() {
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let base = upstream.base_url();
    let refused_port = closed_port();
    let config = format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {endpoint}
    otlpProtocol: grpc
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: refused
    provider: openai
    baseUrl: http://127.0.0.1:{refused_port}/v1
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"refused-*\"]
  - name: impatient
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"hang\"]
    timeout: 500ms
  - name: fidgety
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"stall-30000\"]
    idleTimeout: 500ms
  - name: scripted
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
",
        endpoint = receiver.endpoint(),
    );
    let gateway = Gateway::start(&config, &[]);
    let proxy = gateway.base_url();
    let admin_port = gateway
        .admin_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("admin port");
    let own_ports = [gateway.addr().port(), admin_port];
    let rt = runtime();

    // Warm up (the exporter connects on its first export), then note what the
    // gateway holds at rest.
    let warm = Parent::new();
    let reply = rt.block_on(call(&proxy, &chat_body("gpt-4o-mini", "warm up"), &warm));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body())
    );
    span_of(&receiver, &warm.trace_id, "warm-up", &gateway);
    let baseline = steady_fds(&gateway, upstream.addr().port(), &own_ports);

    let text = "héllo wörld, ünïcode ✓ splits";
    let cases: Vec<(&str, Value)> = vec![
        ("reset", streamed(chat_body("reset-after-3", "Hi"))),
        ("malformed", chat_body("malformed-sse", text)),
        ("sse-error", chat_body("sse-error", "Hi")),
        ("invalid-json", chat_body("invalid-json", "Hi")),
        ("gzip", chat_body("gzip", "Compress me")),
        (
            "gzip-stream",
            streamed(chat_body("gzip", "Compress me too")),
        ),
        ("big", chat_body("big-10", "Big")),
        ("big-stream", streamed(chat_body("big-10", "Big stream"))),
        ("stall-cut", streamed(chat_body("stall-30000", "Hi"))),
        (
            "stall-ok",
            streamed(chat_body("stall-2000", "Slow but fine")),
        ),
        ("refused", chat_body("refused-model", "Hi")),
        ("hang", chat_body("hang", "Hi")),
    ];
    let parents: Vec<Parent> = cases.iter().map(|_| Parent::new()).collect();
    let started = Instant::now();
    let replies: Vec<(StreamReply, Duration)> = rt.block_on(async {
        let calls = cases.iter().zip(&parents).map(|((_, body), parent)| {
            let proxy = proxy.clone();
            let body = body.clone();
            let parent = parent.clone();
            tokio::spawn(async move {
                let reply = call(&proxy, &body, &parent).await;
                (reply, started.elapsed())
            })
        });
        let mut replies = Vec::new();
        for handle in calls.collect::<Vec<_>>() {
            replies.push(handle.await.expect("a client task"));
        }
        replies
    });
    let get = |name: &str| {
        let i = cases.iter().position(|(n, _)| *n == name).unwrap();
        (&replies[i].0, replies[i].1, &parents[i])
    };
    let span = |name: &str| span_of(&receiver, &get(name).2.trace_id, name, &gateway);

    // A TCP reset after 3 events: the client gets those 3 and a broken body.
    let (reset, _, parent) = get("reset");
    let sent = upstream_answer(&upstream, parent);
    assert_eq!(sent.end, ResponseEnd::Reset);
    assert_eq!(reset.status, 200);
    assert_same_bytes("reset", reset, &sent);
    assert_eq!(reset.events().len(), 3, "{:?}", reset.events());
    assert!(
        reset.error.is_some(),
        "the client must see the reset as a broken body, not as a complete one"
    );
    let reset_span = span("reset");
    assert_error_span(&reset_span, "stream_cut");
    assert!(
        reset_span
            .status_message
            .to_ascii_lowercase()
            .contains("reset"),
        "the span should say the connection was reset: {:?}",
        reset_span.status_message
    );

    // Garbage around good events: passed on untouched; the span keeps what the good
    // events said and says the stream was malformed.
    let (malformed, _, parent) = get("malformed");
    let sent = upstream_answer(&upstream, parent);
    assert_eq!(sent.end, ResponseEnd::Complete);
    assert_eq!(malformed.status, 200);
    assert_eq!(malformed.error, None);
    assert_same_bytes("malformed-sse", malformed, &sent);
    let malformed_span = span("malformed");
    assert_error_span(&malformed_span, "invalid_response");
    assert!(
        malformed_span.status_message.contains("not JSON"),
        "{}",
        malformed_span.status_message
    );
    let seq = sent.seq;
    assert_eq!(
        malformed_span.str_attr("gen_ai.response.id"),
        Some(format!("chatcmpl-scripted{seq}").as_str()),
        "the good events were still read: {malformed_span:#?}"
    );
    assert_eq!(
        finish_reasons(&malformed_span),
        Some(vec!["stop".to_owned()])
    );

    // An error event mid-stream, then a clean end.
    let (sse_error, _, parent) = get("sse-error");
    let sent = upstream_answer(&upstream, parent);
    assert_eq!(sse_error.status, 200);
    assert_eq!(sse_error.error, None, "the body itself ended cleanly");
    assert_same_bytes("sse-error", sse_error, &sent);
    let error_span = span("sse-error");
    assert_error_span(&error_span, "stream_error");
    assert!(
        error_span.status_message.contains("failed mid-stream"),
        "the span carries the backend's message: {:?}",
        error_span.status_message
    );

    // A 200 whose body is not JSON: the client gets it as it is, framed the same.
    let (invalid, _, parent) = get("invalid-json");
    let sent = upstream_answer(&upstream, parent);
    assert_eq!(invalid.status, 200);
    assert_eq!(invalid.error, None);
    assert_same_bytes("invalid-json", invalid, &sent);
    let length = sent.body.len().to_string();
    assert_eq!(header(invalid, "content-length"), Some(length.as_str()));
    assert!(serde_json::from_slice::<Value>(&invalid.body()).is_err());
    assert_error_span(&span("invalid-json"), "invalid_response");

    // gzip although the gateway asked for no encoding: the compressed bytes and their
    // header reach the client untouched, and the span reads through them.
    for name in ["gzip", "gzip-stream"] {
        let (reply, _, parent) = get(name);
        let sent = upstream_answer(&upstream, parent);
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.error, None, "{name}");
        assert_eq!(header(reply, "content-encoding"), Some("gzip"), "{name}");
        // The whole body keeps its length; the stream stays chunked.
        let length = sent.body.len().to_string();
        let want = (name == "gzip").then_some(length.as_str());
        assert_eq!(header(reply, "content-length"), want, "{name}");
        assert_same_bytes(name, reply, &sent);
        let gz_span = span(name);
        assert_ok_span(&gz_span);
        let seq = sent.seq;
        assert_eq!(
            gz_span.str_attr("gen_ai.response.id"),
            Some(format!("chatcmpl-scripted{seq}").as_str()),
            "{name}: the span did not read the compressed answer: {gz_span:#?}"
        );
        assert_eq!(finish_reasons(&gz_span), Some(vec!["stop".to_owned()]));
        // "Scripted reply to: Compress me" / "... too": 5 and 6 words.
        let words = if name == "gzip" { 5 } else { 6 };
        assert_eq!(
            gz_span.int_attr("gen_ai.usage.output_tokens"),
            Some(words),
            "{name}"
        );
    }

    // 10 MiB answers, plain and streamed: whole and intact.
    for name in ["big", "big-stream"] {
        let (reply, _, parent) = get(name);
        let sent = upstream_answer(&upstream, parent);
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.error, None, "{name}");
        assert!(sent.body.len() >= 10 << 20, "{name}: {}", sent.body.len());
        assert_same_bytes(name, reply, &sent);
        let big_span = span(name);
        assert_ok_span(&big_span);
        // 10 MiB of 1 KiB pieces.
        assert_eq!(
            big_span.int_attr("gen_ai.usage.output_tokens"),
            Some(10 * 1024),
            "{name}"
        );
    }

    // A 30 s stall with `idleTimeout: 500ms`: the stream is ended for the client soon
    // after the silence starts, with the two events sent before it.
    let (stall_cut, at, parent) = get("stall-cut");
    assert_eq!(stall_cut.status, 200);
    assert_eq!(stall_cut.events().len(), 2, "{:?}", stall_cut.events());
    assert!(stall_cut.error.is_some(), "the client must see the cut");
    assert!(
        at < Duration::from_secs(10),
        "a 500ms idleTimeout took {at:?} to end the stream"
    );
    assert_error_span(&span("stall-cut"), "timeout");
    // The gateway hung up on the stalled upstream.
    assert_eq!(upstream_answer(&upstream, parent).end, ResponseEnd::Dropped);

    // A 2 s silence mid-stream under the default idleTimeout: a slow model, not a
    // failure.
    let (stall_ok, _, parent) = get("stall-ok");
    let sent = upstream_answer(&upstream, parent);
    assert_eq!(stall_ok.status, 200);
    assert_eq!(stall_ok.error, None);
    assert_eq!(stall_ok.events().last().map(String::as_str), Some("[DONE]"));
    assert_same_bytes("stall-ok", stall_ok, &sent);
    let longest_gap = stall_ok
        .frames
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    assert!(
        longest_gap >= Duration::from_millis(1900),
        "the stream never went silent (longest gap {longest_gap:?})"
    );
    assert_ok_span(&span("stall-ok"));

    // Nothing listens on the backend's port; a backend that never answers, with
    // `timeout: 500ms`.
    let (refused, _, _) = get("refused");
    assert_eq!(refused.status, 502);
    assert_error_span(&span("refused"), "connect_error");
    let (hang, _, _) = get("hang");
    assert_eq!(hang.status, 504);
    assert_error_span(&span("hang"), "timeout");

    // The gateway let go of every upstream exchange (the hung one, the stalled one)...
    let active = wait_until(SETTLE_TIMEOUT, || upstream.active_responses() == 0);
    assert!(
        active,
        "the gateway still holds {} upstream exchanges open",
        upstream.active_responses()
    );
    // ... did not panic, and still serves.
    assert_no_panic(&gateway);
    let after = Parent::new();
    let reply = rt.block_on(call(
        &proxy,
        &streamed(chat_body("gpt-4o-mini", "Still there?")),
        &after,
    ));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.events().last().map(String::as_str), Some("[DONE]"));
    assert_ok_span(&span_of(&receiver, &after.trace_id, "after", &gateway));

    // Once the upstream is gone, nothing is left open: no client connection, no
    // upstream connection, no file.
    drop(upstream);
    assert_fds_back_to(&gateway, &baseline, "upstream faults");
}

/// A backend whose listen queue is full: the kernel drops the gateway's SYNs, so the
/// connection is never made and only `connectTimeout` ends the wait (a firewall that
/// drops packets looks the same).
#[test]
fn a_backend_that_never_completes_the_handshake_is_a_504_after_connect_timeout() {
    let rt = runtime();
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind");
        // A backlog of 0: one connection fills the queue, and none is ever accepted.
        socket.listen(0).expect("listen")
    });
    let addr = listener.local_addr().expect("listener address");
    let mut fillers = Vec::new();
    while let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        fillers.push(stream);
        assert!(fillers.len() < 64, "the listen queue never filled up");
    }
    let receiver = Receiver::grpc();
    let config = format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {endpoint}
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: syn-dropped
    provider: openai
    baseUrl: http://{addr}/v1
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    connectTimeout: 300ms
",
        endpoint = receiver.endpoint(),
    );
    let gateway = Gateway::start(&config, &[]);
    let parent = Parent::new();
    let started = Instant::now();
    let reply = rt.block_on(call(
        &gateway.base_url(),
        &chat_body("gpt-4o-mini", "Hi"),
        &parent,
    ));
    let took = started.elapsed();
    let reply = support::Reply {
        status: reply.status,
        headers: reply.headers.clone(),
        body: reply.body(),
    };
    support::assert_openai_error(&reply, 504, "upstream_error", "connect_timeout");
    assert!(
        took < Duration::from_secs(3),
        "a 300ms connectTimeout took {took:?}"
    );
    let span = span_of(&receiver, &parent.trace_id, "syn dropped", &gateway);
    assert_error_span(&span, "connect_timeout");
    assert_no_panic(&gateway);
    drop(fillers);
}

/// The gateway's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(gateway: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gateway.pid()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM in /proc/PID/status")
}

/// A 10 MiB answer passes through a gateway whose span preset copies the whole
/// output: the peak memory it costs stays within a few copies of the body (the
/// client's bytes are streamed, never collected).
#[test]
fn a_ten_mib_answer_costs_a_bounded_amount_of_gateway_memory() {
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let rt = runtime();
    let mut report = Vec::new();
    for (name, body) in [
        ("plain", chat_body("big-10", "Big")),
        ("stream", streamed(chat_body("big-10", "Big stream"))),
    ] {
        // A fresh gateway each, so one answer's peak does not hide the other's.
        let gateway = Gateway::start(
            &support::config_yaml(
                "phoenix",
                &receiver.endpoint(),
                "grpc",
                &upstream.base_url(),
            ),
            &[],
        );
        let warm = Parent::new();
        rt.block_on(call(
            &gateway.base_url(),
            &chat_body("gpt-4o-mini", "warm"),
            &warm,
        ));
        span_of(&receiver, &warm.trace_id, "warm-up", &gateway);
        let before = peak_rss(&gateway);
        let parent = Parent::new();
        let reply = rt.block_on(call(&gateway.base_url(), &body, &parent));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.error, None);
        let size = reply.body().len() as u64;
        let span = span_of(&receiver, &parent.trace_id, name, &gateway);
        assert_ok_span(&span);
        // Phoenix copies the output into attributes, truncated to maxValueLength.
        let output = span
            .str_attr("llm.output_messages.0.message.content")
            .unwrap_or_default();
        assert!(
            output.starts_with("[0000000]"),
            "{name}: {}",
            &output[..output.len().min(80)]
        );
        let grew = peak_rss(&gateway).saturating_sub(before);
        report.push(format!(
            "{name}: body {:.1} MiB, gateway peak memory +{:.1} MiB",
            size as f64 / 1048576.0,
            grew as f64 / 1048576.0
        ));
        assert!(
            grew < 6 * size,
            "{name}: a {size}-byte answer raised the gateway's peak memory by {grew} bytes"
        );
        assert_no_panic(&gateway);
    }
    eprintln!("{}", report.join("; "));
}

/// Sends `body` and counts the answer's bytes without keeping them; the status and
/// the byte count.
async fn count_answer(base: &str, body: &Value, parent: &Parent) -> (u16, u64) {
    let request = http::Request::post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .header("traceparent", parent.traceparent(true))
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("build the request");
    let response = tokio::time::timeout(CALL_TIMEOUT, support::client().request(request))
        .await
        .expect("the answer's head in time")
        .expect("the answer's head");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(frame) = tokio::time::timeout(CALL_TIMEOUT, body.frame())
        .await
        .expect("the answer stalled")
    {
        let frame = frame.expect("the answer arrives whole");
        bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    (status, bytes)
}

/// A hostile backend's huge answers cost the gateway a bounded amount of memory: a
/// 200 MiB stream and a JSON answer of 300k choices. The client gets every byte; the
/// span keeps a capped part and says so (`celgate.response.truncated`). Measured
/// before the caps: +601 MiB and +542 MiB of peak memory.
#[test]
fn hostile_answers_cost_the_gateway_a_bounded_amount_of_memory() {
    const BOUND: u64 = 150 << 20;
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let rt = runtime();
    let mut report = Vec::new();
    for (name, body, size) in [
        (
            "200 MiB stream",
            streamed(chat_body("flood-200", "Flood")),
            200_u64 << 20,
        ),
        (
            "300k choices",
            chat_body("choices-300000", "Choices"),
            25 << 20,
        ),
    ] {
        let gateway = Gateway::start(
            &support::config_yaml(
                "phoenix",
                &receiver.endpoint(),
                "grpc",
                &upstream.base_url(),
            ),
            &[],
        );
        let warm = Parent::new();
        rt.block_on(call(
            &gateway.base_url(),
            &chat_body("gpt-4o-mini", "warm"),
            &warm,
        ));
        span_of(&receiver, &warm.trace_id, "warm-up", &gateway);
        let before = peak_rss(&gateway);
        let parent = Parent::new();
        let (status, bytes) = rt.block_on(count_answer(&gateway.base_url(), &body, &parent));
        assert_eq!(status, 200, "{name}");
        assert!(bytes >= size, "{name}: the client got {bytes} bytes");
        let span = span_of(&receiver, &parent.trace_id, name, &gateway);
        assert_ok_span(&span);
        assert_eq!(
            span.attr("celgate.response.truncated"),
            Some(&Value::Bool(true)),
            "{name}: {span:#?}"
        );
        let grew = peak_rss(&gateway).saturating_sub(before);
        report.push(format!(
            "{name}: {:.0} MiB answered, gateway peak memory +{:.1} MiB",
            bytes as f64 / 1048576.0,
            grew as f64 / 1048576.0
        ));
        assert!(
            grew < BOUND,
            "{name}: the gateway's peak memory grew by {grew} bytes"
        );
        assert_no_panic(&gateway);
    }
    eprintln!("{}", report.join("; "));
}

// ---------------------------------------------------------------------------------------
// 2. Collector faults under load
// ---------------------------------------------------------------------------------------

/// What a load run saw.
#[derive(Debug, Default)]
struct LoadReport {
    ok: usize,
    failures: Vec<String>,
    latencies: Vec<Duration>,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.ok += other.ok;
        self.failures.extend(other.failures);
        self.latencies.extend(other.latencies);
    }

    fn max(&self) -> Duration {
        self.latencies.iter().max().copied().unwrap_or_default()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
        sorted.get(i).copied().unwrap_or_default()
    }
}

/// One client connection sending requests one after another (every fourth one
/// streamed) while `go(i)` says so; each request's latency is to the end of its body.
async fn client_loop(url: String, client_id: usize, go: impl Fn(usize) -> bool) -> LoadReport {
    // One client per connection: hyper keeps the connection alive between requests.
    let client = support::client();
    let mut report = LoadReport::default();
    let mut i = 0;
    while go(i) {
        let streaming = (i + client_id).is_multiple_of(4);
        let mut body = chat_body("gpt-4o-mini", &format!("client {client_id} call {i}"));
        if streaming {
            body = streamed(body);
        }
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request");
        let start = Instant::now();
        let outcome = tokio::time::timeout(CALL_TIMEOUT, async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e:?}"))?
                .to_bytes();
            if status != 200 {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            if streaming && !body.ends_with(b"data: [DONE]\n\n") {
                return Err(format!(
                    "stream without [DONE]: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CALL_TIMEOUT:?}")));
        report.latencies.push(start.elapsed());
        match outcome {
            Ok(()) => report.ok += 1,
            Err(e) => report
                .failures
                .push(format!("client {client_id} call {i}: {e}")),
        }
        i += 1;
    }
    report
}

/// `total` requests over `connections` connections.
async fn load(url: &str, connections: usize, total: usize) -> LoadReport {
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let per = total / connections + usize::from(c < total % connections);
            tokio::spawn(client_loop(url.to_owned(), c, move |i| i < per))
        })
        .collect();
    let mut report = LoadReport::default();
    for task in tasks {
        report.merge(task.await.expect("a load task"));
    }
    report
}

/// Requests and connections of each collector-fault run.
const LOAD_REQUESTS: usize = 2000;
const LOAD_CONNECTIONS: usize = 16;

/// No request may take longer than this while the collector misbehaves, on a quiet
/// machine; on a busy one the bound grows with what the same load takes against a
/// healthy collector in the same test run ([`latency_bound`]).
const LATENCY_BOUND: Duration = Duration::from_secs(1);

/// The slowest request a collector fault may cause: [`LATENCY_BOUND`], or four times
/// the slowest request of the same load against a healthy collector (measured once
/// per test binary, on this machine, now), whichever is larger. A collector that
/// delayed requests would exceed both; a busy machine slows the baseline alike.
fn latency_bound(upstream: &Upstream) -> Duration {
    static BASELINE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    let baseline = *BASELINE.get_or_init(|| {
        let receiver = Receiver::http();
        let gateway = Gateway::start(
            &support::config_yaml(
                "phoenix",
                &receiver.endpoint(),
                "http",
                &upstream.base_url(),
            ),
            &SMALL_QUEUE,
        );
        let rt = runtime();
        let url = format!("{}/chat/completions", gateway.base_url());
        let report = rt.block_on(load(&url, LOAD_CONNECTIONS, LOAD_REQUESTS));
        eprintln!("healthy collector baseline: max {:?}", report.max());
        report.max()
    });
    LATENCY_BOUND.max(baseline * 4)
}

/// A small queue, so a collector that does not take spans fills it quickly.
const SMALL_QUEUE: [(&str, &str); 2] = [
    ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
];

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
    }
}

/// Starts a gateway exporting to `endpoint`, runs the load, checks every request
/// succeeded within [`LATENCY_BOUND`], and returns the gateway (and the runtime) for
/// the collector-specific checks.
fn run_load_against_collector(
    what: &str,
    upstream: &Upstream,
    protocol: Protocol,
    endpoint: &str,
    extra_env: &[(&str, &str)],
) -> (Gateway, tokio::runtime::Runtime) {
    let mut env: Vec<(&str, &str)> = SMALL_QUEUE.to_vec();
    env.extend_from_slice(extra_env);
    let gateway = Gateway::start(
        &support::config_yaml(
            "phoenix",
            endpoint,
            protocol_name(protocol),
            &upstream.base_url(),
        ),
        &env,
    );
    let rt = runtime();
    let url = format!("{}/chat/completions", gateway.base_url());
    let started = Instant::now();
    let report = rt.block_on(load(&url, LOAD_CONNECTIONS, LOAD_REQUESTS));
    let took = started.elapsed();
    eprintln!(
        "{what}: {} requests over {LOAD_CONNECTIONS} connections in {took:?}: {} ok, p50 {:?}, p99 {:?}, max {:?}",
        LOAD_REQUESTS,
        report.ok,
        report.percentile(0.5),
        report.percentile(0.99),
        report.max()
    );
    assert!(
        report.failures.is_empty(),
        "{what}: {} of {LOAD_REQUESTS} requests failed, first: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    assert_eq!(report.ok, LOAD_REQUESTS, "{what}");
    let bound = latency_bound(upstream);
    assert!(
        report.max() < bound,
        "{what}: the slowest request took {:?} (bound {bound:?}; p99 {:?})",
        report.max(),
        report.percentile(0.99)
    );
    (gateway, rt)
}

/// The gateway's `/metrics` once `done` holds for it (waits up to `timeout`); fails
/// with the exposition otherwise.
fn metrics_when(
    gateway: &Gateway,
    rt: &tokio::runtime::Runtime,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let url = format!("{}/metrics", gateway.admin_url());
    let mut text = String::new();
    let ok = wait_until(timeout, || {
        text = rt.block_on(support::get(&url)).text();
        done(&text)
    });
    assert!(
        ok,
        "{what}: /metrics never showed what was expected within {timeout:?}:\n{text}\n--- stderr ---\n{}",
        gateway.stderr()
    );
    text
}

fn counter(text: &str, name: &str) -> f64 {
    metric(text, name).unwrap_or(0.0)
}

#[test]
fn a_collector_that_is_down_costs_no_request_and_spans_flow_once_it_is_back() {
    let _load = one_load_at_a_time();
    let upstream = Upstream::start();
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let what = format!("collector down ({})", protocol_name(protocol));
        let port = closed_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let (gateway, rt) = run_load_against_collector(&what, &upstream, protocol, &endpoint, &[]);
        let text = metrics_when(&gateway, &rt, &what, SPAN_TIMEOUT, |t| {
            counter(t, "celgate_span_export_failures_total") >= 1.0
                && counter(t, "celgate_spans_dropped_total") >= 1.0
        });
        assert_eq!(
            counter(&text, "celgate_spans_exported_total"),
            0.0,
            "{what}"
        );

        // The collector comes back on the same port: spans flow again.
        let receiver = Receiver::with(
            protocol,
            ReceiverOptions {
                port: Some(port),
                ..ReceiverOptions::default()
            },
        );
        let url = format!("{}/chat/completions", gateway.base_url());
        let delivered = wait_until(Duration::from_secs(20), || {
            let report = rt.block_on(load(&url, 2, 4));
            assert!(report.failures.is_empty(), "{what}: {:?}", report.failures);
            !receiver.wait_for(1, Duration::from_millis(500)).is_empty()
        });
        assert!(
            delivered,
            "{what}: no span reached the collector after it came back\n{}",
            gateway.stderr()
        );
        metrics_when(&gateway, &rt, &what, SPAN_TIMEOUT, |t| {
            counter(t, "celgate_spans_exported_total") >= 1.0
        });
        assert!(
            gateway.wait_for_stderr("recovered", SPAN_TIMEOUT).is_some(),
            "{what}: the recovery is logged\n{}",
            gateway.stderr()
        );
        assert_no_panic(&gateway);
    }
}

#[test]
fn a_black_holed_collector_costs_no_request_and_its_timeouts_are_counted() {
    let _load = one_load_at_a_time();
    let upstream = Upstream::start();
    // Accepts connections (the kernel completes them into the backlog) and never
    // reads or answers.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the black hole");
    let endpoint = format!(
        "http://{}",
        blackhole.local_addr().expect("black hole address")
    );
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let what = format!("collector black-holed ({})", protocol_name(protocol));
        // Give up on an export after 500 ms (the default is 30 s).
        let (gateway, rt) = run_load_against_collector(
            &what,
            &upstream,
            protocol,
            &endpoint,
            &[("OTEL_BSP_EXPORT_TIMEOUT", "500")],
        );
        let text = metrics_when(&gateway, &rt, &what, SPAN_TIMEOUT, |t| {
            counter(t, "celgate_span_export_failures_total") >= 1.0
                && counter(t, "celgate_spans_dropped_total") >= 1.0
        });
        assert_eq!(
            counter(&text, "celgate_spans_exported_total"),
            0.0,
            "{what}"
        );
        assert_no_panic(&gateway);
    }
    drop(blackhole);
}

#[test]
fn a_slow_collector_costs_no_request_and_overflow_is_counted() {
    let _load = one_load_at_a_time();
    let upstream = Upstream::start();
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let what = format!("collector slow ({})", protocol_name(protocol));
        let receiver = Receiver::with(
            protocol,
            ReceiverOptions {
                delay: Duration::from_secs(5),
                ..ReceiverOptions::default()
            },
        );
        let (gateway, rt) =
            run_load_against_collector(&what, &upstream, protocol, &receiver.endpoint(), &[]);
        // Each export takes 5 s, so the small queue overflowed while the load ran; the
        // exports that do finish are counted as such.
        let text = metrics_when(&gateway, &rt, &what, Duration::from_secs(15), |t| {
            counter(t, "celgate_spans_dropped_total") >= 1.0
                && counter(t, "celgate_spans_exported_total") >= 1.0
        });
        let exported = counter(&text, "celgate_spans_exported_total") as usize;
        assert!(
            receiver.spans().len() >= exported,
            "{what}: /metrics says {exported} exported, the collector has {}",
            receiver.spans().len()
        );
        assert_eq!(
            counter(&text, "celgate_span_export_failures_total"),
            0.0,
            "{what}: a slow collector is not a failing one"
        );
        assert_no_panic(&gateway);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Config reload storm
// ---------------------------------------------------------------------------------------

/// A config whose spans say which version made them, twice (both must agree).
fn storm_config(upstream: &str, receiver: &str, version: u64) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
config:
  tracing:
    preset: jaeger
    otlpEndpoint: {receiver}
    fields:
      add:
        test.version.a: '\"v{version}\"'
        test.version.b: 'string({version})'
backends:
  - name: scripted
    baseUrl: {upstream}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
"
    )
}

#[test]
fn a_reload_storm_under_load_fails_no_request_and_ends_on_the_last_config() {
    let _load = one_load_at_a_time();
    const UPDATES: u64 = 100;
    const PERIOD: Duration = Duration::from_millis(100);
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &storm_config(&upstream.base_url(), &receiver.endpoint(), 0),
        &[],
    );
    let admin = gateway.admin_url();
    let admin_port = admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("admin port");
    let own_ports = [gateway.addr().port(), admin_port];
    let rt = runtime();
    let url = format!("{}/chat/completions", gateway.base_url());
    let warm = Parent::new();
    rt.block_on(call(
        &gateway.base_url(),
        &chat_body("gpt-4o-mini", "warm"),
        &warm,
    ));
    span_of(&receiver, &warm.trace_id, "warm-up", &gateway);
    let baseline = steady_fds(&gateway, upstream.addr().port(), &own_ports);

    // Four clients send continuously until the storm is over.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            rt.spawn(client_loop(url.clone(), c, move |_| {
                let go = !stop.load(Ordering::Relaxed);
                if go {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                go
            }))
        })
        .collect();

    let dir = gateway.dir().to_owned();
    let started = Instant::now();
    for version in 1..=UPDATES {
        let config = storm_config(&upstream.base_url(), &receiver.endpoint(), version);
        support::kubelet_write(&dir, "config.yaml", &config, version);
        // The storm's cadence: one update every PERIOD.
        let next = started + PERIOD * u32::try_from(version).expect("few updates");
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let storm = started.elapsed();

    // The last version goes live: a request's span carries it.
    let last = format!("v{UPDATES}");
    let live = wait_until(Duration::from_secs(5), || {
        let parent = Parent::new();
        let reply = rt.block_on(call(
            &gateway.base_url(),
            &chat_body("gpt-4o-mini", "which version?"),
            &parent,
        ));
        assert_eq!(reply.status, 200);
        span_of(&receiver, &parent.trace_id, "probe", &gateway).str_attr("test.version.a")
            == Some(last.as_str())
    });
    assert!(live, "{last} never went live\n{}", gateway.stderr());

    stop.store(true, Ordering::Relaxed);
    let mut report = LoadReport::default();
    for client in clients {
        report.merge(rt.block_on(client).expect("a client task"));
    }
    assert!(
        report.failures.is_empty(),
        "{} requests failed during the storm, first: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );

    // The counters add up: each reload that ran swapped a generation in, none failed,
    // and the gauge agrees with /config.
    let config = rt.block_on(support::get(&format!("{admin}/config"))).json();
    let generation = config["generation"].as_u64().expect("a generation number");
    assert!(
        config["lastReloadError"].is_null(),
        "{}",
        config["lastReloadError"]
    );
    let text = rt
        .block_on(support::get(&format!("{admin}/metrics")))
        .text();
    let ok = counter(&text, "celgate_config_reloads_total{result=\"ok\"}") as u64;
    let failed = counter(&text, "celgate_config_reloads_total{result=\"error\"}") as u64;
    assert_eq!(ok, generation - 1, "ok reloads vs generation:\n{text}");
    assert_eq!(failed, 0, "{text}");
    assert_eq!(
        counter(&text, "celgate_config_generation") as u64,
        generation,
        "{text}"
    );
    // Updates closer together than the reload debounce may be read as one; the
    // storm still has to be followed closely.
    assert!(
        (UPDATES / 10..=UPDATES).contains(&ok),
        "{ok} reloads for {UPDATES} updates"
    );

    // Every span was made by one version, never a mix.
    let requests = sent.load(Ordering::Relaxed) as usize;
    let spans = receiver.wait_for(requests, SPAN_TIMEOUT);
    let mut versions = std::collections::BTreeSet::new();
    for s in &spans {
        let a = s.str_attr("test.version.a").unwrap_or_default();
        let b = s.str_attr("test.version.b").unwrap_or_default();
        assert_eq!(
            a,
            format!("v{b}"),
            "a span mixes versions: {:?}",
            s.attributes
        );
        versions.insert(b.parse::<u64>().expect("a version number"));
    }
    eprintln!(
        "reload storm: {UPDATES} updates in {storm:?}, {ok} reloads, {requests} requests ({} ok, p99 {:?}, max {:?}), spans from {} versions",
        report.ok,
        report.percentile(0.99),
        report.max(),
        versions.len()
    );
    assert!(
        versions.len() > 10,
        "the traffic saw only versions {versions:?}"
    );

    assert_no_panic(&gateway);
    drop(upstream);
    assert_fds_back_to(&gateway, &baseline, "reload storm");
}

// ---------------------------------------------------------------------------------------
// Hostile connections: unfinished HTTP/2, too many connections, a backend's double
// framing (issue 11)
// ---------------------------------------------------------------------------------------

/// What every HTTP/2 prior-knowledge client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An empty SETTINGS frame, which must follow the preface.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];

/// A HEADERS frame on stream 1 with END_STREAM but without END_HEADERS (`:method GET`,
/// `:scheme http`, `:path /`: HPACK static entries 2, 6, 4): the header block stays
/// open until a CONTINUATION that never comes.
const H2_UNFINISHED_HEADERS: &[u8] = &[0, 0, 3, 0x1, 0x1, 0, 0, 0, 1, 0x82, 0x86, 0x84];

/// A gateway in front of `upstream` with `server` lines added under `server:`.
fn server_config(upstream: &str, receiver: &str, server: &[&str]) -> String {
    let server: String = server.iter().map(|l| format!("  {l}\n")).collect();
    format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {receiver}
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
server:
{server}backends:
  - name: scripted
    provider: openai
    baseUrl: {upstream}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
"
    )
}

/// Opens a raw connection to the gateway and writes `bytes`.
fn raw_connection(gateway: &Gateway, bytes: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(gateway.addr()).expect("connect");
    stream.write_all(bytes).expect("write");
    stream
}

/// Reads (and discards) what the gateway sends until it closes `stream`; returns how
/// long that took, or `None` when it is still open after `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> Option<Duration> {
    use std::io::Read;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// A plain HTTP/1.1 `GET path` on `stream` (kept alive); the status, or `None` when the
/// gateway closed the connection without answering.
fn http1_get(stream: &mut std::net::TcpStream, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.1\r\nHost: celgate.test\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let _ = stream.set_read_timeout(Some(CALL_TIMEOUT));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    head.split(' ').nth(1)?.parse().ok()
}

/// HTTP/2 connections that never finish a request are closed after
/// `server.requestTimeout`, as HTTP/1 ones are: only the preface, the preface and
/// SETTINGS, or a HEADERS block whose CONTINUATION never comes. A real HTTP/2 client
/// is still served, including a stream that runs longer than `requestTimeout`.
#[test]
fn unfinished_http2_connections_are_closed_after_request_timeout() {
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let config = server_config(
        &upstream.base_url(),
        &receiver.endpoint(),
        &["requestTimeout: 1s"],
    );
    let gateway = Gateway::start(&config, &[]);
    let within = Duration::from_secs(20);
    let mut preface = raw_connection(&gateway, H2_PREFACE);
    let mut settings = raw_connection(&gateway, &[H2_PREFACE, H2_SETTINGS].concat());
    let mut headers = raw_connection(
        &gateway,
        &[H2_PREFACE, H2_SETTINGS, H2_UNFINISHED_HEADERS].concat(),
    );
    for (what, stream) in [
        ("preface only", &mut preface),
        ("preface and SETTINGS", &mut settings),
        ("HEADERS without END_HEADERS", &mut headers),
    ] {
        let closed = closed_within(stream, within);
        assert!(
            closed.is_some(),
            "{what}: still open {within:?} after connecting (requestTimeout 1s)\n{}",
            gateway.stderr()
        );
    }

    // A well-behaved HTTP/2 client: a stream that stalls 2.5 s (longer than
    // requestTimeout) is in flight, so its connection stays open until it ends.
    let rt = runtime();
    let url = format!("{}/chat/completions", gateway.base_url());
    let body = streamed(chat_body("stall-2500", "Slow over h2")).to_string();
    let (status, text) = rt.block_on(async {
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = tokio::time::timeout(CALL_TIMEOUT, support::client_h2().request(request))
            .await
            .expect("an answer in time")
            .expect("an h2 answer");
        let status = response.status();
        let bytes = tokio::time::timeout(CALL_TIMEOUT, response.into_body().collect())
            .await
            .expect("the whole body in time")
            .expect("a complete h2 body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    });
    assert_eq!(status, 200, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_no_panic(&gateway);
}

/// SIGTERM drains in-flight requests; an HTTP/2 connection with nothing in flight
/// (only the preface, or an unfinished HEADERS block) does not hold the drain for
/// `shutdownTimeout`.
#[test]
fn a_sigterm_drain_does_not_wait_for_unfinished_http2_connections() {
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let config = server_config(
        &upstream.base_url(),
        &receiver.endpoint(),
        &["requestTimeout: 60s", "shutdownTimeout: 30s"],
    );
    let mut gateway = Gateway::start(&config, &[]);
    let _preface = raw_connection(&gateway, &[H2_PREFACE, H2_SETTINGS].concat());
    let _headers = raw_connection(
        &gateway,
        &[H2_PREFACE, H2_SETTINGS, H2_UNFINISHED_HEADERS].concat(),
    );
    // Both were accepted once a call on a later connection is answered.
    let mut probe = std::net::TcpStream::connect(gateway.addr()).expect("connect");
    assert_eq!(http1_get(&mut probe, "/v1/models"), Some(200));
    drop(probe);
    let started = Instant::now();
    gateway.send_signal(support::Signal::Term);
    let status = gateway.wait_exit(Duration::from_secs(40));
    let took = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
    assert!(
        took < Duration::from_secs(15),
        "the drain took {took:?} (shutdownTimeout 30s) with two idle HTTP/2 connections open\n{}",
        gateway.stderr()
    );
}

/// With `server.maxConnections: 3` and three connections open, a fourth is closed
/// without an answer (logged once, not per connection); once the three go, a new
/// client is served.
#[test]
fn connections_beyond_max_connections_are_closed_until_others_go() {
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let config = server_config(
        &upstream.base_url(),
        &receiver.endpoint(),
        &["requestTimeout: 60s", "maxConnections: 3"],
    );
    let gateway = Gateway::start(&config, &[]);
    let mut held: Vec<std::net::TcpStream> = (0..3)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(gateway.addr()).expect("connect");
            assert_eq!(
                http1_get(&mut s, "/v1/models"),
                Some(200),
                "connection {i} within the limit\n{}",
                gateway.stderr()
            );
            s
        })
        .collect();
    for i in 0..5 {
        let mut extra = std::net::TcpStream::connect(gateway.addr()).expect("connect");
        assert_eq!(
            http1_get(&mut extra, "/v1/models"),
            None,
            "connection {} beyond maxConnections 3 was served",
            4 + i
        );
    }
    // The first three still work.
    for (i, s) in held.iter_mut().enumerate() {
        assert_eq!(http1_get(s, "/v1/models"), Some(200), "held connection {i}");
    }
    // The line is read from the child's stderr pipe: wait for it to arrive before
    // counting (on a loaded machine it can trail the refused connections).
    gateway.wait_for_stderr("maxConnections", SETTLE_TIMEOUT);
    let logged = gateway
        .stderr()
        .lines()
        .filter(|l| l.contains("maxConnections"))
        .count();
    assert_eq!(
        logged,
        1,
        "five refused connections should log one line\n{}",
        gateway.stderr()
    );
    held.clear();
    let served = wait_until(SETTLE_TIMEOUT, || {
        let mut s = std::net::TcpStream::connect(gateway.addr()).expect("connect");
        http1_get(&mut s, "/v1/models") == Some(200)
    });
    assert!(
        served,
        "no client served after the three went\n{}",
        gateway.stderr()
    );
    assert_no_panic(&gateway);
}

/// A backend answering with both `Content-Length` and `Transfer-Encoding: chunked`
/// (RFC 9112 §6.3: the chunked framing wins, and a proxy must not forward the length):
/// the client gets every byte of the chunked body. A hyper upstream cannot send both
/// headers, so this one is a raw TCP listener.
#[test]
fn a_backend_answer_with_content_length_and_chunked_reaches_the_client_whole() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut body = serde_json::json!({
        "id": "chatcmpl-double-framing",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                     "finish_reason": "stop"}],
    });
    let bare = body.to_string().len();
    body["choices"][0]["message"]["content"] = Value::String("x".repeat(268 - bare));
    let body = body.to_string();
    assert_eq!(body.len(), 268);
    let answer = {
        let (first, rest) = body.split_at(100);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{rest}\r\n0\r\n\r\n",
            first.len(),
            rest.len()
        )
    };
    let backend = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let _ = stream.set_read_timeout(Some(CALL_TIMEOUT));
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read the head, then the body its Content-Length announces.
        loop {
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.flush();
        // Hold the connection open: the chunked framing alone must end the answer.
        std::thread::sleep(Duration::from_secs(5));
    });
    let receiver = Receiver::grpc();
    let config = server_config(&format!("http://{addr}/v1"), &receiver.endpoint(), &[]);
    let config = config.replace("server:\n", "");
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let parent = Parent::new();
    let reply = rt.block_on(call(
        &gateway.base_url(),
        &chat_body("gpt-4o-mini", "Hi"),
        &parent,
    ));
    assert_eq!(reply.error, None);
    assert_eq!(reply.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&reply.body()),
        body,
        "the client must get the whole chunked body"
    );
    assert_ne!(
        header(&reply, "content-length"),
        Some("5"),
        "the backend's Content-Length was forwarded"
    );
    let span = span_of(&receiver, &parent.trace_id, "double framing", &gateway);
    assert_ok_span(&span);
    assert_no_panic(&gateway);
    let _ = backend.join();
}

/// 1,000 idle HTTP/2 connections (preface and SETTINGS, then nothing) cost the gateway
/// one descriptor each and nothing more, and every one is closed after
/// `server.requestTimeout`: the descriptor count returns to where it was. Prints the
/// numbers (recorded in BENCHMARKS.md).
#[test]
fn a_thousand_idle_http2_connections_cost_a_descriptor_each_and_are_all_closed() {
    const CONNECTIONS: usize = 1000;
    let _load = one_load_at_a_time();
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let config = server_config(
        &upstream.base_url(),
        &receiver.endpoint(),
        &["requestTimeout: 10s"],
    );
    let gateway = Gateway::start(&config, &[]);
    let mut probe = std::net::TcpStream::connect(gateway.addr()).expect("connect");
    assert_eq!(http1_get(&mut probe, "/v1/models"), Some(200));
    drop(probe);
    // At rest: the fewest descriptors seen over a second (the probe closes meanwhile).
    let mut before = usize::MAX;
    wait_until(Duration::from_secs(1), || {
        before = before.min(gateway.open_fds().len());
        false
    });
    let hello = [H2_PREFACE, H2_SETTINGS].concat();
    let started = Instant::now();
    let mut idle: Vec<std::net::TcpStream> = (0..CONNECTIONS)
        .map(|_| raw_connection(&gateway, &hello))
        .collect();
    // The peak: every connection accepted and none timed out yet.
    let mut peak = 0;
    wait_until(Duration::from_secs(8), || {
        peak = peak.max(gateway.open_fds().len());
        peak >= before + CONNECTIONS
    });
    let opened = started.elapsed();
    let deadline = started + Duration::from_secs(60);
    let closed = idle
        .iter_mut()
        .filter_map(|stream| {
            closed_within(stream, deadline.saturating_duration_since(Instant::now()))
        })
        .count();
    let all_closed = started.elapsed();
    let mut after = gateway.open_fds().len();
    wait_until(SETTLE_TIMEOUT, || {
        after = gateway.open_fds().len();
        after <= before
    });
    eprintln!(
        "{CONNECTIONS} idle h2 connections: gateway fds {before} before, {peak} at the peak \
         (+{}), {after} after; opened in {opened:.1?}, all closed {all_closed:.1?} after the \
         first (requestTimeout 10s)",
        peak.saturating_sub(before)
    );
    assert_eq!(closed, CONNECTIONS, "connections still open after 60 s");
    assert!(
        peak >= before + CONNECTIONS,
        "only {} of {CONNECTIONS} connections were open at once",
        peak.saturating_sub(before)
    );
    assert!(
        peak <= before + CONNECTIONS + 16,
        "{CONNECTIONS} idle connections cost {} descriptors",
        peak - before
    );
    assert!(
        after <= before,
        "descriptors {before} before, {after} after"
    );
    drop(idle);
    assert_no_panic(&gateway);
}

// ---------------------------------------------------------------------------------------
// 4. Hostile sizes: label values, span strings, export batches, expression cost
//    (each holds `one_load_at_a_time`: they are the heaviest tests here)
// ---------------------------------------------------------------------------------------

/// `POST {base}{path}` with a JSON body; fails the test after [`CALL_TIMEOUT`].
async fn post(base: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> support::Reply {
    let url = format!("{base}{path}");
    tokio::time::timeout(CALL_TIMEOUT, support::post_json(&url, body, headers))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {CALL_TIMEOUT:?}"))
}

/// [`support::config_yaml`] with extra `fields.add` entries (already indented).
fn config_with_fields(preset: &str, endpoint: &str, upstream: &Upstream, fields: &str) -> String {
    let base = support::config_yaml(preset, endpoint, "grpc", &upstream.base_url());
    base.replacen(
        "    randomSampling: true\n",
        &format!("    randomSampling: true\n    fields:\n      add:\n{fields}"),
        1,
    )
}

#[test]
fn thousands_of_client_chosen_model_names_keep_metrics_small() {
    let _load = one_load_at_a_time();
    let upstream = Upstream::start();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let config = support::config_yaml("jaeger", &endpoint, "grpc", &upstream.base_url())
        .replace("    apiKey:", "    models: [\"*\"]\n    apiKey:");
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let names: Vec<String> = (0..2000)
        .map(|i| format!("m{i:05}-{}", "x".repeat(200)))
        .collect();
    let proxy = gateway.base_url();
    rt.block_on(async {
        for name in &names {
            let reply = post(&proxy, "/chat/completions", &chat_body(name, "hi"), &[]).await;
            assert_eq!(reply.status, 200, "{name}");
        }
    });
    let text = rt
        .block_on(support::get(&format!("{}/metrics", gateway.admin_url())))
        .text();
    // Three GenAI histogram families (token usage, duration, time to first token),
    // each capped at 500 label sets: about 1.1 MB each at most, the 63.9 MB of
    // unbounded labels this guards against far above.
    assert!(
        text.len() < 4_000_000,
        "/metrics is {} bytes for 2,000 model names",
        text.len()
    );
    // The first names keep their own series (cut to 128 bytes), the rest are `other`.
    let first = &names[0][..128];
    let own = format!(
        "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"{first}\""
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&own) && l.ends_with(" 1")),
        "no series for the first model name"
    );
    let other: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("gen_ai_client_operation_duration_seconds_count{")
                && l.contains("gen_ai_request_model=\"other\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(other, 1900.0, "2,000 calls, 100 with their own series");
}

#[test]
fn a_five_mib_model_name_is_cut_and_sinks_no_span_of_its_batch() {
    let _load = one_load_at_a_time();
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let config = support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url());
    // One batch: the delay is longer than the 101 requests take.
    let gateway = Gateway::start(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "3000")]);
    let rt = runtime();
    let proxy = gateway.base_url();
    let huge = format!("gpt-{}", "h".repeat(5 * 1024 * 1024));
    rt.block_on(async {
        for i in 0..100 {
            let reply = post(
                &proxy,
                "/chat/completions",
                &chat_body("gpt-4o-mini", &format!("call {i}")),
                &[],
            )
            .await;
            assert_eq!(reply.status, 200);
        }
        let reply = post(&proxy, "/chat/completions", &chat_body(&huge, "big"), &[]).await;
        assert_eq!(reply.status, 200);
    });
    let spans = receiver.wait_for(101, Duration::from_secs(30));
    assert_eq!(
        spans.len(),
        101,
        "spans lost; exports {:?}\n{}",
        receiver.exports(),
        gateway.stderr()
    );
    let big = spans
        .iter()
        .find(|s| s.name.starts_with("chat gpt-hhh"))
        .expect("the span of the huge model name");
    assert_eq!(big.name.len(), 1024, "cut to 1,024 bytes");
    let model = big
        .str_attr("gen_ai.request.model")
        .expect("model attribute");
    assert_eq!(model.len(), 32 * 1024, "cut to maxValueLength");
}

#[test]
fn a_batch_larger_than_the_collector_takes_is_sent_in_parts() {
    let _load = one_load_at_a_time();
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    // Each span carries ~40 KiB of request body: 150 of them are ~6 MB, over the
    // 4 MiB a gRPC collector decodes.
    let config = config_with_fields(
        "openllmetry",
        &receiver.endpoint(),
        &upstream,
        "        body: llm.requestBody\n",
    );
    let gateway = Gateway::start(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "3000")]);
    let rt = runtime();
    let proxy = gateway.base_url();
    let text = "y".repeat(40 * 1024);
    rt.block_on(async {
        for i in 0..150 {
            let reply = post(
                &proxy,
                "/chat/completions",
                &chat_body("gpt-4o-mini", &format!("{i} {text}")),
                &[],
            )
            .await;
            assert_eq!(reply.status, 200);
        }
    });
    let spans = receiver.wait_for(150, Duration::from_secs(30));
    assert_eq!(
        spans.len(),
        150,
        "exports {:?}\n{}",
        receiver.exports(),
        gateway.stderr()
    );
    // Cut to maxValueLength (32 KiB): 150 of them are still 4.8 MiB.
    assert!(
        spans
            .iter()
            .all(|s| s.str_attr("body").is_some_and(|b| b.len() == 32 * 1024))
    );
    assert!(receiver.exports().len() >= 2, "one batch, in parts");
}

/// `n` short messages.
fn many_messages(model: &str, n: usize) -> Value {
    let messages: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    serde_json::json!({"model": model, "messages": messages})
}

#[test]
fn a_quadratic_expression_neither_stalls_its_request_nor_others() {
    let _load = one_load_at_a_time();
    let receiver = Receiver::grpc();
    let upstream = Upstream::start();
    let config = config_with_fields(
        "openllmetry",
        &receiver.endpoint(),
        &upstream,
        "        quadratic: 'size(llm.prompt.map(a, llm.prompt.map(b, b)))'\n",
    );
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let proxy = gateway.base_url();
    let heavy = many_messages("gpt-4o-mini", 6_000);
    let parent = Parent::new();
    let (heavy_times, small_time) = rt.block_on(async {
        let timed = |body: Value, headers: Vec<(String, String)>| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let reply = post(&proxy, "/chat/completions", &body, &h).await;
                assert_eq!(reply.status, 200);
                start.elapsed()
            })
        };
        let tp = vec![("traceparent".to_owned(), parent.traceparent(true))];
        let a = timed(heavy.clone(), tp);
        let b = timed(heavy.clone(), Vec::new());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let small = timed(chat_body("gpt-4o-mini", "hi"), Vec::new());
        let small = small.await.unwrap();
        (vec![a.await.unwrap(), b.await.unwrap()], small)
    });
    // Unbounded, each heavy request took seconds (36 M iterations, 1 GB) and
    // the small one waited behind them.
    for t in &heavy_times {
        assert!(*t < Duration::from_secs(8), "a heavy request took {t:?}");
    }
    assert!(
        small_time < Duration::from_secs(4),
        "the small request took {small_time:?}"
    );
    let span = span_of(&receiver, &parent.trace_id, "the heavy request", &gateway);
    assert_eq!(span.attr("quadratic"), None, "the attribute is dropped");
    let text = rt
        .block_on(support::get(&format!("{}/metrics", gateway.admin_url())))
        .text();
    assert_eq!(
        support::metric(
            &text,
            "celgate_expression_errors_total{attribute=\"quadratic\"}"
        ),
        Some(2.0),
        "{text}"
    );
}
