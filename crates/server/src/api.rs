//! PartnerGate's own endpoints: decisions (`/v1/is_authorized`, batch),
//! entities, policies, health, readiness, metrics and the OpenAPI document.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use super::error::AppError;
use super::AppState;
use crate::authz::{Answer, Query};
use crate::engine::{self, Effect, Reason};

/// The PartnerGate routes: decisions, entities, policies, health,
/// readiness, metrics and the OpenAPI document.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/is_authorized", post(is_authorized))
        .route("/v1/is_authorized/batch", post(is_authorized_batch))
        .route("/v1/entities", put(put_entities))
        .route("/v1/entities/{type}/{id}", get(get_entity))
        .route("/v1/policies", get(get_policies))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(axum::middleware::from_fn(super::http::require_json))
}

/// One authorization question on the wire. A uid is `"User::\"alice\""` or
/// `{"type": "User", "id": "alice"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IsAuthorizedRequest {
    /// Who asks: the principal's uid.
    #[schema(value_type = Object, example = json!("User::\"alice\""))]
    pub principal: Value,
    /// What is asked: the action's uid (`Action::"<id>"`).
    #[schema(value_type = Object, example = json!("Action::\"view_account\""))]
    pub action: Value,
    /// On what: the resource's uid.
    #[schema(value_type = Object, example = json!("Account::\"acme\""))]
    pub resource: Value,
    /// The Cedar context (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// Extra Cedar entity JSON, over the stored entities, for this request only.
    #[schema(value_type = Option<Vec<Object>>)]
    pub entities: Option<Value>,
}

/// A decision on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct IsAuthorizedResponse {
    /// "Allow" or "Deny".
    #[schema(value_type = String, example = "Allow")]
    pub decision: Effect,
    /// The determining policies.
    #[schema(value_type = Vec<Object>)]
    pub reasons: Vec<Reason>,
    /// The decision's errors (evaluation errors, an unknown principal); any
    /// error makes the decision a Deny.
    pub errors: Vec<String>,
    /// The content-hash version of the policy set that decided.
    pub policy_version: String,
    /// The decision's id, as recorded in the decision log.
    pub decision_id: String,
}

/// The JSON body of `answer` as [`IsAuthorizedResponse`] writes it. All
/// but the decision id is a function of the decision, so it is encoded once
/// and kept in the answer's slot, which the decision cache shares: a
/// decision served from the cache is not encoded again.
pub fn response_body(answer: &Answer) -> String {
    let head = answer.encoded.get_or_init(|| {
        let d = &answer.decision;
        let v = json!({"decision": d.decision, "reasons": d.reasons, "errors": d.errors,
            "policy_version": d.policy_version});
        let mut text = v.to_string();
        text.pop(); // the closing brace: the decision id follows
        text.into_boxed_str()
    });
    let mut body = String::with_capacity(head.len() + 64);
    body.push_str(head);
    body.push_str(",\"decision_id\":");
    body.push_str(&Value::String(answer.decision_id.clone()).to_string());
    body.push('}');
    body
}

