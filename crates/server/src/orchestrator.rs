//! The orchestrator's HTTP endpoints: partner invitations, users, seats and
//! the partner registry. Every write needs the bearer token; the work is
//! [`partnergate_orchestrator::Orchestrator`]'s, this module only maps the wire.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{Access, Routes};
use crate::decide::RequestId;
use crate::error::AppError;
use crate::http::parse_body;
use crate::idempotency;
use crate::state::AppState;
use partnergate_orchestrator::access::AccessRequest;
use partnergate_orchestrator::store::RegistryCompany;
use partnergate_orchestrator::{
    InvalidCode, Orchestrator, OrchestratorError, ScopedWrites, WriteScope,
};

/// The partner routes: invitations, users, seats, partner access,
/// dismiss/rehire, admin rights and the partner registry (writes and
/// reads), and what a customer's partners did (always behind the token).
pub fn routes() -> Routes {
    let json = || axum::middleware::from_fn(crate::http::require_json);
    Routes::default()
        .with(
            Access::Write,
            Router::new()
                .route("/v1/accounts/{id}/partners", post(invite_partner))
                .route("/v1/accounts/{id}/users", post(invite_user))
                .route("/v1/users/{id}/accept", post(accept))
                .route("/v1/users/{id}/partner-access", post(partner_access))
                .route("/v1/users/{id}/dismiss", post(dismiss))
                .route("/v1/users/{id}/rehire", post(rehire))
                .route("/v1/users/{id}/partner-access/renew", post(renew_access))
                .route("/v1/users/{id}/partner-access/end", post(end_access))
                .route(
                    "/v1/users/{id}/partner-access/suspend",
                    post(suspend_access),
                )
                .route("/v1/users/{id}/partner-access/resume", post(resume_access))
                .route(
                    "/v1/accounts/{id}/partner-request-codes",
                    post(create_request_code),
                )
                .route("/v1/accounts/{id}/partner-requests", post(request_access))
                .route("/v1/partner-requests/{id}/approve", post(approve_request))
                .route("/v1/partner-requests/{id}/decline", post(decline_request))
                .route(
                    "/v1/users/{id}/admin",
                    put(grant_admin).delete(revoke_admin),
                )
                .route("/v1/partner-companies/{id}", put(put_company))
                .route_layer(json()),
        )
        .with(
            Access::Query,
            Router::new()
                .route("/v1/accounts/{id}/partners", get(list_partners))
                .route("/v1/accounts/{id}/users", get(list_users))
                .route("/v1/accounts/{id}/seats", get(seats))
                .route("/v1/accounts/{id}/partner-requests", get(list_requests))
                .route("/v1/partner-companies", get(list_companies)),
        )
        .with(
            Access::Private,
            Router::new().route("/v1/accounts/{id}/partner-activity", get(partner_activity)),
        )
}

/// This door's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        invite_partner,
        list_partners,
        invite_user,
        list_users,
        seats,
        accept,
        partner_access,
        dismiss,
        rehire,
        renew_access,
        end_access,
        suspend_access,
        resume_access,
        create_request_code,
        request_access,
        list_requests,
        approve_request,
        decline_request,
        partner_activity,
        grant_admin,
        revoke_admin,
        list_companies,
        put_company
    ),
    components(schemas(
        InviteBody,
        ActorBody,
        RenewBody,
        CompanyBody,
        RequestBody,
        ApproveBody
    ))
)]
pub struct Doc;

