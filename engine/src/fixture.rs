//! Sample exchanges for the engine's tests, its benchmarks (`benches/eval.rs`) and the
//! fuzz targets (`fuzz/`); not a stable API.
//!
//! Each of those needs an [`Exchange`] to evaluate on, and each used to write its own
//! literal, so a field added to the data model reached some and not others, and the
//! fuzzer explored different data than the tests compared. They live here once:
//! [`rich`] touches every part of the data model the resolver reads (the fuzzer's and
//! the equivalence tests' exchange), [`sparse`] leaves absent whatever may be absent,
//! and [`bookshop_chat`] is a realistic request that the benchmarks time. Changing
//! [`bookshop_chat`] changes what the recorded numbers in BENCHMARKS.md measure.

use std::sync::Arc;

use serde_json::json;

use crate::exchange::{
    Api, Choice, Client, Exchange, HttpRequest, HttpResponse, Message, Operation, TokenDetails,
    ToolCall,
};

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: format!("{{\"q\":\"{name}\"}}"),
    }
}

/// A streamed chat exchange with every part set: tool calls in the prompt and in a
/// choice, tools, params that are null, huge, nested 70 deep, dotted or given twice,
/// token details, duplicate headers, a client; the response truncated and an error
/// type, so no branch of the resolver is left unread.
pub fn rich() -> Exchange {
    Exchange {
        operation: Operation::Chat,
        provider: "openai".into(),
        request_model: Some("gpt-4o".into()),
        response_model: Some("gpt-4o-2024".into()),
        response_id: Some("chatcmpl-1".into()),
        streaming: true,
        api: Api::ChatCompletions,
        system: vec!["Be brief. héllo".into()],
        prompt: rich_prompt(),
        choices: vec![
            Choice {
                index: 0,
                role: "assistant".into(),
                content: Some("Sunny.".into()),
                tool_calls: vec![],
                finish_reason: Some("stop".into()),
                reasoning: Some("The user wants weather.".into()),
            },
            Choice {
                index: 1,
                role: "assistant".into(),
                content: None,
                tool_calls: vec![call("c3", "lookup")],
                finish_reason: None,
                reasoning: None,
            },
        ],
        tools: vec![
            json!({"type": "function", "function": {"name": "weather",
                "description": "Weather", "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
            json!({"type": "function", "function": {"name": "time"}}),
        ],
        params: rich_params(),
        input_tokens: Some(40),
        output_tokens: Some(12),
        total_tokens: Some(52),
        token_details: TokenDetails {
            cache_read: Some(16),
            reasoning: Some(4),
            ..TokenDetails::default()
        },
        request_body: Some("{\"model\":\"gpt-4o\"}".into()),
        session_id: Some("s-1".into()),
        user_id: Some("u-1".into()),
        time_to_first_token_ms: Some(120.5),
        response_body: Some("{\"id\":\"chatcmpl-1\"}".into()),
        response_truncated: true,
        error_type: Some("timeout".into()),
        request: HttpRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![
                ("x-session-id".into(), "s-1".into()),
                ("x-user-id".into(), "u-1".into()),
                ("x-dup".into(), "first".into()),
                ("x-dup".into(), "second".into()),
            ],
        },
        response: HttpResponse {
            status: Some(200),
            duration_ms: Some(350.5),
            headers: vec![("content-type".into(), "text/event-stream".into())],
        },
        source_address: Some("127.0.0.1:40000".into()),
        backend_name: Some("openai".into()),
        backend_host: Some("api.openai.com".into()),
        backend_port: Some(443),
        client: Some(Arc::new(Client {
            name: "ci-bot".into(),
            team: Some("ml".into()),
            metadata: vec![
                ("cost.center".into(), "42".into()),
                ("tenant".into(), "acme".into()),
            ],
        })),
    }
}

/// System, user (named, non-ASCII), assistant with two tool calls, tool result.
fn rich_prompt() -> Vec<Message> {
    vec![
        Message {
            role: "system".into(),
            content: Some("Be brief. héllo".into()),
            ..Default::default()
        },
        Message {
            role: "user".into(),
            content: Some("Weather?".into()),
            name: Some("alice".into()),
            ..Default::default()
        },
        Message {
            role: "assistant".into(),
            tool_calls: vec![call("c1", "weather"), call("c2", "time")],
            ..Default::default()
        },
        Message {
            role: "tool".into(),
            content: Some("{\"t\":21}".into()),
            tool_call_id: Some("c1".into()),
            ..Default::default()
        },
    ]
}

fn rich_params() -> Vec<(String, serde_json::Value)> {
    let mut deep = json!("bottom");
    for _ in 0..70 {
        deep = json!({ "d": deep });
    }
    vec![
        ("temperature".into(), json!(0.2)),
        ("max_tokens".into(), json!(256)),
        ("top_p".into(), json!(1)),
        ("stop".into(), json!(["\n\n", "END"])),
        ("user".into(), json!("u-42")),
        ("seed".into(), json!(18446744073709551615u64)),
        ("n".into(), json!(null)),
        (
            "metadata".into(),
            json!({"b": [1, 2.5, "x", null, true], "a": {}, "c.d": ""}),
        ),
        ("deep".into(), deep),
        ("temperature".into(), json!(0.3)),
    ]
}

/// Nulls everywhere something may be absent.
pub fn sparse() -> Exchange {
    Exchange {
        operation: Operation::Embeddings,
        provider: "gemini".into(),
        prompt: vec![Message {
            role: "user".into(),
            ..Default::default()
        }],
        choices: vec![Choice::default()],
        params: vec![("temperature".into(), json!(null))],
        ..Default::default()
    }
}

/// Repeat `unit` until the text is `len` bytes (`unit` is ASCII).
fn text(unit: &str, len: usize) -> String {
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

/// A realistic chat exchange: 10 prompt messages (~2 KB of text: system, then
/// alternating user/assistant), one ~300-char completion, usage, params, raw bodies.
/// What `benches/eval.rs` times: keep it as it is, or say so next to new numbers.
pub fn bookshop_chat() -> Exchange {
    let prompt = bookshop_prompt();
    let completion = text(
        "Based on what you liked, try The Priory of the Orange Tree, a standalone epic. ",
        300,
    );
    let params = vec![
        ("temperature".to_owned(), json!(0.7)),
        ("max_tokens".to_owned(), json!(512)),
        ("top_p".to_owned(), json!(0.95)),
    ];
    let request_body = json!({
        "model": "gpt-4o-mini",
        "messages": prompt.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
        "temperature": 0.7, "max_tokens": 512, "top_p": 0.95,
    })
    .to_string();
    let response_body = json!({
        "id": "chatcmpl-AbC123xyz", "object": "chat.completion", "created": 1732190000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": completion},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 498, "completion_tokens": 71, "total_tokens": 569},
    })
    .to_string();
    Exchange {
        operation: Operation::Chat,
        provider: "openai".into(),
        request_model: Some("gpt-4o-mini".into()),
        response_model: Some("gpt-4o-mini-2024-07-18".into()),
        response_id: Some("chatcmpl-AbC123xyz".into()),
        streaming: false,
        api: Api::ChatCompletions,
        system: vec![],
        prompt,
        choices: vec![Choice {
            index: 0,
            role: "assistant".into(),
            content: Some(completion),
            tool_calls: vec![],
            finish_reason: Some("stop".into()),
            reasoning: None,
        }],
        tools: vec![],
        params,
        input_tokens: Some(498),
        output_tokens: Some(71),
        total_tokens: Some(569),
        token_details: Default::default(),
        request_body: Some(request_body),
        session_id: None,
        user_id: None,
        time_to_first_token_ms: Some(640.0),
        response_body: Some(response_body),
        response_truncated: false,
        error_type: None,
        request: HttpRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("user-agent".into(), "OpenAI/Python 1.54.0".into()),
            ],
        },
        response: HttpResponse {
            status: Some(200),
            duration_ms: Some(812.5),
            headers: vec![("content-type".into(), "application/json".into())],
        },
        source_address: Some("10.0.0.7:51234".into()),
        backend_name: Some("openai".into()),
        backend_host: Some("api.openai.com".into()),
        backend_port: Some(443),
        client: None,
    }
}

/// A ~380-byte system message, then nine ~180-byte turns, user first.
fn bookshop_prompt() -> Vec<Message> {
    let mut prompt = vec![Message {
        role: "system".into(),
        content: Some(text(
            "You are a helpful assistant for an online bookshop. Answer briefly. ",
            380,
        )),
        ..Default::default()
    }];
    for i in 1..10 {
        let (role, unit) = if i % 2 == 1 {
            (
                "user",
                "Which fantasy novels published after 2015 would you recommend? ",
            )
        } else {
            (
                "assistant",
                "Consider The Fifth Season by N. K. Jemisin and Piranesi. ",
            )
        };
        prompt.push(Message {
            role: role.into(),
            content: Some(text(unit, 180)),
            ..Default::default()
        });
    }
    prompt
}
