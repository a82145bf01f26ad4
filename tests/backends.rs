//! The langfuse, openllmetry and jaeger presets read the way their backends read them.
//!
//! These backends cannot run here, so each test receives celgate's real OTLP export
//! (protobuf, over the transport the backend takes) and passes every span through a
//! *reader* written from that backend's documented ingestion rules, then checks what
//! the backend would show against what the client was actually answered:
//!
//! - **Langfuse**: OTLP/HTTP protobuf at `/api/public/otel/v1/traces` with Basic auth
//!   from `LANGFUSE_PUBLIC_KEY`/`LANGFUSE_SECRET_KEY`; [`langfuse_read`] follows the
//!   attribute precedence of Langfuse's OTel ingestion (observation type mappers,
//!   model, input/output, usage details, model parameters, session and user ids,
//!   level), as documented in its OpenTelemetry integration page and implemented in
//!   `packages/shared/src/server/otel/` of langfuse/langfuse (see `presets/README.md`).
//! - **OpenLLMetry**: [`openllmetry_read`] rebuilds prompts and completions from the
//!   indexed `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` form the way Traceloop's
//!   SDK writes and its consumers parse it: indices dense from 0, scalar values only.
//! - **Jaeger**: Jaeger shows attributes as sent, so the check is the OTel GenAI
//!   semantic conventions themselves ([`check_genai_semconv`]): span name
//!   `{gen_ai.operation.name} {gen_ai.request.model}`, kind CLIENT, required and
//!   recommended attributes with their types, no deprecated names, content only when
//!   enabled and then in the conventions' JSON message schema.
//!
//! Every reader is independent of the preset files: a preset that drifts from what
//! its backend understands fails here, whatever the golden files say.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use support::otlp::{ExportCall, Receiver, Span};
use support::{Gateway, Upstream};

const SPAN_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the test runtime")
}

// ---------------------------------------------------------------------------------------
// Driving traffic: a fixed set of calls, each answer kept as the reference
// ---------------------------------------------------------------------------------------

/// One call through the gateway and what the client got back.
struct Call {
    name: &'static str,
    path: &'static str,
    request: Value,
    headers: Vec<(&'static str, &'static str)>,
    /// The answer as one JSON document (a stream is reassembled from its chunks).
    answer: Value,
    status: u16,
    trace_id: String,
}

impl Call {
    fn answer_content(&self) -> Option<&str> {
        self.answer["choices"][0]["message"]["content"].as_str()
    }

    fn answer_tool_names(&self) -> Vec<&str> {
        self.answer["choices"][0]["message"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["function"]["name"].as_str())
            .collect()
    }

    fn usage(&self, key: &str) -> Option<i64> {
        self.answer["usage"][key].as_i64()
    }
}

fn tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }
    }])
}

/// One planned call: name, path, request body, extra headers.
type Step = (
    &'static str,
    &'static str,
    Value,
    Vec<(&'static str, &'static str)>,
);

fn plan() -> Vec<Step> {
    let messages = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of Portugal?"}
    ]);
    vec![
        (
            "chat",
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": messages, "temperature": 0,
                   "top_p": 1, "max_tokens": 64, "user": "user-7"}),
            vec![("x-session-id", "sess-1")],
        ),
        (
            "tools",
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "tools": tools(), "messages": [
                {"role": "user", "content": "Weather in Paris?"}]}),
            vec![],
        ),
        (
            "stream",
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": messages, "stream": true,
                   "stream_options": {"include_usage": true}}),
            vec![("x-session-id", "sess-2")],
        ),
        (
            "embeddings",
            "/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a b c", "d e"]}),
            vec![],
        ),
        (
            "failed",
            "/chat/completions",
            json!({"model": "error-500", "messages": [{"role": "user", "content": "hi"}]}),
            vec![],
        ),
    ]
}

/// A fresh W3C trace id per call, so each span is found by its trace.
fn trace_id(n: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{nanos:016x}{:016x}", 0xc0de_0000_0000_0000_u64 | n as u64)
}

