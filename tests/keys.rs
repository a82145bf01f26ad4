//! Keys stay secret: the client's key never reaches the upstream, a span, a log line
//! or the admin page, and only the backend's key goes upstream; a key read from a
//! Secret is sent without its trailing newline.

#[path = "support/mod.rs"]
mod support;

use serde_json::{Value, json};
use support::calls::{post, post_stream, runtime};
use support::otlp::Receiver;
use support::{
    BACKEND_KEY, BACKEND_KEY_ENV, Gateway, SPAN_TIMEOUT, Upstream, chat_body,
    config_without_endpoint, streamed,
};

/// The key a client sends on its own behalf; it must never go upstream or anywhere else.
const CLIENT_KEY: &str = "sk-client-4f1d9c2e7b";

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
