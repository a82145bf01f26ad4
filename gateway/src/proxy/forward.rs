//! Forward: the upstream request, and sending it within the backend's timeout.
//!
//! The request goes to the backend's base URL plus the client's path after `/v1`
//! (query kept), with the client's headers minus the hop-by-hop ones and those
//! celgate sets itself: the backend's key replaces the client's credentials
//! (unless `authPassthrough`), a child `traceparent` replaces the client's, and an
//! LLM call asks for an uncompressed answer (the span must read it). A backend that
//! cannot be reached, or does not answer in time, is a [`Failure`] with the
//! `error.type` that says which.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::failure::Failure;
use super::headers::strip_hop_by_hop;
use super::parse::MODEL_HEADER;
use crate::client_auth;
use crate::error_type::ErrorType;
use crate::protocol::{BackendAuth, Protocol};
use crate::settings::Backend;
use crate::state::{BoxError, UpstreamBody, whole_body};
use crate::upstream::Clients;

/// What goes upstream: a pass-through body as it streams in, or an LLM call's
/// body, already read and checked.
pub enum Outgoing {
    Streamed(UpstreamBody),
    Whole(Bytes),
}

impl Outgoing {
    /// A pass-through body, forwarded as it arrives.
    pub fn streamed(body: Incoming) -> Outgoing {
        Outgoing::Streamed(body.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
    }
}

/// The request for `backend`: the client's `parts` with `outgoing` as the body
/// (its model replaced by `send_model`), and `traceparent` for the child span.
pub fn request(
    backend: &Backend,
    parts: &Parts,
    protocol: Option<&dyn Protocol>,
    outgoing: Outgoing,
    send_model: Option<&str>,
    traceparent: &str,
) -> Result<Request<UpstreamBody>, Failure> {
    let body = match outgoing {
        Outgoing::Streamed(body) => body,
        Outgoing::Whole(bytes) => whole_body(match send_model {
            Some(to) => rewrite_model(bytes, to),
            None => bytes,
        }),
    };
    let uri = upstream_uri(backend, &parts.uri);
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(body)
        .map_err(|e| {
            Failure::upstream(
                StatusCode::BAD_GATEWAY,
                ErrorType::UpstreamError,
                format!(
                    "cannot build the URL for backend `{}` from this request ({uri}): {e}",
                    backend.name
                ),
            )
        })?;
    *req.headers_mut() = upstream_headers(&parts.headers, backend, protocol);
    if let Ok(tp) = HeaderValue::from_str(traceparent) {
        req.headers_mut().insert("traceparent", tp);
    }
    Ok(req)
}

/// Sends `req` to `backend`; its answer's head, or why there is none.
pub async fn send(
    clients: &Clients<UpstreamBody>,
    backend: &Backend,
    req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, Failure> {
    let client = clients.get(backend.connect_timeout);
    match tokio::time::timeout(backend.timeout, client.request(req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(client_error(&e, backend)),
        Err(_) => Err(Failure::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorType::Timeout,
            format!(
                "backend `{}` did not answer within {:?} (its `timeout`)",
                backend.name, backend.timeout
            ),
        )),
    }
}

/// The backend URL for the client's path: `/v1/chat/completions` on a backend
/// whose base URL is `https://host/openai/v1` becomes
/// `https://host/openai/v1/chat/completions`. The query string is kept.
fn upstream_uri(backend: &Backend, uri: &http::Uri) -> String {
    let path = uri.path();
    let rest = path
        .strip_prefix("/v1")
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .unwrap_or(path);
    match uri.query() {
        Some(q) => format!("{}{}{}?{q}", backend.origin, backend.base_path, rest),
        None => format!("{}{}{}", backend.origin, backend.base_path, rest),
    }
}

/// The client's headers as the backend gets them: hop-by-hop and celgate's own
/// removed, the client's key replaced by the backend's, in the header the protocol
/// names (a pass-through path: `Authorization: Bearer`, the gateway's API being
/// OpenAI's).
fn upstream_headers(
    client: &HeaderMap,
    backend: &Backend,
    protocol: Option<&dyn Protocol>,
) -> HeaderMap {
    let mut h = client.clone();
    strip_hop_by_hop(&mut h);
    h.remove(header::HOST);
    h.remove("traceparent");
    h.remove(MODEL_HEADER);
    if protocol.is_some() {
        // The body was read whole (and maybe rewritten): hyper sets the length.
        h.remove(header::CONTENT_LENGTH);
        // The span needs to read the response: ask for it uncompressed.
        h.remove(header::ACCEPT_ENCODING);
    }
    if !backend.auth_passthrough {
        h.remove(header::AUTHORIZATION);
        for name in client_auth::KEY_HEADERS {
            h.remove(name);
        }
        let auth = protocol.map_or(BackendAuth::Bearer, |p| p.backend_auth());
        if let Some((name, value)) = backend
            .api_key
            .as_ref()
            .and_then(|k| auth.header(k.expose()))
        {
            h.insert(name, value);
        }
    }
    h
}

/// Sends `to` upstream as the model. The body was already parsed, so it is a
/// JSON object.
fn rewrite_model(bytes: Bytes, to: &str) -> Bytes {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes) {
        Ok(mut map) => {
            map.insert("model".into(), serde_json::Value::String(to.to_owned()));
            serde_json::to_vec(&map).map(Bytes::from).unwrap_or(bytes)
        }
        Err(_) => bytes,
    }
}

/// The failure for a request the backend client could not complete: a connection
/// that could not be made within `connectTimeout` is a 504 `connect_timeout`, one
/// refused or unreachable a 502 `connect_error`.
fn client_error(e: &hyper_util::client::legacy::Error, backend: &Backend) -> Failure {
    use std::error::Error as _;
    let mut cause = String::new();
    let mut timed_out = false;
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        timed_out |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        source = s.source();
    }
    let (status, error_type, message) = if e.is_connect() && timed_out {
        (
            StatusCode::GATEWAY_TIMEOUT,
            ErrorType::ConnectTimeout,
            format!(
                "could not connect to backend `{}` at {}:{} within {:?} (its `connectTimeout`)",
                backend.name, backend.host, backend.port, backend.connect_timeout
            ),
        )
    } else if e.is_connect() {
        (
            StatusCode::BAD_GATEWAY,
            ErrorType::ConnectError,
            format!(
                "could not connect to backend `{}` at {}:{}: {}",
                backend.name, backend.host, backend.port, cause
            ),
        )
    } else {
        let cause = if cause.is_empty() {
            e.to_string()
        } else {
            cause
        };
        (
            StatusCode::BAD_GATEWAY,
            ErrorType::UpstreamError,
            format!("backend `{}` failed: {cause}", backend.name),
        )
    };
    Failure::upstream(status, error_type, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::{generation, generation_with};

    fn parts(path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::builder().method("POST").uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn the_backend_gets_its_key_a_child_traceparent_and_the_rewritten_model() {
        let g = generation_with(
            "backends:\n  - {name: a, baseUrl: 'http://a.test/base/v1', apiKey: {file: key}}\n",
            &[("key", "sk-forward-test\n")],
        );
        let backend = &g.settings.backends[0];
        let client = parts(
            "/v1/chat/completions?x=1",
            &[
                ("host", "gw"),
                ("authorization", "Bearer client-key"),
                ("x-api-key", "client-key"),
                (MODEL_HEADER, "m"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("accept-encoding", "gzip"),
                ("connection", "close"),
                ("x-session-id", "s1"),
            ],
        );
        let body = Outgoing::Whole(Bytes::from_static(br#"{"model":"m","messages":[]}"#));
        let chat = Some(&crate::protocol::openai::chat::CHAT as &dyn Protocol);
        let req = request(backend, &client, chat, body, Some("n"), "00-tp").unwrap();
        assert_eq!(req.uri(), "http://a.test/base/v1/chat/completions?x=1");
        let h = req.headers();
        assert_eq!(h["authorization"], "Bearer sk-forward-test");
        assert_eq!(h["traceparent"], "00-tp");
        assert_eq!(h["x-session-id"], "s1");
        for gone in [
            "host",
            "x-api-key",
            MODEL_HEADER,
            "accept-encoding",
            "connection",
        ] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
        let sent = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&sent).unwrap()["model"],
            "n"
        );
    }

    #[test]
    fn paths_map_onto_the_base_path() {
        let g = generation("backends:\n  - {name: a, baseUrl: 'https://h.test/openai/v1'}\n");
        let b = &g.settings.backends[0];
        let uri = |p: &str| upstream_uri(b, &p.parse().unwrap());
        assert_eq!(uri("/v1/embeddings"), "https://h.test/openai/v1/embeddings");
        assert_eq!(uri("/v1"), "https://h.test/openai/v1");
        assert_eq!(uri("/v1beta/x"), "https://h.test/openai/v1/v1beta/x");
    }
}
