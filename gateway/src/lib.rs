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
pub mod server;
pub mod settings;
pub mod sinks;
pub mod state;
pub mod tls;
pub mod trace_context;
pub mod upstream;
