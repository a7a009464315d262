//! The routes file and the identity checks of gateway mode, on the shipped
//! schema: every template form, every validation error, every JWT failure.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use partnergate_gateway::{map, parse, GatewayRequest, IdentityError, Outcome, Refusal, Routes};
use serde_json::json;

fn schema() -> cedar_policy::Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/partnergate.cedarschema");
    partnergate_policy::policies::load_schema(&path).expect("the shipped schema loads")
}

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

const HS_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

/// A routes file in a fresh directory (keys copied beside it).
fn routes_with(identity: &str, routes: &str) -> Result<Routes, String> {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "rsa-public.pem",
        "ec-public.pem",
        "ed-public.pem",
        "rsa.jwks.json",
    ] {
        std::fs::copy(keys().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("hs.secret"), HS_SECRET).unwrap();
    let file = dir.path().join("routes.toml");
    let text = format!("{identity}\n{routes}");
    std::fs::write(&file, &text).unwrap();
    parse(&file, &text, Some(&schema())).map_err(|p| p.to_string())
}

const HEADER_ID: &str =
    "[identity]\nsource = \"header\"\nheader = \"X-User\"\nprincipal_type = \"User\"\n";

const ROUTES: &str = r#"
[unmatched]
public = ["/healthz", "/static/{*path}"]

[[route]]
methods = ["POST"]
path = "/api/users/{id}/dismiss"
action = "dismiss_user"
resource = 'User::"{id}"'
context = { reason = "query:reason", tenant = "header:x-tenant" }

[[route]]
methods = ["GET"]
path = "/api/accounts/{account}/employees"
host = "portal.example"
action = "view_employees"
resource = 'Account::"{account}"'

[[route]]
path = "/api/reports/{*rest}"
dry_run = true
"#;

fn req<'a>(
    method: &'a str,
    host: Option<&'a str>,
    uri: &'a str,
    headers: &'a [(&'a str, &'a str)],
) -> (&'a str, Option<&'a str>, &'a str, &'a [(&'a str, &'a str)]) {
    (method, host, uri, headers)
}

fn run(
    routes: &Routes,
    r: (&str, Option<&str>, &str, &[(&str, &str)]),
) -> Result<Outcome, Refusal> {
    let (method, host, uri, headers) = r;
    let lookup = move |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    map(
        routes,
        &GatewayRequest {
            method,
            host,
            uri,
            header: &lookup,
        },
    )
}

fn decided(o: Result<Outcome, Refusal>) -> partnergate_gateway::Mapped {
    match o {
        Ok(Outcome::Decide(m)) => *m,
        other => panic!("expected a decision, got {other:?}"),
    }
}

