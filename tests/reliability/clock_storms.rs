//! Clock-inside-transaction storms: two writers on one store (two handles
//! on one SQLite file; two replicas on one PostgreSQL database), each with
//! its own directory and decision log, run invitations from two partner
//! companies and renewals of partners whose ends fall inside the storm,
//! while the shared clock (a `ManualClock`, the one the sidecar's
//! `SystemClock` stands in for) crosses those ends. The database itself is
//! read at every clock step and at the end: never four partners holding a
//! seat on the account, never two companies among them. (A renewal that
//! judged "access not ended" at a reading taken before waiting for the
//! write lock, while an invitation took the freed seat, makes four.)

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use partnergate::clock::{parse_cedar_ms, Clock, ManualClock};
use partnergate::orchestrator::access::AccessRequest;
use partnergate::orchestrator::store::RegistryCompany;
use partnergate::orchestrator::{Orchestrator, OrchestratorError, WriteScope};
use partnergate::policies::PackSource;
use partnergate::runtime::{Runtime, Wired};
use partnergate::store::StoreSpec;
use serde_json::{json, Value};

use crate::common::{entities, PgSchema};

/// 2027-01-01T00:00:00Z.
const T: i64 = 1_798_761_600_000;
const DAY: i64 = 86_400_000;
const THREADS: usize = 48;

/// One writer: the shipped pack, `store` (its own handle), its own log.
fn writer(
    store: &StoreSpec,
    dir: &Path,
    name: &str,
    clock: &Arc<ManualClock>,
) -> (Orchestrator, Wired) {
    let root = crate::common::repo();
    let source = PackSource::new(
        root.join("policies"),
        Some(root.join("schemas/partnergate.cedarschema")),
    );
    let runtime = Runtime::new(source)
        .store(store.clone(), dir)
        .replica(name)
        .audit(Some(partnergate::audit::AuditConfig::file(
            dir.join(format!("{name}.jsonl")),
        )))
        .clock(clock.clone());
    let (runtime, quotas) = partnergate::orchestrator::runtime::with_quotas(runtime).unwrap();
    let wired = runtime.build().unwrap();
    let orch = partnergate::orchestrator::runtime::orchestrator(&wired, quotas);
    (orch, wired)
}

fn company(id: &str, prefix: &str) -> RegistryCompany {
    RegistryCompany {
        id: id.into(),
        name: id.into(),
        status: "gold".into(),
        certified: true,
        emails: (0..THREADS)
            .map(|i| format!("{prefix}{i}@{id}.example"))
            .collect(),
    }
}

fn access(duration: Option<&str>) -> AccessRequest {
    AccessRequest {
        expires_at: None,
        duration: duration.map(str::to_string),
        scopes: None,
    }
}

/// The stored users' JSON, read from the database.
type ReadUsers = Box<dyn FnMut() -> Vec<Value> + Send>;

