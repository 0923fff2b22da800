//! Endpoint-independent mappings (RFC 4787) in the table's memory model.
//!
//! A mapping ties an inside UDP endpoint to one outside address and port, for
//! every destination (mapping), and lets any outside host send to it
//! (filtering). Two fixed-capacity maps per stripe hold them, reserved when
//! the table is made and written under the stripe's lock like its buckets:
//! - `out`: inside endpoint -> outside address, port, the number of live
//!   connections through it and when the last of them left, in the stripe
//!   the inside endpoint hashes to;
//! - `back`: outside (family, address, port) -> inside endpoint, in the
//!   stripe the outside endpoint hashes to.
//!
//! A mapping lives while a connection through it is in the table, and
//! the EIM timeout after the last one left (RFC 4787 REQ-5;
//! [`crate::nat::EIM_TIMEOUT_MS`] unless `Timeouts::nat_eim_ms` says
//! otherwise). A connection
//! holds its mapping from confirm to removal (the [`Status::EIM`] bit says
//! it does); [`Table::expire`] sweeps a few slots of its stripe's `out` map
//! per call and removes the mappings that have lapsed, with their `back`
//! entries. A full map (at most [`Table::eim_limit`] mappings per stripe)
//! refuses a new mapping: the connection is translated as by a rule without
//! endpoint independence, and the refusal counted ([`EimUse::full`]).

use super::{stripe_of_hash, Guard, Table};
use crate::conn::{Conn, Status};
use crate::nat::{Endpoint, Mapping};
use crate::tuple::{Addr, Family, Tuple};

/// Slots probed past a key's home slot. An insert that finds no free slot
/// this close fails (the map counts as full); at the designed load (at most
/// half the slots used) a run this long does not happen.
const MAX_PROBE: usize = 32;

/// `out` slots [`Table::expire`] looks at per call.
pub const SWEEP: usize = 64;

/// Protocol numbers (IANA's experimental 253 and 254) that keep the two maps'
/// hashes apart from each other and from connection tuples.
const OUT_TAG: u8 = 253;
const BACK_TAG: u8 = 254;

#[derive(Debug, Clone, Copy)]
struct Slot<K, V> {
    hash: u32,
    key: K,
    val: V,
}

/// A fixed-capacity hash map: linear probing over a power-of-two array,
/// deletion by backward shift (no tombstones), at most `limit` entries.
#[derive(Debug)]
pub struct FixedMap<K, V> {
    slots: Box<[Option<Slot<K, V>>]>,
    mask: usize,
    len: u32,
    limit: u32,
}

