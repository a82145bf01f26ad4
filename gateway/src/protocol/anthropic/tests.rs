//! Messages requests, whole answers and the errors celgate answers in their shape.

use super::*;
use crate::protocol::limits::{MAX_LABEL_BYTES, MAX_TRACKED};
use celgate_engine::exchange::Message;
use serde_json::json;

fn request(body: &Value) -> Exchange {
    request_text(&body.to_string())
}

/// A request body as written (a `json!` value has its keys sorted).
fn request_text(body: &str) -> Exchange {
    let mut ex = Exchange::default();
    MESSAGES
        .parse_request(body.as_bytes(), &mut ex)
        .expect("request parses");
    ex
}

fn request_err(body: &str) -> String {
    let mut ex = Exchange::default();
    let err = MESSAGES
        .parse_request(body.as_bytes(), &mut ex)
        .expect_err("request is refused")
        .to_string();
    assert_eq!(ex.request_body.as_deref(), Some(body), "kept for the span");
    err
}

fn answer(body: &Value) -> Exchange {
    let mut ex = Exchange::default();
    MESSAGES
        .parse_response(body.to_string().as_bytes(), &mut ex)
        .expect("answer parses");
    ex
}

fn message(role: &str, content: Option<&str>) -> Message {
    Message {
        role: role.to_owned(),
        content: content.map(str::to_owned),
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

/// What Claude Code sends, in shape: billing header and two cached system blocks,
/// tools, adaptive thinking, `metadata.user_id` as JSON, a system message inside
/// `messages`.
const CLAUDE_CODE_REQUEST: &str = r#"{
    "model": "claude-sonnet-4-5",
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
            {"type": "text", "text": "List the files", "cache_control": {"type": "ephemeral"}}
        ]},
        {"role": "system", "content": "Plan mode is off."}
    ],
    "temperature": 1,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.80"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Use tools well.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ],
    "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}],
    "metadata": {"user_id": "{\"device_id\":\"9f2c\",\"account_uuid\":\"\",\"session_id\":\"4b1e-session\"}"},
    "max_tokens": 32000,
    "thinking": {"type": "adaptive"},
    "context_management": {"edits": []},
    "output_config": {"effort": "high"},
    "stream": true
}"#;

#[test]
fn messages_is_post_v1_messages_exactly() {
    assert!(MESSAGES.recognises(&Method::POST, "/v1/messages"));
    for (method, path) in [
        (Method::GET, "/v1/messages"),
        (Method::POST, "/v1/messages/"),
        (Method::POST, "/v1/messages/count_tokens"),
        (Method::POST, "/messages"),
    ] {
        assert!(!MESSAGES.recognises(&method, path), "{method} {path}");
    }
    assert_eq!(MESSAGES.route(), "/v1/messages");
    assert_eq!(MESSAGES.operation(), Operation::Chat);
    assert_eq!(MESSAGES.final_event(), FinalEvent::Named("message_stop"));
    assert_eq!(MESSAGES.backend_auth(), BackendAuth::Header("x-api-key"));
}

#[test]
fn a_claude_code_request_reads_system_first_and_its_session() {
    let ex = request_text(CLAUDE_CODE_REQUEST);
    assert_eq!((ex.operation, ex.api), (Operation::Chat, Api::Messages));
    assert_eq!(ex.request_model.as_deref(), Some("claude-sonnet-4-5"));
    assert!(ex.streaming);
    assert_eq!(
        ex.system,
        [
            "x-anthropic-billing-header: cc_version=2.1.80",
            "You are Claude Code.",
            "Use tools well.",
            "Plan mode is off.",
        ]
    );
    assert_eq!(
        ex.prompt,
        [
            message(
                "system",
                Some(
                    "x-anthropic-billing-header: cc_version=2.1.80\nYou are Claude Code.\nUse tools well."
                )
            ),
            message(
                "user",
                Some("<system-reminder>ctx</system-reminder>\nList the files")
            ),
            message("system", Some("Plan mode is off.")),
        ]
    );
    assert_eq!(ex.tools.len(), 1);
    assert_eq!(ex.tools[0]["name"], "Bash");
    let keys: Vec<&str> = ex.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "temperature",
            "max_tokens",
            "thinking",
            "context_management",
            "output_config"
        ]
    );
    assert_eq!(ex.params[2].1, json!({"type": "adaptive"}));
    assert_eq!(ex.session_id.as_deref(), Some("4b1e-session"));
    // No account (an API key): the device is who.
    assert_eq!(ex.user_id.as_deref(), Some("9f2c"));
}

