//! The routes file (`policies/routes.toml`): how an HTTP request becomes a
//! Cedar question. Owns the format, its parsing and its validation against
//! the pack's schema (errors name the file, line, column and field), and
//! the lookup of the route a request takes. Knows no HTTP framework: a
//! request is its method, host, path and a header lookup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cedar_policy::{EntityUid, Schema};
use partnergate_policy::policies::Problem;
use serde::Deserialize;
use toml::Spanned;

use crate::identity::{JwtConfig, JwtVerifier, KeyFormat};
use crate::proxy::{normalize_host, ProxyKind};
use crate::template::Template;
use crate::types::{ContextTypes, Kind};
use crate::uid::{TypedId, UidError, UidTemplate};

/// The file name looked for beside the policies.
pub const ROUTES_FILE: &str = "routes.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    proxy: Option<Spanned<String>>,
    identity: RawIdentity,
    #[serde(default)]
    unmatched: RawUnmatched,
    #[serde(default)]
    response: RawResponse,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    source: Spanned<String>,
    principal_type: Spanned<String>,
    header: Option<String>,
    algorithm: Option<String>,
    key_file: Option<Spanned<String>>,
    jwks_file: Option<Spanned<String>>,
    #[serde(default)]
    issuers: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    claim: Option<String>,
    #[serde(default)]
    copy_claims: Vec<Spanned<String>>,
    #[serde(default)]
    leeway_seconds: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnmatched {
    #[serde(default)]
    public: Vec<Spanned<String>>,
    #[serde(default)]
    host: Vec<RawHostUnmatched>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostUnmatched {
    host: String,
    #[serde(default)]
    public: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    decision_id_header: Option<Spanned<String>>,
    policy_version_header: Option<Spanned<String>>,
    principal_header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    methods: Vec<String>,
    path: Spanned<String>,
    host: Option<String>,
    action: Option<Spanned<String>>,
    resource: Option<Spanned<String>>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    context: BTreeMap<String, Spanned<String>>,
}

/// Where a context member's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A path parameter of the route's template.
    Path(String),
    /// A query parameter (the first one of that name).
    Query(String),
    /// A request header (case-insensitive name).
    Header(String),
}

/// How a request's principal is established.
#[derive(Debug)]
pub enum IdentitySource {
    /// A JWT bearer token, verified here.
    Jwt(Box<JwtVerifier>),
    /// A header a trusted authenticator in front sets (lower-case name).
    Header(String),
}

/// The resource of a route.
#[derive(Debug)]
pub enum RouteResource {
    /// A uid template of the file (`User::"{id}"`), filled from the path.
    Template(UidTemplate),
    /// `Route::"<template>"`, when the route names none (made at load; a
    /// template Cedar cannot quote is refused per request).
    Default(Result<EntityUid, UidError>),
}

/// One route.
#[derive(Debug)]
pub struct Route {
    /// Accepted methods (upper case); empty = any.
    pub methods: Vec<String>,
    /// The path template.
    pub template: Template,
    /// The host it applies to, if only one.
    pub host: Option<String>,
    /// The action (`Action::"<name>"`, checked at load); `None` = the HTTP method.
    pub action: Option<EntityUid>,
    /// The resource a request names.
    pub resource: RouteResource,
    /// Decided and logged, always allowed.
    pub dry_run: bool,
    /// Context members and where each comes from.
    pub context: BTreeMap<String, ValueSource>,
    /// The kind the schema declares for a context member (absent: a string).
    pub context_kinds: BTreeMap<String, Kind>,
}

/// The headers a gateway answer carries (the `[response]` table): on an
/// allowed request they go upstream, on a denied one to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// The decision's id (default `x-partnergate-decision-id`).
    pub decision_id: String,
    /// The deciding pack's version (default `x-partnergate-policy-version`).
    pub policy_version: String,
    /// The principal's id, sent upstream on an allowed request (off unless named).
    pub principal: Option<String>,
}

impl Default for ResponseHeaders {
    fn default() -> Self {
        ResponseHeaders {
            decision_id: "x-partnergate-decision-id".into(),
            policy_version: "x-partnergate-policy-version".into(),
            principal: None,
        }
    }
}

