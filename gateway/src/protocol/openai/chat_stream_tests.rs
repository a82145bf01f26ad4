//! The chat stream reader, fed through the SSE framing as the proxy feeds it.

use super::*;
use crate::protocol::limits::{MAX_LABEL_BYTES, MAX_TEXT_BYTES};
use crate::protocol::openai::{parse_response, stream_accumulator};
use crate::protocol::sse::{MAX_LINE_BYTES, RETAINED_CAPACITY};
use crate::protocol::{FinalEvent, StreamSummary};
use celgate_engine::exchange::TokenDetails;
use serde_json::json;

const CHAT_STREAM: &[u8] = fixture!("chat_stream.sse");
const TOOLS_STREAM: &[u8] = fixture!("tools_stream.sse");
const CHAT_TEXT: &str =
    "May or September: Lisbon’s weather is warm and sunny, with fewer crowds than in summer.";

use crate::test_rng::Rng;

fn run_chunks<'a>(
    op: Operation,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Exchange, StreamSummary) {
    let mut acc = stream_accumulator(op);
    for chunk in chunks {
        acc.feed(chunk);
    }
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    (ex, summary)
}

fn run(op: Operation, stream: &[u8]) -> (Exchange, StreamSummary) {
    run_chunks(op, [stream])
}

fn run_str(stream: &str) -> (Exchange, StreamSummary) {
    run(Operation::Chat, stream.as_bytes())
}

/// Feeds `stream` whole, one byte at a time, and in many random chunkings (empty
/// chunks included), asserting that every way gives the same result.
fn run_all_chunkings(op: Operation, stream: &[u8]) -> (Exchange, StreamSummary) {
    let whole = run(op, stream);
    assert_eq!(run_chunks(op, stream.chunks(1)), whole, "byte at a time");
    let mut rng = Rng(0x5EED_CE16_A7E0_0001);
    for _ in 0..200 {
        let max = 1 + rng.below(64);
        let mut chunks = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let (head, tail) = rest.split_at(rng.below(max + 1).min(rest.len()));
            chunks.push(head);
            rest = tail;
        }
        assert_eq!(run_chunks(op, chunks), whole, "random chunking");
    }
    whole
}

fn crlf(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len() * 2);
    for &b in stream {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
    }
}

#[test]
fn chat_stream_fixture() {
    let (ex, summary) = run_all_chunkings(Operation::Chat, CHAT_STREAM);
    assert_eq!(
        summary,
        StreamSummary {
            saw_final: true,
            events: 23,
            malformed_events: 0,
            error: None,
            truncated: false,
        }
    );
    assert_eq!(
        ex.choices,
        vec![Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: Some(CHAT_TEXT.to_owned()),
            tool_calls: vec![],
            finish_reason: Some("stop".to_owned()),
            reasoning: None,
        }]
    );
    assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-stream789"));
    assert_eq!(ex.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(42), Some(19), Some(61))
    );

    let body: Value =
        serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-stream789",
            "object": "chat.completion",
            "created": 1721900100,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": CHAT_TEXT},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 42, "completion_tokens": 19, "total_tokens": 61,
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
                "completion_tokens_details": {
                    "accepted_prediction_tokens": 0, "audio_tokens": 0,
                    "reasoning_tokens": 0, "rejected_prediction_tokens": 0
                }
            },
            "system_fingerprint": "fp_0ba0d124f1"
        })
    );
    assert_eq!(
        ex.token_details,
        TokenDetails {
            cache_read: Some(0),
            cache_write: None,
            input_audio: Some(0),
            reasoning: Some(0),
            output_audio: Some(0),
        }
    );
}

#[test]
fn without_body_reads_everything_but_renders_no_body() {
    let mut with = stream_accumulator(Operation::Chat);
    let mut without = stream_accumulator(Operation::Chat).without_body();
    with.feed(CHAT_STREAM);
    without.feed(CHAT_STREAM);
    let (mut a, mut b) = (Exchange::default(), Exchange::default());
    with.finish(&mut a);
    without.finish(&mut b);
    assert!(a.response_body.is_some());
    assert_eq!(b.response_body, None);
    a.response_body = None;
    assert_eq!(a, b);
}

