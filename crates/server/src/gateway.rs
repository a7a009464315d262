//! Gateway mode's two front doors (issue #15), over one check
//! (`partnergate_gateway::check`: the routes file, the identity, the
//! decision path every endpoint uses):
//!
//! - gRPC: Envoy's v3 `envoy.service.auth.v3.Authorization/Check` on its own
//!   listener (`--ext-authz-grpc ADDR` or `unix:PATH`), with tonic and the
//!   protos of `envoy-types`;
//! - HTTP forward auth: `/v1/gateway/check` for nginx `auth_request`
//!   (`X-Original-Method`, `X-Original-URI`), Traefik ForwardAuth and
//!   Caddy `forward_auth` (`X-Forwarded-Method`, `-Uri`, `-Host`), and
//!   `/v1/gateway/envoy/<original path>` for Envoy's HTTP ext_authz (the
//!   original method, path and headers).
//!
//! This module only translates wire formats into a
//! `partnergate_gateway::GatewayRequest` and a `Reply` back; it must never
//! decide, match a route or read a token itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue as PbHeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use partnergate_gateway::{GatewayRequest, Reply, Via};

use super::AppState;

/// The path prefix of Envoy's HTTP ext_authz (`path_prefix` in its
/// `http_service`): the original path follows it.
pub const ENVOY_HTTP_PREFIX: &str = "/v1/gateway/envoy";

/// The forward-auth endpoint of nginx, Traefik and Caddy.
pub const FORWARD_AUTH_PATH: &str = "/v1/gateway/check";

/// The header that carries a 403's JSON body on the forward-auth endpoint
/// (printable ASCII): nginx's `auth_request` passes only the status and
/// headers of its subrequest, so its `error_page` returns the body from
/// here (examples/gateway/nginx.conf).
pub const DENY_BODY_HEADER: &str = "x-partnergate-deny-body";

/// Whether `path` is one of the gateway's HTTP endpoints (no sidecar token:
/// the `Authorization` header there is the end user's, for the routes file;
/// any method: Envoy's HTTP mode keeps the original one).
pub fn is_gateway_path(path: &str) -> bool {
    path == FORWARD_AUTH_PATH
        || path == ENVOY_HTTP_PREFIX
        || path
            .strip_prefix(ENVOY_HTTP_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The HTTP routes of gateway mode.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(FORWARD_AUTH_PATH, any(forward_auth))
        .route(ENVOY_HTTP_PREFIX, any(envoy_http))
        .route(&format!("{ENVOY_HTTP_PREFIX}/{{*rest}}"), any(envoy_http))
}

/// A header's value as text (a non-UTF-8 value counts as absent).
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// nginx / Traefik / Caddy: the original request in `X-Original-*` (nginx)
/// or `X-Forwarded-*` (Traefik, Caddy) headers, the rest of the original
/// headers as they are.
async fn forward_auth(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let headers = req.headers();
    let pick = |a: &str, b: &str| header(headers, a).or_else(|| header(headers, b));
    let (Some(method), Some(uri)) = (
        pick("x-original-method", "x-forwarded-method"),
        pick("x-original-uri", "x-forwarded-uri"),
    ) else {
        return bad_proxy_request(
            "the forward-auth endpoint needs the original method and URI: \
             X-Original-Method and X-Original-URI (nginx), or X-Forwarded-Method and \
             X-Forwarded-Uri (Traefik, Caddy)",
        );
    };
    let host = pick("x-original-host", "x-forwarded-host").or_else(|| header(headers, "host"));
    let lookup = |name: &str| header(headers, name);
    let reply = partnergate_gateway::check(
        &state.authz,
        &GatewayRequest {
            method,
            host: host.map(strip_port),
            uri,
            header: &lookup,
        },
        Via::Http,
    );
    http_reply(&state, reply, started, true).await
}

/// Envoy's HTTP ext_authz: the original method, `path_prefix` + the
/// original path and query, the original host and the allowed headers.
async fn envoy_http(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let full = req.uri().path_and_query().map_or_else(
        || req.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let uri = full
        .strip_prefix(ENVOY_HTTP_PREFIX)
        .filter(|u| u.starts_with('/'))
        .unwrap_or("/")
        .to_string();
    let headers = req.headers();
    let host = header(headers, "host").map(strip_port);
    let lookup = |name: &str| header(headers, name);
    let reply = partnergate_gateway::check(
        &state.authz,
        &GatewayRequest {
            method: &method,
            host,
            uri: &uri,
            header: &lookup,
        },
        Via::Http,
    );
    http_reply(&state, reply, started, false).await
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => h,
        _ => host,
    }
}

/// A 400 for a proxy that did not say what it forwards (its configuration
/// is wrong; nginx turns it into a 500, never a pass).
fn bad_proxy_request(message: &str) -> Response {
    use axum::response::IntoResponse;
    super::error::AppError::bad_request(message.to_string()).into_response()
}

/// Wait for the decision's record under `--audit-required`: a record that
/// cannot be made durable turns any reply into a 503 deny.
async fn durable(state: &AppState, reply: &Reply, via: Via) -> Result<(), String> {
    let Some(answer) = &reply.answer else {
        return Ok(());
    };
    let endpoint = match via {
        Via::Grpc => "ext_authz_grpc",
        Via::Http => "forward_auth",
    };
    super::api::require_durable(state, answer, endpoint)
        .await
        .map_err(|e| e.message)
}

/// Count the decision (if one was made) in the decision metrics.
fn observe(reply: &Reply, endpoint: &'static str, started: Instant) {
    if let Some(a) = &reply.answer {
        super::api::observe(endpoint, a.decision.decision.as_str(), started);
    }
}

/// A [`Reply`] as the HTTP answer of a forward-auth endpoint: 200 with the
/// upstream headers, or the status, client headers and JSON body (a 403's
/// body also in [`DENY_BODY_HEADER`] when `body_header`).
async fn http_reply(
    state: &AppState,
    reply: Reply,
    started: Instant,
    body_header: bool,
) -> Response {
    observe(&reply, "forward_auth", started);
    if let Err(why) = durable(state, &reply, Via::Http).await {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &[],
            serde_json::json!({"error": "audit_unavailable", "message": why}).to_string(),
        );
    }
    let passes = reply.verdict.passes();
    let (mut headers, body) = if passes {
        (reply.upstream, String::new())
    } else {
        (reply.client, reply.body.unwrap_or_default())
    };
    if body_header && reply.status == 403 {
        headers.push((
            DENY_BODY_HEADER.into(),
            partnergate_gateway::check::ascii(&body),
        ));
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
    json_response(status, &headers, body)
}

fn json_response(status: StatusCode, headers: &[(String, String)], body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
    resp
}

/// Where the gRPC ext_authz service listens (`--ext-authz-grpc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcListen {
    /// A TCP address (port 0: any free port, printed at start).
    Tcp(std::net::SocketAddr),
    /// A Unix socket path (`unix:PATH`); a stale socket file is replaced.
    Unix(PathBuf),
}

