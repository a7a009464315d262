//! Change records that survive a crash. A write's change records are queued
//! for the decision log's writer after the write commits, so a process
//! killed in between would lose the records of writes it had acknowledged.
//! Here each record gets a `change_id` and, when the log is a file that can
//! be read back, its body is kept in the write's own store transaction
//! ([`KeptChange`], table `change_outbox`); a thread forgets kept records
//! once the log has them durably ([`ChangeRecorder`]), and a start writes
//! the kept records its log lacks, marked `recovered`, through the normal
//! writer before serving ([`recover`]).
//!
//! Owns [`ChangeRecorder`], [`Prepared`] and [`recover`]. It must never know
//! the partner rules, HTTP, or the writer's queue (it uses the log's public
//! handle only); the decision path does not pass through it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::recovered::{body, logged_change_ids, recovered_event};
use crate::audit::{AuditError, AuditLog, ChangeEvent};
use crate::store::{EntityBackend, KeptChange, StoreError};

/// How long the forgetting thread gathers change ids before it waits for
/// the log to hold them and forgets them in one statement.
pub const FORGET_EVERY: Duration = Duration::from_secs(1);

/// How far before the oldest kept record a start reads the log for it: a
/// record is written after its write kept it, so only a clock stepping
/// back puts it earlier.
pub const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// How long a start waits for the recovered records to be durable.
const RECOVER_DURABLE: Duration = Duration::from_secs(30);

/// The change records of one write, ready for its transaction: each with a
/// fresh `change_id`; [`Prepared::kept`] is what the transaction keeps.
#[derive(Debug, Default)]
pub struct Prepared {
    events: Vec<ChangeEvent>,
    kept: Vec<KeptChange>,
}

impl Prepared {
    /// The records the write's transaction keeps (empty when the log
    /// cannot be read back, or there is no log).
    pub fn kept(&self) -> &[KeptChange] {
        &self.kept
    }

    /// Each record's `change_id`, in the order the records were given
    /// (`None` without a log: nothing names the record then).
    pub fn change_ids(&self) -> impl Iterator<Item = Option<&str>> {
        self.events.iter().map(|e| e.change_id.as_deref())
    }
}

/// Gives change records their ids, keeps them with their writes (when the
/// log is a file with an id) and logs them after the commit.
pub struct ChangeRecorder {
    log: AuditLog,
    log_id: Option<String>,
    forget: Option<mpsc::Sender<(String, u64)>>,
}

impl std::fmt::Debug for ChangeRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeRecorder")
            .field("log_id", &self.log_id)
            .finish_non_exhaustive()
    }
}

impl ChangeRecorder {
    /// Records logged with ids, kept nowhere (a log that cannot be read
    /// back, such as standard output).
    pub fn unkept(log: AuditLog) -> Self {
        ChangeRecorder {
            log,
            log_id: None,
            forget: None,
        }
    }

    /// Records kept with their writes in `backend` for the log `log_id`,
    /// and forgotten by a thread of their own once the log holds them.
    pub fn kept(
        log: AuditLog,
        log_id: String,
        backend: Arc<dyn EntityBackend>,
    ) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel();
        let forgetting = log.clone();
        std::thread::Builder::new()
            .name("partnergate-changes".into())
            .spawn(move || forget_loop(&rx, &forgetting, backend.as_ref()))?;
        Ok(ChangeRecorder {
            log,
            log_id: Some(log_id),
            forget: Some(tx),
        })
    }

    /// Give each record a fresh `change_id` and, when records are kept,
    /// the row its write's transaction keeps.
    pub fn prepare(&self, events: Vec<ChangeEvent>) -> Prepared {
        let at_ms = now_ms();
        let mut kept = Vec::new();
        let events: Vec<ChangeEvent> = events
            .into_iter()
            .map(|e| {
                let id = crate::audit::new_decision_id();
                if let Some(log_id) = &self.log_id {
                    kept.push(KeptChange {
                        change_id: id.clone(),
                        log_id: log_id.clone(),
                        body: body(&e),
                        at_ms,
                    });
                }
                e.change(Some(id))
            })
            .collect();
        Prepared { events, kept }
    }

    /// Log a committed write's records (the caller holds the lock its
    /// writes commit under, so the log's order is the commit order); the
    /// kept ones are forgotten once the log holds them.
    pub fn log(&self, prepared: Prepared) {
        let kept = !prepared.kept.is_empty();
        for e in prepared.events {
            let id = e.change_id.clone();
            let lost = self.log.lost();
            let queued = self.log.log(e);
            if let (true, true, Some(id), Some(forget)) = (queued, kept, id, &self.forget) {
                let _ = forget.send((id, lost));
            }
        }
    }
}

