//! The web UI as an operations console: the dashboard's figures for a seeded pool, the System
//! page, the daily seat snapshots, the Jobs page's counts, bulk actions and live fragment, every
//! page's table headers, seat bars and badges, and list pages' paging and form redirects.

mod common;

use std::time::Duration;

use common::{Backend, TestApp, each_backend, url_encoded, wait_until};
use poolkeeper::auth::Scope;
use poolkeeper::clock::ManualClock;
use poolkeeper::crypto::Credential;
use poolkeeper::providers::sim::SimOrg;
use poolkeeper::service::codes::GenerateRequest;
use poolkeeper::service::overview::{self, DAY_MS};
use poolkeeper::store;
use poolkeeper::store::jobs::NewJob;
use serde_json::{Value, json};

/// 2026-11-30T10:00:00Z.
const START: i64 = 1_796_032_800_000;

struct Console {
    t: TestApp,
    token: String,
    clock: std::sync::Arc<ManualClock>,
}

impl Console {
    async fn spawn(backend: &Backend) -> Self {
        let clock = ManualClock::new(START);
        let t = TestApp::spawn_with(
            backend,
            |c| {
                c.jobs.poll_interval_ms = 20;
                c.child_email_domain = Some("kids.test".into());
            },
            clock.clone(),
        )
        .await;
        let token = t.token("console", Scope::Admin).await;
        Self { t, token, clock }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self
            .t
            .send_json(&self.token, reqwest::Method::POST, path, Some(body))
            .await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }

    async fn group(&self, name: &str) -> i64 {
        self.post("/api/admin/pool-groups", json!({"name": name}))
            .await["id"]
            .as_i64()
            .unwrap()
    }

    async fn mother(&self, name: &str, group: i64, seats: i64) -> i64 {
        let credential = format!("cred-{name}");
        self.t
            .app()
            .providers
            .sim
            .put_org(
                &Credential::new(&credential),
                SimOrg::new(name, &format!("owner@{name}.test"), seats),
            )
            .unwrap();
        self.post(
            "/api/admin/mothers",
            json!({"name": name, "provider": "sim", "credential": credential,
                "seat_limit": seats, "pool_group_id": group}),
        )
        .await["id"]
            .as_i64()
            .unwrap()
    }

    fn now(&self) -> i64 {
        self.t.app().clock.now_ms()
    }
}

/// A logged-in client's GET: status and page.
async fn page(client: &reqwest::Client, url: String) -> (u16, String) {
    let res = client.get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The text of the element with `id`, up to its first tag end.
fn text_of<'h>(html: &'h str, id: &str) -> &'h str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in page"));
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    rest[open..open + close].trim()
}

