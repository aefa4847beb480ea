//! Webhooks: which events exist, how an endpoint entry is checked, what a delivery's body and
//! signature are, and when a pool group's free seats count as a crossing below the threshold.
//!
//! Pure: the caller passes the time in; the secret only ever goes into the MAC, never into text.

use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;

/// The events an endpoint may subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// The provider rejected a mother's credential (sync or redeem) and she was marked invalid.
    MotherInvalid,
    /// A release quarantined a credential account.
    AccountQuarantined,
    /// A pool group's free seats fell below `webhooks_free_seats_threshold`.
    PoolBelowThreshold,
    /// A job failed for good (after its last attempt, or permanently).
    JobFailed,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 4] = [
        WebhookEvent::MotherInvalid,
        WebhookEvent::AccountQuarantined,
        WebhookEvent::PoolBelowThreshold,
        WebhookEvent::JobFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::MotherInvalid => "mother_invalid",
            WebhookEvent::AccountQuarantined => "account_quarantined",
            WebhookEvent::PoolBelowThreshold => "pool_below_threshold",
            WebhookEvent::JobFailed => "job_failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == text.trim())
    }

    /// The names, for error messages and the README.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// A checked endpoint: where deliveries go and which events it wants (the secret stays in the
/// configuration type, which redacts it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub url: reqwest::Url,
    pub events: Vec<WebhookEvent>,
}

/// Checks one `[[webhooks]]` entry; the message names the problem (never the secret).
pub fn check_endpoint(url: &str, events: &[String], secret: &str) -> Result<EndpointSpec, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("url {url:?}: the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("url {url:?}: a host is required"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "url {url:?}: credentials in the URL are not allowed (deliveries are signed with the secret)"
        ));
    }
    if events.is_empty() {
        return Err(format!(
            "url {url:?}: events must name at least one of {}",
            WebhookEvent::names()
        ));
    }
    let mut parsed_events = Vec::new();
    for e in events {
        let event = WebhookEvent::parse(e).ok_or_else(|| {
            format!(
                "url {url:?}: unknown event {e:?} (known: {})",
                WebhookEvent::names()
            )
        })?;
        if !parsed_events.contains(&event) {
            parsed_events.push(event);
        }
    }
    if secret.trim().len() < 16 {
        return Err(format!(
            "url {url:?}: the secret must be at least 16 characters"
        ));
    }
    Ok(EndpointSpec {
        url: parsed,
        events: parsed_events,
    })
}

/// The body of one delivery: `{"event", "id", "occurred_at", "data"}`.
pub fn body(event: &str, id: &str, occurred_at_rfc3339: &str, data: &Value) -> Vec<u8> {
    serde_json::json!({
        "event": event,
        "id": id,
        "occurred_at": occurred_at_rfc3339,
        "data": data,
    })
    .to_string()
    .into_bytes()
}

/// Lower-case hex of HMAC-SHA256(secret, "<t>.<body>").
pub fn mac_hex(secret: &[u8], timestamp_secs: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    super::lower_hex(&mac.finalize().into_bytes())
}

/// The `X-Poolkeeper-Signature` value: `t=<unix seconds>,v1=<hex>`.
pub fn signature_header(secret: &[u8], timestamp_secs: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp_secs},v1={}",
        mac_hex(secret, timestamp_secs, body)
    )
}

/// Checks a signature header against the body, as a receiver does (`tolerance_secs` bounds how
/// old `t` may be, against replays). Constant-time in the MAC comparison.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> bool {
    use subtle::ConstantTimeEq;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now_secs - t).abs() > tolerance_secs {
        return false;
    }
    let want = mac_hex(secret, t, body);
    v1.iter()
        .any(|got| bool::from(got.as_bytes().ct_eq(want.as_bytes())))
}

/// Whether a group's free seats are below the threshold (0 turns the event off).
pub fn seats_below(free: i64, threshold: i64) -> bool {
    threshold > 0 && free < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn endpoint_entries_are_checked_and_problems_named() {
        let ok = check_endpoint(
            "https://hooks.example.org/pk",
            &events(&["job_failed", "mother_invalid", "job_failed"]),
            "0123456789abcdef",
        )
        .unwrap();
        assert_eq!(ok.url.host_str(), Some("hooks.example.org"));
        assert_eq!(
            ok.events,
            [WebhookEvent::JobFailed, WebhookEvent::MotherInvalid]
        );
        for (url, evs, secret, needle) in [
            ("not a url", &["job_failed"][..], "0123456789abcdef", "url"),
            (
                "ftp://x.org/",
                &["job_failed"],
                "0123456789abcdef",
                "scheme",
            ),
            (
                "https://u:p@x.org/",
                &["job_failed"],
                "0123456789abcdef",
                "credentials",
            ),
            ("https://x.org/", &[], "0123456789abcdef", "at least one"),
            (
                "https://x.org/",
                &["seat_sold"],
                "0123456789abcdef",
                "seat_sold",
            ),
            ("https://x.org/", &["job_failed"], "short", "16 characters"),
        ] {
            let err = check_endpoint(url, &events(evs), secret).unwrap_err();
            assert!(err.contains(needle), "{url} {evs:?}: {err}");
            assert!(!err.contains(secret) || secret.len() < 6, "{err}");
        }
    }

    fn raw_hmac(key: &[u8], message: &[u8]) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: the crate computes HMAC-SHA256.
        assert_eq!(
            raw_hmac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = br#"{"event":"job_failed"}"#;
        assert_eq!(
            mac_hex(b"secret-0123456789", 1_700_000_000, body),
            raw_hmac(
                b"secret-0123456789",
                br#"1700000000.{"event":"job_failed"}"#
            )
        );
        let header = signature_header(b"secret-0123456789", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert!(verify(
            b"secret-0123456789",
            &header,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"other-secret-0123",
            &header,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"secret-0123456789",
            &header,
            b"tampered",
            1_700_000_100,
            300
        ));
        assert!(
            !verify(b"secret-0123456789", &header, body, 1_700_001_000, 300),
            "too old"
        );
        assert!(!verify(
            b"secret-0123456789",
            "v1=00",
            body,
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn seats_below_the_threshold() {
        for (free, threshold, below) in [(4, 5, true), (5, 5, false), (0, 0, false), (0, 1, true)] {
            assert_eq!(seats_below(free, threshold), below, "{free} < {threshold}");
        }
    }

    #[test]
    fn events_parse_by_name() {
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(WebhookEvent::parse("nope"), None);
    }
}
