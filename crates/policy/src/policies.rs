//! Loading a policy pack: Cedar policy files plus a Cedar schema, parsed with
//! file names in every error, re-identified by their `@id` annotation,
//! validated strictly, and fingerprinted with a content-hash version.
//!
//! This module owns the [`PolicyPack`] type that every decision is made
//! against. It does no watching and knows nothing about HTTP: the reloader
//! and the CLI both call [`load`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::{Diagnostic, NamedSource};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::prescan::{self, PackLimits};
pub use crate::problem::{line_col, Problem};

/// Where a policy came from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The policy id: its `@id` annotation, or Cedar's default `policyN`.
    pub id: String,
    /// The one-line `@description` annotation, if any.
    pub description: Option<String>,
    /// `permit` or `forbid`.
    pub effect: String,
    /// The file the policy was read from.
    pub file: PathBuf,
    /// 1-based line of the policy's first character in `file`.
    pub line: usize,
}

/// A parsed, strictly validated set of policies with its schema.
#[derive(Debug, Clone)]
pub struct PolicyPack {
    /// Every policy of the pack, under its `@id` (else `policyN`).
    pub policy_set: PolicySet,
    /// The schema the policies were validated against; `None` when the pack has none (nothing was validated).
    pub schema: Option<Schema>,
    /// Content hash of the policy files and the schema, `sha256:` + 16 hex digits.
    pub version: String,
    /// The files read, in load order (policy files, then the schema).
    pub files: Vec<PathBuf>,
    /// The schema file the pack was loaded with, by its role (never look for
    /// it by its position in `files`).
    pub schema_file: Option<PathBuf>,
    /// Policies in load order.
    pub policies: Vec<PolicyInfo>,
    /// Validation warnings, rendered (only when a schema was given).
    pub warnings: Vec<Problem>,
    index: HashMap<String, usize>,
    /// For each action of the schema: its entity and its ancestors' entities
    /// (what a decision needs to evaluate `action in ...`).
    actions: HashMap<EntityUid, Vec<Entity>>,
    /// The same entities as Cedar entity JSON texts (for decision logs).
    action_texts: HashMap<EntityUid, Box<[Arc<str>]>>,
    /// Values the reload gates built from other files of the pack (e.g. the
    /// quotas): part of this snapshot, so they serve with these policies
    /// and are replaced only with them.
    extensions: Vec<Extension>,
    /// The index of `policy_set`, built with it (so per pack version).
    policy_index: std::sync::Arc<crate::index::PolicyIndex>,
    /// The clock: the actions whose context declares [`CLOCK_ATTRIBUTE`]
    /// and whether the policies use the time only in comparisons.
    clock: Clock,
}

/// The reserved context attribute that carries the current time (a Cedar
/// `datetime`). The decision path supplies it to every action whose
/// context declares it; a caller never does.
pub const CLOCK_ATTRIBUTE: &str = "now";

/// What a pack says about time: which actions take the clock, and whether
/// a decision can depend on the time only by comparing it (no datetime or
/// duration literals, no arithmetic in any policy), so that a decision
/// holds until the next datetime value of its entities or context.
#[derive(Debug, Clone, Default)]
struct Clock {
    actions: std::collections::HashSet<EntityUid>,
    compared_only: bool,
}

