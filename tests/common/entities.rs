//! Entity JSON for the tests, in Cedar's entity format over the shipped
//! schema: one builder per entity type, so every test describes a user,
//! an account or a partner company the same way.

use serde_json::{json, Value};

/// A reference to an entity inside attributes: `{"__entity": {type, id}}`.
pub fn eref(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": ty, "id": id}})
}

/// A `User` of `account`: by default an active, two-factor, non-admin
/// employee whose email is `{id}@{account}.example`.
pub struct User {
    id: String,
    account: String,
    email: Option<String>,
    admin: bool,
    status: String,
    two_factor: bool,
    partner: Option<(String, bool)>,
}

/// A user of `account` with the defaults of [`User`].
pub fn user(id: &str, account: &str) -> User {
    User {
        id: id.to_string(),
        account: account.to_string(),
        email: None,
        admin: false,
        status: "active".to_string(),
        two_factor: true,
        partner: None,
    }
}

impl User {
    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.to_string());
        self
    }
    pub fn admin(mut self, admin: bool) -> Self {
        self.admin = admin;
        self
    }
    pub fn status(mut self, status: &str) -> Self {
        self.status = status.to_string();
        self
    }
    pub fn two_factor(mut self, two_factor: bool) -> Self {
        self.two_factor = two_factor;
        self
    }
    /// A partner of `company`, `verified` or not.
    pub fn partner(mut self, company: &str, verified: bool) -> Self {
        self.partner = Some((company.to_string(), verified));
        self
    }
    /// The entity JSON.
    pub fn json(&self) -> Value {
        let email = match &self.email {
            Some(e) => e.clone(),
            None => format!("{}@{}.example", self.id, self.account),
        };
        let mut attrs = json!({
            "email": email,
            "account": eref("Account", &self.account),
            "is_admin": self.admin,
            "status": self.status,
            "two_factor": self.two_factor,
        });
        if let Some((company, verified)) = &self.partner {
            attrs["partner"] = json!({"company": eref("PartnerCompany", company), "verified": verified,
                    "scopes": ["users", "settings", "integrations", "billing"]});
        }
        json!({"uid": {"type": "User", "id": self.id}, "attrs": attrs,
            "parents": [{"type": "Account", "id": self.account}]})
    }
}

impl From<User> for Value {
    fn from(u: User) -> Value {
        u.json()
    }
}

/// An `Account` named `name` (no attributes when `None`).
pub fn account(id: &str, name: Option<&str>) -> Value {
    let attrs = match name {
        Some(n) => json!({ "name": n }),
        None => json!({}),
    };
    json!({"uid": {"type": "Account", "id": id}, "attrs": attrs, "parents": []})
}

/// A `PartnerCompany` of partner `status` (e.g. "gold"), `certified` or not.
pub fn company(id: &str, status: &str, certified: bool) -> Value {
    json!({"uid": {"type": "PartnerCompany", "id": id},
        "attrs": {"name": id, "status": status, "certified": certified}, "parents": []})
}
