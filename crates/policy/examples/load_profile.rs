//! Where a pack's load time goes: `load_profile POLICY_DIR SCHEMA [ROUNDS]`
//! times each stage of a full load with Cedar's public API (read and
//! prescan, schema, parse, re-identification, strict validation, the index),
//! the whole `policies::load`, and `policies::load_reusing` after one new
//! one-policy file and after one policy added to the last file (on a copy
//! of the directory), and prints the median of each (ms).

use std::str::FromStr;
use std::time::Instant;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use partnergate_policy::index::PolicyIndex;
use partnergate_policy::policies::{self, PackSource};
use partnergate_policy::prescan::PackLimits;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(schema_path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: load_profile POLICY_DIR SCHEMA [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let limits = PackLimits {
        max_policies: usize::MAX,
        ..PackLimits::default()
    };
    let source = PackSource::new(dir, Some(schema_path.into())).with_limits(limits);
    let stages = [
        "read+prescan",
        "schema",
        "parse",
        "identify",
        "validate",
        "index",
        "load (all)",
        "reuse: new file",
        "reuse: 1 edit",
        "reuse: nothing",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); stages.len()];
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..rounds {
        let t = Instant::now();
        let files = policies::policy_files(dir.as_ref()).expect("files");
        let texts: Vec<String> = files
            .iter()
            .map(|f| policies::read_checked(f, &limits).expect("read").0)
            .collect();
        times[0].push(ms(t));
        let t = Instant::now();
        let text = std::fs::read_to_string(schema_path).expect("schema");
        let schema = Schema::from_cedarschema_str(&text).expect("schema").0;
        times[1].push(ms(t));
        let t = Instant::now();
        let parsed: Vec<PolicySet> = texts
            .iter()
            .map(|t| PolicySet::from_str(t).expect("parse"))
            .collect();
        times[2].push(ms(t));
        let t = Instant::now();
        let mut set = PolicySet::new();
        let mut n = 0;
        for p in parsed.iter().flat_map(PolicySet::policies) {
            let id = p
                .annotation("id")
                .map_or_else(|| format!("policy{n}"), str::to_string);
            n += 1;
            set.add(p.new_id(PolicyId::new(id))).expect("add");
        }
        times[3].push(ms(t));
        let t = Instant::now();
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        assert!(result.validation_passed());
        times[4].push(ms(t));
        let t = Instant::now();
        let index = PolicyIndex::new(&set);
        assert_eq!(index.len(), n);
        times[5].push(ms(t));
        let t = Instant::now();
        let pack = policies::load(&source).expect("load");
        assert_eq!(pack.policies.len(), n);
        times[6].push(ms(t));
        // Incremental loads over a copy.
        let copy = tempfile::tempdir().expect("temp dir");
        for f in &files {
            std::fs::copy(f, copy.path().join(f.file_name().expect("name"))).expect("copy");
        }
        let source = PackSource::new(copy.path(), Some(schema_path.into())).with_limits(limits);
        let mut cache = policies::LoadCache::default();
        policies::load_reusing(&source, &mut cache).expect("load");
        let probe = "@id(\"probe\") forbid (principal == User::\"nobody\", action, resource);\n";
        std::fs::write(copy.path().join("zz-probe.cedar"), probe).expect("write");
        let t = Instant::now();
        policies::load_reusing(&source, &mut cache).expect("load");
        times[7].push(ms(t));
        let last = copy
            .path()
            .join(files.last().and_then(|f| f.file_name()).expect("name"));
        let text =
            std::fs::read_to_string(&last).expect("read") + &probe.replace("probe", "probe2");
        std::fs::write(&last, text).expect("write");
        let t = Instant::now();
        policies::load_reusing(&source, &mut cache).expect("load");
        times[8].push(ms(t));
        let t = Instant::now();
        policies::load_reusing(&source, &mut cache).expect("load");
        times[9].push(ms(t));
    }
    for (name, t) in stages.iter().zip(times) {
        println!("{name:>14}: {:8.1} ms", median(t));
    }
}
