//! The web UI in a real browser (Debian's chromium through chromedriver): a wrong password shows an
//! error, the right one shows the dashboard with both databases OK, logout returns to the login page;
//! the import dialog follows its sync job to the end, and "Sync all" says how many jobs it queued.
//! Under CI (`CI` set) a missing browser fails the test; elsewhere it is skipped with a message.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{ADMIN_PASSWORD, Backend, TestApp, wait_until};
use fantoccini::{ClientBuilder, Locator};

fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Types `text` into the element with id `id`.
async fn type_into(
    browser: &fantoccini::Client,
    id: &str,
    text: &str,
) -> Result<(), fantoccini::error::CmdError> {
    browser.find(Locator::Id(id)).await?.send_keys(text).await
}

/// Clicks the element with id `id`.
async fn click(browser: &fantoccini::Client, id: &str) -> Result<(), fantoccini::error::CmdError> {
    browser.find(Locator::Id(id)).await?.click().await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A headless chromium driven through chromedriver, or `None` (outside CI) when not installed.
async fn start_browser() -> Option<(Driver, fantoccini::Client, tempfile::TempDir)> {
    let driver_bin = find_program("POOLKEEPER_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    let browser_bin = find_program("POOLKEEPER_CHROMIUM", &["/usr/bin/chromium"]);
    let (Some(driver_bin), Some(browser_bin)) = (driver_bin, browser_bin) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (see .ci/run)"
        );
        eprintln!(
            "skipping: chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
        );
        return None;
    };

    let port = free_port();
    let driver = Driver(
        Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = tempfile::tempdir().unwrap();
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": browser_bin,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let caps: fantoccini::wd::Capabilities = caps.as_object().unwrap().clone();
    let webdriver = format!("http://127.0.0.1:{port}");
    let browser = wait_until(
        "chromedriver to accept a session",
        Duration::from_secs(10),
        || async {
            ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps.clone())
                .connect(&webdriver)
                .await
                .ok()
        },
    )
    .await;
    Some((driver, browser, profile))
}

