//! Integration tests of the `partnergate` binary for policy authors: `check`,
//! `authorize`, `test` and `fmt` run as real processes, on the shipped pack
//! or on copies of it in temporary directories where a test edits files.

use std::path::Path;
use std::process::Command;

use partnergate::engine::Effect;
use partnergate::suite;

mod common;
/// The crate root: the shipped pack lives in `policies/`, `schemas/`, `tests/`.
use common::{copy_dir, repo as root, BIN};

/// What a run of the binary gave.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `partnergate ARGS` in `dir`, with no pack-related environment.
fn run(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("PARTNERGATE_POLICIES")
        .env_remove("PARTNERGATE_SCHEMA")
        // `authorize` logs its decisions by default (to ./data/): not into
        // the checkout from a test.
        .env("PARTNERGATE_AUDIT_LOG", "off")
        .output()
        .expect("the partnergate binary runs");
    Out {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// A temporary directory holding a copy of the shipped pack and its tests.
fn pack_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in [
        "policies",
        "schemas",
        "tests/policies",
        "tests/cedar-format",
    ] {
        copy_dir(&root().join(d), &dir.path().join(d));
    }
    dir
}

/// Replace exactly one occurrence of `from` in `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` should occur once in {}",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// 1-based line of the first line of `path` that contains `needle`.
fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle present")
        + 1
}

/// The `K passed, M failed` summary, as numbers.
fn summary(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .last()
        .expect("a summary line ends the output");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 4, "summary line: {line}");
    assert_eq!(
        (words[1], words[3]),
        ("passed,", "failed"),
        "summary: {line}"
    );
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

/// The `coverage: C/T ...` line, as numbers.
fn coverage(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("coverage: "))
        .expect("a coverage line");
    let frac = line["coverage: ".len()..]
        .split_whitespace()
        .next()
        .unwrap();
    let (c, t) = frac.split_once('/').unwrap();
    (c.parse().unwrap(), t.parse().unwrap())
}

/// All cases of the shipped TOML suites.
fn shipped_suites() -> Vec<suite::Suite> {
    let files = suite::discover(&[root().join("tests/policies")]).unwrap();
    assert!(files.len() >= 4, "the pack has its suites: {files:?}");
    files
        .iter()
        .map(|f| suite::read_suite(f).unwrap())
        .collect()
}

// ---------------------------------------------------------------- check

