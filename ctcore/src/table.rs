//! The connection table: fixed capacity, memory reserved at start, lock stripes.
//!
//! Layout (like the kernel's hash of `tuplehash[2]`, arranged for DPDK-style speed):
//! - `stripes`: a power-of-two number of stripes, each behind its own lock, each
//!   owning a slab of connections (addressed by a `u32` index) and an array of
//!   cache-line buckets. A bucket holds 8 slots: a 16-bit signature and a slot word
//!   `(local index << 1) | dir`.
//! - Invariant: both directions of a connection live in the same stripe (its home),
//!   so one lock covers a packet's whole update. The stripe is a function of the
//!   tuple that is symmetric (a tuple and its inversion agree) and that a NAT port
//!   allocator can solve for (`stripe_of_parts`): NAT picks reply ports that keep
//!   the translated reply tuple in the original tuple's stripe.
//! - The bucket index and signature come from the seeded symmetric tuple hash, so
//!   crafted tuples cannot flood one bucket.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use crate::conn::{Conn, Status};
use crate::tuple::{Dir, Tuple};

const SLOTS: usize = 8;
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
    stripe_mask: u32,
    seed: u64,
    port_key: [u16; 2],
    capacity: u32,
    count: CachePadded<AtomicU32>,
    next_id: CachePadded<AtomicU32>,
}

/// A seeded bijection on u16 whose low bits depend on every input bit, so that
/// ports stepping by the stripe count still spread over stripes.
#[inline]
fn permute_port(p: u16, key: [u16; 2]) -> u16 {
    let x = (p ^ key[0]).wrapping_mul(0x9e37 | 1);
    let x = x.rotate_right(7) ^ key[1];
    x.wrapping_mul(0x6a09 | 1).rotate_right(5)
}