#[test]
fn a_route_builds_the_action_resource_and_context_from_the_request() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    let m = decided(run(
        &routes,
        req(
            "post",
            None,
            "/api/users/emma/dismiss?reason=left+the%20team",
            &[("x-user", "pat"), ("X-Tenant", "acme")],
        ),
    ));
    assert_eq!(m.query.principal.to_string(), r#"User::"pat""#);
    assert_eq!(m.query.action.to_string(), r#"Action::"dismiss_user""#);
    assert_eq!(m.query.resource.to_string(), r#"User::"emma""#);
    assert_eq!(
        m.query.context,
        Some(json!({"reason": "left the team", "tenant": "acme"}))
    );
    assert_eq!(m.route, "/api/users/{id}/dismiss");
    assert!(!m.dry_run);
    assert_eq!(m.source.as_str(), "header");
}

#[test]
fn a_path_parameter_cannot_change_the_resource_uid() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    let m = decided(run(
        &routes,
        req(
            "POST",
            None,
            "/api/users/x%22%3A%3AAccount/dismiss",
            &[("x-user", "pat")],
        ),
    ));
    assert_eq!(m.query.resource.type_name().to_string(), "User");
    assert_eq!(m.query.resource.id().unescaped(), r#"x"::Account"#);
}

#[test]
fn method_host_and_path_must_all_match() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    let h = &[("x-user", "pat")];
    assert!(matches!(
        run(&routes, req("GET", None, "/api/users/emma/dismiss", h)),
        Err(Refusal::NoRoute { .. })
    ));
    assert!(matches!(
        run(
            &routes,
            req(
                "GET",
                Some("other.example"),
                "/api/accounts/acme/employees",
                h
            )
        ),
        Err(Refusal::NoRoute { .. })
    ));
    let m = decided(run(
        &routes,
        req(
            "GET",
            Some("Portal.Example"),
            "/api/accounts/acme/employees",
            h,
        ),
    ));
    assert_eq!(m.query.resource.to_string(), r#"Account::"acme""#);
}

#[test]
fn without_action_and_resource_the_authzen_gateway_default_applies() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    let m = decided(run(
        &routes,
        req("DELETE", None, "/api/reports/2026/q4", &[("x-user", "pat")]),
    ));
    assert_eq!(m.query.action.to_string(), r#"Action::"DELETE""#);
    assert_eq!(
        m.query.resource.to_string(),
        r#"Route::"/api/reports/{*rest}""#
    );
    assert!(m.dry_run);
}

#[test]
fn public_paths_are_allowed_only_when_no_route_matches_and_others_are_refused() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    assert!(
        matches!(run(&routes, req("GET", None, "/healthz", &[])), Ok(Outcome::Public(p)) if p == "/healthz")
    );
    assert!(matches!(
        run(&routes, req("GET", None, "/static/a/b.css", &[])),
        Ok(Outcome::Public(_))
    ));
    assert!(matches!(
        run(&routes, req("GET", None, "/admin", &[])),
        Err(Refusal::NoRoute { .. })
    ));
}

#[test]
fn unmatched_paths_can_be_public_per_host() {
    let per_host = ROUTES.replace(
        "[unmatched]\npublic = [\"/healthz\", \"/static/{*path}\"]\n",
        "[unmatched]\npublic = [\"/healthz\", \"/static/{*path}\"]\n\
         [[unmatched.host]]\nhost = \"Admin.Portal.Example\"\npublic = []\n\
         [[unmatched.host]]\nhost = \"docs.portal.example\"\npublic = [\"/{*page}\"]\n",
    );
    assert_ne!(per_host, ROUTES);
    let routes = routes_with(HEADER_ID, &per_host).unwrap();
    // The admin host lists nothing: even /healthz is denied there.
    assert!(matches!(
        run(
            &routes,
            req("GET", Some("admin.portal.example"), "/healthz", &[])
        ),
        Err(Refusal::NoRoute { .. })
    ));
    // The docs host is public everywhere no route matches.
    assert!(matches!(
        run(&routes, req("GET", Some("docs.portal.example"), "/guide/intro", &[])),
        Ok(Outcome::Public(p)) if p == "/{*page}"
    ));
    // Other hosts keep the global list.
    assert!(matches!(
        run(&routes, req("GET", Some("portal.example"), "/healthz", &[])),
        Ok(Outcome::Public(_))
    ));
    assert!(matches!(
        run(
            &routes,
            req("GET", Some("portal.example"), "/guide/intro", &[])
        ),
        Err(Refusal::NoRoute { .. })
    ));
}

#[test]
fn a_missing_trusted_header_is_no_identity() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    let r = run(&routes, req("POST", None, "/api/users/emma/dismiss", &[]));
    assert!(
        matches!(r, Err(Refusal::Identity(IdentityError::Missing(_)))),
        "{r:?}"
    );
}

fn problem(routes: &str) -> String {
    routes_with(HEADER_ID, routes).expect_err("the file is refused")
}