/// Milliseconds since the epoch on this process's clock (the clock the
/// log's `ts` is read from).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Gather the ids of logged records for [`FORGET_EVERY`], wait until the
/// log has written and synced everything queued before, and forget them,
/// unless the log lost records meanwhile (then they stay kept, and the next
/// start writes the ones missing). Ends when the recorder is dropped or the
/// log is shut down.
fn forget_loop(rx: &mpsc::Receiver<(String, u64)>, log: &AuditLog, backend: &dyn EntityBackend) {
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut lost_before = first.1;
        let mut ids = vec![first.0];
        let until = std::time::Instant::now() + FORGET_EVERY;
        let mut open = true;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((id, lost)) => {
                    lost_before = lost_before.min(lost);
                    ids.push(id);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !log.flush() {
            return;
        }
        if log.lost() != lost_before {
            tracing::warn!(
                records = ids.len(),
                "decision log lost records: their kept change records stay for the next start"
            );
        } else if let Err(e) = backend.forget_changes(&ids) {
            tracing::warn!(error = %e, records = ids.len(), "cannot forget kept change records; the next start checks them");
        }
        if !open {
            return;
        }
    }
}

/// What a start's recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records kept for the log.
    pub kept: usize,
    /// Of them, those the log already held.
    pub found: usize,
    /// Of them, those written now, marked `recovered`.
    pub written: usize,
    /// Of them, those whose kept body does not read (logged, left kept).
    pub unreadable: usize,
}

