//! Arbitrary bytes as one CEL expression in `fields.add`: loading may fail, but
//! neither loading nor evaluating against a sample exchange may panic.
#![no_main]

use std::sync::LazyLock;

use celgate_engine::exchange::{
    Choice, Exchange, HttpRequest, HttpResponse, Message, Operation, ToolCall,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

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
        ],
        input_tokens: Some(40),
        output_tokens: Some(12),
        total_tokens: Some(52),
        request_body: Some(r#"{"model":"gpt-4o","messages":[],"stream":true}"#.into()),
        response_body: Some(r#"{"id":"chatcmpl-1","choices":[]}"#.into()),
        error_type: None,
        request: HttpRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![("x-session-id".into(), "s-1".into())],
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
    }
});

/// `s` as a YAML double-quoted scalar. Everything outside printable ASCII is
/// escaped, so characters YAML forbids in a stream (C1 controls, U+FFFE, ...) still
/// reach the CEL parser instead of failing in the YAML layer.
fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    let yaml = format!(
        "config:\n  tracing:\n    fields:\n      add:\n        fuzz.attr: {}\n",
        yaml_quote(expr)
    );
    if let Ok(loaded) = celgate_engine::load(&yaml, &Default::default()) {
        let _ = loaded.plan.evaluate(&EXCHANGE);
    }
});
