//! `partnergate search subject|resource|action`: the sidecar's searches
//! from the command line, over the data directory's store, with the same
//! decision log (the `--audit-*` flags of `serve`) and page tokens signed
//! with the same key (`DATA_DIR/search.key`).

use std::io::Write;
use std::path::Path;

use clap::{Args, Subcommand};

use super::common::{EXIT_ERROR, EXIT_OK};
use super::partners::StateArgs;
use partnergate_core::runtime::Runtime;
use partnergate_policy::policies::PackSource;
use partnergate_search::{
    action_uid, parse_type, Limits, PageRequest, SearchError, SearchRequest, Searcher, Target,
    TokenKey,
};

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(subcommand)]
    pub command: SearchCommand,
}

/// The page and context of a search.
#[derive(Debug, Args, Clone)]
pub struct SearchOptions {
    /// The context as a JSON object, or @FILE to read it from a file.
    #[arg(long)]
    pub context: Option<String>,
    /// Results per page [default: 50, at most 1000].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Continue after a previous page (its `next` token).
    #[arg(long)]
    pub next_token: Option<String>,
    /// Print every page, not only the first.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Who may do ACTION to RESOURCE: the stored principals of --type.
    Subject {
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        options: SearchOptions,
        /// The searched principals' entity type, e.g. User.
        #[arg(long = "type")]
        principal_type: String,
        /// The action, e.g. dismiss_user or 'Action::"dismiss_user"'.
        #[arg(long)]
        action: String,
        /// The resource, e.g. 'Account::"acme"'.
        #[arg(long)]
        resource: String,
    },
    /// To which stored entities of --type may PRINCIPAL do ACTION.
    Resource {
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        options: SearchOptions,
        /// The principal, e.g. 'User::"pat"'.
        #[arg(long)]
        principal: String,
        /// The action, e.g. dismiss_user or 'Action::"dismiss_user"'.
        #[arg(long)]
        action: String,
        /// The searched resources' entity type, e.g. User.
        #[arg(long = "type")]
        resource_type: String,
    },
    /// What may PRINCIPAL do to RESOURCE: the schema's actions that apply.
    Action {
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        options: SearchOptions,
        /// The principal, e.g. 'User::"pat"'.
        #[arg(long)]
        principal: String,
        /// The resource, e.g. 'User::"emma"'.
        #[arg(long)]
        resource: String,
    },
}

fn action(s: &str) -> Result<cedar_policy::EntityUid, String> {
    let r = if s.contains("::") {
        partnergate_policy::engine::parse_uid("action", s)
    } else {
        action_uid("action", s)
    };
    r.map_err(|e| e.to_string())
}

fn uid(field: &str, s: &str) -> Result<cedar_policy::EntityUid, String> {
    partnergate_policy::engine::parse_uid(field, s).map_err(|e| e.to_string())
}

fn target(command: &SearchCommand) -> Result<Target, String> {
    Ok(match command {
        SearchCommand::Subject {
            principal_type,
            action: a,
            resource,
            ..
        } => Target::Subjects {
            principal_type: parse_type("type", principal_type).map_err(|e| e.to_string())?,
            action: action(a)?,
            resource: uid("resource", resource)?,
        },
        SearchCommand::Resource {
            principal,
            action: a,
            resource_type,
            ..
        } => Target::Resources {
            principal: uid("principal", principal)?,
            action: action(a)?,
            resource_type: parse_type("type", resource_type).map_err(|e| e.to_string())?,
        },
        SearchCommand::Action {
            principal,
            resource,
            ..
        } => Target::Actions {
            principal: uid("principal", principal)?,
            resource: uid("resource", resource)?,
        },
    })
}

fn context(options: &SearchOptions) -> Result<Option<serde_json::Value>, String> {
    let text = match &options.context {
        None => return Ok(None),
        Some(s) if s.starts_with('@') => {
            std::fs::read_to_string(Path::new(&s[1..])).map_err(|e| format!("{}: {e}", &s[1..]))?
        }
        Some(s) => s.clone(),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("--context: {e}"))
}

/// Run `partnergate search ...`.
pub fn run_search(a: SearchArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let (state, options) = match &a.command {
        SearchCommand::Subject { state, options, .. }
        | SearchCommand::Resource { state, options, .. }
        | SearchCommand::Action { state, options, .. } => (state.clone(), options.clone()),
    };
    match search(&a.command, &state, &options, out) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_ERROR
        }
    }
}

fn search(
    command: &SearchCommand,
    state: &StateArgs,
    options: &SearchOptions,
    out: &mut dyn Write,
) -> Result<(), String> {
    let req = SearchRequest::new(target(command)?).with_context(context(options)?);
    let source = PackSource::new(state.policies.clone(), Some(state.schema.clone()));
    let wired = Runtime::new(source)
        .sqlite_in(state.data_dir.clone())
        .audit(super::audit::audit_config(&state.audit, &state.data_dir))
        .audit_required(state.audit_required)
        .build()
        .map_err(|e| match e {
            partnergate_core::runtime::RuntimeError::Load(e) => e.render(),
            e => e.to_string(),
        })?;
    let key = TokenKey::load_or_create(&state.data_dir).map_err(|e| e.to_string())?;
    let searcher = Searcher::new(wired.authz.clone(), key, Limits::default());
    let mut token = options.next_token.clone();
    let mut results = Vec::new();
    let last = loop {
        let page = searcher
            .search(
                &req,
                &PageRequest {
                    limit: options.limit,
                    token: token.take(),
                    deadline: None,
                },
            )
            .map_err(|e: SearchError| e.to_string())?;
        results.extend(page.results.iter().map(ToString::to_string));
        if !options.all || page.next_token.is_empty() {
            break page;
        }
        token = Some(page.next_token);
    };
    wired.shutdown_log();
    let w = |e: std::io::Error| e.to_string();
    if state.json {
        let body = serde_json::json!({
            "results": results,
            "next_token": last.next_token,
            "count": results.len(),
            "total": last.total,
            "policy_version": last.policy_version,
        });
        writeln!(out, "{body}").map_err(w)?;
    } else {
        for r in &results {
            writeln!(out, "{r}").map_err(w)?;
        }
        if last.next_token.is_empty() {
            let total = last.total.unwrap_or(results.len());
            writeln!(
                out,
                "({total} in all; policy version {})",
                last.policy_version
            )
            .map_err(w)?;
        } else {
            writeln!(out, "(more: --next-token {})", last.next_token).map_err(w)?;
        }
    }
    Ok(())
}
