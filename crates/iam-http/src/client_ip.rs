//! The client's IP address: the TCP peer, or — only when the peer is a configured trusted
//! proxy — the nearest untrusted address of `X-Forwarded-For`.

use std::net::IpAddr;

use actix_web::{HttpRequest, web};

/// Proxies whose `X-Forwarded-For` is believed (`IAM_TRUSTED_PROXIES`), registered as app data.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpAddr>);

/// The client IP of `req` (see the module docs).
pub fn of(req: &HttpRequest) -> Option<IpAddr> {
    // IPv4 clients of a dual-stack listener arrive IPv4-mapped (`::ffff:a.b.c.d`): use the
    // IPv4 address, so proxies, the throttle and `lastUsedIp` see one form.
    let peer = req.peer_addr().map(|a| a.ip().to_canonical())?;
    let trusted = req.app_data::<web::Data<TrustedProxies>>();
    let Some(trusted) = trusted.filter(|t| t.0.contains(&peer)) else {
        return Some(peer);
    };
    let hops: Vec<Option<IpAddr>> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_hop(hop).map(|ip| ip.to_canonical()))
        .collect();
    // Walk from the nearest hop outwards, skipping our own proxies. A hop that does not parse
    // ends the walk: what lies beyond it was written by someone we cannot vouch for.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted.0.contains(ip) => client = *ip,
            Some(ip) => return Some(*ip),
            None => return Some(client),
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port` or `[ipv6]:port`.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse() {
        return Some(ip);
    }
    if let Ok(socket) = raw.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    raw.rsplit_once(':')
        .filter(|(host, _)| !host.contains(':'))
        .and_then(|(host, _)| host.parse().ok())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn request(peer: &str, xff: Option<&str>, trusted: &[&str]) -> HttpRequest {
        let mut req = TestRequest::default()
            .peer_addr(format!("{peer}:4000").parse().unwrap())
            .app_data(web::Data::new(TrustedProxies(
                trusted.iter().map(|t| t.parse().unwrap()).collect(),
            )));
        if let Some(xff) = xff {
            req = req.insert_header(("x-forwarded-for", xff));
        }
        req.to_http_request()
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            of(&request("203.0.113.9", Some("1.2.3.4"), &[])),
            ip("203.0.113.9")
        );
        assert_eq!(
            of(&request("10.0.0.1", Some("1.2.3.4"), &["10.0.0.1"])),
            ip("1.2.3.4")
        );
        // A client cannot spoof by prepending: the nearest untrusted hop wins.
        assert_eq!(
            of(&request(
                "10.0.0.1",
                Some("6.6.6.6, 1.2.3.4, 10.0.0.2"),
                &["10.0.0.1", "10.0.0.2"]
            )),
            ip("1.2.3.4")
        );
        assert_eq!(
            of(&request("10.0.0.1", None, &["10.0.0.1"])),
            ip("10.0.0.1")
        );
        // Ports are understood; an unparsable hop stops the walk instead of being skipped.
        let proxy = ["10.0.0.1"];
        assert_eq!(
            of(&request("10.0.0.1", Some("1.2.3.4:5555"), &proxy)),
            ip("1.2.3.4")
        );
        assert_eq!(
            of(&request("10.0.0.1", Some("[2001:db8::1]:443"), &proxy)),
            ip("2001:db8::1")
        );
        assert_eq!(
            of(&request("10.0.0.1", Some("9.9.9.9, unknown"), &proxy)),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_taken_as_ipv4() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // A dual-stack listener sees IPv4 peers IPv4-mapped; the trusted list says IPv4.
        assert_eq!(
            of(&request(
                "[::ffff:10.0.0.1]",
                Some("::ffff:1.2.3.4"),
                &["10.0.0.1"]
            )),
            ip("1.2.3.4")
        );
        assert_eq!(
            of(&request("[::ffff:203.0.113.9]", None, &[])),
            ip("203.0.113.9")
        );
    }
}
