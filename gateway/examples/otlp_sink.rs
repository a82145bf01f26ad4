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
//! printed on stdout when the process gets SIGINT or SIGTERM. `exports` and `spans`
//! count accepted exports and their spans, `http_bytes` the OTLP/HTTP body bytes read
//! (refused bodies included), `rejected` the refused OTLP/HTTP requests, `connections`
//! the connections accepted on all three ports.
//!
//! Exports are read and answered by the OTLP server the tests' receiver uses
//! (`tests/support/otlp/server.rs`, included below), so the two follow one set of rules
//! (with `--delay-ms`, an export is read, counted and answered after the delay); this
//! file adds only the counters, the black hole and the stats port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

#[path = "../../tests/support/otlp/server.rs"]
mod server;

use server::{Export, Protocol, Recorder, text};

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
}

impl Recorder for Stats {
    fn accepted(&self, export: &Export<'_>, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.http_bytes
            .fetch_add(export.body_bytes as u64, Ordering::Relaxed);
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
    }

    fn rejected(&self, export: &Export<'_>) {
        self.http_bytes
            .fetch_add(export.body_bytes as u64, Ordering::Relaxed);
        self.rejected.fetch_add(1, Ordering::Relaxed);
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
    let delay = Duration::from_millis(args.delay_ms.unwrap_or(0));
    let mode = match (args.blackhole, args.delay_ms) {
        (true, _) => "blackhole".to_owned(),
        (false, Some(ms)) => format!("delay-{ms}ms"),
        (false, None) => "normal".to_owned(),
    };

    if args.blackhole {
        tokio::spawn(accept_loop(grpc, Arc::clone(&stats), Kind::Blackhole));
        tokio::spawn(accept_loop(http, Arc::clone(&stats), Kind::Blackhole));
    } else {
        let (grpc_kind, http_kind) = (
            Kind::Otlp(Protocol::Grpc, delay),
            Kind::Otlp(Protocol::Http, delay),
        );
        tokio::spawn(accept_loop(grpc, Arc::clone(&stats), grpc_kind));
        tokio::spawn(accept_loop(http, Arc::clone(&stats), http_kind));
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
    Otlp(Protocol, Duration),
    Stats,
    Blackhole,
}

async fn accept_loop(listener: TcpListener, stats: Arc<Stats>, kind: Kind) {
    loop {
        let stream = server::accept(&listener).await;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, Arc::clone(&stats), kind));
    }
}

async fn serve(stream: TcpStream, stats: Arc<Stats>, kind: Kind) {
    // Connection errors are clients hanging up: nothing to report.
    match kind {
        Kind::Blackhole => blackhole(stream, &stats).await,
        Kind::Otlp(protocol, delay) => {
            server::serve_connection(stream, protocol, delay, stats).await;
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
