//! The wire protocols celgate reads, one module per protocol, behind one interface.
//!
//! The proxy forwards bodies unchanged; a protocol only *reads* them, so the engine
//! can describe the call. [`for_request`] recognises a request by method and path
//! and returns its [`Protocol`], which then does everything that depends on the wire
//! format, and nothing else:
//!
//! - [`Protocol::recognises`] a request (`POST /v1/chat/completions`), names its
//!   bounded [`route`](Protocol::route) label and the [`Operation`] it is;
//! - [`Protocol::parse_request`] reads the client's body into the request side of
//!   the [`Exchange`] (refusing only what makes it unusable, with a [`ParseError`]
//!   written for the client) and reports [`RequestFacts`];
//! - [`Protocol::parse_response`] (or [`parse_response_owned`](Protocol::parse_response_owned))
//!   reads a whole answer into the response side; it never judges the backend: an
//!   unexpected shape yields less information, only a body that is not JSON errs;
//! - [`Protocol::stream`] makes the [`StreamAccumulator`] that reads a streamed
//!   answer event by event (the protocol-free [`sse`] framing feeds it through an
//!   [`SseAccumulator`]), and [`Protocol::final_event`] says which event ends the
//!   answer (`data: [DONE]` for OpenAI);
//! - [`Protocol::error_body`] renders an error celgate answers itself in the
//!   protocol's shape, and [`Protocol::backend_auth`] says where a backend key goes
//!   ([`BackendAuth::Bearer`] for OpenAI; Anthropic's `x-api-key`, Gemini's
//!   `x-goog-api-key`).
//!
//! Adding a protocol is one module implementing [`Protocol`] and one line in
//! [`PROTOCOLS`]. What every protocol shares lives beside it and knows no wire
//! format: [`sse`] (event-stream framing), [`stream`] (events to accumulator, the
//! final-event rule), [`json`] (whole-body reading and [`ParseError`]), [`lenient`]
//! (borrowing, mistype-tolerant fields for stream chunks), [`limits`] (what a span
//! keeps of a hostile answer) and [`tokens`] (token counts). Data flows one way:
//! the proxy calls a protocol, a protocol writes the exchange; nothing here calls
//! back into the proxy.

use celgate_engine::exchange::{Exchange, Operation};
use http::{HeaderName, HeaderValue, Method, StatusCode};

pub mod anthropic;
pub mod gemini;
pub mod json;
pub mod lenient;
pub mod limits;
pub mod openai;
pub mod sse;
pub mod stream;
pub mod tokens;

pub use json::{BodyKind, ParseError};
pub use stream::{
    EventRead, FinalEvent, SseAccumulator, StreamAccumulator, StreamEnd, StreamSummary,
};

/// Every protocol celgate reads, in the order [`for_request`] tries them.
pub static PROTOCOLS: &[&dyn Protocol] = &[
    &openai::chat::CHAT,
    &openai::completions::COMPLETIONS,
    &openai::embeddings::EMBEDDINGS,
    &anthropic::MESSAGES,
    &openai::responses::RESPONSES,
    &gemini::GENERATE,
];

/// The protocol of a request, by method and path; `None` for a request celgate
/// passes through without reading.
pub fn for_request(method: &Method, path: &str) -> Option<&'static dyn Protocol> {
    PROTOCOLS
        .iter()
        .copied()
        .find(|p| p.recognises(method, path))
}

/// The protocol a request belongs to without being one of its traced calls: one of
/// its [side routes](Protocol::side_route), or its call's path with another method
/// (`GET /v1/chat/completions`, a CORS preflight), which its backends answer. `None`
/// for a path no protocol knows.
pub fn owner_of(method: &Method, path: &str) -> Option<&'static dyn Protocol> {
    let mut protocols = PROTOCOLS.iter().copied();
    protocols
        .clone()
        .find(|p| p.side_route(method, path))
        .or_else(|| protocols.find(|p| p.recognises(&Method::POST, path)))
}

/// Where the key of a backend of `provider` goes on a request no protocol reads (a
/// path the backend's `passthrough` list forwards): the provider's own API's header.
pub fn provider_auth(provider: &str) -> BackendAuth {
    match provider {
        "anthropic" => anthropic::MESSAGES.backend_auth(),
        "gemini" => gemini::GENERATE.backend_auth(),
        _ => BackendAuth::Bearer,
    }
}

/// The protocol whose calls are `operation` (for `celgate preview`, which is given an
/// operation rather than a request line); `None` for [`Operation::Other`].
pub fn for_operation(operation: Operation) -> Option<&'static dyn Protocol> {
    PROTOCOLS
        .iter()
        .copied()
        .find(|p| p.operation() == operation)
}

/// The error body of a request no protocol reads (a pass-through path, `/v1/models`):
/// the OpenAI shape, as the gateway's own API is OpenAI's.
pub fn default_error_body(message: &str, kind: &str, code: Option<&str>) -> serde_json::Value {
    openai::error_body(message, kind, code)
}

/// One wire protocol (an API endpoint family's request and answer shapes).
///
/// Implementations are stateless statics (`&'static dyn Protocol`); per-stream state
/// lives in the [`StreamAccumulator`] a protocol makes.
pub trait Protocol: Sync {
    /// Whether a request with this method and path is one of this protocol's.
    fn recognises(&self, method: &Method, path: &str) -> bool;

    /// The route label of its requests in metrics and the access log: bounded (a
    /// path that carries a model name is not a label).
    fn route(&self) -> &'static str;

    /// What kind of call it is (`llm.operation`).
    fn operation(&self) -> Operation;

