//! Starting and stopping poolkeeper: open and migrate both databases, make sure an admin exists,
//! serve HTTP until a shutdown signal, then drain in-flight requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{App, AppState};
use crate::auth;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::{OpenOptions, PoolDb, UsersDb};
use crate::jobs::{
    self,
    runner::{Runner, RunnerConfig, RunningRunner},
};
use crate::store;

pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";
pub const FIRST_ADMIN: &str = "admin";

/// Opens both databases (creating SQLite files and the data dir when `create`).
pub async fn open_databases(config: &Config, create: bool) -> anyhow::Result<(PoolDb, UsersDb)> {
    // The default SQLite files live in data_dir.
    if create && (config.pool_database_url.is_none() || config.users_database_url.is_none()) {
        crate::files::create_private_dir(&config.data_dir)
            .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    }
    let opts = OpenOptions {
        create,
        max_connections: config.database_max_connections,
    };
    let pool = PoolDb::open(&config.pool_database_url(), &opts).await?;
    let users = UsersDb::open(&config.users_database_url(), &opts).await?;
    Ok((pool, users))
}

/// Opens and migrates both databases.
pub async fn open_and_migrate(config: &Config) -> anyhow::Result<(PoolDb, UsersDb)> {
    let (pool, users) = open_databases(config, true).await?;
    pool.database().migrate().await?;
    users.database().migrate().await?;
    Ok((pool, users))
}

/// The admin created on first start, and where its password went.
pub struct FirstAdmin {
    pub username: String,
    /// Set when the password was generated (not given by `admin_password`).
    pub generated_password: Option<(String, PathBuf)>,
}

/// Creates `admin` when no admin exists: with `admin_password` if configured, else with a random
/// password written to `<data_dir>/initial-admin-password` (mode 0600).
pub async fn ensure_first_admin(
    config: &Config,
    users: &UsersDb,
    clock: &SharedClock,
) -> anyhow::Result<Option<FirstAdmin>> {
    if store::admins::count(users).await? > 0 {
        return Ok(None);
    }
    let (password, generated) = match &config.admin_password {
        Some(p) => {
            auth::check_new_password(p.expose())
                .map_err(|e| anyhow::anyhow!("configuration: admin_password: {e}"))?;
            (p.expose().to_string(), false)
        }
        None => (auth::random_password(), true),
    };
    let hash = auth::hash_password(password.clone()).await?;
    // Another process may have created the first admin meanwhile; then there is nothing to tell.
    if store::admins::create_first(users, FIRST_ADMIN, &hash, clock.now_ms())
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let generated_password = if generated {
        crate::files::create_private_dir(&config.data_dir)?;
        let path = config.data_dir.join(INITIAL_PASSWORD_FILE);
        write_private(&path, &format!("{password}\n"))?;
        Some((password, path))
    } else {
        None
    };
    Ok(Some(FirstAdmin {
        username: FIRST_ADMIN.to_string(),
        generated_password,
    }))
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// A server running in this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    metrics_task: Option<JoinHandle<std::io::Result<()>>>,
    pub app: AppState,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    runner: RunningRunner,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await??;
        if let Some(task) = self.metrics_task {
            task.await??;
        }
        self.runner.shutdown().await;
        self.app.pool.database().close().await;
        self.app.users.database().close().await;
        Ok(())
    }

    /// Waits until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Binds `listen`, serves `app` and runs jobs in the background.
pub async fn start(app: AppState, listen: SocketAddr) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let (shutdown, mut rx) = watch::channel(false);
    let (metrics_addr, metrics_task) = match app.config.metrics_listen {
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding metrics_listen {listen}"))?;
            let metrics_addr = listener.local_addr()?;
            let router = crate::http::metrics_router(app.clone());
            let mut stop = rx.clone();
            let task = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await
            });
            (Some(metrics_addr), Some(task))
        }
        None => (None, None),
    };
    spawn_maintenance(app.clone(), rx.clone());
    crate::backup::spawn_scheduler(app.clone(), rx.clone());
    jobs::scheduler::spawn(app.clone(), rx.clone(), |app| async move {
        crate::service::pool_sync::schedule_group_syncs(&app).await
    });
    let router = crate::http::router(app.clone());
    // The queue-depth gauge is exported from the start, as zeros until the runner's maintenance
    // samples the queue (within a second).
    for status in ["pending", "running"] {
        metrics::gauge!("jobs_queue_depth", "status" => status).set(0.0);
    }
    metrics::gauge!(crate::metrics::JOBS_OLDEST_PENDING_AGE).set(0.0);
    let mut handlers = jobs::builtin_handlers(app.config.jobs.diagnostic_handlers);
    jobs::pool_sync::register(&mut handlers, app.clone());
    jobs::invites::register(&mut handlers, app.clone());
    jobs::codes::register(&mut handlers, app.clone());
    jobs::webhooks::register(&mut handlers, app.webhooks.clone());
    // A failure counter that first appears at 1 is invisible to `increase()`, so the job-failure
    // alert would miss the first failure after a restart; every handled type starts at 0.
    for job_type in handlers.job_types() {
        metrics::counter!("jobs_finished_total", "type" => job_type, "status" => "failed")
            .increment(0);
    }
    let runner = Runner::new(
        app.users.clone(),
        handlers,
        RunnerConfig::from_config(&app.config.jobs),
        app.clock.clone(),
    )
    .with_webhooks(app.webhooks.clone())
    .start();
    // Answers are small and go out in one write: send them at once rather than wait (Nagle) for
    // the client's acknowledgement of the previous one.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await
    });
    Ok(RunningServer {
        addr,
        metrics_addr,
        metrics_task,
        app,
        shutdown,
        task,
        runner,
    })
}

