//! Internet checksums: full computation (RFC 1071), verification of L4
//! checksums with the pseudo-header, and incremental update (RFC 1624).
//!
//! Sums are one's-complement sums folded to 16 bits and *not* complemented
//! (`sum`, `pseudo_header`); the value stored in a header is the complement
//! (`checksum`, `l4_checksum`). Data verifies when its sum, checksum field
//! included, is `0xffff`.

use crate::tuple::{Addr, Family, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE};
use crate::wire::{be16, ipv6, udp, Parsed, L4};

/// RFC 1071 sum of `data` as big-endian 16-bit words (an odd last byte is
/// padded with zero), folded to 16 bits.
pub fn sum(data: &[u8]) -> u16 {
    fold(add_words(0, data))
}

/// True if an IPv4 header (a multiple of 4 bytes) carries a correct checksum.
/// Sums 32-bit words: folding their sum equals the RFC 1071 16-bit sum
/// (2^16 = 1 modulo 2^16 - 1), with half the additions.
#[inline(always)]
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    // Native-order words: the sum of byte-swapped words is the byte-swapped
    // sum, and all ones (the only value checked) reads the same both ways.
    let word = |w: &[u8]| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
    let acc = if let Ok(h) = <&[u8; 20]>::try_from(header) {
        // No options (nearly every packet): five loads, no loop.
        word(&h[0..4]) + word(&h[4..8]) + word(&h[8..12]) + word(&h[12..16]) + word(&h[16..20])
    } else {
        header.chunks_exact(4).map(word).sum()
    };
    // At most 15 words: the sum fits 36 bits, so three fixed folding steps
    // (no loop) bring it to 16 bits.
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    a as u16 == 0xffff
}

/// The checksum to store for `data` (whose checksum field, if any, is zero).
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// One's-complement addition of two folded sums.
pub fn combine(a: u16, b: u16) -> u16 {
    // At most 0x1fffe: one end-around carry step folds it (what `fold` gives).
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Sum of the IPv4 (RFC 768/793) or IPv6 (RFC 8200 8.1) pseudo-header for an
/// upper-layer packet of `len` bytes. IPv4 uses the first 4 bytes of the addresses.
pub fn pseudo_header(family: Family, src: &Addr, dst: &Addr, proto: u8, len: u32) -> u16 {
    let addr_len = match family {
        Family::V4 => 4,
        Family::V6 => 16,
    };
    let acc = add_words(0, &src.0[..addr_len]);
    let acc = add_words(acc, &dst.0[..addr_len]);
    fold(add_carry(add_carry(acc, u64::from(proto)), u64::from(len)))
}

/// The checksum to store in the upper-layer header `segment` (its checksum
/// field zero), pseudo-header included, with the segment's length.
pub fn l4_checksum(family: Family, src: &Addr, dst: &Addr, proto: u8, segment: &[u8]) -> u16 {
    !combine(
        pseudo_header(family, src, dst, proto, segment.len() as u32),
        sum(segment),
    )
}

/// True if `segment` (checksum field included) verifies with its pseudo-header.
/// One pass: pseudo-header and data in one accumulator, folded once,
/// summed in the machine's byte order ([`add_native`]): only whether the
/// sum is all ones matters, which reads the same in both orders.
#[inline(always)]
pub fn verify_l4(family: Family, src: &Addr, dst: &Addr, proto: u8, segment: &[u8]) -> bool {
    let acc = match family {
        Family::V4 => {
            u64::from(u32::from_ne_bytes(src.v4_octets()))
                + u64::from(u32::from_ne_bytes(dst.v4_octets()))
        }
        Family::V6 => add_native(add_native(0, &src.0), &dst.0),
    };
    // The pseudo-header's protocol and length are big-endian words (a
    // segment is shorter than 2^16 bytes: its IP length field says so).
    let words = u64::from(u16::from(proto).to_be()) + u64::from((segment.len() as u16).to_be());
    let acc = add_carry(acc, words);
    fold(add_native(acc, segment)) == 0xffff
}

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the checksum after a 16-bit word
/// of the covered data changes from `old` to `new`. The word must sit at an
/// even offset of the covered data. For UDP a result of 0 must be stored as
/// 0xffff, and a UDP/IPv4 checksum of 0 (none) must be left alone.
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    !combine(combine(!csum, !old), new)
}

/// `update_u16` for an aligned 32-bit field (sequence numbers, IPv4 addresses).
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    let csum = update_u16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update_u16(csum, old as u16, new as u16)
}

