//! Connections to the two databases, `pool` and `users`, on SQLite or PostgreSQL.
//!
//! The two handles are distinct types ([`PoolDb`], [`UsersDb`]); store functions take the one whose
//! tables they touch, so touching a table through the other database's handle does not compile:
//!
//! ```compile_fail
//! async fn wrong(pool: &poolkeeper::db::PoolDb) {
//!     // `admin_users` lives in the users database: its store functions take a `UsersDb`.
//!     let _ = poolkeeper::store::admins::count(pool).await;
//! }
//! ```
//!
//! On SQLite, writes go through one connection ([`Writer`]), taken in turn: a single statement runs
//! as its own transaction, several run in one that starts with `BEGIN IMMEDIATE`; reads go through
//! a separate pool. With WAL and a busy timeout, racing writers queue instead of failing.

mod migrations;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

pub use migrations::{MigrationStatus, known_versions};

/// Which engine a database runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Which of the two logical databases a handle points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbName {
    Pool,
    Users,
}

impl DbName {
    pub fn as_str(self) -> &'static str {
        match self {
            DbName::Pool => "pool",
            DbName::Users => "users",
        }
    }
}

/// The live connection pools of one database.
#[derive(Clone)]
pub(crate) enum Conn {
    Sqlite {
        read: SqlitePool,
        write: Arc<Writer>,
        /// Stops the WAL checkpointer when the last handle goes.
        _checkpointer: Arc<Checkpointer>,
    },
    Postgres(PgPool),
}

/// SQLite's one write connection, taken in turn (first come, first served).
///
/// Not a pool of one: a pool tests each connection it takes back with a round trip to the
/// connection's thread, and a write waited for that too. Here the next writer starts as soon as
/// the last one is done. A writer whose future is dropped half-way leaves nothing behind: an
/// unfinished transaction queues its rollback on the connection before the lock passes on, and
/// the connection runs what it is sent in order. A [`SpelledTx`] (a transaction written out in
/// the statement text) left unfinished is rolled back by the next [`Writer::lock`].
pub(crate) struct Writer {
    conn: tokio::sync::Mutex<Option<sqlx::SqliteConnection>>,
    /// A spelled-out transaction may still be open on the connection.
    unfinished: std::sync::atomic::AtomicBool,
    /// Told of every write, for the log it appends to (none for a database in memory).
    writeback: Option<LogWriteback>,
}

/// The write connection, held.
pub(crate) type WriterGuard<'a> = tokio::sync::MappedMutexGuard<'a, sqlx::SqliteConnection>;

impl Writer {
    fn new(conn: sqlx::SqliteConnection, writeback: Option<LogWriteback>) -> Self {
        Self {
            conn: tokio::sync::Mutex::new(Some(conn)),
            unfinished: std::sync::atomic::AtomicBool::new(false),
            writeback,
        }
    }

    /// Waits for the write connection; `PoolClosed` once the database is closed. A spelled-out
    /// transaction its last holder left open is rolled back first.
    pub(crate) async fn lock(&self) -> Result<WriterGuard<'_>, sqlx::Error> {
        use std::sync::atomic::Ordering;
        let mut conn = tokio::sync::MutexGuard::try_map(self.conn.lock().await, Option::as_mut)
            .map_err(|_| sqlx::Error::PoolClosed)?;
        if self.unfinished.load(Ordering::Acquire) {
            // "no transaction is active" when it had finished after all: nothing to undo.
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK"))
                .execute(&mut *conn)
                .await;
            self.unfinished.store(false, Ordering::Release);
        }
        if let Some(writeback) = &self.writeback {
            writeback.wrote();
        }
        Ok(conn)
    }

    /// Takes the write connection for a [`SpelledTx`].
    pub(crate) async fn spelled(self: &Arc<Self>) -> Result<SpelledTx<'_>, sqlx::Error> {
        let conn = self.lock().await?;
        self.unfinished
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(SpelledTx {
            writer: self,
            conn,
            finished: false,
        })
    }

    async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

