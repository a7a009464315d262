//! The core: entity stores ([`store`]: SQLite, PostgreSQL), the in-memory
//! [`directory`] of entities, hot [`reload`] of the policy pack,
//! [`authz`], the decision path every adapter calls, [`audit_db`] (decision
//! logs shipped into PostgreSQL, verified and queried there), [`changes`] (change
//! records kept with their writes until the log holds them), and [`runtime`], the
//! builder that wires a pack, a store and a decision log into it once.
//!
//! Depends on `partnergate-policy` and `partnergate-audit`. It must never
//! know the partner pack's rules (the orchestrator), proofs, HTTP or the
//! command line.

#![warn(missing_docs, clippy::too_many_lines)]

pub mod audit_db;
pub mod authz;
pub mod cache;
pub mod changes;
pub mod clock;
pub mod directory;
pub mod limits;
pub mod metric_handles;
pub mod reload;
pub mod runtime;
pub mod secret;
pub mod store;

use partnergate_audit as audit;
use partnergate_policy::{engine, policies, prescan};
