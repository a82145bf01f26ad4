//! Arbitrary bytes as one CEL expression: compiling may fail, but neither
//! compiling nor evaluating against a sample exchange may panic, and the native
//! evaluator must agree with the CEL interpreter wherever it answers itself.
#![no_main]

use std::sync::LazyLock;

use celgate_engine::exchange::Exchange;
use libfuzzer_sys::fuzz_target;

mod worker;

/// The exchange touching every part of the data model the resolver reads, the one the
/// engine's native-versus-interpreter tests compare on.
static EXCHANGE: LazyLock<Exchange> = LazyLock::new(celgate_engine::fixture::rich);

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    let expr = expr.to_owned();
    worker::run(move || celgate_engine::fuzzing::check_expression(&expr, &EXCHANGE));
});