impl From<Answer> for IsAuthorizedResponse {
    fn from(a: Answer) -> Self {
        IsAuthorizedResponse {
            decision: a.decision.decision,
            reasons: a.decision.reasons,
            errors: a.decision.errors,
            policy_version: a.decision.policy_version,
            decision_id: a.decision_id,
        }
    }
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

/// Parse a JSON body (already read under the size limit; too large is a
/// 413); every other failure is a 400 naming why.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: &Bytes,
) -> Result<T, AppError> {
    if body.len() > state.max_body_bytes {
        return Err(super::http::body_too_large(state.max_body_bytes));
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

/// Turn a wire request into a typed query.
pub fn to_query(r: IsAuthorizedRequest) -> Result<Query, AppError> {
    Ok(Query::new(
        engine::uid_from_json("principal", &r.principal)?,
        engine::uid_from_json("action", &r.action)?,
        engine::uid_from_json("resource", &r.resource)?,
    )
    .with_context(r.context)
    .with_entities(r.entities))
}

/// The caller's `X-Request-ID`, if any.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Count one decision (or one refused request: `invalid`).
pub fn count(endpoint: &'static str, decision: &'static str) {
    handles().counter(endpoint, decision).increment(1);
}

/// Record how long one call took (a batch counts once).
pub fn observe_latency(endpoint: &'static str, started: Instant) {
    handles()
        .histogram(endpoint)
        .record(started.elapsed().as_secs_f64());
}

/// The decision metrics' handles, registered once per label set: the
/// `metrics` macros look a labelled series up (and allocate its labels) on
/// every call, about a microsecond on the decision path.
#[derive(Default)]
struct Handles {
    counters: std::sync::RwLock<HashMap<(&'static str, &'static str), metrics::Counter>>,
    histograms: std::sync::RwLock<HashMap<&'static str, metrics::Histogram>>,
}

fn handles() -> &'static Handles {
    static HANDLES: std::sync::OnceLock<Handles> = std::sync::OnceLock::new();
    HANDLES.get_or_init(Handles::default)
}

impl Handles {
    fn counter(&self, endpoint: &'static str, decision: &'static str) -> metrics::Counter {
        let key = (endpoint, decision);
        if let Some(c) = self.counters.read().ok().and_then(|m| m.get(&key).cloned()) {
            return c;
        }
        let c = metrics::counter!("partnergate_decisions_total", "endpoint" => endpoint, "decision" => decision);
        if let Ok(mut m) = self.counters.write() {
            m.insert(key, c.clone());
        }
        c
    }

    fn histogram(&self, endpoint: &'static str) -> metrics::Histogram {
        if let Some(h) = self
            .histograms
            .read()
            .ok()
            .and_then(|m| m.get(endpoint).cloned())
        {
            return h;
        }
        let h =
            metrics::histogram!("partnergate_decision_duration_seconds", "endpoint" => endpoint);
        if let Ok(mut m) = self.histograms.write() {
            m.insert(endpoint, h.clone());
        }
        h
    }
}

/// Count one decision and record its call's latency.
pub fn observe(endpoint: &'static str, decision: &'static str, started: Instant) {
    count(endpoint, decision);
    observe_latency(endpoint, started);
}

/// The longest a decision waits for its record to be durable under
/// `--audit-required` (also bounded by the request timeout).
pub const AUDIT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// With `--audit-required`, wait for the decision's record to be durable
/// (group commit: released by its batch's fsync). A record that cannot be
/// made durable refuses the decision: a 503 (a deny), counted and logged.
pub async fn require_durable(
    state: &AppState,
    answer: &Answer,
    endpoint: &'static str,
) -> Result<(), AppError> {
    let Some(durable) = &answer.durable else {
        return Ok(());
    };
    let limit = AUDIT_ACK_TIMEOUT.min(state.request_timeout);
    let result = match tokio::time::timeout(limit, durable.wait()).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the decision log did not make the record durable within {} ms",
            limit.as_millis()
        )),
    };
    result.map_err(|why| {
        metrics::counter!("partnergate_audit_refused_total", "endpoint" => endpoint).increment(1);
        tracing::info!(decision_id = %answer.decision_id, error = %why,
            "decision refused (deny): its record could not be made durable (--audit-required)");
        AppError::audit_unavailable(why)
    })
}

/// Wait for every acknowledgement of a batch; the first failure refuses it.
pub async fn require_all_durable(
    state: &AppState,
    answers: &[Answer],
    endpoint: &'static str,
) -> Result<(), AppError> {
    for a in answers {
        require_durable(state, a, endpoint).await?;
    }
    Ok(())
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
            let failing = status.state == crate::audit::AuditState::Failing;
            (v, required && failing)
        }
    }
}

/// Decide one request, logging refusals of malformed input.
fn decide_one(state: &AppState, query: Query) -> Result<Answer, AppError> {
    state.authz.is_authorized(&query).map_err(|e| {
        tracing::info!(error = %e, "request refused before evaluation (deny)");
        AppError::from(e)
    })
}

#[utoipa::path(post, path = "/v1/is_authorized", request_body = IsAuthorizedRequest,
    responses((status = 200, body = IsAuthorizedResponse), (status = 400, description = "invalid request"), (status = 401, description = "no token (with --protect-queries)"), (status = 413, description = "body over --max-body-bytes"),
        (status = 503, description = "--audit-required: the decision's record could not be made durable (audit_unavailable, a deny)")))]
async fn is_authorized(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let started = Instant::now();
    let result = parse_body::<IsAuthorizedRequest>(&state, &body)
        .and_then(to_query)
        .and_then(|mut q| {
            q.request_id = request_id(&headers);
            decide_one(&state, q)
        });
    match result {
        Ok(answer) => {
            if let Err(e) = require_durable(&state, &answer, "is_authorized").await {
                observe("is_authorized", "refused", started);
                return Err(e);
            }
            observe("is_authorized", answer.decision.decision.as_str(), started);
            Ok((
                [(header::CONTENT_TYPE, "application/json")],
                response_body(&answer),
            )
                .into_response())
        }
        Err(e) => {
            observe("is_authorized", "invalid", started);
            Err(e)
        }
    }
}

