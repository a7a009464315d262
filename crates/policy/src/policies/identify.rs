//! Policy ids: every policy file parsed (static policies only, in text
//! order), each policy re-identified by its `@id` annotation (else Cedar's
//! `policyN`, counted across files) and located by line; a duplicate id is
//! an error naming both files.
//!
//! Owns the ids and where each policy came from; it must never know the
//! schema, validation or how files are read.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet};

use super::diagnostics::{plain_problem, problems_from};
use super::error::LoadError;
use super::pack::PolicyInfo;

/// The pack's policies under their `@id`s, and where each came from.
pub(super) struct Identified {
    pub(super) policy_set: PolicySet,
    pub(super) policies: Vec<PolicyInfo>,
    pub(super) index: HashMap<String, usize>,
    /// Each id's file and the index of its text.
    pub(super) texts_by_id: HashMap<String, (PathBuf, usize)>,
}

/// Parse every file and re-identify each policy by `@id` (else Cedar's
/// `policyN`, counted across files); a duplicate id names both files.
pub(super) fn identify_policies(
    files: &[PathBuf],
    texts: &[String],
) -> Result<Identified, LoadError> {
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
