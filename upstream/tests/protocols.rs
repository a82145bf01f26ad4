//! The scripted upstream's Anthropic Messages, OpenAI Responses and Gemini endpoints,
//! through its public API: each answers like the real API (JSON and stream agree, the
//! stream events come in the documented order), offers tool calls only when asked
//! (`call <name>` of an offered tool), quotes tool results, thinks when asked, errs
//! in its protocol's shape, and the fault scripts apply.

#[path = "../../tests/support/client.rs"]
mod client;
#[path = "../../tests/support/scripted.rs"]
mod scripted;

use celgate_upstream::{ResponseEnd, ScriptedUpstream};
use client::StreamReply;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// `method path` with `body` and `headers` (plus a JSON content type).
async fn call(
    up: &ScriptedUpstream,
    method: Method,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> StreamReply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let url = format!("http://{}{path}", up.addr());
    client::stream(method, &url, body, &all).await
}

async fn post(
    up: &ScriptedUpstream,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> StreamReply {
    call(up, Method::POST, path, body, headers).await
}

/// The named events of an SSE body: `(event name, data)`; every data must be JSON.
fn named_events(reply: &StreamReply) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(&reply.body()).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_owned())
            };
            let data = field("data:").unwrap_or_else(|| panic!("no data in {event:?}"));
            let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            (field("event:").unwrap_or_default(), data)
        })
        .collect()
}

/// The names of `events`, each checked against its data's `type`.
fn names(events: &[(String, Value)]) -> Vec<&str> {
    for (name, data) in events {
        assert_eq!(data["type"], json!(name), "event name and type agree");
    }
    events.iter().map(|(name, _)| name.as_str()).collect()
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

// ---------------------------------------------------------------- Anthropic Messages

const ANTHROPIC_KEY: &str = "sk-ant-test";

async fn anthropic(up: &ScriptedUpstream, body: &Value) -> StreamReply {
    let headers = [
        ("x-api-key", ANTHROPIC_KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    post(up, "/v1/messages", body, &headers).await
}

fn messages_request(user: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be terse."}
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": user}]}]
    })
}

fn read_write_tools() -> Value {
    json!([
        {"name": "Read", "description": "Read a file", "input_schema": {
            "type": "object", "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}}
        }},
        {"name": "Write", "input_schema": {"type": "object", "properties": {"content": {"type": "string"}}}}
    ])
}

#[tokio::test]
async fn messages_answer_a_message_and_its_stream_agrees() {
    let up = scripted::start().await;
    let request = messages_request("What is CEL?");
    let reply = anthropic(&up, &request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["request-id"], "req_scripted1");
    assert_eq!(
        reply.json(),
        json!({
            "id": "msg_scripted1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Scripted reply to: What is CEL?"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                // 9 words of input, the 4 of the cache_control block read from cache.
                "input_tokens": 5,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 4,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 6,
                "service_tier": "standard"
            }
        })
    );

    let stream = anthropic(&up, &with(request, "stream", json!(true))).await;
    assert!(
        stream.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = named_events(&stream);
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 6]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 4);
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, e)| {
            assert_eq!(e["index"], 0);
            assert_eq!(e["delta"]["type"], "text_delta");
            e["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Scripted reply to: What is CEL?");
    assert_eq!(
        events[events.len() - 2].1,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {
                "input_tokens": 5, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 4, "output_tokens": 6
            }
        })
    );
}

#[tokio::test]
async fn messages_call_a_tool_only_when_the_user_asks_for_an_offered_one() {
    let up = scripted::start().await;
    let asked = with(
        messages_request(r#"Now call Read {"file_path": "/etc/hosts"}"#),
        "tools",
        read_write_tools(),
    );
    let reply = anthropic(&up, &asked).await.json();
    assert_eq!(reply["stop_reason"], "tool_use");
    let block = &reply["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "Read");
    assert_eq!(block["input"], json!({"file_path": "/etc/hosts"}));
    let id = block["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_"));

    // Streamed: one tool_use block whose input_json_delta fragments join to the input.
    let stream = anthropic(&up, &with(asked.clone(), "stream", json!(true))).await;
    let events = named_events(&stream);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "tool_use", "id": id, "name": "Read", "input": {}})
    );
    let joined: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, e)| {
            assert_eq!(e["delta"]["type"], "input_json_delta");
            e["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&joined).unwrap(),
        block["input"]
    );
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );

    // No `call`, a tool not offered, or tools forbidden: text.
    for request in [
        with(
            messages_request("Read the file"),
            "tools",
            read_write_tools(),
        ),
        with(messages_request("call Edit"), "tools", read_write_tools()),
        with(
            with(messages_request("call Read"), "tools", read_write_tools()),
            "tool_choice",
            json!({"type": "none"}),
        ),
        messages_request("call Read"),
    ] {
        let reply = anthropic(&up, &request).await.json();
        assert_eq!(reply["stop_reason"], "end_turn", "{request}");
    }

    // Without arguments in the text, they are synthesized from the schema.
    let bare = with(messages_request("call Write"), "tools", read_write_tools());
    let reply = anthropic(&up, &bare).await.json();
    assert_eq!(
        reply["content"][0]["input"],
        json!({"content": "call Write"})
    );
}

