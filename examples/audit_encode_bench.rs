//! Measures the writer's per-record CPU cost without threads or disk:
//! redaction, encoding and hashing of the `audit stress` sample records
//! (1,000 users, each user's entity slice shared between its decisions as
//! the sidecar shares a cached slice), single-threaded, exactly as the
//! writer does it: a slice is encoded once, carried inline on its first
//! record and named by `entities_hash` after.
//!
//!     cargo run --release --example audit_encode_bench -- 100000

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use partnergate::audit::cli::{sample_decision, sample_slice, SAMPLE_USERS};
use partnergate::audit::record::{
    encode_event, EntitySlice, Event, Link, RecordEncoder, SliceField, GENESIS_HASH,
};
use partnergate::audit::Redaction;

// The allocator the sidecar runs with (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let slices: Vec<Arc<EntitySlice>> = (0..SAMPLE_USERS).map(sample_slice).collect();
    let events: Vec<Event> = (0..n).map(|i| sample_decision(i, &slices).into()).collect();
    let redaction = Redaction {
        context_keys: vec![],
        entity_attrs: vec!["email".into()],
    };
    let mut prev = GENESIS_HASH.to_string();
    let mut enc = RecordEncoder::default();
    let mut in_file = HashSet::new();
    let mut bytes = 0usize;
    let start = Instant::now();
    for (i, mut ev) in events.into_iter().enumerate() {
        ev.redact(&redaction);
        let Event::Decision(d) = &ev else { continue };
        let slice = d.entities.encoded(&redaction, 1);
        let field = if in_file.insert(slice.hash.clone()) {
            SliceField::Inline(&slice)
        } else {
            SliceField::Reference(&slice)
        };
        let link = Link {
            seq: i as u64 + 1,
            prev_hash: &prev,
        };
        let hash = encode_event(
            &mut enc,
            &ev,
            "2026-11-29T07:00:00.000000Z",
            None,
            link,
            Some(field),
        );
        prev.clear();
        prev.push_str(hash);
        bytes += enc.line().len() + 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "encoded and hashed {n} records ({:.0} bytes each on average; {} slices inline) in {secs:.3} s: {:.0} records/s, {:.2} µs/record",
        bytes as f64 / n as f64,
        in_file.len(),
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}
