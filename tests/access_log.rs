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
