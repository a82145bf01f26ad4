//! The scripted upstream's answers, through its public API: what each endpoint and
//! fault script sends, over HTTP/1.1 and h2c, and what it records.
//!
//! Tests that check its answers with the gateway's parsers live with the gateway
//! (`tests/harness.rs`), since this crate must not depend on it.

#[path = "../../tests/support/bodies.rs"]
mod bodies;
#[path = "../../tests/support/client.rs"]
mod client;
#[path = "../../tests/support/scripted.rs"]
mod scripted;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bodies::{chat_request, streamed, with};
use bytes::Bytes;
use celgate_upstream::{CREATED, EMBEDDING_DIMENSIONS, ResponseEnd, ScriptedUpstream};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

/// A recorded exchange from `tests/fixtures/exchanges/`.
macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/exchanges/",
            $name
        ))
        .as_slice()
    };
}

#[tokio::test]
async fn plain_chat_is_a_realistic_completion_and_is_recorded() {
    let up = scripted::start().await;
    let reply = scripted::post(&up, "/v1/chat/completions", &chat_request()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["x-request-id"], "req_scripted1");
    assert_eq!(
        reply.json(),
        json!({
            "id": "chatcmpl-scripted1",
            "object": "chat.completion",
            "created": CREATED,
            "model": "gpt-4o-mini",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Scripted reply to: What is CEL?",
                    "refusal": null
                },
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 6,
                "completion_tokens": 6,
                "total_tokens": 12,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0
                }
            },
            "system_fingerprint": "fp_scripted"
        })
    );

    let requests = up.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.version, "HTTP/1.1");
    assert_eq!(recorded.header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded.json(), Some(chat_request()));
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_chunk() {
    let up = scripted::start().await;
    let reply = scripted::post(
        &up,
        "/v1/chat/completions",
        &with(chat_request(), "stream", json!(true)),
    )
    .await;
    let chunks = reply.chunks();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn max_tokens_truncates_with_finish_reason_length() {
    let up = scripted::start().await;
    let reply = scripted::post(
        &up,
        "/v1/chat/completions",
        &with(chat_request(), "max_tokens", json!(2)),
    )
    .await
    .json();
    assert_eq!(reply["choices"][0]["message"]["content"], "Scripted reply");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn a_tool_result_gets_text() {
    let up = scripted::start().await;
    let request: Value = serde_json::from_slice(fixture!("tools_followup_request.json")).unwrap();
    let reply = scripted::post(
        &up,
        "/v1/chat/completions",
        &with(request, "stream", json!(false)),
    )
    .await
    .json();
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "Scripted reply to: What's the weather in Paris right now, and what time is it in Tokyo?"
    );
    assert!(reply["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn cut_after_3_sends_three_events_then_breaks_the_connection() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("cut-after-3"));
    for http2 in [false, true] {
        // Not asked to stream: the script streams anyway.
        let reply = scripted::send(
            &up,
            Method::POST,
            "/v1/chat/completions",
            request.to_string(),
            http2,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let events = reply.events();
        assert_eq!(events.len(), 3, "http2={http2}: {events:?}");
        assert!(!events.contains(&"[DONE]".to_owned()));
        assert!(reply.error.is_some(), "http2={http2}: the body must fail");
    }
}

#[tokio::test]
async fn reset_after_sends_n_events_then_resets_the_connection() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("reset-after-2"));
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.events().len(), 2);
    let error = reply.error.clone().expect("the body must fail");
    assert!(
        error.to_ascii_lowercase().contains("reset"),
        "a reset, not a clean close: {error}"
    );
    let recorded = &up.responses()[0];
    assert_eq!(recorded.end, ResponseEnd::Reset);
    assert_eq!(recorded.body, reply.body());
}

#[tokio::test]
async fn done_pause_ends_the_body_that_long_after_done() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("done-pause-300"));
    let started = Instant::now();
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    let took = started.elapsed();
    assert_eq!(reply.error, None);
    assert_eq!(reply.events().last().map(String::as_str), Some("[DONE]"));
    // `[DONE]` arrived, then the body stayed open for the pause.
    let done_at = reply.frames.last().map(|(at, _)| *at).unwrap();
    let open_after_done = (started + took).duration_since(done_at);
    assert!(
        open_after_done >= Duration::from_millis(250),
        "{open_after_done:?}"
    );
}

