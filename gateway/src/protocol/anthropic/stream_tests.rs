//! The Messages stream reader, fed through the SSE framing as the proxy feeds it.

use super::*;
use crate::protocol::limits::{MAX_LABEL_BYTES, MAX_TEXT_BYTES, MAX_TRACKED};
use crate::protocol::{SseAccumulator, StreamSummary};
use crate::test_rng::Rng;
use serde_json::json;

fn run_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Exchange, StreamSummary) {
    let mut acc = SseAccumulator::for_protocol(&MESSAGES);
    for chunk in chunks {
        acc.feed(chunk);
    }
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    (ex, summary)
}

fn run(stream: &str) -> (Exchange, StreamSummary) {
    run_chunks([stream.as_bytes()])
}

/// Feeds `stream` whole, a byte at a time and in random chunkings, asserting every
/// way gives the same result.
fn run_all_chunkings(stream: &str) -> (Exchange, StreamSummary) {
    let bytes = stream.as_bytes();
    let whole = run(stream);
    assert_eq!(run_chunks(bytes.chunks(1)), whole, "byte at a time");
    let mut rng = Rng(0x5EED_A174_0C1A_0001);
    for _ in 0..100 {
        let max = 1 + rng.below(64);
        let mut chunks = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (head, tail) = rest.split_at(rng.below(max + 1).min(rest.len()));
            chunks.push(head);
            rest = tail;
        }
        assert_eq!(run_chunks(chunks), whole, "random chunking");
    }
    whole
}

/// SSE events as Anthropic sends them: `event: <type>` and the data.
fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            let name = e["type"].as_str().unwrap_or("message");
            format!("event: {name}\ndata: {e}\n\n")
        })
        .collect()
}

fn start(id: &str, usage: Value) -> Value {
    json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null,
        "usage": usage
    }})
}

fn block_start(index: u32, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn delta(index: u32, delta: Value) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": delta})
}

fn text(index: u32, text: &str) -> Value {
    delta(index, json!({"type": "text_delta", "text": text}))
}

fn block_stop(index: u32) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_delta(stop_reason: &str, usage: Value) -> Value {
    json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": usage})
}

fn stop() -> Value {
    json!({"type": "message_stop"})
}

fn ping() -> Value {
    json!({"type": "ping"})
}

/// The documented basic stream: one text block.
fn text_stream() -> String {
    sse(&[
        start(
            "msg_1nZdL29xx5MUA1yADyHTEsnR",
            json!({"input_tokens": 25, "output_tokens": 1}),
        ),
        block_start(0, json!({"type": "text", "text": ""})),
        ping(),
        text(0, "Hello"),
        text(0, ", Lisbon"),
        text(0, " \u{2014} \"sunny\"."),
        block_stop(0),
        message_delta("end_turn", json!({"output_tokens": 15})),
        stop(),
    ])
}

