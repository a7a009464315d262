//! The realistic workload of issue #14, for `scripts/perf.sh`: a directory
//! of users over accounts for the shipped schema, and a Zipf-distributed
//! stream of questions with a fraction of entity writes, as request lines
//! that `scripts/lib/replay.lua` makes wrk send in order. Also checks that
//! every peer answers every question of a stream as PartnerGate does.
//!
//! ```text
//! workload gen OUT_DIR [--users N] [--accounts N] [--companies N] [--requests N]
//!                      [--writes FRACTION] [--zipf S] [--batch N] [--seed N]
//! workload check STREAM REFERENCE_URL PEER_URL...
//! ```
//!
//! `gen` writes, in OUT_DIR:
//! - `entities.json`: Cedar entity JSON (accounts, partner companies,
//!   users) for `partnergate import` or `PUT /v1/entities`;
//! - `stream.txt`: one request a line, `METHOD<TAB>PATH<TAB>BODY`: single
//!   decisions (`POST /v1/is_authorized`) and writes (`PUT /v1/entities`,
//!   one user with `is_admin` toggled, the whole entity as the schema
//!   wants it);
//! - `batch.txt`: the same stream with each run of N (default 100)
//!   consecutive decisions as one `POST /v1/is_authorized/batch`, the writes
//!   in between kept in order;
//! - `reads.txt`: `stream.txt` without its writes;
//!
//! It also prints one `WORKLOAD key=value ...` line with the counts.
//!
//! The questions: a user drawn by Zipf (exponent S, default 1.0) over all
//! users (ranked in a seeded shuffled order), an action by Zipf over the
//! pack's 10 context-free actions, then a resource of that user: the own
//! account for account actions, a user of the own account (Zipf over the
//! account's users) for user actions. A write picks its user by the same
//! Zipf. Everything comes from one seeded SplitMix64: the same arguments
//! give the same files.
//!
//! `check` asks every distinct decision of STREAM (in stream order, writes
//! skipped) to the reference and to every peer, compares the decisions, and
//! fails (exit 1) on any difference or error, printing the first few.
//!
//! This owns the generator and the check; it must never know how any peer
//! decides (only the wire format). Loopback only; every request has a timeout.

#[path = "shared/checked_in_parallel.rs"]
mod checked_in_parallel;
use checked_in_parallel::checked_in_parallel;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

/// A small seeded generator (SplitMix64): no dependency, same stream everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Zipf over ranks 0..n by inverse CDF over precomputed weights 1/(k+1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cdf = (0..n.max(1))
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect();
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let x = rng.unit() * total;
        self.cdf
            .partition_point(|&c| c <= x)
            .min(self.cdf.len() - 1)
    }
}

/// The pack's context-free actions, most asked first; `true`: on an Account.
const ACTIONS: [(&str, bool); 10] = [
    ("view_account", true),
    ("edit_profile", false),
    ("view_employees", true),
    ("invite_user", true),
    ("dismiss_user", false),
    ("rehire_user", false),
    ("configure_account", true),
    ("grant_admin", false),
    ("revoke_admin", false),
    ("disable_two_factor", false),
];

struct User {
    account: usize,
    is_admin: bool,
    status: &'static str,
    two_factor: bool,
    /// (company, verified) for partner users.
    partner: Option<(usize, bool)>,
}

struct Options {
    users: usize,
    accounts: usize,
    companies: usize,
    requests: usize,
    writes: f64,
    zipf: f64,
    batch: usize,
    seed: u64,
}

fn user_json(i: usize, u: &User) -> Value {
    let mut attrs = json!({
        "email": format!("u{i}@a{}.example", u.account),
        "account": {"__entity": {"type": "Account", "id": format!("a{}", u.account)}},
        "is_admin": u.is_admin,
        "status": u.status,
        "two_factor": u.two_factor,
    });
    if let (Some((c, verified)), Some(obj)) = (u.partner, attrs.as_object_mut()) {
        obj.insert(
            "partner".into(),
            json!({"company": {"__entity": {"type": "PartnerCompany", "id": format!("c{c}")}},
                   "verified": verified,
                   "scopes": ["users", "settings", "integrations", "billing"]}),
        );
    }
    json!({"uid": {"type": "User", "id": format!("u{i}")},
           "parents": [{"type": "Account", "id": format!("a{}", u.account)}],
           "attrs": attrs})
}

