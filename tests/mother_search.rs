//! Which index answers a mother name search: the trigram index on each backend, never a scan of
//! the mothers table, once the table has enough rows for a scan to cost more; and pages past the
//! middle of the list, which are read from its oldest end.

mod common;

use common::{Backend, TestDbs, each_backend};
use poolkeeper::server;
use poolkeeper::store::{self, bench_fill, mothers::MotherFilter};

/// A plan line that reads the whole mothers table (PostgreSQL or SQLite wording).
fn scans_mothers(line: &str) -> bool {
    let l = line.trim_start_matches([' ', '-', '>']);
    l.starts_with("Seq Scan on mothers ")
        || l == "SCAN mothers"
        || l.starts_with("SCAN mothers ")
        || l.starts_with("SCAN m ")
        || l == "SCAN m"
}

#[tokio::test]
async fn name_search_reads_the_trigram_index_and_deep_pages_read_from_the_end() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let (pool, _users) = server::open_and_migrate(&dbs.config).await.unwrap();
        assert!(store::mothers::name_search_indexed(&pool).await.unwrap());
        let mothers = 20_000;
        // As long as a sealed credential, so rows are as wide as real ones.
        let sealed = format!("v1:0123456789abcdef:{}", "A".repeat(96));
        let mut next = 1;
        while next <= mothers {
            let count = bench_fill::BATCH.min(mothers - next + 1);
            bench_fill::insert_mothers(&pool, next, count, 1, &sealed, 0)
                .await
                .unwrap();
            next += count;
        }
        if let Backend::Postgres { .. } = backend {
            // As autovacuum would after a load of this size.
            let pg = sqlx::PgPool::connect(&dbs.config.pool_database_url())
                .await
                .unwrap();
            sqlx::query("VACUUM ANALYZE mothers")
                .execute(&pg)
                .await
                .unwrap();
            pg.close().await;
        }
        let search = MotherFilter {
            search: Some("-00012".into()),
            ..MotherFilter::default()
        };
        let (page, count) = store::mothers::explain_list_with_usage(&pool, &search, 50, 0)
            .await
            .unwrap();
        let (page, count) = (page.join("\n"), count.join("\n"));
        let index = match backend {
            Backend::Sqlite => "mothers_name_search",
            Backend::Postgres { .. } => "mothers_name_trgm",
        };
        for (what, plan) in [("page", &page), ("count", &count)] {
            assert!(
                plan.contains(index),
                "the {what} query reads {index}:\n{plan}"
            );
            assert!(
                !plan.lines().any(scans_mothers),
                "the {what} query does not scan the mothers table:\n{plan}"
            );
        }
        // And it finds what a scan would: bench-0001200 to bench-0001299.
        let (items, total) = store::mothers::list_with_usage(&pool, &search, 50, 0)
            .await
            .unwrap();
        assert_eq!(total, 100);
        assert_eq!(items.len(), 50);
        assert!(items.iter().all(|m| m.name.contains("-00012")));
        // Pages past the middle are read from the oldest end, and still come newest first.
        let all = MotherFilter::default();
        let names = |items: &[store::mothers::Mother]| -> Vec<String> {
            items.iter().map(|m| m.name.clone()).collect()
        };
        let (items, total) = store::mothers::list_with_usage(&pool, &all, 50, 19_990)
            .await
            .unwrap();
        assert_eq!(total, 20_000);
        let expected: Vec<String> = (1..=10).rev().map(|n| format!("bench-{n:07}")).collect();
        assert_eq!(names(&items), expected);
        let (items, _) = store::mothers::list_with_usage(&pool, &all, 50, 10_001)
            .await
            .unwrap();
        let expected: Vec<String> = (9_950..=9_999)
            .rev()
            .map(|n| format!("bench-{n:07}"))
            .collect();
        assert_eq!(names(&items), expected);
        let (items, _) = store::mothers::list_with_usage(&pool, &search, 50, 90)
            .await
            .unwrap();
        let expected: Vec<String> = (1_200..=1_209)
            .rev()
            .map(|n| format!("bench-{n:07}"))
            .collect();
        assert_eq!(names(&items), expected);
        let (items, _) = store::mothers::list_with_usage(&pool, &all, 50, 20_000)
            .await
            .unwrap();
        assert!(items.is_empty());
        // Wildcard characters are taken literally, through whichever query the store picks.
        let literal = MotherFilter {
            search: Some("bench_00001%".into()),
            ..MotherFilter::default()
        };
        let (_, total) = store::mothers::list_with_usage(&pool, &literal, 50, 0)
            .await
            .unwrap();
        assert_eq!(total, 0);
        pool.database().close().await;
    })
    .await;
}