/// A stream's chunks reassembled into the non-streaming answer shape.
fn reassemble(events: &[String]) -> Value {
    let mut content = String::new();
    let mut answer = json!({});
    for e in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let chunk: Value = serde_json::from_str(e).expect("a JSON stream chunk");
        for key in ["id", "model"] {
            if answer.get(key).is_none() && chunk[key].is_string() {
                answer[key] = chunk[key].clone();
            }
        }
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(text);
        }
        if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
            answer["finish_reason"] = json!(reason);
        }
        if chunk["usage"].is_object() {
            answer["usage"] = chunk["usage"].clone();
        }
    }
    answer["choices"] = json!([{"message": {"role": "assistant", "content": content},
                                "finish_reason": answer["finish_reason"]}]);
    answer
}

/// Runs the call plan through `gateway` and returns each call with its span.
fn drive(gateway: &Gateway, receiver: &Receiver) -> Vec<(Call, Span)> {
    let rt = runtime();
    let base = gateway.base_url();
    let mut out = Vec::new();
    for (n, (name, path, request, headers)) in plan().into_iter().enumerate() {
        let trace = trace_id(n);
        let traceparent = format!(
            "00-{trace}-{:016x}-01",
            0xa11c_e000_0000_0000_u64 | n as u64
        );
        let mut all: Vec<(&str, &str)> = headers.clone();
        all.push(("traceparent", &traceparent));
        let url = format!("{base}{path}");
        let (status, answer) = rt.block_on(async {
            if request["stream"] == json!(true) {
                let reply = tokio::time::timeout(
                    CALL_TIMEOUT,
                    support::stream(http::Method::POST, &url, request.to_string(), &all),
                )
                .await
                .expect("the stream ends in time");
                (reply.status.as_u16(), reassemble(&reply.events()))
            } else {
                let reply =
                    tokio::time::timeout(CALL_TIMEOUT, support::post_json(&url, &request, &all))
                        .await
                        .expect("an answer in time");
                (reply.status.as_u16(), reply.json())
            }
        });
        let span = receiver
            .wait_for_span(SPAN_TIMEOUT, |s| s.trace_id == trace)
            .unwrap_or_else(|| panic!("no span for {name}\n--- stderr ---\n{}", gateway.stderr()));
        out.push((
            Call {
                name,
                path,
                request,
                headers,
                answer,
                status,
                trace_id: trace,
            },
            span,
        ));
    }
    let statuses: Vec<(&str, u16)> = out.iter().map(|(c, _)| (c.name, c.status)).collect();
    assert_eq!(
        statuses,
        [
            ("chat", 200),
            ("tools", 200),
            ("stream", 200),
            ("embeddings", 200),
            ("failed", 500)
        ]
    );
    for (call, span) in &out {
        assert_eq!(span.trace_id, call.trace_id);
    }
    out
}

fn gateway_for(preset: &str, receiver: &Receiver, upstream: &Upstream, extra: &str) -> Gateway {
    let config = support::config_yaml(
        preset,
        &receiver.endpoint(),
        match receiver.protocol() {
            support::otlp::Protocol::Grpc => "grpc",
            support::otlp::Protocol::Http => "http",
        },
        &upstream.base_url(),
    )
    .replacen(
        "    randomSampling: true\n",
        &format!("    randomSampling: true\n{extra}"),
        1,
    );
    Gateway::start(&config, &[])
}

