//! A scripted OpenAI-compatible upstream: answers like the OpenAI API, deterministically,
//! without a model.
//!
//! The gateway's integration tests point a backend at it and assert on what it received
//! ([`ScriptedUpstream::requests`]); `celgate demo` uses it as a built-in backend so spans
//! can be seen without an LLM or an API key, and `celgate upstream` serves it alone (both
//! with [`ScriptedUpstream::start_unrecorded`], which only counts requests, so memory
//! stays flat under load). It serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on
//! one port.
//!
//! # Endpoints
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/chat/completions` | a `chat.completion`, or with `"stream": true` a `text/event-stream` of `chat.completion.chunk`s ending in `data: [DONE]` |
//! | `POST /v1/completions` | a legacy `text_completion` (streamed the same way) |
//! | `POST /v1/embeddings` | one embedding per input (a string, or an array of strings / token arrays) |
//! | `GET /v1/models` | a `list` of a few models |
//! | a known path with another method | 405, OpenAI-style error body |
//! | anything else | 404, OpenAI-style error body |
//!
//! A body that is not a JSON object, or has no string `model`, gets a 400 with an
//! OpenAI-style error body (`{"error":{"message","type":"invalid_request_error",...}}`).
//! Request bodies over 16 MiB get a 413.
//!
//! # What the answers contain
//!
//! Everything is derived from the request, so tests can predict it:
//!
//! - the response `model` is the request's `model`; `created` is [`CREATED`]; the
//!   response id is `chatcmpl-scripted{N}` (`cmpl-scripted{N}` for legacy completions)
//!   where `N` is the request's 1-based position in order of arrival;
//!   every response carries `x-request-id: req_scripted{N}`;
//! - chat content is `Scripted reply to: {text of the last user message}` (`Hello from
//!   the scripted upstream.` when there is none); legacy completions answer
//!   ` Scripted completion of: {prompt}`;
//! - streamed content is that text split into words (each with its leading space), one
//!   delta per word, so a stream reassembles to exactly the non-streamed content;
//! - `max_tokens` / `max_completion_tokens` smaller than the number of words truncates
//!   the reply to that many words with `finish_reason: "length"`;
//! - usage: `prompt_tokens` = whitespace-separated words in all message texts (the
//!   prompt, the inputs) with a minimum of 1; `completion_tokens` = words of the reply
//!   (for tool calls: the number of argument fragments a stream carries);
//!   `total_tokens` = their sum. A stream carries usage in a final `choices: []` chunk
//!   only when `stream_options.include_usage` is true (and then every other chunk
//!   has `"usage": null`, as OpenAI does);
//! - tool calls: when the request has a non-empty `tools` array, `tool_choice` is not
//!   `"none"` and the last message has role `user`, the reply is two parallel tool calls
//!   (to `tools[0]` and `tools[1]`, or twice `tools[0]` when there is only one),
//!   `content: null`, `finish_reason: "tool_calls"`. Arguments are a JSON object with one
//!   member per property of the tool's parameter schema (strings get the last user
//!   message, enums their first value, integers 1, numbers 1.5, booleans true). Call ids
//!   are `call_` and a hash of the call, so a stream and a non-streamed answer to the
//!   same request agree. Streamed, each call's first delta carries its id and name, and
//!   the arguments follow in fragments of a few characters, alternating between the two
//!   calls. When the last message is a `tool` result the answer is ordinary text;
//! - embeddings have 8 dimensions (or `dimensions` when given, up to 4096), derived
//!   from a hash of the input; `"encoding_format": "base64"` (what the OpenAI SDKs send
//!   by default) returns them as base64 of little-endian `f32`s.
//!
//! # Fault scripts
//!
//! The request's `model` selects a fault (on the three `POST` endpoints):
//!
//! | model | behaviour |
//! |---|---|
//! | `error-500` | 500, `{"error":{"message":..,"type":"server_error","param":null,"code":null}}` |
//! | `error-429` | 429, `{"error":{"message":..,"type":"requests","param":null,"code":"rate_limit_exceeded"}}` |
//! | `slow-<ms>` (e.g. `slow-3000`) | waits that long before the response headers, then answers normally |
//! | `hang` | never answers; the connection stays open until the upstream is dropped |
//! | `cut-after-<n>` (e.g. `cut-after-3`) | a streamed answer (whatever `stream` says) that sends exactly `n` data events, then aborts the connection without `[DONE]` (HTTP/1.1: no terminating chunk; h2: `RST_STREAM`) |
//! | `drip-<ms>` (e.g. `drip-200`) | a streamed answer (whatever `stream` says) that waits that long before each event |
//! | `stall-<ms>` (e.g. `stall-30000`) | a streamed answer (whatever `stream` says) that goes silent for that long after its second event, then finishes normally |
//! | `reset-after-<n>` (e.g. `reset-after-3`) | a streamed answer (whatever `stream` says) that sends `n` data events, then resets the TCP connection (`SO_LINGER` 0 and close: the peer gets an RST, not a FIN) |
//! | `malformed-sse` | a streamed answer (whatever `stream` says) whose content events are all there, wrapped in what a sloppy server sends: `:` comments, a line without a colon, an `event:` without data, unknown fields, `id:`/`retry:`, CRLF line endings on some events, one `data:` that is not JSON, no `[DONE]`; and cut into frames of 1 to 61 bytes (splitting lines, `\r\n` pairs and UTF-8 characters) sent 1 ms apart |
//! | `sse-error` | a streamed answer (whatever `stream` says) that sends its first two events, then an `event: error` with `data: {"error":{...}}`, and ends the body cleanly (no `[DONE]`) |
//! | `invalid-json` | 200 `application/json` whose body is the first half of the normal answer (well framed: `content-length` matches, but it is not JSON) |
//! | `gzip` | the normal answer (plain or streamed, as `stream` says), gzip-compressed with `content-encoding: gzip`; a stream is flushed after every event so each arrives whole |
//! | `big-<MB>` (e.g. `big-10`, 1 to 64) | a chat answer whose content is that many MiB of ASCII text (as `stream` says: one JSON body, or one 1 KiB delta per event) |
//! | `done-pause-<ms>` (e.g. `done-pause-500`) | a streamed answer (whatever `stream` says) that pauses that long after `data: [DONE]` before ending the body, as a real network often delivers the end of the body a few ms after the last event |
//! | `flood-<MB>` (e.g. `flood-200`, 1 to 1024) | a streamed chat answer (whatever `stream` says) of that many MiB of content, one identical 1 KiB delta per event, then `[DONE]`; cheap to send (the events share one buffer) |
//! | `choices-<n>` (e.g. `choices-300000`, 1 to 1000000) | a chat answer (one JSON body, whatever `stream` says) with `n` choices of a short text each |
//! | `echo-key-401` | 401 `invalid_api_key` whose message quotes the key the request carried (`Authorization: Bearer <key>`), as a careless backend does |
//! | `echo-key-header` | the normal answer plus two headers echoing that key: `x-echoed-authorization: Bearer <key>` and one named `x-key-<key>` |
//! | `echo-key-text` | a plain chat answer whose content is `Scripted reply to: my key is <key>` |
//! | `echo-key-stream` | that content streamed (whatever `stream` says), the event holding the key cut into two frames in the middle of the key, 20 ms apart |
//! | `echo-key-sse-error` | a stream (whatever `stream` says) of two events, then an `event: error` whose message quotes the key; ends cleanly |
//! | `echo-key-gzip` | the `echo-key-text` answer, gzip-compressed with `content-encoding: gzip` |
//!
//! The two error answers carry `x-should-retry: false` (a real OpenAI header the
//! official SDKs honour) so a client SDK does not silently retry them. The streaming
//! scripts do not apply to embeddings, which are never streamed; `big-*`, `flood-*`
//! and `choices-*` apply to chat only. Any other model name (including a malformed
//! script such as `slow-abc` or `big-1000`) is answered normally.
//!
//! Every answer is recorded as sent ([`ScriptedUpstream::responses`]: status, headers,
//! the body bytes that left, and how the body ended), and
//! [`ScriptedUpstream::active_responses`] counts the answers not finished yet (a client
//! that holds on to a connection it gave up on shows up there).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

/// The `created` timestamp of every response (2025-06-15T15:06:40Z): fixed so answers
/// are reproducible.
pub const CREATED: u64 = 1_750_000_000;

/// Largest request body read; a larger one gets a 413.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Dimensions of an embedding when the request does not ask for `dimensions`.
const EMBEDDING_DIMENSIONS: usize = 8;

/// Most dimensions an embedding request may ask for (keeps responses small).
const MAX_EMBEDDING_DIMENSIONS: usize = 4096;

/// Characters per streamed tool-call argument fragment.
const ARGUMENT_FRAGMENT_CHARS: usize = 7;

/// Pause between the last event of a `cut-after-*` stream and the abort, so the events
/// are flushed to the socket before the connection is torn down (hyper drops buffered
/// output when a body fails).
const CUT_PAUSE: Duration = Duration::from_millis(50);

/// Pause between the frames of a `malformed-sse` answer, so they reach the client as
/// separate reads.
const MALFORMED_FRAME_PAUSE: Duration = Duration::from_millis(1);

/// Largest `big-<MB>` answer.
const MAX_BIG_MB: usize = 64;

/// Bytes of content per event of a streamed `big-<MB>` answer.
const BIG_PIECE_BYTES: usize = 1024;

/// Largest `flood-<MB>` answer.
const MAX_FLOOD_MB: usize = 1024;

/// Most choices a `choices-<n>` answer has.
const MAX_CHOICES: usize = 1_000_000;

/// Models listed by `GET /v1/models`.
const LISTED_MODELS: [&str; 5] = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "scripted",
];

/// One request as the upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query as received, e.g. `/v1/chat/completions`.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header in the order received; names are lowercase, values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    /// The whole request body (empty when it could not be read).
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// How an answer's body ended, as the upstream saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseEnd {
    /// Every byte was handed to the connection and the body ended normally.
    Complete,
    /// The script failed the body on purpose (`cut-after-*`).
    Cut,
    /// The script reset the TCP connection (`reset-after-*`).
    Reset,
    /// The body was dropped before its end: the client closed the connection.
    Dropped,
}

