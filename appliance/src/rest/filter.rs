//! `conntrack -L / -D / -E` filters as query parameters, and connections as JSON.
//!
//! Parameters (all optional, all must hold): `family` (ipv4 | ipv6), `proto`
//! (name or number), the original direction's `src` / `dst` (address or
//! prefix; also `orig-src` / `orig-dst`), `sport` / `dport` (also
//! `orig-port-src` / `orig-port-dst`), the reply direction's `reply-src`,
//! `reply-dst`, `reply-port-src`, `reply-port-dst`, `state` (the protocol state
//! `conntrack -L` prints, e.g. ESTABLISHED), `zone`, `mark` (`N` or `N/MASK`),
//! `status` (comma separated: ASSURED, SEEN_REPLY, UNREPLIED, CONFIRMED,
//! SRC_NAT, DST_NAT, ...).

use ctcore::conn::{Conn, Listed, Status};
use ctcore::listing::{format_conn, proto_name};
use ctcore::nat::Prefix;
use ctcore::tuple::{Family, Tuple, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6};
use serde_json::{json, Value};

/// The status bits by the names `conntrack` uses.
const STATUS_NAMES: [(&str, u32); 15] = [
    ("EXPECTED", Status::EXPECTED),
    ("SEEN_REPLY", Status::SEEN_REPLY),
    ("ASSURED", Status::ASSURED),
    ("CONFIRMED", Status::CONFIRMED),
    ("SRC_NAT", Status::SRC_NAT),
    ("DST_NAT", Status::DST_NAT),
    ("SEQ_ADJUST", Status::SEQ_ADJUST),
    ("SRC_NAT_DONE", Status::SRC_NAT_DONE),
    ("DST_NAT_DONE", Status::DST_NAT_DONE),
    ("DYING", Status::DYING),
    ("FIXED_TIMEOUT", Status::FIXED_TIMEOUT),
    ("TEMPLATE", Status::TEMPLATE),
    ("NAT_CLASH", Status::NAT_CLASH),
    ("HELPER", Status::HELPER),
    ("OFFLOAD", Status::OFFLOAD),
];

/// The filter parameter names, for help texts and clients.
pub const PARAMS: [&str; 17] = [
    "family",
    "proto",
    "src",
    "dst",
    "sport",
    "dport",
    "orig-src",
    "orig-dst",
    "orig-port-src",
    "orig-port-dst",
    "reply-src",
    "reply-dst",
    "reply-port-src",
    "reply-port-dst",
    "state",
    "zone",
    "mark",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Side {
    src: Option<Prefix>,
    dst: Option<Prefix>,
    sport: Option<u16>,
    dport: Option<u16>,
}

impl Side {
    fn matches(&self, t: &Tuple) -> bool {
        self.src.is_none_or(|p| p.contains(t.family, &t.src))
            && self.dst.is_none_or(|p| p.contains(t.family, &t.dst))
            && self
                .sport
                .is_none_or(|p| has_ports(t.proto) && p == t.src_port)
            && self
                .dport
                .is_none_or(|p| has_ports(t.proto) && p == t.dst_port)
    }
}

fn has_ports(proto: u8) -> bool {
    ctcore::nat::has_ports(proto)
}

/// A conntrack filter; the default matches every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    family: Option<Family>,
    proto: Option<u8>,
    sides: [Side; 2],
    state: Option<String>,
    zone: Option<u16>,
    mark: Option<(u32, u32)>,
    /// (bit, wanted set).
    status: Vec<(u32, bool)>,
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{key}={v:?}: not a number in range"))
}

fn u32_any_base(key: &str, v: &str) -> Result<u32, String> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).map_err(|_| format!("{key}={v:?}: not a number")),
        None => number(key, v),
    }
}

/// The protocol number for a name conntrack accepts, or a number.
pub fn proto_number(v: &str) -> Option<u8> {
    Some(match v.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => IPPROTO_ICMP,
        "icmpv6" => IPPROTO_ICMPV6,
        "sctp" => 132,
        "gre" => IPPROTO_GRE,
        "udplite" => 136,
        "dccp" => 33,
        n => n.parse().ok()?,
    })
}

