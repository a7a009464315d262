//! "Access ending soon": the sweep's announcement, at each configured lead
//! time before a partner's end, of the event
//! [`EventKind::EndingSoon`], once per access end and lead time (a renewal
//! gives a new end, so new announcements). Writes no entity, only the
//! event, in a transaction of its own that re-reads the partner. It never
//! knows HTTP or the command line.

use std::time::Duration;

use cedar_policy::EntityUid;
use serde_json::json;

use crate::allowed::AllowDecisions;
use crate::error::OrchestratorError;
use crate::events::{Emitted, EventKind};
use crate::status::UserStatus;
use crate::store::WriteLocks;
use crate::user::UserView;
use crate::view::Outcome;
use crate::write::{user_in, ScopedWrites};

/// The lead times of "access ending soon" when none are configured: 7
/// days and 1 day before the end.
pub const DEFAULT_ENDING_SOON: [Duration; 2] = [
    Duration::from_secs(7 * 24 * 3600),
    Duration::from_secs(24 * 3600),
];

/// The once-only key of an announcement: the user, its end and the lead.
fn key(user: &str, end: i64, lead_ms: i64) -> String {
    format!("ending_soon:{user}:{end}:{lead_ms}")
}

/// A lead time as the payload names it (`7d`, `36h`, `90m`, `45s`).
fn lead_text(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The active partner `u`'s end, if it is ahead of `now`.
fn end_ahead(u: &UserView, now: i64) -> Option<i64> {
    if u.status != UserStatus::Active || !u.holds_partner_seat(now) {
        return None;
    }
    u.partner.as_ref()?.ends_at().filter(|e| *e > now)
}

impl ScopedWrites<'_> {
    /// Announce every active partner access that ends within one of
    /// `leads` from now and was not announced for that end and lead yet:
    /// one event per (access end, lead), each in its own transaction (the
    /// partner re-read: a renewal or an end that came first wins). Returns
    /// how many events were written.
    pub fn announce_ending(&self, leads: &[Duration]) -> Result<usize, OrchestratorError> {
        let leads: Vec<i64> = leads
            .iter()
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .collect();
        let Some(&furthest) = leads.iter().max() else {
            return Ok(0);
        };
        let now = self.now();
        let soon = |u: &UserView| end_ahead(u, now).is_some_and(|e| e - now <= furthest);
        let mut due: Vec<(EntityUid, Vec<String>)> = Vec::new();
        for uid in self.partners_where(soon)? {
            let Ok(u) = self.user_from_memory(&uid) else {
                continue;
            };
            let Some(end) = end_ahead(&u, now) else {
                continue;
            };
            let keys: Vec<String> = leads
                .iter()
                .filter(|l| end - now <= **l)
                .map(|l| key(&u.id, end, *l))
                .collect();
            let taken = self.store.dedupe_taken(&keys)?;
            let keys: Vec<String> = keys.into_iter().filter(|k| !taken.contains(k)).collect();
            if !keys.is_empty() {
                due.push((uid, keys));
            }
        }
        let mut written = 0;
        for (uid, keys) in due {
            written += self.announce_one(&uid, &leads, &keys)?;
        }
        Ok(written)
    }

    /// One partner's announcements (`keys`), re-read in its own transaction.
    fn announce_one(
        &self,
        uid: &EntityUid,
        leads: &[i64],
        keys: &[String],
    ) -> Result<usize, OrchestratorError> {
        let pack = self.authz.evaluator().current();
        let schema = pack.schema.as_ref();
        let mut written = 0;
        self.commit(
            ("partner.access_ending_soon", "system"),
            &AllowDecisions::default(),
            WriteLocks::users(&[uid]),
            &mut |tx, now| {
                written = 0;
                let u = user_in(tx, uid)?;
                if let Some(end) = end_ahead(&u, now) {
                    for lead in leads.iter().filter(|l| end - now <= **l) {
                        let k = key(&u.id, end, *lead);
                        if keys.contains(&k) {
                            tx.emit_with(Emitted {
                                kind: EventKind::EndingSoon,
                                user: u.clone(),
                                detail: Some(json!({
                                    "lead": lead_text(*lead),
                                    "ends_at": partnergate_core::clock::format_ms(end),
                                })),
                                dedupe: Some(k),
                            });
                            written += 1;
                        }
                    }
                }
                Ok((
                    Vec::new(),
                    Outcome {
                        user: u,
                        dismissed: None,
                    },
                ))
            },
            schema,
        )?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_times_read_in_their_largest_whole_unit() {
        assert_eq!(lead_text(7 * 86_400_000), "7d");
        assert_eq!(lead_text(36 * 3_600_000), "36h");
        assert_eq!(lead_text(90 * 60_000), "90m");
        assert_eq!(lead_text(45_000), "45s");
    }
}
