//! TCP tracking: the kernel's state table and window tracking
//! (net/netfilter/nf_conntrack_proto_tcp.c, Linux 6.x).
//!
//! # How the engine drives this tracker (the kernel's `nf_conntrack_in`)
//!
//! 1. Before lookup: drop from tracking any segment whose flags fail
//!    [`tcp_error_flags_ok`] (INVALID, counter `invalid`, no entry). In 6.x
//!    `tcp_error` runs at the top of `nf_conntrack_tcp_packet`, after lookup,
//!    but it changes nothing, so checking first is equivalent.
//! 2. No entry found: [`TcpState::new`] (`tcp_new`). `Err` means INVALID and
//!    nothing is created. On `Ok`, call [`TcpState::packet`] with `Dir::Orig`
//!    and a zero `Status` on the same segment, as `nf_conntrack_tcp_packet`
//!    does right after `tcp_new`. Only create the entry if that returns
//!    `Accept`.
//! 3. Entry found: [`TcpState::packet`] in the packet's direction, then act on
//!    the [`TcpOutcome`] as its variants say.
//! 4. After any accepting outcome (`Accept`, `AcceptAndKill`, `Ignore`) for a
//!    `Dir::Reply` packet, set `Status::SEEN_REPLY`. Do this after
//!    `packet`, never before: the tracker reads SEEN_REPLY to decide the RST
//!    kill and ASSURED, and the first reply must still see it clear.
//!
//! NAT sequence adjustment (`nf_ct_seq_offset`, helpers only) and SYN proxy
//! are not supported: both are treated as absent.

use crate::conn::Status;
use crate::timeout::Timeouts;
use crate::tuple::Dir;
use crate::wire::{tcp_flags, TcpInfo};

/// TCP conntrack states, numbered as the kernel's `enum tcp_conntrack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum TcpConntrack {
    #[default]
    None = 0,
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
    SynSent2 = 9,
}

impl TcpConntrack {
    const ALL: [TcpConntrack; 10] = [
        TcpConntrack::None,
        TcpConntrack::SynSent,
        TcpConntrack::SynRecv,
        TcpConntrack::Established,
        TcpConntrack::FinWait,
        TcpConntrack::CloseWait,
        TcpConntrack::LastAck,
        TcpConntrack::TimeWait,
        TcpConntrack::Close,
        TcpConntrack::SynSent2,
    ];

    /// The state numbered `n` in the kernel's `enum tcp_conntrack` (ctnetlink,
    /// conntrackd's `NTA_TCP_STATE`).
    pub fn from_number(n: u8) -> Option<TcpConntrack> {
        TcpConntrack::ALL.get(usize::from(n)).copied()
    }

    /// The name `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpConntrack::None => "NONE",
            TcpConntrack::SynSent => "SYN_SENT",
            TcpConntrack::SynRecv => "SYN_RECV",
            TcpConntrack::Established => "ESTABLISHED",
            TcpConntrack::FinWait => "FIN_WAIT",
            TcpConntrack::CloseWait => "CLOSE_WAIT",
            TcpConntrack::LastAck => "LAST_ACK",
            TcpConntrack::TimeWait => "TIME_WAIT",
            TcpConntrack::Close => "CLOSE",
            TcpConntrack::SynSent2 => "SYN_SENT2",
        }
    }

    /// The state's own timeout (`timeouts[state]`). NONE uses SYN_SENT's, as the
    /// kernel's per-netns table does for its unused slot 0.
    pub fn timeout_ms(self, t: &Timeouts) -> u64 {
        match self {
            TcpConntrack::None | TcpConntrack::SynSent => t.tcp_syn_sent_ms,
            TcpConntrack::SynRecv => t.tcp_syn_recv_ms,
            TcpConntrack::Established => t.tcp_established_ms,
            TcpConntrack::FinWait => t.tcp_fin_wait_ms,
            TcpConntrack::CloseWait => t.tcp_close_wait_ms,
            TcpConntrack::LastAck => t.tcp_last_ack_ms,
            TcpConntrack::TimeWait => t.tcp_time_wait_ms,
            TcpConntrack::Close => t.tcp_close_ms,
            TcpConntrack::SynSent2 => t.tcp_syn_sent2_ms,
        }
    }
}

/// Switches, like the net.netfilter.nf_conntrack_tcp_* sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// nf_conntrack_tcp_be_liberal (default false).
    pub be_liberal: bool,
    /// nf_conntrack_tcp_loose: pick up connections mid-stream (default true).
    pub loose: bool,
    /// nf_conntrack_tcp_max_retrans (default 3).
    pub max_retrans: u8,
    /// nf_conntrack_tcp_ignore_invalid_rst (default false).
    pub ignore_invalid_rst: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            be_liberal: false,
            loose: true,
            max_retrans: 3,
            ignore_invalid_rst: false,
        }
    }
}

/// A TCP segment as the tracker sees it.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    pub info: TcpInfo,
    /// The option bytes (between the 20-byte header and the data): exactly
    /// `info.header_len - 20` bytes. Fewer is treated as the kernel treats an
    /// unreadable option area (options ignored).
    pub options: &'a [u8],
}

/// The smallest remaining lifetime `InvalidLowerTimeout` may shorten
/// (nf_tcp_handle_invalid: `expires < 120 * HZ` is left alone).
pub const INVALID_LOWER_MIN_REMAINING_MS: u64 = 120_000;

