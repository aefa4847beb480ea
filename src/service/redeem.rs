//! Redeeming a code: an end user trades a single-use code for an invitation to a team.
//!
//! A redeem writes both databases, so it is a sequence of atomic steps, each undone when a later
//! one fails:
//! 1. reserve the code (`unused -> reserved`, users database);
//! 2. hold a free seat (`free -> held` until now + `redeem.hold_seconds`, pool database) in the
//!    fullest active mother with room, so seats are packed;
//! 3. record the invite (`pending`) and ask the provider to invite the address;
//! 4. on success the invite is `sent`, the code `used` and the seat `used`, in that order. A
//!    rejected credential marks the mother `invalid`, a rate limit or a provider outage moves on to
//!    the next mother; either way the hold is released first. When no mother is left the code goes
//!    back to `unused`.
//!
//! A crash between steps loses nothing: maintenance frees seats held past their `held_until`, and
//! settles codes reserved past `redeem.reservation_timeout_seconds` (`used` when their invite went
//! out, `unused` otherwise).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Error, ErrorKind, Result};
use crate::app::App;
use crate::domain::login_throttle::{self, Throttle};
use crate::domain::{codes, email};
use crate::providers::ProviderError;
use crate::store::invites::{self, NewInvite};
use crate::store::redeem_codes::{self, Reserved};
use crate::store::seats::{self, RedeemHold};
use crate::store::{StoreError, mothers};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    pub code: String,
    pub email: String,
}

impl std::fmt::Debug for RedeemRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedeemRequest")
            .field("code", &"<redacted>")
            .field("email", &self.email)
            .finish()
    }
}

/// What a redeem did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Redeemed {
    /// Always `invited`: an invitation went to the address.
    pub status: &'static str,
    /// The team the address was invited to.
    pub team: String,
}

/// One answer for every code that cannot be redeemed (unknown, used, expired, disabled, or
/// malformed), so codes cannot be probed.
fn invalid_code() -> Error {
    Error::invalid("invalid_code", "this code cannot be redeemed")
}

fn no_seat() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "no_seat_available",
        "no seat is free right now; the code was not used, try again later",
    )
}

fn count(result: &'static str) {
    metrics::counter!("redeem_attempts_total", "result" => result).increment(1);
}

/// Counts an attempt from `client` (its address key) against the limit `throttle` keeps.
fn throttle(throttle: &Mutex<Throttle>, client: &str, now: i64) -> Result<()> {
    let key = login_throttle::address_key(client);
    let mut throttle = throttle
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(wait_ms) = throttle.blocked_for(&key, now) {
        count("rate_limited");
        return Err(Error::rate_limited(
            "too many tries from this address; try again later",
            u64::try_from((wait_ms + 999) / 1000).unwrap_or(1),
        ));
    }
    throttle.record_failure(&key, now);
    Ok(())
}

/// Redeems `req.code` for `req.email` on behalf of the client at address `client`.
pub async fn redeem(app: &App, client: &str, req: RedeemRequest) -> Result<Redeemed> {
    let now = app.clock.now_ms();
    throttle(&app.redeem_throttle, client, now)?;
    let (email, hash) = check(&req)?;
    // A good code when no seat is free anywhere is the usual answer once a pool is full: it comes
    // from two reads, with nothing reserved, held or undone. (Seats freed a moment later are
    // found by the next try, as they would be after a reservation.)
    if let Some(code) = redeem_codes::find(&app.users, &hash).await?
        && code.status == "unused"
        && code.expires_at.is_none_or(|at| at > now)
        && !seats::has_redeemable_seat(&app.pool, code.pool_group_id).await?
    {
        count("no_seat");
        return Err(no_seat());
    }
    let until = now + secs_ms(app.config.redeem.reservation_timeout_seconds);
    let Some(code) = app
        .redeem_desk
        .reserve(&app.users, &hash, &email, until, now)
        .await?
    else {
        return again(app, &hash, &email).await;
    };
    match place(app, &code, &email).await {
        Ok(done) => {
            count("invited");
            Ok(done)
        }
        Err(e) => {
            redeem_codes::unreserve(&app.users, code.id, app.clock.now_ms()).await?;
            count(if e.code == "no_seat_available" {
                "no_seat"
            } else {
                "failed"
            });
            Err(e)
        }
    }
}

/// The address (lower case) and the code's hash of a request, or the error naming what is wrong.
fn check(req: &RedeemRequest) -> Result<(String, String)> {
    let email = req.email.trim().to_ascii_lowercase();
    if !email::is_valid_address(&email) {
        count("invalid_email");
        return Err(Error::invalid(
            "invalid_email",
            "email must be an address such as name@example.com",
        ));
    }
    if !codes::is_well_formed(&req.code) {
        count("invalid_code");
        return Err(invalid_code());
    }
    Ok((email, crate::auth::token_hash(&req.code)))
}

