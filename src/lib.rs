//! PartnerGate: a Cedar authorization engine and sidecar for partner access
//! to customer accounts.
//!
//! The libraries live in the workspace's `crates/` (see ARCHITECTURE.md);
//! this crate is the `partnergate` binary's command-line adapter ([`cli`])
//! and a facade that re-exports the libraries under their historical module
//! paths (`partnergate::policies`, `partnergate::server`, ...), so that the
//! tests, benches and examples name one crate.

pub use partnergate_core::{authz, clock, directory, reload, runtime, store};
pub use partnergate_orchestrator as orchestrator;
pub use partnergate_policy::{engine, policies, prescan, suite};
pub use partnergate_prove as prove;
pub use partnergate_search as search;
pub use partnergate_server as server;

/// The decision log (`partnergate-audit`), plus the `partnergate audit`
/// commands (`cli`, from the binary's adapter).
pub mod audit {
    pub use crate::cli::audit as cli;
    pub use partnergate_audit::*;
}

pub mod cli;
