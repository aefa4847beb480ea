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
