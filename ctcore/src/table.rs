//! The connection table: fixed capacity, memory reserved at start.
//!
//! Layout (the kernel's hash of `tuplehash[2]`, arranged for DPDK-style bursts):
//! - A power-of-two number of stripes, each owning a slab of connections
//!   (addressed by a `u32` index, one lock per connection, like the kernel's
//!   `ct->lock`) and an array of cache-line buckets. A bucket holds 7 slot words
//!   `sig << 32 | slot` (a 16-bit signature and `(stripe, index) << 1 | dir`)
//!   and an overflow count.
//! - Lookups read buckets without a lock (each word is atomic), so a burst can
//!   touch all its buckets first and overlap the cache misses, then lock each
//!   candidate connection and verify its tuple (like the kernel's RCU lookup
//!   then `nf_ct_key_equal`). A connection reused for another flow between the
//!   read and the lock fails that check.
//! - Changes to buckets and the free list take the stripe's allocation lock:
//!   inserts take the home and reply stripes in index order (the kernel's
//!   nf_conntrack_double_lock), never blocking on a connection lock meanwhile.
//! - A connection lives in the slab of its home stripe (its original tuple's);
//!   its reply entry lives in the reply tuple's stripe. The hash is symmetric,
//!   so un-NATed connections keep both in one stripe.
//! - Stripe, bucket and signature come from the seeded symmetric tuple hash, so
//!   crafted tuples cannot flood one bucket.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use crate::conn::{Conn, Status};
use crate::tuple::{Dir, Tuple};

/// Slot words per bucket; the eighth word counts overflow.
const SLOTS: usize = 7;
const OVERFLOW: usize = 7;
/// Bits of a slab index within a stripe.
const LOCAL_BITS: u32 = 25;
const MAX_STRIPES: u32 = 64;
/// Buckets probed past the home bucket when it is full.
const MAX_PROBE: usize = 4;
/// Buckets early drop looks at (the kernel's NF_CT_EVICTION_RANGE).
const EVICTION_RANGE: usize = 8;

#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Bucket {
    w: [AtomicU64; 8],
}

/// Where a tuple lives: its stripe and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The symmetric tuple hash (stripe and signature).
    pub hash: u64,
    pub stripe: u32,
    /// Which endpoint comes first: the two directions of a connection hash
    /// alike but go to different buckets, so a bucket holds up to 7
    /// connections rather than 3 pairs.
    pub flip: bool,
}

