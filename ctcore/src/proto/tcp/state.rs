//! The TCP state machine: the kernel's `tcp_conntracks` transition table and
//! flag check, and what `tcp_new` / `nf_conntrack_tcp_packet` do around them
//! (the sIG resync, the RST checks, nf_tcp_handle_invalid, the timeouts and
//! ASSURED); the window check itself is [`super::window`]'s.

use super::options::tcp_options;
use super::window::{before, peer_reset, segment_end, Window};
use super::{TcpConfig, TcpConntrack, TcpIndex, TcpOutcome, TcpPeer, TcpSegment, TcpState};
use crate::conn::Status;
use crate::timeout::Timeouts;
use crate::tuple::Dir;
use crate::wire::{tcp_flags, TcpInfo};

/// `tcp_conntracks` entries: a state, or the kernel's sIV / sIG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    To(TcpConntrack),
    Invalid,
    Ignore,
}

const S_SS: Next = Next::To(TcpConntrack::SynSent);
const S_SR: Next = Next::To(TcpConntrack::SynRecv);
const S_ES: Next = Next::To(TcpConntrack::Established);
const S_FW: Next = Next::To(TcpConntrack::FinWait);
const S_CW: Next = Next::To(TcpConntrack::CloseWait);
const S_LA: Next = Next::To(TcpConntrack::LastAck);
const S_TW: Next = Next::To(TcpConntrack::TimeWait);
const S_CL: Next = Next::To(TcpConntrack::Close);
const S_S2: Next = Next::To(TcpConntrack::SynSent2);
const S_IV: Next = Next::Invalid;
const S_IG: Next = Next::Ignore;

/// The kernel's `tcp_conntracks[dir][index][old state]` (6.x).
/// Columns: NO, SS, SR, ES, FW, CW, LA, TW, CL, S2.
const TCP_CONNTRACKS: [[[Next; 10]; 6]; 2] = [
    // Original direction.
    [
        /* syn    */ [S_SS, S_SS, S_IG, S_IG, S_IG, S_IG, S_IG, S_SS, S_SS, S_S2],
        /* synack */ [S_IV, S_IV, S_SR, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_SR],
        /* fin    */ [S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV],
        /* ack    */ [S_ES, S_IV, S_ES, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IV],
        /* rst    */ [S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL],
        /* none   */ [S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV],
    ],
    // Reply direction.
    [
        /* syn    */ [S_IV, S_S2, S_IV, S_IV, S_IV, S_IV, S_IV, S_SS, S_IV, S_S2],
        /* synack */ [S_IV, S_SR, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_SR],
        /* fin    */ [S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV],
        /* ack    */ [S_IV, S_IG, S_SR, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IG],
        /* rst    */ [S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL],
        /* none   */ [S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV],
    ],
];

/// `tcp_valid_flags`, indexed by the flags without PSH, ECE and CWR.
const TCP_VALID_FLAGS: [bool; 64] = {
    use tcp_flags::{ACK, FIN, RST, SYN, URG};
    let mut t = [false; 64];
    t[SYN as usize] = true;
    t[(SYN | URG) as usize] = true;
    t[(SYN | ACK) as usize] = true;
    t[RST as usize] = true;
    t[(RST | ACK) as usize] = true;
    t[(FIN | ACK) as usize] = true;
    t[(FIN | ACK | URG) as usize] = true;
    t[ACK as usize] = true;
    t[(ACK | URG) as usize] = true;
    t
};

/// The kernel's flag check in `tcp_error`: false for flag combinations that
/// make the packet INVALID (and create no entry). PSH, ECE and CWR are ignored.
pub fn tcp_error_flags_ok(flags: u8) -> bool {
    let masked = flags & !(tcp_flags::ECE | tcp_flags::CWR | tcp_flags::PSH);
    TCP_VALID_FLAGS[usize::from(masked)]
}

/// The non-checksum parts of `tcp_error`.
fn tcp_error(th: &TcpInfo) -> Result<(), &'static str> {
    if th.header_len < 20 {
        return Err("truncated packet");
    }
    if !tcp_error_flags_ok(th.flags) {
        return Err("invalid tcp flag combination");
    }
    Ok(())
}

fn dir_of(raw: u8) -> Dir {
    if raw == 0 {
        Dir::Orig
    } else {
        Dir::Reply
    }
}

impl TcpState {
    /// `last_flags`: an original-direction SYN was ignored in LAST_ACK, so the
    /// next reply ACK may be an RFC 5961 challenge ACK (IP_CT_EXP_CHALLENGE_ACK).
    pub const EXP_CHALLENGE_ACK: u8 = 0x40;
    /// `last_flags`: SYN_SENT2 was entered (IP_CT_TCP_SIMULTANEOUS_OPEN).
    pub const SIMULTANEOUS_OPEN: u8 = 0x80;

