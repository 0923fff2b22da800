//! TCP tracking: the kernel's state table and window tracking
//! (net/netfilter/nf_conntrack_proto_tcp.c, Linux 6.x).

use crate::conn::Status;
use crate::timeout::Timeouts;
use crate::tuple::Dir;
use crate::wire::TcpInfo;

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
        TcpConfig { be_liberal: false, loose: true, max_retrans: 3, ignore_invalid_rst: false }
    }
}

/// A TCP segment as the tracker sees it.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    pub info: TcpInfo,
    /// The option bytes (between the 20-byte header and the data).
    pub options: &'a [u8],
}

/// What the tracker decided for one packet of an existing (or just created) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOutcome {
    /// Accept; the connection's timeout becomes `timeout_ms` from now.
    Accept { timeout_ms: u64 },
    /// Accept the packet and destroy the connection now (RST with no reply seen:
    /// the kernel's nf_ct_kill_acct in nf_conntrack_tcp_packet).
    AcceptAndKill,
    /// The kernel's NF_ACCEPT without a state change for sIG packets: the packet
    /// keeps its connection, nothing is updated.
    Ignore,
    /// The packet is INVALID (the kernel's -NF_ACCEPT): no connection attached.
    Invalid(&'static str),
    /// An attempt to reopen a closed connection (-NF_REPEAT): destroy this one and
    /// look the packet up again as new.
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
    pub flags: u8,
}

/// The TCP part of a connection (`struct ip_ct_tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpState {
    pub state: TcpConntrack,
    pub seen: [TcpPeer; 2],
    pub last_dir: u8,
    pub retrans: u8,
    pub last_index: u8,
    pub last_seq: u32,
    pub last_ack: u32,
    pub last_end: u32,
    pub last_win: u16,
    pub last_wscale: u8,
    pub last_flags: u8,
}

impl TcpState {
    /// The kernel's tcp_new(): the state for a connection whose first packet is
    /// `seg` (original direction), or `Err(reason)` if it cannot start one
    /// (the packet is then INVALID and nothing is created).
    pub fn new(seg: &TcpSegment<'_>, cfg: &TcpConfig) -> Result<TcpState, &'static str> {
        let _ = (seg, cfg);
        todo!("tcp_new")
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
        let _ = (dir, seg, status, cfg, timeouts);
        todo!("tcp_packet")
    }
}

/// tcp_error's flag check (tcp_valid_flags); PSH, ECE and CWR are always allowed.
pub fn tcp_error_flags_ok(flags: u8) -> bool {
    use crate::wire::tcp_flags::*;
    matches!(
        flags & (FIN | SYN | RST | ACK | URG),
        x if x == SYN || x == SYN | URG || x == SYN | ACK || x == RST || x == RST | ACK || x == FIN | ACK || x == FIN | ACK | URG || x == ACK || x == ACK | URG
    )
}
