//! Admin authentication: password hashing (argon2id), random tokens, session and API-token checks,
//! and login throttling. Only hashes of passwords, session cookies and API tokens reach a database.

use std::fmt;
use std::sync::{Arc, Mutex};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::db::UsersDb;
use crate::domain::login_throttle::{Throttle, ThrottlePolicy, address_key};
use crate::domain::lower_hex;
pub use crate::domain::roles::Role;
use crate::store::{self, StoreError, StoreResult};

/// What an API token may do.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Acts with the role `admin`.
    Admin,
    /// Acts with the role `operator`.
    Operator,
    /// Acts with the role `viewer`.
    Viewer,
    /// The lease and mission APIs only.
    Worker,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Operator => "operator",
            Scope::Viewer => "viewer",
            Scope::Worker => "worker",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Scope::Admin),
            "operator" => Some(Scope::Operator),
            "viewer" => Some(Scope::Viewer),
            "worker" => Some(Scope::Worker),
            _ => None,
        }
    }

    /// The role a token of this scope acts with on admin routes; a worker token has none.
    pub fn role(self) -> Option<Role> {
        match self {
            Scope::Admin => Some(Role::Admin),
            Scope::Operator => Some(Role::Operator),
            Scope::Viewer => Some(Role::Viewer),
            Scope::Worker => None,
        }
    }
}

/// Who made a request.
#[derive(Clone)]
pub enum Principal {
    /// A browser session of an admin user.
    Session {
        user_id: i64,
        username: String,
        role: Role,
        csrf_token: String,
    },
    /// A bearer token.
    Token { id: i64, name: String, scope: Scope },
}

impl Principal {
    /// The name shown in logs and records: the username, or `token:<name>`.
    pub fn display_name(&self) -> String {
        match self {
            Principal::Session { username, .. } => username.clone(),
            Principal::Token { name, .. } => format!("token:{name}"),
        }
    }

    /// The role this principal acts with on admin routes and pages: a session's user's role, or
    /// the role of a token's scope; `None` for a worker token.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Session { role, .. } => Some(*role),
            Principal::Token { scope, .. } => scope.role(),
        }
    }

    /// Whether this principal may take an action that needs `needed`.
    pub fn allows(&self, needed: Role) -> bool {
        self.role().is_some_and(|r| r.allows(needed))
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Session { username, role, .. } => f
                .debug_struct("Session")
                .field("username", username)
                .field("role", role)
                .finish_non_exhaustive(),
            Principal::Token { name, scope, .. } => f
                .debug_struct("Token")
                .field("name", name)
                .field("scope", scope)
                .finish_non_exhaustive(),
        }
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    lower_hex(&bytes)
}

/// A readable random password of 20 characters from an alphabet without look-alikes.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    // 256 % 55 leaves a bias under 2%; acceptable for a one-time password that is changed anyway.
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// SHA-256 of a token, as stored in the database.
pub fn token_hash(token: &str) -> String {
    lower_hex(&Sha256::digest(token.as_bytes()))
}

/// A new API token: `pk_` and 64 hex digits.
pub fn new_api_token() -> String {
    format!("pk_{}", random_hex(32))
}

/// Hashes a password with argon2id (off the async threads: it is slow on purpose).
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await?
}

/// Checks a password against a stored hash; a malformed hash counts as a mismatch.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// Password rules for admin users.
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 8 {
        return Err("password must be at least 8 characters".into());
    }
    if password.len() > 1024 {
        return Err("password must be at most 1024 bytes".into());
    }
    Ok(())
}

/// Username rules for admin users.
pub fn check_username(username: &str) -> Result<(), String> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err("username must be 1-64 characters of letters, digits and . _ - @".into())
    }
}

