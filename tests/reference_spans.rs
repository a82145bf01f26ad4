//! Each preset's span of a Chat Completions, Anthropic Messages, OpenAI Responses or Gemini call against
//! the span its backend's own instrumentation wrote for the same call
//! (`tests/e2e/references/<instrumentation>/<case>.json`, made by
//! `tests/e2e/references/capture.py`: the official SDK, instrumented, answered with the
//! very bytes the fixture exchange holds).
//!
//! Span name, kind and status must match, and so must every attribute: a key the
//! reference has and the preset lacks, a key the preset adds, or a value that differs
//! (JSON text compared as JSON, nulls left out) fails, unless [`GAPS`] lists it with
//! the reason the difference is right for a gateway or the reference is wrong.
//! Langfuse runs no instrumentation here: its check applies its OTel ingestion rules
//! to the span instead ([`langfuse_reads_each_protocol_call`]).

use std::path::Path;

use celgate::cli::{build_exchange, span_json};
use celgate_engine::exchange::Exchange;
use celgate_engine::fixture;
use celgate_engine::{LoadOptions, PresetName, TracingPlan, load};
use serde_json::{Map, Value};

/// What a difference is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Diff {
    /// The reference writes the key; the preset does not.
    Missing,
    /// The preset writes a key the reference does not.
    Extra,
    /// Both write the key, with different values.
    Value,
    /// The span's name, kind or status.
    Span,
}

/// (preset variant, case prefix, attribute key pattern (`*` = any text), difference,
/// why it is right). A case prefix `messages`, `responses` or `gemini` names a
/// protocol; the full stem names one call.
type Gap = (&'static str, &'static str, &'static str, Diff, &'static str);