#[utoipa::path(post, path = "/v1/is_authorized/batch", request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 400, description = "invalid batch or too many requests"), (status = 401, description = "no token (with --protect-queries)"), (status = 413, description = "body over --max-body-bytes")))]
async fn is_authorized_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
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
    let pack = state.authz.evaluator().current();
    let mut answered = Vec::new();
    let results = batch
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let answer = serde_json::from_str::<IsAuthorizedRequest>(item.get())
                .map_err(|e| AppError::bad_request(format!("requests[{i}]: {e}")))
                .and_then(to_query)
                .and_then(|mut q| {
                    q.request_id = request_id(&headers);
                    state
                        .authz
                        .is_authorized_with(&pack, &q)
                        .map_err(AppError::from)
                });
            match answer {
                Ok(mut a) => {
                    count("batch", a.decision.decision.as_str());
                    if let Some(d) = a.durable.take() {
                        answered.push(Answer {
                            durable: Some(d),
                            ..a.clone()
                        });
                    }
                    raw(response_body(&a))
                }
                Err(e) => {
                    count("batch", "invalid");
                    tracing::info!(index = i, error = %e.message, "batch item refused (deny)");
                    raw(
                        json!({"decision": "Deny", "reasons": [], "errors": [e.message],
                        "error": e.code, "policy_version": pack.version})
                        .to_string(),
                    )
                }
            }
        })
        .collect();
    require_all_durable(&state, &answered, "batch").await?;
    observe_latency("batch", started);
    Ok(Json(BatchResponse { results }))
}

#[utoipa::path(put, path = "/v1/entities", request_body(content = Vec<Object>, description = "Cedar entity JSON"),
    responses((status = 200, description = "upserted"), (status = 400, description = "invalid entity"), (status = 401, description = "no or wrong bearer token"), (status = 413, description = "body over --max-body-bytes"), (status = 503, description = "the store is unavailable")))]
async fn put_entities(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
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
        super::idempotency::from_headers(&headers, "PUT /v1/entities", &body, StatusCode::OK)?;
    if let Some(i) = &key {
        if let Some(replay) = super::idempotency::recalled(&state, i).await? {
            return Ok(replay);
        }
    }
    // Checked once the transaction has begun: past it, nothing is written
    // (408); a transaction that has begun runs to completion and answers.
    let deadline = Instant::now() + state.request_timeout;
    let authz = state.authz.clone();
    let rid = request_id(&headers);
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
        (crate::directory::Written::Applied(uids), _) => {
            metrics::counter!("partnergate_entity_writes_total").increment(uids.len() as u64);
            Ok(Json(upserted(&uids)).into_response())
        }
        (crate::directory::Written::Replayed(r), Some(key)) => super::idempotency::answer(key, r),
        // A write without a key is never replayed.
        (crate::directory::Written::Replayed(_), None) => Err(AppError::from(
            partnergate_partners::OrchestratorError::IdempotencyKeyReused,
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
    let (audit, audit_not_ready) = audit_status(&state);
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
        let up = s.state == crate::audit::AuditState::Ok;
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

#[derive(OpenApi)]
#[openapi(
    info(title = "PartnerGate", description = "Cedar authorization sidecar"),
    paths(
        is_authorized,
        is_authorized_batch,
        put_entities,
        get_entity,
        get_policies,
        healthz,
        readyz,
        metrics,
        super::authzen::evaluation,
        super::authzen::evaluations,
        super::authzen::configuration,
        super::orchestrator::invite_partner,
        super::orchestrator::list_partners,
        super::orchestrator::invite_user,
        super::orchestrator::list_users,
        super::orchestrator::seats,
        super::orchestrator::accept,
        super::orchestrator::partner_access,
        super::orchestrator::dismiss,
        super::orchestrator::rehire,
        super::orchestrator::renew_access,
        super::orchestrator::end_access,
        super::orchestrator::partner_activity,
        super::orchestrator::grant_admin,
        super::orchestrator::revoke_admin,
        super::orchestrator::list_companies,
        super::orchestrator::put_company,
        super::search::authzen_search,
        super::search::own_search
    ),
    components(schemas(
        IsAuthorizedRequest,
        IsAuthorizedResponse,
        BatchRequest,
        BatchResponse,
        super::authzen::EvaluationRequest,
        super::authzen::EvaluationResponse,
        super::orchestrator::InviteBody,
        super::orchestrator::ActorBody,
        super::orchestrator::RenewBody,
        super::orchestrator::CompanyBody
    ))
)]
/// The OpenAPI document of every endpoint (served at `/openapi.json`).
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
