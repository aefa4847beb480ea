//! The alert rules in docs/alerts.yml: every metric a rule reads is on /metrics, with the gauges
//! housekeeping samples for them (mothers by status, seats and last sync per group, accounts per
//! pool); and `promtool test rules docs/alerts_test.yml` passes (required when CI=true).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{TestApp, each_backend};
use poolkeeper::auth::Scope;
use reqwest::Method;
use serde_json::json;

/// Metrics the rules read that this build exports only after an event it cannot provoke here, with
/// the reason. Keep the list short: a name here is not checked against /metrics.
const EXPORTED_LATER: &[(&str, &str)] = &[(
    "backup_last_success_timestamp_seconds",
    "exported by the scheduled backup (issue 16, backups); appears once a backup has succeeded",
)];

fn alerts_yml() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts.yml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `expr` of every rule, as (alert name, expression); a folded (`>-`) or literal (`|`) block
/// is joined from its more indented lines.
fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut rules = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(name) = trimmed.strip_prefix("alert:") {
            alert = name.trim().to_string();
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest.starts_with('>') || rest.starts_with('|') {
                let indent = line.len() - line.trim_start().len();
                let mut parts = Vec::new();
                while let Some(next) = lines.get(i + 1) {
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    parts.push(next.trim());
                    i += 1;
                }
                rules.push((alert.clone(), parts.join(" ")));
            } else {
                rules.push((alert.clone(), rest.trim_matches('\'').to_string()));
            }
        }
        i += 1;
    }
    rules
}

/// The metric names a PromQL expression reads: identifiers that are not functions (followed by
/// `(`), keywords, label names (inside `{}` or after `by`/`on`/...), durations or strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Aggregations may be followed by `by (...)` before their `(`, so they are keywords here.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '"' || chars[j] == '\'' {
                let q = chars[j];
                j += 1;
                while j < chars.len() && chars[j] != q {
                    j += 1;
                }
            }
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '"' || c == '\'' {
            i = skip_to(i + 1, c);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let called = j < chars.len() && chars[j] == '(';
            if LABEL_LISTS.contains(&word.as_str()) {
                if called {
                    i = skip_to(j + 1, ')');
                }
            } else if !called && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                names.insert(word);
            }
        } else if c.is_ascii_digit() {
            // A number, or a duration such as 5m.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names of the exposition text: each sample line's name (histograms by base name too).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                names.insert(base.to_string());
            }
        }
        names.insert(name);
    }
    names
}

/// Every metric the rules read that `exported` lacks (and is not in [`EXPORTED_LATER`]), as
/// "rule: metric".
fn missing_metrics(yaml: &str, exported: &BTreeSet<String>) -> Vec<String> {
    let later: BTreeSet<&str> = EXPORTED_LATER.iter().map(|(n, _)| *n).collect();
    let mut missing = Vec::new();
    for (alert, expr) in rule_exprs(yaml) {
        for name in metric_names(&expr) {
            if !exported.contains(&name) && !later.contains(name.as_str()) {
                missing.push(format!("{alert}: {name}"));
            }
        }
    }
    missing
}

#[test]
fn the_rule_reader_finds_every_rule_and_its_metrics() {
    let rules = rule_exprs(&alerts_yml());
    let alerts: Vec<&str> = rules.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        alerts,
        [
            "PoolkeeperJobFailuresRising",
            "PoolkeeperJobQueueStuck",
            "PoolkeeperMothersInvalid",
            "PoolkeeperGroupFreeSeatsLow",
            "PoolkeeperPoolAllAccountsQuarantined",
            "PoolkeeperGroupSyncStale",
            "PoolkeeperBackupStale",
        ]
    );
    let quarantine = &rules[4].1;
    assert!(
        quarantine.contains("> 0"),
        "folded block joined: {quarantine}"
    );
    assert_eq!(
        metric_names(quarantine),
        BTreeSet::from(["pool_accounts_by_pool".to_string()])
    );
    assert_eq!(
        metric_names(r#"sum by (type) (increase(jobs_finished_total{status="failed"}[30m])) >= 3"#),
        BTreeSet::from(["jobs_finished_total".to_string()])
    );
    assert_eq!(
        metric_names(
            "time() - a:b_seconds > 6 * 3600 and on (group) max without (x) (other_gauge offset 5m)"
        ),
        BTreeSet::from(["a:b_seconds".to_string(), "other_gauge".to_string()])
    );
    // A rule naming a metric /metrics lacks is reported, and a later-exported one is not.
    let bogus = "groups:\n  - name: x\n    rules:\n      - alert: Bogus\n        expr: >-\n          \
                 no_such_metric > 0\n          and backup_last_success_timestamp_seconds > 0\n";
    assert_eq!(
        missing_metrics(bogus, &BTreeSet::new()),
        ["Bogus: no_such_metric"]
    );
    // Every exception is still read by a rule, so the list cannot rot.
    let used: BTreeSet<String> = rules.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for (name, _) in EXPORTED_LATER {
        assert!(used.contains(*name), "{name} is no longer read by any rule");
    }
}

/// Scrapes /metrics after one housekeeping round's sampling (housekeeping runs it every minute).
async fn sample_and_scrape(
    t: &TestApp,
    exported: &mut poolkeeper::metrics::ExportedSeries,
) -> String {
    poolkeeper::metrics::sample_pool_gauges(t.app(), exported).await;
    let res = t.client.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.lines().any(|l| l == *line), "{line} missing:\n{text}");
    }
}

