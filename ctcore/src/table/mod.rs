//! The connection table: fixed capacity, memory reserved at start, owned by
//! stripes.
//!
//! Layout (the kernel's hash of `tuplehash[2]`, arranged for DPDK-style bursts):
//! - A power-of-two number of stripes (one per worker). A stripe owns an index
//!   of 64-byte [`bucket::Bucket`]s (eight 16-bit signatures + eight entry
//!   words) and a slab of records ([`record`]: a 64-byte hot line each,
//!   the rest beside it) addressed by a `u32`. There is no lock per connection: whoever holds the stripe's lock is
//!   the only reader and writer of its buckets and records. A worker takes it
//!   once per burst (a [`Guard`]), the control thread between bursts (listing,
//!   delete, flush, GC) in short slices.
//! - A connection has two entries (original and reply tuple). Both normally
//!   live in its home stripe; where NAT gave it a reply tuple that hashes to
//!   another stripe, the reply entry lives there and points home. A guard takes
//!   the stripes a burst needs lazily, in index order where it can and with
//!   `try_lock` + re-lock otherwise, so two guards never wait on each other in
//!   a cycle.
//! - Buckets are probed linearly (up to [`MAX_PROBE`] past the home bucket);
//!   each counts the entries that passed over it, so a miss usually ends in
//!   one bucket. Signatures are compared without touching records; a burst
//!   prefetches its buckets, then the records its signatures select.
//! - Stripe, bucket and signature come from a seeded symmetric tuple hash
//!   ([`HashKey`]), so crafted tuples cannot flood one bucket.
//! - Counts are per stripe (written by the stripe's holder, summed by readers):
//!   no shared atomic is written on the packet path.
//! - Expiry is by deadline: each stripe has a timer wheel ([`wheel`]) that
//!   holds every live record in the slot of a tick no later than its
//!   deadline; [`Table::expire`] fires the ticks that have passed.
//! - Endpoint-independent NAT mappings live in the stripes too ([`eim`]):
//!   fixed maps reserved at start, expired with their connections.

pub mod bucket;
pub mod eim;
pub mod memory;
pub mod prefetch;
pub mod record;
pub mod stripe;
pub mod wheel;

use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, TryLockError};

use crossbeam_utils::CachePadded;

use crate::conn::{Conn, Ext, Listed, Status};
use crate::tuple::{Dir, HashKey, Tuple};
use bucket::{Bucket, SLOTS};
pub use memory::Memory;
pub use prefetch::{NoPrefetch, Prefetch};
use record::{live, Compact, Records};
use stripe::{Stripe, RECORD_BYTES};

/// Bits of a slab index within a stripe.
const LOCAL_BITS: u32 = 25;
// A wheel link holds any slab index (and its NIL beside them).
const _: () = assert!(wheel::MAX_INDEX < 1 << LOCAL_BITS);
/// Most stripes a table has (6 bits of an entry word).
pub const MAX_STRIPES: u32 = 64;
/// Buckets probed past the home bucket when it is full. Only a bound: a
/// lookup stops at the first bucket nothing overflowed past. At the
/// designed load (4 entries per 8-slot bucket when full) a run of 17
/// buckets holding more than 136 entries does not happen; 5 (the bound
/// before) overflowed about once per 4M connections.
const MAX_PROBE: usize = 16;
/// Buckets early drop looks at (the kernel's NF_CT_EVICTION_RANGE).
const EVICTION_RANGE: usize = 8;
/// Index bytes per connection (two entries, buckets half full when the
/// table is).
const INDEX_BYTES: usize = 32;

/// Records the control thread visits per stripe lock (listing, delete, GC),
/// so that a worker waits at most this long for its stripe.
const SLICE: usize = 1024;

/// Where a tuple lives: its stripe, bucket and signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The symmetric tuple hash.
    pub hash: u64,
    pub stripe: u32,
    /// Which endpoint comes first: the two directions of a connection hash
    /// alike but go to different buckets, so a bucket holds up to 8
    /// connections rather than 4 pairs.
    pub flip: bool,
    /// The home bucket (every stripe has as many buckets): worked out once.
    home: u32,
}

impl Key {
    /// The home bucket among `n` buckets: 32 bits of the hash scaled to `n`
    /// (multiply-shift, which is led by the top ones), so the bucket count
    /// need not be a power of two. Hash bits 0-31 for one direction, 8-39 for
    /// the flipped one: both clear of the stripe (40-45) and signature
    /// (48-63) bits, so that the entries of a bucket neither share a stripe
    /// pattern nor look alike to the signature compare.
    #[inline(always)]
    fn home_of(hash: u64, flip: bool, n: usize) -> u32 {
        let h = if flip {
            (hash >> 8) as u32
        } else {
            hash as u32
        };
        ((u64::from(h) * n as u64) >> 32) as u32
    }

    /// The home bucket of a stripe with `n` buckets (all have as many).
    #[inline(always)]
    fn bucket(&self, n: usize) -> usize {
        debug_assert_eq!(self.home, Key::home_of(self.hash, self.flip, n));
        self.home as usize
    }

    /// The key of the inverted tuple (`Tuple::invert`), without hashing it:
    /// the hash is symmetric, so it is this hash with the endpoint order
    /// flipped. Exact when the two endpoints differ (when they are equal,
    /// the inverted tuple is the same tuple and so is its key).
    #[inline(always)]
    fn inverted(&self, buckets: usize) -> Key {
        Key {
            flip: !self.flip,
            home: Key::home_of(self.hash, !self.flip, buckets),
            ..*self
        }
    }

    #[inline(always)]
    fn sig(&self) -> u16 {
        match (self.hash >> 48) as u16 {
            0 => 1,
            s => s,
        }
    }
}

/// [`Guard::place`] in stripe `s` (which `key` names). The home bucket
/// nearly always has room: that case is inlined, the probing is not.
#[inline(always)]
fn place_in(s: &mut Stripe, key: Key, word: u32) -> bool {
    let sig = key.sig();
    let home = key.bucket(s.buckets.len());
    if let Some(b) = s.buckets.get_mut(home) {
        if let Some(i) = b.free_slot() {
            b.set_sig(i, sig);
            b.entry[i] = word;
            return true;
        }
    }
    place_probing(s, home, sig, word)
}

/// [`place_in`] past a full home bucket: linear probing.
#[inline(never)]
fn place_probing(s: &mut Stripe, home: usize, sig: u16, word: u32) -> bool {
    let n = s.buckets.len();
    if n == 0 {
        return false;
    }
    let mut b = home;
    for probe in 0..=MAX_PROBE {
        if let Some(i) = s.buckets[b].free_slot() {
            // Mark the buckets passed over, so lookups keep probing.
            let mut m = home;
            for _ in 0..probe {
                s.buckets[m].overflow += 1;
                m = next_bucket(m, n);
            }
            s.buckets[b].set_sig(i, sig);
            s.buckets[b].entry[i] = word;
            return true;
        }
        b = next_bucket(b, n);
    }
    false
}

/// [`Guard::unplace`] in stripe `s` (which `key` names): the entry is
/// nearly always in its home bucket (inlined), else further on.
#[inline(always)]
fn unplace_in(s: &mut Stripe, key: Key, word: u32) {
    let sig = key.sig();
    let home = key.bucket(s.buckets.len());
    if s.buckets.get_mut(home).is_some_and(|b| b.take(sig, word)) {
        return;
    }
    unplace_probing(s, home, sig, word)
}

/// [`unplace_in`] past the home bucket.
#[inline(never)]
fn unplace_probing(s: &mut Stripe, home: usize, sig: u16, word: u32) {
    let n = s.buckets.len();
    if n == 0 {
        return;
    }
    let mut b = next_bucket(home, n);
    for probe in 1..=MAX_PROBE {
        if s.buckets[b].take(sig, word) {
            let mut o = home;
            for _ in 0..probe {
                let ov = &mut s.buckets[o].overflow;
                *ov = ov.saturating_sub(1);
                o = next_bucket(o, n);
            }
            return;
        }
        b = next_bucket(b, n);
    }
}

/// The stripe a tuple hash names (bits 40-45; see [`Key::bucket`]).
#[inline(always)]
fn stripe_of_hash(hash: u64, mask: u32) -> u32 {
    ((hash >> 40) as u32) & mask
}

/// The bucket after `b` of `n` (linear probing, wrapping).
#[inline(always)]
fn next_bucket(b: usize, n: usize) -> usize {
    if b + 1 == n {
        0
    } else {
        b + 1
    }
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("the table is full")]
    Full,
    #[error("the tuple is already in the table")]
    Clash,
}

/// Early drop in [`Guard::insert`]: whether a connection was evicted to
/// make room and, if `snapshot` was asked for, a copy of it for its DESTROY
/// event (a few hundred bytes copied: asked only when events are kept).
#[derive(Debug, Default)]
pub struct Eviction {
    pub snapshot: bool,
    pub evicted: bool,
    pub dead: Option<Listed>,
}

impl Eviction {
    /// An eviction whose connection is copied out (`dead`).
    pub fn with_snapshot() -> Eviction {
        Eviction {
            snapshot: true,
            ..Eviction::default()
        }
    }
}

/// What [`Guard::prefetch_records`] makes of a packet from its bucket's
/// signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A signature matches: most likely a known connection's packet (its
    /// records are loading; the first of them homed in the stripe is the
    /// hint [`Guard::lookup_hinted`] tries first). Or none does but the
    /// bucket overflowed: it may be one (nothing loads, no hint).
    Known(Option<Hint>),
    /// None matches: most likely a new connection, in a stripe within the
    /// caches (the bucket of its inverted tuple is loading).
    New,
    /// None matches, in a stripe beyond the caches: nothing is loading yet
    /// (see [`Guard::prefetch_new`]). `evicts`: the stripe is full, so its
    /// confirm will evict a connection.
    NewFar { evicts: bool },
}

/// Which of a new connection's tuples [`Guard::insert`] checks for a clash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clash {
    /// Both (the kernel's __nf_conntrack_confirm).
    Both,
    /// Only the reply tuple: the caller looked the original tuple up under
    /// this guard with this key, did not find it, and inserted nothing since
    /// (a packet's lookup followed by its confirm).
    ReplyOnly(Key),
    /// Neither: as `ReplyOnly`, and the reply tuple too was looked up under
    /// this guard (source NAT's port search claimed it).
    Neither(Key, Claimed),
}

