//! Webhooks: raising an event enqueues one `webhook_deliver` job per endpoint that subscribed to
//! it, and the handler POSTs the signed JSON body. The queue gives retries with backoff; a
//! delivery that fails for good is never itself an event (no loops).
//!
//! Outgoing calls follow the SCIM client's egress rules: no redirects, no proxy from the
//! environment, every address checked against `webhooks_allow_hosts` (loopback in development)
//! before connecting, timeouts. The signing secret lives only in the configuration: job payloads
//! name the endpoint by URL, never carry the secret, and nothing here logs it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Handlers, JobArgs, JobContext, JobError, JobResult};
use crate::clock::{SharedClock, rfc3339};
use crate::config::{Config, Secret};
use crate::db::{PoolDb, UsersDb};
use crate::domain::egress::EgressRule;
use crate::domain::webhooks::{self as rules, WebhookEvent};
use crate::providers::scim::transport::{
    EgressCaller, EgressResolver, egress_refusal, refused_text,
};
use crate::store::{self, StoreResult};

/// The job type of a delivery.
pub const WEBHOOK_DELIVER: &str = "webhook_deliver";
/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

const WEBHOOK_CALLER: EgressCaller = EgressCaller {
    peer: "the webhook endpoint",
    allow_key: "webhooks_allow_hosts",
};

/// The payload of a `webhook_deliver` job: one event for one endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookDeliver {
    /// The endpoint's URL as configured (its secret is looked up at delivery time).
    pub endpoint: String,
    pub event: String,
    /// The event's id (the same for every endpoint it goes to).
    pub event_id: String,
    /// When the event happened, ms since the epoch.
    pub occurred_at: i64,
    /// What the event is about: names and ids.
    pub data: Value,
    /// What makes this occurrence unique (a mother and the time she was marked invalid, a
    /// group and the time it crossed below the threshold): one live delivery per endpoint.
    pub occurrence: String,
}

impl JobArgs for WebhookDeliver {
    const KIND: &'static str = WEBHOOK_DELIVER;

    fn dedup_key(&self) -> Option<String> {
        Some(format!("webhook:{}:{}", self.occurrence, self.endpoint))
    }
}

/// One configured endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub url: reqwest::Url,
    pub events: Vec<WebhookEvent>,
    secret: Secret,
}

/// How the last delivery attempt to an endpoint went (this process only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastDelivery {
    pub at_ms: i64,
    pub event: String,
    pub ok: bool,
    /// "200", "500", "timed out", "refused: ...".
    pub outcome: String,
}

