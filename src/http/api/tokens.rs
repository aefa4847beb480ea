//! API tokens (users database): list, create (the value is shown once), revoke.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Scope;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, AuditActor};
use crate::http::pagination::{Page, PageParams};
use crate::service::audit::{self, changes};
use crate::service::tokens as service;
use crate::store::tokens::{ApiToken, TokenFilter};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenListQuery {
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 50, at most 500).
    pub page_size: Option<i64>,
    /// Only tokens of this scope.
    pub scope: Option<Scope>,
    /// Include revoked tokens (default false).
    #[serde(default)]
    pub include_revoked: bool,
}

/// Lists API tokens, newest first; values are never returned.
#[utoipa::path(get, path = "/api/admin/tokens", tag = "users", params(TokenListQuery),
    responses((status = 200, body = Page<ApiToken>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_tokens(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<TokenListQuery>,
) -> ApiResult<Json<Page<ApiToken>>> {
    let page = PageParams::new(q.page, q.page_size)?;
    let filter = TokenFilter {
        scope: q.scope.map(Scope::as_str),
        include_revoked: q.include_revoked,
    };
    let (items, total) =
        service::list_page(&app.users, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.wrap(items, total)))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    /// Unique name: who or what uses the token.
    pub name: String,
    pub scope: Scope,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: ApiToken,
    /// The bearer value. Shown once; only its hash is stored.
    pub value: String,
}

/// Creates a token; the response is the only place its value appears.
#[utoipa::path(post, path = "/api/admin/tokens", tag = "users", request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "name taken")))]
pub async fn create_token(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let (token, value) = service::create(&app.users, &app.clock, &req.name, req.scope).await?;
    audit::record(
        &app.users,
        &app.clock,
        &actor,
        changes::token_create(&token),
    )
    .await;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, value })))
}

/// Revokes a token by its id (never by name); it stops working at once in this process, and within
/// a second in other processes sharing the database.
#[utoipa::path(delete, path = "/api/admin/tokens/{id}", tag = "users", params(("id" = i64, Path, description = "token id")),
    responses((status = 200, body = ApiToken), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "no active token with this id")))]
pub async fn revoke_token(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ApiToken>> {
    let token = service::revoke_by_id(&app.users, id, app.clock.now_ms()).await?;
    app.token_cache.forget_all();
    audit::record(
        &app.users,
        &app.clock,
        &actor,
        changes::token_revoke(&token),
    )
    .await;
    Ok(Json(token))
}