/// The partners holding a seat on acme at `now`, from `users`, and their companies.
fn holders(users: &[Value], now: i64) -> (Vec<String>, std::collections::BTreeSet<String>) {
    let mut ids = Vec::new();
    let mut companies = std::collections::BTreeSet::new();
    for u in users {
        let attrs = &u["attrs"];
        let Some(p) = attrs.get("partner") else {
            continue;
        };
        if attrs["account"]["__entity"]["id"] != "acme" || attrs["status"] == "dismissed" {
            continue;
        }
        let end = p["expires_at"]["__extn"]["arg"]
            .as_str()
            .map(|s| parse_cedar_ms(s).unwrap_or(0));
        if end.is_some_and(|e| e <= now) {
            continue;
        }
        ids.push(u["uid"]["id"].as_str().unwrap_or_default().to_string());
        companies.insert(
            p["company"]["__entity"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    (ids, companies)
}

fn assert_rules(read: &mut ReadUsers, clock: &ManualClock, when: &str) {
    let users = read();
    // The clock is read after the state: the state is never newer than it.
    let now = clock.now_ms();
    let (ids, companies) = holders(&users, now);
    assert!(
        ids.len() <= 3,
        "{when}: {} partners hold a seat: {ids:?}",
        ids.len()
    );
    assert!(companies.len() <= 1, "{when}: partners of {companies:?}");
}

/// The storm over writers `a` and `b` sharing one store.
fn storm_with_ids(
    a: Orchestrator,
    b: Orchestrator,
    clock: &Arc<ManualClock>,
    mut read: ReadUsers,
    partners: Vec<String>,
) {
    let writers = [Arc::new(a), Arc::new(b)];
    let done = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let ids = Arc::new(partners);
    let mut threads = Vec::new();
    for i in 0..THREADS {
        let o = writers[i % 2].clone();
        let (done, barrier, ids) = (done.clone(), barrier.clone(), ids.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let call = o.with(WriteScope::default());
            let r = if i % 3 == 0 {
                let who = &ids[(i / 3) % ids.len()];
                call.renew(who, "owner", &access(Some("30d"))).map(|_| ())
            } else {
                let (c, p) = if i % 2 == 0 {
                    ("goldco", "g")
                } else {
                    ("silverco", "s")
                };
                call.invite_partner(
                    "acme",
                    "owner",
                    &format!("{p}{i}@{c}.example"),
                    None,
                    (None, &access(None)),
                )
                .map(|_| ())
            };
            match r {
                Ok(())
                | Err(
                    OrchestratorError::LimitReached { .. }
                    | OrchestratorError::DifferentCompany { .. },
                ) => {}
                Err(e) if e.code() == "access_ended" || e.code() == "invalid_access" => {}
                Err(e) => panic!("writer {i}: {e}"),
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    barrier.wait();
    // Cross the three ends while the storm runs, checking the database at each step.
    for (k, at) in [
        (4, T - 1),
        (8, T),
        (12, T + 1),
        (20, T + 40),
        (28, T + 60),
        (36, T + DAY),
    ] {
        while done.load(Ordering::SeqCst) < k {
            std::thread::yield_now();
        }
        assert_rules(&mut read, clock, &format!("before {at}"));
        clock.set(at);
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_rules(&mut read, clock, "after the storm");
}

/// The seed, through `o`: acme (owner), two certified companies, and three
/// goldco partners: ann and bob end at T, cat at T + 50 ms.
fn seed(o: &Orchestrator, clock: &ManualClock) {
    o.authz()
        .put_entities(
            "test",
            None,
            json!([
                entities::account("acme", Some("Acme")),
                entities::user("owner", "acme").admin(true).json()
            ]),
        )
        .unwrap();
    let call = o.with(WriteScope::default());
    let mut gold = company("goldco", "g");
    gold.emails
        .extend(["ann", "bob", "cat"].map(|n| format!("{n}@goldco.example")));
    call.put_companies(vec![gold, company("silverco", "s")])
        .unwrap();
    for (name, from) in [("ann", T - DAY), ("bob", T - DAY), ("cat", T - DAY + 50)] {
        clock.set(from);
        let out = call
            .invite_partner(
                "acme",
                "owner",
                &format!("{name}@goldco.example"),
                Some(name),
                (None, &access(Some("1d"))),
            )
            .unwrap();
        // Renewals name the partners by id: keep the seeded ids stable.
        assert!(out.user.id.starts_with(name), "{}", out.user.id);
    }
    clock.set(T - 100);
}

/// The seeded partners' ids (a slug and a random suffix), by name.
fn seeded_ids(o: &Orchestrator) -> Vec<String> {
    let mut ids: Vec<String> = o
        .users("acme")
        .unwrap()
        .into_iter()
        .filter(|u| u.user.partner.is_some())
        .map(|u| u.user.id)
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_clock_storm_on_two_sqlite_handles_keeps_three_seats_and_one_company() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let (a, wired_a) = writer(&StoreSpec::Sqlite, dir.path(), "a", &clock);
    seed(&a, &clock);
    let ids = seeded_ids(&a);
    let (b, wired_b) = writer(&StoreSpec::Sqlite, dir.path(), "b", &clock);
    let db = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let db = std::sync::Mutex::new(db);
    let read: ReadUsers = Box::new(move || {
        let db = db.lock().unwrap();
        let mut stmt = db
            .prepare("SELECT json FROM entities WHERE entity_type = 'User'")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|j| serde_json::from_str(&j.unwrap()).unwrap())
            .collect()
    });
    storm_with_ids(a, b, &clock, read, ids);
    wired_a.shutdown_log();
    wired_b.shutdown_log();
}

#[test]
fn a_clock_storm_on_two_postgres_replicas_keeps_three_seats_and_one_company() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T - DAY));
    let spec = StoreSpec::Postgres(pg.url.clone());
    let (a, wired_a) = writer(&spec, dir.path(), "a", &clock);
    seed(&a, &clock);
    let ids = seeded_ids(&a);
    let (b, wired_b) = writer(&spec, dir.path(), "b", &clock);
    let mut db = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let read: ReadUsers = Box::new(move || {
        db.query("SELECT json FROM entities WHERE entity_type = 'User'", &[])
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect()
    });
    storm_with_ids(a, b, &clock, read, ids);
    wired_a.shutdown_log();
    wired_b.shutdown_log();
}
