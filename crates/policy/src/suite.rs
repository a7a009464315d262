//! Policy test suites: reading them, running them against a pack, and
//! reporting pass/fail with readable diffs and policy-level coverage.
//!
//! Two formats are accepted:
//! - the Cedar CLI's `run-tests` JSON (`*.json`): an array of
//!   `{name?, request, entities, decision, reason, num_errors}`, checked with
//!   the Cedar CLI's semantics (same decision, expected reasons a subset of
//!   the actual ones, same number of errors);
//! - PartnerGate's readable TOML suites (`*.toml`): named entity fixtures and
//!   a table of cases `principal × action × resource → decision [reasons]`,
//!   checked with PartnerGate's fail-closed semantics (see [`crate::engine`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{self, Decision, Effect, JsonQuestion, QuestionError, Semantics};
use crate::policies::PolicyPack;

/// Why a suite could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A suite file, a fixture or a suite directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A suite or fixture file is not in its format (bad JSON/TOML, unknown field, bad value).
    #[error("{path}: {message}")]
    Format {
        /// The suite file at fault.
        path: PathBuf,
        /// What is wrong, with line/column or the case and field where known.
        message: String,
    },
    /// A directory given holds no `*.json` or `*.toml` suite.
    #[error("no test suites (*.json, *.toml) under {0}")]
    Empty(PathBuf),
}

/// One case, whatever format it came from.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case's name (a Cedar case without one is `test N`, 1-based).
    pub name: String,
    /// The principal's uid in Cedar syntax.
    pub principal: String,
    /// The action's uid in Cedar syntax.
    pub action: String,
    /// The resource's uid in Cedar syntax.
    pub resource: String,
    /// The context record, if the case gives one.
    pub context: Option<serde_json::Value>,
    /// The Cedar entity JSON the case is decided over.
    pub entities: serde_json::Value,
    /// The expected decision.
    pub expect: Effect,
    /// Expected reasons: each must be among the actual ones.
    pub reasons: Option<Vec<String>>,
    /// The expected number of evaluation errors; `None`: not checked.
    pub num_errors: Option<usize>,
    /// Cedar's semantics for Cedar `run-tests` cases, fail-closed for TOML ones.
    pub semantics: Semantics,
}

/// A suite file's cases.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The suite file.
    pub path: PathBuf,
    /// Its cases, in file order.
    pub cases: Vec<Case>,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The suite file the case is in.
    pub suite: PathBuf,
    /// The case's name.
    pub name: String,
    /// Whether the decision, the reasons and the error count all matched.
    pub passed: bool,
    /// Human-readable differences, empty when passed.
    pub diff: Vec<String>,
    /// The decision made; `None` when the request or its entities were invalid.
    pub actual: Option<Decision>,
}

/// The results of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One result per case, suites and cases in the order run.
    pub results: Vec<CaseResult>,
    /// Policy ids that were never a determining reason in any case.
    pub uncovered: Vec<String>,
    /// How many policies the pack has (the denominator of coverage).
    pub total_policies: usize,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
    /// Percentage of policies that were a determining reason at least once.
    pub fn coverage_percent(&self) -> f64 {
        if self.total_policies == 0 {
            return 100.0;
        }
        let covered = self.total_policies - self.uncovered.len();
        100.0 * covered as f64 / self.total_policies as f64
    }
}

