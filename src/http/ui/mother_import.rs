//! The Mothers page's import dialog: a mother from a provider credential, through the same
//! service as the API. The credential is never shown again; a refusal reopens the dialog with the
//! reason, a success redirects to the list, whose flash shows the mother and (in pool mode) the
//! sync job the page follows.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;

use super::csrf::CsrfForm;
use super::flash::{self, Flash};
use super::mothers::{
    ImportFields, ImportView, Posted, blank_to_none, group_field, list_page, provider_config_field,
};
use super::page_error;
use crate::app::AppState;
use crate::auth::Principal;
use crate::crypto::Credential;
use crate::http::error::ApiError;
use crate::http::extract::AuditActor;
use crate::service;
use crate::service::audit;
use crate::service::import_cookie::{self as import_service, ImportCookieRequest};
use crate::service::mothers as mother_service;

pub fn routes() -> Router<AppState> {
    Router::new().route("/mothers/import", post(import))
}

#[derive(Deserialize)]
struct ImportForm {
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

impl ImportForm {
    /// The service request; the credential leaves the form, so it cannot be shown again.
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

    /// What the dialog shows again after a refusal.
    fn shown_again(self) -> ImportFields {
        ImportFields {
            mode: self.mode,
            provider: self.provider,
            provider_config: self.provider_config,
            pool_group_id: self.pool_group_id,
        }
    }
}

/// Imports a mother from a provider credential through the same service as the API; a refusal
/// (a bad field, a credential the provider rejects) reopens the dialog with the reason.
async fn import(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    AuditActor(actor): AuditActor,
    CsrfForm(mut form): CsrfForm<ImportForm>,
) -> Response {
    let outcome = match form.request() {
        Ok(req) => import_service::import_cookie(&app, req, &principal.display_name()).await,
        Err(message) => Err(service::Error::invalid("invalid_body", message)),
    };
    let out = match outcome {
        Ok(out) => {
            if let Some(job) = &out.job_id {
                audit::mark_jobs(&app.users, &actor, std::slice::from_ref(job)).await;
            }
            let change = audit::more_changes::mother_credential_import(&out);
            audit::record(&app.users, &app.clock, &actor, change).await;
            out
        }
        Err(e) => {
            let e = ApiError::from(e);
            let posted = Posted {
                import: ImportView {
                    form: form.shown_again(),
                    error: Some(e.message),
                },
                ..Posted::default()
            };
            return (e.status, list_page(&app, &principal, posted).await).into_response();
        }
    };
    let mother_name = match mother_service::get(app.pool_ctx(), out.mother_id).await {
        Ok(m) => m.name,
        Err(e) => return page_error(e),
    };
    let flash = Flash::Imported {
        mother_id: out.mother_id,
        mother_name,
        updated: out.updated,
        job_id: out.job_id,
        session_id: out.session_id,
    };
    flash::redirect(&app, "/mothers", flash)
}
