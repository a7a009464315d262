//! Strict validation of a pack's policies against its schema: errors
//! reject the pack, warnings are kept; each problem is located in its
//! policy's file.
//!
//! Owns the validation step; it must never read files or assign ids.

use cedar_policy::{Schema, ValidationMode, Validator};
use miette::Diagnostic;

use super::diagnostics::{problems_from, problems_from_unlocated};
use super::error::LoadError;
use super::identify::Identified;
use crate::problem::Problem;

/// Strict validation against the schema: the errors reject the pack; the
/// warnings are returned. Each problem is located in its policy's file.
pub(super) fn validate_strictly(
    schema: &Schema,
    identified: &Identified,
    texts: &[String],
) -> Result<Vec<Problem>, LoadError> {
    let result =
        Validator::new(schema.clone()).validate(&identified.policy_set, ValidationMode::Strict);
    // A diagnostic of policy `id`, located in that policy's file.
    let located = |diag: &dyn Diagnostic, id: String| match identified.texts_by_id.get(&id) {
        Some((f, i)) => problems_from(diag, f, &texts[*i], Some(&id)),
        None => problems_from_unlocated(diag, Some(&id)),
    };
    let errors: Vec<Problem> = result
        .validation_errors()
        .flat_map(|e| located(e, e.policy_id().to_string()))
        .collect();
    let warnings = result
        .validation_warnings()
        .flat_map(|w| located(w, w.policy_id().to_string()))
        .collect();
    if !errors.is_empty() {
        return Err(LoadError::Validation { problems: errors });
    }
    Ok(warnings)
}
