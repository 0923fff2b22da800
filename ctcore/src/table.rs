//! The connection table: fixed capacity, memory reserved at start, lock stripes.
//!
//! Layout (like the kernel's hash of `tuplehash[2]`, arranged for DPDK-style speed):
//! - `stripes`: a power-of-two number of stripes, each behind its own lock, each
//!   owning a slab of connections (addressed by a `u32` index) and an array of
//!   cache-line buckets. A bucket holds 8 slots: a 16-bit signature and a slot word
//!   `(local index << 1) | dir`.
//! - A connection lives in the slab of its home stripe: the stripe of its original
//!   tuple. Its reply entry lives in the stripe of the reply tuple. The hash is
//!   symmetric, so for un-NATed connections both are the same stripe and one lock
//!   covers a packet's whole update. A NATed reply tuple may hash elsewhere: its
//!   slot then points into another stripe, and a lookup follows it by taking that
//!   stripe's lock (never two at once). Inserts take both stripes in index order
//!   (like the kernel's nf_conntrack_double_lock); removals never hold two: the
//!   remote reply entry is queued on its stripe and unlinked at that stripe's next
//!   lock.
//! - The stripe, bucket index and signature all come from the seeded symmetric
//!   tuple hash, so crafted tuples cannot flood one bucket.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use crate::conn::{Conn, Status};
use crate::tuple::{Dir, Tuple};

const SLOTS: usize = 8;
/// Bits of a slab index within a stripe; a slot word is `(stripe << LOCAL_BITS | local) << 1 | dir`.
const LOCAL_BITS: u32 = 25;
const MAX_STRIPES: u32 = 64;
const EMPTY_SIG: u16 = 0;
/// Buckets probed past the home bucket when it is full.
const MAX_PROBE: usize = 4;
/// Buckets early drop looks at (the kernel's NF_CT_EVICTION_RANGE).
const EVICTION_RANGE: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    sig: [u16; SLOTS],
    slot: [u32; SLOTS],
    /// Entries whose home is this bucket but which live in a later one.
    overflow: u16,
}

/// Where a tuple lives: its stripe and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub hash: u64,
    pub stripe: u32,
}