/// Thinking, text and a tool call whose input comes in fragments; cached input,
/// and a final usage that repeats the input counts (newer APIs do).
fn tool_stream() -> String {
    let usage = json!({"input_tokens": 12, "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 30000, "output_tokens": 1});
    sse(&[
        start("msg_014p7gG3wDgGV9EUtLvnow3U", usage),
        block_start(
            0,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
        ),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "The user wants "}),
        ),
        delta(0, json!({"type": "thinking_delta", "thinking": "weather."})),
        delta(
            0,
            json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM"}),
        ),
        block_stop(0),
        block_start(1, json!({"type": "text", "text": ""})),
        text(1, "Let me check "),
        delta(
            1,
            json!({"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}}),
        ),
        block_stop(1),
        block_start(2, json!({"type": "text", "text": "the weather."})),
        block_stop(2),
        block_start(
            3,
            json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather", "input": {}}),
        ),
        delta(3, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(
            3,
            json!({"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}),
        ),
        delta(
            3,
            json!({"type": "input_json_delta", "partial_json": "ncisco, CA\", "}),
        ),
        delta(
            3,
            json!({"type": "input_json_delta", "partial_json": "\"unit\": \"celsius\"}"}),
        ),
        block_stop(3),
        message_delta(
            "tool_use",
            json!({"input_tokens": 12, "cache_creation_input_tokens": 2048,
            "cache_read_input_tokens": 30000, "output_tokens": 96}),
        ),
        stop(),
    ])
}

/// The same answer as [`tool_stream`], as one body.
fn tool_body() -> Value {
    json!({
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
            {"type": "text", "text": "Let me check "},
            {"type": "text", "text": "the weather."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 2048,
            "cache_read_input_tokens": 30000, "output_tokens": 96}
    })
}

fn body_of(ex: &Exchange) -> Value {
    serde_json::from_str(ex.response_body.as_deref().expect("a body")).expect("JSON body")
}

/// The response side of an exchange, which a stream and a body must agree on.
fn response_side(ex: &Exchange) -> impl PartialEq + std::fmt::Debug {
    (
        ex.choices.clone(),
        ex.response_id.clone(),
        ex.response_model.clone(),
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        ex.token_details,
    )
}

#[test]
fn a_text_stream_is_one_choice_and_renders_as_its_body() {
    let (ex, summary) = run_all_chunkings(&text_stream());
    assert_eq!(
        summary,
        StreamSummary {
            saw_final: true,
            events: 9,
            malformed_events: 0,
            error: None,
            truncated: false,
        }
    );
    let text = "Hello, Lisbon \u{2014} \"sunny\".";
    assert_eq!(
        ex.choices,
        [Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: Some(text.to_owned()),
            tool_calls: vec![],
            finish_reason: Some("end_turn".to_owned()),
            reasoning: None,
        }]
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(25), Some(15), Some(40))
    );
    assert_eq!(
        body_of(&ex),
        json!({
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 15}
        })
    );
}

#[test]
fn a_tool_stream_and_the_same_answer_as_a_body_say_the_same() {
    let (streamed, summary) = run_all_chunkings(&tool_stream());
    assert!(summary.saw_final);
    assert_eq!((summary.malformed_events, summary.error), (0, None));
    let mut whole = Exchange::default();
    MESSAGES
        .parse_response(tool_body().to_string().as_bytes(), &mut whole)
        .unwrap();
    assert_eq!(response_side(&streamed), response_side(&whole));
    let choice = &streamed.choices[0];
    assert_eq!(choice.content.as_deref(), Some("Let me check the weather."));
    assert_eq!(choice.reasoning.as_deref(), Some("The user wants weather."));
    assert_eq!(
        choice.tool_calls[0].arguments,
        r#"{"location":"San Francisco, CA","unit":"celsius"}"#
    );
    assert_eq!(
        (streamed.input_tokens, streamed.output_tokens),
        (Some(32060), Some(96))
    );
    // The rendering reads back to the same answer.
    let mut rendered = Exchange::default();
    let body = streamed.response_body.clone().unwrap();
    MESSAGES
        .parse_response(body.as_bytes(), &mut rendered)
        .unwrap();
    assert_eq!(response_side(&rendered), response_side(&streamed));
}

#[test]
fn blocks_are_kept_in_index_order_whatever_order_they_came_in() {
    let (ex, _) = run(&sse(&[
        start("msg_1", json!({})),
        block_start(1, json!({"type": "text", "text": ""})),
        block_start(0, json!({"type": "text", "text": ""})),
        text(1, "world"),
        text(0, "hello "),
        block_start(
            2,
            json!({"type": "tool_use", "id": "b", "name": "second", "input": {}}),
        ),
        block_start(
            3,
            json!({"type": "tool_use", "id": "a", "name": "first", "input": {}}),
        ),
        delta(
            3,
            json!({"type": "input_json_delta", "partial_json": "{\"x\":1}"}),
        ),
        stop(),
    ]));
    let choice = &ex.choices[0];
    assert_eq!(choice.content.as_deref(), Some("hello world"));
    let names: Vec<&str> = choice.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["second", "first"]);
    assert_eq!(choice.tool_calls[0].arguments, "{}");
    assert_eq!(choice.tool_calls[1].arguments, r#"{"x":1}"#);
}

#[test]
fn a_delta_for_a_block_never_started_starts_one_of_its_kind() {
    let (ex, summary) = run(&sse(&[
        text(0, "no start"),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "{\"q\": 2}"}),
        ),
        delta(2, json!({"type": "thinking_delta", "thinking": "hmm"})),
        // Nothing to show: starts nothing.
        delta(3, json!({"type": "signature_delta", "signature": "sig"})),
        delta(4, json!({"type": "citations_delta", "citation": {}})),
        message_delta("end_turn", json!({"output_tokens": 3})),
        stop(),
    ]));
    assert_eq!(summary.malformed_events, 0);
    assert_eq!(
        ex.choices,
        [Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: Some("no start".to_owned()),
            tool_calls: vec![ToolCall {
                arguments: r#"{"q":2}"#.to_owned(),
                ..ToolCall::default()
            }],
            finish_reason: Some("end_turn".to_owned()),
            reasoning: Some("hmm".to_owned()),
        }]
    );
    assert_eq!(body_of(&ex)["content"].as_array().map(Vec::len), Some(3));
}

