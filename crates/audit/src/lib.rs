//! The decision log: every decision, change and reload appended as one JSON
//! line, chained by SHA-256 hashes so that editing, deleting, inserting or
//! reordering records is detected, written off the caller's path by one
//! writer thread, rotated by size, repaired after a crash, redacted,
//! queryable and replayable against candidate policies.
//!
//! Submodules: [`record`] (the format, canonical encoding, hashing, shadow),
//! [`redact`], [`writer`] ([`AuditLog`]), [`chain`] (files, verify),
//! [`query`] and [`replay`]. The `partnergate audit` commands live in the
//! binary (`src/cli/audit.rs`).
//! The record format is documented field by field in docs/audit.md.
//!
//! Depends only on `partnergate-policy` (decisions it records and replays);
//! it must never know the entity stores, reloads, the partner rules, HTTP
//! or the command line.

pub mod chain;
pub mod query;
pub mod record;
pub mod redact;
pub mod replay;
pub mod writer;

use std::path::{Path, PathBuf};

use partnergate_policy::{engine, policies};

pub use chain::{verify, BreakKind, ChainBreak, Location, VerifyReport};
pub use record::{
    new_decision_id, shadow_of, ChangeEvent, DecisionEvent, EntitySlice, Event, GapInfo, Kind,
    Record, ReloadEvent, Shadow,
};
pub use redact::Redaction;
pub use writer::{
    AuditConfig, AuditLog, AuditState, AuditStatus, Durable, OnFull, OpenInfo, Sink, SyncMode,
};

/// Errors of the decision log. Each names the file (and line) concerned.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the log is open for writing by another process (lock held on {}.lock)", .0.display(), .0.display())]
    Locked(PathBuf),
    #[error("{}: {message}", .file.display())]
    Corrupt { file: PathBuf, message: String },
    #[error("{location}: {message}")]
    Malformed { location: Location, message: String },
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(std::io::Error),
}

impl AuditError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
