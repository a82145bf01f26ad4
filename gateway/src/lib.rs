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

/// xorshift64*: a tiny deterministic PRNG, so the parsers' chunking and mutation
/// tests need no dependency.
#[cfg(test)]
mod test_rng {
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}

pub mod access_log;
pub mod admin;
pub mod capture;
pub mod cli;
pub mod client_auth;
pub mod cutoff;
pub mod demo;
pub mod error_type;
pub mod export;
pub mod fd_budget;
pub mod load;
pub mod metrics;
pub mod observe;
pub mod protocol;
pub mod proxy;
pub mod record;
pub mod redact;
pub mod reload;
pub mod scripted;
pub mod server;
pub mod settings;
pub mod sinks;
pub mod state;
pub mod trace_context;
pub mod upstream;

/// Transition shim: the OpenAI parsers moved to [`protocol::openai`] (and the shared
/// types to [`protocol`]). These re-exports keep the old paths compiling for one step;
/// call the new paths, or better the [`protocol::Protocol`] of the request.
pub mod openai {
    pub use crate::protocol::openai::{parse_request, parse_response, parse_response_owned};
    pub use crate::protocol::{BodyKind, ParseError, RequestFacts};
}

/// Transition shim: SSE reading moved to [`protocol`] (framing in [`protocol::sse`],
/// the stream reader in [`protocol::stream`], the caps in [`protocol::limits`]). These
/// re-exports keep the old paths compiling for one step; call the new paths.
pub mod sse {
    pub use crate::protocol::limits::{MAX_LABEL_BYTES, MAX_TEXT_BYTES, MAX_TRACKED};
    pub use crate::protocol::sse::MAX_LINE_BYTES;
    pub use crate::protocol::{FinalEvent, SseAccumulator, StreamSummary};
    use celgate_engine::exchange::Operation;

    impl SseAccumulator {
        /// A fresh accumulator for a stream of `operation`'s answers: now
        /// [`SseAccumulator::for_protocol`] or
        /// [`protocol::openai::stream_accumulator`](crate::protocol::openai::stream_accumulator).
        pub fn new(operation: Operation) -> Self {
            crate::protocol::openai::stream_accumulator(operation)
        }
    }
}
