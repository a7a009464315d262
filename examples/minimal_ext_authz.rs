//! The practical limit for a gRPC ext_authz server on this machine: Envoy's
//! `envoy.service.auth.v3.Authorization/Check` whose handler ignores the
//! request and allows with the two headers PartnerGate sends upstream.
//! `scripts/gateway_bench.sh` compares it with `examples/minimal_axum.rs`
//! (the HTTP limit) to show what the transport alone costs. Served three
//! ways (the second argument):
//! - `tower`: tonic's generated service on hyper's HTTP/2, served by
//!   `partnergate serve --ext-authz-grpc`'s own listener loop
//!   (`partnergate_server::gateway::serve_on`): as PartnerGate serves it;
//! - `tonic` (the default): the same service under tonic's transport
//!   `Server`, as PartnerGate served it before;
//! - `hyper`: hand-written gRPC unary framing on hyper's HTTP/2, no tonic:
//!   what tonic's codec and service layers cost beyond HTTP/2 itself.
//!
//! `cargo run --release --example minimal_ext_authz -- 127.0.0.1:9192 [tower|tonic|hyper]`

use std::time::Duration;

use hyper::body::Bytes;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderValue,
    HeaderValueOption, HttpResponse, OkHttpResponse,
};

struct Fixed;

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append_action: envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd
            .into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for Fixed {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(fixed()))
    }
}

fn fixed() -> CheckResponse {
    CheckResponse {
        status: Some(envoy_types::pb::google::rpc::Status {
            code: tonic::Code::Ok.into(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![
                header(
                    "x-partnergate-decision-id",
                    "00000000-0000-0000-0000-000000000000",
                ),
                header("x-partnergate-policy-version", "sha256:0000000000000000"),
            ],
            ..Default::default()
        })),
        ..Default::default()
    }
}

type Frame = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
type Frames = http_body_util::StreamBody<tokio_stream::Iter<std::vec::IntoIter<Frame>>>;

/// One unary Check over hyper: the 5-byte gRPC prefix, the message, then
/// `grpc-status` in the trailers.
async fn unary(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Frames>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    use prost::Message;
    let status = |code: &'static str| {
        let mut t = hyper::HeaderMap::new();
        t.insert("grpc-status", hyper::header::HeaderValue::from_static(code));
        t
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let frames = match body.get(5..).map(CheckRequest::decode) {
        Some(Ok(_)) => {
            let msg = fixed();
            let mut out = Vec::with_capacity(5 + msg.encoded_len());
            out.push(0);
            out.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
            msg.encode(&mut out).unwrap_or_default();
            vec![
                Ok(hyper::body::Frame::data(Bytes::from(out))),
                Ok(hyper::body::Frame::trailers(status("0"))),
            ]
        }
        _ => vec![Ok(hyper::body::Frame::trailers(status("3")))],
    };
    let mut resp =
        hyper::Response::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

async fn serve_hyper(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .max_concurrent_streams(1024)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(unary),
                )
                .await;
        });
    }
}

/// tonic's generated service (its codec, statuses and limits) served by
/// hyper's HTTP/2 directly: `partnergate serve`'s own listener loop, with
/// its settings, its connection watchdog at the serve defaults and a 30 s
/// per-call timeout.
async fn serve_tower(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use partnergate_server::conn::{BodyBudget, ConnLimits, Slots};
    use partnergate_server::defaults;
    let accept = || async {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok(hyper_util::rt::TokioIo::new(stream))
    };
    let limits = ConnLimits {
        header_timeout: Duration::from_millis(defaults::HEADER_TIMEOUT_MS),
        idle_timeout: Duration::from_millis(defaults::IDLE_TIMEOUT_MS),
        max_connections: defaults::MAX_CONNECTIONS,
    };
    partnergate_server::gateway::serve_on(
        accept,
        AuthorizationServer::new(Fixed),
        Duration::from_secs(30),
        limits,
        &Slots::new(limits.max_connections),
        &BodyBudget::new(defaults::MAX_BODY_BYTES_IN_FLIGHT),
        std::future::pending(),
    )
    .await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9192".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("minimal_ext_authz listening on {}", listener.local_addr()?);
    match std::env::args().nth(2).as_deref() {
        Some("hyper") => return Ok(serve_hyper(listener).await?),
        Some("tower") => return Ok(serve_tower(listener).await?),
        _ => {}
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(1024))
        .add_service(AuthorizationServer::new(Fixed))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
