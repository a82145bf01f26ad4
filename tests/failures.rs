//! Failures through the real `celgate` binary (upstream 500 and 429, refused,
//! timeout, idle backend, cut stream, client gone mid-stream, unknown model, bad JSON,
//! too deep, oversized body): the client's answer, an ERROR span with `error.type`, and
//! a gateway that keeps serving.
//!
//! Spans are told apart by trace id: most requests carry a `traceparent` of the test's
//! own ([`Parent`]), so concurrent requests can share one gateway.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::calls::{CALL_TIMEOUT, post, post_raw_stream, post_stream, runtime};
use support::otlp::Receiver;
use support::{
    BACKEND_KEY_ENV, Gateway, Parent, Reply, Upstream, assert_error_span, assert_ok_span,
    assert_openai_error, chat_body, closed_port, span_of, streamed,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// 2 and 9. Failures
// ---------------------------------------------------------------------------------------

/// Connects with a raw HTTP/1.1 socket, reads until the first SSE event, and hangs up.
async fn hang_up_after_first_event(addr: SocketAddr, body: &Value, traceparent: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let body = body.to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntraceparent: {traceparent}\r\n\r\n",
        body.len()
    );
    socket
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("send the request");
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    while !String::from_utf8_lossy(&received).contains("data: ") {
        let n = tokio::time::timeout(CALL_TIMEOUT, socket.read(&mut buf))
            .await
            .expect("the first event arrives")
            .expect("read from the proxy");
        assert!(
            n > 0,
            "the proxy closed the connection before the first event: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    // Dropping the socket hangs up mid-stream.
    drop(socket);
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn failures_answer_the_client_record_an_error_span_and_the_gateway_keeps_serving() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let base = upstream.base_url();
    let refused_port = closed_port();
    let config = format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {endpoint}
    otlpProtocol: http
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
server:
  maxBodyBytes: 4096
backends:
  - name: refused
    provider: openai
    baseUrl: http://127.0.0.1:{refused_port}/v1
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"refused-*\"]
  - name: slow
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"slow-*\"]
    timeout: 500ms
  - name: idle
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"drip-600\"]
    idleTimeout: 150ms
  - name: scripted
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"gpt-*\", \"error-*\", \"cut-*\", \"drip-*\"]
",
        endpoint = receiver.endpoint(),
    );
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let proxy = gateway.base_url();
    let addr = gateway.addr();

    let ids: Vec<Parent> = (0..11).map(|_| Parent::new()).collect();
    let tp: Vec<String> = ids.iter().map(|p| p.traceparent(true)).collect();
    let h: Vec<[(&str, &str); 1]> = tp.iter().map(|t| [("traceparent", t.as_str())]).collect();
    let e500_body = chat_body("error-500", "Hi");
    let refused_body = chat_body("refused-model", "Hi");
    let slow_body = chat_body("slow-3000", "Hi");
    let cut_body = streamed(chat_body("cut-after-3", "Hi"));
    let drip_body = streamed(chat_body("drip-200", "one two three four five six"));
    let unknown_body = chat_body("no-such-model", "Hi");
    let bad_json_body = "{\"model\": \"gpt-4o-mini\", \"messages\": [";
    let e429_body = chat_body("error-429", "Hi");
    let stalling_body = streamed(chat_body("drip-600", "Hi"));
    let deep_body = format!(
        "{{\"model\": \"gpt-4o-mini\", \"messages\": [], \"metadata\": {}1{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let mut oversized = chat_body("gpt-4o-mini", &"word ".repeat(2000));
    oversized["max_tokens"] = json!(5);
    let chat = "/chat/completions";
    let started = Instant::now();
    let (e500, refused, timeout, cut, gone, unknown, bad_json, too_big, e429, deep, stalled) = rt
        .block_on(async {
            tokio::join!(
                post(&proxy, chat, &e500_body, &h[0]),
                post(&proxy, chat, &refused_body, &h[1]),
                async {
                    let reply = post(&proxy, chat, &slow_body, &h[2]).await;
                    (reply, started.elapsed())
                },
                post_stream(&proxy, chat, &cut_body, &h[3]),
                hang_up_after_first_event(addr, &drip_body, &tp[4]),
                post(&proxy, chat, &unknown_body, &h[5]),
                post_raw_stream(&proxy, chat, bad_json_body, &h[6]),
                post(&proxy, chat, &oversized, &h[7]),
                post(&proxy, chat, &e429_body, &h[8]),
                post_raw_stream(&proxy, chat, deep_body.clone(), &h[9]),
                post_stream(&proxy, chat, &stalling_body, &h[10]),
            )
        });

    // Upstream 500: the backend's own error reaches the client unchanged.
    assert_eq!(e500.status, 500, "{}", e500.text());
    assert_eq!(
        e500.json()["error"]["type"],
        "server_error",
        "{}",
        e500.text()
    );
    assert_error_span(
        &span_of(&receiver, &ids[0].trace_id, "error-500", &gateway),
        "500",
    );

    // Nothing listens on the backend's port: celgate answers 502 itself.
    assert_openai_error(&refused, 502, "upstream_error", "connect_error");
    assert_error_span(
        &span_of(&receiver, &ids[1].trace_id, "refused", &gateway),
        "connect_error",
    );

    // The backend's `timeout: 500ms` cuts a 3 s wait short with a 504.
    let (timeout, elapsed) = timeout;
    assert_openai_error(&timeout, 504, "upstream_error", "timeout");
    assert!(
        elapsed < Duration::from_millis(2500),
        "the 504 came after {elapsed:?}: the backend timeout of 500ms was not applied"
    );
    assert_error_span(
        &span_of(&receiver, &ids[2].trace_id, "slow-3000", &gateway),
        "timeout",
    );

    // A stream cut after 3 events: the client gets those 3, then a broken body.
    assert_eq!(cut.status, 200);
    let events = cut.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(
        cut.error.is_some(),
        "the client must see the stream end abnormally, not as a complete body: {events:?}"
    );
    let cut_span = span_of(&receiver, &ids[3].trace_id, "cut-after-3", &gateway);
    assert_error_span(&cut_span, "stream_cut");

    // The client hung up after the first event of a slow stream.
    assert!(gone.contains("200"), "{gone}");
    assert_error_span(
        &span_of(&receiver, &ids[4].trace_id, "client gone", &gateway),
        "client_disconnected",
    );

    // Requests celgate refuses itself.
    assert_openai_error(&unknown, 404, "invalid_request_error", "model_not_found");
    assert_error_span(
        &span_of(&receiver, &ids[5].trace_id, "unknown model", &gateway),
        "model_not_found",
    );
    let bad_json = Reply {
        status: bad_json.status,
        headers: bad_json.headers.clone(),
        body: bad_json.body(),
    };
    assert_openai_error(&bad_json, 400, "invalid_request_error", "invalid_request");
    assert_error_span(
        &span_of(&receiver, &ids[6].trace_id, "invalid JSON", &gateway),
        "invalid_request",
    );
    assert_openai_error(&too_big, 413, "invalid_request_error", "request_too_large");
    assert_error_span(
        &span_of(&receiver, &ids[7].trace_id, "oversized body", &gateway),
        "request_too_large",
    );

    // A 429 passes through like the 500, with its own status as `error.type`.
    assert_eq!(e429.status, 429, "{}", e429.text());
    assert_eq!(e429.json()["error"]["code"], "rate_limit_exceeded");
    assert_error_span(
        &span_of(&receiver, &ids[8].trace_id, "error-429", &gateway),
        "429",
    );
    // Nesting deeper than server.maxJsonDepth (64 by default).
    let deep = Reply {
        status: deep.status,
        headers: deep.headers.clone(),
        body: deep.body(),
    };
    assert_openai_error(&deep, 400, "invalid_request_error", "json_too_deep");
    assert_error_span(
        &span_of(&receiver, &ids[9].trace_id, "deep JSON", &gateway),
        "json_too_deep",
    );
    // A backend silent for longer than its `idleTimeout` (150ms; drip-600 waits 600 ms
    // before its first event): the stream is ended with an error.
    assert_eq!(stalled.status, 200);
    assert!(stalled.error.is_some(), "{:?}", stalled.events());
    assert!(!stalled.events().iter().any(|e| e == "[DONE]"));
    assert_error_span(
        &span_of(&receiver, &ids[10].trace_id, "idle backend", &gateway),
        "timeout",
    );
    // Only the calls that got past celgate's own checks reached the upstream.
    let mut reached: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| {
            r.json()
                .and_then(|b| b["model"].as_str().map(str::to_owned))
        })
        .collect();
    reached.sort();
    assert_eq!(
        reached,
        [
            "cut-after-3",
            "drip-200",
            "drip-600",
            "error-429",
            "error-500",
            "slow-3000"
        ]
    );

    // None of that disturbed the gateway: a normal call and a normal stream still work.
    let after = Parent::new();
    let h_after = [("traceparent", after.traceparent(true))];
    let h_after: Vec<(&str, &str)> = h_after.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ok_body = chat_body("gpt-4o-mini", "Still there?");
    let ok_stream_body = streamed(chat_body("gpt-4o-mini", "Still streaming?"));
    let (ok, ok_stream) = rt.block_on(async {
        tokio::join!(
            post(&proxy, chat, &ok_body, &h_after),
            post_stream(&proxy, chat, &ok_stream_body, &[]),
        )
    });
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.json()["choices"][0]["message"]["content"],
        "Scripted reply to: Still there?"
    );
    assert_eq!(ok_stream.status, 200);
    assert_eq!(ok_stream.error, None);
    assert_eq!(
        ok_stream.events().last().map(String::as_str),
        Some("[DONE]")
    );
    assert_ok_span(&span_of(
        &receiver,
        &after.trace_id,
        "the call afterwards",
        &gateway,
    ));
}
