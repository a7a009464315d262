//! The orchestrator over a core [`Runtime`]: the quotas file beside the
//! policies becomes a reload gate (and a watched input) of the runtime, the
//! orchestrator's tables are migrated with the store, and
//! the orchestrator is built over the wired decision path and the same
//! store connection. The one place the sidecar, the command line and the
//! examples wire the orchestrator; it must never know HTTP or the command
//! line.

use std::sync::Arc;

use partnergate_core::runtime::{OpenStore, Runtime, Wired};
use partnergate_policy::policies::Problem;

use crate::migrations::MIGRATIONS;
use crate::orchestrator::Orchestrator;
use crate::rules::{quotas_path_for, QuotaRules};
use crate::store::OrchestratorStore;

/// What the orchestrator needs of `runtime`: the quotas beside its
/// policies, loaded, and made a gate every pack passes (and carries) — a
/// bad `quotas.toml` rejects a reload —, and the orchestrator's tables
/// ([`MIGRATIONS`]) migrated when the store opens.
pub fn with_quotas(runtime: Runtime) -> Result<(Runtime, Arc<QuotaRules>), Box<Problem>> {
    let path = quotas_path_for(&runtime.source().policies);
    let quotas = QuotaRules::load(path.clone())?;
    let runtime = runtime.gate(quotas.gate(), [path]).migrations(MIGRATIONS);
    Ok((runtime, quotas))
}

/// The orchestrator over `wired`'s decision path and store.
pub fn orchestrator(wired: &Wired, quotas: Arc<QuotaRules>) -> Orchestrator {
    let store: Arc<dyn OrchestratorStore> = match &wired.store {
        OpenStore::Sqlite(s) => s.clone(),
        OpenStore::Postgres(s) => s.clone(),
    };
    Orchestrator::new(wired.authz.clone(), store, quotas)
}
