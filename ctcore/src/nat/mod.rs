//! NAT (the kernel's nf_nat): rules evaluated in order at a connection's first
//! packet, a binding made once (nf_nat_setup_info) and applied to both
//! directions for the connection's life. The reply tuple in the table is the
//! translated one, so replies match.
//!
//! Destination NAT is chosen before routing (PREROUTING), source NAT after it
//! (POSTROUTING), so a connection may get both: full NAT is a `dnat` rule and a
//! `snat`/`masquerade` rule that both match.

pub mod alloc;
pub mod maglev;
pub mod ports;
pub mod rewrite;

use crate::conn::{Conn, Status};
use crate::stats::{CounterSlot, SlotCounter};
use crate::table::Guard;
use crate::tuple::{Addr, Family, Tuple, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE};
pub use maglev::{Backend, Pool};

/// An address prefix (`192.0.2.0/24`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub family: Family,
    pub addr: Addr,
    pub len: u8,
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (
                a,
                Some(
                    l.parse::<u8>()
                        .map_err(|_| format!("bad prefix length in {s:?}"))?,
                ),
            ),
            None => (s, None),
        };
        let ip: std::net::IpAddr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
        let (addr, family) = Addr::from_ip(ip);
        let max = if family == Family::V4 { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(format!("prefix length {len} too long in {s:?}"));
        }
        Ok(Prefix { family, addr, len })
    }

    pub fn contains(&self, family: Family, a: &Addr) -> bool {
        if family != self.family {
            return false;
        }
        let full = (self.len / 8) as usize;
        if a.0[..full] != self.addr.0[..full] {
            return false;
        }
        let rem = self.len % 8;
        rem == 0 || (a.0[full] ^ self.addr.0[full]) & (0xffu8 << (8 - rem)) == 0
    }
}

/// What a rule matches: all given fields must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    pub in_port: Option<u16>,
    /// Only for source NAT rules (the egress is known after routing).
    pub out_port: Option<u16>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub proto: Option<u8>,
    pub dports: Option<(u16, u16)>,
    pub zone: Option<u16>,
}

impl Match {
    fn matches(&self, t: &Tuple, in_port: u16, out_port: Option<u16>) -> bool {
        self.in_port.is_none_or(|p| p == in_port)
            && self.out_port.is_none_or(|p| Some(p) == out_port)
            && self.src.is_none_or(|p| p.contains(t.family, &t.src))
            && self.dst.is_none_or(|p| p.contains(t.family, &t.dst))
            && self.proto.is_none_or(|p| p == t.proto)
            && self
                .dports
                .is_none_or(|(lo, hi)| has_ports(t.proto) && (lo..=hi).contains(&t.dst_port))
            && self.zone.is_none_or(|z| z == t.zone)
    }
}

/// Protocols whose tuples carry ports NAT may change (not DCCP: tracked
/// generically, as by kernels without its tracker, and translated by
/// address only, as by their NAT).
pub fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP
    )
}

/// A rule's translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `snat to A[-B][:P[-Q]] [random] [persistent]`
    Snat {
        family: Family,
        addrs: (Addr, Addr),
        ports: Option<(u16, u16)>,
        random: bool,
        persistent: bool,
    },
    /// `masquerade [to :P-Q] [random]`: the egress port's address.
    Masquerade {
        ports: Option<(u16, u16)>,
        random: bool,
    },
    /// `dnat to A[:P]`
    Dnat {
        family: Family,
        addr: Addr,
        port: Option<u16>,
    },
    /// `dnat to pool NAME`: a backend by consistent hashing.
    DnatPool { pool: usize },
}

impl Action {
    pub fn is_dnat(&self) -> bool {
        matches!(self, Action::Dnat { .. } | Action::DnatPool { .. })
    }

    /// The address family the action translates to, where it names addresses.
    pub fn family(&self) -> Option<Family> {
        match self {
            Action::Snat { family, .. } | Action::Dnat { family, .. } => Some(*family),
            _ => None,
        }
    }

