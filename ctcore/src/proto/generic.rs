//! The generic tracker (nf_conntrack_proto_generic.c) and GRE
//! (nf_conntrack_proto_gre.c, without the PPTP helper's key map).

use super::Outcome;
use crate::conn::Status;
use crate::timeout::Timeouts;

/// generic_packet: refresh with the generic timeout.
pub fn packet(t: &Timeouts) -> Outcome {
    Outcome::Accept {
        timeout_ms: t.generic_ms,
    }
}

/// gre_packet: the stream timeout and ASSURED once traffic went both ways
/// (SEEN_REPLY is set by the engine after this call, as in the kernel).
pub fn gre_packet(status: &mut Status, t: &Timeouts) -> Outcome {
    if status.has(Status::SEEN_REPLY) {
        if !status.has(Status::NAT_CLASH) {
            status.set(Status::ASSURED);
        }
        Outcome::Accept {
            timeout_ms: t.gre_stream_ms,
        }
    } else {
        Outcome::Accept {
            timeout_ms: t.gre_unreplied_ms,
        }
    }
}
