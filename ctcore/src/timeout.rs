//! All timeouts in one table, defaulting to the kernel's (net.netfilter.nf_conntrack_*_timeout).
//! Values in milliseconds. Changeable at runtime by replacing the table.

/// Timeouts in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub generic_ms: u64,
    /// Indexed by `proto::tcp::TcpConntrack as usize` (NONE unused), plus retrans/unack.
    pub tcp_syn_sent_ms: u64,
    pub tcp_syn_recv_ms: u64,
    pub tcp_established_ms: u64,
    pub tcp_fin_wait_ms: u64,
    pub tcp_close_wait_ms: u64,
    pub tcp_last_ack_ms: u64,
    pub tcp_time_wait_ms: u64,
    pub tcp_close_ms: u64,
    pub tcp_syn_sent2_ms: u64,
    pub tcp_retrans_ms: u64,
    pub tcp_unack_ms: u64,
    pub udp_unreplied_ms: u64,
    pub udp_stream_ms: u64,
    pub icmp_ms: u64,
    pub icmpv6_ms: u64,
    pub gre_unreplied_ms: u64,
    pub gre_stream_ms: u64,
    pub sctp_closed_ms: u64,
    pub sctp_cookie_wait_ms: u64,
    pub sctp_cookie_echoed_ms: u64,
    pub sctp_established_ms: u64,
    pub sctp_shutdown_sent_ms: u64,
    pub sctp_shutdown_recd_ms: u64,
    pub sctp_shutdown_ack_sent_ms: u64,
    pub sctp_heartbeat_sent_ms: u64,
    /// How long an endpoint-independent NAT mapping outlives the last
    /// connection through it (ctgate's own; not a kernel sysctl).
    pub nat_eim_ms: u64,
}

const SECS: u64 = 1000;
const MINS: u64 = 60 * SECS;
const DAYS: u64 = 24 * 60 * MINS;

impl Default for Timeouts {
    /// The kernel's defaults (Linux 6.x).
    fn default() -> Self {
        Timeouts {
            generic_ms: 600 * SECS,
            tcp_syn_sent_ms: 2 * MINS,
            tcp_syn_recv_ms: 60 * SECS,
            tcp_established_ms: 5 * DAYS,
            tcp_fin_wait_ms: 2 * MINS,
            tcp_close_wait_ms: 60 * SECS,
            tcp_last_ack_ms: 30 * SECS,
            tcp_time_wait_ms: 2 * MINS,
            tcp_close_ms: 10 * SECS,
            tcp_syn_sent2_ms: 2 * MINS,
            tcp_retrans_ms: 5 * MINS,
            tcp_unack_ms: 5 * MINS,
            udp_unreplied_ms: 30 * SECS,
            udp_stream_ms: 120 * SECS,
            icmp_ms: 30 * SECS,
            icmpv6_ms: 30 * SECS,
            gre_unreplied_ms: 30 * SECS,
            gre_stream_ms: 180 * SECS,
            sctp_closed_ms: 10 * SECS,
            sctp_cookie_wait_ms: 3 * SECS,
            sctp_cookie_echoed_ms: 3 * SECS,
            sctp_established_ms: 210 * SECS,
            sctp_shutdown_sent_ms: 3 * SECS,
            sctp_shutdown_recd_ms: 3 * SECS,
            sctp_shutdown_ack_sent_ms: 3 * SECS,
            sctp_heartbeat_sent_ms: 30 * SECS,
            nat_eim_ms: crate::nat::EIM_TIMEOUT_MS,
        }
    }
}
