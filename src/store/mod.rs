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
