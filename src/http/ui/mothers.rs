//! The Mothers pages: the searchable, paginated list with seat-usage bars, and on it the create
//! form, the batch import with per-row results and the import dialog (handled in
//! `mother_import`); a mother's page with delete. Forms post here, not to the API, and call the
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

use super::csrf::CsrfForm;
use super::flash::{self, Flash};
use super::list_filters::{page_count, page_number, page_query, within_pages};
use super::{Layout, not_found, numeric_id, page_error};
use crate::app::AppState;
use crate::auth::Principal;
use crate::crypto::Credential;
use crate::domain::mothers::MotherInput;
use crate::http::error::ApiError;
use crate::http::pagination::PageParams;
use crate::service::mothers::{self as mother_service, BatchReport};
use crate::service::pool_groups as group_service;
use crate::store::mothers::{Mother, MotherDetail};
use crate::store::pool_groups::PoolGroup;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mothers", get(list).post(create))
        .route("/mothers/batch", post(batch))
        .route("/mothers/{id}", get(show))
        .route("/mothers/{id}/delete", post(delete))
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
    groups: Vec<PoolGroup>,
    error: Option<String>,
    create: CreateForm,
    /// The batch form was posted: its rows are not shown again (they hold credentials).
    batch_posted: bool,
    batch: Option<BatchReport>,
    import: ImportView,
}

impl ListPage {
    /// The query string of another page of this list, with the same search and status.
    fn link(&self, page: i64) -> String {
        page_query(page, [("search", &*self.search), ("status", &*self.status)])
    }
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
    let filter = mother_service::list_filter(Some(&q.search), Some(&q.status), None);
    let refused = number
        .err()
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
        search: q.search,
        status: q.status,
        groups,
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
    CsrfForm(mut form): CsrfForm<CreateForm>,
) -> Response {
    let result = match form.input() {
        Ok(input) => mother_service::create(app.pool_ctx(), input)
            .await
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    match result {
        Ok(id) => flash::redirect(
            &app,
            &format!("/mothers/{id}"),
            Flash::done("Mother created."),
        ),
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
}

async fn mother_page(
    app: &AppState,
    principal: &Principal,
    id: i64,
    error: Option<String>,
) -> Response {
    match mother_service::detail(app.pool_ctx(), id).await {
        Ok(m) => MotherPage {
            layout: Layout::new(principal, "/mothers"),
            m,
            error,
        }
        .into_response(),
        Err(e) => page_error(e),
    }
}

async fn show(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    match numeric_id(&id) {
        Some(id) => mother_page(&app, &principal, id, None).await,
        None => not_found(),
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
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Response {
    let Some(id) = numeric_id(&id) else {
        return not_found();
    };
    match mother_service::delete(app.pool_ctx(), id, form.force.is_some()).await {
        Ok(()) => flash::redirect(&app, "/mothers", Flash::done("Mother deleted.")),
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
