//! Where a start's time and memory go (issue #14 goal 4), over the store of
//! a data directory (e.g. `target/bench-run/big-data` after
//! `BENCH_ONLY=users scripts/bench.sh`). Each mode runs in its own process,
//! under the sidecar's allocator (mimalloc), and prints the time and the
//! resident memory (RSS) after each step:
//!
//! ```sh
//! cargo run --release --example start_profile -- DATA_DIR steps  # the steps of a start that parses every row
//! cargo run --release --example start_profile -- DATA_DIR open   # Directory::open as it is
//! cargo run --release --example start_profile -- DATA_DIR slices # then 10,000 users' slices, twice
//! ```
//!
//! `slices` times the slices of 10,000 users spread over the directory
//! (`User::"u<i>"`, as `scripts/bench.sh` names them): the first pass builds
//! each Cedar entity from its JSON, the second finds them built.
//!
//! `steps` reads every row, parses each JSON into a Cedar `Entity`,
//! serialises it again and collects its references (what `Directory::open`
//! did before the `refs` column), keeping the rows and the entities, so the
//! RSS after each step is what that step holds.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::{Entity, EntityUid};
use partnergate::directory::Directory;
use partnergate::store::sqlite::SqliteStore;
use partnergate::store::{references_in, EntityBackend};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn report(step: &str, started: Instant) {
    println!(
        "{step:<48} {:>8.2} s  RSS {:>6} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );
}

fn steps(store: &SqliteStore) {
    let t = Instant::now();
    let rows = store.load_all().expect("rows load");
    report(&format!("read {} rows (Vec<EntityRecord>)", rows.len()), t);
    let json_bytes: usize = rows.iter().map(|r| r.json.len()).sum();
    println!(
        "  JSON text: {} MiB, {} bytes a row on average",
        json_bytes >> 20,
        json_bytes / rows.len().max(1)
    );
    let t = Instant::now();
    let (mut parse, mut build) = (Duration::ZERO, Duration::ZERO);
    let mut entities: Vec<Entity> = Vec::with_capacity(rows.len());
    for r in &rows {
        let p = Instant::now();
        let value = serde_json::from_str::<serde_json::Value>(&r.json).expect("json");
        let b = Instant::now();
        entities.push(Entity::from_json_value(value, None).expect("entity"));
        parse += b - p;
        build += b.elapsed();
    }
    report("every row to a Cedar Entity (entities kept)", t);
    println!(
        "  of which JSON text to serde_json::Value {:.2} s, Value to Entity {:.2} s",
        parse.as_secs_f64(),
        build.as_secs_f64()
    );
    let t = Instant::now();
    let mut refs: Vec<Vec<EntityUid>> = Vec::with_capacity(entities.len());
    for e in &entities {
        let json = e.to_json_value().expect("serialises");
        refs.push(
            references_in(&json)
                .into_iter()
                .filter_map(|(ty, id)| {
                    EntityUid::from_json(serde_json::json!({"type": ty, "id": id})).ok()
                })
                .collect(),
        );
    }
    report("Entity back to JSON + references as EntityUid", t);
    println!(
        "  size_of: Entity {} B, EntityUid {} B",
        std::mem::size_of::<Entity>(),
        std::mem::size_of::<EntityUid>()
    );
    drop(rows);
    report(
        "rows dropped (entities and references kept)",
        Instant::now(),
    );
    drop(refs);
    report("references dropped (entities kept)", Instant::now());
}

fn slices(directory: &Directory) {
    let n = directory.len().max(1);
    let users: Vec<EntityUid> = (0..10_000)
        .map(|i| format!("User::\"u{}\"", (i * 97) % n).parse().expect("uid"))
        .collect();
    for pass in ["first (built from JSON)", "second (built before)"] {
        let t = Instant::now();
        let mut gathered = 0;
        for u in &users {
            gathered += directory
                .slice_versioned(&[u])
                .expect("slice")
                .entities
                .len();
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / users.len() as f64;
        report(
            &format!("10,000 slices, {pass}: {per:.1} us a slice, {gathered} entities"),
            t,
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: start_profile DATA_DIR steps|open|slices");
    let mode = args.next().unwrap_or_else(|| "open".into());
    report("process start", Instant::now());
    let t = Instant::now();
    let store = Arc::new(SqliteStore::open_in(Path::new(&dir)).expect("store opens"));
    report("open the store (and migrate it)", t);
    if mode == "steps" {
        steps(&store);
        return;
    }
    let t = Instant::now();
    let directory = Directory::open(store).expect("directory opens");
    report(
        &format!("Directory::open ({} entities)", directory.len()),
        t,
    );
    if mode == "slices" {
        slices(&directory);
    }
}
