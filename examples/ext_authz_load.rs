//! Closed-loop load on one PartnerGate question, asked two ways, for
//! `scripts/gateway_bench.sh`: Envoy's gRPC `Authorization/Check`
//! (`grpc ADDR`) or PartnerGate's own `POST /v1/is_authorized` (`http BASE`).
//! CONNECTIONS tasks each ask, wait for the answer, check it is the expected
//! Allow, and ask again, for SECONDS; prints `<mode> <answers/s> <p50 µs>
//! <p99 µs>`. Any other answer stops the run with exit 1: a benchmark of
//! wrong answers measures nothing.
//!
//! The question: partner `pat` dismisses employee `emma` of the demo
//! directory (`demo/entities.json`), through the shipped routes file's
//! `POST /api/users/{id}/dismiss` (trusted header `x-portal-user`) for gRPC.
//!
//! `cargo run --release --example ext_authz_load -- grpc 127.0.0.1:9191 16 5`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, check_response, AttributeContext, CheckRequest,
};

fn check_request() -> CheckRequest {
    let headers = [("x-portal-user".to_string(), "pat".to_string())].into();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "POST".into(),
                    path: "/api/users/emma/dismiss".into(),
                    host: "portal.test".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

const HTTP_BODY: &str = r#"{"principal":"User::\"pat\"","action":"Action::\"dismiss_user\"","resource":"User::\"emma\""}"#;

/// One asker: latencies in µs until `stop`.
async fn ask_loop(mode: Arc<Mode>, stop: Arc<AtomicBool>) -> Result<Vec<u32>, String> {
    let mut lat = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match &*mode {
            Mode::Grpc(client) => {
                let resp = client
                    .clone()
                    .check(check_request())
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                if !matches!(
                    resp.http_response,
                    Some(check_response::HttpResponse::OkResponse(_))
                ) {
                    return Err(format!("not an allow: {resp:?}"));
                }
            }
            Mode::Http(client, url) => {
                let text = client
                    .post(url)
                    .body(HTTP_BODY)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                if !text.starts_with(r#"{"decision":"Allow""#) {
                    return Err(format!("not an allow: {text}"));
                }
            }
        }
        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(lat)
}

enum Mode {
    Grpc(AuthorizationClient<tonic::transport::Channel>),
    Http(reqwest::Client, String),
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kind), Some(target)) = (args.first(), args.get(1)) else {
        eprintln!("usage: ext_authz_load grpc|http ADDR|BASE [CONNECTIONS] [SECONDS]");
        std::process::exit(2);
    };
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mode = match kind.as_str() {
        "grpc" => match AuthorizationClient::connect(format!("http://{target}")).await {
            Ok(c) => Mode::Grpc(c),
            Err(e) => {
                eprintln!("cannot connect to {target}: {e}");
                std::process::exit(1);
            }
        },
        "http" => Mode::Http(
            reqwest::Client::builder()
                .pool_max_idle_per_host(conns)
                .build()
                .unwrap_or_default(),
            format!("{}/v1/is_authorized", target.trim_end_matches('/')),
        ),
        other => {
            eprintln!("unknown mode {other}: grpc or http");
            std::process::exit(2);
        }
    };
    let mode = Arc::new(mode);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(ask_loop(mode.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => {
                eprintln!("wrong answer or error: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("task failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{kind} {:.0} {} {}",
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
