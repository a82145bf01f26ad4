//! The native evaluator against the CEL interpreter: every expression here is
//! evaluated both ways on varied exchanges (absent fields, nulls, duplicates,
//! deep JSON, hidden inputs and outputs) and the spans must be identical, errors
//! included. Some expressions must also be settled natively, so that the
//! comparison exercises the native path and not only its fallback.

use crate::exchange::{Exchange, Operation};
use crate::fixture::{rich, sparse};
use crate::{LoadOptions, PresetName, SpanRecord, TracingPlan, load};

fn exchanges() -> Vec<(&'static str, Exchange)> {
    let mut completion = rich();
    completion.operation = Operation::TextCompletion;
    completion.request_model = Some(String::new());
    vec![
        ("rich", rich()),
        ("sparse", sparse()),
        ("empty", Exchange::default()),
        ("completion", completion),
    ]
}

const PRIVACY: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn quote(expr: &str) -> String {
    format!("'{}'", expr.replace('\'', "''"))
}

fn plan_of(fields: &[(&str, &str)], privacy: (bool, bool), extra: &str) -> TracingPlan {
    let mut yaml = format!(
        "config:\n  tracing:\n    privacy: {{hideInputs: {}, hideOutputs: {}}}\n{extra}",
        privacy.0, privacy.1
    );
    if !fields.is_empty() {
        yaml.push_str("    fields:\n      add:\n");
    }
    for (k, e) in fields {
        yaml.push_str(&format!("        {k}: {}\n", quote(e)));
    }
    match load(&yaml, &LoadOptions::default()) {
        Ok(l) => l.plan,
        Err(e) => panic!("{}", e.render("test.yaml")),
    }
}

/// Spans compared through `Debug`, so that NaN equals NaN.
fn same(a: &SpanRecord, b: &SpanRecord) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Evaluate `plan` both ways on every exchange; panic on any difference.
/// Returns how many (field, exchange) pairs the native path settled.
fn compare(plan: &TracingPlan, what: &str) -> usize {
    let mut settled = 0;
    for (name, ex) in exchanges() {
        let native = plan.evaluate(&ex);
        let interpreted = plan.evaluate_interpreted(&ex);
        assert!(
            same(&native, &interpreted),
            "{what} on {name} ({:?}):\n native:      {native:?}\n interpreted: {interpreted:?}",
            plan.visibility()
        );
        settled += plan
            .native_outcomes(&ex)
            .iter()
            .filter(|(_, ok)| *ok == Some(true))
            .count();
    }
    settled
}

