//! The listings of an account, read from the serving directory through its
//! referrers index (never every user): the employees list and the seat
//! counts. It never knows HTTP or the command line.

use crate::error::OrchestratorError;
use crate::input::{id_of, parse_uid};
use crate::orchestrator::Orchestrator;
use crate::status::UserStatus;
use crate::user::UserView;
use crate::view::{ListedUser, Seats};

impl Orchestrator {
    /// Every user of an account (from the serving directory).
    pub(crate) fn account_users(&self, account: &str) -> Result<Vec<UserView>, OrchestratorError> {
        let account_uid = parse_uid("account", "Account", account)?;
        let account = id_of(&account_uid);
        let mut users = Vec::new();
        // The users pointing at the account (index lookup), not every user.
        for uid in self.directory().referrers(&account_uid) {
            if uid.type_name().to_string() != "User" {
                continue;
            }
            if let Some(json) = self.directory().get_json(&uid) {
                let u = UserView::from_json(&json)?;
                if u.account == account {
                    users.push(u);
                }
            }
        }
        if users.is_empty() && self.directory().get(&account_uid).is_none() {
            return Err(OrchestratorError::NotFound(format!(
                "no account {account_uid}"
            )));
        }
        Ok(users)
    }

    /// The employees list, by status precedence (administrator/employee,
    /// partner or suspended partner, dismissed, invited), then email.
    pub fn users(&self, account: &str) -> Result<Vec<ListedUser>, OrchestratorError> {
        let users = self.account_users(account)?;
        // The clock is read after the users: the state is never newer than
        // the instant it is judged at (an earlier reading could count an
        // access that ended before a newer partner took its seat).
        let now = self.now();
        let mut list: Vec<ListedUser> = users
            .into_iter()
            .map(|u| ListedUser {
                list_status: u.list_status(now),
                mark: u.partner.as_ref().map(|_| "Partner"),
                user: u,
            })
            .collect();
        list.sort_by(|a, b| {
            (a.list_status.rank(), &a.user.email).cmp(&(b.list_status.rank(), &b.user.email))
        });
        Ok(list)
    }

    /// Seat counts: partners are neither paid users nor administrators.
    pub fn seats(&self, account: &str) -> Result<Seats, OrchestratorError> {
        let users = self.account_users(account)?;
        let requests = self.requests(account).unwrap_or_default();
        let now = self.now(); // after the read, as in `users`
        let holding: Vec<&UserView> = users
            .iter()
            .filter(|u| u.status != UserStatus::Dismissed)
            .collect();
        Ok(Seats {
            account: id_of(&parse_uid("account", "Account", account)?),
            paid_users: holding.iter().filter(|u| u.partner.is_none()).count(),
            administrators: holding
                .iter()
                .filter(|u| u.partner.is_none() && u.is_admin)
                .count(),
            partners: users.iter().filter(|u| u.holds_partner_seat(now)).count(),
            suspended_partners: users
                .iter()
                .filter(|u| u.holds_partner_seat(now) && u.is_suspended())
                .count(),
            pending_requests: requests.iter().filter(|r| r.open_at(now)).count(),
            partner_limit: self.rules.current().max_active_partners,
        })
    }
}
