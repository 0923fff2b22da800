//! DCCP generic header (RFC 4340 section 5.1).

use super::{be16, ParseError, L4};

/// The kernel's `struct dccp_hdr`: ports, data offset, CCVal/CsCov, checksum,
/// type and X, and the low 24 bits of the sequence number.
pub const MIN_HEADER_LEN: usize = 12;

/// Field offsets of the DCCP generic header.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const DATA_OFFSET: usize = 4;
    pub const CCVAL_CSCOV: usize = 5;
    pub const CHECKSUM: usize = 6;
    /// Reserved (3 bits), Type (4 bits), X (1 bit).
    pub const TYPE_X: usize = 8;
}

/// Packet type (REQUEST = 0 ... SYNCACK = 9).
pub fn packet_type(type_x: u8) -> u8 {
    (type_x >> 1) & 0x0f
}

/// Ports and packet type; fewer than 12 bytes is `TruncatedL4` (`dccp_error`'s
/// "short packet").
pub(crate) fn parse(seg: &[u8]) -> Result<L4, ParseError> {
    if seg.len() < MIN_HEADER_LEN {
        return Err(ParseError::TruncatedL4);
    }
    Ok(L4::Dccp {
        src_port: be16(seg, field::SRC_PORT),
        dst_port: be16(seg, field::DST_PORT),
        pkt_type: packet_type(seg[field::TYPE_X]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fixture() {
        // DCCP-Request (type 0, X=1) from 40000 to 5001, doff 7.
        let h = [
            0x9c, 0x40, 0x13, 0x89, 0x07, 0x00, 0x12, 0x34, 0x01, 0x00, 0x00, 0x00, 0, 0,
        ];
        assert_eq!(
            parse(&h),
            Ok(L4::Dccp {
                src_port: 40000,
                dst_port: 5001,
                pkt_type: 0
            })
        );
        let mut ack = h;
        ack[8] = 3 << 1 | 1; // DCCP-Ack
        assert_eq!(
            parse(&ack).map(|l| matches!(l, L4::Dccp { pkt_type: 3, .. })),
            Ok(true)
        );
        assert_eq!(parse(&h[..11]), Err(ParseError::TruncatedL4));
    }
}
