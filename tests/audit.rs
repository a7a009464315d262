//! Integration tests of the decision log: real files in temp dirs, real
//! decisions from the shipped pack, the real binary for the CLI and the
//! SIGKILL crash test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use partnergate::audit::{
    self, chain, query, replay, AuditConfig, AuditLog, BreakKind, ChangeEvent, DecisionEvent, Kind,
    OnFull, Redaction, ReloadEvent, SyncMode,
};
use partnergate::engine::{self, Effect, Semantics};
use partnergate::policies::{self, PackSource, PolicyPack};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod common;
use common::entities::{self, account, company, eref};
use common::{repo as root, BIN};

fn shipped_pack() -> PolicyPack {
    policies::load(&PackSource::new(
        root().join("policies"),
        Some(root().join("schemas/partnergate.cedarschema")),
    ))
    .unwrap()
}

/// A user whose email holds a secret the redaction tests look for.
fn user(id: &str, account: &str) -> entities::User {
    entities::user(id, account).email(&format!("{id}.secret@{account}.example"))
}

fn world() -> Value {
    json!([
        user("alice", "acme").admin(true).json(),
        user("bob", "acme").json(),
        user("carol", "acme").json(),
        user("pete", "acme").partner("globex", true).json(),
        account("acme", Some("acme")),
        company("globex", "gold", true),
        company("initech", "silver", true),
        company("umbrella", "silver", false),
    ])
}

fn invitee(company_id: &str, status: &str, certified: bool) -> Value {
    json!({"invitee": {"company": eref("PartnerCompany", company_id), "status": status, "certified": certified}})
}

/// Decide with the shipped pack (or `pack`) and build the event to log.
fn decision_with(
    pack: &PolicyPack,
    p: &str,
    a: &str,
    r: &str,
    context: Option<Value>,
) -> DecisionEvent {
    let action = format!("Action::\"{a}\"");
    let question = engine::JsonQuestion {
        principal: p,
        action: &action,
        resource: r,
        context: context.clone(),
        entities: world(),
    };
    let decision = engine::decide_json(pack, question, Semantics::FailClosed).unwrap();
    DecisionEvent::new(p, action, r, audit::EntitySlice::new(world()), decision)
        .with_request_id(Some(format!("req-{p}-{a}")))
        .with_context(context)
        .with_latency_us(17)
}

/// Alice (an administrator) views account acme: an Allow, the common case.
fn alice_views_acme(pack: &PolicyPack) -> DecisionEvent {
    decision_with(
        pack,
        "User::\"alice\"",
        "view_account",
        "Account::\"acme\"",
        None,
    )
}