fn make_users(o: &Options, rng: &mut Rng) -> Vec<User> {
    (0..o.users)
        .map(|_| {
            let status = match rng.below(100) {
                0..=2 => "invited",
                3..=5 => "dismissed",
                _ => "active",
            };
            let partner = rng
                .chance(0.04)
                .then(|| (rng.below(o.companies), rng.chance(0.9)));
            User {
                account: rng.below(o.accounts),
                is_admin: rng.chance(0.05),
                status,
                two_factor: rng.chance(0.7),
                partner,
            }
        })
        .collect()
}

fn write_entities(path: &Path, o: &Options, users: &[User], rng: &mut Rng) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "[")?;
    for a in 0..o.accounts {
        let e = json!({"uid": {"type": "Account", "id": format!("a{a}")},
                       "attrs": {"name": format!("Account {a}")}, "parents": []});
        writeln!(out, "{e},")?;
    }
    for c in 0..o.companies {
        let status = if rng.chance(0.6) { "gold" } else { "silver" };
        let e = json!({"uid": {"type": "PartnerCompany", "id": format!("c{c}")},
                       "attrs": {"name": format!("Company {c}"), "status": status,
                                 "certified": rng.chance(0.9)}, "parents": []});
        writeln!(out, "{e},")?;
    }
    for (i, u) in users.iter().enumerate() {
        let sep = if i + 1 < users.len() { "," } else { "" };
        writeln!(out, "{}{sep}", user_json(i, u))?;
    }
    writeln!(out, "]")?;
    out.flush()
}

/// One line of the stream: a decision (its body) or a write (its body).
enum Line {
    Read(String),
    Write(String),
}

fn question(p: usize, action: &str, resource: &str) -> String {
    let q = json!({"principal": format!("User::\"u{p}\""),
                   "action": format!("Action::\"{action}\""), "resource": resource});
    q.to_string()
}

fn make_stream(o: &Options, users: &mut [User], rng: &mut Rng) -> Vec<Line> {
    let mut by_account: Vec<Vec<usize>> = vec![Vec::new(); o.accounts];
    for (i, u) in users.iter().enumerate() {
        by_account[u.account].push(i);
    }
    // Popularity ranks: a seeded shuffle (Fisher-Yates) of the users.
    let mut rank: Vec<usize> = (0..users.len()).collect();
    for i in (1..rank.len()).rev() {
        rank.swap(i, rng.below(i + 1));
    }
    let who = Zipf::new(users.len(), o.zipf);
    let what = Zipf::new(ACTIONS.len(), o.zipf);
    let mut within: HashMap<usize, Zipf> = HashMap::new();
    let mut lines = Vec::with_capacity(o.requests);
    for _ in 0..o.requests {
        let p = rank[who.sample(rng)];
        if rng.chance(o.writes) {
            users[p].is_admin = !users[p].is_admin;
            lines.push(Line::Write(format!("[{}]", user_json(p, &users[p]))));
            continue;
        }
        let (action, on_account) = ACTIONS[what.sample(rng)];
        let account = users[p].account;
        let resource = if on_account {
            format!("Account::\"a{account}\"")
        } else {
            let members = &by_account[account];
            let z = within
                .entry(members.len())
                .or_insert_with(|| Zipf::new(members.len(), o.zipf));
            // The asker's own entry first, then the account's users in order.
            let k = z.sample(rng);
            let pos = members.iter().position(|&m| m == p).unwrap_or(0);
            format!("User::\"u{}\"", members[(pos + k) % members.len()])
        };
        lines.push(Line::Read(question(p, action, &resource)));
    }
    lines
}

