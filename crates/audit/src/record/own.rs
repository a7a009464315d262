//! The records the log writes itself: what a `repair`, a `gap` and a
//! `retention` record state ([`RepairInfo`], [`GapInfo`], [`RetentionInfo`]),
//! and their bodies before they are sealed into the chain
//! ([`seal`](super::seal)).
//!
//! Knows nothing of when the writer writes them or of how a body is sealed.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::encode::json;
use super::event::Kind;

/// What a `repair` record says was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairInfo {
    /// The file that had a torn last line.
    pub file: String,
    /// The byte offset the file was truncated to.
    pub offset: u64,
    /// How many bytes were cut.
    pub cut_bytes: u64,
    /// SHA-256 (hex) of the bytes cut, for the record.
    pub cut_sha256: String,
}

/// What a `gap` record says was not logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapInfo {
    /// Records not logged: `write_failed + queue_dropped`.
    pub records: u64,
    /// Accepted by the writer but lost to failed writes (e.g. a full disk).
    pub write_failed: u64,
    /// Refused by a full queue (`--audit-on-full drop`).
    pub queue_dropped: u64,
    /// Of `write_failed`, the decisions refused to their callers because
    /// their record could not be made durable (`--audit-required`).
    pub refused: u64,
    /// The timestamps of the first and last record not logged.
    pub from: String,
    /// See `from` (RFC 3339 UTC, like every `ts`).
    pub until: String,
    /// The write error, when there was one.
    pub error: Option<String>,
}

/// One rotated file a `retention` record states was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedFile {
    /// The file's name when it was deleted (e.g. `decisions.jsonl.11`).
    pub file: String,
    /// The seq of its first record (none if it held no readable record).
    pub first_seq: Option<u64>,
    /// The seq of its last record.
    pub last_seq: Option<u64>,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Where the kept chain starts after a retention: the first record that was
/// kept, named by its `seq` and `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStart {
    /// The seq of the first record kept.
    pub seq: u64,
    /// Its `prev_hash`: the hash of the last record deleted.
    pub prev_hash: String,
}

/// What a `retention` record says was deleted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionInfo {
    /// The rotated files deleted, oldest first.
    pub deleted: Vec<RetainedFile>,
    /// The first record kept: `audit verify` accepts a chain that starts
    /// there (and nowhere else but the genesis).
    pub kept_from: ChainStart,
    /// The rule that deleted them, e.g. `max_files=10`.
    pub rule: String,
}

/// The body of one of the log's own records: `seq` (null until it is
/// sealed), `ts`, `kind`, a null `decision_id` and `request_id`, then
/// `members` in order, then `replica` when set.
fn own_body<const N: usize>(
    kind: Kind,
    members: [(&str, Value); N],
    ts: &str,
    replica: Option<&str>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::Null);
    m.insert("ts".into(), Value::String(ts.to_string()));
    m.insert("kind".into(), Value::String(kind.as_str().into()));
    m.insert("decision_id".into(), Value::Null);
    m.insert("request_id".into(), Value::Null);
    for (key, value) in members {
        m.insert(key.into(), value);
    }
    if let Some(r) = replica {
        m.insert("replica".into(), Value::String(r.to_string()));
    }
    m
}

/// The body of a `repair` record.
pub fn repair_body(info: &RepairInfo, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    let operation = Value::String("truncate_torn_line".into());
    own_body(
        Kind::Repair,
        [("operation", operation), ("repair", json(info))],
        ts,
        replica,
    )
}

/// The body of a `gap` record.
pub fn gap_body(info: &GapInfo, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    own_body(Kind::Gap, [("gap", json(info))], ts, replica)
}

/// The body of a `retention` record.
pub fn retention_body(info: &RetentionInfo, ts: &str, replica: Option<&str>) -> Map<String, Value> {
    own_body(Kind::Retention, [("retention", json(info))], ts, replica)
}
