//! Benchmarks that print one JSON line; nothing here is used by the server.
//!
//! - `poolkeeper bench pool`: fills a fresh pool database and times the queries behind the mothers
//!   list (first and last page, with usage), a name search and the stats endpoint.
//! - `poolkeeper bench sync`: syncs simulated mothers with auto-invite through the job queue.
//! - `poolkeeper bench leases`: acquire/release cycles over HTTP from many workers, checking that
//!   no account is lent twice at once.
//! - `poolkeeper bench redeem`: many clients redeem more codes than there are seats over HTTP,
//!   checking that exactly the seats are handed out and nothing is oversold.
//!
//! (`bench jobs` lives with the queue, in `jobs::bench`.)

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::crypto::{Credential, Keyring};
use crate::db::{OpenOptions, PoolDb};
use crate::store::bench_fill;
use crate::store::mothers::{self, MotherFilter};

#[derive(Args, Debug, Clone)]
pub struct PoolBenchArgs {
    /// Mothers to create (7 seats each).
    #[arg(long, default_value_t = 10_000)]
    pub mothers: i64,
    /// Pool database to fill; it must hold no mothers [default: SQLite in a new temp dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Timed runs of each query.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
}

/// The value at share `p` (0.0-1.0) of an ascending slice; `None` when it is empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let idx = (last as f64 * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(idx.min(last)).copied()
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn time<F, Fut>(iterations: usize, mut f: F) -> anyhow::Result<serde_json::Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // One untimed run warms caches and the statement cache.
    f().await?;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f().await?;
        samples.push(start.elapsed());
    }
    samples.sort();
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(json!({
        "p50_ms": round(percentile_ms(&samples, 0.50)),
        "p99_ms": round(percentile_ms(&samples, 0.99)),
    }))
}

pub async fn pool(args: &PoolBenchArgs) -> anyhow::Result<()> {
    if args.mothers < 1 || args.iterations < 1 {
        anyhow::bail!("--mothers and --iterations must be at least 1");
    }
    let temp = tempfile_dir()?;
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", temp.join("pool.db").display()),
    };
    let db = PoolDb::open(&url, &OpenOptions::default()).await?;
    db.database().migrate().await?;
    if bench_fill::count_mothers(&db).await? > 0 {
        anyhow::bail!("the bench database already holds mothers; give it a fresh database");
    }
    let keyring = Keyring::parse(&Keyring::generate_key_text())?;
    let sealed = keyring.seal(&Credential::new("bench-credential"))?;
    let now = crate::clock::system().now_ms();
    let fill_start = Instant::now();
    let mut next = 1;
    while next <= args.mothers {
        let count = bench_fill::BATCH.min(args.mothers - next + 1);
        bench_fill::insert_mothers(&db, next, count, 7, &sealed, now).await?;
        next += count;
    }
    // Housekeeping folds the tallies within a minute of a change; the bench does not wait for it.
    crate::store::tallies::compact(&db).await?;
    bench_fill::analyze(&db).await?;
    let fill_seconds = fill_start.elapsed().as_secs_f64();
    let result = run_queries(&db, args).await;
    db.database().close().await;
    // Made even when a database URL leaves it unused.
    let _ = std::fs::remove_dir_all(&temp);
    let (first, deep, search, stats) = result?;
    let line = json!({
        "bench": "pool",
        "backend": db.database().backend().as_str(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "mothers": args.mothers,
        "seats_per_mother": 7,
        "iterations": args.iterations,
        "fill_seconds": (fill_seconds * 100.0).round() / 100.0,
        "list_first_page": first,
        "list_deep_page": deep,
        "search": search,
        "stats": stats,
    });
    println!("{line}");
    Ok(())
}

type Figures = (
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
);

async fn run_queries(db: &PoolDb, args: &PoolBenchArgs) -> anyhow::Result<Figures> {
    let page_size = 50;
    let all = MotherFilter::default();
    let last_offset = ((args.mothers - 1) / page_size) * page_size;
    let first = time(args.iterations, || async {
        mothers::list_with_usage(db, &all, page_size, 0).await?;
        Ok(())
    })
    .await?;
    let deep = time(args.iterations, || async {
        mothers::list_with_usage(db, &all, page_size, last_offset).await?;
        Ok(())
    })
    .await?;
    // A term in the middle of the names: matches about a tenth of a percent of them.
    let search_filter = MotherFilter {
        search: Some("-00012".into()),
        ..MotherFilter::default()
    };
    let search = time(args.iterations, || async {
        mothers::list_with_usage(db, &search_filter, page_size, 0).await?;
        Ok(())
    })
    .await?;
    let stats = time(args.iterations, || async {
        mothers::counts_by_status(db).await?;
        mothers::count_groups_and_children(db).await?;
        Ok(())
    })
    .await?;
    Ok((first, deep, search, stats))
}