/// Password checks (argon2, ~19 MiB and tens of milliseconds each) that may run at the same time in
/// this process; more wait in line for at most [`PASSWORD_CHECK_WAIT`].
pub const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 2;
/// How long a login waits for a password-check slot before it is answered 503 with Retry-After.
pub const PASSWORD_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Text from a request made safe for one log line: control characters (a newline would start a
/// fake line) escaped, at most 64 characters kept.
pub fn loggable(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// Token name rules: 1-100 characters, no control characters (names reach logs and terminals),
/// and not all digits (so a name is never mistaken for an id).
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 100 {
        return Err("name must be 1-100 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err("name must not be all digits (it would read as a token id)".into());
    }
    Ok(())
}

/// Failed-login bookkeeping per username and per client address, shared by the process, and the
/// cap on concurrent password checks.
pub struct LoginThrottle {
    /// Both maps behind one lock, so that checking and reserving both keys is one step.
    keys: Mutex<ThrottleKeys>,
    password_checks: Arc<tokio::sync::Semaphore>,
}

struct ThrottleKeys {
    by_user: Throttle,
    by_addr: Throttle,
}

/// An attempt counted in advance as a failure for its username and address.
struct Reservation {
    username: String,
    addr: String,
    at: i64,
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            keys: Mutex::new(ThrottleKeys {
                by_user: Throttle::new(policy),
                by_addr: Throttle::new(policy),
            }),
            password_checks: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PASSWORD_CHECKS)),
        }
    }

    /// Counts an attempt for `username` and the address key of `addr`, unless either is blocked:
    /// then the seconds to wait. Check and count happen under one lock, so of many parallel
    /// attempts at most the policy's limit get through.
    fn reserve(&self, username: &str, addr: &str, now: i64) -> Result<Reservation, u64> {
        let addr = address_key(addr);
        let mut keys = self.lock();
        let user = keys.by_user.blocked_for(username, now);
        let by_addr = keys.by_addr.blocked_for(&addr, now);
        if let Some(ms) = user.max(by_addr) {
            return Err((ms as u64).div_ceil(1000));
        }
        keys.by_user.record_failure(username, now);
        keys.by_user.prune(now);
        keys.by_addr.record_failure(&addr, now);
        keys.by_addr.prune(now);
        Ok(Reservation {
            username: username.to_string(),
            addr,
            at: now,
        })
    }

    /// The attempt was not a failure after all (never checked): give its count back.
    fn cancel(&self, r: &Reservation) {
        let mut keys = self.lock();
        keys.by_user.forget(&r.username, r.at);
        keys.by_addr.forget(&r.addr, r.at);
    }

    /// The password matched: the username starts afresh, the address gets this attempt back.
    fn succeeded(&self, r: &Reservation) {
        let mut keys = self.lock();
        keys.by_user.clear(&r.username);
        keys.by_addr.forget(&r.addr, r.at);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ThrottleKeys> {
        // A panic while holding the lock cannot leave the maps inconsistent; keep using them.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The outcome of a login attempt.
pub enum LoginOutcome {
    Ok {
        session_token: String,
        csrf_token: String,
        username: String,
    },
    BadCredentials,
    Throttled {
        retry_after_secs: u64,
    },
    /// Too many password checks are running; nothing was checked or counted.
    Busy {
        retry_after_secs: u64,
    },
}

/// Checks credentials and, when they match, opens a session.
pub async fn login(
    users: &UsersDb,
    throttle: &LoginThrottle,
    clock: &SharedClock,
    session_ttl_ms: i64,
    username: &str,
    password: &str,
    client_addr: &str,
) -> StoreResult<LoginOutcome> {
    let now = clock.now_ms();
    // A name no admin can have is not looked up; all such names share one throttle key, so junk
    // keys cannot fill the map.
    let is_valid_name = check_username(username).is_ok();
    let user_key = if is_valid_name { username } else { "<invalid>" };
    let reservation = match throttle.reserve(user_key, client_addr, now) {
        Ok(r) => r,
        Err(retry_after_secs) => return Ok(LoginOutcome::Throttled { retry_after_secs }),
    };
    if !is_valid_name {
        return Ok(LoginOutcome::BadCredentials);
    }
    let user = match store::admins::find_by_username(users, username).await {
        Ok(user) => user,
        Err(e) => {
            throttle.cancel(&reservation);
            return Err(e);
        }
    };
    let slot = Arc::clone(&throttle.password_checks).acquire_owned();
    let permit = match tokio::time::timeout(PASSWORD_CHECK_WAIT, slot).await {
        Ok(Ok(permit)) => permit,
        // Timed out, or the semaphore was closed (never done): the caller may come back soon.
        Ok(Err(_)) | Err(_) => {
            throttle.cancel(&reservation);
            return Ok(LoginOutcome::Busy {
                retry_after_secs: 1,
            });
        }
    };
    let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = password.to_string();
    // The permit moves into the blocking task, so a client that hangs up does not free its slot
    // while the check still runs.
    let matches = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let argon2 = Argon2::default();
        match stored_hash {
            Some(hash) => argon2
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok(),
            None => {
                // Spend the same time on unknown users so timing does not reveal which names exist.
                let _ = argon2.hash_password(password.as_bytes());
                false
            }
        }
    })
    .await
    .unwrap_or(false);
    // A disabled admin is refused like a wrong password, after the same work, so the answer does
    // not tell which names are disabled.
    let Some(user) = user.filter(|u| matches && u.disabled_at.is_none()) else {
        return Ok(LoginOutcome::BadCredentials);
    };
    throttle.succeeded(&reservation);
    let session_token = random_hex(32);
    let csrf_token = random_hex(24);
    store::sessions::create(
        users,
        &token_hash(&session_token),
        user.id,
        &csrf_token,
        now,
        now + session_ttl_ms,
    )
    .await?;
    Ok(LoginOutcome::Ok {
        session_token,
        csrf_token,
        username: user.username,
    })
}

/// Ends the session behind a cookie value (logout from the API or a page); an unknown or ended
/// session is no error.
pub async fn end_session(users: &UsersDb, session_token: &str) -> StoreResult<()> {
    store::sessions::delete(users, &token_hash(session_token)).await
}

