//! The Mothers pages: the searchable, paginated list (filters by status and group, sortable
//! columns, seat-usage bars, bulk actions on checked rows with a confirmation page), and behind its
//! buttons the create form, the batch import with per-row results, the import dialog (handled in
//! `mother_import`) and, while the simulator is enabled, a new simulated organisation; a mother's
//! page with Sync now, an edit form, her recent syncs and delete. Forms post here, not to the API, and call the
//! same services as the API. A post that changed something redirects, with what it did as a flash
//! message; a refused form (nothing written) and "Validate only" are shown at once.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::csrf::{CsrfForm, NoFields};
use super::flash::{self, Flash};
use super::list_filters::{page_count, page_number, page_query, within_pages};
use super::{Layout, not_found, numeric_id, page_error};
use crate::app::AppState;
use crate::auth::Principal;
use crate::crypto::Credential;
use crate::domain::mothers::MotherInput;
use crate::http::error::ApiError;
use crate::http::extract::AuditActor;
use crate::http::pagination::PageParams;
use crate::service::audit::{self, changes};
use crate::service::import_cookie::{self, ImportCookieRequest};
use crate::service::mothers::bulk::{self, BulkAction};
use crate::service::mothers::{self as mother_service, BatchReport, PatchMotherRequest};
use crate::service::pool_groups as group_service;
use crate::service::sim_orgs::{self, AddOrgRequest};
use crate::service::sync_sessions::{self as sync_service, MotherSync};
use crate::service::{ErrorKind, pool_sync};
use crate::store::mothers::{Mother, MotherDetail};
use crate::store::pool_groups::PoolGroup;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mothers", get(list).post(create))
        .route("/mothers/batch", post(batch))
        .route("/mothers/bulk", post(bulk))
        .route("/mothers/sim-org", post(sim_org))
        .route("/mothers/{id}", get(show))
        .route("/mothers/{id}/delete", post(delete))
        .route("/mothers/{id}/edit", post(edit))
        .route("/mothers/{id}/sync", post(sync_now))
}

pub(super) fn blank_to_none(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The optional `pool_group_id` field of a form.
pub(super) fn group_field(value: &str) -> Result<Option<i64>, String> {
    blank_to_none(value)
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| "pool_group_id must be a number".to_string())
        })
        .transpose()
}

/// The optional `provider_config` field of a form: a JSON text.
pub(super) fn provider_config_field(value: &str) -> Result<Option<serde_json::Value>, String> {
    blank_to_none(value)
        .map(|s| serde_json::from_str(&s).map_err(|e| format!("provider_config: not JSON ({e})")))
        .transpose()
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/mothers.html")]
struct ListPage {
    layout: Layout,
    mothers: Vec<Mother>,
    total: i64,
    page: i64,
    pages: i64,
    search: String,
    status: String,
    /// The group filter as given (a group id, or empty).
    group: String,
    /// The order as given (`MotherSort` values).
    sort: String,
    /// This page's own query string, for the bulk form to come back to.
    back: String,
    groups: Vec<PoolGroup>,
    sim_enabled: bool,
    error: Option<String>,
    create: CreateForm,
    /// The batch form was posted: its rows are not shown again (they hold credentials).
    batch_posted: bool,
    batch: Option<BatchReport>,
    import: ImportView,
}

impl ListPage {
    /// The query string of another page of this list, with the same filters and order.
    fn link(&self, page: i64) -> String {
        page_query(
            page,
            [
                ("search", &*self.search),
                ("status", &*self.status),
                ("group", &*self.group),
                ("sort", &*self.sort),
            ],
        )
    }

    /// The first page sorted by `column`: ascending, or descending when it is sorted so already.
    fn sort_link(&self, column: &str) -> String {
        let sort = if self.sort == column {
            format!("-{column}")
        } else {
            column.to_string()
        };
        page_query(
            1,
            [
                ("search", &*self.search),
                ("status", &*self.status),
                ("group", &*self.group),
                ("sort", &*sort),
            ],
        )
    }

    /// `aria-sort` of a column header.
    fn aria_sort(&self, column: &str) -> &'static str {
        match self.sort.strip_prefix('-') {
            Some(c) if c == column => "descending",
            None if self.sort == column => "ascending",
            _ => "none",
        }
    }

    /// The arrow after a sorted column's name.
    fn sort_mark(&self, column: &str) -> &'static str {
        match self.aria_sort(column) {
            "ascending" => " ▲",
            "descending" => " ▼",
            _ => "",
        }
    }

    /// The seat bar's used and held widths, in percent of the mother's seats.
    fn bar(&self, m: &Mother) -> (i64, i64) {
        seat_bar(m)
    }
}