impl From<OrchestratorError> for AppError {
    fn from(e: OrchestratorError) -> Self {
        let status = match &e {
            OrchestratorError::InvalidEmail { .. } | OrchestratorError::NotCertified { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            OrchestratorError::RequestCode(_) => StatusCode::FORBIDDEN,
            OrchestratorError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            OrchestratorError::Invalid {
                code:
                    InvalidCode::Replace
                    | InvalidCode::Access
                    | InvalidCode::AccessTooLong
                    | InvalidCode::UnknownScope
                    | InvalidCode::AccessWidened,
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
    /// The end of the partner access (RFC 3339); not with `duration`.
    expires_at: Option<String>,
    /// The access's length from now (`90d`, `36h`, `45m`, `30s`).
    duration: Option<String>,
    /// What the partner may administer (scope names of the schema).
    scopes: Option<Vec<String>>,
}

impl InviteBody {
    fn access(&self) -> AccessRequest {
        AccessRequest {
            expires_at: self.expires_at.clone(),
            duration: self.duration.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActorBody {
    actor: String,
    replace: Option<String>,
    /// Partner access and a partner's rehire: the end (RFC 3339).
    expires_at: Option<String>,
    /// Partner access and a partner's rehire: the length from now.
    duration: Option<String>,
    /// Partner access and a partner's rehire: the scopes.
    scopes: Option<Vec<String>>,
}

impl ActorBody {
    fn access(&self) -> AccessRequest {
        AccessRequest {
            expires_at: self.expires_at.clone(),
            duration: self.duration.clone(),
            scopes: self.scopes.clone(),
        }
    }

    /// A 400 when access fields are given where they do not apply.
    fn no_access(&self, why: &str) -> Result<(), AppError> {
        match self.access() {
            a if a.is_empty() => Ok(()),
            _ => Err(AppError::bad_request(format!(
                "fields `expires_at`, `duration`, `scopes`: {why}"
            ))),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RenewBody {
    actor: String,
    /// The new end (RFC 3339); not with `duration`.
    expires_at: Option<String>,
    /// The new length from now (`90d`, ...).
    duration: Option<String>,
}

/// A partner's access request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestBody {
    /// The person asking: an email of a certified Gold company of the
    /// registry (the calling service vouches for it, as for an actor).
    email: String,
    /// The request code an administrator of the account made.
    code: Option<String>,
    /// The scopes asked for (absent: the default set).
    scopes: Option<Vec<String>>,
    /// The length asked for, from the approval (`90d`, `36h`).
    duration: Option<String>,
}

/// An approval: optionally narrower scopes, a shorter length, a partner
/// to dismiss when the seats are full.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveBody {
    actor: String,
    replace: Option<String>,
    /// Fewer scopes than asked for (never others).
    scopes: Option<Vec<String>>,
    /// A shorter length than asked for (never longer).
    duration: Option<String>,
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

/// The refusals every partner and user write can answer (OpenAPI).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only described, never built
pub(super) enum WriteRefusals {
    #[response(status = 400, description = "invalid request")]
    BadRequest,
    #[response(status = 401, description = "no or wrong bearer token")]
    Unauthorized,
    #[response(status = 403, description = "denied by the policies")]
    Denied,
    #[response(status = 404, description = "no such account or user")]
    NotFound,
    #[response(status = 409, description = "seat limit, other company or conflict")]
    Conflict,
    #[response(
        status = 422,
        description = "invalid email, company not certified, invalid replace"
    )]
    Unprocessable,
    #[response(status = 503, description = "the store is unavailable")]
    Unavailable,
}

/// One orchestrator write request, as every write handler takes it: the
/// route (method and path, part of the `Idempotency-Key` fingerprint), the
/// headers (`Idempotency-Key`, `X-Request-ID`) and the raw body.
pub(super) struct WriteRequest {
    state: Arc<AppState>,
    route: String,
    headers: HeaderMap,
    request_id: Option<String>,
    body: Bytes,
}

impl FromRequest<Arc<AppState>> for WriteRequest {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let route = format!("{} {}", req.method(), req.uri().path());
        let (mut parts, body) = req.into_parts();
        let Ok(RequestId(request_id)) = RequestId::from_request_parts(&mut parts, state).await;
        let headers = parts.headers.clone();
        let req = Request::from_parts(parts, body);
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WriteRequest {
            state: state.clone(),
            route,
            headers,
            request_id,
            body,
        })
    }
}

/// What a write handler answers.
type Answer = Result<Response, AppError>;

/// A 400 when `replace` is given where it does not apply.
fn no_replace(replace: &Option<String>, why: &str) -> Result<(), AppError> {
    match replace {
        Some(_) => Err(AppError::bad_request(format!("field `replace`: {why}"))),
        None => Ok(()),
    }
}

impl WriteRequest {
    /// The JSON body.
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, AppError> {
        parse_body(&self.state, &self.body)
    }

    /// Run the write off the async runtime, under the request's deadline
    /// (checked when its transaction begins: a write either answers its
    /// outcome or, having applied nothing, 408), its `Idempotency-Key` (a
    /// retry of the same request gets the first answer without re-applying)
    /// and its request id (carried by the operation's decision and change
    /// records); a success answers `status`.
    async fn run(
        self,
        status: StatusCode,
        f: impl FnOnce(&ScopedWrites<'_>) -> Result<Value, OrchestratorError> + Send + 'static,
    ) -> Answer {
        let state = &self.state;
        let key = idempotency::from_headers(&self.headers, &self.route, &self.body, status)?;
        if let Some(i) = &key {
            if let Some(replay) = idempotency::recalled(state, i).await? {
                return Ok(replay);
            }
        }
        let scope = WriteScope {
            deadline: Some(std::time::Instant::now() + state.request_timeout),
            idempotency: key,
            request_id: self.request_id.clone(),
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

fn outcome(o: partnergate_orchestrator::Outcome) -> Value {
    json!(o)
}

#[utoipa::path(post, path = "/v1/accounts/{id}/partners", tag = "orchestrator", params(("id" = String, Path, description = "the account id")), request_body = InviteBody,
    responses((status = 201, description = "the invitation (a seat taken, or the replaced partner dismissed)"), WriteRefusals))]
pub(super) async fn invite_partner(Path(account): Path<String>, w: WriteRequest) -> Answer {
    let b: InviteBody = w.json()?;
    w.run(StatusCode::CREATED, move |o| {
        let (name, replace) = (b.name.as_deref(), b.replace.as_deref());
        o.invite_partner(&account, &b.actor, &b.email, name, (replace, &b.access()))
            .map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/accounts/{id}/users", tag = "orchestrator", params(("id" = String, Path, description = "the account id")), request_body = InviteBody,
    responses((status = 201, description = "the invited user"), WriteRefusals))]
pub(super) async fn invite_user(Path(account): Path<String>, w: WriteRequest) -> Answer {
    let b: InviteBody = w.json()?;
    no_replace(&b.replace, "only partner invitations replace someone")?;
    if !b.access().is_empty() {
        return Err(AppError::bad_request(
            "fields `expires_at`, `duration`, `scopes`: only partner invitations take them",
        ));
    }
    let invite =
        move |o: &ScopedWrites<'_>| o.invite_user(&account, &b.actor, &b.email, b.name.as_deref());
    w.run(StatusCode::CREATED, move |o| invite(o).map(outcome))
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
    let (users, now) = blocking(&state, move |o| Ok((o.users(&a)?, o.now()))).await?;
    let partners: Vec<_> = users
        .into_iter()
        .filter(|u| u.user.holds_partner_seat(now))
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
    responses((status = 200, description = "the user is active"), WriteRefusals))]
pub(super) async fn accept(Path(user): Path<String>, w: WriteRequest) -> Answer {
    w.run(StatusCode::OK, move |o| o.accept(&user).map(outcome))
        .await
}

#[utoipa::path(post, path = "/v1/users/{id}/partner-access", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "partner access granted"), WriteRefusals))]
pub(super) async fn partner_access(Path(user): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    let grant = move |o: &ScopedWrites<'_>| {
        o.grant_partner_access(&user, &b.actor, (b.replace.as_deref(), &b.access()))
    };
    w.run(StatusCode::OK, move |o| grant(o).map(outcome)).await
}

#[utoipa::path(post, path = "/v1/users/{id}/dismiss", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "the user is dismissed"), WriteRefusals))]
pub(super) async fn dismiss(Path(user): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    no_replace(&b.replace, "not accepted when dismissing")?;
    b.no_access("not accepted when dismissing")?;
    w.run(StatusCode::OK, move |o| {
        o.dismiss(&user, &b.actor).map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/rehire", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "the user is rehired"), WriteRefusals))]
pub(super) async fn rehire(Path(user): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    let rehire =
        move |o: &ScopedWrites<'_>| o.rehire(&user, &b.actor, (b.replace.as_deref(), &b.access()));
    w.run(StatusCode::OK, move |o| rehire(o).map(outcome)).await
}

/// `PUT` (grant) and `DELETE` (revoke) of administrator rights.
async fn set_admin(user: String, w: WriteRequest, admin: bool) -> Answer {
    let b: ActorBody = w.json()?;
    no_replace(&b.replace, "not accepted for admin rights")?;
    b.no_access("not accepted for admin rights")?;
    w.run(StatusCode::OK, move |o| {
        o.set_admin(&user, &b.actor, admin).map(outcome)
    })
    .await
}

#[utoipa::path(put, path = "/v1/users/{id}/admin", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "administrator rights granted"), WriteRefusals))]
pub(super) async fn grant_admin(Path(user): Path<String>, w: WriteRequest) -> Answer {
    set_admin(user, w, true).await
}

#[utoipa::path(delete, path = "/v1/users/{id}/admin", tag = "orchestrator", params(("id" = String, Path, description = "the user id")), request_body = ActorBody,
    responses((status = 200, description = "administrator rights revoked"), WriteRefusals))]
pub(super) async fn revoke_admin(Path(user): Path<String>, w: WriteRequest) -> Answer {
    set_admin(user, w, false).await
}

#[utoipa::path(post, path = "/v1/users/{id}/partner-access/renew", tag = "orchestrator", params(("id" = String, Path, description = "the partner's user id")), request_body = RenewBody,
    responses((status = 200, description = "the partner with its new end"), WriteRefusals))]
pub(super) async fn renew_access(Path(user): Path<String>, w: WriteRequest) -> Answer {
    let b: RenewBody = w.json()?;
    let req = AccessRequest {
        expires_at: b.expires_at,
        duration: b.duration,
        scopes: None,
    };
    let actor = b.actor;
    w.run(StatusCode::OK, move |o| {
        o.renew(&user, &actor, &req).map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/partner-access/end", tag = "orchestrator", params(("id" = String, Path, description = "the partner's user id")), request_body = ActorBody,
    responses((status = 200, description = "the access ended: the partner is dismissed, the seat free"), WriteRefusals))]
pub(super) async fn end_access(Path(user): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    no_replace(&b.replace, "not accepted when ending an access")?;
    b.no_access("not accepted when ending an access")?;
    w.run(StatusCode::OK, move |o| {
        o.end_access(&user, &b.actor).map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/partner-access/suspend", tag = "orchestrator", params(("id" = String, Path, description = "the partner's user id")), request_body = ActorBody,
    responses((status = 200, description = "the access suspended: the partner can do nothing, the seat stays taken"), WriteRefusals))]
pub(super) async fn suspend_access(Path(user): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    no_replace(&b.replace, "not accepted when suspending an access")?;
    b.no_access("not accepted when suspending an access")?;
    w.run(StatusCode::OK, move |o| {
        o.suspend(&user, &b.actor).map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/partner-access/resume", tag = "orchestrator", params(("id" = String, Path, description = "the partner's user id")), request_body = ActorBody,
    responses((status = 200, description = "the access resumed: the partner works again within its scopes and end"), WriteRefusals))]
pub(super) async fn resume_access(Path(user): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    no_replace(&b.replace, "not accepted when resuming an access")?;
    b.no_access("not accepted when resuming an access")?;
    w.run(StatusCode::OK, move |o| {
        o.resume(&user, &b.actor).map(outcome)
    })
    .await
}

#[utoipa::path(post, path = "/v1/accounts/{id}/partner-request-codes", tag = "orchestrator", params(("id" = String, Path, description = "the account id")), request_body = ActorBody,
    responses((status = 201, description = "a new request code, shown only in this answer (single use, it expires)"), WriteRefusals))]
pub(super) async fn create_request_code(Path(account): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    no_replace(&b.replace, "not accepted when making a request code")?;
    b.no_access("not accepted when making a request code")?;
    w.run(StatusCode::CREATED, move |o| {
        o.create_request_code(&account, &b.actor).map(|c| json!(c))
    })
    .await
}

#[utoipa::path(post, path = "/v1/accounts/{id}/partner-requests", tag = "orchestrator", params(("id" = String, Path, description = "the account id")), request_body = RequestBody,
    responses((status = 201, description = "the pending request"), (status = 403, description = "no open request code of the account, or denied by the policies"), (status = 429, description = "too many wrong request codes lately"), WriteRefusals))]
pub(super) async fn request_access(Path(account): Path<String>, w: WriteRequest) -> Answer {
    let b: RequestBody = w.json()?;
    let ask = AccessRequest {
        expires_at: None,
        duration: b.duration.clone(),
        scopes: b.scopes.clone(),
    };
    w.run(StatusCode::CREATED, move |o| {
        o.request_access(&account, &b.email, b.code.as_deref(), &ask)
            .map(|r| json!(r))
    })
    .await
}

#[utoipa::path(get, path = "/v1/accounts/{id}/partner-requests", tag = "orchestrator", params(("id" = String, Path, description = "the account id")),
    responses((status = 200, description = "the account's access requests, newest first"), (status = 401, description = "no token (with --protect-queries)"), (status = 404, description = "no such account"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn list_requests(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
) -> Result<Json<Value>, AppError> {
    let a = account.clone();
    let requests = blocking(&state, move |o| o.requests(&a)).await?;
    Ok(Json(json!({"account": account, "requests": requests})))
}

#[utoipa::path(post, path = "/v1/partner-requests/{id}/approve", tag = "orchestrator", params(("id" = String, Path, description = "the request id")), request_body = ApproveBody,
    responses((status = 200, description = "the request approved and the partner it made (active)"), WriteRefusals))]
pub(super) async fn approve_request(Path(request): Path<String>, w: WriteRequest) -> Answer {
    let b: ApproveBody = w.json()?;
    let narrowed = AccessRequest {
        expires_at: None,
        duration: b.duration.clone(),
        scopes: b.scopes.clone(),
    };
    w.run(StatusCode::OK, move |o| {
        o.approve_request(&request, &b.actor, (b.replace.as_deref(), &narrowed))
            .map(|r| json!(r))
    })
    .await
}

#[utoipa::path(post, path = "/v1/partner-requests/{id}/decline", tag = "orchestrator", params(("id" = String, Path, description = "the request id")), request_body = ActorBody,
    responses((status = 200, description = "the request declined"), WriteRefusals))]
pub(super) async fn decline_request(Path(request): Path<String>, w: WriteRequest) -> Answer {
    let b: ActorBody = w.json()?;
    no_replace(&b.replace, "not accepted when declining a request")?;
    b.no_access("not accepted when declining a request")?;
    w.run(StatusCode::OK, move |o| {
        o.decline_request(&request, &b.actor).map(|r| json!(r))
    })
    .await
}

/// The query of `GET /v1/accounts/{id}/partner-activity`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct ActivityParams {
    /// One partner (`pat` or `User::"pat"`); default: every partner.
    partner: Option<String>,
    /// Records at or after this time (RFC 3339, or a date YYYY-MM-DD).
    since: Option<String>,
    /// Records before this time.
    until: Option<String>,
}

#[utoipa::path(get, path = "/v1/accounts/{id}/partner-activity", tag = "orchestrator", params(("id" = String, Path, description = "the account id"), ActivityParams),
    responses((status = 200, description = "every decision and change of the account's partners in the range, with the reasons and the chain check"), (status = 400, description = "a bad time bound"), (status = 401, description = "no or wrong bearer token"), (status = 404, description = "decisions are not logged to a file"), (status = 503, description = "the log (or, while the replica ships its log into PostgreSQL, the database holding every replica's log) cannot be read")))]