#[test]
fn check_on_the_shipped_pack_exits_0() {
    let out = run(&root(), &["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("ok: "), "{out:?}");
    assert!(
        out.stdout
            .contains("validated strictly against schemas/partnergate.cedarschema"),
        "{out:?}"
    );
    assert!(out.stdout.contains("0 warning(s)"), "{out:?}");
    let out = run(&root(), &["check", "--deny-warnings"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_typo_in_a_policy_file_names_file_line_and_column() {
    let dir = pack_copy();
    let file = dir.path().join("policies/10-members.cedar");
    let line = line_of(&file, "permit (");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("permit (", "permt (", 1)).unwrap();

    let out = run(dir.path(), &["check"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(out.code, 1, "a parse error is an error, exit 1: {out:?}");
    let at = format!("policies/10-members.cedar:{line}:1");
    assert!(out.stderr.contains(&at), "expected `{at}` in {out:?}");
    assert!(out.stderr.contains("permt"), "{out:?}");
    // A caret line points under the typo.
    assert!(out.stderr.contains("─────"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn an_attribute_the_schema_lacks_fails_strict_validation_naming_the_policy() {
    let dir = pack_copy();
    let file = dir.path().join("policies/10-members.cedar");
    edit(
        &file,
        "when { principal.account == resource }",
        "when { principal.acount == resource }",
    );
    let line = line_of(&file, "principal.acount");
    let out = run(dir.path(), &["check"]);
    assert_eq!(out.code, 3, "validation failed => exit 3: {out:?}");
    assert!(
        out.stderr.contains("policy `member-view-account`"),
        "{out:?}"
    );
    assert!(out.stderr.contains("`acount`"), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("policies/10-members.cedar:{line}:")),
        "{out:?}"
    );

    // Machine-readable too.
    let out = run(dir.path(), &["check", "--json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["policy_id"], "member-view-account");
    assert_eq!(v["problems"][0]["line"], line);

    // `--policies` without `--schema` finds the schema in `schemas/` beside
    // the policies (it used to skip validation: "ok ... not validated").
    let out = run(dir.path(), &["check", "--policies", "policies"]);
    assert_eq!(out.code, 3, "validated against schemas/ beside: {out:?}");
    assert!(out.stderr.contains("`acount`"), "{out:?}");

    // Where there is no schema at all, it says so: a warning, which
    // --deny-warnings turns into a failure.
    let bare = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("policies"), &bare.path().join("rules"));
    let out = run(bare.path(), &["check", "--policies", "rules"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("not validated"), "{out:?}");
    assert!(
        out.stderr.contains("warning: no schema for rules") && out.stderr.contains("--schema"),
        "{out:?}"
    );
    let out = run(
        bare.path(),
        &["check", "--policies", "rules", "--deny-warnings"],
    );
    assert_eq!(out.code, 3, "{out:?}");
}

#[test]
fn the_same_id_in_two_files_is_an_error_naming_both_files() {
    let dir = pack_copy();
    std::fs::write(
        dir.path().join("policies/50-extra.cedar"),
        "@id(\"partner-no-admin-grants\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let out = run(dir.path(), &["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("partner-no-admin-grants"), "{out:?}");
    assert!(out.stderr.contains("policies/30-partners.cedar"), "{out:?}");
    assert!(out.stderr.contains("policies/50-extra.cedar"), "{out:?}");
}

#[test]
fn policies_without_id_get_policy_n_counted_across_files() {
    let dir = pack_copy();
    // Sorted first and last: policy0 and policyN, N = the number of policies before it.
    std::fs::write(
        dir.path().join("policies/05-first.cedar"),
        "forbid (principal, action, resource)\nwhen { principal has partner && principal.email == \"\" };\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies/90-last.cedar"),
        "permit (principal, action == Action::\"view_account\", resource)\nwhen { principal.is_admin };\n",
    )
    .unwrap();
    let out = run(dir.path(), &["check", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let policies = v["policies"].as_array().unwrap();
    let n = policies.len();
    assert_eq!(policies[0]["id"], "policy0");
    assert_eq!(policies[0]["file"], "policies/05-first.cedar");
    assert_eq!(policies[n - 1]["id"], format!("policy{}", n - 1));
    assert_eq!(policies[n - 1]["file"], "policies/90-last.cedar");
    // The annotated ones keep their @id.
    assert_eq!(policies[1]["id"], "member-view-account");
}

// ---------------------------------------------------------------- test

#[test]
fn the_pack_tests_pass_with_full_coverage() {
    let cases: usize = shipped_suites().iter().map(|s| s.cases.len()).sum();
    let out = run(&root(), &["test", "tests/policies"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(summary(&out.stdout), (cases, 0), "{out:?}");
    let (covered, total) = coverage(&out.stdout);
    assert_eq!(covered, total, "{out:?}");
    assert!(out.stdout.contains("(100.0%)"), "{out:?}");
    assert!(!out.stdout.contains("never a reason"), "{out:?}");

    // Every policy of the pack counts.
    let check = run(&root(), &["check", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    assert_eq!(total, v["policies"].as_array().unwrap().len());

    // `test` with no path runs the same suites.
    let default = run(&root(), &["test"]);
    assert_eq!(default.code, 0, "{default:?}");
    assert_eq!(summary(&default.stdout), (cases, 0));
}

#[test]
fn every_permit_is_the_reason_of_an_allow_and_every_forbid_of_a_deny() {
    // Each permit is the reason of some allow, each forbid of some deny.
    let dir = root();
    let out = run(&dir, &["test", "--json", "tests/policies"]);
    assert_eq!(out.code, 0, "{out:?}");
    // The JSON report, then the summary line.
    let (json, last) = out.stdout.trim_end().rsplit_once('\n').unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(json).unwrap();
    let check = run(&dir, &["check", "--json"]);
    let pack: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    for p in pack["policies"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        let effect = if p["effect"] == "permit" {
            "Allow"
        } else {
            "Deny"
        };
        let found = report["results"].as_array().unwrap().iter().any(|r| {
            r["actual"]["decision"] == effect
                && r["actual"]["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["id"] == id)
        });
        assert!(found, "no {effect} case has `{id}` as its reason");
    }
    let results = report["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["actual"]["decision"] == "Allow"));
    assert!(results.iter().any(|r| r["actual"]["decision"] == "Deny"));
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let dir = pack_copy();
    let suite = dir.path().join("tests/policies/partners.toml");
    // Wrong decision.
    edit(
        &suite,
        "name = \"a partner cannot dismiss the owner\"\nprincipal = 'User::\"partner1\"'\naction = \"dismiss_user\"\nresource = 'User::\"owner\"'\ndecision = \"deny\"",
        "name = \"a partner cannot dismiss the owner\"\nprincipal = 'User::\"partner1\"'\naction = \"dismiss_user\"\nresource = 'User::\"owner\"'\ndecision = \"allow\"",
    );
    // Wrong reason.
    edit(
        &suite,
        "reasons = [\"partner-no-disable-two-factor\"]\n\n[[case]]\nname = \"a partner cannot switch off the owner's",
        "reasons = [\"partner-no-such-policy\"]\n\n[[case]]\nname = \"a partner cannot switch off the owner's",
    );
    // Wrong decision where no policy applies (denied by default).
    edit(
        &dir.path().join("tests/policies/members.toml"),
        "action = \"invite_user\"\nresource = 'Account::\"acme\"'\ndecision = \"deny\"",
        "action = \"invite_user\"\nresource = 'Account::\"acme\"'\ndecision = \"allow\"",
    );
    let out = run(dir.path(), &["test", "tests/policies"]);
    assert_eq!(out.code, 1, "{out:?}");
    let (passed, failed) = summary(&out.stdout);
    assert_eq!(failed, 3, "{out:?}");
    assert!(
        out.stdout.contains(
            "  FAIL  an employee cannot invite users\n        decision: expected Allow, got Deny (no policy applied)\n"
        ),
        "{out:?}"
    );
    assert!(passed > 0);
    assert!(
        out.stdout.contains(
            "  FAIL  a partner cannot dismiss the owner\n        decision: expected Allow, got Deny (reasons: partner-no-touch-admins)\n"
        ),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("  FAIL  a partner cannot switch off an employee's two-factor sign-in\n        reasons: expected [\"partner-no-such-policy\"] among the actual reasons, got [\"partner-no-disable-two-factor\"] (missing [\"partner-no-such-policy\"])\n"),
        "{out:?}"
    );
}

#[test]
fn a_broken_suite_file_is_an_error_naming_it() {
    let dir = pack_copy();
    let suite = dir.path().join("tests/policies/members.toml");
    edit(
        &suite,
        "name = \"an employee views the own account\"\nprincipal = 'User::\"employee\"'\naction = \"view_account\"\nresource = 'Account::\"acme\"'\ndecision = \"allow\"",
        "name = \"an employee views the own account\"\nprincipal = 'User::\"employee\"'\naction = \"view_account\"\nresource = 'Account::\"acme\"'\ndecision = \"maybe\"",
    );
    let out = run(dir.path(), &["test", "tests/policies"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("members.toml"), "{out:?}");
    assert!(out.stderr.contains("field `decision`"), "{out:?}");
    assert!(out.stderr.contains("maybe"), "{out:?}");
}

#[test]
fn test_runs_every_case_of_a_cedar_run_tests_file() {
    let file = root().join("tests/cedar-format/tests.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(cases.len() >= 6);
    let args = [
        "test",
        "--policies",
        "tests/cedar-format/policies.cedar",
        "--schema",
        "tests/cedar-format/schema.cedarschema",
        "tests/cedar-format/tests.json",
    ];
    let out = run(&root(), &args);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(summary(&out.stdout), (cases.len(), 0), "{out:?}");
    for c in &cases {
        let line = format!("  ok    {}\n", c["name"].as_str().unwrap());
        assert!(out.stdout.contains(&line), "missing `{line}` in {out:?}");
    }
    // Cedar's default ids, as the Cedar CLI gives them.
    assert_eq!(coverage(&out.stdout), (3, 3), "{out:?}");

    // Without --schema the same file runs too.
    let out = run(
        &root(),
        &[
            "test",
            "--policies",
            "tests/cedar-format/policies.cedar",
            "tests/cedar-format/tests.json",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(summary(&out.stdout), (cases.len(), 0), "{out:?}");
}

#[test]
fn a_cedar_run_tests_file_is_validated_only_when_a_schema_is_given() {
    let dir = pack_copy();
    let file = dir.path().join("tests/cedar-format/tests.json");
    let mut cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // An attribute the schema does not declare, in the first case's entities.
    cases[0]["entities"][0]["attrs"]["nickname"] = "al".into();
    std::fs::write(&file, serde_json::to_string_pretty(&cases).unwrap()).unwrap();
    let first = cases[0]["name"].as_str().unwrap().to_string();

    let with_schema = run(
        dir.path(),
        &[
            "test",
            "--policies",
            "tests/cedar-format/policies.cedar",
            "--schema",
            "tests/cedar-format/schema.cedarschema",
            "tests/cedar-format/tests.json",
        ],
    );
    assert_eq!(with_schema.code, 1, "{with_schema:?}");
    assert_eq!(summary(&with_schema.stdout), (cases.len() - 1, 1));
    assert!(
        with_schema
            .stdout
            .contains(&format!("  FAIL  {first}\n        invalid entities:")),
        "{with_schema:?}"
    );

    // Without a schema: the policy file alone, where no schema is beside it
    // (one beside would be found and used).
    let bare = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("tests/cedar-format/policies.cedar"),
        bare.path().join("policies.cedar"),
    )
    .unwrap();
    let bare_policies = bare.path().join("policies.cedar");
    let without = run(
        dir.path(),
        &[
            "test",
            "--policies",
            bare_policies.to_str().unwrap(),
            "tests/cedar-format/tests.json",
        ],
    );
    assert_eq!(without.code, 0, "{without:?}");
    assert_eq!(summary(&without.stdout), (cases.len(), 0));
}

// ---------------------------------------------------------------- authorize

#[test]
fn authorize_agrees_with_every_case_of_the_suites() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for s in shipped_suites() {
        for case in &s.cases {
            let entities = tmp.path().join(format!("{n}.json"));
            std::fs::write(&entities, case.entities.to_string()).unwrap();
            let context = case.context.as_ref().map(|c| c.to_string());
            let mut args = vec![
                "authorize",
                "--json",
                "--principal",
                &case.principal,
                "--action",
                &case.action,
                "--resource",
                &case.resource,
                "--entities",
                entities.to_str().unwrap(),
            ];
            if let Some(c) = &context {
                args.extend(["--context", c]);
            }
            let out = run(&root(), &args);
            let what = format!("{}: `{}`", s.path.display(), case.name);
            let expected_code = match case.expect {
                Effect::Allow => 0,
                Effect::Deny => 2,
            };
            assert_eq!(out.code, expected_code, "{what}: {out:?}");
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(v["decision"], case.expect.to_string(), "{what}: {out:?}");
            let got: Vec<&str> = v["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            for want in case.reasons.iter().flatten() {
                assert!(
                    got.contains(&want.as_str()),
                    "{what}: reason `{want}` missing from {got:?}"
                );
            }
            // Every reason comes with its description.
            for r in v["reasons"].as_array().unwrap() {
                assert!(r["description"].is_string(), "{what}: {r}");
            }
            n += 1;
        }
    }
    assert!(n > 50, "the suites were read: {n}");
}

#[test]
fn authorize_prints_decision_reasons_and_descriptions() {
    let entities = "tests/policies/fixtures/acme.json";
    let out = run(
        &root(),
        &[
            "authorize",
            "--principal",
            "User::\"partner1\"",
            "--action",
            "Action::\"invite_user\"",
            "--resource",
            "Account::\"acme\"",
            "--entities",
            entities,
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("ALLOW\nreasons:\n  partner-administer-account: A verified partner has administrative rights on the account that invited them, within the scopes the customer gave\n"), "{out:?}");
    assert!(out.stdout.contains("policy version: sha256:"), "{out:?}");

    let out = run(
        &root(),
        &[
            "authorize",
            "--principal",
            "User::\"partner1\"",
            "--action",
            "grant_admin",
            "--resource",
            "User::\"partner1\"",
            "--entities",
            entities,
        ],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout.starts_with(
            "DENY\nreasons:\n  partner-no-admin-grants: A partner cannot give or take away administrator rights\n"
        ),
        "{out:?}"
    );
}

#[test]
fn authorize_an_unknown_principal_is_deny_with_the_cause_in_errors() {
    let out = run(
        &root(),
        &[
            "authorize",
            "--json",
            "--principal",
            "User::\"mallory\"",
            "--action",
            "view_account",
            "--resource",
            "Account::\"acme\"",
            "--entities",
            "tests/policies/fixtures/acme.json",
        ],
    );
    assert_eq!(out.code, 2, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["decision"], "Deny");
    assert_eq!(v["reasons"].as_array().unwrap().len(), 0);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("unknown principal User::\"mallory\""),
        "{out:?}"
    );
}

#[test]
fn authorize_rejects_a_request_the_schema_does_not_allow() {
    // invite_partner without the invitee context: a request error, exit 1.
    let out = run(
        &root(),
        &[
            "authorize",
            "--principal",
            "User::\"owner\"",
            "--action",
            "invite_partner",
            "--resource",
            "Account::\"acme\"",
            "--entities",
            "tests/policies/fixtures/acme.json",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("context"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // An action the schema does not declare.
    let out = run(
        &root(),
        &[
            "authorize",
            "--principal",
            "User::\"owner\"",
            "--action",
            "delete_everything",
            "--resource",
            "Account::\"acme\"",
            "--entities",
            "tests/policies/fixtures/acme.json",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("delete_everything"), "{out:?}");
}

// ---------------------------------------------------------------- fmt

#[test]
fn fmt_check_passes_on_the_shipped_pack_and_fails_on_an_unformatted_copy() {
    let out = run(&root(), &["fmt", "--check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.all().is_empty(), "{out:?}");

    let dir = pack_copy();
    let file = dir.path().join("policies/10-members.cedar");
    edit(
        &file,
        "when { principal.account == resource }",
        "when {principal.account   ==\n   resource}",
    );
    let before = std::fs::read_to_string(&file).unwrap();
    let out = run(dir.path(), &["fmt", "--check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "would reformat policies/10-members.cedar\n");
    assert!(out.stderr.contains("1 file(s) not formatted"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "--check writes nothing"
    );

    let out = run(dir.path(), &["fmt"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "formatted policies/10-members.cedar\n");
    let original = std::fs::read_to_string(root().join("policies/10-members.cedar")).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    let out = run(dir.path(), &["fmt", "--check"]);
    assert_eq!(out.code, 0, "{out:?}");
}

// ---------------------------------------------------------------- help

#[test]
fn every_subcommand_has_help() {
    let out = run(&root(), &["--help"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Exit codes"), "{out:?}");
    for cmd in ["check", "authorize", "test", "fmt"] {
        assert!(out.stdout.contains(&format!("  {cmd} ")), "{cmd}: {out:?}");
        let sub = run(&root(), &[cmd, "--help"]);
        assert_eq!(sub.code, 0, "{cmd}: {sub:?}");
        assert!(
            sub.stdout.contains(&format!("Usage: partnergate {cmd}")),
            "{cmd}: {sub:?}"
        );
    }
    let out = run(&root(), &["authorize", "--help"]);
    for flag in [
        "--principal",
        "--action",
        "--resource",
        "--context",
        "--entities",
        "--json",
    ] {
        assert!(out.stdout.contains(flag), "{flag}: {out:?}");
    }
}