#[test]
fn validation_errors_name_the_line_column_and_field() {
    let e = problem("[[route]]\npath = \"/a\"\naction = \"fly\"\n");
    assert!(
        e.contains("routes.toml:8:10")
            && e.contains("field `action`")
            && e.contains("`fly` is not an action"),
        "{e}"
    );
    let e = problem("[[route]]\npath = \"/a/{id}\"\nresource = 'Robot::\"{id}\"'\n");
    assert!(
        e.contains(":8:12") && e.contains("`Robot` is not an entity type"),
        "{e}"
    );
    let e = problem("[[route]]\npath = \"/a\"\nresource = 'User::\"{id}\"'\n");
    assert!(e.contains("`{id}` is not a parameter of the path"), "{e}");
    let e = problem("[[route]]\npath = \"a/{*r}/b\"\n");
    assert!(e.contains(":7:8") && e.contains("field `path`"), "{e}");
    let e = problem("[[route]]\npath = \"/a\"\ncontext = { x = \"cookie:y\" }\n");
    assert!(e.contains("field `context.x`"), "{e}");
    let e = problem("[[route]]\npath = \"/a\"\nverb = \"GET\"\n");
    assert!(
        e.contains(":8:1") && e.contains("unknown field `verb`"),
        "{e}"
    );
    let e = routes_with(
        "[identity]\nsource = \"header\"\nprincipal_type = \"User\"\n",
        "",
    )
    .unwrap_err();
    assert!(e.contains("identity.header"), "{e}");
    let e = routes_with(
        "[identity]\nsource = \"header\"\nheader = \"x\"\nprincipal_type = \"Robot\"\n",
        "",
    )
    .unwrap_err();
    assert!(e.contains("principal_type") && e.contains(":4:18"), "{e}");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt_identity(alg: &str, key_file: &str) -> String {
    format!(
        "[identity]\nsource = \"jwt\"\nprincipal_type = \"User\"\nalgorithm = \"{alg}\"\nkey_file = \"{key_file}\"\n\
         issuers = [\"https://id.example\"]\naudiences = [\"portal\"]\ncopy_claims = [\"email\"]\n"
    )
}

fn sign(alg: Algorithm, claims: &serde_json::Value) -> String {
    let key = |f: &str| std::fs::read(keys().join(f)).unwrap();
    let k = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(HS_SECRET.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&key("ec-private.pem")).unwrap(),
        _ => EncodingKey::from_ed_pem(&key("ed-private.pem")).unwrap(),
    };
    encode(&Header::new(alg), claims, &k).unwrap()
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "pat", "iss": "https://id.example", "aud": "portal", "exp": now() + 600, "email": "pat@partner.example"})
}

fn with_token(routes: &Routes, token: &str) -> Result<Outcome, Refusal> {
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];
    run(
        routes,
        req("POST", None, "/api/users/emma/dismiss", &headers),
    )
}

fn bad_token(routes: &Routes, token: &str) -> String {
    match with_token(routes, token) {
        Err(Refusal::Identity(IdentityError::BadToken(reason))) => reason,
        other => panic!("expected a bad token, got {other:?}"),
    }
}

