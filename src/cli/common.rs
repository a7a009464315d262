//! What the command files share: the shipped pack's paths, the exit codes
//! and the CLI's own errors ([`CliError`]).
//!
//! Owns these shared pieces only; it must never know a command, its
//! arguments or how it runs.

use std::path::PathBuf;

use partnergate_policy::suite;

/// The schema of the shipped pack, used when neither `--policies` nor
/// `--schema` is given.
pub const DEFAULT_SCHEMA: &str = partnergate_server::defaults::SCHEMA;
/// The shipped policy directory.
pub const DEFAULT_POLICIES: &str = partnergate_server::defaults::POLICIES;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_DENY: u8 = 2;
pub const EXIT_INVALID: u8 = 3;

/// Errors of the CLI's own (files it cannot read or write).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error(transparent)]
    Suite(#[from] suite::SuiteError),
}