    /// The kernel's tcp_new(): the state for a connection whose first packet is
    /// `seg` (original direction), or `Err(reason)` if it cannot start one
    /// (the packet is then INVALID and nothing is created). Only a SYN starts a
    /// connection, or with `cfg.loose` an ACK (mid-stream pickup: both sides get
    /// SACK_PERM and BE_LIBERAL). The state is NONE until `packet` runs on the
    /// same segment (see the module docs).
    pub fn new(seg: &TcpSegment<'_>, cfg: &TcpConfig) -> Result<TcpState, &'static str> {
        let th = &seg.info;
        tcp_error(th)?;
        let index = TcpIndex::of(th.flags);
        let next = TCP_CONNTRACKS[Dir::Orig.index()][index as usize][TcpConntrack::None as usize];
        let mut st = TcpState {
            last_index: TcpIndex::None,
            ..TcpState::default()
        };
        let first = &mut st.seen[Dir::Orig.index()];
        first.td_end = segment_end(th);
        first.td_maxwin = u32::from(th.window).max(1);
        match next {
            Next::To(TcpConntrack::SynSent) => {
                first.td_maxend = first.td_end;
                tcp_options(seg, first);
            }
            Next::To(_) if cfg.loose => {
                first.td_maxend = first.td_end.wrapping_add(first.td_maxwin);
                let flags = TcpPeer::FLAG_SACK_PERM | TcpPeer::FLAG_BE_LIBERAL;
                st.seen[0].flags = flags;
                st.seen[1].flags = flags;
            }
            Next::To(_) => return Err("mid-stream pickup disabled (loose off)"),
            Next::Invalid | Next::Ignore => return Err("invalid new"),
        }
        Ok(st)
    }

    /// The kernel's nf_conntrack_tcp_packet() for a packet in direction `dir`.
    /// `status` is the connection's status: the tracker reads SEEN_REPLY and
    /// sets ASSURED as the kernel does. `l3_len`/`l4_offset_in_l3` are not needed:
    /// `seg.info.payload_len` is the segment's data length.
    pub fn packet(
        &mut self,
        dir: Dir,
        seg: &TcpSegment<'_>,
        status: &mut Status,
        cfg: &TcpConfig,
        timeouts: &Timeouts,
    ) -> TcpOutcome {
        let th = &seg.info;
        if let Err(reason) = tcp_error(th) {
            return TcpOutcome::Invalid(reason);
        }
        let d = dir.index();
        let mut old_state = self.state;
        let index = TcpIndex::of(th.flags);
        let mut skip_window = false;

        let new_state = match TCP_CONNTRACKS[d][index as usize][old_state as usize] {
            Next::To(TcpConntrack::SynSent) if old_state as u8 >= TcpConntrack::TimeWait as u8 => {
                // RFC 1122 4.2.2.13: a SYN may reopen from TIME_WAIT; also a
                // client aborting (RST) and starting over.
                let closing = (self.seen[0].flags | self.seen[1].flags) & TcpPeer::FLAG_CLOSE_INIT;
                if closing != 0 || (self.last_dir == dir as u8 && self.last_index == TcpIndex::Rst)
                {
                    return TcpOutcome::Repeat;
                }
                match self.on_ignored(dir, index, seg, old_state) {
                    Some(resync) => {
                        old_state = TcpConntrack::SynSent;
                        resync
                    }
                    None => return TcpOutcome::Ignore,
                }
            }
            Next::Ignore => match self.on_ignored(dir, index, seg, old_state) {
                Some(resync) => {
                    old_state = TcpConntrack::SynSent;
                    resync
                }
                None => return TcpOutcome::Ignore,
            },
            Next::Invalid => return TcpOutcome::Invalid("packet invalid in this state"),
            Next::To(TcpConntrack::TimeWait) => {
                // RFC 5961 challenge ACK answering a SYN we let through in
                // LAST_ACK: it does not ack the last FIN.
                if old_state == TcpConntrack::LastAck
                    && index == TcpIndex::Ack
                    && self.last_dir != dir as u8
                    && self.last_index == TcpIndex::Syn
                    && self.last_flags & Self::EXP_CHALLENGE_ACK != 0
                {
                    self.last_flags &= !Self::EXP_CHALLENGE_ACK;
                    return TcpOutcome::Ignore;
                }
                TcpConntrack::TimeWait
            }
            Next::To(TcpConntrack::SynSent2) => {
                self.last_flags |= Self::SIMULTANEOUS_OPEN;
                TcpConntrack::SynSent2
            }
            Next::To(TcpConntrack::SynRecv) => {
                if dir == Dir::Reply
                    && index == TcpIndex::Ack
                    && self.last_flags & Self::SIMULTANEOUS_OPEN != 0
                {
                    TcpConntrack::Established
                } else {
                    TcpConntrack::SynRecv
                }
            }
            Next::To(TcpConntrack::Close) if index == TcpIndex::Rst => {
                match self.rst_check(dir, th, old_state, status, cfg) {
                    RstCheck::Invalid => return TcpOutcome::Invalid("invalid rst"),
                    RstCheck::Window(s) => s,
                    RstCheck::SkipWindow(s) => {
                        skip_window = true;
                        s
                    }
                }
            }
            Next::To(s) => s,
        };

        if !skip_window {
            match self.in_window(dir, index, seg, cfg) {
                Window::Accept => {}
                Window::Ignore => return TcpOutcome::Ignore,
                Window::Invalid(reason) => {
                    return self.handle_invalid(dir, index, reason, status, timeouts)
                }
            }
        }

        // From here on the packet is in window.
        self.last_index = index;
        self.last_dir = dir as u8;
        self.state = new_state;
        if old_state != new_state && new_state == TcpConntrack::FinWait {
            self.seen[d].flags |= TcpPeer::FLAG_CLOSE_INIT;
        }

        let state_ms = new_state.timeout_ms(timeouts);
        let unacked =
            (self.seen[0].flags | self.seen[1].flags) & TcpPeer::FLAG_DATA_UNACKNOWLEDGED != 0;
        let mut timeout_ms =
            if self.retrans >= cfg.max_retrans && state_ms > timeouts.tcp_retrans_ms {
                timeouts.tcp_retrans_ms
            } else if index == TcpIndex::Rst {
                timeouts.tcp_close_ms
            } else if unacked && state_ms > timeouts.tcp_unack_ms {
                timeouts.tcp_unack_ms
            } else if self.last_win == 0 && state_ms > timeouts.tcp_retrans_ms {
                timeouts.tcp_retrans_ms
            } else {
                state_ms
            };

        if !status.has(Status::SEEN_REPLY) {
            // Only an RST came back (or went out) before any reply: nothing was
            // established, drop the entry now.
            if th.flags & tcp_flags::RST != 0 {
                return TcpOutcome::AcceptAndKill;
            }
            // A retransmitted SYN must not keep an unanswered entry alive forever.
            if index == TcpIndex::Syn && old_state == TcpConntrack::SynSent {
                return TcpOutcome::Ignore;
            }
            // Picked up mid-stream, no reply yet: no 5-day timeout.
            if new_state == TcpConntrack::Established && timeout_ms > timeouts.tcp_unack_ms {
                timeout_ms = timeouts.tcp_unack_ms;
            }
        } else if !status.has(Status::ASSURED)
            && matches!(old_state, TcpConntrack::SynRecv | TcpConntrack::Established)
            && new_state == TcpConntrack::Established
        {
            status.set(Status::ASSURED);
        }
        TcpOutcome::Accept { timeout_ms }
    }

    /// The sIG branch of nf_conntrack_tcp_packet. `Some(SYN_RECV)` when this
    /// SYN/ACK answers a SYN we ignored earlier: the tracker resyncs from the
    /// values noted then and goes on to the window check as SYN_SENT ->
    /// SYN_RECV. `None`: the packet is noted and ignored.
    fn on_ignored(
        &mut self,
        dir: Dir,
        index: TcpIndex,
        seg: &TcpSegment<'_>,
        old_state: TcpConntrack,
    ) -> Option<TcpConntrack> {
        let th = &seg.info;
        if index == TcpIndex::SynAck
            && self.last_index == TcpIndex::Syn
            && self.last_dir != dir as u8
            && th.ack == self.last_end
        {
            let from = dir_of(self.last_dir).index();
            self.last_flags &= !Self::EXP_CHALLENGE_ACK;
            let peer = &mut self.seen[from];
            peer.td_end = self.last_end;
            peer.td_maxend = self.last_end;
            peer.td_maxwin = u32::from(self.last_win).max(1);
            peer.td_scale = self.last_wscale;
            peer.flags = self.last_flags;
            peer_reset(&mut self.seen[dir.index()]);
            return Some(TcpConntrack::SynRecv);
        }
        self.last_index = index;
        self.last_dir = dir as u8;
        self.last_seq = th.seq;
        self.last_end = segment_end(th);
        self.last_win = th.window;

        // A SYN in the original direction while we may be out of sync: keep
        // its options so a SYN/ACK answering it can resync us.
        if index == TcpIndex::Syn && dir == Dir::Orig {
            let mut noted = TcpPeer::default();
            tcp_options(seg, &mut noted);
            self.last_flags = 0;
            self.last_wscale = 0;
            if noted.flags & TcpPeer::FLAG_WINDOW_SCALE != 0 {
                self.last_flags |= TcpPeer::FLAG_WINDOW_SCALE;
                self.last_wscale = noted.td_scale;
            }
            if noted.flags & TcpPeer::FLAG_SACK_PERM != 0 {
                self.last_flags |= TcpPeer::FLAG_SACK_PERM;
            }
            if old_state == TcpConntrack::LastAck {
                self.last_flags |= Self::EXP_CHALLENGE_ACK;
            }
        }
        // A reply ACK in SYN_SENT may be a challenge ACK to our SYN; an RST
        // for it will carry this as its sequence number.
        if old_state == TcpConntrack::SynSent && index == TcpIndex::Ack && dir == Dir::Reply {
            self.last_ack = th.ack;
        }
        None
    }

    /// The TCP_CONNTRACK_CLOSE case of nf_conntrack_tcp_packet for an RST.
    fn rst_check(
        &self,
        dir: Dir,
        th: &TcpInfo,
        old_state: TcpConntrack,
        status: &Status,
        cfg: &TcpConfig,
    ) -> RstCheck {
        // Closing entries may already be reused by a new flow: the fields
        // below are stale, so accept the RST without any check.
        if matches!(
            old_state,
            TcpConntrack::FinWait
                | TcpConntrack::LastAck
                | TcpConntrack::TimeWait
                | TcpConntrack::Close
                | TcpConntrack::CloseWait
        ) {
            return RstCheck::SkipWindow(TcpConntrack::Close);
        }
        let established = old_state == TcpConntrack::Established && status.has(Status::ASSURED);
        let other = &self.seen[dir.other().index()];
        let mut new_state = TcpConntrack::Close;
        // td_maxack is stale if the last packet was a SYN we let through.
        if other.flags & TcpPeer::FLAG_MAXACK_SET != 0 && self.last_index != TcpIndex::Syn {
            let seq = th.seq;
            if seq == 0 && !established {
                return RstCheck::Window(new_state);
            }
            if before(seq, other.td_maxack) && !cfg.ignore_invalid_rst {
                return RstCheck::Invalid;
            }
            if !established || seq == other.td_maxack {
                return RstCheck::Window(new_state);
            }
            // RST right after our own data ("P seq:end ... R end:end").
            if self.last_index == TcpIndex::Ack
                && self.last_dir == dir as u8
                && seq == self.last_end
            {
                return RstCheck::Window(new_state);
            }
            // Not an exact match: stay, the peer may answer with a challenge ACK.
            new_state = old_state;
        }
        // RST answering a SYN (a) or half-open ACK (c) we let through: skip
        // the window check, it may ack what we ignored.
        // (6.18 stable: the SYN must have come from the other side.)
        let answers_ignored = (status.has(Status::SEEN_REPLY)
            && self.last_index == TcpIndex::Syn
            && self.last_dir != dir as u8)
            || (!status.has(Status::ASSURED) && self.last_index == TcpIndex::Ack);
        if answers_ignored && th.ack == self.last_end {
            return RstCheck::SkipWindow(new_state);
        }
        // RST answering a challenge ACK we let through in SYN_SENT.
        if old_state == TcpConntrack::SynSent
            && self.last_index == TcpIndex::Ack
            && self.last_dir == Dir::Reply as u8
            && th.seq == self.last_ack
        {
            return RstCheck::SkipWindow(new_state);
        }
        RstCheck::Window(new_state)
    }

    /// `nf_tcp_handle_invalid`: an out-of-window FIN/RST on an ASSURED
    /// connection, answering one from the other side, shortens its timeout.
    fn handle_invalid(
        &mut self,
        dir: Dir,
        index: TcpIndex,
        reason: &'static str,
        status: &Status,
        timeouts: &Timeouts,
    ) -> TcpOutcome {
        if !status.has(Status::ASSURED) || status.has(Status::FIXED_TIMEOUT) {
            return TcpOutcome::Invalid(reason);
        }
        if !matches!(index, TcpIndex::Rst | TcpIndex::Fin) {
            return TcpOutcome::Invalid(reason);
        }
        if self.last_dir != dir as u8 && matches!(self.last_index, TcpIndex::Fin | TcpIndex::Rst) {
            return TcpOutcome::InvalidLowerTimeout {
                reason,
                timeout_ms: timeouts.tcp_unack_ms,
            };
        }
        self.last_index = index;
        self.last_dir = dir as u8;
        TcpOutcome::Invalid(reason)
    }
}

/// What the RST checks of the CLOSE case decided.
enum RstCheck {
    /// "invalid rst": sequence below what the other side has acked.
    Invalid,
    /// Go on to the window check with this new state.
    Window(TcpConntrack),
    /// Skip the window check (the kernel's `goto in_window`) with this new state.
    SkipWindow(TcpConntrack),
}