/// A reply tuple source NAT's port search claimed under a guard: its key,
/// and the slot of its port's bitmap in the home stripe, if the search
/// found one ([`crate::nat::ports::PortMaps::find`]: bitmaps are never
/// taken away, so the slot holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub key: Key,
    pub map: Option<usize>,
}

/// A connection's index within its stripe.
pub type Local = u32;

/// The entry word of a record stage 2 found a packet's signature naming,
/// in the packet's home stripe ([`Probe::Known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint(u32);

/// A connection in the table: its home stripe and slab index. Valid while the
/// guard that returned it is held (and, across guards, while the
/// connection's id is unchanged: see [`Guard::get`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref {
    pub stripe: u32,
    pub local: Local,
}

/// An entry word: `((stripe << LOCAL_BITS) | local) << 1 | dir`.
#[inline(always)]
fn entry_word(r: Ref, dir: Dir) -> u32 {
    (((r.stripe << LOCAL_BITS) | r.local) << 1) | dir as u32
}

/// Starts loading record `local`'s hot line.
#[inline(always)]
fn prefetch_record<P: Prefetch>(records: &Records, local: Local) {
    if let Some(p) = records.hot_addr(local) {
        P::read(p);
    }
}

/// The first entry of `b` whose record is homed in `stripe`: the first
/// connection early drop looks at in its home bucket.
#[inline]
fn first_homed(b: &Bucket, stripe: u32) -> Option<(Ref, Dir)> {
    let mut used = !b.matches(0) & ((1 << SLOTS) - 1);
    while used != 0 {
        let i = used.trailing_zeros() as usize;
        used &= used - 1;
        let (r, dir) = entry_parts(b.entry[i]);
        if r.stripe == stripe {
            return Some((r, dir));
        }
    }
    None
}

#[inline(always)]
fn entry_parts(word: u32) -> (Ref, Dir) {
    let gid = word >> 1;
    let dir = if word & 1 == 0 { Dir::Orig } else { Dir::Reply };
    (
        Ref {
            stripe: gid >> LOCAL_BITS,
            local: gid & ((1 << LOCAL_BITS) - 1),
        },
        dir,
    )
}

/// The connection table, shared by all workers and the control thread.
pub struct Table {
    stripes: Box<[CachePadded<Mutex<Stripe>>]>,
    /// Live connections per stripe, stored by the stripe's holder.
    counts: Box<[CachePadded<std::sync::atomic::AtomicU32>]>,
    stripe_mask: u32,
    hash_key: HashKey,
    capacity: u32,
    /// Buckets per stripe.
    buckets: usize,
    /// Endpoint-independent mappings per stripe, at most.
    eim_limit: u32,
    /// How long a mapping outlives its last connection (ms).
    eim_timeout_ms: std::sync::atomic::AtomicU64,
    /// Whether new connections' source NAT searches are begun ahead
    /// ([`crate::nat::alloc::anticipate`]): where the records of all
    /// stripes (a last-level cache is shared) outgrow that cache.
    prefetch_nat: bool,
}

/// Record and index memory (the whole table's) from which new
/// connections' source NAT searches are begun ahead of them: beyond a
/// last-level cache. Below it the candidates' buckets are misses to that
/// cache, which cost less than the instructions that work out their
/// addresses ahead (at 100k connections: 1,318 -> 1,185 cycles per new
/// source NAT connection without them; at 1M they save about 8 %).
/// About 340k connections.
const NAT_PREFETCH_BYTES: usize = 40 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding a lock leaves the data as it was
    // between two complete operations: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Table {
    /// A table for `capacity_conns` connections (like nf_conntrack_max) in
    /// `stripes` stripes (rounded up to a power of two, at most
    /// [`MAX_STRIPES`]), with all memory reserved now. `seed` keys the hash
    /// (use a random one).
    pub fn new(capacity_conns: u32, stripes: u32, seed: u64) -> Table {
        Table::with_advice(capacity_conns, stripes, seed, 0, false, &mut ())
    }

    /// As [`Table::new`], with room for `eim_mappings` endpoint-independent
    /// NAT mappings ([`eim`]; 0 when no rule makes them) and, with
    /// `extensions`, each connection's counters and start time
    /// ([`crate::conn::Ext`]). `advise` is told of each large region
    /// before and after it is reserved, before it is first written, so
    /// that the caller can place it on huge pages where ctcore cannot
    /// ([`Memory`]).
    pub fn with_advice(
        capacity_conns: u32,
        stripes: u32,
        seed: u64,
        eim_mappings: u32,
        extensions: bool,
        advise: &mut dyn Memory,
    ) -> Table {
        let capacity = capacity_conns.max(1);
        let nstripes = stripes.clamp(1, MAX_STRIPES).next_power_of_two();
        let per = capacity.div_ceil(nstripes).min(wheel::MAX_INDEX + 1);
        let eim_limit = eim_mappings.div_ceil(nstripes);
        let stripes: Box<[_]> = (0..nstripes)
            .map(|i| {
                CachePadded::new(Mutex::new(Stripe::new(
                    i, per, eim_limit, extensions, advise,
                )))
            })
            .collect();
        let buckets = lock(&stripes[0]).buckets.len();
        Table {
            stripes,
            buckets,
            counts: (0..nstripes).map(|_| CachePadded::default()).collect(),
            stripe_mask: nstripes - 1,
            hash_key: HashKey::new(seed),
            capacity,
            eim_limit,
            eim_timeout_ms: crate::nat::EIM_TIMEOUT_MS.into(),
            prefetch_nat: per as usize * nstripes as usize * (RECORD_BYTES + INDEX_BYTES)
                >= NAT_PREFETCH_BYTES,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
    /// Connections in the table now (expired ones until they are reclaimed).
    pub fn len(&self) -> u32 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Connections in stripe `stripe` now (as [`Table::len`]).
    pub fn stripe_len(&self, stripe: u32) -> u32 {
        self.counts[stripe as usize].load(Ordering::Relaxed)
    }
    pub fn stripe_count(&self) -> u32 {
        self.stripe_mask + 1
    }

    /// Reserves what conntrack helpers need: helper data beside every
    /// record, and room for `expectations` expectations over the stripes
    /// (see [`crate::helper::expect`]). Called once, before traffic.
    pub fn reserve_helpers(&self, expectations: u32, advise: &mut dyn Memory) {
        let per = expectations.div_ceil(self.stripe_count()).max(1) as usize;
        for m in self.stripes.iter() {
            let mut s = lock(m);
            if s.help.is_empty() {
                let n = s.records.len();
                s.help = stripe::reserve(n, advise);
                s.expects = crate::helper::Expects::new(per);
            }
        }
    }

    /// The live expectations of every stripe, each stripe locked while it
    /// is read (`conntrack -L expect`).
    pub fn for_each_expect(&self, now_ms: u64, mut f: impl FnMut(&crate::helper::Expect)) {
        for m in self.stripes.iter() {
            lock(m).expects.for_each(now_ms, &mut f);
        }
    }

    /// Reaps the lapsed expectations of `stripe`; returns how many.
    pub fn reap_expects(&self, stripe: u32, now_ms: u64) -> u64 {
        match self.stripes.get(stripe as usize) {
            Some(m) => lock(m).expects.reap(now_ms),
            None => 0,
        }
    }
    /// Bytes of memory in use: reserved at start (records, index, timer
    /// wheel, mappings, extensions) and the state lines and IPv6 addresses
    /// handed out.
    pub fn reserved_bytes(&self) -> usize {
        self.stripes.iter().map(|s| lock(s).reserved_bytes()).sum()
    }
    /// [`Table::reserved_bytes`] per connection of capacity.
    pub fn bytes_per_conn(&self) -> usize {
        self.reserved_bytes() / self.capacity as usize
    }

    /// A function giving a tuple's stripe as [`Table::key`] does, owning
    /// what it needs (for closures that outlive a borrow of the table).
    pub fn stripe_of_fn(&self) -> impl Fn(&Tuple) -> u32 + Send + 'static {
        let (hash_key, mask) = (self.hash_key, self.stripe_mask);
        move |t: &Tuple| stripe_of_hash(t.hash_with(&hash_key).0, mask)
    }

    #[inline(always)]
    pub fn key(&self, t: &Tuple) -> Key {
        self.key_of_hash(t.hash_with(&self.hash_key))
    }

    /// The key of record `i`'s tuple of direction `dir` in `recs`: an
    /// IPv4 one hashed from its compact form, as stored (no whole tuple
    /// built to hash it).
    #[inline]
    fn record_key(&self, recs: &Records, i: u32, dir: Dir) -> Key {
        match recs.hot[i as usize].tuples[dir.index()].v4_parts() {
            Some(v4) => self.key_of_hash(v4.hash_with(&self.hash_key)),
            None => self.key(&recs.tuple(i, dir)),
        }
    }

    #[inline(always)]
    fn key_of_hash(&self, (hash, flip): (u64, bool)) -> Key {
        Key {
            hash,
            stripe: stripe_of_hash(hash, self.stripe_mask),
            flip,
            home: Key::home_of(hash, flip, self.buckets),
        }
    }

    /// Holds no stripe yet: stripes are locked as they are first used.
    pub fn guard(&self) -> Guard<'_> {
        Guard {
            table: self,
            held: ManuallyDrop::new(std::array::from_fn(|_| None)),
            held_mask: 0,
            backoffs: 0,
            plans: [None; PLANS],
            next_plan: 0,
        }
    }

    /// Is `t` in the table, in either direction?
    pub fn contains(&self, t: &Tuple) -> bool {
        let mut g = self.guard();
        g.lookup(self.key(t), t).is_some()
    }

    /// Fires the ticks of `stripe`'s timer wheel up to `now_ms`: the
    /// connections past their deadline are removed (each handed to
    /// `expired`), the others moved to their deadline's slot. Visits at most
    /// `budget` records (what is left waits for the next call); returns how
    /// many were removed and whether the budget ran out first (more is due).
    /// Its cost follows what is due, not the table's size.
    pub fn expire(
        &self,
        stripe: u32,
        now_ms: u64,
        budget: usize,
        mut expired: impl FnMut(Listed),
    ) -> (usize, bool) {
        let mut g = self.guard();
        self.eim_sweep(&mut g, stripe, now_ms);
        let now_tick = wheel::tick_of(now_ms);
        let (mut visited, mut removed) = (0, 0);
        g.stripe(stripe).wheel.catch_up(now_tick);
        loop {
            let t = g.stripe(stripe).wheel.next_tick;
            if t > now_tick {
                break;
            }
            let slot = wheel::slot_of(t);
            let mut cur = g.stripe(stripe).wheel.heads[slot];
            while cur != wheel::NIL {
                if visited >= budget {
                    return (removed, true);
                }
                visited += 1;
                let s = g.stripe(stripe);
                let (next, deadline) = (
                    s.records.cold[cur as usize].link.next(),
                    s.records.hot[cur as usize].deadline_ms,
                );
                if now_ms >= deadline {
                    let backoffs = g.backoffs;
                    if let Some(dead) = g.remove(Ref { stripe, local: cur }) {
                        removed += 1;
                        expired(dead);
                    }
                    if g.backoffs != backoffs {
                        // The stripe was let go and taken again: start the
                        // slot's list over.
                        cur = g.stripe(stripe).wheel.heads[slot];
                        continue;
                    }
                } else if wheel::tick_of(deadline) > t {
                    s.unlink(cur);
                    s.link(cur, deadline);
                }
                // (Due later within tick `t`: stays until `t` is over.)
                cur = next;
            }
            if t == now_tick {
                break;
            }
            g.stripe(stripe).wheel.next_tick = t + 1;
        }
        (removed, false)
    }

    /// What `stripe`'s source NAT port bitmaps hold (locks it briefly).
    pub fn nat_ports(&self, stripe: u32) -> crate::nat::ports::PortUse {
        lock(&self.stripes[stripe as usize]).ports.usage()
    }

    /// Checks every stripe's timer wheel against its records: each live
    /// record is in exactly one slot list (its tick's), lists are linked
    /// both ways, and no free record is in one. For tests.
    #[cfg(test)]
    fn check_wheels(&self) -> Result<(), String> {
        for si in 0..self.stripe_count() {
            let s = lock(&self.stripes[si as usize]);
            let mut seen = vec![false; s.records.len()];
            let mut linked = 0u32;
            for (slot, &head) in s.wheel.heads.iter().enumerate() {
                let (mut prev, mut cur) = (wheel::NIL, head);
                while cur != wheel::NIL {
                    let link = s.records.cold[cur as usize].link;
                    if seen[cur as usize] {
                        return Err(format!("stripe {si}: record {cur} in two lists or a loop"));
                    }
                    seen[cur as usize] = true;
                    if !s.records.live(cur) {
                        return Err(format!("stripe {si}: free record {cur} in slot {slot}"));
                    }
                    if link.slot() != Some(slot) || link.prev() != prev {
                        return Err(format!(
                            "stripe {si}: record {cur} badly linked in slot {slot}"
                        ));
                    }
                    linked += 1;
                    prev = cur;
                    cur = link.next();
                }
            }
            if linked != s.live {
                return Err(format!(
                    "stripe {si}: {linked} records linked, {} live",
                    s.live
                ));
            }
        }
        Ok(())
    }

    /// Calls `f` on every live connection of `stripe`, holding the stripe's
    /// lock for a slice of records at a time (a connection that moves between
    /// slices may be seen twice or not at all, as in the kernel's dump).
    pub fn for_each(&self, stripe: u32, mut f: impl FnMut(Local, &Listed)) {
        let mut start = 0;
        loop {
            let g = lock(&self.stripes[stripe as usize]);
            let end = (start + SLICE).min(g.records.len());
            for local in start..end {
                if g.records.live(local as Local) {
                    let l = Listed {
                        conn: g.records.conn(local as Local),
                        ext: g.ext.get(local).copied(),
                    };
                    f(local as Local, &l);
                }
            }
            if end == g.records.len() {
                return;
            }
            start = end;
        }
    }

    /// Removes the connection at (`stripe`, `local`) if it still has `id`.
    pub fn remove_id(&self, stripe: u32, local: Local, id: u32) -> Option<Listed> {
        let mut g = self.guard();
        let r = g.get(stripe, local, id)?;
        g.remove(r)
    }
}

