//! The `poolkeeper` binary as an operator runs it: migrate --check, serve and its first admin,
//! tokens and admins from the CLI, bad flags and values, graceful shutdown on SIGTERM, and rescue of
//! jobs (a plain one and a pool sync) after SIGKILL.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::{Backend, TestDbs, each_backend, wait_until};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_poolkeeper");

/// The command with the test's databases, and nothing from the caller's environment that could
/// change the configuration.
fn poolkeeper(dbs: &TestDbs) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dbs.dir.path())
        .env_remove("POOLKEEPER_ADMIN_PASSWORD")
        .env("RUST_LOG", "warn");
    cmd.arg("--data-dir").arg(dbs.dir.path());
    if let Some(url) = &dbs.config.pool_database_url {
        cmd.arg("--pool-database-url").arg(url.expose());
    }
    if let Some(url) = &dbs.config.users_database_url {
        cmd.arg("--users-database-url").arg(url.expose());
    }
    cmd
}

fn run(mut cmd: Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run poolkeeper");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into(),
        String::from_utf8_lossy(&stderr).into(),
    )
}

#[tokio::test]
async fn migrate_check_fails_before_migrate_and_passes_after() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let mut cmd = poolkeeper(&dbs);
        cmd.args(["migrate", "--check"]);
        let (code, out, _) = run(cmd);
        assert_eq!(code, 1, "a fresh setup is behind: {out}");
        assert!(
            out.contains("pool:") && out.contains("users:") && out.contains("behind"),
            "{out}"
        );

        let mut cmd = poolkeeper(&dbs);
        cmd.arg("migrate");
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{out}{err}");

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["migrate", "--check"]);
        let (code, out, _) = run(cmd);
        assert_eq!(code, 0, "{out}");
        assert_eq!(out.matches("up to date").count(), 2, "{out}");
    })
    .await;
}

#[tokio::test]
async fn bench_jobs_drains_every_job_and_reports_one_json_line() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dbs.dir.path())
            .env("RUST_LOG", "warn")
            .env("TMPDIR", dbs.dir.path())
            .args([
                "bench",
                "jobs",
                "--jobs",
                "3000",
                "--workers",
                "4",
                "--batch-size",
                "500",
            ]);
        if let Some(url) = &dbs.config.users_database_url {
            cmd.arg("--database-url").arg(url.expose());
        }
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
        assert_eq!(report["bench"], "jobs");
        assert_eq!(report["backend"], backend.name());
        assert_eq!(report["jobs"], 3000);
        assert_eq!(report["workers"], 4);
        assert_eq!(report["batch_size"], 500);
        // The bench itself fails unless every job ended succeeded in the table.
        let drain = report["drain_seconds"].as_f64().unwrap();
        let rate = report["jobs_per_sec"].as_f64().unwrap();
        assert!(
            drain > 0.0 && (rate * drain - 3000.0).abs() < 1.0,
            "{report}"
        );
        let (p50, p99) = (
            report["latency_p50_ms"].as_i64().unwrap(),
            report["latency_p99_ms"].as_i64().unwrap(),
        );
        assert!(0 <= p50 && p50 <= p99, "{report}");
        match backend {
            Backend::Sqlite => {
                assert!(report["tls"].is_null(), "{report}");
                let left: Vec<_> = std::fs::read_dir(dbs.dir.path())
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with("poolkeeper-bench-")
                    })
                    .collect();
                assert!(left.is_empty(), "the temp database is removed");
            }
            Backend::Postgres { .. } => {
                assert!(report["tls"].is_boolean(), "{report}");
                let users = poolkeeper::db::UsersDb::open(
                    dbs.config.users_database_url.as_ref().unwrap().expose(),
                    &Default::default(),
                )
                .await
                .unwrap();
                let (pending, running) =
                    poolkeeper::store::jobs::live_counts(&users).await.unwrap();
                assert_eq!((pending, running), (0, 0));
                let page = poolkeeper::store::jobs::list(&users, &Default::default(), 10, 0)
                    .await
                    .unwrap();
                assert_eq!(page.1, 0, "the bench deletes its own jobs");
                users.database().close().await;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn bench_leases_cycles_over_http_and_never_double_leases() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dbs.dir.path())
            .env("RUST_LOG", "warn")
            .env("TMPDIR", dbs.dir.path())
            .args([
                "bench",
                "leases",
                "--accounts",
                "6",
                "--workers",
                "8",
                "--cycles",
                "120",
            ]);
        if let Backend::Postgres { server_url } = &backend {
            cmd.arg("--database-url").arg(server_url);
        }
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
        assert_eq!(report["bench"], "leases");
        assert_eq!(report["backend"], backend.name());
        assert_eq!(
            (&report["accounts"], &report["workers"], &report["cycles"]),
            (&json!(6), &json!(8), &json!(120)),
            "{report}"
        );
        assert_eq!(report["double_leases"], 0, "{report}");
        let rate = report["cycles_per_sec"].as_f64().unwrap();
        let (p50, p99) = (
            report["acquire_p50_ms"].as_f64().unwrap(),
            report["acquire_p99_ms"].as_f64().unwrap(),
        );
        assert!(rate > 0.0 && 0.0 < p50 && p50 <= p99, "{report}");
        // More workers than accounts: some acquires found every account lent.
        assert!(report["unavailable_answers"].as_u64().is_some(), "{report}");
        let left: Vec<_> = std::fs::read_dir(dbs.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("poolkeeper-bench-")
            })
            .collect();
        assert!(left.is_empty(), "the temp dir is removed");
    })
    .await;
}

