//! Symbolic verification of a policy pack (`partnergate prove`): invariants
//! written in Cedar are checked for *every* request and entity store that
//! fits the schema, with the SMT solver cvc5 behind `cedar-policy-symcc`.
//!
//! This module owns the invariant files (`policies/invariants/*.cedar`, one
//! invariant per file, kind given by a `@kind` annotation), the proof
//! report with its counterexamples (a request plus a Cedar JSON entity store
//! that `partnergate authorize` replays), writing counterexamples to disk,
//! and the reload gate ([`reload_gate`]). [`check_pack`] is the library
//! entry point. The `prove` subcommand's flags and text report live in the
//! binary (`src/cli/prove.rs`). Kinds:
//!
//! - `ceiling`: the production policies never allow more than the invariant
//!   set allows (symcc `implies(production, invariant)`);
//! - `floor`: the production policies always allow at least what the
//!   invariant set allows (`implies(invariant, production)`);
//! - `never-errors`: built in, no file: no production policy raises an
//!   evaluation error on any valid request.
//!
//! The solver is found the way symcc finds it: the `CVC5` environment
//! variable (path of the executable), else `cvc5` on `PATH`.
//!
//! Depends on `partnergate-policy` and `partnergate-core` (the reload
//! [`Gate`](partnergate_core::reload::Gate) type); it must never know the
//! partner rules, HTTP or the command line.

#![warn(missing_docs, clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use cedar_policy::{PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::solver::{LocalSolver, SolverError};
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet};
use serde::Serialize;

use partnergate_policy::engine::{self, Decision, Effect, Semantics};
use partnergate_policy::policies::{self, LoadError, PackSource, PolicyPack};

/// The environment variable symcc reads for the path of the cvc5 executable.
pub const SOLVER_ENV: &str = "CVC5";
/// How to get the solver, printed when it is missing.
pub const INSTALL_HINT: &str =
    "install it with `apt-get install cvc5` (Debian/Ubuntu; 1.0.3 works), \
     or set CVC5 to the path of a cvc5 executable";

/// What an invariant states about the production policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InvariantKind {
    /// Production never allows more than the invariant set.
    Ceiling,
    /// Production always allows at least what the invariant set allows.
    Floor,
    /// No production policy raises an evaluation error (built in).
    NeverErrors,
    /// Production decides exactly like another policy set (`--equivalent`).
    Equivalent,
}

impl InvariantKind {
    /// The name used in `@kind` annotations and reports (`ceiling`,
    /// `floor`, `never-errors`, `equivalent`).
    pub fn as_str(self) -> &'static str {
        match self {
            InvariantKind::Ceiling => "ceiling",
            InvariantKind::Floor => "floor",
            InvariantKind::NeverErrors => "never-errors",
            InvariantKind::Equivalent => "equivalent",
        }
    }
}

impl std::fmt::Display for InvariantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invariant read from a file: a policy set and what it bounds.
#[derive(Debug, Clone)]
pub struct Invariant {
    /// The file stem, e.g. `partner-never-grants-admin`.
    pub id: String,
    /// What the invariant bounds (`ceiling` or `floor`; every policy of the
    /// file carries the same `@kind`).
    pub kind: InvariantKind,
    /// The `@description` of the file's first policy.
    pub description: Option<String>,
    /// The invariant file it was read from.
    pub file: PathBuf,
    /// The file's policies, re-identified by `@id` like a pack.
    pub policy_set: PolicySet,
}

