//! The routing table: connected prefixes of the ports plus static routes,
//! longest prefix first. Built once at start, read-only afterwards, so workers
//! read it without any synchronisation.

use crate::config::{v4_u32, v6_u128, Config};

/// Where a packet goes: out of `port` (index into the config's ports), to
/// `gateway` if the route has one, else to the destination itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub port: u8,
    pub gateway: Option<u128>,
}

/// A route of one family's table (index, longest prefix first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(u16);

impl RouteId {
    /// Its index in its family's table.
    pub fn index(self) -> u16 {
        self.0
    }

    /// The route at `i` (an index [`RouteId::index`] gave).
    pub(crate) fn from_index(i: u16) -> RouteId {
        RouteId(i)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    net: u128,
    mask: u128,
    len: u8,
    hop: NextHop,
    zone: u16,
}

/// Local addresses of one port.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortAddrs {
    pub v4: Option<u32>,
    pub v6: Option<u128>,
}

/// An IPv4 route in 12 bytes (a gateway of 0 means on-link), so that a
/// lookup scans few cache lines.
#[derive(Debug, Clone, Copy)]
struct Entry4 {
    net: u32,
    mask: u32,
    gateway: u32,
    port: u8,
    zone: u16,
}

#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// IPv4 routes with 32-bit masks, longest prefix first.
    v4: Vec<Entry4>,
    /// The ports' IPv4 addresses with their port index, compact for `local_v4`.
    local4: Vec<(u32, u8)>,
    v6: Vec<Entry>,
    pub ports: Vec<PortAddrs>,
    /// Some route or port has a zone (else lookups ignore zones).
    zoned: bool,
}

impl Routes {
    pub fn from_config(cfg: &Config) -> Routes {
        let mut r = Routes::default();
        let mut v4 = Vec::new();
        for (i, p) in cfg.ports.iter().enumerate() {
            let mut addrs = PortAddrs::default();
            for pre in [p.ipv4, p.ipv6].into_iter().flatten() {
                let (net, mask) = pre.network_u128();
                let e = Entry {
                    net,
                    mask,
                    len: pre.len,
                    hop: NextHop {
                        port: i as u8,
                        gateway: None,
                    },
                    zone: p.zone,
                };
                if pre.addr.is_ipv4() {
                    addrs.v4 = v4_u32(&pre);
                    v4.push(e);
                } else {
                    addrs.v6 = v6_u128(&pre);
                    r.v6.push(e);
                }
            }
            if let Some(a) = addrs.v4 {
                r.local4.push((a, i as u8));
            }
            r.ports.push(addrs);
        }
        for rt in &cfg.routes {
            let (net, mask) = rt.prefix.network_u128();
            let port = cfg.port_index(&rt.port).expect("validated") as u8;
            let gateway = rt.via.map(|v| match v {
                std::net::IpAddr::V4(a) => u32::from(a) as u128,
                std::net::IpAddr::V6(a) => u128::from(a),
            });
            let e = Entry {
                net,
                mask,
                len: rt.prefix.len,
                hop: NextHop { port, gateway },
                zone: rt.zone,
            };
            if rt.prefix.addr.is_ipv4() {
                v4.push(e);
            } else {
                r.v6.push(e);
            }
        }
        // Longest prefix first; a stable sort keeps connected routes ahead of
        // static ones of the same length.
        v4.sort_by_key(|e: &Entry| std::cmp::Reverse(e.len));
        r.v6.sort_by_key(|e| std::cmp::Reverse(e.len));
        r.v4 = v4
            .iter()
            .map(|e| Entry4 {
                net: e.net as u32,
                mask: e.mask as u32,
                gateway: e.hop.gateway.unwrap_or(0) as u32,
                port: e.hop.port,
                zone: e.zone,
            })
            .collect();
        r.zoned = cfg.ports.iter().any(|p| p.zone != 0) || cfg.routes.iter().any(|r| r.zone != 0);
        r
    }

    #[inline]
    pub fn lookup_v4(&self, dst: u32) -> Option<NextHop> {
        self.find_v4(0, dst).map(|r| self.hop_v4(r))
    }

