//! The few header formats the L3 forwarder reads and writes itself (Ethernet,
//! ARP, IPv4, IPv6, ICMP, ICMPv6 echo / errors / neighbour discovery), on plain
//! byte slices. Forwarding needs only what is here; the full parser for the
//! conntrack stage is `ctcore::wire`.

pub use crate::config::Mac;
use crate::stats::DropReason;

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IEEE 802.1Q: a VLAN tag (TPID, then PCP / DEI / VID) after the MACs.
pub const ETHERTYPE_VLAN: u16 = ctcore::wire::vlan::ETHERTYPE_8021Q;
pub const VLAN_HLEN: usize = ctcore::wire::vlan::TAG_LEN;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
pub const ND_ROUTER_SOLICIT: u8 = 133;
pub const ND_REDIRECT: u8 = 137;
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOR_ADVERT: u8 = 136;

pub const BROADCAST: Mac = [0xff; 6];

#[inline(always)]
pub fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

#[inline(always)]
pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// What the forwarder found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Arp,
    Ipv4 {
        /// Header length in bytes.
        ihl: u8,
        total_len: u16,
        ttl: u8,
        proto: u8,
        src: u32,
        dst: u32,
    },
    /// IPv6; the addresses stay in the frame ([`ipv6_src`], [`ipv6_dst`]) to
    /// keep `Meta` small (16 bytes) for the per-burst arrays.
    Ipv6 {
        payload_len: u16,
        hop_limit: u8,
        next_header: u8,
    },
}

impl Meta {
    /// IPv6 ICMPv6 neighbour discovery (router/neighbour solicit/advert, redirect).
    pub fn nd_type(&self, frame: &[u8]) -> Option<u8> {
        match *self {
            Meta::Ipv6 {
                next_header: IPPROTO_ICMPV6,
                payload_len,
                ..
            } if payload_len >= 4 => {
                let t = frame[ETH_HLEN + 40];
                (ND_ROUTER_SOLICIT..=ND_REDIRECT).contains(&t).then_some(t)
            }
            _ => None,
        }
    }
}

/// Classifies a frame received on a port with MAC `port_mac`: checks the
/// Ethernet destination, and for IPv4 / IPv6 the version, lengths and (IPv4)
/// header checksum, as the kernel's `ip_rcv` / `ipv6_rcv` do before routing.
#[inline(always)]
pub fn classify(frame: &[u8], port_mac: &Mac) -> Result<Meta, DropReason> {
    if frame.len() < ETH_HLEN {
        return Err(DropReason::BadHeader);
    }
    // Unicast to another host (bit 0 of the first byte clear) is not for us.
    // Compared as two integers: cheaper than a slice comparison.
    let dst_hi = u32::from_ne_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let dst_lo = u16::from_ne_bytes([frame[4], frame[5]]);
    let mac_hi = u32::from_ne_bytes([port_mac[0], port_mac[1], port_mac[2], port_mac[3]]);
    let mac_lo = u16::from_ne_bytes([port_mac[4], port_mac[5]]);
    if frame[0] & 1 == 0 && (dst_hi != mac_hi || dst_lo != mac_lo) {
        return Err(DropReason::OtherHost);
    }
    match be16(frame, 12) {
        ETHERTYPE_IPV4 => {
            let ip = &frame[ETH_HLEN..];
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return Err(DropReason::BadHeader);
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total_len = be16(ip, 2) as usize;
            if ihl < 20 || ip.len() < ihl || total_len < ihl || total_len > ip.len() {
                return Err(DropReason::BadHeader);
            }
            if !ctcore::checksum::ipv4_header_ok(&ip[..ihl]) {
                return Err(DropReason::BadHeader);
            }
            Ok(Meta::Ipv4 {
                ihl: ihl as u8,
                total_len: total_len as u16,
                ttl: ip[8],
                proto: ip[9],
                src: u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]),
                dst: u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]),
            })
        }
        ETHERTYPE_IPV6 => {
            let ip = &frame[ETH_HLEN..];
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return Err(DropReason::BadHeader);
            }
            let payload_len = be16(ip, 4);
            if 40 + payload_len as usize > ip.len() {
                return Err(DropReason::BadHeader);
            }
            Ok(Meta::Ipv6 {
                payload_len,
                hop_limit: ip[7],
                next_header: ip[6],
            })
        }
        ETHERTYPE_ARP => Ok(Meta::Arp),
        _ => Err(DropReason::Unsupported),
    }
}

