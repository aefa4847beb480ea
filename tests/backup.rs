//! Backup and restore: an archive taken while a sync runs and leases race restores into a new
//! data directory that serves the same data with every credential opening; damaged, newer-schema
//! and wrong-key archives are refused or reported; PostgreSQL refuses; scheduled backups prune.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use common::{Backend, TestApp, wait_until};
use poolkeeper::auth::Scope;
use poolkeeper::backup;
use poolkeeper::clock;
use poolkeeper::config::{Config, Secret};
use poolkeeper::crypto::{Credential, Keyring};
use poolkeeper::providers::sim::SimOrg;
use poolkeeper::store;
use reqwest::Method;
use serde_json::{Value, json};

const ACCOUNTS: usize = 12;
const MOTHERS: usize = 3;

/// A running SQLite instance filled with mothers (synced), a redeemed and unused codes, and
/// credential accounts.
struct Filled {
    t: TestApp,
    admin: String,
    worker: String,
    group: i64,
}

impl Filled {
    async fn spawn() -> Self {
        let t = TestApp::spawn_with(
            &Backend::Sqlite,
            |c| {
                c.child_email_domain = Some("kids.test".into());
                c.jobs.poll_interval_ms = 20;
                c.leases.cooldown_seconds = 0;
            },
            clock::system(),
        )
        .await;
        let admin = t.token("backup-admin", Scope::Admin).await;
        let worker = t.token("backup-worker", Scope::Worker).await;
        let (status, body) = t
            .send_json(
                &admin,
                Method::POST,
                "/api/admin/pool-groups",
                Some(json!({"name": "main"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let group = body["id"].as_i64().unwrap();
        let f = Self {
            t,
            admin,
            worker,
            group,
        };
        for i in 0..MOTHERS {
            let name = format!("org{i}");
            let credential = format!("cred-{name}");
            f.t.app()
                .providers
                .sim
                .put_org(
                    &Credential::new(&credential),
                    SimOrg::new(&name, &format!("owner@{name}.test"), 4),
                )
                .unwrap();
            let (status, body) = f
                .admin(
                    Method::POST,
                    "/api/admin/mothers",
                    Some(
                        json!({"name": name, "provider": "sim", "credential": credential,
                        "seat_limit": 3, "pool_group_id": group}),
                    ),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            let id = body["id"].as_i64().unwrap();
            f.sync_mother(id).await;
        }
        for i in 0..ACCOUNTS {
            let (status, body) = f
                .admin(
                    Method::POST,
                    "/api/admin/accounts",
                    Some(json!({"login": format!("user{i}@example.org"),
                        "password": format!("secret-{i}")})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
        let (status, body) = f
            .admin(Method::POST, "/api/admin/codes", Some(json!({"count": 3})))
            .await;
        assert_eq!(status, 201, "{body}");
        let code = body["codes"][0].as_str().unwrap().to_string();
        let res =
            f.t.client
                .post(f.t.url("/api/redeem"))
                .json(&json!({"code": code, "email": "someone@example.org"}))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
        f
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.t.send_json(&self.admin, method, path, body).await
    }

    async fn sync_mother(&self, id: i64) {
        let (status, body) = self
            .admin(
                Method::POST,
                &format!("/api/admin/pool-groups/{}/sync/mother/{id}", self.group),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let job = self
            .t
            .job_ended(body["job_id"].as_str().unwrap(), Duration::from_secs(15))
            .await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
    }
}

/// What must survive a restore, read through the API of an instance: mothers, their seats,
/// codes and credential accounts, without fields that a sync or a lease changes.
async fn served_state(t: &TestApp, token: &str) -> Value {
    let get = |path: String| async move {
        let (status, body) = t.send_json(token, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let pick = |item: &Value, keys: &[&str]| -> Value {
        let mut out = serde_json::Map::new();
        for k in keys {
            assert!(item.get(*k).is_some(), "{k} in {item}");
            out.insert((*k).to_string(), item[*k].clone());
        }
        Value::Object(out)
    };
    let mut mothers = Vec::new();
    for m in get("/api/admin/mothers?page_size=100".into()).await["items"]
        .as_array()
        .unwrap()
    {
        let id = m["id"].as_i64().unwrap();
        let detail = get(format!("/api/admin/mothers/{id}")).await;
        let seats: Vec<Value> = detail["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| pick(s, &["id", "seat_no", "status", "holder_email"]))
            .collect();
        let mut m = pick(m, &["id", "name", "seat_limit", "status", "pool_group_id"]);
        m["seats"] = Value::Array(seats);
        mothers.push(m);
    }
    let codes: Vec<Value> = get("/api/admin/codes?page_size=100".into()).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| pick(c, &["id", "prefix", "status", "used_by_email", "mother_id"]))
        .collect();
    let accounts: Vec<Value> = get("/api/admin/accounts?page_size=100".into()).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| pick(a, &["id", "pool", "login", "is_active"]))
        .collect();
    json!({"mothers": mothers, "codes": codes, "accounts": accounts})
}

fn restore_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

fn copy_key(from: &Config, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(
        from.data_dir.join(poolkeeper::crypto::GENERATED_KEY_FILE),
        to.join(poolkeeper::crypto::GENERATED_KEY_FILE),
    )
    .unwrap();
}

#[tokio::test]
async fn backup_during_sync_and_lease_race_restores_the_same_data_with_every_credential_opening() {
    let f = Filled::spawn().await;
    let before = served_state(&f.t, &f.admin).await;
    assert_eq!(before["mothers"].as_array().unwrap().len(), MOTHERS);
    assert_eq!(before["accounts"].as_array().unwrap().len(), ACCOUNTS);

    // A sync of every mother (each provider call slowed down) and eight workers leasing and
    // releasing, all running while the archive is written.
    for i in 0..MOTHERS {
        f.t.app()
            .providers
            .sim
            .update_org(&Credential::new(format!("cred-org{i}")), |o| {
                o.faults.latency_ms = 400
            })
            .unwrap();
    }
    let (status, body) = f
        .admin(
            Method::POST,
            &format!("/api/admin/pool-groups/{}/sync/all", f.group),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let stop = Arc::new(AtomicBool::new(false));
    let leases = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let client = f.t.client.clone();
        let url = f.t.url("/api/pool/leases");
        let token = f.worker.clone();
        let (stop, leases) = (stop.clone(), leases.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"worker": format!("w{w}")}))
                    .send()
                    .await
                    .unwrap();
                if res.status() != 201 {
                    assert_eq!(res.status(), 503, "only a lack of free accounts refuses");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let body: Value = res.json().await.unwrap();
                let id = body["lease_id"].as_str().unwrap();
                let res = client
                    .post(format!("{url}/{id}/release"))
                    .bearer_auth(&token)
                    .json(&json!({"result": "success"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                leases.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    wait_until("leases to race", Duration::from_secs(10), || async {
        leases.load(Ordering::SeqCst) >= 10
    })
    .await;
    let app = f.t.app();
    let running = store::jobs::JobFilter {
        status: Some("running".into()),
        job_type: None,
    };
    wait_until("a sync job to run", Duration::from_secs(10), || async {
        store::jobs::list(&app.users, &running, 10, 0)
            .await
            .unwrap()
            .1
            > 0
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("during.zip");
    let report = backup::create_archive(&app.pool, &app.users, &archive, app.clock.now_ms())
        .await
        .expect("backup while busy");
    let leased_during = leases.load(Ordering::SeqCst);
    assert!(
        store::jobs::list(&app.users, &running, 10, 0)
            .await
            .unwrap()
            .1
            > 0,
        "the sync still ran when the backup was done"
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(leased_during >= 10);
    for job in store::jobs::list(&app.users, &Default::default(), 500, 0)
        .await
        .unwrap()
        .0
    {
        f.t.job_ended(&job.id, Duration::from_secs(15)).await;
    }

    // The archive: private, with a manifest naming both databases, their migrations and the one key.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        report.size_bytes,
        std::fs::metadata(&archive).unwrap().len()
    );
    let m = &report.manifest;
    assert_eq!(m.poolkeeper_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.key_ids, vec![app.keyring.current_key_id().to_string()]);
    for (db, name) in m.databases.iter().zip(["pool", "users"]) {
        assert_eq!(db.name, name);
        assert_eq!(db.sha256.len(), 64);
        let known = poolkeeper::db::known_versions(
            poolkeeper::db::Backend::Sqlite,
            if name == "pool" {
                poolkeeper::db::DbName::Pool
            } else {
                poolkeeper::db::DbName::Users
            },
        );
        assert_eq!(db.migrations, known);
    }
    // The secret key itself is nowhere in the archive.
    let key_text = std::fs::read_to_string(f.t.dbs.config.data_dir.join("secret.key")).unwrap();
    let key_line = key_text.lines().find(|l| !l.starts_with('#')).unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    assert!(
        !bytes
            .windows(key_line.len())
            .any(|w| w == key_line.as_bytes())
    );

    // Restore into a new data directory holding only the key file, and serve it.
    let restored_dir = out.path().join("restored");
    copy_key(&f.t.dbs.config, &restored_dir);
    let keyring = Keyring::from_config(&restore_config(&restored_dir)).unwrap();
    let restored =
        backup::restore_archive(&archive, &restore_config(&restored_dir), Some(&keyring))
            .await
            .expect("restore");
    assert_eq!(
        restored.sealed_checked,
        (MOTHERS + ACCOUNTS) as u64,
        "every mother credential and account password checked"
    );
    assert!(restored.unopenable.is_empty(), "{:?}", restored.unopenable);
    let after_source = served_state(&f.t, &f.admin).await;
    f.t.stop().await;

    let dir = restored_dir.clone();
    let r = TestApp::spawn_with(&Backend::Sqlite, move |c| c.data_dir = dir, clock::system()).await;
    // The old admin token is in the restored users database.
    let served = served_state(&r, &f.admin).await;
    assert_eq!(
        served, before,
        "restored instance serves what the source had"
    );
    assert_eq!(served, after_source);
    let rapp = r.app();
    for m in served["mothers"].as_array().unwrap() {
        let sealed = store::mothers::credential_sealed(&rapp.pool, m["id"].as_i64().unwrap())
            .await
            .unwrap();
        let name = m["name"].as_str().unwrap();
        assert_eq!(
            rapp.keyring.open(&sealed).unwrap().expose(),
            format!("cred-{name}")
        );
    }
    for a in served["accounts"].as_array().unwrap() {
        let sealed =
            store::credential_accounts::sealed_password(&rapp.pool, a["id"].as_i64().unwrap())
                .await
                .unwrap();
        let login = a["login"].as_str().unwrap();
        let i = login.trim_start_matches("user").split('@').next().unwrap();
        assert_eq!(
            rapp.keyring.open(&sealed).unwrap().expose(),
            format!("secret-{i}")
        );
    }
    // And the restored instance leases: its password is the account's.
    let (status, body) = r
        .send_json(
            &f.worker,
            Method::POST,
            "/api/pool/leases",
            Some(json!({"worker": "after-restore", "ttl_seconds": 60})),
        )
        .await;
    let (status, body) = if status == 201 {
        (status, body)
    } else {
        // Leases open at backup time are still running in the copy; wait for their expiry.
        wait_until(
            "a lease on the restored instance",
            Duration::from_secs(20),
            || async {
                let (s, b) = r
                    .send_json(
                        &f.worker,
                        Method::POST,
                        "/api/pool/leases",
                        Some(json!({"worker": "after-restore"})),
                    )
                    .await;
                (s == 201).then_some((s, b))
            },
        )
        .await
    };
    assert_eq!(status, 201, "{body}");
    let login = body["account"]["login"].as_str().unwrap();
    let i = login.trim_start_matches("user").split('@').next().unwrap();
    assert_eq!(body["account"]["password"], format!("secret-{i}"));
    r.stop().await;
}

/// A small archive of a fresh instance with one mother and one account, and its source config.
async fn small_archive(out: &Path) -> (PathBuf, Config) {
    let t = TestApp::spawn(&Backend::Sqlite).await;
    let admin = t.token("a", Scope::Admin).await;
    let (status, body) = t
        .send_json(
            &admin,
            Method::POST,
            "/api/admin/mothers",
            Some(
                json!({"name": "solo", "provider": "sim", "credential": "cred-solo",
                "seat_limit": 1}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = t
        .send_json(
            &admin,
            Method::POST,
            "/api/admin/accounts",
            Some(json!({"login": "one@example.org", "password": "pw-one"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Through the command line, beside the running service.
    let archive = out.join("small.zip");
    let config = t.dbs.config.clone();
    let cli = poolkeeper::cli::Cli::parse_from([
        "poolkeeper",
        "--data-dir",
        config.data_dir.to_str().unwrap(),
        "backup",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(poolkeeper::cli::run(cli).await.unwrap(), 0);
    // It never overwrites an archive.
    let cli = poolkeeper::cli::Cli::parse_from([
        "poolkeeper",
        "--data-dir",
        config.data_dir.to_str().unwrap(),
        "backup",
        archive.to_str().unwrap(),
    ]);
    let err = poolkeeper::cli::run(cli).await.unwrap_err().to_string();
    assert!(err.contains("never overwrites"), "{err}");
    // Keep the key file: the source directory goes with the TestApp.
    let keep = out.join("source-key");
    copy_key(&config, &keep);
    t.stop().await;
    (
        archive,
        Config {
            data_dir: keep,
            ..Config::default()
        },
    )
}

/// Rewrites an archive, changing `manifest.json` with `edit_manifest` and `pool.db` with `edit_pool`.
fn rewrite(
    from: &Path,
    to: &Path,
    edit_manifest: impl Fn(&mut Value),
    edit_pool: impl Fn(&mut Vec<u8>),
) {
    let mut zin = zip::ZipArchive::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    for i in 0..zin.len() {
        let mut entry = zin.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if name == backup::MANIFEST_FILE {
            let mut m: Value = serde_json::from_slice(&data).unwrap();
            edit_manifest(&mut m);
            data = serde_json::to_vec(&m).unwrap();
        } else if name == "pool.db" {
            edit_pool(&mut data);
        }
        zout.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zout.write_all(&data).unwrap();
    }
    zout.finish().unwrap();
}

#[tokio::test]
async fn a_tampered_or_newer_archive_is_refused_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let (archive, source) = small_archive(out.path()).await;
    let keyring = Keyring::from_config(&source).unwrap();

    let tampered = out.path().join("tampered.zip");
    rewrite(
        &archive,
        &tampered,
        |_| {},
        |db| {
            let last = db.len() - 1;
            db[last] ^= 0xff;
        },
    );
    let dir = out.path().join("t1");
    let err = backup::restore_archive(&tampered, &restore_config(&dir), Some(&keyring))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pool.db does not match its checksum"), "{err}");
    assert!(!dir.join("pool.db").exists() && !dir.join("users.db").exists());

    let newer = out.path().join("newer.zip");
    rewrite(
        &archive,
        &newer,
        |m| {
            m["databases"][1]["migrations"]
                .as_array_mut()
                .unwrap()
                .push(json!(9999));
        },
        |_| {},
    );
    let dir = out.path().join("t2");
    let err = backup::restore_archive(&newer, &restore_config(&dir), Some(&keyring))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("users database has migration(s) [9999]") && err.contains("newer version"),
        "{err}"
    );
    assert!(!dir.join("pool.db").exists() && !dir.join("users.db").exists());

    // An older archive (a migration missing) is migrated on restore.
    let older = out.path().join("older.zip");
    rewrite(
        &archive,
        &older,
        |m| {
            m["databases"][0]["migrations"]
                .as_array_mut()
                .unwrap()
                .pop();
        },
        |_| {},
    );
    let dir = out.path().join("t3");
    let report = backup::restore_archive(&older, &restore_config(&dir), Some(&keyring))
        .await
        .unwrap();
    assert!(report.unopenable.is_empty());
    let latest = *poolkeeper::db::known_versions(
        poolkeeper::db::Backend::Sqlite,
        poolkeeper::db::DbName::Pool,
    )
    .last()
    .unwrap();
    assert!(report.versions.contains(&("pool".to_string(), latest)));

    // A non-empty data directory is refused; an existing archive is never overwritten.
    let err = backup::restore_archive(&archive, &restore_config(&dir), Some(&keyring))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not empty"), "{err}");
}

#[tokio::test]
async fn a_wrong_keyring_is_reported_per_credential() {
    let out = tempfile::tempdir().unwrap();
    let (archive, _) = small_archive(out.path()).await;
    let dir = out.path().join("wrong-key");
    let config = Config {
        secret_key: Some(Secret::new(Keyring::generate_key_text())),
        ..restore_config(&dir)
    };
    let wrong = Keyring::from_config(&config).unwrap();
    let report = backup::restore_archive(&archive, &config, Some(&wrong))
        .await
        .unwrap();
    assert_eq!(report.sealed_checked, 2);
    let mut seen: Vec<(String, String)> = report
        .unopenable
        .iter()
        .map(|u| (u.kind.clone(), u.name.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "credential account".to_string(),
                "default/one@example.org".to_string()
            ),
            ("mother".to_string(), "solo".to_string()),
        ]
    );
    for u in &report.unopenable {
        assert!(u.reason.contains("not in the keyring"), "{}", u.reason);
        assert!(!u.reason.contains("pw-one") && !u.reason.contains("cred-solo"));
        assert!(report.manifest.key_ids.iter().any(|k| u.reason.contains(k)));
    }

    // Through the CLI: exit code 1 and no key generated when none is configured.
    let dir = out.path().join("no-key");
    let cli = poolkeeper::cli::Cli::parse_from([
        "poolkeeper",
        "--data-dir",
        dir.to_str().unwrap(),
        "restore",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(poolkeeper::cli::run(cli).await.unwrap(), 1);
    assert!(!dir.join(poolkeeper::crypto::GENERATED_KEY_FILE).exists());
}

#[tokio::test]
async fn backup_on_postgresql_refuses_and_points_to_pg_dump() {
    // The CLI refuses from the URL alone, before connecting.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("pg.zip");
    let cli = poolkeeper::cli::Cli::parse_from([
        "poolkeeper",
        "--pool-database-url",
        "postgres://nobody@127.0.0.1:1/pool",
        "--users-database-url",
        "postgres://nobody@127.0.0.1:1/users",
        "backup",
        file.to_str().unwrap(),
    ]);
    let err = poolkeeper::cli::run(cli).await.unwrap_err().to_string();
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!file.exists());
    // And the library refuses on a live PostgreSQL instance.
    for b in common::backends() {
        if let Backend::Postgres { .. } = b {
            let t = TestApp::spawn(&b).await;
            let app = t.app();
            let err = backup::create_archive(&app.pool, &app.users, &file, 0)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("pg_dump") && err.contains("docs/postgresql.md"),
                "{err}"
            );
            assert!(!file.exists());
            t.stop().await;
        }
    }
}

#[tokio::test]
async fn scheduled_backups_prune_to_keep_and_export_their_gauges() {
    let clock = clock::ManualClock::new(1_800_000_000_000);
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| {
            c.backup.interval_hours = 1;
            c.backup.keep = 2;
        },
        clock.clone(),
    )
    .await;
    let dir = t.dbs.config.data_dir.join("backups");
    // The service writes the first one at start, since none exists yet.
    wait_until(
        "the first scheduled backup",
        Duration::from_secs(20),
        || async { backup::last_backup(&t.app().config).unwrap().is_some() },
    )
    .await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Its work directory is gone once the archive is listed.
    wait_until(
        "the first backup to finish",
        Duration::from_secs(20),
        || async { std::fs::read_dir(&dir).unwrap().count() == 1 },
    )
    .await;
    let mut written = Vec::new();
    for _ in 0..3 {
        clock.advance_ms(3_600_000);
        let (report, _) = backup::run_scheduled(t.app()).await.unwrap();
        written.push(report.path);
    }
    let mut left: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, written[1..].to_vec(), "the two newest are kept");
    for f in &left {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let last = backup::last_backup(&t.app().config).unwrap().unwrap();
    assert_eq!(last.path, written[2]);
    assert_eq!(
        last.size_bytes,
        std::fs::metadata(&written[2]).unwrap().len()
    );
    let metrics = t.client.get(t.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(&format!("backup_last_size_bytes {}", last.size_bytes)),
        "{text}"
    );
    assert!(
        text.contains("backup_last_success_timestamp_seconds "),
        "{text}"
    );
    t.stop().await;
}
