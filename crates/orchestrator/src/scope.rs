//! [`WriteScope`]: what a caller asks of the writes it runs through
//! [`crate::Orchestrator::with`] (deadline, `Idempotency-Key`, request id), an
//! explicit value rather than thread state. It never knows HTTP: the adapter
//! fills it from the request.

use crate::idempotency::Idempotency;

/// What the caller (the HTTP adapter, the CLI) asks of the writes it runs
/// through [`crate::Orchestrator::with`]: a deadline, checked once the write
/// transaction has begun (past it, nothing is applied:
/// [`crate::OrchestratorError::TimedOut`]; a transaction that has begun runs to
/// completion and answers), an `Idempotency-Key` whose answer is stored in
/// the write's transaction, and the request id (`X-Request-ID`) that the
/// operation's decision and change records carry.
#[derive(Debug, Clone, Default)]
pub struct WriteScope {
    /// Past this instant when the transaction begins, nothing is applied
    /// ([`crate::OrchestratorError::TimedOut`]); `None`: no deadline.
    pub deadline: Option<std::time::Instant>,
    /// The request's `Idempotency-Key`, if it sent one.
    pub idempotency: Option<Idempotency>,
    /// The request id the decision and change records carry.
    pub request_id: Option<String>,
}
