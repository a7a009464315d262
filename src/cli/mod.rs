//! The command-line adapter: clap definitions and one function per command.
//! It parses arguments into library calls and renders results; no decision
//! logic lives here.
//!
//! Exit codes follow the Cedar CLI: 0 success, 1 error, 2 the decision was
//! Deny (`authorize`), 3 validation failed (`check`).

pub mod audit;
pub mod common;
pub mod log_lines;
pub mod partners;
pub mod prove;
pub mod search;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use partnergate_policy::engine::{self, Effect, Semantics};
use partnergate_policy::policies::{self, PolicyPack};
use partnergate_policy::suite;

pub(crate) use audit::audit_config;
pub use common::{
    load_exit_code, LimitArgs, PackArgs, DEFAULT_POLICIES, DEFAULT_SCHEMA, EXIT_DENY, EXIT_ERROR,
    EXIT_INVALID, EXIT_OK,
};

#[derive(Debug, Parser)]
#[command(
    name = "partnergate",
    version,
    about = "Cedar authorization engine and sidecar for partner access to customer accounts",
    after_help = "Exit codes: 0 success, 1 error, 2 decision was Deny (authorize), 3 validation failed (check)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and strictly validate the policies against the schema.
    Check(CheckArgs),
    /// Evaluate one request and print the decision, reasons and errors.
    Authorize(AuthorizeArgs),
    /// Run policy test suites (Cedar run-tests JSON or PartnerGate TOML) and report coverage.
    Test(TestArgs),
    /// Format the policy files (cedar-policy-formatter).
    Fmt(FmtArgs),
    /// Run the HTTP authorization sidecar (hot-reloads the policies).
    Serve(ServeArgs),
    /// Bulk-load Cedar entity JSON into the store of a data directory.
    Import(ImportArgs),
    /// Prove invariants (ceilings, floors, never-errors) for every request and entity store, with cvc5.
    Prove(prove::ProveArgs),
    /// The decision log: verify its hash chain, query it, replay it against candidate policies.
    Audit(audit::AuditArgs),
    /// Partner users: invite (asks which partner to dismiss when the seats are full), grant.
    Partners(partners::PartnersArgs),
    /// Account users: list, invite, accept, dismiss, rehire.
    Users(partners::UsersArgs),
    /// Seat counts of an account (partners are neither paid users nor administrators).
    Seats(partners::SeatsArgs),
    /// The partner registry: import, list.
    Registry(partners::RegistryArgs),
    /// Who may, to which, what: subject, resource and action search over the store.
    Search(search::SearchArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The sidecar's own log: `text` (one line per event) or `json` (one
    /// JSON object per line, for a log pipeline); on stderr, never coloured.
    #[arg(long, env = "PARTNERGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What the sidecar logs: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`) or `RUST_LOG`-style directives (`info,partnergate_core=debug`).
    /// Without it, `RUST_LOG`; without that, `info`.
    #[arg(long, env = "PARTNERGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Directory of .cedar policy files (or one file).
    #[arg(long, env = "PARTNERGATE_POLICIES", default_value = DEFAULT_POLICIES)]
    pub policies: PathBuf,
    /// The Cedar schema.
    #[arg(long, env = "PARTNERGATE_SCHEMA", default_value = DEFAULT_SCHEMA)]
    pub schema: PathBuf,
    /// Where the store, the token and the logs live (created if missing).
    #[arg(long, env = "PARTNERGATE_DATA_DIR", default_value = partnergate_server::defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "PARTNERGATE_BIND", default_value = partnergate_server::defaults::BIND)]
    pub bind: std::net::SocketAddr,
    /// File with the bearer token for write endpoints [default: DATA_DIR/token, generated]
    #[arg(long, env = "PARTNERGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Require the token on query endpoints too.
    #[arg(long, env = "PARTNERGATE_PROTECT_QUERIES")]
    pub protect_queries: bool,
    /// Most requests in one batch call.
    #[arg(long, env = "PARTNERGATE_MAX_BATCH", default_value_t = partnergate_server::defaults::MAX_BATCH)]
    pub max_batch: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "PARTNERGATE_MAX_BODY_BYTES", default_value_t = partnergate_server::defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Most bytes of request bodies held at once across all connections
    /// (the ext_authz gRPC calls; past it a call is RESOURCE_EXHAUSTED).
    #[arg(long, env = "PARTNERGATE_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = partnergate_server::defaults::MAX_BODY_BYTES_IN_FLIGHT)]
    pub max_body_bytes_in_flight: usize,
    /// Per-request timeout, in milliseconds.
    #[arg(long, env = "PARTNERGATE_REQUEST_TIMEOUT_MS", default_value_t = partnergate_server::defaults::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// How long shutdown waits for requests in flight, in milliseconds.
    #[arg(long, env = "PARTNERGATE_SHUTDOWN_GRACE_MS", default_value_t = partnergate_server::defaults::SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
    /// Do not watch the policy files (SIGHUP still reloads).
    #[arg(long, env = "PARTNERGATE_NO_WATCH")]
    pub no_watch: bool,
    /// Reject any policy reload that breaks an invariant (symbolic proof with cvc5).
    #[arg(long, env = "PARTNERGATE_PROVE_ON_RELOAD")]
    pub prove_on_reload: bool,
    /// The invariants for --prove-on-reload and the console's proofs
    /// [default: POLICIES/invariants, as `partnergate prove`]
    #[arg(long, env = "PARTNERGATE_INVARIANTS")]
    pub invariants: Option<PathBuf>,
    /// Entity store: `sqlite` (DATA_DIR/store.db) or a postgres:// URL shared by replicas.
    #[arg(long, env = "PARTNERGATE_STORE", default_value = "sqlite")]
    pub store: String,
    /// This replica's id in change feeds and logs [default: hostname-pid]
    #[arg(long, env = "PARTNERGATE_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Evaluate every request also against these candidate policies; log and
    /// count disagreements (never affects the answer).
    #[arg(long, env = "PARTNERGATE_SHADOW_POLICIES")]
    pub shadow_policies: Option<PathBuf>,
    // HTTP limits (issue #12).
    /// Close a connection that sends no complete request headers within this
    /// many milliseconds (from accept, or the first byte of the next request).
    #[arg(long, env = "PARTNERGATE_HEADER_TIMEOUT_MS", default_value_t = partnergate_server::defaults::HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// Close a keep-alive connection idle between requests this many milliseconds.
    #[arg(long, env = "PARTNERGATE_IDLE_TIMEOUT_MS", default_value_t = partnergate_server::defaults::IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// Most client connections at once (lowered to fit the open-files limit).
    #[arg(long, env = "PARTNERGATE_MAX_CONNECTIONS", default_value_t = partnergate_server::defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Require the token on /metrics too.
    #[arg(long, env = "PARTNERGATE_PROTECT_METRICS")]
    pub protect_metrics: bool,
    /// Base URL advertised by /.well-known/authzen-configuration [default: http://<bound address>]
    #[arg(long, env = "PARTNERGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Refuse (503, a deny) every decision whose decision-log record cannot
    /// be made durable (written and fsynced per --audit-sync); default off:
    /// a failing log is counted, shown and stated by a gap record instead.
    #[arg(long, env = "PARTNERGATE_AUDIT_REQUIRED")]
    pub audit_required: bool,
    /// What request `entities` and AuthZEN `properties` may do: `add` (only
    /// facts the store does not hold), `override` (replace stored facts),
    /// `deny` (refuse them).
    #[arg(long, env = "PARTNERGATE_REQUEST_ENTITIES", default_value = "add")]
    pub request_entities: partnergate_core::authz::RequestEntities,
    /// How many decisions the exact decision cache keeps: a repeated question
    /// is answered from it while the pack version and every entity the
    /// decision read are unchanged (each hit is still logged); 0 turns it off.
    #[arg(long, env = "PARTNERGATE_DECISION_CACHE", value_name = "ENTRIES",
        default_value_t = partnergate_server::defaults::DECISION_CACHE)]
    pub decision_cache: usize,
    /// Serve Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization`)
    /// on this address (`127.0.0.1:9191`) or Unix socket (`unix:PATH`), under
    /// the routes file beside the policies (docs/gateway.md).
    #[arg(
        long,
        env = "PARTNERGATE_EXT_AUTHZ_GRPC",
        value_name = "ADDR|unix:PATH"
    )]
    pub ext_authz_grpc: Option<partnergate_server::gateway::GrpcListen>,
    /// Search page size when a request gives none (`page.limit`).
    #[arg(long, env = "PARTNERGATE_SEARCH_DEFAULT_LIMIT", default_value_t = partnergate_search::DEFAULT_LIMIT)]
    pub search_default_limit: usize,
    /// Largest search page a request may ask for (more is a 400).
    #[arg(long, env = "PARTNERGATE_SEARCH_MAX_LIMIT", default_value_t = partnergate_search::MAX_LIMIT)]
    pub search_max_limit: usize,
    /// Searches that may run at once (each may cost seconds of CPU on a
    /// large account); one more is answered 429 `search_busy` with
    /// `Retry-After`, never queued.
    #[arg(long, env = "PARTNERGATE_MAX_CONCURRENT_SEARCHES", default_value_t = partnergate_search::CONCURRENT)]
    pub max_concurrent_searches: usize,
    /// How often, in milliseconds, ended partner access is marked (seat
    /// freed, a change record by `system`); seat checks count an ended
    /// access as free before that anyway.
    #[arg(long, env = "PARTNERGATE_PARTNER_SWEEP_MS", value_name = "MS",
        default_value_t = partnergate_server::defaults::PARTNER_SWEEP_MS)]
    pub partner_sweep_ms: u64,
    /// Do not serve the web console at /console.
    #[arg(long, env = "PARTNERGATE_NO_CONSOLE")]
    pub no_console: bool,
    /// The policy test suites the console runs (files or directories).
    #[arg(long, env = "PARTNERGATE_TESTS", default_value = partnergate_server::defaults::TESTS)]
    pub tests: PathBuf,
    #[command(flatten)]
    pub audit: audit::AuditLogArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The data directory whose store receives the entities.
    #[arg(long, env = "PARTNERGATE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Validate every entity against this schema.
    #[arg(long, env = "PARTNERGATE_SCHEMA", default_value = DEFAULT_SCHEMA)]
    pub schema: PathBuf,
    /// A file of Cedar entity JSON (an array).
    pub file: PathBuf,
}

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
    pub log: audit::AuditLogArgs,
}

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

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// A directory of .cedar files or one file [default: policies]
    #[arg(long, env = "PARTNERGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Do not write; exit 1 if any file is not formatted.
    #[arg(long)]
    pub check: bool,
}

