//! SCTP tracking: the kernel's chunk-driven state table and verification-tag
//! checks (net/netfilter/nf_conntrack_proto_sctp.c, Linux 6.18).
//!
//! Both entry points take the SCTP packet as it lies in the IP payload: the
//! 12-byte common header and the chunks, cut to the IP length (what the
//! kernel's `skb->len - dataoff` covers). Chunks are walked with bounds checks
//! only; nothing here panics on any input.
//!
//! # How the engine drives this tracker (`nf_conntrack_in`)
//!
//! 1. The CRC32c check (`sctp_error`, PRE_ROUTING with checksum checking on)
//!    is the engine's, before lookup; a bad CRC is INVALID with no entry.
//! 2. No entry found: [`SctpState::new`]. `Err` means INVALID, nothing is
//!    created. On `Ok`, call [`SctpState::packet`] with `Dir::Orig` and a zero
//!    `Status` on the same bytes, as `nf_conntrack_sctp_packet` does right
//!    after `sctp_new`, and create the entry only if that returns `Accept`.
//! 3. Entry found: [`SctpState::packet`] in the packet's direction and act on
//!    the [`SctpOutcome`].
//! 4. After `Accept` or `Ignore` for a `Dir::Reply` packet, set
//!    `Status::SEEN_REPLY` (after, never before `packet`). The tracker sets
//!    ASSURED itself; emit the ASSURED event if the bit changed.

use crate::conn::Status;
use crate::timeout::Timeouts;
use crate::tuple::Dir;

/// SCTP conntrack states, numbered as the kernel's `enum sctp_conntrack`
/// (6.x; HEARTBEAT_ACKED = 9 is no longer used and never entered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SctpConntrack {
    #[default]
    None = 0,
    Closed = 1,
    CookieWait = 2,
    CookieEchoed = 3,
    Established = 4,
    ShutdownSent = 5,
    ShutdownRecd = 6,
    ShutdownAckSent = 7,
    HeartbeatSent = 8,
}

impl SctpConntrack {
    const ALL: [SctpConntrack; 9] = [
        SctpConntrack::None,
        SctpConntrack::Closed,
        SctpConntrack::CookieWait,
        SctpConntrack::CookieEchoed,
        SctpConntrack::Established,
        SctpConntrack::ShutdownSent,
        SctpConntrack::ShutdownRecd,
        SctpConntrack::ShutdownAckSent,
        SctpConntrack::HeartbeatSent,
    ];

    /// The state numbered `n` in the kernel's `enum sctp_conntrack`.
    pub fn from_number(n: u8) -> Option<SctpConntrack> {
        SctpConntrack::ALL.get(usize::from(n)).copied()
    }

    /// The name `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        match self {
            SctpConntrack::None => "NONE",
            SctpConntrack::Closed => "CLOSED",
            SctpConntrack::CookieWait => "COOKIE_WAIT",
            SctpConntrack::CookieEchoed => "COOKIE_ECHOED",
            SctpConntrack::Established => "ESTABLISHED",
            SctpConntrack::ShutdownSent => "SHUTDOWN_SENT",
            SctpConntrack::ShutdownRecd => "SHUTDOWN_RECD",
            SctpConntrack::ShutdownAckSent => "SHUTDOWN_ACK_SENT",
            SctpConntrack::HeartbeatSent => "HEARTBEAT_SENT",
        }
    }

    /// The state's timeout. NONE uses CLOSED's, as the kernel's per-netns
    /// table does for its unused slot 0.
    pub fn timeout_ms(self, t: &Timeouts) -> u64 {
        match self {
            SctpConntrack::None | SctpConntrack::Closed => t.sctp_closed_ms,
            SctpConntrack::CookieWait => t.sctp_cookie_wait_ms,
            SctpConntrack::CookieEchoed => t.sctp_cookie_echoed_ms,
            SctpConntrack::Established => t.sctp_established_ms,
            SctpConntrack::ShutdownSent => t.sctp_shutdown_sent_ms,
            SctpConntrack::ShutdownRecd => t.sctp_shutdown_recd_ms,
            SctpConntrack::ShutdownAckSent => t.sctp_shutdown_ack_sent_ms,
            SctpConntrack::HeartbeatSent => t.sctp_heartbeat_sent_ms,
        }
    }
}

/// What the tracker decided for one SCTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SctpOutcome {
    /// NF_ACCEPT after `nf_ct_refresh_acct`: count the packet and its bytes
    /// and, unless the status has FIXED_TIMEOUT, set the expiry to now +
    /// `timeout_ms`.
    Accept { timeout_ms: u64 },
    /// NF_ACCEPT without refresh: the packet belongs to the connection but
    /// the timeout and counters are left alone. Returned for an INIT
    /// retransmitted in CLOSED and for a HEARTBEAT whose vtag does not match
    /// (a possible new path, noted for the HEARTBEAT_ACK).
    Ignore,
    /// -NF_ACCEPT: INVALID. Detach the packet from the connection (no ctinfo,
    /// no NAT, no refresh, no counters, no SEEN_REPLY) and count `invalid`.
    /// Chunks before the offending one may already have moved the state, as
    /// in the kernel. For a just-created state: create nothing.
    Invalid(&'static str),
}

