use super::*;
use crate::exchange::TokenDetails;

fn table(yaml: &str) -> Result<Table, ConfigError> {
    let pricing: Pricing = crate::plan::parse_yaml(yaml)?;
    Table::load(Some(&pricing))
}

fn exchange(
    input: i64,
    read: Option<i64>,
    write: Option<i64>,
    output: i64,
    reasoning: Option<i64>,
) -> Exchange {
    Exchange {
        request_model: Some("m".into()),
        input_tokens: Some(input),
        output_tokens: Some(output),
        token_details: TokenDetails {
            cache_read: read,
            cache_write: write,
            reasoning,
            ..TokenDetails::default()
        },
        ..Exchange::default()
    }
}

const RATES: &str =
    "- {model: m, input: 3, cachedInput: 0.3, cacheWrite: 3.75, output: 15, reasoning: 20}\n";

#[test]
fn cache_parts_are_priced_at_their_rates_and_the_rest_at_the_input_rate() {
    let t = table(RATES).unwrap();
    // 1,000,000 input tokens: 200,000 read, 100,000 written, 700,000 plain;
    // 10,000 output tokens, 4,000 of them reasoning.
    let c = t.cost(&exchange(
        1_000_000,
        Some(200_000),
        Some(100_000),
        10_000,
        Some(4_000),
    ));
    assert_eq!(c.uncached_input, Some(2.1));
    assert_eq!(c.cache_read, Some(0.06));
    assert_eq!(c.cache_write, Some(0.375));
    assert_eq!(c.input, Some(2.535));
    assert_eq!(c.non_reasoning_output, Some(0.09));
    assert_eq!(c.reasoning, Some(0.08));
    assert_eq!(c.output, Some(0.17));
    assert_eq!(c.total, Some(2.705));
}

#[test]
fn parts_not_reported_are_null_and_defaults_fall_back_to_the_plain_rates() {
    let t = table("- {model: m, input: 2.5, output: 10}\n").unwrap();
    let c = t.cost(&exchange(1000, None, None, 500, None));
    assert_eq!((c.input, c.uncached_input), (Some(0.0025), Some(0.0025)));
    assert_eq!(
        (c.cache_read, c.cache_write, c.reasoning),
        (None, None, None)
    );
    assert_eq!((c.output, c.total), (Some(0.005), Some(0.0075)));
    // No rate of its own: a cached token costs an input token.
    let c = t.cost(&exchange(1000, Some(1000), None, 0, Some(0)));
    assert_eq!(
        (c.cache_read, c.uncached_input, c.reasoning),
        (Some(0.0025), Some(0.0), Some(0.0))
    );
    // An embedding: input only.
    let mut ex = exchange(1000, None, None, 0, None);
    ex.output_tokens = None;
    let c = t.cost(&ex);
    assert_eq!((c.output, c.total), (None, Some(0.0025)));
    ex.input_tokens = None;
    assert_eq!(t.cost(&ex), Cost::default());
}

#[test]
fn contradictory_counts_are_clamped_so_parts_add_up() {
    let t = table(RATES).unwrap();
    let c = t.cost(&exchange(100, Some(80), Some(50), -5, Some(7)));
    // 80 read, then only 20 left to have been written; no plain input.
    assert_eq!(c.uncached_input, Some(0.0));
    assert_eq!(c.cache_write, Some(round(usd(20, 3.75))));
    assert_eq!(c.output, Some(0.0));
    assert_eq!(c.reasoning, Some(0.0));
}

#[test]
fn the_first_matching_entry_wins_reported_model_before_requested() {
    let t = table(
        "- {model: gpt-4o-mini*, input: 0.15, output: 0.6}\n- {model: gpt-4o*, input: 2.5, output: 10}\n- {model: my-alias, input: 1, output: 1}\n",
    )
    .unwrap();
    let rate = |resp: Option<&str>, req: Option<&str>| t.rates_for(resp, req).map(|r| r.input);
    assert_eq!(rate(Some("gpt-4o-mini-2024-07-18"), None), Some(0.15));
    assert_eq!(rate(Some("gpt-4o-2024-08-06"), None), Some(2.5));
    // The upstream's name wins; the asked-for name is the fallback.
    assert_eq!(rate(Some("gpt-4o"), Some("my-alias")), Some(2.5));
    assert_eq!(rate(Some("unlisted"), Some("my-alias")), Some(1.0));
    assert_eq!(rate(None, Some("gpt-4o-mini")), Some(0.15));
    assert_eq!(rate(Some("claude"), Some("gemini")), None);
    let mut ex = exchange(10, None, None, 10, None);
    ex.request_model = Some("unpriced".into());
    assert_eq!(t.cost(&ex), Cost::default());
}

