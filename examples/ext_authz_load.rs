//! Closed-loop load on one PartnerGate question, asked three ways, for
//! `scripts/gateway_bench.sh`: Envoy's gRPC `Authorization/Check`
//! (`grpc ADDR`), PartnerGate's own `POST /v1/is_authorized` (`http BASE`),
//! or the HTTP forward-auth endpoint as Envoy's HTTP mode asks it
//! (`forward BASE`).
//! CONNECTIONS tasks each ask, wait for the answer, check it is the expected
//! Allow, and ask again, for SECONDS; prints `<mode> <answers/s> <p50 µs>
//! <p99 µs>`. Any other answer stops the run with exit 1: a benchmark of
//! wrong answers measures nothing.
//!
//! The question: partner `pat` dismisses employee `emma` of the demo
//! directory (`demo/entities.json`), through the shipped routes file's
//! `POST /api/users/{id}/dismiss` (trusted header `x-portal-user`) for gRPC.
//!
//! `open URL RATE SECONDS` is the open-loop form, for latency: a POST with
//! `x-portal-user: pat` to URL (through a proxy) started every 1/RATE s
//! whatever the earlier ones do (a slow answer does not hold the next
//! request back, so a stall shows in every request it delays), each timed
//! from its start; prints `open <answers/s> <p50 µs> <p99 µs>`. Any status
//! but 200 stops it.
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
            Mode::Forward(client, url) => post_as_pat(client, url).await?,
            Mode::Http(client, url) => {
                let text = client
                    .post(url)
                    .header("content-type", "application/json")
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
    Forward(reqwest::Client, String),
}

/// `POST url` as partner `pat` (the trusted header of the shipped routes),
/// answer read whole; anything but a 200 is an error.
async fn post_as_pat(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let resp = client
        .post(url)
        .header("x-portal-user", "pat")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("not an allow: {}", resp.status()));
    }
    resp.bytes().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The open-loop run: `rate` requests/s to `url` for `secs`; latencies in
/// µs from each request's due time.
async fn open_loop(url: String, rate: u64, secs: u64) -> Result<Vec<u32>, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())?;
    let start = tokio::time::Instant::now();
    let total = rate * secs;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate.max(1));
        tokio::time::sleep_until(due).await;
        // Timed from its start: the sender keeps the schedule whatever the
        // answers do (the timer's own lateness, up to a millisecond, is
        // the client's, not the server's).
        let sent = Instant::now();
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            post_as_pat(&client, &url).await?;
            Ok::<_, String>(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX))
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(lat)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kind), Some(target)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: ext_authz_load grpc|http|forward ADDR|BASE [CONNECTIONS] [SECONDS]\n       \
             ext_authz_load open URL RATE SECONDS"
        );
        std::process::exit(2);
    };
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    if kind == "open" {
        let started = Instant::now();
        // Its own runtime with two workers: answers are read while the
        // sender keeps the schedule.
        let url = target.clone();
        let run = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(open_loop(url, conns as u64, secs))
        })
        .join()
        .unwrap_or_else(|_| Err("the sender panicked".into()));
        match run {
            Ok(all) => report(kind, all, started.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("wrong answer or error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
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
        "forward" => Mode::Forward(
            reqwest::Client::builder()
                .pool_max_idle_per_host(conns)
                .build()
                .unwrap_or_default(),
            format!(
                "{}/v1/gateway/envoy/api/users/emma/dismiss",
                target.trim_end_matches('/')
            ),
        ),
        other => {
            eprintln!("unknown mode {other}: grpc, http or forward");
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
    report(kind, all, started.elapsed().as_secs_f64());
}

/// Print `<mode> <answers/s> <p50 µs> <p99 µs>`.
fn report(kind: &str, mut all: Vec<u32>, elapsed: f64) {
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
