//! The `partnergate audit ...` commands (verify, query, replay, and a hidden
//! `stress` writer used by the crash test and the throughput measurement),
//! and [`AuditLogArgs`], the `--audit-*` flags a server flattens into its
//! own arguments to configure the log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::json;

use super::common::{EXIT_ERROR, EXIT_OK};
use super::pack_args::{load_exit_code, PackArgs};
use partnergate_audit::query::{self, parse_time, Filter, Head};
use partnergate_audit::record::{DecisionEvent, EntitySlice, Kind};
use partnergate_audit::replay::{self, ReplayOptions, ReplayReport};
use partnergate_audit::writer::{
    AuditConfig, AuditLog, OnFull, Sink, SyncMode, DEFAULT_LINGER, DEFAULT_PATH,
};
use partnergate_audit::{chain, Redaction};
use partnergate_policy::engine::{self, Decision, Effect, Reason, Semantics};
use partnergate_policy::policies;

/// `audit verify`: the chain is broken.
pub const EXIT_BROKEN: u8 = 3;
/// `audit verify`: the chain is unbroken, but gap records state that
/// records were not logged (a full disk, a full queue).
pub const EXIT_GAP: u8 = 4;
/// `audit replay --fail-on-change`: some decisions would change.
pub const EXIT_CHANGED: u8 = 2;

/// The decision log commands.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of a log and its rotated files; report the first
    /// edited, missing, inserted or reordered record (exit 3 if broken); exit 4
    /// if unbroken but gap records state records that were not logged.
    Verify(VerifyArgs),
    /// Select records by principal, action, resource, decision, kind, time
    /// and policy version (streams; a table, or JSON Lines with --json).
    Query(QueryArgs),
    /// Re-evaluate every logged decision with candidate policies and report
    /// what would change (exit 2 with --fail-on-change if anything would).
    Replay(ReplayArgs),
    /// What did my partner do: every decision and change of an account's
    /// partners (or one of them) in a time range, with the reasons, and
    /// whether the chain verified (a table, or JSON with --json).
    PartnerActivity(PartnerActivityArgs),
    /// Copy a log's records that the database does not hold yet into
    /// PostgreSQL (resumes where the database says it stopped; nothing
    /// twice). For the files of stopped replicas; `serve` ships its own.
    Ship(super::audit_pg::ShipArgs),
    /// Drop the day partitions of the shipped logs older than --days days,
    /// recording each log's cut in the retentions' own chain so that
    /// `audit verify --pg` accepts it (and nothing else).
    Retention(super::audit_pg::RetentionArgs),
    /// Write synthetic decision records as fast as possible (testing and
    /// throughput measurement).
    #[command(hide = true)]
    Stress(StressArgs),
}

