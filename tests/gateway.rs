//! Integration tests of the proxy: the real `celgate` binary between the scripted
//! upstream (`celgate_upstream`) and an OTLP receiver that decodes the protobuf it is
//! really sent (`support::otlp`).
//!
//! - every preset on chat, streamed chat, streamed parallel tool calls, legacy
//!   completions and embeddings, as golden spans under `tests/golden/gateway/` (both
//!   OTLP transports), plus explicit checks of the attributes each preset promises;
//! - failures (upstream 500 and 429, refused, timeout, idle backend, cut stream, client
//!   gone mid-stream or before the answer, a stream ending without `[DONE]`, unknown
//!   model, bad JSON, too deep, oversized body): the client's answer, an ERROR span with
//!   `error.type`, and a gateway that keeps serving;
//! - W3C trace context in and out, client sampling;
//! - streaming is forwarded as it arrives;
//! - keys never reach spans, logs or the admin page, and only the backend's goes
//!   upstream;
//! - a dead or silent collector never fails a request; `OTEL_EXPORTER_OTLP_*` alone
//!   works;
//! - SIGTERM drains an in-flight stream;
//! - the access log (text and JSON) names the exported span.
//!
//! Spans are told apart by trace id: most requests carry a `traceparent` of the test's
//! own ([`Parent`]), so concurrent requests can share one gateway.
//!
//! Regenerate the goldens after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p celgate --test gateway` and review the diff.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Map, Value, json};
use support::otlp::{Receiver, Span};
use support::{
    BACKEND_KEY, BACKEND_KEY_ENV, Gateway, Parent, Reply, SPAN_TIMEOUT, StreamReply, Upstream,
    assert_error_span, assert_ok_span, assert_openai_error, chat_body, closed_port, span_of,
    streamed,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any one client call may take before the test fails instead of hanging.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The key a client sends on its own behalf; it must never go upstream or anywhere else.
const CLIENT_KEY: &str = "sk-client-4f1d9c2e7b";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the test runtime")
}

/// `POST {base}{path}` with a JSON body; fails the test after [`CALL_TIMEOUT`].
async fn post(base: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let url = format!("{base}{path}");
    tokio::time::timeout(CALL_TIMEOUT, support::post_json(&url, body, headers))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {CALL_TIMEOUT:?}"))
}

/// `POST {base}{path}` with raw bytes, recording the body frame by frame.
async fn post_raw_stream(
    base: &str,
    path: &str,
    body: impl Into<bytes::Bytes>,
    headers: &[(&str, &str)],
) -> StreamReply {
    let url = format!("{base}{path}");
    tokio::time::timeout(
        CALL_TIMEOUT,
        support::stream(Method::POST, &url, body, headers),
    )
    .await
    .unwrap_or_else(|_| panic!("no complete answer from {url} within {CALL_TIMEOUT:?}"))
}

async fn post_stream(
    base: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> StreamReply {
    post_raw_stream(base, path, body.to_string(), headers).await
}

/// The `data:` payloads of a stream parsed as JSON (`[DONE]` left out).
fn stream_chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("bad SSE event {e}: {err}")))
        .collect()
}

/// The text `key=value` fields of an access-log line.
fn access_fields(line: &str) -> Map<String, Value> {
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Presets: golden spans over both transports
// ---------------------------------------------------------------------------------------

/// One exchange of the golden set.
struct Case {
    name: &'static str,
    path: &'static str,
    body: Value,
    stream: bool,
}

fn weather_tools() -> Value {
    json!([
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather for a location.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "City and country"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["location"]
                }
            }
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Get the local time in an IANA time zone.",
                "parameters": {
                    "type": "object",
                    "properties": {"timezone": {"type": "string"}},
                    "required": ["timezone"]
                }
            }
        }
    ])
}

fn golden_cases() -> Vec<Case> {
    let mut chat = chat_body("gpt-4o-mini", "What is the capital of Portugal?");
    chat["temperature"] = json!(0.2);
    chat["max_tokens"] = json!(64);
    chat["user"] = json!("user-7");
    let mut tools = streamed(chat_body(
        "gpt-4o-mini",
        "What is the weather in Paris and the time in Tokyo?",
    ));
    tools["tools"] = weather_tools();
    tools["tool_choice"] = json!("auto");
    tools["parallel_tool_calls"] = json!(true);
    vec![
        Case {
            name: "chat",
            path: "/chat/completions",
            body: chat.clone(),
            stream: false,
        },
        Case {
            name: "chat_stream",
            path: "/chat/completions",
            body: streamed(chat),
            stream: true,
        },
        Case {
            name: "tools_stream",
            path: "/chat/completions",
            body: tools,
            stream: true,
        },
        Case {
            name: "completions",
            path: "/completions",
            body: json!({
                "model": "gpt-3.5-turbo-instruct",
                "prompt": "Say hello to the world",
                "max_tokens": 16,
                "temperature": 0.5
            }),
            stream: false,
        },
        Case {
            name: "embeddings",
            path: "/embeddings",
            body: json!({
                "model": "text-embedding-3-small",
                "input": ["The food was delicious", "The waiter was friendly"],
                "encoding_format": "float"
            }),
            stream: false,
        },
    ]
}

/// What the upstream answered, as the client saw it: the reference the span is checked
/// against.
#[derive(Debug, Default)]
struct Answer {
    id: Option<String>,
    model: String,
    prompt_tokens: i64,
    completion_tokens: Option<i64>,
    total_tokens: i64,
    content: Option<String>,
    finish_reason: Option<String>,
    /// (id, name, arguments)
    tool_calls: Vec<(String, String, String)>,
    /// The body the client received (non-streamed answers).
    body: Option<String>,
}

fn usage_into(answer: &mut Answer, usage: &Value) {
    answer.prompt_tokens = usage["prompt_tokens"].as_i64().expect("prompt_tokens");
    answer.completion_tokens = usage["completion_tokens"].as_i64();
    answer.total_tokens = usage["total_tokens"].as_i64().expect("total_tokens");
}

