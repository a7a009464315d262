//! `partnergate check`: load a pack, strictly validated, and report its
//! problems or a summary (text or JSON); warnings may fail it.
//!
//! Owns the `check` command only; it must never know another command.

use std::io::Write;

use clap::Args;

use partnergate_policy::policies;

use super::common::{CliError, EXIT_INVALID, EXIT_OK};
use super::pack_args::{load_exit_code, PackArgs};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub pack: PackArgs,
    /// Treat validation warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Print problems as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `partnergate check`.
pub fn run_check(a: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let (source, no_schema) = a.pack.resolve();
    match policies::load(&source) {
        Err(e) => {
            if a.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string(), "problems": e.problems()})
                )?;
            } else {
                write!(err, "{}", e.render())?;
            }
            Ok(load_exit_code(&e))
        }
        Ok(pack) => {
            for w in &pack.warnings {
                write!(err, "{}", w.rendered)?;
            }
            if let Some(w) = &no_schema {
                writeln!(err, "{w}")?;
            }
            let warnings = pack.warnings.len() + usize::from(no_schema.is_some());
            let files = pack.files.len() - usize::from(pack.schema_file.is_some());
            if a.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"ok": !a.deny_warnings || warnings == 0,
                        "version": pack.version, "policies": pack.policies, "warnings": pack.warnings,
                        "validated": pack.schema.is_some(), "schema_warning": no_schema})
                )?;
            } else {
                let validated = match &source.schema {
                    Some(s) => format!("validated strictly against {}", s.display()),
                    None => "parsed (no schema: not validated)".to_string(),
                };
                writeln!(
                    out,
                    "ok: {} policies in {} file(s) {validated}; {} warning(s); version {}",
                    pack.policies.len(),
                    files,
                    warnings,
                    pack.version
                )?;
            }
            if a.deny_warnings && warnings > 0 {
                writeln!(err, "error: {warnings} warning(s) and --deny-warnings")?;
                return Ok(EXIT_INVALID);
            }
            Ok(EXIT_OK)
        }
    }
}
