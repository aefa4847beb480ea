//! The command line: `serve`, `demo`, `migrate`, `admin`, `token`, `import`, `secrets`, `bench`,
//! `accounts`, `lease`, `backup`, `restore` (the last two in `crate::backup`). Parsing lives here; each command calls into the library (`import` and
//! `accounts import` in `crate::import`, `bench` in `crate::bench`, `lease exec` in
//! `crate::lease_exec`).

use crate::service::audit::Actor;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::auth::{self, Role, Scope};
use crate::clock::{self, SharedClock};
use crate::config::{Config, Overrides, RunEnv};
use crate::server;
use crate::service;

#[derive(Parser, Debug)]
#[command(
    name = "poolkeeper",
    version,
    about = "Manage pools of provider accounts: seat pools, redeem codes, credential leases, jobs."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Configuration file (default: POOLKEEPER_CONFIG, else ./poolkeeper.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory for the embedded SQLite databases and generated files [default: ./data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Pool database URL (sqlite:PATH or postgres://...) [default: DATA_DIR/pool.db].
    #[arg(long, global = true, value_name = "URL")]
    pub pool_database_url: Option<String>,
    /// Users database URL (sqlite:PATH or postgres://...) [default: DATA_DIR/users.db].
    #[arg(long, global = true, value_name = "URL")]
    pub users_database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: migrate both databases, create the first admin if none exists, serve HTTP.
    Serve(ServeArgs),
    /// Run a demo on the embedded SQLite default in ./demo-data, with sample simulated organisations
    /// imported into a `demo` pool group and synced once; prints where to open it and the login.
    Demo(ServeArgs),
    /// Apply pending migrations to both databases, or with --check report whether any are pending.
    Migrate {
        /// Only report each database's state; exit 1 when one is behind or missing.
        #[arg(long)]
        check: bool,
    },
    /// Manage admin users.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect and steer the job queue.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Import records from a file.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Manage the master key that seals credentials.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Measure performance; each run prints one JSON line.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Credential accounts for leasing: import them, see their status.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Lease credential accounts from a running server, as a worker.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Write one consistent archive (zip) of both SQLite databases with a manifest, while the
    /// service runs. Secret keys are never in it; it prints the key ids a restore needs. Refuses on
    /// PostgreSQL (use pg_dump, see docs/postgresql.md).
    Backup {
        /// The archive to write; an existing file is never overwritten.
        file: PathBuf,
    },
    /// Restore an archive written by `backup` into an empty data directory: checks the manifest
    /// and checksums, refuses a schema newer than this binary, migrates an older one, and lists
    /// every sealed credential the configured keyring cannot open (exit code 1 when there is one).
    Restore {
        /// The archive to read.
        file: PathBuf,
    },
    /// The simulated provider (only while `providers.sim.enabled` is on: by default in
    /// development and the demo, not in production).
    #[command(subcommand)]
    Sim(SimCommand),
    /// Read and check the audit log (who changed what, when, from where).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the newest rows, oldest first, one JSON object a line; with --follow keep printing
    /// new rows as they are written (until interrupted).
    Tail {
        /// How many of the newest rows to print first.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: i64,
        /// Keep watching for new rows (checked every second).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Write the rows of a time range as JSON lines, oldest first, streamed a chunk at a time.
    Export {
        /// From this time on (inclusive): RFC 3339, a date (UTC) or milliseconds.
        #[arg(long)]
        from: Option<String>,
        /// Before this time (exclusive; a date includes that whole day).
        #[arg(long)]
        to: Option<String>,
    },
    /// Check the hash chain from the retention anchor (or the first row) to the newest row; exit 1
    /// and name the first broken link when one is found.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Make a simulated organisation with one team of N seats (its owner included) and print its
    /// new credential, which imports it as a `sim` mother (web UI "Import from credential", or
    /// `POST /api/admin/import-cookie`). Writes the simulator's state in the data dir.
    AddOrg {
        /// The organisation's name (the imported mother is named after it).
        name: String,
        /// Seats of its team, the owner's included (1-1000).
        #[arg(long)]
        seats: i64,
        /// Members besides the owner, comma-separated addresses.
        #[arg(long, value_delimiter = ',', value_name = "A@X,B@Y")]
        members: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Import credential accounts from CSV (`login,password,phone`, an optional header row naming
    /// further columns, which go into metadata; a `pool` column sets the pool) or JSON lines (one
    /// create body per line). Streams the file with a progress bar, creates the valid rows and
    /// prints a summary with every duplicate and refused row; exit code 1 when a row was refused
    /// (duplicates, logins already in their pool, are reported but do not fail the import).
    Import {
        /// The file to read; the format from the extension (.csv, .jsonl, .ndjson, .json), else
        /// from the first character.
        file: PathBuf,
        /// Pool for rows that name none [default: default].
        #[arg(long, value_name = "P")]
        pool: Option<String>,
    },
    /// Accounts by status now (total, available, in use, cooldown, quarantined, inactive).
    Status {
        /// Only this pool [default: all pools].
        #[arg(long, value_name = "P")]
        pool: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Lease an account from the server (worker token in POOLKEEPER_TOKEN), run COMMAND with
    /// POOLKEEPER_LOGIN, POOLKEEPER_PASSWORD, POOLKEEPER_PHONE and POOLKEEPER_LEASE_ID in its
    /// environment, renew the lease while it runs and release it with the result its exit status
    /// maps to: 0 success, 10 no_slot, 11 login_fail, 12 banned, anything else error. SIGINT and
    /// SIGTERM are passed to the command and release `error`. Exit code: the command's; 75 when no
    /// account became free within --wait; 127 when the command cannot start; 2 on other errors.
    Exec(crate::lease_exec::ExecArgs),
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs with this status (pending, running, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only jobs of this type.
        #[arg(long = "type")]
        job_type: Option<String>,
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page: i64,
        /// Jobs per page (at most 500).
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    /// Show one job with its payload, error and result (as JSON).
    Show { id: String },
    /// Make a failed or cancelled job pending again with a fresh attempt budget.
    Retry { id: String },
    /// Cancel a pending job, or ask a running one to stop.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Import mothers from a CSV file with a header row, or from JSON lines (one object per line).
    /// The format is taken from the extension (.csv, .jsonl, .ndjson, .json), else from the first line.
    /// Rows are checked like `POST /api/admin/mothers/batch/import`; exit code 1 when any row is refused.
    Mothers {
        /// The file to read (streamed, not loaded whole).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Re-seal every mother credential with the current key (the first key of the keyring).
    /// Exit code 1 when a credential cannot be opened with any key.
    Rotate,
    /// Print a new random master key (base64) for `secret_key` or a key file.
    NewKey,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Bulk-enqueue no-op jobs and drain them with concurrent workers; with `--latency`, time
    /// single jobs in an idle queue instead.
    Jobs {
        /// How many jobs [default: 100000; 1000 with --latency].
        #[arg(long)]
        jobs: Option<usize>,
        /// Jobs run at the same time.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Most jobs claimed or finished in one statement.
        #[arg(long, default_value_t = 1_000)]
        batch_size: usize,
        /// A scratch users database (sqlite:PATH or postgres://...); default a fresh SQLite file in a temp dir.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Enqueue jobs one at a time, each after the previous one finished, into an idle runner
        /// polling every second, and report enqueue-to-start and enqueue-to-finish percentiles.
        #[arg(long)]
        latency: bool,
        /// First load this many pending jobs that are due only an hour later, and run beside them.
        #[arg(long, value_name = "N", default_value_t = 0)]
        backlog: usize,
    },
    /// Fill a fresh pool database with mothers of 7 seats each, then time the mothers list with
    /// usage (first and last page), a search and the stats query.
    Pool(crate::bench::PoolBenchArgs),
    /// Sync simulated mothers of 7 seats with auto-invite (one group, `sync/all`, run twice)
    /// through the job queue, on SQLite in a temp dir or in fresh PostgreSQL databases.
    Sync(crate::bench::SyncBenchArgs),
    /// Acquire and release credential leases over HTTP on loopback against an in-process server,
    /// from many workers at once; checks that no account is ever lent twice at once.
    Leases(crate::bench::LeasesBenchArgs),
    /// Redeem codes over HTTP on loopback against an in-process server with simulated mothers,
    /// from many clients at once; checks that exactly `--seats` redeems succeed and nothing is
    /// oversold.
    Redeem(crate::bench::RedeemBenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an admin user. The password is read from stdin with --password-stdin, else generated and printed.
    Create {
        #[arg(long)]
        username: String,
        /// What the user may do: admin (everything), operator (run the pool, never see a secret),
        /// viewer (read only).
        #[arg(long, value_enum, default_value_t = Role::Admin)]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give an admin user another role (refused for the last active admin).
    SetRole {
        /// The admin user's name.
        username: String,
        #[arg(value_enum)]
        role: Role,
    },
    /// Disable an admin user: they cannot log in and their sessions end (refused for the last
    /// active admin).
    Disable {
        /// The admin user's name.
        username: String,
    },
    /// Let a disabled admin user log in again.
    Enable {
        /// The admin user's name.
        username: String,
    },
    /// Set a new password for an admin user and end their sessions.
    Passwd {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token; it is printed once and only its hash is stored.
    Create {
        /// A unique name for the token (who or what uses it).
        #[arg(long)]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        scope: Scope,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token by id or name.
    Revoke {
        /// The token's id or name.
        token: String,
    },
}

impl Cli {
    /// Settings from all layers, with this command line on top.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut overrides = Overrides {
            data_dir: self.global.data_dir.clone(),
            pool_database_url: self.global.pool_database_url.clone(),
            users_database_url: self.global.users_database_url.clone(),
            ..Overrides::default()
        };
        match &self.command {
            Command::Serve(args) => overrides.listen = args.listen,
            Command::Demo(args) => {
                overrides.listen = args.listen;
                overrides.env = Some(RunEnv::Development);
                if overrides.data_dir.is_none() {
                    overrides.data_dir = Some(PathBuf::from("./demo-data"));
                }
            }
            _ => {}
        }
        Config::load(self.global.config.as_deref(), &overrides)
    }
}

/// Runs a parsed command; the exit code is returned for commands that report a state.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = cli.config()?;
    let clock = clock::system();
    match cli.command {
        Command::Serve(_) => serve(config, clock, false).await.map(|_| 0),
        Command::Demo(_) => serve(config, clock, true).await.map(|_| 0),
        Command::Migrate { check: true } => migrate_check(&config).await,
        Command::Migrate { check: false } => {
            let (pool, users) = server::open_and_migrate(&config).await?;
            for db in [pool.database(), users.database()] {
                let s = db.migration_status().await?;
                println!(
                    "{}: {}, migrated to version {}",
                    db.name().as_str(),
                    db.backend().as_str(),
                    s.version
                );
            }
            Ok(0)
        }
        Command::Admin(cmd) => admin(&config, &clock, cmd).await.map(|_| 0),
        Command::Token(cmd) => token(&config, &clock, cmd).await.map(|_| 0),
        Command::Jobs(cmd) => jobs_command(&config, &clock, cmd).await,
        Command::Bench(BenchCommand::Jobs {
            jobs,
            workers,
            batch_size,
            database_url,
            latency,
            backlog,
        }) => {
            let jobs = jobs.unwrap_or(if latency { 1_000 } else { 100_000 });
            anyhow::ensure!(
                jobs > 0 && workers > 0 && batch_size > 0,
                "--jobs, --workers and --batch-size must be at least 1"
            );
            anyhow::ensure!(
                backlog <= 100_000_000,
                "--backlog must be at most 100000000"
            );
            let args = crate::jobs::bench::BenchJobs {
                jobs,
                workers,
                batch_size,
                database_url,
                latency,
                backlog,
            };
            let report = crate::jobs::bench::run(&args).await;
            crate::jobs::bench::cleanup();
            println!("{}", serde_json::to_string(&report?)?);
            Ok(0)
        }
        Command::Import(ImportCommand::Mothers { file }) => {
            crate::import::import_mothers(&config, &clock, &file).await
        }
        Command::Secrets(SecretsCommand::Rotate) => secrets_rotate(&config).await,
        Command::Secrets(SecretsCommand::NewKey) => {
            println!("{}", crate::crypto::Keyring::generate_key_text());
            Ok(0)
        }
        Command::Bench(BenchCommand::Pool(args)) => crate::bench::pool(&args).await.map(|_| 0),
        Command::Bench(BenchCommand::Sync(args)) => crate::bench::sync(&args).await.map(|_| 0),
        Command::Accounts(AccountsCommand::Import { file, pool }) => {
            crate::import::import_accounts(&config, &clock, &file, pool.as_deref()).await
        }
        Command::Accounts(AccountsCommand::Status { pool, json }) => {
            accounts_status(&config, &clock, pool, json).await
        }
        Command::Lease(LeaseCommand::Exec(args)) => crate::lease_exec::exec(&config, args).await,
        Command::Bench(BenchCommand::Leases(args)) => crate::bench::leases(&args).await.map(|_| 0),
        Command::Bench(BenchCommand::Redeem(args)) => crate::bench::redeem(&args).await.map(|_| 0),
        Command::Backup { file } => backup(&config, &clock, &file).await,
        Command::Restore { file } => restore(&config, &file).await,
        Command::Sim(SimCommand::AddOrg {
            name,
            seats,
            members,
        }) => sim_add_org(&config, name, seats, members).await,
        Command::Audit(cmd) => audit_command(&config, cmd).await,
    }
}

async fn audit_command(config: &Config, cmd: AuditCommand) -> anyhow::Result<i32> {
    use crate::service::audit as service;
    let (_, users) = server::open_and_migrate(config).await?;
    match cmd {
        AuditCommand::Tail { lines, follow } => {
            anyhow::ensure!(
                (0..=10_000).contains(&lines),
                "--lines must be between 0 and 10000"
            );
            let mut last = 0;
            for row in service::latest(&users, lines).await? {
                println!("{}", serde_json::to_string(&row)?);
                last = row.id;
            }
            if lines == 0 {
                // Start following after the newest row, without printing it.
                last = service::latest(&users, 1)
                    .await?
                    .first()
                    .map_or(0, |r| r.id);
            }
            if !follow {
                return Ok(0);
            }
            loop {
                let rows = service::after(&users, last).await?;
                if rows.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
                for row in rows {
                    println!("{}", serde_json::to_string(&row)?);
                    last = row.id;
                }
            }
        }
        AuditCommand::Export { from, to } => {
            let query = service::AuditQuery {
                from,
                to,
                ..Default::default()
            }
            .check()
            .map_err(|e| anyhow::anyhow!(e.message))?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = service::export(&users, &query, &mut out).await?;
            drop(out);
            eprintln!("exported {n} audit row(s)");
            Ok(0)
        }
        AuditCommand::Verify => {
            let report = service::verify(&users).await?;
            match &report.broken {
                None => {
                    println!(
                        "audit chain ok: {} row(s) checked{}",
                        report.checked,
                        if report.anchored_at > 0 {
                            format!(
                                ", starting after the retention anchor at row {}",
                                report.anchored_at
                            )
                        } else {
                            String::new()
                        }
                    );
                    Ok(0)
                }
                Some(b) => {
                    println!(
                        "audit chain broken at row {}: {} ({} row(s) before it verified)",
                        b.id, b.reason, report.checked
                    );
                    Ok(1)
                }
            }
        }
    }
}

async fn backup(
    config: &Config,
    clock: &SharedClock,
    file: &std::path::Path,
) -> anyhow::Result<i32> {
    if crate::db::is_postgres_url(&config.pool_database_url())
        || crate::db::is_postgres_url(&config.users_database_url())
    {
        anyhow::bail!("{}", crate::backup::POSTGRES_REFUSAL);
    }
    // Opened as they are: a backup neither creates nor migrates a database.
    let (pool, users) = server::open_databases(config, false).await?;
    let report = crate::backup::create_archive(&pool, &users, file, clock.now_ms()).await;
    pool.database().close().await;
    users.database().close().await;
    let report = report?;
    println!(
        "Wrote {} ({} bytes) at {}",
        report.path.display(),
        report.size_bytes,
        report.manifest.created_at
    );
    for db in &report.manifest.databases {
        println!(
            "  {}: migration version {}, sha256 {}",
            db.name,
            db.migrations.last().copied().unwrap_or(0),
            db.sha256
        );
    }
    println!(
        "Secret keys are not in the archive; keep the keyring (secret_key or its key file) apart."
    );
    if report.manifest.key_ids.is_empty() {
        println!("No sealed credential is in it, so a restore needs no particular key.");
    } else {
        println!(
            "Restoring it needs the keyring with key id(s): {}",
            report.manifest.key_ids.join(", ")
        );
    }
    Ok(0)
}

async fn restore(config: &Config, file: &std::path::Path) -> anyhow::Result<i32> {
    // The key is never generated here: a new key would open nothing the archive holds.
    let has_key = config.secret_key.is_some()
        || config.secret_key_file.is_some()
        || config
            .data_dir
            .join(crate::crypto::GENERATED_KEY_FILE)
            .is_file();
    let keyring = if has_key {
        Some(crate::crypto::Keyring::from_config(config)?)
    } else {
        None
    };
    let report = crate::backup::restore_archive(file, config, keyring.as_ref()).await?;
    println!(
        "Restored {} (poolkeeper {}, taken {}) into {}",
        file.display(),
        report.manifest.poolkeeper_version,
        report.manifest.created_at,
        config.data_dir.display()
    );
    for (name, version) in &report.versions {
        println!("  {name}: migration version {version}");
    }
    if !report.manifest.key_ids.is_empty() {
        println!(
            "The archive needs key id(s): {}",
            report.manifest.key_ids.join(", ")
        );
    }
    match &keyring {
        Some(k) => println!("Configured keyring: key id(s) {}", k.key_ids().join(", ")),
        None => println!(
            "No key is configured (secret_key, secret_key_file or {}/{}).",
            config.data_dir.display(),
            crate::crypto::GENERATED_KEY_FILE
        ),
    }
    if report.unopenable.is_empty() {
        println!(
            "All {} sealed credential(s) open with the configured keyring.",
            report.sealed_checked
        );
        return Ok(0);
    }
    println!(
        "{} of {} sealed credential(s) do not open with the configured keyring:",
        report.unopenable.len(),
        report.sealed_checked
    );
    for u in &report.unopenable {
        println!("  {} {} `{}`: {}", u.kind, u.id, u.name, u.reason);
    }
    Ok(1)
}

async fn sim_add_org(
    config: &Config,
    name: String,
    seats: i64,
    members: Vec<String>,
) -> anyhow::Result<i32> {
    if !config.sim_enabled() {
        anyhow::bail!(
            "the simulated provider is disabled (env = {}); set providers.sim.enabled = true \
             (POOLKEEPER_PROVIDERS__SIM__ENABLED=true) to make simulated organisations",
            config.env.as_str()
        );
    }
    let sim = std::sync::Arc::new(crate::providers::sim::SimProvider::new(
        config.data_dir.join(crate::providers::SIM_STATE_DIR),
    ));
    let req = service::sim_orgs::AddOrgRequest {
        name,
        seats,
        members: Some(
            members
                .into_iter()
                .filter(|m| !m.trim().is_empty())
                .collect(),
        ),
    };
    let out = service::sim_orgs::add_org(sim, true, req)
        .await
        .map_err(|e| anyhow::anyhow!("{} ({})", e.message, e.code))?;
    let (_, users) = server::open_and_migrate(config).await?;
    let clock = crate::clock::system();
    let change = service::audit::more_changes::sim_org_add(&out, seats);
    service::audit::record(&users, &clock, &Actor::cli(), change).await;
    users.database().close().await;
    eprintln!(
        "simulated organisation {:?} made (owner {}); its credential, shown once:",
        out.name, out.owner_email
    );
    println!("{}", out.credential);
    Ok(0)
}

async fn accounts_status(
    config: &Config,
    clock: &SharedClock,
    pool: Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    let keyring = crate::crypto::Keyring::from_config(config)?;
    let (pool_db, _) = server::open_and_migrate(config).await?;
    let ctx = service::leasing::LeasingCtx {
        pool: &pool_db,
        keyring: &keyring,
        clock,
        policy: config.leases.policy(),
        desk: &Default::default(),
        webhooks: None,
    };
    let counts = service::credential_accounts::status_counts(ctx, pool.clone())
        .await
        .map_err(|e| anyhow::anyhow!("--pool: {e}"))?;
    pool_db.database().close().await;
    if json {
        println!("{}", serde_json::to_string(&counts)?);
        return Ok(0);
    }
    println!("pool: {}", pool.as_deref().unwrap_or("(all)"));
    for (label, n) in [
        ("total", counts.total),
        ("available", counts.available),
        ("in use", counts.in_use),
        ("cooldown", counts.cooldown),
        ("quarantined", counts.quarantined),
        ("inactive", counts.inactive),
    ] {
        println!("{label:<12} {n}");
    }
    Ok(0)
}

async fn secrets_rotate(config: &Config) -> anyhow::Result<i32> {
    let keyring = crate::crypto::Keyring::from_config(config)?;
    let (pool, users) = server::open_and_migrate(config).await?;
    let report = crate::service::mothers::reseal_all(&pool, &keyring).await?;
    let change = crate::service::audit::group_changes::secrets_rotate(
        keyring.current_key_id(),
        report.resealed as u64,
        report.failed.len(),
    );
    let clock = crate::clock::system();
    crate::service::audit::record(&users, &clock, &Actor::cli(), change).await;
    println!(
        "re-sealed {} credential(s) with key {}; {} already under it; {} failed",
        report.resealed,
        keyring.current_key_id(),
        report.already_current,
        report.failed.len()
    );
    for (id, why) in &report.failed {
        println!("  mother {id}: {why}");
    }
    Ok(if report.failed.is_empty() { 0 } else { 1 })
}

async fn serve(config: Config, clock: SharedClock, demo: bool) -> anyhow::Result<()> {
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    let (app, first) = server::prepare(config, clock).await?;
    let running = server::start(app, listen).await?;
    let url = format!("http://{}", running.addr);
    println!(
        "poolkeeper {} listening on {url}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(addr) = running.metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
    if running.app.config.env == crate::config::RunEnv::Production
        && running.app.config.public_url.is_none()
    {
        tracing::warn!(
            "env is production but public_url is unset: any Host is served, and form posts must \
             come from http://<Host> (set public_url when poolkeeper is behind an https proxy)"
        );
    }
    if let Some(first) = &first {
        match &first.generated_password {
            Some((password, path)) => println!(
                "Created admin user `{}` with password {password}\n(also written to {}; change it with `poolkeeper admin passwd --username {}`)",
                first.username,
                path.display(),
                first.username
            ),
            None => println!(
                "Created admin user `{}` with the configured admin_password.",
                first.username
            ),
        }
    }
    if demo {
        // The runner is already going: it picks the sample syncs up at once.
        let sample = crate::demo::ensure_sample_data(&running.app).await?;
        println!("\nDemo: open {url} in a browser and log in as `admin`.");
        println!("{}", sample.summary());
        let file = data_dir.join(server::INITIAL_PASSWORD_FILE);
        match std::fs::read_to_string(&file) {
            Ok(password) => println!("Password: {} (from {})", password.trim(), file.display()),
            Err(_) => println!(
                "The admin password was set on an earlier run; reset it with `poolkeeper --data-dir {} admin passwd --username admin`.",
                data_dir.display()
            ),
        }
        println!("Stop with Ctrl-C.");
    }
    running.run_until_signal().await
}

async fn migrate_check(config: &Config) -> anyhow::Result<i32> {
    let opts = crate::db::OpenOptions {
        create: false,
        max_connections: 2,
    };
    let mut behind = false;
    for (name, url) in [
        ("pool", config.pool_database_url()),
        ("users", config.users_database_url()),
    ] {
        let db = if name == "pool" {
            crate::db::PoolDb::open(&url, &opts)
                .await
                .map(|d| d.database().clone())
        } else {
            crate::db::UsersDb::open(&url, &opts)
                .await
                .map(|d| d.database().clone())
        };
        match db {
            Err(e) => {
                behind = true;
                println!("{name}: missing or unreachable ({e}); behind");
            }
            Ok(db) => {
                let s = db.migration_status().await?;
                let state = if s.pending == 0 {
                    "up to date"
                } else {
                    "behind"
                };
                println!(
                    "{name}: {}, version {} of {}, {} pending; {state}",
                    db.backend().as_str(),
                    s.version,
                    s.latest,
                    s.pending
                );
                behind |= s.pending > 0;
                db.close().await;
            }
        }
    }
    Ok(if behind { 1 } else { 0 })
}

fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((auth::random_password(), true));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password: ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    auth::check_new_password(&password).map_err(|e| anyhow::anyhow!(e))?;
    Ok((password, false))
}

async fn admin(config: &Config, clock: &SharedClock, cmd: AdminCommand) -> anyhow::Result<()> {
    let (_, users) = server::open_and_migrate(config).await?;
    match cmd {
        AdminCommand::Create {
            username,
            role,
            password_stdin,
        } => {
            auth::check_username(&username).map_err(|e| anyhow::anyhow!(e))?;
            let (password, generated) = read_password(password_stdin)?;
            let user = service::admins::create(
                &users,
                clock,
                &Actor::cli(),
                &username,
                &password,
                role,
            )
            .await
            .map_err(|e| match e.code.as_ref() {
                "username_taken" => anyhow::anyhow!(
                    "admin user `{username}` already exists; use `admin passwd` or `admin set-role`"
                ),
                _ => anyhow::anyhow!("{e}"),
            })?;
            println!(
                "Created admin user `{}` with role {}.",
                user.username, user.role
            );
            if generated {
                println!("Password: {password}");
            }
        }
        AdminCommand::SetRole { username, role } => {
            let user = service::admins::set_role(&users, clock, &Actor::cli(), &username, role)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("`{}` now has role {}.", user.username, user.role);
        }
        AdminCommand::Disable { username } => {
            service::admins::disable(&users, clock, &Actor::cli(), &username)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("`{username}` is disabled; their sessions were ended.");
        }
        AdminCommand::Enable { username } => {
            service::admins::enable(&users, clock, &Actor::cli(), &username)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("`{username}` may log in again.");
        }
        AdminCommand::Passwd {
            username,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            service::admins::reset_password(&users, clock, &Actor::cli(), &username, &password)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("Password of `{username}` changed; their sessions were ended.");
            if generated {
                println!("Password: {password}");
            }
        }
    }
    Ok(())
}

async fn token(config: &Config, clock: &SharedClock, cmd: TokenCommand) -> anyhow::Result<()> {
    let (_, users) = server::open_and_migrate(config).await?;
    match cmd {
        TokenCommand::Create { name, scope } => {
            let (row, token) = service::tokens::create(&users, clock, &name, scope)
                .await
                .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let change = service::audit::changes::token_create(&row);
            service::audit::record(&users, clock, &service::audit::Actor::cli(), change).await;
            eprintln!(
                "Created token {} `{}` with scope {}. It is shown once; store it now:",
                row.id, row.name, row.scope
            );
            println!("{token}");
        }
        TokenCommand::List => {
            println!(
                "{:<6} {:<24} {:<7} {:<26} {:<26} status",
                "id", "name", "scope", "created", "last used"
            );
            for t in service::tokens::list_all(&users).await? {
                let status = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<6} {:<24} {:<7} {:<26} {:<26} {status}",
                    t.id,
                    t.name,
                    t.scope,
                    clock::rfc3339(t.created_at),
                    t.last_used_at
                        .map(clock::rfc3339)
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        TokenCommand::Revoke { token } => {
            // Names are never all digits, so digits are an id.
            let t = match token.parse::<i64>() {
                Ok(id) => service::tokens::revoke_by_id(&users, id, clock.now_ms()).await?,
                Err(_) => service::tokens::revoke_by_name(&users, &token, clock.now_ms()).await?,
            };
            let change = service::audit::changes::token_revoke(&t);
            service::audit::record(&users, clock, &service::audit::Actor::cli(), change).await;
            println!("Revoked token {} `{}`.", t.id, t.name);
        }
    }
    Ok(())
}

async fn jobs_command(
    config: &Config,
    clock: &SharedClock,
    cmd: JobsCommand,
) -> anyhow::Result<i32> {
    use crate::service::jobs as service;
    let (pool, users) = server::open_and_migrate(config).await?;
    match cmd {
        JobsCommand::List {
            status,
            job_type,
            page,
            page_size,
        } => {
            let params = crate::http::pagination::PageParams::new(Some(page), Some(page_size))
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let filter = service::filter(status, job_type)?;
            let (items, total) =
                service::list(&users, &filter, params.limit(), params.offset()).await?;
            println!(
                "{:<36} {:<24} {:<10} {:<8} {:<24} last error",
                "id", "type", "status", "attempts", "created"
            );
            for j in &items {
                println!(
                    "{:<36} {:<24} {:<10} {:<8} {:<24} {}",
                    j.id,
                    j.job_type,
                    j.status,
                    format!("{}/{}", j.attempts, j.max_attempts),
                    clock::rfc3339(j.created_at),
                    j.last_error.as_deref().unwrap_or("")
                );
            }
            eprintln!(
                "page {} of {} ({total} jobs)",
                params.page,
                ((total + params.page_size - 1) / params.page_size).max(1)
            );
        }
        JobsCommand::Show { id } => {
            let job = service::get(&users, &id).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Retry { id } => {
            let job = service::retry(&pool, &users, &id, clock.now_ms()).await?;
            let change = crate::service::audit::changes::job_retry(&job);
            crate::service::audit::record(&users, clock, &Actor::cli(), change).await;
            println!("Job {id} is pending again.");
        }
        JobsCommand::Cancel { id } => {
            let job = service::cancel(&pool, &users, &id, clock.now_ms()).await?;
            let change = crate::service::audit::changes::job_cancel(&job);
            crate::service::audit::record(&users, clock, &Actor::cli(), change).await;
            if job.status == "cancelled" {
                println!("Job {id} cancelled.");
            } else {
                println!("Cancellation of running job {id} requested.");
            }
        }
    }
    Ok(0)
}
