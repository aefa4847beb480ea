//! The mothers list: a page of mothers with usage, filtered by status, group and a name search.
//!
//! This module owns how a search term becomes SQL: callers hand over the raw term; the escaping of
//! LIKE wildcards and the choice of index happen here. SQLite answers a term through its FTS5
//! trigram table `mothers_name_search` (LIKE on it cannot escape, so a term holding `%`, `_` or
//! `\` scans with LIKE instead). PostgreSQL matches with `ILIKE`, which the planner answers from
//! the pg_trgm index `mothers_name_trgm` when the migration could create it; without it the same
//! query scans, and [`name_search_indexed`] lets start-up warn about that.

use super::{COLUMNS, Mother, Row};
use crate::db::{Backend, PoolDb, on_reader};
use crate::store::{StoreResult, contains_pattern, tallies};

/// Which mothers a page lists.
#[derive(Clone, Debug, Default)]
pub struct MotherFilter {
    /// Part of the name, matched case-insensitively; every character is taken literally (`%`
    /// and `_` are no wildcards).
    pub search: Option<String>,
    pub status: Option<String>,
    pub pool_group_id: Option<i64>,
    /// The order of the list; newest first unless asked.
    pub sort: MotherSort,
}

/// The orders a mothers list can be read in; each breaks ties newest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MotherSort {
    #[default]
    Newest,
    Name,
    NameDesc,
    SeatsFree,
    SeatsFreeDesc,
    Status,
    StatusDesc,
}

impl MotherSort {
    /// Every order with its query value: a column, `-` before it for descending.
    pub const ALL: [(MotherSort, &'static str); 7] = [
        (MotherSort::Newest, ""),
        (MotherSort::Name, "name"),
        (MotherSort::NameDesc, "-name"),
        (MotherSort::SeatsFree, "seats_free"),
        (MotherSort::SeatsFreeDesc, "-seats_free"),
        (MotherSort::Status, "status"),
        (MotherSort::StatusDesc, "-status"),
    ];

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(sort, _)| *sort)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(sort, _)| *sort == self)
            .map(|(_, v)| *v)
            .unwrap_or_default()
    }

    /// The ORDER BY terms over columns of `mothers` named with `prefix` (`""` or `"m."`).
    fn order_by(self, prefix: &str) -> String {
        let p = prefix;
        let free = format!("({p}seat_limit - {p}seats_used - {p}seats_held)");
        let term = match self {
            MotherSort::Newest => return format!("{p}id DESC"),
            MotherSort::Name => format!("{p}name ASC"),
            MotherSort::NameDesc => format!("{p}name DESC"),
            MotherSort::SeatsFree => format!("{free} ASC"),
            MotherSort::SeatsFreeDesc => format!("{free} DESC"),
            MotherSort::Status => format!("{p}status ASC"),
            MotherSort::StatusDesc => format!("{p}status DESC"),
        };
        format!("{term}, {p}id DESC")
    }
}

/// The WHERE clause over `mothers` for `filter` (`$1` the name pattern, `$2` the status, `$3` the
/// group) and the pattern to bind as `$1`. `$n IS NULL OR ...` keeps few statements for every
/// filter combination. The name match is case-insensitive on both backends.
fn filter_sql(backend: Backend, filter: &MotherFilter) -> (&'static str, Option<String>) {
    const UNFILTERED: &str = "$1 IS NULL AND $2 IS NULL AND $3 IS NULL";
    const SQLITE_INDEXED: &str = "id IN (SELECT rowid FROM mothers_name_search \
        WHERE mothers_name_search.name LIKE $1) \
        AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR pool_group_id = $3)";
    // LIKE ignores ASCII case on SQLite.
    const SQLITE_SCAN: &str = "($1 IS NULL OR name LIKE $1 ESCAPE '\\') \
        AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR pool_group_id = $3)";
    // No `$1 IS NULL OR` before the ILIKE: it would keep a generic plan off the trigram index.
    const POSTGRES_SEARCH: &str = "name ILIKE $1 \
        AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR pool_group_id = $3)";
    const POSTGRES_NO_SEARCH: &str = "$1::TEXT IS NULL \
        AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR pool_group_id = $3)";
    let term = filter.search.as_deref().filter(|t| !t.is_empty());
    if term.is_none() && filter.status.is_none() && filter.pool_group_id.is_none() {
        return (UNFILTERED, None);
    }
    let sql = match (backend, term) {
        // FTS5's LIKE knows no ESCAPE: a term with a wildcard character in it scans.
        (Backend::Sqlite, Some(t)) if !t.contains(['%', '_', '\\']) => SQLITE_INDEXED,
        (Backend::Sqlite, _) => SQLITE_SCAN,
        (Backend::Postgres, Some(_)) => POSTGRES_SEARCH,
        (Backend::Postgres, None) => POSTGRES_NO_SEARCH,
    };
    (sql, term.map(contains_pattern))
}