/// A string attribute that holds JSON, parsed.
fn json_attr(span: &Span, key: &str) -> Option<Value> {
    span.str_attr(key)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Collects failures so one run reports every broken rule.
#[derive(Default)]
struct Verdict(Vec<String>);

impl Verdict {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, call: &str, what: &str, got: T, want: T) {
        self.check(got == want, || {
            format!("{call}: {what}: got {got:?}, want {want:?}")
        });
    }

    fn assert_clean(self, backend: &str) {
        assert!(
            self.0.is_empty(),
            "{backend} would not read celgate's spans as documented:\n  {}",
            self.0.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Langfuse
// ---------------------------------------------------------------------------------------

/// What Langfuse makes of one span.
#[derive(Debug, Default)]
struct Observation {
    kind: String,
    model: Option<String>,
    input: Option<Value>,
    output: Option<Value>,
    usage: Map<String, Value>,
    model_parameters: Map<String, Value>,
    session_id: Option<String>,
    user_id: Option<String>,
    level: String,
    status_message: Option<String>,
}

/// A value Langfuse counts as present: not null, not "", not an empty list or map.
fn meaningful(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// The first key of `keys` with a meaningful value, as a string.
fn first_of(span: &Span, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| span.attr(k))
        .find(|v| meaningful(Some(v)))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

/// Langfuse's OTel ingestion, reduced to the fields a generation shows.
fn langfuse_read(span: &Span) -> Observation {
    // Observation type: the mappers in priority order (ObservationTypeMapper.ts).
    let by_value = |key: &str, table: &[(&str, &str)]| -> Option<String> {
        let v = span.str_attr(key)?;
        table
            .iter()
            .find(|(from, _)| *from == v)
            .map(|(_, to)| (*to).to_owned())
    };
    let kind = by_value(
        "langfuse.observation.type",
        &[
            ("span", "SPAN"),
            ("generation", "GENERATION"),
            ("event", "EVENT"),
            ("embedding", "EMBEDDING"),
        ],
    )
    .or_else(|| {
        by_value(
            "openinference.span.kind",
            &[("LLM", "GENERATION"), ("EMBEDDING", "EMBEDDING")],
        )
    })
    .or_else(|| {
        by_value(
            "gen_ai.operation.name",
            &[
                ("chat", "GENERATION"),
                ("completion", "GENERATION"),
                ("text_completion", "GENERATION"),
                ("embeddings", "EMBEDDING"),
            ],
        )
    })
    .or_else(|| {
        first_of(
            span,
            &[
                "langfuse.observation.model.name",
                "gen_ai.request.model",
                "gen_ai.response.model",
                "llm.model_name",
                "model",
            ],
        )
        .map(|_| "GENERATION".to_owned())
    })
    .unwrap_or_else(|| "SPAN".to_owned());

    let model = first_of(
        span,
        &[
            "langfuse.observation.model.name",
            "gen_ai.response.model",
            "gen_ai.request.model",
            "llm.response.model",
            "llm.model_name",
            "model",
        ],
    );

    // Input/output: the langfuse.observation.* pair wins over every other source.
    let parse = |v: &Value| match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    };
    let (input, output) = match (
        span.attr("langfuse.observation.input"),
        span.attr("langfuse.observation.output"),
    ) {
        (None, None) => (
            span.attr("input.value").map(parse),
            span.attr("output.value").map(parse),
        ),
        (i, o) => (i.map(parse), o.map(parse)),
    };

    // Usage: the JSON attribute, else gen_ai.usage.* / llm.token_count.* renamed.
    let usage = match json_attr(span, "langfuse.observation.usage_details") {
        Some(Value::Object(map)) => map,
        _ => span
            .attributes
            .iter()
            .filter_map(|(k, v)| {
                let key = k
                    .strip_prefix("gen_ai.usage.")
                    .or_else(|| k.strip_prefix("llm.token_count."))?;
                let key = match key {
                    "prompt_tokens" | "input_tokens" | "prompt" => "input",
                    "completion_tokens" | "output_tokens" | "completion" => "output",
                    "total_tokens" => "total",
                    other => other,
                };
                Some((key.to_owned(), v.clone()))
            })
            .collect(),
    };

    // Model parameters: the JSON attribute, else llm.invocation_parameters, else
    // gen_ai.request.* without the model; values that are not string or number
    // are stored as their JSON text.
    let raw = match json_attr(span, "langfuse.observation.model.parameters")
        .or_else(|| json_attr(span, "llm.invocation_parameters"))
    {
        Some(Value::Object(map)) => map,
        _ => span
            .attributes
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("gen_ai.request.")?;
                (key != "model").then(|| (key.to_owned(), v.clone()))
            })
            .collect(),
    };
    let model_parameters = raw
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(_) | Value::Number(_) => (k, v),
            other => (k, Value::String(other.to_string())),
        })
        .collect();

    Observation {
        kind,
        model,
        input,
        output,
        usage,
        model_parameters,
        session_id: first_of(
            span,
            &[
                "langfuse.session.id",
                "session.id",
                "gen_ai.conversation.id",
            ],
        ),
        user_id: first_of(span, &["langfuse.user.id", "user.id"]),
        // Level and status message: the attributes, else the span status.
        level: span
            .str_attr("langfuse.observation.level")
            .map(str::to_owned)
            .unwrap_or_else(|| {
                if span.status_code == "ERROR" {
                    "ERROR".to_owned()
                } else {
                    "DEFAULT".to_owned()
                }
            }),
        status_message: span
            .str_attr("langfuse.observation.status_message")
            .map(str::to_owned)
            .or_else(|| (!span.status_message.is_empty()).then(|| span.status_message.clone())),
    }
}

