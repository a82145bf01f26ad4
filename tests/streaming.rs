//! Streams through the real `celgate` binary: events reach the client as the upstream
//! emits them; a stream that ends cleanly without `[DONE]` is recorded as incomplete;
//! a client that hangs up before the answer still gets a span and a log line, and one
//! that hangs up after `[DONE]` completed the call.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::calls::{CALL_TIMEOUT, post, post_stream, runtime};
use support::otlp::Receiver;
use support::{
    Gateway, Parent, SPAN_TIMEOUT, Upstream, assert_error_span, assert_ok_span, chat_body, span_of,
    streamed,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// 4. Streaming is forwarded as it arrives
// ---------------------------------------------------------------------------------------

#[test]
fn streamed_events_reach_the_client_as_the_upstream_emits_them() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    // drip-200: the upstream waits 200 ms before each of its 10 events (role, 6 words,
    // finish, usage, [DONE]).
    let sent = Instant::now();
    let reply = rt.block_on(post_stream(
        &gateway.base_url(),
        "/chat/completions",
        &streamed(chat_body("drip-200", "tell me when")),
        &[],
    ));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.error, None);
    // When each event was complete at the client.
    let mut arrivals = Vec::new();
    let mut seen = Vec::new();
    for (at, frame) in &reply.frames {
        seen.extend_from_slice(frame);
        // Only events already terminated by their blank line count.
        let end = seen
            .windows(2)
            .rposition(|w| w == b"\n\n")
            .map_or(0, |i| i + 2);
        let complete = support::sse_data(&seen[..end]).len();
        while arrivals.len() < complete {
            arrivals.push(*at);
        }
    }
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(arrivals.len(), events.len());
    assert!(events.len() >= 7, "{events:?}");
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = gaps.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(
        median >= Duration::from_millis(120) && sorted[0] >= Duration::from_millis(50),
        "events arrived in bursts, not as emitted: gaps {gaps:?}"
    );
    assert!(
        spread >= Duration::from_millis(100) * (events.len() as u32 - 1),
        "the first event came only {spread:?} before the last: gaps {gaps:?}"
    );
    assert!(
        arrivals[0] - sent < Duration::from_millis(1000),
        "the first event took {:?}",
        arrivals[0] - sent
    );
    let span = receiver
        .wait_for(1, SPAN_TIMEOUT)
        .pop()
        .expect("the stream's span");
    assert_ok_span(&span);
    assert!(
        Duration::from_nanos(span.end_unix_nano - span.start_unix_nano)
            >= Duration::from_millis(100) * (events.len() as u32 - 1),
        "the span ends when the stream ends"
    );
}

// ---------------------------------------------------------------------------------------
// A stream that ends cleanly but unfinished
// ---------------------------------------------------------------------------------------

/// A bare HTTP/1.1 upstream for answers the scripted one cannot give: reads each request
/// (head and `content-length` body), answers `response` verbatim and closes. Serves
/// until the test process ends.
fn raw_upstream(response: Vec<u8>) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the raw upstream");
    let addr = listener.local_addr().expect("raw upstream address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut got = Vec::new();
            let mut buf = [0_u8; 4096];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                got.extend_from_slice(&buf[..n]);
                let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    break;
                }
            }
            let _ = stream.write_all(&response);
            let _ = stream.flush();
        }
    });
    addr
}

/// The backend closes the stream properly (complete HTTP body) but before `[DONE]` and
/// before any choice finished: the client gets what was sent, the span says the answer
/// is incomplete.
#[test]
fn a_stream_that_ends_cleanly_without_done_is_recorded_as_incomplete() {
    let chunk = |delta: Value| {
        format!(
            "data: {}\n\n",
            json!({
                "id": "chatcmpl-raw1",
                "object": "chat.completion.chunk",
                "created": 1_750_000_000,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": null}]
            })
        )
    };
    let body =
        chunk(json!({"role": "assistant", "content": "Hel"})) + &chunk(json!({"content": "lo"}));
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let addr = raw_upstream(response.into_bytes());
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml(
            "jaeger",
            &receiver.endpoint(),
            "grpc",
            &format!("http://{addr}/v1"),
        ),
        &[],
    );
    let rt = runtime();
    let reply = rt.block_on(post_stream(
        &gateway.base_url(),
        "/chat/completions",
        &streamed(chat_body("gpt-4o-mini", "Hi")),
        &[],
    ));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.error, None, "the body itself was complete");
    assert_eq!(reply.events().len(), 2);
    let span = receiver
        .wait_for(1, SPAN_TIMEOUT)
        .pop()
        .unwrap_or_else(|| panic!("no span\n{}", gateway.stderr()));
    assert_error_span(&span, "stream_incomplete");
    assert!(
        !span.status_message.contains("HTTP stream_incomplete"),
        "the status message presents `stream_incomplete` as an HTTP status: {:?}",
        span.status_message
    );
}

