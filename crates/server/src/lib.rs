//! The HTTP sidecar: configuration, the router, start-up and graceful
//! shutdown. Only this crate knows axum and the wire format; decisions come
//! from [`partnergate_core::authz`].
//!
//! The top library layer: it may depend on every other PartnerGate library
//! crate, and is the only one allowed axum, tower, tower-http, hyper,
//! hyper-util, utoipa and the Prometheus exporter. It must never know the
//! command line.
//!
//! Front doors (each parses its wire format into a question and renders
//! the answer; none imports another):
//! - `api`: the PartnerGate endpoints (`/v1/...`, health, metrics).
//! - `authzen`: the OpenID AuthZEN Authorization API 1.0 endpoints.
//! - `search`: subject, resource and action search (AuthZEN and own API).
//! - `orchestrator`: partner invitations, users, seats and the partner registry.
//! - `events`: the partner lifecycle events' listing and redelivery
//!   (`/v1/events`).
//! - `gateway`: gateway mode's doors: Envoy's gRPC ext_authz and the HTTP
//!   forward-auth endpoints (nginx, Traefik, Caddy, Envoy's HTTP mode).
//! - `console`: the web console at `/console` (server-rendered pages over
//!   the same library calls as the API).
//!
//! What they share:
//! - `decide`: the decision sequence (request id, decide, durable wait, metrics).
//! - `wire`: the own API's question and answer on the wire.
//! - `error`: the JSON error body.
//! - `http`: size/URI guards before the body, the token check, JSON bodies
//!   for every error, the JSON content type.
//! - `idempotency`: `Idempotency-Key` for writes.
//! - `state`, `config`: the handlers' state; what `serve` can be told.
//! - `access`: the access classes (token rule, timeout) routes are filed under.
//! - `router`: every door's routes, each class with its layers.
//! - `openapi`: the OpenAPI document.
//! - `conn`: the accept loop: header and idle timeouts, the connection cap.
//! - `run`: start-up, listeners, reloads on SIGHUP, shutdown.
//! - `verify_gate`: the console's chain checks, one at a time.
//! - `webhooks`: delivery of the lifecycle events to the operator's
//!   endpoints (Standard Webhooks signatures; the crate's HTTP client).

#![warn(missing_docs, clippy::too_many_lines)]

pub mod access;
pub mod api;
pub mod authzen;
pub mod config;
pub mod conn;
pub mod console;
pub mod decide;
pub mod error;
pub mod events;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod openapi;
pub mod orchestrator;
pub mod router;
pub mod run;
pub mod search;
pub mod state;
pub mod verify_gate;
pub mod webhooks;
pub mod wire;

pub use config::{defaults, ServeConfig, ServeError};
pub use partnergate_core::runtime::default_replica_id;
pub use router::app;
pub use run::{build, load_or_create_token, serve, Sidecar};
pub use state::{metrics_handle, AppState};