/// A new directory under the system temp dir for the default SQLite bench database.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "poolkeeper-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `poolkeeper bench sync`.
#[derive(Args, Debug, Clone)]
pub struct SyncBenchArgs {
    /// Simulated mothers (7 seats each, one member besides the owner) in one pool group.
    #[arg(long, default_value_t = 1_000)]
    pub mothers: usize,
    /// Jobs run at the same time.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// A PostgreSQL server (postgres://USER@HOST:PORT/DB) on which the run creates two fresh
    /// databases, one for pool and one for users, and drops them at the end; the role needs
    /// CREATEDB [default: SQLite in a new temp dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// `url` with its database name replaced by `db` (the query string kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// Where a server-backed bench (`sync`, `leases`, `redeem`) keeps its instance: a data dir in a new
/// temp dir and, with `--database-url`, two fresh PostgreSQL databases; [`BenchInstance::remove`]
/// takes both away.
struct BenchInstance {
    temp: std::path::PathBuf,
    scratch: Option<ScratchDatabases>,
}

impl BenchInstance {
    async fn new(database_url: Option<&str>) -> anyhow::Result<Self> {
        let temp = tempfile_dir()?;
        let scratch = match database_url {
            Some(url) => Some(ScratchDatabases::create(url).await?),
            None => None,
        };
        Ok(Self { temp, scratch })
    }

    /// The configuration of a server on this instance, listening on a free loopback port.
    fn config(&self) -> crate::config::Config {
        let url = |i| {
            self.scratch
                .as_ref()
                .and_then(|s| s.url(i))
                .map(crate::config::Secret::new)
        };
        crate::config::Config {
            data_dir: self.temp.clone(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_password: Some(crate::config::Secret::new("bench-admin-password")),
            pool_database_url: url(0),
            users_database_url: url(1),
            ..Default::default()
        }
    }

    async fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.temp);
        if let Some(scratch) = self.scratch {
            scratch.drop_all().await;
        }
    }
}

/// Fresh PostgreSQL databases for one bench run, dropped by [`ScratchDatabases::drop_all`].
struct ScratchDatabases {
    server_url: String,
    names: Vec<String>,
}

impl ScratchDatabases {
    async fn create(server_url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        anyhow::ensure!(
            crate::db::is_postgres_url(server_url),
            "--database-url must be a postgres:// URL"
        );
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = sqlx::PgConnection::connect(server_url).await.map_err(|e| {
            anyhow::anyhow!("connecting to {}: {e}", crate::db::redact_url(server_url))
        })?;
        let mut out = Self {
            server_url: server_url.to_string(),
            names: Vec::new(),
        };
        for kind in ["pool", "users"] {
            let name = format!("poolkeeper_bench_{}_{kind}", &tag[..12]);
            // The name is made here of [a-z0-9_] only.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            out.names.push(name);
        }
        conn.close().await.ok();
        Ok(out)
    }

    fn url(&self, i: usize) -> Option<String> {
        self.names
            .get(i)
            .map(|n| with_database(&self.server_url, n))
    }

    async fn drop_all(&self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.server_url).await {
            for name in &self.names {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                {
                    eprintln!("could not drop the bench database {name}: {e}");
                }
            }
        }
    }
}

/// Seats of each benchmark mother.
const SYNC_BENCH_SEATS: i64 = 7;

