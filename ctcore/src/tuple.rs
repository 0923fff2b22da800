//! Connection tuples: one type for both directions, like the kernel's
//! `struct nf_conntrack_tuple` (`tuplehash[2]` holds the original and the reply).

/// Direction of a packet relative to the connection that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dir {
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
