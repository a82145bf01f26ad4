//! The family's parsers: requests and whole answers of every endpoint.

use super::*;
use crate::protocol::PROTOCOLS;
use crate::protocol::lenient::integral_f64;
use crate::protocol::limits::MAX_TRACKED;
use celgate_engine::exchange::{Choice, Message};
use chat::CHAT;
use serde_json::json;

fn request(operation: Operation, body: &[u8]) -> Exchange {
    let mut ex = Exchange::default();
    parse_request(operation, body, &mut ex).expect("request parses");
    ex
}

fn request_err(operation: Operation, body: &str) -> String {
    let mut ex = Exchange::default();
    parse_request(operation, body.as_bytes(), &mut ex)
        .expect_err("request is rejected")
        .to_string()
}

fn response(operation: Operation, body: &[u8]) -> Exchange {
    let mut ex = Exchange::default();
    parse_response(operation, body, &mut ex).expect("response parses");
    ex
}

fn msg(role: &str, content: Option<&str>) -> Message {
    Message {
        role: role.to_owned(),
        content: content.map(str::to_owned),
        ..Message::default()
    }
}

fn keys(ex: &Exchange) -> Vec<&str> {
    ex.params.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn chat_request_fixture() {
    let body = fixture!("chat_request.json");
    let ex = request(Operation::Chat, body);
    assert_eq!(ex.operation, Operation::Chat);
    assert_eq!(ex.request_model.as_deref(), Some("gpt-4o-mini"));
    assert!(!ex.streaming);
    assert_eq!(
        ex.prompt,
        vec![
            msg(
                "system",
                Some("You are a concise travel assistant. Answer in at most two sentences.")
            ),
            msg("user", Some("What is the capital of Portugal?")),
            msg("assistant", Some("The capital of Portugal is Lisbon.")),
            msg("user", Some("What is the best month to visit it?")),
        ]
    );
    assert_eq!(
        ex.params,
        vec![
            ("temperature".to_owned(), json!(0.2)),
            ("max_tokens".to_owned(), json!(256)),
            ("top_p".to_owned(), json!(1)),
        ]
    );
    assert!(ex.tools.is_empty());
    assert_eq!(ex.request_body.as_deref().map(str::as_bytes), Some(body));
}

#[test]
fn chat_stream_request_fixture() {
    let ex = request(Operation::Chat, fixture!("chat_stream_request.json"));
    assert!(ex.streaming);
    assert_eq!(ex.prompt.len(), 4);
    assert_eq!(
        keys(&ex),
        ["temperature", "max_tokens", "top_p", "stream_options"]
    );
    assert_eq!(ex.params[3].1, json!({"include_usage": true}));
}

#[test]
fn tools_request_fixture() {
    let ex = request(Operation::Chat, fixture!("tools_request.json"));
    assert!(ex.streaming);
    let names: Vec<_> = ex
        .tools
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(
        ex.tools[0]["function"]["parameters"]["required"],
        json!(["location"])
    );
    assert_eq!(
        keys(&ex),
        [
            "tool_choice",
            "parallel_tool_calls",
            "temperature",
            "stream_options"
        ]
    );
    assert_eq!(
        ex.prompt[1].content.as_deref(),
        Some("What's the weather in Paris right now, and what time is it in Tokyo?")
    );
}

#[test]
fn tools_followup_request_fixture() {
    let ex = request(Operation::Chat, fixture!("tools_followup_request.json"));
    assert!(!ex.streaming);
    assert_eq!(ex.tools.len(), 2);
    let roles: Vec<_> = ex.prompt.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
    // Multi-part user content is reduced to its text.
    assert_eq!(
        ex.prompt[1].content.as_deref(),
        Some("What's the weather in Paris right now, and what time is it in Tokyo?")
    );
    let assistant = &ex.prompt[2];
    assert_eq!(assistant.content, None);
    assert_eq!(
        assistant.tool_calls,
        vec![
            ToolCall {
                id: "call_wX3kQ9ZpLm2v".to_owned(),
                name: "get_weather".to_owned(),
                arguments: r#"{"location":"Paris, France","unit":"celsius"}"#.to_owned(),
            },
            ToolCall {
                id: "call_T7fYb0RnHs4c".to_owned(),
                name: "get_time".to_owned(),
                arguments: r#"{"timezone":"Asia/Tokyo"}"#.to_owned(),
            },
        ]
    );
    assert_eq!(
        ex.prompt[3].tool_call_id.as_deref(),
        Some("call_wX3kQ9ZpLm2v")
    );
    assert_eq!(
        ex.prompt[3].content.as_deref(),
        Some(r#"{"temperature":18,"unit":"celsius","conditions":"partly cloudy"}"#)
    );
    assert_eq!(
        ex.prompt[4].tool_call_id.as_deref(),
        Some("call_T7fYb0RnHs4c")
    );
    assert!(ex.prompt[4].tool_calls.is_empty());
    assert_eq!(keys(&ex), ["tool_choice", "temperature"]);
}

#[test]
fn completions_fixtures() {
    let ex = request(
        Operation::TextCompletion,
        fixture!("completions_request.json"),
    );
    assert_eq!(ex.operation, Operation::TextCompletion);
    assert_eq!(ex.request_model.as_deref(), Some("gpt-3.5-turbo-instruct"));
    assert_eq!(
        ex.prompt,
        vec![msg("user", Some("Write a tagline for an ice cream shop."))]
    );
    assert_eq!(keys(&ex), ["max_tokens", "temperature", "n", "stop"]);
    assert_eq!(ex.params[3].1, json!(["\n\n\n"]));

    let body = fixture!("completions_response.json");
    let ex = response(Operation::TextCompletion, body);
    assert_eq!(
        ex.response_id.as_deref(),
        Some("cmpl-9t5vXhQk2LwJ8nB4cR6dE1fG")
    );
    assert_eq!(ex.response_model.as_deref(), Some("gpt-3.5-turbo-instruct"));
    assert_eq!(
        ex.choices,
        vec![Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: Some("\n\nScoops of happiness in every cone.".to_owned()),
            tool_calls: vec![],
            finish_reason: Some("stop".to_owned()),
            reasoning: None,
        }]
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(10), Some(9), Some(19))
    );
    assert_eq!(ex.response_body.as_deref().map(str::as_bytes), Some(body));
}