#[tokio::test]
async fn echo_key_scripts_echo_the_received_key_where_they_say() {
    let up = scripted::start().await;
    let echo = |model: &str| with(chat_request(), "model", json!(model));
    let has_key = |bytes: &[u8]| bytes.windows(7).any(|w| w == b"sk-test");
    let unauthorized = scripted::post(&up, "/v1/chat/completions", &echo("echo-key-401")).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert!(has_key(&unauthorized.body()));
    let header = scripted::post(&up, "/v1/chat/completions", &echo("echo-key-header")).await;
    assert_eq!(header.headers["x-echoed-authorization"], "Bearer sk-test");
    assert_eq!(header.headers["x-key-sk-test"], "1");
    assert!(!has_key(&header.body()));
    let text = scripted::post(&up, "/v1/chat/completions", &echo("echo-key-text")).await;
    assert_eq!(
        text.json()["choices"][0]["message"]["content"],
        "Scripted reply to: my key is sk-test"
    );
    let stream = scripted::post(&up, "/v1/chat/completions", &echo("echo-key-stream")).await;
    assert!(has_key(&stream.body()));
    assert!(stream.frames.iter().all(|(_, f)| !has_key(f)), "split");
    assert!(stream.frames.iter().any(|(_, f)| f.ends_with(b"sk-")));
    let error = scripted::post(&up, "/v1/chat/completions", &echo("echo-key-sse-error")).await;
    let events = String::from_utf8(error.body().to_vec()).unwrap();
    let events: Vec<&str> = events.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[2].starts_with("event: error\ndata: "), "{events:?}");
    assert!(events[2].contains("Invalid API key sk-test"), "{events:?}");
    let gzip = scripted::post(&up, "/v1/chat/completions", &echo("echo-key-gzip")).await;
    assert_eq!(gzip.headers["content-encoding"], "gzip");
}

#[tokio::test]
async fn invalid_json_is_a_well_framed_half_body() {
    let up = scripted::start().await;
    let whole = scripted::post(&up, "/v1/chat/completions", &chat_request()).await;
    let request = with(streamed(chat_request()), "model", json!("invalid-json"));
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(
        reply.headers["content-length"],
        reply.body().len().to_string()
    );
    assert_eq!(reply.body().len(), whole.body().len() / 2);
    assert!(serde_json::from_slice::<Value>(&reply.body()).is_err());
}

#[tokio::test]
async fn gzip_answers_decompress_to_the_normal_ones() {
    use std::io::Read as _;
    let gunzip = |bytes: &[u8]| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("gzip"));
    let plain = scripted::post(&up, "/v1/chat/completions", &request).await;
    assert_eq!(plain.headers["content-encoding"], "gzip");
    let json: Value = serde_json::from_slice(&gunzip(&plain.body())).unwrap();
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "Scripted reply to: What is CEL?"
    );

    let streamed = scripted::post(&up, "/v1/chat/completions", &streamed(request)).await;
    assert_eq!(streamed.headers["content-encoding"], "gzip");
    assert!(streamed.frames.len() > 3, "flushed event by event");
    let text = String::from_utf8(gunzip(&streamed.body())).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn big_answers_are_that_many_mib() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("big-1"));
    let plain = scripted::post(&up, "/v1/chat/completions", &request)
        .await
        .json();
    let content = plain["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.len(), 1 << 20);
    assert!(content.starts_with("[0000000]"));
    let streamed = scripted::post(&up, "/v1/chat/completions", &streamed(request)).await;
    let chunks = streamed.chunks();
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(pieces.len(), 1024);
    assert_eq!(pieces.concat(), content);
}

