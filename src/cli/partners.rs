//! The orchestrator's command-line adapter: `partnergate partners|users|
//! seats|registry`. It opens the data directory's store itself and runs the
//! same [`Orchestrator`] code as the sidecar, wired by the same
//! [`Runtime`], decision log included (the `--audit-*` flags and defaults
//! of `serve`: `DATA_DIR/decisions.jsonl`). SQLite WAL lets it work beside a
//! running server (the server's memory sees the change after a restart);
//! the log file is locked by its writer, so beside a server give the CLI
//! its own `--audit-log` path.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use partnergate_audit::AuditError;
use partnergate_core::runtime::{Runtime, RuntimeError, Wired};

use super::common::{DEFAULT_POLICIES, DEFAULT_SCHEMA, EXIT_DENY, EXIT_ERROR, EXIT_OK};
use partnergate_orchestrator::access::AccessRequest;
use partnergate_orchestrator::store::RegistryCompany;
use partnergate_orchestrator::{
    ListedUser, Orchestrator, OrchestratorError, Outcome, ScopedWrites, UserView, WriteScope,
};
use partnergate_policy::policies::PackSource;

/// Where the orchestrator's state and rules are.
#[derive(Debug, Args, Clone)]
pub struct StateArgs {
    /// The data directory (its `store.db` is opened directly).
    #[arg(long, env = "PARTNERGATE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Directory of .cedar policy files (and `quotas.toml`).
    #[arg(long, env = "PARTNERGATE_POLICIES", default_value = DEFAULT_POLICIES)]
    pub policies: PathBuf,
    /// The Cedar schema.
    #[arg(long, env = "PARTNERGATE_SCHEMA", default_value = DEFAULT_SCHEMA)]
    pub schema: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Refuse an operation whose decision-log record cannot be made
    /// durable (as `serve --audit-required`).
    #[arg(long, env = "PARTNERGATE_AUDIT_REQUIRED")]
    pub audit_required: bool,
    #[command(flatten)]
    pub audit: super::audit::AuditLogArgs,
}

/// The partner access asked for: an end and the scopes.
#[derive(Debug, Args, Clone, Default)]
pub struct AccessArgs {
    /// The end of the access, RFC 3339 (e.g. 2027-06-30T00:00:00Z).
    #[arg(long, conflicts_with = "duration")]
    pub expires_at: Option<String>,
    /// The length of the access from now: 90d, 36h, 45m, 30s.
    #[arg(long)]
    pub duration: Option<String>,
    /// What the partner may administer, comma-separated (e.g.
    /// users,settings); default: `default_partner_scopes` of quotas.toml.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
}

