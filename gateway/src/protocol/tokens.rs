//! Token counts, as every protocol reports them and as the exchange records them.
//!
//! Protocols spell usage differently (`prompt_tokens`, `input_tokens`, ...); each
//! reads its own spelling into a `Usage`, and `set_usage` records it the one way
//! the spans and the GenAI histograms expect: a count is a non-negative integer (an
//! integral float such as `12.0` counts, a negative or fractional one is no count at
//! all), and a missing total is the sum of the two parts.

use celgate_engine::exchange::{Exchange, TokenDetails};
use serde_json::Value;

use super::lenient::integral_f64;

/// Token counts as an upstream reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub total: Option<i64>,
    pub details: TokenDetails,
}

/// Records token usage, computing `total` as `input + output` when it is absent.
pub(crate) fn set_usage(ex: &mut Exchange, usage: Usage) {
    ex.input_tokens = usage.input;
    ex.output_tokens = usage.output;
    ex.total_tokens = usage
        .total
        .or_else(|| usage.input?.checked_add(usage.output?));
    ex.token_details = usage.details;
}

/// An integer token count; integral floats (`12.0`) are accepted, anything else is not
/// a count.
fn json_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(integral_f64)),
        _ => None,
    }
}

/// A token count: an integer that is not negative (a negative count from a backend
/// is no count at all, so it cannot reach a span or a histogram).
pub(crate) fn json_count(v: &Value) -> Option<i64> {
    json_i64(v).filter(|n| *n >= 0)
}
