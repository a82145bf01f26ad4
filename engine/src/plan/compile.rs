//! Compiling the merged config's expressions: attribute fields, resources and
//! sampling rules, all on one thread with the stack the `cel` parser needs.
//!
//! Each expression is compiled by [`crate::compile`] (which checks its variables,
//! functions and cost); this module runs those compiles on the big stack, turns
//! every failure into a positioned diagnostic (the key's line, a caret under the
//! bad spot, "in preset ..." for a preset's field), and evaluates the resources,
//! which have no request to wait for.

use cel::{Context, Env, Value};
use std::sync::Arc;

use crate::attributes::{self, AttrValue};
use crate::compile::{self as expr, ExprError};
use crate::config::{Pos, Sampling};
use crate::context::{ExchangeResolver, Visibility};
use crate::diagnostics::{ConfigError, Diagnostic, Snippet};
use crate::exchange::Exchange;
use crate::presets;

use super::merge::{Merged, Source};
use super::sample::SamplingSpec;
use super::{CompiledField, MAX_NAME_LENGTH, Origin};

thread_local! {
    /// Set on threads whose stack is at least [`COMPILE_STACK`].
    static ON_COMPILE_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Stack for the compiling thread: the `cel` parser recurses on the input.
const COMPILE_STACK: usize = 256 * 1024 * 1024;

fn on_compile_stack() -> bool {
    ON_COMPILE_STACK.with(|f| f.get())
}

/// Spawn a thread with the compiling thread's stack, on which [`crate::load`]
/// compiles in place instead of spawning one per call (fuzzing loads millions of
/// configs). `f` runs with the stack it needs to compile anything.
#[doc(hidden)]
pub fn spawn_with_compile_stack<F, T>(f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("celgate-compile".into())
        .stack_size(COMPILE_STACK)
        .spawn(move || {
            ON_COMPILE_STACK.with(|flag| flag.set(true));
            f()
        })
}

type Shared = Result<Arc<expr::Compiled>, ExprError>;

/// Every expression of a config, compiled (or why not), in config order.
pub(super) struct Compiled {
    pub fields: Vec<Shared>,
    pub resources: Vec<Shared>,
    /// Per sampling rule: `None` when it is not an expression.
    pub samplers: Vec<Option<Result<expr::Compiled, ExprError>>>,
}

/// Compile everything on one thread with a large stack.
pub(super) fn compile_all(
    env: &Arc<Env>,
    merged: &Merged,
    sampling: &[SamplingSpec; 2],
) -> Result<Compiled, ConfigError> {
    let all = || Compiled {
        fields: merged
            .fields
            .iter()
            .map(|src| expr::compile_shared(env, &src.field.expr))
            .collect(),
        resources: merged
            .resources
            .iter()
            .map(|src| expr::compile_shared(env, &src.field.expr))
            .collect(),
        samplers: sampling
            .iter()
            .map(|s| match s.as_ref().map(|s| &s.value) {
                Some(Sampling::Expression(e)) => Some(expr::compile(env, e)),
                _ => None,
            })
            .collect(),
    };
    let compiled = if on_compile_stack() {
        // Already on such a thread (see `fuzzing::spawn_with_compile_stack`).
        Ok(Ok(all()))
    } else {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("celgate-compile".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(s, all)
                .map(|h| h.join())
        })
    };
    match compiled {
        Ok(Ok(c)) => Ok(c),
        _ => Err(ConfigError::single(Diagnostic::new(
            Pos { line: 1, column: 1 },
            "could not compile the expressions (compiler thread failed)",
        ))),
    }
}

/// The attribute fields that compiled; a diagnostic for each that did not.
pub(super) fn fields(
    sources: &[Source],
    results: Vec<Shared>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<CompiledField> {
    let mut out = Vec::new();
    for (src, result) in sources.iter().zip(results) {
        match result {
            Ok(c) => out.push(CompiledField {
                key: src.field.key.clone(),
                expr: src.field.expr.clone(),
                origin: src.origin,
                compiled: c,
            }),
            Err(e) => diagnostics.push(expr_diagnostic(src, "attribute", &e)),
        }
    }
    out
}

/// The resource attributes, evaluated once on an empty exchange (there is no
/// request at load), keys and values cut to the limits.
pub(super) fn resources(
    env: &Arc<Env>,
    sources: &[Source],
    results: Vec<Shared>,
    max_value_length: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(String, AttrValue)> {
    let mut values = Vec::new();
    let empty_exchange = Exchange::default();
    for (src, result) in sources.iter().zip(results) {
        let c = match result {
            Ok(c) => c,
            Err(e) => {
                diagnostics.push(expr_diagnostic(src, "resource", &e));
                continue;
            }
        };
        let resolver = ExchangeResolver::new(&empty_exchange, Visibility::default());
        let mut ctx = Context::with_env(Arc::clone(env));
        ctx.set_variable_resolver(&resolver);
        match Value::resolve_val(c.program.expression(), &ctx) {
            Ok(v) => attributes::push_value(&src.field.key, v.as_ref(), &mut values),
            Err(e) => diagnostics.push(Diagnostic {
                pos: src.field.key_pos,
                message: format!(
                    "resource `{}`: evaluation failed: {e} (resources are evaluated once at load, without a request)",
                    src.field.key
                ),
                snippet: None,
            }),
        }
    }
    for (key, value) in &mut values {
        attributes::truncate_str(key, MAX_NAME_LENGTH);
        value.truncate(max_value_length);
    }
    values
}

/// The caret position of an expression error, if it has one.
pub(super) fn snippet_of(expr: &str, e: &ExprError) -> Option<Snippet> {
    e.position().map(|(line, column)| Snippet {
        expr: expr.to_owned(),
        line,
        column,
    })
}

fn expr_diagnostic(src: &Source, what: &str, e: &ExprError) -> Diagnostic {
    let prefix = match src.origin {
        Origin::User => String::new(),
        Origin::Preset(p) => format!("in preset {}: ", presets::file_name(p)),
    };
    Diagnostic {
        pos: src.field.key_pos,
        message: format!("{prefix}{what} `{}`: {e}", src.field.key),
        snippet: snippet_of(&src.field.expr, e).or_else(|| {
            Some(Snippet {
                expr: src.field.expr.chars().take(200).collect(),
                line: 1,
                column: 1,
            })
        }),
    }
}
