//! What a router does with a packet after conntrack saw it but before it is
//! forwarded: the checks of the kernel's ip_route_input_slow / ip_forward /
//! ip6_forward. A packet these drop is never forwarded, so its new connection is
//! never confirmed (the kernel confirms at POSTROUTING / INPUT).

use crate::tuple::{Addr, Family};
use crate::wire::Parsed;

/// Where the router sends a packet, or why it drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// A unicast packet to forward (TTL permitting).
    Forward,
    /// Delivered to the router itself (limited broadcast, all-nodes multicast).
    Local,
    /// Dropped, with the kernel's reason.
    Drop(&'static str),
}

/// Classifies a parsed packet by its addresses and TTL as the kernel's input
/// routing does.
pub fn classify(p: &Parsed) -> RouteClass {
    classify_addrs(p.family, &p.src, &p.dst, p.ttl)
}

/// [`classify`] of a packet from `src` to `dst` (a translated destination,
/// say) with TTL / hop limit `ttl`.
#[inline]
pub fn classify_addrs(family: Family, src: &Addr, dst: &Addr, ttl: u8) -> RouteClass {
    match family {
        Family::V4 => {
            let s = src.v4_octets();
            let d = dst.v4_octets();
            let lbcast = |a: [u8; 4]| a == [255, 255, 255, 255];
            let zeronet = |a: [u8; 4]| a[0] == 0;
            let loopback = |a: [u8; 4]| a[0] == 127;
            let multicast = |a: [u8; 4]| (224..240).contains(&a[0]);
            if multicast(d) {
                return RouteClass::Drop("multicast_not_forwarded");
            }
            if multicast(s) || lbcast(s) {
                return RouteClass::Drop("martian_source");
            }
            if lbcast(d) || (s == [0; 4] && d == [0; 4]) {
                return RouteClass::Local;
            }
            if zeronet(s) || loopback(s) {
                return RouteClass::Drop("martian_source");
            }
            if zeronet(d) || loopback(d) {
                return RouteClass::Drop("martian_destination");
            }
            if ttl <= 1 {
                return RouteClass::Drop("ttl_exceeded");
            }
            RouteClass::Forward
        }
        Family::V6 => {
            let s = std::net::Ipv6Addr::from(src.0);
            let d = std::net::Ipv6Addr::from(dst.0);
            let link_local = |a: &std::net::Ipv6Addr| (a.segments()[0] & 0xffc0) == 0xfe80;
            if s.is_loopback() || d.is_loopback() || s.is_multicast() {
                return RouteClass::Drop("martian_source");
            }
            if d.is_multicast() {
                // ff02::1 (all nodes) reaches every host; a router has also
                // joined the link- and site-local all-routers groups, ff02::2
                // and ff05::2 (the kernel joins them when forwarding is on).
                let seg = d.segments();
                let joined = seg[1..7] == [0; 6]
                    && matches!((seg[0], seg[7]), (0xff02, 1) | (0xff02, 2) | (0xff05, 2));
                return if joined {
                    RouteClass::Local
                } else {
                    RouteClass::Drop("multicast_not_forwarded")
                };
            }
            if s.is_unspecified() || link_local(&s) || link_local(&d) {
                return RouteClass::Drop("link_local_not_forwarded");
            }
            if ttl <= 1 {
                return RouteClass::Drop("ttl_exceeded");
            }
            RouteClass::Forward
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(src: &str, dst: &str) -> Parsed {
        let a = |s: &str| Addr(s.parse::<std::net::Ipv6Addr>().unwrap().octets());
        Parsed {
            family: Family::V6,
            src: a(src),
            dst: a(dst),
            ttl: 255,
            ..Parsed::default()
        }
    }

    #[test]
    fn a_router_receives_all_nodes_and_all_routers_multicast() {
        for dst in ["ff02::1", "ff02::2", "ff05::2"] {
            assert_eq!(classify(&v6("fe80::1", dst)), RouteClass::Local, "{dst}");
        }
        for dst in ["ff02::1:ff07:69ea", "ff05::1", "ff0e::2", "ff02::3"] {
            assert_eq!(
                classify(&v6("fe80::1", dst)),
                RouteClass::Drop("multicast_not_forwarded"),
                "{dst}"
            );
        }
        assert_eq!(
            classify(&v6("2001:db8:1::2", "2001:db8:2::2")),
            RouteClass::Forward
        );
    }
}
