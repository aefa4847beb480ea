//! Web pages of the pool domain: pool groups (list, create, settings with inline validation,
//! preview, delete, "Sync all") and mothers (searchable paginated list with seat-usage bars, create,
//! detail, batch import with per-row results, import from a provider credential). Forms post here,
//! not to the API, and carry the CSRF token; they call the same services as the API.

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Layout, check_form_csrf};
use crate::app::AppState;
use crate::auth::Principal;
use crate::crypto::Credential;
use crate::domain::mothers::MotherInput;
use crate::http::error::ApiError;
use crate::http::pagination::PageParams;
use crate::service::import_cookie::{self as import_service, ImportCookieRequest};
use crate::service::mothers::{self as mother_service, BatchReport};
use crate::service::pool_groups::{self as group_service, Preview, SettingsPatch};
use crate::service::{self, ErrorKind, pool_sync};
use crate::store::mothers::{self as mother_store, Mother, MotherDetail};
use crate::store::pool_groups::{self as group_store, PoolGroup};

fn blank_to_none(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/groups.html")]
pub struct GroupsPage {
    layout: Layout,
    groups: Vec<PoolGroup>,
    error: Option<String>,
    name: String,
    description: String,
}

async fn groups_page(
    app: &AppState,
    principal: &Principal,
    error: Option<String>,
    name: String,
    description: String,
) -> Response {
    match group_store::list_all(&app.pool).await {
        Ok(groups) => GroupsPage {
            layout: Layout::new(principal, "/pool-groups"),
            groups,
            error,
            name,
            description,
        }
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn groups(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    groups_page(&app, &principal, None, String::new(), String::new()).await
}

#[derive(Deserialize)]
pub struct CreateGroupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

pub async fn create_group(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Form(form): Form<CreateGroupForm>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
    match group_service::create(app.pool_ctx(), &form.name, Some(&form.description), None).await {
        Ok(g) => Redirect::to(&format!("/pool-groups/{}", g.id)).into_response(),
        Err(e) => {
            groups_page(
                &app,
                &principal,
                Some(e.message),
                form.name,
                form.description,
            )
            .await
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/group.html")]
pub struct GroupPage {
    layout: Layout,
    group: PoolGroup,
    /// The values shown in the form (what was sent, when it was refused).
    form: SettingsFormValues,
    error: Option<String>,
    saved: bool,
    preview: Result<Preview, String>,
    /// What "Sync all" queued.
    queued: Option<SyncQueued>,
}

pub struct SyncQueued {
    count: usize,
    session_id: String,
}

#[derive(Clone, Debug, Default)]
pub struct SettingsFormValues {
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

async fn group_page(
    app: &AppState,
    principal: &Principal,
    id: i64,
    form: Option<SettingsFormValues>,
    error: Option<String>,
    saved: bool,
    queued: Option<SyncQueued>,
) -> Response {
    let group = match group_service::get(app.pool_ctx(), id).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let preview = group_service::preview(app.pool_ctx(), id, Some(5))
        .await
        .map_err(|e| e.message);
    GroupPage {
        layout: Layout::new(principal, "/pool-groups"),
        form: form.unwrap_or_else(|| SettingsFormValues::from(&group)),
        group,
        error,
        saved,
        preview,
        queued,
    }
    .into_response()
}

#[derive(Deserialize)]
pub struct SavedQuery {
    #[serde(default)]
    saved: bool,
}

pub async fn group(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
    Query(q): Query<SavedQuery>,
) -> Response {
    group_page(&app, &principal, id, None, None, q.saved, None).await
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
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

pub async fn save_settings(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<SettingsForm>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
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
        Ok(_) => Redirect::to(&format!("/pool-groups/{id}?saved=true")).into_response(),
        Err(e) if !matches!(e.kind, ErrorKind::NotFound | ErrorKind::Internal) => {
            let e = ApiError::from(e);
            let mut r = group_page(
                &app,
                &principal,
                id,
                Some(values),
                Some(e.message),
                false,
                None,
            )
            .await;
            *r.status_mut() = e.status;
            r
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    force: Option<String>,
}

pub async fn delete_group(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
    match group_service::delete(app.pool_ctx(), id).await {
        Ok(()) => Redirect::to("/pool-groups").into_response(),
        Err(e) if e.is_conflict() => {
            let e = ApiError::from(e);
            let mut r = group_page(&app, &principal, id, None, Some(e.message), false, None).await;
            *r.status_mut() = e.status;
            r
        }
        Err(e) => e.into_response(),
    }
}

/// "Sync all": queues a sync of every active mother of the group (the service behind the API's
/// `sync/all`), then shows how many jobs were queued with links to them and to the session.
pub async fn sync_all(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
    match pool_sync::sync_group(&app, id, "manual_batch", &principal.display_name()).await {
        Ok(q) => {
            let queued = SyncQueued {
                count: q.job_ids.len(),
                session_id: q.session_id,
            };
            group_page(&app, &principal, id, None, None, false, Some(queued)).await
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/mothers.html")]
pub struct MothersPage {
    layout: Layout,
    mothers: Vec<Mother>,
    total: i64,
    page: i64,
    pages: i64,
    search: String,
    status: String,
    groups: Vec<PoolGroup>,
    error: Option<String>,
    create: CreateMotherForm,
    batch_text: String,
    batch: Option<BatchReport>,
    import: ImportView,
}

/// What a form post adds to the mothers page: its error, what was typed, its outcome.
#[derive(Default)]
struct Posted {
    error: Option<String>,
    create: CreateMotherForm,
    batch_text: String,
    batch: Option<BatchReport>,
    import: ImportView,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListQuery {
    page: Option<i64>,
    #[serde(default)]
    search: String,
    #[serde(default)]
    status: String,
}

impl ListQuery {
    /// The query string of another page of this list (values are URL-encoded).
    fn link(&self, page: i64) -> String {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        format!(
            "?page={page}&search={}&status={}",
            enc(&self.search),
            enc(&self.status)
        )
    }
}

impl MothersPage {
    fn link(&self, page: i64) -> String {
        ListQuery {
            page: Some(page),
            search: self.search.clone(),
            status: self.status.clone(),
        }
        .link(page)
    }
}

async fn mothers_page(
    app: &AppState,
    principal: &Principal,
    q: ListQuery,
    posted: Posted,
) -> Response {
    let page = match PageParams::new(q.page, Some(25)) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let filter = match mother_service::list_filter(Some(&q.search), Some(&q.status), None) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let listed =
        mother_store::list_with_usage(&app.pool, &filter, page.limit(), page.offset()).await;
    let groups = group_store::list_all(&app.pool).await;
    let ((mothers, total), groups) = match (listed, groups) {
        (Ok(l), Ok(g)) => (l, g),
        (Err(e), _) | (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    MothersPage {
        layout: Layout::new(principal, "/mothers"),
        mothers,
        total,
        page: page.page,
        pages: ((total + page.page_size - 1) / page.page_size).max(1),
        search: q.search,
        status: q.status,
        groups,
        error: posted.error,
        create: posted.create,
        batch_text: posted.batch_text,
        batch: posted.batch,
        import: posted.import,
    }
    .into_response()
}

pub async fn mothers(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    mothers_page(&app, &principal, q, Posted::default()).await
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateMotherForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    provider: String,
    /// Never echoed back into the page.
    #[serde(default)]
    credential: String,
    #[serde(default)]
    seat_limit: String,
    #[serde(default)]
    pool_group_id: String,
    #[serde(default)]
    provider_config: String,
    #[serde(default)]
    notes: String,
}

pub async fn create_mother(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Form(mut form): Form<CreateMotherForm>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
    let credential = Credential::new(std::mem::take(&mut form.credential));
    let parsed = (|| -> Result<MotherInput, String> {
        let seat_limit = blank_to_none(&form.seat_limit)
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| "seat_limit must be a whole number".to_string())
            })
            .transpose()?;
        let pool_group_id = group_field(&form.pool_group_id)?;
        let provider_config = provider_config_field(&form.provider_config)?;
        Ok(MotherInput {
            name: form.name.clone(),
            provider: form.provider.clone(),
            credential,
            provider_config,
            seat_limit,
            pool_group_id,
            notes: blank_to_none(&form.notes),
            teams: None,
        })
    })();
    let result = match parsed {
        Ok(input) => mother_service::create(app.pool_ctx(), input)
            .await
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    match result {
        Ok(id) => Redirect::to(&format!("/mothers/{id}")).into_response(),
        Err(message) => {
            let posted = Posted {
                error: Some(message),
                create: form,
                ..Posted::default()
            };
            let mut r = mothers_page(&app, &principal, ListQuery::default(), posted).await;
            *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            r
        }
    }
}

#[derive(Deserialize)]
pub struct BatchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rows: String,
    /// `validate` or `import`.
    #[serde(default)]
    action: String,
}

pub async fn batch(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Form(form): Form<BatchForm>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
    let import = form.action == "import";
    let outcome = match crate::import::rows_from_text(&form.rows) {
        Ok(rows) if rows.is_empty() || rows.len() > mother_service::MAX_BATCH_ROWS => {
            Err(format!("paste 1-{} rows", mother_service::MAX_BATCH_ROWS))
        }
        Ok(rows) => {
            let mut seen = Default::default();
            mother_service::batch(app.pool_ctx(), rows, import, 1, &mut seen)
                .await
                .map_err(|e| e.message)
        }
        Err(e) => Err(e.to_string()),
    };
    // Credentials are in the pasted text: it is shown again only when nothing was imported.
    let (error, report, text) = match outcome {
        Ok(report) if import => (None, Some(report), String::new()),
        Ok(report) => (None, Some(report), form.rows),
        Err(e) => (Some(e), None, form.rows),
    };
    let posted = Posted {
        error,
        batch_text: text,
        batch: report,
        ..Posted::default()
    };
    mothers_page(&app, &principal, ListQuery::default(), posted).await
}

/// The import dialog: what was sent (never the cookie), why it was refused, or what it did.
#[derive(Default)]
pub struct ImportView {
    form: ImportForm,
    error: Option<String>,
    done: Option<Imported>,
}

/// A finished import; in pool mode the page follows `job_id` until it ends.
pub struct Imported {
    mother_id: i64,
    mother_name: String,
    updated: bool,
    job_id: Option<String>,
    session_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    csrf: String,
    /// The provider credential; never echoed back into the page.
    #[serde(default)]
    cookie: String,
    /// `user` or `pool`.
    #[serde(default)]
    mode: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    provider_config: String,
    #[serde(default)]
    pool_group_id: String,
}

/// The optional `pool_group_id` field of a form.
fn group_field(value: &str) -> Result<Option<i64>, String> {
    blank_to_none(value)
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| "pool_group_id must be a number".to_string())
        })
        .transpose()
}

/// The optional `provider_config` field of a form: a JSON text.
fn provider_config_field(value: &str) -> Result<Option<serde_json::Value>, String> {
    blank_to_none(value)
        .map(|s| serde_json::from_str(&s).map_err(|e| format!("provider_config: not JSON ({e})")))
        .transpose()
}

impl ImportForm {
    fn request(&mut self) -> Result<ImportCookieRequest, String> {
        let cookie = Credential::new(std::mem::take(&mut self.cookie));
        let pool_group_id = group_field(&self.pool_group_id)?;
        let provider_config = provider_config_field(&self.provider_config)?;
        Ok(ImportCookieRequest {
            cookie,
            mode: self.mode.clone(),
            pool_group_id,
            provider: blank_to_none(&self.provider),
            provider_config,
        })
    }
}

/// Imports a mother from a provider credential through the same service as the API; a refusal
/// (a bad field, a credential the provider rejects) reopens the dialog with the reason.
pub async fn import_mother(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Form(mut form): Form<ImportForm>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
    let outcome = match form.request() {
        Ok(req) => import_service::import_cookie(&app, req, &principal.display_name()).await,
        Err(message) => Err(service::Error::invalid("invalid_body", message)),
    };
    let out = match outcome {
        Ok(out) => out,
        Err(e) => {
            let e = ApiError::from(e);
            let posted = Posted {
                import: ImportView {
                    form,
                    error: Some(e.message),
                    done: None,
                },
                ..Posted::default()
            };
            let mut r = mothers_page(&app, &principal, ListQuery::default(), posted).await;
            *r.status_mut() = e.status;
            return r;
        }
    };
    let mother_name = match mother_store::get(&app.pool, out.mother_id).await {
        Ok(m) => m.name,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let posted = Posted {
        import: ImportView {
            form: ImportForm::default(),
            error: None,
            done: Some(Imported {
                mother_id: out.mother_id,
                mother_name,
                updated: out.updated,
                job_id: out.job_id,
                session_id: out.session_id,
            }),
        },
        ..Posted::default()
    };
    mothers_page(&app, &principal, ListQuery::default(), posted).await
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/mother.html")]
pub struct MotherPage {
    layout: Layout,
    m: MotherDetail,
    error: Option<String>,
}

pub async fn mother(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
) -> Response {
    match mother_store::get_detail(&app.pool, id).await {
        Ok(m) => MotherPage {
            layout: Layout::new(&principal, "/mothers"),
            m,
            error: None,
        }
        .into_response(),
        Err(crate::store::StoreError::NotFound) => {
            ApiError::not_found(format!("no mother {id}")).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn delete_mother(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = check_form_csrf(&principal, &headers, &form.csrf) {
        return r.into_response();
    }
    match mother_service::delete(app.pool_ctx(), id, form.force.is_some()).await {
        Ok(()) => Redirect::to("/mothers").into_response(),
        Err(e) if e.is_conflict() => match mother_store::get_detail(&app.pool, id).await {
            Ok(m) => {
                let mut r = MotherPage {
                    layout: Layout::new(&principal, "/mothers"),
                    m,
                    error: Some(e.message),
                }
                .into_response();
                *r.status_mut() = axum::http::StatusCode::CONFLICT;
                r
            }
            Err(e) => ApiError::from(e).into_response(),
        },
        Err(e) => e.into_response(),
    }
}
