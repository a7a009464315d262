//! A pack's schema: read under the limits, parsed (Cedar's JSON format for
//! `.json`, else the human-readable one) with its problems located.
//!
//! Owns parsing a schema; it must never know the policies.

use std::path::{Path, PathBuf};

use cedar_policy::Schema;

use super::diagnostics::{plain_problem, problems_from};
use super::error::LoadError;
use super::read::read_checked;
use super::source::PackSource;
use super::version::PackVersion;
use crate::prescan::PackLimits;
use crate::problem::Problem;

/// Read the source's schema text, if any, held against the limits and
/// fed to the version (parsing is [`parse_schema`]'s, through the cache).
pub(super) fn read_pack_schema(
    source: &PackSource,
    version: &mut PackVersion,
) -> Result<Option<(PathBuf, String)>, LoadError> {
    let Some(path) = &source.schema else {
        return Ok(None);
    };
    let (text, _) = read_checked(path, &source.limits)?;
    version.schema(&text);
    Ok(Some((path.clone(), text)))
}

/// Read and parse a schema file on its own (`.json` is Cedar's JSON schema
/// format; anything else the human-readable format).
pub fn load_schema(path: &Path) -> Result<Schema, LoadError> {
    let (text, _) = read_checked(path, &PackLimits::default())?;
    parse_schema(path, &text)
}

pub(super) fn parse_schema(path: &Path, text: &str) -> Result<Schema, LoadError> {
    let is_json = path.extension().is_some_and(|e| e == "json");
    let result = if is_json {
        match serde_json::from_str(text) {
            Ok(v) => Schema::from_json_value(v).map_err(|e| problems_from(&e, path, text, None)),
            Err(e) => Err(vec![Problem {
                file: Some(path.to_path_buf()),
                line: Some(e.line()),
                column: Some(e.column()),
                policy_id: None,
                message: e.to_string(),
                rendered: format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()),
            }]),
        }
    } else {
        Schema::from_cedarschema_str(text)
            .map(|(s, _warnings)| s)
            .map_err(|e| problems_from(&e, path, text, None))
    };
    result.map_err(|mut problems| LoadError::Schema {
        file: path.to_path_buf(),
        problem: Box::new(if problems.is_empty() {
            plain_problem(path, "invalid schema")
        } else {
            problems.swap_remove(0)
        }),
    })
}
