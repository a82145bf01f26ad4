//! TLS through the real binary, with a CA generated for the test: an HTTPS backend
//! (trusted through `SSL_CERT_FILE`, or not, and then a 502 that says why), and an
//! HTTPS collector over OTLP/HTTP and gRPC, with and without mTLS
//! (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY`). A
//! collector celgate cannot reach over TLS never fails a request: the spans are
//! counted as dropped and one warning names the reason.

#[path = "support/mod.rs"]
mod support;

use support::calls::{post, runtime};
use support::otlp::{Protocol, Receiver, ReceiverOptions};
use support::tls::{ClientAuth, Pki, TlsFront};
use support::{
    Gateway, Parent, SPAN_TIMEOUT, Upstream, assert_error_span, assert_ok_span,
    assert_openai_error, chat_body, config_yaml, metric, span_of, wait_until,
};

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
    }
}

/// A chat call through `gateway` under a fresh parent; the reply and the trace id.
fn call(gateway: &Gateway, rt: &tokio::runtime::Runtime) -> (support::Reply, String) {
    let parent = Parent::new();
    let tp = parent.traceparent(true);
    let reply = rt.block_on(post(
        &gateway.base_url(),
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi"),
        &[("traceparent", tp.as_str())],
    ));
    (reply, parent.trace_id)
}

/// Waits until the gateway's /metrics shows `series` at `at_least` or more.
fn wait_for_metric(
    gateway: &Gateway,
    rt: &tokio::runtime::Runtime,
    series: &str,
    at_least: f64,
) -> bool {
    let url = format!("{}/metrics", gateway.admin_url());
    wait_until(SPAN_TIMEOUT, || {
        let text = rt.block_on(support::get(&url)).text();
        metric(&text, series).unwrap_or(0.0) >= at_least
    })
}

// ---------------------------------------------------------------------------------------
// An HTTPS backend
// ---------------------------------------------------------------------------------------

#[test]
fn an_https_backend_is_trusted_through_ssl_cert_file_and_an_untrusted_one_is_a_502_saying_why() {
    let pki = Pki::generate();
    let upstream = Upstream::start();
    let front = TlsFront::start(&pki, upstream.addr(), ClientAuth::None);
    let receiver = Receiver::grpc();
    let base_url = format!("https://localhost:{}/v1", front.addr().port());
    let config = config_yaml("openllmetry", &receiver.endpoint(), "grpc", &base_url);
    let rt = runtime();
    let empty = pki.empty_dir();
    let empty = empty.to_str().unwrap();

    // Trusting the test CA: the call goes through TLS and is traced as usual.
    let trusting = Gateway::start(
        &config,
        &[
            ("SSL_CERT_FILE", pki.ca.to_str().unwrap()),
            ("SSL_CERT_DIR", empty),
        ],
    );
    let (reply, trace) = call(&trusting, &rt);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.requests().len(), 1, "the backend got the call");
    assert_ok_span(&span_of(&receiver, &trace, "the HTTPS call", &trusting));
    assert_eq!(front.refused(), Vec::<String>::new());

    // Trusting another CA: refused before anything reaches the backend, and said so.
    let wrong = Gateway::start(
        &config,
        &[
            ("SSL_CERT_FILE", pki.other_ca.to_str().unwrap()),
            ("SSL_CERT_DIR", empty),
        ],
    );
    let (reply, trace) = call(&wrong, &rt);
    assert_openai_error(&reply, 502, "upstream_error", "tls_error");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("backend `scripted`")
            && message.contains("TLS: the backend's certificate is not trusted (unknown issuer)"),
        "{message}"
    );
    let span = span_of(&receiver, &trace, "the refused HTTPS call", &wrong);
    assert_error_span(&span, "tls_error");
    assert!(span.status_message.contains("unknown issuer"), "{span:#?}");
    let line = wrong
        .wait_for_stdout(&trace, SPAN_TIMEOUT)
        .unwrap_or_else(|| panic!("no access-log line for {trace}\n{}", wrong.stdout()));
    assert!(line.contains("tls_error"), "{line}");
    assert_eq!(upstream.requests().len(), 1, "nothing reached the backend");
    let refusal = front
        .wait_for_refusal(SPAN_TIMEOUT)
        .expect("the front saw the handshake refused");
    assert!(refusal.contains("UnknownCA"), "{refusal}");
}

// ---------------------------------------------------------------------------------------
// An HTTPS collector
// ---------------------------------------------------------------------------------------

/// A gateway exporting over `protocol` to `front` (https), a plain backend, with
/// `env` on top.
fn exporting(
    protocol: Protocol,
    front: &TlsFront,
    upstream: &Upstream,
    env: &[(&str, &str)],
) -> Gateway {
    let endpoint = format!("https://127.0.0.1:{}", front.addr().port());
    let config = config_yaml(
        "openllmetry",
        &endpoint,
        protocol_name(protocol),
        &upstream.base_url(),
    );
    Gateway::start(&config, env)
}

