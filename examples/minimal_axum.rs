//! The practical limit for an HTTP sidecar on this machine: an axum server
//! (same axum, tokio and runtime settings as `partnergate serve`) whose
//! handler ignores the body and returns a fixed JSON decision.
//!
//! `cargo run --release --example minimal_axum -- 127.0.0.1:8381`
//! (the bind address is the only argument; default 127.0.0.1:8381).

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

const BODY: &str = r#"{"decision":"Allow","reasons":[{"id":"member-view-account","description":"An active user may view the own account"}],"errors":[],"policy_version":"sha256:0000000000000000","decision_id":"00000000-0000-0000-0000-000000000000"}"#;

async fn fixed(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8381".to_string());
    let app = Router::new()
        .route("/v1/is_authorized", post(fixed))
        .fallback(post(fixed));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "minimal_axum listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await
}
