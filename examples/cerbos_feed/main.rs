//! Feed the Cerbos PDP (a peer in `scripts/perf.sh`) the workload of
//! `examples/workload.rs`, as a Cerbos user would: each PartnerGate question
//! becomes a `CheckResources` request (REST `POST /api/check/resources`)
//! whose principal and resource carry their attributes from the same
//! directory (`entities.json`) PartnerGate serves, for the Cerbos policies
//! of `benches/peers/cerbos/policies/`. Then check that Cerbos answers
//! every distinct question of the stream as PartnerGate does.
//!
//! ```text
//! cerbos_feed requests ENTITIES_JSON READS_TXT OUT_TXT
//! cerbos_feed check READS_TXT CERBOS_TXT REFERENCE_URL CERBOS_URL...
//! cerbos_feed grpc-load ADDR CERBOS_TXT CONNECTIONS SECONDS [OFFSET]
//! ```
//!
//! `requests` writes OUT_TXT line for line beside READS_TXT (the same
//! questions in the same order, `POST<TAB>/api/check/resources<TAB>BODY`,
//! for `scripts/lib/replay.lua`) and prints one `CERBOS_REQUESTS ...` line.
//! What a Cerbos user sends, since Cerbos holds no data:
//! - the principal: its id, the one role `user`, and the user's record as
//!   attributes: `account` (the account's id), `is_admin`, `status`,
//!   `two_factor`, `email`, and `partner` for a partner user;
//! - the resource: kind `account` or `user` (the entity type in lower
//!   case), its id, and its record the same way;
//! - an invitation's, a grant's or a renewal's context (`invitee`,
//!   `access`) travels as attributes of the resource; any other context
//!   attribute is refused (the current time is Cerbos's `now()`);
//! - a reference to a partner company becomes `{id, name, status,
//!   certified}` (the policies read its certification: the application
//!   joins the partner registry, as PartnerGate's slice does); any other
//!   entity reference becomes the referenced id; a Cedar extension value
//!   (a `datetime`) becomes its text.
//!
//! `check` pairs READS_TXT and CERBOS_TXT line by line, asks every distinct
//! question to the reference (PartnerGate's `POST /v1/is_authorized`) and
//! its Cerbos request to every CERBOS_URL (`http://HOST:PORT`: REST;
//! `grpc://HOST:PORT`: the same request over gRPC, module `grpc`), and
//! fails (exit 1) on any different decision or error, printing the first
//! few and one `CHECK_CERBOS questions=... allows=... peers=...
//! differences=...` line.
//!
//! `grpc-load` replays CERBOS_TXT over gRPC for `scripts/perf.sh` as wrk
//! replays it over REST (module `grpc`): CONNECTIONS connections, one call
//! outstanding on each, from line OFFSET, for SECONDS; it prints wrk's
//! `WRK rps=... requests=...` line.
//!
//! This owns the translation of a question into a Cerbos request and the
//! check; it must never know how PartnerGate or Cerbos decide (only their
//! wire formats). Loopback only; every request has a timeout.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Map, Value};

#[path = "../shared/checked_in_parallel.rs"]
mod checked_in_parallel;
use checked_in_parallel::checked_in_parallel;
mod grpc;

/// The role every principal is sent with; the rest is derived by Cerbos.
const ROLE: &str = "user";
/// The entity type whose references are expanded into their attributes.
const COMPANY_TYPE: &str = "PartnerCompany";
/// The context attributes a Cerbos user sends as resource attributes
/// (Cerbos has no request context): who would receive partner access and
/// what access. `now` is Cerbos's own `now()`.
const CONTEXT_AS_RESOURCE: [&str; 2] = ["invitee", "access"];

/// The directory: each entity's attributes by (type, id).
struct Directory {
    attrs: HashMap<(String, String), Value>,
}

impl Directory {
    fn parse(text: &str) -> Result<Self, String> {
        let all: Vec<Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut attrs = HashMap::with_capacity(all.len());
        for e in all {
            let ty = e.pointer("/uid/type").and_then(Value::as_str);
            let id = e.pointer("/uid/id").and_then(Value::as_str);
            let (Some(ty), Some(id)) = (ty, id) else {
                return Err(format!("an entity without uid.type and uid.id: {e}"));
            };
            let a = e.get("attrs").cloned().unwrap_or_else(|| json!({}));
            attrs.insert((ty.to_string(), id.to_string()), a);
        }
        Ok(Directory { attrs })
    }

