//! Measurement helper for `scripts/bench.sh` (loopback only).
//!
//! - `reload_probe edits URL POLICY_FILE COUNT [PAUSE_MS [BASE_FILE]]`: COUNT
//!   times, write a new version of POLICY_FILE (temp file + rename, as editors
//!   save: one new policy, after BASE_FILE's text when given, e.g. an edit of
//!   one policy in a file of a thousand), then ask `POST URL/v1/is_authorized`
//!   in a loop until an answer carries a new `policy_version`. Prints the time
//!   from the write to that first answer (p50, p99, max) and how many answers
//!   were not 2xx. Each wait is bounded (20 s); an edit not served by then
//!   counts as missed.
//! - `reload_probe latency URL COUNT`: COUNT sequential decisions on one
//!   connection; prints the p50 and p99 round trip.
//!
//! Output lines start with `PROBE` for the script to parse.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BODY: &str = r#"{"principal":"User::\"owner\"","action":"Action::\"view_account\"","resource":"Account::\"acme\""}"#;
const WAIT: Duration = Duration::from_secs(20);

struct Client {
    http: reqwest::blocking::Client,
    url: String,
    non_2xx: u64,
    errors: u64,
}

impl Client {
    fn new(base: &str) -> Result<Self, String> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            http,
            url: format!("{}/v1/is_authorized", base.trim_end_matches('/')),
            non_2xx: 0,
            errors: 0,
        })
    }

    /// One decision; returns its policy version (None on any failure).
    fn version(&mut self) -> Option<String> {
        let Ok(resp) = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(BODY)
            .send()
        else {
            self.errors += 1;
            return None;
        };
        if !resp.status().is_success() {
            self.non_2xx += 1;
            return None;
        }
        let v: serde_json::Value = resp.json().ok()?;
        v.get("policy_version")
            .and_then(|s| s.as_str())
            .map(str::to_string)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn edits(
    base: &str,
    file: PathBuf,
    count: usize,
    pause: Duration,
    before: &str,
) -> Result<(), String> {
    let mut client = Client::new(base)?;
    let mut version = client
        .version()
        .ok_or("the sidecar does not answer POST /v1/is_authorized")?;
    let mut times = Vec::with_capacity(count);
    let mut missed = 0usize;
    let run = std::process::id();
    for i in 0..count {
        let text = format!(
            "{before}// Written by reload_probe (edit {i}).\n@id(\"bench-probe\")\n@description(\"A benchmark edit that never applies ({run}-{i})\")\nforbid (\n  principal == User::\"bench-nobody-{run}-{i}\",\n  action,\n  resource\n);\n"
        );
        write_atomically(&file, &text).map_err(|e| format!("{}: {e}", file.display()))?;
        let written = Instant::now();
        let mut served = None;
        while written.elapsed() < WAIT {
            if let Some(v) = client.version() {
                if v != version {
                    served = Some((written.elapsed(), v));
                    break;
                }
            }
        }
        match served {
            Some((t, v)) => {
                times.push(t.as_secs_f64() * 1e3);
                version = v;
            }
            None => missed += 1,
        }
        std::thread::sleep(pause);
    }
    let each: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "PROBE edits={count} served={} missed={missed} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} non_2xx={} errors={} times_ms={}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN),
        client.non_2xx,
        client.errors,
        each.join(",")
    );
    Ok(())
}

fn latency(base: &str, count: usize) -> Result<(), String> {
    let mut client = Client::new(base)?;
    for _ in 0..count.min(200) {
        client.version();
    }
    let mut times = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..count {
        let t = Instant::now();
        client.version().ok_or("a decision failed")?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if Instant::now() > deadline {
            break;
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "PROBE latency n={} p50_us={:.0} p99_us={:.0} non_2xx={}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        client.non_2xx
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: reload_probe edits URL POLICY_FILE COUNT [PAUSE_MS [BASE_FILE]] | reload_probe latency URL COUNT";
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["edits", url, file, count, rest @ ..] => {
            let pause = rest.first().and_then(|p| p.parse().ok()).unwrap_or(100);
            let before = match rest.get(1) {
                Some(b) => std::fs::read_to_string(b).map_err(|e| format!("{b}: {e}")),
                None => Ok(String::new()),
            };
            match (count.parse(), before) {
                (Ok(n), Ok(before)) => edits(
                    url,
                    PathBuf::from(file),
                    n,
                    Duration::from_millis(pause),
                    &before,
                ),
                (_, Err(e)) => Err(e),
                (Err(_), _) => Err(usage.to_string()),
            }
        }
        ["latency", url, count] => match count.parse() {
            Ok(n) => latency(url, n),
            Err(_) => Err(usage.to_string()),
        },
        _ => Err(usage.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reload_probe: {e}");
            ExitCode::FAILURE
        }
    }
}
