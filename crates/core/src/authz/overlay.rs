//! The request's own data (`entities`, AuthZEN `properties`) over the
//! stored facts, under [`RequestEntities`] (`serve --request-entities`):
//! what it may add, what it may only repeat, and the 400 naming the field
//! when it does more.
//!
//! Owns the request-data rules and the overlay they build. It must never
//! know the caches, the decision log, the clock or HTTP.

use std::collections::HashMap;

use cedar_policy::{Entity, EntityUid};

use crate::directory::{Directory, DirectoryError};
use crate::engine::RequestError;

use super::query::Query;

/// What request data (`entities`, AuthZEN `properties`) may do to the
/// stored facts (`serve --request-entities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestEntities {
    /// Request data may add entities the store does not hold; about a stored
    /// entity it may only repeat what is stored (equal attribute values, its
    /// own parents): an attribute it replaces, an attribute it adds (the
    /// stored entity's lack of it is a stored fact) or a parent it adds is a
    /// 400 naming the field. A principal the store does not hold is unknown
    /// (Deny) even when the request describes it.
    #[default]
    Add,
    /// Request data replaces stored entities and attributes (only for
    /// callers that never forward user input).
    Override,
    /// Any request entity or property is a 400.
    Deny,
}

impl std::str::FromStr for RequestEntities {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "add" => Ok(RequestEntities::Add),
            "override" => Ok(RequestEntities::Override),
            "deny" => Ok(RequestEntities::Deny),
            other => Err(format!("`{other}`: expected add, override or deny")),
        }
    }
}

/// A request's own entities (`entities`, AuthZEN `properties`), by uid.
pub(super) type Overlay = HashMap<EntityUid, Entity>;

/// The request-data rules over one directory: what [`RequestEntities`] lets a
/// request's own data do to the entities it holds.
pub(super) struct RequestData<'a> {
    /// The stored facts.
    pub(super) directory: &'a Directory,
    /// What request data may do to them.
    pub(super) request_entities: RequestEntities,
}

impl RequestData<'_> {
    /// The request's entities (`entities` and AuthZEN `properties`), checked
    /// against the stored facts under the configured [`RequestEntities`].
    pub(super) fn overlay(
        &self,
        schema: Option<&cedar_policy::Schema>,
        q: &Query,
    ) -> Result<HashMap<EntityUid, Entity>, RequestError> {
        let mode = self.request_entities;
        let mut overlay: HashMap<EntityUid, Entity> = HashMap::new();
        let items = match &q.entities {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(_) => {
                return Err(RequestError::Entities(
                    DirectoryError::NotAnArray.to_string(),
                ))
            }
        };
        if mode == RequestEntities::Deny && !items.is_empty() {
            return Err(refused("entities"));
        }
        let items = if mode == RequestEntities::Add {
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| self.added_to_stored(schema, i, item))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            items
        };
        if !items.is_empty() {
            for e in Directory::parse(schema, serde_json::Value::Array(items))
                .map_err(|e| RequestError::Entities(e.to_string()))?
            {
                overlay.insert(e.uid(), e);
            }
        }
        for (field, uid, attrs) in [
            ("subject.properties", &q.principal, &q.principal_attrs),
            ("resource.properties", &q.resource, &q.resource_attrs),
        ] {
            let Some(attrs) = attrs.as_ref().filter(|a| !a.is_empty()) else {
                continue;
            };
            if mode == RequestEntities::Deny {
                return Err(refused(field));
            }
            let e = self.with_attrs(schema, &overlay, field, uid, attrs)?;
            overlay.insert(uid.clone(), e);
        }
        Ok(overlay)
    }

    /// Under [`RequestEntities::Add`], a request entity (`entities[index]`)
    /// for a stored uid: refused unless it only repeats what is stored (its
    /// attributes present and equal, its parents among the stored ones);
    /// then the stored entity itself.
    fn added_to_stored(
        &self,
        schema: Option<&cedar_policy::Schema>,
        index: usize,
        item: serde_json::Value,
    ) -> Result<serde_json::Value, RequestError> {
        let Some(uid) = item
            .get("uid")
            .and_then(|u| EntityUid::from_json(u.clone()).ok())
        else {
            return Ok(item); // not a uid: the schema check reports it
        };
        let Some(stored) = self.directory.get_json(&uid) else {
            return Ok(item);
        };
        if let Some(attrs) = item.get("attrs").and_then(|a| a.as_object()) {
            let at = |k: &str| format!("entities[{index}].attrs.{k}");
            check_repeats_stored(schema, &stored, &uid, attrs, at)?;
        }
        let stored_parents: Vec<EntityUid> = stored
            .get("parents")
            .and_then(|p| p.as_array())
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| EntityUid::from_json(p.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        for p in item
            .get("parents")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            let known = EntityUid::from_json(p.clone()).is_ok_and(|p| stored_parents.contains(&p));
            if !known {
                return Err(RequestError::field(
                    &format!("entities[{index}].parents"),
                    format!("{uid} is stored; request data may not add parents to a stored entity"),
                ));
            }
        }
        Ok(stored)
    }

    /// The stored (or overlaid) entity with `attrs` (AuthZEN `properties`,
    /// reported as `field`) merged over its attributes; under
    /// [`RequestEntities::Add`] a stored attribute is never replaced.
    fn with_attrs(
        &self,
        schema: Option<&cedar_policy::Schema>,
        overlay: &HashMap<EntityUid, Entity>,
        field: &str,
        uid: &EntityUid,
        attrs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Entity, RequestError> {
        let base = match overlay.get(uid) {
            Some(e) => e.to_json_value().ok(),
            None => self.directory.get_json(uid),
        };
        let stored = overlay.get(uid).is_none() && base.is_some();
        let mut json = base.unwrap_or_else(
            || serde_json::json!({"uid": uid_json(uid), "attrs": {}, "parents": []}),
        );
        if stored && self.request_entities == RequestEntities::Add {
            check_repeats_stored(schema, &json, uid, attrs, |k| format!("{field}.{k}"))?;
        } else if let Some(map) = json.get_mut("attrs").and_then(|a| a.as_object_mut()) {
            for (k, v) in attrs {
                map.insert(k.clone(), v.clone());
            }
        }
        Entity::from_json_value(json, schema).map_err(|e| RequestError::field(field, e.to_string()))
    }
}

