//! The decision path, in one straight line and free of HTTP:
//! typed query → policy snapshot → entity slice → Cedar → [`Answer`].
//!
//! [`Authz`] is what the sidecar's handlers call and what a Rust service
//! embeds instead of calling the sidecar:
//!
//! ```no_run
//! use std::sync::Arc;
//! use partnergate::authz::{Authz, Query};
//! use partnergate::directory::Directory;
//! use partnergate::policies::PackSource;
//! use partnergate::reload::{watch, Evaluator};
//! use partnergate::store::sqlite::SqliteStore;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = PackSource::new("policies", Some("schemas/partnergate.cedarschema".into()));
//! let evaluator = Arc::new(Evaluator::load(source)?);
//! let _watch = watch(evaluator.clone(), vec![])?; // hot reload while `_watch` lives
//! let store = Arc::new(SqliteStore::open_in(std::path::Path::new("data"))?);
//! let directory = Arc::new(Directory::open(store)?);
//! let authz = Authz::new(evaluator, directory);
//! let answer = authz.is_authorized(&Query::parse(
//!     r#"User::"alice""#, r#"Action::"view_account""#, r#"Account::"acme""#)?)?;
//! println!("{:?}", answer.decision.decision);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cedar_policy::{Entity, EntityUid};

use crate::audit::{shadow_of, AuditLog, ChangeEvent, DecisionEvent};
use crate::directory::{self, Directory, DirectoryError};
use crate::engine::{self, Decision, RequestError, Semantics};
use crate::policies::PolicyPack;
use crate::reload::Evaluator;

/// One authorization question.
#[derive(Debug, Clone)]
pub struct Query {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub context: Option<serde_json::Value>,
    /// Extra Cedar entity JSON (an array), over the stored entities, for this request only.
    pub entities: Option<serde_json::Value>,
    /// Attributes of the principal for this request, over the stored ones (AuthZEN `properties`).
    pub principal_attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Attributes of the resource for this request, over the stored ones.
    pub resource_attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// The caller's request id (`X-Request-ID`), for the decision log.
    pub request_id: Option<String>,
}

impl Query {
    /// A query from uids in Cedar syntax, without context or extra entities.
    pub fn parse(principal: &str, action: &str, resource: &str) -> Result<Self, RequestError> {
        Ok(Query {
            principal: engine::parse_uid("principal", principal)?,
            action: engine::parse_uid("action", action)?,
            resource: engine::parse_uid("resource", resource)?,
            context: None,
            entities: None,
            principal_attrs: None,
            resource_attrs: None,
            request_id: None,
        })
    }
}

/// A decision with what an auditor needs to replay it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: Decision,
    pub decision_id: String,
    /// The entities the decision used (the slice plus the action's
    /// entities), for the decision log and replay.
    pub entities: cedar_policy::Entities,
    pub latency_us: u64,
}

/// The in-process authorizer: live policies plus the entity directory, and
/// optionally a decision log and a shadow (candidate) policy set.
#[derive(Clone)]
pub struct Authz {
    evaluator: Arc<Evaluator>,
    directory: Arc<Directory>,
    audit: Option<AuditLog>,
    shadow: Option<Arc<Evaluator>>,
}

impl Authz {
    pub fn new(evaluator: Arc<Evaluator>, directory: Arc<Directory>) -> Self {
        Authz {
            evaluator,
            directory,
            audit: None,
            shadow: None,
        }
    }

    /// Log every decision and change to `log`.
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    /// Also evaluate every request against `candidate`; disagreements are
    /// logged (`shadow`) and counted, never answered.
    pub fn with_shadow(mut self, candidate: Arc<Evaluator>) -> Self {
        self.shadow = Some(candidate);
        self
    }

    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    pub fn shadow(&self) -> Option<&Arc<Evaluator>> {
        self.shadow.as_ref()
    }

    /// Validate and upsert entities (Cedar entity JSON array), logging one
    /// change record per entity with its state before and after.
    pub fn put_entities(
        &self,
        actor: &str,
        request_id: Option<String>,
        json: serde_json::Value,
    ) -> Result<Vec<EntityUid>, DirectoryError> {
        let pack = self.evaluator.current();
        let entities = Directory::parse(pack.schema.as_ref(), json)?;
        let before: Vec<serde_json::Value> = entities
            .iter()
            .map(|e| {
                self.directory
                    .get_json(&e.uid())
                    .unwrap_or(serde_json::Value::Null)
            })
            .collect();
        let uids = self.directory.put(entities)?;
        if let Some(log) = &self.audit {
            for (uid, before) in uids.iter().zip(before) {
                log.log(ChangeEvent {
                    decision_id: None,
                    request_id: request_id.clone(),
                    actor: actor.to_string(),
                    operation: "entities.upsert".into(),
                    before,
                    after: self
                        .directory
                        .get_json(uid)
                        .unwrap_or(serde_json::Value::Null),
                });
            }
        }
        Ok(uids)
    }

