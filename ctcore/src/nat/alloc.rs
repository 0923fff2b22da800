//! Source NAT bindings: the address from the rule's range and a port (or ICMP
//! id) that makes the reply tuple unique in the table — the kernel's
//! get_unique_tuple / nf_nat_l4proto_unique_tuple: keep the original port when
//! it is free; else the first port from a start a keyed hash of the
//! connection picks (RFC 6056's algorithm 3: [`search_start`]) that the
//! home stripe's bitmap says no connection uses ([`super::ports`]: O(1) at
//! any pool use); and only where the bitmap has none, the kernel's search —
//! a bounded number of attempts, halving them in each further round — for a
//! port that is in use but not towards this remote endpoint.

use super::ports::{nat_port, Cursor, MapKey};
use super::{has_ports, Action, Endpoint, Rule};
use crate::conn::{Conn, Status};
use crate::table::{Claimed, Guard, Key, Prefetch};
use crate::tuple::{is_icmp_proto, Addr, Family, Tuple, IPPROTO_UDP};

/// The kernel's NF_NAT_MAX_ATTEMPTS.
pub const MAX_PORT_ATTEMPTS: u32 = 128;

/// Free ports from the bitmap tried before the kernel's search: a free port
/// is refused only by RSS steering, an endpoint-independent mapping or a
/// connection of another stripe, so a few tries nearly always find one.
pub const BITMAP_TRIES: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free port in the NAT range")]
    OutOfPorts,
    #[error("masquerade: the egress port has no address of this family")]
    NoAddress,
    #[error("the rule's addresses are of the other family")]
    FamilyMismatch,
}

/// A worker's random source for port search starts (xorshift64*).
#[derive(Debug, Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

