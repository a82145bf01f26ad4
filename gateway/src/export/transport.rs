//! Sending an encoded `ExportTraceServiceRequest` to a collector, over OTLP/HTTP
//! (protobuf) or OTLP/gRPC, with the hyper client the gateway already uses for
//! backends (rustls with ring, pooled connections).
//!
//! gRPC is plain HTTP/2 here: a `POST` to the `TraceService/Export` method with
//! the message behind gRPC's five-byte frame header, the verdict in the
//! `grpc-status` trailer (or header, for a trailers-only answer). That is all an
//! OTLP exporter needs of gRPC, so there is no generated client and no second
//! copy of the request. A collector's answer body is read up to
//! [`MAX_ANSWER_BYTES`] only: a hostile collector cannot grow memory.

use bytes::Bytes;
use celgate_engine::config::OtlpProtocol;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use std::sync::Arc;

use crate::settings::Secret;
use crate::tls::TlsSettings;

/// The gRPC method an OTLP trace export calls.
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Most bytes of a collector's answer read (an `ExportTraceServiceResponse` is a
/// few bytes; an error page a few kilobytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why an export request failed, in words for the operator's log.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot reach the collector: {0}")]
    Connect(String),
    #[error("the collector answered HTTP {0}")]
    Status(http::StatusCode),
    #[error("the collector answered gRPC status {code}{message}")]
    Grpc { code: String, message: String },
    #[error("the collector's answer could not be read: {0}")]
    Answer(String),
}

/// One collector: where, how, and with which headers.
pub struct Transport {
    client: Client<crate::upstream::HttpsConnector, Full<Bytes>>,
    uri: Uri,
    protocol: OtlpProtocol,
    headers: HeaderMap,
}

impl Transport {
    /// A transport for `endpoint` (for HTTP the full `/v1/traces` URL; for gRPC
    /// the collector's origin). Must be called inside a tokio runtime.
    pub fn new(
        endpoint: &str,
        protocol: OtlpProtocol,
        headers: &[(String, Secret)],
        tls: &TlsSettings,
    ) -> Result<Transport, String> {
        let uri = match protocol {
            OtlpProtocol::Http => endpoint.to_owned(),
            OtlpProtocol::Grpc => format!("{}{GRPC_PATH}", endpoint.trim_end_matches('/')),
        };
        let uri: Uri = uri
            .parse()
            .map_err(|_| "the endpoint is not a valid URL".to_owned())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("the endpoint must start with http:// or https://".into());
        }
        let mut builder = Client::builder(TokioExecutor::new());
        if protocol == OtlpProtocol::Grpc {
            builder.http2_only(true);
        }
        // The collector's TLS (system roots, its CA file, a client identity).
        let connector = match uri.scheme_str() {
            Some("https") => {
                let config = crate::tls::client_config(tls).map_err(|e| e.to_string())?;
                crate::upstream::https_connector_from(Arc::unwrap_or_clone(config))
            }
            _ => crate::upstream::https_connector(),
        };
        Ok(Transport {
            client: builder.build(connector),
            uri,
            protocol,
            headers: header_map(headers, protocol)?,
        })
    }

    /// Bytes the encoder leaves free in front of the message for framing
    /// (gRPC's five-byte header), so the message is never copied.
    pub fn header_room(&self) -> usize {
        match self.protocol {
            OtlpProtocol::Http => 0,
            OtlpProtocol::Grpc => GRPC_HEADER,
        }
    }

    /// Sends one encoded request (behind [`Self::header_room`] free bytes);
    /// `Ok` when the collector accepted it.
    pub async fn send(&self, mut message: Vec<u8>) -> Result<(), SendError> {
        if self.protocol == OtlpProtocol::Grpc {
            grpc_frame(&mut message);
        }
        let body = Bytes::from(message);
        let mut request = Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| SendError::Connect(e.to_string()))?;
        *request.headers_mut() = self.headers.clone();
        let answer = self.client.request(request).await.map_err(|e| {
            SendError::Connect(
                crate::tls::explain(&e, "collector").unwrap_or_else(|| error_chain(&e)),
            )
        })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(SendError::Status(status));
        }
        match self.protocol {
            // The body (an `ExportTraceServiceResponse`) is not needed; dropping
            // it before the end closes an HTTP/1 connection, so read a bounded
            // amount to keep it pooled.
            OtlpProtocol::Http => {
                let _ = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await;
                Ok(())
            }
            OtlpProtocol::Grpc => grpc_verdict(answer).await,
        }
    }
}

/// gRPC's frame header: a compressed flag and the message length.
const GRPC_HEADER: usize = 5;

/// Fills the frame header left free in front of the message: not compressed,
/// then the length (at most [`super::MAX_EXPORT_BYTES`] plus framing, so it fits).
fn grpc_frame(framed: &mut [u8]) {
    let len = u32::try_from(framed.len() - GRPC_HEADER).unwrap_or(u32::MAX);
    framed[0] = 0;
    framed[1..GRPC_HEADER].copy_from_slice(&len.to_be_bytes());
}

/// A gRPC call's outcome: `grpc-status` from the headers (trailers-only answer)
/// or from the trailers after the body.
async fn grpc_verdict(answer: http::Response<hyper::body::Incoming>) -> Result<(), SendError> {
    let (parts, body) = answer.into_parts();
    if let Some(code) = parts.headers.get("grpc-status") {
        return grpc_status(code, &parts.headers);
    }
    let collected = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| SendError::Answer(e.to_string()))?;
    match collected.trailers() {
        Some(t) => match t.get("grpc-status") {
            Some(code) => grpc_status(code, t),
            None => Err(SendError::Answer("no grpc-status in the trailers".into())),
        },
        None => Err(SendError::Answer(
            "the answer ended without trailers".into(),
        )),
    }
}

fn grpc_status(code: &HeaderValue, headers: &HeaderMap) -> Result<(), SendError> {
    let code = code.to_str().unwrap_or("?");
    if code == "0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| percent_encoding::percent_decode_str(m).decode_utf8_lossy())
        .map(|m| format!(": {}", celgate_engine::attributes::cut_str(&m, 300)))
        .unwrap_or_default();
    Err(SendError::Grpc {
        code: grpc_code_name(code),
        message,
    })
}

/// `14 (UNAVAILABLE)` for a known code.
fn grpc_code_name(code: &str) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    match code.parse::<usize>().ok().and_then(|i| NAMES.get(i)) {
        Some(name) => format!("{code} ({name})"),
        None => code.to_owned(),
    }
}

/// The request headers: the protocol's, then the configured ones (which win).
fn header_map(headers: &[(String, Secret)], protocol: OtlpProtocol) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let (content_type, extra) = match protocol {
        OtlpProtocol::Http => ("application/x-protobuf", None),
        OtlpProtocol::Grpc => ("application/grpc", Some(("te", "trailers"))),
    };
    map.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if let Some((k, v)) = extra {
        map.insert(k, HeaderValue::from_static(v));
    }
    map.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("celgate/", env!("CARGO_PKG_VERSION"))),
    );
    map.extend(configured_headers(headers)?);
    Ok(map)
}

/// The collector headers the settings resolved, marked sensitive (hyper and our
/// logs never print them). Also the metrics push's.
pub fn configured_headers(headers: &[(String, Secret)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("`{k}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(v.expose())
            .map_err(|_| format!("the value of header `{k}` is not a valid header value"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// An error and its causes, as one line (hyper's top-level message alone is
/// "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
