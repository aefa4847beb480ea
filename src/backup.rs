//! Backup and restore of the embedded SQLite databases.
//!
//! `poolkeeper backup FILE` (and the scheduled backup) copies both databases with SQLite's
//! `VACUUM INTO` while the service runs, into a zip archive with a JSON manifest: poolkeeper's
//! version, each database's applied migration versions, the time, the SHA-256 of each file, and the
//! ids of the keys the sealed credentials in it were sealed with. Secret keys are never written into
//! an archive. `poolkeeper restore FILE` writes an archive's databases into an empty data directory
//! after checking the manifest and checksums, migrates them, and reports every sealed credential the
//! configured keyring cannot open.
//!
//! Each `VACUUM INTO` copy is one consistent snapshot of its database. The pool database is copied
//! first and the users database right after, so the users copy may hold a few changes newer than
//! the pool copy, never the reverse. That order is the safe one: a redeem that finished in the gap
//! shows its code `used` (users) beside a seat still free or held (pool); maintenance frees the
//! hold and the next sync reads the seat from the provider, while no code is ever made redeemable
//! twice. A job or invite that names a mother created in the gap fails with "not found" when run.
//!
//! PostgreSQL is not handled here: its own tools (`pg_dump`) do it better; see docs/postgresql.md.
//! This module only reads the live databases; it never writes to them.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use crate::clock::Clock as _;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::db::{Backend, Conn, Database, DbName, PoolDb, UsersDb};
use crate::domain::lower_hex;

/// Format of the manifest; a reader refuses any other.
pub const FORMAT: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
/// Scheduled archives are named `<prefix><UTC time>.zip` in `backup.dir`; pruning touches only these.
pub const SCHEDULED_PREFIX: &str = "poolkeeper-backup-";

/// What backup refuses on PostgreSQL, pointing to the documented procedure.
pub const POSTGRES_REFUSAL: &str = "backup and restore work on the embedded SQLite databases only; \
    on PostgreSQL back up both databases with `pg_dump --format=custom` and restore them with \
    `pg_restore` (see \"Backups with pg_dump\" in docs/postgresql.md)";

