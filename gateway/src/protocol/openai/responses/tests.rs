//! The Responses protocol: requests, whole answers and streams, realistic and
//! hostile.

use super::*;
use crate::protocol::limits::{MAX_LABEL_BYTES, MAX_TEXT_BYTES, MAX_TRACKED};
use crate::protocol::{PROTOCOLS, SseAccumulator, StreamSummary, for_request};
use crate::test_rng::Rng;
use celgate_engine::exchange::{Api, Choice, Message, TokenDetails, ToolCall};
use serde_json::json;

// ---------------------------------------------------------------------------------
// Helpers.

/// Parses `body`: a JSON value, or (a string) the text of one.
fn request(body: &Value) -> Exchange {
    let text = match body {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut ex = Exchange::default();
    RESPONSES
        .parse_request(text.as_bytes(), &mut ex)
        .expect("request parses");
    ex
}

/// A request body with its keys in this order (`json!` sorts them).
fn ordered(entries: &[(&str, Value)]) -> Value {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    Value::String(format!("{{{}}}", body.join(",")))
}

fn request_err(body: &str) -> String {
    let mut ex = Exchange::default();
    let err = RESPONSES
        .parse_request(body.as_bytes(), &mut ex)
        .expect_err("request is refused");
    assert_eq!(ex.request_body.as_deref(), Some(body), "kept when refused");
    err.to_string()
}

fn response(body: &Value) -> Exchange {
    let mut ex = Exchange::default();
    RESPONSES
        .parse_response(body.to_string().as_bytes(), &mut ex)
        .expect("response parses");
    ex
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.to_owned(),
        content: Some(content.to_owned()),
        ..Message::default()
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
    }
}

/// Events as OpenAI sends them: `event: <type>` then the JSON.
fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

fn run_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Exchange, StreamSummary) {
    let mut acc = SseAccumulator::for_protocol(&RESPONSES);
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

/// Feeds `stream` whole, a byte at a time and in random chunkings, asserting all
/// give the same result.
fn run_all_chunkings(stream: &str) -> (Exchange, StreamSummary) {
    let bytes = stream.as_bytes();
    let whole = run_chunks([bytes]);
    assert_eq!(run_chunks(bytes.chunks(1)), whole, "byte at a time");
    let mut rng = Rng(0x5EED_0000_0013_0002);
    for _ in 0..50 {
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

/// The response side of an exchange, what a stream and a body must agree on.
fn answer(ex: &Exchange) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        &ex.choices,
        &ex.response_id,
        &ex.response_model,
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        ex.token_details,
        ex.response_truncated,
    )
}

// ---------------------------------------------------------------------------------
// A realistic call: reasoning summary, text, a function call.

const REASONING: &str =
    "**Checking the forecast**\n\nThe user wants Lisbon's weather; I should call the tool.";
const TEXT: &str = "Let me look up the current weather in Lisbon.";
const ARGS: &str = r#"{"city":"Lisbon","unit":"celsius"}"#;

fn usage_json() -> Value {
    json!({
        "input_tokens": 1284,
        "input_tokens_details": {"cached_tokens": 1152},
        "output_tokens": 211,
        "output_tokens_details": {"reasoning_tokens": 128},
        "total_tokens": 1495
    })
}

fn output_json() -> Value {
    json!([
        {"id": "rs_68a1f0", "type": "reasoning", "encrypted_content": "gAAAAB...",
         "summary": [{"type": "summary_text", "text": REASONING}]},
        {"id": "msg_68a1f1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT}]},
        {"id": "fc_68a1f2", "type": "function_call", "status": "completed",
         "arguments": ARGS, "call_id": "call_Q7wX2kP9", "name": "get_weather"}
    ])
}

/// The response object, `status` and `output` given.
fn response_json(status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": "resp_68a1f0c2",
        "object": "response",
        "created_at": 1755000000,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": "gpt-5-mini-2025-08-07",
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [{"type": "function", "name": "get_weather", "strict": true,
                   "parameters": {"type": "object", "properties": {}}}],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {}
    })
}

fn completed_json() -> Value {
    response_json("completed", output_json(), usage_json())
}