#[test]
fn tools_stream_fixture() {
    let (ex, summary) = run_all_chunkings(Operation::Chat, TOOLS_STREAM);
    assert!(summary.saw_final);
    assert_eq!(summary.malformed_events, 0);
    assert_eq!(summary.error, None);
    assert_eq!(summary.events, 17);
    assert_eq!(
        ex.choices,
        vec![Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: None,
            tool_calls: vec![
                call(
                    "call_wX3kQ9ZpLm2v",
                    "get_weather",
                    r#"{"location":"Paris, France","unit":"celsius"}"#
                ),
                call(
                    "call_T7fYb0RnHs4c",
                    "get_time",
                    r#"{"timezone":"Asia/Tokyo"}"#
                ),
            ],
            finish_reason: Some("tool_calls".to_owned()),
            reasoning: None,
        }]
    );
    assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-tools456"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(96), Some(48), Some(144))
    );

    let body: Value =
        serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"],
        json!([
            {"id": "call_wX3kQ9ZpLm2v", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"location\":\"Paris, France\",\"unit\":\"celsius\"}"}},
            {"id": "call_T7fYb0RnHs4c", "type": "function", "function": {
                "name": "get_time", "arguments": "{\"timezone\":\"Asia/Tokyo\"}"}}
        ])
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
}

/// The synthesized body, parsed as a non-streaming response, describes the same
/// response the stream did.
#[test]
fn rendered_body_round_trips_through_parse_response() {
    for stream in [CHAT_STREAM, TOOLS_STREAM] {
        let (streamed, _) = run(Operation::Chat, stream);
        let body = streamed.response_body.clone().unwrap_or_default();
        let mut parsed = Exchange::default();
        parse_response(Operation::Chat, body.as_bytes(), &mut parsed).unwrap();
        assert_eq!(parsed.choices, streamed.choices);
        assert_eq!(parsed.response_id, streamed.response_id);
        assert_eq!(parsed.response_model, streamed.response_model);
        assert_eq!(
            (
                parsed.input_tokens,
                parsed.output_tokens,
                parsed.total_tokens
            ),
            (
                streamed.input_tokens,
                streamed.output_tokens,
                streamed.total_tokens
            )
        );
        assert_eq!(parsed.response_body.as_deref(), Some(body.as_str()));
    }
}

#[test]
fn crlf_and_cr_line_endings() {
    let expected = run(Operation::Chat, CHAT_STREAM);
    let crlf_stream = crlf(CHAT_STREAM);
    assert_eq!(run_all_chunkings(Operation::Chat, &crlf_stream), expected);
    let cr_stream: Vec<u8> = CHAT_STREAM
        .iter()
        .map(|&b| if b == b'\n' { b'\r' } else { b })
        .collect();
    assert_eq!(run_all_chunkings(Operation::Chat, &cr_stream), expected);
    let tools_crlf = crlf(TOOLS_STREAM);
    assert_eq!(
        run_all_chunkings(Operation::Chat, &tools_crlf),
        run(Operation::Chat, TOOLS_STREAM)
    );
}

#[test]
fn sse_field_syntax() {
    let stream = concat!(
        "\u{feff}: OPENROUTER PROCESSING\n",
        "\n",
        "retry: 3000\n",
        "id: 1\n",
        "event: message\n",
        "data:{\"id\":\"x1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"a\"}}]}\n",
        "\n",
        ": keep-alive\n",
        "data: {\"choices\":[{\"index\":0,\n",
        "data: \"delta\":{\"content\":\"b\\nc\"}}]}\n",
        "unknown-field: whatever\n",
        "data\n",
        "\n",
        "data:  {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" d\"},\"finish_reason\":\"stop\"}]}\n",
        "\n",
        "data:[DONE]\n",
        "\n",
    );
    let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
    assert_eq!(
        summary,
        StreamSummary {
            saw_final: true,
            events: 4,
            malformed_events: 0,
            error: None,
            truncated: false,
        }
    );
    // Multi-line data is joined with "\n" (inside JSON that is whitespace); a bare
    // `data` line adds an empty line; only one space after the colon is stripped.
    assert_eq!(ex.choices[0].content.as_deref(), Some("ab\nc d"));
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(ex.response_id.as_deref(), Some("x1"));
}

