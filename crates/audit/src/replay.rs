//! `audit replay`: impact analysis. Re-evaluate every logged decision with
//! a candidate policy pack over the logged entity slice and context, and
//! report which decisions would change, grouped by action and direction,
//! with examples and the policies that caused each change.
//!
//! A decision carries its slice inline (`entities`) the first time its file
//! uses it and names it by `entities_hash` always; replay keeps the slices
//! of the file being read, by hash.
//!
//! Redacted values are replayed as the mask (`***`): a candidate policy that
//! reads a redacted attribute sees the mask, not the original.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::chain::{FileSlices, LineReader, Location};
use super::record::{Kind, Record};
use crate::error::AuditError;
use partnergate_policy::engine::{
    self, Decision, Effect, JsonQuestion, QuestionError, Reason, Semantics,
};
use partnergate_policy::policies::PolicyPack;

/// Replay options.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Only decisions logged at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Examples kept per group.
    pub max_examples: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            since: None,
            max_examples: 3,
        }
    }
}

/// One changed decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Example {
    /// The logged record's seq.
    pub seq: u64,
    /// Where the record is.
    pub location: Location,
    /// When the decision was logged (RFC 3339 UTC).
    pub ts: String,
    /// The logged decision's id.
    pub decision_id: Option<String>,
    /// The principal uid in Cedar syntax.
    pub principal: String,
    /// The resource uid in Cedar syntax.
    pub resource: String,
    /// The ids of the policies that determined the logged decision.
    pub old_reasons: Vec<String>,
    /// The ids of the candidate's determining policies.
    pub new_reasons: Vec<String>,
    /// The candidate's evaluation errors on this input.
    pub new_errors: Vec<String>,
}

/// A policy that caused changes in a group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cause {
    /// The policy's id.
    pub policy: String,
    /// The policy's `@description` (the candidate's, else the logged one).
    pub description: Option<String>,
    /// `now determining` (a reason of the new decision that was not one
    /// before) or `no longer determining` (an old reason that vanished).
    pub role: &'static str,
    /// How many changed decisions of the group it was involved in.
    pub count: u64,
}

/// The changes of one action in one direction.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChangeGroup {
    /// The action uid in Cedar syntax (empty if the record had none).
    pub action: String,
    /// The logged effect.
    pub from: Effect,
    /// The candidate's effect (the other one).
    pub to: Effect,
    /// How many decisions of this action changed this way.
    pub count: u64,
    /// The policies involved, with how many changes each.
    pub causes: Vec<Cause>,
    /// The first changed decisions, at most [`ReplayOptions::max_examples`].
    pub examples: Vec<Example>,
}

/// A logged decision that could not be replayed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// The record's seq.
    pub seq: u64,
    /// Where the record is.
    pub location: Location,
    /// Why it could not be replayed: a field or its entity slice is missing,
    /// or the request or slice does not fit the candidate's schema.
    pub reason: String,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The content-hash version of the candidate pack.
    pub candidate_version: String,
    /// Decisions re-evaluated.
    pub replayed: u64,
    /// Re-evaluated decisions whose effect stays the same.
    pub unchanged: u64,
    /// Re-evaluated decisions whose effect flips.
    pub changed: u64,
    /// The changed decisions by action and direction, ordered by action.
    pub groups: Vec<ChangeGroup>,
    /// How many decisions could not be replayed, and the first few.
    pub skipped: u64,
    /// The first skipped decisions (at least 5 are kept).
    pub skipped_examples: Vec<Skipped>,
}

