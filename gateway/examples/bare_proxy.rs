//! The floor of celgate's stack, for the load harness: a reverse proxy built of the
//! same parts (tokio, hyper's HTTP/1 server, hyper-util's pooled client, mimalloc)
//! that does nothing else. It reads the request body whole, sends it to one origin,
//! reads the answer whole and sends it back: no parsing, no routing, no metrics, no
//! span. What celgate costs beyond this is celgate's; what this costs beyond nginx
//! is the stack's (bench/run.sh, row `h`).
//!
//! ```text
//! cargo run --release -p celgate --example bare_proxy -- --origin 127.0.0.1:8080 [--listen 127.0.0.1:0] [--workers 2]
//! ```
//!
//! Prints `bare_proxy ready listen=ADDR` once bound.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// The origin, host:port (plain HTTP/1.1).
    #[arg(long)]
    origin: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (celgate's default on this machine: the core count).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// One current-thread runtime instead (a runtime-shape experiment).
    #[arg(long)]
    current_thread: bool,
}

type Upstream = Client<HttpConnector, Full<Bytes>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("bare_proxy ready listen={}", listener.local_addr()?);
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    let origin: &'static str = Box::leak(args.origin.into_boxed_str());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| forward(client.clone(), origin, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Upstream,
    origin: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match proxy(client, origin, req).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"bad gateway")));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    })
}

async fn proxy(
    client: Upstream,
    origin: &'static str,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(origin)
        .path_and_query(path)
        .build()?;
    parts.headers.remove(http::header::HOST);
    let answer = client
        .request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = answer.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
