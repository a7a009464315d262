//! Measures PartnerGate replicas on one PostgreSQL database: partner
//! invitations per second through 1 and through 2 replicas, measured in
//! alternating rounds (1, 2, 1, 2, ...; a fresh schema each), every account
//! with its own partner company (no two accounts' writes share a lock), the
//! medians and their ratio against the goal of 1.8x; the time a partner
//! invitation committed through one replica takes to be visible on the
//! other while both replicas take writes at once (p50, p99, against the
//! goal p99 <= 50 ms); and the time an entity change made through replica A
//! takes to reach an otherwise idle replica B. Each round prints the CPU
//! seconds each replica and PostgreSQL's backends used, per invitation.
//!
//! ```sh
//! cargo build --release && cargo run --release --example replica_bench -- [ACCOUNTS] [SAMPLES] [ROUNDS]
//! ```
//! Uses `PARTNERGATE_TEST_PG` (default postgres://postgres@127.0.0.1:5432/test)
//! and the binary in `target/release` (or `PARTNERGATE_BIN`). Each run works in
//! a fresh schema, dropped at the end.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Replica {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str, url: &str, name: &str) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--store",
            url,
            "--replica-id",
            name,
        ])
        .args(["--audit-log", "off", "--no-watch"])
        .arg("--policies")
        .arg(format!("{repo}/policies"))
        .arg("--schema")
        .arg(format!("{repo}/schemas/partnergate.cedarschema"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .trim_start_matches("partnergate listening on ")
        .to_string();
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    Replica {
        child,
        base,
        token: token.trim().into(),
        _dir: dir,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let accounts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let samples: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let bin = std::env::var("PARTNERGATE_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/partnergate", env!("CARGO_MANIFEST_DIR")));
    let base_url = std::env::var("PARTNERGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let bench = Bench {
        bin,
        base_url,
        accounts,
        client: reqwest::blocking::Client::new(),
    };
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut lags = Vec::new();
    for round in 0..rounds {
        for replicas in [1usize, 2] {
            let lag_samples = if round == 0 && replicas == 2 {
                samples
            } else {
                0
            };
            let m = bench.measure(replicas, &format!("{round}_{replicas}"), lag_samples);
            println!(
                "round={round} replicas={replicas} invitations_per_second={:.0} cpu_ms_per_invitation: replicas {} postgres {:.2} client {:.2} (machine: {:.2} of {} cores busy)",
                m.rate,
                m.replica_cpu_ms.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join("+"),
                m.pg_cpu_ms,
                m.client_cpu_ms,
                m.busy_cores,
                cores()
            );
            rates[replicas - 1].push(m.rate);
            lags.extend(m.lags);
        }
    }
    let one = median(&mut rates[0]);
    let two = median(&mut rates[1]);
    let ratio = two / one;
    println!(
        "median invitations/s: 1 replica {one:.0}, 2 replicas {two:.0}; ratio {ratio:.2}x; goal >= 1.8x {}",
        if ratio >= 1.8 { "met" } else { "MISSED" }
    );
    if !lags.is_empty() {
        let (mut after, mut whole): (Vec<Duration>, Vec<Duration>) = lags.into_iter().unzip();
        after.sort();
        whole.sort();
        let p99 = percentile(&after, 0.99);
        println!(
            "propagation under concurrent writes (both replicas writing): samples={} commit->visible p50_ms={:.1} p99_ms={:.1} max_ms={:.1}; with the write itself p50_ms={:.1} p99_ms={:.1}; goal p99 <= 50 ms {}",
            after.len(),
            percentile(&after, 0.5).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            after[after.len() - 1].as_secs_f64() * 1e3,
            percentile(&whole, 0.5).as_secs_f64() * 1e3,
            percentile(&whole, 0.99).as_secs_f64() * 1e3,
            if p99 <= Duration::from_millis(50) { "met" } else { "MISSED" }
        );
    }
}

/// What one round measured.
struct Measured {
    rate: f64,
    /// CPU milliseconds per invitation of each replica process.
    replica_cpu_ms: Vec<f64>,
    /// CPU milliseconds per invitation of every PostgreSQL process.
    pg_cpu_ms: f64,
    /// CPU milliseconds per invitation of this load generator (the probe included).
    client_cpu_ms: f64,
    /// Cores busy on the whole machine during the round (all processes).
    busy_cores: f64,
    /// Propagation samples: (response -> visible, request -> visible).
    lags: Vec<(Duration, Duration)>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU time (user + system) of process `pid` so far, from /proc.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU time of every PostgreSQL process (`postgres` by name) so far.
fn cpu_of_postgres() -> Duration {
    let mut total = Duration::ZERO;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += cpu_of(pid);
        }
    }
    total
}