#[test]
fn tool_results_are_tool_messages_before_the_text_beside_them() {
    let ex = request(&json!({
        "model": "m",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                {"type": "text", "text": "Weather in Paris?"}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "ZW5j"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "units": "c"}},
                {"type": "tool_use", "id": "toolu_02", "name": "clock", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": true, "content": [
                    {"type": "text", "text": "clock"}, {"type": "image", "source": {}}, {"type": "text", "text": "broken"}
                ]},
                {"type": "text", "text": "And tomorrow?"}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_03"}]},
            {"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                "bare text", 7, null
            ]},
            {"role": "user", "content": [{"type": "document", "source": {}}]},
            {"role": "user"}
        ]
    }));
    let tool = |id: &str, content: Option<&str>| Message {
        tool_call_id: Some(id.to_owned()),
        ..message("tool", content)
    };
    assert_eq!(
        ex.prompt,
        [
            message("system", Some("Be brief.")),
            message("user", Some("Weather in Paris?")),
            Message {
                tool_calls: vec![
                    call("toolu_01", "get_weather", r#"{"city":"Paris","units":"c"}"#),
                    call("toolu_02", "clock", "{}"),
                ],
                ..message("assistant", Some("Checking."))
            },
            tool("toolu_01", Some("18°C")),
            tool("toolu_02", Some("clock\nbroken")),
            message("user", Some("And tomorrow?")),
            tool("toolu_03", None),
            message("assistant", Some("bare text")),
            message("user", None),
            message("user", None),
        ]
    );
    assert_eq!(ex.system, ["Be brief."]);
}

