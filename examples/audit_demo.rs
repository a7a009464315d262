//! Writes a small decision log of real decisions made by the shipped policy
//! pack (plus a change and a reload), for trying `partnergate audit ...`:
//!
//!     cargo run --example audit_demo -- /tmp/demo/decisions.jsonl
//!
//! Entity emails are redacted (`--audit-redact-attr email` equivalent).

use std::path::PathBuf;

use partnergate::audit::{
    self, AuditConfig, AuditLog, ChangeEvent, DecisionEvent, Redaction, ReloadEvent,
};
use partnergate::engine::{self, Semantics};
use partnergate::policies::{self, PackSource};
use serde_json::{json, Value};

fn eref(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": ty, "id": id}})
}

fn user(id: &str, admin: bool, partner: Option<&str>) -> Value {
    let mut attrs = json!({"email": format!("{id}@acme.example"), "account": eref("Account", "acme"),
        "is_admin": admin, "status": "active", "two_factor": true});
    if let Some(c) = partner {
        attrs["partner"] = json!({"company": eref("PartnerCompany", c), "verified": true,
            "scopes": ["users", "settings", "integrations", "billing"]});
    }
    json!({"uid": {"type": "User", "id": id}, "attrs": attrs, "parents": [{"type": "Account", "id": "acme"}]})
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/decisions.jsonl".into())
        .into();
    let pack = policies::load(&PackSource::new(
        "policies",
        Some("schemas/partnergate.cedarschema".into()),
    ))?;
    let mut config = AuditConfig::file(&path);
    config.redaction = Redaction {
        context_keys: vec![],
        entity_attrs: vec!["email".into()],
    };
    let (log, _) = AuditLog::open(config)?;
    let world = json!([
        user("alice", true, None),
        user("bob", false, None),
        user("pete", false, Some("globex")),
        {"uid": {"type": "Account", "id": "acme"}, "attrs": {"name": "Acme"}, "parents": []},
        {"uid": {"type": "PartnerCompany", "id": "globex"}, "attrs": {"name": "Globex", "status": "gold", "certified": true}, "parents": []},
        {"uid": {"type": "PartnerCompany", "id": "initech"}, "attrs": {"name": "Initech", "status": "silver", "certified": true}, "parents": []},
    ]);
    let invitee = |c: &str, s: &str| json!({"invitee": {"company": eref("PartnerCompany", c), "status": s, "certified": true}});
    let requests = [
        ("alice", "view_account", "Account::\"acme\"", None),
        ("bob", "invite_user", "Account::\"acme\"", None),
        (
            "alice",
            "invite_partner",
            "Account::\"acme\"",
            Some(invitee("globex", "gold")),
        ),
        (
            "alice",
            "invite_partner",
            "Account::\"acme\"",
            Some(invitee("initech", "silver")),
        ),
        ("pete", "dismiss_user", "User::\"alice\"", None),
        (
            "alice",
            "grant_partner_access",
            "User::\"bob\"",
            Some(invitee("initech", "silver")),
        ),
    ];
    let schema = pack.schema.as_ref();
    let entities = engine::parse_entities(schema, world.clone())?;
    // One slice shared by every decision over it: the log carries it once.
    let slice = audit::EntitySlice::new(world.clone());
    for (p, a, r, ctx) in requests {
        let request = engine::build_request(
            schema,
            engine::parse_uid("principal", &format!("User::\"{p}\""))?,
            engine::parse_uid("action", &format!("Action::\"{a}\""))?,
            engine::parse_uid("resource", r)?,
            ctx.clone(),
        )?;
        let start = std::time::Instant::now();
        let decision = engine::decide(&pack, &request, &entities, Semantics::FailClosed);
        log.log(
            DecisionEvent::new(
                format!("User::\"{p}\""),
                format!("Action::\"{a}\""),
                r,
                slice.clone(),
                decision,
            )
            .with_request_id(Some(format!("req-{p}-{a}")))
            .with_context(ctx)
            .with_latency_us(start.elapsed().as_micros() as u64),
        );
    }
    log.log(
        ChangeEvent::new(
            "User::\"alice\"",
            "user.dismiss",
            json!({"id": "bob", "status": "active", "email": "bob@acme.example"}),
            json!({"id": "bob", "status": "dismissed", "email": "bob@acme.example"}),
        )
        .request(Some("req-bob-dismiss".into())),
    );
    log.log(ReloadEvent {
        request_id: None,
        files: pack.files.iter().map(|f| f.display().to_string()).collect(),
        version: Some(pack.version.clone()),
        error: None,
    });
    log.shutdown();
    println!("wrote {} records to {}", log.written(), path.display());
    Ok(())
}
