//! The decision log: every decision, change and reload appended as one JSON
//! line, chained by SHA-256 hashes so that editing, deleting, inserting or
//! reordering records is detected, written off the caller's path by one
//! writer thread, rotated by size, repaired after a crash, redacted,
//! queryable and replayable against candidate policies.
//!
//! Submodules: [`record`] (the format, canonical encoding, hashing, shadow),
//! [`redact`], [`writer`] ([`AuditLog`]), [`chain`] (files, verify),
//! [`query`], [`newest`] (newest-first pages), [`replay`] and [`recovered`]
//! (a log's id, the kept form of change records, which ones a log holds). The `partnergate audit` commands live in the
//! binary (`src/cli/audit.rs`).
//! The record format is documented field by field in docs/audit.md.
//!
//! Depends only on `partnergate-policy` (decisions it records and replays);
//! it must never know the entity stores, reloads, the partner rules, HTTP
//! or the command line.

#![warn(missing_docs, clippy::too_many_lines)]

pub mod chain;
pub mod newest;
pub mod query;
pub mod record;
pub mod recovered;
pub mod redact;
pub mod replay;
pub mod writer;

use std::path::{Path, PathBuf};

use partnergate_policy::{engine, policies};

pub use chain::{
    verify, verify_until, BreakKind, ChainBreak, Location, RetentionFound, VerifyReport,
};
pub use record::{
    new_decision_id, shadow_of, ChainStart, ChangeEvent, DecisionEvent, EntitySlice, Event,
    GapInfo, Gateway, Kind, Record, ReloadEvent, RetainedFile, RetentionInfo, SearchEvent, Shadow,
};
pub use redact::Redaction;
pub use writer::{
    AuditConfig, AuditLog, AuditState, AuditStatus, Durable, OnFull, OpenInfo, Sink, SyncMode,
    DEFAULT_MAX_FILES, DEFAULT_QUEUE_BYTES,
};

/// Errors of the decision log. Each names the file (and line) concerned.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading, writing, syncing, locking or renaming a log file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the writer lock (`PATH.lock`) of the log.
    #[error("{}: the log is open for writing by another process (lock held on {}.lock)", .0.display(), .0.display())]
    Locked(PathBuf),
    /// At open, the record the writer would continue the chain from is
    /// unreadable or does not match its hash; nothing is appended.
    #[error("{}: {message}", .file.display())]
    Corrupt {
        /// The file holding that last record.
        file: PathBuf,
        /// What is wrong, and that `partnergate audit verify` locates it.
        message: String,
    },
    /// A line is not a valid record (not JSON, missing or mistyped field).
    #[error("{location}: {message}")]
    Malformed {
        /// The file and line.
        location: Location,
        /// What is wrong with it.
        message: String,
    },
    /// The writer thread could not be spawned.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(std::io::Error),
    /// A page cursor names no record of the log (rotated away, or not one
    /// this log gave).
    #[error("{0}")]
    Cursor(String),
}

impl AuditError {
    /// An [`AuditError::Io`] on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