/// The VLAN id of an 802.1Q-tagged frame (TPID 0x8100; 0 for a
/// priority tag), None if it carries no such tag.
#[inline]
pub fn vlan_id(frame: &[u8]) -> Option<u16> {
    if frame.len() < ETH_HLEN || be16(frame, 12) != ETHERTYPE_VLAN {
        return None;
    }
    ctcore::wire::vlan::VlanTag::new_checked(&frame[ETH_HLEN..])
        .ok()
        .map(|t| t.vlan_id())
}

/// Removing a tag, first step: moves the MAC addresses over it (4 bytes
/// on); the frame proper then starts at `VLAN_HLEN` (the caller trims it).
#[inline]
pub fn untag_in_place(frame: &mut [u8]) {
    frame.copy_within(0..12, VLAN_HLEN);
}

/// Inserting a tag, last step: `frame` has `VLAN_HLEN` new bytes in front
/// of an untagged frame; moves the MAC addresses into them and writes the
/// tag of `vid` (priority 0) behind.
#[inline]
pub fn tag_in_place(frame: &mut [u8], vid: u16) {
    frame.copy_within(VLAN_HLEN..VLAN_HLEN + 12, 0);
    put16(frame, 12, ETHERTYPE_VLAN);
    put16(frame, 14, vid & 0x0fff);
}

/// Whether a frame [`classify`] found to be IP may be a fragment (IPv4: MF
/// or an offset; IPv6: a Fragment header, or extension headers that may
/// precede one): reassembly looks closer ([`ctcore::defrag::read`]).
#[inline(always)]
pub fn maybe_fragment(meta: &Meta, frame: &[u8]) -> bool {
    match *meta {
        Meta::Ipv4 { .. } => be16(frame, ETH_HLEN + 6) & 0x3fff != 0,
        Meta::Ipv6 { next_header, .. } => matches!(next_header, 0 | 43 | 44 | 51 | 60),
        Meta::Arp => false,
    }
}

/// The IPv6 source address of a frame that [`classify`] found to be IPv6.
#[inline(always)]
pub fn ipv6_src(frame: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&frame[ETH_HLEN + 8..ETH_HLEN + 24]);
    u128::from_be_bytes(a)
}

/// The IPv6 destination address of a frame that [`classify`] found to be IPv6.
#[inline(always)]
pub fn ipv6_dst(frame: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&frame[ETH_HLEN + 24..ETH_HLEN + 40]);
    u128::from_be_bytes(a)
}

/// Ones'-complement sum of `data` (RFC 1071), not folded.
#[inline]
pub fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

