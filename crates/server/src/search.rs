//! The search endpoints (issue #16): AuthZEN 1.0 Subject, Resource and
//! Action Search (`/access/v1/search/{subject,resource,action}`) and the same
//! searches in PartnerGate's own API (`/v1/search/{subject,resource,action}`,
//! uids in Cedar syntax). Both read the request into a
//! [`partnergate_search::SearchRequest`] and answer one page of
//! [`partnergate_search::Searcher::search`], run off the async threads under
//! the request timeout. The searches answer the policy question only (the
//! partner quotas are not part of them).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use cedar_policy::EntityUid;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::access::{Access, Routes};
use crate::decide::{observe_latency, RequestId};
use crate::error::AppError;
use crate::http::parse_body;
use crate::state::AppState;
use partnergate_policy::engine::{self, RequestError};
use partnergate_search::{
    action_uid, parse_type, PageRequest, SearchError, SearchKind, SearchPage, SearchRequest, Target,
};

/// The search routes, AuthZEN and PartnerGate's own (queries).
pub fn routes() -> Routes {
    Routes::default().with(
        Access::Query,
        Router::new()
            .route("/access/v1/search/{kind}", post(authzen_search))
            .route("/v1/search/{kind}", post(own_search))
            .route_layer(axum::middleware::from_fn(crate::http::require_json)),
    )
}

/// This door's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(authzen_search, own_search))]
pub struct Doc;

/// An AuthZEN subject or resource: the searched side has a `type` and no
/// `id` (an id there is ignored, as the specification says).
#[derive(Debug, Deserialize)]
struct Entity {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    properties: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct Action {
    name: Option<String>,
}

/// AuthZEN's request `page` (Authorization API 1.0, "Paginated Requests"):
/// `token` (the previous answer's `next_token`), `limit` and `properties`.
/// `next_token` is accepted as another name of `token`; any other member is
/// a 400 naming it (never silently ignored: a client that spells the token
/// otherwise would get page one forever).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<u64>,
    token: Option<String>,
    next_token: Option<String>,
    properties: Option<Map<String, Value>>,
}

impl Page {
    /// The page asked for and the name the caller gave its token (for
    /// errors about it), or a 400 naming the member at fault.
    fn request(self) -> Result<(PageRequest, &'static str), AppError> {
        if self.properties.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(field_error(
                "page.properties",
                "no page properties are supported: use `token` and `limit`",
            ));
        }
        let name = if self.token.is_some() {
            "page.token"
        } else {
            "page.next_token"
        };
        let token = match (self.token, self.next_token) {
            (Some(a), Some(b)) if a != b => {
                return Err(field_error(
                    "page.token",
                    "`page.token` and `page.next_token` differ: send the previous answer's \
                     `next_token` as `page.token` only",
                ))
            }
            (Some(t), _) | (None, Some(t)) => Some(t),
            (None, None) => None,
        };
        let page = PageRequest {
            limit: limit_of(self.limit),
            token,
            deadline: None,
        };
        Ok((page, name))
    }
}

/// The request `page` member: its members are checked by name first, so
/// every unknown one is named in the 400.
fn page_of(page: Option<Value>) -> Result<(PageRequest, &'static str), AppError> {
    let Some(page) = page.filter(|p| !p.is_null()) else {
        return Page::default().request();
    };
    let Value::Object(members) = &page else {
        return Err(field_error("page", "an object is expected"));
    };
    let unknown: Vec<&str> = members
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "limit" | "token" | "next_token" | "properties"))
        .collect();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|k| format!("`page.{k}`")).collect();
        return Err(AppError::bad_request(format!(
            "unknown member(s) {}: a page has `token` (the previous answer's `next_token`), \
             `limit` and `properties`",
            names.join(", ")
        ))
        .with_details(json!({"field": format!("page.{}", unknown[0]), "unknown": unknown})));
    }
    let page: Page =
        serde_json::from_value(page).map_err(|e| field_error("page", &e.to_string()))?;
    page.request()
}

#[derive(Debug, Deserialize)]
struct AuthzenSearch {
    subject: Option<Entity>,
    action: Option<Action>,
    resource: Option<Entity>,
    context: Option<Value>,
    page: Option<Value>,
}

fn kind_of(s: &str) -> Result<SearchKind, AppError> {
    s.parse()
        .map_err(|e: String| AppError::not_found(format!("no search `{s}`: {e}")))
}

fn missing(field: &str) -> AppError {
    AppError::bad_request(format!("field `{field}` is required"))
        .with_details(json!({"field": field}))
}