fn open(path: &Path) -> AuditLog {
    AuditLog::open(AuditConfig::file(path)).unwrap().0
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn records(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A log of `n` real decisions (alternating Allow and Deny).
fn write_decisions(path: &Path, n: usize) {
    let pack = shipped_pack();
    let log = open(path);
    for i in 0..n {
        let ev = if i % 2 == 0 {
            alice_views_acme(&pack)
        } else {
            decision_with(
                &pack,
                "User::\"bob\"",
                "invite_user",
                "Account::\"acme\"",
                None,
            )
        };
        assert!(log.log(ev));
    }
    log.shutdown();
    assert_eq!(log.written(), n as u64);
}

#[test]
fn each_kind_of_event_lands_exactly_once_with_all_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/decisions.jsonl");
    let pack = shipped_pack();
    let mut config = AuditConfig::file(&path);
    config.replica = Some("replica-7".into());
    let (log, info) = AuditLog::open(config).unwrap();
    assert_eq!(info.next_seq, 1);
    assert!(info.repaired.is_none());

    let mut dec = decision_with(
        &pack,
        "User::\"alice\"",
        "invite_partner",
        "Account::\"acme\"",
        Some(invitee("initech", "silver", true)),
    );
    assert_eq!(dec.decision.decision, Effect::Deny);
    // A candidate that would allow: shadow records the disagreement.
    let candidate = engine::Decision {
        decision: Effect::Allow,
        reasons: vec![engine::Reason {
            id: "admin-administer-account".into(),
            description: None,
        }],
        errors: vec![],
        policy_version: "sha256:candidate".into(),
    };
    dec.shadow = audit::shadow_of(&dec.decision, &candidate);
    let decision_id = dec.decision_id.clone();
    assert!(log.log(dec.clone()));
    assert!(log.log(
        ChangeEvent::new(
            "User::\"alice\"",
            "user.dismiss",
            json!({"id": "bob", "status": "active"}),
            json!({"id": "bob", "status": "dismissed"})
        )
        .decided_by(Some(decision_id.clone()))
        .request(Some("req-change".into()))
    ));
    assert!(log.log(ReloadEvent {
        request_id: None,
        files: vec!["policies/10-members.cedar".into()],
        version: Some(pack.version.clone()),
        error: Some("policies/10-members.cedar:3:1: unexpected token".into()),
    }));
    log.shutdown();
    assert_eq!(log.written(), 3);
    assert_eq!(log.dropped(), 0);

    let recs = records(&path);
    assert_eq!(recs.len(), 3, "exactly one line per event");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], json!(i as u64 + 1));
        let ts = r["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        query::parse_time(ts).unwrap();
        assert_eq!(r["replica"], json!("replica-7"));
        assert_eq!(r["hash"].as_str().unwrap().len(), 64);
    }
    assert_eq!(recs[0]["prev_hash"], json!(audit::record::GENESIS_HASH));
    assert_eq!(recs[1]["prev_hash"], recs[0]["hash"]);
    assert_eq!(recs[2]["prev_hash"], recs[1]["hash"]);

    let d = &recs[0];
    assert_eq!(d["kind"], json!("decision"));
    assert_eq!(d["decision_id"], json!(decision_id));
    assert_eq!(d["request_id"], json!(dec.request_id.clone().unwrap()));
    assert_eq!(d["principal"], json!("User::\"alice\""));
    assert_eq!(d["action"], json!("Action::\"invite_partner\""));
    assert_eq!(d["resource"], json!("Account::\"acme\""));
    assert_eq!(d["context"], invitee("initech", "silver", true));
    assert_eq!(d["entities"], world());
    assert_eq!(d["decision"], json!("Deny"));
    assert_eq!(d["reasons"][0]["id"], json!("partner-access-requires-gold"));
    assert_eq!(d["errors"], json!([]));
    assert_eq!(d["policy_version"], json!(pack.version));
    assert_eq!(d["latency_us"], json!(17));
    assert_eq!(d["shadow"]["decision"], json!("Allow"));
    assert_eq!(d["shadow"]["policy_version"], json!("sha256:candidate"));

    let c = &recs[1];
    assert_eq!(c["kind"], json!("change"));
    assert_eq!(c["decision_id"], json!(decision_id));
    assert_eq!(c["actor"], json!("User::\"alice\""));
    assert_eq!(c["operation"], json!("user.dismiss"));
    assert_eq!(c["before"]["status"], json!("active"));
    assert_eq!(c["after"]["status"], json!("dismissed"));

    let r = &recs[2];
    assert_eq!(r["kind"], json!("reload"));
    assert_eq!(r["files"], json!(["policies/10-members.cedar"]));
    assert_eq!(r["version"], json!(pack.version));
    assert!(r["error"].as_str().unwrap().contains("unexpected token"));

    assert!(chain::verify(&path).unwrap().ok());
    // Re-opening continues the chain.
    let (log, info) = AuditLog::open(AuditConfig::file(&path)).unwrap();
    assert_eq!(info.next_seq, 4);
    assert_eq!(json!(info.prev_hash), recs[2]["hash"]);
    log.log(dec);
    log.shutdown();
    assert_eq!(records(&path).len(), 4);
    assert!(chain::verify(&path).unwrap().ok());
}

fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut l = lines(path);
    edit(&mut l);
    std::fs::write(path, l.join("\n") + "\n").unwrap();
}

fn broken(path: &Path) -> audit::ChainBreak {
    let report = chain::verify(path).unwrap();
    report.problem.expect("verify should fail")
}

#[test]
fn verify_detects_an_edited_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    write_decisions(&path, 10);
    assert!(chain::verify(&path).unwrap().ok());
    // Record 5 (alice, Allow) is edited into a Deny.
    rewrite(&path, |l| {
        assert!(l[4].contains("\"decision\":\"Allow\""));
        l[4] = l[4].replace("\"decision\":\"Allow\"", "\"decision\":\"Deny\"");
    });
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Edited);
    assert_eq!(b.seq, Some(5));
    assert_eq!(b.location.line, 5);
    assert_eq!(b.location.file, path);

    // The CLI reports it and exits 3.
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("edited record: seq 5 at"), "{stdout}");
    assert!(stdout.contains("d.jsonl:5"), "{stdout}");

    // Edited and re-hashed (the attacker recomputes the hash): the next
    // record's prev_hash gives it away.
    rewrite(&path, |l| {
        let mut obj: serde_json::Map<String, Value> = serde_json::from_str(&l[4]).unwrap();
        let h = audit::record::compute_hash(&obj);
        obj.insert("hash".into(), json!(h));
        l[4] = serde_json::to_string(&obj).unwrap();
    });
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Edited);
    assert_eq!(b.seq, Some(5));
    assert_eq!(b.location.line, 5);
}

#[test]
fn verify_detects_a_deleted_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    write_decisions(&path, 10);
    rewrite(&path, |l| {
        l.remove(4);
    });
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Missing, "{b}");
    assert_eq!(b.seq, Some(5));
    assert_eq!(b.location.line, 5, "reported where the gap is");
    assert!(b.to_string().contains("seq 5 is missing"), "{b}");

    // Deleting the first record is detected too.
    rewrite(&path, |l| {
        l.remove(0);
    });
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Missing, "{b}");
    assert_eq!(b.seq, Some(1));
}