/// The stream of [`completed_json`], event by event; `deltas_only`: without the
/// `.done` events and items (as some OpenAI-compatible servers stream).
fn stream_events(deltas_only: bool) -> Vec<Value> {
    let created = response_json("in_progress", json!([]), Value::Null);
    let output = output_json();
    let mut events = vec![
        json!({"type": "response.created", "sequence_number": 0, "response": created}),
        json!({"type": "response.in_progress", "sequence_number": 1, "response": created}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"id": "rs_68a1f0", "type": "reasoning", "summary": []}}),
        json!({"type": "response.reasoning_summary_part.added", "item_id": "rs_68a1f0",
               "output_index": 0, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
    ];
    let (a, b) = REASONING.split_at(26);
    for delta in [a, b] {
        events.push(
            json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_68a1f0",
                           "output_index": 0, "summary_index": 0, "delta": delta}),
        );
    }
    events.extend([
        json!({"type": "response.reasoning_summary_text.done", "item_id": "rs_68a1f0",
               "output_index": 0, "summary_index": 0, "text": REASONING}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": output[0]}),
        json!({"type": "response.output_item.added", "output_index": 1,
               "item": {"id": "msg_68a1f1", "type": "message", "status": "in_progress",
                        "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": "msg_68a1f1", "output_index": 1,
               "content_index": 0,
               "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
    ]);
    for delta in ["Let me look", " up the current weather", " in Lisbon."] {
        events.push(
            json!({"type": "response.output_text.delta", "item_id": "msg_68a1f1",
                           "output_index": 1, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }
    events.extend([
        json!({"type": "response.output_text.done", "item_id": "msg_68a1f1", "output_index": 1,
               "content_index": 0, "text": TEXT, "logprobs": []}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": output[1]}),
        json!({"type": "response.output_item.added", "output_index": 2,
               "item": {"id": "fc_68a1f2", "type": "function_call", "status": "in_progress",
                        "arguments": "", "call_id": "call_Q7wX2kP9", "name": "get_weather"}}),
    ]);
    for delta in [r#"{"city":"#, r#""Lisbon","unit""#, r#":"celsius"}"#] {
        events.push(
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_68a1f2",
                           "output_index": 2, "delta": delta}),
        );
    }
    events.extend([
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_68a1f2",
               "output_index": 2, "arguments": ARGS}),
        json!({"type": "response.output_item.done", "output_index": 2, "item": output[2]}),
        json!({"type": "response.completed", "sequence_number": 99, "response": completed_json()}),
    ]);
    if deltas_only {
        events.retain(|e| {
            let kind = e["type"].as_str().unwrap_or_default();
            !kind.ends_with(".done") && kind != "response.completed"
        });
    }
    events
}

fn expected_choice() -> Choice {
    Choice {
        index: 0,
        role: "assistant".to_owned(),
        content: Some(TEXT.to_owned()),
        tool_calls: vec![call("call_Q7wX2kP9", "get_weather", ARGS)],
        finish_reason: Some("tool_calls".to_owned()),
        reasoning: Some(REASONING.to_owned()),
    }
}

// ---------------------------------------------------------------------------------
// The protocol.

#[test]
fn only_post_v1_responses_is_read() {
    let found = |method: Method, path: &str| {
        for_request(&method, path).is_some_and(|p| p.route() == "/v1/responses")
    };
    assert!(found(Method::POST, "/v1/responses"));
    for (method, path) in [
        (Method::GET, "/v1/responses"),
        (Method::GET, "/v1/responses/resp_123"),
        (Method::DELETE, "/v1/responses/resp_123"),
        (Method::POST, "/v1/responses/resp_123"),
        (Method::GET, "/v1/responses/resp_123/input_items"),
        (Method::POST, "/v1/responses/"),
        (Method::POST, "/responses"),
    ] {
        assert!(!found(method.clone(), path), "{method} {path}");
    }
    assert_eq!(RESPONSES.route(), "/v1/responses");
    assert_eq!(RESPONSES.operation(), Operation::Chat);
    assert_eq!(RESPONSES.backend_auth(), BackendAuth::Bearer);
    assert_eq!(RESPONSES.final_event(), FinalEvent::AnyNamed(FINAL_EVENTS));
    // Chat stays the protocol of the chat operation (`celgate preview`).
    let chat = crate::protocol::for_operation(Operation::Chat).map(|p| p.route());
    assert_eq!(chat, Some("/v1/chat/completions"));
    assert!(PROTOCOLS.iter().any(|p| p.route() == "/v1/responses"));
}

#[test]
fn errors_celgate_answers_have_openai_s_shape() {
    let body = RESPONSES.error_body(
        StatusCode::UNAUTHORIZED,
        "missing client key",
        "authentication_error",
        Some("invalid_api_key"),
    );
    assert_eq!(
        body,
        json!({"error": {"message": "missing client key", "type": "authentication_error",
                         "param": null, "code": "invalid_api_key"}})
    );
}

// ---------------------------------------------------------------------------------
// Requests.

#[test]
fn a_codex_request_keeps_developer_messages_tools_and_params() {
    let tools = json!([
        {"type": "function", "name": "shell", "description": "Runs a command",
         "strict": false, "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
        {"type": "function", "name": "update_plan", "strict": true,
         "parameters": {"type": "object", "properties": {}, "additionalProperties": false}},
        {"type": "namespace", "name": "mcp__docs", "tools": [{"type": "function", "name": "search"}]},
        {"type": "web_search"}
    ]);
    let ex = request(&ordered(&[
        ("model", json!("gpt-5-codex")),
        (
            "input",
            json!([
                {"type": "message", "role": "developer",
                 "content": [{"type": "input_text", "text": "You are Codex, a coding agent."}]},
                {"type": "message", "role": "developer",
                 "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}]},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "<environment_context>cwd: /w</environment_context>"},
                             {"type": "input_text", "text": "List the files."}]}
            ]),
        ),
        ("tools", tools.clone()),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(false)),
        ("reasoning", json!({"effort": "medium", "summary": "auto"})),
        ("store", json!(false)),
        ("stream", json!(true)),
        ("include", json!(["reasoning.encrypted_content"])),
        ("prompt_cache_key", json!("019a-session")),
        ("metadata", json!({"origin": "codex"})),
    ]));
    assert_eq!(ex.operation, Operation::Chat);
    assert_eq!(ex.api, Api::Responses);
    assert_eq!(ex.request_model.as_deref(), Some("gpt-5-codex"));
    assert!(ex.streaming);
    assert_eq!(
        ex.system,
        [
            "You are Codex, a coding agent.",
            "<permissions>sandboxed</permissions>"
        ]
    );
    assert_eq!(
        ex.prompt,
        [
            msg("developer", "You are Codex, a coding agent."),
            msg("developer", "<permissions>sandboxed</permissions>"),
            msg(
                "user",
                "<environment_context>cwd: /w</environment_context>\nList the files."
            ),
        ]
    );
    assert_eq!(Value::Array(ex.tools.clone()), tools);
    let keys: Vec<&str> = ex.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tool_choice",
            "parallel_tool_calls",
            "reasoning",
            "store",
            "include",
            "prompt_cache_key"
        ]
    );
    assert_eq!(
        ex.params[2].1,
        json!({"effort": "medium", "summary": "auto"})
    );
    assert_eq!(ex.user_id, None);
}

