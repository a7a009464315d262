//! The quotas file (`policies/quotas.toml`): the partner rules that need
//! counting. It owns parsing and validation (errors name the file, line and
//! field) and the live copy, swapped only when a reload of the whole pack
//! (policies + quotas) succeeds — see [`QuotaRules::gate`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use partnergate_core::reload::Gate;
use partnergate_policy::policies::{line_col, Problem};

/// The file name looked for beside the policies.
pub const QUOTAS_FILE: &str = "quotas.toml";

/// Largest accepted seat limit (a guard against typos such as 30000).
pub const MAX_LIMIT: u32 = 1000;

/// The quota rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// At most this many active (invited or accepted) partner users per account.
    #[serde(default = "default_max")]
    pub max_active_partners: u32,
    /// All active partner users of an account belong to one partner company.
    #[serde(default = "default_true")]
    pub one_company_per_account: bool,
    /// The longest partner access, in days from the moment it is given or
    /// renewed (an end later than this is refused).
    #[serde(default = "default_max_access_days")]
    pub max_access_days: u32,
    /// Every invitation, grant and partner rehire must carry an end.
    #[serde(default)]
    pub require_access_end: bool,
    /// The scopes a partner gets when the customer names none; absent:
    /// every scope the schema declares (the rights of a partner before
    /// scopes existed). Each must be a scope of the schema (checked with
    /// the pack on every reload).
    #[serde(default)]
    pub default_partner_scopes: Option<Vec<String>>,
    /// A partner's access request needs a request code an administrator
    /// of the account made (so nobody is asked who did not hand one out).
    #[serde(default = "default_true")]
    pub request_code_required: bool,
    /// An unanswered access request expires this many days after it was made.
    #[serde(default = "default_request_ttl_days")]
    pub request_ttl_days: u32,
    /// A request code stops working this many days after it was made.
    #[serde(default = "default_request_code_ttl_days")]
    pub request_code_ttl_days: u32,
}

/// Longest accepted `request_ttl_days` and `request_code_ttl_days`.
pub const MAX_REQUEST_DAYS: u32 = 365;

fn default_request_ttl_days() -> u32 {
    30
}

fn default_request_code_ttl_days() -> u32 {
    7
}

/// Longest accepted `max_access_days` (100 years: a guard against typos).
pub const MAX_ACCESS_DAYS: u32 = 36_500;

fn default_max_access_days() -> u32 {
    730
}

fn default_max() -> u32 {
    3
}
fn default_true() -> bool {
    true
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_active_partners: default_max(),
            one_company_per_account: true,
            max_access_days: default_max_access_days(),
            require_access_end: false,
            default_partner_scopes: None,
            request_code_required: true,
            request_ttl_days: default_request_ttl_days(),
            request_code_ttl_days: default_request_code_ttl_days(),
        }
    }
}

/// Where the quotas file of a policies path is: inside the directory, or
/// beside a single policy file.
pub fn quotas_path_for(policies: &Path) -> PathBuf {
    if policies.is_file() {
        policies
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(QUOTAS_FILE)
    } else {
        policies.join(QUOTAS_FILE)
    }
}

/// Parse and validate quotas text; `file` names the source in problems.
pub fn parse(file: &Path, text: &str) -> Result<Quotas, Box<Problem>> {
    let problem = |line: Option<usize>, column: Option<usize>, message: String| {
        Box::new(Problem {
            file: Some(file.to_path_buf()),
            line,
            column,
            policy_id: None,
            rendered: format!(
                "{}{}: {message}",
                file.display(),
                line.map(|l| format!(":{l}")).unwrap_or_default()
            ),
            message,
        })
    };
    let q: Quotas = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_col(text, s.start))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        problem(line, column, e.message().trim().to_string())
    })?;
    let line_of = |key: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with(key))
            .map(|i| i + 1)
    };
    if q.max_active_partners > MAX_LIMIT {
        return Err(problem(
            line_of("max_active_partners"),
            Some(1),
            format!(
                "field `max_active_partners`: {} is more than the largest accepted limit {MAX_LIMIT}",
                q.max_active_partners
            ),
        ));
    }
    if q.max_access_days == 0 || q.max_access_days > MAX_ACCESS_DAYS {
        return Err(problem(
            line_of("max_access_days"),
            Some(1),
            format!(
                "field `max_access_days`: {} is not between 1 and {MAX_ACCESS_DAYS}",
                q.max_access_days
            ),
        ));
    }
    for (key, days) in [
        ("request_ttl_days", q.request_ttl_days),
        ("request_code_ttl_days", q.request_code_ttl_days),
    ] {
        if days == 0 || days > MAX_REQUEST_DAYS {
            return Err(problem(
                line_of(key),
                Some(1),
                format!("field `{key}`: {days} is not between 1 and {MAX_REQUEST_DAYS}"),
            ));
        }
    }
    Ok(q)
}

