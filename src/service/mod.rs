//! One function per use case, shared by the API, the web UI and the CLI: each checks its input with
//! the rules in `domain`, seals what must be sealed, writes through `store` and enqueues through
//! `jobs`. Errors are [`Error`]s, which know no protocol: `http` maps them to a status once, the
//! CLI prints their message. Nothing here knows HTTP.

pub mod admins;
pub mod audit;
pub mod codes;
pub mod credential_accounts;
mod error;
pub mod import_cookie;
pub mod invites;
pub mod jobs;
pub mod leasing;
pub mod missions;
pub mod mothers;
pub mod names;
pub mod overview;
pub mod pool_groups;
pub mod pool_sync;
pub mod redeem;
pub mod sim_orgs;
pub mod sync_sessions;
pub mod tokens;
pub mod webhooks;

pub use error::{Error, ErrorKind, Result, not_found};

/// An empty filter value means "any"; anything else must be one of `allowed`.
pub(crate) fn one_of(
    field: &'static str,
    value: Option<String>,
    allowed: &[&str],
) -> Result<Option<String>> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) if !allowed.contains(&v.as_str()) => Err(Error::invalid(
            format!("invalid_{field}"),
            format!("{field} must be one of {}", allowed.join(", ")),
        )),
        other => Ok(other),
    }
}

use crate::clock::SharedClock;
use crate::crypto::Keyring;
use crate::db::PoolDb;

/// What pool operations need: the pool database, the keyring, the clock and the instance-wide
/// `child_email_domain`.
#[derive(Clone, Copy)]
pub struct PoolCtx<'a> {
    pub pool: &'a PoolDb,
    pub keyring: &'a Keyring,
    pub clock: &'a SharedClock,
    pub child_email_domain: Option<&'a str>,
}

impl crate::app::App {
    pub fn pool_ctx(&self) -> PoolCtx<'_> {
        PoolCtx {
            pool: &self.pool,
            keyring: &self.keyring,
            clock: &self.clock,
            child_email_domain: self.config.child_email_domain.as_deref(),
        }
    }
}
