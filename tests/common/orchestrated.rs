//! The orchestrator in process over the shipped pack, for the tests that
//! drive it with their own clock: a real store (SQLite in a directory or a
//! PostgreSQL URL) and a real decision log file.

use std::path::Path;
use std::sync::Arc;

use partnergate::clock::ManualClock;
use partnergate::orchestrator::store::RegistryCompany;
use partnergate::orchestrator::{Orchestrator, WriteScope};
use partnergate::policies::PackSource;
use partnergate::runtime::{Runtime, Wired};
use partnergate::store::StoreSpec;
use serde_json::json;

use super::entities::{account, user};

/// The orchestrator over the shipped pack on `store` (a replica named
/// `replica`, if any), logging to `dir/log`, reading `clock`.
pub fn open(
    store: StoreSpec,
    dir: &Path,
    (replica, log): (Option<&str>, &str),
    clock: &Arc<ManualClock>,
) -> (Orchestrator, Wired) {
    let root = super::repo();
    let source = PackSource::new(
        root.join("policies"),
        Some(root.join("schemas/partnergate.cedarschema")),
    );
    let mut runtime = Runtime::new(source).store(store, dir);
    if let Some(r) = replica {
        runtime = runtime.replica(r);
    }
    let runtime = runtime
        .audit(Some(partnergate::audit::AuditConfig::file(dir.join(log))))
        .clock(clock.clone());
    let (runtime, quotas) = partnergate::orchestrator::runtime::with_quotas(runtime).unwrap();
    let wired = runtime.build().unwrap();
    let orch = partnergate::orchestrator::runtime::orchestrator(&wired, quotas);
    (orch, wired)
}

/// Account acme (owner admin, emma employee) and the Gold registry company
/// goldco with `emails`.
pub fn seed_acme(o: &Orchestrator, emails: Vec<String>) {
    o.authz()
        .put_entities(
            "test",
            None,
            json!([
                account("acme", Some("Acme")),
                user("owner", "acme").admin(true).json(),
                user("emma", "acme").json()
            ]),
        )
        .unwrap();
    o.with(WriteScope::default())
        .put_companies(vec![RegistryCompany {
            id: "goldco".into(),
            name: "GoldCo".into(),
            status: "gold".into(),
            certified: true,
            emails,
        }])
        .unwrap();
}
