//! `audit verify` over the database ([`verify_db`]): every shipped log's
//! records read back in seq order, over one snapshot, and checked by the
//! audit crate's own [`verify_lines_from`] (the same hashing, the same
//! classification of the first break); then the end of each chain compared
//! with the head its shipper recorded, so a deleted last record is found
//! too. A record's location is `audit_records[LOG_ID]:SEQ`.
//!
//! The retentions (`audit_retentions`, [`super::retention`]) are checked
//! first, as a chain of their own from the genesis; a log whose chain
//! starts after seq 1 is intact only if an unbroken retention record states
//! that start (its last one for the log). A row is read as text: one whose
//! content is not a record is a finding, never a failure of the check.
//!
//! Knows nothing of log files; computes no hash itself.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use partnergate_audit::chain::{verify_lines, verify_lines_from, Line, Lines, Location};
use partnergate_audit::record::RetentionInfo;
use partnergate_audit::{AuditError, ChainStart, VerifyReport};
use postgres::Transaction;
use serde::Serialize;

use super::ship::ShipError;
use crate::store::postgres::{begin_snapshot, PgStore};

/// Records read per page.
const PAGE: i64 = 1000;

/// One shipped log, checked.
#[derive(Debug, Clone, Serialize)]
pub struct LogVerified {
    /// The log's id (`PATH.id` of its file).
    pub log_id: String,
    /// The replica that last shipped it, if known.
    pub replica: Option<String>,
    /// How far its shipper recorded it shipped.
    pub head_seq: u64,
    /// The chain check over its rows.
    pub report: VerifyReport,
    /// The chain ends before, or not at, the head its shipper recorded:
    /// its last records were deleted or changed.
    pub tail_problem: Option<String>,
    /// Where a retention cut the log: its chain may start there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained: Option<Retained>,
}

/// A log's start stated by a retention record.
#[derive(Debug, Clone, Serialize)]
pub struct Retained {
    /// The seq of the retention record (`audit_retentions`).
    pub retention_seq: u64,
    /// The first record kept.
    pub kept_from: ChainStart,
}

/// Everything `verify --pg` checked.
#[derive(Debug, Clone, Serialize)]
pub struct DbVerified {
    /// The chain of the retention records.
    pub retentions: VerifyReport,
    /// Every shipped log.
    pub logs: Vec<LogVerified>,
}

impl DbVerified {
    /// Every chain unbroken and ending where it was shipped.
    pub fn intact(&self) -> bool {
        self.retentions.intact() && self.logs.iter().all(LogVerified::intact)
    }

    /// The first problem found, for a one-line status.
    pub fn first_problem(&self) -> Option<String> {
        if let Some(p) = &self.retentions.problem {
            return Some(format!("retentions: {p}"));
        }
        self.logs.iter().find_map(|l| {
            let p = l.report.problem.as_ref().map(ToString::to_string);
            p.or_else(|| l.tail_problem.clone())
                .map(|p| format!("log {}: {p}", l.log_id))
        })
    }
}

impl LogVerified {
    /// Unbroken, ending where its shipper recorded.
    pub fn intact(&self) -> bool {
        self.report.intact() && self.tail_problem.is_none()
    }
}

/// The location of a shipped record (of a retention record: no log).
fn location(log_id: Option<&str>, seq: u64) -> Location {
    Location {
        file: PathBuf::from(match log_id {
            Some(id) => format!("audit_records[{id}]"),
            None => "audit_retentions".to_string(),
        }),
        line: seq,
    }
}

/// One log's rows in seq order (copies of one seq together), a page at a
/// time; a database error ends the lines and is kept in `error`. With no
/// `log_id`, the retention records.
struct Rows<'t, 'c> {
    tx: &'t mut Transaction<'c>,
    log_id: Option<String>,
    last: i64,
    page: VecDeque<Line>,
    error: Option<postgres::Error>,
}

