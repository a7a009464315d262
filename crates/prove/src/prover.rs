//! Running the proofs: start cvc5, compile the production policies for
//! every request environment of the schema with `cedar-policy-symcc`, and
//! check never-errors, each invariant ([`check_pack`]) or equivalence with
//! another pack ([`check_equivalent`]); a solver model becomes a replayed
//! counterexample.
//!
//! Owns the solver session (`Prover`) and the library entry points. It
//! must never know how counterexamples are written to disk, the reload
//! gate, HTTP or the command line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cedar_policy::{RequestEnv, Schema};
use cedar_policy_symcc::solver::{LocalSolver, SolverError};
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet};

use partnergate_policy::engine::{Decision, Effect};
use partnergate_policy::policies::PolicyPack;

use crate::counterexample::{replay, Renamer};
use crate::error::{ProveError, SOLVER_ENV};
use crate::invariants::{load_invariants, Invariant, InvariantKind};
use crate::report::{Counterexample, EnvLabel, InvariantResult, ProofReport, Violation};

fn runtime() -> Result<tokio::runtime::Runtime, ProveError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProveError::Runtime)
}

/// Prove every invariant in `invariants_dir` and never-errors for `pack`.
/// The pack must have a schema; the invariant files are validated against
/// the schema file the pack was loaded with (`pack.schema_file`).
///
/// Blocking: runs its own single-threaded runtime for the solver process;
/// from async code call it in `spawn_blocking`, or use [`check_pack_async`].
pub fn check_pack(pack: &PolicyPack, invariants_dir: &Path) -> Result<ProofReport, ProveError> {
    runtime()?.block_on(check_pack_async(pack, invariants_dir))
}

/// [`check_pack`] for callers already inside a tokio runtime.
pub async fn check_pack_async(
    pack: &PolicyPack,
    invariants_dir: &Path,
) -> Result<ProofReport, ProveError> {
    let schema_file = schema_file(pack)?;
    let invariants = load_invariants(invariants_dir, &schema_file)?;
    prove_invariants(pack, &invariants).await
}

/// Prove that `other` decides exactly like `pack` on every valid input.
pub fn check_equivalent(pack: &PolicyPack, other: &PolicyPack) -> Result<ProofReport, ProveError> {
    runtime()?.block_on(check_equivalent_async(pack, other))
}

/// [`check_equivalent`] for callers already inside a tokio runtime.
pub async fn check_equivalent_async(
    pack: &PolicyPack,
    other: &PolicyPack,
) -> Result<ProofReport, ProveError> {
    let started = Instant::now();
    let mut prover = Prover::start(pack)?;
    let t = Instant::now();
    let mut result = InvariantResult {
        id: "equivalent".into(),
        kind: InvariantKind::Equivalent,
        description: Some(format!(
            "decides exactly like {} (version {})",
            other
                .files
                .first()
                .and_then(|f| f.parent())
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            other.version
        )),
        file: None,
        holds: true,
        environments: prover.envs.len(),
        queries: 0,
        millis: 0.0,
        violations: Vec::new(),
    };
    for i in 0..prover.envs.len() {
        let env = &prover.envs[i];
        let label = EnvLabel::of(env);
        let theirs = CompiledPolicySet::compile(&other.policy_set, env, &prover.schema)
            .map_err(|e| symcc_err("compiling the other policy set", &label, e))?;
        result.queries += 1;
        let cex = prover
            .compiler
            .check_equivalent_with_counterexample_opt(&prover.production[i], &theirs)
            .await
            .map_err(|e| symcc_err("checking equivalence", &label, e))?;
        if let Some(cex) = cex {
            let mut c = prover.counterexample(&label, &cex, None)?;
            c.other = Some(replay(other, &prover.schema, &c, &label)?);
            result.holds = false;
            result.violations.push(Violation {
                environment: label,
                policy: None,
                counterexample: c,
            });
        }
    }
    result.millis = ms(t);
    Ok(prover.report(vec![result], started))
}

