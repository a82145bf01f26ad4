//! Hot reload of the mounted config.
//!
//! Kubernetes updates a mounted ConfigMap by writing a new timestamped directory
//! and renaming a `..data_tmp` symlink over `..data`; `config.yaml` itself is a
//! symlink through `..data` and no event ever names it. So celgate watches the
//! *directory* holding the config (and those holding the secret files it reads:
//! backend keys, client keys), treats any event there as "maybe changed", waits a
//! short debounce, re-reads the file by path and compares a hash of everything it
//! read. A real change is parsed, compiled and resolved off the runtime; only a
//! fully valid generation is swapped in. A timer re-checks as well, in case an
//! event was missed.
//!
//! A reload can also be asked for (SIGHUP): it runs at once, without the debounce,
//! and says so in the log even when nothing changed.
//!
//! A failed reload keeps the previous generation serving, logs the error with
//! its position and counts it; `/config` shows it until the next good load.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};

use crate::load::{LoadError, key_files, load_generation, source_hash};
use crate::metrics::ReloadLabels;
use crate::settings::ExportTarget;
use crate::state::{Generation, ReloadFailure, Shared};

/// Wait after the first event before reading, so a burst of events (the atomic
/// writer makes several) leads to one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the file is re-checked without any event.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Starts watching `config` now (so no change made after this returns is
/// missed) and returns the task that swaps in each valid new version; it runs
/// until aborted. Each notification of `requested` is a reload right away (one
/// asked for while a reload runs is not lost). Call from within the runtime.
pub fn spawn(
    config: PathBuf,
    shared: Arc<Shared>,
    requested: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let waker = Arc::clone(&wake);
    let mut watcher = match notify::recommended_watcher(
        move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                waker.notify_one();
            }
        },
    ) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch for config changes ({e}); re-checking {} every {POLL_INTERVAL:?} instead",
                config.display()
            );
            None
        }
    };
    let mut watched: Vec<PathBuf> = Vec::new();
    update_watches(watcher.as_mut(), &mut watched, &config, &shared);
    tokio::spawn(async move {
        // A change between the initial load and the watch: catch it now.
        reload_once(&config, &shared).await;
        loop {
            let asked = tokio::select! {
                () = wake.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    false
                }
                () = requested.notified() => true,
                () = tokio::time::sleep(POLL_INTERVAL) => false,
            };
            let result = reload_once(&config, &shared).await;
            if asked {
                describe_requested(&config, &result, shared.current().number);
            }
            update_watches(watcher.as_mut(), &mut watched, &config, &shared);
        }
    })
}

/// Watches the config's directory and those of the secret files in service.
fn update_watches(
    watcher: Option<&mut notify::RecommendedWatcher>,
    watched: &mut Vec<PathBuf>,
    config: &Path,
    shared: &Shared,
) {
    let Some(w) = watcher else { return };
    let wanted = watch_dirs(config, &shared.current());
    if wanted == *watched {
        return;
    }
    for d in watched.iter() {
        let _ = w.unwatch(d);
    }
    for d in &wanted {
        if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!("cannot watch {}: {e}", d.display());
        }
    }
    *watched = wanted;
}

/// Directories whose events may mean the config changed: the config's and those
/// of the secret files it read (backend keys, client keys), each its own mount.
fn watch_dirs(config: &Path, current: &Generation) -> Vec<PathBuf> {
    let mut dirs = vec![parent_dir(config)];
    for p in key_files(&current.settings) {
        dirs.push(parent_dir(&p));
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// The bytes (config and secret files) are the same as in service.
    Unchanged,
    /// A new generation is in service.
    Swapped(u64),
    /// The file is absent right now (mid-update); the next event or tick retries.
    Absent,
    /// Invalid; the previous generation keeps serving.
    Failed,
}

/// What the blocking part of a reload found.
enum Step {
    Unchanged,
    /// Empty or only whitespace: an editor or `echo >` caught between truncating
    /// the file and writing it. Not a config to serve (it has no backends), so it
    /// is treated like an absent file: the next event or tick reads it again.
    Blank,
    Loaded(Box<Generation>),
}

/// Whether the file holds nothing but whitespace (unreadable: no, the load says why).
fn is_blank(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace))
}