/// Where sealed values live: database, table, the column naming the row, the sealed column, and
/// what a person calls the row.
const SEALED_COLUMNS: &[(DbName, &str, &str, &str, &str)] = &[
    (
        DbName::Pool,
        "mothers",
        "name",
        "credential_sealed",
        "mother",
    ),
    (
        DbName::Pool,
        "credential_accounts",
        "pool || '/' || login",
        "password_sealed",
        "credential account",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub poolkeeper_version: String,
    /// When the copies were taken, RFC 3339 UTC, and in milliseconds.
    pub created_at: String,
    pub created_at_ms: i64,
    pub databases: Vec<ManifestDatabase>,
    /// Ids of the keys that sealed the credentials in this archive (the keys themselves are not in it).
    pub key_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDatabase {
    /// `pool` or `users`.
    pub name: String,
    /// The file's name in the archive.
    pub file: String,
    /// Applied migration versions, ascending.
    pub migrations: Vec<i64>,
    pub sha256: String,
    pub size_bytes: u64,
}

/// What a backup wrote.
#[derive(Clone, Debug)]
pub struct BackupReport {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub manifest: Manifest,
}

fn sqlite_reader(db: &Database) -> anyhow::Result<&sqlx::SqlitePool> {
    match &db.conn {
        Conn::Sqlite { read, .. } => Ok(read),
        Conn::Postgres(_) => anyhow::bail!("{POSTGRES_REFUSAL}"),
    }
}

/// SQL text for a string literal (`VACUUM INTO` takes no bound parameter on every SQLite version).
fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Writes one consistent archive of both databases to `dest` (mode 0600), replacing nothing:
/// an existing `dest` is an error. Refuses on PostgreSQL.
pub async fn create_archive(
    pool: &PoolDb,
    users: &UsersDb,
    dest: &Path,
    now_ms: i64,
) -> anyhow::Result<BackupReport> {
    let pool_reader = sqlite_reader(pool.database())?;
    let users_reader = sqlite_reader(users.database())?;
    if dest.exists() {
        anyhow::bail!("{} exists; backup never overwrites a file", dest.display());
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        anyhow::bail!("directory {} does not exist", parent.display());
    }
    let work = parent.join(format!(
        ".poolkeeper-backup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    crate::files::create_private_dir(&work)?;
    let result = write_archive(pool_reader, users_reader, &work, dest, now_ms).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn write_archive(
    pool_reader: &sqlx::SqlitePool,
    users_reader: &sqlx::SqlitePool,
    work: &Path,
    dest: &Path,
    now_ms: i64,
) -> anyhow::Result<BackupReport> {
    // Pool first, users after: see the module comment for why this order.
    let mut copies = Vec::new();
    for (name, reader) in [(DbName::Pool, pool_reader), (DbName::Users, users_reader)] {
        let file = work.join(format!("{}.db", name.as_str()));
        // Created 0600 first so the copy is never readable by others, then SQLite fills it; VACUUM
        // INTO wants no file or an empty one.
        crate::files::create_private_file(&file)?;
        let target = file
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", file.display()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "VACUUM INTO {}",
            sql_text(target)
        )))
        .execute(reader)
        .await
        .with_context(|| format!("copying the {} database", name.as_str()))?;
        copies.push((name, file));
    }
    let mut databases = Vec::new();
    let mut key_ids = BTreeSet::new();
    for (name, file) in &copies {
        let mut conn = open_copy(file).await?;
        let migrations = applied_migrations(&mut conn).await?;
        for (db, table, _, column, _) in SEALED_COLUMNS {
            if db == name {
                key_ids.extend(sealing_key_ids(&mut conn, table, column).await?);
            }
        }
        conn.close().await.ok();
        let (sha256, size_bytes) = hash_file(file)?;
        databases.push(ManifestDatabase {
            name: name.as_str().to_string(),
            file: format!("{}.db", name.as_str()),
            migrations,
            sha256,
            size_bytes,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        poolkeeper_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: crate::clock::rfc3339(now_ms),
        created_at_ms: now_ms,
        databases,
        key_ids: key_ids.into_iter().collect(),
    };
    let partial = work.join("archive.zip");
    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    let work_dir = work.to_path_buf();
    let zip_path = partial.clone();
    let entries: Vec<String> = manifest.databases.iter().map(|d| d.file.clone()).collect();
    tokio::task::spawn_blocking(move || write_zip(&zip_path, &manifest_json, &work_dir, &entries))
        .await??;
    // The finished archive appears under its name at once (a link never overwrites), so a reader
    // never sees half an archive.
    std::fs::hard_link(&partial, dest).with_context(|| format!("writing {}", dest.display()))?;
    let size_bytes = std::fs::metadata(dest)?.len();
    Ok(BackupReport {
        path: dest.to_path_buf(),
        size_bytes,
        manifest,
    })
}

fn write_zip(path: &Path, manifest: &[u8], dir: &Path, entries: &[String]) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600)
        .large_file(true);
    zip.start_file(MANIFEST_FILE, options)?;
    zip.write_all(manifest)?;
    for entry in entries {
        zip.start_file(entry.as_str(), options)?;
        let mut src = std::fs::File::open(dir.join(entry))?;
        std::io::copy(&mut src, &mut zip)?;
    }
    let mut out = zip.finish()?;
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(())
}

fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((lower_hex(&hasher.finalize()), size))
}

async fn open_copy(file: &Path) -> anyhow::Result<SqliteConnection> {
    SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(false)
        .connect()
        .await
        .with_context(|| format!("opening {}", file.display()))
}

async fn applied_migrations(conn: &mut SqliteConnection) -> anyhow::Result<Vec<i64>> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?,
    )
}

async fn table_exists(conn: &mut SqliteConnection, table: &str) -> anyhow::Result<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(table)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

