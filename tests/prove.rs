//! `partnergate prove`, run as a real process on temporary copies of the
//! shipped pack: the shipped invariants hold; a weakened copy of each
//! restriction is caught by its invariant and the counterexample replays
//! through `partnergate authorize` to the offending Allow; a floor catches an
//! over-tight edit; `--equivalent` accepts a reordered copy and rejects a real
//! change. Needs cvc5; without it each test prints "skipped: cvc5 not
//! installed" and returns (CI installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{copy_dir, BIN};
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn cvc5_installed() -> bool {
    let program = std::env::var("CVC5").unwrap_or_else(|_| "cvc5".into());
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("skipped: cvc5 not installed");
    }
    found
}

/// A temporary copy of the shipped pack: `<tmp>/policies` (with
/// `invariants/`) and `<tmp>/partnergate.cedarschema`.
struct Pack {
    dir: tempfile::TempDir,
}

impl Pack {
    fn copy() -> Pack {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(ROOT).join("policies"),
            &dir.path().join("policies"),
        );
        std::fs::copy(
            Path::new(ROOT).join("schemas/partnergate.cedarschema"),
            dir.path().join("partnergate.cedarschema"),
        )
        .unwrap();
        Pack { dir }
    }

    fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    fn schema(&self) -> PathBuf {
        self.dir.path().join("partnergate.cedarschema")
    }

    fn cex_dir(&self) -> PathBuf {
        self.dir.path().join("counterexamples")
    }

    /// In the policy whose `@id` is `id`, replace `from` (which must occur
    /// in it) by `to`.
    fn edit(&self, file: &str, id: &str, from: &str, to: &str) {
        let path = self.policies().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text
            .find(&format!("@id(\"{id}\")"))
            .unwrap_or_else(|| panic!("no policy {id} in {file}"));
        let end = text[start..]
            .find("};")
            .map_or_else(|| panic!("policy {id} has no end"), |e| start + e + 2);
        let policy = &text[start..end];
        assert!(
            policy.contains(from),
            "policy {id} does not contain {from:?}"
        );
        let edited = format!(
            "{}{}{}",
            &text[..start],
            policy.replacen(from, to, 1),
            &text[end..]
        );
        std::fs::write(&path, edited).unwrap();
    }

    /// Remove the policy whose `@id` is `id` from `file`.
    fn delete(&self, file: &str, id: &str) {
        let path = self.policies().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find(&format!("@id(\"{id}\")")).unwrap();
        let end = start + text[start..].find("};").unwrap() + 2;
        std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
    }

    fn prove(&self, extra: &[&str]) -> (Output, Value) {
        let mut cmd = Command::new(BIN);
        cmd.arg("prove")
            .arg("--policies")
            .arg(self.policies())
            .arg("--schema")
            .arg(self.schema())
            .arg("--counterexamples")
            .arg(self.cex_dir())
            .arg("--json")
            .args(extra);
        let out = cmd.output().unwrap();
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "prove did not print JSON ({e}); stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, json)
    }

    /// Replay one written counterexample with `partnergate authorize`
    /// against the policies in `policies`.
    fn authorize(&self, written: &Value, policies: &Path) -> Output {
        let request: Value =
            serde_json::from_str(&std::fs::read_to_string(s(&written["request"])).unwrap())
                .unwrap();
        Command::new(BIN)
            .arg("authorize")
            // Replays are not decisions to keep: no log in the checkout.
            .env("PARTNERGATE_AUDIT_LOG", "off")
            .arg("--policies")
            .arg(policies)
            .arg("--schema")
            .arg(self.schema())
            .args(["--principal", s(&request["principal"])])
            .args(["--action", s(&request["action"])])
            .args(["--resource", s(&request["resource"])])
            .arg("--context")
            .arg(format!("@{}", s(&written["context"])))
            .arg("--entities")
            .arg(s(&written["entities"]))
            .output()
            .unwrap()
    }
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn violated(report: &Value) -> Vec<String> {
    let mut ids: Vec<String> = report["report"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["holds"] == Value::Bool(false))
        .map(|r| s(&r["id"]).to_string())
        .collect();
    ids.sort();
    ids
}

/// Weaken a copy, expect exactly `invariant` to be violated, and replay every
/// counterexample to the offending Allow (exit 0).
fn assert_caught(pack: &Pack, invariant: &str) {
    assert_caught_by(pack, &[invariant]);
}

