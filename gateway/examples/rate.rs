//! An open-loop load generator: requests at a fixed rate, latency measured from the
//! moment each request was due, so a slow server cannot hide its queue.
//!
//! ```text
//! cargo run --release -p celgate --example rate -- --rate 1000 --duration 8 --body body.json URL
//! ```
//!
//! wrk sends the next request when the previous answer is back (a closed loop): a
//! server that stalls for 50 ms gets fewer requests during the stall, and the stall
//! counts once in the percentiles however many requests it held up ("coordinated
//! omission"). This tool keeps a schedule instead, like wrk2: request `i` is due at
//! `start + i / rate`; `--connections` threads each own one kept-alive HTTP/1.1
//! connection and take the next due request in turn, sleep until it is due (timer
//! slack set to 1 ns, no spinning: the cores are shared with the server under test)
//! and send it. Latency is from the due time to the end of the body, so a request
//! that waited for a free connection counts its wait. `service` is from the actual
//! send to the end (what a closed loop would see), `lag` how late sends were.
//!
//! With `--stream` each non-empty body chunk is timed too: `ttft` is from the due
//! time to the first chunk (for SSE: the first event), `gap` the time between two
//! chunks of one answer. The first `--warmup` seconds run on the same schedule and are
//! not counted. Prints one line (percentiles from an HdrHistogram, 3 significant
//! digits; times in µs):
//!
//! ```text
//! RATE url=... rate=1000 duration_s=8 sent=8000 ok=8000 errors=0 achieved_rps=999.9 p50_us=95 p90_us=120 p99_us=180 p999_us=400 max_us=1200 mean_us=99.1 service_p50_us=90 service_p99_us=170 lag_p99_us=30
//! ```
//!
//! (plus `ttft_p50_us ttft_p99_us gap_mean_us gap_p50_us gap_p99_us chunks` with
//! `--stream`). Exits non-zero only when it cannot run; failed requests and non-2xx
//! answers are counted in `errors` (the first one is printed on stderr).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

#[derive(Debug, Parser)]
#[command(
    name = "rate",
    about = "Fixed-rate (open-loop) HTTP load with latency percentiles"
)]
struct Args {
    /// Requests per second, the schedule all connections share.
    #[arg(long)]
    rate: u64,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 8)]
    duration: u64,
    /// Seconds at the same rate before, not counted.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Connections (one thread each); enough to cover rate x latency.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// The request body (JSON), POSTed to the URL.
    #[arg(long)]
    body: PathBuf,
    /// Time the body's chunks too (time to first token, gaps between chunks).
    #[arg(long)]
    stream: bool,
    /// Give up on one request after this many milliseconds (counted as an error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// The URL (http://HOST:PORT/PATH).
    url: String,
}

/// What one connection measured; merged at the end.
struct Tally {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    lag: Histogram<u64>,
    ttft: Histogram<u64>,
    gap: Histogram<u64>,
    ok: u64,
    errors: u64,
}

impl Tally {
    fn new() -> Tally {
        // 1 ns .. 10 min, 3 significant digits.
        let h = || Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds");
        Tally {
            latency: h(),
            service: h(),
            lag: h(),
            ttft: h(),
            gap: h(),
            ok: 0,
            errors: 0,
        }
    }

    fn merge(&mut self, other: &Tally) {
        for (a, b) in [
            (&mut self.latency, &other.latency),
            (&mut self.service, &other.service),
            (&mut self.lag, &other.lag),
            (&mut self.ttft, &other.ttft),
            (&mut self.gap, &other.gap),
        ] {
            a.add(b).expect("same bounds");
        }
        self.ok += other.ok;
        self.errors += other.errors;
    }
}

/// The schedule and what every connection thread shares.
struct Plan {
    target: Target,
    body: Bytes,
    stream: bool,
    timeout: Duration,
    start: Instant,
    interval_ns: u64,
    /// Requests due before this index are the warm-up.
    warm: u64,
    total: u64,
    next: AtomicU64,
    /// Set once the first error has been printed.
    reported: AtomicBool,
}

