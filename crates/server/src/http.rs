//! HTTP guards and wire helpers every front door shares:
//!
//! - [`guard`]: the layer of each access class (`router::Access`): before
//!   any body is read, the token is checked on the headers where the class
//!   needs it (the only place the token is checked — handlers never see a
//!   request without it) and a `Content-Length` over `--max-body-bytes` is
//!   a 413; [`uri_guard`]: a URI over [`MAX_URI_BYTES`] is a 414. (Bodies
//!   are then read by the `Bytes` extractor under `DefaultBodyLimit::max`,
//!   which stops at the limit: a 413 too.)
//! - [`require_json`]: the JSON endpoints read only bodies declared JSON;
//!   [`parse_body`]: a JSON body, or a 400 naming where it is wrong.
//! - [`json_errors`]: every error response that is not already JSON (axum's
//!   404, 405, rejections, the 408 of the request timeout, the 413 of the
//!   body limit) becomes the `{error, message, details}` body.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::access::Access;
use crate::error::AppError;
use crate::state::AppState;

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Reject a request without the sidecar's bearer token. The scheme is
/// case-insensitive (RFC 7235 section 2.1); the token is compared in
/// constant time (`subtle`).
pub fn require_token(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    use subtle::ConstantTimeEq;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(t) if bool::from(t.as_bytes().ct_eq(state.token.as_bytes())) => Ok(()),
        _ => Err(AppError::unauthorized()),
    }
}

/// Refuse a body that is not declared JSON: a 415. Applied to the JSON
/// endpoints' routers. A web page can send a cross-site form or
/// `text/plain` POST without asking first, but not an `application/json`
/// one (that needs a CORS preflight, which this server never grants), so
/// no page a user visits can drive these endpoints. A request without a
/// body passes (it carries nothing to parse).
pub async fn require_json(req: Request, next: Next) -> Response {
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        && (req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"));
    if has_body && !declares_json(req.headers()) {
        return AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "this endpoint reads JSON: send the body with `Content-Type: application/json` \
             (curl: --json)",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether the request's `Content-Type` is `application/json` or
/// `application/<name>+json` (parameters such as `charset` aside).
fn declares_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The 413 of a body over `limit` bytes (`--max-body-bytes`), with the
/// limit in its details.
pub fn body_too_large(limit: usize) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than the limit of {limit} bytes (--max-body-bytes)"),
    )
    .with_details(json!({ "limit": limit }))
}

/// A request target over [`MAX_URI_BYTES`] is a 414, whatever the route.
pub async fn uri_guard(req: Request, next: Next) -> Result<Response, AppError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(AppError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target has {uri_len} bytes; at most {MAX_URI_BYTES}"),
        ));
    }
    Ok(next.run(req).await)
}

/// The checks of a route's access class on the headers, before any body
/// byte is read: the token where the class needs it, and a
/// `Content-Length` over `--max-body-bytes` (a 413) except at the gateway's
/// doors, which never read a body (the `Content-Length` a proxy copies from
/// the client's request is not ours to refuse).
pub async fn guard(
    State((state, access)): State<(Arc<AppState>, Access)>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let token = match access {
        Access::Public | Access::Gateway => false,
        Access::Query => state.protect_queries,
        Access::Metrics => state.protect_metrics,
        Access::Private | Access::Write => true,
    };
    if token {
        require_token(&state, req.headers())?;
    }
    if access != Access::Gateway
        && content_length(req.headers()).is_some_and(|n| n > state.max_body_bytes as u64)
    {
        return Err(body_too_large(state.max_body_bytes));
    }
    Ok(next.run(req).await)
}

/// The error code of a status without one of ours.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Give every non-JSON error response the `{error, message, details}` body.
pub async fn json_errors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => body_too_large(state.max_body_bytes).message,
        StatusCode::NOT_FOUND => format!("no endpoint {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not accept {method}"),
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request took longer than the request timeout of {} ms",
            state.request_timeout.as_millis()
        ),
        _ if !text.is_empty() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let code = code_of(status);
    tracing::debug!(%status, code, %message, %method, %path, "request refused");
    let details = match status {
        StatusCode::PAYLOAD_TOO_LARGE => json!({ "limit": state.max_body_bytes }),
        _ => serde_json::Value::Null,
    };
    let body = json!({"error": code, "message": message, "details": details}).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body)).into_response()
}

/// Parse a JSON body (already read under the size limit; too large is a
/// 413); every other failure is a 400 naming why.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: &axum::body::Bytes,
) -> Result<T, AppError> {
    if body.len() > state.max_body_bytes {
        return Err(body_too_large(state.max_body_bytes));
    }
    serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "invalid JSON body at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}
