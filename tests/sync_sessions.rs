//! Sync session counters: the counters on a session row always equal a recount of its records,
//! under concurrent record transitions and a cancel racing them.

mod common;

use common::{Backend, TestDbs, each_backend};
use poolkeeper::db::PoolDb;
use poolkeeper::server;
use poolkeeper::store::sync_sessions::{self, NewSession, RecordOutcome};

/// The session's counters and status next to a recount of its records, read by one statement
/// (one snapshot on both backends): `(counters, recount)`, each `[total, completed, failed,
/// cancelled]`.
const COUNTERS_AND_RECOUNT: &str = "SELECT s.total_instances, s.successful, s.failed, s.cancelled, \
    (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = s.session_id), \
    (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = s.session_id AND r.status = 'completed'), \
    (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = s.session_id AND r.status = 'failed'), \
    (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = s.session_id AND r.status = 'cancelled') \
    FROM sync_sessions s WHERE s.session_id = $1";

type Row8 = (i64, i64, i64, i64, i64, i64, i64, i64);

/// A direct connection to the pool database, beside poolkeeper's own.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    async fn open(dbs: &TestDbs) -> Self {
        let url = dbs.config.pool_database_url();
        match dbs.backend {
            Backend::Sqlite => Raw::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap()),
            Backend::Postgres { .. } => Raw::Postgres(sqlx::PgPool::connect(&url).await.unwrap()),
        }
    }

    async fn counters_and_recount(&self, session_id: &str) -> ([i64; 4], [i64; 4]) {
        let r: Row8 = match self {
            Raw::Sqlite(p) => sqlx::query_as(COUNTERS_AND_RECOUNT)
                .bind(session_id)
                .fetch_one(p)
                .await
                .unwrap(),
            Raw::Postgres(p) => sqlx::query_as(COUNTERS_AND_RECOUNT)
                .bind(session_id)
                .fetch_one(p)
                .await
                .unwrap(),
        };
        ([r.0, r.1, r.2, r.3], [r.4, r.5, r.6, r.7])
    }

    async fn assert_agree(&self, session_id: &str) {
        let (counters, recount) = self.counters_and_recount(session_id).await;
        assert_eq!(
            counters, recount,
            "session {session_id}: counters [total, completed, failed, cancelled] vs a recount"
        );
    }
}

fn outcome(status: &'static str) -> RecordOutcome {
    RecordOutcome {
        status,
        ..RecordOutcome::default()
    }
}

/// Runs every record of a session at once: start, then finish (every seventh fails), and every
/// fifth record is finished a second time with the other outcome, as a retried job might.
async fn run_records_concurrently(db: &PoolDb, records: Vec<i64>) {
    let mut tasks = Vec::new();
    for (i, id) in records.into_iter().enumerate() {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            if !sync_sessions::start_record(&db, id, 1).await.unwrap() {
                return; // cancelled with its session
            }
            tokio::task::yield_now().await;
            let (first, second) = if i % 7 == 0 {
                ("failed", "completed")
            } else {
                ("completed", "failed")
            };
            sync_sessions::finish_record(&db, id, &outcome(first), 2)
                .await
                .unwrap();
            if i % 5 == 0 {
                sync_sessions::finish_record(&db, id, &outcome(second), 3)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_counters_equal_a_recount_under_concurrent_transitions() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let (pool, _users) = server::open_and_migrate(&dbs.config).await.unwrap();
        let raw = Raw::open(&dbs).await;
        let new = NewSession {
            sync_type: "manual_batch",
            category: "pool",
            pool_group_id: None,
            created_by: Some("test"),
        };
        let mothers: Vec<i64> = (1..=120).collect();

        // Every record runs and finishes at once; a checker recounts all along.
        let records = sync_sessions::create(&pool, "all", &new, &mothers, 0)
            .await
            .unwrap();
        raw.assert_agree("all").await;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checker = {
            let done = done.clone();
            let raw = Raw::open(&dbs).await;
            tokio::spawn(async move {
                let mut checks = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    raw.assert_agree("all").await;
                    checks += 1;
                }
                checks
            })
        };
        run_records_concurrently(&pool, records.iter().map(|r| r.id).collect()).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(checker.await.unwrap() > 0);
        raw.assert_agree("all").await;
        let all = sync_sessions::get(&pool, "all").await.unwrap().session;
        let failed = (0..120).filter(|i| i % 7 == 0).count() as i64;
        assert_eq!(
            (
                all.total_instances,
                all.successful,
                all.failed,
                all.finished
            ),
            (120, 120 - failed, failed, 120)
        );
        assert_eq!(all.status, "failed");
        assert!(all.completed_at.is_some());
        assert!((all.progress - 1.0).abs() < 1e-9);

        // A cancel races the records: whatever wins, the counters stay a recount.
        let records = sync_sessions::create(&pool, "cut", &new, &mothers, 0)
            .await
            .unwrap();
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        for id in &ids {
            sync_sessions::set_record_job(&pool, *id, &format!("job-{id}"))
                .await
                .unwrap();
        }
        let (first_half, second_half) = ids.split_at(60);
        let run = run_records_concurrently(&pool, first_half.to_vec());
        let cancel = async {
            tokio::task::yield_now().await;
            sync_sessions::cancel(&pool, "cut", 5).await.unwrap()
        };
        let ((), cancelled) = tokio::join!(run, cancel);
        let cancelled = cancelled.expect("the session was still running");
        run_records_concurrently(&pool, second_half.to_vec()).await;
        raw.assert_agree("cut").await;
        let cut = sync_sessions::get(&pool, "cut").await.unwrap().session;
        assert_eq!(cut.status, "cancelled");
        assert!(cut.finished == 120 && cut.total_instances == 120, "{cut:?}");
        let (counters, _) = raw.counters_and_recount("cut").await;
        assert!(
            counters[3] >= 60 && counters[3] as usize == cancelled.len(),
            "the second half never started, so it was cancelled: {counters:?}, {} jobs",
            cancelled.len()
        );

        // A session without records is done at once.
        sync_sessions::create(&pool, "empty", &new, &[], 0)
            .await
            .unwrap();
        raw.assert_agree("empty").await;
        let empty = sync_sessions::get(&pool, "empty").await.unwrap().session;
        assert_eq!(empty.status, "completed");
        pool.database().close().await;
    })
    .await;
}
