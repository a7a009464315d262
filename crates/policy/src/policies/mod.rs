//! Loading a policy pack: Cedar policy files plus a Cedar schema, parsed with
//! file names in every error, re-identified by their `@id` annotation,
//! validated strictly, and fingerprinted with a content-hash version.
//!
//! [`load`] runs the steps in order, each in its own file: `source` (which
//! files), `read` (each held against the limits, fed to the `version`),
//! `schema`, `identify` (one file's ids and lines; the numbering across files
//! and the duplicates are here), `validate` (one file at a time), `clock`,
//! and assembles the [`PolicyPack`] (`pack`) every decision is made against;
//! `error` is [`LoadError`], `diagnostics` turns Cedar's diagnostics into
//! [`Problem`]s. [`load_reusing`] runs the same steps, taking each file's
//! parse, ids and validation from a [`LoadCache`] (`cache`) while its text
//! is unchanged: [`load`] is [`load_reusing`] with an empty cache. It does
//! no watching and knows nothing about HTTP: the reloader and the CLI both
//! call it.

mod cache;
mod clock;
mod diagnostics;
mod error;
mod identify;
mod pack;
mod read;
mod schema;
mod source;
mod validate;
mod version;

pub use crate::problem::{line_col, Problem};
pub use cache::LoadCache;
pub use clock::CLOCK_ATTRIBUTE;
pub use diagnostics::{problems_from, render_with_source};
pub use error::LoadError;
pub use pack::{Extension, PolicyInfo, PolicyPack};
pub use read::read_checked;
pub use schema::load_schema;
pub use source::{find_schema, policy_files, PackSource, SchemaSearch};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cache::IdentifiedFile;
use clock::Clock;
use diagnostics::plain_problem;
use read::read_policy_texts;
use schema::read_pack_schema;
use version::PackVersion;

/// Load, re-identify and strictly validate a policy pack.
///
/// Every file is first held against the source's [`PackLimits`](crate::prescan::PackLimits) (size,
/// nesting depth, policy count; see [`crate::prescan`]), so Cedar never
/// sees a text that could exhaust the stack or the memory. Cedar's work
/// runs on the caller's thread: call it from a thread with
/// [`crate::prescan::POLICY_THREAD_STACK`] (the reload thread, the CLI and
/// the sidecar's runtime are).
pub fn load(source: &PackSource) -> Result<PolicyPack, LoadError> {
    load_reusing(source, &mut LoadCache::default())
}

/// [`load`], reusing what earlier loads with the same `cache` made of the
/// files whose text did not change (their parse, ids, index keys and
/// validation; the schema's parse), and keeping what this one makes. Every
/// file is still read and held against the limits, and the pack is
/// assembled and indexed whole: the pack, or the error, is the one [`load`]
/// gives for the same files.
pub fn load_reusing(source: &PackSource, cache: &mut LoadCache) -> Result<PolicyPack, LoadError> {
    let files = policy_files(&source.policies)?;
    cache.begin(&files);
    let mut version = PackVersion::default();
    let texts = read_policy_texts(&files, &source.limits, &mut version)?;
    let schema = match read_pack_schema(source, &mut version)? {
        Some((path, text)) => Some(cache.schema(&path, &text)?),
        None => None,
    };
    let identified = identify_files(&files, texts, cache)?;
    let warnings = match &schema {
        Some(schema) => validate_files(&files, &identified, schema, cache)?,
        None => Vec::new(),
    };
    let (policy_set, policies, index, keys) = assemble(&files, &identified)?;
    let mut all_files = files;
    if let Some(s) = &source.schema {
        all_files.push(s.clone());
    }
    let policy_index = Arc::new(crate::index::PolicyIndex::with_keys(&policy_set, &keys));
    let clock = Clock {
        actions: schema
            .as_ref()
            .map(|s| s.clock_actions.clone())
            .unwrap_or_default(),
        compared_only: !identified.iter().any(|i| i.source().time_arithmetic),
    };
    let (actions, action_texts) = schema
        .as_ref()
        .map(|s| s.actions.clone())
        .unwrap_or_default();
    Ok(PolicyPack {
        clock,
        policy_index,
        extensions: Vec::new(),
        actions,
        action_texts,
        policy_set,
        schema: schema.map(|s| s.schema.clone()),
        version: version.finish(),
        files: all_files,
        schema_file: source.schema.clone(),
        policies,
        warnings,
        index,
    })
}