#[derive(Debug, Args)]
pub struct PartnerActivityArgs {
    /// The log (its rotated siblings PATH.1, PATH.2, ... are included)
    #[arg(default_value = DEFAULT_PATH)]
    pub path: PathBuf,
    /// The account whose partners' activity to report.
    #[arg(long)]
    pub account: String,
    /// Report over every log shipped into this PostgreSQL database instead
    /// of a file (every replica's records).
    #[arg(long = "pg")]
    pub pg: Option<String>,
    /// One partner: 'User::"pat"' or just pat (default: every partner).
    #[arg(long)]
    pub partner: Option<String>,
    /// Records at or after this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<time::OffsetDateTime>,
    /// Records before this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<time::OffsetDateTime>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log (its rotated siblings PATH.1, PATH.2, ... are included)
    #[arg(default_value = DEFAULT_PATH)]
    pub path: PathBuf,
    /// Verify every log shipped into this PostgreSQL database instead of a
    /// file (each replica's chain, with its gaps).
    #[arg(long = "pg")]
    pub pg: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The log (its rotated siblings PATH.1, PATH.2, ... are included)
    #[arg(default_value = DEFAULT_PATH)]
    pub path: PathBuf,
    /// Query every log shipped into this PostgreSQL database instead of a
    /// file (every replica's records, oldest first).
    #[arg(long = "pg")]
    pub pg: Option<String>,
    /// Principal (or actor of a change): 'User::"alice"' or just alice.
    #[arg(long)]
    pub principal: Option<String>,
    /// Action (or operation of a change): 'Action::"invite_user"' or invite_user.
    #[arg(long)]
    pub action: Option<String>,
    /// Resource: 'Account::"acme"' or acme.
    #[arg(long)]
    pub resource: Option<String>,
    /// Allow or Deny.
    #[arg(long, value_parser = clap::value_parser!(Effect))]
    pub decision: Option<Effect>,
    /// decision, change, reload or repair.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<Kind>,
    /// Records at or after this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<time::OffsetDateTime>,
    /// Records before this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<time::OffsetDateTime>,
    /// Policy version (or a prefix of it), e.g. sha256:3f2a.
    #[arg(long)]
    pub policy_version: Option<String>,
    /// The decision with this id (as returned to the caller).
    #[arg(long)]
    pub decision_id: Option<String>,
    /// Decisions this policy determined (its id among the reasons).
    #[arg(long)]
    pub policy: Option<String>,
    /// Records of the request with this id (its `X-Request-ID`).
    #[arg(long)]
    pub request_id: Option<String>,
    /// Print the matching records as JSON Lines (as written).
    #[arg(long)]
    pub json: bool,
    /// With --json: print every decision with its `entities`, also those
    /// that name their slice by `entities_hash` (carried by an earlier
    /// record of the same file). Such lines are for reading, not `verify`.
    #[arg(long, requires = "json")]
    pub with_entities: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The log (its rotated siblings PATH.1, PATH.2, ... are included)
    #[arg(default_value = DEFAULT_PATH)]
    pub path: PathBuf,
    /// Replay every decision shipped into this PostgreSQL database instead
    /// of a file (every replica's log).
    #[arg(long = "pg")]
    pub pg: Option<String>,
    #[command(flatten)]
    pub pack: PackArgs,
    /// Only decisions logged at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<time::OffsetDateTime>,
    /// Exit 2 when any decision would change.
    #[arg(long)]
    pub fail_on_change: bool,
    /// Examples shown per group.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StressArgs {
    /// Records to write.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Threads calling log() concurrently.
    #[arg(long, default_value_t = 1)]
    pub threads: u64,
    /// Make each record a real decision (parse the request and entities,
    /// decide with the pack) instead of a canned one; with `--audit-log off`
    /// this measures deciding without the log.
    #[arg(long)]
    pub decide: bool,
    #[command(flatten)]
    pub pack: PackArgs,
    #[command(flatten)]
    pub log: AuditLogArgs,
}

/// `--audit-sync`: the command line's name for [`SyncMode`] (the library
/// knows no clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncFlag {
    /// After every record (slowest, nothing acknowledged-and-written is lost).
    Always,
    /// Group commit: while the writer is busy, at most every 20 ms; at once
    /// when it goes idle, on a flush, a rotation and a stop.
    Batch,
    /// Never (the OS writes back; a power loss may lose the tail).
    Never,
}

impl From<SyncFlag> for SyncMode {
    fn from(f: SyncFlag) -> Self {
        match f {
            SyncFlag::Always => SyncMode::Always,
            SyncFlag::Batch => SyncMode::Batch,
            SyncFlag::Never => SyncMode::Never,
        }
    }
}

/// `--audit-on-full`: the command line's name for [`OnFull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFullFlag {
    /// Wait for room (backpressure): nothing is lost.
    Block,
    /// Drop the event and count it.
    Drop,
}

impl From<OnFullFlag> for OnFull {
    fn from(f: OnFullFlag) -> Self {
        match f {
            OnFullFlag::Block => OnFull::Block,
            OnFullFlag::Drop => OnFull::Drop,
        }
    }
}