    #[inline]
    pub fn lookup_v6(&self, dst: u128) -> Option<NextHop> {
        self.find_v6(0, dst).map(|r| self.hop_v6(r))
    }

    /// The route `dst` takes for a connection of `zone` (its routes and
    /// zone 0's, the longest prefix first), as a 2-byte reference (what the
    /// stage hands the forwarder per packet).
    #[inline]
    pub fn find_v4(&self, zone: u16, dst: u32) -> Option<RouteId> {
        if self.zoned {
            return self
                .v4
                .iter()
                .position(|e| dst & e.mask == e.net && (e.zone == 0 || e.zone == zone))
                .map(|i| RouteId(i as u16));
        }
        self.v4
            .iter()
            .position(|e| dst & e.mask == e.net)
            .map(|i| RouteId(i as u16))
    }

    #[inline]
    pub fn find_v6(&self, zone: u16, dst: u128) -> Option<RouteId> {
        self.v6
            .iter()
            .position(|e| dst & e.mask == e.net && (e.zone == 0 || e.zone == zone))
            .map(|i| RouteId(i as u16))
    }

    /// The next hop of an IPv4 route found by [`Routes::find_v4`].
    #[inline]
    pub fn hop_v4(&self, r: RouteId) -> NextHop {
        let e = &self.v4[r.0 as usize];
        NextHop {
            port: e.port,
            gateway: (e.gateway != 0).then_some(e.gateway as u128),
        }
    }

    /// The next hop of an IPv6 route found by [`Routes::find_v6`].
    #[inline]
    pub fn hop_v6(&self, r: RouteId) -> NextHop {
        self.v6[r.0 as usize].hop
    }

    /// The port whose IPv4 address is `a`.
    #[inline]
    pub fn local_v4(&self, a: u32) -> Option<usize> {
        self.local4
            .iter()
            .find(|(l, _)| *l == a)
            .map(|(_, p)| *p as usize)
    }

    /// The port whose IPv6 address is `a`.
    #[inline]
    pub fn local_v6(&self, a: u128) -> Option<usize> {
        self.ports.iter().position(|p| p.v6 == Some(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            r#"
[[port]]
name = "a"
devargs = "net_null0"
ipv4 = "192.0.2.1/24"
ipv6 = "2001:db8:1::1/64"
[[port]]
name = "b"
devargs = "net_null1"
ipv4 = "198.51.100.1/24"
ipv6 = "2001:db8:2::1/64"
[[route]]
prefix = "203.0.113.0/24"
via = "198.51.100.2"
port = "b"
[[route]]
prefix = "203.0.113.128/25"
via = "192.0.2.7"
port = "a"
[[route]]
prefix = "2001:db8:99::/48"
via = "2001:db8:2::2"
port = "b"
"#,
            "t",
        )
        .unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let r = Routes::from_config(&cfg());
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        assert_eq!(
            r.lookup_v4(ip("192.0.2.77")),
            Some(NextHop {
                port: 0,
                gateway: None
            })
        );
        assert_eq!(
            r.lookup_v4(ip("203.0.113.5")),
            Some(NextHop {
                port: 1,
                gateway: Some(ip("198.51.100.2") as u128)
            })
        );
        assert_eq!(
            r.lookup_v4(ip("203.0.113.200")),
            Some(NextHop {
                port: 0,
                gateway: Some(ip("192.0.2.7") as u128)
            })
        );
        assert_eq!(r.lookup_v4(ip("10.0.0.1")), None);
        let ip6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(
            r.lookup_v6(ip6("2001:db8:2::55")),
            Some(NextHop {
                port: 1,
                gateway: None
            })
        );
        assert_eq!(
            r.lookup_v6(ip6("2001:db8:99:1::1")),
            Some(NextHop {
                port: 1,
                gateway: Some(ip6("2001:db8:2::2"))
            })
        );
        assert_eq!(r.lookup_v6(ip6("2001:db8:3::1")), None);
        assert_eq!(r.local_v4(ip("198.51.100.1")), Some(1));
        assert_eq!(r.local_v6(ip6("2001:db8:1::1")), Some(0));
        assert_eq!(r.local_v4(ip("198.51.100.2")), None);
    }
}