/// One answer as the upstream sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedResponse {
    /// The 1-based position of its request in [`ScriptedUpstream::requests`].
    pub seq: usize,
    pub status: u16,
    /// Every header, names lowercase, values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body bytes handed to the connection, in order (compressed ones as
    /// compressed).
    pub body: Bytes,
    pub end: ResponseEnd,
}

impl RecordedResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// State shared by the accept loop, every connection and the handle.
#[derive(Debug)]
struct Shared {
    /// `None` when requests are only counted ([`ScriptedUpstream::start_unrecorded`]).
    requests: Option<Mutex<Vec<RecordedRequest>>>,
    /// Requests seen so far (recorded or not).
    seen: AtomicUsize,
    /// Answers as sent; `None` (nothing kept) when requests are only counted.
    responses: Option<Mutex<Vec<RecordedResponse>>>,
    /// Requests whose answer is not finished (being prepared, or its body not done).
    active: AtomicUsize,
    /// Flipped to `true` when the upstream is dropped; `hang` requests wait for it.
    shutdown: watch::Sender<bool>,
}

/// Counts one answer in [`Shared::active`] for as long as it lives.
#[derive(Debug)]
struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    fn new(shared: &Arc<Shared>) -> ActiveGuard {
        shared.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(Arc::clone(shared))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Records the request `make` describes (only built when requests are kept) and
    /// returns its 1-based position among all requests.
    fn record(&self, make: impl FnOnce() -> RecordedRequest) -> usize {
        let Some(requests) = &self.requests else {
            return self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        };
        // A panic while holding the lock cannot leave the Vec half-written, so a
        // poisoned lock is still usable.
        let mut requests = requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.push(make());
        self.seen.store(requests.len(), Ordering::Relaxed);
        requests.len()
    }
}

/// A running scripted upstream. Serves on the tokio runtime that started it until this
/// handle is dropped; dropping it closes the listener and every open connection.
#[derive(Debug)]
pub struct ScriptedUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ScriptedUpstream {
    /// Binds `addr` (use `127.0.0.1:0` for a free port) and starts serving on the
    /// current tokio runtime, keeping every request for [`requests`](Self::requests).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr) -> std::io::Result<ScriptedUpstream> {
        ScriptedUpstream::bind(addr, true).await
    }

    /// Like [`start`](Self::start), but requests are only counted, not kept, so
    /// memory stays flat however long it serves (`celgate upstream`, `celgate demo`,
    /// load tests); [`requests`](Self::requests) is always empty.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start_unrecorded(addr: SocketAddr) -> std::io::Result<ScriptedUpstream> {
        ScriptedUpstream::bind(addr, false).await
    }

    async fn bind(addr: SocketAddr, record: bool) -> std::io::Result<ScriptedUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            requests: record.then(|| Mutex::new(Vec::new())),
            seen: AtomicUsize::new(0),
            responses: record.then(|| Mutex::new(Vec::new())),
            active: AtomicUsize::new(0),
            shutdown,
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(ScriptedUpstream { addr, shared, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What to give an OpenAI client (or a backend's `baseUrl`): `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far, in order of arrival (of their complete bodies);
    /// empty when started with [`start_unrecorded`](Self::start_unrecorded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.as_ref().map_or_else(Vec::new, |r| {
            r.lock().unwrap_or_else(PoisonError::into_inner).clone()
        })
    }

    /// How many requests arrived so far (recorded or not).
    pub fn request_count(&self) -> usize {
        self.shared.seen.load(Ordering::Relaxed)
    }

    /// Every answer whose body is over (ended, failed, reset or dropped), in the order
    /// they ended.
    pub fn responses(&self) -> Vec<RecordedResponse> {
        self.shared.responses.as_ref().map_or_else(Vec::new, |r| {
            r.lock().unwrap_or_else(PoisonError::into_inner).clone()
        })
    }

    /// Answers still in progress: requests being answered plus bodies not over yet.
    pub fn active_responses(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        // Dropping the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// Accepts connections until aborted; each connection runs in the loop's [`JoinSet`] so
/// aborting the loop closes them all.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _peer)) => {
                connections.spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            Err(error) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(%error, "scripted upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection, HTTP/1.1 or h2c, until the client closes it (or a
/// `reset-after-*` body asks for a reset).
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "scripted upstream: set_nodelay failed");
    }
    let resetter = Resetter::of(&stream);
    let reset = Arc::new(Notify::new());
    let can_reset = resetter.is_some();
    let body_reset = Arc::clone(&reset);
    let service = service_fn(move |request| {
        let reset = can_reset.then(|| Arc::clone(&body_reset));
        handle(Arc::clone(&shared), reset, request)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = Box::pin(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                // Expected for `cut-after-*` (the body fails on purpose) and for
                // clients that hang up early.
                tracing::debug!(%error, "scripted upstream: connection ended with an error");
            }
        }
        () = reset.notified() => {
            if let Some(resetter) = resetter {
                // `connection` was dropped when the other branch lost, closing hyper's
                // descriptor; closing the last one with a zero linger sends the RST.
                resetter.reset();
            }
        }
    }
}

/// A second descriptor of a connection's socket, to reset it after hyper's copy is
/// closed.
struct Resetter {
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

impl Resetter {
    #[cfg(unix)]
    fn of(stream: &TcpStream) -> Option<Resetter> {
        use std::os::fd::AsFd;
        match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(Resetter { fd }),
            Err(error) => {
                tracing::debug!(%error, "scripted upstream: cannot duplicate a socket; reset-after-* will cut instead");
                None
            }
        }
    }

    #[cfg(not(unix))]
    fn of(_stream: &TcpStream) -> Option<Resetter> {
        None
    }

    /// Sets `SO_LINGER` to zero and closes: the kernel answers with an RST.
    #[cfg(unix)]
    fn reset(self) {
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(self.fd));
        if let Err(error) = socket.set_zero_linger() {
            tracing::debug!(%error, "scripted upstream: cannot set SO_LINGER 0");
        }
    }

    #[cfg(not(unix))]
    fn reset(self) {}
}

/// Answers a request and attaches the bookkeeping to the body: the answer counts as
/// active until its body is dropped, and is recorded then.
async fn handle(
    shared: Arc<Shared>,
    reset: Option<Arc<Notify>>,
    request: Request<Incoming>,
) -> Result<Response<ScriptedBody>, Infallible> {
    let active = ActiveGuard::new(&shared);
    let (seq, mut response) = answer(&shared, request).await;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.body_mut();
    if body.end == End::Reset && reset.is_none() {
        // No way to reset here: a cut is the closest.
        body.end = End::Fail;
    }
    body.reset = reset;
    body.log = Some(ResponseLog {
        shared: Arc::clone(&shared),
        seq,
        status,
        headers,
        frames: Vec::new(),
        end: ResponseEnd::Dropped,
        _active: active,
    });
    Ok(response)
}

/// Records the request, then answers it; returns its position too.
async fn answer(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> (usize, Response<ScriptedBody>) {
    let (parts, body) = request.into_parts();
    let (body, body_error) = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => (collected.to_bytes(), None),
        Err(error) => (Bytes::new(), Some(error)),
    };
    let seq = shared.record(|| RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    });
    if let Some(error) = body_error {
        return (
            seq,
            if error.downcast_ref::<LengthLimitError>().is_some() {
                invalid_request(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    seq,
                    "Request body too large for the scripted upstream (16 MiB max).",
                )
            } else {
                invalid_request(
                    StatusCode::BAD_REQUEST,
                    seq,
                    &format!("Could not read the request body: {error}"),
                )
            },
        );
    }

    let endpoint = match (parts.uri.path(), &parts.method) {
        ("/v1/chat/completions", &Method::POST) => Endpoint::Chat,
        ("/v1/completions", &Method::POST) => Endpoint::Completions,
        ("/v1/embeddings", &Method::POST) => Endpoint::Embeddings,
        ("/v1/models", &Method::GET) => {
            return (seq, json_response(StatusCode::OK, seq, &models()));
        }
        ("/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/models", _) => {
            return (
                seq,
                error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    seq,
                    &format!(
                        "Method {} is not allowed on {}.",
                        parts.method,
                        parts.uri.path()
                    ),
                    "invalid_request_error",
                    Some("method_not_allowed"),
                ),
            );
        }
        (path, method) => {
            return (
                seq,
                error_response(
                    StatusCode::NOT_FOUND,
                    seq,
                    &format!("Invalid URL ({method} {path})"),
                    "invalid_request_error",
                    Some("unknown_url"),
                ),
            );
        }
    };

    let request: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return (
                seq,
                invalid_request(
                    StatusCode::BAD_REQUEST,
                    seq,
                    "The request body must be a JSON object.",
                ),
            );
        }
        Err(error) => {
            return (
                seq,
                invalid_request(
                    StatusCode::BAD_REQUEST,
                    seq,
                    &format!(
                        "We could not parse the JSON body of your request. ({error}) \
                     The OpenAI API expects a JSON payload."
                    ),
                ),
            );
        }
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return (
            seq,
            invalid_request(
                StatusCode::BAD_REQUEST,
                seq,
                "You must provide a model parameter.",
            ),
        );
    };

    let mut pace = Pace::default();
    let streams = endpoint != Endpoint::Embeddings;
    match Script::for_model(model) {
        Script::Normal => {}
        Script::Error(status) => return (seq, scripted_error(status, seq)),
        Script::Slow(delay) => tokio::time::sleep(delay).await,
        Script::Hang => {
            let mut shutdown = shared.shutdown.subscribe();
            // Err means the sender is gone, i.e. the upstream is shutting down too.
            let _closed = shutdown.wait_for(|down| *down).await;
            return (
                seq,
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    seq,
                    "The scripted upstream is shutting down.",
                    "server_error",
                    None,
                ),
            );
        }
        Script::CutAfter(events) => {
            pace.force_stream = true;
            pace.cut_after = Some(events);
            pace.end = End::Fail;
        }
        Script::Drip(delay) => {
            pace.force_stream = true;
            pace.delay = delay;
        }
        Script::Stall(pause) => {
            pace.force_stream = true;
            pace.stall = Some((STALL_AFTER_EVENTS, pause));
        }
        Script::ResetAfter(events) => {
            pace.force_stream = true;
            pace.cut_after = Some(events);
            pace.end = End::Reset;
        }
        Script::MalformedSse if streams => {
            pace.force_stream = true;
            pace.delay = MALFORMED_FRAME_PAUSE;
            pace.shape = Shape::MalformedSse;
        }
        Script::SseError if streams => {
            pace.force_stream = true;
            pace.shape = Shape::ErrorAfter(2);
        }
        Script::MalformedSse | Script::SseError => {}
        Script::InvalidJson => {
            pace.force_plain = true;
            pace.shape = Shape::HalfBody;
        }
        Script::Gzip => pace.shape = Shape::Gzip,
        Script::Big(mib) => pace.big = Some(mib),
        Script::DonePause(pause) if streams => {
            pace.force_stream = true;
            pace.linger = Some(pause);
        }
        Script::DonePause(_) => {}
        Script::Flood(mib) if endpoint == Endpoint::Chat => {
            return (seq, flood(&Ids { seq, model }, mib));
        }
        Script::Choices(n) if endpoint == Endpoint::Chat => {
            return (seq, many_choices(&Ids { seq, model }, n));
        }
        Script::Flood(_) | Script::Choices(_) => {}
        Script::EchoKey(echo) if endpoint == Endpoint::Chat => {
            let key = received_key(&parts.headers);
            return (seq, echo_key(echo, &key, &request, &Ids { seq, model }));
        }
        Script::EchoKey(_) => {}
    }

    let ids = Ids { seq, model };
    let response = match endpoint {
        Endpoint::Chat => chat(&request, &ids, &pace),
        Endpoint::Completions => completions(&request, &ids, &pace),
        Endpoint::Embeddings => embeddings(&request, &ids),
    };
    (seq, pace.shape.apply(response))
}

