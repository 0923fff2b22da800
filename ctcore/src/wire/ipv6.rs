//! IPv6 header (RFC 8200) and the extension-header walk of the kernel's
//! `ipv6_skip_exthdr`.

use super::{be16, be32, Addr, Family, Frag, L3Header, ParseError};

pub const HEADER_LEN: usize = 40;

/// Field offsets of the IPv6 fixed header.
pub mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_ESP: u8 = 50;
pub const NEXTHDR_AUTH: u8 = 51;
pub const NEXTHDR_NONE: u8 = 59;
pub const NEXTHDR_DEST: u8 = 60;

/// More extension headers than this is `BadIpv6ExtHeader` (the kernel's walk
/// is unbounded; real traffic carries two or three).
pub const MAX_EXT_HEADERS: usize = 8;

/// Field offsets common to the extension headers.
mod ext {
    pub const NEXT_HEADER: usize = 0;
    pub const HDR_EXT_LEN: usize = 1;
    /// Routing header.
    pub const ROUTING_TYPE: usize = 2;
    pub const SEGMENTS_LEFT: usize = 3;
    pub const ROUTING_ADDRS: usize = 8;
    /// Fragment header.
    pub const FRAG_OFFSET: usize = 2;
    pub const FRAG_IDENT: usize = 4;
    pub const FRAG_LEN: usize = 8;
    /// Destination options: Home Address option (RFC 6275 section 6.3).
    pub const OPT_PAD1: u8 = 0;
    pub const OPT_HOME_ADDRESS: u8 = 0xc9;
}

/// A read-only view of an IPv6 fixed header; `new_checked` guarantees 40 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::TruncatedIp);
        }
        Ok(Ipv6Packet { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.buf()[field::VER_TC_FLOW] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        (be16(self.buf(), field::VER_TC_FLOW) >> 4) as u8
    }

    pub fn flow_label(&self) -> u32 {
        be32(self.buf(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buf(), field::PAYLOAD_LEN))
    }

    pub fn next_header(&self) -> u8 {
        self.buf()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buf()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Addr {
        addr_at(self.buf(), field::SRC_ADDR.start)
    }

    pub fn dst_addr(&self) -> Addr {
        addr_at(self.buf(), field::DST_ADDR.start)
    }
}

fn addr_at(buf: &[u8], off: usize) -> Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&buf[off..off + 16]);
    Addr(a)
}

/// Where the extension-header walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtWalk {
    /// Upper-layer protocol (for a non-first fragment: the Fragment header's
    /// next header; 50 for ESP, 59 for No Next Header).
    pub proto: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub l4_rel: usize,
    pub frag: Option<Frag>,
    /// Final destination from a Routing header with segments left (types 0, 2, 4).
    pub final_dst: Option<Addr>,
    /// Home Address destination option (Mobile IPv6).
    pub home_addr: Option<Addr>,
}