/// Why a proof could not be run (as opposed to an invariant being violated,
/// which is a result in the [`ProofReport`]).
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    /// The cvc5 executable does not exist.
    #[error("the SMT solver cvc5 was not found (looked for `{program}`{}): {INSTALL_HINT}",
        if *.from_env { " as given by $CVC5" } else { " on PATH" })]
    SolverMissing {
        /// The program looked for: `$CVC5`'s value, else `cvc5`.
        program: String,
        /// Whether `program` came from the `CVC5` environment variable.
        from_env: bool,
    },
    /// The solver exists but could not be started (or symcc refused it).
    #[error("cannot start the SMT solver `{program}`: {source}")]
    SolverStart {
        /// The program that was started.
        program: String,
        /// Why starting it failed.
        #[source]
        source: std::io::Error,
    },
    /// The pack has no schema; symbolic checking is defined per schema
    /// request environment.
    #[error("proving needs a schema: give --schema")]
    NoSchema,
    /// The invariants directory (given or `policies/invariants`) is absent.
    #[error(
        "no invariants directory {0}: put invariants (*.cedar) there or give --invariants DIR"
    )]
    NoInvariantsDir(PathBuf),
    /// An invariant file does not load (parse, validation or limits).
    #[error("invariant {}: {}", .file.display(), .source)]
    InvariantLoad {
        /// The invariant file.
        file: PathBuf,
        /// The load error, with its location in `file`.
        #[source]
        source: Box<LoadError>,
    },
    /// A policy of an invariant file has a missing, unknown or inconsistent
    /// `@kind` annotation.
    #[error("{}:{line}: policy `{policy}`: {message}", .file.display())]
    InvariantKindAnnotation {
        /// The invariant file.
        file: PathBuf,
        /// The 1-based line the policy starts on.
        line: usize,
        /// The policy's id (`@id`, else `policyN`).
        policy: String,
        /// What is wrong with the annotation.
        message: String,
    },
    /// Reading an invariant file or writing a counterexample file failed.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// symcc failed while compiling policies or running a query.
    #[error("{what} for {env}: {source}")]
    Symcc {
        /// The step that failed, e.g. `compiling the policies`.
        what: String,
        /// The request environment (`principal × action × resource`).
        env: String,
        /// symcc's error.
        #[source]
        source: Box<cedar_policy_symcc::err::Error>,
    },
    /// The solver's model could not be turned into a replayable request and
    /// entity store, or the replay could not be parsed.
    #[error("counterexample for {env}: {message}")]
    Counterexample {
        /// The request environment (`principal × action × resource`).
        env: String,
        /// What is missing or invalid.
        message: String,
    },
    /// The tokio runtime that drives the solver could not be built.
    #[error("cannot start the async runtime for the solver: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ProveError {
    /// The full human rendering (load errors with their source excerpts).
    pub fn render(&self) -> String {
        match self {
            ProveError::InvariantLoad { file, source } => {
                format!(
                    "{}error: in invariant file {}\n",
                    source.render(),
                    file.display()
                )
            }
            other => format!("error: {other}\n"),
        }
    }
}

/// One request environment: principal type × action × resource type.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EnvLabel {
    /// The principal entity type, e.g. `User`.
    pub principal: String,
    /// The action uid in Cedar syntax, e.g. `Action::"view"`.
    pub action: String,
    /// The resource entity type.
    pub resource: String,
}

impl EnvLabel {
    fn of(env: &RequestEnv) -> Self {
        EnvLabel {
            principal: env.principal().to_string(),
            action: env.action().to_string(),
            resource: env.resource().to_string(),
        }
    }
}

impl std::fmt::Display for EnvLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} × {} × {}",
            self.principal, self.action, self.resource
        )
    }
}

/// A concrete request and entity store that break an invariant.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    /// Entity uids in Cedar syntax, e.g. `User::"a"`.
    pub principal: String,
    /// The action uid in Cedar syntax.
    pub action: String,
    /// The resource uid in Cedar syntax.
    pub resource: String,
    /// The context record (Cedar JSON).
    pub context: serde_json::Value,
    /// The entity store (Cedar JSON entity array).
    pub entities: serde_json::Value,
    /// The decision that shows the violation: Allow for a ceiling (the
    /// production allows what the ceiling does not), Deny for a floor; none
    /// for never-errors and equivalence.
    pub offending: Option<Effect>,
    /// The production pack's decision (fail-closed, as `authorize` gives it),
    /// computed by replaying the JSON above.
    pub production: Decision,
    /// Whether the replayed production decision is the offending one (a
    /// `false` here means fail-closed semantics hide what Cedar's allow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
    /// For `--equivalent`: the other pack's decision on the same input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<Decision>,
}

/// One violated request environment.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The request environment in which the invariant fails.
    pub environment: EnvLabel,
    /// For never-errors: the policy that can error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A concrete input that shows the failure, from the solver's model.
    pub counterexample: Counterexample,
}

