//! Route domains. Every admin route belongs to one domain, `pool`, `users` or `system`, given as the
//! operation's single tag in its `#[utoipa::path]`; this table is read from the OpenAPI document, so a
//! route cannot have a domain without being documented, nor be documented without a domain.
//!
//! Route roles: [`API_ROLES`] and [`PAGE_ROLES`] say which role each admin route and each page
//! needs; the router will not start while a documented admin route is missing from the first.

use std::collections::{HashMap, HashSet};

use axum::http::Method;
use utoipa::openapi::OpenApi;

use crate::auth::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    Pool,
    Users,
    System,
}

impl Domain {
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Pool => "pool",
            Domain::Users => "users",
            Domain::System => "system",
        }
    }

    pub fn parse(tag: &str) -> Option<Self> {
        match tag {
            "pool" => Some(Domain::Pool),
            "users" => Some(Domain::Users),
            "system" => Some(Domain::System),
            _ => None,
        }
    }
}

/// `(method, route template)` -> domain.
#[derive(Clone, Debug, Default)]
pub struct RouteDomains(HashMap<(Method, String), Domain>);

/// One documented operation: method, path template, and its tags.
pub fn operations(doc: &OpenApi) -> Vec<(Method, String, Vec<String>)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::DELETE, &item.delete),
            (Method::HEAD, &item.head),
            (Method::OPTIONS, &item.options),
            (Method::TRACE, &item.trace),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                out.push((method, path.clone(), op.tags.clone().unwrap_or_default()));
            }
        }
    }
    out
}

impl RouteDomains {
    pub fn from_openapi(doc: &OpenApi) -> Self {
        let map = operations(doc)
            .into_iter()
            .filter_map(|(method, path, tags)| {
                let domain = tags.iter().find_map(|t| Domain::parse(t))?;
                Some(((method, path), domain))
            })
            .collect();
        Self(map)
    }

    pub fn get(&self, method: &Method, path: &str) -> Option<Domain> {
        // HEAD is served by the GET route.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0.get(&(method.clone(), path.to_string())).copied()
    }

    /// Every route with its domain, sorted by path then method.
    pub fn table(&self) -> Vec<(String, String, Domain)> {
        let mut rows: Vec<_> = self
            .0
            .iter()
            .map(|((m, p), d)| (p.clone(), m.to_string(), *d))
            .collect();
        rows.sort();
        rows
    }
}

