//! Networks a caller may come from (`auth.allowed_networks`, per key
//! `allowed_networks`) and proxies whose forwarding headers are believed
//! (`auth.trusted_proxies`): lists of CIDR blocks, IPv4 and IPv6.

use ipnet::IpNet;
use std::net::IpAddr;

/// A list of networks; empty means "no list" where a list is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// Parses `raw` (CIDR blocks, or single addresses meaning /32 or /128);
    /// the error names the entry of `field` that does not parse.
    pub fn parse(field: &str, raw: &[String]) -> Result<Networks, String> {
        raw.iter()
            .enumerate()
            .map(|(i, entry)| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("{field}[{i}]: {entry:?} is not a network (CIDR) or an address")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Networks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` is in one of the networks (an IPv4 address seen
    /// as IPv6, `::ffff:a.b.c.d`, counts as the IPv4 one).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// Whether a caller from `address` passes: no list lets everyone in.
    pub fn admits(&self, address: Option<IpAddr>) -> bool {
        self.is_empty() || address.is_some_and(|a| self.contains(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(raw: &[&str]) -> Networks {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        Networks::parse("test", &raw).unwrap()
    }

    #[test]
    fn blocks_and_single_addresses_of_both_families_match() {
        let list = nets(&["10.0.0.0/8", "127.0.0.2", "2001:db8::/32"]);
        for inside in ["10.1.2.3", "127.0.0.2", "::ffff:127.0.0.2", "2001:db8::7"] {
            assert!(list.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["11.0.0.1", "127.0.0.1", "2001:db9::1", "::1"] {
            assert!(!list.contains(outside.parse().unwrap()), "{outside}");
        }
        assert!(Networks::default().admits(None));
        assert!(!list.admits(None));
    }

    #[test]
    fn a_bad_entry_is_named() {
        let err = Networks::parse(
            "auth.allowed_networks",
            &["10.0.0.0/8".into(), "ten".into()],
        )
        .unwrap_err();
        assert!(err.starts_with("auth.allowed_networks[1]"), "{err}");
    }
}
