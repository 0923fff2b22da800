//! TCP window tracking (`tcp_in_window`): each direction's sequence and
//! window bounds, and the check that a segment falls within them.

use super::options::{tcp_options, tcp_sack};
use super::{TcpConfig, TcpConntrack, TcpIndex, TcpPeer, TcpSegment, TcpState};
use crate::tuple::Dir;
use crate::wire::{tcp_flags, TcpInfo};

/// `before()` from include/net/tcp.h: serial-number comparison.
pub(super) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

pub(super) fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// `segment_seq_plus_len`: the sequence number after this segment.
pub(super) fn segment_end(th: &TcpInfo) -> u32 {
    th.seq
        .wrapping_add(u32::from(th.payload_len))
        .wrapping_add(u32::from(th.flags & tcp_flags::SYN != 0))
        .wrapping_add(u32::from(th.flags & tcp_flags::FIN != 0))
}

/// `MAXACKWINDOW(sender)`.
fn max_ack_window(sender: &TcpPeer) -> u32 {
    const MAXACKWINCONST: u32 = 66000;
    sender.td_maxwin.max(MAXACKWINCONST)
}

/// `tcp_init_sender`: (re)initialise the sender from a SYN or SYN/ACK.
#[inline]
fn tcp_init_sender(
    sender: &mut TcpPeer,
    receiver: &mut TcpPeer,
    seg: &TcpSegment<'_>,
    end: u32,
    win: u32,
    dir: Dir,
) {
    sender.td_end = end;
    sender.td_maxend = end;
    sender.td_maxwin = win.max(1);
    tcp_options(seg, sender);
    // RFC 1323: scaling is on only if both sides sent the option.
    let both = sender.flags & receiver.flags & TcpPeer::FLAG_WINDOW_SCALE != 0;
    if dir == Dir::Reply && !both {
        sender.td_scale = 0;
        receiver.td_scale = 0;
    }
}

/// `nf_ct_tcp_state_reset`.
pub(super) fn peer_reset(peer: &mut TcpPeer) {
    *peer = TcpPeer {
        flags: peer.flags & TcpPeer::FLAG_BE_LIBERAL,
        ..TcpPeer::default()
    };
}

/// (sender, receiver) for a packet in direction `dir`.
fn peers_mut(seen: &mut [TcpPeer; 2], dir: Dir) -> (&mut TcpPeer, &mut TcpPeer) {
    let [orig, reply] = seen;
    match dir {
        Dir::Orig => (orig, reply),
        Dir::Reply => (reply, orig),
    }
}

/// `enum nf_ct_tcp_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Window {
    Accept,
    Ignore,
    Invalid(&'static str),
}

/// `nf_tcp_log_invalid`: a liberal sender turns any window verdict into accept.
fn unless_liberal(sender: &TcpPeer, cfg: &TcpConfig, verdict: Window) -> Window {
    if sender.flags & TcpPeer::FLAG_BE_LIBERAL != 0 || cfg.be_liberal {
        Window::Accept
    } else {
        verdict
    }
}

