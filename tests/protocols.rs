//! The three provider APIs (Anthropic Messages, OpenAI Responses, Gemini
//! `generateContent`) through the real `celgate` binary, in front of the scripted
//! upstream, whose journal shows what arrived and what it answered.
//!
//! One gateway has three backends, `provider: anthropic`, `openai` and `gemini`, each
//! with a key of its own, so the key that arrives says which backend a call went to.
//! Per protocol, JSON and streamed: the client gets exactly the upstream's bytes; the
//! upstream got our key in the protocol's header and none of the client's credentials
//! (unless `authPassthrough`), `anthropic-version` / `anthropic-beta` as sent; one span
//! per call whose `llm.*` context (written into `t.*` attributes) has the API,
//! operation, model, tokens, system instructions, reasoning, tool calls, time to first
//! token (streams) and session. Routing: a protocol no backend speaks is a 404
//! `route_not_found` in that protocol's error shape, a model no backend of the
//! protocol serves a 404 `model_not_found` (never another provider's backend), and
//! nothing reaches an upstream; side routes reach the right backend with its key;
//! unknown paths are a 404 unless a `passthrough` list takes them.
//!
//! Hostile answers per protocol: the scripted upstream's fault scripts (a cut, an
//! error event, malformed SSE, a body that is not JSON), and, for what no script can
//! say (blocks out of order, a delta for a block never started, a stream that ends
//! without its final event, fields of the wrong type), a [`RawUpstream`] that answers
//! fixed bytes. Each: the client gets those bytes unchanged, the span says what went
//! wrong, and the gateway keeps serving.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celgate_upstream::{RecordedRequest, RecordedResponse};
use http::Method;
use serde_json::{Value, json};
use support::calls::{CALL_TIMEOUT, runtime};
use support::otlp::{Receiver, Span};
use support::{Gateway, Parent, StreamReply, Upstream, span_of};

// ---------------------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------------------

/// Each backend's key, from the variable of the same name.
const ANTHROPIC_KEY: &str = "sk-ant-backend-0001";
const OPENAI_KEY: &str = "sk-openai-backend-0002";
const GEMINI_KEY: &str = "gm-backend-0003";

/// What the client sends in every credential header and `?key=`.
const CLIENT_SECRET: &str = "client-secret-0004";

/// The CEL context, one attribute per variable the checks read.
const FIELDS: &[(&str, &str)] = &[
    ("t.api", "llm.api"),
    ("t.operation", "llm.operation"),
    ("t.provider", "llm.provider"),
    ("t.model", "llm.requestModel"),
    ("t.response_model", "llm.responseModel"),
    ("t.response_id", "llm.responseId"),
    ("t.streaming", "llm.streaming"),
    ("t.input_tokens", "llm.inputTokens"),
    ("t.output_tokens", "llm.outputTokens"),
    ("t.system", "toJson(llm.systemInstructions)"),
    ("t.completion", "toJson(llm.completion)"),
    ("t.reasoning", "toJson(llm.reasoning)"),
    ("t.tool_calls", "toJson(llm.toolCalls)"),
    ("t.session_id", "llm.sessionId"),
    ("t.user_id", "llm.userId"),
    ("t.ttft", "llm.timeToFirstToken"),
    ("t.backend", "backend.name"),
    ("t.error", "response.error"),
];

/// `backends` (YAML list items) behind a gateway exporting to `receiver`, with the
/// [`FIELDS`] added to the jaeger preset.
fn config(receiver: &Receiver, backends: &str) -> String {
    let fields: String = FIELDS
        .iter()
        .map(|(k, v)| format!("        {k}: '{v}'\n"))
        .collect();
    format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {endpoint}
    otlpProtocol: http
    randomSampling: true
    privacy: {{hideInputs: false, hideOutputs: false}}
    fields:
      add:
{fields}listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
{backends}",
        endpoint = receiver.endpoint(),
    )
}

/// A backend item: `provider` at `origin` + its API's base path, its key from the
/// variable named after it, serving `models` (`None`: every model), and `extra`
/// lines (indented four spaces).
fn backend(name: &str, provider: &str, origin: &str, models: Option<&str>, extra: &str) -> String {
    let base = if provider == "gemini" {
        "/v1beta"
    } else {
        "/v1"
    };
    let models = models.map_or(String::new(), |m| format!("    models: {m}\n"));
    format!(
        "  - name: {name}
    provider: {provider}
    baseUrl: {origin}{base}
    apiKey: {{env: KEY_{}}}
{models}{extra}",
        provider.to_ascii_uppercase()
    )
}