#[test]
fn final_event_without_blank_line_is_processed() {
    for tail in ["data: [DONE]", "data: [DONE]\n", "data: [DONE]\r"] {
        let stream =
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n{tail}");
        let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
        assert!(summary.saw_final, "{tail:?}");
        assert_eq!(summary.events, 2);
        assert_eq!(ex.choices[0].content.as_deref(), Some("hi"));
    }
    let (ex, summary) = run_str("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}");
    assert!(!summary.saw_final);
    assert_eq!(ex.choices[0].content.as_deref(), Some("x"));
}

#[test]
fn malformed_event_is_counted_and_skipped() {
    let stream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lost\"\n\n",
        "data: not json at all\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" two\"}}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
    assert_eq!(summary.events, 5);
    assert_eq!(summary.malformed_events, 2);
    assert!(summary.saw_final);
    assert_eq!(ex.choices[0].content.as_deref(), Some("one two"));
}

#[test]
fn stream_cut_before_done() {
    // Cut in the middle of the usage chunk's JSON.
    let cut = CHAT_STREAM.len() - 200;
    let (ex, summary) = run_all_chunkings(Operation::Chat, &CHAT_STREAM[..cut]);
    assert!(!summary.saw_final);
    assert_eq!(summary.malformed_events, 1, "the truncated last event");
    assert_eq!(summary.events, 22);
    assert_eq!(ex.choices[0].content.as_deref(), Some(CHAT_TEXT));
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (None, None, None)
    );
    let body: Value =
        serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
    assert!(body.get("usage").is_none());

    // Cut mid-content: what arrived is kept.
    let at = CHAT_STREAM
        .windows(9)
        .position(|w| w == b" weather\"")
        .unwrap_or_default();
    let (ex, summary) = run(Operation::Chat, &CHAT_STREAM[..at]);
    assert!(!summary.saw_final);
    assert_eq!(
        ex.choices[0].content.as_deref(),
        Some("May or September: Lisbon’s")
    );
    assert_eq!(ex.choices[0].finish_reason, None);
}

#[test]
fn error_events_are_recorded() {
    let stream = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
        "event: error\n",
        "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n",
    );
    let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
    assert_eq!(
        summary.error.as_deref(),
        Some("The server had an error while processing your request.")
    );
    assert!(!summary.saw_final);
    assert_eq!(summary.malformed_events, 0);
    assert_eq!(ex.choices[0].content.as_deref(), Some("par"));

    // An error payload without an event name, as the only thing in the stream.
    let error = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    let (ex, summary) = run_str(&format!("data: {error}\n\n"));
    assert_eq!(summary.error.as_deref(), Some("Rate limit reached"));
    assert!(ex.choices.is_empty());
    assert_eq!(ex.response_body.as_deref(), Some(error));

    // A plain-text error event, a bare string error; only the first is kept.
    let (_, summary) =
        run_str("event: error\ndata: upstream timed out\n\ndata: {\"error\":\"later\"}\n\n");
    assert_eq!(summary.error.as_deref(), Some("upstream timed out"));
    assert_eq!(summary.malformed_events, 0);
    let (_, summary) = run_str("data: {\"error\":\"overloaded\"}\n\n");
    assert_eq!(summary.error.as_deref(), Some("overloaded"));
}

#[test]
fn legacy_text_completion_stream() {
    let stream = concat!(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\"\\n\\nScoops\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\" of joy\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (ex, summary) = run_all_chunkings(Operation::TextCompletion, stream.as_bytes());
    assert!(summary.saw_final);
    assert_eq!(ex.choices[0].content.as_deref(), Some("\n\nScoops of joy"));
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("length"));
    let body = ex.response_body.clone().unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "\n\nScoops of joy", "index": 0, "finish_reason": "length"}]
        })
    );
    let mut parsed = Exchange::default();
    parse_response(Operation::TextCompletion, body.as_bytes(), &mut parsed).unwrap();
    assert_eq!(parsed.choices, ex.choices);
}

#[test]
fn several_choices_interleaved() {
    let stream = concat!(
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"B\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"A\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"},{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
    );
    let (ex, _) = run_all_chunkings(Operation::Chat, stream.as_bytes());
    let got: Vec<_> = ex
        .choices
        .iter()
        .map(|c| (c.index, c.content.as_deref(), c.finish_reason.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (0, Some("Aa"), Some("length")),
            (1, Some("Bb"), Some("stop"))
        ]
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(3), Some(4), Some(7))
    );
    let body: Value =
        serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
}