#[tokio::test]
async fn messages_answer_a_tool_result_by_quoting_it() {
    let up = scripted::start().await;
    let mut request = with(messages_request("call Read"), "tools", read_write_tools());
    request["messages"] = json!([
        {"role": "user", "content": "call Read"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "127.0.0.1 localhost"}]}
    ]);
    let reply = anthropic(&up, &request).await.json();
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(
        reply["content"],
        json!([{"type": "text", "text": "Scripted reply to tool result: 127.0.0.1 localhost"}])
    );
}

#[tokio::test]
async fn messages_think_when_thinking_is_enabled() {
    let up = scripted::start().await;
    let request = with(
        messages_request("What is CEL?"),
        "thinking",
        json!({"type": "adaptive"}),
    );
    let reply = anthropic(&up, &request).await.json();
    let thinking = &reply["content"][0];
    assert_eq!(thinking["type"], "thinking");
    assert_eq!(
        thinking["thinking"],
        "Scripted thinking about: What is CEL?"
    );
    assert!(!thinking["signature"].as_str().unwrap().is_empty());
    assert_eq!(reply["content"][1]["type"], "text");
    assert_eq!(reply["usage"]["output_tokens"], 12);

    let stream = anthropic(&up, &with(request, "stream", json!(true))).await;
    let events = named_events(&stream);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(name, e)| name == "content_block_delta" && e["index"] == 0)
        .map(|(_, e)| &e["delta"])
        .collect();
    let thought: String = deltas[..deltas.len() - 1]
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "thinking_delta");
            d["thinking"].as_str().unwrap()
        })
        .collect();
    assert_eq!(thought, thinking["thinking"]);
    assert_eq!(
        *deltas[deltas.len() - 1],
        json!({"type": "signature_delta", "signature": thinking["signature"]})
    );
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "content_block_start")
        .map(|(_, e)| &e["index"])
        .collect();
    assert_eq!(starts, [&json!(0), &json!(1)]);
}