/// The admin behind a session cookie, if it is live.
pub async fn session_principal(
    users: &UsersDb,
    clock: &SharedClock,
    session_token: &str,
) -> StoreResult<Option<Principal>> {
    let row = store::sessions::find_live(users, &token_hash(session_token), clock.now_ms()).await?;
    let Some(row) = row else { return Ok(None) };
    let Some(role) = Role::parse(&row.role) else {
        return Err(StoreError::Conflict(format!(
            "admin user {} has unknown role {}",
            row.username, row.role
        )));
    };
    Ok(Some(Principal::Session {
        user_id: row.user_id,
        username: row.username,
        role,
        csrf_token: row.csrf_token,
    }))
}

/// Bearer tokens found active in the last [`TokenCache::FRESH_MS`], so that a burst of requests
/// with one token (workers acquiring and releasing leases) reads the token once a second instead
/// of once per request. Only active tokens are kept, by hash, never the token itself. A token
/// revoked through this process's API is forgotten at once ([`TokenCache::forget_all`]); one
/// revoked elsewhere (the CLI, another process on PostgreSQL) stops working within a second.
pub struct TokenCache {
    /// Token hash -> when it was read, and whose it is.
    checked: Mutex<std::collections::HashMap<String, (i64, Principal)>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            checked: Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl TokenCache {
    /// How long a token read stays good.
    pub const FRESH_MS: i64 = 1_000;
    /// The most tokens kept; past it, stale entries go, and if none are stale, all.
    const MAX_TOKENS: usize = 1_024;

    /// A token read at `at` is still good at `now`.
    fn fresh(at: i64, now: i64) -> bool {
        now >= at && now - at < Self::FRESH_MS
    }

    fn get(&self, hash: &str, now: i64) -> Option<Principal> {
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked
            .get(hash)
            .filter(|(at, _)| Self::fresh(*at, now))
            .map(|(_, principal)| principal.clone())
    }

    fn put(&self, hash: String, principal: Principal, now: i64) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.len() >= Self::MAX_TOKENS {
            checked.retain(|_, (at, _)| Self::fresh(*at, now));
            if checked.len() >= Self::MAX_TOKENS {
                checked.clear();
            }
        }
        checked.insert(hash, (now, principal));
    }

    /// Forgets every token read: the next request with each reads it again (after a revoke).
    pub fn forget_all(&self) {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The token behind a bearer value, if it is active (read at most once a
/// [`TokenCache::FRESH_MS`] per token).
pub async fn token_principal(
    users: &UsersDb,
    clock: &SharedClock,
    cache: &TokenCache,
    bearer: &str,
) -> StoreResult<Option<Principal>> {
    let hash = token_hash(bearer);
    let now = clock.now_ms();
    if let Some(principal) = cache.get(&hash, now) {
        return Ok(Some(principal));
    }
    let Some(token) = store::tokens::find_active(users, &hash).await? else {
        return Ok(None);
    };
    let Some(scope) = Scope::parse(&token.scope) else {
        return Err(StoreError::Conflict(format!(
            "token {} has unknown scope {}",
            token.id, token.scope
        )));
    };
    // Use is recorded at most once a minute; the row just read says whether it is due, so most
    // requests never wait for the writer.
    if token
        .last_used_at
        .is_none_or(|at| at < now - store::tokens::TOUCH_INTERVAL_MS)
    {
        store::tokens::touch(users, token.id, now).await?;
    }
    let principal = Principal::Token {
        id: token.id,
        name: token.name,
        scope,
    };
    cache.put(hash, principal.clone(), now);
    Ok(Some(principal))
}

/// Creates an API token and returns it with the plain value, which is shown once and never stored.
pub async fn create_api_token(
    users: &UsersDb,
    clock: &SharedClock,
    name: &str,
    scope: Scope,
) -> StoreResult<(store::tokens::ApiToken, String)> {
    let token = new_api_token();
    let row = store::tokens::create(
        users,
        name,
        scope.as_str(),
        &token_hash(&token),
        clock.now_ms(),
    )
    .await?;
    Ok((row, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_hash_round_trip() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), hash.clone()).await);
        assert!(!verify_password("wrong horse".into(), hash).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_api_token();
        assert!(a.starts_with("pk_") && a.len() == 67);
        assert_ne!(a, new_api_token());
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), a);
        assert_eq!(random_password().len(), 20);
    }

    #[test]
    fn username_and_password_rules() {
        assert!(check_username("admin").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("long enough").is_ok());
    }

    #[test]
    fn loggable_text_is_one_short_line() {
        assert_eq!(loggable("admin"), "admin");
        assert_eq!(
            loggable("x\n2026-01-01 INFO admin logged in"),
            "x\\n2026-01-01 INFO admin logged in"
        );
        assert!(!loggable("a\r\nb\u{1b}[31m").contains(['\n', '\r', '\u{1b}']));
        let long = loggable(&"y".repeat(1000));
        assert_eq!(long, format!("{}...", "y".repeat(64)));
    }

    #[test]
    fn token_name_rules() {
        assert!(check_token_name("ci bot").is_ok());
        assert!(check_token_name("deploy-2").is_ok());
        for bad in ["", "3", "0042", "a\nb", "tab\there", &"x".repeat(101)] {
            assert!(check_token_name(bad).is_err(), "{bad:?}");
        }
    }
}