fn write_lines(path: &Path, lines: &[Line], reads_only: bool) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for l in lines {
        match l {
            Line::Read(b) => writeln!(out, "POST\t/v1/is_authorized\t{b}")?,
            Line::Write(b) if !reads_only => writeln!(out, "PUT\t/v1/entities\t{b}")?,
            Line::Write(_) => {}
        }
    }
    out.flush()
}

/// The batch stream; returns (lines, decisions) written.
fn write_batches(path: &Path, lines: &[Line], size: usize) -> std::io::Result<(usize, usize)> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let (mut written, mut decisions) = (0, 0);
    let mut pending: Vec<&str> = Vec::new();
    for l in lines {
        match l {
            Line::Read(b) => pending.push(b),
            Line::Write(b) => {
                writeln!(out, "PUT\t/v1/entities\t{b}")?;
                written += 1;
            }
        }
        if pending.len() == size {
            writeln!(
                out,
                "POST\t/v1/is_authorized/batch\t{{\"requests\":[{}]}}",
                pending.join(",")
            )?;
            (written, decisions) = (written + 1, decisions + size);
            pending.clear();
        }
    }
    out.flush()?;
    Ok((written, decisions))
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        users: 100_000,
        accounts: 3_000,
        companies: 50,
        requests: 200_000,
        writes: 0.01,
        zipf: 1.0,
        batch: 100,
        seed: 14,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--users" => o.users = value.parse().map_err(|e| bad(&e))?,
            "--accounts" => o.accounts = value.parse().map_err(|e| bad(&e))?,
            "--companies" => o.companies = value.parse().map_err(|e| bad(&e))?,
            "--requests" => o.requests = value.parse().map_err(|e| bad(&e))?,
            "--writes" => o.writes = value.parse().map_err(|e| bad(&e))?,
            "--zipf" => o.zipf = value.parse().map_err(|e| bad(&e))?,
            "--batch" => o.batch = value.parse().map_err(|e| bad(&e))?,
            "--seed" => o.seed = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.users == 0 || o.accounts == 0 || o.companies == 0 || o.batch == 0 {
        return Err("--users, --accounts, --companies and --batch must be positive".into());
    }
    Ok(o)
}

fn generate(dir: &str, args: &[String]) -> Result<(), String> {
    let o = parse_options(args)?;
    let dir = Path::new(dir);
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut rng = Rng(o.seed);
    let mut users = make_users(&o, &mut rng);
    write_entities(&dir.join("entities.json"), &o, &users, &mut rng).map_err(io)?;
    let lines = make_stream(&o, &mut users, &mut rng);
    write_lines(&dir.join("stream.txt"), &lines, false).map_err(io)?;
    write_lines(&dir.join("reads.txt"), &lines, true).map_err(io)?;
    let (batch_lines, batch_decisions) =
        write_batches(&dir.join("batch.txt"), &lines, o.batch).map_err(io)?;
    let reads: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Read(b) => Some(b.as_str()),
            Line::Write(_) => None,
        })
        .collect();
    let distinct = reads.iter().collect::<HashSet<_>>().len();
    println!(
        "WORKLOAD users={} accounts={} requests={} reads={} writes={} distinct={} batch_lines={batch_lines} batch_decisions={batch_decisions} zipf={} seed={}",
        o.users, o.accounts, lines.len(), reads.len(), lines.len() - reads.len(), distinct, o.zipf, o.seed
    );
    Ok(())
}

fn ask(http: &reqwest::blocking::Client, base: &str, body: &str) -> Result<String, String> {
    let url = format!("{}/v1/is_authorized", base.trim_end_matches('/'));
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    let v: Value = r.json().map_err(|e| format!("POST {url}: {e}"))?;
    match v.get("decision").and_then(Value::as_str) {
        Some(d) if status.is_success() => Ok(d.to_string()),
        _ => Err(format!("POST {url}: {status}: {v}")),
    }
}

