//! Forged proxy headers, per proxy kind, at the sidecar's own doors (the
//! same attacks through the real nginx, Caddy and Envoy are in
//! `tests/gateway.rs`, `forged_headers_through_a_real_*`): a client that
//! adds the other proxy's header set, repeats one of its proxy's headers,
//! writes dot segments, or names the admin host with a trailing dot never
//! gets a forged question allowed.

use crate::common::{Server, Workspace};

/// The shipped routes with `proxy = "<kind>"` and an admin host that lists
/// no public path.
fn serve(kind: &str) -> (Workspace, Server) {
    let ws = Workspace::new();
    let path = ws.policies().join("routes.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("proxy = ") {
            out.push_str(&format!("proxy = \"{kind}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with("public = ") {
            out.push_str("[[unmatched.host]]\nhost = \"admin.portal.test\"\npublic = []\n");
        }
    }
    assert!(out.contains(&format!("proxy = \"{kind}\"")), "{out}");
    std::fs::write(&path, out).unwrap();
    let server = Server::start(&ws, &[]);
    server.load_demo();
    (ws, server)
}

const ORIGINAL: [&str; 3] = ["x-original-method", "x-original-uri", "x-original-host"];
const FORWARDED: [&str; 3] = ["x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"];

fn status(server: &Server, headers: &[(&str, &str)]) -> u16 {
    let mut req = server.client.get(server.url("/v1/gateway/check"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap().status().as_u16()
}

#[test]
fn forged_proxy_headers_never_get_a_forged_question_allowed() {
    let mut tried = 0;
    for (kind, own, other) in [
        ("nginx", ORIGINAL, FORWARDED),
        ("caddy", FORWARDED, ORIGINAL),
        ("traefik", FORWARDED, ORIGINAL),
    ] {
        let (_ws, server) = serve(kind);
        // The proxy's own set: pat dismissing the owner (Deny), or nobody
        // (no x-portal-user: 401).
        for user in [Some("pat"), None] {
            let mut real = vec![
                (own[0], "POST"),
                (own[1], "/api/users/owner/dismiss"),
                (own[2], "portal.test"),
            ];
            if let Some(u) = user {
                real.push(("x-portal-user", u));
            }
            assert!(status(&server, &real) >= 400);
            // Each forged header of the other set alone, and all of it; a
            // second value of each header of the proxy's own set.
            let mut forgeries: Vec<Vec<(&str, &str)>> = vec![
                vec![(other[0], "GET")],
                vec![(other[1], "/healthz")],
                vec![(other[2], "portal.test")],
                vec![(other[0], "GET"), (other[1], "/healthz"), (other[2], "x")],
            ];
            forgeries.push(vec![(own[0], "GET")]);
            forgeries.push(vec![(own[1], "/healthz")]);
            for forged in forgeries {
                let mut headers = real.clone();
                headers.extend(&forged);
                let s = status(&server, &headers);
                assert_eq!(s, 403, "{kind} {forged:?} user={user:?}");
                tried += 1;
            }
        }
        // Dot segments and the admin host's trailing dot, in the proxy's own set.
        for (path, host) in [
            ("/static/../api/users/owner/dismiss", "portal.test"),
            ("/static/%2e%2e/api/users/owner/dismiss", "portal.test"),
            ("/static/..;/api/users/owner/dismiss", "portal.test"),
            (
                "/static/x%2f..%2f..%2fapi/users/owner/dismiss",
                "portal.test",
            ),
            ("/healthz", "admin.portal.test."),
            ("/healthz", "ADMIN.portal.test.:443"),
        ] {
            let s = status(&server, &[(own[0], "POST"), (own[1], path), (own[2], host)]);
            assert_eq!(s, 403, "{kind} {path} {host}");
            tried += 1;
        }
        // The same door still serves its proxy's honest checks.
        let ok = status(
            &server,
            &[
                (own[0], "POST"),
                (own[1], "/api/users/emma/dismiss"),
                (own[2], "portal.test"),
                ("x-portal-user", "pat"),
            ],
        );
        assert_eq!(ok, 200, "{kind}");
    }
    eprintln!("{tried} forged checks, none allowed");
}