/// The role each admin API route needs: `(method, route template, role)`. This is the one place
/// that says who may call what: [`require_role`](crate::http::middleware::require_role) enforces
/// it, the OpenAPI document shows it (the `x-role` of each operation and its security scopes),
/// and the router refuses to start when a documented admin route has no row here. A route that
/// somehow has none is refused to everyone (403).
///
/// `viewer` reads, `operator` runs the pool (groups, mothers, sync, jobs, codes, invites,
/// accounts), `admin` manages admins and tokens and is the only role shown a secret (a new
/// token's value, a simulated organisation's credential).
pub const API_ROLES: &[(&str, &str, Role)] = &[
    // system
    ("POST", "/api/admin/logout", Role::Viewer),
    ("GET", "/api/admin/me", Role::Viewer),
    ("GET", "/api/admin/db-status", Role::Viewer),
    ("GET", "/api/admin/system", Role::Viewer),
    // users: admins and tokens
    ("GET", "/api/admin/admins", Role::Admin),
    ("POST", "/api/admin/admins", Role::Admin),
    ("POST", "/api/admin/admins/{username}/role", Role::Admin),
    ("POST", "/api/admin/admins/{username}/password", Role::Admin),
    ("POST", "/api/admin/admins/{username}/disable", Role::Admin),
    ("POST", "/api/admin/admins/{username}/enable", Role::Admin),
    ("GET", "/api/admin/audit", Role::Admin),
    ("GET", "/api/admin/tokens", Role::Admin),
    ("POST", "/api/admin/tokens", Role::Admin),
    ("DELETE", "/api/admin/tokens/{id}", Role::Admin),
    // users: jobs, codes, invites
    ("GET", "/api/admin/jobs", Role::Viewer),
    ("GET", "/api/admin/jobs/stats", Role::Viewer),
    ("GET", "/api/admin/jobs/{id}", Role::Viewer),
    ("POST", "/api/admin/jobs/{id}/retry", Role::Operator),
    ("POST", "/api/admin/jobs/{id}/cancel", Role::Operator),
    ("GET", "/api/admin/codes", Role::Viewer),
    ("POST", "/api/admin/codes", Role::Operator),
    ("GET", "/api/admin/codes/quota", Role::Viewer),
    ("POST", "/api/admin/codes/disable", Role::Operator),
    ("GET", "/api/admin/invites", Role::Viewer),
    ("POST", "/api/admin/invites/resend", Role::Operator),
    ("POST", "/api/admin/invites/cancel", Role::Operator),
    ("POST", "/api/admin/invites/remove", Role::Operator),
    // pool: groups and sync
    ("GET", "/api/admin/pool-groups", Role::Viewer),
    ("POST", "/api/admin/pool-groups", Role::Operator),
    ("GET", "/api/admin/pool-groups/{id}", Role::Viewer),
    ("DELETE", "/api/admin/pool-groups/{id}", Role::Operator),
    (
        "POST",
        "/api/admin/pool-groups/{id}/settings",
        Role::Operator,
    ),
    ("GET", "/api/admin/pool-groups/{id}/preview", Role::Viewer),
    (
        "POST",
        "/api/admin/pool-groups/{group_id}/sync/mother/{mother_id}",
        Role::Operator,
    ),
    (
        "POST",
        "/api/admin/pool-groups/{group_id}/sync/all",
        Role::Operator,
    ),
    ("GET", "/api/admin/sync-sessions", Role::Viewer),
    ("GET", "/api/admin/sync-sessions/statistics", Role::Viewer),
    ("GET", "/api/admin/sync-sessions/{id}", Role::Viewer),
    (
        "POST",
        "/api/admin/sync-sessions/{id}/cancel",
        Role::Operator,
    ),
    // pool: mothers (credentials go in, never come out)
    ("POST", "/api/admin/import-cookie", Role::Operator),
    ("GET", "/api/admin/mothers", Role::Viewer),
    ("POST", "/api/admin/mothers", Role::Operator),
    ("GET", "/api/admin/mothers/{id}", Role::Viewer),
    ("PATCH", "/api/admin/mothers/{id}", Role::Operator),
    ("DELETE", "/api/admin/mothers/{id}", Role::Operator),
    ("POST", "/api/admin/mothers/{id}/credential", Role::Operator),
    ("POST", "/api/admin/mothers/batch/validate", Role::Operator),
    ("POST", "/api/admin/mothers/batch/import", Role::Operator),
    ("GET", "/api/admin/stats", Role::Viewer),
    ("GET", "/api/admin/quota", Role::Viewer),
    // pool: the simulator answers with a new organisation's credential: a secret
    ("POST", "/api/admin/sim/orgs", Role::Admin),
    // pool: credential accounts (passwords go in, never come out)
    ("GET", "/api/admin/accounts", Role::Viewer),
    ("POST", "/api/admin/accounts", Role::Operator),
    ("POST", "/api/admin/accounts/import", Role::Operator),
    ("GET", "/api/admin/accounts/status", Role::Viewer),
    ("GET", "/api/admin/accounts/usage", Role::Viewer),
    ("GET", "/api/admin/accounts/{id}", Role::Viewer),
    ("PATCH", "/api/admin/accounts/{id}", Role::Operator),
    ("DELETE", "/api/admin/accounts/{id}", Role::Operator),
    ("POST", "/api/admin/accounts/{id}/reset", Role::Operator),
    ("GET", "/api/admin/leases", Role::Viewer),
];

