//! Retention of the shipped logs ([`apply_retention`]): the day partitions
//! of `audit_records` older than a number of days are dropped, and each log
//! cut by them gets a `retention` record (the audit crate's own record,
//! sealed by the audit crate) in `audit_retentions`, a chain of its own
//! from the genesis. The record states where the log's kept chain now
//! starts (`kept_from`: its first kept seq and that record's `prev_hash`),
//! so that `verify --pg` accepts that start, and only it: a row deleted by
//! hand is still a break, and a retention record changed or deleted breaks
//! the retentions' chain.
//!
//! A log is cut by seq, not by time: records of one log are not strictly
//! in time order (a record's time is taken before it is queued), so the
//! kept records of a log whose seq is at or below the last seq dropped are
//! deleted too, and every log keeps one contiguous tail.
//!
//! One transaction under the partition lock: two replicas running it at
//! once take turns, and the second finds nothing more to drop. Knows
//! nothing of log files; hashes nothing itself.

use postgres::Client;
use serde::Serialize;
use serde_json::Value;
use time::{Date, Duration, OffsetDateTime};

use partnergate_audit::record::{
    retention_body, seal, ChainStart, RetainedFile, RetentionInfo, GENESIS_HASH,
};
use partnergate_audit::writer::format_ts;

use super::partitions::{partition_day, PARTITION_LOCK};
use super::ship::ShipError;
use crate::store::postgres::PgStore;

/// The most days a retention may keep (a bound on the flag, not a policy).
pub const MAX_DAYS: u32 = 36_500;

/// One log cut by a retention.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogCut {
    /// The log's id.
    pub log_id: String,
    /// The records removed: the seqs `first..=last`.
    pub first_seq: u64,
    /// See `first_seq`; the kept chain starts after it.
    pub last_seq: u64,
    /// Where the kept chain starts.
    pub kept_from: ChainStart,
    /// The seq of the retention record in `audit_retentions`.
    pub record_seq: u64,
}

/// What a retention did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RetentionDone {
    /// Records of days before this one were dropped (UTC).
    pub cut_before: String,
    /// The partitions dropped, oldest first.
    pub dropped: Vec<String>,
    /// The logs cut.
    pub logs: Vec<LogCut>,
}

/// Why a retention was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Fewer than one day, or more than [`MAX_DAYS`].
    #[error("retention days must be 1..=36500 (got {0}): 0 would drop today's records as they are shipped")]
    Days(i64),
    /// The database failed.
    #[error(transparent)]
    Ship(#[from] ShipError),
}

/// Drop the day partitions of days before `now`'s day minus `days`, and
/// record, for each log they cut, where its kept chain starts. `by` names
/// who ran it (kept as the records' `replica`).
pub fn apply_retention(
    store: &PgStore,
    days: i64,
    now: OffsetDateTime,
    by: &str,
) -> Result<RetentionDone, RetentionError> {
    if !(1..=i64::from(MAX_DAYS)).contains(&days) {
        return Err(RetentionError::Days(days));
    }
    let today = now.to_offset(time::UtcOffset::UTC).date();
    let cut = today.saturating_sub(Duration::days(days));
    let ts = format_ts(now);
    let done = store
        .with_client(|c| run(c, cut, days, &ts, by))
        .map_err(ShipError::from)?;
    Ok(done)
}

/// The day partitions of days before `cut`, oldest first (names of any
/// other form are left alone).
fn partitions_before(
    tx: &mut postgres::Transaction<'_>,
    cut: Date,
) -> Result<Vec<(Date, String)>, postgres::Error> {
    let mut old: Vec<(Date, String)> = tx
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'audit_records'::regclass",
            &[],
        )?
        .into_iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            partition_day(&name).map(|d| (d, name))
        })
        .filter(|(d, _)| *d < cut)
        .collect();
    old.sort();
    Ok(old)
}

fn run(
    c: &mut Client,
    cut: Date,
    days: i64,
    ts: &str,
    by: &str,
) -> Result<RetentionDone, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])?;
    let old = partitions_before(&mut tx, cut)?;
    let mut done = RetentionDone {
        cut_before: cut.to_string(),
        dropped: old.iter().map(|(_, n)| n.clone()).collect(),
        logs: Vec::new(),
    };
    if old.is_empty() {
        return Ok(done);
    }
    let cut_ts = format!("{cut} 00:00:00+00");
    let cuts = tx.query(
        "SELECT log_id, min(seq), max(seq), COALESCE(sum(octet_length(record)), 0)::bigint
         FROM audit_records WHERE ts < $1::text::timestamptz GROUP BY log_id ORDER BY log_id",
        &[&cut_ts],
    )?;
    let (mut seq, mut prev) = tx
        .query_opt(
            "SELECT seq, hash FROM audit_retentions ORDER BY seq DESC LIMIT 1",
            &[],
        )?
        .map_or((0, GENESIS_HASH.to_string()), |r| {
            (r.get::<_, i64>(0), r.get(1))
        });
    let rule = format!(
        "audit_retention_days={days}: day partitions before {cut} dropped ({})",
        done.dropped.join(", ")
    );
    for r in cuts {
        let log_id: String = r.get(0);
        let (first, last, bytes): (i64, i64, i64) = (r.get(1), r.get(2), r.get(3));
        // The hash of the last record dropped: the kept chain's prev_hash.
        let last_hash: Option<String> = tx
            .query_opt(
                "SELECT hash FROM audit_records WHERE log_id = $1 AND seq = $2 LIMIT 1",
                &[&log_id, &last],
            )?
            .map(|r| r.get(0));
        let Some(last_hash) = last_hash else { continue };
        // Records of the log at or below the cut that fall on a kept day.
        tx.execute(
            "DELETE FROM audit_records WHERE log_id = $1 AND seq <= $2 AND ts >= $3::text::timestamptz",
            &[&log_id, &last, &cut_ts],
        )?;
        let kept_from = ChainStart {
            seq: last.max(0) as u64 + 1,
            prev_hash: last_hash,
        };
        let info = RetentionInfo {
            deleted: vec![RetainedFile {
                file: format!("audit_records[{log_id}]"),
                first_seq: Some(first.max(0) as u64),
                last_seq: Some(last.max(0) as u64),
                bytes: bytes.max(0) as u64,
            }],
            kept_from: kept_from.clone(),
            rule: rule.clone(),
        };
        seq += 1;
        prev = record(&mut tx, seq, &prev, &info, ts, by, &log_id)?;
        done.logs.push(LogCut {
            log_id,
            first_seq: first.max(0) as u64,
            last_seq: last.max(0) as u64,
            kept_from,
            record_seq: seq as u64,
        });
    }
    for (_, name) in &old {
        // A partition's name is made of a date's digits only (checked by
        // `partition_day`).
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))?;
    }
    tx.commit()?;
    Ok(done)
}

/// Seal the retention record of `log_id` as record `seq` after `prev` and
/// insert it; its hash.
fn record(
    tx: &mut postgres::Transaction<'_>,
    seq: i64,
    prev: &str,
    info: &RetentionInfo,
    ts: &str,
    by: &str,
    log_id: &str,
) -> Result<String, postgres::Error> {
    let mut body = retention_body(info, ts, Some(by));
    body.insert("log_id".into(), Value::String(log_id.to_string()));
    let (line, hash) = seal(body, seq.max(0) as u64, prev);
    tx.execute(
        "INSERT INTO audit_retentions (seq, ts, log_id, hash, prev_hash, record)
         VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6)",
        &[&seq, &ts, &log_id, &hash, &prev, &line],
    )?;
    Ok(hash)
}