impl std::str::FromStr for GrpcListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path, e.g. unix:/run/partnergate.sock".into());
            }
            return Ok(GrpcListen::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(GrpcListen::Tcp)
            .map_err(|e| format!("`{s}` is neither an address (127.0.0.1:9191) nor unix:PATH: {e}"))
    }
}

impl std::fmt::Display for GrpcListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcListen::Tcp(a) => write!(f, "{a}"),
            GrpcListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Envoy's `Authorization` service over the sidecar's state.
struct ExtAuthz {
    state: Arc<AppState>,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let http = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            return Err(tonic::Status::invalid_argument(
                "CheckRequest has no attributes.request.http",
            ));
        };
        // Envoy sends `headers` (lower-case names), or `header_map` with
        // `encode_raw_headers` (then copied once into a map).
        let raw: Option<std::collections::HashMap<String, String>> =
            http.header_map.as_ref().map(|map| {
                let mut all = http.headers.clone();
                for h in &map.headers {
                    let value = if h.raw_value.is_empty() {
                        h.value.clone()
                    } else {
                        String::from_utf8_lossy(&h.raw_value).into_owned()
                    };
                    all.entry(h.key.to_ascii_lowercase()).or_insert(value);
                }
                all
            });
        let headers = raw.as_ref().unwrap_or(&http.headers);
        let lookup = |name: &str| headers.get(name).map(String::as_str);
        let host = Some(strip_port(&http.host)).filter(|h| !h.is_empty());
        let reply = partnergate_gateway::check(
            &self.state.authz,
            &GatewayRequest {
                method: &http.method,
                host,
                uri: &http.path,
                header: &lookup,
            },
            Via::Grpc,
        );
        observe(&reply, "ext_authz_grpc", started);
        let response = match durable(&self.state, &reply, Via::Grpc).await {
            Err(why) => denied(
                503,
                &[],
                serde_json::json!({"error": "audit_unavailable", "message": why}).to_string(),
            ),
            Ok(()) if reply.verdict.passes() => allowed(&reply.upstream),
            Ok(()) => denied(
                reply.status,
                &reply.client,
                reply.body.clone().unwrap_or_default(),
            ),
        };
        Ok(tonic::Response::new(response))
    }
}

