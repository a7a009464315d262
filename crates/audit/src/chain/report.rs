//! What [`verify`](super::verify) reports ([`VerifyReport`]): the first
//! break of a chain and its kind ([`ChainBreak`], [`BreakKind`]), and the
//! gap and retention records the chain holds ([`GapFound`],
//! [`RetentionFound`]).
//!
//! Knows nothing of how the files are read or the chain is checked.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Location;
use crate::record::{GapInfo, RetentionInfo};

/// What is wrong with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakKind {
    /// A record's content was changed after it was written.
    Edited,
    /// One or more records are missing (deleted).
    Missing,
    /// A record that does not belong was added.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// A line is not a record (not JSON, missing chain fields, torn).
    Malformed,
}

/// The first break found in a chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainBreak {
    /// What kind of break it is.
    pub kind: BreakKind,
    /// The seq of the record concerned, when known.
    pub seq: Option<u64>,
    /// The line at which the break was found.
    pub location: Location,
    /// The details (expected and found seq or hash, parse error).
    pub message: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            BreakKind::Edited => "edited record",
            BreakKind::Missing => "missing record(s)",
            BreakKind::Inserted => "inserted record",
            BreakKind::Reordered => "reordered record",
            BreakKind::Malformed => "malformed record",
        };
        match self.seq {
            Some(s) => write!(f, "{kind}: seq {s} at {}: {}", self.location, self.message),
            None => write!(f, "{kind} at {}: {}", self.location, self.message),
        }
    }
}

/// A `gap` record found by [`verify`](super::verify): records the writer states it could
/// not log (a full disk, a full queue). Chained like every record, so not
/// tampering, but the log is not complete.
#[derive(Debug, Clone, Serialize)]
pub struct GapFound {
    /// The gap record's own seq.
    pub seq: u64,
    /// Where the gap record is.
    pub location: Location,
    /// What the gap record states (counts, period, error).
    #[serde(flatten)]
    pub info: GapInfo,
}

impl std::fmt::Display for GapFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.info;
        write!(
            f,
            "gap record seq {} at {}: {} record(s) not logged between {} and {} ({} lost to failed writes, {} dropped by a full queue; {} of them refused to the caller)",
            self.seq, self.location, g.records, g.from, g.until, g.write_failed, g.queue_dropped, g.refused
        )?;
        if let Some(e) = &g.error {
            write!(f, "; error: {e}")?;
        }
        Ok(())
    }
}

/// A `retention` record found by [`verify`](super::verify): the writer deleted its oldest
/// rotated files by its retention rule, and states which and where the
/// kept chain starts. Chained like every record: not tampering.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionFound {
    /// The retention record's own seq.
    pub seq: u64,
    /// Where the retention record is.
    pub location: Location,
    /// What it states (files deleted, seq ranges, first record kept, rule).
    #[serde(flatten)]
    pub info: RetentionInfo,
}

impl std::fmt::Display for RetentionFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.info;
        let files: Vec<String> = r
            .deleted
            .iter()
            .map(|d| match (d.first_seq, d.last_seq) {
                (Some(a), Some(b)) => format!("{} (seq {a}..={b})", d.file),
                _ => d.file.clone(),
            })
            .collect();
        write!(
            f,
            "retention record seq {} at {}: {} deleted by rule {}; the kept chain starts at seq {}",
            self.seq,
            self.location,
            if files.is_empty() {
                "nothing".to_string()
            } else {
                files.join(", ")
            },
            r.rule,
            r.kept_from.seq
        )
    }
}

/// The outcome of [`verify`](super::verify).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The chain files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Records checked (up to the break, if any).
    pub records: u64,
    /// The seq of the first record checked (none for an empty log).
    pub first_seq: Option<u64>,
    /// The seq of the last intact record checked.
    pub last_seq: Option<u64>,
    /// The hash of the last record checked: the head of the chain (up to
    /// the break, if any).
    pub last_hash: Option<String>,
    /// The first break, if the chain is not intact.
    pub problem: Option<ChainBreak>,
    /// The gap records of the chain (up to the break, if any).
    pub gaps: Vec<GapFound>,
    /// The records the gap records state were not logged.
    pub records_not_logged: u64,
    /// The retention records of the chain (up to the break, if any).
    pub retentions: Vec<RetentionFound>,
    /// When the chain does not start at the genesis: the seq of the
    /// retention record that names its first record.
    pub start_stated_by: Option<u64>,
}

impl VerifyReport {
    /// The chain is unbroken and nothing is stated missing.
    pub fn ok(&self) -> bool {
        self.intact() && self.gaps.is_empty()
    }

    /// The chain is unbroken (no record edited, removed, inserted or
    /// reordered); gap records may still state records that were not logged.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}
