//! Mothers: create (credential sealed, default team named by the group's template), patch, delete,
//! rotate a credential, the list filter, batch validate/import, stats and quota, and re-sealing
//! every credential with the current key.

pub mod bulk;
pub mod rows;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::PoolCtx;
use super::{Error, Result};
use crate::crypto::{Credential, Keyring};
use crate::domain::mothers::{self, FieldError, MotherInput, NewMother};
use crate::domain::naming::{self, NameValues, Template};
use crate::providers;
use crate::store::mothers::{
    self as store, DefaultTeam, MotherFilter, MotherPatch, MotherSort, NewMotherRecord, PatchError,
};
use crate::store::{StoreError, pool_groups};

/// Rows a batch request may carry.
pub const MAX_BATCH_ROWS: usize = 1000;

pub fn field_error(e: FieldError) -> Error {
    Error::invalid(e.code, e.message)
}

/// Checks a mother's fields, then her provider configuration by the provider's own rules.
pub fn check_input(input: MotherInput) -> std::result::Result<NewMother, FieldError> {
    let m = input.check()?;
    let config = serde_json::from_str(&m.provider_config).unwrap_or_default();
    providers::check_config(m.provider, &config).map_err(|message| FieldError {
        code: "invalid_provider_config",
        field: "provider_config",
        message,
    })?;
    Ok(m)
}

fn seal(ctx: PoolCtx<'_>, credential: &Credential) -> Result<String> {
    ctx.keyring.seal(credential).map_err(Error::internal)
}

async fn check_group(ctx: PoolCtx<'_>, group: Option<i64>) -> Result<()> {
    if let Some(id) = group
        && !pool_groups::exists(ctx.pool, id).await?
    {
        return Err(Error::invalid(
            "invalid_pool_group",
            format!("pool_group_id {id} does not name a pool group"),
        ));
    }
    Ok(())
}

