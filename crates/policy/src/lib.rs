//! The policy pack and one decision: [`problem`] locates what is wrong in a
//! file, [`prescan`] bounds what a pack may contain before Cedar parses it,
//! [`policies`] loads and validates a pack, [`optional_file`] reads a file
//! a pack may carry beside its policies,
//! [`engine`] makes one fail-closed decision (over the candidates
//! [`index`] selects), [`suite`] runs policy test
//! suites.
//!
//! The lowest layer: it must never know the entity stores, the decision
//! log, reloads, the partner rules, HTTP or the command line.

#![warn(missing_docs, clippy::too_many_lines)]

pub mod engine;
pub mod index;
pub mod optional_file;
pub mod policies;
pub mod prescan;
pub mod problem;
pub mod suite;
