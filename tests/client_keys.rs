//! Client keys (`auth.clientKeys`) with the real binary: only a client listed in the
//! keys file may spend the backend's key.
//!
//! - a listed key, in `Authorization: Bearer` or an SDK's own key header, is let
//!   through; the upstream gets the backend's key and never the client's;
//! - a wrong key or none gets OpenAI's 401 (`WWW-Authenticate: Bearer`) before
//!   anything reaches the upstream, `/v1/models` and pass-through paths included,
//!   with an `unauthenticated` span and access-log line;
//! - the client's name reaches CEL (`client.*`), the access log, the requests metric
//!   and `/config` (names and count only); its key and hash reach none of them;
//! - a keys file that cannot be used refuses the start; at reload it keeps the old
//!   keys and reports the error without quoting the file;
//! - the keys file, mounted as the kubelet mounts a Secret (its own directory, a
//!   `..data` symlink swap), reloads under load without failing a request.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use support::otlp::Receiver;
use support::{BACKEND_KEY, Gateway, Parent, Reply, Upstream, chat_body, span_of};

const CI_KEY: &str = "sk-celgate-ci-3f9a1c0d5e7b2468";
const APP_KEY: &str = "sk-celgate-app-8b2e4d6f0a1c3579";
const WRONG_KEY: &str = "sk-celgate-wrong-0000111122223333";

/// The SHA-256 of `key` in hex, as `printf %s "$KEY" | sha256sum` prints it.
fn sha256(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A keys file listing `clients` as `(name, key)`; the first has a team and a tenant.
fn keys_file(clients: &[(&str, &str)]) -> String {
    let mut text = String::from("clients:\n");
    for (i, (name, key)) in clients.iter().enumerate() {
        text.push_str(&format!("  - name: {name}\n    sha256: {}\n", sha256(key)));
        if i == 0 {
            text.push_str("    team: ml\n    metadata:\n      tenant: acme\n");
        }
    }
    text
}

/// A config with client keys read from `keys` and the client in span attributes.
fn config(upstream: &str, receiver: &str, keys: &Path) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
auth:
  clientKeys:
    file: {}
config:
  tracing:
    preset: jaeger
    otlpEndpoint: {receiver}
    randomSampling: true
    fields:
      add:
        test.client: client.name
        test.team: client.team
        test.tenant: default(client.metadata.tenant, \"none\")
backends:
  - name: scripted
    baseUrl: {upstream}
    apiKey: {{env: {}}}
",
        keys.display(),
        support::BACKEND_KEY_ENV
    )
}

/// A directory mounted the way the kubelet mounts a Secret, holding `clients.yaml`.
fn secret_dir(contents: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create the secret directory");
    support::kubelet_write(dir.path(), "clients.yaml", contents, 1);
    dir
}

async fn chat(gw: &Gateway, headers: &[(&str, &str)]) -> Reply {
    let url = format!("{}/chat/completions", gw.base_url());
    support::post_json(&url, &chat_body("gpt-4o", "hi"), headers).await
}

