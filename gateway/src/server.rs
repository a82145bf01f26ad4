//! `celgate run`: load the config, start the exporter, serve the proxy and admin
//! listeners, and shut down gracefully on SIGTERM/SIGINT.
//!
//! Shutdown order: stop accepting, let in-flight requests (streams included)
//! finish up to `server.shutdownTimeout`, end the ones still running (their spans
//! say `shutdown`) and wait briefly until their spans are queued, then flush queued
//! spans. SIGHUP reloads the config at once.
//!
//! Each accepted connection is bounded by [`connection`]: at most
//! `server.maxConnections` open, and closed once idle for `server.requestTimeout`.

pub mod connection;
pub mod signals;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

use self::connection::{Activity, Admitted, BusyBody, Connections, Ended, Throttled};

use crate::export::Exporter;
use crate::metrics::push::MetricsPush;
use crate::settings::Settings;
use crate::state::{Generation, Shared};

use self::signals::shutdown_signal;
use crate::load::load_generation;

/// The multi-threaded runtime every long-running command uses.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Span evaluation runs on the workers; the engine needs this much stack.
        .thread_stack_size(celgate_engine::plan::EVAL_STACK_SIZE)
        .thread_name("celgate-worker")
        .build()
        .context("cannot start the async runtime")
}

/// Runs the gateway until SIGTERM/SIGINT. Returns the process exit code.
pub fn run(config: &Path) -> Result<i32> {
    crate::upstream::install_crypto_provider();
    init_logging();
    let first = match load_generation(config, 1) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let runtime = runtime()?;
    let stop = {
        let _context = runtime.enter();
        shutdown_signal()
    };
    runtime.block_on(serve(config.to_owned(), first, stop, None))
}

/// `celgate upstream`: the scripted upstream until SIGTERM/SIGINT.
pub fn run_upstream(listen: std::net::SocketAddr) -> Result<i32> {
    init_logging();
    let runtime = runtime()?;
    runtime.block_on(async {
        let upstream = celgate_upstream::ScriptedUpstream::start_unrecorded(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let stop = shutdown_signal();
        tracing::info!("scripted upstream listening on {}", upstream.addr());
        stop.await;
        drop(upstream);
        Ok(0)
    })
}

/// Serves with an already loaded first generation until `shutdown` completes;
/// `ready` (if given) receives the bound proxy and admin addresses.
pub async fn serve(
    config: PathBuf,
    first: Generation,
    shutdown: impl Future<Output = ()>,
    ready: Option<tokio::sync::oneshot::Sender<(std::net::SocketAddr, std::net::SocketAddr)>>,
) -> Result<i32> {
    let (listen, admin) = (first.settings.listen.clone(), first.settings.admin.clone());
    let drain = first.settings.server.shutdown_timeout;
    let max_connections = first.settings.server.max_connections;
    let shared = start(first).await?;

    // Watch before announcing readiness, so no later edit can be missed; and take
    // SIGHUP over from its default action (exit) before then too.
    let reload_now = Arc::new(tokio::sync::Notify::new());
    signals::reload_on_sighup(&config, Arc::clone(&reload_now));
    crate::fd_budget::warn_if_over_fd_limit(max_connections);
    let reload_task = crate::reload::spawn(config, Arc::clone(&shared), reload_now);
    let proxy_listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (`listen` in config)"))?;
    let admin_listener = TcpListener::bind(&admin)
        .await
        .with_context(|| format!("cannot listen on {admin} (`admin` in config)"))?;
    tracing::info!("proxy listening on {}", proxy_listener.local_addr()?);
    tracing::info!("admin listening on {}", admin_listener.local_addr()?);
    if let Some(ready) = ready {
        let _ = ready.send((proxy_listener.local_addr()?, admin_listener.local_addr()?));
    }
    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, Arc::clone(&shared)));

    let graceful = GracefulShutdown::new();
    // Ends the wait for a connection's first bytes when shutting down, and asks
    // every connection to close.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    accept_until(shutdown, &proxy_listener, &shared, &graceful, stop).await;
    drop(proxy_listener);
    let _ = stopping.send(true);
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down: waiting up to {drain:?} for in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        cut_open_bodies(&shared, drain).await;
    }
    reload_task.abort();
    admin_task.abort();
    close_sinks(shared).await;
    Ok(0)
}

/// The state of a gateway serving `first`: its exporter started (off the runtime:
/// it may resolve and connect), and what it is about to do logged.
async fn start(first: Generation) -> Result<Arc<Shared>> {
    let exporter = {
        let export = first.settings.export.clone();
        tokio::task::spawn_blocking(move || Exporter::start(&export))
            .await
            .context("the exporter start-up task failed")??
    };
    describe_export(&first.settings);
    let push = match first.settings.metrics.otlp.clone() {
        None => None,
        Some(otlp) => {
            let resource = crate::export::resource(&first.settings.export);
            let started = tokio::task::spawn_blocking(move || MetricsPush::start(&otlp, &resource))
                .await
                .context("the metrics push start-up task failed")??;
            Some(started)
        }
    };
    describe_metrics(&first.settings, push.as_ref().map(|(p, _)| p));
    crate::client_auth::describe(first.settings.client_keys.as_ref());
    Ok(Shared::new(first, exporter, push))
}

