//! Webhook delivery of the partner lifecycle events: the operator's
//! endpoints and settings (`config`), Standard Webhooks signatures
//! (`sign`), and the delivery loop over the orchestrator's events outbox
//! (`deliver`). It lives in the server, the one crate with an HTTP client
//! (hyper-util's); what an event is, when it is written and its delivery
//! state are the orchestrator's (`partnergate_orchestrator::events`).

pub mod config;
pub mod deliver;
pub mod sign;

pub use config::{WebhookConfig, WebhookConfigError};
pub use deliver::Delivering;