/// Syncs `--mothers` simulated mothers with auto-invite through the job queue, on SQLite in a new
/// temp dir (or in two fresh PostgreSQL databases with `--database-url`): one `sync/all` of their group (timed from the enqueue to the last job finished), then
/// a second one, which must change nothing. Checks the outcome and prints one JSON line.
pub async fn sync(args: &SyncBenchArgs) -> anyhow::Result<()> {
    use crate::jobs::{self, pool_sync};
    use crate::providers::sim::{SimMember, SimOrg};
    use crate::providers::{MemberStatus, Provider};

    anyhow::ensure!(
        args.mothers >= 1 && (1..=1024).contains(&args.workers),
        "--mothers must be at least 1 and --workers between 1 and 1024"
    );
    let instance = BenchInstance::new(args.database_url.as_deref()).await?;
    let mut config = instance.config();
    config.child_email_domain = Some("bench.test".into());
    config.jobs.concurrency = args.workers;
    config.jobs.batch_size = args.workers.max(100);
    config.jobs.poll_interval_ms = 5;
    let clock = crate::clock::system();
    let result = async {
        let (app, _) = crate::server::prepare(config, clock.clone()).await?;
        let setup_start = Instant::now();
        let group = crate::service::pool_groups::create(app.pool_ctx(), "bench", None, Some(true))
            .await
            .map_err(|e| anyhow::anyhow!("creating the group: {}", e.message))?;
        for i in 0..args.mothers {
            let name = format!("bench-{i:05}");
            let credential = Credential::new(format!("bench-credential-{i}"));
            let mut org = SimOrg::new(&name, &format!("owner@{name}.test"), SYNC_BENCH_SEATS + 1);
            org.teams[0].members.push(SimMember {
                email: format!("member@{name}.test"),
                name: "Member".into(),
                status: MemberStatus::Active,
            });
            app.providers.sim.put_org(&credential, org)?;
            let input = crate::domain::mothers::MotherInput {
                name,
                provider: "sim".into(),
                credential,
                provider_config: None,
                seat_limit: Some(SYNC_BENCH_SEATS),
                pool_group_id: Some(group.id),
                notes: None,
                teams: None,
            };
            crate::service::mothers::create(app.pool_ctx(), input)
                .await
                .map_err(|e| anyhow::anyhow!("creating a mother: {}", e.message))?;
        }
        let setup_seconds = setup_start.elapsed().as_secs_f64();

        let mut handlers = jobs::Handlers::default();
        pool_sync::register(&mut handlers, app.clone());
        let runner = jobs::runner::Runner::new(
            app.users.clone(),
            handlers,
            jobs::runner::RunnerConfig::from_config(&app.config.jobs),
            clock.clone(),
        )
        .start();
        let run = |label: &'static str| {
            let app = app.clone();
            async move {
                let start = Instant::now();
                let session_id =
                    crate::service::pool_sync::sync_group(&app, group.id, "manual_batch", "bench")
                        .await
                        .map_err(|e| anyhow::anyhow!("{label}: {}", e.message))?
                        .session_id;
                // The session's own row says when its last record ended: counting the queue's
                // jobs instead cost the database more, the more mothers there were.
                while crate::store::sync_sessions::status(&app.pool, &session_id).await? == "running" {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let seconds = start.elapsed().as_secs_f64();
                // The last jobs write their completion just after their records end.
                while crate::store::jobs::live_counts(&app.users).await? != (0, 0) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let detail = crate::store::sync_sessions::get(&app.pool, &session_id).await?;
                anyhow::ensure!(
                    detail.session.status == "completed"
                        && detail.session.successful == args.mothers as i64,
                    "{label}: session {} ended {} with {} of {} records successful",
                    session_id,
                    detail.session.status,
                    detail.session.successful,
                    args.mothers
                );
                anyhow::Ok((seconds, detail.records))
            }
        };
        let (sync_seconds, first) = run("first sync").await?;
        let (resync_seconds, second) = run("second sync").await?;
        runner.shutdown().await;

        // What the provider saw, and what the second run did (nothing).
        let (mut renames, mut invites, mut members) = (0, 0, 0);
        for i in 0..args.mothers {
            let credential = Credential::new(format!("bench-credential-{i}"));
            let org = app
                .providers
                .sim
                .org(&credential)?
                .ok_or_else(|| anyhow::anyhow!("organisation {i} is gone"))?;
            renames += org.renames;
            invites += org.invites_sent;
            members += app.providers.sim.list_members(&credential, &org.teams[0].id).await?.len();
        }
        let first_changes: i64 = first.iter().map(|r| r.items_synced).sum();
        let second_changes: i64 = second.iter().map(|r| r.items_synced).sum();
        let expected_invites = (SYNC_BENCH_SEATS as u64 - 1) * args.mothers as u64;
        anyhow::ensure!(
            invites == expected_invites && second_changes == 0,
            "expected {expected_invites} invites and an idle second run, got {invites} and {second_changes} changes"
        );
        let mut latencies = crate::store::jobs::succeeded_latencies(&app.users).await?;
        latencies.sort_unstable();
        let pct = |p: f64| percentile(&latencies, p).unwrap_or(0);
        let report = json!({
            "bench": "sync",
            "backend": app.pool.database().backend().as_str(),
            "mothers": args.mothers,
            "seats_per_mother": SYNC_BENCH_SEATS,
            "workers": args.workers,
            "setup_seconds": setup_seconds,
            "sync_seconds": sync_seconds,
            "mothers_per_sec": args.mothers as f64 / sync_seconds.max(1e-9),
            "resync_seconds": resync_seconds,
            "teams_renamed": renames,
            "first_run_changes": first_changes,
            "invites_sent": invites,
            "provider_members": members,
            "second_run_changes": second_changes,
            "job_latency_p50_ms": pct(0.50),
            "job_latency_p99_ms": pct(0.99),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        });
        app.pool.database().close().await;
        app.users.database().close().await;
        println!("{report}");
        anyhow::Ok(())
    }
    .await;
    instance.remove().await;
    result
}