/// The three backends (anthropic first, so a call that reached the first backend
/// by mistake shows), each serving its own models; the OpenAI one also passes
/// `/v1/files` through.
fn three_backends(origin: &str) -> String {
    [
        backend("claude", "anthropic", origin, Some(r#"["claude-*"]"#), ""),
        backend(
            "oai",
            "openai",
            origin,
            Some(r#"["gpt-*"]"#),
            "    passthrough: [/v1/files]\n",
        ),
        backend("gem", "gemini", origin, Some(r#"["gemini-*"]"#), ""),
    ]
    .concat()
}

fn start(receiver: &Receiver, backends: &str) -> Gateway {
    Gateway::builder(&config(receiver, backends))
        .env("KEY_ANTHROPIC", ANTHROPIC_KEY)
        .env("KEY_OPENAI", OPENAI_KEY)
        .env("KEY_GEMINI", GEMINI_KEY)
        .start()
}

fn origin(upstream: &Upstream) -> String {
    format!("http://{}", upstream.addr())
}

// ---------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------

/// Every credential header a client of any provider sends, all with [`CLIENT_SECRET`].
fn client_credentials() -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {CLIENT_SECRET}")),
        ("x-api-key", CLIENT_SECRET.to_owned()),
        ("x-goog-api-key", CLIENT_SECRET.to_owned()),
        ("api-key", CLIENT_SECRET.to_owned()),
    ]
}

/// `path` with the client's `?key=` added to its query.
fn with_key(path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}key={CLIENT_SECRET}")
}

/// One call through the gateway: what the client got, what the upstream received
/// and answered (when it did), and the call's trace id.
struct Call {
    reply: StreamReply,
    received: Vec<RecordedRequest>,
    answered: Option<RecordedResponse>,
    trace_id: String,
}

/// `method path` (plus the client's `?key=`) with `body`, every client credential,
/// a traceparent of its own and `headers`; waits for the upstream's answer to end.
fn call(
    gateway: &Gateway,
    upstream: &Upstream,
    method: Method,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Call {
    let parent = Parent::new();
    let traceparent = parent.traceparent(true);
    let credentials = client_credentials();
    let mut all: Vec<(&str, &str)> = credentials.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("traceparent", &traceparent));
    all.extend_from_slice(headers);
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let url = format!("http://{}{}", gateway.addr(), with_key(path));
    let before = upstream.requests().len();
    let reply = runtime().block_on(async {
        tokio::time::timeout(CALL_TIMEOUT, support::stream(method, &url, body, &all))
            .await
            .unwrap_or_else(|_| panic!("no answer from {url} within {CALL_TIMEOUT:?}"))
    });
    let received: Vec<RecordedRequest> = upstream.requests().into_iter().skip(before).collect();
    let answered = match received.len() {
        0 => None,
        _ => upstream.wait_for_response(before + 1, Duration::from_secs(10)),
    };
    Call {
        reply,
        received,
        answered,
        trace_id: parent.trace_id,
    }
}

impl Call {
    /// The one request the upstream received.
    fn request(&self) -> &RecordedRequest {
        assert_eq!(self.received.len(), 1, "{:?}", self.received);
        &self.received[0]
    }

    /// The client got exactly the bytes the upstream sent, with its status.
    fn assert_relayed(&self) {
        let answered = self.answered.as_ref().expect("the upstream answered");
        assert_eq!(self.reply.status.as_u16(), answered.status);
        assert_eq!(
            self.reply.body(),
            answered.body,
            "the client got other bytes than the upstream sent"
        );
    }

    /// The upstream got `key` in `header` (and no other backend key), and none of
    /// the client's credentials anywhere: header values or the path.
    fn assert_key(&self, header: &str, key: &str) {
        let r = self.request();
        let expected = match header {
            "authorization" => format!("Bearer {key}"),
            _ => key.to_owned(),
        };
        assert_eq!(r.header(header), Some(expected.as_str()), "{:?}", r.headers);
        for (name, value) in &r.headers {
            assert!(
                !value.contains(CLIENT_SECRET),
                "the client's `{name}` went upstream"
            );
            for other in [ANTHROPIC_KEY, OPENAI_KEY, GEMINI_KEY] {
                if other != key {
                    assert!(!value.contains(other), "another backend's key in `{name}`");
                }
            }
        }
        assert!(
            !r.path.contains(CLIENT_SECRET),
            "?key= went upstream: {}",
            r.path
        );
    }

    /// The span of this call.
    fn span(&self, receiver: &Receiver, gateway: &Gateway) -> Span {
        span_of(receiver, &self.trace_id, "the call", gateway)
    }

    /// celgate's own error: `status`, nothing reached any upstream, and the body.
    fn refused(&self, status: u16) -> Value {
        assert_eq!(
            self.reply.status.as_u16(),
            status,
            "{:?}",
            self.reply.body()
        );
        assert!(
            self.received.is_empty(),
            "reached the upstream: {:?}",
            self.received
        );
        self.reply.json()
    }
}

/// A `t.*` attribute holding JSON text, parsed.
fn json_attr(span: &Span, key: &str) -> Value {
    let text = span
        .str_attr(key)
        .unwrap_or_else(|| panic!("no {key}: {span:#?}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {text}"))
}

/// The span's API, operation, model, backend, streaming flag and success.
fn assert_call(
    span: &Span,
    api: &str,
    operation: &str,
    model: &str,
    backend: &str,
    streamed: bool,
) {
    support::assert_ok_span(span);
    assert_eq!(span.str_attr("t.api"), Some(api), "{span:#?}");
    assert_eq!(span.str_attr("t.operation"), Some(operation));
    assert_eq!(span.str_attr("t.model"), Some(model));
    assert_eq!(span.str_attr("t.backend"), Some(backend));
    assert_eq!(span.attr("t.streaming"), Some(&json!(streamed)));
    let ttft = span.attr("t.ttft").and_then(Value::as_f64);
    assert!(
        ttft.is_some_and(|t| t >= 0.0),
        "no time to first token: {span:#?}"
    );
}

/// The span's tool calls are one call to `name` with `arguments`, with an id when
/// the protocol gives calls one (Gemini's `functionCall` has none).
fn assert_tool_call(span: &Span, name: &str, arguments: &Value, with_id: bool) {
    let calls = json_attr(span, "t.tool_calls");
    let calls = calls.as_array().expect("a list of tool calls");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["name"], name);
    let id = calls[0]["id"].as_str().unwrap_or_default();
    assert_eq!(!id.is_empty(), with_id, "{calls:?}");
    let args: Value = serde_json::from_str(calls[0]["arguments"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {calls:?}"));
    assert_eq!(&args, arguments);
}

// ---------------------------------------------------------------------------------------
// Anthropic Messages
// ---------------------------------------------------------------------------------------

const WEATHER_ARGS: &str = r#"{"city":"Paris"}"#;

/// What Claude Code sends, in small: two system blocks (one cached), thinking, a
/// tool, and its session in `metadata.user_id` as a JSON string.
fn messages_request(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be terse."}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "input_schema": {
            "type": "object", "properties": {"city": {"type": "string"}}}}],
        "metadata": {"user_id": r#"{"device_id":"dev-1","account_uuid":"acct-1","session_id":"sess-claude"}"#},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": format!("call get_weather {WEATHER_ARGS}")}
        ]}]
    })
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("anthropic-version", "2023-06-01"),
    (
        "anthropic-beta",
        "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31",
    ),
];