/// Collect suites from files and directories (recursively: `*.json` and
/// `*.toml`, sorted).
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, SuiteError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            if out.len() == before {
                return Err(SuiteError::Empty(p.clone()));
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SuiteError> {
    let io = |source| SuiteError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            // Fixture folders hold entity JSON, not suites.
            if p.file_name().is_some_and(|n| n == "fixtures") {
                continue;
            }
            walk(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "toml" || e == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// Read one suite file, by its extension.
pub fn read_suite(path: &Path) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fmt_err = |message: String| SuiteError::Format {
        path: path.to_path_buf(),
        message,
    };
    let cases = if path.extension().is_some_and(|e| e == "toml") {
        let suite: TomlSuite = toml::from_str(&text).map_err(|e| fmt_err(e.to_string()))?;
        toml_cases(path, suite)?
    } else {
        let cases: Vec<CedarCase> = serde_json::from_str(&text).map_err(|e| {
            fmt_err(format!(
                "line {} column {}: not a Cedar run-tests file: {e}",
                e.line(),
                e.column()
            ))
        })?;
        cases
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.into_case(i))
            .collect::<Result<_, _>>()
            .map_err(fmt_err)?
    };
    Ok(Suite {
        path: path.to_path_buf(),
        cases,
    })
}

/// Run every case of every suite against `pack`.
pub fn run(pack: &PolicyPack, suites: &[Suite]) -> Report {
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut results = Vec::new();
    for suite in suites {
        for case in &suite.cases {
            let r = run_case(pack, suite, case);
            if let Some(d) = &r.actual {
                covered.extend(d.reasons.iter().map(|r| r.id.clone()));
            }
            results.push(r);
        }
    }
    let uncovered = pack
        .policies
        .iter()
        .filter(|p| !covered.contains(&p.id))
        .map(|p| p.id.clone())
        .collect();
    Report {
        results,
        uncovered,
        total_policies: pack.policies.len(),
    }
}

fn run_case(pack: &PolicyPack, suite: &Suite, case: &Case) -> CaseResult {
    let fail = |diff: Vec<String>, actual: Option<Decision>| CaseResult {
        suite: suite.path.clone(),
        name: case.name.clone(),
        passed: false,
        diff,
        actual,
    };
    let question = JsonQuestion {
        principal: &case.principal,
        action: &case.action,
        resource: &case.resource,
        context: case.context.clone(),
        entities: case.entities.clone(),
    };
    let actual = match engine::decide_json(pack, question, case.semantics) {
        Ok(d) => d,
        Err(QuestionError::Entities(e)) => {
            return fail(vec![format!("invalid entities: {e}")], None)
        }
        Err(e) => return fail(vec![format!("invalid request: {e}")], None),
    };
    let mut diff = Vec::new();
    if actual.decision != case.expect {
        // Say which policies decided, so the author sees why at once.
        let why = if actual.reasons.is_empty() {
            "no policy applied".to_string()
        } else {
            let ids: Vec<&str> = actual.reasons.iter().map(|r| r.id.as_str()).collect();
            format!("reasons: {}", ids.join(", "))
        };
        diff.push(format!(
            "decision: expected {}, got {} ({why})",
            case.expect, actual.decision
        ));
    }
    let got: BTreeSet<&str> = actual.reasons.iter().map(|r| r.id.as_str()).collect();
    if let Some(expected) = &case.reasons {
        let missing: Vec<&str> = expected
            .iter()
            .map(String::as_str)
            .filter(|e| !got.contains(e))
            .collect();
        if !missing.is_empty() {
            diff.push(format!(
                "reasons: expected {:?} among the actual reasons, got {:?} (missing {:?})",
                expected,
                got.iter().collect::<Vec<_>>(),
                missing
            ));
        }
    }
    if let Some(n) = case.num_errors {
        if n != actual.errors.len() {
            diff.push(format!(
                "errors: expected {n}, got {} {:?}",
                actual.errors.len(),
                actual.errors
            ));
        }
    }
    if diff.is_empty() {
        CaseResult {
            suite: suite.path.clone(),
            name: case.name.clone(),
            passed: true,
            diff,
            actual: Some(actual),
        }
    } else {
        fail(diff, Some(actual))
    }
}

/// A case of the Cedar CLI's `run-tests` format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CedarCase {
    name: Option<String>,
    request: CedarRequest,
    entities: serde_json::Value,
    decision: String,
    #[serde(default)]
    reason: Vec<String>,
    #[serde(default)]
    num_errors: usize,
}

#[derive(Debug, Deserialize)]
struct CedarRequest {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Option<serde_json::Value>,
}

