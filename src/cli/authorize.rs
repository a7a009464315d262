//! `partnergate authorize`: one question (principal, action, resource,
//! context, an entity file) decided against a pack, printed (text or JSON)
//! and appended to the decision log unless it is off.
//!
//! Owns the `authorize` command only; it must never know another command.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use partnergate_policy::engine::{self, Effect, Semantics};

use super::audit::AuditLogArgs;
use super::common::{CliError, EXIT_DENY, EXIT_ERROR, EXIT_OK};
use super::pack_args::{load_pack, PackArgs};

#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    #[command(flatten)]
    pub pack: PackArgs,
    /// The principal, e.g. 'User::"alice"'.
    #[arg(long)]
    pub principal: String,
    /// The action, e.g. 'Action::"invite_user"' (a bare name means Action::"name").
    #[arg(long)]
    pub action: String,
    /// The resource, e.g. 'Account::"acme"'.
    #[arg(long)]
    pub resource: String,
    /// The context as a JSON object, or @FILE to read it from a file.
    #[arg(long)]
    pub context: Option<String>,
    /// Cedar entity JSON file.
    #[arg(long)]
    pub entities: PathBuf,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub log: AuditLogArgs,
}

fn read_json(path: &Path) -> Result<serde_json::Value, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| CliError::Input {
        path: path.to_path_buf(),
        message: format!("line {} column {}: {e}", e.line(), e.column()),
    })
}

/// `partnergate authorize`.
pub fn run_authorize(
    a: &AuthorizeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError> {
    let pack = match load_pack(&a.pack, err) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let context = match &a.context {
        None => None,
        Some(s) if s.starts_with('@') => Some(read_json(Path::new(&s[1..]))?),
        Some(s) => Some(serde_json::from_str(s).map_err(|e| CliError::Input {
            path: "--context".into(),
            message: e.to_string(),
        })?),
    };
    let entities_json = read_json(&a.entities)?;
    let action = if a.action.contains("::") {
        a.action.clone()
    } else {
        format!("Action::\"{}\"", a.action)
    };
    let question = engine::JsonQuestion {
        principal: &a.principal,
        action: &action,
        resource: &a.resource,
        context: context.clone(),
        entities: entities_json,
    };
    let question = match engine::Question::parse(pack.schema.as_ref(), question) {
        Ok(q) => q,
        Err(engine::QuestionError::Entities(e)) => {
            writeln!(err, "error: {}: {e}", a.entities.display())?;
            return Ok(EXIT_ERROR);
        }
        Err(e) => {
            writeln!(err, "error: invalid request: {e}")?;
            return Ok(EXIT_ERROR);
        }
    };
    let started = std::time::Instant::now();
    let decision = question.decide(&pack, Semantics::FailClosed);
    log_cli_decision(a, &question, context, &decision, started, err);
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&decision).unwrap_or_default()
        )?;
    } else {
        writeln!(out, "{}", decision.decision.to_string().to_uppercase())?;
        if decision.reasons.is_empty() {
            writeln!(out, "reasons: none (no policy applies: denied by default)")?;
        } else {
            writeln!(out, "reasons:")?;
            for r in &decision.reasons {
                match &r.description {
                    Some(d) => writeln!(out, "  {}: {d}", r.id)?,
                    None => writeln!(out, "  {}", r.id)?,
                }
            }
        }
        if !decision.errors.is_empty() {
            writeln!(out, "errors:")?;
            for e in &decision.errors {
                writeln!(out, "  {e}")?;
            }
        }
        writeln!(out, "policy version: {}", decision.policy_version)?;
    }
    Ok(match decision.decision {
        Effect::Allow => EXIT_OK,
        Effect::Deny => EXIT_DENY,
    })
}

/// Append a CLI decision to the decision log; a log that cannot be opened
/// (e.g. a running sidecar holds it) is a warning, not a failure.
fn log_cli_decision(
    a: &AuthorizeArgs,
    question: &engine::Question,
    context: Option<serde_json::Value>,
    decision: &engine::Decision,
    started: std::time::Instant,
    err: &mut dyn Write,
) {
    let Some(config) = a.log.config() else {
        return;
    };
    match partnergate_audit::AuditLog::open(config) {
        Ok((log, _)) => {
            let uid = |u: Option<&cedar_policy::EntityUid>| {
                u.map(ToString::to_string).unwrap_or_default()
            };
            let r = &question.request;
            log.log(
                partnergate_audit::DecisionEvent::new(
                    uid(r.principal()),
                    uid(r.action()),
                    uid(r.resource()),
                    partnergate_core::authz::log_slice(&question.entities),
                    decision.clone(),
                )
                .with_context(context)
                .with_latency_us(started.elapsed().as_micros() as u64),
            );
            log.shutdown();
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "warning: decision not logged: {e} (use --audit-log off to silence)"
            );
        }
    }
}
