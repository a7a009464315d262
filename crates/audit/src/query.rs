//! `audit query`: stream the records of a log (all its files, in chain
//! order) through a filter, one line at a time, in constant memory. Only
//! the head fields are decoded for filtering; the `context` and `entities`
//! of a record are skipped, not built. With `with_entities`, the slices a
//! file carries are kept (as raw JSON) so that a selected decision that
//! names its slice by `entities_hash` is printed with its `entities`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::chain::{FileSlices, LineReader, Location};
use super::record::Kind;
use crate::error::AuditError;
use partnergate_policy::engine::Effect;

/// The fields of a record that query filters and tables use.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Head {
    /// The record's sequence number in the chain.
    pub seq: u64,
    /// The record's time, RFC 3339 UTC as written (empty if absent).
    #[serde(default)]
    pub ts: String,
    /// Decision, change, reload, gap or repair (none if absent or unknown).
    #[serde(default)]
    pub kind: Option<Kind>,
    /// A decision's id (or the decision a change was made under).
    #[serde(default)]
    pub decision_id: Option<String>,
    /// A decision's slice name: hex SHA-256 of its canonical entities.
    #[serde(default)]
    pub entities_hash: Option<String>,
    /// A decision's principal uid in Cedar syntax.
    #[serde(default)]
    pub principal: Option<String>,
    /// A decision's action uid in Cedar syntax.
    #[serde(default)]
    pub action: Option<String>,
    /// A decision's resource uid in Cedar syntax.
    #[serde(default)]
    pub resource: Option<String>,
    /// A decision's effect.
    #[serde(default)]
    pub decision: Option<Effect>,
    /// The pack version a decision was made under.
    #[serde(default)]
    pub policy_version: Option<String>,
    /// Who made a change.
    #[serde(default)]
    pub actor: Option<String>,
    /// What a change did, e.g. `user.dismiss`.
    #[serde(default)]
    pub operation: Option<String>,
    /// The pack version live after a reload (after a failed one: the one
    /// still live).
    #[serde(default)]
    pub version: Option<String>,
    /// Why a reload failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The caller's request id (`X-Request-ID`) of a decision or change.
    #[serde(default)]
    pub request_id: Option<String>,
    /// A decision's determining policies (only their ids are read).
    #[serde(default)]
    pub reasons: Vec<ReasonId>,
}

/// A determining policy of a decision, by id.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ReasonId {
    /// The policy id.
    pub id: String,
}

/// Parse a time bound: RFC 3339 (`2026-11-29T07:00:00Z`) or a date
/// (`2026-11-29`, midnight UTC).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    let rfc = time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &rfc) {
        return Ok(t);
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &date_fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            format!(
                "`{s}` is not an RFC 3339 time like 2026-11-29T07:00:00Z or a date like 2026-11-29"
            )
        })
}

/// Which records to select. Every set criterion must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Matches `principal` (or a change's `actor`): the full uid
    /// `User::"alice"`, or just the id `alice`.
    pub principal: Option<String>,
    /// Matches `action` (or a change's `operation`): `Action::"x"` or `x`.
    pub action: Option<String>,
    /// Matches `resource`: the full uid or just the id.
    pub resource: Option<String>,
    /// Matches a decision's effect.
    pub decision: Option<Effect>,
    /// Matches the record's kind.
    pub kind: Option<Kind>,
    /// Matches `decision_id` exactly.
    pub decision_id: Option<String>,
    /// Inclusive lower bound on `ts`.
    pub since: Option<OffsetDateTime>,
    /// Exclusive upper bound on `ts`.
    pub until: Option<OffsetDateTime>,
    /// Matches `policy_version` (or a reload's `version`); a prefix is enough.
    pub policy_version: Option<String>,
    /// Matches a decision whose determining policies include this id.
    pub policy: Option<String>,
    /// Matches `request_id` exactly.
    pub request_id: Option<String>,
}

