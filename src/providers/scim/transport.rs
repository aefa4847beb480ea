//! The SCIM client's transport rules: what a call may reach (the egress rule, checked again on
//! every resolved address), how much of an answer it reads, and the fixed text an HTTP failure
//! becomes. The remote's own words go to the log, never to a caller.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::{Failure, MAX_RESPONSE_BYTES};
use crate::domain::egress::{EgressRule, Internal};
use crate::providers::ProviderError;

pub(super) fn header_text(
    headers: &HeaderMap,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Retry-After` in milliseconds: delta-seconds or an HTTP date; one second when absent or odd.
pub fn retry_after_ms(headers: &HeaderMap, now: time::OffsetDateTime) -> i64 {
    let Some(value) = header_text(headers, RETRY_AFTER) else {
        return 1000;
    };
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return seconds.clamp(0, 86_400) * 1000;
    }
    match time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822) {
        Ok(at) => ((at - now).whole_milliseconds()).clamp(0, 86_400_000) as i64,
        Err(_) => 1000,
    }
}

/// The body of an answer, refused past [`MAX_RESPONSE_BYTES`] (by its Content-Length when it
/// gives one, else while it streams in).
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    what: &str,
) -> Result<Vec<u8>, Failure> {
    let too_large = || {
        tracing::warn!(%what, limit = MAX_RESPONSE_BYTES, "SCIM answer too large; refused");
        Failure::Provider(ProviderError::Permanent(format!(
            "{what}: the service's answer is larger than {} MiB",
            MAX_RESPONSE_BYTES / (1024 * 1024)
        )))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(what, &e))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A connection the egress rule refused; the text names the host and the kind of address, which
/// the operator needs to decide about the allow list (`providers.scim.allow_hosts`, or
/// `webhooks_allow_hosts` for webhook deliveries).
#[derive(Debug)]
struct EgressRefused(String);

impl std::fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EgressRefused {}

/// Who is calling out, for the refusal text: the peer's name and the key that allows hosts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EgressCaller {
    pub(crate) peer: &'static str,
    pub(crate) allow_key: &'static str,
}

pub(crate) const SCIM_CALLER: EgressCaller = EgressCaller {
    peer: "the SCIM service",
    allow_key: "providers.scim.allow_hosts",
};

pub(crate) fn refused_text(caller: EgressCaller, host: &str, kind: Internal) -> String {
    format!(
        "{}'s host {host} is {kind}, which calls may not reach unless {} lists it",
        caller.peer, caller.allow_key
    )
}

pub(super) fn refused(host: &str, kind: Internal) -> ProviderError {
    ProviderError::Permanent(refused_text(SCIM_CALLER, host, kind))
}

/// The egress refusal behind a failed request, if that is why it failed.
pub(crate) fn egress_refusal(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<EgressRefused>() {
            return Some(refusal.0.clone());
        }
        source = err.source();
    }
    None
}

/// Resolves host names for an outgoing client (SCIM, webhooks) and drops the addresses the
/// egress rule refuses, so the check holds for the address actually connected to (a name cannot
/// change in between).
pub(crate) struct EgressResolver {
    pub(crate) egress: Arc<EgressRule>,
    pub(crate) caller: EgressCaller,
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = Arc::clone(&self.egress);
        let caller = self.caller;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match egress.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(kind) => {
                        refusal.get_or_insert(kind);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(kind)) => {
                    Err(Box::new(EgressRefused(refused_text(caller, &host, kind)))
                        as Box<dyn std::error::Error + Send + Sync>)
                }
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// A failed exchange. The answer says only what kind of failure it was; the cause (which may
/// tell a closed port from a silent host, or carry the remote's words) goes to the log.
pub(super) fn transport_error(what: &str, e: &reqwest::Error) -> Failure {
    if let Some(refusal) = egress_refusal(e) {
        return Failure::Provider(ProviderError::Permanent(refusal));
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else {
        "could not reach the SCIM service"
    };
    // reqwest's error text names the URL; only method and path are logged (query strings carry
    // filters with addresses), with the cause chain.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        cause.push_str(": ");
        cause.push_str(&err.to_string());
        source = err.source();
    }
    tracing::warn!(%what, cause = %cause, "SCIM call failed");
    Failure::Provider(ProviderError::Transient(format!("{what} {kind}")))
}

/// Maps a non-2xx answer to a fixed text with the status code; the SCIM error `detail` (the
/// remote's words) is logged, not passed on.
pub(super) fn status_error(
    what: &str,
    code: u16,
    reason: Option<&str>,
    headers: &HeaderMap,
    body: &Value,
) -> Failure {
    if code == 412 {
        return Failure::Stale;
    }
    let detail = body
        .get("detail")
        .and_then(Value::as_str)
        .map(|d| d.chars().take(300).collect::<String>());
    tracing::warn!(%what, status = code, detail = ?detail, "SCIM service refused a call");
    let reason = if (300..400).contains(&code) {
        "a redirect, which is not followed"
    } else {
        reason.unwrap_or("error")
    };
    let message = format!("{what}: {code} {reason}");
    Failure::Provider(match code {
        401 | 403 => ProviderError::Unauthorized(message),
        429 => ProviderError::RateLimited {
            retry_after_ms: retry_after_ms(headers, time::OffsetDateTime::now_utc()),
        },
        404 => ProviderError::NotFound(message),
        409 => ProviderError::Conflict(message),
        408 | 500..=599 => ProviderError::Transient(message),
        _ => ProviderError::Permanent(message),
    })
}
