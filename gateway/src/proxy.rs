//! One proxied request, from arrival to the span.
//!
//! `handle` reads and checks the request, routes it to a backend, forwards it with
//! the backend's key and a child `traceparent`, and hands the response back with
//! its body wrapped in an [`ObservedBody`](crate::observe::ObservedBody), which
//! passes every chunk through as it arrives and finishes the span when the body
//! ends, fails, or the client goes away. Requests celgate refuses (bad JSON, no
//! route, too large) get an OpenAI-style error and a span that records it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use celgate_engine::exchange::{Exchange, Operation};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::client_auth::{self, Admission};
use crate::observe::{Capture, InFlight, ObservedBody, Outcome};
use crate::openai;
use crate::redact::{RedactedBody, Redactor, StreamRedactor, Tally};
use crate::settings::Backend;
use crate::state::{BoxError, Generation, Shared, UpstreamBody, whole_body};
use crate::trace_context::{self, SpanIds};

/// Bodies sent to clients.
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// The header that overrides the body's `model` for routing (Envoy AI Gateway's).
const MODEL_HEADER: &str = "x-ai-eg-model";

/// A UTF-8 byte-order mark, which some clients put before a JSON body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Largest response body kept for the span (the client still gets all of it).
const MAX_CAPTURE_BYTES: usize = 32 * 1024 * 1024;

