//! The Decisions page: the decision log explorer. Filters (time range,
//! principal, action, resource, decision, kind, policy id, request id,
//! decision id, policy version) are `audit query`'s own [`Filter`]; pages
//! come newest first from `audit::newest` (read backwards from the newest
//! file, a byte budget per page, a cursor to the older records). A record
//! opens to its reasons, context, slice (looked up in its file when named
//! by hash), shadow disagreement and gateway request; the chain check
//! (`audit::verify`) runs on demand, behind the token, one at a time
//! ([`VerifyGate`]), and stops when its request times out or the server
//! stops; a histogram of allows and denies over
//! time is drawn as an inline SVG from the same scan.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::page::{
    context_for_try, deferred, fragment, fragment_error, json_block, layout, query_string,
};
use crate::state::AppState;
use partnergate_audit::newest::{self, Cursor};
use partnergate_audit::query::{parse_time, Filter, Head};
use partnergate_core::audit_db::newest::{
    find_slice_db, histogram_db, newest_first_db, record_at_db, DbCursor,
};
use partnergate_core::audit_db::{verify_db, DbReader};

/// Records per page.
const PAGE: usize = 50;
/// Most bytes of log one page request reads (then it stops with a cursor).
const PAGE_BUDGET: u64 = 64 * 1024 * 1024;
/// Most bytes of log the histogram reads.
const HISTOGRAM_BUDGET: u64 = 128 * 1024 * 1024;
/// Most bytes read backwards to find a decision's slice.
const SLICE_BUDGET: u64 = 256 * 1024 * 1024;

/// The filter form, as query parameters.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct Params {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    principal: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    decision_id: String,
    #[serde(default)]
    policy_version: String,
    /// The page starts before this record (`SEQ.OFFSET`).
    #[serde(default)]
    before: String,
    /// One record to open (`SEQ.OFFSET`).
    #[serde(default)]
    at: String,
}

impl Params {
    fn pairs(&self) -> [(&'static str, &str); 11] {
        [
            ("since", &self.since),
            ("until", &self.until),
            ("principal", &self.principal),
            ("action", &self.action),
            ("resource", &self.resource),
            ("decision", &self.decision),
            ("kind", &self.kind),
            ("policy", &self.policy),
            ("request_id", &self.request_id),
            ("decision_id", &self.decision_id),
            ("policy_version", &self.policy_version),
        ]
    }

    /// `audit query`'s filter of these parameters, or the field at fault.
    fn filter(&self) -> Result<Filter, String> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let time = |name: &str, s: &str| -> Result<_, String> {
            opt(s)
                .map(|v| parse_time(&v).map_err(|m| format!("{name}: {m}")))
                .transpose()
        };
        Ok(Filter {
            principal: opt(&self.principal),
            action: opt(&self.action),
            resource: opt(&self.resource),
            decision: opt(&self.decision)
                .map(|d| d.parse().map_err(|e| format!("decision: {e}")))
                .transpose()?,
            kind: opt(&self.kind)
                .map(|k| k.parse().map_err(|e| format!("kind: {e}")))
                .transpose()?,
            decision_id: opt(&self.decision_id),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            policy_version: opt(&self.policy_version),
            policy: opt(&self.policy),
            request_id: opt(&self.request_id),
        })
    }

