//! The orchestrator's tables, brought to core's store as named migrations
//! ([`Migration`]) that it runs after its own when the runtime opens it: the
//! partner registry (`partner_companies`, `partner_emails`), the index
//! of users by account the seat counts read (core's migration 2 made the
//! same tables in databases created before they moved here, so every
//! statement is `IF NOT EXISTS`), the lifecycle events' outbox
//! (`partner_events`, see `crate::events`), the request codes an
//! administrator hands a partner (`partner_request_codes`: only a SHA-256
//! of each code) and the index of access requests by account. It owns DDL
//! only: the queries are in `sqlite` and `postgres`.

use partnergate_core::store::Migration;

/// Every migration of the orchestrator, in order (names never change).
pub const MIGRATIONS: &[Migration] = &[REGISTRY, EVENTS, REQUESTS];

const REGISTRY: Migration = Migration {
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
};

/// The events outbox: one row per lifecycle change, written in the
/// change's transaction; `(account, seq)` is the order of delivery; the
/// delivery state (status, attempts, next attempt, lease, endpoints done)
/// beside it. `dedupe` makes an event once-only (ending soon).
const EVENTS: Migration = Migration {
    name: "orchestrator.2.events",
    sqlite: "CREATE TABLE IF NOT EXISTS partner_events (
            pos INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            account TEXT NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            user_id TEXT,
            actor TEXT NOT NULL,
            change_id TEXT,
            decision_id TEXT,
            created_ms INTEGER NOT NULL,
            data TEXT NOT NULL,
            dedupe TEXT UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_ms INTEGER NOT NULL,
            lease_owner TEXT,
            lease_until_ms INTEGER,
            done TEXT NOT NULL DEFAULT '[]',
            last_error TEXT,
            delivered_ms INTEGER,
            UNIQUE (account, seq)
        );
        CREATE INDEX IF NOT EXISTS partner_events_pending
            ON partner_events(account, seq) WHERE status = 'pending';
        CREATE INDEX IF NOT EXISTS partner_events_by_status ON partner_events(status, pos);",
    postgres: "CREATE TABLE IF NOT EXISTS partner_events (
            pos BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            account TEXT NOT NULL,
            seq BIGINT NOT NULL,
            kind TEXT NOT NULL,
            user_id TEXT,
            actor TEXT NOT NULL,
            change_id TEXT,
            decision_id TEXT,
            created_ms BIGINT NOT NULL,
            data TEXT NOT NULL,
            dedupe TEXT UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'dead')),
            attempts BIGINT NOT NULL DEFAULT 0,
            next_ms BIGINT NOT NULL,
            lease_owner TEXT,
            lease_until_ms BIGINT,
            done TEXT NOT NULL DEFAULT '[]',
            last_error TEXT,
            delivered_ms BIGINT,
            UNIQUE (account, seq)
        );
        CREATE INDEX IF NOT EXISTS partner_events_pending
            ON partner_events(account, seq) WHERE status = 'pending';
        CREATE INDEX IF NOT EXISTS partner_events_by_status ON partner_events(status, pos);",
};

/// The request codes (a hash of each, bound to its account) and the
/// index of access requests (`PartnerRequest` entities) by account.
const REQUESTS: Migration = Migration {
    name: "orchestrator.3.partner_requests",
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
};