/// A call through `gateway` answers 200 but its span cannot be exported: the drop
/// is counted, the export failure is a warning, a warning names `reason`, and the
/// span never reached `receiver`.
fn assert_dropped_with_reason(
    what: &str,
    gateway: &Gateway,
    receiver: &Receiver,
    rt: &tokio::runtime::Runtime,
    reason: &str,
) {
    let (reply, trace) = call(gateway, rt);
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    assert!(
        wait_for_metric(gateway, rt, "celgate_spans_dropped_total", 1.0),
        "{what}: no dropped span counted\n{}",
        gateway.stderr()
    );
    for needle in [reason, "span export to https://127.0.0.1:"] {
        let warning = gateway
            .wait_for_stderr(needle, SPAN_TIMEOUT)
            .unwrap_or_else(|| panic!("{what}: no `{needle}`\n{}", gateway.stderr()));
        assert!(warning.contains("WARN"), "{what}: {warning}");
    }
    assert!(
        !receiver.spans().iter().any(|s| s.trace_id == trace),
        "{what}: the span arrived after all"
    );
}

#[test]
fn spans_reach_an_https_collector_trusted_through_its_ca_and_a_wrong_ca_drops_them_saying_why() {
    let pki = Pki::generate();
    let upstream = Upstream::start();
    let rt = runtime();
    for protocol in [Protocol::Http, Protocol::Grpc] {
        let what = protocol_name(protocol);
        let receiver = Receiver::with(protocol, ReceiverOptions::default());
        let front = TlsFront::start(&pki, receiver.addr(), ClientAuth::None);

        let trusting = exporting(
            protocol,
            &front,
            &upstream,
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca.to_str().unwrap())],
        );
        let (reply, trace) = call(&trusting, &rt);
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        assert_ok_span(&span_of(&receiver, &trace, what, &trusting));
        drop(trusting);

        // The traces variable wins over the general one.
        let wrong = exporting(
            protocol,
            &front,
            &upstream,
            &[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca.to_str().unwrap()),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                    pki.other_ca.to_str().unwrap(),
                ),
            ],
        );
        assert_dropped_with_reason(
            what,
            &wrong,
            &receiver,
            &rt,
            "TLS: the collector's certificate is not trusted (unknown issuer)",
        );
        assert!(
            front
                .wait_for_refusal(SPAN_TIMEOUT)
                .is_some_and(|r| r.contains("UnknownCA")),
            "{what}: {:?}",
            front.refused()
        );
    }
}

#[test]
fn an_mtls_collector_takes_spans_with_the_client_certificate_and_refuses_them_without() {
    let pki = Pki::generate();
    let upstream = Upstream::start();
    let rt = runtime();
    let ca = pki.ca.to_str().unwrap();
    for protocol in [Protocol::Http, Protocol::Grpc] {
        let what = protocol_name(protocol);
        let receiver = Receiver::with(protocol, ReceiverOptions::default());
        let front = TlsFront::start(&pki, receiver.addr(), ClientAuth::Required);

        let with_cert = exporting(
            protocol,
            &front,
            &upstream,
            &[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    pki.client_cert.to_str().unwrap(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                    pki.client_key.to_str().unwrap(),
                ),
            ],
        );
        let (reply, trace) = call(&with_cert, &rt);
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        assert_ok_span(&span_of(&receiver, &trace, what, &with_cert));
        assert_eq!(front.refused(), Vec::<String>::new(), "{what}");
        // /config names the files, never the key.
        let shown = rt.block_on(support::get(&format!("{}/config", with_cert.admin_url())));
        let tls = &shown.json()["tracing"]["export"]["tls"];
        assert_eq!(tls["ca"], ca, "{what}: {tls}");
        assert_eq!(
            tls["clientCertificate"],
            pki.client_cert.to_str().unwrap(),
            "{what}: {tls}"
        );
        let key = std::fs::read_to_string(&pki.client_key).unwrap();
        assert!(
            !shown.text().contains(key.lines().nth(1).unwrap()),
            "{what}: the key is on /config"
        );
        drop(with_cert);

        let without = exporting(
            protocol,
            &front,
            &upstream,
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca)],
        );
        assert_dropped_with_reason(
            what,
            &without,
            &receiver,
            &rt,
            // Not the refusal's alert, which can be lost to a broken pipe (TLS 1.3),
            // but the collector's request for a certificate, which is certain.
            "the collector asks for a client certificate (mTLS) and none is configured",
        );
        let refusal = front
            .wait_for_refusal(SPAN_TIMEOUT)
            .unwrap_or_else(|| panic!("{what}: the front refused nothing"));
        assert!(refusal.contains("no certificates"), "{what}: {refusal}");
    }
}

// ---------------------------------------------------------------------------------------
// Bad TLS files stop the gateway before it serves
// ---------------------------------------------------------------------------------------

