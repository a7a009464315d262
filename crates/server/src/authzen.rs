//! The OpenID AuthZEN Authorization API 1.0 endpoints, mapped onto Cedar:
//! a subject or resource `type`/`id` is the entity uid, `action.name` is
//! `Action::"<name>"`, subject and resource `properties` are attributes of
//! that entity for this request (over the stored ones), and `context` is the
//! Cedar context. A deny is `200 {"decision": false}` with the reasons in
//! `context`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::access::{Access, Routes};
use crate::decide::{self, RequestId};
use crate::error::AppError;
use crate::http::parse_body;
use crate::state::AppState;
use partnergate_core::authz::{Answer, Query};
use partnergate_policy::engine;

/// The AuthZEN routes: one evaluation, a batch of evaluations (queries),
/// and the PDP metadata (public).
pub fn routes() -> Routes {
    Routes::default()
        .with(
            Access::Query,
            Router::new()
                .route("/access/v1/evaluation", post(evaluation))
                .route("/access/v1/evaluations", post(evaluations))
                .route_layer(axum::middleware::from_fn(crate::http::require_json)),
        )
        .with(
            Access::Public,
            Router::new().route("/.well-known/authzen-configuration", get(configuration)),
        )
}

/// This door's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(evaluation, evaluations, configuration),
    components(schemas(EvaluationRequest, EvaluationResponse))
)]
pub struct Doc;

/// An AuthZEN subject or resource: one Cedar entity.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Subject {
    /// The Cedar entity type (`User`, `Account`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity id.
    pub id: String,
    /// Attributes of the entity for this request, over the stored ones.
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

/// An AuthZEN action: `Action::"<name>"`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Action {
    /// The action's id.
    pub name: String,
    /// Accepted and ignored (Cedar actions carry no request attributes).
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

/// One AuthZEN evaluation (every field may come from the batch defaults).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct EvaluationRequest {
    /// Who asks (required once merged with the defaults).
    pub subject: Option<Subject>,
    /// What is asked (required once merged with the defaults).
    pub action: Option<Action>,
    /// On what (required once merged with the defaults).
    pub resource: Option<Subject>,
    /// The Cedar context (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// One AuthZEN decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationResponse {
    /// True for Allow, false for Deny.
    pub decision: bool,
    /// `decision_id`, `policy_version`, `reasons` and `errors` (or the
    /// `error` and `message` of an invalid batch item).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct EvaluationsRequest {
    #[serde(flatten)]
    defaults: EvaluationRequest,
    evaluations: Option<Vec<EvaluationRequest>>,
    #[serde(default)]
    options: Options,
}

#[derive(Debug, Default, Deserialize)]
struct Options {
    evaluations_semantic: Option<EvaluationsSemantic>,
}

/// AuthZEN 1.0 `options.evaluations_semantic`: when a batch stops.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EvaluationsSemantic {
    /// Evaluate every item (the default).
    #[default]
    ExecuteAll,
    /// Stop after the first Deny.
    DenyOnFirstDeny,
    /// Stop after the first Permit.
    PermitOnFirstPermit,
    /// Any other string: kept so that the batch form answers a 400 naming
    /// it (the single form ignores `options`, as it always did).
    #[serde(untagged)]
    Unknown(String),
}

impl EvaluationsSemantic {
    /// Whether the batch stops after an item that was (or not) allowed.
    fn stops_after(&self, allowed: bool) -> bool {
        match self {
            EvaluationsSemantic::ExecuteAll | EvaluationsSemantic::Unknown(_) => false,
            EvaluationsSemantic::DenyOnFirstDeny => !allowed,
            EvaluationsSemantic::PermitOnFirstPermit => allowed,
        }
    }
}

fn to_query(r: EvaluationRequest, index: Option<usize>) -> Result<Query, AppError> {
    let at = |f: &str| match index {
        Some(i) => format!("evaluations[{i}].{f}"),
        None => f.to_string(),
    };
    let missing = |f: &str| AppError::bad_request(format!("field `{}` is required", at(f)));
    let subject = r.subject.ok_or_else(|| missing("subject"))?;
    let action = r.action.ok_or_else(|| missing("action"))?;
    let resource = r.resource.ok_or_else(|| missing("resource"))?;
    let uid = |field: &str, s: &Subject| {
        engine::uid_from_json(&at(field), &json!({"type": s.kind, "id": s.id}))
    };
    Ok(Query::new(
        uid("subject", &subject)?,
        engine::uid_from_json(&at("action"), &json!({"type": "Action", "id": action.name}))?,
        uid("resource", &resource)?,
    )
    .with_context(r.context)
    .with_attrs(subject.properties, resource.properties))
}

fn to_response(a: Answer) -> EvaluationResponse {
    EvaluationResponse {
        decision: a.decision.is_allowed(),
        context: Some(json!({
            "decision_id": a.decision_id,
            "policy_version": a.decision.policy_version,
            "reasons": a.decision.reasons,
            "errors": a.decision.errors,
        })),
    }
}

