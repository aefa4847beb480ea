//! Actions on many mothers at once (the Mothers page's checked rows): sync, move to a group,
//! disable, delete. Each mother goes through the same service function as a single action, on its
//! own, so one refusal does not stop the others; the report says which were done and why the
//! others were not. Only the named mothers are touched.

use super::{PatchMotherRequest, delete, get, patch};
use crate::app::App;
use crate::service::{Error, Result, pool_sync};

/// Mothers one bulk action may name.
pub const MAX_BULK: usize = 500;

/// What a bulk action does to each mother.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    /// Queue a sync (a mother must be in a pool group).
    Sync,
    /// Put her in the group, or in none.
    Move(Option<i64>),
    Disable,
    /// Delete her (refused while seats are used or held).
    Delete,
}

impl BulkAction {
    /// From the form's `action` and `group` fields.
    pub fn parse(action: &str, group: Option<&str>) -> Result<Self> {
        match action {
            "sync" => Ok(Self::Sync),
            "disable" => Ok(Self::Disable),
            "delete" => Ok(Self::Delete),
            "move" => match group.map(str::trim).unwrap_or_default() {
                "" | "none" => Ok(Self::Move(None)),
                g => g.parse().map(|g| Self::Move(Some(g))).map_err(|_| {
                    Error::invalid("invalid_pool_group", "group must be a pool group id")
                }),
            },
            _ => Err(Error::invalid(
                "invalid_action",
                "action must be sync, move, disable or delete",
            )),
        }
    }

    /// What the action does, for a confirmation question and the outcome message.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Move(_) => "move",
            Self::Disable => "disable",
            Self::Delete => "delete",
        }
    }
}

/// What a bulk action did.
#[derive(Clone, Debug, Default)]
pub struct BulkReport {
    /// Mothers the action was done to.
    pub done: Vec<i64>,
    /// Mothers it was not done to, and why.
    pub refused: Vec<(i64, String)>,
}

/// Checks the list of mothers a bulk action names: 1-500, no repeats kept.
pub fn check_ids(mut ids: Vec<i64>) -> Result<Vec<i64>> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(Error::invalid("no_mothers", "check at least one mother"));
    }
    if ids.len() > MAX_BULK {
        return Err(Error::invalid(
            "too_many_mothers",
            format!("at most {MAX_BULK} mothers at once"),
        ));
    }
    Ok(ids)
}

/// Does `action` to each mother of `ids` in turn.
pub async fn run(app: &App, ids: &[i64], action: BulkAction, by: &str) -> Result<BulkReport> {
    let ctx = app.pool_ctx();
    let mut report = BulkReport::default();
    for &id in ids {
        let outcome = match action {
            BulkAction::Sync => match get(ctx, id).await {
                Ok(m) => match m.pool_group_id {
                    Some(group) => pool_sync::sync_mother(app, group, id, by).await.map(drop),
                    None => Err(Error::invalid(
                        "no_pool_group",
                        format!("{} is in no pool group", m.name),
                    )),
                },
                Err(e) => Err(e),
            },
            BulkAction::Move(group) => patch(
                ctx,
                id,
                PatchMotherRequest {
                    pool_group_id: Some(group),
                    ..PatchMotherRequest::default()
                },
            )
            .await
            .map(drop),
            BulkAction::Disable => patch(
                ctx,
                id,
                PatchMotherRequest {
                    status: Some("disabled".into()),
                    ..PatchMotherRequest::default()
                },
            )
            .await
            .map(drop),
            BulkAction::Delete => delete(ctx, id, false).await,
        };
        match outcome {
            Ok(()) => report.done.push(id),
            // A move to a group that does not exist fails for every mother alike.
            Err(e) if e.code == "invalid_pool_group" => return Err(e),
            Err(e) if e.kind == crate::service::ErrorKind::Internal => return Err(e),
            Err(e) => report.refused.push((id, e.message)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_from_the_form() {
        assert_eq!(BulkAction::parse("sync", None).unwrap(), BulkAction::Sync);
        assert_eq!(
            BulkAction::parse("move", Some("7")).unwrap(),
            BulkAction::Move(Some(7))
        );
        assert_eq!(
            BulkAction::parse("move", Some("")).unwrap(),
            BulkAction::Move(None)
        );
        assert!(BulkAction::parse("move", Some("x")).is_err());
        assert!(BulkAction::parse("explode", None).is_err());
    }

    #[test]
    fn ids_are_deduplicated_and_bounded() {
        assert_eq!(check_ids(vec![3, 1, 3]).unwrap(), [1, 3]);
        assert!(check_ids(vec![]).is_err());
        assert!(check_ids((0..=500).collect()).is_err());
    }
}
