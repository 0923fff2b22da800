//! The neighbour table (ARP and IPv6 ND results), shared by all workers.
//!
//! Reads are lock-free: each slot is a seqlock (even sequence = stable), so a
//! lookup never waits on a writer and never takes a lock. Learning (rare: ARP /
//! NA packets) takes only the slot's own sequence with a compare-exchange.
//! Fixed capacity, open addressing over a short probe window; when the window
//! is full the least recently written entry in it is replaced.
//!
//! Entries age (a simpler scheme than RFC 4861's, with its states): an entry
//! learned from the neighbour is fresh until `fresh_until` (the learner's TSC
//! plus `neighbour_reachable_ms`); past that it is stale: still used, and
//! the first worker to use it sends a new ARP request / neighbour
//! solicitation (at most one per entry per second, `probe`); an answer makes
//! it fresh again. `STALE_GRACE_MS` after going stale without an answer it is
//! dropped (the next packet waits for resolution, as for a new neighbour).
//! Entries from the config never age. Only what ctgate asked for is learned
//! from replies: an ARP reply or neighbour advertisement updates an entry
//! that exists or is being resolved (`INCOMPLETE`, made when ctgate
//! solicits), and is otherwise ignored (RFC 4861 7.2.5; Linux's
//! `arp_accept = 0`), counted by the caller.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::net::Mac;

const PROBE: usize = 8;
const VALID: u64 = 1 << 63;
/// Being resolved: a solicitation went out, no answer yet (no MAC).
const INCOMPLETE: u64 = 1 << 62;
const V6: u64 = 1 << 56;
/// How long a stale entry is used (while re-solicited) before it is dropped.
pub const STALE_GRACE_MS: u64 = 5000;
/// Fresh forever (entries from the config).
pub const PERMANENT: u64 = u64::MAX;

#[derive(Default)]
struct Slot {
    seq: AtomicU32,
    key_hi: AtomicU64,
    key_lo: AtomicU64,
    /// mac (48 bits) | port << 48 | V6 | INCOMPLETE | VALID
    val: AtomicU64,
    /// Write stamp (table generation) for replacement.
    stamp: AtomicU64,
    /// TSC until which the entry is fresh (`PERMANENT`: always).
    fresh_until: AtomicU64,
    /// TSC of the last refresh solicitation sent for it.
    probed_at: AtomicU64,
}

/// A neighbour as a lookup finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: Mac,
    /// TSC until which it is fresh (`PERMANENT` for configured ones).
    pub fresh_until: u64,
}

/// An address family and address: IPv4 in the low 32 bits.
#[derive(Debug, Clone, Copy, Eq)]
pub struct NeighKey {
    pub port: u8,
    pub v6: bool,
    pub ip: u128,
}

impl PartialEq for NeighKey {
    /// The address compared as two 64-bit halves: a key built for the
    /// packet in hand has just been stored that way, and a 16-byte load of
    /// it would wait for the stores (no store forwarding).
    #[inline(always)]
    fn eq(&self, o: &NeighKey) -> bool {
        self.port == o.port
            && self.v6 == o.v6
            && self.ip as u64 == o.ip as u64
            && (self.ip >> 64) as u64 == (o.ip >> 64) as u64
    }
}

impl NeighKey {
    pub fn v4(port: u8, ip: u32) -> NeighKey {
        NeighKey {
            port,
            v6: false,
            ip: ip as u128,
        }
    }
    pub fn v6(port: u8, ip: u128) -> NeighKey {
        NeighKey { port, v6: true, ip }
    }
    fn tag(&self) -> u64 {
        ((self.port as u64) << 48) | if self.v6 { V6 } else { 0 } | VALID
    }
    /// Does a slot's key and value word name this key (complete or not)?
    fn names(&self, hi: u64, lo: u64, val: u64) -> bool {
        hi == (self.ip >> 64) as u64
            && lo == self.ip as u64
            && val & !0xffff_ffff_ffff & !INCOMPLETE == self.tag()
    }
    fn hash(&self) -> usize {
        let x = (self.ip as u64)
            ^ ((self.ip >> 64) as u64).rotate_left(17)
            ^ ((self.port as u64) << 40)
            ^ self.v6 as u64;
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
    }
}

