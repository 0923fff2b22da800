//! Zero-copy wire parsing: one pass over an Ethernet frame that yields the
//! offsets and header fields the engine needs. Malformed or truncated input is a
//! `ParseError`, never a panic.
//!
//! CONTRACT (the engine relies on it):
//! - `parse(frame)` walks Ethernet, up to two VLAN tags (0x8100 / 0x88a8 / 0x9100, QinQ),
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
//!
//! How the engine should read a `Parsed` (details on `parse`):
//! - Fragments: `frag.is_some_and(|f| f.offset != 0)` means no L4 header
//!   (`L4::None`); `frag` with `more` is a first fragment whose L4 header is
//!   complete. An IPv6 atomic fragment (`offset == 0 && !more`) is a whole datagram.
//! - ICMP errors: `is_error` with `inner == None` means the quote was unusable
//!   (cut short, a non-first fragment, No Next Header); the kernel then finds
//!   no related connection. Quoted protocols without ports (GRE, ESP, ...) give
//!   a tuple with ports 0, as the kernel's generic tracker does.
//! - IPv6 No Next Header (59) and ESP (50) are `L4::Other` with that `proto`
//!   (the kernel does not track 59 at all: `ipv6_skip_exthdr` fails).
//! - Views over each header (`ipv4::Ipv4Packet`, `tcp::TcpPacket`, ...) name
//!   every field offset once, in the `field` module of each submodule.

pub mod build;
pub mod ethernet;
pub mod gre;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
#[cfg(test)]
mod tests;
pub mod udp;
pub mod vlan;

pub use crate::tuple::{Addr, Family};
use crate::tuple::{
    IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    IPPROTO_UDPLITE,
};

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
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP or ICMPv6 (`Parsed::family` says which).
    Icmp(IcmpInfo),
    /// SCTP: ports, verification tag, and a bitmap of the chunk types present
    /// (bit n = chunk type n, for n < 32), plus the first chunk's type and flags.
    Sctp {
        src_port: u16,
        dst_port: u16,
        vtag: u32,
        chunk_map: u32,
        first_chunk: u8,
        first_flags: u8,
    },
    /// GRE: version (0 or 1), protocol, and for version 1 (PPTP) the call id.
    Gre {
        version: u8,
        protocol: u16,
        call_id: u16,
    },
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
///
/// Representation details the engine relies on:
/// - `frag` is `Some` for IPv4 when MF is set or the offset is non-zero, and for
///   IPv6 whenever a Fragment header is present (an atomic fragment has
///   `offset == 0 && !more`). `offset != 0` means `l4 == L4::None`; `proto` and
///   `l4_offset` still name the upper-layer protocol and where its bytes start.
/// - For a first fragment the L4 header must be complete in this fragment;
///   `TcpInfo::payload_len` then counts only the bytes in this fragment, and the
///   UDP length field is not compared with the (partial) payload.
/// - Offsets are `u16`: a packet whose L3 end lies beyond byte 65535 of the
///   frame is `BadIpTotalLen` (jumbograms are not supported either).
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    parse_inner(frame, true, true)
}

/// [`parse`] (or [`parse_ip_checked`] when `ipv4_checksum` is false) for
/// the frames a gateway mostly carries, in one straight pass, written into
/// `p` (every field, whatever `p` held) for a caller that keeps its results
/// in place: untagged Ethernet, then an unfragmented IPv4 header (options
/// allowed) or an IPv6 header without extension headers, then TCP or UDP.
/// `None` (and `p` unspecified) for every other frame, and for any frame the
/// full parse would refuse or read differently (the caller then runs the
/// full parse): where it answers, `p` is the full parse's, field for field
/// (property-tested). Returns the packet's ports (source, destination), so
/// that the caller's tuple needs no read back of what was just written.
#[inline(always)]
pub fn parse_common_into(frame: &[u8], ipv4_checksum: bool, p: &mut Parsed) -> Option<(u16, u16)> {
    const L3: usize = ethernet::HEADER_LEN;
    if frame.len() < L3 + ipv4::MIN_HEADER_LEN {
        return None;
    }
    let (family, src, dst, ttl, proto, l3_len, l4_offset) = match be16(frame, 12) {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = &frame[L3..];
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            let total_len = usize::from(be16(ip, 2));
            // Version 4, a header of 20+ bytes within the frame, a total
            // length covering it within the frame; not a fragment (MF clear,
            // offset 0: DF may be set).
            if ip[0] >> 4 != 4
                || header_len < ipv4::MIN_HEADER_LEN
                || header_len > total_len
                || total_len > ip.len()
                || be16(ip, 6) & 0x3fff != 0
            {
                return None;
            }
            if ipv4_checksum && !crate::checksum::ipv4_header_ok(&ip[..header_len]) {
                return None;
            }
            // Addresses as whole 16-byte values (one store each: what is
            // written here is read back at once for the tuple).
            let v4 = |o: usize| Addr::from_v4_whole([ip[o], ip[o + 1], ip[o + 2], ip[o + 3]]);
            (
                Family::V4,
                v4(12),
                v4(16),
                ip[8],
                ip[9],
                total_len,
                L3 + header_len,
            )
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = frame.get(L3..L3 + ipv6::HEADER_LEN)?;
            let l3_len = ipv6::HEADER_LEN + usize::from(be16(ip, 4));
            if ip[0] >> 4 != 6 || l3_len > frame.len() - L3 {
                return None;
            }
            let a = |o: usize| Addr(ip[o..o + 16].try_into().unwrap_or_default());
            (
                Family::V6,
                a(8),
                a(24),
                ip[7],
                ip[6],
                l3_len,
                L3 + ipv6::HEADER_LEN,
            )
        }
        _ => return None,
    };
    let l3_end = L3 + l3_len;
    if l3_end > usize::from(u16::MAX) {
        return None;
    }
    let seg = &frame[l4_offset..l3_end];
    let (l4, ports) = match proto {
        IPPROTO_TCP => match tcp::parse(seg, l4_offset).ok()? {
            L4::Tcp(t) => (L4::Tcp(t), (t.src_port, t.dst_port)),
            _ => return None,
        },
        IPPROTO_UDP => {
            // udp::parse's checks: a header, a length field of 8 or more
            // within the payload.
            if seg.len() < udp::HEADER_LEN {
                return None;
            }
            let len = usize::from(be16(seg, udp::field::LENGTH));
            if !(udp::HEADER_LEN..=seg.len()).contains(&len) {
                return None;
            }
            let ports = (
                be16(seg, udp::field::SRC_PORT),
                be16(seg, udp::field::DST_PORT),
            );
            (
                L4::Udp {
                    src_port: ports.0,
                    dst_port: ports.1,
                },
                ports,
            )
        }
        _ => return None,
    };
    p.vlan_ids = [0; 2];
    p.vlan_count = 0;
    p.l3_offset = L3 as u16;
    p.family = family;
    p.src = src;
    p.dst = dst;
    p.ttl = ttl;
    p.l3_len = l3_len as u16;
    p.proto = proto;
    p.l4_offset = l4_offset as u16;
    p.frag = None;
    p.l4 = l4;
    Some(ports)
}

