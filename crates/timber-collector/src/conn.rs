//! Connections: the accept loop and the life of each client connection, with
//! the limits that keep idle or slow clients from holding the collector.
//!
//! ```text
//! accept ─▶ slot (at most max_connections) ─▶ HTTP/1 connection ─▶ router
//!   │ EMFILE, or no slot: close the idle connection that waited longest
//!   ▼
//! idle (no request)        closed after idle_timeout
//! head (bytes, no request) closed read_timeout after its first byte   body: see server.rs
//! busy (request running)   never closed from here; finishes on shutdown
//! ```
//!
//! On shutdown the listener is closed first, so new connections are refused;
//! idle connections close at once and requests in flight are finished, for at
//! most [`SHUTDOWN_GRACE`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_service::Service;

/// How long requests still in flight get after a shutdown signal before the
/// server stops waiting for them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Pause after a failed accept, so that a persistent error (out of
/// descriptors) does not spin; short, as the cause is usually cured at once.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// The connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Longest from the first byte of a request to its complete head.
    pub read_timeout: Duration,
    /// Longest a connection waits for the first byte of its next request.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Busy,
}

/// What a connection is doing, and since when; shared by its task, its
/// reads and the router calls it makes.
#[derive(Debug)]
struct ConnState {
    phase: Mutex<(Phase, Instant)>,
    shed: Notify,
    /// Wakes the connection's task when the phase changes, so that the
    /// deadline it sleeps until is the new phase's: a head whose first byte
    /// came while the task slept towards the idle deadline was otherwise
    /// never cut off at the read timeout.
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConnState {
    fn new() -> Self {
        Self {
            phase: Mutex::new((Phase::Idle, Instant::now())),
            shed: Notify::new(),
            changed: Notify::new(),
        }
    }

    fn set(&self, phase: Phase) {
        *lock(&self.phase) = (phase, Instant::now());
        self.changed.notify_one();
    }

    fn bytes_arrived(&self) {
        let mut p = lock(&self.phase);
        if p.0 == Phase::Idle {
            *p = (Phase::Head, Instant::now());
            self.changed.notify_one();
        }
    }

    /// When this connection is to be closed if nothing changes.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *lock(&self.phase) {
            (Phase::Idle, since) => Some(since + limits.idle_timeout),
            (Phase::Head, since) => Some(since + limits.read_timeout),
            (Phase::Busy, _) => None,
        }
    }

    fn busy(&self) -> bool {
        lock(&self.phase).0 == Phase::Busy
    }
}

/// The connections open right now, to pick one to close when out of room.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
}

impl Registry {
    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        lock(&self.conns).insert(id, Arc::clone(&state));
        (id, state)
    }

    fn remove(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// Asks the connection that has waited longest without a request running
    /// to close; false if every connection is busy.
    fn shed_one(&self) -> bool {
        let conns = lock(&self.conns);
        let victim = conns
            .values()
            .filter_map(|c| {
                let (phase, since) = *lock(&c.phase);
                (phase != Phase::Busy).then_some((since, c))
            })
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, c)) => {
                c.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Accepts and serves connections until `shutdown` resolves, then lets the
/// requests in flight finish (for at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<bool> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                if crate::store::out_of_descriptors(&err) {
                    registry.shed_one();
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Full: make room by closing an idle connection (or wait for
                // a busy one to finish) rather than leaving the newcomer to
                // wait behind connections that do nothing.
                registry.shed_one();
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
                }
            }
        };
        tokio::spawn(connection(
            stream,
            app.clone(),
            Arc::clone(&registry),
            stop_rx.clone(),
            limits,
            slot,
        ));
    }
    // Refuse new connections from here on.
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: having them all back
    // means every request in flight was answered.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_ok();
    Ok(finished)
}

async fn connection(
    stream: TcpStream,
    app: Router,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (id, state) = registry.add();
    let io = TokioIo::new(Watched {
        inner: stream,
        state: Arc::clone(&state),
    });
    let calls = Arc::clone(&state);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        calls.set(Phase::Busy);
        let state = Arc::clone(&calls);
        let response = app.clone().call(request);
        async move {
            let response = response.await;
            state.set(Phase::Idle);
            response
        }
    });
    let conn = http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = state.deadline(&limits);
        tokio::select! {
            _ = conn.as_mut() => break,
            () = sleep_until(deadline) => {
                if state.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    break; // dropping the connection closes it
                }
            }
            () = state.shed.notified() => {
                if !state.busy() {
                    break;
                }
            }
            // A new phase: sleep until its deadline instead.
            () = state.changed.notified() => {}
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    // Closes at once if idle, else after the response.
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    registry.remove(id);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The TCP stream, noting when bytes of a new request start to arrive.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
