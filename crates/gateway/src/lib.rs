//! Gateway mode's mapping: an HTTP request seen by a proxy
//! (Envoy's ext_authz, nginx `auth_request`, Traefik ForwardAuth, Caddy
//! `forward_auth`) becomes one authorization [`Query`] under the routes file.
//!
//! Owns the routes file ([`routes`]), path templates ([`template`]), the
//! uids a request names ([`uid`]), the caller's identity ([`identity`]),
//! [`map`](mod@map) (a request into a question) and [`check`](mod@check), the
//! one function the adapters call. It must never know an HTTP
//! framework or a wire protocol (the adapters in `partnergate-server` read
//! the proxy's request into a [`GatewayRequest`]), nor decide anything: the
//! query goes through `partnergate_core::authz` like every other decision.

pub mod check;
pub mod identity;
pub mod map;
pub mod proxy;
pub mod routes;
pub mod template;
pub mod types;
pub mod uid;

pub use check::{check, check_forward_auth, Reply, Verdict, Via};
pub use identity::{Identity, IdentityError, Source};
pub use map::{map, GatewayRequest, Mapped, Outcome, Refusal};
pub use proxy::{Door, ProxyKind};
pub use routes::{parse, parse_typed, Route, Routes, ROUTES_FILE};

/// Where the routes file of a policies path is: inside the directory, or
/// beside a single policy file.
pub fn routes_path_for(policies: &std::path::Path) -> std::path::PathBuf {
    if policies.is_file() {
        policies
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."))
            .join(ROUTES_FILE)
    } else {
        policies.join(ROUTES_FILE)
    }
}

/// Read and validate the routes file at `path` against `schema`; `Ok(None)`
/// when there is none (gateway mode off).
pub fn load(
    path: &std::path::Path,
    schema: Option<&cedar_policy::Schema>,
    types: Option<&types::ContextTypes>,
) -> Result<Option<routes::Routes>, Box<partnergate_policy::policies::Problem>> {
    match partnergate_policy::optional_file::read(path)? {
        Some(text) => routes::parse_typed(path, &text, schema, types).map(Some),
        None => Ok(None),
    }
}

/// A reload gate: every pack reload re-reads the routes file (and its key)
/// and validates it against the new pack's schema; a bad file rejects the
/// reload (the last good policies *and* routes keep serving), a good one
/// becomes part of the new pack ([`routes::Routes`] as its extension), so routes
/// and policies change together or not at all.
///
/// `schema_file`, the pack's schema, gives the context members their types
/// (read again at every reload, like the pack's).
pub fn gate(
    path: std::path::PathBuf,
    schema_file: Option<std::path::PathBuf>,
) -> partnergate_core::reload::Gate {
    Box::new(move |pack| {
        let types = schema_file
            .as_deref()
            .and_then(types::ContextTypes::from_file);
        let routes = load(&path, pack.schema.as_ref(), types.as_ref()).map_err(|p| vec![*p])?;
        Ok(routes.map(|r| std::sync::Arc::new(r) as partnergate_policy::policies::Extension))
    })
}
