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
use common::audit_db::{cli, client, file_records, rows_of};
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

/// `audit ship` of `log` into `url` (with `extra` flags), which must succeed;
/// its output.
fn ship(log: &Path, url: &str, extra: &[&str]) -> String {
    let log = log.to_str().unwrap();
    let (code, out, err) =
        cli(&[&["audit", "ship", "--log", log, "--pg", url][..], extra].concat());
    assert_eq!(code, 0, "{out}{err}");
    out
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

/// A log of `name` whose records are dated as `days` says (days before
/// today, one record each, in seq order), sealed by the audit crate as the
/// writer seals them: a chain from the genesis.
fn dated_log(dir: &Path, name: &str, days: &[i64]) -> PathBuf {
    use partnergate::audit::record::{seal, GENESIS_HASH};
    let path = dir.join(format!("{name}.jsonl"));
    let now = time::OffsetDateTime::now_utc();
    let mut prev = GENESIS_HASH.to_string();
    let mut text = String::new();
    for (i, d) in days.iter().enumerate() {
        let ts = partnergate::audit::writer::format_ts(now - time::Duration::days(*d));
        let body = serde_json::json!({
            "seq": null, "ts": ts, "kind": "decision", "decision_id": format!("{name}-{i}"),
            "request_id": null, "principal": "User::\"pat\"", "action": "Action::\"view_account\"",
            "resource": "Account::\"acme\"", "decision": "Allow", "replica": name,
        });
        let serde_json::Value::Object(m) = body else {
            unreachable!()
        };
        let (line, hash) = seal(m, i as u64 + 1, &prev);
        text.push_str(&line);
        text.push('\n');
        prev = hash;
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn verify_pg(url: &str) -> (i32, String) {
    let (code, out, err) = cli(&["audit", "verify", "--pg", url]);
    (code, format!("{out}{err}"))
}

#[test]
fn retention_drops_old_days_records_the_cut_and_verify_still_finds_hand_deletions() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    // r1: two old days (with a record out of time order on a kept day,
    // seq 6), then recent days; r2: only old records (a replica long
    // gone); r3: today only.
    let r1 = dated_log(
        dir.path(),
        "r1",
        &[
            10, 10, 10, 10, 10, 3, 9, 9, 9, 9, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0,
        ],
    );
    let r2 = dated_log(dir.path(), "r2", &[8, 8, 8]);
    let r3 = dated_log(dir.path(), "r3", &[0, 0, 0, 0]);
    for log in [&r1, &r2, &r3] {
        ship(log, &pg.url, &["--batch", "7"]);
    }
    assert_eq!(verify_pg(&pg.url).0, 0);
    let (id1, id2, id3) = (log_id_of(&r1), log_id_of(&r2), log_id_of(&r3));

    // Days out of range are refused, changing nothing.
    for bad in ["0", "-3", "36501", "x"] {
        let (code, out, err) = cli(&["audit", "retention", "--pg", &pg.url, "--days", bad]);
        assert_ne!(code, 0, "--days {bad}: {out}");
        assert!(!err.is_empty());
    }
    let mut c = client(&pg.url);
    assert_eq!(rows_of(&mut c, &id1).0, 20);

    // Two retentions at once: one cuts, the other finds nothing more.
    let url = pg.url.clone();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                cli(&["audit", "retention", "--pg", &url, "--days", "5", "--json"])
            })
        })
        .collect();
    let mut dropped = 0;
    for r in runs {
        let (code, out, err) = r.join().unwrap();
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        dropped += v["dropped"].as_array().unwrap().len();
    }
    assert_eq!(dropped, 3, "the days 10, 9 and 8 ago, once");
    let cuts: i64 = c
        .query_one("SELECT count(*) FROM audit_retentions", &[])
        .unwrap()
        .get(0);
    assert_eq!(cuts, 2, "r1 and r2 cut, once each");
    // r1 keeps one contiguous tail: seq 6 (a kept day, but below the cut)
    // went with the dropped days.
    assert_eq!(rows_of(&mut c, &id1), (10, 10, 11, 20));
    assert_eq!(rows_of(&mut c, &id2).0, 0);
    assert_eq!(rows_of(&mut c, &id3), (4, 4, 1, 4));

    let (code, out) = verify_pg(&pg.url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("starts at seq 11 after a retention"), "{out}");
    assert!(out.contains("ok: retentions: 2 record(s)"), "{out}");
    // Nothing older is left: a second run cuts nothing.
    let (code, out, _) = cli(&["audit", "retention", "--pg", &pg.url, "--days", "5"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("dropped 0 day partition(s)"), "{out}");

    // A kept row deleted by hand is still found: the first kept one (the
    // start no retention stated)...
    let row = c
        .query_one(
            "DELETE FROM audit_records WHERE log_id = $1 AND seq = 11
             RETURNING log_id, seq, ts, replica, kind, hash, prev_hash, record",
            &[&id1],
        )
        .unwrap();
    let (code, out) = verify_pg(&pg.url);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&format!("FAILED: log {id1}")), "{out}");
    let put_back = |c: &mut postgres::Client| {
        c.execute(
            "INSERT INTO audit_records (log_id, seq, ts, replica, kind, hash, prev_hash, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &row.get::<_, String>(0),
                &row.get::<_, i64>(1),
                &row.get::<_, std::time::SystemTime>(2),
                &row.get::<_, Option<String>>(3),
                &row.get::<_, Option<String>>(4),
                &row.get::<_, String>(5),
                &row.get::<_, String>(6),
                &row.get::<_, String>(7),
            ],
        )
        .unwrap();
    };
    put_back(&mut c);
    assert_eq!(verify_pg(&pg.url).0, 0);
    // ... and one in the middle.
    c.execute(
        "DELETE FROM audit_records WHERE log_id = $1 AND seq = 13",
        &[&id1],
    )
    .unwrap();
    let (code, out) = verify_pg(&pg.url);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("seq 13 is missing"), "{out}");
}