/// Serves one request. Never fails: every problem becomes an HTTP error response.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<ClientBody> {
    Shared::count(&shared.stats.requests);
    let generation = shared.current();
    let start = Instant::now();
    let start_time = SystemTime::now();
    let (parts, body) = req.into_parts();
    let host_problem = host_problem(&parts);
    let admission = client_auth::admit(generation.settings.client_keys.as_ref(), &parts.headers);

    let operation = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/chat/completions") => Operation::Chat,
        (&Method::POST, "/v1/completions") => Operation::TextCompletion,
        (&Method::POST, "/v1/embeddings") => Operation::Embeddings,
        // Answered here, without a span; the Host rule holds all the same. Without a
        // valid key it is refused below, like any other path.
        (&Method::GET, "/v1/models") if host_problem.is_some() || admission.admitted() => {
            return match host_problem {
                Some(message) => json_response(
                    StatusCode::BAD_REQUEST,
                    &error_body(message, "invalid_request_error", "invalid_host"),
                ),
                None => models(&generation),
            };
        }
        _ => Operation::Other,
    };

    let mut exchange = Exchange {
        operation,
        source_address: Some(remote.to_string()),
        ..Exchange::default()
    };
    exchange.client = admission.client().cloned();
    exchange.request.method = parts.method.as_str().to_owned();
    exchange.request.path = parts.uri.path().to_owned();
    if generation.needs.request_headers {
        exchange.request.headers = visible_headers(&parts.headers);
    }

    let parent = parts
        .headers
        .get("traceparent")
        .and_then(|v| trace_context::parse_traceparent(v.as_bytes()));
    let ids = SpanIds::new(parent);
    let mut flight = InFlight {
        shared: Arc::clone(&shared),
        generation: Arc::clone(&generation),
        exchange,
        ids,
        sampled: true,
        start,
        start_time,
        // A bounded label: client-chosen paths only appear in the access log.
        route: match operation {
            Operation::Other => "passthrough".to_owned(),
            _ => parts.uri.path().to_owned(),
        },
        backend: None,
        host: parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .map(str::to_owned),
        version: parts.version,
        finished: false,
    };

    if let Some(message) = host_problem {
        return refuse(
            flight,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_host",
            message.to_owned(),
        );
    }

    // TRACE would have the upstream echo the request back, headers included, and the
    // upstream request carries the backend's key; CONNECT would make the gateway an
    // open tunnel. Neither is forwarded.
    if parts.method == Method::TRACE || parts.method == Method::CONNECT {
        let method = parts.method.clone();
        let mut resp = refuse(
            flight,
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("the gateway does not forward {method} requests"),
        );
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return resp;
    }

    // `/v1/../admin` is `/admin` to a backend that resolves dot segments: a way out
    // of the backend's base path, with the backend's key attached.
    if let Some(segment) = unsafe_path_segment(parts.uri.path()) {
        return refuse(
            flight,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_path",
            format!(
                "the path has a `{segment}` segment; the gateway forwards only paths without dot segments or encoded slashes"
            ),
        );
    }

    // Only a listed client may spend the backends' keys; checked before a byte of
    // the body is read.
    if !admission.admitted() {
        return refuse_unauthenticated(flight, &admission);
    }

    // LLM calls are read whole (they are small) so they can be parsed and routed;
    // anything else streams through untouched.
    let (outgoing, model) = if operation == Operation::Other {
        let model = header_model(&parts.headers);
        let body: UpstreamBody = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
        (Outgoing::Streamed(body), model)
    } else {
        let settings = &generation.settings.server;
        if let Some(encoding) = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return refuse(
                flight,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_content_encoding",
                format!(
                    "request bodies must be uncompressed JSON (got Content-Encoding: {})",
                    String::from_utf8_lossy(encoding.as_bytes())
                ),
            );
        }
        // A declared length over the limit is refused before reading a byte (and
        // before `Expect: 100-continue` asks the client to send it).
        let declared = http_body::Body::size_hint(&body).lower();
        if declared > settings.max_body_bytes {
            return refuse(
                flight,
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!(
                    "request body is {declared} bytes, larger than the gateway's limit of {} bytes (server.maxBodyBytes)",
                    settings.max_body_bytes
                ),
            );
        }
        let read = Limited::new(body, settings.max_body_bytes as usize).collect();
        let bytes = match tokio::time::timeout(settings.request_timeout, read).await {
            Err(_) => {
                // A client that declared more than it sends, or trickles it, would
                // otherwise hold the connection and its buffer forever.
                return refuse(
                    flight,
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {:?} (server.requestTimeout)",
                        settings.request_timeout
                    ),
                );
            }
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return refuse(
                    flight,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "request_too_large",
                    format!(
                        "request body is larger than the gateway's limit of {} bytes (server.maxBodyBytes)",
                        settings.max_body_bytes
                    ),
                );
            }
            Ok(Err(e)) => {
                return refuse(
                    flight,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "request_body_error",
                    format!("could not read the request body: {e}"),
                );
            }
        };
        if exceeds_depth(&bytes, settings.max_json_depth) {
            return refuse(
                flight,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "json_too_deep",
                format!(
                    "request body nests deeper than {} levels (server.maxJsonDepth)",
                    settings.max_json_depth
                ),
            );
        }
        let facts = match openai::parse_request(operation, &bytes, &mut flight.exchange) {
            Ok(facts) => facts,
            Err(e) => {
                return refuse(
                    flight,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_request",
                    e.to_string(),
                );
            }
        };
        // `{"model":"a","model":"b"}` routes (and is traced) as `b`, as most JSON
        // parsers read it; an upstream whose parser keeps the first key would run `a`,
        // a model the route may not allow. Forward it with each key once.
        let bytes = if facts.duplicate_keys {
            let once = last_key_wins(&bytes);
            flight.exchange.request_body = Some(String::from_utf8_lossy(&once).into_owned());
            once
        } else if bytes.starts_with(BOM) {
            // Tolerated here, but not JSON: the upstream gets the body as parsed.
            bytes.slice(BOM.len()..)
        } else {
            bytes
        };
        let model = header_model(&parts.headers).or_else(|| flight.exchange.request_model.clone());
        (Outgoing::Whole(bytes), model)
    };

    let backend = match route(&generation, model.as_deref(), operation) {
        Ok(b) => b,
        Err((status, code, message)) => {
            return refuse(flight, status, "invalid_request_error", code, message);
        }
    };
    // The header chose the backend; the body's model is what it would run.
    let send_model = match upstream_model(backend, &flight.exchange, model.as_deref()) {
        Ok(send) => send,
        Err(message) => {
            return refuse(
                flight,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "model_not_allowed",
                message,
            );
        }
    };
    if flight.exchange.request_model.is_none() && operation != Operation::Other {
        // The body named none: the header's is the model asked for.
        flight.exchange.request_model = model.clone();
    }
    flight.backend = Some(backend.name.clone());
    flight.exchange.provider = backend.provider.clone();
    flight.exchange.backend_name = Some(backend.name.clone());
    flight.exchange.backend_host = Some(backend.host.clone());
    flight.exchange.backend_port = Some(backend.port);

    flight.sampled = sample(&generation, &flight.exchange, &ids);
    if !flight.sampled {
        Shared::count(&shared.stats.unsampled);
    }
    // Sampling has seen the whole request; keep only what the span will read.
    generation.needs.trim(&mut flight.exchange);

    let upstream_body = match outgoing {
        Outgoing::Streamed(body) => body,
        Outgoing::Whole(bytes) => whole_body(match &send_model {
            Some(to) => rewrite_model(bytes, to),
            None => bytes,
        }),
    };

    let uri = upstream_uri(backend, &parts.uri);
    let mut upstream_req = match Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(upstream_body)
    {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                flight,
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_error",
                format!(
                    "cannot build the URL for backend `{}` from this request ({uri}): {e}",
                    backend.name
                ),
            );
        }
    };
    *upstream_req.headers_mut() = upstream_headers(&parts.headers, backend, operation);
    if let Ok(tp) = HeaderValue::from_str(&ids.traceparent(flight.sampled)) {
        upstream_req.headers_mut().insert("traceparent", tp);
    }

    let client = shared.clients.get(backend.connect_timeout);
    let response = match tokio::time::timeout(backend.timeout, client.request(upstream_req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let (status, code, message) = describe_client_error(&e, backend);
            return refuse(flight, status, "upstream_error", code, message);
        }
        Err(_) => {
            return refuse(
                flight,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "timeout",
                format!(
                    "backend `{}` did not answer within {:?} (its `timeout`)",
                    backend.name, backend.timeout
                ),
            );
        }
    };

    let (mut resp_parts, resp_body) = response.into_parts();
    let status = resp_parts.status;
    flight.exchange.response.status = Some(status.as_u16());
    // Before anything reads them: neither the client nor the span sees a key.
    let redactor = &response_redactor(&generation, backend, &parts.headers);
    let masked = redactor.mask_headers(&mut resp_parts.headers);
    if masked > 0 {
        let metric = &shared.metrics.secrets_redacted;
        Tally::new(metric, &backend.name, "in a response header").add(masked);
    }
    if generation.needs.response_headers {
        flight.exchange.response.headers = visible_headers(&resp_parts.headers);
    }
    if status.is_client_error() || status.is_server_error() {
        flight.exchange.error_type = Some(status.as_u16().to_string());
    }
    strip_hop_by_hop(&mut resp_parts.headers);

    let is_sse = resp_parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if is_sse && operation != Operation::Other {
        flight.exchange.streaming = true;
    }
    // celgate asks backends for no encoding; one that compresses anyway is read
    // through a gzip decoder, or (another coding) not read at all.
    let encoding = ContentEncoding::of(&resp_parts.headers);
    let capture = if operation == Operation::Other || encoding == ContentEncoding::Other {
        Capture::Nothing
    } else {
        let gzip = encoding == ContentEncoding::Gzip;
        let read = if is_sse {
            Capture::sse(operation, generation.needs.response_body)
        } else {
            // A compressed length says nothing about the decompressed one.
            let expected = http_body::Body::size_hint(&resp_body).exact();
            Capture::json(MAX_CAPTURE_BYTES, expected.filter(|_| !gzip))
        };
        if gzip {
            Capture::gzip(read, MAX_CAPTURE_BYTES).redact_decoded(redact(
                &shared,
                redactor,
                backend,
                "in a gzip body (masked for the span; the client got the compressed bytes as sent)",
            ))
        } else {
            read
        }
    };
    // Compressed bytes cannot be masked without re-encoding: they pass as sent.
    let resp_body = RedactedBody::new(
        resp_body,
        (encoding == ContentEncoding::Identity)
            .then(|| redact(&shared, redactor, backend, "in a response body"))
            .flatten(),
    );
    let idle = backend.idle_timeout;
    let body = ObservedBody::new(resp_body, idle, capture, flight);
    Response::from_parts(resp_parts, body.boxed_unsync())
}

