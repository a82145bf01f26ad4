//! A small, fast OTLP trace sink for load tests: it accepts exports over gRPC and
//! OTLP/HTTP protobuf, counts what arrived, and throws it away.
//!
//! ```text
//! cargo run --release -p celgate --example otlp_sink -- [--delay-ms N | --blackhole]
//! ```
//!
//! It listens on three ports (`--grpc`, `--http`, `--stats`; each `127.0.0.1:0` unless
//! given) and prints one line on stdout once they are all bound:
//!
//! ```text
//! otlp_sink ready grpc=127.0.0.1:41001 http=127.0.0.1:41002 stats=127.0.0.1:41003 mode=normal
//! ```
//!
//! Modes:
//! - normal: every export is decoded (to count its spans) and answered at once;
//! - `--delay-ms N`: the same, but each answer waits N ms (a slow collector);
//! - `--blackhole`: the gRPC and HTTP ports accept connections and read whatever is
//!   sent, and never write a byte back (a collector that hangs).
//!
//! `GET /stats` on the stats port answers `name value` lines (`exports`, `spans`,
//! `http_bytes`, `rejected`, `connections`, `blackholed_bytes`); the same lines are
//! printed on stdout when the process gets SIGINT or SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Largest OTLP/HTTP body read; a larger one gets 413.
const MAX_BODY_BYTES: usize = 64 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "otlp_sink",
    about = "A counting OTLP trace sink for load tests"
)]
struct Args {
    /// OTLP/gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc: SocketAddr,
    /// OTLP/HTTP (protobuf) listen address; exports go to `POST .../v1/traces`.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// Where `GET /stats` answers.
    #[arg(long, default_value = "127.0.0.1:0")]
    stats: SocketAddr,
    /// Answer each export only after this many milliseconds.
    #[arg(long, conflicts_with = "blackhole")]
    delay_ms: Option<u64>,
    /// Accept connections, read everything, never answer.
    #[arg(long)]
    blackhole: bool,
}

#[derive(Debug, Default)]
struct Stats {
    exports: AtomicU64,
    spans: AtomicU64,
    http_bytes: AtomicU64,
    rejected: AtomicU64,
    connections: AtomicU64,
    blackholed_bytes: AtomicU64,
}

impl Stats {
    fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "exports {}\nspans {}\nhttp_bytes {}\nrejected {}\nconnections {}\nblackholed_bytes {}\n",
            get(&self.exports),
            get(&self.spans),
            get(&self.http_bytes),
            get(&self.rejected),
            get(&self.connections),
            get(&self.blackholed_bytes),
        )
    }

    fn record(&self, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otlp_sink: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otlp_sink: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (--{what}): {e}"))
}

async fn run(args: Args) -> Result<(), String> {
    let grpc = bind(args.grpc, "grpc").await?;
    let http = bind(args.http, "http").await?;
    let stats_listener = bind(args.stats, "stats").await?;
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| format!("cannot read a listener's address: {e}"))
    };
    let (grpc_addr, http_addr, stats_addr) =
        (local(&grpc)?, local(&http)?, local(&stats_listener)?);
    let stats = Arc::new(Stats::default());
    let delay = args.delay_ms.map(Duration::from_millis);
    let mode = match (args.blackhole, args.delay_ms) {
        (true, _) => "blackhole".to_owned(),
        (false, Some(ms)) => format!("delay-{ms}ms"),
        (false, None) => "normal".to_owned(),
    };

    if args.blackhole {
        tokio::spawn(accept_loop(grpc, Arc::clone(&stats), Kind::Blackhole));
        tokio::spawn(accept_loop(http, Arc::clone(&stats), Kind::Blackhole));
    } else {
        tokio::spawn(accept_loop(grpc, Arc::clone(&stats), Kind::Grpc(delay)));
        tokio::spawn(accept_loop(http, Arc::clone(&stats), Kind::Http(delay)));
    }
    tokio::spawn(accept_loop(stats_listener, Arc::clone(&stats), Kind::Stats));

    println!("otlp_sink ready grpc={grpc_addr} http={http_addr} stats={stats_addr} mode={mode}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    shutdown_signal().await?;
    print!("{}", stats.render());
    let _ = std::io::stdout().flush();
    Ok(())
}

async fn shutdown_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.map_err(|e| format!("cannot watch SIGINT: {e}"))?,
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Grpc(Option<Duration>),
    Http(Option<Duration>),
    Stats,
    Blackhole,
}

async fn accept_loop(listener: TcpListener, stats: Arc<Stats>, kind: Kind) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                eprintln!("otlp_sink: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, Arc::clone(&stats), kind));
    }
}

async fn serve(stream: TcpStream, stats: Arc<Stats>, kind: Kind) {
    // Connection errors are clients hanging up: nothing to report.
    match kind {
        Kind::Blackhole => blackhole(stream, &stats).await,
        Kind::Grpc(delay) => {
            let service =
                TowerToHyperService::new(TraceServiceServer::new(Collector { stats, delay }));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Kind::Http(delay) => {
            let service =
                service_fn(move |request| http_export(Arc::clone(&stats), delay, request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Kind::Stats => {
            let service = service_fn(move |request: Request<Incoming>| {
                let stats = Arc::clone(&stats);
                async move {
                    let (status, body) =
                        if request.method() == Method::GET && request.uri().path() == "/stats" {
                            (StatusCode::OK, stats.render())
                        } else {
                            (StatusCode::NOT_FOUND, "GET /stats\n".to_owned())
                        };
                    Ok::<_, Infallible>(text(status, body))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }
}

/// Reads and discards until the peer closes; never writes.
async fn blackhole(mut stream: TcpStream, stats: &Stats) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                stats
                    .blackholed_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

struct Collector {
    stats: Arc<Stats>,
    delay: Option<Duration>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.stats.record(request.get_ref());
        drop(request);
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn http_export(
    stats: Arc<Stats>,
    delay: Option<Duration>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reject = |stats: &Stats, status: StatusCode, message: String| {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(text(status, message))
    };
    let (parts, body) = request.into_parts();
    if !parts.uri.path().ends_with("/v1/traces") {
        return reject(&stats, StatusCode::NOT_FOUND, "POST .../v1/traces\n".into());
    }
    if parts.method != Method::POST {
        return reject(&stats, StatusCode::METHOD_NOT_ALLOWED, "POST only\n".into());
    }
    let protobuf = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    if !protobuf || encoded {
        return reject(
            &stats,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "uncompressed application/x-protobuf only\n".into(),
        );
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return reject(
                &stats,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body: {e}\n"),
            );
        }
    };
    stats
        .http_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => stats.record(&request),
        Err(e) => {
            return reject(
                &stats,
                StatusCode::BAD_REQUEST,
                format!("not an ExportTraceServiceRequest: {e}\n"),
            );
        }
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(
        ExportTraceServiceResponse {
            partial_success: None,
        }
        .encode_to_vec(),
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(response)
}