fn answer_from_json(text: &str) -> Answer {
    let v: Value = serde_json::from_str(text).expect("a JSON answer");
    let mut answer = Answer {
        id: v["id"].as_str().map(str::to_owned),
        model: v["model"].as_str().expect("model").to_owned(),
        body: Some(text.to_owned()),
        ..Answer::default()
    };
    usage_into(&mut answer, &v["usage"]);
    let choice = &v["choices"][0];
    answer.finish_reason = choice["finish_reason"].as_str().map(str::to_owned);
    answer.content = choice["message"]["content"]
        .as_str()
        .or(choice["text"].as_str())
        .map(str::to_owned);
    for call in choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
    {
        answer.tool_calls.push((
            call["id"].as_str().unwrap_or_default().to_owned(),
            call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            call["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    answer
}

/// Reassembles a streamed chat answer the way an OpenAI SDK does.
fn answer_from_stream(events: &[String]) -> Answer {
    let mut answer = Answer::default();
    let mut content: Option<String> = None;
    for chunk in stream_chunks(events) {
        answer.id = chunk["id"].as_str().map(str::to_owned);
        answer.model = chunk["model"].as_str().unwrap_or_default().to_owned();
        if chunk["usage"].is_object() {
            usage_into(&mut answer, &chunk["usage"]);
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(reason) = choice["finish_reason"].as_str() {
            answer.finish_reason = Some(reason.to_owned());
        }
        if let Some(text) = choice["delta"]["content"].as_str() {
            content.get_or_insert_default().push_str(text);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().expect("tool call index") as usize;
            if answer.tool_calls.len() <= index {
                answer.tool_calls.resize(index + 1, Default::default());
            }
            let slot = &mut answer.tool_calls[index];
            if let Some(id) = call["id"].as_str() {
                slot.0 = id.to_owned();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                slot.1 = name.to_owned();
            }
            if let Some(fragment) = call["function"]["arguments"].as_str() {
                slot.2.push_str(fragment);
            }
        }
    }
    answer.content = content.filter(|c| !c.is_empty());
    answer
}

/// Collects mismatches between a span and what a preset promises.
struct Promises<'a> {
    span: &'a Span,
    failures: Vec<String>,
}

impl Promises<'_> {
    /// `key` holds exactly `want`, type included (an int is not a double).
    fn eq(&mut self, key: &str, want: Value) {
        let got = self.span.attr(key);
        if got != Some(&want) {
            self.failures
                .push(format!("`{key}`: want {want}, got {got:?}"));
        }
    }

    /// `key` is a string holding JSON equal to `want`.
    fn json(&mut self, key: &str, want: Value) {
        match self.span.str_attr(key).map(serde_json::from_str::<Value>) {
            Some(Ok(got)) if got == want => {}
            other => self
                .failures
                .push(format!("`{key}`: want JSON {want}, got {other:?}")),
        }
    }

    /// `key` is a string holding a JSON object whose members include `want`'s.
    fn json_includes(&mut self, key: &str, want: Value) {
        let got = self
            .span
            .str_attr(key)
            .and_then(|s| serde_json::from_str::<Value>(s).ok());
        let ok = match (&got, &want) {
            (Some(Value::Object(got)), Value::Object(want)) => {
                want.iter().all(|(k, v)| got.get(k) == Some(v))
            }
            _ => false,
        };
        if !ok {
            self.failures
                .push(format!("`{key}`: want JSON including {want}, got {got:?}"));
        }
    }

    fn absent(&mut self, key_prefix: &str) {
        let found: Vec<&String> = self
            .span
            .attributes
            .keys()
            .filter(|k| k.starts_with(key_prefix))
            .collect();
        if !found.is_empty() {
            self.failures
                .push(format!("`{key_prefix}*` must be absent, found {found:?}"));
        }
    }
}

/// The attributes each preset promises (README, presets/*.yaml), checked against what
/// the upstream answered. Independent of the golden files, so a wrongly blessed golden
/// still fails here.
fn check_promises(preset: &str, case: &Case, answer: &Answer, span: &Span, upstream_port: u16) {
    let request = &case.body;
    let model = request["model"].as_str().unwrap();
    let op = match case.path {
        "/chat/completions" => "chat",
        "/completions" => "text_completion",
        _ => "embeddings",
    };
    let streaming = case.stream;
    let messages: Vec<Value> = request["messages"].as_array().cloned().unwrap_or_default();
    let tools: Vec<Value> = request["tools"].as_array().cloned().unwrap_or_default();
    let mut p = Promises {
        span,
        failures: Vec::new(),
    };
    if span.status_code == "ERROR" {
        p.failures
            .push(format!("status ERROR: {}", span.status_message));
    }
    p.absent("error.type");
    let want_name = match preset {
        "jaeger" | "langfuse" => format!("{op} {model}"),
        "phoenix" => match op {
            "chat" => "ChatCompletion".to_owned(),
            "text_completion" => "Completion".to_owned(),
            _ => "CreateEmbeddings".to_owned(),
        },
        _ => match op {
            "chat" => "openai.chat".to_owned(),
            "text_completion" => "openai.completion".to_owned(),
            _ => "openai.embeddings".to_owned(),
        },
    };
    if span.name != want_name {
        p.failures
            .push(format!("span name: want {want_name}, got {}", span.name));
    }
    if span.kind != "CLIENT" {
        p.failures
            .push(format!("span kind: want CLIENT, got {}", span.kind));
    }
    let prompt = json!(answer.prompt_tokens);
    let completion = answer.completion_tokens.map(|n| json!(n));
    match preset {
        "jaeger" => {
            p.eq("gen_ai.operation.name", json!(op));
            p.eq("gen_ai.provider.name", json!("openai"));
            p.eq("gen_ai.request.model", json!(model));
            p.eq("gen_ai.response.model", json!(answer.model));
            p.eq("gen_ai.usage.input_tokens", prompt);
            p.eq("server.address", json!("127.0.0.1"));
            p.eq("server.port", json!(upstream_port));
            if op != "embeddings" {
                p.eq("gen_ai.response.id", json!(answer.id));
                p.eq(
                    "gen_ai.response.finish_reasons",
                    json!([answer.finish_reason]),
                );
                p.eq("gen_ai.usage.output_tokens", completion.clone().unwrap());
            }
            for key in ["temperature", "max_tokens"] {
                if let Some(v) = request.get(key) {
                    p.eq(&format!("gen_ai.request.{key}"), v.clone());
                }
            }
            // Content is opt-in under the GenAI conventions: hidden by default.
            p.absent("gen_ai.input.messages");
            p.absent("gen_ai.output.messages");
        }
        "phoenix" => {
            p.eq(
                "openinference.span.kind",
                json!(if op == "embeddings" {
                    "EMBEDDING"
                } else {
                    "LLM"
                }),
            );
            p.eq("llm.system", json!("openai"));
            p.eq("llm.provider", json!("openai"));
            // OpenInference instrumentations mark successful calls OK.
            if span.status_code != "OK" {
                p.failures
                    .push(format!("status: want OK, got {}", span.status_code));
            }
            p.eq("llm.token_count.prompt", prompt);
            p.eq("input.value", json!(request.to_string()));
            p.eq("input.mime_type", json!("application/json"));
            p.eq("session.id", json!("session-42"));
            if op == "embeddings" {
                p.eq("embedding.model_name", json!(answer.model));
                p.absent("llm.model_name");
                p.absent("llm.invocation_parameters");
                p.json_includes("embedding.invocation_parameters", json!({}));
                for (i, text) in request["input"].as_array().unwrap().iter().enumerate() {
                    p.eq(
                        &format!("embedding.embeddings.{i}.embedding.text"),
                        text.clone(),
                    );
                }
            } else {
                p.eq("llm.model_name", json!(answer.model));
                p.eq("llm.token_count.completion", completion.clone().unwrap());
                p.eq("llm.token_count.total", json!(answer.total_tokens));
                p.eq("llm.finish_reason", json!(answer.finish_reason));
                p.eq("output.mime_type", json!("application/json"));
                if let Some(body) = &answer.body {
                    p.eq("output.value", json!(body));
                }
            }
            if op == "chat" {
                for (i, m) in messages.iter().enumerate() {
                    let key = format!("llm.input_messages.{i}.message");
                    p.eq(&format!("{key}.role"), m["role"].clone());
                    p.eq(&format!("{key}.content"), m["content"].clone());
                }
                p.eq("llm.output_messages.0.message.role", json!("assistant"));
                match &answer.content {
                    Some(text) => p.eq("llm.output_messages.0.message.content", json!(text)),
                    None => p.absent("llm.output_messages.0.message.content"),
                }
                for (k, (id, name, args)) in answer.tool_calls.iter().enumerate() {
                    let key = format!("llm.output_messages.0.message.tool_calls.{k}.tool_call");
                    p.eq(&format!("{key}.id"), json!(id));
                    p.eq(&format!("{key}.function.name"), json!(name));
                    p.eq(&format!("{key}.function.arguments"), json!(args));
                }
                for (i, tool) in tools.iter().enumerate() {
                    p.json(&format!("llm.tools.{i}.tool.json_schema"), tool.clone());
                }
                let mut params = Map::new();
                for key in ["temperature", "max_tokens", "user"] {
                    if let Some(v) = request.get(key) {
                        params.insert(key.to_owned(), v.clone());
                    }
                }
                p.json_includes("llm.invocation_parameters", Value::Object(params));
                if request.get("user").is_some() {
                    p.eq("user.id", request["user"].clone());
                }
            }
        }
        "langfuse" => {
            p.eq(
                "langfuse.observation.type",
                json!(if op == "embeddings" {
                    "embedding"
                } else {
                    "generation"
                }),
            );
            p.eq("langfuse.observation.model.name", json!(answer.model));
            p.eq("gen_ai.operation.name", json!(op));
            p.eq("gen_ai.system", json!("openai"));
            p.eq("gen_ai.request.model", json!(model));
            p.eq("gen_ai.response.model", json!(answer.model));
            p.eq("gen_ai.usage.input_tokens", prompt);
            p.eq("llm.is_streaming", json!(streaming));
            p.eq("langfuse.session.id", json!("session-42"));
            match answer.completion_tokens {
                Some(c) => {
                    p.eq("gen_ai.usage.output_tokens", json!(c));
                    p.json_includes(
                        "langfuse.observation.usage_details",
                        json!({"input": answer.prompt_tokens, "output": c, "total": answer.total_tokens}),
                    );
                }
                None => p.json_includes(
                    "langfuse.observation.usage_details",
                    json!({"input": answer.prompt_tokens, "output": 0, "total": answer.total_tokens}),
                ),
            }
            if op == "chat" {
                let input: Vec<Value> = messages
                    .iter()
                    .map(|m| json!({"role": m["role"], "content": m["content"]}))
                    .collect();
                let got_input = p
                    .span
                    .str_attr("langfuse.observation.input")
                    .and_then(|s| serde_json::from_str::<Value>(s).ok());
                let roles_match = got_input
                    .as_ref()
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.len() == input.len()
                            && a.iter().zip(&input).all(|(g, w)| {
                                g["role"] == w["role"] && g["content"] == w["content"]
                            })
                    });
                if !roles_match {
                    p.failures.push(format!(
                        "`langfuse.observation.input`: want messages {input:?}, got {got_input:?}"
                    ));
                }
                let output = p
                    .span
                    .str_attr("langfuse.observation.output")
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .unwrap_or_default();
                let names: Vec<&str> = output["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str().or(c["function"]["name"].as_str()))
                    .collect();
                let want_names: Vec<&str> =
                    answer.tool_calls.iter().map(|c| c.1.as_str()).collect();
                if output["role"] != "assistant"
                    || output["content"] != json!(answer.content)
                    || names != want_names
                {
                    p.failures.push(format!(
                        "`langfuse.observation.output`: want assistant {:?} with calls {want_names:?}, got {output}",
                        answer.content
                    ));
                }
                if let Some(user) = request.get("user") {
                    p.json_includes(
                        "langfuse.observation.model.parameters",
                        json!({"user": user}),
                    );
                    p.eq("langfuse.user.id", user.clone());
                }
            }
        }
        "openllmetry" => {
            p.eq(
                "llm.request.type",
                json!(match op {
                    "chat" => "chat",
                    "text_completion" => "completion",
                    _ => "embedding",
                }),
            );
            p.eq("gen_ai.system", json!("openai"));
            p.eq("gen_ai.request.model", json!(model));
            p.eq("gen_ai.response.model", json!(answer.model));
            p.eq("gen_ai.usage.prompt_tokens", prompt);
            p.eq("llm.usage.total_tokens", json!(answer.total_tokens));
            p.eq("llm.is_streaming", json!(streaming));
            if op != "embeddings" {
                p.eq("gen_ai.response.id", json!(answer.id));
                p.eq(
                    "gen_ai.usage.completion_tokens",
                    completion.clone().unwrap(),
                );
                p.eq(
                    "gen_ai.completion.0.finish_reason",
                    json!(answer.finish_reason),
                );
            }
            if op == "chat" {
                for (i, m) in messages.iter().enumerate() {
                    p.eq(&format!("gen_ai.prompt.{i}.role"), m["role"].clone());
                    p.eq(&format!("gen_ai.prompt.{i}.content"), m["content"].clone());
                }
                p.eq("gen_ai.completion.0.role", json!("assistant"));
                match &answer.content {
                    Some(text) => p.eq("gen_ai.completion.0.content", json!(text)),
                    None => p.absent("gen_ai.completion.0.content"),
                }
                for (k, (id, name, args)) in answer.tool_calls.iter().enumerate() {
                    let key = format!("gen_ai.completion.0.tool_calls.{k}");
                    p.eq(&format!("{key}.id"), json!(id));
                    p.eq(&format!("{key}.name"), json!(name));
                    p.eq(&format!("{key}.arguments"), json!(args));
                }
                for (i, tool) in tools.iter().enumerate() {
                    let key = format!("llm.request.functions.{i}");
                    p.eq(&format!("{key}.name"), tool["function"]["name"].clone());
                    p.json(
                        &format!("{key}.parameters"),
                        tool["function"]["parameters"].clone(),
                    );
                }
                if let Some(t) = request.get("temperature") {
                    p.eq("gen_ai.request.temperature", t.clone());
                }
            }
        }
        other => panic!("unknown preset {other}"),
    }
    assert!(
        p.failures.is_empty(),
        "{preset}/{}: the span breaks the preset's promises:\n  {}\n{span:#?}",
        case.name,
        p.failures.join("\n  ")
    );
}

/// The golden form of a span: name, kind, status and typed attributes, with the volatile
/// values masked.
fn golden_json(span: &Span) -> Value {
    let mut attributes = span.attributes.clone();
    // `server.port` is the scripted upstream's port, picked by the OS at random for
    // each run (its value is checked in `check_promises`). Nothing else in these
    // exchanges varies: ids, timestamps and token counts come from the scripted
    // upstream, which derives them from the request and its position.
    if let Some(port) = attributes.get_mut("server.port") {
        *port = json!("<port>");
    }
    json!({
        "name": span.name,
        "kind": span.kind,
        "status": {"code": span.status_code, "message": span.status_message},
        "attributes": attributes,
    })
}

fn golden_path(preset: &str, case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden/gateway")
        .join(preset)
        .join(format!("{case}.json"))
}

/// Compares `got` with the golden file (or rewrites it under `UPDATE_GOLDEN=1`);
/// returns a description of the difference.
fn compare_golden(preset: &str, case: &str, got: &Value) -> Option<String> {
    let path = golden_path(preset, case);
    let mut text = serde_json::to_string_pretty(got).expect("serialise a golden");
    text.push('\n');
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).expect("create the golden directory");
        std::fs::write(&path, text).expect("write a golden file");
        return None;
    }
    let want: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())),
        Err(e) => {
            return Some(format!(
                "{}: {e} (UPDATE_GOLDEN=1 writes it)\n{text}",
                path.display()
            ));
        }
    };
    if &want == got {
        return None;
    }
    let mut diff = Vec::new();
    for field in ["name", "kind", "status"] {
        if want[field] != got[field] {
            diff.push(format!("{field}: want {} got {}", want[field], got[field]));
        }
    }
    let empty = Map::new();
    let want_attrs = want["attributes"].as_object().unwrap_or(&empty);
    let got_attrs = got["attributes"].as_object().unwrap_or(&empty);
    for (k, v) in want_attrs {
        match got_attrs.get(k) {
            None => diff.push(format!("- {k}: {v}")),
            Some(g) if g != v => diff.push(format!("~ {k}: want {v} got {g}")),
            _ => {}
        }
    }
    for (k, v) in got_attrs {
        if !want_attrs.contains_key(k) {
            diff.push(format!("+ {k}: {v}"));
        }
    }
    Some(format!(
        "{} differs (UPDATE_GOLDEN=1 to accept, then review):\n  {}",
        path.display(),
        diff.join("\n  ")
    ))
}

