//! Strict validation of a pack's policies against its schema, one file at
//! a time: errors reject the pack, warnings are kept; each problem is
//! located in its policy's file.
//!
//! Cedar validates each policy on its own against the schema (no check
//! spans two policies), so a file's result does not depend on the other
//! files: a reload validates only the files that changed. Over a whole set
//! Cedar lists every policy's errors in set order, and its warnings as the
//! type checker's for every policy, then the string checks' for every
//! policy; [`Checked`] keeps the two kinds apart so the pack lists them in
//! that same order.
//!
//! Owns the validation step; it must never read files or assign ids.

use std::path::Path;

use cedar_policy::{PolicySet, ValidationMode, ValidationWarning, Validator};

use super::diagnostics::{plain_problem, problems_from};
use super::error::LoadError;
use super::identify::FileIds;
use crate::problem::Problem;

/// One file's validation: its errors, and its warnings in Cedar's two groups.
#[derive(Debug, Clone, Default)]
pub(super) struct Checked {
    pub(super) errors: Vec<Problem>,
    /// The type checker's warnings (and an action that cannot apply).
    pub(super) warnings: Vec<Problem>,
    /// The string checks' warnings (mixed scripts, bidi characters,
    /// confusable identifiers).
    pub(super) string_warnings: Vec<Problem>,
}

/// Strict validation of one file's policies (under their pack ids)
/// against the schema, each problem located in `file`.
pub(super) fn validate_file(
    validator: &Validator,
    file: &Path,
    text: &str,
    ids: &FileIds,
) -> Result<Checked, LoadError> {
    let mut set = PolicySet::new();
    for p in &ids.policies {
        set.add(p.clone()).map_err(|e| LoadError::Parse {
            file: file.to_path_buf(),
            problems: vec![plain_problem(file, &e.to_string())],
        })?;
    }
    let result = validator.validate(&set, ValidationMode::Strict);
    let mut out = Checked {
        errors: result
            .validation_errors()
            .flat_map(|e| problems_from(e, file, text, Some(e.policy_id().as_ref())))
            .collect(),
        ..Checked::default()
    };
    for w in result.validation_warnings() {
        let problems = problems_from(w, file, text, Some(w.policy_id().as_ref()));
        if is_string_check(w) {
            out.string_warnings.extend(problems);
        } else {
            out.warnings.extend(problems);
        }
    }
    Ok(out)
}

/// Whether Cedar's string checks (run after every policy's type check)
/// raised `w`.
fn is_string_check(w: &ValidationWarning) -> bool {
    matches!(
        w,
        ValidationWarning::MixedScriptString(_)
            | ValidationWarning::BidiCharsInString(_)
            | ValidationWarning::BidiCharsInIdentifier(_)
            | ValidationWarning::MixedScriptIdentifier(_)
            | ValidationWarning::ConfusableIdentifier(_)
    )
}