/// The Ethernet and IP layers of a frame whose [`parse`] failed at L4
/// (a truncated or malformed TCP / UDP header): `l4` is `L4::None`. The
/// packet can still be routed and filtered, as the kernel routes and
/// filters an INVALID packet. (The IPv4 header checksum was verified by the
/// failed parse and is not summed again.)
pub fn parse_l3_of_l4_error(frame: &[u8]) -> Result<Parsed, ParseError> {
    parse_inner(frame, false, false)
}

/// [`parse`] for a frame whose IPv4 header checksum the caller has verified
/// already (the appliance's classification, as `ip_rcv` does before
/// conntrack): the same result, without summing the header again.
pub fn parse_ip_checked(frame: &[u8]) -> Result<Parsed, ParseError> {
    parse_inner(frame, false, true)
}

#[inline(always)]
fn parse_inner(frame: &[u8], ipv4_checksum: bool, l4: bool) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    let (ethertype, l3_offset) = ethernet::walk(frame, &mut p.vlan_ids, &mut p.vlan_count)?;
    let l3 = &frame[l3_offset..];
    let hdr = match ethertype {
        ethernet::ETHERTYPE_IPV4 => ipv4::parse_header(l3, ipv4_checksum)?,
        ethernet::ETHERTYPE_IPV6 => ipv6::parse_header(l3)?,
        _ => return Err(ParseError::NotIp),
    };
    let l3_end = l3_offset + hdr.l3_len;
    if l3_end > usize::from(u16::MAX) {
        return Err(ParseError::BadIpTotalLen);
    }
    let l4_offset = l3_offset + hdr.l4_rel;
    p.l3_offset = l3_offset as u16;
    p.family = hdr.family;
    p.src = hdr.src;
    p.dst = hdr.dst;
    p.ttl = hdr.ttl;
    p.l3_len = hdr.l3_len as u16;
    p.proto = hdr.proto;
    p.l4_offset = l4_offset as u16;
    p.frag = hdr.frag;
    let first_fragment = hdr.frag.is_some_and(|f| f.more);
    if l4 && !matches!(hdr.frag, Some(f) if f.offset != 0) {
        p.l4 = parse_l4(
            frame,
            hdr.family,
            hdr.proto,
            l4_offset,
            l3_end,
            first_fragment,
        )?;
    }
    Ok(p)
}

/// Parses the L4 header at `frame[l4_offset..l3_end]`. `partial` is true for a
/// first fragment: the payload is incomplete, so length fields are not checked.
fn parse_l4(
    frame: &[u8],
    family: Family,
    proto: u8,
    l4_offset: usize,
    l3_end: usize,
    partial: bool,
) -> Result<L4, ParseError> {
    let seg = &frame[l4_offset..l3_end];
    match (family, proto) {
        (_, IPPROTO_TCP) => tcp::parse(seg, l4_offset),
        (_, IPPROTO_UDP) => udp::parse(seg, partial),
        (_, IPPROTO_UDPLITE) => udp::parse_lite(seg, partial),
        (Family::V4, IPPROTO_ICMP) => icmp::parse_v4(frame, l4_offset, l3_end),
        (Family::V6, IPPROTO_ICMPV6) => icmpv6::parse(frame, l4_offset, l3_end),
        (_, IPPROTO_SCTP) => sctp::parse(seg),
        // DCCP too: the kernel this follows (>= 6.16) has no DCCP tracker
        // and tracks it generically (docs/kernel-differences.md).
        (_, IPPROTO_GRE) => gre::parse(seg),
        _ => Ok(L4::Other),
    }
}

/// What the IPv4 / IPv6 header parsers hand back to `parse`.
pub(crate) struct L3Header {
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    pub ttl: u8,
    /// Total length from the header (padding excluded), at most the bytes present.
    pub l3_len: usize,
    pub proto: u8,
    /// Offset of the L4 header from the start of the IP header.
    pub l4_rel: usize,
    pub frag: Option<Frag>,
}

/// Big-endian u16 at `off`; the caller has checked the bounds.
#[inline]
pub(crate) fn be16(buf: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([buf[off], buf[off + 1]])
}

/// Big-endian u32 at `off`; the caller has checked the bounds.
#[inline]
pub(crate) fn be32(buf: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}
