//! Hostile and broken clients: every case of `tests/bad-input/cases.yaml` is sent over a
//! raw TCP socket (so malformed HTTP is possible) to the real `celgate` binary in front
//! of the scripted upstream, and its answer is checked against the case's `expect`.
//! Afterwards the gateway must still be healthy: `/healthz` answers 200, a normal chat
//! call succeeds and is exported as a span, the process is alive, its stderr has no
//! panic, and its open file descriptors are back near where they started.
//!
//! The gateway runs the default `server.maxBodyBytes` and `server.maxJsonDepth`;
//! only `server.requestTimeout` is shortened (1 s), so the cases that stall can
//! show the 408 quickly.
//!
//! `CELGATE_BAD_INPUT_VERBOSE=1` prints every case's status and time as it runs
//! (with `--nocapture`). A failing run prints one line per failed case (`name: what
//! went wrong`) with the case's `why`, so a regression reads on its own. The cases are data; the big ones
//! are generated here from `generate: {kind, n}` (see [`generate`]).

#[path = "support/mod.rs"]
mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use support::otlp::Receiver;
use support::{BACKEND_KEY_ENV, Gateway, Upstream};

/// How long one answer may take before the case fails as a hang. Generous: the
/// slowest case (100k messages) takes ~0.7 s in a debug build, but over 15 s with both
/// cores busy elsewhere.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a span may take to reach the receiver (export runs every 100 ms).
const SPAN_TIMEOUT: Duration = Duration::from_secs(10);

/// Open descriptors the gateway may hold above its starting count at the end (pooled
/// upstream connections come and go).
const FD_SLACK: usize = 8;

const MODEL: &str = "gpt-4o-mini";

// ---------------------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    why: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_bytes: Option<String>,
    #[serde(default)]
    generate: Option<Generate>,
    #[serde(default)]
    framing: Framing,
    #[serde(default)]
    half_close: bool,
    #[serde(default)]
    raw: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    kind: String,
    n: usize,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Framing {
    #[default]
    Length,
    Chunked,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    forwarded: Option<bool>,
    #[serde(default)]
    upstream_model: Option<String>,
    #[serde(default)]
    span_model: Option<String>,
    #[serde(default)]
    parent: Option<ParentExpect>,
    #[serde(default)]
    max_rss_growth_mb: Option<u64>,
    #[serde(default)]
    no_upstream_header: Option<String>,
    #[serde(default)]
    shape: ErrorShape,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ParentExpect {
    Kept,
    Ignored,
}

fn load_cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad-input/cases.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let manifest: Manifest = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a valid case manifest: {e}", path.display()));
    manifest.cases
}

/// `\xNN` is one byte; `\r`, `\n`, `\t`, `\0` and `\\` as usual; anything else as is.
fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let escaped = match bytes[i + 1] {
            b'r' => Some((b'\r', 2)),
            b'n' => Some((b'\n', 2)),
            b't' => Some((b'\t', 2)),
            b'0' => Some((0, 2)),
            b'\\' => Some((b'\\', 2)),
            b'x' => std::str::from_utf8(bytes.get(i + 2..i + 4).unwrap_or_default())
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|b| (b, 4)),
            _ => None,
        };
        match escaped {
            Some((b, len)) => {
                out.push(b);
                i += len;
            }
            None => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Building the bytes of a request
// ---------------------------------------------------------------------------------------

/// A request body: bytes, or `n` bytes of a JSON chat request padded with `x`
/// (written in slices, never held whole).
enum Body {
    Bytes(Vec<u8>),
    Filler(usize),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Filler(n) => *n,
        }
    }
}

const FILLER_PREFIX: &str = r#"{"model":"gpt-4o-mini","messages":[],"pad":""#;
const FILLER_SUFFIX: &str = r#""}"#;

/// What a case sends: the head (request line and headers, without the blank line),
/// the body and its framing, or raw bytes.
struct Wire {
    head: Vec<u8>,
    body: Body,
    framing: Framing,
    raw: bool,
}

fn chat(content: &str) -> String {
    serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": content}]})
        .to_string()
}

