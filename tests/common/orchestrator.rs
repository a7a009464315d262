//! The orchestrator wired as the tests use it in-process: over the shipped
//! pack and a real store (SQLite in a directory, or the PostgreSQL store at
//! a URL, one replica of several), its decision log a file in a directory,
//! its clock the test's; the account `acme` they seed.

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

/// The orchestrator over the shipped pack and the PostgreSQL store at
/// `url` (a replica named `replica`), logging to `dir/{replica}.jsonl`,
/// reading `clock`.
pub fn open_pg(
    url: &str,
    dir: &Path,
    replica: &str,
    clock: &Arc<ManualClock>,
) -> (Orchestrator, Wired) {
    open(
        StoreSpec::Postgres(url.to_string()),
        dir,
        (Some(replica), &format!("{replica}.jsonl")),
        clock,
    )
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

/// A closure telling whether any session waits for a lock that `holder`'s
/// session holds (asked over a connection of its own).
pub fn waiting_for(url: &str, holder: &mut postgres::Client) -> impl FnMut() -> bool {
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut watcher = postgres::Client::connect(url, postgres::NoTls).unwrap();
    move || {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&holder_pid],
            )
            .unwrap()
            .get(0);
        n > 0
    }
}

/// Take the global write lock exclusively in `tx`, as an entity write on
/// another replica does: every write waits for `tx`.
pub fn hold_write_lock(tx: &mut postgres::Transaction<'_>) {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&partnergate::store::postgres::WRITE_LOCK],
    )
    .unwrap();
}