/// Ask `questions` to the reference and every peer; (allows, differences, report).
fn check_some(
    questions: &[&str],
    reference: &str,
    peers: &[String],
) -> Result<(usize, usize, String), String> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let (mut allows, mut differ, mut report) = (0, 0, String::new());
    for body in questions {
        let want = ask(&http, reference, body)?;
        allows += usize::from(want == "Allow");
        for peer in peers {
            let got = ask(&http, peer, body)?;
            if got != want {
                differ += 1;
                if differ <= 5 {
                    let _ = writeln!(report, "  {body}: {reference} {want}, {peer} {got}");
                }
            }
        }
    }
    Ok((allows, differ, report))
}

fn check(stream: &str, reference: &str, peers: &[String]) -> Result<(), String> {
    let text = std::fs::read_to_string(stream).map_err(|e| format!("{stream}: {e}"))?;
    let mut seen = HashSet::new();
    let mut questions = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        if let (Some("POST"), Some("/v1/is_authorized"), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        {
            if seen.insert(body) {
                questions.push(body);
            }
        }
    }
    let (allows, differ, report) =
        checked_in_parallel(&questions, |part| check_some(part, reference, peers))?;
    println!(
        "CHECK questions={} allows={allows} peers={} differences={differ}",
        questions.len(),
        peers.len()
    );
    if differ > 0 {
        return Err(format!(
            "{differ} answers differ from {reference} (first few per thread):\n{report}"
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir, rest @ ..] if cmd == "gen" => generate(dir, rest),
        [cmd, stream, reference, peers @ ..] if cmd == "check" && !peers.is_empty() => {
            check(stream, reference, peers)
        }
        _ => Err("usage: workload gen OUT_DIR [options] | workload check STREAM REFERENCE_URL PEER_URL...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("workload: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Options {
        let args: Vec<String> = "--users 2000 --accounts 60 --requests 20000 --writes 0.05"
            .split(' ')
            .map(String::from)
            .collect();
        parse_options(&args).expect("options")
    }

    fn bodies(o: &Options, seed: u64) -> Vec<String> {
        let mut rng = Rng(seed);
        let mut users = make_users(o, &mut rng);
        make_stream(o, &mut users, &mut rng)
            .into_iter()
            .map(|l| match l {
                Line::Read(b) => b,
                Line::Write(b) => format!("W{b}"),
            })
            .collect()
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let o = small();
        assert_eq!(bodies(&o, 1), bodies(&o, 1));
        assert_ne!(bodies(&o, 1), bodies(&o, 2));
    }

    #[test]
    fn zipf_rank_frequencies_fall_like_one_over_rank() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng(7);
        let mut count = vec![0u32; 1000];
        for _ in 0..200_000 {
            count[z.sample(&mut rng)] += 1;
        }
        // Expected shares: rank 1 is 1/H(1000) ~ 13.4%, rank 2 half of it, rank 10 a tenth.
        let share = |k: usize| f64::from(count[k]) / 200_000.0;
        assert!((share(0) - 0.134).abs() < 0.01, "{}", share(0));
        assert!((share(0) / share(1) - 2.0).abs() < 0.2);
        assert!((share(0) / share(9) - 10.0).abs() < 1.5);
    }

    #[test]
    fn stream_has_the_write_fraction_and_only_own_account_resources() {
        let o = small();
        let lines = bodies(&o, o.seed);
        let writes = lines.iter().filter(|b| b.starts_with('W')).count();
        let frac = writes as f64 / lines.len() as f64;
        assert!((frac - 0.05).abs() < 0.01, "{frac}");
        let mut rng = Rng(o.seed);
        let users = make_users(&o, &mut rng);
        for b in lines.iter().filter(|b| !b.starts_with('W')).take(2000) {
            let q: Value = serde_json::from_str(b).expect("JSON");
            let id = |f: &str| -> String {
                let s = q[f].as_str().expect("uid string");
                s.split('"').nth(1).expect("quoted id").to_string()
            };
            let p: usize = id("principal")[1..].parse().expect("u<n>");
            let r = id("resource");
            let account = match r.strip_prefix('a') {
                Some(a) => a.parse::<usize>().expect("a<n>"),
                None => users[r[1..].parse::<usize>().expect("u<n>")].account,
            };
            assert_eq!(account, users[p].account, "{b}");
        }
    }
}
