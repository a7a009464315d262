//! What every console page is made of: the layout (navigation, the token
//! box), fragments and their errors, JSON blocks, deferred sections and
//! query strings. Knows no page and no route.

use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::state::AppState;

/// The pages: (path, title).
const PAGES: [(&str, &str); 5] = [
    ("/console/policies", "Policies"),
    ("/console/try", "Try"),
    ("/console/tests", "Tests and proofs"),
    ("/console/decisions", "Decisions"),
    ("/console/partners", "Partners"),
];

/// A full page: layout, navigation, the token box, and `body`.
pub(super) fn layout(state: &AppState, active: &str, body: Markup) -> Response {
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
pub(super) fn deferred(state: &AppState, src: &str, inline: impl FnOnce() -> Markup) -> Markup {
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
pub(super) fn fragment(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// An error shown in place of a fragment, with the status of the API's
/// equivalent refusal.
pub(super) fn fragment_error(status: axum::http::StatusCode, message: &str) -> Response {
    (
        status,
        Html(html! { div.error { (message) } }.into_string()),
    )
        .into_response()
}

/// Pretty JSON in a `<pre>`, escaped.
pub(super) fn json_block(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// A logged or solver-made context as Try's context field: without `now`
/// (the sidecar supplies it; Try refuses a caller's), empty when nothing
/// else is left; and the `now` it held, if any.
pub(super) fn context_for_try(context: &serde_json::Value) -> (String, Option<serde_json::Value>) {
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
pub(super) fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
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