/// A value a reload gate adds to the pack it accepted (any type; looked up
/// by type with [`PolicyPack::extension`]).
pub type Extension = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl PolicyPack {
    /// The extension of type `T` a gate added, if any.
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<std::sync::Arc<T>> {
        self.extensions
            .iter()
            .find_map(|e| e.clone().downcast::<T>().ok())
    }

    /// Add a gate's value (replacing one of the same type).
    pub fn add_extension(&mut self, value: Extension) {
        let id = (*value).type_id();
        self.extensions.retain(|e| (**e).type_id() != id);
        self.extensions.push(value);
    }

    /// Metadata of one policy by id.
    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.index.get(id).map(|&i| &self.policies[i])
    }

    /// The description of a policy, if it has one.
    pub fn description(&self, id: &str) -> Option<&str> {
        self.policy(id).and_then(|p| p.description.as_deref())
    }

    /// The index of [`PolicyPack::policy_set`], built when the pack loaded.
    pub fn policy_index(&self) -> &crate::index::PolicyIndex {
        &self.policy_index
    }

    /// Whether the action's context declares the clock ([`CLOCK_ATTRIBUTE`]).
    pub fn takes_clock(&self, action: &EntityUid) -> bool {
        self.clock.actions.contains(action)
    }

    /// Whether the policies use datetimes only in comparisons: no
    /// `datetime(..)`/`duration(..)` literal and no datetime arithmetic
    /// (`offset`, `durationSince`, `toDate`, `toTime`, ...) in any policy
    /// text. Then a decision taken at time `t` is the same at every later
    /// time before the first datetime value of its entities and context
    /// that is `>= t`; otherwise a clocked decision holds only at `t`.
    pub fn time_compared_only(&self) -> bool {
        self.clock.compared_only
    }

    /// The action entity and its ancestors, from the schema (empty without one).
    pub fn action_entities(&self, action: &EntityUid) -> &[Entity] {
        self.actions.get(action).map_or(&[], Vec::as_slice)
    }

    /// [`PolicyPack::action_entities`] as Cedar entity JSON texts, made once
    /// per pack (schema action entities hold no attributes: they always
    /// serialise).
    pub fn action_entities_json(&self, action: &EntityUid) -> &[Arc<str>] {
        self.action_texts.get(action).map_or(&[], |t| t)
    }
}

fn action_closure(schema: &Schema) -> HashMap<EntityUid, Vec<Entity>> {
    let mut out = HashMap::new();
    let Ok(all) = schema.action_entities() else {
        return out;
    };
    for e in all.iter() {
        let (uid, _, ancestors) = e.clone().into_inner();
        let mut v = vec![e.clone()];
        v.extend(ancestors.iter().filter_map(|a| all.get(a).cloned()));
        out.insert(uid, v);
    }
    out
}

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
    /// A file over a limit of [`PackLimits`], refused before parsing.
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

/// Load, re-identify and strictly validate a policy pack.
///
/// Every file is first held against the source's [`PackLimits`] (size,
/// nesting depth, policy count; see [`crate::prescan`]), so Cedar never
/// sees a text that could exhaust the stack or the memory. Cedar's work
/// runs on the caller's thread: call it from a thread with
/// [`crate::prescan::POLICY_THREAD_STACK`] (the reload thread, the CLI and
/// the sidecar's runtime are).
pub fn load(source: &PackSource) -> Result<PolicyPack, LoadError> {
    let files = policy_files(&source.policies)?;
    let mut hasher = Sha256::new();
    let texts = read_policy_texts(&files, &source.limits, &mut hasher)?;
    let (schema, clock_actions) = read_pack_schema(source, &mut hasher)?;
    let identified = identify_policies(&files, &texts)?;
    let warnings = match &schema {
        Some(schema) => validate_strictly(schema, &identified, &texts)?,
        None => Vec::new(),
    };
    let mut all_files = files;
    if let Some(s) = &source.schema {
        all_files.push(s.clone());
    }
    let digest = hasher.finalize();
    let actions = schema.as_ref().map(action_closure).unwrap_or_default();
    let action_texts = actions
        .iter()
        .map(|(uid, entities)| {
            let texts = entities
                .iter()
                .filter_map(|e| e.to_json_value().ok())
                .map(|v| Arc::from(v.to_string()))
                .collect();
            (uid.clone(), texts)
        })
        .collect();
    let policy_index = std::sync::Arc::new(crate::index::PolicyIndex::new(&identified.policy_set));
    let clock = Clock {
        actions: clock_actions,
        compared_only: !texts.iter().any(|t| uses_time_arithmetic(t)),
    };
    Ok(PolicyPack {
        clock,
        policy_index,
        extensions: Vec::new(),
        actions,
        action_texts,
        policy_set: identified.policy_set,
        schema,
        version: format!("sha256:{}", &hex::encode(digest)[..16]),
        files: all_files,
        schema_file: source.schema.clone(),
        policies: identified.policies,
        warnings,
        index: identified.index,
    })
}

