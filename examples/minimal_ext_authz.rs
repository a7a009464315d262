//! The practical limit for a gRPC ext_authz server on this machine: Envoy's
//! `envoy.service.auth.v3.Authorization/Check` served by tonic with the same
//! server settings as `partnergate serve --ext-authz-grpc` (timeout,
//! keep-alive, concurrent streams, TCP_NODELAY), whose handler ignores the
//! request and allows with the two headers PartnerGate sends upstream.
//! `scripts/gateway_bench.sh` compares it with `examples/minimal_axum.rs`
//! (the HTTP limit) to show what the transport alone costs.
//!
//! `cargo run --release --example minimal_ext_authz -- 127.0.0.1:9192`
//! (the bind address is the only argument; default 127.0.0.1:9192).

use std::time::Duration;

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
        Ok(tonic::Response::new(CheckResponse {
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
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9192".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("minimal_ext_authz listening on {}", listener.local_addr()?);
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