    /// Parses the nft-like action text; `pools` names the configured pools.
    pub fn parse(s: &str, pools: &[&str]) -> Result<Action, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let flags = |from: usize| -> Result<(bool, bool), String> {
            let mut random = false;
            let mut persistent = false;
            for w in &words[from..] {
                match *w {
                    "random" | "fully-random" => random = true,
                    "persistent" => persistent = true,
                    other => {
                        return Err(format!("unknown NAT flag {other:?} (random, persistent)"))
                    }
                }
            }
            Ok((random, persistent))
        };
        match words.as_slice() {
            ["masquerade", ..] => {
                let (ports, rest) = match words.get(1..3) {
                    Some(["to", p]) => (Some(parse_port_range(p.trim_start_matches(':'))?), 3),
                    _ => (None, 1),
                };
                let (random, _) = flags(rest)?;
                Ok(Action::Masquerade { ports, random })
            }
            ["snat", "to", target, ..] => {
                let (addrs, ports) = split_addr_ports(target)?;
                let (a, b) = match addrs.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (addrs, addrs),
                };
                let (lo, fam) = Addr::from_ip(a.parse().map_err(|_| format!("bad address {a:?}"))?);
                let (hi, fam2) = Addr::from_ip(b.parse().map_err(|_| format!("bad address {b:?}"))?);
                if fam != fam2 || hi < lo {
                    return Err(format!("bad address range {addrs:?}"));
                }
                let ports = ports.map(parse_port_range).transpose()?;
                let (random, persistent) = flags(3)?;
                Ok(Action::Snat { family: fam, addrs: (lo, hi), ports, random, persistent })
            }
            ["dnat", "to", "pool", name] => {
                let pool = pools.iter().position(|p| p == name).ok_or_else(|| format!("no pool named {name:?}"))?;
                Ok(Action::DnatPool { pool })
            }
            ["dnat", "to", target] => {
                let (addr, port) = split_addr_ports(target)?;
                let (addr, family) = Addr::from_ip(addr.parse().map_err(|_| format!("bad address {addr:?}"))?);
                let port = port.map(|p| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))).transpose()?;
                Ok(Action::Dnat { family, addr, port })
            }
            _ => Err(format!("unknown NAT action {s:?} (masquerade | snat to ADDR[-ADDR][:PORT-PORT] | dnat to ADDR[:PORT] | dnat to pool NAME)")),
        }
    }
}

/// Splits `ADDR[:PORTS]`, with IPv6 addresses in brackets (`[2001:db8::1]:80`).
fn split_addr_ports(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (a, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in {s:?}"))?;
        return Ok((a, tail.strip_prefix(':')));
    }
    if s.matches(':').count() > 1 {
        return Ok((s, None)); // bare IPv6
    }
    Ok(match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    })
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.parse().map_err(|_| format!("bad port {a:?}"))?;
    let b: u16 = b.parse().map_err(|_| format!("bad port {b:?}"))?;
    if b < a {
        return Err(format!("bad port range {s:?}"));
    }
    Ok((a, b))
}

/// One NAT rule with its counters.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub m: Match,
    pub action: Action,
    /// RFC 4787 endpoint-independent mapping and filtering for UDP (source NAT
    /// rules): an inside endpoint keeps one outside port for every destination,
    /// and any outside host may send to it (see `Eim`).
    pub endpoint_independent: bool,
    /// Connections this rule translated.
    pub hits: SlotCounter,
    /// Connections dropped because no port (or id) was free.
    pub out_of_ports: SlotCounter,
}

impl Rule {
    /// Whether this is a source NAT rule for a new connection whose tuple
    /// after destination NAT is `t`, leaving by `out_port`.
    #[inline]
    pub fn postrouting_match(&self, t: &Tuple, in_port: u16, out_port: u16) -> bool {
        !self.action.is_dnat()
            && self.action.family().is_none_or(|f| f == t.family)
            && self.m.matches(t, in_port, Some(out_port))
    }

    pub fn new(name: String, m: Match, action: Action) -> Rule {
        Rule {
            name,
            m,
            action,
            endpoint_independent: false,
            hits: SlotCounter::default(),
            out_of_ports: SlotCounter::default(),
        }
    }
}

/// How long an endpoint-independent mapping outlives the last connection
/// through it by default (RFC 4787 REQ-5: at least 2 minutes, 5
/// recommended; `Timeouts::nat_eim_ms` sets it).
pub const EIM_TIMEOUT_MS: u64 = 300_000;

/// An inside endpoint: family, address, port, zone.
pub type Endpoint = (Family, Addr, u16, u16);

/// One endpoint-independent mapping: the outside address and port an inside
/// endpoint is seen as (kept in the table: `table::eim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub ext: Addr,
    pub ext_port: u16,
}

/// The NAT configuration: rules in order and backend pools.
#[derive(Debug, Default)]
pub struct Nat {
    pub rules: Vec<Rule>,
    pub pools: Vec<Pool>,
}