/// The SCTP part of a connection (`struct ip_ct_sctp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SctpState {
    pub state: SctpConntrack,
    /// Verification tag expected on packets in each direction (`Dir::index()`),
    /// as the 32-bit big-endian value read from the wire.
    pub vtag: [u32; 2],
    /// An INIT was seen from this direction (init collision handling).
    pub init: [bool; 2],
    /// Direction of the HEARTBEAT whose vtag check failed, `Dir as u8`.
    pub last_dir: u8,
    /// `SctpState::HEARTBEAT_VTAG_FAILED`.
    pub flags: u8,
}

/// Chunk type numbers (RFC 9260 3.2).
pub mod chunk {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const SACK: u8 = 3;
    pub const HEARTBEAT: u8 = 4;
    pub const HEARTBEAT_ACK: u8 = 5;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const SHUTDOWN_ACK: u8 = 8;
    pub const ERROR: u8 = 9;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
    /// The T bit of ABORT and SHUTDOWN_COMPLETE: the sender used the peer's tag.
    pub const FLAG_T: u8 = 0x01;
}

const COMMON_HEADER_LEN: usize = 12;
const CHUNK_HEADER_LEN: usize = 4;
/// `struct sctp_inithdr`: init tag, a_rwnd, streams, initial TSN.
const INIT_HEADER_LEN: usize = 16;

use SctpConntrack as S;
const S_CL: Option<SctpConntrack> = Some(S::Closed);
const S_CW: Option<SctpConntrack> = Some(S::CookieWait);
const S_CE: Option<SctpConntrack> = Some(S::CookieEchoed);
const S_ES: Option<SctpConntrack> = Some(S::Established);
const S_SS: Option<SctpConntrack> = Some(S::ShutdownSent);
const S_SR: Option<SctpConntrack> = Some(S::ShutdownRecd);
const S_SA: Option<SctpConntrack> = Some(S::ShutdownAckSent);
const S_HS: Option<SctpConntrack> = Some(S::HeartbeatSent);
/// The kernel's sIV.
const S_IV: Option<SctpConntrack> = None;

/// The kernel's `sctp_conntracks[dir][chunk row][old state]` (6.x).
/// Columns: NO, CL, CW, CE, ES, SS, SR, SA, HS.
const SCTP_CONNTRACKS: [[[Option<SctpConntrack>; 9]; 11]; 2] = [
    // Original direction.
    [
        /* init          */ [S_CL, S_CL, S_CW, S_CE, S_ES, S_CL, S_CL, S_SA, S_CW],
        /* init_ack      */ [S_CL, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_CL],
        /* abort         */ [S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL],
        /* shutdown      */ [S_CL, S_CL, S_CW, S_CE, S_SS, S_SS, S_SR, S_SA, S_CL],
        /* shutdown_ack  */ [S_SA, S_CL, S_CW, S_CE, S_ES, S_SA, S_SA, S_SA, S_SA],
        /* error         */ [S_CL, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_CL],
        /* cookie_echo   */ [S_CL, S_CL, S_CE, S_CE, S_ES, S_SS, S_SR, S_SA, S_CL],
        /* cookie_ack    */ [S_CL, S_CL, S_CW, S_ES, S_ES, S_SS, S_SR, S_SA, S_CL],
        /* shutdown_comp */ [S_CL, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_CL, S_CL],
        /* heartbeat     */ [S_HS, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_HS],
        /* heartbeat_ack */ [S_CL, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_HS],
    ],
    // Reply direction.
    [
        /* init          */ [S_IV, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_IV],
        /* init_ack      */ [S_IV, S_CW, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_IV],
        /* abort         */ [S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_IV],
        /* shutdown      */ [S_IV, S_CL, S_CW, S_CE, S_SR, S_SS, S_SR, S_SA, S_IV],
        /* shutdown_ack  */ [S_IV, S_CL, S_CW, S_CE, S_ES, S_SA, S_SA, S_SA, S_IV],
        /* error         */ [S_IV, S_CL, S_CW, S_CL, S_ES, S_SS, S_SR, S_SA, S_IV],
        /* cookie_echo   */ [S_IV, S_CL, S_CE, S_CE, S_ES, S_SS, S_SR, S_SA, S_IV],
        /* cookie_ack    */ [S_IV, S_CL, S_CW, S_ES, S_ES, S_SS, S_SR, S_SA, S_IV],
        /* shutdown_comp */ [S_IV, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_CL, S_IV],
        /* heartbeat     */ [S_IV, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_HS],
        /* heartbeat_ack */ [S_IV, S_CL, S_CW, S_CE, S_ES, S_SS, S_SR, S_SA, S_ES],
    ],
];

