//! The HTTP side: routes, authentication, body limits, the answers, the
//! once-a-second activity line, and the signals (SIGINT/SIGTERM stop,
//! SIGHUP reopens the files). Connections themselves are [`crate::conn`].
//!
//! ```text
//! POST /sources/{source_id}/frames   Timber API
//! POST /                             Better Stack form: stored under --root-source
//! POST /v1/logs                      OTLP/HTTP logs: stored under each service.name, answered 200
//! ```
//!
//! A request is checked in order: key (401), source id and idempotency key
//! (400), content type and encoding (415), size on the wire (413); its
//! body must then arrive within the read timeout (408), reserving its share
//! of the memory budget as it arrives (503 beyond [`BUDGET_WAIT`]); a replayed
//! idempotency key is answered 202 at once; decoding and the write run on
//! the blocking pool, and only a stored batch is answered with 202.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;

use crate::body::{self, BodyError, Encoding, Format};
use crate::budget::{Budget, Reservation, BUDGET_WAIT, START_BYTES};
use crate::conn::{self, Limits};
use crate::recent::{valid_key, MAX_KEY_LEN};
use crate::store::{valid_source_id, Appended, Store, StoreError};

/// The header that names a batch, the same on every retry of it.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECS: u64 = 1;

/// What every request handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The per-source writer.
    pub store: Arc<Store>,
    /// The key requests must present, if any.
    pub api_key: Option<String>,
    /// Largest decompressed body, in bytes.
    pub max_body: u64,
    /// Source of the frames sent to `POST /`.
    pub root_source: String,
    /// Longest a request body may take to arrive.
    pub read_timeout: Duration,
    /// Memory for the bodies being received and decoded.
    pub budget: Budget,
}

/// The routes of the collector.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/sources/{source_id}/frames", post(timber_frames))
        .route("/", post(better_stack_frames))
        .route("/v1/logs", post(crate::otlp_http::otlp_logs))
        .with_state(state)
}

async fn timber_frames(
    State(state): State<Arc<AppState>>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    ingest(state, Some(source_id), headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn better_stack_frames(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    ingest(state, None, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// A refused request: a status and a one-line reason.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    /// Whether the client should try again later (503, with Retry-After).
    fn is_retryable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut text = self.reason.replace(['\r', '\n'], " ");
        text.push('\n');
        let retry = self.is_retryable();
        // A body refused before it was read may still be on its way: closing
        // the connection is the only way to be rid of it.
        let unread = matches!(
            self.status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE
        );
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            text,
        )
            .into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if unread {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub(crate) fn refuse(status: StatusCode, reason: &str) -> Refusal {
    Refusal {
        status,
        reason: reason.to_owned(),
    }
}

pub(crate) fn body_refusal(err: &BodyError) -> Refusal {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    refuse(status, &err.to_string())
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    // A header that is not visible ASCII reads as a value nobody supports.
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares in time that depends only on the lengths, not on where the
/// first difference is.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The checks every route shares, up to a body in memory: key (401),
/// idempotency key (400), encoding (415), size (413), memory (503), time (408).
pub(crate) struct Received {
    pub(crate) raw: Vec<u8>,
    pub(crate) encoding: Encoding,
    pub(crate) key: Option<String>,
    /// The read pool's share, held until the request is answered.
    pub(crate) reading: Reservation,
}

pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let token = bearer(headers);
    if let Some(key) = &state.api_key {
        if !token.is_some_and(|t| same_secret(t, key)) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send Authorization: Bearer <key>",
            ));
        }
    }
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => match v.to_str().ok().filter(|k| valid_key(k)) {
            Some(k) => Ok(Some(k.to_owned())),
            None => Err(refuse(
                StatusCode::BAD_REQUEST,
                &format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )),
        },
    }
}

pub(crate) async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    key: Option<String>,
    body: Body,
) -> Result<Received, Refusal> {
    let encoding = Encoding::parse(header_str(headers, header::CONTENT_ENCODING))
        .map_err(|e| body_refusal(&e))?;
    let max_body = state.max_body;
    let wire_limit = encoding.wire_limit(max_body);
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > wire_limit) {
        return Err(body_refusal(&BodyError::TooLarge(max_body)));
    }
    // The head is complete: the body has its own read timeout from here,
    // waits for memory included, so that a slow body is cut off in time.
    let deadline = tokio::time::Instant::now() + state.read_timeout;
    let expected = declared.unwrap_or(wire_limit);
    let read = async {
        let mut reading = state
            .budget
            .reserve_start(expected)
            .await
            .ok_or(ReadError::OutOfMemory)?;
        let raw = read_body(body, wire_limit, declared, &state.budget, &mut reading).await?;
        Ok((raw, reading))
    };
    let (raw, reading) = tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| {
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                &format!("body not received within {:?}", state.read_timeout),
            )
        })?
        .map_err(|err| match err {
            ReadError::TooLarge => body_refusal(&BodyError::TooLarge(max_body)),
            ReadError::OutOfMemory => out_of_memory(),
            ReadError::Broken(reason) => refuse(StatusCode::BAD_REQUEST, &reason),
        })?;
    Ok(Received {
        raw,
        encoding,
        key,
        reading,
    })
}