/// A parsed and validated routes file.
#[derive(Debug)]
pub struct Routes {
    /// The file it was read from.
    pub file: PathBuf,
    /// The proxy in front (the top-level `proxy` key): which door serves
    /// and which headers the forward-auth door believes (`None`: only the
    /// Envoy doors serve).
    pub proxy: Option<ProxyKind>,
    /// Principal uids of the file's `principal_type`, from the identity's id.
    pub principal_uid: TypedId,
    /// Action uids of the HTTP method (a route that names no action).
    pub method_action: TypedId,
    /// How the principal is established.
    pub identity: IdentitySource,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Paths allowed without a decision when no route matches.
    pub public: Vec<Template>,
    /// Per host ([`normalize_host`]'s form), the paths allowed without a decision when no
    /// route matches, instead of [`Routes::public`] (empty: deny them all).
    pub host_public: Vec<(String, Vec<Template>)>,
    /// The names of the headers an answer carries.
    pub response: ResponseHeaders,
}

/// A problem at a byte offset of the file.
struct At<'a> {
    file: &'a Path,
    text: &'a str,
}

impl At<'_> {
    fn problem(&self, offset: Option<usize>, message: String) -> Box<Problem> {
        let (line, column) = offset
            .map(|o| partnergate_policy::policies::line_col(self.text, o))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        let location = match (line, column) {
            (Some(l), Some(c)) => format!(":{l}:{c}"),
            _ => String::new(),
        };
        Box::new(Problem {
            file: Some(self.file.to_path_buf()),
            line,
            column,
            policy_id: None,
            rendered: format!("{}{location}: {message}", self.file.display()),
            message,
        })
    }
}

/// Parse and validate routes text. `file` names the source in problems and
/// is where a relative `key_file` is resolved; `schema`, when the pack has
/// one, checks actions and entity types.
pub fn parse(file: &Path, text: &str, schema: Option<&Schema>) -> Result<Routes, Box<Problem>> {
    parse_typed(file, text, schema, None)
}

/// [`parse`], with the context types of the schema's actions (`types`): a
/// context member the route's action does not declare is refused, and each
/// declared `Long` or `Bool` member is converted from the request's text.
pub fn parse_typed(
    file: &Path,
    text: &str,
    schema: Option<&Schema>,
    types: Option<&ContextTypes>,
) -> Result<Routes, Box<Problem>> {
    let at = At { file, text };
    let raw: RawFile = toml::from_str(text)
        .map_err(|e| at.problem(e.span().map(|s| s.start), e.message().trim().to_string()))?;
    let entity_types: Option<Vec<String>> =
        schema.map(|s| s.entity_types().map(ToString::to_string).collect());
    let known_type = |t: &str| {
        entity_types
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|x| x == t))
    };
    let principal_type = raw.identity.principal_type.get_ref().clone();
    if !known_type(&principal_type) {
        return Err(at.problem(
            Some(raw.identity.principal_type.span().start),
            format!(
                "field `principal_type`: `{principal_type}` is not an entity type of the schema"
            ),
        ));
    }
    let proxy = match &raw.proxy {
        None => None,
        Some(p) => Some(ProxyKind::parse(p.get_ref()).ok_or_else(|| {
            at.problem(
                Some(p.span().start),
                format!(
                    "field `proxy`: `{}` is not {}",
                    p.get_ref(),
                    ProxyKind::NAMES
                ),
            )
        })?),
    };
    let copied = raw.identity.copy_claims.clone();
    let identity = identity(&at, raw.identity)?;
    let mut routes = Vec::with_capacity(raw.routes.len());
    for r in raw.routes {
        routes.push(route(&at, r, schema, types, &known_type)?);
    }
    copied_claims_declared(&at, &copied, &routes, types)?;
    let templates = |list: Vec<Spanned<String>>,
                     field: &str|
     -> Result<Vec<Template>, Box<Problem>> {
        list.into_iter()
            .map(|p| {
                Template::parse(p.get_ref())
                    .map_err(|e| at.problem(Some(p.span().start), format!("field `{field}`: {e}")))
            })
            .collect()
    };
    let public = templates(raw.unmatched.public, "unmatched.public")?;
    let mut host_public = Vec::new();
    for h in raw.unmatched.host {
        host_public.push((
            normalize_host(&h.host),
            templates(h.public, "unmatched.host.public")?,
        ));
    }
    let response = response_headers(&at, raw.response)?;
    Ok(Routes {
        file: file.to_path_buf(),
        proxy,
        principal_uid: TypedId::new(&principal_type),
        method_action: TypedId::new("Action"),
        identity,
        routes,
        public,
        host_public,
        response,
    })
}

