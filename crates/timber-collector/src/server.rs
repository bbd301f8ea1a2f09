//! The HTTP side: routes, authentication, body limits, the answers, the
//! once-a-second activity line, and graceful shutdown on SIGINT/SIGTERM.
//!
//! ```text
//! POST /sources/{source_id}/frames   Timber API
//! POST /                             Better Stack form: source named after the bearer token
//! ```
//!
//! A request is checked in order: key (401), source id (400), content type and
//! encoding (415), size on the wire (413); then decoding and the write run on
//! the blocking pool, and only a stored batch is answered with 202.

use std::future::{poll_fn, Future, IntoFuture};
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
use tokio::sync::Notify;

use crate::body::{self, BodyError, Encoding, Format};
use crate::store::{valid_source_id, Store};

/// How long requests still in flight get after a shutdown signal before the
/// server stops waiting for them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Source of requests to `POST /` that carry no bearer token.
pub const DEFAULT_SOURCE: &str = "default";

/// What every request handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The per-source writer.
    pub store: Arc<Store>,
    /// The key requests must present, if any.
    pub api_key: Option<String>,
    /// Largest decompressed body, in bytes.
    pub max_body: u64,
}

/// The routes of the collector.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/sources/{source_id}/frames", post(timber_frames))
        .route("/", post(better_stack_frames))
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
struct Refusal {
    status: StatusCode,
    reason: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut text = self.reason.replace(['\r', '\n'], " ");
        text.push('\n');
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            text,
        )
            .into_response()
    }
}

fn refuse(status: StatusCode, reason: &str) -> Refusal {
    Refusal {
        status,
        reason: reason.to_owned(),
    }
}

fn body_refusal(err: &BodyError) -> Refusal {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    refuse(status, &err.to_string())
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
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

async fn ingest(
    state: Arc<AppState>,
    source_id: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let token = bearer(&headers);
    if let Some(key) = &state.api_key {
        if !token.is_some_and(|t| same_secret(t, key)) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send Authorization: Bearer <key>",
            ));
        }
    }
    let source = source_id.unwrap_or_else(|| token.unwrap_or(DEFAULT_SOURCE).to_owned());
    if !valid_source_id(&source) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "source id must be 1 to 200 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    let format =
        Format::parse(header_str(&headers, header::CONTENT_TYPE)).map_err(|e| body_refusal(&e))?;
    let encoding = Encoding::parse(header_str(&headers, header::CONTENT_ENCODING))
        .map_err(|e| body_refusal(&e))?;
    let max_body = state.max_body;
    let raw = read_body(body, encoding.wire_limit(max_body))
        .await
        .map_err(|err| match err {
            ReadError::TooLarge => body_refusal(&BodyError::TooLarge(max_body)),
            ReadError::Broken(reason) => refuse(StatusCode::BAD_REQUEST, &reason),
        })?;

    let store = Arc::clone(&state.store);
    let stored = tokio::task::spawn_blocking(move || {
        let batch = body::decode(format, encoding, &raw, max_body).map_err(|e| body_refusal(&e))?;
        drop(raw);
        store
            .append(&source, &batch.lines, batch.frames)
            .map_err(|e| {
                refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot store frames: {e}"),
                )
            })?;
        Ok::<usize, Refusal>(batch.frames)
    })
    .await
    .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "storing frames failed"))??;

    Ok((
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        format!("{{\"accepted\":{stored}}}\n"),
    )
        .into_response())
}

enum ReadError {
    TooLarge,
    Broken(String),
}

/// Reads the body, stopping as soon as it passes `limit` bytes.
async fn read_body(mut body: Body, limit: u64) -> Result<Vec<u8>, ReadError> {
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let capacity = declared.unwrap_or(0).min(limit);
    let mut buf = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| ReadError::Broken(format!("cannot read body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(ReadError::TooLarge);
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

/// Serves until `shutdown` resolves, then stops accepting and lets requests in
/// flight finish (for at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    quiet: bool,
) -> io::Result<()> {
    let stopping = Arc::new(Notify::new());
    let stopped = Arc::clone(&stopping);
    let progress = (!quiet).then(|| tokio::spawn(report_activity(Arc::clone(&state.store))));
    let app = router(state);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopped.notify_one();
        })
        .into_future();
    let result = tokio::select! {
        result = server => result,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            if !quiet {
                eprintln!("timber collect: requests still open after {SHUTDOWN_GRACE:?}, stopping anyway");
            }
            Ok(())
        }
    };
    if let Some(task) = progress {
        task.abort();
    }
    result
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
            eprintln!(
                "timber collect: {} records/s, {} sources, {now} records in all",
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