/// `update_u16` for a run of bytes replaced by as many (an IPv4 or IPv6
/// address): `old` and `new` have the same length and start at an even offset
/// of the covered data (pseudo-header addresses do).
pub fn update_addr(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    update_summed(csum, sum(old), sum(new))
}

/// `update_addr` for IPv4 addresses, with their sums computed once by the
/// caller (`sum(old)`, `sum(new)`): the same arithmetic, so the same result.
pub fn update_summed(csum: u16, old_sum: u16, new_sum: u16) -> u16 {
    !combine(combine(!csum, !old_sum), new_sum)
}

/// `sum` of four bytes (an IPv4 address).
pub fn sum4(a: [u8; 4]) -> u16 {
    combine(
        u16::from_be_bytes([a[0], a[1]]),
        u16::from_be_bytes([a[2], a[3]]),
    )
}

/// True if the L4 checksum of `frame` as parsed into `p` is correct: TCP, UDP
/// (0 = none, fine for IPv4, invalid for IPv6 per RFC 8200 8.1), UDP-Lite (over
/// its coverage; 0 is invalid), ICMP (the message) and ICMPv6 (with the
/// pseudo-header). SCTP (CRC32c), DCCP, GRE and other protocols are not checked
/// (true), nor are fragments (true) other than IPv6 atomic fragments, which
/// hold the whole datagram. The sum covers the L3 length, not Ethernet padding.
///
/// IPv6 pseudo-headers use the final destination of a Routing header with
/// segments left and the Home Address option's address as the source (RFC 8200
/// 8.1, RFC 6275 6.3), as the sender computes them; the kernel's
/// `nf_ip6_checksum` uses the addresses in the fixed header instead, so for
/// such packets it and this function disagree.
///
/// `p` must come from `parse(frame)`; inconsistent offsets give false, never a panic.
pub fn l4_checksum_ok(frame: &[u8], p: &Parsed) -> bool {
    l4_checksum_ok_with(frame, p, true)
}

/// What conntrack checks (`nf_conntrack_checksum`): [`l4_checksum_ok`] with
/// the kernel's IPv6 pseudo-header, the fixed header's addresses
/// (`nf_ip6_checksum`: `csum_ipv6_magic(&ip6h->saddr, &ip6h->daddr, ...)`).
/// A segment summed by its sender over a Routing header's final destination
/// or a Home Address (as RFC 8200 / RFC 6275 say) is INVALID to the kernel,
/// and so to ctgate (`shared/checksums-good-bad.pcap`).
pub fn l4_checksum_ok_conntrack(frame: &[u8], p: &Parsed) -> bool {
    l4_checksum_ok_with(frame, p, false)
}

/// [`l4_checksum_ok_conntrack`] for an unfragmented TCP or UDP packet (the
/// engine's plain packets): the same answer without the dispatch.
#[inline(always)]
pub fn tcp_udp_ok(frame: &[u8], p: &Parsed) -> bool {
    let l3_end = usize::from(p.l3_offset) + usize::from(p.l3_len);
    let Some(seg) = frame.get(usize::from(p.l4_offset)..l3_end) else {
        return false;
    };
    if p.proto == IPPROTO_UDP {
        // udp_error: "packet with no checksum" is accepted (IPv6 too).
        match seg.get(udp::field::CHECKSUM..udp::HEADER_LEN) {
            None => return false,
            Some(c) if c == [0, 0] => return true,
            Some(_) => {}
        }
    }
    segment_ok(p, seg)
}

/// The sum of [`tcp_udp_ok`] (out of line: the rest of it is a few
/// compares, inlined where it is called).
#[inline(never)]
fn segment_ok(p: &Parsed, seg: &[u8]) -> bool {
    verify_l4(p.family, &p.src, &p.dst, p.proto, seg)
}

