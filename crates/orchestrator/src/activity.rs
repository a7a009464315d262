//! "What did my partner do?": the customer's view of the decision log —
//! every decision a partner of an account asked for (allowed or not, with
//! the determining policies and the `now` it was taken at) and every change
//! such a decision permitted, in a time range, for one partner or all.
//!
//! It reads the log the way `audit query` does ([`audit::query::query`]:
//! streaming, every file of the chain in order, a decision's slice resolved
//! within its file) and reports whether the chain verified
//! ([`audit::verify`]) over what it read. A decision counts as a partner's
//! when the principal entity of its own slice is a partner user of the
//! account (so a partner dismissed since still shows); a change counts when
//! the decision that permitted it does.
//!
//! [`partner_activity_db`] makes the same report over every replica's log
//! shipped into PostgreSQL (`partnergate_core::audit_db`: the query with
//! each decision's slice resolved within its log, and the chain check of
//! every log).
//!
//! Owns [`ActivityQuery`] and [`ActivityReport`]; it never knows HTTP or the
//! command line.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use audit::query::{Filter, Head};
use audit::record::Kind;
use partnergate_audit as audit;

/// Most items one report holds (`truncated` says when more matched).
pub const MAX_ITEMS: usize = 10_000;

/// Which activity to report.
#[derive(Debug, Clone, Default)]
pub struct ActivityQuery {
    /// The account's id.
    pub account: String,
    /// One partner (user id or `User::"id"`); none: every partner.
    pub partner: Option<String>,
    /// Inclusive lower bound on the record time.
    pub since: Option<time::OffsetDateTime>,
    /// Exclusive upper bound on the record time.
    pub until: Option<time::OffsetDateTime>,
}

/// One decision or change.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityItem {
    /// The record's seq in the chain.
    pub seq: u64,
    /// The record's time (RFC 3339 UTC).
    pub ts: String,
    /// `decision` or `change`.
    pub kind: &'static str,
    /// The partner (uid in Cedar syntax).
    pub partner: String,
    /// A decision's action id, or a change's operation (`user.dismiss`, ...).
    pub action: String,
    /// A decision's resource uid; a change's entity uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// A decision's effect (`allow`/`deny`); a change: `applied`.
    pub outcome: String,
    /// A decision's determining policies (`@id`), forbids included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The current time the decision was taken at (`context.now`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// The decision's id (a change: the decision that permitted it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
}