#[tokio::test]
async fn stall_goes_silent_after_two_events_and_answers_are_recorded() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("stall-300"));
    let start = Instant::now();
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.events().last().map(String::as_str), Some("[DONE]"));
    // The first two events come before the stall, the third after it. Judged
    // against the request's start, not the previous frame's arrival: a reader
    // late for the second frame (a busy machine) would shorten the gap it sees,
    // but no reader can see the third event before the stall has passed.
    let mut events = 0;
    let mut before_stall = false;
    for (at, frame) in &reply.frames {
        events += frame.windows(6).filter(|w| w == b"data: ").count();
        if events == 2 {
            before_stall = true;
        } else if events > 2 {
            assert!(
                before_stall,
                "the third event came with the second: no stall"
            );
            assert!(at.duration_since(start) >= Duration::from_millis(300));
            break;
        }
    }
    assert!(before_stall);
    let recorded = up.responses();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].seq, 1);
    assert_eq!(recorded[0].end, ResponseEnd::Complete);
    assert_eq!(recorded[0].body, reply.body());
    assert_eq!(up.active_responses(), 0);
}

#[tokio::test]
async fn drip_spaces_the_events() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("drip-120"));
    let start = Instant::now();
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    assert_eq!(reply.error, None);
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // Event k cannot leave before (k + 1) × 120 ms: check every frame against that
    // lower bound (a late reader can only make frames later, never earlier).
    assert!(reply.frames.len() > 1, "events arrive separately");
    let mut sent = 0;
    for (at, frame) in &reply.frames {
        sent += frame.windows(6).filter(|w| w == b"data: ").count();
        let earliest = Duration::from_millis(120) * u32::try_from(sent).unwrap();
        assert!(
            at.duration_since(start) >= earliest,
            "event {sent} came early"
        );
    }
    assert_eq!(sent, events.len());
}

#[tokio::test]
async fn slow_delays_and_hang_never_answers() {
    let up = scripted::start().await;
    let start = Instant::now();
    let reply = scripted::post(
        &up,
        "/v1/chat/completions",
        &with(chat_request(), "model", json!("slow-300")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.json()["model"], "slow-300");

    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        scripted::post(
            &up,
            "/v1/chat/completions",
            &with(chat_request(), "model", json!("hang")),
        ),
    )
    .await;
    assert!(hung.is_err(), "hang must not answer");
    assert_eq!(up.requests().len(), 2, "the hung request is still recorded");
}

