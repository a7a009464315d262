//! The Partners page: per account, the seats (paid users, administrators,
//! partners, the limit), the employees list with the Partner mark, the
//! pending invitations, and each partner's activity (the partner activity
//! report, which is always behind the token, as its API is). Reads go
//! through the orchestrator's `users` and `seats`, as
//! `GET /v1/accounts/{id}/users` and `/seats` do.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::page::{deferred, fragment, fragment_error, layout, query_string};
use crate::state::AppState;

/// `?account=`.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    #[serde(default)]
    account: String,
}

/// The stored accounts, sorted (at most `limit`).
fn accounts(state: &AppState, limit: usize) -> Vec<String> {
    let Ok(ty) = "Account".parse() else {
        return Vec::new();
    };
    let mut ids: Vec<String> = state
        .authz
        .directory()
        .uids_of_type(&ty)
        .into_iter()
        .map(|u| u.id().unescaped().to_string())
        .collect();
    ids.sort();
    ids.truncate(limit);
    ids
}

/// `GET /console/partners`.
pub async fn page(State(state): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let st = state.clone();
    let account = p.account.trim().to_string();
    let inline = tokio::task::spawn_blocking(move || {
        (!st.protect_queries).then(|| (accounts(&st, 500), content(&st, &account)))
    })
    .await
    .ok()
    .flatten();
    let src = format!(
        "/console/f/partners{}",
        query_string([("account", p.account.as_str())])
    );
    let body = html! {
        h1 { "Partners" }
        form #account-form.filters method="get" action="/console/partners" {
            label { "Account " input #account name="account" value=(p.account) placeholder="acme" list="accounts"; }
            datalist #accounts {
                @if let Some((ids, _)) = &inline { @for id in ids { option value=(id) {} } }
            }
            button type="submit" { "Show" }
        }
        (deferred(&state, &src, || inline.map(|(_, m)| m).unwrap_or_default()))
    };
    layout(&state, "/console/partners", body)
}

/// `GET /console/f/partners?account=`.
pub async fn fragment_route(
    State(state): State<Arc<AppState>>,
    Query(p): Query<Params>,
) -> Response {
    let account = p.account.trim().to_string();
    match tokio::task::spawn_blocking(move || content(&state, &account)).await {
        Ok(m) => fragment(m),
        Err(e) => fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn content(state: &AppState, account: &str) -> Markup {
    if account.is_empty() {
        return html! { p.note { "Choose an account." } };
    }
    let o = &state.orchestrator;
    let (seats, users) = match (o.seats(account), o.users(account)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return html! { div.error { (e.to_string()) } },
    };
    let users: Vec<Value> = users
        .iter()
        .filter_map(|u| serde_json::to_value(u).ok())
        .collect();
    let s = |u: &Value, k: &str| u.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let invited: Vec<&Value> = users
        .iter()
        .filter(|u| s(u, "list_status") == "invited")
        .collect();
    let partners: Vec<&Value> = users
        .iter()
        .filter(|u| u.get("partner").is_some())
        .collect();
    html! {
        section.seats #seats {
            h2 { "Seats of " span.mono { (account) } }
            dl {
                dt { "Paid users" } dd { (seats.paid_users) }
                dt { "Administrators" } dd { (seats.administrators) }
                dt { "Partners" } dd { (seats.partners) " of at most " (seats.partner_limit) }
                @if seats.suspended_partners > 0 {
                    dt { "Suspended partners" } dd { (seats.suspended_partners) " (holding their seats)" }
                }
            }
        }
        section {
            h2 { "Employees" }
            table.results #employees {
                thead { tr { th { "User" } th { "Email" } th { "Status" } th { "" } th { "Company" } th { "Access ends" } } }
                tbody {
                    @for u in &users {
                        tr {
                            td.mono { (s(u, "id")) }
                            td { (s(u, "email")) }
                            td { (s(u, "list_status")) }
                            td { @if let Some(m) = u.get("mark").and_then(Value::as_str) { span.mark { (m) } } }
                            td.mono { (u.pointer("/partner/company").and_then(Value::as_str).unwrap_or("")) }
                            td { (u.pointer("/partner/expires_at").map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Pending invitations" }
            @if invited.is_empty() { p.note { "None." } }
            ul { @for u in &invited { li { span.mono { (s(u, "id")) } " " (s(u, "email")) } } }
        }
        section {
            h2 { "Partners' activity" }
            p.note { "What each partner did in this account (decisions and the changes they permitted), from the decision log; needs the token." }
            @for u in &partners {
                @let id = s(u, "id");
                div.activity data-src={ "/console/f/accounts/" (path_segment(account)) "/partner-activity" (query_string([("partner", id.as_str())])) } {
                    button.load type="button" { "Activity of " (id) }
                }
            }
        }
    }
}

/// `account` as one path segment, percent-encoded.
fn path_segment(s: &str) -> String {
    query_string([("x", s)])
        .trim_start_matches("?x=")
        .to_string()
}

/// `?partner=`.
#[derive(Debug, Default, Deserialize)]
pub struct ActivityParams {
    #[serde(default)]
    partner: Option<String>,
}

/// `GET /console/f/accounts/{id}/partner-activity?partner=`: the report.
pub async fn activity(
    State(state): State<Arc<AppState>>,
    Path(account): Path<String>,
    Query(p): Query<ActivityParams>,
) -> Response {
    use partnergate_orchestrator::activity;
    let Some(source) = crate::orchestrator::activity_source(&state) else {
        return fragment_error(StatusCode::NOT_FOUND, "this sidecar does not log decisions to a file (--audit-log): there is no activity to report");
    };
    let q = activity::ActivityQuery {
        account,
        partner: p.partner,
        since: None,
        until: None,
    };
    let report = match tokio::task::spawn_blocking(move || source.report(&q)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e @ activity::ActivityError::Database(_))) => {
            return fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Ok(Err(e)) => return fragment_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(e) => return fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    fragment(html! {
        p class=(if report.chain.verified { "ok" } else { "bad" }) {
            (report.items.len()) " records; chain "
            @if report.chain.verified { "verified" } @else { "NOT verified" @if let Some(pr) = &report.chain.problem { ": " (pr) } }
            @if report.truncated { " (truncated)" }
        }
        table.results {
            thead { tr { th { "Time" } th { "Kind" } th { "Action" } th { "Resource" } th { "Outcome" } th { "Policies" } } }
            tbody {
                @for i in &report.items {
                    tr {
                        td.mono { (i.ts) }
                        td { (i.kind) }
                        td.mono { (i.action) }
                        td.mono { (i.resource.as_deref().unwrap_or("")) }
                        td { (i.outcome) }
                        td.mono { (i.reasons.join(", ")) }
                    }
                }
            }
        }
    })
}