    /// Reads a request body into the request side of `ex` (`operation`, model,
    /// `streaming`, prompt, tools, params, and `request_body`, which is set even when
    /// the body is refused so a rejected call is still traced).
    fn parse_request(&self, body: &[u8], ex: &mut Exchange) -> Result<RequestFacts, ParseError>;

    /// Reads a whole (non-streamed) answer into the response side of `ex`. Only a
    /// body that is not JSON or not an object is an error.
    fn parse_response(&self, body: &[u8], ex: &mut Exchange) -> Result<(), ParseError>;

    /// [`parse_response`](Self::parse_response) for a body the caller no longer
    /// needs, so it can become `response_body` without a copy.
    fn parse_response_owned(&self, body: Vec<u8>, ex: &mut Exchange) -> Result<(), ParseError> {
        self.parse_response(&body, ex)
    }

    /// A reader for one streamed answer's events.
    fn stream(&self) -> Box<dyn StreamAccumulator>;

    /// The event that ends a streamed answer.
    fn final_event(&self) -> FinalEvent;

    /// The body of an error celgate answers itself with `status`: `message` for the
    /// operator and client, `kind` and `code` in OpenAI's vocabulary
    /// (`invalid_request_error`, `model_not_allowed`; `None`: no code, as OpenAI
    /// answers a request without a key), which a protocol maps to its own.
    fn error_body(
        &self,
        status: StatusCode,
        message: &str,
        kind: &str,
        code: Option<&str>,
    ) -> serde_json::Value;

    /// Where a backend's API key goes on the upstream request.
    fn backend_auth(&self) -> BackendAuth;

    /// Whether a backend of `provider` (its `provider:` in config.yaml) speaks this
    /// protocol. The OpenAI-compatible protocols are spoken by every provider (Gemini
    /// and Anthropic have OpenAI-compatible endpoints too); a provider's own API only by
    /// that provider.
    fn serves(&self, provider: &str) -> bool {
        let _ = provider;
        true
    }

    /// Whether `method path` is one of this protocol's side routes: requests of its
    /// API that celgate forwards to the protocol's backends, with the protocol's key
    /// and error shape, without reading them (Anthropic `count_tokens`, a stored
    /// Responses answer, Gemini's models list).
    fn side_route(&self, method: &Method, path: &str) -> bool {
        let _ = (method, path);
        false
    }

    /// The model a request path names, for a protocol that puts it there (Gemini's
    /// `models/{model}:generateContent`); `None` when the body names it.
    fn path_model<'p>(&self, path: &'p str) -> Option<&'p str> {
        let _ = path;
        None
    }
}

impl std::fmt::Debug for dyn Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol({})", self.route())
    }
}

/// What parsing a request body found out beyond the [`Exchange`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestFacts {
    /// The top-level object has a key more than once. JSON leaves the meaning open
    /// (RFC 8259 §4): most parsers keep the last, some the first, some refuse it.
    pub duplicate_keys: bool,
}

/// Where a backend's API key goes on an upstream request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendAuth {
    /// `Authorization: Bearer <key>` (OpenAI and the servers compatible with it).
    Bearer,
    /// The key itself as the value of this header (lowercase): `x-api-key`
    /// (Anthropic), `x-goog-api-key` (Gemini).
    Header(&'static str),
}

impl BackendAuth {
    /// The header that carries `key`, its value marked sensitive (never logged by
    /// hyper or shown by `Debug`); `None` when the key cannot be a header value (a
    /// control character): the request then goes without one.
    pub fn header(self, key: &str) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match self {
            BackendAuth::Bearer => (
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {key}")),
            ),
            BackendAuth::Header(name) => {
                (HeaderName::from_static(name), HeaderValue::from_str(key))
            }
        };
        let mut value = value.ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_find_their_protocol_by_method_and_path() {
        let found = |method: Method, path: &str| for_request(&method, path).map(|p| p.operation());
        assert_eq!(
            found(Method::POST, "/v1/chat/completions"),
            Some(Operation::Chat)
        );
        assert_eq!(
            found(Method::POST, "/v1/completions"),
            Some(Operation::TextCompletion)
        );
        assert_eq!(
            found(Method::POST, "/v1/embeddings"),
            Some(Operation::Embeddings)
        );
        let messages = for_request(&Method::POST, "/v1/messages");
        assert_eq!(messages.map(|p| p.route()), Some("/v1/messages"));
        for (method, path) in [
            (Method::GET, "/v1/chat/completions"),
            (Method::POST, "/v1/chat/completions/"),
            (Method::POST, "/v1/models"),
            (Method::POST, "/chat/completions"),
        ] {
            assert_eq!(found(method.clone(), path), None, "{method} {path}");
        }
        for p in PROTOCOLS {
            assert!(p.recognises(&Method::POST, p.route()), "{}", p.route());
        }
    }

    #[test]
    fn backend_keys_go_where_the_protocol_says_and_stay_sensitive() {
        let (name, value) = BackendAuth::Bearer.header("sk-1").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer sk-1")
        );
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("sk-1"));
        let (name, value) = BackendAuth::Header("x-api-key").header("sk-2").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-api-key", "sk-2")
        );
        assert!(value.is_sensitive());
        assert_eq!(BackendAuth::Bearer.header("sk\n1"), None);
        for p in PROTOCOLS {
            let expected = match p.route() {
                "/v1/messages" => BackendAuth::Header("x-api-key"),
                "/v1beta/models/{model}:generateContent" => BackendAuth::Header("x-goog-api-key"),
                _ => BackendAuth::Bearer,
            };
            assert_eq!(p.backend_auth(), expected, "{}", p.route());
        }
    }
}