#[tokio::test]
async fn dashboard_shows_the_seeded_pool_queue_codes_and_attention() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let app = c.t.app().clone();
        let alpha = c.group("alpha").await;
        let beta = c.group("beta").await;
        let m1 = c.mother("alpha-one", alpha, 10).await;
        let m2 = c.mother("alpha-two", alpha, 5).await;
        let m3 = c.mother("beta-one", beta, 4).await;
        let m4 = c.mother("beta-two", beta, 3).await;
        let now = c.now();
        for email in ["a@x.test", "b@x.test"] {
            store::seats::mark_used(&app.pool, m1, email, now)
                .await
                .unwrap();
        }
        store::seats::hold_free_seat(&app.pool, m1, "c@x.test", now + DAY_MS, now)
            .await
            .unwrap()
            .unwrap();
        store::seats::mark_used(&app.pool, m3, "d@x.test", now)
            .await
            .unwrap();
        // Seats of mothers that are not active count for no group.
        store::seats::mark_used(&app.pool, m2, "e@x.test", now)
            .await
            .unwrap();
        store::mothers::set_status(&app.pool, m2, "invalid", now)
            .await
            .unwrap();
        store::mothers::set_status(&app.pool, m4, "disabled", now)
            .await
            .unwrap();
        for (count, group) in [(3, Some(alpha)), (2, None)] {
            poolkeeper::service::codes::generate(
                &app,
                GenerateRequest {
                    count,
                    prefix: None,
                    expires_at: None,
                    pool_group_id: group,
                },
            )
            .await
            .unwrap();
        }
        // A finished sync session of beta, with one failed record for beta-one.
        let records = store::sync_sessions::create(
            &app.pool,
            "session-beta",
            &store::sync_sessions::NewSession {
                sync_type: "manual_batch",
                category: "pool",
                pool_group_id: Some(beta),
                created_by: Some("admin"),
            },
            &[m3],
            now,
        )
        .await
        .unwrap();
        let failed = store::sync_sessions::RecordOutcome {
            status: "failed",
            error_message: Some("provider said no".into()),
            ..Default::default()
        };
        store::sync_sessions::finish_record(&app.pool, records[0].id, &failed, now)
            .await
            .unwrap();
        // The invalid mother's sync failed too (an older session of alpha): she is listed once.
        let records = store::sync_sessions::create(
            &app.pool,
            "session-alpha",
            &store::sync_sessions::NewSession {
                sync_type: "manual_single",
                category: "pool",
                pool_group_id: Some(alpha),
                created_by: Some("admin"),
            },
            &[m2],
            now - 60_000,
        )
        .await
        .unwrap();
        store::sync_sessions::finish_record(&app.pool, records[0].id, &failed, now - 60_000)
            .await
            .unwrap();
        // Jobs: two pending for later, one that fails now.
        for _ in 0..2 {
            let mut job = NewJob::new("console_later", json!({}));
            job.run_at = Some(now + 3_600_000);
            store::jobs::enqueue(&app.users, &job, 3, now)
                .await
                .unwrap();
        }
        let (broken, _) = store::jobs::enqueue(
            &app.users,
            &NewJob::new("console_no_such_type", json!({})),
            3,
            now,
        )
        .await
        .unwrap();
        let ended = c.t.job_ended(&broken.id, Duration::from_secs(15)).await;
        assert_eq!(ended.status, "failed");

        let o = overview::overview(&app.pool, &app.users, c.now())
            .await
            .unwrap();
        assert_eq!((o.seats.total, o.seats.used, o.seats.held), (14, 3, 1));
        assert_eq!(o.seats.free(), 10);
        assert_eq!((o.codes_left, o.codes_any_group), (5, 2));
        assert_eq!(
            (o.queue.pending, o.queue.running, o.queue.failed_recently),
            (2, 0, 1)
        );
        assert_eq!(o.queue.oldest_due, None, "the pending jobs are not due");
        let g_alpha = o.groups.iter().find(|g| g.id == Some(alpha)).unwrap();
        assert_eq!(
            (g_alpha.mothers["active"], g_alpha.mothers["invalid"]),
            (1, 1)
        );
        assert_eq!(
            (g_alpha.seats.used, g_alpha.seats.held, g_alpha.seats.free()),
            (2, 1, 7)
        );
        assert_eq!(g_alpha.codes_left, 3);
        let alpha_sync = g_alpha.last_sync.as_ref().unwrap();
        assert_eq!(alpha_sync.session_id, "session-alpha");
        let g_beta = o.groups.iter().find(|g| g.id == Some(beta)).unwrap();
        assert_eq!(
            (g_beta.mothers["active"], g_beta.mothers["disabled"]),
            (1, 1)
        );
        let last = g_beta.last_sync.as_ref().unwrap();
        assert_eq!(
            (last.session_id.as_str(), last.status.as_str()),
            ("session-beta", "failed")
        );
        assert_eq!(o.invalid.iter().map(|m| m.id).collect::<Vec<_>>(), vec![m2]);
        assert_eq!(
            o.failing.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![m3, m2]
        );
        let hourly = overview::jobs_per_hour(&app.users, c.now()).await.unwrap();
        assert_eq!(hourly.failed.iter().sum::<i64>(), 1);
        assert_eq!(*hourly.failed.last().unwrap(), 1, "in the current hour");

        let (client, _) = c.t.login().await;
        let (status, html) = page(&client, c.t.url("/")).await;
        assert_eq!(status, 200, "{html}");
        assert_eq!(text_of(&html, "free-seats"), "10");
        assert_eq!(text_of(&html, "seats-used"), "3");
        assert_eq!(text_of(&html, "seats-held"), "1");
        assert_eq!(text_of(&html, "codes-left"), "5");
        assert_eq!(text_of(&html, "queue-pending"), "2");
        assert_eq!(text_of(&html, "queue-failed"), "1");
        assert_eq!(text_of(&html, "redeemed-24h"), "0");
        assert!(html.contains(&format!("<a href=\"/pool-groups/{alpha}\">alpha</a>")));
        assert!(
            html.contains("aria-label=\"2 used, 1 held, 7 free of 10 seats\""),
            "{html}"
        );
        assert!(html.contains("href=\"/sync-sessions/session-beta\""));
        let invalid_link = format!("<a href=\"/mothers/{m2}\">alpha-two</a>");
        assert_eq!(
            html.matches(&invalid_link).count(),
            1,
            "listed once: {html}"
        );
        assert!(html.contains("credential refused (invalid)"));
        assert!(html.contains(&format!("<a href=\"/mothers/{m3}\">beta-one</a>")));
        assert!(
            html.contains("<title id=\"jobs-chart-title\">"),
            "jobs chart"
        );
        assert!(html.contains("failed total 1, peak 1"), "chart description");
        assert!(
            !html.contains("data-testid=\"db-pool-status\""),
            "infrastructure moved"
        );
        c.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn system_page_shows_databases_and_the_instance() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let (client, _) = c.t.login().await;
        let (status, html) = page(&client, c.t.url("/system")).await;
        assert_eq!(status, 200);
        assert_eq!(text_of(&html, "db-pool-status"), "OK");
        assert_eq!(text_of(&html, "db-users-status"), "OK");
        assert_eq!(text_of(&html, "version"), env!("CARGO_PKG_VERSION"));
        assert!(html.contains(&format!("<dd>{}</dd>", backend.name())));
        assert!(html.contains("href=\"/system\" class=\"active\""));
        c.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn seat_snapshots_are_taken_once_per_day_and_group_and_feed_the_chart() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let app = c.t.app().clone();
        let alpha = c.group("alpha").await;
        let m = c.mother("alpha-one", alpha, 6).await;
        let empty = c.group("empty").await;
        // A day of its own, after whatever housekeeping took at start-up.
        let day1 = START + 2 * DAY_MS;
        store::seats::mark_used(&app.pool, m, "a@x.test", day1)
            .await
            .unwrap();
        assert_eq!(
            overview::take_seat_snapshots(&app.pool, day1)
                .await
                .unwrap(),
            2
        );
        store::seats::mark_used(&app.pool, m, "b@x.test", day1)
            .await
            .unwrap();
        // Later the same day: nothing new, and the first figures stay.
        assert_eq!(
            overview::take_seat_snapshots(&app.pool, day1 + 3_600_000)
                .await
                .unwrap(),
            0
        );
        let day2 = day1 + DAY_MS;
        assert_eq!(
            overview::take_seat_snapshots(&app.pool, day2)
                .await
                .unwrap(),
            2
        );
        let rows = store::seat_snapshots::since(&app.pool, &overview::utc_day(day1), 100)
            .await
            .unwrap();
        let of = |g: i64| -> Vec<(String, i64, i64)> {
            rows.iter()
                .filter(|r| r.pool_group_id == g)
                .map(|r| (r.day.clone(), r.seats_total, r.seats_used))
                .collect()
        };
        assert_eq!(
            of(alpha),
            vec![("2026-12-02".into(), 6, 1), ("2026-12-03".into(), 6, 2)]
        );
        assert_eq!(
            of(empty),
            vec![("2026-12-02".into(), 0, 0), ("2026-12-03".into(), 0, 0)]
        );
        // The dashboard draws alpha's days once the clock reaches them.
        c.clock.advance_ms(day2 - START);
        let history = overview::seat_history(&app.pool, c.now(), 30)
            .await
            .unwrap();
        let alpha_days = &history
            .iter()
            .find(|h| h.pool_group_id == alpha)
            .unwrap()
            .days;
        // Housekeeping may have taken the start day's snapshot too (it runs as the server starts).
        let used: Vec<i64> = alpha_days.iter().map(|d| d.2).collect();
        assert!(used.ends_with(&[1, 2]), "{alpha_days:?}");
        assert!(alpha_days.len() <= 3, "{alpha_days:?}");
        let (client, _) = c.t.login().await;
        let (_, html) = page(&client, c.t.url("/")).await;
        assert!(
            html.contains(&format!(
                "<title id=\"seats-chart-{alpha}-title\">Seats of alpha per day</title>"
            )),
            "{html}"
        );
        // (The total depends on whether housekeeping's start-day snapshot came before the first seat
        // was used; the peak and the held series do not.)
        assert!(html.contains(", peak 2; held total 0, peak 0."), "{html}");
        c.t.stop().await;
    })
    .await;
}

