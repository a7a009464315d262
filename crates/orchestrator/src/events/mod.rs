//! Partner lifecycle events that nobody loses: every lifecycle change an
//! operation commits writes an event into the outbox table
//! (`partner_events`) in the same transaction ([`WriteTx::emit`], one call
//! inside any operation), with the account's next sequence number, the
//! change record's `change_id`, the Allow decision's id and the committing
//! transaction's clock. Delivery reads them back through [`EventStore`]:
//! leases per account head (in order per account), outcomes, dead letters,
//! redelivery, the listing and the metrics' counts.
//!
//! The rooms: `kind` ([`EventKind`], the wire names), `outbox` (the rows,
//! the payload, [`EventStore`], [`backoff`]), `emit` ([`WriteTx`]), and the
//! SQL in `sqlite` and `postgres`. It never knows HTTP, the webhook
//! endpoints or their signatures (the server's `webhooks` delivers), nor
//! the command line.

pub mod emit;
pub mod kind;
pub mod outbox;
pub mod postgres;
pub mod sqlite;

pub use emit::{Emitted, WriteTx};
pub use kind::EventKind;
pub use outbox::{
    backoff, EventFilter, EventRow, EventStats, EventStatus, EventStore, NewEvent, Settled,
};
