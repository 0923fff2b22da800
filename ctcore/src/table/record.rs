//! A connection record as a stripe keeps it: what an established packet
//! reads and writes in one 64-byte line ([`Hot`]), the rest beside it.
//!
//! - [`Hot`]: both tuples in their compact form ([`Compact`]: an IPv4
//!   tuple whole, an IPv6 one with its addresses folded), the deadline,
//!   status, id, cached verdicts, the translation's checksum deltas and
//!   the index of the protocol state's line. A UDP, ICMP or generic
//!   packet, translated or not, reads and writes this line only.
//! - [`Cold`] (24 bytes): the timer wheel's link, the mark (read only when
//!   the status says there is one), the IPv6 addresses' index and UDP's
//!   stream time (read until the connection is an assured stream).
//! - A TCP or SCTP connection's state in a line of its own ([`Side`]),
//!   from a pool that grows as such connections come (reserved at start,
//!   its memory touched only when used); an IPv6 connection's four
//!   addresses likewise.
//!
//! So a UDP connection takes 64 + 24 bytes and a TCP one 64 + 24 + 64,
//! plus its two index entries (32 bytes). Free records are chained through
//! their wheel links, free state lines through themselves: no free list
//! beside them.
//!
//! Which protocol state a record has, its helper, whether it holds
//! checksum deltas and whether it has a mark are private bits of the hot
//! line's status ([`PRIVATE`]); a [`Conn`] handed out never carries them.

use super::wheel::{Link, NIL};
use crate::conn::{Conn, Ms4, NatCsum, ProtoState, Status};
use crate::helper::Helper;
use crate::nat::ports::{self, MapKey};
use crate::proto::sctp::SctpState;
use crate::proto::tcp::TcpState;
use crate::tuple::{is_icmp_proto, Addr, Dir, Family, Tuple, V4Parts};

/// The private status bits: protocol state kind (3), helper (2), checksum
/// deltas held (1), a mark set (1).
pub const PRIVATE: u32 = 0x7f << 24;
const KIND_SHIFT: u32 = 24;
const HELPER_SHIFT: u32 = 27;
/// The record holds checksum deltas (`Conn::nat_csum` is Some).
pub const CSUM: u32 = 1 << 29;
/// The connection's mark is not 0 (it is in the cold part).
pub const MARKED: u32 = 1 << 30;

const KIND_GENERIC: u32 = 0;
const KIND_TCP: u32 = 1;
const KIND_STREAM: u32 = 2;
const KIND_ICMP: u32 = 3;
const KIND_SCTP: u32 = 4;

/// A tuple in 16 bytes, compared as two words: an IPv4 tuple whole; an
/// IPv6 one with each address folded to 32 bits (the addresses are kept
/// beside the record: equal compact tuples are then compared there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Compact {
    /// Source address (low half), destination (high half), in memory order.
    addrs: u64,
    /// Source port, destination port, protocol, family, zone.
    rest: u64,
}

#[inline(always)]
fn word(a: &Addr, i: usize) -> u32 {
    u32::from_ne_bytes([a.0[i], a.0[i + 1], a.0[i + 2], a.0[i + 3]])
}

/// A compact tuple's second word: ports, protocol, family, zone.
#[inline(always)]
fn rest((src_port, dst_port): (u16, u16), proto: u8, family: Family, zone: u16) -> u64 {
    u64::from(src_port)
        | u64::from(dst_port) << 16
        | u64::from(proto) << 32
        | (family as u64) << 40
        | u64::from(zone) << 48
}

#[inline(always)]
fn fold(a: &Addr, family: Family) -> u32 {
    match family {
        Family::V4 => word(a, 0),
        Family::V6 => word(a, 0) ^ word(a, 4) ^ word(a, 8) ^ word(a, 12),
    }
}