/// A code that could not be reserved: the same address redeeming a code it already used gets the
/// same answer again; anything else is an invalid code.
async fn again(app: &App, hash: &str, email: &str) -> Result<Redeemed> {
    let Some(code) = redeem_codes::find(&app.users, hash).await? else {
        count("invalid_code");
        return Err(invalid_code());
    };
    match (code.status.as_str(), code.used_by_email.as_deref()) {
        ("used", Some(used_by)) if used_by == email => {
            let team = match (code.mother_id, code.team_id) {
                (Some(mother_id), Some(team_id)) => team_name(app, mother_id, team_id).await?,
                _ => String::new(),
            };
            count("repeated");
            Ok(Redeemed {
                status: "invited",
                team,
            })
        }
        _ => {
            count("invalid_code");
            Err(invalid_code())
        }
    }
}

async fn team_name(app: &App, mother_id: i64, team_id: i64) -> Result<String> {
    match mothers::get_detail(&app.pool, mother_id).await {
        Ok(detail) => Ok(detail
            .teams
            .into_iter()
            .find(|t| t.id == team_id)
            .map(|t| t.name)
            .unwrap_or_default()),
        // The mother was deleted since; the redeem itself still stands.
        Err(StoreError::NotFound) => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX / 1000) * 1000
}

/// Steps 2 to 4 for a reserved code: tries mothers, fullest first, until one invites the address.
async fn place(app: &App, code: &Reserved, email: &str) -> Result<Redeemed> {
    let mut tried: Vec<i64> = Vec::new();
    loop {
        let now = app.clock.now_ms();
        let held_until = now + secs_ms(app.config.redeem.hold_seconds);
        // The first try goes with the other redeems of the moment (batched on SQLite); a try
        // after a provider refused a mother skips those tried.
        let hold = if tried.is_empty() {
            app.seat_desk
                .hold(&app.pool, code.pool_group_id, email, held_until, now)
                .await?
        } else {
            seats::hold_for_redeem(
                &app.pool,
                code.pool_group_id,
                &tried,
                email,
                held_until,
                now,
            )
            .await?
        };
        let Some(hold) = hold else {
            return Err(no_seat());
        };
        let mother_id = hold.seat.mother_id;
        tried.push(mother_id);
        let invite_id = app
            .redeem_desk
            .record_invite(
                &app.users,
                &NewInvite {
                    email,
                    code_id: Some(code.id),
                    mother_id,
                    team_id: hold.team_id,
                    seat_id: Some(hold.seat.id),
                },
                now,
            )
            .await?;
        match invite_with(app, &hold.reach, mother_id, &hold.provider_team_id, email).await {
            Ok(()) => return finish(app, code, &hold, invite_id, email).await,
            Err(failure) => {
                let now = app.clock.now_ms();
                release_hold(app, hold.seat.id, now).await?;
                invites::finish(&app.users, invite_id, "failed", Some(&failure.reason), now)
                    .await?;
                match failure.next {
                    Next::InvalidMother => {
                        tracing::warn!(
                            mother_id,
                            "redeem: the provider rejected the mother's credential; marking her invalid"
                        );
                        app.webhooks
                            .mark_mother_invalid(&app.pool, mother_id, now)
                            .await?;
                    }
                    Next::OtherMother => {
                        tracing::warn!(mother_id, reason = %failure.reason, "redeem: provider unavailable; trying the next mother");
                    }
                    Next::Stop => {
                        tracing::warn!(mother_id, reason = %failure.reason, "redeem: the invite failed");
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            "invite_failed",
                            "the invitation could not be sent; the code was not used, try again later",
                        ));
                    }
                }
            }
        }
    }
}

