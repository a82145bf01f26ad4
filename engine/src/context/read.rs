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
use crate::value::{Value, opt_int, opt_str};

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

/// `llm.cost`: every key always present, null where the part is unknown.
fn cost<'a>(c: &Cost) -> Value<'a> {
    let usd = |v: Option<f64>| v.map_or(Value::Null, Value::Double);
    Value::Map(Rc::new(vec![
        ("input", usd(c.input)),
        ("uncachedInput", usd(c.uncached_input)),
        ("cacheRead", usd(c.cache_read)),
        ("cacheWrite", usd(c.cache_write)),
        ("output", usd(c.output)),
        ("nonReasoningOutput", usd(c.non_reasoning_output)),
        ("reasoning", usd(c.reasoning)),
        ("total", usd(c.total)),
    ]))
}

fn redactable(s: Option<&str>, hidden: bool) -> Value<'_> {
    match (s, hidden) {
        (Some(_), true) => Value::Str(REDACTED),
        (s, _) => opt_str(s),
    }
}
