//! Sample: whether this call's span is exported.
//!
//! An incoming `traceparent` decides when `clientSampling` says to honour it;
//! otherwise `randomSampling` does (a ratio, or a CEL expression over the whole
//! request, which is why sampling runs after routing and before the request parts
//! nobody reads are dropped). `OTEL_TRACES_SAMPLER` stands in when the config sets
//! neither.

use celgate_engine::exchange::Exchange;
use celgate_engine::plan::Sampler;

use crate::state::Generation;
use crate::trace_context::{self, SpanIds};

/// The sampling decision for `exchange`, whose span has `ids`.
pub fn decide(generation: &Generation, exchange: &Exchange, ids: &SpanIds) -> bool {
    let plan = &generation.plan;
    if let Some(env) = generation.settings.env_sampler {
        return match ids.parent {
            Some(parent) if env.parent_based => parent.sampled,
            _ => trace_context::ratio_sampled(ids.trace_id, env.ratio),
        };
    }
    let decide = |sampler: &Sampler| match sampler {
        Sampler::Always => true,
        Sampler::Never => false,
        Sampler::Ratio(r) => trace_context::ratio_sampled(ids.trace_id, *r),
        Sampler::Expression(_) => plan.eval_sampler(sampler, exchange).unwrap_or_else(|e| {
            tracing::debug!("sampling expression failed, sampling this request: {e}");
            true
        }),
    };
    if let Some(parent) = ids.parent
        && decide(&plan.client_sampling)
    {
        return parent.sampled;
    }
    decide(&plan.random_sampling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::generation;

    fn ids(traceparent: Option<&str>) -> SpanIds {
        SpanIds::new(traceparent.and_then(|t| trace_context::parse_traceparent(t.as_bytes())))
    }

    const UNSAMPLED_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    #[test]
    fn an_expression_reads_the_request_and_a_parent_decides_when_honoured() {
        let g =
            generation("config:\n  tracing:\n    randomSampling: 'llm.requestModel == \"keep\"'\n");
        let keep = Exchange {
            request_model: Some("keep".into()),
            ..Exchange::default()
        };
        assert!(decide(&g, &keep, &ids(None)));
        assert!(!decide(&g, &Exchange::default(), &ids(None)));
        // clientSampling defaults to honouring the parent's flag.
        assert!(!decide(&g, &keep, &ids(Some(UNSAMPLED_PARENT))));
    }
}
