//! The router: every route in its access class, each class with its
//! layers; and the layers every request passes (size and URI guards, JSON
//! errors, request ids and their log span, the console's security headers).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use partnergate_core::limits;

use crate::access::Access;
use crate::state::AppState;
use crate::{api, authzen, console, error, events, gateway, http, openapi, orchestrator, search};

/// The router, separate from sockets so tests can drive it directly.
pub fn app(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let max_body = state.max_body_bytes;
    let mut doors = api::routes()
        .merge(authzen::routes())
        .merge(orchestrator::routes())
        .merge(events::routes())
        .merge(gateway::routes())
        .merge(search::routes())
        .merge(openapi::routes());
    if state.console.is_some() {
        doors = doors.merge(console::routes());
    }
    let mut router = Router::new();
    for (access, routes) in doors.into_classes() {
        router = router.merge(layered(routes, access, &state));
    }
    router
        .with_state(state.clone())
        // The `Bytes` extractor stops reading at the limit (a 413); a
        // write's body is read (within the limit) by its class's layer;
        // both only after the token and `Content-Length` were checked on
        // the headers, before any body byte is read.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(http::uri_guard))
        .layer(axum::middleware::from_fn_with_state(
            state,
            http::json_errors,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn(console::headers))
}

/// The log span of one request: every line logged while it is answered
/// names its request id (the caller's `X-Request-ID`, else the one given
/// it), its method and path, and the decision's id once there is one. Both
/// texts are cut at the limits a question holds them to (a longer one is
/// refused, and the refusal logged under this span).
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let id = id.get(..limits::MAX_REQUEST_ID_BYTES).unwrap_or(id);
    let path = req.uri().path();
    let path = path.get(..limits::MAX_PATH_BYTES).unwrap_or(path);
    tracing::info_span!("request", request_id = id, method = %req.method(),
        path = path, decision_id = tracing::field::Empty)
}

/// `routes` with the layers of `access`: the headers' checks (token,
/// `Content-Length`) outermost, then the class's timeout (which, for a
/// write, reads the body).
fn layered(
    routes: Router<Arc<AppState>>,
    access: Access,
    state: &Arc<AppState>,
) -> Router<Arc<AppState>> {
    let timeout = state.request_timeout;
    let max_body = state.max_body_bytes;
    let timed = if access == Access::Write {
        routes.route_layer(axum::middleware::from_fn_with_state(
            (timeout, max_body),
            write_timeout,
        ))
    } else {
        routes.route_layer(axum::middleware::from_fn_with_state(
            timeout,
            request_timeout,
        ))
    };
    timed.route_layer(axum::middleware::from_fn_with_state(
        (state.clone(), access),
        http::guard,
    ))
}

fn timed_out(what: &str, timeout: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    error::AppError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "{what} took longer than the request timeout ({} ms)",
            timeout.as_millis()
        ),
    )
    .into_response()
}

/// `--request-timeout-ms` of a decision or a read: a 408 when it takes
/// longer.
async fn request_timeout(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => timed_out("the request", timeout),
    }
}

/// `--request-timeout-ms` of a write: only while its body is read — once
/// read, the write handler owns the deadline: its transaction stops before
/// writing anything if the deadline has passed when it begins (408), and
/// otherwise runs to completion and answers its outcome. So a 408 never
/// follows a commit.
async fn write_timeout(
    axum::extract::State((timeout, max_body)): axum::extract::State<(Duration, usize)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    // Read at most `max_body` bytes: a longer body stops here with a 413.
    let limited = http_body_util::Limited::new(body, max_body).collect();
    match tokio::time::timeout(timeout, limited).await {
        Err(_) => timed_out("reading the request body", timeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            http::body_too_large(max_body).into_response()
        }
        Ok(Err(e)) => error::AppError::bad_request(format!("cannot read the request body: {e}"))
            .into_response(),
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
    }
}