impl Compact {
    #[inline(always)]
    pub fn of(t: &Tuple) -> Compact {
        Compact {
            addrs: u64::from(fold(&t.src, t.family)) | u64::from(fold(&t.dst, t.family)) << 32,
            rest: rest((t.src_port, t.dst_port), t.proto, t.family, t.zone),
        }
    }
    /// [`Compact::of`] for an IPv4 tuple, from its parts.
    #[inline(always)]
    pub fn of_v4(src: &Addr, dst: &Addr, ports: (u16, u16), proto: u8, zone: u16) -> Compact {
        Compact {
            addrs: u64::from(word(src, 0)) | u64::from(word(dst, 0)) << 32,
            rest: rest(ports, proto, Family::V4, zone),
        }
    }
    #[inline(always)]
    pub fn src_v4(&self) -> [u8; 4] {
        (self.addrs as u32).to_ne_bytes()
    }
    #[inline(always)]
    pub fn dst_v4(&self) -> [u8; 4] {
        ((self.addrs >> 32) as u32).to_ne_bytes()
    }
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        self.rest as u16
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        (self.rest >> 16) as u16
    }
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        (self.rest >> 32) as u8
    }
    #[inline(always)]
    pub fn zone(&self) -> u16 {
        (self.rest >> 48) as u16
    }
    /// Whether `other` is this IPv4 tuple inverted (not ICMP, whose
    /// inversion changes the type; endpoints that differ): then its key
    /// is this one's with the endpoints' order flipped (`Key::inverted`).
    #[inline(always)]
    pub fn inverts_v4(&self, other: &Compact) -> bool {
        let proto = self.proto();
        !self.is_v6()
            && !is_icmp_proto(proto)
            && self.addrs.rotate_left(32) == other.addrs
            && other.rest
                == rest(
                    (self.dst_port(), self.src_port()),
                    proto,
                    Family::V4,
                    self.zone(),
                )
            && (self.addrs as u32, self.src_port()) != ((self.addrs >> 32) as u32, self.dst_port())
    }

    /// What the table's hash reads of an IPv4 compact tuple (as of the
    /// whole tuple); None for IPv6.
    #[inline(always)]
    pub fn v4_parts(&self) -> Option<V4Parts> {
        if self.is_v6() {
            return None;
        }
        let proto = self.proto();
        // ICMP: only the id counts (the source port), in both endpoints.
        let dp = if is_icmp_proto(proto) {
            self.src_port()
        } else {
            self.dst_port()
        };
        Some(V4Parts {
            src: (u32::from_le_bytes(self.src_v4()), self.src_port()),
            dst: (u32::from_le_bytes(self.dst_v4()), dp),
            proto,
            zone: self.zone(),
        })
    }
    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        (self.rest >> 40) as u8 == Family::V6 as u8
    }
    /// The whole tuple: IPv6 addresses from `v6` (source, destination).
    #[inline]
    fn tuple(&self, v6: Option<&[Addr]>) -> Tuple {
        let (src, dst, family) = match v6 {
            Some(a) if self.is_v6() => (a[0], a[1], Family::V6),
            _ => (
                Addr::from_v4(self.src_v4()),
                Addr::from_v4(self.dst_v4()),
                Family::V4,
            ),
        };
        Tuple {
            src,
            dst,
            src_port: self.src_port(),
            dst_port: self.dst_port(),
            proto: self.proto(),
            family,
            zone: self.zone(),
        }
    }
}

/// What an established packet reads and writes: one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct Hot {
    /// `Conn::tuples`, compact (`Dir::index()`).
    pub tuples: [Compact; 2],
    pub deadline_ms: u64,
    /// `Conn::status` with the [`PRIVATE`] bits.
    pub status: Status,
    pub id: u32,
    pub verdicts: [u16; 2],
    /// The protocol state's line in the stripe's pool (TCP, SCTP), else NIL.
    pub side: u32,
    /// `Conn::nat_csum` when the status has [`CSUM`].
    pub nat_csum: [NatCsum; 2],
}

const _: () = assert!(std::mem::size_of::<Hot>() == 64);