/// `poolkeeper bench leases`.
#[derive(Args, Debug, Clone)]
pub struct LeasesBenchArgs {
    /// Credential accounts in the pool.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Workers acquiring and releasing at the same time, each over its own HTTP requests.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Acquire/release cycles in all.
    #[arg(long, default_value_t = 10_000)]
    pub cycles: usize,
    /// A PostgreSQL server (postgres://USER@HOST:PORT/DB) on which the run creates two fresh
    /// databases and drops them at the end; the role needs CREATEDB [default: SQLite in a new
    /// temp dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Connections per database (`database_max_connections`) [default: the configuration's default].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// Start the cycles on a fixed schedule, this many a second in all, instead of each worker
    /// starting its next cycle the moment the last one ends. An acquire's time then counts from
    /// when its cycle was due, so a cycle started late (a worker still busy, a timer firing late)
    /// counts its wait too [default: as fast as the workers go].
    #[arg(long, value_name = "CYCLES_PER_SEC")]
    pub rate: Option<f64>,
}

/// What the bench itself saw of who holds which account. An account is marked held from the
/// acquire's answer until just before its release is sent: inside the time the server holds the
/// lease, so two marks at once are two leases at once, never a false alarm.
#[derive(Default)]
struct Holdings {
    held: std::sync::Mutex<std::collections::HashSet<i64>>,
    double_leases: std::sync::atomic::AtomicU64,
}

impl Holdings {
    fn take(&self, account: i64) {
        let fresh = self
            .held
            .lock()
            .map(|mut h| h.insert(account))
            .unwrap_or(false);
        if !fresh {
            self.double_leases
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn give_back(&self, account: i64) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&account);
        }
    }
}

/// One bench worker's HTTP/1.1 connection to the server, kept alive for all its requests. The lease
/// bench measures the server, which shares these cores with its clients: a general-purpose client
/// (connection pool, redirect and retry layers, URL parsing per request) took a fifth of a run's
/// time, so each worker speaks plain HTTP/1.1 over its own connection instead.
struct BenchConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<axum::body::Bytes>>,
    authorization: axum::http::HeaderValue,
}

impl BenchConnection {
    async fn open(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            authorization: format!("Bearer {token}").parse()?,
        })
    }

    /// POSTs `body` (JSON text) to `path`: the answer's status and body.
    async fn post(
        &mut self,
        path: &str,
        body: axum::body::Bytes,
    ) -> anyhow::Result<(u16, axum::body::Bytes)> {
        use axum::http::header;
        use http_body_util::BodyExt;
        let request = axum::http::Request::post(path)
            .header(header::HOST, "127.0.0.1")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }
}

/// One bench worker: its connection, the bodies it sends (serialized once; a clone shares them),
/// and the record of who holds what.
struct LeaseWorker {
    server: BenchConnection,
    acquire: axum::body::Bytes,
    release: axum::body::Bytes,
    holdings: std::sync::Arc<Holdings>,
}