#[test]
fn a_valid_token_of_each_algorithm_names_the_principal_and_copies_claims() {
    for (alg, file) in [
        (Algorithm::RS256, "rsa-public.pem"),
        (Algorithm::ES256, "ec-public.pem"),
        (Algorithm::EdDSA, "ed-public.pem"),
        (Algorithm::HS256, "hs.secret"),
    ] {
        let name = format!("{alg:?}");
        let routes = routes_with(&jwt_identity(&name, file), ROUTES).unwrap();
        let m = decided(with_token(&routes, &sign(alg, &good_claims())));
        assert_eq!(m.query.principal.to_string(), r#"User::"pat""#, "{name}");
        assert_eq!(
            m.query.context.as_ref().unwrap()["email"],
            json!("pat@partner.example")
        );
        assert_eq!(m.source.as_str(), "jwt");
    }
}

#[test]
fn a_jwks_file_picks_the_key_by_kid() {
    let identity = jwt_identity("RS256", "rsa-public.pem").replace(
        "key_file = \"rsa-public.pem\"",
        "jwks_file = \"rsa.jwks.json\"",
    );
    let routes = routes_with(&identity, ROUTES).unwrap();
    let key = std::fs::read(keys().join("rsa-private.pem")).unwrap();
    let sign_kid = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        encode(
            &header,
            &good_claims(),
            &EncodingKey::from_rsa_pem(&key).unwrap(),
        )
        .unwrap()
    };
    let m = decided(with_token(&routes, &sign_kid(Some("portal-2026"))));
    assert_eq!(m.query.principal.to_string(), r#"User::"pat""#);
    // One key in the set: a token without `kid` uses it.
    decided(with_token(&routes, &sign_kid(None)));
    assert!(bad_token(&routes, &sign_kid(Some("other"))).contains("no key `other`"));
    // The set's key is RS256: an ES256 token is refused, whatever its kid.
    let mut es = Header::new(Algorithm::ES256);
    es.kid = Some("portal-2026".into());
    let ec = std::fs::read(keys().join("ec-private.pem")).unwrap();
    let t = encode(&es, &good_claims(), &EncodingKey::from_ec_pem(&ec).unwrap()).unwrap();
    assert!(bad_token(&routes, &t).contains("InvalidAlgorithm"));
    // key_file and jwks_file together, or a set without a key for the algorithm.
    let both = format!(
        "{}jwks_file = \"rsa.jwks.json\"\n",
        jwt_identity("RS256", "rsa-public.pem")
    );
    assert!(routes_with(&both, ROUTES)
        .unwrap_err()
        .contains("give `key_file` or `jwks_file`, not both"));
    let es_set = identity.replace("\"RS256\"", "\"ES256\"");
    assert!(routes_with(&es_set, ROUTES)
        .unwrap_err()
        .contains("no signing key for ES256 in the key set"));
}

#[test]
fn every_bad_token_is_refused_with_its_reason() {
    let routes = routes_with(&jwt_identity("RS256", "rsa-public.pem"), ROUTES).unwrap();
    let mut c = good_claims();
    c["exp"] = json!(now() - 120);
    assert!(bad_token(&routes, &sign(Algorithm::RS256, &c)).contains("ExpiredSignature"));
    let mut c = good_claims();
    c["nbf"] = json!(now() + 600);
    assert!(bad_token(&routes, &sign(Algorithm::RS256, &c)).contains("ImmatureSignature"));
    let mut c = good_claims();
    c["iss"] = json!("https://evil.example");
    assert!(bad_token(&routes, &sign(Algorithm::RS256, &c)).contains("InvalidIssuer"));
    let mut c = good_claims();
    c["aud"] = json!("other");
    assert!(bad_token(&routes, &sign(Algorithm::RS256, &c)).contains("InvalidAudience"));
    let mut c = good_claims();
    c.as_object_mut().unwrap().remove("exp");
    assert!(bad_token(&routes, &sign(Algorithm::RS256, &c)).contains("exp"));
    let mut c = good_claims();
    c.as_object_mut().unwrap().remove("sub");
    assert!(bad_token(&routes, &sign(Algorithm::RS256, &c)).contains("claim `sub`"));
    // A signature by another key: the ES256 key signs, the RS256 key checks.
    let other = sign(Algorithm::ES256, &good_claims());
    assert!(bad_token(&routes, &other).contains("InvalidAlgorithm"));
    // A tampered payload keeps the header and signature.
    let good = sign(Algorithm::RS256, &good_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = {
        let mut c = good_claims();
        c["sub"] = json!("owner");
        jsonwebtoken_b64(&c)
    };
    let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    assert!(bad_token(&routes, &forged).contains("InvalidSignature"));
    // alg: none, no signature.
    let none = format!(
        "{}.{}.",
        jsonwebtoken_b64(&json!({"alg": "none", "typ": "JWT"})),
        jsonwebtoken_b64(&good_claims())
    );
    bad_token(&routes, &none);
    // Algorithm confusion: HS256 signed with the RSA public key's bytes.
    let public = std::fs::read(keys().join("rsa-public.pem")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert!(bad_token(&routes, &confused).contains("InvalidAlgorithm"));
    // Not a bearer token at all.
    let r = run(
        &routes,
        req(
            "POST",
            None,
            "/api/users/emma/dismiss",
            &[("authorization", "Basic cGF0Og==")],
        ),
    );
    assert!(
        matches!(r, Err(Refusal::Identity(IdentityError::Missing(_)))),
        "{r:?}"
    );
    let r = run(&routes, req("POST", None, "/api/users/emma/dismiss", &[]));
    assert!(
        matches!(r, Err(Refusal::Identity(IdentityError::Missing(_)))),
        "{r:?}"
    );
}

#[test]
fn bad_key_configuration_is_refused_at_load() {
    let e = routes_with(&jwt_identity("HS512", "hs.secret"), "").unwrap_err();
    assert!(e.contains("`HS512` is not accepted"), "{e}");
    let e = routes_with(&jwt_identity("RS256", "ec-public.pem"), "").unwrap_err();
    assert!(e.contains("not a RS256 key"), "{e}");
    let e = routes_with(&jwt_identity("RS256", "missing.pem"), "").unwrap_err();
    assert!(
        e.contains("cannot read") && e.contains("missing.pem"),
        "{e}"
    );
}

/// Base64url without padding, as in a JWT.
fn jsonwebtoken_b64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn the_gate_makes_the_routes_part_of_the_pack_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("p.cedar"),
        "permit(principal, action, resource);",
    )
    .unwrap();
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/partnergate.cedarschema");
    let source = partnergate_policy::policies::PackSource::new(&policies, Some(schema));
    let pack = partnergate_policy::policies::load(&source).unwrap();
    let path = partnergate_gateway::routes_path_for(&policies);
    let gate = partnergate_gateway::gate(path.clone(), None);
    assert!(
        gate(&pack).unwrap().is_none(),
        "no routes file: gateway off"
    );
    std::fs::write(&path, format!("{HEADER_ID}{ROUTES}")).unwrap();
    let ext = gate(&pack)
        .unwrap()
        .expect("the routes as the pack's extension");
    let routes = ext.downcast::<Routes>().expect("a Routes value");
    assert_eq!(routes.routes.len(), 3);
    std::fs::write(
        &path,
        format!("{HEADER_ID}[[route]]\npath = \"/a\"\naction = \"fly\"\n"),
    )
    .unwrap();
    let problems = gate(&pack).unwrap_err();
    assert!(
        problems[0].to_string().contains("`fly` is not an action"),
        "{problems:?}"
    );
}

#[test]
fn the_shipped_routes_file_is_valid_on_the_shipped_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/routes.toml");
    let routes = partnergate_gateway::load(&path, Some(&schema()), None)
        .unwrap_or_else(|p| panic!("{p}"))
        .expect("policies/routes.toml is shipped");
    assert!(routes.routes.len() >= 5);
}

