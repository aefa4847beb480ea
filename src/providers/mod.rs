//! Providers: the outside systems that own mothers' teams and members. This module owns the
//! [`Provider`] contract and its typed errors; each backend lives in a submodule (`sim`, the
//! in-process simulator, and `scim`, a SCIM 2.0 client). A provider never sees the database: callers pass the opened credential in, and callers
//! decide what an error means for the mother and the job.

pub mod scim;
pub mod sim;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::crypto::Credential;
use crate::domain::mothers::ProviderKind;

/// Checks a provider configuration before it is stored: each kind owns its rules. The message
/// names the offending key.
pub fn check_config(kind: ProviderKind, config: &serde_json::Value) -> Result<(), String> {
    match kind {
        ProviderKind::Sim => Ok(()),
        ProviderKind::Scim => scim::ScimConfig::from_json(config).map(drop),
    }
}

/// The future a provider call returns; boxed so the trait stays object-safe without `async_trait`.
pub type ProviderFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// Why a provider call failed. The job runner maps these (see `jobs::pool_sync`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The credential is no longer valid; retrying cannot help.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Too many calls; try again after `retry_after_ms`.
    #[error("rate limited, retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: i64 },
    /// A failure that may pass (timeout, 5xx, connection reset).
    #[error("transient provider error: {0}")]
    Transient(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("provider error: {0}")]
    Permanent(String),
}

/// Who a credential belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The organisation (or tenant) name the provider reports.
    pub organisation: String,
    /// The mother's own user; never treated as a child.
    pub owner_email: String,
    /// Seats across the organisation's teams, when the provider knows.
    pub seats: Option<i64>,
}

/// A team as the provider names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTeam {
    pub id: String,
    pub name: String,
}

/// Whether a member has accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Active,
    Invited,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Invited => "invited",
        }
    }
}

/// A member (or pending invitee) of a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub email: String,
    pub name: String,
    pub status: MemberStatus,
}

/// What `invite` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invited {
    /// A new invitation went out; the address joins once its owner accepts.
    Sent,
    /// The address was made a member directly (provisioning services such as SCIM).
    Added,
    /// The address was already a member or invited; nothing was sent.
    AlreadyPresent,
}

/// One provider account's view, reached with the mother's credential and `provider_config`.
pub trait Provider: Send + Sync {
    /// Who the credential belongs to; `Unauthorized` when the provider rejects it.
    fn identify<'a>(&'a self, credential: &'a Credential) -> ProviderFuture<'a, Account>;
    fn list_teams<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> ProviderFuture<'a, Vec<ProviderTeam>>;
    fn rename_team<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        name: &'a str,
    ) -> ProviderFuture<'a, ()>;
    fn list_members<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
    ) -> ProviderFuture<'a, Vec<Member>>;
    /// Idempotent: an address already a member or invited gives [`Invited::AlreadyPresent`].
    fn invite<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        email: &'a str,
        name: &'a str,
    ) -> ProviderFuture<'a, Invited>;
    /// Removing an address that is not there is not an error.
    fn remove_member<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        email: &'a str,
    ) -> ProviderFuture<'a, ()>;
}

/// The providers of this process, by kind.
#[derive(Clone)]
pub struct Providers {
    pub sim: Arc<sim::SimProvider>,
    pub scim: scim::ScimFactory,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

/// The directory in the data dir where the simulator keeps its organisations.
pub const SIM_STATE_DIR: &str = "sim-provider";

impl Providers {
    /// `scim_egress` says which internal addresses SCIM calls may reach.
    pub fn new(data_dir: &std::path::Path, scim_egress: crate::domain::egress::EgressRule) -> Self {
        Self {
            sim: Arc::new(sim::SimProvider::new(data_dir.join(SIM_STATE_DIR))),
            scim: scim::ScimFactory::new(scim_egress),
        }
    }

    /// The provider for a mother of kind `kind`, set up by her `provider_config`.
    pub fn for_mother(
        &self,
        kind: &str,
        provider_config: &serde_json::Value,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        match ProviderKind::parse(kind) {
            Some(ProviderKind::Sim) => Ok(self.sim.clone()),
            Some(ProviderKind::Scim) => Ok(self.scim.provider(provider_config)?),
            None => Err(ProviderError::Permanent(format!(
                "unknown provider {kind:?}"
            ))),
        }
    }
}