/// Walks the extension headers of `pkt` (fixed header first, ending at the
/// L3 end) like `ipv6_skip_exthdr`: Hop-by-hop, Routing and Destination options
/// ((len+1)*8 bytes), AH ((len+2)*4 bytes), Fragment (8 bytes; a non-zero offset
/// stops the walk). ESP, No Next Header and upper-layer protocols end it.
/// A header that runs past `pkt`, or more than `MAX_EXT_HEADERS`, is
/// `BadIpv6ExtHeader`.
pub fn walk_ext(pkt: &[u8]) -> Result<ExtWalk, ParseError> {
    // (Without the whole fixed header the upper layer would start past the
    // end: found by the ipv6 fuzz target.)
    if pkt.len() < HEADER_LEN {
        return Err(ParseError::TruncatedIp);
    }
    let mut w = ExtWalk {
        proto: pkt[field::NEXT_HEADER],
        l4_rel: HEADER_LEN,
        frag: None,
        final_dst: None,
        home_addr: None,
    };
    let mut seen = 0;
    while matches!(
        w.proto,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
    ) {
        if seen == MAX_EXT_HEADERS {
            return Err(ParseError::BadIpv6ExtHeader);
        }
        seen += 1;
        let off = w.l4_rel;
        let hdr = pkt.get(off..off + 2).ok_or(ParseError::BadIpv6ExtHeader)?;
        let len = match w.proto {
            NEXTHDR_FRAGMENT => ext::FRAG_LEN,
            NEXTHDR_AUTH => (usize::from(hdr[ext::HDR_EXT_LEN]) + 2) * 4,
            _ => (usize::from(hdr[ext::HDR_EXT_LEN]) + 1) * 8,
        };
        let body = pkt
            .get(off..off + len)
            .ok_or(ParseError::BadIpv6ExtHeader)?;
        match w.proto {
            NEXTHDR_FRAGMENT => {
                let offset_flags = be16(body, ext::FRAG_OFFSET);
                let frag = Frag {
                    id: be32(body, ext::FRAG_IDENT),
                    offset: offset_flags & 0xfff8,
                    more: offset_flags & 1 != 0,
                };
                w.frag = Some(frag);
                w.proto = body[ext::NEXT_HEADER];
                w.l4_rel = off + len;
                if frag.offset != 0 {
                    return Ok(w);
                }
                continue;
            }
            NEXTHDR_ROUTING => w.final_dst = routing_final_dst(body).or(w.final_dst),
            NEXTHDR_DEST => w.home_addr = home_address(body).or(w.home_addr),
            _ => {}
        }
        w.proto = body[ext::NEXT_HEADER];
        w.l4_rel = off + len;
    }
    Ok(w)
}

/// RFC 8200 section 8.1: with a Routing header the pseudo-header uses the
/// final destination: the last address of a type 0 or type 2 header, Segment
/// List[0] of a Segment Routing Header (type 4, RFC 8754), when segments are left.
fn routing_final_dst(rh: &[u8]) -> Option<Addr> {
    if rh[ext::SEGMENTS_LEFT] == 0 {
        return None;
    }
    let addrs = rh.get(ext::ROUTING_ADDRS..)?;
    let n = addrs.len() / 16;
    match rh[ext::ROUTING_TYPE] {
        0 | 2 if n > 0 => Some(addr_at(addrs, (n - 1) * 16)),
        4 if n > 0 => Some(addr_at(addrs, 0)),
        _ => None,
    }
}

/// The Home Address option of a Destination options header, if any.
fn home_address(opts: &[u8]) -> Option<Addr> {
    let mut i = 2;
    while i < opts.len() {
        let kind = opts[i];
        if kind == ext::OPT_PAD1 {
            i += 1;
            continue;
        }
        let len = usize::from(*opts.get(i + 1)?);
        let data = opts.get(i + 2..i + 2 + len)?;
        if kind == ext::OPT_HOME_ADDRESS && len == 16 {
            return Some(addr_at(data, 0));
        }
        i += 2 + len;
    }
    None
}