/// Where metrics go, logged at start.
fn describe_metrics(settings: &Settings, push: Option<&MetricsPush>) {
    let m = &settings.metrics;
    if let (Some(push), Some(otlp)) = (push, &m.otlp) {
        tracing::info!(
            "pushing GenAI metrics to {} every {:?}",
            push.describe(),
            otlp.interval
        );
    }
    if !m.prometheus {
        tracing::info!(
            "/metrics is off: OTEL_METRICS_EXPORTER is `{}`",
            m.exporter_var.as_deref().unwrap_or_default()
        );
    }
}

/// Accepts proxy connections until `shutdown` completes, each within the
/// `server.maxConnections` of the generation in service when it arrives.
async fn accept_until(
    shutdown: impl Future<Output = ()>,
    listener: &TcpListener,
    shared: &Arc<Shared>,
    graceful: &GracefulShutdown,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let connections = Arc::new(Connections::default());
    let mut accept_errors = Throttled::new(LOG_AT_MOST_EVERY);
    let mut over_limit = Throttled::new(LOG_AT_MOST_EVERY);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    if let Some(unlogged) = accept_errors.occurred(std::time::Instant::now()) {
                        tracing::warn!(
                            "accept failed: {e} (logged at most every {:?}; {unlogged} more since the last line)",
                            accept_errors.window()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Per connection, so reloaded limits apply to new connections.
        let limits = shared.current().settings.server;
        let Some(admitted) = connections.admit(limits.max_connections) else {
            if let Some(unlogged) = over_limit.occurred(std::time::Instant::now()) {
                tracing::warn!(
                    "{} client connections open, the most server.maxConnections allows: closing new ones unanswered (logged at most every {:?}; {unlogged} more since the last line)",
                    limits.max_connections,
                    over_limit.window()
                );
            }
            drop(stream);
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            remote,
            Arc::clone(shared),
            limits.request_timeout,
            (graceful.watcher(), admitted),
            stop.clone(),
        ));
    }
}

/// The end: the access log's queued lines written, then the spans flushed; the
/// last metrics push meanwhile.
async fn close_sinks(shared: Arc<Shared>) {
    let pushed = {
        let shared = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || shared.sinks.close_metrics_push())
    };
    let flushed = tokio::task::spawn_blocking(move || {
        if !shared.sinks.close_access_log(ACCESS_LOG_GRACE) {
            tracing::warn!(
                "the access log did not finish writing within {ACCESS_LOG_GRACE:?} (is stdout read?); its last lines are lost"
            );
        }
        shared.sinks.exporter.shutdown(Duration::from_secs(10));
        shared
    })
    .await;
    let _ = pushed.await;
    if let Ok(shared) = flushed {
        let stats = shared.sinks.exporter.stats();
        tracing::info!(
            "stopped; spans exported {}, dropped {}",
            stats.exported.load(std::sync::atomic::Ordering::Relaxed),
            stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

/// Most time the access log gets at shutdown to write the lines it has queued.
const ACCESS_LOG_GRACE: Duration = Duration::from_secs(5);

/// How often a recurring accept problem (EMFILE, a full connection table) is logged.
const LOG_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// Most concurrent streams on one HTTP/2 connection (RFC 9113 recommends at least 100;
/// each may hold an upstream socket).
const H2_MAX_STREAMS: u32 = 100;

/// Largest HTTP/2 header block accepted (decoded); a CONTINUATION flood past it is
/// refused.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// Serves one accepted connection until it ends, is idle for `request_timeout`, or the
/// gateway stops. `held` keeps the drain waiting (the watcher) and the connection's
/// place under `server.maxConnections` until then.
async fn serve_connection(
    stream: TcpStream,
    remote: std::net::SocketAddr,
    shared: Arc<Shared>,
    request_timeout: Duration,
    held: (Watcher, Admitted),
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _held = held;
    let _ = stream.set_nodelay(true);
    let arrived = tokio::select! {
        arrived = first_bytes_arrive(&stream, request_timeout) => arrived,
        _ = stop.wait_for(|s| *s) => false,
    };
    if !arrived {
        tracing::debug!("connection from {remote} sent no request within {request_timeout:?}");
        return;
    }
    let activity = Activity::new();
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |req| {
            // From the request's head to the end of its response body.
            let busy = activity.begin();
            let shared = Arc::clone(&shared);
            async move {
                let response = crate::proxy::handle(shared, req, remote).await;
                Ok::<_, std::convert::Infallible>(response.map(|body| BusyBody::new(body, busy)))
            }
        })
    };
    let builder = connection_builder(request_timeout);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let shutdown = hyper_util::server::graceful::GracefulConnection::graceful_shutdown;
    match connection::drive(conn, shutdown, &activity, request_timeout, stop).await {
        Ended::Finished(Ok(())) => {}
        Ended::Finished(Err(e)) => tracing::debug!("connection from {remote} ended: {e}"),
        Ended::Dropped(why) => tracing::debug!(
            "connection from {remote} dropped: asked to close ({why:?}), it did not within {:?}",
            connection::CLOSE_GRACE
        ),
    }
}