/// Run a parsed command line; returns the process exit code. Output goes to
/// `out`, problems to `err`.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match cli.command {
        Command::Check(a) => check(&a, out, err),
        Command::Authorize(a) => authorize(&a, out, err),
        Command::Test(a) => test(&a, out, err),
        Command::Fmt(a) => fmt(&a, out, err),
        Command::Serve(a) => serve(a, err),
        Command::Import(a) => import(&a, out, err),
        Command::Prove(a) => prove::run_prove(&a, out, err).map_err(CliError::from),
        Command::Audit(a) => return audit::run(&a, out, err),
        Command::Partners(a) => Ok(partners::run_partners(a, out, err)),
        Command::Users(a) => Ok(partners::run_users(a, out, err)),
        Command::Seats(a) => Ok(partners::run_seats(a, out, err)),
        Command::Registry(a) => Ok(partners::run_registry(a, out, err)),
        Command::Search(a) => Ok(search::run_search(a, out, err)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_ERROR
        }
    }
}

/// Errors of the CLI's own (files it cannot read or write).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error(transparent)]
    Suite(#[from] suite::SuiteError),
}

/// Load a pack, printing its errors; `Err(code)` when it cannot be loaded.
fn load_pack(args: &PackArgs, err: &mut dyn Write) -> Result<PolicyPack, u8> {
    policies::load(&args.source()).map_err(|e| {
        let _ = write!(err, "{}", e.render());
        load_exit_code(&e)
    })
}