/// The distinct key ids named by the sealed values of one column (`v1:<key id>:...`).
async fn sealing_key_ids(
    conn: &mut SqliteConnection,
    table: &str,
    column: &str,
) -> anyhow::Result<Vec<String>> {
    if !table_exists(conn, table).await? {
        return Ok(Vec::new());
    }
    // The names are constants of this module, never input.
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT substr({column}, 4, instr(substr({column}, 4), ':') - 1) FROM {table} \
         WHERE {column} LIKE 'v1:%:%'"
    )))
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids)
}

/// A sealed credential the keyring cannot open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unopenable {
    /// `mother` or `credential account`.
    pub kind: String,
    pub id: i64,
    /// The mother's name, or `pool/login` of a credential account.
    pub name: String,
    /// Why, never the value.
    pub reason: String,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub manifest: Manifest,
    /// Each database's migration version after restore (it is migrated to this binary's).
    pub versions: Vec<(String, i64)>,
    /// Sealed credentials checked.
    pub sealed_checked: u64,
    pub unopenable: Vec<Unopenable>,
}

/// The SQLite file a URL names.
fn sqlite_file(url: &str) -> anyhow::Result<PathBuf> {
    if crate::db::is_postgres_url(url) {
        anyhow::bail!("{POSTGRES_REFUSAL}");
    }
    let opts = SqliteConnectOptions::from_str(url).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    Ok(opts.get_filename().to_path_buf())
}

/// Whether `dir` may receive a restore: missing, or holding nothing but the key file a restore
/// needs (`secret.key`, which an operator puts there first).
fn check_empty(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != crate::crypto::GENERATED_KEY_FILE {
            found.push(name);
        }
    }
    if !found.is_empty() {
        found.sort();
        found.truncate(5);
        anyhow::bail!(
            "data directory {} is not empty (it holds {}); restore only writes into an empty one",
            dir.display(),
            found.join(", ")
        );
    }
    Ok(())
}

/// Reads and checks the manifest of an archive: its format, both databases, and migration
/// versions this binary knows.
fn read_manifest<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
) -> anyhow::Result<Manifest> {
    let mut text = String::new();
    zip.by_name(MANIFEST_FILE)
        .map_err(|_| anyhow::anyhow!("not a poolkeeper backup: {MANIFEST_FILE} is missing"))?
        .take(1024 * 1024)
        .read_to_string(&mut text)?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{MANIFEST_FILE} is not a valid manifest: {e}"))?;
    if manifest.format != FORMAT {
        anyhow::bail!(
            "archive format {} is not supported (this poolkeeper reads format {FORMAT})",
            manifest.format
        );
    }
    for name in [DbName::Pool, DbName::Users] {
        let db = manifest
            .databases
            .iter()
            .find(|d| d.name == name.as_str())
            .ok_or_else(|| anyhow::anyhow!("manifest lists no {} database", name.as_str()))?;
        if db.file != format!("{}.db", name.as_str()) {
            anyhow::bail!("manifest names an unexpected file {:?}", db.file);
        }
        let known = crate::db::known_versions(Backend::Sqlite, name);
        let unknown: Vec<i64> = db
            .migrations
            .iter()
            .copied()
            .filter(|v| !known.contains(v))
            .collect();
        if !unknown.is_empty() {
            anyhow::bail!(
                "the {} database has migration(s) {:?} that this poolkeeper {} does not know: \
                 the archive comes from a newer version; restore it with that version or later",
                name.as_str(),
                unknown,
                env!("CARGO_PKG_VERSION")
            );
        }
    }
    Ok(manifest)
}