/// The configured endpoints, the HTTP client that reaches them, and where events are enqueued.
pub struct Webhooks {
    users: UsersDb,
    clock: SharedClock,
    endpoints: Vec<Endpoint>,
    client: reqwest::Client,
    egress: Arc<EgressRule>,
    max_attempts: u32,
    /// `webhooks_free_seats_threshold`.
    pub free_seats_threshold: i64,
    last: Mutex<HashMap<String, LastDelivery>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// From a loaded (checked) configuration; entries that do not pass the check are left out
    /// (a configuration built in code skips validation), with a warning.
    pub fn from_config(config: &Config, users: UsersDb, clock: SharedClock) -> Self {
        let endpoints = match config.webhook_endpoints() {
            Ok(list) => list
                .into_iter()
                .map(|(spec, secret)| Endpoint {
                    url: spec.url,
                    events: spec.events,
                    secret,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "webhooks are off");
                Vec::new()
            }
        };
        let egress = Arc::new(config.webhooks_egress().unwrap_or_default());
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("poolkeeper/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(EgressResolver {
                egress: Arc::clone(&egress),
                caller: WEBHOOK_CALLER,
            })
            .build()
            .unwrap_or_default();
        Self {
            users,
            clock,
            endpoints,
            client,
            egress,
            max_attempts: config.jobs.max_attempts,
            free_seats_threshold: i64::from(config.webhooks_free_seats_threshold),
            last: Mutex::new(HashMap::new()),
        }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Whether some endpoint wants `event` (callers skip the work of raising it otherwise).
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.endpoints.iter().any(|e| e.events.contains(&event))
    }

    /// The last delivery attempt to `url` made by this process.
    pub fn last_delivery(&self, url: &str) -> Option<LastDelivery> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned()
    }

    /// Raises `event`: one delivery job per subscribed endpoint. Never fails the caller (the
    /// action that raised it has happened); a failure to enqueue is logged. Returns how many
    /// deliveries were enqueued (not counting ones already live for the same occurrence).
    pub async fn emit(&self, event: WebhookEvent, occurrence: &str, data: Value) -> usize {
        let now = self.clock.now_ms();
        let event_id = uuid::Uuid::now_v7().to_string();
        let jobs: Vec<_> = self
            .endpoints
            .iter()
            .filter(|e| e.events.contains(&event))
            .map(|e| {
                WebhookDeliver {
                    endpoint: e.url.to_string(),
                    event: event.as_str().to_string(),
                    event_id: event_id.clone(),
                    occurred_at: now,
                    data: data.clone(),
                    occurrence: format!("{}:{occurrence}", event.as_str()),
                }
                .to_job()
            })
            .collect();
        if jobs.is_empty() {
            return 0;
        }
        match super::enqueue_many(&self.users, &jobs, self.max_attempts, now).await {
            Ok(out) => out.iter().filter(|(_, dedup)| !dedup).count(),
            Err(e) => {
                tracing::warn!(event = event.as_str(), error = %e, "enqueueing webhook deliveries failed");
                0
            }
        }
    }

    fn record(&self, url: &str, event: &str, ok: bool, outcome: String) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).insert(
            url.to_string(),
            LastDelivery {
                at_ms: self.clock.now_ms(),
                event: event.to_string(),
                ok,
                outcome,
            },
        );
    }

    /// One attempt at delivering `args`: 2xx is done, anything else is retried by the queue; an
    /// address the egress rule refuses fails for good.
    async fn deliver(&self, ctx: &JobContext, args: &WebhookDeliver) -> JobResult {
        let Some(endpoint) = self
            .endpoints
            .iter()
            .find(|e| e.url.as_str() == args.endpoint)
        else {
            return Err(JobError::permanent(format!(
                "webhook endpoint {} is no longer configured",
                host_of(&args.endpoint)
            )));
        };
        let url = endpoint.url.clone();
        let host = url.host_str().unwrap_or_default().to_string();
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            && let Err(kind) = self.egress.check(&host, ip)
        {
            let text = refused_text(WEBHOOK_CALLER, &host, kind);
            self.record(
                &args.endpoint,
                &args.event,
                false,
                format!("refused: {text}"),
            );
            return Err(JobError::permanent(text));
        }
        let body = rules::body(
            &args.event,
            &args.event_id,
            &rfc3339(args.occurred_at),
            &args.data,
        );
        let t = self.clock.now_ms().div_euclid(1000);
        let signature = rules::signature_header(endpoint.secret.expose().as_bytes(), t, &body);
        let sent = self
            .client
            .post(url)
            .timeout(DELIVERY_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Poolkeeper-Event", &args.event)
            .header("X-Poolkeeper-Delivery", &ctx.id)
            .header("X-Poolkeeper-Signature", signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(text) = egress_refusal(&e) {
                    self.record(
                        &args.endpoint,
                        &args.event,
                        false,
                        format!("refused: {text}"),
                    );
                    return Err(JobError::permanent(text));
                }
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "could not connect"
                };
                tracing::warn!(host = %host, event = %args.event, "webhook delivery {kind}");
                self.record(&args.endpoint, &args.event, false, kind.to_string());
                return Err(JobError::transient(format!("webhook to {host}: {kind}")));
            }
        };
        let status = response.status();
        // The answer's body is not needed; dropping the response closes it.
        drop(response);
        let ok = status.is_success();
        self.record(&args.endpoint, &args.event, ok, status.as_u16().to_string());
        if ok {
            return Ok(Some(json!({"status": status.as_u16()})));
        }
        let why = if status.is_redirection() {
            "a redirect, which is not followed"
        } else {
            status.canonical_reason().unwrap_or("error")
        };
        Err(JobError::transient(format!(
            "webhook to {host}: {} {why}",
            status.as_u16()
        )))
    }

    /// Marks a mother `invalid` (the provider rejected her credential) and, when that changed
    /// her status, raises `mother_invalid`.
    pub async fn mark_mother_invalid(
        &self,
        pool: &PoolDb,
        mother_id: i64,
        now: i64,
    ) -> StoreResult<()> {
        if !store::mothers::mark_invalid(pool, mother_id, now).await?
            || !self.wants(WebhookEvent::MotherInvalid)
        {
            return Ok(());
        }
        let mother = store::mothers::get(pool, mother_id).await?;
        self.emit(
            WebhookEvent::MotherInvalid,
            &format!("mother:{mother_id}:{now}"),
            json!({
                "mother_id": mother.id,
                "mother_name": mother.name,
                "provider": mother.provider,
                "pool_group_id": mother.pool_group_id,
                "pool_group_name": mother.pool_group_name,
            }),
        )
        .await;
        Ok(())
    }

    /// Raises `account_quarantined` for a credential account a release (`result`) just put into
    /// quarantine until `until`.
    pub async fn account_quarantined(
        &self,
        pool: &PoolDb,
        account_id: i64,
        result: &str,
        until: i64,
    ) {
        if !self.wants(WebhookEvent::AccountQuarantined) {
            return;
        }
        let account = match store::credential_accounts::get(pool, account_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(account_id, error = %e, "reading a quarantined account failed");
                return;
            }
        };
        self.emit(
            WebhookEvent::AccountQuarantined,
            &format!("account:{account_id}:{until}"),
            json!({
                "account_id": account_id,
                "login": account.login,
                "pool": account.pool,
                "result": result,
                "quarantine_until": rfc3339(until),
            }),
        )
        .await;
    }

    /// Raises `job_failed` for a job that failed for good, unless it was a delivery itself.
    pub async fn job_failed(&self, job_id: &str, job_type: &str, attempts: i64, error: &str) {
        if job_type == WEBHOOK_DELIVER || !self.wants(WebhookEvent::JobFailed) {
            return;
        }
        self.emit(
            WebhookEvent::JobFailed,
            &format!("job:{job_id}"),
            json!({
                "job_id": job_id,
                "job_type": job_type,
                "attempts": attempts,
                "error": error,
            }),
        )
        .await;
    }
}

/// The host of a URL, for messages (the path may carry a token some receivers put there).
pub fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "(unknown host)".to_string())
}

/// Registers the `webhook_deliver` handler.
pub fn register(handlers: &mut Handlers, webhooks: Arc<Webhooks>) {
    handlers.register_job(move |ctx, args: WebhookDeliver| {
        let webhooks = webhooks.clone();
        async move { webhooks.deliver(&ctx, &args).await }
    });
}
