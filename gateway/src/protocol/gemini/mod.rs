//! Gemini's `generateContent` API: `POST /v1beta/models/{model}:generateContent` and
//! its streamed twin `:streamGenerateContent` (also under `/v1/`), as Google AI
//! Studio, the `google-genai` SDKs and the Gemini CLI speak it.
//!
//! Unlike OpenAI's, the model is a segment of the path, not a field of the body, and
//! whether the call streams is the method after the `:` ([`model_of_path`] gives the
//! router the former). The body is a `GenerateContentRequest` (`contents`,
//! `systemInstruction`, `tools`, `generationConfig`, ...; the REST API accepts every
//! field in camelCase and in snake_case, so both are read), turned into the chat
//! vocabulary by `request`.
//!
//! An answer is a `GenerateContentResponse`; a streamed answer is a sequence of them,
//! either as SSE `data:` events (`?alt=sse`) or, without `alt=sse`, as one JSON array.
//! Every chunk has the shape of a whole answer, so all three are read the same way:
//! `wire` parses a chunk leniently, `answer` merges chunks into the response side of
//! the exchange, `response` feeds it a whole body (an object or an array) and `stream`
//! feeds it SSE events. The stream has no end marker: it ends after the chunk that
//! carries the `finishReason`, which is what [`FinalEvent::Accumulator`] lets the
//! accumulator say. Errors are Google's `{"error": {code, message, status}}`.

use celgate_engine::exchange::{Exchange, Operation};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::json::ParseError;
use super::stream::{FinalEvent, StreamAccumulator};
use super::{BackendAuth, Protocol, RequestFacts};

mod answer;
mod request;
mod response;
mod stream;
mod wire;

/// The route label of every generateContent call, streamed or not (the model in the
/// path is not a bounded label).
const ROUTE: &str = "/v1beta/models/{model}:generateContent";

/// The API versions whose `models/{model}:method` paths are recognised.
const PREFIXES: [&str; 2] = ["/v1beta/models/", "/v1/models/"];

/// Gemini `generateContent` and `streamGenerateContent`, as a [`Protocol`].
#[derive(Debug)]
pub struct Generate;

/// The Gemini generateContent protocol.
pub static GENERATE: Generate = Generate;

/// The model segment of a generateContent or streamGenerateContent path
/// (`/v1beta/models/gemini-2.5-flash:generateContent` → `gemini-2.5-flash`), as it
/// appears in the path (percent-encoded if the client encoded it; the exchange's
/// `request_model` is decoded). `None` for any other path.
pub fn model_of_path(path: &str) -> Option<&str> {
    split_path(path).map(|(model, _)| model)
}

/// The model segment of a generateContent path and whether the call streams
/// (`:streamGenerateContent`); `None` for any other path. The model is one non-empty
/// path segment.
fn split_path(path: &str) -> Option<(&str, bool)> {
    let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p))?;
    let (model, method) = rest.rsplit_once(':')?;
    let streaming = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    (!model.is_empty() && !model.contains('/')).then_some((model, streaming))
}

/// The model named by a path segment, percent-decoded.
fn decode_model(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

impl Protocol for Generate {
    fn recognises(&self, method: &Method, path: &str) -> bool {
        method == Method::POST && split_path(path).is_some()
    }

    fn route(&self) -> &'static str {
        ROUTE
    }

    fn operation(&self) -> Operation {
        Operation::GenerateContent
    }

    fn parse_request(&self, body: &[u8], ex: &mut Exchange) -> Result<RequestFacts, ParseError> {
        request::parse(body, ex)
    }

    fn parse_response(&self, body: &[u8], ex: &mut Exchange) -> Result<(), ParseError> {
        response::parse(body, ex)
    }

    fn parse_response_owned(&self, body: Vec<u8>, ex: &mut Exchange) -> Result<(), ParseError> {
        response::parse_owned(body, ex)
    }

    fn stream(&self) -> Box<dyn StreamAccumulator> {
        Box::new(stream::GeminiStream::default())
    }

    fn final_event(&self) -> FinalEvent {
        FinalEvent::Accumulator
    }

    fn error_body(
        &self,
        status: StatusCode,
        message: &str,
        _kind: &str,
        code: Option<&str>,
    ) -> Value {
        error_body(status, message, code)
    }

    fn backend_auth(&self) -> BackendAuth {
        BackendAuth::Header("x-goog-api-key")
    }

    /// Gemini's own API: `provider: gemini` backends only.
    fn serves(&self, provider: &str) -> bool {
        provider == "gemini"
    }

    /// The rest of the models API, forwarded unread: `GET /v1beta/models`, `GET
    /// /v1beta/models/{model}`, and the other methods on a model
    /// (`:countTokens`, `:embedContent`, ...). Under `/v1/models/` only a model's
    /// methods: `GET /v1/models[/{id}]` is OpenAI's.
    fn side_route(&self, _method: &Method, path: &str) -> bool {
        path == "/v1beta/models"
            || path.starts_with("/v1beta/models/")
            || path
                .strip_prefix("/v1/models/")
                .is_some_and(|rest| rest.contains(':'))
    }

    /// `models/{model}:method` and `models/{model}` name their model.
    fn path_model<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p))?;
        let model = rest.split_once(':').map_or(rest, |(m, _)| m);
        (!model.is_empty() && !model.contains('/')).then_some(model)
    }
}

/// A Google-style error body: the HTTP status as `code`, its canonical gRPC name as
/// `status`, and celgate's own code (if any) as the reason of an `ErrorInfo` detail,
/// where Google puts `API_KEY_INVALID` and the like.
fn error_body(status: StatusCode, message: &str, code: Option<&str>) -> Value {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": status_name(status),
    });
    if let Some(code) = code {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": code.to_ascii_uppercase(),
            "domain": "celgate",
        }]);
    }
    json!({ "error": error })
}

/// The canonical error name Google's APIs answer with for an HTTP status.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        400..=499 => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests;
