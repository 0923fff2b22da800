//! Connection tuples: one type for both directions, like the kernel's
//! `struct nf_conntrack_tuple` (`tuplehash[2]` holds the original and the reply).

/// Direction of a packet relative to the connection that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Dir {
    #[default]
    Orig = 0,
    Reply = 1,
}

impl Dir {
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// Network-layer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Family {
    #[default]
    V4 = 4,
    V6 = 6,
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_UDPLITE: u8 = 136;

/// An IPv4 or IPv6 address; IPv4 lives in the first 4 bytes, the rest zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    pub fn from_v4(octets: [u8; 4]) -> Addr {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&octets);
        Addr(a)
    }
    /// [`Addr::from_v4`] made as one 16-byte value, stored whole (not 16
    /// zero bytes and then 4 written over them): for an address copied
    /// right after it is made, since a 16-byte load of an address stored
    /// in parts is not forwarded from those stores (a stall of a dozen
    /// cycles or more). Where only its first 4 bytes are read again (the
    /// established packets' translation), `from_v4` takes fewer
    /// instructions.
    #[inline(always)]
    pub fn from_v4_whole(octets: [u8; 4]) -> Addr {
        Addr(u128::from(u32::from_le_bytes(octets)).to_le_bytes())
    }
    pub fn v4_octets(&self) -> [u8; 4] {
        [self.0[0], self.0[1], self.0[2], self.0[3]]
    }
    pub fn to_ip(&self, family: Family) -> std::net::IpAddr {
        match family {
            Family::V4 => std::net::IpAddr::V4(self.v4_octets().into()),
            Family::V6 => std::net::IpAddr::V6(self.0.into()),
        }
    }
    pub fn from_ip(ip: std::net::IpAddr) -> (Addr, Family) {
        match ip {
            std::net::IpAddr::V4(a) => (Addr::from_v4(a.octets()), Family::V4),
            std::net::IpAddr::V6(a) => (Addr(a.octets()), Family::V6),
        }
    }
}

/// One direction of a connection: the kernel's `nf_conntrack_tuple` plus the zone.
///
/// Per protocol, `src_port`/`dst_port` hold what the kernel's `u.all` union holds:
/// ports for TCP/UDP/UDP-Lite/SCTP/DCCP; for ICMP/ICMPv6 `src_port` is the echo id
/// and `dst_port` is `(type << 8) | code`; for GRE the source and destination keys;
/// 0 for the generic tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct Tuple {
    pub src: Addr,
    pub dst: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: Family,
    pub zone: u16,
}

/// The kernel's ICMP invmap: the reply type to a request type.
fn icmp_reply_type(family: Family, t: u8) -> Option<u8> {
    match family {
        // echo, timestamp, info request, address mask (nf_conntrack_proto_icmp.c)
        Family::V4 => match t {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        },
        // echo, node information (nf_conntrack_proto_icmpv6.c)
        Family::V6 => match t {
            128 => Some(129),
            129 => Some(128),
            139 => Some(140),
            140 => Some(139),
            _ => None,
        },
    }
}

/// ICMP or ICMPv6: a tuple of either has the echo id and type where
/// others have ports.
#[inline(always)]
pub fn is_icmp_proto(proto: u8) -> bool {
    proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6
}

impl Tuple {
    pub fn is_icmp(&self) -> bool {
        is_icmp_proto(self.proto)
    }
    pub fn icmp_type(&self) -> u8 {
        (self.dst_port >> 8) as u8
    }
    pub fn icmp_code(&self) -> u8 {
        self.dst_port as u8
    }

    /// The tuple a reply would carry (nf_ct_invert_tuple); `None` where the kernel
    /// cannot invert it (an ICMP type with no reply type).
    #[inline]
    pub fn invert(&self) -> Option<Tuple> {
        let mut r = *self;
        r.src = self.dst;
        r.dst = self.src;
        if self.is_icmp() {
            let t = icmp_reply_type(self.family, self.icmp_type())?;
            r.src_port = self.src_port;
            r.dst_port = ((t as u16) << 8) | self.icmp_code() as u16;
        } else {
            r.src_port = self.dst_port;
            r.dst_port = self.src_port;
        }
        Some(r)
    }