/// Like [`assert_caught`], for a weakening that breaks several invariants
/// (`invariants` sorted).
fn assert_caught_by(pack: &Pack, invariants: &[&str]) {
    let (out, report) = pack.prove(&[]);
    assert_eq!(out.status.code(), Some(1), "a violation exits 1");
    assert_eq!(violated(&report), invariants);
    let written = report["counterexamples"].as_array().unwrap();
    assert!(!written.is_empty(), "a violation writes a counterexample");
    for w in written {
        assert!(invariants.contains(&s(&w["invariant"])), "{w}");
        let replay = pack.authorize(w, &pack.policies());
        let stdout = String::from_utf8_lossy(&replay.stdout);
        assert_eq!(
            replay.status.code(),
            Some(0),
            "replay of {} should be allowed; stdout:\n{stdout}\nstderr:\n{}",
            s(&w["request"]),
            String::from_utf8_lossy(&replay.stderr)
        );
        assert!(stdout.starts_with("ALLOW"), "{stdout}");
    }
}

#[test]
fn the_shipped_pack_proves() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    let (out, report) = pack.prove(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(report["holds"], Value::Bool(true));
    let results = report["report"]["results"].as_array().unwrap();
    let kinds: Vec<&str> = results.iter().map(|r| s(&r["kind"])).collect();
    assert!(kinds.contains(&"never-errors"));
    assert!(kinds.iter().filter(|k| **k == "ceiling").count() >= 8);
    assert!(kinds.iter().filter(|k| **k == "floor").count() >= 2);
    for r in results {
        assert!(r["millis"].as_f64().is_some(), "time per invariant: {r}");
        assert_eq!(r["environments"], 22, "every request environment: {r}");
    }
    assert!(!pack.cex_dir().exists(), "nothing written when all hold");

    // The human rendering prints a time per invariant.
    let human = Command::new(BIN)
        .args(["prove", "--policies"])
        .arg(pack.policies())
        .arg("--schema")
        .arg(pack.schema())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(human.status.code(), Some(0), "{text}");
    assert!(
        text.contains("holds    ceiling      partner-never-grants-admin"),
        "{text}"
    );
    assert!(text.contains(" ms"), "{text}");
}

/// Issue #17: a partner permit that ignores the scopes is caught by
/// `partner-acts-within-scopes` (and the counterexample replays to the Allow).
#[test]
fn a_permit_that_ignores_scopes_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-administer-account",
        "(action in Action::\"scope:users\" &&\n   principal.partner.scopes.contains(\"users\")) ||",
        "action in Action::\"scope:users\" ||",
    );
    assert_caught(&pack, "partner-acts-within-scopes");
}

/// Issue #17: without the forbid on the end, a partner's permit ignores the
/// end date: `partner-never-acts-after-end` catches it, and the
/// counterexample (its `context.now` included) replays to the Allow.
#[test]
fn a_permit_that_ignores_the_end_date_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-access-ended",
        "unless { context has now && context.now < principal.partner.expires_at }",
        "unless { principal.partner.verified }",
    );
    assert_caught(&pack, "partner-never-acts-after-end");
}

#[test]
fn weakened_admin_grant_restriction_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-no-admin-grants",
        r#"[Action::"grant_admin", Action::"revoke_admin"]"#,
        r#"[Action::"revoke_admin"]"#,
    );
    assert_caught(&pack, "partner-never-grants-admin");
}

#[test]
fn weakened_touch_admins_restriction_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-no-touch-admins",
        r#"[Action::"dismiss_user","#,
        "[",
    );
    assert_caught(&pack, "partner-never-touches-admins");
}

#[test]
fn weakened_two_factor_restriction_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-no-disable-two-factor",
        "when { principal has partner }",
        "when { principal has partner && resource == principal }",
    );
    assert_caught(&pack, "partner-never-disables-two-factor");
}

#[test]
fn weakened_own_company_restriction_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-grants-own-company-only",
        "context.invitee.company != principal.partner.company",
        "context.invitee.company != principal.partner.company && !principal.is_admin",
    );
    assert_caught(&pack, "partner-grants-own-company-only");
}

#[test]
fn cross_account_guard_is_caught_only_when_a_permit_relies_on_it() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    // A permit that leaves the account check to the guard: still safe,
    // because the guard holds (defence in depth).
    pack.edit(
        "20-administrators.cedar",
        "admin-administer-users",
        "principal.is_admin && resource.account == principal.account",
        "principal.is_admin",
    );
    let (out, report) = pack.prove(&[]);
    assert_eq!(
        violated(&report),
        Vec::<String>::new(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    // Weaken the guard as well: now an administrator acts on foreign users.
    pack.edit(
        "40-guards.cedar",
        "no-cross-account-on-users",
        "unless { resource.account == principal.account }",
        "unless { resource.account == principal.account || principal.is_admin }",
    );
    assert_caught(&pack, "nobody-acts-across-accounts");
}

#[test]
fn weakened_cross_account_guard_on_accounts_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "10-members.cedar",
        "member-view-account",
        "when { principal.account == resource }",
        "",
    );
    pack.delete("40-guards.cedar", "no-cross-account-on-account");
    // An ordinary member viewing another account breaks the members'
    // ceiling too.
    assert_caught_by(
        &pack,
        &[
            "members-only-view-and-edit-themselves",
            "nobody-acts-across-accounts",
        ],
    );
}

