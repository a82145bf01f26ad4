//! Sample exchanges for the engine's tests, its benchmarks (`benches/eval.rs`) and the
//! fuzz targets (`fuzz/`); not a stable API.
//!
//! Each of those needs an [`Exchange`] to evaluate on, and each used to write its own
//! literal, so a field added to the data model reached some and not others, and the
//! fuzzer explored different data than the tests compared. They live here once:
//! [`rich`] touches every part of the data model the resolver reads (the fuzzer's and
//! the equivalence tests' exchange), [`sparse`] leaves absent whatever may be absent,
//! [`bookshop_chat`] is a realistic request that the benchmarks time, and
//! [`protocol_calls`] are the Anthropic Messages, OpenAI Responses and Gemini calls
//! whose spans are compared with those of each backend's own instrumentation on the
//! same calls (`tests/e2e/references/`). Changing [`bookshop_chat`] changes what the
//! recorded numbers in BENCHMARKS.md measure.

use std::sync::Arc;

use serde_json::json;

use crate::exchange::{
    Api, Choice, Client, Exchange, HttpRequest, HttpResponse, Message, Operation, TokenDetails,
    ToolCall,
};

/// 2026-12-01T12:00:00Z, when every fixture request arrives (the references'
/// replayed answers carry the same date).
pub fn at_noon() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_126_400)
}

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
        start_time: Some(at_noon()),
        has_parent: true,
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
        start_time: Some(at_noon()),
        has_parent: false,
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

// ---------------------------------------------------------------------------------------
// Anthropic Messages, OpenAI Responses and Gemini: the calls the presets are compared
// on with their backends' own instrumentations (tests/e2e/references/)
// ---------------------------------------------------------------------------------------

/// Each protocol call of `tests/e2e/references/calls/` (named by its file stem), as the
/// gateway's protocol parsers read it (the mapping of `exchange.rs`'s docs), and as the
/// proxy completes it: backend address, status, the `x-session-id` / `x-user-id`
/// headers the references' session and user come from.
pub fn protocol_calls() -> Vec<(&'static str, Exchange)> {
    vec![
        ("messages_json", messages_json()),
        ("messages_stream_tools", messages_stream_tools()),
        ("messages_thinking", messages_thinking()),
        ("responses_json", responses_json()),
        ("responses_stream_tools", responses_stream_tools()),
        ("responses_reasoning", responses_reasoning()),
        ("gemini_json", gemini_json()),
        ("gemini_stream_tools", gemini_stream_tools()),
        ("gemini_thinking", gemini_thinking()),
    ]
}

macro_rules! call_file {
    ($name:literal) => {
        include_str!(concat!("../../tests/e2e/references/calls/", $name))
    };
}

/// What every protocol call shares: the proxy's part of the exchange.
fn protocol_call(api: Api, provider: &str, model: &str, path: &str, host: &str) -> Exchange {
    Exchange {
        operation: if api == Api::GenerateContent {
            Operation::GenerateContent
        } else {
            Operation::Chat
        },
        api,
        provider: provider.into(),
        request_model: Some(model.into()),
        session_id: Some("session-42".into()),
        user_id: Some("user-7".into()),
        time_to_first_token_ms: Some(180.0),
        start_time: Some(at_noon()),
        request: HttpRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-session-id".into(), "session-42".into()),
                ("x-user-id".into(), "user-7".into()),
            ],
        },
        response: HttpResponse {
            status: Some(200),
            duration_ms: Some(420.0),
            headers: vec![("content-type".into(), "application/json".into())],
        },
        source_address: Some("127.0.0.1:51234".into()),
        backend_name: Some(provider.into()),
        backend_host: Some(host.into()),
        backend_port: Some(443),
        ..Default::default()
    }
}

fn text_message(role: &str, text: &str) -> Message {
    Message {
        role: role.into(),
        content: Some(text.into()),
        ..Default::default()
    }
}

