//! The one mapping from an [`Exchange`] to the variables of the context.
//!
//! [`read`] says, for each variable, which part of the exchange it is and what
//! the privacy switches leave of it: hidden inputs make `llm.prompt` empty and
//! `llm.requestBody` [`REDACTED`], hidden outputs do the same to the response's
//! variables. Both evaluators read variables only through it (the native one
//! directly, the interpreter through [`super::ExchangeResolver`]), so a new
//! variable or a new privacy rule is written once.

use std::rc::Rc;

use super::{REDACTED, Var, View};
use crate::exchange::Exchange;
use crate::pricing::Cost;
use crate::value::{Field, Value, opt_int, opt_str};
use std::time::{SystemTime, UNIX_EPOCH};

/// The value of `var` in `ex`, as `view` lets expressions see it. Borrows the
/// exchange: nothing is copied.
#[inline]
pub(crate) fn read<'a>(ex: &'a Exchange, view: &View, var: Var) -> Value<'a> {
    let hide_in = view.vis.hide_inputs;
    let hide_out = view.vis.hide_outputs;
    match var {
        Var::Provider => Value::Str(&ex.provider),
        Var::Operation => Value::Str(ex.operation.as_str()),
        Var::Api => Value::Str(ex.api.as_str()),
        Var::RequestModel => opt_str(ex.request_model.as_deref()),
        Var::ResponseModel => opt_str(ex.response_model.as_deref()),
        Var::ResponseId => opt_str(ex.response_id.as_deref()),
        Var::Streaming => Value::Bool(ex.streaming),
        Var::System => Value::Strings(if hide_in { &[] } else { &ex.system }),
        Var::Prompt => Value::Messages(if hide_in { &[] } else { &ex.prompt }),
        Var::Completion => Value::Contents(if hide_out { &[] } else { &ex.choices }),
        Var::Reasoning => Value::Reasonings(if hide_out { &[] } else { &ex.choices }),
        Var::Choices => Value::Choices(if hide_out { &[] } else { &ex.choices }),
        Var::ToolCalls => Value::AllToolCalls(if hide_out { &[] } else { &ex.choices }),
        Var::Tools => Value::JsonList(&ex.tools),
        Var::InputTokens => opt_int(ex.input_tokens),
        Var::OutputTokens => opt_int(ex.output_tokens),
        Var::TotalTokens => opt_int(ex.total_tokens),
        Var::CacheReadTokens => opt_int(ex.token_details.cache_read),
        Var::CacheWriteTokens => opt_int(ex.token_details.cache_write),
        Var::InputAudioTokens => opt_int(ex.token_details.input_audio),
        Var::ReasoningTokens => opt_int(ex.token_details.reasoning),
        Var::OutputAudioTokens => opt_int(ex.token_details.output_audio),
        Var::Params => Value::Params(&ex.params),
        Var::FinishReasons => Value::FinishReasons(&ex.choices),
        Var::RequestBody => redactable(ex.request_body.as_deref(), hide_in),
        Var::ResponseBody => redactable(ex.response_body.as_deref(), hide_out),
        Var::ResponseTruncated => Value::Bool(ex.response_truncated),
        Var::SessionId => opt_str(ex.session_id.as_deref()),
        Var::UserId => opt_str(ex.user_id.as_deref()),
        Var::TimeToFirstToken => match ex.time_to_first_token_ms {
            Some(ms) => Value::Double(ms),
            None => Value::Null,
        },
        Var::Cost => cost(&view.cost),
        Var::FirstTokenTime => ex
            .start_time
            .zip(ex.time_to_first_token_ms)
            .and_then(|(start, ms)| {
                let after = std::time::Duration::try_from_secs_f64(ms / 1e3).ok()?;
                start.checked_add(after)
            })
            .map_or(Value::Null, rfc3339),
        Var::ReqStartTime => ex.start_time.map_or(Value::Null, rfc3339),
        Var::ReqHasParent => Value::Bool(ex.has_parent),
        Var::ReqMethod => Value::Str(&ex.request.method),
        Var::ReqPath => Value::Str(&ex.request.path),
        Var::ReqHeaders => Value::Headers(&ex.request.headers),
        Var::RespStatus => opt_int(ex.response.status.map(i64::from)),
        Var::RespDuration => match ex.response.duration_ms {
            Some(d) => Value::Double(d),
            None => Value::Null,
        },
        Var::RespHeaders => Value::Headers(&ex.response.headers),
        Var::RespError => opt_str(ex.error_type.as_deref()),
        Var::SourceAddress => opt_str(ex.source_address.as_deref()),
        Var::BackendName => opt_str(ex.backend_name.as_deref()),
        Var::BackendAddress => opt_str(ex.backend_host.as_deref()),
        Var::BackendPort => opt_int(ex.backend_port.map(i64::from)),
        Var::ClientName => opt_str(ex.client.as_deref().map(|c| c.name.as_str())),
        Var::ClientTeam => opt_str(ex.client.as_deref().and_then(|c| c.team.as_deref())),
        Var::ClientMetadata => Value::Headers(ex.client.as_deref().map_or(&[], |c| &c.metadata)),
        // A whole root is a map of its variables: the resolver builds it from
        // theirs, and the native evaluator never reads one.
        Var::Llm | Var::Request | Var::Response | Var::Source | Var::Backend | Var::Client => {
            Value::Null
        }
    }
}

