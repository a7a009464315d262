//! `audit verify` over the database ([`verify_db`]): every shipped log's
//! records read back in seq order, over one snapshot, and checked by the
//! audit crate's own [`verify_lines`] (the same hashing, the same
//! classification of the first break); then the end of each chain compared
//! with the head its shipper recorded, so a deleted last record is found
//! too. A record's location is `audit_records[LOG_ID]:SEQ`.
//!
//! Knows nothing of log files; computes no hash itself.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use partnergate_audit::chain::{verify_lines, Line, Lines, Location};
use partnergate_audit::{AuditError, VerifyReport};
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
}

impl LogVerified {
    /// Unbroken, ending where its shipper recorded.
    pub fn intact(&self) -> bool {
        self.report.intact() && self.tail_problem.is_none()
    }
}

/// The location of a shipped record.
fn location(log_id: &str, seq: u64) -> Location {
    Location {
        file: PathBuf::from(format!("audit_records[{log_id}]")),
        line: seq,
    }
}

/// One log's rows in seq order (copies of one seq together), a page at a
/// time; a database error ends the lines and is kept in `error`.
struct Rows<'t, 'c> {
    tx: &'t mut Transaction<'c>,
    log_id: String,
    last: i64,
    page: VecDeque<Line>,
    error: Option<postgres::Error>,
}

impl Rows<'_, '_> {
    fn fill(&mut self) -> Result<(), postgres::Error> {
        loop {
            let rows = self.tx.query(
                "SELECT seq, record FROM audit_records
                 WHERE log_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq, ts",
                &[&self.log_id, &self.last, &(self.last + PAGE)],
            )?;
            if !rows.is_empty() {
                self.last += PAGE;
                for r in rows {
                    let seq: i64 = r.get(0);
                    self.page.push_back(Line {
                        location: location(&self.log_id, seq.max(0) as u64),
                        text: r.get(1),
                        terminated: true,
                    });
                }
                return Ok(());
            }
            // A range with no row: jump to the next row, if any.
            let next: Option<i64> = self
                .tx
                .query_one(
                    "SELECT min(seq) FROM audit_records WHERE log_id = $1 AND seq > $2",
                    &[&self.log_id, &self.last],
                )?
                .get(0);
            match next {
                Some(n) => self.last = n - 1,
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

/// Check every shipped log's chain (over one snapshot of the database).
pub fn verify_db(store: &PgStore, stop: &AtomicBool) -> Result<Vec<LogVerified>, ShipError> {
    let mut audit_error = None;
    let out = store.with_client(|c| {
        let mut tx = begin_snapshot(c)?;
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
            let mut rows = Rows {
                tx: &mut tx,
                log_id: log_id.clone(),
                last: 0,
                page: VecDeque::new(),
                error: None,
            };
            let report = match verify_lines(Vec::new(), &mut rows, stop) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(out),
                Err(e) => {
                    audit_error = Some(e);
                    return Ok(out);
                }
            };
            if let Some(e) = rows.error.take() {
                return Err(e);
            }
            let tail_problem = tail_problem(&report, head_seq, head_hash.as_deref());
            out.push(LogVerified {
                log_id,
                replica: l.get(1),
                head_seq,
                report,
                tail_problem,
            });
        }
        Ok(out)
    })?;
    match audit_error {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// Where an unbroken chain does not end at the recorded head.
fn tail_problem(report: &VerifyReport, head_seq: u64, head_hash: Option<&str>) -> Option<String> {
    if !report.intact() {
        return None;
    }
    let last = report.last_seq.unwrap_or(0);
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
    match (report.last_hash.as_deref(), head_hash) {
        (Some(have), Some(want)) if last == head_seq && have != want => Some(format!(
            "the record at seq {last} is not the one shipped (hash {have}, shipped {want})"
        )),
        _ => None,
    }
}
