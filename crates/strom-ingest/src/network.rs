//! Where a request came from: the client's address behind trusted proxies, and its
//! anonymisation before anything is written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Entries of `X-Forwarded-For` looked at. A longer chain is cut from the left: the
/// right-most entries are the ones trusted proxies added.
pub const FORWARDED_HOPS_MAX: usize = 16;

/// The client's address: the peer itself, unless the peer is a trusted proxy, in which case
/// `X-Forwarded-For` is read right to left and the first address not in a trusted network
/// is the client. An address a client wrote itself into the header is never believed unless
/// every hop to its right is trusted.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for entry in header.rsplit(',').take(FORWARDED_HOPS_MAX) {
        let Some(address) = parse_hop(entry.trim()) else {
            // A hop we cannot read ends the walk: what is left of it was written by someone
            // we cannot vouch for.
            break;
        };
        client = address;
        if !trusted.iter().any(|net| net.contains(&address)) {
            break;
        }
    }
    client
}

fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    // "1.2.3.4:5678" and "[2001:db8::1]:443" appear behind some proxies.
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    None
}

/// IPv4 addresses mapped into IPv6 (`::ffff:1.2.3.4`, as dual-stack sockets report them)
/// are treated as IPv4, so that anonymisation and trusted networks see what the user means.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// Zeroes the last octet of an IPv4 address and the last 80 bits of an IPv6 address (the
/// convention of Google Analytics and Matomo): the network stays, the host goes.
pub fn anonymize(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 80) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn anonymisation() {
        assert_eq!(anonymize(ip("203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(anonymize(ip("2001:db8:abcd:1234:5678:9abc:def0:1234")), ip("2001:db8:abcd::"));
        assert_eq!(anonymize(ip("::ffff:198.51.100.9")), ip("198.51.100.0"));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let header = Some("6.6.6.6, 198.51.100.9, 10.1.2.3");
        // From an untrusted peer the header is ignored.
        assert_eq!(client_ip(ip("192.0.2.1"), header, &trusted), ip("192.0.2.1"));
        // From a trusted proxy: right to left, skipping trusted hops; the spoofed 6.6.6.6 at
        // the left is never reached.
        assert_eq!(client_ip(ip("10.0.0.5"), header, &trusted), ip("198.51.100.9"));
        assert_eq!(client_ip(ip("::1"), Some("[2001:db8::7]:443"), &trusted), ip("2001:db8::7"));
        assert_eq!(client_ip(ip("10.0.0.5"), Some("garbage, 10.9.9.9"), &trusted), ip("10.9.9.9"));
        assert_eq!(client_ip(ip("10.0.0.5"), None, &trusted), ip("10.0.0.5"));
    }
}