/// A logged-in client that does not follow redirects, posting forms with the CSRF token.
struct Forms {
    client: reqwest::Client,
    csrf: String,
    base: String,
}

impl Forms {
    async fn new(t: &TestApp) -> Self {
        let (client, csrf) = t.login_without_redirects().await;
        Self {
            client,
            csrf,
            base: t.base.clone(),
        }
    }

    /// Posts a form; returns the status and the `Location` it redirects to.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut all = fields.to_vec();
        all.push(("csrf", &self.csrf));
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url_encoded(&all))
            .send()
            .await
            .unwrap();
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (res.status().as_u16(), location)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        page(&self.client, format!("{}{path}", self.base)).await
    }

    /// Posts a form that answers with a page (a confirmation step): status and page.
    async fn post_page(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut all = fields.to_vec();
        all.push(("csrf", &self.csrf));
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url_encoded(&all))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }
}

async fn job(t: &TestApp, id: &str) -> store::jobs::Job {
    store::jobs::get(&t.app().users, id).await.unwrap()
}

/// A job due in an hour: it stays pending.
async fn later(t: &TestApp, job_type: &str, payload: Value) -> String {
    let now = t.app().clock.now_ms();
    let mut new = NewJob::new(job_type, payload);
    new.run_at = Some(now + 3_600_000);
    store::jobs::enqueue(&t.app().users, &new, 3, now)
        .await
        .unwrap()
        .0
        .id
}