/// Expressions, each as the one field `t.x`.
const EXPRESSIONS: &[&str] = &[
    // variables, both spellings
    "llm.provider",
    "llm.operation",
    "llm.requestModel",
    "llm.request_model",
    "llm.responseModel",
    "llm.responseId",
    "llm.streaming",
    "llm.prompt",
    "llm.completion",
    "llm.choices",
    "llm.toolCalls",
    "llm.tool_calls",
    "llm.tools",
    "llm.inputTokens",
    "llm.output_tokens",
    "llm.totalTokens",
    "llm.params",
    "llm.finishReasons",
    "llm.requestBody",
    "llm.response_body",
    "request.method",
    "request.path",
    "request.headers",
    "response.status",
    "response.duration",
    "response.headers",
    "response.error",
    "source.address",
    "backend.name",
    "backend.address",
    "backend.port",
    "client.name",
    "client.team",
    "client.metadata",
    "client.metadata.tenant",
    "client.metadata[\"cost.center\"]",
    "default(client.metadata.tenant, \"none\")",
    "flattenRecursive(client.metadata)",
    "client",
    "llm",
    "request",
    "llm.params.deep",
    // flattening
    "flattenRecursive(llm.prompt)",
    "flatten(llm.prompt)",
    "flattenRecursive(llm.choices)",
    "flattenRecursive(llm.tools)",
    "flatten(llm.tools)",
    "flattenRecursive(llm.params)",
    "flatten(llm.params)",
    "flattenRecursive(request.headers)",
    "flattenRecursive(llm.toolCalls)",
    "flattenRecursive(llm.completion)",
    "flattenRecursive(llm.finishReasons)",
    "flattenRecursive(1)",
    "flattenRecursive(null)",
    "flattenRecursive(\"x\")",
    "flattenRecursive([])",
    "flattenRecursive({})",
    "flattenRecursive([[1, 2], [3]])",
    "flatten([[1, 2], [3]])",
    "flatten([[1, \"a\"], [null]])",
    "flatten({\"a\": {\"b\": 1}})",
    "flattenRecursive({\"a.b\": 1, \"a\": {\"b\": 2}})",
    "flattenRecursive({\"\": {\"\": 1}, \"x\": 2})",
    "flattenRecursive({\"\": [1, {\"\": 2}]})",
    "flattenRecursive([flattenRecursive(llm.prompt)])",
    "flattenRecursive({\"a\": flatten([1, 2])})",
    "flatten({\"a\": flatten({\"b\": {\"c\": 1}})})",
    "flattenRecursive(flattenRecursive({\"a\": {\"b\": 1}}))",
    "toJson(flattenRecursive(llm.prompt))",
    "default(flattenRecursive(llm.prompt), null)",
    "flattenRecursive(llm.prompt.map(m, {\"message\": m}))",
    "flattenRecursive(llm.prompt.map(m, m.tool_calls))",
    "flattenRecursive(llm.prompt.filter(m, m.role == \"user\"))",
    "flattenRecursive(llm.prompt.map(m, m.role != \"system\", m.content))",
    "flattenRecursive(llm.prompt.map(m, [m.role, 1]))",
    "flatten(llm.prompt.map(m, [m.role, 1]))",
    "flatten(llm.prompt.map(m, [m.role]))",
    "flattenRecursive(llm.prompt.map(m, {\"x\": m.nope}))",
    "flattenRecursive(llm.prompt.map(m, {\"x\": m.content.size()}))",
    "flattenRecursive(llm.operation == \"chat\" ? llm.prompt : llm.choices)",
    "flattenRecursive(llm.params.nope ? llm.prompt : llm.choices)",
    "flattenRecursive({\"deep\": llm.params.deep})",
    "flatten(llm.params.deep)",
    "flattenRecursive([llm.prompt, llm.choices, 1, \"x\", null, 2.5, true, 3u])",
    // (Not `request.headers.map(k, k)`: a map's keys come in the interpreter's
    // hash order, which varies from run to run.)
    "size(request.headers.map(k, k))",
    "flattenRecursive(type(1))",
    "llm.operation == \"embeddings\" ? null : flattenRecursive(llm.prompt.map(m, {\"message\": {\"role\": m.role, \"content\": m.content}}))",
    // default
    "default(llm.params.temperature, null)",
    "default(llm.params.nope, 5)",
    "default(llm.params.n, 5)",
    "default(llm.params.max_tokens, default(llm.params.max_completion_tokens, null))",
    "default(request.headers[\"x-session-id\"], null)",
    "default(request.headers[\"x-user-id\"], default(llm.params.user, null))",
    "default(llm.prompt[100].content, \"none\")",
    "default(llm.prompt[0].content, \"none\")",
    "default(1 / 0, 2)",
    "default(llm.responseModel, llm.requestModel)",
    "default(llm.prompt.map(m, m.nope), llm.prompt.map(n, n.role))",
    "default(llm.prompt.map(m, m.tool_calls.map(t, t.nope)), llm.prompt.map(n, n.tool_calls.map(u, n.role + u.name)))",
    // operators
    "llm.operation == \"chat\" ? 1 : 2",
    "llm.streaming ? \"s\" : \"n\"",
    "llm.provider ? 1 : 2",
    "size(llm.prompt) == 0 ? null : size(llm.prompt)",
    "llm.inputTokens + 1",
    "llm.inputTokens + default(llm.outputTokens, 0)",
    "llm.inputTokens - 1",
    "-llm.inputTokens",
    "-9223372036854775807 - 2",
    "9223372036854775807 + 1",
    "1u + 2u",
    "1u - 2u",
    "1.5 + 2.5",
    "1.5 - 2.5",
    "-1.5",
    "1 + 2.0",
    "\"a\" + llm.provider",
    "llm.provider + \" \" + default(llm.requestModel, \"\")",
    "llm.prompt + llm.choices",
    "[1] + [2]",
    "[1] + llm.completion",
    "null + 1",
    "1 * 2",
    "size(\"héllo\")",
    "size(llm.prompt)",
    "llm.prompt.size()",
    "size(llm.params)",
    "double(llm.params.temperature)",
    "double(llm.params.max_tokens)",
    "double(llm.inputTokens) + 0.5",
    "double(\"1.5\")",
    "double(llm.requestModel)",
    "default(llm.params.top_p, null) == null ? null : double(llm.params.top_p)",
    "size(request.headers)",
    "size(llm.tools[0])",
    "size(llm.toolCalls)",
    "size(llm.prompt[0])",
    "size(llm.choices[0])",
    "size(llm.prompt[2].tool_calls[0])",
    "size(1)",
    "llm.inputTokens > 10",
    "llm.inputTokens <= 40",
    "llm.provider < \"z\"",
    "llm.provider >= \"z\"",
    "1.0 < 2.0",
    "1 < 2.0",
    "1u > 0u",
    "true < false",
    // equality
    "llm.params.temperature == 0.3",
    "llm.params.max_tokens == 256",
    "llm.params.max_tokens == 256.0",
    "llm.params.max_tokens != 1u",
    "null == llm.responseModel",
    "llm.responseModel != null",
    "llm.prompt == []",
    "llm.prompt == null",
    "llm.params == {}",
    "llm.prompt == {}",
    "llm.prompt[0] == \"x\"",
    // a string literal on the right, against every kind of value
    "llm.provider == \"openai\"",
    "llm.provider != \"openai\"",
    "llm.inputTokens == \"498\"",
    "llm.responseModel == \"x\"",
    "llm.prompt != \"x\"",
    "llm.params == \"x\"",
    "llm.prompt[0].content == \"x\"",
    "type(llm.provider) == \"string\"",
    "(llm.provider + \"-x\") == \"openai-x\"",
    "flatten(llm.params) == \"x\"",
    "parseJson(\"[1]\") == \"x\"",
    "parseJson(\"\\\"x\\\"\") == \"x\"",
    "\"a\" == 1",
    "1 == \"a\"",
    "true == 1",
    "true == true",
    "type(llm.params.stop) == string",
    "type(llm.params.stop) == list",
    "type(llm.params) == map",
    "type(llm.prompt[0]) == map",
    "type(null) == null_type",
    "type(1u) == uint",
    "type(1) == int",
    "type(1.0) == double",
    "type(true) == bool",
    "type(\"\") == string",
    "type(1) == type(2)",
    "type(1) == \"int\"",
    "type(llm.prompt)",
    "type(flatten(1)) == int",
    "default(llm.params.stop, null) == null ? null : type(llm.params.stop) == string ? [llm.params.stop] : llm.params.stop",
    // logic
    "true && false",
    "llm.streaming || false",
    "llm.params.nope || true",
    "llm.params.nope || false",
    "llm.params.nope && false",
    "llm.params.nope && true",
    "1 && true",
    "false && 1",
    "true && 1",
    "!llm.streaming",
    "!1",
    "!(1 / 0 == 1)",
    // has
    "has(llm.params.temperature)",
    "has(llm.params.nope)",
    "has(llm.prompt)",
    "has(llm.request_model)",
    "has(request.headers.x)",
    "llm.prompt.map(m, has(m.name))",
    "has(llm.params.stop.x)",
    "has(llm.provider.x)",
    "has(llm.tools[0].function.description)",
    // indexing and selection
    "llm.prompt[0]",
    "llm.prompt[0].role",
    "llm.prompt[-1]",
    "llm.prompt[99]",
    "llm.params[\"temperature\"]",
    "request.headers[\"x-session-id\"]",
    "request.headers[\"x-dup\"]",
    "request.headers[\"nope\"]",
    "request.headers.nope",
    "llm.tools[0].function.name",
    "llm.tools[0][\"function\"][\"parameters\"]",
    "llm.params.stop[0]",
    "llm.params.stop[1]",
    "llm.prompt[0u]",
    "llm.prompt[\"x\"]",
    "llm.params[1]",
    "llm.choices[0].index",
    "llm.choices[1].content",
    "llm.completion[0]",
    "llm.completion[1]",
    "llm.finishReasons[1]",
    "llm.toolCalls[0].name",
    "llm.toolCalls[0]",
    "llm.prompt.role",
    "llm.provider.x",
    "llm.responseModel.x",
    "llm.prompt[0].nope",
    "\"abc\"[0]",
    "llm.params.metadata",
    "llm.params.metadata.b",
    "llm.params.metadata.b[1]",
    // JSON
    "toJson(llm.params)",
    "toJson(llm.prompt)",
    "toJson(llm.tools)",
    "toJson(llm.choices)",
    "toJson(request.headers)",
    "toJson({\"a\": [1, 2.5, \"x\", null, true, 2u, 18446744073709551615u]})",
    "toJson(1.0)",
    "toJson(\"x\\n\\\"\")",
    "toJson(null)",
    "to_json(llm.toolCalls)",
    "toJson(type(1))",
    "toJson(llm.params.deep)",
    "toJson({\"x\": llm.params.deep})",
    "toJson(default(llm.tools[1].function.parameters, {}))",
    "toJson(llm.prompt.map(m, {\"role\": m.role, \"content\": m.content, \"tool_calls\": m.tool_calls, \"tool_call_id\": m.tool_call_id}))",
    // parsing JSON
    "parseJson(\"{\\\"a\\\": [1, 2.5, {\\\"b\\\": null}], \\\"c\\\": \\\"d\\\"}\")",
    "parseJson(\"[1, 2]\")",
    "parseJson(\"[1, \\\"a\\\"]\")",
    "parseJson(\"not json\")",
    "parseJson(\"\")",
    "parseJson(\"3\")",
    "parseJson(\"1e400\")",
    "parseJson(\"18446744073709551615\")",
    "parseJson(\"\\\"s\\\"\")",
    "parseJson(\"null\")",
    "parseJson(1)",
    "parseJson(null)",
    "parse_json(llm.toolCalls)",
    "parseJson(\"[1]\") == [1]",
    "parseJson(\"{}\") == {}",
    "parseJson(\"[1]\") == 1",
    "size(parseJson(\"[1, 2]\"))",
    "parseJson(\"{\\\"a\\\": 1}\").a",
    "toJson(parseJson(\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\"))",
    "flattenRecursive(parseJson(\"{\\\"a\\\": {\\\"b\\\": [1, 2]}}\"))",
    "flatten(parseJson(\"{\\\"a\\\": {\\\"b\\\": 1}}\"))",
    "toJson(llm.toolCalls.map(t, parseJson(t.arguments)))",
    "toJson(llm.prompt.map(m, m.tool_calls.map(t, {\"arguments\": parse_json(t.arguments)})))",
    "toJson(llm.prompt.map(m, parseJson(m.content)))",
    // division: doubles natively, the rest by the interpreter
    "llm.timeToFirstToken / 1000.0",
    "1.0 / 0.0",
    "-1.0 / 0.0",
    "0.0 / 0.0",
    "7 / 2",
    "7 / 0",
    "7.0 / 2",
    "response.duration / 1000.0",
    // compact
    "compact({\"a\": null, \"b\": 1, \"c\": [null]})",
    "toJson(compact({\"a\": null}))",
    "toJson(llm.prompt.map(m, compact({\"role\": m.role, \"content\": m.content, \"tool_call_id\": m.tool_call_id, \"name\": m.name})))",
    "compact(llm.params)",
    "toJson(compact(llm.params))",
    "compact(request.headers)",
    "compact(null)",
    "compact([null, 1])",
    "compact(\"x\")",
    "size(compact({\"a\": null, \"b\": 2}))",
    "compact({\"a\": null}) == {}",
    "compact({1: null, 2: 3})",
    "compact(parseJson(\"{\\\"a\\\": null}\"))",
    // strings
    "llm.provider.startsWith(\"op\")",
    "llm.provider.endsWith(\"ai\")",
    "llm.provider.contains(\"pen\")",
    "llm.responseModel.startsWith(\"gpt\")",
    "llm.provider.startsWith(1)",
    "llm.provider.matches(\"^o\")",
    // comprehensions
    "llm.prompt.map(m, m.tool_calls.map(t, t.name))",
    "llm.prompt.map(m, m.tool_calls.map(t, m.role + t.name))",
    "llm.prompt.map(llm, llm.role)",
    "llm.prompt.map(m, llm.prompt.map(m, m.role))",
    "llm.prompt.map(m, llm.prompt.size())",
    "llm.prompt.exists(m, m.role == \"user\")",
    "llm.prompt.all(m, true)",
    "[1, 2, 3].map(x, x + 1)",
    "[1, 2, 3].filter(x, x > 1)",
    "[1, 2, 3].map(x, x > 1, x * 2)",
    "llm.prompt.map(m, m.nope)",
    "llm.prompt.filter(m, m.content)",
    "llm.prompt.filter(m, m.name == \"alice\")",
    "llm.provider.map(c, c)",
    "null.map(c, c)",
    "llm.prompt.map(string, string.role)",
    "llm.prompt.map(m, type(m) == map)",
    // literals
    "1u",
    "18446744073709551615u",
    "9223372036854775807",
    "1.5",
    "\"x\"",
    "null",
    "true",
    "[1, 2]",
    "[1, \"a\"]",
    "[1u, 2]",
    "[1.5, 2.5]",
    "[true]",
    "[]",
    "{}",
    "{\"a\": 1}",
    "[[1]]",
    "[null]",
    "{\"a\": 1, \"a\": 2}",
    "{1: 2}",
    "b\"x\"",
    "string",
];