impl<K: Copy + Eq, V: Copy> FixedMap<K, V> {
    /// Room for `limit` entries in twice as many slots (none when 0).
    pub fn new(limit: u32, advise: &mut dyn super::Memory) -> Self {
        let n = if limit == 0 {
            0
        } else {
            (2 * limit as usize).next_power_of_two()
        };
        FixedMap {
            slots: super::stripe::reserve(n, advise),
            mask: n.wrapping_sub(1),
            len: 0,
            limit,
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    fn find(&self, hash: u32, key: &K) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = hash as usize & self.mask;
        for _ in 0..=MAX_PROBE {
            match &self.slots[i] {
                None => return None,
                Some(s) if s.hash == hash && s.key == *key => return Some(i),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        None
    }

    pub fn get(&self, hash: u32, key: &K) -> Option<&V> {
        self.find(hash, key)
            .map(|i| &self.slots[i].as_ref().unwrap().val)
    }

    pub fn get_mut(&mut self, hash: u32, key: &K) -> Option<&mut V> {
        let i = self.find(hash, key)?;
        self.slots[i].as_mut().map(|s| &mut s.val)
    }

    /// Inserts or replaces; false if the map is full (at its limit, or no
    /// free slot near the key's home).
    pub fn insert(&mut self, hash: u32, key: K, val: V) -> bool {
        if let Some(v) = self.get_mut(hash, &key) {
            *v = val;
            return true;
        }
        if self.len >= self.limit {
            return false;
        }
        let mut i = hash as usize & self.mask;
        for _ in 0..=MAX_PROBE {
            if self.slots[i].is_none() {
                self.slots[i] = Some(Slot { hash, key, val });
                self.len += 1;
                return true;
            }
            i = (i + 1) & self.mask;
        }
        false
    }

    pub fn remove(&mut self, hash: u32, key: &K) -> Option<V> {
        let i = self.find(hash, key)?;
        let v = self.slots[i].as_ref().map(|s| s.val);
        self.remove_at(i);
        v
    }

    /// Empties slot `i`, moving back the entries after it that may move
    /// (those whose home is not between `i` and where they are).
    fn remove_at(&mut self, mut i: usize) {
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let Some(s) = self.slots[j] else { break };
            let home = s.hash as usize & self.mask;
            if j.wrapping_sub(home) & self.mask >= j.wrapping_sub(i) & self.mask {
                self.slots[i] = Some(s);
                i = j;
            }
        }
        self.slots[i] = None;
    }

    /// The entry in slot `i`, if any.
    fn at(&self, i: usize) -> Option<(u32, K, V)> {
        self.slots[i].map(|s| (s.hash, s.key, s.val))
    }
}

/// An `out` entry: the mapping, the live connections through it, and when
/// the last one left (ms).
#[derive(Debug, Clone, Copy)]
pub struct Out {
    ext: Addr,
    ext_port: u16,
    refs: u32,
    idle_since_ms: u64,
}

impl Out {
    fn live(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.refs > 0 || now_ms < self.idle_since_ms.saturating_add(timeout_ms)
    }
}

/// An outside endpoint: family, address, port.
type Outside = (Family, Addr, u16);

/// One stripe's mappings.
#[derive(Debug)]
pub struct EimMaps {
    out: FixedMap<Endpoint, Out>,
    back: FixedMap<Outside, Endpoint>,
    /// Where the next sweep of `out` starts.
    cursor: usize,
    /// Mappings refused because a map was full.
    full: u64,
}

impl EimMaps {
    pub fn new(limit: u32, advise: &mut dyn super::Memory) -> EimMaps {
        EimMaps {
            out: FixedMap::new(limit, advise),
            back: FixedMap::new(limit, advise),
            cursor: 0,
            full: 0,
        }
    }

    pub fn reserved_bytes(&self) -> usize {
        self.out.slots() * std::mem::size_of::<Option<Slot<Endpoint, Out>>>()
            + self.back.slots() * std::mem::size_of::<Option<Slot<Outside, Endpoint>>>()
    }
}

/// What the mapping maps of the stripes hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EimUse {
    /// Mappings held (live ones, and lapsed ones not yet swept).
    pub mappings: u64,
    /// Mappings refused because the stripe's maps were full.
    pub full: u64,
    /// The most mappings the maps hold.
    pub limit: u64,
}

/// Where an endpoint's entry lives: its stripe and its hash in the map.
#[derive(Debug, Clone, Copy)]
struct Place {
    stripe: u32,
    hash: u32,
}

impl Table {
    fn eim_place(&self, family: Family, addr: Addr, port: u16, zone: u16, tag: u8) -> Place {
        let t = Tuple {
            src: addr,
            dst: Addr::default(),
            src_port: port,
            dst_port: 0,
            proto: tag,
            family,
            zone,
        };
        let (hash, _) = t.hash_with(&self.hash_key);
        Place {
            stripe: stripe_of_hash(hash, self.stripe_mask),
            hash: hash as u32,
        }
    }

    fn out_place(&self, inside: &Endpoint) -> Place {
        self.eim_place(inside.0, inside.1, inside.2, inside.3, OUT_TAG)
    }

    fn back_place(&self, outside: &Outside) -> Place {
        self.eim_place(outside.0, outside.1, outside.2, 0, BACK_TAG)
    }

    /// The most mappings one stripe holds (0: the table keeps none).
    pub fn eim_limit(&self) -> u32 {
        self.eim_limit
    }

