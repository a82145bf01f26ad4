//! `celgate demo`: see celgate's spans with nothing installed but cargo.
//!
//! Starts the scripted upstream, writes a config (the chosen preset, spans printed
//! to the console) and runs the real gateway on it; sends a plain, a streamed and
//! a tool-calling chat completion through it so their spans print; then keeps
//! serving so the user can `curl` it and edit the config file to see a change
//! applied live.

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
    baseUrl: {upstream}
",
        preset = preset.as_str()
    )
}

async fn demo(preset: PresetName, listen: SocketAddr, dir: Option<PathBuf>) -> Result<i32> {
    let upstream = ScriptedUpstream::start_unrecorded(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot start the scripted upstream")?;
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("celgate-demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("config.yaml");
    std::fs::write(&config, config_text(preset, listen, &upstream.base_url()))
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
    let base = format!("http://{proxy}/v1");
    println!(
        "\ncelgate demo: preset {}, gateway at {base}, scripted upstream at {}\n",
        preset.as_str(),
        upstream.base_url()
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let calls = [
        (
            "a chat completion",
            serde_json::json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is CEL?"}]}),
        ),
        (
            "a streamed chat completion",
            serde_json::json!({"model": "gpt-4o-mini", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Stream me a sentence."}]}),
        ),
        (
            "a streamed call with two tool calls",
            serde_json::json!({"model": "gpt-4o", "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [
                    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "messages": [{"role": "user", "content": "Weather and time in Paris?"}]}),
        ),
    ];
    for (what, body) in calls {
        println!("→ sending {what} (POST {base}/chat/completions)");
        let req = http::Request::post(format!("{base}/chat/completions"))
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