impl CedarCase {
    fn into_case(self, index: usize) -> Result<Case, String> {
        let name = self.name.unwrap_or_else(|| format!("test {}", index + 1));
        Ok(Case {
            expect: self
                .decision
                .parse::<Effect>()
                .map_err(|m| format!("case `{name}`: field `decision`: {m}"))?,
            name,
            principal: self.request.principal,
            action: self.request.action,
            resource: self.request.resource,
            context: self.request.context,
            entities: self.entities,
            reasons: Some(self.reason),
            num_errors: Some(self.num_errors),
            semantics: Semantics::Cedar,
        })
    }
}

/// PartnerGate's readable suite format.
///
/// ```toml
/// [fixtures]                      # named entity sets (Cedar entity JSON files,
/// acme = "fixtures/acme.json"     # relative to the suite file)
///
/// [[case]]
/// name = "a partner cannot grant admin rights"
/// fixture = "acme"                # optional when there is one fixture
/// principal = 'User::"partner1"'
/// action = "grant_admin"          # Action::"grant_admin"
/// resource = 'User::"employee1"'
/// context = { }                   # optional, Cedar context JSON
/// decision = "deny"
/// reasons = ["partner-no-admin-grants"]   # optional, a subset
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlSuite {
    #[serde(default)]
    fixtures: BTreeMap<String, String>,
    #[serde(default)]
    contexts: BTreeMap<String, toml::Value>,
    #[serde(default, rename = "case")]
    cases: Vec<TomlCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlCase {
    name: String,
    fixture: Option<String>,
    principal: String,
    action: String,
    resource: String,
    context: Option<toml::Value>,
    decision: String,
    reasons: Option<Vec<String>>,
    errors: Option<usize>,
}

fn toml_cases(path: &Path, suite: TomlSuite) -> Result<Vec<Case>, SuiteError> {
    let fmt_err = |message: String| SuiteError::Format {
        path: path.to_path_buf(),
        message,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut fixtures: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (name, file) in &suite.fixtures {
        let fpath = base.join(file);
        let text = std::fs::read_to_string(&fpath).map_err(|source| SuiteError::Io {
            path: fpath.clone(),
            source,
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            fmt_err(format!(
                "fixture `{name}` ({}): line {} column {}: {e}",
                fpath.display(),
                e.line(),
                e.column()
            ))
        })?;
        fixtures.insert(name.clone(), value);
    }
    let mut cases = Vec::new();
    for c in suite.cases {
        let at =
            |field: &str, m: String| fmt_err(format!("case `{}`: field `{field}`: {m}", c.name));
        let fixture_name = match (&c.fixture, fixtures.len()) {
            (Some(f), _) => f.clone(),
            (None, 1) => fixtures.keys().next().cloned().unwrap_or_default(),
            (None, 0) => String::new(),
            (None, _) => return Err(at("fixture", "several fixtures exist: name one".into())),
        };
        let entities = if fixture_name.is_empty() {
            serde_json::json!([])
        } else {
            fixtures
                .get(&fixture_name)
                .cloned()
                .ok_or_else(|| at("fixture", format!("no fixture named `{fixture_name}`")))?
        };
        let context = match c.context {
            None => None,
            Some(toml::Value::String(named)) => Some(
                suite
                    .contexts
                    .get(&named)
                    .map(toml_to_json)
                    .ok_or_else(|| at("context", format!("no context named `{named}`")))?,
            ),
            Some(v) => Some(toml_to_json(&v)),
        };
        let action = if c.action.contains("::") {
            c.action.clone()
        } else {
            format!("Action::\"{}\"", c.action)
        };
        cases.push(Case {
            expect: c
                .decision
                .parse::<Effect>()
                .map_err(|m| at("decision", m.to_string()))?,
            name: c.name,
            principal: c.principal,
            action,
            resource: c.resource,
            context,
            entities,
            reasons: c.reasons,
            num_errors: c.errors,
            semantics: Semantics::FailClosed,
        });
    }
    Ok(cases)
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