impl Filter {
    /// Parses query pairs. Keys in `extra` are returned (for the caller's
    /// own parameters such as `limit`); any other unknown key is an error.
    pub fn parse(
        pairs: &[(String, String)],
        extra: &[&str],
    ) -> Result<(Filter, Vec<(String, String)>), String> {
        let mut f = Filter::default();
        let mut rest = Vec::new();
        for (k, v) in pairs {
            let v = v.trim();
            let prefix = || Prefix::parse(v).map_err(|e| format!("{k}={v:?}: {e}"));
            match k.as_str() {
                "family" => {
                    f.family = Some(match v {
                        "ipv4" | "4" => Family::V4,
                        "ipv6" | "6" => Family::V6,
                        _ => return Err(format!("family={v:?}: use ipv4 or ipv6")),
                    })
                }
                "proto" => {
                    f.proto = Some(proto_number(v).ok_or_else(|| {
                        format!("proto={v:?}: use tcp, udp, icmp, icmpv6, sctp, gre, udplite, dccp or a number")
                    })?)
                }
                "src" | "orig-src" => f.sides[0].src = Some(prefix()?),
                "dst" | "orig-dst" => f.sides[0].dst = Some(prefix()?),
                "sport" | "orig-port-src" => f.sides[0].sport = Some(number(k, v)?),
                "dport" | "orig-port-dst" => f.sides[0].dport = Some(number(k, v)?),
                "reply-src" => f.sides[1].src = Some(prefix()?),
                "reply-dst" => f.sides[1].dst = Some(prefix()?),
                "reply-port-src" => f.sides[1].sport = Some(number(k, v)?),
                "reply-port-dst" => f.sides[1].dport = Some(number(k, v)?),
                "state" => f.state = Some(v.to_ascii_uppercase()),
                "zone" => f.zone = Some(number(k, v)?),
                "mark" => {
                    f.mark = Some(match v.split_once('/') {
                        Some((m, mask)) => (u32_any_base(k, m)?, u32_any_base(k, mask)?),
                        None => (u32_any_base(k, v)?, u32::MAX),
                    })
                }
                "status" => {
                    for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let name = name.to_ascii_uppercase();
                        if name == "UNREPLIED" {
                            f.status.push((Status::SEEN_REPLY, false));
                            continue;
                        }
                        let bit = STATUS_NAMES
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map(|(_, b)| *b)
                            .ok_or_else(|| {
                                format!("status={name:?}: use ASSURED, SEEN_REPLY, UNREPLIED, CONFIRMED, SRC_NAT, DST_NAT, ...")
                            })?;
                        f.status.push((bit, true));
                    }
                }
                other if extra.contains(&other) => rest.push((k.clone(), v.to_owned())),
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (filters: {}, status{})",
                        PARAMS.join(", "),
                        if extra.is_empty() {
                            String::new()
                        } else {
                            format!("; also {}", extra.join(", "))
                        }
                    ))
                }
            }
        }
        Ok((f, rest))
    }

    /// True when no parameter was given.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, c: &Conn) -> bool {
        let o = &c.tuples[0];
        self.family.is_none_or(|f| f == o.family)
            && self.proto.is_none_or(|p| p == o.proto)
            && self.sides[0].matches(&c.tuples[0])
            && self.sides[1].matches(&c.tuples[1])
            && self
                .state
                .as_deref()
                .is_none_or(|s| c.state_name() == Some(s))
            && self.zone.is_none_or(|z| z == o.zone)
            && self.mark.is_none_or(|(m, mask)| c.mark & mask == m & mask)
            && self
                .status
                .iter()
                .all(|&(bit, want)| c.status.has(bit) == want)
    }
}

fn tuple_json(t: &Tuple) -> Value {
    let mut v = json!({
        "src": t.src.to_ip(t.family).to_string(),
        "dst": t.dst.to_ip(t.family).to_string(),
    });
    if has_ports(t.proto) {
        v["sport"] = json!(t.src_port);
        v["dport"] = json!(t.dst_port);
    } else if t.is_icmp() {
        v["type"] = json!(t.icmp_type());
        v["code"] = json!(t.icmp_code());
        v["id"] = json!(t.src_port);
    } else if t.proto == IPPROTO_GRE {
        v["srckey"] = json!(t.src_port);
        v["dstkey"] = json!(t.dst_port);
    }
    v
}

/// The status bits' names (and UNREPLIED when no reply was seen).
pub fn status_names(s: Status) -> Vec<&'static str> {
    let mut v: Vec<&str> = STATUS_NAMES
        .iter()
        .filter(|(_, b)| s.has(*b))
        .map(|(n, _)| *n)
        .collect();
    if !s.has(Status::SEEN_REPLY) {
        v.push("UNREPLIED");
    }
    v
}