#[test]
fn weakened_inactive_user_guard_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "40-guards.cedar",
        "inactive-users-do-nothing",
        r#"unless { principal.status == "active" }"#,
        r#"when { principal.status == "dismissed" }"#,
    );
    assert_caught(&pack, "only-active-users-act");
}

#[test]
fn a_blanket_permit_is_caught() {
    // Every other ceiling is backed by a forbid of the pack, so a permit of
    // everything passed them all; the members' ceiling catches it, and so
    // does the partners' scope ceiling (issue #17: the scopes live in the
    // partner permits, not in a forbid).
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    std::fs::write(
        pack.policies().join("99-blanket.cedar"),
        "@id(\"blanket\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    assert_caught_by(
        &pack,
        &[
            "members-only-view-and-edit-themselves",
            "partner-acts-within-scopes",
        ],
    );
}

/// A suspension that stops only the partner's admin actions (a planted
/// widening: viewing the account stays allowed) is caught by
/// `partner-never-acts-while-suspended`, and the counterexample replays to
/// the Allow.
#[test]
fn a_suspension_that_lets_the_partner_view_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-suspended",
        "  action,\n",
        "  action in Action::\"administer\",\n",
    );
    assert_caught(&pack, "partner-never-acts-while-suspended");
}

/// Without the forbid on partners suspending, a partner with the users
/// scope could suspend (its permit covers the `administer` group):
/// `partner-never-suspends` catches it.
#[test]
fn removed_partner_suspend_restriction_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.delete("30-partners.cedar", "partner-no-suspend");
    assert_caught(&pack, "partner-never-suspends");
}

/// A strong sign-in that accepts any sign-in method (a planted widening:
/// `context has amr` alone) is caught by
/// `partner-signs-in-strongly-when-required`.
#[test]
fn a_strong_sign_in_that_accepts_any_method_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "30-partners.cedar",
        "partner-requires-strong-sign-in",
        "unless { context has amr && context.amr.contains(\"mfa\") }",
        "unless { context has amr }",
    );
    assert_caught(&pack, "partner-signs-in-strongly-when-required");
}

#[test]
fn removed_unverified_partner_guard_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.delete("40-guards.cedar", "unverified-partners-do-nothing");
    assert_caught(&pack, "unverified-partner-does-nothing");
}

#[test]
fn removed_uncertified_company_guard_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.delete(
        "40-guards.cedar",
        "uncertified-partner-company-does-nothing",
    );
    assert_caught(&pack, "uncertified-partner-does-nothing");
}

#[test]
fn weakened_gold_requirement_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "40-guards.cedar",
        "partner-access-requires-gold",
        r#"context.invitee.status == "gold""#,
        r#"(context.invitee.status == "gold" || context.invitee.status == "silver")"#,
    );
    assert_caught(&pack, "partner-access-only-for-gold");
}

#[test]
fn a_floor_catches_an_over_tight_edit() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    // "Administrators may not touch other administrators": too tight.
    pack.edit(
        "20-administrators.cedar",
        "admin-administer-users",
        "principal.is_admin && resource.account == principal.account",
        "principal.is_admin && resource.account == principal.account && !resource.is_admin",
    );
    let (out, report) = pack.prove(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(violated(&report), vec!["admin-manages-own-account"]);
    for w in report["counterexamples"].as_array().unwrap() {
        let replay = pack.authorize(w, &pack.policies());
        let stdout = String::from_utf8_lossy(&replay.stdout);
        assert_eq!(
            replay.status.code(),
            Some(2),
            "a floor's offence is a Deny: {stdout}"
        );
        assert!(stdout.starts_with("DENY"), "{stdout}");
    }
}

#[test]
fn never_errors_catches_an_erroring_forbid() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    std::fs::write(
        pack.policies().join("50-overflow.cedar"),
        r#"@id("overflowing-forbid")
forbid (principal is User, action == Action::"view_account", resource is Account)
when { 9223372036854775807 + (if principal.is_admin then 1 else 0) < 0 };
"#,
    )
    .unwrap();
    let (out, report) = pack.prove(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(violated(&report), vec!["never-errors"]);
    let never = &report["report"]["results"][0];
    assert_eq!(never["kind"], "never-errors");
    assert_eq!(never["violations"][0]["policy"], "overflowing-forbid");
    let w = &report["counterexamples"][0];
    let replay = pack.authorize(w, &pack.policies());
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(
        stdout.contains("errors:"),
        "the replay shows the error: {stdout}"
    );
    assert!(stdout.contains("overflow"), "{stdout}");
}