    fn query(&self, extra: &[(&'static str, &str)]) -> String {
        query_string(self.pairs().into_iter().chain(extra.iter().copied()))
    }
}

/// `GET /console/decisions`.
pub async fn page(State(state): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let body = html! {
        h1 { "Decisions" }
        (form(&p))
        @if state.audit_path.is_some() || state.audit_db.is_some() {
            div.histogram data-src={ "/console/f/decisions/histogram" (p.query(&[])) } {}
        }
        @if p.at.is_empty() {
            (deferred(&state, &format!("/console/f/decisions{}", p.query(&[("before", &p.before)])), || rows(&state, &p)))
        } @else {
            (deferred(&state, &format!("/console/f/decisions/one{}", query_string([("at", p.at.as_str())])), || one_record(&state, &p.at)))
        }
    };
    layout(&state, "/console/decisions", body)
}

fn form(p: &Params) -> Markup {
    let text = |name: &str, label: &str, value: &str, hint: &str| {
        html! {
            label { (label) input name=(name) value=(value) placeholder=(hint); }
        }
    };
    html! {
        form #decisions-filter.filters method="get" action="/console/decisions" {
            (text("since", "Since", &p.since, "2026-12-03T09:00:00Z"))
            (text("until", "Until", &p.until, "2026-12-04"))
            (text("principal", "Principal", &p.principal, "alice"))
            (text("action", "Action", &p.action, "invite_user"))
            (text("resource", "Resource", &p.resource, "acme"))
            label { "Decision"
                select name="decision" {
                    @for (v, l) in [("", "any"), ("allow", "Allow"), ("deny", "Deny")] {
                        option value=(v) selected[p.decision.eq_ignore_ascii_case(v)] { (l) }
                    }
                }
            }
            label { "Kind"
                select name="kind" {
                    @for v in ["", "decision", "change", "reload", "search", "gap", "repair"] {
                        option value=(v) selected[p.kind == v] { @if v.is_empty() { "any" } @else { (v) } }
                    }
                }
            }
            (text("policy", "Policy id", &p.policy, "admin-administer-account"))
            (text("request_id", "Request id", &p.request_id, ""))
            (text("decision_id", "Decision id", &p.decision_id, ""))
            (text("policy_version", "Policy version", &p.policy_version, "sha256:"))
            button #filter-submit type="submit" { "Filter" }
        }
    }
}

/// `GET /console/f/decisions`: one page of records.
pub async fn rows_fragment(
    State(state): State<Arc<AppState>>,
    Query(p): Query<Params>,
) -> Response {
    match tokio::task::spawn_blocking(move || rows(&state, &p)).await {
        Ok(m) => fragment(m),
        Err(e) => fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn no_log() -> Markup {
    html! { p.note { "This sidecar does not log decisions to a file (--audit-log): there is nothing to explore." } }
}

fn rows(state: &AppState, p: &Params) -> Markup {
    let filter = match p.filter() {
        Ok(f) => f,
        Err(m) => return html! { div.error { (m) } },
    };
    if let Some(db) = &state.audit_db {
        return rows_db(db, p, &filter);
    }
    let Some(path) = &state.audit_path else {
        return no_log();
    };
    let before = match p.before.trim() {
        "" => None,
        s => match s.parse::<Cursor>() {
            Ok(c) => Some(c),
            Err(m) => return html! { div.error { "before: " (m) } },
        },
    };
    let page = match newest::newest_first(path, &filter, before, PAGE, PAGE_BUDGET) {
        Ok(p) => p,
        Err(e) => return html! { div.error { (e.to_string()) } },
    };
    html! {
        p.note #page-note {
            (page.records.len()) " records, newest first (" (page.scanned_records) " read"
            @if page.budget_hit { ", stopped after " (page.scanned_bytes / (1024 * 1024)) " MiB: older records may match" }
            ")"
        }
        (table(p, page.records.iter().map(|r| (&r.head, r.cursor().to_string()))))
        @if let Some(next) = page.next {
            a.older #older href={ "/console/decisions" (p.query(&[("before", &next.to_string())])) } { "Older →" }
        }
    }
}

/// One page of every replica's records, from the database.
fn rows_db(db: &DbReader, p: &Params, filter: &Filter) -> Markup {
    let before = match p.before.trim() {
        "" => None,
        s => match s.parse::<DbCursor>() {
            Ok(c) => Some(c),
            Err(m) => return html! { div.error { "before: " (m) } },
        },
    };
    let page = match db
        .store()
        .and_then(|s| newest_first_db(&s, filter, before.as_ref(), PAGE, PAGE_BUDGET))
    {
        Ok(p) => p,
        Err(e) => return html! { div.error { "the database: " (e.to_string()) } },
    };
    html! {
        p.note #page-note {
            (page.records.len()) " records of every replica, newest first, from the database (" (page.scanned_records) " read"
            @if page.budget_hit { ", stopped after " (page.scanned_bytes / (1024 * 1024)) " MiB: older records may match" }
            ")"
        }
        (table(p, page.records.iter().map(|r| (&r.head, r.cursor.to_string()))))
        @if let Some(next) = page.next {
            a.older #older href={ "/console/decisions" (p.query(&[("before", &next.to_string())])) } { "Older →" }
        }
    }
}

fn table<'a>(p: &Params, records: impl Iterator<Item = (&'a Head, String)>) -> Markup {
    html! {
        table.results #decisions {
            thead { tr { th { "Seq" } th { "Time" } th { "Kind" } th { "Decision" } th { "Principal" } th { "Action" } th { "Resource" } th { "Policies" } th { "Request" } } }
            tbody {
                @for (h, at) in records { (row(p, h, &at)) }
            }
        }
    }
}

