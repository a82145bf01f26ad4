//! Entry points for the fuzz targets in `fuzz/` (not a stable API).
//!
//! Fuzzing runs millions of inputs, so it avoids what a gateway does once per
//! config load: [`spawn_with_compile_stack`] makes one long-lived thread with the
//! compiler's stack, on which [`crate::load`] and [`check_expression`] compile in
//! place instead of spawning a thread per call. The `expr_eval` target evaluates
//! on [`crate::fixture::rich`].

use std::sync::Arc;

use crate::compile;
use crate::context::Visibility;
use crate::exchange::Exchange;
use crate::plan::{TracingPlan, cel_env};

pub use crate::plan::spawn_with_compile_stack;

/// Compile `expr` (with every cap: size, nesting, syntax tree depth) and, if it
/// compiles, evaluate it as one attribute field on `ex` under every privacy
/// setting, with the native evaluator and with the CEL interpreter alone.
/// Panics if the two disagree on a field the native evaluator settled (where it
/// defers to the interpreter, both answers are the interpreter's).
///
/// Call on a thread from [`spawn_with_compile_stack`]: the `cel` parser
/// recurses on its input. Evaluation needs only [`crate::plan::EVAL_STACK_SIZE`].
pub fn check_expression(expr: &str, ex: &Exchange) {
    let Ok(compiled) = compile::compile(&cel_env(), expr) else {
        return;
    };
    let compiled = Arc::new(compiled);
    for (hide_inputs, hide_outputs) in [(false, false), (true, true), (true, false)] {
        let vis = Visibility {
            hide_inputs,
            hide_outputs,
        };
        let plan = TracingPlan::single_field("fuzz.attr", expr, Arc::clone(&compiled), vis);
        let native = plan.evaluate(ex);
        let settled = plan.native_outcomes(ex)[0].1 == Some(true);
        if settled {
            let interpreted = plan.evaluate_interpreted(ex);
            // Through `Debug`, so that NaN equals NaN.
            let (n, i) = (format!("{native:?}"), format!("{interpreted:?}"));
            assert_eq!(n, i, "native and interpreted differ on `{expr}` ({vis:?})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn loads_and_checks_in_place_on_a_compile_stack_thread() {
        let handle = spawn_with_compile_stack(|| {
            // Deep enough to need the big stack's parser recursion budget.
            let chain = vec!["1"; 2000].join(" + ");
            let yaml = format!("config:\n  tracing:\n    fields:\n      add:\n        a: '{chain}'\n        b: llm.provider\n");
            let err = crate::load(&yaml, &Default::default()).unwrap_err();
            assert!(format!("{err:?}").contains("too deeply structured"), "{err:?}");
            let exchanges = [fixture::rich(), fixture::sparse(), Exchange::default()];
            for expr in [
                "llm.provider",
                "flattenRecursive(llm.prompt.map(m, {\"message\": m}))",
                "default(llm.params.x, 1) + 1",
                "request.headers.map(k, k)",
                "(",
                chain.as_str(),
            ] {
                for ex in &exchanges {
                    check_expression(expr, ex);
                }
            }
        })
        .unwrap();
        handle.join().unwrap();
    }
}
