//! Names of the mothers and pool groups a page's records point at by id (jobs, sync sessions and
//! their records): one look-up per kind for the ids on the page. A deleted object shows as `#id`.

use std::collections::HashMap;

use super::Result;
use crate::db::PoolDb;
use crate::store::names as store;

#[derive(Clone, Debug, Default)]
pub struct Names {
    pub mothers: HashMap<i64, String>,
    pub groups: HashMap<i64, String>,
}

impl Names {
    pub fn mother(&self, id: i64) -> String {
        self.mothers
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }

    pub fn group(&self, id: i64) -> String {
        self.groups
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }
}

/// The names of `mothers` and `groups` (each list a page's worth of ids).
pub async fn of(pool: &PoolDb, mothers: &[i64], groups: &[i64]) -> Result<Names> {
    let (mothers, groups) = tokio::try_join!(
        store::mothers(pool, mothers),
        store::pool_groups(pool, groups)
    )?;
    Ok(Names { mothers, groups })
}
