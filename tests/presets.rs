//! Every preset on chat, streamed chat, streamed parallel tool calls, legacy
//! completions and embeddings, through the real `celgate` binary in front of the
//! scripted upstream: the spans as goldens under `tests/golden/gateway/` (over both
//! OTLP transports), plus explicit checks of the attributes each preset promises.
//!
//! Regenerate the goldens after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p celgate --test presets` and review the diff.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;

use serde_json::{Map, Value, json};
use support::answer::{Answer, answer_from_json, answer_from_stream};
use support::calls::{post, post_stream, runtime};
use support::otlp::{Receiver, Span};
use support::{Gateway, SPAN_TIMEOUT, Upstream, chat_body, streamed};

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
                // With tools: {"tools": [...], "messages": [...]}.
                let got_input = p
                    .span
                    .str_attr("langfuse.observation.input")
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .map(|v| {
                        if tools.is_empty() {
                            v
                        } else {
                            v["messages"].clone()
                        }
                    });
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
                // A user is the trace's, not a model parameter.
                if let Some(user) = request.get("user") {
                    p.eq("langfuse.user.id", user.clone());
                    p.eq("user.id", user.clone());
                }
            }
        }
        "openllmetry" => {
            p.eq("gen_ai.provider.name", json!("openai"));
            p.eq("gen_ai.operation.name", json!(op));
            p.absent("gen_ai.system");
            p.absent("llm.request.type");
            p.eq("gen_ai.request.model", json!(model));
            p.eq("gen_ai.response.model", json!(answer.model));
            p.eq("gen_ai.usage.input_tokens", prompt);
            p.eq("gen_ai.usage.total_tokens", json!(answer.total_tokens));
            p.eq("gen_ai.is_streaming", json!(streaming));
            if op != "embeddings" {
                p.eq("gen_ai.response.id", json!(answer.id));
                p.eq("gen_ai.usage.output_tokens", completion.clone().unwrap());
                let finish = match answer.finish_reason.as_deref() {
                    Some("tool_calls") => Some("tool_call"),
                    other => other,
                };
                p.eq("gen_ai.response.finish_reasons", json!([finish]));
            }
            if op == "chat" {
                let input: Vec<Value> = messages
                    .iter()
                    .map(|m| json!({"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}))
                    .collect();
                p.json("gen_ai.input.messages", Value::Array(input));
                let mut parts: Vec<Value> = answer
                    .content
                    .iter()
                    .map(|t| json!({"type": "text", "content": t}))
                    .collect();
                for (id, name, args) in &answer.tool_calls {
                    let args: Value = serde_json::from_str(args).unwrap_or(json!(args));
                    parts.push(
                        json!({"type": "tool_call", "id": id, "name": name, "arguments": args}),
                    );
                }
                let finish = match answer.finish_reason.as_deref() {
                    Some("tool_calls") => Some("tool_call"),
                    other => other,
                };
                p.json(
                    "gen_ai.output.messages",
                    json!([{"role": "assistant", "finish_reason": finish, "parts": parts}]),
                );
                if !tools.is_empty() {
                    let defs: Vec<Value> = tools
                        .iter()
                        .map(|t| {
                            json!({"type": "function", "name": t["function"]["name"],
                            "description": t["function"]["description"],
                            "parameters": t["function"]["parameters"]})
                        })
                        .collect();
                    p.json("gen_ai.tool.definitions", Value::Array(defs));
                }
                if let Some(t) = request.get("temperature") {
                    p.eq("gen_ai.request.temperature", t.clone());
                }
            }
        }
        "openllmetry-indexed" => {
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
    // each run (its value is checked in `check_promises`). Apart from time to first
    // token, nothing else in these
    // exchanges varies: ids, timestamps and token counts come from the scripted
    // upstream, which derives them from the request and its position.
    if let Some(port) = attributes.get_mut("server.port") {
        *port = json!("<port>");
    }
    // Time to first token is measured (its type and sign are checked here).
    for key in [
        "gen_ai.response.time_to_first_chunk",
        "langfuse.observation.completion_start_time",
    ] {
        if let Some(v) = attributes.get_mut(key) {
            let measured = v.as_f64().is_some_and(|s| s >= 0.0)
                || v.as_str()
                    .is_some_and(|t| t.starts_with("\"20") && t.ends_with("Z\""));
            *v = json!(if measured {
                "<measured>"
            } else {
                "<malformed>"
            });
        }
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

#[test]
fn openllmetry_indexed_spans_over_grpc_match_golden() {
    presets_match_golden("openllmetry-indexed", "grpc");
}
