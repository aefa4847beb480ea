//! Display names by id, for pages that show records naming mothers and groups (jobs, sync
//! records): one query per page for the ids on it, never a whole table.

use std::collections::HashMap;

use sqlx::AssertSqlSafe;

use super::StoreResult;
use crate::db::{PoolDb, on_reader};

/// At most this many ids per look-up (a page's worth).
const MAX_IDS: usize = 500;

async fn names(db: &PoolDb, table: &str, ids: &[i64]) -> StoreResult<HashMap<i64, String>> {
    let mut ids: Vec<i64> = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(MAX_IDS);
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT id, name FROM {table} WHERE id IN ({})",
        placeholders.join(", ")
    );
    let rows: Vec<(i64, String)> = on_reader!(db, |p| {
        let mut q = sqlx::query_as(AssertSqlSafe(sql.clone()));
        for id in &ids {
            q = q.bind(*id);
        }
        q.fetch_all(p).await
    })?;
    Ok(rows.into_iter().collect())
}

/// Names of the mothers among `ids` (a deleted mother is missing).
pub async fn mothers(db: &PoolDb, ids: &[i64]) -> StoreResult<HashMap<i64, String>> {
    names(db, "mothers", ids).await
}

/// Names of the pool groups among `ids`.
pub async fn pool_groups(db: &PoolDb, ids: &[i64]) -> StoreResult<HashMap<i64, String>> {
    names(db, "pool_groups", ids).await
}