/// What picks a connection's address from a range (find_best_ips_proto
/// hashes the same fields): its source, and unless `persistent` its
/// destination, folded into a word and multiplied out (one 128-bit
/// product, both halves kept). Not keyed: the choice is no secret, like
/// the kernel's.
#[inline]
fn addr_pick(orig: &Tuple, persistent: bool) -> u64 {
    let fold = |a: &Addr| {
        let x = u128::from_ne_bytes(a.0);
        (x as u64) ^ ((x >> 64) as u64).rotate_left(32)
    };
    let d = if persistent { 0 } else { fold(&orig.dst) };
    let x = fold(&orig.src) ^ d.rotate_left(17);
    let r = u128::from(x ^ 0x5a17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The address `pick` chooses from an inclusive range: for IPv4 the top of
/// `pick` times the range's size (a multiply, not a division's tens of
/// cycles).
#[inline]
fn addr_in_range(family: Family, lo: &Addr, hi: &Addr, pick: u64) -> Addr {
    match family {
        Family::V4 => {
            let (a, b) = (
                u32::from_be_bytes(lo.v4_octets()),
                u32::from_be_bytes(hi.v4_octets()),
            );
            let size = (b - a) as u64 + 1;
            let index = (u128::from(pick) * u128::from(size)) >> 64;
            // (Copied into the binding and the candidate tuple next.)
            Addr::from_v4_whole((a + index as u32).to_be_bytes())
        }
        Family::V6 => {
            let (a, b) = (u128::from_be_bytes(lo.0), u128::from_be_bytes(hi.0));
            let size = (b - a).saturating_add(1);
            Addr((a + (pick as u128 % size)).to_be_bytes())
        }
    }
}

/// The port range to search when the rule names none (nf_nat_l4proto_unique_tuple):
/// privileged ports stay privileged.
fn default_range(orig_port: u16, icmp: bool) -> (u16, u16) {
    if icmp {
        (0, u16::MAX)
    } else if orig_port < 512 {
        (1, 511)
    } else if orig_port < 1024 {
        (600, 1023)
    } else {
        (1024, u16::MAX)
    }
}

/// What a binding search needs besides the rule: the table, the worker's
/// clock and random source, a veto on candidates (RSS steering: the reply must
/// reach this worker's queue), and where connections found expired on the way
/// go (they are removed: their tuples are free, as nf_conntrack_tuple_taken
/// reclaims expired entries).
pub struct Search<'a, 't> {
    pub table: &'a mut Guard<'t>,
    /// The stripe the connection will be homed in, when the caller knows it
    /// (its original tuple's key); worked out otherwise.
    pub home: Option<u32>,
    pub now_ms: u64,
    pub rng: &'a mut Rng,
    pub accept: &'a dyn Fn(&Tuple) -> bool,
    pub reclaimed: &'a mut dyn FnMut(crate::conn::Listed),
    /// The reply tuple claimed (it was looked up under the guard and
    /// found free: the confirm need not look again), with its bitmap.
    pub claimed: Option<Claimed>,
    /// The home stripe's bitmap of the reply tuples searched, once the
    /// search has found it.
    pub map: Option<usize>,
    /// The worker's slot of the rules' counters.
    pub slot: crate::stats::CounterSlot,
    /// Starts loading a cache line (the platform's prefetch).
    pub prefetch: fn(*const u8),
    /// What was loaded ahead ([`anticipate`], [`anticipate_next`]): the
    /// candidates with their keys, and the binding if the caller vouches
    /// for its rule and egress address (taken from here as used; in place,
    /// not copied in and out).
    pub ahead: &'a mut Loaded,
    /// The hash of the connection's original tuple (its table key), when
    /// the caller has it: the free-port search starts where it says
    /// ([`search_start`]); without it, at a random port.
    pub seed: Option<u64>,
}

/// A connection's binding as [`anticipate`] found it: the address, the
/// port range and random flag, and the home stripe's bitmap of that
/// address.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    addr: Addr,
    lo: u16,
    hi: u16,
    map: usize,
    random: bool,
}

/// Where the free-port search in `lo..=hi` starts for a connection whose
/// original tuple hashed to `seed`: RFC 6056's algorithm 3 (a keyed hash of
/// the connection, like the kernel's secure_port before it drew a random
/// offset), so that the start is known before the search runs and the
/// bitmap word it reads can be loaded ahead ([`anticipate`]).
#[inline]
pub fn search_start(lo: u16, hi: u16, seed: u64) -> u16 {
    let size = u64::from(hi - lo) + 1;
    // 32 bits of the hash scaled to the range (a multiply, not a division).
    let x = seed.rotate_left(23).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    lo + ((x * size) >> 32) as u16
}

/// What a source NAT rule gives a connection: its address, the port range
/// (None: the default for the original port) and whether the original
/// port is not to be kept.
struct Binding {
    addr: Addr,
    ports: Option<(u16, u16)>,
    random: bool,
}

/// The address source NAT under `rule` gives a connection with original
/// tuple `orig` (find_best_ips_proto: a hash of the source, and of the
/// destination unless persistent, picks it from the range, so a client
/// keeps its address), with the rule's port range and random flag. None:
/// the rule is no source NAT.
fn binding(
    rule: &Rule,
    orig: &Tuple,
    egress_addr: Option<Addr>,
) -> Result<Option<Binding>, AllocError> {
    match &rule.action {
        Action::Snat {
            family,
            addrs,
            ports,
            random,
            persistent,
        } => {
            if *family != orig.family {
                return Err(AllocError::FamilyMismatch);
            }
            Ok(Some(Binding {
                addr: addr_in_range(
                    orig.family,
                    &addrs.0,
                    &addrs.1,
                    addr_pick(orig, *persistent),
                ),
                ports: *ports,
                random: *random,
            }))
        }
        Action::Masquerade { ports, random } => Ok(Some(Binding {
            addr: egress_addr.ok_or(AllocError::NoAddress)?,
            ports: *ports,
            random: *random,
        })),
        _ => Ok(None),
    }
}

/// Sets the field source NAT chooses in reply tuple `t`: its destination
/// port, or for ICMP echo its id.
#[inline]
fn set_port(t: &mut Tuple, icmp: bool, p: u16) {
    if icmp {
        t.src_port = p;
    } else {
        t.dst_port = p;
    }
}

/// The free-port search of a connection, begun ahead of it by
/// [`anticipate`]: its next step is [`anticipate_next`].
#[derive(Debug, Clone, Copy)]
pub struct Anticipated {
    /// The original-port candidate's key, if the rule keeps that port.
    first: Option<Key>,
    cand: Tuple,
    icmp: bool,
    lo: u16,
    hi: u16,
    start: u16,
    map: usize,
    random: bool,
}

/// For a packet that most likely opens a connection, a stage before its
/// source NAT search runs: starts loading what the search reads first in a
/// table beyond a last-level cache ([`Guard::beyond_llc`]), so that the
/// misses of a burst's new connections overlap instead of each stalling
/// its own search. That is the bucket of
/// the candidate that keeps the original port, and the bitmap word where
/// the free-port search starts. `orig` is the packet's tuple, `seed` its
/// key's hash, `home` its stripe; `rule` the rule expected to translate it.
/// Only loads: a wrong guess costs the loads, never a different choice.
/// Endpoint-independent rules are left alone (their port comes from a
/// mapping).
pub fn anticipate<P: Prefetch>(
    g: &mut Guard<'_>,
    rule: &Rule,
    egress_addr: Option<Addr>,
    orig: &Tuple,
    seed: u64,
    home: u32,
) -> Option<Anticipated> {
    if rule.endpoint_independent {
        return None;
    }
    let Binding {
        addr,
        ports,
        random,
    } = binding(rule, orig, egress_addr).ok()??;
    let icmp = is_icmp_proto(orig.proto);
    if !has_ports(orig.proto) && !icmp {
        return None;
    }
    let mut cand = orig.invert()?;
    cand.zone = orig.zone;
    cand.dst = addr;
    let (lo, hi) = ports.unwrap_or_else(|| default_range(orig.src_port, icmp));
    let mut first = None;
    if !random && (lo..=hi).contains(&orig.src_port) {
        set_port(&mut cand, icmp, orig.src_port);
        let k = g.key(&cand);
        g.prefetch_bucket::<P>(k);
        first = Some(k);
    }
    let start = search_start(lo, hi, seed);
    let map = g.ports(home).find(&MapKey::of(&cand))?;
    P::read(g.ports(home).at(map).word_of(start));
    Some(Anticipated {
        first,
        cand,
        icmp,
        lo,
        hi,
        start,
        map,
        random,
    })
}

/// The next step of an anticipated search (its bitmap word and the
/// original-port candidate's bucket loaded since): starts loading the
/// records that bucket says may hold that candidate (the port is often
/// taken: the search reads the record that has it), and the bucket of the
/// port the bitmap offers first. Returns the candidates loaded, with their
/// keys, and the binding, for the search to take up ([`Search::ahead`]).
pub fn anticipate_next<P: Prefetch>(g: &mut Guard<'_>, a: &Anticipated, home: u32) -> Loaded {
    if let Some(k) = a.first {
        g.prefetch_records::<P>(k);
    }
    let maps = g.ports(home);
    let (next, next_port) = match Cursor::new(a.lo, a.hi, a.start).next(Some(maps.at(a.map))) {
        Some(port) => {
            let mut cand = a.cand;
            set_port(&mut cand, a.icmp, port);
            let k = g.key(&cand);
            g.prefetch_bucket::<P>(k);
            (Some(k), port)
        }
        None => (None, 0),
    };
    Loaded {
        first: a.first,
        next,
        next_port,
        bound: Some(Bound {
            addr: a.cand.dst,
            lo: a.lo,
            hi: a.hi,
            map: a.map,
            random: a.random,
        }),
    }
}

/// The candidates of an anticipated search, by their keys (and the next
/// one's port): the original port's and the one for the search's next
/// step (the bitmap's first offer); and the search's binding. The keys
/// are of the connection's reply tuple with the binding's address and
/// those ports: whoever hands them to a search vouches for that.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub first: Option<Key>,
    /// The next candidate's key, and (`next_port`) its port. (Apart, not
    /// as an `Option<(u16, Key)>`: that one was built through the stack
    /// at odd offsets and read back with store-forwarding stalls.)
    pub next: Option<Key>,
    pub next_port: u16,
    /// The search's binding: the address, port range and random flag its
    /// rule gives the connection, and its bitmap's slot.
    pub bound: Option<Bound>,
}