#[test]
fn verify_detects_an_inserted_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    write_decisions(&path, 10);
    // A copy of record 3 is inserted after record 6.
    rewrite(&path, |l| {
        let copy = l[2].clone();
        l.insert(6, copy);
    });
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Inserted, "{b}");
    assert_eq!(b.seq, Some(3));
    assert_eq!(b.location.line, 7);
}

#[test]
fn verify_detects_a_forged_record_inserted_with_a_valid_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    write_decisions(&path, 10);
    // The forger chains a new record 5 to record 4 correctly; the original
    // record 5 then no longer follows.
    rewrite(&path, |l| {
        let prev: Value = serde_json::from_str(&l[3]).unwrap();
        let mut forged: serde_json::Map<String, Value> = serde_json::from_str(&l[4]).unwrap();
        forged.insert("principal".into(), json!("User::\"mallory\""));
        forged.insert("prev_hash".into(), prev["hash"].clone());
        let h = audit::record::compute_hash(&forged);
        forged.insert("hash".into(), json!(h));
        l.insert(4, serde_json::to_string(&forged).unwrap());
    });
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Inserted, "{b}");
    assert_eq!(b.seq, Some(5));
    assert!(b.to_string().contains("appears twice"), "{b}");
}

#[test]
fn verify_detects_reordered_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    write_decisions(&path, 10);
    rewrite(&path, |l| l.swap(3, 4));
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Reordered, "{b}");
    assert_eq!(b.seq, Some(5));
    assert_eq!(b.location.line, 4);
    assert!(b.to_string().contains("comes before seq 4"), "{b}");
}

#[test]
fn a_torn_last_line_is_cut_and_the_repair_is_logged_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    write_decisions(&path, 5);
    let intact = std::fs::metadata(&path).unwrap().len();
    let last_hash = records(&path)[4]["hash"].clone();
    // A crash mid-write: half a record, no newline.
    let torn = &lines(&path)[0][..200];
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, torn.as_bytes()))
        .unwrap();
    let b = broken(&path);
    assert_eq!(b.kind, BreakKind::Malformed);
    assert_eq!(b.location.line, 6);

    let (log, info) = AuditLog::open(AuditConfig::file(&path)).unwrap();
    let repair = info.repaired.clone().expect("repaired");
    assert_eq!(repair.offset, intact);
    assert_eq!(repair.cut_bytes, 200);
    assert_eq!(info.next_seq, 7, "seq 6 is the repair record");
    write_one(&log);
    log.shutdown();

    let recs = records(&path);
    assert_eq!(recs.len(), 7);
    assert_eq!(recs[5]["kind"], json!("repair"));
    assert_eq!(recs[5]["seq"], json!(6));
    assert_eq!(recs[5]["prev_hash"], last_hash);
    assert_eq!(recs[5]["repair"]["cut_bytes"], json!(200));
    assert_eq!(recs[6]["seq"], json!(7));
    let report = chain::verify(&path).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 7);
}

fn write_one(log: &AuditLog) {
    let pack = shipped_pack();
    log.log(alice_views_acme(&pack));
}

#[test]
fn a_second_writer_is_refused_while_the_log_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let (log, _) = AuditLog::open(AuditConfig::file(&path)).unwrap();
    let err = AuditLog::open(AuditConfig::file(&path)).unwrap_err();
    assert!(matches!(err, audit::AuditError::Locked(_)), "{err}");
    log.shutdown();
    drop(log);
    AuditLog::open(AuditConfig::file(&path)).unwrap();
}

fn total_bytes(path: &Path) -> u64 {
    chain::chain_files(path)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn sigkill_during_heavy_writing_leaves_a_log_that_verifies_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let mut child = Command::new(BIN)
        .args([
            "audit",
            "stress",
            "--count",
            "100000000",
            "--threads",
            "2",
            "--audit-sync",
            "never",
            "--audit-max-bytes",
            "1000000",
            "--audit-log",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (polling, with a deadline) until a few MB and a rotation are on disk.
    let deadline = Instant::now() + Duration::from_secs(120);
    while total_bytes(&path) < 3_000_000 {
        assert!(
            Instant::now() < deadline,
            "the stress writer did not write 3 MB in time"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the stress writer exited early"
        );
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());

    let files_before = chain::chain_files(&path).unwrap();
    assert!(files_before.len() >= 2, "rotated at least once");
    let (log, info) = AuditLog::open(AuditConfig::file(&path)).unwrap();
    write_one(&log);
    log.shutdown();
    assert_eq!(log.written(), 1);
    let report = chain::verify(&path).unwrap();
    assert!(
        report.ok(),
        "{:?} (repaired: {:?})",
        report.problem,
        info.repaired
    );
    assert_eq!(report.last_seq, Some(info.next_seq));
    assert!(report.records > 1000);
}

#[test]
fn rotation_keeps_the_chain_verifiable_across_files_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let pack = shipped_pack();
    let mut config = AuditConfig::file(&path);
    config.max_file_bytes = Some(20_000);
    let (log, _) = AuditLog::open(config.clone()).unwrap();
    let ev = alice_views_acme(&pack);
    for _ in 0..100 {
        log.log(ev.clone());
    }
    log.shutdown();
    let files = chain::chain_files(&path).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 20_000,
            "{f:?} too big"
        );
    }
    // The first record of each file chains to the last of the one before.
    for pair in files.windows(2) {
        let older = records(&pair[0]);
        let newer = records(&pair[1]);
        assert_eq!(newer[0]["prev_hash"], older.last().unwrap()["hash"]);
        assert_eq!(
            newer[0]["seq"].as_u64().unwrap(),
            older.last().unwrap()["seq"].as_u64().unwrap() + 1
        );
    }
    let report = chain::verify(&path).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 100);

    // Reopen (after a rotation left the active file empty, too) and continue.
    std::fs::rename(&path, chain::rotated_path(&path, 0)).unwrap();
    // (PATH.0 sorts as the newest rotated file.)
    let (log, info) = AuditLog::open(config).unwrap();
    assert_eq!(info.next_seq, 101);
    log.log(ev);
    log.shutdown();
    let report = chain::verify(&path).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 101);

    // Deleting a middle file is a missing-records break.
    let files = chain::chain_files(&path).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    assert_eq!(broken(&path).kind, BreakKind::Missing);
}