pub(super) async fn partner_activity(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
    axum::extract::Query(p): axum::extract::Query<ActivityParams>,
) -> Result<Json<Value>, AppError> {
    use partnergate_orchestrator::activity;
    let bound = |field: &str, v: Option<String>| {
        v.map(|s| partnergate_audit::query::parse_time(&s))
            .transpose()
            .map_err(|m| AppError::bad_request(format!("query `{field}`: {m}")))
    };
    let q = activity::ActivityQuery {
        account,
        partner: p.partner,
        since: bound("since", p.since)?,
        until: bound("until", p.until)?,
    };
    let source = activity_source(&state).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this sidecar does not log decisions to a file (--audit-log): there is no activity to report",
        )
    })?;
    let report = tokio::task::spawn_blocking(move || source.report(&q))
        .await
        .map_err(|e| AppError::unavailable(e.to_string()))?
        .map_err(|e| AppError::unavailable(e.to_string()))?;
    Ok(Json(json!(report)))
}

/// Where the partner activity report reads: every replica's shipped logs
/// in the database while this replica ships its own, else its log file.
pub(crate) enum ActivitySource {
    /// The shipped logs.
    Db(Arc<partnergate_core::audit_db::DbReader>),
    /// The local log file.
    File(std::path::PathBuf),
}

