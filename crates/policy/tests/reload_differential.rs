//! Incremental loads against full loads: a generated pack of many files
//! goes through random edits (add, remove, modify, rename, move a policy
//! between files, whitespace only, bad syntax, failed validation, duplicate
//! ids, a file replaced by a directory or a symlink, schema edits), and
//! after each one `load_reusing` with the cache kept across the edits must
//! give what a fresh `load` gives: the same version, policies (ids, files,
//! lines, texts, order), warnings, clock facts and index candidates, or the
//! same error with the same problems. Seeded, so a failure reproduces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Context, Entities, EntityUid, Request};
use partnergate_policy::policies::{load, load_reusing, LoadCache, PackSource, PolicyPack};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SCHEMA: &str = r#"
entity Group;
entity User in [Group] { level: Long, name: String, since: datetime };
entity Account;
entity Doc in [Account] { account: Account, secret: Bool };
action read, write appliesTo { principal: User, resource: Doc, context: { now: datetime } };
action admin appliesTo { principal: User, resource: [Doc, Account] };
"#;

/// The same schema with one more action (an edit that changes the schema
/// but keeps every policy valid).
const SCHEMA_MORE: &str = r#"
entity Group;
entity User in [Group] { level: Long, name: String, since: datetime };
entity Account;
entity Doc in [Account] { account: Account, secret: Bool };
action read, write appliesTo { principal: User, resource: Doc, context: { now: datetime } };
action admin appliesTo { principal: User, resource: [Doc, Account] };
action audit appliesTo { principal: User, resource: Doc };
"#;

fn pick<'a>(rng: &mut StdRng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

/// One policy: valid, unless `bad` (then it fails validation).
fn policy(rng: &mut StdRng, bad: bool) -> String {
    let id = match rng.random_range(0..40) {
        // No `@id`: Cedar's `policyN`, counted across files.
        0..=15 => String::new(),
        // A small pool of ids, so duplicates happen.
        16 => format!("@id(\"shared-{}\")\n", rng.random_range(0..3)),
        _ => format!("@id(\"p{}\")\n", rng.random::<u32>()),
    };
    let desc = if rng.random_bool(0.3) {
        "@description(\"d\")\n"
    } else {
        ""
    };
    let effect = if rng.random_bool(0.3) {
        "forbid"
    } else {
        "permit"
    };
    let principal = match rng.random_range(0..4) {
        0 => "principal".to_string(),
        1 => format!("principal == User::\"{}\"", pick(rng, &["u0", "u1", "u2"])),
        2 => format!("principal in Group::\"{}\"", pick(rng, &["g0", "g1"])),
        _ => "principal is User".to_string(),
    };
    let action = pick(
        rng,
        &[
            "action == Action::\"read\"",
            "action == Action::\"write\"",
            "action in [Action::\"read\", Action::\"write\"]",
        ],
    );
    let cond = if bad {
        "when { principal.nonexistent == 1 }".to_string()
    } else {
        match rng.random_range(0..6) {
            0 => String::new(),
            1 => format!("when {{ principal.level == {} }}", rng.random_range(0..3)),
            2 => format!(
                "when {{ resource.account == Account::\"{}\" }}",
                pick(rng, &["a0", "a1"])
            ),
            3 => "when { context.now > principal.since }".to_string(),
            4 => "when { context.now > datetime(\"2026-01-01\") }".to_string(),
            _ => "unless { resource.secret }".to_string(),
        }
    };
    format!("{id}{desc}{effect} (\n  {principal},\n  {action},\n  resource is Doc\n) {cond};\n")
}

fn file_text(rng: &mut StdRng) -> String {
    let mut text = String::new();
    if rng.random_bool(0.3) {
        text.push_str("// a comment\n");
    }
    for _ in 0..rng.random_range(1..5) {
        text.push_str(&policy(rng, false));
        text.push('\n');
    }
    text
}

/// The `.cedar` files now in `dir` (regular files only), sorted.
fn cedar_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar") && p.is_file())
        .collect();
    v.sort();
    v
}

/// Each `.cedar` file's text.
fn contents(dir: &Path) -> BTreeMap<PathBuf, String> {
    cedar_files(dir)
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, text)
        })
        .collect()
}

/// Put the pack back as it was (`files`, the schema's text): the author
/// undoing a bad edit.
fn restore(dir: &Path, files: &BTreeMap<PathBuf, String>, schema: &Path, schema_text: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    for (f, text) in files {
        std::fs::write(f, text).unwrap();
    }
    std::fs::write(schema, schema_text).unwrap();
}

