//! The audit log's rules: the canonical encoding a row's hash covers, the chain check, which keys of
//! a change summary are secret, and the time bounds of a query. Pure: no I/O, no clock.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first row ever written.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of a row that its hash covers, in this order.
#[derive(Clone, Copy, Debug)]
pub struct ChainedFields<'a> {
    pub id: i64,
    pub at: i64,
    pub actor: &'a str,
    pub address: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub summary: &'a str,
    pub prev_hash: &'a str,
}

/// The bytes a row's hash is taken over: a version line, then each field as its byte length in
/// decimal, `:`, the bytes and a newline. Length prefixes make the encoding unambiguous (no field
/// can swallow the next, whatever characters it holds); the version line lets a later format sit
/// beside this one.
pub fn canonical_bytes(f: &ChainedFields<'_>) -> Vec<u8> {
    let id = f.id.to_string();
    let at = f.at.to_string();
    let fields: [&str; 9] = [
        &id,
        &at,
        f.actor,
        f.address,
        f.action,
        f.target_type,
        f.target_id,
        f.summary,
        f.prev_hash,
    ];
    let mut out = b"poolkeeper-audit-v1\n".to_vec();
    for field in fields {
        out.extend_from_slice(field.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(field.as_bytes());
        out.push(b'\n');
    }
    out
}

/// SHA-256 of the canonical encoding, as lowercase hex.
pub fn row_hash(f: &ChainedFields<'_>) -> String {
    Sha256::digest(canonical_bytes(f))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a row does not continue the chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BrokenLink {
    /// The first row that does not fit.
    pub id: i64,
    pub reason: String,
}

/// What the chain so far ends with: the id and hash the next row must follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub id: i64,
    pub hash: String,
}

impl ChainHead {
    /// Before the first row ever written.
    pub fn genesis() -> Self {
        Self {
            id: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// Checks that `row` (with its stored `hash`) follows `head`: the next id, the head's hash as
/// `prev_hash`, and a stored hash that matches its fields.
pub fn check_link(
    head: &ChainHead,
    row: &ChainedFields<'_>,
    stored_hash: &str,
) -> Result<(), BrokenLink> {
    let broken = |reason: String| BrokenLink { id: row.id, reason };
    if row.id != head.id + 1 {
        return Err(broken(format!(
            "row {} follows row {}: rows {}..{} are missing",
            row.id,
            head.id,
            head.id + 1,
            row.id - 1
        )));
    }
    if row.prev_hash != head.hash {
        return Err(broken(format!(
            "prev_hash does not match the hash of row {}",
            head.id
        )));
    }
    if row_hash(row) != stored_hash {
        return Err(broken(
            "the row's contents do not match its hash (changed after it was written)".into(),
        ));
    }
    Ok(())
}

/// Whether a summary key names a secret (its value is never written to the log).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "cookie",
        "plaintext",
        "private",
        "api_key",
        "codes",
        "value",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// The summary with every secret-named key removed, at any depth.
pub fn scrub_summary(summary: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match summary {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !is_secret_key(k))
                .map(|(k, v)| (k, scrub_summary(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub_summary).collect()),
        other => other,
    }
}

/// Which end of a time range a value gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Inclusive start: a date means its first moment.
    From,
    /// Exclusive end: a date means the whole day is included (the end is the next midnight).
    To,
}

/// Parses a time bound: RFC 3339 (`2026-11-30T08:00:00Z`), a date (`2026-11-30`, UTC) or
/// milliseconds since the epoch; returns UTC milliseconds or a message naming the accepted forms.
pub fn parse_time_bound(value: &str, bound: Bound) -> Result<i64, String> {
    let value = value.trim();
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
        return value
            .parse::<i64>()
            .map_err(|_| format!("`{value}` is too large"));
    }
    if let Ok(t) =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
    {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(value, date_format) {
        let start = d.midnight().assume_utc().unix_timestamp() * 1000;
        return Ok(match bound {
            Bound::From => start,
            Bound::To => start + 86_400_000,
        });
    }
    Err(format!(
        "`{}` is not a time: use RFC 3339 (2026-11-30T08:00:00Z), a date (2026-11-30) or milliseconds",
        crate::auth::loggable(value)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(id: i64, prev: &'a str, summary: &'a str) -> ChainedFields<'a> {
        ChainedFields {
            id,
            at: 1_700_000_000_000,
            actor: "admin",
            address: "127.0.0.1",
            action: "mother.create",
            target_type: "mother",
            target_id: "7",
            summary,
            prev_hash: prev,
        }
    }

    #[test]
    fn encoding_is_length_prefixed_so_fields_cannot_shift() {
        let a = ChainedFields {
            actor: "ab",
            address: "c",
            ..fields(1, GENESIS_HASH, "{}")
        };
        let b = ChainedFields {
            actor: "a",
            address: "bc",
            ..fields(1, GENESIS_HASH, "{}")
        };
        assert_ne!(row_hash(&a), row_hash(&b));
        assert_eq!(row_hash(&a), row_hash(&a));
        assert_eq!(row_hash(&a).len(), 64);
    }

    #[test]
    fn links_check_id_prev_hash_and_contents() {
        let first = fields(1, GENESIS_HASH, "{}");
        let h1 = row_hash(&first);
        assert_eq!(check_link(&ChainHead::genesis(), &first, &h1), Ok(()));
        let head = ChainHead {
            id: 1,
            hash: h1.clone(),
        };
        let second = fields(2, &h1, "{\"n\":1}");
        let h2 = row_hash(&second);
        assert_eq!(check_link(&head, &second, &h2), Ok(()));
        // Changed contents, wrong predecessor, a gap.
        let changed = fields(2, &h1, "{\"n\":2}");
        assert!(
            check_link(&head, &changed, &h2)
                .unwrap_err()
                .reason
                .contains("contents")
        );
        let forked = fields(2, GENESIS_HASH, "{}");
        assert!(
            check_link(&head, &forked, &row_hash(&forked))
                .unwrap_err()
                .reason
                .contains("prev_hash")
        );
        let gap = fields(3, &h1, "{}");
        let err = check_link(&head, &gap, &row_hash(&gap)).unwrap_err();
        assert_eq!(err.id, 3);
        assert!(err.reason.contains("missing"));
    }

    #[test]
    fn secret_keys_are_scrubbed_at_any_depth() {
        let summary = serde_json::json!({
            "name": "m1",
            "password": "hunter22",
            "credential": {"user": "x"},
            "changes": {"session_token": "abc", "max_seats": 5, "list": [{"api_key": "k", "ok": 1}]},
            "codes": ["AAAA-BBBB"],
        });
        let scrubbed = scrub_summary(summary);
        assert_eq!(
            scrubbed,
            serde_json::json!({"name": "m1", "changes": {"max_seats": 5, "list": [{"ok": 1}]}})
        );
    }

    #[test]
    fn time_bounds() {
        assert_eq!(
            parse_time_bound("1700000000000", Bound::From),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_time_bound("1970-01-02", Bound::From), Ok(86_400_000));
        assert_eq!(
            parse_time_bound("1970-01-02", Bound::To),
            Ok(2 * 86_400_000)
        );
        assert_eq!(
            parse_time_bound("1970-01-01T00:00:01Z", Bound::To),
            Ok(1000)
        );
        for bad in ["", "yesterday", "2026-13-01", "99999999999999999999999"] {
            assert!(parse_time_bound(bad, Bound::From).is_err(), "{bad}");
        }
    }
}
