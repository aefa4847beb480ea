//! Route domains. Every admin route belongs to one domain, `pool`, `users` or `system`, given as the
//! operation's single tag in its `#[utoipa::path]`; this table is read from the OpenAPI document, so a
//! route cannot have a domain without being documented, nor be documented without a domain.

use std::collections::HashMap;

use axum::http::Method;
use utoipa::openapi::OpenApi;

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