    /// How long a mapping outlives its last connection (ms).
    pub fn eim_timeout_ms(&self) -> u64 {
        self.eim_timeout_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_eim_timeout_ms(&self, ms: u64) {
        self.eim_timeout_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// What `stripe`'s mapping maps hold (locks it briefly).
    pub fn eim_usage(&self, stripe: u32) -> EimUse {
        let s = super::lock(&self.stripes[stripe as usize]);
        EimUse {
            mappings: u64::from(s.eim.out.len()),
            full: s.eim.full,
            limit: u64::from(self.eim_limit),
        }
    }

    /// Removes lapsed mappings among the next [`SWEEP`] `out` slots of
    /// `stripe`, with their `back` entries (part of [`Table::expire`]).
    pub(super) fn eim_sweep(&self, g: &mut Guard<'_>, stripe: u32, now_ms: u64) {
        let mut lapsed: [Option<(Endpoint, Outside)>; SWEEP] = [None; SWEEP];
        let s = g.stripe(stripe);
        let n = s.eim.out.slots();
        if n == 0 || s.eim.out.is_empty() {
            return;
        }
        let start = s.eim.cursor;
        let timeout = self.eim_timeout_ms();
        let mut found = 0;
        for k in 0..SWEEP.min(n) {
            if let Some((_, inside, out)) = s.eim.out.at((start + k) & (n - 1)) {
                if !out.live(now_ms, timeout) {
                    lapsed[found] = Some((inside, (inside.0, out.ext, out.ext_port)));
                    found += 1;
                }
            }
        }
        s.eim.cursor = (start + SWEEP) & (n - 1);
        for (inside, outside) in lapsed.into_iter().flatten() {
            // (Removal shifts entries back: a lapsed one moved into a slot
            // already swept waits for the next turn.)
            let p = self.out_place(&inside);
            let s = g.stripe(p.stripe);
            if s.eim
                .out
                .get(p.hash, &inside)
                .is_some_and(|o| !o.live(now_ms, timeout))
            {
                s.eim.out.remove(p.hash, &inside);
                g.eim_unback(&outside, &inside);
            }
        }
    }
}

impl Guard<'_> {
    /// The stripe holding the mapping of a connection with `status` and
    /// `tuples`, if it holds one.
    pub(super) fn eim_stripe(&self, status: Status, tuples: &[Tuple; 2]) -> Option<u32> {
        status
            .has(Status::EIM)
            .then(|| self.table.out_place(&inside(status, tuples)).stripe)
    }

    /// The live mapping of an inside endpoint.
    pub fn eim_mapping(&mut self, inside: &Endpoint, now_ms: u64) -> Option<Mapping> {
        let p = self.table.out_place(inside);
        let o = *self.stripe(p.stripe).eim.out.get(p.hash, inside)?;
        let timeout = self.table.eim_timeout_ms();
        o.live(now_ms, timeout).then_some(Mapping {
            ext: o.ext,
            ext_port: o.ext_port,
        })
    }

    /// The inside endpoint a live mapping sends (family, outside address,
    /// port) to.
    pub fn eim_inside(
        &mut self,
        family: Family,
        ext: Addr,
        port: u16,
        now_ms: u64,
    ) -> Option<Endpoint> {
        let outside = (family, ext, port);
        let p = self.table.back_place(&outside);
        let inside = *self.stripe(p.stripe).eim.back.get(p.hash, &outside)?;
        let m = self.eim_mapping(&inside, now_ms)?;
        (m.ext == ext && m.ext_port == port).then_some(inside)
    }

    /// Whether an outside port is held by another inside endpoint's live
    /// mapping.
    pub fn eim_held_by_other(
        &mut self,
        family: Family,
        ext: Addr,
        port: u16,
        inside: &Endpoint,
        now_ms: u64,
    ) -> bool {
        self.eim_inside(family, ext, port, now_ms)
            .is_some_and(|i| i != *inside)
    }

    /// Records (or refreshes) an inside endpoint's mapping. False if the maps
    /// are full (counted): the caller goes on without one.
    pub fn eim_record(&mut self, inside: Endpoint, ext: Addr, ext_port: u16, now_ms: u64) -> bool {
        let p = self.table.out_place(&inside);
        let outside = (inside.0, ext, ext_port);
        let s = self.stripe(p.stripe);
        let old = s.eim.out.get(p.hash, &inside).copied();
        let refs = old.map_or(0, |o| o.refs);
        let new = Out {
            ext,
            ext_port,
            refs,
            idle_since_ms: now_ms,
        };
        if !s.eim.out.insert(p.hash, inside, new) {
            s.eim.full += 1;
            return false;
        }
        if let Some(o) = old.filter(|o| (o.ext, o.ext_port) != (ext, ext_port)) {
            self.eim_unback(&(inside.0, o.ext, o.ext_port), &inside);
        }
        let b = self.table.back_place(&outside);
        if self
            .stripe(b.stripe)
            .eim
            .back
            .insert(b.hash, outside, inside)
        {
            return true;
        }
        // No room for the way back: no mapping (the connections already
        // through it keep their count).
        let s = self.stripe(p.stripe);
        s.eim.full += 1;
        if refs == 0 {
            s.eim.out.remove(p.hash, &inside);
        }
        false
    }

    /// Removes the `back` entry of `outside` if it leads to `inside`.
    fn eim_unback(&mut self, outside: &Outside, inside: &Endpoint) {
        let b = self.table.back_place(outside);
        let back = &mut self.stripe(b.stripe).eim.back;
        if back.get(b.hash, outside) == Some(inside) {
            back.remove(b.hash, outside);
        }
    }

    /// A connection holding a mapping was confirmed: it counts on the
    /// mapping. False (and the caller clears the bit) if the mapping is gone.
    pub(super) fn eim_hold(&mut self, c: &Conn) -> bool {
        let inside = inside_of(c);
        let p = self.table.out_place(&inside);
        match self.stripe(p.stripe).eim.out.get_mut(p.hash, &inside) {
            Some(o) => {
                o.refs += 1;
                true
            }
            None => false,
        }
    }

    /// A connection holding a mapping left the table at `now_ms`.
    pub(super) fn eim_release(&mut self, c: &Conn, now_ms: u64) {
        let inside = inside_of(c);
        let p = self.table.out_place(&inside);
        if let Some(o) = self.stripe(p.stripe).eim.out.get_mut(p.hash, &inside) {
            o.refs = o.refs.saturating_sub(1);
            if o.refs == 0 {
                o.idle_since_ms = now_ms;
            }
        }
    }
}

/// The inside endpoint of a connection holding a mapping: its original
/// source when source NAT chose the mapping; the reply's source when the
/// connection came in through it (endpoint-independent filtering).
pub fn inside_of(c: &Conn) -> Endpoint {
    inside(c.status, &c.tuples)
}

fn inside(status: Status, tuples: &[Tuple; 2]) -> Endpoint {
    let t = &tuples[if status.has(Status::SRC_NAT) { 0 } else { 1 }];
    (t.family, t.src, t.src_port, t.zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::EIM_TIMEOUT_MS;
    use crate::table::Clash;

    /// Connections of 300 inside endpoints, each holding its mapping, in a
    /// table of 4 stripes: the maps, the connections and their entries
    /// spread over different stripes, so holds and releases cross them.
    #[test]
    fn mappings_live_with_their_connections_across_stripes() {
        let table = Table::with_advice(4000, 4, 11, 1000, false, &mut ());
        let ext = Addr::from_v4([203, 0, 113, 1]);
        let conn = |i: u16| {
            let orig = Tuple {
                src: Addr::from_v4([192, 0, 2, (i % 200) as u8]),
                dst: Addr::from_v4([198, 51, 100, 1]),
                src_port: 1000 + i,
                dst_port: 53,
                proto: 17,
                family: Family::V4,
                zone: 0,
            };
            let mut reply = orig.invert().unwrap();
            reply.dst = ext;
            reply.dst_port = 20_000 + i;
            Conn {
                tuples: [orig, reply],
                deadline_ms: 30_000,
                status: Status(Status::SRC_NAT | Status::EIM),
                ..Conn::default()
            }
        };
        let mut g = table.guard();
        let mut refs = vec![];
        for i in 0..300 {
            let c = conn(i);
            let inside = inside_of(&c);
            assert!(g.eim_record(inside, ext, 20_000 + i, 0));
            let (r, _) = g
                .insert(
                    &c,
                    Clash::Both,
                    false,
                    &mut crate::table::Eviction::default(),
                )
                .unwrap();
            refs.push(r);
        }
        for i in 0..300 {
            let inside = inside_of(&conn(i));
            assert_eq!(g.eim_inside(Family::V4, ext, 20_000 + i, 1), Some(inside));
            assert!(g.eim_held_by_other(Family::V4, ext, 20_000 + i, &(Family::V4, ext, 1, 0), 1));
        }
        drop(g);
        let held = |t: &Table| (0..4).map(|s| t.eim_usage(s).mappings).sum::<u64>();
        assert_eq!(held(&table), 300);
        // Long after EIM_TIMEOUT_MS, connections still in the table hold theirs.
        let late = 10 * EIM_TIMEOUT_MS;
        for _ in 0..64 {
            for s in 0..4 {
                table.eim_sweep(&mut table.guard(), s, late);
            }
        }
        assert_eq!(held(&table), 300);
        // Removed at 20.032 s (the stripe's clock: where expiry has run to, a
        // multiple of the wheel's tick), before their deadline: the mappings
        // last EIM_TIMEOUT_MS more.
        for s in 0..4 {
            assert_eq!(table.expire(s, 20_032, usize::MAX, |_| {}), (0, false));
        }
        let mut g = table.guard();
        for r in refs {
            assert!(g.remove(r).is_some());
        }
        let lapse = 20_032 + EIM_TIMEOUT_MS;
        assert!(g.eim_mapping(&inside_of(&conn(7)), lapse - 1).is_some());
        assert!(g.eim_mapping(&inside_of(&conn(7)), lapse).is_none());
        drop(g);
        for _ in 0..64 {
            for s in 0..4 {
                table.eim_sweep(&mut table.guard(), s, lapse);
            }
        }
        assert_eq!(held(&table), 0, "every lapsed mapping swept");
        let mut g = table.guard();
        assert_eq!(
            g.eim_inside(Family::V4, ext, 20_007, 0),
            None,
            "and its way back"
        );
        let backs: u32 = (0..4).map(|s| g.stripe(s).eim.back.len()).sum();
        assert_eq!(backs, 0);
        drop(g);
        // The timeout is the table's setting (Timeouts::nat_eim_ms).
        table.set_eim_timeout_ms(1000);
        let mut g = table.guard();
        let inside = inside_of(&conn(1));
        assert!(g.eim_record(inside, ext, 30_000, lapse));
        assert!(g.eim_mapping(&inside, lapse + 999).is_some());
        assert!(g.eim_mapping(&inside, lapse + 1000).is_none());
    }

    fn map(limit: u32) -> FixedMap<u32, u32> {
        FixedMap::new(limit, &mut ())
    }

    #[test]
    fn fixed_map_keeps_every_key_through_inserts_and_removes() {
        // Hashes crowded into few homes, so that removals shift runs back.
        let mut m = map(64);
        let h = |k: u32| k.wrapping_mul(0x9e37_79b9) >> 28;
        let mut model = std::collections::HashMap::new();
        let mut x = 7u32;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let k = x % 100;
            if x.is_multiple_of(3) {
                assert_eq!(m.remove(h(k), &k), model.remove(&k));
            } else if m.insert(h(k), k, x) {
                model.insert(k, x);
            } else {
                assert!(model.len() as u32 >= 64 || !model.contains_key(&k));
            }
            assert_eq!(m.len() as usize, model.len());
            for (k, v) in &model {
                assert_eq!(m.get(h(*k), k), Some(v), "key {k}");
            }
        }
    }

    #[test]
    fn fixed_map_refuses_beyond_its_limit() {
        let mut m = map(4);
        for k in 0..4 {
            assert!(m.insert(k, k, k));
        }
        assert!(!m.insert(9, 9, 9), "full");
        assert!(m.insert(2, 2, 20), "a present key is replaced");
        assert_eq!(m.remove(0, &0), Some(0));
        assert!(m.insert(9, 9, 9));
        let empty = map(0);
        assert_eq!(empty.get(1, &1), None);
    }
}