#[test]
fn a_shared_slice_is_written_inline_once_per_file_and_replays_from_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let pack = shipped_pack();
    let mut config = AuditConfig::file(&path);
    config.max_file_bytes = Some(6_000);
    config.redaction = Redaction {
        context_keys: vec![],
        entity_attrs: vec!["email".into()],
    };
    let (log, _) = AuditLog::open(config).unwrap();
    // Two slices, each shared by its decisions as the sidecar shares a
    // cached slice; a third decision builds an equal slice of its own.
    let mut ev = alice_views_acme(&pack);
    let mut other_world = world();
    other_world[4]["attrs"]["name"] = json!("Acme Corp"); // does not change the decision
    let shared = [ev.entities.clone(), audit::EntitySlice::new(other_world)];
    for i in 0..40 {
        ev.entities = shared[i % 2].clone();
        ev.decision_id = audit::new_decision_id();
        log.log(ev.clone());
    }
    ev.entities = audit::EntitySlice::new(world());
    log.log(ev);
    log.shutdown();

    let files = chain::chain_files(&path).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    let mut hashes = std::collections::BTreeSet::new();
    for f in &files {
        let mut inline = std::collections::BTreeMap::new();
        for r in records(f) {
            let h = r["entities_hash"]
                .as_str()
                .expect("every decision names its slice");
            hashes.insert(h.to_string());
            match r.get("entities") {
                Some(e) => {
                    // Inline only the first time this file uses the slice,
                    // redacted, and `entities_hash` is its canonical hash.
                    assert!(
                        inline.insert(h.to_string(), ()).is_none(),
                        "{f:?}: {h} inline twice"
                    );
                    assert_eq!(e[0]["attrs"]["email"], json!("***"));
                    assert_eq!(e[0]["attrs"]["status"], json!("active"));
                    let digest = Sha256::digest(audit::record::canonical(e).as_bytes());
                    assert_eq!(hex::encode(digest), h);
                }
                None => assert!(
                    inline.contains_key(h),
                    "{f:?}: {h} used before it is carried"
                ),
            }
        }
    }
    assert_eq!(hashes.len(), 2, "equal slices share one hash: {hashes:?}");
    assert!(chain::verify(&path).unwrap().ok());

    // Replay resolves every reference, in every file.
    let report = replay::replay(&path, &pack, &replay::ReplayOptions::default()).unwrap();
    assert_eq!(report.skipped, 0, "{:?}", report.skipped_examples);
    assert_eq!(report.replayed, 41);
    assert_eq!(report.changed, 0);
}

#[test]
fn redacted_values_never_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let pack = shipped_pack();
    let mut config = AuditConfig::file(&path);
    config.redaction = Redaction {
        context_keys: vec!["reporter_email".into()],
        entity_attrs: vec!["email".into()],
    };
    let (log, _) = AuditLog::open(config).unwrap();
    let mut ev = alice_views_acme(&pack);
    ev.context = json!({"ticket": {"reporter_email": "zed.secret@acme.example", "id": 7}});
    log.log(ev);
    log.log(ChangeEvent::new(
        "User::\"alice\"",
        "user.invite",
        Value::Null,
        json!({"id": "dora", "email": "dora.secret@acme.example"}),
    ));
    log.shutdown();

    let raw = std::fs::read(&path).unwrap();
    let text = String::from_utf8(raw).unwrap();
    for secret in [
        "alice.secret@",
        "bob.secret@",
        "pete.secret@",
        "zed.secret@",
        "dora.secret@",
        ".secret@",
    ] {
        assert!(!text.contains(secret), "{secret} reached the file");
    }
    let recs = records(&path);
    assert_eq!(recs[0]["context"]["ticket"]["reporter_email"], json!("***"));
    assert_eq!(recs[0]["context"]["ticket"]["id"], json!(7));
    assert_eq!(recs[0]["entities"][0]["attrs"]["email"], json!("***"));
    assert_eq!(recs[0]["entities"][0]["attrs"]["status"], json!("active"));
    assert_eq!(recs[1]["after"]["email"], json!("***"));
    assert!(chain::verify(&path).unwrap().ok());
}

