//! Decision logs copied into PostgreSQL, so that every replica's log is in
//! the database the replicas already share: [`ship`] copies one log's
//! records in order, batched, resuming where the database says it stopped
//! (`audit_logs.head_seq`, moved in the transaction that inserts the
//! records); [`shipper`] runs that on a thread of `serve`, with the lag as
//! a metric and a status; [`verify`] checks every shipped chain with the
//! audit crate's own `verify`; [`query`] selects shipped records with the
//! file query's `Filter`; [`newest`] pages them newest first for the
//! console; [`retention`] drops old day partitions and records each cut in
//! a chain of its own; [`partitions`] creates the day partitions of
//! `audit_records` (the tables themselves are a migration of
//! `store::postgres`); [`reader`] is a server's lazily opened connection
//! for reading them.
//!
//! The log file stays the durable buffer: nothing here is on a decision's
//! path, and a database that is down only makes the copy lag. This module
//! must never write a log file, hash a record itself or know HTTP.

pub mod newest;
pub mod partitions;
pub mod query;
pub mod reader;
pub mod retention;
pub mod ship;
pub mod shipper;
pub mod verify;

pub use query::query_db;
pub use reader::DbReader;
pub use retention::{apply_retention, RetentionDone, RetentionError};
pub use ship::{ShipError, ShipRound, Shipper};
pub use shipper::{ShipSnapshot, ShipStatus, ShipThread, ShipThreadConfig};
pub use verify::{verify_db, DbVerified, LogVerified};
