//! The orchestrator's tables, brought to core's store as named migrations
//! ([`Migration`]) that it runs after its own when the runtime opens it: the
//! partner registry (`partner_companies`, `partner_emails`) and the index
//! of users by account the seat counts read (core's migration 2 made the
//! same tables in databases created before they moved here, so those
//! statements are `IF NOT EXISTS`); the request codes an administrator
//! hands a partner (`partner_request_codes`: only a SHA-256 of each code)
//! and the index of access requests by account. It owns DDL only: the
//! queries are in `sqlite` and `postgres`.

use partnergate_core::store::Migration;

/// Every migration of the orchestrator, in order (names never change).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "orchestrator.1.registry",
        sqlite: "CREATE TABLE IF NOT EXISTS partner_companies (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            certified INTEGER NOT NULL CHECK (certified IN (0, 1)),
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
        );
        CREATE TABLE IF NOT EXISTS partner_emails (
            email TEXT PRIMARY KEY,
            company_id TEXT NOT NULL REFERENCES partner_companies(id) ON DELETE CASCADE
        );
        CREATE INDEX IF NOT EXISTS partner_emails_by_company ON partner_emails(company_id);
        CREATE INDEX IF NOT EXISTS entities_users_by_account
            ON entities(json_extract(json, '$.attrs.account.__entity.id'))
            WHERE entity_type = 'User';",
        postgres: "CREATE TABLE IF NOT EXISTS partner_companies (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            certified BOOLEAN NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS partner_emails (
            email TEXT PRIMARY KEY,
            company_id TEXT NOT NULL REFERENCES partner_companies(id) ON DELETE CASCADE
        );
        CREATE INDEX IF NOT EXISTS partner_emails_by_company ON partner_emails(company_id);
        CREATE INDEX IF NOT EXISTS entities_users_by_account
            ON entities ((json::jsonb #>> '{attrs,account,__entity,id}'))
            WHERE entity_type = 'User';",
    },
    Migration {
        name: "orchestrator.2.partner_requests",
        sqlite: "CREATE TABLE IF NOT EXISTS partner_request_codes (
            hash TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at INTEGER,
            used_by TEXT
        );
        CREATE INDEX IF NOT EXISTS partner_request_codes_by_account
            ON partner_request_codes(account, expires_at);
        CREATE INDEX IF NOT EXISTS entities_requests_by_account
            ON entities(json_extract(json, '$.attrs.account.__entity.id'))
            WHERE entity_type = 'PartnerRequest';",
        postgres: "CREATE TABLE IF NOT EXISTS partner_request_codes (
            hash TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            used_at BIGINT,
            used_by TEXT
        );
        CREATE INDEX IF NOT EXISTS partner_request_codes_by_account
            ON partner_request_codes(account, expires_at);
        CREATE INDEX IF NOT EXISTS entities_requests_by_account
            ON entities ((json::jsonb #>> '{attrs,account,__entity,id}'))
            WHERE entity_type = 'PartnerRequest';",
    },
];