#[test]
fn instructions_open_the_prompt_and_lead_the_system_instructions() {
    let ex = request(&ordered(&[
        ("model", json!("gpt-4.1")),
        ("instructions", json!("Talk like a pirate.")),
        ("input", json!("Are semicolons optional in JavaScript?")),
        ("max_output_tokens", json!(200)),
        ("temperature", json!(0.7)),
        ("previous_response_id", json!("resp_prev")),
        ("user", json!("user-42")),
        ("safety_identifier", json!("hashed-7")),
    ]));
    assert_eq!(ex.system, ["Talk like a pirate."]);
    assert_eq!(
        ex.prompt,
        [
            msg("system", "Talk like a pirate."),
            msg("user", "Are semicolons optional in JavaScript?"),
        ]
    );
    assert!(!ex.streaming);
    let keys: Vec<&str> = ex.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["max_output_tokens", "temperature", "previous_response_id"]
    );
    assert_eq!(ex.user_id.as_deref(), Some("user-42"));

    let ex = request(&json!({"model": "m", "safety_identifier": "hashed-7", "user": 5}));
    assert_eq!(ex.user_id.as_deref(), Some("hashed-7"));
    assert!(ex.prompt.is_empty() && ex.system.is_empty());

    // System input messages follow the instructions, in order, and stay in place.
    let ex = request(&json!({
        "model": "m",
        "instructions": "A",
        "input": [{"role": "user", "content": "hi"}, {"role": "system", "content": "B"}]
    }));
    assert_eq!(ex.system, ["A", "B"]);
    assert_eq!(
        ex.prompt,
        [msg("system", "A"), msg("user", "hi"), msg("system", "B")]
    );
}