/// The given side: `type` and `id`, no request `properties` (a search
/// answers over stored facts).
fn given(field: &str, e: Option<&Entity>) -> Result<EntityUid, AppError> {
    let e = e.ok_or_else(|| missing(field))?;
    if e.properties.as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(field_error(
            &format!("{field}.properties"),
            "a search answers over the stored entities; request properties are not accepted",
        ));
    }
    let kind = e
        .kind
        .as_ref()
        .ok_or_else(|| missing(&format!("{field}.type")))?;
    let id =
        e.id.as_ref()
            .ok_or_else(|| missing(&format!("{field}.id")))?;
    Ok(engine::uid_from_json(
        field,
        &json!({"type": kind, "id": id}),
    )?)
}

/// The searched side: its `type` (an `id` is ignored).
fn searched(field: &str, e: Option<&Entity>) -> Result<cedar_policy::EntityTypeName, AppError> {
    let e = e.ok_or_else(|| missing(field))?;
    let kind = e
        .kind
        .as_ref()
        .ok_or_else(|| missing(&format!("{field}.type")))?;
    Ok(parse_type(&format!("{field}.type"), kind)?)
}

fn field_error(field: &str, message: &str) -> AppError {
    AppError::bad_request(format!("field `{field}`: {message}"))
        .with_details(json!({"field": field}))
}

fn authzen_request(kind: SearchKind, r: &AuthzenSearch) -> Result<SearchRequest, AppError> {
    let action = || -> Result<EntityUid, AppError> {
        let name = r
            .action
            .as_ref()
            .and_then(|a| a.name.as_ref())
            .ok_or_else(|| missing("action.name"))?;
        Ok(action_uid("action", name)?)
    };
    let target = match kind {
        SearchKind::Subject => Target::Subjects {
            principal_type: searched("subject", r.subject.as_ref())?,
            action: action()?,
            resource: given("resource", r.resource.as_ref())?,
        },
        SearchKind::Resource => Target::Resources {
            principal: given("subject", r.subject.as_ref())?,
            action: action()?,
            resource_type: searched("resource", r.resource.as_ref())?,
        },
        SearchKind::Action => Target::Actions {
            principal: given("subject", r.subject.as_ref())?,
            resource: given("resource", r.resource.as_ref())?,
        },
    };
    Ok(SearchRequest::new(target).with_context(r.context.clone()))
}

/// AuthZEN's names for the library's fields (the searched side's is its `type`).
fn authzen_field(kind: SearchKind, field: &str) -> String {
    match (kind, field) {
        (SearchKind::Subject, "principal") => "subject.type".into(),
        (SearchKind::Resource, "resource") => "resource.type".into(),
        (_, "principal") => "subject".into(),
        (_, "limit") => "page.limit".into(),
        (_, other) => other.into(),
    }
}

/// A search error as a 400 (408 past the deadline) naming the field as the
/// caller's API calls it.
fn search_error(
    e: SearchError,
    kind: SearchKind,
    rename: &dyn Fn(SearchKind, &str) -> String,
) -> AppError {
    let rename = |f: &str| rename(kind, f);
    match e {
        SearchError::TimedOut => AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            e.to_string(),
        ),
        SearchError::Request(RequestError::Field { field, message }) => {
            field_error(&rename(&field), &message)
        }
        SearchError::Token(t) => field_error(&rename(t.field), &t.message),
        SearchError::Limit(m) => field_error(&rename("limit"), &m),
        SearchError::AuditUnavailable(why) => AppError::audit_unavailable(why),
        SearchError::Busy(_) => {
            metrics::counter!("partnergate_search_refusals_total").increment(1);
            AppError::new(StatusCode::TOO_MANY_REQUESTS, "search_busy", e.to_string())
        }
        SearchError::Request(other) => AppError::from(other),
    }
}

fn limit_of(limit: Option<u64>) -> Option<usize> {
    limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX))
}

/// Run one page off the async threads, under the request timeout.
async fn run(
    state: &Arc<AppState>,
    req: SearchRequest,
    mut page: PageRequest,
) -> Result<SearchPage, SearchError> {
    page.deadline = Some(Instant::now() + state.request_timeout);
    let searcher = state.search.clone();
    tokio::task::spawn_blocking(move || searcher.search(&req, &page))
        .await
        .unwrap_or(Err(SearchError::TimedOut))
}

#[utoipa::path(post, path = "/access/v1/search/{kind}", request_body = Object,
    params(("kind" = String, Path, description = "subject, resource or action")),
    responses((status = 200, description = "{page: {next_token, count, total?}, context: {search_id, policy_version}, results}"), (status = 400, description = "invalid request or page token (details.field names the field)"), (status = 401, description = "no token (with --protect-queries)"), (status = 404, description = "unknown kind of search"), (status = 408, description = "over --request-timeout-ms")))]
