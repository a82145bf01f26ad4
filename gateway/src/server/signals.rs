//! The signals `celgate run` answers: SIGTERM and SIGINT start the graceful
//! shutdown, SIGHUP asks for a reload at once.
//!
//! Both handlers are installed by the call that returns them, not when a future is
//! first polled: a signal that arrives between "listening" and that first poll
//! would otherwise take its default action and end the process without draining.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

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

/// On each SIGHUP, logs it and asks the reload task for an immediate reload. The
/// handler is installed by the call itself (call it before announcing readiness).
pub fn reload_on_sighup(config: &Path, reload_now: Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let config = config.display().to_string();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading {config}");
                        reload_now.notify_one();
                    }
                });
            }
            Err(e) => tracing::warn!("cannot handle SIGHUP ({e}); it will stop the process"),
        }
    }
    #[cfg(not(unix))]
    let _ = (config, reload_now);
}