#[test]
fn embeddings_fixtures() {
    let ex = request(Operation::Embeddings, fixture!("embeddings_request.json"));
    assert_eq!(ex.request_model.as_deref(), Some("text-embedding-3-small"));
    assert_eq!(
        ex.prompt,
        vec![
            msg(
                "user",
                Some("The food was delicious and the waiter was friendly.")
            ),
            msg("user", Some("The service was slow.")),
        ]
    );
    assert_eq!(keys(&ex), ["encoding_format", "dimensions"]);

    let ex = response(Operation::Embeddings, fixture!("embeddings_response.json"));
    assert_eq!(ex.response_model.as_deref(), Some("text-embedding-3-small"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(15), None, Some(15))
    );
    assert!(ex.choices.is_empty());
    assert_eq!(ex.response_body, None, "vectors never reach the trace");
}

#[test]
fn chat_response_fixture() {
    let body = fixture!("chat_response.json");
    let ex = response(Operation::Chat, body);
    assert_eq!(ex.response_id.as_deref(), Some("chatcmpl-abc123"));
    assert_eq!(ex.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(
        ex.choices,
        vec![Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: Some("May or September: warm, sunny days and fewer crowds.".to_owned()),
            tool_calls: vec![],
            finish_reason: Some("stop".to_owned()),
            reasoning: None,
        }]
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(42), Some(12), Some(54))
    );
    assert_eq!(ex.response_body.as_deref().map(str::as_bytes), Some(body));
}

#[test]
fn response_with_tool_calls_and_multiple_choices() {
    let body = json!({
        "id": "chatcmpl-x",
        "model": "m",
        "choices": [
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "length"},
            {"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": {"b": 2}}}
            ]}, "finish_reason": "tool_calls"}
        ]
    });
    let ex = response(Operation::Chat, body.to_string().as_bytes());
    assert_eq!(ex.choices.len(), 2);
    assert_eq!(ex.choices[0].index, 1);
    assert_eq!(ex.choices[0].content.as_deref(), Some("b"));
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("length"));
    let c = &ex.choices[1];
    assert_eq!(c.content, None);
    assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(c.tool_calls[0].id, "call_1");
    assert_eq!(c.tool_calls[0].arguments, r#"{"a":1}"#);
    assert_eq!(c.tool_calls[1].name, "g");
    assert_eq!(c.tool_calls[1].arguments, r#"{"b":2}"#);
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (None, None, None)
    );
}

