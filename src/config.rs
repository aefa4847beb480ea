//! Settings, layered: built-in defaults -> `poolkeeper.toml` -> `POOLKEEPER_*` env -> CLI flags.
//!
//! Env names are `POOLKEEPER_` + the key in upper case, nested keys joined by `__`
//! (`POOLKEEPER_JOBS__MAX_ATTEMPTS`). `child_email_domain` and `pool_auto_invite_missing` are also
//! read from `CHILD_EMAIL_DOMAIN` and `POOL_AUTO_INVITE_MISSING` (the `POOLKEEPER_` names win).
//! Secret values may be given as files through the `*_file` keys. Every key is in docs/configuration.md
//! (`tests/docs.rs` fails when one is missing).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A string that must never be printed: database URLs with passwords, the initial admin password.
///
/// It reads any scalar as its text (a TOML `admin_password = 12345678` is the password "12345678")
/// and its deserialization errors never contain the value.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawText;
        impl serde::de::Visitor<'_> for RawText {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_char<E: serde::de::Error>(self, v: char) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        deserializer.deserialize_any(RawText)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunEnv {
    #[default]
    Development,
    Production,
}

impl RunEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnv::Development => "development",
            RunEnv::Production => "production",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobsConfig {
    /// Seconds a claimed job stays locked without a heartbeat before it is rescued.
    pub visibility_timeout_seconds: u64,
    /// Attempts a job gets before it is marked failed.
    pub max_attempts: u32,
    /// Jobs this process runs at the same time.
    pub concurrency: usize,
    /// Most jobs claimed in one statement.
    pub batch_size: usize,
    /// How often an idle runner looks for work (PostgreSQL also wakes it at once by NOTIFY).
    pub poll_interval_ms: u64,
    /// On shutdown, how long running jobs may take to finish before they are handed back.
    pub shutdown_grace_seconds: u64,
    /// Register the `diagnostic.sleep` job type (for checking the queue and in tests).
    pub diagnostic_handlers: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            visibility_timeout_seconds: 300,
            max_attempts: 3,
            concurrency: 4,
            batch_size: 100,
            poll_interval_ms: 1000,
            shutdown_grace_seconds: 10,
            diagnostic_handlers: false,
        }
    }
}

/// Redeem codes (`[redeem]`): how long a redeem may hold a seat and a code, and how often one
/// client address may try.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RedeemConfig {
    /// How long a redeem holds a seat while its invite is sent; maintenance frees it after.
    pub hold_seconds: u64,
    /// Redeems per hour from one client address (IPv6 by /64).
    pub per_hour: u32,
    /// Invite resends per hour from one client address.
    pub resend_per_hour: u32,
    /// How long a code stays reserved by a redeem that never finished (a crash) before
    /// maintenance returns it.
    pub reservation_timeout_seconds: u64,
}

impl Default for RedeemConfig {
    fn default() -> Self {
        Self {
            hold_seconds: 30,
            per_hour: 5,
            resend_per_hour: 3,
            reservation_timeout_seconds: 300,
        }
    }
}

/// Credential leasing (`[leases]`): rest times after a lease and lease lengths, in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LeasesConfig {
    /// Rest after every release (and after an unreleased lease expires).
    pub cooldown_seconds: u64,
    /// Consecutive `login_fail`/`error` releases that quarantine an account.
    pub max_failures: u32,
    /// Quarantine after `max_failures` consecutive failures.
    pub quarantine_seconds: u64,
    /// Quarantine after a `banned` release.
    pub banned_seconds: u64,
    /// Lease length when the worker asks for none.
    pub default_ttl_seconds: u64,
    /// Longest lease (or renewal) a worker may ask for.
    pub max_ttl_seconds: u64,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        Self {
            cooldown_seconds: 600,
            max_failures: 3,
            quarantine_seconds: 1800,
            banned_seconds: 3600,
            default_ttl_seconds: 300,
            max_ttl_seconds: 3600,
        }
    }
}

