//! `poolkeeper lease exec`: runs a command with a leased credential account, for shell and script
//! workers. It talks to a poolkeeper server over HTTP with a worker token (`POOLKEEPER_TOKEN`), like
//! any other worker: acquire, renew while the command runs, release with the result the command's
//! exit status maps to. The password reaches the command only through its environment, never its
//! command line, and is never printed or logged here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::config::Config;
use crate::crypto::Credential;

/// Exit code when no account became available within `--wait` (EX_TEMPFAIL).
pub const EXIT_NO_ACCOUNT: i32 = 75;
/// Exit code when the command could not be started (as a shell does).
pub const EXIT_NOT_STARTED: i32 = 127;

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The poolkeeper server [default: POOLKEEPER_SERVER, else http:// and the configured `listen`
    /// address, 0.0.0.0 read as 127.0.0.1].
    #[arg(long, value_name = "URL", env = "POOLKEEPER_SERVER")]
    pub server: Option<String>,
    /// Pool to lease from [default: default].
    #[arg(long, value_name = "P")]
    pub pool: Option<String>,
    /// What the command does with the account (recorded in the usage log).
    #[arg(long, value_name = "M")]
    pub mission: Option<String>,
    /// Lease length in seconds [default: the server's `leases.default_ttl_seconds`]; the lease is
    /// renewed every third of it while the command runs.
    #[arg(long, value_name = "S")]
    pub ttl: Option<i64>,
    /// Seconds to wait for an account when none is free, following the server's Retry-After;
    /// afterwards exit 75.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub wait: u64,
    /// Worker name recorded with the lease [default: the host name, else `lease-exec`].
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(required = true, num_args = 1.., last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The release result for a command's exit status: 0 success, 10 no_slot, 11 login_fail,
/// 12 banned, anything else (or death by a signal) error.
pub fn result_for_exit(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "success",
        Some(10) => "no_slot",
        Some(11) => "login_fail",
        Some(12) => "banned",
        _ => "error",
    }
}

/// poolkeeper's own exit code for the command's status: its code, or 128 + the signal that
/// killed it (as a shell reports it).
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// `http://` + the listen address, with an unspecified address read as loopback.
fn default_server(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[derive(Deserialize)]
struct Grant {
    lease_id: String,
    account: GrantedAccount,
    expires_at: i64,
}

#[derive(Deserialize)]
struct GrantedAccount {
    login: String,
    password: Credential,
    phone: Option<String>,
}

#[derive(Deserialize)]
struct RenewedLease {
    expires_at: i64,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A refusal from the server: status, code and message.
struct Refused {
    status: u16,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

async fn refusal(res: reqwest::Response) -> Refused {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let (code, message) = match res.json::<ErrorEnvelope>().await {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => (
            "http_error".to_string(),
            "the server gave no error body".into(),
        ),
    };
    Refused {
        status,
        code,
        message,
        retry_after,
    }
}

struct Server {
    client: reqwest::Client,
    base: String,
    token: Credential,
}

impl Server {
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<reqwest::Response> {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))
    }

    async fn acquire(&self, body: &serde_json::Value) -> anyhow::Result<Result<Grant, Refused>> {
        let res = self.post("/api/pool/leases", body.clone()).await?;
        if res.status().is_success() {
            let grant = res.json().await.context("the server's lease answer")?;
            Ok(Ok(grant))
        } else {
            Ok(Err(refusal(res).await))
        }
    }

    async fn renew(
        &self,
        lease_id: &str,
        ttl: Option<i64>,
    ) -> anyhow::Result<Result<i64, Refused>> {
        let res = self
            .post(
                &format!("/api/pool/leases/{id}/renew", id = lease_id),
                serde_json::json!({ "ttl_seconds": ttl }),
            )
            .await?;
        if res.status().is_success() {
            let lease: RenewedLease = res.json().await.context("the server's renew answer")?;
            Ok(Ok(lease.expires_at))
        } else {
            Ok(Err(refusal(res).await))
        }
    }

    async fn release(
        &self,
        lease_id: &str,
        result: &str,
        message: Option<String>,
    ) -> anyhow::Result<()> {
        let res = self
            .post(
                &format!("/api/pool/leases/{id}/release", id = lease_id),
                serde_json::json!({ "result": result, "error_message": message }),
            )
            .await?;
        if res.status().is_success() {
            Ok(())
        } else {
            anyhow::bail!("{}", refusal(res).await)
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long to wait before renewing a lease that expires at `expires_at`: a third of what is
/// left, at least a second. Measured on this machine's clock, so it also absorbs some skew.
fn renew_interval(expires_at: i64, now: i64) -> Duration {
    let left = (expires_at - now).max(0) as u64;
    Duration::from_millis((left / 3).max(1_000))
}

/// Runs `lease exec`; returns poolkeeper's exit code.
pub async fn exec(config: &Config, args: ExecArgs) -> anyhow::Result<i32> {
    let token = std::env::var("POOLKEEPER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(Credential::new)
        .context(
            "POOLKEEPER_TOKEN must hold a worker token (`poolkeeper token create --scope worker`)",
        )?;
    if let Some(ttl) = args.ttl {
        anyhow::ensure!(ttl >= 1, "--ttl must be at least 1 second");
    }
    let base = args
        .server
        .clone()
        .unwrap_or_else(|| default_server(config.listen))
        .trim_end_matches('/')
        .to_string();
    anyhow::ensure!(
        base.starts_with("http://") || base.starts_with("https://"),
        "--server must be an http:// or https:// URL, got {base}"
    );
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("poolkeeper-lease-exec/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("HTTP client")?;
    let server = Server {
        client,
        base,
        token,
    };
    let worker = args
        .worker
        .clone()
        .or_else(host_name)
        .unwrap_or_else(|| "lease-exec".to_string());
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;

    // Acquire, waiting up to --wait for an account.
    let body = serde_json::json!({
        "worker": worker,
        "pool": args.pool,
        "mission": args.mission,
        "ttl_seconds": args.ttl,
    });
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let grant = loop {
        match server.acquire(&body).await? {
            Ok(grant) => break grant,
            Err(r) if r.code == "no_account_available" => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    eprintln!(
                        "poolkeeper: {}; giving up (--wait {})",
                        r.message, args.wait
                    );
                    return Ok(EXIT_NO_ACCOUNT);
                }
                let pause = Duration::from_secs(r.retry_after.unwrap_or(1).max(1)).min(left);
                eprintln!(
                    "poolkeeper: {}; trying again in {} s",
                    r.message,
                    pause.as_secs_f64().ceil()
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = sigint.recv() => return Ok(128 + libc::SIGINT),
                    _ = sigterm.recv() => return Ok(128 + libc::SIGTERM),
                }
            }
            Err(r) => anyhow::bail!("the server refused the lease: {r}"),
        }
    };

    let lease_id = grant.lease_id.clone();
    let mut command = tokio::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("POOLKEEPER_LOGIN", &grant.account.login)
        .env("POOLKEEPER_PASSWORD", grant.account.password.expose())
        .env(
            "POOLKEEPER_PHONE",
            grant.account.phone.as_deref().unwrap_or(""),
        )
        .env("POOLKEEPER_LEASE_ID", &lease_id)
        // The command gets the account, not the worker token.
        .env_remove("POOLKEEPER_TOKEN");
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("poolkeeper: cannot run {}: {e}", args.command[0]);
            let message = format!("command could not be started: {e}");
            if let Err(e) = server.release(&lease_id, "error", Some(message)).await {
                eprintln!("poolkeeper: release of lease {lease_id} failed: {e:#}");
            }
            return Ok(EXIT_NOT_STARTED);
        }
    };
    drop(grant.account.password);
    let pid = child.id();

    let mut interrupted: Option<&str> = None;
    let mut renew_at = Instant::now() + renew_interval(grant.expires_at, now_ms());
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            _ = sigint.recv() => {
                forward(pid, libc::SIGINT);
                interrupted.get_or_insert("SIGINT");
            }
            _ = sigterm.recv() => {
                forward(pid, libc::SIGTERM);
                interrupted.get_or_insert("SIGTERM");
            }
            _ = tokio::time::sleep_until(renew_at) => {
                renew_at = match server.renew(&lease_id, args.ttl).await {
                    Ok(Ok(expires_at)) => Instant::now() + renew_interval(expires_at, now_ms()),
                    Ok(Err(r)) if r.status == 409 || r.status == 403 || r.status == 404 => {
                        // The lease is over; renewing again cannot help. The command keeps running.
                        eprintln!("poolkeeper: lease {lease_id} can no longer be renewed: {r}");
                        Instant::now() + Duration::from_secs(365 * 86_400)
                    }
                    Ok(Err(r)) => {
                        eprintln!("poolkeeper: renewing lease {lease_id} failed: {r}; trying again");
                        Instant::now() + Duration::from_secs(1)
                    }
                    Err(e) => {
                        eprintln!("poolkeeper: renewing lease {lease_id} failed: {e:#}; trying again");
                        Instant::now() + Duration::from_secs(1)
                    }
                };
            }
        }
    };

    let code = exit_code(status);
    let (result, message) = match interrupted {
        Some(name) => ("error", Some(format!("interrupted by {name}"))),
        None => {
            let result = result_for_exit(status.code());
            let message = (result == "error").then(|| match status.code() {
                Some(c) => format!("command exited with status {c}"),
                None => format!("command was killed by signal {}", code - 128),
            });
            (result, message)
        }
    };
    if let Err(e) = server.release(&lease_id, result, message).await {
        eprintln!("poolkeeper: release of lease {lease_id} ({result}) failed: {e:#}");
    }
    Ok(code)
}

fn forward(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill only sends a signal; the pid is our own child, not yet reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_release_results() {
        let cases = [
            (Some(0), "success"),
            (Some(10), "no_slot"),
            (Some(11), "login_fail"),
            (Some(12), "banned"),
            (Some(1), "error"),
            (Some(13), "error"),
            (Some(75), "error"),
            (None, "error"),
        ];
        for (code, want) in cases {
            assert_eq!(result_for_exit(code), want, "{code:?}");
        }
    }

    #[test]
    fn default_server_reads_unspecified_addresses_as_loopback() {
        let cases = [
            ("0.0.0.0:8080", "http://127.0.0.1:8080"),
            ("127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("10.1.2.3:80", "http://10.1.2.3:80"),
            ("[::]:8080", "http://[::1]:8080"),
        ];
        for (listen, want) in cases {
            assert_eq!(default_server(listen.parse().unwrap()), want);
        }
    }

    #[test]
    fn renewal_comes_at_a_third_of_what_is_left_and_not_before_a_second() {
        assert_eq!(renew_interval(90_000, 0), Duration::from_secs(30));
        assert_eq!(renew_interval(1_500, 0), Duration::from_secs(1));
        assert_eq!(renew_interval(0, 5_000), Duration::from_secs(1));
    }

    #[test]
    fn signals_give_128_plus_their_number() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(11 << 8)), 11);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