#[test]
fn tool_calls_without_index_and_legacy_function_call() {
    // Some OpenAI-compatible servers omit `index` and send each call whole.
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"function_call\":{\"name\":\"legacy\",\"arguments\":\"{\\\"q\\\"\"}}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"function_call\":{\"arguments\":\":2}\"}},\"finish_reason\":\"function_call\"}]}\n\n",
    );
    let (ex, _) = run_all_chunkings(Operation::Chat, stream.as_bytes());
    assert_eq!(
        ex.choices[0].tool_calls,
        vec![
            call("a", "f", r#"{"x":1}"#),
            call("b", "g", "{}"),
            call("", "legacy", r#"{"q":2}"#)
        ]
    );
    assert_eq!(ex.choices[0].role, "assistant");
}

#[test]
fn azure_style_empty_prelude_and_odd_types_are_tolerated() {
    let stream = concat!(
        "data: {\"id\":\"\",\"model\":\"\",\"created\":0,\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n",
        "data: {\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\",\"created\":\"soon\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":5},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\",\"content_filter_results\":{}}],\"usage\":null}\n\n",
    );
    let (ex, summary) = run_all_chunkings(Operation::Chat, stream.as_bytes());
    assert_eq!(summary.malformed_events, 0);
    assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-az"));
    assert_eq!(ex.response_model.as_deref(), Some("gpt-4o"));
    assert_eq!(ex.choices[0].content.as_deref(), Some("ok"));
    assert_eq!(ex.input_tokens, None);
}

#[test]
fn oversized_line_is_dropped_not_buffered() {
    let mut acc = stream_accumulator(Operation::Chat);
    acc.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: \"");
    let filler = vec![b'x'; 64 * 1024];
    for _ in 0..(MAX_LINE_BYTES / filler.len() + 2) {
        acc.feed(&filler);
        assert!(acc.buffered_line().0 <= MAX_LINE_BYTES);
    }
    assert!(acc.buffered_line().1 <= RETAINED_CAPACITY);
    acc.feed(b"\"\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n");
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    assert_eq!(summary.events, 4);
    assert_eq!(summary.malformed_events, 1);
    assert!(summary.saw_final);
    assert_eq!(ex.choices[0].content.as_deref(), Some("ab"));

    // The same when the huge line arrives in one chunk (it is never copied whole),
    // and when an event's data lines add up past the limit.
    let mut big = b"data: ".to_vec();
    big.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 1));
    big.extend_from_slice(b"\n\n");
    big.extend_from_slice(&b"data: 0123456789\n".repeat(MAX_LINE_BYTES / 10));
    big.extend_from_slice(b"\ndata: [DONE]\n\n");
    let (_, summary) = run(Operation::Chat, &big);
    assert_eq!(
        (summary.events, summary.malformed_events, summary.saw_final),
        (3, 2, true)
    );
}

#[test]
fn an_over_long_line_is_dropped_however_it_is_chunked() {
    // A line one byte over the limit whose data alone fits: it used to be parsed
    // when it arrived in one chunk and dropped when split, so the span depended on
    // how the network cut the stream.
    let chunk = br#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#;
    let mut line = b"data: ".to_vec();
    line.extend_from_slice(chunk);
    line.resize(MAX_LINE_BYTES + 1, b' ');
    let mut stream = line.clone();
    stream.extend_from_slice(b"\n\n: ");
    // An over-long comment line too.
    stream.resize(stream.len() + MAX_LINE_BYTES, b'c');
    stream.extend_from_slice(b"\r\n\ndata: [DONE]\n\n");
    let whole = run(Operation::Chat, &stream);
    assert_eq!(
        whole.1,
        StreamSummary {
            saw_final: true,
            events: 3,
            malformed_events: 2,
            error: None,
            truncated: false,
        }
    );
    assert!(whole.0.choices.is_empty());
    for size in [1, 7, 4096, MAX_LINE_BYTES, MAX_LINE_BYTES + 3] {
        assert_eq!(
            run_chunks(Operation::Chat, stream.chunks(size)),
            whole,
            "{size}"
        );
    }
    // One byte shorter and it is an ordinary event, in one chunk or many.
    line.truncate(MAX_LINE_BYTES);
    line.extend_from_slice(b"\n\n");
    let whole = run(Operation::Chat, &line);
    assert_eq!(whole.0.choices[0].content.as_deref(), Some("a"));
    assert_eq!(run_chunks(Operation::Chat, line.chunks(4096)), whole);
}