#[test]
fn native_matches_the_interpreter_expression_by_expression() {
    let mut settled = 0;
    for (i, expr) in EXPRESSIONS.iter().enumerate() {
        for privacy in PRIVACY {
            let plan = plan_of(&[("t.x", expr)], privacy, "");
            settled += compare(&plan, &format!("#{i} `{expr}`"));
        }
    }
    // Most of these have a native form; the rest exercise the fallback.
    assert!(
        settled > EXPRESSIONS.len() * 4 * 2,
        "settled only {settled}"
    );
}

/// Tool-call arguments parsed for `gen_ai.output.messages` stay on the native path.
#[test]
fn parsed_tool_call_arguments_settle_natively() {
    let plan = plan_of(
        &[(
            "t.x",
            "toJson(llm.toolCalls.map(t, {\"arguments\": parseJson(t.arguments)}))",
        )],
        (false, false),
        "",
    );
    let ex = rich();
    assert_eq!(
        plan.native_outcomes(&ex),
        vec![("t.x".to_owned(), Some(true))]
    );
    assert_eq!(compare(&plan, "parsed arguments"), 4);
    let span = plan.evaluate(&ex);
    let crate::AttrValue::String(text) = &span.attributes[0].1 else {
        panic!("{span:?}")
    };
    assert!(text.contains(r#"{"arguments":{"q":"#), "{text}");
}

#[test]
fn native_matches_the_interpreter_on_every_preset() {
    for preset in PresetName::ALL {
        for privacy in PRIVACY {
            let extra = format!("    preset: {}\n", preset.as_str());
            let plan = plan_of(&[], privacy, &extra);
            compare(&plan, preset.as_str());
        }
    }
}

#[test]
fn span_name_and_kind_natively() {
    for expr in [
        "llm.operation + \" \" + default(llm.requestModel, \"\")",
        "llm.operation + (default(llm.requestModel, \"\") == \"\" ? \"\" : \" \" + llm.requestModel)",
        "1",
        "null",
        "[1]",
        "type(1)",
        "flatten([1])",
        "llm.params.nope",
        "\"server\"",
        "\"SERVER\"",
        "\"bogus\"",
        "llm.provider",
    ] {
        for key in ["span.name", "span.kind"] {
            let plan = plan_of(&[(key, expr), ("a", "1")], (false, false), "");
            compare(&plan, &format!("{key}: {expr}"));
        }
    }
}

#[test]
fn duplicate_keys_removal_and_limits_match() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        // Attributes of different fields that share a key.
        (
            &[
                ("a", "flattenRecursive({\"b\": 1, \"c\": 2})"),
                ("a.b", "3"),
            ],
            "",
        ),
        (&[("a.b", "3"), ("a", "flattenRecursive({\"b\": 1})")], ""),
        (
            &[("a", "flattenRecursive(llm.prompt)"), ("a.0.role", "\"x\"")],
            "",
        ),
        (&[("a", "flatten(1)"), ("b", "2")], ""),
        // Within one field.
        (
            &[("a", "flattenRecursive({\"x.y\": 1, \"x\": {\"y\": 2}})")],
            "",
        ),
        (
            &[(
                "a",
                "default(flattenRecursive({\"x\": {\"y\": 2}, \"x.y\": 1}), null)",
            )],
            "",
        ),
        (&[("a", "flattenRecursive(request.headers)")], ""),
        // Removal and limits.
        (
            &[
                ("a", "flattenRecursive(llm.prompt)"),
                ("b", "llm.requestBody"),
                ("c", "1"),
            ],
            "      remove: [a.1.*, c]\n",
        ),
    ];
    for (fields, remove) in cases {
        let plan = plan_of(fields, (false, false), "");
        compare(&plan, &format!("{fields:?}"));
        if !remove.is_empty() {
            let yaml_fields: String = fields
                .iter()
                .map(|(k, e)| format!("        {k}: {}\n", quote(e)))
                .collect();
            for limits in ["", "    limits: {maxAttributes: 3, maxValueLength: 5}\n"] {
                let yaml = format!(
                    "config:\n  tracing:\n{limits}    fields:\n      add:\n{yaml_fields}{remove}"
                );
                let plan = load(&yaml, &LoadOptions::default()).unwrap().plan;
                compare(&plan, &yaml);
            }
        }
    }
}