/// `default_partner_scopes` names only scopes the pack's schema declares.
pub fn check_default_scopes(
    path: &Path,
    q: &Quotas,
    schema: Option<&cedar_policy::Schema>,
) -> Result<(), Box<Problem>> {
    let Some(scopes) = &q.default_partner_scopes else {
        return Ok(());
    };
    let known = crate::scopes::known_scopes(schema);
    let Some(unknown) = scopes.iter().find(|s| !known.contains(s)) else {
        return Ok(());
    };
    let line = std::fs::read_to_string(path).ok().and_then(|t| {
        t.lines()
            .position(|l| l.trim_start().starts_with("default_partner_scopes"))
            .map(|i| i + 1)
    });
    let message = format!(
        "field `default_partner_scopes`: unknown scope `{unknown}`: the schema declares {}",
        known.join(", ")
    );
    Err(Box::new(Problem {
        file: Some(path.to_path_buf()),
        line,
        column: Some(1),
        policy_id: None,
        rendered: format!(
            "{}{}: {message}",
            path.display(),
            line.map(|l| format!(":{l}")).unwrap_or_default()
        ),
        message,
    }))
}

/// Read the quotas file; a missing file means the defaults (3, one company).
pub fn load(path: &Path) -> Result<Quotas, Box<Problem>> {
    match partnergate_policy::optional_file::read(path)? {
        Some(text) => parse(path, &text),
        None => Ok(Quotas::default()),
    }
}

/// The live quotas: those of the serving policy pack, where the [`gate`]
/// put them (so they are replaced only together with a good pack, and a
/// pack that another gate rejects changes nothing), else the rules read at
/// start.
///
/// [`gate`]: QuotaRules::gate
pub struct QuotaRules {
    path: PathBuf,
    initial: Arc<Quotas>,
    evaluator: std::sync::OnceLock<std::sync::Weak<partnergate_core::reload::Evaluator>>,
}

impl QuotaRules {
    /// Rules read from `path` (validated now).
    pub fn load(path: PathBuf) -> Result<Arc<Self>, Box<Problem>> {
        let q = load(&path)?;
        Ok(Arc::new(QuotaRules {
            path,
            initial: Arc::new(q),
            evaluator: std::sync::OnceLock::new(),
        }))
    }

    /// Fixed rules, not backed by a file (tests, embedding).
    pub fn fixed(q: Quotas) -> Arc<Self> {
        Arc::new(QuotaRules {
            path: PathBuf::new(),
            initial: Arc::new(q),
            evaluator: std::sync::OnceLock::new(),
        })
    }

    /// Read the quotas from the packs `evaluator` serves (whose gates
    /// include [`QuotaRules::gate`]). The first binding stays.
    pub fn bind(&self, evaluator: &Arc<partnergate_core::reload::Evaluator>) {
        let _ = self.evaluator.set(Arc::downgrade(evaluator));
    }

    /// The quotas file the gate re-reads on every reload; empty for
    /// [`QuotaRules::fixed`] rules.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The quotas of the serving pack.
    pub fn current(&self) -> Arc<Quotas> {
        self.evaluator
            .get()
            .and_then(std::sync::Weak::upgrade)
            .and_then(|ev| ev.current().extension::<Quotas>())
            .unwrap_or_else(|| self.initial.clone())
    }

