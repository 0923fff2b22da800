//! TCP header (RFC 9293): the fields window tracking needs.

use super::{be16, be32, ParseError, TcpInfo, L4};

pub const MIN_HEADER_LEN: usize = 20;

/// Field offsets of the TCP header.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// A read-only view of a TCP segment; `new_checked` guarantees the 20-byte
/// fixed header.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < MIN_HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        Ok(TcpPacket { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buf(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        be32(self.buf(), field::SEQ_NUM)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.buf(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buf()[field::DATA_OFFSET] >> 4) * 4
    }

    pub fn flags(&self) -> u8 {
        self.buf()[field::FLAGS]
    }

    pub fn window_len(&self) -> u16 {
        be16(self.buf(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buf(), field::CHECKSUM)
    }

    pub fn urgent_at(&self) -> u16 {
        be16(self.buf(), field::URGENT)
    }
}

/// Parses the TCP header of `seg` (the L4 bytes within the L3 length), found at
/// `offset` in the frame. Like `tcp_error`: fewer than 20 bytes is
/// `TruncatedL4`, a data offset below 5 or past the segment `BadTcpHeaderLen`.
pub(crate) fn parse(seg: &[u8], offset: usize) -> Result<L4, ParseError> {
    let tcp = TcpPacket::new_checked(seg)?;
    let header_len = tcp.header_len();
    if header_len < MIN_HEADER_LEN || header_len > seg.len() {
        return Err(ParseError::BadTcpHeaderLen);
    }
    Ok(L4::Tcp(TcpInfo {
        src_port: tcp.src_port(),
        dst_port: tcp.dst_port(),
        seq: tcp.seq_number(),
        ack: tcp.ack_number(),
        flags: tcp.flags(),
        window: tcp.window_len(),
        header_len: header_len as u8,
        payload_len: (seg.len() - header_len) as u16,
        options: (
            (offset + field::OPTIONS) as u16,
            (offset + header_len) as u16,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp_flags;

    /// SYN from port 49152 to 80 with MSS 1460, SACK-permitted, NOP, NOP... (doff 7).
    const SYN: [u8; 28] = [
        0xc0, 0x00, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfa,
        0xf0, 0xab, 0xcd, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x01, 0x01,
    ];

    #[test]
    fn syn_fixture() {
        let Ok(L4::Tcp(t)) = parse(&SYN, 34) else {
            panic!("SYN did not parse")
        };
        assert_eq!(
            (t.src_port, t.dst_port, t.seq, t.ack),
            (49152, 80, 0x12345678, 0)
        );
        assert_eq!(
            (t.flags, t.window, t.header_len, t.payload_len),
            (tcp_flags::SYN, 64240, 28, 0)
        );
        assert_eq!(t.options, (54, 62));
        assert_eq!(TcpPacket::new_checked(&SYN[..]).unwrap().checksum(), 0xabcd);
    }

    #[test]
    fn payload_len_counts_bytes_after_the_header() {
        let mut seg = SYN.to_vec();
        seg[12] = 0x50;
        seg[13] = tcp_flags::ACK | tcp_flags::PSH;
        let Ok(L4::Tcp(t)) = parse(&seg, 0) else {
            panic!()
        };
        assert_eq!((t.header_len, t.payload_len, t.options), (20, 8, (20, 20)));
    }

    #[test]
    fn bad_lengths() {
        assert_eq!(parse(&SYN[..19], 0), Err(ParseError::TruncatedL4));
        assert_eq!(parse(&SYN[..27], 0), Err(ParseError::BadTcpHeaderLen));
        let mut doff4 = SYN;
        doff4[12] = 0x40;
        assert_eq!(parse(&doff4, 0), Err(ParseError::BadTcpHeaderLen));
    }
}