/// The `[response]` table: header names, lower-cased, each a valid HTTP
/// field name.
fn response_headers(at: &At<'_>, raw: RawResponse) -> Result<ResponseHeaders, Box<Problem>> {
    let name = |field: &str, v: Spanned<String>| -> Result<String, Box<Problem>> {
        let text = v.get_ref().to_ascii_lowercase();
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if text.is_empty() || !text.chars().all(token) {
            return Err(at.problem(
                Some(v.span().start),
                format!(
                    "field `response.{field}`: `{}` is not an HTTP header name",
                    v.get_ref()
                ),
            ));
        }
        Ok(text)
    };
    let mut out = ResponseHeaders::default();
    if let Some(v) = raw.decision_id_header {
        out.decision_id = name("decision_id_header", v)?;
    }
    if let Some(v) = raw.policy_version_header {
        out.policy_version = name("policy_version_header", v)?;
    }
    if let Some(v) = raw.principal_header {
        out.principal = Some(name("principal_header", v)?);
    }
    Ok(out)
}

fn identity(at: &At<'_>, raw: RawIdentity) -> Result<IdentitySource, Box<Problem>> {
    let offset = Some(raw.source.span().start);
    match raw.source.get_ref().as_str() {
        "header" => {
            let header = raw.header.ok_or_else(|| {
                at.problem(
                    offset,
                    "field `identity.header`: required when source = \"header\"".into(),
                )
            })?;
            Ok(IdentitySource::Header(header.to_ascii_lowercase()))
        }
        "jwt" => {
            let (key_file, format, field) = match (raw.key_file, raw.jwks_file) {
                (Some(k), None) => (k, KeyFormat::Pem, "key_file"),
                (None, Some(j)) => (j, KeyFormat::Jwks, "jwks_file"),
                (Some(_), Some(j)) => {
                    return Err(at.problem(
                        Some(j.span().start),
                        "field `identity.jwks_file`: give `key_file` or `jwks_file`, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(at.problem(
                        offset,
                        "field `identity.key_file`: `key_file` or `jwks_file` is required when source = \"jwt\"".into(),
                    ))
                }
            };
            let dir = at.file.parent().unwrap_or_else(|| Path::new("."));
            let path = dir.join(key_file.get_ref());
            let key = std::fs::read(&path).map_err(|e| {
                at.problem(
                    Some(key_file.span().start),
                    format!(
                        "field `identity.{field}`: cannot read {}: {e}",
                        path.display()
                    ),
                )
            })?;
            let config = JwtConfig {
                algorithm: raw.algorithm.unwrap_or_else(|| "RS256".into()),
                key,
                format,
                issuers: raw.issuers,
                audiences: raw.audiences,
                claim: raw.claim.unwrap_or_else(|| "sub".into()),
                copy: raw
                    .copy_claims
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
                leeway: raw.leeway_seconds,
            };
            let verifier = JwtVerifier::new(&config, &path).map_err(|e| {
                at.problem(
                    Some(key_file.span().start),
                    format!("field `identity`: {e}"),
                )
            })?;
            Ok(IdentitySource::Jwt(Box::new(verifier)))
        }
        other => Err(at.problem(
            offset,
            format!("field `identity.source`: `{other}` is not `jwt` or `header`"),
        )),
    }
}

fn route(
    at: &At<'_>,
    r: RawRoute,
    schema: Option<&Schema>,
    types: Option<&ContextTypes>,
    known_type: &dyn Fn(&str) -> bool,
) -> Result<Route, Box<Problem>> {
    let path_at = Some(r.path.span().start);
    let template = Template::parse(r.path.get_ref())
        .map_err(|e| at.problem(path_at, format!("field `path`: {e}")))?;
    let methods: Vec<String> = r.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
    let mut action_uid_checked = None;
    if let Some(action) = &r.action {
        let uid = action_uid(action.get_ref())
            .map_err(|e| at.problem(Some(action.span().start), format!("field `action`: {e}")))?;
        if let Some(s) = schema {
            if !s.actions().any(|a| a == &uid) {
                return Err(at.problem(
                    Some(action.span().start),
                    format!(
                        "field `action`: `{}` is not an action of the schema",
                        action.get_ref()
                    ),
                ));
            }
        }
        action_uid_checked = Some(uid);
    }
    let resource = match &r.resource {
        None => RouteResource::Default(TypedId::new("Route").build(template.as_str())),
        Some(text) => {
            // Checked at load with every path variable bound.
            let offset = Some(text.span().start);
            let t = UidTemplate::new(text.get_ref());
            let uid = t
                .build(&|name| template.binds(name).then_some("x"))
                .map_err(|e| {
                    let why = match e {
                        UidError::Unbound(m) => m,
                        UidError::Parse(m) => format!("not an entity uid: {m}"),
                    };
                    at.problem(offset, format!("field `resource`: {why}"))
                })?;
            let ty = uid.type_name().to_string();
            if !known_type(&ty) {
                return Err(at.problem(
                    offset,
                    format!("field `resource`: `{ty}` is not an entity type of the schema"),
                ));
            }
            RouteResource::Template(t)
        }
    };
    let declared = match (types, &r.action) {
        (Some(t), Some(a)) => t.of(a.get_ref()).flatten(),
        _ => None,
    };
    let (context, context_kinds) =
        context_members(at, r.context, &template, declared, r.action.as_ref())?;
    Ok(Route {
        methods,
        template,
        host: r.host.as_deref().map(normalize_host),
        action: action_uid_checked,
        resource,
        dry_run: r.dry_run,
        context,
        context_kinds,
    })
}