/// Step 4: the invite went out: the invite `sent` and the code `used` (one transaction), then the
/// seat `used`.
async fn finish(
    app: &App,
    code: &Reserved,
    hold: &RedeemHold,
    invite_id: i64,
    email: &str,
) -> Result<Redeemed> {
    let now = app.clock.now_ms();
    let mother_id = hold.seat.mother_id;
    app.redeem_desk
        .mark_used(
            &app.users,
            code.id,
            invite_id,
            email,
            mother_id,
            hold.team_id,
            now,
        )
        .await?;
    match app.seat_desk.confirm(&app.pool, hold.seat.id, now).await {
        Ok(_) => {}
        // The hold ran out while the provider answered and maintenance freed the seat; the member
        // is invited all the same, and the next sync of the mother counts her seat.
        Err(StoreError::Conflict(_)) => {
            tracing::warn!(
                mother_id,
                seat_id = hold.seat.id,
                "redeem: the seat hold expired before the invite was confirmed"
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Redeemed {
        status: "invited",
        team: hold.team_name.clone(),
    })
}

async fn release_hold(app: &App, seat_id: i64, now: i64) -> Result<()> {
    match seats::release(&app.pool, seat_id, now).await {
        // Already freed by maintenance.
        Ok(_) | Err(StoreError::Conflict(_)) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What to do after a provider refused an invite.
enum Next {
    InvalidMother,
    OtherMother,
    Stop,
}

struct Failure {
    next: Next,
    /// For the invite row and the log; never shown to the end user.
    reason: String,
}

/// Asks the provider to invite `email` into the team `provider_team_id` of mother `mother_id`,
/// reading how to reach her first.
async fn invite_at_provider(
    app: &App,
    mother_id: i64,
    provider_team_id: &str,
    email: &str,
) -> std::result::Result<(), Failure> {
    let reach = mothers::reach(&app.pool, mother_id)
        .await
        .map_err(|e| Failure {
            next: Next::Stop,
            reason: format!("mother {mother_id}: {e}"),
        })?;
    invite_with(app, &reach, mother_id, provider_team_id, email).await
}

/// Asks the provider, reached through `reach`, to invite `email` into the team `provider_team_id`
/// of mother `mother_id`.
async fn invite_with(
    app: &App,
    reach: &mothers::Reach,
    mother_id: i64,
    provider_team_id: &str,
    email: &str,
) -> std::result::Result<(), Failure> {
    let stop = |reason: String| Failure {
        next: Next::Stop,
        reason,
    };
    let credential = app.keyring.open(&reach.credential_sealed).map_err(|e| {
        stop(format!(
            "the credential of mother {mother_id} cannot be opened: {e}"
        ))
    })?;
    let config: serde_json::Value = serde_json::from_str(&reach.provider_config)
        .map_err(|e| stop(format!("mother {mother_id}: provider configuration: {e}")))?;
    let provider = app
        .providers
        .for_mother(&reach.provider, &config)
        .map_err(|e| stop(e.to_string()))?;
    let name = email.split('@').next().unwrap_or(email);
    match provider
        .invite(&credential, provider_team_id, email, name)
        .await
    {
        Ok(_) => Ok(()),
        Err(e @ ProviderError::Unauthorized(_)) => Err(Failure {
            next: Next::InvalidMother,
            reason: e.to_string(),
        }),
        // A full team at the provider (our seat count was off) or an outage: another mother may
        // take the address.
        Err(
            e @ (ProviderError::RateLimited { .. }
            | ProviderError::Transient(_)
            | ProviderError::Conflict(_)),
        ) => Err(Failure {
            next: Next::OtherMother,
            reason: e.to_string(),
        }),
        Err(e) => Err(stop(e.to_string())),
    }
}

/// Maintenance: settles reservations left by redeems that never finished (see the module notes).
pub async fn settle_stale(app: &App) -> Result<(u64, u64)> {
    let now = app.clock.now_ms();
    for throttle in [&app.redeem_throttle, &app.resend_throttle] {
        throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .prune(now);
    }
    let settled = redeem_codes::settle_stale_reservations(&app.users, now).await?;
    redeem_codes::expire(&app.users, now).await?;
    Ok(settled)
}

/// What a resend did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Resent {
    /// Always `resent`.
    pub status: &'static str,
}

/// Sends the invitation of a redeemed code again, to the address that redeemed it. Any other code
/// or address gets the same 400 `invalid_code` as a redeem would.
pub async fn resend(app: &App, client: &str, req: RedeemRequest) -> Result<Resent> {
    let now = app.clock.now_ms();
    throttle(&app.resend_throttle, client, now)?;
    let (email, hash) = check(&req)?;
    let code = redeem_codes::find(&app.users, &hash).await?;
    let Some(code) =
        code.filter(|c| c.status == "used" && c.used_by_email.as_deref() == Some(email.as_str()))
    else {
        return Err(invalid_code());
    };
    let invite = invites::for_code(&app.users, code.id)
        .await?
        .into_iter()
        .rfind(|i| matches!(i.status.as_str(), "sent" | "accepted"));
    let Some(invite) = invite else {
        return Err(invalid_code());
    };
    let team = mothers::get_detail(&app.pool, invite.mother_id)
        .await
        .ok()
        .and_then(|d| d.teams.into_iter().find(|t| t.id == invite.team_id))
        .and_then(|t| t.provider_team_id);
    let Some(provider_team_id) = team else {
        return Err(Error::rejected(
            "team_gone",
            "the team of this invitation no longer exists; ask for a new code",
        ));
    };
    match invite_at_provider(app, invite.mother_id, &provider_team_id, &email).await {
        Ok(()) => {
            invites::record_attempt(
                &app.users,
                invite.id,
                &invite.status,
                None,
                app.clock.now_ms(),
            )
            .await?;
            Ok(Resent { status: "resent" })
        }
        Err(failure) => {
            invites::record_attempt(
                &app.users,
                invite.id,
                &invite.status,
                Some(&failure.reason),
                app.clock.now_ms(),
            )
            .await?;
            tracing::warn!(invite_id = invite.id, reason = %failure.reason, "resending an invite failed");
            Err(Error::new(
                ErrorKind::Unavailable,
                "invite_failed",
                "the invitation could not be sent again; try again later",
            ))
        }
    }
}