/// A write transaction on SQLite's writer that the statements sent spell out: the first text sent
/// starts with `BEGIN IMMEDIATE`, the last ends with `COMMIT`. sqlx sends a text of several
/// statements to the connection's thread in one round trip and runs them in order, so a short
/// transaction costs one or two round trips instead of one per statement plus two for `BEGIN` and
/// `COMMIT` (each a hand-off between threads, the main cost of a small write).
///
/// sqlx does not know of this transaction, so the guard does what its `Transaction` would: a
/// failed text is rolled back at once, and a transaction left unfinished (its caller's future
/// dropped half-way) is rolled back before anyone else writes.
pub(crate) struct SpelledTx<'a> {
    writer: &'a Arc<Writer>,
    conn: WriterGuard<'a>,
    finished: bool,
}

impl SpelledTx<'_> {
    /// Runs `query` (one text, possibly several statements) to its end: all the rows it returned.
    /// On an error the transaction is rolled back before the error is returned.
    pub(crate) async fn fetch_all<'q, O>(
        &mut self,
        query: sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<O>, sqlx::Error>
    where
        O: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        match query.fetch_all(&mut *self.conn).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    /// The text sent last ended with `COMMIT` and ran: the transaction is over.
    pub(crate) fn committed(mut self) {
        self.finished = true;
    }

    /// Ends the transaction without keeping anything.
    pub(crate) async fn rollback(&mut self) {
        if !self.finished {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK"))
                .execute(&mut *self.conn)
                .await;
            self.finished = true;
        }
    }
}

impl Drop for SpelledTx<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.finished {
            self.writer.unfinished.store(false, Ordering::Release);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Roll back now rather than when the next write comes: `lock` does it.
            let writer = self.writer.clone();
            runtime.spawn(async move { drop(writer.lock().await) });
        }
    }
}

/// Copies the SQLite write-ahead log back into the database file from a connection of its own, so
/// the single writer never stops to do it: with SQLite's automatic checkpoints, every thousandth
/// page written made the committing writer copy 4 MiB first (after a bulk enqueue, the whole load),
/// and claims and completions waited behind it. The writer's automatic checkpoint is off; this
/// task runs a passive checkpoint (it neither blocks nor waits for writers or readers) every
/// [`Checkpointer::INTERVAL`]. When the last connection closes, SQLite checkpoints once more.
///
/// A passive checkpoint never lets the log start again under steady writes: SQLite goes back to the
/// log's beginning only when a write finds it all copied, and the writer appends while the copy
/// runs. So past [`Checkpointer::RESTART_FRAMES`] the checkpoint takes its turn as a write
/// (`RESTART`, see [`checkpoint`]): it copies what the passive one left, a few milliseconds' worth,
/// and the next write starts the log again. Without it the log of a busy server grew by 60 MB a
/// second (a lease burst) until the writes paused, and every append extended the file.
pub(crate) struct Checkpointer {
    stop: tokio::sync::watch::Sender<()>,
}

impl Checkpointer {
    const INTERVAL: Duration = Duration::from_millis(200);
    /// The log length (in pages, 64 MiB of 4 KiB pages) past which a checkpoint starts it again.
    const RESTART_FRAMES: i64 = 16_384;

    fn start(mut conn: sqlx::SqliteConnection, writer: Arc<Writer>, name: DbName) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Self::INTERVAL) => {}
                    _ = stopped.changed() => break,
                }
                if let Err(e) = checkpoint(&mut conn, &writer, Self::RESTART_FRAMES).await {
                    tracing::warn!(database = name.as_str(), error = %e, "WAL checkpoint failed");
                }
            }
            let _ = conn.close().await;
        });
        Self { stop }
    }
}

/// One round of the [`Checkpointer`]: a passive checkpoint from its own connection `conn`, then,
/// when the log is longer than `restart_frames` pages, a restart. True when it restarted.
///
/// The restart needs the log to itself for a moment, so it runs on the writer, taken the way every
/// write takes it: the writes queue on the writer's lock and go on the moment it ends. Run from a
/// connection of its own, it made them back off in SQLite's busy handler instead, which sleeps 1,
/// 2, then 5 ms between tries: a 7 ms restart held the worker API's writes 9-10 ms.
async fn checkpoint(
    conn: &mut sqlx::SqliteConnection,
    writer: &Writer,
    restart_frames: i64,
) -> Result<bool, sqlx::Error> {
    if passive_checkpoint(conn).await? <= restart_frames {
        return Ok(false);
    }
    let mut writer = match writer.lock().await {
        Ok(writer) => writer,
        // The database is closing; SQLite checkpoints as its last connection closes.
        Err(sqlx::Error::PoolClosed) => return Ok(false),
        Err(e) => return Err(e),
    };
    sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .execute(&mut *writer)
        .await?;
    Ok(true)
}

