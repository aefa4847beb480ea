//! The SCIM 2.0 provider (RFC 7643 resources, RFC 7644 protocol). A mother's teams are SCIM
//! Groups and her members are the Users in a Group. The credential is a bearer token; the
//! mother's `provider_config` names the service and the owner:
//!
//! ```json
//! {"base_url": "https://idp.example.org/scim/v2", "owner_email": "admin@example.org"}
//! ```
//!
//! Optional keys: `organisation` (the name the mother is imported under; the base URL's host by
//! default), `timeout_seconds` (per call, default 30) and `page_size` (default 100).
//!
//! Every list follows `startIndex`/`count` pagination; every body is `application/scim+json`;
//! a 429 is retried after a short `Retry-After` and otherwise becomes
//! [`ProviderError::RateLimited`] carrying it, so the job waits that long; changes to a
//! Group send `If-Match` with the Group's ETag when the server gives one, and re-read the Group
//! when someone else changed it first (412).
//!
//! Egress: redirects are not followed (the token would travel with them), every address a host
//! name resolves to (or an address in the URL) must pass the [`EgressRule`] before a connection
//! is made, and an answer larger than [`MAX_RESPONSE_BYTES`] is refused. Errors carry only fixed
//! text and the status code; what the service or the network said goes to the log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH};
use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::{
    Account, Invited, Member, MemberStatus, Provider, ProviderError, ProviderFuture, ProviderTeam,
};
use crate::crypto::Credential;
use crate::domain::egress::EgressRule;

pub(crate) mod transport;

pub use transport::retry_after_ms;
use transport::{EgressResolver, header_text, read_capped, refused, status_error, transport_error};

const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
const DEFAULT_PAGE_SIZE: u64 = 100;
/// How often a Group change is re-read and retried after a 412 (someone else changed it).
const PRECONDITION_RETRIES: usize = 3;
/// A 429 whose `Retry-After` is at most this long is waited out inside the call, at most
/// `MAX_INLINE_WAITS` times; a longer one is handed to the job queue as the retry delay.
const MAX_INLINE_WAIT_MS: i64 = 2_000;
const MAX_INLINE_WAITS: usize = 3;
/// A list longer than this is refused rather than read into memory.
const MAX_LIST_ITEMS: usize = 100_000;
/// The largest answer read from a service.
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// A SCIM mother's `provider_config`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimConfig {
    /// The service root, without a trailing slash (`https://host/scim/v2`).
    pub base_url: Url,
    /// The mother's own user; never a child.
    pub owner_email: String,
    pub organisation: String,
    pub timeout: Duration,
    pub page_size: u64,
}

impl ScimConfig {
    /// Reads and checks a `provider_config` object. The message names the offending key.
    pub fn from_json(config: &Value) -> Result<Self, String> {
        let text = |key: &str| config.get(key).and_then(Value::as_str).map(str::trim);
        let base = text("base_url")
            .filter(|s| !s.is_empty())
            .ok_or("provider_config.base_url is required for the scim provider")?;
        let base_url = Url::parse(base.trim_end_matches('/'))
            .map_err(|e| format!("provider_config.base_url is not a URL: {e}"))?;
        let loopback = matches!(
            base_url.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]")
        );
        match base_url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(
                    "provider_config.base_url must be https (plain http only to localhost): \
                     the bearer token travels with every call"
                        .into(),
                );
            }
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err("provider_config.base_url must not carry a query or fragment".into());
        }
        let owner_email = text("owner_email")
            .filter(|s| s.contains('@'))
            .ok_or("provider_config.owner_email (the owner's address) is required for scim")?
            .to_ascii_lowercase();
        let organisation = match text("organisation") {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => base_url.host_str().unwrap_or("scim").to_string(),
        };
        let positive = |key: &str, default: u64, max: u64| match config.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().filter(|n| (1..=max).contains(n)).ok_or(format!(
                "provider_config.{key} must be a whole number from 1 to {max}"
            )),
        };
        Ok(Self {
            base_url,
            owner_email,
            organisation,
            timeout: Duration::from_secs(positive(
                "timeout_seconds",
                DEFAULT_TIMEOUT_SECONDS,
                600,
            )?),
            page_size: positive("page_size", DEFAULT_PAGE_SIZE, 1000)?,
        })
    }

    /// `base_url` + `/segment/segment...`, each segment escaped.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