#[test]
fn usage_details_are_read_in_both_api_spellings_and_junk_is_ignored() {
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"prompt_tokens":100,"completion_tokens":50,
            "prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":32}}}"#,
    );
    assert_eq!(
        ex.token_details,
        TokenDetails {
            cache_read: Some(64),
            input_audio: Some(0),
            reasoning: Some(32),
            ..TokenDetails::default()
        }
    );
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"input_tokens":10,"output_tokens":5,
            "input_tokens_details":{"cached_tokens":4},
            "output_tokens_details":{"reasoning_tokens":2}}}"#,
    );
    assert_eq!(
        (ex.token_details.cache_read, ex.token_details.reasoning),
        (Some(4), Some(2))
    );
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":"many",
            "completion_tokens_details":{"reasoning_tokens":"3"}}}"#,
    );
    assert_eq!(ex.token_details, TokenDetails::default());
}

#[test]
fn usage_keys_given_twice_count_their_last_and_the_chat_spelling_wins() {
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"prompt_tokens":1,"prompt_tokens":2,"input_tokens":40,"prompt_tokens_details":{"cached_tokens":5,"cached_tokens":6},"input_tokens_details":{"cached_tokens":9},"completion_tokens_details":null,"output_tokens_details":{"reasoning_tokens":3},"output_tokens":4,"extra":{"deep":[1,{"a":2}]}}}"#,
    );
    assert_eq!(ex.input_tokens, Some(2));
    assert_eq!(
        ex.output_tokens,
        Some(4),
        "the Responses name when the chat one is absent"
    );
    assert_eq!(ex.total_tokens, Some(6));
    assert_eq!(ex.token_details.cache_read, Some(6));
    assert_eq!(
        ex.token_details.reasoning, None,
        "a null `completion_tokens_details` wins over `output_tokens_details`"
    );
}

#[test]
fn usage_total_is_computed_when_absent() {
    let ex = response(
        Operation::Chat,
        br#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}"#,
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(7), Some(5), Some(12))
    );
    let ex = response(Operation::Chat, br#"{"usage":{"prompt_tokens":7}}"#);
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(7), None, None)
    );
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"input_tokens":3.0,"output_tokens":4}}"#,
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(3), Some(4), Some(7))
    );
}

#[test]
fn token_counts_must_be_integers() {
    assert_eq!(integral_f64(12.0), Some(12));
    assert_eq!(integral_f64(-9_223_372_036_854_775_808.0), Some(i64::MIN));
    assert_eq!(integral_f64(9_223_372_036_854_775_808.0), None);
    assert_eq!(integral_f64(1.5), None);
    assert_eq!(integral_f64(f64::NAN), None);
    assert_eq!(integral_f64(f64::INFINITY), None);
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"prompt_tokens":"7","completion_tokens":1e30,"total_tokens":2.5}}"#,
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (None, None, None)
    );
}

#[test]
fn negative_token_counts_are_no_counts() {
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"prompt_tokens":-1,"completion_tokens":4,"total_tokens":-9,
            "prompt_tokens_details":{"cached_tokens":-3}}}"#,
    );
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (None, Some(4), None)
    );
    assert_eq!(ex.token_details.cache_read, None);
    // A negative total with good parts: the total is computed from them.
    let ex = response(
        Operation::Chat,
        br#"{"usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":-1}}"#,
    );
    assert_eq!(ex.total_tokens, Some(6));
}