impl LeasesConfig {
    /// The policy `domain::leases` applies, in milliseconds.
    pub fn policy(&self) -> crate::domain::leases::LeasePolicy {
        let ms = |s: u64| {
            i64::try_from(s)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000)
        };
        crate::domain::leases::LeasePolicy {
            cooldown_ms: ms(self.cooldown_seconds),
            max_failures: i64::from(self.max_failures),
            quarantine_ms: ms(self.quarantine_seconds),
            banned_ms: ms(self.banned_seconds),
            default_ttl_ms: ms(self.default_ttl_seconds),
            max_ttl_ms: ms(self.max_ttl_seconds),
        }
    }
}

/// Missions (`[missions]`): work requests grouped by mission, run one claim at a time each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct MissionsConfig {
    /// Most missions running at once (every process sharing a database should use the same value).
    pub max_concurrent: u32,
}

impl Default for MissionsConfig {
    fn default() -> Self {
        Self { max_concurrent: 5 }
    }
}

/// Scheduled backups (`[backup]`): how often the service writes an archive like `poolkeeper
/// backup`, how many it keeps, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupConfig {
    /// Hours between scheduled backups; 0 (the default) turns them off.
    pub interval_hours: u64,
    /// Scheduled archives kept in `dir`; older ones are removed after each backup.
    pub keep: u32,
    /// Where scheduled archives go [default: `<data_dir>/backups`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            interval_hours: 0,
            keep: 7,
            dir: None,
        }
    }
}

/// The audit log (`[audit]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// Days audit rows are kept; housekeeping removes older ones (keeping the chain verifiable).
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
        }
    }
}

/// Settings of the provider kinds (`[providers.scim]`, `[providers.sim]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvidersConfig {
    pub scim: ScimSettings,
    pub sim: SimSettings,
}

/// The simulated provider's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimSettings {
    /// Whether simulated organisations may be made (`sim add-org`, `POST /api/admin/sim/orgs`);
    /// defaults to on in development (and the demo), off in production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScimSettings {
    /// Hosts (`name`, `*.domain`) and networks (`10.0.0.0/8`) that SCIM calls may reach although
    /// they are loopback, private, link-local, unique-local or metadata addresses.
    pub allow_hosts: Vec<String>,
}

/// One `[[webhooks]]` entry: where signed event deliveries go and which events it wants. The
/// secret keys the HMAC signature; it is redacted in `Debug` and never shown or logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    /// `http(s)://host[:port]/path` the deliveries are POSTed to.
    pub url: String,
    /// Event names: `mother_invalid`, `account_quarantined`, `pool_below_threshold`, `job_failed`.
    #[serde(default)]
    pub events: Vec<String>,
    /// The signing secret (at least 16 characters), or `secret_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

impl WebhookConfig {
    /// The signing secret (empty when neither `secret` nor `secret_file` was given, which
    /// validation refuses).
    pub fn secret(&self) -> &str {
        self.secret.as_ref().map_or("", Secret::expose)
    }
}

/// Free seats under which a pool group raises `pool_below_threshold` (the alert rule's 5).
pub const DEFAULT_WEBHOOKS_FREE_SEATS_THRESHOLD: u32 = 5;