#[test]
fn langfuse_reads_generations_with_model_io_usage_params_session_and_user() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    // Configured the way Langfuse's docs configure an OTel exporter: only the SDK's
    // own variables, no endpoint or header in the config.
    let host = receiver.endpoint().trim_end_matches('/').to_owned();
    let config = format!(
        "config:\n  tracing:\n    preset: langfuse\n    randomSampling: true\n\
         listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nbackends:\n  - name: scripted\n    \
         provider: openai\n    baseUrl: {}\n    apiKey: {{env: {}}}\n",
        upstream.base_url(),
        support::BACKEND_KEY_ENV
    );
    let gateway = Gateway::start(
        &config,
        &[
            ("LANGFUSE_HOST", &host),
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-test"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-test"),
        ],
    );
    let calls = drive(&gateway, &receiver);

    // The ingestion endpoint: path, encoding and credentials.
    let exports: Vec<ExportCall> = receiver.exports();
    assert!(!exports.is_empty());
    for call in &exports {
        assert_eq!(call.path, "/api/public/otel/v1/traces");
        assert_eq!(call.header("content-type"), Some("application/x-protobuf"));
        // base64("pk-lf-test:sk-lf-test")
        assert_eq!(
            call.header("authorization"),
            Some("Basic cGstbGYtdGVzdDpzay1sZi10ZXN0")
        );
    }

    let mut v = Verdict::default();
    for (call, span) in &calls {
        let obs = langfuse_read(span);
        let name = call.name;
        match name {
            "embeddings" => v.eq(name, "type", obs.kind.as_str(), "EMBEDDING"),
            _ => v.eq(name, "type", obs.kind.as_str(), "GENERATION"),
        }
        if name == "failed" {
            v.eq(name, "level", obs.level.as_str(), "ERROR");
            v.check(obs.status_message.is_some(), || {
                format!("{name}: an ERROR observation without a status message")
            });
            continue;
        }
        v.eq(name, "level", obs.level.as_str(), "DEFAULT");
        v.eq(
            name,
            "model",
            obs.model.as_deref(),
            call.answer["model"].as_str(),
        );
        // Usage: numbers Langfuse can price; input + output account for the total.
        let num = |k: &str| obs.usage.get(k).and_then(Value::as_i64);
        v.check(obs.usage.values().all(Value::is_i64), || {
            format!("{name}: usage values must be integers: {:?}", obs.usage)
        });
        let counted: i64 = obs
            .usage
            .iter()
            .filter(|(k, _)| *k != "total")
            .filter_map(|(_, v)| v.as_i64())
            .sum();
        v.eq(
            name,
            "usage total",
            num("total"),
            call.usage("total_tokens"),
        );
        v.eq(
            name,
            "usage parts add up to the total",
            Some(counted),
            call.usage("total_tokens"),
        );
        let cached = call.answer["usage"]["prompt_tokens_details"]["cached_tokens"].as_i64();
        v.eq(
            name,
            "usage input (uncached)",
            num("input"),
            call.usage("prompt_tokens").map(|p| p - cached.unwrap_or(0)),
        );
        if name == "embeddings" {
            continue;
        }
        // Input: the request's messages, in order, with their roles.
        let want_input: Vec<(Value, Value)> = call.request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].clone(), m["content"].clone()))
            .collect();
        // With tools sent, the input is {"tools", "messages"} (the shape Langfuse's
        // own OpenAI integration writes).
        let messages = obs.input.as_ref().map(|i| match i.get("messages") {
            Some(m) => m.clone(),
            None => i.clone(),
        });
        if call.request.get("tools").is_some() {
            v.eq(
                name,
                "input tools",
                obs.input.as_ref().and_then(|i| i.get("tools")),
                call.request.get("tools"),
            );
        }
        let got_input: Vec<(Value, Value)> = messages
            .as_ref()
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|m| (m["role"].clone(), m["content"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        v.eq(name, "input messages", got_input, want_input);
        // Output: the assistant message, with its tool calls.
        let out = obs.output.clone().unwrap_or_default();
        v.eq(name, "output role", out["role"].as_str(), Some("assistant"));
        v.eq(
            name,
            "output content",
            out["content"].as_str(),
            call.answer_content(),
        );
        let got_tools: Vec<&str> = out["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().or(c["function"]["name"].as_str()))
            .collect();
        v.eq(
            name,
            "output tool calls",
            got_tools,
            call.answer_tool_names(),
        );
        // Model parameters: what the client set, scalars only (a user is the
        // trace's user, not a parameter).
        for (key, value) in &obs.model_parameters {
            v.check(!value.is_object() && !value.is_array(), || {
                format!("{name}: model parameter {key} is not a scalar: {value}")
            });
        }
        v.eq(
            name,
            "model parameter user",
            obs.model_parameters.get("user"),
            None,
        );
        for key in ["temperature", "top_p", "max_tokens"] {
            if let Some(sent) = call.request.get(key) {
                v.eq(
                    name,
                    &format!("model parameter {key}"),
                    obs.model_parameters.get(key),
                    Some(sent),
                );
            }
        }
        // Session and user, only when the client said so.
        let session = call
            .headers
            .iter()
            .find(|(k, _)| *k == "x-session-id")
            .map(|(_, v)| (*v).to_owned());
        v.eq(name, "sessionId", obs.session_id.clone(), session);
        v.eq(
            name,
            "userId",
            obs.user_id.clone(),
            call.request["user"].as_str().map(str::to_owned),
        );
    }
    v.assert_clean("Langfuse");
}

// ---------------------------------------------------------------------------------------
// OpenLLMetry
// ---------------------------------------------------------------------------------------

/// The messages under `prefix.{i}.*`, rebuilt as maps; fails on gaps in the indices and
/// on non-scalar values, which Traceloop's readers do not expect.
fn indexed(span: &Span, prefix: &str, v: &mut Verdict, call: &str) -> Vec<Map<String, Value>> {
    let mut items: Vec<Map<String, Value>> = Vec::new();
    for (key, value) in &span.attributes {
        let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            v.0.push(format!("{call}: `{key}` has no field after the index"));
            continue;
        };
        let Ok(i) = index.parse::<usize>() else {
            // e.g. gen_ai.prompt.prompt_error: not a message.
            continue;
        };
        v.check(!value.is_object(), || {
            format!("{call}: `{key}` is a map, not a scalar")
        });
        if items.len() <= i {
            items.resize_with(i + 1, Map::new);
        }
        items[i].insert(field.to_owned(), value.clone());
    }
    for (i, item) in items.iter().enumerate() {
        v.check(!item.is_empty(), || {
            format!("{call}: `{prefix}.{i}` is missing: indices must be dense from 0")
        });
    }
    items
}

