//! Every `error.type` celgate can give a call, in one place.
//!
//! A span's `error.type` (the CEL variable `response.error`, the metrics'
//! `error_type` label, the access log's `error=`) is one of these names or, when
//! the backend answered with an HTTP error status, that status as three digits
//! (`"429"`). The proxy's phases raise the refusals and upstream failures, the
//! observe phase the stream outcomes; both name them here, so the list in
//! `schema/cel-context.md` can be checked against this enum (a test does).

use http::StatusCode;

/// Why a call failed, as OTel's `error.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    // Refused at admission: the request's head or body.
    /// No, several, or an invalid `Host` header.
    InvalidHost,
    /// `TRACE` or `CONNECT`.
    MethodNotAllowed,
    /// A dot segment or an encoded slash in the path.
    InvalidPath,
    /// A missing or unknown client key (`auth.clientKeys`).
    Unauthenticated,
    /// A compressed request body.
    UnsupportedContentEncoding,
    /// Over `server.maxBodyBytes`.
    RequestTooLarge,
    /// The body did not arrive within `server.requestTimeout`.
    RequestTimeout,
    /// The body could not be read.
    RequestBodyError,
    /// Nested deeper than `server.maxJsonDepth`.
    JsonTooDeep,
    /// Not a valid request of its operation.
    InvalidRequest,
    // Refused at routing.
    /// No backends are configured.
    NoBackends,
    /// No backend speaks the request's API (no `provider: anthropic` backend for a
    /// Messages call), or takes its path (no `passthrough` prefix of it).
    RouteNotFound,
    /// No backend serves the model.
    ModelNotFound,
    /// An LLM call that names no model.
    ModelRequired,
    /// The body's model is not one the routed backend serves.
    ModelNotAllowed,
    // The backend could not be reached, or did not answer.
    /// No connection within the backend's `connectTimeout`.
    ConnectTimeout,
    /// The connection was refused or the host unreachable.
    ConnectError,
    /// The TLS handshake with the backend failed: its certificate is not trusted,
    /// not for its host name or expired, or it wanted a client certificate.
    TlsError,
    /// The backend failed otherwise before answering.
    UpstreamError,
    /// No answer within the backend's `timeout`, or silence mid-body longer than its
    /// `idleTimeout`.
    Timeout,
    // How a response the backend started ended.
    /// A stream closed early: no final event, a choice without a finish reason.
    StreamIncomplete,
    /// A body that is not a valid answer (not JSON, events that are not JSON, bad
    /// gzip).
    InvalidResponse,
    /// The stream reported an error.
    StreamError,
    /// The body failed mid-way (reset, cut connection).
    StreamCut,
    /// The client went away first.
    ClientDisconnected,
    /// The gateway shut down first (`server.shutdownTimeout`).
    Shutdown,
    /// The backend answered with this 4xx or 5xx status.
    Status(StatusCode),
}

impl ErrorType {
    /// Every named kind (not [`ErrorType::Status`]), for documentation and tests.
    pub const NAMED: [ErrorType; 26] = [
        ErrorType::InvalidHost,
        ErrorType::MethodNotAllowed,
        ErrorType::InvalidPath,
        ErrorType::Unauthenticated,
        ErrorType::UnsupportedContentEncoding,
        ErrorType::RequestTooLarge,
        ErrorType::RequestTimeout,
        ErrorType::RequestBodyError,
        ErrorType::JsonTooDeep,
        ErrorType::InvalidRequest,
        ErrorType::NoBackends,
        ErrorType::RouteNotFound,
        ErrorType::ModelNotFound,
        ErrorType::ModelRequired,
        ErrorType::ModelNotAllowed,
        ErrorType::ConnectTimeout,
        ErrorType::ConnectError,
        ErrorType::TlsError,
        ErrorType::UpstreamError,
        ErrorType::Timeout,
        ErrorType::StreamIncomplete,
        ErrorType::InvalidResponse,
        ErrorType::StreamError,
        ErrorType::StreamCut,
        ErrorType::ClientDisconnected,
        ErrorType::Shutdown,
    ];

    /// The `error.type` text: a snake_case name, or the status's three digits.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorType::Status(status) => status.as_str(),
            named => named.name().unwrap_or_default(),
        }
    }

    /// The snake_case name of a named kind; `None` for [`ErrorType::Status`].
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            ErrorType::InvalidHost => "invalid_host",
            ErrorType::MethodNotAllowed => "method_not_allowed",
            ErrorType::InvalidPath => "invalid_path",
            ErrorType::Unauthenticated => "unauthenticated",
            ErrorType::UnsupportedContentEncoding => "unsupported_content_encoding",
            ErrorType::RequestTooLarge => "request_too_large",
            ErrorType::RequestTimeout => "request_timeout",
            ErrorType::RequestBodyError => "request_body_error",
            ErrorType::JsonTooDeep => "json_too_deep",
            ErrorType::InvalidRequest => "invalid_request",
            ErrorType::NoBackends => "no_backends",
            ErrorType::RouteNotFound => "route_not_found",
            ErrorType::ModelNotFound => "model_not_found",
            ErrorType::ModelRequired => "model_required",
            ErrorType::ModelNotAllowed => "model_not_allowed",
            ErrorType::ConnectTimeout => "connect_timeout",
            ErrorType::ConnectError => "connect_error",
            ErrorType::TlsError => "tls_error",
            ErrorType::UpstreamError => "upstream_error",
            ErrorType::Timeout => "timeout",
            ErrorType::StreamIncomplete => "stream_incomplete",
            ErrorType::InvalidResponse => "invalid_response",
            ErrorType::StreamError => "stream_error",
            ErrorType::StreamCut => "stream_cut",
            ErrorType::ClientDisconnected => "client_disconnected",
            ErrorType::Shutdown => "shutdown",
            ErrorType::Status(_) => return None,
        })
    }

    /// The kind for a backend's answer with `status`: `Some` for 4xx and 5xx.
    pub fn of_status(status: StatusCode) -> Option<ErrorType> {
        (status.is_client_error() || status.is_server_error()).then_some(ErrorType::Status(status))
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_snake_case_and_statuses_are_digits() {
        let mut names: Vec<&str> = ErrorType::NAMED.iter().map(ErrorType::as_str).collect();
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorType::NAMED.len());
        assert_eq!(
            ErrorType::Status(StatusCode::TOO_MANY_REQUESTS).as_str(),
            "429"
        );
        assert_eq!(ErrorType::of_status(StatusCode::OK), None);
        assert_eq!(ErrorType::of_status(StatusCode::FOUND), None);
        assert_eq!(
            ErrorType::of_status(StatusCode::BAD_GATEWAY).map(|e| e.to_string()),
            Some("502".to_owned())
        );
    }

    #[test]
    fn every_name_is_documented_in_the_cel_context() {
        let doc = include_str!("../../schema/cel-context.md");
        for kind in ErrorType::NAMED {
            assert!(
                doc.contains(&format!("`{kind}`")),
                "`{kind}` is not in schema/cel-context.md"
            );
        }
    }
}
