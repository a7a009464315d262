//! `partnergate test`: run policy test suites (Cedar run-tests JSON or
//! PartnerGate TOML) against a pack and report each case and the policy
//! coverage (text or JSON).
//!
//! Owns the `test` command only; it must never know another command.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use partnergate_policy::suite;

use super::common::{CliError, EXIT_ERROR, EXIT_OK};
use super::pack_args::{load_pack, PackArgs};

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub pack: PackArgs,
    /// Suite files or directories [default: tests/policies]
    pub paths: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `partnergate test`.
pub fn run_test(a: &TestArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let pack = match load_pack(&a.pack, err) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let paths = if a.paths.is_empty() {
        vec![PathBuf::from("tests/policies")]
    } else {
        a.paths.clone()
    };
    let files = suite::discover(&paths)?;
    let suites = files
        .iter()
        .map(|f| suite::read_suite(f))
        .collect::<Result<Vec<_>, _>>()?;
    let report = suite::run(&pack, &suites);
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )?;
    } else {
        let mut current: Option<&Path> = None;
        for r in &report.results {
            if current != Some(r.suite.as_path()) {
                writeln!(out, "{}", r.suite.display())?;
                current = Some(r.suite.as_path());
            }
            if r.passed {
                writeln!(out, "  ok    {}", r.name)?;
            } else {
                writeln!(out, "  FAIL  {}", r.name)?;
                for d in &r.diff {
                    writeln!(out, "        {d}")?;
                }
            }
        }
        let covered = report.total_policies - report.uncovered.len();
        writeln!(
            out,
            "coverage: {covered}/{} policies were a determining reason ({:.1}%)",
            report.total_policies,
            report.coverage_percent()
        )?;
        for id in &report.uncovered {
            let file = pack
                .policy(id)
                .map(|p| format!(" ({}:{})", p.file.display(), p.line));
            writeln!(out, "  never a reason: {id}{}", file.unwrap_or_default())?;
        }
    }
    writeln!(
        out,
        "{} passed, {} failed",
        report.passed(),
        report.failed()
    )?;
    Ok(if report.failed() == 0 {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}