#[test]
fn an_unknown_field_names_the_accepted_ones() {
    let e = problem("[[route]]\npath = \"/a\"\nverb = \"GET\"\n");
    assert!(e.contains("expected one of `methods`, `path`"), "{e}");
}

const TYPED_SCHEMA: &str = r#"
entity User;
entity Report;
type Window = { days: Long };
action export appliesTo { principal: User, resource: Report, context: { limit: Long, draft: Bool, format: String } };
action archive appliesTo { principal: User, resource: Report, context: Window };
"#;

/// `routes` over [`TYPED_SCHEMA`], with the context types read from its file.
fn typed_routes(routes: &str) -> Result<Routes, String> {
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("typed.cedarschema");
    std::fs::write(&schema_file, TYPED_SCHEMA).unwrap();
    let (fragment, _) = cedar_policy::SchemaFragment::from_cedarschema_str(TYPED_SCHEMA).unwrap();
    let schema = cedar_policy::Schema::from_schema_fragments([fragment]).unwrap();
    let types = partnergate_gateway::types::ContextTypes::from_file(&schema_file).unwrap();
    let file = dir.path().join("routes.toml");
    let text = format!("{HEADER_ID}\n{routes}");
    partnergate_gateway::parse_typed(&file, &text, Some(&schema), Some(&types))
        .map_err(|p| p.to_string())
}