/// The role each signed-in page and form needs: `(method, route template, role)`, enforced by the
/// UI's page guard; a page without a row is refused to everyone (403), so a new page cannot
/// forget its rule. Pages hide the forms a role cannot post (see `ui::Layout`).
pub const PAGE_ROLES: &[(&str, &str, Role)] = &[
    ("GET", "/", Role::Viewer),
    ("GET", "/system", Role::Viewer),
    ("GET", "/audit", Role::Admin),
    ("POST", "/logout", Role::Viewer),
    ("GET", "/pool-groups", Role::Viewer),
    ("POST", "/pool-groups", Role::Operator),
    ("GET", "/pool-groups/{id}", Role::Viewer),
    ("GET", "/pool-groups/{id}/preview", Role::Viewer),
    ("POST", "/pool-groups/{id}/settings", Role::Operator),
    ("POST", "/pool-groups/{id}/delete", Role::Operator),
    ("POST", "/pool-groups/{id}/sync-all", Role::Operator),
    ("GET", "/mothers", Role::Viewer),
    ("POST", "/mothers", Role::Operator),
    ("POST", "/mothers/batch", Role::Operator),
    ("POST", "/mothers/bulk", Role::Operator),
    ("POST", "/mothers/import", Role::Operator),
    ("POST", "/mothers/sim-org", Role::Operator),
    ("GET", "/mothers/{id}", Role::Viewer),
    ("POST", "/mothers/{id}/delete", Role::Operator),
    ("POST", "/mothers/{id}/edit", Role::Operator),
    ("POST", "/mothers/{id}/sync", Role::Operator),
    ("GET", "/jobs", Role::Viewer),
    ("GET", "/jobs/live", Role::Viewer),
    ("POST", "/jobs/bulk", Role::Operator),
    ("GET", "/jobs/retry-failed", Role::Operator),
    ("POST", "/jobs/retry-failed", Role::Operator),
    ("GET", "/jobs/{id}", Role::Viewer),
    ("POST", "/jobs/{id}/retry", Role::Operator),
    ("POST", "/jobs/{id}/cancel", Role::Operator),
    ("GET", "/sync-sessions", Role::Viewer),
    ("GET", "/sync-sessions/{id}", Role::Viewer),
    ("POST", "/sync-sessions/{id}/cancel", Role::Operator),
    ("GET", "/codes", Role::Viewer),
    ("POST", "/codes/generate", Role::Operator),
    ("GET", "/codes/new/{token}", Role::Operator),
    ("GET", "/codes/new/{token}/csv", Role::Operator),
    ("POST", "/codes/disable", Role::Operator),
    ("GET", "/invites", Role::Viewer),
    ("POST", "/invites/bulk", Role::Operator),
    ("GET", "/accounts", Role::Viewer),
    ("POST", "/accounts/import", Role::Operator),
    ("POST", "/accounts/{id}/reset", Role::Operator),
    ("GET", "/admins", Role::Admin),
    ("POST", "/admins", Role::Admin),
    ("POST", "/admins/{username}/role", Role::Admin),
    ("POST", "/admins/{username}/password", Role::Admin),
    ("POST", "/admins/{username}/disable", Role::Admin),
    ("POST", "/admins/{username}/enable", Role::Admin),
];

fn lookup(table: &[(&str, &str, Role)], method: &Method, path: &str) -> Option<Role> {
    // HEAD is served by the GET route.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    table
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, role)| *role)
}

/// The role an admin API route needs; `None` when the table has no row for it.
pub fn api_role(method: &Method, path: &str) -> Option<Role> {
    lookup(API_ROLES, method, path)
}

/// The role a page or form needs; `None` when the table has no row for it.
pub fn page_role(method: &Method, path: &str) -> Option<Role> {
    lookup(PAGE_ROLES, method, path)
}

/// What is wrong between the admin operations of the OpenAPI document (`admin_ops`, as
/// `(METHOD, path)`) and [`API_ROLES`]: documented routes without a role, rows without a route,
/// and rows given twice. Empty when they agree.
pub fn api_role_problems(admin_ops: &HashSet<(String, String)>) -> Vec<String> {
    let mut problems = Vec::new();
    for (method, path) in admin_ops {
        if lookup(
            API_ROLES,
            &Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
            path,
        )
        .is_none()
        {
            problems.push(format!("{method} {path} has no row in routes::API_ROLES"));
        }
    }
    let mut seen = HashSet::new();
    for (method, path, _) in API_ROLES {
        let key = (method.to_string(), path.to_string());
        if !admin_ops.contains(&key) {
            problems.push(format!(
                "routes::API_ROLES names {method} {path}, which is not an admin route"
            ));
        }
        if !seen.insert(key) {
            problems.push(format!("routes::API_ROLES names {method} {path} twice"));
        }
    }
    problems.sort();
    problems
}