fn answer(content: Option<&str>, reasoning: Option<&str>, finish: &str) -> Choice {
    Choice {
        index: 0,
        role: "assistant".into(),
        content: content.map(str::to_owned),
        tool_calls: vec![],
        finish_reason: Some(finish.into()),
        reasoning: reasoning.map(str::to_owned),
    }
}

fn weather_call(id: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: arguments.into(),
    }
}

/// The weather round trip: the question, the assistant's call, the tool's result.
fn weather_round_trip(id: &str, arguments: &str, result: &str, result_id: &str) -> Vec<Message> {
    vec![
        text_message("user", "What is the weather in Paris?"),
        Message {
            role: "assistant".into(),
            tool_calls: vec![weather_call(id, arguments)],
            ..Default::default()
        },
        Message {
            role: "tool".into(),
            content: Some(result.into()),
            tool_call_id: Some(result_id.into()),
            ..Default::default()
        },
    ]
}

fn tokens(ex: &mut Exchange, input: i64, output: i64, total: i64, details: TokenDetails) {
    ex.input_tokens = Some(input);
    ex.output_tokens = Some(output);
    ex.total_tokens = Some(total);
    ex.token_details = details;
}

fn streamed(ex: &mut Exchange, response_body: serde_json::Value) {
    ex.streaming = true;
    ex.response.headers = vec![("content-type".into(), "text/event-stream".into())];
    ex.response_body = Some(response_body.to_string());
}

fn anthropic(model: &str) -> Exchange {
    let mut ex = protocol_call(
        Api::Messages,
        "anthropic",
        "claude-sonnet-4-5",
        "/v1/messages",
        "api.anthropic.com",
    );
    ex.response_model = Some(model.into());
    ex
}

fn anthropic_weather_tool(described: bool) -> serde_json::Value {
    let location = if described {
        json!({"type": "string", "description": "City and country"})
    } else {
        json!({"type": "string"})
    };
    json!({"name": "get_weather", "description": "Get the current weather for a location.",
           "input_schema": {"type": "object", "properties": {"location": location},
                            "required": ["location"]}})
}

/// Anthropic Messages, JSON: system blocks (one with `cache_control`), a plain
/// `metadata.user_id`, cache reads and writes in the usage.
pub fn messages_json() -> Exchange {
    let mut ex = anthropic("claude-sonnet-4-5-20250929");
    ex.response_id = Some("msg_01LisbonJson".into());
    ex.system = vec!["You are a concise geography tutor.".into()];
    ex.prompt = vec![
        text_message("system", "You are a concise geography tutor."),
        text_message("user", "What is the capital of Portugal?"),
    ];
    ex.choices = vec![answer(Some("Lisbon."), None, "end_turn")];
    ex.params = vec![
        ("max_tokens".into(), json!(256)),
        ("temperature".into(), json!(0.2)),
    ];
    let details = TokenDetails {
        cache_read: Some(1800),
        cache_write: Some(200),
        ..TokenDetails::default()
    };
    tokens(&mut ex, 2012, 4, 2016, details);
    ex.request_body = Some(call_file!("messages_json.request.json").trim_end().into());
    ex.response_body = Some(call_file!("messages_json.response.json").trim_end().into());
    ex
}

