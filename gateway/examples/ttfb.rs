//! Time to first byte of a streamed response, for several URLs measured in turn so
//! that machine noise hits them alike.
//!
//! ```text
//! cargo run --release -p celgate --example ttfb -- --body body.json --n 200 URL1 URL2
//! ```
//!
//! Sends `--n` rounds of one `POST` per URL (URL1, URL2, URL1, ...), one request at a
//! time, each URL over its own kept-alive HTTP/1.1 connection, after `--warmup` rounds
//! that are not counted. For each request it takes the time from sending until the
//! response headers, and until the first non-empty chunk of the body (for an SSE
//! stream: the first event); the whole body is then read so the connection can be
//! reused. Prints one line per URL:
//!
//! ```text
//! TTFB url=http://... n=200 status_ok=200 headers_p50_us=210 first_byte_p50_us=240 first_byte_p90_us=300 first_byte_min_us=180 total_p50_us=420
//! ```
//!
//! and exits non-zero when a request fails or answers other than 2xx.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, Parser)]
#[command(name = "ttfb", about = "Time to first byte of streamed responses")]
struct Args {
    /// The request body (JSON), sent to every URL.
    #[arg(long)]
    body: PathBuf,
    /// Counted requests per URL.
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Uncounted requests per URL first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Give up on one request after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// The URLs to compare.
    #[arg(required = true)]
    urls: Vec<String>,
}

#[derive(Debug, Default)]
struct Samples {
    headers: Vec<Duration>,
    first_byte: Vec<Duration>,
    total: Vec<Duration>,
    ok: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ttfb: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ttfb: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn run(args: Args) -> Result<(), String> {
    let body = Bytes::from(
        std::fs::read(&args.body)
            .map_err(|e| format!("cannot read {}: {e}", args.body.display()))?,
    );
    // One client (and so one pooled connection) per URL: requests run one at a time.
    let clients: Vec<HttpClient> = args
        .urls
        .iter()
        .map(|_| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector)
        })
        .collect();
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut samples: Vec<Samples> = args.urls.iter().map(|_| Samples::default()).collect();
    for round in 0..args.warmup + args.n {
        for (i, url) in args.urls.iter().enumerate() {
            let measured = tokio::time::timeout(timeout, one(&clients[i], url, body.clone()))
                .await
                .map_err(|_| format!("{url}: no complete answer within {timeout:?}"))??;
            if round >= args.warmup {
                let s = &mut samples[i];
                s.headers.push(measured.0);
                s.first_byte.push(measured.1);
                s.total.push(measured.2);
                s.ok += 1;
            }
        }
    }
    for (url, mut s) in args.urls.iter().zip(samples) {
        let us = |d: Duration| d.as_micros();
        println!(
            "TTFB url={url} n={} status_ok={} headers_p50_us={} first_byte_p50_us={} first_byte_p90_us={} first_byte_min_us={} total_p50_us={}",
            s.first_byte.len(),
            s.ok,
            us(percentile(&mut s.headers, 50.0)),
            us(percentile(&mut s.first_byte, 50.0)),
            us(percentile(&mut s.first_byte, 90.0)),
            us(percentile(&mut s.first_byte, 0.0)),
            us(percentile(&mut s.total, 50.0)),
        );
    }
    Ok(())
}

/// Headers, first body byte and whole-response times of one request.
async fn one(
    client: &HttpClient,
    url: &str,
    body: Bytes,
) -> Result<(Duration, Duration, Duration), String> {
    let request = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| format!("{url}: cannot build the request: {e}"))?;
    let start = Instant::now();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{url}: request failed: {e}"))?;
    let headers = start.elapsed();
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url}: answered {status}"));
    }
    let mut body = response.into_body();
    let mut first_byte = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{url}: body failed: {e}"))?;
        if first_byte.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first_byte = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let first_byte = first_byte.ok_or_else(|| format!("{url}: the answer had an empty body"))?;
    Ok((headers, first_byte, total))
}

/// The `p`th percentile (nearest rank) of `samples`; zero when there are none.
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.saturating_sub(1).min(samples.len() - 1)]
}
