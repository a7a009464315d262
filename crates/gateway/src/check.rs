//! One gateway check, whatever the front door: a proxied request is mapped
//! under the serving pack's routes ([`crate::map`]), decided by
//! `partnergate_core::authz` (the decision path every endpoint uses: cache,
//! decision log, shadow set) and turned into a [`Reply`]: a status, the
//! headers for upstream or for the client, and the deny body. The gRPC and
//! HTTP adapters in `partnergate-server` only translate a [`Reply`] into
//! their wire format; this module must never know one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use partnergate_audit::Gateway;
use partnergate_core::authz::{Answer, Authz};
use partnergate_policy::engine::Effect;
use serde_json::json;

use crate::identity::{IdentityError, Source};
use crate::{map, GatewayRequest, Outcome, Refusal, Routes};

/// Which front door asked (a label of the log record and the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Envoy's ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`).
    Grpc,
    /// The HTTP forward-auth endpoint (nginx, Traefik, Caddy, Envoy's HTTP mode).
    Http,
}

impl Via {
    /// `grpc` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Grpc => "grpc",
            Via::Http => "http",
        }
    }
}

/// What became of a checked request (the `result` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by a decision.
    Allow,
    /// Denied by a decision.
    Deny,
    /// A dry-run route's Deny: logged, counted, allowed.
    DryRunDeny,
    /// No route, but a public path: allowed without a decision.
    Public,
    /// No route and not public: denied without a decision.
    NoRoute,
    /// No usable identity: 401.
    Unauthenticated,
    /// The route could not build a valid question from the request: denied.
    Refused,
    /// Gateway mode is off (no routes file): denied.
    NotConfigured,
}

impl Verdict {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::DryRunDeny => "dry_run_deny",
            Verdict::Public => "public",
            Verdict::NoRoute => "no_route",
            Verdict::Unauthenticated => "unauthenticated",
            Verdict::Refused => "refused",
            Verdict::NotConfigured => "not_configured",
        }
    }

    /// Whether the proxy lets the request through.
    pub fn passes(self) -> bool {
        matches!(self, Verdict::Allow | Verdict::DryRunDeny | Verdict::Public)
    }
}

/// A gateway answer in no wire format.
#[derive(Debug)]
pub struct Reply {
    /// What became of the request.
    pub outcome: Verdict,
    /// 200 when it passes; else 401 or 403.
    pub status: u16,
    /// Headers to add to the request sent upstream (when it passes).
    pub upstream: Vec<(String, String)>,
    /// Headers for the client (when it does not pass).
    pub client: Vec<(String, String)>,
    /// The JSON body for the client (when it does not pass).
    pub body: Option<String>,
    /// The matched route's template, if any.
    pub route: Option<String>,
    /// The decision, when one was made (the adapter waits for its record
    /// under `--audit-required`).
    pub answer: Option<Answer>,
}

/// Check `req` under the serving pack's routes: map, decide, reply. Every
/// failure is a 401 or a 403, never an allow; each outcome is counted.
pub fn check(authz: &Authz, req: &GatewayRequest<'_>, via: Via) -> Reply {
    let pack = authz.evaluator().current();
    let reply = match pack.extension::<Routes>() {
        None => refuse(
            Verdict::NotConfigured,
            None,
            "gateway mode is off: there is no routes file beside the policies".into(),
        ),
        Some(routes) => check_with(authz, &pack, &routes, req, via),
    };
    count(via, reply.route.as_deref(), reply.outcome);
    reply
}

