//! The quotas file (`policies/quotas.toml`): the partner rules that need
//! counting. It owns parsing and validation (errors name the file, line and
//! field) and the live copy, swapped only when a reload of the whole pack
//! (policies + quotas) succeeds — see [`QuotaRules::gate`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::policies::Problem;
use crate::reload::Gate;

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
            .map(|(l, c)| (Some(l), Some(c)))
            .unwrap_or((None, None));
        problem(line, column, e.message().trim().to_string())
    })?;
    if q.max_active_partners > MAX_LIMIT {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("max_active_partners"))
            .map(|i| i + 1);
        return Err(problem(
            line,
            Some(1),
            format!(
                "field `max_active_partners`: {} is more than the largest accepted limit {MAX_LIMIT}",
                q.max_active_partners
            ),
        ));
    }
    Ok(q)
}

/// Read the quotas file; a missing file means the defaults (3, one company).
pub fn load(path: &Path) -> Result<Quotas, Box<Problem>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Quotas::default()),
        Err(e) => Err(Box::new(Problem {
            file: Some(path.to_path_buf()),
            line: None,
            column: None,
            policy_id: None,
            message: format!("cannot read: {e}"),
            rendered: format!("{}: cannot read: {e}", path.display()),
        })),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// The live quotas, replaced only together with a good policy pack.
pub struct QuotaRules {
    path: PathBuf,
    current: ArcSwap<Quotas>,
}

impl QuotaRules {
    /// Rules read from `path` (validated now).
    pub fn load(path: PathBuf) -> Result<Arc<Self>, Box<Problem>> {
        let q = load(&path)?;
        Ok(Arc::new(QuotaRules {
            path,
            current: ArcSwap::from_pointee(q),
        }))
    }

    /// Fixed rules, not backed by a file (tests, embedding).
    pub fn fixed(q: Quotas) -> Arc<Self> {
        Arc::new(QuotaRules {
            path: PathBuf::new(),
            current: ArcSwap::from_pointee(q),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn current(&self) -> Arc<Quotas> {
        self.current.load_full()
    }

    /// A reload gate: every pack reload re-reads the quotas file; a bad file
    /// rejects the reload (the last good policies *and* quotas keep serving,
    /// and the problem shows in the reload status), a good one is swapped in.
    pub fn gate(self: &Arc<Self>) -> Gate {
        let me = self.clone();
        Box::new(move |_pack| {
            if me.path.as_os_str().is_empty() {
                return Ok(());
            }
            let q = load(&me.path).map_err(|p| vec![*p])?;
            if *me.current.load_full() != q {
                tracing::info!(
                    max_active_partners = q.max_active_partners,
                    one_company_per_account = q.one_company_per_account,
                    "quotas reloaded"
                );
            }
            me.current.store(Arc::new(q));
            Ok(())
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
}