/// Why a start could not recover the kept change records.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store could not list or forget the kept records.
    #[error("kept change records: {0}")]
    Store(#[from] StoreError),
    /// The log could not be read back.
    #[error("kept change records: reading the decision log: {0}")]
    Audit(#[from] AuditError),
    /// A recovered record could not be made durable.
    #[error("kept change records: a recovered record is not durable: {0}")]
    NotDurable(String),
}

/// At a start, before serving: write every change record kept for the log
/// `log_id` (at `path`, open as `log`) that the log lacks, marked
/// `recovered`, wait until they are durable, and forget every kept record
/// the log now holds. Running it again writes nothing twice: the records
/// written are found the next time.
pub fn recover(
    log: &AuditLog,
    path: &Path,
    log_id: &str,
    backend: &dyn EntityBackend,
) -> Result<Recovery, RecoverError> {
    let kept = backend.kept_changes(log_id)?;
    let mut out = Recovery {
        kept: kept.len(),
        ..Recovery::default()
    };
    let Some(oldest) = kept.iter().map(|k| k.at_ms).min() else {
        return Ok(out);
    };
    let since = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(oldest) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        - CLOCK_SLACK;
    let wanted: HashSet<String> = kept.iter().map(|k| k.change_id.clone()).collect();
    let scan = logged_change_ids(path, &wanted, since)?;
    let mut tickets = Vec::new();
    let mut done = Vec::with_capacity(kept.len());
    for k in &kept {
        if scan.found.contains(&k.change_id) {
            out.found += 1;
            done.push(k.change_id.clone());
            continue;
        }
        match recovered_event(&k.change_id, &k.body) {
            Ok(event) => {
                tickets.push(log.log_durable(event));
                done.push(k.change_id.clone());
                out.written += 1;
            }
            Err(e) => {
                out.unreadable += 1;
                tracing::error!(error = %e, "a kept change record does not read; it stays kept");
            }
        }
    }
    for t in tickets {
        t.wait_blocking(RECOVER_DURABLE)
            .map_err(RecoverError::NotDurable)?;
    }
    backend.forget_changes(&done)?;
    if out.written > 0 {
        tracing::warn!(
            written = out.written,
            found = out.found,
            scanned_records = scan.records,
            "decision log: change records of committed writes were missing after a stop; written now, marked recovered"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditConfig;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{EntityRecord, WriteGuard};

    fn user(id: &str) -> EntityRecord {
        EntityRecord {
            uid: format!("User::\"{id}\""),
            entity_type: "User".into(),
            json: format!(r#"{{"uid":{{"type":"User","id":"{id}"}},"attrs":{{}},"parents":[]}}"#),
        }
    }

    fn changes_in(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["kind"] == "change")
            .collect()
    }

    /// Two writes keep their records; the first one's record reached the
    /// log, the second one's did not (the process stopped in between). A
    /// start writes only the second, marked recovered, and forgets both; a
    /// second start writes nothing.
    #[test]
    fn a_start_writes_the_kept_records_the_log_lacks_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EntityBackend> = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
        let path = dir.path().join("decisions.jsonl");
        let log_id = crate::audit::recovered::log_id(&path).unwrap();
        {
            let (log, _) = AuditLog::open(AuditConfig::file(&path)).unwrap();
            let recorder =
                ChangeRecorder::kept(log.clone(), log_id.clone(), store.clone()).unwrap();
            let mut logged = None;
            for (i, id) in ["a", "b"].into_iter().enumerate() {
                let ev = ChangeEvent::new(
                    "api-token",
                    "entities.upsert",
                    serde_json::Value::Null,
                    serde_json::json!({"id": id}),
                )
                .request(Some(format!("r-{id}")));
                let prepared = recorder.prepare(vec![ev]);
                assert_eq!(prepared.kept().len(), 1);
                let guard = WriteGuard {
                    changes: prepared.kept(),
                    ..WriteGuard::default()
                };
                store.upsert_guarded(&[user(id)], &guard).unwrap();
                if i == 0 {
                    logged = Some(prepared.kept()[0].change_id.clone());
                    // Logged, but not forgotten yet (as after a kill).
                    log.log(prepared.events.into_iter().next().unwrap());
                }
            }
            log.shutdown();
            assert!(logged.is_some());
        }
        assert_eq!(
            store.kept_changes(&log_id).unwrap().len(),
            2,
            "both still kept"
        );
        let (log, _) = AuditLog::open(AuditConfig::file(&path)).unwrap();
        let done = recover(&log, &path, &log_id, store.as_ref()).unwrap();
        assert_eq!((done.kept, done.found, done.written), (2, 1, 1), "{done:?}");
        assert!(store.kept_changes(&log_id).unwrap().is_empty());
        let again = recover(&log, &path, &log_id, store.as_ref()).unwrap();
        assert_eq!(again, Recovery::default());
        log.shutdown();
        let changes = changes_in(&path);
        assert_eq!(changes.len(), 2, "{changes:#?}");
        assert_eq!(changes[0]["request_id"], "r-a");
        assert!(changes[0].get("recovered").is_none());
        assert_eq!(changes[1]["request_id"], "r-b");
        assert_eq!(changes[1]["recovered"], true);
        assert!(changes[1]["change_id"].is_string());
        assert_ne!(changes[0]["change_id"], changes[1]["change_id"]);
        let report = crate::audit::verify(&path).unwrap();
        assert!(report.ok(), "{report:?}");
    }

    /// Kept records of another log are not this log's to write.
    #[test]
    fn a_start_leaves_the_records_of_another_log() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EntityBackend> = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
        let kept = KeptChange {
            change_id: "c1".into(),
            log_id: "other".into(),
            body: body(&ChangeEvent::new(
                "a",
                "o",
                serde_json::Value::Null,
                serde_json::Value::Null,
            )),
            at_ms: now_ms(),
        };
        let guard = WriteGuard {
            changes: std::slice::from_ref(&kept),
            ..WriteGuard::default()
        };
        store.upsert_guarded(&[user("a")], &guard).unwrap();
        let path = dir.path().join("decisions.jsonl");
        let (log, _) = AuditLog::open(AuditConfig::file(&path)).unwrap();
        let done = recover(&log, &path, "mine", store.as_ref()).unwrap();
        assert_eq!(done, Recovery::default());
        assert_eq!(store.kept_changes("other").unwrap(), vec![kept]);
        log.shutdown();
    }
}
