//! The naive handler of issue #14: what one writes by hand with axum and
//! `cedar-policy` in an afternoon, to compare PartnerGate against (in
//! `scripts/perf.sh`). Same axum, tokio and allocator (mimalloc) as
//! `partnergate serve`; no index, no cache, no decision log.
//!
//! `naive_cedar BIND POLICIES_DIR SCHEMA ENTITIES_JSON`
//!
//! At start it reads every `.cedar` file of POLICIES_DIR (sorted; a
//! policy's id is its `@id` annotation, as in PartnerGate), the schema, and
//! the entities JSON once into one `cedar_policy::Entities` (validated
//! against the schema, which adds the action entities). It answers:
//! - `POST /v1/is_authorized` with PartnerGate's body shape (`principal`,
//!   `action`, `resource` as `Type::"id"` strings, optional `context`) by
//!   running `Authorizer::is_authorized` over the full entity set and the
//!   full policy set, returning `{decision, reasons: [{id}], errors}`;
//! - `PUT /v1/entities` (an array of entity JSON, as PartnerGate takes it)
//!   by upserting them into the set (Cedar recomputes the transitive
//!   closure of the whole set: that is the naive cost of a write);
//! - `GET /readyz`.
//!
//! It owns nothing PartnerGate uses and must never know PartnerGate's
//! code: only the wire format is shared. Loopback only in the benchmarks.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, Policy, PolicyId, PolicySet, Request, Schema,
};
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What every request reads.
struct Naive {
    policies: PolicySet,
    schema: Schema,
    entities: RwLock<Arc<Entities>>,
    /// One write at a time (reads go on over the previous set meanwhile).
    writer: Mutex<()>,
    authorizer: Authorizer,
}

/// A refused request: its message, answered as a 400.
struct Bad(String);

impl IntoResponse for Bad {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": "bad_request", "message": self.0}).to_string(),
        )
            .into_response()
    }
}

fn bad(msg: impl std::fmt::Display) -> Bad {
    Bad(msg.to_string())
}

fn poisoned<T>(_: T) -> Bad {
    bad("the entity set is poisoned")
}

fn uid(field: &str, s: &str) -> Result<EntityUid, Bad> {
    EntityUid::from_str(s).map_err(|e| bad(format!("field `{field}`: {e}")))
}

fn decide(state: &Naive, body: &[u8]) -> Result<Value, Bad> {
    let mut q: Value = serde_json::from_slice(body).map_err(bad)?;
    let field = |q: &Value, f: &str| -> Result<EntityUid, Bad> {
        let s = q.get(f).and_then(Value::as_str);
        uid(
            f,
            s.ok_or_else(|| bad(format!("field `{f}`: a `Type::\"id\"` string")))?,
        )
    };
    let action = field(&q, "action")?;
    let context = match q.get_mut("context").map(Value::take) {
        None | Some(Value::Null) => Context::empty(),
        Some(v) => Context::from_json_value(v, Some((&state.schema, &action))).map_err(bad)?,
    };
    let request = Request::new(
        field(&q, "principal")?,
        action,
        field(&q, "resource")?,
        context,
        Some(&state.schema),
    )
    .map_err(bad)?;
    let entities = state
        .entities
        .read()
        .map(|g| Arc::clone(&g))
        .map_err(poisoned)?;
    let answer = state
        .authorizer
        .is_authorized(&request, &state.policies, &entities);
    let reasons: Vec<Value> = answer
        .diagnostics()
        .reason()
        .map(|id| json!({"id": id.to_string()}))
        .collect();
    let errors: Vec<String> = answer
        .diagnostics()
        .errors()
        .map(ToString::to_string)
        .collect();
    let decision = match answer.decision() {
        cedar_policy::Decision::Allow => "Allow",
        cedar_policy::Decision::Deny => "Deny",
    };
    Ok(json!({"decision": decision, "reasons": reasons, "errors": errors}))
}

async fn is_authorized(State(state): State<Arc<Naive>>, body: Bytes) -> Response {
    match decide(&state, &body) {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(r) => r.into_response(),
    }
}

fn upsert(state: &Naive, body: &[u8]) -> Result<usize, Bad> {
    let v: Value = serde_json::from_slice(body).map_err(bad)?;
    let new = Entities::from_json_value(v, Some(&state.schema)).map_err(bad)?;
    let count = new.iter().count();
    let _one_writer = state.writer.lock().map_err(|_| bad("a writer panicked"))?;
    let current = Entities::clone(state.entities.read().map_err(poisoned)?.as_ref());
    let next = current
        .upsert_entities(new.iter().cloned(), Some(&state.schema))
        .map_err(bad)?;
    *state.entities.write().map_err(poisoned)? = Arc::new(next);
    Ok(count)
}

async fn put_entities(State(state): State<Arc<Naive>>, body: Bytes) -> Response {
    match upsert(&state, &body) {
        Ok(n) => (
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "upserted": n }).to_string(),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn readyz() -> &'static str {
    "ready"
}

fn load_policies(dir: &Path) -> Result<PolicySet, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut set = PolicySet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let parsed = PolicySet::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        for p in parsed.policies() {
            let named: Policy = match p.annotation("id") {
                Some(id) => p.new_id(PolicyId::new(id)),
                None => p.clone(),
            };
            set.add(named)
                .map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    Ok(set)
}

fn load(args: &[String]) -> Result<(String, Naive), String> {
    let [bind, dir, schema, entities] = args else {
        return Err("usage: naive_cedar BIND POLICIES_DIR SCHEMA ENTITIES_JSON".into());
    };
    let text = std::fs::read_to_string(schema).map_err(|e| format!("{schema}: {e}"))?;
    let (schema, _warnings) =
        Schema::from_cedarschema_str(&text).map_err(|e| format!("{schema}: {e}"))?;
    let file = std::fs::File::open(entities).map_err(|e| format!("{entities}: {e}"))?;
    let set = Entities::from_json_file(std::io::BufReader::new(file), Some(&schema))
        .map_err(|e| format!("{entities}: {e}"))?;
    let naive = Naive {
        policies: load_policies(Path::new(dir))?,
        schema,
        entities: RwLock::new(Arc::new(set)),
        writer: Mutex::new(()),
        authorizer: Authorizer::new(),
    };
    Ok((bind.clone(), naive))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bind, naive) = match load(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("naive_cedar: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/v1/is_authorized", post(is_authorized))
        .route("/v1/entities", put(put_entities))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(naive));
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(&bind).await?;
                println!("naive_cedar listening on http://{}", listener.local_addr()?);
                axum::serve(listener, app).await
            })
        });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("naive_cedar: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