/// The 400 of `--request-entities deny`.
fn refused(field: &str) -> RequestError {
    RequestError::field(
        field,
        "this sidecar refuses request entities and properties (--request-entities deny); store the facts with PUT /v1/entities",
    )
}

/// Check that `attrs`, request data about the stored entity `stored` (of
/// `uid`), only repeats what is stored: each attribute must be one the
/// stored entity has (its absence is a stored fact too), with an equal
/// value (compared as Cedar reads both under `schema`, so another accepted
/// spelling of the same value is equal); else a 400 naming `at(name)`.
fn check_repeats_stored(
    schema: Option<&cedar_policy::Schema>,
    stored: &serde_json::Value,
    uid: &EntityUid,
    attrs: &serde_json::Map<String, serde_json::Value>,
    at: impl Fn(&str) -> String,
) -> Result<(), RequestError> {
    let empty = serde_json::Map::new();
    let held = stored
        .get("attrs")
        .and_then(|a| a.as_object())
        .unwrap_or(&empty);
    let mut spelled_otherwise = Vec::new();
    for (k, v) in attrs {
        match held.get(k) {
            None => {
                return Err(RequestError::field(
                    &at(k),
                    format!(
                        "{uid} is stored; request data may not add an attribute to a stored entity \
                         (the stored entity has no `{k}`: that absence is a stored fact)"
                    ),
                ))
            }
            Some(s) if s == v => {}
            Some(_) => spelled_otherwise.push(k.as_str()),
        }
    }
    if spelled_otherwise.is_empty() {
        return Ok(());
    }
    // Values that differ as JSON may still be equal for Cedar (an entity
    // reference with or without `__entity`, a set in another order): read
    // the stored entity with the request's values as Cedar would, and
    // compare its canonical JSON with the stored one (stored entities are
    // kept in that canonical form).
    let mut candidate = stored.clone();
    if let Some(map) = candidate.get_mut("attrs").and_then(|a| a.as_object_mut()) {
        for k in &spelled_otherwise {
            if let Some(v) = attrs.get(*k) {
                map.insert((*k).to_string(), v.clone());
            }
        }
    }
    let canonical = Entity::from_json_value(candidate, schema)
        .ok()
        .and_then(|e| e.to_json_value().ok());
    for k in spelled_otherwise {
        let same = canonical
            .as_ref()
            .and_then(|c| c.get("attrs"))
            .and_then(|a| a.get(k))
            .is_some_and(|v| Some(v) == held.get(k));
        if !same {
            return Err(RequestError::field(
                &at(k),
                format!("{uid} is stored; request data may not replace a stored attribute"),
            ));
        }
    }
    Ok(())
}

/// `{"type": .., "id": ..}` for a uid.
pub fn uid_json(uid: &EntityUid) -> serde_json::Value {
    serde_json::json!({"type": uid.type_name().to_string(), "id": uid.id().unescaped()})
}