#[derive(Default)]
struct Acc {
    count: u64,
    causes: BTreeMap<(String, &'static str), (Option<String>, u64)>,
    examples: Vec<Example>,
}

/// Replay the log at `path` against `pack`.
pub fn replay(
    path: &Path,
    pack: &PolicyPack,
    options: &ReplayOptions,
) -> Result<ReplayReport, AuditError> {
    let mut decisions = Decisions::open(path)?;
    let mut replayer = Replayer::new(pack, options.clone());
    while let Some((location, rec, entities)) = decisions.next()? {
        replayer.add(location, rec, entities);
    }
    Ok(replayer.finish())
}

/// A replay fed one decision at a time, from any source of records in log
/// order (a file, or the logs shipped into a database): each decision with
/// its entity slice, resolved by the source.
pub struct Replayer<'p> {
    pack: &'p PolicyPack,
    options: ReplayOptions,
    // Keyed by action and whether the old decision was Allow (the new one
    // is the other effect).
    groups: BTreeMap<(String, bool), Acc>,
    report: ReplayReport,
}

impl<'p> Replayer<'p> {
    /// A replay against `pack`.
    pub fn new(pack: &'p PolicyPack, options: ReplayOptions) -> Self {
        Replayer {
            report: ReplayReport {
                candidate_version: pack.version.clone(),
                replayed: 0,
                unchanged: 0,
                changed: 0,
                groups: Vec::new(),
                skipped: 0,
                skipped_examples: Vec::new(),
            },
            pack,
            options,
            groups: BTreeMap::new(),
        }
    }

    /// Re-evaluate one logged decision (one logged before `since` is
    /// passed over).
    pub fn add(&mut self, location: Location, rec: Record, entities: Option<Value>) {
        if let Some(since) = self.options.since {
            let rfc = time::format_description::well_known::Rfc3339;
            match OffsetDateTime::parse(&rec.ts, &rfc) {
                Ok(ts) if ts >= since => {}
                _ => return,
            }
        }
        let (pack, options, report) = (self.pack, &self.options, &mut self.report);
        let new = match reevaluate(pack, &rec, entities) {
            Ok(d) => d,
            Err(reason) => {
                report.skipped += 1;
                if report.skipped_examples.len() < options.max_examples.max(5) {
                    report.skipped_examples.push(Skipped {
                        seq: rec.seq,
                        location,
                        reason,
                    });
                }
                return;
            }
        };
        report.replayed += 1;
        let Some(old) = rec.decision else {
            return;
        };
        if old == new.decision {
            report.unchanged += 1;
            return;
        }
        report.changed += 1;
        let action = rec.action.clone().unwrap_or_default();
        self.groups
            .entry((action, old == Effect::Allow))
            .or_default()
            .add(pack, &rec, &new, location, options.max_examples);
    }

    /// The report.
    pub fn finish(mut self) -> ReplayReport {
        self.report.groups = self
            .groups
            .into_iter()
            .map(|((action, was_allowed), acc)| acc.into_group(action, was_allowed))
            .collect();
        self.report
    }
}

/// The decision records of a log, in order, each with its entity slice
/// (inline, or resolved by `entities_hash` within its file). Every
/// decision's slice is remembered, also one before the replay's `since`, so
/// that a later decision naming it by hash finds it.
struct Decisions {
    reader: LineReader,
    slices: FileSlices<Value>,
}

impl Decisions {
    fn open(path: &Path) -> Result<Self, AuditError> {
        Ok(Decisions {
            reader: LineReader::open(path)?,
            slices: FileSlices::default(),
        })
    }

    /// The next decision record, where it stands and its slice if known.
    fn next(&mut self) -> Result<Option<(Location, Record, Option<Value>)>, AuditError> {
        while let Some(line) = self.reader.next_line()? {
            if !line.terminated {
                continue; // a torn last line: not a record
            }
            let mut rec: Record =
                serde_json::from_str(&line.text).map_err(|e| AuditError::Malformed {
                    location: line.location.clone(),
                    message: format!("not a decision log record: {e}"),
                })?;
            if rec.kind != Some(Kind::Decision) {
                continue;
            }
            self.slices.at(&line.location);
            let entities = match (rec.entities.take(), &rec.entities_hash) {
                (Some(v), Some(h)) => Some(self.slices.insert(h.clone(), v).clone()),
                (Some(v), None) => Some(v),
                (None, Some(h)) => self.slices.get(h).cloned(),
                (None, None) => None,
            };
            return Ok(Some((line.location, rec, entities)));
        }
        Ok(None)
    }
}

