//! Copying one decision log into `audit_records` ([`Shipper`]): each round
//! reads how far the database holds the log (`audit_logs.head_seq` and
//! `head_hash`), reads the next records of the file after it (whole lines
//! only, each checked to continue the copied chain), and inserts them in
//! one transaction that also moves the head, only if no one moved it
//! meanwhile. The database is the only record of how far a log is shipped:
//! a shipper killed after the commit starts again after what it shipped,
//! one killed before it ships the batch again; either way every record is
//! in the database exactly once.
//!
//! Knows nothing of threads, metrics or HTTP; never writes the log.

use std::path::{Path, PathBuf};

use partnergate_audit::chain::{newest_seq, After, Shippable};
use partnergate_audit::recovered::log_id;
use partnergate_audit::AuditError;

use super::partitions::{day_of, Partitions};
use crate::store::postgres::PgStore;
use crate::store::StoreError;

/// Why a round of shipping failed. Nothing was committed by a failed
/// round; the next round starts again from the database's head.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The database is unreachable or refused a statement.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The log could not be read, or does not continue what was shipped.
    #[error("{0}")]
    Log(#[from] AuditError),
    /// A record's `ts` is not an RFC 3339 time (its day partition is
    /// unknown).
    #[error("{path}: seq {seq}: `ts` {ts:?} is not an RFC 3339 time; the record cannot be placed in a day partition")]
    Time {
        /// The log.
        path: PathBuf,
        /// The record.
        seq: u64,
        /// Its `ts` as written.
        ts: String,
    },
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipRound {
    /// Records inserted by this round.
    pub shipped: u64,
    /// The seq the database holds the log up to, after the round.
    pub head_seq: u64,
    /// Records of the log not in the database yet (by the log's newest
    /// whole record, read from its end).
    pub lag_records: u64,
    /// Another shipper of the same log moved the head during the round,
    /// which shipped nothing and may be run again.
    pub raced: bool,
    /// The time (`ts`) of the oldest record the round read and left for a
    /// later round; None when it read the log to its end.
    pub oldest_unshipped: Option<String>,
}

/// Ships one log file (with its rotated siblings).
#[derive(Debug)]
pub struct Shipper {
    path: PathBuf,
    log_id: String,
    batch: usize,
    partitions: Partitions,
}

impl Shipper {
    /// A shipper of the log at `path`, `batch` records at most per round.
    /// Reads the log's id (`PATH.id`, created if missing, as the writer
    /// does), which with the seq keys every record in the database.
    pub fn new(path: &Path, batch: usize) -> Result<Self, ShipError> {
        Ok(Shipper {
            path: path.to_path_buf(),
            log_id: log_id(path)?,
            batch: batch.max(1),
            partitions: Partitions::default(),
        })
    }

    /// The log's id.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// The head of the log in the database: its last shipped seq (0 when
    /// none) and that record's hash.
    pub fn head(&self, store: &PgStore) -> Result<(u64, Option<String>), ShipError> {
        let id = self.log_id.as_str();
        let row = store.with_client(|c| {
            c.query_opt(
                "SELECT head_seq, head_hash FROM audit_logs WHERE log_id = $1",
                &[&id],
            )
        })?;
        Ok(row.map_or((0, None), |r| (r.get::<_, i64>(0).max(0) as u64, r.get(1))))
    }

    /// One round: at most one batch, in one transaction.
    pub fn round(&mut self, store: &PgStore) -> Result<ShipRound, ShipError> {
        let (head, head_hash) = self.head(store)?;
        let mut after = After::open(&self.path, head, head_hash.as_deref())?;
        let mut batch: Vec<Shippable> = Vec::new();
        let mut left = None;
        while let Some(r) = after.next_record()? {
            if batch.len() < self.batch {
                batch.push(r);
            } else {
                left = Some(r.ts);
                break;
            }
        }
        let lag = |h: u64| newest_seq(&self.path).unwrap_or(h).saturating_sub(h);
        if batch.is_empty() {
            return Ok(ShipRound {
                head_seq: head,
                lag_records: lag(head),
                ..ShipRound::default()
            });
        }
        let mut days = Vec::with_capacity(2);
        for r in &batch {
            let day = day_of(&r.ts).ok_or_else(|| ShipError::Time {
                path: self.path.clone(),
                seq: r.seq,
                ts: r.ts.clone(),
            })?;
            if days.last() != Some(&day) {
                days.push(day);
            }
        }
        let partitions = &mut self.partitions;
        store.with_client(|c| partitions.ensure(c, days))?;
        let moved = match store.with_client(|c| insert(c, &self.log_id, head, &batch)) {
            Ok(m) => m,
            Err(e) => {
                // A retention may have dropped a partition known here.
                self.partitions.forget();
                return Err(e.into());
            }
        };
        let new_head = batch.last().map_or(head, |r| r.seq);
        Ok(if moved {
            ShipRound {
                shipped: batch.len() as u64,
                head_seq: new_head,
                lag_records: lag(new_head),
                raced: false,
                oldest_unshipped: left,
            }
        } else {
            ShipRound {
                head_seq: head,
                lag_records: lag(head),
                raced: true,
                oldest_unshipped: batch.first().map(|r| r.ts.clone()),
                ..ShipRound::default()
            }
        })
    }

    /// Rounds until the log is shipped to its end (as it was when each
    /// round read it); the records shipped in all.
    pub fn ship_all(&mut self, store: &PgStore) -> Result<u64, ShipError> {
        let mut total = 0;
        loop {
            let r = self.round(store)?;
            total += r.shipped;
            if r.shipped == 0 && !r.raced {
                return Ok(total);
            }
        }
    }
}

/// Insert `batch` (records after `head`) and move the log's head to its
/// last record, in one transaction; false (rolled back) when the head is
/// no longer `head`.
fn insert(
    c: &mut postgres::Client,
    log_id: &str,
    head: u64,
    batch: &[Shippable],
) -> Result<bool, postgres::Error> {
    let Some(last) = batch.last() else {
        return Ok(true);
    };
    let replica = last.replica.clone();
    c.execute(
        "INSERT INTO audit_logs (log_id, replica) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&log_id, &replica],
    )?;
    let mut tx = c.transaction()?;
    let seqs: Vec<i64> = batch.iter().map(|r| r.seq as i64).collect();
    let ts: Vec<&str> = batch.iter().map(|r| r.ts.as_str()).collect();
    let replicas: Vec<Option<&str>> = batch.iter().map(|r| r.replica.as_deref()).collect();
    let kinds: Vec<Option<&str>> = batch.iter().map(|r| r.kind.as_deref()).collect();
    let hashes: Vec<&str> = batch.iter().map(|r| r.hash.as_str()).collect();
    let prevs: Vec<&str> = batch.iter().map(|r| r.prev_hash.as_str()).collect();
    let texts: Vec<&str> = batch.iter().map(|r| r.text.as_str()).collect();
    tx.execute(
        "INSERT INTO audit_records (log_id, seq, ts, replica, kind, hash, prev_hash, record)
         SELECT $1, s, t::timestamptz, r, k, h, p, b
         FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
              AS u(s, t, r, k, h, p, b)
         ON CONFLICT DO NOTHING",
        &[&log_id, &seqs, &ts, &replicas, &kinds, &hashes, &prevs, &texts],
    )?;
    let moved = tx.execute(
        "UPDATE audit_logs SET head_seq = $2, head_hash = $3, replica = COALESCE($4, replica), shipped_at = now()
         WHERE log_id = $1 AND head_seq = $5",
        &[&log_id, &(last.seq as i64), &last.hash, &replica, &(head as i64)],
    )?;
    if moved != 1 {
        return Ok(false);
    }
    tx.commit()?;
    Ok(true)
}
