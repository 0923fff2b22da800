//! ICMP and ICMPv6 queries (nf_conntrack_proto_icmp.c / _icmpv6.c): connections
//! keyed by the echo id; only request types may start one.

use super::Outcome;
use crate::timeout::Timeouts;
use crate::tuple::{Family, Tuple};

/// Highest ICMP type the kernel knows (NR_ICMP_TYPES).
pub const NR_ICMP_TYPES: u8 = 18;

/// True for ICMP error types (icmp_is_err) / ICMPv6 errors (type < 128).
pub fn is_error(family: Family, icmp_type: u8) -> bool {
    match family {
        Family::V4 => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        Family::V6 => icmp_type < 128,
    }
}

/// ICMPv6 types the kernel leaves untracked (noct_valid_new: MLD and ND messages).
pub fn icmpv6_untracked(icmp_type: u8) -> bool {
    matches!(icmp_type, 130..=137 | 143)
}

/// Types that may create a connection (valid_new).
fn valid_new(family: Family, icmp_type: u8) -> bool {
    match family {
        Family::V4 => matches!(icmp_type, 8 | 13 | 15 | 17),
        Family::V6 => matches!(icmp_type, 128 | 139),
    }
}

/// nf_conntrack_icmp_packet / nf_conntrack_icmpv6_packet for the connection whose
/// original tuple is `orig`.
pub fn packet(orig: &Tuple, t: &Timeouts) -> Outcome {
    if !valid_new(orig.family, orig.icmp_type()) {
        return Outcome::Invalid("icmp: cannot create a connection with this type");
    }
    Outcome::Accept {
        timeout_ms: if orig.family == Family::V4 {
            t.icmp_ms
        } else {
            t.icmpv6_ms
        },
    }
}