fn uid_matches(filter: &str, value: Option<&str>) -> bool {
    let Some(v) = value else { return false };
    if v == filter {
        return true;
    }
    // `alice` matches `User::"alice"`.
    !filter.contains("::")
        && v.strip_suffix('"')
            .and_then(|v| v.rsplit_once("::\""))
            .is_some_and(|(_, id)| id == filter)
}

impl Filter {
    /// Texts that every selected record's line must contain as written
    /// (a cheap test before decoding it): the exact-match ids, and the id
    /// part of a principal or resource filter. A text that JSON would
    /// escape is not listed (the line holds its escaped form).
    pub fn needles(&self) -> Vec<&str> {
        let plain =
            |s: &&str| !s.is_empty() && !s.chars().any(|c| c == '"' || c == '\\' || c.is_control());
        fn id_part(s: &str) -> Option<&str> {
            match s.strip_suffix('"').and_then(|v| v.rsplit_once("::\"")) {
                Some((_, id)) => Some(id),
                None if !s.contains("::") => Some(s),
                None => None,
            }
        }
        [
            self.decision_id.as_deref(),
            self.request_id.as_deref(),
            self.policy.as_deref(),
            self.principal.as_deref().and_then(id_part),
            self.resource.as_deref().and_then(id_part),
        ]
        .into_iter()
        .flatten()
        .filter(plain)
        .collect()
    }

    /// Whether the filter selects by time (else ts need not be parsed).
    fn timed(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    /// Whether the record with head `h` is selected: every set criterion
    /// matches (a record whose `ts` does not parse fails a time bound).
    pub fn matches(&self, h: &Head) -> bool {
        if let Some(k) = self.kind {
            if h.kind != Some(k) {
                return false;
            }
        }
        if let Some(id) = &self.decision_id {
            if h.decision_id.as_deref() != Some(id.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.principal {
            if !uid_matches(p, h.principal.as_deref()) && !uid_matches(p, h.actor.as_deref()) {
                return false;
            }
        }
        if let Some(a) = &self.action {
            if !uid_matches(a, h.action.as_deref()) && h.operation.as_deref() != Some(a.as_str()) {
                return false;
            }
        }
        if let Some(r) = &self.resource {
            if !uid_matches(r, h.resource.as_deref()) {
                return false;
            }
        }
        if let Some(d) = self.decision {
            if h.decision != Some(d) {
                return false;
            }
        }
        if let Some(p) = &self.policy {
            if !h.reasons.iter().any(|r| &r.id == p) {
                return false;
            }
        }
        if let Some(id) = &self.request_id {
            if h.request_id.as_deref() != Some(id.as_str()) {
                return false;
            }
        }
        if let Some(v) = &self.policy_version {
            let pv = h.policy_version.as_deref().or(h.version.as_deref());
            if !pv.is_some_and(|pv| pv.starts_with(v.as_str())) {
                return false;
            }
        }
        if self.timed() {
            let Ok(ts) =
                OffsetDateTime::parse(&h.ts, &time::format_description::well_known::Rfc3339)
            else {
                return false;
            };
            if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts >= u) {
                return false;
            }
        }
        true
    }
}

/// Counts of a query run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Records read (torn line excluded).
    pub scanned: u64,
    /// Records the filter selected.
    pub matched: u64,
    /// A torn last line (a crash mid-write) that was skipped.
    pub torn: Option<Location>,
    /// Selected decisions whose slice was not found in their file (printed
    /// without `entities`), with `with_entities`.
    pub unresolved: u64,
}

/// The slice a decision record carries inline, if any.
#[derive(Deserialize)]
struct Carried<'a> {
    #[serde(default)]
    entities_hash: Option<String>,
    #[serde(borrow, default)]
    entities: Option<&'a RawValue>,
}

/// The slices carried inline in the file being read, as raw JSON.
#[derive(Default)]
struct Slices(FileSlices<Box<RawValue>>);

impl Slices {
    fn see(&mut self, location: &Location, line: &str) {
        self.0.at(location);
        if let Some((h, e)) = carried_slice(line) {
            if self.0.get(&h).is_none() {
                self.0.insert(h, e);
            }
        }
    }