/// Read every policy file held against the limits (the policy count across
/// files included), feeding names and texts to the version hash.
fn read_policy_texts(
    files: &[PathBuf],
    limits: &PackLimits,
    hasher: &mut Sha256,
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
        hasher.update(
            f.file_name()
                .map_or(&b""[..], std::ffi::OsStr::as_encoded_bytes),
        );
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        texts.push(text);
    }
    Ok(texts)
}

/// Read and parse the source's schema, if any, held against the limits and
/// fed to the version hash.
fn read_pack_schema(
    source: &PackSource,
    hasher: &mut Sha256,
) -> Result<(Option<Schema>, std::collections::HashSet<EntityUid>), LoadError> {
    let Some(path) = &source.schema else {
        return Ok((None, Default::default()));
    };
    let (text, _) = read_checked(path, &source.limits)?;
    hasher.update(b"schema\0");
    hasher.update(text.as_bytes());
    let schema = parse_schema(path, &text)?;
    Ok((Some(schema), clock_actions(path, &text)))
}

/// The actions whose context record declares [`CLOCK_ATTRIBUTE`] (directly
/// or through a common type), read from the schema's JSON form. A schema
/// that parsed as a [`Schema`] parses as a fragment too; if it did not,
/// no action takes the clock (and the policies' `context has now` is false).
fn clock_actions(path: &Path, text: &str) -> std::collections::HashSet<EntityUid> {
    let is_json = path.extension().is_some_and(|e| e == "json");
    let json = if is_json {
        serde_json::from_str(text).ok()
    } else {
        cedar_policy::SchemaFragment::from_cedarschema_str(text)
            .ok()
            .and_then(|(f, _)| f.to_json_value().ok())
    };
    let mut out = std::collections::HashSet::new();
    let Some(serde_json::Value::Object(namespaces)) = json else {
        return out;
    };
    for (ns, body) in &namespaces {
        let common = body.get("commonTypes");
        let Some(actions) = body.get("actions").and_then(|a| a.as_object()) else {
            continue;
        };
        for (name, action) in actions {
            let Some(mut ctx) = action.pointer("/appliesTo/context") else {
                continue;
            };
            // A reference to a common type: `{"type": "T"}` or
            // `{"type": "EntityOrCommon", "name": "T"}`.
            let named = ctx
                .get("name")
                .or_else(|| ctx.get("type").filter(|t| *t != "Record"))
                .and_then(|n| n.as_str());
            if let Some(t) = named.and_then(|n| common.and_then(|c| c.get(n))) {
                ctx = t;
            }
            if ctx
                .pointer(&format!("/attributes/{CLOCK_ATTRIBUTE}"))
                .is_none()
            {
                continue;
            }
            let ty = if ns.is_empty() {
                "Action".to_string()
            } else {
                format!("{ns}::Action")
            };
            let uid = serde_json::json!({"type": ty, "id": name});
            if let Ok(uid) = EntityUid::from_json(uid) {
                out.insert(uid);
            }
        }
    }
    out
}

/// Whether a policy text may compute with times (see
/// [`PolicyPack::time_compared_only`]); conservative: a comment that names
/// one of these functions counts too.
fn uses_time_arithmetic(text: &str) -> bool {
    const CALLS: [&str; 11] = [
        "datetime(",
        "duration(",
        "offset(",
        "durationSince(",
        "toDate(",
        "toTime(",
        "toDays(",
        "toHours(",
        "toMinutes(",
        "toSeconds(",
        "toMilliseconds(",
    ];
    CALLS.iter().any(|c| text.contains(c))
}

/// The pack's policies under their `@id`s, and where each came from.
struct Identified {
    policy_set: PolicySet,
    policies: Vec<PolicyInfo>,
    index: HashMap<String, usize>,
    /// Each id's file and the index of its text.
    texts_by_id: HashMap<String, (PathBuf, usize)>,
}