/// Anthropic Messages, streamed: a text block, then a `tool_use` block whose input
/// came as `input_json_delta` fragments.
pub fn messages_stream_tools() -> Exchange {
    let mut ex = anthropic("claude-sonnet-4-5-20250929");
    ex.response_id = Some("msg_01ParisTools".into());
    ex.system = vec!["Use the tools when they help.".into()];
    ex.prompt = vec![
        text_message("system", "Use the tools when they help."),
        text_message("user", "What is the weather in Paris?"),
    ];
    let arguments = "{\"location\": \"Paris, France\"}";
    let mut choice = answer(Some("Let me check the weather."), None, "tool_use");
    choice.tool_calls = vec![weather_call("toolu_01WeatherParis", arguments)];
    ex.choices = vec![choice];
    ex.tools = vec![anthropic_weather_tool(true)];
    ex.params = vec![
        ("max_tokens".into(), json!(512)),
        ("tool_choice".into(), json!({"type": "auto"})),
    ];
    let details = TokenDetails {
        cache_read: Some(0),
        cache_write: Some(0),
        ..TokenDetails::default()
    };
    tokens(&mut ex, 380, 58, 438, details);
    ex.request_body = Some(
        call_file!("messages_stream_tools.request.json")
            .trim_end()
            .into(),
    );
    streamed(
        &mut ex,
        json!({"id": "msg_01ParisTools", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5-20250929",
               "content": [{"type": "text", "text": "Let me check the weather."},
                           {"type": "tool_use", "id": "toolu_01WeatherParis",
                            "name": "get_weather", "input": {"location": "Paris, France"}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 380, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 0, "output_tokens": 58}}),
    );
    ex
}

/// Anthropic Messages with extended thinking after a tool round trip: thinking in the
/// history (not prompt text) and in the answer (the choice's reasoning).
pub fn messages_thinking() -> Exchange {
    let mut ex = anthropic("claude-sonnet-4-5-20250929");
    ex.response_id = Some("msg_01ParisThinking".into());
    ex.prompt = weather_round_trip(
        "toolu_01WeatherParis",
        "{\"location\":\"Paris, France\"}",
        "18 C, sunny",
        "toolu_01WeatherParis",
    );
    ex.choices = vec![answer(
        Some("It is 18 °C and sunny in Paris."),
        Some("The tool says 18 C and sunny."),
        "end_turn",
    )];
    ex.tools = vec![anthropic_weather_tool(false)];
    ex.params = vec![
        ("max_tokens".into(), json!(2048)),
        (
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": 1024}),
        ),
    ];
    let details = TokenDetails {
        cache_read: Some(0),
        cache_write: Some(0),
        ..TokenDetails::default()
    };
    tokens(&mut ex, 520, 41, 561, details);
    ex.request_body = Some(
        call_file!("messages_thinking.request.json")
            .trim_end()
            .into(),
    );
    ex.response_body = Some(
        call_file!("messages_thinking.response.json")
            .trim_end()
            .into(),
    );
    ex
}

fn responses(model: &str, response_model: &str) -> Exchange {
    let mut ex = protocol_call(
        Api::Responses,
        "openai",
        model,
        "/v1/responses",
        "api.openai.com",
    );
    ex.response_model = Some(response_model.into());
    ex
}

fn responses_weather_tool(strict: bool) -> serde_json::Value {
    if strict {
        json!({"type": "function", "name": "get_weather",
               "description": "Get the current weather for a location.",
               "parameters": {"type": "object", "properties": {"location":
                   {"type": "string", "description": "City and country"}},
                   "required": ["location"], "additionalProperties": false},
               "strict": true})
    } else {
        json!({"type": "function", "name": "get_weather",
               "description": "Get the current weather for a location.",
               "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"]}})
    }
}

fn openai_tokens(ex: &mut Exchange, input: i64, output: i64, cached: i64, reasoning: i64) {
    let details = TokenDetails {
        cache_read: Some(cached),
        reasoning: Some(reasoning),
        ..TokenDetails::default()
    };
    tokens(ex, input, output, input + output, details);
}

/// OpenAI Responses, JSON: `instructions`, a string `input`, `user`, cached tokens.
pub fn responses_json() -> Exchange {
    let mut ex = responses("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14");
    ex.response_id = Some("resp_01LisbonJson".into());
    ex.system = vec!["You are a concise geography tutor.".into()];
    ex.prompt = vec![
        text_message("system", "You are a concise geography tutor."),
        text_message("user", "What is the capital of Portugal?"),
    ];
    ex.choices = vec![answer(Some("Lisbon."), None, "stop")];
    ex.params = vec![
        ("temperature".into(), json!(0.2)),
        ("max_output_tokens".into(), json!(64)),
    ];
    openai_tokens(&mut ex, 1830, 3, 1792, 0);
    ex.request_body = Some(call_file!("responses_json.request.json").trim_end().into());
    ex.response_body = Some(call_file!("responses_json.response.json").trim_end().into());
    ex
}