    /// One attribute value as a Cerbos user sends it (see the file's doc).
    fn plain(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::Object(m) => {
                if let Some(r) = m.get("__entity") {
                    let ty = r.get("type").and_then(Value::as_str).unwrap_or_default();
                    let id = r.get("id").and_then(Value::as_str).unwrap_or_default();
                    if ty != COMPANY_TYPE {
                        return Ok(json!(id));
                    }
                    let mut company = Map::new();
                    company.insert("id".into(), json!(id));
                    let a = self
                        .attrs
                        .get(&(ty.to_string(), id.to_string()))
                        .ok_or_else(|| format!("{ty}::{id:?} is not in the directory"))?;
                    if let Value::Object(fields) = self.plain(a)? {
                        company.extend(fields);
                    }
                    return Ok(Value::Object(company));
                }
                if let Some(arg) = m.get("__extn").and_then(|x| x.get("arg")) {
                    return Ok(arg.clone());
                }
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(k.clone(), self.plain(x)?);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|x| self.plain(x))
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }

    /// The attributes of `ty::id`, plain.
    fn record(&self, ty: &str, id: &str) -> Result<Value, String> {
        let a = self
            .attrs
            .get(&(ty.to_string(), id.to_string()))
            .ok_or_else(|| format!("{ty}::{id:?} is not in the directory"))?;
        self.plain(a)
    }
}

/// `Type::"id"` → (Type, id); the workload's ids need no escapes.
fn split_uid(s: &str) -> Result<(&str, &str), String> {
    let (ty, rest) = s
        .split_once("::\"")
        .ok_or_else(|| format!("not an entity uid: {s}"))?;
    let id = rest
        .strip_suffix('"')
        .filter(|id| !id.contains(['"', '\\']))
        .ok_or_else(|| format!("not a plain entity uid: {s}"))?;
    Ok((ty, id))
}

/// One PartnerGate question body → its Cerbos `CheckResources` body.
fn cerbos_request(dir: &Directory, question: &str) -> Result<Value, String> {
    let q: Value = serde_json::from_str(question).map_err(|e| format!("{question}: {e}"))?;
    let field = |f: &str| -> Result<(&str, &str), String> {
        let s = q
            .get(f)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{question}: no `{f}`"))?;
        split_uid(s)
    };
    let (pty, pid) = field("principal")?;
    let (_, action) = field("action")?;
    let (rty, rid) = field("resource")?;
    let mut resource = dir.record(rty, rid)?;
    if let (Some(context), Value::Object(attr)) = (q.get("context"), &mut resource) {
        let context = context
            .as_object()
            .ok_or_else(|| format!("{question}: the context is not an object"))?;
        for (k, v) in context {
            if !CONTEXT_AS_RESOURCE.contains(&k.as_str()) {
                return Err(format!("{question}: context `{k}` has no Cerbos form"));
            }
            attr.insert(k.clone(), dir.plain(v)?);
        }
    }
    Ok(json!({
        "principal": {"id": pid, "roles": [ROLE], "attr": dir.record(pty, pid)?},
        "resources": [{
            "actions": [action],
            "resource": {"kind": rty.to_lowercase(), "id": rid, "attr": resource}
        }]
    }))
}

/// The decision bodies of a stream file, in order (`POST /v1/is_authorized` lines).
fn questions(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let mut parts = line.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("POST"), Some("/v1/is_authorized"), Some(body)) => Some(body),
            _ => None,
        }
    })
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn write_requests(entities: &str, reads: &str, out: &str) -> Result<(), String> {
    let dir = Directory::parse(&read(entities)?).map_err(|e| format!("{entities}: {e}"))?;
    let reads_text = read(reads)?;
    let io = |e: std::io::Error| format!("{out}: {e}");
    let mut w = BufWriter::new(std::fs::File::create(out).map_err(io)?);
    let (mut lines, mut bytes) = (0usize, 0usize);
    for q in questions(&reads_text) {
        let body = cerbos_request(&dir, q)?.to_string();
        writeln!(w, "POST\t/api/check/resources\t{body}").map_err(io)?;
        (lines, bytes) = (lines + 1, bytes + body.len());
    }
    w.flush().map_err(io)?;
    println!(
        "CERBOS_REQUESTS lines={lines} mean_body_bytes={}",
        bytes / lines.max(1)
    );
    Ok(())
}

fn post(http: &reqwest::blocking::Client, url: &str, body: &str) -> Result<Value, String> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    let v: Value = r.json().map_err(|e| format!("POST {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status}: {v}"));
    }
    Ok(v)
}

/// PartnerGate's decision: "Allow" or "Deny".
fn reference_decision(
    http: &reqwest::blocking::Client,
    base: &str,
    body: &str,
) -> Result<String, String> {
    let url = format!("{}/v1/is_authorized", base.trim_end_matches('/'));
    let v = post(http, &url, body)?;
    match v.get("decision").and_then(Value::as_str) {
        Some(d @ ("Allow" | "Deny")) => Ok(d.to_string()),
        _ => Err(format!("POST {url}: no decision in {v}")),
    }
}

