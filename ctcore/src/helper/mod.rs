//! Conntrack helpers: the kernel's nf_conntrack_ftp and nf_conntrack_tftp
//! with their NAT halves (nf_nat_ftp, nf_nat_tftp), the expectations they
//! make ([`expect`]), and TCP sequence adjustment after a payload changed
//! length ([`seqadj`]).
//!
//! As with nft `ct helper set`, a helper is assigned to a new connection by
//! the rule that accepts it (never by port). The engine runs it on every
//! later accepted packet of the connection ([`crate::engine`]'s `helpers`
//! module); what it decides to change in a packet (a rewritten FTP
//! announcement, adjusted sequence numbers) comes back as a [`PacketFix`]
//! that the caller applies after the NAT rewrite, with [`apply_fix`].

pub mod expect;
pub mod ftp;
pub mod seqadj;

use crate::checksum;
use crate::nat::rewrite::{ChecksumMode, RewriteError};
use crate::tuple::{Family, IPPROTO_TCP, IPPROTO_UDP};
use crate::wire::{Parsed, L4};

pub use expect::{ExpRef, Expect, Expects, MasterRef};
pub use seqadj::SeqAdj;

/// A connection's helper (`nfct_help(ct)->helper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Helper {
    #[default]
    None = 0,
    Ftp = 1,
    Tftp = 2,
}

impl Helper {
    /// The name `conntrack -L` prints (`helper=ftp`) and the config takes.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Helper::None => None,
            Helper::Ftp => Some("ftp"),
            Helper::Tftp => Some("tftp"),
        }
    }

    pub fn parse(s: &str) -> Result<Helper, String> {
        match s {
            "ftp" => Ok(Helper::Ftp),
            "tftp" => Ok(Helper::Tftp),
            _ => Err(format!("unknown helper {s:?} (use \"ftp\" or \"tftp\")")),
        }
    }

    /// The transport protocol the helper works on.
    pub fn proto(self) -> Option<u8> {
        match self {
            Helper::None => None,
            Helper::Ftp => Some(IPPROTO_TCP),
            Helper::Tftp => Some(IPPROTO_UDP),
        }
    }

    /// The expectation policy (`struct nf_conntrack_expect_policy`): at most
    /// this many expectations per master, each living this long (ms).
    /// nf_conntrack_ftp and nf_conntrack_tftp: 1, 5 minutes.
    pub fn expect_policy(self) -> (u32, u64) {
        match self {
            Helper::None => (0, 0),
            Helper::Ftp => (FTP_MAX_EXPECTED, FTP_EXPECT_TIMEOUT_MS),
            Helper::Tftp => (TFTP_MAX_EXPECTED, TFTP_EXPECT_TIMEOUT_MS),
        }
    }
}

/// `ftp_exp_policy.max_expected`.
pub const FTP_MAX_EXPECTED: u32 = 1;
/// `ftp_exp_policy.timeout` (5 * 60 s).
pub const FTP_EXPECT_TIMEOUT_MS: u64 = 300_000;
/// `tftp_exp_policy.max_expected`.
pub const TFTP_MAX_EXPECTED: u32 = 1;
/// `tftp_exp_policy.timeout` (5 * 60 s).
pub const TFTP_EXPECT_TIMEOUT_MS: u64 = 300_000;

/// A connection's helper data (the kernel's `nf_conn_help` with
/// `nf_ct_ftp_master`, and the `nf_conn_seqadj` extension), kept per table
/// slot beside the records when helpers are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HelpState {
    pub ftp: ftp::FtpMaster,
    /// Per `Dir::index()`.
    pub seqadj: [SeqAdj; 2],
    /// The expectation this connection holds (both helpers allow one:
    /// a new one evicts it, as evict_oldest_expect does).
    pub expecting: Option<ExpRef>,
    /// For an expected connection (status EXPECTED): its master.
    pub master: Option<MasterRef>,
}

/// The longest replacement text a helper writes.
pub const MANGLE_MAX: usize = ftp::MAX_TEXT;