impl LeaseWorker {
    /// One cycle: acquire (again while every account is lent), hold, release. The acquire's time
    /// counts from `due` when the cycle had one (see `--rate`), else from its request.
    async fn cycle(
        &mut self,
        figures: &mut WorkerFigures,
        due: Option<Instant>,
    ) -> anyhow::Result<()> {
        let (lease, account) = loop {
            let t = due.unwrap_or_else(Instant::now);
            let (status, answer) = self
                .server
                .post("/api/pool/leases", self.acquire.clone())
                .await?;
            let grant: serde_json::Value = serde_json::from_slice(&answer)?;
            match status {
                201 => {
                    figures.acquire.push(t.elapsed());
                    let lease = grant["lease_id"].as_str().map(str::to_string);
                    let account = grant["account"]["id"].as_i64();
                    match (lease, account) {
                        (Some(l), Some(a)) => break (l, a),
                        _ => anyhow::bail!("acquire answered {grant}"),
                    }
                }
                503 => {
                    figures.unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                other => anyhow::bail!("acquire answered {other}: {grant}"),
            }
        };
        self.holdings.take(account);
        // Let other workers run while this one holds the account.
        tokio::task::yield_now().await;
        self.holdings.give_back(account);
        let t = Instant::now();
        let path = format!("/api/pool/leases/{id}/release", id = lease);
        let (status, answer) = self.server.post(&path, self.release.clone()).await?;
        let released: serde_json::Value = serde_json::from_slice(&answer)?;
        anyhow::ensure!(status == 200, "release answered {status}: {released}");
        figures.release.push(t.elapsed());
        match (
            released["account_id"].as_i64(),
            released["acquired_at"].as_i64(),
            released["released_at"].as_i64(),
        ) {
            (Some(a), Some(from), Some(to)) => figures.spans.push((a, from, to)),
            _ => anyhow::bail!("release answered {released}"),
        }
        Ok(())
    }
}

/// One worker's figures.
#[derive(Default)]
struct WorkerFigures {
    acquire: Vec<Duration>,
    /// With `--rate`: how late each cycle started, after the time it was due.
    late: Vec<Duration>,
    release: Vec<Duration>,
    unavailable: u64,
    /// (account, acquired_at, released_at) of every lease, as the server reported it.
    spans: Vec<(i64, i64, i64)>,
}

/// Pairs of leases of one account whose server-reported spans overlap. The server reads `now`
/// before it lends or releases, and lends an account only once its release's time has come, so
/// a correct run has none (one lease may begin in the millisecond the previous one ended).
fn overlapping_leases(mut spans: Vec<(i64, i64, i64)>) -> u64 {
    spans.sort_unstable();
    spans
        .windows(2)
        .filter(|w| w[0].0 == w[1].0 && w[1].1 < w[0].2)
        .count() as u64
}

/// When cycle `n` of a run begun at `begin` is due at `rate` cycles a second.
fn due_at(begin: Instant, n: usize, rate: f64) -> Instant {
    begin + Duration::from_secs_f64(n as f64 / rate)
}

/// Runs `--cycles` acquire/release cycles over HTTP on loopback against an in-process server with
/// `--accounts` accounts (cooldown 0, so a released account can be lent again at once), from
/// `--workers` concurrent workers, each over its own connection and after one untimed cycle of
/// its own, as fast as they go or, with `--rate`, on a schedule; checks that no account was ever
/// held by two leases at once (warm-up cycles included) and prints one JSON line. Fails when a
/// double lease was seen or an answer was unexpected.
pub async fn leases(args: &LeasesBenchArgs) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    anyhow::ensure!(
        args.accounts >= 1 && (1..=4096).contains(&args.workers) && args.cycles >= 1,
        "--accounts and --cycles must be at least 1 and --workers between 1 and 4096"
    );
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && (1.0..=1_000_000.0).contains(&rate),
            "--rate must be between 1 and 1,000,000 cycles a second"
        );
    }
    let instance = BenchInstance::new(args.database_url.as_deref()).await?;
    let mut config = instance.config();
    config.leases.cooldown_seconds = 0;
    if let Some(n) = args.max_connections {
        anyhow::ensure!(n >= 1, "--max-connections must be at least 1");
        config.database_max_connections = n;
    }
    let result = async {
        let (app, _) = crate::server::prepare(config.clone(), crate::clock::system()).await?;
        let ctx = app.leasing_ctx();
        let mut next = 0;
        while next < args.accounts {
            let chunk = (args.accounts - next).min(crate::service::leasing::MAX_IMPORT_ROWS);
            let data: String = (next..next + chunk)
                .map(|i| format!("bench-{i:06}@bench.test,bench-password-{i},\n"))
                .collect();
            let req = crate::service::credential_accounts::ImportRequest {
                pool: None,
                format: Some("csv".into()),
                data,
            };
            crate::service::credential_accounts::import_accounts(ctx, req)
                .await
                .map_err(|e| anyhow::anyhow!("importing accounts: {}", e.message))?;
            next += chunk;
        }
        let (_, token) = crate::auth::create_api_token(
            &app.users,
            &app.clock,
            "bench-worker",
            crate::auth::Scope::Worker,
        )
        .await?;
        let backend = app.pool.database().backend();
        let server = crate::server::start(app, config.listen).await?;
        let addr = server.addr;
        let holdings = Arc::new(Holdings::default());
        let started = Arc::new(AtomicUsize::new(0));
        // Every worker connects and runs one cycle before the clock starts, so that the figures
        // are of a server at work: not of 64 connections opening at once, nor of statements
        // being compiled for their first batch.
        let warmed_up = Arc::new(tokio::sync::Barrier::new(args.workers + 1));
        // The timed run begins when the barrier opens; whoever passes it first notes the moment.
        let begin = Arc::new(std::sync::OnceLock::new());
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..args.workers {
            let token = token.clone();
            let (holdings, started, cycles) = (holdings.clone(), started.clone(), args.cycles);
            let (warmed_up, begin, rate) = (warmed_up.clone(), begin.clone(), args.rate);
            tasks.spawn(async move {
                let warm_up = async {
                    let mut worker = LeaseWorker {
                        server: BenchConnection::open(addr, &token).await?,
                        acquire: json!({"worker": format!("bench-{w}"), "ttl_seconds": 600})
                            .to_string()
                            .into(),
                        release: json!({"result": "success"}).to_string().into(),
                        holdings,
                    };
                    let mut untimed = WorkerFigures::default();
                    worker.cycle(&mut untimed, None).await?;
                    anyhow::Ok((worker, untimed.spans))
                }
                .await;
                // Wait for the others even after a failure, so that none waits forever.
                warmed_up.wait().await;
                let begin = *begin.get_or_init(Instant::now);
                let (mut worker, spans) = warm_up?;
                let mut figures = WorkerFigures {
                    spans,
                    ..Default::default()
                };
                loop {
                    let n = started.fetch_add(1, Ordering::SeqCst);
                    if n >= cycles {
                        break;
                    }
                    let due = rate.map(|r| due_at(begin, n, r));
                    if let Some(due) = due {
                        tokio::time::sleep_until(due.into()).await;
                        figures.late.push(due.elapsed());
                    }
                    worker.cycle(&mut figures, due).await?;
                }
                anyhow::Ok(figures)
            });
        }
        warmed_up.wait().await;
        let begin = *begin.get_or_init(Instant::now);
        let mut all = WorkerFigures::default();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(f) => {
                    all.acquire.extend(f.acquire);
                    all.late.extend(f.late);
                    all.release.extend(f.release);
                    all.unavailable += f.unavailable;
                    all.spans.extend(f.spans);
                }
                Err(e) => failure = Some(e),
            }
        }
        let seconds = begin.elapsed().as_secs_f64();
        server.shutdown().await?;
        if let Some(e) = failure {
            return Err(e);
        }
        all.acquire.sort();
        all.release.sort();
        all.late.sort();
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        let seen_live = holdings
            .double_leases
            .load(std::sync::atomic::Ordering::SeqCst);
        let in_records = overlapping_leases(std::mem::take(&mut all.spans));
        let double_leases = seen_live + in_records;
        let report = json!({
            "bench": "leases",
            "backend": backend.as_str(),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "accounts": args.accounts,
            "workers": args.workers,
            "max_connections": config.database_max_connections,
            "cycles": all.acquire.len(),
            "rate": args.rate,
            "cooldown_seconds": 0,
            "seconds": round(seconds),
            "cycles_per_sec": round(all.acquire.len() as f64 / seconds.max(1e-9)),
            "acquire_p50_ms": round(percentile_ms(&all.acquire, 0.50)),
            "acquire_p99_ms": round(percentile_ms(&all.acquire, 0.99)),
            "release_p50_ms": round(percentile_ms(&all.release, 0.50)),
            "release_p99_ms": round(percentile_ms(&all.release, 0.99)),
            "start_late_p50_ms": args.rate.map(|_| round(percentile_ms(&all.late, 0.50))),
            "start_late_p99_ms": args.rate.map(|_| round(percentile_ms(&all.late, 0.99))),
            "unavailable_answers": all.unavailable,
            "double_leases": double_leases,
            "double_leases_seen_live": seen_live,
            "double_leases_in_records": in_records,
        });
        println!("{report}");
        anyhow::ensure!(
            double_leases == 0,
            "{double_leases} time(s) an account was held by two leases at once"
        );
        anyhow::Ok(())
    }
    .await;
    instance.remove().await;
    result
}

