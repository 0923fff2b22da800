//! Connections printed exactly as `conntrack -L -o extended` prints them
//! (libnetfilter_conntrack's default format; `packets=` / `bytes=` only
//! with accounting on, as the kernel's).

use std::fmt::Write;

use crate::conn::{Listed, Status};
use crate::tuple::{
    Family, Tuple, IPPROTO_DCCP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

/// The name conntrack prints for an L4 protocol.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        IPPROTO_SCTP => "sctp",
        IPPROTO_GRE => "gre",
        IPPROTO_UDPLITE => "udplite",
        IPPROTO_DCCP => "dccp",
        _ => "unknown",
    }
}

fn write_tuple(out: &mut String, t: &Tuple) {
    let _ = write!(
        out,
        "src={} dst={} ",
        t.src.to_ip(t.family),
        t.dst.to_ip(t.family)
    );
    match t.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP | IPPROTO_DCCP => {
            let _ = write!(out, "sport={} dport={} ", t.src_port, t.dst_port);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let _ = write!(
                out,
                "type={} code={} id={} ",
                t.icmp_type(),
                t.icmp_code(),
                t.src_port
            );
        }
        IPPROTO_GRE => {
            let _ = write!(out, "srckey=0x{:x} dstkey=0x{:x} ", t.src_port, t.dst_port);
        }
        _ => {}
    }
}

/// One `conntrack -L -o extended` line for `c` at time `now_ms` (timeout printed
/// as whole seconds left, as the kernel does).
pub fn format_conn(c: &Listed, now_ms: u64) -> String {
    let mut out = String::with_capacity(256);
    let o = &c.tuples[0];
    let (l3, l3num) = match o.family {
        Family::V4 => ("ipv4", 2),
        Family::V6 => ("ipv6", 10),
    };
    let _ = write!(
        out,
        "{l3:<8} {l3num} {:<8} {} ",
        proto_name(o.proto),
        o.proto
    );
    let _ = write!(out, "{} ", c.deadline_ms.saturating_sub(now_ms) / 1000);
    if let Some(state) = c.state_name() {
        let _ = write!(out, "{state} ");
    }
    write_tuple(&mut out, o);
    if let Some(e) = &c.ext {
        let _ = write!(
            out,
            "packets={} bytes={} ",
            e.counters[0].packets, e.counters[0].bytes
        );
    }
    if !c.status.has(Status::SEEN_REPLY) {
        out.push_str("[UNREPLIED] ");
    }
    write_tuple(&mut out, &c.tuples[1]);
    if let Some(e) = &c.ext {
        let _ = write!(
            out,
            "packets={} bytes={} ",
            e.counters[1].packets, e.counters[1].bytes
        );
    }
    if c.status.has(Status::ASSURED) {
        out.push_str("[ASSURED] ");
    }
    let _ = write!(out, "mark={} ", c.mark);
    if o.zone != 0 {
        let _ = write!(out, "zone={} ", o.zone);
    }
    if let Some(h) = c.helper.name() {
        let _ = write!(out, "helper={h} ");
    }
    out.push_str("use=1");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Conn, Ext};
    use crate::tuple::Addr;

    #[test]
    fn tcp_line_matches_conntrack() {
        let t = Tuple {
            src: Addr::from_v4([192, 0, 2, 1]),
            dst: Addr::from_v4([198, 51, 100, 2]),
            src_port: 40000,
            dst_port: 80,
            proto: 6,
            family: Family::V4,
            zone: 0,
        };
        let mut c = Conn {
            tuples: [t, t.invert().unwrap()],
            deadline_ms: 432_000_500,
            ..Default::default()
        };
        c.proto = crate::conn::ProtoState::Tcp(crate::proto::tcp::TcpState {
            state: crate::proto::tcp::TcpConntrack::Established,
            ..Default::default()
        });
        c.status.set(Status::SEEN_REPLY | Status::ASSURED);
        let mut ext = Ext::default();
        ext.counters[0].packets = 3;
        ext.counters[0].bytes = 180;
        assert_eq!(
            format_conn(
                &Listed {
                    conn: c,
                    ext: Some(ext)
                },
                1000
            ),
            "ipv4     2 tcp      6 431999 ESTABLISHED src=192.0.2.1 dst=198.51.100.2 sport=40000 dport=80 packets=3 bytes=180 src=198.51.100.2 dst=192.0.2.1 sport=80 dport=40000 packets=0 bytes=0 [ASSURED] mark=0 use=1"
        );
        // Without accounting, as the kernel prints it with nf_conntrack_acct = 0.
        assert_eq!(
            format_conn(&Listed { conn: c, ext: None }, 1000),
            "ipv4     2 tcp      6 431999 ESTABLISHED src=192.0.2.1 dst=198.51.100.2 sport=40000 dport=80 src=198.51.100.2 dst=192.0.2.1 sport=80 dport=40000 [ASSURED] mark=0 use=1"
        );
    }

    #[test]
    fn icmpv6_unreplied_with_zone() {
        let t = Tuple {
            src: Addr(
                "2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            ),
            dst: Addr(
                "2001:db8::2"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            ),
            src_port: 7,
            dst_port: 128 << 8,
            proto: 58,
            family: Family::V6,
            zone: 5,
        };
        let c = Conn {
            tuples: [t, t.invert().unwrap()],
            deadline_ms: 30_000,
            ..Default::default()
        };
        assert_eq!(
            format_conn(
                &Listed {
                    conn: c,
                    ext: Some(Ext::default())
                },
                0
            ),
            "ipv6     10 icmpv6   58 30 src=2001:db8::1 dst=2001:db8::2 type=128 code=0 id=7 packets=0 bytes=0 [UNREPLIED] src=2001:db8::2 dst=2001:db8::1 type=129 code=0 id=7 packets=0 bytes=0 mark=0 zone=5 use=1"
        );
    }
}