/// What the tracker decided for one packet of an existing (or just created) connection.
///
/// The engine's duties per variant follow `nf_conntrack_in` (6.x). "Accepting"
/// outcomes keep the packet attached to the connection (its ctinfo, NAT
/// applies); after them the engine sets SEEN_REPLY for a reply packet
/// (see the module docs). `packet` has already set ASSURED when the kernel
/// would; the engine emits the ASSURED event if that bit changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOutcome {
    /// NF_ACCEPT after `nf_ct_refresh_acct`: count the packet and its bytes on
    /// the connection and, unless the status has FIXED_TIMEOUT, set the expiry
    /// to now + `timeout_ms` (for a not yet confirmed entry: `timeout_ms` from
    /// its confirmation).
    Accept { timeout_ms: u64 },
    /// `nf_ct_kill_acct` then NF_ACCEPT: an RST while no reply has been seen.
    /// Count the packet, destroy the connection now (DESTROY event); the packet
    /// itself still passes as part of it.
    AcceptAndKill,
    /// NF_ACCEPT without refresh: the packet is part of the connection but its
    /// timeout and packet/byte counters are left alone. Returned for packets the
    /// state table marks sIG (which the tracker notes in `last_*` to resync
    /// later), packets `tcp_in_window` ignores, an RFC 5961 challenge ACK in
    /// LAST_ACK, and any in-window SYN processed in SYN_SENT before a reply was
    /// seen (a retransmitted SYN, or the reply SYN of a simultaneous open,
    /// which does move the state to SYN_SENT2): the kernel deliberately does
    /// not renew the timeout then. Never returned for a just-created state.
    /// A reply-direction `Ignore` still sets SEEN_REPLY.
    Ignore,
    /// -NF_ACCEPT: the packet is INVALID. Detach it from the connection (no
    /// ctinfo, no NAT, no refresh, no counters, no SEEN_REPLY) and count
    /// `invalid`. The connection itself lives on unchanged. For a just-created
    /// state: create nothing.
    Invalid(&'static str),
    /// As `Invalid`, and also `nf_tcp_handle_invalid`'s timeout cut (an
    /// out-of-window FIN/RST answering an earlier FIN/RST from the other side on
    /// an ASSURED connection): with `remaining` the connection's remaining
    /// lifetime, if `remaining >= INVALID_LOWER_MIN_REMAINING_MS` and
    /// `remaining > timeout_ms`, set the expiry to now + `timeout_ms`.
    InvalidLowerTimeout {
        reason: &'static str,
        timeout_ms: u64,
    },
    /// -NF_REPEAT: a SYN reopening a closed/aborted connection. Kill this
    /// connection (no counters) and run the packet through lookup again, where it
    /// creates a new entry via `TcpState::new`. If the entry cannot be killed
    /// because it is already dying, the kernel returns NF_DROP instead: drop the
    /// packet and count `invalid` and `drop`. A repeat itself counts nothing.
    Repeat,
}

/// Per-direction window-tracking state (`struct ip_ct_tcp_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpPeer {
    pub td_end: u32,
    pub td_maxend: u32,
    pub td_maxwin: u32,
    pub td_maxack: u32,
    pub td_scale: u8,
    /// `TcpPeer::FLAG_*` bits (the kernel's `IP_CT_TCP_FLAG_*`).
    pub flags: u8,
}

impl TcpPeer {
    /// IP_CT_TCP_FLAG_WINDOW_SCALE: this side sent the window scale option.
    pub const FLAG_WINDOW_SCALE: u8 = 0x01;
    /// IP_CT_TCP_FLAG_SACK_PERM: this side sent SACK-permitted.
    pub const FLAG_SACK_PERM: u8 = 0x02;
    /// IP_CT_TCP_FLAG_CLOSE_INIT: this side sent the first FIN.
    pub const FLAG_CLOSE_INIT: u8 = 0x04;
    /// IP_CT_TCP_FLAG_BE_LIBERAL: window problems of this side are not INVALID
    /// (set on both sides of a mid-stream pickup).
    pub const FLAG_BE_LIBERAL: u8 = 0x08;
    /// IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED: this side has data the peer has not acked.
    pub const FLAG_DATA_UNACKNOWLEDGED: u8 = 0x10;
    /// IP_CT_TCP_FLAG_MAXACK_SET: `td_maxack` holds a value.
    pub const FLAG_MAXACK_SET: u8 = 0x20;
}

/// The kernel's `enum tcp_bit_set`: which of RST/SYN/FIN/ACK decides the
/// transition (`get_conntrack_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum TcpIndex {
    #[default]
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

impl TcpIndex {
    pub fn of(flags: u8) -> TcpIndex {
        if flags & tcp_flags::RST != 0 {
            TcpIndex::Rst
        } else if flags & tcp_flags::SYN != 0 {
            if flags & tcp_flags::ACK != 0 {
                TcpIndex::SynAck
            } else {
                TcpIndex::Syn
            }
        } else if flags & tcp_flags::FIN != 0 {
            TcpIndex::Fin
        } else if flags & tcp_flags::ACK != 0 {
            TcpIndex::Ack
        } else {
            TcpIndex::None
        }
    }
}

/// The TCP part of a connection (`struct ip_ct_tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpState {
    pub state: TcpConntrack,
    /// Indexed by `Dir::index()`.
    pub seen: [TcpPeer; 2],
    /// Direction of the last in-window (or ignored) packet, `Dir as u8`.
    pub last_dir: u8,
    /// Consecutive identical ACK-only segments (wraps like the kernel's u8).
    pub retrans: u8,
    pub last_index: TcpIndex,
    pub last_seq: u32,
    pub last_ack: u32,
    pub last_end: u32,
    /// Raw (unscaled) window of the last ACK segment or ignored packet.
    pub last_win: u16,
    /// Window scale of the last ignored original-direction SYN.
    pub last_wscale: u8,
    /// `TcpPeer::FLAG_WINDOW_SCALE`/`FLAG_SACK_PERM` of the last ignored SYN,
    /// plus `TcpState::EXP_CHALLENGE_ACK` and `TcpState::SIMULTANEOUS_OPEN`.
    pub last_flags: u8,
}

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

/// `before()` from include/net/tcp.h: serial-number comparison.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// `segment_seq_plus_len`: the sequence number after this segment.
fn segment_end(th: &TcpInfo) -> u32 {
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

/// The option area as `skb_header_pointer` would give it: `None` when there
/// is none or it cannot be read.
fn option_bytes<'a>(seg: &TcpSegment<'a>) -> Option<&'a [u8]> {
    let len = usize::from(seg.info.header_len).checked_sub(20)?;
    if len == 0 {
        return None;
    }
    seg.options.get(..len)
}

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;
const TCPOPT_SACK_PERM: u8 = 4;
const TCPOPT_SACK: u8 = 5;
const TCPOPT_TIMESTAMP: u8 = 8;
const TCP_MAX_WSCALE: u8 = 14;

