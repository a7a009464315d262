//! The writer's counters and health ([`Stats`], shared by the handle and
//! the writer thread) and what the handle reports of them
//! ([`AuditStatus`], [`AuditState`]).
//!
//! Knows nothing of the queue's messages, the files or the record format.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use time::OffsetDateTime;

/// Counters and health of the writer (for metrics and status).
#[derive(Debug)]
pub(super) struct Stats {
    pub(super) written: AtomicU64,
    /// Refused by the queue (full under `drop`, or the log closed).
    pub(super) dropped: AtomicU64,
    /// Accepted but never written (a write or fsync of theirs failed, or the
    /// log was failing when they came).
    pub(super) lost: AtomicU64,
    pub(super) write_errors: AtomicU64,
    /// Gap records written.
    pub(super) gaps: AtomicU64,
    /// Lost or dropped records that no gap record states yet.
    pub(super) unrecorded: AtomicU64,
    /// Retention records written (and the rotated files they deleted).
    pub(super) retentions: AtomicU64,
    pub(super) files_deleted: AtomicU64,
    /// Time range (unix µs) of queue drops not yet taken into a gap.
    pub(super) drop_first_us: AtomicI64,
    pub(super) drop_last_us: AtomicI64,
    pub(super) failing: AtomicBool,
    /// Since when and why the log is failing (set on each state change).
    pub(super) health: Mutex<Option<(String, String)>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            unrecorded: AtomicU64::new(0),
            retentions: AtomicU64::new(0),
            files_deleted: AtomicU64::new(0),
            drop_first_us: AtomicI64::new(i64::MAX),
            drop_last_us: AtomicI64::new(i64::MIN),
            failing: AtomicBool::new(false),
            health: Mutex::new(None),
        }
    }
}

impl Stats {
    /// Count one event refused by the queue, and when.
    pub(super) fn drop_one(&self) {
        let us = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        self.drop_first_us.fetch_min(us, Ordering::Relaxed);
        self.drop_last_us.fetch_max(us, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Release);
    }
}

/// Whether the log is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditState {
    /// Records are being written.
    Ok,
    /// Writes fail (e.g. the disk is full): records are being lost, and are
    /// counted; a gap record states them when writing resumes.
    Failing,
}

/// The log's state and counters, for `/readyz`, `GET /v1/policies` and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditStatus {
    /// Whether writes currently succeed.
    pub state: AuditState,
    /// When the log started failing (RFC 3339), while it is.
    pub since: Option<String>,
    /// The last write error, while failing.
    pub error: Option<String>,
    /// Records written since the log was opened.
    pub written: u64,
    /// Records accepted but not written (write failures).
    pub lost: u64,
    /// Records refused by the queue (`--audit-on-full drop`, or after shutdown).
    pub dropped: u64,
    /// Lost or dropped records no gap record states yet.
    pub unrecorded: u64,
    /// Gap records written.
    pub gaps: u64,
    /// Failed writes, fsyncs and rotations since the log was opened.
    pub write_errors: u64,
    /// Bytes ([`Event::held_bytes`](crate::record::Event::held_bytes)) of the events waiting in the queue now.
    pub queued_bytes: u64,
    /// The queue's byte bound.
    pub queue_bytes_limit: u64,
    /// Retention records written since the log was opened.
    pub retentions: u64,
    /// Rotated files the retention rule deleted since the log was opened.
    pub files_deleted: u64,
}
