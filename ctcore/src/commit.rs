//! Connections learnt from elsewhere, put into the table: what `conntrackd -c`
//! does through ctnetlink's create (`ctnetlink_create_conntrack`) when a
//! backup takes over from a failed active box.
//!
//! A learnt connection arrives as its two tuples, status bits, mark, the
//! timeout left and its protocol state. It is checked the way ctnetlink
//! checks a create (the tuples must belong together, the status bits are the
//! ones a create may set), made CONFIRMED, and inserted under the table's
//! guard like a packet's connection: its source NAT port is then taken in the
//! stripe's port maps, so that the backup's own new connections never pick
//! it. TCP window tracking starts over: both sides' windows are empty and
//! marked liberal (`IP_CT_TCP_FLAG_BE_LIBERAL`, what conntrackd sets on what
//! it commits unless `TCPWindowTracking` is on), so the first segment in each
//! direction sets that side's window (the kernel's mid-stream pickup in
//! `tcp_in_window`) and no segment of a connection in flight is INVALID.

use crate::conn::{Conn, Ext, ProtoState, Status};
use crate::engine::{ConnHandle, Engine, Worker};
use crate::event::EventKind;
use crate::proto::sctp::{SctpConntrack, SctpState};
use crate::proto::tcp::{TcpConntrack, TcpPeer, TcpState};
use crate::proto::udp;
use crate::sync::{L4State, SyncConn};
use crate::table::prefetch::Prefetch;
use crate::table::{Clash, Eviction, InsertError};
use crate::tuple::{
    Tuple, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

/// Status bits a learnt connection keeps (ctnetlink lets a create set these;
/// CONFIRMED is set by the commit, the rest are the table's own).
pub const LEARNT_STATUS: u32 = Status::EXPECTED
    | Status::SEEN_REPLY
    | Status::ASSURED
    | Status::SRC_NAT
    | Status::DST_NAT
    | Status::SRC_NAT_DONE
    | Status::DST_NAT_DONE
    | Status::FIXED_TIMEOUT;

/// The protocol state a peer reports (conntrackd's `NTA_TCP_STATE`,
/// `NTA_TCP_WSCALE_*`, `NTA_SCTP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LearntState {
    /// Nothing beyond the tuples (UDP, ICMP, the generic protocols).
    #[default]
    None,
    Tcp {
        state: TcpConntrack,
        /// Window scale per direction (`Dir::index()`), as negotiated.
        wscale: [u8; 2],
    },
    Sctp {
        state: SctpConntrack,
        /// Verification tags per direction, as read from the wire.
        vtag: [u32; 2],
    },
}

/// A connection as another box reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learnt {
    pub orig: Tuple,
    pub reply: Tuple,
    /// Kernel status bits (`IPS_*`); only [`LEARNT_STATUS`] are kept.
    pub status: u32,
    pub mark: u32,
    /// What was left of its timeout when it was reported.
    pub timeout_ms: u64,
    pub state: LearntState,
}

/// Why a learnt connection was not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("a connection holding one of its tuples is in the table")]
    Exists,
    #[error("the table is full")]
    Full,
    #[error("not a connection: {0}")]
    Invalid(&'static str),
}

impl Learnt {
    /// What this box reports of one of its connections at `now_ms` (the
    /// other side of [`Learnt::to_conn`]).
    pub fn of(c: &Conn, now_ms: u64) -> Learnt {
        let state = match c.proto {
            ProtoState::Tcp(t) => LearntState::Tcp {
                state: t.state,
                wscale: [t.seen[0].td_scale, t.seen[1].td_scale],
            },
            ProtoState::Sctp(s) => LearntState::Sctp {
                state: s.state,
                vtag: s.vtag,
            },
            _ => LearntState::None,
        };
        Learnt {
            orig: c.tuples[0],
            reply: c.tuples[1],
            status: c.status.0 & LEARNT_STATUS,
            mark: c.mark,
            timeout_ms: c.deadline_ms.saturating_sub(now_ms),
            state,
        }
    }

    /// The connection to insert, CONFIRMED, expiring `timeout_ms` after `now_ms`.
    pub fn to_conn(&self, now_ms: u64) -> Result<Conn, CommitError> {
        let (o, r) = (&self.orig, &self.reply);
        if o.family != r.family || o.proto != r.proto || o.zone != r.zone {
            return Err(CommitError::Invalid(
                "the tuples differ in family, protocol or zone",
            ));
        }
        let plain = o.invert().ok_or(CommitError::Invalid(
            "an ICMP type that has no reply cannot be a connection",
        ))?;
        let mut status = Status(self.status & LEARNT_STATUS);
        if plain == *r {
            status.clear(
                Status::SRC_NAT | Status::DST_NAT | Status::SRC_NAT_DONE | Status::DST_NAT_DONE,
            );
        } else if !status.has(Status::SRC_NAT) && !status.has(Status::DST_NAT) {
            return Err(CommitError::Invalid(
                "the reply tuple is not the inverted original, and no NAT is said",
            ));
        }
        status.set(Status::CONFIRMED);
        let proto = match (o.proto, self.state) {
            (IPPROTO_TCP, LearntState::Tcp { state, wscale }) => {
                ProtoState::Tcp(picked_up(state, wscale))
            }
            (IPPROTO_TCP, _) => ProtoState::Tcp(picked_up(TcpConntrack::Established, [0, 0])),
            (IPPROTO_SCTP, LearntState::Sctp { state, vtag }) => ProtoState::Sctp(SctpState {
                state,
                vtag,
                ..SctpState::default()
            }),
            (IPPROTO_SCTP, _) => {
                return Err(CommitError::Invalid("an SCTP connection without its state"))
            }
            (IPPROTO_ICMP | IPPROTO_ICMPV6, _) => ProtoState::Icmp,
            (IPPROTO_UDP | IPPROTO_UDPLITE, _) => ProtoState::Stream {
                stream_ts_ms: crate::conn::Ms4::new(now_ms + udp::STREAM_AFTER_MS),
            },
            _ => ProtoState::Generic,
        };
        if o.proto != IPPROTO_TCP && matches!(self.state, LearntState::Tcp { .. }) {
            return Err(CommitError::Invalid(
                "TCP state on a connection that is not TCP",
            ));
        }
        let mut c = Conn {
            tuples: [*o, *r],
            deadline_ms: now_ms.saturating_add(self.timeout_ms),
            status,
            id: 0,
            proto,
            mark: self.mark,
            nat_csum: None,
            helper: crate::helper::Helper::None,
            verdicts: [0; 2],
        };
        c.nat_csum = crate::nat::rewrite::csum_deltas(&c);
        Ok(c)
    }
}

