//! The OTLP server shared by celgate's two stand-in collectors: the tests'
//! [`Receiver`](super::Receiver), which keeps every span and metrics export for
//! assertions, and the load runs' counting sink (`gateway/examples/otlp_sink.rs`, which
//! includes this file by `#[path]`), which keeps only span counters. It serves one
//! accepted connection over gRPC (the `TraceService` and the `MetricsService`, h2c) or
//! OTLP/HTTP protobuf, and hands what arrived to a [`Recorder`]; what to keep is the
//! recorder's business, how an export is read and answered is decided here once, so
//! the two collectors cannot drift apart.
//!
//! Both take the same rules. A [`delay`](serve_connection) holds every request before it
//! is handled: a slow collector reads, records and answers only after it. OTLP/HTTP:
//! `POST` with `Content-Type: application/x-protobuf` to any path ending in
//! `/v1/traces` (or `/v1/metrics`), body at most [`MAX_BODY_BYTES`]; another path gets 404, another method
//! 405, another content type or a `Content-Encoding` 415, a larger body 413, an
//! unreadable or undecodable one 400. gRPC takes tonic's defaults (4 MiB messages, no
//! compression). It depends only on crates the gateway's tests already use, and on no
//! other file: `#[path]` includes it whole.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};

/// The path every gRPC trace export is recorded under.
pub const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The path every gRPC metrics export is recorded under.
pub const GRPC_METRICS_PATH: &str =
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Largest OTLP/HTTP body read; a larger one gets 413.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// The transport a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

/// One export request as the server saw it, accepted or not.
#[derive(Debug)]
pub struct Export<'a> {
    /// The request path (OTLP/HTTP), or [`GRPC_EXPORT_PATH`].
    pub path: &'a str,
    /// The request's headers (gRPC: its metadata).
    pub headers: &'a HeaderMap,
    /// The status answered (gRPC: 200).
    pub status: StatusCode,
    /// OTLP/HTTP body bytes read (0 for gRPC, and when the body was refused unread).
    pub body_bytes: usize,
}

