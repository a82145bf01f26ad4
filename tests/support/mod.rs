//! Helpers shared by the integration tests: a scripted upstream usable from sync code
//! ([`Upstream`]; [`scripted`] for async tests that talk to it directly), the real
//! `celgate` binary as a process ([`Gateway`]), an OTLP receiver ([`otlp::Receiver`]),
//! small async HTTP clients ([`client`]: [`post_json`], [`post_stream`], ...), the
//! request bodies tests send ([`bodies`]) and a local PKI with TLS fronts ([`tls`]).
//!
//! Include it with `#[path = "support/mod.rs"] mod support;`; each test binary uses a
//! subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod answer;
pub mod bodies;
pub mod calls;
pub mod client;
pub mod otlp;
pub mod scripted;
pub mod tls;

#[allow(unused_imports)]
pub use bodies::*;
#[allow(unused_imports)]
pub use client::*;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use celgate_upstream::{RecordedRequest, RecordedResponse, ScriptedUpstream};
use otlp::{Receiver, Span};
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------
// Scripted upstream on its own thread
// ---------------------------------------------------------------------------------------

/// A [`ScriptedUpstream`] running on a background thread with its own runtime, so sync
/// tests (and async ones) can start and drop it anywhere. Stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    inner: Option<ScriptedUpstream>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts a scripted upstream on `127.0.0.1` and a free port.
    pub fn start() -> Upstream {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("scripted-upstream".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the upstream runtime");
                runtime.block_on(async move {
                    let started = ScriptedUpstream::start(([127, 0, 0, 1], 0).into()).await;
                    let failed = started.is_err();
                    let _ = started_tx.send(started);
                    if !failed {
                        // Serve until the handle is dropped.
                        let _ = stopped.await;
                    }
                });
            })
            .expect("spawn the upstream thread");
        let inner = started_rx
            .recv()
            .expect("the upstream thread reports back")
            .expect("start the scripted upstream");
        Upstream {
            inner: Some(inner),
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    fn inner(&self) -> &ScriptedUpstream {
        self.inner
            .as_ref()
            .expect("the upstream runs until dropped")
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.inner().addr()
    }

    /// `http://127.0.0.1:PORT/v1`: a backend's `baseUrl`.
    pub fn base_url(&self) -> String {
        self.inner().base_url()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner().requests()
    }

    /// Every answer whose body is over, in the order they ended.
    pub fn responses(&self) -> Vec<RecordedResponse> {
        self.inner().responses()
    }

    /// Answers still in progress (see [`ScriptedUpstream::active_responses`]).
    pub fn active_responses(&self) -> usize {
        self.inner().active_responses()
    }

    /// The answer to request `seq` (1-based), once its body is over; waits up to
    /// `timeout`.
    pub fn wait_for_response(&self, seq: usize, timeout: Duration) -> Option<RecordedResponse> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.responses().into_iter().find(|r| r.seq == seq);
            found.is_some()
        });
        found
    }

    /// Waits until at least `n` requests arrived or `timeout` passed; returns them all.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n || Instant::now() >= deadline {
                return requests;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Abort the server tasks first, then let the thread's runtime end.
        drop(self.inner.take());
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `done` every 10 ms until it holds or `timeout` passed; returns whether it
/// held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The celgate binary
// ---------------------------------------------------------------------------------------

/// The variable [`Gateway`] sets to [`BACKEND_KEY`] (unless the test overrides it), for
/// configs whose backend reads `apiKey: {env: CELGATE_TEST_BACKEND_KEY}` as
/// [`config_yaml`] writes.
pub const BACKEND_KEY_ENV: &str = "CELGATE_TEST_BACKEND_KEY";

/// The backend API key tests expect the upstream to receive.
pub const BACKEND_KEY: &str = "sk-backend-test-key";