// The only test of this binary that samples the pool gauges: the recorder is process-wide, so a
// second one running beside it could overwrite the values it reads.
#[tokio::test]
async fn every_metric_the_rules_read_is_on_metrics_and_follows_the_pool() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let token = t.token("alerts", Scope::Admin).await;
        let worker = t.token("alerts-worker", Scope::Worker).await;
        let mut exported = poolkeeper::metrics::ExportedSeries::default();
        let post = |path: &'static str, body: serde_json::Value| {
            let (t, token) = (&t, &token);
            async move {
                let (status, body) = t.send_json(token, Method::POST, path, Some(body)).await;
                assert_eq!(status, 201, "{path}: {body}");
                body
            }
        };
        let gid = post("/api/admin/pool-groups", json!({"name": "eu"})).await["id"]
            .as_i64()
            .unwrap();
        let mother = |name: &str, seats: i64| {
            json!({"name": name, "provider": "sim", "credential": "s3cr3t-value-42",
                "seat_limit": seats, "pool_group_id": gid})
        };
        let m1 = post("/api/admin/mothers", mother("m1", 4)).await["id"]
            .as_i64()
            .unwrap();
        let m2 = post("/api/admin/mothers", mother("m2", 2)).await["id"]
            .as_i64()
            .unwrap();
        post(
            "/api/admin/accounts",
            json!({"login": "user@example.org", "password": "pw-1", "pool": "alerting"}),
        )
        .await;
        let synced_ms = 1_795_428_000_000;
        let pool = &t.app().pool;
        poolkeeper::store::mothers::mark_synced(pool, m1, synced_ms)
            .await
            .unwrap();

        let text = sample_and_scrape(&t, &mut exported).await;
        let missing = missing_metrics(&alerts_yml(), &exported_names(&text));
        assert!(
            missing.is_empty(),
            "rules read metrics /metrics lacks: {missing:?}\n{text}"
        );
        assert_lines(
            &text,
            &[
                r#"pool_mothers{status="active"} 2"#,
                r#"pool_mothers{status="invalid"} 0"#,
                r#"pool_group_seats{group="eu",state="free"} 6"#,
                r#"pool_group_seats{group="eu",state="used"} 0"#,
                r#"pool_group_last_sync_success_timestamp_seconds{group="eu"} 1795428000"#,
                r#"pool_accounts_by_pool{pool="alerting",status="available"} 1"#,
                r#"pool_accounts_by_pool{pool="alerting",status="quarantined"} 0"#,
                r#"jobs_finished_total{type="pool_sync_mother",status="failed"} 0"#,
            ],
        );
        assert!(text.contains("jobs_oldest_pending_age_seconds"), "{text}");

        // m2 turns invalid (her seats stop counting as free), m1 syncs again, and the pool's only
        // account is banned: what the invalid, free-seat, sync and quarantine alerts read.
        poolkeeper::store::mothers::set_status(pool, m2, "invalid", synced_ms)
            .await
            .unwrap();
        poolkeeper::store::mothers::mark_synced(pool, m1, synced_ms + 60_000)
            .await
            .unwrap();
        let (status, lease) = t
            .send_json(
                &worker,
                Method::POST,
                "/api/pool/leases",
                Some(json!({"worker": "w1", "pool": "alerting"})),
            )
            .await;
        assert_eq!(status, 201, "{lease}");
        let release = format!(
            "/api/pool/leases/{}/release",
            lease["lease_id"].as_str().unwrap()
        );
        let (status, body) = t
            .send_json(
                &worker,
                Method::POST,
                &release,
                Some(json!({"result": "banned"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let text = sample_and_scrape(&t, &mut exported).await;
        assert_lines(
            &text,
            &[
                r#"pool_mothers{status="active"} 1"#,
                r#"pool_mothers{status="invalid"} 1"#,
                r#"pool_group_seats{group="eu",state="free"} 4"#,
                r#"pool_group_last_sync_success_timestamp_seconds{group="eu"} 1795428060"#,
                r#"pool_accounts_by_pool{pool="alerting",status="available"} 0"#,
                r#"pool_accounts_by_pool{pool="alerting",status="quarantined"} 1"#,
                r#"pool_accounts{status="quarantined"} 1"#,
            ],
        );

        // A deleted group's series turn NaN, which no rule compares true.
        let gone = post("/api/admin/pool-groups", json!({"name": "gone-soon"})).await;
        let text = sample_and_scrape(&t, &mut exported).await;
        assert_lines(
            &text,
            &[r#"pool_group_seats{group="gone-soon",state="free"} 0"#],
        );
        let path = format!("/api/admin/pool-groups/{}", gone["id"]);
        let (status, body) = t.send_json(&token, Method::DELETE, &path, None).await;
        assert!(status < 300, "{status} {body}");
        let text = sample_and_scrape(&t, &mut exported).await;
        assert_lines(
            &text,
            &[
                r#"pool_group_seats{group="gone-soon",state="free"} NaN"#,
                r#"pool_group_seats{group="eu",state="free"} 4"#,
            ],
        );
        t.stop().await;
    })
    .await;
}

#[test]
fn promtool_unit_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let out = match std::process::Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !ci => {
            eprintln!("SKIPPED: promtool is not installed (CI=true requires it)");
            return;
        }
        Err(e) => panic!("running promtool (install Debian's `prometheus` package): {e}"),
    };
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
