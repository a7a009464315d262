//! `partnergate serve`: the sidecar's flags ([`ServeArgs`], whose `--help`
//! is docs/serve.md's flag reference), the sidecar's own log
//! ([`init_logging`], [`LogFormat`]), the configuration the flags give
//! ([`serve_config`]) and the runtime the server runs on.
//!
//! Owns the `serve` command only; it must never know another command, and
//! leaves HTTP to `partnergate-server`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::audit::{audit_config, AuditLogArgs};
use super::common::{CliError, DEFAULT_POLICIES, DEFAULT_SCHEMA, EXIT_ERROR, EXIT_OK};
use super::log_lines;
use super::pack_args::LimitArgs;

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
    /// Re-parse and re-validate every policy file on every reload, not only
    /// the files whose text changed (the same policies, slower; to compare)
    #[arg(long, env = "PARTNERGATE_FULL_RELOAD")]
    pub full_reload: bool,
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
    /// With a postgres:// store: keep the change feed's rows this many
    /// seconds (by the database's clock), then compact them; a replica
    /// stopped longer reloads every entity when it resumes. 0: never compact.
    #[arg(long, env = "PARTNERGATE_FEED_RETENTION_SECS", default_value_t = partnergate_server::defaults::FEED_RETENTION_SECS)]
    pub feed_retention_secs: u64,
    /// Evaluate every request also against these candidate policies; log and
    /// count disagreements (never affects the answer).
    #[arg(long, env = "PARTNERGATE_SHADOW_POLICIES")]
    pub shadow_policies: Option<PathBuf>,
    // HTTP limits.
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
    /// Do not ship the decision log into PostgreSQL (by default a server
    /// whose --store is PostgreSQL copies its log file there, for `audit
    /// verify --pg` and `audit query --pg` over every replica).
    #[arg(long, env = "PARTNERGATE_NO_AUDIT_SHIP")]
    pub no_audit_ship: bool,
    /// The pause between shipping rounds that found nothing to ship.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub audit_ship_interval_ms: u64,
    /// Records per shipping transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub audit_ship_batch: u64,
    /// With a PostgreSQL store: drop the shipped logs' day partitions older
    /// than this many days (UTC; today and the last DAYS whole days are
    /// kept), at start and hourly, recording each cut in the retentions'
    /// chain so that `audit verify --pg` accepts it. Default: keep all.
    #[arg(long, env = "PARTNERGATE_AUDIT_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub audit_retention_days: Option<u32>,
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
    /// When, before a partner's access ends, the event
    /// `partner.access_ending_soon` is sent: lead times separated by commas
    /// (`7d,1d`, `36h`; units d, h, m, s), each once per access end (a renewal
    /// gives new ones); `none` for never.
    #[arg(
        long,
        env = "PARTNERGATE_ENDING_SOON",
        value_name = "LEADS",
        default_value = "7d,1d"
    )]
    pub ending_soon: String,
    /// The webhook configuration (endpoints, secrets, retries: see
    /// docs/events.md); default DATA_DIR/webhooks.toml when present, else
    /// events wait in the outbox (GET /v1/events) undelivered.
    #[arg(long, env = "PARTNERGATE_WEBHOOKS", value_name = "FILE")]
    pub webhooks: Option<PathBuf>,
    /// Do not serve the web console at /console.
    #[arg(long, env = "PARTNERGATE_NO_CONSOLE")]
    pub no_console: bool,
    /// The policy test suites the console runs (files or directories).
    #[arg(long, env = "PARTNERGATE_TESTS", default_value = partnergate_server::defaults::TESTS)]
    pub tests: PathBuf,
    #[command(flatten)]
    pub audit: AuditLogArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
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
        full_reload: a.full_reload,
        prove_on_reload: a.prove_on_reload,
        invariants,
        store: partnergate_core::store::StoreSpec::parse(Some(&a.store))
            .map_err(|e| e.to_string())?,
        replica: a
            .replica_id
            .unwrap_or_else(partnergate_server::default_replica_id),
        feed_retention: (a.feed_retention_secs > 0)
            .then(|| std::time::Duration::from_secs(a.feed_retention_secs)),
        audit: audit_config(&a.audit, &a.data_dir),
        audit_required: a.audit_required,
        audit_ship: !a.no_audit_ship,
        audit_ship_interval: std::time::Duration::from_millis(a.audit_ship_interval_ms),
        audit_ship_batch: a.audit_ship_batch as usize,
        audit_retention_days: a.audit_retention_days,
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
        ending_soon: ending_soon(&a.ending_soon)?,
        webhooks: a.webhooks,
        console: !a.no_console,
        tests: a.tests,
    })
}

/// `partnergate serve`: run the sidecar until it is stopped.
pub fn run_serve(a: ServeArgs, err: &mut dyn Write) -> Result<u8, CliError> {
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

/// `--ending-soon`: lead times separated by commas (`7d,1d`), or `none`.
fn ending_soon(text: &str) -> Result<Vec<std::time::Duration>, String> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|lead| {
            let ms = partnergate_orchestrator::access::parse_duration(lead.trim())
                .map_err(|e| format!("--ending-soon `{lead}`: {e}"))?;
            u64::try_from(ms)
                .ok()
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| format!("--ending-soon `{lead}`: must be more than zero"))
        })
        .collect()
}