fn check(a: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
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

fn authorize(a: &AuthorizeArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
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

fn test(a: &TestArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
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

fn fmt(a: &FmtArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
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

/// Install the log subscriber (RUST_LOG, default `info`), once: plain text
/// or JSON lines on stderr, one line per event (control characters a field
/// carries are escaped by [`log_lines`], so no colours either). A line
/// logged while a request is answered carries the request's span (its id,
/// method, path and decision id): in JSON, the `span` member.
pub fn init_logging(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(directives) => tracing_subscriber::EnvFilter::try_new(directives)
            .map_err(|e| format!("--log-level `{directives}`: {e}"))?,
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(log_lines::EscapedStderr);
    // Either way one event is one line: JSON escapes its strings itself,
    // and the writer escapes what the text format would not.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

/// `serve --log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message`
    /// and the event's fields, e.g. `decision_id`).
    Json,
}

/// The sidecar's configuration from its flags (the error names the flag).
pub fn serve_config(a: ServeArgs) -> Result<partnergate_server::ServeConfig, String> {
    if a.search_default_limit == 0 || a.search_default_limit > a.search_max_limit {
        return Err(format!(
            "--search-default-limit {}: must be between 1 and --search-max-limit ({})",
            a.search_default_limit, a.search_max_limit
        ));
    }
    if a.max_concurrent_searches == 0 {
        return Err("--max-concurrent-searches 0: at least one search must be able to run".into());
    }
    let invariants = a
        .invariants
        .clone()
        .unwrap_or_else(|| partnergate_prove::default_invariants_dir(&a.policies));
    Ok(partnergate_server::ServeConfig {
        policies: a.policies,
        schema: a.schema,
        data_dir: a.data_dir.clone(),
        bind: a.bind,
        token_file: a.token_file,
        protect_queries: a.protect_queries,
        max_batch: a.max_batch,
        max_body_bytes: a.max_body_bytes,
        max_body_bytes_in_flight: a.max_body_bytes_in_flight,
        request_timeout: std::time::Duration::from_millis(a.request_timeout_ms),
        shutdown_grace: std::time::Duration::from_millis(a.shutdown_grace_ms),
        watch: !a.no_watch,
        prove_on_reload: a.prove_on_reload,
        invariants,
        store: partnergate_core::store::StoreSpec::parse(Some(&a.store))
            .map_err(|e| e.to_string())?,
        replica: a
            .replica_id
            .unwrap_or_else(partnergate_server::default_replica_id),
        audit: audit_config(&a.audit, &a.data_dir),
        audit_required: a.audit_required,
        shadow_policies: a.shadow_policies,
        limits: a.limits.limits(),
        header_timeout: std::time::Duration::from_millis(a.header_timeout_ms),
        idle_timeout: std::time::Duration::from_millis(a.idle_timeout_ms),
        max_connections: a.max_connections,
        protect_metrics: a.protect_metrics,
        public_url: a.public_url,
        request_entities: a.request_entities,
        decision_cache: a.decision_cache,
        ext_authz_grpc: a.ext_authz_grpc,
        search_limits: partnergate_search::Limits {
            default: a.search_default_limit,
            max: a.search_max_limit,
            concurrent: a.max_concurrent_searches,
        },
        partner_sweep: std::time::Duration::from_millis(a.partner_sweep_ms),
        console: !a.no_console,
        tests: a.tests,
    })
}

fn serve(a: ServeArgs, err: &mut dyn Write) -> Result<u8, CliError> {
    if let Err(e) = init_logging(a.log_format, a.log_level.as_deref()) {
        writeln!(err, "error: {e}")?;
        return Ok(EXIT_ERROR);
    }
    let config = match serve_config(a) {
        Ok(c) => c,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(EXIT_ERROR);
        }
    };
    // Policies are parsed (reloads, proofs) and evaluated on these threads:
    // give them the stack that the nesting limit is sized for.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(partnergate_policy::prescan::POLICY_THREAD_STACK)
        .build()?;
    let grace = config.shutdown_grace;
    let result = runtime.block_on(partnergate_server::serve(config));
    // Blocking work still running (a log scan past its request) does not
    // hold the exit beyond the grace: the runtime waits at most that long.
    runtime.shutdown_timeout(grace);
    match result {
        Ok(()) => Ok(EXIT_OK),
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(EXIT_ERROR)
        }
    }
}

fn import(a: &ImportArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, CliError> {
    let started = std::time::Instant::now();
    let schema = match policies::load_schema(&a.schema) {
        Ok(s) => s,
        Err(e) => {
            write!(err, "{}", e.render())?;
            return Ok(EXIT_ERROR);
        }
    };
    let file = std::fs::File::open(&a.file).map_err(|e| CliError::Input {
        path: a.file.clone(),
        message: e.to_string(),
    })?;
    let value: serde_json::Value =
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| CliError::Input {
            path: a.file.clone(),
            message: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
    let store = match partnergate_core::store::sqlite::SqliteStore::open_in(&a.data_dir) {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(EXIT_ERROR);
        }
    };
    match partnergate_core::directory::import(&store, Some(&schema), value) {
        Ok(n) => {
            writeln!(
                out,
                "imported {n} entities into {} in {:.1}s",
                partnergate_core::store::EntityBackend::describe(&store),
                started.elapsed().as_secs_f64()
            )?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            writeln!(
                err,
                "error: {}: {e} (nothing was imported)",
                a.file.display()
            )?;
            Ok(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn serve_flags_default_to_serve_config_default() {
        // One set of defaults: `partnergate serve` with no flags configures
        // what `ServeConfig::default()` does (the decision log aside: the
        // binary turns it on, the library leaves it to the embedder).
        let Command::Serve(args) = Cli::try_parse_from(["partnergate", "serve"])
            .unwrap()
            .command
        else {
            panic!("not serve");
        };
        let from_flags = serve_config(args).unwrap();
        let default = partnergate_server::ServeConfig::default();
        let view = |c: &partnergate_server::ServeConfig| {
            format!(
                "{:?}",
                (
                    (&c.policies, &c.schema, &c.data_dir, c.bind, &c.token_file),
                    (
                        c.protect_queries,
                        c.max_batch,
                        c.max_body_bytes,
                        c.max_body_bytes_in_flight,
                        c.request_timeout
                    ),
                    (
                        c.shutdown_grace,
                        c.watch,
                        c.prove_on_reload,
                        &c.invariants,
                        &c.store
                    ),
                    (
                        c.audit_required,
                        &c.shadow_policies,
                        c.limits,
                        c.header_timeout
                    ),
                    (
                        c.idle_timeout,
                        c.max_connections,
                        c.protect_metrics,
                        &c.public_url
                    ),
                    (c.request_entities, c.console, &c.tests),
                )
            )
        };
        assert_eq!(view(&from_flags), view(&default));
    }
}
