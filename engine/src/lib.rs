//! celgate's span-attribute engine: the config model, the CEL context of an LLM
//! exchange, compiling and evaluating expressions, typed attributes and presets.
//!
//! Pure by design: no sockets, no async runtime, no files or environment except
//! what the caller hands over. The gateway crate does the I/O and calls
//! [`load`] once per config and [`TracingPlan::evaluate`] once per request.
//!
//! ```
//! use celgate_engine::{AttrValue, LoadOptions, exchange::Exchange, load};
//!
//! let yaml = r#"
//! config:
//!   tracing:
//!     fields:
//!       add:
//!         gen_ai.request.model: llm.requestModel
//!         gen_ai.usage.input_tokens: llm.input_tokens
//! "#;
//! let plan = load(yaml, &LoadOptions::default()).unwrap().plan;
//! let exchange = Exchange {
//!     request_model: Some("gpt-4o".into()),
//!     input_tokens: Some(42),
//!     ..Exchange::default()
//! };
//! let span = plan.evaluate(&exchange);
//! assert_eq!(span.name, "chat gpt-4o");
//! assert_eq!(
//!     span.attributes,
//!     vec![
//!         ("gen_ai.request.model".to_string(), AttrValue::String("gpt-4o".into())),
//!         ("gen_ai.usage.input_tokens".to_string(), AttrValue::Int(42)),
//!     ]
//! );
//! ```

pub mod attributes;
pub mod compile;
pub mod config;
pub mod context;
pub mod diagnostics;
pub mod exchange;
mod fast;
#[doc(hidden)]
pub mod fixture;
pub mod functions;
#[doc(hidden)]
pub mod fuzzing;
pub mod plan;
pub mod presets;
pub mod redact;
mod yaml_error;

pub use attributes::AttrValue;
pub use config::{ConfigFile, PresetName};
pub use diagnostics::{ConfigError, Diagnostic};
pub use exchange::Exchange;
pub use plan::{
    LoadOptions, Loaded, SpanKind, SpanRecord, SpanStatus, TracingPlan, load, load_document,
};
