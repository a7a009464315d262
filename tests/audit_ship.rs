//! Decision logs shipped into the real PostgreSQL: two replicas' files
//! copied exactly once, a shipper whose connection is terminated in the
//! middle of a batch and then restarted (nothing lost, nothing twice), and
//! `audit verify --pg` finding a tampered row and a missing one. Each test
//! runs in a schema of its own, dropped after.

use std::path::{Path, PathBuf};
use std::process::Command;

use partnergate_core::audit_db::Shipper;
use partnergate_core::store::postgres::PgStore;

mod common;
use common::{repo as root, PgSchema, BIN};

/// Write `count` synthetic decisions to a log in `dir` as replica `name`,
/// rotating every few KB so the chain spans several files.
fn write_log(dir: &Path, name: &str, count: u64) -> PathBuf {
    let path = dir.join(format!("{name}.jsonl"));
    let out = Command::new(BIN)
        .current_dir(root())
        .args(["audit", "stress", "--count", &count.to_string()])
        .args(["--audit-log", path.to_str().unwrap()])
        .args(["--audit-max-bytes", "16384", "--audit-max-files", "1000"])
        .args(["--audit-replica", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The records of a log file (its chain, verified whole).
fn file_records(path: &Path) -> u64 {
    let r = partnergate::audit::chain::verify(path).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    r.records
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `audit ship` of `log` into `url` (with `extra` flags), which must succeed;
/// its output.
fn ship(log: &Path, url: &str, extra: &[&str]) -> String {
    let log = log.to_str().unwrap();
    let (code, out, err) =
        cli(&[&["audit", "ship", "--log", log, "--pg", url][..], extra].concat());
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// (rows, distinct seqs, min seq, max seq) of one log in the database.
fn rows_of(c: &mut postgres::Client, log_id: &str) -> (i64, i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT seq), COALESCE(min(seq), 0), COALESCE(max(seq), 0)
             FROM audit_records WHERE log_id = $1",
            &[&log_id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

fn log_id_of(path: &Path) -> String {
    partnergate::audit::recovered::log_id(path).unwrap()
}

#[test]
fn two_replicas_logs_are_shipped_exactly_once_and_verify() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = write_log(dir.path(), "r1", 300);
    let b = write_log(dir.path(), "r2", 200);
    assert!(partnergate::audit::chain::chain_files(&a).unwrap().len() > 2);
    for (log, batch) in [(&a, "64"), (&b, "1000")] {
        let out = ship(log, &pg.url, &["--batch", batch]);
        assert!(out.contains("shipped"), "{out}");
    }
    // Again: nothing more to ship.
    let out = ship(&a, &pg.url, &[]);
    assert!(out.starts_with("shipped 0 record(s)"), "{out}");

    let mut c = client(&pg.url);
    let mut total = 0;
    for log in [&a, &b] {
        let n = file_records(log) as i64;
        let (rows, distinct, min, max) = rows_of(&mut c, &log_id_of(log));
        assert_eq!(
            (rows, distinct, min, max),
            (n, n, 1, n),
            "{}",
            log.display()
        );
        total += n;
    }
    // Day partitions hold the rows.
    let parts: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = 'audit_records' AND p.relnamespace = current_schema()::regnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(parts >= 1);

    let (code, out, err) = cli(&["audit", "verify", "--pg", &pg.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("chain intact").count(), 2, "{out}");

    // The query over the database sees both replicas.
    let (code, out, err) = cli(&["audit", "query", "--pg", &pg.url, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count() as i64, total);
    assert!(out.contains("\"replica\":\"r1\"") && out.contains("\"replica\":\"r2\""));
    // With entities: a decision that names its slice gets it back from the
    // record of its own log that carried it.
    let (code, out, err) = cli(&[
        "audit",
        "query",
        "--pg",
        &pg.url,
        "--kind",
        "decision",
        "--json",
        "--with-entities",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(out.lines().count() > 0);
    assert!(out.lines().all(|l| l.contains("\"entities\":")), "{out}");
    assert!(out.lines().any(|l| l.contains("\"entities_hash\":")));
    let (_, out, _) = cli(&[
        "audit", "query", "--pg", &pg.url, "--kind", "reload", "--json",
    ]);
    assert!(!out.contains("\"kind\":\"decision\""), "{out}");
}

#[test]
fn a_shipper_cut_off_mid_batch_and_restarted_loses_nothing_and_doubles_nothing() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "r1", 250);
    let n = file_records(&log) as i64;
    let id = log_id_of(&log);
    let store = PgStore::open(&pg.url, "test").unwrap();
    let mut first = Shipper::new(&log, 50).unwrap();
    let r = first.round(&store).unwrap();
    assert_eq!((r.shipped, r.head_seq), (50, 50));

    // Hold the log's head row so the next round inserts its batch and then
    // waits to move the head: its connection is cut there, mid-batch.
    let mut holder = client(&pg.url);
    let mut hold = holder.transaction().unwrap();
    hold.query_one(
        "SELECT head_seq FROM audit_logs WHERE log_id = $1 FOR UPDATE",
        &[&id],
    )
    .unwrap();
    let pid: i32 = store
        .with_client(|c| c.query_one("SELECT pg_backend_pid()", &[]))
        .unwrap()
        .get(0);
    let cut = std::thread::scope(|s| {
        let round = s.spawn(|| first.round(&store));
        let mut admin = client(&pg.url);
        let mut waiting = false;
        for _ in 0..2000 {
            let r = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    &[&pid],
                )
                .unwrap();
            if r.get::<_, i64>(0) == 1 {
                waiting = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(waiting, "the shipper never waited on the head row");
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        round.join().unwrap()
    });
    assert!(cut.is_err(), "{cut:?}");
    hold.commit().unwrap();
    // Nothing of the cut batch was kept.
    let mut c = client(&pg.url);
    assert_eq!(rows_of(&mut c, &id), (50, 50, 1, 50));

    // The same shipper after its connection came back, and a new one (a
    // restarted process, knowing only what the database holds).
    let r = first.round(&store).unwrap();
    assert_eq!((r.shipped, r.head_seq), (50, 100));
    let mut restarted = Shipper::new(&log, 64).unwrap();
    restarted.ship_all(&store).unwrap();
    assert_eq!(rows_of(&mut c, &id), (n, n, 1, n));
    assert_eq!(restarted.round(&store).unwrap().lag_records, 0);
}

#[test]
fn verify_over_the_database_names_a_tampered_row_and_a_missing_one() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = write_log(dir.path(), "r1", 60);
    let b = write_log(dir.path(), "r2", 60);
    for log in [&a, &b] {
        ship(log, &pg.url, &[]);
    }
    let (ida, idb) = (log_id_of(&a), log_id_of(&b));
    let mut c = client(&pg.url);
    // Log a: a decision's effect changed in place.
    let changed = c
        .execute(
            "UPDATE audit_records SET record = replace(record, '\"decision\":\"Allow\"', '\"decision\":\"Deny\"')
             WHERE log_id = $1 AND seq = 10",
            &[&ida],
        )
        .unwrap();
    assert_eq!(changed, 1);
    // Log b: a record removed.
    c.execute(
        "DELETE FROM audit_records WHERE log_id = $1 AND seq = 20",
        &[&idb],
    )
    .unwrap();
    let (code, out, err) = cli(&["audit", "verify", "--pg", &pg.url]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains(&format!("FAILED: log {ida}"))
            && out.contains(&format!("audit_records[{ida}]:10")),
        "{out}"
    );
    assert!(out.contains("edited record: seq 10"), "{out}");
    assert!(out.contains(&format!("FAILED: log {idb}")), "{out}");
    assert!(out.contains("missing record(s): seq 20"), "{out}");

    // The last record removed: the chain is unbroken but ends before what
    // was shipped.
    let mut c2 = client(&pg.url);
    let last: i64 = c2
        .query_one(
            "SELECT max(seq) FROM audit_records WHERE log_id = $1",
            &[&idb],
        )
        .unwrap()
        .get(0);
    c2.execute(
        "DELETE FROM audit_records WHERE log_id = $1 AND seq <= $2 AND seq >= 20",
        &[&idb, &last],
    )
    .unwrap();
    let (code, out, _) = cli(&["audit", "verify", "--pg", &pg.url, "--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let b_report = v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["log_id"] == idb.as_str())
        .unwrap();
    assert!(
        b_report["tail_problem"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{b_report}"
    );
}
