//! The Mothers console (issue 13): simulated organisations made on request, the Mothers page's
//! group filter, sorting and bulk actions, a mother's edit form and Sync now, and the pool group
//! page's live naming preview.

mod common;

use common::{TestApp, each_backend, url_encoded};
use poolkeeper::auth::Scope;
use poolkeeper::config::RunEnv;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn sim_org_route_makes_an_organisation_whose_credential_imports_a_mother() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let token = t.token("ops", Scope::Admin).await;
        let (status, body) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/sim/orgs",
                Some(json!({"name": "Hooli", "seats": 4, "members": ["gavin@hooli.example"]})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let credential = body["credential"].as_str().unwrap().to_string();
        assert!(
            credential.starts_with("sim-") && credential.len() > 20,
            "{body}"
        );

        // The credential is one the simulator knows: importing it names the mother after the org.
        let (status, imported) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/import-cookie",
                Some(json!({"cookie": credential, "mode": "user"})),
            )
            .await;
        assert_eq!(status, 201, "{imported}");
        let id = imported["mother_id"].as_i64().unwrap();
        let (_, mother) = t
            .send_json(
                &token,
                Method::GET,
                &format!("/api/admin/mothers/{id}"),
                None,
            )
            .await;
        assert_eq!(mother["name"], "Hooli", "{mother}");

        // Both are in the audit log, and the credential is in neither row.
        let (_, audit) = t
            .send_json(&token, Method::GET, "/api/admin/audit", None)
            .await;
        let actions: Vec<&str> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["mother.create", "sim.add_org"], "{audit}");
        assert_eq!(audit["items"][0]["target_id"], id.to_string());
        assert!(!audit.to_string().contains(&credential), "{audit}");

        // Bad input names the field.
        for (bad, code) in [
            (json!({"name": "x", "seats": 0}), "invalid_seats"),
            (
                json!({"name": "x", "seats": 1, "members": ["a@b.org"]}),
                "invalid_members",
            ),
            (json!({"name": "", "seats": 3}), "invalid_name"),
        ] {
            let (status, body) = t
                .send_json(&token, Method::POST, "/api/admin/sim/orgs", Some(bad))
                .await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
        }
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sim_org_route_is_404_while_the_simulator_is_disabled() {
    let backend = common::Backend::Sqlite;
    for (env, enabled, expected) in [
        (RunEnv::Production, None, 404),
        (RunEnv::Development, Some(false), 404),
        (RunEnv::Production, Some(true), 201),
    ] {
        let t = TestApp::spawn_with(
            &backend,
            |c| {
                c.env = env;
                c.providers.sim.enabled = enabled;
                // Production wants its public address; the test client calls the listen address.
                c.public_url = None;
                c.domain_guard = Some(false);
            },
            poolkeeper::clock::system(),
        )
        .await;
        let token = t.token("ops", Scope::Admin).await;
        let (status, body) = t
            .send_json(
                &token,
                Method::POST,
                "/api/admin/sim/orgs",
                Some(json!({"name": "x", "seats": 2})),
            )
            .await;
        assert_eq!(status, expected, "{env:?} {enabled:?}: {body}");
        if expected == 404 {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("providers.sim.enabled"),
                "{body}"
            );
        }
        t.stop().await;
    }
}

/// A logged-in browser session (no redirects followed) and its helpers.
struct Console<'a> {
    t: &'a TestApp,
    c: reqwest::Client,
    csrf: String,
    token: String,
}

impl<'a> Console<'a> {
    async fn new(t: &'a TestApp) -> Self {
        let (c, csrf) = t.login_without_redirects().await;
        let token = t.token("console", Scope::Admin).await;
        Self { t, c, csrf, token }
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, body) = self.t.send_json(&self.token, method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }

    async fn group(&self, name: &str) -> i64 {
        self.api(
            Method::POST,
            "/api/admin/pool-groups",
            Some(json!({"name": name})),
        )
        .await["id"]
            .as_i64()
            .unwrap()
    }

