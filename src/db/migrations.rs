//! Embedded migrations: one folder per backend and database, with the same versions in each.

use sqlx::migrate::Migrator;

use super::{Conn, Database, DbName};

static SQLITE_POOL: Migrator = sqlx::migrate!("migrations/sqlite/pool");
static SQLITE_USERS: Migrator = sqlx::migrate!("migrations/sqlite/users");
static POSTGRES_POOL: Migrator = sqlx::migrate!("migrations/postgres/pool");
static POSTGRES_USERS: Migrator = sqlx::migrate!("migrations/postgres/users");

/// Where a database stands against the migrations built into this binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Highest applied version, 0 when none is.
    pub version: i64,
    /// Migrations known to this binary and not yet applied.
    pub pending: usize,
    /// Highest version this binary knows.
    pub latest: i64,
}

fn migrator(db: &Database) -> &'static Migrator {
    match (&db.conn, db.name) {
        (Conn::Sqlite { .. }, DbName::Pool) => &SQLITE_POOL,
        (Conn::Sqlite { .. }, DbName::Users) => &SQLITE_USERS,
        (Conn::Postgres(_), DbName::Pool) => &POSTGRES_POOL,
        (Conn::Postgres(_), DbName::Users) => &POSTGRES_USERS,
    }
}

/// The migration versions this binary knows for a database on a backend, ascending.
pub fn known_versions(backend: super::Backend, name: DbName) -> Vec<i64> {
    let migrator: &Migrator = match (backend, name) {
        (super::Backend::Sqlite, DbName::Pool) => &SQLITE_POOL,
        (super::Backend::Sqlite, DbName::Users) => &SQLITE_USERS,
        (super::Backend::Postgres, DbName::Pool) => &POSTGRES_POOL,
        (super::Backend::Postgres, DbName::Users) => &POSTGRES_USERS,
    };
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

pub(super) async fn run(db: &Database) -> anyhow::Result<()> {
    let migrator = migrator(db);
    let result = match &db.conn {
        Conn::Sqlite { write, .. } => migrator.run(&mut *write.lock().await?).await,
        Conn::Postgres(pg) => migrator.run(pg).await,
    };
    result.map_err(|e| anyhow::anyhow!("migrating the {} database: {e}", db.name.as_str()))
}

pub(super) async fn status(db: &Database) -> anyhow::Result<MigrationStatus> {
    let migrator = migrator(db);
    let known: Vec<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    let applied: Vec<i64> = match &db.conn {
        Conn::Sqlite { read, .. } => {
            let exists: Option<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_optional(read)
            .await?;
            if exists.is_none() {
                Vec::new()
            } else {
                sqlx::query_scalar(
                    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(read)
                .await?
            }
        }
        Conn::Postgres(pg) => {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::TEXT")
                    .fetch_one(pg)
                    .await?;
            if exists.is_none() {
                Vec::new()
            } else {
                sqlx::query_scalar(
                    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(pg)
                .await?
            }
        }
    };
    Ok(MigrationStatus {
        version: applied.iter().copied().max().unwrap_or(0),
        pending: known.iter().filter(|v| !applied.contains(v)).count(),
        latest: known.iter().copied().max().unwrap_or(0),
    })
}