/// How long [`GatewayBuilder::start`] waits for `proxy listening on`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `config.yaml` for the gateway under test: `listen` and `admin` on
/// `127.0.0.1:0`, tracing with `preset` to `otlp_endpoint` over `otlp_protocol`
/// (`grpc` or `http`), every span sampled, and one backend `scripted` serving every
/// model at `upstream_base_url` with the key from [`BACKEND_KEY_ENV`].
pub fn config_yaml(
    preset: &str,
    otlp_endpoint: &str,
    otlp_protocol: &str,
    upstream_base_url: &str,
) -> String {
    format!(
        "config:
  tracing:
    preset: {preset}
    otlpEndpoint: {otlp_endpoint}
    otlpProtocol: {otlp_protocol}
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: scripted
    provider: openai
    baseUrl: {upstream_base_url}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
"
    )
}

/// A config with tracing but no `otlpEndpoint` or `otlpProtocol`.
pub fn config_without_endpoint(upstream: &Upstream) -> String {
    format!(
        "config:
  tracing:
    preset: openllmetry
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: scripted
    provider: openai
    baseUrl: {}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
",
        upstream.base_url()
    )
}

/// The address in a log line saying `{what} listening on ADDR` (`what` is `proxy` or
/// `admin`). The line may carry a timestamp and level, ANSI colours, or be a JSON
/// log record.
pub fn parse_listening(line: &str, what: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    let needle = format!("{what} listening on ");
    let start = line.find(&needle)? + needle.len();
    let addr: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// `text` without ANSI escape sequences (CSI `ESC [ ... final-byte`, and lone `ESC x`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // A CSI sequence: parameters and intermediates, then one final byte in @..~.
        // Any other escape drops just the character after ESC.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// A signal [`Gateway::send_signal`] can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Hup,
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Hup => "HUP",
            Signal::Kill => "KILL",
        }
    }
}

/// The lines a child printed so far, per stream.
#[derive(Debug, Default)]
struct Output {
    lines: Mutex<Lines>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Lines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Pipes that reached end of file.
    closed: usize,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `done` to hold, or for `deadline`; returns whether it holds.
    fn wait_until(&self, deadline: Instant, mut done: impl FnMut(&Lines) -> bool) -> bool {
        let mut lines = self.lock();
        loop {
            if done(&lines) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Wake up regularly too: a child can exit without printing anything.
            let wait = (deadline - now).min(Duration::from_millis(50));
            lines = self
                .changed
                .wait_timeout(lines, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Reads `pipe` line by line into `output` until end of file.
fn capture(pipe: impl Read + Send + 'static, output: Arc<Output>, stderr: bool) -> JoinHandle<()> {
    let echo = std::env::var_os("CELGATE_TEST_ECHO").is_some();
    std::thread::spawn(move || {
        let reader = BufReader::new(pipe);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let line = strip_ansi(line.trim_end_matches('\r'));
            if echo {
                eprintln!(
                    "[celgate {}] {line}",
                    if stderr { "stderr" } else { "stdout" }
                );
            }
            let mut lines = output.lock();
            if stderr {
                lines.stderr.push(line);
            } else {
                lines.stdout.push(line);
            }
            output.changed.notify_all();
        }
        output.lock().closed += 1;
        output.changed.notify_all();
    })
}

/// Why a gateway did not become ready.
#[derive(Debug)]
pub struct StartError {
    /// Its exit status, when it exited (`None`: it was still running at the timeout and
    /// was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "celgate exited before it was ready ({status})")?,
            None => write!(
                f,
                "celgate did not log `proxy listening on` within {READY_TIMEOUT:?}"
            )?,
        }
        write!(
            f,
            "\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.stderr, self.stdout
        )
    }
}

/// How to start a [`Gateway`].
#[derive(Debug)]
pub struct GatewayBuilder {
    config: String,
    env: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>)>,
}

