//! The running upstream: [`ScriptedUpstream`] binds a port, accepts connections and
//! serves each one (HTTP/1.1 or h2c) on the tokio runtime that started it, until the
//! handle is dropped. Each request goes to [`crate::route::answer`]; its answer's body
//! gets the bookkeeping (counted as active, recorded when over) and, for
//! `reset-after-*`, the means to reset its connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::body::{End, ScriptedBody};
use crate::record::{
    ActiveGuard, Journal, RecordedRequest, RecordedResponse, ResponseLog, header_list,
};
use crate::route::State;
use crate::store::ResponseStore;

/// State shared by the accept loop, every connection and the handle.
#[derive(Debug)]
struct Shared {
    journal: Arc<Journal>,
    /// Flipped to `true` when the upstream is dropped; `hang` requests wait for it.
    shutdown: watch::Sender<bool>,
    /// The Responses answers remembered for `GET /v1/responses/{id}`.
    store: ResponseStore,
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
            journal: Arc::new(Journal::new(record)),
            shutdown,
            store: ResponseStore::default(),
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
        self.shared.journal.requests()
    }

    /// How many requests arrived so far (recorded or not).
    pub fn request_count(&self) -> usize {
        self.shared.journal.request_count()
    }

    /// Every answer whose body is over (ended, failed, reset or dropped), in the order
    /// they ended.
    pub fn responses(&self) -> Vec<RecordedResponse> {
        self.shared.journal.responses()
    }

    /// Answers still in progress: requests being answered plus bodies not over yet.
    pub fn active_responses(&self) -> usize {
        self.shared.journal.active()
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
    let active = ActiveGuard::new(&shared.journal);
    let state = State {
        journal: &shared.journal,
        shutdown: &shared.shutdown,
        store: &shared.store,
    };
    let (seq, mut response) = crate::route::answer(state, request).await;
    let status = response.status().as_u16();
    let headers = header_list(response.headers());
    let body = response.body_mut();
    if body.end == End::Reset && reset.is_none() {
        // No way to reset here: a cut is the closest.
        body.end = End::Fail;
    }
    body.reset = reset;
    body.log = Some(ResponseLog::new(active, seq, status, headers));
    Ok(response)
}