/// What an OpenLLMetry consumer reads from one span.
struct Traceloop {
    request_type: Option<String>,
    system: Option<String>,
    request_model: Option<String>,
    response_model: Option<String>,
    prompts: Vec<Map<String, Value>>,
    completions: Vec<Map<String, Value>>,
    functions: Vec<Map<String, Value>>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    total_tokens: Option<i64>,
}

fn openllmetry_read(span: &Span, v: &mut Verdict, call: &str) -> Traceloop {
    let s = |k: &str| span.str_attr(k).map(str::to_owned);
    // Current releases write gen_ai.usage.input/output_tokens, older ones
    // prompt/completion_tokens; a consumer takes either.
    let tokens = |new: &str, old: &str| span.int_attr(new).or_else(|| span.int_attr(old));
    Traceloop {
        request_type: s("llm.request.type"),
        system: s("gen_ai.system"),
        request_model: s("gen_ai.request.model"),
        response_model: s("gen_ai.response.model"),
        prompts: indexed(span, "gen_ai.prompt", v, call),
        completions: indexed(span, "gen_ai.completion", v, call),
        functions: indexed(span, "llm.request.functions", v, call),
        input_tokens: tokens("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        output_tokens: tokens(
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
        ),
        total_tokens: span.int_attr("llm.usage.total_tokens"),
    }
}