impl TcpState {
    /// `tcp_in_window`: the sequence/ack window check (after Guido van
    /// Rooij's "Real Stateful TCP Packet Filtering in IP Filter", bounds per
    /// RFC 793), updating both peers' window data when it passes.
    pub(super) fn in_window(
        &mut self,
        dir: Dir,
        index: TcpIndex,
        seg: &TcpSegment<'_>,
        cfg: &TcpConfig,
    ) -> Window {
        let th = &seg.info;
        let ct_state = self.state;
        let (sender, receiver) = peers_mut(&mut self.seen, dir);
        let syn = th.flags & tcp_flags::SYN != 0;
        let has_ack = th.flags & tcp_flags::ACK != 0;
        let rst = th.flags & tcp_flags::RST != 0;

        let mut seq = th.seq;
        let mut ack = th.ack;
        let mut sack = ack;
        let win_raw = th.window;
        let mut win = u32::from(win_raw);
        let mut end = segment_end(th);

        if receiver.flags & TcpPeer::FLAG_SACK_PERM != 0 {
            tcp_sack(seg, &mut sack);
        }

        if sender.td_maxwin == 0 {
            if syn {
                // SYN/ACK answering the SYN, or a reply SYN (simultaneous open).
                tcp_init_sender(sender, receiver, seg, end, win, dir);
                if !has_ack {
                    return Window::Accept;
                }
            } else {
                // First packet from this side of a picked-up connection.
                sender.td_end = end;
                let swin = win.wrapping_shl(u32::from(sender.td_scale));
                sender.td_maxwin = swin.max(1);
                sender.td_maxend = end.wrapping_add(sender.td_maxwin);
                if receiver.td_maxwin == 0 {
                    // Nothing seen the other way yet: make the ack checks pass.
                    receiver.td_end = sack;
                    receiver.td_maxend = sack;
                } else if sack == receiver.td_end.wrapping_add(1) {
                    // Probably the answer to a keepalive.
                    receiver.td_end = receiver.td_end.wrapping_add(1);
                }
            }
        } else if syn
            && after(end, sender.td_end)
            && matches!(ct_state, TcpConntrack::SynSent | TcpConntrack::SynRecv)
        {
            // RFC 793: a reinitialised TCP may reuse the connection with
            // higher sequence numbers; take the new SYN(/ACK) as the start.
            tcp_init_sender(sender, receiver, seg, end, win, dir);
            if dir == Dir::Reply && !has_ack {
                return Window::Accept;
            }
        }

        let ack_rst = tcp_flags::ACK | tcp_flags::RST;
        if !has_ack {
            ack = receiver.td_end;
            sack = ack;
        } else if th.flags & ack_rst == ack_rst && ack == 0 {
            // Broken stacks: RST+ACK with ack 0.
            ack = receiver.td_end;
            sack = ack;
        }

        if rst && seq == 0 && ct_state == TcpConntrack::SynSent {
            // RST answering our SYN.
            seq = sender.td_end;
            end = sender.td_end;
        }

        let ack_floor = receiver
            .td_end
            .wrapping_sub(max_ack_window(sender))
            .wrapping_sub(1);
        let seq_ok = before(seq, sender.td_maxend.wrapping_add(1));
        if !seq_ok {
            let overshot = end.wrapping_sub(sender.td_maxend).wrapping_add(1);
            let ack_ok = after(sack, ack_floor);
            let in_recv_win = receiver.td_maxwin != 0
                && after(
                    end,
                    sender
                        .td_end
                        .wrapping_sub(receiver.td_maxwin)
                        .wrapping_sub(1),
                );
            if in_recv_win
                && ack_ok
                && overshot <= receiver.td_maxwin
                && before(sack, receiver.td_end.wrapping_add(1))
            {
                // Senders that overrun the receive window a little: note the
                // data so a later ACK for it is not over the upper bound.
                sender.td_end = end;
                sender.flags |= TcpPeer::FLAG_DATA_UNACKNOWLEDGED;
                return unless_liberal(sender, cfg, Window::Ignore);
            }
            return unless_liberal(
                sender,
                cfg,
                Window::Invalid("SEQ is over upper bound (over the window of the receiver)"),
            );
        }

        if !before(sack, receiver.td_end.wrapping_add(1)) {
            return unless_liberal(
                sender,
                cfg,
                Window::Invalid("ACK is over upper bound (ACKed data not seen yet)"),
            );
        }

        let in_recv_win = receiver.td_maxwin == 0
            || after(
                end,
                sender
                    .td_end
                    .wrapping_sub(receiver.td_maxwin)
                    .wrapping_sub(1),
            );
        if !in_recv_win {
            // Already acked data retransmitted.
            return unless_liberal(sender, cfg, Window::Ignore);
        }
        if !after(sack, ack_floor) {
            // ACK under the lower bound: possibly overly delayed.
            return unless_liberal(sender, cfg, Window::Ignore);
        }

        // RFC 1323: windows in SYNs are never scaled.
        if !syn {
            win = win.wrapping_shl(u32::from(sender.td_scale));
        }

        let swin = win.wrapping_add(sack.wrapping_sub(ack));
        if sender.td_maxwin < swin {
            sender.td_maxwin = swin;
        }
        if after(end, sender.td_end) {
            sender.td_end = end;
            sender.flags |= TcpPeer::FLAG_DATA_UNACKNOWLEDGED;
        }
        if has_ack {
            if sender.flags & TcpPeer::FLAG_MAXACK_SET == 0 {
                sender.td_maxack = ack;
                sender.flags |= TcpPeer::FLAG_MAXACK_SET;
            } else if after(ack, sender.td_maxack) {
                sender.td_maxack = ack;
            }
        }

        if receiver.td_maxwin != 0 && after(end, sender.td_maxend) {
            receiver.td_maxwin = receiver
                .td_maxwin
                .wrapping_add(end.wrapping_sub(sender.td_maxend));
        }
        if after(sack.wrapping_add(win), receiver.td_maxend.wrapping_sub(1)) {
            receiver.td_maxend = sack.wrapping_add(win);
            if win == 0 {
                receiver.td_maxend = receiver.td_maxend.wrapping_add(1);
            }
        }
        if ack == receiver.td_end {
            receiver.flags &= !TcpPeer::FLAG_DATA_UNACKNOWLEDGED;
        }

        // Retransmission: the same pure ACK segment again from the same side.
        if index == TcpIndex::Ack {
            if self.last_dir == dir as u8
                && self.last_seq == seq
                && self.last_ack == ack
                && self.last_end == end
                && self.last_win == win_raw
            {
                self.retrans = self.retrans.wrapping_add(1);
            } else {
                self.last_dir = dir as u8;
                self.last_seq = seq;
                self.last_ack = ack;
                self.last_end = end;
                self.last_win = win_raw;
                self.retrans = 0;
            }
        }
        Window::Accept
    }
}