    /// A reload gate: every pack reload re-reads the quotas file; a bad file
    /// rejects the reload (the last good policies *and* quotas keep serving,
    /// and the problem shows in the reload status); a good one becomes part
    /// of the new pack, and serves when (and only if) the pack does.
    pub fn gate(self: &Arc<Self>) -> Gate {
        let path = self.path.clone();
        Box::new(move |pack| {
            if path.as_os_str().is_empty() {
                return Ok(None);
            }
            let q = load(&path).map_err(|p| vec![*p])?;
            check_default_scopes(&path, &q, pack.schema.as_ref()).map_err(|p| vec![*p])?;
            Ok(Some(Arc::new(q) as partnergate_policy::policies::Extension))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let q = parse(Path::new("q.toml"), "max_active_partners = 2\n").unwrap();
        assert_eq!(q.max_active_partners, 2);
        assert!(q.one_company_per_account);
        assert_eq!(parse(Path::new("q.toml"), "").unwrap(), Quotas::default());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let p = parse(
            Path::new("q.toml"),
            "# c\none_company_per_account = true\nmax_active_partners = \"three\"\n",
        )
        .unwrap_err();
        assert_eq!(p.line, Some(3), "{p:?}");
        assert!(p.to_string().contains("q.toml"), "{p}");
        let p = parse(Path::new("q.toml"), "max_partners = 3\n").unwrap_err();
        assert_eq!(p.line, Some(1));
        assert!(p.message.contains("max_partners"), "{p:?}");
        let p = parse(Path::new("q.toml"), "\nmax_active_partners = 5000\n").unwrap_err();
        assert_eq!(p.line, Some(2));
    }

    /// A one-policy pack with `quotas.toml` (3 partners) and its rules.
    fn pack_with_quotas() -> (tempfile::TempDir, PathBuf, Arc<QuotaRules>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.cedar"),
            "permit (principal, action, resource);\n",
        )
        .unwrap();
        let quotas_file = dir.path().join(QUOTAS_FILE);
        std::fs::write(&quotas_file, "max_active_partners = 3\n").unwrap();
        let rules = QuotaRules::load(quotas_file.clone()).unwrap();
        (dir, quotas_file, rules)
    }

    #[test]
    fn a_reload_another_gate_rejects_keeps_the_old_quotas() {
        use partnergate_core::reload::Evaluator;
        use partnergate_policy::policies::PackSource;
        let (dir, quotas_file, rules) = pack_with_quotas();
        // A second gate (as the proof of --prove-on-reload) that rejects
        // every reload after the first load.
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let reject_later: Gate = Box::new(move |_| {
            if loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Ok(None)
            } else {
                Err(vec![Problem {
                    file: None,
                    line: None,
                    column: None,
                    policy_id: None,
                    message: "rejected".into(),
                    rendered: "rejected".into(),
                }])
            }
        });
        let ev = Arc::new(
            Evaluator::load_with_gates(
                PackSource::new(dir.path(), None),
                vec![rules.gate(), reject_later],
            )
            .unwrap(),
        );
        rules.bind(&ev);
        assert_eq!(rules.current().max_active_partners, 3);
        std::fs::write(&quotas_file, "max_active_partners = 5\n").unwrap();
        assert!(ev.reload().is_err());
        assert_eq!(
            rules.current().max_active_partners,
            3,
            "a rejected reload changes no quota"
        );
    }

    #[test]
    fn a_good_reload_brings_the_new_quotas_with_the_pack() {
        use partnergate_core::reload::Evaluator;
        use partnergate_policy::policies::PackSource;
        let (dir, quotas_file, rules) = pack_with_quotas();
        let ev = Arc::new(
            Evaluator::load_with_gates(PackSource::new(dir.path(), None), vec![rules.gate()])
                .unwrap(),
        );
        rules.bind(&ev);
        std::fs::write(&quotas_file, "max_active_partners = 2\n").unwrap();
        let pack = ev.reload().unwrap();
        assert_eq!(pack.extension::<Quotas>().unwrap().max_active_partners, 2);
        assert_eq!(rules.current().max_active_partners, 2);
    }
}
