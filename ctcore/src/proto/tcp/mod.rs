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

use crate::timeout::Timeouts;
use crate::wire::{tcp_flags, TcpInfo};

mod options;
mod state;
mod window;

pub use state::tcp_error_flags_ok;

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
///
/// `repr(C)` with the state first: the enum's spare values are the niche
/// that holds [`crate::conn::ProtoState`]'s tag, at its first byte, so that
/// a `ProtoState` is 60 bytes and fits a record's state line with its
/// free-list link (`table::record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct TcpState {
    pub state: TcpConntrack,
    /// Direction of the last in-window (or ignored) packet, `Dir as u8`.
    pub last_dir: u8,
    /// Consecutive identical ACK-only segments (wraps like the kernel's u8).
    pub retrans: u8,
    pub last_index: TcpIndex,
    /// Indexed by `Dir::index()`.
    pub seen: [TcpPeer; 2],
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

#[cfg(test)]
mod tests;
