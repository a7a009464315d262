//! The decision log's errors ([`AuditError`]) and where in the log they
//! are ([`Location`]): each names the file (and line) concerned. Knows
//! nothing of the record format or the writer.

use std::path::{Path, PathBuf};

use serde::Serialize;

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
    /// A log's records do not continue the chain a copy of it holds (records
    /// missing, or the log repaired or edited after they were copied).
    #[error("{location}: {message}")]
    Diverged {
        /// The first record that does not continue the copy.
        location: Location,
        /// What does not match.
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

    /// What is wrong, without where: a malformed line's message alone, any
    /// other error in full.
    pub(crate) fn into_message(self) -> String {
        match self {
            AuditError::Malformed { message, .. } => message,
            other => other.to_string(),
        }
    }
}

/// A line of the log: file and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The log file (the active file or a rotated `PATH.N`).
    pub file: PathBuf,
    /// The 1-based line number in `file`.
    pub line: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}
