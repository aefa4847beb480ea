//! The JSON API. Every route is declared with `#[utoipa::path]` and registered through
//! `utoipa_axum::routes!`, so the router and the OpenAPI document come from the same definitions.
//! Each operation has exactly one tag, its domain: `pool`, `users` or `system`.

pub mod admins;
pub mod audit;
pub mod codes;
pub mod credential_accounts;
pub mod import_cookie;
pub mod invites;
pub mod jobs;
pub mod leases;
pub mod missions;
pub mod mothers;
pub mod pool_groups;
pub mod pool_sync;
pub mod redeem;
pub mod session;
pub mod sim;
pub mod sync_sessions;
pub mod system;
pub mod tokens;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// Routes anyone may call: probes, login, redeem (and [`metrics_routes`]).
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(session::login))
        .routes(routes!(redeem::redeem))
        .routes(routes!(redeem::resend))
}

/// `/metrics`: on the main address, or alone on `metrics_listen`; `metrics_token` guards it.
pub fn metrics_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(system::metrics))
}

/// Routes that need a session or a token of scope admin, operator or viewer; each needs the
/// role `routes::API_ROLES` gives it.
pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(session::logout))
        .routes(routes!(session::me))
        .routes(routes!(system::db_status))
        .routes(routes!(system::system))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(audit::list_audit))
        .routes(routes!(admins::list_admins, admins::create_admin))
        .routes(routes!(admins::set_role))
        .routes(routes!(admins::reset_password))
        .routes(routes!(admins::disable_admin))
        .routes(routes!(admins::enable_admin))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::job_stats))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(pool_groups::list_groups, pool_groups::create_group))
        .routes(routes!(pool_groups::get_group, pool_groups::delete_group))
        .routes(routes!(pool_groups::update_settings))
        .routes(routes!(pool_groups::preview))
        .routes(routes!(pool_sync::sync_mother))
        .routes(routes!(pool_sync::sync_all))
        .routes(routes!(import_cookie::import_cookie))
        .routes(routes!(sim::add_org))
        .routes(routes!(sync_sessions::list_sessions))
        .routes(routes!(sync_sessions::session_statistics))
        .routes(routes!(sync_sessions::get_session))
        .routes(routes!(sync_sessions::cancel_session))
        .routes(routes!(mothers::list_mothers, mothers::create_mother))
        .routes(routes!(
            mothers::get_mother,
            mothers::patch_mother,
            mothers::delete_mother
        ))
        .routes(routes!(mothers::rotate_credential))
        .routes(routes!(mothers::batch_validate))
        .routes(routes!(mothers::batch_import))
        .routes(routes!(mothers::stats))
        .routes(routes!(mothers::quota))
        .routes(routes!(
            credential_accounts::list_accounts,
            credential_accounts::create_account
        ))
        .routes(routes!(credential_accounts::import_accounts))
        .routes(routes!(credential_accounts::account_status))
        .routes(routes!(credential_accounts::account_usage))
        .routes(routes!(
            credential_accounts::get_account,
            credential_accounts::patch_account,
            credential_accounts::delete_account
        ))
        .routes(routes!(credential_accounts::reset_account))
        .routes(routes!(credential_accounts::list_leases))
        .routes(routes!(codes::list_codes, codes::generate_codes))
        .routes(routes!(codes::code_quota))
        .routes(routes!(codes::disable_codes))
        .routes(routes!(invites::list_invites))
        .routes(routes!(invites::resend_invites))
        .routes(routes!(invites::cancel_invites))
        .routes(routes!(invites::remove_invites))
}

/// Routes for automation workers (a bearer token of scope `worker`): the lease and mission APIs.
pub fn worker_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(leases::acquire_lease))
        .routes(routes!(leases::renew_lease))
        .routes(routes!(leases::release_lease))
        .routes(routes!(missions::queue_request))
        .routes(routes!(missions::claim_mission))
        .routes(routes!(missions::complete_mission))
}