/// The outcome of one invariant over every request environment.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    /// The invariant's id (file stem; `never-errors`, `equivalent` for the
    /// built-in checks).
    pub id: String,
    /// What was checked.
    pub kind: InvariantKind,
    /// The invariant's `@description`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The invariant file; none for the built-in checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// True when no environment violates it (`violations` is empty).
    pub holds: bool,
    /// Request environments checked.
    pub environments: usize,
    /// Solver queries made.
    pub queries: usize,
    /// Wall time for this invariant (compiling it and every solver query).
    pub millis: f64,
    /// One entry per violated request environment.
    pub violations: Vec<Violation>,
}

/// The result of proving a pack.
#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    /// The content-hash version of the production pack proven.
    pub policy_version: String,
    /// Every request environment of the schema, in the order checked.
    pub environments: Vec<EnvLabel>,
    /// One result per invariant (built-in checks included), in order.
    pub results: Vec<InvariantResult>,
    /// Compiling the production policies for every environment.
    pub compile_millis: f64,
    /// Everything, including starting the solver.
    pub total_millis: f64,
}

impl ProofReport {
    /// True when every invariant holds.
    pub fn holds(&self) -> bool {
        self.results.iter().all(|r| r.holds)
    }

    /// The invariants that do not hold.
    pub fn violated(&self) -> impl Iterator<Item = &InvariantResult> {
        self.results.iter().filter(|r| !r.holds)
    }
}

/// Read the invariants in `dir`: every `.cedar` file directly in it is one
/// invariant, strictly validated against `schema`; every policy in a file
/// carries the same `@kind` ("ceiling" or "floor").
pub fn load_invariants(dir: &Path, schema_file: &Path) -> Result<Vec<Invariant>, ProveError> {
    if !dir.is_dir() {
        return Err(ProveError::NoInvariantsDir(dir.to_path_buf()));
    }
    let files = policies::policy_files(dir).map_err(|source| ProveError::InvariantLoad {
        file: dir.to_path_buf(),
        source: Box::new(source),
    })?;
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let pack = policies::load(&PackSource::new(&file, Some(schema_file.to_path_buf())))
            .map_err(|source| ProveError::InvariantLoad {
                file: file.clone(),
                source: Box::new(source),
            })?;
        let mut kind: Option<InvariantKind> = None;
        for info in &pack.policies {
            let bad = |message: String| ProveError::InvariantKindAnnotation {
                file: file.clone(),
                line: info.line,
                policy: info.id.clone(),
                message,
            };
            let policy = pack
                .policy_set
                .policy(&cedar_policy::PolicyId::new(&info.id))
                .ok_or_else(|| bad("policy vanished while loading".into()))?;
            let this = match policy.annotation("kind") {
                Some("ceiling") => InvariantKind::Ceiling,
                Some("floor") => InvariantKind::Floor,
                Some("never-errors") => {
                    return Err(bad(
                        "`never-errors` is built in and checked for every production policy; \
                         an invariant file is a ceiling or a floor"
                            .into(),
                    ))
                }
                Some(other) => {
                    return Err(bad(format!(
                        "unknown @kind(\"{other}\"): use @kind(\"ceiling\") or @kind(\"floor\")"
                    )))
                }
                None => {
                    return Err(bad(
                        "no @kind annotation: add @kind(\"ceiling\") or @kind(\"floor\")".into(),
                    ))
                }
            };
            match kind {
                None => kind = Some(this),
                Some(k) if k != this => {
                    return Err(bad(format!(
                        "@kind(\"{this}\") differs from @kind(\"{k}\") earlier in the file: \
                         one file is one invariant of one kind"
                    )))
                }
                Some(_) => {}
            }
        }
        let Some(kind) = kind else {
            continue;
        };
        let id = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Invariant {
            id,
            kind,
            description: pack.policies.first().and_then(|p| p.description.clone()),
            file,
            policy_set: pack.policy_set,
        });
    }
    Ok(out)
}

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