#[test]
fn context_members_get_the_types_the_schema_declares() {
    let routes = typed_routes(
        r#"
[[route]]
path = "/reports/{id}/export"
action = "export"
resource = 'Report::"{id}"'
context = { limit = "query:limit", draft = "query:draft", format = "header:x-format" }

[[route]]
path = "/reports/{id}/archive/{days}"
action = "archive"
resource = 'Report::"{id}"'
context = { days = "path:days" }
"#,
    )
    .unwrap();
    let headers = [("x-user", "pat"), ("x-format", "csv")];
    let m = decided(run(
        &routes,
        req(
            "GET",
            None,
            "/reports/r1/export?limit=10&draft=true",
            &headers,
        ),
    ));
    assert_eq!(
        m.query.context,
        Some(json!({"limit": 10, "draft": true, "format": "csv"}))
    );
    // Through a common type too.
    let m = decided(run(
        &routes,
        req("POST", None, "/reports/r1/archive/30", &headers),
    ));
    assert_eq!(m.query.context, Some(json!({"days": 30})));
    // A value that is not of the declared type: no question, a refusal.
    for (uri, why) in [
        (
            "/reports/r1/export?limit=ten&draft=true",
            "`ten` is not a Long",
        ),
        (
            "/reports/r1/export?limit=1&draft=yes",
            "`yes` is not a Bool",
        ),
    ] {
        match run(&routes, req("GET", None, uri, &headers)) {
            Err(Refusal::BadRequest { reason, .. }) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{uri}: expected a refusal, got {other:?}"),
        }
    }
    // A member the action's context does not declare is refused at load.
    let err = typed_routes(
        r#"
[[route]]
path = "/reports/{id}/export"
action = "export"
resource = 'Report::"{id}"'
context = { lmit = "query:limit" }
"#,
    )
    .unwrap_err();
    assert!(
        err.contains(
            "field `context.lmit`: the context of action `export` has no attribute `lmit`"
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Requests shaped by an attacker.

/// Every way to write a dot segment, an encoded slash or a backslash, at
/// every place of a public path: never public, never a decision.
#[test]
fn dot_segments_and_their_encodings_are_refused_never_public() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    let h = &[("x-user", "pat")];
    for uri in [
        "/static/../api/users/owner/dismiss",
        "/static/./../api/users/owner/dismiss",
        "/static/%2e%2e/api/users/owner/dismiss",
        "/static/%2E%2e/api/users/owner/dismiss",
        "/static/.%2E/api/users/owner/dismiss",
        "/static/%2e./api/users/owner/dismiss",
        "/static/..;/api/users/owner/dismiss",
        "/static/..%3b/api/users/owner/dismiss",
        "/static/x%2f..%2f..%2fapi/users/owner/dismiss",
        "/static/x%2F..%2Fapi",
        "/static/..\\api\\users\\owner\\dismiss",
        "/static/..%5capi%5cusers",
        "/static/%252e%252e/api/users/owner/dismiss",
        "/static/.",
        "/static/..",
        "/healthz/..",
        "/static/a/../../api/users/owner/dismiss?x=1",
        "/api/users/../users/owner/dismiss",
        "/api/users/emma/../owner/dismiss",
        "/api/users/%2e%2e/dismiss",
    ] {
        let r = run(&routes, req("POST", None, uri, h));
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("segment")),
            "{uri}: {r:?}"
        );
    }
    // What is not a dot segment still passes as before.
    for uri in [
        "/static/a..b/c.css",
        "/static/.well-known",
        "/static/a.b/..c",
    ] {
        assert!(
            matches!(
                run(&routes, req("GET", None, uri, h)),
                Ok(Outcome::Public(_))
            ),
            "{uri}"
        );
    }
}

