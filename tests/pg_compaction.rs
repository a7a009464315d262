//! Compaction of the PostgreSQL change feed (`entity_changes`), on the real
//! database: a follower whose position was compacted away reloads every
//! entity and ends equal to the store; a follower that kept up never
//! reloads; two compactions at once delete each row once; a compaction cut
//! off mid-batch (its backend terminated) changes nothing; the age of a
//! row is the database's own time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::entities::{account, user};
use partnergate::directory::Directory;
use partnergate::runtime::DirectoryFollower;
use partnergate::store::postgres::{compact, horizon, ChangeFeed, PgStore, COMPACT_LOCK};
use serde_json::{json, Value};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn count_changes(url: &str) -> i64 {
    client(url)
        .query_one("SELECT count(*) FROM entity_changes", &[])
        .unwrap()
        .get(0)
}

/// Every stored entity as Cedar reads it, by uid, against memory's: equal
/// in number and in content.
fn assert_memory_equals_store(url: &str, directory: &Directory) {
    let rows = client(url)
        .query("SELECT uid, json FROM entities ORDER BY uid", &[])
        .unwrap();
    assert_eq!(directory.len(), rows.len(), "as many entities as rows");
    for r in rows {
        let (uid, json): (String, String) = (r.get(0), r.get(1));
        let key = partnergate::directory::uid_from_key(&uid).unwrap();
        let stored = cedar_policy::Entity::from_json_str(&json, None)
            .unwrap()
            .to_json_value()
            .unwrap();
        let held = directory
            .get(&key)
            .unwrap_or_else(|| panic!("{uid} is not in memory"))
            .to_json_value()
            .unwrap();
        assert_eq!(held, stored, "{uid}");
    }
}

/// Compaction rounds (no retention, no settling) until no change row is
/// left: the first round only sets the bound, and a transaction of another
/// test on the same server may hold it back for a while. The rows deleted.
fn compact_until_empty(url: &str) -> u64 {
    let mut c = client(url);
    let mut deleted = 0;
    wait_until("compaction empties the feed", || {
        deleted += compact(&mut c, Duration::ZERO, Duration::ZERO)
            .unwrap()
            .deleted;
        count_changes(url) == 0
    });
    deleted
}

/// Whether the bound the last round left is above every change row's
/// transaction (the next round may delete them all).
fn bound_passes_every_row(url: &str) -> bool {
    client(url)
        .query_one(
            "SELECT COALESCE((SELECT bound > max(c.xid) FROM feed_horizon h, entity_changes c
                              WHERE h.id = 1 GROUP BY h.bound), false)",
            &[],
        )
        .unwrap()
        .get(0)
}

fn put(directory: &Directory, entities: Value) {
    directory.put_json(None, entities).unwrap();
}

