//! The wire protocols celgate reads: one module per protocol.
pub mod openai;
pub mod sse;
