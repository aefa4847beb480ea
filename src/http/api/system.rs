//! Probes, metrics, database status and the system summary.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::config::RunEnv;
use crate::db::DbState;
use crate::http::error::{ApiError, ApiResult, ErrorBody};

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 when both databases answer and are migrated, else 503 naming the reason.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody, description = "a database is down or behind")))]
pub async fn readyz(State(app): State<AppState>) -> ApiResult<Json<Health>> {
    let (pool, users) = tokio::join!(app.pool.database().state(), app.users.database().state());
    // The answer names the database and the kind of trouble, never the error text (which can
    // carry file paths and host names); the log has the details.
    let problems: Vec<String> = [("pool", pool), ("users", users)]
        .into_iter()
        .filter(|(_, s)| !s.ok)
        .map(|(name, s)| {
            tracing::warn!(
                database = name,
                error = s.error.as_deref().unwrap_or(""),
                "not ready"
            );
            if s.pending > 0 {
                format!("{name} database: {} migration(s) pending", s.pending)
            } else {
                format!("{name} database: not reachable")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(Json(Health { status: "ready" }))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            problems.join("; "),
        ))
    }
}

/// Prometheus metrics in text format. With `metrics_token` set it needs
/// `Authorization: Bearer <metrics_token>`; with `metrics_listen` set it is served on that address
/// only.
#[utoipa::path(get, path = "/metrics", tag = "system", responses(
    (status = 200, content_type = "text/plain", body = String),
    (status = 401, body = ErrorBody, description = "metrics_token is set and the request does not carry it"),
))]
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &app.config.metrics_token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(token.expose().as_bytes())) {
            return ApiError::unauthorized("send Authorization: Bearer <metrics_token>")
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

#[derive(Serialize, ToSchema)]
pub struct DbStatusResponse {
    pub pool: DbState,
    pub users: DbState,
}

/// State of both databases: backend, reachability, migration version and pending migrations.
#[utoipa::path(get, path = "/api/admin/db-status", tag = "system",
    responses((status = 200, body = DbStatusResponse), (status = 401, body = ErrorBody)))]
pub async fn db_status(State(app): State<AppState>) -> Json<DbStatusResponse> {
    let (pool, users) = tokio::join!(app.pool.database().state(), app.users.database().state());
    Json(DbStatusResponse { pool, users })
}

#[derive(Serialize, ToSchema)]
pub struct SystemResponse {
    pub env: RunEnv,
    pub version: &'static str,
    pub domain_guard: bool,
    pub jobs: SystemJobs,
}

#[derive(Serialize, ToSchema)]
pub struct SystemJobs {
    pub visibility_timeout_seconds: u64,
    pub max_attempts: u32,
}

/// Version and the settings that shape behaviour.
#[utoipa::path(get, path = "/api/admin/system", tag = "system",
    responses((status = 200, body = SystemResponse), (status = 401, body = ErrorBody)))]
pub async fn system(State(app): State<AppState>) -> Json<SystemResponse> {
    Json(SystemResponse {
        env: app.config.env,
        version: env!("CARGO_PKG_VERSION"),
        domain_guard: app.config.domain_guard(),
        jobs: SystemJobs {
            visibility_timeout_seconds: app.config.jobs.visibility_timeout_seconds,
            max_attempts: app.config.jobs.max_attempts,
        },
    })
}