#[tokio::test]
async fn login_dashboard_and_logout_in_a_real_browser() {
    let Some((driver, browser, _profile)) = start_browser().await else {
        return;
    };

    let t = TestApp::spawn(&Backend::Sqlite).await;
    let result = async {
        browser.goto(&t.url("/")).await?;
        assert!(
            browser.current_url().await?.path().ends_with("/login"),
            "signed-out visitors land on the login page"
        );

        type_into(&browser, "username", "admin").await?;
        type_into(&browser, "password", "wrong-password").await?;
        click(&browser, "login-submit").await?;
        let error = browser
            .wait()
            .for_element(Locator::Id("login-error"))
            .await?
            .text()
            .await?;
        assert!(error.contains("Wrong username or password"), "{error}");

        type_into(&browser, "password", ADMIN_PASSWORD).await?;
        click(&browser, "login-submit").await?;
        browser.wait().for_element(Locator::Id("free-seats")).await?;
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        std::fs::write(shots.join("dashboard.png"), browser.screenshot().await?).unwrap();
        browser.goto(&t.url("/system")).await?;
        let pool = browser
            .wait()
            .for_element(Locator::Css("[data-testid=db-pool-status]"))
            .await?
            .text()
            .await?;
        let users = browser
            .find(Locator::Css("[data-testid=db-users-status]"))
            .await?
            .text()
            .await?;
        assert_eq!((pool.as_str(), users.as_str()), ("OK", "OK"));
        assert_eq!(
            browser.find(Locator::Id("version")).await?.text().await?,
            env!("CARGO_PKG_VERSION")
        );
        for label in [
            "Dashboard",
            "Pool groups",
            "Mothers",
            "Jobs",
            "Sync sessions",
            "Codes",
            "Users",
            "Accounts",
            "System",
        ] {
            browser.find(Locator::LinkText(label)).await?;
        }
        std::fs::write(shots.join("system.png"), browser.screenshot().await?).unwrap();

        // Accounts page: its cards render, and at 390 px wide nothing but the tables' own boxes
        // scrolls sideways.
        browser
            .find(Locator::LinkText("Accounts"))
            .await?
            .click()
            .await?;
        let total = browser
            .wait()
            .for_element(Locator::Id("stat-total"))
            .await?
            .text()
            .await?;
        assert_eq!(total, "0");
        browser.find(Locator::Id("usage-chart")).await?;
        browser.set_window_size(390, 844).await?;
        let fits = browser
            .execute(
                "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
                Vec::new(),
            )
            .await?;
        std::fs::write(shots.join("accounts-390.png"), browser.screenshot().await?).unwrap();
        assert_eq!(fits, serde_json::json!(true), "the Accounts page fits 390 px");
        browser.set_window_size(1280, 900).await?;

        // Codes page: the quota and the generate form render, and it fits 390 px too.
        browser
            .find(Locator::LinkText("Codes"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_element(Locator::Id("quota-available"))
            .await?;
        browser.find(Locator::Id("generate-form")).await?;
        browser.set_window_size(390, 844).await?;
        let fits = browser
            .execute(
                "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
                Vec::new(),
            )
            .await?;
        std::fs::write(shots.join("codes-390.png"), browser.screenshot().await?).unwrap();
        assert_eq!(fits, serde_json::json!(true), "the Codes page fits 390 px");
        // Every other page of the navigation fits a phone too (tables scroll in their own box).
        let mut too_wide = Vec::new();
        for (path, name) in [
            ("/", "dashboard"),
            ("/pool-groups", "groups"),
            ("/mothers", "mothers"),
            ("/jobs", "jobs"),
            ("/sync-sessions", "sync-sessions"),
            ("/invites", "users"),
            ("/audit", "audit"),
            ("/system", "system"),
        ] {
            browser.goto(&t.url(path)).await?;
            browser.wait().for_element(Locator::Css("main h1")).await?;
            let fits = browser
                .execute(
                    "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
                    Vec::new(),
                )
                .await?;
            std::fs::write(
                shots.join(format!("{name}-390.png")),
                browser.screenshot().await?,
            )
            .unwrap();
            if fits != serde_json::json!(true) {
                too_wide.push(path);
            }
        }
        assert!(too_wide.is_empty(), "wider than 390 px: {too_wide:?}");
        browser.set_window_size(1280, 900).await?;
        // The Audit page lists this session's login, by this admin.
        browser.goto(&t.url("/audit?action=login.success")).await?;
        let row = browser
            .wait()
            .for_element(Locator::Css("#audit-rows tbody tr"))
            .await?
            .text()
            .await?;
        assert!(row.contains("login.success") && row.contains("admin"), "{row}");
        std::fs::write(shots.join("audit.png"), browser.screenshot().await?).unwrap();

        // Jobs page: a job far in the future is pending; cancel it (confirming), then retry it.
        let now = poolkeeper::clock::Clock::now_ms(&poolkeeper::clock::SystemClock);
        let job = poolkeeper::store::jobs::NewJob {
            run_at: Some(now + 3_600_000),
            ..poolkeeper::store::jobs::NewJob::new(
                "noop",
                serde_json::json!({"from": "browser test"}),
            )
        };
        let (job, _) = poolkeeper::jobs::enqueue(&t.app().users, &job, 3, now)
            .await
            .unwrap();
        browser
            .find(Locator::LinkText("Jobs"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_element(Locator::Css(&format!("a[href='/jobs/{}']", job.id)))
            .await?
            .click()
            .await?;
        let status = browser
            .wait()
            .for_element(Locator::Id("job-status"))
            .await?
            .text()
            .await?;
        assert_eq!(status, "pending");
        assert!(
            browser
                .find(Locator::Id("payload"))
                .await?
                .text()
                .await?
                .contains("browser test")
        );
        browser.find(Locator::Id("cancel")).await?.click().await?;
        browser.accept_alert().await?;
        browser.wait().for_element(Locator::Id("retry")).await?;
        assert_eq!(
            browser
                .find(Locator::Id("job-status"))
                .await?
                .text()
                .await?,
            "cancelled"
        );
        browser.find(Locator::Id("retry")).await?.click().await?;
        browser.dismiss_alert().await?;
        assert_eq!(
            browser
                .find(Locator::Id("job-status"))
                .await?
                .text()
                .await?,
            "cancelled",
            "dismissing the confirmation does nothing"
        );
        browser.find(Locator::Id("retry")).await?.click().await?;
        browser.accept_alert().await?;
        // The job is due again: the server's runner may already have run it.
        wait_until(
            "the retried job to be pending, running or succeeded",
            Duration::from_secs(10),
            || async {
                let status = match browser.find(Locator::Id("job-status")).await {
                    Ok(el) => el.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                ["pending", "running", "succeeded"].contains(&status.as_str())
            },
        )
        .await;
        std::fs::write(shots.join("job.png"), browser.screenshot().await?).unwrap();

        browser.find(Locator::Id("logout")).await?.click().await?;
        browser
            .wait()
            .for_element(Locator::Id("login-submit"))
            .await?;
        assert!(browser.current_url().await?.path().ends_with("/login"));
        browser.goto(&t.url("/")).await?;
        assert!(
            browser.current_url().await?.path().ends_with("/login"),
            "the session ended"
        );
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    browser.close().await.ok();
    drop(driver);
    t.stop().await;
    result.expect("browser steps");
}

async fn log_in(
    browser: &fantoccini::Client,
    t: &TestApp,
) -> Result<(), fantoccini::error::CmdError> {
    browser.goto(&t.url("/login")).await?;
    type_into(browser, "username", "admin").await?;
    type_into(browser, "password", ADMIN_PASSWORD).await?;
    click(browser, "login-submit").await?;
    browser
        .wait()
        .for_element(Locator::Id("free-seats"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn import_dialog_follows_the_sync_job_and_sync_all_shows_the_count() {
    use poolkeeper::crypto::Credential;
    use poolkeeper::providers::sim::SimOrg;

    let Some((driver, browser, _profile)) = start_browser().await else {
        return;
    };
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| {
            c.child_email_domain = Some("kids.test".into());
            c.jobs.poll_interval_ms = 50;
        },
        poolkeeper::clock::system(),
    )
    .await;
    let group =
        poolkeeper::service::pool_groups::create(t.app().pool_ctx(), "web", None, Some(true))
            .await
            .unwrap();
    // Slow enough that the page shows the job before it ends and has to follow it.
    let mut org = SimOrg::new("acme", "owner@acme.test", 4);
    org.faults.latency_ms = 250;
    t.app()
        .providers
        .sim
        .put_org(&Credential::new("cookie-acme"), org)
        .unwrap();

    let result = async {
        log_in(&browser, &t).await?;
        browser.goto(&t.url("/mothers")).await?;
        let dialog = browser.find(Locator::Id("import-dialog")).await?;
        assert!(!dialog.is_displayed().await?, "the dialog starts closed");
        click(&browser, "open-import").await?;
        assert!(dialog.is_displayed().await?);
        let group_choice = browser.find(Locator::Id("import-group")).await?;
        assert!(
            !group_choice.is_displayed().await?,
            "user mode has no group choice"
        );

        // A credential the provider rejects: its reason, in the dialog.
        type_into(&browser, "import-cookie", "nobody-knows-me").await?;
        click(&browser, "import-submit").await?;
        let error = browser
            .wait()
            .for_element(Locator::Id("import-error"))
            .await?
            .text()
            .await?;
        assert!(error.contains("knows no organisation"), "{error}");

        // Pool mode: pick the group, import, and watch the sync job end.
        click(&browser, "import-mode-pool").await?;
        assert!(
            browser
                .find(Locator::Id("import-group"))
                .await?
                .is_displayed()
                .await?,
            "pool mode shows the group choice"
        );
        type_into(&browser, "import-cookie", "cookie-acme").await?;
        click(&browser, "import-submit").await?;
        let badge = browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#import-job-status[data-job-finished]"))
            .await?;
        assert_eq!(badge.text().await?, "succeeded");
        let link = browser
            .find(Locator::Id("import-job-link"))
            .await?
            .attr("href")
            .await?
            .unwrap_or_default();
        let job_id = link.trim_start_matches("/jobs/").to_string();
        let job = poolkeeper::store::jobs::get(&t.app().users, &job_id)
            .await
            .expect("the link names the sync job");
        assert_eq!(job.status, "succeeded");
        assert!(
            browser
                .find(Locator::Id("imported-mother"))
                .await?
                .text()
                .await?
                .contains("acme")
        );
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        std::fs::write(shots.join("import.png"), browser.screenshot().await?).unwrap();
        click(&browser, "import-job-link").await?;
        let status = browser
            .wait()
            .for_element(Locator::Id("job-status"))
            .await?
            .text()
            .await?;
        assert_eq!(status, "succeeded", "the link leads to the job's page");

        // Sync all on the group page: asks first, then says how many jobs it queued.
        browser
            .goto(&t.url(&format!("/pool-groups/{}", group.id)))
            .await?;
        browser.find(Locator::Id("sync-all")).await?.click().await?;
        browser.accept_alert().await?;
        let queued = browser
            .wait()
            .for_element(Locator::Id("sync-queued"))
            .await?
            .text()
            .await?;
        assert_eq!(queued, "Queued 1 sync job(s).");
        let jobs = browser
            .find(Locator::Id("sync-jobs-link"))
            .await?
            .attr("href")
            .await?;
        assert_eq!(jobs.as_deref(), Some("/jobs?type=pool_sync_mother"));
        std::fs::write(shots.join("sync-all.png"), browser.screenshot().await?).unwrap();
        click(&browser, "sync-session-link").await?;
        browser
            .wait()
            .for_element(Locator::Id("session-status"))
            .await?;
        assert!(
            browser
                .current_url()
                .await?
                .path()
                .starts_with("/sync-sessions/")
        );
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    browser.close().await.ok();
    drop(driver);
    t.stop().await;
    result.expect("browser steps");
}