/// Folds a 64-bit sum to 16 bits and complements it.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data`; 0 when `data` includes a correct checksum field.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changes from `old` to `new`.
#[inline(always)]
pub fn csum_update16(hc: u16, old: u16, new: u16) -> u16 {
    let sum = (!hc as u32) + (!old as u32) + new as u32;
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// ICMPv6 checksum (RFC 4443 section 2.3) of the message `icmp` between `src` and `dst`.
pub fn icmpv6_checksum(src: &[u8], dst: &[u8], icmp: &[u8]) -> u16 {
    let mut acc = sum16(src, 0);
    acc = sum16(dst, acc);
    acc += icmp.len() as u64;
    acc += IPPROTO_ICMPV6 as u64;
    fold(sum16(icmp, acc))
}

/// Decrements the IPv4 TTL at `ip` and updates the header checksum incrementally.
#[inline(always)]
pub fn ipv4_dec_ttl(ip: &mut [u8]) {
    let old = be16(ip, 8);
    ip[8] -= 1;
    let new = be16(ip, 8);
    let hc = be16(ip, 10);
    put16(ip, 10, csum_update16(hc, old, new));
}

/// Writes an Ethernet header.
#[inline(always)]
pub fn write_eth(frame: &mut [u8], dst: &Mac, src: &Mac, ethertype: u16) {
    frame[0..6].copy_from_slice(dst);
    frame[6..12].copy_from_slice(src);
    put16(frame, 12, ethertype);
}

/// A parsed ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: u32,
    pub tpa: u32,
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
const ARP_LEN: usize = 28;

/// Parses ARP for Ethernet/IPv4 (RFC 826); None for anything else.
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let a = frame.get(ETH_HLEN..ETH_HLEN + ARP_LEN)?;
    if be16(a, 0) != 1 || be16(a, 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&a[8..14]);
    Some(Arp {
        op: be16(a, 6),
        sha,
        spa: u32::from_be_bytes([a[14], a[15], a[16], a[17]]),
        tpa: u32::from_be_bytes([a[24], a[25], a[26], a[27]]),
    })
}

/// Writes a complete ARP frame (42 bytes) into `frame`.
pub fn write_arp(
    frame: &mut [u8],
    eth_dst: &Mac,
    op: u16,
    sha: &Mac,
    spa: u32,
    tha: &Mac,
    tpa: u32,
) {
    write_eth(frame, eth_dst, sha, ETHERTYPE_ARP);
    let a = &mut frame[ETH_HLEN..ETH_HLEN + ARP_LEN];
    put16(a, 0, 1);
    put16(a, 2, ETHERTYPE_IPV4);
    a[4] = 6;
    a[5] = 4;
    put16(a, 6, op);
    a[8..14].copy_from_slice(sha);
    a[14..18].copy_from_slice(&spa.to_be_bytes());
    a[18..24].copy_from_slice(tha);
    a[24..28].copy_from_slice(&tpa.to_be_bytes());
}

/// Length of an ARP frame as written by [`write_arp`].
pub const ARP_FRAME_LEN: usize = ETH_HLEN + ARP_LEN;

/// The solicited-node multicast address of `addr` (RFC 4291 section 2.7.1).
pub fn solicited_node(addr: u128) -> u128 {
    0xff02_0000_0000_0000_0000_0001_ff00_0000u128 | (addr & 0x00ff_ffff)
}

/// The Ethernet multicast MAC for an IPv6 multicast address (RFC 2464 section 7).
pub fn ipv6_multicast_mac(addr: u128) -> Mac {
    let b = addr.to_be_bytes();
    [0x33, 0x33, b[12], b[13], b[14], b[15]]
}

/// Writes an IPv6 header (hop limit `hops`) at `ip`.
pub fn write_ipv6(
    ip: &mut [u8],
    payload_len: u16,
    next_header: u8,
    hops: u8,
    src: u128,
    dst: u128,
) {
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    put16(ip, 4, payload_len);
    ip[6] = next_header;
    ip[7] = hops;
    ip[8..24].copy_from_slice(&src.to_be_bytes());
    ip[24..40].copy_from_slice(&dst.to_be_bytes());
}

/// Length of a neighbour solicitation/advertisement frame with one link-layer option.
pub const ND_FRAME_LEN: usize = ETH_HLEN + 40 + 32;

/// Writes a neighbour solicitation (RFC 4861 section 4.3) for `target` from
/// (`src_mac`, `src`), multicast to the target's solicited-node address.
pub fn write_neighbor_solicit(frame: &mut [u8], src_mac: &Mac, src: u128, target: u128) {
    let dst = solicited_node(target);
    write_eth(frame, &ipv6_multicast_mac(dst), src_mac, ETHERTYPE_IPV6);
    write_nd(
        &mut frame[ETH_HLEN..],
        ND_NEIGHBOR_SOLICIT,
        0,
        src,
        dst,
        target,
        1,
        src_mac,
    );
}