/// Cerbos's effect on the one action of `body`, as "Allow" or "Deny".
fn cerbos_decision(
    http: &reqwest::blocking::Client,
    base: &str,
    body: &str,
) -> Result<String, String> {
    let url = format!("{}/api/check/resources", base.trim_end_matches('/'));
    let sent: Value = serde_json::from_str(body).map_err(|e| format!("{body}: {e}"))?;
    let action = sent
        .pointer("/resources/0/actions/0")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no action in {body}"))?;
    let v = post(http, &url, body)?;
    let effect = v
        .pointer("/results/0/actions")
        .and_then(|a| a.get(action))
        .and_then(Value::as_str);
    match effect {
        Some("EFFECT_ALLOW") => Ok("Allow".into()),
        Some("EFFECT_DENY") => Ok("Deny".into()),
        _ => Err(format!("POST {url}: no effect for {action} in {v}")),
    }
}

/// Ask `pairs` (question, Cerbos body) of the reference and every Cerbos;
/// (allows, differences, report).
fn check_some(
    pairs: &[(&str, &str)],
    reference: &str,
    peers: &[String],
) -> Result<(usize, usize, String), String> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut grpc_peers = HashMap::new();
    for peer in peers {
        if let Some(addr) = peer.strip_prefix("grpc://") {
            grpc_peers.insert(peer.as_str(), rt.block_on(grpc::connect(addr))?);
        }
    }
    let (mut allows, mut differ, mut report) = (0, 0, String::new());
    for (question, body) in pairs {
        let want = reference_decision(&http, reference, question)?;
        allows += usize::from(want == "Allow");
        for peer in peers {
            let got = match grpc_peers.get_mut(peer.as_str()) {
                Some(client) => {
                    let (req, action) = grpc::encode(body)?;
                    rt.block_on(grpc::decide(client, req, &action))?.to_string()
                }
                None => cerbos_decision(&http, peer, body)?,
            };
            if got != want {
                differ += 1;
                if differ <= 5 {
                    let _ = writeln!(
                        report,
                        "  {question}: {reference} {want}, {peer} {got}\n    sent {body}"
                    );
                }
            }
        }
    }
    Ok((allows, differ, report))
}

fn check(reads: &str, cerbos: &str, reference: &str, peers: &[String]) -> Result<(), String> {
    let (reads_text, cerbos_text) = (read(reads)?, read(cerbos)?);
    let asked: Vec<&str> = questions(&reads_text).collect();
    let sent: Vec<&str> = cerbos_text
        .lines()
        .filter_map(|l| l.strip_prefix("POST\t/api/check/resources\t"))
        .collect();
    if asked.len() != sent.len() {
        return Err(format!(
            "{reads} has {} questions but {cerbos} {} requests: regenerate it",
            asked.len(),
            sent.len()
        ));
    }
    let mut seen = HashSet::new();
    let pairs: Vec<(&str, &str)> = asked
        .into_iter()
        .zip(sent)
        .filter(|(q, _)| seen.insert(*q))
        .collect();
    let (allows, differ, report) =
        checked_in_parallel(&pairs, |part| check_some(part, reference, peers))?;
    println!(
        "CHECK_CERBOS questions={} allows={allows} denies={} peers={} differences={differ}",
        pairs.len(),
        pairs.len() - allows,
        peers.len()
    );
    if differ > 0 {
        return Err(format!(
            "{differ} Cerbos answers differ from {reference} (first few per thread):\n{report}"
        ));
    }
    Ok(())
}

