//! Admit: whether celgate takes a request at all, from its head and, for an LLM
//! call, its body read whole within the gateway's limits.
//!
//! The head is checked in this order: the `Host` header (RFC 9112 §3.2), the method
//! (no `TRACE`, no `CONNECT`), the path (no dot segments or encoded slashes: a way
//! out of a backend's base path with its key attached), the client key (before a
//! byte of the body is read). An LLM call's body then must be uncompressed, within
//! `server.maxBodyBytes` (a declared length over it is refused before reading, and
//! before `Expect: 100-continue` asks for the body), arrive within
//! `server.requestTimeout`, and nest no deeper than `server.maxJsonDepth`. Each
//! refusal is a [`Failure`] naming its `error.type`.

use bytes::Bytes;
use celgate_engine::exchange::Operation;
use http::header;
use http::request::Parts;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Limited};

use super::failure::Failure;
use crate::client_auth::{self, Admission, ClientKeys};
use crate::error_type::ErrorType;
use crate::protocol::{self, Protocol};
use crate::settings::ServerSettings;
use crate::state::BoxError;

/// What a request's head says before its span exists.
#[derive(Debug)]
pub struct Head {
    /// The wire protocol whose call the method and path name (read and traced);
    /// `None` passes through unread.
    pub protocol: Option<&'static dyn Protocol>,
    /// The protocol the request belongs to: `protocol`, or the one whose side route
    /// it is (`count_tokens`, a stored response). It chooses the backends that may
    /// take the request, where their key goes and the shape of celgate's errors.
    pub owner: Option<&'static dyn Protocol>,
    pub operation: Operation,
    /// Why the `Host` is unacceptable, if it is.
    host_problem: Option<&'static str>,
    pub admission: Admission,
    /// `GET /v1/models` with a client key that is good (or a `Host` that is bad):
    /// answered at once, without a span. Without a valid key it is refused like any
    /// other path.
    pub models: bool,
}

impl Head {
    pub fn of(parts: &Parts, keys: Option<&ClientKeys>) -> Head {
        let host_problem = host_problem(parts);
        let admission = client_auth::admit(keys, &parts.headers);
        let protocol = protocol::for_request(&parts.method, parts.uri.path());
        let owner = protocol.or_else(|| protocol::owner_of(&parts.method, parts.uri.path()));
        let operation = protocol.map_or(Operation::Other, |p| p.operation());
        let models = parts.method == Method::GET
            && parts.uri.path() == "/v1/models"
            && (host_problem.is_some() || admission.admitted());
        Head {
            protocol,
            owner,
            operation,
            host_problem,
            admission,
            models,
        }
    }

    /// The refusal of a bad `Host`, if the head has one.
    pub fn host_refusal(&self) -> Option<Failure> {
        self.host_problem.map(|message| {
            Failure::refused(
                StatusCode::BAD_REQUEST,
                ErrorType::InvalidHost,
                message.to_owned(),
            )
        })
    }
}

/// The head's checks, in order: `Host`, method, path, client key.
pub fn check(head: &Head, parts: &Parts) -> Result<(), Failure> {
    if let Some(failure) = head.host_refusal() {
        return Err(failure);
    }
    // TRACE would have the upstream echo the request back, headers included, and the
    // upstream request carries the backend's key; CONNECT would make the gateway an
    // open tunnel. Neither is forwarded.
    if parts.method == Method::TRACE || parts.method == Method::CONNECT {
        let failure = Failure::refused(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::MethodNotAllowed,
            format!("the gateway does not forward {} requests", parts.method),
        );
        return Err(failure.with_header(
            header::ALLOW,
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ));
    }
    // `/v1/../admin` is `/admin` to a backend that resolves dot segments: a way out
    // of the backend's base path, with the backend's key attached.
    if let Some(segment) = unsafe_path_segment(parts.uri.path()) {
        return Err(Failure::refused(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidPath,
            format!(
                "the path has a `{segment}` segment; the gateway forwards only paths without dot segments or encoded slashes"
            ),
        ));
    }
    // Only a listed client may spend the backends' keys; checked before a byte of
    // the body is read.
    if !head.admission.admitted() {
        return Err(Failure::unauthenticated(&head.admission));
    }
    Ok(())
}