/// Parse every file and re-identify each policy by `@id` (else Cedar's
/// `policyN`, counted across files); a duplicate id names both files.
fn identify_policies(files: &[PathBuf], texts: &[String]) -> Result<Identified, LoadError> {
    let mut out = Identified {
        policy_set: PolicySet::new(),
        policies: Vec::new(),
        index: HashMap::new(),
        texts_by_id: HashMap::new(),
    };
    let mut default_counter = 0usize;
    for (file_idx, (file, text)) in files.iter().zip(texts).enumerate() {
        let mut lines = LineFinder::new(text);
        for policy in parse_policy_file(file, text)? {
            let id = match policy.annotation("id") {
                Some(id) => id.to_string(),
                None => format!("policy{default_counter}"),
            };
            default_counter += 1;
            if let Some(&i) = out.index.get(&id) {
                return Err(LoadError::DuplicateId {
                    id,
                    first: out.policies[i].file.clone(),
                    second: file.clone(),
                });
            }
            let line = lines.policy_line(&policy);
            let info = PolicyInfo {
                id: id.clone(),
                description: policy.annotation("description").map(str::to_string),
                effect: policy.effect().to_string(),
                file: file.clone(),
                line,
            };
            let renamed = policy.new_id(PolicyId::new(&id));
            out.policy_set.add(renamed).map_err(|e| LoadError::Parse {
                file: file.clone(),
                problems: vec![plain_problem(file, &e.to_string())],
            })?;
            out.index.insert(id.clone(), out.policies.len());
            out.texts_by_id.insert(id, (file.clone(), file_idx));
            out.policies.push(info);
        }
    }
    Ok(out)
}

/// One file's static policies in text order (templates are refused).
fn parse_policy_file(file: &Path, text: &str) -> Result<Vec<cedar_policy::Policy>, LoadError> {
    let parsed = PolicySet::from_str(text).map_err(|e| LoadError::Parse {
        file: file.to_path_buf(),
        problems: problems_from(&e, file, text, None),
    })?;
    // Cedar names the policies of one text policy0, policy1, ... in order.
    let mut in_file: BTreeMap<usize, cedar_policy::Policy> = BTreeMap::new();
    for p in parsed.policies() {
        let n = AsRef::<str>::as_ref(p.id())
            .strip_prefix("policy")
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        in_file.insert(n, p.clone());
    }
    if parsed.templates().next().is_some() {
        return Err(LoadError::Parse {
            file: file.to_path_buf(),
            problems: vec![plain_problem(
                file,
                "policy templates are not supported; write static policies",
            )],
        });
    }
    Ok(in_file.into_values().collect())
}