#[test]
fn preset_fields_are_settled_natively() {
    // The bars in BENCHMARKS.md rely on these never reaching the interpreter on
    // an ordinary chat exchange, nor on a Messages, Responses or Gemini call.
    let mut exchanges = vec![("rich", rich())];
    exchanges.extend(crate::fixture::protocol_calls());
    for preset in PresetName::ALL {
        let extra = format!("    preset: {}\n", preset.as_str());
        for privacy in PRIVACY {
            let plan = plan_of(&[], privacy, &extra);
            for (name, ex) in &exchanges {
                for (key, ok) in plan.native_outcomes(ex) {
                    assert_eq!(ok, Some(true), "{preset:?} {privacy:?} {name}: {key}");
                }
                assert_eq!(
                    plan.evaluate(ex),
                    plan.evaluate_interpreted(ex),
                    "{preset:?} {name}"
                );
            }
        }
    }
}

#[test]
fn related_keys_are_detected() {
    use crate::plan::related_keys;
    let rel = |keys: &[&str]| related_keys(keys.iter().copied());
    assert!(!rel(&["a", "b", "a-b", "ab.c"]));
    assert!(rel(&["a", "a"]));
    assert!(rel(&["a.b", "x", "a"]));
    assert!(rel(&["a", "a!", "a.c"]));
    assert!(!rel(&["span.name", "span", "span.kind"]));
    assert!(!rel(&[
        "llm.tools",
        "llm.token_count.prompt",
        "llm.input_messages",
        "llm.input"
    ]));
}