impl GatewayBuilder {
    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes a file next to `config.yaml` before starting (a mounted secret, say);
    /// `name` is relative to the config's directory.
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_owned(), contents.into()));
        self
    }

    /// Starts the gateway and waits until it is ready; panics with its output if it
    /// is not.
    pub fn start(self) -> Gateway {
        self.try_start().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts `celgate run --config DIR/config.yaml` and waits (up to
    /// [`READY_TIMEOUT`]) for `proxy listening on` on its stderr.
    ///
    /// The process gets the test's environment minus every `OTEL_*` and
    /// `OPENINFERENCE_*` variable, `RUST_LOG` and `CELGATE_LOG_FORMAT` (so the
    /// developer's shell cannot change the outcome), plus `NO_COLOR=1`,
    /// `OTEL_BSP_SCHEDULE_DELAY=100` (spans arrive quickly),
    /// [`BACKEND_KEY_ENV`]`=`[`BACKEND_KEY`], and then what [`env`](Self::env) set.
    pub fn try_start(self) -> Result<Gateway, StartError> {
        let dir = tempfile::tempdir().expect("create the config directory");
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, &self.config).expect("write config.yaml");
        for (name, contents) in &self.files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create a file's directory");
            }
            std::fs::write(&path, contents).expect("write a file next to config.yaml");
        }

        let mut command = Command::new(env!("CARGO_BIN_EXE_celgate"));
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("OTEL_")
                || key.starts_with("OPENINFERENCE_")
                || key == "RUST_LOG"
                || key == "CELGATE_LOG_FORMAT"
            {
                command.env_remove(key.as_ref());
            }
        }
        command
            .env("NO_COLOR", "1")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env(BACKEND_KEY_ENV, BACKEND_KEY);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn celgate");

        let output = Arc::new(Output::default());
        let readers = vec![
            capture(
                child.stdout.take().expect("piped stdout"),
                Arc::clone(&output),
                false,
            ),
            capture(
                child.stderr.take().expect("piped stderr"),
                Arc::clone(&output),
                true,
            ),
        ];
        let mut gateway = Gateway {
            child,
            output,
            readers,
            proxy: None,
            dir,
            config_path,
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(addr) = gateway.find_listening("proxy") {
                gateway.proxy = Some(addr);
                return Ok(gateway);
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                gateway.wait_for_pipes(Duration::from_secs(2));
                // A line printed just before exiting still counts.
                if let Some(addr) = gateway.find_listening("proxy") {
                    gateway.proxy = Some(addr);
                    return Ok(gateway);
                }
                return Err(gateway.start_error(Some(status)));
            }
            if Instant::now() >= deadline {
                let _ = gateway.child.kill();
                let _ = gateway.child.wait();
                gateway.wait_for_pipes(Duration::from_secs(2));
                return Err(gateway.start_error(None));
            }
            let lines_seen = gateway.output.lock().stderr.len();
            gateway.output.wait_until(
                (Instant::now() + Duration::from_millis(50)).min(deadline),
                |lines| lines.stderr.len() > lines_seen,
            );
        }
    }
}