/// An OpenLLMetry 0.62 consumer reads the GenAI message attributes: the request's
/// messages in order, the answer with its tool calls (arguments parsed), totals.
#[test]
fn openllmetry_consumers_read_the_genai_messages() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = gateway_for("openllmetry", &receiver, &upstream, "");
    let mut v = Verdict::default();
    for (call, span) in &drive(&gateway, &receiver) {
        let name = call.name;
        v.eq(
            name,
            "provider",
            span.str_attr("gen_ai.provider.name"),
            Some("openai"),
        );
        v.check(span.attr("gen_ai.prompt.0.role").is_none(), || {
            format!("{name}: the indexed form is openllmetry-indexed's")
        });
        if name == "failed" || call.path == "/embeddings" {
            continue;
        }
        v.eq(
            name,
            "total tokens",
            span.int_attr("gen_ai.usage.total_tokens"),
            call.usage("total_tokens"),
        );
        let input = json_attr(span, "gen_ai.input.messages").unwrap_or_default();
        check_messages(
            Some(input.clone()),
            false,
            &mut v,
            name,
            "gen_ai.input.messages",
        );
        let roles: Vec<&Value> = input
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| &m["role"])
            .collect();
        let want: Vec<&Value> = call.request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["role"])
            .collect();
        v.eq(name, "input roles", roles, want);
        let output = json_attr(span, "gen_ai.output.messages").unwrap_or_default();
        check_messages(
            Some(output.clone()),
            true,
            &mut v,
            name,
            "gen_ai.output.messages",
        );
        let calls: Vec<&str> = output[0]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["type"] == "tool_call")
            .inspect(|p| {
                v.check(p["arguments"].is_object(), || {
                    format!("{name}: arguments not parsed: {p}")
                })
            })
            .filter_map(|p| p["name"].as_str())
            .collect();
        v.eq(name, "output tool calls", calls, call.answer_tool_names());
    }
    v.assert_clean("OpenLLMetry 0.62");
}

#[test]
fn openllmetry_consumers_rebuild_prompts_completions_and_usage() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = gateway_for("openllmetry-indexed", &receiver, &upstream, "");
    let calls = drive(&gateway, &receiver);
    let mut v = Verdict::default();
    for (call, span) in &calls {
        let name = call.name;
        let t = openllmetry_read(span, &mut v, name);
        let want_type = if call.path == "/embeddings" {
            "embedding"
        } else {
            "chat"
        };
        v.eq(
            name,
            "llm.request.type",
            t.request_type.as_deref(),
            Some(want_type),
        );
        v.eq(
            name,
            "span name",
            span.name.as_str(),
            if want_type == "chat" {
                "openai.chat"
            } else {
                "openai.embeddings"
            },
        );
        v.eq(name, "gen_ai.system", t.system.as_deref(), Some("openai"));
        v.eq(
            name,
            "request model",
            t.request_model.as_deref(),
            call.request["model"].as_str(),
        );
        if name == "failed" {
            v.eq(name, "status", span.status_code.as_str(), "ERROR");
            continue;
        }
        v.eq(
            name,
            "response model",
            t.response_model.as_deref(),
            call.answer["model"].as_str(),
        );
        v.eq(
            name,
            "input tokens",
            t.input_tokens,
            call.usage("prompt_tokens"),
        );
        v.eq(
            name,
            "total tokens",
            t.total_tokens,
            call.usage("total_tokens"),
        );
        if name == "embeddings" {
            continue;
        }
        v.eq(
            name,
            "output tokens",
            t.output_tokens,
            call.usage("completion_tokens"),
        );
        let want_prompts: Vec<(Option<&str>, Option<&str>)> = call.request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].as_str(), m["content"].as_str()))
            .collect();
        let got_prompts: Vec<(Option<&str>, Option<&str>)> = t
            .prompts
            .iter()
            .map(|m| {
                (
                    m.get("role").and_then(Value::as_str),
                    m.get("content").and_then(Value::as_str),
                )
            })
            .collect();
        v.eq(name, "prompts", got_prompts, want_prompts);
        let first = t.completions.first().cloned().unwrap_or_default();
        v.eq(
            name,
            "completion role",
            first.get("role").and_then(Value::as_str),
            Some("assistant"),
        );
        v.eq(
            name,
            "completion content",
            first.get("content").and_then(Value::as_str),
            call.answer_content(),
        );
        v.check(
            first.get("finish_reason").is_some_and(Value::is_string),
            || format!("{name}: no gen_ai.completion.0.finish_reason"),
        );
        // Tool calls: gen_ai.completion.0.tool_calls.{k}.name
        let calls_made: Vec<&str> = (0..)
            .map_while(|k| {
                first
                    .get(&format!("tool_calls.{k}.name"))
                    .and_then(Value::as_str)
            })
            .collect();
        v.eq(name, "tool calls", calls_made, call.answer_tool_names());
        let functions: Vec<&str> = t
            .functions
            .iter()
            .filter_map(|f| f.get("name").and_then(Value::as_str))
            .collect();
        let want_functions: Vec<&str> = call.request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str())
            .collect();
        v.eq(name, "llm.request.functions", functions, want_functions);
    }
    v.assert_clean("OpenLLMetry");
}

