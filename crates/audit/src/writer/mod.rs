//! The writer: [`AuditLog`], a cheap cloneable handle whose [`AuditLog::log`]
//! only enqueues (no disk I/O on the caller's path) into a queue bounded by
//! count and by bytes, drained by ONE writer thread, which redacts, chains
//! (seq, prev_hash, hash), batches, writes, fsyncs per [`SyncMode`], rotates
//! by size and applies the retention rule to the rotated files.
//!
//! Retention: when rotation leaves more rotated files than the rule keeps,
//! the writer first appends a chained `kind: "retention"` record naming the
//! files it will delete (and their seq ranges) and the first record kept
//! (its seq and prev_hash), fsyncs it, and only then deletes them; `verify`
//! accepts a chain that starts at a record some retention record names.
//!
//! Opening a file log takes an exclusive lock (`PATH.lock`), finds the last
//! record of the chain (in `PATH`, else in the newest rotated file) and
//! continues its `seq` and hash. A torn last line (a crash mid-write) is cut
//! away and a `kind: "repair"` record describing the cut is appended first,
//! chained to the last intact record.
//!
//! Submodules: `config` ([`AuditConfig`]), `status` ([`AuditStatus`]),
//! `ticket` ([`Durable`]), `queue` (the messages and the byte bound),
//! `handle` ([`AuditLog`]), `thread` (the writer thread), `failing` (lost
//! records, backoff, gap records), `open` ([`OpenInfo`], lock and repair),
//! `retention` and `ts` (timestamps).

mod config;
mod failing;
mod handle;
mod open;
mod queue;
mod retention;
mod status;
mod thread;
mod ticket;
mod ts;

pub use config::{
    default_path, AuditConfig, OnFull, Sink, SyncMode, DEFAULT_LINGER, DEFAULT_MAX_FILES,
    DEFAULT_PATH, DEFAULT_QUEUE_BYTES, SYNC_INTERVAL,
};
pub use handle::AuditLog;
pub use open::OpenInfo;
pub use status::{AuditState, AuditStatus};
pub use ticket::Durable;
pub use ts::format_ts;

#[cfg(test)]
mod tests;
