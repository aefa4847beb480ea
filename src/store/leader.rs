//! Leadership for process-wide periodic work (the sync scheduler). On PostgreSQL, the leader is
//! the process holding a session-level advisory lock on a connection it keeps open: when that
//! process dies its connection closes, the lock is released, and another process takes over on
//! its next try. SQLite files serve one process, which is always the leader.

use super::StoreResult;
use crate::db::{Conn, PoolDb};

/// The advisory lock key of the sync scheduler ("pk-sched" in ASCII).
pub const SCHEDULER_LOCK: i64 = 0x706b_2d73_6368_6564;

/// Held while this process leads; dropping it gives leadership up.
pub struct LeaderGuard {
    _conn: Option<sqlx::PgConnection>,
}

/// Tries to become the leader for `key`; `None` when another session holds it.
pub async fn try_lead(db: &PoolDb, key: i64) -> StoreResult<Option<LeaderGuard>> {
    match &db.0.conn {
        Conn::Sqlite { .. } => Ok(Some(LeaderGuard { _conn: None })),
        Conn::Postgres(pg) => {
            let mut conn = pg.acquire().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
            if !got {
                return Ok(None);
            }
            // Take the connection out of the pool: the lock lives as long as the session, and a
            // pooled connection would carry it on to other users after the guard is gone.
            Ok(Some(LeaderGuard {
                _conn: Some(conn.detach()),
            }))
        }
    }
}
