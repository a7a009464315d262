//! Counterexamples as files a person replays: the solver's entity ids
//! renamed to readable, stable names, the replay of a counterexample the
//! way `partnergate authorize` decides it, and writing each one to disk
//! with the `partnergate authorize` command that replays it.
//!
//! Owns [`WrittenCounterexample`] and [`write_counterexamples`]. It must
//! never know the solver or how a violation was found.

use std::path::{Path, PathBuf};

use cedar_policy::Schema;
use serde::Serialize;

use partnergate_policy::engine::{self, Decision, Semantics};
use partnergate_policy::policies::{PackSource, PolicyPack};

use crate::error::ProveError;
use crate::report::{Counterexample, EnvLabel, ProofReport, Violation};

/// Gives the solver's entity ids (often `""`, `"A"`) readable, stable names
/// (`user-1`, `account-1`, ...: principal first, then resource, then in
/// sorted order), and drops the action entities, which the schema supplies.
#[derive(Default)]
pub(crate) struct Renamer {
    map: std::collections::HashMap<(String, String), String>,
    counts: std::collections::HashMap<String, usize>,
    /// Renamed (type, id) of the principal and the resource, listed first.
    front: Vec<(String, String)>,
}

impl Renamer {
    fn name_parts(&mut self, ty: &str, id: &str) -> String {
        if ty == "Action" || ty.ends_with("::Action") {
            return id.to_string();
        }
        let key = (ty.to_string(), id.to_string());
        if let Some(n) = self.map.get(&key) {
            return n.clone();
        }
        let count = self.counts.entry(ty.to_string()).or_insert(0);
        *count += 1;
        let base = ty.rsplit("::").next().unwrap_or(ty).to_lowercase();
        let name = format!("{base}-{count}");
        self.map.insert(key, name.clone());
        name
    }

    pub(crate) fn name(&mut self, uid: &cedar_policy::EntityUid) -> String {
        let ty = uid.type_name().to_string();
        let name = self.name_parts(&ty, uid.id().unescaped());
        self.front.push((ty, name.clone()));
        name
    }

    pub(crate) fn uid(&mut self, uid: &cedar_policy::EntityUid) -> String {
        let ty = uid.type_name().to_string();
        let id = self.name_parts(&ty, uid.id().unescaped());
        format!("{ty}::{}", serde_json::Value::String(id))
    }

    /// Rename every `{"type": .., "id": ..}` object (uids, parents,
    /// `__entity` references) in the entity store and the context.
    pub(crate) fn rewrite(
        &mut self,
        entities: serde_json::Value,
        context: serde_json::Value,
    ) -> (serde_json::Value, serde_json::Value) {
        let mut list = match entities {
            serde_json::Value::Array(list) => list,
            other => return (other, context),
        };
        let key = |e: &serde_json::Value| {
            let u = &e["uid"];
            (
                u["type"].as_str().unwrap_or("").to_string(),
                u["id"].as_str().unwrap_or("").to_string(),
            )
        };
        list.retain(|e| {
            let (ty, _) = key(e);
            !(ty == "Action" || ty.ends_with("::Action"))
        });
        list.sort_by_key(key);
        // Name the stored entities in sorted order before anything nested.
        for e in &list {
            let (ty, id) = key(e);
            self.name_parts(&ty, &id);
        }
        let list = list.into_iter().map(|e| self.rewrite_value(e)).collect();
        let mut list = match list {
            serde_json::Value::Array(l) => l,
            _ => Vec::new(),
        };
        // Principal and resource first, then by type and name.
        let front = std::mem::take(&mut self.front);
        list.sort_by_key(|e| {
            let k = key(e);
            let rank = front.iter().position(|f| f == &k).unwrap_or(front.len());
            (rank, k)
        });
        self.front = front;
        let context = self.rewrite_value(context);
        (serde_json::Value::Array(list), context)
    }

    fn rewrite_value(&mut self, v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(mut m) => {
                let is_uid = m.len() == 2
                    && m.get("type").is_some_and(Value::is_string)
                    && m.get("id").is_some_and(Value::is_string);
                if is_uid {
                    let ty = m["type"].as_str().unwrap_or("").to_string();
                    let id = m["id"].as_str().unwrap_or("").to_string();
                    let new = self.name_parts(&ty, &id);
                    m.insert("id".into(), Value::String(new));
                    return Value::Object(m);
                }
                for (_, inner) in &mut m {
                    let taken = std::mem::take(inner);
                    *inner = self.rewrite_value(taken);
                }
                Value::Object(m)
            }
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.rewrite_value(x)).collect()),
            other => other,
        }
    }
}

