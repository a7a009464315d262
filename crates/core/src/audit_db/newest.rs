//! The shipped records newest first, for the console's Decisions page over
//! the database: a page of what the file query's [`Filter`] selects
//! ([`newest_first_db`], keyset-paged by [`DbCursor`]: time, log, seq), one
//! record by its cursor ([`record_at_db`]), a decision's slice looked up in
//! its own log ([`find_slice_db`]) and the allows and denies over time
//! ([`histogram_db`]). Every scan stops at a byte budget, as the file's
//! does. Knows nothing of HTTP or log files.

use std::fmt;
use std::str::FromStr;

use partnergate_audit::newest::{buckets, Histogram};
use partnergate_audit::query::{carried_slice, Filter, Head};
use partnergate_audit::record::Kind;
use partnergate_policy::engine::Effect;
use serde_json::Value;

use super::ship::ShipError;
use crate::store::postgres::{begin_snapshot, PgStore};

/// Rows fetched per round trip.
const FETCH: i32 = 500;

/// Where a record stands in the newest-first order: its time (unix
/// microseconds), log and seq. Written `MICROS.SEQ.LOG_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbCursor {
    /// The record's `ts`, in unix microseconds.
    pub ts_us: i64,
    /// The record's seq in its log.
    pub seq: u64,
    /// The record's log.
    pub log_id: String,
}

impl fmt::Display for DbCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.ts_us, self.seq, self.log_id)
    }
}

impl FromStr for DbCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a database log cursor (MICROS.SEQ.LOG_ID)");
        let mut parts = s.splitn(3, '.');
        let (Some(ts), Some(seq), Some(log)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if log.is_empty() || log.len() > 256 {
            return Err(bad());
        }
        Ok(DbCursor {
            ts_us: ts.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            log_id: log.to_string(),
        })
    }
}

/// One selected record.
#[derive(Debug, Clone)]
pub struct DbFound {
    /// Where it stands.
    pub cursor: DbCursor,
    /// The record as written.
    pub text: String,
    /// Its head fields.
    pub head: Head,
}

/// A page of records, newest first.
#[derive(Debug, Clone, Default)]
pub struct DbPage {
    /// The selected records, newest first.
    pub records: Vec<DbFound>,
    /// Where the next page starts, when older records may remain.
    pub next: Option<DbCursor>,
    /// Bytes of records read for this page.
    pub scanned_bytes: u64,
    /// Records read for this page.
    pub scanned_records: u64,
    /// The scan stopped at the byte budget before the page was full.
    pub budget_hit: bool,
}

/// Visit the records `filter` selects newest first (before `before`), until
/// `visit` says stop or `budget` bytes were read. A row whose content is
/// not a record is passed over (and counted as read). Returns the bytes
/// and records read, the cursor of the last row read (None when the
/// oldest was reached) and whether the budget stopped it.
fn scan(
    store: &PgStore,
    filter: &Filter,
    before: Option<&DbCursor>,
    budget: u64,
    mut visit: impl FnMut(DbFound) -> bool,
) -> Result<(u64, u64, Option<DbCursor>, bool), ShipError> {
    let rfc = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    };
    let (since, until) = (rfc(filter.since), rfc(filter.until));
    let kind = filter
        .kind
        .and_then(|k| serde_json::to_value(k).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    let (b_ts, b_log, b_seq) = match before {
        Some(c) => (
            Some(c.ts_us),
            Some(c.log_id.clone()),
            Some(i64::try_from(c.seq).unwrap_or(i64::MAX)),
        ),
        None => (None, None, None),
    };
    let needles = filter.needles();
    let out = store.with_client(|c| {
        let mut tx = begin_snapshot(c)?;
        let portal = tx.bind(
            "SELECT log_id, seq, (extract(epoch FROM ts) * 1000000)::bigint, record FROM audit_records
             WHERE ($1::text IS NULL OR ts >= $1::text::timestamptz)
               AND ($2::text IS NULL OR ts < $2::text::timestamptz)
               AND ($3::text IS NULL OR kind = $3::text)
               AND ($4::bigint IS NULL
                    OR (ts, log_id, seq) < ('epoch'::timestamptz + $4::bigint * interval '1 microsecond', $5::text, $6::bigint))
             ORDER BY ts DESC, log_id DESC, seq DESC",
            &[&since, &until, &kind, &b_ts, &b_log, &b_seq],
        )?;
        let (mut bytes, mut records) = (0u64, 0u64);
        loop {
            let rows = tx.query_portal(&portal, FETCH)?;
            if rows.is_empty() {
                return Ok((bytes, records, None, false));
            }
            for r in rows {
                let text: String = r.get(3);
                let cursor = DbCursor {
                    log_id: r.get(0),
                    seq: r.get::<_, i64>(1).max(0) as u64,
                    ts_us: r.get(2),
                };
                bytes += text.len() as u64 + 1;
                records += 1;
                let last = Some(cursor.clone());
                if needles.iter().all(|n| text.contains(n)) {
                    if let Ok(head) = serde_json::from_str::<Head>(&text) {
                        if filter.matches(&head) && !visit(DbFound { cursor, text, head }) {
                            return Ok((bytes, records, last, false));
                        }
                    }
                }
                if bytes >= budget {
                    return Ok((bytes, records, last, true));
                }
            }
        }
    })?;
    Ok(out)
}