/// The page query and the count query of [`list_with_usage`], with the filter's WHERE clause and
/// bind value.
/// With `from_end`, the page query picks its ids from the oldest end (`$5` then counts from there).
fn list_sql(
    db: &PoolDb,
    filter: &MotherFilter,
    from_end: bool,
) -> (String, String, Option<String>) {
    let backend = db.0.backend();
    let (filter_sql, pattern) = filter_sql(backend, filter);
    // Newest first reads its ids from either end of the primary key (see `page_window`); the other
    // orders always read from the start.
    let (inner, outer) = match filter.sort {
        MotherSort::Newest if from_end => ("id ASC".to_string(), "m.id DESC".to_string()),
        sort => (sort.order_by(""), sort.order_by("m.")),
    };
    // PostgreSQL cannot estimate how many names match a pattern, and guesses enough to walk the
    // primary key backwards and test every name until the page is full: for a rare term, nearly
    // the whole table. Collecting the matches first makes it read the trigram index; that costs no
    // more than the count below, which must visit every match anyway.
    let page = if backend == Backend::Postgres && pattern.is_some() {
        format!(
            "hits AS MATERIALIZED (SELECT id, name, status, seat_limit, seats_used, seats_held \
             FROM mothers WHERE {filter_sql}), \
             page AS (SELECT id FROM hits ORDER BY {inner} LIMIT $4 OFFSET $5)"
        )
    } else {
        format!(
            "page AS (SELECT id FROM mothers WHERE {filter_sql} ORDER BY {inner} LIMIT $4 OFFSET $5)"
        )
    };
    let items = format!(
        "WITH {page} SELECT {COLUMNS} FROM page JOIN mothers m ON m.id = page.id \
         LEFT JOIN pool_groups g ON g.id = m.pool_group_id ORDER BY {outer}"
    );
    // Used for a name search only: without one, `store::tallies` knows the count.
    let count = format!("SELECT COUNT(*) FROM mothers WHERE {filter_sql}");
    (items, count, pattern)
}

/// Where a page of `limit` rows at `offset` (newest first) of `total` is read from: `(from_end,
/// limit, offset)`. A page past the middle is read from the oldest end, so the last pages cost
/// what the first ones do instead of skipping every row before them.
fn page_window(total: i64, limit: i64, offset: i64) -> (bool, i64, i64) {
    if offset <= total / 2 {
        return (false, limit, offset);
    }
    let end = (total - offset).max(0); // rows from the oldest end up to the page's last row
    let start = (end - limit).max(0);
    (true, end - start, start)
}

