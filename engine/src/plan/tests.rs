//! The evaluation budget end to end: nested comprehensions estimated and
//! dropped, linear work past the step budget stopped, bounded names and keys.

use super::*;
use crate::exchange::{Exchange, Message};
use crate::native;

fn plan(fields: &str) -> Result<TracingPlan, ConfigError> {
    let yaml = format!("config:\n  tracing:\n    fields:\n      add:\n{fields}");
    load(&yaml, &LoadOptions::default()).map(|l| l.plan)
}

fn messages(n: usize) -> Exchange {
    Exchange {
        request_model: Some("gpt-4o".into()),
        prompt: (0..n)
            .map(|i| Message {
                role: "user".into(),
                content: Some(format!("message {i}")),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn attr<'r>(rec: &'r SpanRecord, key: &str) -> Option<&'r AttrValue> {
    rec.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

const QUADRATIC: &str = "size(llm.prompt.map(a, llm.prompt.map(b, b)))";

#[test]
fn a_quadratic_expression_on_a_large_request_is_dropped_and_counted() {
    let plan = plan(&format!(
        "        quadratic: '{QUADRATIC}'\n        count: size(llm.prompt)\n"
    ))
    .unwrap();
    let ex = messages(6_000);
    for rec in [plan.evaluate(&ex), plan.evaluate_interpreted(&ex)] {
        assert_eq!(attr(&rec, "quadratic"), None);
        assert_eq!(attr(&rec, "count"), Some(&AttrValue::Int(6_000)));
        assert_eq!(rec.errors.len(), 1, "{:?}", rec.errors);
        assert_eq!(rec.errors[0].0, "quadratic");
        assert!(
            rec.errors[0].1.contains("36000000 iterations"),
            "{:?}",
            rec.errors
        );
    }
    assert_eq!(plan.error_counts(), vec![("quadratic", 2)]);
    // On a small request the same expression is cheap, and evaluated.
    let rec = plan.evaluate(&messages(10));
    assert_eq!(attr(&rec, "quadratic"), Some(&AttrValue::Int(10)));
    assert!(rec.errors.is_empty());
}

#[test]
fn linear_work_of_quadratic_size_is_stopped_by_the_step_budget() {
    // No nested comprehension (nothing to estimate at load), but the JSON
    // is 6,000 copies of 6,000 messages.
    let plan = plan("        big: 'toJson(llm.prompt.map(a, llm.prompt))'\n").unwrap();
    let rec = plan.evaluate(&messages(6_000));
    assert_eq!(attr(&rec, "big"), None);
    assert!(
        rec.errors
            .iter()
            .any(|(k, e)| k == "big" && e.contains("budget per expression")),
        "{:?}",
        rec.errors
    );
    // The same on a small request is in budget and matches the interpreter.
    let small = messages(3);
    assert_eq!(plan.evaluate(&small), plan.evaluate_interpreted(&small));
    assert!(plan.evaluate(&small).errors.is_empty());
}

#[test]
fn the_budget_does_not_cut_linear_passes_over_large_requests() {
    let plan = plan(
        "        contents: 'llm.prompt.map(m, m.content)'\n        json: 'toJson(llm.prompt)'\n        flat: 'flattenRecursive(llm.prompt.map(m, {\"role\": m.role, \"content\": m.content}))'\n",
    )
    .unwrap();
    let rec = plan.evaluate(&messages(50_000));
    assert!(rec.errors.is_empty(), "{:?}", rec.errors);
    assert!(attr(&rec, "contents").is_some() && attr(&rec, "json").is_some());
}

#[test]
fn nests_over_dependent_ranges_are_linear_and_free() {
    let c = expr::compile(&cel_env(), "llm.prompt.map(m, m.tool_calls.map(t, t.name))").unwrap();
    assert!(c.cost.nests.is_empty());
    let c = expr::compile(&cel_env(), "llm.prompt.map(m, [1, 2].map(x, x))").unwrap();
    assert!(c.cost.nests.is_empty());
    let c = expr::compile(
        &cel_env(),
        "llm.prompt.exists(m, llm.tools.exists(t, t.name == m.name))",
    )
    .unwrap();
    assert_eq!(c.cost.nests.len(), 1);
    let ex = Exchange {
        tools: vec![serde_json::json!({}); 7],
        ..messages(5)
    };
    let native = native::Eval::new(&ex, crate::context::View::default());
    assert_eq!(c.cost.estimate(|v| native.size_of(v)), 35);
}

#[test]
fn a_cubic_expression_is_refused_at_load() {
    let err = plan("        cubic: 'llm.prompt.map(a, llm.prompt.map(b, llm.prompt.map(c, c)))'\n")
        .unwrap_err();
    let text = err.render("test.yaml");
    assert!(
        text.contains("nests 3 comprehensions over request data"),
        "{text}"
    );
    assert!(plan(&format!("        q: '{QUADRATIC}'\n")).is_ok());
}

#[test]
fn a_sampling_rule_with_a_nest_is_refused_at_load() {
    let yaml = format!(
        "config:\n  tracing:\n    randomSampling: '{QUADRATIC} > 0'\n    fields:\n      add:\n        a: llm.requestModel\n"
    );
    let err = load(&yaml, &LoadOptions::default()).unwrap_err();
    assert!(err.render("t.yaml").contains("a sampling rule may not"));
}

#[test]
fn span_names_keys_and_resources_are_bounded() {
    let model = "m".repeat(5 * 1024 * 1024);
    let ex = Exchange {
        request_model: Some(model.clone()),
        operation: crate::exchange::Operation::Chat,
        params: vec![("x".repeat(3000), serde_json::json!(1))],
        ..Default::default()
    };
    let yaml = "config:\n  tracing:\n    resources:\n      service.name: '\"abcdefgh\"'\n    limits: {maxValueLength: 4}\n    fields:\n      add:\n        p: flatten(llm.params)\n        model: llm.requestModel\n";
    let plan = load(yaml, &LoadOptions::default()).unwrap().plan;
    assert_eq!(
        plan.resources,
        vec![("service.name".to_owned(), AttrValue::String("abcd".into()))]
    );
    for rec in [plan.evaluate(&ex), plan.evaluate_interpreted(&ex)] {
        assert_eq!(rec.name.len(), MAX_NAME_LENGTH);
        assert!(rec.name.starts_with("chat mmm"));
        let (key, _) = rec
            .attributes
            .iter()
            .find(|(k, _)| k.starts_with("p."))
            .expect("the flattened param");
        assert_eq!(key.len(), MAX_NAME_LENGTH);
        assert_eq!(attr(&rec, "model"), Some(&AttrValue::String("mmmm".into())));
    }
}
