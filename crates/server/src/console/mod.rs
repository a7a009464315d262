//! The web console at `/console`: server-rendered pages for
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
mod page;
mod partners;
mod policies;
mod tests;
mod try_page;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::access::{Access, Routes};

/// The console's Content-Security-Policy: nothing inline, nothing foreign.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The console's routes (added only when the console is on): the page
/// shells and assets hold no data (public); the fragments are reads and
/// Try is a decision (queries: the token with `--protect-queries`);
/// running tests or proofs is a write; a customer's partner activity and
/// the log's verification are always behind the token.
pub fn routes() -> Routes {
    let redirect = || get(|| async { Redirect::to("/console/policies") });
    Routes::default()
        .with(
            Access::Public,
            Router::new()
                .route("/console", redirect())
                .route("/console/", redirect())
                .route("/console/assets/{name}", get(assets::asset))
                .route("/console/policies", get(policies::page))
                .route("/console/try", get(try_page::page))
                .route("/console/tests", get(tests::page))
                .route("/console/decisions", get(decisions::page))
                .route("/console/partners", get(partners::page)),
        )
        .with(
            Access::Query,
            Router::new()
                .route("/console/f/policies", get(policies::fragment))
                .route("/console/f/policies/state", get(policies::state))
                .route("/console/f/try", post(try_page::decide))
                .route("/console/f/uids", get(try_page::uids))
                .route("/console/f/decisions", get(decisions::rows_fragment))
                .route("/console/f/decisions/histogram", get(decisions::histogram))
                .route("/console/f/decisions/one", get(decisions::one))
                .route("/console/f/partners", get(partners::fragment_route)),
        )
        .with(
            Access::Write,
            Router::new()
                .route("/console/f/tests/run", post(tests::run_tests))
                .route("/console/f/proofs/run", post(tests::run_proofs)),
        )
        .with(
            Access::Private,
            Router::new()
                .route("/console/f/decisions/verify", get(decisions::verify))
                .route(
                    "/console/f/accounts/{id}/partner-activity",
                    get(partners::activity),
                ),
        )
}

/// The security headers of every response under `/console` — the pages,
/// and also the answers no console route makes: a 404 of an unknown page,
/// the 401 of a fragment asked without the token (the router applies this
/// outside its token guard and fallback).
pub async fn headers(req: Request, next: Next) -> Response {
    let console = req.uri().path() == "/console" || req.uri().path().starts_with("/console/");
    let mut resp = next.run(req).await;
    if !console {
        return resp;
    }
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
