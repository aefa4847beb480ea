//! The Pool groups pages: the list with its create form (templates, domain and auto-invite may be
//! set at once), and a group's page (its mothers with seat usage and last sync outcome, settings
//! with inline validation and a naming preview that follows the templates as they are typed
//! through `/pool-groups/{id}/preview`, delete, "Sync all"). Forms post here, not to the API, and call
//! the same services as the API; what they did is shown as a flash message on the page they
//! redirect to. A refused settings form is shown again with what was typed (nothing was saved).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::csrf::{CsrfForm, NoFields};
use super::flash::{self, Flash};
use super::{Layout, not_found, numeric_id, page_error};
use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::service::mothers as mother_service;
use crate::service::pool_groups::{self as group_service, Preview, SettingsPatch};
use crate::service::sync_sessions as sync_service;
use crate::service::{ErrorKind, pool_sync};
use crate::store::mothers::Mother;
use crate::store::pool_groups::PoolGroup;
use crate::store::sync_sessions::Record;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pool-groups", get(list).post(create))
        .route("/pool-groups/{id}", get(show))
        .route("/pool-groups/{id}/settings", post(save_settings))
        .route("/pool-groups/{id}/delete", post(delete))
        .route("/pool-groups/{id}/sync-all", post(sync_all))
        .route("/pool-groups/{id}/preview", get(live_preview))
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/groups.html")]
struct ListPage {
    layout: Layout,
    groups: Vec<PoolGroup>,
    error: Option<String>,
    name: String,
    description: String,
    form: CreateForm,
}

