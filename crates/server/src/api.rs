//! PartnerGate's own endpoints: decisions (`/v1/is_authorized`, batch),
//! entities, policies, health, readiness, metrics and the OpenAPI document.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::access::{Access, Routes};
use crate::decide::{self, RequestId};
use crate::error::AppError;
use crate::http::parse_body;
use crate::state::AppState;
use crate::wire::{response_body, to_query, IsAuthorizedRequest, IsAuthorizedResponse};
use partnergate_policy::engine;

/// The PartnerGate routes: decisions, entities, policies, health,
/// readiness, metrics and the OpenAPI document.
pub fn routes() -> Routes {
    Routes::default()
        .with(
            Access::Query,
            Router::new()
                .route("/v1/is_authorized", post(is_authorized))
                .route("/v1/is_authorized/batch", post(is_authorized_batch))
                .route("/v1/entities/{type}/{id}", get(get_entity))
                .route("/v1/policies", get(get_policies))
                .route_layer(axum::middleware::from_fn(crate::http::require_json)),
        )
        .with(
            Access::Write,
            Router::new()
                .route("/v1/entities", put(put_entities))
                .route_layer(axum::middleware::from_fn(crate::http::require_json)),
        )
        .with(
            Access::Public,
            Router::new()
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz)),
        )
        .with(
            Access::Metrics,
            Router::new().route("/metrics", get(metrics)),
        )
}

/// Several authorization questions in one call (at most `--max-batch`),
/// decided over one policy-set snapshot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Each item is one `IsAuthorizedRequest` object.
    #[schema(value_type = Vec<IsAuthorizedRequest>)]
    pub requests: Vec<Box<serde_json::value::RawValue>>,
}

/// The answers of a [`BatchRequest`].
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// One result per request, in request order. An invalid item is a Deny
    /// with `error` set.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Box<serde_json::value::RawValue>>,
}

/// A JSON text this module encoded, as a raw value to embed.
fn raw(json: String) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(json).unwrap_or_else(|_| {
        // Unreachable: the text was encoded by serde_json just before.
        serde_json::value::to_raw_value(&Value::Null).unwrap_or_default()
    })
}

/// The decision log's state for `/readyz` and `GET /v1/policies`, and
/// whether it makes the sidecar not ready: only with `--audit-required`,
/// where a failing log refuses every decision.
pub fn audit_status(state: &AppState) -> (Value, bool) {
    match state.authz.audit() {
        None => (json!({"state": "off"}), false),
        Some(log) => {
            let status = log.status();
            let required = state.authz.audit_required();
            let mut v = serde_json::to_value(&status).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("required".into(), json!(required));
            }
            let failing = status.state == partnergate_audit::AuditState::Failing;
            (v, required && failing)
        }
    }
}

#[utoipa::path(post, path = "/v1/is_authorized", request_body = IsAuthorizedRequest,
    responses((status = 200, body = IsAuthorizedResponse), (status = 400, description = "invalid request"), (status = 401, description = "no token (with --protect-queries)"), (status = 413, description = "body over --max-body-bytes"),
        (status = 503, description = "--audit-required: the decision's record could not be made durable (audit_unavailable, a deny)")))]