#[test]
fn requests_without_a_model_or_with_mistyped_fields_are_refused() {
    for (body, error) in [
        (r#"{"messages": []}"#, "`model` is required"),
        (r#"{"model": null}"#, "`model` is required"),
        (r#"{"model": 4}"#, "`model` must be a string, not a number"),
        (
            r#"{"model": "m", "stream": "yes"}"#,
            "`stream` must be a boolean, not a string",
        ),
        (
            r#"{"model": "m", "tools": {}}"#,
            "`tools` must be an array, not an object",
        ),
        (
            r#"{"model": "m", "system": 1}"#,
            "`system` must be a string or an array of text blocks, not a number",
        ),
        (
            r#"{"model": "m", "messages": {}}"#,
            "`messages` must be an array of messages, not an object",
        ),
        (
            r#"{"model": "m", "messages": ["hi"]}"#,
            "`messages[0]` must be an object, not a string",
        ),
        (
            r#"{"model": "m", "messages": [{"content": "hi"}]}"#,
            "`messages[0].role` is required",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": 3}]}"#,
            "`messages[0].content` must be a string, an array of content blocks, or null, not a number",
        ),
        ("[]", "request body must be a JSON object, not an array"),
    ] {
        assert_eq!(request_err(body), error, "{body}");
    }
    assert!(request_err("{").starts_with("request body is not valid JSON"));
}

#[test]
fn a_key_given_twice_means_its_last_value_and_is_reported() {
    let body = br#"{"model": "a", "max_tokens": 1, "model": "b", "max_tokens": 2, "top_k": 3}"#;
    let mut ex = Exchange::default();
    let facts = MESSAGES.parse_request(body, &mut ex).unwrap();
    assert!(facts.duplicate_keys);
    assert_eq!(ex.request_model.as_deref(), Some("b"));
    assert_eq!(
        ex.params,
        [
            ("max_tokens".to_owned(), json!(2)),
            ("top_k".to_owned(), json!(3))
        ]
    );
    let facts = MESSAGES
        .parse_request(br#"{"model": "a"}"#, &mut Exchange::default())
        .unwrap();
    assert!(!facts.duplicate_keys);
}

#[test]
fn metadata_user_id_names_the_session_and_the_user() {
    let ids = |metadata: Value| {
        let ex = request(&json!({"model": "m", "metadata": metadata}));
        (ex.session_id, ex.user_id)
    };
    let some = |s: &str| Some(s.to_owned());
    let json_form = r#"{"device_id":"d1","account_uuid":"acc-1","session_id":"s-1"}"#;
    assert_eq!(
        ids(json!({"user_id": json_form})),
        (some("s-1"), some("acc-1"))
    );
    let other_user = r#"{"user_id":"u-7","session_id":"s-2"}"#;
    assert_eq!(
        ids(json!({"user_id": other_user})),
        (some("s-2"), some("u-7"))
    );
    assert_eq!(
        ids(json!({"user_id": "user_ab12_account_acc-2_session_s-3"})),
        (some("s-3"), some("acc-2"))
    );
    assert_eq!(
        ids(json!({"user_id": "user_ab12_account__session_s-4"})),
        (some("s-4"), some("ab12"))
    );
    assert_eq!(ids(json!({"user_id": "alice"})), (None, some("alice")));
    assert_eq!(ids(json!({"user_id": "42"})), (None, some("42")));
    // JSON naming nobody, mistyped or empty values: nothing.
    assert_eq!(
        ids(json!({"user_id": r#"{"session_id": 5}"#})),
        (None, None)
    );
    assert_eq!(ids(json!({"user_id": ""})), (None, None));
    assert_eq!(ids(json!({"user_id": 42})), (None, None));
    assert_eq!(ids(json!("user")), (None, None));
    // A label, not a document.
    let long = format!(r#"{{"session_id":"{}"}}"#, "s".repeat(5000));
    let (session, _) = ids(json!({ "user_id": long }));
    assert_eq!(session.map(|s| s.len()), Some(MAX_LABEL_BYTES));
}

/// An answer with thinking, text and a tool call, and cached input.
fn tool_answer() -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQB"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "thinking", "thinking": "Call the tool."},
            {"type": "text", "text": "Let me check "},
            {"type": "text", "text": "the weather.", "citations": null},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 2048,
            "cache_read_input_tokens": 30000,
            "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 96,
            "service_tier": "standard"
        }
    })
}

#[test]
fn an_answer_is_one_choice_with_text_tools_reasoning_and_cache_counts() {
    let ex = answer(&tool_answer());
    assert_eq!(
        ex.choices,
        [Choice {
            index: 0,
            role: "assistant".to_owned(),
            content: Some("Let me check the weather.".to_owned()),
            tool_calls: vec![call(
                "toolu_01A09q90qw90lq917835lq9",
                "get_weather",
                r#"{"location":"San Francisco, CA","unit":"celsius"}"#
            )],
            finish_reason: Some("tool_use".to_owned()),
            reasoning: Some("The user wants weather.\nCall the tool.".to_owned()),
        }]
    );
    assert_eq!(
        ex.response_id.as_deref(),
        Some("msg_01XFDUDYJgAACzvnptvVoYEL")
    );
    assert_eq!(
        ex.response_model.as_deref(),
        Some("claude-sonnet-4-5-20250929")
    );
    // Input counts the cache (the OTel rule); Anthropic reports no total.
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(32060), Some(96), Some(32156))
    );
    assert_eq!(
        ex.token_details,
        TokenDetails {
            cache_read: Some(30000),
            cache_write: Some(2048),
            ..TokenDetails::default()
        }
    );
    assert_eq!(ex.response_body, Some(tool_answer().to_string()));
    assert!(!ex.response_truncated);
}

#[test]
fn an_error_body_has_no_choice_and_odd_shapes_give_less() {
    let ex = answer(&json!({
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_011"
    }));
    assert!(ex.choices.is_empty());
    assert_eq!(ex.input_tokens, None);

    let ex = answer(&json!({
        "id": 5, "type": "message", "role": ["x"], "model": null,
        "content": "just text", "stop_reason": 3,
        "usage": {"input_tokens": -4, "output_tokens": "7", "cache_read_input_tokens": 2.0}
    }));
    assert_eq!((ex.response_id, ex.response_model), (None, None));
    assert_eq!(
        ex.choices,
        [Choice {
            role: "assistant".to_owned(),
            ..Choice::default()
        }]
    );
    // Only the well-typed, non-negative count is one.
    assert_eq!(
        (ex.input_tokens, ex.output_tokens, ex.total_tokens),
        (Some(2), None, None)
    );

    let ex = answer(&json!({"content": [{"type": "text", "text": "untyped"}], "usage": []}));
    assert_eq!(ex.choices[0].content.as_deref(), Some("untyped"));
    let ex = answer(&json!({"id": "msg_1"}));
    assert!(ex.choices.is_empty());

    for body in ["[]", "nope", ""] {
        let mut ex = Exchange::default();
        assert!(MESSAGES.parse_response(body.as_bytes(), &mut ex).is_err());
        assert_eq!(ex.response_body.as_deref(), Some(body));
    }
}

#[test]
fn an_answer_of_too_many_blocks_keeps_the_first_and_says_so() {
    let blocks: Vec<Value> = (0..MAX_TRACKED + 5)
        .map(|i| json!({"type": "text", "text": if i == 0 { "a" } else { "" }}))
        .collect();
    let body = json!({"type": "message", "content": blocks}).to_string();
    let mut ex = Exchange::default();
    MESSAGES
        .parse_response_owned(body.clone().into_bytes(), &mut ex)
        .unwrap();
    assert!(ex.response_truncated);
    assert_eq!(ex.choices[0].content.as_deref(), Some("a"));
    assert_eq!(ex.response_body, Some(body));
}

#[test]
fn an_invalid_utf8_answer_is_read_and_kept_lossily() {
    let mut body = br#"{"type":"message","content":[{"type":"text","text":"ok"}],"x":""#.to_vec();
    body.extend_from_slice(b"\xff\"}");
    let mut ex = Exchange::default();
    MESSAGES.parse_response_owned(body, &mut ex).unwrap();
    assert_eq!(ex.choices[0].content.as_deref(), Some("ok"));
    assert!(ex.response_body.unwrap().contains('\u{FFFD}'));
}

#[test]
fn celgate_s_own_errors_have_anthropic_s_shape_and_types() {
    let body = MESSAGES.error_body(
        StatusCode::BAD_REQUEST,
        "no route for model `m`",
        "invalid_request_error",
        Some("model_not_found"),
    );
    assert_eq!(
        body,
        json!({"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "no route for model `m`"
        }})
    );
    for (status, kind, expected) in [
        (401, "invalid_request_error", "authentication_error"),
        (400, "authentication_error", "authentication_error"),
        (403, "invalid_request_error", "permission_error"),
        (404, "invalid_request_error", "not_found_error"),
        (405, "invalid_request_error", "invalid_request_error"),
        (413, "invalid_request_error", "request_too_large"),
        (415, "invalid_request_error", "invalid_request_error"),
        (429, "invalid_request_error", "rate_limit_error"),
        (502, "upstream_error", "api_error"),
        (503, "invalid_request_error", "api_error"),
        (504, "upstream_error", "timeout_error"),
        (500, "timeout", "timeout_error"),
        (529, "upstream_error", "overloaded_error"),
    ] {
        let status = StatusCode::from_u16(status).unwrap();
        let body = MESSAGES.error_body(status, "m", kind, None);
        assert_eq!(body["error"]["type"], expected, "{status} {kind}");
        assert_eq!(body["type"], "error");
    }
}