/// Strict validation against the schema: the errors reject the pack; the
/// warnings are returned. Each problem is located in its policy's file.
fn validate_strictly(
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

/// Read and parse a schema file on its own (`.json` is Cedar's JSON schema
/// format; anything else the human-readable format).
pub fn load_schema(path: &Path) -> Result<Schema, LoadError> {
    let (text, _) = read_checked(path, &PackLimits::default())?;
    parse_schema(path, &text)
}

fn parse_schema(path: &Path, text: &str) -> Result<Schema, LoadError> {
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

fn plain_problem(file: &Path, message: &str) -> Problem {
    Problem {
        file: Some(file.to_path_buf()),
        line: None,
        column: None,
        policy_id: None,
        message: message.to_string(),
        rendered: format!("{}: {message}", file.display()),
    }
}

/// 1-based line of a policy's first character in its source text.
/// Finds the line of each policy of one file, in file order, in linear
/// time overall (a pack of 10,000 policies in one file loads in
/// milliseconds, not minutes): the search for the next policy starts after
/// the previous one, and lines come from a table of line starts.
struct LineFinder<'a> {
    text: &'a str,
    newlines: Vec<usize>,
    cursor: usize,
}

impl<'a> LineFinder<'a> {
    fn new(text: &'a str) -> Self {
        LineFinder {
            text,
            newlines: text.match_indices('\n').map(|(i, _)| i).collect(),
            cursor: 0,
        }
    }

    /// The 1-based line of `policy`: its `@id` annotation, else the first
    /// line of its (verbatim) text; 1 if not found. The policy's own source
    /// span is not public in cedar-policy.
    fn policy_line(&mut self, policy: &cedar_policy::Policy) -> usize {
        let needle = match policy.annotation("id") {
            Some(id) => format!("@id(\"{id}\")"),
            None => policy.to_string().lines().next().unwrap_or("").to_string(),
        };
        let found = self.text[self.cursor..]
            .find(&needle)
            .map(|off| self.cursor + off)
            .or_else(|| self.text.find(&needle));
        match found {
            Some(off) => {
                self.cursor = off + needle.len();
                self.newlines.partition_point(|&n| n < off) + 1
            }
            None => 1,
        }
    }
}

/// Flatten a Cedar diagnostic (possibly with related diagnostics) into
/// located problems against `file`/`text`.
pub fn problems_from(
    diag: &dyn Diagnostic,
    file: &Path,
    text: &str,
    policy_id: Option<&str>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let related: Vec<&dyn Diagnostic> = diag.related().map(|r| r.collect()).unwrap_or_default();
    let diags: Vec<&dyn Diagnostic> = if related.is_empty() {
        vec![diag]
    } else {
        related
    };
    for d in diags {
        let offset = d
            .labels()
            .and_then(|mut l| l.next())
            .map(|l| l.offset())
            .filter(|&o| o <= text.len());
        let (line, column) = match offset {
            Some(o) => {
                let (l, c) = line_col(text, o);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let message = diagnostic_message(d);
        let rendered = render_with_source(d, file, text);
        out.push(Problem {
            file: Some(file.to_path_buf()),
            line,
            column,
            policy_id: policy_id.map(str::to_string),
            message,
            rendered,
        });
    }
    out
}

fn problems_from_unlocated(diag: &dyn Diagnostic, policy_id: Option<&str>) -> Vec<Problem> {
    let message = diagnostic_message(diag);
    vec![Problem {
        file: None,
        line: None,
        column: None,
        policy_id: policy_id.map(str::to_string),
        rendered: message.clone(),
        message,
    }]
}

fn diagnostic_message(d: &dyn Diagnostic) -> String {
    match d.help() {
        Some(help) => format!("{d} (help: {help})"),
        None => d.to_string(),
    }
}

/// Render a diagnostic with miette's graphical handler (no colours), using
/// `text` named `file` as its source so the output shows `file:line:col`.
pub fn render_with_source(d: &dyn Diagnostic, file: &Path, text: &str) -> String {
    let named = NamedSource::new(file.display().to_string(), text.to_string());
    let wrapped = Rendered {
        inner: d,
        src: named,
    };
    let mut out = String::new();
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    if handler.render_report(&mut out, &wrapped).is_err() {
        return d.to_string();
    }
    out
}

/// A diagnostic re-homed onto a named source (Cedar's own spans carry the
/// source text but not the file name).
struct Rendered<'a> {
    inner: &'a dyn Diagnostic,
    src: NamedSource<String>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}
impl std::error::Error for Rendered<'_> {}
impl Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.inner.help()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.inner.labels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_pack_is_far_below_the_default_limit() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = policy_files(&root.join("policies")).unwrap();
        files.push(root.join("schemas/partnergate.cedarschema"));
        let depth = |text: &str| {
            prescan::scan(Path::new("t.cedar"), text, usize::MAX)
                .unwrap()
                .depth
        };
        let deepest = files
            .iter()
            .map(|f| depth(&std::fs::read_to_string(f).unwrap()))
            .max()
            .unwrap();
        println!("deepest nesting of the shipped pack: {deepest}");
        assert!(deepest * 4 <= prescan::DEFAULT_MAX_NESTING, "{deepest}");
    }

    #[test]
    fn each_policy_gets_its_own_line_also_without_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let text = "// a comment\n@id(\"a\")\npermit (principal, action, resource);\n\n\
                    permit (principal, action, resource);\n\
                    @id(\"b\")\nforbid (principal, action, resource);\n\
                    permit (principal, action, resource);\n";
        std::fs::write(dir.path().join("p.cedar"), text).unwrap();
        let pack = load(&PackSource::new(dir.path(), None)).unwrap();
        let lines: Vec<(String, usize)> = pack
            .policies
            .iter()
            .map(|p| (p.id.clone(), p.line))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("a".to_string(), 2),
                // An unannotated policy is found by its first line, from
                // the previous policy's annotation on: here that is the
                // text of policy `a` (as before this search was linear).
                ("policy1".to_string(), 3),
                ("b".to_string(), 6),
                ("policy3".to_string(), 8),
            ]
        );
    }
}
