//! Arbitrary bytes as one CEL expression: compiling may fail, but neither
//! compiling nor evaluating against a sample exchange may panic, and the native
//! evaluator must agree with the CEL interpreter wherever it answers itself.
#![no_main]

use std::sync::LazyLock;

use celgate_engine::exchange::{
    Choice, Exchange, HttpRequest, HttpResponse, Message, Operation, ToolCall,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

mod worker;

/// A chat exchange touching every part of the data model the resolver reads.
static EXCHANGE: LazyLock<Exchange> = LazyLock::new(|| {
    let call = ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    };
    Exchange {
        operation: Operation::Chat,
        provider: "openai".into(),
        request_model: Some("gpt-4o".into()),
        response_model: Some("gpt-4o-2024-08-06".into()),
        response_id: Some("chatcmpl-1".into()),
        streaming: true,
        prompt: vec![
            Message {
                role: "system".into(),
                content: Some("Be brief.".into()),
                ..Default::default()
            },
            Message {
                role: "user".into(),
                content: Some("Weather in Paris?".into()),
                name: Some("alice".into()),
                ..Default::default()
            },
            Message {
                role: "assistant".into(),
                tool_calls: vec![call.clone()],
                ..Default::default()
            },
            Message {
                role: "tool".into(),
                content: Some(r#"{"temp":21}"#.into()),
                tool_call_id: Some("call_1".into()),
                ..Default::default()
            },
        ],
        choices: vec![
            Choice {
                index: 0,
                role: "assistant".into(),
                content: Some("21 °C and sunny.".into()),
                tool_calls: vec![],
                finish_reason: Some("stop".into()),
            },
            Choice {
                index: 1,
                role: "assistant".into(),
                content: None,
                tool_calls: vec![call],
                finish_reason: Some("tool_calls".into()),
            },
        ],
        tools: vec![json!({"type": "function", "function": {
            "name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})],
        params: vec![
            ("temperature".into(), json!(0.2)),
            ("max_tokens".into(), json!(256)),
            ("top_p".into(), json!(1)),
            ("stop".into(), json!(["\n\n"])),
            ("user".into(), json!("u-42")),
            ("seed".into(), json!(18446744073709551615u64)),
            ("n".into(), json!(null)),
            (
                "metadata".into(),
                json!({"b": [1, 2.5, "x", null, true], "a": {}, "c.d": ""}),
            ),
        ],
        input_tokens: Some(40),
        output_tokens: Some(12),
        total_tokens: Some(52),
        request_body: Some(r#"{"model":"gpt-4o","messages":[],"stream":true}"#.into()),
        response_body: Some(r#"{"id":"chatcmpl-1","choices":[]}"#.into()),
        response_truncated: false,
        error_type: None,
        request: HttpRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![
                ("x-session-id".into(), "s-1".into()),
                ("x-dup".into(), "first".into()),
                ("x-dup".into(), "second".into()),
            ],
        },
        response: HttpResponse {
            status: Some(200),
            duration_ms: Some(350.0),
            headers: vec![("content-type".into(), "text/event-stream".into())],
        },
        source_address: Some("127.0.0.1:40000".into()),
        backend_name: Some("openai".into()),
        backend_host: Some("api.openai.com".into()),
        backend_port: Some(443),
        client: Some(std::sync::Arc::new(celgate_engine::exchange::Client {
            name: "ci-bot".into(),
            team: Some("ml".into()),
            metadata: vec![("tenant".into(), "acme".into())],
        })),
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    let expr = expr.to_owned();
    worker::run(move || celgate_engine::fuzzing::check_expression(&expr, &EXCHANGE));
});