/// Anthropic's usage as the span counts it: every input token (cache reads and
/// writes included) and the output tokens.
fn anthropic_tokens(message: &Value) -> (i64, i64) {
    let u = &message["usage"];
    let n = |k: &str| u[k].as_i64().unwrap_or(0);
    (
        n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens"),
        n("output_tokens"),
    )
}

fn assert_tokens(span: &Span, (input, output): (i64, i64)) {
    assert_eq!(span.int_attr("t.input_tokens"), Some(input), "{span:#?}");
    assert_eq!(span.int_attr("t.output_tokens"), Some(output), "{span:#?}");
}

#[test]
fn messages_calls_reach_the_anthropic_backend_with_its_key_and_are_traced() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = start(&receiver, &three_backends(&origin(&upstream)));
    let mut tokens = None;
    for stream in [false, true] {
        let c = call(
            &gateway,
            &upstream,
            Method::POST,
            "/v1/messages?beta=true",
            &messages_request(stream),
            ANTHROPIC_HEADERS,
        );
        c.assert_relayed();
        c.assert_key("x-api-key", ANTHROPIC_KEY);
        let r = c.request();
        assert_eq!(r.path, "/v1/messages?beta=true");
        assert_eq!(r.header("authorization"), None);
        for (name, value) in ANTHROPIC_HEADERS {
            assert_eq!(r.header(name), Some(*value), "{name} forwarded as sent");
        }
        if !stream {
            tokens = Some(anthropic_tokens(&c.reply.json()));
        }
        let span = c.span(&receiver, &gateway);
        assert_call(
            &span,
            "messages",
            "chat",
            "claude-sonnet-4-5",
            "claude",
            stream,
        );
        assert_eq!(span.str_attr("t.provider"), Some("anthropic"));
        assert_tokens(&span, tokens.expect("the JSON call came first"));
        assert_eq!(
            json_attr(&span, "t.system"),
            json!(["You are Claude Code.", "Be terse."])
        );
        let reasoning = json_attr(&span, "t.reasoning");
        assert!(
            reasoning[0]
                .as_str()
                .is_some_and(|r| r.starts_with("Scripted thinking about:")),
            "{reasoning}"
        );
        assert_tool_call(
            &span,
            "get_weather",
            &serde_json::from_str(WEATHER_ARGS).unwrap(),
            true,
        );
        assert_eq!(span.str_attr("t.session_id"), Some("sess-claude"));
        assert_eq!(span.str_attr("t.user_id"), Some("acct-1"));
        assert!(
            span.str_attr("t.response_id")
                .is_some_and(|id| id.starts_with("msg_"))
        );
    }
}

// ---------------------------------------------------------------------------------------
// OpenAI Responses
// ---------------------------------------------------------------------------------------

/// What Codex sends, in small: instructions, a function tool, reasoning with a
/// summary (its session comes in a header).
fn responses_request(stream: bool) -> Value {
    json!({
        "model": "gpt-5-codex",
        "stream": stream,
        "instructions": "Be terse.",
        "input": [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": format!("call get_weather {WEATHER_ARGS}")}
        ]}],
        "tools": [{"type": "function", "name": "get_weather", "strict": false, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}],
        "reasoning": {"effort": "low", "summary": "auto"}
    })
}

fn responses_tokens(response: &Value) -> (i64, i64) {
    let u = &response["usage"];
    (
        u["input_tokens"].as_i64().expect("input_tokens"),
        u["output_tokens"].as_i64().expect("output_tokens"),
    )
}

#[test]
fn responses_calls_reach_the_openai_backend_with_its_key_and_are_traced() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = start(&receiver, &three_backends(&origin(&upstream)));
    let mut tokens = None;
    for stream in [false, true] {
        let c = call(
            &gateway,
            &upstream,
            Method::POST,
            "/v1/responses",
            &responses_request(stream),
            &[("session-id", "sess-codex")],
        );
        c.assert_relayed();
        c.assert_key("authorization", OPENAI_KEY);
        assert_eq!(c.request().path, "/v1/responses");
        if !stream {
            tokens = Some(responses_tokens(&c.reply.json()));
        }
        let span = c.span(&receiver, &gateway);
        assert_call(&span, "responses", "chat", "gpt-5-codex", "oai", stream);
        assert_eq!(span.str_attr("t.provider"), Some("openai"));
        assert_tokens(&span, tokens.expect("the JSON call came first"));
        assert_eq!(json_attr(&span, "t.system"), json!(["Be terse."]));
        let reasoning = json_attr(&span, "t.reasoning");
        assert!(
            reasoning[0]
                .as_str()
                .is_some_and(|r| r.starts_with("Scripted thinking about:")),
            "{reasoning}"
        );
        assert_tool_call(
            &span,
            "get_weather",
            &serde_json::from_str(WEATHER_ARGS).unwrap(),
            true,
        );
        assert_eq!(span.str_attr("t.session_id"), Some("sess-codex"));
    }
}

