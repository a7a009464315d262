//! The entity directory: every Cedar entity PartnerGate knows, served from
//! memory and persisted through a [`crate::store::EntityBackend`].
//!
//! It owns the write path (schema validation of every entity, then one store
//! transaction, then the in-memory copy, under the writer locks every writer
//! takes: alone, or beside other writers with its entities' stripes —
//! [`Directory::commit_with`] and [`Directory::commit_beside`] for writers
//! that run their own store transaction) and the read path that matters for
//! latency: [`Directory::slice`], the entities one decision needs (principal,
//! resource, their ancestors and the entities their attributes reference),
//! so that a decision's cost does not grow with the size of the directory.
//! Memory holds each entity compactly (its JSON text, its references, its
//! version) and builds the Cedar entity when a slice needs it, keeping the
//! most recently built ones ([`BUILT_ENTITIES`]); a start reads the stored
//! references and parses no entity.
//! Nothing here is specific to the partner pack.
//!
//! One file per idea: `memory` (the [`Directory`] and what memory holds),
//! `write` (the write path), `held` (memory checked against a writer's
//! transaction under the writer lock), `stripes` (the writer locks), `slice`
//! (a decision's entities), `referrers`
//! (the index of who points at a uid), `import` (bulk loads), `error`.

mod error;
mod held;
mod import;
mod memory;
mod referrers;
mod slice;
mod stripes;
mod write;

pub use error::DirectoryError;
pub use held::Held;
pub use import::import;
pub use memory::{uid_from_key, Directory, ABSENT, BUILT_ENTITIES};
pub use slice::{entities_for, Dependency, VersionedSlice, MAX_SLICE};
pub use stripes::STRIPES;
pub use write::{Changed, IdempotentAnswer, Written};

#[cfg(test)]
mod tests;
