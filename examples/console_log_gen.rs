//! Write a large decision log for the console's benchmark
//! (`scripts/console_bench.sh`): real records through `AuditLog` (chained,
//! rotated at 256 MiB as `serve` does), varied like a busy sidecar's —
//! 1,000 principals, 10 actions, 100 accounts, one decision in four a Deny,
//! a request id on each — until the log (all its files) holds `BYTES`.
//!
//! Usage: cargo run --release --example console_log_gen -- PATH [BYTES]

use std::sync::Arc;

use partnergate::audit::{chain, AuditConfig, AuditLog, DecisionEvent, EntitySlice};
use partnergate::engine::{Decision, Effect, Reason};
use serde_json::json;

const ACTIONS: [&str; 10] = [
    "view_account",
    "configure_account",
    "invite_user",
    "dismiss_user",
    "edit_profile",
    "grant_admin",
    "view_employees",
    "give_partner_access",
    "switch_off_two_factor",
    "manage_billing",
];

fn log_bytes(path: &std::path::Path) -> u64 {
    chain::chain_files(path)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("usage: console_log_gen PATH [BYTES]"));
    let target: u64 = args
        .next()
        .map_or(1 << 30, |b| b.parse().expect("BYTES is a number"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("the log's directory");
    }
    let (log, _) = AuditLog::open(AuditConfig::file(&path)).expect("open the log");
    // One slice per account: inline once per file, then named by hash.
    let slices: Vec<Arc<EntitySlice>> = (0..100)
        .map(|a| {
            EntitySlice::new(
                json!([{"uid": {"type": "Account", "id": format!("account-{a}")},
                "attrs": {"name": format!("Account {a}")}, "parents": []}]),
            )
        })
        .collect();
    let mut i: u64 = 0;
    let mut written = log_bytes(&path);
    while written < target {
        for _ in 0..10_000 {
            let user = i.wrapping_mul(2_654_435_761) % 1000;
            let account = user % 100;
            let action = ACTIONS[usize::try_from(i % 10).unwrap_or(0)];
            let deny = i % 4 == 3;
            let decision = Decision {
                decision: if deny { Effect::Deny } else { Effect::Allow },
                reasons: if deny {
                    Vec::new()
                } else {
                    vec![Reason {
                        id: "admin-administer-account".into(),
                        description: Some("An administrator administers the own account".into()),
                    }]
                },
                errors: Vec::new(),
                policy_version: "sha256:7c76718ce3625903".into(),
            };
            let ev = DecisionEvent::new(
                format!("User::\"user-{user}\""),
                format!("Action::\"{action}\""),
                format!("Account::\"account-{account}\""),
                slices[usize::try_from(account).unwrap_or(0)].clone(),
                decision,
            )
            .with_request_id(Some(format!("req-{i}")))
            .with_latency_us(40 + i % 50);
            log.log(ev);
            i += 1;
        }
        log.flush();
        written = log_bytes(&path);
    }
    log.shutdown();
    println!(
        "{} records written; the log holds {} bytes",
        i,
        log_bytes(&path)
    );
}
