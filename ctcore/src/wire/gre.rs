//! GRE header (RFC 2784 / RFC 2890) and the enhanced GRE of PPTP (RFC 2637).

use super::{be16, ParseError, L4};

pub const BASE_HEADER_LEN: usize = 4;
/// Enhanced GRE (version 1) up to and including the call id.
pub const PPTP_HEADER_LEN: usize = 8;
pub const VERSION_PPTP: u8 = 1;

/// Field offsets of the GRE header.
pub mod field {
    pub const FLAGS_VERSION: usize = 0;
    pub const PROTOCOL: usize = 2;
    /// Version 1 only.
    pub const PAYLOAD_LEN: usize = 4;
    pub const CALL_ID: usize = 6;
}

/// Version, protocol and, for version 1 (PPTP), the call id (which needs 8
/// bytes; the kernel's `gre_pkt_to_tuple` reads the same). `call_id` is 0 for
/// version 0.
pub(crate) fn parse(seg: &[u8]) -> Result<L4, ParseError> {
    if seg.len() < BASE_HEADER_LEN {
        return Err(ParseError::TruncatedL4);
    }
    let version = (be16(seg, field::FLAGS_VERSION) & 0x7) as u8;
    let protocol = be16(seg, field::PROTOCOL);
    let call_id = if version == VERSION_PPTP {
        if seg.len() < PPTP_HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        be16(seg, field::CALL_ID)
    } else {
        0
    };
    Ok(L4::Gre {
        version,
        protocol,
        call_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_pptp() {
        assert_eq!(
            parse(&[0, 0, 0x08, 0x00]),
            Ok(L4::Gre {
                version: 0,
                protocol: 0x0800,
                call_id: 0
            })
        );
        // Enhanced GRE: K and S set, version 1, PPP, payload 0x20, call id 0x4001.
        let pptp = [0x30, 0x81, 0x88, 0x0b, 0x00, 0x20, 0x40, 0x01, 0, 0, 0, 1];
        assert_eq!(
            parse(&pptp),
            Ok(L4::Gre {
                version: 1,
                protocol: 0x880b,
                call_id: 0x4001
            })
        );
        assert_eq!(parse(&pptp[..7]), Err(ParseError::TruncatedL4));
        assert_eq!(parse(&[0, 0, 8]), Err(ParseError::TruncatedL4));
    }
}
