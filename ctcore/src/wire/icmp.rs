//! ICMP (RFC 792) header, and the datagram quoted in ICMP / ICMPv6 errors.

use super::{be16, ipv4, ipv6, Family, IcmpInfo, InnerTuple, ParseError, L4};
use crate::tuple::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

/// The ICMP header (`struct icmphdr`), which is also all of ICMPv6's that the
/// kernel reads; an error's quoted datagram starts right after it.
pub const HEADER_LEN: usize = 8;
/// Bytes of the quoted L4 header needed for its ports (RFC 792 guarantees 8).
pub const QUOTED_L4_LEN: usize = 8;

/// Field offsets of the ICMP / ICMPv6 header.
pub mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// Echo / timestamp / information / address-mask identifier.
    pub const ID: usize = 4;
    pub const SEQ: usize = 6;
    pub const QUOTED: usize = 8;
}

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACH: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROB: u8 = 12;

/// Types whose bytes 4..6 are an identifier: echo, timestamp, information and
/// address-mask requests and replies.
pub fn has_id(icmp_type: u8) -> bool {
    matches!(icmp_type, 0 | 8 | 13..=18)
}

/// The kernel's `icmp_is_err`.
pub fn is_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        DEST_UNREACH | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROB
    )
}

/// Parses the ICMP message at `frame[l4_offset..l3_end]`: 8 bytes are needed
/// (`icmp_error`'s "short packet"); errors also get their quoted datagram.
pub(crate) fn parse_v4(frame: &[u8], l4_offset: usize, l3_end: usize) -> Result<L4, ParseError> {
    let msg = &frame[l4_offset..l3_end];
    if msg.len() < HEADER_LEN {
        return Err(ParseError::TruncatedL4);
    }
    let icmp_type = msg[field::TYPE];
    let is_error = is_error(icmp_type);
    Ok(L4::Icmp(IcmpInfo {
        icmp_type,
        code: msg[field::CODE],
        id: if has_id(icmp_type) {
            be16(msg, field::ID)
        } else {
            0
        },
        inner: if is_error {
            quoted_v4(frame, l4_offset + field::QUOTED, l3_end)
        } else {
            None
        },
        is_error,
    }))
}

/// The tuple of the IPv4 datagram quoted at `frame[off..end]`. Like the
/// kernel's `icmp_error_message` (via `ipv4_get_l4proto`) the quoted total
/// length and checksums are not looked at; the quoted header must be whole,
/// not a non-first fragment, and port-carrying protocols need 8 L4 bytes.
pub(crate) fn quoted_v4(frame: &[u8], off: usize, end: usize) -> Option<InnerTuple> {
    let q = frame.get(off..end)?;
    let ip = ipv4::Ipv4Packet::new_checked(q).ok()?;
    let header_len = ip.header_len();
    if ip.version() != 4 || header_len < ipv4::MIN_HEADER_LEN || header_len > q.len() {
        return None;
    }
    if ip.frag_offset() != 0 {
        return None;
    }
    let proto = ip.protocol();
    let l4_offset = off + header_len;
    let (src_port, dst_port) = quoted_ports(Family::V4, proto, &frame[l4_offset..end])?;
    Some(InnerTuple {
        family: Family::V4,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        proto,
        src_port,
        dst_port,
        l3_offset: off as u16,
        l4_offset: l4_offset as u16,
    })
}

/// The tuple of the IPv6 datagram quoted at `frame[off..end]`: the fixed header,
/// the extension headers (walked within the bytes present; the quoted payload
/// length is not looked at), then the quoted L4 header as for IPv4. A quoted
/// non-first fragment or No Next Header gives no tuple.
pub(crate) fn quoted_v6(frame: &[u8], off: usize, end: usize) -> Option<InnerTuple> {
    let q = frame.get(off..end)?;
    let ip = ipv6::Ipv6Packet::new_checked(q).ok()?;
    if ip.version() != 6 {
        return None;
    }
    let w = ipv6::walk_ext(q).ok()?;
    // ipv6_skip_exthdr fails on No Next Header: the kernel gets no tuple.
    if w.frag.is_some_and(|f| f.offset != 0) || w.proto == ipv6::NEXTHDR_NONE {
        return None;
    }
    let l4_offset = off + w.l4_rel;
    let (src_port, dst_port) = quoted_ports(Family::V6, w.proto, &frame[l4_offset..end])?;
    Some(InnerTuple {
        family: Family::V6,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        proto: w.proto,
        src_port,
        dst_port,
        l3_offset: off as u16,
        l4_offset: l4_offset as u16,
    })
}

