//! The gateway's parsers on the scripted upstream's answers: a streamed answer
//! accumulates to what the plain one parses to (content, tool calls, usage), and the
//! broken streams (`malformed-sse`, `sse-error`, `flood-*`) are read as the gateway
//! reads a real backend's. These live with the gateway because the upstream crate must
//! not depend on it; the upstream's own answers are tested in `upstream/tests/`.

#[path = "support/mod.rs"]
mod support;

use celgate::protocol::openai::{parse_response, stream_accumulator};
use celgate_engine::exchange::{Exchange, Operation};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::client::StreamReply;
use support::{chat_request, scripted, streamed, with};

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

/// What the gateway's own parsers make of a non-streamed and a streamed body.
fn parsed(
    operation: Operation,
    plain: &StreamReply,
    streamed: &StreamReply,
) -> (Exchange, Exchange) {
    let mut from_plain = Exchange::default();
    parse_response(operation, &plain.body(), &mut from_plain).unwrap();
    let mut accumulator = stream_accumulator(operation);
    for (_, frame) in &streamed.frames {
        accumulator.feed(frame);
    }
    let mut from_stream = Exchange::default();
    let summary = accumulator.finish(&mut from_stream);
    assert!(summary.saw_final);
    assert_eq!(summary.malformed_events, 0);
    assert_eq!(summary.error, None);
    (from_plain, from_stream)
}

#[tokio::test]
async fn streamed_chat_reassembles_to_the_plain_content() {
    let up = scripted::start().await;
    let request = json!(serde_json::from_slice::<Value>(fixture!("chat_request.json")).unwrap());
    let plain = scripted::post(&up, "/v1/chat/completions", &request).await;
    // Over h2c too: one port serves both.
    let streamed = scripted::send(
        &up,
        Method::POST,
        "/v1/chat/completions",
        streamed(request).to_string(),
        true,
    )
    .await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert_eq!(
        streamed.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(streamed.error, None);
    assert_eq!(up.requests()[1].version, "HTTP/2.0");

    let events = streamed.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = streamed.chunks();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|c| !c.is_empty())
        .collect();
    assert!(deltas.len() >= 3, "{deltas:?}");
    let content = deltas.concat();
    assert_eq!(
        content,
        "Scripted reply to: What is the best month to visit it?"
    );
    assert_eq!(
        plain.json()["choices"][0]["message"]["content"],
        json!(content)
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], plain.json()["usage"]);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );

    let (from_plain, from_stream) = parsed(Operation::Chat, &plain, &streamed);
    assert_eq!(from_stream.choices, from_plain.choices);
    assert_eq!(from_stream.response_model, from_plain.response_model);
    assert_eq!(
        (
            from_stream.input_tokens,
            from_stream.output_tokens,
            from_stream.total_tokens
        ),
        (
            from_plain.input_tokens,
            from_plain.output_tokens,
            from_plain.total_tokens
        )
    );
}

#[tokio::test]
async fn tools_get_two_parallel_calls_streamed_interleaved() {
    let up = scripted::start().await;
    let request: Value = serde_json::from_slice(fixture!("tools_request.json")).unwrap();
    let plain = scripted::post(
        &up,
        "/v1/chat/completions",
        &with(request.clone(), "stream", json!(false)),
    )
    .await;
    let body = plain.json();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[1]["function"]["name"], "get_time");
    for call in calls {
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["type"], "function");
    }
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    let question = "What's the weather in Paris right now, and what time is it in Tokyo?";
    let weather: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(weather, json!({"location": question, "unit": "celsius"}));
    let time: Value =
        serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(time, json!({"timezone": question}));

    let streamed = scripted::post(&up, "/v1/chat/completions", &request).await;
    let chunks = streamed.chunks();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    // Each call opens with its id and name, then only argument fragments follow.
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert_eq!(deltas[1]["index"], 1);
    assert_eq!(deltas[1]["function"]["name"], "get_time");
    let fragments = &deltas[2..];
    assert!(fragments.iter().all(|d| d.get("id").is_none()));
    assert!(fragments.len() >= 6, "{fragments:?}");
    let order: Vec<u64> = fragments
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(&order[..4], &[0, 1, 0, 1], "fragments are interleaved");
    for (index, call) in calls.iter().enumerate() {
        let arguments: String = fragments
            .iter()
            .filter(|d| d["index"] == index)
            .map(|d| d["function"]["arguments"].as_str().unwrap())
            .collect();
        assert_eq!(json!(arguments), call["function"]["arguments"]);
    }
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let (from_plain, from_stream) = parsed(Operation::Chat, &plain, &streamed);
    assert_eq!(from_stream.choices, from_plain.choices);
    assert_eq!(from_stream.output_tokens, from_plain.output_tokens);
}

