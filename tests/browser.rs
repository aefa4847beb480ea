//! The web UI in a real browser (Debian's chromium through chromedriver): a wrong password shows an
//! error, the right one shows the dashboard with both databases OK, logout returns to the login page;
//! the import dialog follows its sync job to the end, and "Sync all" says how many jobs it queued;
//! and a walk through the console at 1366x900 and 390x844 on each backend (login, dashboard,
//! a group's live preview, import in pool mode, Sync all and a reload, a failed job retried, a
//! running job cancelled, a bulk retry with the live Jobs table, a bad id), with a screenshot of
//! every step in `target/screenshots/walk-<backend>-<width>/` and no browser console error.
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
        // The console's messages, for `console_errors`.
        "goog:loggingPrefs": {"browser": "ALL"},
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

    // A webhook endpoint and a backup archive, so the System page shows both cards filled in.
    let t = TestApp::spawn_with(
        &Backend::Sqlite,
        |c| {
            c.webhooks = vec![poolkeeper::config::WebhookConfig {
                url: "https://hooks.example.org/poolkeeper".into(),
                events: vec!["mother_invalid".into(), "job_failed".into()],
                secret: Some(poolkeeper::config::Secret::new("browser-test-secret-0123")),
                secret_file: None,
            }];
        },
        poolkeeper::clock::system(),
    )
    .await;
    let backups = t.app().config.backup_dir();
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::write(
        backups.join("poolkeeper-backup-20261130T080000000Z.zip"),
        vec![0u8; 2 * 1024 * 1024],
    )
    .unwrap();
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
        assert_eq!(
            browser
                .find(Locator::Css("[data-testid=backup-size]"))
                .await?
                .text()
                .await?,
            "2.0 MiB"
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

/// Chromedriver's log of the browser console (`goog:loggingPrefs`), read and emptied: the legacy
/// `se/log` endpoint, which fantoccini has no method for.
#[derive(Debug)]
struct BrowserLog {
    session: String,
}

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        _session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", self.session))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_string()),
        )
    }
}

/// A Chrome DevTools command through chromedriver (a screenshot of the whole page).
#[derive(Debug)]
struct Cdp {
    session: String,
    body: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        _session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", self.session))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.body.to_string()))
    }
}

/// The console messages of level SEVERE (errors) since the last call.
async fn console_errors(
    browser: &fantoccini::Client,
) -> Result<Vec<String>, fantoccini::error::CmdError> {
    let session = browser.session_id().await?.unwrap_or_default();
    let entries = browser.issue_cmd(BrowserLog { session }).await?;
    Ok(entries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// Walks the console step by step at one window size, saving a screenshot of the whole page at
/// each step into `target/screenshots/walk-<width>/` and failing on any console error.
struct Walk<'a> {
    browser: &'a fantoccini::Client,
    dir: PathBuf,
    step: usize,
}

impl<'a> Walk<'a> {
    async fn new(
        browser: &'a fantoccini::Client,
        backend: &Backend,
        (width, height): (u32, u32),
    ) -> Result<Self, fantoccini::error::CmdError> {
        browser.set_window_size(width, height).await?;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/screenshots")
            .join(format!("walk-{}-{width}", backend.name()));
        std::fs::create_dir_all(&dir).unwrap();
        Ok(Self {
            browser,
            dir,
            step: 0,
        })
    }

    /// Saves the whole page as `NN-name.png` and fails on console errors since the last step.
    async fn shot(&mut self, name: &str) -> Result<(), fantoccini::error::CmdError> {
        self.step += 1;
        let session = self.browser.session_id().await?.unwrap_or_default();
        let metrics = self
            .browser
            .issue_cmd(Cdp {
                session: session.clone(),
                body: serde_json::json!({"cmd": "Page.getLayoutMetrics", "params": {}}),
            })
            .await?;
        let size = &metrics["cssContentSize"];
        // The capture lays the page out without a scroll bar: as wide as the window, at least.
        let window_width = self
            .browser
            .execute("return window.innerWidth;", Vec::new())
            .await?;
        let width = size["width"]
            .as_f64()
            .unwrap_or(0.0)
            .max(window_width.as_f64().unwrap_or(0.0));
        let shot = self
            .browser
            .issue_cmd(Cdp {
                session,
                body: serde_json::json!({"cmd": "Page.captureScreenshot", "params": {
                    "format": "png", "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
                }}),
            })
            .await?;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a PNG in base64");
        std::fs::write(self.dir.join(format!("{:02}-{name}.png", self.step)), png).unwrap();
        let errors = console_errors(self.browser).await?;
        assert!(errors.is_empty(), "console errors at {name}: {errors:?}");
        // Nothing on the page may be wider than the window (tables scroll in their own box).
        let fits = self
            .browser
            .execute(
                "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
                Vec::new(),
            )
            .await?;
        assert_eq!(
            fits,
            serde_json::json!(true),
            "{name} is wider than the window"
        );
        Ok(())
    }
}

/// The text of the element with `id`.
async fn text(
    browser: &fantoccini::Client,
    id: &str,
) -> Result<String, fantoccini::error::CmdError> {
    browser.find(Locator::Id(id)).await?.text().await
}

/// Waits (up to `secs`) until the element with `id` says one of `wanted`, reloading pages that
/// refresh themselves as they do.
async fn wait_for_text(
    browser: &fantoccini::Client,
    id: &str,
    wanted: &[&str],
    secs: u64,
) -> String {
    wait_until(
        &format!("#{id} to say one of {wanted:?}"),
        Duration::from_secs(secs),
        || async {
            let now = text(browser, id).await.unwrap_or_default();
            wanted.contains(&now.as_str()).then_some(now)
        },
    )
    .await
}

/// The link of the job in the Jobs list whose row names mother `name`.
async fn job_of_mother(
    browser: &fantoccini::Client,
    name: &str,
) -> Result<String, fantoccini::error::CmdError> {
    let xpath = format!(
        "//table[@id='job-table']//tr[.//a[normalize-space()='{name}']]//a[starts-with(@href,'/jobs/')]"
    );
    let link = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath(&xpath))
        .await?;
    Ok(link.attr("href").await?.unwrap_or_default())
}

