//! The alert rules in docs/alerts.yml: every metric a rule reads is on /metrics, with the gauges
//! housekeeping samples for them (mothers by status, seats and last sync per group, accounts per
//! pool); and `promtool test rules docs/alerts_test.yml` passes (required when CI=true).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Backend, TestApp, each_backend};
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

#[tokio::test]
async fn every_metric_the_rules_read_is_on_metrics() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let token = t.token("alerts", Scope::Admin).await;
        let (status, group) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/pool-groups",
                Some(json!({"name": "eu"})),
            )
            .await;
        assert_eq!(status, 201, "{group}");
        let gid = group["id"].as_i64().unwrap();
        let (status, mother) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/mothers",
                Some(
                    json!({"name": "m1", "provider": "sim", "credential": "s3cr3t-value-42",
                    "seat_limit": 4, "pool_group_id": gid}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{mother}");
        let mid = mother["id"].as_i64().unwrap();
        let (status, account) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/accounts",
                Some(json!({"login": "user@example.org", "password": "pw-1", "pool": "alerting"})),
            )
            .await;
        assert_eq!(status, 201, "{account}");
        let synced_ms = 1_795_428_000_000;
        poolkeeper::store::mothers::mark_synced(&t.app().pool, mid, synced_ms)
            .await
            .unwrap();
        // One housekeeping round's sampling (housekeeping itself runs it every minute).
        poolkeeper::metrics::sample_pool_gauges(t.app(), &mut Default::default()).await;

        let text = t
            .client
            .get(t.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing = missing_metrics(&alerts_yml(), &exported_names(&text));
        assert!(
            missing.is_empty(),
            "rules read metrics /metrics lacks: {missing:?}\n{text}"
        );

        // The sampled values are this app's (the recorder is shared by the tests of this binary,
        // so only series labelled with this test's group and pool are compared).
        for line in [
            r#"pool_group_seats{group="eu",state="free"} 4"#,
            r#"pool_group_seats{group="eu",state="used"} 0"#,
            r#"pool_group_last_sync_success_timestamp_seconds{group="eu"} 1795428000"#,
            r#"pool_accounts_by_pool{pool="alerting",status="available"} 1"#,
            r#"pool_accounts_by_pool{pool="alerting",status="quarantined"} 0"#,
            r#"jobs_finished_total{type="pool_sync_mother",status="failed"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("pool_mothers{status=\"active\"}"), "{text}");
        assert!(text.contains("jobs_oldest_pending_age_seconds"), "{text}");
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_deleted_group_keeps_no_alerting_value() {
    let t = TestApp::spawn(&Backend::Sqlite).await;
    let token = t.token("alerts", Scope::Admin).await;
    let (status, group) = t
        .send_json(
            &token,
            Method::POST,
            "/api/admin/pool-groups",
            Some(json!({"name": "gone-soon"})),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let mut exported = poolkeeper::metrics::ExportedSeries::default();
    poolkeeper::metrics::sample_pool_gauges(t.app(), &mut exported).await;
    let scrape = || async {
        t.client
            .get(t.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = scrape().await;
    assert!(
        text.lines()
            .any(|l| l == r#"pool_group_seats{group="gone-soon",state="free"} 0"#),
        "an active group without mothers has no free seat:\n{text}"
    );
    let path = format!("/api/admin/pool-groups/{}", group["id"]);
    let (status, body) = t.send_json(&token, Method::DELETE, &path, None).await;
    assert!(status < 300, "{status} {body}");
    poolkeeper::metrics::sample_pool_gauges(t.app(), &mut exported).await;
    let text = scrape().await;
    assert!(
        text.lines()
            .any(|l| l == r#"pool_group_seats{group="gone-soon",state="free"} NaN"#),
        "a deleted group's gauge is NaN, which no rule compares true:\n{text}"
    );
    t.stop().await;
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
            eprintln!("promtool not installed: skipping the rule unit tests (CI=true requires it)");
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
