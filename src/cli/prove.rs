//! `partnergate prove`: the command-line part of the prover (the flags, the
//! text and JSON reports). The proofs live in `partnergate-prove`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::common::{EXIT_ERROR, EXIT_OK};
use super::pack_args::PackArgs;
use partnergate_policy::engine::Decision;
use partnergate_policy::policies::{self, PackSource, PolicyPack};
use partnergate_prove::{
    check_equivalent, check_pack, default_invariants_dir, write_counterexamples, InvariantKind,
    ProofReport, ProveError, WrittenCounterexample,
};

/// `partnergate prove`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    #[command(flatten)]
    pub pack: PackArgs,
    /// The invariants directory [default: invariants/ inside the policies directory]
    #[arg(long)]
    pub invariants: Option<PathBuf>,
    /// Instead of the invariants: prove that the policies in DIR decide
    /// exactly like the current ones (same schema).
    #[arg(long, value_name = "DIR")]
    pub equivalent: Option<PathBuf>,
    /// Where to write counterexamples [default: a fresh directory under the
    /// system temp dir, printed]
    #[arg(long, value_name = "DIR")]
    pub counterexamples: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `partnergate prove`: exit 0 when everything holds, 1 otherwise (a
/// violation, a missing solver, or a pack that does not load).
pub fn run_prove(a: &ProveArgs, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<u8> {
    let source = a.pack.source();
    if source.schema.is_none() {
        writeln!(err, "error: {}", ProveError::NoSchema)?;
        return Ok(EXIT_ERROR);
    }
    let pack = match policies::load(&source) {
        Ok(p) => p,
        Err(e) => {
            write!(err, "{}", e.render())?;
            return Ok(EXIT_ERROR);
        }
    };
    let outcome = if let Some(dir) = &a.equivalent {
        match policies::load(&PackSource::new(dir.clone(), source.schema.clone())) {
            Ok(other) => check_equivalent(&pack, &other),
            Err(e) => {
                write!(err, "{}", e.render())?;
                writeln!(
                    err,
                    "error: cannot load the policies to compare: {}",
                    dir.display()
                )?;
                return Ok(EXIT_ERROR);
            }
        }
    } else {
        let dir = a
            .invariants
            .clone()
            .unwrap_or_else(|| default_invariants_dir(&source.policies));
        check_pack(&pack, &dir)
    };
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            write!(err, "{}", e.render())?;
            return Ok(EXIT_ERROR);
        }
    };
    let dir = a
        .counterexamples
        .clone()
        .unwrap_or_else(default_counterexample_dir);
    let other = a
        .equivalent
        .as_ref()
        .map(|d| PackSource::new(d.clone(), source.schema.clone()));
    let written = match write_counterexamples(&report, &dir, &source, other.as_ref()) {
        Ok(w) => w,
        Err(e) => {
            write!(err, "{}", e.render())?;
            return Ok(EXIT_ERROR);
        }
    };
    if a.json {
        let v = serde_json::json!({
            "holds": report.holds(),
            "report": report,
            "counterexamples": written,
            "counterexample_dir": if written.is_empty() { None } else { Some(&dir) },
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?;
    } else {
        render(&report, &written, &pack, out)?;
        if !written.is_empty() {
            writeln!(out, "counterexamples written to {}", dir.display())?;
        }
    }
    Ok(if report.holds() { EXIT_OK } else { EXIT_ERROR })
}

fn default_counterexample_dir() -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    std::env::temp_dir().join(format!(
        "partnergate-counterexamples-{stamp}-{}",
        std::process::id()
    ))
}

fn describe(d: &Decision) -> String {
    let mut s = d.decision.to_string().to_uppercase();
    if !d.reasons.is_empty() {
        let ids: Vec<&str> = d.reasons.iter().map(|r| r.id.as_str()).collect();
        s.push_str(&format!(" (by {})", ids.join(", ")));
    }
    if !d.errors.is_empty() {
        s.push_str(&format!(" with errors: {}", d.errors.join("; ")));
    }
    s
}

fn render(
    report: &ProofReport,
    written: &[WrittenCounterexample],
    pack: &PolicyPack,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "proving {} policies (version {}) over {} request environments with cvc5",
        pack.policies.len(),
        report.policy_version,
        report.environments.len()
    )?;
    let mut commands = written.iter();
    for r in &report.results {
        let status = if r.holds { "holds   " } else { "VIOLATED" };
        writeln!(
            out,
            "  {status} {:<12} {:<36} {:>3} queries {:>9.1} ms",
            r.kind.as_str(),
            r.id,
            r.queries,
            r.millis
        )?;
        if !r.holds {
            if let Some(d) = &r.description {
                writeln!(out, "      {d}")?;
            }
        }
        for v in &r.violations {
            let c = &v.counterexample;
            let what = match (r.kind, &v.policy) {
                (InvariantKind::NeverErrors, Some(p)) => format!("policy `{p}` can error"),
                (InvariantKind::Ceiling, _) => "production allows what the ceiling forbids".into(),
                (InvariantKind::Floor, _) => "production denies what the floor allows".into(),
                _ => "the two policy sets decide differently".into(),
            };
            writeln!(out, "    in {}: {what}", v.environment)?;
            writeln!(
                out,
                "      request: principal {} action {} resource {} context {}",
                c.principal, c.action, c.resource, c.context
            )?;
            writeln!(
                out,
                "      production decision: {}",
                describe(&c.production)
            )?;
            if c.confirmed == Some(false) {
                writeln!(
                    out,
                    "      note: Cedar's decision differs from PartnerGate's fail-closed one here"
                )?;
            }
            if let Some(o) = &c.other {
                writeln!(out, "      other decision:      {}", describe(o))?;
            }
            if let Some(w) = commands.next() {
                writeln!(out, "      replay: {}", w.command)?;
                if let Some(o) = &w.other_command {
                    writeln!(out, "      replay other: {o}")?;
                }
            }
        }
    }
    let violated = report.violated().count();
    writeln!(
        out,
        "{} of {} hold, {violated} violated; compile {:.1} ms, total {:.1} ms",
        report.results.len() - violated,
        report.results.len(),
        report.compile_millis,
        report.total_millis
    )?;
    Ok(())
}