const GAPS: &[Gap] = &[
    // ---- phoenix vs openinference-instrumentation-anthropic 3.1.0
    (
        "phoenix",
        "messages",
        "span.kind",
        Diff::Span,
        "OpenInference sets no OTel span kind (INTERNAL); a gateway's call to a provider is a CLIENT span, and Phoenix reads openinference.span.kind",
    ),
    (
        "phoenix",
        "messages",
        "input.value",
        Diff::Value,
        "the request as it crossed the wire, not the SDK's re-serialization of its kwargs",
    ),
    (
        "phoenix",
        "messages",
        "llm.invocation_parameters",
        Diff::Value,
        "the parameters as sent; the instrumentation copies `metadata` (a user id, not a parameter) and `extra_body` and misses sampling parameters the SDK only takes through extra_body",
    ),
    (
        "phoenix",
        "messages_json",
        "llm.input_messages.0.message.content*",
        Diff::Extra,
        "system blocks joined into one message `content`; Phoenix renders it as it renders the reference's one text block",
    ),
    (
        "phoenix",
        "messages_json",
        "llm.input_messages.0.message.contents.*",
        Diff::Missing,
        "the same text as `content` (one text block)",
    ),
    (
        "phoenix",
        "messages",
        "llm.output_messages.0.message.content",
        Diff::Extra,
        "an answer without reasoning keeps `content`, the chat preset's form; the reference writes every block as a `contents` part",
    ),
    (
        "phoenix",
        "messages",
        "llm.output_messages.0.message.contents.*",
        Diff::Missing,
        "text and tool_use blocks: the same text and tool calls are in `content` and `tool_calls`",
    ),
    (
        "phoenix",
        "messages_thinking",
        "llm.input_messages.1.message.contents.*",
        Diff::Missing,
        "thinking blocks in the history are not prompt text (the exchange keeps tool calls, not reasoning, of past turns)",
    ),
    (
        "phoenix",
        "messages",
        "llm.token_count.prompt_details.cache_*",
        Diff::Extra,
        "Anthropic reported 0 cache tokens: a reported 0 is written, as OpenInference's openai instrumentation does",
    ),
    // ---- phoenix vs openinference-instrumentation-openai 0.1.66 (Responses)
    (
        "phoenix",
        "responses",
        "span.kind",
        Diff::Span,
        "as for Messages",
    ),
    (
        "phoenix",
        "responses",
        "output.value",
        Diff::Value,
        "the answer as it crossed the wire, not the SDK's dump of its model (created_at as a float)",
    ),
    (
        "phoenix",
        "responses",
        "llm.invocation_parameters",
        Diff::Value,
        "the parameters as sent, without `model`, `stream` and `user` (their own attributes); the reference copies the SDK's kwargs",
    ),
    (
        "phoenix",
        "responses",
        "llm.provider",
        Diff::Extra,
        "the OpenInference provider, which the Responses instrumentation leaves out",
    ),
    (
        "phoenix",
        "responses",
        "llm.finish_reason",
        Diff::Extra,
        "Responses reports no finish reason; celgate's Responses parser derives one (stop / tool_calls / the incomplete reason)",
    ),
    (
        "phoenix",
        "responses_stream_tools",
        "llm.input_messages.1.message.content",
        Diff::Extra,
        "one input_text part is the message `content`",
    ),
    (
        "phoenix",
        "responses_stream_tools",
        "llm.input_messages.1.message.contents.*",
        Diff::Missing,
        "the same text as `content`",
    ),
    (
        "phoenix",
        "responses",
        "llm.output_messages.0.message.content*",
        Diff::Extra,
        "one message per choice; the reference writes one per output item",
    ),
    (
        "phoenix",
        "responses",
        "llm.output_messages.*",
        Diff::Missing,
        "one message per choice (reasoning as its first part, text as `content`); the reference writes one message per output item",
    ),
    (
        "phoenix",
        "responses_reasoning",
        "llm.input_messages.*",
        Diff::Value,
        "messages numbered from 0; the reference leaves index 0 empty when there are no instructions",
    ),
    (
        "phoenix",
        "responses_reasoning",
        "llm.input_messages.*",
        Diff::Extra,
        "messages numbered from 0; the reference leaves index 0 empty when there are no instructions",
    ),
    (
        "phoenix",
        "responses_reasoning",
        "llm.input_messages.*",
        Diff::Missing,
        "messages numbered from 0; the reference leaves index 0 empty when there are no instructions",
    ),
    (
        "phoenix",
        "responses",
        "llm.tools.0.tool.json_schema",
        Diff::Value,
        "the tool as sent; the reference dumps the SDK's model of it, without `type`",
    ),
    // ---- phoenix vs openinference-instrumentation-google-genai 1.4.14
    (
        "phoenix",
        "gemini",
        "span.kind",
        Diff::Span,
        "as for Messages",
    ),
    (
        "phoenix",
        "gemini",
        "input.value",
        Diff::Value,
        "the request as it crossed the wire (camelCase), not the SDK's snake_case dump of its arguments",
    ),
    (
        "phoenix",
        "gemini",
        "output.value",
        Diff::Value,
        "the answer as it crossed the wire, not the SDK's snake_case dump (which also holds the HTTP response headers)",
    ),
    (
        "phoenix",
        "gemini",
        "llm.invocation_parameters",
        Diff::Value,
        "generationConfig as sent (camelCase); the reference dumps the SDK's snake_case model",
    ),
    (
        "phoenix",
        "gemini_stream_tools",
        "llm.output_messages.0.message.content",
        Diff::Extra,
        "the text as `content`",
    ),
    (
        "phoenix",
        "gemini_stream_tools",
        "llm.output_messages.0.message.contents.*",
        Diff::Missing,
        "the same text as `content`",
    ),
    (
        "phoenix",
        "gemini",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id",
        Diff::Extra,
        "Gemini gives no call id: celgate writes \"\", the reference nothing",
    ),
    (
        "phoenix",
        "gemini_thinking",
        "llm.input_messages.1.message.tool_calls.0.tool_call.id",
        Diff::Extra,
        "Gemini gives no call id: celgate writes \"\", the reference nothing",
    ),
    (
        "phoenix",
        "gemini_thinking",
        "llm.input_messages.2.message.name",
        Diff::Missing,
        "a functionResponse is tied to its call by `tool_call_id` (the call id, else the function name)",
    ),
    (
        "phoenix",
        "gemini_thinking",
        "llm.input_messages.2.message.tool_call_id",
        Diff::Extra,
        "a functionResponse is tied to its call by `tool_call_id` (the call id, else the function name)",
    ),
    // ---- openllmetry vs Traceloop opentelemetry-instrumentation-anthropic 0.62.4
    (
        "openllmetry",
        "messages",
        "gen_ai.input.messages",
        Diff::Value,
        "tool results are `tool` messages; the reference keeps Anthropic's `user` role and drops thinking from the history",
    ),
    (
        "openllmetry",
        "messages_stream_tools",
        "gen_ai.usage.*",
        Diff::Value,
        "Anthropic's message_delta output count is cumulative: 58 tokens; the reference adds message_start's 1 to it (59, and a total of 439)",
    ),
    (
        "openllmetry",
        "messages",
        "gen_ai.is_streaming",
        Diff::Extra,
        "written for every call; the reference writes it only on streams",
    ),
    (
        "openllmetry",
        "messages_json",
        "gen_ai.request.temperature",
        Diff::Extra,
        "the temperature that was sent; the reference misses what the SDK only takes through extra_body",
    ),
    // ---- openllmetry vs Traceloop opentelemetry-instrumentation-openai 0.62.4 (Responses)
    (
        "openllmetry",
        "responses",
        "span.status",
        Diff::Span,
        "a gateway knows the call succeeded: OK; the reference leaves non-streamed spans UNSET",
    ),
    (
        "openllmetry",
        "responses_stream_tools",
        "gen_ai.output.messages",
        Diff::Value,
        "the call id (`call_…`, what the tool result must answer); the reference writes the item id (`fc_…`)",
    ),
    (
        "openllmetry",
        "responses_reasoning",
        "gen_ai.output.messages",
        Diff::Value,
        "the reasoning summary's text, before the answer; the reference writes the Python repr of the summary list after it",
    ),
    (
        "openllmetry",
        "responses_stream_tools",
        "gen_ai.tool.definitions",
        Diff::Value,
        "the tool as sent, `strict` included; the reference leaves `strict` out",
    ),
    (
        "openllmetry",
        "responses",
        "gen_ai.user",
        Diff::Extra,
        "the user the call names (llm.userId: `user`, or the x-user-id header these calls carry); the reference reads only the `user` kwarg",
    ),
    (
        "openllmetry",
        "responses_reasoning",
        "gen_ai.response.reasoning_effort",
        Diff::Missing,
        "the effort the answer echoes is the one requested (gen_ai.request.reasoning_effort)",
    ),
    // ---- openllmetry vs Traceloop opentelemetry-instrumentation-google-generativeai 0.62.4
    (
        "openllmetry",
        "gemini",
        "gen_ai.provider.name",
        Diff::Value,
        "`gcp.gemini`, the conventions' name for the Gemini API; the reference writes `gcp.gen_ai`",
    ),
    (
        "openllmetry",
        "gemini",
        "gen_ai.system_instructions",
        Diff::Extra,
        "the system instruction; the reference drops it altogether",
    ),
    (
        "openllmetry",
        "gemini",
        "gen_ai.tool.definitions",
        Diff::Extra,
        "the function declarations; the reference writes none",
    ),
    (
        "openllmetry",
        "gemini",
        "gen_ai.request.*",
        Diff::Extra,
        "the generation parameters sent; the reference writes none",
    ),
    (
        "openllmetry",
        "gemini",
        "gen_ai.is_streaming",
        Diff::Extra,
        "written for every call, as Traceloop's anthropic and openai instrumentations do; the google one writes none",
    ),
    (
        "openllmetry",
        "gemini_stream_tools",
        "gen_ai.output.messages",
        Diff::Value,
        "the streamed text and the call; the reference loses the text chunk",
    ),
    (
        "openllmetry",
        "gemini_thinking",
        "gen_ai.usage.output_tokens",
        Diff::Value,
        "output counts thoughts too (84 = 20 + 64, the OTel GenAI rule, and what Gemini bills); the reference writes candidates only",
    ),
    (
        "openllmetry",
        "gemini",
        "gen_ai.input.messages",
        Diff::Value,
        "tool results are `tool` messages",
    ),
    // ---- openllmetry vs Traceloop opentelemetry-instrumentation-openai 0.62.4 (chat)
    (
        "openllmetry",
        "chat_json",
        "span.status",
        Diff::Span,
        "a gateway knows the call succeeded: OK; the reference leaves non-streamed chat spans UNSET (and marks streams OK)",
    ),
    (
        "openllmetry",
        "chat_tool_result",
        "span.status",
        Diff::Span,
        "as for chat_json",
    ),
    (
        "openllmetry",
        "chat",
        "gen_ai.openai.api_base",
        Diff::Missing,
        "the base URL the client configured; celgate's client is the gateway, and its backend is server.address",
    ),
    (
        "openllmetry",
        "chat",
        "gen_ai.openai.response.system_fingerprint",
        Diff::Missing,
        "not in the CEL context (the response body holds it, and parsing it per span is not worth one attribute)",
    ),
    (
        "openllmetry",
        "chat",
        "gen_ai.user",
        Diff::Extra,
        "the user the call names (llm.userId: `user`, or the x-user-id header these calls carry); the reference reads only the `user` kwarg",
    ),
    (
        "openllmetry",
        "chat_stream",
        "gen_ai.usage.reasoning_tokens",
        Diff::Extra,
        "the stream's usage chunk reports 0 reasoning tokens; the reference writes them only for JSON answers",
    ),
    (
        "openllmetry",
        "chat_stream_tools",
        "gen_ai.output.messages",
        Diff::Value,
        "no empty text part before the tool calls: the stream carried no text; the reference adds `{content: \"\"}`",
    ),
    // ---- jaeger vs OTel opentelemetry-instrumentation-openai-v2 2.4b0 (chat), where
    // the latest GenAI conventions ask for more than 2.4b0 writes
    (
        "jaeger*",
        "chat",
        "server.address",
        Diff::Extra,
        "the backend's host; the reference writes none for a local replay",
    ),
    (
        "jaeger*",
        "chat",
        "openai.response.system_fingerprint",
        Diff::Missing,
        "not in the CEL context (an OpenAI-specific attribute the conventions make optional)",
    ),
    (
        "jaeger*",
        "chat",
        "gen_ai.usage.cache_read.input_tokens",
        Diff::Extra,
        "the cached input tokens OpenAI reports (the conventions' attribute); 2.4b0 writes none",
    ),
    (
        "jaeger*",
        "chat",
        "gen_ai.usage.reasoning.output_tokens",
        Diff::Extra,
        "the reasoning tokens OpenAI reports (the conventions' attribute); 2.4b0 writes none",
    ),
    (
        "jaeger*",
        "chat_stream",
        "gen_ai.response.finish_reasons",
        Diff::Extra,
        "the stream's finish reasons, as for a JSON answer; 2.4b0 loses them on streams",
    ),
    (
        "jaeger*",
        "chat_stream",
        "gen_ai.request.stream",
        Diff::Extra,
        "recommended by the latest conventions for streamed calls; 2.4b0 predates it",
    ),
    (
        "jaeger*",
        "chat_stream",
        "gen_ai.response.time_to_first_chunk",
        Diff::Extra,
        "recommended by the latest conventions for streams (seconds: llm.timeToFirstToken / 1000); 2.4b0 predates it",
    ),
    (
        "jaeger_content",
        "chat",
        "gen_ai.system_instructions",
        Diff::Extra,
        "the system messages as the conventions' own attribute (not repeated among the input messages); 2.4b0 keeps them as system messages",
    ),
    (
        "jaeger_content",
        "chat",
        "gen_ai.input.messages",
        Diff::Value,
        "no system messages (they are gen_ai.system_instructions); the user's text parts kept (2.4b0 writes `parts: []` for a content list)",
    ),
    (
        "jaeger_content",
        "chat_stream_tools",
        "gen_ai.tool.definitions",
        Diff::Extra,
        "the tools sent, in the conventions' form; 2.4b0 writes none",
    ),
    (
        "jaeger_content",
        "chat_tool_result",
        "gen_ai.tool.definitions",
        Diff::Extra,
        "the tools sent, in the conventions' form; 2.4b0 writes none",
    ),
    // ---- langfuse vs the Langfuse 5.2.0 SDK's OpenAI integration (chat)
    (
        "langfuse",
        "chat",
        "span.name",
        Diff::Span,
        "`{operation} {model}`, the observation's name in Langfuse; the SDK names every call `OpenAI-generation`",
    ),
    (
        "langfuse",
        "chat",
        "span.kind",
        Diff::Span,
        "a gateway's call to a provider is a CLIENT span; Langfuse reads langfuse.observation.type",
    ),
    (
        "langfuse",
        "chat",
        "langfuse.internal.is_app_root",
        Diff::Missing,
        "the SDK's internal marker of its own root spans, not an ingestion attribute",
    ),
    (
        "langfuse",
        "chat",
        "langfuse.observation.model.parameters",
        Diff::Value,
        "the parameters sent, scalars only; the SDK adds its defaults (`max_tokens: \"Infinity\"`, penalties 0) and drops tool_choice",
    ),
    (
        "langfuse",
        "chat",
        "langfuse.observation.usage_details",
        Diff::Value,
        "Langfuse's own usage keys, net (input without the cached tokens, priced apart as input_cached_tokens); the SDK sends OpenAI's usage object, which ingestion maps to the same keys",
    ),
    (
        "langfuse",
        "chat_stream",
        "langfuse.observation.output",
        Diff::Value,
        "the assistant message, as for a JSON answer; the SDK writes a streamed text bare",
    ),
    (
        "langfuse",
        "chat_tool_result",
        "langfuse.observation.input",
        Diff::Value,
        "a message's text parts joined (the context's `content`); the SDK copies the request's content list",
    ),
    (
        "langfuse",
        "chat_json",
        "langfuse.observation.metadata.finish_reason",
        Diff::Extra,
        "written for every answer; the SDK writes it only for streams",
    ),
    (
        "langfuse",
        "chat_tool_result",
        "langfuse.observation.metadata.finish_reason",
        Diff::Extra,
        "written for every answer; the SDK writes it only for streams",
    ),
    (
        "langfuse",
        "chat",
        "gen_ai.*",
        Diff::Extra,
        "the GenAI names of model, operation and usage, which Langfuse's ingestion also reads and other consumers of the same export understand",
    ),
    (
        "langfuse",
        "chat",
        "llm.is_streaming",
        Diff::Extra,
        "whether the call streamed, for consumers of the same export",
    ),
    (
        "langfuse",
        "chat",
        "langfuse.*.id",
        Diff::Extra,
        "the older names of session.id and user.id, which Langfuse's ingestion still reads (self-hosted servers from before SDK 5)",
    ),
    // ---- jaeger: the OTel GenAI conventions, as OTel's google-genai 1.3b0 and Traceloop
    // 0.62 (which writes the conventions' names) write them
    (
        "jaeger*",
        "*",
        "server.port",
        Diff::Extra,
        "the backend's port; the references leave it out for the default port",
    ),
    (
        "jaeger*",
        "*",
        "server.address",
        Diff::Value,
        "the backend's host; the references ran against a local replay",
    ),
    (
        "jaeger*",
        "gemini",
        "gen_ai.provider.name",
        Diff::Value,
        "`gcp.gemini`, the conventions' name since v1.37; OTel's google-genai 1.3b0 still writes `gemini`",
    ),
    (
        "jaeger*",
        "gemini",
        "gen_ai.usage.text.input_tokens",
        Diff::Missing,
        "a modality breakdown celgate does not parse",
    ),
    (
        "jaeger*",
        "gemini",
        "gen_ai.response.time_to_first_chunk",
        Diff::Value,
        "a measurement: 0.18 s for the fixture's 180 ms; capture.py fixes the reference's at 0.01",
    ),
    (
        "jaeger_content",
        "gemini",
        "gen_ai.input.messages",
        Diff::Value,
        "Gemini gives no call ids: celgate writes \"\" (the reference invents `get_weather_0`); tool results are `tool` messages",
    ),
    (
        "jaeger_content",
        "gemini",
        "gen_ai.output.messages",
        Diff::Value,
        "no invented call id",
    ),
    (
        "jaeger_content",
        "gemini",
        "gen_ai.tool.definitions",
        Diff::Value,
        "the declarations as sent; the reference adds `type: function`",
    ),
];

