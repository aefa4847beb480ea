//! Importing a mother from a provider credential (the "cookie"): the provider says whose it is,
//! the mother is created or updated with the credential sealed, and in pool mode her sync is
//! queued. The credential is checked with the provider before anything is stored.

use serde::{Deserialize, Serialize};

use super::pool_sync;
use super::{Error, Result};
use crate::app::App;
use crate::crypto::Credential;
use crate::domain::mothers::{self as rules, MotherInput};
use crate::providers::ProviderError;
use crate::store::mothers as store;

/// `POST /api/admin/import-cookie` body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportCookieRequest {
    /// The provider credential; sealed before it is stored, never returned.
    #[schema(value_type = String)]
    pub cookie: Credential,
    /// `user` (store the mother only) or `pool` (put her in `pool_group_id` and sync her).
    pub mode: String,
    /// Required in pool mode.
    pub pool_group_id: Option<i64>,
    /// `sim` (default) or `scim`.
    pub provider: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub provider_config: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ImportCookieResponse {
    pub mother_id: i64,
    /// True when a mother of that name existed and took the new credential.
    pub updated: bool,
    /// The sync job (pool mode).
    pub job_id: Option<String>,
    pub session_id: Option<String>,
}

/// What a provider's refusal means for the caller.
fn provider_error(e: ProviderError) -> Error {
    match e {
        ProviderError::Unauthorized(reason) => Error::rejected(
            "credential_rejected",
            format!("cookie: the provider rejected the credential: {reason}"),
        ),
        ProviderError::RateLimited { retry_after_ms } => Error::rate_limited(
            "the provider is rate limiting; try again later",
            u64::try_from(retry_after_ms.div_euclid(1000) + 1).unwrap_or(1),
        ),
        ProviderError::Transient(m) => {
            Error::unavailable(format!("the provider did not answer: {m}"))
        }
        other => Error::rejected("provider_error", format!("provider: {other}")),
    }
}

/// The credential of an existing mother is replaced only when she has the provider and
/// `provider_config` the credential was checked with; another one is a different account that
/// happens to share the name (409, nothing changed).
async fn check_same_provider(
    app: &App,
    id: i64,
    provider: &str,
    config: &serde_json::Value,
) -> Result<()> {
    let mother = store::get(&app.pool, id).await?;
    let empty = serde_json::json!({});
    let normalise = |v: &serde_json::Value| {
        if v.is_null() {
            empty.clone()
        } else {
            v.clone()
        }
    };
    if mother.provider != provider {
        return Err(Error::new(
            super::ErrorKind::Conflict,
            "provider_mismatch",
            format!(
                "mother {:?} exists with provider {}, not {provider}; nothing was changed",
                mother.name, mother.provider
            ),
        ));
    }
    if normalise(&mother.provider_config) != normalise(config) {
        return Err(Error::new(
            super::ErrorKind::Conflict,
            "provider_mismatch",
            format!(
                "mother {:?} exists with another provider_config; nothing was changed",
                mother.name
            ),
        ));
    }
    Ok(())
}

pub async fn import_cookie(
    app: &App,
    req: ImportCookieRequest,
    created_by: &str,
) -> Result<ImportCookieResponse> {
    let ctx = app.pool_ctx();
    let pool_mode = match req.mode.as_str() {
        "pool" => true,
        "user" => false,
        _ => {
            return Err(Error::invalid(
                "invalid_mode",
                "mode must be `user` or `pool`",
            ));
        }
    };
    let group_id = match (pool_mode, req.pool_group_id) {
        (true, None) => {
            return Err(Error::invalid(
                "invalid_pool_group",
                "pool_group_id is required in pool mode",
            ));
        }
        (true, Some(id)) => {
            if !crate::store::pool_groups::exists(&app.pool, id).await? {
                return Err(Error::invalid(
                    "invalid_pool_group",
                    format!("pool_group_id {id} does not name a pool group"),
                ));
            }
            Some(id)
        }
        (false, _) => None,
    };
    rules::check_credential(&req.cookie)
        .map_err(|e| Error::invalid("invalid_cookie", format!("cookie: {}", e.message)))?;
    let provider_name = req.provider.clone().unwrap_or_else(|| "sim".into());
    let kind = rules::check_provider(&provider_name).map_err(super::mothers::field_error)?;
    let config = req.provider_config.clone().unwrap_or(serde_json::json!({}));
    let provider = app
        .providers
        .for_mother(kind.as_str(), &config)
        .map_err(provider_error)?;
    let account = provider
        .identify(&req.cookie)
        .await
        .map_err(provider_error)?;

    let name =
        rules::check_name("name", &account.organisation).map_err(super::mothers::field_error)?;
    let existing = store::id_by_name(&app.pool, &name).await?;
    let now = app.clock.now_ms();
    let (mother_id, updated) = match existing {
        Some(id) => {
            check_same_provider(app, id, kind.as_str(), &config).await?;
            super::mothers::rotate_credential(ctx, id, &req.cookie).await?;
            // A working credential makes an invalid mother usable again.
            store::reactivate(&app.pool, id, now).await?;
            (id, true)
        }
        None => {
            let input = MotherInput {
                name: name.clone(),
                provider: kind.as_str().to_string(),
                credential: req.cookie.clone(),
                provider_config: Some(config.clone()),
                seat_limit: None,
                pool_group_id: group_id,
                notes: Some(format!(
                    "imported from a credential of {}",
                    account.owner_email
                )),
                teams: None,
            };
            match super::mothers::create(ctx, input).await {
                Ok(id) => (id, false),
                // Imported concurrently under the same name: take the winner's row.
                Err(e) if e.is_conflict() => match store::id_by_name(&app.pool, &name).await? {
                    Some(id) => {
                        check_same_provider(app, id, kind.as_str(), &config).await?;
                        super::mothers::rotate_credential(ctx, id, &req.cookie).await?;
                        (id, true)
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    };
    let (job_id, session_id) = match group_id {
        Some(group_id) => {
            let q = pool_sync::sync_mother(app, group_id, mother_id, created_by).await?;
            (Some(q.job_id), q.session_id)
        }
        None => (None, None),
    };
    Ok(ImportCookieResponse {
        mother_id,
        updated,
        job_id,
        session_id,
    })
}

/// Asks the provider of kind `provider` whether it knows `credential`, as an import does, before a
/// mother is created with it; the organisation it names. Nothing is written.
pub async fn identify(
    app: &App,
    provider: &str,
    provider_config: &serde_json::Value,
    credential: &Credential,
) -> Result<crate::providers::Account> {
    let kind = rules::check_provider(provider).map_err(super::mothers::field_error)?;
    rules::check_credential(credential).map_err(super::mothers::field_error)?;
    let provider = app
        .providers
        .for_mother(kind.as_str(), provider_config)
        .map_err(provider_error)?;
    provider.identify(credential).await.map_err(|e| {
        let mut e = provider_error(e);
        e.message = e.message.replacen("cookie: ", "credential: ", 1);
        e
    })
}