/// A client that gives up while celgate still waits for the backend's answer (an SDK
/// timeout on a slow model, say) is a request like any other: it gets a span and an
/// access-log line saying the client went away.
#[test]
fn a_client_that_hangs_up_before_the_answer_still_gets_a_span_and_a_log_line() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    let addr = gateway.addr();
    let parent = Parent::new();
    rt.block_on(async {
        let mut socket = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let body = chat_body("slow-2000", "Hi").to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntraceparent: {}\r\n\r\n",
            body.len(),
            parent.traceparent(true)
        );
        socket
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .expect("send the request");
        // Hang up once the request is with the upstream (which answers after 2 s).
        let deadline = Instant::now() + CALL_TIMEOUT;
        while upstream.requests().is_empty() {
            assert!(Instant::now() < deadline, "the request never reached the upstream");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(socket);
    });
    let span = receiver.wait_for_span(SPAN_TIMEOUT, |s| s.trace_id == parent.trace_id);
    let line = gateway.wait_for_stdout(&parent.trace_id, Duration::from_millis(100));
    assert!(
        span.is_some() && line.is_some(),
        "a request whose client hung up before the answer left no trace: span {span:?}, access-log line {line:?}\n--- stdout ---\n{}",
        gateway.stdout()
    );
    assert_error_span(&span.unwrap(), "client_disconnected");
    // And the gateway still serves.
    let reply = rt.block_on(post(
        &gateway.base_url(),
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi"),
        &[],
    ));
    assert_eq!(reply.status, 200);
}

// ---------------------------------------------------------------------------------------
// A client that hangs up after `[DONE]` or before it
// ---------------------------------------------------------------------------------------

/// Sends a streamed chat request for `model` over a raw connection, reads until
/// `stop_at` is in what arrived, then drops the connection.
async fn stream_and_hang_up(addr: SocketAddr, model: &str, parent: &Parent, stop_at: &[u8]) {
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let body = streamed(chat_body(model, "Say it and go")).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntraceparent: {}\r\n\r\n",
        body.len(),
        parent.traceparent(true)
    );
    socket
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("send the request");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.windows(stop_at.len()).any(|w| w == stop_at) {
        let n = tokio::time::timeout(CALL_TIMEOUT, socket.read(&mut buf))
            .await
            .expect("the stream stalled")
            .expect("read the stream");
        assert!(
            n > 0,
            "the stream ended before {:?}",
            String::from_utf8_lossy(stop_at)
        );
        received.extend_from_slice(&buf[..n]);
    }
    drop(socket);
}

/// The official SDKs stop reading at `data: [DONE]` and close the connection, often
/// before the backend's end of body arrives: such a call is complete. A client that
/// leaves before `[DONE]` is still one that went away.
#[test]
fn a_client_that_hangs_up_after_done_completed_the_call_one_that_leaves_before_did_not() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    let (done, early) = (Parent::new(), Parent::new());
    rt.block_on(async {
        // The upstream holds the body open for 3 s after `[DONE]`.
        stream_and_hang_up(
            gateway.addr(),
            "done-pause-3000",
            &done,
            b"data: [DONE]\n\n",
        )
        .await;
        // One event of a stream that sends one every 500 ms, then gone.
        stream_and_hang_up(gateway.addr(), "drip-500", &early, b"data: {").await;
    });
    let span = span_of(&receiver, &done.trace_id, "hung up after [DONE]", &gateway);
    assert_ok_span(&span);
    let span = span_of(&receiver, &early.trace_id, "left before [DONE]", &gateway);
    assert_error_span(&span, "client_disconnected");
}
