//! The writer under a byte bound that refuses, and a stop between a
//! retention record and its deletions.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::chain::{self, rotated_path};
use crate::record::Event;

fn big_event(kib: usize) -> Event {
    let d = partnergate_policy::engine::Decision {
        decision: partnergate_policy::engine::Effect::Deny,
        reasons: Vec::new(),
        errors: Vec::new(),
        policy_version: "v".into(),
    };
    crate::record::DecisionEvent::new(
        "User::\"a\"",
        "Action::\"b\"",
        "User::\"c\"",
        crate::record::EntitySlice::new(serde_json::json!([])),
        d,
    )
    .with_context(Some(serde_json::json!({ "pad": "x".repeat(kib * 1024) })))
    .into()
}

#[test]
fn past_the_byte_bound_drop_refuses_and_log_durable_fails_its_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = AuditConfig::file(dir.path().join("d.jsonl"));
    c.on_full = OnFull::Drop;
    c.queue_bytes = 1;
    c.linger = Duration::from_secs(5);
    let (log, _) = AuditLog::open(c).unwrap();
    // The writer lingers: the first fills the queue, the next is refused.
    let mut refused = 0;
    let mut tickets = Vec::new();
    for _ in 0..20 {
        let t = log.log_durable(big_event(64));
        if let Some(Err(e)) = t.peek() {
            assert!(e.contains("queue is full"), "{e}");
            refused += 1;
        }
        tickets.push(t);
    }
    assert!(refused > 0, "no record was refused past a 1-byte bound");
    assert_eq!(log.dropped(), refused);
    log.shutdown();
    let report = crate::chain::verify(&dir.path().join("d.jsonl")).unwrap();
    assert!(report.intact(), "{:?}", report.problem);
    assert_eq!(report.records_not_logged, refused);
}

#[test]
fn a_stop_between_the_retention_record_and_the_deletions_leaves_a_chain_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let mut c = AuditConfig::file(&path);
    c.max_file_bytes = Some(20_000);
    c.max_files = None;
    let (log, _) = AuditLog::open(c.clone()).unwrap();
    for _ in 0..30 {
        log.log(big_event(4));
    }
    log.shutdown();
    drop(log);
    let before = chain::rotated_numbers(&path).unwrap();
    assert!(before.len() > 3, "{before:?}");
    let saved: Vec<(PathBuf, Vec<u8>)> = before
        .iter()
        .map(|&n| rotated_path(&path, n))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    // Open with a rule keeping 2: the record is written, then the rest go.
    c.max_files = Some(2);
    let (log, _) = AuditLog::open(c.clone()).unwrap();
    log.shutdown();
    drop(log);
    assert_eq!(chain::rotated_numbers(&path).unwrap(), vec![1, 2]);
    let report = crate::chain::verify(&path).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.retentions.len(), 1);
    assert!(report.start_stated_by.is_some());
    // The state a crash after the record's fsync and before the
    // deletions leaves: the record and every file.
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    let report = crate::chain::verify(&path).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.first_seq, Some(1));
    // The next open finishes the deletion with a new record.
    let (log, _) = AuditLog::open(c).unwrap();
    log.shutdown();
    drop(log);
    assert_eq!(chain::rotated_numbers(&path).unwrap(), vec![1, 2]);
    let report = crate::chain::verify(&path).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    // One file more deleted by hand: a break.
    std::fs::remove_file(rotated_path(&path, 2)).unwrap();
    let report = crate::chain::verify(&path).unwrap();
    let problem = report.problem.expect("a deleted file is a break");
    assert_eq!(problem.kind, chain::BreakKind::Missing);
}