async fn is_authorized(
    State(state): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Response, AppError> {
    let started = Instant::now();
    let query = match parse_body::<IsAuthorizedRequest>(&state, &body).and_then(to_query) {
        Ok(q) => q.with_request_id(request_id),
        Err(e) => {
            decide::observe("is_authorized", "invalid", started);
            return Err(e);
        }
    };
    let answer = decide::one(&state, "is_authorized", &query, started).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        response_body(&answer),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/is_authorized/batch", request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 400, description = "invalid batch or too many requests"), (status = 401, description = "no token (with --protect-queries)"), (status = 413, description = "body over --max-body-bytes")))]
async fn is_authorized_batch(
    State(state): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Json<BatchResponse>, AppError> {
    let started = Instant::now();
    let batch: BatchRequest = parse_body(&state, &body)?;
    if batch.requests.len() > state.max_batch {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "batch_too_large",
            format!(
                "field `requests`: {} requests; at most {} per call",
                batch.requests.len(),
                state.max_batch
            ),
        ));
    }
    // One snapshot for the whole batch.
    let mut call = decide::Batch::new(&state, "batch", started);
    let results = batch
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let query = serde_json::from_str::<IsAuthorizedRequest>(item.get())
                .map_err(|e| AppError::bad_request(format!("requests[{i}]: {e}")))
                .and_then(to_query)
                .map(|q| q.with_request_id(request_id.clone()));
            match call.ask(&state, query) {
                Ok(a) => raw(response_body(&a)),
                Err(e) => {
                    tracing::info!(index = i, error = %e.message, "batch item refused (deny)");
                    raw(
                        json!({"decision": "Deny", "reasons": [], "errors": [e.message],
                        "error": e.code, "policy_version": call.pack().version})
                        .to_string(),
                    )
                }
            }
        })
        .collect();
    call.finish(&state).await?;
    Ok(Json(BatchResponse { results }))
}

#[utoipa::path(put, path = "/v1/entities", request_body(content = Vec<Object>, description = "Cedar entity JSON"),
    responses((status = 200, description = "upserted"), (status = 400, description = "invalid entity"), (status = 401, description = "no or wrong bearer token"), (status = 413, description = "body over --max-body-bytes"), (status = 503, description = "the store is unavailable")))]
async fn put_entities(
    State(state): State<Arc<AppState>>,
    RequestId(rid): RequestId,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let value: Value = parse_body(&state, &body)?;
    let value = match value {
        Value::Object(mut m) if m.contains_key("entities") => {
            m.remove("entities").unwrap_or(Value::Null)
        }
        v => v,
    };
    let key =
        crate::idempotency::from_headers(&headers, "PUT /v1/entities", &body, StatusCode::OK)?;
    if let Some(i) = &key {
        if let Some(replay) = crate::idempotency::recalled(&state, i).await? {
            return Ok(replay);
        }
    }
    // Checked once the transaction has begun: past it, nothing is written
    // (408); a transaction that has begun runs to completion and answers.
    let deadline = Instant::now() + state.request_timeout;
    let authz = state.authz.clone();
    let guarded = key.clone();
    let written = tokio::task::spawn_blocking(move || {
        let answer = |uids: &[cedar_policy::EntityUid]| (200u16, upserted(uids).to_string());
        let key = guarded.as_ref().map(|i| {
            (
                i.key.as_str(),
                i.fingerprint.as_str(),
                &answer as &dyn Fn(&[cedar_policy::EntityUid]) -> (u16, String),
            )
        });
        authz.put_entities_guarded("api-token", rid, value, Some(deadline), key)
    })
    .await
    .map_err(|e| AppError::unavailable(e.to_string()))??;
    match (written, &key) {
        (partnergate_core::directory::Written::Applied(uids), _) => {
            metrics::counter!("partnergate_entity_writes_total").increment(uids.len() as u64);
            Ok(Json(upserted(&uids)).into_response())
        }
        (partnergate_core::directory::Written::Replayed(r), Some(key)) => {
            crate::idempotency::answer(key, r)
        }
        // A write without a key is never replayed.
        (partnergate_core::directory::Written::Replayed(_), None) => Err(AppError::from(
            partnergate_orchestrator::OrchestratorError::IdempotencyKeyReused,
        )),
    }
}

/// The answer of an entity write.
fn upserted(uids: &[cedar_policy::EntityUid]) -> Value {
    json!({
        "upserted": uids.len(),
        "uids": uids.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
    })
}

#[utoipa::path(get, path = "/v1/entities/{type}/{id}",
    params(("type" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "Cedar entity JSON"), (status = 400, description = "invalid uid"), (status = 404, description = "no such entity"), (status = 401, description = "no token (with --protect-queries)")))]
