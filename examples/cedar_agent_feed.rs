//! Load `cedar-agent` (the Rust Cedar sidecar we compare with in
//! `scripts/bench.sh` and `scripts/perf.sh`) with policies and entities
//! equivalent to PartnerGate's, then check that both answer a question alike
//! (`scripts/perf.sh` then checks every benchmark question with
//! `workload check`).
//!
//! `cedar_agent_feed AGENT_URL PARTNERGATE_URL POLICIES_DIR SCHEMA ENTITIES_JSON [QUESTION_JSON]`
//!
//! cedar-agent 0.2 embeds Cedar 2.4, which has no `is` operator and no
//! schema-derived action entities, so:
//! - each policy is rewritten (module `translate`, on Cedar's JSON form of
//!   the policy): a scope's `principal is T` / `resource is T` becomes
//!   `principal` / `resource` plus a condition `action in [...]` over the
//!   schema's actions that apply to `T` (with the schema, a valid request's
//!   action pins its principal and resource types, so the two are
//!   equivalent); an `is T` on `principal` or `resource` inside a condition
//!   becomes the same `action in [...]`; any other `is` (on an attribute,
//!   say) has no Cedar 2.4 equivalent and the policy is left out of the
//!   comparison, printed on stderr (none in the shipped pack);
//! - the action entities (with their action-group parents) are sent as data,
//!   after the entities.
//!
//! This owns the translation and the loading; it must never know how
//! PartnerGate decides (it only asks it over HTTP). Loopback only; every
//! request has a timeout.

use std::process::ExitCode;
use std::time::Duration;

use partnergate::policies::{self, PackSource};
use serde_json::{json, Value};

const QUESTION: &str = r#"{"principal":"User::\"owner\"","action":"Action::\"view_account\"","resource":"Account::\"acme\""}"#;

/// Policies in Cedar 4 syntax rewritten into text Cedar 2.4 parses and
/// decides alike for schema-valid requests.
mod translate {
    use cedar_policy::{EntityTypeName, Policy, Schema};
    use serde_json::{json, Value};

    /// Why a policy cannot be sent to Cedar 2.4.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Untranslatable(pub String);

    /// The schema's actions that apply to principal (`principal`) or
    /// resource type `ty`, as a Cedar JSON `action in [...]` condition;
    /// `None` when every action with an `appliesTo` applies to it (the test
    /// is then always true).
    fn actions_for(schema: &Schema, var: &str, ty: &str) -> Option<Value> {
        let mut all = 0;
        let mut hits = Vec::new();
        for a in schema.actions() {
            let types: Vec<&EntityTypeName> = match var {
                "principal" => schema.principals_for_action(a).map(Iterator::collect),
                _ => schema.resources_for_action(a).map(Iterator::collect),
            }
            .unwrap_or_default();
            if types.is_empty() {
                continue; // an action group: no request names it
            }
            all += 1;
            if types.iter().any(|t| t.to_string() == ty) {
                hits.push(json!({"Value": {"__entity": {
                    "type": a.type_name().to_string(), "id": a.id().unescaped()}}}));
            }
        }
        if hits.len() == all {
            return None;
        }
        Some(json!({"in": {"left": {"Var": "action"}, "right": {"Set": hits}}}))
    }

    fn always() -> Value {
        json!({"Value": true})
    }

