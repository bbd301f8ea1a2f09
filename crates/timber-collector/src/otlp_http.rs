//! `POST /v1/logs`: the OTLP/HTTP logs route. Authentication, idempotency
//! keys, encodings, size and memory limits are the other routes' own
//! ([`crate::server`]); the body is decoded and mapped in [`crate::otlp`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::otlp::{self, OtlpFormat};
use crate::server::{
    authorize, body_refusal, header_str, out_of_memory, receive, refuse, store_refusal, AppState,
    Received, Refusal,
};

/// `POST /v1/logs`: an OTLP export, stored one frame per record under the
/// source its resource's `service.name` names ([`crate::otlp`]). Answered
/// 200 with an empty `ExportLogsServiceResponse`, as OTLP clients expect.
/// The export is stored whole or not at all, whatever resources and
/// sources it spans. An idempotency key applies to each source of the
/// request: a replay stores nothing again in any of them.
pub(crate) async fn otlp_logs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    otlp_ingest(state, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn otlp_ingest(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let key = authorize(&state, &headers)?;
    let format = OtlpFormat::parse(header_str(&headers, header::CONTENT_TYPE))
        .map_err(|e| body_refusal(&e))?;
    let Received {
        raw,
        encoding,
        key,
        reading,
    } = receive(&state, &headers, key, body).await?;
    let max_body = state.max_body;
    let estimate = format.decode_estimate(encoding, raw.len() as u64, max_body);
    let mut decoding = state
        .budget
        .reserve_decode_bytes(estimate)
        .await
        .ok_or_else(out_of_memory)?;
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || {
        let decoded = otlp::decode_within(format, encoding, &raw, max_body, &mut decoding)
            .map_err(|e| body_refusal(&e))?;
        drop(raw);
        // The whole export or nothing: a client resends a refused one whole.
        store
            .append_whole(&decoded, key.as_deref())
            .map_err(|e| store_refusal(&e))?;
        Ok::<_, Refusal>(())
    })
    .await
    .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "storing frames failed"))??;
    drop(reading);
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        format.success_body(),
    )
        .into_response())
}