/// The body and extra header lines a `generate` block stands for (and a path, for
/// `path_bytes`).
fn generate(g: &Generate) -> (Body, Vec<String>, Option<String>) {
    let n = g.n;
    let plain = || Body::Bytes(chat("hello").into_bytes());
    match g.kind.as_str() {
        "nested" => {
            // The top-level object is one level, so `n` arrays make n + 1.
            let body = format!(
                r#"{{"model":"{MODEL}","messages":[],"metadata":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            );
            (Body::Bytes(body.into_bytes()), vec![], None)
        }
        "messages" => {
            let mut body = format!(r#"{{"model":"{MODEL}","messages":["#);
            for i in 0..n {
                if i > 0 {
                    body.push(',');
                }
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                body.push_str(&format!(r#"{{"role":"{role}","content":"m{i}"}}"#));
            }
            body.push_str("]}");
            (Body::Bytes(body.into_bytes()), vec![], None)
        }
        "filler" => {
            assert!(n > FILLER_PREFIX.len() + FILLER_SUFFIX.len());
            (Body::Filler(n), vec![], None)
        }
        "user" => {
            let body = serde_json::json!({
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "user": "u".repeat(n),
            });
            (Body::Bytes(body.to_string().into_bytes()), vec![], None)
        }
        "digits" => {
            let body = format!(
                r#"{{"model":"{MODEL}","messages":[],"seed":{}}}"#,
                "9".repeat(n)
            );
            (Body::Bytes(body.into_bytes()), vec![], None)
        }
        "brackets_in_string" => (Body::Bytes(chat(&"[".repeat(n)).into_bytes()), vec![], None),
        "header_bytes" => (plain(), vec![format!("X-Huge: {}", "h".repeat(n))], None),
        "header_count" => (
            plain(),
            (0..n).map(|i| format!("X-Many-{i}: v")).collect(),
            None,
        ),
        "session_header" => (
            plain(),
            vec![format!("x-session-id: {}", "s".repeat(n))],
            None,
        ),
        "path_bytes" => (plain(), vec![], Some(format!("/v1/{}", "p".repeat(n)))),
        other => panic!("unknown generator kind `{other}`"),
    }
}

fn wire(case: &Case, traceparent: Option<&str>) -> Wire {
    if let Some(raw) = &case.raw {
        return Wire {
            head: unescape(raw),
            body: Body::Bytes(Vec::new()),
            framing: Framing::None,
            raw: true,
        };
    }
    let (body, mut headers, path) = match (&case.generate, &case.body, &case.body_bytes) {
        (Some(g), None, None) => generate(g),
        (None, Some(b), None) => (Body::Bytes(b.clone().into_bytes()), vec![], None),
        (None, None, Some(b)) => (Body::Bytes(unescape(b)), vec![], None),
        (None, None, None) => (Body::Bytes(Vec::new()), vec![], None),
        _ => panic!(
            "{}: give at most one of body, body_bytes, generate",
            case.name
        ),
    };
    let method = case.method.as_deref().unwrap_or("POST");
    let path = path
        .or_else(|| case.path.clone())
        .unwrap_or_else(|| "/v1/chat/completions".to_owned());
    let version = case.version.as_deref().unwrap_or("HTTP/1.1");
    let mut head = format!("{method} {path} {version}\r\nHost: celgate.test\r\n").into_bytes();
    let content_type = case.content_type.as_deref().unwrap_or("application/json");
    if !content_type.is_empty() {
        head.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    headers.extend(case.headers.iter().cloned());
    if let Some(tp) = traceparent {
        headers.push(format!("traceparent: {tp}"));
    }
    for h in &headers {
        head.extend_from_slice(&unescape(h));
        head.extend_from_slice(b"\r\n");
    }
    match case.framing {
        Framing::Length => {
            head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes())
        }
        Framing::Chunked => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None => {}
    }
    Wire {
        head,
        body,
        framing: case.framing,
        raw: false,
    }
}

/// Writes `wire` to `out`; errors (the gateway closed the connection early, as it may
/// for a refused body) end the writing.
fn write_wire(out: &mut TcpStream, wire: &Wire) -> io::Result<()> {
    out.write_all(&wire.head)?;
    if wire.raw {
        return out.flush();
    }
    out.write_all(b"\r\n")?;
    let chunked = wire.framing == Framing::Chunked;
    let piece = |out: &mut TcpStream, bytes: &[u8]| -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if chunked {
            out.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
            out.write_all(bytes)?;
            out.write_all(b"\r\n")
        } else {
            out.write_all(bytes)
        }
    };
    match &wire.body {
        Body::Bytes(b) => piece(out, b)?,
        Body::Filler(n) => {
            let slab = vec![b'x'; 64 * 1024];
            piece(out, FILLER_PREFIX.as_bytes())?;
            let mut left = n - FILLER_PREFIX.len() - FILLER_SUFFIX.len();
            while left > 0 {
                let take = left.min(slab.len());
                piece(out, &slab[..take])?;
                left -= take;
            }
            piece(out, FILLER_SUFFIX.as_bytes())?;
        }
    }
    if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    out.flush()
}

// ---------------------------------------------------------------------------------------
// Reading the answer
// ---------------------------------------------------------------------------------------

/// The final (non-1xx) response, or what happened instead.
#[derive(Debug, Default)]
struct Answer {
    /// 0 when the connection closed before a status line.
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Why reading stopped early, if it did.
    problem: Option<String>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response from `input`, skipping interim 1xx responses.
fn read_answer(input: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut fill = |buf: &mut Vec<u8>| -> Result<bool, String> {
        if Instant::now() >= deadline {
            return Err(format!("no complete answer within {ANSWER_TIMEOUT:?}"));
        }
        match input.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!("no complete answer within {ANSWER_TIMEOUT:?}"))
            }
            // A reset (the gateway closed with our bytes unread) ends the stream
            // like a close does.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(format!("read failed: {e}")),
        }
    };
    loop {
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            match fill(&mut buf) {
                Ok(true) => {}
                Ok(false) if buf.is_empty() => return Answer::default(),
                Ok(false) => {
                    return Answer {
                        problem: Some(format!(
                            "connection closed inside the response head: {:?}",
                            String::from_utf8_lossy(&buf)
                        )),
                        ..Answer::default()
                    };
                }
                Err(problem) => {
                    return Answer {
                        problem: Some(problem),
                        ..Answer::default()
                    };
                }
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) {
            continue;
        }
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut answer = Answer {
            status,
            headers,
            ..Answer::default()
        };
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length = answer
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        if chunked {
            // Decode until the last chunk.
            loop {
                if let Some(line_end) = find(&buf, b"\r\n") {
                    let size = usize::from_str_radix(
                        String::from_utf8_lossy(&buf[..line_end])
                            .split(';')
                            .next()
                            .unwrap_or_default()
                            .trim(),
                        16,
                    );
                    let Ok(size) = size else {
                        answer.problem = Some("bad chunk size in the answer".into());
                        return answer;
                    };
                    if buf.len() >= line_end + 2 + size + 2 {
                        answer
                            .body
                            .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                        buf.drain(..line_end + 2 + size + 2);
                        if size == 0 {
                            return answer;
                        }
                        continue;
                    }
                }
                match fill(&mut buf) {
                    Ok(true) => {}
                    Ok(false) => {
                        answer.problem = Some("connection closed inside a chunked body".into());
                        return answer;
                    }
                    Err(p) => {
                        answer.problem = Some(p);
                        return answer;
                    }
                }
            }
        }
        match length {
            Some(n) => {
                while buf.len() < n {
                    match fill(&mut buf) {
                        Ok(true) => {}
                        Ok(false) => {
                            answer.problem = Some("connection closed inside the body".into());
                            break;
                        }
                        Err(p) => {
                            answer.problem = Some(p);
                            break;
                        }
                    }
                }
                buf.truncate(n);
            }
            None => loop {
                match fill(&mut buf) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(p) => {
                        answer.problem = Some(p);
                        break;
                    }
                }
            },
        }
        answer.body = buf;
        return answer;
    }
}