/// TCP state for a connection picked up in `state`: both windows empty (the
/// next segment each way sets them) and liberal.
fn picked_up(state: TcpConntrack, wscale: [u8; 2]) -> TcpState {
    let peer = |scale: u8| TcpPeer {
        td_scale: scale,
        flags: TcpPeer::FLAG_BE_LIBERAL
            | if scale > 0 {
                TcpPeer::FLAG_WINDOW_SCALE
            } else {
                0
            },
        ..TcpPeer::default()
    };
    TcpState {
        state,
        seen: [peer(wscale[0]), peer(wscale[1])],
        ..TcpState::default()
    }
}

impl<P: Prefetch> Engine<P> {
    /// Puts a learnt connection into the table (its NEW event goes to
    /// `w.events`). An expired connection holding one of its tuples gives
    /// way; a live one is [`CommitError::Exists`] (ctnetlink's EEXIST).
    pub fn commit(
        &self,
        w: &mut Worker,
        now_ms: u64,
        learnt: &Learnt,
    ) -> Result<ConnHandle, CommitError> {
        let conn = learnt.to_conn(now_ms)?;
        let mut g = self.table().guard();
        for t in &conn.tuples {
            let taken = g.taken(t, now_ms, &mut |dead| {
                w.stats.expired += 1;
                w.events.push(EventKind::Destroy, now_ms, &dead);
            });
            if taken {
                return Err(CommitError::Exists);
            }
        }
        match g.insert(&conn, Clash::Both, false, &mut Eviction::default()) {
            Ok((r, id)) => {
                w.stats.insert += 1;
                g.set_ext(
                    r,
                    Ext {
                        counters: Default::default(),
                        start_ms: now_ms,
                    },
                );
                let l = g.listed(r);
                w.events.push(EventKind::New, now_ms, &l);
                Ok(ConnHandle {
                    stripe: r.stripe,
                    local: r.local,
                    id,
                })
            }
            Err(InsertError::Full) => Err(CommitError::Full),
            Err(InsertError::Clash) => Err(CommitError::Exists),
        }
    }
}

/// The timeout given to a connection a peer reported without one
/// (conntrackd leaves `NTA_TIMEOUT` out when its `CommitTimeout` is set).
pub const NO_TIMEOUT_MS: u64 = 180_000;

impl Learnt {
    /// What this box says of one of its connections in conntrackd's protocol.
    pub fn to_sync(&self) -> SyncConn {
        let l4 = match self.state {
            LearntState::Tcp { state, wscale } => L4State::Tcp {
                state: state as u8,
                wscale_orig: Some(wscale[0]),
                wscale_reply: Some(wscale[1]),
            },
            LearntState::Sctp { state, vtag } => L4State::Sctp {
                state: state as u8,
                vtag_orig: vtag[0],
                vtag_reply: vtag[1],
            },
            LearntState::None => L4State::None,
        };
        // Seconds, rounded up: a connection with 300 ms left is not reported dead.
        let timeout_s = self.timeout_ms.div_ceil(1000).min(u64::from(u32::MAX)) as u32;
        SyncConn::new(
            self.orig,
            self.reply,
            self.status,
            Some(timeout_s),
            Some(self.mark),
            l4,
        )
    }

    /// What a peer said of one of its connections.
    pub fn from_sync(c: &SyncConn) -> Learnt {
        let state = match c.l4 {
            L4State::Tcp {
                state,
                wscale_orig,
                wscale_reply,
            } => LearntState::Tcp {
                // A state number this kernel does not have: picked up as
                // established (the peer forwards its packets).
                state: TcpConntrack::from_number(state).unwrap_or(TcpConntrack::Established),
                wscale: [wscale_orig.unwrap_or(0), wscale_reply.unwrap_or(0)],
            },
            L4State::Sctp {
                state,
                vtag_orig,
                vtag_reply,
            } => LearntState::Sctp {
                state: SctpConntrack::from_number(state).unwrap_or(SctpConntrack::Established),
                vtag: [vtag_orig, vtag_reply],
            },
            L4State::None | L4State::Dccp { .. } => LearntState::None,
        };
        Learnt {
            orig: c.orig,
            reply: c.reply,
            status: c.status,
            mark: c.mark.unwrap_or(0),
            timeout_ms: c.timeout_s.map_or(NO_TIMEOUT_MS, |s| u64::from(s) * 1000),
            state,
        }
    }
}

#[cfg(test)]
mod tests;