#[test]
fn what_the_span_keeps_is_capped_and_the_summary_says_so() {
    // Text: 9 MiB of content in 1 KiB deltas keeps 8 MiB, cut on a character.
    let mut acc = stream_accumulator(Operation::Chat);
    let piece = "é".repeat(512);
    let event = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{piece}\"}}}}]}}\n\n");
    for _ in 0..(9 << 10) {
        acc.feed(event.as_bytes());
    }
    acc.feed(b"data: [DONE]\n\n");
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    assert!(summary.truncated && summary.saw_final);
    assert!(ex.response_truncated);
    let content = ex.choices[0].content.as_deref().unwrap_or_default();
    assert_eq!(content.len(), MAX_TEXT_BYTES);

    // Labels, choices and tool calls.
    let long = "n".repeat(MAX_LABEL_BYTES + 10);
    let (ex, summary) = run_str(&format!(
        "data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"{long}\",\"function\":{{\"name\":\"f\"}}}}]}},\"finish_reason\":\"{long}\"}}]}}\n\n"
    ));
    assert!(summary.truncated);
    assert_eq!(ex.choices[0].tool_calls[0].id.len(), MAX_LABEL_BYTES);
    assert_eq!(
        ex.choices[0].finish_reason.as_deref().map(str::len),
        Some(MAX_LABEL_BYTES)
    );
    let many: String = (0..MAX_TRACKED + 5)
        .map(|i| format!("data: {{\"choices\":[{{\"index\":{i},\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"c{i}\"}}]}}}}]}}\n\n"))
        .collect();
    let (ex, summary) = run_str(&many);
    assert!(summary.truncated);
    assert_eq!(ex.choices.len(), MAX_TRACKED);
    let calls: usize = ex.choices.iter().map(|c| c.tool_calls.len()).sum();
    assert_eq!(calls, MAX_TRACKED);

    // An ordinary stream is not truncated.
    let (ex, summary) = run(Operation::Chat, CHAT_STREAM);
    assert!(!summary.truncated && !ex.response_truncated);
}

#[test]
fn a_named_final_event_ends_the_stream_like_done() {
    let stream = concat!(
        "event: content_block_delta\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let mut acc =
        stream_accumulator(Operation::Chat).with_final_event(FinalEvent::Named("message_stop"));
    acc.feed(stream.as_bytes());
    let mut ex = Exchange::default();
    assert!(acc.finish(&mut ex).saw_final);
    // Under OpenAI's rules the same stream never finished.
    let (_, summary) = run_str(stream);
    assert!(!summary.saw_final);
}

#[test]
fn negative_token_counts_are_no_counts() {
    let (ex, _) = run_str(concat!(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":3,",
        "\"total_tokens\":-2,\"completion_tokens_details\":{\"reasoning_tokens\":-1}}}\n\n"
    ));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (None, Some(3), None)
    );
    assert_eq!(ex.token_details.reasoning, None);
    let body: Value =
        serde_json::from_str(ex.response_body.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(
        body["usage"],
        json!({"completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": -1}})
    );
}

#[test]
fn empty_and_non_sse_input() {
    let (ex, summary) = run(Operation::Chat, b"");
    assert_eq!(summary, StreamSummary::default());
    assert!(ex.choices.is_empty());
    assert_eq!(ex.response_body, None);

    let (ex, summary) = run(
        Operation::Chat,
        b"<html><body>502 Bad Gateway</body></html>\n",
    );
    assert_eq!(summary.events, 0);
    assert_eq!(ex.response_body, None);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    let alphabet = b"data:event: error\r\n{}[]\",0123DONE\xe2\x80\x99\xff";
    for _ in 0..300 {
        let len = rng.below(2000);
        let stream: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let _ = run_chunks(Operation::Chat, stream.chunks(1 + rng.below(50)));
    }
    // Mutated fixtures.
    for round in 0..300 {
        let mut stream = if round % 2 == 0 {
            CHAT_STREAM
        } else {
            TOOLS_STREAM
        }
        .to_vec();
        for _ in 0..=rng.below(8) {
            let at = rng.below(stream.len());
            stream[at] = alphabet[rng.below(alphabet.len())];
        }
        let _ = run_chunks(Operation::Chat, stream.chunks(1 + rng.below(100)));
    }
}