#[test]
fn input_items_become_chat_messages() {
    let ex = request(&json!({
        "model": "gpt-5",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is in this picture, and the weather there?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "auto"},
                {"type": "input_file", "file_id": "file-1"}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}],
             "encrypted_content": "gAAA"},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": []},
                         {"type": "refusal", "refusal": "not this part"}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
             "arguments": "{\"city\":\"Lisbon\"}"},
            {"type": "reasoning", "id": "rs_2", "summary": []},
            {"type": "function_call", "call_id": "call_b", "name": "get_time",
             "arguments": {"tz": "Europe/Lisbon"}},
            {"type": "function_call_output", "call_id": "call_a", "output": "{\"temp\":22}"},
            {"type": "function_call_output", "call_id": "call_b",
             "output": [{"type": "input_text", "text": "14:05"}, {"type": "input_image", "image_url": "x"}]},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "item_reference", "id": "msg_0"},
            {"type": "custom_tool_call", "call_id": "call_c", "name": "apply_patch",
             "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_c", "output": "Done"},
            {"type": "function_call_output", "call_id": "call_d", "output": {"ok": true}},
            {"type": "brand_new_item", "whatever": 1},
            {"type": 7}
        ]
    }));
    let tool = |id: &str, content: &str| Message {
        tool_call_id: Some(id.to_owned()),
        ..msg("tool", content)
    };
    let calls = |calls: Vec<ToolCall>| Message {
        role: "assistant".to_owned(),
        tool_calls: calls,
        ..Message::default()
    };
    assert_eq!(
        ex.prompt,
        [
            msg("user", "What is in this picture, and the weather there?"),
            msg("assistant", "Checking."),
            calls(vec![
                call("call_a", "get_weather", r#"{"city":"Lisbon"}"#),
                call("call_b", "get_time", r#"{"tz":"Europe/Lisbon"}"#),
            ]),
            tool("call_a", r#"{"temp":22}"#),
            tool("call_b", "14:05"),
            calls(vec![call("call_c", "apply_patch", "*** Begin Patch")]),
            tool("call_c", "Done"),
            tool("call_d", r#"{"ok":true}"#),
        ]
    );
    assert!(ex.system.is_empty());
}

#[test]
fn malformed_requests_are_refused_naming_the_field() {
    for (body, expected) in [
        ("not json", "request body is not valid JSON"),
        ("[1]", "request body must be a JSON object, not an array"),
        (r#"{"input":"hi"}"#, "`model` is required"),
        (r#"{"model":null}"#, "`model` is required"),
        (r#"{"model":5}"#, "`model` must be a string, not a number"),
        (
            r#"{"model":"m","stream":"yes"}"#,
            "`stream` must be a boolean, not a string",
        ),
        (
            r#"{"model":"m","tools":{}}"#,
            "`tools` must be an array, not an object",
        ),
        (
            r#"{"model":"m","instructions":["a"]}"#,
            "`instructions` must be a string, not an array",
        ),
        (
            r#"{"model":"m","input":3}"#,
            "`input` must be a string or an array of items, not a number",
        ),
        (
            r#"{"model":"m","input":["hi"]}"#,
            "`input[0]` must be an object, not a string",
        ),
        (
            r#"{"model":"m","input":[{"content":"hi"}]}"#,
            "`input[0].role` is required",
        ),
        (
            r#"{"model":"m","input":[{"type":"message","role":1}]}"#,
            "`input[0].role` must be a string, not a number",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":"a"},{"role":"user","content":{}}]}"#,
            "`input[1].content` must be a string or an array of content parts, not an object",
        ),
    ] {
        let err = request_err(body);
        assert!(err.starts_with(expected), "{body}: {err}");
    }
}

#[test]
fn a_key_given_twice_means_its_last_value() {
    let body = br#"{"model":"a","temperature":0.1,"input":"x","temperature":0.9,"model":"b"}"#;
    let mut ex = Exchange::default();
    let facts = RESPONSES.parse_request(body, &mut ex).unwrap();
    assert!(facts.duplicate_keys);
    assert_eq!(ex.request_model.as_deref(), Some("b"));
    assert_eq!(ex.params, [("temperature".to_owned(), json!(0.9))]);
    let facts = RESPONSES
        .parse_request(br#"{"model":"a"}"#, &mut ex)
        .unwrap();
    assert!(!facts.duplicate_keys);
}

// ---------------------------------------------------------------------------------
// Whole answers.

#[test]
fn a_whole_answer_is_one_choice_with_tokens() {
    let body = completed_json();
    let ex = response(&body);
    assert_eq!(ex.choices, [expected_choice()]);
    assert_eq!(ex.response_id.as_deref(), Some("resp_68a1f0c2"));
    assert_eq!(ex.response_model.as_deref(), Some("gpt-5-mini-2025-08-07"));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(1284), Some(211), Some(1495))
    );
    assert_eq!(
        ex.token_details,
        TokenDetails {
            cache_read: Some(1152),
            reasoning: Some(128),
            ..TokenDetails::default()
        }
    );
    assert_eq!(ex.response_body, Some(body.to_string()));
    assert!(!ex.response_truncated);

    let mut owned = Exchange::default();
    RESPONSES
        .parse_response_owned(body.to_string().into_bytes(), &mut owned)
        .unwrap();
    assert_eq!(owned, ex);
}

#[test]
fn finish_reasons_are_derived_from_the_status() {
    let text = json!([{"type": "message", "role": "assistant",
                       "content": [{"type": "output_text", "text": "Hi"}]}]);
    let finish = |body: Value| {
        let ex = response(&body);
        ex.choices.first().map(|c| c.finish_reason.clone())
    };
    let with = |status: &str, extra: Value| {
        let mut body = response_json(status, text.clone(), Value::Null);
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        body
    };
    let reason = |s: &str| Some(Some(s.to_owned()));
    assert_eq!(finish(with("completed", json!({}))), reason("stop"));
    assert_eq!(finish(completed_json()), reason("tool_calls"));
    assert_eq!(
        finish(with(
            "incomplete",
            json!({"incomplete_details": {"reason": "max_output_tokens"}})
        )),
        reason("max_output_tokens")
    );
    assert_eq!(finish(with("incomplete", json!({}))), reason("incomplete"));
    assert_eq!(
        finish(with(
            "failed",
            json!({"error": {"code": "server_error", "message": "boom"}})
        )),
        reason("error")
    );
    assert_eq!(finish(with("cancelled", json!({}))), reason("cancelled"));
    assert_eq!(finish(with("in_progress", json!({}))), Some(None));
    // An error body is no answer.
    assert_eq!(
        finish(json!({"error": {"message": "Invalid model", "type": "invalid_request_error"}})),
        None
    );
}

#[test]
fn reasoning_without_a_summary_gives_its_text_and_refusals_are_not_content() {
    let ex = response(&response_json(
        "completed",
        json!([
            {"type": "reasoning", "summary": [],
             "content": [{"type": "reasoning_text", "text": "step 1"}, {"type": "reasoning_text", "text": "step 2"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "A"},
                                             {"type": "summary_text", "text": "B"}],
             "content": [{"type": "reasoning_text", "text": "hidden"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "one"},
                                                                 {"type": "output_text", "text": "two"}]},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"}
        ]),
        Value::Null,
    ));
    let choice = &ex.choices[0];
    assert_eq!(choice.reasoning.as_deref(), Some("step 1\nstep 2\nA\nB"));
    assert_eq!(choice.content.as_deref(), Some("one\ntwo"));
    assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    assert!(choice.tool_calls.is_empty());
}

#[test]
fn a_hostile_answer_yields_less_never_an_error() {
    for body in [
        json!({"id": 5, "model": [], "status": 3, "output": "lots", "usage": "many"}),
        json!({"output": [1, "x", null, {"type": 5}, {"type": "message", "content": 7},
                          {"type": "function_call", "call_id": 3, "name": {}, "arguments": [1]},
                          {"type": "reasoning", "summary": "s", "content": {}}],
               "incomplete_details": "soon", "error": 1, "status": "incomplete"}),
        json!({"usage": {"input_tokens": -4, "output_tokens": 2.0, "total_tokens": "9",
                         "input_tokens_details": [], "output_tokens_details": {"reasoning_tokens": -1}}}),
        json!({"output": {"type": "message"}}),
    ] {
        let mut ex = Exchange::default();
        let parsed = RESPONSES.parse_response(body.to_string().as_bytes(), &mut ex);
        assert!(parsed.is_ok(), "{body}: {parsed:?}");
    }
    let ex = response(&json!({"usage": {"input_tokens": -4, "output_tokens": 2.0,
                                        "output_tokens_details": {"reasoning_tokens": -1}}}));
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (None, Some(2), None)
    );
    assert_eq!(ex.token_details.reasoning, None);
    assert!(ex.choices.is_empty());

    let ex = response(
        &json!({"status": "incomplete", "incomplete_details": "soon",
                              "output": [{"type": "function_call", "call_id": 3, "arguments": [1]}]}),
    );
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("incomplete"));
    assert_eq!(ex.choices[0].tool_calls, [call("", "", "[1]")]);

    let mut ex = Exchange::default();
    assert!(
        RESPONSES
            .parse_response(b"{\"output\": [", &mut ex)
            .is_err()
    );
    assert!(RESPONSES.parse_response(b"\"text\"", &mut ex).is_err());

    // Past MAX_TRACKED output items the rest is skipped and the answer truncated.
    let items: Vec<Value> = (0..MAX_TRACKED + 3)
        .map(|i| json!({"type": "function_call", "call_id": format!("c{i}"), "name": "f"}))
        .collect();
    let ex = response(&json!({"status": "completed", "output": items}));
    assert_eq!(ex.choices[0].tool_calls.len(), MAX_TRACKED);
    assert!(ex.response_truncated);
}

// ---------------------------------------------------------------------------------
// Streams.

#[test]
fn a_stream_gives_the_answer_and_the_usage_only_its_final_event_carries() {
    let (ex, summary) = run_all_chunkings(&sse(&stream_events(false)));
    assert_eq!(
        summary,
        StreamSummary {
            saw_final: true,
            events: 22,
            malformed_events: 0,
            error: None,
            truncated: false,
        }
    );
    assert_eq!(ex.choices, [expected_choice()]);
    assert_eq!(ex.response_id.as_deref(), Some("resp_68a1f0c2"));
    assert_eq!(ex.response_model.as_deref(), Some("gpt-5-mini-2025-08-07"));
    // Usage is only in `response.completed`: it must not be lost.
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(1284), Some(211), Some(1495))
    );
    assert_eq!(ex.token_details.cache_read, Some(1152));
    assert_eq!(ex.token_details.reasoning, Some(128));
}

#[test]
fn a_stream_and_the_same_answer_as_a_body_describe_the_call_alike() {
    let whole = response(&completed_json());
    let (streamed, _) = run(&sse(&stream_events(false)));
    assert_eq!(answer(&streamed), answer(&whole));

    // The rendered body reads back to the same answer.
    let rendered = streamed.response_body.clone().expect("a rendered body");
    let mut reread = Exchange::default();
    RESPONSES
        .parse_response(rendered.as_bytes(), &mut reread)
        .unwrap();
    assert_eq!(answer(&reread), answer(&streamed));
    let rendered: Value = serde_json::from_str(&rendered).unwrap();
    assert_eq!(rendered["object"], "response");
    assert_eq!(rendered["status"], "completed");
    assert_eq!(rendered["usage"], usage_json());
    assert_eq!(rendered["output"][2]["call_id"], "call_Q7wX2kP9");

    // Without the final event (nor any `.done`), the deltas give the same text.
    let (cut, summary) = run_all_chunkings(&sse(&stream_events(true)));
    assert!(!summary.saw_final);
    let choice = Choice {
        finish_reason: None,
        ..expected_choice()
    };
    assert_eq!(cut.choices, [choice]);
    assert_eq!(cut.response_id.as_deref(), Some("resp_68a1f0c2"));
    assert_eq!((cut.input_tokens, cut.output_tokens), (None, None));
}

#[test]
fn without_body_reads_everything_but_renders_no_body() {
    let stream = sse(&stream_events(false));
    let mut acc = SseAccumulator::for_protocol(&RESPONSES).without_body();
    acc.feed(stream.as_bytes());
    let mut ex = Exchange::default();
    acc.finish(&mut ex);
    assert_eq!(ex.response_body, None);
    let (mut with, _) = run(&stream);
    with.response_body = None;
    assert_eq!(with, ex);
}

#[test]
fn each_final_event_ends_the_stream_and_what_follows_is_no_answer() {
    let incomplete = json!({"type": "response.incomplete", "response": {
        "id": "resp_1", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
        "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Once upon"}]}],
        "usage": {"input_tokens": 10, "output_tokens": 16, "total_tokens": 26}}});
    let after = json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
                       "delta": " a time"});
    let late_error = json!({"type": "error", "code": "x", "message": "late"});
    let (ex, summary) = run(&sse(&[incomplete, after, late_error]));
    assert!(summary.saw_final);
    assert_eq!(summary.error, None);
    assert_eq!(ex.choices[0].content.as_deref(), Some("Once upon"));
    assert_eq!(
        ex.choices[0].finish_reason.as_deref(),
        Some("max_output_tokens")
    );
    assert_eq!(ex.total_tokens, Some(26));

    let failed = json!({"type": "response.failed", "response": {
        "id": "resp_2", "status": "failed", "output": [],
        "error": {"code": "server_error", "message": "The model failed to generate a response."}}});
    let (ex, summary) = run(&sse(&[failed]));
    assert!(summary.saw_final);
    assert_eq!(
        summary.error.as_deref(),
        Some("The model failed to generate a response.")
    );
    assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("error"));

    // Without `event:` lines the answer is read from the data's `type` all the same.
    let (ex, _) = run(&format!(
        "data: {}\n\n",
        json!({"type": "response.output_text.delta", "output_index": 0, "delta": "hi"})
    ));
    assert_eq!(ex.choices[0].content.as_deref(), Some("hi"));
}

