//! The access log (text and JSON) names the exported span: its trace and span ids,
//! the backend, the status and the token counts.

#[path = "support/mod.rs"]
mod support;

use serde_json::{Map, Value, json};
use support::calls::{post_stream, runtime};
use support::otlp::Receiver;
use support::{Gateway, Parent, SPAN_TIMEOUT, Upstream, chat_body, span_of, streamed};

/// The text `key=value` fields of an access-log line.
fn access_fields(line: &str) -> Map<String, Value> {
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect()
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
// An unread stdout does not stall the proxy
// ---------------------------------------------------------------------------------------

/// A stdout nobody reads (a stalled log shipper, a full pipe) must not stall the
/// proxy: the access log is written by a thread of its own, and lines it cannot
/// write are dropped and counted instead. Before, each line was written on the
/// proxy worker: once the pipe's buffer (64 KiB, ~180 lines) was full, every
/// response hung at its end.
#[test]
fn an_unread_stdout_does_not_stall_the_proxy() {
    use std::io::BufRead as _;
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nbackends:\n  - {{name: scripted, provider: openai, baseUrl: '{}', apiKey: {{env: {}}}}}\n",
            upstream.base_url(),
            support::BACKEND_KEY_ENV
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_celgate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env(support::BACKEND_KEY_ENV, support::BACKEND_KEY)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn celgate");
    // Held open and never read.
    let _stdout = child.stdout.take();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (found, addr) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(addr) = support::parse_listening(&line, "proxy") {
                let _ = found.send(addr);
            }
        }
    });
    let addr = addr
        .recv_timeout(support::READY_TIMEOUT)
        .expect("proxy listening");
    let proxy = format!("http://{addr}/v1/chat/completions");
    // ~400 bytes a line: 600 lines are several times the pipe's buffer.
    let requests = async {
        for i in 0..600 {
            let reply = support::post_json(&proxy, &chat_body("gpt-4o-mini", "Hi"), &[]).await;
            assert_eq!(reply.status, 200, "request {i}");
        }
    };
    let served = runtime().block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(120), requests).await
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(served.is_ok(), "the proxy stalled on a stdout nobody reads");
}