/// What a response of `backend` is masked with: the generation's keys and, when the
/// client's own credentials went upstream (`authPassthrough`), those too: the client
/// has them, the span and the collector must not.
fn response_redactor(
    generation: &Generation,
    backend: &Backend,
    client: &HeaderMap,
) -> Arc<Redactor> {
    let keys = &generation.settings.redactor;
    if !backend.auth_passthrough {
        return Arc::clone(keys);
    }
    let authorization = client.get_all(header::AUTHORIZATION).iter().map(|v| {
        // `Bearer <key>`, `Basic <base64>`: the credentials after the scheme.
        let v = v.as_bytes();
        v.iter()
            .position(|b| *b == b' ')
            .map_or(v, |at| v[at + 1..].trim_ascii())
    });
    let own: Vec<&[u8]> = ["api-key", "x-api-key"]
        .iter()
        .flat_map(|name| client.get_all(*name).iter().map(HeaderValue::as_bytes))
        .chain(authorization)
        .collect();
    if own.is_empty() {
        Arc::clone(keys)
    } else {
        Arc::new(keys.with(own))
    }
}

/// A masker for one response body of `backend`, counted by its name; `None` when
/// the generation has no key to mask.
fn redact(
    shared: &Shared,
    redactor: &Arc<Redactor>,
    backend: &Backend,
    place: &'static str,
) -> Option<(StreamRedactor, Tally)> {
    (!redactor.is_empty()).then(|| {
        let tally = Tally::new(&shared.metrics.secrets_redacted, &backend.name, place);
        (redactor.stream(), tally)
    })
}