impl Key {
    #[inline]
    fn bucket(&self, mask: usize) -> usize {
        // The flipped direction remixes the hash (a multiply spreads every
        // bit into the high half) so that its bucket is independent.
        let h = if self.flip {
            (self.hash ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32
        } else {
            self.hash
        };
        (h as usize) & mask
    }

    fn sig(&self) -> u64 {
        match (self.hash >> 48) as u16 {
            0 => 1,
            s => s as u64,
        }
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

struct Alloc {
    free: Vec<u32>,
    gc_cursor: u32,
}

struct Stripe {
    buckets: Box<[Bucket]>,
    bucket_mask: usize,
    conns: Box<[Mutex<Conn>]>,
    alloc: Mutex<Alloc>,
}

/// The connection table, shared by all workers and the control thread.
pub struct Table {
    stripes: Box<[CachePadded<Stripe>]>,
    stripe_mask: u32,
    seed: u64,
    capacity: u32,
    count: CachePadded<AtomicU32>,
    next_id: CachePadded<AtomicU32>,
}

/// A connection's index within its stripe.
pub type Local = u32;

/// A live connection found in the table, locked.
pub struct Found<'a> {
    table: &'a Table,
    guard: MutexGuard<'a, Conn>,
    stripe: u32,
    local: Local,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding a lock leaves the data as it was
    // between two complete operations: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn slot_parts(word: u64) -> (u32, Local, Dir) {
    let slot = word as u32;
    let gid = slot >> 1;
    let dir = if slot & 1 == 0 { Dir::Orig } else { Dir::Reply };
    (gid >> LOCAL_BITS, gid & ((1 << LOCAL_BITS) - 1), dir)
}

fn live(c: &Conn) -> bool {
    c.status.has(Status::CONFIRMED) && !c.status.has(Status::DYING)
}

impl Table {
    /// A table for `capacity_conns` connections (like nf_conntrack_max), with all
    /// memory reserved now. `seed` keys the hash (use a random one).
    pub fn new(capacity_conns: u32, seed: u64) -> Table {
        let capacity = capacity_conns.max(1);
        let nstripes = (capacity / 256).clamp(1, MAX_STRIPES).next_power_of_two();
        let per = capacity / nstripes;
        // Slack for uneven stripes: 25% plus a little for small stripes.
        let per_cap = (per + per / 4 + 16).min(1 << LOCAL_BITS);
        // Two entries per connection, 7 per bucket, load <= ~57%.
        let nbuckets = (per_cap as usize * 2 / 4).next_power_of_two().max(2);
        let stripes = (0..nstripes)
            .map(|_| {
                CachePadded::new(Stripe {
                    buckets: (0..nbuckets).map(|_| Bucket::default()).collect(),
                    bucket_mask: nbuckets - 1,
                    conns: (0..per_cap).map(|_| Mutex::new(Conn::default())).collect(),
                    alloc: Mutex::new(Alloc {
                        free: (0..per_cap).rev().collect(),
                        gc_cursor: 0,
                    }),
                })
            })
            .collect();
        Table {
            stripes,
            stripe_mask: nstripes - 1,
            seed,
            capacity,
            count: CachePadded::new(AtomicU32::new(0)),
            next_id: CachePadded::new(AtomicU32::new(1)),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
    /// Connections in the table now (expired ones until they are reclaimed).
    pub fn len(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn stripe_count(&self) -> u32 {
        self.stripe_mask + 1
    }
    /// Bytes of memory reserved per connection of capacity (slab, buckets, free list).
    pub fn bytes_per_conn(&self) -> usize {
        let per_stripe: usize = self
            .stripes
            .iter()
            .map(|s| {
                s.conns.len() * (std::mem::size_of::<Mutex<Conn>>() + 4)
                    + s.buckets.len() * std::mem::size_of::<Bucket>()
            })
            .sum();
        per_stripe / self.capacity as usize
    }

    pub fn key(&self, t: &Tuple) -> Key {
        let hash = t.hash(self.seed);
        let flip = if t.is_icmp() {
            t.src > t.dst
        } else {
            (t.src, t.src_port) > (t.dst, t.dst_port)
        };
        Key {
            hash,
            stripe: ((hash >> 32) as u32 >> 8) & self.stripe_mask,
            flip,
        }
    }

    /// Reads the bucket `key` maps to, so that a later lookup finds it in cache:
    /// a burst touches all its buckets first and the misses overlap.
    #[inline]
    pub fn touch(&self, key: Key) {
        let s = &self.stripes[key.stripe as usize];
        let b = &s.buckets[key.bucket(s.bucket_mask)];
        std::hint::black_box(b.w[0].load(Ordering::Relaxed));
    }

    /// Reads the first candidate connection for `key`'s signature (its lock
    /// word and first line), for the same reason as `touch`.
    #[inline]
    pub fn touch_conn(&self, key: Key) {
        let s = &self.stripes[key.stripe as usize];
        let b = &s.buckets[key.bucket(s.bucket_mask)];
        let sig = key.sig();
        for w in &b.w[..SLOTS] {
            let v = w.load(Ordering::Relaxed);
            if v >> 32 == sig {
                let (stripe, local, _) = slot_parts(v);
                if let Some(c) = self
                    .stripes
                    .get(stripe as usize)
                    .and_then(|s| s.conns.get(local as usize))
                {
                    std::hint::black_box(c.is_poisoned());
                }
                return;
            }
        }
    }

    /// Calls `f` on the slab entry of every slot whose signature matches
    /// `key`, along its bucket chain, until `f` returns Some.
    fn candidates<'a, R>(
        &'a self,
        key: Key,
        mut f: impl FnMut(u32, Local, Dir, &'a Mutex<Conn>) -> Option<R>,
    ) -> Option<R> {
        let s = &self.stripes[key.stripe as usize];
        let sig = key.sig();
        let mut b = key.bucket(s.bucket_mask);
        for _ in 0..=MAX_PROBE {
            let bucket = &s.buckets[b];
            for w in &bucket.w[..SLOTS] {
                let v = w.load(Ordering::Acquire);
                if v >> 32 != sig {
                    continue;
                }
                let (stripe, local, dir) = slot_parts(v);
                if let Some(m) = self
                    .stripes
                    .get(stripe as usize)
                    .and_then(|s| s.conns.get(local as usize))
                {
                    if let Some(r) = f(stripe, local, dir, m) {
                        return Some(r);
                    }
                }
            }
            if bucket.w[OVERFLOW].load(Ordering::Acquire) == 0 {
                return None;
            }
            b = (b + 1) & s.bucket_mask;
        }
        None
    }

    /// Finds the live connection holding `t` (in either direction) and locks it.
    /// Expired connections are found too: the caller decides.
    pub fn lookup(&self, key: Key, t: &Tuple) -> Option<(Found<'_>, Dir)> {
        self.candidates(key, |stripe, local, dir, m| {
            let guard = lock(m);
            (live(&guard) && guard.tuples[dir.index()] == *t).then(|| {
                (
                    Found {
                        table: self,
                        guard,
                        stripe,
                        local,
                    },
                    dir,
                )
            })
        })
    }

    /// Is `t` in the table, in either direction?
    pub fn contains(&self, t: &Tuple) -> bool {
        self.lookup(self.key(t), t).is_some()
    }

    /// nf_conntrack_tuple_taken: is `t` held by a live connection? An expired
    /// holder is removed on the spot (and returned, for its DESTROY event).
    pub fn taken(&self, t: &Tuple, now_ms: u64) -> (bool, Option<Conn>) {
        match self.lookup(self.key(t), t) {
            None => (false, None),
            Some((f, _)) if f.conn().is_expired(now_ms) => (false, f.remove()),
            Some(_) => (true, None),
        }
    }

    /// Locks slab entry `local` of `stripe` if it holds live connection `id`.
    pub fn get(&self, stripe: u32, local: Local, id: u32) -> Option<Found<'_>> {
        let m = self
            .stripes
            .get(stripe as usize)?
            .conns
            .get(local as usize)?;
        let guard = lock(m);
        (live(&guard) && guard.id == id).then_some(Found {
            table: self,
            guard,
            stripe,
            local,
        })
    }

    /// Confirms a connection: inserts both directions. Fails on a clash (either
    /// tuple present, or a candidate busy: treated as present) or when the table
    /// is full and `early_drop` found nothing to evict. Returns where it went, a
    /// copy as inserted (CONFIRMED, with its id), and the evicted connection.
    pub fn insert(
        &self,
        mut conn: Conn,
        early_drop: bool,
    ) -> Result<(u32, Local, Conn, Option<Conn>), InsertError> {
        let keys = [self.key(&conn.tuples[0]), self.key(&conn.tuples[1])];
        let (hs, rs) = (keys[0].stripe, keys[1].stripe);
        let evicted = if self.count.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.count.fetch_sub(1, Ordering::Relaxed);
            let victim = if early_drop {
                self.early_drop_candidate(keys[0])
            } else {
                None
            };
            let Some(v) = victim else {
                return Err(InsertError::Full);
            };
            self.count.fetch_add(1, Ordering::Relaxed);
            Some(v)
        } else {
            None
        };
        let home = &self.stripes[hs as usize];
        let (mut ha, mut ra) = if hs == rs {
            (lock(&home.alloc), None)
        } else if hs < rs {
            let h = lock(&home.alloc);
            (h, Some(lock(&self.stripes[rs as usize].alloc)))
        } else {
            let r = lock(&self.stripes[rs as usize].alloc);
            (lock(&home.alloc), Some(r))
        };
        let undo = |evicted: Option<Conn>| {
            self.count.fetch_sub(1, Ordering::Relaxed);
            let _ = evicted;
        };
        for (d, key) in keys.iter().enumerate() {
            if self.taken_while_allocating(*key, &conn.tuples[d]) {
                undo(evicted);
                return Err(InsertError::Clash);
            }
        }
        let Some(local) = ha.free.pop() else {
            undo(evicted);
            return Err(InsertError::Full);
        };
        let gid = (hs << LOCAL_BITS) | local;
        let _ = &mut ra;
        if !self.place(keys[0], gid << 1) {
            ha.free.push(local);
            undo(evicted);
            return Err(InsertError::Full);
        }
        if !self.place(keys[1], (gid << 1) | 1) {
            self.unplace(keys[0], gid << 1);
            ha.free.push(local);
            undo(evicted);
            return Err(InsertError::Full);
        }
        conn.status.set(Status::CONFIRMED);
        conn.status.clear(Status::DYING);
        conn.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The slot is free: only a stale lookup may hold its lock, briefly.
        *lock(&home.conns[local as usize]) = conn;
        Ok((hs, local, conn, evicted))
    }

    /// A clash check under allocation locks: connection locks are only tried,
    /// a busy one counts as a clash (rare: the same tuple racing on two workers).
    fn taken_while_allocating(&self, key: Key, t: &Tuple) -> bool {
        self.candidates(key, |_, _, dir, m| {
            let holds = |c: &Conn| live(c) && c.tuples[dir.index()] == *t;
            match m.try_lock() {
                Ok(c) => holds(&c).then_some(()),
                Err(std::sync::TryLockError::Poisoned(e)) => holds(&e.into_inner()).then_some(()),
                Err(std::sync::TryLockError::WouldBlock) => Some(()),
            }
        })
        .is_some()
    }

    /// Puts a slot word in `key`'s bucket chain. Caller holds the stripe's alloc lock.
    fn place(&self, key: Key, slot: u32) -> bool {
        let s = &self.stripes[key.stripe as usize];
        let home = key.bucket(s.bucket_mask);
        let mut b = home;
        for probe in 0..=MAX_PROBE {
            if let Some(w) = s.buckets[b].w[..SLOTS]
                .iter()
                .find(|w| w.load(Ordering::Relaxed) == 0)
            {
                // Mark the buckets passed over first, so lookups keep probing.
                let mut m = home;
                for _ in 0..probe {
                    s.buckets[m].w[OVERFLOW].fetch_add(1, Ordering::Release);
                    m = (m + 1) & s.bucket_mask;
                }
                w.store((key.sig() << 32) | slot as u64, Ordering::Release);
                return true;
            }
            b = (b + 1) & s.bucket_mask;
        }
        false
    }

    /// Removes a slot word. Caller holds the stripe's alloc lock.
    fn unplace(&self, key: Key, slot: u32) {
        let s = &self.stripes[key.stripe as usize];
        let home = key.bucket(s.bucket_mask);
        let word = (key.sig() << 32) | slot as u64;
        let mut b = home;
        for probe in 0..=MAX_PROBE {
            if let Some(w) = s.buckets[b].w[..SLOTS]
                .iter()
                .find(|w| w.load(Ordering::Relaxed) == word)
            {
                w.store(0, Ordering::Release);
                let mut m = home;
                for _ in 0..probe {
                    let o = &s.buckets[m].w[OVERFLOW];
                    if o.load(Ordering::Relaxed) > 0 {
                        o.fetch_sub(1, Ordering::Release);
                    }
                    m = (m + 1) & s.bucket_mask;
                }
                return;
            }
            b = (b + 1) & s.bucket_mask;
        }
    }

    /// Unlinks a connection (already taken out of its slab entry) and frees the
    /// entry. Takes the stripes' alloc locks in index order; holds no other.
    fn unlink(&self, stripe: u32, local: Local, c: &Conn) {
        let keys = [self.key(&c.tuples[0]), self.key(&c.tuples[1])];
        let rs = keys[1].stripe;
        let gid = (stripe << LOCAL_BITS) | local;
        let home = &self.stripes[stripe as usize];
        let (mut ha, _ra) = if rs == stripe {
            (lock(&home.alloc), None)
        } else if stripe < rs {
            let h = lock(&home.alloc);
            (h, Some(lock(&self.stripes[rs as usize].alloc)))
        } else {
            let r = lock(&self.stripes[rs as usize].alloc);
            (lock(&home.alloc), Some(r))
        };
        self.unplace(keys[0], gid << 1);
        self.unplace(keys[1], (gid << 1) | 1);
        ha.free.push(local);
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// The kernel's early_drop: evicts a connection near `key` that is not
    /// ASSURED (or a closing TCP one). Returns it.
    fn early_drop_candidate(&self, key: Key) -> Option<Conn> {
        let s = &self.stripes[key.stripe as usize];
        let mut b = key.bucket(s.bucket_mask);
        for _ in 0..EVICTION_RANGE {
            for w in &s.buckets[b].w[..SLOTS] {
                let v = w.load(Ordering::Acquire);
                if v == 0 {
                    continue;
                }
                let (stripe, local, _) = slot_parts(v);
                if let Some(f) = self.get_any(stripe, local) {
                    if early_droppable(f.conn()) {
                        return f.remove();
                    }
                }
            }
            b = (b + 1) & s.bucket_mask;
        }
        // The buckets around `key` hold only assured connections: look through
        // the stripe's slab from its GC cursor.
        let start = lock(&s.alloc).gc_cursor as usize;
        let n = s.conns.len();
        for i in 0..n.min(64) {
            let local = ((start + i) % n) as Local;
            if let Some(f) = self.get_any(key.stripe, local) {
                if early_droppable(f.conn()) {
                    return f.remove();
                }
            }
        }
        None
    }

    /// Locks slab entry `local` of `stripe` if it holds a live connection.
    fn get_any(&self, stripe: u32, local: Local) -> Option<Found<'_>> {
        let m = self
            .stripes
            .get(stripe as usize)?
            .conns
            .get(local as usize)?;
        let guard = m.try_lock().ok()?;
        live(&guard).then_some(Found {
            table: self,
            guard,
            stripe,
            local,
        })
    }

    /// Visits up to `budget` slab entries of `stripe` from its GC cursor,
    /// removing the connections past their deadline (each handed to `expired`).
    /// Returns the number of entries visited.
    pub fn gc_step(
        &self,
        stripe: u32,
        now_ms: u64,
        budget: usize,
        mut expired: impl FnMut(Conn),
    ) -> usize {
        let s = &self.stripes[stripe as usize];
        let n = s.conns.len();
        let visit = budget.min(n);
        let start = {
            let mut a = lock(&s.alloc);
            let start = a.gc_cursor as usize;
            a.gc_cursor = ((start + visit) % n) as u32;
            start
        };
        for i in 0..visit {
            let local = ((start + i) % n) as Local;
            let guard = lock(&s.conns[local as usize]);
            if live(&guard) && guard.is_expired(now_ms) {
                if let Some(c) = (Found {
                    table: self,
                    guard,
                    stripe,
                    local,
                })
                .remove()
                {
                    expired(c);
                }
            }
        }
        visit
    }

    /// Calls `f` on every live connection of `stripe`, one lock at a time.
    pub fn for_each(&self, stripe: u32, mut f: impl FnMut(Local, &Conn)) {
        for (i, m) in self.stripes[stripe as usize].conns.iter().enumerate() {
            let c = lock(m);
            if live(&c) {
                f(i as Local, &c);
            }
        }
    }

    /// Removes the connection at (`stripe`, `local`) if it still has `id`.
    pub fn remove_id(&self, stripe: u32, local: Local, id: u32) -> Option<Conn> {
        self.get(stripe, local, id)?.remove()
    }
}

impl Found<'_> {
    pub fn stripe(&self) -> u32 {
        self.stripe
    }
    pub fn local(&self) -> Local {
        self.local
    }
    pub fn conn(&self) -> &Conn {
        &self.guard
    }
    pub fn conn_mut(&mut self) -> &mut Conn {
        &mut self.guard
    }

    /// Takes the connection out of the table (DYING set) and returns it for
    /// its DESTROY event; None if it was already gone.
    pub fn remove(mut self) -> Option<Conn> {
        if !live(&self.guard) {
            return None;
        }
        let mut c = std::mem::take(&mut *self.guard);
        drop(self.guard);
        self.table.unlink(self.stripe, self.local, &c);
        c.status.set(Status::DYING);
        Some(c)
    }
}

fn early_droppable(c: &Conn) -> bool {
    use crate::conn::ProtoState;
    use crate::proto::tcp::TcpConntrack;
    if !live(c) {
        return false;
    }
    if !c.status.has(Status::ASSURED) {
        return true;
    }
    // tcp_can_early_drop: closing states may go even when assured.
    matches!(
        c.proto,
        ProtoState::Tcp(t) if matches!(t.state, TcpConntrack::FinWait | TcpConntrack::LastAck | TcpConntrack::TimeWait | TcpConntrack::Close | TcpConntrack::CloseWait)
    )
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
        table.insert(c, false).map(|(_, l, _, _)| l)
    }

    #[test]
    fn both_directions_are_found() {
        let table = Table::new(10_000, 42);
        for i in 0..5000 {
            insert(&table, conn(i)).unwrap();
        }
        assert_eq!(table.len(), 5000);
        for i in 0..5000 {
            let c = conn(i);
            for (d, t) in c.tuples.iter().enumerate() {
                let (f, dir) = table.lookup(table.key(t), t).expect("found");
                assert_eq!(dir.index(), d);
                assert_eq!(f.conn().tuples[0], c.tuples[0]);
            }
        }
    }

    #[test]
    fn clash_and_capacity() {
        let table = Table::new(100, 7);
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

    #[test]
    fn remove_then_reinsert_and_gc() {
        let table = Table::new(1000, 3);
        for i in 0..500 {
            insert(&table, conn(i)).unwrap();
        }
        for i in 0..250 {
            let t = tuple(i);
            let (f, _) = table.lookup(table.key(&t), &t).unwrap();
            let c = f.remove().unwrap();
            assert!(c.status.has(Status::DYING));
            assert!(table.lookup(table.key(&t), &t).is_none());
        }
        assert_eq!(table.len(), 250);
        let mut reclaimed = 0;
        for s in 0..table.stripe_count() {
            table.gc_step(s, 999, usize::MAX, |_| reclaimed += 1);
        }
        assert_eq!(reclaimed, 0);
        for s in 0..table.stripe_count() {
            table.gc_step(s, 1000, usize::MAX, |_| reclaimed += 1);
        }
        assert_eq!(reclaimed, 250);
        assert!(table.is_empty());
        for i in 0..500 {
            insert(&table, conn(i)).unwrap();
        }
        assert_eq!(table.len(), 500);
    }

    #[test]
    fn early_drop_prefers_unassured() {
        let table = Table::new(2, 9);
        let mut c = conn(1);
        c.status.set(Status::ASSURED);
        insert(&table, c).unwrap();
        let mut c2 = conn(2);
        c2.status.set(Status::ASSURED);
        insert(&table, c2).unwrap();
        assert!(matches!(
            table.insert(conn(3), true),
            Err(InsertError::Full)
        ));
        let (mut f, _) = table
            .lookup(table.key(&c2.tuples[0]), &c2.tuples[0])
            .unwrap();
        f.conn_mut().status.clear(Status::ASSURED);
        drop(f);
        let (_, _, _, evicted) = table.insert(conn(3), true).unwrap();
        assert_eq!(evicted.unwrap().tuples[0], c2.tuples[0]);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn nat_reply_in_another_stripe_is_found_and_unlinked() {
        let table = Table::new(64 * 256, 11);
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
            let (f, dir) = table.lookup(table.key(&reply), &reply).unwrap();
            assert_eq!(dir, Dir::Reply);
            f.remove().unwrap();
            assert!(!table.contains(&reply) && !table.contains(&t));
            assert!(table.is_empty());
            break;
        }
        assert!(found_remote);
    }

    #[test]
    fn concurrent_workers_keep_the_table_consistent() {
        let table = Table::new(20_000, 13);
        std::thread::scope(|s| {
            for w in 0..4u32 {
                let table = &table;
                s.spawn(move || {
                    for round in 0..3 {
                        for i in 0..2000 {
                            let id = w * 100_000 + i;
                            let _ = insert(table, conn(id));
                            if (i + round) % 3 == 0 {
                                let t = tuple(id);
                                if let Some((f, _)) = table.lookup(table.key(&t), &t) {
                                    f.remove();
                                }
                            }
                        }
                    }
                });
            }
        });
        let mut live = Vec::new();
        for s in 0..table.stripe_count() {
            table.for_each(s, |_, c| live.push(c.tuples));
        }
        assert_eq!(live.len() as u32, table.len());
        for t in &live {
            assert!(table.contains(&t[0]) && table.contains(&t[1]));
        }
    }
}