/// A follower stopped while another replica writes, updates and deletes,
/// then compacted past: started again from where it stopped, it finds its
/// position behind the horizon, reloads every entity, and memory equals
/// the store (the deleted user gone, the new ones there) — then follows
/// later writes as usual.
#[test]
fn a_follower_compacted_past_reloads_and_equals_the_store() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let writer = Directory::open(Arc::new(PgStore::open(&pg.url, "a").unwrap())).unwrap();
    put(
        &writer,
        json!([
            account("acme", Some("Acme")),
            user("emma", "acme").json(),
            user("gone", "acme").json()
        ]),
    );
    let store_b = Arc::new(PgStore::open(&pg.url, "b").unwrap());
    let follower = Arc::new(Directory::open(store_b.clone()).unwrap());
    let start = (store_b.loaded_snapshot().unwrap(), follower.loaded_seq());
    let feed = ChangeFeed::start(&pg.url, start, DirectoryFollower(follower.clone())).unwrap();
    put(&writer, json!([user("first", "acme").json()]));
    let first = partnergate::directory::uid_from_key("User::\"first\"").unwrap();
    wait_until("the follower sees the first write", || {
        follower.contains(&first)
    });
    let stopped_at = (feed.position(), feed.last_seq());
    drop(feed);

    // While it is stopped: an update, a delete, new users.
    put(
        &writer,
        json!([user("emma", "acme").status("dismissed").json()]),
    );
    writer
        .delete(&[partnergate::directory::uid_from_key("User::\"gone\"").unwrap()])
        .unwrap();
    for i in 0..5 {
        put(&writer, json!([user(&format!("late{i}"), "acme").json()]));
    }
    let before = count_changes(&pg.url);
    let deleted = compact_until_empty(&pg.url);
    assert_eq!(deleted as i64, before, "every change was older than 0 s");
    assert!(horizon(&mut client(&pg.url)).unwrap().is_some());

    let feed = ChangeFeed::start(&pg.url, stopped_at, DirectoryFollower(follower.clone())).unwrap();
    wait_until("the follower reloads", || feed.reloads() == 1);
    assert_memory_equals_store(&pg.url, &follower);
    let gone = partnergate::directory::uid_from_key("User::\"gone\"").unwrap();
    assert!(!follower.contains(&gone), "the deleted user left memory");

    // It goes on from the reload's snapshot.
    put(&writer, json!([user("after", "acme").json()]));
    let after = partnergate::directory::uid_from_key("User::\"after\"").unwrap();
    wait_until("the follower sees a write after the reload", || {
        follower.contains(&after)
    });
    assert_memory_equals_store(&pg.url, &follower);
    assert_eq!(feed.reloads(), 1, "one reload");
}

/// A follower that keeps up is never told to reload by a compaction that
/// deletes only what it has read (a long retention keeps the rest).
#[test]
fn a_follower_that_kept_up_does_not_reload() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let writer = Directory::open(Arc::new(PgStore::open(&pg.url, "a").unwrap())).unwrap();
    let store_b = Arc::new(PgStore::open(&pg.url, "b").unwrap());
    let follower = Arc::new(Directory::open(store_b.clone()).unwrap());
    let start = (store_b.loaded_snapshot().unwrap(), follower.loaded_seq());
    let feed = ChangeFeed::start(&pg.url, start, DirectoryFollower(follower.clone())).unwrap();
    put(
        &writer,
        json!([account("acme", None), user("emma", "acme").json()]),
    );
    let emma = partnergate::directory::uid_from_key("User::\"emma\"").unwrap();
    wait_until("the follower sees emma", || follower.contains(&emma));
    // Old rows by the database's clock: dated back an hour.
    client(&pg.url)
        .execute("UPDATE entity_changes SET at = at - interval '1 hour'", &[])
        .unwrap();
    // Rounds, each followed by a write the follower reads (it keeps up),
    // until the two old rows are gone; the recent writes stay.
    let mut c = client(&pg.url);
    let (mut deleted, mut round) = (0, 0);
    wait_until("compaction deletes the old rows", || {
        deleted += compact(&mut c, Duration::from_secs(1800), Duration::ZERO)
            .unwrap()
            .deleted;
        round += 1;
        let marker = format!("marker{round}");
        put(&writer, json!([user(&marker, "acme").json()]));
        let uid = partnergate::directory::uid_from_key(&format!("User::\"{marker}\"")).unwrap();
        wait_until("the follower reads the marker", || follower.contains(&uid));
        deleted == 2
    });
    assert_eq!(count_changes(&pg.url), round, "every recent row kept");
    put(&writer, json!([user("later", "acme").json()]));
    let later = partnergate::directory::uid_from_key("User::\"later\"").unwrap();
    wait_until("the follower sees a later write", || {
        follower.contains(&later)
    });
    assert_eq!(feed.reloads(), 0, "nothing it needed was deleted");
    assert_memory_equals_store(&pg.url, &follower);
}

