//! One proxied request, from arrival to the span, as named phases over one
//! per-request context.
//!
//! [`handle`] runs the phases in order over a [`Call`] (the request's head and the
//! [`InFlight`] record its span is built from), each in its own module:
//!
//! 1. [`admit`]: the head (`Host`, method, path, client key) and, for an LLM call,
//!    the body read whole within the gateway's limits (encoding, size, time, depth);
//! 2. [`parse`]: that body as its protocol's request, into the exchange, and the
//!    agent [`session`] the headers name;
//! 3. [`route`]: the backend for the model, and the model it may run there;
//! 4. [`sample`]: whether the span is exported;
//! 5. [`forward`]: the upstream request, sent within the backend's timeout;
//! 6. [`respond`] (observe): the answer passed to the client as it arrives while it
//!    is read for the span, which [`ObservedBody`](crate::observe::ObservedBody)
//!    finishes when the body ends, fails, or the client goes away.
//!
//! A phase that refuses returns a [`Failure`]: `handle` answers the client with it
//! and records it in the span ([`failure`]). `GET /v1/models` is answered at
//! admission, without a span.

pub mod admit;
pub mod failure;
pub mod forward;
pub mod headers;
pub mod parse;
pub mod respond;
pub mod route;
pub mod sample;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use celgate_engine::exchange::Exchange;
use http::header;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

use self::admit::Head;
use self::failure::{Failure, json_response};
use self::forward::Outgoing;
use crate::observe::InFlight;
use crate::settings::Backend;
use crate::state::{BoxError, Generation, Shared};
use crate::trace_context::{self, SpanIds};

/// Bodies sent to clients.
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// One request's context through the phases.
pub struct Call {
    /// The client's request head.
    pub parts: Parts,
    /// What the span is built from; finished by the failure or the observed body.
    pub flight: InFlight,
}

/// Serves one request. Never fails: every problem becomes an HTTP error response.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<ClientBody> {
    Shared::count(&shared.stats.requests);
    let generation = shared.current();
    let start = (Instant::now(), SystemTime::now());
    let (parts, body) = req.into_parts();
    let head = Head::of(&parts, generation.settings.client_keys.as_ref());
    if head.models {
        return match head.host_refusal() {
            Some(failure) => failure.without_span(),
            None => json_response(StatusCode::OK, &route::models(&generation)),
        };
    }
    let mut call = Call::new(shared, Arc::clone(&generation), parts, &head, remote, start);
    match phases(&mut call, &head, &generation, body).await {
        Ok((backend, response)) => {
            respond::observe(call.flight, backend, &call.parts.headers, response)
        }
        Err(failure) => failure.respond(call.flight),
    }
}

/// Admit, parse, route, sample and forward: the backend chosen and its answer's
/// head, or the failure of the first phase that refused.
async fn phases<'g>(
    call: &mut Call,
    head: &Head,
    generation: &'g Generation,
    body: Incoming,
) -> Result<(&'g Backend, Response<Incoming>), Failure> {
    admit::check(head, &call.parts)?;
    let flight = &mut call.flight;
    let (outgoing, model) = match head.protocol {
        // A request no protocol reads streams through untouched.
        None => (
            Outgoing::streamed(body),
            parse::header_model(&call.parts.headers).or_else(|| {
                head.owner
                    .and_then(|p| p.path_model(call.parts.uri.path()))
                    .map(str::to_owned)
            }),
        ),
        Some(protocol) => {
            let bytes = admit::read_body(&call.parts, body, &generation.settings.server).await?;
            let (bytes, model) =
                parse::request(protocol, bytes, &call.parts.headers, &mut flight.exchange)?;
            session::from_headers(&call.parts.headers, &mut flight.exchange);
            (Outgoing::Whole(bytes), model)
        }
    };
    let route = route::choose(
        generation,
        head.owner,
        call.parts.uri.path(),
        model.as_deref(),
        &mut flight.exchange,
    )?;
    flight.backend = Some(route.backend.name.clone());
    flight.sampled = sample::decide(generation, &flight.exchange, &flight.ids);
    if !flight.sampled {
        Shared::count(&flight.shared.stats.unsampled);
    }
    // Sampling has seen the whole request; keep only what the span will read.
    generation.needs.trim(&mut flight.exchange);
    let traceparent = flight.ids.traceparent(flight.sampled);
    let request = forward::request(
        route.backend,
        &call.parts,
        (head.protocol, head.owner),
        outgoing,
        route.send_model.as_deref(),
        &traceparent,
    )?;
    let response = forward::send(&flight.shared.clients, route.backend, request).await?;
    Ok((route.backend, response))
}

impl Call {
    /// The context of a request admitted as far as its head: the exchange the span
    /// reads, and the span's ids (a child of the client's `traceparent`).
    fn new(
        shared: Arc<Shared>,
        generation: Arc<Generation>,
        parts: Parts,
        head: &Head,
        remote: SocketAddr,
        (start, start_time): (Instant, SystemTime),
    ) -> Call {
        let operation = head.operation;
        let mut exchange = Exchange {
            operation,
            source_address: Some(remote.to_string()),
            ..Exchange::default()
        };
        exchange.client = head.admission.client().cloned();
        exchange.request.method = parts.method.as_str().to_owned();
        exchange.request.path = parts.uri.path().to_owned();
        if generation.needs.request_headers {
            exchange.request.headers = headers::visible_headers(&parts.headers);
        }
        let parent = parts
            .headers
            .get("traceparent")
            .and_then(|v| trace_context::parse_traceparent(v.as_bytes()));
        exchange.has_parent = parent.is_some();
        exchange.start_time = Some(start_time);
        let flight = InFlight {
            shared,
            generation,
            exchange,
            protocol: head.protocol,
            owner: head.owner,
            ids: SpanIds::new(parent),
            sampled: true,
            start,
            start_time,
            // A bounded label: client-chosen paths only appear in the access log.
            route: head
                .protocol
                .map_or("passthrough", |p| p.route())
                .to_owned(),
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
        Call { parts, flight }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::state::Generation;

    /// A generation loaded from `yaml`, as `celgate run` loads one.
    pub fn generation(yaml: &str) -> Generation {
        generation_with(yaml, &[])
    }

    /// [`generation`], with `files` (relative path, contents) beside the config.
    pub fn generation_with(yaml: &str, files: &[(&str, &str)]) -> Generation {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            std::fs::write(dir.path().join(path), text).unwrap();
        }
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        crate::load::load_generation(&config, 1).unwrap()
    }
}
