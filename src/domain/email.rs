//! Syntax checks for email addresses and domain names.

/// A DNS host name: dot-separated labels of letters, digits and inner hyphens, at least two labels.
pub fn is_valid_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// An address `local@domain` with a plain local part (letters, digits and `.!#$%&'*+/=?^_`{|}~-`,
/// no leading, trailing or doubled dot) and a valid domain.
pub fn is_valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c))
        && is_valid_domain(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for ok in ["example.org", "a-b.example.co", "x1.y2"] {
            assert!(is_valid_domain(ok), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "-a.org",
            "a-.org",
            "a..org",
            "a_b.org",
            "exa mple.org",
            ".org",
        ] {
            assert!(!is_valid_domain(bad), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "a@example.org",
            "pool-20261123-001@example.org",
            "first.last+tag@sub.example.org",
        ] {
            assert!(is_valid_address(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "@example.org",
            "a@",
            "a@localhost",
            ".a@example.org",
            "a..b@example.org",
            "a b@example.org",
            "a@b@example.org",
        ] {
            assert!(!is_valid_address(bad), "{bad}");
        }
    }
}
