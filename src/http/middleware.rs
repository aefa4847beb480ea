//! Request middleware: admin authentication with CSRF, the domain guard and `X-Domain-Ack`,
//! request metrics by route template, the body-size limit, and security headers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::auth::{self, Principal, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::routes::{Domain, RouteDomains};

pub const SESSION_COOKIE: &str = "pk_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const DOMAIN_HEADER: &str = "x-domain";
pub const DOMAIN_ACK_HEADER: &str = "x-domain-ack";
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Methods that change state and so need CSRF and domain checks.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Requires an admin: a bearer token of scope `admin`, or a session cookie (with CSRF checks on
/// unsafe methods). Puts the [`Principal`] into the request extensions.
pub async fn require_admin(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate(&app, req.method(), req.headers()).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Requires a bearer token of scope `worker` (the lease API). Puts the [`Principal`] into the request
/// extensions.
pub async fn require_worker(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate_worker(&app, req.headers()).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate_worker(app: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <worker token>"))?;
    let principal = auth::token_principal(&app.users, &app.clock, token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("API token is unknown or revoked"))?;
    match &principal {
        Principal::Token {
            scope: Scope::Worker,
            ..
        } => Ok(principal),
        _ => Err(ApiError::forbidden(
            "insufficient_scope",
            "this route needs a token with scope worker",
        )),
    }
}

async fn authenticate(
    app: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> ApiResult<Principal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization header must be `Bearer <token>`")
            })?;
        let principal = auth::token_principal(&app.users, &app.clock, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("API token is unknown or revoked"))?;
        if let Principal::Token { scope, .. } = &principal
            && *scope != Scope::Admin
        {
            return Err(ApiError::forbidden(
                "insufficient_scope",
                "this route needs a token with scope admin",
            ));
        }
        return Ok(principal);
    }
    let jar = CookieJar::from_headers(headers);
    let Some(cookie) = jar.get(SESSION_COOKIE) else {
        return Err(ApiError::unauthorized(
            "log in first, or send Authorization: Bearer <token>",
        ));
    };
    let principal = auth::session_principal(&app.users, &app.clock, cookie.value())
        .await?
        .ok_or_else(|| ApiError::unauthorized("session expired or logged out; log in again"))?;
    if is_unsafe(method)
        && let Principal::Session { csrf_token, .. } = &principal
    {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        check_csrf(headers, sent, csrf_token)?;
    }
    Ok(principal)
}

/// CSRF for cookie-authenticated unsafe requests: the token must match the session's and the
/// request must come from this origin (`Origin`, else `Referer`, against `Host`).
pub fn check_csrf(headers: &HeaderMap, sent_token: &str, session_token: &str) -> ApiResult<()> {
    let token_ok =
        !sent_token.is_empty() && bool::from(sent_token.as_bytes().ct_eq(session_token.as_bytes()));
    if !token_ok {
        return Err(ApiError::forbidden(
            "csrf_failed",
            "missing or wrong X-CSRF-Token",
        ));
    }
    if !is_same_origin(headers) {
        return Err(ApiError::forbidden(
            "csrf_failed",
            "request Origin (or Referer) is not this site",
        ));
    }
    Ok(())
}

fn is_same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return false;
    };
    // scheme://authority[/path]: compare the authority with Host.
    source
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// With the domain guard on, an unsafe request to a `pool` or `users` route needs `X-Domain` naming
/// that domain. Runs after authentication.
pub async fn domain_guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if app.config.domain_guard() && is_unsafe(req.method()) {
        let domain = route_domain(&req);
        if let Some(domain @ (Domain::Pool | Domain::Users)) = domain {
            let sent = req
                .headers()
                .get(DOMAIN_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if sent != domain.as_str() {
                return ApiError::forbidden(
                    "domain_mismatch",
                    format!(
                        "this route is in the {} domain; send X-Domain: {}",
                        domain.as_str(),
                        domain.as_str()
                    ),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

fn route_domain(req: &Request) -> Option<Domain> {
    let path = req.extensions().get::<MatchedPath>()?;
    let domains = req.extensions().get::<Arc<RouteDomains>>()?;
    domains.get(req.method(), path.as_str())
}

/// Adds `X-Domain-Ack` to every response of a documented route, and counts the request in
/// `admin_api_requests_total{path,method,domain,status}` by route template.
pub async fn track_api_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let domain = route_domain(&req);
    let mut response = match (&matched, domain) {
        // A routed API path missing from the OpenAPI document is a programming error: fail loudly so
        // the test suite notices, instead of serving it without a domain.
        (Some(path), None) if path.starts_with("/api/") => ApiError::internal(format!(
            "route {method} {path} is not in the OpenAPI document"
        ))
        .into_response(),
        _ => next.run(req).await,
    };
    if let Some(domain) = domain {
        response.headers_mut().insert(
            HeaderName::from_static(DOMAIN_ACK_HEADER),
            HeaderValue::from_static(domain.as_str()),
        );
    }
    let path = matched.unwrap_or_else(|| "unmatched".to_string());
    if !path.starts_with("/api/") {
        // Probes and /metrics are not admin API requests.
        return response;
    }
    let domain = domain.map_or("none", Domain::as_str);
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::metrics::ADMIN_API_REQUESTS,
        "path" => path.clone(), "method" => method.to_string(), "domain" => domain, "status" => status)
    .increment(1);
    metrics::histogram!(crate::metrics::ADMIN_API_DURATION, "path" => path, "method" => method.to_string())
        .record(started.elapsed().as_secs_f64());
    response
}

/// Refuses a declared body over 1 MiB before reading it; bodies without a length are cut off by the
/// extractors' limit, which also answers 413.
pub async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return ApiError::payload_too_large().into_response();
    }
    next.run(req).await
}

const CSP: &str = "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every response; a handler that set its own keeps it.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}