/// OpenAI Responses, streamed: a function call whose arguments came as deltas; the
/// usage only in `response.completed`.
pub fn responses_stream_tools() -> Exchange {
    let mut ex = responses("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14");
    ex.response_id = Some("resp_01ParisTools".into());
    ex.system = vec!["Use the tools when they help.".into()];
    ex.prompt = vec![
        text_message("system", "Use the tools when they help."),
        text_message("user", "What is the weather in Paris?"),
    ];
    let arguments = "{\"location\":\"Paris, France\"}";
    let mut choice = answer(None, None, "tool_calls");
    choice.tool_calls = vec![weather_call("call_01WeatherParis", arguments)];
    ex.choices = vec![choice];
    ex.tools = vec![responses_weather_tool(true)];
    ex.params = vec![("tool_choice".into(), json!("auto"))];
    openai_tokens(&mut ex, 84, 19, 0, 0);
    ex.request_body = Some(
        call_file!("responses_stream_tools.request.json")
            .trim_end()
            .into(),
    );
    streamed(
        &mut ex,
        json!({"id": "resp_01ParisTools", "object": "response", "status": "completed",
               "model": "gpt-4.1-mini-2025-04-14",
               "output": [{"type": "function_call", "id": "fc_01ParisTools",
                           "call_id": "call_01WeatherParis", "name": "get_weather",
                           "arguments": arguments, "status": "completed"}],
               "usage": {"input_tokens": 84, "input_tokens_details": {"cached_tokens": 0},
                         "output_tokens": 19,
                         "output_tokens_details": {"reasoning_tokens": 0},
                         "total_tokens": 103}}),
    );
    ex
}

/// OpenAI Responses with reasoning after a tool round trip: a `developer` input
/// message (no `instructions`), `function_call` / `function_call_output` items, a
/// reasoning summary and reasoning tokens in the answer.
pub fn responses_reasoning() -> Exchange {
    let mut ex = responses("o4-mini", "o4-mini-2025-04-16");
    ex.response_id = Some("resp_01ParisReasoning".into());
    ex.system = vec!["Answer from the tool's result.".into()];
    ex.prompt = vec![text_message("developer", "Answer from the tool's result.")];
    ex.prompt.extend(weather_round_trip(
        "call_01WeatherParis",
        "{\"location\":\"Paris, France\"}",
        "18 C, sunny",
        "call_01WeatherParis",
    ));
    ex.choices = vec![answer(
        Some("It is 18 °C and sunny in Paris."),
        Some("The tool reported 18 C and sun."),
        "stop",
    )];
    ex.tools = vec![responses_weather_tool(false)];
    ex.params = vec![
        (
            "reasoning".into(),
            json!({"effort": "medium", "summary": "auto"}),
        ),
        ("max_output_tokens".into(), json!(1024)),
    ];
    openai_tokens(&mut ex, 96, 84, 0, 64);
    ex.request_body = Some(
        call_file!("responses_reasoning.request.json")
            .trim_end()
            .into(),
    );
    ex.response_body = Some(
        call_file!("responses_reasoning.response.json")
            .trim_end()
            .into(),
    );
    ex
}

fn gemini(method: &str) -> Exchange {
    let mut ex = protocol_call(
        Api::GenerateContent,
        "gemini",
        "gemini-2.5-flash",
        &format!("/v1beta/models/gemini-2.5-flash:{method}"),
        "generativelanguage.googleapis.com",
    );
    ex.response_model = Some("gemini-2.5-flash".into());
    ex
}

fn gemini_weather_tool(described: bool) -> serde_json::Value {
    let location = if described {
        json!({"type": "STRING", "description": "City and country"})
    } else {
        json!({"type": "STRING"})
    };
    json!({"name": "get_weather", "description": "Get the current weather for a location.",
           "parameters": {"type": "OBJECT", "properties": {"location": location},
                          "required": ["location"]}})
}