/// `sctp_new_state`: the next state for one chunk, `None` for sIV. Chunk
/// types without a row (DATA, SACK, ...) keep the state.
fn next_state(dir: Dir, cur: SctpConntrack, chunk_type: u8) -> Option<SctpConntrack> {
    let row = match chunk_type {
        chunk::INIT => 0,
        chunk::INIT_ACK => 1,
        chunk::ABORT => 2,
        chunk::SHUTDOWN => 3,
        chunk::SHUTDOWN_ACK => 4,
        chunk::ERROR => 5,
        chunk::COOKIE_ECHO => 6,
        chunk::COOKIE_ACK => 7,
        chunk::SHUTDOWN_COMPLETE => 8,
        chunk::HEARTBEAT => 9,
        chunk::HEARTBEAT_ACK => 10,
        _ => return Some(cur),
    };
    SCTP_CONNTRACKS[dir.index()][row][cur as usize]
}

/// One chunk header, and where it starts.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    offset: usize,
    kind: u8,
    flags: u8,
    length: u16,
}

/// `for_each_sctp_chunk`: chunk headers while a whole header fits, stepping
/// by the padded length. A zero length would not advance; `basic_checks`
/// rejects it before any other walk, and the walk stops there too.
fn chunks(pkt: &[u8]) -> impl Iterator<Item = Chunk> + '_ {
    let mut offset = COMMON_HEADER_LEN;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let h = pkt.get(offset..offset.checked_add(CHUNK_HEADER_LEN)?)?;
        let c = Chunk {
            offset,
            kind: h[0],
            flags: h[1],
            length: u16::from_be_bytes([h[2], h[3]]),
        };
        if c.length == 0 {
            done = true;
        }
        offset = offset.saturating_add((usize::from(c.length) + 3) & !3);
        Some(c)
    })
}

/// A bitmap of chunk types (the kernel's 256-bit `map`).
#[derive(Debug, Clone, Copy, Default)]
struct ChunkMap([u64; 4]);

impl ChunkMap {
    fn set(&mut self, kind: u8) {
        self.0[usize::from(kind >> 6)] |= 1 << (kind & 63);
    }
    fn has(&self, kind: u8) -> bool {
        self.0[usize::from(kind >> 6)] & (1 << (kind & 63)) != 0
    }
}

/// `sctp_error` (minus the CRC) and `do_basic_checks`: the header is there,
/// there is at least one chunk, none has length 0, COOKIE_ECHO / COOKIE_ACK
/// only first, INIT / INIT_ACK / SHUTDOWN_COMPLETE only alone.
fn basic_checks(pkt: &[u8]) -> Result<ChunkMap, &'static str> {
    if pkt.len() < COMMON_HEADER_LEN {
        return Err("short packet");
    }
    let mut map = ChunkMap::default();
    let mut alone_only = false;
    let mut count = 0usize;
    for c in chunks(pkt) {
        if matches!(
            c.kind,
            chunk::INIT | chunk::INIT_ACK | chunk::SHUTDOWN_COMPLETE
        ) {
            alone_only = true;
        }
        let first_only = matches!(c.kind, chunk::COOKIE_ACK | chunk::COOKIE_ECHO);
        if ((first_only || alone_only) && count != 0) || c.length == 0 {
            return Err("bad chunk layout");
        }
        map.set(c.kind);
        count += 1;
    }
    if count == 0 {
        return Err("no chunks");
    }
    Ok(map)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The common header's verification tag. Callers have run `basic_checks`.
fn packet_vtag(pkt: &[u8]) -> u32 {
    be32(pkt, 4).unwrap_or(0)
}

/// The Initiate Tag of an INIT / INIT_ACK chunk, if its header is complete.
fn init_tag(pkt: &[u8], c: &Chunk) -> Option<u32> {
    let body = c.offset + CHUNK_HEADER_LEN;
    pkt.get(body..body + INIT_HEADER_LEN)?;
    be32(pkt, body)
}

impl SctpState {
    /// `flags`: a HEARTBEAT failed the vtag check (SCTP_FLAG_HEARTBEAT_VTAG_FAILED).
    pub const HEARTBEAT_VTAG_FAILED: u8 = 1;