/// A passive checkpoint from `conn`: the pages in the log (copied or not) when it ended.
async fn passive_checkpoint(conn: &mut sqlx::SqliteConnection) -> Result<i64, sqlx::Error> {
    // (busy, pages in the log, pages copied)
    let (_, logged, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(logged)
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Starts writing the SQLite write-ahead log back to the disk while the writes go on, so that the
/// [`Checkpointer`]'s sync of the log finds little left to write.
///
/// With `synchronous = NORMAL` a commit appends to the log in the page cache only, and the kernel
/// writes it back when the checkpoint syncs the log: everything appended since the last one at
/// once, about 18 MB under the lease bench. Meanwhile the writer's appends, which always begin on
/// the log's last page, waited for that write-back 2-5 ms at a time (`perf trace`), and the worker
/// API's acquires with them. So after writes, a thread of this database's own asks the kernel,
/// every [`LogWriteback::INTERVAL`], to start writing back whatever of the log is dirty
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which neither waits for the write nor makes
/// anything durable: the checkpoint's sync still does that). RocksDB's `wal_bytes_per_sync` does
/// the same for its log. Linux only; elsewhere the checkpoint writes the log back as before.
pub(crate) struct LogWriteback {
    /// One slot: a write told while the thread waits for its interval is not told twice. Dropped
    /// with the [`Writer`], which ends the thread.
    wrote: std::sync::mpsc::SyncSender<()>,
}

impl LogWriteback {
    const INTERVAL: Duration = Duration::from_millis(10);

    /// The thread for the log at `log` (the database file's name with `-wal`; opened once there
    /// is something to write back). `None` where the kernel has no `sync_file_range`.
    fn start(log: std::path::PathBuf, name: DbName) -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            let (wrote, told) = std::sync::mpsc::sync_channel(1);
            let mut file: Option<std::fs::File> = None;
            let write_back = move || {
                if file.is_none() {
                    file = std::fs::File::open(&log).ok();
                }
                if let Some(file) = &file
                    && let Err(e) = start_writeback(file)
                {
                    tracing::debug!(database = name.as_str(), error = %e, "log write-back");
                }
            };
            std::thread::Builder::new()
                .name(format!("{}-log-writeback", name.as_str()))
                .spawn(move || write_back_after_writes(&told, Self::INTERVAL, write_back))
                .ok()?;
            Some(Self { wrote })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (log, name);
            None
        }
    }

    /// A write is on its way: the log is written back within two intervals.
    fn wrote(&self) {
        // Full: the thread has been told already and has not written back yet.
        let _ = self.wrote.try_send(());
    }
}

/// The loop of a [`LogWriteback`] thread: each time it is `told` of writes, waits `interval` (the
/// writes of that time go together) and calls `write_back`. Between bursts of writes it sleeps
/// until told again; it returns once nobody can tell it any more.
fn write_back_after_writes(
    told: &std::sync::mpsc::Receiver<()>,
    interval: Duration,
    mut write_back: impl FnMut(),
) {
    while told.recv().is_ok() {
        std::thread::sleep(interval);
        write_back();
    }
}

/// Asks the kernel to start writing back the dirty pages of `file`, without waiting for them.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` is borrowed; sync_file_range only
    // starts the write-back of the file's dirty pages and reads no memory of ours.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One open database: its connections and which logical database it is.
#[derive(Clone)]
pub struct Database {
    name: DbName,
    pub(crate) conn: Conn,
    /// PostgreSQL: the server process ids of this process's connections, so a job runner can tell
    /// a `NOTIFY` sent by this process (whose runners its [`JobWakeup`] woke already) from one sent
    /// by another. Ids of closed connections stay (a few per reconnect); should the server reuse
    /// one for another client, that client's notifications are missed here and its jobs found at
    /// the next poll.
    own_backends: Arc<std::sync::Mutex<std::collections::HashSet<i32>>>,
}

/// Handle to the `pool` database.
#[derive(Clone)]
pub struct PoolDb(pub(crate) Database);

/// Handle to the `users` database. Its clones share one [`JobWakeup`] and one [`CancelRequests`]:
/// the job queue's writes through any of them reach the runners of this process that read through
/// any of them.
#[derive(Clone)]
pub struct UsersDb(pub(crate) Database, JobWakeup, CancelRequests);