fn write(path: &Path, text: &str) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).unwrap();
    } else if path.is_symlink() {
        std::fs::remove_file(path).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// One random edit of the pack; returns what it did (for failure messages).
fn edit(rng: &mut StdRng, dir: &Path, schema: &Path) -> String {
    let files = cedar_files(dir);
    let some = |rng: &mut StdRng| files[rng.random_range(0..files.len())].clone();
    let new_name = |rng: &mut StdRng| dir.join(format!("f{:03}.cedar", rng.random_range(0..60)));
    match rng.random_range(0..100) {
        0..=14 => {
            let f = new_name(rng);
            write(&f, &file_text(rng));
            format!("add/replace {}", f.display())
        }
        15..=24 if files.len() > 1 => {
            let f = some(rng);
            std::fs::remove_file(&f).unwrap();
            format!("remove {}", f.display())
        }
        25..=44 => {
            // Modify: append, drop or replace one policy.
            let f = some(rng);
            let text = std::fs::read_to_string(&f).unwrap();
            let mut parts: Vec<String> = text.split_inclusive(";\n").map(str::to_string).collect();
            match rng.random_range(0..3) {
                0 => parts.push(policy(rng, false)),
                1 if parts.len() > 1 => {
                    parts.remove(rng.random_range(0..parts.len()));
                }
                _ => {
                    let i = rng.random_range(0..parts.len());
                    parts[i] = policy(rng, false);
                }
            }
            write(&f, &parts.concat());
            format!("modify {}", f.display())
        }
        45..=51 => {
            let (from, to) = (some(rng), new_name(rng));
            if to.is_dir() {
                std::fs::remove_dir_all(&to).unwrap();
            }
            std::fs::rename(&from, &to).unwrap();
            format!("rename {} -> {}", from.display(), to.display())
        }
        52..=59 if files.len() > 1 => {
            // Move the last policy of one file to the front of another.
            let (a, b) = (some(rng), some(rng));
            let text = std::fs::read_to_string(&a).unwrap();
            let mut parts: Vec<&str> = text.split_inclusive(";\n").collect();
            if a == b || parts.len() < 2 {
                return "move (nothing)".into();
            }
            let moved = parts.pop().unwrap().to_string();
            write(&a, &parts.concat());
            let rest = std::fs::read_to_string(&b).unwrap();
            write(&b, &format!("{moved}\n{rest}"));
            format!("move a policy {} -> {}", a.display(), b.display())
        }
        60..=65 => {
            let f = some(rng);
            let text = std::fs::read_to_string(&f).unwrap();
            write(&f, &format!("\n  {}\n", text.replace('\n', "\n\n")));
            format!("whitespace {}", f.display())
        }
        66..=71 => {
            let f = some(rng);
            let text = std::fs::read_to_string(&f).unwrap();
            write(&f, &format!("{text}\npermit (principal, action, resource"));
            format!("syntax error {}", f.display())
        }
        72..=77 => {
            let f = some(rng);
            let text = std::fs::read_to_string(&f).unwrap();
            write(&f, &format!("{text}\n{}", policy(rng, true)));
            format!("validation error {}", f.display())
        }
        78..=81 => {
            let (a, b) = (some(rng), some(rng));
            let text = std::fs::read_to_string(&a).unwrap();
            write(&b, &format!("{text}\n{text}"));
            format!(
                "duplicate the policies of {} in {}",
                a.display(),
                b.display()
            )
        }
        82..=84 => {
            let f = new_name(rng);
            write(&f, "");
            std::fs::remove_file(&f).unwrap();
            std::fs::create_dir(&f).unwrap();
            format!("directory {}", f.display())
        }
        85..=88 => {
            let (target, link) = (some(rng), new_name(rng));
            if link == target {
                return "symlink (nothing)".into();
            }
            write(&link, "");
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(&target, &link).unwrap();
            format!("symlink {} -> {}", link.display(), target.display())
        }
        89..=92 => {
            let now = std::fs::read_to_string(schema).unwrap();
            let next = if now == SCHEMA { SCHEMA_MORE } else { SCHEMA };
            std::fs::write(schema, next).unwrap();
            "schema edit".into()
        }
        93..=94 => {
            std::fs::write(schema, "entity User {").unwrap();
            "schema syntax error".into()
        }
        _ => "nothing".into(),
    }
}

/// Everything a caller can observe of a pack.
fn observe(pack: &PolicyPack) -> String {
    let texts: Vec<String> = pack
        .policy_set
        .policies()
        .map(|p| format!("{} => {p}", p.id()))
        .collect();
    let clock: Vec<bool> = ["read", "write", "admin", "audit"]
        .iter()
        .map(|a| pack.takes_clock(&uid("Action", a)))
        .collect();
    format!(
        "version {}\nfiles {:?}\npolicies {:#?}\ntexts {texts:#?}\nwarnings {:#?}\n\
         compared_only {} clock {clock:?}\ndescriptions {:?}\ncandidates {:?}",
        pack.version,
        pack.files,
        pack.policies,
        pack.warnings,
        pack.time_compared_only(),
        pack.policies
            .iter()
            .map(|p| pack.description(&p.id))
            .collect::<Vec<_>>(),
        candidates(pack),
    )
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_str(&format!("{ty}::\"{id}\"")).unwrap()
}

/// The index's candidate ids for a few requests, in order.
fn candidates(pack: &PolicyPack) -> BTreeMap<String, Vec<String>> {
    let entities = Entities::from_json_value(
        serde_json::json!([
            {"uid": {"type": "User", "id": "u1"}, "attrs": {"level": 1, "name": "u1",
              "since": {"__extn": {"fn": "datetime", "arg": "2025-01-01"}}},
             "parents": [{"type": "Group", "id": "g0"}]},
            {"uid": {"type": "Doc", "id": "d0"}, "attrs": {"secret": false,
              "account": {"__entity": {"type": "Account", "id": "a1"}}},
             "parents": [{"type": "Account", "id": "a1"}]},
        ]),
        None,
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for (p, a) in [("u1", "read"), ("u2", "write"), ("u1", "write")] {
        let req = Request::new(
            uid("User", p),
            uid("Action", a),
            uid("Doc", "d0"),
            Context::empty(),
            None,
        )
        .unwrap();
        let set = pack.policy_index().candidates(&req, &entities);
        out.insert(
            format!("{p} {a}"),
            set.policies().map(|p| p.id().to_string()).collect(),
        );
    }
    out
}

#[test]
fn an_incremental_load_equals_a_full_load_after_every_random_edit() {
    let mut rng = StdRng::seed_from_u64(30);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    let schema = root.path().join("s.cedarschema");
    std::fs::write(&schema, SCHEMA).unwrap();
    let source = PackSource::new(&dir, Some(schema.clone()));
    // A first pack that loads.
    for attempt in 0.. {
        for i in 0..12 {
            write(
                &dir.join(format!("f{:03}.cedar", i * 5)),
                &file_text(&mut rng),
            );
        }
        match load(&source) {
            Ok(_) => break,
            Err(e) => assert!(attempt < 20, "{}", e.render()),
        }
    }
    let mut cache = LoadCache::default();
    let (mut good, mut bad, mut reused) = (0, 0, 0);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_good = load_reusing(&source, &mut cache).is_ok();
    let mut good_state = (contents(&dir), SCHEMA.to_string());
    let mut last_error = String::new();
    for step in 0..150 {
        let before = contents(&dir);
        let what = if !last_good && rng.random_bool(0.5) {
            restore(&dir, &good_state.0, &schema, &good_state.1);
            "undo".to_string()
        } else {
            edit(&mut rng, &dir, &schema)
        };
        let after = contents(&dir);
        let kind = what.split(' ').next().unwrap_or("").to_string();
        *kinds.entry(kind).or_default() += 1;
        let ours = load_reusing(&source, &mut cache);
        let full = load(&source);
        match (&ours, &full) {
            (Ok(a), Ok(b)) => {
                assert_eq!(observe(a), observe(b), "step {step}: {what}");
                good += 1;
                good_state = (contents(&dir), std::fs::read_to_string(&schema).unwrap());
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "step {step}: {what}");
                assert_eq!(a.problems(), b.problems(), "step {step}: {what}");
                bad += 1;
                last_error = a.render();
            }
            _ => panic!(
                "step {step}: {what}: incremental {:?} vs full {:?}",
                ours.as_ref().map(|p| p.version.clone()),
                full.as_ref().map(|p| p.version.clone())
            ),
        }
        // After a good load every file is kept: only the files whose text
        // changed are parsed again.
        if last_good {
            let changed = after
                .iter()
                .filter(|(f, t)| before.get(*f) != Some(t))
                .count();
            assert!(
                cache.parsed_last() <= changed,
                "step {step}: {what}: {changed} changed, {cache:?}"
            );
            reused += after.len() - cache.parsed_last().min(after.len());
        }
        last_good = ours.is_ok();
    }
    println!("good {good}, bad {bad}, files reused {reused}, edits {kinds:?}");
    assert!(
        good >= 40 && bad >= 20 && reused >= 300,
        "good {good}, bad {bad}, files reused {reused}, edits {kinds:?}; last error {last_error}"
    );
}

#[test]
fn a_schema_edit_validates_the_unchanged_files_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    let schema = root.path().join("s.cedarschema");
    std::fs::write(&schema, SCHEMA).unwrap();
    std::fs::write(
        dir.join("a.cedar"),
        "permit (principal, action == Action::\"read\", resource is Doc) when { principal.level == 1 };\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.cedar"),
        "@id(\"b\") forbid (principal, action == Action::\"write\", resource is Doc);\n",
    )
    .unwrap();
    let source = PackSource::new(&dir, Some(schema.clone()));
    let mut cache = LoadCache::default();
    load_reusing(&source, &mut cache).unwrap();
    // `level` leaves the schema: the policy file did not change, but it no
    // longer validates.
    std::fs::write(&schema, SCHEMA.replace("level: Long, ", "")).unwrap();
    let ours = load_reusing(&source, &mut cache).unwrap_err();
    let full = load(&source).unwrap_err();
    assert_eq!(ours.problems(), full.problems());
    assert!(ours.to_string().contains("validation"), "{ours}");
    assert_eq!(cache.parsed_last(), 0, "parses are kept across schemas");
    // Back: valid again, and equal to a full load.
    std::fs::write(&schema, SCHEMA).unwrap();
    let ours = load_reusing(&source, &mut cache).unwrap();
    assert_eq!(observe(&ours), observe(&load(&source).unwrap()));
}