    /// The kernel's `sctp_new` (with the checks `nf_conntrack_sctp_packet`
    /// runs before it for an unconfirmed entry): the state for a connection
    /// whose first packet is `sctp_packet`, or `Err` (INVALID, nothing
    /// created). Every chunk must be one that can start a connection from
    /// NONE in the original direction (so no DATA, and out-of-the-blue ABORT,
    /// SHUTDOWN_COMPLETE and COOKIE_ACK are refused, RFC 9260 8.4); an INIT
    /// must carry vtag 0 and a complete INIT header.
    pub fn new(sctp_packet: &[u8]) -> Result<SctpState, &'static str> {
        let pkt = sctp_packet;
        let map = basic_checks(pkt)?;
        if map.has(chunk::ABORT) || map.has(chunk::SHUTDOWN_COMPLETE) || map.has(chunk::COOKIE_ACK)
        {
            return Err("out of the blue ABORT/SHUTDOWN_COMPLETE/COOKIE_ACK");
        }
        let vtag = packet_vtag(pkt);
        let mut st = SctpState::default();
        for c in chunks(pkt) {
            match next_state(Dir::Orig, SctpConntrack::None, c.kind) {
                None | Some(SctpConntrack::None) => return Err("invalid new"),
                Some(_) => {}
            }
            match c.kind {
                chunk::INIT => {
                    // RFC 9260 8.5.1 (A): an INIT carries vtag 0.
                    if vtag != 0 {
                        return Err("INIT with nonzero vtag");
                    }
                    st.vtag[Dir::Reply.index()] = init_tag(pkt, &c).ok_or("truncated INIT")?;
                }
                chunk::HEARTBEAT => st.vtag[Dir::Orig.index()] = vtag,
                // An OOTB SHUTDOWN_ACK is answered by SHUTDOWN_COMPLETE (or
                // ABORT) with the same tag, RFC 9260 8.4 (5).
                chunk::SHUTDOWN_ACK => st.vtag[Dir::Reply.index()] = vtag,
                _ => {}
            }
        }
        Ok(st)
    }

    /// The kernel's `nf_conntrack_sctp_packet` for a packet in direction
    /// `dir`: the vtag checks of RFC 9260 8.5, then each chunk through the
    /// state table. Sets ASSURED on entering ESTABLISHED.
    pub fn packet(
        &mut self,
        dir: Dir,
        sctp_packet: &[u8],
        status: &mut Status,
        timeouts: &Timeouts,
    ) -> SctpOutcome {
        let pkt = sctp_packet;
        let map = match basic_checks(pkt) {
            Ok(map) => map,
            Err(reason) => return SctpOutcome::Invalid(reason),
        };
        let d = dir.index();
        let o = dir.other().index();
        let vtag = packet_vtag(pkt);

        // Chunks with their own tag rules are checked per chunk below.
        let own_rules = [
            chunk::INIT,
            chunk::SHUTDOWN_COMPLETE,
            chunk::COOKIE_ECHO,
            chunk::ABORT,
            chunk::SHUTDOWN_ACK,
            chunk::HEARTBEAT,
            chunk::HEARTBEAT_ACK,
        ];
        if !own_rules.iter().any(|&k| map.has(k)) && vtag != self.vtag[d] {
            return SctpOutcome::Invalid("verification tag check failed");
        }

        let mut new_state = SctpConntrack::None;
        let mut ignore = false;
        for c in chunks(pkt) {
            let t_bit = c.flags & chunk::FLAG_T != 0;
            match c.kind {
                chunk::INIT if vtag != 0 => return SctpOutcome::Invalid("INIT with nonzero vtag"),
                // 8.5.1 (B), (C): own tag, or the peer's with the T bit.
                chunk::ABORT | chunk::SHUTDOWN_COMPLETE => {
                    let expected = if t_bit { self.vtag[o] } else { self.vtag[d] };
                    if vtag != expected {
                        return SctpOutcome::Invalid("ABORT/SHUTDOWN_COMPLETE vtag mismatch");
                    }
                }
                // 8.5.1 (D): the tag from the INIT_ACK.
                chunk::COOKIE_ECHO if vtag != self.vtag[d] => {
                    return SctpOutcome::Invalid("COOKIE_ECHO vtag mismatch");
                }
                chunk::COOKIE_ACK => self.init = [false, false],
                chunk::HEARTBEAT => {
                    if self.vtag[d] == 0 {
                        self.vtag[d] = vtag;
                    } else if vtag != self.vtag[d] {
                        // Maybe a new path or a restarted peer: let it
                        // through once, and accept the tag if answered.
                        if map.has(chunk::DATA) || ignore {
                            return SctpOutcome::Invalid("HEARTBEAT vtag mismatch");
                        }
                        self.flags |= Self::HEARTBEAT_VTAG_FAILED;
                        self.last_dir = dir as u8;
                        ignore = true;
                        continue;
                    } else {
                        self.flags &= !Self::HEARTBEAT_VTAG_FAILED;
                    }
                }
                chunk::HEARTBEAT_ACK => {
                    if self.vtag[d] == 0 {
                        self.vtag[d] = vtag;
                    } else if vtag != self.vtag[d] {
                        if map.has(chunk::DATA) || ignore {
                            return SctpOutcome::Invalid("HEARTBEAT_ACK vtag mismatch");
                        }
                        if self.flags & Self::HEARTBEAT_VTAG_FAILED == 0
                            || self.last_dir == dir as u8
                        {
                            return SctpOutcome::Invalid("HEARTBEAT_ACK vtag mismatch");
                        }
                        self.flags &= !Self::HEARTBEAT_VTAG_FAILED;
                        self.vtag[d] = vtag;
                        self.vtag[o] = 0;
                    } else {
                        self.flags &= !Self::HEARTBEAT_VTAG_FAILED;
                    }
                }
                _ => {}
            }

            let old_state = self.state;
            new_state = match next_state(dir, old_state, c.kind) {
                Some(s) => s,
                None => return SctpOutcome::Invalid("chunk invalid in this state"),
            };

            match c.kind {
                chunk::INIT => {
                    let Some(tag) = init_tag(pkt, &c) else {
                        return SctpOutcome::Invalid("truncated INIT");
                    };
                    // A stale or retransmitted INIT (the tag we already
                    // hold) does not count as a new INIT from this side.
                    if old_state == SctpConntrack::None || self.vtag[o] != tag {
                        if self.init[d] && self.init[o] {
                            self.init[o] = false;
                        }
                        self.init[d] = true;
                    }
                    self.vtag[o] = tag;
                    // INIT retransmits must not keep a CLOSED entry (and its
                    // NAT binding) alive. A fresh entry is never CLOSED here.
                    if new_state == SctpConntrack::Closed && old_state == SctpConntrack::Closed {
                        ignore = true;
                    }
                }
                chunk::INIT_ACK => {
                    let Some(tag) = init_tag(pkt, &c) else {
                        return SctpOutcome::Invalid("truncated INIT_ACK");
                    };
                    let held = self.vtag[o];
                    if !self.init[o] && held != 0 && held != tag {
                        return SctpOutcome::Invalid("INIT_ACK for an unknown INIT");
                    }
                    // INIT collision: both sides sent INIT.
                    if self.init[d] && self.init[o] && held != tag {
                        return SctpOutcome::Invalid("INIT_ACK tag mismatch in INIT collision");
                    }
                    self.vtag[o] = tag;
                }
                _ => {}
            }

            self.state = new_state;
            if old_state != new_state && new_state == SctpConntrack::Established {
                status.set(Status::ASSURED);
            }
        }

        if ignore {
            return SctpOutcome::Ignore;
        }
        SctpOutcome::Accept {
            timeout_ms: new_state.timeout_ms(timeouts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECS: u64 = 1000;
    const TAG_C: u32 = 0xC1C1_0001;
    const TAG_S: u32 = 0x5E5E_0002;

    fn chunk_bytes(kind: u8, flags: u8, body: &[u8]) -> Vec<u8> {
        let len = (CHUNK_HEADER_LEN + body.len()) as u16;
        let mut v = vec![kind, flags];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(body);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn init_body(tag: u32) -> Vec<u8> {
        let mut b = tag.to_be_bytes().to_vec();
        b.extend_from_slice(&65535u32.to_be_bytes());
        b.extend_from_slice(&[0, 10, 0, 10]);
        b.extend_from_slice(&1u32.to_be_bytes());
        b
    }

    fn packet(vtag: u32, chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0x13, 0x88, 0x13, 0x89];
        p.extend_from_slice(&vtag.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        for c in chunks {
            p.extend_from_slice(c);
        }
        p
    }

    fn one(vtag: u32, kind: u8, flags: u8, body: &[u8]) -> Vec<u8> {
        packet(vtag, &[chunk_bytes(kind, flags, body)])
    }

    struct Conn {
        st: SctpState,
        status: Status,
        t: Timeouts,
    }

    impl Conn {
        fn open(first: &[u8]) -> (Conn, SctpOutcome) {
            let st = SctpState::new(first).expect("sctp_new accepts");
            let mut c = Conn {
                st,
                status: Status::default(),
                t: Timeouts::default(),
            };
            let out = c.send(Dir::Orig, first);
            (c, out)
        }

        fn send(&mut self, dir: Dir, pkt: &[u8]) -> SctpOutcome {
            let out = self.st.packet(dir, pkt, &mut self.status, &self.t);
            if matches!(out, SctpOutcome::Accept { .. } | SctpOutcome::Ignore) && dir == Dir::Reply
            {
                self.status.set(Status::SEEN_REPLY);
            }
            out
        }
    }

    fn accept(ms: u64) -> SctpOutcome {
        SctpOutcome::Accept { timeout_ms: ms }
    }

    /// INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK.
    fn established() -> Conn {
        let t = Timeouts::default();
        let (mut c, out) = Conn::open(&one(0, chunk::INIT, 0, &init_body(TAG_C)));
        assert_eq!(out, accept(t.sctp_closed_ms));
        assert_eq!(c.st.state, SctpConntrack::Closed);
        let out = c.send(
            Dir::Reply,
            &one(TAG_C, chunk::INIT_ACK, 0, &init_body(TAG_S)),
        );
        assert_eq!(out, accept(t.sctp_cookie_wait_ms));
        assert_eq!(c.st.state, SctpConntrack::CookieWait);
        assert_eq!(c.st.vtag, [TAG_S, TAG_C]);
        let out = c.send(Dir::Orig, &one(TAG_S, chunk::COOKIE_ECHO, 0, &[1, 2, 3, 4]));
        assert_eq!(out, accept(t.sctp_cookie_echoed_ms));
        assert_eq!(c.st.state, SctpConntrack::CookieEchoed);
        assert!(!c.status.has(Status::ASSURED));
        let out = c.send(Dir::Reply, &one(TAG_C, chunk::COOKIE_ACK, 0, &[]));
        assert_eq!(out, accept(t.sctp_established_ms));
        assert_eq!(c.st.state, SctpConntrack::Established);
        assert!(c.status.has(Status::ASSURED));
        assert_eq!(c.st.init, [false, false]);
        c
    }

    #[test]
    fn handshake_data_and_shutdown() {
        let t = Timeouts::default();
        let mut c = established();
        let data = one(TAG_S, chunk::DATA, 0x03, &[0; 16]);
        assert_eq!(c.send(Dir::Orig, &data), accept(210 * SECS));
        let sack = one(TAG_C, chunk::SACK, 0, &[0; 12]);
        assert_eq!(c.send(Dir::Reply, &sack), accept(210 * SECS));

        assert_eq!(
            c.send(Dir::Orig, &one(TAG_S, chunk::SHUTDOWN, 0, &[0; 4])),
            accept(t.sctp_shutdown_sent_ms)
        );
        assert_eq!(c.st.state, SctpConntrack::ShutdownSent);
        let out = c.send(Dir::Reply, &one(TAG_C, chunk::SHUTDOWN_ACK, 0, &[]));
        assert_eq!(out, accept(t.sctp_shutdown_ack_sent_ms));
        assert_eq!(c.st.state, SctpConntrack::ShutdownAckSent);
        let out = c.send(Dir::Orig, &one(TAG_S, chunk::SHUTDOWN_COMPLETE, 0, &[]));
        assert_eq!(out, accept(t.sctp_closed_ms));
        assert_eq!(c.st.state, SctpConntrack::Closed);
        assert_eq!(c.st.state.name(), "CLOSED");
    }

    #[test]
    fn shutdown_from_reply_side() {
        let t = Timeouts::default();
        let mut c = established();
        assert_eq!(
            c.send(Dir::Reply, &one(TAG_C, chunk::SHUTDOWN, 0, &[0; 4])),
            accept(t.sctp_shutdown_recd_ms)
        );
        assert_eq!(c.st.state, SctpConntrack::ShutdownRecd);
    }

    #[test]
    fn wrong_vtag_is_invalid() {
        let mut c = established();
        let before = c.st;
        let out = c.send(Dir::Orig, &one(TAG_C, chunk::DATA, 0x03, &[0; 16]));
        assert_eq!(out, SctpOutcome::Invalid("verification tag check failed"));
        assert_eq!(c.st, before);
        let out = c.send(Dir::Orig, &one(0xdead, chunk::COOKIE_ECHO, 0, &[0; 4]));
        assert_eq!(out, SctpOutcome::Invalid("COOKIE_ECHO vtag mismatch"));
    }

    #[test]
    fn abort_tag_rules() {
        let t = Timeouts::default();
        let mut c = established();
        // T bit clear: the sender's own tag (the one its peer chose).
        let wrong = one(TAG_C, chunk::ABORT, 0, &[]);
        assert_eq!(
            c.send(Dir::Orig, &wrong),
            SctpOutcome::Invalid("ABORT/SHUTDOWN_COMPLETE vtag mismatch")
        );
        // T bit set: the peer's tag is reflected.
        let reflected = one(TAG_C, chunk::ABORT, chunk::FLAG_T, &[]);
        assert_eq!(c.send(Dir::Orig, &reflected), accept(t.sctp_closed_ms));
        assert_eq!(c.st.state, SctpConntrack::Closed);
    }

    #[test]
    fn init_retransmit_in_closed_is_not_refreshed() {
        let init = one(0, chunk::INIT, 0, &init_body(TAG_C));
        let (mut c, _) = Conn::open(&init);
        assert_eq!(c.send(Dir::Orig, &init), SctpOutcome::Ignore);
        assert_eq!(c.st.state, SctpConntrack::Closed);
        assert_eq!(c.st.init, [true, false]);
        // INIT must carry vtag 0.
        let bad = one(5, chunk::INIT, 0, &init_body(TAG_C));
        assert_eq!(
            c.send(Dir::Orig, &bad),
            SctpOutcome::Invalid("INIT with nonzero vtag")
        );
    }

    #[test]
    fn init_ack_for_unknown_init_is_invalid() {
        let mut c = established();
        let out = c.send(
            Dir::Reply,
            &one(TAG_C, chunk::INIT_ACK, 0, &init_body(0x7777)),
        );
        assert_eq!(out, SctpOutcome::Invalid("INIT_ACK for an unknown INIT"));
        // The same tag again is fine (a late duplicate).
        let out = c.send(
            Dir::Reply,
            &one(TAG_C, chunk::INIT_ACK, 0, &init_body(TAG_S)),
        );
        assert_eq!(out, accept(Timeouts::default().sctp_established_ms));
    }

    #[test]
    fn new_connection_rules() {
        assert_eq!(SctpState::new(&[0; 11]), Err("short packet"));
        assert_eq!(SctpState::new(&packet(0, &[])), Err("no chunks"));
        assert!(SctpState::new(&one(0, chunk::ABORT, 0, &[])).is_err());
        assert!(SctpState::new(&one(0, chunk::SHUTDOWN_COMPLETE, 0, &[])).is_err());
        assert!(SctpState::new(&one(0, chunk::COOKIE_ACK, 0, &[])).is_err());
        assert_eq!(
            SctpState::new(&one(7, chunk::DATA, 0, &[0; 16])),
            Err("invalid new")
        );
        assert_eq!(
            SctpState::new(&one(7, chunk::INIT, 0, &init_body(1))),
            Err("INIT with nonzero vtag")
        );
        assert_eq!(
            SctpState::new(&one(0, chunk::INIT, 0, &[0; 8])),
            Err("truncated INIT")
        );
        // INIT must travel alone; COOKIE_ECHO must come first.
        let bundled = packet(
            0,
            &[
                chunk_bytes(chunk::INIT, 0, &init_body(1)),
                chunk_bytes(chunk::DATA, 0, &[0; 4]),
            ],
        );
        assert_eq!(SctpState::new(&bundled), Err("bad chunk layout"));
        let late_cookie = packet(
            9,
            &[
                chunk_bytes(chunk::DATA, 0, &[0; 4]),
                chunk_bytes(chunk::COOKIE_ECHO, 0, &[0; 4]),
            ],
        );
        assert_eq!(SctpState::new(&late_cookie), Err("bad chunk layout"));
        // Zero-length chunk.
        assert_eq!(
            SctpState::new(&packet(0, &[vec![chunk::INIT, 0, 0, 0]])),
            Err("bad chunk layout")
        );
        // A COOKIE_ECHO can start one (conntrack restarted mid-handshake).
        let st = SctpState::new(&one(9, chunk::COOKIE_ECHO, 0, &[0; 4])).expect("cookie echo");
        assert_eq!(st.state, SctpConntrack::None);
        // tcp_new-like success does not mean an entry: the vtag check runs after.
        let error = one(5, chunk::ERROR, 0, &[0; 4]);
        let mut st = SctpState::new(&error).expect("error chunk");
        let mut status = Status::default();
        let out = st.packet(Dir::Orig, &error, &mut status, &Timeouts::default());
        assert_eq!(out, SctpOutcome::Invalid("verification tag check failed"));
        // OOTB SHUTDOWN_ACK: expect the answer with the same tag.
        let st = SctpState::new(&one(0x4242, chunk::SHUTDOWN_ACK, 0, &[])).expect("shutdown ack");
        assert_eq!(st.vtag, [0, 0x4242]);
    }

    #[test]
    fn heartbeat_starts_secondary_path() {
        let t = Timeouts::default();
        let (mut c, out) = Conn::open(&one(0x1111, chunk::HEARTBEAT, 0, &[0; 8]));
        assert_eq!(out, accept(t.sctp_heartbeat_sent_ms));
        assert_eq!(c.st.state, SctpConntrack::HeartbeatSent);
        // The reply INIT is not allowed here.
        let out = c.send(Dir::Reply, &one(0, chunk::INIT, 0, &init_body(3)));
        assert_eq!(out, SctpOutcome::Invalid("chunk invalid in this state"));
        let out = c.send(Dir::Reply, &one(0x2222, chunk::HEARTBEAT_ACK, 0, &[0; 8]));
        assert_eq!(out, accept(t.sctp_established_ms));
        assert_eq!(c.st.state, SctpConntrack::Established);
        assert_eq!(c.st.vtag, [0x1111, 0x2222]);
        assert!(c.status.has(Status::ASSURED));
    }

    #[test]
    fn heartbeat_vtag_change_is_learned_from_the_ack() {
        let t = Timeouts::default();
        let mut c = established();
        // Peer restarted with a new tag: first HEARTBEAT passes unrefreshed.
        assert_eq!(
            c.send(Dir::Orig, &one(0x9999, chunk::HEARTBEAT, 0, &[0; 8])),
            SctpOutcome::Ignore
        );
        assert_ne!(c.st.flags & SctpState::HEARTBEAT_VTAG_FAILED, 0);
        // An ACK from the same side does not confirm it.
        let same_side = one(0x8888, chunk::HEARTBEAT_ACK, 0, &[0; 8]);
        assert_eq!(
            c.send(Dir::Orig, &same_side),
            SctpOutcome::Invalid("HEARTBEAT_ACK vtag mismatch")
        );
        // The other side answers with its new tag: adopt it, forget ours.
        let out = c.send(Dir::Reply, &one(0x7777, chunk::HEARTBEAT_ACK, 0, &[0; 8]));
        assert_eq!(out, accept(t.sctp_established_ms));
        assert_eq!(c.st.vtag, [0, 0x7777]);
        assert_eq!(c.st.flags & SctpState::HEARTBEAT_VTAG_FAILED, 0);
        // The next HEARTBEAT from the original side sets its tag.
        assert_eq!(
            c.send(Dir::Orig, &one(0x9999, chunk::HEARTBEAT, 0, &[0; 8])),
            accept(t.sctp_established_ms)
        );
        assert_eq!(c.st.vtag, [0x9999, 0x7777]);
        // A mismatching HEARTBEAT bundled with DATA is invalid outright.
        let bundled = packet(
            0x1234,
            &[
                chunk_bytes(chunk::HEARTBEAT, 0, &[0; 8]),
                chunk_bytes(chunk::DATA, 0, &[0; 4]),
            ],
        );
        assert_eq!(
            c.send(Dir::Orig, &bundled),
            SctpOutcome::Invalid("HEARTBEAT vtag mismatch")
        );
    }

    #[test]
    fn state_names_match_conntrack() {
        let all = [
            (SctpConntrack::None, "NONE"),
            (SctpConntrack::Closed, "CLOSED"),
            (SctpConntrack::CookieWait, "COOKIE_WAIT"),
            (SctpConntrack::CookieEchoed, "COOKIE_ECHOED"),
            (SctpConntrack::Established, "ESTABLISHED"),
            (SctpConntrack::ShutdownSent, "SHUTDOWN_SENT"),
            (SctpConntrack::ShutdownRecd, "SHUTDOWN_RECD"),
            (SctpConntrack::ShutdownAckSent, "SHUTDOWN_ACK_SENT"),
            (SctpConntrack::HeartbeatSent, "HEARTBEAT_SENT"),
        ];
        for (i, (s, name)) in all.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(s.name(), *name);
        }
    }

    fn arb_chunk() -> impl Strategy<Value = Vec<u8>> {
        let kind = prop_oneof![0u8..=14, any::<u8>()];
        (
            kind,
            any::<u8>(),
            prop_oneof![
                Just(init_body(TAG_C)),
                Just(init_body(TAG_S)),
                proptest::collection::vec(any::<u8>(), 0..24)
            ],
        )
            .prop_map(|(k, f, body)| chunk_bytes(k, f, &body))
    }

    fn arb_packet() -> impl Strategy<Value = (bool, Vec<u8>)> {
        let vtag = prop_oneof![Just(0u32), Just(TAG_C), Just(TAG_S), any::<u32>()];
        let raw = proptest::collection::vec(any::<u8>(), 0..64);
        let built =
            (vtag, proptest::collection::vec(arb_chunk(), 0..4)).prop_map(|(v, cs)| packet(v, &cs));
        (any::<bool>(), prop_oneof![built, raw])
    }

    proptest! {
        #[test]
        fn random_packets_never_panic(pkts in proptest::collection::vec(arb_packet(), 1..40)) {
            let t = Timeouts::default();
            let allowed = [
                t.sctp_closed_ms, t.sctp_cookie_wait_ms, t.sctp_cookie_echoed_ms, t.sctp_established_ms,
                t.sctp_shutdown_sent_ms, t.sctp_shutdown_recd_ms, t.sctp_shutdown_ack_sent_ms,
                t.sctp_heartbeat_sent_ms,
            ];
            let mut conn: Option<Conn> = None;
            for (reply, pkt) in &pkts {
                let Some(c) = conn.as_mut() else {
                    if let Ok(st) = SctpState::new(pkt) {
                        let mut c = Conn { st, status: Status::default(), t };
                        // Like the kernel, a new entry can still fail the
                        // vtag checks (e.g. a lone ERROR chunk): then
                        // nothing is created.
                        match c.send(Dir::Orig, pkt) {
                            SctpOutcome::Accept { .. } => {
                                prop_assert!(c.st.state != SctpConntrack::None);
                                conn = Some(c);
                            }
                            SctpOutcome::Invalid(_) => {}
                            SctpOutcome::Ignore => prop_assert!(false, "first packet ignored"),
                        }
                    }
                    continue;
                };
                let dir = if *reply { Dir::Reply } else { Dir::Orig };
                let assured = c.status.has(Status::ASSURED);
                if let SctpOutcome::Accept { timeout_ms } = c.send(dir, pkt) {
                    prop_assert!(allowed.contains(&timeout_ms));
                }
                prop_assert!(!assured || c.status.has(Status::ASSURED));
                prop_assert!(c.st.state != SctpConntrack::None);
            }
        }
    }
}