/// Parse and re-identify every file, in order: each file's `policyN` count
/// starts after the policies of the files before it; a duplicate id names
/// the file of its first use.
fn identify_files(
    files: &[PathBuf],
    texts: Vec<String>,
    cache: &mut LoadCache,
) -> Result<Vec<Arc<IdentifiedFile>>, LoadError> {
    let mut identified: Vec<Arc<IdentifiedFile>> = Vec::with_capacity(files.len());
    let mut first_use: HashMap<String, usize> = HashMap::new();
    let mut number = 0usize;
    for (i, (file, text)) in files.iter().zip(texts).enumerate() {
        let parsed = cache.parsed(file, text)?;
        let ids = cache.identified(file, &parsed, number);
        number += ids.ids.infos.len();
        for info in &ids.ids.infos {
            if let Some(&first) = first_use.get(&info.id) {
                return Err(LoadError::DuplicateId {
                    id: info.id.clone(),
                    first: files[first].clone(),
                    second: file.clone(),
                });
            }
            first_use.insert(info.id.clone(), i);
        }
        identified.push(ids);
    }
    Ok(identified)
}

/// Strict validation, file by file: every file's errors reject the pack;
/// else the warnings, in Cedar's order over the whole set.
fn validate_files(
    files: &[PathBuf],
    identified: &[Arc<IdentifiedFile>],
    schema: &Arc<cache::SchemaEntry>,
    cache: &mut LoadCache,
) -> Result<Vec<Problem>, LoadError> {
    let (mut errors, mut warnings, mut strings) = (Vec::new(), Vec::new(), Vec::new());
    for (file, ids) in files.iter().zip(identified) {
        let c = cache.checked(file, ids, schema)?;
        errors.extend(c.checked.errors.iter().cloned());
        warnings.extend(c.checked.warnings.iter().cloned());
        strings.extend(c.checked.string_warnings.iter().cloned());
    }
    if !errors.is_empty() {
        return Err(LoadError::Validation { problems: errors });
    }
    warnings.extend(strings);
    Ok(warnings)
}

/// The pack's policy set, its policies' infos in order, each id's position
/// and each policy's index key, from the files' identified policies.
type Assembled = (
    cedar_policy::PolicySet,
    Vec<PolicyInfo>,
    HashMap<String, usize>,
    Vec<crate::index::IndexKey>,
);

fn assemble(files: &[PathBuf], identified: &[Arc<IdentifiedFile>]) -> Result<Assembled, LoadError> {
    let number = identified.iter().map(|i| i.ids.infos.len()).sum();
    let mut policy_set = cedar_policy::PolicySet::new();
    let mut policies = Vec::with_capacity(number);
    let mut index = HashMap::with_capacity(number);
    let mut keys = Vec::with_capacity(number);
    for (file, ids) in files.iter().zip(identified) {
        for (policy, info) in ids.ids.policies.iter().zip(&ids.ids.infos) {
            policy_set
                .add(policy.clone())
                .map_err(|e| LoadError::Parse {
                    file: file.clone(),
                    problems: vec![plain_problem(file, &e.to_string())],
                })?;
            index.insert(info.id.clone(), policies.len());
            policies.push(info.clone());
        }
        keys.extend(ids.source().keys.iter().cloned());
    }
    Ok((policy_set, policies, index, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prescan;
    use std::path::Path;

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
        // At least three times the deepest shipped file (`50-requests.cedar`'s
        // approval rule, 17): room for an author's own rules of that shape.
        assert!(deepest * 3 <= prescan::DEFAULT_MAX_NESTING, "{deepest}");
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