// ---------------------------------------------------------------------------------------
// Gemini generateContent
// ---------------------------------------------------------------------------------------

/// What Gemini CLI sends, in small: a system instruction, a function declaration,
/// thoughts asked for.
fn gemini_request() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [{"role": "user", "parts": [{"text": format!("call get_weather {WEATHER_ARGS}")}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {
            "type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}],
        "generationConfig": {"temperature": 0.2, "thinkingConfig": {"includeThoughts": true}}
    })
}

fn gemini_tokens(answer: &Value) -> (i64, i64) {
    let u = &answer["usageMetadata"];
    let n = |k: &str| u[k].as_i64().unwrap_or(0);
    (
        n("promptTokenCount"),
        n("candidatesTokenCount") + n("thoughtsTokenCount"),
    )
}

#[test]
fn gemini_calls_reach_the_gemini_backend_with_its_key_and_are_traced() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = start(&receiver, &three_backends(&origin(&upstream)));
    let mut tokens = None;
    for (path, stream) in [
        ("/v1beta/models/gemini-2.5-flash:generateContent", false),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            true,
        ),
    ] {
        let c = call(
            &gateway,
            &upstream,
            Method::POST,
            path,
            &gemini_request(),
            &[("x-session-id", "sess-gemini")],
        );
        c.assert_relayed();
        c.assert_key("x-goog-api-key", GEMINI_KEY);
        assert_eq!(
            c.request().path,
            path,
            "the query kept, less the client's key"
        );
        if !stream {
            tokens = Some(gemini_tokens(&c.reply.json()));
        }
        let span = c.span(&receiver, &gateway);
        let (api, op) = ("generate_content", "generate_content");
        assert_call(&span, api, op, "gemini-2.5-flash", "gem", stream);
        assert_eq!(span.str_attr("t.provider"), Some("gemini"));
        assert_tokens(&span, tokens.expect("the JSON call came first"));
        assert_eq!(json_attr(&span, "t.system"), json!(["Be terse."]));
        let reasoning = json_attr(&span, "t.reasoning");
        assert!(
            reasoning[0]
                .as_str()
                .is_some_and(|r| r.starts_with("Scripted thinking about:")),
            "{reasoning}"
        );
        assert_tool_call(
            &span,
            "get_weather",
            &serde_json::from_str(WEATHER_ARGS).unwrap(),
            false,
        );
        assert_eq!(span.str_attr("t.session_id"), Some("sess-gemini"));
    }
}

// ---------------------------------------------------------------------------------------
// Routing: a call goes only to a backend of its API
// ---------------------------------------------------------------------------------------

/// Anthropic's error shape, with `kind` as its type.
fn assert_anthropic_error(body: &Value, kind: &str) {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

/// Google's error shape: the status as `code`, its canonical name, celgate's code
/// as the reason of an `ErrorInfo` detail.
fn assert_gemini_error(body: &Value, status: u16, name: &str, reason: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], status, "{body}");
    assert_eq!(e["status"], name, "{body}");
    assert_eq!(e["details"][0]["reason"], reason, "{body}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// OpenAI's error shape.
fn assert_openai_error(body: &Value, kind: &str, code: &str) {
    let e = &body["error"];
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["code"], code, "{body}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
}

const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

#[test]
fn a_protocol_no_backend_speaks_is_a_404_in_its_own_shape_and_goes_nowhere() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let o = origin(&upstream);
    // Only OpenAI: no backend for Messages or Gemini, whatever their models.
    let gateway = start(&receiver, &backend("oai", "openai", &o, None, ""));
    let post = |path: &str, body: &Value| call(&gateway, &upstream, Method::POST, path, body, &[]);
    let c = post("/v1/messages", &messages_request(false));
    assert_anthropic_error(&c.refused(404), "not_found_error");
    let span = c.span(&receiver, &gateway);
    support::assert_error_span(&span, "route_not_found");
    let c = post("/v1/messages/count_tokens", &messages_request(false));
    assert_anthropic_error(&c.refused(404), "not_found_error");
    let c = post(GENERATE, &gemini_request());
    assert_gemini_error(&c.refused(404), 404, "NOT_FOUND", "ROUTE_NOT_FOUND");
    let c = post(
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &gemini_request(),
    );
    assert_gemini_error(&c.refused(404), 404, "NOT_FOUND", "ROUTE_NOT_FOUND");
    drop(gateway);

    // Only Anthropic and Gemini: Responses is neither's API.
    let both = [
        backend("claude", "anthropic", &o, None, ""),
        backend("gem", "gemini", &o, None, ""),
    ]
    .concat();
    let gateway = start(&receiver, &both);
    let c = call(
        &gateway,
        &upstream,
        Method::POST,
        "/v1/responses",
        &responses_request(false),
        &[],
    );
    assert_openai_error(&c.refused(404), "invalid_request_error", "route_not_found");
    let c = call(
        &gateway,
        &upstream,
        Method::GET,
        "/v1/responses/resp_1",
        &Value::Null,
        &[],
    );
    assert_openai_error(&c.refused(404), "invalid_request_error", "route_not_found");
}