#[tokio::test]
async fn bench_leases_with_a_rate_starts_its_cycles_on_schedule() {
    let dbs = TestDbs::new(&Backend::Sqlite).await;
    let bench = |rate: &str| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dbs.dir.path())
            .env("RUST_LOG", "warn")
            .env("TMPDIR", dbs.dir.path())
            .args(["bench", "leases", "--accounts", "6", "--workers", "4"])
            .args(["--cycles", "100", &format!("--rate={rate}")]);
        run(cmd)
    };
    let (code, out, err) = bench("200");
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["rate"], 200.0, "{report}");
    assert_eq!(report["cycles"], 100, "{report}");
    assert_eq!(report["double_leases"], 0, "{report}");
    // The last of 100 cycles is due 0.495 s in, so the run cannot go faster than about 200 a
    // second; unpaced, four workers do thousands.
    let rate = report["cycles_per_sec"].as_f64().unwrap();
    assert!((100.0..=203.0).contains(&rate), "{report}");
    let (late_p50, late_p99) = (
        report["start_late_p50_ms"].as_f64().unwrap(),
        report["start_late_p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 <= late_p50 && late_p50 <= late_p99, "{report}");

    for bad in ["0", "-5", "NaN", "fast"] {
        let (code, out, err) = bench(bad);
        assert_ne!(code, 0, "--rate {bad}: {out}");
        assert!(err.contains("--rate"), "--rate {bad}: {err}");
    }
}

#[tokio::test]
async fn bad_flags_and_values_exit_non_zero_naming_the_problem() {
    let dbs = TestDbs::new(&Backend::Sqlite).await;
    let mut cmd = poolkeeper(&dbs);
    cmd.args(["serve", "--bogus"]);
    let (code, _, err) = run(cmd);
    assert_ne!(code, 0);
    assert!(err.contains("--bogus"), "{err}");

    let mut cmd = poolkeeper(&dbs);
    cmd.args(["token", "create", "--name", "x", "--scope", "root"]);
    let (code, _, err) = run(cmd);
    assert_ne!(code, 0);
    assert!(
        err.contains("root") && err.contains("admin") && err.contains("worker"),
        "{err}"
    );

    let mut cmd = poolkeeper(&dbs);
    cmd.args(["migrate"])
        .env("POOLKEEPER_JOBS__MAX_ATTEMPTS", "many");
    let (code, _, err) = run(cmd);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("max_attempts"), "{err}");

    let mut cmd = poolkeeper(&dbs);
    cmd.args(["serve", "--listen", "not-an-address"]);
    let (code, _, err) = run(cmd);
    assert_ne!(code, 0);
    assert!(err.contains("--listen"), "{err}");

    for sub in [
        &["serve"][..],
        &["migrate"],
        &["admin", "create"],
        &["token", "create"],
        &["demo"],
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(sub).arg("--help");
        let (code, out, _) = run(cmd);
        assert_eq!(code, 0);
        assert!(out.contains("Usage:") && out.len() > 100, "{sub:?}: {out}");
    }
}

struct Served {
    child: tokio::process::Child,
    base: String,
    stdout: String,
}

async fn serve(dbs: &TestDbs, env: &[(&str, &str)]) -> Served {
    start_server(dbs, "serve", env).await
}