/// Walks TCP options as the kernel's option loops do, calling `f(kind, body)`
/// for each well-formed option until EOL or a malformed one.
fn walk_options(opts: &[u8], mut f: impl FnMut(u8, &[u8]) -> bool) {
    let mut i = 0;
    while i < opts.len() {
        let kind = opts[i];
        match kind {
            TCPOPT_EOL => return,
            TCPOPT_NOP => i += 1,
            _ => {
                let left = opts.len() - i;
                if left < 2 {
                    return;
                }
                let size = usize::from(opts[i + 1]);
                if size < 2 || size > left {
                    return;
                }
                if !f(kind, &opts[i + 2..i + size]) {
                    return;
                }
                i += size;
            }
        }
    }
}

/// `tcp_options`: window scale and SACK-permitted into `peer`.
fn tcp_options(seg: &TcpSegment<'_>, peer: &mut TcpPeer) {
    let Some(opts) = option_bytes(seg) else {
        return;
    };
    peer.td_scale = 0;
    peer.flags &= TcpPeer::FLAG_BE_LIBERAL;
    walk_options(opts, |kind, body| {
        if kind == TCPOPT_SACK_PERM && body.is_empty() {
            peer.flags |= TcpPeer::FLAG_SACK_PERM;
        } else if kind == TCPOPT_WINDOW && body.len() == 1 {
            peer.td_scale = body[0].min(TCP_MAX_WSCALE);
            peer.flags |= TcpPeer::FLAG_WINDOW_SCALE;
        }
        true
    });
}

/// `tcp_sack`: raises `sack` to the highest right edge of the first SACK option.
fn tcp_sack(seg: &TcpSegment<'_>, sack: &mut u32) {
    let Some(opts) = option_bytes(seg) else {
        return;
    };
    // Timestamp-only fast path: NOP NOP TIMESTAMP(10).
    if opts.len() == 12 && opts[..4] == [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10] {
        return;
    }
    walk_options(opts, |kind, body| {
        if kind == TCPOPT_SACK && body.len() >= 8 && body.len() % 8 == 0 {
            for block in body.chunks_exact(8) {
                let right = u32::from_be_bytes([block[4], block[5], block[6], block[7]]);
                if after(right, *sack) {
                    *sack = right;
                }
            }
            return false;
        }
        true
    });
}

