//! Per-connection state: status bits (the kernel's `IPS_*`), per-packet ctinfo.

/// Connection status bits, named and numbered as the kernel's `enum ip_conntrack_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Status(pub u32);

impl Status {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const SEQ_ADJUST: u32 = 1 << 6;
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    pub const DST_NAT_DONE: u32 = 1 << 8;
    pub const DYING: u32 = 1 << 9;
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    pub const TEMPLATE: u32 = 1 << 11;
    pub const NAT_CLASH: u32 = 1 << 12;
    pub const HELPER: u32 = 1 << 13;
    pub const OFFLOAD: u32 = 1 << 14;
    /// ctgate's own (not the kernel's): the connection holds an
    /// endpoint-independent mapping (see `table::eim`).
    pub const EIM: u32 = 1 << 31;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
    pub fn set(&mut self, bit: u32) {
        self.0 |= bit;
    }
    /// Sets `bit`, returning whether it was already set (test_and_set_bit).
    pub fn test_and_set(&mut self, bit: u32) -> bool {
        let was = self.has(bit);
        self.0 |= bit;
        was
    }
    pub fn clear(&mut self, bit: u32) {
        self.0 &= !bit;
    }
}

use crate::proto::tcp::TcpState;
use crate::tuple::{Dir, Tuple};

/// Per-packet conntrack information (the kernel's `enum ip_conntrack_info`,
/// plus INVALID and UNTRACKED, which the kernel encodes as "no ct" / a template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CtInfo {
    Established = 0,
    Related = 1,
    #[default]
    New = 2,
    EstablishedReply = 3,
    RelatedReply = 4,
    Invalid = 5,
    Untracked = 6,
}

impl CtInfo {
    /// The nft `ct state` this ctinfo matches.
    pub fn state(self) -> CtState {
        match self {
            CtInfo::Established | CtInfo::EstablishedReply => CtState::Established,
            CtInfo::Related | CtInfo::RelatedReply => CtState::Related,
            CtInfo::New => CtState::New,
            CtInfo::Invalid => CtState::Invalid,
            CtInfo::Untracked => CtState::Untracked,
        }
    }
    pub fn is_reply(self) -> bool {
        matches!(self, CtInfo::EstablishedReply | CtInfo::RelatedReply)
    }
}

/// `ct state` values as nftables names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CtState {
    Invalid = 0,
    Established = 1,
    Related = 2,
    New = 3,
    Untracked = 4,
}

impl CtState {
    pub const ALL: [CtState; 5] = [
        CtState::Invalid,
        CtState::Established,
        CtState::Related,
        CtState::New,
        CtState::Untracked,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CtState::Invalid => "invalid",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::New => "new",
            CtState::Untracked => "untracked",
        }
    }
    pub fn from_name(s: &str) -> Option<CtState> {
        CtState::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// Packet and byte counters of one direction (nf_conn_acct).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// A time in ms (u64) aligned to 4 bytes: so that [`ProtoState`] is
/// 4-aligned and 60 bytes (the TCP state's size, its tag in a niche), and
/// a record's state line holds it with its free-list link.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, packed(4))]
pub struct Ms4(u64);

impl Ms4 {
    #[inline]
    pub fn new(ms: u64) -> Ms4 {
        Ms4(ms)
    }
    #[inline]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Debug for Ms4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0;
        ms.fmt(f)
    }
}

/// Protocol-private state (the kernel's `union nf_conntrack_proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtoState {
    #[default]
    Generic,
    Tcp(TcpState),
    /// UDP / UDP-Lite / GRE: when the connection counts as a stream (first packet + 2 s).
    Stream {
        stream_ts_ms: Ms4,
    },
    Icmp,
    Sctp(crate::proto::sctp::SctpState),
}

/// One connection (`struct nf_conn`), as the table hands it out (listings,
/// events, snapshots, sync) and as a new connection is built before its
/// confirm. The table keeps it in another form (`table::record`: a 64-byte
/// hot line, a cold part, a state line for TCP / SCTP) and assembles a
/// `Conn` on demand. Packet and byte counters and the start time are not
/// here: like the kernel's accounting and timestamp extensions they exist
/// only when switched on (`[conntrack] accounting`), in an array beside the
/// records ([`Ext`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Conn {
    /// When the connection expires, in the engine's clock (ms).
    pub deadline_ms: u64,
    pub status: Status,
    /// A unique id (like the kernel's ct id).
    pub id: u32,
    pub mark: u32,
    /// Per direction (`Dir::index()`): the caller's cached verdict for this
    /// connection's packets, opaque to the engine (0: none). The engine
    /// hands it to `decide` ([`crate::engine::CtResult::cached`]), keeps
    /// what `decide` returns ([`crate::engine::Egress::cache`]) and clears
    /// both when the mark changes (a policy input).
    pub verdicts: [u16; 2],
    /// `tuples[Dir::Orig]` and `tuples[Dir::Reply]` (the kernel's tuplehash[2]).
    pub tuples: [Tuple; 2],
    /// For a translated IPv4 TCP / UDP connection: per direction
    /// (`Dir::index()`), what its translation adds to the IP header's and
    /// the L4 checksum ([`crate::nat::rewrite::csum_deltas`], worked out
    /// once at confirm), so that a packet's rewrite is stores and two
    /// additions. None otherwise.
    pub nat_csum: Option<[NatCsum; 2]>,
    /// The connection's helper (nft `ct helper set`).
    pub helper: crate::helper::Helper,
    pub proto: ProtoState,
}

/// The ones'-complement sums a translation adds to a packet's checksums
/// (RFC 1624: `HC' = ~(~HC + delta)`), in the machine's byte order like the
/// rewrite's other arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatCsum {
    pub ip: u16,
    pub l4: u16,
}

/// The kernel's accounting and timestamp extensions (`nf_conn_acct`,
/// `nf_conn_tstamp`): packets and L3 bytes per direction, and when the
/// connection was created (engine clock, ms). Kept only when
/// `Tunables::accounting` was on when the table was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ext {
    pub counters: [Counter; 2],
    pub start_ms: u64,
}

/// A connection with its extensions, as snapshots, listings and events hand
/// it out (`ext` is None when accounting is off). Reads as the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listed {
    pub conn: Conn,
    pub ext: Option<Ext>,
}

impl std::ops::Deref for Listed {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl Conn {
    pub fn tuple(&self, dir: Dir) -> &Tuple {
        &self.tuples[dir.index()]
    }
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
    }
    /// The protocol state as a number (for "did the state change?"): the TCP
    /// or SCTP state, 0 for stateless protocols.
    #[inline]
    pub fn state_tag(&self) -> u8 {
        // Only TCP and SCTP have states: told by the tuple (first cache line),
        // so that other protocols' packets never read the protocol state's
        // line for it.
        if !matches!(
            self.tuples[0].proto,
            crate::tuple::IPPROTO_TCP | crate::tuple::IPPROTO_SCTP
        ) {
            return 0;
        }
        match &self.proto {
            ProtoState::Tcp(t) => t.state as u8 + 1,
            ProtoState::Sctp(s) => s.state as u8 + 1,
            _ => 0,
        }
    }

    /// The protocol state name `conntrack -L` prints, if the protocol has one.
    pub fn state_name(&self) -> Option<&'static str> {
        match &self.proto {
            ProtoState::Tcp(t) => Some(t.state.name()),
            ProtoState::Sctp(s) => Some(s.state.name()),
            _ => None,
        }
    }
}