#[test]
fn choices_past_the_cap_are_skipped_and_the_exchange_says_so() {
    let n = MAX_TRACKED + 500;
    let choices: Vec<String> = (0..n)
        .map(|i| {
            format!(r#"{{"index":{i},"message":{{"content":"c{i}"}},"finish_reason":"stop"}}"#)
        })
        .collect();
    let body = format!(
        r#"{{"id":"x","choices":[{}],"model":"m"}}"#,
        choices.join(",")
    );
    let ex = response(Operation::Chat, body.as_bytes());
    assert_eq!(ex.choices.len(), MAX_TRACKED);
    assert_eq!(
        ex.choices[MAX_TRACKED - 1].content.as_deref(),
        Some("c1023")
    );
    assert!(ex.response_truncated);
    assert_eq!(
        ex.response_model.as_deref(),
        Some("m"),
        "keys after choices are read"
    );
    let ex = response(Operation::Chat, fixture!("chat_response.json"));
    assert!(!ex.response_truncated);
}

#[test]
fn error_response_is_not_a_parse_error() {
    let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    let mut ex = Exchange {
        choices: vec![Choice::default()],
        ..Exchange::default()
    };
    parse_response(Operation::Chat, body, &mut ex).expect("error bodies parse");
    assert!(ex.choices.is_empty());
    assert_eq!(
        ex.response_body.as_deref().map(str::as_bytes),
        Some(&body[..])
    );
    assert_eq!(ex.response_model, None);
}

#[test]
fn an_owned_body_parses_like_a_borrowed_one() {
    let bodies: [&[u8]; 4] = [
        br#"{"id":"c1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        b"<html>502</html>",
        b"{\"id\":\"bad \xff utf-8\"}",
        br#"{"object":"list","data":[{"embedding":[0.1]}],"model":"e"}"#,
    ];
    for (i, body) in bodies.iter().enumerate() {
        for operation in [Operation::Chat, Operation::Embeddings] {
            let (mut borrowed, mut owned) = (Exchange::default(), Exchange::default());
            let a = parse_response(operation, body, &mut borrowed).map_err(|e| e.to_string());
            let b = parse_response_owned(operation, body.to_vec(), &mut owned)
                .map_err(|e| e.to_string());
            assert_eq!(a, b, "body {i}, {operation:?}");
            assert_eq!(borrowed, owned, "body {i}, {operation:?}");
        }
    }
}

#[test]
fn response_bytes_in_an_unread_field_do_not_hide_the_model() {
    // Found by the request_parse fuzz target: not JSON to a strict parser (the
    // bytes are not UTF-8), yet the fields the span reads are intact.
    let body = b"{\"model\":\"m\",\"system_fingerprint\":\"\xda\xda\",\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}";
    assert!(serde_json::from_slice::<Value>(body).is_err());
    let ex = response(Operation::Chat, body);
    assert_eq!(ex.response_model.as_deref(), Some("m"));
    assert_eq!(ex.total_tokens, Some(5));
    // In a field it reads, the same bytes make the body invalid.
    let mut ex = Exchange::default();
    assert!(parse_response(Operation::Chat, b"{\"model\":\"\xda\"}", &mut ex).is_err());
}

#[test]
fn response_duplicate_keys_mean_the_last_one() {
    // What an SDK's JSON parser reads: the last `model`, even when it is not a
    // string; the first one used to win whenever the last had the wrong type.
    let ex = response(
        Operation::Chat,
        br#"{"model":"a","id":"x","model":1,"choices":[{"message":{"content":"c"}}],"id":"y","choices":5,"usage":{"prompt_tokens":1},"usage":null}"#,
    );
    assert_eq!(ex.response_model, None);
    assert_eq!(ex.response_id.as_deref(), Some("y"));
    assert!(ex.choices.is_empty());
    assert_eq!(ex.input_tokens, None);
    let ex = response(Operation::Chat, br#"{"model":1,"model":"b"}"#);
    assert_eq!(ex.response_model.as_deref(), Some("b"));
}

#[test]
fn a_choice_is_read_key_by_key_and_the_last_of_a_duplicate_wins() {
    // Inside a choice and its message too; a key written with an escape is the
    // same key; a `message` that is not an object falls back to `text`; a choice
    // without `index` takes its position, which counts the non-object elements.
    let ex = response(
        Operation::Chat,
        br#"{"choices":[7,{"index":3,"index":"x","finish_reason":"stop","finish_reason":"length","message":{"role":"tool","role":"user","content":"a","content":"b","tool_calls":[{"id":"t","function":{"name":"f","arguments":"{}"}}],"logprobs":{"deep":[1,2]}}},{"message":{"content":"lost"},"message":null,"text":"legacy"}]}"#,
    );
    assert_eq!(ex.choices.len(), 2);
    let first = &ex.choices[0];
    assert_eq!(first.index, 1, "`index` was last a string: the position");
    assert_eq!(first.finish_reason.as_deref(), Some("length"));
    assert_eq!(first.role, "user");
    assert_eq!(first.content.as_deref(), Some("b"));
    assert_eq!(first.tool_calls.len(), 1);
    assert_eq!(first.tool_calls[0].name, "f");
    let second = &ex.choices[1];
    assert_eq!(second.index, 2);
    assert_eq!(second.role, "assistant");
    assert_eq!(second.content.as_deref(), Some("legacy"));
}

#[test]
fn response_errors() {
    let mut ex = Exchange::default();
    let err = parse_response(Operation::Chat, b"<html>502</html>", &mut ex).unwrap_err();
    assert_eq!(
        err.to_string(),
        "response body is not valid JSON: expected value at line 1 column 1"
    );
    // The body is still recorded for the trace.
    assert_eq!(ex.response_body.as_deref(), Some("<html>502</html>"));
    let err = parse_response(Operation::Chat, b"[]", &mut ex).unwrap_err();
    assert_eq!(
        err.to_string(),
        "response body must be a JSON object, not an array"
    );
}

#[test]
fn content_parts() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "first"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "text", "text": "second"},
            {"type": "file", "file": {"file_id": "file-1"}}
        ]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "user", "content": []},
        {"role": "user", "name": "bob", "content": ""}
    ]});
    let ex = request(Operation::Chat, body.to_string().as_bytes());
    assert_eq!(ex.prompt[0].content.as_deref(), Some("first\nsecond"));
    assert_eq!(ex.prompt[1].content, None);
    assert_eq!(ex.prompt[2].content, None);
    assert_eq!(ex.prompt[3].content.as_deref(), Some(""));
    assert_eq!(ex.prompt[3].name.as_deref(), Some("bob"));
}