impl<'t, 'c> Rows<'t, 'c> {
    fn of(tx: &'t mut Transaction<'c>, log_id: Option<String>) -> Self {
        Rows {
            tx,
            log_id,
            // Rows of any seq are read, a forged 0 or negative one too.
            last: i64::MIN,
            page: VecDeque::new(),
            error: None,
        }
    }

    fn fill(&mut self) -> Result<(), postgres::Error> {
        let (select, next, name) = match &self.log_id {
            Some(id) => (
                "SELECT seq, record FROM audit_records
                 WHERE log_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq, ts",
                "SELECT min(seq) FROM audit_records WHERE log_id = $1 AND seq > $2",
                id.clone(),
            ),
            None => (
                "SELECT seq, record FROM audit_retentions
                 WHERE $1::text IS NOT NULL AND seq > $2 AND seq <= $3 ORDER BY seq",
                "SELECT min(seq) FROM audit_retentions WHERE $1::text IS NOT NULL AND seq > $2",
                String::new(),
            ),
        };
        loop {
            let rows = self.tx.query(
                select,
                &[&name, &self.last, &self.last.saturating_add(PAGE)],
            )?;
            if !rows.is_empty() {
                self.last = self.last.saturating_add(PAGE);
                for r in rows {
                    let seq: i64 = r.get(0);
                    self.page.push_back(Line {
                        location: location(self.log_id.as_deref(), seq.max(0) as u64),
                        text: r.get(1),
                        terminated: true,
                    });
                }
                return Ok(());
            }
            // A range with no row: jump to the next row, if any.
            let next: Option<i64> = self.tx.query_one(next, &[&name, &self.last])?.get(0);
            match next {
                Some(n) => self.last = n.saturating_sub(1),
                None => return Ok(()),
            }
        }
    }
}

impl Lines for Rows<'_, '_> {
    fn next_line(&mut self) -> Result<Option<Line>, AuditError> {
        if self.page.is_empty() && self.error.is_none() {
            if let Err(e) = self.fill() {
                self.error = Some(e);
            }
        }
        Ok(self.page.pop_front())
    }
}