/// Writes a solicited neighbour advertisement (RFC 4861 section 4.4) for our
/// `target` address, with the Router, Solicited and Override flags.
pub fn write_neighbor_advert(
    frame: &mut [u8],
    src_mac: &Mac,
    dst_mac: &Mac,
    target: u128,
    dst: u128,
) {
    write_eth(frame, dst_mac, src_mac, ETHERTYPE_IPV6);
    write_nd(
        &mut frame[ETH_HLEN..],
        ND_NEIGHBOR_ADVERT,
        0xe000_0000,
        target,
        dst,
        target,
        2,
        src_mac,
    );
}

/// IPv6's all-nodes group (ff02::1) and its Ethernet address.
pub const ALL_NODES: u128 = 0xff02_0000_0000_0000_0000_0000_0000_0001;
pub const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];

/// An unsolicited neighbour advertisement of `target` to all nodes (router
/// and override flags, RFC 4861 7.2.6): neighbours that know `target`
/// take `src_mac` for it. `frame` must hold `ND_FRAME_LEN` bytes.
pub fn write_unsolicited_advert(frame: &mut [u8], src_mac: &Mac, target: u128) {
    write_eth(frame, &ALL_NODES_MAC, src_mac, ETHERTYPE_IPV6);
    write_nd(
        &mut frame[ETH_HLEN..],
        ND_NEIGHBOR_ADVERT,
        0xa000_0000,
        target,
        ALL_NODES,
        target,
        2,
        src_mac,
    );
}

#[allow(clippy::too_many_arguments)]
fn write_nd(
    ip: &mut [u8],
    icmp_type: u8,
    flags: u32,
    src: u128,
    dst: u128,
    target: u128,
    opt_type: u8,
    mac: &Mac,
) {
    write_ipv6(ip, 32, IPPROTO_ICMPV6, 255, src, dst);
    let icmp = &mut ip[40..72];
    icmp[0] = icmp_type;
    icmp[1] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&flags.to_be_bytes());
    icmp[8..24].copy_from_slice(&target.to_be_bytes());
    icmp[24] = opt_type;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(mac);
    let c = icmpv6_checksum(&src.to_be_bytes(), &dst.to_be_bytes(), &ip[40..72]);
    put16(ip, 42, c);
}

/// A parsed neighbour solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nd {
    pub icmp_type: u8,
    pub target: u128,
    /// The source (NS) or target (NA) link-layer address option, if present.
    pub lladdr: Option<Mac>,
}

/// Parses a NS/NA at `frame` (after [`classify`] said IPv6 / ICMPv6), checking
/// hop limit 255, code 0, length and checksum as RFC 4861 section 7.1.1 requires.
pub fn parse_nd(frame: &[u8]) -> Option<Nd> {
    let ip = &frame[ETH_HLEN..];
    let payload_len = be16(ip, 4) as usize;
    if ip[7] != 255 || payload_len < 24 {
        return None;
    }
    let icmp = &ip[40..40 + payload_len];
    if icmp[1] != 0 || icmpv6_checksum(&ip[8..24], &ip[24..40], icmp) != 0 {
        return None;
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&icmp[8..24]);
    let mut lladdr = None;
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let len = opts[1] as usize * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if (opts[0] == 1 || opts[0] == 2) && len >= 8 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&opts[2..8]);
            lladdr = Some(m);
        }
        opts = &opts[len..];
    }
    Some(Nd {
        icmp_type: icmp[0],
        target: u128::from_be_bytes(t),
        lladdr,
    })
}

/// Turns an IPv4 ICMP echo request frame into the echo reply, in place
/// (RFC 792): addresses and MACs swapped, type 0, TTL 64, checksums updated.
pub fn ipv4_echo_reply_in_place(frame: &mut [u8], ihl: usize, total_len: usize, port_mac: &Mac) {
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    write_eth(frame, &src_mac, port_mac, ETHERTYPE_IPV4);
    let ip = &mut frame[ETH_HLEN..ETH_HLEN + total_len];
    for i in 0..4 {
        ip.swap(12 + i, 16 + i);
    }
    ip[8] = 64;
    put16(ip, 10, 0);
    let c = checksum(&ip[..ihl]);
    put16(ip, 10, c);
    let icmp = &mut ip[ihl..];
    let old = be16(icmp, 0);
    icmp[0] = ICMP_ECHO_REPLY;
    let hc = be16(icmp, 2);
    put16(icmp, 2, csum_update16(hc, old, be16(icmp, 0)));
}

