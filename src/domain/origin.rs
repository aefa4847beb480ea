//! Web origins (scheme, host, port) as the CSRF check and the production `Host` check compare
//! them. Pure parsing: the configured `public_url`, `Origin`/`Referer` values and `Host` headers.
//! Default ports are made explicit, so `https://a.example` and `https://a.example:443` are equal.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`, lower case.
    pub scheme: String,
    /// Lower case; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Origin {
    /// A configured base URL: `http(s)://host[:port]`, optionally with a trailing `/`, nothing else.
    pub fn parse_url(url: &str) -> Result<Self, String> {
        let (origin, rest) = Self::split(url)?;
        if !(rest.is_empty() || rest == "/") {
            return Err("must be scheme://host[:port] without a path, query or fragment".into());
        }
        Ok(origin)
    }

    /// The origin of an `Origin` or `Referer` header value (any path is ignored); `None` when it
    /// names no http(s) origin (`null`, garbage).
    pub fn of_header(value: &str) -> Option<Self> {
        Self::split(value).ok().map(|(origin, _)| origin)
    }

    /// The origin a request names with its own scheme and `Host` header.
    pub fn from_host(scheme: &str, host: &str) -> Option<Self> {
        let scheme = scheme.to_ascii_lowercase();
        let port = default_port(&scheme)?;
        let (host, port) = split_authority(host, port)?;
        Some(Self { scheme, host, port })
    }

    /// Whether a `Host` header names this origin's host and port.
    pub fn matches_host(&self, host: &str) -> bool {
        split_authority(host, default_port(&self.scheme).unwrap_or(0))
            .is_some_and(|(h, p)| h == self.host && p == self.port)
    }

    fn split(url: &str) -> Result<(Self, &str), String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "must start with http:// or https://".to_string())?;
        let scheme = scheme.to_ascii_lowercase();
        let port = default_port(&scheme)
            .ok_or_else(|| "must start with http:// or https://".to_string())?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (host, port) = split_authority(authority, port)
            .ok_or_else(|| "has no valid host[:port]".to_string())?;
        Ok((Self { scheme, host, port }, tail))
    }
}

/// `host[:port]` or `[v6][:port]` -> (lower-case host, port); `None` when malformed.
fn split_authority(authority: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => default,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(scheme: &str, host: &str, port: u16) -> Origin {
        Origin {
            scheme: scheme.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn configured_urls_parse_with_default_ports() {
        let cases: &[(&str, Option<Origin>)] = &[
            (
                "https://pk.example.org",
                Some(o("https", "pk.example.org", 443)),
            ),
            (
                "https://PK.example.org/",
                Some(o("https", "pk.example.org", 443)),
            ),
            ("http://127.0.0.1:8080", Some(o("http", "127.0.0.1", 8080))),
            ("http://[::1]:8080/", Some(o("http", "[::1]", 8080))),
            ("https://pk.example.org/admin", None),
            ("https://pk.example.org?x=1", None),
            ("ftp://pk.example.org", None),
            ("pk.example.org", None),
            ("https://", None),
            ("https://pk.example.org:port", None),
            ("https://user@pk.example.org", None),
        ];
        for (url, want) in cases {
            assert_eq!(Origin::parse_url(url).ok(), *want, "{url}");
        }
    }

    #[test]
    fn header_values_compare_by_scheme_host_and_port() {
        let public = o("https", "pk.example.org", 443);
        let cases: &[(&str, bool)] = &[
            ("https://pk.example.org", true),
            ("https://pk.example.org:443", true),
            ("https://pk.example.org/mothers?page=2", true),
            ("http://pk.example.org", false),
            ("https://pk.example.org:8443", false),
            ("https://pk.example.org.evil.test", false),
            ("https://evil.test/https://pk.example.org", false),
            ("null", false),
        ];
        for (value, same) in cases {
            assert_eq!(
                Origin::of_header(value).as_ref() == Some(&public),
                *same,
                "{value}"
            );
        }
    }

    #[test]
    fn host_headers_name_host_and_port() {
        let public = o("http", "127.0.0.1", 8080);
        assert!(public.matches_host("127.0.0.1:8080"));
        assert!(!public.matches_host("127.0.0.1"));
        assert!(!public.matches_host("localhost:8080"));
        assert!(o("https", "a.example", 443).matches_host("A.example"));
        assert_eq!(
            Origin::from_host("http", "[::1]:3000"),
            Some(o("http", "[::1]", 3000))
        );
        assert_eq!(Origin::from_host("http", "bad host"), None);
    }
}
