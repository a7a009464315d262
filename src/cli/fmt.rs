//! `partnergate fmt`: format the policy files with cedar-policy-formatter,
//! each file held against the default limits first and rewritten
//! atomically, or only checked (`--check`).
//!
//! Owns the `fmt` command only; it must never know another command.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use partnergate_policy::policies;

use super::common::{CliError, DEFAULT_POLICIES, EXIT_ERROR, EXIT_OK};

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// A directory of .cedar files or one file [default: policies]
    #[arg(long, env = "PARTNERGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Do not write; exit 1 if any file is not formatted.
    #[arg(long)]
    pub check: bool,
}

/// `partnergate fmt`.
pub fn run_fmt(a: &FmtArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let dir = a
        .policies
        .clone()
        .unwrap_or_else(|| DEFAULT_POLICIES.into());
    let files = match policies::policy_files(&dir) {
        Ok(f) => f,
        Err(e) => {
            write!(err, "{}", e.render())?;
            return Ok(EXIT_ERROR);
        }
    };
    let config = cedar_policy_formatter::Config::default();
    let mut unformatted = 0;
    for f in files {
        let text =
            match policies::read_checked(&f, &partnergate_policy::prescan::PackLimits::default()) {
                Ok((text, _)) => text,
                Err(e) => {
                    write!(err, "{}", e.render())?;
                    return Ok(EXIT_ERROR);
                }
            };
        let pretty = match cedar_policy_formatter::policies_str_to_pretty(&text, &config) {
            Ok(p) => p,
            Err(e) => {
                writeln!(err, "{}: cannot format: {e}", f.display())?;
                return Ok(EXIT_ERROR);
            }
        };
        if pretty != text {
            unformatted += 1;
            if a.check {
                writeln!(out, "would reformat {}", f.display())?;
            } else {
                write_atomically(&f, &pretty)?;
                writeln!(out, "formatted {}", f.display())?;
            }
        }
    }
    if a.check && unformatted > 0 {
        writeln!(
            err,
            "{unformatted} file(s) not formatted; run `partnergate fmt`"
        )?;
        return Ok(EXIT_ERROR);
    }
    Ok(EXIT_OK)
}

/// Write a file through a temporary sibling and a rename, so a watcher never
/// sees it half-written.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("cedar.tmp~");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