fn l4_checksum_ok_with(frame: &[u8], p: &Parsed, rfc_v6_addresses: bool) -> bool {
    if p.frag.is_some_and(|f| f.more || f.offset != 0) {
        return true;
    }
    let l3_start = usize::from(p.l3_offset);
    let l3_end = l3_start + usize::from(p.l3_len);
    let Some(seg) = frame.get(usize::from(p.l4_offset)..l3_end) else {
        return false;
    };
    if let L4::Sctp { .. } = p.l4 {
        return sctp_crc_ok(seg);
    }
    let needs_check = matches!(p.l4, L4::Tcp(_) | L4::Udp { .. } | L4::Icmp(_));
    if !needs_check {
        return true;
    }
    let (src, dst) = match p.family {
        Family::V6 if !rfc_v6_addresses => (p.src, p.dst),
        Family::V4 => (p.src, p.dst),
        Family::V6 => match frame.get(l3_start..l3_end).map(ipv6::walk_ext) {
            Some(Ok(w)) => (w.home_addr.unwrap_or(p.src), w.final_dst.unwrap_or(p.dst)),
            _ => (p.src, p.dst),
        },
    };
    match p.l4 {
        L4::Tcp(_) => verify_l4(p.family, &src, &dst, IPPROTO_TCP, seg),
        L4::Udp { .. } if p.proto == IPPROTO_UDPLITE => {
            if seg.len() < udp::HEADER_LEN || be16(seg, udp::field::CHECKSUM) == 0 {
                return false;
            }
            let coverage = usize::from(be16(seg, udp::field::LENGTH));
            let Some(coverage) = udp::udplite_coverage(coverage, seg.len()) else {
                return false;
            };
            // RFC 3828 3.1: the pseudo-header carries the datagram's length.
            // Its protocol is UDP's (17), not UDP-Lite's: what Linux's
            // conntrack checks (udplite_error hands IPPROTO_UDP to
            // nf_checksum_partial), so a checksum made by RFC 3828 fails
            // there, and here (docs/kernel-differences.md).
            let pseudo = pseudo_header(p.family, &src, &dst, IPPROTO_UDP, seg.len() as u32);
            combine(pseudo, sum(&seg[..coverage])) == 0xffff
        }
        L4::Udp { .. } => {
            if seg.len() < udp::HEADER_LEN {
                return false;
            }
            // udp_error: "packet with no checksum" is accepted, for IPv6 too
            // (conntrack does not apply the IPv6 stack's rule).
            if be16(seg, udp::field::CHECKSUM) == 0 {
                return true;
            }
            verify_l4(p.family, &src, &dst, IPPROTO_UDP, seg)
        }
        L4::Icmp(_) => match p.family {
            Family::V4 => sum(seg) == 0xffff,
            Family::V6 => verify_l4(p.family, &src, &dst, IPPROTO_ICMPV6, seg),
        },
        _ => true,
    }
}

/// Adds `data` to `acc` as big-endian words, 8 bytes at a time with end-around
/// carry (2^64 - 1 is a multiple of 2^16 - 1, so folding later gives the
/// same one's-complement sum as 16-bit words).
fn add_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc = add_carry(acc, w);
    }
    // The last 0-7 bytes padded with zeros to a 64-bit word: the same sum
    // modulo 0xffff as their 16-bit words (2^16 = 1), an odd last byte
    // taking the high half of its word as RFC 1071 pads it.
    let r = chunks.remainder().len();
    if r == 0 {
        return acc;
    }
    let tail = if data.len() >= 8 {
        // The data's last eight bytes, of which the low `r` are the tail.
        let last = &data[data.len() - 8..];
        let w = u64::from_be_bytes([
            last[0], last[1], last[2], last[3], last[4], last[5], last[6], last[7],
        ]);
        (w & (u64::MAX >> (64 - 8 * r))) << (64 - 8 * r)
    } else {
        chunks
            .remainder()
            .iter()
            .fold(0u64, |t, &b| (t << 8) | u64::from(b))
            << (64 - 8 * r)
    };
    add_carry(acc, tail)
}

/// [`add_words`] in the machine's byte order: the sum of byte-swapped
/// words is the byte-swapped sum (RFC 1071 2.(B)), so a verification that
/// compares with all ones needs no swap. The last 0-7 bytes are padded
/// with zeros as there.
#[inline(always)]
fn add_native(mut acc: u64, data: &[u8]) -> u64 {
    let (words, rest) = data.as_chunks::<8>();
    for w in words {
        acc = add_carry(acc, u64::from_ne_bytes(*w));
    }
    let r = rest.len();
    if r == 0 {
        return acc;
    }
    let tail = match data.last_chunk::<8>() {
        // The data's last eight bytes, of which the last `r` are the tail,
        // moved to where a word starting at the tail would hold them.
        Some(last) => {
            let w = u64::from_ne_bytes(*last);
            if cfg!(target_endian = "little") {
                w >> (64 - 8 * r)
            } else {
                w << (64 - 8 * r)
            }
        }
        None => rest
            .iter()
            .rev()
            .fold(0u64, |t, &b| (t << 8) | u64::from(b))
            .to_le(),
    };
    add_carry(acc, tail)
}

