//! Engine behaviour: functions, attribute typing, merge/remove/limits, run-time
//! errors, and the guards that keep hostile expressions from overflowing a stack.

use celgate_engine::exchange::{Choice, Exchange, Message, ToolCall};
use celgate_engine::plan::Sampler;
use celgate_engine::{AttrValue, LoadOptions, SpanRecord, TracingPlan, load};
use serde_json::json;

fn exchange() -> Exchange {
    Exchange {
        provider: "openai".into(),
        request_model: Some("gpt-4o".into()),
        response_model: None,
        prompt: vec![
            Message {
                role: "system".into(),
                content: Some("be brief".into()),
                ..Default::default()
            },
            Message {
                role: "user".into(),
                content: Some("hi".into()),
                ..Default::default()
            },
        ],
        choices: vec![Choice {
            role: "assistant".into(),
            content: None,
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "lookup".into(),
                arguments: "{\"q\":1}".into(),
            }],
            finish_reason: Some("tool_calls".into()),
            ..Default::default()
        }],
        params: vec![
            ("temperature".into(), json!(0.5)),
            ("stop".into(), json!(["\n", "END"])),
            ("metadata".into(), json!({"team": "search", "tier": 2})),
        ],
        input_tokens: Some(10),
        output_tokens: Some(5),
        total_tokens: Some(15),
        ..Default::default()
    }
}

fn plan(fields: &str) -> TracingPlan {
    let yaml = format!("config:\n  tracing:\n    fields:\n      add:\n{fields}");
    match load(&yaml, &LoadOptions::default()) {
        Ok(l) => l.plan,
        Err(e) => panic!("{}", e.render("test.yaml")),
    }
}

fn eval(fields: &str) -> SpanRecord {
    plan(fields).evaluate(&exchange())
}

fn get<'a>(span: &'a SpanRecord, key: &str) -> Option<&'a AttrValue> {
    span.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn s(v: &str) -> AttrValue {
    AttrValue::String(v.into())
}

#[test]
fn scalars_stay_typed_and_lists_become_arrays_or_json() {
    let span = eval(
        "        a: llm.requestModel\n        b: llm.inputTokens\n        c: llm.params.temperature\n        d: llm.streaming\n        e: llm.params.stop\n        f: '[1, \"x\"]'\n        g: llm.params.metadata\n        h: llm.responseModel\n        i: '[1, 2]'\n",
    );
    assert_eq!(get(&span, "a"), Some(&s("gpt-4o")));
    assert_eq!(get(&span, "b"), Some(&AttrValue::Int(10)));
    assert_eq!(get(&span, "c"), Some(&AttrValue::Double(0.5)));
    assert_eq!(get(&span, "d"), Some(&AttrValue::Bool(false)));
    assert_eq!(
        get(&span, "e"),
        Some(&AttrValue::StringArray(vec!["\n".into(), "END".into()]))
    );
    assert_eq!(get(&span, "f"), Some(&s("[1,\"x\"]")));
    assert_eq!(
        get(&span, "g"),
        Some(&s("{\"team\":\"search\",\"tier\":2}"))
    );
    assert_eq!(get(&span, "h"), None, "null adds nothing");
    assert_eq!(get(&span, "i"), Some(&AttrValue::IntArray(vec![1, 2])));
    assert!(span.errors.is_empty(), "{:?}", span.errors);
}

#[test]
fn flatten_is_one_level_and_flatten_recursive_goes_all_the_way() {
    let span = eval(
        "        p: flatten(llm.params)\n        m: 'flattenRecursive(llm.prompt.map(c, {\"message\": {\"role\": c.role}}))'\n        o: 'flatten_recursive(llm.toolCalls)'\n",
    );
    assert_eq!(get(&span, "p.temperature"), Some(&AttrValue::Double(0.5)));
    assert_eq!(
        get(&span, "p.stop"),
        Some(&AttrValue::StringArray(vec!["\n".into(), "END".into()]))
    );
    // One level only: the nested map is JSON.
    assert_eq!(
        get(&span, "p.metadata"),
        Some(&s("{\"team\":\"search\",\"tier\":2}"))
    );
    assert_eq!(get(&span, "m.0.message.role"), Some(&s("system")));
    assert_eq!(get(&span, "m.1.message.role"), Some(&s("user")));
    assert_eq!(get(&span, "o.0.id"), Some(&s("call_1")));
    assert_eq!(get(&span, "o.0.arguments"), Some(&s("{\"q\":1}")));
    assert!(get(&span, "m").is_none());
}