/// Replay a counterexample from its JSON, the way `partnergate authorize`
/// does (schema-checked request and entities, fail-closed decision).
pub(crate) fn replay(
    pack: &PolicyPack,
    schema: &Schema,
    c: &Counterexample,
    label: &EnvLabel,
) -> Result<Decision, ProveError> {
    let bad = |message: String| ProveError::Counterexample {
        env: label.to_string(),
        message: format!("does not replay: {message}"),
    };
    let question = engine::JsonQuestion {
        principal: &c.principal,
        action: &c.action,
        resource: &c.resource,
        context: Some(c.context.clone()),
        entities: c.entities.clone(),
    };
    let question =
        engine::Question::parse(Some(schema), question).map_err(|e| bad(e.to_string()))?;
    Ok(question.decide(pack, Semantics::FailClosed))
}

/// Files written for one counterexample, and the command that replays it.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenCounterexample {
    /// The id of the violated invariant.
    pub invariant: String,
    /// The request environment of the violation.
    pub environment: EnvLabel,
    /// `<stem>.request.json`: the request, the offending and replayed decisions.
    pub request: PathBuf,
    /// `<stem>.context.json`: the context record.
    pub context: PathBuf,
    /// `<stem>.entities.json`: the Cedar JSON entity store.
    pub entities: PathBuf,
    /// `partnergate authorize ...` replaying it against the production pack.
    pub command: String,
    /// For `--equivalent`: the same replay against the other policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_command: Option<String>,
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn file_stem_for(invariant: &str, n: usize, v: &Violation) -> String {
    let action = v
        .counterexample
        .action
        .rsplit("::")
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    let raw = format!(
        "{invariant}-{n:02}-{}-{action}-{}",
        v.environment.principal, v.environment.resource
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write every counterexample of `report` into `dir` (created if needed):
/// `<stem>.request.json` (principal, action, resource, context, the expected
/// and the replayed decision), `<stem>.context.json` and
/// `<stem>.entities.json`. `source` is the pack the commands replay against.
pub fn write_counterexamples(
    report: &ProofReport,
    dir: &Path,
    source: &PackSource,
    other: Option<&PackSource>,
) -> Result<Vec<WrittenCounterexample>, ProveError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProveError::Io { path, source }
    };
    let mut written = Vec::new();
    if report.holds() {
        return Ok(written);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for r in report.violated() {
        for (n, v) in r.violations.iter().enumerate() {
            let stem = file_stem_for(&r.id, n + 1, v);
            let c = &v.counterexample;
            let request = dir.join(format!("{stem}.request.json"));
            let context = dir.join(format!("{stem}.context.json"));
            let entities = dir.join(format!("{stem}.entities.json"));
            let pretty = |v: &serde_json::Value| {
                let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
                s.push('\n');
                s
            };
            let req = serde_json::json!({
                "invariant": r.id,
                "kind": r.kind,
                "environment": v.environment,
                "policy": v.policy,
                "principal": c.principal,
                "action": c.action,
                "resource": c.resource,
                "context": c.context,
                "offending_decision": c.offending,
                "production_decision": c.production,
                "other_decision": c.other,
            });
            std::fs::write(&request, pretty(&req)).map_err(io(&request))?;
            std::fs::write(&context, pretty(&c.context)).map_err(io(&context))?;
            std::fs::write(&entities, pretty(&c.entities)).map_err(io(&entities))?;
            let command_for = |source: &PackSource| {
                let mut command = String::from("partnergate authorize");
                command.push_str(&format!(
                    " --policies {}",
                    shell_quote(&source.policies.display().to_string())
                ));
                if let Some(s) = &source.schema {
                    command.push_str(&format!(
                        " --schema {}",
                        shell_quote(&s.display().to_string())
                    ));
                }
                command.push_str(&format!(
                    " --principal {} --action {} --resource {} --context {} --entities {}",
                    shell_quote(&c.principal),
                    shell_quote(&c.action),
                    shell_quote(&c.resource),
                    shell_quote(&format!("@{}", context.display())),
                    shell_quote(&entities.display().to_string()),
                ));
                command
            };
            let command = command_for(source);
            let other_command = other.map(command_for);
            written.push(WrittenCounterexample {
                invariant: r.id.clone(),
                environment: v.environment.clone(),
                request,
                context,
                entities,
                command,
                other_command,
            });
        }
    }
    Ok(written)
}