/// One part of a [`Cost`].
type CostPart = fn(&Cost) -> Option<f64>;

/// The parts of `llm.cost`, by key: the one list both [`cost`] (the whole map)
/// and [`read_field`] (one part, `llm.cost.total`) read.
const COST_PARTS: [(&str, CostPart); 8] = [
    ("input", |c| c.input),
    ("uncachedInput", |c| c.uncached_input),
    ("cacheRead", |c| c.cache_read),
    ("cacheWrite", |c| c.cache_write),
    ("output", |c| c.output),
    ("nonReasoningOutput", |c| c.non_reasoning_output),
    ("reasoning", |c| c.reasoning),
    ("total", |c| c.total),
];

/// A USD part: null when unknown.
fn usd<'a>(v: Option<f64>) -> Value<'a> {
    v.map_or(Value::Null, Value::Double)
}

/// `llm.cost`: every key always present, null where the part is unknown.
fn cost<'a>(c: &Cost) -> Value<'a> {
    Value::Map(Rc::new(
        COST_PARTS
            .iter()
            .map(|(k, part)| (*k, usd(part(c))))
            .collect(),
    ))
}

/// `var.field` (a field of a map variable), as [`Value::map_get_field`] answers
/// it on [`read`]'s value, without building the map where a variable is one:
/// the preset that writes eight `llm.cost.*` attributes would otherwise make and
/// drop the cost map eight times per span.
#[inline]
pub(crate) fn read_field<'a>(
    ex: &'a Exchange,
    view: &View,
    var: Var,
    field: &Field,
) -> Option<Option<Value<'a>>> {
    match var {
        Var::Cost => Some(
            COST_PARTS
                .iter()
                .find(|(k, _)| *k == &*field.name)
                .map(|(_, part)| usd(part(&view.cost))),
        ),
        _ => read(ex, view, var).map_get_field(field),
    }
}

/// `2026-12-01T12:00:00.180000Z`: UTC, microseconds (as Langfuse's SDK writes
/// times). Before 1970 (a broken clock) reads as null.
fn rfc3339(t: SystemTime) -> Value<'static> {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        return Value::Null;
    };
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Value::Owned(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_micros()
    ))
}

fn redactable(s: Option<&str>, hidden: bool) -> Value<'_> {
    match (s, hidden) {
        (Some(_), true) => Value::Str(REDACTED),
        (s, _) => opt_str(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        let at = |s: u64, us: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us);
        let text = |t| match rfc3339(t) {
            Value::Owned(s) => s,
            v => panic!("{v:?}"),
        };
        assert_eq!(text(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            text(at(1_796_126_400, 180_000)),
            "2026-12-01T12:00:00.180000Z"
        );
        assert_eq!(text(at(951_782_400, 1)), "2000-02-29T00:00:00.000001Z");
        assert!(matches!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            Value::Null
        ));
        let ex = Exchange {
            start_time: Some(at(1_796_126_400, 0)),
            time_to_first_token_ms: Some(180.0),
            ..Exchange::default()
        };
        let first = read(&ex, &crate::context::View::default(), Var::FirstTokenTime);
        assert_eq!(first.as_str(), Some("2026-12-01T12:00:00.180000Z"));
        for ms in [f64::NAN, -1.0, f64::INFINITY, 1e300] {
            let ex = Exchange {
                time_to_first_token_ms: Some(ms),
                ..ex.clone()
            };
            let v = read(&ex, &crate::context::View::default(), Var::FirstTokenTime);
            assert!(matches!(v, Value::Null), "{ms}");
        }
    }
}
