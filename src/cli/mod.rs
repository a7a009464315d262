//! The command-line adapter: the clap definition of the command line
//! ([`Cli`], [`Command`]) and [`run`], which hands each command to its
//! file. It parses arguments into library calls and renders results; no
//! decision logic lives here.
//!
//! One file per command (`check`, `authorize`, `test`, `fmt`, `serve`,
//! `import`, `prove`, `audit` (its database side in `audit_pg`), `partners`,
//! `search`); what they share is in
//! `common` (exit codes, default paths, [`CliError`]) and `pack_args` (the
//! pack and limit flags, loading a pack). No command file names this one or
//! another command's file (except the `--audit-*` flags of `audit`).
//!
//! Exit codes follow the Cedar CLI: 0 success, 1 error, 2 the decision was
//! Deny (`authorize`), 3 validation failed (`check`).

pub mod audit;
pub mod audit_pg;
pub mod authorize;
pub mod check;
pub mod common;
pub mod events;
pub mod fmt;
pub mod import;
pub mod log_lines;
pub mod pack_args;
pub mod partner_requests;
pub mod partners;
pub mod prove;
pub mod search;
pub mod serve;
pub mod test;

use std::io::Write;

use clap::{Parser, Subcommand};

pub use authorize::AuthorizeArgs;
pub use check::CheckArgs;
pub use common::{
    CliError, DEFAULT_POLICIES, DEFAULT_SCHEMA, EXIT_DENY, EXIT_ERROR, EXIT_INVALID, EXIT_OK,
};
pub use fmt::{write_atomically, FmtArgs};
pub use import::ImportArgs;
pub use pack_args::{load_exit_code, LimitArgs, PackArgs};
pub use serve::{init_logging, serve_config, LogFormat, ServeArgs};
pub use test::TestArgs;

#[derive(Debug, Parser)]
#[command(
    name = "partnergate",
    version,
    about = "Cedar authorization engine and sidecar for partner access to customer accounts",
    after_help = "Exit codes: 0 success, 1 error, 2 decision was Deny (authorize), 3 validation failed (check)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and strictly validate the policies against the schema.
    Check(check::CheckArgs),
    /// Evaluate one request and print the decision, reasons and errors.
    Authorize(authorize::AuthorizeArgs),
    /// Run policy test suites (Cedar run-tests JSON or PartnerGate TOML) and report coverage.
    Test(test::TestArgs),
    /// Format the policy files (cedar-policy-formatter).
    Fmt(fmt::FmtArgs),
    /// Run the HTTP authorization sidecar (hot-reloads the policies).
    Serve(Box<serve::ServeArgs>),
    /// Bulk-load Cedar entity JSON into the store of a data directory.
    Import(import::ImportArgs),
    /// Prove invariants (ceilings, floors, never-errors) for every request and entity store, with cvc5.
    Prove(prove::ProveArgs),
    /// The decision log: verify its hash chain, query it, replay it against candidate policies.
    Audit(audit::AuditArgs),
    /// Partner users: invite (asks which partner to dismiss when the seats are full), grant.
    Partners(partners::PartnersArgs),
    /// Partner access requests: request codes, a partner's request, the
    /// list, approve, decline, the sweep of unanswered requests.
    Requests(partner_requests::RequestsArgs),
    /// Account users: list, invite, accept, dismiss, rehire.
    Users(partners::UsersArgs),
    /// Seat counts of an account (partners are neither paid users nor administrators).
    Seats(partners::SeatsArgs),
    /// The partner registry: import, list.
    Registry(partners::RegistryArgs),
    /// Who may, to which, what: subject, resource and action search over the store.
    Search(search::SearchArgs),
    /// The partner lifecycle events: list them with their delivery state, redeliver.
    Events(events::EventsArgs),
}

/// Run a parsed command line; returns the process exit code. Output goes to
/// `out`, problems to `err`.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match cli.command {
        Command::Check(a) => check::run_check(&a, out, err),
        Command::Authorize(a) => authorize::run_authorize(&a, out, err),
        Command::Test(a) => test::run_test(&a, out, err),
        Command::Fmt(a) => fmt::run_fmt(&a, out, err),
        Command::Serve(a) => serve::run_serve(*a, err),
        Command::Import(a) => import::run_import(&a, out, err),
        Command::Prove(a) => prove::run_prove(&a, out, err).map_err(CliError::from),
        Command::Audit(a) => return audit::run(&a, out, err),
        Command::Partners(a) => Ok(partners::run_partners(a, out, err)),
        Command::Requests(a) => Ok(partner_requests::run(a, out, err)),
        Command::Users(a) => Ok(partners::run_users(a, out, err)),
        Command::Seats(a) => Ok(partners::run_seats(a, out, err)),
        Command::Registry(a) => Ok(partners::run_registry(a, out, err)),
        Command::Search(a) => Ok(search::run_search(a, out, err)),
        Command::Events(a) => Ok(events::run_events(a, out, err)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn serve_flags_default_to_serve_config_default() {
        // One set of defaults: `partnergate serve` with no flags configures
        // what `ServeConfig::default()` does (the decision log aside: the
        // binary turns it on, the library leaves it to the embedder).
        let Command::Serve(args) = Cli::try_parse_from(["partnergate", "serve"])
            .unwrap()
            .command
        else {
            panic!("not serve");
        };
        let from_flags = serve_config(*args).unwrap();
        let default = partnergate_server::ServeConfig::default();
        let view = |c: &partnergate_server::ServeConfig| {
            format!(
                "{:?}",
                (
                    (&c.policies, &c.schema, &c.data_dir, c.bind, &c.token_file),
                    (
                        c.protect_queries,
                        c.max_batch,
                        c.max_body_bytes,
                        c.max_body_bytes_in_flight,
                        c.request_timeout
                    ),
                    (
                        c.shutdown_grace,
                        c.watch,
                        c.prove_on_reload,
                        &c.invariants,
                        &c.store
                    ),
                    (
                        c.audit_required,
                        &c.shadow_policies,
                        c.limits,
                        c.header_timeout
                    ),
                    (
                        c.idle_timeout,
                        c.max_connections,
                        c.protect_metrics,
                        &c.public_url
                    ),
                    (c.request_entities, c.console, &c.tests, c.full_reload),
                )
            )
        };
        assert_eq!(view(&from_flags), view(&default));
    }
}
