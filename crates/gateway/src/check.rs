//! One gateway check, whatever the front door: a proxied request is mapped
//! under the serving pack's routes ([`crate::map::map`]), decided by
//! `partnergate_core::authz` (the decision path every endpoint uses: cache,
//! decision log, shadow set) and turned into a [`Reply`]: a status, the
//! headers for upstream or for the client, and the deny body. The gRPC and
//! HTTP adapters in `partnergate-server` only translate a [`Reply`] into
//! their wire format; this module must never know one.

use partnergate_audit::Gateway;
use partnergate_core::authz::{Answer, Authz};
use partnergate_core::metric_handles::Handles;
use partnergate_policy::engine::Effect;
use serde_json::json;

use crate::identity::{IdentityError, Source};
use crate::map::{map, GatewayRequest, Outcome, Refusal};
use crate::proxy::{door_open, Door, HeaderSet};
use crate::routes::Routes;

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
    /// The check came through a door the configured proxy does not use, or
    /// carries headers that proxy never sends (a client's forgery): denied.
    ProxyMismatch,
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
            Verdict::ProxyMismatch => "proxy_mismatch",
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
    pub verdict: Verdict,
    /// 200 when it passes; else 401 or 403.
    pub status: u16,
    /// Headers to add to the request sent upstream (when it passes),
    /// replacing any the client sent under the same name.
    pub upstream: Vec<(String, String)>,
    /// Headers of PartnerGate's (the decision headers, the principal
    /// header) that this answer does not set: removed from the request
    /// sent upstream (when it passes), so a client's own copy never
    /// reaches the upstream.
    pub remove: Vec<String>,
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

/// The wire label of a door.
fn via_of(door: Door) -> Via {
    match door {
        Door::EnvoyGrpc => Via::Grpc,
        Door::EnvoyHttp | Door::ForwardAuth => Via::Http,
    }
}

/// Check `req`, as Envoy sent it through `door`, under the serving pack's
/// routes: map, decide, reply. A door the routes file's `proxy` does not
/// use is refused. Every failure is a 401 or a 403, never an allow; each
/// outcome is counted.
pub fn check(authz: &Authz, req: &GatewayRequest<'_>, door: Door) -> Reply {
    let via = via_of(door);
    let pack = authz.evaluator().current();
    let reply = match pack.extension::<Routes>() {
        None => not_configured(),
        Some(routes) => match door_open(routes.proxy, door) {
            Err(why) => mismatch(403, why),
            Ok(()) => check_with(authz, &pack, &routes, req, via),
        },
    };
    count(via, reply.route.as_deref(), reply.verdict);
    reply
}

/// What the forward-auth door received: its headers, by lower-case name
/// (`header`: the first value; `count`: how many values).
pub struct ForwardAuth<'a> {
    /// The first value of a header (a non-UTF-8 value counts as absent).
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    /// How many times a header occurs.
    pub count: &'a dyn Fn(&str) -> usize,
}

/// Check a forward-auth request (nginx, Caddy, Traefik): the original
/// method, URI and host come from exactly the header set of the routes
/// file's `proxy`; a request that also carries the other set, or one of
/// its own headers twice, is refused (403: a client's forgery, since the
/// configured proxy never sends them), and one without its method and URI
/// is a 400 (the proxy is misconfigured). When the routes file names hosts
/// (a route's `host`, `[[unmatched.host]]`), the host header is required.
pub fn check_forward_auth(authz: &Authz, seen: &ForwardAuth<'_>) -> Reply {
    let pack = authz.evaluator().current();
    let reply = match pack.extension::<Routes>() {
        None => not_configured(),
        Some(routes) => match forward_auth_request(&routes, seen) {
            Err(reply) => *reply,
            Ok((own, host)) => {
                let (method, uri) = (
                    (seen.header)(own.method).unwrap_or_default(),
                    (seen.header)(own.uri).unwrap_or_default(),
                );
                check_with(
                    authz,
                    &pack,
                    &routes,
                    &GatewayRequest {
                        method,
                        host,
                        uri,
                        header: seen.header,
                    },
                    Via::Http,
                )
            }
        },
    };
    count(Via::Http, reply.route.as_deref(), reply.verdict);
    reply
}