async fn walk_the_console(
    backend: &Backend,
    browser: &fantoccini::Client,
    size: (u32, u32),
) -> Result<(), fantoccini::error::CmdError> {
    use poolkeeper::crypto::Credential;
    use poolkeeper::providers::sim::SimOrg;

    let t = TestApp::spawn_with(
        backend,
        |c| {
            c.child_email_domain = Some("kids.test".into());
            c.jobs.poll_interval_ms = 50;
        },
        poolkeeper::clock::system(),
    )
    .await;
    let app = t.app().clone();
    let web = poolkeeper::service::pool_groups::create(app.pool_ctx(), "web", None, Some(true))
        .await
        .unwrap();
    let ops = poolkeeper::service::pool_groups::create(app.pool_ctx(), "ops", None, None)
        .await
        .unwrap();
    let sim = &app.providers.sim;
    let mut acme = SimOrg::new("acme", "owner@acme.test", 4);
    acme.faults.latency_ms = 250;
    sim.put_org(&Credential::new("cookie-acme"), acme).unwrap();
    // Two mothers of "ops": one whose provider fails every call for now, one that never answers.
    let token = t.token("walk", poolkeeper::auth::Scope::Admin).await;
    let mut mother_ids = Vec::new();
    for name in ["flaky", "slow"] {
        let credential = Credential::new(format!("cookie-{name}"));
        sim.put_org(
            &credential,
            SimOrg::new(name, &format!("owner@{name}.test"), 3),
        )
        .unwrap();
        let (status, body) = t
            .send_json(
                &token,
                reqwest::Method::POST,
                "/api/admin/mothers",
                Some(serde_json::json!({"name": name, "provider": "sim",
                    "credential": format!("cookie-{name}"), "seat_limit": 3, "pool_group_id": ops.id})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        mother_ids.push(body["id"].as_i64().unwrap());
    }
    sim.update_org(&Credential::new("cookie-flaky"), |o| {
        o.faults.error_rate = 1.0
    })
    .unwrap();
    sim.update_org(&Credential::new("cookie-slow"), |o| {
        o.faults.latency_ms = 600_000
    })
    .unwrap();
    // Two jobs cancelled before they ran, for the bulk retry.
    let now = poolkeeper::clock::Clock::now_ms(&poolkeeper::clock::SystemClock);
    let mut cancelled = Vec::new();
    for _ in 0..2 {
        let job = poolkeeper::store::jobs::NewJob {
            run_at: Some(now + 3_600_000),
            ..poolkeeper::store::jobs::NewJob::new("noop", serde_json::json!({}))
        };
        let (job, _) = poolkeeper::jobs::enqueue(&app.users, &job, 3, now)
            .await
            .unwrap();
        poolkeeper::service::jobs::cancel(&app.pool, &app.users, &job.id, now)
            .await
            .unwrap();
        cancelled.push(job.id);
    }

    let result = async {
        let mut walk = Walk::new(browser, backend, size).await?;

        // Login.
        browser.goto(&t.url("/login")).await?;
        walk.shot("login").await?;
        type_into(browser, "username", "admin").await?;
        type_into(browser, "password", ADMIN_PASSWORD).await?;
        click(browser, "login-submit").await?;

        // The dashboard, with its charts drawn.
        browser.wait().for_element(Locator::Id("free-seats")).await?;
        browser.find(Locator::Id("jobs-chart-title")).await?;
        browser.find(Locator::Id("redeems-chart")).await?;
        walk.shot("dashboard").await?;

        // A group's live preview follows a typed template before anything is saved.
        browser.goto(&t.url(&format!("/pool-groups/{}", web.id))).await?;
        let teams = browser.find(Locator::Css("[data-preview=team_names]")).await?;
        let before = teams.text().await?;
        let input = browser.find(Locator::Css("input[name=team_template]")).await?;
        input.clear().await?;
        input.send_keys("walk-{group}-{seq3}").await?;
        let shown = wait_until("the preview to follow the template", Duration::from_secs(10), || async {
            let now = teams.text().await.unwrap_or_default();
            now.contains("walk-web-").then_some(now)
        })
        .await;
        assert_ne!(shown, before);
        let saved = poolkeeper::service::pool_groups::get(app.pool_ctx(), web.id)
            .await
            .unwrap();
        assert!(!saved.settings.team_template.contains("walk-"), "nothing saved by looking");
        walk.shot("group-live-preview").await?;

        // Import in pool mode: the dialog follows her sync job to the end.
        browser.goto(&t.url("/mothers")).await?;
        click(browser, "open-import").await?;
        click(browser, "import-mode-pool").await?;
        browser
            .find(Locator::Id("import-group"))
            .await?
            .select_by_value(&web.id.to_string())
            .await?;
        type_into(browser, "import-cookie", "cookie-acme").await?;
        walk.shot("import-dialog").await?;
        click(browser, "import-submit").await?;
        let badge = browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#import-job-status[data-job-finished]"))
            .await?;
        assert_eq!(badge.text().await?, "succeeded");
        walk.shot("import-pool-mode").await?;

        // Sync all, then a reload: the flash is gone and no second batch is queued.
        let sync_jobs = || async {
            poolkeeper::service::jobs::stats(&app.users)
                .await
                .unwrap()
                .by_type
                .get("pool_sync_mother")
                .map(|c| c.values().sum::<i64>())
                .unwrap_or(0)
        };
        browser.goto(&t.url(&format!("/pool-groups/{}", web.id))).await?;
        let jobs_before = sync_jobs().await;
        click(browser, "sync-all").await?;
        browser.accept_alert().await?;
        let queued = browser.wait().for_element(Locator::Id("sync-queued")).await?.text().await?;
        assert_eq!(queued, "Queued 1 sync job(s).");
        assert_eq!(sync_jobs().await, jobs_before + 1);
        walk.shot("sync-all").await?;
        browser.refresh().await?;
        browser.wait().for_element(Locator::Id("sync-all")).await?;
        assert!(browser.find(Locator::Id("sync-queued")).await.is_err(), "the flash shows once");
        assert_eq!(sync_jobs().await, jobs_before + 1, "a reload queues nothing");
        walk.shot("sync-all-reloaded").await?;

        // A failed job, retried once the provider answers again, succeeds.
        browser.goto(&t.url(&format!("/mothers/{}", mother_ids[0]))).await?;
        click(browser, "sync-now").await?;
        browser.wait().for_element(Locator::Id("sync-queued")).await?;
        browser.goto(&t.url("/jobs?type=pool_sync_mother")).await?;
        let flaky_job = job_of_mother(browser, "flaky").await?;
        browser.goto(&t.url(&flaky_job)).await?;
        wait_for_text(browser, "job-status", &["failed"], 90).await;
        walk.shot("job-failed").await?;
        sim.update_org(&Credential::new("cookie-flaky"), |o| o.faults.error_rate = 0.0)
            .unwrap();
        click(browser, "retry").await?;
        browser.accept_alert().await?;
        wait_for_text(browser, "job-status", &["succeeded"], 60).await;
        walk.shot("job-retried-succeeded").await?;

        // A running job (its provider never answers) cancelled: it ends cancelled.
        browser.goto(&t.url(&format!("/mothers/{}", mother_ids[1]))).await?;
        click(browser, "sync-now").await?;
        browser.wait().for_element(Locator::Id("sync-queued")).await?;
        browser.goto(&t.url("/jobs?type=pool_sync_mother")).await?;
        let slow_job = job_of_mother(browser, "slow").await?;
        browser.goto(&t.url(&slow_job)).await?;
        wait_for_text(browser, "job-status", &["running"], 30).await;
        walk.shot("job-running").await?;
        click(browser, "cancel").await?;
        browser.accept_alert().await?;
        wait_for_text(browser, "job-status", &["cancelled"], 30).await;
        walk.shot("job-cancelled").await?;

        // Bulk retry on the Jobs page, which then updates in place: the check boxes and the page
        // itself (a marker set by script survives) stay while the rows change.
        browser.goto(&t.url("/jobs?type=noop")).await?;
        for id in &cancelled {
            click(browser, &format!("check-{id}")).await?;
        }
        walk.shot("jobs-checked").await?;
        click(browser, "bulk-retry").await?;
        browser.accept_alert().await?;
        let flash = browser.wait().for_element(Locator::Id("flash-message")).await?.text().await?;
        assert_eq!(flash, "Retried 2 job(s).");
        browser.execute("window.walkMarker = 1;", Vec::new()).await?;
        let other = later_noop(&t).await;
        click(browser, &format!("check-{}", cancelled[0])).await?;
        wait_until("the live update to show the retried jobs succeeded and the new one", Duration::from_secs(30), || async {
            let mut statuses = Vec::new();
            for id in cancelled.iter().chain([&other]) {
                let css = format!("#job-{id} [data-testid=status]");
                match browser.find(Locator::Css(&css)).await {
                    Ok(el) => statuses.push(el.text().await.unwrap_or_default()),
                    Err(_) => return false,
                }
            }
            statuses == ["succeeded", "succeeded", "pending"]
        })
        .await;
        let kept = browser
            .execute(
                &format!(
                    "return [window.walkMarker === 1, document.getElementById('check-{}').checked];",
                    cancelled[0]
                ),
                Vec::new(),
            )
            .await?;
        assert_eq!(kept, serde_json::json!([true, true]), "updated in place, the check kept");
        walk.shot("jobs-bulk-retried-live").await?;

        // A page address naming nothing: the HTML Not-found page.
        browser.goto(&t.url("/jobs/not-a-job-id")).await?;
        let heading = browser.find(Locator::Css("h1")).await?.text().await?;
        assert_eq!(heading, "Not found");
        // The 404 itself is the only thing the console may report here.
        let errors = console_errors(browser).await?;
        assert!(errors.iter().all(|e| e.contains("404")), "{errors:?}");
        walk.shot("bad-id-not-found").await?;
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    t.stop().await;
    result
}

/// A noop job due in an hour (it stays pending), made while the Jobs page is open.
async fn later_noop(t: &TestApp) -> String {
    let now = poolkeeper::clock::Clock::now_ms(&poolkeeper::clock::SystemClock);
    let job = poolkeeper::store::jobs::NewJob {
        run_at: Some(now + 3_600_000),
        ..poolkeeper::store::jobs::NewJob::new("noop", serde_json::json!({"walk": true}))
    };
    poolkeeper::jobs::enqueue(&t.app().users, &job, 3, now)
        .await
        .unwrap()
        .0
        .id
}

#[tokio::test]
async fn console_walk_at_desktop_and_phone_widths_without_console_errors() {
    let Some((driver, browser, _profile)) = start_browser().await else {
        return;
    };
    let mut result = Ok(());
    for backend in common::backends() {
        for size in [(1366, 900), (390, 844)] {
            result = walk_the_console(&backend, &browser, size).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_err() {
            break;
        }
    }
    browser.close().await.ok();
    drop(driver);
    result.expect("browser steps");
}