/// Turns an ICMPv6 echo request frame into the echo reply, in place (RFC 4443 section 4.2).
pub fn ipv6_echo_reply_in_place(frame: &mut [u8], payload_len: usize, port_mac: &Mac) {
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    write_eth(frame, &src_mac, port_mac, ETHERTYPE_IPV6);
    let ip = &mut frame[ETH_HLEN..ETH_HLEN + 40 + payload_len];
    for i in 0..16 {
        ip.swap(8 + i, 24 + i);
    }
    ip[7] = 64;
    let icmp = &mut ip[40..];
    let old = be16(icmp, 0);
    icmp[0] = ICMPV6_ECHO_REPLY;
    let hc = be16(icmp, 2);
    put16(icmp, 2, csum_update16(hc, old, be16(icmp, 0)));
}

/// Writes an ICMP time exceeded (type 11 code 0, RFC 792) into `out`, quoting
/// the original IPv4 header and the first 8 bytes of its payload; returns the
/// frame length. `out` must hold at least 14 + 20 + 8 + 60 + 8 bytes.
pub fn write_icmp4_time_exceeded(
    out: &mut [u8],
    orig: &[u8],
    ihl: usize,
    total_len: usize,
    port_mac: &Mac,
    port_ip: u32,
) -> usize {
    let quote_len = total_len.min(ihl + 8);
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&orig[6..12]);
    write_eth(out, &dst_mac, port_mac, ETHERTYPE_IPV4);
    let oip = &orig[ETH_HLEN..];
    let ip_len = 20 + 8 + quote_len;
    let ip = &mut out[ETH_HLEN..ETH_HLEN + ip_len];
    ip[0] = 0x45;
    ip[1] = 0xc0; // DSCP CS6, as Linux marks its ICMP errors
    put16(ip, 2, ip_len as u16);
    put16(ip, 4, 0);
    put16(ip, 6, 0);
    ip[8] = 64;
    ip[9] = IPPROTO_ICMP;
    put16(ip, 10, 0);
    ip[12..16].copy_from_slice(&port_ip.to_be_bytes());
    ip[16..20].copy_from_slice(&oip[12..16]);
    let c = checksum(&ip[..20]);
    put16(ip, 10, c);
    let icmp = &mut ip[20..];
    icmp[0] = ICMP_TIME_EXCEEDED;
    icmp[1] = 0;
    icmp[2..8].copy_from_slice(&[0; 6]);
    icmp[8..8 + quote_len].copy_from_slice(&oip[..quote_len]);
    let c = checksum(icmp);
    put16(icmp, 2, c);
    ETH_HLEN + ip_len
}