#[utoipa::path(post, path = "/access/v1/evaluation", request_body = EvaluationRequest,
    responses((status = 200, body = EvaluationResponse), (status = 400, description = "invalid request"), (status = 401, description = "no token (with --protect-queries)"), (status = 413, description = "body over --max-body-bytes")))]
pub(super) async fn evaluation(
    State(state): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Json<EvaluationResponse>, AppError> {
    let started = Instant::now();
    let req: EvaluationRequest = parse_body(&state, &body)?;
    let query = to_query(req, None)?.with_request_id(request_id);
    let answer = decide::one(&state, "authzen", &query, started).await?;
    Ok(Json(to_response(answer)))
}

#[utoipa::path(post, path = "/access/v1/evaluations", request_body = Object,
    responses((status = 200, description = "{evaluations: [{decision, context}]} in request order"), (status = 400, description = "invalid request"), (status = 401, description = "no token (with --protect-queries)"), (status = 413, description = "body over --max-body-bytes")))]
pub(super) async fn evaluations(
    State(state): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let started = Instant::now();
    let req: EvaluationsRequest = parse_body(&state, &body)?;
    let Some(items) = req.evaluations else {
        // Without `evaluations` this is a single evaluation.
        let query = to_query(req.defaults, None)?.with_request_id(request_id);
        let answer = decide::one(&state, "authzen", &query, started).await?;
        return Ok(Json(
            serde_json::to_value(to_response(answer)).unwrap_or(Value::Null),
        ));
    };
    if items.len() > state.max_batch {
        return Err(AppError::bad_request(format!(
            "field `evaluations`: {} items; at most {} per call",
            items.len(),
            state.max_batch
        )));
    }
    let semantic = req.options.evaluations_semantic.unwrap_or_default();
    if let EvaluationsSemantic::Unknown(other) = &semantic {
        return Err(AppError::bad_request(format!(
            "field `options.evaluations_semantic`: `{other}` is not one of execute_all, deny_on_first_deny, permit_on_first_permit"
        )));
    }
    let mut call = decide::Batch::new(&state, "authzen", started);
    let d = req.defaults;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let merged = EvaluationRequest {
            subject: item.subject.or_else(|| d.subject.clone()),
            action: item.action.or_else(|| d.action.clone()),
            resource: item.resource.or_else(|| d.resource.clone()),
            context: item.context.or_else(|| d.context.clone()),
        };
        let query = to_query(merged, Some(i)).map(|q| q.with_request_id(request_id.clone()));
        let (allowed, value) = match call.ask(&state, query) {
            Ok(a) => {
                let r = to_response(a);
                (r.decision, serde_json::to_value(r).unwrap_or(Value::Null))
            }
            Err(e) => (
                false,
                json!({"decision": false, "context": {"error": e.code, "message": e.message}}),
            ),
        };
        out.push(value);
        if semantic.stops_after(allowed) {
            break;
        }
    }
    call.finish(&state).await?;
    Ok(Json(json!({"evaluations": out})))
}

#[utoipa::path(get, path = "/.well-known/authzen-configuration",
    responses((status = 200, description = "AuthZEN PDP metadata")))]
pub(super) async fn configuration(State(state): State<Arc<AppState>>) -> Json<Value> {
    // Never the request's `Host`: a client must not choose where others are sent.
    let base = state
        .public_url
        .get()
        .map_or("http://127.0.0.1:8380", String::as_str);
    Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
        "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
        "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
        "search_action_endpoint": format!("{base}/access/v1/search/action"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluations_semantic_is_typed_and_an_unknown_one_is_kept_for_the_400() {
        let parse = |v: Value| -> Options { serde_json::from_value(v).unwrap() };
        let sem = |v: Value| parse(json!({"evaluations_semantic": v})).evaluations_semantic;
        assert_eq!(parse(json!({})).evaluations_semantic, None);
        assert_eq!(sem(Value::Null), None);
        assert_eq!(
            sem(json!("execute_all")),
            Some(EvaluationsSemantic::ExecuteAll)
        );
        assert_eq!(
            sem(json!("deny_on_first_deny")),
            Some(EvaluationsSemantic::DenyOnFirstDeny)
        );
        assert_eq!(
            sem(json!("permit_on_first_permit")),
            Some(EvaluationsSemantic::PermitOnFirstPermit)
        );
        assert_eq!(
            sem(json!("whatever")),
            Some(EvaluationsSemantic::Unknown("whatever".into()))
        );
        assert!(serde_json::from_value::<Options>(json!({"evaluations_semantic": 5})).is_err());
        let deny_first = EvaluationsSemantic::DenyOnFirstDeny;
        assert!(deny_first.stops_after(false) && !deny_first.stops_after(true));
        let permit_first = EvaluationsSemantic::PermitOnFirstPermit;
        assert!(permit_first.stops_after(true) && !permit_first.stops_after(false));
        assert!(!EvaluationsSemantic::ExecuteAll.stops_after(false));
    }
}
