//! PartnerGate: a Cedar authorization engine and sidecar for partner access
//! to customer accounts.
//!
//! The library is organised one module per concern (see ARCHITECTURE.md):
//! [`policies`] loads and validates a pack, [`engine`] makes decisions,
//! [`suite`] runs policy test suites, and [`cli`] is the command-line adapter.

pub mod audit;
pub mod cli;
pub mod engine;
pub mod policies;
pub mod suite;