#[test]
fn a_model_no_backend_of_the_protocol_serves_is_a_404_and_never_another_providers() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = start(&receiver, &three_backends(&origin(&upstream)));
    let post = |path: &str, body: &Value| call(&gateway, &upstream, Method::POST, path, body, &[]);
    // The anthropic backend lists claude-*, but Responses is not its API.
    let mut body = responses_request(false);
    body["model"] = json!("claude-sonnet-4-5");
    let c = post("/v1/responses", &body);
    assert_openai_error(&c.refused(404), "invalid_request_error", "model_not_found");
    support::assert_error_span(&c.span(&receiver, &gateway), "model_not_found");
    let mut body = messages_request(false);
    body["model"] = json!("gpt-4o");
    assert_anthropic_error(&post("/v1/messages", &body).refused(404), "not_found_error");
    let c = post(
        "/v1beta/models/claude-sonnet-4-5:generateContent",
        &gemini_request(),
    );
    assert_gemini_error(&c.refused(404), 404, "NOT_FOUND", "MODEL_NOT_FOUND");
    // The header routes too, within the protocol's backends only.
    let body = messages_request(false);
    let c = call(
        &gateway,
        &upstream,
        Method::POST,
        "/v1/messages",
        &body,
        &[("x-ai-eg-model", "gemini-2.5-flash")],
    );
    assert_anthropic_error(&c.refused(404), "not_found_error");
}

#[test]
fn side_routes_reach_their_protocols_backend_with_its_key() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = start(&receiver, &three_backends(&origin(&upstream)));
    let go = |method: Method, path: &str, body: &Value| {
        let c = call(&gateway, &upstream, method, path, body, ANTHROPIC_HEADERS);
        assert_eq!(c.reply.status, 200, "{path}: {:?}", c.reply.body());
        c.assert_relayed();
        c
    };
    let c = go(
        Method::POST,
        "/v1/messages/count_tokens",
        &messages_request(false),
    );
    c.assert_key("x-api-key", ANTHROPIC_KEY);
    assert_eq!(c.request().header("anthropic-version"), Some("2023-06-01"));
    assert!(c.reply.json()["input_tokens"].is_i64());

    // A stored response, then its side routes: all to the OpenAI backend.
    let created = go(Method::POST, "/v1/responses", &responses_request(false));
    let id = created.reply.json()["id"]
        .as_str()
        .expect("a response id")
        .to_owned();
    for (method, path) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let c = go(method.clone(), &path, &Value::Null);
        c.assert_key("authorization", OPENAI_KEY);
        assert_eq!(
            (c.request().method.as_str(), c.request().path.as_str()),
            (method.as_str(), path.as_str())
        );
    }

    let c = go(
        Method::POST,
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &gemini_request(),
    );
    c.assert_key("x-goog-api-key", GEMINI_KEY);
    assert!(c.reply.json()["totalTokens"].is_i64());
    let c = go(Method::GET, "/v1beta/models", &Value::Null);
    c.assert_key("x-goog-api-key", GEMINI_KEY);
    assert!(c.reply.json()["models"].is_array());
}

#[test]
fn unknown_paths_go_nowhere_unless_a_passthrough_list_takes_them() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = start(&receiver, &three_backends(&origin(&upstream)));
    for path in [
        "/v1/does-not-exist",
        "/v1/messages/batches",
        "/v1beta/files",
        "/v1/filesystem",
    ] {
        let c = call(&gateway, &upstream, Method::POST, path, &json!({}), &[]);
        assert_openai_error(&c.refused(404), "invalid_request_error", "route_not_found");
    }
    // The OpenAI backend passes /v1/files through, with its key.
    let c = call(
        &gateway,
        &upstream,
        Method::GET,
        "/v1/files/file-1",
        &Value::Null,
        &[],
    );
    c.assert_relayed();
    c.assert_key("authorization", OPENAI_KEY);
    assert_eq!(c.request().path, "/v1/files/file-1");
}

#[test]
fn auth_passthrough_sends_the_clients_credentials_instead_of_ours() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let o = origin(&upstream);
    let passthrough = "    authPassthrough: true\n";
    let backends = [
        backend("claude", "anthropic", &o, None, passthrough),
        backend("gem", "gemini", &o, None, passthrough),
    ]
    .concat();
    let gateway = start(&receiver, &backends);
    let c = call(
        &gateway,
        &upstream,
        Method::POST,
        "/v1/messages",
        &messages_request(false),
        &[],
    );
    c.assert_relayed();
    let r = c.request();
    assert_eq!(r.header("x-api-key"), Some(CLIENT_SECRET));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {CLIENT_SECRET}").as_str())
    );
    assert!(r.headers.iter().all(|(_, v)| !v.contains(ANTHROPIC_KEY)));
    let c = call(
        &gateway,
        &upstream,
        Method::POST,
        GENERATE,
        &gemini_request(),
        &[],
    );
    c.assert_relayed();
    let r = c.request();
    assert_eq!(r.header("x-goog-api-key"), Some(CLIENT_SECRET));
    assert_eq!(r.path, with_key(GENERATE), "the client's ?key= kept");
    assert!(r.headers.iter().all(|(_, v)| !v.contains(GEMINI_KEY)));
}

// ---------------------------------------------------------------------------------------
// Hostile answers: the fault scripts
// ---------------------------------------------------------------------------------------

/// `path` and body of a call of each protocol to `model`, streamed or not.
fn call_for(protocol: &str, model: &str, stream: bool) -> (String, Value) {
    match protocol {
        "messages" => {
            let mut body = messages_request(stream);
            body["model"] = json!(model);
            ("/v1/messages".to_owned(), body)
        }
        "responses" => {
            let mut body = responses_request(stream);
            body["model"] = json!(model);
            ("/v1/responses".to_owned(), body)
        }
        _ => {
            let method = match stream {
                true => "streamGenerateContent?alt=sse",
                false => "generateContent",
            };
            (format!("/v1beta/models/{model}:{method}"), gemini_request())
        }
    }
}