/// Writes an ICMPv6 time exceeded (type 3 code 0, RFC 4443 section 3.3) into
/// `out`, quoting as much of the original packet as keeps the error within
/// the IPv6 minimum MTU (1280); returns the frame length.
pub fn write_icmp6_time_exceeded(
    out: &mut [u8],
    orig: &[u8],
    payload_len: usize,
    port_mac: &Mac,
    port_ip: u128,
) -> usize {
    let quote_len = (40 + payload_len)
        .min(1280 - 48)
        .min(out.len() - ETH_HLEN - 48);
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&orig[6..12]);
    write_eth(out, &dst_mac, port_mac, ETHERTYPE_IPV6);
    let oip = &orig[ETH_HLEN..];
    let mut osrc = [0u8; 16];
    osrc.copy_from_slice(&oip[8..24]);
    let icmp_len = 8 + quote_len;
    let ip = &mut out[ETH_HLEN..ETH_HLEN + 40 + icmp_len];
    write_ipv6(
        ip,
        icmp_len as u16,
        IPPROTO_ICMPV6,
        64,
        port_ip,
        u128::from_be_bytes(osrc),
    );
    let (hdr, icmp) = ip.split_at_mut(40);
    icmp[0] = ICMPV6_TIME_EXCEEDED;
    icmp[1] = 0;
    icmp[2..8].copy_from_slice(&[0; 6]);
    icmp[8..].copy_from_slice(&oip[..quote_len]);
    let c = icmpv6_checksum(&hdr[8..24], &hdr[24..40], icmp);
    put16(icmp, 2, c);
    ETH_HLEN + 40 + icmp_len
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const MAC_G: Mac = [0x02, 0, 0, 0, 0, 0x1];

    #[test]
    fn vlan_tags_come_off_and_go_on() {
        // dst, src, 802.1Q (PCP 5, VID 100), IPv4, two payload bytes.
        let tagged: [u8; 20] = [
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xa, 0x81, 0x00, 0xa0, 0x64, 0x08, 0x00, 0xde, 0xad,
        ];
        assert_eq!(vlan_id(&tagged), Some(100));
        assert_eq!(vlan_id(&tagged[..17]), None);
        assert_eq!(vlan_id(&tagged[..10]), None, "a runt");
        let mut f = tagged;
        untag_in_place(&mut f);
        let untagged = &f[VLAN_HLEN..];
        assert_eq!(
            untagged,
            &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xa, 0x08, 0x00, 0xde, 0xad]
        );
        assert_eq!(vlan_id(untagged), None);
        // Back on, priority 0.
        tag_in_place(&mut f, 100);
        let mut want = tagged;
        want[14] = 0x00;
        assert_eq!(f, want);
    }

    /// A captured Linux ping (192.0.2.10 -> 192.0.2.1, id 0x1c46, seq 1), Ethernet + IPv4 + ICMP.
    fn ping4() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC_G);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45, 0x00, 0x00, 0x24, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 192, 0, 2, 10,
            192, 0, 2, 1,
        ];
        let c = checksum(&ip);
        put16(&mut ip, 10, c);
        let mut icmp = vec![8, 0, 0, 0, 0x1c, 0x46, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8];
        let c = checksum(&icmp);
        put16(&mut icmp, 2, c);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 section 3 example: sum of 0001 f203 f4f5 f6f7 is ddf2 -> checksum 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2u16
        );
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let f = ping4();
        let mut ip = f[ETH_HLEN..ETH_HLEN + 20].to_vec();
        for _ in 0..63 {
            ipv4_dec_ttl(&mut ip);
            let mut copy = ip.clone();
            put16(&mut copy, 10, 0);
            assert_eq!(be16(&ip, 10), checksum(&copy), "ttl {}", ip[8]);
            assert_eq!(checksum(&ip), 0);
        }
    }

    #[test]
    fn classify_checks_headers() {
        let f = ping4();
        let m = classify(&f, &MAC_G).unwrap();
        assert!(matches!(
            m,
            Meta::Ipv4 {
                ihl: 20,
                total_len: 36,
                ttl: 64,
                proto: 1,
                ..
            }
        ));
        assert_eq!(
            classify(&f, &[2, 0, 0, 0, 0, 9]),
            Err(DropReason::OtherHost)
        );
        let mut bad = f.clone();
        bad[ETH_HLEN + 10] ^= 1;
        assert_eq!(classify(&bad, &MAC_G), Err(DropReason::BadHeader));
        let mut bad = f.clone();
        bad[ETH_HLEN] = 0x44;
        assert_eq!(classify(&bad, &MAC_G), Err(DropReason::BadHeader));
        assert_eq!(classify(&f[..30], &MAC_G), Err(DropReason::BadHeader));
        let mut lldp = f.clone();
        put16(&mut lldp, 12, 0x88cc);
        assert_eq!(classify(&lldp, &MAC_G), Err(DropReason::Unsupported));
    }

    #[test]
    fn echo_reply_v4_is_valid() {
        let mut f = ping4();
        ipv4_echo_reply_in_place(&mut f, 20, 36, &MAC_G);
        assert_eq!(&f[0..6], &MAC_A);
        assert_eq!(&f[6..12], &MAC_G);
        let ip = &f[ETH_HLEN..];
        assert_eq!(&ip[12..16], &[192, 0, 2, 1]);
        assert_eq!(&ip[16..20], &[192, 0, 2, 10]);
        assert_eq!(checksum(&ip[..20]), 0);
        assert_eq!(ip[20], 0);
        assert_eq!(checksum(&ip[20..36]), 0);
    }

    #[test]
    fn time_exceeded_v4_quotes_header_and_8_bytes() {
        let f = ping4();
        let mut out = [0u8; 256];
        let n = write_icmp4_time_exceeded(&mut out, &f, 20, 36, &MAC_G, 0xc0000201);
        assert_eq!(n, 14 + 20 + 8 + 28);
        let ip = &out[ETH_HLEN..n];
        assert_eq!(checksum(&ip[..20]), 0);
        assert_eq!(checksum(&ip[20..]), 0);
        assert_eq!(ip[20], 11);
        assert_eq!(&ip[28..56], &f[ETH_HLEN..ETH_HLEN + 28]);
        assert_eq!(&out[0..6], &MAC_A);
    }

    #[test]
    fn neighbor_solicit_roundtrip() {
        let mut f = [0u8; ND_FRAME_LEN];
        let src = 0x2001_0db8_0001_0000_0000_0000_0000_0001u128;
        let target = 0x2001_0db8_0001_0000_0000_0000_0000_0010u128;
        write_neighbor_solicit(&mut f, &MAC_G, src, target);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x10]);
        let m = classify(&f, &MAC_G).unwrap();
        assert_eq!(m.nd_type(&f), Some(ND_NEIGHBOR_SOLICIT));
        let nd = parse_nd(&f).unwrap();
        assert_eq!(
            nd,
            Nd {
                icmp_type: ND_NEIGHBOR_SOLICIT,
                target,
                lladdr: Some(MAC_G)
            }
        );
        let mut bad = f;
        bad[ETH_HLEN + 50] ^= 1;
        assert_eq!(parse_nd(&bad), None);
    }

    #[test]
    fn neighbor_advert_roundtrip() {
        let mut f = [0u8; ND_FRAME_LEN];
        let target = 0x2001_0db8_0002_0000_0000_0000_0000_0001u128;
        write_neighbor_advert(&mut f, &MAC_G, &MAC_A, target, 0xfe80 << 112 | 5);
        let nd = parse_nd(&f).unwrap();
        assert_eq!(
            nd,
            Nd {
                icmp_type: ND_NEIGHBOR_ADVERT,
                target,
                lladdr: Some(MAC_G)
            }
        );
        assert_eq!(f[ETH_HLEN + 44], 0xe0);
    }

    #[test]
    fn arp_roundtrip() {
        let mut f = [0u8; ARP_FRAME_LEN];
        write_arp(
            &mut f,
            &BROADCAST,
            ARP_REQUEST,
            &MAC_G,
            0xc0000201,
            &[0; 6],
            0xc000020a,
        );
        assert_eq!(classify(&f, &MAC_G), Ok(Meta::Arp));
        assert_eq!(
            parse_arp(&f),
            Some(Arp {
                op: ARP_REQUEST,
                sha: MAC_G,
                spa: 0xc0000201,
                tpa: 0xc000020a
            })
        );
        f[ETH_HLEN + 5] = 16;
        assert_eq!(parse_arp(&f), None);
    }

    #[test]
    fn solicited_node_address() {
        let a = 0x2001_0db8_0000_0000_0000_0000_0abc_def1u128;
        assert_eq!(
            solicited_node(a),
            0xff02_0000_0000_0000_0000_0001_ffbc_def1u128
        );
    }
}