/// Runs the golden cases for `preset`, exporting over `protocol`.
fn presets_match_golden(preset: &str, protocol: &str) {
    let upstream = Upstream::start();
    let receiver = match protocol {
        "grpc" => Receiver::grpc(),
        _ => Receiver::http(),
    };
    let gateway = Gateway::start(
        &support::config_yaml(preset, &receiver.endpoint(), protocol, &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    let base = gateway.base_url();
    let headers = [("x-session-id", "session-42")];
    let mut mismatches = Vec::new();
    // One at a time, so the upstream's sequence-derived ids (`chatcmpl-scripted{N}`)
    // are the same on every run, and span i belongs to case i.
    for (i, case) in golden_cases().iter().enumerate() {
        let answer = if case.stream {
            let reply = rt.block_on(post_stream(&base, case.path, &case.body, &headers));
            assert_eq!(reply.status, 200, "{}: {:?}", case.name, reply.body());
            assert_eq!(reply.error, None, "{}", case.name);
            let events = reply.events();
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "{}",
                case.name
            );
            answer_from_stream(&events)
        } else {
            let reply = rt.block_on(post(&base, case.path, &case.body, &headers));
            assert_eq!(reply.status, 200, "{}: {}", case.name, reply.text());
            answer_from_json(&reply.text())
        };
        // The answers the goldens rest on are what the scripted upstream promises.
        match case.name {
            "chat" | "chat_stream" => assert_eq!(
                answer.content.as_deref(),
                Some("Scripted reply to: What is the capital of Portugal?")
            ),
            "tools_stream" => {
                let names: Vec<&str> = answer.tool_calls.iter().map(|c| c.1.as_str()).collect();
                assert_eq!(names, ["get_weather", "get_time"]);
                assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
            }
            _ => {}
        }

        let spans = receiver.wait_for(i + 1, SPAN_TIMEOUT);
        assert_eq!(
            spans.len(),
            i + 1,
            "{preset}/{}: span missing\n{}",
            case.name,
            gateway.stderr()
        );
        let span = &spans[i];
        assert_eq!(span.resource_str("service.name"), Some("celgate"));
        assert_eq!(span.scope_name, "celgate");
        check_promises(preset, case, &answer, span, upstream.addr().port());
        if let Some(diff) = compare_golden(preset, case.name, &golden_json(span)) {
            mismatches.push(diff);
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    // Exactly one span per call.
    assert_eq!(receiver.spans().len(), golden_cases().len());
}

#[test]
fn jaeger_spans_over_grpc_match_golden() {
    presets_match_golden("jaeger", "grpc");
}

#[test]
fn phoenix_spans_over_grpc_match_golden() {
    presets_match_golden("phoenix", "grpc");
}

#[test]
fn langfuse_spans_over_http_match_golden() {
    presets_match_golden("langfuse", "http");
}

#[test]
fn openllmetry_spans_over_http_match_golden() {
    presets_match_golden("openllmetry", "http");
}

// ---------------------------------------------------------------------------------------
// 2 and 9. Failures
// ---------------------------------------------------------------------------------------

/// Connects with a raw HTTP/1.1 socket, reads until the first SSE event, and hangs up.
async fn hang_up_after_first_event(addr: SocketAddr, body: &Value, traceparent: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let body = body.to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntraceparent: {traceparent}\r\n\r\n",
        body.len()
    );
    socket
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("send the request");
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    while !String::from_utf8_lossy(&received).contains("data: ") {
        let n = tokio::time::timeout(CALL_TIMEOUT, socket.read(&mut buf))
            .await
            .expect("the first event arrives")
            .expect("read from the proxy");
        assert!(
            n > 0,
            "the proxy closed the connection before the first event: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    // Dropping the socket hangs up mid-stream.
    drop(socket);
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn failures_answer_the_client_record_an_error_span_and_the_gateway_keeps_serving() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let base = upstream.base_url();
    let refused_port = closed_port();
    let config = format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {endpoint}
    otlpProtocol: http
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
server:
  maxBodyBytes: 4096
backends:
  - name: refused
    provider: openai
    baseUrl: http://127.0.0.1:{refused_port}/v1
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"refused-*\"]
  - name: slow
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"slow-*\"]
    timeout: 500ms
  - name: idle
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"drip-600\"]
    idleTimeout: 150ms
  - name: scripted
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"gpt-*\", \"error-*\", \"cut-*\", \"drip-*\"]
",
        endpoint = receiver.endpoint(),
    );
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let proxy = gateway.base_url();
    let addr = gateway.addr();

    let ids: Vec<Parent> = (0..11).map(|_| Parent::new()).collect();
    let tp: Vec<String> = ids.iter().map(|p| p.traceparent(true)).collect();
    let h: Vec<[(&str, &str); 1]> = tp.iter().map(|t| [("traceparent", t.as_str())]).collect();
    let e500_body = chat_body("error-500", "Hi");
    let refused_body = chat_body("refused-model", "Hi");
    let slow_body = chat_body("slow-3000", "Hi");
    let cut_body = streamed(chat_body("cut-after-3", "Hi"));
    let drip_body = streamed(chat_body("drip-200", "one two three four five six"));
    let unknown_body = chat_body("no-such-model", "Hi");
    let bad_json_body = "{\"model\": \"gpt-4o-mini\", \"messages\": [";
    let e429_body = chat_body("error-429", "Hi");
    let stalling_body = streamed(chat_body("drip-600", "Hi"));
    let deep_body = format!(
        "{{\"model\": \"gpt-4o-mini\", \"messages\": [], \"metadata\": {}1{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let mut oversized = chat_body("gpt-4o-mini", &"word ".repeat(2000));
    oversized["max_tokens"] = json!(5);
    let chat = "/chat/completions";
    let started = Instant::now();
    let (e500, refused, timeout, cut, gone, unknown, bad_json, too_big, e429, deep, stalled) = rt
        .block_on(async {
            tokio::join!(
                post(&proxy, chat, &e500_body, &h[0]),
                post(&proxy, chat, &refused_body, &h[1]),
                async {
                    let reply = post(&proxy, chat, &slow_body, &h[2]).await;
                    (reply, started.elapsed())
                },
                post_stream(&proxy, chat, &cut_body, &h[3]),
                hang_up_after_first_event(addr, &drip_body, &tp[4]),
                post(&proxy, chat, &unknown_body, &h[5]),
                post_raw_stream(&proxy, chat, bad_json_body, &h[6]),
                post(&proxy, chat, &oversized, &h[7]),
                post(&proxy, chat, &e429_body, &h[8]),
                post_raw_stream(&proxy, chat, deep_body.clone(), &h[9]),
                post_stream(&proxy, chat, &stalling_body, &h[10]),
            )
        });

    // Upstream 500: the backend's own error reaches the client unchanged.
    assert_eq!(e500.status, 500, "{}", e500.text());
    assert_eq!(
        e500.json()["error"]["type"],
        "server_error",
        "{}",
        e500.text()
    );
    assert_error_span(
        &span_of(&receiver, &ids[0].trace_id, "error-500", &gateway),
        "500",
    );

    // Nothing listens on the backend's port: celgate answers 502 itself.
    assert_openai_error(&refused, 502, "upstream_error", "connect_error");
    assert_error_span(
        &span_of(&receiver, &ids[1].trace_id, "refused", &gateway),
        "connect_error",
    );

    // The backend's `timeout: 500ms` cuts a 3 s wait short with a 504.
    let (timeout, elapsed) = timeout;
    assert_openai_error(&timeout, 504, "upstream_error", "timeout");
    assert!(
        elapsed < Duration::from_millis(2500),
        "the 504 came after {elapsed:?}: the backend timeout of 500ms was not applied"
    );
    assert_error_span(
        &span_of(&receiver, &ids[2].trace_id, "slow-3000", &gateway),
        "timeout",
    );

    // A stream cut after 3 events: the client gets those 3, then a broken body.
    assert_eq!(cut.status, 200);
    let events = cut.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(
        cut.error.is_some(),
        "the client must see the stream end abnormally, not as a complete body: {events:?}"
    );
    let cut_span = span_of(&receiver, &ids[3].trace_id, "cut-after-3", &gateway);
    assert_error_span(&cut_span, "stream_cut");

    // The client hung up after the first event of a slow stream.
    assert!(gone.contains("200"), "{gone}");
    assert_error_span(
        &span_of(&receiver, &ids[4].trace_id, "client gone", &gateway),
        "client_disconnected",
    );

    // Requests celgate refuses itself.
    assert_openai_error(&unknown, 404, "invalid_request_error", "model_not_found");
    assert_error_span(
        &span_of(&receiver, &ids[5].trace_id, "unknown model", &gateway),
        "model_not_found",
    );
    let bad_json = Reply {
        status: bad_json.status,
        headers: bad_json.headers.clone(),
        body: bad_json.body(),
    };
    assert_openai_error(&bad_json, 400, "invalid_request_error", "invalid_request");
    assert_error_span(
        &span_of(&receiver, &ids[6].trace_id, "invalid JSON", &gateway),
        "invalid_request",
    );
    assert_openai_error(&too_big, 413, "invalid_request_error", "request_too_large");
    assert_error_span(
        &span_of(&receiver, &ids[7].trace_id, "oversized body", &gateway),
        "request_too_large",
    );

    // A 429 passes through like the 500, with its own status as `error.type`.
    assert_eq!(e429.status, 429, "{}", e429.text());
    assert_eq!(e429.json()["error"]["code"], "rate_limit_exceeded");
    assert_error_span(
        &span_of(&receiver, &ids[8].trace_id, "error-429", &gateway),
        "429",
    );
    // Nesting deeper than server.maxJsonDepth (64 by default).
    let deep = Reply {
        status: deep.status,
        headers: deep.headers.clone(),
        body: deep.body(),
    };
    assert_openai_error(&deep, 400, "invalid_request_error", "json_too_deep");
    assert_error_span(
        &span_of(&receiver, &ids[9].trace_id, "deep JSON", &gateway),
        "json_too_deep",
    );
    // A backend silent for longer than its `idleTimeout` (150ms; drip-600 waits 600 ms
    // before its first event): the stream is ended with an error.
    assert_eq!(stalled.status, 200);
    assert!(stalled.error.is_some(), "{:?}", stalled.events());
    assert!(!stalled.events().iter().any(|e| e == "[DONE]"));
    assert_error_span(
        &span_of(&receiver, &ids[10].trace_id, "idle backend", &gateway),
        "timeout",
    );
    // Only the calls that got past celgate's own checks reached the upstream.
    let mut reached: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| {
            r.json()
                .and_then(|b| b["model"].as_str().map(str::to_owned))
        })
        .collect();
    reached.sort();
    assert_eq!(
        reached,
        [
            "cut-after-3",
            "drip-200",
            "drip-600",
            "error-429",
            "error-500",
            "slow-3000"
        ]
    );

    // None of that disturbed the gateway: a normal call and a normal stream still work.
    let after = Parent::new();
    let h_after = [("traceparent", after.traceparent(true))];
    let h_after: Vec<(&str, &str)> = h_after.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ok_body = chat_body("gpt-4o-mini", "Still there?");
    let ok_stream_body = streamed(chat_body("gpt-4o-mini", "Still streaming?"));
    let (ok, ok_stream) = rt.block_on(async {
        tokio::join!(
            post(&proxy, chat, &ok_body, &h_after),
            post_stream(&proxy, chat, &ok_stream_body, &[]),
        )
    });
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.json()["choices"][0]["message"]["content"],
        "Scripted reply to: Still there?"
    );
    assert_eq!(ok_stream.status, 200);
    assert_eq!(ok_stream.error, None);
    assert_eq!(
        ok_stream.events().last().map(String::as_str),
        Some("[DONE]")
    );
    assert_ok_span(&span_of(
        &receiver,
        &after.trace_id,
        "the call afterwards",
        &gateway,
    ));
}

// ---------------------------------------------------------------------------------------
// 3. Trace context
// ---------------------------------------------------------------------------------------

#[test]
fn traceparent_makes_a_child_span_and_is_forwarded_and_unsampled_parents_export_nothing() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let config = format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {}
    otlpProtocol: grpc
    randomSampling: true
    clientSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: scripted
    provider: openai
    baseUrl: {}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
",
        receiver.endpoint(),
        upstream.base_url()
    );
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let proxy = gateway.base_url();

    // An unsampled parent: the call is served, the upstream still gets a traceparent in
    // the same trace with flags 00, and no span is exported.
    let unsampled = Parent::new();
    let tp = unsampled.traceparent(false);
    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi"),
        &[("traceparent", tp.as_str())],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let forwarded = upstream.requests()[0]
        .header("traceparent")
        .expect("the upstream gets a traceparent")
        .to_owned();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert_eq!(parts[0], "00", "{forwarded}");
    assert_eq!(parts[1], unsampled.trace_id, "{forwarded}");
    assert!(
        parts[2].len() == 16 && parts[2] != "0000000000000000" && parts[2] != unsampled.span_id,
        "the upstream's parent is celgate's own span id: {forwarded}"
    );
    assert_eq!(
        parts[3], "00",
        "the unsampled decision is forwarded: {forwarded}"
    );
    // The request is finished (its access-log line is written just before a span would
    // be queued), so a span for it would be queued before the next request's.
    let line = gateway
        .wait_for_stdout(&unsampled.trace_id, SPAN_TIMEOUT)
        .unwrap_or_else(|| panic!("no access-log line\n{}", gateway.stdout()));
    assert!(line.contains("trace.sampled=false"), "{line}");

    // A sampled parent: the span is its child, and the upstream's parent is that span.
    let sampled = Parent::new();
    let tp = sampled.traceparent(true);
    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi again"),
        &[("traceparent", tp.as_str())],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let span = span_of(&receiver, &sampled.trace_id, "the sampled call", &gateway);
    assert_eq!(span.parent_span_id, sampled.span_id);
    assert_ne!(span.span_id, sampled.span_id);
    // OTLP span flags: sampled, and the parent is known to be remote (bits 8 and 9).
    assert_eq!(span.flags & 0x301, 0x301, "flags {:#x}", span.flags);
    // Exports are FIFO: the unsampled call's span would have come first.
    let all = receiver.spans();
    assert_eq!(
        all.len(),
        1,
        "only the sampled call is exported: {:?}",
        all.iter().map(|s| &s.trace_id).collect::<Vec<_>>()
    );
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header("traceparent"),
        Some(format!("00-{}-{}-01", sampled.trace_id, span.span_id).as_str())
    );

    // Without a traceparent: a new root, and the upstream gets it as parent.
    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Root"),
        &[],
    ));
    assert_eq!(reply.status, 200);
    let spans = receiver.wait_for(2, SPAN_TIMEOUT);
    assert_eq!(spans.len(), 2);
    let root = &spans[1];
    assert_eq!(root.parent_span_id, "");
    assert_eq!(
        upstream.requests()[2].header("traceparent"),
        Some(format!("00-{}-{}-01", root.trace_id, root.span_id).as_str())
    );
}