#[test]
fn error_events_are_the_stream_s_error() {
    let (ex, summary) = run(concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_3\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached\",\"param\":null}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"message\":\"second\"}\n\n",
    ));
    assert_eq!(summary.error.as_deref(), Some("Rate limit reached"));
    assert!(!summary.saw_final);
    // It began as an answer: one choice, unfinished.
    assert_eq!(ex.choices.len(), 1);
    assert_eq!(ex.choices[0].finish_reason, None);

    // Only an error: its data is the body.
    let (ex, summary) = run(
        "event: error\ndata: {\"error\":{\"type\":\"server_error\",\"message\":\"upstream down\"}}\n\n",
    );
    assert_eq!(summary.error.as_deref(), Some("upstream down"));
    assert!(ex.choices.is_empty());
    assert!(
        ex.response_body
            .as_deref()
            .unwrap_or_default()
            .contains("upstream down")
    );

    let (_, summary) = run("event: error\ndata: gateway exploded\n\n");
    assert_eq!(summary.error.as_deref(), Some("gateway exploded"));
    assert_eq!(summary.malformed_events, 0);
}

#[test]
fn out_of_order_and_unannounced_events_still_give_their_text() {
    let events = [
        // Output 1 before output 0; a delta for items never announced.
        json!({"type": "response.output_text.delta", "output_index": 1, "content_index": 1, "delta": "world"}),
        json!({"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "hello"}),
        json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0,
               "delta": "think"}),
        // A text delta for the reasoning item and arguments for a message: not theirs.
        json!({"type": "response.output_text.delta", "output_index": 0, "delta": "stray"}),
        json!({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{}"}),
        json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{\"a\":"}),
        json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "1}"}),
        json!({"type": "response.function_call_arguments.done", "output_index": 2, "arguments": "{\"a\":1}",
               "name": "f"}),
        // Wrong types: read as absent.
        json!({"type": "response.output_text.delta", "output_index": "1", "delta": 5}),
        json!({"type": "response.output_item.added", "output_index": 3, "item": "nope"}),
        json!({"type": "response.content_part.added", "output_index": 1, "content_index": 2, "part": 9}),
        json!({"type": 12, "response": 3}),
        json!({"type": "response.unknown.event", "whatever": true}),
    ];
    let (ex, summary) = run_all_chunkings(&sse(&events));
    assert_eq!(summary.malformed_events, 0);
    assert_eq!(
        ex.choices,
        [Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: Some("hello\nworld".to_owned()),
            tool_calls: vec![call("", "f", r#"{"a":1}"#)],
            finish_reason: None,
            reasoning: Some("think".to_owned()),
        }]
    );
    let (_, summary) = run("data: {not json\n\ndata: 42\n\n");
    assert_eq!(summary.malformed_events, 2);
}

