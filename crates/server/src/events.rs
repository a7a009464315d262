//! The partner lifecycle events over HTTP: `GET /v1/events` (the outbox
//! with each event's delivery state, filtered by account, kind and status,
//! paged by position, always behind the token) and
//! `POST /v1/events/{id}/redeliver` (deliver an event again, to every
//! endpoint). The work is the orchestrator's events outbox
//! ([`partnergate_orchestrator::events`]); this module only maps the wire.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{Access, Routes};
use crate::error::AppError;
use crate::state::AppState;
use partnergate_orchestrator::events::{EventFilter, EventKind, EventRow, EventStatus};

/// The default page size of `GET /v1/events`.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest page `GET /v1/events` answers.
pub const MAX_LIMIT: i64 = 500;

/// The events routes: the listing (always the token) and redelivery (a write).
pub fn routes() -> Routes {
    Routes::default()
        .with(
            Access::Private,
            Router::new().route("/v1/events", get(list_events)),
        )
        .with(
            Access::Write,
            Router::new().route("/v1/events/{id}/redeliver", post(redeliver)),
        )
}

/// This door's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_events, redeliver))]
pub struct Doc;

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct EventParams {
    /// Only this account's events.
    account: Option<String>,
    /// Only this kind (`partner.suspended`, ...).
    kind: Option<String>,
    /// Only this delivery state: `pending`, `delivered` or `dead`.
    status: Option<String>,
    /// Events after this position (the previous page's `next`).
    after: Option<i64>,
    /// Most events in the page (1 to 500, default 100).
    limit: Option<i64>,
}

/// The filter a query asks for, or a 400 naming the field.
pub fn filter_of(
    account: Option<String>,
    kind: Option<String>,
    status: Option<String>,
) -> Result<EventFilter, String> {
    if let Some(k) = &kind {
        if EventKind::parse(k).is_none() {
            return Err(format!("`kind`: unknown event kind `{k}`"));
        }
    }
    let status = status
        .map(|s| {
            EventStatus::parse(&s)
                .ok_or_else(|| format!("`status`: `{s}` is not pending, delivered or dead"))
        })
        .transpose()?;
    Ok(EventFilter {
        account,
        kind,
        status,
        ..EventFilter::default()
    })
}

/// One event as listed: its delivery state and the payload receivers get.
pub fn listed(r: &EventRow) -> Value {
    let time = |ms: i64| partnergate_core::clock::format_ms(ms);
    json!({
        "pos": r.pos,
        "id": r.id,
        "account": r.account,
        "seq": r.seq,
        "kind": r.kind,
        "user": r.user,
        "actor": r.actor,
        "change_id": r.change_id,
        "decision_id": r.decision_id,
        "created_at": time(r.created_ms),
        "status": r.status,
        "attempts": r.attempts,
        "next_attempt_at": (r.status == EventStatus::Pending).then(|| time(r.next_ms)),
        "endpoints_done": r.done,
        "last_error": r.last_error,
        "delivered_at": r.delivered_ms.and_then(time),
        "event": r.payload(),
    })
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventParams),
    responses((status = 200, description = "a page of lifecycle events with their delivery state, by position; `next` is the cursor of the following page (null at the end)"), (status = 400, description = "an unknown kind or status, or a limit out of range"), (status = 401, description = "no or wrong bearer token"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn list_events(
    State(state): State<Arc<AppState>>,
    Query(p): Query<EventParams>,
) -> Result<Json<Value>, AppError> {
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::bad_request(format!("`limit`: 1 to {MAX_LIMIT}")));
    }
    let mut filter = filter_of(p.account, p.kind, p.status).map_err(AppError::bad_request)?;
    filter.after = p.after;
    let orch = state.orchestrator.clone();
    let rows = tokio::task::spawn_blocking(move || orch.events().list_events(&filter, limit))
        .await
        .map_err(|e| AppError::unavailable(e.to_string()))?
        .map_err(|e| AppError::unavailable(e.to_string()))?;
    let next = (rows.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| rows.last().map(|r| r.pos))
        .flatten();
    Ok(Json(json!({
        "events": rows.iter().map(listed).collect::<Vec<_>>(),
        "next": next,
    })))
}

#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "events", params(("id" = String, Path, description = "the event id (evt_...)")),
    responses((status = 200, description = "the event is pending again, due now, for every endpoint"), (status = 401, description = "no or wrong bearer token"), (status = 404, description = "no such event"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn redeliver(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let orch = state.orchestrator.clone();
    let filter = EventFilter {
        id: Some(id.clone()),
        ..EventFilter::default()
    };
    let n = tokio::task::spawn_blocking(move || orch.events().redeliver(&filter))
        .await
        .map_err(|e| AppError::unavailable(e.to_string()))?
        .map_err(|e| AppError::unavailable(e.to_string()))?;
    if n == 0 {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event `{id}`"),
        ));
    }
    Ok(Json(json!({"redelivered": n})))
}