/// The endpoints with a JSON request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

/// A fault script, selected by the request's model (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Script {
    Normal,
    Error(StatusCode),
    Slow(Duration),
    Hang,
    CutAfter(usize),
    Drip(Duration),
    Stall(Duration),
    ResetAfter(usize),
    MalformedSse,
    SseError,
    InvalidJson,
    Gzip,
    /// MiB of content.
    Big(usize),
    /// Pause after `[DONE]` before the body ends.
    DonePause(Duration),
    /// MiB of streamed content in identical events.
    Flood(usize),
    /// Choices of one JSON answer.
    Choices(usize),
    /// Echo the received key (chat only).
    EchoKey(Echo),
}

/// Where an `echo-key-*` script puts the key it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Echo {
    Unauthorized,
    Header,
    Text,
    Stream,
    StreamError,
    Gzip,
}

impl Script {
    fn for_model(model: &str) -> Script {
        let millis = |rest: &str| rest.parse::<u64>().ok().map(Duration::from_millis);
        match model {
            "error-500" => Script::Error(StatusCode::INTERNAL_SERVER_ERROR),
            "error-429" => Script::Error(StatusCode::TOO_MANY_REQUESTS),
            "hang" => Script::Hang,
            "malformed-sse" => Script::MalformedSse,
            "sse-error" => Script::SseError,
            "invalid-json" => Script::InvalidJson,
            "gzip" => Script::Gzip,
            "echo-key-401" => Script::EchoKey(Echo::Unauthorized),
            "echo-key-header" => Script::EchoKey(Echo::Header),
            "echo-key-text" => Script::EchoKey(Echo::Text),
            "echo-key-stream" => Script::EchoKey(Echo::Stream),
            "echo-key-sse-error" => Script::EchoKey(Echo::StreamError),
            "echo-key-gzip" => Script::EchoKey(Echo::Gzip),
            _ => {
                let count = |rest: &str| rest.parse::<usize>().ok();
                if let Some(delay) = model.strip_prefix("slow-").and_then(millis) {
                    Script::Slow(delay)
                } else if let Some(delay) = model.strip_prefix("drip-").and_then(millis) {
                    Script::Drip(delay)
                } else if let Some(pause) = model.strip_prefix("stall-").and_then(millis) {
                    Script::Stall(pause)
                } else if let Some(n) = model.strip_prefix("cut-after-").and_then(count) {
                    Script::CutAfter(n)
                } else if let Some(n) = model.strip_prefix("reset-after-").and_then(count) {
                    Script::ResetAfter(n)
                } else if let Some(pause) = model.strip_prefix("done-pause-").and_then(millis) {
                    Script::DonePause(pause)
                } else if let Some(mib) = model
                    .strip_prefix("flood-")
                    .and_then(count)
                    .filter(|mib| (1..=MAX_FLOOD_MB).contains(mib))
                {
                    Script::Flood(mib)
                } else if let Some(n) = model
                    .strip_prefix("choices-")
                    .and_then(count)
                    .filter(|n| (1..=MAX_CHOICES).contains(n))
                {
                    Script::Choices(n)
                } else if let Some(mib) = model
                    .strip_prefix("big-")
                    .and_then(count)
                    .filter(|mib| (1..=MAX_BIG_MB).contains(mib))
                {
                    Script::Big(mib)
                } else {
                    Script::Normal
                }
            }
        }
    }
}

/// The key a request carried: its `Authorization: Bearer <key>` value (empty when
/// there is none).
fn received_key(headers: &http::HeaderMap) -> String {
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    value
        .strip_prefix("Bearer ")
        .map_or(value.clone(), str::to_owned)
}

/// Pause before each frame of an `echo-key-stream` answer, so the two halves of the key
/// reach the gateway as separate reads.
const ECHO_FRAME_PAUSE: Duration = Duration::from_millis(20);

/// The answer of an `echo-key-*` script (see the module doc).
fn echo_key(
    echo: Echo,
    key: &str,
    request: &Map<String, Value>,
    ids: &Ids<'_>,
) -> Response<ScriptedBody> {
    let mut pace = Pace::default();
    match echo {
        Echo::Unauthorized => {
            let message = format!(
                "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            return error_response(
                StatusCode::UNAUTHORIZED,
                ids.seq,
                &message,
                "invalid_request_error",
                Some("invalid_api_key"),
            );
        }
        Echo::Header => {
            let mut response = chat(request, ids, &pace);
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}")) {
                headers.insert("x-echoed-authorization", value);
            }
            if let Ok(name) = http::HeaderName::from_bytes(format!("x-key-{key}").as_bytes()) {
                headers.insert(name, HeaderValue::from_static("1"));
            }
            return response;
        }
        Echo::Text | Echo::Gzip => pace.force_plain = true,
        Echo::Stream | Echo::StreamError => pace.force_stream = true,
    }
    let mut request = request.clone();
    request.insert(
        "messages".into(),
        json!([{"role": "user", "content": format!("my key is {key}")}]),
    );
    let mut response = chat(&request, ids, &pace);
    let body = response.body_mut();
    match echo {
        Echo::Stream => {
            body.events = split_in_the_middle(std::mem::take(&mut body.events), key.as_bytes());
            body.delay = ECHO_FRAME_PAUSE;
        }
        Echo::StreamError => {
            body.events.truncate(2);
            let error = json!({"error": {
                "message": format!("Invalid API key {key} (echo-key-sse-error)."),
                "type": "invalid_request_error",
                "param": null,
                "code": "invalid_api_key"
            }});
            body.events
                .push_back(Bytes::from(format!("event: error\ndata: {error}\n\n")));
        }
        Echo::Gzip => return Shape::Gzip.apply(response),
        Echo::Unauthorized | Echo::Header | Echo::Text => {}
    }
    response
}

/// `frames` with each one that holds `needle` cut in two in the middle of it.
fn split_in_the_middle(frames: VecDeque<Bytes>, needle: &[u8]) -> VecDeque<Bytes> {
    let mut out = VecDeque::new();
    for frame in frames {
        let at = (!needle.is_empty())
            .then(|| frame.windows(needle.len()).position(|w| w == needle))
            .flatten();
        match at {
            Some(at) => {
                let middle = at + needle.len() / 2;
                out.push_back(frame.slice(..middle));
                out.push_back(frame.slice(middle..));
            }
            None => out.push_back(frame),
        }
    }
    out
}

/// Events a `stall-*` stream sends before going silent.
const STALL_AFTER_EVENTS: usize = 2;

/// How an answer is delivered.
#[derive(Clone, Copy, Debug, Default)]
struct Pace {
    /// Stream even when the request did not ask to.
    force_stream: bool,
    /// Answer one JSON body even when the request asked to stream.
    force_plain: bool,
    /// Wait this long before each event.
    delay: Duration,
    /// Before event `.0` (0-based), wait `.1` instead.
    stall: Option<(usize, Duration)>,
    /// Send only this many events, then end as `end` says.
    cut_after: Option<usize>,
    /// How the body ends after its last event.
    end: End,
    /// What is done to the finished answer's bytes.
    shape: Shape,
    /// `big-<MB>`: the chat content is this many MiB.
    big: Option<usize>,
    /// Wait this long after the last event before ending the body.
    linger: Option<Duration>,
}

/// How a body ends after its last event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum End {
    /// Normally.
    #[default]
    Finish,
    /// With an error: hyper aborts the connection (h2: `RST_STREAM`).
    Fail,
    /// With a TCP reset of the connection.
    Reset,
    /// Already ended (failed or reset); nothing more to send.
    Over,
}

/// A rewrite of an answer's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Shape {
    #[default]
    Plain,
    /// See `malformed-sse` in the module doc.
    MalformedSse,
    /// Keep this many events, then an error event, then end (no `[DONE]`).
    ErrorAfter(usize),
    /// Keep the first half of a JSON body.
    HalfBody,
    /// gzip the body (a stream event by event).
    Gzip,
}

/// What identifies one answer.
#[derive(Clone, Copy, Debug)]
struct Ids<'a> {
    /// 1-based position of the request.
    seq: usize,
    /// The request's model, echoed in the response.
    model: &'a str,
}

// ---------------------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------------------

/// One tool call of a reply.
#[derive(Clone, Debug)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// The assistant's reply to a chat request.
#[derive(Clone, Debug)]
enum ChatReply {
    /// Text, as the words a stream sends one per delta; `truncated` means it stopped at
    /// the token limit.
    Text {
        words: Vec<String>,
        truncated: bool,
    },
    ToolCalls(Vec<ToolCall>),
}