/// Used and held seats as percentages of all seats (0 when she has none).
pub(super) fn seat_bar(m: &Mother) -> (i64, i64) {
    let total = m.usage.seats_total.max(0);
    if total == 0 {
        return (0, 0);
    }
    let pct = |n: i64| (n.clamp(0, total) * 100) / total;
    let used = pct(m.usage.seats_used);
    (used, pct(m.usage.seats_held).min(100 - used))
}

/// What a form post adds to the mothers page: its error, what was typed, its outcome.
#[derive(Default)]
pub(super) struct Posted {
    pub error: Option<String>,
    pub create: CreateForm,
    pub batch_posted: bool,
    pub batch: Option<BatchReport>,
    pub import: ImportView,
}

/// The import dialog: what was sent (never the credential) and why it was refused. What an import
/// did is a flash message.
#[derive(Default)]
pub(super) struct ImportView {
    pub form: ImportFields,
    pub error: Option<String>,
}

/// The import dialog's fields shown again after a refusal.
#[derive(Default)]
pub(super) struct ImportFields {
    pub mode: String,
    pub provider: String,
    pub provider_config: String,
    pub pool_group_id: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ListQuery {
    /// Read as text: a page that is no number is explained on the page.
    page: Option<String>,
    #[serde(default)]
    search: String,
    #[serde(default)]
    status: String,
    /// A pool group id; empty for any.
    #[serde(default)]
    group: String,
    #[serde(default)]
    sort: String,
}

impl ListQuery {
    /// This query again, for coming back to the same list.
    fn back(&self) -> String {
        page_query(
            page_number(self.page.as_deref()).unwrap_or(1),
            [
                ("search", &*self.search),
                ("status", &*self.status),
                ("group", &*self.group),
                ("sort", &*self.sort),
            ],
        )
    }
}

const PAGE_SIZE: i64 = 25;

/// The list (its first page after a form post) with what the post adds.
pub(super) async fn list_page(app: &AppState, principal: &Principal, posted: Posted) -> Response {
    render_list(app, principal, ListQuery::default(), posted).await
}

async fn render_list(
    app: &AppState,
    principal: &Principal,
    q: ListQuery,
    mut posted: Posted,
) -> Response {
    let number = page_number(q.page.as_deref());
    let mut page = match PageParams::new(number.clone().ok(), Some(PAGE_SIZE)) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let group = match group_field(&q.group) {
        Ok(g) => Ok(g),
        Err(_) => Err("group must be a pool group id".to_string()),
    };
    let sort = mother_service::list_sort(Some(&q.sort)).map_err(|e| e.message);
    let filter = mother_service::list_filter(
        Some(&q.search),
        Some(&q.status),
        group.clone().ok().flatten(),
    )
    .map(|mut f| {
        f.sort = sort.clone().unwrap_or_default();
        f
    });
    let refused = number
        .err()
        .or(group.err())
        .or(sort.err())
        .or(filter.as_ref().err().map(|e| e.message.clone()));
    if posted.error.is_none() {
        posted.error = refused;
    }
    // A refused filter lists every mother, under the message that says why.
    let filter = filter.unwrap_or_default();
    let mut listed =
        mother_service::list(app.pool_ctx(), &filter, page.limit(), page.offset()).await;
    if let Ok((_, total)) = &listed {
        let last = within_pages(page.page, *total, page.page_size);
        if last < page.page {
            page.page = last;
            listed =
                mother_service::list(app.pool_ctx(), &filter, page.limit(), page.offset()).await;
        }
    }
    let groups = group_service::list_all(app.pool_ctx()).await;
    let ((mothers, total), groups) = match (listed, groups) {
        (Ok(l), Ok(g)) => (l, g),
        (Err(e), _) | (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    ListPage {
        layout: Layout::new(principal, "/mothers"),
        mothers,
        total,
        page: page.page,
        pages: page_count(total, page.page_size),
        back: q.back(),
        search: q.search,
        status: q.status,
        group: q.group,
        sort: q.sort,
        groups,
        sim_enabled: app.config.sim_enabled(),
        error: posted.error,
        create: posted.create,
        batch_posted: posted.batch_posted,
        batch: posted.batch,
        import: posted.import,
    }
    .into_response()
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    render_list(&app, &principal, q, Posted::default()).await
}

#[derive(Clone, Default, Deserialize)]
pub(super) struct CreateForm {
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

/// By hand, so that a `{:?}` of the form cannot print the credential.
impl std::fmt::Debug for CreateForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateForm")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("credential", &"***")
            .field("seat_limit", &self.seat_limit)
            .field("pool_group_id", &self.pool_group_id)
            .field("provider_config", &self.provider_config)
            .field("notes", &self.notes)
            .finish()
    }
}

impl CreateForm {
    /// Whether this form was sent (and refused): its dialog opens again.
    fn is_posted(&self) -> bool {
        !self.name.is_empty() || !self.provider.is_empty()
    }

    /// The mother the form describes; the credential leaves the form, so it cannot be shown again.
    fn input(&mut self) -> Result<MotherInput, String> {
        let credential = Credential::new(std::mem::take(&mut self.credential));
        let seat_limit = blank_to_none(&self.seat_limit)
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| "seat_limit must be a whole number".to_string())
            })
            .transpose()?;
        let pool_group_id = group_field(&self.pool_group_id)?;
        let provider_config = provider_config_field(&self.provider_config)?;
        Ok(MotherInput {
            name: self.name.clone(),
            provider: self.provider.clone(),
            credential,
            provider_config,
            seat_limit,
            pool_group_id,
            notes: blank_to_none(&self.notes),
            teams: None,
        })
    }
}