fn default_webhooks_free_seats_threshold() -> u32 {
    DEFAULT_WEBHOOKS_FREE_SEATS_THRESHOLD
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_database_url: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_database_url_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_database_url: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_database_url_file: Option<PathBuf>,
    /// Connections per PostgreSQL pool (and SQLite readers).
    pub database_max_connections: u32,
    pub env: RunEnv,
    /// Require `X-Domain` on unsafe admin requests; defaults to on in production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_guard: Option<bool>,
    /// Master key(s) for sealing credentials, base64; env `POOLKEEPER_SECRET_KEY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_email_domain: Option<String>,
    pub pool_auto_invite_missing: bool,
    /// Seconds between scheduled syncs of every active pool group; 0 (the default) turns them off.
    pub pool_sync_interval_seconds: u64,
    /// Mark the session cookie `Secure` (and name it `__Host-pk_session`); defaults to on in
    /// production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_secure: Option<bool>,
    /// The address browsers use, `scheme://host[:port]`: the origin form posts must come from and,
    /// in production, the only `Host` served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Bearer token `/metrics` requires when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve `/metrics` on this address alone (not on `listen`) when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Hours an admin session lasts after login.
    pub session_ttl_hours: u64,
    /// Password for the `admin` user created on first start when no admin exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password_file: Option<PathBuf>,
    /// Log filter in `tracing` syntax (`RUST_LOG` wins when set).
    pub log: String,
    pub jobs: JobsConfig,
    #[serde(default)]
    pub leases: LeasesConfig,
    #[serde(default)]
    pub redeem: RedeemConfig,
    pub missions: MissionsConfig,
    pub providers: ProvidersConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    /// Endpoints that receive signed event deliveries (`[[webhooks]]`); none by default.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Hosts and networks webhook deliveries may reach although they are internal addresses
    /// (like `providers.scim.allow_hosts`; loopback is allowed in development).
    #[serde(default)]
    pub webhooks_allow_hosts: Vec<String>,
    /// A pool group whose free seats fall below this raises `pool_below_threshold` once per
    /// crossing; 0 turns the event off.
    #[serde(default = "default_webhooks_free_seats_threshold")]
    pub webhooks_free_seats_threshold: u32,
    #[serde(default)]
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            pool_database_url: None,
            pool_database_url_file: None,
            users_database_url: None,
            users_database_url_file: None,
            database_max_connections: 8,
            env: RunEnv::Development,
            domain_guard: None,
            secret_key: None,
            secret_key_file: None,
            child_email_domain: None,
            pool_auto_invite_missing: false,
            pool_sync_interval_seconds: 0,
            cookie_secure: None,
            public_url: None,
            metrics_token: None,
            metrics_token_file: None,
            metrics_listen: None,
            session_ttl_hours: 12,
            admin_password: None,
            admin_password_file: None,
            log: "info".to_string(),
            jobs: JobsConfig::default(),
            leases: LeasesConfig::default(),
            redeem: RedeemConfig::default(),
            missions: MissionsConfig::default(),
            providers: ProvidersConfig::default(),
            backup: BackupConfig::default(),
            webhooks: Vec::new(),
            webhooks_allow_hosts: Vec::new(),
            webhooks_free_seats_threshold: DEFAULT_WEBHOOKS_FREE_SEATS_THRESHOLD,
            audit: AuditConfig::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<RunEnv>,
}

/// Env variables with the `POOLKEEPER_` prefix that are not configuration keys.
const NOT_CONFIG_KEYS: &[&str] = &["config", "test_pg"];

/// Keys whose values are secrets. From the environment they are taken as raw text (figment would
/// read `POOLKEEPER_ADMIN_PASSWORD=12345678` as a number), and no error ever shows their value.
const SECRET_KEYS: &[&str] = &[
    "admin_password",
    "pool_database_url",
    "users_database_url",
    "secret_key",
    "metrics_token",
];

/// `POOLKEEPER_<KEY>` of each secret key that is set, as raw text.
fn raw_secret_env() -> anyhow::Result<Figment> {
    let mut figment = Figment::new();
    for key in SECRET_KEYS {
        let name = format!("POOLKEEPER_{}", key.to_uppercase());
        match std::env::var(&name) {
            Ok(value) => figment = figment.merge(Serialized::default(key, value)),
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("configuration: {name} is not valid UTF-8")
            }
        }
    }
    Ok(figment)
}