fn row(p: &Params, h: &Head, at: &str) -> Markup {
    let kind = h
        .kind
        .map(|k| format!("{k:?}").to_lowercase())
        .unwrap_or_default();
    let decision = h.decision.map_or("", |d| d.as_str());
    html! {
        tr data-seq=(h.seq) class=(decision) {
            td { a href={ "/console/decisions" (p.query(&[("at", at)])) } { (h.seq) } }
            td.mono { (h.ts) }
            td { (kind) }
            td { (decision) }
            td.mono { (h.principal.as_deref().or(h.actor.as_deref()).unwrap_or("")) }
            td.mono { (h.action.as_deref().or(h.operation.as_deref()).unwrap_or("")) }
            td.mono { (h.resource.as_deref().unwrap_or("")) }
            td.mono { @for (i, reason) in h.reasons.iter().enumerate() { @if i > 0 { ", " } (reason.id) } }
            td.mono { (h.request_id.as_deref().unwrap_or("")) }
        }
    }
}

/// `GET /console/f/decisions/one?at=SEQ.OFFSET`.
pub async fn one(State(state): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    match tokio::task::spawn_blocking(move || one_record(&state, &p.at)).await {
        Ok(m) => fragment(m),
        Err(e) => fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn one_record(state: &AppState, at: &str) -> Markup {
    if let Some(db) = &state.audit_db {
        return one_record_db(db, at);
    }
    let Some(path) = &state.audit_path else {
        return no_log();
    };
    let found = at
        .parse::<Cursor>()
        .map_err(|m| m.to_string())
        .and_then(|c| newest::record_at(path, c).map_err(|e| e.to_string()));
    let found = match found {
        Ok(f) => f,
        Err(m) => return html! { div.error { (m) } },
    };
    let record: Value = serde_json::from_str(&found.text).unwrap_or(Value::Null);
    let slice = match (&record.get("entities"), found.head.entities_hash.as_deref()) {
        (Some(e), _) => Some((*e).clone()),
        (None, Some(hash)) => newest::find_slice(&found.file, found.offset, hash, SLICE_BUDGET)
            .ok()
            .flatten(),
        (None, None) => None,
    };
    let place = format!("{} at byte {}", found.file.display(), found.offset);
    record_markup(&record, &found.head, &place, slice.as_ref())
}

/// One record of the database, by its cursor.
fn one_record_db(db: &DbReader, at: &str) -> Markup {
    let found = at
        .parse::<DbCursor>()
        .map_err(|m| m.to_string())
        .and_then(|c| {
            let store = db.store().map_err(|e| format!("the database: {e}"))?;
            let found = record_at_db(&store, &c)
                .map_err(|e| format!("the database: {e}"))?
                .ok_or_else(|| format!("no record {c} in the database"))?;
            Ok((store, found))
        });
    let (store, found) = match found {
        Ok(f) => f,
        Err(m) => return html! { div.error { (m) } },
    };
    let record: Value = serde_json::from_str(&found.text).unwrap_or(Value::Null);
    let slice = match (&record.get("entities"), found.head.entities_hash.as_deref()) {
        (Some(e), _) => Some((*e).clone()),
        (None, Some(hash)) => find_slice_db(
            &store,
            &found.cursor.log_id,
            found.cursor.seq,
            hash,
            SLICE_BUDGET,
        )
        .ok()
        .flatten(),
        (None, None) => None,
    };
    let place = format!(
        "audit_records[{}]:{}",
        found.cursor.log_id, found.cursor.seq
    );
    record_markup(&record, &found.head, &place, slice.as_ref())
}

/// A record opened: its reasons, context, slice and the record as written.
fn record_markup(record: &Value, head: &Head, place: &str, slice: Option<&Value>) -> Markup {
    let s = |k: &str| {
        record
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let try_href = format!(
        "/console/try{}",
        query_string([
            ("principal", s("principal").as_str()),
            ("action", s("action").as_str()),
            ("resource", s("resource").as_str()),
            (
                "context",
                &record
                    .get("context")
                    .map(|c| context_for_try(c).0)
                    .unwrap_or_default(),
            ),
        ])
    );
    html! {
        section.record #record {
            h2 { "Record " (head.seq) " " span.note.mono { (place) } }
            @if head.kind == Some(partnergate_audit::Kind::Decision) {
                p {
                    span class={ "verdict " (s("decision")) } { (s("decision")) }
                    " " span.mono { (s("principal")) " " (s("action")) " " (s("resource")) }
                    " · " a href=(try_href) { "open in Try" }
                }
                h3 { "Determining policies" }
                ul { @for r in record.get("reasons").and_then(Value::as_array).into_iter().flatten() {
                    li { span.mono { (r.get("id").and_then(Value::as_str).unwrap_or("")) }
                        @if let Some(d) = r.get("description").and_then(Value::as_str) { " — " (d) } }
                } }
                @if let Some(sh) = record.get("shadow") { h3 { "Shadow disagreement" } (json_block(sh)) }
                @if let Some(g) = record.get("gateway") { h3 { "Gateway request" } (json_block(g)) }
                h3 { "Entities the decision saw" }
                @match slice {
                    Some(e) => (json_block(e)),
                    None => p.note { "Not found in its file (named by hash by a record this page could not reach)." },
                }
            }
            h3 { "The record as written" }
            (json_block(record))
            div.verify data-src="/console/f/decisions/verify" {
                button.load #verify-chain type="button" { "Verify the chain (audit verify)" }
            }
        }
    }
}

/// Seconds a refused chain check is told to wait (`Retry-After`).
const VERIFY_RETRY_AFTER_S: u64 = 5;

/// Sets the scan's stop flag when the request is dropped (its timeout, a
/// client that left) before the scan ended.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `GET /console/f/decisions/verify`: the whole chain, checked now (behind
/// the token; one at a time: a second is a 429 with `Retry-After`).
pub async fn verify(State(state): State<Arc<AppState>>) -> Response {
    use axum::response::IntoResponse;
    if state.audit_path.is_none() && state.audit_db.is_none() {
        return fragment(no_log());
    }
    let permit = match state.verify_gate.begin() {
        Ok(p) => p,
        Err(why) => {
            metrics::counter!("partnergate_console_verify_total", "outcome" => "refused")
                .increment(1);
            let status = if state.verify_gate.is_stopping() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            let mut r = crate::error::AppError::new(status, "verify_busy", why).into_response();
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(VERIFY_RETRY_AFTER_S),
            );
            return r;
        }
    };
    let _stop_on_drop = StopOnDrop(permit.stop.clone());
    if let Some(db) = state.audit_db.clone() {
        return verify_db_fragment(db, permit).await;
    }
    let Some(path) = state.audit_path.clone() else {
        return fragment(no_log());
    };
    let report = tokio::task::spawn_blocking(move || {
        let r = partnergate_audit::verify_until(&path, &permit.stop);
        counted(&r);
        drop(permit);
        r
    })
    .await;
    let report = match report {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            return fragment_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the chain check was stopped (the server is stopping)",
            )
        }
        Ok(Err(e)) => return fragment_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(e) => return fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    fragment(html! {
        p #verify-result class=(if report.ok() { "ok" } else { "bad" }) {
            @if report.ok() { "Chain intact: " } @else if report.intact() { "Chain intact, but gap records state missing records: " } @else { "CHAIN BROKEN: " }
            (report.records) " records in " (report.files.len()) " files"
            @if let (Some(a), Some(b)) = (report.first_seq, report.last_seq) { " (seq " (a) "–" (b) ")" }
        }
        @for r in &report.retentions { p.note { (r.to_string()) } }
        @if let Some(p) = &report.problem { pre.caret { (format!("{p:?}")) } }
    })
}