/// A percent escape that does not decode to UTF-8 (an overlong `.` such as
/// `%c0%ae`, which some servers still read as a dot, a lone byte, or a
/// malformed escape) is refused: what it means is the upstream's guess.
#[test]
fn escapes_that_are_not_utf8_or_malformed_are_refused_never_public() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    let h = &[("x-user", "pat")];
    for uri in [
        "/static/%c0%ae%c0%ae/api/users/owner/dismiss",
        "/static/%C0%AE%C0%AE/api/users/owner/dismiss",
        "/static/%e0%80%ae%e0%80%ae/api/users/owner/dismiss",
        "/static/%c0%af..%c0%afapi",
        "/static/%ff/x",
        "/static/%zz/x",
        "/static/%2/x",
        "/static/x%",
    ] {
        let r = run(&routes, req("GET", None, uri, h));
        assert!(
            matches!(&r, Err(Refusal::BadPath { reason, .. }) if reason.contains("escape")),
            "{uri}: {r:?}"
        );
    }
    // Escapes of valid UTF-8 still pass.
    for uri in ["/static/caf%c3%a9.css", "/static/a%20b.css"] {
        assert!(
            matches!(
                run(&routes, req("GET", None, uri, h)),
                Ok(Outcome::Public(_))
            ),
            "{uri}"
        );
    }
}

/// `X-Original-URL` and `X-Rewrite-URL` make some upstreams (IIS URL Rewrite,
/// frameworks that trust them) route by the header instead of the path the
/// check saw: a request that carries either is refused, whatever its path.
#[test]
fn a_path_override_header_is_refused_never_public() {
    let routes = routes_with(HEADER_ID, ROUTES).unwrap();
    for name in ["X-Original-URL", "x-rewrite-url", "X-ORIGINAL-URL"] {
        let h = &[("x-user", "pat"), (name, "/api/users/owner/dismiss")];
        let r = run(&routes, req("GET", None, "/static/app.css", h));
        assert!(
            matches!(&r, Err(Refusal::BadPath { reason, .. }) if reason.to_ascii_lowercase().contains(&name.to_ascii_lowercase())),
            "{name}: {r:?}"
        );
    }
}

