//! [`Idempotency`]: an `Idempotency-Key`, the fingerprint of its request and
//! the status a success answers; the answer a write remembers in its own
//! transaction and the reply to a key seen again. It never reads or writes
//! the store itself: the write's transaction does.

use serde::Serialize;

use crate::error::OrchestratorError;

/// An `Idempotency-Key`, the fingerprint of its request, and the HTTP status
/// a success answers (the body is the operation's JSON result).
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The key as the client sent it (trimmed; checked by the adapter).
    pub key: String,
    /// A digest of the request (method, route, body): the same key with
    /// another fingerprint is [`OrchestratorError::IdempotencyKeyReused`].
    pub fingerprint: String,
    /// The HTTP status a success answers, stored with the body.
    pub status: u16,
}

impl Idempotency {
    /// The answer to give for a remembered key: the first answer if the
    /// request is the same, else [`OrchestratorError::IdempotencyKeyReused`].
    pub fn replay(&self, r: partnergate_core::store::Remembered) -> OrchestratorError {
        if r.fingerprint == self.fingerprint {
            OrchestratorError::Replayed(r)
        } else {
            OrchestratorError::IdempotencyKeyReused
        }
    }

    /// The answer to remember under this key: the success status and
    /// `result` (the operation's result) as the JSON body.
    pub(crate) fn answer(
        &self,
        result: &impl Serialize,
    ) -> Result<partnergate_core::store::Remembered, OrchestratorError> {
        Ok(partnergate_core::store::Remembered {
            fingerprint: self.fingerprint.clone(),
            status: self.status,
            body: serde_json::to_string(result)
                .map_err(|e| OrchestratorError::Corrupt(e.to_string()))?,
        })
    }
}