impl AccessArgs {
    fn request(&self) -> AccessRequest {
        AccessRequest {
            expires_at: self.expires_at.clone(),
            duration: self.duration.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct PartnersArgs {
    #[command(subcommand)]
    pub command: PartnersCommand,
}

#[derive(Debug, Subcommand)]
pub enum PartnersCommand {
    /// Invite a partner by email. When the seats are full, asks (in a
    /// terminal) which partner to dismiss; otherwise lists them and fails.
    Invite {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        account: String,
        /// The user who invites.
        #[arg(long)]
        actor: String,
        #[arg(long)]
        email: String,
        /// A name, used for the new user's id.
        #[arg(long)]
        name: Option<String>,
        /// The active partner to dismiss in the same transaction.
        #[arg(long)]
        replace: Option<String>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Give partner access to an existing user.
    Grant {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        actor: String,
        #[arg(long)]
        replace: Option<String>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Give a partner a new end (within quotas.toml's `max_access_days`).
    Renew {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        actor: String,
        /// The new end, RFC 3339.
        #[arg(
            long,
            conflicts_with = "duration",
            required_unless_present = "duration"
        )]
        expires_at: Option<String>,
        /// The new length from now: 90d, 36h, ...
        #[arg(long)]
        duration: Option<String>,
    },
    /// End a partner's access now (the partner is dismissed; rehire works).
    End {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        actor: String,
    },
    /// Suspend a partner's access: it can do nothing until resumed; its
    /// seat stays taken and its end keeps running.
    Suspend {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        actor: String,
    },
    /// Resume a suspended partner's access.
    Resume {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        actor: String,
    },
    /// Mark every partner access that has ended (as the sidecar's sweep
    /// does): each is dismissed, its seat freed, with a change record by
    /// `system`.
    Sweep {
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Debug, Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// The employees list (partners marked "Partner").
    List {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        account: String,
    },
    /// Invite an ordinary user by email.
    Invite {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        account: String,
        #[arg(long)]
        actor: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// The invitee accepts the invitation (a partner is verified now).
    Accept {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
    },
    /// Dismiss a user (kept, never deleted).
    Dismiss {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        actor: String,
    },
    /// Hire a dismissed user back (a partner is re-verified and re-counted).
    Rehire {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        actor: String,
        #[arg(long)]
        replace: Option<String>,
        /// A partner's rehire: the new access (end, scopes).
        #[command(flatten)]
        access: AccessArgs,
    },
}

#[derive(Debug, Args)]
pub struct SeatsArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long)]
    pub account: String,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Load partner companies from a JSON file: `[{"id", "name", "status",
    /// "certified", "emails": [..]}]`, all or nothing.
    Import {
        #[command(flatten)]
        state: StateArgs,
        file: PathBuf,
    },
    /// Print the partner registry.
    List {
        #[command(flatten)]
        state: StateArgs,
    },
}

/// Why the CLI could not even start the operation.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Load(String),
    /// The decision log is locked by its writer, typically a sidecar on
    /// the same data directory: the command must not write unlogged.
    #[error("decision log {}: another process (a running sidecar?) is writing it; give this command a log of its own with --audit-log PATH, or send the request to the sidecar's HTTP API", .0.display())]
    LogInUse(PathBuf),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Open the orchestrator over a data directory (no file watching), with
/// the decision log the flags name; the [`Wired`] pieces are returned to
/// shut the log down when the command is done.
pub fn open(state: &StateArgs) -> Result<(Orchestrator, Wired), OpenError> {
    let source = PackSource::new(state.policies.clone(), Some(state.schema.clone()));
    let runtime = Runtime::new(source)
        .sqlite_in(state.data_dir.clone())
        .audit(super::audit::audit_config(&state.audit, &state.data_dir))
        .audit_required(state.audit_required);
    let (runtime, quotas) = partnergate_orchestrator::runtime::with_quotas(runtime)
        .map_err(|p| OpenError::Load(p.to_string()))?;
    let wired = runtime.build().map_err(|e| match e {
        RuntimeError::Load(e) => OpenError::Load(e.render()),
        RuntimeError::Audit(AuditError::Locked(path)) => OpenError::LogInUse(path),
        e => OpenError::Runtime(e),
    })?;
    let orchestrator = partnergate_orchestrator::runtime::orchestrator(&wired, quotas);
    Ok((orchestrator, wired))
}

pub(super) fn io(e: std::io::Error) -> u8 {
    let _ = e;
    EXIT_ERROR
}

/// Run `partnergate partners ...`.
pub fn run_partners(a: PartnersArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match a.command {
        PartnersCommand::Invite {
            state,
            account,
            actor,
            email,
            name,
            replace,
            access,
        } => with(&state, err, |o, err| {
            let mut replace = replace;
            let access = access.request();
            loop {
                match o.invite_partner(
                    &account,
                    &actor,
                    &email,
                    name.as_deref(),
                    (replace.as_deref(), &access),
                ) {
                    Err(OrchestratorError::LimitReached { limit, active })
                        if replace.is_none() && interactive() =>
                    {
                        if let Some(id) = choose(limit, &active, err) {
                            replace = Some(id);
                        } else {
                            writeln!(err, "cancelled: nobody was dismissed or invited")
                                .map_err(io)?;
                            return Ok(EXIT_ERROR);
                        }
                    }
                    r => return outcome(r, state.json, out, err),
                }
            }
        }),
        PartnersCommand::Grant {
            state,
            user,
            actor,
            replace,
            access,
        } => with(&state, err, |o, err| {
            outcome(
                o.grant_partner_access(&user, &actor, (replace.as_deref(), &access.request())),
                state.json,
                out,
                err,
            )
        }),
        PartnersCommand::Renew {
            state,
            user,
            actor,
            expires_at,
            duration,
        } => with(&state, err, |o, err| {
            let req = AccessRequest {
                expires_at,
                duration,
                scopes: None,
            };
            outcome(o.renew(&user, &actor, &req), state.json, out, err)
        }),
        PartnersCommand::End { state, user, actor } => with(&state, err, |o, err| {
            outcome(o.end_access(&user, &actor), state.json, out, err)
        }),
        PartnersCommand::Suspend { state, user, actor } => with(&state, err, |o, err| {
            outcome(o.suspend(&user, &actor), state.json, out, err)
        }),
        PartnersCommand::Resume { state, user, actor } => with(&state, err, |o, err| {
            outcome(o.resume(&user, &actor), state.json, out, err)
        }),
        PartnersCommand::Sweep { state } => with(&state, err, |o, err| match o.end_expired() {
            Ok(ended) => {
                if state.json {
                    writeln!(out, "{}", serde_json::json!({"ended": ended})).map_err(io)?;
                } else {
                    for u in &ended {
                        writeln!(out, "ended {}", describe(u)).map_err(io)?;
                    }
                    writeln!(out, "{} partner access(es) ended", ended.len()).map_err(io)?;
                }
                Ok(EXIT_OK)
            }
            Err(e) => refusal(e, err),
        }),
    }
}

/// Run `partnergate users ...`.
pub fn run_users(a: UsersArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match a.command {
        UsersCommand::List { state, account } => {
            with(&state, err, |o, err| match o.users(&account) {
                Ok(users) => {
                    print_users(&users, state.json, out).map_err(io)?;
                    Ok(EXIT_OK)
                }
                Err(e) => refusal(e, err),
            })
        }
        UsersCommand::Invite {
            state,
            account,
            actor,
            email,
            name,
        } => with(&state, err, |o, err| {
            outcome(
                o.invite_user(&account, &actor, &email, name.as_deref()),
                state.json,
                out,
                err,
            )
        }),
        UsersCommand::Accept { state, user } => with(&state, err, |o, err| {
            outcome(o.accept(&user), state.json, out, err)
        }),
        UsersCommand::Dismiss { state, user, actor } => with(&state, err, |o, err| {
            outcome(o.dismiss(&user, &actor), state.json, out, err)
        }),
        UsersCommand::Rehire {
            state,
            user,
            actor,
            replace,
            access,
        } => with(&state, err, |o, err| {
            outcome(
                o.rehire(&user, &actor, (replace.as_deref(), &access.request())),
                state.json,
                out,
                err,
            )
        }),
    }
}

/// Run `partnergate seats ...`.
pub fn run_seats(a: SeatsArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    with(&a.state, err, |o, err| match o.seats(&a.account) {
        Ok(s) => {
            if a.state.json {
                writeln!(out, "{}", serde_json::json!(s)).map_err(io)?;
            } else {
                let suspended = if s.suspended_partners > 0 {
                    format!(", {} suspended", s.suspended_partners)
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "account {}: paid users {}, administrators {}, partners {} (limit {}){suspended}",
                    s.account, s.paid_users, s.administrators, s.partners, s.partner_limit
                )
                .map_err(io)?;
            }
            Ok(EXIT_OK)
        }
        Err(e) => refusal(e, err),
    })
}

/// Run `partnergate registry ...`.
pub fn run_registry(a: RegistryArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match a.command {
        RegistryCommand::Import { state, file } => match read_registry_file(&file) {
            Ok(companies) => import_registry(&state, &file, companies, out, err),
            Err(message) => {
                let _ = writeln!(err, "error: {message}");
                EXIT_ERROR
            }
        },
        RegistryCommand::List { state } => list_registry(&state, out, err),
    }
}

/// The companies of a registry file (`[..]` or `{"companies": [..]}`); the
/// error names the file, and where the JSON is malformed, the line and column.
fn read_registry_file(file: &Path) -> Result<Vec<RegistryCompany>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: {e} (nothing was imported)",
            file.display(),
            e.line(),
            e.column()
        )
    })?;
    let value = match value {
        serde_json::Value::Object(mut m) if m.contains_key("companies") => {
            m.remove("companies").unwrap_or_default()
        }
        v => v,
    };
    serde_json::from_value(value).map_err(|e| {
        format!(
            "{}: {e}; expected [{{\"id\", \"name\", \"status\", \"certified\", \"emails\"}}] (nothing was imported)",
            file.display()
        )
    })
}

