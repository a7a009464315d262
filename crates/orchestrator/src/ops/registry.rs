//! The partner registry: its companies read, and written (fields, email
//! lists and their `PartnerCompany` entities) in one guarded transaction with
//! a change record per company. No policy question: the registry is the
//! operator's. It never knows HTTP or the command line.

use cedar_policy::Entity;
use serde_json::{json, Value};

use crate::error::{InvalidCode, OrchestratorError};
use crate::input::normalize_email;
use crate::orchestrator::Orchestrator;
use crate::store::RegistryCompany;
use crate::write::ScopedWrites;
use partnergate_audit as audit;
use partnergate_core::store::EntityRecord;

impl Orchestrator {
    /// The registry.
    pub fn companies(&self) -> Result<Vec<RegistryCompany>, OrchestratorError> {
        Ok(self.store.companies()?)
    }
}

impl ScopedWrites<'_> {
    /// Insert or replace registry companies (fields and email lists) and
    /// their `PartnerCompany` entities, in one transaction.
    pub fn put_companies(
        &self,
        companies: Vec<RegistryCompany>,
    ) -> Result<Vec<RegistryCompany>, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let mut clean = Vec::with_capacity(companies.len());
        let mut records = Vec::with_capacity(companies.len());
        let mut entities = Vec::with_capacity(companies.len());
        for (i, c) in companies.into_iter().enumerate() {
            let (c, record, entity) = clean_company(schema, i, c)?;
            records.push(record);
            entities.push(entity);
            clean.push(c);
        }
        let scope = &self.scope;
        let answer = scope
            .idempotency
            .as_ref()
            .map(|i| i.answer(&clean.last()))
            .transpose()?;
        self.directory().commit_with(schema, |_| {
            let changes = self.registry_changes(&clean, &entities);
            let guard = partnergate_core::store::WriteGuard {
                deadline: scope.deadline,
                idempotency: scope
                    .idempotency
                    .as_ref()
                    .zip(answer.as_ref())
                    .map(|(i, a)| (i.key.as_str(), a)),
                changes: changes.kept(),
            };
            match self.store.put_companies(&clean, &records, &guard)? {
                partnergate_core::store::Guarded::Applied => {}
                partnergate_core::store::Guarded::TimedOut => {
                    return Err(OrchestratorError::TimedOut)
                }
                partnergate_core::store::Guarded::Replayed(r) => {
                    return Err(match &scope.idempotency {
                        Some(i) => i.replay(r),
                        None => OrchestratorError::Replayed(r),
                    })
                }
            }
            self.authz.log_changes(changes);
            Ok::<_, OrchestratorError>((records.clone(), ()))
        })?;
        Ok(clean)
    }

    /// Inside the registry write's commit, before memory is updated: one
    /// change record per company, from its entity in memory to the company
    /// as written, with the scope's request id, prepared for the write's
    /// transaction.
    fn registry_changes(
        &self,
        clean: &[RegistryCompany],
        entities: &[Entity],
    ) -> partnergate_core::changes::Prepared {
        self.authz.prepare_changes(
            clean
                .iter()
                .zip(entities)
                .map(|(c, e)| {
                    let before = self.directory().get_json(&e.uid()).unwrap_or(Value::Null);
                    let after = serde_json::to_value(c).unwrap_or(Value::Null);
                    // No policy question: the registry is the operator's (bearer token).
                    audit::ChangeEvent::new("registry", "registry.put", before, after)
                        .request(self.scope.request_id.clone())
                })
                .collect(),
        )
    }
}

/// Registry company `c`, number `i` of a `put_companies` request, checked
/// and normalised (trimmed id; non-empty name; trimmed, lower-case status;
/// its emails normalised, sorted, without duplicates), with its
/// `PartnerCompany` entity validated against `schema` and as a record.
pub(crate) fn clean_company(
    schema: Option<&cedar_policy::Schema>,
    i: usize,
    mut c: RegistryCompany,
) -> Result<(RegistryCompany, EntityRecord, Entity), OrchestratorError> {
    let invalid = |field: &'static str, message: String| OrchestratorError::Invalid {
        code: InvalidCode::Company,
        field,
        message: format!("company #{i}: {message}"),
    };
    c.id = c.id.trim().to_string();
    if c.id.is_empty() {
        return Err(invalid("id", "must not be empty".into()));
    }
    if c.name.trim().is_empty() {
        return Err(invalid("name", format!("`{}`: must not be empty", c.id)));
    }
    c.status = c.status.trim().to_lowercase();
    if c.status.is_empty() {
        return Err(invalid("status", format!("`{}`: must not be empty", c.id)));
    }
    let mut emails = Vec::with_capacity(c.emails.len());
    for e in &c.emails {
        emails.push(normalize_email(e).map_err(|_| {
            invalid(
                "emails",
                format!("`{}`: `{e}` is not a well-formed email address", c.id),
            )
        })?);
    }
    emails.sort();
    emails.dedup();
    c.emails = emails;
    let json = json!({"uid": {"type": "PartnerCompany", "id": c.id},
        "attrs": {"name": c.name, "status": c.status, "certified": c.certified},
        "parents": []});
    let entity = Entity::from_json_value(json.clone(), schema)
        .map_err(|e| invalid("company", format!("`{}`: {e}", c.id)))?;
    let record = EntityRecord {
        uid: entity.uid().to_string(),
        entity_type: "PartnerCompany".into(),
        json: json.to_string(),
    };
    Ok((c, record, entity))
}
