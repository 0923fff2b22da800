//! Zero-copy wire parsing: one pass over an Ethernet frame that yields the
//! offsets and header fields the engine needs. Malformed or truncated input is a
//! `ParseError`, never a panic.
//!
//! CONTRACT (the engine relies on it):
//! - `parse(frame)` walks Ethernet, up to two VLAN tags (0x8100 / 0x88a8, QinQ),
//!   IPv4 (options, fragments) or IPv6 (hop-by-hop, routing, fragment,
//!   destination options, AH walked until the upper-layer protocol), then the
//!   L4 header of the protocol when present (not for non-first fragments).
//! - IPv4: version 4, IHL >= 5, header within the frame, total length >= IHL*4
//!   and <= the bytes present, header checksum correct (the kernel's ip_rcv
//!   drops a bad one before conntrack); IPv6: payload length <= bytes present.
//!   Trailing Ethernet padding beyond the L3 length is ignored.
//! - For TCP/UDP/ICMP/ICMPv6 etc. the L4 header must be complete within the L3
//!   length, else `ParseError::TruncatedL4` (the kernel's skb_header_pointer fails).
//! - ICMP / ICMPv6 error messages carry the quoted datagram's tuple fields in
//!   `IcmpInfo::inner` (only the first 8 bytes of the quoted L4 header are needed).

pub use crate::tuple::{Addr, Family};

/// Why a frame was not parsed. Each variant is a counter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ParseError {
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// A VLAN tag cut short, or more than two tags.
    BadVlan,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): not for conntrack.
    NotIp,
    TruncatedIp,
    BadIpVersion,
    BadIpHeaderLen,
    BadIpTotalLen,
    BadIpChecksum,
    /// An IPv6 extension header that runs past the packet, or too many of them.
    BadIpv6ExtHeader,
    /// The L4 header is not complete within the IP payload.
    TruncatedL4,
    /// TCP data offset < 5 or past the segment.
    BadTcpHeaderLen,
    /// UDP length field disagrees with the IP payload.
    BadUdpLen,
}

impl ParseError {
    pub fn name(self) -> &'static str {
        match self {
            ParseError::TruncatedEthernet => "truncated_ethernet",
            ParseError::BadVlan => "bad_vlan",
            ParseError::NotIp => "not_ip",
            ParseError::TruncatedIp => "truncated_ip",
            ParseError::BadIpVersion => "bad_ip_version",
            ParseError::BadIpHeaderLen => "bad_ip_header_len",
            ParseError::BadIpTotalLen => "bad_ip_total_len",
            ParseError::BadIpChecksum => "bad_ip_checksum",
            ParseError::BadIpv6ExtHeader => "bad_ipv6_ext_header",
            ParseError::TruncatedL4 => "truncated_l4",
            ParseError::BadTcpHeaderLen => "bad_tcp_header_len",
            ParseError::BadUdpLen => "bad_udp_len",
        }
    }
}

/// IP fragment information (IPv4 header fields, or the IPv6 fragment header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frag {
    /// IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
    pub id: u32,
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
}

/// TCP header fields window tracking needs. `options` is the byte range of the
/// options in the frame (`frame[options.0 as usize..options.1 as usize]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80.
    pub flags: u8,
    pub window: u16,
    /// Header length in bytes (data offset * 4).
    pub header_len: u8,
    /// Payload bytes after the TCP header, within the L3 length.
    pub payload_len: u16,
    pub options: (u16, u16),
}

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// The tuple fields of the datagram quoted in an ICMP / ICMPv6 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InnerTuple {
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// Ports for TCP/UDP/UDP-Lite/SCTP/DCCP; the echo id for ICMP; 0 otherwise.
    pub src_port: u16,
    /// Destination port; for ICMP/ICMPv6 `(type << 8) | code`; 0 otherwise.
    pub dst_port: u16,
    /// Offset of the quoted IP header in the frame (NAT rewrites it).
    pub l3_offset: u16,
    /// Offset of the quoted L4 header in the frame.
    pub l4_offset: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IcmpInfo {
    pub icmp_type: u8,
    pub code: u8,
    /// Echo / timestamp / info identifier (bytes 4..6); 0 for other types.
    pub id: u16,
    /// Some for error messages whose quoted header parsed.
    pub inner: Option<InnerTuple>,
    /// True for error types (ICMP 3,4,5,11,12; ICMPv6 < 128) even if the quote did not parse.
    pub is_error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4 {
    /// Non-first fragment: no L4 header here.
    #[default]
    None,
    Tcp(TcpInfo),
    /// UDP or UDP-Lite (`Parsed::proto` says which).
    Udp { src_port: u16, dst_port: u16 },
    /// ICMP or ICMPv6 (`Parsed::family` says which).
    Icmp(IcmpInfo),
    /// SCTP: ports, verification tag, and a bitmap of the chunk types present
    /// (bit n = chunk type n, for n < 32), plus the first chunk's type and flags.
    Sctp { src_port: u16, dst_port: u16, vtag: u32, chunk_map: u32, first_chunk: u8, first_flags: u8 },
    /// DCCP: ports and packet type.
    Dccp { src_port: u16, dst_port: u16, pkt_type: u8 },
    /// GRE: version (0 or 1), protocol, and for version 1 (PPTP) the call id.
    Gre { version: u8, protocol: u16, call_id: u16 },
    /// Any other protocol: tracked by the generic tracker.
    Other,
}

/// What one pass over a frame found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parsed {
    /// Outermost VLAN id first; 0 where absent.
    pub vlan_ids: [u16; 2],
    pub vlan_count: u8,
    /// Offset of the IP header.
    pub l3_offset: u16,
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Bytes at L3 as the IP header says (IPv4 total length; IPv6 40 + payload length):
    /// what the kernel counts as the packet's length.
    pub l3_len: u16,
    /// Upper-layer protocol after any IPv6 extension headers.
    pub proto: u8,
    /// Offset of the L4 header (or where it would be).
    pub l4_offset: u16,
    pub frag: Option<Frag>,
    pub l4: L4,
}

/// Parses an Ethernet frame. See the module contract.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let _ = frame;
    todo!("wire parser")
}
