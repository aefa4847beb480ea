//! Pool groups: create with default naming settings, change settings (checked as a whole), preview
//! the next names without using up a number.

use serde::{Deserialize, Serialize};

use super::PoolCtx;
use super::{Error, Result};
use crate::domain::naming::{self, Naming, SettingError};
use crate::store::StoreError;
use crate::store::pool_groups::{self as store, GroupSettings, PoolGroup, SequenceKind};

pub const MAX_PREVIEW: i64 = 100;

/// A group name: 1-64 letters, digits, `.`, `_` or `-`, because it is rendered into team names,
/// child names and email addresses.
pub fn check_group_name(name: &str) -> Result<String> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.')
        && !name.ends_with('.');
    if !ok {
        return Err(Error::invalid(
            "invalid_name",
            "name must be 1-64 letters, digits, `.`, `_` or `-` (not starting or ending with `.`)",
        ));
    }
    Ok(name.to_string())
}

pub fn default_settings() -> GroupSettings {
    GroupSettings {
        team_template: naming::DEFAULT_TEAM_TEMPLATE.into(),
        child_name_template: naming::DEFAULT_CHILD_NAME_TEMPLATE.into(),
        child_email_template: naming::DEFAULT_CHILD_EMAIL_TEMPLATE.into(),
        email_domain: None,
        is_active: true,
        auto_invite: false,
    }
}

/// Creates a group with the default settings; `auto_invite` (default off) may be set at once.
pub async fn create(
    ctx: PoolCtx<'_>,
    name: &str,
    description: Option<&str>,
    auto_invite: Option<bool>,
) -> Result<PoolGroup> {
    let settings = GroupSettings {
        auto_invite: auto_invite.unwrap_or(false),
        ..default_settings()
    };
    create_group(ctx, name, description, &settings).await
}