#[tokio::test]
async fn dropping_the_upstream_releases_hung_requests() {
    let up = scripted::start().await;
    let addr = up.addr();
    let client = tokio::spawn(async move {
        let http = client::client();
        let request = Request::post(format!("http://{addr}/v1/chat/completions"))
            .body(Full::new(Bytes::from(r#"{"model":"hang"}"#)))
            .unwrap();
        http.request(request).await.map(|r| r.status())
    });
    while up.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(up);
    let outcome = tokio::time::timeout(Duration::from_secs(5), client)
        .await
        .expect("the hung request ends when the upstream is dropped")
        .unwrap();
    // Either the 503 made it out or the connection was closed first.
    assert!(matches!(
        outcome,
        Ok(StatusCode::SERVICE_UNAVAILABLE) | Err(_)
    ));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn errors_are_openai_shaped() {
    let up = scripted::start().await;
    let reply = scripted::post(
        &up,
        "/v1/chat/completions",
        &with(chat_request(), "model", json!("error-500")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.headers["x-should-retry"], "false");
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["code"], Value::Null);
    assert!(error["message"].is_string());

    let reply = scripted::post(
        &up,
        "/v1/embeddings",
        &json!({"model": "error-429", "input": "x"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");

    for (body, status) in [
        ("{not json", StatusCode::BAD_REQUEST),
        ("[1, 2]", StatusCode::BAD_REQUEST),
        (r#"{"messages": []}"#, StatusCode::BAD_REQUEST),
    ] {
        let reply = scripted::send(&up, Method::POST, "/v1/chat/completions", body, false).await;
        assert_eq!(reply.status, status, "{body}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }

    let reply = scripted::send(&up, Method::POST, "/v1/nope", "{}", false).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["error"]["code"], "unknown_url");
    let reply = scripted::send(&up, Method::GET, "/v1/chat/completions", "", false).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");

    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 7, "every request is recorded: {paths:?}");
}

#[tokio::test]
async fn unrecorded_counts_requests_but_keeps_none() {
    let up = ScriptedUpstream::start_unrecorded("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for n in 1..=3 {
        let reply = scripted::post(&up, "/v1/chat/completions", &chat_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
        // Ids still count requests, as when they are recorded.
        assert_eq!(reply.json()["id"], format!("chatcmpl-scripted{n}"));
        assert_eq!(reply.headers["x-request-id"], format!("req_scripted{n}"));
    }
    assert_eq!(up.request_count(), 3);
    assert!(up.requests().is_empty());

    let recorded = scripted::start().await;
    scripted::post(&recorded, "/v1/chat/completions", &chat_request()).await;
    assert_eq!(recorded.request_count(), 1);
    assert_eq!(recorded.requests().len(), 1);
}

#[tokio::test]
async fn embeddings_one_item_per_input() {
    let up = scripted::start().await;
    let request = json!({"model": "text-embedding-3-small", "input": ["a b", "c", "d e f"]});
    let reply = scripted::post(&up, "/v1/embeddings", &request).await.json();
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["model"], "text-embedding-3-small");
    assert_eq!(
        reply["usage"],
        json!({"prompt_tokens": 6, "total_tokens": 6})
    );
    let data = reply["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let vector = item["embedding"].as_array().unwrap();
        assert_eq!(vector.len(), EMBEDDING_DIMENSIONS);
        assert!(vector.iter().all(|v| v.as_f64().unwrap().abs() <= 1.0));
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    let single = scripted::post(&up, "/v1/embeddings", &json!({"model": "m", "input": "c"}))
        .await
        .json();
    assert_eq!(single["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        single["data"][0]["embedding"], data[1]["embedding"],
        "deterministic"
    );

    let tokens = scripted::post(
        &up,
        "/v1/embeddings",
        &json!({"model": "m", "input": [1, 2, 3]}),
    )
    .await
    .json();
    assert_eq!(tokens["data"].as_array().unwrap().len(), 1);

    let wide = scripted::post(
        &up,
        "/v1/embeddings",
        &json!({"model": "m", "input": "c", "dimensions": 16}),
    )
    .await
    .json();
    assert_eq!(wide["data"][0]["embedding"].as_array().unwrap().len(), 16);

    // The SDKs' default: base64 of little-endian f32s.
    let encoded = scripted::post(
        &up,
        "/v1/embeddings",
        &json!({"model": "m", "input": "c", "encoding_format": "base64"}),
    )
    .await
    .json();
    let floats: Vec<u8> = data[1]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| (v.as_f64().unwrap() as f32).to_le_bytes())
        .collect();
    assert_eq!(
        encoded["data"][0]["embedding"],
        json!(BASE64.encode(&floats))
    );
}

#[tokio::test]
async fn models_are_listed() {
    let up = scripted::start().await;
    let reply = scripted::send(&up, Method::GET, "/v1/models", "", false)
        .await
        .json();
    assert_eq!(reply["object"], "list");
    let data = reply["data"].as_array().unwrap();
    assert!(
        data.iter()
            .any(|m| m["id"] == "gpt-4o-mini" && m["object"] == "model")
    );
    assert_eq!(up.base_url(), format!("http://{}/v1", up.addr()));
}