    async fn mother(&self, name: &str, group: Option<i64>, seat_limit: i64) -> i64 {
        let body = json!({"name": name, "provider": "sim", "credential": format!("cred-{name}"),
            "pool_group_id": group, "seat_limit": seat_limit});
        self.api(Method::POST, "/api/admin/mothers", Some(body))
            .await["id"]
            .as_i64()
            .unwrap()
    }

    async fn get_mother(&self, id: i64) -> Option<serde_json::Value> {
        let (status, body) = self
            .t
            .send_json(
                &self.token,
                Method::GET,
                &format!("/api/admin/mothers/{id}"),
                None,
            )
            .await;
        (status == 200).then_some(body)
    }

    /// A page's status and HTML.
    async fn page(&self, path: &str) -> (u16, String) {
        let res = self.c.get(self.t.url(path)).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Posts a form with the CSRF token; the status, the `Location` and the body.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let res = self
            .c
            .post(self.t.url(path))
            .header("origin", &self.t.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url_encoded(&all))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, location, res.text().await.unwrap())
    }
}

/// The names of the mothers table's rows, in order.
fn listed_names(html: &str) -> Vec<String> {
    let Some(start) = html.find("id=\"mothers\"") else {
        return Vec::new();
    };
    let table = &html[start..html[start..].find("</table>").unwrap() + start];
    table
        .match_indices("<td data-label=\"Name\"><a href=\"/mothers/")
        .map(|(i, m)| {
            let rest = &table[i + m.len()..];
            let open = rest.find('>').unwrap() + 1;
            rest[open..open + rest[open..].find('<').unwrap()].to_string()
        })
        .collect()
}

