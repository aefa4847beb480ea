//! The HTTP surface: JSON API under `/api`, probes and metrics, the web UI, static assets and the
//! OpenAPI document with Swagger UI. Handlers stay thin; rules live in `domain`, SQL in `store`.

pub mod api;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod routes;
pub mod ui;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;
use crate::http::error::ApiError;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "poolkeeper", description = "Seat pools, redeem codes, credential leases and durable jobs."),
    tags(
        (name = "system", description = "Probes, login, status: not tied to one database"),
        (name = "pool", description = "Pool database: groups, mothers, teams, seats, children, sync sessions, credential accounts and leases"),
        (name = "users", description = "Users database: admins, tokens, codes, invites, jobs"),
    ),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                middleware::SESSION_COOKIE,
                "the session cookie set by login; named `__Host-pk_session` when it is Secure \
                 (cookie_secure, on by default in production)",
            ))),
        );
        doc.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
        ]);
    }
}

/// The OpenAPI document, generated from the route definitions.
pub fn openapi() -> OpenApi {
    let mut doc = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(api::public_routes())
        .merge(api::metrics_routes())
        .merge(api::admin_routes())
        .merge(api::worker_routes())
        .split_for_parts()
        .1;
    finish_document(&mut doc);
    doc
}

/// What the route classes share: their error answers and security requirements.
fn finish_document(doc: &mut OpenApi) {
    let keys =
        |router: OpenApiRouter<AppState>| openapi::operation_keys(&router.split_for_parts().1);
    let mut public = keys(api::public_routes());
    public.extend(keys(api::metrics_routes()));
    let worker = keys(api::worker_routes());
    openapi::add_class_responses(doc, &public, &worker);
}

/// `(METHOD, path)` of every admin route (session or admin/operator/viewer token).
pub fn admin_operation_keys() -> std::collections::HashSet<(String, String)> {
    openapi::operation_keys(&api::admin_routes().split_for_parts().1)
}

/// The router of `metrics_listen`: `/metrics` alone.
pub fn metrics_router(state: AppState) -> Router {
    let (routes, _) = api::metrics_routes().split_for_parts();
    routes
        .fallback(not_found)
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .with_state(state)
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    // The domain of every API route, read by the domain guard and the request metrics.
    let domains = std::sync::Arc::new(routes::RouteDomains::from_openapi(&openapi()));
    // Every admin route needs a role rule; refuse to start without one, naming what to fix.
    let problems = routes::api_role_problems(&admin_operation_keys());
    assert!(problems.is_empty(), "route roles: {}", problems.join("; "));
    let admin = api::admin_routes()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::domain_guard,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_role,
        ));
    let worker = api::worker_routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::require_worker,
    ));
    // With `metrics_listen` set, `/metrics` is served there alone (see `metrics_router`).
    let metrics = match state.config.metrics_listen {
        None => api::metrics_routes(),
        Some(_) => OpenApiRouter::new(),
    };
    let (documented, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api::public_routes())
        .merge(metrics)
        .merge(admin)
        .merge(worker)
        .split_for_parts();
    finish_document(&mut doc);
    let documented = documented.layer(axum::middleware::from_fn(middleware::track_api_request));

    Router::new()
        .merge(documented)
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", doc))
        .merge(ui::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(middleware::MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::front_door,
        ))
        .layer(axum::Extension(domains))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    if middleware::is_api_path(path) {
        ApiError::not_found(format!("no API route {} {path}", req.method())).into_response()
    } else {
        (StatusCode::NOT_FOUND, Html(ui::not_found_page())).into_response()
    }
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}