#[test]
fn to_json_and_default() {
    let span = eval(
        "        j: 'toJson({\"b\": [1, null], \"a\": llm.requestModel})'\n        j2: to_json(llm.finishReasons)\n        d1: 'default(llm.params.missing, \"fallback\")'\n        d2: 'default(llm.responseModel, llm.requestModel)'\n        d3: 'default(llm.params.temperature, 1.0)'\n        d4: 'default(llm.prompt[7].content, \"none\")'\n",
    );
    assert_eq!(
        get(&span, "j"),
        Some(&s("{\"a\":\"gpt-4o\",\"b\":[1,null]}"))
    );
    assert_eq!(get(&span, "j2"), Some(&s("[\"tool_calls\"]")));
    assert_eq!(get(&span, "d1"), Some(&s("fallback")), "absent key");
    assert_eq!(get(&span, "d2"), Some(&s("gpt-4o")), "null value");
    assert_eq!(
        get(&span, "d3"),
        Some(&AttrValue::Double(0.5)),
        "present value"
    );
    assert_eq!(get(&span, "d4"), Some(&s("none")), "missing index");
}

#[test]
fn both_spellings_resolve_to_the_same_value() {
    let span = eval(
        "        a: llm.requestModel == llm.request_model\n        b: llm.inputTokens == llm.input_tokens\n        c: llm.toolCalls == llm.tool_calls\n        d: llm.finishReasons == llm.finish_reasons\n        e: llm.totalTokens + llm.total_tokens\n",
    );
    for k in ["a", "b", "c", "d"] {
        assert_eq!(get(&span, k), Some(&AttrValue::Bool(true)), "{k}");
    }
    assert_eq!(get(&span, "e"), Some(&AttrValue::Int(30)));
}

#[test]
fn whole_roots_can_be_indexed() {
    let span = eval("        a: 'llm[\"requestModel\"]'\n        b: has(llm.provider)\n");
    assert_eq!(get(&span, "a"), Some(&s("gpt-4o")));
    assert_eq!(get(&span, "b"), Some(&AttrValue::Bool(true)));
}

#[test]
fn the_authenticated_client_is_readable_and_absent_without_one() {
    let fields = "        user.id: client.name\n        team: client.team\n        tenant: default(client.metadata.tenant, \"none\")\n        meta: client.metadata\n        via_root: client[\"name\"]\n";
    let mut ex = exchange();
    ex.client = Some(std::sync::Arc::new(celgate_engine::exchange::Client {
        name: "ci-bot".into(),
        team: None,
        metadata: vec![("tenant".into(), "acme".into())],
    }));
    for span in [
        plan(fields).evaluate(&ex),
        plan(fields).evaluate_interpreted(&ex),
    ] {
        assert_eq!(get(&span, "user.id"), Some(&s("ci-bot")));
        assert_eq!(get(&span, "team"), None);
        assert_eq!(get(&span, "tenant"), Some(&s("acme")));
        assert_eq!(get(&span, "meta"), Some(&s("{\"tenant\":\"acme\"}")));
        assert_eq!(get(&span, "via_root"), Some(&s("ci-bot")));
        assert!(span.errors.is_empty(), "{:?}", span.errors);
    }
    // Client keys off: nothing to read, nothing fails.
    let span = eval(fields);
    assert_eq!(get(&span, "user.id"), None);
    assert_eq!(get(&span, "tenant"), Some(&s("none")));
    assert_eq!(get(&span, "meta"), Some(&s("{}")));
    assert!(span.errors.is_empty(), "{:?}", span.errors);
}