#[test]
fn the_drop_policy_counts_every_drop_and_backpressure_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pack = shipped_pack();
    let ev = alice_views_acme(&pack);

    let path = dir.path().join("drop.jsonl");
    let mut config = AuditConfig::file(&path);
    config.queue_capacity = 1;
    config.on_full = OnFull::Drop;
    config.sync = SyncMode::Always;
    let (log, _) = AuditLog::open(config.clone()).unwrap();
    let mut accepted = 0u64;
    for _ in 0..2000 {
        if log.log(ev.clone()) {
            accepted += 1;
        }
    }
    log.shutdown();
    assert!(
        log.dropped() > 0,
        "a queue of 1 with fsync per record must overflow"
    );
    assert_eq!(log.dropped() + accepted, 2000);
    assert_eq!(log.written(), accepted);
    // The drops are stated by gap records, chained like the rest.
    let gaps = log.status().gaps;
    assert!(gaps >= 1);
    assert_eq!(lines(&path).len() as u64, accepted + gaps);
    let report = chain::verify(&path).unwrap();
    assert!(report.intact(), "{:?}", report.problem);
    assert_eq!(report.records_not_logged, log.dropped());
    // After shutdown, events are refused and counted.
    assert!(!log.log(ev.clone()));
    assert_eq!(log.dropped() + accepted, 2001);

    let path = dir.path().join("block.jsonl");
    config.sink = audit::Sink::File(path.clone());
    config.on_full = OnFull::Block;
    config.sync = SyncMode::Batch;
    let (log, _) = AuditLog::open(config).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            let ev = ev.clone();
            std::thread::spawn(move || (0..250).all(|_| log.log(ev.clone())))
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap()));
    assert!(log.flush());
    assert_eq!(lines(&path).len(), 1000);
    log.shutdown();
    assert_eq!(log.dropped(), 0);
    assert_eq!(log.written(), 1000);
    assert!(chain::verify(&path).unwrap().ok());
}

/// The shipped policies with `partner-access-requires-gold` relaxed to
/// accept silver partner companies too.
fn candidate_dir(dir: &Path) -> PathBuf {
    let cand = dir.join("candidate");
    std::fs::create_dir_all(&cand).unwrap();
    for f in std::fs::read_dir(root().join("policies")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_none_or(|e| e != "cedar") {
            continue;
        }
        let mut text = std::fs::read_to_string(&f).unwrap();
        if text.contains("partner-access-requires-gold") {
            let before = text.clone();
            text = text.replace(
                "context.invitee.status == \"gold\"",
                "(context.invitee.status == \"gold\" || context.invitee.status == \"silver\")",
            );
            assert_ne!(before, text);
        }
        std::fs::write(cand.join(f.file_name().unwrap()), text).unwrap();
    }
    cand
}

/// (principal, action, resource, context, live decision, flips?)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<Value>,
    Effect,
    bool,
);