#[test]
fn a_retention_record_changed_or_deleted_breaks_verify() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let r1 = dated_log(dir.path(), "r1", &[9, 9, 9, 0, 0]);
    let r2 = dated_log(dir.path(), "r2", &[7, 0]);
    for log in [&r1, &r2] {
        ship(log, &pg.url, &[]);
    }
    let (code, out, err) = cli(&["audit", "retention", "--pg", &pg.url, "--days", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(verify_pg(&pg.url).0, 0);
    let mut c = client(&pg.url);
    // The stated start moved (`kept_from.seq`, the only `"seq":4` of the
    // record): the record no longer matches its hash.
    let changed = c
        .execute(
            "UPDATE audit_retentions SET record = replace(record, '\"seq\":4', '\"seq\":5') WHERE seq = 1 AND record LIKE '%\"seq\":4%'",
            &[],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let (code, out) = verify_pg(&pg.url);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILED: retentions"), "{out}");
    // The last retention record deleted: its log's start is unstated.
    c.execute(
        "UPDATE audit_retentions SET record = replace(record, '\"seq\":5', '\"seq\":4') WHERE seq = 1",
        &[],
    )
    .unwrap();
    assert_eq!(verify_pg(&pg.url).0, 0);
    c.execute("DELETE FROM audit_retentions WHERE seq = 2", &[])
        .unwrap();
    let (code, out) = verify_pg(&pg.url);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("FAILED: log {}", log_id_of(&r2))),
        "{out}"
    );
}

#[test]
fn garbage_rows_odd_log_ids_and_concurrent_shippers_are_findings_not_failures() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "r1", 200);
    let n = file_records(&log) as i64;
    // Two shippers of the same log at once: each record once.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (log, url) = (log.clone(), pg.url.clone());
            std::thread::spawn(move || ship(&log, &url, &["--batch", "16"]))
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
    let id = log_id_of(&log);
    let mut c = client(&pg.url);
    assert_eq!(rows_of(&mut c, &id), (n, n, 1, n));
    assert_eq!(verify_pg(&pg.url).0, 0);

    // A row that is not JSON, a huge one, seqs at the ends of the range,
    // and rows under a log id made of quotes, a semicolon and non-ASCII:
    // each a finding of verify (exit 3), never a crash.
    let odd = "'; DROP TABLE audit_logs; -- \"ü\u{7f}";
    let huge = "x".repeat(4 << 20);
    c.execute(
        "INSERT INTO audit_records (log_id, seq, ts, hash, prev_hash, record)
         VALUES ($1, $2, now(), 'h', 'p', 'not json {'), ($3, 1, now(), 'h', 'p', $4), ($5, 1, now(), 'h', 'p', '{\"seq\":1}'),
                ($1, 9223372036854775807, now(), 'h', 'p', '{}'), ($5, -7, now(), 'h', 'p', '[]')",
        &[&id, &(n + 1), &"huge", &huge, &odd],
    )
    .unwrap();
    let (code, out, err) = cli(&["audit", "verify", "--pg", &pg.url, "--json"]);
    assert_eq!(code, 3, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let logs = v["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 3);
    for l in logs {
        assert!(
            !l["report"]["problem"].is_null() || !l["tail_problem"].is_null(),
            "{l}"
        );
    }
    assert!(logs.iter().any(|l| l["log_id"] == odd));
    // The tables are still there.
    assert_eq!(rows_of(&mut c, &id).0, n + 2);
    // The file query over the database names the row it cannot read.
    let (code, _, err) = cli(&["audit", "query", "--pg", &pg.url]);
    assert_eq!(code, 1);
    assert!(err.contains("not a decision log record"), "{err}");
}

#[test]
fn serve_with_retention_days_cuts_old_days_and_reports_it() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let old = dated_log(dir.path(), "gone", &[12, 12, 11, 1]);
    ship(&old, &pg.url, &[]);
    let ws = common::Workspace::new();
    let s = common::Server::start(
        &ws,
        &[
            "--store",
            &pg.url,
            "--audit-retention-days",
            "7",
            "--audit-ship-interval-ms",
            "50",
        ],
    );
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let ship_status = loop {
        let ship = s.get("/readyz").1["audit"]["ship"].clone();
        if ship["retention"].is_string() {
            break ship;
        }
        assert!(std::time::Instant::now() < deadline, "{ship}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        ship_status["retention"]
            .as_str()
            .unwrap()
            .starts_with("ok: 2 partition(s)"),
        "{ship_status}"
    );
    assert!(ship_status["lag_seconds"].is_number(), "{ship_status}");
    let mut c = client(&pg.url);
    assert_eq!(rows_of(&mut c, &log_id_of(&old)), (1, 1, 4, 4));
    let (code, out) = verify_pg(&pg.url);
    assert_eq!(code, 0, "{out}");
    // Out of range: refused at start.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--audit-retention-days",
            "0",
            "--bind",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--audit-retention-days"));
}