/// `serve` or `demo` on a free port; returns once the address and what follows it are printed.
async fn start_server(dbs: &TestDbs, command: &str, env: &[(&str, &str)]) -> Served {
    let mut cmd = tokio::process::Command::from(poolkeeper(dbs));
    cmd.args([command, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let base = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("serve prints its address")
            .unwrap()
            .expect("serve exited early");
        stdout.push_str(&line);
        stdout.push('\n');
        if let Some(url) = line.split("listening on ").nth(1) {
            break url.trim().to_string();
        }
    };
    // What follows the address (the first admin's password) is printed right after it; the demo
    // ends what it prints with how to stop it.
    let pause = if command == "demo" { 30_000 } else { 300 };
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(std::time::Duration::from_millis(pause), lines.next_line()).await
    {
        stdout.push_str(&line);
        stdout.push('\n');
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    Served {
        child,
        base,
        stdout,
    }
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

async fn login_status(base: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/api/admin/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn first_serve_creates_admin_with_a_private_password_file_and_sigterm_stops_cleanly() {
    let dbs = TestDbs::new(&Backend::Sqlite).await;
    let mut served = serve(&dbs, &[]).await;
    let file = dbs.dir.path().join("initial-admin-password");
    let password = std::fs::read_to_string(&file)
        .expect("password file")
        .trim()
        .to_string();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        served.stdout.contains(&password),
        "printed once: {}",
        served.stdout
    );
    assert_eq!(login_status(&served.base, &password).await, 200);
    assert_eq!(login_status(&served.base, "not-the-password").await, 401);

    // At rest on the embedded default, the process stays under 64 MiB resident.
    let pid = served.child.id().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status");
    assert!(
        rss_kib < 64 * 1024,
        "serve uses {rss_kib} KiB resident at rest"
    );

    sigterm(&served.child);
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), served.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");

    // The second start finds the admin and prints no password.
    let mut again = serve(&dbs, &[]).await;
    assert!(!again.stdout.contains(&password), "{}", again.stdout);
    assert!(!again.stdout.contains("Created admin"), "{}", again.stdout);
    sigterm(&again.child);
    again.child.wait().await.unwrap();
}

/// The peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// 100 parallel bad logins for one user from one address, then 100 from 100 addresses for 100
/// unknown users: at most the limit of the first burst is checked (the rest 429), the second is
/// checked a few at a time (the excess waits, then 503), and argon2's ~19 MiB per check never
/// takes the process past 128 MiB resident.
#[tokio::test]
async fn bursts_of_bad_logins_are_throttled_and_keep_memory_bounded() {
    let dbs = TestDbs::new(&Backend::Sqlite).await;
    let mut served = serve(&dbs, &[("POOLKEEPER_ADMIN_PASSWORD", "configured-pass-1")]).await;
    let pid = served.child.id().unwrap();
    let base = served.base.clone();

    let client = reqwest::Client::new();
    let attempts: Vec<_> = (0..100)
        .map(|i| {
            let req = client
                .post(format!("{base}/api/admin/login"))
                .json(&json!({"username": "admin", "password": format!("wrong-{i}")}));
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!((1..=5).contains(&checked), "{statuses:?}");
    assert!(refused >= 95, "{statuses:?}");

    // Many addresses (all of 127.0.0.0/8 is loopback) with a user each: not throttled, so every
    // attempt wants a password check.
    let attempts: Vec<_> = (0..100u8)
        .map(|i| {
            let client = reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 1, i + 1]))
                .build()
                .unwrap();
            let req = client
                .post(format!("{base}/api/admin/login"))
                .json(&json!({"username": format!("nobody{i}"), "password": "wrong-password"}));
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&401), "{statuses:?}");

    let peak = peak_rss_kib(pid);
    assert!(peak < 128 * 1024, "serve peaked at {peak} KiB resident");

    sigterm(&served.child);
    served.child.wait().await.unwrap();
}

#[tokio::test]
async fn configured_admin_password_is_used_and_no_file_is_written() {
    let dbs = TestDbs::new(&Backend::Sqlite).await;
    let mut served = serve(&dbs, &[("POOLKEEPER_ADMIN_PASSWORD", "configured-pass-1")]).await;
    assert!(!dbs.dir.path().join("initial-admin-password").exists());
    assert!(
        !served.stdout.contains("configured-pass-1"),
        "{}",
        served.stdout
    );
    assert_eq!(login_status(&served.base, "configured-pass-1").await, 200);
    sigterm(&served.child);
    served.child.wait().await.unwrap();
}

#[tokio::test]
async fn tokens_and_admins_are_managed_from_the_cli_while_serving() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let mut served = serve(&dbs, &[("POOLKEEPER_ADMIN_PASSWORD", "configured-pass-1")]).await;

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["token", "create", "--name", "ops-bot", "--scope", "admin"]);
        let (code, token, err) = run(cmd);
        assert_eq!(code, 0, "{err}");
        let token = token.trim().to_string();
        assert!(token.starts_with("pk_"), "{token}");
        let api = reqwest::Client::new();
        let me = || {
            let req = api.get(format!("{}/api/admin/me", served.base));
            let req = req.bearer_auth(&token);
            async move { req.send().await.unwrap().status() }
        };
        assert_eq!(me().await, 200);

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["token", "list"]);
        let (code, out, _) = run(cmd);
        assert_eq!(code, 0);
        assert!(out.contains("ops-bot") && out.contains("active"), "{out}");
        assert!(!out.contains(&token[3..]), "the value is never listed");

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["token", "revoke", "ops-bot"]);
        assert_eq!(run(cmd).0, 0);
        // The server reads a token at most once a second (`auth::TokenCache`).
        let revoked = std::time::Instant::now();
        wait_until(
            "the revoked token to be refused",
            std::time::Duration::from_secs(5),
            || async { me().await == 401 },
        )
        .await;
        assert!(
            revoked.elapsed() < std::time::Duration::from_millis(3_000),
            "refused only after {:?}",
            revoked.elapsed()
        );

        let mut cmd = poolkeeper(&dbs);
        cmd.args([
            "admin",
            "create",
            "--username",
            "second",
            "--password-stdin",
        ])
        .stdin(Stdio::piped());
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"second-pass-1\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        let res = api
            .post(format!("{}/api/admin/login", served.base))
            .json(&json!({"username": "second", "password": "second-pass-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["admin", "passwd", "--username", "admin"]);
        let (code, out, _) = run(cmd);
        assert_eq!(code, 0);
        let new_password = out
            .lines()
            .find_map(|l| l.strip_prefix("Password: "))
            .expect("generated password printed")
            .trim();
        assert_eq!(login_status(&served.base, new_password).await, 200);
        assert_eq!(login_status(&served.base, "configured-pass-1").await, 401);

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["admin", "passwd", "--username", "ghost"]);
        let (code, _, err) = run(cmd);
        assert_ne!(code, 0);
        assert!(err.contains("ghost"), "{err}");

        sigterm(&served.child);
        served.child.wait().await.unwrap();
    })
    .await;
}

/// A `poolkeeper serve` killed with SIGKILL in the middle of a job: after the visibility timeout the
/// next process rescues the job, runs it once more, and it ends `succeeded` with its side effect
/// (the "done" line) recorded exactly once.
#[tokio::test]
async fn job_of_a_killed_process_is_rescued_and_its_side_effect_happens_once() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let env = [
            ("POOLKEEPER_JOBS__DIAGNOSTIC_HANDLERS", "true"),
            ("POOLKEEPER_JOBS__VISIBILITY_TIMEOUT_SECONDS", "2"),
            ("POOLKEEPER_JOBS__POLL_INTERVAL_MS", "50"),
            ("POOLKEEPER_ADMIN_PASSWORD", "configured-pass-1"),
        ];
        let mut first = serve(&dbs, &env).await;
        let users =
            poolkeeper::db::UsersDb::open(&dbs.config.users_database_url(), &Default::default())
                .await
                .unwrap();
        let effects = dbs.dir.path().join("effects.log");
        let job = poolkeeper::store::jobs::NewJob::new(
            "diagnostic.sleep",
            json!({"ms": 1500, "append_to": effects.display().to_string()}),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let (job, _) = poolkeeper::store::jobs::enqueue(&users, &job, 3, now)
            .await
            .unwrap();
        let read = || std::fs::read_to_string(&effects).unwrap_or_default();
        wait_until(
            "the job to start",
            std::time::Duration::from_secs(20),
            || async { read().contains("start") },
        )
        .await;
        let pid = first.child.id().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        first.child.wait().await.unwrap();
        let stuck = poolkeeper::store::jobs::get(&users, &job.id).await.unwrap();
        assert_eq!(
            (stuck.status.as_str(), stuck.attempts),
            ("running", 1),
            "the dead process still holds it"
        );

        let mut second = serve(&dbs, &env).await;
        let done = rescued(&users, &job.id).await;
        assert_eq!(done.attempts, 2, "the lost attempt counts");
        let log = read();
        assert_eq!(log.matches("start").count(), 2, "{log}");
        assert_eq!(
            log.matches("done").count(),
            1,
            "the side effect happened exactly once: {log}"
        );
        assert!(log.contains(&format!("done {} attempt 2", job.id)), "{log}");
        sigterm(&second.child);
        second.child.wait().await.unwrap();
    })
    .await;
}