#[test]
fn legacy_function_call() {
    let body = json!({"messages": [
        {"role": "assistant", "content": null, "function_call": {"name": "lookup", "arguments": "{\"q\":1}"}},
        {"role": "function", "name": "lookup", "content": "42"}
    ]});
    let ex = request(Operation::Chat, body.to_string().as_bytes());
    assert_eq!(
        ex.prompt[0].tool_calls,
        vec![ToolCall {
            id: String::new(),
            name: "lookup".to_owned(),
            arguments: r#"{"q":1}"#.to_owned(),
        }]
    );
    assert_eq!(ex.prompt[1].name.as_deref(), Some("lookup"));
    assert_eq!(ex.request_model, None);
}

#[test]
fn params_keep_request_order_and_last_duplicate_wins() {
    let body = br#"{"zeta":1,"model":"a","alpha":{"b":1,"a":2},"messages":[],"seed":7,"zeta":2,"model":"b","prompt":"x","input":"y","stream":null}"#;
    let ex = request(Operation::Chat, body);
    assert_eq!(
        ex.params,
        vec![
            ("zeta".to_owned(), json!(2)),
            ("alpha".to_owned(), json!({"a": 2, "b": 1})),
            ("seed".to_owned(), json!(7)),
        ]
    );
    assert_eq!(ex.request_model.as_deref(), Some("b"));
    assert!(!ex.streaming);
    assert!(ex.prompt.is_empty());
}