/// How many neighbours a table holds, by state (see [`NeighTable::count`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighCounts {
    /// Known and fresh (configured ones always).
    pub fresh: u64,
    /// Known, past their reachable time: still used while asked again.
    pub stale: u64,
    /// Being resolved: asked for, no answer yet.
    pub incomplete: u64,
}

pub struct NeighTable {
    slots: Box<[Slot]>,
    mask: usize,
    /// Bumped on every learn: workers re-check their waiting packets when it moves.
    generation: AtomicU64,
    /// Entries replaced to make room (their probe window was full).
    evicted: AtomicU64,
}

impl NeighTable {
    /// A table of at least `capacity` slots (rounded up to a power of two).
    pub fn new(capacity: usize) -> NeighTable {
        let n = capacity.max(PROBE).next_power_of_two();
        NeighTable {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            generation: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Entries replaced so far because their probe window was full (the
    /// table's bound, hit).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The neighbour for `key`, if known (not while being resolved). Lock-free.
    #[inline]
    pub fn lookup(&self, key: &NeighKey) -> Option<Neighbour> {
        let (idx, val) = self.find(key)?;
        if val & INCOMPLETE != 0 {
            return None;
        }
        let b = val.to_be_bytes();
        Some(Neighbour {
            mac: [b[2], b[3], b[4], b[5], b[6], b[7]],
            fresh_until: self.slots[idx].fresh_until.load(Ordering::Relaxed),
        })
    }

    /// The slot holding `key` (complete or not) and its value word.
    #[inline]
    fn find(&self, key: &NeighKey) -> Option<(usize, u64)> {
        let h = key.hash();
        for i in 0..PROBE {
            let idx = (h + i) & self.mask;
            let slot = &self.slots[idx];
            // A few retries cover a concurrent write; a slot being rewritten
            // for that long is treated as a miss (the packet waits for the next try).
            for _ in 0..4 {
                let s1 = slot.seq.load(Ordering::Acquire);
                if s1 & 1 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let hi = slot.key_hi.load(Ordering::Relaxed);
                let lo = slot.key_lo.load(Ordering::Relaxed);
                let val = slot.val.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if slot.seq.load(Ordering::Relaxed) != s1 {
                    continue;
                }
                if val & VALID == 0 {
                    return None;
                }
                if key.names(hi, lo, val) {
                    return Some((idx, val));
                }
                break;
            }
        }
        None
    }

    /// The entries at TSC `now` by state, as the workers see them: a
    /// learned entry is fresh until its `fresh_until`, then stale (still
    /// used) for `grace` TSC ticks, then forgotten (not counted). A slot
    /// being rewritten at that moment is skipped.
    pub fn count(&self, now: u64, grace: u64) -> NeighCounts {
        let mut n = NeighCounts::default();
        for slot in self.slots.iter() {
            let s1 = slot.seq.load(Ordering::Acquire);
            let val = slot.val.load(Ordering::Relaxed);
            let fresh_until = slot.fresh_until.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if s1 & 1 == 1 || slot.seq.load(Ordering::Relaxed) != s1 || val & VALID == 0 {
                continue;
            }
            if val & INCOMPLETE != 0 {
                // (Its `fresh_until` is when ctgate gives up asking.)
                if now < fresh_until {
                    n.incomplete += 1;
                }
            } else if now < fresh_until {
                n.fresh += 1;
            } else if now < fresh_until.saturating_add(grace) {
                n.stale += 1;
            }
        }
        n
    }

    /// Whether this caller should send the refresh solicitation for a stale
    /// `key` now (at most one per entry per `every` TSC ticks, whoever asks).
    pub fn claim_probe(&self, key: &NeighKey, now: u64, every: u64) -> bool {
        let Some((idx, _)) = self.find(key) else {
            return false;
        };
        let at = &self.slots[idx].probed_at;
        let last = at.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every
            && at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// An answer from the neighbour (ARP reply, neighbour advertisement) at
    /// TSC `now`: updates `key` if it exists or is still being resolved;
    /// false (nothing learned) otherwise, also for an answer that comes
    /// after ctgate gave up asking.
    pub fn update(&self, key: &NeighKey, mac: &Mac, fresh_until: u64, now: u64) -> bool {
        let Some((idx, val)) = self.find(key) else {
            return false;
        };
        if val & INCOMPLETE != 0 && now >= self.slots[idx].fresh_until.load(Ordering::Relaxed) {
            return false;
        }
        self.learn(key, mac, fresh_until);
        true
    }

    /// Notes that `key` is being resolved until TSC `give_up` (a
    /// solicitation went out), so that its answer is accepted until then;
    /// nothing if it has a learned entry.
    pub fn mark_incomplete(&self, key: &NeighKey, give_up: u64) {
        match self.find(key) {
            Some((_, val)) if val & INCOMPLETE == 0 => {}
            _ => self.write(key, key.tag() | INCOMPLETE, give_up),
        }
    }

    /// Records `mac` for `key`, fresh until `fresh_until` (a TSC value, or
    /// `PERMANENT`): from an ARP request or neighbour solicitation for us
    /// (RFC 826, RFC 4861 7.2.3), an answer to ours, or the config.
    pub fn learn(&self, key: &NeighKey, mac: &Mac, fresh_until: u64) {
        let mut m = [0u8; 8];
        m[2..].copy_from_slice(mac);
        self.write(key, u64::from_be_bytes(m) | key.tag(), fresh_until);
    }

    fn write(&self, key: &NeighKey, val: u64, fresh_until: u64) {
        let h = key.hash();
        let generation = self.generation.load(Ordering::Relaxed);
        // Prefer the slot holding this key, then an empty one, then the oldest.
        let mut target = None;
        let mut empty = None;
        let mut oldest = (u64::MAX, h & self.mask);
        for i in 0..PROBE {
            let idx = (h + i) & self.mask;
            let slot = &self.slots[idx];
            let v = slot.val.load(Ordering::Relaxed);
            if v & VALID == 0 {
                empty.get_or_insert(idx);
                continue;
            }
            if key.names(
                slot.key_hi.load(Ordering::Relaxed),
                slot.key_lo.load(Ordering::Relaxed),
                v,
            ) {
                if v == val {
                    // The same MAC again: fresher, nothing else changes
                    // (no new generation: the workers' caches stay valid).
                    slot.fresh_until.store(fresh_until, Ordering::Relaxed);
                    return;
                }
                target = Some(idx);
                break;
            }
            let st = slot.stamp.load(Ordering::Relaxed);
            if st < oldest.0 {
                oldest = (st, idx);
            }
        }
        let idx = match target.or(empty) {
            Some(idx) => idx,
            None => {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                oldest.1
            }
        };
        let slot = &self.slots[idx];
        loop {
            let s = slot.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && slot
                    .seq
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            std::hint::spin_loop();
        }
        fence(Ordering::Release);
        slot.key_hi.store((key.ip >> 64) as u64, Ordering::Relaxed);
        slot.key_lo.store(key.ip as u64, Ordering::Relaxed);
        slot.val.store(val, Ordering::Relaxed);
        slot.stamp.store(generation, Ordering::Relaxed);
        slot.fresh_until.store(fresh_until, Ordering::Relaxed);
        slot.probed_at.store(0, Ordering::Relaxed);
        slot.seq.fetch_add(1, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_and_lookup() {
        let t = NeighTable::new(64);
        let k4 = NeighKey::v4(1, 0xc633_6402);
        let k6 = NeighKey::v6(1, 0xc633_6402);
        assert_eq!(t.lookup(&k4), None);
        t.learn(&k4, &[2, 0, 0, 0, 0, 2], PERMANENT);
        assert_eq!(t.lookup(&k4).map(|n| n.mac), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(t.lookup(&k6), None, "families are distinct");
        assert_eq!(
            t.lookup(&NeighKey::v4(0, 0xc633_6402)),
            None,
            "ports are distinct"
        );
        let g = t.generation();
        t.learn(&k4, &[2, 0, 0, 0, 0, 3], PERMANENT);
        assert_eq!(t.lookup(&k4).map(|n| n.mac), Some([2, 0, 0, 0, 0, 3]));
        assert!(t.generation() > g);
    }

    #[test]
    fn full_window_replaces_oldest() {
        let t = NeighTable::new(8);
        for i in 0..100u32 {
            t.learn(&NeighKey::v4(0, i), &[2, 0, 0, 0, 0, i as u8], PERMANENT);
            assert_eq!(
                t.lookup(&NeighKey::v4(0, i)).map(|n| n.mac),
                Some([2, 0, 0, 0, 0, i as u8])
            );
        }
        // 8 slots: every learn after the eighth replaced an entry.
        assert_eq!(t.evicted(), 92);
    }

    #[test]
    fn concurrent_readers_see_whole_entries() {
        let t = std::sync::Arc::new(NeighTable::new(16));
        let k = NeighKey::v6(0, 42);
        t.learn(&k, &[2, 1, 1, 1, 1, 1], 7);
        let w = {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let b = (i % 2) as u8 + 1;
                    t.learn(&k, &[2, b, b, b, b, b], 7);
                }
            })
        };
        for _ in 0..200_000 {
            if let Some(n) = t.lookup(&k) {
                let m = n.mac;
                assert!(m[1..].iter().all(|x| *x == m[1]), "torn read {m:?}");
            }
        }
        w.join().unwrap();
    }

    #[test]
    fn answers_update_only_what_was_asked_for() {
        let t = NeighTable::new(64);
        let k = NeighKey::v6(1, 0x2001_0db8 << 96 | 0x77);
        // An unsolicited advertisement: nothing learned.
        assert!(!t.update(&k, &[2, 0, 0, 0, 0, 7], 100, 0));
        assert_eq!(t.lookup(&k), None);
        // ctgate solicits until 50: an answer after it gave up is not taken,
        // nor counted as being resolved.
        t.mark_incomplete(&k, 50);
        assert_eq!(t.count(49, 10).incomplete, 1);
        assert_eq!(t.count(50, 10).incomplete, 0);
        assert!(!t.update(&k, &[2, 0, 0, 0, 0, 7], 100, 50));
        // Asked again (until 90): the answer is taken.
        t.mark_incomplete(&k, 90);
        assert_eq!(t.lookup(&k), None, "being resolved is not known");
        assert!(t.update(&k, &[2, 0, 0, 0, 0, 7], 100, 60));
        assert_eq!(
            t.lookup(&k),
            Some(Neighbour {
                mac: [2, 0, 0, 0, 0, 7],
                fresh_until: 100
            })
        );
        // A known entry takes updates (a new MAC, or the same one fresher).
        assert!(t.update(&k, &[2, 0, 0, 0, 0, 8], 200, 150));
        assert_eq!(t.lookup(&k).unwrap().mac, [2, 0, 0, 0, 0, 8]);
        let g = t.generation();
        assert!(t.update(&k, &[2, 0, 0, 0, 0, 8], 300, 250));
        assert_eq!(t.lookup(&k).unwrap().fresh_until, 300);
        assert_eq!(t.generation(), g, "a refresh keeps the caches valid");
        // Marking a known entry changes nothing.
        t.mark_incomplete(&k, 400);
        assert_eq!(t.lookup(&k).unwrap().mac, [2, 0, 0, 0, 0, 8]);
    }

    #[test]
    fn counts_by_state() {
        let t = NeighTable::new(64);
        assert_eq!(t.count(0, 10), NeighCounts::default());
        t.learn(&NeighKey::v4(0, 1), &[2, 0, 0, 0, 0, 1], PERMANENT);
        t.learn(&NeighKey::v4(0, 2), &[2, 0, 0, 0, 0, 2], 100);
        t.mark_incomplete(&NeighKey::v6(1, 3), 60);
        let at = |now| t.count(now, 10);
        assert_eq!(
            at(50),
            NeighCounts {
                fresh: 2,
                stale: 0,
                incomplete: 1
            }
        );
        assert_eq!((at(105).fresh, at(105).stale), (1, 1), "stale in the grace");
        assert_eq!((at(110).fresh, at(110).stale), (1, 0), "then forgotten");
    }

    #[test]
    fn one_refresh_probe_per_interval() {
        let t = NeighTable::new(64);
        let k = NeighKey::v4(0, 0xc000_0202);
        assert!(!t.claim_probe(&k, 1000, 100), "no entry, no probe");
        t.learn(&k, &[2, 0, 0, 0, 0, 2], 500);
        assert!(t.claim_probe(&k, 1000, 100));
        assert!(!t.claim_probe(&k, 1050, 100), "within the interval");
        assert!(t.claim_probe(&k, 1100, 100));
        // Learning again resets it.
        t.learn(&k, &[2, 0, 0, 0, 0, 3], 2000);
        assert!(t.claim_probe(&k, 1101, 100));
    }
}