/// A client logged in to `base` as admin; returns it with the CSRF token.
/// Waits (up to a minute) for a job a killed process left running to be rescued and succeed.
async fn rescued(users: &poolkeeper::db::UsersDb, id: &str) -> poolkeeper::store::jobs::Job {
    let what = format!("job {id} to be rescued and succeed");
    wait_until(&what, std::time::Duration::from_secs(60), || async {
        let row = poolkeeper::store::jobs::get(users, id).await.unwrap();
        match row.status.as_str() {
            "succeeded" => Some(row),
            "failed" | "cancelled" => {
                panic!("the rescued job ended {}: {:?}", row.status, row.last_error)
            }
            _ => None,
        }
    })
    .await
}

async fn admin_client(base: &str, password: &str) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let res = client
        .post(format!("{base}/api/admin/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    (client, body["csrf_token"].as_str().unwrap().to_string())
}

async fn post_json(
    client: &reqwest::Client,
    base: &str,
    csrf: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let res = client
        .post(format!("{base}{path}"))
        .header("x-csrf-token", csrf)
        .header("origin", base)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(status < 300, "{path}: {status} {body}");
    body
}

#[tokio::test]
async fn sync_killed_mid_run_is_rescued_and_ends_in_the_state_of_an_uninterrupted_run() {
    use poolkeeper::crypto::Credential;
    use poolkeeper::providers::sim::{SimOrg, SimProvider};
    use poolkeeper::providers::{MemberStatus, SIM_STATE_DIR};

    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let env = [
            ("POOLKEEPER_JOBS__VISIBILITY_TIMEOUT_SECONDS", "2"),
            ("POOLKEEPER_JOBS__POLL_INTERVAL_MS", "50"),
            ("POOLKEEPER_ADMIN_PASSWORD", "configured-pass-1"),
            ("POOLKEEPER_POOL_AUTO_INVITE_MISSING", "true"),
            ("POOLKEEPER_CHILD_EMAIL_DOMAIN", "kids.test"),
        ];
        // The simulator's state is a directory in the data dir: seed it before the server reads it.
        let sim_dir = dbs.dir.path().join(SIM_STATE_DIR);
        let cred = Credential::new("cookie-slow");
        let mut org = SimOrg::new("slow", "owner@slow.test", 10);
        org.teams[0].members.push(poolkeeper::providers::sim::SimMember {
            email: "a@slow.test".into(),
            name: "a".into(),
            status: MemberStatus::Active,
        });
        org.faults.latency_ms = 400;
        SimProvider::new(sim_dir.clone()).put_org(&cred, org).unwrap();
        let sim_state = || {
            SimProvider::new(sim_dir.clone())
                .org(&cred)
                .unwrap()
                .unwrap()
        };

        let mut first = serve(&dbs, &env).await;
        let (client, csrf) = admin_client(&first.base, "configured-pass-1").await;
        let group = post_json(&client, &first.base, &csrf, "/api/admin/pool-groups", json!({"name": "g1"})).await;
        let group = group["id"].as_i64().unwrap();
        let mother = post_json(
            &client,
            &first.base,
            &csrf,
            "/api/admin/mothers",
            json!({"name": "slow", "provider": "sim", "credential": "cookie-slow", "seat_limit": 3}),
        )
        .await;
        let mother = mother["id"].as_i64().unwrap();
        let queued = post_json(
            &client,
            &first.base,
            &csrf,
            &format!("/api/admin/pool-groups/{group}/sync/mother/{mother}"),
            json!({}),
        )
        .await;
        let job_id = queued["job_id"].as_str().unwrap().to_string();

        // Kill the process once the team is renamed and before the invites are all out.
        wait_until("the sync to start", std::time::Duration::from_secs(30), || async {
            sim_state().renames > 0
        })
        .await;
        let pid = first.child.id().unwrap().to_string();
        assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
        first.child.wait().await.unwrap();
        assert!(sim_state().invites_sent < 2, "killed mid-run");

        let mut second = serve(&dbs, &env).await;
        let users =
            poolkeeper::db::UsersDb::open(&dbs.config.users_database_url(), &Default::default())
                .await
                .unwrap();
        let done = rescued(&users, &job_id).await;
        assert_eq!(done.attempts, 2, "the lost attempt counts");

        // The state of an uninterrupted run (see tests/sync.rs auto_invite_fills_free_seats_once).
        let org = sim_state();
        assert_eq!(org.renames, 1);
        assert_eq!(org.invites_sent, 2, "no invite was sent twice");
        let pool =
            poolkeeper::db::PoolDb::open(&dbs.config.pool_database_url(), &Default::default())
                .await
                .unwrap();
        let d = poolkeeper::store::mothers::get_detail(&pool, mother).await.unwrap();
        assert_eq!(d.children.len(), 3);
        assert_eq!(d.mother.usage.seats_used, 1);
        assert_eq!(d.mother.usage.seats_held, 2);
        assert_eq!(d.teams.len(), 1);
        assert_eq!(d.teams[0].name, org.teams[0].name);
        let session = queued["session_id"].as_str().unwrap();
        let (client2, _) = admin_client(&second.base, "configured-pass-1").await;
        let s: serde_json::Value = client2
            .get(format!("{}/api/admin/sync-sessions/{session}", second.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s["status"], "completed", "{s}");
        sigterm(&second.child);
        second.child.wait().await.unwrap();
    })
    .await;
}

