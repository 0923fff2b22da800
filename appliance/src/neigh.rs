//! The neighbour table (ARP and IPv6 ND results), shared by all workers.
//!
//! Reads are lock-free: each slot is a seqlock (even sequence = stable), so a
//! lookup never waits on a writer and never takes a lock. Learning (rare: ARP /
//! NA packets) takes only the slot's own sequence with a compare-exchange.
//! Fixed capacity, open addressing over a short probe window; when the window
//! is full the least recently written entry in it is replaced.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::net::Mac;

const PROBE: usize = 8;
const VALID: u64 = 1 << 63;
const V6: u64 = 1 << 56;

#[derive(Default)]
struct Slot {
    seq: AtomicU32,
    key_hi: AtomicU64,
    key_lo: AtomicU64,
    /// mac (48 bits) | port << 48 | V6 | VALID
    val: AtomicU64,
    /// Write stamp (table generation) for replacement.
    stamp: AtomicU64,
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
    fn hash(&self) -> usize {
        let x = (self.ip as u64)
            ^ ((self.ip >> 64) as u64).rotate_left(17)
            ^ ((self.port as u64) << 40)
            ^ self.v6 as u64;
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
    }
}

pub struct NeighTable {
    slots: Box<[Slot]>,
    mask: usize,
    /// Bumped on every learn: workers re-check their waiting packets when it moves.
    generation: AtomicU64,
}

impl NeighTable {
    /// A table of at least `capacity` slots (rounded up to a power of two).
    pub fn new(capacity: usize) -> NeighTable {
        let n = capacity.max(PROBE).next_power_of_two();
        NeighTable {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The MAC for `key`, if known. Lock-free.
    #[inline]
    pub fn lookup(&self, key: &NeighKey) -> Option<Mac> {
        let h = key.hash();
        let tag = key.tag();
        for i in 0..PROBE {
            let slot = &self.slots[(h + i) & self.mask];
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
                if hi == (key.ip >> 64) as u64
                    && lo == key.ip as u64
                    && val & !0xffff_ffff_ffff == tag
                {
                    let b = val.to_be_bytes();
                    return Some([b[2], b[3], b[4], b[5], b[6], b[7]]);
                }
                break;
            }
        }
        None
    }

    /// Records `mac` for `key` (from ARP, ND, or the config).
    pub fn learn(&self, key: &NeighKey, mac: &Mac) {
        let h = key.hash();
        let tag = key.tag();
        let mut m = [0u8; 8];
        m[2..].copy_from_slice(mac);
        let val = u64::from_be_bytes(m) | tag;
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
            if slot.key_hi.load(Ordering::Relaxed) == (key.ip >> 64) as u64
                && slot.key_lo.load(Ordering::Relaxed) == key.ip as u64
                && v & !0xffff_ffff_ffff == tag
            {
                if v == val {
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
        let idx = target.or(empty).unwrap_or(oldest.1);
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
        t.learn(&k4, &[2, 0, 0, 0, 0, 2]);
        assert_eq!(t.lookup(&k4), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(t.lookup(&k6), None, "families are distinct");
        assert_eq!(
            t.lookup(&NeighKey::v4(0, 0xc633_6402)),
            None,
            "ports are distinct"
        );
        let g = t.generation();
        t.learn(&k4, &[2, 0, 0, 0, 0, 3]);
        assert_eq!(t.lookup(&k4), Some([2, 0, 0, 0, 0, 3]));
        assert!(t.generation() > g);
    }

    #[test]
    fn full_window_replaces_oldest() {
        let t = NeighTable::new(8);
        for i in 0..100u32 {
            t.learn(&NeighKey::v4(0, i), &[2, 0, 0, 0, 0, i as u8]);
            assert_eq!(
                t.lookup(&NeighKey::v4(0, i)),
                Some([2, 0, 0, 0, 0, i as u8])
            );
        }
    }

    #[test]
    fn concurrent_readers_see_whole_entries() {
        let t = std::sync::Arc::new(NeighTable::new(16));
        let k = NeighKey::v6(0, 42);
        t.learn(&k, &[2, 1, 1, 1, 1, 1]);
        let w = {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let b = (i % 2) as u8 + 1;
                    t.learn(&k, &[2, b, b, b, b, b]);
                }
            })
        };
        for _ in 0..200_000 {
            if let Some(m) = t.lookup(&k) {
                assert!(m[1..].iter().all(|x| *x == m[1]), "torn read {m:?}");
            }
        }
        w.join().unwrap();
    }
}