/// Gemini generateContent, JSON: `systemInstruction`, `generationConfig`, cached
/// content tokens.
pub fn gemini_json() -> Exchange {
    let mut ex = gemini("generateContent");
    ex.response_id = Some("gem-01LisbonJson".into());
    ex.system = vec!["You are a concise geography tutor.".into()];
    ex.prompt = vec![
        text_message("system", "You are a concise geography tutor."),
        text_message("user", "What is the capital of Portugal?"),
    ];
    ex.choices = vec![answer(Some("Lisbon."), None, "STOP")];
    ex.params = vec![
        ("temperature".into(), json!(0.2)),
        ("maxOutputTokens".into(), json!(64)),
    ];
    let details = TokenDetails {
        cache_read: Some(1792),
        ..TokenDetails::default()
    };
    tokens(&mut ex, 1830, 3, 1833, details);
    ex.request_body = Some(call_file!("gemini_json.request.json").trim_end().into());
    ex.response_body = Some(call_file!("gemini_json.response.json").trim_end().into());
    ex
}

/// Gemini streamGenerateContent (`alt=sse`): a text chunk, then a `functionCall`
/// chunk with the finish reason and the usage.
pub fn gemini_stream_tools() -> Exchange {
    let mut ex = gemini("streamGenerateContent");
    ex.response_id = Some("gem-01ParisTools".into());
    ex.system = vec!["Use the tools when they help.".into()];
    ex.prompt = vec![
        text_message("system", "Use the tools when they help."),
        text_message("user", "What is the weather in Paris?"),
    ];
    let arguments = "{\"location\":\"Paris, France\"}";
    let mut choice = answer(Some("Let me check the weather."), None, "STOP");
    choice.tool_calls = vec![weather_call("", arguments)];
    ex.choices = vec![choice];
    ex.tools = vec![gemini_weather_tool(true)];
    ex.params = vec![("temperature".into(), json!(0.0))];
    tokens(&mut ex, 84, 19, 103, TokenDetails::default());
    ex.request_body = Some(
        call_file!("gemini_stream_tools.request.json")
            .trim_end()
            .into(),
    );
    streamed(
        &mut ex,
        json!({"candidates": [{"content": {"role": "model", "parts": [
                   {"text": "Let me check the weather."},
                   {"functionCall": {"name": "get_weather", "args": {"location": "Paris, France"}}}]},
               "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 84, "candidatesTokenCount": 19,
                                 "totalTokenCount": 103},
               "modelVersion": "gemini-2.5-flash", "responseId": "gem-01ParisTools"}),
    );
    ex
}

/// Gemini with thinking after a function round trip: `functionCall` /
/// `functionResponse` parts (no ids: the result is tied by name), thought parts and
/// `thoughtsTokenCount` (output counts candidates + thoughts).
pub fn gemini_thinking() -> Exchange {
    let mut ex = gemini("generateContent");
    ex.response_id = Some("gem-01ParisThinking".into());
    ex.prompt = weather_round_trip(
        "",
        "{\"location\":\"Paris, France\"}",
        "{\"result\":\"18 C, sunny\"}",
        "get_weather",
    );
    ex.choices = vec![answer(
        Some("It is 18 °C and sunny in Paris."),
        Some("The tool reported 18 C and sun."),
        "STOP",
    )];
    ex.tools = vec![gemini_weather_tool(false)];
    ex.params = vec![
        ("maxOutputTokens".into(), json!(1024)),
        (
            "thinkingConfig".into(),
            json!({"includeThoughts": true, "thinkingBudget": 512}),
        ),
    ];
    let details = TokenDetails {
        reasoning: Some(64),
        ..TokenDetails::default()
    };
    tokens(&mut ex, 96, 84, 180, details);
    ex.request_body = Some(call_file!("gemini_thinking.request.json").trim_end().into());
    ex.response_body = Some(
        call_file!("gemini_thinking.response.json")
            .trim_end()
            .into(),
    );
    ex
}