/// Count a chain check by how it ended.
fn counted<T, E>(r: &Result<Option<T>, E>) {
    let outcome = match r {
        Ok(Some(_)) => "done",
        Ok(None) => "stopped",
        Err(_) => "error",
    };
    metrics::counter!("partnergate_console_verify_total", "outcome" => outcome).increment(1);
}

/// The chain check of every replica's shipped log (and of the retentions).
async fn verify_db_fragment(
    db: Arc<DbReader>,
    permit: crate::verify_gate::VerifyPermit,
) -> Response {
    let checked = tokio::task::spawn_blocking(move || {
        let r = db.store().and_then(|s| verify_db(&s, &permit.stop));
        counted(&r);
        drop(permit);
        r
    })
    .await;
    let v = match checked {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => {
            return fragment_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the chain check was stopped (the server is stopping)",
            )
        }
        Ok(Err(e)) => {
            return fragment_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the database: {e}"),
            )
        }
        Err(e) => return fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let records: u64 = v.logs.iter().map(|l| l.report.records).sum();
    fragment(html! {
        p #verify-result class=(if v.intact() { "ok" } else { "bad" }) {
            @if v.intact() { "Chains intact: " } @else { "CHAIN BROKEN: " }
            (records) " records in " (v.logs.len()) " replica log(s) in the database"
            @if v.retentions.records > 0 { ", " (v.retentions.records) " retention record(s)" }
        }
        @for l in &v.logs {
            p.note.mono {
                "log " (l.log_id) " (replica " (l.replica.as_deref().unwrap_or("-")) "): "
                @if l.intact() { "intact, " (l.report.records) " records" } @else { "BROKEN" }
                @if let Some(k) = &l.retained { ", starts at seq " (k.kept_from.seq) " after a retention" }
            }
        }
        @if let Some(p) = v.first_problem() { pre.caret { (p) } }
    })
}