#[test]
fn equivalent_accepts_a_reordered_copy_and_rejects_a_change() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    // The refactored copy: every policy in one file, in reverse order, with
    // action lists reordered and the text reformatted.
    let other = pack.dir.path().join("refactored");
    std::fs::create_dir_all(&other).unwrap();
    let mut policies: Vec<String> = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(pack.policies())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for chunk in text.split("};") {
            if let Some(at) = chunk.find('@') {
                policies.push(format!("{}}};", &chunk[at..]));
            }
        }
    }
    assert_eq!(policies.len(), 31);
    policies.reverse();
    let text = policies
        .join("\n\n")
        .replace(
            r#"[Action::"grant_admin", Action::"revoke_admin"]"#,
            r#"[Action::"revoke_admin",Action::"grant_admin"]"#,
        )
        .replace("  ", "\t");
    std::fs::write(other.join("all.cedar"), text).unwrap();
    let other_arg = other.to_string_lossy().to_string();
    let (out, report) = pack.prove(&["--equivalent", &other_arg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["report"]["results"][0]["kind"], "equivalent");

    // A real change: partners may now give admin rights.
    let path = other.join("all.cedar");
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replace(
        r#"[Action::"revoke_admin",Action::"grant_admin"]"#,
        r#"[Action::"revoke_admin"]"#,
    );
    assert_ne!(text, changed);
    std::fs::write(&path, changed).unwrap();
    let (out, report) = pack.prove(&["--equivalent", &other_arg]);
    assert_eq!(out.status.code(), Some(1));
    let written = report["counterexamples"].as_array().unwrap();
    assert_eq!(written.len(), 1, "only grant_admin decides differently");
    let ours = pack.authorize(&written[0], &pack.policies());
    let theirs = pack.authorize(&written[0], &other);
    assert_eq!(ours.status.code(), Some(2), "the shipped pack denies");
    assert_eq!(theirs.status.code(), Some(0), "the changed copy allows");
}

#[test]
fn an_invariant_without_a_kind_is_an_error_naming_the_file() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    let file = pack.policies().join("invariants/no-kind.cedar");
    std::fs::write(&file, "@id(\"x\")\npermit (principal, action, resource);\n").unwrap();
    let (out, ()) = {
        let out = Command::new(BIN)
            .args(["prove", "--policies"])
            .arg(pack.policies())
            .arg("--schema")
            .arg(pack.schema())
            .output()
            .unwrap();
        (out, ())
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no-kind.cedar:1"), "{stderr}");
    assert!(stderr.contains("@kind"), "{stderr}");
}

#[test]
fn without_a_solver_prove_says_how_to_install_it() {
    // Needs no solver: points CVC5 at a path that does not exist.
    let out = Command::new(BIN)
        .current_dir(ROOT)
        .arg("prove")
        .env("CVC5", "/nonexistent/cvc5")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("cvc5 was not found"), "{stderr}");
    assert!(stderr.contains("apt-get install cvc5"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// A planted widening of approvals: the forbid `approval-never-widens`
/// without its scope check lets an administrator give a scope the request
/// never asked for; `approval-never-grants-more-than-asked` catches it and
/// the counterexample replays to the Allow.
#[test]
fn an_approval_that_widens_the_scopes_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "50-requests.cedar",
        "approval-never-widens",
        "resource.scopes.containsAll(context.access.scopes) &&",
        "",
    );
    assert_caught(&pack, "approval-never-grants-more-than-asked");
}

/// The same for the length: an approval longer than asked for is caught.
#[test]
fn an_approval_that_lengthens_the_access_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.edit(
        "50-requests.cedar",
        "approval-never-widens",
        "context.access.duration <= resource.duration",
        "context.access.duration <= resource.duration || true",
    );
    assert_caught(&pack, "approval-never-grants-more-than-asked");
}

/// Without the forbid on partners answering requests and with the
/// administrators' permit no longer excluding partners, a partner holding
/// administrator rights could approve: `partner-never-answers-requests`
/// catches it.
#[test]
fn a_partner_answering_requests_is_caught() {
    if !cvc5_installed() {
        return;
    }
    let pack = Pack::copy();
    pack.delete("50-requests.cedar", "partner-never-answers-requests");
    pack.edit(
        "50-requests.cedar",
        "admin-answers-requests",
        "unless { principal has partner };",
        ";",
    );
    assert_caught(&pack, "partner-never-answers-requests");
}
