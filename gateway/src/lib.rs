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

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod demo;
pub mod export;
pub mod metrics;
pub mod observe;
pub mod openai;
pub mod proxy;
pub mod reload;
pub mod scripted;
pub mod server;
pub mod settings;
pub mod sse;
pub mod state;
pub mod trace_context;
pub mod upstream;