/// Check the retentions' chain, then every shipped log's chain (over one
/// snapshot of the database). None when `stop` was set first.
pub fn verify_db(store: &PgStore, stop: &AtomicBool) -> Result<Option<DbVerified>, ShipError> {
    let mut audit_error = None;
    let out = store.with_client(|c| {
        let mut tx = begin_snapshot(c)?;
        let (retentions, starts) = {
            let mut rows = Rows::of(&mut tx, None);
            let mut starts = Starts::default();
            let checked = verify_lines(Vec::new(), &mut starts.reading(&mut rows), stop);
            let Some(report) = kept(checked, &mut audit_error) else {
                return Ok(None);
            };
            if let Some(e) = rows.error.take() {
                return Err(e);
            }
            // Only what the intact part of the chain states.
            starts.keep_until(report.problem.as_ref().and_then(|p| p.seq));
            (report, starts)
        };
        let logs = tx.query(
            "SELECT ids.log_id, l.replica, COALESCE(l.head_seq, 0), l.head_hash
             FROM (SELECT log_id FROM audit_logs UNION SELECT DISTINCT log_id FROM audit_records) ids
             LEFT JOIN audit_logs l ON l.log_id = ids.log_id ORDER BY ids.log_id",
            &[],
        )?;
        let mut out = Vec::with_capacity(logs.len());
        for l in logs {
            let log_id: String = l.get(0);
            let head_seq = l.get::<_, i64>(2).max(0) as u64;
            let head_hash: Option<String> = l.get(3);
            let retained = starts.of(&log_id);
            let mut rows = Rows::of(&mut tx, Some(log_id.clone()));
            let stated = retained.as_ref().map(|r| &r.kept_from);
            let checked = verify_lines_from(Vec::new(), &mut rows, stop, stated);
            let Some(report) = kept(checked, &mut audit_error) else {
                return Ok(None);
            };
            if let Some(e) = rows.error.take() {
                return Err(e);
            }
            let tail_problem =
                tail_problem(&report, head_seq, head_hash.as_deref(), retained.as_ref());
            out.push(LogVerified {
                log_id,
                replica: l.get(1),
                head_seq,
                report,
                tail_problem,
                retained,
            });
        }
        Ok(Some(DbVerified {
            retentions,
            logs: out,
        }))
    })?;
    match audit_error {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// A chain check's report; None when it was stopped or failed (the
/// failure kept in `error`).
fn kept(
    checked: Result<Option<VerifyReport>, AuditError>,
    error: &mut Option<AuditError>,
) -> Option<VerifyReport> {
    checked.unwrap_or_else(|e| {
        *error = Some(e);
        None
    })
}

/// The starts the retention records state, by log (the last one of each
/// log wins), collected as the retentions' chain is read.
#[derive(Default)]
struct Starts {
    by_log: HashMap<String, Retained>,
    /// Every start read, with the seq of its record, in chain order.
    read: Vec<(u64, String, Retained)>,
}

impl Starts {
    fn reading<'a, 'r>(&'a mut self, rows: &'a mut (dyn Lines + 'r)) -> Reading<'a, 'r> {
        Reading { starts: self, rows }
    }

    /// Keep the starts of the records before `broken` (the seq of the
    /// first break, if any).
    fn keep_until(&mut self, broken: Option<u64>) {
        for (seq, log, r) in self.read.drain(..) {
            if broken.is_none_or(|b| seq < b) {
                self.by_log.insert(log, r);
            }
        }
    }

    fn of(&self, log_id: &str) -> Option<Retained> {
        self.by_log.get(log_id).cloned()
    }
}

/// The retention rows passed on to the chain check, each one's stated
/// start noted (a row that does not state one is left to the check).
struct Reading<'a, 'r> {
    starts: &'a mut Starts,
    rows: &'a mut (dyn Lines + 'r),
}

impl Lines for Reading<'_, '_> {
    fn next_line(&mut self) -> Result<Option<Line>, AuditError> {
        let line = self.rows.next_line()?;
        if let Some(l) = &line {
            #[derive(serde::Deserialize)]
            struct Stated {
                seq: u64,
                log_id: String,
                retention: RetentionInfo,
            }
            if let Ok(s) = serde_json::from_str::<Stated>(&l.text) {
                self.starts.read.push((
                    s.seq,
                    s.log_id,
                    Retained {
                        retention_seq: s.seq,
                        kept_from: s.retention.kept_from,
                    },
                ));
            }
        }
        Ok(line)
    }
}

/// Where an unbroken chain does not end at the recorded head.
fn tail_problem(
    report: &VerifyReport,
    head_seq: u64,
    head_hash: Option<&str>,
    retained: Option<&Retained>,
) -> Option<String> {
    if !report.intact() {
        return None;
    }
    // No row left after a retention: the chain ends where it was cut.
    let cut = retained.filter(|_| report.last_seq.is_none()).map(|r| {
        (
            r.kept_from.seq.saturating_sub(1),
            r.kept_from.prev_hash.clone(),
        )
    });
    let last_hash = match &cut {
        Some((_, h)) => Some(h.clone()),
        None => report.last_hash.clone(),
    };
    let last = cut.as_ref().map_or(report.last_seq.unwrap_or(0), |c| c.0);
    if last < head_seq {
        return Some(format!(
            "the rows end at seq {last}, but seq {}..={head_seq} were shipped: the last record(s) are missing",
            last + 1
        ));
    }
    if last > head_seq {
        return Some(format!(
            "the rows go on to seq {last}, but only seq ..={head_seq} were shipped: records were added by other means"
        ));
    }
    match (last_hash.as_deref(), head_hash) {
        (Some(have), Some(want)) if last == head_seq && have != want => Some(format!(
            "the record at seq {last} is not the one shipped (hash {have}, shipped {want})"
        )),
        _ => None,
    }
}