/// One's-complement addition modulo 2^64 - 1 (end-around carry). Never
/// overflows: `s` is at most 2^64 - 2 when `carry` is set.
fn add_carry(acc: u64, w: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(w);
    s + u64::from(carry)
}

/// Folds a one's-complement sum modulo 2^64 - 1 to 16 bits: two
/// end-around-carry additions of halves (64 -> 32 -> 16). Each keeps the
/// value modulo 2^16 - 1 and never turns a non-zero sum into 0, so the result
/// is the RFC 1071 sum (0 only for an all-zero input).
#[inline(always)]
fn fold(acc: u64) -> u16 {
    let (s, carry) = (acc as u32).overflowing_add((acc >> 32) as u32);
    // With a carry, `s` is at most 2^32 - 2: adding it back cannot wrap.
    let s = s + u32::from(carry);
    let (t, carry) = (s as u16).overflowing_add((s >> 16) as u16);
    t + u16::from(carry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every single-bit error in a header, with and without options (the
    /// loop, not the 20-byte path), is caught as the RFC 1071 sum catches it.
    #[test]
    fn ipv4_header_ok_agrees_with_rfc1071() {
        let f = crate::wire::build::frame(
            Family::V4,
            Addr::from_v4([192, 0, 2, 10]),
            Addr::from_v4([198, 51, 100, 10]),
            64,
            crate::wire::build::L4Spec::Udp {
                src_port: 1000,
                dst_port: 53,
                payload: &[1, 2, 3, 4],
            },
        );
        let plain = f[14..34].to_vec();
        let mut opts = plain.clone();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts[10..12].fill(0);
        let c = checksum(&opts);
        opts[10..12].copy_from_slice(&c.to_be_bytes());
        for mut ip in [plain, opts] {
            assert!(ipv4_header_ok(&ip));
            for i in 0..ip.len() {
                for bit in 0..8 {
                    ip[i] ^= 1 << bit;
                    assert_eq!(
                        ipv4_header_ok(&ip),
                        sum(&ip) == 0xffff,
                        "{} bytes: byte {i} bit {bit}",
                        ip.len()
                    );
                    ip[i] ^= 1 << bit;
                }
            }
        }
    }

    proptest! {
        #[test]
        fn combine_is_the_folded_sum(a in any::<u16>(), b in any::<u16>()) {
            prop_assert_eq!(combine(a, b), fold(u64::from(a) + u64::from(b)));
        }

        #[test]
        fn fold_agrees_with_folding_by_halves(acc in any::<u64>(), low in any::<u16>(), shift in 0u32..64) {
            for a in [acc, u64::from(low), acc >> shift, !(u64::from(low) << shift), u64::MAX - u64::from(low)] {
                prop_assert_eq!(fold(a), fold_by_halves(a), "{:#x}", a);
            }
        }

        #[test]
        fn four_byte_sums_and_updates_match_the_slice_versions(old in any::<[u8; 4]>(), new in any::<[u8; 4]>(), c in any::<u16>()) {
            prop_assert_eq!(sum4(old), sum(&old));
            prop_assert_eq!(update_summed(c, sum4(old), sum4(new)), update_addr(c, &old, &new));
        }
    }

    /// Folding as the code did before step 9: halves added five times over.
    fn fold_by_halves(acc: u64) -> u16 {
        let mut s = (acc & 0xffff_ffff) + (acc >> 32);
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s as u16
    }

    #[test]
    fn fold_edges() {
        for a in [
            0,
            1,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
            u64::MAX - 1,
            0xffff_0000_ffff_0000,
        ] {
            assert_eq!(fold(a), fold_by_halves(a), "{a:#x}");
        }
        assert_eq!(fold(0), 0);
        assert_eq!(fold(u64::MAX), 0xffff);
    }

    /// The reference: RFC 1071 word by word with a 32-bit accumulator.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// 0x0000 and 0xffff are the same number in one's complement.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
    }

    #[test]
    fn pseudo_header_of_all_ones_addresses() {
        // Found by the l4_checksum_ok fuzz target: the 64-bit accumulator is
        // all ones here, and adding the protocol overflowed.
        let ones = Addr([0xff; 16]);
        let by_words = reference_sum(&[[0xff; 32].as_slice(), &[0, 0, 0, 20, 0, 0, 0, 6]].concat());
        assert_eq!(pseudo_header(Family::V6, &ones, &ones, 6, 20), by_words);
        assert_eq!(sum(&[0xff; 64]), 0xffff);
        assert_eq!(sum(&[0xff; 63]), 0xff00);
    }

    #[test]
    fn ipv4_header_fixture() {
        // A UDP packet's header with checksum 0xb861 (Wikipedia's worked example).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(sum(&h), 0xffff);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z), 0xb861);
    }

    #[test]
    fn udp_v4_fixture() {
        // 192.0.2.1:1234 -> 192.0.2.2:53, payload "abcd"; checksum by hand:
        // pseudo 0xc000+0x0201+0xc000+0x0202+0x0011+0x000c, header 0x04d2+0x0035+0x000c,
        // payload 0x6162+0x6364.
        let src = Addr::from_v4([192, 0, 2, 1]);
        let dst = Addr::from_v4([192, 0, 2, 2]);
        let mut seg = [
            0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd',
        ];
        let c = l4_checksum(Family::V4, &src, &dst, IPPROTO_UDP, &seg);
        let by_hand = [
            0xc000u32, 0x0201, 0xc000, 0x0202, 0x0011, 0x000c, 0x04d2, 0x0035, 0x000c,
        ]
        .iter()
        .chain(&[0x6162, 0x6364])
        .sum::<u32>();
        let by_hand = !(((by_hand & 0xffff) + (by_hand >> 16)) as u16);
        assert_eq!(c, by_hand);
        seg[6..8].copy_from_slice(&c.to_be_bytes());
        assert!(verify_l4(Family::V4, &src, &dst, IPPROTO_UDP, &seg));
        seg[9] ^= 0x40;
        assert!(!verify_l4(Family::V4, &src, &dst, IPPROTO_UDP, &seg));
    }

    /// Random data of even length with a checksum field at an even offset.
    fn data_and_field() -> impl Strategy<Value = (Vec<u8>, usize)> {
        (1usize..400).prop_flat_map(|words| {
            (proptest::collection::vec(any::<u8>(), words * 2), 0..words)
                .prop_map(|(d, w)| (d, w * 2))
        })
    }

    /// Stores the full checksum of `data` at `field`; returns it.
    fn fill(data: &mut [u8], field: usize) -> u16 {
        data[field..field + 2].copy_from_slice(&[0, 0]);
        let c = checksum(data);
        data[field..field + 2].copy_from_slice(&c.to_be_bytes());
        c
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            prop_assert_eq!(sum(&data), reference_sum(&data));
        }

        #[test]
        fn pseudo_header_matches_reference(
            src in prop_oneof![Just([0xff; 16]), any::<[u8; 16]>()],
            dst in prop_oneof![Just([0xff; 16]), any::<[u8; 16]>()],
            proto in any::<u8>(), len in any::<u16>(),
        ) {
            let mut v6 = src.to_vec();
            v6.extend_from_slice(&dst);
            v6.extend_from_slice(&u32::from(len).to_be_bytes());
            v6.extend_from_slice(&[0, 0, 0, proto]);
            prop_assert_eq!(pseudo_header(Family::V6, &Addr(src), &Addr(dst), proto, u32::from(len)), reference_sum(&v6));
            let mut v4 = src[..4].to_vec();
            v4.extend_from_slice(&dst[..4]);
            v4.extend_from_slice(&[0, proto]);
            v4.extend_from_slice(&len.to_be_bytes());
            prop_assert_eq!(pseudo_header(Family::V4, &Addr(src), &Addr(dst), proto, u32::from(len)), reference_sum(&v4));
        }

        /// The one-pass verification is the two-step one (pseudo-header sum
        /// combined with the data's), for both families and any bytes.
        #[test]
        fn verify_l4_is_pseudo_header_plus_data(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), v6 in any::<bool>(),
            seg in proptest::collection::vec(any::<u8>(), 0..80), fix in any::<bool>(),
        ) {
            let family = if v6 { Family::V6 } else { Family::V4 };
            let (src, dst) = (Addr(src), Addr(dst));
            let mut seg = seg;
            if fix && seg.len() >= 8 {
                // Make it verify: the checksum field (UDP's) set right.
                seg[6] = 0;
                seg[7] = 0;
                let c = l4_checksum(family, &src, &dst, IPPROTO_UDP, &seg);
                seg[6..8].copy_from_slice(&c.to_be_bytes());
            }
            let two_step = combine(
                pseudo_header(family, &src, &dst, IPPROTO_UDP, seg.len() as u32),
                sum(&seg),
            ) == 0xffff;
            prop_assert_eq!(verify_l4(family, &src, &dst, IPPROTO_UDP, &seg), two_step);
            if fix && seg.len() >= 8 {
                prop_assert!(two_step);
            }
        }

        #[test]
        fn sum_of_concatenation_at_even_split(a in proptest::collection::vec(any::<u8>(), 0..100),
                                              b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut a = a;
            if a.len() % 2 == 1 { a.push(0); }
            let joined: Vec<u8> = a.iter().chain(&b).copied().collect();
            prop_assert!(same(sum(&joined), combine(sum(&a), sum(&b))));
        }

        #[test]
        fn update_u16_matches_full((mut data, field) in data_and_field(), at in any::<prop::sample::Index>(), new in any::<u16>()) {
            let c = fill(&mut data, field);
            let w = at.index(data.len() / 2) * 2;
            prop_assume!(w != field);
            let old = u16::from_be_bytes([data[w], data[w + 1]]);
            data[w..w + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update_u16(c, old, new);
            let full = fill(&mut data, field);
            prop_assert!(same(inc, full), "incremental {:#x} full {:#x}", inc, full);
            data[field..field + 2].copy_from_slice(&inc.to_be_bytes());
            prop_assert_eq!(sum(&data), 0xffff);
        }

        #[test]
        fn update_u32_matches_full((mut data, field) in data_and_field(), at in any::<prop::sample::Index>(), new in any::<u32>()) {
            prop_assume!(data.len() >= 6);
            let c = fill(&mut data, field);
            let w = at.index(data.len() / 2 - 1) * 2;
            prop_assume!(w + 4 <= field || w >= field + 2);
            let old = u32::from_be_bytes([data[w], data[w + 1], data[w + 2], data[w + 3]]);
            data[w..w + 4].copy_from_slice(&new.to_be_bytes());
            let inc = update_u32(c, old, new);
            let full = fill(&mut data, field);
            prop_assert!(same(inc, full), "incremental {:#x} full {:#x}", inc, full);
        }

        #[test]
        fn update_addr_matches_full_l4(payload in proptest::collection::vec(any::<u8>(), 8..200),
                                       v6 in any::<bool>(),
                                       old_src in any::<[u8; 16]>(), new_src in any::<[u8; 16]>(),
                                       dst in any::<[u8; 16]>()) {
            let (family, n) = if v6 { (Family::V6, 16) } else { (Family::V4, 4) };
            let norm = |a: [u8; 16]| { let mut x = [0u8; 16]; x[..n].copy_from_slice(&a[..n]); Addr(x) };
            let (old_src, new_src, dst) = (norm(old_src), norm(new_src), norm(dst));
            let mut seg = payload;
            seg[6] = 0;
            seg[7] = 0;
            let c = l4_checksum(family, &old_src, &dst, IPPROTO_UDP, &seg);
            let inc = update_addr(c, &old_src.0[..n], &new_src.0[..n]);
            let full = l4_checksum(family, &new_src, &dst, IPPROTO_UDP, &seg);
            prop_assert!(same(inc, full), "incremental {:#x} full {:#x}", inc, full);
            seg[6..8].copy_from_slice(&inc.to_be_bytes());
            prop_assert!(verify_l4(family, &new_src, &dst, IPPROTO_UDP, &seg));
        }

        #[test]
        fn single_bit_flips_are_detected((mut data, field) in data_and_field(), bit in any::<prop::sample::Index>()) {
            fill(&mut data, field);
            let b = bit.index(data.len() * 8);
            data[b / 8] ^= 1 << (b % 8);
            prop_assert_ne!(sum(&data), 0xffff);
        }
    }
}

const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn crc32c_update(mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        c = CRC32C_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    c
}

/// CRC32c (Castagnoli, reflected), as SCTP uses it (RFC 4960 appendix B).
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// sctp_error's check: the CRC32c over the packet with the checksum field zeroed
/// equals the field (stored least significant byte first).
fn sctp_crc_ok(seg: &[u8]) -> bool {
    if seg.len() < 12 {
        return false;
    }
    let stored = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let c = crc32c_update(!0, &seg[..8]);
    let c = crc32c_update(c, &[0, 0, 0, 0]);
    !crc32c_update(c, &seg[12..]) == stored
}

#[cfg(test)]
mod crc_tests {
    #[test]
    fn crc32c_check_value() {
        // The standard check value for "123456789".
        assert_eq!(super::crc32c(b"123456789"), 0xe306_9283);
    }
}
