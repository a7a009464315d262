//! A proxied request into one authorization question under the routes
//! file: the first route whose method, host and path match names the
//! action and resource; the identity names the principal; the route's
//! context members and the copied claims make the context. Knows no HTTP
//! framework and decides nothing.

use std::collections::BTreeMap;

use partnergate_core::authz::Query;

use crate::identity::{self, Identity, IdentityError, Source};
use crate::routes::{self, Route, Routes};
use crate::{proxy, template, types};

/// What an adapter saw of the proxied request.
pub struct GatewayRequest<'a> {
    /// The original method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The original host, if known (compared in [`proxy::normalize_host`]'s form).
    pub host: Option<&'a str>,
    /// The original path and query (`/api/users/pat?x=1`).
    pub uri: &'a str,
    /// A header of the original request, by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
}

/// The question a matched request asks.
#[derive(Debug)]
pub struct Mapped {
    /// The authorization query.
    pub query: Query,
    /// The matched route's template (for the log and the metrics).
    pub route: String,
    /// Decided and logged, but always allowed.
    pub dry_run: bool,
    /// How the principal was established.
    pub source: Source,
}

/// The outcome of mapping a request.
#[derive(Debug)]
pub enum Outcome {
    /// A route matched: decide this question.
    Decide(Box<Mapped>),
    /// No route matched, and the path is listed as public: allow, no decision.
    Public(String),
}

/// Why a request gets no decision.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No route matches and the path is not public: deny.
    #[error("no route matches {method} {path}")]
    NoRoute {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// A path the upstream could read differently from the routes: a dot
    /// segment (`.`, `..`, also percent-encoded or before a `;`), an encoded
    /// slash or backslash, a backslash, a control character, an escape that
    /// is malformed or not UTF-8, or an `X-Original-URL`/`X-Rewrite-URL`
    /// header: deny.
    #[error("path {path}: {reason}")]
    BadPath {
        /// The request's path.
        path: String,
        /// Which segment, and why.
        reason: String,
    },
    /// A missing or invalid identity: 401.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The route's resource or action cannot be built from this request
    /// (e.g. a parameter that makes no valid uid): deny.
    #[error("route {route}: {reason}")]
    BadRequest {
        /// The matched route.
        route: String,
        /// Why.
        reason: String,
    },
}

/// Headers that make some upstreams route by their value instead of the
/// request's path: a request carrying one is refused before any matching.
const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Map `req` under `routes`: the first route whose method, host and path
/// match decides; else a public path is allowed; else [`Refusal::NoRoute`].
///
/// A path with a segment the upstream could read differently, or a request
/// with a header that overrides its path (see [`Refusal::BadPath`]), is
/// refused before any matching; hosts are compared
/// in [`proxy::normalize_host`]'s form.
pub fn map(routes: &Routes, req: &GatewayRequest<'_>) -> Result<Outcome, Refusal> {
    let (path, query) = req.uri.split_once('?').unwrap_or((req.uri, ""));
    if let Some(name) = PATH_OVERRIDES.iter().find(|n| (req.header)(n).is_some()) {
        return Err(Refusal::BadPath {
            path: path.to_string(),
            reason: format!(
                "the request carries `{name}`, which some upstreams (IIS URL Rewrite, frameworks \
                 that trust it) route by instead of the path checked here; strip it at the proxy"
            ),
        });
    }
    if let Err(reason) = template::unambiguous(path) {
        return Err(Refusal::BadPath {
            path: path.to_string(),
            reason,
        });
    }
    let host = req.host.map(proxy::normalize_host);
    let found = routes.routes.iter().find_map(|r| {
        let method_ok =
            r.methods.is_empty() || r.methods.iter().any(|m| m.eq_ignore_ascii_case(req.method));
        let host_ok = r
            .host
            .as_deref()
            .is_none_or(|want| host.as_deref() == Some(want));
        if !(method_ok && host_ok) {
            return None;
        }
        r.template.matches(path).map(|bound| (r, bound))
    });
    let Some((route, bound)) = found else {
        let public = host
            .as_deref()
            .and_then(|h| routes.host_public.iter().find(|(name, _)| name == h))
            .map_or(&routes.public, |(_, list)| list);
        if let Some(p) = public.iter().find(|t| t.matches(path).is_some()) {
            return Ok(Outcome::Public(p.as_str().to_string()));
        }
        return Err(Refusal::NoRoute {
            method: req.method.to_ascii_uppercase(),
            path: path.to_string(),
        });
    };
    let identity = identify(routes, req)?;
    let bad = |reason: String| Refusal::BadRequest {
        route: route.template.as_str().to_string(),
        reason,
    };
    let principal = routes
        .principal_uid
        .build(&identity.id)
        .map_err(|e| bad(e.reason(Some("principal"))))?;
    let action = match &route.action {
        Some(uid) => uid.clone(),
        None => routes
            .method_action
            .build(&req.method.to_ascii_uppercase())
            .map_err(|e| bad(e.reason(None)))?,
    };
    let resource = match &route.resource {
        routes::RouteResource::Template(t) => t.build(&|n| bound.get(n).map(String::as_str)),
        routes::RouteResource::Default(uid) => uid.clone(),
    }
    .map_err(|e| bad(e.reason(Some("resource"))))?;
    let context = context(route, &bound, query, req, &identity).map_err(&bad)?;
    let query = Query::new(principal, action, resource).with_context(Some(context));
    Ok(Outcome::Decide(Box::new(Mapped {
        query,
        route: route.template.as_str().to_string(),
        dry_run: route.dry_run,
        source: identity.source,
    })))
}

fn identify(routes: &Routes, req: &GatewayRequest<'_>) -> Result<Identity, IdentityError> {
    match &routes.identity {
        routes::IdentitySource::Jwt(v) => {
            v.verify(identity::bearer((req.header)("authorization"))?)
        }
        routes::IdentitySource::Header(name) => match (req.header)(name) {
            Some(id) if !id.trim().is_empty() => Ok(Identity {
                id: id.trim().to_string(),
                claims: BTreeMap::new(),
                source: Source::Header,
            }),
            _ => Err(IdentityError::Missing(format!("no `{name}` header"))),
        },
    }
}

/// The context record: the route's members (each converted to the kind the
/// schema declares; a member the request lacks is left out, so a schema that
/// requires it refuses the request) and the copied claims.
fn context(
    route: &Route,
    bound: &BTreeMap<String, String>,
    query: &str,
    req: &GatewayRequest<'_>,
    identity: &Identity,
) -> Result<serde_json::Value, String> {
    let mut out = serde_json::Map::new();
    for (name, value) in &identity.claims {
        out.insert(name.clone(), value.clone());
    }
    for (name, source) in &route.context {
        let value = match source {
            routes::ValueSource::Path(p) => bound.get(p).cloned(),
            routes::ValueSource::Query(q) => query_param(query, q),
            routes::ValueSource::Header(h) => (req.header)(h).map(str::to_string),
        };
        if let Some(v) = value {
            let kind = route
                .context_kinds
                .get(name)
                .copied()
                .unwrap_or(types::Kind::String);
            let typed = kind
                .convert(&v)
                .map_err(|e| format!("context member `{name}`: {e}"))?;
            out.insert(name.clone(), typed);
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// The first value of query parameter `name` (`+` and percent escapes decoded).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            let v = v.replace('+', " ");
            template::decode(&v).unwrap_or(v)
        })
    })
}
