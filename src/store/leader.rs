//! Leadership for process-wide periodic work (the sync scheduler). On PostgreSQL, the leader is
//! the process holding a session-level advisory lock on a connection it keeps open: when that
//! process dies its connection closes, the lock is released, and another process takes over on
//! its next try. The leader checks before each round of work that its connection is alive and still
//! holds the lock ([`LeaderGuard::still_leads`]): a connection cut by the server or the network
//! loses the lock without the process noticing otherwise. SQLite files serve one process, which is
//! always the leader.

use super::StoreResult;
use crate::db::{Conn, PoolDb};

/// The advisory lock key of the sync scheduler ("pk-sched" in ASCII).
pub const SCHEDULER_LOCK: i64 = 0x706b_2d73_6368_6564;
/// The advisory lock key of the backup scheduler ("pk-backu" in ASCII).
pub const BACKUP_LOCK: i64 = 0x706b_2d62_6163_6b75;

/// Held while this process leads; dropping it gives leadership up.
pub struct LeaderGuard {
    conn: Option<sqlx::PgConnection>,
}

/// How long the liveness check may take before the lead is given up.
const LIVENESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl LeaderGuard {
    /// True while the lock's session is alive and still holds an advisory lock. False means the
    /// lead is lost (another process may hold it now): drop the guard and try to lead again.
    pub async fn still_leads(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() \
             AND locktype = 'advisory' AND granted)",
        )
        .fetch_one(conn);
        match tokio::time::timeout(LIVENESS_TIMEOUT, check).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the scheduler lock's connection is gone");
                false
            }
            Err(_) => {
                tracing::warn!("the scheduler lock's connection did not answer");
                false
            }
        }
    }
}

/// Tries to become the leader for `key`; `None` when another session holds it.
pub async fn try_lead(db: &PoolDb, key: i64) -> StoreResult<Option<LeaderGuard>> {
    match &db.0.conn {
        Conn::Sqlite { .. } => Ok(Some(LeaderGuard { conn: None })),
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
                conn: Some(conn.detach()),
            }))
        }
    }
}
