//! celgate's span-attribute engine: the config model, the CEL context of an LLM
//! exchange, compiling and evaluating expressions, typed attributes and presets.
//!
//! Pure by design: no sockets, no async runtime, no files or environment except
//! what the caller hands over. The gateway crate does the I/O and calls
//! [`load`] once per config and [`TracingPlan::evaluate`] once per request.

pub mod attributes;
pub mod compile;
pub mod config;
pub mod context;
pub mod diagnostics;
pub mod exchange;
pub mod functions;
pub mod plan;
pub mod presets;

pub use attributes::AttrValue;
pub use config::{ConfigFile, PresetName};
pub use diagnostics::{ConfigError, Diagnostic};
pub use exchange::Exchange;
pub use plan::{LoadOptions, Loaded, SpanKind, SpanRecord, TracingPlan, load, load_document};