/// A response's `content-encoding`, as far as the span is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContentEncoding {
    Identity,
    Gzip,
    /// Anything else (`br`, `zstd`, `deflate`, a chain of codings): not read.
    Other,
}

impl ContentEncoding {
    fn of(headers: &HeaderMap) -> ContentEncoding {
        let mut codings = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
        match (codings.next(), codings.next()) {
            (None, _) => ContentEncoding::Identity,
            (Some(c), None)
                if c.eq_ignore_ascii_case(b"gzip") || c.eq_ignore_ascii_case(b"x-gzip") =>
            {
                ContentEncoding::Gzip
            }
            _ => ContentEncoding::Other,
        }
    }
}

/// Answers `/v1/models` from the backends' model lists.
fn models(generation: &Generation) -> Response<ClientBody> {
    let mut seen = std::collections::BTreeSet::new();
    let data: Vec<serde_json::Value> = generation
        .settings
        .backends
        .iter()
        .flat_map(|b| b.listed_models().map(move |m| (m, b)))
        .filter(|(m, _)| seen.insert(m.to_string()))
        .map(|(m, b)| {
            serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": b.provider})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
    )
}

fn header_model(headers: &HeaderMap) -> Option<String> {
    headers
        .get(MODEL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The model to write into an LLM call's body before it goes to `backend`, or why the
/// call may not go there. `routed` is the model that chose the backend (the
/// `x-ai-eg-model` header when set, else the body's). The model a backend runs must
/// be one its `models` allow: a body model it does not serve is refused (the header
/// cannot launder it); a body without a model gets the routed one, so the backend
/// never falls back to a default of its own. `rewriteModel` wins over both: that
/// name is the operator's choice.
fn upstream_model(
    backend: &Backend,
    exchange: &Exchange,
    routed: Option<&str>,
) -> Result<Option<String>, String> {
    if exchange.operation == Operation::Other {
        return Ok(None);
    }
    if let Some(to) = &backend.rewrite_model {
        return Ok(Some(to.clone()));
    }
    match (exchange.request_model.as_deref(), routed) {
        (Some(body), _) if backend.serves(body) => Ok(None),
        (Some(body), routed) => Err(format!(
            "model `{}` in the body is not served by the backend that x-ai-eg-model `{}` routes to; name the same model in both, or leave `model` out of the body",
            shorten(body),
            shorten(routed.unwrap_or_default())
        )),
        (None, routed) => Ok(routed.map(str::to_owned)),
    }
}

/// A client-chosen name, cut to a length fit for an error message.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Why the request's `Host` is unacceptable (RFC 9112 §3.2: 400 for an HTTP/1.1
/// request without one, for more than one, or for an invalid value). HTTP/1.0 may
/// omit it; HTTP/2 names the authority in `:authority` instead.
fn host_problem(parts: &http::request::Parts) -> Option<&'static str> {
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

/// The backend for `model`: the first that serves it. Calls that name no model
/// (only possible for pass-through paths) go to the first backend.
fn route<'g>(
    generation: &'g Generation,
    model: Option<&str>,
    operation: Operation,
) -> Result<&'g Backend, (StatusCode, &'static str, String)> {
    let settings = &generation.settings;
    if settings.backends.is_empty() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "no_backends",
            "the gateway has no backends configured (add one under `backends:` in config.yaml)"
                .into(),
        ));
    }
    match model {
        Some(m) => settings.route(m).ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "no backend serves model `{m}`; check the `models` lists under `backends:`"
                ),
            )
        }),
        None if operation == Operation::Other => Ok(&settings.backends[0]),
        None => Err((
            StatusCode::BAD_REQUEST,
            "model_required",
            "the request names no model: set `model` in the body or the x-ai-eg-model header"
                .into(),
        )),
    }
}