#[tokio::test]
async fn messages_count_tokens_and_err_in_anthropic_shape() {
    let up = scripted::start().await;
    let url = "/v1/messages/count_tokens";
    let counted = post(&up, url, &messages_request("What is CEL?"), &[]).await;
    assert_eq!(counted.json(), json!({"input_tokens": 9}));

    let missing = post(&up, "/v1/messages", &json!({"messages": []}), &[]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["type"], "error");
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");

    for (model, status, kind) in [
        ("error-500", StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
        (
            "error-429",
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
        ),
    ] {
        let reply = anthropic(&up, &with(messages_request("hi"), "model", json!(model))).await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.json()["error"]["type"], kind);
        assert_eq!(reply.json()["type"], "error");
    }

    // The key is read from x-api-key; a request without one is still answered.
    let echoed = anthropic(
        &up,
        &with(messages_request("hi"), "model", json!("echo-key-401")),
    )
    .await;
    assert_eq!(echoed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(echoed.json()["error"]["type"], "authentication_error");
    assert!(
        echoed.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(ANTHROPIC_KEY)
    );
    let keyless = post(&up, "/v1/messages?beta=true", &messages_request("hi"), &[]).await;
    assert_eq!(keyless.status, StatusCode::OK);
    let recorded = up.requests().pop().unwrap();
    assert_eq!(recorded.path, "/v1/messages?beta=true");
    assert_eq!(recorded.header("x-api-key"), None);
}

#[tokio::test]
async fn messages_stream_faults_use_anthropic_events() {
    let up = scripted::start().await;
    let model = |name: &str| with(messages_request("What is CEL?"), "model", json!(name));

    let error = anthropic(&up, &model("sse-error")).await;
    let events = named_events(&error);
    assert_eq!(
        names(&events),
        ["message_start", "content_block_start", "error"]
    );
    assert_eq!(events[2].1["error"]["type"], "api_error");

    let cut = anthropic(&up, &model("cut-after-3")).await;
    assert!(cut.error.is_some(), "the connection is cut");
    let events = named_events(&cut);
    assert_eq!(
        names(&events),
        ["message_start", "content_block_start", "ping"]
    );

    let echo = anthropic(&up, &model("echo-key-stream")).await;
    let text: String = named_events(&echo)
        .iter()
        .filter_map(|(_, e)| e["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        text,
        format!("Scripted reply to: my key is {ANTHROPIC_KEY}")
    );

    let lingering = anthropic(&up, &model("done-pause-50")).await;
    assert_eq!(
        names(&named_events(&lingering)).last(),
        Some(&"message_stop")
    );
    let ends: Vec<ResponseEnd> = up.responses().iter().map(|r| r.end).collect();
    assert!(ends.contains(&ResponseEnd::Cut));
}

// ------------------------------------------------------------------ OpenAI Responses

fn responses_request(input: Value) -> Value {
    json!({"model": "gpt-5", "instructions": "Be terse.", "input": input})
}

/// A Codex-shaped request: `developer` messages instead of instructions, function
/// tools (one inside a `namespace`), `web_search`, reasoning summaries, no storing.
fn codex_request(user: &str) -> Value {
    json!({
        "model": "gpt-5-codex",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": user}]}
        ],
        "tools": [
            {"type": "function", "name": "shell", "strict": false, "parameters": {
                "type": "object", "properties": {"command": {"type": "array"}, "workdir": {"type": "string"}}
            }},
            {"type": "namespace", "name": "mcp__files", "description": "files", "tools": [
                {"type": "function", "name": "read_file", "strict": false, "parameters": {
                    "type": "object", "properties": {"path": {"type": "string"}}
                }}
            ]},
            {"type": "web_search"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1"
    })
}

/// Removes the members that name the request (`resp_scripted{N}`, `msg_scripted{N}`),
/// so two answers to the same request compare equal.
fn without_ids(mut value: Value) -> Value {
    match &mut value {
        Value::Object(object) => {
            for key in ["id", "item_id"] {
                if object
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.contains("scripted"))
                {
                    object.remove(key);
                }
            }
            for member in object.values_mut() {
                *member = without_ids(member.take());
            }
        }
        Value::Array(items) => {
            for item in items {
                *item = without_ids(item.take());
            }
        }
        _ => {}
    }
    value
}

#[tokio::test]
async fn responses_answer_a_response_and_its_stream_agrees() {
    let up = scripted::start().await;
    let request = responses_request(json!("What is CEL?"));
    let reply = post(&up, "/v1/responses", &request, &[]).await.json();
    assert_eq!(reply["id"], "resp_scripted1");
    assert_eq!(reply["object"], "response");
    assert_eq!(reply["status"], "completed");
    assert_eq!(reply["instructions"], "Be terse.");
    assert_eq!(
        reply["output"],
        json!([{
            "id": "msg_scripted1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                         "text": "Scripted reply to: What is CEL?"}]
        }])
    );
    assert_eq!(
        reply["usage"],
        json!({
            "input_tokens": 5, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 11
        })
    );

    let stream = post(
        &up,
        "/v1/responses",
        &with(request, "stream", json!(true)),
        &[],
    )
    .await;
    let events = named_events(&stream);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(["response.output_text.delta"; 6]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names(&events), expected);
    for (n, (_, event)) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n);
    }
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[0].1["response"]["usage"], Value::Null);
    let deltas: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, "Scripted reply to: What is CEL?");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["id"], "resp_scripted2");
    assert_eq!(without_ids(completed.clone()), without_ids(reply));
}