#[tokio::test]
async fn mothers_page_filters_by_group_and_sorts_by_name_seats_free_and_status() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = Console::new(&t).await;
        let g1 = c.group("north").await;
        let g2 = c.group("south").await;
        let bea = c.mother("bea", Some(g1), 3).await;
        c.mother("al", Some(g2), 9).await;
        let cy = c.mother("cy", Some(g1), 5).await;
        c.mother("dee", None, 1).await;
        c.api(
            Method::PATCH,
            &format!("/api/admin/mothers/{cy}"),
            Some(json!({"status": "disabled"})),
        )
        .await;
        c.api(
            Method::PATCH,
            &format!("/api/admin/mothers/{bea}"),
            Some(json!({"status": "invalid"})),
        )
        .await;

        let (status, html) = c.page(&format!("/mothers?group={g1}")).await;
        assert_eq!(status, 200);
        let mut names = listed_names(&html);
        names.sort();
        assert_eq!(names, ["bea", "cy"], "group filter");

        for (sort, expected) in [
            ("", vec!["dee", "cy", "al", "bea"]),
            ("name", vec!["al", "bea", "cy", "dee"]),
            ("-name", vec!["dee", "cy", "bea", "al"]),
            // Free seats: 1 (dee), 3 (bea), 5 (cy), 9 (al).
            ("seats_free", vec!["dee", "bea", "cy", "al"]),
            ("-seats_free", vec!["al", "cy", "bea", "dee"]),
            // active (al, dee: newest first), disabled, invalid.
            ("status", vec!["dee", "al", "cy", "bea"]),
            ("-status", vec!["bea", "cy", "dee", "al"]),
        ] {
            let (status, html) = c.page(&format!("/mothers?sort={sort}")).await;
            assert_eq!(status, 200, "{sort}");
            assert_eq!(listed_names(&html), expected, "sort={sort}");
        }
        // The header link of the sorted column turns the order around and keeps the filters.
        let (_, html) = c
            .page(&format!("/mothers?sort=name&group={g1}&status=invalid"))
            .await;
        assert!(
            html.contains(&format!(
                "href=\"/mothers?page=1&#38;status=invalid&#38;group={g1}&#38;sort=-name\""
            )),
            "{html}"
        );
        assert_eq!(listed_names(&html), ["bea"]);
        assert!(html.contains("aria-sort=\"ascending\""));

        // A bad sort or group is explained on the page, which lists every mother.
        let (status, html) = c.page("/mothers?sort=size").await;
        assert_eq!(status, 200);
        assert!(html.contains("sort must be one of"), "{html}");
        assert_eq!(listed_names(&html).len(), 4);
        let (_, html) = c.page("/mothers?group=abc").await;
        assert!(html.contains("group must be a pool group id"), "{html}");

        // The pager keeps the filter and the order.
        for i in 0..26 {
            c.mother(&format!("n{i:02}"), Some(g2), 2).await;
        }
        let (_, html) = c.page(&format!("/mothers?group={g2}&sort=-name")).await;
        let names = listed_names(&html);
        assert_eq!(names.len(), 25);
        assert_eq!(names[0], "n25");
        assert!(
            html.contains(&format!(
                "href=\"/mothers?page=2&#38;group={g2}&#38;sort=-name\" rel=\"next\""
            )),
            "{html}"
        );
        let (_, html) = c
            .page(&format!("/mothers?page=2&group={g2}&sort=-name"))
            .await;
        assert_eq!(listed_names(&html), ["n00", "al"]);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bulk_actions_ask_first_then_change_exactly_the_checked_mothers() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = Console::new(&t).await;
        let g1 = c.group("east").await;
        let g2 = c.group("west").await;
        let mut ids = Vec::new();
        for name in ["m1", "m2", "m3", "m4"] {
            ids.push(c.mother(name, Some(g1), 4).await);
        }
        let field = |id: i64| format!("mother_{id}");
        let (f1, f3) = (field(ids[0]), field(ids[2]));
        let g2s = g2.to_string();

        // Move: the first post only asks.
        let fields = [
            (f1.as_str(), "1"),
            (f3.as_str(), "1"),
            ("action", "move"),
            ("group", g2s.as_str()),
            ("back", "?sort=name"),
        ];
        let (status, _, html) = c.post("/mothers/bulk", &fields).await;
        assert_eq!(status, 200);
        assert!(
            html.contains("Move these 2 mother(s) to pool group west?"),
            "{html}"
        );
        assert!(html.contains("name=\"confirm\" value=\"yes\""), "{html}");
        assert!(html.contains(">m1</a>") && html.contains(">m3</a>") && !html.contains(">m2</a>"));
        for id in &ids {
            assert_eq!(
                c.get_mother(*id).await.unwrap()["pool_group_id"],
                g1,
                "asked only"
            );
        }
        let mut confirmed = fields.to_vec();
        confirmed.push(("confirm", "yes"));
        let (status, location, _) = c.post("/mothers/bulk", &confirmed).await;
        assert_eq!((status, location.as_str()), (303, "/mothers?sort=name"));
        let (_, html) = c.page("/mothers").await;
        assert!(html.contains("Move: done for 2 mother(s)."), "{html}");
        let groups: Vec<_> = futures_join(&c, &ids, "pool_group_id").await;
        assert_eq!(groups, [json!(g2), json!(g1), json!(g2), json!(g1)]);

        // Disable the second and fourth.
        let (f2, f4) = (field(ids[1]), field(ids[3]));
        let (status, _, _) = c
            .post(
                "/mothers/bulk",
                &[
                    (&f2, "1"),
                    (&f4, "1"),
                    ("action", "disable"),
                    ("confirm", "yes"),
                ],
            )
            .await;
        assert_eq!(status, 303);
        let statuses = futures_join(&c, &ids, "status").await;
        assert_eq!(statuses, ["active", "disabled", "active", "disabled"]);

        // Sync the first and second: one job each, both recorded on their own page.
        let (status, _, _) = c
            .post(
                "/mothers/bulk",
                &[
                    (&f1, "1"),
                    (&f2, "1"),
                    ("action", "sync"),
                    ("confirm", "yes"),
                ],
            )
            .await;
        assert_eq!(status, 303);
        for (id, synced) in ids.iter().zip([true, true, false, false]) {
            let (_, html) = c.page(&format!("/mothers/{id}")).await;
            assert_eq!(html.contains("id=\"mother-syncs\""), synced, "mother {id}");
        }

        // Delete the third only.
        let (status, _, _) = c
            .post(
                "/mothers/bulk",
                &[(&f3, "1"), ("action", "delete"), ("confirm", "yes")],
            )
            .await;
        assert_eq!(status, 303);
        let left: Vec<bool> = {
            let mut v = Vec::new();
            for id in &ids {
                v.push(c.get_mother(*id).await.is_some());
            }
            v
        };
        assert_eq!(left, [true, true, false, true]);

        // Nothing checked, or an unknown action: refused with a message, nothing changed.
        let (status, location, _) = c
            .post("/mothers/bulk", &[("action", "delete"), ("confirm", "yes")])
            .await;
        assert_eq!((status, location.as_str()), (303, "/mothers"));
        let (_, html) = c.page("/mothers").await;
        assert!(html.contains("check at least one mother"), "{html}");
        let (status, _, _) = c
            .post(
                "/mothers/bulk",
                &[(&f1, "1"), ("action", "explode"), ("confirm", "yes")],
            )
            .await;
        assert_eq!(status, 303);
        assert!(c.get_mother(ids[0]).await.is_some());

        // Each mother a bulk action was done to has its audit row, by the signed-in admin.
        let token = t.token("auditor", Scope::Admin).await;
        let audit = |id: i64, action: &'static str| {
            let (t, token) = (&t, token.clone());
            async move {
                let path = format!("/api/admin/audit?target=mother:{id}&action={action}");
                let (status, body) = t.send_json(&token, Method::GET, &path, None).await;
                assert_eq!(status, 200, "{body}");
                body["items"].as_array().unwrap().clone()
            }
        };
        let deleted = audit(ids[2], "mother.delete").await;
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(deleted[0]["actor"], "admin");
        assert!(
            deleted[0]["summary"]
                .as_str()
                .unwrap()
                .contains("\"bulk\":\"delete\"")
        );
        assert_eq!(audit(ids[0], "mother.update").await.len(), 1, "moved");
        assert_eq!(audit(ids[1], "mother.update").await.len(), 1, "disabled");
        assert_eq!(audit(ids[0], "mother.sync").await.len(), 1);
        assert_eq!(audit(ids[2], "mother.sync").await.len(), 0, "not synced");
        t.stop().await;
    })
    .await;
}