    /// What both hashes take in: the two endpoints as words, the smaller
    /// first (so a tuple and its inversion agree), the protocol / family /
    /// zone word, and whether the endpoints were swapped. ICMP uses the id on
    /// both sides (the type differs between the directions).
    #[inline(always)]
    fn hash_input(&self) -> ((u64, u64), (u64, u64), u64, bool) {
        let dp = if self.is_icmp() {
            self.src_port
        } else {
            self.dst_port
        };
        let a = endpoint_word(&self.src, self.src_port);
        let b = endpoint_word(&self.dst, dp);
        let flip = a > b;
        let (lo, hi) = if flip { (b, a) } else { (a, b) };
        let tail = (self.proto as u64) | ((self.family as u64) << 8) | ((self.zone as u64) << 16);
        (lo, hi, tail, flip)
    }

    /// Seeded hash, symmetric in the two endpoints: a tuple and its inversion
    /// hash alike, so both directions of an un-NATed connection share a bucket.
    /// For ICMP only the id counts (the type differs between the directions).
    pub fn hash(&self, seed: u64) -> u64 {
        let (lo, hi, tail, _) = self.hash_input();
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        h = mix(h ^ lo.0);
        h = mix(h ^ lo.1);
        h = mix(h ^ hi.0);
        h = mix(h ^ hi.1);
        mix(h ^ tail)
    }
}

/// The table's hash key: six words derived from the seed.
#[derive(Debug, Clone, Copy)]
pub struct HashKey([u64; 6]);

impl HashKey {
    pub fn new(seed: u64) -> HashKey {
        let mut x = seed;
        HashKey(std::array::from_fn(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(x) | 1
        }))
    }
}

/// 64x64 -> 128-bit multiply, folded (wyhash's mum): two of these in
/// parallel and one after, instead of a chain of dependent mixers.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

impl Tuple {
    /// The table's seeded hash, symmetric in the two endpoints (a tuple and
    /// its inversion hash alike), and whether the endpoints were swapped to
    /// make it so (the two directions of a connection differ in this bit).
    /// For ICMP only the id counts, as in [`Tuple::hash`].
    #[inline(always)]
    pub fn hash_with(&self, k: &HashKey) -> (u64, bool) {
        if self.family == Family::V4 {
            return self.hash_v4(k);
        }
        let (lo, hi, tail, flip) = self.hash_input();
        let x = mum(lo.0 ^ k.0[0], hi.0 ^ k.0[1]);
        let y = mum(lo.1 ^ k.0[2], (hi.1 ^ tail.rotate_left(40)) ^ k.0[3]);
        (mum(x ^ k.0[4], y ^ k.0[5]), flip)
    }

    /// [`Tuple::hash_with`] for IPv4: an endpoint (address and port) is one
    /// word, so two multiplies instead of three and half the words to
    /// order. Symmetric and flipped as the general form (the smaller
    /// endpoint first; equal endpoints do not flip).
    #[inline(always)]
    fn hash_v4(&self, k: &HashKey) -> (u64, bool) {
        let dp = if self.is_icmp() {
            self.src_port
        } else {
            self.dst_port
        };
        let addr = |a: &Addr| u32::from_le_bytes(a.v4_octets());
        V4Parts {
            src: (addr(&self.src), self.src_port),
            dst: (addr(&self.dst), dp),
            proto: self.proto,
            zone: self.zone,
        }
        .hash_with(k)
    }
}

/// What [`Tuple::hash_with`] hashes of an IPv4 tuple: its endpoints
/// (address as a little-endian word, port; for ICMP the destination's
/// port is the id, as the source's), protocol and zone. A record's
/// compact tuple holds them, so it is hashed without building the whole
/// tuple.
#[derive(Debug, Clone, Copy)]
pub struct V4Parts {
    pub src: (u32, u16),
    pub dst: (u32, u16),
    pub proto: u8,
    pub zone: u16,
}