/// The `--audit-*` flags: where and how the decision log is written.
#[derive(Debug, Args, Clone)]
pub struct AuditLogArgs {
    /// The decision log: a file path, `-` for standard output, or `off`.
    #[arg(long = "audit-log", env = "PARTNERGATE_AUDIT_LOG", default_value = DEFAULT_PATH)]
    pub path: String,
    /// When to fsync: after every record; batch (group commit: at most
    /// every 20 ms while busy, at once when idle); or never.
    #[arg(long = "audit-sync", value_enum, default_value_t = SyncFlag::Batch)]
    pub sync: SyncFlag,
    /// When the queue is full: block (backpressure) or drop (counted).
    #[arg(long = "audit-on-full", value_enum, default_value_t = OnFullFlag::Block)]
    pub on_full: OnFullFlag,
    /// Queue capacity (events).
    #[arg(long = "audit-queue", default_value_t = 8192)]
    pub queue: usize,
    /// Queue capacity in bytes (the memory the queued records hold); past
    /// it, logging blocks or drops as --audit-on-full says, as at the
    /// count. One record is always accepted into an empty queue.
    #[arg(long = "audit-queue-bytes", default_value_t = partnergate_audit::DEFAULT_QUEUE_BYTES)]
    pub queue_bytes: u64,
    /// Rotate the file when it would exceed this many bytes (0: never).
    #[arg(long = "audit-max-bytes", default_value_t = 256 * 1024 * 1024)]
    pub max_bytes: u64,
    /// Keep at most this many rotated files (0: keep all); older ones are
    /// deleted after a chained `retention` record states them.
    #[arg(long = "audit-max-files", default_value_t = partnergate_audit::DEFAULT_MAX_FILES)]
    pub max_files: u32,
    /// Keep rotated files totalling at most this many bytes (0: no byte
    /// rule); the oldest go first, after a `retention` record.
    #[arg(long = "audit-max-total-bytes", default_value_t = 0)]
    pub max_total_bytes: u64,
    /// Milliseconds the writer lets a batch grow before writing it; 0 writes
    /// as soon as a record arrives. (With `batch`, fsync follows at most
    /// 20 ms after a write, at once when the writer goes idle.)
    #[arg(long = "audit-linger-ms", default_value_t = DEFAULT_LINGER.as_millis() as u64)]
    pub linger_ms: u64,
    /// Context key to mask at any depth (repeatable), e.g. email.
    #[arg(long = "audit-redact-context")]
    pub redact_context: Vec<String>,
    /// Entity attribute to mask at any depth (repeatable), e.g. email.
    #[arg(long = "audit-redact-attr")]
    pub redact_attr: Vec<String>,
    /// A replica id written on every record.
    #[arg(long = "audit-replica", env = "PARTNERGATE_REPLICA")]
    pub replica: Option<String>,
}

impl AuditLogArgs {
    /// The writer configuration; None when the log is `off`.
    pub fn config(&self) -> Option<AuditConfig> {
        let mut c = match self.path.as_str() {
            "off" => return None,
            "-" => AuditConfig::stdout(),
            p => AuditConfig::file(p),
        };
        c.sync = self.sync.into();
        c.on_full = self.on_full.into();
        c.queue_capacity = self.queue.max(1);
        c.queue_bytes = self.queue_bytes.max(1);
        c.max_file_bytes = (self.max_bytes > 0).then_some(self.max_bytes);
        c.max_files = (self.max_files > 0).then_some(self.max_files);
        c.max_total_bytes = (self.max_total_bytes > 0).then_some(self.max_total_bytes);
        c.linger = std::time::Duration::from_millis(self.linger_ms);
        c.redaction = Redaction {
            context_keys: self.redact_context.clone(),
            entity_attrs: self.redact_attr.clone(),
        };
        c.replica.clone_from(&self.replica);
        Some(c)
    }
}

/// The decision log's configuration; the default path follows `--data-dir`.
pub(crate) fn audit_config(
    args: &AuditLogArgs,
    data_dir: &Path,
) -> Option<partnergate_audit::AuditConfig> {
    let mut args = args.clone();
    if Path::new(&args.path) == partnergate_audit::writer::default_path() {
        args.path = data_dir.join("decisions.jsonl").display().to_string();
    }
    args.config()
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse()
}

/// Run an `audit` subcommand; returns the exit code.
pub fn run(args: &AuditArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match &args.command {
        AuditCommand::Verify(a) => run_verify(a, out),
        AuditCommand::Query(a) => run_query(a, out, err),
        AuditCommand::Replay(a) => run_replay(a, out, err),
        AuditCommand::PartnerActivity(a) => run_partner_activity(a, out),
        AuditCommand::Ship(a) => super::audit_pg::run_ship(a, out).map(|()| EXIT_OK),
        AuditCommand::Retention(a) => super::audit_pg::run_retention(a, out).map(|()| EXIT_OK),
        AuditCommand::Stress(a) => run_stress(a, out),
    };
    match result {
        Ok(code) => code,
        // `audit query ... | head`: the reader left; not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_ERROR
        }
    }
}

type CmdResult = Result<u8, Box<dyn std::error::Error>>;

