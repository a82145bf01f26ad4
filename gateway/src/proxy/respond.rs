//! Observe: the backend's answer on its way to the client, read on the side for the
//! span.
//!
//! Before anything reads the answer's head, backend keys in it are masked (the
//! client's own credentials too, when they went upstream). The body is then
//! wrapped twice: [`RedactedBody`] masks keys in an uncompressed body as it
//! streams, and [`ObservedBody`] hands each chunk to the client as it arrives and
//! to the [`Capture`] chosen here (the SSE accumulator for a stream, a bounded copy
//! for JSON, a gzip decoder in front of either, or nothing for pass-through paths
//! and codings celgate does not read). The span is finished by `ObservedBody` when
//! the body ends, fails, stalls or is dropped.

use std::sync::Arc;

use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::ClientBody;
use super::headers::{strip_hop_by_hop, visible_headers};
use crate::capture::Capture;
use crate::client_auth;
use crate::error_type::ErrorType;
use crate::observe::{InFlight, ObservedBody};
use crate::protocol::Protocol;
use crate::redact::{RedactedBody, Redactor, StreamRedactor, Tally};
use crate::settings::Backend;
use crate::state::{Generation, Shared};

/// Largest response body kept for the span (the client still gets all of it).
const MAX_CAPTURE_BYTES: usize = 32 * 1024 * 1024;

/// The client's response for the backend's `response`; `flight` is finished when
/// its body ends. `client` holds the request's headers (for `authPassthrough`).
pub fn observe(
    mut flight: InFlight,
    backend: &Backend,
    client: &HeaderMap,
    response: Response<Incoming>,
) -> Response<ClientBody> {
    let shared = Arc::clone(&flight.shared);
    let generation = Arc::clone(&flight.generation);
    let protocol = flight.protocol;
    let (mut parts, body) = response.into_parts();
    let status = parts.status;
    flight.exchange.response.status = Some(status.as_u16());
    // Before anything reads them: neither the client nor the span sees a key.
    let redactor = &response_redactor(&generation, backend, client);
    let masked = redactor.mask_headers(&mut parts.headers);
    if masked > 0 {
        let metric = &shared.sinks.metrics.secrets_redacted;
        Tally::new(metric, &backend.name, "in a response header").add(masked);
    }
    if generation.needs.response_headers {
        flight.exchange.response.headers = visible_headers(&parts.headers);
    }
    if let Some(error_type) = ErrorType::of_status(status) {
        flight.exchange.error_type = Some(error_type.as_str().to_owned());
    }
    strip_hop_by_hop(&mut parts.headers);

    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if is_sse && protocol.is_some() {
        flight.exchange.streaming = true;
    }
    // celgate asks backends for no encoding; one that compresses anyway is read
    // through a gzip decoder, or (another coding) not read at all.
    let encoding = ContentEncoding::of(&parts.headers);
    let expected = http_body::Body::size_hint(&body).exact();
    let read = Reading {
        protocol,
        encoding,
        is_sse,
        expected,
        keep_body: generation.needs.response_body,
    };
    let capture = match read.capture() {
        gzip @ Capture::Gzip(_) => gzip.redact_decoded(redact(
            &shared,
            redactor,
            backend,
            "in a gzip body (masked for the span; the client got the compressed bytes as sent)",
        )),
        capture => capture,
    };
    // Compressed bytes cannot be masked without re-encoding: they pass as sent.
    let body = RedactedBody::new(
        body,
        (encoding == ContentEncoding::Identity)
            .then(|| redact(&shared, redactor, backend, "in a response body"))
            .flatten(),
    );
    let body = ObservedBody::new(body, backend.idle_timeout, capture, flight);
    Response::from_parts(parts, body.boxed_unsync())
}

/// What decides how an answer is read for the span.
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// `None`: a pass-through path, not read.
    protocol: Option<&'static dyn Protocol>,
    encoding: ContentEncoding,
    is_sse: bool,
    /// The body's exact length, when it declares one.
    expected: Option<u64>,
    /// Whether the span reads the answer's text (`llm.responseBody`).
    keep_body: bool,
}

impl Reading {
    fn capture(self) -> Capture {
        let Some(protocol) = self.protocol else {
            return Capture::Nothing;
        };
        if self.encoding == ContentEncoding::Other {
            return Capture::Nothing;
        }
        let gzip = self.encoding == ContentEncoding::Gzip;
        let read = if self.is_sse {
            Capture::sse(protocol, self.keep_body)
        } else {
            // A compressed length says nothing about the decompressed one.
            Capture::json(protocol, MAX_CAPTURE_BYTES, self.expected.filter(|_| !gzip))
        };
        if gzip {
            Capture::gzip(read, MAX_CAPTURE_BYTES)
        } else {
            read
        }
    }
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
    let own: Vec<&[u8]> = client_auth::KEY_HEADERS
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
        let tally = Tally::new(&shared.sinks.metrics.secrets_redacted, &backend.name, place);
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_capture_follows_the_operation_the_coding_and_the_content_type() {
        let read = |protocol, encoding, is_sse| Reading {
            protocol,
            encoding,
            is_sse,
            expected: Some(10),
            keep_body: true,
        };
        let kind = |c: Capture| match c {
            Capture::Nothing => "nothing",
            Capture::Sse(_) => "sse",
            Capture::Json { .. } => "json",
            Capture::Gzip(_) => "gzip",
        };
        let id = ContentEncoding::Identity;
        let chat: &'static dyn Protocol = &crate::protocol::openai::chat::CHAT;
        let embeddings: &'static dyn Protocol = &crate::protocol::openai::embeddings::EMBEDDINGS;
        assert_eq!(kind(read(None, id, true).capture()), "nothing");
        assert_eq!(kind(read(Some(chat), id, true).capture()), "sse");
        assert_eq!(kind(read(Some(chat), id, false).capture()), "json");
        assert_eq!(
            kind(read(Some(chat), ContentEncoding::Gzip, true).capture()),
            "gzip"
        );
        let other = read(Some(embeddings), ContentEncoding::Other, false);
        assert_eq!(kind(other.capture()), "nothing");
    }
}