/// Whether the chain verified, over the files the report read.
#[derive(Debug, Clone, Serialize)]
pub struct ChainStatus {
    /// Unbroken, and no gap record states records missing.
    pub verified: bool,
    /// Records checked.
    pub records: u64,
    /// The first and last seq checked.
    pub first_seq: Option<u64>,
    /// The last intact seq checked.
    pub last_seq: Option<u64>,
    /// The first break, or the records gap records state were not logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityReport {
    /// The account's id.
    pub account: String,
    /// The partner asked about, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// The decisions and changes, in log order.
    pub items: Vec<ActivityItem>,
    /// More items matched than [`MAX_ITEMS`].
    pub truncated: bool,
    /// Records read.
    pub scanned: u64,
    /// The chain check over the log.
    pub chain: ChainStatus,
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// The log could not be read (absent, unreadable, a malformed line).
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// The shipped logs could not be read from the database.
    #[error(transparent)]
    Database(#[from] partnergate_core::audit_db::ShipError),
    /// The chain check was stopped before its end.
    #[error("the chain check was stopped")]
    Stopped,
}

/// The items of the records `run` streams (each line with its slice) to
/// the callback it is given; `run` returns the records scanned.
struct Collected {
    items: Vec<ActivityItem>,
    truncated: bool,
    scanned: u64,
}

fn collect(
    q: &ActivityQuery,
    run: impl FnOnce(&Filter, &mut dyn FnMut(&str, &Head)) -> Result<u64, ActivityError>,
) -> Result<Collected, ActivityError> {
    let filter = Filter {
        principal: q.partner.clone(),
        since: q.since,
        until: q.until,
        ..Filter::default()
    };
    let mut items = Vec::new();
    let mut truncated = false;
    let mut permitted: HashSet<String> = HashSet::new();
    let scanned = run(&filter, &mut |line, head: &Head| {
        let item = match head.kind {
            Some(Kind::Decision) => decision_item(line, head, &q.account),
            Some(Kind::Change) => change_item(line, head, &permitted),
            _ => None,
        };
        if let Some(item) = item {
            if item.kind == "decision" && item.outcome == "Allow" {
                permitted.extend(item.decision_id.clone());
            }
            if items.len() < MAX_ITEMS {
                items.push(item);
            } else {
                truncated = true;
            }
        }
    })?;
    Ok(Collected {
        items,
        truncated,
        scanned,
    })
}

/// The activity of the account's partners in every log shipped into the
/// database of `store`, oldest first; the chain status covers every log
/// (verified when each is unbroken, ends where it was shipped and states
/// no gap).
pub fn partner_activity_db(
    store: &partnergate_core::store::postgres::PgStore,
    q: &ActivityQuery,
) -> Result<ActivityReport, ActivityError> {
    use partnergate_core::audit_db::{query_db, verify_db};
    let c = collect(q, |filter, on| {
        let stats = query_db(store, filter, true, |_, line, head| {
            on(line, head);
            Ok::<(), ()>(())
        })?
        .unwrap_or_default();
        Ok(stats.scanned)
    })?;
    let never = std::sync::atomic::AtomicBool::new(false);
    let v = verify_db(store, &never)?.ok_or(ActivityError::Stopped)?;
    let problem = v.first_problem().or_else(|| {
        v.logs
            .iter()
            .find_map(|l| chain_problem(&l.report).map(|p| format!("log {}: {p}", l.log_id)))
    });
    let chain = ChainStatus {
        verified: problem.is_none(),
        records: v.logs.iter().map(|l| l.report.records).sum(),
        first_seq: None,
        last_seq: None,
        problem,
    };
    Ok(report(q, c, chain))
}

/// The first break of a chain, or the records its gap records state were
/// not logged.
fn chain_problem(v: &audit::VerifyReport) -> Option<String> {
    v.problem.as_ref().map(ToString::to_string).or_else(|| {
        (!v.gaps.is_empty()).then(|| {
            format!(
                "gap records state {} record(s) not logged",
                v.records_not_logged
            )
        })
    })
}

fn report(q: &ActivityQuery, c: Collected, chain: ChainStatus) -> ActivityReport {
    ActivityReport {
        account: q.account.clone(),
        partner: q.partner.clone(),
        items: c.items,
        truncated: c.truncated,
        scanned: c.scanned,
        chain,
    }
}

/// The activity of the account's partners in the log at `log`.
pub fn partner_activity(log: &Path, q: &ActivityQuery) -> Result<ActivityReport, ActivityError> {
    let c = collect(q, |filter, on| {
        let stats = audit::query::query(log, filter, true, |_, line, head: &Head| {
            on(line, head);
            Ok::<(), ()>(())
        })?
        .unwrap_or_default();
        Ok(stats.scanned)
    })?;
    let v = audit::verify(log)?;
    let chain = ChainStatus {
        verified: v.ok(),
        records: v.records,
        first_seq: v.first_seq,
        last_seq: v.last_seq,
        problem: chain_problem(&v),
    };
    Ok(report(q, c, chain))
}

/// A decision of a partner of `account`, judged by the principal entity of
/// the decision's own slice.
fn decision_item(line: &str, head: &Head, account: &str) -> Option<ActivityItem> {
    let principal = head.principal.as_deref()?;
    let rec: Value = serde_json::from_str(line).ok()?;
    let entity = rec.get("entities")?.as_array()?.iter().find(|e| {
        partnergate_core::directory::uid_from_key(principal).is_some_and(|p| {
            cedar_policy::EntityUid::from_json(e["uid"].clone()).is_ok_and(|u| u == p)
        })
    })?;
    let attrs = entity.get("attrs")?;
    let of_account = attrs
        .pointer("/account/__entity/id")
        .and_then(Value::as_str)
        == Some(account);
    if !of_account || attrs.get("partner").is_none() {
        return None;
    }
    let reasons = rec
        .get("reasons")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some(ActivityItem {
        seq: head.seq,
        ts: head.ts.clone(),
        kind: "decision",
        partner: principal.to_string(),
        action: short_action(head.action.as_deref().unwrap_or("")),
        resource: head.resource.clone(),
        outcome: head
            .decision
            .map(|d| d.as_str().to_string())
            .unwrap_or_default(),
        reasons,
        now: rec
            .pointer("/context/now/__extn/arg")
            .and_then(Value::as_str)
            .map(str::to_string),
        decision_id: head.decision_id.clone(),
    })
}

/// A change permitted by a decision already reported.
fn change_item(line: &str, head: &Head, permitted: &HashSet<String>) -> Option<ActivityItem> {
    let by = head
        .decision_id
        .as_ref()
        .filter(|d| permitted.contains(*d))?;
    let rec: Value = serde_json::from_str(line).ok()?;
    let entity = rec
        .pointer("/after/uid")
        .or_else(|| rec.pointer("/before/uid"))
        .and_then(|u| cedar_policy::EntityUid::from_json(u.clone()).ok())
        .map(|u| u.to_string());
    Some(ActivityItem {
        seq: head.seq,
        ts: head.ts.clone(),
        kind: "change",
        partner: head.actor.clone().unwrap_or_default(),
        action: head.operation.clone().unwrap_or_default(),
        resource: entity,
        outcome: "applied".into(),
        reasons: Vec::new(),
        now: None,
        decision_id: Some(by.clone()),
    })
}

/// `Action::"x"` → `x`.
fn short_action(uid: &str) -> String {
    uid.strip_prefix("Action::\"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(uid)
        .to_string()
}

/// The report as a readable table, one line per item, and the chain status.
pub fn render_table(r: &ActivityReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<27} {:<8} {:<20} {:<22} {:<24} {:<8} REASONS",
        "SEQ", "TIME", "KIND", "PARTNER", "ACTION", "RESOURCE", "OUTCOME"
    );
    for i in &r.items {
        let _ = writeln!(
            out,
            "{:<6} {:<27} {:<8} {:<20} {:<22} {:<24} {:<8} {}",
            i.seq,
            i.ts,
            i.kind,
            i.partner,
            i.action,
            i.resource.as_deref().unwrap_or(""),
            i.outcome,
            i.reasons.join(",")
        );
    }
    let _ = writeln!(
        out,
        "{} item(s){} of {} record(s) read; chain {}{}",
        r.items.len(),
        if r.truncated { " (truncated)" } else { "" },
        r.scanned,
        if r.chain.verified {
            "verified"
        } else {
            "NOT verified"
        },
        r.chain
            .problem
            .as_deref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default()
    );
    out
}