/// OpenAI's answer to a bad key: 401, `invalid_request_error`, `code` as given
/// (`invalid_api_key`, or null for a missing key), and a Bearer challenge.
fn assert_unauthenticated(reply: &Reply, code: Value) {
    assert_eq!(reply.status, 401, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("API key")),
        "{body}"
    );
    let challenge = reply
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap());
    assert!(
        challenge.is_some_and(|c| c.starts_with("Bearer")),
        "{challenge:?}"
    );
    for key in [CI_KEY, APP_KEY, WRONG_KEY] {
        assert!(!reply.text().contains(key), "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_keys_pass_and_only_the_backend_key_goes_upstream() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let secret = secret_dir(&keys_file(&[("ci", CI_KEY), ("app", APP_KEY)]));
    let keys = secret.path().join("clients.yaml");
    let gw = Gateway::builder(&config(&upstream.base_url(), &receiver.endpoint(), &keys)).start();

    let bearer = format!("Bearer {CI_KEY}");
    let ways: [(&str, &str, &str); 5] = [
        ("authorization", &bearer, "ci"),
        ("x-api-key", APP_KEY, "app"),
        ("api-key", CI_KEY, "ci"),
        ("x-goog-api-key", APP_KEY, "app"),
        (
            "authorization",
            "bearer sk-celgate-ci-3f9a1c0d5e7b2468",
            "ci",
        ),
    ];
    for (i, (header, value, client)) in ways.iter().enumerate() {
        let parent = Parent::new();
        let tp = parent.traceparent(true);
        let r = chat(&gw, &[(header, value), ("traceparent", &tp)]).await;
        assert_eq!(r.status, 200, "{header}: {}", r.text());
        let sent = upstream.wait_for_requests(i + 1, Duration::from_secs(5));
        let request = &sent[i];
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {BACKEND_KEY}").as_str()),
            "{request:?}"
        );
        for name in ["x-api-key", "api-key", "x-goog-api-key"] {
            assert_eq!(request.header(name), None, "{name} went upstream");
        }
        for (name, value) in &request.headers {
            assert!(
                !value.contains(CI_KEY) && !value.contains(APP_KEY),
                "the client's key went upstream in {name}"
            );
        }
        let span = span_of(&receiver, &parent.trace_id, header, &gw);
        support::assert_ok_span(&span);
        assert_eq!(span.str_attr("test.client"), Some(*client), "{span:#?}");
        // Only `ci` has a team and a tenant in the keys file.
        let (team, tenant) = if *client == "ci" {
            (Some("ml"), "acme")
        } else {
            (None, "none")
        };
        assert_eq!(span.str_attr("test.team"), team, "{span:#?}");
        assert_eq!(span.str_attr("test.tenant"), Some(tenant), "{span:#?}");
        let line = gw
            .wait_for_stdout(&parent.trace_id, Duration::from_secs(5))
            .expect("an access-log line");
        assert!(line.contains(&format!(" client={client} ")), "{line}");
    }

    let admin = gw.admin_url();
    let metrics = support::get(&format!("{admin}/metrics")).await.text();
    let series = "celgate_requests_total{route=\"/v1/chat/completions\",backend=\"scripted\",status=\"200\",client=\"ci\"}";
    assert_eq!(support::metric(&metrics, series), Some(3.0), "{metrics}");

    let config = support::get(&format!("{admin}/config")).await;
    let auth = &config.json()["auth"]["clientKeys"];
    assert_eq!(auth["clients"], 2, "{auth}");
    assert_eq!(auth["keys"], 2, "{auth}");
    assert_eq!(auth["names"], json!(["ci", "app"]), "{auth}");
    assert_eq!(auth["file"], keys.display().to_string(), "{auth}");

    // Neither a key nor its hash anywhere celgate writes.
    let everything = [
        config.text(),
        metrics,
        gw.stdout(),
        gw.stderr(),
        format!("{:?}", receiver.spans()),
    ];
    for text in &everything {
        for secret in [CI_KEY, APP_KEY, &sha256(CI_KEY), &sha256(APP_KEY)] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_or_none_is_refused_before_the_upstream() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let secret = secret_dir(&keys_file(&[("ci", CI_KEY)]));
    let keys = secret.path().join("clients.yaml");
    let gw = Gateway::builder(&config(&upstream.base_url(), &receiver.endpoint(), &keys)).start();

    let wrong = format!("Bearer {WRONG_KEY}");
    let cases: [(&[(&str, &str)], Value); 5] = [
        (&[("authorization", &wrong)], json!("invalid_api_key")),
        (&[("x-api-key", WRONG_KEY)], json!("invalid_api_key")),
        (&[], Value::Null),
        (&[("authorization", "Bearer ")], Value::Null),
        // A listed key in a scheme the gateway does not read is no key.
        (&[("authorization", "Basic c2stY2VsZ2F0ZQ==")], Value::Null),
    ];
    for (headers, code) in &cases {
        let parent = Parent::new();
        let tp = parent.traceparent(true);
        let mut headers = headers.to_vec();
        headers.push(("traceparent", &tp));
        let r = chat(&gw, &headers).await;
        assert_unauthenticated(&r, code.clone());
        let span = span_of(&receiver, &parent.trace_id, "refused", &gw);
        support::assert_error_span(&span, "unauthenticated");
        assert_eq!(span.attr("test.client"), None, "{span:#?}");
        assert_eq!(span.str_attr("test.tenant"), Some("none"));
        let line = gw
            .wait_for_stdout(&parent.trace_id, Duration::from_secs(5))
            .expect("an access-log line");
        assert!(
            line.contains("http.status=401") && line.contains("error=unauthenticated"),
            "{line}"
        );
        assert!(!line.contains(" client="), "{line}");
    }

    // `/v1/models` and pass-through paths want a key too; the body is never read.
    let base = gw.base_url();
    let models = support::get(&format!("{base}/models")).await;
    assert_unauthenticated(&models, Value::Null);
    let files = support::send(Method::GET, &format!("{base}/files"), "", &[]).await;
    assert_unauthenticated(&files, Value::Null);
    let bearer = format!("Bearer {CI_KEY}");
    let listed = support::send(
        Method::GET,
        &format!("{base}/models"),
        "",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["object"], "list");

    assert_eq!(
        upstream.requests().len(),
        0,
        "a refused request reached the upstream"
    );
    let metrics = support::get(&format!("{}/metrics", gw.admin_url()))
        .await
        .text();
    let series = "celgate_requests_total{route=\"/v1/chat/completions\",backend=\"\",status=\"401\",client=\"\"}";
    assert_eq!(support::metric(&metrics, series), Some(5.0), "{metrics}");
    for text in [gw.stdout(), gw.stderr(), format!("{:?}", receiver.spans())] {
        assert!(
            !text.contains(WRONG_KEY) && !text.contains(CI_KEY),
            "{text}"
        );
    }
}

#[test]
fn a_keys_file_that_cannot_be_used_refuses_the_start() {
    let upstream = Upstream::start();
    let raw = "sk-celgate-pasted-instead-of-its-hash";
    let bad = [
        // The key itself where its hash belongs.
        format!("clients:\n  - name: ci\n    sha256: {raw}\n"),
        // Under a key of its own.
        format!("clients:\n  - name: ci\n    key: {raw}\n"),
        format!("{raw}\n"),
        String::new(),
    ];
    for text in &bad {
        let secret = secret_dir(text);
        let keys = secret.path().join("clients.yaml");
        let yaml = config(&upstream.base_url(), "http://127.0.0.1:1", &keys);
        let e = Gateway::builder(&yaml)
            .try_start()
            .expect_err("a broken keys file must refuse the start");
        assert_eq!(e.status.and_then(|s| s.code()), Some(1), "{e}");
        assert!(e.stderr.contains("auth.clientKeys"), "{e}");
        assert!(e.stderr.contains("clients.yaml:"), "{e}");
        assert!(!e.stderr.contains(raw) && !e.stdout.contains(raw), "{e}");
    }

    // No file at all.
    let yaml = config(
        &upstream.base_url(),
        "http://127.0.0.1:1",
        Path::new("absent.yaml"),
    );
    let e = Gateway::builder(&yaml)
        .try_start()
        .expect_err("no keys file");
    assert!(e.stderr.contains("cannot read the client keys file"), "{e}");

    // A backend that forwards the client's own key would defeat client keys.
    let secret = secret_dir(&keys_file(&[("ci", CI_KEY)]));
    let yaml = config(
        &upstream.base_url(),
        "http://127.0.0.1:1",
        &secret.path().join("clients.yaml"),
    )
    .replace("    apiKey:", "    authPassthrough: true\n    apiKey:");
    let e = Gateway::builder(&yaml)
        .try_start()
        .expect_err("passthrough");
    assert!(
        e.stderr
            .contains("authPassthrough cannot be combined with auth.clientKeys"),
        "{e}"
    );
}

async fn generation(admin: &str) -> Value {
    support::get(&format!("{admin}/config")).await.json()
}

/// Polls `/config` until generation `want` is in service.
async fn wait_generation(gw: &Gateway, want: u64) {
    let admin = gw.admin_url();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let g = generation(&admin).await["generation"].as_u64().unwrap();
        if g == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generation {want} not live (still {g}):\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_keys_file_reloads_under_load_like_a_secret() {
    const KEEP: &str = "sk-celgate-keep-5a5a5a5a5a5a";
    const OLD: &str = "sk-celgate-old-6b6b6b6b6b6b";
    const NEW: &str = "sk-celgate-new-7c7c7c7c7c7c";
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let secret = secret_dir(&keys_file(&[("keep", KEEP), ("old", OLD)]));
    let keys = secret.path().join("clients.yaml");
    let gw = Gateway::builder(&config(&upstream.base_url(), &receiver.endpoint(), &keys)).start();
    let bearer = |key: &str| format!("Bearer {key}");
    assert_eq!(
        chat(&gw, &[("authorization", &bearer(OLD))]).await.status,
        200
    );
    assert_eq!(
        chat(&gw, &[("authorization", &bearer(NEW))]).await.status,
        401
    );

    // Clients on the key both versions list send continuously, plain and streamed.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let url = format!("{}/chat/completions", gw.base_url());
    let mut clients = Vec::new();
    for c in 0..3u64 {
        let (stop, sent, failures, url) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failures),
            url.clone(),
        );
        clients.push(tokio::spawn(async move {
            let auth = format!("Bearer {KEEP}");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = chat_body("gpt-4o", &format!("client {c} call {i}"));
                let failure = if (i + c).is_multiple_of(3) {
                    let body = support::streamed(body);
                    let r = support::stream(
                        Method::POST,
                        &url,
                        body.to_string(),
                        &[("authorization", &auth)],
                    )
                    .await;
                    let done = r.events().last().is_some_and(|e| e == "[DONE]");
                    (r.status != 200 || r.error.is_some() || !done)
                        .then(|| format!("stream: {} {:?}", r.status, r.error))
                } else {
                    let r = support::post_json(&url, &body, &[("authorization", &auth)]).await;
                    (r.status != 200).then(|| format!("plain: {} {}", r.status, r.text()))
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if let Some(f) = failure {
                    failures.lock().unwrap().push(f);
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    support::kubelet_write(
        secret.path(),
        "clients.yaml",
        &keys_file(&[("keep", KEEP), ("new", NEW)]),
        2,
    );
    wait_generation(&gw, 2).await;
    assert_eq!(
        chat(&gw, &[("authorization", &bearer(NEW))]).await.status,
        200
    );
    assert_unauthenticated(
        &chat(&gw, &[("x-api-key", OLD)]).await,
        json!("invalid_api_key"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A broken version (a raw key pasted where its hash belongs) keeps the keys of
    // generation 2, and the error names the place, not the value.
    let pasted = "sk-celgate-pasted-8d8d8d8d8d8d";
    let broken = format!(
        "{}  - name: pasted\n    sha256: {pasted}\n",
        keys_file(&[("keep", KEEP), ("new", NEW)])
    );
    support::kubelet_write(secret.path(), "clients.yaml", &broken, 3);
    let admin = gw.admin_url();
    let deadline = Instant::now() + Duration::from_secs(10);
    let config = loop {
        let config = generation(&admin).await;
        assert_eq!(
            config["generation"], 2,
            "a broken keys file was put in service"
        );
        if !config["lastReloadError"].is_null() {
            break config;
        }
        assert!(
            Instant::now() < deadline,
            "the broken keys file was never reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let message = config["lastReloadError"]["message"].as_str().unwrap();
    assert!(
        message.contains("clients.yaml:") && message.contains("`pasted`"),
        "{message}"
    );
    assert_eq!(
        chat(&gw, &[("authorization", &bearer(NEW))]).await.status,
        200
    );
    let metrics = support::get(&format!("{admin}/metrics")).await.text();
    // One broken write may be seen as more than one change (the kubelet's swap
    // raises several events, and a busy machine can deliver them apart): each is
    // refused and counted.
    let errors = support::metric(&metrics, "celgate_config_reloads_total{result=\"error\"}");
    assert!(errors.is_some_and(|n| n >= 1.0), "{metrics}");

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert!(sent >= 10, "only {sent} requests ran across the reload");
    for text in [gw.stdout(), gw.stderr(), message.to_owned()] {
        assert!(!text.contains(pasted) && !text.contains(KEEP), "{text}");
    }
    eprintln!("{sent} requests across two keys-file swaps, none failed");
}