// ---------------------------------------------------------------------------------------
// 4. Streaming is forwarded as it arrives
// ---------------------------------------------------------------------------------------

#[test]
fn streamed_events_reach_the_client_as_the_upstream_emits_them() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    // drip-200: the upstream waits 200 ms before each of its 10 events (role, 6 words,
    // finish, usage, [DONE]).
    let sent = Instant::now();
    let reply = rt.block_on(post_stream(
        &gateway.base_url(),
        "/chat/completions",
        &streamed(chat_body("drip-200", "tell me when")),
        &[],
    ));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.error, None);
    // When each event was complete at the client.
    let mut arrivals = Vec::new();
    let mut seen = Vec::new();
    for (at, frame) in &reply.frames {
        seen.extend_from_slice(frame);
        // Only events already terminated by their blank line count.
        let end = seen
            .windows(2)
            .rposition(|w| w == b"\n\n")
            .map_or(0, |i| i + 2);
        let complete = support::sse_data(&seen[..end]).len();
        while arrivals.len() < complete {
            arrivals.push(*at);
        }
    }
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(arrivals.len(), events.len());
    assert!(events.len() >= 7, "{events:?}");
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = gaps.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(
        median >= Duration::from_millis(120) && sorted[0] >= Duration::from_millis(50),
        "events arrived in bursts, not as emitted: gaps {gaps:?}"
    );
    assert!(
        spread >= Duration::from_millis(100) * (events.len() as u32 - 1),
        "the first event came only {spread:?} before the last: gaps {gaps:?}"
    );
    assert!(
        arrivals[0] - sent < Duration::from_millis(1000),
        "the first event took {:?}",
        arrivals[0] - sent
    );
    let span = receiver
        .wait_for(1, SPAN_TIMEOUT)
        .pop()
        .expect("the stream's span");
    assert_ok_span(&span);
    assert!(
        Duration::from_nanos(span.end_unix_nano - span.start_unix_nano)
            >= Duration::from_millis(100) * (events.len() as u32 - 1),
        "the span ends when the stream ends"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Keys stay secret
// ---------------------------------------------------------------------------------------

/// Every string inside a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings(v, out);
        }),
        _ => {}
    }
}

