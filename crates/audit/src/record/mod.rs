//! The record format of the decision log: the events callers hand to the
//! writer ([`Event`], in `event`), a decision's entity slice
//! ([`EntitySlice`], in `slice`), the log's own records (repair, gap,
//! retention, in `own`), the record as read back ([`Record`], in `read`),
//! the encoder that writes a record once and hashes the same bytes
//! ([`RecordEncoder`], in `encode`), and the canonical encoding and SHA-256
//! hash that chain records together (in `hash`).
//!
//! A decision's entity slice is redacted, encoded and hashed once however
//! many decisions share it; a file carries it inline (`entities`) on the
//! first decision that used it and names it by `entities_hash` on every
//! decision.
//!
//! Knows nothing of the writer's queue, the files or how a log is read.

mod encode;
mod event;
mod hash;
mod own;
mod read;
mod slice;

pub use encode::{encode_event, seal, Link, RecordEncoder, SliceField};
pub use event::{
    new_decision_id, shadow_of, ChangeEvent, DecisionEvent, Event, Gateway, Kind, ReloadEvent,
    SearchEvent, Shadow,
};
pub use hash::{canonical, compute_hash, GENESIS_HASH};
pub use own::{
    gap_body, repair_body, retention_body, ChainStart, GapInfo, RepairInfo, RetainedFile,
    RetentionInfo,
};
pub use read::Record;
pub use slice::{value_bytes, EncodedSlice, EntitySlice};