impl Table {
    /// A table for `capacity_conns` connections (like nf_conntrack_max), with all
    /// memory reserved now. `seed` keys the hash (use a random one).
    pub fn new(capacity_conns: u32, seed: u64) -> Table {
        let capacity = capacity_conns.max(1);
        // ~1k connections per stripe for big tables, at least one stripe.
        let nstripes = (capacity / 1024).clamp(1, 4096).next_power_of_two();
        let per = capacity / nstripes;
        // Slack for uneven stripes: 25% plus a little for small stripes.
        let per_cap = per + per / 4 + 16;
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
        let port_key = [(seed >> 16) as u16, (seed >> 32) as u16];
        Table {
            stripes,
            stripe_mask: nstripes - 1,
            seed,
            port_key,
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

    /// The stripe of a tuple given its parts: symmetric in the endpoints, and
    /// for a fixed address pair a bijection of each port, so NAT can solve it.
    pub fn stripe_of_parts(&self, t: &Tuple) -> u32 {
        let (a, b) = if t.src <= t.dst {
            (t.src, t.dst)
        } else {
            (t.dst, t.src)
        };
        let addr_only = Tuple {
            src: a,
            dst: b,
            src_port: 0,
            dst_port: 0,
            proto: t.proto,
            family: t.family,
            zone: t.zone,
        };
        let base = (addr_only.hash(self.seed) >> 32) as u32;
        let ports = if t.is_icmp() {
            permute_port(t.src_port, self.port_key) as u32
        } else {
            permute_port(t.src_port, self.port_key) as u32
                + permute_port(t.dst_port, self.port_key) as u32
        };
        base.wrapping_add(ports) & self.stripe_mask
    }

    pub fn key(&self, t: &Tuple) -> Key {
        Key {
            hash: t.hash(self.seed),
            stripe: self.stripe_of_parts(t),
        }
    }

    /// Locks one stripe. Hold at most one stripe lock at a time.
    pub fn lock(&self, stripe: u32) -> Locked<'_> {
        // A worker that panicked while holding the lock leaves the table as it
        // was between two complete operations: keep going.
        let guard = self.stripes[stripe as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Locked {
            guard,
            stripe,
            table: self,
        }
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

impl Locked<'_> {
    pub fn stripe(&self) -> u32 {
        self.stripe
    }

    /// Finds the connection holding `t` (whose key is `key`, in this stripe).
    /// Expired connections are found too: the caller decides (see `Engine`).
    pub fn find(&self, key: Key, t: &Tuple) -> Option<(Local, Dir)> {
        debug_assert_eq!(key.stripe, self.stripe);
        let s = &*self.guard;
        let sig = key.sig();
        let mut b = (key.hash as usize) & s.bucket_mask;
        for _ in 0..=MAX_PROBE {
            let bucket = &s.buckets[b];
            for i in 0..SLOTS {
                if bucket.sig[i] == sig {
                    let slot = bucket.slot[i];
                    let local = slot >> 1;
                    let dir = if slot & 1 == 0 { Dir::Orig } else { Dir::Reply };
                    if s.conns[local as usize].tuples[dir.index()] == *t {
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
                    s.buckets[m].overflow -= 1;
                    m = (m + 1) & s.bucket_mask;
                }
                return;
            }
            b = (b + 1) & s.bucket_mask;
        }
        debug_assert!(false, "unplace: slot not found");
    }

    /// Inserts a new connection (confirm). Both tuples must belong to this stripe.
    /// Sets CONFIRMED and assigns an id. Fails if either tuple is present (a clash:
    /// the kernel's insert_failed) or the table or stripe is full.
    pub fn insert(&mut self, mut conn: Conn) -> Result<Local, InsertError> {
        let keys = [
            self.table.key(&conn.tuples[0]),
            self.table.key(&conn.tuples[1]),
        ];
        debug_assert!(
            keys.iter().all(|k| k.stripe == self.stripe),
            "NAT broke the stripe invariant"
        );
        if self.find(keys[0], &conn.tuples[0]).is_some()
            || self.find(keys[1], &conn.tuples[1]).is_some()
        {
            return Err(InsertError::Clash);
        }
        let count = &self.table.count;
        if count.fetch_add(1, Ordering::Relaxed) >= self.table.capacity {
            count.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        }
        let s = &mut *self.guard;
        let Some(local) = s.free.pop() else {
            count.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        };
        if !Self::place(s, keys[0], local << 1) {
            s.free.push(local);
            count.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        }
        if !Self::place(s, keys[1], (local << 1) | 1) {
            Self::unplace(s, keys[0], local << 1);
            s.free.push(local);
            count.fetch_sub(1, Ordering::Relaxed);
            return Err(InsertError::Full);
        }
        conn.status.set(Status::CONFIRMED);
        conn.id = self.table.alloc_id();
        s.conns[local as usize] = conn;
        Ok(local)
    }

    /// Removes a connection, returning it (with DYING set) for the DESTROY event.
    pub fn remove(&mut self, local: Local) -> Conn {
        let keys = {
            let c = &self.guard.conns[local as usize];
            [self.table.key(&c.tuples[0]), self.table.key(&c.tuples[1])]
        };
        let s = &mut *self.guard;
        Self::unplace(s, keys[0], local << 1);
        Self::unplace(s, keys[1], (local << 1) | 1);
        let mut conn = std::mem::take(&mut s.conns[local as usize]);
        conn.status.set(Status::DYING);
        s.free.push(local);
        self.table.count.fetch_sub(1, Ordering::Relaxed);
        conn
    }

    /// The kernel's early_drop: a connection near `key` that may be evicted to
    /// make room — not ASSURED, or a TCP connection that is closing.
    pub fn early_drop_candidate(&self, key: Key) -> Option<Local> {
        let s = &*self.guard;
        let mut b = (key.hash as usize) & s.bucket_mask;
        for _ in 0..EVICTION_RANGE {
            for i in 0..SLOTS {
                if s.buckets[b].sig[i] != EMPTY_SIG {
                    let local = s.buckets[b].slot[i] >> 1;
                    if early_droppable(&s.conns[local as usize]) {
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
        let k = table.key(&c.tuples[0]);
        table.lock(k.stripe).insert(c)
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
                let l = table.lock(k.stripe);
                let (local, dir) = l.find(k, t).expect("found");
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
            let mut l = table.lock(k.stripe);
            let (local, _) = l.find(k, &t).unwrap();
            let c = l.remove(local);
            assert!(c.status.has(Status::DYING));
            assert!(l.find(k, &t).is_none());
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
        let table = Table::new(64, 9);
        let mut c = conn(1);
        c.status.set(Status::ASSURED);
        insert(&table, c).unwrap();
        let k = table.key(&c.tuples[0]);
        assert_eq!(table.lock(k.stripe).early_drop_candidate(k), None);
        let c2 = conn(2);
        let k2 = table.key(&c2.tuples[0]);
        let l2 = insert(&table, c2).unwrap();
        assert_eq!(table.lock(k2.stripe).early_drop_candidate(k2), Some(l2));
    }
}
