//! The `celgate` binary as an operator runs it: `check`, `preview`, `presets`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn celgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celgate"))
        .args(args)
        .env_remove("OPENINFERENCE_HIDE_INPUTS")
        .env_remove("OPENINFERENCE_HIDE_OUTPUTS")
        .env_remove("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
        .output()
        .expect("run celgate")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn fixture(name: &str) -> String {
    repo(&format!("tests/fixtures/exchanges/{name}"))
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Write `yaml` to a temp file and run `celgate check` on it.
fn check_yaml(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = celgate(&["check", path.to_str().unwrap()]);
    let err = stderr(&out).replace(path.to_str().unwrap(), "config.yaml");
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        err,
    )
}

fn preview_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["preview", "--format", "json"];
    all.extend_from_slice(args);
    let out = celgate(&all);
    assert!(out.status.success(), "preview failed: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    // Exactly one JSON object.
    let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
    let value = stream.next().unwrap().unwrap();
    assert!(stream.next().is_none(), "more than one JSON value: {text}");
    value
}

#[test]
fn every_seed_config_passes_check() {
    for seed in ["collector", "jaeger", "langfuse", "phoenix", "openllmetry"] {
        let path = repo(&format!("tests/seeds/{seed}.yaml"));
        let out = celgate(&["check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{seed}: {}", stderr(&out));
    }
}

#[test]
fn seed_collector_and_jaeger_configs_give_gen_ai_attributes() {
    // The two configs differ only in spelling (llm.requestModel vs llm.request_model).
    for seed in ["collector", "jaeger"] {
        let path = repo(&format!("tests/seeds/{seed}.yaml"));
        let span = preview_json(&["--config", path.to_str().unwrap()]);
        let attrs = &span["attributes"];
        assert_eq!(attrs["gen_ai.operation.name"], "chat", "{seed}");
        assert_eq!(attrs["gen_ai.system"], "openai");
        assert_eq!(attrs["gen_ai.request.model"], "gpt-4o-mini");
        assert_eq!(attrs["gen_ai.response.model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(attrs["gen_ai.usage.prompt_tokens"], 42);
        assert_eq!(attrs["gen_ai.usage.completion_tokens"], 12);
        assert_eq!(attrs.as_object().unwrap().len(), 6, "{seed}: {attrs}");
        assert_eq!(span["kind"], "CLIENT");
    }
}

#[test]
fn seed_langfuse_config_gives_json_prompt_and_flattened_params() {
    let path = repo("tests/seeds/langfuse.yaml");
    let span = preview_json(&["--config", path.to_str().unwrap()]);
    let attrs = &span["attributes"];
    let prompt: serde_json::Value =
        serde_json::from_str(attrs["gen_ai.prompt"].as_str().unwrap()).unwrap();
    assert_eq!(prompt[1]["role"], "user");
    assert_eq!(prompt[1]["content"], "What is the capital of Portugal?");
    let completion: serde_json::Value =
        serde_json::from_str(attrs["gen_ai.completion"].as_str().unwrap()).unwrap();
    assert_eq!(
        completion,
        serde_json::json!([{"role": "assistant", "content": "May or September: warm, sunny days and fewer crowds."}])
    );
    assert_eq!(attrs["gen_ai.request.temperature"], 0.2);
    assert_eq!(attrs["gen_ai.request.max_tokens"], 256);
    assert_eq!(attrs["gen_ai.request.top_p"], 1);
    assert_eq!(attrs["gen_ai.request.model"], "gpt-4o-mini");
}

#[test]
fn seed_phoenix_config_gives_indexed_messages() {
    let path = repo("tests/seeds/phoenix.yaml");
    let span = preview_json(&["--config", path.to_str().unwrap()]);
    assert_eq!(span["name"], "openai.chat");
    let attrs = &span["attributes"];
    assert_eq!(attrs["openinference.span.kind"], "LLM");
    assert_eq!(attrs["llm.input_messages.0.message.role"], "system");
    assert_eq!(
        attrs["llm.input_messages.3.message.content"],
        "What is the best month to visit it?"
    );
    // The seed's output expression has no `message.` segment: it is kept as written.
    assert_eq!(attrs["llm.output_messages.0.role"], "assistant");
    assert_eq!(
        attrs["llm.output_messages.0.content"],
        "May or September: warm, sunny days and fewer crowds."
    );
    assert_eq!(attrs["llm.token_count.prompt"], 42);
    assert_eq!(attrs["llm.token_count.completion"], 12);
    assert_eq!(attrs["llm.token_count.total"], 54);
}

#[test]
fn seed_openllmetry_config_on_a_stream() {
    let path = repo("tests/seeds/openllmetry.yaml");
    let span = preview_json(&[
        "--config",
        path.to_str().unwrap(),
        "--request",
        &fixture("chat_stream_request.json"),
        "--response",
        &fixture("chat_stream.sse"),
    ]);
    assert_eq!(span["name"], "openai.chat");
    let attrs = &span["attributes"];
    assert_eq!(attrs["llm.is_streaming"], true);
    assert_eq!(attrs["gen_ai.prompt.0.role"], "system");
    assert_eq!(attrs["gen_ai.completion.0.role"], "assistant");
    assert!(
        attrs["gen_ai.completion.0.content"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(attrs["gen_ai.usage.prompt_tokens"].is_i64());
}

#[test]
fn typo_in_a_variable_is_reported_with_position_and_suggestion() {
    let yaml = "config:\n  tracing:\n    fields:\n      add:\n        gen_ai.system: llm.provider\n        gen_ai.request.model: llm.requestModle\n";
    let (code, _, err) = check_yaml(yaml);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("config.yaml:6:9: attribute `gen_ai.request.model`: unknown variable `llm.requestModle` (did you mean `llm.requestModel`?)"),
        "{err}"
    );
    assert!(err.contains("\n    llm.requestModle\n        ^"), "{err}");
}

#[test]
fn syntax_error_is_reported_with_position_and_caret() {
    let yaml = "config:\n  tracing:\n    fields:\n      add:\n        ok: llm.provider\n        broken: 'llm.prompt.map(c, c.role'\n";
    let (code, _, err) = check_yaml(yaml);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("config.yaml:6:9: attribute `broken`: syntax error:"),
        "{err}"
    );
    assert!(err.contains("    llm.prompt.map(c, c.role\n"), "{err}");
    assert!(err.contains("^"), "{err}");
}

#[test]
fn duplicate_key_is_reported_at_the_second_occurrence() {
    let yaml = "config:\n  tracing:\n    fields:\n      add:\n        a: llm.provider\n        b: llm.streaming\n        a: llm.requestModel\n";
    let (code, _, err) = check_yaml(yaml);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("config.yaml:7:9: duplicate key `a`"),
        "{err}"
    );
}

#[test]
fn unknown_config_key_is_reported_with_position() {
    let yaml = "config:\n  tracing:\n    otlpEndpoint: http://localhost:4317\n    feilds:\n      add:\n        a: llm.provider\n";
    let (code, _, err) = check_yaml(yaml);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("config.yaml:4:5: unknown field `fei…` (did you mean `fields`?)"),
        "{err}"
    );
}

#[test]
fn every_error_of_a_file_is_reported() {
    let yaml = "config:\n  tracing:\n    fields:\n      add:\n        a: lm.provider\n        b: foo(1)\n        c: llm.provider\n";
    let (code, _, err) = check_yaml(yaml);
    assert_eq!(code, 1);
    assert!(
        err.contains("config.yaml:5:9: attribute `a`: unknown variable `lm` (did you mean `llm`?)"),
        "{err}"
    );
    assert!(
        err.contains("config.yaml:6:9: attribute `b`: unknown function `foo`"),
        "{err}"
    );
}

#[test]
fn a_valid_config_says_ok() {
    let (code, out, err) = check_yaml("config:\n  tracing:\n    preset: phoenix\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok (preset phoenix"), "{out}");
}

#[test]
fn a_missing_file_fails_check() {
    let out = celgate(&["check", "/nonexistent/celgate/config.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"));
}

#[test]
fn preview_without_a_request_uses_the_built_in_sample() {
    let span = preview_json(&["--preset", "jaeger"]);
    assert_eq!(span["name"], "chat gpt-4o-mini");
    assert_eq!(span["attributes"]["gen_ai.provider.name"], "openai");
    // Jaeger hides content unless enabled.
    assert!(span["attributes"].get("gen_ai.input.messages").is_none());
}

#[test]
fn preview_honours_provider_and_env_privacy() {
    let out = Command::new(env!("CARGO_BIN_EXE_celgate"))
        .args([
            "preview",
            "--preset",
            "phoenix",
            "--format",
            "json",
            "--provider",
            "gemini",
        ])
        .env("OPENINFERENCE_HIDE_INPUTS", "true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let span: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attrs = &span["attributes"];
    // OpenInference names Google's provider `google` (its `llm.provider` values).
    assert_eq!(attrs["llm.provider"], "google");
    assert_eq!(attrs["input.value"], "__REDACTED__");
    assert!(attrs.get("llm.input_messages.0.message.content").is_none());
    assert_eq!(attrs["llm.token_count.prompt"], 42);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("capital of Portugal"),
        "prompt text leaked"
    );
}

/// OTel's content switch turns the jaeger preset's messages on (and only its).
#[test]
fn otel_content_switch_reaches_the_jaeger_preset() {
    let preview = |preset: &str, capture: Option<&str>, hide: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_celgate"));
        cmd.args(["preview", "--preset", preset, "--format", "json"])
            .env_remove("OPENINFERENCE_HIDE_INPUTS")
            .env_remove("OPENINFERENCE_HIDE_OUTPUTS")
            .env_remove("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT");
        if let Some(v) = capture {
            cmd.env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", v);
        }
        if let Some(v) = hide {
            cmd.env("OPENINFERENCE_HIDE_INPUTS", v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let span: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        span["attributes"].clone()
    };
    let has = |a: &serde_json::Value, k: &str| a.get(k).is_some();
    let off = preview("jaeger", None, None);
    assert!(!has(&off, "gen_ai.input.messages") && !has(&off, "gen_ai.output.messages"));
    for on in ["SPAN_ONLY", "true", "span_and_event"] {
        let a = preview("jaeger", Some(on), None);
        assert!(has(&a, "gen_ai.input.messages"), "{on}: {a}");
        assert!(has(&a, "gen_ai.output.messages"), "{on}: {a}");
    }
    for off in ["EVENT_ONLY", "NO_CONTENT", "false"] {
        let a = preview("jaeger", Some(off), None);
        assert!(!has(&a, "gen_ai.output.messages"), "{off}: {a}");
    }
    // OpenInference's switch still hides what it names.
    let a = preview("jaeger", Some("SPAN_ONLY"), Some("true"));
    assert!(!has(&a, "gen_ai.input.messages") && has(&a, "gen_ai.output.messages"));
}

#[test]
fn preview_can_set_the_authenticated_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "config:\n  tracing:\n    fields:\n      add:\n        user.id: client.name\n        team: client.team\n        tenant: default(client.metadata.tenant, \"none\")\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let span = preview_json(&[
        "--config",
        config,
        "--client",
        "ci-bot",
        "--client-team",
        "ml",
        "--client-metadata",
        "tenant=acme",
    ]);
    let attrs = &span["attributes"];
    assert_eq!(attrs["user.id"], "ci-bot");
    assert_eq!(attrs["team"], "ml");
    assert_eq!(attrs["tenant"], "acme");
    // Without one, as with client keys off.
    let span = preview_json(&["--config", config]);
    assert!(span["attributes"].get("user.id").is_none());
    assert_eq!(span["attributes"]["tenant"], "none");
}