impl V4Parts {
    /// [`Tuple::hash_with`] of the tuple these are of.
    #[inline(always)]
    pub fn hash_with(&self, k: &HashKey) -> (u64, bool) {
        let word = |(a, port): (u32, u16)| u64::from(a) | u64::from(port) << 32;
        let (a, b) = (word(self.src), word(self.dst));
        let flip = a > b;
        let (lo, hi) = if flip { (b, a) } else { (a, b) };
        let tail = (self.proto as u64) | ((Family::V4 as u64) << 8) | ((self.zone as u64) << 16);
        let x = mum(lo ^ k.0[0], hi ^ k.0[1]);
        (mum(x ^ k.0[4], tail.rotate_left(40) ^ k.0[5]), flip)
    }
}

/// An endpoint (address + port) folded into two words.
#[inline(always)]
fn endpoint_word(a: &Addr, port: u16) -> (u64, u64) {
    let (w0, w1) = a.0.split_at(8);
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
    (word(w0), word(w1) ^ ((port as u64) << 48).rotate_left(7))
}

/// A 64-bit multiply-xorshift mixer (splitmix64's finaliser).
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_tuple() -> impl Strategy<Value = Tuple> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
            prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(58u8), Just(47u8)],
            any::<bool>(),
            any::<u16>(),
        )
            .prop_map(|(s, d, sp, dp, proto, v6, zone)| {
                let family = if v6 { Family::V6 } else { Family::V4 };
                let fix = |mut a: [u8; 16]| {
                    if !v6 {
                        a[4..].fill(0)
                    }
                    Addr(a)
                };
                let dp = if proto == 1 {
                    8 << 8
                } else if proto == 58 {
                    128 << 8
                } else {
                    dp
                };
                let proto = if proto == 58 && !v6 {
                    1
                } else if proto == 1 && v6 {
                    58
                } else {
                    proto
                };
                let dp = if proto == 58 {
                    128 << 8
                } else if proto == 1 {
                    8 << 8
                } else {
                    dp
                };
                Tuple {
                    src: fix(s),
                    dst: fix(d),
                    src_port: sp,
                    dst_port: dp,
                    proto,
                    family,
                    zone,
                }
            })
    }

    #[test]
    fn an_ipv4_address_made_whole_is_the_same_address() {
        for octets in [
            [0, 0, 0, 0],
            [192, 0, 2, 1],
            [203, 0, 113, 64],
            [255, 1, 128, 7],
        ] {
            assert_eq!(Addr::from_v4_whole(octets), Addr::from_v4(octets));
            assert_eq!(Addr::from_v4_whole(octets).v4_octets(), octets);
        }
    }

    proptest! {
        #[test]
        fn invert_is_an_involution(t in arb_tuple()) {
            let r = t.invert().unwrap();
            prop_assert_eq!(r.invert().unwrap(), t);
        }

        #[test]
        fn hash_is_symmetric(t in arb_tuple(), seed in any::<u64>()) {
            let r = t.invert().unwrap();
            prop_assert_eq!(t.hash(seed), r.hash(seed));
            let k = HashKey::new(seed);
            let ((h1, f1), (h2, f2)) = (t.hash_with(&k), r.hash_with(&k));
            prop_assert_eq!(h1, h2);
            // The directions differ in `flip` unless both endpoints are equal.
            prop_assert!(f1 != f2 || (t.src == t.dst && t.src_port == t.dst_port) || (t.is_icmp() && t.src == t.dst));
        }
    }

    #[test]
    fn icmp_without_reply_type_does_not_invert() {
        let t = Tuple {
            proto: IPPROTO_ICMP,
            dst_port: 3 << 8,
            ..Default::default()
        };
        assert!(t.invert().is_none());
    }

    #[test]
    fn seed_changes_hash() {
        let t = Tuple {
            src: Addr::from_v4([192, 0, 2, 1]),
            dst: Addr::from_v4([198, 51, 100, 1]),
            src_port: 1,
            dst_port: 2,
            proto: 6,
            ..Default::default()
        };
        assert_ne!(t.hash(1), t.hash(2));
    }
}