/// Each claim `copy_claims` names goes into the context of every routed
/// request: a claim the context of a route's action does not declare would
/// have every request of that route denied by the schema, so it is refused
/// here (routes that name no action, or whose action's context is not
/// readable, are left to Cedar's validation).
fn copied_claims_declared(
    at: &At<'_>,
    copied: &[Spanned<String>],
    routes: &[Route],
    types: Option<&ContextTypes>,
) -> Result<(), Box<Problem>> {
    let Some(types) = types else {
        return Ok(());
    };
    for claim in copied {
        for r in routes {
            let Some(action) = &r.action else { continue };
            let name = action.id().unescaped();
            let Some(Some(declared)) = types.of(name) else {
                continue;
            };
            if !declared.contains_key(claim.get_ref()) {
                return Err(at.problem(
                    Some(claim.span().start),
                    format!(
                        "field `identity.copy_claims`: claim `{}` is copied into every request's \
                         context, but the context of action `{name}` (route `{}`) has no \
                         attribute `{}`, so the schema would deny every request of that route",
                        claim.get_ref(),
                        r.template.as_str(),
                        claim.get_ref()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A route's context members: where each comes from, and the kind the
/// action's context declares for it (`declared`, when the schema says).
#[allow(clippy::type_complexity)]
fn context_members(
    at: &At<'_>,
    raw: BTreeMap<String, Spanned<String>>,
    template: &Template,
    declared: Option<&BTreeMap<String, Kind>>,
    action: Option<&Spanned<String>>,
) -> Result<(BTreeMap<String, ValueSource>, BTreeMap<String, Kind>), Box<Problem>> {
    let mut context = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    for (name, source) in raw {
        let offset = Some(source.span().start);
        let parsed = value_source(source.get_ref())
            .map_err(|e| at.problem(offset, format!("field `context.{name}`: {e}")))?;
        if let ValueSource::Path(p) = &parsed {
            if !template.binds(p) {
                return Err(at.problem(
                    offset,
                    format!("field `context.{name}`: the path template has no parameter `{p}`"),
                ));
            }
        }
        if let (Some(d), Some(a)) = (declared, action) {
            let Some(kind) = d.get(&name) else {
                return Err(at.problem(
                    offset,
                    format!(
                        "field `context.{name}`: the context of action `{}` has no attribute `{name}`",
                        a.get_ref()
                    ),
                ));
            };
            kinds.insert(name.clone(), *kind);
        }
        context.insert(name, parsed);
    }
    Ok((context, kinds))
}

fn value_source(text: &str) -> Result<ValueSource, String> {
    match text.split_once(':') {
        Some(("path", n)) if !n.is_empty() => Ok(ValueSource::Path(n.to_string())),
        Some(("query", n)) if !n.is_empty() => Ok(ValueSource::Query(n.to_string())),
        Some(("header", n)) if !n.is_empty() => Ok(ValueSource::Header(n.to_ascii_lowercase())),
        _ => Err(format!(
            "`{text}` is not `path:<name>`, `query:<name>` or `header:<name>`"
        )),
    }
}

/// The uid of action `name` (`Action::"<name>"`).
pub fn action_uid(name: &str) -> Result<EntityUid, String> {
    TypedId::new("Action")
        .build(name)
        .map_err(|e| e.reason(None))
}
