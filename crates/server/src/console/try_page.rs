//! The Try page: compose a request (principal, action, resource from the
//! directory with search-as-you-type, context and request entities as
//! JSON), decide it through the same path as `POST /v1/is_authorized`
//! (`wire::to_query`, `decide::one`: validated, logged, cached, durable),
//! and show the decision, the determining policies with their
//! descriptions, the errors, the entity slice the decision saw, and the
//! request as a test case in the TOML suite format.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::page::{fragment, fragment_error, json_block, layout};
use crate::decide::{self, RequestId};
use crate::state::AppState;
use crate::wire::{to_query, IsAuthorizedRequest};

/// What the Try form holds (also its query string, to open a request in
/// Try from a decision or a counterexample).
#[derive(Debug, Default, Deserialize)]
pub struct TryForm {
    #[serde(default)]
    principal: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    /// The context as JSON text (empty: none).
    #[serde(default)]
    context: String,
    /// Request entities as JSON text (empty: none).
    #[serde(default)]
    entities: String,
}

/// `GET /console/try`: the form, filled from the query string.
pub async fn page(State(state): State<Arc<AppState>>, Query(f): Query<TryForm>) -> Response {
    let pack = state.authz.evaluator().current();
    let mut actions: Vec<String> = pack
        .schema
        .as_ref()
        .map(|s| {
            s.actions()
                .map(|a| a.id().unescaped().to_string())
                .collect()
        })
        .unwrap_or_default();
    actions.sort();
    let chosen = bare_action(&f.action);
    let body = html! {
        h1 { "Try a request" }
        form #try-form.try method="post" action="/console/f/try" {
            div.row {
                label for="principal" { "Principal" }
                input #principal name="principal" list="uids-principal" data-suggest="uids-principal"
                    placeholder="User::\"alice\"" value=(f.principal) required autocomplete="off";
                datalist #uids-principal {}
            }
            div.row {
                label for="action" { "Action" }
                select #action name="action" {
                    @for a in &actions {
                        option value=(a) selected[Some(a.as_str()) == chosen] { (a) }
                    }
                }
            }
            div.row {
                label for="resource" { "Resource" }
                input #resource name="resource" list="uids-resource" data-suggest="uids-resource"
                    placeholder="Account::\"acme\"" value=(f.resource) required autocomplete="off";
                datalist #uids-resource {}
            }
            div.row {
                label for="context" { "Context (JSON, checked against the schema)" }
                textarea #context name="context" rows="4" placeholder="{}" { (f.context) }
            }
            div.row {
                label for="entities" { "Request entities (JSON array, optional)" }
                textarea #entities name="entities" rows="3" placeholder="[]" { (f.entities) }
            }
            button #try-submit type="submit" { "Decide" }
        }
        div #try-result {}
    };
    layout(&state, "/console/try", body)
}

fn bare_action(a: &str) -> Option<&str> {
    let a = a.trim();
    if a.is_empty() {
        return None;
    }
    Some(
        a.strip_prefix("Action::\"")
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(a),
    )
}

/// A JSON text field of the form: empty is none; else it must parse.
fn json_field(name: &str, text: &str) -> Result<Option<Value>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|e| {
        format!(
            "{name}: not JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        )
    })
}

/// A uid field as the API takes it: `Type::"id"` text.
fn uid_field(text: &str) -> Value {
    Value::String(text.trim().to_string())
}

/// `POST /console/f/try` (JSON body of the form's fields): decide and
/// render the result.
pub async fn decide(
    State(state): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    Json(f): Json<TryForm>,
) -> Response {
    let parsed = json_field("context", &f.context)
        .and_then(|c| Ok((c, json_field("entities", &f.entities)?)));
    let (context, entities) = match parsed {
        Ok(v) => v,
        Err(m) => return fragment_error(StatusCode::BAD_REQUEST, &m),
    };
    let action = format!("Action::\"{}\"", bare_action(&f.action).unwrap_or(""));
    let request = IsAuthorizedRequest {
        principal: uid_field(&f.principal),
        action: Value::String(action),
        resource: uid_field(&f.resource),
        context: context.clone(),
        entities,
    };
    let started = std::time::Instant::now();
    let query = match to_query(request) {
        Ok(q) => q.with_request_id(request_id),
        Err(e) => return fragment_error(e.status, &e.message),
    };
    let answer = match decide::one(&state, "console_try", &query, started).await {
        Ok(a) => a,
        Err(e) => return fragment_error(e.status, &e.message),
    };
    let slice = answer
        .entities
        .entities
        .to_json_value()
        .unwrap_or(Value::Null);
    let case = test_case(&f, context.as_ref(), &answer.decision);
    fragment(result(&answer, &slice, &case))
}

