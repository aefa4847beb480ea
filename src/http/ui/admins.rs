//! The Admins page (admin only, `routes::PAGE_ROLES`): every admin user with role and status, a
//! create form, and per user: set role, reset password, disable or enable. Each form calls the
//! `service::admins` function the API and `poolkeeper admin` call, and reports through a flash;
//! a refusal (the last active admin, a bad password) is a flash that says why. Passwords are
//! typed by the admin and never shown.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::csrf::{CsrfForm, NoFields};
use super::flash::{self, Flash};
use super::{Layout, page_error};
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::clock::rfc3339;
use crate::http::extract::AuditActor;
use crate::http::pagination::PageParams;
use crate::service::admins as service;
use crate::store::admins::AdminView;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admins", get(list).post(create))
        .route("/admins/{username}/role", post(set_role))
        .route("/admins/{username}/password", post(reset_password))
        .route("/admins/{username}/disable", post(disable))
        .route("/admins/{username}/enable", post(enable))
}

const PAGE_SIZE: i64 = 100;

#[derive(Deserialize, Default)]
struct ListQuery {
    page: Option<i64>,
}

struct Row {
    admin: AdminView,
    created: String,
    is_me: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "admins.html")]
struct AdminsPage {
    layout: Layout,
    rows: Vec<Row>,
    roles: [Role; 3],
    total: i64,
    page: i64,
    has_next: bool,
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    // A page number that is no page shows the first.
    let page = PageParams::new(q.page, Some(PAGE_SIZE)).unwrap_or(PageParams {
        page: 1,
        page_size: PAGE_SIZE,
    });
    let (admins, total) = match service::list_page(&app.users, page.limit(), page.offset()).await {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let me = principal.display_name();
    let rows = admins
        .into_iter()
        .map(|admin| Row {
            created: rfc3339(admin.created_at),
            is_me: admin.username == me,
            admin,
        })
        .collect();
    axum::response::IntoResponse::into_response(AdminsPage {
        layout: Layout::new(&principal, "/admins"),
        rows,
        roles: Role::ALL,
        total,
        page: page.page,
        has_next: page.page * PAGE_SIZE < total,
    })
}

fn back(app: &AppState, result: Result<String, crate::service::Error>) -> Response {
    let flash = match result {
        Ok(done) => Flash::done(done),
        Err(e) => Flash::not_done(e.message),
    };
    flash::redirect(app, "/admins", flash)
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

fn role_field(raw: &str) -> Result<Role, crate::service::Error> {
    Role::parse(raw).ok_or_else(|| {
        crate::service::Error::invalid("invalid_role", "role must be admin, operator or viewer")
    })
}

async fn create(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    CsrfForm(form): CsrfForm<CreateForm>,
) -> Response {
    let result = async {
        let role = role_field(&form.role)?;
        let user = service::create(
            &app.users,
            &app.clock,
            &actor,
            &form.username,
            &form.password,
            role,
        )
        .await?;
        Ok(format!(
            "Admin user {} created with role {}.",
            user.username, user.role
        ))
    }
    .await;
    back(&app, result)
}

#[derive(Deserialize)]
struct RoleForm {
    #[serde(default)]
    role: String,
}

async fn set_role(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(username): Path<String>,
    CsrfForm(form): CsrfForm<RoleForm>,
) -> Response {
    let result = async {
        let role = role_field(&form.role)?;
        let user = service::set_role(&app.users, &app.clock, &actor, &username, role).await?;
        Ok(format!("{} now has role {}.", user.username, user.role))
    }
    .await;
    back(&app, result)
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    password: String,
}

async fn reset_password(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(username): Path<String>,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Response {
    let result = service::reset_password(&app.users, &app.clock, &actor, &username, &form.password)
        .await
        .map(|u| {
            format!(
                "Password of {} changed; their sessions were ended.",
                u.username
            )
        });
    back(&app, result)
}

async fn disable(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(username): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    let result = service::disable(&app.users, &app.clock, &actor, &username)
        .await
        .map(|u| format!("{} is disabled; their sessions were ended.", u.username));
    back(&app, result)
}

async fn enable(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(username): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    let result = service::enable(&app.users, &app.clock, &actor, &username)
        .await
        .map(|u| format!("{} may log in again.", u.username));
    back(&app, result)
}
