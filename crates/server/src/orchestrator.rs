//! The orchestrator's HTTP endpoints: partner invitations, users, seats and
//! the partner registry. Every write needs the bearer token; the work is
//! [`partnergate_partners::Orchestrator`]'s, this module only maps the wire.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{parse_body, request_id};
use super::error::AppError;
use super::idempotency;
use super::AppState;
use partnergate_partners::store::RegistryCompany;
use partnergate_partners::{Call, InvalidCode, Orchestrator, OrchestratorError, WriteScope};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/accounts/{id}/partners",
            post(invite_partner).get(list_partners),
        )
        .route("/v1/accounts/{id}/users", post(invite_user).get(list_users))
        .route("/v1/accounts/{id}/seats", get(seats))
        .route("/v1/users/{id}/accept", post(accept))
        .route("/v1/users/{id}/partner-access", post(partner_access))
        .route("/v1/users/{id}/dismiss", post(dismiss))
        .route("/v1/users/{id}/rehire", post(rehire))
        .route(
            "/v1/users/{id}/admin",
            put(grant_admin).delete(revoke_admin),
        )
        .route("/v1/partner-companies", get(list_companies))
        .route("/v1/partner-companies/{id}", put(put_company))
}

impl From<OrchestratorError> for AppError {
    fn from(e: OrchestratorError) -> Self {
        let status = match &e {
            OrchestratorError::InvalidEmail { .. } | OrchestratorError::NotCertified { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            OrchestratorError::Invalid {
                code: InvalidCode::Replace,
                ..
            } => StatusCode::UNPROCESSABLE_ENTITY,
            OrchestratorError::Denied { .. } => StatusCode::FORBIDDEN,
            OrchestratorError::LimitReached { .. }
            | OrchestratorError::DifferentCompany { .. }
            | OrchestratorError::Conflict { .. } => StatusCode::CONFLICT,
            OrchestratorError::NotFound(_) => StatusCode::NOT_FOUND,
            OrchestratorError::Invalid { .. } | OrchestratorError::Request(_) => {
                StatusCode::BAD_REQUEST
            }
            OrchestratorError::Store(_) | OrchestratorError::Corrupt(_) => {
                tracing::error!(error = %e, "orchestrator store failure");
                StatusCode::SERVICE_UNAVAILABLE
            }
            OrchestratorError::AuditUnavailable(_) => {
                tracing::info!(error = %e, "orchestrator operation refused (deny)");
                StatusCode::SERVICE_UNAVAILABLE
            }
            OrchestratorError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            OrchestratorError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            // Answered by `write` with the first answer; never reaches here in practice.
            OrchestratorError::Replayed(_) => StatusCode::CONFLICT,
        };
        let logged = matches!(e, OrchestratorError::AuditUnavailable(_));
        let error = AppError::new(status, e.code(), e.to_string()).with_details(e.details());
        if logged {
            error.logged()
        } else {
            error
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InviteBody {
    actor: String,
    email: String,
    name: Option<String>,
    replace: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActorBody {
    actor: String,
    replace: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompanyBody {
    name: String,
    status: String,
    certified: bool,
    #[serde(default)]
    emails: Vec<String>,
}

/// Run blocking orchestrator work off the async runtime.
async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&Orchestrator) -> Result<T, OrchestratorError> + Send + 'static,
) -> Result<T, AppError> {
    let orch = state.orchestrator.clone();
    tokio::task::spawn_blocking(move || f(&orch))
        .await
        .map_err(|e| AppError::unavailable(e.to_string()))?
        .map_err(AppError::from)
}

/// One orchestrator write request, as every write handler takes it: the
/// route (method and path, part of the `Idempotency-Key` fingerprint), the
/// headers (`Idempotency-Key`, `X-Request-ID`) and the raw body.
pub(super) struct WriteRequest {
    route: String,
    headers: HeaderMap,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for WriteRequest {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let route = format!("{} {}", req.method(), req.uri().path());
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WriteRequest {
            route,
            headers,
            body,
        })
    }
}

impl WriteRequest {
    /// The JSON body.
    fn json<T: serde::de::DeserializeOwned>(&self, state: &AppState) -> Result<T, AppError> {
        parse_body(state, &self.body)
    }

    /// Run the write off the async runtime, under the request's deadline
    /// (checked when its transaction begins: a write either answers its
    /// outcome or, having applied nothing, 408), its `Idempotency-Key` (a
    /// retry of the same request gets the first answer without re-applying)
    /// and its request id (carried by the operation's decision and change
    /// records); a success answers `status`.
    async fn run(
        self,
        state: &Arc<AppState>,
        status: StatusCode,
        f: impl FnOnce(&Call<'_>) -> Result<Value, OrchestratorError> + Send + 'static,
    ) -> Result<Response, AppError> {
        let key = idempotency::from_headers(&self.headers, &self.route, &self.body, status)?;
        if let Some(i) = &key {
            if let Some(replay) = idempotency::recalled(state, i).await? {
                return Ok(replay);
            }
        }
        let scope = WriteScope {
            deadline: Some(std::time::Instant::now() + state.request_timeout),
            idempotency: key,
            request_id: request_id(&self.headers),
        };
        let orch = state.orchestrator.clone();
        let result = tokio::task::spawn_blocking(move || f(&orch.with(scope)))
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))?;
        match result {
            Ok(v) => Ok((status, Json(v)).into_response()),
            Err(OrchestratorError::Replayed(r)) => Ok(idempotency::replay(r)),
            Err(e) => Err(AppError::from(e)),
        }
    }
}

fn outcome(o: partnergate_partners::Outcome) -> Value {
    json!(o)
}

#[utoipa::path(post, path = "/v1/accounts/{id}/partners", tag = "orchestrator", params(("id" = String, Path, description = "the account id")), request_body = InviteBody,
    responses((status = 201, description = "the invitation (a seat taken, or the replaced partner dismissed)"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn invite_partner(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    let b: InviteBody = w.json(&state)?;
    w.run(&state, StatusCode::CREATED, move |o| {
        let (name, replace) = (b.name.as_deref(), b.replace.as_deref());
        o.invite_partner(&account, &b.actor, &b.email, name, replace)
            .map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/accounts/{id}/users", tag = "orchestrator", params(("id" = String, Path, description = "the account id")), request_body = InviteBody,
    responses((status = 201, description = "the invited user"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn invite_user(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    let b: InviteBody = w.json(&state)?;
    if b.replace.is_some() {
        return Err(AppError::bad_request(
            "field `replace`: only partner invitations replace someone",
        ));
    }
    w.run(&state, StatusCode::CREATED, move |o| {
        o.invite_user(&account, &b.actor, &b.email, b.name.as_deref())
            .map(outcome)
    })
    .await
}

#[utoipa::path(get, path = "/v1/accounts/{id}/users", tag = "orchestrator", params(("id" = String, Path, description = "the account id")),
    responses((status = 200, description = "the account's users"), (status = 401, description = "no token (with --protect-queries)"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn list_users(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
) -> Result<Json<Value>, AppError> {
    let a = account.clone();
    let users = blocking(&state, move |o| o.users(&a)).await?;
    Ok(Json(json!({"account": account, "users": users})))
}

#[utoipa::path(get, path = "/v1/accounts/{id}/partners", tag = "orchestrator", params(("id" = String, Path, description = "the account id")),
    responses((status = 200, description = "the account's partners holding a seat"), (status = 401, description = "no token (with --protect-queries)"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn list_partners(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
) -> Result<Json<Value>, AppError> {
    let a = account.clone();
    let users = blocking(&state, move |o| o.users(&a)).await?;
    let partners: Vec<_> = users
        .into_iter()
        .filter(|u| u.user.holds_partner_seat())
        .collect();
    Ok(Json(json!({"account": account, "partners": partners})))
}

#[utoipa::path(get, path = "/v1/accounts/{id}/seats", tag = "orchestrator", params(("id" = String, Path, description = "the account id")),
    responses((status = 200, description = "seat counts"), (status = 401, description = "no token (with --protect-queries)"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn seats(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
) -> Result<Json<Value>, AppError> {
    let seats = blocking(&state, move |o| o.seats(&account)).await?;
    Ok(Json(json!(seats)))
}

#[utoipa::path(post, path = "/v1/users/{id}/accept", tag = "orchestrator", params(("id" = String, Path, description = "the user id")),
    request_body(content = String, description = "no body needed (any body is only compared for Idempotency-Key)"),
    responses((status = 200, description = "the user is active"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn accept(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    w.run(&state, StatusCode::OK, move |o| {
        o.accept(&user).map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/partner-access", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "partner access granted"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn partner_access(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    let b: ActorBody = w.json(&state)?;
    w.run(&state, StatusCode::OK, move |o| {
        o.grant_partner_access(&user, &b.actor, b.replace.as_deref())
            .map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/dismiss", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "the user is dismissed"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn dismiss(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    let b: ActorBody = w.json(&state)?;
    if b.replace.is_some() {
        return Err(AppError::bad_request(
            "field `replace`: not accepted when dismissing",
        ));
    }
    w.run(&state, StatusCode::OK, move |o| {
        o.dismiss(&user, &b.actor).map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/rehire", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "the user is rehired"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn rehire(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    let b: ActorBody = w.json(&state)?;
    w.run(&state, StatusCode::OK, move |o| {
        o.rehire(&user, &b.actor, b.replace.as_deref()).map(outcome)
    })
    .await
}

/// `PUT` (grant) and `DELETE` (revoke) of administrator rights.
async fn set_admin(
    state: Arc<AppState>,
    user: String,
    w: WriteRequest,
    admin: bool,
) -> Result<Response, AppError> {
    let b: ActorBody = w.json(&state)?;
    w.run(&state, StatusCode::OK, move |o| {
        o.set_admin(&user, &b.actor, admin).map(outcome)
    })
    .await
}

#[utoipa::path(put, path = "/v1/users/{id}/admin", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "administrator rights granted"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn grant_admin(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    set_admin(state, user, w, true).await
}

#[utoipa::path(delete, path = "/v1/users/{id}/admin", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "administrator rights revoked"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 403, description = "denied by the policies"), (status = 404, description = "no such account or user"), (status = 409, description = "seat limit, other company or conflict"), (status = 422, description = "invalid email, company not certified, invalid replace"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn revoke_admin(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    set_admin(state, user, w, false).await
}

#[utoipa::path(put, path = "/v1/partner-companies/{id}", tag = "orchestrator", params(("id" = String, Path, description = "the company id")), request_body = CompanyBody,
    responses((status = 200, description = "the saved registry entry"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn put_company(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    w: WriteRequest,
) -> Result<Response, AppError> {
    let b: CompanyBody = w.json(&state)?;
    let company = RegistryCompany {
        id,
        name: b.name,
        status: b.status,
        certified: b.certified,
        emails: b.emails,
    };
    w.run(&state, StatusCode::OK, move |o| {
        o.put_companies(vec![company])
            .map(|mut saved| json!(saved.pop()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/partner-companies", tag = "orchestrator",
    responses((status = 200, description = "the partner registry"), (status = 401, description = "no token (with --protect-queries)"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn list_companies(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, AppError> {
    let companies = blocking(&state, |o| o.companies()).await?;
    Ok(Json(json!({"companies": companies})))
}