#[test]
fn own_entries_go_before_the_default_table_where_the_list_says() {
    let t = table("- {model: gpt-4o, input: 1, output: 1}\n- default\n").unwrap();
    assert_eq!(
        t.rates_for(Some("gpt-4o"), None).map(|r| r.input),
        Some(1.0)
    );
    assert!(t.entries().len() > 20);
    assert_eq!(t.entries()[1..], table("default").unwrap().entries()[..]);
}

#[test]
fn the_default_table_loads_and_prices_common_models() {
    let t = table("default").unwrap();
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-5",
        "o3",
        "o4-mini",
        "claude-sonnet-4-5-20250929",
        "claude-opus-4-1-20250805",
        "claude-haiku-4-5",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "text-embedding-3-small",
    ] {
        assert!(
            t.rates_for(Some(model), None).is_some(),
            "{model} has no price"
        );
    }
    // More specific entries come first.
    let input = |m: &str| t.rates_for(Some(m), None).map(|r| r.input);
    assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(0.15));
    assert_eq!(input("gpt-4o-2024-08-06"), Some(2.5));
    assert_eq!(input("gemini-2.5-flash-lite"), Some(0.1));
    assert_eq!(input("gemini-2.5-flash"), Some(0.3));
}

#[test]
fn bad_entries_are_refused_with_their_position() {
    let e = table("- {model: m, input: 1, output: 1}\n- {model: x, input: -1, output: .nan}\n")
        .unwrap_err();
    let messages: Vec<String> = e
        .diagnostics
        .iter()
        .map(|d| d.render("config.yaml"))
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("config.yaml:2:3: pricing entry `x`: `input` is -1"),
        "{messages:?}"
    );
    assert!(messages[1].contains("`output` is NaN"), "{messages:?}");
    let e = table("- {model: ' ', input: 1, output: 1}\n").unwrap_err();
    assert!(
        e.diagnostics[0]
            .message
            .contains("`model` must name a model"),
        "{e:?}"
    );
}

#[test]
fn malformed_pricing_is_a_positioned_parse_error() {
    let cases = [
        ("cheap", "pricing must be `default`"),
        ("- {model: m, input: 1}\n", "missing field `output`"),
        (
            "- {model: m, input: 1, output: 1, cahced: 1}\n",
            "unknown field",
        ),
        ("- {model: m, input: one, output: 1}\n", ""),
        ("- defaults\n", "a pricing item is a price entry"),
    ];
    for (yaml, want) in cases {
        let e = table(yaml).unwrap_err();
        let d = &e.diagnostics[0];
        assert!(d.message.contains(want), "{yaml}: {}", d.message);
        assert!(d.pos.line >= 1 && d.pos.column >= 1, "{yaml}: {d:?}");
    }
}

#[test]
fn llm_cost_reads_the_same_in_both_evaluators_and_is_null_when_unpriced() {
    use crate::attributes::AttrValue;
    let yaml = "config:\n  tracing:\n    fields:\n      add:\n        in: llm.cost.input\n        read: llm.cost.cacheRead\n        total: llm.cost.total\n        keys: size(llm.cost)\n        priced: llm.cost.total != null\n        thinking: llm.cost.reasoning\n        nope: llm.cost.nope\npricing:\n  - {model: m, input: 3, cachedInput: 0.3, output: 15}\n";
    let plan = crate::load(yaml, &crate::LoadOptions::default())
        .unwrap()
        .plan;
    let ex = exchange(1_000_000, Some(200_000), None, 10_000, None);
    let native = plan.evaluate(&ex);
    let interpreted = plan.evaluate_interpreted(&ex);
    // A part that does not exist is an error, the same one both ways.
    let errored =
        |r: &crate::SpanRecord| r.errors.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(errored(&native), ["nope"], "{:?}", native.errors);
    assert_eq!(native.errors, interpreted.errors);
    assert_eq!(native.attributes, interpreted.attributes);
    let get = |k: &str| {
        native
            .attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("in"), Some(AttrValue::Double(2.46)));
    assert_eq!(get("read"), Some(AttrValue::Double(0.06)));
    assert_eq!(get("total"), Some(AttrValue::Double(2.61)));
    assert_eq!(get("priced"), Some(AttrValue::Bool(true)));
    assert_eq!(
        get("keys"),
        Some(AttrValue::Int(8)),
        "every part always present"
    );
    // An unpriced model: the parts are null (no attribute, no error).
    let mut other = ex.clone();
    other.request_model = Some("unpriced".into());
    let rec = plan.evaluate(&other);
    assert_eq!(errored(&rec), ["nope"], "{:?}", rec.errors);
    assert_eq!(rec.attributes, plan.evaluate_interpreted(&other).attributes);
    assert_eq!(
        rec.attributes
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["keys", "priced"]
    );
}
