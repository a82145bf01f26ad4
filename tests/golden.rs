//! Golden spans: every preset on every recorded exchange, exact attribute names and
//! values: chat, completions and embeddings parsed from `tests/fixtures/exchanges/`,
//! and the Anthropic Messages, OpenAI Responses and Gemini calls of
//! `celgate_engine::fixture::protocol_calls` (JSON, streamed tool calls, thinking or
//! reasoning, cache tokens). Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff like code.
//!
//! Also: the privacy switches keep every prompt/completion text out of every
//! attribute of every preset, and [`reference_spans`] compares each preset's span of
//! a protocol call with the span its backend's own instrumentation wrote for it.

#[path = "reference_spans.rs"]
mod reference_spans;

use celgate::cli::{build_exchange, span_json};
use celgate_engine::exchange::Exchange;
use celgate_engine::fixture;
use celgate_engine::{AttrValue, LoadOptions, PresetName, load};
use std::path::{Path, PathBuf};

/// (name, request fixture, response fixture)
const EXCHANGES: &[(&str, &str, Option<&str>)] = &[
    ("chat", "chat_request.json", Some("chat_response.json")),
    (
        "chat_stream",
        "chat_stream_request.json",
        Some("chat_stream.sse"),
    ),
    (
        "tools_stream",
        "tools_request.json",
        Some("tools_stream.sse"),
    ),
    (
        "tools_followup",
        "tools_followup_request.json",
        Some("chat_response.json"),
    ),
    (
        "completions",
        "completions_request.json",
        Some("completions_response.json"),
    ),
    (
        "embeddings",
        "embeddings_request.json",
        Some("embeddings_response.json"),
    ),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn exchange(req: &str, resp: Option<&str>) -> Exchange {
    let dir = repo().join("tests/fixtures/exchanges");
    let req = std::fs::read(dir.join(req)).unwrap();
    let resp = resp.map(|r| std::fs::read(dir.join(r)).unwrap());
    let mut ex = build_exchange(&req, resp.as_deref(), "openai").unwrap();
    // What the gateway would add: backend address and timing.
    ex.backend_host = Some("api.openai.com".into());
    ex.backend_port = Some(443);
    ex.request
        .headers
        .push(("x-session-id".into(), "session-42".into()));
    ex
}

/// Every exchange of the golden set, by name.
fn all_exchanges() -> Vec<(String, Exchange)> {
    let parsed = EXCHANGES
        .iter()
        .map(|(name, req, resp)| (name.to_string(), exchange(req, *resp)));
    let protocols = fixture::protocol_calls()
        .into_iter()
        .map(|(name, ex)| (name.to_owned(), ex));
    parsed.chain(protocols).collect()
}

fn preset_yaml(p: PresetName, extra: &str) -> String {
    format!("config:\n  tracing:\n    preset: {}\n{extra}", p.as_str())
}

#[test]
fn presets_match_golden_spans() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for preset in PresetName::ALL {
        // Jaeger is checked with content enabled too, since that is opt-in.
        let variants: &[(&str, &str)] = if preset == PresetName::Jaeger {
            &[
                ("", ""),
                (
                    "_content",
                    "    privacy:\n      hideInputs: false\n      hideOutputs: false\n",
                ),
            ]
        } else {
            &[("", "")]
        };
        for (suffix, extra) in variants {
            let plan = load(&preset_yaml(preset, extra), &LoadOptions::default())
                .unwrap()
                .plan;
            for (name, ex) in all_exchanges() {
                let span = plan.evaluate(&ex);
                assert!(
                    span.errors.is_empty(),
                    "{preset:?} {name}: {:?}",
                    span.errors
                );
                let got = span_json(&span);
                let path = repo().join(format!(
                    "tests/golden/{}{suffix}/{name}.json",
                    preset.as_str()
                ));
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    let mut text = serde_json::to_string_pretty(&got).unwrap();
                    text.push('\n');
                    std::fs::write(&path, text).unwrap();
                    continue;
                }
                let want: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                )
                .unwrap();
                if got != want {
                    mismatches.push(format!(
                        "{}:\n{}",
                        path.display(),
                        serde_json::to_string_pretty(&got).unwrap()
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "spans differ from the golden files (UPDATE_GOLDEN=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

/// Every text a hidden side must not leak: message contents and tool arguments.
fn texts(ex: &Exchange, inputs: bool) -> Vec<String> {
    let mut out = Vec::new();
    if inputs {
        for m in &ex.prompt {
            out.extend(m.content.clone());
            out.extend(m.tool_calls.iter().map(|t| t.arguments.clone()));
        }
    } else {
        for c in &ex.choices {
            out.extend(c.content.clone());
            out.extend(c.reasoning.clone());
            out.extend(c.tool_calls.iter().map(|t| t.arguments.clone()));
        }
    }
    out.retain(|t| t.len() >= 4);
    out
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::String(s) => s.clone(),
        other => other.to_json().to_string(),
    }
}

#[test]
fn hidden_inputs_and_outputs_never_reach_an_attribute() {
    for preset in PresetName::ALL {
        for (hide_inputs, field) in [(true, "hideInputs"), (false, "hideOutputs")] {
            let extra = format!("    privacy:\n      {field}: true\n");
            let plan = load(&preset_yaml(preset, &extra), &LoadOptions::default())
                .unwrap()
                .plan;
            for (name, ex) in all_exchanges() {
                let secrets = texts(&ex, hide_inputs);
                let span = plan.evaluate(&ex);
                for (key, value) in &span.attributes {
                    // A Responses answer echoes the request's `instructions`: with
                    // inputs hidden, the raw answer still holds them (the protocol
                    // layer's to redact, not a preset's).
                    if hide_inputs && key == "output.value" && name.starts_with("responses") {
                        continue;
                    }
                    let text = attr_text(value);
                    for s in &secrets {
                        assert!(
                            !text.contains(s.as_str()),
                            "{preset:?}/{name} {field}: `{key}` leaks {s:?}"
                        );
                    }
                }
                // Token counts stay.
                let has_tokens = span.attributes.iter().any(|(k, v)| {
                    k.contains("token") && matches!(v, AttrValue::Int(_))
                        || k.contains("usage")
                            && matches!(v, AttrValue::Int(_) | AttrValue::String(_))
                });
                assert!(has_tokens, "{preset:?}/{name} {field}: token counts gone");
            }
        }
    }
}

#[test]
fn phoenix_redacts_input_value_and_env_switch_works() {
    let opts = LoadOptions {
        hide_inputs: Some(true),
        hide_outputs: None,
        ..LoadOptions::default()
    };
    let plan = load(&preset_yaml(PresetName::Phoenix, ""), &opts)
        .unwrap()
        .plan;
    let span = plan.evaluate(&exchange("chat_request.json", Some("chat_response.json")));
    let get = |k: &str| {
        span.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("input.value"),
        Some(AttrValue::String("__REDACTED__".into()))
    );
    assert!(
        get("output.value")
            .is_some_and(|v| attr_text(&v).contains("Lisbon") || attr_text(&v).contains("May"))
    );
    assert_eq!(
        get("llm.model_name"),
        Some(AttrValue::String("gpt-4o-mini-2024-07-18".into()))
    );
    assert_eq!(get("llm.token_count.prompt"), Some(AttrValue::Int(42)));
}

#[test]
fn jaeger_shows_content_only_when_enabled() {
    let ex = exchange("chat_request.json", Some("chat_response.json"));
    let hidden = load(
        &preset_yaml(PresetName::Jaeger, ""),
        &LoadOptions::default(),
    )
    .unwrap()
    .plan
    .evaluate(&ex);
    assert!(
        !hidden
            .attributes
            .iter()
            .any(|(k, _)| k.starts_with("gen_ai.input"))
    );
    let shown = load(
        &preset_yaml(
            PresetName::Jaeger,
            "    privacy:\n      hideInputs: false\n      hideOutputs: false\n",
        ),
        &LoadOptions::default(),
    )
    .unwrap()
    .plan
    .evaluate(&ex);
    let input = shown
        .attributes
        .iter()
        .find(|(k, _)| k == "gen_ai.input.messages")
        .map(|(_, v)| attr_text(v))
        .unwrap();
    let messages: serde_json::Value = serde_json::from_str(&input).unwrap();
    // The system message is gen_ai.system_instructions, not an input message.
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(
        messages[0]["parts"][0],
        serde_json::json!({"type": "text", "content": "What is the capital of Portugal?"})
    );
    let system = shown
        .attributes
        .iter()
        .find(|(k, _)| k == "gen_ai.system_instructions")
        .map(|(_, v)| attr_text(v))
        .unwrap();
    assert!(system.contains(r#""type":"text""#), "{system}");
}