    pub fn evaluator(&self) -> &Arc<Evaluator> {
        &self.evaluator
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Decide one query against the current snapshot.
    pub fn is_authorized(&self, q: &Query) -> Result<Answer, RequestError> {
        let pack = self.evaluator.current();
        self.is_authorized_with(&pack, q)
    }

    /// Decide one query against a given pack (the batch endpoint uses one
    /// snapshot for all its items; shadow mode passes the candidate).
    pub fn is_authorized_with(&self, pack: &PolicyPack, q: &Query) -> Result<Answer, RequestError> {
        let started = Instant::now();
        let schema = pack.schema.as_ref();
        let request = engine::build_request(
            schema,
            q.principal.clone(),
            q.action.clone(),
            q.resource.clone(),
            q.context.clone(),
        )?;
        let mut overlay: HashMap<EntityUid, Entity> = HashMap::new();
        if let Some(json) = &q.entities {
            for e in Directory::parse(schema, json.clone())
                .map_err(|e| RequestError::Entities(e.to_string()))?
            {
                overlay.insert(e.uid(), e);
            }
        }
        for (field, uid, attrs) in [
            ("subject.properties", &q.principal, &q.principal_attrs),
            ("resource.properties", &q.resource, &q.resource_attrs),
        ] {
            if let Some(attrs) = attrs {
                let e = self
                    .with_attrs(schema, &overlay, uid, attrs)
                    .map_err(|m| RequestError::field(field, m))?;
                overlay.insert(uid.clone(), e);
            }
        }
        let slice = self.directory.slice(&[&q.principal, &q.resource], &overlay);
        let entities = directory::entities_for(slice, pack.action_entities(&q.action))
            .map_err(RequestError::Entities)?;
        let decision = engine::decide(pack, &request, &entities, Semantics::FailClosed);
        let answer = Answer {
            decision,
            decision_id: uuid::Uuid::now_v7().to_string(),
            entities,
            latency_us: started.elapsed().as_micros() as u64,
        };
        let shadow = self.shadow.as_ref().and_then(|candidate| {
            let candidate = candidate.current();
            let theirs = engine::decide(
                &candidate,
                &request,
                &answer.entities,
                Semantics::FailClosed,
            );
            let disagreement = shadow_of(&answer.decision, &theirs);
            if disagreement.is_some() {
                metrics::counter!("partnergate_shadow_disagreements_total").increment(1);
            }
            disagreement
        });
        if let Some(log) = &self.audit {
            log.log(DecisionEvent {
                decision_id: answer.decision_id.clone(),
                request_id: q.request_id.clone(),
                principal: q.principal.to_string(),
                action: q.action.to_string(),
                resource: q.resource.to_string(),
                context: q.context.clone().unwrap_or(serde_json::Value::Null),
                entities: answer
                    .entities
                    .to_json_value()
                    .unwrap_or(serde_json::Value::Null),
                decision: answer.decision.clone(),
                latency_us: answer.latency_us,
                shadow,
            });
        }
        Ok(answer)
    }

    /// The stored (or overlaid) entity with `attrs` merged over its attributes.
    fn with_attrs(
        &self,
        schema: Option<&cedar_policy::Schema>,
        overlay: &HashMap<EntityUid, Entity>,
        uid: &EntityUid,
        attrs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Entity, String> {
        let base = match overlay.get(uid) {
            Some(e) => e.to_json_value().ok(),
            None => self.directory.get_json(uid),
        };
        let mut json = base.unwrap_or_else(
            || serde_json::json!({"uid": uid_json(uid), "attrs": {}, "parents": []}),
        );
        if let Some(map) = json.get_mut("attrs").and_then(|a| a.as_object_mut()) {
            for (k, v) in attrs {
                map.insert(k.clone(), v.clone());
            }
        }
        Entity::from_json_value(json, schema).map_err(|e| e.to_string())
    }
}

/// `{"type": .., "id": ..}` for a uid.
pub fn uid_json(uid: &EntityUid) -> serde_json::Value {
    serde_json::json!({"type": uid.type_name().to_string(), "id": uid.id().unescaped()})
}