#[test]
fn preview_table_lists_types() {
    let out = celgate(&["preview", "--preset", "openllmetry"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("span  openai.chat  (kind CLIENT, status OK)"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("gen_ai.usage.input_tokens")
            && l.contains("int")
            && l.ends_with("42")),
        "{text}"
    );
}

#[test]
fn presets_list_and_show() {
    let out = celgate(&["presets", "list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for p in ["jaeger", "langfuse", "phoenix", "openllmetry"] {
        assert!(text.lines().any(|l| l.starts_with(p)), "{text}");
    }
    let out = celgate(&["presets", "show", "phoenix"]);
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        shown,
        std::fs::read_to_string(repo("presets/phoenix.yaml")).unwrap()
    );
    let out = celgate(&["presets", "show", "zipkin"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown preset `zipkin`"));
}

#[test]
fn a_configmap_manifest_is_checked_with_positions_in_the_manifest() {
    let path = repo("tests/seeds/phoenix-configmap.yaml");
    let out = celgate(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let span = preview_json(&["--config", path.to_str().unwrap()]);
    assert_eq!(span["attributes"]["llm.token_count.total"], 54);

    let manifest = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"llm.total_tokens\"", "\"llm.totalTokenz\"");
    let (code, _, err) = check_yaml(&manifest);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("config.yaml:20:13: attribute `llm.token_count.total`: unknown variable `llm.totalTokenz` (did you mean `llm.totalTokens`?)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Secrets never reach an error message (issue 11)
// ---------------------------------------------------------------------------------------

/// A key as an operator might paste it where it does not belong.
const PASTED_KEY: &str = "sk-live-abcdef1234567890";

/// A line of /etc/shadow (made up): what a config path pointing at the wrong file quotes.
const SHADOW: &str = "root:$6$Zq9kLmN2$wXyZ0123456789abcdefHASHEDsecretVALUE:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n";

/// The parts of a secret that must never be printed (a 3-character prefix may be).
fn assert_no_secret(text: &str, what: &str) {
    for secret in [
        "abcdef1234567890",
        "live-abc",
        "$6$",
        "Zq9kLmN2",
        "HASHEDsecret",
        "hunter2",
        "sk-a",
        "sk-b",
        "tok-3",
    ] {
        assert!(!text.contains(secret), "{what} quotes `{secret}`:\n{text}");
    }
}

/// `celgate run` on `yaml` (written with `files` next to it) and `env`: it must refuse
/// to start. Returns its exit code and stderr.
fn run_refused(yaml: &str, files: &[(&str, &str)], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_celgate"));
    command
        .args(["run", "--config", path.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("LANGFUSE_") {
            command.env_remove(k);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("celgate run started on a config it should refuse:\n{yaml}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

fn backend_with(api_key: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nbackends:\n  - name: oa\n    baseUrl: https://api.openai.com/v1\n    apiKey: {api_key}\n"
    )
}

#[test]
fn config_errors_never_quote_a_secret() {
    let configmap = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: celgate-config\ndata:\n  config.yaml: |\n{}",
        backend_with(PASTED_KEY)
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let cases = [
        // A key pasted in plain text: "unknown variant `sk-live-...`" before.
        (
            "plain apiKey",
            backend_with(PASTED_KEY),
            "config.yaml:6:13:",
        ),
        (
            "apiKey map",
            backend_with(&format!("{{{PASTED_KEY}: x}}")),
            "config.yaml:6:",
        ),
        ("ConfigMap", configmap, "config.yaml:12:17:"),
        // A config path that points at a secret file: "unknown field `root:$6$...`".
        ("shadow file", SHADOW.to_owned(), "config.yaml:1:1:"),
        (
            "unknown variant",
            format!("config:\n  tracing:\n    otlpProtocol: {PASTED_KEY}\n"),
            "config.yaml:3:19:",
        ),
        (
            "duration",
            format!("backends:\n  - name: oa\n    baseUrl: http://x\n    timeout: {PASTED_KEY}\n"),
            "config.yaml:4:14:",
        ),
        (
            "tag",
            format!(
                "backends:\n  - name: oa\n    baseUrl: http://x\n    apiKey: !{PASTED_KEY} x\n"
            ),
            "config.yaml:4:",
        ),
        (
            "unknown key",
            format!("server:\n  {PASTED_KEY}: 1\n"),
            "config.yaml:2:3:",
        ),
        (
            "duplicate key",
            format!(
                "config:\n  tracing:\n    headers:\n      {PASTED_KEY}: a\n      {PASTED_KEY}: b\n"
            ),
            "config.yaml:5:7:",
        ),
        (
            "baseUrl password",
            "backends:\n  - name: oa\n    baseUrl: https://user:hunter2@api.example.com/v1\n"
                .to_owned(),
            "config.yaml:2:5:",
        ),
        (
            "otlpEndpoint password",
            "config:\n  tracing:\n    otlpEndpoint: http://user:hunter2@collector:4317\n"
                .to_owned(),
            "config.yaml:3:19:",
        ),
    ];
    for (what, yaml, position) in &cases {
        let (code, _, err) = check_yaml(yaml);
        assert_eq!(code, 1, "{what}: check accepted it:\n{err}");
        assert!(err.starts_with(position), "{what}: {err}");
        assert_no_secret(&err, &format!("check ({what})"));
        let (code, err) = run_refused(yaml, &[], &[]);
        assert_eq!(code, 1, "{what}: {err}");
        assert_no_secret(&err, &format!("run ({what})"));
    }
}

#[test]
fn unknown_keys_are_cut_but_still_get_a_suggestion() {
    let (code, _, err) = check_yaml("config:\n  tracing:\n    otlpEndpont: http://c:4317\n");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("config.yaml:3:5: unknown field `otl…` (did you mean `otlpEndpoint`?)"),
        "{err}"
    );
    let (_, _, err) = check_yaml(&backend_with(PASTED_KEY));
    assert!(
        err.contains("apiKey must be `{env: VARIABLE}` or `{file: PATH}`"),
        "{err}"
    );
}

#[test]
fn credentials_in_urls_are_refused_without_echoing_them() {
    let yaml = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nbackends:\n  - name: oa\n    baseUrl: https://user:hunter2@api.example.com/v1\n";
    let (_, _, err) = check_yaml(yaml);
    assert!(
        err.contains("backend `oa`: baseUrl `https://***@api.example.com/v1` carries credentials"),
        "{err}"
    );
    assert!(err.contains("apiKey"), "{err}");
    // The standard variable too: refused at start, named, never echoed.
    let yaml = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n";
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        let (code, err) = run_refused(yaml, &[], &[(var, "http://user:hunter2@collector:4318")]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(var) && err.contains("http://***@collector:4318"),
            "{err}"
        );
        assert_no_secret(&err, var);
    }
}

#[test]
fn a_key_that_is_not_one_line_is_refused_by_check_and_run() {
    let yaml = backend_with("{file: key}");
    for (contents, refused) in [
        ("sk-a\nsk-b\n", true),
        ("sk-a\nsk-b", true),
        ("sk-a\u{7}\n", true),
        ("sk-a b\n", true),
        ("tok-3\n", false),
        ("tok-3\r\n", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
        std::fs::write(dir.path().join("key"), contents).unwrap();
        let out = celgate(&["check", dir.path().join("config.yaml").to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(i32::from(refused)),
            "{contents:?}: {err}"
        );
        assert_no_secret(&err, "check");
        if refused {
            assert!(
                err.contains("backend `oa`") && err.contains("key`"),
                "{err}"
            );
            let (code, err) = run_refused(&yaml, &[("key", contents)], &[]);
            assert_eq!(code, 1);
            assert!(
                err.contains("backend `oa`") && err.contains("/key`"),
                "{err}"
            );
            assert_no_secret(&err, "run");
        }
    }
    // From the environment: named by the variable.
    let yaml = backend_with("{env: OA_KEY}");
    let (code, err) = run_refused(&yaml, &[], &[("OA_KEY", "sk-a\nsk-b")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("backend `oa`") && err.contains("`OA_KEY`"),
        "{err}"
    );
    assert_no_secret(&err, "run");
    // A tracing header whose variable holds two lines.
    let yaml = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nconfig:\n  tracing:\n    otlpEndpoint: http://127.0.0.1:1\n    headers:\n      authorization: Bearer ${TOKEN}\n";
    let (code, err) = run_refused(yaml, &[], &[("TOKEN", "sk-a\nsk-b")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`authorization`") && err.contains("TOKEN"),
        "{err}"
    );
    assert_no_secret(&err, "run");
}

#[test]
fn check_reports_what_run_would_refuse() {
    let (code, _, err) = check_yaml("listen: localhost\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`listen`") && err.contains("no port"), "{err}");
    // With the position of the value, as for every other error.
    let (code, _, err) = check_yaml("listen: 127.0.0.1:8080\nadmin: nowhere\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("config.yaml:2:8: "), "{err}");
    assert!(err.contains("`admin`"), "{err}");
    // A variable unset where check runs is only a warning: it may be set where
    // celgate runs.
    let (code, _, err) = check_yaml(&backend_with("{env: CELGATE_SURELY_UNSET_VAR}"));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("CELGATE_SURELY_UNSET_VAR"),
        "{err}"
    );
}

#[test]
fn bad_pricing_entries_are_refused_with_their_positions() {
    let yaml = "pricing:\n  - {model: gpt-4o, input: 2.5, output: 10}\n  - {model: gpt-x, input: -1, output: 10}\n  - {model: gpt-y, input: 1}\n";
    let (code, _, err) = check_yaml(yaml);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("config.yaml:4:") && err.contains("missing field `output`"),
        "{err}"
    );
    let yaml = "pricing:\n  - {model: gpt-4o, input: 2.5, output: 10}\n  - {model: gpt-x, input: -1, output: 10}\n";
    let (code, _, err) = check_yaml(yaml);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("config.yaml:3:5: pricing entry `gpt-x`: `input` is -1"),
        "{err}"
    );
    let (code, _, err) = check_yaml("pricing: cheap\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("config.yaml:1:") && err.contains("pricing must be `default`"),
        "{err}"
    );
}

#[test]
fn preview_prices_the_sample_with_the_default_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "config:\n  tracing:\n    preset: phoenix\npricing: default\n",
    )
    .unwrap();
    let span = preview_json(&["--config", path.to_str().unwrap()]);
    let attrs = &span["attributes"];
    let total = attrs["llm.cost.total"].as_f64().expect("a total cost");
    let parts =
        attrs["llm.cost.prompt"].as_f64().unwrap() + attrs["llm.cost.completion"].as_f64().unwrap();
    assert!((total - parts).abs() < 1e-12, "{attrs}");
    assert!(total > 0.0, "{attrs}");
}
