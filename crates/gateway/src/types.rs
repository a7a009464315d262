//! The types of each action's context attributes, read from the schema, so
//! that a context member taken from a path, query or header (always text)
//! becomes the `Long`, `Bool` or `String` the schema declares. Owns reading
//! the schema's JSON form (Cedar's own conversion of a `.cedarschema` text)
//! for that; knows nothing of routes or requests.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// What a context member is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (also every type this module does not convert: Cedar's
    /// request validation then decides).
    String,
    /// A 64-bit integer.
    Long,
    /// `true` or `false`.
    Bool,
}

impl Kind {
    /// `text` as this kind, or why not.
    pub fn convert(self, text: &str) -> Result<Value, String> {
        match self {
            Kind::String => Ok(Value::String(text.to_string())),
            Kind::Long => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("`{text}` is not a Long")),
            Kind::Bool => match text.trim() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(format!("`{text}` is not a Bool (true or false)")),
            },
        }
    }
}

/// Per action name, its context record's attributes and their kinds (`None`:
/// a context this module cannot read, e.g. not a record).
#[derive(Debug, Default)]
pub struct ContextTypes {
    actions: BTreeMap<String, Option<BTreeMap<String, Kind>>>,
}

impl ContextTypes {
    /// The context types of the schema file at `path` (`.json`: the JSON
    /// form, else Cedar's schema syntax). `None` when it cannot be read or
    /// converted (the pack's own loading reports why).
    pub fn from_file(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let json = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).ok()?
        } else {
            let (fragment, _warnings) =
                cedar_policy::SchemaFragment::from_cedarschema_str(&text).ok()?;
            fragment.to_json_value().ok()?
        };
        Some(Self::from_json(&json))
    }

    /// The context types of a schema in Cedar's JSON form.
    pub fn from_json(json: &Value) -> Self {
        let mut actions = BTreeMap::new();
        let Some(namespaces) = json.as_object() else {
            return ContextTypes::default();
        };
        for ns in namespaces.values() {
            let common = ns.get("commonTypes").cloned().unwrap_or(Value::Null);
            let Some(acts) = ns.get("actions").and_then(Value::as_object) else {
                continue;
            };
            for (name, def) in acts {
                let context = def.get("appliesTo").and_then(|a| a.get("context"));
                let attrs = match context {
                    None => Some(BTreeMap::new()),
                    Some(c) => record(c, &common, 0),
                };
                actions.entry(name.clone()).or_insert(attrs);
            }
        }
        ContextTypes { actions }
    }

    /// The attributes of `action`'s context: `Some(None)` when the action is
    /// known but its context is not readable here; `None` for an unknown action.
    pub fn of(&self, action: &str) -> Option<Option<&BTreeMap<String, Kind>>> {
        self.actions.get(action).map(Option::as_ref)
    }
}

/// A type, with a reference to a common type resolved (a bounded depth:
/// the schema itself refuses cycles).
fn resolve<'v>(ty: &'v Value, common: &'v Value, depth: usize) -> Option<&'v Value> {
    if depth > 16 {
        return None;
    }
    let tag = ty.get("type")?.as_str()?;
    let name = match tag {
        "EntityOrCommon" => ty.get("name")?.as_str()?,
        other => other,
    };
    match common.get(name) {
        Some(def) => resolve(def, common, depth + 1),
        None => Some(ty),
    }
}

fn record(ty: &Value, common: &Value, depth: usize) -> Option<BTreeMap<String, Kind>> {
    let ty = resolve(ty, common, depth)?;
    if ty.get("type")?.as_str()? != "Record" {
        return None;
    }
    let attrs = ty.get("attributes")?.as_object()?;
    Some(
        attrs
            .iter()
            .map(|(name, a)| (name.clone(), kind(a, common)))
            .collect(),
    )
}

fn kind(ty: &Value, common: &Value) -> Kind {
    let Some(ty) = resolve(ty, common, 0) else {
        return Kind::String;
    };
    let tag = ty.get("type").and_then(Value::as_str).unwrap_or("");
    let name = match tag {
        "EntityOrCommon" => ty.get("name").and_then(Value::as_str).unwrap_or(""),
        other => other,
    };
    match name.trim_start_matches("__cedar::") {
        "Long" => Kind::Long,
        "Bool" | "Boolean" => Kind::Bool,
        _ => Kind::String,
    }
}
