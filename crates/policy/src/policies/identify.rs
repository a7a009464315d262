//! Policy ids, one file at a time: a policy file parsed (static policies
//! only, in text order), each policy re-identified by its `@id` annotation
//! (else Cedar's `policyN`, counted across files: the caller says where the
//! file's count starts) and located by line.
//!
//! Owns the ids and where each policy came from; it must never know the
//! schema, validation, how files are read or which were read before.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet};

use super::diagnostics::{plain_problem, problems_from};
use super::error::LoadError;
use super::pack::PolicyInfo;

/// One file's static policies as Cedar parsed them (its own `policyN`
/// ids), in text order.
pub(super) struct Parsed {
    pub(super) policies: Vec<cedar_policy::Policy>,
    /// Whether some policy has no `@id`: its id then depends on how many
    /// policies the files before this one hold.
    pub(super) numbered: bool,
}

/// One file's policies under their pack ids, and where each is.
pub(super) struct FileIds {
    pub(super) policies: Vec<cedar_policy::Policy>,
    pub(super) infos: Vec<PolicyInfo>,
}

/// Re-identify one file's policies by `@id` (else Cedar's `policyN`, N
/// counted across files from `first_number`, the number of policies the
/// files before it hold) and locate each by line. Duplicates are the
/// caller's (they span files).
pub(super) fn identify_file(
    file: &Path,
    text: &str,
    parsed: &Parsed,
    first_number: usize,
) -> FileIds {
    let mut lines = LineFinder::new(text);
    let mut out = FileIds {
        policies: Vec::with_capacity(parsed.policies.len()),
        infos: Vec::with_capacity(parsed.policies.len()),
    };
    for (n, policy) in parsed.policies.iter().enumerate() {
        let id = match policy.annotation("id") {
            Some(id) => id.to_string(),
            None => format!("policy{}", first_number + n),
        };
        let line = lines.policy_line(policy);
        out.infos.push(PolicyInfo {
            description: policy.annotation("description").map(str::to_string),
            effect: policy.effect().to_string(),
            file: file.to_path_buf(),
            line,
            id: id.clone(),
        });
        out.policies.push(policy.new_id(PolicyId::new(&id)));
    }
    out
}

/// One file's static policies in text order (templates are refused).
pub(super) fn parse_policy_file(file: &Path, text: &str) -> Result<Parsed, LoadError> {
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
    let policies: Vec<cedar_policy::Policy> = in_file.into_values().collect();
    Ok(Parsed {
        numbered: policies.iter().any(|p| p.annotation("id").is_none()),
        policies,
    })
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