/// One page of mothers with usage, newest first, and how many match. The page's ids are chosen
/// first, on the mothers table alone, so joins and the team count run for the page's rows only.
pub async fn list_with_usage(
    db: &PoolDb,
    filter: &MotherFilter,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<Mother>, i64)> {
    let (_, count_sql, pattern) = list_sql(db, filter, false);
    let total: i64 = if pattern.is_none() {
        // Without a name search the tallies know the count.
        tallies::count_mothers(db, filter.status.as_deref(), filter.pool_group_id).await?
    } else {
        on_reader!(db, |p| sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
            .bind(&pattern)
            .bind(&filter.status)
            .bind(filter.pool_group_id)
            .fetch_one(p)
            .await)?
    };
    let (from_end, limit, offset) = if filter.sort == MotherSort::Newest {
        page_window(total, limit, offset)
    } else {
        (false, limit, offset)
    };
    if limit <= 0 {
        return Ok((Vec::new(), total));
    }
    let (items_sql, _, _) = list_sql(db, filter, from_end);
    let rows: Vec<Row> = on_reader!(db, |p| sqlx::query_as(sqlx::AssertSqlSafe(items_sql))
        .bind(&pattern)
        .bind(&filter.status)
        .bind(filter.pool_group_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

/// How the database runs [`list_with_usage`] for these arguments: the plan of the page query, then
/// that of the count query a name search runs (without one, the count comes from
/// `store::tallies`), as the backend's EXPLAIN prints them (`EXPLAIN QUERY PLAN` details on
/// SQLite), one line each. For benchmarks and tests that check which index a query reads.
pub async fn explain_list_with_usage(
    db: &PoolDb,
    filter: &MotherFilter,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<String>, Vec<String>)> {
    let (items_sql, count_sql, pattern) = list_sql(db, filter, false);
    let explain = crate::store::explain_prefix(db.0.backend());
    let mut plans = Vec::new();
    for (sql, paged) in [(items_sql, true), (count_sql, false)] {
        let sql = format!("{explain} {sql}");
        let lines: Vec<String> = on_reader!(db, |p| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&pattern)
                .bind(&filter.status)
                .bind(filter.pool_group_id);
            if paged {
                q = q.bind(limit).bind(offset);
            }
            crate::store::plan_lines(&q.fetch_all(p).await?)
        })?;
        plans.push(lines);
    }
    let count = plans.pop().unwrap_or_default();
    let items = plans.pop().unwrap_or_default();
    Ok((items, count))
}

/// Whether name search reads an index: always on SQLite (FTS5, since migration 0002); on
/// PostgreSQL when `mothers_name_trgm` exists (migration 0005 creates it when it may create the
/// pg_trgm extension).
pub async fn name_search_indexed(db: &PoolDb) -> StoreResult<bool> {
    Ok(on_reader!(db, |p| sqlx::query_scalar::<_, bool>(
        match db.0.backend() {
            Backend::Sqlite =>
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'mothers_name_search')",
            Backend::Postgres => "SELECT to_regclass('mothers_name_trgm') IS NOT NULL",
        }
    )
    .fetch_one(p)
    .await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_past_the_middle_are_read_from_the_oldest_end() {
        // (total, limit, offset) -> (from_end, limit, offset)
        for (args, expected) in [
            ((100, 10, 0), (false, 10, 0)),
            ((100, 10, 50), (false, 10, 50)),
            ((100, 10, 60), (true, 10, 30)),
            ((100, 10, 90), (true, 10, 0)),
            ((95, 10, 90), (true, 5, 0)),
            ((100, 10, 100), (true, 0, 0)),
            ((100, 10, 500), (true, 0, 0)),
            ((0, 50, 0), (false, 50, 0)),
        ] {
            assert_eq!(page_window(args.0, args.1, args.2), expected, "{args:?}");
        }
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("ab"), "%ab%");
        assert_eq!(contains_pattern("5%_\\"), "%5\\%\\_\\\\%");
    }

    #[test]
    fn sqlite_searches_through_its_trigram_table_unless_the_term_has_a_wildcard() {
        let search = |t: &str| MotherFilter {
            search: Some(t.into()),
            ..MotherFilter::default()
        };
        let (sql, pattern) = filter_sql(Backend::Sqlite, &search("web"));
        assert!(sql.contains("mothers_name_search"), "{sql}");
        assert_eq!(pattern.as_deref(), Some("%web%"));
        let (sql, pattern) = filter_sql(Backend::Sqlite, &search("a_1"));
        assert!(
            !sql.contains("mothers_name_search") && sql.contains("ESCAPE"),
            "{sql}"
        );
        assert_eq!(pattern.as_deref(), Some("%a\\_1%"));
        let (sql, _) = filter_sql(Backend::Postgres, &search("a_1"));
        assert!(sql.contains("ILIKE"), "{sql}");
        let (sql, pattern) = filter_sql(Backend::Postgres, &MotherFilter::default());
        assert!(!sql.contains("LIKE") && pattern.is_none(), "{sql}");
    }
}
