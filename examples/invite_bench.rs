//! Invitations per second on the embedded SQLite store, through the same
//! orchestrator code as the sidecar (policy check, BEGIN IMMEDIATE
//! transaction, seat count re-read from the database, write, memory update).
//!
//! Run: `cargo run --release --example invite_bench [ACCOUNTS]`
//! (default 1000 accounts: 3 accepted invitations + 1 refused fourth each).

use std::time::Instant;

use partnergate::orchestrator::runtime;
use partnergate::orchestrator::store::RegistryCompany;
use partnergate::orchestrator::{OrchestratorError, WriteScope};
use partnergate::policies::PackSource;
use partnergate::runtime::Runtime;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let accounts: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    let source = PackSource::new(
        root.join("policies"),
        Some(root.join("schemas/partnergate.cedarschema")),
    );
    let (runtime, quotas) = runtime::with_quotas(Runtime::new(source).sqlite_in(dir.path()))
        .map_err(|p| p.to_string())?;
    let wired = runtime.build()?;
    let directory = wired.authz.directory().clone();
    let schema = wired.authz.evaluator().current().schema.clone();
    let mut ents = Vec::new();
    for a in 0..accounts {
        ents.push(
            json!({"uid": {"type": "Account", "id": format!("a{a}")}, "attrs": {}, "parents": []}),
        );
        ents.push(json!({"uid": {"type": "User", "id": format!("admin{a}")},
            "parents": [{"type": "Account", "id": format!("a{a}")}],
            "attrs": {"email": format!("admin@a{a}.example"),
                "account": {"__entity": {"type": "Account", "id": format!("a{a}")}},
                "is_admin": true, "status": "active", "two_factor": true}}));
    }
    directory.put_json(schema.as_ref(), serde_json::Value::Array(ents))?;
    let orch = runtime::orchestrator(&wired, quotas);
    let orch = orch.with(WriteScope::default());
    orch.put_companies(vec![RegistryCompany {
        id: "goldco".into(),
        name: "GoldCo".into(),
        status: "gold".into(),
        certified: true,
        emails: (0..4).map(|i| format!("p{i}@goldco.example")).collect(),
    }])?;

    let started = Instant::now();
    for a in 0..accounts {
        for i in 0..3 {
            orch.invite_partner(
                &format!("a{a}"),
                &format!("admin{a}"),
                &format!("p{i}@goldco.example"),
                None,
                (None, &Default::default()),
            )?;
        }
    }
    let accepted = started.elapsed();
    let started = Instant::now();
    for a in 0..accounts {
        match orch.invite_partner(
            &format!("a{a}"),
            &format!("admin{a}"),
            "p3@goldco.example",
            None,
            (None, &Default::default()),
        ) {
            Err(OrchestratorError::LimitReached { .. }) => {}
            other => return Err(format!("a{a}: expected the limit, got {other:?}").into()),
        }
    }
    let refused = started.elapsed();
    let n = (accounts * 3) as f64;
    println!(
        "{} invitations accepted in {:.2}s: {:.0} invitations/s ({:.0} µs each)",
        accounts * 3,
        accepted.as_secs_f64(),
        n / accepted.as_secs_f64(),
        accepted.as_secs_f64() * 1e6 / n
    );
    println!(
        "{accounts} fourth invitations refused (partner_limit_reached) in {:.2}s: {:.0}/s",
        refused.as_secs_f64(),
        accounts as f64 / refused.as_secs_f64()
    );
    Ok(())
}
