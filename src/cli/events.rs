//! `partnergate events list|redeliver`: the partner lifecycle events'
//! outbox of a data directory (SQLite) or a PostgreSQL store, read and
//! redelivered directly in the store (a running sidecar delivers what is
//! made pending). The listing's JSON is the same as `GET /v1/events`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::common::{EXIT_ERROR, EXIT_INVALID, EXIT_OK};
use partnergate_orchestrator::events::{EventFilter, EventStore};
use partnergate_orchestrator::migrations::MIGRATIONS;

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: EventsCommand,
}

/// Where the outbox is.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The data directory (its `store.db`).
    #[arg(long, env = "PARTNERGATE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// `sqlite` (the data directory's) or a PostgreSQL URL, as `serve --store`.
    #[arg(long, env = "PARTNERGATE_STORE", default_value = "sqlite")]
    pub store: String,
}

/// Which events.
#[derive(Debug, Args, Clone)]
pub struct FilterArgs {
    /// Only this account's.
    #[arg(long)]
    pub account: Option<String>,
    /// Only this kind (e.g. partner.suspended).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this delivery state: pending, delivered or dead.
    #[arg(long)]
    pub status: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// The events with their delivery state, one JSON object a line, by position.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Events after this position (the last line's `pos`).
        #[arg(long)]
        after: Option<i64>,
        /// Most events printed.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Deliver events again, to every endpoint: one event (--id), or every
    /// event the filter takes (at least one of --account, --kind, --status).
    Redeliver {
        #[command(flatten)]
        store: StoreArgs,
        /// The event id (evt_...).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

fn open(store: &StoreArgs) -> Result<Arc<dyn EventStore>, String> {
    let spec =
        partnergate_core::store::StoreSpec::parse(Some(&store.store)).map_err(|e| e.to_string())?;
    Ok(match spec {
        partnergate_core::store::StoreSpec::Sqlite => Arc::new(
            partnergate_core::store::sqlite::SqliteStore::open_in_with(&store.data_dir, MIGRATIONS)
                .map_err(|e| e.to_string())?,
        ),
        partnergate_core::store::StoreSpec::Postgres(url) => Arc::new(
            partnergate_core::store::postgres::PgStore::open_with(&url, "cli", MIGRATIONS)
                .map_err(|e| e.to_string())?,
        ),
    })
}

fn filter(f: FilterArgs) -> Result<EventFilter, String> {
    partnergate_server::events::filter_of(f.account, f.kind, f.status)
}

/// Run `partnergate events ...`.
pub fn run_events(a: EventsArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match a.command {
        EventsCommand::List {
            store,
            filter: f,
            after,
            limit,
        } => list(&store, f, after, limit, out),
        EventsCommand::Redeliver {
            store,
            id,
            filter: f,
        } => redeliver(&store, id, f, out),
    };
    match result {
        Ok(code) => code,
        Err((code, message)) => {
            let _ = writeln!(err, "error: {message}");
            code
        }
    }
}

fn list(
    store: &StoreArgs,
    f: FilterArgs,
    after: Option<i64>,
    limit: i64,
    out: &mut dyn Write,
) -> Result<u8, (u8, String)> {
    if !(1..=100_000).contains(&limit) {
        return Err((EXIT_INVALID, "--limit: 1 to 100000".into()));
    }
    let mut f = filter(f).map_err(|m| (EXIT_INVALID, m))?;
    f.after = after;
    let events = open(store).map_err(|m| (EXIT_ERROR, m))?;
    let rows = events
        .list_events(&f, limit)
        .map_err(|e| (EXIT_ERROR, e.to_string()))?;
    for r in &rows {
        writeln!(out, "{}", partnergate_server::events::listed(r))
            .map_err(|e| (EXIT_ERROR, e.to_string()))?;
    }
    Ok(EXIT_OK)
}

fn redeliver(
    store: &StoreArgs,
    id: Option<String>,
    f: FilterArgs,
    out: &mut dyn Write,
) -> Result<u8, (u8, String)> {
    let any_filter = f.account.is_some() || f.kind.is_some() || f.status.is_some();
    if id.is_none() && !any_filter {
        return Err((
            EXIT_INVALID,
            "give --id, or at least one of --account, --kind, --status (redelivering every event is not done by accident)".into(),
        ));
    }
    let mut f = filter(f).map_err(|m| (EXIT_INVALID, m))?;
    f.id = id;
    let events = open(store).map_err(|m| (EXIT_ERROR, m))?;
    let n = events
        .redeliver(&f)
        .map_err(|e| (EXIT_ERROR, e.to_string()))?;
    writeln!(out, "{n} event(s) pending again").map_err(|e| (EXIT_ERROR, e.to_string()))?;
    Ok(if n == 0 { EXIT_ERROR } else { EXIT_OK })
}