/// A host is compared without case, port or trailing dot: `admin.portal.example.`
/// keeps the admin host's list, and a route's host matches whatever form.
#[test]
fn hosts_compare_without_case_port_or_trailing_dot() {
    let per_host = ROUTES.replace(
        "[unmatched]\npublic = [\"/healthz\", \"/static/{*path}\"]\n",
        "[unmatched]\npublic = [\"/healthz\", \"/static/{*path}\"]\n\
         [[unmatched.host]]\nhost = \"Admin.Portal.Example.\"\npublic = []\n",
    );
    let routes = routes_with(HEADER_ID, &per_host).unwrap();
    for host in [
        "admin.portal.example",
        "admin.portal.example.",
        "ADMIN.portal.example..",
        "admin.portal.example.:443",
        "Admin.Portal.Example:8080",
    ] {
        let r = run(&routes, req("GET", Some(host), "/healthz", &[]));
        assert!(matches!(r, Err(Refusal::NoRoute { .. })), "{host}: {r:?}");
    }
    let h = &[("x-user", "pat")];
    for host in [
        "portal.example.",
        "PORTAL.example:443",
        "portal.example.:80",
    ] {
        let m = decided(run(
            &routes,
            req("GET", Some(host), "/api/accounts/acme/employees", h),
        ));
        assert_eq!(m.query.resource.to_string(), r#"Account::"acme""#, "{host}");
    }
}

/// Configured `issuers` / `audiences` require the claim: a token without
/// `iss` or without `aud` is refused, whatever else it carries.
#[test]
fn a_configured_issuer_or_audience_requires_the_claim() {
    let routes = routes_with(&jwt_identity("HS256", "hs.secret"), ROUTES).unwrap();
    for missing in ["iss", "aud"] {
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove(missing);
        let why = bad_token(&routes, &sign(Algorithm::HS256, &claims));
        assert!(why.contains(missing), "{missing}: {why}");
    }
    // Without the configuration, neither is needed.
    let loose = "[identity]\nsource = \"jwt\"\nprincipal_type = \"User\"\nalgorithm = \"HS256\"\nkey_file = \"hs.secret\"\n";
    let routes = routes_with(loose, ROUTES).unwrap();
    let claims = json!({"sub": "pat", "exp": now() + 600});
    decided(with_token(&routes, &sign(Algorithm::HS256, &claims)));
}

/// `copy_claims` puts each claim in every routed request's context: a claim
/// an action's context does not declare is refused at load (the schema
/// would deny every request), naming the file, line, field and action.
#[test]
fn copied_claims_must_be_declared_by_every_routed_action() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hs.secret"), HS_SECRET).unwrap();
    let schema_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/partnergate.cedarschema");
    let types = partnergate_gateway::types::ContextTypes::from_file(&schema_file).unwrap();
    let file = dir.path().join("routes.toml");
    let routes = ROUTES.replace(
        "context = { reason = \"query:reason\", tenant = \"header:x-tenant\" }\n",
        "",
    );
    assert_ne!(routes, ROUTES);
    let parse = |identity: &str| {
        let text = format!("{identity}\n{routes}");
        partnergate_gateway::parse_typed(&file, &text, Some(&schema()), Some(&types))
            .map_err(|p| p.to_string())
    };
    let err = parse(&jwt_identity("HS256", "hs.secret")).unwrap_err();
    assert!(
        err.contains("routes.toml:8:")
            && err.contains("field `identity.copy_claims`")
            && err.contains("`email`")
            && err.contains("dismiss_user"),
        "{err}"
    );
    // A claim the contexts declare (`now`) loads.
    let ok = jwt_identity("HS256", "hs.secret").replace("[\"email\"]", "[\"now\"]");
    parse(&ok).unwrap();
}

/// The sign-in methods: `copy_claims = ["amr"]` loads against the shipped
/// schema (every action's context declares `amr`) and a verified token's
/// `amr` claim lands in the context, where `partner-requires-strong-sign-in`
/// reads it.
#[test]
fn the_amr_claim_is_copied_into_the_context() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hs.secret"), HS_SECRET).unwrap();
    let schema_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/partnergate.cedarschema");
    let types = partnergate_gateway::types::ContextTypes::from_file(&schema_file).unwrap();
    let routes = ROUTES.replace(
        "context = { reason = \"query:reason\", tenant = \"header:x-tenant\" }\n",
        "",
    );
    let identity = jwt_identity("HS256", "hs.secret").replace("[\"email\"]", "[\"amr\"]");
    let text = format!("{identity}\n{routes}");
    let routes = partnergate_gateway::parse_typed(
        &dir.path().join("routes.toml"),
        &text,
        Some(&schema()),
        Some(&types),
    )
    .map_err(|p| p.to_string())
    .unwrap();
    let mut claims = good_claims();
    claims["amr"] = json!(["pwd", "mfa"]);
    let m = decided(with_token(&routes, &sign(Algorithm::HS256, &claims)));
    assert_eq!(
        m.query.context.as_ref().unwrap()["amr"],
        json!(["pwd", "mfa"])
    );
    // A token without the claim gives a context without it: not strong.
    let m = decided(with_token(&routes, &sign(Algorithm::HS256, &good_claims())));
    assert!(m
        .query
        .context
        .as_ref()
        .and_then(|c| c.get("amr"))
        .is_none());
}
