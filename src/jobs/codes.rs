//! `codes_disable`: disables a large set of redeem codes (more than the 1,000 a request does at
//! once), by id in chunks or by batch. Only `unused` codes change, so a retry after a crash or a
//! handed-back attempt does nothing twice; the result says how many this attempt disabled.

use serde::{Deserialize, Serialize};

use super::{Handlers, JobArgs, JobContext, JobError, JobResult};
use crate::app::AppState;
use crate::store::redeem_codes::{self, Selection};

/// Ids disabled per statement (one `IN` list each).
const CHUNK: usize = 500;

/// The payload of a `codes_disable` job: either ids or a batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CodesDisable {
    #[serde(default)]
    pub ids: Option<Vec<i64>>,
    #[serde(default)]
    pub batch_id: Option<String>,
}

impl JobArgs for CodesDisable {
    const KIND: &'static str = "codes_disable";
}

/// Registers the `codes_disable` handler; it reaches the users database through `app`.
pub fn register(handlers: &mut Handlers, app: AppState) {
    handlers.register_job(move |ctx, args: CodesDisable| {
        let app = app.clone();
        async move { run(&app, ctx, args).await }
    });
}

async fn run(app: &crate::app::App, ctx: JobContext, args: CodesDisable) -> JobResult {
    let db_error = |e: crate::store::StoreError| JobError::transient(format!("database: {e}"));
    let mut disabled = 0u64;
    match (&args.ids, &args.batch_id) {
        (Some(ids), None) => {
            for chunk in ids.chunks(CHUNK) {
                if ctx.is_cancelled() {
                    return Err(JobError::cancelled());
                }
                let now = app.clock.now_ms();
                disabled += redeem_codes::disable(&app.users, Selection::Ids(chunk), now)
                    .await
                    .map_err(db_error)?;
            }
        }
        (None, Some(batch)) => {
            let now = app.clock.now_ms();
            disabled = redeem_codes::disable(&app.users, Selection::Batch(batch), now)
                .await
                .map_err(db_error)?;
        }
        _ => return Err(JobError::permanent("give either ids or batch_id")),
    }
    tracing::info!(job = %ctx.id, disabled, "disabled redeem codes");
    Ok(Some(serde_json::json!({ "disabled": disabled })))
}