/// A payload change (nf_nat_mangle_tcp_packet): `old_len` bytes at `at`
/// (offset in the L4 payload) become `bytes[..len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mangle {
    pub at: u16,
    pub old_len: u16,
    pub len: u8,
    pub bytes: [u8; MANGLE_MAX],
}

impl Mangle {
    pub fn text(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    /// What the packet grows by (negative: shrinks).
    pub fn delta(&self) -> i32 {
        i32::from(self.len) - i32::from(self.old_len)
    }
}

/// What a helper changes in one packet, after its NAT rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketFix {
    /// TCP sequence adjustment (nf_ct_seq_adjust): this direction's (for the
    /// sequence number) and the other's (for the acknowledgement and SACK
    /// blocks).
    pub seqadj: Option<[SeqAdj; 2]>,
    pub mangle: Option<Mangle>,
}

impl PacketFix {
    /// The frame length after the fix, for a frame parsed as `p`: the IP
    /// packet's end moved by the mangle (bytes after it, Ethernet padding,
    /// are dropped when the length changes).
    pub fn frame_len(&self, p: &Parsed, frame_len: usize) -> usize {
        match &self.mangle {
            Some(m) if m.delta() != 0 => {
                let end = p.l3_offset as usize + p.l3_len as usize;
                (end as i64 + i64::from(m.delta())).max(0) as usize
            }
            _ => frame_len,
        }
    }
}

/// Applies `fix` to `frame` (parsed as `p`, before the fix; the NAT
/// rewrite already applied). `frame` must be at least
/// `fix.frame_len(p, ..)` long when the packet grows: the caller makes
/// room first and trims after. Sequence numbers, acknowledgement, SACK
/// blocks and the payload change; the IP length, the IPv4 header checksum
/// and the L4 checksum follow (summed afresh, or, with `Offload`, the
/// pseudo-header sum the NIC expects). Returns the new frame length.
pub fn apply_fix(
    frame: &mut [u8],
    p: &Parsed,
    fix: &PacketFix,
    mode: ChecksumMode,
) -> Result<usize, RewriteError> {
    let l3 = p.l3_offset as usize;
    let l4 = p.l4_offset as usize;
    let end = l3 + p.l3_len as usize;
    if p.frag.is_some() || end > frame.len() || l4 > end {
        return Err(RewriteError::Truncated);
    }
    let (data_off, csum_at, tcp) = match p.l4 {
        L4::Tcp(t) => (l4 + t.header_len as usize, l4 + 16, true),
        L4::Udp { .. } if p.proto == IPPROTO_UDP => (l4 + 8, l4 + 6, false),
        _ => return Err(RewriteError::Truncated),
    };
    if data_off > end {
        return Err(RewriteError::Truncated);
    }
    let udp_no_csum = !tcp && p.family == Family::V4 && be16(frame, csum_at) == 0;
    if let (Some([this, other]), L4::Tcp(t)) = (&fix.seqadj, p.l4) {
        let seq = be32(frame, l4 + 4);
        let ack = be32(frame, l4 + 8);
        let new_seq = seq.wrapping_add(this.seq_offset(seq) as u32);
        frame[l4 + 4..l4 + 8].copy_from_slice(&new_seq.to_be_bytes());
        let new_ack = ack.wrapping_sub(other.ack_offset(ack) as u32);
        frame[l4 + 8..l4 + 12].copy_from_slice(&new_ack.to_be_bytes());
        let _ = t;
        sack_adjust(&mut frame[l4 + 20..data_off], other);
    }
    let mut end = end;
    if let Some(m) = &fix.mangle {
        let at = data_off + m.at as usize;
        let old_end = at + m.old_len as usize;
        if old_end > end {
            return Err(RewriteError::Truncated);
        }
        let new_end = (end as i64 + i64::from(m.delta())) as usize;
        if new_end > frame.len() || new_end - l3 > usize::from(u16::MAX) {
            return Err(RewriteError::Truncated);
        }
        frame.copy_within(old_end..end, at + m.len as usize);
        frame[at..at + m.len as usize].copy_from_slice(m.text());
        end = new_end;
        let l3_len = (end - l3) as u16;
        match p.family {
            Family::V4 => {
                put16(frame, l3 + 2, l3_len);
                put16(frame, l3 + 10, 0);
                let ihl = ((frame[l3] & 0x0f) as usize) * 4;
                let c = checksum::checksum(&frame[l3..l3 + ihl]);
                put16(frame, l3 + 10, c);
            }
            Family::V6 => put16(frame, l3 + 4, l3_len - 40),
        }
        if !tcp {
            put16(frame, l4 + 4, (end - l4) as u16);
        }
    }
    if udp_no_csum {
        return Ok(end);
    }
    let (src, dst) = addrs(frame, p.family, l3);
    put16(frame, csum_at, 0);
    let c = match mode {
        ChecksumMode::Offload => {
            checksum::pseudo_header(p.family, &src, &dst, p.proto, (end - l4) as u32)
        }
        ChecksumMode::Incremental => {
            let c = checksum::l4_checksum(p.family, &src, &dst, p.proto, &frame[l4..end]);
            if !tcp && c == 0 {
                0xffff
            } else {
                c
            }
        }
    };
    put16(frame, csum_at, c);
    Ok(end)
}

