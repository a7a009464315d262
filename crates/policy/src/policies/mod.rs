//! Loading a policy pack: Cedar policy files plus a Cedar schema, parsed with
//! file names in every error, re-identified by their `@id` annotation,
//! validated strictly, and fingerprinted with a content-hash version.
//!
//! [`load`] runs the steps in order, each in its own file: `source` (which
//! files), `read` (each held against the limits, fed to the `version`),
//! `schema`, `identify` (ids, duplicates, lines), `validate`, `clock`, and
//! assembles the [`PolicyPack`] (`pack`) every decision is made against;
//! `error` is [`LoadError`], `diagnostics` turns Cedar's diagnostics into
//! [`Problem`]s. It does no watching and knows nothing about HTTP: the
//! reloader and the CLI both call [`load`].

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
pub use clock::CLOCK_ATTRIBUTE;
pub use diagnostics::{problems_from, render_with_source};
pub use error::LoadError;
pub use pack::{Extension, PolicyInfo, PolicyPack};
pub use read::read_checked;
pub use schema::load_schema;
pub use source::{find_schema, policy_files, PackSource, SchemaSearch};

use clock::{uses_time_arithmetic, Clock};
use identify::identify_policies;
use pack::action_entities;
use read::read_policy_texts;
use schema::read_pack_schema;
use validate::validate_strictly;
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
    let files = policy_files(&source.policies)?;
    let mut version = PackVersion::default();
    let texts = read_policy_texts(&files, &source.limits, &mut version)?;
    let (schema, clock_actions) = read_pack_schema(source, &mut version)?;
    let identified = identify_policies(&files, &texts)?;
    let warnings = match &schema {
        Some(schema) => validate_strictly(schema, &identified, &texts)?,
        None => Vec::new(),
    };
    let mut all_files = files;
    if let Some(s) = &source.schema {
        all_files.push(s.clone());
    }
    let (actions, action_texts) = action_entities(schema.as_ref());
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
        version: version.finish(),
        files: all_files,
        schema_file: source.schema.clone(),
        policies: identified.policies,
        warnings,
        index: identified.index,
    })
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
