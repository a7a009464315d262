//! The reliability suite: each test drives a real `partnergate serve`
//! process (or the real CLI) the way an attacker or an unlucky operator
//! would — hostile policy files, huge and slow requests, a full disk,
//! forged request data, idle sockets, timed-out writes, a large directory —
//! and asserts that the sidecar keeps serving, keeps the last good set,
//! loses nothing silently and answers with a clear error.
//!
//! Every test is bounded in time and count, talks to loopback only and
//! stops every process it starts (the `Server` guard kills on drop).
//! One module per defect class of issue #12.

#[path = "../common/mod.rs"]
mod common;

mod audit_disk;
mod audit_flood;
mod clock_storms;
mod crash_changes;
mod forged_proxy_headers;
mod http_limits;
mod listings;
mod policy_files;
mod request_entities;
mod request_limits;
mod writes;