/// Where requests go: the address to connect to, the Host header and the path.
struct Target {
    addr: String,
    host: String,
    path: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rate: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<String, String> {
    if args.rate == 0 || args.connections == 0 || args.duration == 0 {
        return Err("--rate, --connections and --duration must be positive".into());
    }
    let interval_ns = 1_000_000_000 / args.rate;
    let total = args
        .warmup
        .checked_add(args.duration)
        .and_then(|s| s.checked_mul(args.rate))
        .filter(|n| n.checked_mul(interval_ns.max(1)).is_some())
        .ok_or("--rate x (--warmup + --duration) is too large")?;
    let body = std::fs::read(&args.body)
        .map_err(|e| format!("cannot read {}: {e}", args.body.display()))?;
    let plan = Arc::new(Plan {
        target: target(&args.url)?,
        body: Bytes::from(body),
        stream: args.stream,
        timeout: Duration::from_millis(args.timeout_ms),
        // The first request is due shortly after every thread has started.
        start: Instant::now() + Duration::from_millis(50),
        interval_ns,
        // At most `total`, which did not overflow.
        warm: args.rate * args.warmup,
        total,
        next: AtomicU64::new(0),
        reported: AtomicBool::new(false),
    });
    let threads: Vec<_> = (0..args.connections)
        .map(|_| {
            let plan = Arc::clone(&plan);
            std::thread::spawn(move || connection_thread(&plan))
        })
        .collect();
    let mut all = Tally::new();
    for t in threads {
        all.merge(&t.join().map_err(|_| "a connection thread panicked")??);
    }
    Ok(report(&args, &plan, &all))
}

/// `http://HOST:PORT/PATH` into its parts (plain HTTP only: the bench is local).
fn target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url} has no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    Ok(Target {
        addr: format!("{}:{port}", authority.host()),
        host: authority.as_str().to_owned(),
        path: uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// One connection: take the next due request, wait for its time, send, record.
fn connection_thread(plan: &Plan) -> Result<Tally, String> {
    set_timer_slack();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let mut tally = Tally::new();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total {
            return Ok(tally);
        }
        let due = plan.start + Duration::from_nanos(i * plan.interval_ns);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        let outcome = rt.block_on(async {
            tokio::time::timeout(plan.timeout, one(plan, &mut sender, due))
                .await
                .unwrap_or_else(|_| Err(format!("no complete answer within {:?}", plan.timeout)))
        });
        let done = Instant::now();
        let counted = i >= plan.warm;
        match outcome {
            Ok(chunks) if counted => {
                tally.ok += 1;
                record(&mut tally.latency, done - due);
                record(&mut tally.service, done - sent);
                record(&mut tally.lag, sent - due);
                if let Some(first) = chunks.first() {
                    record(&mut tally.ttft, *first);
                }
                for pair in chunks.windows(2) {
                    record(&mut tally.gap, pair[1].saturating_sub(pair[0]));
                }
            }
            Ok(_) => {}
            Err(e) => {
                // A failed connection is not reused.
                sender = None;
                if counted {
                    tally.errors += 1;
                }
                if !plan.reported.swap(true, Ordering::Relaxed) {
                    eprintln!("rate: {}{}: {e}", plan.target.host, plan.target.path);
                }
            }
        }
    }
}

/// Sends one request on the connection (opening it when there is none) and reads
/// the whole answer. Returns, with `--stream`, when each non-empty chunk arrived
/// (measured from `due`).
async fn one(
    plan: &Plan,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    due: Instant,
) -> Result<Vec<Duration>, String> {
    let conn = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(&plan.target.addr).await?),
    };
    // The connection task may still be finishing the previous answer.
    conn.ready()
        .await
        .map_err(|e| format!("the connection closed: {e}"))?;
    let request = Request::post(plan.target.path.as_str())
        .header(header::HOST, plan.target.host.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        // A client key: celgate must replace it with the backend's.
        .header(
            header::AUTHORIZATION,
            "Bearer sk-client-key-never-forwarded",
        )
        .body(Full::new(plan.body.clone()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = conn
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body failed: {e}"))?;
        if plan.stream && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            chunks.push(due.elapsed());
        }
    }
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    Ok(chunks)
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr} failed: {e}"))?;
    // Driven whenever this thread's runtime runs a request.
    tokio::spawn(conn);
    Ok(sender)
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// A sleeping thread wakes within the timer slack (50 µs by default): at 5k req/s
/// that is a quarter of the interval. 1 ns asks for the earliest wake-up.
fn set_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

fn report(args: &Args, plan: &Plan, t: &Tally) -> String {
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) / 1000;
    let measured = plan.total - plan.warm;
    let elapsed = Duration::from_nanos(measured * plan.interval_ns).as_secs_f64();
    let mut line = format!(
        "RATE url={} rate={} duration_s={} sent={measured} ok={} errors={} achieved_rps={:.1} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={} mean_us={:.1} \
         service_p50_us={} service_p99_us={} lag_p50_us={} lag_p99_us={}",
        args.url,
        args.rate,
        args.duration,
        t.ok,
        t.errors,
        t.ok as f64 / elapsed,
        us(&t.latency, 0.5),
        us(&t.latency, 0.9),
        us(&t.latency, 0.99),
        us(&t.latency, 0.999),
        t.latency.max() / 1000,
        t.latency.mean() / 1000.0,
        us(&t.service, 0.5),
        us(&t.service, 0.99),
        us(&t.lag, 0.5),
        us(&t.lag, 0.99),
    );
    if args.stream {
        line.push_str(&format!(
            " ttft_p50_us={} ttft_p99_us={} gap_mean_us={:.1} gap_p50_us={} gap_p99_us={} chunks={}",
            us(&t.ttft, 0.5),
            us(&t.ttft, 0.99),
            t.gap.mean() / 1000.0,
            us(&t.gap, 0.5),
            us(&t.gap, 0.99),
            t.gap.len() + t.ttft.len(),
        ));
    }
    line
}
