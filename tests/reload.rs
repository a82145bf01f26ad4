//! Hot reload with the real binary: the Kubernetes atomic writer under load, plus
//! the ways editors and scripts replace a file.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::otlp::Receiver;
use support::{Gateway, Upstream};

/// A config whose spans say which generation made them, twice (both must agree).
fn config(upstream: &str, receiver: &str, generation: u64) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
config:
  tracing:
    preset: jaeger
    otlpEndpoint: {receiver}
    fields:
      add:
        test.generation.a: '\"g{generation}\"'
        test.generation.b: 'string({generation})'
backends:
  - name: scripted
    baseUrl: {upstream}
    apiKey: {{env: {}}}
",
        support::BACKEND_KEY_ENV
    )
}

async fn generation(admin: &str) -> (u64, serde_json::Value) {
    let config = support::get(&format!("{admin}/config")).await.json();
    (config["generation"].as_u64().unwrap(), config)
}

/// Polls `/config` until the generation is `want`; returns how long it took.
async fn wait_generation(gw: &Gateway, want: u64, deadline: Duration) -> Duration {
    let admin = &gw.admin_url();
    let start = Instant::now();
    loop {
        let (g, _) = generation(admin).await;
        if g == want {
            return start.elapsed();
        }
        assert!(g < want, "generation {g} overshot {want}");
        assert!(
            start.elapsed() < deadline,
            "generation {want} not live within {deadline:?} (still {g}); gateway stderr:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubelet_atomic_writer_fifty_updates_under_load() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gw = Gateway::start(&config(&upstream.base_url(), &receiver.endpoint(), 1), &[]);
    let admin = gw.admin_url();
    let dir = gw.dir().to_owned();
    let url = format!("{}/chat/completions", gw.base_url());

    // Clients send continuously, plain and streamed, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..3 {
        let (stop, sent, failures, url) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failures),
            url.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let streamed = (i + c).is_multiple_of(3);
                let body = json!({"model": "gpt-4o", "stream": streamed,
                    "messages": [{"role": "user", "content": format!("client {c} call {i}")}]});
                let failure = if streamed {
                    let r = support::post_stream(&url, &body).await;
                    let done = r.events().last().is_some_and(|e| e == "[DONE]");
                    (r.status != 200 || r.error.is_some() || !done)
                        .then(|| format!("stream: {} {:?}", r.status, r.error))
                } else {
                    let r = support::post_json(&url, &body, &[]).await;
                    (r.status != 200).then(|| format!("plain: {} {}", r.status, r.text()))
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if let Some(f) = failure {
                    failures.lock().unwrap().push(f);
                }
            }
        }));
    }

    let mut latencies = Vec::new();
    let mut live = 1u64;
    let mut serial = 0u64;
    for update in 2..=51u64 {
        serial += 1;
        if update == 26 {
            // A broken update in the middle: a CEL syntax error.
            let broken = config(&upstream.base_url(), &receiver.endpoint(), update)
                .replace("'string(26)'", "'string(26'");
            support::kubelet_write(&dir, "config.yaml", &broken, serial);
            let deadline = Instant::now() + Duration::from_secs(5);
            let config = loop {
                let (g, config) = generation(&admin).await;
                assert_eq!(g, live, "a broken config was put in service");
                if !config["lastReloadError"].is_null() {
                    break config;
                }
                assert!(
                    Instant::now() < deadline,
                    "the broken update was never reported"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let message = config["lastReloadError"]["message"].as_str().unwrap();
            assert!(message.contains("config.yaml:"), "{message}");
            assert!(message.contains("test.generation.b"), "{message}");
            let metrics = support::get(&format!("{admin}/metrics")).await.text();
            assert!(
                metrics.contains("celgate_config_reloads_total{result=\"error\"} 1"),
                "{metrics}"
            );
            serial += 1;
        }
        support::kubelet_write(
            &dir,
            "config.yaml",
            &config(&upstream.base_url(), &receiver.endpoint(), update),
            serial,
        );
        live += 1;
        latencies.push(wait_generation(&gw, live, Duration::from_secs(2)).await);
        // Let some traffic run on this generation.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let (_, config) = generation(&admin).await;
    assert!(
        config["lastReloadError"].is_null(),
        "a good reload clears the error"
    );

    let sent = sent.load(Ordering::Relaxed) as usize;
    let spans = receiver.wait_for(sent, Duration::from_secs(15));
    assert_eq!(spans.len(), sent, "one span per request");
    let mut seen = std::collections::BTreeSet::new();
    for s in &spans {
        let a = s.str_attr("test.generation.a").unwrap_or_default();
        let b = s.str_attr("test.generation.b").unwrap_or_default();
        assert_eq!(
            a,
            format!("g{b}"),
            "a span mixes generations: {:?}",
            s.attributes
        );
        let n: u64 = b.parse().unwrap();
        assert!((1..=51).contains(&n), "{n}");
        seen.insert(n);
    }
    assert!(seen.len() > 10, "traffic spanned only generations {seen:?}");
    latencies.sort();
    eprintln!(
        "50 updates, {sent} requests, reload latency median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
}

async fn assert_live_attr(gw: &Gateway, receiver: &Receiver, want: &str) {
    // Send until a span carries the wanted generation (reload is asynchronous).
    let url = format!("{}/chat/completions", gw.base_url());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = support::post_json(
            &url,
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let spans = receiver.wait_for(receiver.spans().len() + 1, Duration::from_secs(5));
        if spans.last().and_then(|s| s.str_attr("test.generation.a")) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generation {want} never went live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_place_write_rename_over_and_delete_then_recreate_reload() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gw = Gateway::start(&config(&upstream.base_url(), &receiver.endpoint(), 1), &[]);
    let path = gw.config_path().to_owned();
    let admin = gw.admin_url();
    assert_live_attr(&gw, &receiver, "g1").await;

    // An editor writing in place (truncate + write).
    std::fs::write(&path, config(&upstream.base_url(), &receiver.endpoint(), 2)).unwrap();
    wait_generation(&gw, 2, Duration::from_secs(2)).await;
    assert_live_attr(&gw, &receiver, "g2").await;

    // A tool writing a temporary file and renaming it over.
    let tmp = path.with_file_name(".config.yaml.swp");
    std::fs::write(&tmp, config(&upstream.base_url(), &receiver.endpoint(), 3)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_generation(&gw, 3, Duration::from_secs(2)).await;
    assert_live_attr(&gw, &receiver, "g3").await;

    // Deleted, briefly absent (the gateway keeps serving), then recreated.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_live_attr(&gw, &receiver, "g3").await;
    let (_, cfg) = generation(&admin).await;
    assert!(
        cfg["lastReloadError"].is_null(),
        "absence is not an error: {cfg}"
    );
    std::fs::write(&path, config(&upstream.base_url(), &receiver.endpoint(), 4)).unwrap();
    wait_generation(&gw, 4, Duration::from_secs(2)).await;
    assert_live_attr(&gw, &receiver, "g4").await;

    // Touching without a change is not a reload.
    std::fs::write(&path, config(&upstream.base_url(), &receiver.endpoint(), 4)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&admin).await.0, 4);
}

/// An editor writing in place truncates before it writes; a reload that reads the
/// file in between must not serve an empty config (it has no backends).
#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_config_is_not_served_and_the_next_write_is() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gw = Gateway::start(&config(&upstream.base_url(), &receiver.endpoint(), 1), &[]);
    let path = gw.config_path().to_owned();
    assert_live_attr(&gw, &receiver, "g1").await;
    std::fs::write(&path, "  \n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&gw.admin_url()).await.0, 1);
    assert_live_attr(&gw, &receiver, "g1").await;
    std::fs::write(&path, config(&upstream.base_url(), &receiver.endpoint(), 2)).unwrap();
    wait_generation(&gw, 2, Duration::from_secs(2)).await;
    assert_live_attr(&gw, &receiver, "g2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_file_is_picked_up() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let yaml = config(&upstream.base_url(), &receiver.endpoint(), 1).replace(
        &format!("{{env: {}}}", support::BACKEND_KEY_ENV),
        "{file: secrets/key}",
    );
    let gw = Gateway::builder(&yaml)
        .file("secrets/key", "sk-first\n")
        .start();
    let url = format!("{}/chat/completions", gw.base_url());
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(support::post_json(&url, &body, &[]).await.status, 200);
    std::fs::write(gw.dir().join("secrets/key"), "sk-second\n").unwrap();
    wait_generation(&gw, 2, Duration::from_secs(2)).await;
    assert_eq!(support::post_json(&url, &body, &[]).await.status, 200);
    let auth: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(auth, ["Bearer sk-first", "Bearer sk-second"]);
    let config = support::get(&format!("{}/config", gw.admin_url()))
        .await
        .text();
    assert!(
        !config.contains("sk-second") && !config.contains("sk-first"),
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_moves_the_exporter_loses_no_queued_span() {
    let upstream = Upstream::start();
    let (first, second) = (Receiver::grpc(), Receiver::http());
    // Spans would wait a minute in the queue: only the reload can send them.
    let gw = Gateway::builder(&config(&upstream.base_url(), &first.endpoint(), 1))
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .start();
    let url = format!("{}/chat/completions", gw.base_url());
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..5 {
        assert_eq!(support::post_json(&url, &body, &[]).await.status, 200);
    }
    assert!(first.spans().is_empty(), "spans left before the reload");
    let moved = config(&upstream.base_url(), &second.endpoint(), 2).replace(
        "    otlpEndpoint:",
        "    otlpProtocol: http\n    otlpEndpoint:",
    );
    std::fs::write(gw.config_path(), moved).unwrap();
    wait_generation(&gw, 2, Duration::from_secs(5)).await;
    let old = first.wait_for(5, Duration::from_secs(5));
    assert_eq!(
        old.len(),
        5,
        "queued spans went to the old collector before the switch"
    );
    assert!(
        old.iter()
            .all(|s| s.str_attr("test.generation.a") == Some("g1"))
    );
    for _ in 0..3 {
        assert_eq!(support::post_json(&url, &body, &[]).await.status, 200);
    }
    gw.send_signal(support::Signal::Term);
    let new = second.wait_for(3, Duration::from_secs(10));
    assert_eq!(new.len(), 3, "{}", gw.stderr());
    assert!(
        new.iter()
            .all(|s| s.str_attr("test.generation.a") == Some("g2"))
    );
    assert_eq!(
        first.spans().len(),
        5,
        "nothing more reached the old collector"
    );
}

/// `/config` until it shows a reload error; asserts the generation stays `live`.
async fn wait_reload_error(gw: &Gateway, live: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (g, config) = generation(&gw.admin_url()).await;
        assert_eq!(g, live, "a refused config was put in service: {config}");
        if let Some(message) = config["lastReloadError"]["message"].as_str() {
            return message.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no reload error shown; stderr:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_error_never_quotes_a_secret() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let good = config(&upstream.base_url(), &receiver.endpoint(), 1);
    let gw = Gateway::start(&good, &[]);
    let secret = "sk-live-abcdef1234567890";
    let shadow = "root:$6$Zq9kLmN2$wXyZ0123456789abcdefHASHEDsecretVALUE:19700:0:99999:7:::\n";
    let pasted = good.replace(&format!("{{env: {}}}", support::BACKEND_KEY_ENV), secret);
    let mut live = 1;
    for (n, (broken, position)) in [(pasted, ":14:13: "), (shadow.to_owned(), ":1:1: ")]
        .iter()
        .enumerate()
    {
        std::fs::write(gw.config_path(), broken).unwrap();
        let message = wait_reload_error(&gw, live).await;
        assert!(message.contains(position), "{message}");
        let page = support::get(&format!("{}/config", gw.admin_url()))
            .await
            .text();
        let logged = gw.wait_for_stderr("config reload failed", Duration::from_secs(5));
        assert!(logged.is_some(), "no reload failure logged");
        for (place, text) in [("/config", page), ("stderr", gw.stderr())] {
            for part in ["abcdef1234567890", "$6$", "HASHEDsecret"] {
                assert!(
                    !text.contains(part),
                    "case {n}: {place} quotes `{part}`:\n{text}"
                );
            }
        }
        // A good config again, so the next case's error is its own.
        live += 1;
        std::fs::write(
            gw.config_path(),
            config(&upstream.base_url(), &receiver.endpoint(), live),
        )
        .unwrap();
        wait_generation(&gw, live, Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_line_key_file_is_refused_and_the_old_key_keeps_serving() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let yaml = config(&upstream.base_url(), &receiver.endpoint(), 1).replace(
        &format!("{{env: {}}}", support::BACKEND_KEY_ENV),
        "{file: secrets/key}",
    );
    let gw = Gateway::builder(&yaml)
        .file("secrets/key", "sk-first\n")
        .start();
    std::fs::write(gw.dir().join("secrets/key"), "sk-a\nsk-b\n").unwrap();
    let message = wait_reload_error(&gw, 1).await;
    assert!(
        message.contains("backend `scripted`") && message.contains("secrets/key`"),
        "{message}"
    );
    assert!(
        !message.contains("sk-a") && !message.contains("sk-b"),
        "{message}"
    );
    let url = format!("{}/chat/completions", gw.base_url());
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(support::post_json(&url, &body, &[]).await.status, 200);
    let auth: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(auth, ["Bearer sk-first"]);
    assert!(!gw.stderr().contains("sk-b"), "{}", gw.stderr());
}

/// SIGHUP reloads the config at once (the conventional daemon reload) and leaves the
/// process serving. To tell it from the file watcher, the config becomes a symlink to
/// a file outside every watched directory: an edit of that file sends no event.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_now_and_the_process_keeps_serving() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let gw = Gateway::start(&config(&upstream.base_url(), &receiver.endpoint(), 1), &[]);
    let admin = gw.admin_url();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("config.yaml");
    std::fs::write(
        &target,
        config(&upstream.base_url(), &receiver.endpoint(), 2),
    )
    .unwrap();
    let link = gw.dir().join(".config.yaml.link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // The rename happens in the watched directory: the watcher loads generation 2.
    std::fs::rename(&link, gw.config_path()).unwrap();
    wait_generation(&gw, 2, Duration::from_secs(5)).await;

    std::fs::write(
        &target,
        config(&upstream.base_url(), &receiver.endpoint(), 3),
    )
    .unwrap();
    gw.send_signal(support::Signal::Hup);
    wait_generation(&gw, 3, Duration::from_secs(5)).await;
    assert!(
        gw.wait_for_stderr("SIGHUP", Duration::from_secs(5))
            .is_some(),
        "the SIGHUP was not logged:\n{}",
        gw.stderr()
    );
    assert_live_attr(&gw, &receiver, "g3").await;

    // Nothing changed: a second SIGHUP is logged as such and changes nothing.
    gw.send_signal(support::Signal::Hup);
    assert!(
        gw.wait_for_stderr("unchanged", Duration::from_secs(5))
            .is_some(),
        "a SIGHUP without a change was not logged:\n{}",
        gw.stderr()
    );
    assert_live_attr(&gw, &receiver, "g3").await;
    assert_eq!(generation(&admin).await.0, 3);
}
