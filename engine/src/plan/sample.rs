//! Sampling rules: `randomSampling` and `clientSampling`, compiled at load and
//! evaluated before a request is sent.
//!
//! A rule is `true`/`false`, a ratio (drawn by the gateway) or a CEL expression.
//! An expression runs on the interpreter alone, before there is a response, so it
//! gets no per-request cost estimate: a rule that nests comprehensions over
//! request data is refused at load.

use cel::{Context, Program, Value};
use serde_saphyr::Spanned;
use std::sync::Arc;

use crate::attributes::{self, AttrValue};
use crate::compile::{Compiled, ExprError};
use crate::config::Sampling;
use crate::context::{ExchangeResolver, VarSet};
use crate::diagnostics::Diagnostic;
use crate::exchange::Exchange;

use super::TracingPlan;
use super::compile::snippet_of;

/// A sampling rule, compiled.
#[derive(Debug)]
pub enum Sampler {
    Always,
    Never,
    Ratio(f64),
    Expression(Box<Program>),
}

/// A sampling rule as written, if it is.
pub(super) type SamplingSpec<'a> = &'a Option<Spanned<Sampling>>;

/// The two rules, `[randomSampling, clientSampling]`, compiled: a diagnostic for
/// each that is wrong (the rule then samples everything, but the load fails).
/// `reads` gains the variables the expressions read.
pub(super) fn samplers(
    specs: &[SamplingSpec; 2],
    compiled: Vec<Option<Result<Compiled, ExprError>>>,
    reads: &mut VarSet,
    diagnostics: &mut Vec<Diagnostic>,
) -> [Sampler; 2] {
    let mut out = ["randomSampling", "clientSampling"]
        .iter()
        .zip(specs.iter().zip(compiled))
        .map(|(name, (spec, c))| sampler(name, spec, c, reads, diagnostics));
    let random = out.next().unwrap_or(Sampler::Always);
    let client = out.next().unwrap_or(Sampler::Always);
    [random, client]
}

fn sampler(
    name: &str,
    spec: &Option<Spanned<Sampling>>,
    compiled: Option<Result<Compiled, ExprError>>,
    reads: &mut VarSet,
    diagnostics: &mut Vec<Diagnostic>,
) -> Sampler {
    match (spec.as_ref(), compiled) {
        (None, _) => Sampler::Always,
        (Some(s), Some(Ok(c))) if !c.cost.nests.is_empty() => {
            diagnostics.push(Diagnostic::new(
                s.referenced.into(),
                format!("{name}: the expression nests comprehensions over request data inside one another; a sampling rule may not"),
            ));
            Sampler::Always
        }
        (Some(_), Some(Ok(c))) => {
            reads.extend(c.reads);
            Sampler::Expression(Box::new(c.program))
        }
        (Some(s), Some(Err(e))) => {
            diagnostics.push(Diagnostic {
                pos: s.referenced.into(),
                message: format!("{name}: {e}"),
                snippet: snippet_of(s_expr(&s.value), &e),
            });
            Sampler::Always
        }
        (Some(s), None) => match s.value {
            Sampling::Bool(true) => Sampler::Always,
            Sampling::Bool(false) => Sampler::Never,
            Sampling::Ratio(r) if (0.0..=1.0).contains(&r) => Sampler::Ratio(r),
            Sampling::Ratio(r) => {
                diagnostics.push(Diagnostic::new(
                    s.referenced.into(),
                    format!("{name}: ratio {r} is outside 0..1"),
                ));
                Sampler::Always
            }
            Sampling::Expression(_) => Sampler::Always,
        },
    }
}

fn s_expr(s: &Sampling) -> &str {
    match s {
        Sampling::Expression(e) => e,
        _ => "",
    }
}

impl TracingPlan {
    /// Evaluate a sampling expression on `ex`: `Ok(true)` to sample. A ratio
    /// rule is an error (the caller draws).
    pub fn eval_sampler(&self, sampler: &Sampler, ex: &Exchange) -> Result<bool, String> {
        match sampler {
            Sampler::Always => Ok(true),
            Sampler::Never => Ok(false),
            Sampler::Ratio(_) => Err("ratio samplers are drawn by the caller".into()),
            Sampler::Expression(p) => {
                let resolver = ExchangeResolver::new(ex, self.visibility);
                let mut ctx = Context::with_env(Arc::clone(&self.env));
                ctx.set_variable_resolver(&resolver);
                let v = Value::resolve_val(p.expression(), &ctx).map_err(|e| e.to_string())?;
                match attributes::scalar(v.as_ref()) {
                    Some(AttrValue::Bool(b)) => Ok(b),
                    _ => Err("sampling expression did not yield a bool".into()),
                }
            }
        }
    }
}