/// Save `companies` (read from `file`) into the registry in one write.
fn import_registry(
    state: &StateArgs,
    file: &Path,
    companies: Vec<RegistryCompany>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    with(state, err, |o, err| match o.put_companies(companies) {
        Ok(saved) => {
            let emails: usize = saved.iter().map(|c| c.emails.len()).sum();
            writeln!(
                out,
                "imported {} partner companies ({emails} emails) from {}",
                saved.len(),
                file.display()
            )
            .map_err(io)?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            writeln!(err, "error: {}: {e} (nothing was imported)", file.display()).map_err(io)?;
            Ok(EXIT_ERROR)
        }
    })
}

/// Print the registry: JSON, or a tab-separated line per company.
fn list_registry(state: &StateArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    with(state, err, |o, err| match o.companies() {
        Ok(cs) => {
            if state.json {
                writeln!(out, "{}", serde_json::json!(cs)).map_err(io)?;
            } else {
                for c in cs {
                    let certified = if c.certified {
                        "certified"
                    } else {
                        "not certified"
                    };
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{certified}\t{}",
                        c.id,
                        c.name,
                        c.status,
                        c.emails.join(",")
                    )
                    .map_err(io)?;
                }
            }
            Ok(EXIT_OK)
        }
        Err(e) => refusal(e, err),
    })
}