/// Gives the solver's entity ids (often `""`, `"A"`) readable, stable names
/// (`user-1`, `account-1`, ...: principal first, then resource, then in
/// sorted order), and drops the action entities, which the schema supplies.
#[derive(Default)]
struct Renamer {
    map: std::collections::HashMap<(String, String), String>,
    counts: std::collections::HashMap<String, usize>,
    /// Renamed (type, id) of the principal and the resource, listed first.
    front: Vec<(String, String)>,
}

impl Renamer {
    fn name_parts(&mut self, ty: &str, id: &str) -> String {
        if ty == "Action" || ty.ends_with("::Action") {
            return id.to_string();
        }
        let key = (ty.to_string(), id.to_string());
        if let Some(n) = self.map.get(&key) {
            return n.clone();
        }
        let count = self.counts.entry(ty.to_string()).or_insert(0);
        *count += 1;
        let base = ty.rsplit("::").next().unwrap_or(ty).to_lowercase();
        let name = format!("{base}-{count}");
        self.map.insert(key, name.clone());
        name
    }

    fn name(&mut self, uid: &cedar_policy::EntityUid) -> String {
        let ty = uid.type_name().to_string();
        let name = self.name_parts(&ty, uid.id().unescaped());
        self.front.push((ty, name.clone()));
        name
    }

    fn uid(&mut self, uid: &cedar_policy::EntityUid) -> String {
        let ty = uid.type_name().to_string();
        let id = self.name_parts(&ty, uid.id().unescaped());
        format!("{ty}::{}", serde_json::Value::String(id))
    }

    /// Rename every `{"type": .., "id": ..}` object (uids, parents,
    /// `__entity` references) in the entity store and the context.
    fn rewrite(
        &mut self,
        entities: serde_json::Value,
        context: serde_json::Value,
    ) -> (serde_json::Value, serde_json::Value) {
        let mut list = match entities {
            serde_json::Value::Array(list) => list,
            other => return (other, context),
        };
        let key = |e: &serde_json::Value| {
            let u = &e["uid"];
            (
                u["type"].as_str().unwrap_or("").to_string(),
                u["id"].as_str().unwrap_or("").to_string(),
            )
        };
        list.retain(|e| {
            let (ty, _) = key(e);
            !(ty == "Action" || ty.ends_with("::Action"))
        });
        list.sort_by_key(key);
        // Name the stored entities in sorted order before anything nested.
        for e in &list {
            let (ty, id) = key(e);
            self.name_parts(&ty, &id);
        }
        let list = list.into_iter().map(|e| self.rewrite_value(e)).collect();
        let mut list = match list {
            serde_json::Value::Array(l) => l,
            _ => Vec::new(),
        };
        // Principal and resource first, then by type and name.
        let front = std::mem::take(&mut self.front);
        list.sort_by_key(|e| {
            let k = key(e);
            let rank = front.iter().position(|f| f == &k).unwrap_or(front.len());
            (rank, k)
        });
        self.front = front;
        let context = self.rewrite_value(context);
        (serde_json::Value::Array(list), context)
    }

    fn rewrite_value(&mut self, v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(mut m) => {
                let is_uid = m.len() == 2
                    && m.get("type").is_some_and(Value::is_string)
                    && m.get("id").is_some_and(Value::is_string);
                if is_uid {
                    let ty = m["type"].as_str().unwrap_or("").to_string();
                    let id = m["id"].as_str().unwrap_or("").to_string();
                    let new = self.name_parts(&ty, &id);
                    m.insert("id".into(), Value::String(new));
                    return Value::Object(m);
                }
                for (_, inner) in &mut m {
                    let taken = std::mem::take(inner);
                    *inner = self.rewrite_value(taken);
                }
                Value::Object(m)
            }
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.rewrite_value(x)).collect()),
            other => other,
        }
    }
}

/// Replay a counterexample from its JSON, the way `partnergate authorize`
/// does (schema-checked request and entities, fail-closed decision).
fn replay(
    pack: &PolicyPack,
    schema: &Schema,
    c: &Counterexample,
    label: &EnvLabel,
) -> Result<Decision, ProveError> {
    let bad = |message: String| ProveError::Counterexample {
        env: label.to_string(),
        message: format!("does not replay: {message}"),
    };
    let question = engine::JsonQuestion {
        principal: &c.principal,
        action: &c.action,
        resource: &c.resource,
        context: Some(c.context.clone()),
        entities: c.entities.clone(),
    };
    let question =
        engine::Question::parse(Some(schema), question).map_err(|e| bad(e.to_string()))?;
    Ok(question.decide(pack, Semantics::FailClosed))
}

