//! Reading a pack's files: each policy or schema file held against the
//! [`PackLimits`] (size first, then nesting; the policy count across
//! files) before Cedar parses it, and fed to the pack's version.
//!
//! Owns the limits as applied to files; it must never parse Cedar.

use std::path::{Path, PathBuf};

use super::diagnostics::plain_problem;
use super::error::LoadError;
use super::version::PackVersion;
use crate::prescan::{self, PackLimits};

/// Read every policy file held against the limits (the policy count across
/// files included), feeding names and texts to the version.
pub(super) fn read_policy_texts(
    files: &[PathBuf],
    limits: &PackLimits,
    version: &mut PackVersion,
) -> Result<Vec<String>, LoadError> {
    let mut texts = Vec::with_capacity(files.len());
    let mut policy_count = 0usize;
    for f in files {
        let (text, scan) = read_checked(f, limits)?;
        policy_count += scan.policies;
        if policy_count > limits.max_policies {
            let message = format!(
                "the pack holds more than {} policies (counted up to this file); \
                 the limit is {} (--max-policies)",
                policy_count - 1,
                limits.max_policies
            );
            return Err(LoadError::Limit {
                file: f.clone(),
                problem: Box::new(plain_problem(f, &message)),
            });
        }
        version.policy_file(f, &text);
        texts.push(text);
    }
    Ok(texts)
}

/// Read a policy or schema file and hold it against `limits` (size first,
/// then nesting): what every reader of pack files calls before Cedar parses.
pub fn read_checked(
    path: &Path,
    limits: &PackLimits,
) -> Result<(String, prescan::Scan), LoadError> {
    let text = prescan::read_limited(path, limits.max_file_bytes).map_err(|e| match e {
        prescan::ReadError::Io(source) => LoadError::Io {
            path: path.to_path_buf(),
            source,
        },
        too_large @ prescan::ReadError::TooLarge { .. } => LoadError::Limit {
            file: path.to_path_buf(),
            problem: Box::new(plain_problem(path, &too_large.to_string())),
        },
    })?;
    let scan =
        prescan::scan(path, &text, limits.max_nesting).map_err(|problem| LoadError::Limit {
            file: path.to_path_buf(),
            problem,
        })?;
    Ok((text, scan))
}