fn result(answer: &partnergate_core::authz::Answer, slice: &Value, case: &str) -> Markup {
    let d = &answer.decision;
    html! {
        section.decision {
            p {
                span class={ "verdict " (d.decision.as_str()) } #verdict { (d.decision.as_str()) }
                " decision " span.mono #decision-id { (answer.decision_id) }
                " under " span.mono { (d.policy_version) }
            }
            h2 { "Determining policies" }
            @if d.reasons.is_empty() { p.note { "None (a Deny with no determining policy: nothing permits it)." } }
            ul #reasons {
                @for r in &d.reasons {
                    li { span.mono.pid { (r.id) } @if let Some(desc) = &r.description { " — " (desc) } }
                }
            }
            @if !d.errors.is_empty() {
                h2 { "Errors" }
                ul.errors { @for e in &d.errors { li { (e) } } }
            }
            h2 { "Entities the decision saw" }
            (json_block(slice))
            h2 { "As a test case " button.copy #copy-case type="button" data-copy="test-case" { "Copy" } }
            p.note { "Save the entities above as fixtures/try.json beside the suite, and this case into a suite under tests/policies/." }
            pre #test-case.toml { (case) }
        }
    }
}

#[derive(Serialize)]
struct CaseOut {
    name: String,
    fixture: String,
    principal: String,
    action: String,
    resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<toml::Value>,
    decision: String,
    reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<usize>,
}

/// The request and its outcome as one `[[case]]` of a TOML suite.
fn test_case(
    f: &TryForm,
    context: Option<&Value>,
    d: &partnergate_policy::engine::Decision,
) -> String {
    let action = bare_action(&f.action).unwrap_or("").to_string();
    let out = CaseOut {
        name: format!("{} {} {}", f.principal.trim(), action, f.resource.trim()),
        fixture: "try".into(),
        principal: f.principal.trim().to_string(),
        action,
        resource: f.resource.trim().to_string(),
        context: context.and_then(|c| toml::Value::try_from(c).ok()),
        decision: d.decision.as_str().to_ascii_lowercase(),
        reasons: d.reasons.iter().map(|r| r.id.clone()).collect(),
        errors: (!d.errors.is_empty()).then_some(d.errors.len()),
    };
    let mut doc = BTreeMap::new();
    doc.insert(
        "fixtures",
        toml::Value::Table(toml::map::Map::from_iter([(
            "try".to_string(),
            toml::Value::String("fixtures/try.json".into()),
        )])),
    );
    let fixtures = toml::to_string(&doc).unwrap_or_default();
    let case = toml::to_string(&BTreeMap::from([("case", vec![out])])).unwrap_or_default();
    format!("{fixtures}\n{case}")
}

/// `GET /console/f/uids?q=...`: stored uids for search-as-you-type.
#[derive(Debug, Deserialize)]
pub struct UidQuery {
    #[serde(default)]
    q: String,
}

/// At most this many suggestions.
const SUGGESTIONS: usize = 20;

/// `GET /console/f/uids?q=al` or `q=User::"al`: up to 20 stored uids whose
/// id starts with the text (of that type, if one is given), sorted.
pub async fn uids(State(state): State<Arc<AppState>>, Query(p): Query<UidQuery>) -> Response {
    let q = p.q.trim().to_string();
    let (ty, prefix) = match q.split_once("::") {
        Some((t, rest)) => (
            Some(t.to_string()),
            rest.trim_start_matches('"').to_string(),
        ),
        None => (None, q.trim_matches('"').to_string()),
    };
    let pack = state.authz.evaluator().current();
    let types: Vec<cedar_policy::EntityTypeName> = match (&ty, &pack.schema) {
        (Some(t), _) => t.parse().ok().into_iter().collect(),
        (None, Some(s)) => s.entity_types().cloned().collect(),
        (None, None) => Vec::new(),
    };
    let directory = state.authz.directory().clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut out: Vec<String> = Vec::new();
        for t in &types {
            out.extend(
                directory
                    .uids_of_type(t)
                    .into_iter()
                    .filter(|u| u.id().unescaped().starts_with(prefix.as_str()))
                    .map(|u| u.to_string()),
            );
        }
        out.sort();
        out.truncate(SUGGESTIONS);
        out
    })
    .await
    .unwrap_or_default();
    Json(found).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_is_a_valid_toml_suite_case() {
        let f = TryForm {
            principal: "User::\"a'b\"".into(),
            action: "Action::\"view_account\"".into(),
            resource: "Account::\"acme\"".into(),
            ..TryForm::default()
        };
        let d = partnergate_policy::engine::Decision {
            decision: partnergate_policy::engine::Effect::Allow,
            reasons: vec![partnergate_policy::engine::Reason {
                id: "p1".into(),
                description: None,
            }],
            errors: vec![],
            policy_version: "v".into(),
        };
        let text = test_case(&f, Some(&serde_json::json!({"n": 1})), &d);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["case"][0]["principal"].as_str(), Some("User::\"a'b\""));
        assert_eq!(v["case"][0]["action"].as_str(), Some("view_account"));
        assert_eq!(v["case"][0]["decision"].as_str(), Some("allow"));
        assert_eq!(v["case"][0]["context"]["n"].as_integer(), Some(1));
        assert_eq!(v["fixtures"]["try"].as_str(), Some("fixtures/try.json"));
    }
}
