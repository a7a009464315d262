//! A stand-in for the customer portal behind a proxy (docs/gateway.md,
//! "PartnerGate behind Envoy" and "behind nginx"): answers every request with 200 and a
//! JSON echo of its method, path and the `x-partnergate-*` headers it
//! received, so one can see what the gateway passed upstream.
//!
//! `cargo run --release --example portal_echo -- 127.0.0.1:8081`
//! (the bind address is the only argument; default 127.0.0.1:8081).

use axum::extract::Request;
use axum::Json;
use serde_json::{json, Map, Value};

async fn echo(req: Request) -> Json<Value> {
    let headers: Map<String, Value> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-partnergate-"))
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    Json(json!({"portal": "ok", "method": req.method().as_str(), "path": path, "headers": headers}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_string());
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("portal_echo listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