#[test]
fn duplicate_top_level_keys_are_reported() {
    let facts = |body: &[u8]| parse_request(Operation::Chat, body, &mut Exchange::default());
    assert!(!facts(fixture!("chat_request.json")).unwrap().duplicate_keys);
    assert!(!facts(br#"{"a":{"x":1,"x":2}}"#).unwrap().duplicate_keys);
    for body in [
        &br#"{"model":"a","model":"b"}"#[..],
        br#"{"seed":1,"model":"a","seed":2}"#,
        br#"{"messages":[],"messages":null}"#,
    ] {
        assert!(facts(body).unwrap().duplicate_keys, "{body:?}");
    }
}

#[test]
fn prompt_and_input_shapes() {
    let ex = request(
        Operation::TextCompletion,
        br#"{"model":"m","prompt":["a","b"]}"#,
    );
    assert_eq!(
        ex.prompt,
        vec![msg("user", Some("a")), msg("user", Some("b"))]
    );
    let ex = request(
        Operation::TextCompletion,
        br#"{"model":"m","prompt":[1,2,3]}"#,
    );
    assert!(ex.prompt.is_empty());
    let ex = request(
        Operation::Embeddings,
        br#"{"model":"m","input":[[1,2],[3]]}"#,
    );
    assert!(ex.prompt.is_empty());
    let ex = request(
        Operation::Embeddings,
        br#"{"model":"m","input":"hello","prompt":"ignored"}"#,
    );
    assert_eq!(ex.prompt, vec![msg("user", Some("hello"))]);
    assert!(ex.params.is_empty());
    assert_eq!(
        request_err(Operation::Embeddings, r#"{"input":{"text":"x"}}"#),
        "`input` must be a string, an array of strings, or an array of token ids, not an object"
    );
    assert_eq!(
        request_err(Operation::TextCompletion, r#"{"prompt":["a",null]}"#),
        "`prompt[1]` must be a string or an array of token ids, not null"
    );
}

#[test]
fn other_operation_is_lenient() {
    let ex = request(
        Operation::Other,
        br#"{"model":"m","messages":"nope","input":"x","foo":1}"#,
    );
    assert_eq!(ex.operation, Operation::Other);
    assert_eq!(ex.request_model.as_deref(), Some("m"));
    assert!(ex.prompt.is_empty());
    assert_eq!(keys(&ex), ["foo"]);
    let ex = request(
        Operation::Other,
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(ex.prompt, vec![msg("user", Some("hi"))]);
}

#[test]
fn request_errors_are_client_facing() {
    use Operation::Chat;
    assert_eq!(
        request_err(Chat, ""),
        "request body is not valid JSON: EOF while parsing a value at line 1 column 0"
    );
    assert_eq!(
        request_err(Chat, "not json"),
        "request body is not valid JSON: expected ident at line 1 column 2"
    );
    assert_eq!(
        request_err(Chat, r#"{"model":"m"} trailing"#),
        "request body is not valid JSON: trailing characters at line 1 column 15"
    );
    assert_eq!(
        request_err(Chat, "[1,2]"),
        "request body must be a JSON object, not an array"
    );
    assert_eq!(
        request_err(Chat, "\"x\""),
        "request body must be a JSON object, not a string"
    );
    assert_eq!(
        request_err(Chat, "null"),
        "request body must be a JSON object, not null"
    );
    assert_eq!(
        request_err(Chat, r#"{"messages":{"role":"user"}}"#),
        "`messages` must be an array of messages, not an object"
    );
    assert_eq!(
        request_err(Chat, r#"{"messages":["hi"]}"#),
        "`messages[0]` must be an object, not a string"
    );
    assert_eq!(
        request_err(
            Chat,
            r#"{"messages":[{"role":"user","content":"a"},{"content":"b"}]}"#
        ),
        "`messages[1].role` is required"
    );
    assert_eq!(
        request_err(Chat, r#"{"messages":[{"role":1}]}"#),
        "`messages[0].role` must be a string, not a number"
    );
    assert_eq!(
        request_err(Chat, r#"{"messages":[{"role":"user","content":5}]}"#),
        "`messages[0].content` must be a string, an array of content parts, or null, not a number"
    );
    assert_eq!(
        request_err(
            Chat,
            r#"{"messages":[{"role":"assistant","tool_calls":{}}]}"#
        ),
        "`messages[0].tool_calls` must be an array, not an object"
    );
    assert_eq!(
        request_err(
            Chat,
            r#"{"messages":[{"role":"assistant","tool_calls":[1]}]}"#
        ),
        "`messages[0].tool_calls[0]` must be an object, not a number"
    );
    assert_eq!(
        request_err(Chat, r#"{"model":42}"#),
        "`model` must be a string, not a number"
    );
    assert_eq!(
        request_err(Chat, r#"{"stream":"yes"}"#),
        "`stream` must be a boolean, not a string"
    );
    assert_eq!(
        request_err(Chat, r#"{"tools":{}}"#),
        "`tools` must be an array, not an object"
    );
}

#[test]
fn request_body_is_kept_even_when_rejected_and_bom_is_tolerated() {
    let mut ex = Exchange::default();
    assert!(parse_request(Operation::Chat, b"{oops", &mut ex).is_err());
    assert_eq!(ex.request_body.as_deref(), Some("{oops"));

    let body = b"\xEF\xBB\xBF{\"model\":\"m\"}";
    let ex = request(Operation::Chat, body);
    assert_eq!(ex.request_model.as_deref(), Some("m"));
    assert_eq!(
        ex.request_body.as_deref().map(str::as_bytes),
        Some(&body[..])
    );
}

#[test]
fn unicode_and_escapes_are_preserved() {
    let body =
        r#"{"model":"m","messages":[{"role":"user","content":"Olá \"mundo\" \u00e9 🌍\n"}]}"#;
    let ex = request(Operation::Chat, body.as_bytes());
    assert_eq!(
        ex.prompt[0].content.as_deref(),
        Some("Olá \"mundo\" é 🌍\n")
    );
    assert_eq!(ex.request_body.as_deref(), Some(body));
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let body = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let mut ex = Exchange::default();
    let err = parse_request(Operation::Chat, body.as_bytes(), &mut ex).unwrap_err();
    assert!(
        err.to_string().contains("recursion limit exceeded"),
        "{err}"
    );
}

use crate::test_rng::Rng;

#[test]
fn mutated_bodies_never_panic() {
    let bodies: [&[u8]; 8] = [
        fixture!("chat_request.json"),
        fixture!("chat_response.json"),
        fixture!("tools_request.json"),
        fixture!("tools_followup_request.json"),
        fixture!("completions_request.json"),
        fixture!("completions_response.json"),
        fixture!("embeddings_request.json"),
        fixture!("embeddings_response.json"),
    ];
    let ops = [
        Operation::Chat,
        Operation::TextCompletion,
        Operation::Embeddings,
        Operation::Other,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet = b"{}[]\":,0 -.enul\\\xff";
    for round in 0..4000 {
        let mut body = bodies[round % bodies.len()].to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(body.len());
            match rng.below(3) {
                0 => body[at] = alphabet[rng.below(alphabet.len())],
                1 => {
                    body.remove(at);
                }
                _ => body.truncate(at),
            }
            if body.is_empty() {
                break;
            }
        }
        let op = ops[rng.below(ops.len())];
        let mut ex = Exchange::default();
        let _ = parse_request(op, &body, &mut ex);
        let _ = parse_response(op, &body, &mut ex);
    }
}

#[test]
fn each_endpoint_parses_as_its_operation_does() {
    let bodies: [&[u8]; 6] = [
        fixture!("chat_request.json"),
        fixture!("chat_response.json"),
        fixture!("completions_request.json"),
        fixture!("completions_response.json"),
        fixture!("embeddings_request.json"),
        fixture!("embeddings_response.json"),
    ];
    // The family's endpoints, which PROTOCOLS lists (other protocols' calls are
    // `chat` too, but not OpenAI's bodies).
    let endpoints: [&dyn Protocol; 3] = [&CHAT, &completions::COMPLETIONS, &embeddings::EMBEDDINGS];
    for protocol in endpoints {
        assert!(PROTOCOLS.iter().any(|p| std::ptr::addr_eq(*p, protocol)));
        let op = protocol.operation();
        for body in bodies {
            let (mut by_op, mut by_protocol) = (Exchange::default(), Exchange::default());
            let a = parse_request(op, body, &mut by_op).map_err(|e| e.to_string());
            let b = protocol
                .parse_request(body, &mut by_protocol)
                .map_err(|e| e.to_string());
            assert_eq!(a, b, "{op:?}");
            let a = parse_response(op, body, &mut by_op).map_err(|e| e.to_string());
            let b = protocol
                .parse_response_owned(body.to_vec(), &mut by_protocol)
                .map_err(|e| e.to_string());
            assert_eq!(a, b, "{op:?}");
            assert_eq!(by_op, by_protocol, "{op:?}");
        }
        assert_eq!(protocol.final_event(), FinalEvent::Data("[DONE]"));
    }
}

#[test]
fn errors_celgate_answers_have_openai_s_shape() {
    let body = CHAT.error_body(
        http::StatusCode::BAD_REQUEST,
        "no route for model `m`",
        "invalid_request_error",
        Some("model_not_found"),
    );
    assert_eq!(
        body,
        json!({"error": {
            "message": "no route for model `m`",
            "type": "invalid_request_error",
            "param": null,
            "code": "model_not_found"
        }})
    );
}
