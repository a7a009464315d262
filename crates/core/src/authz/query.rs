//! The question a decision answers: [`Query`] (principal, action, resource,
//! context, the request's own entities and properties, and what the
//! decision log records beside them).
//!
//! Owns the question and its builders. It must never know the directory,
//! the caches, the decision log or how a decision is made.

use cedar_policy::EntityUid;

use crate::engine::{self, RequestError};

/// One authorization question.
#[derive(Debug, Clone)]
pub struct Query {
    /// Who asks; unknown to the directory (and not invented by the request) means Deny.
    pub principal: EntityUid,
    /// What they want to do.
    pub action: EntityUid,
    /// What they want to do it to.
    pub resource: EntityUid,
    /// The Cedar context record; `None` or JSON `null` is the empty record.
    pub context: Option<serde_json::Value>,
    /// Extra Cedar entity JSON (an array), over the stored entities, for this request only.
    pub entities: Option<serde_json::Value>,
    /// Attributes of the principal for this request, over the stored ones (AuthZEN `properties`).
    pub principal_attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Attributes of the resource for this request, over the stored ones.
    pub resource_attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// The caller's request id (`X-Request-ID`), for the decision log.
    pub request_id: Option<String>,
    /// The proxied HTTP request of a gateway decision, for the decision log
    /// (not part of the question: the cache and Cedar never see it).
    pub gateway: Option<crate::audit::Gateway>,
}

impl Query {
    /// A query without context, request entities, properties or request id;
    /// the `with_*` methods set them.
    pub fn new(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Query {
            principal,
            action,
            resource,
            context: None,
            entities: None,
            principal_attrs: None,
            resource_attrs: None,
            request_id: None,
            gateway: None,
        }
    }

    /// A query from uids in Cedar syntax, without context or extra entities.
    pub fn parse(principal: &str, action: &str, resource: &str) -> Result<Self, RequestError> {
        Ok(Query::new(
            engine::parse_uid("principal", principal)?,
            engine::parse_uid("action", action)?,
            engine::parse_uid("resource", resource)?,
        ))
    }

    /// The Cedar context record for this request.
    pub fn with_context(mut self, context: Option<serde_json::Value>) -> Self {
        self.context = context;
        self
    }

    /// Extra Cedar entity JSON for this request only.
    pub fn with_entities(mut self, entities: Option<serde_json::Value>) -> Self {
        self.entities = entities;
        self
    }

    /// Attributes of the principal and of the resource for this request.
    pub fn with_attrs(
        mut self,
        principal: Option<serde_json::Map<String, serde_json::Value>>,
        resource: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        self.principal_attrs = principal;
        self.resource_attrs = resource;
        self
    }

    /// The Cedar request of this query, checked against `schema`
    /// ([`engine::build_request`]).
    pub fn request(
        &self,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<cedar_policy::Request, RequestError> {
        engine::build_request(
            schema,
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            self.context.clone(),
        )
    }

    /// The caller's request id, written to the decision log.
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The proxied request a gateway decision answers, written to the log.
    pub fn with_gateway(mut self, gateway: Option<crate::audit::Gateway>) -> Self {
        self.gateway = gateway;
        self
    }
}
