//! Sample data for `poolkeeper demo`: a few organisations of the simulated provider, imported into
//! a `demo` pool group with auto-invite on, and synced once. Every step looks before it writes, so
//! starting the demo again on the same data dir adds nothing and queues no second sync. It only
//! creates what it names here; it never changes a group or mother an operator made.

use anyhow::Context;

use crate::app::App;
use crate::crypto::Credential;
use crate::providers::MemberStatus;
use crate::providers::sim::{SimMember, SimOrg};
use crate::service::import_cookie::{self, ImportCookieRequest};
use crate::service::pool_groups::{self as group_service, SettingsPatch};
use crate::store::mothers as mother_store;
use crate::store::pool_groups::{self as group_store, PoolGroup};

pub const DEMO_GROUP: &str = "demo";
/// Where the demo group's generated child addresses live (a documentation domain).
const DEMO_EMAIL_DOMAIN: &str = "demo.example.org";
/// Seats of each sample organisation's team, the owner's included: the owner plus the mother's
/// 7 default seats, so auto-invite can fill every free seat.
const SAMPLE_TEAM_SEATS: i64 = 8;
/// The sample organisations and the members each already has (besides its owner).
const SAMPLE_ORGS: [(&str, &[&str]); 3] = [
    ("acme", &["ada", "bob"]),
    ("globex", &["carol"]),
    ("initech", &[]),
];

/// What the demo has to show.
#[derive(Debug)]
pub struct SampleData {
    pub group: String,
    pub mothers: Vec<String>,
    /// Syncs queued by this start (0 when the sample data was already there).
    pub syncs_queued: usize,
}

impl SampleData {
    /// The line `demo` prints about it.
    pub fn summary(&self) -> String {
        let queued = match self.syncs_queued {
            0 => "already imported on an earlier start".to_string(),
            n => format!("{n} sync job(s) queued"),
        };
        format!(
            "Sample data: pool group `{}` (auto-invite on) with {} sim mother(s): {}; {queued}.",
            self.group,
            self.mothers.len(),
            self.mothers.join(", "),
        )
    }
}

fn api(e: crate::service::Error) -> anyhow::Error {
    anyhow::anyhow!("{} ({})", e.message, e.code)
}

/// The credential of a sample organisation: not a secret, the simulator is local.
fn sample_credential(org: &str) -> Credential {
    Credential::new(format!("demo-cookie-{org}"))
}

fn sample_org(name: &str, members: &[&str]) -> SimOrg {
    let mut org = SimOrg::new(
        name,
        &format!("owner@{name}.example.org"),
        SAMPLE_TEAM_SEATS,
    );
    for m in members {
        org.teams[0].members.push(SimMember {
            email: format!("{m}@{name}.example.org"),
            name: (*m).to_string(),
            status: MemberStatus::Active,
        });
    }
    org
}

/// The demo group, created with auto-invite on and a domain for its generated addresses.
async fn demo_group(app: &App) -> anyhow::Result<PoolGroup> {
    let ctx = app.pool_ctx();
    let existing = group_store::list_all(&app.pool)
        .await?
        .into_iter()
        .find(|g| g.name == DEMO_GROUP);
    let group = match existing {
        Some(g) => g,
        None => group_service::create(
            ctx,
            DEMO_GROUP,
            Some("Sample organisations of the simulated provider"),
            Some(true),
        )
        .await
        .map_err(api)?,
    };
    if group.settings.email_domain.is_some() {
        return Ok(group);
    }
    // Also finishes a group whose first start stopped between the two steps.
    let patch = SettingsPatch {
        email_domain: Some(DEMO_EMAIL_DOMAIN.into()),
        ..SettingsPatch::default()
    };
    group_service::update_settings(ctx, group.id, patch)
        .await
        .map_err(api)
}

/// Makes sure the sample organisations exist in the simulator and are imported into the demo
/// group; queues a sync of each mother this start imported.
pub async fn ensure_sample_data(app: &App) -> anyhow::Result<SampleData> {
    let group = demo_group(app).await.context("demo pool group")?;
    let mut out = SampleData {
        group: group.name.clone(),
        mothers: Vec::new(),
        syncs_queued: 0,
    };
    for (name, members) in SAMPLE_ORGS {
        let credential = sample_credential(name);
        if app.providers.sim.org(&credential)?.is_none() {
            app.providers
                .sim
                .put_org(&credential, sample_org(name, members))?;
        }
        out.mothers.push(name.to_string());
        if mother_store::id_by_name(&app.pool, name).await?.is_some() {
            continue;
        }
        let req = ImportCookieRequest {
            cookie: credential,
            mode: "pool".into(),
            pool_group_id: Some(group.id),
            provider: Some("sim".into()),
            provider_config: None,
        };
        import_cookie::import_cookie(app, req, "demo")
            .await
            .map_err(api)
            .with_context(|| format!("importing sample organisation {name}"))?;
        out.syncs_queued += 1;
    }
    Ok(out)
}
