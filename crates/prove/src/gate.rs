//! The reload gate (`partnergate serve --prove-on-reload`): a pack that
//! breaks an invariant is refused like one that does not parse.
//!
//! Owns [`reload_gate`]: turning a proof report into reload problems. It
//! must never know how the proof runs or how the reload applies a pack.

use std::path::PathBuf;

use partnergate_policy::policies::PolicyPack;

use crate::prover::check_pack;

/// A reload gate (`partnergate serve --prove-on-reload`): a pack that breaks
/// an invariant is rejected like a syntax error, with one problem per
/// violation carrying its counterexample. Must run outside a tokio runtime
/// (the reload thread is a plain thread).
pub fn reload_gate(invariants_dir: PathBuf) -> partnergate_core::reload::Gate {
    Box::new(move |pack: &PolicyPack| {
        let problem = |file: Option<PathBuf>, policy_id: Option<String>, message: String| {
            partnergate_policy::policies::Problem {
                file,
                line: None,
                column: None,
                policy_id,
                rendered: message.clone(),
                message,
            }
        };
        let report = check_pack(pack, &invariants_dir).map_err(|e| {
            vec![problem(
                Some(invariants_dir.clone()),
                None,
                format!("cannot prove the invariants: {e}"),
            )]
        })?;
        let problems: Vec<partnergate_policy::policies::Problem> = report
            .violated()
            .flat_map(|r| {
                r.violations.iter().map(move |v| {
                    let cx = &v.counterexample;
                    let message = format!(
                        "invariant `{}` ({}) is violated in {}: counterexample {}",
                        r.id,
                        r.kind.as_str(),
                        v.environment,
                        serde_json::json!({
                            "principal": cx.principal, "action": cx.action, "resource": cx.resource,
                            "context": cx.context, "entities": cx.entities,
                            "production_decision": cx.production.decision,
                            "production_reasons": cx.production.reasons,
                        })
                    );
                    problem(r.file.clone(), Some(r.id.clone()), message)
                })
            })
            .collect();
        if problems.is_empty() {
            Ok(None)
        } else {
            Err(problems)
        }
    })
}