/// The real `celgate` binary running `celgate run` on a config in a temporary
/// directory, with its stdout and stderr captured line by line (ANSI colours
/// stripped). Killed when dropped.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    output: Arc<Output>,
    readers: Vec<JoinHandle<()>>,
    proxy: Option<SocketAddr>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl Gateway {
    /// A builder for a gateway running `config` (a whole `config.yaml`, which must set
    /// `listen: 127.0.0.1:0` and `admin: 127.0.0.1:0`).
    pub fn builder(config: &str) -> GatewayBuilder {
        GatewayBuilder {
            config: config.to_owned(),
            env: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Starts a gateway on `config` with extra environment variables `env`, and waits
    /// until it is ready (see [`GatewayBuilder::try_start`]); panics with its output if
    /// it does not get ready.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
        env.iter()
            .fold(Gateway::builder(config), |b, (k, v)| b.env(k, v))
            .start()
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.proxy
            .expect("a started gateway has logged its proxy address")
    }

    /// `http://127.0.0.1:PORT/v1`: what an OpenAI client takes as `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// `http://127.0.0.1:PORT` of the admin endpoints, from the `admin listening on`
    /// line (waited for up to 10 s; panics if it never comes).
    pub fn admin_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut found = None;
        self.output.wait_until(deadline, |lines| {
            found = lines
                .stderr
                .iter()
                .find_map(|l| parse_listening(l, "admin"));
            found.is_some()
        });
        match found {
            Some(addr) => format!("http://{addr}"),
            None => panic!(
                "celgate never logged `admin listening on`\n--- stderr ---\n{}",
                self.stderr()
            ),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its open file descriptors right now (see [`open_fds`]).
    pub fn open_fds(&self) -> Vec<OpenFd> {
        open_fds(self.pid())
    }

    /// The `config.yaml` it runs (rewrite it to test hot reload).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The directory holding `config.yaml` and the builder's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it printed on stdout so far, one line per line.
    pub fn stdout(&self) -> String {
        self.output.lock().stdout.join("\n")
    }

    /// Everything it printed on stderr so far (its logs), one line per line.
    pub fn stderr(&self) -> String {
        self.output.lock().stderr.join("\n")
    }

    /// Waits up to `timeout` for a stderr line containing `needle`; returns it.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Option<String> {
        let mut found = None;
        self.output.wait_until(Instant::now() + timeout, |lines| {
            found = lines.stderr.iter().find(|l| l.contains(needle)).cloned();
            found.is_some()
        });
        found
    }

    /// Waits up to `timeout` for a stdout line (the access log) containing `needle`;
    /// returns it.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Option<String> {
        let mut found = None;
        self.output.wait_until(Instant::now() + timeout, |lines| {
            found = lines.stdout.iter().find(|l| l.contains(needle)).cloned();
            found.is_some()
        });
        found
    }

    /// Sends `signal` with `kill -SIG PID`.
    pub fn send_signal(&self, signal: Signal) {
        let status = Command::new("kill")
            .arg(format!("-{}", signal.name()))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{} failed: {status}", signal.name());
    }

    /// Waits up to `timeout` for the process to exit; returns its status (`None`: still
    /// running). Once it exited, [`stdout`](Self::stdout) and [`stderr`](Self::stderr)
    /// hold everything it printed.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.wait_for_pipes(Duration::from_secs(2));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn find_listening(&self, what: &str) -> Option<SocketAddr> {
        self.output
            .lock()
            .stderr
            .iter()
            .find_map(|l| parse_listening(l, what))
    }

    /// Waits until both pipes reached end of file (the process exited and nothing else
    /// holds them).
    fn wait_for_pipes(&self, timeout: Duration) {
        self.output
            .wait_until(Instant::now() + timeout, |lines| lines.closed == 2);
    }

    fn start_error(&self, status: Option<ExitStatus>) -> StartError {
        StartError {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Open file descriptors of a process (Linux /proc)
// ---------------------------------------------------------------------------------------

/// One open file descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFd {
    pub fd: u32,
    /// What `/proc/PID/fd/N` links to: a path, `socket:[INODE]`, `anon_inode:[eventpoll]`...
    pub target: String,
    /// For a TCP socket: its ends and state, from `/proc/PID/net/tcp{,6}`.
    pub tcp: Option<TcpEnds>,
}

/// The ends of a TCP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEnds {
    pub local_port: u16,
    /// 0 for a listener.
    pub remote_port: u16,
    /// `ESTABLISHED`, `LISTEN`, `CLOSE_WAIT`...
    pub state: &'static str,
}

impl std::fmt::Display for OpenFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.fd, self.target)?;
        if let Some(t) = self.tcp {
            write!(
                f,
                " (tcp :{} -> :{} {})",
                t.local_port, t.remote_port, t.state
            )?;
        }
        Ok(())
    }
}

/// The open file descriptors of process `pid`, TCP sockets described by their ports
/// and state. Descriptors that close while being listed are left out.
pub fn open_fds(pid: u32) -> Vec<OpenFd> {
    let mut sockets = std::collections::HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    .unwrap_or(0)
            };
            sockets.insert(
                (*inode).to_owned(),
                TcpEnds {
                    local_port: port(local),
                    remote_port: port(remote),
                    state: tcp_state(state),
                },
            );
        }
    }
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<OpenFd> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            let tcp = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| sockets.get(inode).copied());
            Some(OpenFd { fd, target, tcp })
        })
        .collect();
    fds.sort_by_key(|f| f.fd);
    fds
}