async fn ingest(
    state: Arc<AppState>,
    source_id: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let key = authorize(&state, &headers)?;
    // The root form never names a file after the token: it is a secret.
    let source = source_id.unwrap_or_else(|| state.root_source.clone());
    if !valid_source_id(&source) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "source id must be 1 to 200 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    let format =
        Format::parse(header_str(&headers, header::CONTENT_TYPE)).map_err(|e| body_refusal(&e))?;
    let Received {
        raw,
        encoding,
        key,
        reading,
    } = receive(&state, &headers, key, body).await?;
    if let Some(frames) = key
        .as_deref()
        .and_then(|k| state.store.replayed(&source, k))
    {
        return Ok(accepted(frames, true));
    }
    let max_body = state.max_body;
    let estimate = format.decode_estimate(encoding, raw.len() as u64, max_body);
    let mut decoding = state
        .budget
        .reserve_decode_bytes(estimate)
        .await
        .ok_or_else(out_of_memory)?;

    let store = Arc::clone(&state.store);
    let appended = tokio::task::spawn_blocking(move || {
        let batch = body::decode_within(format, encoding, &raw, max_body, &mut decoding)
            .map_err(|e| body_refusal(&e))?;
        drop(raw);
        let appended = append(&store, &source, &batch, key.as_deref())?;
        Ok::<_, Refusal>(match appended {
            Appended::Written => (batch.frames, false),
            Appended::Replay(frames) => (frames, true),
        })
    })
    .await
    .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "storing frames failed"))??;
    drop(reading);
    Ok(accepted(appended.0, appended.1))
}

pub(crate) fn append(
    store: &Store,
    source: &str,
    batch: &body::Batch,
    key: Option<&str>,
) -> Result<Appended, Refusal> {
    store
        .append(source, &batch.lines, batch.frames, key)
        .map_err(|e| store_refusal(&e))
}

/// The answer to frames the store did not take.
pub(crate) fn store_refusal(e: &StoreError) -> Refusal {
    match e {
        StoreError::OutOfFiles(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot store frames now: {e}"),
        ),
        StoreError::Io(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot store frames: {e}"),
        ),
        StoreError::Forward(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot take frames now ({e}): try again shortly"),
        ),
    }
}

pub(crate) fn out_of_memory() -> Refusal {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("too many bodies in memory for {BUDGET_WAIT:?}: try again shortly"),
    )
}

/// The 202 answer; `replayed` when the idempotency key was stored before.
fn accepted(frames: usize, replayed: bool) -> Response {
    let text = if replayed {
        format!("{{\"accepted\":{frames},\"replayed\":true}}\n")
    } else {
        format!("{{\"accepted\":{frames}}}\n")
    };
    (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

enum ReadError {
    TooLarge,
    OutOfMemory,
    Broken(String),
}

/// Reads the body, stopping as soon as it passes `limit` bytes. `reading`
/// holds the body's first bytes ([`START_BYTES`]); once more than that has
/// arrived, the rest of its `declared` length (else of the limit) is
/// reserved in one go, so a body holds memory by what it sent, not by what
/// it declares.
async fn read_body(
    mut body: Body,
    limit: u64,
    declared: Option<u64>,
    budget: &Budget,
    reading: &mut Reservation,
) -> Result<Vec<u8>, ReadError> {
    let expected = declared.unwrap_or(limit);
    let start = usize::try_from(expected.min(START_BYTES)).unwrap_or(0);
    let mut buf = Vec::with_capacity(start);
    let mut reserved = expected.min(START_BYTES);
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| ReadError::Broken(format!("cannot read body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let len = (buf.len() + data.len()) as u64;
            if len > limit {
                return Err(ReadError::TooLarge);
            }
            if len > reserved {
                // Past the first bytes (or past a length declared too
                // short): the rest of the body, once.
                let rest = expected.max(len).min(limit) - reserved;
                reading.join(
                    budget
                        .reserve_read(rest)
                        .await
                        .ok_or(ReadError::OutOfMemory)?,
                );
                reserved += rest;
                if declared.is_some() {
                    buf.reserve_exact(usize::try_from(reserved).unwrap_or(0) - buf.len());
                }
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Resolves when SIGINT or SIGTERM arrives. The handlers are installed by
/// this call, before the returned future is first polled.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Reopens the store's files on every SIGHUP, from a task started here; the
/// handler is installed before this returns, so a SIGHUP from then on never
/// kills the process. Must be called within the runtime.
pub fn reopen_on_hangup(store: Arc<Store>, quiet: bool) -> io::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        Ok(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                store.reopen();
                if !quiet {
                    eprintln!("timber collect: SIGHUP: reopened the files");
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (store, quiet);
        Ok(tokio::spawn(async {}))
    }
}

/// Serves until `shutdown` resolves, then stops accepting and lets requests in
/// flight finish (for at most [`conn::SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    quiet: bool,
) -> io::Result<()> {
    let progress = (!quiet).then(|| tokio::spawn(report_activity(Arc::clone(&state.store))));
    let finished = conn::serve(listener, router(state), limits, shutdown).await;
    if !quiet && matches!(finished, Ok(false)) {
        eprintln!(
            "timber collect: requests still open after {:?}, stopping anyway",
            conn::SHUTDOWN_GRACE
        );
    }
    if let Some(task) = progress {
        task.abort();
    }
    finished.map(|_| ())
}

/// Prints one line per second in which frames arrived.
async fn report_activity(store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = store.frames();
    loop {
        tick.tick().await;
        let now = store.frames();
        if now > last {
            let forwarded = store.forwarder().map_or_else(String::new, |f| {
                let s = f.stats();
                format!(
                    ", {} in ClickHouse, {} spooled, {} dropped",
                    s.sent,
                    s.spooled,
                    s.dropped()
                )
            });
            eprintln!(
                "timber collect: {} records/s, {} sources, {now} records in all{forwarded}",
                now - last,
                store.sources()
            );
        }
        last = now;
    }
}

/// Where the server listens, as a URL.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn secrets() {
        assert!(same_secret("key", "key"));
        assert!(!same_secret("key", "kez"));
        assert!(!same_secret("key", "key2"));
    }
}