#[tokio::test]
async fn jobs_page_counts_by_status_names_subjects_and_bulk_retries_and_cancels_the_checked_jobs() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let t = &c.t;
        let users = &t.app().users;
        let pool = &t.app().pool;
        let group = c.group("alpha").await;
        let mother = c.mother("alpha-one", group, 3).await;
        // Two noop jobs cancelled before they ran, two pending for later, one naming a mother.
        let cancelled: Vec<String> = {
            let mut ids = Vec::new();
            for _ in 0..2 {
                let id = later(t, poolkeeper::jobs::NOOP, json!({})).await;
                poolkeeper::service::jobs::cancel(pool, users, &id, c.now())
                    .await
                    .unwrap();
                ids.push(id);
            }
            ids
        };
        let pending = [
            later(t, "console_later", json!({})).await,
            later(t, "console_later", json!({})).await,
        ];
        let about = later(
            t,
            "console_about",
            json!({"mother_id": mother, "group_id": group, "session_id": "s-1"}),
        )
        .await;

        let f = Forms::new(t).await;
        let (status, html) = f.get("/jobs").await;
        assert_eq!(status, 200);
        let count = |html: &str, s: &str| -> String {
            let start = html.find(&format!("id=\"count-{s}\"")).unwrap();
            let figure = html[start..].find("class=\"figure\">").unwrap() + start + 15;
            html[figure..].split('<').next().unwrap().to_string()
        };
        assert_eq!(count(&html, "pending"), "3");
        assert_eq!(count(&html, "cancelled"), "2");
        assert_eq!(count(&html, "failed"), "0");
        assert!(
            html.contains(&format!(
                "<a href=\"/mothers/{mother}\" title=\"mother\">alpha-one</a>"
            )),
            "{html}"
        );
        assert!(html.contains(&format!(
            "<a href=\"/pool-groups/{group}\" title=\"pool group\">alpha</a>"
        )));
        assert!(html.contains("<a href=\"/sync-sessions/s-1\" title=\"sync session\">s-1</a>"));
        assert!(
            html.contains("title=\"2026-11-30T10:00:00Z\">just now</time>"),
            "relative times"
        );
        let (_, detail) = f.get(&format!("/jobs/{about}")).await;
        assert!(detail.contains(&format!(
            "mother <a href=\"/mothers/{mother}\">alpha-one</a>"
        )));

        // Bulk retry: the first cancelled job and a pending one; only the cancelled one is retried.
        let (status, location) = f
            .post(
                "/jobs/bulk",
                &[
                    ("action", "retry"),
                    ("id", &cancelled[0]),
                    ("id", &pending[0]),
                    ("type", ""),
                ],
            )
            .await;
        assert_eq!((status, location.as_str()), (303, "/jobs?page=1"));
        let retried = t.job_ended(&cancelled[0], Duration::from_secs(15)).await;
        assert_eq!(retried.status, "succeeded", "the retried noop ran");
        assert_eq!(
            job(t, &cancelled[1]).await.status,
            "cancelled",
            "not checked"
        );
        assert_eq!(job(t, &pending[0]).await.status, "pending", "not retryable");
        let (_, html) = f.get("/jobs").await;
        assert!(
            html.contains("Retried 1 job(s). 1 left as they were"),
            "{html}"
        );

        // Bulk cancel of both pending jobs, from a filtered list: back to the same filter.
        let (status, location) = f
            .post(
                "/jobs/bulk",
                &[
                    ("action", "cancel"),
                    ("id", &pending[0]),
                    ("id", &pending[1]),
                    ("status", "pending"),
                    ("type", "console_later"),
                ],
            )
            .await;
        assert_eq!(status, 303);
        assert_eq!(location, "/jobs?page=1&status=pending&type=console_later");
        for id in &pending {
            assert_eq!(job(t, id).await.status, "cancelled");
        }
        assert_eq!(job(t, &about).await.status, "pending", "not checked");
        let (_, html) = f.get(&location).await;
        assert!(html.contains("Cancelled 2 job(s)."), "{html}");

        // Nothing checked, or no action: nothing happens and the flash says why.
        let (status, _) = f.post("/jobs/bulk", &[("action", "cancel")]).await;
        assert_eq!(status, 303);
        let (_, html) = f.get("/jobs").await;
        assert!(html.contains("Not done: select at least one job"), "{html}");
        assert_eq!(job(t, &about).await.status, "pending");
        c.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn retry_all_failed_of_a_type_asks_first_then_retries_only_that_type() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let t = &c.t;
        let users = &t.app().users;
        let mut broken = Vec::new();
        for _ in 0..3 {
            let (j, _) =
                store::jobs::enqueue(users, &NewJob::new("console_broken", json!({})), 3, c.now())
                    .await
                    .unwrap();
            broken.push(j.id);
        }
        let (other, _) =
            store::jobs::enqueue(users, &NewJob::new("console_other", json!({})), 3, c.now())
                .await
                .unwrap();
        let other = other.id;
        for id in broken.iter().chain([&other]) {
            assert_eq!(
                t.job_ended(id, Duration::from_secs(15)).await.status,
                "failed"
            );
        }
        let before = job(t, &other).await;
        let f = Forms::new(t).await;
        let (_, list) = f.get("/jobs?type=console_broken").await;
        assert!(
            list.contains("href=\"/jobs/retry-failed?type=console_broken\""),
            "{list}"
        );
        // The confirmation page changes nothing.
        let (status, confirm) = f.get("/jobs/retry-failed?type=console_broken").await;
        assert_eq!(status, 200);
        assert!(
            confirm.contains("3 failed job(s) of type <code>console_broken</code>"),
            "{confirm}"
        );
        assert!(confirm.contains("action=\"/jobs/retry-failed\""));
        for id in &broken {
            assert_eq!(job(t, id).await.finished_at, Some(START));
        }
        // Confirmed: the three run again (and fail again, later), the other type is untouched.
        c.clock.advance_ms(60_000);
        let (status, location) = f
            .post("/jobs/retry-failed", &[("type", "console_broken")])
            .await;
        assert_eq!(
            (status, location.as_str()),
            (303, "/jobs?page=1&type=console_broken")
        );
        for id in &broken {
            wait_until(
                "the retried job to fail again",
                Duration::from_secs(15),
                || async {
                    let j = job(t, id).await;
                    j.status == "failed" && j.finished_at == Some(START + 60_000)
                },
            )
            .await;
        }
        let after = job(t, &other).await;
        assert_eq!(
            (after.status, after.finished_at),
            (before.status, before.finished_at)
        );
        let (_, html) = f.get(&location).await;
        assert!(html.contains("Retried 3 job(s)."), "{html}");
        // A type that is no type is refused with a message, not an error page.
        let (status, location) = f.post("/jobs/retry-failed", &[("type", "")]).await;
        assert_eq!((status, location.as_str()), (303, "/jobs"));
        let (_, html) = f.get("/jobs").await;
        assert!(html.contains("Not done: type is required"), "{html}");
        c.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sync_sessions_show_their_group_and_mothers_by_name_with_times() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let app = c.t.app().clone();
        let group = c.group("alpha").await;
        let m1 = c.mother("alpha-one", group, 3).await;
        let m2 = c.mother("alpha-two", group, 3).await;
        let records = store::sync_sessions::create(
            &app.pool,
            "session-names",
            &store::sync_sessions::NewSession {
                sync_type: "manual_batch",
                category: "pool",
                pool_group_id: Some(group),
                created_by: Some("admin"),
            },
            &[m1, m2],
            c.now(),
        )
        .await
        .unwrap();
        store::sync_sessions::start_record(&app.pool, records[0].id, c.now())
            .await
            .unwrap();
        c.clock.advance_ms(90_000);
        let done = store::sync_sessions::RecordOutcome {
            status: "completed",
            ..Default::default()
        };
        store::sync_sessions::finish_record(&app.pool, records[0].id, &done, c.now())
            .await
            .unwrap();
        let (client, _) = c.t.login().await;
        let (_, list) = page(&client, c.t.url("/sync-sessions")).await;
        assert!(
            list.contains(&format!("<a href=\"/pool-groups/{group}\">alpha</a>")),
            "{list}"
        );
        assert!(
            list.contains("title=\"2026-11-30T10:00:00Z\">1 min 30 s ago</time>"),
            "{list}"
        );
        let (_, detail) = page(&client, c.t.url("/sync-sessions/session-names")).await;
        assert!(detail.contains(&format!("<a href=\"/pool-groups/{group}\">alpha</a>")));
        assert!(
            detail.contains(&format!("<a href=\"/mothers/{m1}\">alpha-one</a>")),
            "{detail}"
        );
        assert!(detail.contains(&format!("<a href=\"/mothers/{m2}\">alpha-two</a>")));
        assert!(
            detail.contains("<td>1 min 30 s</td>"),
            "record run time: {detail}"
        );
        c.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dashboard_counts_redeems_of_the_last_24_hours_and_the_codes_left() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let app = c.t.app().clone();
        let group = c.group("alpha").await;
        // A mother of 3 seats whose provider team has one more (the owner), synced once so her
        // team is linked and a redeem can invite into it.
        let credential = "cred-redeemer";
        app.providers
            .sim
            .put_org(
                &Credential::new(credential),
                SimOrg::new("redeemer", "owner@redeemer.test", 4),
            )
            .unwrap();
        let mother = c
            .post(
                "/api/admin/mothers",
                json!({"name": "redeemer", "provider": "sim", "credential": credential,
                    "seat_limit": 3, "pool_group_id": group}),
            )
            .await["id"]
            .as_i64()
            .unwrap();
        let queued = c
            .post(
                &format!("/api/admin/pool-groups/{group}/sync/mother/{mother}"),
                json!({}),
            )
            .await;
        let job =
            c.t.job_ended(queued["job_id"].as_str().unwrap(), Duration::from_secs(15))
                .await;
        assert_eq!(job.status, "succeeded", "{:?}", job.last_error);
        let codes = c.post("/api/admin/codes", json!({"count": 2})).await;
        let code = codes["codes"][0].as_str().unwrap();
        let res =
            c.t.client
                .post(c.t.url("/api/redeem"))
                .json(&json!({"code": code, "email": "new@user.test"}))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        let o = overview::overview(&app.pool, &app.users, c.now())
            .await
            .unwrap();
        assert_eq!((o.redeemed_24h, o.codes_left), (1, 1));
        let (client, _) = c.t.login().await;
        let (_, html) = page(&client, c.t.url("/")).await;
        assert_eq!(text_of(&html, "redeemed-24h"), "1");
        assert_eq!(text_of(&html, "codes-left"), "1");
        // Redeems per hour: the one redeem in the current (last) hour, drawn on the dashboard.
        let hourly = overview::redeems_per_hour(&app.users, c.now())
            .await
            .unwrap();
        assert_eq!(hourly.redeemed.len(), 24);
        assert_eq!(hourly.redeemed.iter().sum::<i64>(), 1);
        assert_eq!(hourly.redeemed[23], 1, "{hourly:?}");
        assert!(
            html.contains("id=\"redeems-chart\""),
            "no redeems chart on the dashboard"
        );
        assert!(html.contains("Codes redeemed per hour"));
        // A day and an hour later the redeem is out of the window; the code left is still there.
        c.clock.advance_ms(DAY_MS + 3_600_000);
        let o = overview::overview(&app.pool, &app.users, c.now())
            .await
            .unwrap();
        assert_eq!((o.redeemed_24h, o.codes_left), (0, 1));
        let hourly = overview::redeems_per_hour(&app.users, c.now())
            .await
            .unwrap();
        assert_eq!(hourly.redeemed.iter().sum::<i64>(), 0, "{hourly:?}");
        c.t.stop().await;
    })
    .await;
}

