//! The Tests and proofs page: run the pack's suites (`suite::run`, as
//! `partnergate test` does) and its invariants (`prove::check_pack`, as
//! `partnergate prove` does) on the serving pack, on demand. Results per
//! case and per invariant, policy coverage, and counterexamples as requests
//! that open in Try. Both runs are POSTs: they need the token, and one
//! proof runs at a time (a second is refused with 409 while it runs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::page::{context_for_try, fragment, fragment_error, layout, query_string};
use crate::state::AppState;

/// `GET /console/tests`.
pub async fn page(State(state): State<Arc<AppState>>) -> Response {
    let (tests, invariants) = state.console.as_ref().map_or_else(Default::default, |c| {
        (
            c.tests.display().to_string(),
            c.invariants.display().to_string(),
        )
    });
    let body = html! {
        h1 { "Tests and proofs" }
        p.note { "Both run on the serving pack and need the token (they use the sidecar's CPU)." }
        section {
            h2 { "Test suites " span.mono { (tests) } }
            form.run data-post="/console/f/tests/run" data-target="tests-result" {
                button #run-tests type="submit" { "Run tests" }
            }
            div #tests-result {}
        }
        section {
            h2 { "Invariants " span.mono { (invariants) } }
            form.run data-post="/console/f/proofs/run" data-target="proofs-result" {
                button #run-proofs type="submit" { "Run proofs (cvc5)" }
            }
            div #proofs-result {}
        }
    };
    layout(&state, "/console/tests", body)
}

/// `POST /console/f/tests/run`.
pub async fn run_tests(State(state): State<Arc<AppState>>) -> Response {
    use partnergate_policy::suite;
    let Some(settings) = state.console.clone() else {
        return fragment_error(StatusCode::NOT_FOUND, "the console is off");
    };
    let pack = state.authz.evaluator().current();
    let run = tokio::task::spawn_blocking(move || -> Result<suite::Report, String> {
        let files =
            suite::discover(std::slice::from_ref(&settings.tests)).map_err(|e| e.to_string())?;
        let suites = files
            .iter()
            .map(|f| suite::read_suite(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(suite::run(&pack, &suites))
    })
    .await;
    match run {
        Ok(Ok(report)) => fragment(tests_report(&report)),
        Ok(Err(m)) => fragment_error(StatusCode::UNPROCESSABLE_ENTITY, &m),
        Err(e) => fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn tests_report(r: &partnergate_policy::suite::Report) -> Markup {
    html! {
        p #tests-summary class=(if r.failed() == 0 { "ok" } else { "bad" }) {
            (r.passed()) " passed, " (r.failed()) " failed; coverage "
            (format!("{:.0}", r.coverage_percent())) "% of " (r.total_policies) " policies"
        }
        @if !r.uncovered.is_empty() {
            p.note { "Never a determining policy: " @for (i, id) in r.uncovered.iter().enumerate() { @if i > 0 { ", " } span.mono { (id) } } }
        }
        table.results {
            thead { tr { th { "Suite" } th { "Case" } th { "Result" } th { "Decision" } } }
            tbody {
                @for c in &r.results {
                    tr class=(if c.passed { "pass" } else { "fail" }) {
                        td.mono { (c.suite.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()) }
                        td { (c.name) }
                        td { @if c.passed { "pass" } @else { "FAIL" @for d in &c.diff { br; span.diff { (d) } } } }
                        td { @if let Some(d) = &c.actual { (d.decision.as_str()) } }
                    }
                }
            }
        }
    }
}

/// One proof at a time.
static PROVING: AtomicBool = AtomicBool::new(false);

/// `POST /console/f/proofs/run`.
pub async fn run_proofs(State(state): State<Arc<AppState>>) -> Response {
    let Some(settings) = state.console.clone() else {
        return fragment_error(StatusCode::NOT_FOUND, "the console is off");
    };
    if PROVING.swap(true, Ordering::AcqRel) {
        return fragment_error(
            StatusCode::CONFLICT,
            "a proof is already running; try again when it has finished",
        );
    }
    let pack = state.authz.evaluator().current();
    let run = tokio::task::spawn_blocking(move || {
        partnergate_prove::check_pack(&pack, &settings.invariants)
    })
    .await;
    PROVING.store(false, Ordering::Release);
    match run {
        Ok(Ok(report)) => fragment(proof_report(&report)),
        Ok(Err(e)) => fragment_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(e) => fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn proof_report(r: &partnergate_prove::ProofReport) -> Markup {
    let held = r.results.iter().filter(|i| i.holds).count();
    // Violations first: they are what the author came for.
    let mut results: Vec<_> = r.results.iter().collect();
    results.sort_by_key(|i| i.holds);
    html! {
        p #proofs-summary class=(if r.holds() { "ok" } else { "bad" }) {
            (held) " of " (r.results.len()) " invariants hold under " span.mono { (r.policy_version) }
            " (" (format!("{:.0}", r.total_millis)) " ms, " (r.environments.len()) " request environments)"
        }
        table.results {
            thead { tr { th { "Invariant" } th { "Kind" } th { "Result" } th { "Counterexamples" } } }
            tbody {
                @for i in &results {
                    tr class=(if i.holds { "pass" } else { "fail" }) {
                        td { span.mono { (i.id) } @if let Some(d) = &i.description { br; span.note { (d) } } }
                        td { (i.kind.as_str()) }
                        td { @if i.holds { "holds" } @else { "VIOLATED" } }
                        td {
                            @for v in &i.violations {
                                (counterexample(v))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn counterexample(v: &partnergate_prove::Violation) -> Markup {
    let c = &v.counterexample;
    // The link leaves `now` out, and says which time the solver chose.
    let (context, now) = context_for_try(&c.context);
    let entities = serde_json::to_string(&c.entities).unwrap_or_default();
    let href = format!(
        "/console/try{}",
        query_string([
            ("principal", c.principal.as_str()),
            ("action", c.action.as_str()),
            ("resource", c.resource.as_str()),
            ("context", context.as_str()),
            ("entities", entities.as_str()),
        ])
    );
    html! {
        div.cex {
            span.mono { (c.principal) " " (c.action) " " (c.resource) }
            @if let Some(p) = &v.policy { " (policy " span.mono { (p) } ")" }
            " → " (c.production.decision.as_str()) " "
            a.open-try href=(href) { "open in Try" }
            @if let Some(now) = now { span.note { " (the solver's now: " (now.to_string()) "; Try decides at the sidecar's time)" } }
        }
    }
}