/// One SCIM service, reached with a mother's config. Cheap to make: the HTTP client (and its
/// connection pool) is shared by every SCIM mother of the process.
pub struct ScimProvider {
    client: reqwest::Client,
    egress: Arc<EgressRule>,
    config: ScimConfig,
}

/// A response the caller wants: its ETag and JSON body (`Null` when empty).
struct Reply {
    etag: Option<String>,
    body: Value,
}

/// Why a call failed: a provider error, or a stale `If-Match` (412) that the caller re-reads for.
#[derive(Debug, PartialEq)]
enum Failure {
    Stale,
    Provider(ProviderError),
}

impl From<Failure> for ProviderError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Stale => ProviderError::Conflict("the resource changed meanwhile".into()),
            Failure::Provider(e) => e,
        }
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::Provider(e)
    }
}

/// A Group's members (User ids) and its version.
struct GroupMembers {
    etag: Option<String>,
    ids: Vec<String>,
}

impl ScimProvider {
    /// The client every SCIM mother shares. Per-call timeouts come from each mother's config.
    /// It follows no redirect, uses no proxy from the environment (the egress rule judges the
    /// address actually connected to) and resolves names through the egress rule.
    pub fn shared_client(egress: Arc<EgressRule>) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("poolkeeper/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(EgressResolver {
                egress,
                caller: transport::SCIM_CALLER,
            })
            .build()
            .unwrap_or_default()
    }

    pub fn new(client: reqwest::Client, egress: Arc<EgressRule>, config: ScimConfig) -> Self {
        Self {
            client,
            egress,
            config,
        }
    }

    /// A URL whose host is an address is judged here: the resolver never sees it.
    fn check_address_host(&self, url: &Url) -> Result<(), Failure> {
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self
                .egress
                .check(host, ip)
                .map_err(|kind| Failure::Provider(refused(host, kind))),
            Err(_) => Ok(()),
        }
    }

    /// One call. Non-2xx answers become typed errors; the token never appears in one.
    async fn send(
        &self,
        credential: &Credential,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, Failure> {
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .timeout(self.config.timeout)
            .bearer_auth(credential.expose())
            .header(ACCEPT, SCIM_JSON);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, SCIM_JSON)
                .body(body.to_string());
        }
        if let Some(etag) = if_match {
            request = request.header(IF_MATCH, etag);
        }
        let what = format!("{method} {}", url.path());
        self.check_address_host(&url)?;
        let mut waits = 0;
        let response = loop {
            let attempt = request.try_clone().ok_or_else(|| {
                Failure::Provider(ProviderError::Permanent(format!("{what}: unrepeatable")))
            })?;
            let response = attempt
                .send()
                .await
                .map_err(|e| transport_error(&what, &e))?;
            // A short Retry-After is waited out here; a long one becomes the job's retry delay.
            if response.status().as_u16() == 429 && waits < MAX_INLINE_WAITS {
                let wait = retry_after_ms(response.headers(), time::OffsetDateTime::now_utc());
                if wait <= MAX_INLINE_WAIT_MS {
                    waits += 1;
                    tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
                    continue;
                }
            }
            break response;
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = read_capped(response, &what).await?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            return Err(status_error(
                &what,
                status.as_u16(),
                status.canonical_reason(),
                &headers,
                &body,
            ));
        }
        Ok(Reply {
            etag: header_text(&headers, ETAG),
            body,
        })
    }

    async fn get(&self, credential: &Credential, url: Url) -> Result<Reply, ProviderError> {
        Ok(self.send(credential, Method::GET, url, None, None).await?)
    }

    /// Every resource of a list endpoint, page by page (`startIndex` is 1-based).
    async fn list_all(
        &self,
        credential: &Credential,
        resource: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Value>, ProviderError> {
        let mut out = Vec::new();
        let mut start: u64 = 1;
        loop {
            let mut url = self.config.url(&[resource]);
            url.query_pairs_mut()
                .extend_pairs(params)
                .append_pair("startIndex", &start.to_string())
                .append_pair("count", &self.config.page_size.to_string());
            let mut body = self.get(credential, url).await?.body;
            let total = body.get("totalResults").and_then(Value::as_u64);
            let page = match body.get_mut("Resources").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            let got = page.len() as u64;
            out.extend(page);
            if out.len() > MAX_LIST_ITEMS {
                return Err(ProviderError::Permanent(format!(
                    "{resource}: more than {MAX_LIST_ITEMS} resources"
                )));
            }
            start += got;
            // An empty page ends the list even when the total says otherwise.
            if got == 0 || total.is_none_or(|t| start > t) {
                return Ok(out);
            }
        }
    }

    /// The User whose `userName` is `email`, if any.
    async fn find_user(
        &self,
        credential: &Credential,
        email: &str,
    ) -> Result<Option<Value>, ProviderError> {
        let filter = format!("userName eq \"{}\"", filter_escape(email));
        let mut url = self.config.url(&["Users"]);
        url.query_pairs_mut().append_pair("filter", &filter);
        let reply = self.get(credential, url).await?;
        Ok(match reply.body.get("Resources") {
            Some(Value::Array(items)) => items
                .iter()
                .find(|u| {
                    u.get("userName")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(email))
                })
                .cloned(),
            _ => None,
        })
    }

    /// The User's id for `email`, creating the User when there is none. A 409 on create means
    /// someone made it meanwhile: read it again.
    async fn ensure_user(
        &self,
        credential: &Credential,
        email: &str,
        name: &str,
    ) -> Result<String, ProviderError> {
        if let Some(user) = self.find_user(credential, email).await? {
            return resource_id(&user);
        }
        let body = json!({
            "schemas": [USER_SCHEMA],
            "userName": email,
            "displayName": name,
            "name": {"formatted": name},
            "emails": [{"value": email, "primary": true, "type": "work"}],
            "active": true,
        });
        match self
            .send(
                credential,
                Method::POST,
                self.config.url(&["Users"]),
                Some(&body),
                None,
            )
            .await
        {
            Ok(reply) => resource_id(&reply.body),
            Err(Failure::Provider(ProviderError::Conflict(_))) => {
                match self.find_user(credential, email).await? {
                    Some(user) => resource_id(&user),
                    None => Err(ProviderError::Transient(format!(
                        "the service says user {email} exists but does not find it"
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn group_members(
        &self,
        credential: &Credential,
        team_id: &str,
    ) -> Result<GroupMembers, ProviderError> {
        let mut url = self.config.url(&["Groups", team_id]);
        url.query_pairs_mut().append_pair("attributes", "members");
        let reply = self.get(credential, url).await?;
        let ids = match reply.body.get("members") {
            Some(Value::Array(members)) => members
                .iter()
                // Nested groups are not members of a team.
                .filter(|m| m.get("type").and_then(Value::as_str) != Some("Group"))
                .filter_map(|m| m.get("value").and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Ok(GroupMembers {
            etag: version_of(&reply),
            ids,
        })
    }

    /// Applies a PATCH to a Group under `If-Match`, re-reading the version after a 412.
    async fn patch_group(
        &self,
        credential: &Credential,
        team_id: &str,
        mut etag: Option<String>,
        operations: Value,
    ) -> Result<(), ProviderError> {
        let body = json!({"schemas": [PATCH_SCHEMA], "Operations": operations});
        let url = self.config.url(&["Groups", team_id]);
        let mut attempt = 0;
        loop {
            match self
                .send(
                    credential,
                    Method::PATCH,
                    url.clone(),
                    Some(&body),
                    etag.as_deref(),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(Failure::Stale) if attempt < PRECONDITION_RETRIES => {
                    attempt += 1;
                    etag = self.group_members(credential, team_id).await?.etag;
                }
                Err(Failure::Stale) => {
                    return Err(ProviderError::Transient(format!(
                        "group {team_id} kept changing while it was being updated"
                    )));
                }
                Err(Failure::Provider(e)) => return Err(e),
            }
        }
    }
}

/// The version to send in `If-Match`: the ETag header, else `meta.version`.
fn version_of(reply: &Reply) -> Option<String> {
    reply.etag.clone().or_else(|| {
        reply
            .body
            .pointer("/meta/version")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

fn resource_id(resource: &Value) -> Result<String, ProviderError> {
    resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ProviderError::Permanent("the service returned a resource without id".into())
        })
}

/// Quotes a value for a SCIM filter string literal.
fn filter_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

fn user_member(user: &Value) -> Option<Member> {
    let primary_email = || {
        user.get("emails")?
            .as_array()?
            .iter()
            .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| user.get("emails")?.as_array()?.first())?
            .get("value")?
            .as_str()
    };
    let user_name = user.get("userName").and_then(Value::as_str);
    let email = user_name
        .filter(|n| n.contains('@'))
        .or_else(primary_email)?;
    let name = user
        .get("displayName")
        .and_then(Value::as_str)
        .or_else(|| user.pointer("/name/formatted").and_then(Value::as_str))
        .unwrap_or(email);
    // An inactive user has been provisioned but cannot sign in yet: a pending invitation.
    let status = match user.get("active").and_then(Value::as_bool) {
        Some(false) => MemberStatus::Invited,
        _ => MemberStatus::Active,
    };
    Some(Member {
        email: email.to_ascii_lowercase(),
        name: name.to_string(),
        status,
    })
}

impl Provider for ScimProvider {
    fn identify<'a>(&'a self, credential: &'a Credential) -> ProviderFuture<'a, Account> {
        Box::pin(async move {
            // A filtered read proves the token works (Users need authentication, unlike the
            // discovery endpoints) and that the owner exists.
            let owner = &self.config.owner_email;
            if self.find_user(credential, owner).await?.is_none() {
                return Err(ProviderError::Permanent(format!(
                    "the service has no user {owner} (provider_config.owner_email)"
                )));
            }
            Ok(Account {
                organisation: self.config.organisation.clone(),
                owner_email: owner.clone(),
                seats: None,
            })
        })
    }

    fn list_teams<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> ProviderFuture<'a, Vec<ProviderTeam>> {
        Box::pin(async move {
            let groups = self
                .list_all(credential, "Groups", &[("attributes", "displayName")])
                .await?;
            groups
                .iter()
                .map(|g| {
                    Ok(ProviderTeam {
                        id: resource_id(g)?,
                        name: g
                            .get("displayName")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                })
                .collect()
        })
    }

    fn rename_team<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        name: &'a str,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            let etag = self.group_members(credential, team_id).await?.etag;
            let ops = json!([{"op": "replace", "path": "displayName", "value": name}]);
            self.patch_group(credential, team_id, etag, ops).await
        })
    }

    fn list_members<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
    ) -> ProviderFuture<'a, Vec<Member>> {
        Box::pin(async move {
            let group = self.group_members(credential, team_id).await?;
            let mut members = Vec::with_capacity(group.ids.len());
            for id in &group.ids {
                let user = match self.get(credential, self.config.url(&["Users", id])).await {
                    Ok(reply) => reply.body,
                    // Deleted between the two reads: not a member any more.
                    Err(ProviderError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                if let Some(member) = user_member(&user)
                    && member.email != self.config.owner_email
                {
                    members.push(member);
                }
            }
            Ok(members)
        })
    }

    fn invite<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        email: &'a str,
        name: &'a str,
    ) -> ProviderFuture<'a, Invited> {
        Box::pin(async move {
            let user_id = self.ensure_user(credential, email, name).await?;
            let group = self.group_members(credential, team_id).await?;
            if group.ids.contains(&user_id) {
                return Ok(Invited::AlreadyPresent);
            }
            let ops = json!([{"op": "add", "path": "members", "value": [{"value": user_id}]}]);
            self.patch_group(credential, team_id, group.etag, ops)
                .await?;
            Ok(Invited::Added)
        })
    }

    fn remove_member<'a>(
        &'a self,
        credential: &'a Credential,
        team_id: &'a str,
        email: &'a str,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            let Some(user) = self.find_user(credential, email).await? else {
                return Ok(());
            };
            let user_id = resource_id(&user)?;
            let group = self.group_members(credential, team_id).await?;
            if !group.ids.contains(&user_id) {
                return Ok(());
            }
            let path = format!("members[value eq \"{}\"]", filter_escape(&user_id));
            let ops = json!([{"op": "remove", "path": path}]);
            self.patch_group(credential, team_id, group.etag, ops).await
        })
    }
}