#[test]
fn keys_never_reach_spans_logs_or_the_upstream_except_the_backend_key_upstream() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    // Phoenix copies whole bodies into the span; the extra fields dump every header
    // the expressions can see.
    let config = format!(
        "config:
  tracing:
    preset: phoenix
    otlpEndpoint: {}
    otlpProtocol: grpc
    randomSampling: true
    resources:
      deployment.environment: '\"test\"'
    fields:
      add:
        debug.request.headers: toJson(request.headers)
        debug.response.headers: toJson(response.headers)
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: scripted
    provider: openai
    baseUrl: {}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"gpt-*\", \"error-*\", \"cut-*\", \"text-*\"]
",
        receiver.endpoint(),
        upstream.base_url()
    );
    // Every log line the binary can write, so a key in a debug message shows up too.
    let gateway = Gateway::start(&config, &[("RUST_LOG", "trace")]);
    let rt = runtime();
    let proxy = gateway.base_url();
    let bearer = format!("Bearer {CLIENT_KEY}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-api-key", CLIENT_KEY),
        ("x-session-id", "session-9"),
    ];
    let replies = rt.block_on(async {
        let chat = post(
            &proxy,
            "/chat/completions",
            &chat_body("gpt-4o-mini", "Hi"),
            &headers,
        )
        .await;
        let stream = post_stream(
            &proxy,
            "/chat/completions",
            &streamed(chat_body("gpt-4o-mini", "Hi")),
            &headers,
        )
        .await;
        let failed = post(
            &proxy,
            "/chat/completions",
            &chat_body("error-500", "Hi"),
            &headers,
        )
        .await;
        let cut = post_stream(
            &proxy,
            "/chat/completions",
            &streamed(chat_body("cut-after-3", "Hi")),
            &headers,
        )
        .await;
        let unknown = post(
            &proxy,
            "/chat/completions",
            &chat_body("nope", "Hi"),
            &headers,
        )
        .await;
        let embeddings = post(
            &proxy,
            "/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "Hi"}),
            &headers,
        )
        .await;
        [
            chat.status,
            stream.status,
            failed.status,
            cut.status,
            unknown.status,
            embeddings.status,
        ]
        .map(|s| s.as_u16())
    });
    assert_eq!(replies, [200, 200, 500, 200, 404, 200]);
    let spans = receiver.wait_for(6, SPAN_TIMEOUT);
    assert_eq!(spans.len(), 6, "{}", gateway.stderr());
    let config_page = rt.block_on(support::get(&format!("{}/config", gateway.admin_url())));
    assert_eq!(config_page.status, 200, "{}", config_page.text());
    assert!(
        config_page.text().contains("scripted"),
        "{}",
        config_page.text()
    );

    // The upstream got the backend's key, never the client's.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 5, "the unknown model never goes upstream");
    let want = format!("Bearer {BACKEND_KEY}");
    for request in &requests {
        assert_eq!(request.header("authorization"), Some(want.as_str()));
        for (name, value) in &request.headers {
            assert!(
                !value.contains(CLIENT_KEY),
                "the client's key went upstream in `{name}`"
            );
        }
        assert!(!String::from_utf8_lossy(&request.body).contains(CLIENT_KEY));
    }

    // The header dump worked (so its absence of secrets means something).
    let dumped = spans[0]
        .str_attr("debug.request.headers")
        .unwrap_or_else(|| panic!("no header dump: {:#?}", spans[0]));
    assert!(dumped.contains("session-9"), "{dumped}");
    assert!(
        !dumped.to_ascii_lowercase().contains("authorization"),
        "{dumped}"
    );
    assert!(
        !dumped.to_ascii_lowercase().contains("x-api-key"),
        "{dumped}"
    );
    assert!(spans[0].str_attr("debug.response.headers").is_some());

    let mut places: Vec<(String, String)> = Vec::new();
    for span in &spans {
        let mut texts = Vec::new();
        strings(&Value::Object(span.attributes.clone()), &mut texts);
        strings(&Value::Object(span.resource.clone()), &mut texts);
        texts.push(span.status_message.clone());
        places.extend(
            texts
                .into_iter()
                .map(|t| (format!("span {}", span.name), t)),
        );
    }
    places.push(("stdout".into(), gateway.stdout()));
    places.push(("stderr".into(), gateway.stderr()));
    places.push(("admin /config".into(), config_page.text()));
    assert!(!gateway.stdout().is_empty(), "the access log is on");
    for (place, text) in &places {
        for key in [BACKEND_KEY, CLIENT_KEY] {
            assert!(!text.contains(key), "{key} leaked into {place}: {text}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 6. A dead collector never fails a request
// ---------------------------------------------------------------------------------------

#[test]
fn an_unreachable_collector_never_fails_a_request() {
    let upstream = Upstream::start();
    let rt = runtime();
    // A collector that accepts connections (the kernel completes them: backlog) but
    // never reads or answers, for as long as the test runs.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the black hole");
    let blackhole_port = blackhole.local_addr().unwrap().port();
    for (protocol, port) in [
        ("grpc", closed_port()),
        ("http", closed_port()),
        ("grpc", blackhole_port),
        ("http", blackhole_port),
    ] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let gateway = Gateway::start(
            &support::config_yaml("phoenix", &endpoint, protocol, &upstream.base_url()),
            &[],
        );
        let proxy = gateway.base_url();
        let statuses = rt.block_on(async {
            let mut statuses = Vec::new();
            for i in 0..20 {
                let body = if i % 2 == 0 {
                    chat_body("gpt-4o-mini", &format!("call {i}"))
                } else {
                    streamed(chat_body("gpt-4o-mini", &format!("call {i}")))
                };
                let reply = post_stream(&proxy, "/chat/completions", &body, &[]).await;
                assert_eq!(reply.error, None);
                statuses.push(reply.status.as_u16());
            }
            statuses
        });
        assert_eq!(statuses, [200; 20], "{protocol} to port {port}");
        if port != blackhole_port {
            // The spans were really built and sent somewhere dead (not disabled).
            assert!(
                gateway
                    .wait_for_stderr("span export to", SPAN_TIMEOUT)
                    .is_some(),
                "{protocol}: no export failure logged\n{}",
                gateway.stderr()
            );
        }
    }
    drop(blackhole);
}

// ---------------------------------------------------------------------------------------
// 7. The standard OTEL_EXPORTER_OTLP_* variables
// ---------------------------------------------------------------------------------------

/// A config with tracing but no `otlpEndpoint` or `otlpProtocol`.
fn config_without_endpoint(upstream: &Upstream) -> String {
    format!(
        "config:
  tracing:
    preset: openllmetry
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: scripted
    provider: openai
    baseUrl: {}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
",
        upstream.base_url()
    )
}

fn exports_to(receiver: &Receiver, env: &[(&str, &str)]) {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config_without_endpoint(&upstream), env);
    let rt = runtime();
    let reply = rt.block_on(post(
        &gateway.base_url(),
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi"),
        &[],
    ));
    assert_eq!(reply.status, 200);
    let spans = receiver.wait_for(1, SPAN_TIMEOUT);
    assert_eq!(spans.len(), 1, "{env:?}\n{}", gateway.stderr());
    assert_eq!(spans[0].name, "openai.chat");
}

#[test]
fn otel_exporter_otlp_endpoint_alone_exports_over_grpc() {
    let receiver = Receiver::grpc();
    exports_to(
        &receiver,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())],
    );
}