/// Chooses the source NAT binding for a new connection `c` under `rule` and
/// writes it into the reply tuple (setting SRC_NAT). `egress_addr` is the egress
/// port's address (for masquerade).
pub fn snat(
    s: &mut Search<'_, '_>,
    c: &mut Conn,
    rule: &Rule,
    egress_addr: Option<Addr>,
) -> Result<(), AllocError> {
    let orig = c.tuples[0];
    // (`anticipate` begins no endpoint-independent rule's search.)
    let bound = s.ahead.bound.take();
    let (addr, ports, random) = match bound {
        Some(b) => (b.addr, Some((b.lo, b.hi)), b.random),
        None => match binding(rule, &orig, egress_addr)? {
            Some(Binding {
                addr,
                ports,
                random,
            }) => (addr, ports, random),
            None => return Ok(()),
        },
    };
    debug_assert!(bound.is_none_or(|b| {
        let Ok(Some(fresh)) = binding(rule, &orig, egress_addr) else {
            return false;
        };
        let icmp = is_icmp_proto(orig.proto);
        fresh.addr == b.addr
            && fresh.random == b.random
            && fresh
                .ports
                .unwrap_or_else(|| default_range(orig.src_port, icmp))
                == (b.lo, b.hi)
    }));
    let mut cand = c.tuples[1];
    cand.dst = addr;
    // Endpoint-independent mapping: reuse the inside endpoint's outside port,
    // and never take a port another inside endpoint's mapping holds.
    let eim = rule.endpoint_independent && orig.proto == IPPROTO_UDP;
    let inside: Endpoint = (orig.family, orig.src, orig.src_port, orig.zone);
    let done = |p: u16, s: &mut Search<'_, '_>, c: &mut Conn| {
        if eim && s.table.eim_record(inside, addr, p, s.now_ms) {
            c.status.set(Status::EIM);
        }
    };
    if eim {
        if let Some(m) = s.table.eim_mapping(&inside, s.now_ms) {
            if m.ext == addr {
                cand.dst_port = m.ext_port;
                if take(s, c, cand).is_some() {
                    done(m.ext_port, s, c);
                    return Ok(());
                }
            }
        }
    }
    let held = |p: u16, s: &mut Search<'_, '_>| {
        eim && s
            .table
            .eim_held_by_other(orig.family, addr, p, &inside, s.now_ms)
    };
    let icmp = is_icmp_proto(orig.proto);
    if !has_ports(orig.proto) && !icmp {
        // Address-only translation (GRE, generic protocols): there is
        // nothing to choose, so nothing to steer either (its replies reach
        // whichever worker they reach; the table is shared).
        return claim(s, c, cand).ok_or(AllocError::OutOfPorts);
    }
    // The field NAT changes: the destination port of the reply, or the id.
    let orig_port = orig.src_port;
    let set = |t: &mut Tuple, p: u16| set_port(t, icmp, p);
    let (lo, hi) = ports.unwrap_or_else(|| default_range(orig_port, icmp));
    let size = hi as u32 - lo as u32 + 1;
    // After the original port: the first port no connection of the home
    // stripe uses, from a random start.
    let home = s.home.unwrap_or_else(|| s.table.home(&orig));
    let maps = s.table.ports(home);
    // (No bitmap yet for this address: every port is unused. Bitmaps
    // are never taken away, so the one `anticipate` found is it.)
    let slot = match bound {
        Some(b) => Some(b.map),
        None => maps.find(&MapKey::of(&cand)),
    };
    debug_assert_eq!(slot, maps.find(&MapKey::of(&cand)));
    s.map = slot;
    let bitmap = slot.is_some() || maps.has_space();
    // Where the free-port search starts, when the connection's hash says
    // (without it, drawn when the search runs).
    let seeded = s.seed.map(|h| search_start(lo, hi, h));
    if !random && (lo..=hi).contains(&orig_port) && !held(orig_port, s) {
        set(&mut cand, orig_port);
        let first = match s.ahead.first.take() {
            Some(k) => k,
            None => s.table.key(&cand),
        };
        debug_assert_eq!(first, s.table.key(&cand));
        if bitmap && s.ahead.next.is_none() && s.table.beyond_llc() {
            // The original port is often taken (clients behind one address
            // reuse source ports): the bitmap's choice, tried next, has its
            // bucket loaded beside the original's, so that in a table beyond
            // a last-level cache the two misses overlap. Only a prefetch:
            // the choice is made again below (the same start: the random
            // source is peeked, not drawn). Not again where `anticipate`
            // did it.
            let start = seeded.unwrap_or_else(|| {
                let mut peek = *s.rng;
                (lo as u32 + peek.next_u32() % size) as u16
            });
            let maps = s.table.ports(home);
            if let Some(p) = Cursor::new(lo, hi, start).next(slot.map(|i| maps.at(i))) {
                let mut next = cand;
                set(&mut next, p);
                let k = s.table.key(&next);
                s.table.prefetch_bucket_with(k, s.prefetch);
                s.table.prefetch_bucket_with(first, s.prefetch);
                s.ahead.next = Some(k);
                s.ahead.next_port = p;
            }
        }
        if take_keyed(s, c, cand, first).is_some() {
            done(orig_port, s, c);
            return Ok(());
        }
    }
    if bitmap {
        let start = seeded.unwrap_or_else(|| (lo as u32 + s.rng.next_u32() % size) as u16);
        let mut cursor = Cursor::new(lo, hi, start);
        for _ in 0..BITMAP_TRIES {
            let maps = s.table.ports(home);
            let Some(port) = cursor.next(slot.map(|i| maps.at(i))) else {
                break;
            };
            set(&mut cand, port);
            if !held(port, s) && take(s, c, cand).is_some() {
                done(port, s, c);
                return Ok(());
            }
        }
    }
    let mut attempts = size.min(MAX_PORT_ATTEMPTS);
    loop {
        let mut off = s.rng.next_u32();
        for _ in 0..attempts {
            let port = (lo as u32 + off % size) as u16;
            set(&mut cand, port);
            if !held(port, s) && take(s, c, cand).is_some() {
                done(port, s, c);
                return Ok(());
            }
            off = off.wrapping_add(1);
        }
        attempts /= 2;
        if attempts < 16 {
            rule.out_of_ports.add(s.slot, 1);
            return Err(AllocError::OutOfPorts);
        }
    }
}

