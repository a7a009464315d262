//! Why a directory operation failed: [`DirectoryError`], and whether the
//! caller or the store is at fault.
//!
//! Owns the error type only; it must never know how the directory holds,
//! writes or walks entities.

use crate::store::StoreError;

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The entities given are not a JSON array (a 400).
    #[error("entities: expected a JSON array of Cedar entities")]
    NotAnArray,
    /// One entity of a write is not valid Cedar entity JSON, does not fit the schema, or repeats a uid (a 400).
    #[error("entity #{index}{}: {message}", .uid.as_ref().map(|u| format!(" ({u})")).unwrap_or_default())]
    Invalid {
        /// 0-based position of the entity in the array written.
        index: usize,
        /// Its uid, when one could be read.
        uid: Option<String>,
        /// What is wrong (Cedar's message, or PartnerGate's).
        message: String,
    },
    /// A write names an action entity (its uid); actions are the schema's (a 400).
    #[error("entity {0} is an action: actions come from the schema")]
    Action(String),
    /// The entity store failed (its [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored entity does not parse back (the store's contents, not the caller, are at fault).
    #[error("stored entity {uid} is unreadable: {message}")]
    Corrupt {
        /// The stored entity's uid.
        uid: String,
        /// Why it does not parse.
        message: String,
    },
    /// The request's deadline had passed when the write's transaction began; nothing was written.
    #[error("the write did not start before the request timeout; nothing was written")]
    TimedOut,
}

impl DirectoryError {
    /// Is this the caller's fault (a 400), rather than the store's?
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            DirectoryError::Store(_) | DirectoryError::Corrupt { .. } | DirectoryError::TimedOut
        )
    }
}
