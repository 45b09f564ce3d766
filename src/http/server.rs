//! The listener: accepts connections and serves each over HTTP/1.1 (hyper) with what a daemon open to
//! a network needs and `axum::serve` lacks.
//!
//! - A connection that has not sent a whole request head within `http.header_timeout_secs` (10) of
//!   opening, or of the head's first byte, is closed; so is one idle between requests for
//!   `http.idle_timeout_secs` (60). A request body that sends nothing for `http.body_timeout_secs` is
//!   cut (a tower-http layer in [`super::app`]).
//! - At most `http.max_connections` are open. At the cap, a new connection closes the idle one that has
//!   waited longest, taking first those that never showed a valid token or asked for a health route:
//!   a flood of idle sockets cannot keep probes and callers with a token out. When every connection is
//!   busy, the new one is closed.
//! - On stop, no connection is accepted; each finishes the request in hand, and after
//!   `http.shutdown_grace_secs` the rest are dropped, so the daemon can flush the store and exit.

use super::metrics::Closed;
use super::AppState;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// The limits of [`serve`], from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header: Duration,
    pub idle: Duration,
    pub max_connections: usize,
    pub grace: Duration,
}

impl Limits {
    pub fn from_config(h: &crate::config::HttpConfig) -> Self {
        Self {
            header: Duration::from_secs(h.header_timeout_secs),
            idle: Duration::from_secs(h.idle_timeout_secs),
            max_connections: h.max_connections,
            grace: Duration::from_secs(h.shutdown_grace_secs),
        }
    }
}

/// What the listener knows of one open connection. Times are milliseconds since the listener started.
struct Conn {
    opened: u64,
    /// Request heads read, and responses whose body was sent (or dropped): equal when idle.
    requests: AtomicU64,
    responses: AtomicU64,
    /// When the last response ended.
    last_done: AtomicU64,
    /// When the first byte of the next request head came, while idle (0: none yet).
    head_started: AtomicU64,
    /// Sent a valid token or asked for a health route.
    trusted: AtomicBool,
    close: CancellationToken,
}

impl Conn {
    fn idle(&self) -> bool {
        self.requests.load(Relaxed) == self.responses.load(Relaxed)
    }

    /// When the connection is closed if nothing changes; `None` while a request is in hand.
    fn deadline(&self, limits: &Limits) -> Option<u64> {
        if !self.idle() {
            return None;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        Some(match self.head_started.load(Relaxed) {
            0 if self.requests.load(Relaxed) == 0 => self.opened + ms(limits.header),
            0 => self.last_done.load(Relaxed) + ms(limits.idle),
            started => started + ms(limits.header),
        })
    }
}

struct Listener {
    start: Instant,
    limits: Limits,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Listener {
    fn now(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).max(1)
    }

