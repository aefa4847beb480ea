//! Redeem codes: their format, how new ones are drawn, and how many may be handed out.
//!
//! A code is 8 to 32 ASCII letters and digits. Generated codes are an optional prefix followed by
//! [`RANDOM_CHARS`] characters drawn uniformly from the 62 letters and digits: 16 × log2(62) ≈ 95
//! random bits, above the 80 the issue asks for, whatever the prefix.

/// Shortest and longest code accepted.
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 32;
/// Random characters in a generated code.
pub const RANDOM_CHARS: usize = 16;
/// Longest prefix a batch may carry (so prefix + random part stays within [`MAX_LEN`]).
pub const MAX_PREFIX_LEN: usize = MAX_LEN - RANDOM_CHARS;
/// Characters of a code kept in clear for display and search.
pub const DISPLAY_CHARS: usize = 6;
/// Most codes one generation makes.
pub const MAX_BATCH: i64 = 1000;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Whether `code` has the shape of a redeem code (`^[A-Za-z0-9]{8,32}$`).
pub fn is_well_formed(code: &str) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks a batch prefix: empty, or up to [`MAX_PREFIX_LEN`] letters and digits.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "prefix must be at most {MAX_PREFIX_LEN} characters"
        ));
    }
    if !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("prefix may contain only letters and digits".to_string());
    }
    Ok(())
}

/// A new code: `prefix` followed by [`RANDOM_CHARS`] characters, each from bytes of `next_byte`
/// (the caller passes the operating system's random source). Bytes that would bias the draw are
/// skipped: only the first 248 values (4 × 62) are used.
pub fn generate(prefix: &str, mut next_byte: impl FnMut() -> u8) -> String {
    const LIMIT: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut code = String::with_capacity(prefix.len() + RANDOM_CHARS);
    code.push_str(prefix);
    while code.len() < prefix.len() + RANDOM_CHARS {
        let b = next_byte();
        if b < LIMIT {
            code.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
        }
    }
    code
}

/// The part of a code kept in clear.
pub fn display_prefix(code: &str) -> &str {
    &code[..code.len().min(DISPLAY_CHARS)]
}

/// How many new codes may be generated: free seats not yet promised to an unused (or reserved)
/// code. Never negative.
pub fn quota(free_seats: i64, open_codes: i64) -> i64 {
    (free_seats - open_codes).max(0)
}

/// Whether a generation of `count` codes is allowed when `quota` remain.
pub fn check_count(count: i64, quota: i64) -> Result<(), CountError> {
    if !(1..=MAX_BATCH).contains(&count) {
        return Err(CountError::OutOfRange);
    }
    if count > quota {
        return Err(CountError::InsufficientSeats { quota });
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub enum CountError {
    /// Not within 1..=[`MAX_BATCH`].
    OutOfRange,
    /// More than the free seats allow.
    InsufficientSeats { quota: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_codes() {
        for (code, ok) in [
            ("ABCD1234", true),
            ("abcdEFGH12345678abcdEFGH12345678", true),
            ("ABC1234", false),
            ("abcdEFGH12345678abcdEFGH123456789", false),
            ("ABCD-1234", false),
            ("ABCD 1234", false),
            ("ÄBCD1234", false),
            ("", false),
        ] {
            assert_eq!(is_well_formed(code), ok, "{code:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("SPRING26").is_ok());
        assert!(check_prefix("ABCDEFGHIJKLMNOPQ").is_err());
        assert!(check_prefix("A-B").is_err());
    }

    #[test]
    fn generated_codes_are_well_formed_and_skip_biasing_bytes() {
        let mut bytes = [255u8, 248, 0, 61, 62, 247].into_iter().cycle();
        let code = generate("PK", || bytes.next().unwrap());
        assert_eq!(code.len(), 2 + RANDOM_CHARS);
        assert!(is_well_formed(&code));
        // 255 and 248 are skipped; 0 -> 'A', 61 -> '9', 62 -> 'A', 247 -> 247 % 62 = 61 -> '9'.
        assert!(code.starts_with("PKA9A9A9"), "{code}");
        let longest = generate(&"P".repeat(MAX_PREFIX_LEN), || 7);
        assert_eq!(longest.len(), MAX_LEN);
        assert!(is_well_formed(&longest));
    }

    #[test]
    fn quota_and_counts() {
        assert_eq!(quota(10, 3), 7);
        assert_eq!(quota(3, 10), 0);
        assert_eq!(check_count(7, 7), Ok(()));
        assert_eq!(
            check_count(8, 7),
            Err(CountError::InsufficientSeats { quota: 7 })
        );
        assert_eq!(check_count(0, 7), Err(CountError::OutOfRange));
        assert_eq!(
            check_count(MAX_BATCH + 1, 5000),
            Err(CountError::OutOfRange)
        );
    }

    #[test]
    fn display_prefix_is_short() {
        assert_eq!(display_prefix("ABCDEFGH1234"), "ABCDEF");
    }
}