/// `poolkeeper bench redeem`.
#[derive(Args, Debug, Clone)]
pub struct RedeemBenchArgs {
    /// Free seats in all, over simulated mothers of up to 50 seats each.
    #[arg(long, default_value_t = 200)]
    pub seats: usize,
    /// Codes, each redeemed once by its own address.
    #[arg(long, default_value_t = 1_000)]
    pub codes: usize,
    /// Clients redeeming at the same time, each over its own HTTP requests.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// A PostgreSQL server (postgres://USER@HOST:PORT/DB) on which the run creates two fresh
    /// databases and drops them at the end; the role needs CREATEDB [default: SQLite in a new
    /// temp dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Seats of one `bench redeem` mother at most.
const REDEEM_BENCH_SEATS_PER_MOTHER: usize = 50;

/// One client's figures.
#[derive(Default)]
struct RedeemFigures {
    latencies: Vec<Duration>,
    successes: u64,
    no_seat: u64,
}

/// Redeems `--codes` codes for `--seats` seats over HTTP on loopback against an in-process server
/// (simulated provider, redeem limit raised out of the way), from `--concurrency` clients, each
/// code with its own address; then counts what was oversold: seats used beyond a mother's limit,
/// codes used without a seat, invites beyond the seats at the provider. Prints one JSON line; fails
/// when the successes are not exactly the seats or anything was oversold.
pub async fn redeem(args: &RedeemBenchArgs) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::providers::sim::SimOrg;

