//! The dashboard (`/`): is the pool healthy? Per pool group its mothers by status, a seat bar, codes
//! left against free seats and the last sync; the job queue; redeems; mothers that need attention;
//! two charts (jobs per hour, seats used per day). And the System page (`/system`): databases and
//! this instance's settings, the last backup and the webhook endpoints. Every dashboard figure
//! comes from `service::overview`.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::Layout;
use super::charts::{self, BLUE, Chart, ORANGE, Series};
use super::times::{Moment, duration};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::db::DbState;
use crate::service::overview::{self as service, GroupHealth, HOUR_MS, Overview};
use crate::store::overview::AttentionMother;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/system", get(system))
}

/// Days the seat chart covers.
const SEAT_DAYS: i64 = 30;
/// Groups that get a seat chart of their own.
const SEAT_CHARTS: usize = 6;

/// A group's card.
struct GroupCard {
    group: GroupHealth,
    bar: String,
    free: i64,
    /// More unused codes than free seats: some codes cannot be redeemed now.
    codes_over_seats: bool,
    last_sync_at: Option<Moment>,
}

/// A mother in the attention list.
struct AttentionRow {
    mother: AttentionMother,
    why: String,
    at: Moment,
}

/// A chart with its title shown above it (the SVG's own `<title>` is for screen readers).
#[derive(Default)]
struct Figure {
    title: String,
    svg: String,
}