/// The newest `limit` records `filter` selects, older than `before` if
/// given; at most `budget` bytes are read (then the page may be short,
/// with `budget_hit` and a cursor to go on from).
pub fn newest_first_db(
    store: &PgStore,
    filter: &Filter,
    before: Option<&DbCursor>,
    limit: usize,
    budget: u64,
) -> Result<DbPage, ShipError> {
    let mut page = DbPage::default();
    if limit == 0 {
        return Ok(page);
    }
    let (bytes, records, last, budget_hit) = scan(store, filter, before, budget, |found| {
        page.records.push(found);
        page.records.len() < limit
    })?;
    page.scanned_bytes = bytes;
    page.scanned_records = records;
    page.budget_hit = budget_hit;
    page.next = match page.records.last() {
        Some(r) if page.records.len() == limit => Some(r.cursor.clone()),
        _ => last,
    };
    Ok(page)
}

/// The record at `at`, if the database holds it.
pub fn record_at_db(store: &PgStore, at: &DbCursor) -> Result<Option<DbFound>, ShipError> {
    let seq = i64::try_from(at.seq).unwrap_or(i64::MAX);
    let row = store.with_client(|c| {
        c.query_opt(
            "SELECT record FROM audit_records WHERE log_id = $1 AND seq = $2
               AND ts = 'epoch'::timestamptz + $3::bigint * interval '1 microsecond' LIMIT 1",
            &[&at.log_id, &seq, &at.ts_us],
        )
    })?;
    Ok(row.and_then(|r| {
        let text: String = r.get(0);
        let head = serde_json::from_str::<Head>(&text).ok()?;
        Some(DbFound {
            cursor: at.clone(),
            text,
            head,
        })
    }))
}

/// The slice named `hash` that the decision `seq` of `log_id` refers to:
/// carried inline by an earlier decision of the same log, looked for
/// backwards from it; None when not found within `budget` bytes.
pub fn find_slice_db(
    store: &PgStore,
    log_id: &str,
    seq: u64,
    hash: &str,
    budget: u64,
) -> Result<Option<Value>, ShipError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let out = store.with_client(|c| {
        let mut tx = begin_snapshot(c)?;
        let portal = tx.bind(
            "SELECT record FROM audit_records WHERE log_id = $1 AND seq <= $2 AND kind = 'decision'
             ORDER BY seq DESC",
            &[&log_id, &seq],
        )?;
        let mut bytes = 0u64;
        loop {
            let rows = tx.query_portal(&portal, FETCH)?;
            if rows.is_empty() {
                return Ok(None);
            }
            for r in rows {
                let text: &str = r.get(0);
                bytes += text.len() as u64;
                if let Some((h, raw)) = carried_slice(text) {
                    if h == hash {
                        return Ok(serde_json::from_str(raw.get()).ok());
                    }
                }
                if bytes >= budget {
                    return Ok(None);
                }
            }
        }
    })?;
    Ok(out)
}

/// Allows and denies over time of the decisions `filter` selects, newest
/// first until `budget` bytes.
pub fn histogram_db(
    store: &PgStore,
    filter: &Filter,
    max_buckets: usize,
    budget: u64,
) -> Result<Histogram, ShipError> {
    let filter = Filter {
        kind: Some(Kind::Decision),
        ..filter.clone()
    };
    let mut seconds = Vec::new();
    let (_, _, _, partial) = scan(store, &filter, None, budget, |f| {
        if let Some(d) = f.head.decision {
            seconds.push((f.cursor.ts_us.div_euclid(1_000_000), d == Effect::Allow));
        }
        true
    })?;
    Ok(buckets(seconds, max_buckets, partial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = DbCursor {
            ts_us: 1_765_000_000_123_456,
            seq: 42,
            log_id: "0193.odd id/\"x\"".into(),
        };
        assert_eq!(c.to_string().parse::<DbCursor>().unwrap(), c);
        for bad in ["", "1.2", "x.2.log", "1.-2.log", "1.2.", "SEQ.OFFSET"] {
            assert!(bad.parse::<DbCursor>().is_err(), "{bad}");
        }
    }
}