    anyhow::ensure!(
        args.seats >= 1 && args.codes >= 1 && (1..=4096).contains(&args.concurrency),
        "--seats and --codes must be at least 1 and --concurrency between 1 and 4096"
    );
    let instance = BenchInstance::new(args.database_url.as_deref()).await?;
    let mut config = instance.config();
    config.child_email_domain = Some("bench.test".into());
    // Every client comes from 127.0.0.1: the per-address limit must not be what is measured.
    config.redeem.per_hour = u32::try_from(args.codes)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    config.jobs.poll_interval_ms = 5;
    let result = async {
        let (app, _) = crate::server::prepare(config.clone(), crate::clock::system()).await?;
        let group = crate::service::pool_groups::create(app.pool_ctx(), "bench", None, None)
            .await
            .map_err(|e| anyhow::anyhow!("creating the group: {}", e.message))?;
        let mut mothers = Vec::new();
        let mut left = args.seats;
        while left > 0 {
            let seats = left.min(REDEEM_BENCH_SEATS_PER_MOTHER);
            left -= seats;
            let i = mothers.len();
            let name = format!("bench-{i:04}");
            let credential = Credential::new(format!("bench-credential-{i}"));
            let org = SimOrg::new(&name, &format!("owner@{name}.test"), seats as i64 + 1);
            app.providers.sim.put_org(&credential, org)?;
            let input = crate::domain::mothers::MotherInput {
                name,
                provider: "sim".into(),
                credential: credential.clone(),
                provider_config: None,
                seat_limit: Some(seats as i64),
                pool_group_id: Some(group.id),
                notes: None,
                teams: None,
            };
            let mother_id = crate::service::mothers::create(app.pool_ctx(), input)
                .await
                .map_err(|e| anyhow::anyhow!("creating a mother: {}", e.message))?;
            mothers.push((mother_id, credential));
        }
        let codes: Vec<String> = (0..args.codes).map(|i| format!("BENCH{i:011}")).collect();
        let rows: Vec<crate::store::redeem_codes::NewCode> = codes
            .iter()
            .map(|c| crate::store::redeem_codes::NewCode {
                code_hash: crate::auth::token_hash(c),
                prefix: c[..6].to_string(),
            })
            .collect();
        // More codes than seats: written straight to the store, past the generation quota.
        let now = app.clock.now_ms();
        crate::store::redeem_codes::insert_batch(&app.users, &rows, "bench", None, None, now)
            .await?;
        let backend = app.pool.database().backend();
        let server = crate::server::start(app.clone(), config.listen).await?;
        // One sync links each mother's team (through the server's own job runner).
        let session_id =
            crate::service::pool_sync::sync_group(&app, group.id, "manual_batch", "bench")
                .await
                .map_err(|e| anyhow::anyhow!("syncing the mothers: {}", e.message))?
                .session_id;
        while crate::store::jobs::live_counts(&app.users).await? != (0, 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let synced = crate::store::sync_sessions::get(&app.pool, &session_id).await?;
        anyhow::ensure!(
            synced.session.successful == mothers.len() as i64,
            "the sync of the bench mothers ended {}",
            synced.session.status
        );

        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?;
        let codes = Arc::new(codes);
        let next = Arc::new(AtomicUsize::new(0));
        let begin = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency {
            let (client, base, codes, next) =
                (client.clone(), base.clone(), codes.clone(), next.clone());
            tasks.spawn(async move {
                let mut figures = RedeemFigures::default();
                let url = format!("{base}/api/redeem");
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(code) = codes.get(i) else { break };
                    let body = json!({"code": code, "email": format!("user{i:06}@bench.test")});
                    let t = Instant::now();
                    let res = client.post(&url).json(&body).send().await?;
                    let status = res.status().as_u16();
                    let answer: serde_json::Value = res.json().await.unwrap_or_default();
                    figures.latencies.push(t.elapsed());
                    match (status, answer["error"]["code"].as_str()) {
                        (200, _) => figures.successes += 1,
                        (503, Some("no_seat_available")) => figures.no_seat += 1,
                        _ => anyhow::bail!("redeem answered {status}: {answer}"),
                    }
                }
                anyhow::Ok(figures)
            });
        }
        let mut all = RedeemFigures::default();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(f) => {
                    all.latencies.extend(f.latencies);
                    all.successes += f.successes;
                    all.no_seat += f.no_seat;
                }
                Err(e) => failure = Some(e),
            }
        }
        let seconds = begin.elapsed().as_secs_f64();
        if let Some(e) = failure {
            server.shutdown().await?;
            return Err(e);
        }

        // What was handed out, from the databases and the provider (before the server stops:
        // stopping closes the databases).
        let (mut beyond_limit, mut seats_used, mut seats_held, mut invites) = (0, 0, 0, 0);
        let mut capacity = 0;
        for (id, credential) in &mothers {
            let m = crate::store::mothers::get(&app.pool, *id).await?;
            beyond_limit += (m.usage.seats_used - m.seat_limit).max(0);
            seats_used += m.usage.seats_used;
            seats_held += m.usage.seats_held;
            capacity += m.seat_limit;
            if let Some(org) = app.providers.sim.org(credential)? {
                invites += org.invites_sent as i64;
            }
        }
        let statuses: std::collections::BTreeMap<String, i64> =
            crate::store::redeem_codes::count_by_status(&app.users)
                .await?
                .into_iter()
                .collect();
        let codes_used = statuses.get("used").copied().unwrap_or(0);
        let codes_without_seat = (codes_used - seats_used).max(0);
        let invites_beyond_seats = (invites - capacity).max(0);
        server.shutdown().await?;
        let oversold = beyond_limit + codes_without_seat + invites_beyond_seats;
        all.latencies.sort();
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        let report = json!({
            "bench": "redeem",
            "backend": backend.as_str(),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "seats": args.seats,
            "codes": args.codes,
            "concurrency": args.concurrency,
            "mothers": mothers.len(),
            "seconds": round(seconds),
            "successes": all.successes,
            "no_seat": all.no_seat,
            "oversold": oversold,
            "seats_used_beyond_limit": beyond_limit,
            "codes_used_without_seat": codes_without_seat,
            "invites_beyond_seats": invites_beyond_seats,
            "seats_held_after": seats_held,
            "codes_unused_after": statuses.get("unused").copied().unwrap_or(0),
            "redeem_p50_ms": round(percentile_ms(&all.latencies, 0.50)),
            "redeem_p99_ms": round(percentile_ms(&all.latencies, 0.99)),
            "redeems_per_sec": round(all.latencies.len() as f64 / seconds.max(1e-9)),
        });
        println!("{report}");
        anyhow::ensure!(
            all.successes == args.seats as u64 && oversold == 0,
            "expected {} successes and nothing oversold, got {} successes and {oversold} oversold",
            args.seats,
            all.successes
        );
        anyhow::Ok(())
    }
    .await;
    instance.remove().await;
    result
}
