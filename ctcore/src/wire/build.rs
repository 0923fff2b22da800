//! Frame construction for tests, benchmarks and traffic generators: Ethernet +
//! IPv4/IPv6 + TCP/UDP/ICMP with correct lengths and checksums.

use crate::checksum::{checksum, l4_checksum};
use crate::tuple::{Addr, Family, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

/// What goes above IP.
#[derive(Debug, Clone, Copy)]
pub enum L4Spec<'a> {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        payload: &'a [u8],
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
    },
    /// ICMP / ICMPv6 echo-style message: type, code, id, sequence.
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
        seq: u16,
        payload: &'a [u8],
    },
}

/// Builds an Ethernet frame carrying `l4` from `src` to `dst` (same family).
pub fn frame(family: Family, src: Addr, dst: Addr, ttl: u8, l4: L4Spec<'_>) -> Vec<u8> {
    let (proto, mut seg) = match l4 {
        L4Spec::Tcp {
            src_port,
            dst_port,
            seq,
            ack,
            flags,
            window,
            payload,
        } => {
            let mut s = Vec::with_capacity(20 + payload.len());
            s.extend_from_slice(&src_port.to_be_bytes());
            s.extend_from_slice(&dst_port.to_be_bytes());
            s.extend_from_slice(&seq.to_be_bytes());
            s.extend_from_slice(&ack.to_be_bytes());
            s.push(5 << 4);
            s.push(flags);
            s.extend_from_slice(&window.to_be_bytes());
            s.extend_from_slice(&[0, 0, 0, 0]);
            s.extend_from_slice(payload);
            (IPPROTO_TCP, s)
        }
        L4Spec::Udp {
            src_port,
            dst_port,
            payload,
        } => {
            let mut s = Vec::with_capacity(8 + payload.len());
            s.extend_from_slice(&src_port.to_be_bytes());
            s.extend_from_slice(&dst_port.to_be_bytes());
            s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(payload);
            (IPPROTO_UDP, s)
        }
        L4Spec::Icmp {
            icmp_type,
            code,
            id,
            seq,
            payload,
        } => {
            let mut s = vec![icmp_type, code, 0, 0];
            s.extend_from_slice(&id.to_be_bytes());
            s.extend_from_slice(&seq.to_be_bytes());
            s.extend_from_slice(payload);
            (
                if family == Family::V4 {
                    IPPROTO_ICMP
                } else {
                    IPPROTO_ICMPV6
                },
                s,
            )
        }
    };
    let csum_at = match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 2,
    };
    let c = if proto == IPPROTO_ICMP {
        checksum(&seg)
    } else {
        l4_checksum(family, &src, &dst, proto, &seg)
    };
    let c = if proto == IPPROTO_UDP && c == 0 {
        0xffff
    } else {
        c
    };
    seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + seg.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    match family {
        Family::V4 => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + seg.len()) as u16;
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = ttl;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&src.0[..4]);
            ip[16..20].copy_from_slice(&dst.0[..4]);
            let hc = checksum(&ip);
            ip[10..12].copy_from_slice(&hc.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        Family::V6 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            f.push(proto);
            f.push(ttl);
            f.extend_from_slice(&src.0);
            f.extend_from_slice(&dst.0);
        }
    }
    f.extend_from_slice(&seg);
    // Pad to the Ethernet minimum, as a NIC would.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse, L4};

    #[test]
    fn built_frames_parse_with_good_checksums() {
        let s = Addr::from_v4([192, 0, 2, 1]);
        let d = Addr::from_v4([198, 51, 100, 1]);
        for l4 in [
            L4Spec::Udp {
                src_port: 1,
                dst_port: 2,
                payload: b"hi",
            },
            L4Spec::Tcp {
                src_port: 1,
                dst_port: 2,
                seq: 5,
                ack: 0,
                flags: 2,
                window: 100,
                payload: b"",
            },
            L4Spec::Icmp {
                icmp_type: 8,
                code: 0,
                id: 9,
                seq: 1,
                payload: b"x",
            },
        ] {
            let f = frame(Family::V4, s, d, 64, l4);
            let p = parse(&f).unwrap();
            assert!(crate::checksum::l4_checksum_ok(&f, &p));
            assert!(!matches!(p.l4, L4::None | L4::Other));
        }
        let s6 = Addr(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let d6 = Addr(
            "2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let f = frame(
            Family::V6,
            s6,
            d6,
            64,
            L4Spec::Icmp {
                icmp_type: 128,
                code: 0,
                id: 9,
                seq: 1,
                payload: b"x",
            },
        );
        let p = parse(&f).unwrap();
        assert!(crate::checksum::l4_checksum_ok(&f, &p));
    }
}
