//! The `partnergate audit` commands over the decision logs shipped into
//! PostgreSQL: `audit ship` (a log file, typically a stopped replica's,
//! copied into the database), and the database side of `audit verify
//! --pg` and `audit query --pg`, which `audit` hands here. Renders what
//! `partnergate_core::audit_db` returns; checks nothing itself.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Args;
use serde_json::json;

use partnergate_audit::query::{Filter, Head};
use partnergate_audit::writer::DEFAULT_PATH;
use partnergate_core::audit_db::{apply_retention, query_db, verify_db, Shipper};
use partnergate_core::store::postgres::PgStore;

type CmdResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The replica label of a connection opened by these commands.
const LABEL: &str = "audit-cli";

#[derive(Debug, Args)]
pub struct ShipArgs {
    /// The log (its rotated siblings PATH.1, PATH.2, ... are included)
    #[arg(long = "log", default_value = DEFAULT_PATH)]
    pub log: PathBuf,
    /// The PostgreSQL URL of the database the replicas share.
    #[arg(long = "pg")]
    pub pg: String,
    /// Records per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Print what was shipped as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `audit ship`: copy the log's records the database does not hold yet.
pub fn run_ship(a: &ShipArgs, out: &mut dyn Write) -> CmdResult<()> {
    let store = PgStore::open(&a.pg, LABEL)?;
    let mut shipper = Shipper::new(&a.log, a.batch as usize)?;
    let shipped = shipper.ship_all(&store)?;
    let (head, _) = shipper.head(&store)?;
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"log": a.log, "log_id": shipper.log_id(), "shipped": shipped, "head_seq": head})
        )?;
    } else {
        writeln!(
            out,
            "shipped {shipped} record(s) of log {} ({}); the database holds it up to seq {head}",
            shipper.log_id(),
            a.log.display()
        )?;
    }
    Ok(())
}

/// What `audit verify --pg` found, for the exit code.
pub struct DbVerdict {
    /// Every log's chain is unbroken and ends where it was shipped.
    pub intact: bool,
    /// Gap records state records that were not logged.
    pub gaps: bool,
}

/// `audit verify --pg`: the retentions' chain and every shipped log's chain.
pub fn run_verify_db(url: &str, json_out: bool, out: &mut dyn Write) -> CmdResult<DbVerdict> {
    let store = PgStore::open(url, LABEL)?;
    let never = AtomicBool::new(false);
    let Some(v) = verify_db(&store, &never)? else {
        return Err("the check was stopped".into());
    };
    let intact = v.intact();
    let logs = &v.logs;
    let gaps = logs.iter().any(|l| !l.report.gaps.is_empty());
    if json_out {
        writeln!(
            out,
            "{}",
            json!({"ok": intact && !gaps, "intact": intact, "retentions": v.retentions, "logs": logs})
        )?;
        return Ok(DbVerdict { intact, gaps });
    }
    let r = &v.retentions;
    match &r.problem {
        Some(p) => writeln!(
            out,
            "FAILED: retentions: {p}\n  {} retention record(s) verified before the break",
            r.records
        )?,
        None if r.records > 0 => writeln!(
            out,
            "ok: retentions: {} record(s); chain intact; last hash {}",
            r.records,
            r.last_hash.as_deref().unwrap_or("-")
        )?,
        None => {}
    }
    for l in logs {
        let r = &l.report;
        let who = format!(
            "log {} (replica {})",
            l.log_id,
            l.replica.as_deref().unwrap_or("-")
        );
        match (&r.problem, &l.tail_problem) {
            (Some(p), _) => {
                writeln!(out, "FAILED: {who}: {p}")?;
                writeln!(out, "  {} record(s) verified before the break", r.records)?;
            }
            (None, Some(t)) => writeln!(out, "FAILED: {who}: {t}")?,
            (None, None) => writeln!(
                out,
                "ok: {who}: {} records (seq {}..{}); chain intact; last hash {}",
                r.records,
                r.first_seq.unwrap_or(0),
                r.last_seq.unwrap_or(0),
                r.last_hash.as_deref().unwrap_or("-")
            )?,
        }
        for g in &r.gaps {
            writeln!(out, "  {g}")?;
        }
        for x in &r.retentions {
            writeln!(out, "  {x}")?;
        }
        if let Some(k) = &l.retained {
            writeln!(
                out,
                "  starts at seq {} after a retention (audit_retentions:{})",
                k.kept_from.seq, k.retention_seq
            )?;
        }
    }
    writeln!(
        out,
        "{} log(s) in the database; {}",
        logs.len(),
        if intact { "all intact" } else { "BROKEN" }
    )?;
    Ok(DbVerdict { intact, gaps })
}

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The PostgreSQL URL of the database the replicas share.
    #[arg(long = "pg")]
    pub pg: String,
    /// Keep the records of the last DAYS whole days (UTC) and today; drop
    /// the day partitions before. At least 1.
    #[arg(long, allow_negative_numbers = true)]
    pub days: i64,
    /// Print what was dropped as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `audit retention`: drop the old day partitions, recording each cut.