/// `tcp_init_sender`: (re)initialise the sender from a SYN or SYN/ACK.
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
fn peer_reset(peer: &mut TcpPeer) {
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
enum Window {
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

    /// `tcp_in_window`: the sequence/ack window check (after Guido van
    /// Rooij's "Real Stateful TCP Packet Filtering in IP Filter", bounds per
    /// RFC 793), updating both peers' window data when it passes.
    fn in_window(
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

/// What the RST checks of the CLOSE case decided.
enum RstCheck {
    /// "invalid rst": sequence below what the other side has acked.
    Invalid,
    /// Go on to the window check with this new state.
    Window(TcpConntrack),
    /// Skip the window check (the kernel's `goto in_window`) with this new state.
    SkipWindow(TcpConntrack),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
    use proptest::prelude::*;

    const SECS: u64 = 1000;

    fn info(flags: u8, seq: u32, ack: u32, window: u16, payload_len: u16) -> TcpInfo {
        TcpInfo {
            src_port: 40000,
            dst_port: 80,
            seq,
            ack,
            flags,
            window,
            header_len: 20,
            payload_len,
            options: (0, 0),
        }
    }

    fn seg(info: TcpInfo) -> TcpSegment<'static> {
        TcpSegment { info, options: &[] }
    }

    fn seg_opts(mut info: TcpInfo, options: &'static [u8]) -> TcpSegment<'static> {
        info.header_len = 20 + options.len() as u8;
        TcpSegment { info, options }
    }

    /// The engine's side of nf_conntrack_in around one tracked connection.
    struct Conn {
        st: TcpState,
        status: Status,
        cfg: TcpConfig,
        t: Timeouts,
    }

    impl Conn {
        fn open(first: &TcpSegment<'_>, cfg: TcpConfig, t: Timeouts) -> (Conn, TcpOutcome) {
            let st = TcpState::new(first, &cfg).expect("tcp_new accepts");
            let mut c = Conn {
                st,
                status: Status::default(),
                cfg,
                t,
            };
            let out = c.send(Dir::Orig, first);
            (c, out)
        }

        fn send(&mut self, dir: Dir, s: &TcpSegment<'_>) -> TcpOutcome {
            let out = self.st.packet(dir, s, &mut self.status, &self.cfg, &self.t);
            let accepted = matches!(
                out,
                TcpOutcome::Accept { .. } | TcpOutcome::AcceptAndKill | TcpOutcome::Ignore
            );
            if accepted && dir == Dir::Reply {
                self.status.set(Status::SEEN_REPLY);
            }
            out
        }

        fn assured(&self) -> bool {
            self.status.has(Status::ASSURED)
        }
    }

    fn accept(ms: u64) -> TcpOutcome {
        TcpOutcome::Accept { timeout_ms: ms }
    }

    const C_ISN: u32 = 1000;
    const S_ISN: u32 = 5000;

    /// SYN, SYN/ACK, ACK with ISNs C_ISN / S_ISN, window 65535, no options.
    fn established(cfg: TcpConfig, t: Timeouts) -> Conn {
        let (mut c, out) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), cfg, t);
        assert_eq!(out, accept(t.tcp_syn_sent_ms));
        assert_eq!(
            c.send(
                Dir::Reply,
                &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0))
            ),
            accept(t.tcp_syn_recv_ms)
        );
        assert_eq!(
            c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 0))),
            accept(t.tcp_established_ms)
        );
        assert_eq!(c.st.state, TcpConntrack::Established);
        c
    }

    #[test]
    fn handshake_data_and_fin_teardown() {
        let t = Timeouts::default();
        let (mut c, out) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
        assert_eq!(out, accept(120 * SECS));
        assert_eq!(c.st.state, TcpConntrack::SynSent);
        assert!(!c.assured());

        let out = c.send(
            Dir::Reply,
            &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
        );
        assert_eq!(out, accept(60 * SECS));
        assert_eq!(c.st.state, TcpConntrack::SynRecv);
        assert!(!c.assured(), "ASSURED needs the handshake's last ACK");

        let out = c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 0)));
        assert_eq!(out, accept(5 * 24 * 3600 * SECS));
        assert_eq!(c.st.state, TcpConntrack::Established);
        assert!(c.assured());

        // Unacked data: the UNACK timeout caps ESTABLISHED.
        let out = c.send(
            Dir::Orig,
            &seg(info(ACK | PSH, C_ISN + 1, S_ISN + 1, 65535, 100)),
        );
        assert_eq!(out, accept(t.tcp_unack_ms));
        assert_ne!(c.st.seen[0].flags & TcpPeer::FLAG_DATA_UNACKNOWLEDGED, 0);
        let out = c.send(
            Dir::Reply,
            &seg(info(ACK, S_ISN + 1, C_ISN + 101, 65535, 0)),
        );
        assert_eq!(out, accept(t.tcp_established_ms));
        assert_eq!(c.st.seen[0].flags & TcpPeer::FLAG_DATA_UNACKNOWLEDGED, 0);

        let out = c.send(
            Dir::Orig,
            &seg(info(FIN | ACK, C_ISN + 101, S_ISN + 1, 65535, 0)),
        );
        assert_eq!(out, accept(t.tcp_fin_wait_ms));
        assert_eq!(c.st.state, TcpConntrack::FinWait);
        assert_ne!(c.st.seen[0].flags & TcpPeer::FLAG_CLOSE_INIT, 0);

        let out = c.send(
            Dir::Reply,
            &seg(info(ACK, S_ISN + 1, C_ISN + 102, 65535, 0)),
        );
        assert_eq!(out, accept(t.tcp_close_wait_ms));
        assert_eq!(c.st.state, TcpConntrack::CloseWait);

        let out = c.send(
            Dir::Reply,
            &seg(info(FIN | ACK, S_ISN + 1, C_ISN + 102, 65535, 0)),
        );
        assert_eq!(out, accept(t.tcp_last_ack_ms));
        assert_eq!(c.st.state, TcpConntrack::LastAck);

        let out = c.send(Dir::Orig, &seg(info(ACK, C_ISN + 102, S_ISN + 2, 65535, 0)));
        assert_eq!(out, accept(t.tcp_time_wait_ms));
        assert_eq!(c.st.state, TcpConntrack::TimeWait);
        assert_eq!(c.st.state.name(), "TIME_WAIT");
    }

    #[test]
    fn first_reply_packet_sees_no_seen_reply() {
        // Engine sets SEEN_REPLY after packet(): a SYN/ACK with SEEN_REPLY
        // already set would be an engine bug, but ASSURED must still wait for
        // a SYN_RECV/ESTABLISHED -> ESTABLISHED transition.
        let t = Timeouts::default();
        let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
        c.send(
            Dir::Reply,
            &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
        );
        assert!(c.status.has(Status::SEEN_REPLY));
        assert!(!c.assured());
    }

    #[test]
    fn syn_retransmit_without_reply_does_not_refresh() {
        let t = Timeouts::default();
        let syn = seg(info(SYN, C_ISN, 0, 65535, 0));
        let (mut c, _) = Conn::open(&syn, TcpConfig::default(), t);
        assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Ignore);
        assert_eq!(c.st.state, TcpConntrack::SynSent);
    }

    #[test]
    fn rst_before_any_reply_kills() {
        let t = Timeouts::default();
        let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
        let out = c.send(Dir::Reply, &seg(info(RST | ACK, 0, C_ISN + 1, 0, 0)));
        assert_eq!(out, TcpOutcome::AcceptAndKill);
        assert_eq!(c.st.state, TcpConntrack::Close);
    }

    #[test]
    fn rst_exact_on_established_closes() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        let out = c.send(Dir::Orig, &seg(info(RST, C_ISN + 1, 0, 0, 0)));
        assert_eq!(out, accept(t.tcp_close_ms));
        assert_eq!(c.st.state, TcpConntrack::Close);
    }

    #[test]
    fn rst_below_maxack_is_invalid_unless_ignored() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        let before = c.st;
        let rst = seg(info(RST, C_ISN - 10, 0, 0, 0));
        assert_eq!(c.send(Dir::Orig, &rst), TcpOutcome::Invalid("invalid rst"));
        assert_eq!(c.st, before);

        let cfg = TcpConfig {
            ignore_invalid_rst: true,
            ..TcpConfig::default()
        };
        let mut c = established(cfg, t);
        // Not the exact sequence: state kept for a possible challenge ACK, but
        // the RST still sets the CLOSE timeout.
        assert_eq!(c.send(Dir::Orig, &rst), accept(t.tcp_close_ms));
        assert_eq!(c.st.state, TcpConntrack::Established);
    }

    #[test]
    fn rst_in_window_but_inexact_keeps_state() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        let out = c.send(Dir::Orig, &seg(info(RST, C_ISN + 500, 0, 0, 0)));
        assert_eq!(out, accept(t.tcp_close_ms));
        assert_eq!(c.st.state, TcpConntrack::Established);
        // The exact one then closes.
        let out = c.send(Dir::Orig, &seg(info(RST, C_ISN + 1, 0, 0, 0)));
        assert_eq!(out, accept(t.tcp_close_ms));
        assert_eq!(c.st.state, TcpConntrack::Close);
    }

    #[test]
    fn rst_after_data_train_closes() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        c.send(
            Dir::Reply,
            &seg(info(ACK | PSH, S_ISN + 1, C_ISN + 1, 65535, 19)),
        );
        let out = c.send(
            Dir::Reply,
            &seg(info(RST | ACK, S_ISN + 20, C_ISN + 1, 0, 0)),
        );
        assert_eq!(out, accept(t.tcp_close_ms));
        assert_eq!(c.st.state, TcpConntrack::Close);
    }

    #[test]
    fn simultaneous_open() {
        let t = Timeouts::default();
        let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
        // Reply SYN: SYN_SENT2; still no reply seen while it is processed, and
        // the table's old state is SYN_SENT, so no refresh.
        assert_eq!(
            c.send(Dir::Reply, &seg(info(SYN, S_ISN, 0, 65535, 0))),
            TcpOutcome::Ignore
        );
        assert_eq!(c.st.state, TcpConntrack::SynSent2);
        assert_ne!(c.st.last_flags & TcpState::SIMULTANEOUS_OPEN, 0);

        let out = c.send(Dir::Orig, &seg(info(SYN | ACK, C_ISN, S_ISN + 1, 65535, 0)));
        assert_eq!(out, accept(t.tcp_syn_recv_ms));
        assert_eq!(c.st.state, TcpConntrack::SynRecv);
        // The reply's own SYN/ACK is ignored in SYN_RECV.
        assert_eq!(
            c.send(
                Dir::Reply,
                &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0))
            ),
            TcpOutcome::Ignore
        );
        assert_eq!(c.st.state, TcpConntrack::SynRecv);
        // A reply ACK completes a simultaneous open.
        let out = c.send(Dir::Reply, &seg(info(ACK, S_ISN + 1, C_ISN + 1, 65535, 0)));
        assert_eq!(out, accept(t.tcp_established_ms));
        assert_eq!(c.st.state, TcpConntrack::Established);
        assert!(c.assured());
    }

    #[test]
    fn out_of_window_is_invalid_or_liberal() {
        let t = Timeouts::default();
        let far = seg(info(ACK, C_ISN + 10_000_000, S_ISN + 1, 65535, 10));
        let mut c = established(TcpConfig::default(), t);
        let before = c.st;
        assert!(
            matches!(c.send(Dir::Orig, &far), TcpOutcome::Invalid(r) if r.starts_with("SEQ is over"))
        );
        assert_eq!(c.st, before);
        // ACK for data never sent.
        let bad_ack = seg(info(ACK, C_ISN + 1, S_ISN + 100_000, 65535, 0));
        assert!(
            matches!(c.send(Dir::Orig, &bad_ack), TcpOutcome::Invalid(r) if r.starts_with("ACK is over"))
        );

        let mut c = established(
            TcpConfig {
                be_liberal: true,
                ..TcpConfig::default()
            },
            t,
        );
        assert_eq!(c.send(Dir::Orig, &far), accept(t.tcp_established_ms));
    }

    #[test]
    fn old_retransmission_is_ignored() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        // Data far below what the receiver window allows any more.
        c.send(
            Dir::Orig,
            &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 1000)),
        );
        c.send(
            Dir::Reply,
            &seg(info(ACK, S_ISN + 1, C_ISN + 1001, 65535, 0)),
        );
        let old = seg(info(ACK, C_ISN.wrapping_sub(200_000), S_ISN + 1, 65535, 10));
        assert_eq!(c.send(Dir::Orig, &old), TcpOutcome::Ignore);
    }

    #[test]
    fn invalid_fin_rst_exchange_lowers_timeout() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        let fin = seg(info(FIN | ACK, C_ISN + 50_000_000, S_ISN + 1, 65535, 0));
        assert!(matches!(c.send(Dir::Orig, &fin), TcpOutcome::Invalid(_)));
        assert_eq!(
            (c.st.last_index, c.st.last_dir),
            (TcpIndex::Fin, Dir::Orig as u8)
        );
        let rst = seg(info(RST, S_ISN + 50_000_000, 0, 0, 0));
        match c.send(Dir::Reply, &rst) {
            TcpOutcome::InvalidLowerTimeout { timeout_ms, .. } => {
                assert_eq!(timeout_ms, t.tcp_unack_ms)
            }
            other => panic!("expected InvalidLowerTimeout, got {other:?}"),
        }
        // Not ASSURED: nothing to lower.
        let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
        c.send(
            Dir::Reply,
            &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
        );
        assert!(matches!(c.send(Dir::Orig, &fin), TcpOutcome::Invalid(_)));
    }

    fn teardown(c: &mut Conn) {
        c.send(
            Dir::Orig,
            &seg(info(FIN | ACK, C_ISN + 1, S_ISN + 1, 65535, 0)),
        );
        c.send(
            Dir::Reply,
            &seg(info(FIN | ACK, S_ISN + 1, C_ISN + 2, 65535, 0)),
        );
        c.send(Dir::Orig, &seg(info(ACK, C_ISN + 2, S_ISN + 2, 65535, 0)));
        assert_eq!(c.st.state, TcpConntrack::TimeWait);
    }

    #[test]
    fn syn_in_time_wait_repeats() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        teardown(&mut c);
        let syn = seg(info(SYN, C_ISN + 100_000, 0, 65535, 0));
        assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Repeat);
        // The engine then starts afresh from that SYN.
        let (c2, out) = Conn::open(&syn, TcpConfig::default(), t);
        assert_eq!(out, accept(t.tcp_syn_sent_ms));
        assert_eq!(c2.st.state, TcpConntrack::SynSent);
        // A reply-direction SYN in TIME_WAIT (role switch) repeats as well.
        assert_eq!(
            c.send(Dir::Reply, &seg(info(SYN, 77, 0, 65535, 0))),
            TcpOutcome::Repeat
        );
    }

    #[test]
    fn syn_after_own_rst_repeats() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        assert_eq!(
            c.send(Dir::Orig, &seg(info(RST, C_ISN + 1, 0, 0, 0))),
            accept(t.tcp_close_ms)
        );
        let syn = seg(info(SYN, 9_999, 0, 65535, 0));
        assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Repeat);
    }

    #[test]
    fn syn_after_peer_rst_is_ignored_then_resyncs() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        assert_eq!(
            c.send(Dir::Reply, &seg(info(RST, S_ISN + 1, 0, 0, 0))),
            accept(t.tcp_close_ms)
        );
        assert_eq!(c.st.state, TcpConntrack::Close);
        const NEW_ISN: u32 = 777_777;
        const WS: &[u8] = &[3, 3, 7, 0];
        let syn = seg_opts(info(SYN, NEW_ISN, 0, 29200, 0), WS);
        assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Ignore);
        assert_eq!(c.st.state, TcpConntrack::Close);
        assert_eq!(
            (c.st.last_index, c.st.last_end, c.st.last_wscale),
            (TcpIndex::Syn, NEW_ISN + 1, 7)
        );
        // The server answers that SYN: we resync to SYN_RECV from it.
        let synack = seg_opts(info(SYN | ACK, 3333, NEW_ISN + 1, 28960, 0), WS);
        assert_eq!(c.send(Dir::Reply, &synack), accept(t.tcp_syn_recv_ms));
        assert_eq!(c.st.state, TcpConntrack::SynRecv);
        assert_eq!(c.st.seen[0].td_end, NEW_ISN + 1);
        assert_eq!((c.st.seen[0].td_scale, c.st.seen[1].td_scale), (7, 7));
        let out = c.send(Dir::Orig, &seg(info(ACK, NEW_ISN + 1, 3334, 229, 0)));
        assert_eq!(out, accept(t.tcp_established_ms));
    }

    #[test]
    fn window_scale_needs_both_sides() {
        let t = Timeouts::default();
        const WS7: &[u8] = &[1, 3, 3, 7];
        let (mut c, _) = Conn::open(
            &seg_opts(info(SYN, C_ISN, 0, 65535, 0), WS7),
            TcpConfig::default(),
            t,
        );
        assert_eq!(c.st.seen[0].td_scale, 7);
        c.send(
            Dir::Reply,
            &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
        );
        assert_eq!((c.st.seen[0].td_scale, c.st.seen[1].td_scale), (0, 0));

        let (mut c, _) = Conn::open(
            &seg_opts(info(SYN, C_ISN, 0, 65535, 0), WS7),
            TcpConfig::default(),
            t,
        );
        const WS20: &[u8] = &[1, 3, 3, 20];
        c.send(
            Dir::Reply,
            &seg_opts(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0), WS20),
        );
        // Clamped to TCP_MAX_WSCALE.
        assert_eq!((c.st.seen[0].td_scale, c.st.seen[1].td_scale), (7, 14));
        c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 512, 0)));
        // Scaled window: 512 << 7 counts, so data that far ahead is in window.
        let out = c.send(
            Dir::Reply,
            &seg(info(ACK | PSH, S_ISN + 1, C_ISN + 1, 16, 60_000)),
        );
        assert!(matches!(out, TcpOutcome::Accept { .. }), "{out:?}");
    }

    #[test]
    fn sack_extends_ack() {
        let t = Timeouts::default();
        const SACK_PERM: &[u8] = &[1, 1, 4, 2];
        let (mut c, _) = Conn::open(
            &seg_opts(info(SYN, C_ISN, 0, 65535, 0), SACK_PERM),
            TcpConfig::default(),
            t,
        );
        c.send(
            Dir::Reply,
            &seg_opts(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0), SACK_PERM),
        );
        c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 0)));
        c.send(
            Dir::Orig,
            &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 3000)),
        );
        // SACK block right edge beyond anything sent: over the upper bound.
        const SACK_BAD: &[u8] = &[1, 1, 5, 10, 0, 0, 0x13, 0x89, 0, 0x10, 0, 0];
        let out = c.send(
            Dir::Reply,
            &seg_opts(info(ACK, S_ISN + 1, C_ISN + 1, 65535, 0), SACK_BAD),
        );
        assert!(
            matches!(out, TcpOutcome::Invalid(r) if r.starts_with("ACK is over")),
            "{out:?}"
        );
        // A right edge within what was sent is fine.
        let right = (C_ISN + 2001).to_be_bytes();
        let left = (C_ISN + 1001).to_be_bytes();
        let ok: &'static [u8] = Box::leak(
            [&[1u8, 1, 5, 10][..], &left[..], &right[..]]
                .concat()
                .into_boxed_slice(),
        );
        let out = c.send(
            Dir::Reply,
            &seg_opts(info(ACK, S_ISN + 1, C_ISN + 1, 65535, 0), ok),
        );
        assert!(matches!(out, TcpOutcome::Accept { .. }), "{out:?}");
    }

    #[test]
    fn mid_stream_pickup() {
        let t = Timeouts::default();
        let ack = seg(info(ACK | PSH, 123_456, 654_321, 1000, 100));
        assert!(TcpState::new(
            &ack,
            &TcpConfig {
                loose: false,
                ..TcpConfig::default()
            }
        )
        .is_err());

        let (mut c, out) = Conn::open(&ack, TcpConfig::default(), t);
        // ESTABLISHED but no reply yet: at most the UNACK timeout.
        assert_eq!(out, accept(t.tcp_unack_ms));
        assert_eq!(c.st.state, TcpConntrack::Established);
        let liberal = TcpPeer::FLAG_BE_LIBERAL | TcpPeer::FLAG_SACK_PERM;
        assert_eq!(c.st.seen[1].flags & liberal, liberal);
        // First reply: still processed without SEEN_REPLY.
        let out = c.send(Dir::Reply, &seg(info(ACK, 654_321, 123_556, 1000, 0)));
        assert_eq!(out, accept(t.tcp_unack_ms));
        assert!(!c.assured());
        // Next packet: ESTABLISHED -> ESTABLISHED with a reply seen.
        let out = c.send(Dir::Orig, &seg(info(ACK, 123_556, 654_321, 1000, 0)));
        assert_eq!(out, accept(t.tcp_established_ms));
        assert!(c.assured());
        // Liberal: nonsense sequence numbers still pass.
        let out = c.send(Dir::Orig, &seg(info(ACK, 9, 9, 1000, 0)));
        assert!(matches!(out, TcpOutcome::Accept { .. }));
    }

    #[test]
    fn only_syn_or_ack_start_connections() {
        let cfg = TcpConfig::default();
        for flags in [SYN | ACK, FIN | ACK, RST, RST | ACK] {
            assert_eq!(
                TcpState::new(&seg(info(flags, 1, 1, 100, 0)), &cfg),
                Err("invalid new"),
                "{flags:#x}"
            );
        }
        assert_eq!(
            TcpState::new(&seg(info(SYN | FIN, 1, 0, 100, 0)), &cfg),
            Err("invalid tcp flag combination")
        );
    }

    #[test]
    fn retransmissions_switch_to_retrans_timeout() {
        let t = Timeouts {
            tcp_retrans_ms: 200 * SECS,
            tcp_unack_ms: 250 * SECS,
            ..Timeouts::default()
        };
        let cfg = TcpConfig::default();
        let mut c = established(cfg, t);
        let data = seg(info(ACK | PSH, C_ISN + 1, S_ISN + 1, 65535, 500));
        assert_eq!(c.send(Dir::Orig, &data), accept(t.tcp_unack_ms));
        for n in 1..cfg.max_retrans {
            assert_eq!(c.send(Dir::Orig, &data), accept(t.tcp_unack_ms));
            assert_eq!(c.st.retrans, n);
        }
        assert_eq!(c.send(Dir::Orig, &data), accept(t.tcp_retrans_ms));
        assert_eq!(c.st.retrans, cfg.max_retrans);
        // An ACK for it resets the count.
        let out = c.send(
            Dir::Reply,
            &seg(info(ACK, S_ISN + 1, C_ISN + 501, 65535, 0)),
        );
        assert_eq!(out, accept(t.tcp_established_ms));
        assert_eq!(c.st.retrans, 0);
    }

    #[test]
    fn zero_window_uses_retrans_timeout() {
        let t = Timeouts {
            tcp_retrans_ms: 200 * SECS,
            ..Timeouts::default()
        };
        let mut c = established(TcpConfig::default(), t);
        let out = c.send(Dir::Reply, &seg(info(ACK, S_ISN + 1, C_ISN + 1, 0, 0)));
        assert_eq!(out, accept(t.tcp_retrans_ms));
    }

    #[test]
    fn challenge_ack_in_last_ack_is_not_the_last_ack() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        c.send(
            Dir::Orig,
            &seg(info(FIN | ACK, C_ISN + 1, S_ISN + 1, 65535, 0)),
        );
        c.send(
            Dir::Reply,
            &seg(info(FIN | ACK, S_ISN + 1, C_ISN + 2, 65535, 0)),
        );
        assert_eq!(c.st.state, TcpConntrack::LastAck);
        // A new SYN from the client while the old connection lingers.
        assert_eq!(
            c.send(Dir::Orig, &seg(info(SYN, 42_000_000, 0, 65535, 0))),
            TcpOutcome::Ignore
        );
        assert_ne!(c.st.last_flags & TcpState::EXP_CHALLENGE_ACK, 0);
        // The server's challenge ACK must not move us to TIME_WAIT.
        assert_eq!(
            c.send(Dir::Reply, &seg(info(ACK, S_ISN + 2, C_ISN + 2, 65535, 0))),
            TcpOutcome::Ignore
        );
        assert_eq!(c.st.state, TcpConntrack::LastAck);
        assert_eq!(c.st.last_flags & TcpState::EXP_CHALLENGE_ACK, 0);
    }

    #[test]
    fn syn_in_established_is_ignored_and_noted() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        assert_eq!(
            c.send(Dir::Orig, &seg(info(SYN, 31_337, 0, 65535, 0))),
            TcpOutcome::Ignore
        );
        assert_eq!(c.st.state, TcpConntrack::Established);
        assert_eq!((c.st.last_index, c.st.last_end), (TcpIndex::Syn, 31_338));
        // RST answering that SYN (seq 0, ack = its end): window check skipped.
        let out = c.send(Dir::Reply, &seg(info(RST | ACK, 0, 31_338, 0, 0)));
        assert_eq!(out, accept(t.tcp_close_ms));
        assert_eq!(c.st.state, TcpConntrack::Close);
    }

    #[test]
    fn rst_from_the_syn_side_does_not_skip_the_window() {
        let t = Timeouts::default();
        let mut c = established(TcpConfig::default(), t);
        assert_eq!(
            c.send(Dir::Orig, &seg(info(SYN, 31_337, 0, 65535, 0))),
            TcpOutcome::Ignore
        );
        // Same direction as the SYN: no skip, and its ack is beyond anything
        // the server sent.
        let out = c.send(Dir::Orig, &seg(info(RST | ACK, C_ISN + 1, 31_338, 0, 0)));
        assert!(
            matches!(out, TcpOutcome::Invalid(r) if r.starts_with("ACK is over")),
            "{out:?}"
        );
        assert_eq!(c.st.state, TcpConntrack::Established);
    }

    #[test]
    fn rst_answering_challenge_ack_in_syn_sent() {
        let t = Timeouts::default();
        let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
        // Half-open peer answers with an ACK for something else.
        assert_eq!(
            c.send(Dir::Reply, &seg(info(ACK, 8888, 424_242, 65535, 0))),
            TcpOutcome::Ignore
        );
        assert_eq!(c.st.last_ack, 424_242);
        let out = c.send(Dir::Orig, &seg(info(RST, 424_242, 0, 0, 0)));
        assert_eq!(out, accept(t.tcp_close_ms));
        assert_eq!(c.st.state, TcpConntrack::Close);
    }

    #[test]
    fn invalid_transitions() {
        let t = Timeouts::default();
        let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
        // Client ACK before any SYN/ACK.
        let out = c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, 1, 65535, 0)));
        assert_eq!(out, TcpOutcome::Invalid("packet invalid in this state"));
        // Client FIN in SYN_SENT.
        let out = c.send(Dir::Orig, &seg(info(FIN | ACK, C_ISN + 1, 1, 65535, 0)));
        assert_eq!(out, TcpOutcome::Invalid("packet invalid in this state"));
        // Invalid flags never reach the table.
        let out = c.send(Dir::Orig, &seg(info(SYN | RST, C_ISN, 0, 65535, 0)));
        assert_eq!(out, TcpOutcome::Invalid("invalid tcp flag combination"));
        assert_eq!(c.st.state, TcpConntrack::SynSent);
    }

    #[test]
    fn flag_combinations() {
        for ok in [
            SYN,
            SYN | URG,
            SYN | ACK,
            RST,
            RST | ACK,
            FIN | ACK,
            FIN | ACK | URG,
            ACK,
            ACK | URG,
        ] {
            assert!(tcp_error_flags_ok(ok), "{ok:#x}");
            assert!(tcp_error_flags_ok(ok | PSH | ECE | CWR), "{ok:#x}");
        }
        for bad in [
            0,
            PSH,
            FIN,
            URG,
            SYN | FIN,
            SYN | RST,
            RST | FIN,
            FIN | URG,
            SYN | ACK | FIN,
            RST | ACK | URG,
        ] {
            assert!(!tcp_error_flags_ok(bad), "{bad:#x}");
        }
        let valid = (0..=255u8).filter(|&f| tcp_error_flags_ok(f)).count();
        assert_eq!(valid, 9 * 8);
    }

    #[test]
    fn malformed_options_are_harmless() {
        let t = Timeouts::default();
        for opts in [
            &[3u8][..],
            &[3, 0],
            &[3, 1, 5],
            &[3, 9, 7, 0],
            &[2, 4, 5],
            &[0, 3, 3, 7],
            &[1, 1, 1, 1],
        ] {
            let opts: &'static [u8] = Box::leak(opts.to_vec().into_boxed_slice());
            let (c, out) = Conn::open(
                &seg_opts(info(SYN, C_ISN, 0, 65535, 0), opts),
                TcpConfig::default(),
                t,
            );
            assert_eq!(out, accept(t.tcp_syn_sent_ms));
            assert_eq!(
                c.st.seen[0].flags & TcpPeer::FLAG_WINDOW_SCALE,
                0,
                "{opts:?}"
            );
        }
    }

    #[test]
    fn state_names_match_conntrack() {
        let all = [
            (TcpConntrack::None, "NONE"),
            (TcpConntrack::SynSent, "SYN_SENT"),
            (TcpConntrack::SynRecv, "SYN_RECV"),
            (TcpConntrack::Established, "ESTABLISHED"),
            (TcpConntrack::FinWait, "FIN_WAIT"),
            (TcpConntrack::CloseWait, "CLOSE_WAIT"),
            (TcpConntrack::LastAck, "LAST_ACK"),
            (TcpConntrack::TimeWait, "TIME_WAIT"),
            (TcpConntrack::Close, "CLOSE"),
            (TcpConntrack::SynSent2, "SYN_SENT2"),
        ];
        for (i, (s, name)) in all.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(s.name(), *name);
        }
    }

    fn arb_segment() -> impl Strategy<Value = (bool, TcpInfo, Vec<u8>)> {
        let flags = prop_oneof![
            Just(SYN),
            Just(SYN | ACK),
            Just(ACK),
            Just(ACK | PSH),
            Just(FIN | ACK),
            Just(RST),
            Just(RST | ACK),
            any::<u8>(),
        ];
        // Sequence numbers near the handshake's, or anywhere.
        let num = prop_oneof![990u32..1200, 4990u32..5200, any::<u32>(), Just(0u32)];
        let opts = prop_oneof![
            Just(vec![]),
            Just(vec![1, 3, 3, 7]),
            Just(vec![1, 1, 4, 2]),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        (
            any::<bool>(),
            flags,
            num.clone(),
            num,
            any::<u16>(),
            0u16..2000,
            opts,
        )
            .prop_map(|(reply, flags, seq, ack, window, payload_len, opts)| {
                let mut i = info(flags, seq, ack, window, payload_len);
                i.header_len = 20 + (opts.len() as u8 & !3);
                (reply, i, opts)
            })
    }

    proptest! {
        #[test]
        fn random_segments_never_panic(
            liberal in any::<bool>(),
            loose in any::<bool>(),
            ignore_rst in any::<bool>(),
            segs in proptest::collection::vec(arb_segment(), 1..60),
        ) {
            let cfg = TcpConfig { be_liberal: liberal, loose, ignore_invalid_rst: ignore_rst, max_retrans: 3 };
            let t = Timeouts::default();
            let allowed = [
                t.tcp_syn_sent_ms, t.tcp_syn_recv_ms, t.tcp_established_ms, t.tcp_fin_wait_ms,
                t.tcp_close_wait_ms, t.tcp_last_ack_ms, t.tcp_time_wait_ms, t.tcp_close_ms,
                t.tcp_syn_sent2_ms, t.tcp_retrans_ms, t.tcp_unack_ms,
            ];
            let mut conn: Option<Conn> = None;
            for (reply, info, opts) in &segs {
                let s = TcpSegment { info: *info, options: opts };
                let Some(c) = conn.as_mut() else {
                    if let Ok(st) = TcpState::new(&s, &cfg) {
                        prop_assert_eq!(st.state, TcpConntrack::None);
                        let mut c = Conn { st, status: Status::default(), cfg, t };
                        let out = c.send(Dir::Orig, &s);
                        prop_assert!(matches!(out, TcpOutcome::Accept { .. }), "first packet: {:?}", out);
                        conn = Some(c);
                    }
                    continue;
                };
                let dir = if *reply { Dir::Reply } else { Dir::Orig };
                let assured_before = c.assured();
                let out = c.send(dir, &s);
                prop_assert!(c.st.state.name() != "NONE", "connection fell back to NONE");
                prop_assert!(!assured_before || c.assured(), "ASSURED was cleared");
                match out {
                    TcpOutcome::Accept { timeout_ms } => prop_assert!(allowed.contains(&timeout_ms)),
                    TcpOutcome::InvalidLowerTimeout { timeout_ms, .. } => {
                        prop_assert!(c.assured());
                        prop_assert_eq!(timeout_ms, t.tcp_unack_ms);
                    }
                    TcpOutcome::AcceptAndKill | TcpOutcome::Repeat => conn = None,
                    TcpOutcome::Ignore | TcpOutcome::Invalid(_) => {}
                }
            }
        }
    }
}
