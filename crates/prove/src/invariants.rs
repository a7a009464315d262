//! The invariant files: `policies/invariants/*.cedar`, one invariant per
//! file, its kind given by the `@kind` annotation of every policy in it.
//!
//! Owns [`InvariantKind`], [`Invariant`], reading and checking the files
//! ([`load_invariants`]) and where they are by default. It must never know
//! the solver, proof reports or the reload gate.

use std::path::{Path, PathBuf};

use cedar_policy::PolicySet;
use serde::Serialize;

use partnergate_policy::policies::{self, PackSource};

use crate::error::ProveError;

/// What an invariant states about the production policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InvariantKind {
    /// Production never allows more than the invariant set.
    Ceiling,
    /// Production always allows at least what the invariant set allows.
    Floor,
    /// No production policy raises an evaluation error (built in).
    NeverErrors,
    /// Production decides exactly like another policy set (`--equivalent`).
    Equivalent,
}

impl InvariantKind {
    /// The name used in `@kind` annotations and reports (`ceiling`,
    /// `floor`, `never-errors`, `equivalent`).
    pub fn as_str(self) -> &'static str {
        match self {
            InvariantKind::Ceiling => "ceiling",
            InvariantKind::Floor => "floor",
            InvariantKind::NeverErrors => "never-errors",
            InvariantKind::Equivalent => "equivalent",
        }
    }
}

impl std::fmt::Display for InvariantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invariant read from a file: a policy set and what it bounds.
#[derive(Debug, Clone)]
pub struct Invariant {
    /// The file stem, e.g. `partner-never-grants-admin`.
    pub id: String,
    /// What the invariant bounds (`ceiling` or `floor`; every policy of the
    /// file carries the same `@kind`).
    pub kind: InvariantKind,
    /// The `@description` of the file's first policy.
    pub description: Option<String>,
    /// The invariant file it was read from.
    pub file: PathBuf,
    /// The file's policies, re-identified by `@id` like a pack.
    pub policy_set: PolicySet,
}

/// Read the invariants in `dir`: every `.cedar` file directly in it is one
/// invariant, strictly validated against `schema`; every policy in a file
/// carries the same `@kind` ("ceiling" or "floor").
pub fn load_invariants(dir: &Path, schema_file: &Path) -> Result<Vec<Invariant>, ProveError> {
    if !dir.is_dir() {
        return Err(ProveError::NoInvariantsDir(dir.to_path_buf()));
    }
    let files = policies::policy_files(dir).map_err(|source| ProveError::InvariantLoad {
        file: dir.to_path_buf(),
        source: Box::new(source),
    })?;
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let pack = policies::load(&PackSource::new(&file, Some(schema_file.to_path_buf())))
            .map_err(|source| ProveError::InvariantLoad {
                file: file.clone(),
                source: Box::new(source),
            })?;
        let mut kind: Option<InvariantKind> = None;
        for info in &pack.policies {
            let bad = |message: String| ProveError::InvariantKindAnnotation {
                file: file.clone(),
                line: info.line,
                policy: info.id.clone(),
                message,
            };
            let policy = pack
                .policy_set
                .policy(&cedar_policy::PolicyId::new(&info.id))
                .ok_or_else(|| bad("policy vanished while loading".into()))?;
            let this = match policy.annotation("kind") {
                Some("ceiling") => InvariantKind::Ceiling,
                Some("floor") => InvariantKind::Floor,
                Some("never-errors") => {
                    return Err(bad(
                        "`never-errors` is built in and checked for every production policy; \
                         an invariant file is a ceiling or a floor"
                            .into(),
                    ))
                }
                Some(other) => {
                    return Err(bad(format!(
                        "unknown @kind(\"{other}\"): use @kind(\"ceiling\") or @kind(\"floor\")"
                    )))
                }
                None => {
                    return Err(bad(
                        "no @kind annotation: add @kind(\"ceiling\") or @kind(\"floor\")".into(),
                    ))
                }
            };
            match kind {
                None => kind = Some(this),
                Some(k) if k != this => {
                    return Err(bad(format!(
                        "@kind(\"{this}\") differs from @kind(\"{k}\") earlier in the file: \
                         one file is one invariant of one kind"
                    )))
                }
                Some(_) => {}
            }
        }
        let Some(kind) = kind else {
            continue;
        };
        let id = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Invariant {
            id,
            kind,
            description: pack.policies.first().and_then(|p| p.description.clone()),
            file,
            policy_set: pack.policy_set,
        });
    }
    Ok(out)
}

/// `<policies>/invariants` for a policy directory, `invariants/` beside a
/// single policy file.
pub fn default_invariants_dir(policies: &Path) -> PathBuf {
    if policies.is_file() {
        policies
            .parent()
            .unwrap_or(Path::new("."))
            .join("invariants")
    } else {
        policies.join("invariants")
    }
}