async fn create_group(
    ctx: PoolCtx<'_>,
    name: &str,
    description: Option<&str>,
    settings: &GroupSettings,
) -> Result<PoolGroup> {
    let name = check_group_name(name)?;
    let description = description.unwrap_or("").trim();
    if description.len() > 1000 {
        return Err(Error::invalid(
            "invalid_description",
            "description must be at most 1000 bytes",
        ));
    }
    match store::create(ctx.pool, &name, description, settings, ctx.clock.now_ms()).await {
        Ok(g) => Ok(g),
        Err(StoreError::Conflict(_)) => Err(Error::conflict(format!(
            "a pool group named `{name}` already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn get(ctx: PoolCtx<'_>, id: i64) -> Result<PoolGroup> {
    match store::get(ctx.pool, id).await {
        Err(StoreError::NotFound) => Err(Error::not_found(format!("no pool group {id}"))),
        other => Ok(other?),
    }
}

/// A page of groups, by name, and the total.
pub async fn list_page(ctx: PoolCtx<'_>, limit: i64, offset: i64) -> Result<(Vec<PoolGroup>, i64)> {
    Ok(store::list_page(ctx.pool, limit, offset).await?)
}

/// Every group (for pickers and the groups page).
pub async fn list_all(ctx: PoolCtx<'_>) -> Result<Vec<PoolGroup>> {
    Ok(store::list_all(ctx.pool).await?)
}

/// A partial update of a group's settings; absent fields keep their value. `email_domain: ""`
/// clears the group's domain.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub team_template: Option<String>,
    pub child_name_template: Option<String>,
    pub child_email_template: Option<String>,
    pub email_domain: Option<String>,
    pub is_active: Option<bool>,
    /// Invite generated addresses into free seats during a sync of this group's mothers.
    pub auto_invite: Option<bool>,
}

pub fn template_error(e: &SettingError) -> Error {
    Error::invalid("invalid_template", e.to_string())
}

/// The group's naming, checked against the instance's `child_email_domain`.
pub fn naming_of(
    ctx: PoolCtx<'_>,
    group: &str,
    settings: &GroupSettings,
    day: &str,
) -> Result<Naming, SettingError> {
    Naming::check(group, &settings.naming(), ctx.child_email_domain, day)
}

/// `settings` with what `patch` gives (an empty `email_domain` clears it).
fn patched(mut s: GroupSettings, patch: SettingsPatch) -> GroupSettings {
    if let Some(t) = patch.team_template {
        s.team_template = t;
    }
    if let Some(t) = patch.child_name_template {
        s.child_name_template = t;
    }
    if let Some(t) = patch.child_email_template {
        s.child_email_template = t;
    }
    if let Some(d) = patch.email_domain {
        let d = d.trim().to_ascii_lowercase();
        s.email_domain = (!d.is_empty()).then_some(d);
    }
    if let Some(a) = patch.is_active {
        s.is_active = a;
    }
    if let Some(a) = patch.auto_invite {
        s.auto_invite = a;
    }
    s
}

/// Checks settings as a whole for a group named `group` on `day`.
fn check_settings(ctx: PoolCtx<'_>, group: &str, s: &GroupSettings, day: &str) -> Result<Naming> {
    naming_of(ctx, group, s, day).map_err(|e| {
        if e.field == "email_domain" {
            Error::invalid("invalid_email_domain", e.to_string())
        } else {
            template_error(&e)
        }
    })
}

pub async fn update_settings(ctx: PoolCtx<'_>, id: i64, patch: SettingsPatch) -> Result<PoolGroup> {
    let group = get(ctx, id).await?;
    let s = patched(group.settings.clone(), patch);
    let now = ctx.clock.now_ms();
    check_settings(ctx, &group.name, &s, &naming::utc_day(now))?;
    match store::update_settings(ctx.pool, id, &s, now).await {
        Err(StoreError::NotFound) => Err(Error::not_found(format!("no pool group {id}"))),
        other => Ok(other?),
    }
}

/// Creates a group with the default settings changed by `patch` (the create form of the Pool
/// groups page). The fields given are checked before anything is written; a default that cannot
/// render yet (the email template while no domain is known) is left for the group's page to
/// explain, as for a group created with the defaults alone.
pub async fn create_with_settings(
    ctx: PoolCtx<'_>,
    name: &str,
    description: Option<&str>,
    patch: SettingsPatch,
) -> Result<PoolGroup> {
    let checked_name = check_group_name(name)?;
    let given = [
        ("team_template", patch.team_template.is_some()),
        ("child_name_template", patch.child_name_template.is_some()),
        ("child_email_template", patch.child_email_template.is_some()),
        ("email_domain", patch.email_domain.is_some()),
    ];
    let s = patched(default_settings(), patch);
    let day = naming::utc_day(ctx.clock.now_ms());
    if let Err(e) = naming_of(ctx, &checked_name, &s, &day)
        && given.iter().any(|(field, yes)| *yes && *field == e.field)
    {
        return Err(if e.field == "email_domain" {
            Error::invalid("invalid_email_domain", e.to_string())
        } else {
            template_error(&e)
        });
    }
    create_group(ctx, &checked_name, description, &s).await
}

/// The names group `id` would produce today with its settings changed by `patch` (templates as
/// they are being typed), rendered by the same domain rules as a sync; nothing is saved or used
/// up. A template that does not check is an `invalid_template` error naming the part.
pub async fn preview_with(
    ctx: PoolCtx<'_>,
    id: i64,
    patch: SettingsPatch,
    count: i64,
) -> Result<Preview> {
    let group = get(ctx, id).await?;
    let s = patched(group.settings.clone(), patch);
    let date = naming::utc_day(ctx.clock.now_ms());
    let naming = check_settings(ctx, &group.name, &s, &date)?;
    names_after(ctx, &group, &naming, date, count).await
}

/// The `count` names after the last ones handed out on `date`.
async fn names_after(
    ctx: PoolCtx<'_>,
    group: &PoolGroup,
    naming: &Naming,
    date: String,
    count: i64,
) -> Result<Preview> {
    let last_team = store::last_sequence(ctx.pool, group.id, &date, SequenceKind::Team).await?;
    let last_child = store::last_sequence(ctx.pool, group.id, &date, SequenceKind::Child).await?;
    let name = &group.name;
    Ok(Preview {
        team_names: naming.names(name, &date, &naming.team, last_team + 1, count),
        child_names: naming.names(name, &date, &naming.child_name, last_child + 1, count),
        child_emails: naming.names(name, &date, &naming.child_email, last_child + 1, count),
        date,
    })
}

/// The next names a group would produce today.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// YYYYMMDD (UTC).
    pub date: String,
    pub team_names: Vec<String>,
    pub child_names: Vec<String>,
    pub child_emails: Vec<String>,
}

/// Reads the last numbers handed out today and renders the ones after them; allocates nothing.
pub async fn preview(ctx: PoolCtx<'_>, id: i64, count: Option<i64>) -> Result<Preview> {
    let count = count.unwrap_or(5);
    if !(1..=MAX_PREVIEW).contains(&count) {
        return Err(Error::invalid(
            "invalid_query",
            format!("count must be between 1 and {MAX_PREVIEW}"),
        ));
    }
    let group = get(ctx, id).await?;
    let date = naming::utc_day(ctx.clock.now_ms());
    let naming =
        naming_of(ctx, &group.name, &group.settings, &date).map_err(|e| template_error(&e))?;
    names_after(ctx, &group, &naming, date, count).await
}

pub async fn delete(ctx: PoolCtx<'_>, id: i64) -> Result<()> {
    match store::delete(ctx.pool, id).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => Err(Error::not_found(format!("no pool group {id}"))),
        Err(StoreError::Conflict(_)) => Err(Error::conflict(format!(
            "pool group {id} still has mothers; move or delete them first"
        ))),
        Err(e) => Err(e.into()),
    }
}