async fn list_page(
    app: &AppState,
    principal: &Principal,
    error: Option<String>,
    form: CreateForm,
) -> Response {
    match group_service::list_all(app.pool_ctx()).await {
        Ok(groups) => ListPage {
            layout: Layout::new(principal, "/pool-groups"),
            groups,
            error,
            name: form.name.clone(),
            description: form.description.clone(),
            form,
        }
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn list(State(app): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    list_page(&app, &principal, None, CreateForm::default()).await
}

#[derive(Default, Deserialize)]
struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// Empty fields keep the defaults.
    #[serde(default)]
    team_template: String,
    #[serde(default)]
    child_name_template: String,
    #[serde(default)]
    child_email_template: String,
    #[serde(default)]
    email_domain: String,
    auto_invite: Option<String>,
}

impl CreateForm {
    fn settings(&self) -> SettingsPatch {
        let given = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        SettingsPatch {
            team_template: given(&self.team_template),
            child_name_template: given(&self.child_name_template),
            child_email_template: given(&self.child_email_template),
            email_domain: given(&self.email_domain),
            is_active: None,
            auto_invite: Some(self.auto_invite.is_some()),
        }
    }
}

async fn create(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    CsrfForm(form): CsrfForm<CreateForm>,
) -> Response {
    let settings = form.settings();
    match group_service::create_with_settings(
        app.pool_ctx(),
        &form.name,
        Some(&form.description),
        settings,
    )
    .await
    {
        Ok(g) => {
            crate::service::audit::record(
                &app.users,
                &app.clock,
                &actor,
                crate::service::audit::group_changes::group_create(&g),
            )
            .await;
            flash::redirect(
                &app,
                &format!("/pool-groups/{}", g.id),
                Flash::done(format!("Pool group {} created.", g.name)),
            )
        }
        Err(e) if e.kind == ErrorKind::Internal => e.into_response(),
        Err(e) => {
            let page = list_page(&app, &principal, Some(e.message), form).await;
            (axum::http::StatusCode::BAD_REQUEST, page).into_response()
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/group.html")]
struct GroupPage {
    layout: Layout,
    group: PoolGroup,
    /// The values shown in the form (what was sent, when it was refused).
    form: SettingsFormValues,
    error: Option<String>,
    preview: Result<Preview, String>,
    /// The group's first mothers, each with her newest sync record.
    mothers: Vec<(Mother, Option<Record>)>,
    mother_total: i64,
}

impl GroupPage {
    fn bar(&self, m: &Mother) -> (i64, i64) {
        super::mothers::seat_bar(m)
    }
}

/// Mothers a group's page lists (the Mothers page, filtered by the group, has them all).
const GROUP_MOTHERS: i64 = 25;

#[derive(Clone, Debug, Default)]
struct SettingsFormValues {
    team_template: String,
    child_name_template: String,
    child_email_template: String,
    email_domain: String,
    is_active: bool,
    auto_invite: bool,
}

impl From<&PoolGroup> for SettingsFormValues {
    fn from(g: &PoolGroup) -> Self {
        Self {
            team_template: g.settings.team_template.clone(),
            child_name_template: g.settings.child_name_template.clone(),
            child_email_template: g.settings.child_email_template.clone(),
            email_domain: g.settings.email_domain.clone().unwrap_or_default(),
            is_active: g.settings.is_active,
            auto_invite: g.settings.auto_invite,
        }
    }
}

/// What a group's page shows besides the group itself.
#[derive(Default)]
struct Shown {
    form: Option<SettingsFormValues>,
    error: Option<String>,
}

async fn group_page(app: &AppState, principal: &Principal, id: i64, shown: Shown) -> Response {
    let group = match group_service::get(app.pool_ctx(), id).await {
        Ok(g) => g,
        Err(e) => return page_error(e),
    };
    let preview = group_service::preview(app.pool_ctx(), id, Some(5))
        .await
        .map_err(|e| e.message);
    let filter = match mother_service::list_filter(None, None, Some(id)) {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (listed, mother_total) =
        match mother_service::list(app.pool_ctx(), &filter, GROUP_MOTHERS, 0).await {
            Ok(l) => l,
            Err(e) => return ApiError::from(e).into_response(),
        };
    let mut mothers = Vec::with_capacity(listed.len());
    for m in listed {
        match sync_service::recent_of_mother(app, m.id, 1).await {
            Ok(mut last) => mothers.push((m, last.pop().map(|s| s.record))),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    GroupPage {
        mothers,
        mother_total,
        layout: Layout::new(principal, "/pool-groups"),
        form: shown
            .form
            .unwrap_or_else(|| SettingsFormValues::from(&group)),
        group,
        error: shown.error,
        preview,
    }
    .into_response()
}

async fn show(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    group_page(&app, &principal, id, Shown::default()).await
}

#[derive(Deserialize)]
struct SettingsForm {
    #[serde(default)]
    team_template: String,
    #[serde(default)]
    child_name_template: String,
    #[serde(default)]
    child_email_template: String,
    #[serde(default)]
    email_domain: String,
    /// Checkboxes: present when checked.
    is_active: Option<String>,
    auto_invite: Option<String>,
}

async fn save_settings(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<SettingsForm>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    let values = SettingsFormValues {
        team_template: form.team_template.clone(),
        child_name_template: form.child_name_template.clone(),
        child_email_template: form.child_email_template.clone(),
        email_domain: form.email_domain.clone(),
        is_active: form.is_active.is_some(),
        auto_invite: form.auto_invite.is_some(),
    };
    let patch = SettingsPatch {
        team_template: Some(form.team_template),
        child_name_template: Some(form.child_name_template),
        child_email_template: Some(form.child_email_template),
        email_domain: Some(form.email_domain),
        is_active: Some(values.is_active),
        auto_invite: Some(values.auto_invite),
    };
    match group_service::update_settings(app.pool_ctx(), id, patch).await {
        Ok(group) => {
            crate::service::audit::record(
                &app.users,
                &app.clock,
                &actor,
                crate::service::audit::group_changes::group_settings(&group),
            )
            .await;
            flash::redirect(
                &app,
                &format!("/pool-groups/{id}"),
                Flash::done("Settings saved."),
            )
        }
        Err(e) if e.kind == ErrorKind::NotFound => not_found(),
        Err(e) if !matches!(e.kind, ErrorKind::NotFound | ErrorKind::Internal) => {
            let e = ApiError::from(e);
            let shown = Shown {
                form: Some(values),
                error: Some(e.message),
            };
            (e.status, group_page(&app, &principal, id, shown).await).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn delete(
    State(app): State<AppState>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    match group_service::delete(app.pool_ctx(), id).await {
        Ok(()) => {
            crate::service::audit::record(
                &app.users,
                &app.clock,
                &actor,
                crate::service::audit::group_changes::group_delete(id),
            )
            .await;
            flash::redirect(&app, "/pool-groups", Flash::done("Pool group deleted."))
        }
        Err(e) if e.is_conflict() => flash::redirect(
            &app,
            &format!("/pool-groups/{id}"),
            Flash::not_done(e.message),
        ),
        Err(e) => page_error(e),
    }
}

/// "Sync all": queues a sync of every active mother of the group (the service behind the API's
/// `sync/all`), then redirects to the group, whose flash says how many jobs were queued with links
/// to them and to the session: reloading that page queues nothing.
async fn sync_all(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    crate::http::extract::AuditActor(actor): crate::http::extract::AuditActor,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    let flash =
        match pool_sync::sync_group(&app, id, "manual_batch", &principal.display_name()).await {
            Ok(q) => {
                use crate::service::audit;
                audit::mark_jobs(&app.users, &actor, &q.job_ids).await;
                let change = audit::changes::group_sync(id, &q.session_id, q.job_ids.len());
                audit::record(&app.users, &app.clock, &actor, change).await;
                Flash::SyncQueued {
                    count: q.job_ids.len(),
                    session_id: q.session_id,
                }
            }
            Err(e) if e.kind == ErrorKind::NotFound => return not_found(),
            Err(e) if e.kind == ErrorKind::Internal => return e.into_response(),
            Err(e) => Flash::not_done(e.message),
        };
    flash::redirect(&app, &format!("/pool-groups/{id}"), flash)
}

/// The templates as typed on a group's page (absent fields keep the saved value).
#[derive(Deserialize)]
struct PreviewQuery {
    team_template: Option<String>,
    child_name_template: Option<String>,
    child_email_template: Option<String>,
    email_domain: Option<String>,
}

/// Names the typed templates would give, as JSON (`Preview`), rendered by the domain rules a sync
/// uses; 400 with the error envelope naming the part of a template that does not check. Nothing is
/// saved or used up. The group page's script calls it while the templates are typed.
async fn live_preview(
    State(app): State<AppState>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PreviewQuery>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    let patch = SettingsPatch {
        team_template: q.team_template,
        child_name_template: q.child_name_template,
        child_email_template: q.child_email_template,
        email_domain: q.email_domain,
        is_active: None,
        auto_invite: None,
    };
    match group_service::preview_with(app.pool_ctx(), id, patch, 5).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