/// Sync sessions older than this are removed (with their records).
pub const SYNC_SESSION_RETENTION_MS: i64 = 30 * 24 * 3_600_000;

/// Periodic housekeeping of this process: expired sessions, held seats past `held_until`, redeem
/// codes left reserved, expired leases, sync sessions and audit rows past retention, the tallies
/// folded, the daily seat snapshot of each pool group, metric upkeep, free seats crossing the
/// webhook threshold.
fn spawn_maintenance(app: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut exported = crate::metrics::ExportedSeries::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            app.metrics.run_upkeep();
            let now = app.clock.now_ms();
            if let Err(e) = store::sessions::delete_expired(&app.users, now).await {
                tracing::warn!(error = %e, "removing expired sessions failed");
            }
            // Every step is idempotent, so several processes may run it.
            match store::seats::expire_held(&app.pool, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(seats = n, "freed seats held past their time"),
                Err(e) => tracing::warn!(error = %e, "expiring held seats failed"),
            }
            match crate::service::redeem::settle_stale(&app).await {
                Ok((0, 0)) => {}
                Ok((used, unused)) => tracing::info!(
                    used,
                    unused,
                    "settled redeem codes left reserved by redeems that did not finish"
                ),
                Err(e) => {
                    tracing::warn!(error = %e.message, "settling reserved redeem codes failed")
                }
            }
            match crate::service::invites::counts(&app).await {
                Ok(c) => {
                    for (status, n) in &c.invites {
                        metrics::gauge!(crate::metrics::INVITES, "status" => status.clone())
                            .set(*n as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e.message, "counting invites failed"),
            }
            let policy = app.config.leases.policy();
            match crate::service::leasing::expire_overdue(&app.pool, now, &policy).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(leases = n, "closed leases past their expiry"),
                Err(e) => tracing::warn!(error = %e, "closing expired leases failed"),
            }
            if let Err(e) = crate::service::missions::expire_overdue(&app.pool, now, &policy).await
            {
                tracing::warn!(error = %e, "expiring mission claims failed");
            }
            crate::metrics::sample_pool_gauges(&app, &mut exported).await;
            if let Err(e) = crate::service::webhooks::check_free_seats(&app).await {
                tracing::warn!(error = %e.message, "checking free seats for webhooks failed");
            }
            if let Err(e) = store::tallies::compact(&app.pool).await {
                tracing::warn!(error = %e, "folding the mother tallies failed");
            }
            // Today's seat snapshot of each group that has none yet (a group created during the day
            // gets its row within a minute); groups that have one cost no read of their mothers.
            match crate::service::overview::take_seat_snapshots(&app.pool, now).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(groups = n, "took daily seat snapshots"),
                Err(e) => tracing::warn!(error = %e.message, "taking seat snapshots failed"),
            }
            match crate::service::audit::purge_expired(
                &app.users,
                &app.clock,
                app.config.audit.retention_days,
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "removed audit rows past retention"),
                Err(e) => tracing::warn!(error = %e.message, "removing old audit rows failed"),
            }
            let cutoff = now - SYNC_SESSION_RETENTION_MS;
            if let Err(e) = store::sync_sessions::delete_started_before(&app.pool, cutoff).await {
                tracing::warn!(error = %e, "removing old sync sessions failed");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Everything `serve` does before it accepts requests: open, migrate, first admin, state.
pub async fn prepare(
    config: Config,
    clock: SharedClock,
) -> anyhow::Result<(AppState, Option<FirstAdmin>)> {
    let keyring = crate::crypto::Keyring::from_config(&config)?;
    let (pool, users) = open_and_migrate(&config).await?;
    if !store::mothers::name_search_indexed(&pool).await? {
        tracing::warn!(
            "mother name search has no trigram index (the pg_trgm extension could not be created \
             when the pool database was migrated): searches scan every mother. Have a superuser \
             run CREATE EXTENSION pg_trgm and CREATE INDEX mothers_name_trgm ON mothers USING gin \
             (name gin_trgm_ops) in the pool database"
        );
    }
    let first = ensure_first_admin(&config, &users, &clock).await?;
    Ok((App::new(config, pool, users, clock, keyring), first))
}