#[test]
fn a_block_started_twice_is_one_block_and_mismatched_deltas_are_dropped() {
    let (ex, _) = run(&sse(&[
        start("msg_1", json!({})),
        block_start(
            0,
            json!({"type": "tool_use", "id": "", "name": "", "input": {}}),
        ),
        block_start(
            0,
            json!({"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}),
        ),
        block_start(0, json!({"type": "text", "text": "not a tool"})),
        delta(0, json!({"type": "input_json_delta", "partial_json": "{}"})),
        text(0, "text for a tool block"),
        block_start(
            1,
            json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}),
        ),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "{\"query\":\"x\"}"}),
        ),
        block_start(
            2,
            json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}),
        ),
        stop(),
    ]));
    let choice = &ex.choices[0];
    assert_eq!(choice.content, None);
    assert_eq!(
        choice.tool_calls,
        [ToolCall {
            id: "toolu_1".to_owned(),
            name: "search".to_owned(),
            arguments: "{}".to_owned(),
        }]
    );
}

#[test]
fn an_error_event_is_the_stream_s_error() {
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let (ex, summary) = run(&sse(std::slice::from_ref(&overloaded)));
    assert_eq!(summary.error.as_deref(), Some("Overloaded"));
    assert!(!summary.saw_final);
    assert!(ex.choices.is_empty());
    assert_eq!(body_of(&ex), overloaded);

    // Mid-answer: what came before is kept, the first error is the one.
    let (ex, summary) = run(&format!(
        "{}event: error\ndata: not json\n\n",
        sse(&[
            start("msg_1", json!({"input_tokens": 3})),
            block_start(0, json!({"type": "text", "text": ""})),
            text(0, "partial"),
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        ])
    ));
    assert_eq!(summary.error.as_deref(), Some("Internal server error"));
    assert_eq!(ex.choices[0].content.as_deref(), Some("partial"));
    assert_eq!(ex.choices[0].finish_reason, None);
    assert_eq!(body_of(&ex)["type"], "message");

    let (_, summary) = run("event: error\ndata: upstream fell over\n\n");
    assert_eq!(summary.error.as_deref(), Some("upstream fell over"));
    assert_eq!(summary.malformed_events, 0);
}

#[test]
fn events_after_message_stop_change_nothing() {
    let mut events = vec![
        start("msg_1", json!({"input_tokens": 1})),
        text(0, "done"),
        message_delta("end_turn", json!({"output_tokens": 1})),
        stop(),
    ];
    let (before, _) = run(&sse(&events));
    events.extend([
        text(0, " and more"),
        block_start(1, json!({"type": "text", "text": "late"})),
        message_delta("max_tokens", json!({"output_tokens": 900})),
        json!({"type": "error", "error": {"type": "api_error", "message": "late"}}),
        start("msg_2", json!({})),
    ]);
    let (after, summary) = run(&sse(&events));
    assert_eq!(after, before);
    assert_eq!(summary.error, None);
    assert!(summary.saw_final);
}

#[test]
fn an_unterminated_stream_keeps_what_came() {
    let stream = tool_stream();
    let cut = stream.find("ncisco").unwrap();
    let (ex, summary) = run(&stream[..cut]);
    assert!(!summary.saw_final);
    let choice = &ex.choices[0];
    assert_eq!(choice.content.as_deref(), Some("Let me check the weather."));
    // The input as far as it came (no JSON yet: left as joined).
    assert_eq!(choice.tool_calls[0].arguments, "{\"location\": \"San Fra");
    assert_eq!(choice.finish_reason, None);
    assert_eq!(ex.output_tokens, Some(1));
    // The rendering keeps the unfinished input as text, and reads back the same.
    let body = body_of(&ex);
    assert_eq!(body["content"][3]["input"], "{\"location\": \"San Fra");
    let mut rendered = Exchange::default();
    MESSAGES
        .parse_response(body.to_string().as_bytes(), &mut rendered)
        .unwrap();
    assert_eq!(rendered.choices, ex.choices);
}

