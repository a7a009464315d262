//! The policy-pack flags every command that loads a pack shares
//! ([`PackArgs`]: where the pack is, its schema found beside the policies
//! when not named; [`LimitArgs`]: what a pack may hold), and loading a pack
//! from them with its errors printed and its exit code ([`load_pack`],
//! [`load_exit_code`]).
//!
//! Owns these flags only; it must never know a command, its other
//! arguments or how it runs.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use partnergate_policy::policies::{self, LoadError, PackSource, PolicyPack};

use super::common::{DEFAULT_POLICIES, DEFAULT_SCHEMA, EXIT_ERROR, EXIT_INVALID};

/// Where the policy pack is.
#[derive(Debug, Args, Clone)]
pub struct PackArgs {
    /// A directory of .cedar files (read in sorted order) or one .cedar file
    /// [default: policies]
    #[arg(long, env = "PARTNERGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// The Cedar schema (.cedarschema, or .json). Default: the shipped
    /// schema when --policies is not given either; otherwise the one
    /// *.cedarschema in the policy directory or in schemas/ beside it.
    #[arg(long, env = "PARTNERGATE_SCHEMA")]
    pub schema: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl PackArgs {
    /// The pack to load; a schema not named is looked for beside the
    /// policies ([`policies::find_schema`]).
    pub fn source(&self) -> PackSource {
        self.resolve().0
    }

    /// The pack to load, and when `--policies` came without `--schema` and
    /// no single schema was found beside it, the warning that says so.
    pub fn resolve(&self) -> (PackSource, Option<String>) {
        let list = |v: &[PathBuf]| {
            v.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (source, warning) = match (&self.policies, &self.schema) {
            (None, None) => (
                PackSource::new(DEFAULT_POLICIES, Some(DEFAULT_SCHEMA.into())),
                None,
            ),
            (None, Some(s)) => (PackSource::new(DEFAULT_POLICIES, Some(s.clone())), None),
            (Some(p), Some(s)) => (PackSource::new(p.clone(), Some(s.clone())), None),
            (Some(p), None) => match policies::find_schema(p) {
                policies::SchemaSearch::Found(s) => (PackSource::new(p.clone(), Some(s)), None),
                policies::SchemaSearch::NotFound { looked_in } => (
                    PackSource::new(p.clone(), None),
                    Some(format!(
                        "warning: no schema for {} (no *.cedarschema in {}): the policies are \
                         parsed but not validated; name one with --schema",
                        p.display(),
                        list(&looked_in)
                    )),
                ),
                policies::SchemaSearch::Ambiguous(found) => (
                    PackSource::new(p.clone(), None),
                    Some(format!(
                        "warning: several schemas for {} ({}): the policies are parsed but not \
                         validated; name one with --schema",
                        p.display(),
                        list(&found)
                    )),
                ),
            },
        };
        (source.with_limits(self.limits.limits()), warning)
    }
}

/// What a policy pack may hold, checked before Cedar parses it
/// (`crate::prescan`).
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Deepest expression nesting (brackets plus chained operators) in a policy or schema file.
    #[arg(long, env = "PARTNERGATE_MAX_POLICY_NESTING", default_value_t = partnergate_policy::prescan::DEFAULT_MAX_NESTING)]
    pub max_policy_nesting: usize,
    /// Largest policy or schema file, in bytes.
    #[arg(long, env = "PARTNERGATE_MAX_POLICY_FILE_BYTES", default_value_t = partnergate_policy::prescan::DEFAULT_MAX_FILE_BYTES)]
    pub max_policy_file_bytes: u64,
    /// Most policies in the pack (all files together).
    #[arg(long, env = "PARTNERGATE_MAX_POLICIES", default_value_t = partnergate_policy::prescan::DEFAULT_MAX_POLICIES)]
    pub max_policies: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> partnergate_policy::prescan::PackLimits {
        partnergate_policy::prescan::PackLimits {
            max_nesting: self.max_policy_nesting,
            max_file_bytes: self.max_policy_file_bytes,
            max_policies: self.max_policies,
        }
    }
}

/// Validation failures exit 3, everything else 1.
pub fn load_exit_code(e: &LoadError) -> u8 {
    match e {
        LoadError::Validation { .. } => EXIT_INVALID,
        _ => EXIT_ERROR,
    }
}

/// Load a pack, printing its errors; `Err(code)` when it cannot be loaded.
pub fn load_pack(args: &PackArgs, err: &mut dyn Write) -> Result<PolicyPack, u8> {
    policies::load(&args.source()).map_err(|e| {
        let _ = write!(err, "{}", e.render());
        load_exit_code(&e)
    })
}
