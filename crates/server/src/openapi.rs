//! The OpenAPI document of every endpoint, served at `/openapi.json`: each
//! front door describes its own paths and schemas (its `Doc`); this module
//! only joins them under PartnerGate's title. Knows no handler.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::access::{Access, Routes};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(info(title = "PartnerGate", description = "Cedar authorization sidecar"))]
struct Title;

/// The whole document: every front door's part under one title.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Title::openapi();
    for part in [
        crate::api::Doc::openapi(),
        crate::authzen::Doc::openapi(),
        crate::orchestrator::Doc::openapi(),
        crate::events::Doc::openapi(),
        crate::search::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

/// `GET /openapi.json` (public: it holds no data).
pub fn routes() -> Routes {
    Routes::default().with(
        Access::Public,
        Router::<Arc<AppState>>::new().route("/openapi.json", get(|| async { Json(document()) })),
    )
}