/// Tells this process's job runners that a job may have become ready (enqueued, retried, handed
/// back), without a round trip through the database: on SQLite the only way besides polling, on
/// PostgreSQL quicker than `LISTEN`/`NOTIFY`, which still wakes other processes. A counter in a
/// watch channel rather than a bare `Notify`: a runner marks the count seen before it claims, so a
/// signal sent while its claim runs is not lost, and every runner and claim loop sees every signal.
#[derive(Clone)]
pub struct JobWakeup(Arc<tokio::sync::watch::Sender<u64>>);

impl JobWakeup {
    fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(0)))
    }

    /// Wakes every runner waiting for work (call after the write that made the job ready commits).
    pub fn signal(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees each later [`JobWakeup::signal`] as a change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Tells this process's job runners at once which running job an admin asked to cancel, so the
/// handler stops without waiting for the next heartbeat. Runners of other processes learn it from
/// the job row at their next heartbeat (at most a second later). A lagging receiver lost some ids
/// and should look at the job rows instead.
#[derive(Clone)]
pub struct CancelRequests(Arc<tokio::sync::broadcast::Sender<String>>);

impl CancelRequests {
    fn new() -> Self {
        Self(Arc::new(tokio::sync::broadcast::Sender::new(64)))
    }

    /// Announces that cancellation of job `id` was requested (after the write committed).
    pub fn announce(&self, id: &str) {
        // No receiver (no runner in this process) is fine: the job row says it.
        let _ = self.0.send(id.to_string());
    }

    /// A receiver of the job ids announced from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.0.subscribe()
    }
}

impl PoolDb {
    pub async fn open(url: &str, opts: &OpenOptions) -> anyhow::Result<Self> {
        Ok(Self(Database::open(DbName::Pool, url, opts).await?))
    }
    pub fn database(&self) -> &Database {
        &self.0
    }
}

impl UsersDb {
    pub async fn open(url: &str, opts: &OpenOptions) -> anyhow::Result<Self> {
        Ok(Self(
            Database::open(DbName::Users, url, opts).await?,
            JobWakeup::new(),
            CancelRequests::new(),
        ))
    }
    pub fn database(&self) -> &Database {
        &self.0
    }
    /// Wakes this process's job runners; shared by the clones of this handle.
    pub fn job_wakeup(&self) -> &JobWakeup {
        &self.1
    }
    /// Tells this process's job runners about cancel requests; shared by the clones of this handle.
    pub fn cancel_requests(&self) -> &CancelRequests {
        &self.2
    }
}

/// How to open a database.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Create a missing SQLite file (false for read-only checks such as `migrate --check`).
    pub create: bool,
    /// Connections in the PostgreSQL pool, and readers in the SQLite read pool.
    pub max_connections: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            create: true,
            max_connections: 8,
        }
    }
}