/// The opening tags of `<th>` cells that say neither `scope="col"` nor `scope="row"`.
fn headers_without_scope(html: &str) -> Vec<&str> {
    html.match_indices("<th")
        .filter(|(i, _)| matches!(html[i + 3..].chars().next(), Some('>' | ' ')))
        .map(|(i, _)| &html[i..i + html[i..].find('>').unwrap() + 1])
        .filter(|tag| !tag.contains("scope=\"col\"") && !tag.contains("scope=\"row\""))
        .collect()
}

/// The opening tags of seat bars that carry no text label.
fn unlabelled_seat_bars(html: &str) -> Vec<&str> {
    html.match_indices("<svg")
        .map(|(i, _)| &html[i..i + html[i..].find('>').unwrap() + 1])
        .filter(|tag| tag.contains("seatbar") || tag.contains("seat-bar"))
        .filter(|tag| !tag.contains("aria-label=\""))
        .collect()
}

/// Status badges whose text is empty: their colour would be all they say.
fn silent_badges(html: &str) -> Vec<String> {
    html.match_indices("class=\"badge")
        .filter_map(|(i, _)| {
            let open = i + html[i..].find('>')? + 1;
            let text = html[open..].split("</").next()?;
            let plain: String = text
                .split('<')
                .map(|s| s.rsplit('>').next().unwrap_or(s))
                .collect();
            plain.trim().is_empty().then(|| html[i..open].to_string())
        })
        .collect()
}