/// What a collector keeps of the exports it serves.
pub trait Recorder: Send + Sync + 'static {
    /// `request` was decoded and is answered 200 once this returns.
    fn accepted(&self, export: &Export<'_>, request: &ExportTraceServiceRequest);
    /// An OTLP/HTTP request was refused with `export.status`.
    fn rejected(&self, export: &Export<'_>);
    /// A metrics `request` was decoded and is answered 200 once this returns; a
    /// collector that keeps only spans ignores it.
    fn accepted_metrics(&self, export: &Export<'_>, request: &ExportMetricsServiceRequest) {
        let _ = (export, request);
    }
}

/// The next connection on `listener`; an accept error (EMFILE and the like) is logged
/// and retried after a pause rather than in a spin.
pub async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(error) => {
                eprintln!("otlp server: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection until the peer closes it. Connection errors are clients
/// hanging up: nothing to report.
pub async fn serve_connection<R: Recorder>(
    stream: TcpStream,
    protocol: Protocol,
    delay: Duration,
    recorder: Arc<R>,
) {
    let io = TokioIo::new(stream);
    match protocol {
        Protocol::Grpc => {
            // One collector behind both services, picked by the request's path.
            let collector = Arc::new(Collector { recorder, delay });
            let traces = TraceServiceServer::from_arc(Arc::clone(&collector));
            let metrics = MetricsServiceServer::from_arc(collector);
            let service = service_fn(move |request: Request<Incoming>| {
                let (mut traces, mut metrics) = (traces.clone(), metrics.clone());
                async move {
                    use tonic::codegen::Service;
                    if request.uri().path() == GRPC_METRICS_PATH {
                        metrics.call(request).await
                    } else {
                        traces.call(request).await
                    }
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        }
        Protocol::Http => {
            let service =
                service_fn(move |request| http_export(Arc::clone(&recorder), delay, request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        }
    }
}

async fn wait(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The gRPC `TraceService` and `MetricsService`.
struct Collector<R> {
    recorder: Arc<R>,
    delay: Duration,
}

#[tonic::async_trait]
impl<R: Recorder> TraceService for Collector<R> {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        wait(self.delay).await;
        let export = Export {
            path: GRPC_EXPORT_PATH,
            headers: request.metadata().as_ref(),
            status: StatusCode::OK,
            body_bytes: 0,
        };
        self.recorder.accepted(&export, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl<R: Recorder> MetricsService for Collector<R> {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        wait(self.delay).await;
        let export = Export {
            path: GRPC_METRICS_PATH,
            headers: request.metadata().as_ref(),
            status: StatusCode::OK,
            body_bytes: 0,
        };
        self.recorder.accepted_metrics(&export, request.get_ref());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// One OTLP/HTTP request.
async fn http_export<R: Recorder>(
    recorder: Arc<R>,
    delay: Duration,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    wait(delay).await;
    let (parts, body) = request.into_parts();
    let mut export = Export {
        path: parts.uri.path(),
        headers: &parts.headers,
        status: StatusCode::OK,
        body_bytes: 0,
    };
    let refuse = |mut export: Export<'_>, status: StatusCode, message: String| {
        export.status = status;
        recorder.rejected(&export);
        Ok(text(status, message))
    };
    if let Err((status, message)) = check_head(&parts.method, &export) {
        return refuse(export, status, message.to_owned());
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            let message = format!("bodies over {} MiB are refused\n", MAX_BODY_BYTES >> 20);
            return refuse(export, StatusCode::PAYLOAD_TOO_LARGE, message);
        }
        Err(error) => {
            let message = format!("cannot read the body: {error}\n");
            return refuse(export, StatusCode::BAD_REQUEST, message);
        }
    };
    export.body_bytes = body.len();
    let encoded = match record(recorder.as_ref(), &export, body) {
        Ok(encoded) => encoded,
        Err(message) => return refuse(export, StatusCode::BAD_REQUEST, message),
    };
    let mut response = Response::new(Full::new(Bytes::from(encoded)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(response)
}

/// Decodes an OTLP/HTTP export of the signal its path names, hands it to `recorder`
/// and returns the encoded answer; the refusal's text if it does not decode.
fn record<R: Recorder>(recorder: &R, export: &Export<'_>, body: Bytes) -> Result<Vec<u8>, String> {
    if export.path.ends_with("/v1/metrics") {
        let request = ExportMetricsServiceRequest::decode(body)
            .map_err(|error| format!("not an ExportMetricsServiceRequest: {error}\n"))?;
        recorder.accepted_metrics(export, &request);
        let answer = ExportMetricsServiceResponse {
            partial_success: None,
        };
        return Ok(answer.encode_to_vec());
    }
    let request = ExportTraceServiceRequest::decode(body)
        .map_err(|error| format!("not an ExportTraceServiceRequest: {error}\n"))?;
    recorder.accepted(export, &request);
    let answer = ExportTraceServiceResponse {
        partial_success: None,
    };
    Ok(answer.encode_to_vec())
}

/// Whether an OTLP/HTTP request's method, path and headers are an export's; the
/// refusal's status and text if not.
fn check_head(method: &Method, export: &Export<'_>) -> Result<(), (StatusCode, &'static str)> {
    let headers = export.headers;
    if !export.path.ends_with("/v1/traces") && !export.path.ends_with("/v1/metrics") {
        return Err((
            StatusCode::NOT_FOUND,
            "not a traces or metrics path: POST .../v1/traces or .../v1/metrics\n",
        ));
    }
    if method != Method::POST {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "POST only\n"));
    }
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if !protobuf {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only application/x-protobuf is accepted\n",
        ));
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity")
    {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "compressed bodies are not supported\n",
        ));
    }
    Ok(())
}

/// A `text/plain` answer.
pub fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