/// The stripes one thread holds: a worker's for one burst, the control
/// thread's for one operation. Dropping it releases them.
pub struct Guard<'t> {
    table: &'t Table,
    /// The locks held, by stripe. Let go by [`Guard`]'s `drop`, which
    /// visits only the stripes `held_mask` names (every `Some` here has
    /// its bit there): the array's own drop would test all 64 entries,
    /// about 10 instructions a packet of a burst of 32.
    held: ManuallyDrop<[Option<MutexGuard<'t, Stripe>>; MAX_STRIPES as usize]>,
    held_mask: u64,
    /// Times this guard let go of stripes to take a lower one in order.
    backoffs: u32,
    /// What [`Guard::prefetch_eviction`] worked out about the connections
    /// the next few new ones will most likely evict (a ring: the last
    /// [`PLANS`]), for [`Guard::remove_as`] to take up.
    plans: [Option<Plan>; PLANS],
    next_plan: usize,
}

/// How many evictions ahead of their confirm [`Guard::prefetch_eviction`]
/// may run (the burst's loads ahead run two packets ahead).
const PLANS: usize = 4;

/// An eviction worked out ahead: the connection (its record and id, so
/// that a record reused since is not taken for it), the key of one of its
/// tuples, and its source NAT port (the bitmap's slot and the port). A
/// live record's tuples do not change, and bitmaps are never taken away:
/// while the id holds, so does the rest.
#[derive(Debug, Clone, Copy)]
struct Plan {
    r: Ref,
    id: u32,
    dir: Dir,
    key: Key,
    port: Option<(usize, u16)>,
}

/// An evicted connection's source NAT port: found ahead (its bitmap's
/// slot), or to be found (its bitmap's key).
enum Port {
    Slot((usize, u16)),
    Key((crate::nat::ports::MapKey, u16)),
}

impl<'t> Guard<'t> {
    /// The stripe, locked: in index order when no higher stripe is held;
    /// otherwise tried, and if busy, the higher ones are released and all are
    /// taken again in order (no cycle of waiting guards).
    #[inline(always)]
    fn stripe(&mut self, s: u32) -> &mut Stripe {
        // Held is one load and a test of its guard. Stripe indexes are
        // below MAX_STRIPES (callers check entries naming others), so the
        // `&` changes no index: it only spares the bounds check.
        debug_assert!(s < MAX_STRIPES, "stripe {s}");
        let i = s as usize & (MAX_STRIPES as usize - 1);
        // One load and test when held (the guard is not read twice).
        if self.held[i].is_some() {
            return match self.held[i].as_mut() {
                Some(g) => g,
                None => unreachable!(),
            };
        }
        self.acquired(s)
    }

    /// [`Guard::stripe`] for a stripe not held yet: takes it.
    #[cold]
    #[inline(never)]
    fn acquired(&mut self, s: u32) -> &mut Stripe {
        self.acquire(s);
        match self.held[s as usize].as_mut() {
            Some(g) => g,
            None => unreachable!("stripe {s} was just locked"),
        }
    }

    #[cold]
    fn acquire(&mut self, s: u32) {
        let m = &self.table.stripes[s as usize];
        let higher = self.held_mask & !(2u64 << s).wrapping_sub(1);
        if higher == 0 {
            self.held[s as usize] = Some(lock(m));
        } else {
            match m.try_lock() {
                Ok(g) => self.held[s as usize] = Some(g),
                Err(TryLockError::Poisoned(e)) => self.held[s as usize] = Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => {
                    self.backoffs += 1;
                    let mut rest = higher;
                    while rest != 0 {
                        let i = rest.trailing_zeros() as usize;
                        self.held[i] = None;
                        rest &= rest - 1;
                    }
                    self.held[s as usize] = Some(lock(m));
                    let mut rest = higher;
                    while rest != 0 {
                        let i = rest.trailing_zeros() as usize;
                        self.held[i] = Some(lock(&self.table.stripes[i]));
                        rest &= rest - 1;
                    }
                }
            }
        }
        self.held_mask |= 1 << s;
    }

    /// Holds stripes `a` and `b` together, so that a change to both (an
    /// insert, a remove) is not split by a back-off in between. Returns
    /// false if taking them made the guard let go of a stripe and take it
    /// again (what was read before may have changed).
    #[inline]
    fn hold_both(&mut self, a: u32, b: u32) -> bool {
        let backoffs = self.backoffs;
        self.stripe(a.min(b));
        if a != b {
            self.stripe(a.max(b));
        }
        self.backoffs == backoffs
    }

    fn set_count(&mut self, s: u32) {
        let live = self.stripe(s).live;
        self.table.counts[s as usize].store(live, Ordering::Relaxed);
    }

    /// Whether the table's records and index outgrow a last-level cache
    /// (where a new connection's source NAT search pays for being begun
    /// ahead: [`NAT_PREFETCH_BYTES`]).
    #[inline]
    pub fn beyond_llc(&self) -> bool {
        self.table.prefetch_nat
    }

    /// [`Guard::prefetch_bucket`] through a function pointer.
    #[inline]
    pub fn prefetch_bucket_with(&mut self, key: Key, prefetch: fn(*const u8)) {
        let s = self.stripe(key.stripe);
        prefetch(&s.buckets[key.bucket(s.buckets.len())] as *const Bucket as *const u8);
    }

    /// Starts loading the bucket `key` maps to.
    #[inline(always)]
    pub fn prefetch_bucket<P: Prefetch>(&mut self, key: Key) {
        let s = self.stripe(key.stripe);
        let b = &s.buckets[key.bucket(s.buckets.len())];
        P::read(b as *const Bucket as *const u8);
    }