#[test]
fn a_long_borrowed_string_is_cut_before_it_is_copied_and_matches_the_interpreter() {
    let yaml = "config:\n  tracing:\n    limits: {maxValueLength: 7}\n    fields:\n      add:\n        out: llm.responseBody\n        flat: 'flatten({\"a\": llm.responseBody})'\n";
    let plan = load(yaml, &LoadOptions::default()).unwrap().plan;
    let ex = Exchange {
        // 2-byte chars: a cut at 7 bytes must back off to 6.
        response_body: Some("é".repeat(100_000)),
        ..Exchange::default()
    };
    let native = plan.evaluate(&ex);
    assert_eq!(native.attributes, plan.evaluate_interpreted(&ex).attributes);
    let want = crate::AttrValue::String("ééé".to_owned());
    assert_eq!(
        native.attributes,
        vec![
            ("out".to_owned(), want.clone()),
            ("flat.a".to_owned(), want)
        ]
    );
    assert!(
        plan.native_outcomes(&ex)
            .iter()
            .all(|(_, ok)| *ok == Some(true))
    );
}

#[test]
fn json_strings_are_written_as_serde_json_writes_them() {
    // Every ASCII byte, at every offset from an 8-byte word's start, among
    // plain text and multi-byte characters.
    let mut cases = vec![String::new(), "é😀\u{7f}\u{80}\u{2028}".to_owned()];
    for b in 0u8..0x80 {
        for pad in 0..10 {
            let c = char::from(b);
            cases.push(format!("{}{c}é{}", "a".repeat(pad), "b".repeat(9 - pad)));
        }
    }
    cases.push((0u8..0x80).map(char::from).collect::<String>().repeat(3));
    for s in cases {
        let mut out = Vec::new();
        super::emit::json_str(&s, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&s).unwrap(),
            "{s:?}"
        );
    }
}