async fn get_entity(
    State(state): State<Arc<AppState>>,
    Path((ty, id)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    let uid = engine::uid_from_json("uid", &json!({"type": ty, "id": id}))?;
    state
        .authz
        .directory()
        .get_json(&uid)
        .map(Json)
        .ok_or_else(|| AppError::not_found(format!("no entity {uid}")))
}

#[utoipa::path(get, path = "/v1/policies", responses((status = 200, description = "the serving policy set and the last reload error"), (status = 401, description = "no token (with --protect-queries)")))]
async fn get_policies(State(state): State<Arc<AppState>>) -> Result<Json<Value>, AppError> {
    let pack = state.authz.evaluator().current();
    let status = state.authz.evaluator().status();
    let (audit, _) = audit_status(&state);
    Ok(Json(json!({
        "audit": audit,
        "version": pack.version,
        "loaded_at": status.loaded_at,
        "files": pack.files,
        "policies": pack.policies,
        "reloads": {"successes": status.successes, "failures": status.failures},
        "last_error": status.last_error,
    })))
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is up")))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let directory = state.authz.directory().clone();
    let store = tokio::task::spawn_blocking(move || directory.backend().ping())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let pack = state.authz.evaluator().current();
    metrics::gauge!("partnergate_store_up").set(if store.is_ok() { 1.0 } else { 0.0 });
    let (mut audit, audit_not_ready) = audit_status(&state);
    if let (Some(ship), Some(obj)) = (&state.audit_ship, audit.as_object_mut()) {
        obj.insert("ship".into(), json!(ship.snapshot()));
    }
    if audit_not_ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "policy_version": pack.version,
                "store": store.err().unwrap_or_else(|| "ok".into()), "audit": audit,
                "detail": "the decision log cannot write and --audit-required is set: every decision is refused with 503 until it recovers"})),
        )
            .into_response();
    }
    match store {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "policy_version": pack.version, "store": "ok", "audit": audit})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "policy_version": pack.version, "store": e, "audit": audit,
                "detail": "the store is unreachable: decisions are still answered from memory; writes are refused with 503"})),
        )
            .into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format"), (status = 401, description = "no token (with --protect-metrics)")))]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let pack = state.authz.evaluator().current();
    metrics::gauge!("partnergate_entities").set(state.authz.directory().len() as f64);
    if let Some(c) = state.authz.decision_cache() {
        metrics::counter!("partnergate_decision_cache_hits_total").absolute(c.hits());
        metrics::counter!("partnergate_decision_cache_misses_total").absolute(c.misses());
        metrics::gauge!("partnergate_decision_cache_entries").set(c.len() as f64);
    }
    metrics::gauge!("partnergate_policy_info", "version" => pack.version.clone()).set(1.0);
    if let Some(log) = state.authz.audit() {
        let s = log.status();
        metrics::counter!("partnergate_audit_records_written_total").absolute(s.written);
        metrics::counter!("partnergate_audit_records_lost_total").absolute(s.lost);
        metrics::counter!("partnergate_audit_records_dropped_total").absolute(s.dropped);
        metrics::counter!("partnergate_audit_write_errors_total").absolute(s.write_errors);
        metrics::counter!("partnergate_audit_gaps_total").absolute(s.gaps);
        metrics::gauge!("partnergate_audit_unrecorded_records").set(s.unrecorded as f64);
        let up = s.state == partnergate_audit::AuditState::Ok;
        metrics::gauge!("partnergate_audit_up").set(if up { 1.0 } else { 0.0 });
        // Present (at 0) before the first refusal.
        metrics::counter!("partnergate_audit_refused_total", "endpoint" => "is_authorized")
            .increment(0);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// This door's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        is_authorized,
        is_authorized_batch,
        put_entities,
        get_entity,
        get_policies,
        healthz,
        readyz,
        metrics
    ),
    components(schemas(IsAuthorizedRequest, IsAuthorizedResponse, BatchRequest, BatchResponse))
)]
pub struct Doc;