/// Builds SCIM providers for mothers, sharing one HTTP client and the egress rule.
#[derive(Clone)]
pub struct ScimFactory {
    client: reqwest::Client,
    egress: Arc<EgressRule>,
}

impl Default for ScimFactory {
    /// The strict rule: no loopback, no internal address.
    fn default() -> Self {
        Self::new(EgressRule::default())
    }
}

impl ScimFactory {
    pub fn new(egress: EgressRule) -> Self {
        let egress = Arc::new(egress);
        Self {
            client: ScimProvider::shared_client(Arc::clone(&egress)),
            egress,
        }
    }

    pub fn provider(&self, config: &Value) -> Result<Arc<ScimProvider>, ProviderError> {
        let config = ScimConfig::from_json(config).map_err(ProviderError::Permanent)?;
        Ok(Arc::new(ScimProvider::new(
            self.client.clone(),
            Arc::clone(&self.egress),
            config,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn config(v: Value) -> Result<ScimConfig, String> {
        ScimConfig::from_json(&v)
    }

    #[test]
    fn config_needs_a_safe_base_url_and_an_owner() {
        let ok = config(json!({"base_url": "https://idp.example.org/scim/v2/", "owner_email": "Admin@Example.org"}))
            .unwrap();
        assert_eq!(ok.base_url.as_str(), "https://idp.example.org/scim/v2");
        assert_eq!(ok.owner_email, "admin@example.org");
        assert_eq!(ok.organisation, "idp.example.org");
        assert_eq!(ok.timeout, Duration::from_secs(30));
        assert_eq!(
            ok.url(&["Groups", "a/b"]).as_str(),
            "https://idp.example.org/scim/v2/Groups/a%2Fb"
        );

        let local = config(json!({"base_url": "http://127.0.0.1:8080/v2", "owner_email": "a@b.c", "organisation": "Acme", "page_size": 2}))
            .unwrap();
        assert_eq!(local.organisation, "Acme");
        assert_eq!(local.page_size, 2);

        for (bad, names) in [
            (json!({"owner_email": "a@b.c"}), "base_url"),
            (
                json!({"base_url": "http://idp.example.org/v2", "owner_email": "a@b.c"}),
                "https",
            ),
            (
                json!({"base_url": "not a url", "owner_email": "a@b.c"}),
                "base_url",
            ),
            (json!({"base_url": "https://x.org/v2"}), "owner_email"),
            (
                json!({"base_url": "https://x.org/v2", "owner_email": "a@b.c", "timeout_seconds": 0}),
                "timeout_seconds",
            ),
            (
                json!({"base_url": "https://x.org/v2", "owner_email": "a@b.c", "page_size": "9"}),
                "page_size",
            ),
        ] {
            let e = config(bad).unwrap_err();
            assert!(e.contains(names), "{e} should name {names}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-23 12:00:00 UTC);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after_ms(&h, now), 1000);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after_ms(&h, now), 7000);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Mon, 23 Nov 2026 12:00:05 GMT"),
        );
        assert_eq!(retry_after_ms(&h, now), 5000);
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after_ms(&h, now), 1000);
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let h = HeaderMap::new();
        let body = json!({"detail": "token expired"});
        let e = ProviderError::from(status_error(
            "GET /v2/Users",
            401,
            Some("Unauthorized"),
            &h,
            &body,
        ));
        // The service's own words are logged, not passed on.
        assert_eq!(
            e,
            ProviderError::Unauthorized("GET /v2/Users: 401 Unauthorized".into())
        );
        let map = |code: u16| ProviderError::from(status_error("x", code, None, &h, &Value::Null));
        assert!(matches!(
            map(429),
            ProviderError::RateLimited {
                retry_after_ms: 1000
            }
        ));
        assert!(matches!(map(502), ProviderError::Transient(_)));
        assert!(matches!(map(409), ProviderError::Conflict(_)));
        assert!(matches!(map(404), ProviderError::NotFound(_)));
        assert_eq!(status_error("x", 412, None, &h, &body), Failure::Stale);
        assert!(matches!(map(400), ProviderError::Permanent(_)));
    }

    #[test]
    fn members_are_read_from_users() {
        let m = user_member(&json!({"id": "1", "userName": "Kid@Example.org", "displayName": "Kid", "active": false}))
            .unwrap();
        assert_eq!(
            (m.email.as_str(), m.name.as_str(), m.status),
            ("kid@example.org", "Kid", MemberStatus::Invited)
        );
        let m = user_member(&json!({"id": "2", "userName": "kid2", "emails": [{"value": "x@y.z"}, {"value": "k2@example.org", "primary": true}], "name": {"formatted": "K Two"}}))
            .unwrap();
        assert_eq!(
            (m.email.as_str(), m.name.as_str(), m.status),
            ("k2@example.org", "K Two", MemberStatus::Active)
        );
        assert!(user_member(&json!({"id": "3", "userName": "no-address"})).is_none());
    }
}
