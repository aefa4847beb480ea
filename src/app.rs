//! The shared state of a running poolkeeper: configuration, the two databases, the clock, the
//! keyring that seals credentials, the providers.

use std::sync::Arc;

use crate::auth::LoginThrottle;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::db::{PoolDb, UsersDb};
use crate::domain::login_throttle::{Throttle, ThrottlePolicy};
use crate::providers::Providers;

pub struct App {
    pub config: Config,
    pub pool: PoolDb,
    pub users: UsersDb,
    pub clock: SharedClock,
    pub keyring: Keyring,
    pub login_throttle: LoginThrottle,
    /// Bearer tokens read in the last second.
    pub token_cache: crate::auth::TokenCache,
    /// Redeem attempts per client address (`redeem.per_hour`).
    pub redeem_throttle: std::sync::Mutex<Throttle>,
    /// Invite resends per client address (`redeem.resend_per_hour`).
    pub resend_throttle: std::sync::Mutex<Throttle>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The providers mothers are synced with (the simulator keeps its state in `data_dir`).
    pub providers: Providers,
    /// `public_url` as an origin, when configured.
    pub public_origin: Option<crate::domain::origin::Origin>,
    /// Group commit for the worker API's acquires and releases.
    pub lease_desk: crate::store::lease_desk::Desk,
    /// Group commit for the users-database steps of redeems (SQLite).
    pub redeem_desk: crate::store::redeem_steps::RedeemDesk,
    /// Group commit for the seat holds and confirmations of redeems (SQLite).
    pub seat_desk: crate::store::seat_desk::SeatDesk,
    /// The `[[webhooks]]` endpoints events go to.
    pub webhooks: Arc<crate::jobs::webhooks::Webhooks>,
}

pub type AppState = Arc<App>;

impl App {
    pub fn new(
        config: Config,
        pool: PoolDb,
        users: UsersDb,
        clock: SharedClock,
        keyring: Keyring,
    ) -> AppState {
        // A loaded configuration has been checked; one built in code with a bad entry gets the
        // strict rule.
        let scim_egress = config.scim_egress().unwrap_or_default();
        let providers = Providers::new(&config.data_dir, scim_egress);
        let per_hour = |n: u32| {
            std::sync::Mutex::new(Throttle::new(ThrottlePolicy {
                max_failures: n as usize,
                window_ms: 3_600_000,
            }))
        };
        let redeem_throttle = per_hour(config.redeem.per_hour);
        let resend_throttle = per_hour(config.redeem.resend_per_hour);
        let public_origin = config.public_origin().ok().flatten();
        let lease_desk =
            crate::store::lease_desk::Desk::for_database(&pool, config.database_max_connections);
        let webhooks = Arc::new(crate::jobs::webhooks::Webhooks::from_config(
            &config,
            users.clone(),
            clock.clone(),
        ));
        Arc::new(Self {
            webhooks,
            public_origin,
            providers,
            config,
            pool,
            users,
            clock,
            keyring,
            login_throttle: LoginThrottle::new(ThrottlePolicy::default()),
            token_cache: Default::default(),
            redeem_throttle,
            resend_throttle,
            metrics: crate::metrics::handle(),
            lease_desk,
            redeem_desk: Default::default(),
            seat_desk: Default::default(),
        })
    }

    pub fn session_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.session_ttl_hours)
            .unwrap_or(24 * 365)
            .saturating_mul(3_600_000)
    }
}
