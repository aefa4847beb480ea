//! SQL, one module per aggregate. Each function takes the handle of the database its tables live in.
//! Errors from sqlx are mapped to [`StoreError`] here, once.

pub mod admins;
pub mod audit;
pub mod bench_fill;
pub mod credential_accounts;
pub mod desk;
pub mod invitations;
pub mod invites;
pub mod jobs;
pub mod leader;
pub mod lease_desk;
pub mod leases;
pub mod missions;
pub mod mothers;
pub mod names;
pub mod overview;
pub mod pool_groups;
pub mod redeem_codes;
pub mod redeem_steps;
pub mod seat_desk;
pub mod seat_snapshots;
pub mod seats;
pub mod sessions;
pub mod sync_sessions;
pub mod tallies;
pub mod tokens;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(
                db.constraint()
                    .map(str::to_string)
                    .unwrap_or_else(|| db.message().to_string()),
            ),
            // A row still referenced (a group with mothers) or a reference to a row that is gone:
            // the request conflicts with the current state.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Conflict(
                db.constraint()
                    .map(str::to_string)
                    .unwrap_or_else(|| db.message().to_string()),
            ),
            other => StoreError::Other(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The statement that asks `backend` how it would run a query: for the functions that return plans
/// to the tests checking which index a query reads.
pub(crate) fn explain_prefix(backend: crate::db::Backend) -> &'static str {
    match backend {
        crate::db::Backend::Sqlite => "EXPLAIN QUERY PLAN",
        crate::db::Backend::Postgres => "EXPLAIN",
    }
}

/// The lines of a plan [`explain_prefix`] returned: each row's last column (SQLite's detail,
/// PostgreSQL's only one).
pub(crate) fn plan_lines<R: sqlx::Row>(rows: &[R]) -> Result<Vec<String>, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|r| r.try_get::<String, _>(r.len() - 1))
        .collect()
}

/// A LIKE pattern matching `term` anywhere, with `%`, `_` and `\` taken literally (backslash is
/// the escape character: PostgreSQL's default, and SQLite's with `ESCAPE '\'`).
pub(crate) fn contains_pattern(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}