/// Busy CPU time of the whole machine so far (every core), from /proc/stat.
fn cpu_of_machine() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Duration::from_millis(busy * 10)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Bench {
    bin: String,
    base_url: String,
    accounts: usize,
    client: reqwest::blocking::Client,
}

impl Bench {
    /// Invitations per second through `replicas` replicas on a fresh schema
    /// (`tag` names it), with the CPU each side used; with `lag_samples`,
    /// also the propagation between the replicas while both take writes,
    /// then A -> B alone.
    fn measure(&self, replicas: usize, tag: &str, lag_samples: usize) -> Measured {
        let (accounts, client) = (self.accounts, &self.client);
        let schema = format!("bench_{}_{tag}", std::process::id());
        let mut pg = postgres::Client::connect(&self.base_url, postgres::NoTls).unwrap();
        pg.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        let url = format!("{}?options=-csearch_path%3D{schema}", self.base_url);
        let nodes: Vec<Replica> = (0..replicas)
            .map(|i| start(&self.bin, &url, &format!("r{i}")))
            .collect();
        let a = &nodes[0];
        // Accounts with an administrator each; after them, the accounts the
        // propagation probe invites into (3 invitations each).
        let probes = lag_samples.div_ceil(3);
        let mut entities = Vec::new();
        for i in 0..accounts + probes {
            entities.push(json!({"uid": {"type": "Account", "id": format!("acct{i}")}, "attrs": {}, "parents": []}));
            entities.push(json!({"uid": {"type": "User", "id": format!("admin{i}")},
                "parents": [{"type": "Account", "id": format!("acct{i}")}],
                "attrs": {"email": format!("admin@acct{i}.example"), "account": {"__entity": {"type": "Account", "id": format!("acct{i}")}},
                          "is_admin": true, "status": "active", "two_factor": true}}));
        }
        let put = |r: &Replica, path: &str, body: &Value| {
            let st = client
                .put(format!("{}{path}", r.base))
                .bearer_auth(&r.token)
                .json(body)
                .send()
                .unwrap()
                .status();
            assert!(st.is_success(), "{path}: {st}");
        };
        put(a, "/v1/entities", &Value::Array(entities));
        // Each account's partners come from a Gold company of its own.
        for i in 0..accounts + probes {
            let emails: Vec<String> = (0..3)
                .map(|k| format!("p{}@gold{i}.example", i * 3 + k))
                .collect();
            put(
                a,
                &format!("/v1/partner-companies/gold{i}"),
                &json!({"name": format!("Gold {i}"), "status": "gold", "certified": true, "emails": emails}),
            );
        }
        // Let every replica see the entities before timing.
        let last = format!(
            "{}/v1/entities/PartnerCompany/gold{}",
            nodes[replicas - 1].base,
            accounts + probes - 1
        );
        let t0 = Instant::now();
        while client.get(&last).send().unwrap().status() != 200 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "replica never caught up"
            );
        }

        // Invitations: 3 per account, 8 client threads, spread over the replicas.
        let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
        let cpu_before: Vec<Duration> = pids.iter().map(|p| cpu_of(*p)).collect();
        let (pg_before, machine_before) = (cpu_of_postgres(), cpu_of_machine());
        let client_before = cpu_of(std::process::id());
        let started = Instant::now();
        let ok = std::sync::atomic::AtomicUsize::new(0);
        let loading = std::sync::atomic::AtomicUsize::new(8);
        let mut lags = Vec::new();
        std::thread::scope(|s| {
            if lag_samples > 0 {
                let (nodes, loading, lags) = (&nodes, &loading, &mut lags);
                s.spawn(move || {
                    *lags = self.probe(nodes, accounts, lag_samples, loading);
                });
            }
            for t in 0..8 {
                let loading = &loading;
                let (nodes, client, ok) = (&nodes, &client, &ok);
                s.spawn(move || {
                    for i in (t..accounts * 3).step_by(8) {
                        let r = &nodes[i % replicas];
                        let resp = client
                            .post(format!("{}/v1/accounts/acct{}/partners", r.base, i / 3))
                            .bearer_auth(&r.token)
                            .json(&json!({"actor": format!("admin{}", i / 3), "email": format!("p{i}@gold{}.example", i / 3)}))
                            .send()
                            .unwrap();
                        if resp.status() == 201 {
                            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    loading.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                });
            }
        });
        let secs = started.elapsed().as_secs_f64();
        let n = ok.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n, accounts * 3, "every invitation must succeed");
        let per = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
        let replica_cpu_ms = pids
            .iter()
            .zip(&cpu_before)
            .map(|(p, b)| per(cpu_of(*p).saturating_sub(*b)))
            .collect();
        let pg_cpu_ms = per(cpu_of_postgres().saturating_sub(pg_before));
        let client_cpu_ms = per(cpu_of(std::process::id()).saturating_sub(client_before));
        let busy_cores = cpu_of_machine()
            .saturating_sub(machine_before)
            .as_secs_f64()
            / secs;
        if lag_samples > 0 {
            self.propagation(&nodes, lag_samples, put);
        }
        drop(nodes);
        pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
        Measured {
            rate: n as f64 / secs,
            replica_cpu_ms,
            pg_cpu_ms,
            client_cpu_ms,
            busy_cores,
            lags,
        }
    }

    /// While the load's threads run (`loading` of them left): invitations
    /// into the probe accounts (after the first `accounts`), through each
    /// replica in turn, each followed by reading the invited user from the
    /// other replica until it is there. Each sample: from the response
    /// (the write committed) to visible, and from the request to visible.
    fn probe(
        &self,
        nodes: &[Replica],
        accounts: usize,
        samples: usize,
        loading: &std::sync::atomic::AtomicUsize,
    ) -> Vec<(Duration, Duration)> {
        let client = &self.client;
        let mut lags = Vec::with_capacity(samples);
        for k in 0..samples {
            if loading.load(std::sync::atomic::Ordering::Acquire) == 0 {
                break;
            }
            let (w, r) = (&nodes[k % 2], &nodes[(k + 1) % 2]);
            let account = accounts + k / 3;
            let sent = Instant::now();
            let resp = client
                .post(format!("{}/v1/accounts/acct{account}/partners", w.base))
                .bearer_auth(&w.token)
                .json(&json!({"actor": format!("admin{account}"), "email": format!("p{}@gold{account}.example", account * 3 + k % 3)}))
                .send()
                .unwrap();
            assert_eq!(resp.status(), 201, "probe invitation");
            let committed = Instant::now();
            let v: Value = resp.json().unwrap();
            let id = v["user"]["id"]
                .as_str()
                .or_else(|| v["id"].as_str())
                .unwrap_or_else(|| panic!("no user id in {v}"))
                .to_string();
            let url = format!("{}/v1/entities/User/{id}", r.base);
            while client.get(&url).send().unwrap().status() != 200 {
                assert!(
                    committed.elapsed() < Duration::from_secs(5),
                    "the invitation never arrived"
                );
            }
            let seen = Instant::now();
            lags.push((seen - committed, seen - sent));
        }
        lags
    }

    /// The time an entity change through replica A takes to be read from B.
    fn propagation(&self, nodes: &[Replica], samples: usize, put: impl Fn(&Replica, &str, &Value)) {
        let (a, b, client) = (&nodes[0], &nodes[1], &self.client);
        let mut lags = Vec::with_capacity(samples);
        for k in 0..samples {
            let status = if k % 2 == 0 { "invited" } else { "active" };
            let user = json!([{"uid": {"type": "User", "id": "admin0"},
                "parents": [{"type": "Account", "id": "acct0"}],
                "attrs": {"email": "admin@acct0.example", "account": {"__entity": {"type": "Account", "id": "acct0"}},
                          "is_admin": true, "status": status, "two_factor": true}}]);
            let t = Instant::now();
            put(a, "/v1/entities", &user);
            loop {
                let v: Value = client
                    .get(format!("{}/v1/entities/User/admin0", b.base))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                if v["attrs"]["status"] == status {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(5), "change never arrived");
            }
            lags.push(t.elapsed());
        }
        lags.sort();
        println!(
            "propagation samples={samples} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} (includes the write itself)",
            percentile(&lags, 0.5).as_secs_f64() * 1e3,
            percentile(&lags, 0.99).as_secs_f64() * 1e3,
            lags[lags.len() - 1].as_secs_f64() * 1e3
        );
    }
}