#[test]
fn replay_finds_exactly_the_decisions_a_changed_policy_flips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let pack = shipped_pack();
    let log = open(&path);
    let cases: Vec<Case> = vec![
        // (principal, action, resource, context, live decision, flips?)
        (
            "alice",
            "invite_partner",
            "Account::\"acme\"",
            Some(invitee("initech", "silver", true)),
            Effect::Deny,
            true,
        ),
        (
            "alice",
            "invite_partner",
            "Account::\"acme\"",
            Some(invitee("globex", "gold", true)),
            Effect::Allow,
            false,
        ),
        (
            "alice",
            "invite_partner",
            "Account::\"acme\"",
            Some(invitee("umbrella", "silver", false)),
            Effect::Deny,
            false,
        ),
        (
            "bob",
            "invite_partner",
            "Account::\"acme\"",
            Some(invitee("initech", "silver", true)),
            Effect::Deny,
            false,
        ),
        (
            "alice",
            "grant_partner_access",
            "User::\"carol\"",
            Some(invitee("initech", "silver", true)),
            Effect::Deny,
            true,
        ),
        (
            "pete",
            "grant_partner_access",
            "User::\"carol\"",
            Some(invitee("initech", "silver", true)),
            Effect::Deny,
            false,
        ),
        (
            "alice",
            "view_account",
            "Account::\"acme\"",
            None,
            Effect::Allow,
            false,
        ),
        (
            "bob",
            "dismiss_user",
            "User::\"carol\"",
            None,
            Effect::Deny,
            false,
        ),
        (
            "alice",
            "dismiss_user",
            "User::\"carol\"",
            None,
            Effect::Allow,
            false,
        ),
    ];
    let mut expected_flips = Vec::new();
    let mut seq = 0u64;
    for round in 0..3 {
        for (p, a, r, ctx, live, flips) in &cases {
            let ev = decision_with(&pack, &format!("User::\"{p}\""), a, r, ctx.clone());
            assert_eq!(ev.decision.decision, *live, "{p} {a} {r}");
            log.log(ev);
            seq += 1;
            if *flips {
                expected_flips.push(seq);
            }
        }
        // Non-decision records are not replayed.
        log.log(ReloadEvent {
            request_id: None,
            files: vec![],
            version: Some(format!("v{round}")),
            error: None,
        });
        seq += 1;
    }
    log.shutdown();

    let cand = candidate_dir(dir.path());
    let cpack = policies::load(&PackSource::new(
        &cand,
        Some(root().join("schemas/partnergate.cedarschema")),
    ))
    .unwrap();
    let options = replay::ReplayOptions {
        since: None,
        max_examples: 100,
    };
    let report = replay::replay(&path, &cpack, &options).unwrap();
    assert_eq!(report.replayed, 27);
    assert_eq!(report.skipped, 0, "{:?}", report.skipped_examples);
    assert_eq!(report.changed, 6);
    assert_eq!(report.unchanged, 21);
    let mut flipped: Vec<u64> = report
        .groups
        .iter()
        .flat_map(|g| g.examples.iter().map(|e| e.seq))
        .collect();
    flipped.sort_unstable();
    assert_eq!(flipped, expected_flips);
    assert_eq!(report.groups.len(), 2);
    for g in &report.groups {
        assert_eq!((g.from, g.to), (Effect::Deny, Effect::Allow));
        assert_eq!(g.count, 3);
        let gone: Vec<_> = g
            .causes
            .iter()
            .filter(|c| c.role == "no longer determining")
            .map(|c| c.policy.as_str())
            .collect();
        assert_eq!(gone, ["partner-access-requires-gold"]);
    }
    assert_eq!(report.groups[0].action, "Action::\"grant_partner_access\"");
    assert!(report.groups[0]
        .causes
        .iter()
        .any(|c| c.policy == "admin-administer-users" && c.role == "now determining"));
    assert_eq!(report.groups[1].action, "Action::\"invite_partner\"");
    assert!(report.groups[1]
        .causes
        .iter()
        .any(|c| c.policy == "admin-administer-account" && c.role == "now determining"));

    // The same pack changes nothing.
    let same = replay::replay(&path, &pack, &options).unwrap();
    assert_eq!((same.replayed, same.changed), (27, 0));

    // The CLI: --fail-on-change exits 2 with the candidate, 0 with the shipped pack.
    let out = Command::new(BIN)
        .args(["audit", "replay", "--fail-on-change", "--policies"])
        .arg(&cand)
        .args(["--schema"])
        .arg(root().join("schemas/partnergate.cedarschema"))
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("6 would change, 21 unchanged"), "{stdout}");
    assert!(
        stdout.contains("Action::\"invite_partner\"  Deny -> Allow: 3"),
        "{stdout}"
    );
    let out = Command::new(BIN)
        .current_dir(root())
        .args(["audit", "replay", "--fail-on-change"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --since after everything: nothing is replayed.
    let later = replay::ReplayOptions {
        since: Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
        max_examples: 3,
    };
    assert_eq!(replay::replay(&path, &cpack, &later).unwrap().replayed, 0);
}

#[test]
fn query_filters_and_streams_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let pack = shipped_pack();
    let mut config = AuditConfig::file(&path);
    config.max_file_bytes = Some(10_000);
    let (log, _) = AuditLog::open(config).unwrap();
    for _ in 0..10 {
        log.log(alice_views_acme(&pack));
        log.log(decision_with(
            &pack,
            "User::\"bob\"",
            "invite_user",
            "Account::\"acme\"",
            None,
        ));
    }
    log.log(ChangeEvent::new(
        "User::\"alice\"",
        "user.dismiss",
        json!(1),
        json!(2),
    ));
    log.shutdown();
    assert!(chain::chain_files(&path).unwrap().len() > 1);

    let count = |f: query::Filter| {
        let mut seqs = Vec::new();
        query::query(&path, &f, false, |_, _, h| -> Result<(), ()> {
            seqs.push(h.seq);
            Ok(())
        })
        .unwrap()
        .unwrap();
        seqs
    };
    assert_eq!(count(query::Filter::default()).len(), 21);
    assert_eq!(
        count(query::Filter {
            principal: Some("alice".into()),
            ..Default::default()
        })
        .len(),
        11
    );
    assert_eq!(
        count(query::Filter {
            principal: Some("User::\"alice\"".into()),
            kind: Some(Kind::Decision),
            ..Default::default()
        })
        .len(),
        10
    );
    assert_eq!(
        count(query::Filter {
            decision: Some(Effect::Deny),
            ..Default::default()
        }),
        (1..=10).map(|i| i * 2).collect::<Vec<_>>()
    );
    assert_eq!(
        count(query::Filter {
            action: Some("invite_user".into()),
            resource: Some("acme".into()),
            ..Default::default()
        })
        .len(),
        10
    );
    assert_eq!(
        count(query::Filter {
            policy_version: Some(pack.version[..12].to_string()),
            ..Default::default()
        })
        .len(),
        20
    );
    assert_eq!(
        count(query::Filter {
            policy_version: Some("sha256:nope".into()),
            ..Default::default()
        })
        .len(),
        0
    );
    let future = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert_eq!(
        count(query::Filter {
            since: Some(future),
            ..Default::default()
        })
        .len(),
        0
    );
    assert_eq!(
        count(query::Filter {
            until: Some(future),
            ..Default::default()
        })
        .len(),
        21
    );

    let out = Command::new(BIN)
        .args(["audit", "query", "--decision", "deny", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 10);
    let denies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for v in &denies {
        assert_eq!(v["decision"], json!("Deny"));
    }
    // As written, a file carries the shared slice once; later decisions only
    // name it. --with-entities prints every decision with its slice.
    let named_only = denies
        .iter()
        .filter(|v| v.get("entities").is_none())
        .count();
    assert!(named_only > 0, "{stdout}");
    let out = Command::new(BIN)
        .args([
            "audit",
            "query",
            "--decision",
            "deny",
            "--json",
            "--with-entities",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 10);
    for (l, written) in stdout.lines().zip(&denies) {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["entities"], world(), "{l}");
        assert_eq!(v["seq"], written["seq"]);
        assert_eq!(v["entities_hash"], written["entities_hash"]);
    }
    // One decision by its id (one that names its slice only).
    let id = denies
        .iter()
        .rev()
        .find(|v| v.get("entities").is_none())
        .unwrap()["decision_id"]
        .as_str()
        .unwrap();
    let out = Command::new(BIN)
        .args([
            "audit",
            "query",
            "--json",
            "--with-entities",
            "--decision-id",
            id,
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["decision_id"], json!(id));
    assert_eq!(v["entities"], world());
    // --with-entities is for JSON output.
    let out = Command::new(BIN)
        .args(["audit", "query", "--with-entities"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json"));
    let out = Command::new(BIN)
        .args(["audit", "query", "--kind", "change"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("user.dismiss"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 21 record(s) matched"));
}

#[test]
fn opening_a_log_whose_last_complete_record_was_edited_fails_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    write_decisions(&path, 3);
    rewrite(&path, |l| {
        l[2] = l[2].replace("\"latency_us\":17", "\"latency_us\":18");
    });
    let err = AuditLog::open(AuditConfig::file(&path)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, audit::AuditError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("d.jsonl") && msg.contains("seq 3"), "{msg}");
    // Nothing was written or cut.
    assert_eq!(lines(&path).len(), 3);
}

/// Events a full queue drops (`--audit-on-full drop`) are not lost without
/// a trace: a gap record states how many and when, and `verify` reports it
/// (exit 4) instead of "chain intact" (issue #12, defect 4).
#[test]
fn queue_drops_are_stated_by_a_gap_record_that_verify_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let mut config = AuditConfig::file(&path);
    config.on_full = OnFull::Drop;
    config.queue_capacity = 1;
    // The writer lingers: a burst overflows the one-slot queue.
    config.linger = Duration::from_millis(200);
    let (log, _) = AuditLog::open(config).unwrap();
    let reload = |i: u64| ReloadEvent {
        request_id: Some(format!("r{i}")),
        files: vec![],
        version: Some("v".into()),
        error: None,
    };
    let mut accepted = 0;
    for i in 0..200 {
        accepted += u64::from(log.log(reload(i)));
    }
    log.shutdown();
    let dropped = log.dropped();
    assert!(dropped > 0, "the burst overflowed nothing");
    assert_eq!(accepted + dropped, 200);
    // One gap record per writer pass that saw drops (usually one).
    let gaps = log.status().gaps;
    assert!(gaps >= 1);
    assert_eq!(log.status().unrecorded, 0);

    let report = chain::verify(&path).unwrap();
    assert!(report.intact(), "{:?}", report.problem);
    assert!(!report.ok(), "a declared gap is not 'nothing missing'");
    assert_eq!(report.gaps.len() as u64, gaps);
    let sum = |f: fn(&audit::GapInfo) -> u64| report.gaps.iter().map(|g| f(&g.info)).sum::<u64>();
    assert_eq!(sum(|g| g.records), dropped);
    assert_eq!(sum(|g| g.queue_dropped), dropped);
    assert_eq!(sum(|g| g.write_failed), 0);
    assert!(report.gaps.iter().all(|g| g.info.from <= g.info.until));
    assert_eq!(report.records, accepted + gaps);

    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&format!("{dropped} record(s) were not logged")),
        "{text}"
    );
    assert!(!text.contains("chain intact"), "{text}");
    let kinds: Vec<Value> = records(&path).iter().map(|r| r["kind"].clone()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "gap").count() as u64, gaps);
}

/// A decision whose entity slice could not be serialised carries
/// `entities_error` (and a null `entities`); replay must report it as
/// skipped with "slice unavailable", never re-decide it over no entities.
#[test]
fn replay_reports_a_record_whose_slice_was_unavailable_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let pack = shipped_pack();
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("ts", json!("2026-01-01T00:00:00.000000Z")),
        ("kind", json!("decision")),
        ("decision_id", json!("d1")),
        ("request_id", Value::Null),
        ("principal", json!("User::\"alice\"")),
        ("action", json!("Action::\"view_account\"")),
        ("resource", json!("Account::\"acme\"")),
        ("context", Value::Null),
        ("entities", Value::Null),
        ("entities_hash", json!(hex::encode(Sha256::digest(b"null")))),
        ("entities_error", json!("a value Cedar cannot write")),
        ("decision", json!("Allow")),
        ("reasons", json!([])),
        ("errors", json!([])),
        ("policy_version", json!(pack.version)),
        ("latency_us", json!(1)),
    ] {
        m.insert(k.into(), v);
    }
    let (line, _) = audit::record::seal(m, 1, audit::record::GENESIS_HASH);
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let verified = chain::verify(&path).unwrap();
    assert!(verified.ok(), "{verified:?}");
    let report = replay::replay(&path, &pack, &replay::ReplayOptions::default()).unwrap();
    assert_eq!(report.replayed, 0, "{report:?}");
    assert_eq!(report.skipped, 1, "{report:?}");
    let reason = &report.skipped_examples[0].reason;
    assert!(
        reason.contains("slice unavailable") && reason.contains("a value Cedar cannot write"),
        "{reason}"
    );
}