/// Two compactions at once (as two replicas would run them) delete every
/// old row once, in batches, with no error; while a session holds the
/// compaction lock, a compaction skips its round and deletes nothing.
#[test]
fn compactions_at_once_delete_each_row_once_and_the_lock_skips() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let _store = PgStore::open(&pg.url, "a").unwrap();
    let rows = 2_500;
    client(&pg.url)
        .execute(
            "INSERT INTO entity_changes (uid, json, replica)
             SELECT 'User::\"u' || i || '\"', NULL, 'a' FROM generate_series(1, $1::int) AS i",
            &[&rows],
        )
        .unwrap();

    let mut holder = client(&pg.url);
    let mut held = holder.transaction().unwrap();
    held.execute("SELECT pg_advisory_xact_lock($1)", &[&COMPACT_LOCK])
        .unwrap();
    let done = compact(&mut client(&pg.url), Duration::ZERO, Duration::ZERO).unwrap();
    assert!(done.skipped && done.deleted == 0, "{done:?}");
    held.rollback().unwrap();

    let mut c = client(&pg.url);
    wait_until("a bound above every row", || {
        compact(&mut c, Duration::ZERO, Duration::ZERO).unwrap();
        bound_passes_every_row(&pg.url)
    });
    assert_eq!(
        count_changes(&pg.url),
        i64::from(rows),
        "nothing deleted yet"
    );
    let (one, two) = std::thread::scope(|s| {
        let run = || compact(&mut client(&pg.url), Duration::ZERO, Duration::ZERO).unwrap();
        let (a, b) = (s.spawn(run), s.spawn(run));
        (a.join().unwrap(), b.join().unwrap())
    });
    // One may have skipped the rounds the other held; the rest is deleted
    // by later passes, and no row is counted twice.
    let again = compact_until_empty(&pg.url);
    assert_eq!(
        one.deleted + two.deleted + again,
        rows as u64,
        "{one:?} {two:?} {again}"
    );
}

/// A compaction whose connection is cut mid-batch (its backend terminated
/// while its delete waits for a row) rolls back whole: no row deleted, the
/// horizon unchanged; the next compaction does the work.
#[test]
fn a_compaction_cut_off_mid_batch_changes_nothing() {
    let Some(pg) = common::PgSchema::new() else {
        return;
    };
    let writer = Directory::open(Arc::new(PgStore::open(&pg.url, "a").unwrap())).unwrap();
    put(
        &writer,
        json!([account("acme", None), user("emma", "acme").json()]),
    );
    let before = count_changes(&pg.url);
    // One transaction wrote every row: a round that sets a bound above
    // it deleted none of them (it deleted below the bound before).
    let mut c = client(&pg.url);
    wait_until("a bound above every row", || {
        compact(&mut c, Duration::ZERO, Duration::ZERO).unwrap();
        bound_passes_every_row(&pg.url)
    });
    assert_eq!(count_changes(&pg.url), before);
    // A session holds a row the compaction must delete.
    let mut blocker = client(&pg.url);
    let mut blocking = blocker.transaction().unwrap();
    blocking
        .execute(
            "SELECT seq FROM entity_changes ORDER BY seq LIMIT 1 FOR UPDATE",
            &[],
        )
        .unwrap();
    let mut compacting = client(&pg.url);
    let pid: i32 = compacting
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let result = std::thread::scope(|s| {
        let run = s.spawn(move || compact(&mut compacting, Duration::ZERO, Duration::ZERO));
        let mut watcher = client(&pg.url);
        wait_until("the compaction waits for the row", || {
            watcher
                .query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    &[&pid],
                )
                .unwrap()
                .is_some()
        });
        watcher
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        run.join().unwrap()
    });
    assert!(result.is_err(), "the cut compaction reports its failure");
    blocking.rollback().unwrap();
    assert_eq!(count_changes(&pg.url), before, "nothing deleted");
    assert_eq!(horizon(&mut client(&pg.url)).unwrap(), None, "no horizon");
    assert_eq!(compact_until_empty(&pg.url) as i64, before);
}