#[test]
fn a_run_time_error_drops_only_its_attribute_and_is_counted() {
    let p = plan(
        "        ok: llm.provider\n        bad: llm.prompt[5].content\n        also_ok: llm.inputTokens\n",
    );
    for _ in 0..3 {
        let span = p.evaluate(&exchange());
        assert_eq!(get(&span, "ok"), Some(&s("openai")));
        assert_eq!(get(&span, "also_ok"), Some(&AttrValue::Int(10)));
        assert!(get(&span, "bad").is_none());
        assert_eq!(span.errors.len(), 1);
        assert_eq!(span.errors[0].0, "bad");
    }
    assert_eq!(p.error_counts(), vec![("bad", 3)]);
}

#[test]
fn span_name_and_kind_are_special_keys() {
    let span = eval(
        "        span.name: '\"llm \" + llm.requestModel'\n        span.kind: '\"internal\"'\n        x: '1'\n",
    );
    assert_eq!(span.name, "llm gpt-4o");
    assert_eq!(span.kind.as_str(), "INTERNAL");
    assert!(get(&span, "span.name").is_none());
    // Without span.name, the GenAI convention applies.
    assert_eq!(eval("        x: '1'\n").name, "chat gpt-4o");
}

#[test]
fn user_fields_override_preset_keys_and_remove_applies_last() {
    let yaml = "config:\n  tracing:\n    preset: openllmetry-indexed\n    fields:\n      add:\n        gen_ai.system: '\"custom\"'\n        extra: '1'\n      remove: [llm.is_streaming, gen_ai.prompt.*]\n";
    let span = load(yaml, &LoadOptions::default())
        .unwrap()
        .plan
        .evaluate(&exchange());
    assert_eq!(get(&span, "gen_ai.system"), Some(&s("custom")));
    assert_eq!(get(&span, "extra"), Some(&AttrValue::Int(1)));
    assert!(get(&span, "llm.is_streaming").is_none());
    assert!(
        !span
            .attributes
            .iter()
            .any(|(k, _)| k.starts_with("gen_ai.prompt."))
    );
    assert!(
        span.attributes
            .iter()
            .any(|(k, _)| k.starts_with("gen_ai.completion."))
    );
    // The override keeps the preset's position.
    let pos = |k: &str| {
        span.attributes
            .iter()
            .position(|(key, _)| key == k)
            .unwrap()
    };
    assert!(pos("gen_ai.system") < pos("extra"));
}

#[test]
fn limits_truncate_values_and_cap_attribute_count() {
    let yaml = "config:\n  tracing:\n    limits:\n      maxAttributes: 3\n      maxValueLength: 4\n    fields:\n      add:\n        a: '\"abcdefgh\"'\n        b: '1'\n        c: '2'\n        d: '3'\n";
    let span = load(yaml, &LoadOptions::default())
        .unwrap()
        .plan
        .evaluate(&exchange());
    assert_eq!(span.attributes.len(), 3);
    assert_eq!(get(&span, "a"), Some(&s("abcd")));
    assert_eq!(span.dropped_attributes, 1);
}

#[test]
fn the_plan_knows_what_expressions_read() {
    let p = plan("        a: llm.requestModel\n        b: 'llm.choices.map(c, c.role)'\n");
    assert!(p.reads("llm.requestModel"));
    assert!(p.reads("llm.choices"));
    assert!(!p.reads("llm.prompt"));
    assert!(!p.reads("llm.requestBody"));
    let p = plan("        a: 'llm[\"prompt\"]'\n");
    assert!(
        p.reads("llm.prompt"),
        "a whole-root read reads everything under it"
    );
}

#[test]
fn resources_are_evaluated_at_load() {
    let yaml = "config:\n  tracing:\n    resources:\n      openinference.project.name: '\"my-app\"'\n      deployment.environment: '\"prod-\" + string(2)'\n";
    let p = load(yaml, &LoadOptions::default()).unwrap().plan;
    assert_eq!(
        p.resources,
        vec![
            ("openinference.project.name".into(), s("my-app")),
            ("deployment.environment".into(), s("prod-2")),
        ]
    );
}

