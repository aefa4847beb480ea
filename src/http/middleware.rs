//! Request middleware: admin authentication with CSRF, the domain guard and `X-Domain-Ack`,
//! request metrics by route template, the body-size limit, and security headers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::auth::{self, Principal, Role, Scope};
use crate::config::{Config, RunEnv};
use crate::domain::origin::Origin;
use crate::http::error::{ApiError, ApiResult};
use crate::http::routes::{self, Domain, RouteDomains};

/// The session cookie's name over plain http; a `Secure` cookie is [`SECURE_SESSION_COOKIE`].
pub const SESSION_COOKIE: &str = "pk_session";
/// The `Secure` session cookie's name: the `__Host-` prefix makes browsers refuse it unless it
/// is `Secure`, has `Path=/` and no `Domain`, so no sibling host can plant or shadow it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-pk_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const DOMAIN_HEADER: &str = "x-domain";
pub const DOMAIN_ACK_HEADER: &str = "x-domain-ack";
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The session cookie's name under this configuration; every place that sets, reads or clears
/// the cookie asks here.
pub fn session_cookie_name(config: &Config) -> &'static str {
    if config.cookie_secure() {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The origin unsafe browser requests must come from: `public_url`, else the request's own
/// scheme (plain http: poolkeeper does not terminate TLS) and `Host`. Set by [`admit`].
#[derive(Clone, Debug)]
pub struct ExpectedOrigin(pub Origin);

/// Paths that probes and scrapers reach by an internal address, whatever `public_url` says.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Whether `path` is the API's (`/api` and below) rather than the console's.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The first and the last thing every request meets, one layer for what used to be three (each
/// `from_fn` layer boxes the request's future and clones the service inside it; on the lease
/// bench, switching each of the three off gained 8-13% cycles/s): [`admit`] refuses a request for
/// another host or with a declared body over the limit, and every answer, refusals included,
/// leaves with the security headers ([`add_security_headers`]).
pub async fn front_door(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let is_api = is_api_path(req.uri().path());
    let mut response = match admit(&app, req) {
        Ok(req) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    };
    add_security_headers(response.headers_mut(), is_api);
    response
}

/// In production with `public_url` set, refuses a request whose `Host` is another (421
/// `wrong_host`), probes excepted; refuses a declared body over 1 MiB before it is read (413;
/// bodies without a length are cut off by the extractors' limit, which also answers 413). Then
/// records the [`ExpectedOrigin`] for the CSRF checks.
fn admit(app: &AppState, mut req: Request) -> ApiResult<Request> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(public) = &app.public_origin
        && app.config.env == RunEnv::Production
        && !is_probe(req.uri().path())
        && !host.as_deref().is_some_and(|h| public.matches_host(h))
    {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            "this server answers only for the host of its public_url",
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::payload_too_large());
    }
    let expected = app
        .public_origin
        .clone()
        .or_else(|| host.as_deref().and_then(|h| Origin::from_host("http", h)));
    if let Some(origin) = expected {
        req.extensions_mut().insert(ExpectedOrigin(origin));
    }
    Ok(req)
}

/// Methods that change state and so need CSRF and domain checks.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Requires a principal with the role the route needs ([`routes::API_ROLES`]): a bearer token of
/// scope `admin`, `operator` or `viewer`, or a session cookie (with CSRF checks on unsafe
/// methods) of an admin user with that role. Puts the [`Principal`] into the request extensions.
pub async fn require_role(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let principal = match authenticate(&app, req.method(), req.headers(), req.extensions()).await {
        Ok(principal) => principal,
        Err(e) => return e.into_response(),
    };
    let needed = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| routes::api_role(req.method(), path.as_str()));
    if let Err(e) = check_role(&principal, needed) {
        return e.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Whether `principal` may use a route that needs `needed`; a route with no rule (`None`) is
/// refused to everyone, so a forgotten rule fails closed.
pub fn check_role(principal: &Principal, needed: Option<Role>) -> ApiResult<()> {
    let Some(needed) = needed else {
        return Err(ApiError::forbidden(
            "no_role_rule",
            "this route has no role rule (routes::API_ROLES); refused to everyone",
        ));
    };
    if principal.allows(needed) {
        return Ok(());
    }
    let has = principal.role().map_or("none", Role::as_str);
    Err(ApiError::forbidden(
        "insufficient_role",
        format!("this route needs role {needed} (or higher); you have {has}"),
    ))
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
    let principal = auth::token_principal(&app.users, &app.clock, &app.token_cache, token)
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
    extensions: &Extensions,
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
        let principal = auth::token_principal(&app.users, &app.clock, &app.token_cache, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("API token is unknown or revoked"))?;
        if let Principal::Token {
            scope: Scope::Worker,
            ..
        } = &principal
        {
            return Err(ApiError::forbidden(
                "insufficient_scope",
                "this route needs a token with scope admin, operator or viewer",
            ));
        }
        return Ok(principal);
    }
    let jar = CookieJar::from_headers(headers);
    let Some(cookie) = jar.get(session_cookie_name(&app.config)) else {
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
        check_csrf(headers, extensions, sent, csrf_token)?;
    }
    Ok(principal)
}

/// CSRF for cookie-authenticated unsafe requests: the token must match the session's and the
/// request must come from the [`ExpectedOrigin`] (`Origin`, else `Referer`; scheme, host and port).
pub fn check_csrf(
    headers: &HeaderMap,
    extensions: &Extensions,
    sent_token: &str,
    session_token: &str,
) -> ApiResult<()> {
    let token_ok =
        !sent_token.is_empty() && bool::from(sent_token.as_bytes().ct_eq(session_token.as_bytes()));
    if !token_ok {
        return Err(ApiError::forbidden(
            "csrf_failed",
            "missing or wrong X-CSRF-Token",
        ));
    }
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    if !source.is_some_and(|s| is_expected_origin(extensions.get(), s)) {
        return Err(ApiError::forbidden(
            "csrf_failed",
            "request Origin (or Referer) is not this site",
        ));
    }
    Ok(())
}

/// Whether an `Origin` or `Referer` value names the [`ExpectedOrigin`] of this request.
pub fn is_expected_origin(expected: Option<&ExpectedOrigin>, value: &str) -> bool {
    let Some(ExpectedOrigin(expected)) = expected else {
        return false;
    };
    Origin::of_header(value).is_some_and(|o| &o == expected)
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

const CSP: &str = "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every response of the metrics listener (the main router has them from
/// [`front_door`]).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let is_api = is_api_path(req.uri().path());
    let mut response = next.run(req).await;
    add_security_headers(response.headers_mut(), is_api);
    response
}

/// The security headers; a handler that set its own keeps it. Every `/api` answer is
/// `Cache-Control: no-store` (signed-in pages get it from the UI's session check).
fn add_security_headers(headers: &mut HeaderMap, is_api: bool) {
    if is_api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
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
}
