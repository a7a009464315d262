//! Orchestrator writes on PostgreSQL from several replicas (orchestrators
//! over one database, each with its own store connection and change feed):
//! a write is authorized over the state its own transaction sees, not over
//! a replica's memory from before it waited for its locks.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::entities::{account, user};
use partnergate::clock::ManualClock;
use partnergate::orchestrator::{Orchestrator, OrchestratorError, WriteScope};
use partnergate::runtime::Wired;
use partnergate::store::EntityRecord;
use serde_json::{json, Value};

/// 2027-01-01T00:00:00Z.
const T: i64 = 1_798_761_600_000;

/// The orchestrator over the PostgreSQL store at `url` as replica `replica`.
fn open_pg(url: &str, dir: &Path, replica: &str) -> (Orchestrator, Wired) {
    common::orchestrator::open_pg(url, dir, replica, &Arc::new(ManualClock::at(T)))
}

/// Put `entities` through `o`'s directory (store and change feed).
fn seed(o: &Orchestrator, entities: Value) {
    o.authz().put_entities("test", None, entities).unwrap();
}

fn record(v: &Value) -> EntityRecord {
    EntityRecord {
        uid: format!("User::\"{}\"", v["uid"]["id"].as_str().unwrap()),
        entity_type: "User".into(),
        json: v.to_string(),
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The stored status of `User::"id"`.
fn stored_status(url: &str, id: &str) -> String {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let json: String = c
        .query_one(
            "SELECT json FROM entities WHERE uid = $1",
            &[&format!("User::\"{id}\"")],
        )
        .unwrap()
        .get(0);
    serde_json::from_str::<Value>(&json).unwrap()["attrs"]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The actor loses the right to act (its admin rights revoked, or it is
/// dismissed) in a write that commits while replica B's dismissal of emma,
/// already allowed over B's memory, waits for the write lock: B's write
/// must be judged again inside its transaction and refused. Deterministic:
/// the revoking session holds the lock until B is seen waiting for it.
#[test]
fn a_write_is_authorized_over_the_actor_as_stored_when_it_commits() {
    let changes: [(&str, Value); 2] = [
        (
            "admin rights revoked",
            user("boss", "acme").admin(false).json(),
        ),
        (
            "dismissed",
            user("boss", "acme").admin(true).status("dismissed").json(),
        ),
    ];
    for (what, boss_after) in changes {
        let Some(pg) = common::PgSchema::new() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (a, wired_a) = open_pg(&pg.url, dir.path(), "a");
        seed(
            &a,
            json!([
                account("acme", Some("Acme")),
                user("owner", "acme").admin(true).json(),
                user("boss", "acme").admin(true).json(),
                user("emma", "acme").json()
            ]),
        );
        let (b, wired_b) = open_pg(&pg.url, dir.path(), "b");

        let mut holder = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
        let mut waiting = common::orchestrator::waiting_for(&pg.url, &mut holder);
        let mut held = holder.transaction().unwrap();
        common::orchestrator::hold_write_lock(&mut held);
        // The revocation, as another replica commits it.
        partnergate::store::postgres::upsert_in(&mut held, "other", &[record(&boss_after)])
            .unwrap();
        let dismissed = std::thread::scope(|s| {
            let dismissal = s.spawn(|| b.with(WriteScope::default()).dismiss("emma", "boss"));
            wait_until("the dismissal to wait for the write lock", &mut waiting);
            held.commit().unwrap();
            dismissal.join().unwrap()
        });
        assert!(
            matches!(dismissed, Err(OrchestratorError::Denied { .. })),
            "boss {what} before the dismissal committed: {dismissed:?}"
        );
        assert_eq!(stored_status(&pg.url, "emma"), "active", "boss {what}");
        // The owner still may.
        b.with(WriteScope::default())
            .dismiss("emma", "owner")
            .unwrap();
        assert_eq!(stored_status(&pg.url, "emma"), "dismissed");
        wired_a.shutdown_log();
        wired_b.shutdown_log();
        drop((a, b));
    }
}

/// The change feed reads by transaction, not by sequence: a transaction
/// that took a lower sequence and commits after one with a higher sequence
/// (two accounts' writes run at once) is still delivered, once, after it.
#[test]
fn the_feed_delivers_a_lower_sequence_that_commits_late() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let store = partnergate::store::postgres::PgStore::open(&pg.url, "x").unwrap();
    use partnergate::store::EntityBackend;
    let seq = store.load_each(&mut |_| {}).unwrap();
    let (sent, got) = std::sync::mpsc::channel();
    let feed = partnergate::store::postgres::ChangeFeed::start(
        &pg.url,
        (store.loaded_snapshot().unwrap(), seq),
        Sent(std::sync::Mutex::new(sent)),
    )
    .unwrap();
    let mut late = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let mut early = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let mut low = late.transaction().unwrap();
    partnergate::store::postgres::upsert_in(&mut low, "x", &[record(&user("low", "acme").json())])
        .unwrap();
    let mut high = early.transaction().unwrap();
    partnergate::store::postgres::upsert_in(
        &mut high,
        "x",
        &[record(&user("high", "beta").json())],
    )
    .unwrap();
    high.commit().unwrap();
    let wait = Duration::from_secs(60);
    let (high_seq, uid) = got.recv_timeout(wait).unwrap();
    assert_eq!(uid, "User::\"high\"");
    low.commit().unwrap();
    let (low_seq, uid) = got.recv_timeout(wait).unwrap();
    assert_eq!(uid, "User::\"low\"");
    assert!(low_seq < high_seq, "{low_seq} committed after {high_seq}");
    assert!(feed.last_seq() >= high_seq);
    drop(feed);
    assert!(got.try_recv().is_err(), "each change once");
}

/// A follower that sends each change's sequence and uid on.
struct Sent(std::sync::Mutex<std::sync::mpsc::Sender<(i64, String)>>);

impl partnergate::store::postgres::Follower for Sent {
    fn apply(
        &self,
        batch: Vec<partnergate::store::Change>,
        _current: &mut partnergate::store::CurrentRows<'_>,
    ) -> Result<(), partnergate::store::StoreError> {
        let sent = self.0.lock().unwrap();
        for c in batch {
            let _ = sent.send((c.seq, c.uid));
        }
        Ok(())
    }

    fn reload(
        &self,
        _load: &mut partnergate::store::postgres::FullLoad<'_>,
    ) -> Result<(), partnergate::store::StoreError> {
        panic!("nothing is compacted here")
    }
}

/// A change the feed reads late never takes memory back: a batch is
/// applied as its rows are committed now, read under the directory's
/// writer lock. Here a replica wrote a user twice (active, then dismissed)
/// and then deleted another; a batch bringing the first write and the
/// deleted user's creation, as a feed window closed between the writes
/// would, leaves memory dismissed and deleted. Applied as the changes' own
/// texts, it brought the dismissed user back to active until a later batch.
#[test]
fn a_late_batch_never_takes_memory_back_to_an_older_write() {
    use partnergate::directory::Directory;
    use partnergate::store::Change;
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let store = Arc::new(partnergate::store::postgres::PgStore::open(&pg.url, "x").unwrap());
    let directory = Directory::open(store.clone()).unwrap();
    let parse = |v: Value| Directory::parse(None, json!([v])).unwrap();
    let active = user("emma", "acme").json();
    let dismissed = user("emma", "acme").status("dismissed").json();
    let gone = user("gone", "acme").json();
    directory.put(parse(active.clone())).unwrap();
    directory.put(parse(gone.clone())).unwrap();
    directory.put(parse(dismissed)).unwrap();
    let gone_uid: cedar_policy::EntityUid = "User::\"gone\"".parse().unwrap();
    directory.delete(std::slice::from_ref(&gone_uid)).unwrap();
    let emma: cedar_policy::EntityUid = "User::\"emma\"".parse().unwrap();
    let status = |d: &Directory| d.get_json(&emma).unwrap()["attrs"]["status"].clone();
    assert_eq!(status(&directory), "dismissed");

    let late = vec![
        Change {
            seq: 1,
            uid: emma.to_string(),
            json: Some(active.to_string()),
        },
        Change {
            seq: 2,
            uid: gone_uid.to_string(),
            json: Some(gone.to_string()),
        },
    ];
    let mut current = |uids: &[String]| {
        store.with_client(|c| partnergate::store::postgres::current_rows(c, uids))
    };
    directory.apply_current(late.clone(), &mut current).unwrap();
    assert_eq!(
        status(&directory),
        "dismissed",
        "memory went back to an older write"
    );
    assert!(!directory.contains(&gone_uid), "a deleted entity came back");

    // A reader that fails applies nothing (the feed reads the batch again),
    // and one that leaves a uid out is an error, never an absence.
    let mut failing =
        |_: &[String]| Err(partnergate::store::StoreError::Unavailable("down".into()));
    assert!(directory.apply_current(late.clone(), &mut failing).is_err());
    let mut partial = |_: &[String]| Ok(vec![]);
    assert!(directory.apply_current(late.clone(), &mut partial).is_err());
    assert_eq!(status(&directory), "dismissed");

    // The same batch applied as the changes' texts (what a feed did
    // before) takes memory back: the case above is a real one.
    directory.apply_changes(late);
    assert_eq!(status(&directory), "active");
}

/// Many invitations at once on two accounts (each its own partners'
/// candidates from two certified companies), through two replicas: the
/// writes of the two accounts take different locks, and each account
/// still ends with three partners of one company.
#[test]
fn concurrent_invitations_on_two_accounts_through_two_replicas_keep_each_account_whole() {
    invitations_at_once_keep_each_account_whole(2);
}

/// The same through one replica, whose writes of different accounts now
/// run at once (its store's connections, the directory's stripes): each
/// account still ends with three partners of one company, and the
/// replica's memory holds what the store holds, with no feed to help.
#[test]
fn concurrent_invitations_through_one_replica_keep_each_account_whole_and_memory_true() {
    invitations_at_once_keep_each_account_whole(1);
}

fn invitations_at_once_keep_each_account_whole(through: usize) {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, wired_a) = open_pg(&pg.url, dir.path(), "a");
    seed(
        &a,
        json!([
            account("acme", Some("Acme")),
            account("beta", Some("Beta")),
            user("owner", "acme").admin(true).json(),
            user("chief", "beta").admin(true).json()
        ]),
    );
    let companies =
        ["goldco", "goldtwo"].map(|id| partnergate::orchestrator::store::RegistryCompany {
            id: id.into(),
            name: id.into(),
            status: "gold".into(),
            certified: true,
            emails: (0..64).map(|i| format!("p{i}@{id}.example")).collect(),
        });
    a.with(WriteScope::default())
        .put_companies(companies.to_vec())
        .unwrap();
    let (b, wired_b) = open_pg(&pg.url, dir.path(), "b");
    let replicas = [Arc::new(a), Arc::new(b)];
    let barrier = Arc::new(std::sync::Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let o = replicas[i % through].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let (account, actor) = if i % 4 < 2 {
                    ("acme", "owner")
                } else {
                    ("beta", "chief")
                };
                let company = ["goldco", "goldtwo"][(i / 4) % 2];
                barrier.wait();
                let access = partnergate::orchestrator::access::AccessRequest::default();
                match o.with(WriteScope::default()).invite_partner(
                    account,
                    actor,
                    &format!("p{i}@{company}.example"),
                    None,
                    (None, &access),
                ) {
                    Ok(_)
                    | Err(
                        OrchestratorError::LimitReached { .. }
                        | OrchestratorError::DifferentCompany { .. },
                    ) => {}
                    Err(e) => panic!("invitation {i}: {e}"),
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let in_memory = |o: &Orchestrator, account: &str| {
        let mut users: Vec<String> = o
            .users(account)
            .unwrap()
            .iter()
            .map(|l| serde_json::to_string(&l.user).unwrap())
            .collect();
        users.sort();
        users
    };
    let held: Vec<Vec<String>> = ["acme", "beta"]
        .iter()
        .map(|a| in_memory(&replicas[0], a))
        .collect();
    wired_a.shutdown_log();
    wired_b.shutdown_log();
    drop(replicas);
    let (c, wired_c) = open_pg(&pg.url, dir.path(), "c");
    if through == 1 {
        for (account, held) in ["acme", "beta"].iter().zip(&held) {
            assert_eq!(
                held,
                &in_memory(&c, account),
                "{account}: memory is the store"
            );
        }
    }
    for account in ["acme", "beta"] {
        let users = c.users(account).unwrap();
        let partners: Vec<_> = users
            .iter()
            .map(|l| &l.user)
            .filter(|u| u.partner.is_some())
            .collect();
        assert_eq!(partners.len(), 3, "{account}: {partners:?}");
        assert_eq!(c.seats(account).unwrap().partners, 3, "{account}");
        let first = &partners[0].partner.as_ref().unwrap().company;
        assert!(
            partners
                .iter()
                .all(|u| &u.partner.as_ref().unwrap().company == first),
            "{account}: one company: {partners:?}"
        );
    }
    wired_c.shutdown_log();
}

/// Expired `Idempotency-Key` rows are cleaned by the writes that remember
/// keys: a write must not wait for an expired row another transaction
/// holds (another account's write remembering the same key again, or its
/// own cleanup). It waited for the holder's commit before.
#[test]
fn cleaning_expired_keys_never_waits_for_another_transaction() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let _store = partnergate::store::postgres::PgStore::open(&pg.url, "x").unwrap();
    let mut setup = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    setup
        .execute(
            "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)
             VALUES ('old', 'f', 200, '{}', 0)",
            &[],
        )
        .unwrap();
    let mut holder = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let mut held = holder.transaction().unwrap();
    held.execute(
        "SELECT key FROM idempotency_keys WHERE key = 'old' FOR UPDATE",
        &[],
    )
    .unwrap();
    let mut writer = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let answer = partnergate::store::Remembered {
        fingerprint: "f".into(),
        status: 201,
        body: "{}".into(),
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut watcher = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let waited = std::thread::scope(|s| {
        let write = s.spawn(|| {
            let mut tx = writer.transaction().unwrap();
            partnergate::store::postgres::remember_in(&mut tx, "new", &answer).unwrap();
            tx.commit().unwrap();
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut waited = false;
        wait_until("the write finishes or waits for a lock", || {
            waited = watcher
                .query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    &[&pid],
                )
                .unwrap()
                .is_some();
            waited || done.load(std::sync::atomic::Ordering::Acquire)
        });
        held.rollback().unwrap();
        write.join().unwrap();
        waited
    });
    assert!(
        !waited,
        "the write waited for another transaction's expired key"
    );
    let keys: i64 = setup
        .query_one("SELECT count(*) FROM idempotency_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(keys, 2, "the held expired key stays for a later cleanup");
}