/// An LLM call's body, read whole within the limits of `settings` (LLM calls are
/// small, and must be parsed and routed before they go anywhere).
pub async fn read_body<B>(
    parts: &Parts,
    body: B,
    settings: &ServerSettings,
) -> Result<Bytes, Failure>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = |detail: String| {
        Failure::refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::RequestTooLarge,
            detail,
        )
    };
    if let Some(encoding) = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(Failure::refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::UnsupportedContentEncoding,
            format!(
                "request bodies must be uncompressed JSON (got Content-Encoding: {})",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        ));
    }
    // A declared length over the limit is refused before reading a byte (and
    // before `Expect: 100-continue` asks the client to send it).
    let declared = body.size_hint().lower();
    if declared > settings.max_body_bytes {
        return Err(too_large(format!(
            "request body is {declared} bytes, larger than the gateway's limit of {} bytes (server.maxBodyBytes)",
            settings.max_body_bytes
        )));
    }
    let read = Limited::new(body, settings.max_body_bytes as usize).collect();
    let bytes = match tokio::time::timeout(settings.request_timeout, read).await {
        // A client that declared more than it sends, or trickles it, would
        // otherwise hold the connection and its buffer forever.
        Err(_) => {
            return Err(Failure::refused(
                StatusCode::REQUEST_TIMEOUT,
                ErrorType::RequestTimeout,
                format!(
                    "the request body did not arrive within {:?} (server.requestTimeout)",
                    settings.request_timeout
                ),
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(too_large(format!(
                "request body is larger than the gateway's limit of {} bytes (server.maxBodyBytes)",
                settings.max_body_bytes
            )));
        }
        Ok(Err(e)) => {
            return Err(Failure::refused(
                StatusCode::BAD_REQUEST,
                ErrorType::RequestBodyError,
                format!("could not read the request body: {e}"),
            ));
        }
    };
    if exceeds_depth(&bytes, settings.max_json_depth) {
        return Err(Failure::refused(
            StatusCode::BAD_REQUEST,
            ErrorType::JsonTooDeep,
            format!(
                "request body nests deeper than {} levels (server.maxJsonDepth)",
                settings.max_json_depth
            ),
        ));
    }
    Ok(bytes)
}

/// Why the request's `Host` is unacceptable (RFC 9112 §3.2: 400 for an HTTP/1.1
/// request without one, for more than one, or for an invalid value). HTTP/1.0 may
/// omit it; HTTP/2 names the authority in `:authority` instead.
fn host_problem(parts: &Parts) -> Option<&'static str> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("the request has more than one Host header"),
        (None, _) if parts.version == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request must have a Host header")
        }
        (Some(host), None) if !valid_host(host.as_bytes()) => {
            Some("the Host header is not a valid host[:port]")
        }
        _ => None,
    }
}

/// `host[:port]` without userinfo, or empty (allowed for a target without authority).
fn valid_host(value: &[u8]) -> bool {
    value.is_empty()
        || (!value.contains(&b'@')
            && http::uri::Authority::try_from(value).is_ok_and(|a| !a.host().is_empty()))
}

/// The first segment of `path` a backend could resolve into another path: `.` or
/// `..`, also percent-encoded, or one holding an encoded `/` or `\`. A segment is
/// judged by its part before `;` (decoded or not): servers such as Tomcat and Jetty
/// strip path parameters, so `..;x` is `..` to them.
fn unsafe_path_segment(path: &str) -> Option<String> {
    path.split('/').find_map(|raw| {
        if !raw.contains('.') && !raw.contains('%') {
            return None;
        }
        let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        let dots = |s: &str| matches!(s.split(';').next(), Some("." | ".."));
        let unsafe_segment = dots(raw) || dots(&decoded) || decoded.contains(['/', '\\']);
        unsafe_segment.then(|| raw.chars().take(64).collect())
    })
}