/// Sends `wire` on a new connection to `addr` (from a thread of its own, so a large
/// body and the answer can cross) and reads the answer.
fn exchange(addr: SocketAddr, wire: Wire, half_close: bool) -> Answer {
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            return Answer {
                problem: Some(format!("cannot connect: {e}")),
                ..Answer::default()
            };
        }
    };
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut writer_stream = stream.try_clone().expect("clone the client socket");
    let writer = std::thread::spawn(move || {
        let result = write_wire(&mut writer_stream, &wire);
        if half_close && result.is_ok() {
            let _ = writer_stream.shutdown(Shutdown::Write);
        }
        result
    });
    let answer = read_answer(&mut stream);
    // Unblocks a writer the gateway stopped reading from.
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writer.join();
    answer
}

// ---------------------------------------------------------------------------------------
// The gateway process, from /proc
// ---------------------------------------------------------------------------------------

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether the process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Peak resident memory of `pid` during `work`, in KiB: the kernel's high-water mark,
/// reset first (`clear_refs` 5), and RSS sampled every 2 ms as a cross-check.
fn peak_rss_during<T>(pid: u32, work: impl FnOnce() -> T) -> (u64, T) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status_kb(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let out = work();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let hwm = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    (peak.load(Ordering::Relaxed).max(hwm), out)
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

fn config(upstream: &Upstream, receiver: &Receiver) -> String {
    format!(
        "config:
  tracing:
    preset: jaeger
    otlpEndpoint: {endpoint}
    otlpProtocol: http
    randomSampling: true
listen: 127.0.0.1:0
admin: 127.0.0.1:0
server:
  requestTimeout: 1s
backends:
  - name: scripted
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"gpt-*\"]
    passthrough: [/v1/files]
  - name: reasoning
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"o1-*\"]
  - name: rewritten
    provider: openai
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"legacy-*\"]
    rewriteModel: gpt-4o-mini
  - name: claude
    provider: anthropic
    baseUrl: {base}
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"claude-*\"]
  - name: gem
    provider: gemini
    baseUrl: http://{addr}/v1beta
    apiKey: {{env: {BACKEND_KEY_ENV}}}
    models: [\"gemini-*\"]
",
        endpoint = receiver.endpoint(),
        base = upstream.base_url(),
        addr = upstream.addr(),
    )
}

/// A fresh sampled `traceparent` and its trace id.
fn new_traceparent(n: usize) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let trace = format!("{:016x}{:016x}", nanos | 1, n as u64 + 1);
    (format!("00-{trace}-{:016x}-01", 0xa000 + n as u64), trace)
}

fn trace_id_of(traceparent: &str) -> Option<String> {
    traceparent.split('-').nth(1).map(str::to_ascii_lowercase)
}

/// A chat call that must succeed; returns the answer.
fn normal_call(addr: SocketAddr, traceparent: &str, text: &str) -> Answer {
    let body = chat(text);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: celgate.test\r\nContent-Type: application/json\r\ntraceparent: {traceparent}\r\nContent-Length: {}\r\n",
        body.len()
    );
    exchange(
        addr,
        Wire {
            head: head.into_bytes(),
            body: Body::Bytes(body.into_bytes()),
            framing: Framing::None,
            raw: false,
        },
        false,
    )
}