    /// Makes room for one more connection: `false` when every open one is busy.
    fn make_room(&self) -> bool {
        let conns = self.conns.lock().expect("connections");
        if conns.len() < self.limits.max_connections {
            return true;
        }
        let since = |c: &Conn| c.last_done.load(Relaxed).max(c.opened);
        let victim = conns
            .values()
            .filter(|c| c.idle() && !c.close.is_cancelled())
            .min_by_key(|c| (c.trusted.load(Relaxed), since(c)));
        match victim {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `state`'s routes on `listener` until `stop` ends, then as [`self`](self) says.
pub async fn serve(listener: TcpListener, state: AppState, limits: Limits, stop: impl Future<Output = ()>) {
    let router = super::app(state.clone());
    let shared = Arc::new(Listener {
        start: Instant::now(),
        limits,
        conns: Mutex::default(),
        next_id: AtomicU64::new(1),
    });
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close rather than spin.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        if !shared.make_room() {
            state.metrics.connection_closed(Closed::Refused);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Relaxed);
        let now = shared.now();
        let conn = Arc::new(Conn {
            opened: now,
            requests: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            last_done: AtomicU64::new(now),
            head_started: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
            close: shutdown.child_token(),
        });
        shared.conns.lock().expect("connections").insert(id, conn.clone());
        tasks.spawn(serve_one(
            stream,
            router.clone(),
            state.clone(),
            shared.clone(),
            conn,
            id,
            shutdown.clone(),
        ));
    }
    drop(listener);
    shutdown.cancel();
    while tasks.try_join_next().is_some() {}
    let open = tasks.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_secs = limits.grace.as_secs(),
            "Finishing the requests in hand."
        );
    }
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, all_done).await.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "Dropping connections still open after the shutdown grace period."
        );
        for _ in 0..tasks.len() {
            state.metrics.connection_closed(Closed::Shutdown);
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// One connection, from its first byte to its close.
async fn serve_one(
    stream: TcpStream,
    router: axum::Router,
    state: AppState,
    shared: Arc<Listener>,
    conn: Arc<Conn>,
    id: u64,
    shutdown: CancellationToken,
) {
    let metrics = state.metrics.clone();
    let io = TokioIo::new(Watched {
        inner: stream,
        conn: conn.clone(),
        shared: shared.clone(),
    });
    let service = {
        let conn = conn.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            conn.requests.fetch_add(1, Relaxed);
            conn.head_started.store(0, Relaxed);
            if !conn.trusted.load(Relaxed) && trusted(&state, &req) {
                conn.trusted.store(true, Relaxed);
            }
            let done = Done {
                conn: conn.clone(),
                shared: shared.clone(),
            };
            let mut router = router.clone();
            async move {
                let response = router.call(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _done: done }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The listener keeps its own head and idle timeouts (hyper's one timer cannot tell them apart).
    builder.timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(64 << 10);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    metrics.connections(1.0);
    let mut closing = false;
    loop {
        let wait = match conn.deadline(&shared.limits) {
            Some(at) => Duration::from_millis(at.saturating_sub(shared.now())),
            // Busy: look again later (the request's body has its own timeout).
            None => shared.limits.header.max(Duration::from_secs(1)),
        };
        tokio::select! {
            _ = &mut connection => break,
            _ = conn.close.cancelled(), if !closing => {
                // Made room for another, or stopping while idle: closed now.
                if conn.idle() {
                    if !shutdown.is_cancelled() {
                        metrics.connection_closed(Closed::Evicted);
                    }
                    break;
                }
                // Stopping: the request in hand finishes, then the connection closes.
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(wait) => {
                if conn.deadline(&shared.limits).is_some_and(|at| at <= shared.now()) {
                    let idle = conn.head_started.load(Relaxed) == 0 && conn.requests.load(Relaxed) > 0;
                    metrics.connection_closed(if idle { Closed::IdleTimeout } else { Closed::HeaderTimeout });
                    break;
                }
            }
        }
    }
    shared.conns.lock().expect("connections").remove(&id);
    metrics.connections(-1.0);
}

/// A request that makes its connection one to keep at the cap: a health route, or a valid token.
fn trusted(state: &AppState, req: &hyper::Request<hyper::body::Incoming>) -> bool {
    matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") || state.tokens.caller_of(req.headers()).is_ok()
}

/// Marks its response finished when dropped (hyper drops a body once it is sent, or the connection is).
struct Done {
    conn: Arc<Conn>,
    shared: Arc<Listener>,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.conn.last_done.store(self.shared.now(), Relaxed);
        self.conn.head_started.store(0, Relaxed);
        self.conn.responses.fetch_add(1, Relaxed);
    }
}

/// A response body that marks its connection idle again when it is done.
struct Tracked {
    body: Body,
    _done: Done,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when the first byte of a request head comes on an idle connection.
struct Watched {
    inner: TcpStream,
    conn: Arc<Conn>,
    shared: Arc<Listener>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.conn.idle() && self.conn.head_started.load(Relaxed) == 0 {
            self.conn.head_started.store(self.shared.now(), Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft limit of open files to the hard limit, and returns it: each connection takes one.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Ok(lim.rlim_cur)
}
