//! `Idempotency-Key` on the write endpoints: the key's answer (status and
//! body) is stored in the write's own transaction, so a retry after a lost
//! answer gets the first answer and applies nothing again; the same key with
//! another request (method, route or body) is a 422 naming the header. Keys
//! are remembered for [`partnergate_core::store::IDEMPOTENCY_TTL_SECS`] (24 h).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::state::AppState;
use partnergate_core::store::Remembered;
use partnergate_orchestrator::{Idempotency, OrchestratorError};

/// The header's name (lower case, as `HeaderMap` looks it up).
pub const HEADER: &str = "idempotency-key";

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// The request's key, if any, with the fingerprint of `route` and `body`
/// and the `status` a success answers. A malformed key is a 400.
pub fn from_headers(
    headers: &HeaderMap,
    route: &str,
    body: &Bytes,
    status: StatusCode,
) -> Result<Option<Idempotency>, AppError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = v.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(AppError::bad_request(format!(
            "header `Idempotency-Key`: expected 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
        .with_details(serde_json::json!({"header": "Idempotency-Key"})));
    }
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update(b"\n");
    h.update(body);
    Ok(Some(Idempotency {
        key: key.to_string(),
        fingerprint: hex::encode(h.finalize()),
        status: status.as_u16(),
    }))
}

/// The first answer of a remembered key, as it was given.
pub fn replay(r: Remembered) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], r.body).into_response();
    resp.headers_mut().insert(
        "idempotent-replayed",
        axum::http::HeaderValue::from_static("true"),
    );
    resp
}

/// Before running a write: the first answer if the key is remembered (or a
/// 422 if it was used for another request); `None` to go on.
pub async fn recalled(
    state: &Arc<AppState>,
    key: &Idempotency,
) -> Result<Option<Response>, AppError> {
    let directory = state.authz.directory().clone();
    let k = key.key.clone();
    let found = tokio::task::spawn_blocking(move || directory.backend().recall(&k))
        .await
        .map_err(|e| AppError::unavailable(e.to_string()))?
        .map_err(|e| AppError::unavailable(format!("the store could not be read: {e}")))?;
    found.map(|r| answer(key, r)).transpose()
}

/// The answer to a request whose key is remembered: the first answer if it
/// is the same request, else a 422 naming the header.
pub fn answer(key: &Idempotency, r: Remembered) -> Result<Response, AppError> {
    match key.replay(r) {
        OrchestratorError::Replayed(r) => Ok(replay(r)),
        e => Err(AppError::from(e)),
    }
}