/// The demo's printed password (`Password: X (from FILE)`).
fn demo_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Password: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("demo prints the password: {stdout}"))
        .to_string()
}

async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> serde_json::Value {
    let res = client.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

#[tokio::test]
async fn demo_starts_with_sample_organisations_synced_once_and_restarts_without_duplicates() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let mut first =
            start_server(&dbs, "demo", &[("POOLKEEPER_JOBS__POLL_INTERVAL_MS", "50")]).await;
        assert!(
            first.stdout.contains("Sample data: pool group `demo`")
                && first
                    .stdout
                    .contains("3 sim mother(s): acme, globex, initech")
                && first.stdout.contains("3 sync job(s) queued"),
            "{}",
            first.stdout
        );
        let password = demo_password(&first.stdout);
        let (client, _) = admin_client(&first.base, &password).await;

        let groups = get_json(&client, &first.base, "/api/admin/pool-groups").await;
        assert_eq!(groups["total"], 1, "{groups}");
        let group = &groups["items"][0];
        assert_eq!(group["name"], "demo");
        assert_eq!(group["settings"]["auto_invite"], true);
        assert_eq!(group["mother_count"], 3);
        let group_id = group["id"].as_i64().unwrap();

        // The runner syncs each sample mother once; auto-invite fills every free seat.
        let jobs = wait_until(
            "the sample syncs to end",
            std::time::Duration::from_secs(60),
            || async {
                let jobs = get_json(
                    &client,
                    &first.base,
                    "/api/admin/jobs?type=pool_sync_mother",
                )
                .await;
                let items = jobs["items"].as_array().unwrap();
                assert!(
                    items.iter().all(|j| j["status"] != "failed"),
                    "a sample sync failed: {jobs}"
                );
                let done = items.len() == 3 && items.iter().all(|j| j["status"] == "succeeded");
                done.then_some(jobs)
            },
        )
        .await;
        assert_eq!(jobs["total"], 3);
        let mothers = get_json(
            &client,
            &first.base,
            &format!("/api/admin/mothers?pool_group_id={group_id}"),
        )
        .await;
        assert_eq!(mothers["total"], 3, "{mothers}");
        for m in mothers["items"].as_array().unwrap() {
            assert_eq!(m["status"], "active", "{m}");
            assert_eq!(
                m["usage"]["seats_free"], 0,
                "auto-invite filled the seats: {m}"
            );
            assert!(m["usage"]["seats_held"].as_i64().unwrap() >= 5, "{m}");
        }
        sigterm(&first.child);
        first.child.wait().await.unwrap();

        // A second start on the same data: nothing added, nothing queued again.
        let mut second = start_server(&dbs, "demo", &[]).await;
        assert!(
            second
                .stdout
                .contains("already imported on an earlier start"),
            "{}",
            second.stdout
        );
        let (client, _) = admin_client(&second.base, &demo_password(&second.stdout)).await;
        let groups = get_json(&client, &second.base, "/api/admin/pool-groups").await;
        assert_eq!(groups["total"], 1, "{groups}");
        assert_eq!(groups["items"][0]["mother_count"], 3);
        let mothers = get_json(&client, &second.base, "/api/admin/mothers").await;
        assert_eq!(mothers["total"], 3, "{mothers}");
        let jobs = get_json(
            &client,
            &second.base,
            "/api/admin/jobs?type=pool_sync_mother",
        )
        .await;
        assert_eq!(jobs["total"], 3, "no second sync: {jobs}");
        sigterm(&second.child);
        second.child.wait().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn scim_sync_killed_mid_run_is_rescued_and_ends_in_the_state_of_an_uninterrupted_run() {
    use common::scim::{Faults, OWNER, ScimServer, TOKEN, proxy};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    each_backend(|backend| async move {
        let Some(server) = ScimServer::start().await else {
            return;
        };
        let teams = server.seed_acme().await;
        let faults = Arc::new(Faults::default());
        // Slow calls stretch the sync over seconds, so the kill lands in the middle.
        faults.latency_ms.store(150, Ordering::SeqCst);
        let base = proxy(&server, faults.clone()).await;
        let dbs = TestDbs::new(&backend).await;
        let env = [
            ("POOLKEEPER_JOBS__VISIBILITY_TIMEOUT_SECONDS", "2"),
            ("POOLKEEPER_JOBS__POLL_INTERVAL_MS", "50"),
            ("POOLKEEPER_ADMIN_PASSWORD", "configured-pass-1"),
            ("POOLKEEPER_POOL_AUTO_INVITE_MISSING", "true"),
            ("POOLKEEPER_CHILD_EMAIL_DOMAIN", "kids.test"),
        ];
        let mut first = serve(&dbs, &env).await;
        let (client, csrf) = admin_client(&first.base, "configured-pass-1").await;
        let group = post_json(&client, &first.base, &csrf, "/api/admin/pool-groups", json!({"name": "g1"})).await;
        let group = group["id"].as_i64().unwrap();
        let imported = post_json(
            &client,
            &first.base,
            &csrf,
            "/api/admin/import-cookie",
            json!({"cookie": TOKEN, "mode": "pool", "pool_group_id": group, "provider": "scim",
                "provider_config": {"base_url": base, "owner_email": OWNER, "organisation": "acme"}}),
        )
        .await;
        let job_id = imported["job_id"].as_str().unwrap().to_string();
        let mother = imported["mother_id"].as_i64().unwrap();
        let patches = || {
            faults
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(method, _, _)| method == "PATCH")
                .count()
        };

        // Kill the process after both renames and the first addition, before the other five.
        wait_until("the sync to get going", std::time::Duration::from_secs(60), || async {
            patches() >= 3
        })
        .await;
        let pid = first.child.id().unwrap().to_string();
        assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
        first.child.wait().await.unwrap();
        assert!(patches() < 2 + 6, "killed mid-run");
        faults.latency_ms.store(0, Ordering::SeqCst);
        let names_at_kill = server.group_names().await;
        assert!(names_at_kill.iter().all(|n| n.starts_with("g1-")), "{names_at_kill:?}");

        let mut second = serve(&dbs, &env).await;
        let users =
            poolkeeper::db::UsersDb::open(&dbs.config.users_database_url(), &Default::default())
                .await
                .unwrap();
        let done = rescued(&users, &job_id).await;
        assert_eq!(done.attempts, 2, "the lost attempt counts");

        // The state of an uninterrupted run (tests/scim.rs): the teams keep the names the first
        // run gave them (a second rename would take new numbers), six members were added, and no
        // user was created twice. (The addition in flight at the kill may be sent again.)
        assert_eq!(server.group_names().await, names_at_kill);
        assert_eq!(server.all_member_names(&teams).await.len(), 8);
        let listed = server.call(reqwest::Method::GET, "/Users?count=100", None).await;
        assert_eq!(listed["totalResults"], 8, "owner, kid1 and six, each once");
        let pool =
            poolkeeper::db::PoolDb::open(&dbs.config.pool_database_url(), &Default::default())
                .await
                .unwrap();
        let d = poolkeeper::store::mothers::get_detail(&pool, mother).await.unwrap();
        assert_eq!(d.children.len(), 7);
        assert_eq!(d.mother.usage.seats_used, 7);
        sigterm(&second.child);
        second.child.wait().await.unwrap();
    })
    .await;
}

