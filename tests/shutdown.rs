//! Graceful shutdown: SIGTERM lets an in-flight stream finish, exports its span and
//! exits zero; streams still running at the shutdown deadline are cut and their spans
//! exported.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::answer::answer_from_stream;
use support::calls::{CALL_TIMEOUT, runtime};
use support::otlp::Receiver;
use support::{
    Gateway, SPAN_TIMEOUT, Upstream, assert_error_span, assert_ok_span, chat_body, streamed,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// 8. Graceful shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_lets_an_in_flight_stream_finish_exports_its_span_and_exits_zero() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let mut gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    let url = format!("{}/chat/completions", gateway.base_url());
    let body = streamed(chat_body("drip-200", "finish what you started"));
    let (events, error, signalled_at, ended_at) = rt.block_on(async {
        use http_body_util::BodyExt;
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let response = tokio::time::timeout(CALL_TIMEOUT, support::client().request(request))
            .await
            .expect("response head in time")
            .expect("response head");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Vec::new();
        let mut signalled_at = None;
        let mut error = None;
        loop {
            let frame = match tokio::time::timeout(CALL_TIMEOUT, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => panic!("the stream stalled"),
            };
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        received.extend_from_slice(&data);
                    }
                }
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break;
                }
            }
            // SIGTERM once the first event is through.
            if signalled_at.is_none() && !support::sse_data(&received).is_empty() {
                gateway.send_signal(support::Signal::Term);
                signalled_at = Some(Instant::now());
            }
        }
        (
            support::sse_data(&received),
            error,
            signalled_at.expect("at least one event arrived"),
            Instant::now(),
        )
    });
    assert_eq!(error, None, "the stream broke at shutdown: {events:?}");
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(
        ended_at - signalled_at >= Duration::from_millis(600),
        "the stream ran on after SIGTERM for only {:?}",
        ended_at - signalled_at
    );
    let answer = answer_from_stream(&events);
    assert_eq!(
        answer.content.as_deref(),
        Some("Scripted reply to: finish what you started")
    );
    let status = gateway.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
    let spans = receiver.wait_for(1, SPAN_TIMEOUT);
    assert_eq!(
        spans.len(),
        1,
        "the stream's span is flushed on exit\n{}",
        gateway.stderr()
    );
    assert_ok_span(&spans[0]);
    assert_eq!(
        spans[0].int_attr("gen_ai.usage.output_tokens"),
        Some(answer.completion_tokens.unwrap())
    );
}

/// Streams still running when `server.shutdownTimeout` passes are cut, and each one's
/// span still leaves before the gateway exits: `error.type` `shutdown`, counted in
/// the exit log. They used to be dropped with the runtime, after the final flush.
#[test]
fn streams_cut_at_the_shutdown_deadline_still_export_their_spans() {
    const STREAMS: usize = 5;
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let config = format!(
        "{}server:\n  shutdownTimeout: 1s\n",
        support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url())
    );
    let mut gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let addr = gateway.addr();
    // About 40 events 500 ms apart: 20 s, far past the 1 s drain.
    let words = vec!["word"; 40].join(" ");
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..STREAMS)
        .map(|_| {
            let body = streamed(chat_body("drip-500", &words)).to_string();
            let started = std::sync::Arc::clone(&started);
            rt.spawn(async move {
                let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let head = format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                socket.write_all(format!("{head}{body}").as_bytes()).await.expect("send");
                let mut received = Vec::new();
                let mut buf = [0u8; 4096];
                let mut counted = false;
                loop {
                    match tokio::time::timeout(CALL_TIMEOUT, socket.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
                        Ok(_) => break,
                        Err(_) => panic!("the stream was neither finished nor cut"),
                    }
                    if !counted && received.windows(7).any(|w| w == b"data: {") {
                        counted = true;
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                String::from_utf8_lossy(&received).into_owned()
            })
        })
        .collect();
    assert!(
        support::wait_until(CALL_TIMEOUT, || started
            .load(std::sync::atomic::Ordering::SeqCst)
            == STREAMS),
        "the streams did not start"
    );
    gateway.send_signal(support::Signal::Term);
    for client in clients {
        let received = rt.block_on(client).expect("client task");
        assert!(
            !received.contains("[DONE]"),
            "a stream finished: {received}"
        );
    }
    let status = gateway.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
    let spans = receiver.wait_for(STREAMS, SPAN_TIMEOUT);
    assert_eq!(spans.len(), STREAMS, "{}", gateway.stderr());
    for span in &spans {
        assert_error_span(span, "shutdown");
        assert!(span.status_message.contains("shut down"), "{span:#?}");
    }
    let stderr = gateway.stderr();
    assert!(
        stderr.contains(&format!("spans exported {STREAMS}, dropped 0")),
        "{stderr}"
    );
}