#[tokio::test]
async fn responses_serve_codex_reasoning_and_namespaced_calls() {
    let up = scripted::start().await;
    // Codex asks for a tool nested in a namespace.
    let stream = post(
        &up,
        "/v1/responses",
        &codex_request("call read_file {\"path\": \"a.rs\"}"),
        &[],
    )
    .await;
    let events = named_events(&stream);
    let names = names(&events);
    assert_eq!(
        names[..3],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    assert!(names.contains(&"response.reasoning_summary_text.delta"));
    assert!(names.contains(&"response.function_call_arguments.delta"));
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(names.last(), Some(&"response.completed"));
    let output = completed["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(
        output[0]["summary"],
        json!([{"type": "summary_text", "text": "Scripted thinking about: call read_file {\"path\": \"a.rs\"}"}])
    );
    assert!(output[0]["encrypted_content"].is_string());
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["name"], "read_file");
    assert_eq!(output[1]["namespace"], "mcp__files");
    assert_eq!(output[1]["arguments"], r#"{"path":"a.rs"}"#);
    assert!(output[1]["call_id"].as_str().unwrap().starts_with("call_"));
    let joined: String = events
        .iter()
        .filter(|(name, _)| name == "response.function_call_arguments.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(joined, output[1]["arguments"].as_str().unwrap());
    let usage = &completed["usage"];
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 7);
    // prompt_cache_key: half the input (3 + 4 words) is cached.
    assert_eq!(usage["input_tokens"], 7);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 3);

    // `store: false`: not remembered.
    let id = completed["id"].as_str().unwrap();
    let fetched = call(
        &up,
        Method::GET,
        &format!("/v1/responses/{id}"),
        &Value::Null,
        &[],
    )
    .await;
    assert_eq!(fetched.status, StatusCode::NOT_FOUND);
    assert_eq!(fetched.json()["error"]["type"], "invalid_request_error");

    // The function's output comes back: text quoting it.
    let mut followup = codex_request("call read_file");
    followup["stream"] = json!(false);
    followup["input"].as_array_mut().unwrap().extend([
        output[1].clone(),
        json!({"type": "function_call_output", "call_id": output[1]["call_id"], "output": "fn main() {}"}),
    ]);
    let answer = post(&up, "/v1/responses", &followup, &[]).await.json();
    let message = answer["output"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        message["content"][0]["text"],
        "Scripted reply to tool result: fn main() {}"
    );

    // A plain user turn from Codex gets text, whatever tools it offers.
    let plain = post(
        &up,
        "/v1/responses",
        &with(codex_request("hello"), "stream", json!(false)),
        &[],
    )
    .await
    .json();
    assert_eq!(plain["output"][1]["type"], "message");
}

#[tokio::test]
async fn responses_are_remembered_listed_and_deleted() {
    let up = scripted::start().await;
    let input = json!([
        {"role": "user", "content": "first"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]}
    ]);
    let created = post(&up, "/v1/responses", &responses_request(input), &[])
        .await
        .json();
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/responses/{id}");

    let fetched = call(&up, Method::GET, &path, &Value::Null, &[]).await;
    assert_eq!(fetched.json(), created);

    let items = call(
        &up,
        Method::GET,
        &format!("{path}/input_items"),
        &Value::Null,
        &[],
    )
    .await
    .json();
    assert_eq!(items["object"], "list");
    assert_eq!(items["has_more"], false);
    let texts: Vec<&Value> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["content"][0]["text"])
        .collect();
    assert_eq!(
        texts,
        [&json!("second"), &json!("first")],
        "newest first by default"
    );
    assert_eq!(items["first_id"], items["data"][0]["id"]);
    let ascending = call(
        &up,
        Method::GET,
        &format!("{path}/input_items?order=asc"),
        &Value::Null,
        &[],
    )
    .await
    .json();
    assert_eq!(ascending["data"][0]["content"][0]["text"], "first");
    assert_eq!(ascending["data"][0]["type"], "message");

    let deleted = call(&up, Method::DELETE, &path, &Value::Null, &[]).await;
    assert_eq!(
        deleted.json(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    let gone = call(&up, Method::GET, &path, &Value::Null, &[]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json()["error"]["message"],
        format!("Response with id '{id}' not found.")
    );
}

#[tokio::test]
async fn responses_faults_use_typed_events() {
    let up = scripted::start().await;
    let model = |name: &str| with(responses_request(json!("hi")), "model", json!(name));
    let error = post(&up, "/v1/responses", &model("sse-error"), &[]).await;
    let events = named_events(&error);
    assert_eq!(
        names(&events),
        ["response.created", "response.in_progress", "error"]
    );
    assert_eq!(events[2].1["sequence_number"], 2);
    assert_eq!(events[2].1["code"], "server_error");

    let failed = post(&up, "/v1/responses", &model("error-429"), &[]).await;
    assert_eq!(failed.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(failed.json()["error"]["code"], "rate_limit_exceeded");

    let truncated = post(
        &up,
        "/v1/responses",
        &with(model("gpt-5"), "max_output_tokens", json!(2)),
        &[],
    )
    .await
    .json();
    assert_eq!(truncated["status"], "incomplete");
    assert_eq!(
        truncated["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    let stream = post(
        &up,
        "/v1/responses",
        &with(
            with(model("gpt-5"), "max_output_tokens", json!(2)),
            "stream",
            json!(true),
        ),
        &[],
    )
    .await;
    assert_eq!(
        names(&named_events(&stream)).last(),
        Some(&"response.incomplete")
    );

    let echo = post(
        &up,
        "/v1/responses",
        &model("echo-key-text"),
        &[("authorization", "Bearer sk-openai")],
    )
    .await
    .json();
    assert_eq!(
        echo["output"][0]["content"][0]["text"],
        "Scripted reply to: my key is sk-openai"
    );
}

// ----------------------------------------------------------------------------- Gemini

const GEMINI_KEY: &str = "gemini-test-key";

fn gemini_request(user: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [{"role": "user", "parts": [{"text": user}]}],
        "generationConfig": {"temperature": 0.2}
    })
}

async fn gemini(up: &ScriptedUpstream, model: &str, method: &str, body: &Value) -> StreamReply {
    let path = format!("/v1beta/models/{model}:{method}");
    post(up, &path, body, &[("x-goog-api-key", GEMINI_KEY)]).await
}

fn gemini_tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "read_file", "parametersJsonSchema": {"type": "object", "properties": {"absolute_path": {"type": "string"}}}},
        {"name": "list_directory", "parameters": {"type": "OBJECT", "properties": {"path": {"type": "STRING"}}}}
    ]}])
}

