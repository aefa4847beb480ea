//! Probes, metrics, database status and the system summary.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
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
    let problems: Vec<String> = [("pool", pool), ("users", users)]
        .into_iter()
        .filter_map(|(name, s)| s.error.map(|e| format!("{name} database: {e}")))
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

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
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