/// Whether a database URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A URL safe to print: the password, if any, is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl Database {
    async fn open(name: DbName, url: &str, opts: &OpenOptions) -> anyhow::Result<Self> {
        let own_backends = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let conn = if is_postgres_url(url) {
            // No JIT: every query here is short, and a plan whose estimate crosses
            // `jit_above_cost` (stale statistics after a bulk load will do it) spent 23 ms
            // compiling to run for 0.2 ms.
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| {
                    anyhow::anyhow!("{} database URL {}: {e}", name.as_str(), redact_url(url))
                })?
                .options([("jit", "off")]);
            let backends = own_backends.clone();
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _| {
                    let backends = backends.clone();
                    Box::pin(async move {
                        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                            .fetch_one(&mut *conn)
                            .await?;
                        if let Ok(mut b) = backends.lock() {
                            b.insert(pid);
                        }
                        Ok(())
                    })
                })
                .connect_with(connect)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot connect to the {} database at {}: {e}",
                        name.as_str(),
                        redact_url(url)
                    )
                })?;
            Conn::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let base = SqliteConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("{} database URL {url}: {e}", name.as_str()))?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let cannot_open = |e: sqlx::Error| {
                anyhow::anyhow!("cannot open the {} database {url}: {e}", name.as_str())
            };
            // The file is created 0600 before SQLite opens it (its -wal and -shm files take the
            // mode of the database file), and an older install's files are made private.
            let file = base.get_filename().to_path_buf();
            let is_file = !file.as_os_str().is_empty()
                && !file.to_string_lossy().starts_with(":memory:")
                && !file.to_string_lossy().starts_with("file:");
            if is_file
                && opts.create
                && file
                    .parent()
                    .is_none_or(|d| d.as_os_str().is_empty() || d.is_dir())
            {
                crate::files::create_private_file(&file)?;
            }
            // The single writer gets a larger page cache (16 MiB, filled only as used): claims and
            // batch completions touch many pages of the same indexes. It leaves checkpoints to the
            // [`Checkpointer`], keeps statement journals and temporary b-trees in memory (SQLite
            // spills a statement journal of over 64 KiB, as a 1,000-row claim's is, to a temp
            // file), and may queue a whole claimed batch of rows for its caller instead of stopping
            // every 50 rows until the caller has read them.
            let write = base
                .clone()
                .create_if_missing(opts.create)
                .pragma("cache_size", "-16384")
                .pragma("wal_autocheckpoint", "0")
                .pragma("temp_store", "memory")
                .row_buffer_size(2048)
                .connect()
                .await
                .map_err(cannot_open)?;
            // An in-process connection cannot go stale: no test before each use.
            let read = SqlitePoolOptions::new()
                .max_connections(opts.max_connections.clamp(1, 8))
                .test_before_acquire(false)
                .connect_with(base.clone().create_if_missing(false))
                .await
                .map_err(cannot_open)?;
            let checkpointer = base.connect().await.map_err(cannot_open)?;
            if is_file {
                crate::files::restrict_sqlite_files(&file)?;
            }
            let writeback = is_file
                .then(|| {
                    let mut log = file.clone().into_os_string();
                    log.push("-wal");
                    LogWriteback::start(log.into(), name)
                })
                .flatten();
            let write = Arc::new(Writer::new(write, writeback));
            Conn::Sqlite {
                read,
                write: write.clone(),
                _checkpointer: Arc::new(Checkpointer::start(checkpointer, write, name)),
            }
        } else {
            anyhow::bail!(
                "{}_database_url must start with sqlite: or postgres://, got {}",
                name.as_str(),
                redact_url(url)
            );
        };
        Ok(Self {
            name,
            conn,
            own_backends,
        })
    }

    /// Whether the PostgreSQL server process `pid` serves one of this process's connections.
    pub fn is_own_backend(&self, pid: i32) -> bool {
        self.own_backends.lock().is_ok_and(|b| b.contains(&pid))
    }

    pub fn name(&self) -> DbName {
        self.name
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite { .. } => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// Answers when the database can run a trivial query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match &self.conn {
            Conn::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.map(drop),
            Conn::Postgres(pg) => sqlx::query("SELECT 1").execute(pg).await.map(drop),
        }
    }

    /// Applies every pending migration of this database.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        migrations::run(self).await
    }

    /// Applied and pending migrations of this database.
    pub async fn migration_status(&self) -> anyhow::Result<MigrationStatus> {
        migrations::status(self).await
    }

    /// Names of the tables of this database (poolkeeper's own, not the migration bookkeeping).
    pub async fn table_names(&self) -> Result<Vec<String>, sqlx::Error> {
        let names: Vec<String> = match &self.conn {
            Conn::Sqlite { read, .. } => {
                sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                     AND name <> '_sqlx_migrations' ORDER BY name",
                )
                .fetch_all(read)
                .await?
            }
            Conn::Postgres(pg) => {
                sqlx::query_scalar(
                    "SELECT table_name::TEXT FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' ORDER BY 1",
                )
                .fetch_all(pg)
                .await?
            }
        };
        Ok(names)
    }

    /// Whether connections to this database are encrypted: `None` on SQLite (no connection), on
    /// PostgreSQL what the server reports for one pooled connection.
    pub async fn uses_tls(&self) -> Result<Option<bool>, sqlx::Error> {
        match &self.conn {
            Conn::Sqlite { .. } => Ok(None),
            Conn::Postgres(pg) => {
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_optional(pg)
                    .await
            }
        }
    }

    pub async fn close(&self) {
        match &self.conn {
            Conn::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Conn::Postgres(pg) => pg.close().await,
        }
    }
}