/// The console's newest-first pages select exactly what `audit query`
/// selects with the same filter, in the reverse order, across rotated files
/// and whatever the page size.
#[test]
fn newest_first_pages_are_query_reversed_for_every_filter() {
    use partnergate::audit::newest;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let pack = shipped_pack();
    let mut config = AuditConfig::file(&path);
    config.max_file_bytes = Some(6_000);
    let (log, _) = AuditLog::open(config).unwrap();
    for i in 0..25 {
        log.log(alice_views_acme(&pack));
        let who = if i % 2 == 0 {
            "User::\"bob\""
        } else {
            "User::\"alice\""
        };
        log.log(decision_with(
            &pack,
            who,
            "invite_user",
            "Account::\"acme\"",
            None,
        ));
    }
    log.log(ChangeEvent::new(
        "User::\"alice\"",
        "user.dismiss",
        json!(1),
        json!(2),
    ));
    log.shutdown();
    assert!(chain::chain_files(&path).unwrap().len() > 2);
    let filters = [
        query::Filter::default(),
        query::Filter {
            principal: Some("alice".into()),
            ..Default::default()
        },
        query::Filter {
            principal: Some("User::\"bob\"".into()),
            ..Default::default()
        },
        query::Filter {
            decision: Some(Effect::Deny),
            ..Default::default()
        },
        query::Filter {
            kind: Some(Kind::Change),
            ..Default::default()
        },
        query::Filter {
            action: Some("invite_user".into()),
            resource: Some("acme".into()),
            ..Default::default()
        },
        query::Filter {
            policy: Some("admin-administer-account".into()),
            ..Default::default()
        },
        query::Filter {
            principal: Some("nobody".into()),
            ..Default::default()
        },
        query::Filter {
            request_id: Some("req-User::\"bob\"-invite_user".into()),
            ..Default::default()
        },
    ];
    for f in filters {
        let mut expected = Vec::new();
        query::query(&path, &f, false, |_, _, h| -> Result<(), ()> {
            expected.push(h.seq);
            Ok(())
        })
        .unwrap()
        .unwrap();
        expected.reverse();
        for limit in [1, 4, 100] {
            let mut got = Vec::new();
            let mut before = None;
            loop {
                let page = newest::newest_first(&path, &f, before, limit, u64::MAX).unwrap();
                assert!(page.records.len() <= limit);
                got.extend(page.records.iter().map(|r| r.head.seq));
                match page.next {
                    Some(c) => before = Some(c),
                    None => break,
                }
            }
            assert_eq!(got, expected, "filter {f:?}, page size {limit}");
        }
    }
    // The policy filter is not vacuous: alice's invitations name that
    // policy, bob's (denied) do not.
    let owners = query::Filter {
        policy: Some("admin-administer-account".into()),
        ..Default::default()
    };
    let page = newest::newest_first(&path, &owners, None, 100, u64::MAX).unwrap();
    assert!(!page.records.is_empty());
    assert!(page
        .records
        .iter()
        .all(|r| r.head.principal.as_deref() == Some("User::\"alice\"")));
}