/// A reference file's span.
struct RefSpan {
    name: String,
    kind: String,
    status: String,
    attributes: Map<String, Value>,
    version: String,
}

fn reference(dir: &str, case: &str) -> RefSpan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/e2e/references")
        .join(dir)
        .join(format!("{case}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: Value = serde_json::from_str(&text).unwrap();
    let spans = file["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 1, "{}: one span per call", path.display());
    let span = &spans[0];
    let s = |k: &str| span[k].as_str().unwrap_or_default().to_owned();
    RefSpan {
        name: s("name"),
        kind: s("kind"),
        status: s("status"),
        attributes: span["attributes"].as_object().cloned().unwrap_or_default(),
        version: file["version"].as_str().unwrap_or_default().to_owned(),
    }
}

/// `*` matches any text.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

thread_local! {
    /// Which [`GAPS`] entries explained a difference: each must, or it is stale.
    static USED: std::cell::RefCell<Vec<bool>> = std::cell::RefCell::new(vec![false; GAPS.len()]);
}

fn gap(variant: &str, case: &str, key: &str, diff: Diff) -> bool {
    let found = GAPS.iter().position(|(v, c, k, d, _)| {
        *d == diff && glob(v, variant) && (glob(c, case) || case.starts_with(c)) && glob(k, key)
    });
    if let Some(i) = found {
        USED.with(|u| u.borrow_mut()[i] = true);
    }
    found.is_some()
}

/// JSON text as JSON, objects without their null members.
fn comparable(v: &Value) -> Value {
    fn strip(v: Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
            other => other,
        }
    }
    match v {
        Value::String(s) if s.starts_with(['{', '[']) => {
            serde_json::from_str::<Value>(s).map_or_else(|_| v.clone(), strip)
        }
        Value::Number(n) => n.as_f64().map_or(v.clone(), |f| serde_json::json!(f)),
        _ => v.clone(),
    }
}

fn plan(preset: PresetName, content: bool) -> TracingPlan {
    let extra = if content {
        "    privacy:\n      hideInputs: false\n      hideOutputs: false\n"
    } else {
        ""
    };
    let yaml = format!(
        "config:\n  tracing:\n    preset: {}\n{extra}",
        preset.as_str()
    );
    load(&yaml, &LoadOptions::default()).unwrap().plan
}

/// Every difference between the preset's span and the reference's, not in [`GAPS`].
fn differences(
    variant: &str,
    case: &str,
    ex: &Exchange,
    plan: &TracingPlan,
    r: &RefSpan,
) -> Vec<String> {
    let span = plan.evaluate(ex);
    assert!(
        span.errors.is_empty(),
        "{variant} {case}: {:?}",
        span.errors
    );
    let ours = span_json(&span);
    let attrs = ours["attributes"].as_object().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (what, mine, theirs) in [
        (
            "span.name",
            ours["name"].as_str().unwrap_or_default(),
            r.name.as_str(),
        ),
        (
            "span.kind",
            ours["kind"].as_str().unwrap_or_default(),
            r.kind.as_str(),
        ),
        (
            "span.status",
            ours["status"].as_str().unwrap_or_default(),
            r.status.as_str(),
        ),
    ] {
        if mine != theirs && !gap(variant, case, what, Diff::Span) {
            out.push(format!("{what}: {mine:?}, reference {theirs:?}"));
        }
    }
    for (key, want) in &r.attributes {
        match attrs.get(key) {
            None if !gap(variant, case, key, Diff::Missing) => {
                out.push(format!("missing {key} (reference: {want})"))
            }
            Some(got)
                if comparable(got) != comparable(want) && !gap(variant, case, key, Diff::Value) =>
            {
                out.push(format!("{key}: {got}, reference {want}"))
            }
            _ => {}
        }
    }
    for (key, got) in &attrs {
        if !r.attributes.contains_key(key) && !gap(variant, case, key, Diff::Extra) {
            out.push(format!("extra {key} = {got}"));
        }
    }
    out
}

/// The Chat Completions calls of `tests/e2e/references/calls/`, parsed by the gateway's
/// own chat protocol, with what the proxy adds (as `fixture::protocol_calls` has it).
fn chat_calls() -> Vec<(&'static str, Exchange)> {
    [
        "chat_json",
        "chat_stream",
        "chat_stream_tools",
        "chat_tool_result",
    ]
    .into_iter()
    .map(|case| (case, chat_call(case)))
    .collect()
}

fn chat_call(case: &str) -> Exchange {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/references/calls");
    let read = |name: String| std::fs::read(dir.join(name)).ok();
    let request = read(format!("{case}.request.json")).expect("request");
    let response = read(format!("{case}.response.sse"))
        .or_else(|| read(format!("{case}.response.json")))
        .expect("response");
    let mut ex = build_exchange(&request, Some(&response), "openai").unwrap();
    ex.backend_host = Some("api.openai.com".into());
    ex.backend_port = Some(443);
    ex.session_id = Some("session-42".into());
    ex.user_id = Some("user-7".into());
    ex.time_to_first_token_ms = Some(180.0);
    ex.start_time = Some(fixture::at_noon());
    ex.response.duration_ms = Some(420.0);
    ex.source_address = Some("127.0.0.1:51234".into());
    ex.request.headers.extend([
        ("x-session-id".into(), "session-42".into()),
        ("x-user-id".into(), "user-7".into()),
    ]);
    ex
}

/// Every call compared: chat, then the other protocols.
fn calls() -> Vec<(&'static str, Exchange)> {
    let mut all = chat_calls();
    all.extend(fixture::protocol_calls());
    all
}

/// (preset variant, preset, content on, protocol prefix, reference directory)
const PAIRS: &[(&str, PresetName, bool, &str, &str)] = &[
    (
        "phoenix",
        PresetName::Phoenix,
        false,
        "messages",
        "openinference-anthropic",
    ),
    (
        "phoenix",
        PresetName::Phoenix,
        false,
        "responses",
        "openinference-openai",
    ),
    (
        "phoenix",
        PresetName::Phoenix,
        false,
        "gemini",
        "openinference-google-genai",
    ),
    (
        "openllmetry",
        PresetName::Openllmetry,
        false,
        "messages",
        "traceloop-anthropic",
    ),
    (
        "openllmetry",
        PresetName::Openllmetry,
        false,
        "responses",
        "traceloop-openai",
    ),
    (
        "openllmetry",
        PresetName::Openllmetry,
        false,
        "gemini",
        "traceloop-google-generativeai",
    ),
    (
        "openllmetry",
        PresetName::Openllmetry,
        false,
        "chat",
        "traceloop-openai",
    ),
    (
        "jaeger",
        PresetName::Jaeger,
        false,
        "chat",
        "otel-openai-v2",
    ),
    (
        "jaeger_content",
        PresetName::Jaeger,
        true,
        "chat",
        "otel-openai-v2-content",
    ),
    (
        "langfuse",
        PresetName::Langfuse,
        false,
        "chat",
        "langfuse-openai",
    ),
    (
        "jaeger",
        PresetName::Jaeger,
        false,
        "gemini",
        "otel-google-genai",
    ),
    (
        "jaeger_content",
        PresetName::Jaeger,
        true,
        "gemini",
        "otel-google-genai-content",
    ),
];

#[test]
fn presets_match_their_backends_instrumentation_on_every_protocol() {
    let mut failures = Vec::new();
    for (variant, preset, content, protocol, dir) in PAIRS {
        let plan = plan(*preset, *content);
        for (case, ex) in calls() {
            if !case.starts_with(protocol) {
                continue;
            }
            let r = reference(dir, case);
            for d in differences(variant, case, &ex, &plan, &r) {
                failures.push(format!("{variant} {case} vs {dir} {}: {d}", r.version));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differences not listed in GAPS:\n{}",
        failures.join("\n")
    );
    let stale: Vec<String> = USED.with(|u| {
        u.borrow()
            .iter()
            .zip(GAPS)
            .filter(|(used, _)| !**used)
            .map(|(_, (v, c, k, d, _))| format!("{v} {c} {k} {d:?}"))
            .collect()
    });
    assert!(
        stale.is_empty(),
        "GAPS entries no difference needs:\n{}",
        stale.join("\n")
    );
    for (v, c, k, _, why) in GAPS {
        assert!(!why.is_empty(), "GAPS entry {v} {c} {k} gives no reason");
    }
}

/// Langfuse's OTel ingestion, applied to the langfuse preset's span of each protocol
/// call: a generation with its model, input, output, session and user, and usage
/// details whose parts add up to the call's tokens, each token priced once (the keys
/// its default model prices use for Claude, GPT and Gemini models).
#[test]
fn langfuse_reads_each_protocol_call() {
    let plan = plan(PresetName::Langfuse, false);
    for (case, ex) in calls() {
        let span = plan.evaluate(&ex);
        assert!(span.errors.is_empty(), "{case}: {:?}", span.errors);
        let ours = span_json(&span);
        let a = ours["attributes"].as_object().cloned().unwrap_or_default();
        let text = |k: &str| {
            a.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let json = |k: &str| serde_json::from_str::<Value>(&text(k)).unwrap_or(Value::Null);
        assert_eq!(text("langfuse.observation.type"), "generation", "{case}");
        assert_eq!(
            text("langfuse.observation.model.name"),
            ex.response_model.clone().unwrap(),
            "{case}"
        );
        assert_eq!(text("langfuse.session.id"), "session-42", "{case}");
        assert_eq!(text("langfuse.user.id"), "user-7", "{case}");
        let usage = json("langfuse.observation.usage_details");
        let n = |k: &str| usage[k].as_i64().unwrap_or(0);
        let known = [
            "input",
            "input_cached_tokens",
            "input_cache_creation",
            "output",
            "output_reasoning_tokens",
            "total",
        ];
        for key in usage.as_object().expect("usage details").keys() {
            assert!(
                known.contains(&key.as_str()),
                "{case}: usage key {key} is not priced"
            );
        }
        assert_eq!(
            n("input") + n("input_cached_tokens") + n("input_cache_creation"),
            ex.input_tokens.unwrap(),
            "{case}: input parts {usage}"
        );
        assert_eq!(
            n("output") + n("output_reasoning_tokens"),
            ex.output_tokens.unwrap(),
            "{case}: output parts {usage}"
        );
        assert_eq!(n("total"), ex.total_tokens.unwrap(), "{case}");
        assert_eq!(
            n("input_cached_tokens"),
            ex.token_details.cache_read.unwrap_or(0),
            "{case}"
        );
        assert_eq!(
            n("input_cache_creation"),
            ex.token_details.cache_write.unwrap_or(0),
            "{case}"
        );
        let input = json("langfuse.observation.input");
        // With tools, Langfuse's OpenAI integration's shape: {"tools", "messages"}.
        let messages = if ex.tools.is_empty() {
            input.clone()
        } else {
            assert_eq!(
                input["tools"].as_array().map(Vec::len),
                Some(ex.tools.len()),
                "{case}"
            );
            input["messages"].clone()
        };
        for m in messages.as_array().expect("messages") {
            for (k, v) in m.as_object().expect("a message") {
                let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty);
                assert!(!empty, "{case}: {k} is empty in {m}");
            }
            for call in m["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(call["type"], "function", "{case}: {call}");
                assert!(call["function"]["name"].is_string(), "{case}: {call}");
            }
        }
        let first = &messages[0];
        match ex.system.first() {
            Some(system) if ex.prompt[0].role == "system" => {
                assert_eq!(first["role"], "system", "{case}");
                assert_eq!(first["content"], system.as_str(), "{case}");
            }
            _ => assert_eq!(first["role"], ex.prompt[0].role.as_str(), "{case}"),
        }
        let output = json("langfuse.observation.output");
        assert_eq!(
            output["content"].as_str(),
            ex.choices[0].content.as_deref(),
            "{case}"
        );
        let calls = output["tool_calls"].as_array().map_or(0, Vec::len);
        assert_eq!(calls, ex.choices[0].tool_calls.len(), "{case}");
        let params = json("langfuse.observation.model.parameters");
        for (k, v) in params.as_object().into_iter().flatten() {
            assert!(
                !v.is_object() && !v.is_array() && !v.is_null(),
                "{case}: {k} = {v}"
            );
        }
        if ex.streaming {
            assert_eq!(
                text("langfuse.observation.completion_start_time"),
                "\"2026-12-01T12:00:00.180000Z\"",
                "{case}"
            );
        }
    }
}

/// Langfuse takes a trace's input and output from its root span: a child span (the
/// client sent a traceparent) names them for the trace; a root span leaves them to
/// the observation's.
#[test]
fn langfuse_sets_the_trace_input_and_output_only_on_child_spans() {
    let plan = plan(PresetName::Langfuse, false);
    for (case, mut ex) in calls() {
        let trace_keys = |ex: &Exchange| {
            let span = span_json(&plan.evaluate(ex));
            let a = span["attributes"].as_object().cloned().unwrap_or_default();
            a.into_iter()
                .filter(|(k, _)| k.starts_with("langfuse.trace."))
                .collect::<Map<String, Value>>()
        };
        assert!(trace_keys(&ex).is_empty(), "{case}: a root span");
        ex.has_parent = true;
        let t = trace_keys(&ex);
        let json = |k: &str| serde_json::from_str::<Value>(t[k].as_str().unwrap()).unwrap();
        assert_eq!(
            t["langfuse.trace.name"],
            format!(
                "{} {}",
                ex.operation.as_str(),
                ex.request_model.clone().unwrap()
            ),
            "{case}"
        );
        let input = json("langfuse.trace.input");
        assert_eq!(
            input.as_array().map(Vec::len),
            Some(ex.prompt.len()),
            "{case}"
        );
        assert!(input[0].get("tool_call_id").is_none(), "{case}: {input}");
        let output = json("langfuse.trace.output");
        assert_eq!(output["role"], "assistant", "{case}");
        assert_eq!(
            output["content"].as_str(),
            ex.choices[0].content.as_deref(),
            "{case}"
        );
    }
}

/// Langfuse prices a generation per usage type: `cost_details` keys must be usage
/// keys (or `total`), each usage key with tokens must have its cost, and the parts
/// must add up to the total, or Langfuse shows a cost that its own breakdown
/// contradicts. With `pricing: default`, on every protocol call.
#[test]
fn langfuse_cost_details_price_each_usage_key_and_add_up() {
    let yaml = "config:\n  tracing:\n    preset: langfuse\npricing: default\n";
    let plan = load(yaml, &LoadOptions::default()).unwrap().plan;
    let mut priced = 0;
    for (case, ex) in calls() {
        let span = plan.evaluate(&ex);
        assert!(span.errors.is_empty(), "{case}: {:?}", span.errors);
        let ours = span_json(&span);
        let a = &ours["attributes"];
        let parse = |k: &str| {
            a[k].as_str().map(|t| {
                serde_json::from_str::<Value>(t).unwrap_or_else(|e| panic!("{case}: {k}: {e}"))
            })
        };
        let Some(cost) = parse("langfuse.observation.cost_details") else {
            continue;
        };
        priced += 1;
        let usage = parse("langfuse.observation.usage_details").expect("usage with cost");
        let cost = cost.as_object().expect("cost details are an object");
        let usage = usage.as_object().expect("usage details are an object");
        let mut parts = 0.0;
        for (k, v) in cost {
            let v = v
                .as_f64()
                .unwrap_or_else(|| panic!("{case}: cost {k} = {v}"));
            assert!(v >= 0.0, "{case}: cost {k} = {v}");
            if k != "total" {
                assert!(
                    usage.contains_key(k),
                    "{case}: cost key {k} is no usage key {usage:?}"
                );
                parts += v;
            }
        }
        for (k, n) in usage {
            if k != "total" && n.as_i64().unwrap_or(0) > 0 {
                assert!(
                    cost.contains_key(k),
                    "{case}: usage {k} has tokens but no cost {cost:?}"
                );
            }
        }
        let total = cost["total"].as_f64().expect("a total");
        assert!(total > 0.0, "{case}");
        assert!(
            (parts - total).abs() <= total * 1e-9,
            "{case}: parts {parts} vs total {total}"
        );
    }
    assert!(
        priced > 0,
        "no call was priced: the default pricing no longer covers the calls' models"
    );
}