fn chat(request: &Map<String, Value>, ids: &Ids<'_>, pace: &Pace) -> Response<ScriptedBody> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| message_text(m.get("content").unwrap_or(&Value::Null)));
    let prompt_tokens = messages
        .iter()
        .map(|m| word_count(&message_text(m.get("content").unwrap_or(&Value::Null))))
        .sum::<usize>()
        .max(1);

    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let last_is_user = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("user");
    let tools_allowed = request.get("tool_choice").and_then(Value::as_str) != Some("none");

    let called = match tools.first() {
        Some(first) if last_is_user && tools_allowed => {
            Some([first, tools.get(1).unwrap_or(first)])
        }
        _ => None,
    };
    let reply = if let Some(mib) = pace.big {
        ChatReply::Text {
            words: big_pieces(mib),
            truncated: false,
        }
    } else if let Some(called) = called {
        let text = user_text.unwrap_or_default();
        ChatReply::ToolCalls(
            called
                .iter()
                .enumerate()
                .map(|(index, tool)| tool_call(index, tool, &text))
                .collect(),
        )
    } else {
        let content = match user_text {
            Some(text) => format!("Scripted reply to: {text}"),
            None => "Hello from the scripted upstream.".to_owned(),
        };
        let (words, truncated) = limit_words(words(&content), token_limit(request));
        ChatReply::Text { words, truncated }
    };

    let completion_tokens = match &reply {
        ChatReply::Text { words, .. } => words.len(),
        ChatReply::ToolCalls(calls) => calls.iter().map(|c| fragments(&c.arguments).len()).sum(),
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    });
    let id = format!("chatcmpl-scripted{}", ids.seq);

    if !streamed(request, pace) {
        let (message, finish_reason) = match &reply {
            ChatReply::Text { words, truncated } => (
                json!({"role": "assistant", "content": words.concat(), "refusal": null}),
                if *truncated { "length" } else { "stop" },
            ),
            ChatReply::ToolCalls(calls) => (
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": calls.iter().map(|c| json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}
                    })).collect::<Vec<_>>(),
                    "refusal": null
                }),
                "tool_calls",
            ),
        };
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": CREATED,
            "model": ids.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason
            }],
            "usage": usage,
            "system_fingerprint": "fp_scripted"
        });
        return json_response(StatusCode::OK, ids.seq, &body);
    }

    let include_usage = wants_usage(request);
    let chunk = |delta: Value, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": ids.model,
            "system_fingerprint": "fp_scripted",
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason
            }]
        });
        if include_usage && let Value::Object(object) = &mut chunk {
            object.insert("usage".to_owned(), Value::Null);
        }
        chunk
    };

    let mut chunks = Vec::new();
    match &reply {
        ChatReply::Text { words, truncated } => {
            chunks.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            for word in words {
                chunks.push(chunk(json!({"content": word}), Value::Null));
            }
            let reason = if *truncated { "length" } else { "stop" };
            chunks.push(chunk(json!({}), json!(reason)));
        }
        ChatReply::ToolCalls(calls) => {
            for (index, call) in calls.iter().enumerate() {
                let header = json!([{
                    "index": index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""}
                }]);
                let delta = if index == 0 {
                    json!({"role": "assistant", "content": null, "tool_calls": header, "refusal": null})
                } else {
                    json!({"tool_calls": header})
                };
                chunks.push(chunk(delta, Value::Null));
            }
            // Alternate the calls' argument fragments, as OpenAI interleaves parallel
            // calls.
            let mut pending: Vec<VecDeque<String>> = calls
                .iter()
                .map(|c| fragments(&c.arguments).into())
                .collect();
            while pending.iter().any(|p| !p.is_empty()) {
                for (index, fragments) in pending.iter_mut().enumerate() {
                    if let Some(fragment) = fragments.pop_front() {
                        chunks.push(chunk(
                            json!({"tool_calls": [{
                                "index": index,
                                "function": {"arguments": fragment}
                            }]}),
                            Value::Null,
                        ));
                    }
                }
            }
            chunks.push(chunk(json!({}), json!("tool_calls")));
        }
    }
    if include_usage {
        chunks.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": ids.model,
            "system_fingerprint": "fp_scripted",
            "choices": [],
            "usage": usage
        }));
    }
    sse_response(ids.seq, &chunks, pace)
}

/// Builds call `index` of a tool-call reply to `tool` (an OpenAI `tools` entry).
fn tool_call(index: usize, tool: &Value, user_text: &str) -> ToolCall {
    let function = tool.get("function").unwrap_or(tool);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("tool")
        .to_owned();
    let mut arguments = Map::new();
    if let Some(properties) = function
        .pointer("/parameters/properties")
        .and_then(Value::as_object)
    {
        for (key, schema) in properties {
            let value = if let Some(first) = schema
                .get("enum")
                .and_then(Value::as_array)
                .and_then(|values| values.first())
            {
                first.clone()
            } else {
                match schema.get("type").and_then(Value::as_str) {
                    Some("string") => json!(user_text),
                    Some("integer") => json!(1),
                    Some("number") => json!(1.5),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => Value::Null,
                }
            };
            arguments.insert(key.clone(), value);
        }
    }
    let arguments = Value::Object(arguments).to_string();
    let id = format!(
        "call_{:016x}",
        fnv1a(format!("{index}\0{name}\0{arguments}").as_bytes())
    );
    ToolCall {
        id,
        name,
        arguments,
    }
}

/// `arguments` in fragments of [`ARGUMENT_FRAGMENT_CHARS`] characters (at least one,
/// possibly empty, so a call always streams its arguments).
fn fragments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(ARGUMENT_FRAGMENT_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// The text of a message's `content`: a string, or the `text` of its content parts
/// joined with a space.
fn message_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(text) => Some(text.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Legacy completions
// ---------------------------------------------------------------------------------------

fn completions(request: &Map<String, Value>, ids: &Ids<'_>, pace: &Pace) -> Response<ScriptedBody> {
    let prompt = match request.get("prompt") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let prompt_tokens = word_count(&prompt).max(1);
    let (words, truncated) = limit_words(
        words(&format!(" Scripted completion of: {prompt}")),
        token_limit(request),
    );
    let finish_reason = if truncated { "length" } else { "stop" };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": words.len(),
        "total_tokens": prompt_tokens + words.len()
    });
    let id = format!("cmpl-scripted{}", ids.seq);

    if !streamed(request, pace) {
        let body = json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": ids.model,
            "choices": [{
                "text": words.concat(),
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason
            }],
            "usage": usage
        });
        return json_response(StatusCode::OK, ids.seq, &body);
    }

    let include_usage = wants_usage(request);
    let chunk = |text: &str, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": ids.model,
            "choices": [{
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason
            }]
        });
        if include_usage && let Value::Object(object) = &mut chunk {
            object.insert("usage".to_owned(), Value::Null);
        }
        chunk
    };
    let mut chunks: Vec<Value> = words.iter().map(|w| chunk(w, Value::Null)).collect();
    chunks.push(chunk("", json!(finish_reason)));
    if include_usage {
        chunks.push(json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": ids.model,
            "choices": [],
            "usage": usage
        }));
    }
    sse_response(ids.seq, &chunks, pace)
}

// ---------------------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------------------

fn embeddings(request: &Map<String, Value>, ids: &Ids<'_>) -> Response<ScriptedBody> {
    // One item per input: a string, a token array, or an array of either.
    let inputs: Vec<&Value> = match request.get("input") {
        Some(Value::Array(items)) if !items.is_empty() && !items.iter().all(|i| i.is_number()) => {
            items.iter().collect()
        }
        Some(input) => vec![input],
        None => Vec::new(),
    };
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .filter(|d| (1..=MAX_EMBEDDING_DIMENSIONS).contains(d))
        .unwrap_or(EMBEDDING_DIMENSIONS);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");

    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let (text, tokens) = match input {
                Value::String(text) => (text.clone(), word_count(text)),
                Value::Array(tokens) => (input.to_string(), tokens.len()),
                other => (other.to_string(), 1),
            };
            prompt_tokens += tokens;
            let vector = embedding(&text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens = prompt_tokens.max(1);
    let body = json!({
        "object": "list",
        "data": data,
        "model": ids.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    });
    json_response(StatusCode::OK, ids.seq, &body)
}

/// A deterministic unit-range vector for `text`, rounded to 4 decimals.
fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes());
    (0..dimensions)
        .map(|_| {
            state = splitmix64(state);
            // 24 random bits → [-1, 1), rounded so the JSON stays short.
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            ((unit * 2.0 - 1.0) * 10_000.0).round() / 10_000.0
        })
        .collect()
}

fn models() -> Value {
    json!({
        "object": "list",
        "data": LISTED_MODELS.iter().map(|id| json!({
            "id": id,
            "object": "model",
            "created": CREATED,
            "owned_by": "scripted"
        })).collect::<Vec<_>>()
    })
}

// ---------------------------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------------------------

fn wants_stream(request: &Map<String, Value>) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
}

/// Whether the answer is a stream: as asked, unless the script says otherwise.
fn streamed(request: &Map<String, Value>, pace: &Pace) -> bool {
    !pace.force_plain && (wants_stream(request) || pace.force_stream)
}

/// The content of a `big-<MB>` answer: `mib` MiB of ASCII in pieces of
/// [`BIG_PIECE_BYTES`], each starting with its number so a misplaced piece shows.
fn big_pieces(mib: usize) -> Vec<String> {
    const FILLER: &str = " The quick brown fox jumps over the lazy dog.";
    let count = mib * (1 << 20) / BIG_PIECE_BYTES;
    (0..count)
        .map(|i| {
            let mut piece = format!("[{i:07}]");
            while piece.len() < BIG_PIECE_BYTES {
                piece.push_str(FILLER);
            }
            piece.truncate(BIG_PIECE_BYTES);
            piece
        })
        .collect()
}

