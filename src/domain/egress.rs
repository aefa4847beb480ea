//! Where outgoing provider calls may go. A provider's base URL is typed by an admin, so without a
//! rule it could point poolkeeper at itself, at the cloud's metadata service or at hosts of the
//! internal network. Addresses of those kinds are refused unless the operator lists the host or a
//! network containing it (`providers.scim.allow_hosts`); loopback is also allowed in development.
//!
//! Pure: the caller resolves names and passes the addresses in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One `allow_hosts` entry: a host name (exact, case-insensitive; `*.example.org` for its
/// subdomains) or a network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    Name(String),
    Suffix(String),
    Network { addr: IpAddr, prefix: u8 },
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty entry".into());
        }
        if let Some((addr, prefix)) = text.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{text:?} is not a network: {addr:?} is not an address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0-{max}"))?;
            return Ok(HostPattern::Network { addr, prefix });
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if let Ok(addr) = bare.parse::<IpAddr>() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(HostPattern::Network { addr, prefix });
        }
        let name = text.to_ascii_lowercase();
        let (suffix, host) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, name),
        };
        let valid = !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!(
                "{text:?} is not a host name, *.domain or network (address/prefix)"
            ));
        }
        Ok(if suffix {
            HostPattern::Suffix(host)
        } else {
            HostPattern::Name(host)
        })
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            HostPattern::Name(n) => host.eq_ignore_ascii_case(n),
            HostPattern::Suffix(s) => {
                let host = host.to_ascii_lowercase();
                host.strip_suffix(s.as_str())
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
            }
            HostPattern::Network { .. } => false,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let HostPattern::Network { addr, prefix } = self else {
            return false;
        };
        match (addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why an address is not public.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Internal {
    Loopback,
    Private,
    LinkLocal,
    UniqueLocal,
    Metadata,
    Other,
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Internal::Loopback => "a loopback address",
            Internal::Private => "a private address",
            Internal::LinkLocal => "a link-local address",
            Internal::UniqueLocal => "a unique-local address",
            Internal::Metadata => "a cloud metadata address",
            Internal::Other => "not a public unicast address",
        })
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The kind of a non-public address, or `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<Internal> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Internal> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some(Internal::Metadata);
    }
    if ip.is_loopback() {
        Some(Internal::Loopback)
    } else if ip.is_private() {
        Some(Internal::Private)
    } else if ip.is_link_local() {
        Some(Internal::LinkLocal)
    } else if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
    {
        Some(Internal::Other)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Internal> {
    let first = ip.segments()[0];
    // AWS's IPv6 metadata service.
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Internal::Metadata);
    }
    if ip.is_loopback() {
        Some(Internal::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Some(Internal::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 {
        Some(Internal::UniqueLocal)
    } else if ip.is_unspecified() || ip.is_multicast() || first & 0xffc0 == 0xfec0 {
        Some(Internal::Other)
    } else if let Some(v4) = ip.to_ipv4() {
        // IPv4-compatible addresses (::a.b.c.d, deprecated) are judged as their IPv4 address.
        classify_v4(v4).filter(|_| ip.segments()[..6].iter().all(|s| *s == 0))
    } else {
        None
    }
}

/// The rule for outgoing calls: which non-public addresses are allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressRule {
    pub allow: Vec<HostPattern>,
    /// Loopback addresses are allowed (development).
    pub allow_loopback: bool,
}

impl EgressRule {
    /// Parses `allow_hosts` entries; the message names the bad entry.
    pub fn new(allow_hosts: &[String], allow_loopback: bool) -> Result<Self, String> {
        let allow = allow_hosts
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allow,
            allow_loopback,
        })
    }

    /// Whether a connection to `ip`, reached through the URL host `host`, may be made; else why
    /// not.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Internal> {
        let Some(kind) = classify(ip) else {
            return Ok(());
        };
        if kind == Internal::Loopback && self.allow_loopback {
            return Ok(());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self
            .allow
            .iter()
            .any(|p| p.matches_host(host) || p.contains(ip))
        {
            return Ok(());
        }
        Err(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_classified() {
        for (addr, want) in [
            ("8.8.8.8", None),
            ("2001:4860:4860::8888", None),
            ("127.0.0.1", Some(Internal::Loopback)),
            ("127.3.2.1", Some(Internal::Loopback)),
            ("::1", Some(Internal::Loopback)),
            ("::ffff:127.0.0.1", Some(Internal::Loopback)),
            ("10.1.2.3", Some(Internal::Private)),
            ("172.16.0.1", Some(Internal::Private)),
            ("192.168.1.1", Some(Internal::Private)),
            ("::ffff:10.0.0.1", Some(Internal::Private)),
            ("169.254.1.1", Some(Internal::LinkLocal)),
            ("fe80::1", Some(Internal::LinkLocal)),
            ("fd12:3456::1", Some(Internal::UniqueLocal)),
            ("fc00::1", Some(Internal::UniqueLocal)),
            ("169.254.169.254", Some(Internal::Metadata)),
            ("fd00:ec2::254", Some(Internal::Metadata)),
            ("0.0.0.0", Some(Internal::Other)),
            ("::", Some(Internal::Other)),
            ("100.64.0.1", Some(Internal::Other)),
            ("224.0.0.1", Some(Internal::Other)),
        ] {
            assert_eq!(classify(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn allow_hosts_open_names_and_networks() {
        let rule = EgressRule::new(
            &[
                "scim.internal".into(),
                "*.corp.example".into(),
                "10.20.0.0/16".into(),
                "fd00::/8".into(),
                "192.168.7.7".into(),
            ],
            false,
        )
        .unwrap();
        assert_eq!(rule.check("idp.example.org", ip("8.8.8.8")), Ok(()));
        assert_eq!(rule.check("SCIM.internal", ip("10.9.9.9")), Ok(()));
        assert_eq!(rule.check("a.corp.example", ip("10.9.9.9")), Ok(()));
        assert_eq!(
            rule.check("corp.example", ip("10.9.9.9")),
            Err(Internal::Private)
        );
        assert_eq!(
            rule.check("xcorp.example", ip("10.9.9.9")),
            Err(Internal::Private)
        );
        assert_eq!(rule.check("10.20.3.4", ip("10.20.3.4")), Ok(()));
        assert_eq!(
            rule.check("10.21.3.4", ip("10.21.3.4")),
            Err(Internal::Private)
        );
        assert_eq!(rule.check("h", ip("fd00:1::1")), Ok(()));
        assert_eq!(rule.check("h", ip("192.168.7.7")), Ok(()));
        assert_eq!(rule.check("h", ip("192.168.7.8")), Err(Internal::Private));
        assert_eq!(
            rule.check("localhost", ip("127.0.0.1")),
            Err(Internal::Loopback)
        );
        assert_eq!(
            rule.check("h", ip("169.254.169.254")),
            Err(Internal::Metadata)
        );

        let dev = EgressRule::new(&[], true).unwrap();
        assert_eq!(dev.check("localhost", ip("127.0.0.1")), Ok(()));
        assert_eq!(dev.check("[::1]", ip("::1")), Ok(()));
        assert_eq!(dev.check("h", ip("10.0.0.1")), Err(Internal::Private));
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in ["", "10.0.0.0/33", "x/8", "a b", "*.", "fd00::/129"] {
            let err = HostPattern::parse(bad).unwrap_err();
            assert!(err.contains(bad.trim()) || bad.is_empty(), "{bad}: {err}");
        }
        assert_eq!(
            HostPattern::parse("0.0.0.0/0").unwrap(),
            HostPattern::Network {
                addr: ip("0.0.0.0"),
                prefix: 0
            }
        );
    }
}
