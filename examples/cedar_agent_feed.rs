//! Load `cedar-agent` (the Rust Cedar sidecar we compare with in
//! `scripts/bench.sh`) with policies and entities equivalent to
//! PartnerGate's, then check that both answer the benchmark question alike.
//!
//! `cedar_agent_feed AGENT_URL PARTNERGATE_URL POLICIES_DIR SCHEMA ENTITIES_JSON`
//!
//! cedar-agent 0.2 embeds Cedar 2.4, which has no `is` operator and no
//! schema-derived action entities, so:
//! - each policy is sent with its scope's `principal is T` / `resource is T`
//!   dropped: with the schema, every action already applies only to those
//!   types, so for requests of the right types the policies decide alike;
//! - the action entities (with their action-group parents) are sent as data,
//!   after the entities.
//!
//! Loopback only; every request has a timeout.

use std::process::ExitCode;
use std::time::Duration;

use partnergate::policies::{self, PackSource};
use serde_json::{json, Value};

const QUESTION: &str = r#"{"principal":"User::\"owner\"","action":"Action::\"view_account\"","resource":"Account::\"acme\""}"#;

fn drop_is(text: &str) -> String {
    // `principal is User,` -> `principal,`; `resource is Account\n)` -> `resource\n)`.
    let mut out = text.to_string();
    for var in ["principal", "resource"] {
        let pat = format!("{var} is ");
        while let Some(at) = out.find(&pat) {
            let rest = &out[at + pat.len()..];
            let ty_len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            out.replace_range(at + var.len()..at + pat.len() + ty_len, "");
        }
    }
    out
}

fn run(args: &[String]) -> Result<(), String> {
    let [agent, pg, dir, schema, entities] = args else {
        return Err(
            "usage: cedar_agent_feed AGENT_URL PARTNERGATE_URL POLICIES_DIR SCHEMA ENTITIES_JSON"
                .into(),
        );
    };
    let pack =
        policies::load(&PackSource::new(dir, Some(schema.into()))).map_err(|e| e.render())?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;

    let policies: Vec<Value> = pack
        .policy_set
        .policies()
        .map(|p| json!({"id": p.id().to_string(), "content": drop_is(&p.to_string())}))
        .collect();
    let mut data: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(entities).map_err(|e| format!("{entities}: {e}"))?,
    )
    .map_err(|e| format!("{entities}: {e}"))?;
    let s = pack.schema.as_ref().ok_or("the pack has no schema")?;
    let actions = s.action_entities().map_err(|e| e.to_string())?;
    for a in actions.iter() {
        data.push(a.to_json_value().map_err(|e| e.to_string())?);
    }
    let agent = agent.trim_end_matches('/');
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
    let ask = |url: String| -> Result<Value, String> {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(QUESTION)
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
        "cedar-agent loaded with {} policies; both answer {}",
        pack.policies.len(),
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