/// One field of each mother, in order.
async fn futures_join(c: &Console<'_>, ids: &[i64], field: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(c.get_mother(*id).await.unwrap()[field].clone());
    }
    out
}

#[tokio::test]
async fn mother_edit_saves_rotates_and_refuses_bad_values_changing_nothing() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = Console::new(&t).await;
        let g = c.group("edits").await;
        let id = c.mother("ed", None, 7).await;
        let path = format!("/mothers/{id}/edit");
        let gs = g.to_string();
        let (status, location, _) = c
            .post(
                &path,
                &[
                    ("status", "disabled"),
                    ("seat_limit", "5"),
                    ("notes", "spare"),
                    ("pool_group_id", &gs),
                    ("credential", "new-secret"),
                ],
            )
            .await;
        assert_eq!(
            (status, location.as_str()),
            (303, format!("/mothers/{id}").as_str())
        );
        let m = c.get_mother(id).await.unwrap();
        assert_eq!(
            (
                m["status"].as_str(),
                m["seat_limit"].as_i64(),
                m["notes"].as_str()
            ),
            (Some("disabled"), Some(5), Some("spare"))
        );
        assert_eq!(m["pool_group_id"], g);
        let opened = poolkeeper::service::mothers::open_credential(t.app().pool_ctx(), id)
            .await
            .unwrap();
        assert_eq!(opened.expose(), "new-secret");
        let (_, html) = c.page(&format!("/mothers/{id}")).await;
        assert!(html.contains("her credential was replaced"), "{html}");
        assert!(!html.contains("new-secret"));

        for (fields, message) in [
            (
                vec![("status", "active"), ("seat_limit", "many")],
                "seat_limit must be a whole number",
            ),
            (
                vec![("status", "active"), ("seat_limit", "-1")],
                "seat_limit must be between 0 and",
            ),
            (
                vec![("status", "asleep"), ("seat_limit", "7")],
                "status must be",
            ),
            (
                vec![
                    ("status", "active"),
                    ("seat_limit", "7"),
                    ("pool_group_id", "999999"),
                ],
                "does not name a pool group",
            ),
            (
                vec![
                    ("status", "active"),
                    ("seat_limit", "7"),
                    ("credential", "   "),
                ],
                "credential must be",
            ),
        ] {
            let (status, _, html) = c.post(&path, &fields).await;
            assert_eq!(status, 400, "{fields:?}");
            assert!(html.contains(message), "{message}: {html}");
            // What was typed is shown again.
            assert!(
                html.contains(&format!("value=\"{}\"", fields[1].1)),
                "{html}"
            );
            let m = c.get_mother(id).await.unwrap();
            assert_eq!(
                (m["status"].as_str(), m["seat_limit"].as_i64()),
                (Some("disabled"), Some(5)),
                "{fields:?} changed nothing"
            );
        }
        let (status, _, _) = c
            .post(
                "/mothers/999999/edit",
                &[("status", "active"), ("seat_limit", "3")],
            )
            .await;
        assert_eq!(status, 404);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sync_now_queues_her_sync_and_a_mother_in_no_group_is_told_why_not() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = Console::new(&t).await;
        let g = c.group("syncs").await;
        let grouped = c.mother("grouped", Some(g), 3).await;
        let alone = c.mother("alone", None, 3).await;
        let (status, location, _) = c.post(&format!("/mothers/{grouped}/sync"), &[]).await;
        assert_eq!((status, location), (303, format!("/mothers/{grouped}")));
        let (_, html) = c.page(&format!("/mothers/{grouped}")).await;
        assert!(html.contains("id=\"mother-syncs\""), "{html}");
        assert!(html.contains("pool_sync_mother"), "{html}");
        let (status, _, _) = c.post(&format!("/mothers/{alone}/sync"), &[]).await;
        assert_eq!(status, 303);
        let (_, html) = c.page(&format!("/mothers/{alone}")).await;
        assert!(
            html.contains("She is in no pool group: choose one under Edit, then sync."),
            "{html}"
        );
        assert!(html.contains("No syncs recorded."));
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn creating_a_sim_mother_checks_her_credential_and_the_sim_form_imports_a_new_org() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = Console::new(&t).await;
        // A credential the simulator does not know is refused; nothing is created.
        let (status, _, html) = c
            .post(
                "/mothers",
                &[
                    ("name", "ghost"),
                    ("provider", "sim"),
                    ("credential", "nobody-knows-me"),
                ],
            )
            .await;
        assert_eq!(status, 400);
        assert!(html.contains("rejected the credential"), "{html}");
        let (_, list) = c.page("/mothers").await;
        assert!(listed_names(&list).is_empty());

        // The form makes an organisation and imports it.
        let g = c.group("sims").await;
        let gs = g.to_string();
        let (status, location, _) = c
            .post(
                "/mothers/sim-org",
                &[
                    ("name", "Umbrella"),
                    ("seats", "4"),
                    ("members", "a@u.example, b@u.example"),
                    ("pool_group_id", &gs),
                ],
            )
            .await;
        assert_eq!(status, 303);
        let id: i64 = location.trim_start_matches("/mothers/").parse().unwrap();
        let m = c.get_mother(id).await.unwrap();
        assert_eq!(
            (m["name"].as_str(), m["provider"].as_str()),
            (Some("Umbrella"), Some("sim"))
        );
        assert_eq!(m["pool_group_id"], g);
        // Her credential is the organisation's: the simulator knows it.
        let credential = poolkeeper::service::mothers::open_credential(t.app().pool_ctx(), id)
            .await
            .unwrap();
        let org = t.app().providers.sim.org(&credential).unwrap().unwrap();
        assert_eq!(org.teams[0].members.len(), 3);

        // A bad request makes nothing and says why.
        let (status, location, _) = c
            .post("/mothers/sim-org", &[("name", "Nope"), ("seats", "0")])
            .await;
        assert_eq!((status, location.as_str()), (303, "/mothers"));
        let (_, html) = c.page("/mothers").await;
        assert!(
            html.contains("No simulated organisation made: seats must be between 1 and 1000"),
            "{html}"
        );
        assert!(html.contains("id=\"open-sim\""));
        // The import dialog tells how to get a credential to try.
        assert!(
            html.contains("id=\"import-sample-help\"") && html.contains("demo-cookie-globex"),
            "{html}"
        );
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_sim_form_is_gone_while_the_simulator_is_disabled() {
    let t = TestApp::spawn_with(
        &common::Backend::Sqlite,
        |c| c.providers.sim.enabled = Some(false),
        poolkeeper::clock::system(),
    )
    .await;
    let c = Console::new(&t).await;
    let (status, html) = c.page("/mothers").await;
    assert_eq!(status, 200);
    assert!(!html.contains("id=\"open-sim\"") && !html.contains("sim-org-form"));
    let (status, _, _) = c
        .post("/mothers/sim-org", &[("name", "x"), ("seats", "2")])
        .await;
    assert_eq!(status, 404);
    t.stop().await;
}