    /// `line` with `entities` put back in front of `entities_hash`, or None
    /// when the record already has them or the slice is not known.
    fn resolve(&self, line: &str, head: &Head) -> Option<String> {
        let raw = self.0.get(head.entities_hash.as_deref()?)?;
        with_slice(line, raw)
    }
}

/// The slice a decision record carries inline (`entities`), by its
/// `entities_hash`, as raw JSON; None when it carries none.
pub fn carried_slice(line: &str) -> Option<(String, Box<RawValue>)> {
    if !line.contains("\"entities\":") {
        return None;
    }
    match serde_json::from_str::<Carried>(line) {
        Ok(Carried {
            entities_hash: Some(h),
            entities: Some(e),
        }) => Some((h, e.to_owned())),
        _ => None,
    }
}

/// `line` with the slice `raw` put back as `entities` in front of its
/// `entities_hash`, or None when the record already has them (or does not
/// parse). Such a line is for reading: its `hash` covers the record as
/// written.
pub fn with_slice(line: &str, raw: &RawValue) -> Option<String> {
    let record: Map<String, Value> = serde_json::from_str(line).ok()?;
    if record.contains_key("entities") {
        return None;
    }
    let entities: Value = serde_json::from_str(raw.get()).ok()?;
    let mut out = Map::new();
    let mut entities = Some(entities);
    for (k, v) in record {
        if k == "entities_hash" {
            if let Some(e) = entities.take() {
                out.insert("entities".into(), e);
            }
        }
        out.insert(k, v);
    }
    serde_json::to_string(&out).ok()
}

/// Stream the log at `path` through `filter`, calling `on_match` with the
/// location, the line and its head for every selected record. The line is
/// the record as written, except that with `with_entities` a decision that
/// names its slice by `entities_hash` gets its `entities` back (such a line
/// is for reading: its `hash` covers the record as written).
pub fn query<E>(
    path: &std::path::Path,
    filter: &Filter,
    with_entities: bool,
    mut on_match: impl FnMut(&Location, &str, &Head) -> Result<(), E>,
) -> Result<Result<QueryStats, E>, AuditError> {
    let mut reader = LineReader::open(path)?;
    let mut stats = QueryStats::default();
    let mut slices = Slices::default();
    while let Some(line) = reader.next_line()? {
        if !line.terminated {
            stats.torn = Some(line.location);
            continue;
        }
        let head: Head = serde_json::from_str(&line.text).map_err(|e| AuditError::Malformed {
            location: line.location.clone(),
            message: format!("not a decision log record: {e}"),
        })?;
        stats.scanned += 1;
        let decision = head.kind == Some(Kind::Decision);
        if with_entities && decision {
            slices.see(&line.location, &line.text);
        }
        if filter.matches(&head) {
            stats.matched += 1;
            let resolved = if with_entities && decision {
                let r = slices.resolve(&line.text, &head);
                if r.is_none() && !line.text.contains("\"entities\":") {
                    stats.unresolved += 1;
                }
                r
            } else {
                None
            };
            let text = resolved.as_deref().unwrap_or(&line.text);
            if let Err(e) = on_match(&line.location, text, &head) {
                return Ok(Err(e));
            }
        }
    }
    Ok(Ok(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_filters_accept_the_bare_id() {
        assert!(uid_matches("alice", Some("User::\"alice\"")));
        assert!(uid_matches("User::\"alice\"", Some("User::\"alice\"")));
        assert!(!uid_matches("ali", Some("User::\"alice\"")));
        assert!(!uid_matches("User::\"bob\"", Some("User::\"alice\"")));
        assert!(!uid_matches("alice", None));
    }

    #[test]
    fn time_bounds_parse_dates_and_rfc3339() {
        assert!(parse_time("2026-11-29").is_ok());
        assert!(parse_time("2026-11-29T07:00:00.5+01:00").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
