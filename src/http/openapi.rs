//! Finishing touches on the OpenAPI document that every operation of a route class shares, added
//! here once instead of in each handler's `#[utoipa::path]`: the error answers the middleware and
//! extractors can give (400, 401, 403, 404, 413, 415), and the security requirement of public
//! routes (none) and worker routes (a bearer token). A response a handler documents itself is
//! kept as it wrote it.

use std::collections::HashSet;

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

use crate::auth::Role;
use crate::http::routes::operations;

/// Who may call an operation (admin operations also carry their role from `routes::API_ROLES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteClass {
    /// Probes, metrics, login: no credentials.
    Public,
    /// A bearer token of scope `worker`.
    Worker,
    /// A session or a bearer token of scope `admin`.
    Admin,
}

/// `(METHOD, path)` of every operation of a router's document.
pub fn operation_keys(doc: &OpenApi) -> HashSet<(String, String)> {
    operations(doc)
        .into_iter()
        .map(|(method, path, _)| (method.to_string(), path))
        .collect()
}

/// Adds to every operation of `doc` the error answers its class and its inputs can give, and
/// the security requirement of public and worker operations. `public` and `worker` name the
/// operations of those classes; every other one is an admin operation.
pub fn add_class_responses(
    doc: &mut OpenApi,
    public: &HashSet<(String, String)>,
    worker: &HashSet<(String, String)>,
) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("GET", &mut item.get),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("PATCH", &mut item.patch),
            ("DELETE", &mut item.delete),
            ("HEAD", &mut item.head),
            ("OPTIONS", &mut item.options),
            ("TRACE", &mut item.trace),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            let key = (method.to_string(), path.clone());
            let class = if public.contains(&key) {
                RouteClass::Public
            } else if worker.contains(&key) {
                RouteClass::Worker
            } else {
                RouteClass::Admin
            };
            let role = match class {
                RouteClass::Admin => crate::http::routes::api_role(
                    &axum::http::Method::from_bytes(method.as_bytes())
                        .unwrap_or(axum::http::Method::GET),
                    path,
                ),
                _ => None,
            };
            finish_operation(op, class, role);
        }
    }
}

fn finish_operation(op: &mut Operation, class: RouteClass, role: Option<Role>) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_path = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let has_query = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let has_body = op.request_body.as_ref().is_some_and(has_json_content);
    let mut answers: Vec<(u16, &str)> = Vec::new();
    if has_path || has_query || has_body {
        answers.push((
            400,
            "bad input: `invalid_path`, `invalid_query`, `invalid_json`, `invalid_body` or a \
             field's own code; the message names it",
        ));
    }
    match class {
        RouteClass::Public => op.security = Some(Vec::new()),
        RouteClass::Worker => {
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            answers.push((401, "no token, or an unknown or revoked one"));
            answers.push((403, "`insufficient_scope`: the token's scope is not worker"));
        }
        RouteClass::Admin => {
            // The role the route needs (routes::API_ROLES), as `x-role` and as the role named
            // in its security requirements (OpenAPI 3.1 allows role names for non-OAuth schemes).
            let role_name = role.map_or("none", Role::as_str);
            op.extensions
                .get_or_insert_with(Default::default)
                .insert("x-role".into(), serde_json::json!(role_name));
            op.security = Some(vec![
                SecurityRequirement::new("bearer", [role_name]),
                SecurityRequirement::new("session", [role_name]),
            ]);
            answers.push((
                401,
                "no session or token, or an expired, unknown or revoked one",
            ));
            answers.push((
                403,
                "`insufficient_role` (the caller's role is below the route's `x-role`), \
                 `insufficient_scope` (a worker token), `csrf_failed` (a session's unsafe \
                 request without its CSRF token or from another origin), `domain_mismatch` \
                 (domain guard)",
            ));
        }
    }
    if has_path {
        answers.push((404, "no such record"));
    }
    if has_body {
        answers.push((413, "`payload_too_large`: the body is over 1 MiB"));
        answers.push((
            415,
            "`unsupported_media_type`: the body is not Content-Type: application/json",
        ));
    }
    for (status, description) in answers {
        let status = status.to_string();
        if op.responses.responses.contains_key(&status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        op.responses.responses.insert(status, response.into());
    }
}

fn has_json_content(body: &RequestBody) -> bool {
    body.content
        .keys()
        .any(|k| k.starts_with("application/json"))
}