/// Re-reads `config` and swaps in a new generation if it changed and is valid.
pub async fn reload_once(config: &Path, shared: &Arc<Shared>) -> ReloadResult {
    let current = shared.current();
    let path = config.to_owned();
    let number = current.number + 1;
    let previous_hash = current.source_hash;
    let key_files = key_files(&current.settings);
    // Parsing and compiling are CPU work (and compile spawns a big-stack thread).
    let loaded = tokio::task::spawn_blocking(move || {
        let hash = source_hash(&path, &key_files)?;
        if hash == previous_hash {
            return Ok(Step::Unchanged);
        }
        if is_blank(&path) {
            return Ok(Step::Blank);
        }
        load_generation(&path, number).map(|g| Step::Loaded(Box::new(g)))
    })
    .await;
    let next = match loaded {
        Ok(Ok(Step::Unchanged)) => return ReloadResult::Unchanged,
        Ok(Ok(Step::Blank)) => {
            tracing::debug!(
                "{} is empty (being written?); keeping the current config",
                config.display()
            );
            return ReloadResult::Absent;
        }
        Ok(Ok(Step::Loaded(g))) => *g,
        Ok(Err(LoadError::Read { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::debug!("{} is absent; keeping the current config", config.display());
            return ReloadResult::Absent;
        }
        Ok(Err(e)) => {
            fail(shared, e.to_string());
            return ReloadResult::Failed;
        }
        Err(e) => {
            fail(shared, format!("reload task failed: {e}"));
            return ReloadResult::Failed;
        }
    };

    if next.settings.listen != current.settings.listen
        || next.settings.admin != current.settings.admin
    {
        tracing::warn!(
            "listen/admin addresses changed ({} / {} -> {} / {}): they take effect only after a restart; everything else is applied now",
            current.settings.listen,
            current.settings.admin,
            next.settings.listen,
            next.settings.admin
        );
    }
    if next.settings.export != current.settings.export {
        let shared2 = Arc::clone(shared);
        let export = next.settings.export.clone();
        let rebuilt =
            tokio::task::spawn_blocking(move || shared2.sinks.exporter.reconfigure(&export)).await;
        match rebuilt {
            Ok(Ok(())) => describe_target(&next.settings.export.target),
            Ok(Err(e)) => {
                fail(shared, format!("{}: {e}", config.display()));
                return ReloadResult::Failed;
            }
            Err(e) => {
                fail(shared, format!("exporter rebuild task failed: {e}"));
                return ReloadResult::Failed;
            }
        }
    }
    if let Err(message) = follow_collector(shared, &current, &next).await {
        fail(shared, format!("{}: {message}", config.display()));
        return ReloadResult::Failed;
    }
    let number = next.number;
    tracing::info!(
        "config generation {number} in service ({}, hash {:016x})",
        config.display(),
        next.source_hash
    );
    crate::client_auth::describe(next.settings.client_keys.as_ref());
    shared.swap(next);
    if let Ok(mut last) = shared.last_reload_error.lock() {
        *last = None;
    }
    shared
        .sinks
        .metrics
        .reloads
        .get_or_create(&ReloadLabels { result: "ok" })
        .inc();
    ReloadResult::Swapped(number)
}

/// The outcomes a reload does not log itself, for a reload that was asked for.
fn describe_requested(config: &Path, result: &ReloadResult, generation: u64) {
    match result {
        ReloadResult::Unchanged => tracing::info!(
            "requested reload: {} is unchanged; generation {generation} stays in service",
            config.display()
        ),
        ReloadResult::Absent => tracing::warn!(
            "requested reload: {} is absent; generation {generation} stays in service",
            config.display()
        ),
        ReloadResult::Swapped(_) | ReloadResult::Failed => {}
    }
}

/// Points the metrics push at the collector of `next` when it changed (it can, when
/// the push falls back to the config's trace collector). Off the runtime: the
/// transport is built in the push's own.
async fn follow_collector(
    shared: &Arc<Shared>,
    current: &Generation,
    next: &Generation,
) -> Result<(), String> {
    let (Some(old), Some(new)) = (&current.settings.metrics.otlp, &next.settings.metrics.otlp)
    else {
        return Ok(());
    };
    if old.target == new.target || shared.sinks.metrics_push.is_none() {
        return Ok(());
    }
    let shared2 = Arc::clone(shared);
    let target = new.target.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        let push = shared2.sinks.metrics_push.as_ref()?;
        Some(push.reconfigure(&target).map(|()| push.describe()))
    })
    .await;
    match rebuilt {
        Ok(Some(Ok(to))) => {
            tracing::info!("metrics push now goes to {to}");
            Ok(())
        }
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(None) => Ok(()),
        Err(e) => Err(format!("metrics push rebuild task failed: {e}")),
    }
}

fn describe_target(t: &ExportTarget) {
    match t {
        ExportTarget::Otlp { endpoint, .. } => {
            tracing::info!("span exporter rebuilt for {endpoint}")
        }
        ExportTarget::Stdout => tracing::info!("spans are now printed to stdout"),
        ExportTarget::Disabled => tracing::info!("span export is now off"),
    }
}

fn fail(shared: &Shared, message: String) {
    tracing::error!("config reload failed, the previous config stays in service:\n{message}");
    if let Ok(mut last) = shared.last_reload_error.lock() {
        *last = Some(ReloadFailure {
            at: SystemTime::now(),
            message,
        });
    }
    shared
        .sinks
        .metrics
        .reloads
        .get_or_create(&ReloadLabels { result: "error" })
        .inc();
}