/// `poolkeeper lease exec` against `t` with a worker token, in `dir`; waits for it to end.
async fn lease_exec(
    t: &common::TestApp,
    token: &str,
    dir: &std::path::Path,
    flags: &[&str],
    command: &[&str],
) -> (i32, String, String) {
    let out = lease_exec_command(t, token, dir, flags, command)
        .output()
        .await
        .expect("run lease exec");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn lease_exec_command(
    t: &common::TestApp,
    token: &str,
    dir: &std::path::Path,
    flags: &[&str],
    command: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("POOLKEEPER_TOKEN", token)
        .env_remove("POOLKEEPER_SERVER")
        .args(["--data-dir", &dir.display().to_string()])
        .args(["lease", "exec", "--server", &t.base])
        .args(flags)
        .arg("--")
        .args(command);
    cmd
}

async fn create_account(t: &common::TestApp, admin: &str, body: serde_json::Value) -> i64 {
    let (status, body) = t
        .send_json(
            admin,
            reqwest::Method::POST,
            "/api/admin/accounts",
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

async fn last_usage(t: &common::TestApp, admin: &str, id: i64) -> serde_json::Value {
    let (status, body) = t
        .send_json(
            admin,
            reqwest::Method::GET,
            &format!("/api/admin/accounts/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn lease_exec_hands_the_account_to_the_command_by_environment_and_releases_by_exit_status() {
    use poolkeeper::auth::Scope;
    each_backend(|backend| async move {
        let t = common::TestApp::spawn(&backend).await;
        let admin = t.token("admin-cli", Scope::Admin).await;
        let worker = t.token("worker-cli", Scope::Worker).await;
        let dir = tempfile::tempdir().unwrap();
        let first = create_account(
            &t,
            &admin,
            json!({"login": "first@example.org", "password": "pw-first-9431", "phone": "+4912"}),
        )
        .await;

        let script = r#"test -n "$POOLKEEPER_PASSWORD" && echo "$POOLKEEPER_LOGIN $POOLKEEPER_PHONE $POOLKEEPER_LEASE_ID" > seen
            tr '\0' ' ' < /proc/$$/cmdline > argv
            tr '\0' ' ' < /proc/$PPID/cmdline > parent-argv
            echo "token=${POOLKEEPER_TOKEN:-none}" > token"#;
        let (code, out, err) = lease_exec(
            &t,
            &worker,
            dir.path(),
            &["--worker", "cli-worker", "--mission", "m-cli"],
            &["sh", "-c", script],
        )
        .await;
        assert_eq!(code, 0, "{out}{err}");
        let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(fields[..2], ["first@example.org", "+4912"], "{seen}");
        assert_eq!(fields[2].len(), 36, "a lease id: {seen}");
        for file in ["argv", "parent-argv"] {
            let argv = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(argv.contains("sh") || argv.contains("poolkeeper"), "{argv}");
            assert!(!argv.contains("pw-first-9431"), "no password in {file}: {argv}");
        }
        let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
        assert_eq!(token.trim(), "token=none", "the command does not get the worker token");
        assert!(!out.contains("pw-first") && !err.contains("pw-first"), "{out}{err}");
        let account = last_usage(&t, &admin, first).await;
        let usage = &account["recent_usage"][0];
        assert_eq!(usage["result"], "success", "{account}");
        assert_eq!(usage["mission"], "m-cli");
        assert_eq!(usage["lease_id"], fields[2]);
        assert_eq!(account["status"], "cooldown");

        // Exit 11 is login_fail, and the command's status is poolkeeper's.
        let second = create_account(
            &t,
            &admin,
            json!({"login": "second@example.org", "password": "pw-second"}),
        )
        .await;
        let (code, out, err) = lease_exec(&t, &worker, dir.path(), &[], &["sh", "-c", "exit 11"]).await;
        assert_eq!(code, 11, "{out}{err}");
        let account = last_usage(&t, &admin, second).await;
        assert_eq!(account["recent_usage"][0]["result"], "login_fail", "{account}");
        assert_eq!(account["consecutive_failures"], 1);

        // Any other status is error, with the status in the usage log.
        let third = create_account(
            &t,
            &admin,
            json!({"login": "third@example.org", "password": "pw-third"}),
        )
        .await;
        let (code, _, _) = lease_exec(&t, &worker, dir.path(), &[], &["sh", "-c", "exit 3"]).await;
        assert_eq!(code, 3);
        let account = last_usage(&t, &admin, third).await;
        assert_eq!(account["recent_usage"][0]["result"], "error");
        assert_eq!(
            account["recent_usage"][0]["error_message"],
            "command exited with status 3"
        );

        // Every account rests now: --wait 0 gives up at once with EX_TEMPFAIL, running nothing.
        let (code, _, err) = lease_exec(
            &t,
            &worker,
            dir.path(),
            &["--wait", "0"],
            &["sh", "-c", "touch ran"],
        )
        .await;
        assert_eq!(code, 75, "{err}");
        assert!(err.contains("no account"), "{err}");
        assert!(!dir.path().join("ran").exists());

        // A command that cannot start: 127, and the lease is released as error.
        let fourth = create_account(
            &t,
            &admin,
            json!({"login": "fourth@example.org", "password": "pw-fourth"}),
        )
        .await;
        let (code, _, err) = lease_exec(&t, &worker, dir.path(), &[], &["/nonexistent/cmd"]).await;
        assert_eq!(code, 127, "{err}");
        let account = last_usage(&t, &admin, fourth).await;
        assert_eq!(account["recent_usage"][0]["result"], "error", "{account}");

        // Without a worker token: refused before anything runs.
        let (code, _, err) = lease_exec(&t, &admin, dir.path(), &[], &["true"]).await;
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("insufficient_scope"), "{err}");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn lease_exec_renews_while_the_command_runs_and_waits_for_a_free_account() {
    use poolkeeper::auth::Scope;
    each_backend(|backend| async move {
        let t = common::TestApp::spawn_with(
            &backend,
            |c| c.leases.cooldown_seconds = 1,
            poolkeeper::clock::system(),
        )
        .await;
        let admin = t.token("admin-cli", Scope::Admin).await;
        let worker = t.token("worker-cli", Scope::Worker).await;
        let dir = tempfile::tempdir().unwrap();
        let id = create_account(
            &t,
            &admin,
            json!({"login": "renew@example.org", "password": "pw-renew"}),
        )
        .await;
        // A 3 s lease renewed every second outlives a command of 3.5 s.
        let (code, out, err) =
            lease_exec(&t, &worker, dir.path(), &["--ttl", "3"], &["sleep", "3.5"]).await;
        assert_eq!(code, 0, "{out}{err}");
        let (_, leases) = t
            .send_json(&admin, reqwest::Method::GET, "/api/admin/leases", None)
            .await;
        let lease = &leases["items"][0];
        assert_eq!(lease["result"], "success", "{leases}");
        assert!(lease["renewals"].as_i64().unwrap() >= 2, "{leases}");
        assert_eq!(
            last_usage(&t, &admin, id).await["recent_usage"][0]["result"],
            "success"
        );

        // The account cools down for a second; --wait 5 waits for it (Retry-After) and runs.
        let (code, _, err) = lease_exec(&t, &worker, dir.path(), &["--wait", "5"], &["true"]).await;
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("trying again"), "it had to wait: {err}");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn lease_exec_passes_sigterm_to_the_command_and_releases_error() {
    use poolkeeper::auth::Scope;
    each_backend(|backend| async move {
        let t = common::TestApp::spawn(&backend).await;
        let admin = t.token("admin-cli", Scope::Admin).await;
        let worker = t.token("worker-cli", Scope::Worker).await;
        let dir = tempfile::tempdir().unwrap();
        let id = create_account(
            &t,
            &admin,
            json!({"login": "signal@example.org", "password": "pw-signal"}),
        )
        .await;
        let script = r#"trap 'echo term > got-term; exit 3' TERM
            echo started > started
            while true; do sleep 0.05; done"#;
        let mut child = lease_exec_command(&t, &worker, dir.path(), &[], &["sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = dir.path().join("started");
        wait_until(
            "the command to start",
            std::time::Duration::from_secs(20),
            || async { started.exists() },
        )
        .await;
        sigterm(&child);
        let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
            .await
            .expect("lease exec ends after SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(3), "the command's own status");
        assert!(
            dir.path().join("got-term").exists(),
            "the command got SIGTERM"
        );
        let account = last_usage(&t, &admin, id).await;
        let usage = &account["recent_usage"][0];
        assert_eq!(usage["result"], "error", "{account}");
        assert_eq!(usage["error_message"], "interrupted by SIGTERM");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn accounts_import_and_status_from_a_clean_data_dir() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let file = dbs.dir.path().join("accounts.csv");
        std::fs::write(
            &file,
            "login,password,phone,pool,team\n\
             a@example.org,pw-a-1234,+1,,red\n\
             b@example.org,pw-b-1234,,other,\n\
             a@example.org,pw-a-again,,,\n\
             c@example.org,,,,\n",
        )
        .unwrap();
        let mut cmd = poolkeeper(&dbs);
        cmd.args(["accounts", "import"]).arg(&file);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 1, "a row was refused: {out}{err}");
        assert!(
            out.contains("4 rows, created 2, duplicates 1, refused 1"),
            "{out}"
        );
        assert!(out.contains("row 3 (a@example.org): duplicate"), "{out}");
        assert!(out.contains("row 4 (c@example.org): refused: password is required"), "{out}");
        assert!(err.contains("rows 4: created 2"), "progress on stderr: {err}");
        assert!(!out.contains("pw-") && !err.contains("pw-"), "{out}{err}");

        // Again: nothing new; duplicates alone are no failure.
        std::fs::write(
            dbs.dir.path().join("again.jsonl"),
            "{\"login\": \"a@example.org\", \"password\": \"x\"}\n\n{\"login\": \"d@example.org\", \"password\": \"pw-d\", \"metadata\": {\"k\": 1}}\n",
        )
        .unwrap();
        let mut cmd = poolkeeper(&dbs);
        cmd.args(["accounts", "import", "again.jsonl", "--pool", "default"]);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("2 rows, created 1, duplicates 1, refused 0"), "{out}");

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["accounts", "status", "--json"]);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{err}");
        let counts: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(counts["total"], 3, "{counts}");
        assert_eq!(counts["available"], 3, "{counts}");
        assert_eq!(counts["in_use"], 0, "{counts}");

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["accounts", "status", "--pool", "other"]);
        let (code, out, _) = run(cmd);
        assert_eq!(code, 0);
        assert!(out.contains("pool: other"), "{out}");
        assert!(
            out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["total", "1"]),
            "{out}"
        );

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["accounts", "status", "--pool", "bad pool!"]);
        let (code, _, err) = run(cmd);
        assert_eq!(code, 2);
        assert!(err.contains("pool must be"), "{err}");

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["accounts", "import", "missing.csv"]);
        let (code, _, err) = run(cmd);
        assert_eq!(code, 2);
        assert!(err.contains("missing.csv"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn sim_add_org_prints_a_credential_the_simulator_knows_and_is_refused_in_production() {
    let dbs = TestDbs::new(&Backend::Sqlite).await;
    let mut cmd = poolkeeper(&dbs);
    cmd.args([
        "sim",
        "add-org",
        "Pied Piper",
        "--seats",
        "5",
        "--members",
        "richard@pp.example,jared@pp.example",
    ]);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{out}{err}");
    let credential = out.trim();
    assert!(credential.starts_with("sim-"), "{out}");
    let sim = poolkeeper::providers::sim::SimProvider::new(
        dbs.dir.path().join(poolkeeper::providers::SIM_STATE_DIR),
    );
    let org = sim
        .org(&poolkeeper::crypto::Credential::new(credential.to_string()))
        .unwrap()
        .expect("the printed credential reaches the new organisation");
    assert_eq!(org.name, "Pied Piper");
    assert_eq!(org.teams[0].seats, 5);
    assert_eq!(org.teams[0].members.len(), 3, "owner and two members");

    let mut cmd = poolkeeper(&dbs);
    cmd.env("POOLKEEPER_ENV", "production")
        .args(["sim", "add-org", "Nope", "--seats", "2"]);
    let (code, out, err) = run(cmd);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("providers.sim.enabled"), "{err}");
    assert!(out.trim().is_empty(), "{out}");

    let mut cmd = poolkeeper(&dbs);
    cmd.args(["sim", "add-org", "Bad", "--seats", "0"]);
    let (code, _, err) = run(cmd);
    assert_ne!(code, 0);
    assert!(err.contains("seats must be between 1 and 1000"), "{err}");
}

/// `admin create --role` and `admin set-role` / `disable` / `enable`: the role reaches the users
/// database, and the last active admin can be neither demoted nor disabled.
#[tokio::test]
async fn admin_roles_are_set_from_the_cli_and_the_last_admin_is_kept() {
    each_backend(|backend| async move {
        let dbs = TestDbs::new(&backend).await;
        let create = |name: &str, role: Option<&str>| {
            let mut cmd = poolkeeper(&dbs);
            cmd.args(["admin", "create", "--username", name]);
            if let Some(role) = role {
                cmd.args(["--role", role]);
            }
            run(cmd)
        };
        let (code, out, err) = create("boss", None);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("with role admin"),
            "the default role is admin: {out}"
        );
        let (code, out, err) = create("ops", Some("operator"));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("with role operator"), "{out}");
        let (code, _, err) = create("x", Some("root"));
        assert_ne!(code, 0);
        assert!(
            err.contains("root") && err.contains("operator") && err.contains("viewer"),
            "{err}"
        );

        let (_, users) = poolkeeper::server::open_and_migrate(&dbs.config)
            .await
            .unwrap();
        let role_of = |name: &'static str| {
            let users = users.clone();
            async move {
                let v = poolkeeper::store::admins::view_by_username(&users, name)
                    .await
                    .unwrap()
                    .unwrap();
                (v.role, v.disabled_at.is_some())
            }
        };
        assert_eq!(role_of("ops").await, ("operator".to_string(), false));

        let set_role = |name: &str, role: &str| {
            let mut cmd = poolkeeper(&dbs);
            cmd.args(["admin", "set-role", name, role]);
            run(cmd)
        };
        let (code, out, err) = set_role("ops", "viewer");
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("`ops` now has role viewer"), "{out}");
        assert_eq!(role_of("ops").await.0, "viewer");

        // boss is the only admin: neither demoted nor disabled.
        let (code, _, err) = set_role("boss", "operator");
        assert_ne!(code, 0);
        assert!(err.contains("last active admin"), "{err}");
        let mut cmd = poolkeeper(&dbs);
        cmd.args(["admin", "disable", "boss"]);
        let (code, _, err) = run(cmd);
        assert_ne!(code, 0);
        assert!(err.contains("last active admin"), "{err}");
        assert_eq!(role_of("boss").await, ("admin".to_string(), false));

        let (code, _, err) = set_role("ghost", "viewer");
        assert_ne!(code, 0);
        assert!(err.contains("ghost"), "{err}");

        let mut cmd = poolkeeper(&dbs);
        cmd.args(["admin", "disable", "ops"]);
        assert_eq!(run(cmd).0, 0);
        assert_eq!(role_of("ops").await, ("viewer".to_string(), true));
        let mut cmd = poolkeeper(&dbs);
        cmd.args(["admin", "enable", "ops"]);
        assert_eq!(run(cmd).0, 0);
        assert_eq!(role_of("ops").await, ("viewer".to_string(), false));
    })
    .await;
}
