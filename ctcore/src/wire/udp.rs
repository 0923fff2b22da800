//! UDP (RFC 768) and UDP-Lite (RFC 3828) headers.

use super::{be16, ParseError, L4};

pub const HEADER_LEN: usize = 8;

/// Field offsets of the UDP / UDP-Lite header.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    /// UDP: datagram length; UDP-Lite: checksum coverage (0 = everything).
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A read-only view of a UDP or UDP-Lite datagram; `new_checked` guarantees
/// the 8-byte header.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        Ok(UdpPacket { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// UDP length, or UDP-Lite checksum coverage.
    pub fn len_field(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::LENGTH))
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

/// UDP-Lite checksum coverage of a `seg_len`-byte datagram (RFC 3828 3.1:
/// 0 means the whole datagram); `None` if below 8 or past the datagram.
pub fn udplite_coverage(coverage_field: usize, seg_len: usize) -> Option<usize> {
    match coverage_field {
        0 => Some(seg_len),
        c if (HEADER_LEN..=seg_len).contains(&c) => Some(c),
        _ => None,
    }
}

/// Like `udp_error`: a length field below 8 or beyond the IP payload is
/// `BadUdpLen`. A shorter length field than the payload is accepted (the kernel
/// does too). `partial` (first fragment) skips the length check.
pub(crate) fn parse(seg: &[u8], partial: bool) -> Result<L4, ParseError> {
    let udp = UdpPacket::new_checked(seg)?;
    let len = udp.len_field();
    if !partial && (len < HEADER_LEN || len > seg.len()) {
        return Err(ParseError::BadUdpLen);
    }
    Ok(L4::Udp {
        src_port: udp.src_port(),
        dst_port: udp.dst_port(),
    })
}

/// Like `udplite_error`: a checksum coverage below 8 or past the datagram is
/// `BadUdpLen`. `partial` (first fragment) skips the check.
pub(crate) fn parse_lite(seg: &[u8], partial: bool) -> Result<L4, ParseError> {
    let udp = UdpPacket::new_checked(seg)?;
    if !partial && udplite_coverage(udp.len_field(), seg.len()).is_none() {
        return Err(ParseError::BadUdpLen);
    }
    Ok(L4::Udp {
        src_port: udp.src_port(),
        dst_port: udp.dst_port(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DNS query header: 53124 -> 53, length 12 (4 bytes of payload).
    const DNS: [u8; 12] = [0xcf, 0x84, 0x00, 0x35, 0x00, 0x0c, 0x12, 0x34, 1, 2, 3, 4];

    #[test]
    fn udp_fixture() {
        assert_eq!(
            parse(&DNS, false),
            Ok(L4::Udp {
                src_port: 53124,
                dst_port: 53
            })
        );
        let u = UdpPacket::new_checked(&DNS[..]).unwrap();
        assert_eq!((u.len_field(), u.checksum()), (12, 0x1234));
    }

    #[test]
    fn udp_lengths() {
        assert_eq!(parse(&DNS[..7], false), Err(ParseError::TruncatedL4));
        assert_eq!(parse(&DNS[..11], false), Err(ParseError::BadUdpLen));
        assert!(parse(&DNS[..11], true).is_ok());
        let mut short = DNS;
        short[5] = 7;
        assert_eq!(parse(&short, false), Err(ParseError::BadUdpLen));
        short[5] = 8;
        assert!(parse(&short, false).is_ok());
    }

    #[test]
    fn udplite_coverage_rules() {
        let mut lite = DNS;
        lite[5] = 0;
        assert!(parse_lite(&lite, false).is_ok());
        lite[5] = 8;
        assert!(parse_lite(&lite, false).is_ok());
        lite[5] = 7;
        assert_eq!(parse_lite(&lite, false), Err(ParseError::BadUdpLen));
        lite[5] = 13;
        assert_eq!(parse_lite(&lite, false), Err(ParseError::BadUdpLen));
        assert_eq!(udplite_coverage(0, 20), Some(20));
        assert_eq!(udplite_coverage(12, 20), Some(12));
        assert_eq!(udplite_coverage(21, 20), None);
    }
}