/// Extracts `entry` to `to` (mode 0600) and checks its SHA-256 and size against the manifest.
fn extract_checked<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    db: &ManifestDatabase,
    to: &Path,
) -> anyhow::Result<()> {
    let mut entry = zip
        .by_name(&db.file)
        .map_err(|_| anyhow::anyhow!("archive has no {}", db.file))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = entry
            .read(&mut buf)
            .with_context(|| format!("reading {} from the archive", db.file))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > db.size_bytes {
            // Stop before a damaged or hostile entry fills the disk.
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    let sha256 = lower_hex(&hasher.finalize());
    if sha256 != db.sha256 || size != db.size_bytes {
        anyhow::bail!(
            "{} does not match its checksum in the manifest (the archive is damaged or was changed)",
            db.file
        );
    }
    Ok(())
}

/// Restores an archive into the configured (empty) data directory: checks, writes both database
/// files, migrates them, and checks every sealed credential against `keyring` (`None`: no key is
/// configured, so none opens).
pub async fn restore_archive(
    archive: &Path,
    config: &Config,
    keyring: Option<&Keyring>,
) -> anyhow::Result<RestoreReport> {
    let pool_file = sqlite_file(&config.pool_database_url())?;
    let users_file = sqlite_file(&config.users_database_url())?;
    check_empty(&config.data_dir)?;
    for file in [&pool_file, &users_file] {
        if file.exists() {
            anyhow::bail!(
                "{} exists; restore never overwrites a database",
                file.display()
            );
        }
        if let Some(dir) = file.parent() {
            if dir != config.data_dir {
                check_empty(dir)?;
            }
        }
    }
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{} is not a backup archive: {e}", archive.display()))?;
    let manifest = read_manifest(&mut zip)?;
    crate::files::create_private_dir(&config.data_dir)?;
    let work = config.data_dir.join(format!(
        ".poolkeeper-restore-{}",
        uuid::Uuid::new_v4().simple()
    ));
    crate::files::create_private_dir(&work)?;
    let extracted = (|| -> anyhow::Result<()> {
        for db in &manifest.databases {
            extract_checked(&mut zip, db, &work.join(&db.file))?;
        }
        Ok(())
    })();
    if let Err(e) = extracted {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    for (name, to) in [("pool.db", &pool_file), ("users.db", &users_file)] {
        if let Some(dir) = to.parent()
            && !dir.as_os_str().is_empty()
        {
            crate::files::create_private_dir(dir)?;
        }
        std::fs::rename(work.join(name), to)
            .or_else(|_| std::fs::copy(work.join(name), to).map(drop))
            .with_context(|| format!("writing {}", to.display()))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = std::fs::remove_dir_all(&work);
    let (pool, users) = crate::server::open_and_migrate(config).await?;
    let mut versions = Vec::new();
    for db in [pool.database(), users.database()] {
        versions.push((
            db.name().as_str().to_string(),
            db.migration_status().await?.version,
        ));
    }
    let (sealed_checked, unopenable) = check_sealed(&pool, keyring).await?;
    pool.database().close().await;
    users.database().close().await;
    Ok(RestoreReport {
        manifest,
        versions,
        sealed_checked,
        unopenable,
    })
}

/// Tries every sealed value with the keyring; returns how many were checked and those that fail.
pub async fn check_sealed(
    pool: &PoolDb,
    keyring: Option<&Keyring>,
) -> anyhow::Result<(u64, Vec<Unopenable>)> {
    let reader = sqlite_reader(pool.database())?;
    let mut checked = 0;
    let mut failed = Vec::new();
    for (db, table, label, column, kind) in SEALED_COLUMNS {
        if *db != DbName::Pool {
            continue;
        }
        let mut after = 0i64;
        loop {
            // Names are constants of this module; a page at a time keeps memory flat.
            let rows: Vec<(i64, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id, {label}, {column} FROM {table} WHERE id > $1 ORDER BY id LIMIT 1000"
            )))
            .bind(after)
            .fetch_all(reader)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            for (id, name, sealed) in rows {
                checked += 1;
                let reason = match keyring {
                    None => Some("no key is configured".to_string()),
                    Some(k) => k.open(&sealed).err().map(|e| e.to_string()),
                };
                if let Some(reason) = reason {
                    failed.push(Unopenable {
                        kind: kind.to_string(),
                        id,
                        name,
                        reason,
                    });
                }
            }
        }
    }
    Ok((checked, failed))
}

/// The newest scheduled archive in a directory: when it was written and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastBackup {
    pub path: PathBuf,
    /// When it was written (file modification time), milliseconds since the epoch.
    pub at_ms: i64,
    pub size_bytes: u64,
}