/// `audit partner-activity`: exit 0, or 3 when the chain did not verify
/// (as `audit verify` exits on a break).
fn run_partner_activity(a: &PartnerActivityArgs, out: &mut dyn Write) -> CmdResult {
    use partnergate_orchestrator::activity;
    let q = activity::ActivityQuery {
        account: a.account.clone(),
        partner: a.partner.clone(),
        since: a.since,
        until: a.until,
    };
    let report = match &a.pg {
        Some(url) => {
            let store = partnergate_core::store::postgres::PgStore::open(url, "audit-cli")?;
            activity::partner_activity_db(&store, &q)?
        }
        None => activity::partner_activity(&a.path, &q)?,
    };
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", activity::render_table(&report))?;
    }
    Ok(if report.chain.verified { EXIT_OK } else { 3 })
}

fn run_verify(a: &VerifyArgs, out: &mut dyn Write) -> CmdResult {
    if let Some(url) = &a.pg {
        let v = super::audit_pg::run_verify_db(url, a.json, out)?;
        return Ok(if !v.intact {
            EXIT_BROKEN
        } else if v.gaps {
            EXIT_GAP
        } else {
            EXIT_OK
        });
    }
    let report = chain::verify(&a.path)?;
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"ok": report.ok(), "intact": report.intact(), "report": report})
        )?;
    } else {
        let files = report.files.len();
        match &report.problem {
            None if report.gaps.is_empty() => writeln!(
                out,
                "ok: {} records (seq {}..{}) in {files} file(s); chain intact; last hash {}",
                report.records,
                report.first_seq.unwrap_or(0),
                report.last_seq.unwrap_or(0),
                report.last_hash.as_deref().unwrap_or("-")
            )?,
            None => {
                writeln!(
                    out,
                    "INCOMPLETE: {} record(s) were not logged, as stated by {} gap record(s); the chain of {} records (seq {}..{}) in {files} file(s) is unbroken (no record edited, removed, inserted or reordered); last hash {}",
                    report.records_not_logged,
                    report.gaps.len(),
                    report.records,
                    report.first_seq.unwrap_or(0),
                    report.last_seq.unwrap_or(0),
                    report.last_hash.as_deref().unwrap_or("-")
                )?;
                for g in &report.gaps {
                    writeln!(out, "  {g}")?;
                }
            }
            Some(p) => {
                writeln!(out, "FAILED: {p}")?;
                writeln!(
                    out,
                    "{} record(s) verified before the break, in {files} file(s)",
                    report.records
                )?;
                for g in &report.gaps {
                    writeln!(out, "  also before the break: {g}")?;
                }
            }
        }
        // Older files deleted by the retention rule, each stated by a record.
        for r in &report.retentions {
            writeln!(out, "  {r}")?;
        }
    }
    Ok(if !report.intact() {
        EXIT_BROKEN
    } else if !report.gaps.is_empty() {
        EXIT_GAP
    } else {
        EXIT_OK
    })
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn table_row(h: &Head) -> String {
    let kind = h.kind.map_or("?", |k| k.as_str());
    let (who, what, on, outcome, version) = match h.kind {
        Some(Kind::Change) => (
            h.actor.clone().unwrap_or_default(),
            h.operation.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            String::new(),
        ),
        Some(Kind::Reload) => (
            String::new(),
            "reload".into(),
            String::new(),
            if h.error.is_some() { "error" } else { "ok" }.into(),
            h.version.clone().unwrap_or_default(),
        ),
        Some(Kind::Gap) => (
            String::new(),
            "records not logged (gap)".into(),
            String::new(),
            "gap".into(),
            String::new(),
        ),
        Some(Kind::Retention) => (
            String::new(),
            "rotated files deleted (retention)".into(),
            String::new(),
            "retention".into(),
            String::new(),
        ),
        Some(Kind::Repair) => (
            String::new(),
            h.operation.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            String::new(),
        ),
        _ => (
            h.principal.clone().unwrap_or_default(),
            h.action.clone().unwrap_or_default(),
            h.resource.clone().unwrap_or_default(),
            h.decision.map(|d| d.to_string()).unwrap_or_default(),
            h.policy_version.clone().unwrap_or_default(),
        ),
    };
    format!(
        "{:>7}  {:<27}  {:<8}  {:<8}  {:<24}  {:<32}  {:<24}  {}",
        h.seq,
        h.ts,
        kind,
        outcome,
        cut(&who, 24),
        cut(&what, 32),
        cut(&on, 24),
        version
    )
}