impl Key {
    fn sig(&self) -> u16 {
        match (self.hash >> 48) as u16 {
            EMPTY_SIG => 1,
            s => s,
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

/// Reply entries to unlink from a stripe, queued by removals in other stripes.
#[derive(Default)]
struct Unlink {
    pending: std::sync::atomic::AtomicBool,
    queue: Mutex<Vec<(Key, u32)>>,
}

struct Stripe {
    buckets: Box<[Bucket]>,
    bucket_mask: usize,
    conns: Box<[Conn]>,
    free: Vec<u32>,
    gc_cursor: u32,
}

/// The connection table, shared by all workers and the control thread.
pub struct Table {
    stripes: Box<[CachePadded<Mutex<Stripe>>]>,
    unlink: Box<[CachePadded<Unlink>]>,
    stripe_mask: u32,
    seed: u64,
    capacity: u32,
    count: CachePadded<AtomicU32>,
    next_id: CachePadded<AtomicU32>,
}

impl Table {
    /// A table for `capacity_conns` connections (like nf_conntrack_max), with all
    /// memory reserved now. `seed` keys the hash (use a random one).
    pub fn new(capacity_conns: u32, seed: u64) -> Table {
        let capacity = capacity_conns.max(1);
        // Enough stripes that workers and the control thread rarely meet.
        let nstripes = (capacity / 256).clamp(1, MAX_STRIPES).next_power_of_two();
        let per = capacity / nstripes;
        // Slack for uneven stripes: 25% plus a little for small stripes.
        let per_cap = (per + per / 4 + 16).min(1 << LOCAL_BITS);
        // Two entries per connection, buckets of 8, keep load <= 50%.
        let nbuckets = ((per_cap as usize * 2) / (SLOTS / 2))
            .next_power_of_two()
            .max(2);
        let stripes = (0..nstripes)
            .map(|_| {
                CachePadded::new(Mutex::new(Stripe {
                    buckets: vec![Bucket::default(); nbuckets].into_boxed_slice(),
                    bucket_mask: nbuckets - 1,
                    conns: vec![Conn::default(); per_cap as usize].into_boxed_slice(),
                    free: (0..per_cap).rev().collect(),
                    gc_cursor: 0,
                }))
            })
            .collect();
        Table {
            stripes,
            unlink: (0..nstripes)
                .map(|_| CachePadded::new(Unlink::default()))
                .collect(),
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
    /// Connections in the table now.
    pub fn len(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn stripe_count(&self) -> u32 {
        self.stripe_mask + 1
    }
    /// Bytes of memory reserved per connection of capacity (slab, buckets, stripes).
    pub fn bytes_per_conn(&self) -> usize {
        let s = self.stripes[0].lock().unwrap_or_else(|e| e.into_inner());
        let per_stripe = s.conns.len() * std::mem::size_of::<Conn>()
            + s.buckets.len() * std::mem::size_of::<Bucket>()
            + s.free.capacity() * 4
            + std::mem::size_of::<CachePadded<Mutex<Stripe>>>();
        per_stripe * self.stripes.len() / self.capacity as usize
    }

    pub fn key(&self, t: &Tuple) -> Key {
        let hash = t.hash(self.seed);
        Key {
            hash,
            stripe: ((hash >> 32) as u32 >> 8) & self.stripe_mask,
        }
    }

    /// Locks one stripe (first unlinking reply entries queued for it).
    pub fn lock(&self, stripe: u32) -> Locked<'_> {
        // A worker that panicked while holding the lock leaves the table as it
        // was between two complete operations: keep going.
        let guard = self.stripes[stripe as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut l = Locked {
            guard,
            stripe,
            table: self,
        };
        l.apply_unlinks();
        l
    }

    fn try_lock(&self, stripe: u32) -> Option<Locked<'_>> {
        let guard = match self.stripes[stripe as usize].try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let mut l = Locked {
            guard,
            stripe,
            table: self,
        };
        l.apply_unlinks();
        Some(l)
    }

    /// Finds the connection holding `t` and returns it with its home stripe
    /// locked. Expired connections are found too: the caller decides.
    pub fn lookup(&self, key: Key, t: &Tuple) -> Option<(Locked<'_>, Local, Dir)> {
        let l = self.lock(key.stripe);
        let mut remote = Remote::default();
        if let Some((local, dir)) = l.scan(key, t, &mut remote) {
            return Some((l, local, dir));
        }
        drop(l);
        for &(stripe, local, dir) in &remote.cands[..remote.n] {
            let h = self.lock(stripe);
            if h.holds(local, dir, t) {
                return Some((h, local, dir));
            }
        }
        None
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
            Some((mut l, local, _)) => {
                if l.conn(local).is_expired(now_ms) {
                    (false, Some(l.remove(local)))
                } else {
                    (true, None)
                }
            }
        }
    }

    /// Confirms a connection: inserts both directions, taking the home and reply
    /// stripes in index order. Fails on a clash (either tuple present) or when
    /// the table is full and `early_drop` found nothing to evict. Returns the
    /// home stripe locked, the new index, and the evicted connection if any.
    pub fn insert(
        &self,
        mut conn: Conn,
        early_drop: bool,
    ) -> Result<(Locked<'_>, Local, Option<Conn>), InsertError> {
        let keys = [self.key(&conn.tuples[0]), self.key(&conn.tuples[1])];
        let (hs, rs) = (keys[0].stripe, keys[1].stripe);
        let (mut home, mut other) = if hs == rs {
            (self.lock(hs), None)
        } else if hs < rs {
            let h = self.lock(hs);
            (h, Some(self.lock(rs)))
        } else {
            let o = self.lock(rs);
            (self.lock(hs), Some(o))
        };
        for (d, key) in keys.iter().enumerate() {
            let l = if key.stripe == hs {
                &home
            } else {
                other.as_ref().unwrap_or(&home)
            };
            if self.taken_locked(l, &home, other.as_ref(), *key, &conn.tuples[d]) {
                return Err(InsertError::Clash);
            }
        }
        let mut evicted = None;
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.capacity || home.guard.free.is_empty()
        {
            self.count.fetch_sub(1, Ordering::Relaxed);
            let victim = if early_drop {
                home.early_drop_candidate(keys[0])
            } else {
                None
            };
            let Some(victim) = victim else {
                return Err(InsertError::Full);
            };
            evicted = Some(home.remove_with(victim, other.as_mut()));
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        let Some(local) = home.guard.free.pop() else {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        };
        let gid = (hs << LOCAL_BITS) | local;
        let placed = Locked::place(&mut home.guard, keys[0], gid << 1)
            && match other.as_mut() {
                None => Locked::place(&mut home.guard, keys[1], (gid << 1) | 1),
                Some(o) => Locked::place(&mut o.guard, keys[1], (gid << 1) | 1),
            };
        if !placed {
            // A bucket chain overflowed: undo whatever was placed.
            Locked::unplace(&mut home.guard, keys[0], gid << 1);
            match other.as_mut() {
                None => Locked::unplace(&mut home.guard, keys[1], (gid << 1) | 1),
                Some(o) => Locked::unplace(&mut o.guard, keys[1], (gid << 1) | 1),
            }
            home.guard.free.push(local);
            self.count.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        }
        conn.status.set(Status::CONFIRMED);
        conn.id = self.alloc_id();
        home.guard.conns[local as usize] = conn;
        drop(other);
        Ok((home, local, evicted))
    }

    /// Is `t` present? Looks through stripes already held where candidates point
    /// into them; another stripe is only tried (a held stripe must not wait on
    /// it), and one that is busy counts as taken.
    fn taken_locked(
        &self,
        l: &Locked<'_>,
        home: &Locked<'_>,
        other: Option<&Locked<'_>>,
        key: Key,
        t: &Tuple,
    ) -> bool {
        let mut remote = Remote::default();
        if l.scan(key, t, &mut remote).is_some() {
            return true;
        }
        remote.cands[..remote.n].iter().any(|&(s, local, dir)| {
            if s == home.stripe {
                home.holds(local, dir, t)
            } else if let Some(o) = other.filter(|o| o.stripe == s) {
                o.holds(local, dir, t)
            } else {
                self.try_lock(s).is_none_or(|x| x.holds(local, dir, t))
            }
        })
    }

    fn alloc_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A locked stripe: every operation on connections goes through one.
pub struct Locked<'a> {
    guard: MutexGuard<'a, Stripe>,
    stripe: u32,
    table: &'a Table,
}

/// A connection's index within its stripe.
pub type Local = u32;

/// Signature matches whose connection lives in another stripe.
#[derive(Default)]
struct Remote {
    cands: [(u32, Local, Dir); 4],
    n: usize,
}

fn slot_parts(slot: u32) -> (u32, Local, Dir) {
    let gid = slot >> 1;
    let dir = if slot & 1 == 0 { Dir::Orig } else { Dir::Reply };
    (gid >> LOCAL_BITS, gid & ((1 << LOCAL_BITS) - 1), dir)
}

impl Locked<'_> {
    pub fn stripe(&self) -> u32 {
        self.stripe
    }

    fn apply_unlinks(&mut self) {
        let side = &self.table.unlink[self.stripe as usize];
        if side.pending.load(Ordering::Acquire) {
            let mut q = side.queue.lock().unwrap_or_else(|e| e.into_inner());
            for (key, slot) in q.drain(..) {
                Self::unplace(&mut self.guard, key, slot);
            }
            side.pending.store(false, Ordering::Release);
        }
    }

    /// Does slab entry `local` of this stripe hold `t` in direction `dir`?
    fn holds(&self, local: Local, dir: Dir, t: &Tuple) -> bool {
        let c = &self.guard.conns[local as usize];
        c.status.has(Status::CONFIRMED) && c.tuples[dir.index()] == *t
    }

    /// Looks for `t` among this stripe's buckets. Matches homed here are
    /// verified; signature matches homed elsewhere go to `remote`.
    fn scan(&self, key: Key, t: &Tuple, remote: &mut Remote) -> Option<(Local, Dir)> {
        debug_assert_eq!(key.stripe, self.stripe);
        let s = &*self.guard;
        let sig = key.sig();
        let mut b = (key.hash as usize) & s.bucket_mask;
        for _ in 0..=MAX_PROBE {
            let bucket = &s.buckets[b];
            for i in 0..SLOTS {
                if bucket.sig[i] == sig {
                    let (stripe, local, dir) = slot_parts(bucket.slot[i]);
                    if stripe != self.stripe {
                        if remote.n < remote.cands.len() {
                            remote.cands[remote.n] = (stripe, local, dir);
                            remote.n += 1;
                        }
                    } else if s.conns[local as usize].tuples[dir.index()] == *t {
                        return Some((local, dir));
                    }
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & s.bucket_mask;
        }
        None
    }

    pub fn conn(&self, local: Local) -> &Conn {
        &self.guard.conns[local as usize]
    }
    pub fn conn_mut(&mut self, local: Local) -> &mut Conn {
        &mut self.guard.conns[local as usize]
    }

    fn place(s: &mut Stripe, key: Key, slot: u32) -> bool {
        let home = (key.hash as usize) & s.bucket_mask;
        let mut b = home;
        for probe in 0..=MAX_PROBE {
            if let Some(i) = s.buckets[b].sig.iter().position(|&g| g == EMPTY_SIG) {
                s.buckets[b].sig[i] = key.sig();
                s.buckets[b].slot[i] = slot;
                // Mark every bucket passed over, so lookups keep probing.
                let mut m = home;
                for _ in 0..probe {
                    s.buckets[m].overflow += 1;
                    m = (m + 1) & s.bucket_mask;
                }
                return true;
            }
            b = (b + 1) & s.bucket_mask;
        }
        false
    }

    fn unplace(s: &mut Stripe, key: Key, slot: u32) {
        let home = (key.hash as usize) & s.bucket_mask;
        let mut b = home;
        for probe in 0..=MAX_PROBE {
            if let Some(i) = (0..SLOTS)
                .find(|&i| s.buckets[b].sig[i] != EMPTY_SIG && s.buckets[b].slot[i] == slot)
            {
                s.buckets[b].sig[i] = EMPTY_SIG;
                let mut m = home;
                for _ in 0..probe {
                    s.buckets[m].overflow = s.buckets[m].overflow.saturating_sub(1);
                    m = (m + 1) & s.bucket_mask;
                }
                return;
            }
            b = (b + 1) & s.bucket_mask;
        }
    }

    /// Removes a connection, returning it (with DYING set) for the DESTROY event.
    pub fn remove(&mut self, local: Local) -> Conn {
        self.remove_with(local, None)
    }

    /// Removes a connection; `other` is a second stripe the caller holds, where
    /// the reply entry may be unplaced directly.
    fn remove_with(&mut self, local: Local, other: Option<&mut Locked<'_>>) -> Conn {
        let keys = {
            let c = &self.guard.conns[local as usize];
            [self.table.key(&c.tuples[0]), self.table.key(&c.tuples[1])]
        };
        let gid = (self.stripe << LOCAL_BITS) | local;
        Self::unplace(&mut self.guard, keys[0], gid << 1);
        let reply_slot = (gid << 1) | 1;
        match other {
            _ if keys[1].stripe == self.stripe => {
                Self::unplace(&mut self.guard, keys[1], reply_slot)
            }
            Some(o) if o.stripe == keys[1].stripe => {
                Self::unplace(&mut o.guard, keys[1], reply_slot)
            }
            _ => {
                let side = &self.table.unlink[keys[1].stripe as usize];
                side.queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((keys[1], reply_slot));
                side.pending.store(true, Ordering::Release);
            }
        }
        let s = &mut *self.guard;
        let mut conn = std::mem::take(&mut s.conns[local as usize]);
        conn.status.set(Status::DYING);
        s.free.push(local);
        self.table.count.fetch_sub(1, Ordering::Relaxed);
        conn
    }

    /// The kernel's early_drop: a connection near `key` that may be evicted to
    /// make room — not ASSURED, or a TCP connection that is closing.
    fn early_drop_candidate(&self, key: Key) -> Option<Local> {
        let s = &*self.guard;
        let mut b = (key.hash as usize) & s.bucket_mask;
        for _ in 0..EVICTION_RANGE {
            for i in 0..SLOTS {
                if s.buckets[b].sig[i] != EMPTY_SIG {
                    let (stripe, local, _) = slot_parts(s.buckets[b].slot[i]);
                    if stripe == self.stripe && early_droppable(&s.conns[local as usize]) {
                        return Some(local);
                    }
                }
            }
            b = (b + 1) & s.bucket_mask;
        }
        // The stripe's slab may be full while its buckets around `key` hold only
        // assured connections: look through the slab from the GC cursor.
        let n = s.conns.len();
        (0..n.min(64))
            .map(|i| ((s.gc_cursor as usize + i) % n) as Local)
            .find(|&l| {
                s.conns[l as usize].status.has(Status::CONFIRMED)
                    && early_droppable(&s.conns[l as usize])
            })
    }

    /// Walks up to `budget` slab entries from this stripe's GC cursor, calling
    /// `expired` on each confirmed connection past its deadline after removing it.
    /// Returns the number of entries visited.
    pub fn gc_step(&mut self, now_ms: u64, budget: usize, mut expired: impl FnMut(Conn)) -> usize {
        let n = self.guard.conns.len();
        let visit = budget.min(n);
        for _ in 0..visit {
            let local = self.guard.gc_cursor;
            self.guard.gc_cursor = ((local as usize + 1) % n) as u32;
            let c = &self.guard.conns[local as usize];
            if c.status.has(Status::CONFIRMED) && c.is_expired(now_ms) {
                expired(self.remove(local));
            }
        }
        visit
    }

    /// Calls `f` on every connection of this stripe.
    pub fn for_each(&self, mut f: impl FnMut(Local, &Conn)) {
        for (i, c) in self.guard.conns.iter().enumerate() {
            if c.status.has(Status::CONFIRMED) {
                f(i as Local, c);
            }
        }
    }

    /// Connections in this stripe (for tests and stats).
    pub fn stripe_len(&self) -> usize {
        self.guard.conns.len() - self.guard.free.len()
    }
}

fn early_droppable(c: &Conn) -> bool {
    use crate::conn::ProtoState;
    use crate::proto::tcp::TcpConntrack;
    if !c.status.has(Status::CONFIRMED) || c.status.has(Status::DYING) {
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
        table.insert(c, false).map(|(_, l, _)| l)
    }

    #[test]
    fn both_directions_share_a_stripe_and_are_found() {
        let table = Table::new(10_000, 42);
        for i in 0..5000 {
            insert(&table, conn(i)).unwrap();
        }
        assert_eq!(table.len(), 5000);
        for i in 0..5000 {
            let c = conn(i);
            for (d, t) in c.tuples.iter().enumerate() {
                let k = table.key(t);
                let (l, local, dir) = table.lookup(k, t).expect("found");
                assert_eq!(dir.index(), d);
                assert_eq!(l.conn(local).tuples[0], c.tuples[0]);
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
        let mut locals = vec![];
        for i in 0..500 {
            locals.push(insert(&table, conn(i)).unwrap());
        }
        for i in 0..250 {
            let t = tuple(i);
            let k = table.key(&t);
            let (mut l, local, _) = table.lookup(k, &t).unwrap();
            let c = l.remove(local);
            assert!(c.status.has(Status::DYING));
            drop(l);
            assert!(table.lookup(k, &t).is_none());
        }
        assert_eq!(table.len(), 250);
        // GC at t=999 reclaims nothing; at 1000 everything.
        let mut reclaimed = 0;
        for s in 0..table.stripe_count() {
            table.lock(s).gc_step(999, usize::MAX, |_| reclaimed += 1);
        }
        assert_eq!(reclaimed, 0);
        for s in 0..table.stripe_count() {
            table.lock(s).gc_step(1000, usize::MAX, |_| reclaimed += 1);
        }
        assert_eq!(reclaimed, 250);
        assert!(table.is_empty());
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
        // Full of assured connections: nothing to evict.
        assert!(matches!(
            table.insert(conn(3), true),
            Err(InsertError::Full)
        ));
        let k2 = table.key(&c2.tuples[0]);
        let (mut l, local, _) = table.lookup(k2, &c2.tuples[0]).unwrap();
        l.conn_mut(local).status.clear(Status::ASSURED);
        drop(l);
        let (_, _, evicted) = table.insert(conn(3), true).unwrap();
        assert_eq!(evicted.unwrap().tuples[0], c2.tuples[0]);
    }

    #[test]
    fn nat_reply_in_another_stripe_is_found_and_unlinked() {
        let table = Table::new(64 * 256, 11);
        assert!(table.stripe_count() > 1);
        let t = tuple(5);
        // A reply tuple as SNAT makes it: server -> NAT address, new port.
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
            let c = Conn {
                tuples: [t, reply],
                deadline_ms: 10,
                ..Default::default()
            };
            insert(&table, c).unwrap();
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
            let (mut l, local, dir) = table.lookup(table.key(&reply), &reply).unwrap();
            assert_eq!(dir, Dir::Reply);
            l.remove(local);
            drop(l);
            assert!(!table.contains(&reply) && !table.contains(&t));
            assert!(table.is_empty());
            break;
        }
        assert!(found_remote);
    }
}
