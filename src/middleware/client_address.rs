//! Who is on the other end: the caller's address as the allow-lists, the
//! failed-authentication limit and the audit see it. A connection from a
//! trusted proxy (`auth.trusted_proxies`) names the caller in `Forwarded`
//! (RFC 7239) or else `X-Forwarded-For`; those are read right to left,
//! skipping hops that are trusted proxies too, so a caller cannot pose as
//! another by sending the header itself. From anyone else the headers are
//! ignored.

use crate::auth::networks::Networks;
use crate::tls::PeerInfo;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The caller's address, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The address a layer put on `request`, or else its connection's.
    pub fn of<B>(request: &http::Request<B>) -> Option<IpAddr> {
        let extensions = request.extensions();
        Self::from(extensions.get(), extensions.get())
    }

    /// The same from a gRPC handler's request.
    pub fn of_grpc<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
        let extensions = request.extensions();
        Self::from(extensions.get(), extensions.get())
    }

    fn from(client: Option<&ClientAddress>, peer: Option<&PeerInfo>) -> Option<IpAddr> {
        client.map(|c| c.0).or_else(|| {
            peer.and_then(|p| p.remote_addr)
                .map(|a| a.ip().to_canonical())
        })
    }
}

/// Puts each call's `ClientAddress` on it.
#[derive(Clone)]
pub struct ClientAddresses {
    trusted_proxies: Arc<Networks>,
}

impl ClientAddresses {
    pub fn new(trusted_proxies: Networks) -> ClientAddresses {
        ClientAddresses {
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }
}

impl super::Around for ClientAddresses {
    fn around<B, E, Next, Fut>(
        &self,
        mut request: http::Request<B>,
        next: Next,
    ) -> super::LayerFuture<E>
    where
        B: Send + 'static,
        E: Send + 'static,
        Next: FnOnce(http::Request<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<super::Response, E>> + Send + 'static,
    {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.remote_addr)
            .map(|a| a.ip().to_canonical());
        if let Some(peer) = peer {
            let client = caller_behind(peer, request.headers(), &self.trusted_proxies);
            request.extensions_mut().insert(ClientAddress(client));
        }
        Box::pin(next(request))
    }
}

/// The caller's address for a connection from `peer`.
pub fn caller_behind(peer: IpAddr, headers: &http::HeaderMap, trusted: &Networks) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    let mut caller = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(address) => {
                caller = *address;
                if !trusted.contains(caller) {
                    break;
                }
            }
            // A hop a trusted proxy wrote but we cannot read (`unknown`,
            // an obfuscated name): the last address we could believe.
            None => break,
        }
    }
    caller
}

/// The hops of `Forwarded` (all its `for=`), or of `X-Forwarded-For` when
/// there is no `Forwarded`, nearest last; `None` for one that is no address.
fn forwarded_hops(headers: &http::HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(value.trim().trim_matches('"')))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:8080`,
/// `2001:db8::1` or `[2001:db8::1]:8080`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
        .map(|ip: IpAddr| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> Networks {
        Networks::parse("t", &["10.0.0.0/8".into()]).unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "192.0.2.9")]);
        assert_eq!(
            caller_behind(ip("198.51.100.1"), &h, &proxies()),
            ip("198.51.100.1")
        );
        assert_eq!(
            caller_behind(ip("10.0.0.1"), &h, &Networks::default()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_caller() {
        // The caller sent a forged first hop; the proxies appended the truth.
        let h = headers(&[("x-forwarded-for", "203.0.113.66, 192.0.2.9, 10.0.0.7")]);
        assert_eq!(
            caller_behind(ip("10.0.0.1"), &h, &proxies()),
            ip("192.0.2.9")
        );
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.66"),
            ("x-forwarded-for", "192.0.2.9"),
        ]);
        assert_eq!(
            caller_behind(ip("10.0.0.1"), &h, &proxies()),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_takes_ports_and_brackets() {
        let h = headers(&[
            (
                "forwarded",
                r#"for=203.0.113.66;proto=https, For="[2001:db8::1]:4711""#,
            ),
            ("x-forwarded-for", "192.0.2.9"),
        ]);
        assert_eq!(
            caller_behind(ip("10.0.0.1"), &h, &proxies()),
            ip("2001:db8::1")
        );
        let h = headers(&[("forwarded", "for=\"192.0.2.9:80\"")]);
        assert_eq!(
            caller_behind(ip("10.0.0.1"), &h, &proxies()),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_last_believed_address() {
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            caller_behind(ip("10.0.0.1"), &h, &proxies()),
            ip("10.0.0.1")
        );
        let h = headers(&[("x-forwarded-for", "192.0.2.9, _hidden, 10.0.0.8")]);
        assert_eq!(
            caller_behind(ip("10.0.0.1"), &h, &proxies()),
            ip("10.0.0.8")
        );
    }
}