impl Figure {
    fn of(chart: Chart, draw: fn(&Chart) -> String) -> Self {
        Self {
            svg: draw(&chart),
            title: chart.title,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    overview: Option<Overview>,
    groups: Vec<GroupCard>,
    attention: Vec<AttentionRow>,
    free: i64,
    total_bar: String,
    oldest_pending: Option<String>,
    jobs_chart: Figure,
    redeems_chart: Figure,
    seat_charts: Vec<Figure>,
    blue: String,
    orange: String,
    error: Option<String>,
}

fn hour_label(ms: i64) -> String {
    format!("{:02}:00", ms.div_euclid(HOUR_MS).rem_euclid(24))
}

async fn dashboard(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let now = app.clock.now_ms();
    let mut page = DashboardPage {
        layout: Layout::new(&principal, "/"),
        overview: None,
        groups: Vec::new(),
        attention: Vec::new(),
        free: 0,
        total_bar: String::new(),
        oldest_pending: None,
        jobs_chart: Figure::default(),
        redeems_chart: Figure::default(),
        seat_charts: Vec::new(),
        blue: charts::swatch(BLUE),
        orange: charts::swatch(ORANGE),
        error: None,
    };
    let loaded = tokio::try_join!(
        service::overview(&app.pool, &app.users, now),
        service::jobs_per_hour(&app.users, now),
        service::redeems_per_hour(&app.users, now),
        service::seat_history(&app.pool, now, SEAT_DAYS),
    );
    let (overview, hourly, redeems, history) = match loaded {
        Ok(v) => v,
        Err(e) => {
            page.error = Some(e.message);
            return page.into_response();
        }
    };
    page.jobs_chart = Figure::of(
        Chart {
            id: "jobs-chart".into(),
            title: "Jobs finished per hour, last 24 hours".into(),
            x_label: "hour (UTC)".into(),
            y_label: "jobs".into(),
            points: (0..24)
                .map(|i| hour_label(hourly.from + i * HOUR_MS))
                .collect(),
            series: vec![
                Series {
                    name: "succeeded".into(),
                    colour: BLUE,
                    values: hourly.succeeded,
                },
                Series {
                    name: "failed".into(),
                    colour: ORANGE,
                    values: hourly.failed,
                },
            ],
        },
        Chart::bars,
    );
    page.redeems_chart = Figure::of(
        Chart {
            id: "redeems-chart".into(),
            title: "Codes redeemed per hour, last 24 hours".into(),
            x_label: "hour (UTC)".into(),
            y_label: "codes".into(),
            points: (0..24)
                .map(|i| hour_label(redeems.from + i * HOUR_MS))
                .collect(),
            series: vec![Series {
                name: "redeemed".into(),
                colour: BLUE,
                values: redeems.redeemed,
            }],
        },
        Chart::bars,
    );
    page.seat_charts = history
        .iter()
        .take(SEAT_CHARTS)
        .map(|h| {
            Figure::of(
                Chart {
                    id: format!("seats-chart-{}", h.pool_group_id),
                    title: format!("Seats of {} per day", h.name),
                    x_label: "day (UTC)".into(),
                    y_label: "seats".into(),
                    points: h.days.iter().map(|d| d.0[5..].to_string()).collect(),
                    series: vec![
                        Series {
                            name: "used".into(),
                            colour: BLUE,
                            values: h.days.iter().map(|d| d.2).collect(),
                        },
                        Series {
                            name: "held".into(),
                            colour: ORANGE,
                            values: h.days.iter().map(|d| d.3).collect(),
                        },
                    ],
                },
                Chart::lines,
            )
        })
        .collect();
    page.groups = overview
        .groups
        .iter()
        .cloned()
        .map(|g| GroupCard {
            bar: charts::seat_bar(g.seats.used, g.seats.held, g.seats.total),
            free: g.seats.free(),
            codes_over_seats: g.codes_left > g.seats.free(),
            last_sync_at: g.last_sync.as_ref().map(|s| Moment::new(s.started_at, now)),
            group: g,
        })
        .collect();
    page.attention = overview
        .invalid
        .iter()
        .map(|m| AttentionRow {
            why: "credential refused (invalid)".into(),
            at: Moment::new(m.at, now),
            mother: m.clone(),
        })
        // A mother both invalid and failing is listed once, as invalid.
        .chain(
            overview
                .failing
                .iter()
                .filter(|m| !overview.invalid.iter().any(|i| i.id == m.id))
                .map(|m| AttentionRow {
                    why: format!(
                        "{} failed sync(s) in 24 h, none succeeded since",
                        m.failures
                    ),
                    at: Moment::new(m.at, now),
                    mother: m.clone(),
                }),
        )
        .collect();
    page.free = overview.seats.free();
    page.total_bar = charts::seat_bar(
        overview.seats.used,
        overview.seats.held,
        overview.seats.total,
    );
    page.oldest_pending = overview.queue.oldest_due.map(|t| duration(now - t));
    page.overview = Some(overview);
    page.into_response()
}

#[derive(Template, WebTemplate)]
#[template(path = "system.html")]
struct SystemPage {
    layout: Layout,
    databases: Vec<(&'static str, DbState)>,
    version: &'static str,
    env: &'static str,
    domain_guard: bool,
    listen: String,
    data_dir: String,
    visibility_timeout_seconds: u64,
    max_attempts: u32,
    now: String,
    /// The last scheduled backup: when and how large; `None` when there is none yet.
    last_backup: Option<(Moment, String)>,
    /// Why the last backup could not be read, when it could not.
    backup_error: Option<String>,
    backup_dir: String,
    webhooks: Vec<WebhookRow>,
}

/// A webhook endpoint as the System page shows it: host and events, never the secret or path.
struct WebhookRow {
    host: String,
    events: String,
    /// The last delivery attempt this process made: when, the event, the outcome.
    last: Option<(Moment, String, bool, String)>,
}

/// `1234 B`, `12.3 KiB`, `4.5 MiB`, `1.2 GiB`.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

async fn system(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> SystemPage {
    let (pool, users) = tokio::join!(app.pool.database().state(), app.users.database().state());
    let now = app.clock.now_ms();
    let (last_backup, backup_error) = match crate::backup::last_backup(&app.config) {
        Ok(last) => (
            last.map(|b| (Moment::new(b.at_ms, now), size_text(b.size_bytes))),
            None,
        ),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let webhooks = app
        .webhooks
        .endpoints()
        .iter()
        .map(|e| WebhookRow {
            host: match e.url.port() {
                Some(port) => format!("{}:{port}", e.url.host_str().unwrap_or_default()),
                None => e.url.host_str().unwrap_or_default().to_string(),
            },
            events: e
                .events
                .iter()
                .map(|ev| ev.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            last: app
                .webhooks
                .last_delivery(e.url.as_str())
                .map(|d| (Moment::new(d.at_ms, now), d.event, d.ok, d.outcome)),
        })
        .collect();
    SystemPage {
        last_backup,
        backup_error,
        backup_dir: app.config.backup_dir().display().to_string(),
        webhooks,
        layout: Layout::new(&principal, "/system"),
        databases: vec![("pool", pool), ("users", users)],
        version: env!("CARGO_PKG_VERSION"),
        env: app.config.env.as_str(),
        domain_guard: app.config.domain_guard(),
        listen: app.config.listen.to_string(),
        data_dir: app.config.data_dir.display().to_string(),
        visibility_timeout_seconds: app.config.jobs.visibility_timeout_seconds,
        max_attempts: app.config.jobs.max_attempts,
        now: clock::rfc3339(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size_text(0), "0 B");
        assert_eq!(size_text(1023), "1023 B");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(size_text(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