#[test]
fn sampling_rules_compile() {
    let p = load(
        "config:\n  tracing:\n    randomSampling: 0.25\n    clientSampling: false\n",
        &LoadOptions::default(),
    )
    .unwrap()
    .plan;
    assert!(matches!(p.random_sampling, Sampler::Ratio(r) if r == 0.25));
    assert!(matches!(p.client_sampling, Sampler::Never));
    let p = load(
        "config:\n  tracing:\n    randomSampling: 'llm.requestModel.startsWith(\"gpt\")'\n",
        &LoadOptions::default(),
    )
    .unwrap()
    .plan;
    assert_eq!(p.eval_sampler(&p.random_sampling, &exchange()), Ok(true));
    let err = load(
        "config:\n  tracing:\n    randomSampling: 'llm.requestModle == \"x\"'\n",
        &LoadOptions::default(),
    )
    .unwrap_err();
    let text = err.render("c.yaml");
    assert!(
        text.starts_with("c.yaml:3:21: randomSampling: unknown variable `llm.requestModle`"),
        "{text}"
    );
}

#[test]
fn a_yaml_scalar_that_is_not_a_string_is_a_literal_expression() {
    let span = eval("        a: true\n        b: 42\n        c: 1.5\n");
    assert_eq!(get(&span, "a"), Some(&AttrValue::Bool(true)));
    assert_eq!(get(&span, "b"), Some(&AttrValue::Int(42)));
    assert_eq!(get(&span, "c"), Some(&AttrValue::Double(1.5)));
}

#[test]
fn plain_text_api_keys_are_refused() {
    let yaml = "backends:\n  - name: openai\n    baseUrl: https://api.openai.com/v1\n    apiKey: sk-live-123\n";
    let err = load(yaml, &LoadOptions::default())
        .unwrap_err()
        .render("c.yaml");
    assert!(err.starts_with("c.yaml:4:"), "{err}");
    assert!(err.contains("apiKey must be `{env: VARIABLE}`"), "{err}");
    assert!(!err.contains("live-123"), "the key is echoed: {err}");
    let yaml = "backends:\n  - name: openai\n    baseUrl: https://api.openai.com/v1\n    apiKey: {env: OPENAI_API_KEY}\n";
    assert!(load(yaml, &LoadOptions::default()).is_ok());
    let yaml = "backends:\n  - name: openai\n    baseUrl: https://api.openai.com/v1\n    apiKey: {env: A, file: b}\n";
    assert!(load(yaml, &LoadOptions::default()).is_err());
}

