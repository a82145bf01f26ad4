//! `celgate demo`: see celgate's spans with nothing installed but cargo.
//!
//! Starts the scripted upstream, writes a config (the chosen preset, spans printed
//! to the console, one backend per provider) and runs the real gateway on it;
//! sends a plain, a streamed and a tool-calling chat completion, an Anthropic
//! Messages call, an OpenAI Responses call and a streamed Gemini call through it so
//! their spans print; then keeps serving so the user can `curl` it and edit the
//! config file to see a change applied live.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use celgate_engine::PresetName;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use celgate_upstream::ScriptedUpstream;

/// Runs the demo until SIGTERM/SIGINT.
pub fn run(preset: PresetName, listen: SocketAddr, dir: Option<PathBuf>) -> Result<i32> {
    crate::upstream::install_crypto_provider();
    crate::server::init_logging();
    crate::server::runtime()?.block_on(demo(preset, listen, dir))
}

fn config_text(preset: PresetName, listen: SocketAddr, upstream: &str) -> String {
    format!(
        "# Written by `celgate demo`. Edit and save: the running gateway applies it.
# Try adding an attribute under fields.add, e.g.
#   demo.prompt_messages: 'size(llm.prompt)'
listen: {listen}
admin: 127.0.0.1:0
server:
  accessLog:
    format: off        # the spans below say it all; try `text` or `json`
config:
  tracing:
    preset: {preset}
    otlpEndpoint: stdout  # a collector URL instead, e.g. http://localhost:4317
    privacy:
      hideInputs: false   # the jaeger preset hides content unless asked
      hideOutputs: false
    fields:
      add:
        demo.edited: '\"not yet\"'
backends:
  - name: scripted
    provider: openai
    baseUrl: {upstream}/v1
    models: [\"gpt-*\"]
  - name: scripted-anthropic
    provider: anthropic
    baseUrl: {upstream}/v1
    models: [\"claude-*\"]
  - name: scripted-gemini
    provider: gemini
    baseUrl: {upstream}/v1beta
    models: [\"gemini-*\"]
",
        preset = preset.as_str()
    )
}

/// One call the demo sends: what it is, its path under the gateway, its body.
type DemoCall = (&'static str, &'static str, serde_json::Value);

/// The demo's calls: chat three ways, then one call per other protocol.
fn calls() -> Vec<DemoCall> {
    let weather = serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}});
    vec![
        (
            "a chat completion",
            "/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is CEL?"}]}),
        ),
        (
            "a streamed chat completion",
            "/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o-mini", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Stream me a sentence."}]}),
        ),
        (
            "a streamed call with two tool calls",
            "/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [
                    {"type": "function", "function": {"name": "get_weather", "parameters": weather}},
                    {"type": "function", "function": {"name": "get_time", "parameters": weather}}],
                "messages": [{"role": "user", "content": "Weather and time in Paris?"}]}),
        ),
        (
            "a streamed Anthropic Messages call with thinking and a tool call",
            "/v1/messages",
            serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
                "system": [{"type": "text", "text": "You are terse."}],
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "tools": [{"name": "get_weather", "input_schema": weather}],
                "messages": [{"role": "user", "content": "call get_weather {\"city\": \"Paris\"}"}]}),
        ),
        (
            "an OpenAI Responses call",
            "/v1/responses",
            serde_json::json!({"model": "gpt-4.1", "instructions": "You are terse.",
                "input": "What is a span?"}),
        ),
        (
            "a streamed Gemini call",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            serde_json::json!({"systemInstruction": {"parts": [{"text": "You are terse."}]},
                "contents": [{"role": "user", "parts": [{"text": "What is OTLP?"}]}]}),
        ),
    ]
}

async fn demo(preset: PresetName, listen: SocketAddr, dir: Option<PathBuf>) -> Result<i32> {
    let upstream = ScriptedUpstream::start_unrecorded(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot start the scripted upstream")?;
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("celgate-demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("config.yaml");
    let origin = upstream.base_url().trim_end_matches("/v1").to_owned();
    std::fs::write(&config, config_text(preset, listen, &origin))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let first = crate::load::load_generation(&config, 1).map_err(|e| anyhow::anyhow!("{e}"))?;

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(crate::server::serve(
        config.clone(),
        first,
        crate::server::signals::shutdown_signal(),
        Some(ready_tx),
    ));
    let (proxy, admin) = match ready_rx.await {
        Ok(addrs) => addrs,
        Err(_) => return server.await.context("the gateway stopped")?,
    };
    let gateway = format!("http://{proxy}");
    let base = format!("{gateway}/v1");
    println!(
        "\ncelgate demo: preset {}, gateway at {base}, scripted upstream at {}\n",
        preset.as_str(),
        upstream.base_url()
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for (what, path, body) in calls() {
        println!("→ sending {what} (POST {gateway}{path})");
        let req = http::Request::post(format!("{gateway}{path}"))
            .header("content-type", "application/json")
            .header("x-session-id", "demo-session")
            .body(Full::new(Bytes::from(body.to_string())))
            .context("building a demo request")?;
        match client.request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                println!("← {status}, {} bytes", bytes.len());
            }
            Err(e) => println!("← failed: {e}"),
        }
        // Let the console exporter print this call's span before the next one.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    println!(
        "\nStill serving. Try:\n\n  curl -s {base}/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"gpt-4o\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n\n\
         Then edit {} (change `demo.edited`, add a field, switch the preset), save,\n\
         and curl again: the next span shows the change. Effective config: http://{admin}/config\n\
         Ctrl-C to stop.\n",
        config.display()
    );
    let code = server.await.context("the gateway task failed")??;
    drop(upstream);
    Ok(code)
}
