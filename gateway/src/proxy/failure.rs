//! The gateway answering for itself: one [`Failure`] type for every request a phase
//! refuses or cannot complete.
//!
//! A `Failure` carries all a refusal means in one value: the HTTP status, the
//! protocol's error `type` and `code` (rendered by the request's protocol), the span's
//! [`ErrorType`] (`error.type`) and the operator's message. [`Failure::respond`]
//! turns it into the client's answer and the span that records it; phases only
//! return one (`?`), so a new refusal cannot forget the span or the counter.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::ClientBody;
use crate::client_auth::{Admission, Unauthenticated};
use crate::error_type::ErrorType;
use crate::observe::{InFlight, Outcome};
use crate::protocol::default_error_body;
use crate::state::{Shared, whole_body};

/// OpenAI's error `type` for a request celgate refuses.
const INVALID_REQUEST: &str = "invalid_request_error";

/// OpenAI's error `type` for a backend celgate could not reach or hear from.
const UPSTREAM: &str = "upstream_error";

/// A request celgate answers itself, with an error.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    /// The protocol's error `type` (`invalid_request_error`, `upstream_error`).
    pub kind: &'static str,
    /// The protocol's error `code`; `None` is JSON null.
    pub code: Option<&'static str>,
    /// The span's `error.type`.
    pub error_type: ErrorType,
    /// For the operator and the client; masked of backend keys before it leaves.
    pub message: String,
    /// A header the answer must carry (`Allow`, `WWW-Authenticate`).
    pub header: Option<(HeaderName, &'static str)>,
}

impl Failure {
    /// A request refused before it reached a backend; the code is the `error.type`.
    pub fn refused(status: StatusCode, error_type: ErrorType, message: String) -> Failure {
        Failure {
            status,
            kind: INVALID_REQUEST,
            code: error_type.name(),
            error_type,
            message,
            header: None,
        }
    }

    /// A backend that could not be reached, or did not answer in time.
    pub fn upstream(status: StatusCode, error_type: ErrorType, message: String) -> Failure {
        Failure {
            kind: UPSTREAM,
            ..Failure::refused(status, error_type, message)
        }
    }

    /// A missing or unknown client key: OpenAI's 401 (its `code` is not the span's
    /// `error.type`, `unauthenticated`) with a Bearer challenge.
    pub fn unauthenticated(admission: &Admission) -> Failure {
        let answer = Unauthenticated::of(admission);
        Failure {
            status: StatusCode::UNAUTHORIZED,
            kind: INVALID_REQUEST,
            code: answer.code,
            error_type: ErrorType::Unauthenticated,
            message: answer.message.to_owned(),
            header: Some((header::WWW_AUTHENTICATE, answer.challenge)),
        }
    }

    /// The same failure, answered with `name: value` too.
    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> Failure {
        self.header = Some((name, value));
        self
    }

    /// The client's answer, and the span of `flight` recording it.
    pub fn respond(mut self, mut flight: InFlight) -> Response<ClientBody> {
        Shared::count(&flight.shared.stats.errors);
        // A cause quoted from below (a TLS or connection error) must not carry a key.
        let message = flight.mask(std::mem::take(&mut self.message));
        let body = match flight.owner {
            Some(protocol) => protocol.error_body(self.status, &message, self.kind, self.code),
            None => default_error_body(&message, self.kind, self.code),
        };
        flight.exchange.response.status = Some(self.status.as_u16());
        flight.exchange.error_type = Some(self.error_type.as_str().to_owned());
        flight.exchange.response_body = Some(body.to_string());
        flight.finish(Outcome::Refused(message));
        self.answer(&body)
    }

    /// The client's answer alone, for a request that has no span (`/v1/models`).
    pub fn without_span(self) -> Response<ClientBody> {
        let body = default_error_body(&self.message, self.kind, self.code);
        self.answer(&body)
    }

    fn answer(self, body: &serde_json::Value) -> Response<ClientBody> {
        let mut resp = json_response(self.status, body);
        if let Some((name, value)) = self.header {
            resp.headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        resp
    }
}

/// A JSON answer of celgate's own.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ClientBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let mut resp = Response::new(whole_body(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn body_of(resp: Response<ClientBody>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_refusal_names_its_error_type_as_the_code() {
        let failure = Failure::refused(
            StatusCode::NOT_FOUND,
            ErrorType::ModelNotFound,
            "no backend serves model `x`".into(),
        );
        let resp = failure.without_span();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = body_of(resp).await;
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["message"], "no backend serves model `x`");
    }

    #[tokio::test]
    async fn an_upstream_failure_and_a_missing_key_keep_their_protocol_codes() {
        let timeout = Failure::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorType::Timeout,
            "slow".into(),
        );
        assert_eq!(
            body_of(timeout.without_span()).await["error"]["type"],
            "upstream_error"
        );
        let missing = Failure::unauthenticated(&Admission::Missing);
        assert_eq!(missing.error_type.as_str(), "unauthenticated");
        let resp = missing.without_span();
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            body_of(resp).await["error"]["code"],
            serde_json::Value::Null
        );
        let unknown = Failure::unauthenticated(&Admission::Unknown);
        assert_eq!(
            body_of(unknown.without_span()).await["error"]["code"],
            "invalid_api_key"
        );
    }
}