/// The sampling decision: an incoming `traceparent` decides when `clientSampling`
/// says to honour it; otherwise `randomSampling` does.
fn sample(generation: &Generation, exchange: &Exchange, ids: &SpanIds) -> bool {
    use celgate_engine::plan::Sampler;
    let plan = &generation.plan;
    if let Some(env) = generation.settings.env_sampler {
        return match ids.parent {
            Some(parent) if env.parent_based => parent.sampled,
            _ => trace_context::ratio_sampled(ids.trace_id, env.ratio),
        };
    }
    let decide = |sampler: &Sampler| match sampler {
        Sampler::Always => true,
        Sampler::Never => false,
        Sampler::Ratio(r) => trace_context::ratio_sampled(ids.trace_id, *r),
        Sampler::Expression(_) => plan.eval_sampler(sampler, exchange).unwrap_or_else(|e| {
            tracing::debug!("sampling expression failed, sampling this request: {e}");
            true
        }),
    };
    if let Some(parent) = ids.parent
        && decide(&plan.client_sampling)
    {
        return parent.sampled;
    }
    decide(&plan.random_sampling)
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

/// Headers never forwarded: hop-by-hop ones (RFC 9110 §7.6.1) and those the
/// proxy sets itself.
///
/// A message framed by `Transfer-Encoding` loses its `Content-Length` too (RFC 9112
/// §6.3: the chunked framing wins, and a proxy must not forward the length): the
/// body is re-framed by hyper from what actually arrives, and a stale length would
/// cut it short. Used for requests and responses alike.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn upstream_headers(client: &HeaderMap, backend: &Backend, operation: Operation) -> HeaderMap {
    let mut h = client.clone();
    strip_hop_by_hop(&mut h);
    h.remove(header::HOST);
    h.remove("traceparent");
    h.remove(MODEL_HEADER);
    if operation != Operation::Other {
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
        if let Some(key) = &backend.api_key
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        {
            v.set_sensitive(true);
            h.insert(header::AUTHORIZATION, v);
        }
    }
    h
}

/// What goes upstream: a pass-through body as it streams in, or an LLM call's
/// body, already read and checked.
enum Outgoing {
    Streamed(UpstreamBody),
    Whole(Bytes),
}

/// The body with each top-level key once, holding its last value (nested objects
/// too: a parsed JSON map keeps the last of duplicate keys). The body was already
/// parsed, so it is a JSON object.
fn last_key_wins(bytes: &Bytes) -> Bytes {
    let body = bytes.strip_prefix(BOM).unwrap_or(bytes);
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .and_then(|map| serde_json::to_vec(&map))
        .map_or_else(|_| bytes.clone(), Bytes::from)
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

/// Header names whose values must never reach a span: credentials of any kind.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "cookie" | "set-cookie")
        || [
            "auth",
            "key",
            "token",
            "secret",
            "password",
            "credential",
            "signature",
        ]
        .iter()
        .any(|s| n.contains(s))
}

