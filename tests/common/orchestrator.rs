//! The orchestrator wired as the tests use it in-process: over the shipped
//! pack and the PostgreSQL store at a URL (one replica of several), its
//! decision log a file in a directory, its clock the test's.

use std::path::Path;
use std::sync::Arc;

use partnergate::clock::ManualClock;
use partnergate::orchestrator::Orchestrator;
use partnergate::policies::PackSource;
use partnergate::runtime::{Runtime, Wired};

/// The orchestrator over the shipped pack and the PostgreSQL store at
/// `url` (a replica named `replica`), logging to `dir/{replica}.jsonl`,
/// reading `clock`.
pub fn open_pg(
    url: &str,
    dir: &Path,
    replica: &str,
    clock: &Arc<ManualClock>,
) -> (Orchestrator, Wired) {
    let root = super::repo();
    let source = PackSource::new(
        root.join("policies"),
        Some(root.join("schemas/partnergate.cedarschema")),
    );
    let runtime = Runtime::new(source)
        .store(
            partnergate::store::StoreSpec::Postgres(url.to_string()),
            dir,
        )
        .replica(replica)
        .audit(Some(partnergate::audit::AuditConfig::file(
            dir.join(format!("{replica}.jsonl")),
        )))
        .clock(clock.clone());
    let (runtime, quotas) = partnergate::orchestrator::runtime::with_quotas(runtime).unwrap();
    let wired = runtime.build().unwrap();
    let orch = partnergate::orchestrator::runtime::orchestrator(&wired, quotas);
    (orch, wired)
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