impl Hot {
    /// `Conn::helper`.
    #[inline(always)]
    pub fn helper(&self) -> Helper {
        helper_of(self.status)
    }
    #[inline(always)]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
    }
}

/// The rest of a record: read by expiry, by marked connections' packets,
/// by IPv6 lookups and by UDP packets until the stream is assured.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Cold {
    /// Its place in the stripe's timer wheel (while live); the next free
    /// record (while free).
    pub link: Link,
    pub mark: u32,
    /// The IPv6 addresses' slot (NIL for IPv4).
    pub v6: u32,
    /// UDP / UDP-Lite: when the connection counts as a stream.
    pub stream_ts_ms: Ms4,
}

const _: () = assert!(std::mem::size_of::<Cold>() == 24);

/// A TCP or SCTP connection's state: one line, chained through `next` when free.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Side {
    proto: ProtoState,
    next: u32,
}

const _: () = assert!(std::mem::size_of::<Side>() == 64);

/// The protocol state of a record, borrowed in place.
pub enum ProtoMut<'a> {
    Generic,
    Tcp(&'a mut TcpState),
    Stream(&'a mut Ms4),
    Icmp,
    Sctp(&'a mut SctpState),
}

impl<'a> ProtoMut<'a> {
    /// A connection's protocol state as a [`Conn`] holds it.
    pub fn of(p: &'a mut ProtoState) -> ProtoMut<'a> {
        match p {
            ProtoState::Generic => ProtoMut::Generic,
            ProtoState::Tcp(t) => ProtoMut::Tcp(t),
            ProtoState::Stream { stream_ts_ms } => ProtoMut::Stream(stream_ts_ms),
            ProtoState::Icmp => ProtoMut::Icmp,
            ProtoState::Sctp(s) => ProtoMut::Sctp(s),
        }
    }
}

/// A stripe's records: hot lines, cold parts, and the pools of state lines
/// and IPv6 addresses.
pub struct Records {
    pub hot: Box<[Hot]>,
    pub cold: Box<[Cold]>,
    /// Grown up to the capacity reserved at start (never reallocated).
    side: Vec<Side>,
    side_free: u32,
    v6: Vec<[Addr; 4]>,
    v6_free: Vec<u32>,
    /// The first free record (chained through `Cold::link.next`).
    free: u32,
}

/// The protocol state kind of a [`ProtoState`].
fn kind_of(p: &ProtoState) -> u32 {
    match p {
        ProtoState::Generic => KIND_GENERIC,
        ProtoState::Tcp(_) => KIND_TCP,
        ProtoState::Stream { .. } => KIND_STREAM,
        ProtoState::Icmp => KIND_ICMP,
        ProtoState::Sctp(_) => KIND_SCTP,
    }
}

#[inline(always)]
fn kind(status: Status) -> u32 {
    (status.0 >> KIND_SHIFT) & 7
}

/// Whether a record with `status` is live (confirmed, not dying).
#[inline(always)]
pub fn live(status: Status) -> bool {
    status.0 & (Status::CONFIRMED | Status::DYING) == Status::CONFIRMED
}

impl Records {
    /// Room for as many records as `hot` has lines (reserved by the
    /// caller, see `Stripe::new`); `advise` sees the rest reserved.
    pub fn new(hot: Box<[Hot]>, advise: &mut dyn super::Memory) -> Records {
        let n = hot.len();
        let mut cold: Box<[Cold]> = super::stripe::reserve(n, advise);
        for (i, c) in cold.iter_mut().enumerate() {
            c.link.set_next(if i + 1 < n { i as u32 + 1 } else { NIL });
            c.v6 = NIL;
        }
        advise.placing(n * std::mem::size_of::<Side>());
        let side: Vec<Side> = Vec::with_capacity(n);
        advise.reserved(side.as_ptr() as usize, n * std::mem::size_of::<Side>());
        Records {
            hot,
            cold,
            side,
            side_free: NIL,
            v6: Vec::with_capacity(n),
            v6_free: Vec::with_capacity(n),
            free: if n > 0 { 0 } else { NIL },
        }
    }

    pub fn len(&self) -> usize {
        self.hot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hot.is_empty()
    }

    /// No free record left.
    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.free == NIL
    }

    /// Takes a free record (not yet live: [`Records::put`] fills it).
    #[inline]
    pub fn alloc(&mut self) -> Option<u32> {
        let i = self.free;
        let c = self.cold.get_mut(i as usize)?;
        self.free = c.link.next();
        c.link.set_next(NIL);
        Some(i)
    }

    /// Gives back record `i` (out of the wheel, not live).
    #[inline]
    pub fn free(&mut self, i: u32) {
        let c = &mut self.cold[i as usize];
        c.link.set_next(self.free);
        self.free = i;
    }

    /// Bytes of the records (hot lines and cold parts), all written at
    /// start; the pools are in [`Records::pool_bytes`].
    pub fn reserved_bytes(&self) -> usize {
        self.hot.len() * std::mem::size_of::<Hot>() + self.cold.len() * std::mem::size_of::<Cold>()
    }

    /// Bytes the pools use now (lines handed out so far).
    pub fn pool_bytes(&self) -> usize {
        self.side.len() * std::mem::size_of::<Side>()
            + self.v6.len() * (std::mem::size_of::<[Addr; 4]>() + 4)
    }

    #[inline(always)]
    pub fn live(&self, i: u32) -> bool {
        self.hot.get(i as usize).is_some_and(|h| live(h.status))
    }

    fn side_alloc(&mut self, p: ProtoState) -> u32 {
        if self.side_free != NIL {
            let i = self.side_free;
            let s = &mut self.side[i as usize];
            self.side_free = s.next;
            *s = Side {
                proto: p,
                next: NIL,
            };
            return i;
        }
        debug_assert!(
            self.side.len() < self.side.capacity(),
            "more state lines than records"
        );
        self.side.push(Side {
            proto: p,
            next: NIL,
        });
        self.side.len() as u32 - 1
    }

    fn v6_alloc(&mut self, a: [Addr; 4]) -> u32 {
        if let Some(i) = self.v6_free.pop() {
            self.v6[i as usize] = a;
            return i;
        }
        self.v6.push(a);
        self.v6.len() as u32 - 1
    }

    /// Fills free record `i` (from [`Records::alloc`]) with `c`, id `id`:
    /// its status as given (the caller sets CONFIRMED).
    #[inline]
    pub fn put(&mut self, i: u32, c: &Conn, id: u32) {
        let k = kind_of(&c.proto);
        let side = match c.proto {
            ProtoState::Tcp(_) | ProtoState::Sctp(_) => self.side_alloc(c.proto),
            _ => NIL,
        };
        let v6 = if c.tuples[0].family == Family::V6 {
            let [o, r] = &c.tuples;
            self.v6_alloc([o.src, o.dst, r.src, r.dst])
        } else {
            NIL
        };
        let h = &mut self.hot[i as usize];
        h.tuples = [Compact::of(&c.tuples[0]), Compact::of(&c.tuples[1])];
        h.deadline_ms = c.deadline_ms;
        h.status = record_status(c, k);
        h.id = id;
        h.verdicts = c.verdicts;
        h.side = side;
        h.nat_csum = c.nat_csum.unwrap_or_default();
        let cold = &mut self.cold[i as usize];
        cold.mark = c.mark;
        cold.v6 = v6;
        cold.stream_ts_ms = match c.proto {
            ProtoState::Stream { stream_ts_ms } => stream_ts_ms,
            _ => Ms4::default(),
        };
    }

    /// Empties record `i`: not live, its lines given back (the record
    /// itself is freed by [`Records::free`]).
    #[inline]
    pub fn clear(&mut self, i: u32) {
        let h = &mut self.hot[i as usize];
        let side = h.side;
        h.status = Status::default();
        h.verdicts = [0; 2];
        h.side = NIL;
        if side != NIL {
            let s = &mut self.side[side as usize];
            s.next = self.side_free;
            self.side_free = side;
        }
        let c = &mut self.cold[i as usize];
        if c.v6 != NIL {
            self.v6_free.push(c.v6);
            c.v6 = NIL;
        }
    }

    /// The IPv6 addresses of record `i` (orig src, dst, reply src, dst).
    #[inline]
    fn v6_of(&self, i: u32) -> Option<&[Addr; 4]> {
        self.v6.get(self.cold[i as usize].v6 as usize)
    }

    /// Whether record `i` holds `t` (compact: `ct`) in direction `dir`.
    #[inline(always)]
    pub fn holds(&self, i: u32, dir: Dir, t: &Tuple, ct: &Compact) -> bool {
        self.hot
            .get(i as usize)
            .is_some_and(|h| holds_compact(h, dir, ct))
            && (!ct.is_v6() || self.v6_holds(i, dir, t))
    }

    #[cold]
    fn v6_holds(&self, i: u32, dir: Dir, t: &Tuple) -> bool {
        let d = 2 * dir.index();
        self.v6_of(i)
            .is_some_and(|a| a[d] == t.src && a[d + 1] == t.dst)
    }

    /// Record `i`'s tuple of direction `dir`.
    #[inline]
    pub fn tuple(&self, i: u32, dir: Dir) -> Tuple {
        tuple_of(&self.hot[i as usize], &self.cold[i as usize], &self.v6, dir)
    }

    /// The source NAT port record `i` (with `status`, its own) holds in
    /// its bitmap ([`crate::nat::ports::tracked`]), from its compact reply
    /// tuple where that is the whole tuple.
    #[inline]
    pub fn nat_port(&self, i: u32, status: Status) -> Option<(MapKey, u16)> {
        if !status.has(Status::SRC_NAT) {
            return None;
        }
        let c = &self.hot[i as usize].tuples[Dir::Reply.index()];
        if c.is_v6() {
            return ports::tracked(status, &self.tuple(i, Dir::Reply));
        }
        let key = MapKey {
            family: Family::V4,
            addr: Addr::from_v4(c.dst_v4()),
            proto: c.proto(),
            zone: c.zone(),
        };
        ports::tracked_parts(status, key, (c.src_port(), c.dst_port()))
    }

    /// Record `i`'s protocol state, as a [`Conn`] holds it.
    pub fn proto(&self, i: u32) -> ProtoState {
        proto_of(&self.hot[i as usize], &self.cold[i as usize], &self.side)
    }

    /// Record `i` as a [`Conn`] (private bits off).
    pub fn conn(&self, i: u32) -> Conn {
        assemble(
            &self.hot[i as usize],
            &self.cold[i as usize],
            &self.side,
            &self.v6,
        )
    }

    /// Writes back what may change on a live record `i` from `c` (its
    /// tuples and protocol kind are the record's).
    pub fn update(&mut self, i: u32, c: &Conn) {
        debug_assert_eq!(
            c.tuples,
            [self.tuple(i, Dir::Orig), self.tuple(i, Dir::Reply)]
        );
        let h = &mut self.hot[i as usize];
        debug_assert_eq!(
            kind_of(&c.proto),
            kind(h.status),
            "the protocol state kind is kept"
        );
        h.status = record_status(c, kind(h.status));
        h.deadline_ms = c.deadline_ms;
        h.id = c.id;
        h.verdicts = c.verdicts;
        h.nat_csum = c.nat_csum.unwrap_or_default();
        let side = h.side;
        self.cold[i as usize].mark = c.mark;
        match c.proto {
            ProtoState::Tcp(_) | ProtoState::Sctp(_) => {
                if let Some(s) = self.side.get_mut(side as usize) {
                    s.proto = c.proto;
                }
            }
            ProtoState::Stream { stream_ts_ms } => {
                self.cold[i as usize].stream_ts_ms = stream_ts_ms;
            }
            _ => {}
        }
    }

    /// Record `i`, borrowed for a packet's update.
    #[inline(always)]
    pub fn view(&mut self, i: u32) -> RecMut<'_> {
        RecMut {
            hot: &mut self.hot[i as usize],
            i: i as usize,
            cold: &mut self.cold,
            side: &mut self.side,
            v6: &self.v6,
        }
    }

    /// The address of record `i`'s hot line (for loads ahead).
    #[inline(always)]
    pub fn hot_addr(&self, i: u32) -> Option<*const u8> {
        self.hot
            .get(i as usize)
            .map(|h| h as *const Hot as *const u8)
    }

    /// The address of record `i`'s state line (None without one).
    #[inline(always)]
    pub fn side_addr(&self, i: u32) -> Option<*const u8> {
        let h = self.hot.get(i as usize)?;
        self.side
            .get(h.side as usize)
            .map(|s| s as *const Side as *const u8)
    }

    /// The address of record `i`'s cold part (for loads ahead).
    #[inline(always)]
    pub fn cold_addr(&self, i: u32) -> Option<*const u8> {
        self.cold
            .get(i as usize)
            .map(|c| c as *const Cold as *const u8)
    }
}

/// Whether the live record of hot line `h` has the compact tuple `ct` in
/// direction `dir` (for an IPv4 tuple: holds it).
#[inline(always)]
pub fn holds_compact(h: &Hot, dir: Dir, ct: &Compact) -> bool {
    live(h.status) && h.tuples[dir.index()] == *ct
}

/// `c`'s status as a record with protocol state kind `kind` keeps it:
/// the kernel's bits, and the private ones for the kind, helper, deltas
/// and mark.
fn record_status(c: &Conn, kind: u32) -> Status {
    let mut status = c.status.0 & !PRIVATE;
    status |= kind << KIND_SHIFT | (c.helper as u32) << HELPER_SHIFT;
    if c.nat_csum.is_some() {
        status |= CSUM;
    }
    if c.mark != 0 {
        status |= MARKED;
    }
    Status(status)
}

fn helper_of(status: Status) -> Helper {
    match (status.0 >> HELPER_SHIFT) & 3 {
        1 => Helper::Ftp,
        2 => Helper::Tftp,
        _ => Helper::None,
    }
}

/// A record borrowed for one packet: its hot line, and the rest reached
/// only when needed.
pub struct RecMut<'a> {
    pub hot: &'a mut Hot,
    /// The record's index: its cold part is `cold[i]` (not worked out
    /// until it is needed).
    i: usize,
    cold: &'a mut [Cold],
    side: &'a mut [Side],
    v6: &'a [[Addr; 4]],
}