/// Whether JSON text nests deeper than `max` (objects and arrays), without
/// parsing it. Brackets inside strings do not count.
pub fn exceeds_depth(bytes: &[u8], max: u32) -> bool {
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parts(method: &str, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn limits() -> ServerSettings {
        ServerSettings {
            max_body_bytes: 64,
            max_json_depth: 3,
            shutdown_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_connections: 1,
            access_log: Default::default(),
        }
    }

    fn refused(result: Result<(), Failure>) -> &'static str {
        result
            .err()
            .and_then(|f| f.error_type.name())
            .unwrap_or("admitted")
    }

    #[test]
    fn the_head_is_checked_host_first_then_method_path_and_key() {
        let check_of = |p: Parts| refused(check(&Head::of(&p, None), &p));
        let host = [("host", "gw")];
        assert_eq!(
            check_of(parts("POST", "/v1/chat/completions", &host)),
            "admitted"
        );
        assert_eq!(
            check_of(parts("POST", "/v1/chat/completions", &[])),
            "invalid_host"
        );
        assert_eq!(
            check_of(parts("TRACE", "/v1/../x", &[("host", "a@b")])),
            "invalid_host"
        );
        let trace = parts("TRACE", "/v1/../x", &host);
        let failure = check(&Head::of(&trace, None), &trace).unwrap_err();
        assert_eq!(failure.status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            failure
                .header
                .is_some_and(|(name, _)| name == header::ALLOW)
        );
        assert_eq!(
            check_of(parts("GET", "/v1/%2e%2e/admin", &host)),
            "invalid_path"
        );
    }

    #[test]
    fn models_is_answered_here_only_with_a_good_key_or_a_bad_host() {
        let head = Head::of(&parts("GET", "/v1/models", &[("host", "gw")]), None);
        assert!(head.models && head.host_refusal().is_none());
        let head = Head::of(&parts("GET", "/v1/models", &[]), None);
        assert!(head.models && head.host_refusal().is_some());
        assert!(!Head::of(&parts("POST", "/v1/models", &[("host", "gw")]), None).models);
        let head = Head::of(&parts("POST", "/v1/embeddings", &[("host", "gw")]), None);
        assert_eq!(head.operation, Operation::Embeddings);
    }

    #[tokio::test]
    async fn a_body_is_read_within_its_limits() {
        let read = |headers: &[(&str, &str)], body: &'static str| {
            let p = parts("POST", "/v1/chat/completions", headers);
            async move {
                let full = http_body_util::Full::new(Bytes::from_static(body.as_bytes()));
                match read_body(&p, full, &limits()).await {
                    Ok(bytes) => Ok(bytes),
                    Err(f) => Err(f.error_type.name().unwrap_or_default()),
                }
            }
        };
        assert_eq!(read(&[], r#"{"a":[1]}"#).await.unwrap(), r#"{"a":[1]}"#);
        assert_eq!(
            read(&[("content-encoding", "gzip")], "{}").await,
            Err("unsupported_content_encoding")
        );
        assert_eq!(
            read(&[("content-encoding", "identity")], "{}")
                .await
                .unwrap(),
            "{}"
        );
        assert_eq!(
            read(&[], &"x".repeat(65).leak()[..]).await,
            Err("request_too_large")
        );
        assert_eq!(read(&[], r#"{"a":[[[1]]]}"#).await, Err("json_too_deep"));
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!exceeds_depth(br#"{"a":[{"b":1}]}"#, 3));
        assert!(exceeds_depth(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!exceeds_depth(br#"{"a":"[[[[[[[[\"[[[["}"#, 1));
        let deep = "[".repeat(10_000);
        assert!(exceeds_depth(deep.as_bytes(), 64));
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_unsafe() {
        for path in [
            "/v1/../admin",
            "/v1/./chat/completions",
            "/v1/..",
            "/v1/%2e%2e/admin",
            "/v1/.%2E/admin",
            "/v1/%2E/x",
            "/v1/..%2fadmin",
            "/v1/a%5C..%5Cb",
            "/v1/..;/admin",
            "/v1/..;jsessionid=1/admin",
            "/v1/.;x/chat",
            "/v1/%2e%2e;/admin",
            "/v1/%2e%2e%3b/admin",
            "/v1/.%3bx",
        ] {
            assert!(unsafe_path_segment(path).is_some(), "{path}");
        }
        for path in [
            "/v1/chat/completions",
            "/v1/models/gpt-4.1",
            "/v1/files/file-1.jsonl",
            "/v1/...",
            "/v1/a%20b",
            "/v1/files/a;b",
            "/v1/files/a.jsonl;v=1",
            "/v1/...;x",
            "/v1/;",
            "/",
            "",
        ] {
            assert_eq!(unsafe_path_segment(path), None, "{path}");
        }
    }
}
