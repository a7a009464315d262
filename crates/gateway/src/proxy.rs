//! Which proxy stands in front of the upstream (the routes file's top-level
//! `proxy` key), which front door serves it, and where each door reads the
//! original request: nginx's `auth_request` sends `X-Original-*`, Traefik's
//! ForwardAuth and Caddy's `forward_auth` send `X-Forwarded-*`, Envoy sends
//! the request in its own protocol. Also owns the one normal form of a host
//! every comparison uses.
//!
//! It must never know an HTTP framework (a request is a header lookup) nor
//! decide anything: it only says which headers to believe and refuses a
//! request that carries the set it must not believe.

/// The proxy in front, as the routes file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// nginx `auth_request` on `/v1/gateway/check`: `X-Original-*`.
    Nginx,
    /// Caddy `forward_auth` on `/v1/gateway/check`: `X-Forwarded-*`.
    Caddy,
    /// Traefik ForwardAuth on `/v1/gateway/check`: `X-Forwarded-*`.
    Traefik,
    /// Envoy ext_authz, over gRPC or HTTP (`/v1/gateway/envoy/...`).
    Envoy,
}

/// The doors a check comes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// Envoy's gRPC `Authorization/Check`.
    EnvoyGrpc,
    /// Envoy's HTTP ext_authz (`/v1/gateway/envoy/<original path>`).
    EnvoyHttp,
    /// The forward-auth endpoint of nginx, Caddy and Traefik (`/v1/gateway/check`).
    ForwardAuth,
}

impl Door {
    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::EnvoyGrpc => "Envoy gRPC ext_authz",
            Door::EnvoyHttp => "Envoy HTTP ext_authz (/v1/gateway/envoy)",
            Door::ForwardAuth => "forward auth (/v1/gateway/check)",
        }
    }
}

/// The headers that carry the original request on the forward-auth door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSet {
    /// The original method.
    pub method: &'static str,
    /// The original path and query.
    pub uri: &'static str,
    /// The original host.
    pub host: &'static str,
}

impl HeaderSet {
    /// The three names.
    pub fn names(&self) -> [&'static str; 3] {
        [self.method, self.uri, self.host]
    }
}

/// nginx's set (`proxy_set_header X-Original-URI $request_uri`, ...).
pub const ORIGINAL: HeaderSet = HeaderSet {
    method: "x-original-method",
    uri: "x-original-uri",
    host: "x-original-host",
};

/// Traefik's and Caddy's set.
pub const FORWARDED: HeaderSet = HeaderSet {
    method: "x-forwarded-method",
    uri: "x-forwarded-uri",
    host: "x-forwarded-host",
};

impl ProxyKind {
    /// Every accepted value of the `proxy` key.
    pub const NAMES: &'static str = "`nginx`, `caddy`, `traefik` or `envoy`";

    /// The kind named `text` (exactly as written, lower case).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "nginx" => Some(ProxyKind::Nginx),
            "caddy" => Some(ProxyKind::Caddy),
            "traefik" => Some(ProxyKind::Traefik),
            "envoy" => Some(ProxyKind::Envoy),
            _ => None,
        }
    }

    /// The name in the routes file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx",
            ProxyKind::Caddy => "caddy",
            ProxyKind::Traefik => "traefik",
            ProxyKind::Envoy => "envoy",
        }
    }

    /// Whether this proxy asks through `door`.
    pub fn serves(self, door: Door) -> bool {
        match self {
            ProxyKind::Envoy => matches!(door, Door::EnvoyGrpc | Door::EnvoyHttp),
            _ => door == Door::ForwardAuth,
        }
    }

    /// On the forward-auth door: the set this proxy sends, and the set it
    /// never sends (so a copy of it is the client's own). `None` for Envoy.
    pub fn forward_auth_sets(self) -> Option<(HeaderSet, HeaderSet)> {
        match self {
            ProxyKind::Nginx => Some((ORIGINAL, FORWARDED)),
            ProxyKind::Caddy | ProxyKind::Traefik => Some((FORWARDED, ORIGINAL)),
            ProxyKind::Envoy => None,
        }
    }
}

/// Whether a door may serve under `configured` (the routes file's `proxy`):
/// without the key only the Envoy doors serve (they read the request from
/// Envoy's own protocol, no header set to choose), never forward auth.
pub fn door_open(configured: Option<ProxyKind>, door: Door) -> Result<(), String> {
    match configured {
        Some(kind) if kind.serves(door) => Ok(()),
        Some(kind) => Err(format!(
            "the routes file names proxy = \"{}\", which does not ask through the {} door",
            kind.as_str(),
            door.as_str()
        )),
        None if door == Door::ForwardAuth => Err(
            "the routes file names no `proxy`: the forward-auth door does not know whether \
             X-Original-* (nginx) or X-Forwarded-* (caddy, traefik) carry the request; \
             add `proxy = \"nginx\"`, `\"caddy\"` or `\"traefik\"` at the top of routes.toml"
                .into(),
        ),
        None => Ok(()),
    }
}

/// A host in the one form every comparison uses: without surrounding space,
/// port or trailing dots, in lower case (`Admin.Portal.Example.:443` is
/// `admin.portal.example`; `[::1]:8080` is `[::1]`).
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_compare_without_case_port_or_trailing_dot() {
        for (given, want) in [
            ("admin.portal.example", "admin.portal.example"),
            ("admin.portal.example.", "admin.portal.example"),
            ("Admin.Portal.Example..", "admin.portal.example"),
            ("admin.portal.example.:8443", "admin.portal.example"),
            ("ADMIN.portal.example:80", "admin.portal.example"),
            (" admin.portal.example ", "admin.portal.example"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("::1", "::1"),
        ] {
            assert_eq!(normalize_host(given), want, "{given}");
        }
    }

    #[test]
    fn each_kind_opens_only_its_doors() {
        use Door::*;
        assert!(door_open(None, EnvoyGrpc).is_ok());
        assert!(door_open(None, EnvoyHttp).is_ok());
        assert!(door_open(None, ForwardAuth).is_err());
        for kind in [ProxyKind::Nginx, ProxyKind::Caddy, ProxyKind::Traefik] {
            assert!(door_open(Some(kind), ForwardAuth).is_ok());
            assert!(door_open(Some(kind), EnvoyGrpc).is_err());
            assert!(door_open(Some(kind), EnvoyHttp).is_err());
        }
        assert!(door_open(Some(ProxyKind::Envoy), ForwardAuth).is_err());
        assert!(door_open(Some(ProxyKind::Envoy), EnvoyGrpc).is_ok());
    }
}