/// The schema file a pack was loaded with.
fn schema_file(pack: &PolicyPack) -> Result<PathBuf, ProveError> {
    match (&pack.schema, &pack.schema_file) {
        (Some(_), Some(f)) => Ok(f.clone()),
        _ => Err(ProveError::NoSchema),
    }
}

async fn prove_invariants(
    pack: &PolicyPack,
    invariants: &[Invariant],
) -> Result<ProofReport, ProveError> {
    let started = Instant::now();
    let mut prover = Prover::start(pack)?;
    let mut results = vec![prover.never_errors().await?];
    for inv in invariants {
        results.push(prover.invariant(inv).await?);
    }
    Ok(prover.report(results, started))
}

struct Prover<'a> {
    pack: &'a PolicyPack,
    schema: Schema,
    compiler: CedarSymCompiler<LocalSolver>,
    envs: Vec<RequestEnv>,
    production: Vec<CompiledPolicySet>,
    compile_millis: f64,
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn symcc_err(what: &str, env: &EnvLabel, source: cedar_policy_symcc::err::Error) -> ProveError {
    ProveError::Symcc {
        what: what.to_string(),
        env: env.to_string(),
        source: Box::new(source),
    }
}

/// Start cvc5 the way symcc does (`$CVC5`, else `cvc5` on PATH), turning
/// "not found" into the install hint.
fn start_solver() -> Result<LocalSolver, ProveError> {
    let from_env = std::env::var_os(SOLVER_ENV).is_some();
    let program = std::env::var(SOLVER_ENV).unwrap_or_else(|_| "cvc5".into());
    LocalSolver::cvc5().map_err(|e| match e {
        SolverError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            ProveError::SolverMissing { program, from_env }
        }
        SolverError::Io(io) => ProveError::SolverStart {
            program,
            source: io,
        },
        other => ProveError::SolverStart {
            program,
            source: std::io::Error::other(other.to_string()),
        },
    })
}