#[test]
fn otel_exporter_otlp_endpoint_with_http_protobuf_exports_over_http() {
    let receiver = Receiver::http();
    exports_to(
        &receiver,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    let exports = receiver.exports();
    assert!(
        exports
            .iter()
            .all(|e| e.path == "/v1/traces" && e.status == 200),
        "{exports:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 8. Graceful shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_lets_an_in_flight_stream_finish_exports_its_span_and_exits_zero() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let mut gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    let url = format!("{}/chat/completions", gateway.base_url());
    let body = streamed(chat_body("drip-200", "finish what you started"));
    let (events, error, signalled_at, ended_at) = rt.block_on(async {
        use http_body_util::BodyExt;
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let response = tokio::time::timeout(CALL_TIMEOUT, support::client().request(request))
            .await
            .expect("response head in time")
            .expect("response head");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Vec::new();
        let mut signalled_at = None;
        let mut error = None;
        loop {
            let frame = match tokio::time::timeout(CALL_TIMEOUT, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => panic!("the stream stalled"),
            };
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        received.extend_from_slice(&data);
                    }
                }
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break;
                }
            }
            // SIGTERM once the first event is through.
            if signalled_at.is_none() && !support::sse_data(&received).is_empty() {
                gateway.send_signal(support::Signal::Term);
                signalled_at = Some(Instant::now());
            }
        }
        (
            support::sse_data(&received),
            error,
            signalled_at.expect("at least one event arrived"),
            Instant::now(),
        )
    });
    assert_eq!(error, None, "the stream broke at shutdown: {events:?}");
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(
        ended_at - signalled_at >= Duration::from_millis(600),
        "the stream ran on after SIGTERM for only {:?}",
        ended_at - signalled_at
    );
    let answer = answer_from_stream(&events);
    assert_eq!(
        answer.content.as_deref(),
        Some("Scripted reply to: finish what you started")
    );
    let status = gateway.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
    let spans = receiver.wait_for(1, SPAN_TIMEOUT);
    assert_eq!(
        spans.len(),
        1,
        "the stream's span is flushed on exit\n{}",
        gateway.stderr()
    );
    assert_ok_span(&spans[0]);
    assert_eq!(
        spans[0].int_attr("gen_ai.usage.output_tokens"),
        Some(answer.completion_tokens.unwrap())
    );
}

