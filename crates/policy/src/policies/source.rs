//! What to load: [`PackSource`] (the policy path, the schema, the limits),
//! the policy files a path names ([`policy_files`]) and the schema found
//! beside policies whose schema was not named ([`find_schema`]).
//!
//! Owns where a pack's files are; it must never read or parse them.

use std::path::{Path, PathBuf};

use super::error::LoadError;
use crate::prescan::PackLimits;

/// What to load.
#[derive(Debug, Clone)]
pub struct PackSource {
    /// A directory of `.cedar` files (read in sorted order) or one file.
    pub policies: PathBuf,
    /// A Cedar schema (`.cedarschema` human format, or `.json`). Without one
    /// nothing is validated.
    pub schema: Option<PathBuf>,
    /// Sizes and nesting refused before parsing.
    pub limits: PackLimits,
}

impl PackSource {
    /// A source with the default [`PackLimits`].
    pub fn new(policies: impl Into<PathBuf>, schema: Option<PathBuf>) -> Self {
        PackSource {
            policies: policies.into(),
            schema,
            limits: PackLimits::default(),
        }
    }

    /// The same source with other limits.
    #[must_use]
    pub fn with_limits(mut self, limits: PackLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// Where [`find_schema`] looked, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaSearch {
    /// Exactly one schema file.
    Found(PathBuf),
    /// No schema file in any of these directories.
    NotFound {
        /// The directories searched, in search order.
        looked_in: Vec<PathBuf>,
    },
    /// Several schema files in the first directory that has any.
    Ambiguous(Vec<PathBuf>),
}

/// The schema of a pack whose schema was not named: the one `*.cedarschema`
/// (or `*.cedarschema.json`) file in the policy directory, else in
/// `schemas/` beside it (for one policy file: in its directory, its
/// `schemas/`, then `schemas/` beside its directory).
pub fn find_schema(policies: &Path) -> SchemaSearch {
    let (dir, file_given) = if policies.is_file() {
        (
            policies.parent().unwrap_or(Path::new(".")).to_path_buf(),
            true,
        )
    } else {
        (policies.to_path_buf(), false)
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let mut looked_in = vec![dir.clone()];
    if file_given {
        looked_in.push(dir.join("schemas"));
    }
    let beside = std::path::absolute(&dir)
        .ok()
        .and_then(|d| d.parent().map(|p| p.join("schemas")));
    looked_in.extend(beside);
    for d in &looked_in {
        let mut found: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file()
                            && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                                n.ends_with(".cedarschema") || n.ends_with(".cedarschema.json")
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        match found.len() {
            0 => {}
            1 => return SchemaSearch::Found(found.swap_remove(0)),
            _ => return SchemaSearch::Ambiguous(found),
        }
    }
    SchemaSearch::NotFound { looked_in }
}

/// The policy files a source names: one file, or every `.cedar` file directly
/// in a directory, sorted by name.
pub fn policy_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "cedar") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(LoadError::NoPolicies(path.to_path_buf()));
    }
    Ok(files)
}
