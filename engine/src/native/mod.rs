//! Native evaluation of the common shapes of expression, without the CEL interpreter.
//!
//! At load, every field's syntax tree (as the `cel` parser produced it, macros
//! expanded) is translated into a [`Node`] tree when it can be: variable paths,
//! literals, `default`, conditionals, comparisons, `+`, `size`, `type`, `toJson`,
//! `flatten*`, list and map literals and `map`/`filter` comprehensions. Per
//! request, [`Eval`] evaluates that tree straight from the [`Exchange`]: the
//! exchange's messages, choices and JSON are read in place as [`Value`]s (no CEL
//! maps are built, nothing is cloned per element), and `flattenRecursive` at the
//! top of a field writes its attributes straight into the span record.
//!
//! Four parts, in the order a field goes through them: [`lower`] (the syntax tree
//! to a [`Node`], at load), [`eval`] (a [`Node`] to a [`Value`], per request; the
//! variables come from [`crate::context::read`]), [`emit`] (a field's value to its
//! attributes, by the typing rules of [`crate::attributes`]) and the step budget
//! here.
//!
//! The native evaluator only ever answers when it is sure to answer exactly as the
//! interpreter would. Anything it does not model (an operator on unusual operand
//! types, a function it does not know, an optional value, ...) is a [`Fail::Bail`],
//! and any run-time error is a [`Fail::Error`]: either way the caller discards what
//! this field produced and evaluates the field again with the CEL interpreter,
//! which gives the error its message and the attribute its value. So an error is
//! still reported and counted exactly as before, and the native path can only be
//! faster, never different. [`tests`] and the `expr_eval` fuzz target compare the
//! two paths.
//!
//! One exception: evaluation has a budget of [`MAX_STEPS`] steps per field (a
//! comprehension iteration, a list item copied, a JSON or flattened element
//! written, 64 bytes of string copied). A field past it fails with
//! [`Fail::Budget`] and is not handed to the interpreter: a nested comprehension
//! over a request's messages (`llm.prompt.map(a, llm.prompt.map(b, b))`) is
//! quadratic in the request, and must not hold a proxy worker for seconds.
//!
//! [`Exchange`]: crate::exchange::Exchange
//! [`Value`]: crate::value::Value

use std::cell::Cell;

mod emit;
mod eval;
mod lower;

pub(crate) use emit::Out;
pub(crate) use eval::Eval;
pub(crate) use lower::{Node, compile};

/// Why native evaluation gave up on a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The interpreter would fail here too (its message is not modelled).
    Error,
    /// Not modelled: the interpreter must decide.
    Bail,
    /// Over [`MAX_STEPS`]: the field has no value, and the interpreter is not
    /// asked (it would take longer still).
    Budget,
}

/// Steps one field's evaluation may take. A linear pass over a 10 MiB request
/// (every message, every 64 bytes of text) stays well within it; the quadratic
/// `llm.prompt.map(a, llm.prompt.map(b, b))` on 6,000 messages (36 M steps) is
/// stopped after about a 36th of its work.
pub const MAX_STEPS: u64 = 1_000_000;

/// The steps left to the field being evaluated.
#[derive(Debug)]
pub(crate) struct Steps(Cell<u64>);

impl Steps {
    /// Spends `n` steps, or fails once the budget is spent.
    #[inline]
    pub(crate) fn take(&self, n: usize) -> Result<(), Fail> {
        let left = self.0.get();
        match left.checked_sub(n as u64) {
            Some(rest) => {
                self.0.set(rest);
                Ok(())
            }
            None => Err(Fail::Budget),
        }
    }

    /// A string of `s.len()` bytes copied: a step per 64 bytes.
    #[inline]
    pub(crate) fn copy(&self, s: &str) -> Result<(), Fail> {
        self.take(1 + s.len() / 64)
    }

    pub(crate) fn reset(&self) {
        self.0.set(MAX_STEPS);
    }
}

impl Steps {
    pub(crate) fn new() -> Steps {
        Steps(Cell::new(MAX_STEPS))
    }
}

#[cfg(test)]
mod tests;