fn tcp_state(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// The descriptors as lines, for a failure message.
pub fn describe_fds(fds: &[OpenFd]) -> String {
    fds.iter().map(|f| format!("  {f}\n")).collect()
}

// ---------------------------------------------------------------------------------------
// Config updates and metrics
// ---------------------------------------------------------------------------------------

/// What the kubelet does to a mounted ConfigMap on update: write the files into a
/// new timestamped directory, point a `..data_tmp` symlink at it, rename that over
/// `..data`, make sure each file is a symlink through `..data`, and remove the
/// previous directory. `serial` must grow with each call on the same directory.
pub fn kubelet_write(dir: &Path, file: &str, contents: &str, serial: u64) {
    let ts = format!("..2026_11_21_10_00_00.{serial:09}");
    std::fs::create_dir(dir.join(&ts)).expect("create the timestamped directory");
    std::fs::write(dir.join(&ts).join(file), contents).expect("write the new file");
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&ts, &tmp).expect("create ..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("rename ..data_tmp over ..data");
    let link = dir.join(file);
    if std::fs::read_link(&link).is_err() {
        // First update of a plain file: replace it with the symlink atomically.
        let tmp_link = dir.join(format!(".{file}.tmp"));
        std::os::unix::fs::symlink(PathBuf::from("..data").join(file), &tmp_link)
            .expect("create the file's symlink");
        std::fs::rename(&tmp_link, &link).expect("rename the symlink over the file");
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("remove the previous directory");
    }
}

/// The value of `series` (a metric name with its labels exactly as rendered, e.g.
/// `celgate_config_reloads_total{result="ok"}`) in a Prometheus text exposition.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

// ---------------------------------------------------------------------------------------
// Traces, spans and OpenAI bodies
// ---------------------------------------------------------------------------------------

/// How long a span may take to reach the receiver (export runs every 100 ms).
pub const SPAN_TIMEOUT: Duration = Duration::from_secs(10);

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe address").port()
}

/// A W3C parent context the test controls, so each request's span can be found by its
/// trace id even when requests run concurrently.
#[derive(Clone, Debug)]
pub struct Parent {
    pub trace_id: String,
    pub span_id: String,
}

impl Parent {
    pub fn new() -> Parent {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(std::process::id()) << 32);
        Parent {
            trace_id: format!("{seed:016x}{n:016x}"),
            span_id: format!("{:016x}", 0xb000_0000_0000_0000_u64 | n),
        }
    }

    pub fn traceparent(&self, sampled: bool) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if sampled { "01" } else { "00" }
        )
    }
}

/// The span of trace `trace_id`; fails the test when it does not arrive.
pub fn span_of(receiver: &Receiver, trace_id: &str, what: &str, gateway: &Gateway) -> Span {
    receiver
        .wait_for_span(SPAN_TIMEOUT, |s| s.trace_id == trace_id)
        .unwrap_or_else(|| {
            panic!(
                "no span for {what} (trace {trace_id}) within {SPAN_TIMEOUT:?}; got {:?}\n--- stderr ---\n{}",
                receiver
                    .spans()
                    .iter()
                    .map(|s| (&s.name, &s.trace_id))
                    .collect::<Vec<_>>(),
                gateway.stderr()
            )
        })
}

/// An OpenAI-style error answered by celgate itself.
pub fn assert_openai_error(reply: &Reply, status: u16, kind: &str, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{}",
        reply.text()
    );
    let body = reply.json();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no error message: {body}"
    );
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], code, "{body}");
}

/// A span recording a failure: status ERROR with a message, and `error.type`.
pub fn assert_error_span(span: &Span, error_type: &str) {
    assert_eq!(span.status_code, "ERROR", "{span:#?}");
    assert!(!span.status_message.is_empty(), "{span:#?}");
    assert_eq!(span.str_attr("error.type"), Some(error_type), "{span:#?}");
}

/// A successful exchange's span: no error status, no `error.type`.
pub fn assert_ok_span(span: &Span) {
    assert_ne!(span.status_code, "ERROR", "{span:#?}");
    assert_eq!(span.attr("error.type"), None, "{span:#?}");
}