/// Streams still running when `server.shutdownTimeout` passes are cut, and each one's
/// span still leaves before the gateway exits: `error.type` `shutdown`, counted in
/// the exit log. They used to be dropped with the runtime, after the final flush.
#[test]
fn streams_cut_at_the_shutdown_deadline_still_export_their_spans() {
    const STREAMS: usize = 5;
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let config = format!(
        "{}server:\n  shutdownTimeout: 1s\n",
        support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url())
    );
    let mut gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let addr = gateway.addr();
    // About 40 events 500 ms apart: 20 s, far past the 1 s drain.
    let words = vec!["word"; 40].join(" ");
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..STREAMS)
        .map(|_| {
            let body = streamed(chat_body("drip-500", &words)).to_string();
            let started = std::sync::Arc::clone(&started);
            rt.spawn(async move {
                let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let head = format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                socket.write_all(format!("{head}{body}").as_bytes()).await.expect("send");
                let mut received = Vec::new();
                let mut buf = [0u8; 4096];
                let mut counted = false;
                loop {
                    match tokio::time::timeout(CALL_TIMEOUT, socket.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
                        Ok(_) => break,
                        Err(_) => panic!("the stream was neither finished nor cut"),
                    }
                    if !counted && received.windows(7).any(|w| w == b"data: {") {
                        counted = true;
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                String::from_utf8_lossy(&received).into_owned()
            })
        })
        .collect();
    assert!(
        support::wait_until(CALL_TIMEOUT, || started
            .load(std::sync::atomic::Ordering::SeqCst)
            == STREAMS),
        "the streams did not start"
    );
    gateway.send_signal(support::Signal::Term);
    for client in clients {
        let received = rt.block_on(client).expect("client task");
        assert!(
            !received.contains("[DONE]"),
            "a stream finished: {received}"
        );
    }
    let status = gateway.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
    let spans = receiver.wait_for(STREAMS, SPAN_TIMEOUT);
    assert_eq!(spans.len(), STREAMS, "{}", gateway.stderr());
    for span in &spans {
        assert_error_span(span, "shutdown");
        assert!(span.status_message.contains("shut down"), "{span:#?}");
    }
    let stderr = gateway.stderr();
    assert!(
        stderr.contains(&format!("spans exported {STREAMS}, dropped 0")),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// 10. The access log names the exported span
// ---------------------------------------------------------------------------------------

#[test]
fn access_log_line_carries_the_exported_span_ids_backend_status_and_tokens() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let rt = runtime();
    for format in ["text", "json"] {
        let config = format!(
            "{}server:\n  accessLog:\n    format: {format}\n",
            support::config_yaml("jaeger", &receiver.endpoint(), "http", &upstream.base_url())
        );
        let gateway = Gateway::start(&config, &[]);
        let proxy = gateway.base_url();
        let cases = [
            (chat_body("gpt-4o-mini", "Hi there"), 200, false),
            (
                streamed(chat_body("gpt-4o-mini", "Stream please")),
                200,
                true,
            ),
            (chat_body("error-500", "Hi"), 500, false),
        ];
        for (body, status, streaming) in cases {
            let parent = Parent::new();
            let tp = parent.traceparent(true);
            let reply = rt.block_on(post_stream(
                &proxy,
                "/chat/completions",
                &body,
                &[("traceparent", tp.as_str())],
            ));
            assert_eq!(reply.status, status);
            let span = span_of(&receiver, &parent.trace_id, "the call", &gateway);
            let line = gateway
                .wait_for_stdout(&span.trace_id, SPAN_TIMEOUT)
                .unwrap_or_else(|| {
                    panic!(
                        "no access-log line for {}\n{}",
                        span.trace_id,
                        gateway.stdout()
                    )
                });
            let fields = match format {
                "json" => serde_json::from_str::<Map<String, Value>>(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")),
                _ => access_fields(&line),
            };
            let mut want = vec![
                ("trace.id", json!(span.trace_id)),
                ("span.id", json!(span.span_id)),
                ("trace.sampled", json!(true)),
                ("backend", json!("scripted")),
                ("http.status", json!(status)),
                ("llm.request.model", body["model"].clone()),
                ("llm.streaming", json!(streaming)),
            ];
            if status == 200 {
                want.push((
                    "llm.request.tokens",
                    json!(
                        span.int_attr("gen_ai.usage.input_tokens")
                            .expect("input tokens")
                    ),
                ));
                want.push((
                    "llm.response.tokens",
                    json!(
                        span.int_attr("gen_ai.usage.output_tokens")
                            .expect("output tokens")
                    ),
                ));
            } else {
                want.push(("error", json!("500")));
            }
            for (key, value) in want {
                // Text lines hold every value as text; JSON lines keep the types.
                let value = match (format, value) {
                    ("text", Value::String(s)) => Value::String(s),
                    ("text", other) => Value::String(other.to_string()),
                    (_, other) => other,
                };
                assert_eq!(fields.get(key), Some(&value), "{format} `{key}`: {line}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A stream that ends cleanly but unfinished
// ---------------------------------------------------------------------------------------

/// A bare HTTP/1.1 upstream for answers the scripted one cannot give: reads each request
/// (head and `content-length` body), answers `response` verbatim and closes. Serves
/// until the test process ends.
fn raw_upstream(response: Vec<u8>) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the raw upstream");
    let addr = listener.local_addr().expect("raw upstream address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut got = Vec::new();
            let mut buf = [0_u8; 4096];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                got.extend_from_slice(&buf[..n]);
                let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    break;
                }
            }
            let _ = stream.write_all(&response);
            let _ = stream.flush();
        }
    });
    addr
}

/// The backend closes the stream properly (complete HTTP body) but before `[DONE]` and
/// before any choice finished: the client gets what was sent, the span says the answer
/// is incomplete.
#[test]
fn a_stream_that_ends_cleanly_without_done_is_recorded_as_incomplete() {
    let chunk = |delta: Value| {
        format!(
            "data: {}\n\n",
            json!({
                "id": "chatcmpl-raw1",
                "object": "chat.completion.chunk",
                "created": 1_750_000_000,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": null}]
            })
        )
    };
    let body =
        chunk(json!({"role": "assistant", "content": "Hel"})) + &chunk(json!({"content": "lo"}));
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let addr = raw_upstream(response.into_bytes());
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml(
            "jaeger",
            &receiver.endpoint(),
            "grpc",
            &format!("http://{addr}/v1"),
        ),
        &[],
    );
    let rt = runtime();
    let reply = rt.block_on(post_stream(
        &gateway.base_url(),
        "/chat/completions",
        &streamed(chat_body("gpt-4o-mini", "Hi")),
        &[],
    ));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.error, None, "the body itself was complete");
    assert_eq!(reply.events().len(), 2);
    let span = receiver
        .wait_for(1, SPAN_TIMEOUT)
        .pop()
        .unwrap_or_else(|| panic!("no span\n{}", gateway.stderr()));
    assert_error_span(&span, "stream_incomplete");
    assert!(
        !span.status_message.contains("HTTP stream_incomplete"),
        "the status message presents `stream_incomplete` as an HTTP status: {:?}",
        span.status_message
    );
}

/// A client that gives up while celgate still waits for the backend's answer (an SDK
/// timeout on a slow model, say) is a request like any other: it gets a span and an
/// access-log line saying the client went away.
#[test]
fn a_client_that_hangs_up_before_the_answer_still_gets_a_span_and_a_log_line() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    let addr = gateway.addr();
    let parent = Parent::new();
    rt.block_on(async {
        let mut socket = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let body = chat_body("slow-2000", "Hi").to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntraceparent: {}\r\n\r\n",
            body.len(),
            parent.traceparent(true)
        );
        socket
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .expect("send the request");
        // Hang up once the request is with the upstream (which answers after 2 s).
        let deadline = Instant::now() + CALL_TIMEOUT;
        while upstream.requests().is_empty() {
            assert!(Instant::now() < deadline, "the request never reached the upstream");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(socket);
    });
    let span = receiver.wait_for_span(SPAN_TIMEOUT, |s| s.trace_id == parent.trace_id);
    let line = gateway.wait_for_stdout(&parent.trace_id, Duration::from_millis(100));
    assert!(
        span.is_some() && line.is_some(),
        "a request whose client hung up before the answer left no trace: span {span:?}, access-log line {line:?}\n--- stdout ---\n{}",
        gateway.stdout()
    );
    assert_error_span(&span.unwrap(), "client_disconnected");
    // And the gateway still serves.
    let reply = rt.block_on(post(
        &gateway.base_url(),
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi"),
        &[],
    ));
    assert_eq!(reply.status, 200);
}

