//! The web console at `/console` (issue #18): server-rendered pages for
//! policy authors and auditors — Policies, Try, Tests and proofs,
//! Decisions, Partners — over the same library calls as the API and the
//! CLI (`Authz::is_authorized`, `suite::run`, `prove::check_pack`,
//! `audit::newest`, the orchestrator's `users`/`seats`, the partner
//! activity report). It owns no query and no decision of its own.
//!
//! Shape: each page is a *shell* (layout, navigation, forms; no data, never
//! behind the token) and a *fragment* (`/console/f/...`, the data, behind
//! the token exactly when the API's reads are: `--protect-queries`). Without
//! `--protect-queries` the shell embeds its fragment, so a page works with
//! no script at all; with it, `console.js` fetches the fragment with the
//! token the user typed once (kept in the tab's `sessionStorage`, sent only
//! as an `Authorization` header). Running tests or proofs is a POST and
//! always needs the token, like every write.
//!
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles only from `/console/assets`, nothing inline, no frames) and every
//! text from policies, entities or the log goes through maud's escaping.
//!
//! Must never know how a decision, a suite or a log query is computed.

mod assets;
pub mod decisions;
mod highlight;
mod partners;
mod policies;
mod tests;
mod try_page;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};

use super::AppState;

/// The console's Content-Security-Policy: nothing inline, nothing foreign.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the console reads besides the serving pack.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The policy directory (its files are listed from the pack).
    pub policies: PathBuf,
    /// The schema file (the invariants are read against it).
    pub schema: PathBuf,
    /// The invariants directory `prove` checks.
    pub invariants: PathBuf,
    /// The policy test suites (`--tests`).
    pub tests: PathBuf,
    /// The routes file beside the policies (gateway mode).
    pub routes: PathBuf,
    /// The quotas file beside the policies.
    pub quotas: PathBuf,
}

impl Settings {
    /// The console's inputs for a sidecar configured by `config`.
    pub fn of(config: &super::ServeConfig) -> Self {
        Settings {
            policies: config.policies.clone(),
            schema: config.schema.clone(),
            invariants: config.invariants.clone(),
            tests: config.tests.clone(),
            routes: partnergate_gateway::routes_path_for(&config.policies),
            quotas: partnergate_partners::rules::quotas_path_for(&config.policies),
        }
    }
}

/// The pages: (path, title).
const PAGES: [(&str, &str); 5] = [
    ("/console/policies", "Policies"),
    ("/console/try", "Try"),
    ("/console/tests", "Tests and proofs"),
    ("/console/decisions", "Decisions"),
    ("/console/partners", "Partners"),
];

/// Whether `path` is a console page shell or asset: served without the
/// token (it holds no data).
pub fn is_shell(path: &str) -> bool {
    path == "/console"
        || path == "/console/"
        || path.starts_with("/console/assets/")
        || PAGES.iter().any(|(p, _)| *p == path)
}

/// Whether `path` is the console's decision endpoint (a query, like
/// `/v1/is_authorized`: behind the token only with `--protect-queries`).
pub fn is_query(path: &str) -> bool {
    path == "/console/f/try"
}

/// The console's routes (added only when the console is on).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/policies") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/policies") }),
        )
        .route("/console/assets/{name}", get(assets::asset))
        .route("/console/policies", get(policies::page))
        .route("/console/f/policies", get(policies::fragment))
        .route("/console/f/policies/state", get(policies::state))
        .route("/console/try", get(try_page::page))
        .route("/console/f/try", post(try_page::decide))
        .route("/console/f/uids", get(try_page::uids))
        .route("/console/tests", get(tests::page))
        .route("/console/f/tests/run", post(tests::run_tests))
        .route("/console/f/proofs/run", post(tests::run_proofs))
        .route("/console/decisions", get(decisions::page))
        .route("/console/f/decisions", get(decisions::rows_fragment))
        .route("/console/f/decisions/histogram", get(decisions::histogram))
        .route("/console/f/decisions/one", get(decisions::one))
        .route("/console/f/decisions/verify", get(decisions::verify))
        .route("/console/partners", get(partners::page))
        .route("/console/f/partners", get(partners::fragment_route))
        .route(
            "/console/f/accounts/{id}/partner-activity",
            get(partners::activity),
        )
        .layer(axum::middleware::from_fn(headers))
}

/// The security headers of every console response.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A full page: layout, navigation, the token box, and `body`.
fn layout(state: &AppState, active: &str, body: Markup) -> Response {
    let title = PAGES
        .iter()
        .find(|(p, _)| *p == active)
        .map_or("Console", |(_, t)| *t);
    let version = state.authz.evaluator().current().version.clone();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · PartnerGate" }
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body data-protect-queries=(state.protect_queries) {
                header.top {
                    span.brand { "PartnerGate" }
                    nav {
                        @for (path, name) in PAGES {
                            a href=(path) class=[(path == active).then_some("active")] { (name) }
                        }
                    }
                    span.version title="serving policy version" { (version) }
                    form #token-form.token {
                        label for="token" { "Token" }
                        input #token type="password" autocomplete="off" placeholder="bearer token";
                        button type="submit" { "Use" }
                        span #token-state {}
                    }
                }
                main #main data-page=(title) { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// The data of a page: embedded in the shell, or (with
/// `--protect-queries`) a placeholder that `console.js` fills from `src`
/// with the token.
fn deferred(state: &AppState, src: &str, inline: impl FnOnce() -> Markup) -> Markup {
    if state.protect_queries {
        html! {
            div.fragment data-src=(src) {
                p.note { "This sidecar protects its queries: enter the token above to load this page's data." }
            }
        }
    } else {
        html! { div.fragment data-loaded="1" { (inline()) } }
    }
}

/// A fragment response (HTML, no layout).
fn fragment(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// An error shown in place of a fragment, with the status of the API's
/// equivalent refusal.
fn fragment_error(status: axum::http::StatusCode, message: &str) -> Response {
    (
        status,
        Html(html! { div.error { (message) } }.into_string()),
    )
        .into_response()
}

/// Pretty JSON in a `<pre>`, escaped.
fn json_block(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// A logged or solver-made context as Try's context field: without `now`
/// (the sidecar supplies it; Try refuses a caller's), empty when nothing
/// else is left; and the `now` it held, if any.
fn context_for_try(context: &serde_json::Value) -> (String, Option<serde_json::Value>) {
    let mut context = context.clone();
    let now = context
        .as_object_mut()
        .and_then(|m| m.remove(partnergate_policy::policies::CLOCK_ATTRIBUTE));
    let text = match &context {
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    (text, now)
}

/// The query string of `pairs`, percent-encoded.
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if v.is_empty() {
            continue;
        }
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}