async fn create(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(mut form): CsrfForm<CreateForm>,
) -> Response {
    let result = match form.input() {
        // A sim mother's credential is checked with the simulator first, as an import does: a
        // credential it does not know would only fail at her first sync.
        Ok(input) if input.provider == "sim" => {
            let config = input
                .provider_config
                .clone()
                .unwrap_or(serde_json::json!({}));
            match import_cookie::identify(&app, "sim", &config, &input.credential).await {
                Ok(_) => mother_service::create(app.pool_ctx(), input)
                    .await
                    .map_err(|e| e.message),
                Err(e) => Err(e.message),
            }
        }
        Ok(input) => mother_service::create(app.pool_ctx(), input)
            .await
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    match result {
        Ok(id) => {
            if let Ok(mother) = mother_service::get(app.pool_ctx(), id).await {
                audit::record(
                    &app.users,
                    &app.clock,
                    &actor,
                    changes::mother_create(&mother),
                )
                .await;
            }
            flash::redirect(
                &app,
                &format!("/mothers/{id}"),
                Flash::done("Mother created."),
            )
        }
        Err(message) => {
            let posted = Posted {
                error: Some(message),
                create: form,
                ..Posted::default()
            };
            let page = list_page(&app, &principal, posted).await;
            (StatusCode::BAD_REQUEST, page).into_response()
        }
    }
}

#[derive(Deserialize)]
struct BatchForm {
    #[serde(default)]
    rows: String,
    /// `validate` or `import`.
    #[serde(default)]
    action: String,
}

async fn batch(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(form): CsrfForm<BatchForm>,
) -> Response {
    let import = form.action == "import";
    let outcome = match mother_service::rows::rows_from_text(&form.rows) {
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
    // Credentials are in the pasted text: it is never shown again, not even after a validation
    // (the page says to paste the rows again). An import redirects (a reload must not import
    // again) with its counts and refused rows.
    let (error, report) = match outcome {
        Ok(report) if import => {
            let change = changes::mother_import(report.total, report.imported, report.invalid);
            audit::record(&app.users, &app.clock, &actor, change).await;
            let refused = report
                .rows
                .iter()
                .filter(|r| !r.ok)
                .map(|r| (r.row, r.errors.join("; ")))
                .collect();
            let flash = Flash::Batch {
                total: report.total,
                valid: report.valid,
                invalid: report.invalid,
                imported: report.imported,
                refused,
            };
            return flash::redirect(&app, "/mothers", flash);
        }
        Ok(report) => (None, Some(report)),
        Err(e) => (Some(e), None),
    };
    let posted = Posted {
        error,
        batch_posted: true,
        batch: report,
        ..Posted::default()
    };
    list_page(&app, &principal, posted).await
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/mother.html")]
struct MotherPage {
    layout: Layout,
    m: MotherDetail,
    error: Option<String>,
    /// The edit form's values: hers, or what was sent when it was refused.
    edit: EditForm,
    groups: Vec<PoolGroup>,
    syncs: Vec<MotherSync>,
}

impl MotherPage {
    fn bar(&self) -> (i64, i64) {
        seat_bar(&self.m.mother)
    }
}

/// A mother's edit form. The credential is never shown again.
#[derive(Clone, Default, Deserialize)]
struct EditForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    seat_limit: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    pool_group_id: String,
    /// A new credential; empty keeps hers.
    #[serde(default)]
    credential: String,
}

impl std::fmt::Debug for EditForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditForm")
            .field("status", &self.status)
            .field("seat_limit", &self.seat_limit)
            .field("notes", &self.notes)
            .field("pool_group_id", &self.pool_group_id)
            .field("credential", &"***")
            .finish()
    }
}