impl Acc {
    /// Count a changed decision: the policies that are now or no longer
    /// determining, and an example while there is room.
    fn add(
        &mut self,
        pack: &PolicyPack,
        rec: &Record,
        new: &Decision,
        location: Location,
        max_examples: usize,
    ) {
        self.count += 1;
        let old_reasons: Vec<Reason> = rec.reasons.clone().unwrap_or_default();
        let old_ids: Vec<String> = old_reasons.iter().map(|r| r.id.clone()).collect();
        let new_ids: Vec<String> = new.reasons.iter().map(|r| r.id.clone()).collect();
        for r in &new.reasons {
            if !old_ids.contains(&r.id) {
                self.causes
                    .entry((r.id.clone(), "now determining"))
                    .or_insert((r.description.clone(), 0))
                    .1 += 1;
            }
        }
        for r in &old_reasons {
            if !new_ids.contains(&r.id) {
                let description = pack
                    .description(&r.id)
                    .map(str::to_string)
                    .or_else(|| r.description.clone());
                self.causes
                    .entry((r.id.clone(), "no longer determining"))
                    .or_insert((description, 0))
                    .1 += 1;
            }
        }
        if self.examples.len() < max_examples {
            self.examples.push(Example {
                seq: rec.seq,
                location,
                ts: rec.ts.clone(),
                decision_id: rec.decision_id.clone(),
                principal: rec.principal.clone().unwrap_or_default(),
                resource: rec.resource.clone().unwrap_or_default(),
                old_reasons: old_ids,
                new_reasons: new_ids,
                new_errors: new.errors.clone(),
            });
        }
    }

    /// The group of `action`'s decisions that went from Allow to Deny
    /// (`was_allowed`) or back, causes by count.
    fn into_group(self, action: String, was_allowed: bool) -> ChangeGroup {
        let (from, to) = if was_allowed {
            (Effect::Allow, Effect::Deny)
        } else {
            (Effect::Deny, Effect::Allow)
        };
        let mut causes: Vec<Cause> = self
            .causes
            .into_iter()
            .map(|((policy, role), (description, count))| Cause {
                policy,
                description,
                role,
                count,
            })
            .collect();
        causes.sort_by(|a, b| b.count.cmp(&a.count).then(a.policy.cmp(&b.policy)));
        ChangeGroup {
            action,
            from,
            to,
            count: self.count,
            causes,
            examples: self.examples,
        }
    }
}

/// Decide a logged request again with `pack` over its logged `entities`.
fn reevaluate(
    pack: &PolicyPack,
    rec: &Record,
    entities: Option<Value>,
) -> Result<Decision, String> {
    let field = |name: &str, v: &Option<String>| {
        v.clone()
            .ok_or_else(|| format!("field `{name}` is missing"))
    };
    let (principal, action, resource) = (
        field("principal", &rec.principal)?,
        field("action", &rec.action)?,
        field("resource", &rec.resource)?,
    );
    if let Some(e) = &rec.entities_error {
        return Err(format!(
            "slice unavailable: the decision's entities could not be logged ({e})"
        ));
    }
    let entities = entities.ok_or_else(|| match &rec.entities_hash {
        Some(h) => format!(
            "the entity slice {h} is not in this file (no earlier record carries it in `entities`)"
        ),
        None => "field `entities` is missing (the entity slice was not logged)".to_string(),
    })?;
    let question = JsonQuestion {
        principal: &principal,
        action: &action,
        resource: &resource,
        context: rec.context.clone(),
        entities,
    };
    engine::decide_json(pack, question, Semantics::FailClosed).map_err(|e| match e {
        QuestionError::Uid(e) => e.to_string(),
        QuestionError::Request(e) => format!("the request does not fit the candidate: {e}"),
        QuestionError::Entities(e) => {
            format!("the entity slice does not fit the candidate: {e}")
        }
    })
}