fn run_query(a: &QueryArgs, out: &mut dyn Write, err: &mut dyn Write) -> CmdResult {
    let filter = Filter {
        principal: a.principal.clone(),
        action: a.action.clone(),
        resource: a.resource.clone(),
        decision: a.decision,
        kind: a.kind,
        decision_id: a.decision_id.clone(),
        since: a.since,
        until: a.until,
        policy_version: a.policy_version.clone(),
        policy: a.policy.clone(),
        request_id: a.request_id.clone(),
    };
    if !a.json {
        writeln!(
            out,
            "{:>7}  {:<27}  {:<8}  {:<8}  {:<24}  {:<32}  {:<24}  POLICY VERSION",
            "SEQ", "TS", "KIND", "DECISION", "PRINCIPAL/ACTOR", "ACTION/OPERATION", "RESOURCE"
        )?;
    }
    if let Some(url) = &a.pg {
        super::audit_pg::run_query_db(url, &filter, a.json, a.with_entities, &table_row, out, err)?;
        return Ok(EXIT_OK);
    }
    let stats = query::query(
        &a.path,
        &filter,
        a.with_entities,
        |_, line, head| -> std::io::Result<()> {
            if a.json {
                writeln!(out, "{line}")
            } else {
                writeln!(out, "{}", table_row(head))
            }
        },
    )??;
    if let Some(loc) = &stats.torn {
        writeln!(err, "warning: {loc}: torn last line skipped (the writer repairs it when it next opens the log)")?;
    }
    if stats.unresolved > 0 {
        writeln!(err, "warning: {} decision(s) name an entity slice that no earlier record of their file carries; printed without `entities`", stats.unresolved)?;
    }
    if !a.json {
        writeln!(
            err,
            "{} of {} record(s) matched",
            stats.matched, stats.scanned
        )?;
    }
    Ok(EXIT_OK)
}

fn run_replay(a: &ReplayArgs, out: &mut dyn Write, err: &mut dyn Write) -> CmdResult {
    let pack = match policies::load(&a.pack.source()) {
        Ok(p) => p,
        Err(e) => {
            write!(err, "{}", e.render())?;
            return Ok(load_exit_code(&e));
        }
    };
    let options = ReplayOptions {
        since: a.since,
        max_examples: a.examples,
    };
    let report = match &a.pg {
        Some(url) => {
            let mut replayer = replay::Replayer::new(&pack, options);
            super::audit_pg::replay_db(url, &mut replayer)?;
            replayer.finish()
        }
        None => replay::replay(&a.path, &pack, &options)?,
    };
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_replay(&report, out)?;
    }
    Ok(if a.fail_on_change && report.changed > 0 {
        EXIT_CHANGED
    } else {
        EXIT_OK
    })
}

fn ids(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

fn print_replay(r: &ReplayReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "replayed {} decision(s) against candidate {}: {} would change, {} unchanged, {} skipped",
        r.replayed, r.candidate_version, r.changed, r.unchanged, r.skipped
    )?;
    for g in &r.groups {
        writeln!(out)?;
        writeln!(out, "{}  {} -> {}: {}", g.action, g.from, g.to, g.count)?;
        for c in &g.causes {
            writeln!(
                out,
                "  cause: {} ({}, {} decision(s)){}",
                c.policy,
                c.role,
                c.count,
                c.description
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )?;
        }
        for e in &g.examples {
            writeln!(
                out,
                "  e.g. seq {} ({}) {} on {}: reasons {} -> {}{}",
                e.seq,
                e.location,
                e.principal,
                e.resource,
                ids(&e.old_reasons),
                ids(&e.new_reasons),
                if e.new_errors.is_empty() {
                    String::new()
                } else {
                    format!("; errors: {}", e.new_errors.join("; "))
                }
            )?;
        }
    }
    for s in &r.skipped_examples {
        writeln!(out, "skipped seq {} ({}): {}", s.seq, s.location, s.reason)?;
    }
    Ok(())
}

/// How many distinct sample users (and slices) [`sample_decision`] cycles through.
pub const SAMPLE_USERS: u64 = 1000;

/// The entity slice of sample user `u`: the user, the account, the company.
pub fn sample_slice(u: u64) -> Arc<EntitySlice> {
    let user = format!("u{u}");
    EntitySlice::new(json!([
        {"uid": {"type": "User", "id": user}, "attrs": {"email": format!("{user}@acme.example"), "account": {"__entity": {"type": "Account", "id": "acme"}}, "is_admin": true, "status": "active", "two_factor": true}, "parents": [{"type": "Account", "id": "acme"}]},
        {"uid": {"type": "Account", "id": "acme"}, "attrs": {"name": "Acme"}, "parents": []},
        {"uid": {"type": "PartnerCompany", "id": "globex"}, "attrs": {"name": "Globex", "status": "gold", "certified": true}, "parents": []}
    ]))
}

