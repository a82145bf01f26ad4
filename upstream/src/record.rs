//! What the upstream received and sent: every request as it arrived
//! ([`RecordedRequest`]), every answer as it left ([`RecordedResponse`], kept once its
//! body is over), and how many answers are still in progress.
//!
//! Tests assert on these records; `celgate upstream` and `celgate demo` keep only the
//! counts ([`Journal::new`] with `keep: false`), so their memory stays flat however
//! long they serve.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde_json::Value;

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
    /// The 1-based position of its request in
    /// [`ScriptedUpstream::requests`](crate::ScriptedUpstream::requests).
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

/// Every header of `headers` as `(name, value)`, values lossily UTF-8.
pub(crate) fn header_list(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The records of one upstream, shared by its connections and its handle.
#[derive(Debug)]
pub(crate) struct Journal {
    /// `None` when requests are only counted.
    requests: Option<Mutex<Vec<RecordedRequest>>>,
    /// Requests seen so far (recorded or not).
    seen: AtomicUsize,
    /// Answers as sent; `None` (nothing kept) when requests are only counted.
    responses: Option<Mutex<Vec<RecordedResponse>>>,
    /// Requests whose answer is not finished (being prepared, or its body not done).
    active: AtomicUsize,
}

impl Journal {
    /// A journal that keeps every request and answer, or (`keep: false`) only counts.
    pub(crate) fn new(keep: bool) -> Journal {
        Journal {
            requests: keep.then(|| Mutex::new(Vec::new())),
            seen: AtomicUsize::new(0),
            responses: keep.then(|| Mutex::new(Vec::new())),
            active: AtomicUsize::new(0),
        }
    }

    /// Records the request `make` describes (only built when requests are kept) and
    /// returns its 1-based position among all requests.
    pub(crate) fn record(&self, make: impl FnOnce() -> RecordedRequest) -> usize {
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

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.as_ref().map_or_else(Vec::new, |r| {
            r.lock().unwrap_or_else(PoisonError::into_inner).clone()
        })
    }

    pub(crate) fn request_count(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }

    pub(crate) fn responses(&self) -> Vec<RecordedResponse> {
        self.responses.as_ref().map_or_else(Vec::new, |r| {
            r.lock().unwrap_or_else(PoisonError::into_inner).clone()
        })
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

/// Counts one answer as active in its [`Journal`] for as long as it lives.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Journal>);

impl ActiveGuard {
    pub(crate) fn new(journal: &Arc<Journal>) -> ActiveGuard {
        journal.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(Arc::clone(journal))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The record of an answer being sent: made when its head is ready, fed each frame as
/// it leaves, and kept in the journal when the body is over ([`ResponseLog::finish`]).
#[derive(Debug)]
pub(crate) struct ResponseLog {
    journal: Arc<Journal>,
    seq: usize,
    status: u16,
    headers: Vec<(String, String)>,
    frames: Vec<Bytes>,
    end: ResponseEnd,
    /// Keeps the answer counted as active until the body is dropped.
    _active: ActiveGuard,
}

impl ResponseLog {
    /// The log of answer `seq` (`Dropped` until told how it ended).
    pub(crate) fn new(
        active: ActiveGuard,
        seq: usize,
        status: u16,
        headers: Vec<(String, String)>,
    ) -> ResponseLog {
        ResponseLog {
            journal: Arc::clone(&active.0),
            seq,
            status,
            headers,
            frames: Vec::new(),
            end: ResponseEnd::Dropped,
            _active: active,
        }
    }

    /// `frame` was handed to the connection (kept only when the journal keeps answers).
    pub(crate) fn sent(&mut self, frame: &Bytes) {
        if self.journal.responses.is_some() {
            self.frames.push(frame.clone());
        }
    }

    pub(crate) fn ended(&mut self, end: ResponseEnd) {
        self.end = end;
    }

    /// The body is over: keep the answer as sent.
    pub(crate) fn finish(self) {
        let Some(responses) = &self.journal.responses else {
            return;
        };
        let mut body = Vec::with_capacity(self.frames.iter().map(Bytes::len).sum());
        for frame in &self.frames {
            body.extend_from_slice(frame);
        }
        let record = RecordedResponse {
            seq: self.seq,
            status: self.status,
            headers: self.headers,
            body: Bytes::from(body),
            end: self.end,
        };
        responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}