/// Where celgate's own error names its message, type and code: the shape of the
/// protocol the path belongs to (a case's `shape`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ErrorShape {
    /// `{"error": {"message", "type", "code"}}`
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`: no code.
    Anthropic,
    /// `{"error": {"code": 400, "message", "status", "details": [{"reason"}]}}`: the
    /// case's `type` is the `status`, its `code` the reason.
    Gemini,
}

impl ErrorShape {
    /// The error's `message`, `type` or `code` in this shape.
    fn field(self, body: &Value, key: &str) -> Option<String> {
        let error = &body["error"];
        let value = match (self, key) {
            (ErrorShape::Gemini, "type") => &error["status"],
            (ErrorShape::Gemini, "code") => &error["details"][0]["reason"],
            (ErrorShape::Anthropic, _) if body["type"] != "error" => return None,
            _ => &error[key],
        };
        value.as_str().map(str::to_owned)
    }
}

/// Checks one answer against the case; returns what is wrong.
fn check(
    case: &Case,
    answer: &Answer,
    new_upstream: &[celgate_upstream::RecordedRequest],
    rss_growth_kb: Option<u64>,
) -> Vec<String> {
    let e = &case.expect;
    let mut wrong = Vec::new();
    if let Some(problem) = &answer.problem {
        wrong.push(problem.clone());
    }
    if answer.status != e.status {
        wrong.push(format!(
            "status {} (want {}); body {:?}",
            answer.status,
            e.status,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
        ));
    }
    if e.kind.is_some() || e.code.is_some() {
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let field = |k: &str| json.as_ref().and_then(|j| e.shape.field(j, k));
        if answer.header("content-type") != Some("application/json") {
            wrong.push(format!(
                "content-type {:?}, not application/json",
                answer.header("content-type")
            ));
        }
        if field("message").is_none_or(|m| m.is_empty()) {
            wrong.push("no error.message".into());
        }
        if e.kind.is_some() && field("type") != e.kind {
            wrong.push(format!(
                "error.type {:?} (want {:?})",
                field("type"),
                e.kind
            ));
        }
        if e.code.is_some() && field("code") != e.code {
            wrong.push(format!(
                "error.code {:?} (want {:?})",
                field("code"),
                e.code
            ));
        }
    }
    let reached = !new_upstream.is_empty();
    if let Some(forwarded) = e.forwarded
        && forwarded != reached
    {
        wrong.push(format!(
            "reached the upstream {} times (want {})",
            new_upstream.len(),
            if forwarded { "at least once" } else { "never" }
        ));
    }
    if let Some(model) = &e.upstream_model {
        for r in new_upstream {
            let text = String::from_utf8_lossy(&r.body);
            let keys = text.matches("\"model\"").count();
            let got = r
                .json()
                .and_then(|j| j["model"].as_str().map(str::to_owned));
            if keys != 1 || got.as_deref() != Some(model) {
                wrong.push(format!(
                    "upstream body has `model` {keys} times and says {got:?} (want once, {model:?})"
                ));
            }
        }
    }
    if let Some(name) = &e.no_upstream_header {
        for r in new_upstream {
            if r.header(name).is_some() {
                wrong.push(format!("the upstream received header `{name}`"));
            }
        }
    }
    if let Some(parent) = e.parent {
        let sent = case
            .headers
            .iter()
            .find_map(|h| h.strip_prefix("traceparent: "))
            .and_then(trace_id_of);
        for r in new_upstream {
            let forwarded = r.header("traceparent").and_then(trace_id_of);
            let kept = forwarded.is_some() && forwarded == sent;
            if kept != (parent == ParentExpect::Kept) || forwarded.is_none() {
                wrong.push(format!(
                    "upstream traceparent trace id {forwarded:?}, sent {sent:?} (want the parent {parent:?})"
                ));
            }
        }
    }
    if let (Some(max), Some(growth)) = (e.max_rss_growth_mb, rss_growth_kb)
        && growth > max * 1024
    {
        wrong.push(format!(
            "peak RSS grew by {} MiB (at most {max} MiB)",
            growth / 1024
        ));
    }
    wrong
}

#[test]
fn hostile_requests_get_the_expected_answers_and_leave_the_gateway_healthy() {
    let cases = load_cases();
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let gateway = Gateway::start(&config(&upstream, &receiver), &[]);
    let addr = gateway.addr();
    let pid = gateway.pid();
    let started = Instant::now();

    // Warm up (pooled connections to the upstream and the collector), then count.
    let (warm_tp, warm_trace) = new_traceparent(usize::MAX >> 8);
    let warm = normal_call(addr, &warm_tp, "warm up");
    assert_eq!(warm.status, 200, "warm-up call: {warm:?}");
    assert!(
        receiver
            .wait_for_span(SPAN_TIMEOUT, |s| s.trace_id == warm_trace)
            .is_some(),
        "no span for the warm-up call\n{}",
        gateway.stderr()
    );
    let fds_before = open_fds(pid);

    let verbose = std::env::var_os("CELGATE_BAD_INPUT_VERBOSE").is_some();
    let mut failures = Vec::new();
    let mut span_checks = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let traceparent = case
            .expect
            .span_model
            .as_ref()
            .map(|model| (new_traceparent(i), model));
        let wire = wire(case, traceparent.as_ref().map(|((tp, _), _)| tp.as_str()));
        let before = upstream.requests().len();
        let case_start = Instant::now();
        let rss_before = proc_status_kb(pid, "VmRSS").unwrap_or(0);
        let (peak, answer) = peak_rss_during(pid, || exchange(addr, wire, case.half_close));
        let took = case_start.elapsed();
        let new_upstream: Vec<_> = upstream.requests().into_iter().skip(before).collect();
        let growth = case
            .expect
            .max_rss_growth_mb
            .map(|_| peak.saturating_sub(rss_before));
        let wrong = check(case, &answer, &new_upstream, growth);
        if verbose {
            eprintln!(
                "{:<44} {:>3} {:>8.1?} {}{}",
                case.name,
                answer.status,
                took,
                if wrong.is_empty() { "ok" } else { "FAILED" },
                growth.map_or(String::new(), |kb| format!(
                    " (peak RSS +{:.1} MiB)",
                    kb as f64 / 1024.0
                ))
            );
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {} [why: {}; {took:.1?}]",
                case.name,
                wrong.join("; "),
                case.why
            ));
        }
        if let Some(((_, trace), model)) = traceparent {
            span_checks.push((case.name.as_str(), trace, model.as_str()));
        }
        if !alive(pid) {
            failures.push(format!("{}: the gateway died", case.name));
            break;
        }
    }

    for (name, trace, model) in span_checks {
        match receiver.wait_for_span(SPAN_TIMEOUT, |s| s.trace_id == trace) {
            Some(span) => {
                let got = span.str_attr("gen_ai.request.model");
                if got != Some(model) {
                    failures.push(format!(
                        "{name}: span says gen_ai.request.model {got:?} (want {model:?})"
                    ));
                }
            }
            None => failures.push(format!("{name}: no span within {SPAN_TIMEOUT:?}")),
        }
    }

    // Still healthy.
    let admin: SocketAddr = gateway
        .admin_url()
        .trim_start_matches("http://")
        .parse()
        .expect("admin address");
    let health = exchange(
        admin,
        Wire {
            head: b"GET /healthz HTTP/1.1\r\nHost: admin\r\n".to_vec(),
            body: Body::Bytes(Vec::new()),
            framing: Framing::None,
            raw: false,
        },
        false,
    );
    if health.status != 200 {
        failures.push(format!("after the cases: /healthz answered {health:?}"));
    }
    let (tp, trace) = new_traceparent(usize::MAX >> 4);
    let after = normal_call(addr, &tp, "still there?");
    let content = serde_json::from_slice::<Value>(&after.body)
        .ok()
        .and_then(|j| {
            j["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_owned)
        });
    if after.status != 200 || content.as_deref() != Some("Scripted reply to: still there?") {
        failures.push(format!("after the cases: a normal call got {after:?}"));
    }
    match receiver.wait_for_span(SPAN_TIMEOUT, |s| s.trace_id == trace) {
        Some(span) if span.status_code != "ERROR" => {}
        other => failures.push(format!(
            "after the cases: the normal call's span is {other:?}"
        )),
    }
    if !alive(pid) {
        failures.push("after the cases: the gateway is not running".into());
    }
    let stderr = gateway.stderr();
    if stderr.contains("panicked") {
        failures.push(format!("the gateway panicked:\n{stderr}"));
    }
    // Every connection the cases opened is closed: wait for the count to settle.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds_after = open_fds(pid);
    while fds_after > fds_before + FD_SLACK && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        fds_after = open_fds(pid);
    }
    if fds_after > fds_before + FD_SLACK {
        failures.push(format!(
            "open file descriptors {fds_before} before the cases, {fds_after} after (leaked connections?)"
        ));
    }

    eprintln!(
        "bad input: {} cases in {:.1?}; fds {fds_before} -> {fds_after}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} bad-input checks failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A connection that never sends a byte is dropped at shutdown, not waited for until
/// `server.requestTimeout` (60 s here) runs out.
#[test]
fn a_silent_connection_does_not_delay_shutdown() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let config = config(&upstream, &receiver).replace("requestTimeout: 1s", "requestTimeout: 60s");
    let mut gateway = Gateway::start(&config, &[]);
    let silent = TcpStream::connect(gateway.addr()).expect("connect");
    // The gateway has accepted it once a normal call on another connection is served.
    let (tp, _) = new_traceparent(7);
    assert_eq!(normal_call(gateway.addr(), &tp, "hi").status, 200);
    let started = Instant::now();
    gateway.send_signal(support::Signal::Term);
    let status = gateway.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gateway.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with a silent connection open",
        started.elapsed()
    );
    drop(silent);
}