/// nf_ct_sack_adjust over a TCP header's options: each SACK block's edges
/// moved back by the other direction's offsets (`ack_offset` of each edge).
/// Malformed options end the walk.
pub fn sack_adjust(opts: &mut [u8], other: &SeqAdj) {
    const EOL: u8 = 0;
    const NOP: u8 = 1;
    const SACK: u8 = 5;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            EOL => return,
            NOP => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    return;
                }
                if kind == SACK && len >= 10 && (len - 2).is_multiple_of(8) {
                    let mut o = i + 2;
                    while o < i + len {
                        let edge = be32(opts, o);
                        let moved = edge.wrapping_sub(other.ack_offset(edge) as u32);
                        opts[o..o + 4].copy_from_slice(&moved.to_be_bytes());
                        o += 4;
                    }
                }
                i += len;
            }
        }
    }
}

fn be16(f: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([f[o], f[o + 1]])
}

fn be32(f: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]])
}

fn put16(f: &mut [u8], o: usize, v: u16) {
    f[o..o + 2].copy_from_slice(&v.to_be_bytes());
}

fn addrs(f: &[u8], family: Family, l3: usize) -> (crate::tuple::Addr, crate::tuple::Addr) {
    let mut s = crate::tuple::Addr::default();
    let mut d = crate::tuple::Addr::default();
    match family {
        Family::V4 => {
            s.0[..4].copy_from_slice(&f[l3 + 12..l3 + 16]);
            d.0[..4].copy_from_slice(&f[l3 + 16..l3 + 20]);
        }
        Family::V6 => {
            s.0.copy_from_slice(&f[l3 + 8..l3 + 24]);
            d.0.copy_from_slice(&f[l3 + 24..l3 + 40]);
        }
    }
    (s, d)
}

/// Helper counters of one worker (the kernel's expect_new / expect_create /
/// expect_delete, and what helpers did to packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HelperStats {
    /// Connections that matched an expectation (RELATED).
    pub expect_new: u64,
    /// Expectations made.
    pub expect_create: u64,
    /// Expectations that lapsed, were evicted by a newer one of their
    /// master, or were refused.
    pub expect_delete: u64,
    /// Expectations refused: their window of the stripe's array was full.
    pub expect_full: u64,
    /// Packets whose payload a NAT helper rewrote.
    pub mangled: u64,
    /// Packets a helper dropped (partial or malformed commands, no
    /// expectation possible, no port).
    pub dropped: u64,
}

impl HelperStats {
    pub fn add(&mut self, o: &HelperStats) {
        self.expect_new += o.expect_new;
        self.expect_create += o.expect_create;
        self.expect_delete += o.expect_delete;
        self.expect_full += o.expect_full;
        self.mangled += o.mangled;
        self.dropped += o.dropped;
    }

    /// (name, value) pairs in a fixed order, for printing and metrics.
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("expect_new", self.expect_new),
            ("expect_create", self.expect_create),
            ("expect_delete", self.expect_delete),
            ("expect_full", self.expect_full),
            ("helper_mangled", self.mangled),
            ("helper_dropped", self.dropped),
        ]
    }
}