/// What the domain renderer gives for `template` in group `group` today, numbers 1 to 5.
fn rendered(template: &str, group: &str, domain: Option<&str>) -> Vec<String> {
    let t = poolkeeper::domain::naming::Template::parse(template).unwrap();
    let date = poolkeeper::domain::naming::utc_day(poolkeeper::clock::system().now_ms());
    (1..=5)
        .map(|seq| {
            t.render(&poolkeeper::domain::naming::NameValues {
                group,
                date: &date,
                seq,
                domain,
            })
            .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn live_preview_renders_typed_templates_like_the_domain_and_saves_nothing() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = Console::new(&t).await;
        let g = c.group("live").await;
        let team = "T-{group}-{seq3}";
        let email = "kid{seq3}.{date}@{domain}";
        let query = url_encoded(&[
            ("team_template", team),
            ("child_email_template", email),
            ("email_domain", "Kids.Example.org"),
        ]);
        let (status, body) = c.page(&format!("/pool-groups/{g}/preview?{query}")).await;
        assert_eq!(status, 200, "{body}");
        let p: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(p["team_names"], json!(rendered(team, "live", None)));
        assert_eq!(
            p["child_emails"],
            json!(rendered(email, "live", Some("kids.example.org")))
        );
        // Fields not sent keep the saved template.
        assert_eq!(
            p["child_names"],
            json!(rendered(
                poolkeeper::domain::naming::DEFAULT_CHILD_NAME_TEMPLATE,
                "live",
                None
            ))
        );
        // Nothing was saved: the group still has its default team template.
        let saved = c
            .api(Method::GET, &format!("/api/admin/pool-groups/{g}"), None)
            .await;
        assert_eq!(
            saved["settings"]["team_template"],
            poolkeeper::domain::naming::DEFAULT_TEAM_TEMPLATE
        );
        // Saved, the page's own preview shows the same names as the live one did.
        let (status, _, _) = c
            .post(
                &format!("/pool-groups/{g}/settings"),
                &[
                    ("team_template", team),
                    ("child_name_template", "{group}-{date}-{seq3}"),
                    ("child_email_template", email),
                    ("email_domain", "kids.example.org"),
                    ("is_active", "1"),
                ],
            )
            .await;
        assert_eq!(status, 303);
        let (_, html) = c.page(&format!("/pool-groups/{g}")).await;
        for name in rendered(team, "live", None) {
            assert!(
                html.contains(&format!("<div>{name}</div>")),
                "{name}: {html}"
            );
        }

        // A template that does not parse is a 400 naming the part.
        let query = url_encoded(&[("team_template", "{group}-{nope}")]);
        let (status, body) = c.page(&format!("/pool-groups/{g}/preview?{query}")).await;
        assert_eq!(status, 400, "{body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["code"], "invalid_template");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("team_template"),
            "{e}"
        );
        let (status, _) = c.page("/pool-groups/999999/preview").await;
        assert_eq!(status, 404);
        t.stop().await;
    })
    .await;
}