/// Takes `cand` as the reply tuple if no live connection uses it
/// (nf_nat_used_tuple); an expired holder is reclaimed on the spot.
fn take(s: &mut Search<'_, '_>, c: &mut Conn, cand: Tuple) -> Option<()> {
    // A candidate whose key was worked out ahead (the same tuple but
    // for the port).
    let key = match s.ahead.next.take() {
        Some(k) if s.ahead.next_port == nat_port(&cand) => k,
        _ => s.table.key(&cand),
    };
    debug_assert_eq!(key, s.table.key(&cand));
    take_keyed(s, c, cand, key)
}

/// [`take`] with `cand`'s key worked out.
fn take_keyed(s: &mut Search<'_, '_>, c: &mut Conn, cand: Tuple, key: Key) -> Option<()> {
    if !(s.accept)(&cand) {
        return None;
    }
    claim_keyed(s, c, cand, key)
}

/// [`take`] without the steering check.
fn claim(s: &mut Search<'_, '_>, c: &mut Conn, cand: Tuple) -> Option<()> {
    let key = s.table.key(&cand);
    claim_keyed(s, c, cand, key)
}

fn claim_keyed(s: &mut Search<'_, '_>, c: &mut Conn, cand: Tuple, key: Key) -> Option<()> {
    if s.table.taken_at(key, &cand, s.now_ms, s.reclaimed) {
        return None;
    }
    c.tuples[1] = cand;
    c.status.set(Status::SRC_NAT);
    s.claimed = Some(Claimed { key, map: s.map });
    Some(())
}