#[test]
fn header_badge_and_bar_checks_find_what_they_look_for() {
    let html = "<table><thead><tr><th scope=\"col\">A</th><th>B</th><th class=\"x\">C</th></tr>\
                <tr><th scope=\"row\">D</th></tr></thead></table>\
                <span class=\"badge failed\"></span><span class=\"badge ok\">ok</span>\
                <svg class=\"seatbar\" role=\"img\"></svg><svg class=\"seatbar\" aria-label=\"1 used\"></svg>";
    assert_eq!(
        headers_without_scope(html),
        vec!["<th>", "<th class=\"x\">"]
    );
    assert_eq!(
        silent_badges(html),
        vec!["class=\"badge failed\">".to_string()]
    );
    assert_eq!(
        unlabelled_seat_bars(html),
        vec!["<svg class=\"seatbar\" role=\"img\">"]
    );
}

#[tokio::test]
async fn every_page_scopes_its_table_headers_labels_seat_bars_and_words_its_statuses() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let t = &c.t;
        let app = t.app().clone();
        let group = c.group("alpha").await;
        let mother = c.mother("alpha-one", group, 4).await;
        store::seats::mark_used(&app.pool, mother, "a@x.test", c.now())
            .await
            .unwrap();
        let job = later(t, "console_later", json!({"mother_id": mother})).await;
        let records = store::sync_sessions::create(
            &app.pool,
            "session-scope",
            &store::sync_sessions::NewSession {
                sync_type: "manual_batch",
                category: "pool",
                pool_group_id: Some(group),
                created_by: Some("admin"),
            },
            &[mother],
            c.now(),
        )
        .await
        .unwrap();
        assert_eq!(records.len(), 1);
        c.post("/api/admin/codes", json!({"count": 2})).await;
        let f = Forms::new(t).await;
        let (status, _) = f
            .post(
                "/accounts/import",
                &[("data", "login,password\nscope@example.org,pw-scope\n")],
            )
            .await;
        assert_eq!(status, 303);
        let code_id = store::redeem_codes::list(&app.users, &Default::default(), 1, 0)
            .await
            .unwrap()
            .0[0]
            .id
            .to_string();

        let mut pages = Vec::new();
        for path in [
            "/".to_string(),
            "/pool-groups".into(),
            format!("/pool-groups/{group}"),
            "/mothers".into(),
            format!("/mothers/{mother}"),
            "/jobs".into(),
            "/jobs/live".into(),
            format!("/jobs/{job}"),
            "/sync-sessions".into(),
            "/sync-sessions/session-scope".into(),
            "/codes".into(),
            "/invites".into(),
            "/accounts".into(),
            "/system".into(),
        ] {
            let (status, html) = f.get(&path).await;
            assert_eq!(status, 200, "{path}: {html}");
            pages.push((path, html));
        }
        // The confirmation pages of bulk forms show tables too.
        let checked = format!("mother_{mother}");
        for (path, fields) in [
            ("/codes/disable", vec![("ids", code_id.as_str())]),
            (
                "/mothers/bulk",
                vec![("action", "disable"), (&checked, "on")],
            ),
        ] {
            let (status, html) = f.post_page(path, &fields).await;
            assert_eq!(status, 200, "{path}: {html}");
            pages.push((path.to_string(), html));
        }
        let mut tables = 0;
        for (path, html) in &pages {
            tables += html.matches("<table").count();
            assert!(
                headers_without_scope(html).is_empty(),
                "{path}: headers without scope: {:?}",
                headers_without_scope(html)
            );
            assert!(
                unlabelled_seat_bars(html).is_empty(),
                "{path}: seat bars without a label: {:?}",
                unlabelled_seat_bars(html)
            );
            assert!(
                silent_badges(html).is_empty(),
                "{path}: badges without text: {:?}",
                silent_badges(html)
            );
        }
        assert!(tables >= 12, "the pages drew their tables ({tables})");
        let (_, groups) = f.get(&format!("/pool-groups/{group}")).await;
        assert!(
            groups.contains("aria-label=\"1 used, 0 held, 3 free of 4\""),
            "the group's seat bar says its figures: {groups}"
        );
        c.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn jobs_live_fragment_has_the_pages_parts_for_the_same_filters_and_follows_changes() {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let t = &c.t;
        let (users, pool) = (&t.app().users, &t.app().pool);
        let pending = [
            later(t, "console_live", json!({})).await,
            later(t, "console_live", json!({})).await,
        ];
        let other = later(t, "console_other", json!({})).await;
        let f = Forms::new(t).await;

        // The page names the fragment with its own filters, and a Refresh link for no script.
        let (status, html) = f.get("/jobs?type=console_live").await;
        assert_eq!(status, 200);
        assert!(
            html.contains("data-live-url=\"/jobs/live?page=1&#38;type=console_live\""),
            "{html}"
        );
        assert!(
            html.contains("id=\"refresh\"")
                && html.contains("href=\"/jobs?page=1&#38;type=console_live\"")
        );
        assert!(
            !html.contains("data-autorefresh"),
            "no more whole-page reloads"
        );
        for part in ["job-counts", "job-summary", "job-table", "job-pager"] {
            let at = html
                .find(&format!("id=\"{part}\""))
                .unwrap_or_else(|| panic!("{part}"));
            let tag_end = at + html[at..].find('>').unwrap();
            assert!(
                html[at..tag_end].contains("data-live-part"),
                "{part} is swapped in"
            );
        }

        let (status, live) = f.get("/jobs/live?page=1&type=console_live").await;
        assert_eq!(status, 200);
        for part in ["job-counts", "job-summary", "job-table", "job-pager"] {
            assert!(live.contains(&format!("id=\"{part}\"")), "{part} in {live}");
        }
        assert!(
            !live.contains("<html") && !live.contains("id=\"logout\""),
            "a fragment: {live}"
        );
        for id in &pending {
            assert!(live.contains(&format!("id=\"check-{id}\"")), "{live}");
        }
        assert!(
            !live.contains(&other.to_string()),
            "filtered by type: {live}"
        );
        let count = |html: &str, s: &str| -> String {
            let start = html.find(&format!("id=\"count-{s}\"")).unwrap();
            let figure = html[start..].find("class=\"figure\">").unwrap() + start + 15;
            html[figure..].split('<').next().unwrap().to_string()
        };
        assert_eq!(
            (count(&live, "pending"), count(&live, "cancelled")),
            ("3".into(), "0".into())
        );
        assert!(
            live.contains(
                "2 job(s) match; <span id=\"live-count\">3</span> job(s) pending or running."
            ),
            "{live}"
        );

        // A job cancelled meanwhile: the next poll shows it.
        poolkeeper::service::jobs::cancel(pool, users, &pending[0], c.now())
            .await
            .unwrap();
        let (_, live) = f
            .get("/jobs/live?page=1&type=console_live&status=pending")
            .await;
        assert_eq!(
            (count(&live, "pending"), count(&live, "cancelled")),
            ("2".into(), "1".into())
        );
        assert!(
            !live.contains(&format!("id=\"check-{}\"", pending[0])),
            "{live}"
        );
        assert!(live.contains(&format!("id=\"check-{}\"", pending[1])));

        // Bad and past-the-end pages, as on the page.
        let (status, live) = f.get("/jobs/live?page=abc").await;
        assert_eq!(status, 200);
        assert!(
            live.contains("page must be a whole number of at least 1"),
            "{live}"
        );
        let (status, live) = f.get("/jobs/live?page=9999").await;
        assert_eq!(status, 200);
        assert!(
            live.contains("Page 1 of 1") && live.contains(&format!("id=\"check-{other}\"")),
            "{live}"
        );

        // Signed out: the login page, never the jobs.
        let anonymous = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let res = anonymous.get(t.url("/jobs/live")).send().await.unwrap();
        assert!(res.status().is_redirection(), "{}", res.status());
        assert_eq!(res.headers()["location"], "/login");
        c.t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn list_pages_explain_a_bad_page_show_the_last_page_past_the_end_and_forms_redirect_with_a_flash()
 {
    each_backend(|backend| async move {
        let c = Console::spawn(&backend).await;
        let t = &c.t;
        let group = c.group("alpha").await;
        c.mother("alpha-one", group, 4).await;
        c.post("/api/admin/codes", json!({"count": 2})).await;
        let f = Forms::new(t).await;

        // Accounts: the import redirects with its counts and refused rows; a reload imports nothing.
        let (status, location) = f
            .post(
                "/accounts/import",
                &[("data", "login,password\nfirst@example.org,pw-first\n")],
            )
            .await;
        assert_eq!((status, location.as_str()), (303, "/accounts"));
        let (_, html) = f.get("/accounts").await;
        assert!(
            html.contains("1 row(s): 1 valid, 0 refused, 1 imported."),
            "{html}"
        );
        assert!(!html.contains("pw-first"));
        let (_, again) = f.get("/accounts").await;
        assert!(
            !again.contains("id=\"batch-summary\""),
            "a flash shows once"
        );
        let (status, _) = f
            .post(
                "/accounts/import",
                &[(
                    "data",
                    "login,password\nfirst@example.org,pw-again\nbad-row\n",
                )],
            )
            .await;
        assert_eq!(status, 303);
        let (_, html) = f.get("/accounts").await;
        assert!(
            html.contains("0 imported") && html.contains("Row 1: duplicate:"),
            "{html}"
        );
        assert_eq!(
            html.matches("<tr id=\"account-").count(),
            1,
            "nothing imported"
        );
        let (status, location) = f.post("/accounts/import", &[("data", "")]).await;
        assert_eq!((status, location.as_str()), (303, "/accounts"));
        let (_, html) = f.get("/accounts").await;
        assert!(html.contains("Not done:"), "{html}");
        // The reset of an account that needs none still answers with a redirect and a flash.
        let id = html
            .split("id=\"account-")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
        let (status, location) = f.post(&format!("/accounts/{id}/reset"), &[]).await;
        assert_eq!((status, location.as_str()), (303, "/accounts"));
        let (_, html) = f.get("/accounts").await;
        assert!(
            html.contains("Account first@example.org was reset"),
            "{html}"
        );
        let (status, _) = f.post("/accounts/999999/reset", &[]).await;
        assert_eq!(status, 404);

        // Codes and invites: forms without a choice redirect with the reason.
        for (path, back, why) in [
            ("/codes/disable", "/codes", "select codes or name a batch"),
            (
                "/invites/bulk",
                "/invites",
                "choose Resend, Cancel or Remove",
            ),
        ] {
            let (status, location) = f.post(path, &[]).await;
            assert_eq!((status, location.as_str()), (303, back), "{path}");
            let (_, html) = f.get(back).await;
            assert!(html.contains(&format!("Not done: {why}")), "{path}: {html}");
        }

        // ?page=abc shows the page with the reason; a page past the end shows the last one.
        for (path, listed) in [
            ("/accounts", "1 account(s) match"),
            ("/codes", "2 code(s) match"),
            ("/invites", "0 invite(s) match"),
            ("/jobs", "job(s) match"),
            ("/sync-sessions", "<h1>Sync sessions</h1>"),
        ] {
            let (status, html) = f.get(&format!("{path}?page=abc")).await;
            assert_eq!(status, 200, "{path}: {html}");
            assert!(
                html.contains("page must be a whole number of at least 1") && html.contains(listed),
                "{path}: {html}"
            );
            if path == "/codes" {
                // Codes' times read relative, with the exact UTC time as the tooltip.
                assert!(html.contains("<time datetime=\""), "{html}");
            }
            let (status, html) = f.get(&format!("{path}?page=9999")).await;
            assert_eq!(status, 200, "{path}");
            assert!(
                html.contains("Page 1 of 1") && html.contains(listed),
                "{path}: {html}"
            );
        }
        c.t.stop().await;
    })
    .await;
}