impl RecMut<'_> {
    /// `Conn::mark` (the cold part read only if it is not 0).
    #[inline(always)]
    pub fn mark(&self) -> u32 {
        if self.hot.status.0 & MARKED != 0 {
            self.cold.get(self.i).map_or(0, |c| c.mark)
        } else {
            0
        }
    }

    pub fn set_mark(&mut self, mark: u32) {
        self.cold[self.i].mark = mark;
        if mark != 0 {
            self.hot.status.0 |= MARKED;
        } else {
            self.hot.status.0 &= !MARKED;
        }
    }

    /// `Conn::helper`.
    #[inline(always)]
    pub fn helper(&self) -> Helper {
        helper_of(self.hot.status)
    }

    /// `Conn::nat_csum`.
    #[inline(always)]
    pub fn nat_csum(&self) -> Option<[NatCsum; 2]> {
        (self.hot.status.0 & CSUM != 0).then_some(self.hot.nat_csum)
    }

    /// The tuple of direction `dir`.
    #[inline]
    pub fn tuple(&self, dir: Dir) -> Tuple {
        let c = &self.hot.tuples[dir.index()];
        if c.is_v6() {
            tuple_of(self.hot, &self.cold[self.i], self.v6, dir)
        } else {
            c.tuple(None)
        }
    }

    /// The status (private bits and all: only the kernel's bits change),
    /// the deadline and the protocol state, borrowed together.
    #[inline(always)]
    pub fn parts(&mut self) -> (&mut Status, &mut u64, ProtoMut<'_>) {
        let h = &mut *self.hot;
        let p = match kind(h.status) {
            KIND_TCP => match self.side.get_mut(h.side as usize).map(|s| &mut s.proto) {
                Some(ProtoState::Tcp(t)) => ProtoMut::Tcp(t),
                _ => ProtoMut::Generic,
            },
            KIND_SCTP => match self.side.get_mut(h.side as usize).map(|s| &mut s.proto) {
                Some(ProtoState::Sctp(s)) => ProtoMut::Sctp(s),
                _ => ProtoMut::Generic,
            },
            KIND_STREAM => ProtoMut::Stream(&mut self.cold[self.i].stream_ts_ms),
            KIND_ICMP => ProtoMut::Icmp,
            _ => ProtoMut::Generic,
        };
        (&mut h.status, &mut h.deadline_ms, p)
    }

    /// The TCP state (of a TCP record with its state line).
    #[inline(always)]
    pub fn tcp(&mut self) -> Option<&mut TcpState> {
        if kind(self.hot.status) != KIND_TCP {
            return None;
        }
        match self
            .side
            .get_mut(self.hot.side as usize)
            .map(|s| &mut s.proto)
        {
            Some(ProtoState::Tcp(t)) => Some(t),
            _ => None,
        }
    }

    /// `Conn::state_tag`: the TCP or SCTP state + 1, else 0 (a record
    /// without a state line: one compare).
    #[inline(always)]
    pub fn state_tag(&self) -> u8 {
        match self.side.get(self.hot.side as usize).map(|s| &s.proto) {
            Some(ProtoState::Tcp(t)) => t.state as u8 + 1,
            Some(ProtoState::Sctp(s)) => s.state as u8 + 1,
            _ => 0,
        }
    }

    /// The whole connection (for the uncommon paths: IPv6 NAT, related packets).
    pub fn conn(&self) -> Conn {
        assemble(self.hot, &self.cold[self.i], self.side, self.v6)
    }
}

