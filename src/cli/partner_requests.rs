//! `partnergate requests ...`: access requests from the command
//! line — an administrator's request code, a partner's request, the list,
//! an approval (narrowing, never widening) and a decline, and the sweep of
//! unanswered requests. A thin adapter over the same [`Orchestrator`]
//! operations as the HTTP endpoints; output and exit codes as the other
//! `partners` commands.
//!
//! [`Orchestrator`]: partnergate_orchestrator::Orchestrator

use std::io::Write;

use clap::{Args, Subcommand};

use super::common::EXIT_OK;
use super::partners::{describe, io, refusal, with, StateArgs};
use partnergate_orchestrator::access::AccessRequest;
use partnergate_orchestrator::{OrchestratorError, RequestOutcome, RequestView};

#[derive(Debug, Args)]
pub struct RequestsArgs {
    #[command(subcommand)]
    pub command: RequestsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Make a request code to hand to a partner (an administrator of the
    /// account; single use; shown once).
    Code {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        account: String,
        #[arg(long)]
        actor: String,
    },
    /// Ask for access to an account, as a person of a certified Gold
    /// partner company, with a request code of the account.
    Ask {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        account: String,
        /// The person asking (an email of the partner registry).
        #[arg(long)]
        email: String,
        /// The request code an administrator of the account made.
        #[arg(long)]
        code: Option<String>,
        /// The scopes asked for, comma-separated (default: the default set).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// The length asked for, from the approval: 90d, 36h, ...
        #[arg(long)]
        duration: Option<String>,
    },
    /// The requests to an account, newest first.
    List {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        account: String,
    },
    /// Approve a request (an administrator of the account): optionally
    /// fewer scopes and a shorter length, never more; `--replace` the
    /// partner to dismiss when the seats are full.
    Approve {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        request: String,
        #[arg(long)]
        actor: String,
        #[arg(long)]
        replace: Option<String>,
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        duration: Option<String>,
    },
    /// Decline a request (an administrator of the account).
    Decline {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        request: String,
        #[arg(long)]
        actor: String,
    },
    /// Mark every pending request whose time has passed as expired (as the
    /// sidecar's sweep does).
    Sweep {
        #[command(flatten)]
        state: StateArgs,
    },
}

fn line(r: &RequestView) -> String {
    let length = r
        .duration_ms
        .map_or_else(String::new, |ms| format!(", for {} h", ms / 3_600_000));
    format!(
        "{} {} from {} ({}) to account {}: scopes {}{length}, made {}, expires {}",
        r.id,
        r.status.as_str(),
        r.email,
        r.company,
        r.account,
        r.scopes.join(","),
        r.requested_at,
        r.expires_at
    )
}

fn answered(
    r: Result<RequestOutcome, OrchestratorError>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, u8> {
    match r {
        Ok(o) => {
            if json {
                writeln!(out, "{}", serde_json::json!(o)).map_err(io)?;
            } else {
                writeln!(out, "{}", line(&o.request)).map_err(io)?;
                if let Some(u) = &o.user {
                    writeln!(out, "partner {}", describe(u)).map_err(io)?;
                }
                if let Some(d) = &o.dismissed {
                    writeln!(out, "dismissed {}", describe(d)).map_err(io)?;
                }
            }
            Ok(EXIT_OK)
        }
        Err(e) => refusal(e, err),
    }
}

/// Run `partnergate requests ...`.
pub fn run(a: RequestsArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match a.command {
        RequestsCommand::Code {
            state,
            account,
            actor,
        } => with(&state, err, |o, err| {
            match o.create_request_code(&account, &actor) {
                Ok(c) if state.json => {
                    writeln!(out, "{}", serde_json::json!(c)).map_err(io)?;
                    Ok(EXIT_OK)
                }
                Ok(c) => {
                    writeln!(
                        out,
                        "request code for account {}: {} (single use, expires {})",
                        c.account, c.code, c.expires_at
                    )
                    .map_err(io)?;
                    Ok(EXIT_OK)
                }
                Err(e) => refusal(e, err),
            }
        }),
        RequestsCommand::Ask {
            state,
            account,
            email,
            code,
            scopes,
            duration,
        } => with(&state, err, |o, err| {
            let ask = AccessRequest {
                expires_at: None,
                duration,
                scopes,
            };
            answered(
                o.request_access(&account, &email, code.as_deref(), &ask),
                state.json,
                out,
                err,
            )
        }),
        RequestsCommand::List { state, account } => {
            with(&state, err, |o, err| match o.requests(&account) {
                Ok(list) if state.json => {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"account": account, "requests": list})
                    )
                    .map_err(io)?;
                    Ok(EXIT_OK)
                }
                Ok(list) => {
                    for r in &list {
                        writeln!(out, "{}", line(r)).map_err(io)?;
                    }
                    Ok(EXIT_OK)
                }
                Err(e) => refusal(e, err),
            })
        }
        RequestsCommand::Approve {
            state,
            request,
            actor,
            replace,
            scopes,
            duration,
        } => with(&state, err, |o, err| {
            let narrowed = AccessRequest {
                expires_at: None,
                duration,
                scopes,
            };
            answered(
                o.approve_request(&request, &actor, (replace.as_deref(), &narrowed)),
                state.json,
                out,
                err,
            )
        }),
        RequestsCommand::Decline {
            state,
            request,
            actor,
        } => with(&state, err, |o, err| {
            answered(o.decline_request(&request, &actor), state.json, out, err)
        }),
        RequestsCommand::Sweep { state } => with(&state, err, |o, err| match o.expire_requests() {
            Ok(expired) => {
                if state.json {
                    writeln!(out, "{}", serde_json::json!({"expired": expired})).map_err(io)?;
                } else {
                    for r in &expired {
                        writeln!(out, "expired {}", line(r)).map_err(io)?;
                    }
                    writeln!(out, "{} request(s) expired", expired.len()).map_err(io)?;
                }
                Ok(EXIT_OK)
            }
            Err(e) => refusal(e, err),
        }),
    }
}