/// A realistic synthetic decision of user `i % SAMPLE_USERS` over its slice
/// in `slices` (from [`sample_slice`], shared as the sidecar shares a
/// cached slice between the decisions that use it).
pub fn sample_decision(i: u64, slices: &[Arc<EntitySlice>]) -> DecisionEvent {
    let u = i % SAMPLE_USERS;
    let user = format!("u{u}");
    let entities = match slices.get(u as usize) {
        Some(s) => s.clone(),
        None => sample_slice(u),
    };
    let decision = Decision {
        decision: Effect::Allow,
        reasons: vec![Reason {
            id: "admin-administer-account".into(),
            description: Some(
                "An administrator has administrative rights on the own account".into(),
            ),
        }],
        errors: vec![],
        policy_version: "sha256:0000000000000000".into(),
    };
    DecisionEvent::new(
        format!("User::\"{user}\""),
        "Action::\"invite_partner\"",
        "Account::\"acme\"",
        entities,
        decision,
    )
    .with_request_id(Some(format!("req-{i}")))
    .with_context(Some(json!({"invitee": {"company": {"__entity": {"type": "PartnerCompany", "id": "globex"}}, "status": "gold", "certified": true}})))
    .with_latency_us(42)
}

fn run_stress(a: &StressArgs, out: &mut dyn Write) -> CmdResult {
    let config = a.log.config();
    if config.is_none() && !a.decide {
        return Err("stress needs a log (--audit-log PATH), or --decide".into());
    }
    let to_stdout = config.as_ref().is_some_and(|c| c.sink == Sink::Stdout);
    let pack = if a.decide {
        Some(policies::load(&a.pack.source()).map_err(|e| e.render())?)
    } else {
        None
    };
    let opened = config.map(AuditLog::open).transpose()?;
    let log = opened.as_ref().map(|(l, _)| l.clone());
    let threads = a.threads.max(1);
    let per = a.count / threads;
    let slices: Vec<Arc<EntitySlice>> = (0..SAMPLE_USERS).map(sample_slice).collect();
    let slices = &slices;
    let start = Instant::now();
    let enqueue_ns: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                let pack = pack.as_ref();
                s.spawn(move || {
                    let mut ns = 0u64;
                    for i in 0..per {
                        let mut ev = sample_decision(t * per + i, slices);
                        if let Some(pack) = pack {
                            ev.decision = decide_sample(pack, &ev);
                        }
                        if let Some(log) = &log {
                            let t0 = Instant::now();
                            log.log(ev);
                            ns += t0.elapsed().as_nanos() as u64;
                        }
                    }
                    ns
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    if let Some(log) = &log {
        log.shutdown();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = per * threads;
    if to_stdout {
        return Ok(EXIT_OK);
    }
    match (&log, &opened) {
        (Some(log), Some((_, info))) => writeln!(
            out,
            "wrote {} records (seq {}..) in {secs:.3} s: {:.0} records/s; log() mean {:.2} µs; dropped {}; repaired {}",
            log.written(),
            info.next_seq,
            log.written() as f64 / secs.max(1e-9),
            enqueue_ns as f64 / 1000.0 / n.max(1) as f64,
            log.dropped(),
            info.repaired.is_some()
        )?,
        _ => writeln!(
            out,
            "decided {n} requests without a log in {secs:.3} s: {:.0} decisions/s",
            n as f64 / secs.max(1e-9)
        )?,
    }
    Ok(EXIT_OK)
}

/// Decide a sample event's request with `pack` (as a server would: parse
/// the request and the entity slice, then evaluate).
fn decide_sample(pack: &policies::PolicyPack, ev: &DecisionEvent) -> Decision {
    let question = engine::JsonQuestion {
        principal: &ev.principal,
        action: &ev.action,
        resource: &ev.resource,
        context: Some(ev.context.clone()),
        entities: ev.entities.json().into_owned(),
    };
    engine::decide_json(pack, question, Semantics::FailClosed).unwrap_or_else(|e| Decision {
        decision: Effect::Deny,
        reasons: vec![],
        errors: vec![e.to_string()],
        policy_version: pack.version.clone(),
    })
}
