//! celgate: the gateway (I/O side). The engine crate is pure; everything that parses
//! wire formats, talks to sockets or reads files lives here.
/// A recorded exchange from `tests/fixtures/exchanges/`, for the parsers' tests.
#[cfg(test)]
macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/exchanges/",
            $name
        ))
        .as_slice()
    };
}

pub mod cli;
pub mod openai;
pub mod sse;