/// The span of `c` failed with `error_type`, and a normal call of `protocol` after it
/// still succeeds.
fn assert_failed_then_healthy(
    c: &Call,
    error_type: &str,
    protocol: &str,
    (gateway, upstream, receiver): (&Gateway, &Upstream, &Receiver),
) {
    let span = c.span(receiver, gateway);
    assert_eq!(span.str_attr("error.type"), Some(error_type), "{span:#?}");
    assert_eq!(span.status_code, "ERROR");
    let (path, body) = call_for(protocol, "fine-model", true);
    let after = call(gateway, upstream, Method::POST, &path, &body, &[]);
    assert_eq!(after.reply.status, 200);
    assert_eq!(after.reply.error, None);
    support::assert_ok_span(&after.span(receiver, gateway));
}

#[test]
fn fault_scripts_reach_the_client_unchanged_and_the_span_says_what_went_wrong() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let o = origin(&upstream);
    // Every model: the fault scripts are model names.
    let backends = [
        backend("claude", "anthropic", &o, None, ""),
        backend("oai", "openai", &o, None, ""),
        backend("gem", "gemini", &o, None, ""),
    ]
    .concat();
    let gateway = start(&receiver, &backends);
    let env = (&gateway, &upstream, &receiver);
    // (script, streamed, the span's error.type, whether the client's body is cut)
    let scripts = [
        ("cut-after-3", true, "stream_cut", true),
        ("sse-error", true, "stream_error", false),
        ("malformed-sse", true, "invalid_response", false),
        ("invalid-json", false, "invalid_response", false),
        ("error-500", false, "500", false),
    ];
    for protocol in ["messages", "responses", "generate_content"] {
        for (script, stream, error_type, cut) in scripts {
            let (path, body) = call_for(protocol, script, stream);
            let c = call(&gateway, &upstream, Method::POST, &path, &body, &[]);
            let what = format!("{protocol} {script}");
            assert_eq!(c.reply.error.is_some(), cut, "{what}: {:?}", c.reply.error);
            let answered = c.answered.as_ref().expect("the upstream answered");
            assert_eq!(c.reply.status.as_u16(), answered.status, "{what}");
            assert_eq!(
                c.reply.body(),
                answered.body,
                "{what}: other bytes than sent"
            );
            assert_failed_then_healthy(&c, error_type, protocol, env);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile answers no script can say: a raw upstream
// ---------------------------------------------------------------------------------------

/// A backend that answers every request with the bytes it was last given (status
/// 200, the given content type, a `Content-Length`), then closes the connection.
struct RawUpstream {
    addr: SocketAddr,
    answer: Arc<Mutex<(String, Vec<u8>)>>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the raw upstream");
        let addr = listener.local_addr().expect("its address");
        let answer = Arc::new(Mutex::new((String::new(), Vec::new())));
        let shared = Arc::clone(&answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                std::thread::spawn(move || serve(stream, &answer));
            }
        });
        RawUpstream { addr, answer }
    }

    fn answer_next(&self, content_type: &str, body: &str) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) =
            (content_type.to_owned(), body.as_bytes().to_vec());
    }
}

