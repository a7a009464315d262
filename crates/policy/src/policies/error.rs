//! Why a pack could not be loaded: [`LoadError`], each variant naming the
//! file concerned, with its structured problems and their human rendering.
//!
//! Owns the error type only; it must never know how a pack is read,
//! parsed or validated.

use std::path::PathBuf;

use crate::problem::Problem;

/// Why a pack could not be loaded. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A policy file, the schema or the policy directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The policy path holds no `.cedar` file.
    #[error("no .cedar policy files in {0}")]
    NoPolicies(PathBuf),
    /// A policy file does not parse as Cedar.
    #[error("{} parse error(s) in {}", .problems.len(), .file.display())]
    Parse {
        /// The policy file that does not parse.
        file: PathBuf,
        /// Each parse error, located in `file`.
        problems: Vec<Problem>,
    },
    /// Two policies carry the same id (`@id`, or a clash with a default `policyN`).
    #[error("the policy id `{id}` is used twice: in {} and in {}", .first.display(), .second.display())]
    DuplicateId {
        /// The id used twice.
        id: String,
        /// The file of its first use, in load order.
        first: PathBuf,
        /// The file of its second use.
        second: PathBuf,
    },
    /// The schema does not parse or is not a valid Cedar schema.
    #[error("schema {}: {}", .file.display(), .problem.message)]
    Schema {
        /// The schema file.
        file: PathBuf,
        /// What is wrong with it, located where Cedar says.
        problem: Box<Problem>,
    },
    /// The policies parse but fail strict validation against the schema.
    #[error("strict validation failed with {} error(s)", .problems.len())]
    Validation {
        /// Each validation error, located in its policy file.
        problems: Vec<Problem>,
    },
    /// A reload gate refused the otherwise valid pack; the pack serving stays.
    #[error("rejected by a reload gate with {} problem(s) (e.g. a violated invariant)", .problems.len())]
    Rejected {
        /// The gate's reasons.
        problems: Vec<Problem>,
    },
    /// A file over a limit of [`PackLimits`](crate::prescan::PackLimits), refused before parsing.
    #[error("{} was refused before parsing: it is over a limit of the pack", .file.display())]
    Limit {
        /// The file refused.
        file: PathBuf,
        /// The limit it is over, and by how much.
        problem: Box<Problem>,
    },
}

impl LoadError {
    /// The structured problems behind this error (at least one).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            LoadError::Parse { problems, .. }
            | LoadError::Validation { problems }
            | LoadError::Rejected { problems } => problems.clone(),
            LoadError::Schema { problem, .. } | LoadError::Limit { problem, .. } => {
                vec![(**problem).clone()]
            }
            other => {
                let file = match other {
                    LoadError::Io { path, .. } => Some(path.clone()),
                    LoadError::NoPolicies(p) => Some(p.clone()),
                    LoadError::DuplicateId { second, .. } => Some(second.clone()),
                    _ => None,
                };
                let message = other.to_string();
                vec![Problem {
                    file,
                    line: None,
                    column: None,
                    policy_id: None,
                    rendered: message.clone(),
                    message,
                }]
            }
        }
    }

    /// Human rendering of every problem, with source excerpts where known.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            LoadError::Parse { .. }
            | LoadError::Validation { .. }
            | LoadError::Rejected { .. }
            | LoadError::Limit { .. }
            | LoadError::Schema { .. } => {
                for p in self.problems() {
                    out.push_str(&p.rendered);
                    out.push('\n');
                }
                out.push_str(&format!("error: {self}\n"));
            }
            _ => out.push_str(&format!("error: {self}\n")),
        }
        out
    }
}