/// hyper's settings for one connection. With a timer hyper bounds the wait for an
/// HTTP/1 request's headers (slow-header clients); without one it waits forever.
/// HTTP/2 gets keep-alive PINGs (a peer that stops answering is closed) and bounded
/// streams and header blocks; its idle bound is [`connection::drive`]'s.
fn connection_builder(request_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(request_timeout)
        .keep_alive_timeout(request_timeout)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST);
    builder
}

/// Most time the bodies cut at the end of the drain get to queue their spans.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// The drain is over: ends the responses still streaming (each records its span as
/// `shutdown`) and waits, at most [`CUT_GRACE`], until their spans are queued, so the
/// exporter's final flush carries them.
async fn cut_open_bodies(shared: &Shared, drain: Duration) {
    let open = shared.cutoff.open();
    tracing::warn!(
        "in-flight requests still running after {drain:?}; ending {open} responses as `shutdown`"
    );
    shared.cutoff.cut();
    let left = shared.cutoff.wait_closed(CUT_GRACE).await;
    if left > 0 {
        tracing::warn!(
            "{left} responses did not end within {CUT_GRACE:?} of the cut (their clients are not reading); their spans are lost"
        );
    }
}

/// Waits (up to `within`) until the client has sent enough for hyper to tell HTTP/1
/// from HTTP/2: bytes that are not a prefix of the HTTP/2 preface, the whole preface,
/// or end of file. hyper-util's detection has no deadline of its own, so a client that
/// sends nothing (or just `P`) would hold its connection forever. Returns false on
/// timeout or error.
async fn first_bytes_arrive(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let decided = async {
        let mut buf = [0u8; PREFACE.len()];
        let mut seen = 0;
        loop {
            // Waits for the first byte; returns at once while bytes are buffered.
            let n = stream.peek(&mut buf).await?;
            if n == 0 || n == PREFACE.len() || buf[..n] != PREFACE[..n] {
                return Ok::<(), std::io::Error>(());
            }
            if n == seen {
                // A partial preface and nothing new: only a stalling (or HTTP/2)
                // client gets here; check again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen = n;
        }
    };
    matches!(tokio::time::timeout(within, decided).await, Ok(Ok(())))
}

fn describe_export(settings: &Settings) {
    use crate::settings::ExportTarget;
    match &settings.export.target {
        ExportTarget::Disabled => tracing::warn!(
            "no otlpEndpoint in config and no OTEL_EXPORTER_OTLP_ENDPOINT: spans are not exported"
        ),
        ExportTarget::Stdout => tracing::info!("spans are printed to stdout"),
        // Masked although a URL with credentials is refused at load: a log line is
        // no place to find out that a check was missed.
        ExportTarget::Otlp {
            endpoint, protocol, ..
        } => tracing::info!(
            "exporting spans to {} over OTLP/{protocol:?}",
            celgate_engine::redact::mask_url(endpoint)
        ),
    }
}

/// Logs go to stderr; `RUST_LOG` filters (default `info`), `CELGATE_LOG_FORMAT=json`
/// switches to JSON lines.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false);
    let _ = if std::env::var("CELGATE_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair: the client's end and the server's.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn first_bytes_decide_or_the_connection_is_given_up() {
        let wait = Duration::from_millis(300);
        for (sent, close, arrive) in [
            (&b""[..], false, false),
            (b"P", false, false),
            (b"PRI * HTTP/2.0\r\n", false, false),
            (b"POST /v1/chat/completions HTTP/1.1\r\n", false, true),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, true),
            // A partial preface then end of file: peek cannot see the end behind
            // the buffered byte, so this one waits for the deadline too.
            (b"P", true, false),
            (b"", true, true),
        ] {
            let (mut client, server) = pair().await;
            client.write_all(sent).await.unwrap();
            if close {
                client.shutdown().await.unwrap();
            }
            let started = std::time::Instant::now();
            assert_eq!(
                first_bytes_arrive(&server, wait).await,
                arrive,
                "{:?} close={close}",
                String::from_utf8_lossy(sent)
            );
            if arrive {
                assert!(started.elapsed() < wait, "decided only at the deadline");
                // Nothing was consumed: hyper still reads the request from the start.
                let mut buf = vec![0u8; sent.len()];
                assert_eq!(server.peek(&mut buf).await.unwrap(), sent.len());
                assert_eq!(buf, sent);
            }
        }
        // A partial preface completed later is decided when the rest arrives.
        let (mut client, server) = pair().await;
        client.write_all(b"PRI * HTTP").await.unwrap();
        let (decided, ()) =
            tokio::join!(first_bytes_arrive(&server, Duration::from_secs(5)), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                client.write_all(b"/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
            });
        assert!(decided);
    }
}
