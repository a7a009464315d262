//! The Policies page: the serving version and when it was loaded, each
//! policy file with its policies (`@id`, `@description`, effect, coloured
//! source), the last reload error with file, line, column and caret, the
//! shadow set, and the routes and quotas files. `console.js` polls
//! [`state`] every second and reloads the data when the version or the
//! reload counts change, so a refused save shows within the second.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde_json::json;

use super::highlight;
use super::page::{deferred, fragment as html_fragment, layout};
use crate::state::AppState;

/// `GET /console/policies`.
pub async fn page(State(state): State<Arc<AppState>>) -> Response {
    let body = html! {
        h1 { "Policies" }
        div #policies-live data-state="/console/f/policies/state" data-src="/console/f/policies" {
            (deferred(&state, "/console/f/policies", || content(&state)))
        }
    };
    layout(&state, "/console/policies", body)
}

/// `GET /console/f/policies`: the page's data.
pub async fn fragment(State(state): State<Arc<AppState>>) -> Response {
    html_fragment(content(&state))
}

/// `GET /console/f/policies/state`: what changes on a reload (polled).
pub async fn state(State(state): State<Arc<AppState>>) -> Response {
    let ev = state.authz.evaluator();
    let status = ev.status();
    Json(json!({
        "version": ev.current().version,
        "successes": status.successes,
        "failures": status.failures,
    }))
    .into_response()
}

fn content(state: &AppState) -> Markup {
    let ev = state.authz.evaluator();
    let pack = ev.current();
    let status = ev.status();
    html! {
        section.summary {
            dl {
                dt { "Serving version" } dd.mono #serving-version { (pack.version) }
                dt { "Loaded at" } dd { (status.loaded_at) }
                dt { "Reloads" } dd { (status.successes) " loaded, " (status.failures) " refused" }
                dt { "Policies" } dd { (pack.policies.len()) }
            }
        }
        @if let Some(err) = &status.last_error {
            section.reload-error #reload-error {
                h2 { "Last reload refused at " (err.at) " — the version above still serves" }
                p { (err.message) }
                @for p in &err.problems {
                    div.problem {
                        p.where {
                            @if let Some(f) = &p.file { span.mono { (f.display()) } }
                            @if let (Some(l), Some(c)) = (p.line, p.column) { " line " (l) ", column " (c) }
                            @if let Some(id) = &p.policy_id { " — policy " span.mono { (id) } }
                        }
                        pre.caret { (p.rendered) }
                    }
                }
            }
        }
        @for file in pack.files.iter().filter(|f| Some(*f) != pack.schema_file.as_ref()) {
            (policy_file(&pack, file))
        }
        (shadow(state))
        (side_file("Routes (gateway mode)", &state.console.as_ref().map(|c| c.routes.clone())))
        (side_file("Quotas", &state.console.as_ref().map(|c| c.quotas.clone())))
    }
}

fn policy_file(pack: &partnergate_policy::policies::PolicyPack, file: &std::path::Path) -> Markup {
    html! {
        section.file {
            h2.mono { (file.display()) }
            @for p in pack.policies.iter().filter(|p| p.file == file) {
                article.policy id={ "policy-" (p.id) } {
                    header {
                        span class={ "effect " (p.effect) } { (p.effect) }
                        " "
                        span.mono.pid { (p.id) }
                        span.line { " line " (p.line) }
                    }
                    @if let Some(d) = &p.description { p.description { (d) } }
                    @if let Some(policy) = pack.policy_set.policy(&cedar_policy::PolicyId::new(&p.id)) {
                        (highlight::cedar(&policy.to_string()))
                    }
                }
            }
        }
    }
}

fn shadow(state: &AppState) -> Markup {
    let Some(shadow) = state.authz.shadow() else {
        return html! {};
    };
    let pack = shadow.current();
    html! {
        section.file.shadow {
            h2 { "Shadow set " span.mono { (pack.version) } }
            p.note { "Evaluated beside the live policies; disagreements are logged, never answered." }
            ul {
                @for p in &pack.policies {
                    li { span class={ "effect " (p.effect) } { (p.effect) } " " span.mono { (p.id) }
                        @if let Some(d) = &p.description { " — " (d) } }
                }
            }
        }
    }
}

fn side_file(title: &str, path: &Option<std::path::PathBuf>) -> Markup {
    let Some(path) = path else {
        return html! {};
    };
    // At most 256 KiB of it: this is a view, not a download.
    let text = std::fs::File::open(path).ok().map(|f| {
        use std::io::Read;
        let mut s = String::new();
        let _ = f.take(256 * 1024).read_to_string(&mut s);
        s
    });
    html! {
        section.file {
            h2 { (title) " " span.mono { (path.display()) } }
            @match text {
                Some(t) => { p.note { "As on disk now; it serves with the version above when it loaded with it." } pre.toml { (t) } }
                None => { p.note { "No such file." } }
            }
        }
    }
}