/// Headers as the CEL context sees them: lower-case names, secrets left out.
fn visible_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !is_secret_header(name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The status, `error.type` and message for a request the backend client could
/// not complete: a connection that could not be made within `connectTimeout` is a
/// 504 `connect_timeout`, one refused or unreachable a 502 `connect_error`.
fn describe_client_error(
    e: &hyper_util::client::legacy::Error,
    backend: &Backend,
) -> (StatusCode, &'static str, String) {
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
    if e.is_connect() && timed_out {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "connect_timeout",
            format!(
                "could not connect to backend `{}` at {}:{} within {:?} (its `connectTimeout`)",
                backend.name, backend.host, backend.port, backend.connect_timeout
            ),
        )
    } else if e.is_connect() {
        (
            StatusCode::BAD_GATEWAY,
            "connect_error",
            format!(
                "could not connect to backend `{}` at {}:{}: {}",
                backend.name, backend.host, backend.port, cause
            ),
        )
    } else {
        (
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!(
                "backend `{}` failed: {}",
                backend.name,
                if cause.is_empty() {
                    e.to_string()
                } else {
                    cause
                }
            ),
        )
    }
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

/// An OpenAI-style error body.
pub fn error_body(message: &str, kind: &str, code: &str) -> serde_json::Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ClientBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let mut resp = Response::new(whole_body(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// celgate answers itself: the request was refused before reaching a backend, or
/// the backend could not be reached. `code` doubles as the span's `error.type`.
fn refuse(
    mut flight: InFlight,
    status: StatusCode,
    kind: &str,
    code: &'static str,
    message: String,
) -> Response<ClientBody> {
    Shared::count(&flight.shared.stats.errors);
    // A cause quoted from below (a TLS or connection error) must not carry a key either.
    let (message, found) = flight.generation.settings.redactor.mask_str(message);
    if found > 0 {
        let metric = &flight.shared.metrics.secrets_redacted;
        let backend = flight.backend.as_deref().unwrap_or_default();
        Tally::new(metric, backend, "in an error message").add(found);
    }
    let body = error_body(&message, kind, code);
    flight.exchange.response.status = Some(status.as_u16());
    flight.exchange.error_type = Some(code.to_owned());
    flight.exchange.response_body = Some(body.to_string());
    flight.finish(Outcome::Refused(message));
    json_response(status, &body)
}

/// [`refuse`] for a missing or unknown client key: OpenAI's 401 (its `code` is
/// not the span's `error.type`, `unauthenticated`) with a Bearer challenge.
fn refuse_unauthenticated(mut flight: InFlight, admission: &Admission) -> Response<ClientBody> {
    let answer = client_auth::Unauthenticated::of(admission);
    Shared::count(&flight.shared.stats.errors);
    flight.exchange.response.status = Some(StatusCode::UNAUTHORIZED.as_u16());
    flight.exchange.error_type = Some("unauthenticated".to_owned());
    flight.exchange.response_body = Some(answer.body.to_string());
    flight.finish(Outcome::Refused(answer.message.to_owned()));
    let mut resp = json_response(StatusCode::UNAUTHORIZED, &answer.body);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(answer.challenge),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!exceeds_depth(br#"{"a":[{"b":1}]}"#, 3));
        assert!(exceeds_depth(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!exceeds_depth(br#"{"a":"[[[[[[[[\"[[[["}"#, 1));
        let deep = "[".repeat(10_000);
        assert!(exceeds_depth(deep.as_bytes(), 64));
    }

    #[test]
    fn only_a_lone_gzip_coding_is_read() {
        let of = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            ContentEncoding::of(&headers)
        };
        assert_eq!(of(&[]), ContentEncoding::Identity);
        assert_eq!(of(&["identity"]), ContentEncoding::Identity);
        assert_eq!(of(&["gzip"]), ContentEncoding::Gzip);
        assert_eq!(of(&["X-GZIP"]), ContentEncoding::Gzip);
        assert_eq!(of(&["identity, gzip"]), ContentEncoding::Gzip);
        assert_eq!(of(&["br"]), ContentEncoding::Other);
        assert_eq!(of(&["gzip, br"]), ContentEncoding::Other);
        assert_eq!(of(&["gzip", "gzip"]), ContentEncoding::Other);
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

    #[test]
    fn duplicate_keys_are_forwarded_once_with_the_last_value() {
        let once = last_key_wins(&Bytes::from_static(
            br#"{"model":"a","messages":[{"role":"user","content":"x","content":"y"}],"model":"b"}"#,
        ));
        let v: serde_json::Value = serde_json::from_slice(&once).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "b", "messages": [{"role": "user", "content": "y"}]})
        );
        assert_eq!(
            String::from_utf8_lossy(&once).matches("\"model\"").count(),
            1
        );
        let bom = last_key_wins(&Bytes::from_static(b"\xEF\xBB\xBF{\"m\":1,\"m\":2}"));
        assert_eq!(&bom[..], br#"{"m":2}"#);
    }

    #[test]
    fn secret_headers_are_recognised() {
        for h in [
            "authorization",
            "Authorization",
            "x-api-key",
            "api-key",
            "cookie",
            "x-goog-api-key",
            "proxy-authorization",
            "x-amz-security-token",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        for h in ["content-type", "x-session-id", "user-agent", "traceparent"] {
            assert!(!is_secret_header(h), "{h}");
        }
    }
}
