//! The scopes a policy pack's schema declares: the names of its
//! `"scope:NAME"` action groups. Shared by [`crate::access`] (a request's
//! scopes) and [`crate::rules`] (the quotas' `default_partner_scopes`).
//!
//! Owns reading scope names from a schema; which actions belong to a scope
//! is the schema's and the policies' business. It must never know the
//! quotas, an access request or the orchestrator's errors.

/// The prefix of the schema's scope groups (`action "scope:users"`).
pub const SCOPE_GROUP_PREFIX: &str = "scope:";

/// The scopes the schema declares: the names of its `"scope:NAME"` action
/// groups, sorted.
pub fn known_scopes(schema: Option<&cedar_policy::Schema>) -> Vec<String> {
    let mut scopes: Vec<String> = schema
        .into_iter()
        .flat_map(|s| s.actions())
        .filter_map(|a| {
            a.id()
                .unescaped()
                .strip_prefix(SCOPE_GROUP_PREFIX)
                .map(str::to_string)
        })
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}