/// Files written for one counterexample, and the command that replays it.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenCounterexample {
    /// The id of the violated invariant.
    pub invariant: String,
    /// The request environment of the violation.
    pub environment: EnvLabel,
    /// `<stem>.request.json`: the request, the offending and replayed decisions.
    pub request: PathBuf,
    /// `<stem>.context.json`: the context record.
    pub context: PathBuf,
    /// `<stem>.entities.json`: the Cedar JSON entity store.
    pub entities: PathBuf,
    /// `partnergate authorize ...` replaying it against the production pack.
    pub command: String,
    /// For `--equivalent`: the same replay against the other policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_command: Option<String>,
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn file_stem_for(invariant: &str, n: usize, v: &Violation) -> String {
    let action = v
        .counterexample
        .action
        .rsplit("::")
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    let raw = format!(
        "{invariant}-{n:02}-{}-{action}-{}",
        v.environment.principal, v.environment.resource
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write every counterexample of `report` into `dir` (created if needed):
/// `<stem>.request.json` (principal, action, resource, context, the expected
/// and the replayed decision), `<stem>.context.json` and
/// `<stem>.entities.json`. `source` is the pack the commands replay against.
pub fn write_counterexamples(
    report: &ProofReport,
    dir: &Path,
    source: &PackSource,
    other: Option<&PackSource>,
) -> Result<Vec<WrittenCounterexample>, ProveError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProveError::Io { path, source }
    };
    let mut written = Vec::new();
    if report.holds() {
        return Ok(written);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for r in report.violated() {
        for (n, v) in r.violations.iter().enumerate() {
            let stem = file_stem_for(&r.id, n + 1, v);
            let c = &v.counterexample;
            let request = dir.join(format!("{stem}.request.json"));
            let context = dir.join(format!("{stem}.context.json"));
            let entities = dir.join(format!("{stem}.entities.json"));
            let pretty = |v: &serde_json::Value| {
                let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
                s.push('\n');
                s
            };
            let req = serde_json::json!({
                "invariant": r.id,
                "kind": r.kind,
                "environment": v.environment,
                "policy": v.policy,
                "principal": c.principal,
                "action": c.action,
                "resource": c.resource,
                "context": c.context,
                "offending_decision": c.offending,
                "production_decision": c.production,
                "other_decision": c.other,
            });
            std::fs::write(&request, pretty(&req)).map_err(io(&request))?;
            std::fs::write(&context, pretty(&c.context)).map_err(io(&context))?;
            std::fs::write(&entities, pretty(&c.entities)).map_err(io(&entities))?;
            let command_for = |source: &PackSource| {
                let mut command = String::from("partnergate authorize");
                command.push_str(&format!(
                    " --policies {}",
                    shell_quote(&source.policies.display().to_string())
                ));
                if let Some(s) = &source.schema {
                    command.push_str(&format!(
                        " --schema {}",
                        shell_quote(&s.display().to_string())
                    ));
                }
                command.push_str(&format!(
                    " --principal {} --action {} --resource {} --context {} --entities {}",
                    shell_quote(&c.principal),
                    shell_quote(&c.action),
                    shell_quote(&c.resource),
                    shell_quote(&format!("@{}", context.display())),
                    shell_quote(&entities.display().to_string()),
                ));
                command
            };
            let command = command_for(source);
            let other_command = other.map(command_for);
            written.push(WrittenCounterexample {
                invariant: r.id.clone(),
                environment: v.environment.clone(),
                request,
                context,
                entities,
                command,
                other_command,
            });
        }
    }
    Ok(written)
}

/// `<policies>/invariants` for a policy directory, `invariants/` beside a
/// single policy file.
pub fn default_invariants_dir(policies: &Path) -> PathBuf {
    if policies.is_file() {
        policies
            .parent()
            .unwrap_or(Path::new("."))
            .join("invariants")
    } else {
        policies.join("invariants")
    }
}

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