/// The text of Gemini chunks' non-thought parts, joined.
fn gemini_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| {
            c["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|p| p.get("thought").is_none())
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn gemini_generates_and_streams_as_sse_or_an_array() {
    let up = scripted::start().await;
    let request = gemini_request("What is CEL?");
    let reply = gemini(&up, "gemini-2.5-flash", "generateContent", &request)
        .await
        .json();
    assert_eq!(
        reply,
        json!({
            "candidates": [{
                "content": {"parts": [{"text": "Scripted reply to: What is CEL?"}], "role": "model"},
                "index": 0,
                "finishReason": "STOP"
            }],
            "modelVersion": "gemini-2.5-flash",
            "responseId": "scripted-1",
            "usageMetadata": {
                "promptTokenCount": 5, "candidatesTokenCount": 6, "totalTokenCount": 11,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}]
            }
        })
    );

    let sse = gemini(
        &up,
        "gemini-2.5-flash",
        "streamGenerateContent?alt=sse",
        &request,
    )
    .await;
    assert!(
        sse.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(String::from_utf8_lossy(&sse.body()).contains("\r\n\r\n"));
    let chunks = sse.chunks();
    assert_eq!(chunks.len(), 6);
    assert_eq!(gemini_text(&chunks), "Scripted reply to: What is CEL?");
    let (last, rest) = chunks.split_last().unwrap();
    assert!(
        rest.iter().all(|c| c.get("usageMetadata").is_none()
            && c["candidates"][0].get("finishReason").is_none())
    );
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"], reply["usageMetadata"]);

    let array = gemini(&up, "gemini-2.5-flash", "streamGenerateContent", &request).await;
    assert!(array.frames.len() > 1, "sent chunk by chunk");
    let array = array.json();
    assert_eq!(array.as_array().unwrap().len(), 6);
    assert_eq!(
        gemini_text(array.as_array().unwrap()),
        "Scripted reply to: What is CEL?"
    );

    let counted = gemini(&up, "gemini-2.5-flash", "countTokens", &request)
        .await
        .json();
    assert_eq!(counted["totalTokens"], 5);
    let recorded = up.requests();
    assert_eq!(
        recorded[1].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(recorded[1].header("x-goog-api-key"), Some(GEMINI_KEY));
}

#[tokio::test]
async fn gemini_calls_declared_functions_thinks_and_counts_cache() {
    let up = scripted::start().await;
    let asked = with(
        gemini_request("call list_directory"),
        "tools",
        gemini_tools(),
    );
    let reply = gemini(&up, "gemini-2.5-pro", "generateContent", &asked)
        .await
        .json();
    assert_eq!(
        reply["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "list_directory", "args": {"path": "call list_directory"}}}])
    );
    let sse = gemini(
        &up,
        "gemini-2.5-pro",
        "streamGenerateContent?alt=sse",
        &asked,
    )
    .await
    .chunks();
    assert_eq!(
        sse.last().unwrap()["candidates"][0]["content"]["parts"],
        reply["candidates"][0]["content"]["parts"]
    );

    let not_asked = with(
        gemini_request("list the directory"),
        "tools",
        gemini_tools(),
    );
    let reply = gemini(&up, "gemini-2.5-pro", "generateContent", &not_asked)
        .await
        .json();
    assert!(reply["candidates"][0]["content"]["parts"][0]["text"].is_string());

    let mut result = with(gemini_request("call read_file"), "tools", gemini_tools());
    result["contents"].as_array_mut().unwrap().extend([
        json!({"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {}}}]}),
        json!({"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"output": "hello file"}}}]}),
    ]);
    let reply = gemini(&up, "gemini-2.5-pro", "generateContent", &result)
        .await
        .json();
    assert_eq!(
        reply["candidates"][0]["content"]["parts"][0]["text"],
        "Scripted reply to tool result: hello file"
    );

    let mut thinking = gemini_request("What is CEL?");
    thinking["generationConfig"]["thinkingConfig"] =
        json!({"includeThoughts": true, "thinkingBudget": -1});
    thinking["cachedContent"] = json!("cachedContents/abc");
    let reply = gemini(&up, "gemini-2.5-pro", "generateContent", &thinking)
        .await
        .json();
    let parts = &reply["candidates"][0]["content"]["parts"];
    assert_eq!(
        parts[0],
        json!({"text": "Scripted thinking about: What is CEL?", "thought": true})
    );
    let usage = &reply["usageMetadata"];
    assert_eq!(usage["thoughtsTokenCount"], 6);
    assert_eq!(usage["cachedContentTokenCount"], 2);
    assert_eq!(usage["totalTokenCount"], 5 + 6 + 6);
}

#[tokio::test]
async fn gemini_lists_models_and_errs_in_google_shape() {
    let up = scripted::start().await;
    let list = call(&up, Method::GET, "/v1beta/models", &Value::Null, &[])
        .await
        .json();
    assert_eq!(list["models"][0]["name"], "models/gemini-2.5-flash");
    let one = call(
        &up,
        Method::GET,
        "/v1beta/models/gemini-2.5-pro",
        &Value::Null,
        &[],
    )
    .await
    .json();
    assert_eq!(one["name"], "models/gemini-2.5-pro");

    let failed = gemini(&up, "error-500", "generateContent", &gemini_request("hi")).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        failed.json(),
        json!({"error": {
            "code": 500,
            "message": "The server had an error while processing your request (scripted error-500).",
            "status": "INTERNAL"
        }})
    );
    let unknown = gemini(&up, "gemini-2.5-pro", "embedText", &gemini_request("hi")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["status"], "NOT_FOUND");
    let bad = post(
        &up,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        &json!([1]),
        &[],
    )
    .await;
    assert_eq!(bad.json()["error"]["status"], "INVALID_ARGUMENT");

    // The key is read from `?key=` when there is no header.
    let path = "/v1beta/models/echo-key-401:generateContent?key=from-query";
    let echoed = post(&up, path, &gemini_request("hi"), &[]).await;
    assert_eq!(echoed.status, StatusCode::UNAUTHORIZED);
    assert!(
        echoed.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("from-query")
    );

    let error = gemini(
        &up,
        "sse-error",
        "streamGenerateContent?alt=sse",
        &gemini_request("What is CEL?"),
    )
    .await;
    let chunks = error.chunks();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[2]["error"]["status"], "INTERNAL");

    let cut = gemini(
        &up,
        "cut-after-2",
        "generateContent",
        &gemini_request("What is CEL?"),
    )
    .await;
    assert!(cut.error.is_some());
    assert_eq!(
        cut.chunks().len(),
        2,
        "a forced stream is SSE, cut before its last chunk"
    );

    let gzip = gemini(&up, "gzip", "generateContent", &gemini_request("hi")).await;
    assert_eq!(gzip.headers["content-encoding"], "gzip");
}
