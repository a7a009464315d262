//! The access classes of the routes: who may call a route (the token
//! rule) and how long it may take (the timeout, whether a body is read
//! first). Each front door files its routes under a class ([`Routes`]);
//! the router gives each class its layers. No path string decides a rule.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

/// Who may call a route, and how long it may take: each route belongs to
/// exactly one class, and the class decides its token rule, its timeout and
/// whether a body is read before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Holds no data (health, the OpenAPI document, the console's page
    /// shells and assets): no token.
    Public,
    /// Decisions, searches and reads: the token with `--protect-queries`.
    Query,
    /// `/metrics`: the token with `--protect-metrics`.
    Metrics,
    /// What a customer's partners did, and the log's verification: always
    /// the token.
    Private,
    /// Writes: always the token; the body is read under the request timeout,
    /// then the handler owns the deadline (a 408 never follows a commit).
    Write,
    /// Gateway mode's doors: no sidecar token (the `Authorization` header
    /// is the end user's, for the routes file); any method is a question;
    /// no body is read (a proxy's copied `Content-Length` is not refused).
    Gateway,
}

/// A front door's routes, by access class.
#[derive(Default)]
pub struct Routes {
    classes: Vec<(Access, Router<Arc<AppState>>)>,
}

impl Routes {
    /// `router`'s routes in class `access`.
    pub fn with(mut self, access: Access, router: Router<Arc<AppState>>) -> Self {
        self.classes.push((access, router));
        self
    }

    /// `self` and `other`'s routes together.
    pub fn merge(mut self, other: Routes) -> Self {
        self.classes.extend(other.classes);
        self
    }

    /// Each class's routes (a class may come more than once).
    pub fn into_classes(self) -> Vec<(Access, Router<Arc<AppState>>)> {
        self.classes
    }
}