pub(super) async fn authzen_search(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let started = Instant::now();
    let kind = kind_of(&kind)?;
    let r: AuthzenSearch = parse_body(&state, &body)?;
    let req = authzen_request(kind, &r)?.with_request_id(request_id);
    let (page, token_name) = page_of(r.page)?;
    let rename = |k: SearchKind, field: &str| match field {
        "token" => token_name.to_string(),
        other => authzen_field(k, other),
    };
    let page = run(&state, req, page)
        .await
        .map_err(|e| search_error(e, kind, &rename))?;
    observe_latency("authzen_search", started);
    let results: Vec<Value> = page
        .results
        .iter()
        .map(|u| match kind {
            SearchKind::Action => json!({"name": u.id().unescaped()}),
            _ => json!({"type": u.type_name().to_string(), "id": u.id().unescaped()}),
        })
        .collect();
    let mut page_json = json!({"next_token": page.next_token, "count": results.len()});
    if let Some(total) = page.total {
        page_json["total"] = json!(total);
    }
    Ok(Json(json!({
        "page": page_json,
        "context": {"search_id": page.search_id, "policy_version": page.policy_version},
        "results": results,
    })))
}

/// PartnerGate's own search body: uids in Cedar syntax (or `{type, id}`),
/// the searched side as `principal_type` / `resource_type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnSearch {
    principal: Option<Value>,
    principal_type: Option<String>,
    action: Option<Value>,
    resource: Option<Value>,
    resource_type: Option<String>,
    context: Option<Value>,
    limit: Option<u64>,
    next_token: Option<String>,
}

fn own_request(kind: SearchKind, r: &OwnSearch) -> Result<SearchRequest, AppError> {
    let uid = |field: &str, v: &Option<Value>| -> Result<EntityUid, AppError> {
        let v = v.as_ref().ok_or_else(|| missing(field))?;
        Ok(engine::uid_from_json(field, v)?)
    };
    let ty = |field: &str, v: &Option<String>| -> Result<cedar_policy::EntityTypeName, AppError> {
        let v = v.as_ref().ok_or_else(|| missing(field))?;
        Ok(parse_type(field, v)?)
    };
    let action = || -> Result<EntityUid, AppError> {
        match &r.action {
            Some(Value::String(s)) if !s.contains("::") => Ok(action_uid("action", s)?),
            other => uid("action", other),
        }
    };
    let target = match kind {
        SearchKind::Subject => Target::Subjects {
            principal_type: ty("principal_type", &r.principal_type)?,
            action: action()?,
            resource: uid("resource", &r.resource)?,
        },
        SearchKind::Resource => Target::Resources {
            principal: uid("principal", &r.principal)?,
            action: action()?,
            resource_type: ty("resource_type", &r.resource_type)?,
        },
        SearchKind::Action => Target::Actions {
            principal: uid("principal", &r.principal)?,
            resource: uid("resource", &r.resource)?,
        },
    };
    Ok(SearchRequest::new(target).with_context(r.context.clone()))
}

/// The own API's names: the searched side is `principal_type` / `resource_type`.
fn own_field(kind: SearchKind, field: &str) -> String {
    match (kind, field) {
        (SearchKind::Subject, "principal") => "principal_type".into(),
        (SearchKind::Resource, "resource") => "resource_type".into(),
        (_, other) => other.into(),
    }
}

#[utoipa::path(post, path = "/v1/search/{kind}", request_body = Object,
    params(("kind" = String, Path, description = "subject, resource or action")),
    responses((status = 200, description = "{results: [uid], next_token, count, total, policy_version, search_id}"), (status = 400, description = "invalid request or page token (details.field names the field)"), (status = 401, description = "no token (with --protect-queries)"), (status = 404, description = "unknown kind of search"), (status = 408, description = "over --request-timeout-ms")))]
pub(super) async fn own_search(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let started = Instant::now();
    let kind = kind_of(&kind)?;
    let r: OwnSearch = parse_body(&state, &body)?;
    let req = own_request(kind, &r)?.with_request_id(request_id);
    let page = PageRequest {
        limit: limit_of(r.limit),
        token: r.next_token.clone(),
        deadline: None,
    };
    let page = run(&state, req, page)
        .await
        .map_err(|e| search_error(e, kind, &own_field))?;
    observe_latency("search", started);
    let results: Vec<String> = page.results.iter().map(ToString::to_string).collect();
    Ok(Json(json!({
        "results": results,
        "next_token": page.next_token,
        "count": results.len(),
        "total": page.total,
        "policy_version": page.policy_version,
        "search_id": page.search_id,
    })))
}