#[test]
fn passwords_in_urls_are_refused_with_positions_and_never_echoed() {
    let yaml = "config:\n  tracing:\n    otlpEndpoint: https://u:hunter2@collector:4318\nbackends:\n  - name: a\n    baseUrl: https://key:hunter2@api.example.com/v1\n  - name: b\n    baseUrl: hunter2@x\n";
    let err = load(yaml, &LoadOptions::default())
        .unwrap_err()
        .render("c.yaml");
    assert!(
        err.contains(
            "c.yaml:5:5: backend `a`: baseUrl `https://***@api.example.com/v1` carries credentials"
        ),
        "{err}"
    );
    assert!(
        err.contains("c.yaml:7:5: backend `b`: baseUrl `***@x` must start with http://"),
        "{err}"
    );
    assert!(
        err.contains("c.yaml:3:19: otlpEndpoint `https://***@collector:4318` carries credentials"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// Run `f` on a thread with a small stack: what a guard must protect.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("thread overflowed or panicked")
}

fn load_err(expr: String) -> String {
    let yaml = format!(
        "config:\n  tracing:\n    fields:\n      add:\n        x: {}\n",
        serde_json::to_string(&expr).unwrap()
    );
    match load(&yaml, &LoadOptions::default()) {
        Ok(_) => "ok".into(),
        Err(e) => e.render("c.yaml"),
    }
}

#[test]
fn long_operator_chains_are_refused_without_overflowing_the_caller() {
    // ~2,700 chained terms: far past what the parser handles on a normal stack.
    let expr = vec!["1"; 2700].join("+");
    assert!(expr.len() <= 8 * 1024);
    let err = on_small_stack(move || load_err(expr));
    assert!(err.contains("too deeply structured"), "{err}");
}

#[test]
fn deep_nesting_and_oversized_expressions_are_refused() {
    let err = on_small_stack(|| load_err(format!("{}1{}", "(".repeat(1000), ")".repeat(1000))));
    assert!(
        err.contains("nests brackets 33 deep; the limit is 32"),
        "{err}"
    );
    let err = on_small_stack(|| load_err(format!("\"{}\"", "a".repeat(10_000))));
    assert!(err.contains("the limit is 8192"), "{err}");
    let err = on_small_stack(|| load_err(format!("{}1{}", "[".repeat(40), "]".repeat(40))));
    assert!(err.contains("nests brackets"), "{err}");
}

#[test]
fn the_deepest_accepted_expression_evaluates_on_a_small_stack() {
    // Just under the AST depth cap; evaluation must fit the documented stack
    // (half of it, to keep a margin even in this debug build).
    let expr = format!("llm.inputTokens{}", " + 1".repeat(60));
    let p = plan(&format!("        x: '{expr}'\n"));
    let span = std::thread::Builder::new()
        .stack_size(celgate_engine::plan::EVAL_STACK_SIZE / 2)
        .spawn(move || p.evaluate(&exchange()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(get(&span, "x"), Some(&AttrValue::Int(70)));
}

#[test]
fn hostile_deep_request_data_is_cut_not_recursed() {
    // A tool definition nested far deeper than any real schema.
    let mut deep = json!("leaf");
    // serde_json refuses documents nested deeper than 128, so this is the worst
    // a parsed request can carry.
    for _ in 0..127 {
        deep = json!({ "a": deep });
    }
    let mut ex = exchange();
    ex.tools = vec![deep];
    let p = plan("        t: toJson(llm.tools)\n        f: flattenRecursive(llm.tools)\n");
    let span = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || p.evaluate(&ex))
        .unwrap()
        .join()
        .expect("evaluation overflowed the stack");
    assert!(matches!(get(&span, "t"), Some(AttrValue::String(t)) if t.contains("…")));
    assert!(
        span.attributes
            .iter()
            .any(|(k, _)| k.starts_with("f.0.a.a"))
    );
}

#[test]
fn backends_are_checked_with_positions() {
    let yaml = "backends:\n  - name: a\n    baseUrl: https://api.openai.com/v1\n  - name: a\n    baseUrl: ftp://x\n";
    let err = match load(yaml, &LoadOptions::default()) {
        Err(e) => e.render("c.yaml"),
        Ok(_) => panic!("bad backends were accepted"),
    };
    assert!(
        err.contains("c.yaml:4:5: backend name `a` is used twice"),
        "{err}"
    );
    assert!(
        err.contains("c.yaml:4:5: backend `a`: baseUrl `ftp://x` must start with http://"),
        "{err}"
    );
    let ok = "backends:\n  - name: a\n    baseUrl: http://127.0.0.1:1/v1\n    timeout: 2s\n    models: [gpt-*]\n";
    let loaded = load(ok, &LoadOptions::default()).expect("valid backend");
    let b = &loaded.file.backends[0].value;
    assert!(b.serves("gpt-4o") && !b.serves("claude-3"));
    assert_eq!(b.timeout.unwrap().0, std::time::Duration::from_secs(2));
    let bad = "backends:\n  - name: a\n    baseUrl: http://x\n    timeout: soon\n";
    let err = match load(bad, &LoadOptions::default()) {
        Err(e) => e.render("c.yaml"),
        Ok(_) => panic!("bad duration accepted"),
    };
    assert!(
        err.contains("c.yaml:4:14: invalid duration: write a whole number"),
        "{err}"
    );
    assert!(!err.contains("soon"), "the value is not echoed: {err}");
}