/// Runs `$body` with `$pool` bound to the pool that serves reads.
macro_rules! on_reader {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db.0.conn {
            $crate::db::Conn::Sqlite { read: $pool, .. } => $body,
            $crate::db::Conn::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body`, one statement, with `$pool` bound to what serves writes: SQLite's write
/// connection, PostgreSQL's pool.
///
/// On SQLite the statement is its own transaction, with no `BEGIN` and `COMMIT` around it: a write
/// statement takes the write lock before it reads anything, so another process writing meanwhile
/// makes it wait (busy timeout) instead of failing with a stale snapshot. A body of two statements
/// would not be atomic: use [`in_transaction!`] for those.
macro_rules! on_writer {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db.0.conn {
            $crate::db::Conn::Sqlite { write, .. } => {
                let mut conn = write.lock().await?;
                let $pool = &mut *conn;
                $body
            }
            $crate::db::Conn::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$tx` bound to a write transaction (`BEGIN IMMEDIATE` on SQLite); the body
/// must commit it.
macro_rules! in_transaction {
    ($db:expr, |$tx:ident| $body:expr) => {
        match &$db.0.conn {
            $crate::db::Conn::Sqlite { write, .. } => {
                let mut conn = write.lock().await?;
                #[allow(unused_mut)]
                let mut $tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
                $body
            }
            $crate::db::Conn::Postgres(pg) => {
                #[allow(unused_mut)]
                let mut $tx = pg.begin().await?;
                $body
            }
        }
    };
}

/// Runs `$body` with `$tx` bound to a read-only transaction whose statements all see the same
/// moment: a deferred transaction on SQLite (its snapshot is taken by the first read), `REPEATABLE
/// READ` on PostgreSQL (where the default gives every statement a snapshot of its own). The body
/// must commit it.
macro_rules! in_snapshot {
    ($db:expr, |$tx:ident| $body:expr) => {
        match &$db.0.conn {
            $crate::db::Conn::Sqlite { read, .. } => {
                #[allow(unused_mut)]
                let mut $tx = read.begin().await?;
                $body
            }
            $crate::db::Conn::Postgres(pg) => {
                #[allow(unused_mut)]
                let mut $tx = pg
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                $body
            }
        }
    };
}

pub(crate) use {in_snapshot, in_transaction, on_reader, on_writer};

/// How a database is doing, as reported by `/api/admin/db-status`, `/readyz` and the dashboard.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DbState {
    pub backend: Backend,
    /// The database answers and has no pending migration.
    pub ok: bool,
    /// Highest applied migration version (0 when none).
    pub version: i64,
    /// Migrations this binary would still apply.
    pub pending: usize,
    /// Why `ok` is false, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Database {
    pub async fn state(&self) -> DbState {
        let backend = self.backend();
        let unreachable = |e: String| DbState {
            backend,
            ok: false,
            version: 0,
            pending: 0,
            error: Some(e),
        };
        if let Err(e) = self.ping().await {
            return unreachable(format!("database does not answer: {e}"));
        }
        match self.migration_status().await {
            Ok(s) => DbState {
                backend,
                ok: s.pending == 0,
                version: s.version,
                pending: s.pending,
                error: (s.pending > 0).then(|| {
                    format!(
                        "{} migration(s) pending; run `poolkeeper migrate`",
                        s.pending
                    )
                }),
            },
            Err(e) => unreachable(format!("cannot read migration state: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(db: &UsersDb) -> &Arc<Writer> {
        match &db.0.conn {
            Conn::Sqlite { write, .. } => write,
            Conn::Postgres(_) => unreachable!("a SQLite test database"),
        }
    }

    async fn write(db: &UsersDb, sql: &'static str) {
        let mut w = writer(db).lock().await.unwrap();
        sqlx::query(sql).execute(&mut *w).await.unwrap();
    }

    async fn users_db(dir: &tempfile::TempDir) -> UsersDb {
        let url = format!("sqlite:{}", dir.path().join("users.db").display());
        let db = UsersDb::open(&url, &OpenOptions::default()).await.unwrap();
        write(
            &db,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        )
        .await;
        db
    }

    async fn values(db: &UsersDb) -> Vec<String> {
        let Conn::Sqlite { read, .. } = &db.0.conn else {
            unreachable!("a SQLite test database")
        };
        sqlx::query_scalar("SELECT v FROM t ORDER BY id")
            .fetch_all(read)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_long_log_is_started_again_by_a_restart_that_takes_its_turn_on_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = users_db(&dir).await;
        let url = format!("sqlite:{}", dir.path().join("users.db").display());
        let mut conn = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..20 {
            write(&db, "INSERT INTO t (v) VALUES (hex(randomblob(2000)))").await;
        }
        assert!(passive_checkpoint(&mut conn).await.unwrap() >= 20);
        // Under its limit the log is only copied.
        assert!(!checkpoint(&mut conn, writer(&db), 1_000).await.unwrap());

        // Past it, the restart waits while a write holds the writer...
        let held = writer(&db).lock().await.unwrap();
        let restart = tokio::spawn({
            let writer = writer(&db).clone();
            async move {
                let restarted = checkpoint(&mut conn, &writer, 10).await.unwrap();
                (restarted, conn)
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !restart.is_finished(),
            "the restart went ahead of the writer"
        );
        drop(held);
        let (restarted, mut conn) = restart.await.unwrap();
        assert!(restarted);

        // ...and the next write starts the log from its beginning.
        write(&db, "INSERT INTO t (v) VALUES ('after')").await;
        let logged = passive_checkpoint(&mut conn).await.unwrap();
        assert!((1..=3).contains(&logged), "{logged} pages in the log");
        assert_eq!(values(&db).await.len(), 21);
    }

    /// Waits up to 5 s for `done`.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn the_log_is_written_back_after_writes_only_and_the_thread_ends_with_its_writer() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (tell, told) = std::sync::mpsc::sync_channel(1);
        let passes = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let passes = passes.clone();
            move || {
                write_back_after_writes(&told, Duration::from_millis(5), || {
                    passes.fetch_add(1, SeqCst);
                })
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            passes.load(SeqCst),
            0,
            "nothing was written, nothing written back"
        );

        tell.try_send(()).unwrap();
        assert!(
            eventually(|| passes.load(SeqCst) == 1),
            "a write is written back"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            passes.load(SeqCst),
            1,
            "and at rest again, the log is left alone"
        );

        tell.try_send(()).unwrap();
        assert!(
            eventually(|| passes.load(SeqCst) == 2),
            "the next write too"
        );

        drop(tell);
        assert!(eventually(|| thread.is_finished()), "the thread ends");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_database_file_has_its_log_written_back_and_one_in_memory_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let db = users_db(&dir).await;
        assert!(writer(&db).writeback.is_some());
        // The call the thread makes, on the log the writes above appended to.
        let log = std::fs::File::open(dir.path().join("users.db-wal")).unwrap();
        assert!(log.metadata().unwrap().len() > 0);
        start_writeback(&log).unwrap();

        let memory = UsersDb::open("sqlite::memory:", &OpenOptions::default())
            .await
            .unwrap();
        assert!(writer(&memory).writeback.is_none());
    }

    #[tokio::test]
    async fn a_spelled_transaction_left_open_is_rolled_back_before_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = users_db(&dir).await;
        {
            let mut tx = writer(&db).spelled().await.unwrap();
            let rows: Vec<(i64,)> = tx
                .fetch_all(sqlx::query_as(
                    "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('abandoned') RETURNING id",
                ))
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            // Dropped without its COMMIT, as when the caller's future is dropped half-way.
        }
        write(&db, "INSERT INTO t (v) VALUES ('next')").await;
        // The next write stands on its own: committed, and without the abandoned row.
        assert_eq!(values(&db).await, vec!["next".to_string()]);
    }

    #[tokio::test]
    async fn a_failed_spelled_transaction_keeps_nothing_and_a_finished_one_keeps_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = users_db(&dir).await;
        let mut tx = writer(&db).spelled().await.unwrap();
        let failed = tx
            .fetch_all(sqlx::query_as::<_, (i64,)>(
                "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('first'); \
                 INSERT INTO t (v) VALUES (NULL); COMMIT",
            ))
            .await;
        assert!(failed.is_err(), "the NULL breaks the second insert");
        drop(tx);
        assert!(values(&db).await.is_empty(), "the first insert was undone");

        let mut tx = writer(&db).spelled().await.unwrap();
        tx.fetch_all(sqlx::query_as::<_, (i64,)>(
            "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('a'); INSERT INTO t (v) VALUES ('b'); \
             COMMIT",
        ))
        .await
        .unwrap();
        tx.committed();
        assert_eq!(values(&db).await, vec!["a".to_string(), "b".to_string()]);
    }
}
