//! The two databases: migrations per backend in step, disjoint tables, status, racing writers.

mod common;

use std::collections::BTreeSet;

use common::{TestDbs, each_backend, wait_until};
use poolkeeper::clock::{Clock, SystemClock};
use poolkeeper::db::OpenOptions;
use poolkeeper::{auth, server, store};

fn versions(dir: &str) -> BTreeSet<String> {
    let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .split('_')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn sqlite_and_postgres_migration_folders_list_the_same_versions() {
    for db in ["pool", "users"] {
        let sqlite = versions(&format!("sqlite/{db}"));
        let postgres = versions(&format!("postgres/{db}"));
        assert!(!sqlite.is_empty(), "{db} has migrations");
        assert_eq!(
            sqlite, postgres,
            "{db}: SQLite and PostgreSQL migrations must have the same versions"
        );
    }
}

#[tokio::test]
async fn fresh_databases_are_behind_until_migrated_and_migrating_twice_is_harmless() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let (pool, users) = server::open_databases(&dbs.config, true).await.unwrap();
        for db in [pool.database(), users.database()] {
            let before = db.migration_status().await.unwrap();
            assert_eq!(before.version, 0);
            assert!(before.pending > 0, "a fresh database is behind");
            assert!(!db.state().await.ok);
            db.migrate().await.unwrap();
            db.migrate().await.unwrap();
            let after = db.migration_status().await.unwrap();
            assert_eq!((after.pending, after.version), (0, after.latest));
            assert!(db.state().await.ok);
        }
    })
    .await;
}

#[tokio::test]
async fn pool_and_users_table_sets_are_disjoint() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let (pool, users) = server::open_and_migrate(&dbs.config).await.unwrap();
        let pool_tables: BTreeSet<String> = pool
            .database()
            .table_names()
            .await
            .unwrap()
            .into_iter()
            .collect();
        let users_tables: BTreeSet<String> = users
            .database()
            .table_names()
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert!(
            users_tables.contains("admin_users") && users_tables.contains("api_tokens"),
            "{users_tables:?}"
        );
        assert!(!pool_tables.is_empty());
        let shared: Vec<_> = pool_tables.intersection(&users_tables).collect();
        assert!(shared.is_empty(), "tables in both databases: {shared:?}");
    })
    .await;
}

#[tokio::test]
async fn racing_first_admin_creation_has_exactly_one_winner() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let (_, users) = server::open_and_migrate(&dbs.config).await.unwrap();
        let hash = auth::hash_password("first-admin-pass".into())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (users, hash) = (users.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                store::admins::create_first(&users, "admin", &hash, SystemClock.now_ms())
                    .await
                    .unwrap()
                    .is_some()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
        assert_eq!(store::admins::count(&users).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_queue_instead_of_failing() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let (_, users) = server::open_and_migrate(&dbs.config).await.unwrap();
        // A second handle is a second pool of connections, like a second process.
        let opts = OpenOptions {
            create: false,
            max_connections: 4,
        };
        let other = poolkeeper::db::UsersDb::open(&dbs.config.users_database_url(), &opts)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let db = if i % 2 == 0 {
                users.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                store::tokens::create(
                    &db,
                    &format!("t{i}"),
                    "worker",
                    &format!("hash{i}"),
                    SystemClock.now_ms(),
                )
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("every write succeeds");
        }
        assert_eq!(store::tokens::list(&users).await.unwrap().len(), 50);
    })
    .await;
}

#[tokio::test]
async fn password_change_ends_sessions_atomically() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let (_, users) = server::open_and_migrate(&dbs.config).await.unwrap();
        let now = SystemClock.now_ms();
        let admin = store::admins::create(&users, "ops", "hash-1", "operator", now)
            .await
            .unwrap();
        store::sessions::create(&users, "session-hash", admin.id, "csrf", now, now + 60_000)
            .await
            .unwrap();
        assert!(
            store::sessions::find_live(&users, "session-hash", now)
                .await
                .unwrap()
                .is_some()
        );
        store::admins::set_password(&users, "ops", "hash-2", now)
            .await
            .unwrap();
        assert!(
            store::sessions::find_live(&users, "session-hash", now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            store::admins::set_password(&users, "nobody", "hash", now).await,
            Err(store::StoreError::NotFound)
        ));
        assert!(matches!(
            store::admins::create(&users, "ops", "h", "admin", now).await,
            Err(store::StoreError::Conflict(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn sqlite_write_ahead_log_is_copied_back_while_the_writer_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    let users = poolkeeper::db::UsersDb::open(
        &format!("sqlite://{}", path.display()),
        &OpenOptions::default(),
    )
    .await
    .unwrap();
    users.database().migrate().await.unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    // About 2 MiB of rows, written to the log by the single writer (whose automatic checkpoint is
    // off): only the background checkpointer can bring them into the database file.
    let batch: Vec<_> = (0..5_000)
        .map(|i| {
            store::jobs::NewJob::new(
                "test.wal",
                serde_json::json!({ "n": i, "pad": "x".repeat(300) }),
            )
        })
        .collect();
    poolkeeper::jobs::enqueue_many(&users, &batch, 3, SystemClock.now_ms())
        .await
        .unwrap();
    let what =
        format!("the database file ({before} bytes) to grow by 1 MB: the log checkpointed into it");
    wait_until(&what, std::time::Duration::from_secs(10), || async {
        std::fs::metadata(&path).unwrap().len() > before + 1_000_000
    })
    .await;
    users.database().close().await;
}
