//! celgate's span-attribute engine: the config model, the CEL context of an LLM
//! exchange, compiling and evaluating expressions, typed attributes and presets.
//!
//! Pure by design: no sockets, no async runtime, no files or environment except
//! what the caller hands over. The gateway crate does the I/O and calls
//! [`load`] once per config and [`TracingPlan::evaluate`] once per request.
//!
//! Inside, data flows one way. [`plan`] loads and compiles a config ([`compile`]
//! checks each expression, and lowers it for the native evaluator). Per request,
//! an [`Exchange`] is read variable by variable through [`context`] (its `read` is
//! the one mapping from an exchange to each variable, privacy rules included),
//! as borrowed values that the native evaluator works on and the CEL interpreter
//! gets converted; [`attributes`] types the results, and the plan assembles the
//! [`SpanRecord`]. [`Needs`] tells the gateway what of a request to capture.
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
#[doc(hidden)]
pub mod fixture;
pub mod functions;
#[doc(hidden)]
pub mod fuzzing;
mod native;
pub mod needs;
pub mod plan;
pub mod presets;
pub mod pricing;
pub mod redact;
mod value;
mod yaml_error;

pub use attributes::AttrValue;
pub use config::{ConfigFile, PresetName};
pub use diagnostics::{ConfigError, Diagnostic};
pub use exchange::Exchange;
pub use needs::Needs;
pub use plan::{
    LoadOptions, Loaded, SpanKind, SpanRecord, SpanStatus, TracingPlan, load, load_document,
};