impl EditForm {
    fn of(m: &Mother) -> Self {
        Self {
            status: m.status.clone(),
            seat_limit: m.seat_limit.to_string(),
            notes: m.notes.clone(),
            pool_group_id: m.pool_group_id.map(|g| g.to_string()).unwrap_or_default(),
            credential: String::new(),
        }
    }

    /// The patch the form asks for, checked for shape; the service checks the values.
    fn patch(&self) -> Result<PatchMotherRequest, String> {
        let seat_limit = self
            .seat_limit
            .trim()
            .parse::<i64>()
            .map_err(|_| "seat_limit must be a whole number".to_string())?;
        Ok(PatchMotherRequest {
            status: Some(self.status.trim().to_string()),
            seat_limit: Some(seat_limit),
            notes: Some(self.notes.trim().to_string()),
            pool_group_id: Some(group_field(&self.pool_group_id)?),
            ..PatchMotherRequest::default()
        })
    }
}

/// Recent syncs a mother's page shows.
const RECENT_SYNCS: i64 = 10;

async fn mother_page(
    app: &AppState,
    principal: &Principal,
    id: i64,
    error: Option<String>,
    edit: Option<EditForm>,
) -> Response {
    let m = match mother_service::detail(app.pool_ctx(), id).await {
        Ok(m) => m,
        Err(e) => return page_error(e),
    };
    let groups = group_service::list_all(app.pool_ctx()).await;
    let syncs = sync_service::recent_of_mother(app, id, RECENT_SYNCS).await;
    let (groups, syncs) = match (groups, syncs) {
        (Ok(g), Ok(s)) => (g, s),
        (Err(e), _) | (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    MotherPage {
        layout: Layout::new(principal, "/mothers"),
        edit: edit.unwrap_or_else(|| EditForm::of(&m.mother)),
        m,
        error,
        groups,
        syncs,
    }
    .into_response()
}

async fn show(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    match numeric_id(&id) {
        Some(id) => mother_page(&app, &principal, id, None, None).await,
        None => not_found(),
    }
}

/// The edit form: status, seat limit, notes and group through `mothers::patch`, then a new
/// credential (when one was typed) through `mothers::rotate_credential`. A refusal shows the form
/// again with what was typed (never the credential) and why; nothing was changed then, except
/// when the credential alone was refused after the other fields were saved, which it says.
async fn edit(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    Path(id): Path<String>,
    CsrfForm(mut form): CsrfForm<EditForm>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    let credential = Credential::new(std::mem::take(&mut form.credential));
    let rotate = !credential.expose().is_empty();
    // The credential's shape is checked before anything is saved.
    if rotate && let Err(e) = crate::domain::mothers::check_credential(&credential) {
        return refused_edit(&app, &principal, id, e.message, form).await;
    }
    let patch = match form.patch() {
        Ok(p) => p,
        Err(message) => return refused_edit(&app, &principal, id, message, form).await,
    };
    let change = changes::mother_update(id, &patch);
    match mother_service::patch(app.pool_ctx(), id, patch).await {
        Ok(_) => audit::record(&app.users, &app.clock, &actor, change).await,
        Err(e) if e.kind == ErrorKind::NotFound => return not_found(),
        Err(e) if e.kind == ErrorKind::Internal => return ApiError::from(e).into_response(),
        Err(e) => return refused_edit(&app, &principal, id, e.message, form).await,
    }
    if rotate
        && let Err(e) = mother_service::rotate_credential(app.pool_ctx(), id, &credential).await
    {
        return flash::redirect(
            &app,
            &format!("/mothers/{id}"),
            Flash::not_done(format!(
                "Saved, but the credential was not changed: {}",
                e.message
            )),
        );
    }
    if rotate {
        let change = changes::mother_rotate_credential(id);
        audit::record(&app.users, &app.clock, &actor, change).await;
    }
    let message = if rotate {
        "Mother saved; her credential was replaced."
    } else {
        "Mother saved."
    };
    flash::redirect(&app, &format!("/mothers/{id}"), Flash::done(message))
}

async fn refused_edit(
    app: &AppState,
    principal: &Principal,
    id: i64,
    message: String,
    form: EditForm,
) -> Response {
    let page = mother_page(app, principal, id, Some(message), Some(form)).await;
    if page.status().is_success() {
        (StatusCode::BAD_REQUEST, page).into_response()
    } else {
        page
    }
}

/// "Sync now": queues her sync in her group (as `POST .../sync` does); the flash links the job's
/// session. A mother in no group is refused with what to do.
async fn sync_now(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    let mother = match mother_service::get(app.pool_ctx(), id).await {
        Ok(m) => m,
        Err(e) => return page_error(e),
    };
    let back = format!("/mothers/{id}");
    let Some(group) = mother.pool_group_id else {
        return flash::redirect(
            &app,
            &back,
            Flash::not_done("She is in no pool group: choose one under Edit, then sync."),
        );
    };
    let flash = match pool_sync::sync_mother(&app, group, id, &principal.display_name()).await {
        Ok(q) => {
            audit::mark_jobs(&app.users, &actor, std::slice::from_ref(&q.job_id)).await;
            let change = changes::mother_sync(id, group, &q.job_id, q.session_id.as_deref());
            audit::record(&app.users, &app.clock, &actor, change).await;
            match q.session_id {
                Some(session_id) => Flash::SyncQueued {
                    count: 1,
                    session_id,
                },
                None => Flash::done(format!("Sync queued as job {}.", q.job_id)),
            }
        }
        Err(e) if e.kind == ErrorKind::Internal => return ApiError::from(e).into_response(),
        Err(e) => Flash::not_done(e.message),
    };
    flash::redirect(&app, &back, flash)
}

/// The bulk form: the checked rows (`mother_<id>` fields), the action and, for a move, the group.
/// Without `confirm=yes` it shows the confirmation page (which posts the same fields again with
/// it), so the question is asked with or without JS.
async fn bulk(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(fields): CsrfForm<std::collections::HashMap<String, String>>,
) -> Response {
    let back = fields
        .get("back")
        .filter(|b| b.starts_with('?') && !b.contains(['\r', '\n']))
        .map(|b| format!("/mothers{b}"))
        .unwrap_or_else(|| "/mothers".to_string());
    let ids: Vec<i64> = fields
        .keys()
        .filter_map(|k| k.strip_prefix("mother_"))
        .filter_map(|id| id.parse().ok())
        .collect();
    let action = fields.get("action").map(String::as_str).unwrap_or_default();
    let checked = bulk::check_ids(ids).and_then(|ids| {
        BulkAction::parse(action, fields.get("group").map(String::as_str)).map(|a| (ids, a))
    });
    let (ids, action) = match checked {
        Ok(c) => c,
        Err(e) => return flash::redirect(&app, &back, Flash::not_done(e.message)),
    };
    if fields.get("confirm").map(String::as_str) != Some("yes") {
        return bulk_confirm_page(&app, &principal, ids, action, fields, back).await;
    }
    let report = match bulk::run(&app, &ids, action, &principal.display_name()).await {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::Internal => return ApiError::from(e).into_response(),
        Err(e) => return flash::redirect(&app, &back, Flash::not_done(e.message)),
    };
    for &id in &report.done {
        let change = audit::more_changes::mother_bulk(id, action);
        audit::record(&app.users, &app.clock, &actor, change).await;
    }
    let mut message = format!(
        "{}: done for {} mother(s)",
        capitalised(action.verb()),
        report.done.len()
    );
    if !report.refused.is_empty() {
        message.push_str(&format!("; not for {}: ", report.refused.len()));
        let why: Vec<String> = report
            .refused
            .iter()
            .map(|(id, why)| format!("#{id} {why}"))
            .collect();
        message.push_str(&why.join("; "));
    }
    message.push('.');
    let flash = if report.done.is_empty() {
        Flash::not_done(message)
    } else {
        Flash::done(message)
    };
    flash::redirect(&app, &back, flash)
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[derive(Template, WebTemplate)]
#[template(path = "pool/mothers_bulk.html")]
struct BulkConfirmPage {
    layout: Layout,
    question: String,
    mothers: Vec<Mother>,
    /// The fields to post again, with `confirm=yes`.
    hidden: Vec<(String, String)>,
    back: String,
    danger: bool,
}

async fn bulk_confirm_page(
    app: &AppState,
    principal: &Principal,
    ids: Vec<i64>,
    action: BulkAction,
    fields: std::collections::HashMap<String, String>,
    back: String,
) -> Response {
    let mut mothers = Vec::with_capacity(ids.len());
    for id in &ids {
        match mother_service::get(app.pool_ctx(), *id).await {
            Ok(m) => mothers.push(m),
            Err(e) if e.is_not_found() => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let target = match action {
        BulkAction::Move(Some(g)) => match group_service::get(app.pool_ctx(), g).await {
            Ok(group) => format!(" to pool group {}", group.name),
            Err(e) => return flash::redirect(app, &back, Flash::not_done(e.message)),
        },
        BulkAction::Move(None) => " out of their pool group".to_string(),
        _ => String::new(),
    };
    let question = format!(
        "{} these {} mother(s){target}?",
        capitalised(action.verb()),
        mothers.len()
    );
    let mut hidden: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(k, _)| k != "csrf" && k != "confirm")
        .collect();
    hidden.sort();
    hidden.push(("confirm".into(), "yes".into()));
    BulkConfirmPage {
        layout: Layout::new(principal, "/mothers"),
        question,
        mothers,
        hidden,
        back,
        danger: matches!(action, BulkAction::Delete | BulkAction::Disable),
    }
    .into_response()
}

/// "New simulated organisation": makes it in the simulator (404 while the simulator is disabled)
/// and imports it at once with its credential, which is never shown: in pool mode when a group
/// was chosen (her sync is queued), else in user mode. Redirects to the new mother.
#[derive(Default, Deserialize)]
struct SimOrgForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    seats: String,
    /// Addresses separated by commas, spaces or lines.
    #[serde(default)]
    members: String,
    #[serde(default)]
    pool_group_id: String,
}

async fn sim_org(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    CsrfForm(form): CsrfForm<SimOrgForm>,
) -> Response {
    if !app.config.sim_enabled() {
        return not_found();
    }
    let refused = |message: String| {
        flash::redirect(
            &app,
            "/mothers",
            Flash::not_done(format!("No simulated organisation made: {message}")),
        )
    };
    let Ok(seats) = form.seats.trim().parse::<i64>() else {
        return refused("seats must be a whole number".into());
    };
    let group = match group_field(&form.pool_group_id) {
        Ok(g) => g,
        Err(e) => return refused(e),
    };
    let members: Vec<String> = form
        .members
        .split([',', ' ', '\n', '\r', ';'])
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let req = AddOrgRequest {
        name: form.name,
        seats,
        members: Some(members),
    };
    let made = match sim_orgs::add_org(app.providers.sim.clone(), true, req).await {
        Ok(m) => m,
        Err(e) => return refused(e.message),
    };
    let change = audit::more_changes::sim_org_add(&made, seats);
    audit::record(&app.users, &app.clock, &actor, change).await;
    let import = ImportCookieRequest {
        cookie: Credential::new(made.credential),
        mode: if group.is_some() { "pool" } else { "user" }.into(),
        pool_group_id: group,
        provider: Some("sim".into()),
        provider_config: None,
    };
    match import_cookie::import_cookie(&app, import, "web").await {
        Ok(out) => {
            if let Some(job) = &out.job_id {
                audit::mark_jobs(&app.users, &actor, std::slice::from_ref(job)).await;
            }
            let change = audit::more_changes::mother_credential_import(&out);
            audit::record(&app.users, &app.clock, &actor, change).await;
            flash::redirect(
                &app,
                &format!("/mothers/{}", out.mother_id),
                Flash::Imported {
                    mother_id: out.mother_id,
                    mother_name: made.name,
                    updated: out.updated,
                    job_id: out.job_id,
                    session_id: out.session_id,
                },
            )
        }
        Err(e) => refused(format!("it was made but not imported: {}", e.message)),
    }
}

#[derive(Deserialize)]
struct DeleteForm {
    /// Delete even while seats are used or held.
    #[serde(default)]
    force: Option<String>,
}

async fn delete(
    State(app): State<AppState>,
    AuditActor(actor): AuditActor,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    let force = form.force.is_some();
    match mother_service::delete(app.pool_ctx(), id, force).await {
        Ok(()) => {
            audit::record(
                &app.users,
                &app.clock,
                &actor,
                changes::mother_delete(id, force),
            )
            .await;
            flash::redirect(&app, "/mothers", Flash::done("Mother deleted."))
        }
        Err(e) if e.is_conflict() => {
            flash::redirect(&app, &format!("/mothers/{id}"), Flash::not_done(e.message))
        }
        Err(e) => page_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_form_debug_redacts_the_credential() {
        let form = CreateForm {
            name: "acme".into(),
            credential: "s3cret-mother-credential".into(),
            ..CreateForm::default()
        };
        let printed = format!("{form:?}");
        assert!(printed.contains("acme"), "{printed}");
        assert!(!printed.contains("s3cret-mother-credential"), "{printed}");
    }
}
