//! How to open the log: where records go ([`Sink`]), when the writer
//! fsyncs ([`SyncMode`]), what logging does when the queue is full
//! ([`OnFull`]), the bounds, rotation and retention rule, redaction and
//! replica name ([`AuditConfig`]), and their defaults.
//!
//! Knows nothing of the writer thread, the queue or the files' contents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::redact::Redaction;

/// When the writer calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// After every record (slowest, nothing acknowledged-and-written is lost).
    Always,
    /// Group commit: while the writer is busy, at most every
    /// [`SYNC_INTERVAL`] (20 ms); at once when it goes idle, on a flush, a
    /// rotation and a stop.
    #[default]
    Batch,
    /// Never (the OS writes back; a power loss may lose the tail).
    Never,
}

/// What [`AuditLog::log`](super::AuditLog::log) does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Wait for room (backpressure): nothing is lost.
    #[default]
    Block,
    /// Drop the event and count it ([`AuditLog::dropped`](super::AuditLog::dropped)).
    Drop,
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A file, rotated to `PATH.N` by size, locked and repaired at open.
    File(PathBuf),
    /// Standard output (no rotation, no repair; the chain starts at seq 1).
    Stdout,
}

/// The default log path.
pub const DEFAULT_PATH: &str = "data/decisions.jsonl";

/// The queue's default byte bound (64 MiB).
pub const DEFAULT_QUEUE_BYTES: u64 = 64 * 1024 * 1024;

/// Rotated files kept by default.
pub const DEFAULT_MAX_FILES: u32 = 10;

/// How to open the log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where the records go.
    pub sink: Sink,
    /// When the writer fsyncs.
    pub sync: SyncMode,
    /// What logging does when the queue is full.
    pub on_full: OnFull,
    /// Queue capacity in events.
    pub queue_capacity: usize,
    /// Queue capacity in bytes ([`Event::held_bytes`](crate::record::Event::held_bytes)): past it, logging
    /// blocks or drops exactly as when the count is reached. One event is
    /// always accepted into an empty queue, however large.
    pub queue_bytes: u64,
    /// Most records written (and fsynced, in batch mode) at once.
    pub max_batch: usize,
    /// Rotate when the active file would exceed this many bytes (None: never).
    pub max_file_bytes: Option<u64>,
    /// Keep at most this many rotated files (None: all); older ones are
    /// deleted after a `retention` record states it.
    pub max_files: Option<u32>,
    /// Keep rotated files totalling at most this many bytes (None: no byte
    /// rule); the oldest go first, after a `retention` record.
    pub max_total_bytes: Option<u64>,
    /// How long the writer lets a partial batch grow before writing it: the
    /// most a record waits in the queue when the writer keeps up. A flush or
    /// a stop does not wait for it.
    pub linger: Duration,
    /// The context keys and entity attributes masked before encoding.
    pub redaction: Redaction,
    /// Written as `replica` on every record, when set.
    pub replica: Option<String>,
}

impl AuditConfig {
    /// A file log at `path` with the defaults: batch fsync, blocking when
    /// full, 8192 queued events or [`DEFAULT_QUEUE_BYTES`], batches of 1024,
    /// rotation at 256 MiB keeping [`DEFAULT_MAX_FILES`] rotated files, the
    /// default linger, no redaction and no replica.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            sink: Sink::File(path.into()),
            sync: SyncMode::Batch,
            on_full: OnFull::Block,
            queue_capacity: 8192,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_batch: 1024,
            max_file_bytes: Some(256 * 1024 * 1024),
            max_files: Some(DEFAULT_MAX_FILES),
            max_total_bytes: None,
            linger: DEFAULT_LINGER,
            redaction: Redaction::default(),
            replica: None,
        }
    }

    /// A log on standard output, with [`AuditConfig::file`]'s other defaults.
    pub fn stdout() -> Self {
        AuditConfig {
            sink: Sink::Stdout,
            ..Self::file(DEFAULT_PATH)
        }
    }
}

/// How long the writer lets a partial batch grow, by default.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);

/// With `batch`, the longest a written record waits for fsync while the
/// writer is busy (group commit); an idle writer, a flush, a rotation and a
/// stop fsync at once.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(20);

/// The path of the log: the default when none is given.
pub fn default_path() -> &'static Path {
    Path::new(DEFAULT_PATH)
}
