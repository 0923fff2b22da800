//! IPv4 header (RFC 791), checked the way the kernel's `ip_rcv_core` does.

use super::{be16, Addr, Family, Frag, L3Header, ParseError};
use crate::checksum;

pub const MIN_HEADER_LEN: usize = 20;

/// Field offsets of the IPv4 header.
pub mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

const FLAG_MF: u16 = 0x2000;
const FLAG_DF: u16 = 0x4000;
const OFFSET_MASK: u16 = 0x1fff;

/// A read-only view of an IPv4 header. `new_checked` guarantees that the
/// 20-byte fixed header is present; `header_len` bytes may not be.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < MIN_HEADER_LEN {
            return Err(ParseError::TruncatedIp);
        }
        Ok(Ipv4Packet { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.buf()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buf()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.buf()[field::DSCP_ECN]
    }

    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buf(), field::TOTAL_LEN))
    }

    pub fn ident(&self) -> u16 {
        be16(self.buf(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        be16(self.buf(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        be16(self.buf(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf(), field::FLAGS_FRAG) & OFFSET_MASK) << 3
    }

    pub fn ttl(&self) -> u8 {
        self.buf()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buf()[field::PROTOCOL]
    }

    pub fn header_checksum(&self) -> u16 {
        be16(self.buf(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Addr {
        Addr::from_v4(self.buf()[field::SRC_ADDR].try_into().unwrap_or_default())
    }

    pub fn dst_addr(&self) -> Addr {
        Addr::from_v4(self.buf()[field::DST_ADDR].try_into().unwrap_or_default())
    }

    /// True if the header checksum verifies; the caller has checked that
    /// `header_len` bytes are present.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buf()[..self.header_len()]) == 0xffff
    }

    /// `Some` when this is a fragment (MF set or non-zero offset).
    pub fn frag(&self) -> Option<Frag> {
        let (more, offset) = (self.more_frags(), self.frag_offset());
        (more || offset != 0).then_some(Frag {
            id: u32::from(self.ident()),
            offset,
            more,
        })
    }
}

/// Validates the IPv4 header at the start of `l3` like `ip_rcv_core`: version,
/// IHL, header present, header checksum (unless `checksum` is false: the
/// caller verified it), then total length against the bytes present
/// (trailing padding is ignored).
pub(crate) fn parse_header(l3: &[u8], checksum: bool) -> Result<L3Header, ParseError> {
    let ip = Ipv4Packet::new_checked(l3)?;
    if ip.version() != 4 {
        return Err(ParseError::BadIpVersion);
    }
    let header_len = ip.header_len();
    if header_len < MIN_HEADER_LEN {
        return Err(ParseError::BadIpHeaderLen);
    }
    if header_len > l3.len() {
        return Err(ParseError::TruncatedIp);
    }
    if checksum && !ip.verify_checksum() {
        return Err(ParseError::BadIpChecksum);
    }
    let total_len = ip.total_len();
    if total_len > l3.len() || total_len < header_len {
        return Err(ParseError::BadIpTotalLen);
    }
    Ok(L3Header {
        family: Family::V4,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        ttl: ip.ttl(),
        l3_len: total_len,
        proto: ip.protocol(),
        l4_rel: header_len,
        frag: ip.frag(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 20-byte header (plus `options`) with a correct checksum.
    pub(crate) fn header(total_len: u16, proto: u8, flags_frag: u16, options: &[u8]) -> Vec<u8> {
        let ihl = 5 + options.len() / 4;
        let mut h = vec![0x40 | ihl as u8, 0, 0, 0, 0x12, 0x34, 0, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&total_len.to_be_bytes());
        h[6..8].copy_from_slice(&flags_frag.to_be_bytes());
        h.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2]);
        h.extend_from_slice(options);
        let c = checksum::checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn fields_of_a_fixture() {
        // An ICMP echo request's header, checksum 0x6b69.
        let h = [
            0x45, 0x00, 0x00, 0x54, 0x4b, 0x3c, 0x40, 0x00, 0x40, 0x01, 0x6b, 0x69, 0xc0, 0x00,
            0x02, 0x01, 0xc0, 0x00, 0x02, 0x02,
        ];
        let ip = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!((ip.version(), ip.header_len(), ip.total_len()), (4, 20, 84));
        assert_eq!(
            (
                ip.ident(),
                ip.dont_frag(),
                ip.more_frags(),
                ip.frag_offset()
            ),
            (0x4b3c, true, false, 0)
        );
        assert_eq!((ip.ttl(), ip.protocol()), (64, 1));
        assert_eq!(ip.src_addr(), Addr::from_v4([192, 0, 2, 1]));
        assert_eq!(ip.dst_addr(), Addr::from_v4([192, 0, 2, 2]));
        assert!(ip.verify_checksum());
        assert_eq!(ip.frag(), None);
    }

    #[test]
    fn header_checks_in_kernel_order() {
        let good = header(20, 6, 0, &[]);
        assert!(parse_header(&good, true).is_ok());
        assert_eq!(
            parse_header(&good[..19], true).err(),
            Some(ParseError::TruncatedIp)
        );

        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(
            parse_header(&v6, true).err(),
            Some(ParseError::BadIpVersion)
        );

        let mut ihl4 = good.clone();
        ihl4[0] = 0x44;
        assert_eq!(
            parse_header(&ihl4, true).err(),
            Some(ParseError::BadIpHeaderLen)
        );

        let opts = header(24, 6, 0, &[1, 1, 1, 0]);
        assert_eq!(
            parse_header(&opts[..22], true).err(),
            Some(ParseError::TruncatedIp)
        );
        assert_eq!(parse_header(&opts, true).map(|h| h.l4_rel).ok(), Some(24));

        let mut bad_sum = good.clone();
        bad_sum[11] ^= 1;
        assert_eq!(
            parse_header(&bad_sum, true).err(),
            Some(ParseError::BadIpChecksum)
        );
        // The caller verified the checksum (the appliance's classification):
        // not summed again.
        assert!(parse_header(&bad_sum, false).is_ok());

        assert_eq!(
            parse_header(&header(21, 6, 0, &[]), true).err(),
            Some(ParseError::BadIpTotalLen)
        );
        assert_eq!(
            parse_header(&header(19, 6, 0, &[]), true).err(),
            Some(ParseError::BadIpTotalLen)
        );

        // Trailing Ethernet padding is not part of the packet.
        let mut padded = header(20, 6, 0, &[]);
        padded.extend_from_slice(&[0; 26]);
        assert_eq!(parse_header(&padded, true).map(|h| h.l3_len).ok(), Some(20));
    }

    #[test]
    fn fragments() {
        let first = parse_header(&header(20, 17, FLAG_MF, &[]), true)
            .ok()
            .unwrap();
        assert_eq!(
            first.frag,
            Some(Frag {
                id: 0x1234,
                offset: 0,
                more: true
            })
        );
        let last = parse_header(&header(20, 17, 185, &[]), true).ok().unwrap();
        assert_eq!(
            last.frag,
            Some(Frag {
                id: 0x1234,
                offset: 1480,
                more: false
            })
        );
        let df = parse_header(&header(20, 17, FLAG_DF, &[]), true)
            .ok()
            .unwrap();
        assert_eq!(df.frag, None);
    }
}