// ---------------------------------------------------------------------------------------
// Jaeger: the OTel GenAI semantic conventions
// ---------------------------------------------------------------------------------------

/// Attributes the conventions renamed; a current span carries none of them.
const DEPRECATED: &[&str] = &[
    "gen_ai.system",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.openai.request.seed",
];

/// The conventions' message schema: `[{role, parts: [{type, ...}], finish_reason?}]`.
fn check_messages(value: Option<Value>, output: bool, v: &mut Verdict, call: &str, key: &str) {
    let Some(Value::Array(messages)) = value else {
        v.0.push(format!("{call}: `{key}` is not a JSON array of messages"));
        return;
    };
    for m in &messages {
        v.check(m["role"].is_string(), || {
            format!("{call}: `{key}`: message without role: {m}")
        });
        if output {
            v.check(m["finish_reason"].is_string(), || {
                format!("{call}: `{key}`: output message without finish_reason: {m}")
            });
        }
        let Some(parts) = m["parts"].as_array() else {
            v.0.push(format!("{call}: `{key}`: message without parts: {m}"));
            continue;
        };
        for p in parts {
            let ok = match p["type"].as_str() {
                Some("text") => p["content"].is_string(),
                Some("tool_call") => p["name"].is_string(),
                Some("tool_call_response") => p.get("response").is_some(),
                _ => false,
            };
            v.check(ok, || format!("{call}: `{key}`: malformed part {p}"));
        }
    }
}