impl Nat {
    /// PREROUTING: applies the first matching destination NAT rule to a new
    /// connection. Returns whether it translated.
    pub fn prerouting(
        &self,
        g: &mut Guard<'_>,
        c: &mut Conn,
        in_port: u16,
        now_ms: u64,
        slot: CounterSlot,
    ) -> bool {
        let orig = c.tuples[0];
        // Endpoint-independent filtering: a new UDP flow to an outside endpoint
        // of a live mapping goes to its inside endpoint, from any outside host.
        if orig.proto == IPPROTO_UDP && self.has_eim() {
            if let Some((_, addr, port, zone)) =
                g.eim_inside(orig.family, orig.dst, orig.dst_port, now_ms)
            {
                if zone == orig.zone {
                    c.tuples[1].src = addr;
                    c.tuples[1].src_port = port;
                    // The flow holds the mapping like the inside endpoint's
                    // own connections (inbound refresh, RFC 4787 REQ-6).
                    c.status.set(Status::DST_NAT | Status::EIM);
                    return true;
                }
            }
        }
        for r in self.rules.iter().filter(|r| {
            r.action.is_dnat() && r.action.family().is_none_or(|f| f == c.tuples[0].family)
        }) {
            if !r.m.matches(&orig, in_port, None) {
                continue;
            }
            let (family, addr, port) = match &r.action {
                Action::Dnat { family, addr, port } => (*family, *addr, *port),
                Action::DnatPool { pool } => {
                    let Some(b) = self
                        .pools
                        .get(*pool)
                        .and_then(|p| p.pick(orig.hash(0x1b_9001)))
                    else {
                        // No healthy backend: the rule does not apply.
                        continue;
                    };
                    (b.family, b.addr, b.port)
                }
                _ => continue,
            };
            if family != orig.family {
                continue;
            }
            c.tuples[1].src = addr;
            if let Some(p) = port.filter(|_| has_ports(orig.proto)) {
                c.tuples[1].src_port = p;
            }
            c.status.set(Status::DST_NAT);
            r.hits.add(slot, 1);
            return true;
        }
        false
    }

    /// POSTROUTING: the index in `rules` of the first source NAT rule
    /// matching a new connection (on its tuple after destination NAT)
    /// leaving by `out_port`.
    pub fn postrouting_index(&self, c: &Conn, in_port: u16, out_port: u16) -> Option<usize> {
        let mut after_dnat = c.tuples[1].invert()?;
        // In the original direction's zone (a directional zone puts the
        // reply in another).
        after_dnat.zone = c.tuples[0].zone;
        self.rules
            .iter()
            .position(|r| r.postrouting_match(&after_dnat, in_port, out_port))
    }

    /// Whether a rule makes endpoint-independent mappings.
    pub fn has_eim(&self) -> bool {
        self.rules.iter().any(|r| r.endpoint_independent)
    }

    pub fn pool_by_name(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions() {
        assert_eq!(
            Action::parse("masquerade", &[]).unwrap(),
            Action::Masquerade {
                ports: None,
                random: false
            }
        );
        assert_eq!(
            Action::parse("masquerade to :2000-2010 random", &[]).unwrap(),
            Action::Masquerade {
                ports: Some((2000, 2010)),
                random: true
            }
        );
        let a = Action::parse("snat to 203.0.113.1-203.0.113.4:1024-2047 persistent", &[]).unwrap();
        assert_eq!(
            a,
            Action::Snat {
                family: Family::V4,
                addrs: (
                    Addr::from_v4([203, 0, 113, 1]),
                    Addr::from_v4([203, 0, 113, 4])
                ),
                ports: Some((1024, 2047)),
                random: false,
                persistent: true
            }
        );
        assert!(matches!(
            Action::parse("dnat to [2001:db8:2::10]:8080", &[]).unwrap(),
            Action::Dnat {
                family: Family::V6,
                port: Some(8080),
                ..
            }
        ));
        assert!(matches!(
            Action::parse("dnat to 198.51.100.10", &[]).unwrap(),
            Action::Dnat { port: None, .. }
        ));
        assert_eq!(
            Action::parse("dnat to pool web", &["db", "web"]).unwrap(),
            Action::DnatPool { pool: 1 }
        );
        assert!(Action::parse("dnat to pool nope", &["web"]).is_err());
        assert!(Action::parse("snat to 203.0.113.9-203.0.113.1", &[]).is_err());
        assert!(Action::parse("teleport", &[]).is_err());
    }

    #[test]
    fn prefixes() {
        let p = Prefix::parse("192.0.2.0/25").unwrap();
        assert!(p.contains(Family::V4, &Addr::from_v4([192, 0, 2, 127])));
        assert!(!p.contains(Family::V4, &Addr::from_v4([192, 0, 2, 128])));
        assert!(!p.contains(Family::V6, &Addr::from_v4([192, 0, 2, 1])));
        assert!(Prefix::parse("192.0.2.0/33").is_err());
        let p6 = Prefix::parse("2001:db8:1::/64").unwrap();
        assert!(p6.contains(
            Family::V6,
            &Addr(
                "2001:db8:1::5"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
            )
        ));
    }
}