/// The configured proxy's header set and the original host, or the refusal.
fn forward_auth_request<'a>(
    routes: &Routes,
    seen: &ForwardAuth<'a>,
) -> Result<(HeaderSet, Option<&'a str>), Box<Reply>> {
    door_open(routes.proxy, Door::ForwardAuth).map_err(|why| Box::new(mismatch(403, why)))?;
    let Some((own, other)) = routes.proxy.and_then(|k| k.forward_auth_sets()) else {
        return Err(Box::new(mismatch(403, "no forward-auth header set".into())));
    };
    let kind = routes.proxy.map_or("", |k| k.as_str());
    if let Some(name) = other.names().into_iter().find(|n| (seen.count)(n) > 0) {
        return Err(Box::new(mismatch(
            403,
            format!(
                "the check carries `{name}`, which {kind} never sends (its request is in {}, {}, {}): \
                 a client's own header; configure {kind} to strip it",
                own.method, own.uri, own.host
            ),
        )));
    }
    if let Some(name) = own.names().into_iter().find(|n| (seen.count)(n) > 1) {
        return Err(Box::new(mismatch(
            403,
            format!("`{name}` occurs more than once: which request would {kind} mean?"),
        )));
    }
    if (seen.header)(own.method).is_none() || (seen.header)(own.uri).is_none() {
        return Err(Box::new(mismatch(
            400,
            format!(
                "proxy = \"{kind}\": the forward-auth endpoint needs the original method and URI in {} and {}",
                own.method, own.uri
            ),
        )));
    }
    let host = (seen.header)(own.host);
    let names_hosts =
        routes.routes.iter().any(|r| r.host.is_some()) || !routes.host_public.is_empty();
    if host.is_none() && names_hosts {
        return Err(Box::new(mismatch(
            400,
            format!(
                "proxy = \"{kind}\": the routes file names hosts, and the check has no {}",
                own.host
            ),
        )));
    }
    Ok((own, host))
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
                verdict: Verdict::Public,
                status: 200,
                upstream: Vec::new(),
                remove: owned_headers(routes),
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
        Err(Refusal::BadPath { path, reason }) => {
            tracing::info!(%path, %reason, "gateway: a path the upstream could read otherwise (deny)");
            return refuse(Verdict::Refused, None, format!("path {path}: {reason}"));
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
            upstream.push((DRY_RUN_HEADER.into(), "deny".into()));
            Verdict::DryRunDeny
        };
        let remove = owned_headers(routes)
            .into_iter()
            .filter(|n| !upstream.iter().any(|(set, _)| set == n))
            .collect();
        return Reply {
            verdict: outcome,
            status: 200,
            upstream,
            remove,
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
        verdict: Verdict::Deny,
        status: 403,
        upstream: Vec::new(),
        remove: Vec::new(),
        client: ids,
        body: Some(body),
        route: Some(mapped.route),
        answer: Some(answer),
    }
}

/// The name of the header that marks a dry-run route's Deny.
pub const DRY_RUN_HEADER: &str = "x-partnergate-dry-run";

/// Every header PartnerGate sets on a request sent upstream.
fn owned_headers(routes: &Routes) -> Vec<String> {
    let h = &routes.response;
    let mut names = vec![
        h.decision_id.clone(),
        h.policy_version.clone(),
        DRY_RUN_HEADER.to_string(),
    ];
    names.extend(h.principal.clone());
    names
}

fn not_configured() -> Reply {
    refuse(
        Verdict::NotConfigured,
        None,
        "gateway mode is off: there is no routes file beside the policies".into(),
    )
}

/// A refusal of the door or of its headers (`status` 400 or 403).
fn mismatch(status: u16, reason: String) -> Reply {
    tracing::info!(%reason, "gateway: refused at the door (deny)");
    let mut reply = refuse(Verdict::ProxyMismatch, None, reason);
    reply.status = status;
    reply
}

/// A 403 without a decision: the reason goes in the body's `errors`.
fn refuse(verdict: Verdict, route: Option<String>, reason: String) -> Reply {
    let body = json!({"decision": "Deny", "reasons": [], "errors": [reason]}).to_string();
    Reply {
        verdict,
        status: 403,
        upstream: Vec::new(),
        remove: Vec::new(),
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
        verdict: Verdict::Unauthenticated,
        status: 401,
        upstream: Vec::new(),
        remove: Vec::new(),
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

type Counters = Handles<(&'static str, String, &'static str), metrics::Counter>;

/// Count one check in `partnergate_gateway_requests_total{via, route,
/// result}` (the route is a template of the routes file, or empty: the
/// label set stays bounded whatever the paths asked).
fn count(via: Via, route: Option<&str>, outcome: Verdict) {
    static COUNTERS: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    let key = (
        via.as_str(),
        route.unwrap_or("").to_string(),
        outcome.as_str(),
    );
    let c = COUNTERS.get_or_init(Counters::default).get(key, |k| {
        metrics::counter!("partnergate_gateway_requests_total",
            "via" => k.0, "route" => k.1.clone(), "result" => k.2)
    });
    c.increment(1);
}