/// Reads one request (head, and a body of its `Content-Length`), then writes `answer`.
fn serve(mut stream: TcpStream, (content_type, body): &(String, Vec<u8>)) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while seen.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// An SSE body of named events: `(name, data)`; a `None` name writes no `event:`.
fn sse(events: &[(Option<&str>, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| match name {
            Some(n) => format!("event: {n}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        })
        .collect()
}

/// Anthropic events, each named by its `type` as Anthropic sends them.
fn anthropic_sse(events: &[Value]) -> String {
    let named: Vec<(Option<&str>, Value)> = events
        .iter()
        .map(|e| (e["type"].as_str(), e.clone()))
        .collect();
    sse(&named)
}

/// One hostile answer and what the span must make of it.
struct Hostile {
    name: &'static str,
    why: &'static str,
    content_type: &'static str,
    body: String,
    /// The span's `error.type`; `None`: a successful call.
    error: Option<&'static str>,
    /// The span's `llm.completion`, when checked.
    completion: Option<Value>,
}

/// Sends a call of `protocol` for each answer in `cases` to a gateway in front of a
/// [`RawUpstream`]: the client gets the answer's bytes, the span says what the case
/// expects, and after all of them the gateway still serves a normal call.
fn run_hostile(protocol: &str, cases: Vec<Hostile>) {
    let raw = RawUpstream::start();
    let receiver = Receiver::http();
    let o = format!("http://{}", raw.addr);
    let provider = match protocol {
        "messages" => "anthropic",
        "responses" => "openai",
        _ => "gemini",
    };
    let gateway = start(&receiver, &backend("raw", provider, &o, None, ""));
    let mut failures = Vec::new();
    for case in &cases {
        raw.answer_next(case.content_type, &case.body);
        let stream = case.content_type == "text/event-stream";
        let (path, body) = call_for(protocol, "hostile-model", stream);
        let url = format!("http://{}{path}", gateway.addr());
        let parent = Parent::new();
        let tp = parent.traceparent(true);
        let reply = runtime().block_on(async {
            tokio::time::timeout(
                CALL_TIMEOUT,
                support::stream(
                    Method::POST,
                    &url,
                    body.to_string(),
                    &[("traceparent", &tp)],
                ),
            )
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within {CALL_TIMEOUT:?}", case.name))
        });
        let mut wrong = Vec::new();
        if reply.status != 200 || reply.error.is_some() {
            wrong.push(format!("status {} error {:?}", reply.status, reply.error));
        }
        if reply.body() != case.body.as_bytes() {
            wrong.push("the client got other bytes than the upstream sent".to_owned());
        }
        let span = span_of(&receiver, &parent.trace_id, case.name, &gateway);
        if span.str_attr("error.type") != case.error {
            wrong.push(format!(
                "error.type {:?} (want {:?})",
                span.str_attr("error.type"),
                case.error
            ));
        }
        if let Some(want) = &case.completion {
            let got = span
                .str_attr("t.completion")
                .and_then(|t| serde_json::from_str::<Value>(t).ok());
            if got.as_ref() != Some(want) {
                wrong.push(format!("completion {got:?} (want {want})"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {} [why: {}]",
                case.name,
                wrong.join("; "),
                case.why
            ));
        }
    }
    // Still serving, and never panicked.
    raw.answer_next("application/json", r#"{"fine": true}"#);
    let (path, body) = call_for(protocol, "hostile-model", false);
    let url = format!("http://{}{path}", gateway.addr());
    let after = runtime().block_on(support::stream(Method::POST, &url, body.to_string(), &[]));
    if after.status != 200 {
        failures.push(format!("after the cases: a call got {}", after.status));
    }
    if gateway.stderr().contains("panicked") {
        failures.push(format!("the gateway panicked:\n{}", gateway.stderr()));
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile answers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn text_delta(index: i64, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
}

fn block_start(index: i64, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn message_start() -> Value {
    json!({"type": "message_start", "message": {"id": "msg_raw", "type": "message", "role": "assistant",
        "model": "hostile-model", "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}})
}

fn message_end() -> [Value; 2] {
    [
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        json!({"type": "message_stop"}),
    ]
}

/// A Messages stream with `middle` between its start and its end.
fn messages_stream(middle: &[Value]) -> String {
    let mut events = vec![message_start()];
    events.extend_from_slice(middle);
    events.extend(message_end());
    anthropic_sse(&events)
}

#[test]
fn hostile_messages_answers_are_relayed_and_traced_for_what_they_are() {
    let text = json!({"type": "text", "text": ""});
    let sse_type = "text/event-stream";
    let cases = vec![
        Hostile {
            name: "blocks-out-of-order",
            why: "block 1 starts and speaks before block 0: the span keeps index order",
            content_type: sse_type,
            body: messages_stream(&[
                block_start(1, text.clone()),
                block_start(0, text.clone()),
                text_delta(1, "world"),
                text_delta(0, "hello "),
            ]),
            error: None,
            completion: Some(json!(["hello world"])),
        },
        Hostile {
            name: "delta-for-a-block-never-started",
            why: "a content_block_delta without its content_block_start is not lost",
            content_type: sse_type,
            body: messages_stream(&[text_delta(0, "no start")]),
            error: None,
            completion: Some(json!(["no start"])),
        },
        Hostile {
            name: "negative-and-huge-indices",
            why: "indices a hostile server picks must not index anything out of bounds",
            content_type: sse_type,
            body: messages_stream(&[
                text_delta(-1, "neg"),
                text_delta(i64::MAX, "huge"),
                text_delta(0, "ok"),
            ]),
            error: None,
            completion: None,
        },
        Hostile {
            name: "unterminated",
            why: "the body ends cleanly before message_stop: an incomplete answer, what came is kept",
            content_type: sse_type,
            body: anthropic_sse(&[
                message_start(),
                block_start(0, text.clone()),
                text_delta(0, "partial"),
            ]),
            error: Some("stream_incomplete"),
            completion: Some(json!(["partial"])),
        },
        Hostile {
            name: "wrong-types",
            why: "mistyped fields cost the field, not the stream",
            content_type: sse_type,
            body: messages_stream(&[
                json!({"type": "content_block_start", "index": "0", "content_block": "text"}),
                json!({"type": "content_block_delta", "index": 0, "delta": "hi"}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": {"a": 1}}}),
                json!({"type": "message_delta", "usage": {"output_tokens": "many"}}),
                text_delta(0, "kept"),
            ]),
            error: None,
            completion: Some(json!(["kept"])),
        },
        Hostile {
            name: "error-event-mid-stream",
            why: "an overloaded error after some text: the stream's error",
            content_type: sse_type,
            body: anthropic_sse(&[
                message_start(),
                block_start(0, text.clone()),
                text_delta(0, "partial"),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ]),
            error: Some("stream_error"),
            completion: None,
        },
        Hostile {
            name: "event-data-not-json",
            why: "an event whose data is not JSON makes the answer invalid, even if it ends well",
            content_type: sse_type,
            body: format!(
                "{}event: content_block_delta\ndata: {{not json\n\n{}",
                anthropic_sse(&[message_start()]),
                anthropic_sse(&message_end())
            ),
            error: Some("invalid_response"),
            completion: None,
        },
        Hostile {
            name: "events-without-names",
            why: "a server that sends only `data:` lines: each event's `type` says what it is, message_stop included",
            content_type: sse_type,
            body: {
                let mut events = vec![
                    message_start(),
                    block_start(0, text.clone()),
                    text_delta(0, "unnamed"),
                ];
                events.extend(message_end());
                let unnamed: Vec<(Option<&str>, Value)> =
                    events.into_iter().map(|e| (None, e)).collect();
                sse(&unnamed)
            },
            error: None,
            completion: Some(json!(["unnamed"])),
        },
        Hostile {
            name: "json-body-not-an-object",
            why: "a 200 whose JSON body is an array is not a message",
            content_type: "application/json",
            body: "[1, 2, 3]".to_owned(),
            error: Some("invalid_response"),
            completion: None,
        },
        Hostile {
            name: "json-body-wrong-types",
            why: "a message whose content and usage have the wrong types is still a message",
            content_type: "application/json",
            body:
                json!({"type": "message", "id": 7, "content": "hi", "usage": {"input_tokens": "5"}})
                    .to_string(),
            error: None,
            completion: None,
        },
    ];
    run_hostile("messages", cases);
}

fn responses_event(kind: &str, mut data: Value) -> (Option<&str>, Value) {
    data["type"] = json!(kind);
    (Some(kind), data)
}

fn completed(text: &str) -> Value {
    json!({"response": {"id": "resp_raw", "object": "response", "status": "completed", "model": "hostile-model",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant",
            "content": [{"type": "output_text", "text": text}]}],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}})
}

#[test]
fn hostile_responses_answers_are_relayed_and_traced_for_what_they_are() {
    let sse_type = "text/event-stream";
    let cases = vec![
        Hostile {
            name: "delta-for-an-item-never-added",
            why: "an output_text delta for output_index 3 nobody added, then the completion",
            content_type: sse_type,
            body: {
                let events = [
                    responses_event(
                        "response.output_text.delta",
                        json!({"output_index": 3, "content_index": 0, "delta": "stray"}),
                    ),
                    responses_event("response.completed", completed("hello")),
                ];
                sse(&events)
            },
            error: None,
            completion: None,
        },
        Hostile {
            name: "unterminated",
            why: "deltas, then the body ends without response.completed",
            content_type: sse_type,
            body: sse(&[
                responses_event(
                    "response.created",
                    json!({"response": {"id": "resp_raw", "status": "in_progress"}}),
                ),
                responses_event(
                    "response.output_text.delta",
                    json!({"output_index": 0, "content_index": 0, "delta": "partial"}),
                ),
            ]),
            error: Some("stream_incomplete"),
            completion: None,
        },
        Hostile {
            name: "failed",
            why: "response.failed ends the stream with the model's failure",
            content_type: sse_type,
            body: sse(&[responses_event(
                "response.failed",
                json!({"response": {"id": "resp_raw", "status": "failed",
                "error": {"code": "server_error", "message": "boom"}}}),
            )]),
            error: Some("stream_error"),
            completion: None,
        },
        Hostile {
            name: "error-event",
            why: "an error event mid-stream",
            content_type: sse_type,
            body: sse(&[
                responses_event(
                    "response.output_text.delta",
                    json!({"output_index": 0, "content_index": 0, "delta": "x"}),
                ),
                responses_event(
                    "error",
                    json!({"code": "server_error", "message": "boom", "sequence_number": 1}),
                ),
            ]),
            error: Some("stream_error"),
            completion: None,
        },
        Hostile {
            name: "completed-wrong-types",
            why: "a response.completed whose output and usage have the wrong types",
            content_type: sse_type,
            body: sse(&[responses_event(
                "response.completed",
                json!({"response": {"output": "text", "usage": {"input_tokens": "3"}}}),
            )]),
            error: None,
            completion: None,
        },
    ];
    run_hostile("responses", cases);
}

fn gemini_chunk(text: Value, finish: Option<&str>) -> (Option<&'static str>, Value) {
    let mut candidate =
        json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    (
        None,
        json!({"candidates": [candidate], "modelVersion": "hostile-model"}),
    )
}

#[test]
fn hostile_gemini_answers_are_relayed_and_traced_for_what_they_are() {
    let sse_type = "text/event-stream";
    let cases = vec![
        Hostile {
            name: "unterminated",
            why: "chunks without a finishReason, then the body ends",
            content_type: sse_type,
            body: sse(&[gemini_chunk(json!("partial"), None)]),
            error: Some("stream_incomplete"),
            completion: Some(json!(["partial"])),
        },
        Hostile {
            name: "wrong-types",
            why: "a part whose text is a number, candidates that are not objects",
            content_type: sse_type,
            body: {
                let mut events = vec![gemini_chunk(json!(5), None)];
                events.push((None, json!({"candidates": ["x", 3, null]})));
                events.push(gemini_chunk(json!("kept"), Some("STOP")));
                sse(&events)
            },
            error: None,
            completion: Some(json!(["kept"])),
        },
        Hostile {
            name: "error-mid-stream",
            why: "Google's error object after a chunk",
            content_type: sse_type,
            body: {
                let mut events = vec![gemini_chunk(json!("partial"), None)];
                events.push((
                    None,
                    json!({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}),
                ));
                sse(&events)
            },
            error: Some("stream_error"),
            completion: None,
        },
        Hostile {
            name: "chunk-not-json",
            why: "a data line that is not JSON",
            content_type: sse_type,
            body: format!(
                "data: {{oops\n\n{}",
                sse(&[gemini_chunk(json!("done"), Some("STOP"))])
            ),
            error: Some("invalid_response"),
            completion: None,
        },
        Hostile {
            name: "json-body-not-an-object",
            why: "a 200 generateContent answer that is a string",
            content_type: "application/json",
            body: "\"hello\"".to_owned(),
            error: Some("invalid_response"),
            completion: None,
        },
    ];
    run_hostile("generate_content", cases);
}