pub fn run_retention(a: &RetentionArgs, out: &mut dyn Write) -> CmdResult<()> {
    // Refused before connecting: a bad number changes nothing.
    if !(1..=i64::from(partnergate_core::audit_db::retention::MAX_DAYS)).contains(&a.days) {
        return Err(partnergate_core::audit_db::RetentionError::Days(a.days).into());
    }
    let store = PgStore::open(&a.pg, LABEL)?;
    let done = apply_retention(&store, a.days, time::OffsetDateTime::now_utc(), LABEL)?;
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&done)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "dropped {} day partition(s) before {}{}",
        done.dropped.len(),
        done.cut_before,
        if done.dropped.is_empty() {
            String::new()
        } else {
            format!(": {}", done.dropped.join(", "))
        }
    )?;
    for l in &done.logs {
        writeln!(
            out,
            "  log {}: seq {}..={} removed; kept from seq {} (retention record audit_retentions:{})",
            l.log_id, l.first_seq, l.last_seq, l.kept_from.seq, l.record_seq
        )?;
    }
    Ok(())
}

/// `audit replay --pg`: every decision shipped into the database, each
/// with its slice (resolved within its own log), fed to `replayer`.
pub fn replay_db(
    url: &str,
    replayer: &mut partnergate_audit::replay::Replayer<'_>,
) -> CmdResult<()> {
    let store = PgStore::open(url, LABEL)?;
    let filter = Filter {
        kind: Some(partnergate_audit::Kind::Decision),
        ..Filter::default()
    };
    query_db(&store, &filter, true, |location, line, _| {
        let mut rec: partnergate_audit::record::Record = serde_json::from_str(line)
            .map_err(|e| format!("{location}: not a decision log record: {e}"))?;
        let entities = rec.entities.take();
        replayer.add(location.clone(), rec, entities);
        Ok::<(), String>(())
    })??;
    Ok(())
}

/// `audit query --pg`: every shipped record through `filter`, each printed
/// as written (`json`) or by `row`; the counts go to `err`.
pub fn run_query_db(
    url: &str,
    filter: &Filter,
    json_out: bool,
    with_entities: bool,
    row: &dyn Fn(&Head) -> String,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CmdResult<()> {
    let store = PgStore::open(url, LABEL)?;
    let stats = query_db(
        &store,
        filter,
        with_entities,
        |_, line, head| -> std::io::Result<()> {
            if json_out {
                writeln!(out, "{line}")
            } else {
                writeln!(out, "{}", row(head))
            }
        },
    )??;
    if stats.unresolved > 0 {
        writeln!(err, "warning: {} decision(s) name an entity slice that no earlier record of their log carries; printed without `entities`", stats.unresolved)?;
    }
    if !json_out {
        writeln!(
            err,
            "{} of {} record(s) matched (every shipped log)",
            stats.matched, stats.scanned
        )?;
    }
    Ok(())
}