#[test]
fn mistyped_fields_cost_the_field_not_the_event() {
    let (ex, summary) = run(&format!(
        "{}data: not json\n\ndata: [1, 2]\n\n",
        sse(&[
            json!({"type": "message_start", "message": "msg"}),
            json!({"type": "message_start", "message": {"id": 7, "model": ["m"], "role": null,
                "usage": {"input_tokens": "9", "output_tokens": -1, "cache_read_input_tokens": 4.0}}}),
            json!({"type": "content_block_start", "index": "0", "content_block": {"type": "text"}}),
            json!({"type": "content_block_start", "index": 0, "content_block": "text"}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": 5}}),
            json!({"type": "content_block_delta", "index": 0, "delta": "hi"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": {"a": 1}}}),
            json!({"type": "content_block_delta", "index": -1, "delta": {"type": "text_delta", "text": "x"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": 3, "text": "x"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "kept"}}),
            json!({"type": "message_delta", "delta": [], "usage": "lots"}),
            json!({"type": "message_delta", "delta": {"stop_reason": 1}, "usage": {"output_tokens": 2.5}}),
            json!({"type": 12}),
            json!({"type": "mystery_event", "index": 0}),
        ])
    ));
    assert_eq!(
        summary.malformed_events, 2,
        "only the events that are no JSON object"
    );
    assert_eq!(
        ex.choices,
        [Choice {
            role: "assistant".to_owned(),
            content: Some("kept".to_owned()),
            ..Choice::default()
        }]
    );
    assert_eq!((ex.response_id, ex.response_model), (None, None));
    assert_eq!((ex.input_tokens, ex.output_tokens), (Some(4), None));
}

#[test]
fn a_stream_of_pings_or_garbage_has_no_choice() {
    let (ex, summary) = run(&sse(&[ping(), ping()]));
    assert!(ex.choices.is_empty());
    assert_eq!(ex.response_body, None);
    assert_eq!(summary.events, 2);
    let (ex, _) = run("data: {\"type\": \"message_stop\"}\n\n");
    assert!(ex.choices.is_empty());
    assert_eq!(ex.response_body, None);
}

#[test]
fn caps_bound_what_a_hostile_stream_leaves_in_the_span() {
    let mut events = vec![start("i".repeat(MAX_LABEL_BYTES + 9).as_str(), json!({}))];
    for i in 0..=MAX_TRACKED as u32 {
        events.push(block_start(
            i,
            json!({"type": "tool_use", "id": format!("t{i}"), "name": "n", "input": {}}),
        ));
    }
    events.push(block_start(
        9999,
        json!({"type": "text", "text": "past the cap"}),
    ));
    let (ex, summary) = run(&sse(&events));
    assert!(summary.truncated && ex.response_truncated);
    assert_eq!(ex.response_id.map(|id| id.len()), Some(MAX_LABEL_BYTES));
    assert_eq!(ex.choices[0].tool_calls.len(), MAX_TRACKED);
    assert_eq!(ex.choices[0].content, None);

    let chunk = "x".repeat((1 << 20) - 200);
    let mut events = vec![start("msg_1", json!({}))];
    events.extend((0..9).map(|_| text(0, &chunk)));
    let (ex, summary) = run(&sse(&events));
    assert!(summary.truncated);
    assert_eq!(
        ex.choices[0].content.as_ref().map(String::len),
        Some(MAX_TEXT_BYTES)
    );
}

#[test]
fn without_a_body_nothing_is_rendered() {
    let mut acc = SseAccumulator::for_protocol(&MESSAGES).without_body();
    acc.feed(text_stream().as_bytes());
    let mut ex = Exchange::default();
    acc.finish(&mut ex);
    assert_eq!(ex.response_body, None);
    assert_eq!(ex.choices.len(), 1);
}

/// The fuzz target's property (`fuzz/fuzz_targets/anthropic_stream.rs`) on random
/// mutations of the fixtures: chunking never changes the result, and a rendered
/// body reads back to the same answer.
#[test]
fn mutated_streams_read_the_same_however_chunked_and_render_faithfully() {
    let error = sse(&[
        start("msg_e", json!({"input_tokens": 2})),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]);
    let seeds = [text_stream(), tool_stream(), error];
    let mut rng = Rng(0xA17B_0C5E_EDF0_0002);
    for round in 0..600 {
        let mut bytes = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut bytes, &mut rng);
        }
        let whole = run_chunks([bytes.as_slice()]);
        let cut = rng.below(bytes.len() + 1);
        let (head, tail) = bytes.split_at(cut);
        assert_eq!(run_chunks([head, tail]), whole, "cut at {cut}");
        let (ex, _) = &whole;
        if ex.choices.is_empty() {
            continue;
        }
        let body = ex.response_body.clone().expect("a rendered body");
        let mut parsed = Exchange::default();
        MESSAGES
            .parse_response(body.as_bytes(), &mut parsed)
            .unwrap();
        assert_eq!(response_side(&parsed), response_side(ex), "{body}");
    }
}

/// One random edit: a byte changed, a span dropped or repeated.
fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) {
    if bytes.is_empty() {
        return;
    }
    let at = rng.below(bytes.len());
    let len = (1 + rng.below(64)).min(bytes.len() - at);
    match rng.below(4) {
        0 => bytes[at] = b"{}[]\":,0-9ae \n"[rng.below(14)],
        1 => {
            bytes.drain(at..at + len);
        }
        2 => {
            let span = bytes[at..at + len].to_vec();
            bytes.splice(at..at, span);
        }
        _ => bytes[at] = rng.below(256) as u8,
    }
}