/// Creates a checked mother; the id, or 409 when the name is taken.
pub async fn create_checked(ctx: PoolCtx<'_>, m: &NewMother) -> Result<i64> {
    let sealed = seal(ctx, &m.credential)?;
    let now = ctx.clock.now_ms();
    let day = naming::utc_day(now);
    // A mother created without teams gets one default team, named by her group's team template
    // (numbered by the group's daily team sequence), else "default".
    let group = match m.pool_group_id {
        Some(id) => match pool_groups::name_and_settings(ctx.pool, id).await {
            Ok((name, settings)) => Some((id, name, settings)),
            Err(StoreError::NotFound) => {
                return Err(Error::invalid(
                    "invalid_pool_group",
                    format!("pool_group_id {id} does not name a pool group"),
                ));
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let template = group
        .as_ref()
        .and_then(|(_, _, settings)| Template::parse(&settings.team_template).ok());
    let domain = group
        .as_ref()
        .and_then(|(_, _, settings)| settings.email_domain.clone())
        .or_else(|| ctx.child_email_domain.map(str::to_string));
    let group_name = group
        .as_ref()
        .map(|(_, name, _)| name.clone())
        .unwrap_or_default();
    let render = |seq: i64| {
        let values = NameValues {
            group: &group_name,
            date: &day,
            seq,
            domain: domain.as_deref(),
        };
        template
            .as_ref()
            .and_then(|t| t.render(&values))
            .unwrap_or_else(|| format!("{group_name}-{day}-{seq:03}"))
    };
    let default_team = match &group {
        Some((group_id, _, _)) => DefaultTeam::Sequenced {
            group_id: *group_id,
            day: &day,
            render: &render,
        },
        None => DefaultTeam::Fixed("default".to_string()),
    };
    let record = NewMotherRecord {
        name: &m.name,
        provider: m.provider.as_str(),
        provider_config: &m.provider_config,
        credential_sealed: &sealed,
        seat_limit: m.seat_limit,
        pool_group_id: m.pool_group_id,
        notes: &m.notes,
        teams: &m.teams,
        default_team,
    };
    match store::create(ctx.pool, &record, now).await {
        Ok(id) => Ok(id),
        Err(StoreError::Conflict(what)) if what.contains("pool_group") => Err(Error::invalid(
            "invalid_pool_group",
            "pool_group_id does not name a pool group",
        )),
        Err(StoreError::Conflict(_)) => Err(Error::conflict(format!(
            "a mother named `{}` already exists",
            m.name
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn create(ctx: PoolCtx<'_>, input: MotherInput) -> Result<i64> {
    let m = check_input(input).map_err(field_error)?;
    check_group(ctx, m.pool_group_id).await?;
    create_checked(ctx, &m).await
}

/// The store filter of a mothers list (API query or page): a known status, a search term of at most
/// 200 bytes, a group. Empty values filter nothing.
pub fn list_filter(
    search: Option<&str>,
    status: Option<&str>,
    pool_group_id: Option<i64>,
) -> Result<MotherFilter> {
    let status = match status.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            mothers::check_status(s)
                .map_err(|e| Error::invalid("invalid_query", e.message))?
                .as_str()
                .to_string(),
        ),
        None => None,
    };
    let search = search.map(str::trim).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.len() > 200) {
        return Err(Error::invalid(
            "invalid_query",
            "search must be at most 200 bytes",
        ));
    }
    Ok(MotherFilter {
        search: search.map(str::to_string),
        status,
        pool_group_id,
        sort: MotherSort::Newest,
    })
}

/// The order of a mothers list from its query value (`name`, `-name`, `seats_free`, `-seats_free`,
/// `status`, `-status`; empty: newest first).
pub fn list_sort(value: Option<&str>) -> Result<MotherSort> {
    let value = value.unwrap_or_default().trim();
    MotherSort::parse(value).ok_or_else(|| {
        Error::invalid(
            "invalid_query",
            "sort must be one of name, -name, seats_free, -seats_free, status, -status",
        )
    })
}

/// A page of mothers, newest first, each with seat usage, and the total that match.
pub async fn list(
    ctx: PoolCtx<'_>,
    filter: &MotherFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<store::Mother>, i64)> {
    Ok(store::list_with_usage(ctx.pool, filter, limit, offset).await?)
}

/// One mother with seat usage.
pub async fn get(ctx: PoolCtx<'_>, id: i64) -> Result<store::Mother> {
    store::get(ctx.pool, id)
        .await
        .map_err(super::not_found(format!("no mother {id}")))
}

/// One mother with her teams, seats and children.
pub async fn detail(ctx: PoolCtx<'_>, id: i64) -> Result<store::MotherDetail> {
    store::get_detail(ctx.pool, id)
        .await
        .map_err(super::not_found(format!("no mother {id}")))
}

/// A PATCH body; absent fields are left alone, `pool_group_id: null` leaves the group.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMotherRequest {
    pub name: Option<String>,
    /// `active`, `invalid` or `disabled`.
    pub status: Option<String>,
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub pool_group_id: Option<Option<i64>>,
    pub seat_limit: Option<i64>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub async fn patch(ctx: PoolCtx<'_>, id: i64, req: PatchMotherRequest) -> Result<store::Mother> {
    let name = req
        .name
        .as_deref()
        .map(|n| mothers::check_name("name", n))
        .transpose()
        .map_err(field_error)?;
    let status = req
        .status
        .as_deref()
        .map(mothers::check_status)
        .transpose()
        .map_err(field_error)?;
    let seat_limit = req
        .seat_limit
        .map(mothers::check_seat_limit)
        .transpose()
        .map_err(field_error)?;
    if let Some(notes) = &req.notes
        && notes.len() > 4000
    {
        return Err(Error::invalid(
            "invalid_notes",
            "notes must be at most 4000 bytes",
        ));
    }
    check_group(ctx, req.pool_group_id.flatten()).await?;
    let patch = MotherPatch {
        name: name.clone(),
        status: status.map(|s| s.as_str().to_string()),
        notes: req.notes,
        pool_group_id: req.pool_group_id,
        seat_limit,
    };
    match store::update(ctx.pool, id, &patch, ctx.clock.now_ms()).await {
        Ok(m) => Ok(m),
        Err(PatchError::BelowInUse { in_use }) => Err(Error::conflict(format!(
            "seat_limit {} is below the {in_use} seats in use (used or held)",
            seat_limit.unwrap_or_default()
        ))),
        Err(PatchError::Store(StoreError::NotFound)) => {
            Err(Error::not_found(format!("no mother {id}")))
        }
        Err(PatchError::Store(StoreError::Conflict(_))) => Err(Error::conflict(format!(
            "a mother named `{}` already exists",
            name.unwrap_or_default()
        ))),
        Err(PatchError::Store(e)) => Err(e.into()),
    }
}

pub async fn delete(ctx: PoolCtx<'_>, id: i64, force: bool) -> Result<()> {
    match store::delete(ctx.pool, id, force).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(in_use)) => Err(Error::conflict(format!(
            "mother {id} has {in_use} seats in use (used or held); delete with ?force=true to remove her anyway"
        ))),
        Err(StoreError::NotFound) => Err(Error::not_found(format!("no mother {id}"))),
        Err(e) => Err(e.into()),
    }
}

pub async fn rotate_credential(ctx: PoolCtx<'_>, id: i64, credential: &Credential) -> Result<()> {
    mothers::check_credential(credential).map_err(field_error)?;
    let sealed = seal(ctx, credential)?;
    match store::set_credential(ctx.pool, id, &sealed, ctx.clock.now_ms()).await {
        Err(StoreError::NotFound) => Err(Error::not_found(format!("no mother {id}"))),
        other => Ok(other?),
    }
}

/// Opens a mother's credential (for provider calls). A value that does not open is an error
/// naming the key, never a panic.
pub async fn open_credential(ctx: PoolCtx<'_>, id: i64) -> Result<Credential> {
    let sealed = match store::credential_sealed(ctx.pool, id).await {
        Err(StoreError::NotFound) => return Err(Error::not_found(format!("no mother {id}"))),
        other => other?,
    };
    ctx.keyring.open(&sealed).map_err(|e| {
        Error::new(
            super::ErrorKind::Internal,
            "credential_unreadable",
            format!("the credential of mother {id} cannot be opened: {e}"),
        )
    })
}

/// The outcome of one batch row (1-based `row`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BatchRowResult {
    pub row: usize,
    pub name: Option<String>,
    pub ok: bool,
    /// Set when the row was imported.
    pub id: Option<i64>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct BatchReport {
    pub total: usize,
    pub valid: usize,
    pub invalid: usize,
    /// Rows written (0 for validate).
    pub imported: usize,
    pub rows: Vec<BatchRowResult>,
}

/// A row as read: JSON to be checked, or an error found while reading it (CSV shape, bad JSON).
pub type RawRow = Result<serde_json::Value, String>;

/// Checks rows without writing: shape, field rules, group, names repeated in the batch, names
/// already taken. `first_row` numbers the rows (the CLI passes chunks).
pub async fn validate_rows(
    ctx: PoolCtx<'_>,
    rows: Vec<RawRow>,
    first_row: usize,
    seen: &mut HashSet<String>,
) -> Result<Vec<(BatchRowResult, Option<NewMother>)>> {
    let mut out = Vec::with_capacity(rows.len());
    let mut groups_ok: HashSet<i64> = HashSet::new();
    for (i, raw) in rows.into_iter().enumerate() {
        let row = first_row + i;
        let name_hint = raw
            .as_ref()
            .ok()
            .and_then(|v| v.get("name"))
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_string());
        let checked = raw.and_then(|v| {
            serde_json::from_value::<MotherInput>(v)
                .map_err(|e| e.to_string())
                .and_then(|m| check_input(m).map_err(|e| e.to_string()))
        });
        let mut result = BatchRowResult {
            row,
            name: name_hint,
            ok: false,
            id: None,
            errors: Vec::new(),
        };
        let m = match checked {
            Ok(m) => m,
            Err(e) => {
                result.errors.push(e);
                out.push((result, None));
                continue;
            }
        };
        if let Some(g) = m.pool_group_id
            && !groups_ok.contains(&g)
        {
            if pool_groups::exists(ctx.pool, g).await? {
                groups_ok.insert(g);
            } else {
                result
                    .errors
                    .push(format!("pool_group_id: {g} does not name a pool group"));
            }
        }
        if !seen.insert(m.name.clone()) {
            result.errors.push(format!(
                "name: `{}` appears more than once in the batch",
                m.name
            ));
        }
        result.name = Some(m.name.clone());
        out.push((result, Some(m)));
    }
    let names: Vec<String> = out
        .iter()
        .filter_map(|(_, m)| m.as_ref().map(|m| m.name.clone()))
        .collect();
    let taken: HashSet<String> = store::existing_names(ctx.pool, &names)
        .await?
        .into_iter()
        .collect();
    for (result, m) in &mut out {
        if let Some(m) = m
            && taken.contains(&m.name)
        {
            result
                .errors
                .push(format!("name: a mother named `{}` already exists", m.name));
        }
        result.ok = result.errors.is_empty();
    }
    Ok(out
        .into_iter()
        .map(|(r, m)| {
            let keep = r.ok;
            (r, m.filter(|_| keep))
        })
        .collect())
}

/// Validates, and with `import` creates each valid row (each in its own transaction, so one
/// failure does not undo the others).
pub async fn batch(
    ctx: PoolCtx<'_>,
    rows: Vec<RawRow>,
    import: bool,
    first_row: usize,
    seen: &mut HashSet<String>,
) -> Result<BatchReport> {
    let mut report = BatchReport {
        total: rows.len(),
        ..BatchReport::default()
    };
    for (mut result, m) in validate_rows(ctx, rows, first_row, seen).await? {
        if let (true, Some(m)) = (import, &m) {
            match create_checked(ctx, m).await {
                Ok(id) => {
                    result.id = Some(id);
                    report.imported += 1;
                }
                Err(e) => {
                    result.ok = false;
                    result.errors.push(e.message);
                }
            }
        }
        if result.ok {
            report.valid += 1;
        } else {
            report.invalid += 1;
        }
        report.rows.push(result);
    }
    Ok(report)
}

/// Counts by status.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct MotherCounts {
    pub total: i64,
    pub active: i64,
    pub invalid: i64,
    pub disabled: i64,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SeatCounts {
    pub total: i64,
    pub free: i64,
    pub held: i64,
    pub used: i64,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub mothers: MotherCounts,
    pub seats: SeatCounts,
    pub groups: i64,
    pub children: i64,
    /// Redeem codes by status (users database); every status is listed.
    pub codes: std::collections::BTreeMap<String, i64>,
    /// Invites by status (users database); every status is listed.
    pub invites: std::collections::BTreeMap<String, i64>,
}

/// [`stats`] of the pool database with the codes and invites of the users database, read one
/// after the other (never one query across both).
pub async fn admin_stats(app: &crate::app::App) -> Result<Stats> {
    let users = super::invites::counts(app).await?;
    Ok(Stats {
        codes: users.codes,
        invites: users.invites,
        ..stats(app.pool_ctx()).await?
    })
}

pub async fn stats(ctx: PoolCtx<'_>) -> Result<Stats> {
    let mut s = Stats::default();
    for c in store::counts_by_status(ctx.pool).await? {
        s.mothers.total += c.mothers;
        match c.status.as_str() {
            "active" => s.mothers.active += c.mothers,
            "invalid" => s.mothers.invalid += c.mothers,
            _ => s.mothers.disabled += c.mothers,
        }
        s.seats.total += c.seats_total;
        s.seats.used += c.seats_used;
        s.seats.held += c.seats_held;
    }
    s.seats.free = s.seats.total - s.seats.used - s.seats.held;
    (s.groups, s.children) = store::count_groups_and_children(ctx.pool).await?;
    Ok(s)
}

/// Seats of active mothers, and how many can be handed out.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct QuotaLine {
    pub pool_group_id: Option<i64>,
    pub pool_group_name: Option<String>,
    pub seats_total: i64,
    pub seats_used: i64,
    pub seats_held: i64,
    /// Seats not used, minus those held: what can still be handed out.
    pub available: i64,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Quota {
    pub overall: QuotaLine,
    /// One line per group with active mothers; `pool_group_id: null` is mothers in no group.
    pub groups: Vec<QuotaLine>,
}

pub async fn quota(ctx: PoolCtx<'_>) -> Result<Quota> {
    let mut q = Quota::default();
    for g in store::active_seats_by_group(ctx.pool).await? {
        let line = QuotaLine {
            pool_group_id: g.pool_group_id,
            pool_group_name: g.pool_group_name,
            seats_total: g.seats_total,
            seats_used: g.seats_used,
            seats_held: g.seats_held,
            available: (g.seats_total - g.seats_used - g.seats_held).max(0),
        };
        q.overall.seats_total += line.seats_total;
        q.overall.seats_used += line.seats_used;
        q.overall.seats_held += line.seats_held;
        q.overall.available += line.available;
        q.groups.push(line);
    }
    Ok(q)
}

/// What `poolkeeper secrets rotate` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotateReport {
    pub resealed: u64,
    pub already_current: u64,
    /// Mother ids whose credential could not be opened, with why (never the value).
    pub failed: Vec<(i64, String)>,
}

/// Re-seals every credential not under the current key.
pub async fn reseal_all(
    pool: &crate::db::PoolDb,
    keyring: &Keyring,
) -> anyhow::Result<RotateReport> {
    let mut report = RotateReport::default();
    let mut after = 0;
    loop {
        let batch = store::sealed_after(pool, after, 500).await?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        after = *last;
        for (id, sealed) in batch {
            if keyring.is_current(&sealed) {
                report.already_current += 1;
                continue;
            }
            match keyring.open(&sealed) {
                Ok(credential) => {
                    let new = keyring.seal(&credential)?;
                    if store::replace_sealed(pool, id, &sealed, &new).await? {
                        report.resealed += 1;
                    } else {
                        // Changed meanwhile: the new value was sealed with the current key.
                        report.already_current += 1;
                    }
                }
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
    }
    Ok(report)
}
