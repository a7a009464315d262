//! `audit query` over the database ([`query_db`]): the shipped records of
//! every log, oldest first (by `ts`, then log and seq), through the file
//! query's own [`Filter`]; its time bounds and kind also narrow the rows
//! read (and so the day partitions scanned). Streams over one snapshot.
//!
//! Knows nothing of log files.

use std::path::PathBuf;

use partnergate_audit::chain::Location;
use partnergate_audit::query::{Filter, Head};
use partnergate_audit::AuditError;

use super::ship::ShipError;
use crate::store::postgres::{begin_snapshot, PgStore};

/// Rows fetched per round trip.
const FETCH: i32 = 1000;

/// Counts of a query over the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbQueryStats {
    /// Records read (after the time and kind narrowing).
    pub scanned: u64,
    /// Records the filter selected.
    pub matched: u64,
}

fn rfc3339(t: time::OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Stream every shipped record through `filter`, calling `on_match` with
/// the record's location (`audit_records[LOG_ID]:SEQ`), its line as
/// written and its head.
pub fn query_db<E>(
    store: &PgStore,
    filter: &Filter,
    mut on_match: impl FnMut(&Location, &str, &Head) -> Result<(), E>,
) -> Result<Result<DbQueryStats, E>, ShipError> {
    let since = filter.since.and_then(rfc3339);
    let until = filter.until.and_then(rfc3339);
    let kind = filter
        .kind
        .and_then(|k| serde_json::to_value(k).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    let mut stopped: Option<E> = None;
    let mut malformed: Option<AuditError> = None;
    let mut stats = DbQueryStats::default();
    store.with_client(|c| {
        let mut tx = begin_snapshot(c)?;
        let portal = tx.bind(
            "SELECT log_id, seq, record FROM audit_records
             WHERE ($1::text IS NULL OR ts >= $1::text::timestamptz)
               AND ($2::text IS NULL OR ts < $2::text::timestamptz)
               AND ($3::text IS NULL OR kind = $3::text)
             ORDER BY ts, log_id, seq",
            &[&since, &until, &kind],
        )?;
        loop {
            let rows = tx.query_portal(&portal, FETCH)?;
            if rows.is_empty() {
                return Ok(());
            }
            for r in rows {
                let log_id: &str = r.get(0);
                let seq: i64 = r.get(1);
                let text: &str = r.get(2);
                let location = Location {
                    file: PathBuf::from(format!("audit_records[{log_id}]")),
                    line: seq.max(0) as u64,
                };
                let head: Head = match serde_json::from_str(text) {
                    Ok(h) => h,
                    Err(e) => {
                        malformed = Some(AuditError::Malformed {
                            location,
                            message: format!("not a decision log record: {e}"),
                        });
                        return Ok(());
                    }
                };
                stats.scanned += 1;
                if filter.matches(&head) {
                    stats.matched += 1;
                    if let Err(e) = on_match(&location, text, &head) {
                        stopped = Some(e);
                        return Ok(());
                    }
                }
            }
        }
    })?;
    if let Some(e) = malformed {
        return Err(e.into());
    }
    Ok(match stopped {
        Some(e) => Err(e),
        None => Ok(stats),
    })
}