/// Scheduled archives in `dir`, oldest first (their names sort by time).
fn scheduled_archives(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(SCHEDULED_PREFIX) && name.ends_with(".zip") && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The last scheduled backup in `backup.dir` (what the System page and the metrics show);
/// `None` when there is none yet.
pub fn last_backup(config: &Config) -> anyhow::Result<Option<LastBackup>> {
    let Some(path) = scheduled_archives(&config.backup_dir())?.pop() else {
        return Ok(None);
    };
    let meta = std::fs::metadata(&path)?;
    let at_ms = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(Some(LastBackup {
        path,
        at_ms,
        size_bytes: meta.len(),
    }))
}

/// Sets the backup gauges from the last backup, if any.
pub fn export_metrics(last: &LastBackup) {
    metrics::gauge!(crate::metrics::BACKUP_LAST_SUCCESS).set(last.at_ms as f64 / 1000.0);
    metrics::gauge!(crate::metrics::BACKUP_LAST_SIZE).set(last.size_bytes as f64);
}

/// One scheduled backup: an archive named by the time into `backup.dir` (0700), then the oldest
/// scheduled archives beyond `backup.keep` removed. Returns the report and the files removed.
pub async fn run_scheduled(app: &crate::app::App) -> anyhow::Result<(BackupReport, Vec<PathBuf>)> {
    let dir = app.config.backup_dir();
    crate::files::create_private_dir(&dir)?;
    let now = app.clock.now_ms();
    let stamp = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)?
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second][subsecond digits:3]Z"
        ))?;
    let dest = dir.join(format!("{SCHEDULED_PREFIX}{stamp}.zip"));
    let report = create_archive(&app.pool, &app.users, &dest, now).await?;
    let mut removed = Vec::new();
    let files = scheduled_archives(&dir)?;
    let keep = app.config.backup.keep.max(1) as usize;
    if files.len() > keep {
        for old in &files[..files.len() - keep] {
            std::fs::remove_file(old).with_context(|| format!("removing {}", old.display()))?;
            removed.push(old.clone());
        }
    }
    if let Some(last) = last_backup(&app.config)? {
        export_metrics(&last);
    }
    Ok((report, removed))
}

/// How often the scheduler looks whether a backup is due.
const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs scheduled backups while the service runs: every minute it checks whether the last
/// scheduled archive is older than `backup.interval_hours` (or missing) and writes one when it is.
/// Off when the interval is 0; on PostgreSQL it warns once and does nothing (use `pg_dump`). Only
/// the leader runs it (a SQLite file serves one process, which always leads).
pub fn spawn_scheduler(app: crate::app::AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let hours = app.config.backup.interval_hours;
    if hours == 0 {
        return;
    }
    if app.pool.database().backend() == Backend::Postgres
        || app.users.database().backend() == Backend::Postgres
    {
        tracing::warn!(
            "backup.interval_hours is set but the databases are on PostgreSQL: {POSTGRES_REFUSAL}"
        );
        return;
    }
    if let Ok(Some(last)) = last_backup(&app.config) {
        export_metrics(&last);
    }
    let interval_ms = i64::try_from(hours).unwrap_or(i64::MAX / 3_600_000) * 3_600_000;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        let mut guard: Option<crate::store::leader::LeaderGuard> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if guard.is_none() {
                match crate::store::leader::try_lead(&app.pool, crate::store::leader::BACKUP_LOCK)
                    .await
                {
                    Ok(g) => guard = g,
                    Err(e) => tracing::warn!(error = %e, "taking the backup lock failed"),
                }
            }
            if guard.is_none() {
                continue;
            }
            let due = match last_backup(&app.config) {
                Ok(Some(last)) => {
                    // Wall time, like the file times it compares with.
                    let now = crate::clock::SystemClock.now_ms();
                    now - last.at_ms >= interval_ms
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "reading backup.dir failed");
                    continue;
                }
            };
            if !due {
                continue;
            }
            match run_scheduled(&app).await {
                Ok((report, removed)) => tracing::info!(
                    path = %report.path.display(),
                    size_bytes = report.size_bytes,
                    pruned = removed.len(),
                    "scheduled backup written"
                ),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "scheduled backup failed"),
            }
        }
    });
}