    /// Rewrite every `is` inside an expression (Cedar's JSON form).
    fn rewrite_expr(e: &mut Value, schema: &Schema) -> Result<(), Untranslatable> {
        match e {
            Value::Array(items) => {
                for i in items {
                    rewrite_expr(i, schema)?;
                }
            }
            Value::Object(map) => {
                if let Some(node) = map.get("is").filter(|n| n.get("entity_type").is_some()) {
                    let var = node.pointer("/left/Var").and_then(Value::as_str);
                    let ty = node.get("entity_type").and_then(Value::as_str);
                    let (Some(var @ ("principal" | "resource")), Some(ty)) = (var, ty) else {
                        return Err(Untranslatable(format!(
                            "`is` on something other than principal or resource: {node}"
                        )));
                    };
                    let test = actions_for(schema, var, ty).unwrap_or_else(always);
                    let mut replaced = match node.get("in") {
                        Some(within) => json!({"&&": {"left": test,
                            "right": {"in": {"left": {"Var": var}, "right": within}}}}),
                        None => test,
                    };
                    rewrite_expr(&mut replaced, schema)?;
                    *e = replaced;
                    return Ok(());
                }
                for (k, v) in map.iter_mut() {
                    if k != "Value" {
                        rewrite_expr(v, schema)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `policy` as Cedar 2.4 text: the scope's and the conditions' `is`
    /// rewritten (see the file's doc).
    pub fn for_cedar_2_4(policy: &Policy, schema: &Schema) -> Result<String, Untranslatable> {
        if !policy.is_static() {
            return Err(Untranslatable("a template-linked policy".into()));
        }
        let mut est = policy
            .to_json()
            .map_err(|e| Untranslatable(e.to_string()))?;
        let mut extra = Vec::new();
        for var in ["principal", "resource"] {
            let Some(scope) = est.get_mut(var) else {
                continue;
            };
            if scope.get("op").and_then(Value::as_str) != Some("is") {
                continue;
            }
            let ty = scope
                .get("entity_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            *scope = match scope.get("in") {
                Some(within) => {
                    let mut s = within.clone();
                    if let Some(obj) = s.as_object_mut() {
                        obj.insert("op".into(), json!("in"));
                    }
                    s
                }
                None => json!({"op": "All"}),
            };
            if let Some(test) = actions_for(schema, var, &ty) {
                extra.push(json!({"kind": "when", "body": test}));
            }
        }
        if let Some(conds) = est.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in conds.iter_mut() {
                if let Some(body) = c.get_mut("body") {
                    rewrite_expr(body, schema)?;
                }
            }
            conds.extend(extra);
        }
        let id = policy.id().clone();
        let back = Policy::from_json(Some(id), est).map_err(|e| Untranslatable(e.to_string()))?;
        Ok(back.to_string())
    }
}

/// PUT the policies, then the entities, into cedar-agent.
fn put_all(
    http: &reqwest::blocking::Client,
    agent: &str,
    policies: Vec<Value>,
    data: Vec<Value>,
) -> Result<(), String> {
    for (path, body) in [
        ("/v1/policies", Value::Array(policies)),
        ("/v1/data", Value::Array(data)),
    ] {
        let r = http
            .put(format!("{agent}{path}"))
            .json(&body)
            .send()
            .map_err(|e| format!("PUT {path}: {e}"))?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!(
                "PUT {path}: {status}: {}",
                r.text().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    let (agent, pg, dir, schema, entities, question) = match args {
        [a, p, d, s, e] => (a, p, d, s, e, QUESTION),
        [a, p, d, s, e, q] => (a, p, d, s, e, q.as_str()),
        _ => return Err(
            "usage: cedar_agent_feed AGENT_URL PARTNERGATE_URL POLICIES_DIR SCHEMA ENTITIES_JSON [QUESTION_JSON]"
                .into(),
        ),
    };
    let pack =
        policies::load(&PackSource::new(dir, Some(schema.into()))).map_err(|e| e.render())?;
    let s = pack.schema.as_ref().ok_or("the pack has no schema")?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;

    let mut policies = Vec::new();
    for p in pack.policy_set.policies() {
        match translate::for_cedar_2_4(p, s) {
            Ok(text) => policies.push(json!({"id": p.id().to_string(), "content": text})),
            Err(why) => eprintln!(
                "cedar_agent_feed: policy {} left out of the comparison: {}",
                p.id(),
                why.0
            ),
        }
    }
    let sent = policies.len();
    let mut data: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(entities).map_err(|e| format!("{entities}: {e}"))?,
    )
    .map_err(|e| format!("{entities}: {e}"))?;
    let actions = s.action_entities().map_err(|e| e.to_string())?;
    for a in actions.iter() {
        data.push(a.to_json_value().map_err(|e| e.to_string())?);
    }
    let agent = agent.trim_end_matches('/');
    put_all(&http, agent, policies, data)?;
    let ask = |url: String| -> Result<Value, String> {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(question.to_string())
            .send()
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().map_err(|e| format!("POST {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("POST {url}: {status}: {v}"));
        }
        Ok(v)
    };
    let theirs = ask(format!("{agent}/v1/is_authorized"))?;
    let ours = ask(format!("{}/v1/is_authorized", pg.trim_end_matches('/')))?;
    let their_decision = theirs.get("decision").and_then(Value::as_str);
    let our_decision = ours.get("decision").and_then(Value::as_str);
    if their_decision != our_decision || our_decision.is_none() {
        return Err(format!(
            "the answers differ: cedar-agent {theirs}, PartnerGate {ours}"
        ));
    }
    println!(
        "cedar-agent loaded with {sent} of {} policies; both answer {}",
        pack.policy_set.policies().count(),
        our_decision.unwrap_or("?")
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cedar_agent_feed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::translate::for_cedar_2_4;
    use cedar_policy::{
        Authorizer, Context, Decision, Entities, EntityUid, Policy, PolicySet, Request, Schema,
    };
    use partnergate::policies::{self, PackSource};
    use std::str::FromStr;

    fn pack() -> (PolicySet, Schema) {
        let pack = policies::load(&PackSource::new(
            "policies",
            Some("schemas/partnergate.cedarschema".into()),
        ))
        .expect("the shipped pack loads");
        let schema = pack.schema.expect("the shipped pack has a schema");
        (pack.policy_set, schema)
    }

    /// The demo entities plus the schema's action entities, as cedar-agent gets them.
    fn demo_entities(schema: &Schema) -> Entities {
        let text = std::fs::read_to_string("demo/entities.json").expect("demo entities");
        let mut v: Vec<serde_json::Value> = serde_json::from_str(&text).expect("demo JSON");
        for a in schema.action_entities().expect("action entities").iter() {
            v.push(a.to_json_value().expect("action JSON"));
        }
        Entities::from_json_value(serde_json::Value::Array(v), None).expect("entities")
    }

    /// The translated pack, parsed again (without the schema, as Cedar 2.4 does).
    fn translated(set: &PolicySet, schema: &Schema) -> PolicySet {
        let mut out = PolicySet::new();
        for p in set.policies() {
            let text = for_cedar_2_4(p, schema).expect("the shipped pack translates");
            let back = Policy::parse(Some(p.id().clone()), &text).expect("translated text parses");
            let est = back.to_json().expect("JSON");
            assert!(!est.to_string().contains(r#""op":"is""#), "{text}");
            out.add(back).expect("unique ids");
        }
        out
    }

    fn decide(set: &PolicySet, entities: &Entities, p: &str, a: &str, r: &str) -> Decision {
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let req = Request::new(uid(p), uid(a), uid(r), Context::empty(), None).expect("request");
        Authorizer::new()
            .is_authorized(&req, set, entities)
            .decision()
    }

    #[test]
    fn pat_may_dismiss_emma_through_the_translated_pack() {
        // Dropping `resource is Account` from no-cross-account-on-account made
        // it forbid every request on a User: cedar-agent said Deny here.
        let (set, schema) = pack();
        let entities = demo_entities(&schema);
        let (p, a, r) = (
            r#"User::"pat""#,
            r#"Action::"dismiss_user""#,
            r#"User::"emma""#,
        );
        assert_eq!(decide(&set, &entities, p, a, r), Decision::Allow);
        assert_eq!(
            decide(&translated(&set, &schema), &entities, p, a, r),
            Decision::Allow
        );
    }

    #[test]
    fn translated_pack_decides_every_demo_question_alike() {
        let (set, schema) = pack();
        let entities = demo_entities(&schema);
        let ours = translated(&set, &schema);
        let mut asked = 0;
        for action in schema.actions() {
            let resources: Vec<String> = schema
                .resources_for_action(action)
                .map(|t| t.map(ToString::to_string).collect())
                .unwrap_or_default();
            if resources.is_empty() || action.id().unescaped().contains("partner") {
                continue; // action groups; the two actions that need a context
            }
            for p in ["owner", "emma", "pat"] {
                for r in [
                    "Account::\"acme\"",
                    "User::\"owner\"",
                    "User::\"emma\"",
                    "User::\"pat\"",
                ] {
                    if !resources.iter().any(|t| r.starts_with(&format!("{t}::"))) {
                        continue;
                    }
                    let (p, a) = (format!("User::\"{p}\""), action.to_string());
                    let want = decide(&set, &entities, &p, &a, r);
                    assert_eq!(decide(&ours, &entities, &p, &a, r), want, "{p} {a} {r}");
                    asked += 1;
                }
            }
        }
        assert!(asked >= 40, "only {asked} questions");
    }

    #[test]
    fn is_in_a_condition_becomes_the_actions_of_that_type() {
        let (_, schema) = pack();
        let src = r#"permit (principal, action, resource) when { resource is User && resource.is_admin };"#;
        let p = Policy::parse(Some(cedar_policy::PolicyId::new("c")), src).expect("parses");
        let text = for_cedar_2_4(&p, &schema).expect("translates");
        assert!(!text.contains(" is "), "{text}");
        assert!(
            text.contains("dismiss_user") && !text.contains("view_account"),
            "{text}"
        );
        let mut set = PolicySet::new();
        set.add(Policy::parse(None, &text).expect("parses again"))
            .expect("add");
        let entities = demo_entities(&schema);
        let ask = |a: &str, r: &str| decide(&set, &entities, r#"User::"emma""#, a, r);
        assert_eq!(
            ask(r#"Action::"dismiss_user""#, r#"User::"owner""#),
            Decision::Allow
        );
        assert_eq!(
            ask(r#"Action::"dismiss_user""#, r#"User::"emma""#),
            Decision::Deny
        );
        assert_eq!(
            ask(r#"Action::"view_account""#, r#"Account::"acme""#),
            Decision::Deny
        );
    }

    #[test]
    fn is_on_an_attribute_leaves_the_policy_out() {
        let (_, schema) = pack();
        let src = r#"permit (principal, action, resource) when { principal.account is Account };"#;
        let p = Policy::parse(None, src).expect("parses");
        assert!(for_cedar_2_4(&p, &schema).is_err());
    }
}