impl<'a> Prover<'a> {
    fn start(pack: &'a PolicyPack) -> Result<Self, ProveError> {
        let schema = pack.schema.clone().ok_or(ProveError::NoSchema)?;
        let solver = start_solver()?;
        let compiler = CedarSymCompiler::new(solver).map_err(|e| ProveError::SolverStart {
            program: "cvc5".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let t = Instant::now();
        let envs: Vec<RequestEnv> = schema.request_envs().collect();
        let production = envs
            .iter()
            .map(|env| {
                CompiledPolicySet::compile(&pack.policy_set, env, &schema)
                    .map_err(|e| symcc_err("compiling the policies", &EnvLabel::of(env), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prover {
            pack,
            schema,
            compiler,
            envs,
            production,
            compile_millis: ms(t),
        })
    }

    fn report(&self, results: Vec<InvariantResult>, started: Instant) -> ProofReport {
        ProofReport {
            policy_version: self.pack.version.clone(),
            environments: self.envs.iter().map(EnvLabel::of).collect(),
            results,
            compile_millis: self.compile_millis,
            total_millis: ms(started),
        }
    }

    /// Turn a symcc counterexample into replayable JSON, and replay it
    /// against the production pack exactly as `authorize` would.
    fn counterexample(
        &self,
        label: &EnvLabel,
        env: &cedar_policy_symcc::Env,
        offending: Option<Effect>,
    ) -> Result<Counterexample, ProveError> {
        let bad = |message: String| ProveError::Counterexample {
            env: label.to_string(),
            message,
        };
        let r = &env.request;
        let uid = |u: Option<&cedar_policy::EntityUid>, what: &str| {
            u.map(|u| u.to_string())
                .ok_or_else(|| bad(format!("the request has no concrete {what}")))
        };
        let context = match r.context() {
            Some(c) => c
                .to_json_value()
                .map_err(|e| bad(format!("context: {e}")))?,
            None => serde_json::json!({}),
        };
        let entities = env
            .entities
            .to_json_value()
            .map_err(|e| bad(format!("entities: {e}")))?;
        let principal = r
            .principal()
            .ok_or_else(|| bad("the request has no concrete principal".into()))?;
        let resource = r
            .resource()
            .ok_or_else(|| bad("the request has no concrete resource".into()))?;
        let mut names = Renamer::default();
        names.name(principal);
        names.name(resource);
        let (entities, context) = names.rewrite(entities, context);
        let mut c = Counterexample {
            principal: names.uid(principal),
            action: uid(r.action(), "action")?,
            resource: names.uid(resource),
            context,
            entities,
            offending,
            production: Decision {
                decision: Effect::Deny,
                reasons: Vec::new(),
                errors: Vec::new(),
                policy_version: String::new(),
            },
            other: None,
            confirmed: None,
        };
        c.production = replay(self.pack, &self.schema, &c, label)?;
        c.confirmed = offending.map(|o| o == c.production.decision);
        Ok(c)
    }

    async fn never_errors(&mut self) -> Result<InvariantResult, ProveError> {
        let t = Instant::now();
        let mut result = InvariantResult {
            id: "never-errors".into(),
            kind: InvariantKind::NeverErrors,
            description: Some("No production policy raises an evaluation error".into()),
            file: None,
            holds: true,
            environments: self.envs.len(),
            queries: 0,
            millis: 0.0,
            violations: Vec::new(),
        };
        for i in 0..self.envs.len() {
            let label = EnvLabel::of(&self.envs[i]);
            for info in &self.pack.policies {
                let Some(policy) = self
                    .pack
                    .policy_set
                    .policy(&cedar_policy::PolicyId::new(&info.id))
                else {
                    continue;
                };
                let compiled = CompiledPolicy::compile(policy, &self.envs[i], &self.schema)
                    .map_err(|e| symcc_err(&format!("compiling `{}`", info.id), &label, e))?;
                result.queries += 1;
                let cex = self
                    .compiler
                    .check_never_errors_with_counterexample_opt(&compiled)
                    .await
                    .map_err(|e| symcc_err(&format!("never-errors of `{}`", info.id), &label, e))?;
                if let Some(cex) = cex {
                    let c = self.counterexample(&label, &cex, None)?;
                    result.holds = false;
                    result.violations.push(Violation {
                        environment: label.clone(),
                        policy: Some(info.id.clone()),
                        counterexample: c,
                    });
                }
            }
        }
        result.millis = ms(t);
        Ok(result)
    }

    async fn invariant(&mut self, inv: &Invariant) -> Result<InvariantResult, ProveError> {
        let t = Instant::now();
        let mut result = InvariantResult {
            id: inv.id.clone(),
            kind: inv.kind,
            description: inv.description.clone(),
            file: Some(inv.file.clone()),
            holds: true,
            environments: self.envs.len(),
            queries: 0,
            millis: 0.0,
            violations: Vec::new(),
        };
        for i in 0..self.envs.len() {
            let label = EnvLabel::of(&self.envs[i]);
            let theirs = CompiledPolicySet::compile(&inv.policy_set, &self.envs[i], &self.schema)
                .map_err(|e| {
                symcc_err(&format!("compiling invariant `{}`", inv.id), &label, e)
            })?;
            result.queries += 1;
            let (cex, offending) = match inv.kind {
                // Everything production allows, the ceiling allows.
                InvariantKind::Ceiling => (
                    self.compiler
                        .check_implies_with_counterexample_opt(&self.production[i], &theirs)
                        .await,
                    Effect::Allow,
                ),
                // Everything the floor allows, production allows.
                _ => (
                    self.compiler
                        .check_implies_with_counterexample_opt(&theirs, &self.production[i])
                        .await,
                    Effect::Deny,
                ),
            };
            let cex = cex.map_err(|e| symcc_err(&format!("proving `{}`", inv.id), &label, e))?;
            if let Some(cex) = cex {
                let c = self.counterexample(&label, &cex, Some(offending))?;
                result.holds = false;
                result.violations.push(Violation {
                    environment: label,
                    policy: None,
                    counterexample: c,
                });
            }
        }
        result.millis = ms(t);
        Ok(result)
    }
}
