//! celgate: the gateway (I/O side). The engine crate is pure; everything that parses
//! wire formats, talks to sockets or reads files lives here.
pub mod cli;
pub mod openai;
pub mod sse;
