//! Where callbacks may go. A callback URL is the caller's, so it must not
//! aim the server at its own network: loopback, private, link-local (the
//! cloud metadata address among them), unique-local, CGNAT, multicast and
//! unspecified addresses are refused unless `webhooks.allowed_hosts` names
//! the host. Hostnames are checked on the addresses they resolve to, by
//! the resolver the connection itself uses — so a name that resolves to a
//! public address when submitted and to an internal one when called (DNS
//! rebinding) is still refused.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (CGNAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, 198.18.0.0/15; reserved, 240.0.0.0/4.
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7 (AWS's metadata service is fd00:ec2::254).
        || (first & 0xfe00) == 0xfc00
        // Link-local fe80::/10.
        || (first & 0xffc0) == 0xfe80
        // Documentation 2001:db8::/32.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// The hosts callbacks may reach whatever their address.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    allowed_hosts: Arc<Vec<String>>,
}

impl Destinations {
    pub fn new(allowed_hosts: &[String]) -> Destinations {
        Destinations {
            allowed_hosts: Arc::new(
                allowed_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            ),
        }
    }

    /// Whether `host` is on the allow-list.
    pub fn allows(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether an allow-list is set (then only its hosts are reachable).
    pub fn is_restricted(&self) -> bool {
        !self.allowed_hosts.is_empty()
    }
}

/// The error a refused resolution ends with (a callback is then given up,
/// not retried).
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses callbacks may not reach")]
pub struct InternalDestination {
    host: String,
}

impl Resolve for Destinations {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let reachable: Vec<SocketAddr> = match this.allows(&host) {
                true => found,
                false => found.into_iter().filter(|a| is_public(a.ip())).collect(),
            };
            if reachable.is_empty() {
                return Err(Box::new(InternalDestination { host }) as _);
            }
            Ok(Box::new(reachable.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_of_an_internal_address_resolves_to_nothing_unless_allowed() {
        let refused = Destinations::new(&[]).resolve("localhost".parse::<Name>().unwrap());
        assert!(refused.await.is_err());
        let allowed = Destinations::new(&["LOCALHOST".into()])
            .resolve("localhost".parse::<Name>().unwrap())
            .await
            .unwrap();
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }
}
