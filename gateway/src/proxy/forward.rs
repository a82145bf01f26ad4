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
use crate::protocol::{BackendAuth, Protocol, provider_auth};
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
/// `protocol` is the one that read the body, `owner` the one the request belongs to
/// (the same, or the protocol of a side route): it says where the key goes.
pub fn request(
    backend: &Backend,
    parts: &Parts,
    (protocol, owner): (Option<&dyn Protocol>, Option<&dyn Protocol>),
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
    let auth = owner.map_or_else(|| provider_auth(&backend.provider), |p| p.backend_auth());
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
    *req.headers_mut() = upstream_headers(&parts.headers, backend, protocol.is_some(), auth);
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

/// The backend URL for the client's path: the path after its version segment
/// (`/v1`, `/v1beta`, `/v1alpha`) goes after the base URL, so `/v1/chat/completions`
/// on a backend whose base URL is `https://host/openai/v1` becomes
/// `https://host/openai/v1/chat/completions`, and `/v1beta/models/m:generateContent`
/// on `https://host/v1beta` becomes `https://host/v1beta/models/m:generateContent`.
/// The query string is kept, less a client's `key=` (Gemini's key parameter) unless
/// the backend passes the client's credentials through.
fn upstream_uri(backend: &Backend, uri: &http::Uri) -> String {
    let path = uri.path();
    let rest = ["/v1beta", "/v1alpha", "/v1"]
        .iter()
        .find_map(|v| {
            path.strip_prefix(v)
                .filter(|r| r.is_empty() || r.starts_with('/'))
        })
        .unwrap_or(path);
    let query = uri.query().map(|q| match backend.auth_passthrough {
        true => std::borrow::Cow::Borrowed(q),
        false => without_key(q),
    });
    match query.as_deref() {
        Some(q) if !q.is_empty() => {
            format!("{}{}{}?{q}", backend.origin, backend.base_path, rest)
        }
        _ => format!("{}{}{}", backend.origin, backend.base_path, rest),
    }
}

/// A query string without its `key` parameters (a client's Gemini API key).
fn without_key(query: &str) -> std::borrow::Cow<'_, str> {
    let is_key = |pair: &&str| pair.split('=').next() == Some("key");
    if !query.split('&').any(|p| is_key(&p)) {
        return std::borrow::Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_key(p)).collect();
    std::borrow::Cow::Owned(kept.join("&"))
}

/// The client's headers as the backend gets them: hop-by-hop and celgate's own
/// removed, the client's credentials (`Authorization` and every provider's key
/// header) replaced by the backend's key in the header `auth` names. `read`: the
/// body was read whole.
fn upstream_headers(
    client: &HeaderMap,
    backend: &Backend,
    read: bool,
    auth: BackendAuth,
) -> HeaderMap {
    let mut h = client.clone();
    strip_hop_by_hop(&mut h);
    h.remove(header::HOST);
    h.remove("traceparent");
    h.remove(MODEL_HEADER);
    if read {
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
/// refused or unreachable a 502 `connect_error`, a failed TLS handshake a 502
/// `tls_error` whose message says why.
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
    let (status, error_type, message) = if let Some(reason) = crate::tls::explain(e, "backend") {
        (
            StatusCode::BAD_GATEWAY,
            ErrorType::TlsError,
            format!(
                "could not talk to backend `{}` at {}:{}: {reason}",
                backend.name, backend.host, backend.port
            ),
        )
    } else if e.is_connect() && timed_out {
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
        let req = request(backend, &client, (chat, chat), body, Some("n"), "00-tp").unwrap();
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
        assert_eq!(uri("/v1beta/x"), "https://h.test/openai/v1/x");
        assert_eq!(uri("/v1alpha/x/y"), "https://h.test/openai/v1/x/y");
        assert_eq!(uri("/v1betax/y"), "https://h.test/openai/v1/v1betax/y");
        assert_eq!(uri("/v2/x"), "https://h.test/openai/v1/v2/x");
    }

    #[test]
    fn a_clients_key_parameter_never_goes_next_to_ours() {
        let yaml = "backends:\n  - {name: a, baseUrl: 'https://h.test/v1beta'}\n  - {name: b, baseUrl: 'https://h.test/v1beta', authPassthrough: true}\n";
        let g = generation(yaml);
        let uri = |b: usize, p: &str| upstream_uri(&g.settings.backends[b], &p.parse().unwrap());
        let path = "/v1beta/models/m:streamGenerateContent";
        assert_eq!(
            uri(0, &format!("{path}?alt=sse&key=client-key")),
            format!("https://h.test/v1beta/models/m:streamGenerateContent?alt=sse")
        );
        assert_eq!(
            uri(0, &format!("{path}?key=a&key=b")),
            "https://h.test/v1beta/models/m:streamGenerateContent"
        );
        assert_eq!(
            uri(0, &format!("{path}?keys=1&monkey=2")),
            format!("https://h.test/v1beta/models/m:streamGenerateContent?keys=1&monkey=2")
        );
        assert_eq!(
            uri(1, &format!("{path}?key=client-key")),
            format!("https://h.test/v1beta/models/m:streamGenerateContent?key=client-key"),
            "authPassthrough sends the client's own credentials"
        );
    }
}