fn check_with(
    authz: &Authz,
    pack: &partnergate_policy::policies::PolicyPack,
    routes: &Routes,
    req: &GatewayRequest<'_>,
    via: Via,
) -> Reply {
    let mapped = match map(routes, req) {
        Ok(Outcome::Decide(m)) => m,
        Ok(Outcome::Public(template)) => {
            return Reply {
                outcome: Verdict::Public,
                status: 200,
                upstream: Vec::new(),
                client: Vec::new(),
                body: None,
                route: Some(template),
                answer: None,
            }
        }
        Err(Refusal::NoRoute { method, path }) => {
            tracing::info!(%method, %path, "gateway: no route matches (deny)");
            return refuse(
                Verdict::NoRoute,
                None,
                format!("no route matches {method} {path}"),
            );
        }
        Err(Refusal::Identity(e)) => return unauthenticated(routes, &e),
        Err(Refusal::BadRequest { route, reason }) => {
            tracing::info!(%route, %reason, "gateway: the route cannot build a question (deny)");
            return refuse(Verdict::Refused, Some(route), reason);
        }
    };
    let path = req.uri.split_once('?').map_or(req.uri, |(p, _)| p);
    let origin = Gateway {
        method: req.method.to_ascii_uppercase(),
        path: path.to_string(),
        route: mapped.route.clone(),
        source: match mapped.source {
            Source::Jwt => "jwt".into(),
            Source::Header => "header".into(),
        },
        via: via.as_str().into(),
        dry_run: mapped.dry_run,
    };
    let principal_id = ascii(mapped.query.principal.id().unescaped());
    let query = mapped.query.with_gateway(Some(origin));
    let answer = match authz.is_authorized_with(pack, &query) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(route = %mapped.route, error = %e,
                "gateway: request refused before evaluation (deny)");
            return refuse(Verdict::Refused, Some(mapped.route), e.to_string());
        }
    };
    let h = &routes.response;
    let ids = vec![
        (h.decision_id.clone(), answer.decision_id.clone()),
        (
            h.policy_version.clone(),
            answer.decision.policy_version.clone(),
        ),
    ];
    let allowed = answer.decision.decision == Effect::Allow;
    if allowed || mapped.dry_run {
        let mut upstream = ids;
        if let Some(name) = &h.principal {
            upstream.push((name.clone(), principal_id));
        }
        let outcome = if allowed {
            Verdict::Allow
        } else {
            tracing::info!(route = %mapped.route, decision_id = %answer.decision_id,
                "gateway: dry-run route denied; allowed anyway");
            upstream.push(("x-partnergate-dry-run".into(), "deny".into()));
            Verdict::DryRunDeny
        };
        return Reply {
            outcome,
            status: 200,
            upstream,
            client: Vec::new(),
            body: None,
            route: Some(mapped.route),
            answer: Some(answer),
        };
    }
    let d = &answer.decision;
    let body = json!({"decision": "Deny", "decision_id": answer.decision_id,
        "policy_version": d.policy_version, "reasons": d.reasons, "errors": d.errors})
    .to_string();
    Reply {
        outcome: Verdict::Deny,
        status: 403,
        upstream: Vec::new(),
        client: ids,
        body: Some(body),
        route: Some(mapped.route),
        answer: Some(answer),
    }
}

/// A 403 without a decision: the reason goes in the body's `errors`.
fn refuse(outcome: Verdict, route: Option<String>, reason: String) -> Reply {
    let body = json!({"decision": "Deny", "reasons": [], "errors": [reason]}).to_string();
    Reply {
        outcome,
        status: 403,
        upstream: Vec::new(),
        client: Vec::new(),
        body: Some(body),
        route,
        answer: None,
    }
}

/// A 401 with the `WWW-Authenticate` challenge of RFC 6750.
fn unauthenticated(routes: &Routes, e: &IdentityError) -> Reply {
    tracing::info!(error = %e, "gateway: no usable identity (401)");
    let jwt = matches!(routes.identity, crate::routes::IdentitySource::Jwt(_));
    let challenge = match e {
        IdentityError::BadToken(why) if jwt => format!(
            "Bearer realm=\"partnergate\", error=\"invalid_token\", error_description=\"{}\"",
            why.replace(['"', '\\'], "'")
        ),
        _ => "Bearer realm=\"partnergate\"".to_string(),
    };
    let body = json!({"error": "unauthorized", "message": e.to_string()}).to_string();
    Reply {
        outcome: Verdict::Unauthenticated,
        status: 401,
        upstream: Vec::new(),
        client: vec![("www-authenticate".into(), ascii(&challenge))],
        body: Some(body),
        route: None,
        answer: None,
    }
}

/// `text` with every character outside printable ASCII escaped (`\uXXXX`,
/// which JSON reads back as the same string), so it fits a header value.
pub fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

type Counters = RwLock<HashMap<(&'static str, String, &'static str), metrics::Counter>>;

/// Count one check in `partnergate_gateway_requests_total{via, route,
/// result}` (the route is a template of the routes file, or empty: the
/// label set stays bounded whatever the paths asked).
fn count(via: Via, route: Option<&str>, outcome: Verdict) {
    static COUNTERS: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    let counters = COUNTERS.get_or_init(Counters::default);
    let key = (
        via.as_str(),
        route.unwrap_or("").to_string(),
        outcome.as_str(),
    );
    if let Some(c) = counters.read().ok().and_then(|m| m.get(&key).cloned()) {
        c.increment(1);
        return;
    }
    let c = metrics::counter!("partnergate_gateway_requests_total",
        "via" => key.0, "route" => key.1.clone(), "result" => key.2);
    c.increment(1);
    if let Ok(mut m) = counters.write() {
        m.insert(key, c);
    }
}

/// The routes the serving pack carries, if gateway mode is on.
pub fn routes_of(authz: &Authz) -> Option<Arc<Routes>> {
    authz.evaluator().current().extension::<Routes>()
}