impl ActivitySource {
    /// The report (blocking).
    pub(crate) fn report(
        &self,
        q: &partnergate_orchestrator::activity::ActivityQuery,
    ) -> Result<
        partnergate_orchestrator::activity::ActivityReport,
        partnergate_orchestrator::activity::ActivityError,
    > {
        use partnergate_orchestrator::activity;
        match self {
            ActivitySource::Db(db) => activity::partner_activity_db(&*db.store()?, q),
            ActivitySource::File(path) => activity::partner_activity(path, q),
        }
    }
}

/// The source of the activity report, if decisions are logged to a file.
pub(crate) fn activity_source(state: &AppState) -> Option<ActivitySource> {
    match (&state.audit_db, &state.audit_path) {
        (Some(db), _) => Some(ActivitySource::Db(db.clone())),
        (None, Some(path)) => Some(ActivitySource::File(path.clone())),
        (None, None) => None,
    }
}

#[utoipa::path(put, path = "/v1/partner-companies/{id}", tag = "orchestrator", params(("id" = String, Path, description = "the company id")), request_body = CompanyBody,
    responses((status = 200, description = "the saved registry entry"), (status = 400, description = "invalid request"), (status = 401, description = "no or wrong bearer token"), (status = 503, description = "the store is unavailable")))]
pub(super) async fn put_company(Path(id): Path<String>, w: WriteRequest) -> Answer {
    let b: CompanyBody = w.json()?;
    let company = RegistryCompany {
        id,
        name: b.name,
        status: b.status,
        certified: b.certified,
        emails: b.emails,
    };
    w.run(StatusCode::OK, move |o| {
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
