//! ICMPv6 (RFC 4443) header.

use super::{be16, icmp, IcmpInfo, ParseError, L4};

pub const DEST_UNREACH: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAMETER_PROB: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const NODE_INFO_QUERY: u8 = 139;
pub const NODE_INFO_RESPONSE: u8 = 140;

/// Types whose bytes 4..6 are an identifier (echo and node information, the
/// ones `icmpv6_pkt_to_tuple` can invert).
pub fn has_id(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ECHO_REQUEST | ECHO_REPLY | NODE_INFO_QUERY | NODE_INFO_RESPONSE
    )
}

/// RFC 4443 2.1: types below 128 are errors.
pub fn is_error(icmp_type: u8) -> bool {
    icmp_type < 128
}

/// Parses the ICMPv6 message at `frame[l4_offset..l3_end]` (8 bytes needed);
/// errors also get their quoted IPv6 datagram.
pub(crate) fn parse(frame: &[u8], l4_offset: usize, l3_end: usize) -> Result<L4, ParseError> {
    let msg = &frame[l4_offset..l3_end];
    if msg.len() < icmp::HEADER_LEN {
        return Err(ParseError::TruncatedL4);
    }
    let icmp_type = msg[icmp::field::TYPE];
    let is_error = is_error(icmp_type);
    Ok(L4::Icmp(IcmpInfo {
        icmp_type,
        code: msg[icmp::field::CODE],
        id: if has_id(icmp_type) {
            be16(msg, icmp::field::ID)
        } else {
            0
        },
        inner: if is_error {
            icmp::quoted_v6(frame, l4_offset + icmp::field::QUOTED, l3_end)
        } else {
            None
        },
        is_error,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::tests::{addr, packet};
    use crate::wire::Family;

    #[test]
    fn echo_and_node_info() {
        for (t, id) in [(128u8, 0x4242u16), (129, 0x4242), (139, 0x4242), (135, 0)] {
            let f = packet(58, &[t, 0, 0, 0, 0x42, 0x42, 0, 1]);
            let Ok(L4::Icmp(i)) = parse(&f, 40, f.len()) else {
                panic!()
            };
            assert_eq!(
                (i.icmp_type, i.id, i.is_error, i.inner),
                (t, id, false, None)
            );
        }
        let f = packet(58, &[128, 0, 0, 0, 0, 1, 0]);
        assert_eq!(parse(&f, 40, f.len()), Err(ParseError::TruncatedL4));
    }

    #[test]
    fn time_exceeded_quoting_udp_behind_ext_headers() {
        let mut quoted_payload = vec![60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop
        quoted_payload.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // dest options
        quoted_payload.extend_from_slice(&[0x82, 0x9a, 0x82, 0x9b, 0, 0x20, 0xee, 0xee]);
        let quote = packet(0, &quoted_payload);
        let mut msg = vec![TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&quote);
        let f = packet(58, &msg);
        let Ok(L4::Icmp(i)) = parse(&f, 40, f.len()) else {
            panic!()
        };
        assert!(i.is_error);
        let inner = i.inner.unwrap();
        assert_eq!(inner.family, Family::V6);
        assert_eq!((inner.src, inner.dst), (addr(1), addr(2)));
        assert_eq!(
            (inner.proto, inner.src_port, inner.dst_port),
            (17, 33434, 33435)
        );
        assert_eq!((inner.l3_offset, inner.l4_offset), (48, 48 + 56));

        // Cut inside the quoted UDP header, or inside an extension header.
        for cut in [4, 12] {
            let f = packet(58, &msg[..msg.len() - cut]);
            let Ok(L4::Icmp(i)) = parse(&f, 40, f.len()) else {
                panic!()
            };
            assert!(i.is_error && i.inner.is_none(), "cut {cut}");
        }
    }

    #[test]
    fn quoted_echo_request() {
        let quote = packet(58, &[128, 0, 0, 0, 0x00, 0x2a, 0, 1]);
        let mut msg = vec![DEST_UNREACH, 3, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&quote);
        let f = packet(58, &msg);
        let Ok(L4::Icmp(i)) = parse(&f, 40, f.len()) else {
            panic!()
        };
        let inner = i.inner.unwrap();
        assert_eq!(
            (inner.proto, inner.src_port, inner.dst_port),
            (58, 42, 128 << 8)
        );
    }
}