/// A record's tuple of direction `dir` (IPv6 addresses from `v6`).
#[inline]
fn tuple_of(h: &Hot, c: &Cold, v6: &[[Addr; 4]], dir: Dir) -> Tuple {
    let d = 2 * dir.index();
    h.tuples[dir.index()].tuple(v6.get(c.v6 as usize).map(|a| &a[d..d + 2]))
}

/// A record's protocol state, as a [`Conn`] holds it.
fn proto_of(h: &Hot, c: &Cold, side: &[Side]) -> ProtoState {
    match kind(h.status) {
        KIND_TCP | KIND_SCTP => side
            .get(h.side as usize)
            .map(|s| s.proto)
            .unwrap_or_default(),
        KIND_STREAM => ProtoState::Stream {
            stream_ts_ms: c.stream_ts_ms,
        },
        KIND_ICMP => ProtoState::Icmp,
        _ => ProtoState::Generic,
    }
}

/// A record as a [`Conn`], from its parts (private bits off).
fn assemble(h: &Hot, c: &Cold, side: &[Side], v6: &[[Addr; 4]]) -> Conn {
    Conn {
        deadline_ms: h.deadline_ms,
        status: Status(h.status.0 & !PRIVATE),
        id: h.id,
        mark: c.mark,
        verdicts: h.verdicts,
        tuples: [
            tuple_of(h, c, v6, Dir::Orig),
            tuple_of(h, c, v6, Dir::Reply),
        ],
        nat_csum: (h.status.0 & CSUM != 0).then_some(h.nat_csum),
        helper: helper_of(h.status),
        proto: proto_of(h, c, side),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tcp::TcpConntrack;
    use crate::tuple::{IPPROTO_TCP, IPPROTO_UDP};

    fn v4(i: u8, proto: u8) -> Tuple {
        Tuple {
            src: Addr::from_v4([192, 0, 2, i]),
            dst: Addr::from_v4([198, 51, 100, 1]),
            src_port: 1000 + i as u16,
            dst_port: 53,
            proto,
            family: Family::V4,
            zone: 3,
        }
    }

    fn v6(i: u8) -> Tuple {
        let mut s = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        s[15] = i;
        let mut d = s;
        d[14] = 9;
        Tuple {
            src: Addr(s),
            dst: Addr(d),
            src_port: 7,
            dst_port: 8,
            proto: IPPROTO_TCP,
            family: Family::V6,
            zone: 0,
        }
    }

    #[test]
    fn a_record_gives_back_the_connection_put_in() {
        let mut r = Records::new(crate::table::stripe::reserve(4, &mut ()), &mut ());
        let tcp = TcpState {
            state: TcpConntrack::Established,
            ..TcpState::default()
        };
        let conns = [
            Conn {
                tuples: [v4(1, IPPROTO_UDP), v4(1, IPPROTO_UDP).invert().unwrap()],
                deadline_ms: 77,
                status: Status(Status::CONFIRMED | Status::SRC_NAT | Status::EIM),
                mark: 9,
                verdicts: [3, 4],
                nat_csum: Some([NatCsum { ip: 1, l4: 2 }, NatCsum { ip: 3, l4: 4 }]),
                helper: Helper::Tftp,
                proto: ProtoState::Stream {
                    stream_ts_ms: Ms4::new(1234),
                },
                id: 5,
            },
            Conn {
                tuples: [v6(1), v6(1).invert().unwrap()],
                status: Status(Status::CONFIRMED),
                proto: ProtoState::Tcp(tcp),
                id: 6,
                ..Conn::default()
            },
            Conn {
                tuples: [v4(2, IPPROTO_TCP), v4(3, IPPROTO_TCP)],
                status: Status(Status::CONFIRMED),
                id: 7,
                ..Conn::default()
            },
        ];
        let mut at = vec![];
        for c in &conns {
            let i = r.alloc().unwrap();
            r.put(i, c, c.id);
            at.push(i);
        }
        for (c, &i) in conns.iter().zip(&at) {
            assert_eq!(r.conn(i), *c);
            assert_eq!(r.view(i).conn(), *c);
            for d in [Dir::Orig, Dir::Reply] {
                let t = c.tuple(d);
                assert!(r.holds(i, d, t, &Compact::of(t)));
                assert!(!r.holds(i, d.other(), t, &Compact::of(t)) || c.tuple(d.other()) == t);
            }
        }
        // An IPv6 tuple whose fold matches is still told apart.
        let mut other = v6(1);
        other.src.0[0] ^= 1;
        other.src.0[4] ^= 1;
        assert_eq!(Compact::of(&other), Compact::of(&v6(1)));
        assert!(!r.holds(at[1], Dir::Orig, &other, &Compact::of(&other)));

        // A changed mark and state are written back; freed lines are reused.
        let mut c = r.conn(at[1]);
        c.mark = 5;
        let ProtoState::Tcp(t) = &mut c.proto else {
            panic!()
        };
        t.state = TcpConntrack::TimeWait;
        r.update(at[1], &c);
        assert_eq!(r.conn(at[1]), c);
        let used = r.pool_bytes();
        r.clear(at[1]);
        r.free(at[1]);
        assert!(!r.live(at[1]));
        let i = r.alloc().unwrap();
        assert_eq!(i, at[1]);
        r.put(i, &conns[1], 8);
        assert_eq!(
            r.pool_bytes(),
            used,
            "the state line and addresses were reused"
        );
        assert!(r.alloc().is_some());
        assert!(r.alloc().is_none());
        assert!(r.is_full());
    }
}
