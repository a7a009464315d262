//! A located problem in a policy, schema or pack file: [`Problem`] (file,
//! line, column, policy, message and its rendering with a caret), and the
//! line and column of a byte offset.
//!
//! Owns the type every check of a pack's files reports with: the limits
//! ([`crate::prescan`]), loading and validation ([`crate::policies`]), and
//! the files other crates read beside a pack. It must never know how a pack
//! is loaded, Cedar's grammar or what a limit is.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One located problem found while loading: rendered for humans (with file,
/// line, column and a caret) and structured for machines.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in, when it is about one.
    pub file: Option<PathBuf>,
    /// 1-based line in `file`, when the problem has a location.
    pub line: Option<usize>,
    /// 1-based column in `file`, when the problem has a location.
    pub column: Option<usize>,
    /// The policy the problem is about, when it is about one.
    pub policy_id: Option<String>,
    /// The problem alone, without location (Cedar's or PartnerGate's message).
    pub message: String,
    /// The miette rendering: message, location and a caret under the source.
    #[serde(skip)]
    pub rendered: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let (Some(l), Some(c)) = (self.line, self.column) {
                write!(f, ":{l}:{c}")?;
            }
            write!(f, ": ")?;
        }
        if let Some(id) = &self.policy_id {
            write!(f, "policy `{id}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// 1-based (line, column) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, col)
}
