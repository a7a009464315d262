//! PartnerGate: a Cedar authorization engine and sidecar for partner access
//! to customer accounts.
//!
//! The library is organised one module per concern (see ARCHITECTURE.md):
//! [`policies`] loads and validates a pack, [`engine`] makes decisions,
//! [`suite`] runs policy test suites, [`prove`] proves invariants symbolically, and [`cli`] is the command-line adapter.

pub mod audit;
pub mod authz;
pub mod cli;
pub mod directory;
pub mod engine;
pub mod orchestrator;
pub mod policies;
pub mod prescan;
pub mod prove;
pub mod reload;
pub mod server;
pub mod store;
pub mod suite;
