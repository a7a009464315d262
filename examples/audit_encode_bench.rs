//! Measures the writer's per-record CPU cost without threads or disk:
//! redaction, encoding, canonical hashing of the `audit stress` sample
//! record, single-threaded.
//!
//!     cargo run --release --example audit_encode_bench -- 100000

use std::time::Instant;

use partnergate::audit::cli::sample_decision;
use partnergate::audit::record::{body, seal_into, Event, GENESIS_HASH};
use partnergate::audit::Redaction;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let events: Vec<Event> = (0..n).map(|i| sample_decision(i).into()).collect();
    let redaction = Redaction {
        context_keys: vec![],
        entity_attrs: vec!["email".into()],
    };
    let mut prev = GENESIS_HASH.to_string();
    let mut out = Vec::with_capacity(4096);
    let mut bytes = 0usize;
    let start = Instant::now();
    for (i, mut ev) in events.into_iter().enumerate() {
        redaction.apply(&mut ev);
        let b = body(ev, "2026-11-29T07:00:00.000000Z", None);
        out.clear();
        prev = seal_into(b, i as u64 + 1, &prev, &mut out);
        bytes += out.len() + 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "encoded and hashed {n} records ({:.0} bytes each) in {secs:.3} s: {:.0} records/s, {:.2} µs/record",
        bytes as f64 / n as f64,
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}