fn check_genai_semconv(call: &Call, span: &Span, content: bool, v: &mut Verdict) {
    let name = call.name;
    let op = if call.path == "/embeddings" {
        "embeddings"
    } else {
        "chat"
    };
    let model = call.request["model"].as_str().unwrap();
    v.eq(
        name,
        "span name",
        span.name.clone(),
        format!("{op} {model}"),
    );
    v.eq(name, "span kind", span.kind.as_str(), "CLIENT");
    // Required.
    v.eq(
        name,
        "gen_ai.operation.name",
        span.str_attr("gen_ai.operation.name"),
        Some(op),
    );
    v.eq(
        name,
        "gen_ai.provider.name",
        span.str_attr("gen_ai.provider.name"),
        Some("openai"),
    );
    // Conditionally required / recommended, with their types.
    v.eq(
        name,
        "gen_ai.request.model",
        span.str_attr("gen_ai.request.model"),
        Some(model),
    );
    v.check(span.str_attr("server.address").is_some(), || {
        format!("{name}: no server.address")
    });
    v.check(span.int_attr("server.port").is_some(), || {
        format!("{name}: server.port must be an int when server.address is set")
    });
    for key in DEPRECATED {
        v.check(
            !span
                .attributes
                .keys()
                .any(|k| k == key || k.starts_with(&format!("{key}."))),
            || format!("{name}: deprecated `{key}` present"),
        );
    }
    for key in [
        "gen_ai.request.temperature",
        "gen_ai.request.top_p",
        "gen_ai.request.frequency_penalty",
        "gen_ai.request.presence_penalty",
    ] {
        if let Some(value) = span.attr(key) {
            v.check(value.is_f64(), || {
                format!("{name}: `{key}` must be a double, got {value}")
            });
        }
    }
    for key in ["temperature", "top_p", "max_tokens"] {
        if let Some(sent) = call.request.get(key).and_then(Value::as_f64) {
            let got = span
                .attr(&format!("gen_ai.request.{key}"))
                .and_then(Value::as_f64);
            v.eq(name, &format!("gen_ai.request.{key}"), got, Some(sent));
        }
    }
    if name == "failed" {
        v.eq(name, "status", span.status_code.as_str(), "ERROR");
        v.eq(name, "error.type", span.str_attr("error.type"), Some("500"));
        return;
    }
    v.check(span.attr("error.type").is_none(), || {
        format!("{name}: error.type on a success")
    });
    v.eq(
        name,
        "gen_ai.response.model",
        span.str_attr("gen_ai.response.model"),
        call.answer["model"].as_str(),
    );
    v.eq(
        name,
        "gen_ai.usage.input_tokens",
        span.int_attr("gen_ai.usage.input_tokens"),
        call.usage("prompt_tokens"),
    );
    if op == "chat" {
        v.eq(
            name,
            "gen_ai.response.id",
            span.str_attr("gen_ai.response.id"),
            call.answer["id"].as_str(),
        );
        v.eq(
            name,
            "gen_ai.usage.output_tokens",
            span.int_attr("gen_ai.usage.output_tokens"),
            call.usage("completion_tokens"),
        );
        let reasons = span.attr("gen_ai.response.finish_reasons");
        v.check(
            reasons
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string)),
            || {
                format!(
                    "{name}: gen_ai.response.finish_reasons must be a string array, got {reasons:?}"
                )
            },
        );
    }
    // Content is opt-in.
    for key in ["gen_ai.input.messages", "gen_ai.output.messages"] {
        let present = span.attr(key).is_some();
        if !content || op != "chat" {
            v.check(!present, || {
                format!("{name}: `{key}` present though content is off")
            });
        } else {
            check_messages(json_attr(span, key), key.contains("output"), v, name, key);
        }
    }
}

#[test]
fn jaeger_spans_follow_the_genai_semantic_conventions_content_off_by_default() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gateway = gateway_for("jaeger", &receiver, &upstream, "");
    let mut v = Verdict::default();
    for (call, span) in &drive(&gateway, &receiver) {
        check_genai_semconv(call, span, false, &mut v);
    }
    v.assert_clean("the OTel GenAI conventions (Jaeger)");
}

#[test]
fn jaeger_content_when_enabled_uses_the_conventions_message_schema() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = gateway_for(
        "jaeger",
        &receiver,
        &upstream,
        "    privacy: {hideInputs: false, hideOutputs: false}\n",
    );
    let mut v = Verdict::default();
    let calls = drive(&gateway, &receiver);
    for (call, span) in &calls {
        check_genai_semconv(call, span, true, &mut v);
    }
    // The text made it through, not just the shape.
    let (chat, span) = &calls[0];
    let output = json_attr(span, "gen_ai.output.messages").unwrap_or_default();
    v.eq(
        "chat",
        "output text",
        output[0]["parts"][0]["content"].as_str(),
        chat.answer_content(),
    );
    // System messages are gen_ai.system_instructions, not input messages.
    let input = json_attr(span, "gen_ai.input.messages").unwrap_or_default();
    v.eq(
        "chat",
        "input text",
        input[0]["parts"][0]["content"].as_str(),
        Some("Capital of Portugal?"),
    );
    let system = json_attr(span, "gen_ai.system_instructions").unwrap_or_default();
    v.eq(
        "chat",
        "system instruction part",
        system[0]["type"].as_str(),
        Some("text"),
    );
    v.check(
        input
            .as_array()
            .into_iter()
            .flatten()
            .all(|m| m["role"] != "system"),
        || format!("chat: a system message among the input messages: {input}"),
    );
    // Tool-call arguments are the JSON object the model produced.
    for (call, span) in &calls {
        let output = json_attr(span, "gen_ai.output.messages").unwrap_or_default();
        for part in output[0]["parts"].as_array().into_iter().flatten() {
            if part["type"] == "tool_call" {
                v.check(part["arguments"].is_object(), || {
                    format!(
                        "{}: tool-call arguments are not an object: {part}",
                        call.name
                    )
                });
            }
        }
    }
    v.assert_clean("the OTel GenAI conventions (Jaeger)");
}