fn grpc_load(
    addr: &str,
    file: &str,
    conns: &str,
    secs: &str,
    offset: Option<&String>,
) -> Result<(), String> {
    let number = |what: &str, s: &str| -> Result<usize, String> {
        s.parse().map_err(|e| format!("{what} {s}: {e}"))
    };
    let (conns, secs) = (number("CONNECTIONS", conns)?, number("SECONDS", secs)?);
    let offset = offset.map_or(Ok(0), |o| number("OFFSET", o))?;
    let reqs = read(file)?
        .lines()
        .filter_map(|l| l.strip_prefix("POST\t/api/check/resources\t"))
        .map(grpc::encode)
        .collect::<Result<Vec<_>, _>>()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(grpc::load(addr, reqs, conns.max(1), secs as u64, offset))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, entities, reads, out] if cmd == "requests" => write_requests(entities, reads, out),
        [cmd, reads, cerbos, reference, peers @ ..] if cmd == "check" && !peers.is_empty() => {
            check(reads, cerbos, reference, peers)
        }
        [cmd, addr, file, conns, secs, rest @ ..] if cmd == "grpc-load" && rest.len() <= 1 => {
            grpc_load(addr, file, conns, secs, rest.first())
        }
        _ => Err("usage: cerbos_feed requests ENTITIES_JSON READS_TXT OUT_TXT | cerbos_feed check READS_TXT CERBOS_TXT REFERENCE_URL CERBOS_URL... | cerbos_feed grpc-load ADDR CERBOS_TXT CONNECTIONS SECONDS [OFFSET]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cerbos_feed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECTORY: &str = r#"[
      {"uid": {"type": "Account", "id": "a1"}, "attrs": {"name": "Account 1"}, "parents": []},
      {"uid": {"type": "PartnerCompany", "id": "c1"},
       "attrs": {"name": "Company 1", "status": "gold", "certified": true}, "parents": []},
      {"uid": {"type": "User", "id": "u1"}, "parents": [{"type": "Account", "id": "a1"}],
       "attrs": {"email": "u1@a1.example", "is_admin": false, "status": "active", "two_factor": true,
                 "account": {"__entity": {"type": "Account", "id": "a1"}},
                 "partner": {"company": {"__entity": {"type": "PartnerCompany", "id": "c1"}},
                             "verified": true, "scopes": ["users"],
                             "expires_at": {"__extn": {"fn": "datetime", "arg": "2027-01-01T00:00:00Z"}}}}}
    ]"#;

    #[test]
    fn a_partner_question_carries_both_records_plain() {
        let dir = Directory::parse(DIRECTORY).expect("directory");
        let q = r#"{"principal":"User::\"u1\"","action":"Action::\"edit_profile\"","resource":"User::\"u1\""}"#;
        let body = cerbos_request(&dir, q).expect("request");
        let user = json!({
            "email": "u1@a1.example", "is_admin": false, "status": "active", "two_factor": true,
            "account": "a1",
            "partner": {"company": {"id": "c1", "name": "Company 1", "status": "gold", "certified": true},
                        "verified": true, "scopes": ["users"], "expires_at": "2027-01-01T00:00:00Z"}
        });
        assert_eq!(
            body,
            json!({
                "principal": {"id": "u1", "roles": ["user"], "attr": user.clone()},
                "resources": [{"actions": ["edit_profile"],
                               "resource": {"kind": "user", "id": "u1", "attr": user}}]
            })
        );
    }

    #[test]
    fn an_account_is_a_resource_of_kind_account() {
        let dir = Directory::parse(DIRECTORY).expect("directory");
        let q = r#"{"principal":"User::\"u1\"","action":"Action::\"view_account\"","resource":"Account::\"a1\""}"#;
        let body = cerbos_request(&dir, q).expect("request");
        assert_eq!(
            body["resources"][0]["resource"],
            json!({"kind": "account", "id": "a1", "attr": {"name": "Account 1"}})
        );
    }

    #[test]
    fn an_invitation_context_travels_with_the_resource() {
        let dir = Directory::parse(DIRECTORY).expect("directory");
        let q = r#"{"principal":"User::\"u1\"","action":"Action::\"invite_partner\"","resource":"Account::\"a1\"",
            "context":{"invitee":{"company":{"__entity":{"type":"PartnerCompany","id":"c1"}},"status":"gold","certified":true},
                       "access":{"scopes":["users"],"expires_at":{"__extn":{"fn":"datetime","arg":"2026-12-15T00:00:00Z"}}}}}"#;
        let body = cerbos_request(&dir, q).expect("request");
        assert_eq!(
            body["resources"][0]["resource"]["attr"],
            json!({"name": "Account 1",
                   "invitee": {"company": {"id": "c1", "name": "Company 1", "status": "gold", "certified": true},
                               "status": "gold", "certified": true},
                   "access": {"scopes": ["users"], "expires_at": "2026-12-15T00:00:00Z"}})
        );
    }

    #[test]
    fn unknown_entities_and_contexts_are_refused() {
        let dir = Directory::parse(DIRECTORY).expect("directory");
        let missing = r#"{"principal":"User::\"u9\"","action":"Action::\"view_account\"","resource":"Account::\"a1\""}"#;
        assert!(cerbos_request(&dir, missing).is_err());
        let context = r#"{"principal":"User::\"u1\"","action":"Action::\"view_account\"","resource":"Account::\"a1\"","context":{"now":1}}"#;
        assert!(cerbos_request(&dir, context).is_err());
        assert!(split_uid(r#"User::"a\"b""#).is_err());
    }
}
