//! `celgate run`: load the config, start the exporter, serve the proxy and admin
//! listeners, and shut down gracefully on SIGTERM/SIGINT.
//!
//! Shutdown order: stop accepting, let in-flight requests (streams included)
//! finish up to `server.shutdownTimeout`, end the ones still running (their spans
//! say `shutdown`) and wait briefly until their spans are queued, then flush queued
//! spans.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use celgate_engine::{LoadOptions, load_document};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::export::Exporter;
use crate::settings::{Settings, process_env};
use crate::state::{Generation, Shared};

/// Why a config file could not become a generation; rendered for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Already rendered as `FILE:LINE:COL: message` lines.
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Settings {
        path: PathBuf,
        source: crate::settings::SettingsError,
    },
}

/// `OPENINFERENCE_HIDE_INPUTS` / `_OUTPUTS`, as the engine's load options.
pub fn load_options() -> LoadOptions {
    crate::cli::load_options_from_env()
}

/// Reads, parses, compiles and resolves the config at `path` into generation
/// `number`.
pub fn load_generation(path: &Path, number: u64) -> Result<Generation, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config_dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let loaded = load_document(&text, &load_options())
        .map_err(|e| LoadError::Config(e.render(&path.display().to_string())))?;
    let settings = Settings::resolve(&loaded.file, &loaded.plan, &process_env, config_dir)
        .map_err(|source| LoadError::Settings {
            path: path.to_owned(),
            source,
        })?;
    let source_hash = combined_hash(text.as_bytes(), &key_files(&settings));
    Ok(Generation {
        number,
        needs: crate::state::Needs::of(&loaded.plan),
        plan: loaded.plan,
        settings,
        source: loaded.file,
        source_hash,
        loaded_at: SystemTime::now(),
    })
}

/// The secret files a generation read.
pub fn key_files(settings: &Settings) -> Vec<PathBuf> {
    settings
        .backends
        .iter()
        .filter_map(|b| b.key_file.clone())
        .collect()
}

/// Hash of the config's bytes and of the secret files it references, so a
/// rotated key is a change too. Unreadable secret files hash as empty (the load
/// that follows reports them properly).
pub fn source_hash(config: &Path, key_files: &[PathBuf]) -> Result<u64, LoadError> {
    let text = std::fs::read(config).map_err(|source| LoadError::Read {
        path: config.to_owned(),
        source,
    })?;
    Ok(combined_hash(&text, key_files))
}

fn combined_hash(config: &[u8], key_files: &[PathBuf]) -> u64 {
    let mut h = hash(config);
    for f in key_files {
        let bytes = std::fs::read(f).unwrap_or_default();
        h = hash(&[h.to_le_bytes().as_slice(), &bytes].concat());
    }
    h
}

/// FNV-1a: a stable hash of the config's bytes, to tell a real change from a
/// touch.
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

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
        let upstream = crate::scripted::ScriptedUpstream::start_unrecorded(listen)
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
    let exporter = {
        let export = first.settings.export.clone();
        tokio::task::spawn_blocking(move || Exporter::start(&export))
            .await
            .context("the exporter start-up task failed")??
    };
    let listen = first.settings.listen.clone();
    let admin = first.settings.admin.clone();
    let drain = first.settings.server.shutdown_timeout;
    describe_export(&first.settings);
    let shared = Shared::new(first, exporter);

    // Watch before announcing readiness, so no later edit can be missed.
    let reload_task = crate::reload::spawn(config, Arc::clone(&shared));
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
    // Ends the wait for a connection's first bytes when shutting down.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = proxy_listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let request_timeout = shared.current().settings.server.request_timeout;
                let shared = Arc::clone(&shared);
                let service = service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, std::convert::Infallible>(crate::proxy::handle(shared, req, remote).await) }
                });
                // Per connection, so a reloaded `server.requestTimeout` applies. With a
                // timer hyper bounds the wait for a request's headers (slow-header
                // clients); without one it waits forever.
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(request_timeout);
                let watcher = graceful.watcher();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let arrived = tokio::select! {
                        arrived = first_bytes_arrive(&stream, request_timeout) => arrived,
                        _ = stop.wait_for(|s| *s) => false,
                    };
                    if !arrived {
                        tracing::debug!("connection from {remote} sent no request within {request_timeout:?}");
                        return;
                    }
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!("connection from {remote} ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
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
    let shared2 = Arc::clone(&shared);
    let _ = tokio::task::spawn_blocking(move || shared2.exporter.shutdown(Duration::from_secs(10)))
        .await;
    let stats = shared.exporter.stats();
    tracing::info!(
        "stopped; spans exported {}, dropped {}",
        stats.exported.load(std::sync::atomic::Ordering::Relaxed),
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(0)
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
        ExportTarget::Otlp {
            endpoint, protocol, ..
        } => tracing::info!("exporting spans to {endpoint} over OTLP/{protocol:?}"),
    }
}

/// Resolves on SIGTERM or SIGINT. Call it inside a runtime and before announcing
/// readiness: the handlers are installed by the call itself.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Registered here, not when the future is first polled: a SIGTERM that arrives
    // between "listening" and that first poll would otherwise take the default
    // action and kill the process without draining.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (Ok(mut term), Err(_)) => {
                    term.recv().await;
                }
                (Err(_), Ok(mut int)) => {
                    int.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
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
