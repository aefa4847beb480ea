//! The invites redeems sent, as operators handle them: list them, and resend, cancel or remove
//! them in bulk. A bulk action is one durable job (`jobs::invites` does the work and records a
//! result per invite); this module checks the request and enqueues it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Error, Result, one_of};
use crate::app::App;
use crate::jobs::invites::{CancelInvites, RemoveInvites, ResendInvites};
use crate::jobs::{self, JobArgs};
use crate::store::invites::{self, Invite, InviteFilter};
use crate::store::redeem_codes;

pub const STATUSES: [&str; 6] = [
    "pending",
    "sent",
    "accepted",
    "failed",
    "cancelled",
    "removed",
];

/// The most invites one bulk action takes.
pub const MAX_BULK: usize = 1000;

/// Checks invite list filters: empty means any.
pub fn filter(
    status: Option<String>,
    email: Option<String>,
    mother_id: Option<i64>,
) -> Result<InviteFilter> {
    Ok(InviteFilter {
        status: one_of("status", status, &STATUSES)?,
        email: email.filter(|s| !s.trim().is_empty()),
        mother_id,
    })
}

/// A page of invites, newest first, and how many match.
pub async fn list(
    app: &App,
    f: &InviteFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Invite>, i64)> {
    Ok(invites::list(&app.users, f, limit, offset).await?)
}

/// A bulk action on invites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    /// `users_resend`: invite the addresses again through the provider.
    Resend,
    /// `users_cancel`: withdraw pending or sent invites and free their seats.
    Cancel,
    /// `users_remove`: remove the invitees at the provider and free their seats.
    Remove,
}

impl BulkAction {
    /// `resend`, `cancel` or `remove`, as routes and forms name them.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "resend" => Some(Self::Resend),
            "cancel" => Some(Self::Cancel),
            "remove" => Some(Self::Remove),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resend => "resend",
            Self::Cancel => "cancel",
            Self::Remove => "remove",
        }
    }
    pub fn job_type(self) -> &'static str {
        match self {
            Self::Resend => ResendInvites::KIND,
            Self::Cancel => CancelInvites::KIND,
            Self::Remove => RemoveInvites::KIND,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// Invite ids, 1 to 1000 of them; repeats count once.
    pub ids: Vec<i64>,
}

/// A queued bulk action.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BulkQueued {
    pub job_id: String,
    /// `users_resend`, `users_cancel` or `users_remove`.
    pub job_type: String,
    /// How many distinct invites the job takes.
    pub count: usize,
}

/// Queues one job doing `action` to every invite of `req.ids`.
pub async fn bulk(app: &App, action: BulkAction, req: BulkRequest) -> Result<BulkQueued> {
    let mut ids = req.ids;
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || ids.len() > MAX_BULK {
        return Err(Error::invalid(
            "invalid_ids",
            format!("ids must list 1 to {MAX_BULK} invite ids"),
        ));
    }
    if ids.iter().any(|&id| id <= 0) {
        return Err(Error::invalid(
            "invalid_ids",
            "ids must be positive invite ids",
        ));
    }
    let count = ids.len();
    let job = match action {
        BulkAction::Resend => ResendInvites { ids }.to_job(),
        BulkAction::Cancel => CancelInvites { ids }.to_job(),
        BulkAction::Remove => RemoveInvites { ids }.to_job(),
    };
    let now = app.clock.now_ms();
    let (row, _) = jobs::enqueue(&app.users, &job, app.config.jobs.max_attempts, now).await?;
    tracing::info!(job_id = %row.id, job_type = action.job_type(), count, "queued a bulk invite action");
    Ok(BulkQueued {
        job_id: row.id,
        job_type: action.job_type().to_string(),
        count,
    })
}

/// Redeem codes and invites by status, for `/api/admin/stats`; every status is present.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct UsersCounts {
    /// Codes by status: `unused`, `reserved`, `used`, `expired`, `disabled`.
    pub codes: BTreeMap<String, i64>,
    /// Invites by status: `pending`, `sent`, `accepted`, `failed`, `cancelled`, `removed`.
    pub invites: BTreeMap<String, i64>,
}

pub async fn counts(app: &App) -> Result<UsersCounts> {
    let mut c = UsersCounts::default();
    for s in ["unused", "reserved", "used", "expired", "disabled"] {
        c.codes.insert(s.to_string(), 0);
    }
    for s in STATUSES {
        c.invites.insert(s.to_string(), 0);
    }
    c.codes
        .extend(redeem_codes::count_by_status(&app.users).await?);
    c.invites
        .extend(invites::count_by_status(&app.users).await?);
    Ok(c)
}

/// One invite, for the confirmation of a bulk action.
pub async fn get(app: &App, id: i64) -> Result<Option<Invite>> {
    Ok(invites::get(&app.users, id).await?)
}

/// The mothers that invites went to, for the Users page's mother filter.
pub async fn mother_ids(app: &App) -> Result<Vec<i64>> {
    Ok(invites::mother_ids(&app.users).await?)
}