#[tokio::test]
async fn malformed_sse_still_carries_the_whole_content() {
    let up = scripted::start().await;
    let plain = scripted::post(&up, "/v1/chat/completions", &chat_request()).await;
    let request = with(chat_request(), "model", json!("malformed-sse"));
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    assert_eq!(reply.error, None);
    assert!(reply.frames.len() > 20, "split into many small frames");
    let body = reply.body();
    assert!(
        body.windows(4).any(|w| w == b"\r\n\r\n"),
        "some CRLF events"
    );
    assert!(!body.windows(6).any(|w| w == b"[DONE]"));
    let mut accumulator = stream_accumulator(Operation::Chat);
    for (_, frame) in &reply.frames {
        accumulator.feed(frame);
    }
    let mut ex = Exchange::default();
    let summary = accumulator.finish(&mut ex);
    assert!(!summary.saw_final);
    assert_eq!(summary.malformed_events, 1);
    assert_eq!(
        ex.choices[0].content.as_deref(),
        plain.json()["choices"][0]["message"]["content"].as_str()
    );
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn sse_error_ends_cleanly_after_an_error_event() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("sse-error"));
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    assert_eq!(reply.error, None);
    let mut accumulator = stream_accumulator(Operation::Chat);
    accumulator.feed(&reply.body());
    let summary = accumulator.finish(&mut Exchange::default());
    assert_eq!(summary.events, 3);
    assert!(summary.error.unwrap().contains("sse-error"));
}

#[tokio::test]
async fn flood_and_choices_answers_are_that_large() {
    let up = scripted::start().await;
    let request = with(chat_request(), "model", json!("flood-2"));
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    let mut ex = Exchange::default();
    let mut acc = stream_accumulator(Operation::Chat);
    acc.feed(&reply.body());
    assert!(acc.finish(&mut ex).saw_final);
    assert_eq!(
        ex.choices[0].content.as_deref().map(str::len),
        Some(2 << 20)
    );
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));

    let request = with(chat_request(), "model", json!("choices-3000"));
    let reply = scripted::post(&up, "/v1/chat/completions", &request).await;
    let json = reply.json();
    assert_eq!(json["choices"].as_array().map(Vec::len), Some(3000));
    assert_eq!(json["choices"][2999]["message"]["content"], "c0002999");
}

#[tokio::test]
async fn legacy_completions_plain_and_streamed_agree() {
    let up = scripted::start().await;
    let request: Value = serde_json::from_slice(fixture!("completions_request.json")).unwrap();
    let plain = scripted::post(
        &up,
        "/v1/completions",
        &with(request.clone(), "stream", json!(false)),
    )
    .await;
    let body = plain.json();
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert!(
        body["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with(" Scripted completion of: ")
    );
    let streamed = scripted::post(&up, "/v1/completions", &streamed(request)).await;
    let chunks = streamed.chunks();
    assert!(chunks.len() >= 4);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let (from_plain, from_stream) = parsed(Operation::TextCompletion, &plain, &streamed);
    assert_eq!(from_stream.choices, from_plain.choices);
    assert_eq!(from_stream.total_tokens, from_plain.total_tokens);
}
