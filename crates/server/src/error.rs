//! The sidecar's one error type and its stable JSON body
//! `{error: <code>, message, details}`. Internals go to the log, not to the
//! client; no error on the decision path becomes a 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An HTTP-facing error.
#[derive(Debug)]
pub struct AppError {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// The stable machine-readable code, the body's `error`.
    pub code: &'static str,
    /// A sentence for a person: what is wrong and how to fix it.
    pub message: String,
    /// Machine-readable specifics (a field, a limit); `null` when none.
    pub details: serde_json::Value,
    /// Already logged where it was decided (a refusal under
    /// `--audit-required`, with its decision id): answered without a warning.
    pub logged: bool,
}

impl AppError {
    /// An error with no details, not yet logged.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
            logged: false,
        }
    }

    /// A 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The same error with `details` in its body.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// A 401: the bearer token is missing or wrong.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <token>` with the sidecar's token",
        )
    }

    /// A 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A 503 `unavailable`: the store (or a worker thread) failed; the
    /// request may be retried.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// `--audit-required`: the decision's record could not be made durable,
    /// so the decision is not given (a deny to the caller).
    pub fn audit_unavailable(why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            format!("the decision is refused because its decision-log record could not be made durable (--audit-required): {why}"),
        )
        .logged()
    }

    /// Mark as already logged where it was decided (see [`AppError::logged`]).
    pub fn logged(mut self) -> Self {
        self.logged = true;
        self
    }
}

impl From<partnergate_policy::engine::RequestError> for AppError {
    fn from(e: partnergate_policy::engine::RequestError) -> Self {
        let details = match &e {
            partnergate_policy::engine::RequestError::Field { field, .. } => {
                json!({ "field": field })
            }
            _ => serde_json::Value::Null,
        };
        AppError::bad_request(e.to_string()).with_details(details)
    }
}

impl From<partnergate_core::directory::DirectoryError> for AppError {
    fn from(e: partnergate_core::directory::DirectoryError) -> Self {
        if e.is_bad_input() {
            AppError::bad_request(e.to_string())
        } else if matches!(e, partnergate_core::directory::DirectoryError::TimedOut) {
            AppError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                e.to_string(),
            )
        } else {
            tracing::error!(error = %e, "store write failed");
            AppError::unavailable(format!("the store could not take the write: {e}"))
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // A refusal under --audit-required is logged where it is decided
        // (with the decision id); the writer logs the log's state changes.
        if self.status.is_server_error() && !self.logged {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        } else {
            tracing::debug!(code = self.code, message = %self.message, "request refused");
        }
        let body = json!({"error": self.code, "message": self.message, "details": self.details});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
