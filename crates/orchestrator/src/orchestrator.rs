//! [`Orchestrator`]: the partner rules over the policies (its [`Authz`]), the
//! directory and the orchestrator's store; its construction and what every
//! operation reads (the clock, the serving quotas, a user from memory, a
//! user as a validated entity record). The operations themselves are in
//! `ops`, the write path in `write`. It never knows HTTP or the command line.

use std::sync::Arc;

use cedar_policy::{Entity, EntityUid};

use crate::access::{self, Access, AccessRequest};
use crate::error::{InvalidCode, OrchestratorError};
use crate::rules::QuotaRules;
use crate::store::OrchestratorStore;
use crate::user::UserView;
use partnergate_core::authz::Authz;
use partnergate_core::directory::Directory;
use partnergate_core::store::EntityRecord;

/// Orchestrator operations over the policies, the directory and the store.
/// Its writes go through [`Orchestrator::with`]; each runs its store
/// transaction inside [`Directory::commit_with`], the directory's one write
/// path, so store and memory apply every writer's writes in the same order.
pub struct Orchestrator {
    pub(crate) authz: Authz,
    pub(crate) store: Arc<dyn OrchestratorStore>,
    pub(crate) rules: Arc<QuotaRules>,
    /// Wrong request codes lately, per account and per person and account.
    pub(crate) code_attempts: crate::attempts::Attempts,
}

impl Orchestrator {
    /// The orchestrator over `authz` (its evaluator, directory and decision
    /// log) and `store` (the orchestrator's tables, in the directory's
    /// database); binds `rules` to the evaluator, so the quotas are the
    /// serving pack's.
    pub fn new(authz: Authz, store: Arc<dyn OrchestratorStore>, rules: Arc<QuotaRules>) -> Self {
        rules.bind(authz.evaluator());
        Orchestrator {
            authz,
            store,
            rules,
            code_attempts: crate::attempts::Attempts::new(crate::attempts::HOUR_MS),
        }
    }

    /// The lifecycle events' outbox (its listing, redelivery, leases).
    pub fn events(&self) -> &dyn crate::events::outbox::EventStore {
        &*self.store
    }

    /// The quota rules the seat checks read.
    pub fn rules(&self) -> &Arc<QuotaRules> {
        &self.rules
    }

    /// The decision path the operations ask first.
    pub fn authz(&self) -> &Authz {
        &self.authz
    }

    pub(crate) fn directory(&self) -> &Arc<Directory> {
        self.authz.directory()
    }

    /// The current time, from the clock decisions read (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.authz.clock().now_ms()
    }

    /// The access `req` asks for, checked now against the serving quotas
    /// and the schema's scopes.
    pub(crate) fn access(&self, req: &AccessRequest) -> Result<Access, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        access::resolve(req, self.now(), &self.rules.current(), pack.schema.as_ref())
    }

    /// A user view as an entity record, validated against the schema.
    pub(crate) fn record(
        schema: Option<&cedar_policy::Schema>,
        u: &UserView,
    ) -> Result<EntityRecord, OrchestratorError> {
        Self::entity_record(schema, u.to_entity_json(), ("User", "user"))
    }

    /// Entity JSON of `entity_type` as a record, validated against the
    /// schema (a failure names `field`).
    pub(crate) fn entity_record(
        schema: Option<&cedar_policy::Schema>,
        json: serde_json::Value,
        (entity_type, field): (&str, &'static str),
    ) -> Result<EntityRecord, OrchestratorError> {
        let entity = Entity::from_json_value(json.clone(), schema).map_err(|e| {
            OrchestratorError::Invalid {
                code: InvalidCode::User,
                field,
                message: e.to_string(),
            }
        })?;
        Ok(EntityRecord {
            uid: entity.uid().to_string(),
            entity_type: entity_type.into(),
            json: json.to_string(),
        })
    }

    pub(crate) fn user_from_memory(&self, uid: &EntityUid) -> Result<UserView, OrchestratorError> {
        let json = self
            .directory()
            .get_json(uid)
            .ok_or_else(|| OrchestratorError::NotFound(format!("no user {uid}")))?;
        UserView::from_json(&json)
    }
}