/// Validates the IPv6 header at the start of `l3` like `ipv6_rcv` (payload
/// length within the bytes present; payload length 0 with a Hop-by-hop header
/// would be a jumbogram, not supported: `BadIpTotalLen`) and walks the
/// extension headers.
pub(crate) fn parse_header(l3: &[u8]) -> Result<L3Header, ParseError> {
    let ip = Ipv6Packet::new_checked(l3)?;
    if ip.version() != 6 {
        return Err(ParseError::BadIpVersion);
    }
    let payload_len = ip.payload_len();
    if payload_len == 0 && ip.next_header() == NEXTHDR_HOP {
        return Err(ParseError::BadIpTotalLen);
    }
    let l3_len = HEADER_LEN + payload_len;
    if l3_len > l3.len() {
        return Err(ParseError::BadIpTotalLen);
    }
    let w = walk_ext(&l3[..l3_len])?;
    Ok(L3Header {
        family: Family::V6,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        ttl: ip.hop_limit(),
        l3_len,
        proto: w.proto,
        l4_rel: w.l4_rel,
        frag: w.frag,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed header from 2001:db8::1 to 2001:db8::2 followed by `payload`.
    pub(crate) fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&addr(1).0);
        p.extend_from_slice(&addr(2).0);
        p.extend_from_slice(payload);
        p
    }

    pub(crate) fn addr(last: u8) -> Addr {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = last;
        Addr(a)
    }

    #[test]
    fn fixed_header_fields() {
        let mut p = packet(17, &[0; 8]);
        p[1] = 0xa3;
        p[2] = 0x45;
        p[3] = 0x67;
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            (ip.version(), ip.traffic_class(), ip.flow_label()),
            (6, 0x0a, 0x34567)
        );
        assert_eq!(
            (ip.payload_len(), ip.next_header(), ip.hop_limit()),
            (8, 17, 64)
        );
        assert_eq!((ip.src_addr(), ip.dst_addr()), (addr(1), addr(2)));
    }

    #[test]
    fn header_checks() {
        assert_eq!(
            parse_header(&packet(6, &[])[..39]).err(),
            Some(ParseError::TruncatedIp)
        );
        let mut v4 = packet(6, &[]);
        v4[0] = 0x40;
        assert_eq!(parse_header(&v4).err(), Some(ParseError::BadIpVersion));
        let mut long = packet(17, &[0; 8]);
        long[5] = 9;
        assert_eq!(parse_header(&long).err(), Some(ParseError::BadIpTotalLen));
        // Jumbogram: payload length 0 with a hop-by-hop header.
        assert_eq!(
            parse_header(&packet(0, &[])).err(),
            Some(ParseError::BadIpTotalLen)
        );
        // Payload length 0 otherwise is an empty packet, as in ipv6_rcv.
        let h = parse_header(&packet(59, &[])).ok().unwrap();
        assert_eq!((h.l3_len, h.proto, h.l4_rel), (40, 59, 40));
        // Padding beyond the payload length is ignored.
        let mut padded = packet(17, &[0; 8]);
        padded.extend_from_slice(&[0xee; 10]);
        assert_eq!(parse_header(&padded).map(|h| h.l3_len).ok(), Some(48));
    }

    #[test]
    fn walks_hop_routing_dest_ah_fragment() {
        let mut payload = vec![];
        payload.extend_from_slice(&[NEXTHDR_ROUTING, 0, 1, 4, 0, 0, 0, 0]); // HBH: 8 bytes, PadN
        payload.extend_from_slice(&[NEXTHDR_DEST, 2, 0, 1, 0, 0, 0, 0]); // RH0, 1 addr left
        payload.extend_from_slice(&addr(9).0);
        payload.extend_from_slice(&[NEXTHDR_AUTH, 0, 1, 4, 0, 0, 0, 0]); // DO: 8 bytes
        payload.extend_from_slice(&[NEXTHDR_FRAGMENT, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // AH: 12
        payload.extend_from_slice(&[17, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]); // frag: offset 0, M
        payload.extend_from_slice(&[0; 8]);
        let p = packet(NEXTHDR_HOP, &payload);
        let w = walk_ext(&p).unwrap();
        assert_eq!(w.proto, 17);
        assert_eq!(w.l4_rel, 40 + 8 + 24 + 8 + 12 + 8);
        assert_eq!(
            w.frag,
            Some(Frag {
                id: 0xdeadbeef,
                offset: 0,
                more: true
            })
        );
        assert_eq!(w.final_dst, Some(addr(9)));
        assert_eq!(w.home_addr, None);
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        // Offset 1480 (185 * 8), no more fragments, then a hop-by-hop that must not be walked.
        let p = packet(
            NEXTHDR_FRAGMENT,
            &[NEXTHDR_HOP, 0, 0x05, 0xc8, 0, 0, 0, 7, 0xff, 0xff],
        );
        let w = walk_ext(&p).unwrap();
        assert_eq!(
            w.frag,
            Some(Frag {
                id: 7,
                offset: 1480,
                more: false
            })
        );
        assert_eq!((w.proto, w.l4_rel), (NEXTHDR_HOP, 48));
    }

    #[test]
    fn routing_header_final_destination() {
        let rh = |kind: u8, left: u8, addrs: &[u8]| {
            let mut h = vec![6, (addrs.len() * 2) as u8, kind, left, 0, 0, 0, 0];
            for a in addrs {
                h.extend_from_slice(&addr(*a).0);
            }
            walk_ext(&packet(NEXTHDR_ROUTING, &h)).map(|w| w.final_dst)
        };
        assert_eq!(
            rh(0, 2, &[3, 4]),
            Ok(Some(addr(4))),
            "type 0: the last address"
        );
        assert_eq!(
            rh(0, 0, &[3, 4]),
            Ok(None),
            "no segments left: the header's destination"
        );
        assert_eq!(
            rh(2, 1, &[5]),
            Ok(Some(addr(5))),
            "type 2: the home address"
        );
        assert_eq!(rh(4, 1, &[6, 7]), Ok(Some(addr(6))), "SRH: Segment List[0]");
        assert_eq!(rh(3, 1, &[8]), Ok(None), "RPL (compressed) is not decoded");
    }

    #[test]
    fn home_address_option() {
        // PadN (4 bytes), then the Home Address option: 24 bytes in all.
        let mut d = vec![6, 2, 1, 2, 0, 0, ext::OPT_HOME_ADDRESS, 16];
        d.extend_from_slice(&addr(7).0);
        let w = walk_ext(&packet(NEXTHDR_DEST, &d)).unwrap();
        assert_eq!((w.proto, w.l4_rel, w.home_addr), (6, 64, Some(addr(7))));
        // Pad1s and an option cut by the header's end.
        let mut d = vec![
            6,
            1,
            ext::OPT_PAD1,
            ext::OPT_PAD1,
            ext::OPT_HOME_ADDRESS,
            16,
        ];
        d.extend_from_slice(&addr(7).0[..10]);
        let w = walk_ext(&packet(NEXTHDR_DEST, &d)).unwrap();
        assert_eq!((w.proto, w.l4_rel, w.home_addr), (6, 56, None));
    }

    #[test]
    fn bad_ext_headers() {
        // Runs past the packet.
        let p = packet(NEXTHDR_DEST, &[6, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(walk_ext(&p).err(), Some(ParseError::BadIpv6ExtHeader));
        // Only one byte of a header.
        assert_eq!(
            walk_ext(&packet(NEXTHDR_HOP, &[6])).err(),
            Some(ParseError::BadIpv6ExtHeader)
        );
        // Nine destination-options headers.
        let mut payload = vec![];
        for _ in 0..9 {
            payload.extend_from_slice(&[NEXTHDR_DEST, 0, 1, 4, 0, 0, 0, 0]);
        }
        let p = packet(NEXTHDR_DEST, &payload);
        assert_eq!(walk_ext(&p).err(), Some(ParseError::BadIpv6ExtHeader));
        // Eight are fine.
        payload.truncate(64);
        payload[56] = NEXTHDR_NONE;
        let p = packet(NEXTHDR_DEST, &payload);
        assert_eq!(
            walk_ext(&p).map(|w| (w.proto, w.l4_rel)).ok(),
            Some((NEXTHDR_NONE, 104))
        );
    }

    #[test]
    fn esp_and_no_next_header_end_the_walk() {
        let w = walk_ext(&packet(
            NEXTHDR_HOP,
            &[NEXTHDR_ESP, 0, 1, 4, 0, 0, 0, 0, 1, 2, 3, 4],
        ))
        .unwrap();
        assert_eq!((w.proto, w.l4_rel), (NEXTHDR_ESP, 48));
        let w = walk_ext(&packet(NEXTHDR_NONE, &[1, 2, 3])).unwrap();
        assert_eq!((w.proto, w.l4_rel), (NEXTHDR_NONE, 40));
    }

    #[test]
    fn a_fixed_header_cut_short_is_truncated() {
        // The ipv6 fuzz target's find: 20 bytes of a fixed header.
        let cut = [
            0x60, 0, 0, 0, 0, 0x14, 0x10, 0x40, 0, 1, 0, 0, 2, 0xe0, 0x81, 0xff, 0xfe, 0x52, 0x9a,
            0x6b,
        ];
        assert_eq!(walk_ext(&cut).err(), Some(ParseError::TruncatedIp));
        assert_eq!(walk_ext(&[]).err(), Some(ParseError::TruncatedIp));
    }
}
