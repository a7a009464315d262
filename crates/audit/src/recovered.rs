//! What the log side of change recovery needs: the identity of a log file
//! (`PATH.id`, beside it), the stored form of a change record (its body, kept
//! by a write's transaction until the log holds the record), and which
//! change records the newest part of a log holds (by `change_id`, read
//! newest first and stopping at a time bound).
//!
//! A change record is queued for the writer after its write commits, so a
//! process killed in between loses it; the store keeps the body in the
//! write's own transaction, and the next start writes the missing ones
//! (`"recovered": true`) through the normal writer, so the chain stays whole.
//! This module must never know the stores, the directory or the writer's
//! queue; the recovery itself is wired by the core runtime.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::newest::{newest_first, Cursor};
use super::query::Filter;
use super::record::{ChangeEvent, Kind};
use crate::error::AuditError;

/// Most records read per page of the newest-first scan.
const PAGE: usize = 512;
/// Most bytes read per page of the newest-first scan.
const PAGE_BYTES: u64 = 64 * 1024 * 1024;

/// The file naming a log: `PATH.id` beside `PATH`.
pub fn id_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".id");
    PathBuf::from(p)
}

/// The id of the log at `log`, read from `PATH.id`, created there (a fresh
/// UUIDv7, written and fsynced) when the file does not exist yet. It names
/// the log the store's kept change records belong to: the replica label
/// changes with every process, the id stays with the file.
pub fn log_id(log: &Path) -> Result<String, AuditError> {
    let path = id_path(log);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            let valid = !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if valid {
                Ok(id.to_string())
            } else {
                Err(AuditError::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "not a log id (1 to 64 ASCII letters, digits or '-')",
                    ),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = super::record::new_decision_id();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| AuditError::io(&path, e))?;
            f.write_all(format!("{id}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| AuditError::io(&path, e))?;
            Ok(id)
        }
        Err(e) => Err(AuditError::io(&path, e)),
    }
}

/// A change record as the store keeps it.
#[derive(Serialize, Deserialize)]
struct Body {
    decision_id: Option<String>,
    request_id: Option<String>,
    actor: String,
    operation: String,
    before: Value,
    after: Value,
}

/// The stored body of a change record (JSON; its `change_id` is kept beside it).
pub fn body(event: &ChangeEvent) -> String {
    let b = Body {
        decision_id: event.decision_id.clone(),
        request_id: event.request_id.clone(),
        actor: event.actor.clone(),
        operation: event.operation.clone(),
        before: event.before.clone(),
        after: event.after.clone(),
    };
    serde_json::to_string(&b).unwrap_or_default()
}

/// The change record a stored body describes, with `change_id`, marked
/// recovered; an error naming what is wrong with the body.
pub fn recovered_event(change_id: &str, body: &str) -> Result<ChangeEvent, String> {
    let b: Body =
        serde_json::from_str(body).map_err(|e| format!("kept change record {change_id}: {e}"))?;
    let mut event = ChangeEvent::new(b.actor, b.operation, b.before, b.after)
        .decided_by(b.decision_id)
        .request(b.request_id)
        .change(Some(change_id.to_string()));
    event.recovered = true;
    Ok(event)
}

/// What [`logged_change_ids`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The wanted change ids the log holds.
    pub found: HashSet<String>,
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
}

#[derive(Deserialize)]
struct ChangeId {
    #[serde(default)]
    change_id: Option<String>,
}

/// Which of `wanted` the log at `log` holds as change records, read newest
/// first (every file of the chain) until all are found or a record older
/// than `since` is reached: a change record is written after its write
/// kept it, so none is older than the oldest kept one (`since` allows for
/// the clock stepping back). A log that does not exist holds none.
pub fn logged_change_ids(
    log: &Path,
    wanted: &HashSet<String>,
    since: OffsetDateTime,
) -> Result<Scan, AuditError> {
    let mut scan = Scan::default();
    if wanted.is_empty() {
        return Ok(scan);
    }
    let rfc = time::format_description::well_known::Rfc3339;
    let filter = Filter::default();
    let mut before: Option<Cursor> = None;
    loop {
        let page = newest_first(log, &filter, before, PAGE, PAGE_BYTES)?;
        scan.records += page.scanned_records;
        scan.bytes += page.scanned_bytes;
        for r in &page.records {
            if OffsetDateTime::parse(&r.head.ts, &rfc).is_ok_and(|ts| ts < since) {
                return Ok(scan);
            }
            if r.head.kind != Some(Kind::Change) || !r.text.contains("\"change_id\"") {
                continue;
            }
            let id = serde_json::from_str::<ChangeId>(&r.text)
                .ok()
                .and_then(|c| c.change_id);
            if let Some(id) = id.filter(|id| wanted.contains(id)) {
                scan.found.insert(id);
                if scan.found.len() == wanted.len() {
                    return Ok(scan);
                }
            }
        }
        match page.next {
            Some(next) => before = Some(next),
            None => return Ok(scan),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{AuditConfig, AuditLog};

    #[test]
    fn a_log_keeps_its_id_and_a_bad_id_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("decisions.jsonl");
        let id = log_id(&log).unwrap();
        assert_eq!(log_id(&log).unwrap(), id);
        std::fs::write(id_path(&log), "not an id!\n").unwrap();
        let e = log_id(&log).unwrap_err().to_string();
        assert!(
            e.contains("decisions.jsonl.id") && e.contains("not a log id"),
            "{e}"
        );
    }

    #[test]
    fn a_body_gives_back_its_change_marked_recovered() {
        let ev = ChangeEvent::new(
            "User::\"owner\"",
            "user.invite",
            Value::Null,
            serde_json::json!({"a": 1}),
        )
        .decided_by(Some("d1".into()))
        .request(Some("r1".into()));
        let back = recovered_event("c1", &body(&ev)).unwrap();
        assert_eq!(back.change_id.as_deref(), Some("c1"));
        assert!(back.recovered);
        assert_eq!(
            (back.decision_id, back.request_id),
            (Some("d1".into()), Some("r1".into()))
        );
        assert_eq!(
            (back.actor, back.operation, back.after),
            (ev.actor, ev.operation, ev.after)
        );
        assert!(recovered_event("c2", "{").unwrap_err().contains("c2"));
    }

    /// The scan finds the wanted ids among other records, newest first, and
    /// reports none for a log that holds none (or does not exist).
    #[test]
    fn the_scan_finds_logged_change_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let since = OffsetDateTime::now_utc() - time::Duration::minutes(1);
        let wanted: HashSet<String> = ["c2", "c9"].iter().map(|s| s.to_string()).collect();
        assert!(logged_change_ids(&path, &wanted, since)
            .unwrap()
            .found
            .is_empty());
        let (log, _) = AuditLog::open(AuditConfig::file(&path)).unwrap();
        for i in 0..5 {
            log.log(
                ChangeEvent::new("a", "o", Value::Null, Value::Null).change(Some(format!("c{i}"))),
            );
            log.log(ChangeEvent::new("a", "o", Value::Null, Value::Null));
        }
        log.shutdown();
        let scan = logged_change_ids(&path, &wanted, since).unwrap();
        assert_eq!(scan.found, ["c2".to_string()].into_iter().collect());
        let later = OffsetDateTime::now_utc() + time::Duration::minutes(1);
        assert!(logged_change_ids(&path, &wanted, later)
            .unwrap()
            .found
            .is_empty());
    }
}
