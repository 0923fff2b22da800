//! UDP and UDP-Lite (nf_conntrack_proto_udp.c): unreplied vs stream timeouts,
//! ASSURED once traffic went both ways and the connection outlived 2 seconds.

use super::Outcome;
use crate::conn::Status;
use crate::timeout::Timeouts;

/// The kernel's stream_ts: a connection counts as a stream from 2 s after its first packet.
pub const STREAM_AFTER_MS: u64 = 2000;

/// nf_conntrack_udp_packet. `stream_ts_ms` is the connection's first packet + 2 s.
/// SEEN_REPLY is set by the engine after this call, so the first reply itself
/// still gets the unreplied timeout, as in the kernel.
pub fn packet(now_ms: u64, stream_ts_ms: u64, status: &mut Status, t: &Timeouts) -> Outcome {
    if !status.has(Status::SEEN_REPLY) {
        return Outcome::Accept {
            timeout_ms: t.udp_unreplied_ms,
        };
    }
    // time_after(jiffies, stream_ts): strictly later.
    if now_ms > stream_ts_ms {
        let stream = !status.has(Status::ASSURED);
        if stream && !status.has(Status::NAT_CLASH) {
            status.set(Status::ASSURED);
        }
        Outcome::Accept {
            timeout_ms: t.udp_stream_ms,
        }
    } else {
        Outcome::Accept {
            timeout_ms: t.udp_unreplied_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assured_only_after_reply_and_two_seconds() {
        let t = Timeouts::default();
        let mut st = Status::default();
        assert_eq!(
            packet(0, 2000, &mut st, &t),
            Outcome::Accept { timeout_ms: 30_000 }
        );
        st.set(Status::SEEN_REPLY);
        assert_eq!(
            packet(1000, 2000, &mut st, &t),
            Outcome::Accept { timeout_ms: 30_000 }
        );
        assert!(!st.has(Status::ASSURED));
        assert_eq!(
            packet(2000, 2000, &mut st, &t),
            Outcome::Accept { timeout_ms: 30_000 }
        );
        assert_eq!(
            packet(2001, 2000, &mut st, &t),
            Outcome::Accept {
                timeout_ms: 120_000
            }
        );
        assert!(st.has(Status::ASSURED));
    }
}