/// `GET /console/f/decisions/histogram`: allows and denies over time.
pub async fn histogram(State(state): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    if state.audit_path.is_none() && state.audit_db.is_none() {
        return fragment(no_log());
    }
    let filter = match p.filter() {
        Ok(f) => f,
        Err(m) => return fragment_error(StatusCode::BAD_REQUEST, &m),
    };
    let h = tokio::task::spawn_blocking(move || match (&state.audit_db, &state.audit_path) {
        (Some(db), _) => db
            .store()
            .and_then(|s| histogram_db(&s, &filter, 60, HISTOGRAM_BUDGET))
            .map_err(|e| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the database: {e}"),
                )
            }),
        (None, Some(path)) => newest::histogram(path, &filter, 60, HISTOGRAM_BUDGET)
            .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        (None, None) => Ok(newest::Histogram::default()),
    })
    .await;
    match h {
        Ok(Ok(h)) => fragment(svg(&h)),
        Ok(Err((status, m))) => fragment_error(status, &m),
        Err(e) => fragment_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn svg(h: &newest::Histogram) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 90.0;
    let max = h
        .buckets
        .iter()
        .map(|b| b.1 + b.2)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = h.buckets.len().max(1) as f64;
    // Thin bars even when there are few of them.
    let bw = (W / n).min(24.0);
    let fmt = |t: &time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    html! {
        figure.histogram {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } width="100%" height="90" role="img" {
                @for (i, (t, allow, deny)) in h.buckets.iter().enumerate() {
                    @let x = i as f64 * bw;
                    @let ha = *allow as f64 / max * H;
                    @let hd = *deny as f64 / max * H;
                    g {
                        title { (fmt(t)) ": " (allow) " allow, " (deny) " deny" }
                        rect.allow x=(x) y=(H - ha) width=(bw * 0.9) height=(ha) {}
                        rect.deny x=(x) y=(H - ha - hd) width=(bw * 0.9) height=(hd) {}
                    }
                }
            }
            figcaption {
                (h.decisions) " decisions"
                @if let (Some(a), Some(b)) = (h.buckets.first(), h.buckets.last()) { ", " (fmt(&a.0)) " to " (fmt(&b.0)) }
                ", " (h.width_s) " s per bar; allows below, denies above"
                @if h.partial { " (the newest " (HISTOGRAM_BUDGET / (1024 * 1024)) " MiB of the log only)" }
            }
        }
    }
}
