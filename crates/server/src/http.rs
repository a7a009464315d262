//! Router-wide HTTP guards (issue #12):
//!
//! - [`guard`]: before any body is read, the token is checked on the headers
//!   for every endpoint that needs it ([`needs_token`]; the only place the
//!   token is checked — handlers never see a request without it), a `Content-Length` over
//!   `--max-body-bytes` is a 413, and a URI over [`MAX_URI_BYTES`] is a 414.
//!   (Bodies are then read by the `Bytes` extractor under
//!   `DefaultBodyLimit::max`, which stops at the limit: a 413 too.)
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

use super::error::AppError;
use super::AppState;

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

/// Whether `method path` needs the bearer token.
pub fn needs_token(state: &AppState, method: &Method, path: &str) -> bool {
    match path {
        "/healthz" | "/readyz" | "/openapi.json" | "/.well-known/authzen-configuration" => false,
        "/metrics" => state.protect_metrics,
        "/v1/is_authorized"
        | "/v1/is_authorized/batch"
        | "/access/v1/evaluation"
        | "/access/v1/evaluations" => state.protect_queries,
        // Gateway mode: the `Authorization` header is the end user's (for the
        // routes file), never the sidecar's token; any method is a question.
        _ if super::gateway::is_gateway_path(path) => false,
        _ if crate::search::is_search_path(path) => state.protect_queries,
        // The console's page shells and assets hold no data; its decision
        // (Try) is a query; its fragments are reads (below); running tests
        // or proofs is a POST (a write: the token).
        _ if crate::console::is_shell(path)
            && (method == Method::GET || method == Method::HEAD) =>
        {
            false
        }
        _ if crate::console::is_query(path) => state.protect_queries,
        // What a customer's partners did: decisions and changes, always behind the token.
        _ if path.ends_with("/partner-activity") => true,
        // A chain check reads the whole log: a costly scan, always behind the token.
        "/console/f/decisions/verify" => true,
        _ if method == Method::GET || method == Method::HEAD => state.protect_queries,
        // Every other method is a write (or unknown): fail closed.
        _ => true,
    }
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

/// Token, `Content-Length` and URI checks on the headers, before the body.
pub async fn guard(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(AppError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target has {uri_len} bytes; at most {MAX_URI_BYTES}"),
        ));
    }
    if needs_token(&state, req.method(), req.uri().path()) {
        require_token(&state, req.headers())?;
    }
    // A gateway check never reads a body: the `Content-Length` a proxy copies
    // from the client's request (Envoy's HTTP mode does) is not ours to refuse.
    let gateway = super::gateway::is_gateway_path(req.uri().path());
    if !gateway && content_length(req.headers()).is_some_and(|n| n > state.max_body_bytes as u64) {
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
