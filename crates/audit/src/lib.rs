//! The decision log: every decision, change and reload appended as one JSON
//! line, chained by SHA-256 hashes so that editing, deleting, inserting or
//! reordering records is detected, written off the caller's path by one
//! writer thread, rotated by size, repaired after a crash, redacted,
//! queryable and replayable against candidate policies.
//!
//! Submodules: [`error`] ([`AuditError`]), [`record`] (the format, canonical encoding, hashing, shadow),
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
pub mod error;
pub mod newest;
pub mod query;
pub mod record;
pub mod recovered;
pub mod redact;
pub mod replay;
pub mod writer;

pub use chain::{
    verify, verify_until, BreakKind, ChainBreak, Location, RetentionFound, VerifyReport,
};
pub use error::AuditError;
pub use record::{
    new_decision_id, shadow_of, ChainStart, ChangeEvent, DecisionEvent, EntitySlice, Event,
    GapInfo, Gateway, Kind, Record, ReloadEvent, RetainedFile, RetentionInfo, SearchEvent, Shadow,
};
pub use redact::Redaction;
pub use writer::{
    AuditConfig, AuditLog, AuditState, AuditStatus, Durable, OnFull, OpenInfo, Sink, SyncMode,
    DEFAULT_MAX_FILES, DEFAULT_QUEUE_BYTES,
};