/// A `flood-<MB>` answer: `mib` MiB of content in identical 1 KiB deltas. The events
/// share one buffer, so the upstream sends hundreds of MiB without holding them.
fn flood(ids: &Ids<'_>, mib: usize) -> Response<ScriptedBody> {
    let id = format!("chatcmpl-scripted{}", ids.seq);
    let chunk = |delta: Value, finish_reason: Value| {
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": ids.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let piece = "x".repeat(BIG_PIECE_BYTES);
    let content = chunk(json!({"content": piece}), Value::Null);
    let count = mib * (1 << 20) / BIG_PIECE_BYTES;
    let mut events = VecDeque::with_capacity(count + 3);
    events.push_back(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    events.extend(std::iter::repeat_n(content, count));
    events.push_back(chunk(json!({}), json!("stop")));
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    let mut response = Response::new(ScriptedBody::new(events, None));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    insert_request_id(headers, ids.seq);
    response
}

/// A `choices-<n>` answer: one JSON body with `n` short choices (~90 bytes each, so
/// 300k fit under the gateway's 32 MiB capture limit), written as text (a `Value` of
/// a million choices would cost the upstream a gigabyte).
fn many_choices(ids: &Ids<'_>, n: usize) -> Response<ScriptedBody> {
    use std::fmt::Write as _;
    let mut body = format!(
        r#"{{"id":"chatcmpl-scripted{}","object":"chat.completion","created":{CREATED},"model":{},"choices":["#,
        ids.seq,
        json!(ids.model)
    );
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"index":{i},"message":{{"role":"assistant","content":"c{i:07}"}},"finish_reason":"stop"}}"#
        );
    }
    let _ = write!(
        body,
        r#"],"usage":{{"prompt_tokens":1,"completion_tokens":{n},"total_tokens":{}}}}}"#,
        n + 1
    );
    let mut response = Response::new(ScriptedBody::full(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert_request_id(headers, ids.seq);
    response
}

fn wants_usage(request: &Map<String, Value>) -> bool {
    request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// `max_completion_tokens`, else `max_tokens`.
fn token_limit(request: &Map<String, Value>) -> Option<usize> {
    request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Splits `text` into words, each with the whitespace before it, so the pieces
/// concatenate back to `text`.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            words.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Keeps at most `limit` words; `true` when some were dropped.
fn limit_words(mut words: Vec<String>, limit: Option<usize>) -> (Vec<String>, bool) {
    match limit {
        Some(limit) if words.len() > limit => {
            words.truncate(limit);
            (words, true)
        }
        _ => (words, false),
    }
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

fn json_response(status: StatusCode, seq: usize, body: &Value) -> Response<ScriptedBody> {
    let mut response = Response::new(ScriptedBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert_request_id(headers, seq);
    response
}

fn sse_response(seq: usize, chunks: &[Value], pace: &Pace) -> Response<ScriptedBody> {
    let mut events: VecDeque<Bytes> = chunks
        .iter()
        .map(|chunk| Bytes::from(format!("data: {chunk}\n\n")))
        .collect();
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    if let Some(n) = pace.cut_after {
        // Never let `[DONE]` through a cut stream, however large `n` is.
        events.truncate(n.min(events.len() - 1));
    }
    let mut body = ScriptedBody::new(events, None);
    body.delay = pace.delay;
    body.stall = pace.stall;
    body.end = pace.end;
    body.linger = pace.linger;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    insert_request_id(headers, seq);
    response
}

fn insert_request_id(headers: &mut http::HeaderMap, seq: usize) {
    if let Ok(value) = HeaderValue::from_str(&format!("req_scripted{seq}")) {
        headers.insert("x-request-id", value);
    }
}

/// An OpenAI-style error: `{"error":{"message","type","param":null,"code"}}`.
fn error_response(
    status: StatusCode,
    seq: usize,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<ScriptedBody> {
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    json_response(status, seq, &body)
}

fn invalid_request(status: StatusCode, seq: usize, message: &str) -> Response<ScriptedBody> {
    error_response(status, seq, message, "invalid_request_error", None)
}

/// The answer of the `error-*` scripts.
fn scripted_error(status: StatusCode, seq: usize) -> Response<ScriptedBody> {
    let mut response = if status == StatusCode::TOO_MANY_REQUESTS {
        error_response(
            status,
            seq,
            "Rate limit reached for requests (scripted error-429).",
            "requests",
            Some("rate_limit_exceeded"),
        )
    } else {
        error_response(
            status,
            seq,
            "The server had an error while processing your request (scripted error-500).",
            "server_error",
            None,
        )
    };
    response
        .headers_mut()
        .insert("x-should-retry", HeaderValue::from_static("false"));
    response
}

/// The failure a `cut-after-*` body reports so hyper aborts the connection.
#[derive(Debug, thiserror::Error)]
#[error("scripted upstream cut the stream")]
struct StreamCut;

/// A response body: a queue of frames sent with an optional delay before each, and an
/// optional failure (or reset) at the end.
#[derive(Debug)]
struct ScriptedBody {
    events: VecDeque<Bytes>,
    /// Waited before each event (zero: none).
    delay: Duration,
    /// Before event `.0` (0-based), wait `.1` instead of `delay`.
    stall: Option<(usize, Duration)>,
    /// After the last event, wait this long before ending (`End::Finish` only).
    linger: Option<Duration>,
    /// Events sent so far.
    sent: usize,
    /// What happens after the last event.
    end: End,
    /// The running delay, if any.
    timer: Option<Pin<Box<Sleep>>>,
    /// Length of a non-streamed body, so it gets a `content-length`.
    exact_len: Option<u64>,
    /// Asks the connection to reset itself (`End::Reset`).
    reset: Option<Arc<Notify>>,
    /// What was sent, recorded when the body is dropped.
    log: Option<ResponseLog>,
}

/// The record of an answer being sent.
#[derive(Debug)]
struct ResponseLog {
    shared: Arc<Shared>,
    seq: usize,
    status: u16,
    headers: Vec<(String, String)>,
    frames: Vec<Bytes>,
    end: ResponseEnd,
    /// Keeps the answer counted as active until the body is dropped.
    _active: ActiveGuard,
}

impl ScriptedBody {
    fn new(events: VecDeque<Bytes>, exact_len: Option<u64>) -> ScriptedBody {
        ScriptedBody {
            events,
            delay: Duration::ZERO,
            stall: None,
            linger: None,
            sent: 0,
            end: End::Finish,
            timer: None,
            exact_len,
            reset: None,
            log: None,
        }
    }

    /// A whole body sent at once.
    fn full(bytes: Bytes) -> ScriptedBody {
        let len = u64::try_from(bytes.len()).ok();
        ScriptedBody::new(VecDeque::from([bytes]), len)
    }

    fn ended(&mut self, end: ResponseEnd) {
        if let Some(log) = &mut self.log {
            log.end = end;
        }
    }
}

impl Drop for ScriptedBody {
    fn drop(&mut self) {
        let Some(log) = self.log.take() else { return };
        let Some(responses) = &log.shared.responses else {
            return;
        };
        let mut body = Vec::with_capacity(log.frames.iter().map(Bytes::len).sum());
        for frame in &log.frames {
            body.extend_from_slice(frame);
        }
        let record = RecordedResponse {
            seq: log.seq,
            status: log.status,
            headers: log.headers,
            body: Bytes::from(body),
            end: log.end,
        };
        responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = self.get_mut();
        let pause = if !this.events.is_empty() {
            match this.stall {
                Some((at, pause)) if at == this.sent => pause,
                _ => this.delay,
            }
        } else {
            match this.end {
                End::Finish if this.linger.is_some() => {
                    let pause = this.linger.unwrap_or_default();
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                    ready!(timer.as_mut().poll(cx));
                    this.timer = None;
                    this.linger = None;
                    this.ended(ResponseEnd::Complete);
                    return Poll::Ready(None);
                }
                End::Finish => {
                    this.ended(ResponseEnd::Complete);
                    return Poll::Ready(None);
                }
                End::Fail | End::Reset => CUT_PAUSE,
                End::Over => return Poll::Pending,
            }
        };
        if !pause.is_zero() {
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            ready!(timer.as_mut().poll(cx));
            this.timer = None;
        }
        match this.events.pop_front() {
            Some(event) => {
                this.sent += 1;
                if let Some(log) = &mut this.log
                    && log.shared.responses.is_some()
                {
                    log.frames.push(event.clone());
                }
                if this.events.is_empty() && this.end == End::Finish {
                    // hyper may not poll again once the body says it is over.
                    this.ended(ResponseEnd::Complete);
                }
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
            None => match std::mem::replace(&mut this.end, End::Over) {
                End::Reset if this.reset.is_some() => {
                    this.ended(ResponseEnd::Reset);
                    if let Some(reset) = &this.reset {
                        reset.notify_one();
                    }
                    // The connection is torn down under this body; nothing more.
                    Poll::Pending
                }
                _ => {
                    this.ended(ResponseEnd::Cut);
                    Poll::Ready(Some(Err(StreamCut)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_empty() && self.end == End::Finish && self.linger.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) if !self.events.is_empty() => SizeHint::with_exact(len),
            Some(_) => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

impl Shape {
    /// Rewrites a finished answer's bytes (and headers) as the script says.
    fn apply(self, mut response: Response<ScriptedBody>) -> Response<ScriptedBody> {
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = response.body_mut();
        match self {
            Shape::Plain => {}
            Shape::MalformedSse if is_sse => {
                body.events = malformed(std::mem::take(&mut body.events));
            }
            Shape::ErrorAfter(keep) if is_sse => {
                body.events.truncate(keep);
                body.events.push_back(Bytes::from_static(
                    b"event: error\ndata: {\"error\":{\"message\":\"The scripted upstream failed mid-stream (sse-error).\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
                ));
            }
            Shape::HalfBody if !is_sse => {
                let whole: Vec<u8> = body.events.iter().flat_map(|b| b.to_vec()).collect();
                let half = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
                *body = ScriptedBody::full(half);
            }
            Shape::Gzip => {
                let frames = gzip_frames(&body.events);
                if body.exact_len.is_some() {
                    let whole: Vec<u8> = frames.iter().flat_map(|b| b.to_vec()).collect();
                    *body = ScriptedBody::full(Bytes::from(whole));
                } else {
                    body.events = frames;
                }
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            Shape::MalformedSse | Shape::ErrorAfter(_) | Shape::HalfBody => {}
        }
        response
    }
}

/// The gzip stream of `events`, one frame per event (sync-flushed, so each frame
/// decodes to its whole event), the trailer in a frame of its own.
fn gzip_frames(events: &VecDeque<Bytes>) -> VecDeque<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut frames = VecDeque::new();
    for event in events {
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(event);
        let _ = encoder.flush();
        frames.push_back(Bytes::from(std::mem::take(encoder.get_mut())));
    }
    if let Ok(rest) = encoder.finish() {
        frames.push_back(Bytes::from(rest));
    }
    frames
}

/// A `malformed-sse` stream made of the events of a normal one (see the module doc).
fn malformed(events: VecDeque<Bytes>) -> VecDeque<Bytes> {
    let mut text: Vec<u8> = Vec::new();
    text.extend_from_slice(b": keep-alive comment\n\n");
    text.extend_from_slice(b"this line has no colon\n\n");
    text.extend_from_slice(b"event: ping\n\n");
    let content: Vec<&Bytes> = events
        .iter()
        .filter(|e| e.as_ref() != b"data: [DONE]\n\n")
        .collect();
    for (i, event) in content.iter().enumerate() {
        match i % 4 {
            0 => {
                text.extend_from_slice(b"id: ");
                text.extend_from_slice(i.to_string().as_bytes());
                text.extend_from_slice(b"\nretry: 1000\n");
                text.extend_from_slice(event);
            }
            1 => {
                // CRLF line endings.
                let line = event.strip_suffix(b"\n\n").unwrap_or(event);
                text.extend_from_slice(line);
                text.extend_from_slice(b"\r\n\r\n");
            }
            2 => {
                text.extend_from_slice(b": comment between events\nunknown-field: x\n");
                text.extend_from_slice(event);
            }
            _ => text.extend_from_slice(event),
        }
        if i == 1 {
            text.extend_from_slice(b"data: {\"choices\": [{\"delta\": \n\n");
        }
    }
    // Frames of 1 to 61 bytes, so lines, CRLF pairs and UTF-8 characters are split.
    let sizes = [1, 2, 3, 5, 8, 13, 21, 34, 61];
    let mut frames = VecDeque::new();
    let mut rest = text.as_slice();
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (frame, tail) = rest.split_at((*size).min(rest.len()));
        frames.push_back(Bytes::copy_from_slice(frame));
        rest = tail;
    }
    frames
}

// ---------------------------------------------------------------------------------------
// Small deterministic helpers (no extra crates for a test double)
// ---------------------------------------------------------------------------------------

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One step of SplitMix64.
fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::{parse_response, stream_accumulator};
    use celgate_engine::exchange::{Exchange, Operation};
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use std::time::Instant;

    async fn upstream() -> ScriptedUpstream {
        ScriptedUpstream::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    }

    /// A response as a client saw it: every body frame with its arrival time, and the
    /// body error that ended it, if any.
    struct Reply {
        status: StatusCode,
        headers: http::HeaderMap,
        frames: Vec<(Instant, Bytes)>,
        error: Option<String>,
    }

    impl Reply {
        fn body(&self) -> Vec<u8> {
            self.frames.iter().flat_map(|(_, b)| b.to_vec()).collect()
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body()).unwrap()
        }

        /// The `data:` payloads of an SSE body, in order.
        fn events(&self) -> Vec<String> {
            String::from_utf8(self.body())
                .unwrap()
                .split("\n\n")
                .filter(|e| !e.is_empty())
                .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
                .collect()
        }

        /// The JSON payloads of an SSE body (everything but `[DONE]`).
        fn chunks(&self) -> Vec<Value> {
            self.events()
                .iter()
                .filter(|e| *e != "[DONE]")
                .map(|e| serde_json::from_str(e).unwrap())
                .collect()
        }
    }

    async fn send(
        up: &ScriptedUpstream,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        http2: bool,
    ) -> Reply {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Full<Bytes>>();
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", up.addr()))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-test")
            .body(Full::new(body.into()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let (parts, mut body) = response.into_parts();
        let mut frames = Vec::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push((Instant::now(), data));
                    }
                }
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break;
                }
            }
        }
        Reply {
            status: parts.status,
            headers: parts.headers,
            frames,
            error,
        }
    }

    async fn post(up: &ScriptedUpstream, path: &str, body: &Value) -> Reply {
        send(up, Method::POST, path, body.to_string(), false).await
    }

    fn with(mut request: Value, key: &str, value: Value) -> Value {
        request
            .as_object_mut()
            .unwrap()
            .insert(key.to_owned(), value);
        request
    }

    fn streaming(request: Value) -> Value {
        let request = with(request, "stream", json!(true));
        with(request, "stream_options", json!({"include_usage": true}))
    }

    /// What the gateway's own parsers make of a non-streamed and a streamed body.
    fn parsed(operation: Operation, plain: &Reply, streamed: &Reply) -> (Exchange, Exchange) {
        let mut from_plain = Exchange::default();
        parse_response(operation, &plain.body(), &mut from_plain).unwrap();
        let mut accumulator = stream_accumulator(operation);
        for (_, frame) in &streamed.frames {
            accumulator.feed(frame);
        }
        let mut from_stream = Exchange::default();
        let summary = accumulator.finish(&mut from_stream);
        assert!(summary.saw_final);
        assert_eq!(summary.malformed_events, 0);
        assert_eq!(summary.error, None);
        (from_plain, from_stream)
    }

    fn chat_request() -> Value {
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is CEL?"}
            ]
        })
    }

    #[tokio::test]
    async fn plain_chat_is_a_realistic_completion_and_is_recorded() {
        let up = upstream().await;
        let reply = post(&up, "/v1/chat/completions", &chat_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.headers["x-request-id"], "req_scripted1");
        assert_eq!(
            reply.json(),
            json!({
                "id": "chatcmpl-scripted1",
                "object": "chat.completion",
                "created": CREATED,
                "model": "gpt-4o-mini",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Scripted reply to: What is CEL?",
                        "refusal": null
                    },
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": 6,
                    "completion_tokens": 6,
                    "total_tokens": 12,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {
                        "reasoning_tokens": 0,
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0
                    }
                },
                "system_fingerprint": "fp_scripted"
            })
        );

        let requests = up.requests();
        assert_eq!(requests.len(), 1);
        let recorded = &requests[0];
        assert_eq!(recorded.method, "POST");
        assert_eq!(recorded.path, "/v1/chat/completions");
        assert_eq!(recorded.version, "HTTP/1.1");
        assert_eq!(recorded.header("Authorization"), Some("Bearer sk-test"));
        assert_eq!(recorded.json(), Some(chat_request()));
    }

    #[tokio::test]
    async fn streamed_chat_reassembles_to_the_plain_content() {
        let up = upstream().await;
        let request =
            json!(serde_json::from_slice::<Value>(fixture!("chat_request.json")).unwrap());
        let plain = post(&up, "/v1/chat/completions", &request).await;
        // Over h2c too: one port serves both.
        let streamed = send(
            &up,
            Method::POST,
            "/v1/chat/completions",
            streaming(request).to_string(),
            true,
        )
        .await;
        assert_eq!(streamed.status, StatusCode::OK);
        assert_eq!(
            streamed.headers["content-type"],
            "text/event-stream; charset=utf-8"
        );
        assert_eq!(streamed.error, None);
        assert_eq!(up.requests()[1].version, "HTTP/2.0");

        let events = streamed.events();
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks = streamed.chunks();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let deltas: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .filter(|c| !c.is_empty())
            .collect();
        assert!(deltas.len() >= 3, "{deltas:?}");
        let content = deltas.concat();
        assert_eq!(
            content,
            "Scripted reply to: What is the best month to visit it?"
        );
        assert_eq!(
            plain.json()["choices"][0]["message"]["content"],
            json!(content)
        );
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let usage = &chunks[chunks.len() - 1];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], plain.json()["usage"]);
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c["usage"].is_null())
        );

        let (from_plain, from_stream) = parsed(Operation::Chat, &plain, &streamed);
        assert_eq!(from_stream.choices, from_plain.choices);
        assert_eq!(from_stream.response_model, from_plain.response_model);
        assert_eq!(
            (
                from_stream.input_tokens,
                from_stream.output_tokens,
                from_stream.total_tokens
            ),
            (
                from_plain.input_tokens,
                from_plain.output_tokens,
                from_plain.total_tokens
            )
        );
    }

    #[tokio::test]
    async fn stream_without_include_usage_has_no_usage_chunk() {
        let up = upstream().await;
        let reply = post(
            &up,
            "/v1/chat/completions",
            &with(chat_request(), "stream", json!(true)),
        )
        .await;
        let chunks = reply.chunks();
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "stop"
        );
    }

    #[tokio::test]
    async fn max_tokens_truncates_with_finish_reason_length() {
        let up = upstream().await;
        let reply = post(
            &up,
            "/v1/chat/completions",
            &with(chat_request(), "max_tokens", json!(2)),
        )
        .await
        .json();
        assert_eq!(reply["choices"][0]["message"]["content"], "Scripted reply");
        assert_eq!(reply["choices"][0]["finish_reason"], "length");
        assert_eq!(reply["usage"]["completion_tokens"], 2);
    }

    #[tokio::test]
    async fn tools_get_two_parallel_calls_streamed_interleaved() {
        let up = upstream().await;
        let request: Value = serde_json::from_slice(fixture!("tools_request.json")).unwrap();
        let plain = post(
            &up,
            "/v1/chat/completions",
            &with(request.clone(), "stream", json!(false)),
        )
        .await;
        let body = plain.json();
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[1]["function"]["name"], "get_time");
        for call in calls {
            assert!(call["id"].as_str().unwrap().starts_with("call_"));
            assert_eq!(call["type"], "function");
        }
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        let question = "What's the weather in Paris right now, and what time is it in Tokyo?";
        let weather: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(weather, json!({"location": question, "unit": "celsius"}));
        let time: Value =
            serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(time, json!({"timezone": question}));

        let streamed = post(&up, "/v1/chat/completions", &request).await;
        let chunks = streamed.chunks();
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        // Each call opens with its id and name, then only argument fragments follow.
        assert_eq!(deltas[0]["index"], 0);
        assert_eq!(deltas[0]["function"]["name"], "get_weather");
        assert_eq!(deltas[1]["index"], 1);
        assert_eq!(deltas[1]["function"]["name"], "get_time");
        let fragments = &deltas[2..];
        assert!(fragments.iter().all(|d| d.get("id").is_none()));
        assert!(fragments.len() >= 6, "{fragments:?}");
        let order: Vec<u64> = fragments
            .iter()
            .map(|d| d["index"].as_u64().unwrap())
            .collect();
        assert_eq!(&order[..4], &[0, 1, 0, 1], "fragments are interleaved");
        for (index, call) in calls.iter().enumerate() {
            let arguments: String = fragments
                .iter()
                .filter(|d| d["index"] == index)
                .map(|d| d["function"]["arguments"].as_str().unwrap())
                .collect();
            assert_eq!(json!(arguments), call["function"]["arguments"]);
        }
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );

        let (from_plain, from_stream) = parsed(Operation::Chat, &plain, &streamed);
        assert_eq!(from_stream.choices, from_plain.choices);
        assert_eq!(from_stream.output_tokens, from_plain.output_tokens);
    }

    #[tokio::test]
    async fn a_tool_result_gets_text() {
        let up = upstream().await;
        let request: Value =
            serde_json::from_slice(fixture!("tools_followup_request.json")).unwrap();
        let reply = post(
            &up,
            "/v1/chat/completions",
            &with(request, "stream", json!(false)),
        )
        .await
        .json();
        assert_eq!(reply["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            reply["choices"][0]["message"]["content"],
            "Scripted reply to: What's the weather in Paris right now, and what time is it in Tokyo?"
        );
        assert!(reply["choices"][0]["message"].get("tool_calls").is_none());
    }

    #[tokio::test]
    async fn cut_after_3_sends_three_events_then_breaks_the_connection() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("cut-after-3"));
        for http2 in [false, true] {
            // Not asked to stream: the script streams anyway.
            let reply = send(
                &up,
                Method::POST,
                "/v1/chat/completions",
                request.to_string(),
                http2,
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK);
            let events = reply.events();
            assert_eq!(events.len(), 3, "http2={http2}: {events:?}");
            assert!(!events.contains(&"[DONE]".to_owned()));
            assert!(reply.error.is_some(), "http2={http2}: the body must fail");
        }
    }

    #[tokio::test]
    async fn reset_after_sends_n_events_then_resets_the_connection() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("reset-after-2"));
        let reply = post(&up, "/v1/chat/completions", &request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.events().len(), 2);
        let error = reply.error.clone().expect("the body must fail");
        assert!(
            error.to_ascii_lowercase().contains("reset"),
            "a reset, not a clean close: {error}"
        );
        let recorded = &up.responses()[0];
        assert_eq!(recorded.end, ResponseEnd::Reset);
        assert_eq!(recorded.body, Bytes::from(reply.body()));
    }

    #[tokio::test]
    async fn malformed_sse_still_carries_the_whole_content() {
        let up = upstream().await;
        let plain = post(&up, "/v1/chat/completions", &chat_request()).await;
        let request = with(chat_request(), "model", json!("malformed-sse"));
        let reply = post(&up, "/v1/chat/completions", &request).await;
        assert_eq!(reply.error, None);
        assert!(reply.frames.len() > 20, "split into many small frames");
        let body = reply.body();
        assert!(
            body.windows(4).any(|w| w == b"\r\n\r\n"),
            "some CRLF events"
        );
        assert!(!body.windows(6).any(|w| w == b"[DONE]"));
        let mut accumulator = stream_accumulator(Operation::Chat);
        for (_, frame) in &reply.frames {
            accumulator.feed(frame);
        }
        let mut ex = Exchange::default();
        let summary = accumulator.finish(&mut ex);
        assert!(!summary.saw_final);
        assert_eq!(summary.malformed_events, 1);
        assert_eq!(
            ex.choices[0].content.as_deref(),
            plain.json()["choices"][0]["message"]["content"].as_str()
        );
        assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));
    }

    #[tokio::test]
    async fn sse_error_ends_cleanly_after_an_error_event() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("sse-error"));
        let reply = post(&up, "/v1/chat/completions", &request).await;
        assert_eq!(reply.error, None);
        let mut accumulator = stream_accumulator(Operation::Chat);
        accumulator.feed(&reply.body());
        let summary = accumulator.finish(&mut Exchange::default());
        assert_eq!(summary.events, 3);
        assert!(summary.error.unwrap().contains("sse-error"));
    }

    #[tokio::test]
    async fn done_pause_ends_the_body_that_long_after_done() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("done-pause-300"));
        let started = Instant::now();
        let reply = post(&up, "/v1/chat/completions", &request).await;
        let took = started.elapsed();
        assert_eq!(reply.error, None);
        assert_eq!(reply.events().last().map(String::as_str), Some("[DONE]"));
        // `[DONE]` arrived, then the body stayed open for the pause.
        let done_at = reply.frames.last().map(|(at, _)| *at).unwrap();
        let open_after_done = (started + took).duration_since(done_at);
        assert!(
            open_after_done >= Duration::from_millis(250),
            "{open_after_done:?}"
        );
    }

    #[tokio::test]
    async fn flood_and_choices_answers_are_that_large() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("flood-2"));
        let reply = post(&up, "/v1/chat/completions", &request).await;
        let mut ex = Exchange::default();
        let mut acc = stream_accumulator(Operation::Chat);
        acc.feed(&reply.body());
        assert!(acc.finish(&mut ex).saw_final);
        assert_eq!(
            ex.choices[0].content.as_deref().map(str::len),
            Some(2 << 20)
        );
        assert_eq!(ex.choices[0].finish_reason.as_deref(), Some("stop"));

        let request = with(chat_request(), "model", json!("choices-3000"));
        let reply = post(&up, "/v1/chat/completions", &request).await;
        let json = reply.json();
        assert_eq!(json["choices"].as_array().map(Vec::len), Some(3000));
        assert_eq!(json["choices"][2999]["message"]["content"], "c0002999");
    }

    #[tokio::test]
    async fn echo_key_scripts_echo_the_received_key_where_they_say() {
        let up = upstream().await;
        let echo = |model: &str| with(chat_request(), "model", json!(model));
        let has_key = |bytes: &[u8]| bytes.windows(7).any(|w| w == b"sk-test");
        let unauthorized = post(&up, "/v1/chat/completions", &echo("echo-key-401")).await;
        assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
        assert!(has_key(&unauthorized.body()));
        let header = post(&up, "/v1/chat/completions", &echo("echo-key-header")).await;
        assert_eq!(header.headers["x-echoed-authorization"], "Bearer sk-test");
        assert_eq!(header.headers["x-key-sk-test"], "1");
        assert!(!has_key(&header.body()));
        let text = post(&up, "/v1/chat/completions", &echo("echo-key-text")).await;
        assert_eq!(
            text.json()["choices"][0]["message"]["content"],
            "Scripted reply to: my key is sk-test"
        );
        let stream = post(&up, "/v1/chat/completions", &echo("echo-key-stream")).await;
        assert!(has_key(&stream.body()));
        assert!(stream.frames.iter().all(|(_, f)| !has_key(f)), "split");
        assert!(stream.frames.iter().any(|(_, f)| f.ends_with(b"sk-")));
        let error = post(&up, "/v1/chat/completions", &echo("echo-key-sse-error")).await;
        let events = String::from_utf8(error.body()).unwrap();
        let events: Vec<&str> = events.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[2].starts_with("event: error\ndata: "), "{events:?}");
        assert!(events[2].contains("Invalid API key sk-test"), "{events:?}");
        let gzip = post(&up, "/v1/chat/completions", &echo("echo-key-gzip")).await;
        assert_eq!(gzip.headers["content-encoding"], "gzip");
    }

    #[tokio::test]
    async fn invalid_json_is_a_well_framed_half_body() {
        let up = upstream().await;
        let whole = post(&up, "/v1/chat/completions", &chat_request()).await;
        let request = with(streaming(chat_request()), "model", json!("invalid-json"));
        let reply = post(&up, "/v1/chat/completions", &request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(
            reply.headers["content-length"],
            reply.body().len().to_string()
        );
        assert_eq!(reply.body().len(), whole.body().len() / 2);
        assert!(serde_json::from_slice::<Value>(&reply.body()).is_err());
    }

    #[tokio::test]
    async fn gzip_answers_decompress_to_the_normal_ones() {
        use std::io::Read as _;
        let gunzip = |bytes: &[u8]| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("gzip"));
        let plain = post(&up, "/v1/chat/completions", &request).await;
        assert_eq!(plain.headers["content-encoding"], "gzip");
        let json: Value = serde_json::from_slice(&gunzip(&plain.body())).unwrap();
        assert_eq!(
            json["choices"][0]["message"]["content"],
            "Scripted reply to: What is CEL?"
        );

        let streamed = post(&up, "/v1/chat/completions", &streaming(request)).await;
        assert_eq!(streamed.headers["content-encoding"], "gzip");
        assert!(streamed.frames.len() > 3, "flushed event by event");
        let text = String::from_utf8(gunzip(&streamed.body())).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }

    #[tokio::test]
    async fn big_answers_are_that_many_mib() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("big-1"));
        let plain = post(&up, "/v1/chat/completions", &request).await.json();
        let content = plain["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content.len(), 1 << 20);
        assert!(content.starts_with("[0000000]"));
        let streamed = post(&up, "/v1/chat/completions", &streaming(request)).await;
        let chunks = streamed.chunks();
        let pieces: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(pieces.len(), 1024);
        assert_eq!(pieces.concat(), content);
    }

    #[tokio::test]
    async fn stall_goes_silent_after_two_events_and_answers_are_recorded() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("stall-300"));
        let reply = post(&up, "/v1/chat/completions", &request).await;
        assert_eq!(reply.error, None);
        assert_eq!(reply.events().last().map(String::as_str), Some("[DONE]"));
        let mut events = 0;
        let mut before_stall = None;
        for (at, frame) in &reply.frames {
            events += frame.windows(6).filter(|w| w == b"data: ").count();
            if events == 2 {
                before_stall = Some(*at);
            } else if events > 2
                && let Some(before) = before_stall
            {
                assert!(at.duration_since(before) >= Duration::from_millis(300));
                break;
            }
        }
        assert!(before_stall.is_some());
        let recorded = up.responses();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].seq, 1);
        assert_eq!(recorded[0].end, ResponseEnd::Complete);
        assert_eq!(recorded[0].body, Bytes::from(reply.body()));
        assert_eq!(up.active_responses(), 0);
    }

    #[tokio::test]
    async fn drip_spaces_the_events() {
        let up = upstream().await;
        let request = with(chat_request(), "model", json!("drip-120"));
        let start = Instant::now();
        let reply = post(&up, "/v1/chat/completions", &request).await;
        assert_eq!(reply.error, None);
        let events = reply.events();
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        // Event k cannot leave before (k + 1) × 120 ms: check every frame against that
        // lower bound (a late reader can only make frames later, never earlier).
        assert!(reply.frames.len() > 1, "events arrive separately");
        let mut sent = 0;
        for (at, frame) in &reply.frames {
            sent += frame.windows(6).filter(|w| w == b"data: ").count();
            let earliest = Duration::from_millis(120) * u32::try_from(sent).unwrap();
            assert!(
                at.duration_since(start) >= earliest,
                "event {sent} came early"
            );
        }
        assert_eq!(sent, events.len());
    }

    #[tokio::test]
    async fn slow_delays_and_hang_never_answers() {
        let up = upstream().await;
        let start = Instant::now();
        let reply = post(
            &up,
            "/v1/chat/completions",
            &with(chat_request(), "model", json!("slow-300")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(reply.json()["model"], "slow-300");

        let hung = tokio::time::timeout(
            Duration::from_millis(300),
            post(
                &up,
                "/v1/chat/completions",
                &with(chat_request(), "model", json!("hang")),
            ),
        )
        .await;
        assert!(hung.is_err(), "hang must not answer");
        assert_eq!(up.requests().len(), 2, "the hung request is still recorded");
    }

    #[tokio::test]
    async fn dropping_the_upstream_releases_hung_requests() {
        let up = upstream().await;
        let addr = up.addr();
        let client = tokio::spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let request = Request::post(format!("http://{addr}/v1/chat/completions"))
                .body(Full::new(Bytes::from(r#"{"model":"hang"}"#)))
                .unwrap();
            client.request(request).await.map(|r| r.status())
        });
        while up.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(up);
        let outcome = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .expect("the hung request ends when the upstream is dropped")
            .unwrap();
        // Either the 503 made it out or the connection was closed first.
        assert!(matches!(
            outcome,
            Ok(StatusCode::SERVICE_UNAVAILABLE) | Err(_)
        ));
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn errors_are_openai_shaped() {
        let up = upstream().await;
        let reply = post(
            &up,
            "/v1/chat/completions",
            &with(chat_request(), "model", json!("error-500")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.headers["x-should-retry"], "false");
        let error = &reply.json()["error"];
        assert_eq!(error["type"], "server_error");
        assert_eq!(error["code"], Value::Null);
        assert!(error["message"].is_string());

        let reply = post(
            &up,
            "/v1/embeddings",
            &json!({"model": "error-429", "input": "x"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");

        for (body, status) in [
            ("{not json", StatusCode::BAD_REQUEST),
            ("[1, 2]", StatusCode::BAD_REQUEST),
            (r#"{"messages": []}"#, StatusCode::BAD_REQUEST),
        ] {
            let reply = send(&up, Method::POST, "/v1/chat/completions", body, false).await;
            assert_eq!(reply.status, status, "{body}");
            assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        }

        let reply = send(&up, Method::POST, "/v1/nope", "{}", false).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.json()["error"]["code"], "unknown_url");
        let reply = send(&up, Method::GET, "/v1/chat/completions", "", false).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");

        let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths.len(), 7, "every request is recorded: {paths:?}");
    }

    #[tokio::test]
    async fn unrecorded_counts_requests_but_keeps_none() {
        let up = ScriptedUpstream::start_unrecorded("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        for n in 1..=3 {
            let reply = post(&up, "/v1/chat/completions", &chat_request()).await;
            assert_eq!(reply.status, StatusCode::OK);
            // Ids still count requests, as when they are recorded.
            assert_eq!(reply.json()["id"], format!("chatcmpl-scripted{n}"));
            assert_eq!(reply.headers["x-request-id"], format!("req_scripted{n}"));
        }
        assert_eq!(up.request_count(), 3);
        assert!(up.requests().is_empty());

        let recorded = upstream().await;
        post(&recorded, "/v1/chat/completions", &chat_request()).await;
        assert_eq!(recorded.request_count(), 1);
        assert_eq!(recorded.requests().len(), 1);
    }

    #[tokio::test]
    async fn embeddings_one_item_per_input() {
        let up = upstream().await;
        let request = json!({"model": "text-embedding-3-small", "input": ["a b", "c", "d e f"]});
        let reply = post(&up, "/v1/embeddings", &request).await.json();
        assert_eq!(reply["object"], "list");
        assert_eq!(reply["model"], "text-embedding-3-small");
        assert_eq!(
            reply["usage"],
            json!({"prompt_tokens": 6, "total_tokens": 6})
        );
        let data = reply["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        for (i, item) in data.iter().enumerate() {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            let vector = item["embedding"].as_array().unwrap();
            assert_eq!(vector.len(), EMBEDDING_DIMENSIONS);
            assert!(vector.iter().all(|v| v.as_f64().unwrap().abs() <= 1.0));
        }
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);

        let single = post(&up, "/v1/embeddings", &json!({"model": "m", "input": "c"}))
            .await
            .json();
        assert_eq!(single["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            single["data"][0]["embedding"], data[1]["embedding"],
            "deterministic"
        );

        let tokens = post(
            &up,
            "/v1/embeddings",
            &json!({"model": "m", "input": [1, 2, 3]}),
        )
        .await
        .json();
        assert_eq!(tokens["data"].as_array().unwrap().len(), 1);

        let wide = post(
            &up,
            "/v1/embeddings",
            &json!({"model": "m", "input": "c", "dimensions": 16}),
        )
        .await
        .json();
        assert_eq!(wide["data"][0]["embedding"].as_array().unwrap().len(), 16);

        // The SDKs' default: base64 of little-endian f32s.
        let encoded = post(
            &up,
            "/v1/embeddings",
            &json!({"model": "m", "input": "c", "encoding_format": "base64"}),
        )
        .await
        .json();
        let floats: Vec<u8> = data[1]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| (v.as_f64().unwrap() as f32).to_le_bytes())
            .collect();
        assert_eq!(
            encoded["data"][0]["embedding"],
            json!(base64_encode(&floats))
        );
    }

    #[tokio::test]
    async fn legacy_completions_plain_and_streamed_agree() {
        let up = upstream().await;
        let request: Value = serde_json::from_slice(fixture!("completions_request.json")).unwrap();
        let plain = post(
            &up,
            "/v1/completions",
            &with(request.clone(), "stream", json!(false)),
        )
        .await;
        let body = plain.json();
        assert_eq!(body["object"], "text_completion");
        assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
        assert!(
            body["choices"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with(" Scripted completion of: ")
        );
        let streamed = post(&up, "/v1/completions", &streaming(request)).await;
        let chunks = streamed.chunks();
        assert!(chunks.len() >= 4);
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        let (from_plain, from_stream) = parsed(Operation::TextCompletion, &plain, &streamed);
        assert_eq!(from_stream.choices, from_plain.choices);
        assert_eq!(from_stream.total_tokens, from_plain.total_tokens);
    }

    #[tokio::test]
    async fn models_are_listed() {
        let up = upstream().await;
        let reply = send(&up, Method::GET, "/v1/models", "", false).await.json();
        assert_eq!(reply["object"], "list");
        let data = reply["data"].as_array().unwrap();
        assert!(
            data.iter()
                .any(|m| m["id"] == "gpt-4o-mini" && m["object"] == "model")
        );
        assert_eq!(up.base_url(), format!("http://{}/v1", up.addr()));
    }

    #[test]
    fn scripts_are_parsed_from_the_model() {
        assert_eq!(Script::for_model("gpt-4o"), Script::Normal);
        assert_eq!(
            Script::for_model("slow-3000"),
            Script::Slow(Duration::from_secs(3))
        );
        assert_eq!(Script::for_model("slow-abc"), Script::Normal);
        assert_eq!(Script::for_model("cut-after-3"), Script::CutAfter(3));
        assert_eq!(
            Script::for_model("drip-200"),
            Script::Drip(Duration::from_millis(200))
        );
        assert_eq!(Script::for_model("hang"), Script::Hang);
        assert_eq!(
            Script::for_model("stall-30000"),
            Script::Stall(Duration::from_secs(30))
        );
        assert_eq!(Script::for_model("reset-after-2"), Script::ResetAfter(2));
        assert_eq!(Script::for_model("malformed-sse"), Script::MalformedSse);
        assert_eq!(Script::for_model("sse-error"), Script::SseError);
        assert_eq!(Script::for_model("invalid-json"), Script::InvalidJson);
        assert_eq!(Script::for_model("gzip"), Script::Gzip);
        assert_eq!(
            Script::for_model("echo-key-stream"),
            Script::EchoKey(Echo::Stream)
        );
        assert_eq!(Script::for_model("big-10"), Script::Big(10));
        assert_eq!(Script::for_model("big-0"), Script::Normal);
        assert_eq!(Script::for_model("big-1000"), Script::Normal);
        assert_eq!(
            Script::for_model("done-pause-500"),
            Script::DonePause(Duration::from_millis(500))
        );
        assert_eq!(Script::for_model("flood-200"), Script::Flood(200));
        assert_eq!(Script::for_model("flood-2000"), Script::Normal);
        assert_eq!(
            Script::for_model("choices-300000"),
            Script::Choices(300_000)
        );
        assert_eq!(Script::for_model("choices-0"), Script::Normal);
        assert_eq!(
            Script::for_model("error-429"),
            Script::Error(StatusCode::TOO_MANY_REQUESTS)
        );
    }

    #[test]
    fn words_concatenate_back() {
        for text in ["", "a", " a  b\nc ", "héllo wörld"] {
            assert_eq!(words(text).concat(), text);
        }
        assert_eq!(words("a b  c"), ["a", " b", "  c"]);
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), output);
        }
    }
}