    /// Starts loading the hot line of the record of every entry in `key`'s
    /// home bucket whose signature matches (a TCP or SCTP record's state
    /// line follows from it: [`Guard::prefetch_state`]). The bucket
    /// should be in cache by now. Says what the packet most likely is: of
    /// a known connection, or opening one (and then whether the stripe is
    /// full, so that its confirm will evict one: see
    /// [`Guard::prefetch_eviction`]; the record early drop looks at first
    /// is loaded here).
    #[inline(always)]
    pub fn prefetch_records<P: Prefetch>(&mut self, key: Key) -> Probe {
        let s = self.stripe(key.stripe);
        let n = s.buckets.len();
        let b = &s.buckets[key.bucket(n)];
        let mut m = b.matches(key.sig());
        if m == 0 {
            if b.overflow != 0 {
                // Entries homed here went on to the next bucket: the packet
                // may well be a known connection's (its records are found
                // there in stage 3).
                return Probe::Known(None);
            }
            if s.prefetch_evictions {
                return Probe::NewFar {
                    evicts: s.records.is_full(),
                };
            }
            // Most likely a new connection: its confirm will probe and fill
            // the reply tuple's bucket (without NAT, the inverted tuple's).
            let r = key.inverted(n);
            P::read(&s.buckets[r.bucket(n)] as *const Bucket as *const u8);
            return Probe::New;
        }
        let mut hint = None;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let word = b.entry[i];
            let (r, _) = entry_parts(word);
            if r.stripe == key.stripe {
                prefetch_record::<P>(&s.records, r.local);
                hint = hint.or(Some(Hint(word)));
            }
        }
        Probe::Known(hint)
    }

    /// For a packet [`Guard::prefetch_records`] found new in a stripe
    /// beyond the caches (its bucket in cache by now), starts loading what
    /// its confirm reads first: without source NAT (`reply`) the bucket of
    /// its inverted tuple, which the reply tuple goes to; if the stripe is
    /// full (`evicts`), the record early drop looks at first (read and most
    /// likely removed), whose own loads follow in
    /// [`Guard::prefetch_eviction`].
    #[inline]
    pub fn prefetch_new<P: Prefetch>(&mut self, key: Key, reply: bool, evicts: bool) {
        let s = self.stripe(key.stripe);
        let n = s.buckets.len();
        if reply {
            let r = key.inverted(n);
            P::read(&s.buckets[r.bucket(n)] as *const Bucket as *const u8);
        }
        if evicts {
            if let Some((v, _)) = first_homed(&s.buckets[key.bucket(n)], key.stripe) {
                prefetch_record::<P>(&s.records, v.local);
                if let Some(p) = s.records.cold_addr(v.local) {
                    P::read(p);
                }
            }
        }
    }

    /// For a packet that will evict (the record of the connection early
    /// drop looks at first loaded by [`Guard::prefetch_new`] a while
    /// before: in cache or on its way), starts loading what removing that
    /// connection writes besides its record: its neighbours in the timer
    /// wheel, the bucket of its other direction (when in this stripe) and
    /// its source NAT port's bitmap word.
    #[inline]
    pub fn prefetch_eviction<P: Prefetch>(&mut self, key: Key) {
        let table = self.table;
        let s = self.stripe(key.stripe);
        let n = s.buckets.len();
        let Some((victim, dir)) = first_homed(&s.buckets[key.bucket(n)], key.stripe) else {
            return;
        };
        if !s.records.live(victim.local) {
            return;
        }
        let link = s.records.cold[victim.local as usize].link;
        for neighbour in [link.prev(), link.next()] {
            if let Some(p) = s.records.cold_addr(neighbour) {
                P::read(p);
            }
        }
        let k = table.record_key(&s.records, victim.local, dir.other());
        if k.stripe == key.stripe {
            P::read(&s.buckets[k.bucket(n)] as *const Bucket as *const u8);
        }
        // Its source NAT port, released in the port bitmap.
        let hot = &s.records.hot[victim.local as usize];
        let (status, id) = (hot.status, hot.id);
        // A translated connection's removal hashes both tuples and finds
        // its port's bitmap: kept for it. (An untranslated one's second
        // key is its first flipped.)
        if let Some((map, port)) = s.records.nat_port(victim.local, status) {
            let port = s
                .ports
                .prefetch_port(&map, port, P::read)
                .map(|slot| (slot, port));
            self.plans[self.next_plan] = Some(Plan {
                r: victim,
                id,
                dir: dir.other(),
                key: k,
                port,
            });
            self.next_plan = (self.next_plan + 1) % PLANS;
        }
    }

    /// [`Guard::lookup`], trying first the entry stage 2 saw match
    /// (`hint`, from [`Guard::prefetch_records`] under this guard): its
    /// record, if it is live and holds `t` in the entry's direction, is
    /// the one the lookup would find (no two live records hold a tuple),
    /// without the bucket's second walk. Otherwise (a signature that
    /// matched another tuple, a record removed or reused since) the
    /// whole lookup.
    #[inline(always)]
    pub fn lookup_hinted(&mut self, key: Key, t: &Tuple, hint: Option<Hint>) -> Option<(Ref, Dir)> {
        if let Some(Hint(word)) = hint {
            let (r, dir) = entry_parts(word);
            let s = self.stripe(key.stripe);
            if s.records.holds(r.local, dir, t, &Compact::of(t)) {
                return Some((r, dir));
            }
        }
        self.lookup(key, t)
    }

    /// The entry stage 2 saw match (`hint`, from
    /// [`Guard::prefetch_records`] under this guard) if its record is live
    /// and holds the IPv4 tuple `ct` in the entry's direction (an IPv4
    /// compact tuple is the whole tuple), with its hot line; None says
    /// nothing (the hint may have named another tuple's record:
    /// [`Guard::lookup`] decides).
    #[inline(always)]
    pub fn hinted_v4(
        &mut self,
        key: Key,
        ct: &Compact,
        hint: Hint,
    ) -> Option<(Ref, Dir, &mut record::Hot)> {
        let (r, dir) = entry_parts(hint.0);
        debug_assert!(!ct.is_v6());
        let h = self
            .stripe(key.stripe)
            .records
            .hot
            .get_mut(r.local as usize)?;
        (r.stripe == key.stripe && record::holds_compact(h, dir, ct)).then_some((r, dir, h))
    }

    /// The hot line of the connection at `r`, for a packet's update that
    /// changes neither its tuples nor its private status bits.
    #[inline(always)]
    pub fn hot_mut(&mut self, r: Ref) -> &mut record::Hot {
        &mut self.stripe(r.stripe).records.hot[r.local as usize]
    }

    /// Finds the live connection holding `t` (in either direction).
    /// Expired connections are found too: the caller decides.
    #[inline(always)]
    pub fn lookup(&mut self, key: Key, t: &Tuple) -> Option<(Ref, Dir)> {
        let sig = key.sig();
        let stripe_mask = self.table.stripe_mask;
        let s = self.stripe(key.stripe);
        let n = s.buckets.len();
        let mut b = key.bucket(n);
        // Entries of this stripe's buckets are checked against its records
        // here; if one names another stripe's record (a NAT reply tuple whose
        // hash fell in this stripe), those are checked after, under theirs.
        let mut elsewhere = false;
        let ct = Compact::of(t);
        for _ in 0..=MAX_PROBE {
            let bucket = &s.buckets[b];
            let mut m = bucket.matches(sig);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let (r, dir) = entry_parts(bucket.entry[i]);
                if r.stripe != key.stripe {
                    elsewhere |= r.stripe <= stripe_mask;
                    continue;
                }
                if s.records.holds(r.local, dir, t, &ct) {
                    return Some((r, dir));
                }
            }
            if bucket.overflow == 0 {
                break;
            }
            b = next_bucket(b, n);
        }
        if elsewhere {
            self.lookup_elsewhere(key, t)
        } else {
            None
        }
    }

    /// The rest of [`lookup`](Self::lookup): the same probe again, checking
    /// the entries that name other stripes' records, each under its stripe.
    #[cold]
    fn lookup_elsewhere(&mut self, key: Key, t: &Tuple) -> Option<(Ref, Dir)> {
        let sig = key.sig();
        let n = self.stripe(key.stripe).buckets.len();
        let mut b = key.bucket(n);
        let ct = Compact::of(t);
        for _ in 0..=MAX_PROBE {
            let bucket = self.stripe(key.stripe).buckets[b];
            let mut m = bucket.matches(sig);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let (r, dir) = entry_parts(bucket.entry[i]);
                if r.stripe == key.stripe || r.stripe > self.table.stripe_mask {
                    continue;
                }
                if self.stripe(r.stripe).records.holds(r.local, dir, t, &ct) {
                    return Some((r, dir));
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = next_bucket(b, n);
        }
        None
    }

    /// The connection at `r` (which a lookup or insert of this guard
    /// returned), copied out whole.
    #[inline]
    pub fn conn(&mut self, r: Ref) -> Conn {
        self.stripe(r.stripe).records.conn(r.local)
    }

    /// The hot line of the connection at `r`: its tuples (compact),
    /// deadline, status (with private bits: see [`record::PRIVATE`]), id and
    /// cached verdicts.
    #[inline(always)]
    pub fn hot(&mut self, r: Ref) -> &record::Hot {
        &self.stripe(r.stripe).records.hot[r.local as usize]
    }

    /// The connection at `r`, borrowed for a packet's update.
    #[inline(always)]
    pub fn rec_mut(&mut self, r: Ref) -> record::RecMut<'_> {
        self.stripe(r.stripe).records.view(r.local)
    }

    /// Changes the connection at `r` through `f` on a copy, written back:
    /// for the uncommon paths (its tuples and protocol must stay).
    pub fn update<R>(&mut self, r: Ref, f: impl FnOnce(&mut Conn) -> R) -> R {
        let s = self.stripe(r.stripe);
        let mut c = s.records.conn(r.local);
        let out = f(&mut c);
        s.records.update(r.local, &c);
        out
    }

    /// Starts loading the state line of the connection stage 2 found for
    /// a packet (`hint`), once its hot line is in.
    #[inline(always)]
    pub fn prefetch_state<P: Prefetch>(&mut self, key: Key, hint: Hint) {
        let (r, _) = entry_parts(hint.0);
        if let Some(p) = self.stripe(key.stripe).records.side_addr(r.local) {
            P::read(p);
        }
    }

    /// The helper data of the connection at `r` (None when helpers are off).
    #[inline]
    pub fn help_mut(&mut self, r: Ref) -> Option<&mut crate::helper::HelpState> {
        self.stripe(r.stripe).help.get_mut(r.local as usize)
    }

    /// The expectations kept in `stripe`.
    pub fn expects(&mut self, stripe: u32) -> &mut crate::helper::Expects {
        &mut self.stripe(stripe & self.table.stripe_mask).expects
    }

    /// The slab entry `local` of `stripe`, if it holds live connection `id`.
    pub fn get(&mut self, stripe: u32, local: Local, id: u32) -> Option<Ref> {
        if stripe > self.table.stripe_mask {
            return None;
        }
        let h = self.stripe(stripe).records.hot.get(local as usize)?;
        (live(h.status) && h.id == id).then_some(Ref { stripe, local })
    }

    /// After a packet changed a connection's deadline from `old_deadline_ms`:
    /// one that moved before the tick of its wheel slot moves to an earlier
    /// slot (a later deadline is seen when the slot comes due).
    pub fn deadline_changed(&mut self, r: Ref, old_deadline_ms: u64) {
        let s = self.stripe(r.stripe);
        let d = s.records.hot[r.local as usize].deadline_ms;
        let link = s.records.cold[r.local as usize].link;
        if d < old_deadline_ms
            && link
                .slot()
                .is_some_and(|slot| s.wheel.place(d) < s.wheel.tick_of_slot(slot))
        {
            s.unlink(r.local);
            s.link(r.local, d);
        }
    }

    /// `t`'s key (as [`Table::key`]).
    pub fn key(&self, t: &Tuple) -> Key {
        self.table.key(t)
    }

    /// The stripe a connection with original tuple `t` is homed in.
    pub fn home(&self, t: &Tuple) -> u32 {
        self.table.key(t).stripe
    }

    /// The source NAT ports in use in `stripe` (taking it).
    pub fn ports(&mut self, stripe: u32) -> &mut crate::nat::ports::PortMaps {
        &mut self.stripe(stripe).ports
    }

    /// nf_conntrack_tuple_taken: is `t` held by a live connection? An expired
    /// holder is removed on the spot (and handed to `reclaimed`, for its
    /// DESTROY event).
    pub fn taken(&mut self, t: &Tuple, now_ms: u64, reclaimed: &mut dyn FnMut(Listed)) -> bool {
        self.taken_at(self.table.key(t), t, now_ms, reclaimed)
    }

    /// [`Guard::taken`] with `t`'s key worked out.
    pub fn taken_at(
        &mut self,
        key: Key,
        t: &Tuple,
        now_ms: u64,
        reclaimed: &mut dyn FnMut(Listed),
    ) -> bool {
        match self.lookup(key, t) {
            None => false,
            Some((r, _)) if self.hot(r).is_expired(now_ms) => {
                if let Some(dead) = self.remove(r) {
                    reclaimed(dead);
                }
                false
            }
            Some(_) => true,
        }
    }

    /// Confirms a connection: inserts both directions into the home stripe
    /// (its original tuple's) and the reply tuple's. Fails on a clash (of the
    /// tuples `check` names) or when the home stripe is full and `early_drop`
    /// found nothing to evict. Returns where it went and its id (the record
    /// is CONFIRMED); a connection evicted to make room goes to `evicted`.
    /// (The answer is 16 bytes, returned in registers: a returned
    /// `Option<Conn>` beside it was read back with a store-forwarding stall.)
    #[inline]
    pub fn insert(
        &mut self,
        conn: &Conn,
        check: Clash,
        early_drop: bool,
        eviction: &mut Eviction,
    ) -> Result<(Ref, u32), InsertError> {
        let (key0, first) = match check {
            Clash::Both => (self.table.key(&conn.tuples[0]), 0),
            Clash::ReplyOnly(key) | Clash::Neither(key, _) => (key, 1),
        };
        // Without NAT the reply tuple is the inverted original: its key
        // needs no hashing.
        let [orig, reply] = &conn.tuples;
        let inverted = reply.src == orig.dst
            && reply.dst == orig.src
            && reply.src_port == orig.dst_port
            && reply.dst_port == orig.src_port
            && (orig.src, orig.src_port) != (orig.dst, orig.dst_port)
            && reply.zone == orig.zone
            && !orig.is_icmp();
        let (key1, reply_checked) = if let Clash::Neither(_, claimed) = check {
            (claimed.key, true)
        } else if inverted {
            (key0.inverted(self.table.buckets), false)
        } else {
            (self.table.key(reply), false)
        };
        debug_assert_eq!(key0, self.table.key(orig));
        debug_assert_eq!(key1, self.table.key(reply));
        // (The two keys stay two values: an array of them was copied with
        // wide loads of what had just been stored narrowly.)
        let mut held = self.hold_both(key0.stripe, key1.stripe);
        if let Some(es) = self.eim_stripe(conn.status, &conn.tuples) {
            // Taken now, so that no back-off splits the insert below.
            let backoffs = self.backoffs;
            self.stripe(es);
            held &= self.backoffs == backoffs;
        }
        // A back-off let the stripes go: what the caller looked up may have
        // been inserted meanwhile.
        if (first == 0 || !held) && self.lookup(key0, orig).is_some() {
            return Err(InsertError::Clash);
        }
        if (!reply_checked || !held) && self.lookup(key1, reply).is_some() {
            return Err(InsertError::Clash);
        }
        let hs = key0.stripe;
        if self.stripe(hs).records.is_full() {
            let victim = if early_drop {
                self.early_drop_candidate(key0)
            } else {
                None
            };
            match victim.and_then(|v| self.remove_as(v, eviction.snapshot)) {
                Some(dead) => {
                    eviction.evicted = true;
                    // Moved only when there is a copy: moving the empty
                    // `Option<Listed>` copies all its ~230 bytes (a call
                    // to memcpy per eviction).
                    if let Some(d) = dead {
                        eviction.dead = Some(d);
                    }
                }
                None => return Err(InsertError::Full),
            }
        }
        let Some(local) = self.stripe(hs).records.alloc() else {
            return Err(InsertError::Full);
        };
        let r = Ref { stripe: hs, local };
        let (w0, w1) = (entry_word(r, Dir::Orig), entry_word(r, Dir::Reply));
        let placed = if key1.stripe == hs {
            // Both entries in the home stripe (always without NAT): under
            // one borrow of it.
            let s = self.stripe(hs);
            let both = place_in(s, key0, w0) && place_in(s, key1, w1);
            if !both {
                unplace_in(s, key0, w0);
            }
            both
        } else {
            let both = self.place(key0, w0) && self.place(key1, w1);
            if !both {
                self.unplace(key0, w0);
            }
            both
        };
        if !placed {
            self.stripe(hs).records.free(local);
            return Err(InsertError::Full);
        }
        let s = self.stripe(hs);
        let id = s.next_id();
        s.records.put(local, conn, id);
        let status = &mut s.records.hot[local as usize].status;
        status.set(Status::CONFIRMED);
        status.clear(Status::DYING);
        debug_assert_eq!(
            s.records.conn(local),
            Conn {
                status: Status((conn.status.0 | Status::CONFIRMED) & !Status::DYING),
                id,
                ..*conn
            },
            "every field kept"
        );
        s.link(local, conn.deadline_ms);
        let map = match check {
            Clash::Neither(_, claimed) => claimed.map,
            _ => None,
        };
        s.ports.conn_added(conn, map);
        s.live += 1;
        self.set_count(hs);
        if conn.status.has(Status::EIM) && !self.eim_hold(conn) {
            self.stripe(hs).records.hot[local as usize]
                .status
                .clear(Status::EIM);
        }
        Ok((r, id))
    }

    /// Puts an entry word in `key`'s bucket chain.
    fn place(&mut self, key: Key, word: u32) -> bool {
        place_in(self.stripe(key.stripe), key, word)
    }

    /// Removes an entry word from `key`'s bucket chain.
    fn unplace(&mut self, key: Key, word: u32) {
        unplace_in(self.stripe(key.stripe), key, word);
    }

    /// Takes the connection out of the table (DYING set) and returns it for
    /// its DESTROY event; None if it was already gone.
    pub fn remove(&mut self, r: Ref) -> Option<Listed> {
        self.remove_as(r, true).flatten()
    }

    /// [`Guard::remove`], with the copy of the connection for its DESTROY
    /// event only if `snapshot`: Some(None) when it was removed without.
    /// (The copy is a few hundred bytes read and written, per eviction.)
    fn remove_as(&mut self, r: Ref, snapshot: bool) -> Option<Option<Listed>> {
        let table = self.table;
        let recs = &self.stripe(r.stripe).records;
        if !recs.live(r.local) {
            return None;
        }
        let status = recs.hot[r.local as usize].status;
        let id = recs.hot[r.local as usize].id;
        // What `prefetch_eviction` worked out, if it was about this
        // connection; the rest hashed from the compact tuples (the whole
        // ones only where they are needed).
        let plan = self
            .plans
            .iter_mut()
            .find(|p| p.is_some_and(|p| p.r == r && p.id == id))
            .and_then(Option::take);
        let recs = &self.stripe(r.stripe).records;
        let key = |d: Dir| match plan {
            Some(p) if p.dir == d => p.key,
            _ => table.record_key(recs, r.local, d),
        };
        let orig = key(Dir::Orig);
        // An untranslated connection's reply key is its original key
        // flipped (as `insert` worked it out).
        let [o, rp] = &recs.hot[r.local as usize].tuples;
        let reply = match plan {
            Some(p) if p.dir == Dir::Reply => p.key,
            _ if o.inverts_v4(rp) => orig.inverted(table.buckets),
            _ => key(Dir::Reply),
        };
        let keys = [orig, reply];
        let tuples = || [Dir::Orig, Dir::Reply].map(|d| recs.tuple(r.local, d));
        debug_assert_eq!(keys, tuples().map(|t| table.key(&t)));
        let nat_port = match plan {
            Some(p) => p.port.map(Port::Slot),
            None => recs.nat_port(r.local, status).map(Port::Key),
        };
        let eim_tuples = status.has(Status::EIM).then(tuples);
        let eim = eim_tuples.and_then(|t| self.eim_stripe(status, &t));
        let mut held = self.hold_both(r.stripe, keys[1].stripe);
        if let Some(es) = eim {
            let backoffs = self.backoffs;
            self.stripe(es);
            held &= self.backoffs == backoffs;
        }
        if !held {
            // The stripe was let go and taken again: the record may have
            // changed hands meanwhile.
            let h = &self.stripe(r.stripe).records.hot[r.local as usize];
            if !live(h.status) || h.id != id {
                return None;
            }
        }
        self.unplace(keys[0], entry_word(r, Dir::Orig));
        self.unplace(keys[1], entry_word(r, Dir::Reply));
        let s = self.stripe(r.stripe);
        s.unlink(r.local);
        match nat_port {
            Some(Port::Slot((slot, port))) => s.ports.release_at(slot, port),
            Some(Port::Key((map, port))) => s.ports.release(&map, port),
            None => {}
        }
        // Copied out whole for the snapshot (or an endpoint-independent
        // mapping's release); then made not live: the next insert writes
        // every field.
        let taken = (snapshot || status.has(Status::EIM)).then(|| s.records.conn(r.local));
        s.records.clear(r.local);
        s.records.free(r.local);
        s.live -= 1;
        // The stripe's clock: expiry has run up to here.
        let now_ms = s.wheel.next_tick * wheel::TICK_MS;
        let ext = if snapshot {
            s.ext.get(r.local as usize).copied()
        } else {
            None
        };
        self.set_count(r.stripe);
        let mut c = match taken {
            Some(c) => c,
            None => return Some(None),
        };
        if c.status.has(Status::EIM) {
            self.eim_release(&c, now_ms.min(c.deadline_ms));
        }
        if !snapshot {
            return Some(None);
        }
        c.status.set(Status::DYING);
        Some(Some(Listed { conn: c, ext }))
    }

    /// The connection with its counters and start time (if kept).
    pub fn listed(&mut self, r: Ref) -> Listed {
        let s = self.stripe(r.stripe);
        Listed {
            conn: s.records.conn(r.local),
            ext: s.ext.get(r.local as usize).copied(),
        }
    }

    /// Sets the counters and start time of a connection just inserted
    /// (nothing when accounting is off).
    #[inline]
    pub fn set_ext(&mut self, r: Ref, ext: Ext) {
        if let Some(e) = self.stripe(r.stripe).ext.get_mut(r.local as usize) {
            *e = ext;
        }
    }

    /// nf_ct_acct_update: one packet of `bytes` (L3) in `dir` (nothing when
    /// accounting is off).
    #[inline(always)]
    pub fn account(&mut self, r: Ref, dir: Dir, bytes: u64) {
        if let Some(e) = self.stripe(r.stripe).ext.get_mut(r.local as usize) {
            let c = &mut e.counters[dir.index()];
            c.packets += 1;
            c.bytes += bytes;
        }
    }

    /// The kernel's early_drop: a connection near `key` that is not ASSURED
    /// (or a closing TCP one), to evict.
    fn early_drop_candidate(&mut self, key: Key) -> Option<Ref> {
        let n = self.stripe(key.stripe).buckets.len();
        let mut b = key.bucket(n);
        for _ in 0..EVICTION_RANGE {
            let bucket = self.stripe(key.stripe).buckets[b];
            for i in 0..SLOTS {
                if bucket.sig(i) == 0 {
                    continue;
                }
                let (r, _) = entry_parts(bucket.entry[i]);
                // Only connections homed here free a record here.
                if r.stripe == key.stripe && self.early_droppable(r) {
                    return Some(r);
                }
            }
            b = next_bucket(b, n);
        }
        // The buckets around `key` hold only assured connections: look through
        // the stripe's slab from its GC cursor.
        let s = self.stripe(key.stripe);
        let (start, n) = (s.scan_cursor as usize, s.records.len());
        s.scan_cursor = ((start + 64) % n) as u32;
        for i in 0..n.min(64) {
            let r = Ref {
                stripe: key.stripe,
                local: ((start + i) % n) as Local,
            };
            if self.early_droppable(r) {
                return Some(r);
            }
        }
        None
    }

    /// Whether early drop may evict the connection at `r`: live and not
    /// ASSURED, or a closing TCP one (tcp_can_early_drop).
    fn early_droppable(&mut self, r: Ref) -> bool {
        use crate::conn::ProtoState;
        use crate::proto::tcp::TcpConntrack;
        let recs = &self.stripe(r.stripe).records;
        let Some(h) = recs.hot.get(r.local as usize) else {
            return false;
        };
        if !live(h.status) {
            return false;
        }
        if !h.status.has(Status::ASSURED) {
            return true;
        }
        if h.side == wheel::NIL {
            // No state line: not TCP (its protocol state is not read).
            return false;
        }
        matches!(
            recs.proto(r.local),
            ProtoState::Tcp(t) if matches!(t.state, TcpConntrack::FinWait | TcpConntrack::LastAck | TcpConntrack::TimeWait | TcpConntrack::Close | TcpConntrack::CloseWait)
        )
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // Every held stripe's bit is in the mask (a back-off lets stripes
        // go and takes them again under the same bits): taking each of
        // those unlocks all, and what stays behind is `None`, with
        // nothing to drop.
        let mut m = self.held_mask;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            self.held[i].take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::{Addr, Family};

    fn tuple(i: u32) -> Tuple {
        let b = i.to_be_bytes();
        Tuple {
            src: Addr::from_v4([192, 0, b[2], b[3]]),
            dst: Addr::from_v4([198, 51, 100, 1]),
            src_port: (i % 60000) as u16 + 1024,
            dst_port: 80,
            proto: 6,
            family: Family::V4,
            zone: 0,
        }
    }

    fn conn(i: u32) -> Conn {
        let t = tuple(i);
        Conn {
            tuples: [t, t.invert().unwrap()],
            deadline_ms: 1000,
            ..Default::default()
        }
    }

    fn insert(table: &Table, c: Conn) -> Result<Local, InsertError> {
        table
            .guard()
            .insert(&c, Clash::Both, false, &mut Eviction::default())
            .map(|(r, _)| r.local)
    }

    fn find(table: &Table, t: &Tuple) -> Option<(Conn, Dir)> {
        let mut g = table.guard();
        let (r, d) = g.lookup(table.key(t), t)?;
        Some((g.conn(r), d))
    }

    /// The guard's drop lets go of every stripe it took (it visits the
    /// stripes its mask names, not its whole array): each is free after,
    /// whichever order they were taken in.
    #[test]
    fn a_guard_lets_go_of_every_stripe_it_took() {
        let table = Table::new(1000, 8, 3);
        assert_eq!(table.stripe_count(), 8);
        for taken in [vec![0u32], vec![5, 2, 7], vec![3, 1, 6, 0]] {
            {
                let mut g = table.guard();
                for &s in &taken {
                    g.stripe(s);
                }
                for (s, m) in table.stripes.iter().enumerate() {
                    assert_eq!(
                        m.try_lock().is_err(),
                        taken.contains(&(s as u32)),
                        "{taken:?}"
                    );
                }
            }
            assert!(
                table.stripes.iter().all(|m| m.try_lock().is_ok()),
                "{taken:?} still held"
            );
        }
    }

    #[test]
    fn a_record_is_a_hot_line_and_28_bytes_beside_it() {
        assert_eq!(std::mem::align_of::<record::Hot>(), 64);
        assert_eq!(std::mem::size_of::<record::Hot>(), 64);
        assert_eq!(RECORD_BYTES, 88);
        // With its two index entries: within 128 bytes for a connection
        // without a state line (UDP, ICMP, generic), 192 with one (TCP, SCTP).
        let table = Table::new(100_000, 1, 3);
        let fixed = table.bytes_per_conn();
        assert!(fixed <= 121, "{fixed} bytes per connection");
    }

    #[test]
    fn a_hint_finds_what_the_lookup_finds_or_gives_way_to_it() {
        let table = Table::new(1000, 1, 42);
        let a = conn(1);
        let t = a.tuples[0];
        let key = table.key(&t);
        insert(&table, a).unwrap();
        let mut g = table.guard();
        let Probe::Known(hint) = g.prefetch_records::<NoPrefetch>(key) else {
            panic!("its own signature matches");
        };
        assert!(hint.is_some());
        let found = g.lookup(key, &t);
        assert_eq!(g.lookup_hinted(key, &t, hint), found);
        assert_eq!(found.map(|(_, d)| d), Some(Dir::Orig));
        // The record reused (the free list is a stack) by a connection that
        // holds the tuple the other way (its reply, as NAT can make it):
        // the hint names the right record in the wrong direction.
        let (r, _) = found.unwrap();
        assert!(g.remove(r).is_some());
        let b = Conn {
            tuples: [tuple(2), t],
            deadline_ms: 1000,
            ..Default::default()
        };
        let (rb, _) = g
            .insert(&b, Clash::Both, false, &mut Eviction::default())
            .unwrap();
        assert_eq!(rb, r, "the same record");
        assert_eq!(g.lookup_hinted(key, &t, hint), Some((r, Dir::Reply)));
        // Removed for good: nothing, whatever the hint.
        assert!(g.remove(rb).is_some());
        assert_eq!(g.lookup_hinted(key, &t, hint), None);
        // A hint naming a record of another tuple (a signature that
        // matched by chance) gives way to the lookup.
        let c = conn(3);
        insert_with(&mut g, &c);
        let other = g.prefetch_records::<NoPrefetch>(table.key(&c.tuples[0]));
        let Probe::Known(Some(h)) = other else {
            panic!("{other:?}")
        };
        insert_with(&mut g, &a);
        let want = g.lookup(key, &t);
        assert!(want.is_some());
        assert_eq!(g.lookup_hinted(key, &t, Some(h)), want);
    }

    fn insert_with(g: &mut Guard<'_>, c: &Conn) {
        g.insert(c, Clash::Both, false, &mut Eviction::default())
            .unwrap();
    }

    /// A record's keys and source NAT port worked out from its compact
    /// tuples are those of its whole tuples: IPv4 and IPv6, UDP, TCP and
    /// ICMP (whose id counts in both endpoints), zoned, translated or not.
    #[test]
    fn a_records_keys_and_port_from_its_compact_tuples_are_its_tuples() {
        use crate::nat::ports::tracked;
        let table = Table::new(1000, 1, 9);
        let v6 = |last: u8| {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            a[15] = last;
            Addr(a)
        };
        let mut conns = Vec::new();
        for (i, proto) in [17u8, 6, 1, 58].into_iter().enumerate() {
            for zone in [0u16, 7] {
                let mut t = tuple(i as u32 * 10 + u32::from(zone));
                t.proto = proto;
                t.zone = zone;
                if proto == 1 || proto == 58 {
                    // An echo request: type 8 (128 for ICMPv6), id 0x1234.
                    t.src_port = 0x1234;
                    t.dst_port = if proto == 1 { 8 << 8 } else { 128 << 8 };
                }
                if proto == 58 {
                    (t.family, t.src, t.dst) = (Family::V6, v6(1), v6(2 + zone as u8));
                }
                let plain = Conn {
                    tuples: [t, t.invert().unwrap()],
                    deadline_ms: 1000,
                    ..Default::default()
                };
                // Source NAT: the reply to 203.0.113.9 (or an IPv6 one), port 40000.
                let mut nat = plain;
                nat.tuples[0].src_port ^= 0x100;
                nat.tuples[1].dst = if proto == 58 {
                    v6(9)
                } else {
                    Addr::from_v4([203, 0, 113, 9])
                };
                if proto == 1 || proto == 58 {
                    nat.tuples[1].src_port = 40_000;
                } else {
                    nat.tuples[1].dst_port = 40_000;
                }
                nat.status.set(Status::SRC_NAT);
                conns.extend([plain, nat]);
            }
        }
        let mut g = table.guard();
        for c in &conns {
            let (r, _) = g
                .insert(c, Clash::Both, false, &mut Eviction::default())
                .unwrap();
            let recs = &g.stripe(r.stripe).records;
            for d in [Dir::Orig, Dir::Reply] {
                assert_eq!(
                    table.record_key(recs, r.local, d),
                    table.key(&c.tuples[d.index()]),
                    "{c:?} {d:?}"
                );
            }
            // Only an untranslated IPv4 connection of ports is its own
            // inversion; its reply key is then its original key flipped.
            let [o, rp] = &recs.hot[r.local as usize].tuples;
            let plain_v4 = !c.status.has(Status::SRC_NAT) && matches!(c.tuples[0].proto, 6 | 17);
            assert_eq!(o.inverts_v4(rp), plain_v4, "{c:?}");
            if plain_v4 {
                let k = table.key(&c.tuples[0]);
                assert_eq!(k.inverted(table.buckets), table.key(&c.tuples[1]));
            }
            let status = recs.hot[r.local as usize].status;
            assert_eq!(
                recs.nat_port(r.local, status),
                tracked(c.status, &c.tuples[1])
            );
            if c.status.has(Status::SRC_NAT) && c.tuples[0].proto != 58 {
                assert_eq!(recs.nat_port(r.local, status).map(|(_, p)| p), Some(40_000));
            }
        }
    }

    #[test]
    fn both_directions_are_found() {
        let table = Table::new(10_000, 1, 42);
        for i in 0..5000 {
            insert(&table, conn(i)).unwrap();
        }
        assert_eq!(table.len(), 5000);
        for i in 0..5000 {
            let c = conn(i);
            for (d, t) in c.tuples.iter().enumerate() {
                let (f, dir) = find(&table, t).expect("found");
                assert_eq!(dir.index(), d);
                assert_eq!(f.tuples[0], c.tuples[0]);
            }
        }
    }

    /// Every slot of the slab can be used: the index (half a bucket per
    /// connection, probing bounded by MAX_PROBE) never refuses a connection
    /// while a record is free, at any table size.
    #[test]
    fn a_table_fills_to_its_capacity() {
        for cap in [1000u32, 99_999, 262_144] {
            let table = Table::new(cap, 1, u64::from(cap));
            for i in 0..cap {
                insert(&table, conn(i)).unwrap_or_else(|e| panic!("{i} of {cap}: {e}"));
            }
            assert_eq!(table.len(), cap);
            assert_eq!(insert(&table, conn(cap)), Err(InsertError::Full));
        }
    }

    #[test]
    fn clash_and_capacity() {
        let table = Table::new(100, 1, 7);
        insert(&table, conn(1)).unwrap();
        assert_eq!(insert(&table, conn(1)), Err(InsertError::Clash));
        let mut ok = 1;
        for i in 2..400 {
            if insert(&table, conn(i)).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 100);
        assert_eq!(table.len(), 100);
    }

    /// The wheel against a model: at every step, exactly the connections
    /// whose deadline has passed are gone, whatever the deadlines (beyond a
    /// turn included), their changes (longer and shorter), removals by hand,
    /// the clock's steps (jumps of several turns included) and the budget.
    #[test]
    fn the_wheel_expires_exactly_what_is_due() {
        use std::collections::BTreeMap;
        let turn = wheel::SLOTS as u64 * wheel::TICK_MS;
        let mut x: u64 = 0x2545_f491;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let table = Table::new(3000, 2, 9);
        let mut model: BTreeMap<u32, u64> = BTreeMap::new(); // i -> deadline
        let mut now = 0u64;
        let mut next_i = 0u32;
        for step in 0..400 {
            // New connections, deadlines from "already due" to three turns out.
            for _ in 0..rnd(12) {
                let i = next_i;
                next_i += 1;
                let mut c = conn(i);
                c.deadline_ms = now + rnd(3 * turn);
                if insert(&table, c).is_ok() {
                    model.insert(i, c.deadline_ms);
                }
            }
            // Some deadlines change (a packet), some connections are deleted.
            let keys: Vec<u32> = model.keys().copied().collect();
            for &i in &keys {
                if rnd(10) != 0 {
                    continue;
                }
                let t = tuple(i);
                let mut g = table.guard();
                let (r, _) = g.lookup(table.key(&t), &t).unwrap();
                if rnd(4) == 0 {
                    g.remove(r).unwrap();
                    model.remove(&i);
                    continue;
                }
                let old = g.hot(r).deadline_ms;
                let new = now + rnd(2 * turn);
                g.update(r, |c| c.deadline_ms = new);
                g.deadline_changed(r, old);
                model.insert(i, new);
            }
            now += match step % 50 {
                49 => 5 * turn + rnd(turn), // a long pause
                _ => rnd(3 * wheel::TICK_MS),
            };
            let mut gone = Vec::new();
            for s in 0..table.stripe_count() {
                // A small budget first (the rest waits), then all that is due.
                table.expire(s, now, 3, |c| gone.push(c.tuples[0]));
                table.expire(s, now, usize::MAX, |c| gone.push(c.tuples[0]));
            }
            let due: Vec<u32> = model
                .iter()
                .filter(|(_, &d)| d <= now)
                .map(|(&i, _)| i)
                .collect();
            let mut want: Vec<Tuple> = due.iter().map(|&i| tuple(i)).collect();
            want.sort_by_key(|t| (t.src.0, t.src_port));
            gone.sort_by_key(|t| (t.src.0, t.src_port));
            assert_eq!(gone, want, "step {step}, now {now}");
            for i in due {
                model.remove(&i);
            }
            assert_eq!(table.len() as usize, model.len());
            table.check_wheels().unwrap();
        }
    }

    /// Expiry beside inserts and removes on other threads, with NAT-like
    /// reply tuples homed in other stripes (removes then take two stripes and
    /// may back off): the wheels stay consistent and nothing due survives.
    #[test]
    fn expiry_beside_concurrent_inserts_and_removes() {
        let table = Table::new(20_000, 4, 21);
        let natted = |id: u32, deadline: u64| {
            let mut c = conn(id);
            c.tuples[1].dst = Addr::from_v4([203, 0, 113, 1]);
            c.tuples[1].dst_port = (id % 50_000) as u16 + 10_000;
            c.deadline_ms = deadline;
            c
        };
        let clock = std::sync::atomic::AtomicU64::new(0);
        let done = std::sync::atomic::AtomicBool::new(false);
        let finished = std::sync::atomic::AtomicU32::new(0);
        let expired_meanwhile = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for w in 0..3u32 {
                let (table, clock, finished, expired_meanwhile) =
                    (&table, &clock, &finished, &expired_meanwhile);
                s.spawn(move || {
                    for i in 0..4000 {
                        if i == 2000 {
                            // Halfway, until the expirer has expired something
                            // (bounded): expiry interleaves with the inserts
                            // however the threads are scheduled.
                            let until =
                                std::time::Instant::now() + std::time::Duration::from_secs(10);
                            while expired_meanwhile.load(Ordering::Relaxed) == 0
                                && std::time::Instant::now() < until
                            {
                                std::thread::yield_now();
                            }
                        }
                        let id = w * 100_000 + i;
                        let now = clock.load(Ordering::Relaxed);
                        let mut g = table.guard();
                        let _ = g.insert(
                            &natted(id, now + u64::from(i % 7) * 300),
                            Clash::Both,
                            false,
                            &mut Eviction::default(),
                        );
                        if i % 5 == 0 {
                            let t = tuple(id.saturating_sub(3));
                            if let Some((r, _)) = g.lookup(table.key(&t), &t) {
                                g.remove(r);
                            }
                        }
                    }
                    finished.fetch_add(1, Ordering::Relaxed);
                });
            }
            let (table, clock, done, expired_meanwhile) =
                (&table, &clock, &done, &expired_meanwhile);
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let now = clock.fetch_add(50, Ordering::Relaxed) + 50;
                    for st in 0..table.stripe_count() {
                        table.expire(st, now, 64, |_| {
                            expired_meanwhile.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                }
            });
            // The expirer runs beside the inserters until they are done.
            while finished.load(Ordering::Relaxed) < 3 {
                std::thread::yield_now();
            }
            done.store(true, Ordering::Relaxed);
        });
        table.check_wheels().unwrap();
        assert!(
            expired_meanwhile.load(Ordering::Relaxed) > 0,
            "expiry ran beside the inserts"
        );
        // Everything is due by now: a last call empties the table.
        let now = clock.load(Ordering::Relaxed) + 10_000;
        for st in 0..table.stripe_count() {
            table.expire(st, now, usize::MAX, |_| {});
        }
        assert_eq!(table.len(), 0);
        table.check_wheels().unwrap();
    }

    #[test]
    fn remove_then_reinsert_and_gc() {
        let table = Table::new(1000, 4, 3);
        for i in 0..500 {
            insert(&table, conn(i)).unwrap();
        }
        for i in 0..250 {
            let t = tuple(i);
            let mut g = table.guard();
            let (r, _) = g.lookup(table.key(&t), &t).unwrap();
            let c = g.remove(r).unwrap();
            assert!(c.status.has(Status::DYING));
            assert!(g.lookup(table.key(&t), &t).is_none());
        }
        assert_eq!(table.len(), 250);
        let mut reclaimed = 0;
        for s in 0..table.stripe_count() {
            table.expire(s, 999, usize::MAX, |_| reclaimed += 1);
        }
        assert_eq!(reclaimed, 0);
        for s in 0..table.stripe_count() {
            table.expire(s, 1000, usize::MAX, |_| reclaimed += 1);
        }
        assert_eq!(reclaimed, 250);
        assert!(table.is_empty());
        for i in 0..500 {
            insert(&table, conn(i)).unwrap();
        }
        assert_eq!(table.len(), 500);
    }

    thread_local! {
        static PREFETCHED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Records the addresses the table asks to prefetch.
    struct Recorder;

    impl Prefetch for Recorder {
        fn read(p: *const u8) {
            PREFETCHED.with(|v| v.borrow_mut().push(p as usize));
        }
    }

    #[test]
    fn a_full_stripes_eviction_is_prefetched_where_it_then_writes() {
        // Records over EVICTION_PREFETCH_BYTES: evictions are prefetched.
        let cap = 25_000;
        let table = Table::new(cap, 1, 5);
        for i in 0..cap {
            insert(&table, conn(i)).unwrap();
        }
        let mut predicted = 0;
        for j in 0..200 {
            let c = conn(40_000 + j);
            let key = table.key(&c.tuples[0]);
            PREFETCHED.with(|v| v.borrow_mut().clear());
            let mut g = table.guard();
            let n = g.stripe(0).buckets.len();
            let overflowed = g.stripe(0).buckets[key.bucket(n)].overflow != 0;
            let probe = g.prefetch_records::<Recorder>(key);
            if overflowed {
                // A bucket whose entries went on to the next one: the packet
                // may be a known connection's, so nothing is loaded ahead.
                assert_eq!(probe, Probe::Known(None));
                g.insert(&c, Clash::Both, true, &mut Eviction::default())
                    .unwrap();
                continue;
            }
            assert_eq!(
                probe,
                Probe::NewFar { evicts: true },
                "a new connection in a full stripe evicts"
            );
            g.prefetch_new::<Recorder>(key, true, true);
            g.prefetch_eviction::<Recorder>(key);
            // What the removal will write: the record, its wheel neighbours
            // and the bucket of its other direction.
            let s = g.stripe(0);
            let Some((victim, dir)) = first_homed(&s.buckets[key.bucket(s.buckets.len())], 0)
            else {
                // An empty home bucket (a few percent): early drop looks
                // further, unprefetched.
                g.insert(&c, Clash::Both, true, &mut Eviction::default())
                    .unwrap();
                continue;
            };
            predicted += 1;
            let link = s.records.cold[victim.local as usize].link;
            let mut want = vec![
                s.records.hot_addr(victim.local).unwrap() as usize,
                s.records.cold_addr(victim.local).unwrap() as usize,
            ];
            for nb in [link.prev(), link.next()] {
                if nb != wheel::NIL {
                    want.push(s.records.cold_addr(nb).unwrap() as usize);
                }
            }
            let other = table.key(&s.records.tuple(victim.local, dir.other()));
            want.push(&s.buckets[other.bucket(s.buckets.len())] as *const Bucket as usize);
            let victim_tuple = s.records.tuple(victim.local, Dir::Orig);
            let got = PREFETCHED.with(|v| v.borrow().clone());
            for w in want {
                assert!(got.contains(&w), "{w:#x} not prefetched: {got:x?}");
            }
            // ... and it is the connection the insert then evicts.
            let mut evicted = Eviction::with_snapshot();
            g.insert(&c, Clash::Both, true, &mut evicted).unwrap();
            assert_eq!(evicted.dead.unwrap().tuples[0], victim_tuple);
        }
        assert_eq!(table.len(), cap);
        assert!(predicted > 140, "{predicted} of 200 evictions prefetched");
        // A stripe that fits in the caches does not prefetch its evictions.
        let small = Table::new(1000, 1, 5);
        for i in 0..1000 {
            insert(&small, conn(i)).unwrap();
        }
        let mut g = small.guard();
        let n = g.stripe(0).buckets.len();
        let key = (5000..)
            .map(|i| small.key(&conn(i).tuples[0]))
            .find(|k| g.stripe(0).buckets[k.bucket(n)].overflow == 0)
            .unwrap();
        assert_eq!(g.prefetch_records::<Recorder>(key), Probe::New);
    }

    #[test]
    fn a_quiet_eviction_leaves_nothing_of_the_old_connection_behind() {
        let table = Table::new(1, 1, 9);
        let old = Conn {
            verdicts: [5, 6],
            mark: 7,
            ..conn(1)
        };
        insert(&table, old).unwrap();
        let mut ev = Eviction::default();
        let (r, _) = table
            .guard()
            .insert(&conn(2), Clash::Both, true, &mut ev)
            .unwrap();
        assert!(ev.evicted && ev.dead.is_none());
        assert_eq!(table.len(), 1);
        // The slot is reused; the new connection is exactly what was inserted.
        let (got, _) = find(&table, &conn(2).tuples[0]).expect("inserted");
        assert_eq!(r.local, 0);
        assert_eq!(got.verdicts, [0, 0]);
        assert_eq!(got.mark, 0);
        assert_eq!(got.tuples, conn(2).tuples);
        assert!(find(&table, &old.tuples[0]).is_none());
        assert!(find(&table, &old.tuples[1]).is_none());
    }

    #[test]
    fn early_drop_prefers_unassured() {
        let table = Table::new(2, 1, 9);
        let mut c = conn(1);
        c.status.set(Status::ASSURED);
        insert(&table, c).unwrap();
        let mut c2 = conn(2);
        c2.status.set(Status::ASSURED);
        insert(&table, c2).unwrap();
        assert!(matches!(
            table
                .guard()
                .insert(&conn(3), Clash::Both, true, &mut Eviction::default()),
            Err(InsertError::Full)
        ));
        {
            let mut g = table.guard();
            let (r, _) = g.lookup(table.key(&c2.tuples[0]), &c2.tuples[0]).unwrap();
            g.update(r, |c| c.status.clear(Status::ASSURED));
        }
        let mut evicted = Eviction::with_snapshot();
        table
            .guard()
            .insert(&conn(3), Clash::Both, true, &mut evicted)
            .unwrap();
        assert!(evicted.evicted);
        assert_eq!(evicted.dead.unwrap().tuples[0], c2.tuples[0]);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn nat_reply_in_another_stripe_is_found_and_unlinked() {
        let table = Table::new(64 * 256, 8, 11);
        assert!(table.stripe_count() > 1);
        let t = tuple(5);
        let mut found_remote = false;
        for port in 1024..2048u16 {
            let reply = Tuple {
                src: t.dst,
                dst: Addr::from_v4([203, 0, 113, 1]),
                src_port: t.dst_port,
                dst_port: port,
                ..t
            };
            if table.key(&reply).stripe == table.key(&t).stripe {
                continue;
            }
            found_remote = true;
            insert(
                &table,
                Conn {
                    tuples: [t, reply],
                    deadline_ms: 10,
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(table.contains(&reply) && table.contains(&t));
            assert_eq!(
                insert(
                    &table,
                    Conn {
                        tuples: [tuple(6), reply],
                        ..Default::default()
                    }
                ),
                Err(InsertError::Clash)
            );
            let mut g = table.guard();
            let (r, dir) = g.lookup(table.key(&reply), &reply).unwrap();
            assert_eq!(dir, Dir::Reply);
            g.remove(r).unwrap();
            drop(g);
            assert!(!table.contains(&reply) && !table.contains(&t));
            assert!(table.is_empty());
            break;
        }
        assert!(found_remote);
    }

    #[test]
    fn concurrent_guards_keep_the_table_consistent() {
        // Four threads insert and remove across eight stripes, so guards
        // take stripes out of order and must back off instead of deadlocking.
        let table = Table::new(20_000, 8, 13);
        std::thread::scope(|s| {
            for w in 0..4u32 {
                let table = &table;
                s.spawn(move || {
                    for round in 0..3 {
                        for i in 0..2000 {
                            let id = w * 100_000 + i;
                            let mut g = table.guard();
                            // Hold a high stripe first, then insert anywhere.
                            g.stripe((w + round) % 8);
                            let _ =
                                g.insert(&conn(id), Clash::Both, false, &mut Eviction::default());
                            if (i + round) % 3 == 0 {
                                let t = tuple(id);
                                if let Some((r, _)) = g.lookup(table.key(&t), &t) {
                                    g.remove(r);
                                }
                            }
                        }
                    }
                });
            }
        });
        table.check_wheels().unwrap();
        let mut live = Vec::new();
        for s in 0..table.stripe_count() {
            table.for_each(s, |_, c| live.push(c.tuples));
        }
        assert_eq!(live.len() as u32, table.len());
        for t in &live {
            assert!(table.contains(&t[0]) && table.contains(&t[1]));
        }
        // Each tuple once: no insert was split by a back-off.
        let mut seen = std::collections::HashSet::new();
        for t in &live {
            assert!(seen.insert(t[0]) && seen.insert(t[1]), "{t:?} twice");
        }
    }
}