fn header_options(headers: &[(String, String)]) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .map(|(k, v)| HeaderValueOption {
            header: Some(PbHeaderValue {
                key: k.clone(),
                value: v.clone(),
                raw_value: Vec::new(),
            }),
            // Replace whatever the client sent under the same name: a client
            // must never pass its own decision id or principal upstream.
            append_action:
                envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
            ..Default::default()
        })
        .collect()
}

fn allowed(upstream: &[(String, String)]) -> CheckResponse {
    CheckResponse {
        status: Some(envoy_types::pb::google::rpc::Status {
            code: tonic::Code::Ok.into(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: header_options(upstream),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn denied(status: u16, client: &[(String, String)], body: String) -> CheckResponse {
    let mut headers = header_options(client);
    headers.extend(header_options(&[(
        "content-type".into(),
        "application/json".into(),
    )]));
    let code = match status {
        401 => tonic::Code::Unauthenticated,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::PermissionDenied,
    };
    CheckResponse {
        status: Some(envoy_types::pb::google::rpc::Status {
            code: code.into(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body,
        })),
        ..Default::default()
    }
}

/// A bound gRPC listener, before it serves.
pub enum GrpcListener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket.
    Unix(tokio::net::UnixListener),
}

impl GrpcListener {
    /// Bind `at` (a stale Unix socket file is removed first).
    pub async fn bind(at: &GrpcListen) -> std::io::Result<Self> {
        match at {
            GrpcListen::Tcp(a) => Ok(GrpcListener::Tcp(tokio::net::TcpListener::bind(a).await?)),
            GrpcListen::Unix(p) => {
                if std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    std::fs::remove_file(p)?;
                }
                Ok(GrpcListener::Unix(tokio::net::UnixListener::bind(p)?))
            }
        }
    }

    /// Where it listens, for the start-up line.
    pub fn describe(&self) -> String {
        match self {
            GrpcListener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp ({e})"), |a| a.to_string()),
            GrpcListener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
        }
    }

    /// Serve Envoy's ext_authz until `stop` resolves, then let the open
    /// connections finish (HTTP/2 GOAWAY).
    ///
    /// tonic's generated service (its codec, statuses and message limits)
    /// runs on hyper's HTTP/2 server directly: `tonic::transport::Server`'s
    /// own stack (router, timeout and recovery layers, HTTP/1-or-2
    /// detection) cost more per answer than it does here
    /// (`scripts/gateway_bench.sh`: `bare_tower` against `bare_grpc`).
    pub async fn serve(
        self,
        state: Arc<AppState>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        // The sidecar's limits hold here too: a request's size (a larger
        // CheckRequest is refused by tonic's codec: OUT_OF_RANGE), its time
        // (CANCELLED after --request-timeout, the body's reading included),
        // and dead peers (HTTP/2 pings) do not keep a connection forever.
        let limit = state.max_body_bytes;
        let timeout = state.request_timeout;
        let service = AuthorizationServer::new(ExtAuthz { state })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        match self {
            GrpcListener::Tcp(l) => {
                let accept = || async {
                    let (stream, _) = l.accept().await?;
                    stream.set_nodelay(true)?;
                    Ok(TokioIo::new(stream))
                };
                serve_on(accept, service, timeout, stop).await;
            }
            GrpcListener::Unix(l) => {
                let accept = || async { Ok(TokioIo::new(l.accept().await?.0)) };
                serve_on(accept, service, timeout, stop).await;
            }
        }
    }
}

/// Accept connections from `accept` and serve `service` on each (HTTP/2,
/// each call bounded by `timeout`) until `stop` resolves; then wait for the
/// open connections to finish.
async fn serve_on<I, A, F>(
    mut accept: A,
    service: AuthorizationServer<ExtAuthz>,
    timeout: std::time::Duration,
    stop: impl std::future::Future<Output = ()> + Send,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: std::future::Future<Output = std::io::Result<I>>,
{
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .max_concurrent_streams(1024);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = accept() => accepted,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) => {
                // Out of descriptors, a reset before accept: keep serving.
                tracing::warn!(error = %e, "ext_authz gRPC: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = service.clone();
        let call = hyper::service::service_fn(move |req| {
            let service = service.clone();
            async move {
                use tower::ServiceExt as _;
                match tokio::time::timeout(timeout, service.oneshot(req)).await {
                    Ok(answered) => answered,
                    Err(_) => Ok(tonic::Status::cancelled("Timeout expired").into_http()),
                }
            }
        });
        let conn = graceful.watch(h2.serve_connection(io, call));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "ext_authz gRPC connection ended");
            }
        });
    }
    graceful.shutdown().await;
}