impl Config {
    /// Loads the layers. `file` is `--config`; without it `POOLKEEPER_CONFIG`, then `./poolkeeper.toml`
    /// when it exists.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("POOLKEEPER_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    anyhow::bail!("config file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("poolkeeper.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("poolkeeper.toml"))
            }
            None => {}
        }
        let ignored: Vec<&str> = NOT_CONFIG_KEYS.iter().chain(SECRET_KEYS).copied().collect();
        let figment = figment
            .merge(Env::raw().only(&["child_email_domain", "pool_auto_invite_missing"]))
            .merge(Env::prefixed("POOLKEEPER_").split("__").ignore(&ignored))
            .merge(raw_secret_env()?)
            .merge(Serialized::defaults(overrides));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config.resolve_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `*_file` keys into the values they stand for.
    fn resolve_files(&mut self) -> anyhow::Result<()> {
        fn read(key: &str, path: &Path) -> anyhow::Result<Secret> {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("configuration: {key}: cannot read {}: {e}", path.display())
            })?;
            Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
        }
        if let Some(path) = &self.pool_database_url_file {
            self.pool_database_url = Some(read("pool_database_url_file", path)?);
        }
        if let Some(path) = &self.users_database_url_file {
            self.users_database_url = Some(read("users_database_url_file", path)?);
        }
        if let Some(path) = &self.admin_password_file {
            self.admin_password = Some(read("admin_password_file", path)?);
        }
        if let Some(path) = &self.metrics_token_file {
            self.metrics_token = Some(read("metrics_token_file", path)?);
        }
        for (i, hook) in self.webhooks.iter_mut().enumerate() {
            if let Some(path) = &hook.secret_file {
                hook.secret = Some(read(&format!("webhooks[{i}].secret_file"), path)?);
            }
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.jobs.max_attempts == 0 || self.jobs.max_attempts > 100 {
            anyhow::bail!(
                "configuration: jobs.max_attempts must be between 1 and 100, got {}",
                self.jobs.max_attempts
            );
        }
        if self.leases.max_failures == 0 {
            anyhow::bail!("configuration: leases.max_failures must be at least 1");
        }
        if self.leases.default_ttl_seconds == 0 || self.leases.max_ttl_seconds == 0 {
            anyhow::bail!(
                "configuration: leases.default_ttl_seconds and leases.max_ttl_seconds must be at least 1"
            );
        }
        if self.redeem.hold_seconds == 0 || self.redeem.reservation_timeout_seconds == 0 {
            anyhow::bail!(
                "configuration: redeem.hold_seconds and redeem.reservation_timeout_seconds must be at least 1"
            );
        }
        if self.redeem.per_hour == 0 || self.redeem.resend_per_hour == 0 {
            anyhow::bail!(
                "configuration: redeem.per_hour and redeem.resend_per_hour must be at least 1"
            );
        }
        if self.missions.max_concurrent == 0 || self.missions.max_concurrent > 10_000 {
            anyhow::bail!(
                "configuration: missions.max_concurrent must be between 1 and 10000, got {}",
                self.missions.max_concurrent
            );
        }
        if self.jobs.visibility_timeout_seconds == 0 {
            anyhow::bail!("configuration: jobs.visibility_timeout_seconds must be at least 1");
        }
        if self.jobs.concurrency == 0 || self.jobs.concurrency > 1024 {
            anyhow::bail!(
                "configuration: jobs.concurrency must be between 1 and 1024, got {}",
                self.jobs.concurrency
            );
        }
        if self.jobs.batch_size == 0 || self.jobs.batch_size > 5000 {
            anyhow::bail!(
                "configuration: jobs.batch_size must be between 1 and 5000, got {}",
                self.jobs.batch_size
            );
        }
        if self.audit.retention_days == 0 || self.audit.retention_days > 36_500 {
            anyhow::bail!(
                "configuration: audit.retention_days must be between 1 and 36500, got {}",
                self.audit.retention_days
            );
        }
        if self.backup.keep == 0 {
            anyhow::bail!("configuration: backup.keep must be at least 1");
        }
        if self.backup.interval_hours > 24 * 366 {
            anyhow::bail!("configuration: backup.interval_hours must be at most 8784");
        }
        if self.database_max_connections == 0 {
            anyhow::bail!("configuration: database_max_connections must be at least 1");
        }
        if self.session_ttl_hours == 0 {
            anyhow::bail!("configuration: session_ttl_hours must be at least 1");
        }
        for (key, url) in [
            ("pool_database_url", &self.pool_database_url),
            ("users_database_url", &self.users_database_url),
        ] {
            if let Some(url) = url {
                let url = url.expose();
                if !(url.starts_with("sqlite:") || crate::db::is_postgres_url(url)) {
                    anyhow::bail!("configuration: {key} must start with sqlite: or postgres://");
                }
            }
        }
        if let (Some(pool), Some(users)) = (&self.pool_database_url, &self.users_database_url)
            && pool == users
        {
            anyhow::bail!(
                "configuration: pool_database_url and users_database_url must name two different databases"
            );
        }
        if let Some(domain) = &self.child_email_domain
            && !crate::domain::email::is_valid_domain(domain)
        {
            anyhow::bail!(
                "configuration: child_email_domain {domain:?} is not a valid domain name"
            );
        }
        self.scim_egress()?;
        self.webhooks_egress()?;
        self.webhook_endpoints()?;
        self.public_origin()?;
        if let Some(token) = &self.metrics_token
            && token.expose().trim().is_empty()
        {
            anyhow::bail!("configuration: metrics_token must not be empty");
        }
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            anyhow::bail!("configuration: metrics_listen must differ from listen");
        }
        Ok(())
    }

    /// `public_url` as an origin (scheme, host, port), when set.
    pub fn public_origin(&self) -> anyhow::Result<Option<crate::domain::origin::Origin>> {
        self.public_url
            .as_deref()
            .map(crate::domain::origin::Origin::parse_url)
            .transpose()
            .map_err(|e| anyhow::anyhow!("configuration: public_url: {e}"))
    }

    /// Whether the session cookie is `Secure`: as configured, else on in production.
    pub fn cookie_secure(&self) -> bool {
        self.cookie_secure.unwrap_or(self.env == RunEnv::Production)
    }

    /// Where SCIM calls may go: `providers.scim.allow_hosts`, and loopback in development.
    pub fn scim_egress(&self) -> anyhow::Result<crate::domain::egress::EgressRule> {
        crate::domain::egress::EgressRule::new(
            &self.providers.scim.allow_hosts,
            self.env == RunEnv::Development,
        )
        .map_err(|e| anyhow::anyhow!("configuration: providers.scim.allow_hosts: {e}"))
    }

    /// Where webhook deliveries may go: `webhooks_allow_hosts`, and loopback in development (the
    /// same rule SCIM calls follow).
    pub fn webhooks_egress(&self) -> anyhow::Result<crate::domain::egress::EgressRule> {
        crate::domain::egress::EgressRule::new(
            &self.webhooks_allow_hosts,
            self.env == RunEnv::Development,
        )
        .map_err(|e| anyhow::anyhow!("configuration: webhooks_allow_hosts: {e}"))
    }

    /// The `[[webhooks]]` entries, checked: a bad URL, an unknown event or a short secret is an
    /// error naming the entry.
    pub fn webhook_endpoints(
        &self,
    ) -> anyhow::Result<Vec<(crate::domain::webhooks::EndpointSpec, Secret)>> {
        let mut out: Vec<(crate::domain::webhooks::EndpointSpec, Secret)> =
            Vec::with_capacity(self.webhooks.len());
        for (i, hook) in self.webhooks.iter().enumerate() {
            let spec =
                crate::domain::webhooks::check_endpoint(&hook.url, &hook.events, hook.secret())
                    .map_err(|e| anyhow::anyhow!("configuration: webhooks[{i}]: {e}"))?;
            if out.iter().any(|(s, _)| s.url == spec.url) {
                anyhow::bail!(
                    "configuration: webhooks[{i}]: url {:?} is listed twice",
                    hook.url
                );
            }
            out.push((spec, Secret::new(hook.secret())));
        }
        Ok(out)
    }

    /// Whether simulated organisations may be made: as configured, else off in production.
    pub fn sim_enabled(&self) -> bool {
        self.providers
            .sim
            .enabled
            .unwrap_or(self.env != RunEnv::Production)
    }

    /// Whether the domain guard is on: as configured, else on in production.
    pub fn domain_guard(&self) -> bool {
        self.domain_guard.unwrap_or(self.env == RunEnv::Production)
    }

    pub fn pool_database_url(&self) -> String {
        self.database_url(&self.pool_database_url, "pool.db")
    }

    pub fn users_database_url(&self) -> String {
        self.database_url(&self.users_database_url, "users.db")
    }

    fn database_url(&self, configured: &Option<Secret>, file: &str) -> String {
        match configured {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join(file).display()),
        }
    }

    /// Where scheduled backups go: `backup.dir`, else `<data_dir>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// Whether both databases are SQLite files under `data_dir` (the embedded default).
    pub fn uses_embedded_default(&self) -> bool {
        self.pool_database_url.is_none() && self.users_database_url.is_none()
    }
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    /// A config file, env variables, and the key the error must name.
    type BadCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    /// Loads through every real layer inside a jail (its own cwd and env).
    fn load_in(jail: &mut Jail, toml: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        jail.create_file("poolkeeper.toml", toml)
            .map_err(|e| e.to_string())?;
        for (k, v) in env {
            jail.set_env(k, v);
        }
        Config::load(None, &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(
            (c.jobs.visibility_timeout_seconds, c.jobs.max_attempts),
            (300, 3)
        );
        assert_eq!((c.jobs.concurrency, c.jobs.batch_size), (4, 100));
        assert_eq!(c.jobs.shutdown_grace_seconds, 10);
        assert_eq!(c.missions.max_concurrent, 5);
        assert!(!c.domain_guard());
        assert!(c.sim_enabled());
        assert!(!c.pool_auto_invite_missing);
        assert_eq!(c.pool_database_url(), "sqlite://./data/pool.db");
        assert_eq!(c.users_database_url(), "sqlite://./data/users.db");
    }

    #[test]
    fn production_turns_the_simulator_off_unless_configured_on() {
        Jail::expect_with(|jail| {
            assert!(load_in(jail, "", &[])?.sim_enabled());
            assert!(!load_in(jail, "env = 'production'", &[])?.sim_enabled());
            assert!(
                load_in(
                    jail,
                    "env = 'production'\n[providers.sim]\nenabled = true",
                    &[]
                )?
                .sim_enabled()
            );
            assert!(
                !load_in(jail, "", &[("POOLKEEPER_PROVIDERS__SIM__ENABLED", "false")])?
                    .sim_enabled()
            );
            Ok(())
        });
    }

    #[test]
    fn production_turns_the_domain_guard_on_unless_configured_off() {
        Jail::expect_with(|jail| {
            assert!(load_in(jail, "env = 'production'", &[])?.domain_guard());
            assert!(
                !load_in(jail, "env = 'production'\ndomain_guard = false", &[])?.domain_guard()
            );
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        Jail::expect_with(|jail| {
            let c = load_in(
                jail,
                "listen = '127.0.0.1:9000'\n[jobs]\nmax_attempts = 5",
                &[("POOLKEEPER_JOBS__MAX_ATTEMPTS", "7")],
            )?;
            assert_eq!(c.jobs.max_attempts, 7, "env beats the file");
            assert_eq!(c.listen.port(), 9000, "file beats defaults");
            let flags = Overrides {
                listen: Some("127.0.0.1:9100".parse().unwrap()),
                ..Overrides::default()
            };
            let c = Config::load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9100, "flags beat the file");
            Ok(())
        });
    }

    #[test]
    fn legacy_env_names_are_read_and_poolkeeper_names_win() {
        Jail::expect_with(|jail| {
            let c = load_in(
                jail,
                "",
                &[
                    ("CHILD_EMAIL_DOMAIN", "kids.example.org"),
                    ("POOL_AUTO_INVITE_MISSING", "true"),
                ],
            )?;
            assert_eq!(c.child_email_domain.as_deref(), Some("kids.example.org"));
            assert!(c.pool_auto_invite_missing);
            let c = load_in(
                jail,
                "",
                &[("POOLKEEPER_CHILD_EMAIL_DOMAIN", "pk.example.org")],
            )?;
            assert_eq!(c.child_email_domain.as_deref(), Some("pk.example.org"));
            Ok(())
        });
    }

    #[test]
    fn scim_allow_hosts_come_from_file_or_env_and_bad_entries_are_named() {
        Jail::expect_with(|jail| {
            let c = load_in(
                jail,
                "[providers.scim]\nallow_hosts = ['scim.internal', '10.0.0.0/8']",
                &[],
            )?;
            assert_eq!(
                c.providers.scim.allow_hosts,
                ["scim.internal", "10.0.0.0/8"]
            );
            let err =
                load_in(jail, "[providers.scim]\nallow_hosts = ['10.0.0.0/99']", &[]).unwrap_err();
            assert!(
                err.contains("providers.scim.allow_hosts") && err.contains("10.0.0.0/99"),
                "{err}"
            );
            // The env wins over the file.
            let c = load_in(
                jail,
                "",
                &[("POOLKEEPER_PROVIDERS__SCIM__ALLOW_HOSTS", "[\"fd00::/8\"]")],
            )?;
            assert_eq!(c.providers.scim.allow_hosts, ["fd00::/8"]);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[BadCase] = &[
            ("[jobs]\nmax_attempts = 'many'", &[], "max_attempts"),
            (
                "",
                &[("POOLKEEPER_JOBS__VISIBILITY_TIMEOUT_SECONDS", "soon")],
                "visibility_timeout_seconds",
            ),
            ("env = 'staging'", &[], "env"),
            ("listen = 'nowhere'", &[], "listen"),
            ("[jobs]\nmax_attempts = 0", &[], "jobs.max_attempts"),
            (
                "[missions]\nmax_concurrent = 0",
                &[],
                "missions.max_concurrent",
            ),
            (
                "",
                &[("POOLKEEPER_MISSIONS__MAX_CONCURRENT", "lots")],
                "max_concurrent",
            ),
            ("pool_database_url = 'mysql://x'", &[], "pool_database_url"),
            (
                "child_email_domain = 'not a domain'",
                &[],
                "child_email_domain",
            ),
        ];
        for (toml, env, key) in cases {
            Jail::expect_with(|jail| {
                let err = load_in(jail, toml, env).expect_err(toml);
                assert!(err.to_lowercase().contains(key), "{toml:?} {env:?}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn secrets_from_env_and_file_are_raw_text_even_when_numeric() {
        Jail::expect_with(|jail| {
            let c = load_in(
                jail,
                "",
                &[
                    ("POOLKEEPER_ADMIN_PASSWORD", "00012345678"),
                    ("POOLKEEPER_METRICS_TOKEN", "1e5"),
                    ("POOLKEEPER_SECRET_KEY", "true"),
                ],
            )?;
            assert_eq!(c.admin_password.unwrap().expose(), "00012345678");
            assert_eq!(c.metrics_token.unwrap().expose(), "1e5");
            assert_eq!(c.secret_key.unwrap().expose(), "true");
            Ok(())
        });
        Jail::expect_with(|jail| {
            let c = load_in(jail, "admin_password = 987654321", &[])?;
            assert_eq!(c.admin_password.unwrap().expose(), "987654321");
            Ok(())
        });
    }

    #[test]
    fn config_errors_never_show_secret_values() {
        // A bad value (of another key, or of a secret key itself), with secrets set to
        // recognisable values.
        let secrets: &[(&str, &str)] = &[
            ("POOLKEEPER_ADMIN_PASSWORD", "4242424242"),
            ("POOLKEEPER_SECRET_KEY", "4444444444"),
        ];
        let cases: &[&str] = &[
            "[jobs]\nmax_attempts = 'many'",
            "pool_database_url = 'mysql://u:4545454545@db/x'",
            "metrics_token = ['4646464646']",
            "metrics_token = { value = '4747474747' }",
        ];
        for toml in cases {
            Jail::expect_with(|jail| {
                let err = load_in(jail, toml, secrets).expect_err(toml);
                for needle in ["42424242", "44444444", "45454545", "46464646", "47474747"] {
                    assert!(!err.contains(needle), "{toml}: {err}");
                }
                Ok(())
            });
        }
    }

    #[test]
    fn production_makes_the_cookie_secure_unless_configured_off() {
        Jail::expect_with(|jail| {
            assert!(!load_in(jail, "", &[])?.cookie_secure());
            assert!(load_in(jail, "env = 'production'", &[])?.cookie_secure());
            assert!(
                !load_in(jail, "env = 'production'\ncookie_secure = false", &[])?.cookie_secure()
            );
            assert!(load_in(jail, "cookie_secure = true", &[])?.cookie_secure());
            Ok(())
        });
    }

    #[test]
    fn public_url_and_metrics_settings_are_checked() {
        Jail::expect_with(|jail| {
            let c = load_in(
                jail,
                "public_url = 'https://pk.example.org'\nmetrics_listen = '127.0.0.1:9100'",
                &[],
            )?;
            assert_eq!(
                c.public_origin().unwrap().unwrap().to_string(),
                "https://pk.example.org:443"
            );
            assert_eq!(c.metrics_listen.unwrap().port(), 9100);
            let err = load_in(jail, "public_url = 'pk.example.org'", &[]).unwrap_err();
            assert!(err.contains("public_url"), "{err}");
            let err = load_in(jail, "metrics_token = ' '", &[]).unwrap_err();
            assert!(err.contains("metrics_token"), "{err}");
            let err = load_in(
                jail,
                "listen = '127.0.0.1:9100'\nmetrics_listen = '127.0.0.1:9100'",
                &[],
            )
            .unwrap_err();
            assert!(err.contains("metrics_listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn webhooks_are_read_checked_and_their_secrets_redacted() {
        Jail::expect_with(|jail| {
            jail.create_file("hook-secret", "file-secret-0123456789\n")?;
            let c = load_in(
                jail,
                "webhooks_free_seats_threshold = 3\nwebhooks_allow_hosts = ['10.0.0.0/8']\n\
                 [[webhooks]]\nurl = 'https://hooks.example.org/a'\nevents = ['job_failed']\n\
                 secret = 'inline-secret-0123456789'\n\
                 [[webhooks]]\nurl = 'http://10.1.2.3:8000/b'\n\
                 events = ['mother_invalid', 'pool_below_threshold']\nsecret_file = 'hook-secret'",
                &[],
            )?;
            let hooks = c.webhook_endpoints().unwrap();
            assert_eq!(hooks.len(), 2);
            assert_eq!(hooks[1].1.expose(), "file-secret-0123456789");
            assert_eq!(c.webhooks_free_seats_threshold, 3);
            let debug = format!("{c:?}");
            assert!(
                !debug.contains("inline-secret") && !debug.contains("file-secret"),
                "{debug}"
            );
            assert_eq!(
                load_in(jail, "", &[])?.webhooks_free_seats_threshold,
                DEFAULT_WEBHOOKS_FREE_SEATS_THRESHOLD
            );
            for (toml, needle) in [
                (
                    "[[webhooks]]\nurl = 'hooks.example.org'\nevents = ['job_failed']\nsecret = 'inline-secret-0123456789'",
                    "webhooks[0]",
                ),
                (
                    "[[webhooks]]\nurl = 'https://h.example.org/'\nevents = ['seat_sold']\nsecret = 'inline-secret-0123456789'",
                    "seat_sold",
                ),
                (
                    "[[webhooks]]\nurl = 'https://h.example.org/'\nevents = ['job_failed']",
                    "secret",
                ),
                (
                    "webhooks_allow_hosts = ['10.0.0.0/99']",
                    "webhooks_allow_hosts",
                ),
            ] {
                let err = load_in(jail, toml, &[]).unwrap_err();
                assert!(err.contains(needle), "{toml}: {err}");
                assert!(!err.contains("inline-secret"), "{err}");
            }
            // The environment can give the list too (last: it stays set in this jail).
            let c = load_in(
                jail,
                "",
                &[(
                    "POOLKEEPER_WEBHOOKS",
                    "[{url=\"https://e.example.org/h\", events=[\"job_failed\"], secret=\"env-secret-0123456789\"}]",
                )],
            )?;
            assert_eq!(c.webhooks[0].url, "https://e.example.org/h");
            Ok(())
        });
    }

    #[test]
    fn secret_files_are_read_and_never_debug_printed() {
        Jail::expect_with(|jail| {
            jail.create_file("url", "postgres://u:hunter2@db/pool\n")?;
            let c = load_in(jail, "pool_database_url_file = 'url'", &[])?;
            assert_eq!(c.pool_database_url(), "postgres://u:hunter2@db/pool");
            assert!(!format!("{c:?}").contains("hunter2"));
            Ok(())
        });
    }
}
