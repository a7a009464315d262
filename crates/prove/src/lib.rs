//! Symbolic verification of a policy pack (`partnergate prove`): invariants
//! written in Cedar are checked for *every* request and entity store that
//! fits the schema, with the SMT solver cvc5 behind `cedar-policy-symcc`.
//!
//! This module owns the invariant files (`policies/invariants/*.cedar`, one
//! invariant per file, kind given by a `@kind` annotation), the proof
//! report with its counterexamples (a request plus a Cedar JSON entity store
//! that `partnergate authorize` replays), writing counterexamples to disk,
//! and the reload gate ([`reload_gate`]). [`check_pack`] is the library
//! entry point. The `prove` subcommand's flags and text report live in the
//! binary (`src/cli/prove.rs`). Kinds:
//!
//! - `ceiling`: the production policies never allow more than the invariant
//!   set allows (symcc `implies(production, invariant)`);
//! - `floor`: the production policies always allow at least what the
//!   invariant set allows (`implies(invariant, production)`);
//! - `never-errors`: built in, no file: no production policy raises an
//!   evaluation error on any valid request.
//!
//! The solver is found the way symcc finds it: the `CVC5` environment
//! variable (path of the executable), else `cvc5` on `PATH`.
//!
//! Depends on `partnergate-policy` and `partnergate-core` (the reload
//! [`Gate`](partnergate_core::reload::Gate) type); it must never know the
//! partner rules, HTTP or the command line.

#![warn(missing_docs, clippy::too_many_lines)]

mod counterexample;
mod error;
mod gate;
mod invariants;
mod prover;
mod report;

pub use counterexample::{write_counterexamples, WrittenCounterexample};
pub use error::{ProveError, INSTALL_HINT, SOLVER_ENV};
pub use gate::reload_gate;
pub use invariants::{default_invariants_dir, load_invariants, Invariant, InvariantKind};
pub use prover::{check_equivalent, check_equivalent_async, check_pack, check_pack_async};
pub use report::{Counterexample, EnvLabel, InvariantResult, ProofReport, Violation};