#[test]
fn done_events_replace_what_the_deltas_built() {
    let events = [
        json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Helo"}),
        json!({"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": "Hello"}),
        json!({"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "draft"}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": {
            "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "final"}]}}),
    ];
    let (ex, _) = run(&sse(&events));
    assert_eq!(ex.choices[0].content.as_deref(), Some("Hello\nfinal"));
}

#[test]
fn what_the_span_keeps_is_capped_and_the_summary_says_so() {
    // 9 MiB of text in 1 KiB deltas keeps 8 MiB.
    let piece = "é".repeat(512);
    let event =
        sse(&[json!({"type": "response.output_text.delta", "output_index": 0, "delta": piece})]);
    let mut acc = SseAccumulator::for_protocol(&RESPONSES);
    for _ in 0..(9 << 10) {
        acc.feed(event.as_bytes());
    }
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    assert!(summary.truncated && ex.response_truncated);
    assert_eq!(
        ex.choices[0].content.as_deref().map(str::len),
        Some(MAX_TEXT_BYTES)
    );

    // Text a `.done` replaces is given back: 4.5 MiB streamed, each item's text
    // sent three times (deltas, `output_text.done`, `output_item.done`), is kept.
    let mut acc = SseAccumulator::for_protocol(&RESPONSES);
    let piece = "a".repeat(100 << 10);
    let whole = piece.repeat(9);
    for i in 0..5 {
        let delta =
            json!({"type": "response.output_text.delta", "output_index": i, "delta": piece});
        for _ in 0..9 {
            acc.feed(sse(std::slice::from_ref(&delta)).as_bytes());
        }
        let item = json!({"type": "message", "content": [{"type": "output_text", "text": whole}]});
        acc.feed(
            sse(&[
                json!({"type": "response.output_text.done", "output_index": i, "text": whole}),
                json!({"type": "response.output_item.done", "output_index": i, "item": item}),
            ])
            .as_bytes(),
        );
    }
    let mut ex = Exchange::default();
    let summary = acc.finish(&mut ex);
    assert!(!summary.truncated && summary.malformed_events == 0);
    let kept = ex.choices[0].content.as_deref().map_or(0, str::len);
    assert_eq!(kept, 5 * whole.len() + 4);

    // Items, parts and labels.
    let many: Vec<Value> = (0..MAX_TRACKED + 5)
        .map(|i| json!({"type": "response.function_call_arguments.delta", "output_index": i, "delta": "x"}))
        .collect();
    let (ex, summary) = run(&sse(&many));
    assert!(summary.truncated);
    assert_eq!(ex.choices[0].tool_calls.len(), MAX_TRACKED);
    let parts: Vec<Value> = (0..MAX_TRACKED + 5)
        .map(|i| json!({"type": "response.output_text.delta", "output_index": 0, "content_index": i, "delta": ""}))
        .collect();
    let (ex, summary) = run(&sse(&parts));
    assert!(summary.truncated);
    assert_eq!(
        ex.choices[0].content.as_deref().map(str::len),
        Some(MAX_TRACKED - 1)
    );
    let long = "n".repeat(MAX_LABEL_BYTES + 10);
    let (ex, summary) = run(&sse(&[
        json!({"type": "response.output_item.added", "output_index": 0,
        "item": {"type": "function_call", "call_id": long, "name": long}}),
        json!({"type": "response.incomplete", "response": {"id": long, "status": "incomplete",
        "incomplete_details": {"reason": long}}}),
    ]));
    assert!(summary.truncated);
    let choice = &ex.choices[0];
    assert_eq!(choice.tool_calls[0].id.len(), MAX_LABEL_BYTES);
    assert_eq!(choice.tool_calls[0].name.len(), MAX_LABEL_BYTES);
    assert_eq!(
        choice.finish_reason.as_deref().map(str::len),
        Some(MAX_LABEL_BYTES)
    );
    assert_eq!(
        ex.response_id.as_deref().map(str::len),
        Some(MAX_LABEL_BYTES)
    );

    // An ordinary stream is not truncated.
    let (ex, summary) = run(&sse(&stream_events(false)));
    assert!(!summary.truncated && !ex.response_truncated);
}

#[test]
fn empty_and_non_sse_input_is_no_answer() {
    let (ex, summary) = run("");
    assert_eq!(summary, StreamSummary::default());
    assert!(ex.choices.is_empty());
    assert_eq!(ex.response_body, None);
    let (ex, summary) = run("<html><body>502 Bad Gateway</body></html>\n");
    assert_eq!(summary.events, 0);
    assert!(ex.choices.is_empty());
}

#[test]
fn random_bytes_and_mutated_streams_never_panic() {
    let mut rng = Rng(0x13);
    let alphabet = b"data:event: response.output_text.delta\r\n{}[]\",0123\"type\"\xe2\x80\x99\xff";
    for _ in 0..300 {
        let len = rng.below(2000);
        let stream: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let _ = run_chunks(stream.chunks(1 + rng.below(50)));
    }
    let fixture = sse(&stream_events(false)).into_bytes();
    for _ in 0..300 {
        let mut stream = fixture.clone();
        for _ in 0..=rng.below(8) {
            let at = rng.below(stream.len());
            stream[at] = alphabet[rng.below(alphabet.len())];
        }
        let (ex, _) = run_chunks(stream.chunks(1 + rng.below(100)));
        // Whatever survived, the rendered body reads back to the same choices.
        if let Some(body) = ex
            .response_body
            .as_deref()
            .filter(|_| !ex.choices.is_empty())
        {
            let mut reread = Exchange::default();
            RESPONSES
                .parse_response(body.as_bytes(), &mut reread)
                .unwrap();
            assert_eq!(reread.choices, ex.choices, "{body}");
        }
    }
}

#[test]
fn tools_offered_by_additional_tools_items_are_the_calls_tools_too() {
    // Codex 0.171 sends its tools as an input item rather than in `tools`.
    let namespace = json!({"type": "namespace", "name": "clock", "tools": [
        {"type": "function", "name": "sleep", "parameters": {"type": "object"}}]});
    let ex = request(&json!({
        "model": "gpt-5-codex",
        "tools": [{"type": "web_search"}],
        "input": [
            {"type": "additional_tools", "role": "developer", "tools": [namespace]},
            {"type": "additional_tools", "tools": "not a list"},
            {"type": "message", "role": "user", "content": "hi"}
        ]
    }));
    assert_eq!(ex.tools, vec![json!({"type": "web_search"}), namespace]);
    assert_eq!(ex.prompt.last(), Some(&msg("user", "hi")));
}