#[tokio::test]
async fn group_page_lists_its_mothers_with_seats_and_last_sync_and_create_sets_templates() {
    each_backend(|backend| async move {
        let t = TestApp::spawn(&backend).await;
        let c = Console::new(&t).await;
        // The create form sets templates, domain and auto-invite at once.
        let (status, location, _) = c
            .post(
                "/pool-groups",
                &[
                    ("name", "made"),
                    ("team_template", "{group}-team-{seq3}"),
                    ("email_domain", "made.example.org"),
                    ("auto_invite", "1"),
                ],
            )
            .await;
        assert_eq!(status, 303);
        let g: i64 = location
            .trim_start_matches("/pool-groups/")
            .parse()
            .unwrap();
        let saved = c
            .api(Method::GET, &format!("/api/admin/pool-groups/{g}"), None)
            .await;
        assert_eq!(saved["settings"]["team_template"], "{group}-team-{seq3}");
        assert_eq!(saved["settings"]["email_domain"], "made.example.org");
        assert_eq!(saved["settings"]["auto_invite"], true);
        // A bad template creates nothing.
        let (status, _, html) = c
            .post(
                "/pool-groups",
                &[("name", "broken"), ("team_template", "{oops}")],
            )
            .await;
        assert_eq!(status, 400);
        assert!(html.contains("team_template"), "{html}");
        let groups = c.api(Method::GET, "/api/admin/pool-groups", None).await;
        assert!(!groups.to_string().contains("broken"), "{groups}");
        // A team template alone is fine although the default email template has no domain yet
        // (the group's page explains that, as for a group made with the defaults).
        let (status, _, _) = c
            .post(
                "/pool-groups",
                &[("name", "teams-only"), ("team_template", "{group}-{seq3}")],
            )
            .await;
        assert_eq!(status, 303);
        let groups = c.api(Method::GET, "/api/admin/pool-groups", None).await;
        assert!(groups.to_string().contains("teams-only"), "{groups}");

        let synced = c.mother("synced", Some(g), 4).await;
        c.mother("fresh", Some(g), 2).await;
        c.mother("elsewhere", None, 2).await;
        let (status, _, _) = c.post(&format!("/mothers/{synced}/sync"), &[]).await;
        assert_eq!(status, 303);
        let (_, html) = c.page(&format!("/pool-groups/{g}")).await;
        let list = &html[html
            .find("id=\"group-mother-list\"")
            .expect("mothers table")..];
        assert!(list.contains(">synced</a>") && list.contains(">fresh</a>"));
        assert!(!list.contains(">elsewhere</a>"));
        assert!(list.contains("0 used · 0 held · 2 free"), "{list}");
        assert!(list.contains("never"), "fresh was never synced");
        assert!(
            list.contains("/sync-sessions/"),
            "synced links her last sync"
        );
        t.stop().await;
    })
    .await;
}