/// A connection as JSON, with its `conntrack -L -o extended` line in `line`.
/// Counters and age are null when accounting is off.
pub fn conn_json(c: &Listed, now_ms: u64) -> Value {
    let o = &c.tuples[0];
    let ext = c.ext.as_ref();
    let count = |dir: usize, bytes: bool| {
        ext.map(|e| {
            let ctr = &e.counters[dir];
            if bytes {
                ctr.bytes
            } else {
                ctr.packets
            }
        })
    };
    json!({
        "id": c.id,
        "family": match o.family { Family::V4 => "ipv4", Family::V6 => "ipv6" },
        "proto": proto_name(o.proto),
        "proto_num": o.proto,
        "state": c.state_name(),
        "timeout_s": c.deadline_ms.saturating_sub(now_ms) / 1000,
        "age_s": ext.map(|e| now_ms.saturating_sub(e.start_ms) / 1000),
        "orig": tuple_json(&c.tuples[0]),
        "reply": tuple_json(&c.tuples[1]),
        "orig_packets": count(0, false),
        "orig_bytes": count(0, true),
        "reply_packets": count(1, false),
        "reply_bytes": count(1, true),
        "status": status_names(c.status),
        "mark": c.mark,
        "zone": o.zone,
        "helper": c.helper.name(),
        "line": format_conn(c, now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctcore::tuple::Addr;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn tcp_conn() -> Conn {
        let t = Tuple {
            src: Addr::from_v4([192, 0, 2, 2]),
            dst: Addr::from_v4([198, 51, 100, 2]),
            src_port: 40000,
            dst_port: 80,
            proto: 6,
            family: Family::V4,
            zone: 0,
        };
        let mut r = t.invert().unwrap();
        r.dst = Addr::from_v4([198, 51, 100, 1]);
        r.dst_port = 61000;
        let mut c = Conn {
            tuples: [t, r],
            mark: 0x12,
            ..Conn::default()
        };
        c.proto = ctcore::conn::ProtoState::Tcp(ctcore::proto::tcp::TcpState {
            state: ctcore::proto::tcp::TcpConntrack::Established,
            ..Default::default()
        });
        c.status
            .set(Status::SEEN_REPLY | Status::ASSURED | Status::SRC_NAT);
        c
    }

    fn check(q: &[(&str, &str)]) -> bool {
        let (f, _) = Filter::parse(&pairs(q), &[]).unwrap();
        f.matches(&tcp_conn())
    }

    #[test]
    fn filters_select_like_conntrack() {
        assert!(check(&[]));
        assert!(check(&[
            ("proto", "tcp"),
            ("dport", "80"),
            ("src", "192.0.2.0/24")
        ]));
        assert!(!check(&[("proto", "udp")]));
        assert!(!check(&[("dport", "81")]));
        assert!(check(&[
            ("reply-dst", "198.51.100.1"),
            ("reply-port-dst", "61000")
        ]));
        assert!(!check(&[("reply-dst", "198.51.100.2")]));
        assert!(check(&[
            ("state", "established"),
            ("status", "ASSURED,SRC_NAT")
        ]));
        assert!(!check(&[("status", "UNREPLIED")]));
        assert!(!check(&[("state", "TIME_WAIT")]));
        assert!(check(&[("mark", "0x10/0xf0")]));
        assert!(!check(&[("mark", "0x10")]));
        assert!(!check(&[("family", "ipv6")]));
        assert!(!check(&[("zone", "1")]));
    }

    #[test]
    fn bad_parameters_are_errors() {
        for q in [
            [("src", "not-an-address")],
            [("sport", "70000")],
            [("proto", "nope")],
            [("status", "SHINY")],
            [("colour", "red")],
        ] {
            assert!(Filter::parse(&pairs(&q), &[]).is_err(), "{q:?}");
        }
        let (f, rest) = Filter::parse(&pairs(&[("limit", "5")]), &["limit"]).unwrap();
        assert!(f.is_empty());
        assert_eq!(rest, pairs(&[("limit", "5")]));
    }

    #[test]
    fn json_carries_the_listing_line() {
        let v = conn_json(
            &Listed {
                conn: tcp_conn(),
                ext: None,
            },
            0,
        );
        assert_eq!(v["orig"]["dport"], 80);
        assert!(v["orig_packets"].is_null() && v["age_s"].is_null());
        assert_eq!(v["reply"]["dst"], "198.51.100.1");
        assert_eq!(v["state"], "ESTABLISHED");
        assert!(v["line"]
            .as_str()
            .unwrap()
            .starts_with("ipv4     2 tcp      6 0 ESTABLISHED src=192.0.2.2"));
    }
}
