//! `audit query` over the database ([`query_db`]): the shipped records of
//! every log, oldest first (by `ts`, then log and seq), through the file
//! query's own [`Filter`]; its time bounds and kind also narrow the rows
//! read (and so the day partitions scanned). Streams over one snapshot.
//! With entities, a decision that names its slice by `entities_hash` gets
//! it back from an earlier record of the same log that carried it (a slice
//! is named by the hash of its content; at most [`MAX_SLICES`] are kept).
//!
//! Knows nothing of log files.

use std::collections::HashMap;
use std::path::PathBuf;

use partnergate_audit::chain::Location;
use partnergate_audit::query::{carried_slice, with_slice, Filter, Head};
use partnergate_audit::record::Kind;
use partnergate_audit::AuditError;
use serde_json::value::RawValue;

use super::ship::ShipError;
use crate::store::postgres::{begin_snapshot, PgStore};

/// Rows fetched per round trip.
const FETCH: i32 = 1000;
/// Most slices kept for `with_entities` (a decision whose slice was not
/// kept is printed without `entities` and counted as unresolved).
pub const MAX_SLICES: usize = 65_536;

/// Counts of a query over the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbQueryStats {
    /// Records read (after the time and kind narrowing).
    pub scanned: u64,
    /// Records the filter selected.
    pub matched: u64,
    /// Selected decisions whose slice was not found, with `with_entities`.
    pub unresolved: u64,
}

/// The slices carried inline by the records read so far, by log and hash.
#[derive(Default)]
struct Slices(HashMap<(String, String), Box<RawValue>>);

impl Slices {
    fn see(&mut self, log_id: &str, line: &str) {
        if self.0.len() < MAX_SLICES {
            if let Some((h, raw)) = carried_slice(line) {
                self.0.entry((log_id.to_string(), h)).or_insert(raw);
            }
        }
    }

    fn resolve(&self, log_id: &str, line: &str, head: &Head) -> Option<String> {
        let key = (log_id.to_string(), head.entities_hash.clone()?);
        with_slice(line, self.0.get(&key)?)
    }
}

fn rfc3339(t: time::OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Stream every shipped record through `filter`, calling `on_match` with
/// the record's location (`audit_records[LOG_ID]:SEQ`), its line as
/// written and its head (with `with_entities`, a decision with its
/// `entities` put back).
pub fn query_db<E>(
    store: &PgStore,
    filter: &Filter,
    with_entities: bool,
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
    let mut slices = Slices::default();
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
                let decision = with_entities && head.kind == Some(Kind::Decision);
                if decision {
                    slices.see(log_id, text);
                }
                if filter.matches(&head) {
                    stats.matched += 1;
                    let resolved = if decision && !text.contains("\"entities\":") {
                        let r = slices.resolve(log_id, text, &head);
                        if r.is_none() {
                            stats.unresolved += 1;
                        }
                        r
                    } else {
                        None
                    };
                    let text = resolved.as_deref().unwrap_or(text);
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