// ---------------------------------------------------------------------------------------
// Keys from Secrets: one trailing newline is not part of the key (issue 11)
// ---------------------------------------------------------------------------------------

#[test]
fn a_key_with_a_trailing_newline_is_sent_without_it() {
    let upstream = Upstream::start();
    let rt = runtime();
    let env_config = config_without_endpoint(&upstream);
    let file_config =
        env_config.replace(&format!("{{env: {BACKEND_KEY_ENV}}}"), "{file: secret/key}");
    // A Secret made from a file and injected as a variable, and the same mounted.
    let gateways = [
        Gateway::builder(&env_config)
            .env(BACKEND_KEY_ENV, "sk-x\n")
            .start(),
        Gateway::builder(&file_config)
            .file("secret/key", "sk-x\r\n")
            .start(),
    ];
    for gateway in &gateways {
        let reply = rt.block_on(post(
            &gateway.base_url(),
            "/chat/completions",
            &chat_body("gpt-4o-mini", "Hi"),
            &[],
        ));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let auth: Vec<Option<String>> = upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    let want = Some("Bearer sk-x".to_owned());
    assert_eq!(auth, [want.clone(), want]);
}

/// Sends a streamed chat request for `model` over a raw connection, reads until
/// `stop_at` is in what arrived, then drops the connection.
async fn stream_and_hang_up(addr: SocketAddr, model: &str, parent: &Parent, stop_at: &[u8]) {
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let body = streamed(chat_body(model, "Say it and go")).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntraceparent: {}\r\n\r\n",
        body.len(),
        parent.traceparent(true)
    );
    socket
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("send the request");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.windows(stop_at.len()).any(|w| w == stop_at) {
        let n = tokio::time::timeout(CALL_TIMEOUT, socket.read(&mut buf))
            .await
            .expect("the stream stalled")
            .expect("read the stream");
        assert!(
            n > 0,
            "the stream ended before {:?}",
            String::from_utf8_lossy(stop_at)
        );
        received.extend_from_slice(&buf[..n]);
    }
    drop(socket);
}

/// The official SDKs stop reading at `data: [DONE]` and close the connection, often
/// before the backend's end of body arrives: such a call is complete. A client that
/// leaves before `[DONE]` is still one that went away.
#[test]
fn a_client_that_hangs_up_after_done_completed_the_call_one_that_leaves_before_did_not() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = Gateway::start(
        &support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url()),
        &[],
    );
    let rt = runtime();
    let (done, early) = (Parent::new(), Parent::new());
    rt.block_on(async {
        // The upstream holds the body open for 3 s after `[DONE]`.
        stream_and_hang_up(
            gateway.addr(),
            "done-pause-3000",
            &done,
            b"data: [DONE]\n\n",
        )
        .await;
        // One event of a stream that sends one every 500 ms, then gone.
        stream_and_hang_up(gateway.addr(), "drip-500", &early, b"data: {").await;
    });
    let span = span_of(&receiver, &done.trace_id, "hung up after [DONE]", &gateway);
    assert_ok_span(&span);
    let span = span_of(&receiver, &early.trace_id, "left before [DONE]", &gateway);
    assert_error_span(&span, "client_disconnected");
}