pub(super) fn with(
    state: &StateArgs,
    err: &mut dyn Write,
    f: impl FnOnce(&ScopedWrites<'_>, &mut dyn Write) -> Result<u8, u8>,
) -> u8 {
    let (orch, wired) = match open(state) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_ERROR;
        }
    };
    let code = f(&orch.with(WriteScope::default()), err).unwrap_or_else(|code| code);
    wired.shutdown_log();
    code
}

fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

pub(super) fn describe(u: &UserView) -> String {
    let company = u
        .partner
        .as_ref()
        .map(|p| {
            let mut s = format!(", company {}", p.company);
            if let Some(end) = &p.expires_at {
                s.push_str(&format!(", ends {end}"));
            }
            if let Some(scopes) = &p.scopes {
                s.push_str(&format!(", scopes {}", scopes.join(",")));
            }
            if p.suspended {
                s.push_str(", suspended");
            }
            s
        })
        .unwrap_or_default();
    format!("{} <{}> (status {}{company})", u.id, u.email, u.status)
}

/// The selection prompt: which active partner to dismiss.
fn choose(limit: u32, active: &[UserView], err: &mut dyn Write) -> Option<String> {
    let _ = writeln!(
        err,
        "The maximum number of partners ({limit}) is reached: dismiss one of them and invite the new one."
    );
    let mut items: Vec<String> = active.iter().map(describe).collect();
    items.push("cancel (dismiss nobody)".into());
    let picked = dialoguer::Select::new()
        .with_prompt("Which partner should be dismissed?")
        .items(&items)
        .default(0)
        .interact_opt()
        .ok()
        .flatten()?;
    active.get(picked).map(|u| u.id.clone())
}

fn outcome(
    r: Result<Outcome, OrchestratorError>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, u8> {
    match r {
        Ok(o) => {
            if json {
                writeln!(out, "{}", serde_json::json!(o)).map_err(io)?;
            } else {
                writeln!(out, "{}", describe(&o.user)).map_err(io)?;
                if let Some(d) = &o.dismissed {
                    writeln!(out, "dismissed {}", describe(d)).map_err(io)?;
                }
            }
            Ok(EXIT_OK)
        }
        Err(e) => refusal(e, err),
    }
}

pub(super) fn refusal(e: OrchestratorError, err: &mut dyn Write) -> Result<u8, u8> {
    writeln!(err, "error ({}): {e}", e.code()).map_err(io)?;
    match &e {
        OrchestratorError::Denied { reasons, .. } => {
            for r in reasons {
                writeln!(
                    err,
                    "  policy {}: {}",
                    r.id,
                    r.description.as_deref().unwrap_or("")
                )
                .map_err(io)?;
            }
            Ok(EXIT_DENY)
        }
        OrchestratorError::LimitReached { active, .. } => {
            writeln!(err, "active partners:").map_err(io)?;
            for u in active {
                writeln!(err, "  {}", describe(u)).map_err(io)?;
            }
            writeln!(
                err,
                "hint: run again with --replace <id> to dismiss one of them in the same step"
            )
            .map_err(io)?;
            Ok(EXIT_ERROR)
        }
        _ => Ok(EXIT_ERROR),
    }
}

fn print_users(users: &[ListedUser], json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::json!(users));
    }
    writeln!(
        out,
        "{:<22} {:<28} {:<14} {:<8} {:<25} SCOPES",
        "ID", "EMAIL", "STATUS", "MARK", "ENDS"
    )?;
    for u in users {
        let p = u.user.partner.as_ref();
        writeln!(
            out,
            "{:<22} {:<28} {:<14} {:<8} {:<25} {}",
            u.user.id,
            u.user.email,
            u.list_status,
            u.mark.unwrap_or(""),
            p.and_then(|p| p.expires_at.as_deref()).unwrap_or(""),
            p.and_then(|p| p.scopes.as_ref())
                .map(|s| s.join(","))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}