#[test]
fn unusable_collector_tls_files_stop_the_gateway_naming_the_variable_and_file() {
    let pki = Pki::generate();
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let front = TlsFront::start(&pki, receiver.addr(), ClientAuth::None);
    let missing = pki.dir().join("missing.pem");
    let key = std::fs::read_to_string(&pki.client_key).unwrap();
    let key_line = key.lines().nth(1).unwrap().to_owned();
    for (env, expect) in [
        (
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", missing.to_str().unwrap())],
            format!(
                "OTEL_EXPORTER_OTLP_CERTIFICATE names `{}`, which cannot be read",
                missing.display()
            ),
        ),
        (
            vec![(
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                pki.client_key.to_str().unwrap(),
            )],
            "holds no PEM certificate".to_owned(),
        ),
        (
            vec![(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                pki.client_cert.to_str().unwrap(),
            )],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set but OTEL_EXPORTER_OTLP_CLIENT_KEY is not"
                .to_owned(),
        ),
        (
            vec![
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    pki.client_key.to_str().unwrap(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                    pki.client_key.to_str().unwrap(),
                ),
            ],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE names".to_owned(),
        ),
    ] {
        let endpoint = format!("https://127.0.0.1:{}", front.addr().port());
        let config = config_yaml("openllmetry", &endpoint, "grpc", &upstream.base_url());
        let builder = env
            .iter()
            .fold(Gateway::builder(&config), |b, (k, v)| b.env(k, v));
        let error = builder
            .try_start()
            .expect_err("celgate must not start on unusable TLS files");
        assert!(error.status.is_some(), "it exited: {error}");
        assert!(error.stderr.contains(&expect), "{expect}\n{error}");
        assert!(
            !error.stderr.contains(&key_line),
            "the key was printed: {error}"
        );
    }
    // No gateway ever served, so nothing reached the collector.
    assert!(receiver.exports().is_empty());
}

// ---------------------------------------------------------------------------------------
// Rotating the collector's CA file
// ---------------------------------------------------------------------------------------

/// Writes `contents` to `path` as a secret mount or `kubectl cp` would: a new
/// file renamed over the old one.
fn replace_file(path: &std::path::Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it over the old one");
}

#[test]
fn a_rotated_ca_file_is_a_new_generation_and_an_unusable_one_keeps_the_old() {
    let pki = Pki::generate();
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let front = TlsFront::start(&pki, receiver.addr(), ClientAuth::None);
    let rt = runtime();
    let ca_file = pki.dir().join("collector-ca.pem");
    std::fs::copy(&pki.other_ca, &ca_file).expect("start with the wrong CA");
    let gateway = exporting(
        Protocol::Grpc,
        &front,
        &upstream,
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap())],
    );
    assert_dropped_with_reason(
        "the wrong CA",
        &gateway,
        &receiver,
        &rt,
        "certificate is not trusted (unknown issuer)",
    );

    // The right CA replaces the file: the exporter is rebuilt and spans arrive.
    replace_file(&ca_file, &std::fs::read(&pki.ca).unwrap());
    assert!(
        gateway
            .wait_for_stderr("span exporter rebuilt", SPAN_TIMEOUT)
            .is_some(),
        "no reload for the rotated CA file\n{}",
        gateway.stderr()
    );
    let (reply, trace) = call(&gateway, &rt);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_ok_span(&span_of(&receiver, &trace, "after the rotation", &gateway));

    // A file that holds no certificate: the reload fails, the previous TLS stays.
    replace_file(&ca_file, b"not a certificate\n");
    let failed = gateway
        .wait_for_stderr("config reload failed", SPAN_TIMEOUT)
        .unwrap_or_else(|| panic!("the unusable CA file was not refused\n{}", gateway.stderr()));
    let reason = gateway
        .wait_for_stderr("holds no PEM certificate", SPAN_TIMEOUT)
        .unwrap_or_else(|| panic!("no reason given: {failed}\n{}", gateway.stderr()));
    assert!(
        reason.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        "{reason}"
    );
    let (reply, trace) = call(&gateway, &rt);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_ok_span(&span_of(
        &receiver,
        &trace,
        "after the refused reload",
        &gateway,
    ));
}

// ---------------------------------------------------------------------------------------
// The metrics push takes the same collector TLS
// ---------------------------------------------------------------------------------------

#[test]
fn the_metrics_push_reaches_an_mtls_collector_with_the_same_variables() {
    let pki = Pki::generate();
    let upstream = Upstream::start();
    let rt = runtime();
    for protocol in [Protocol::Http, Protocol::Grpc] {
        let what = protocol_name(protocol);
        let receiver = Receiver::with(protocol, ReceiverOptions::default());
        let front = TlsFront::start(&pki, receiver.addr(), ClientAuth::Required);
        let gateway = exporting(
            protocol,
            &front,
            &upstream,
            &[
                ("OTEL_METRICS_EXPORTER", "otlp"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca.to_str().unwrap()),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    pki.client_cert.to_str().unwrap(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                    pki.client_key.to_str().unwrap(),
                ),
            ],
        );
        let (reply, _) = call(&gateway, &rt);
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        let point =
            receiver.wait_for_point(SPAN_TIMEOUT, |p| p.metric == "gen_ai.client.token.usage");
        assert!(
            point.is_some(),
            "{what}: no metrics over mTLS\n{}",
            gateway.stderr()
        );
        assert_eq!(front.refused(), Vec::<String>::new(), "{what}");
    }
}