/// Ports of a quoted L4 header: TCP/UDP/UDP-Lite/SCTP ports; for ICMP
/// (of the same family) the id and `(type << 8) | code`. `None` if those 8 bytes
/// are not there. Other protocols have no ports and need no bytes (the
/// kernel's generic tracker).
fn quoted_ports(family: Family, proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    match (family, proto) {
        (_, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP) => {
            let h = l4.get(..QUOTED_L4_LEN)?;
            Some((be16(h, 0), be16(h, 2)))
        }
        (Family::V4, IPPROTO_ICMP) => {
            let h = l4.get(..QUOTED_L4_LEN)?;
            let id = if has_id(h[field::TYPE]) {
                be16(h, field::ID)
            } else {
                0
            };
            Some((id, be16(h, field::TYPE)))
        }
        (Family::V6, IPPROTO_ICMPV6) => {
            let h = l4.get(..QUOTED_L4_LEN)?;
            let id = if super::icmpv6::has_id(h[field::TYPE]) {
                be16(h, field::ID)
            } else {
                0
            };
            Some((id, be16(h, field::TYPE)))
        }
        _ => Some((0, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::tests::header;
    use crate::wire::Addr;

    fn frame_with(icmp: &[u8]) -> Vec<u8> {
        let mut f = header((20 + icmp.len()) as u16, 1, 0, &[]);
        f.extend_from_slice(icmp);
        f
    }

    #[test]
    fn echo() {
        let f = frame_with(&[8, 0, 0xf7, 0xfe, 0x12, 0x34, 0, 1, b'h', b'i']);
        let Ok(L4::Icmp(i)) = parse_v4(&f, 20, f.len()) else {
            panic!()
        };
        assert_eq!(
            i,
            IcmpInfo {
                icmp_type: 8,
                code: 0,
                id: 0x1234,
                inner: None,
                is_error: false
            }
        );
        assert_eq!(parse_v4(&f, 20, 27), Err(ParseError::TruncatedL4));
    }

    #[test]
    fn id_only_for_query_types() {
        for (t, id) in [
            (0u8, 7u16),
            (13, 7),
            (17, 7),
            (18, 7),
            (9, 0),
            (19, 0),
            (3, 0),
        ] {
            let f = frame_with(&[t, 0, 0, 0, 0, 7, 0, 0]);
            let Ok(L4::Icmp(i)) = parse_v4(&f, 20, f.len()) else {
                panic!()
            };
            assert_eq!(i.id, id, "type {t}");
        }
    }

    #[test]
    fn port_unreachable_quoting_udp() {
        let mut quote = header(40, 17, 0, &[]);
        quote.extend_from_slice(&[0xcf, 0x84, 0x00, 0x35, 0x00, 0x14, 0xab, 0xcd]);
        let mut msg = vec![3, 3, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&quote);
        let f = frame_with(&msg);
        let Ok(L4::Icmp(i)) = parse_v4(&f, 20, f.len()) else {
            panic!()
        };
        assert!(i.is_error);
        let inner = i.inner.unwrap();
        assert_eq!(
            (inner.proto, inner.src_port, inner.dst_port),
            (17, 53124, 53)
        );
        assert_eq!(inner.src, Addr::from_v4([192, 0, 2, 1]));
        assert_eq!(inner.dst, Addr::from_v4([198, 51, 100, 2]));
        assert_eq!((inner.l3_offset, inner.l4_offset), (28, 48));

        // Only 7 bytes of the quoted UDP header: an error without a tuple.
        let f = frame_with(&msg[..msg.len() - 1]);
        let Ok(L4::Icmp(i)) = parse_v4(&f, 20, f.len()) else {
            panic!()
        };
        assert!(i.is_error && i.inner.is_none());
    }

    #[test]
    fn quoted_echo_and_bare_header() {
        let mut quote = header(84, 1, 0, &[]);
        quote.extend_from_slice(&[8, 0, 0, 0, 0xbe, 0xef, 0, 9]);
        let mut msg = vec![11, 0, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&quote);
        let f = frame_with(&msg);
        let Ok(L4::Icmp(i)) = parse_v4(&f, 20, f.len()) else {
            panic!()
        };
        let inner = i.inner.unwrap();
        assert_eq!(
            (inner.proto, inner.src_port, inner.dst_port),
            (1, 0xbeef, 0x0800)
        );

        // A quoted GRE header without L4 bytes still yields a portless tuple.
        let mut msg = vec![3, 0, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&header(1000, 47, 0, &[]));
        let f = frame_with(&msg);
        let Ok(L4::Icmp(i)) = parse_v4(&f, 20, f.len()) else {
            panic!()
        };
        let inner = i.inner.unwrap();
        assert_eq!((inner.proto, inner.src_port, inner.dst_port), (47, 0, 0));
    }

    #[test]
    fn quote_that_is_not_usable() {
        // A quoted non-first fragment, a quoted header cut short, a bad version.
        for quote in [
            header(40, 6, 10, &[]),
            header(40, 6, 0, &[])[..19].to_vec(),
            {
                let mut q = header(40, 6, 0, &[]);
                q[0] = 0x65;
                q
            },
        ] {
            let mut msg = vec![3, 1, 0, 0, 0, 0, 0, 0];
            msg.extend_from_slice(&quote);
            msg.extend_from_slice(&[0; 8]);
            let f = frame_with(&msg);
            let Ok(L4::Icmp(i)) = parse_v4(&f, 20, f.len()) else {
                panic!()
            };
            assert!(i.is_error && i.inner.is_none());
        }
    }
}
