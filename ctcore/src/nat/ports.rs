//! Free-port bitmaps for source NAT: per stripe and per (family, NAT address,
//! protocol, zone), which outside ports (ICMP ids) no connection of the stripe
//! uses. A new connection's port is a find-first-set from a random start
//! instead of the kernel's probe-and-look-up loop, so allocation costs the same
//! at 99 % pool use as at 1 %, and never fails while the bitmap has a free port
//! in the rule's range.
//!
//! The stripe that holds a connection's record keeps its port in use: the
//! table adds it when a SRC_NAT connection is confirmed and releases it when
//! the connection leaves, whichever way it leaves (GC, delete, early drop,
//! reclaim). A bitmap is a hint, not the authority: a chosen port is still
//! checked against the table (a connection of another stripe, or one that is
//! not source-NATed, may hold that reply tuple), and when a range has no
//! free bit the kernel's search runs, since the kernel only needs the whole
//! reply tuple to be unique (one outside port may serve several remote
//! endpoints).

use crate::conn::{Conn, Status};
use crate::tuple::{Addr, Family, Tuple};

const PORTS: usize = 1 << 16;
const WORDS: usize = PORTS / 64;
const SUMMARY: usize = WORDS / 64;

/// Most bitmaps a stripe keeps (each ~137 KiB); NAT addresses beyond them use
/// the kernel's search (counted: [`PortUse::overflow`]).
pub const MAX_MAPS: usize = 256;

/// What a bitmap is for: the reply tuple's destination (the NAT address),
/// protocol and zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapKey {
    pub family: Family,
    pub addr: Addr,
    pub proto: u8,
    pub zone: u16,
}

/// The field source NAT chose in a reply tuple: its destination port, or for
/// ICMP echo its id.
pub fn nat_port(reply: &Tuple) -> u16 {
    if reply.is_icmp() {
        reply.src_port
    } else {
        reply.dst_port
    }
}

impl MapKey {
    pub fn of(reply: &Tuple) -> MapKey {
        MapKey {
            family: reply.family,
            addr: reply.dst,
            proto: reply.proto,
            zone: reply.zone,
        }
    }
}

/// One address's ports: a two-level bitmap of the unused ones, a bitmap of
/// the ones several connections share, and a use count for those.
///
/// A port most often has no user or one, and a new connection, like the one
/// it evicts, touches only one 16-byte pair of bitmap words (64 ports) for
/// it: the counts (128 KiB per address, far beyond the caches when a rule
/// has many addresses) are read and written only for shared ports.
pub struct PortMap {
    /// Per 64 ports: `[free, shared]`. Free bit set: no connection of the
    /// stripe uses the port. Shared bit set: two or more do, `users` counts
    /// them.
    bits: Box<[[u64; 2]]>,
    /// Connections using each shared port (0 for the others: their count is
    /// in the bits). Saturates: a port that reached `u16::MAX` users stays
    /// marked used (safe: it is never offered).
    users: Box<[u16]>,
    /// Bit `w` set: word `w` of the free bits has a set bit.
    summary: [u64; SUMMARY],
    /// Ports no connection uses (set free bits): a full map answers
    /// a search at once instead of walking its summary twice.
    unused: u32,
}

impl Default for PortMap {
    fn default() -> Self {
        PortMap {
            bits: vec![[u64::MAX, 0]; WORDS].into_boxed_slice(),
            users: vec![0; PORTS].into_boxed_slice(),
            summary: [u64::MAX; SUMMARY],
            unused: PORTS as u32,
        }
    }
}

impl PortMap {
    pub fn is_free(&self, port: u16) -> bool {
        self.users(port) == 0
    }

    /// Where the bits of `port` are (for a prefetch).
    pub fn word_of(&self, port: u16) -> *const u8 {
        &self.bits[port as usize / 64] as *const [u64; 2] as *const u8
    }

    pub fn users(&self, port: u16) -> u16 {
        let ([free, shared], bit) = (self.bits[port as usize / 64], 1u64 << (port % 64));
        if free & bit != 0 {
            0
        } else if shared & bit != 0 {
            self.users[port as usize]
        } else {
            1
        }
    }

    /// One more user of `port`; true if it was unused.
    fn acquire(&mut self, port: u16) -> bool {
        let w = port as usize / 64;
        let bit = 1u64 << (port % 64);
        let [free, shared] = &mut self.bits[w];
        if *free & bit != 0 {
            *free &= !bit;
            if *free == 0 {
                self.summary[w / 64] &= !(1u64 << (w % 64));
            }
            self.unused -= 1;
            return true;
        }
        let u = &mut self.users[port as usize];
        if *shared & bit == 0 {
            *shared |= bit;
            *u = 2;
        } else {
            *u = u.saturating_add(1);
        }
        false
    }

    /// One user of `port` fewer; true if it is now unused.
    fn release(&mut self, port: u16) -> bool {
        let w = port as usize / 64;
        let bit = 1u64 << (port % 64);
        let [free, shared] = &mut self.bits[w];
        if *free & bit != 0 {
            return false;
        }
        if *shared & bit != 0 {
            let u = &mut self.users[port as usize];
            if *u != u16::MAX {
                *u -= 1;
                if *u == 1 {
                    *u = 0;
                    *shared &= !bit;
                }
            }
            return false;
        }
        *free |= bit;
        self.summary[w / 64] |= 1u64 << (w % 64);
        self.unused += 1;
        true
    }

    /// The first free port in `from..=hi`.
    pub fn first_free(&self, from: u16, hi: u16) -> Option<u16> {
        if from > hi || self.unused == 0 {
            return None;
        }
        let w = from as usize / 64;
        let bits = self.bits[w][0] & (u64::MAX << (from % 64));
        let word = if bits != 0 {
            w
        } else {
            // The next word with a free bit, from the summary.
            let next = w + 1;
            if next >= WORDS {
                return None;
            }
            let mut s = next / 64;
            let mut m = self.summary[s] & (u64::MAX << (next % 64));
            loop {
                if m != 0 {
                    break s * 64 + m.trailing_zeros() as usize;
                }
                s += 1;
                if s >= SUMMARY {
                    return None;
                }
                m = self.summary[s];
            }
        };
        let bits = if word == w { bits } else { self.bits[word][0] };
        let port = word * 64 + bits.trailing_zeros() as usize;
        (port <= hi as usize).then_some(port as u16)
    }
}

/// A walk over the free ports of `lo..=hi` in order from `start`, wrapping
/// once. It does not hold the bitmap (the caller looks each candidate up in
/// the table between steps): each step is given the bitmap as it is then, or
/// None when the address has none yet (every port is free).
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    lo: u16,
    hi: u16,
    start: u16,
    next: Option<u16>,
    wrapped: bool,
}

impl Cursor {
    pub fn new(lo: u16, hi: u16, start: u16) -> Cursor {
        debug_assert!(lo <= start && start <= hi);
        Cursor {
            lo,
            hi,
            start,
            next: Some(start),
            wrapped: false,
        }
    }

    fn wrap(&mut self) {
        self.wrapped = true;
        self.next = Some(self.lo).filter(|&lo| lo < self.start);
    }

    pub fn next(&mut self, map: Option<&PortMap>) -> Option<u16> {
        loop {
            let from = self.next?;
            let found = match map {
                Some(m) => m.first_free(from, self.hi),
                None => Some(from).filter(|&p| p <= self.hi),
            };
            match found {
                Some(p) if self.wrapped && p >= self.start => {
                    self.next = None;
                    return None;
                }
                Some(p) => {
                    self.next = (p < self.hi).then(|| p + 1);
                    if self.next.is_none() && !self.wrapped {
                        self.wrap();
                    }
                    return Some(p);
                }
                None if !self.wrapped => self.wrap(),
                None => {
                    self.next = None;
                    return None;
                }
            }
        }
    }
}

/// Slots of a stripe's bitmap index: twice [`MAX_MAPS`], a power of two.
const INDEX_SLOTS: usize = 2 * MAX_MAPS;

/// A key as the index compares it: the address, and the protocol, zone
/// and family in one word (a compare of three words, not of four fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    addr: [u64; 2],
    rest: u64,
}

impl Packed {
    #[inline(always)]
    fn of(key: &MapKey) -> Packed {
        let a = u128::from_ne_bytes(key.addr.0);
        Packed {
            addr: [a as u64, (a >> 64) as u64],
            rest: u64::from(key.proto) | u64::from(key.zone) << 8 | (key.family as u64) << 24,
        }
    }

    /// The index slot the key starts its probe at: a multiply-shift of its
    /// words folded into one. The keys come from the configuration (NAT
    /// addresses) and egress ports, not from packets, so a keyed hash buys
    /// nothing here; a rule's addresses are a range, and the multiply
    /// carries the bits that differ into the top ones.
    #[inline(always)]
    fn slot(&self) -> usize {
        let x = self.addr[0] ^ self.addr[1].rotate_left(17) ^ (self.rest << 32);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - INDEX_SLOTS.trailing_zeros())) as usize
    }
}

/// A stripe's bitmaps, made on first use of an address. Found through a
/// fixed open-addressed index (at most half full), with the last one used
/// tried first (a NAT rule usually has one address, or a few).
pub struct PortMaps {
    keys: Vec<Packed>,
    maps: Vec<PortMap>,
    /// Per slot, 1 + the bitmap's position in `keys` / `maps`; 0: empty.
    index: Box<[u16]>,
    last: usize,
    /// Ports (ICMP ids) in use, over all bitmaps.
    in_use: u64,
    /// Connections whose address found no room for a bitmap (`MAX_MAPS`).
    overflow: u64,
}

impl Default for PortMaps {
    fn default() -> Self {
        PortMaps {
            keys: Vec::new(),
            maps: Vec::new(),
            index: vec![0; INDEX_SLOTS].into_boxed_slice(),
            last: 0,
            in_use: 0,
            overflow: 0,
        }
    }
}

/// What a stripe's source NAT bitmaps hold, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortUse {
    /// Ports (and ICMP ids) some connection uses.
    pub in_use: u64,
    /// Bitmaps: (NAT address, protocol, zone) combinations seen.
    pub maps: usize,
    /// Connections whose NAT address found no room for a bitmap (the
    /// kernel's search served them).
    pub overflow: u64,
}

impl PortMaps {
    /// The slot of `key`'s bitmap, if it has one.
    #[inline]
    pub fn find(&mut self, key: &MapKey) -> Option<usize> {
        let k = Packed::of(key);
        if self.keys.get(self.last) == Some(&k) {
            return Some(self.last);
        }
        self.probe(&k)
    }

    fn probe(&mut self, k: &Packed) -> Option<usize> {
        let mut slot = k.slot();
        loop {
            let i = usize::from(self.index[slot]).checked_sub(1)?;
            if self.keys.get(i) == Some(k) {
                self.last = i;
                return Some(i);
            }
            slot = (slot + 1) % INDEX_SLOTS;
        }
    }

    /// The bitmap in slot `i` (from [`PortMaps::find`]).
    pub fn at(&self, i: usize) -> &PortMap {
        &self.maps[i]
    }

    pub fn get(&mut self, key: &MapKey) -> Option<&PortMap> {
        let i = self.find(key)?;
        Some(&self.maps[i])
    }

    /// Whether a bitmap for a new address can still be made.
    pub fn has_space(&self) -> bool {
        self.maps.len() < MAX_MAPS
    }

    /// A confirmed connection's port comes into use (if it is source-NATed
    /// with ports). `map`: the slot of its bitmap, if its search found it.
    pub fn conn_added(&mut self, c: &Conn, map: Option<usize>) {
        let Some((key, port)) = tracked(c.status, &c.tuples[1]) else {
            return;
        };
        debug_assert!(map.is_none_or(|m| self.find(&key) == Some(m)));
        if let Some(i) = map.or_else(|| self.find(&key)) {
            self.in_use += u64::from(self.maps[i].acquire(port));
        } else if self.has_space() {
            let mut m = PortMap::default();
            m.acquire(port);
            self.in_use += 1;
            let k = Packed::of(&key);
            let mut slot = k.slot();
            while self.index[slot] != 0 {
                slot = (slot + 1) % INDEX_SLOTS;
            }
            // At most MAX_MAPS entries in twice as many slots: one is free.
            self.index[slot] = (self.maps.len() + 1) as u16;
            self.keys.push(k);
            self.maps.push(m);
        } else {
            self.overflow += 1;
        }
    }

    /// Starts loading the bitmap word of `port` in `key`'s bitmap (a
    /// connection's, as [`tracked`] finds them: its removal writes it);
    /// the slot of that bitmap (bitmaps are never taken away: it holds).
    pub fn prefetch_port(
        &mut self,
        key: &MapKey,
        port: u16,
        prefetch: fn(*const u8),
    ) -> Option<usize> {
        let i = self.find(key)?;
        prefetch(self.maps[i].word_of(port));
        Some(i)
    }

    /// A connection (`status`, reply tuple `reply`) left the table: its
    /// port is released.
    pub fn conn_removed(&mut self, status: Status, reply: &Tuple) {
        if let Some((key, port)) = tracked(status, reply) {
            self.release(&key, port);
        }
    }

    /// [`PortMaps::conn_removed`] of the port [`tracked`] found: `key`'s
    /// bitmap, `port`.
    pub fn release(&mut self, key: &MapKey, port: u16) {
        if let Some(i) = self.find(key) {
            self.release_at(i, port);
        }
    }

    /// [`PortMaps::release`] in the bitmap at `slot` (as
    /// [`PortMaps::prefetch_port`] found it).
    pub fn release_at(&mut self, slot: usize, port: u16) {
        if let Some(m) = self.maps.get_mut(slot) {
            self.in_use -= u64::from(m.release(port));
        }
    }

    /// What the bitmaps hold (kept up to date: O(1)).
    pub fn usage(&self) -> PortUse {
        PortUse {
            in_use: self.in_use,
            maps: self.maps.len(),
            overflow: self.overflow,
        }
    }
}

/// The bitmap and port a connection occupies, if source NAT chose a port for it.
pub fn tracked(status: Status, reply: &Tuple) -> Option<(MapKey, u16)> {
    tracked_parts(status, MapKey::of(reply), (reply.src_port, reply.dst_port))
}

/// [`tracked`] of a reply tuple given as its bitmap's key and its ports
/// (source, destination).
#[inline]
pub fn tracked_parts(status: Status, key: MapKey, ports: (u16, u16)) -> Option<(MapKey, u16)> {
    if !status.has(Status::SRC_NAT) {
        return None;
    }
    let icmp = crate::tuple::is_icmp_proto(key.proto);
    if !(super::has_ports(key.proto) || icmp) {
        return None;
    }
    // (The id of an ICMP echo is its tuples' source port.)
    Some((key, if icmp { ports.0 } else { ports.1 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn walk(m: Option<&PortMap>, lo: u16, hi: u16, start: u16) -> Vec<u16> {
        let mut c = Cursor::new(lo, hi, start);
        std::iter::from_fn(|| c.next(m)).collect()
    }

    fn used(ports: &[u16]) -> PortMap {
        let mut m = PortMap::default();
        for &p in ports {
            m.acquire(p);
        }
        m
    }

    #[test]
    fn first_free_skips_used_words_and_respects_the_range() {
        let m = used(&(1000..=5000).collect::<Vec<_>>());
        assert_eq!(m.first_free(1000, 65535), Some(5001));
        assert_eq!(m.first_free(999, 65535), Some(999));
        assert_eq!(m.first_free(1000, 5000), None);
        assert_eq!(m.first_free(65535, 65535), Some(65535));
        let mut full = used(&(0..=65535).collect::<Vec<_>>());
        assert_eq!(full.first_free(0, 65535), None);
        // The count of unused ports follows a release and a re-use.
        full.release(40_000);
        assert_eq!(full.first_free(0, 65535), Some(40_000));
        assert_eq!(full.first_free(40_001, 65535), None);
        full.acquire(40_000);
        assert_eq!(full.first_free(0, 65535), None);
        full.acquire(40_000);
        full.release(40_000);
        assert_eq!(
            full.first_free(0, 65535),
            None,
            "a port with a user left is not free"
        );
    }

    #[test]
    fn counts_keep_a_shared_port_used_until_its_last_user_leaves() {
        let mut m = used(&[7, 7]);
        m.release(7);
        assert!(!m.is_free(7));
        m.release(7);
        assert!(m.is_free(7));
        m.release(7); // an extra release does not underflow
        assert_eq!(m.users(7), 0);
    }

    #[test]
    fn iteration_wraps_once_and_stops_before_the_start() {
        let m = used(&[10, 12]);
        assert_eq!(walk(Some(&m), 10, 14, 12), vec![13, 14, 11]);
        assert_eq!(walk(Some(&m), 10, 14, 10), vec![11, 13, 14]);
        assert_eq!(walk(None, 10, 14, 13), vec![13, 14, 10, 11, 12]);
        assert_eq!(walk(None, 0, 65535, 65535).len(), 65536);
        let mut none = PortMaps::default();
        assert!(none.get(&MapKey::of(&Tuple::default())).is_none());
    }

    #[test]
    fn every_address_up_to_the_most_maps_is_found_again() {
        let reply = |i: usize, port: u16| Tuple {
            dst: Addr::from_v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
            dst_port: port,
            proto: crate::tuple::IPPROTO_UDP,
            ..Tuple::default()
        };
        let conn = |i: usize, port: u16| Conn {
            tuples: [Tuple::default(), reply(i, port)],
            status: Status(Status::SRC_NAT),
            ..Conn::default()
        };
        let mut maps = PortMaps::default();
        for i in 0..MAX_MAPS + 3 {
            maps.conn_added(&conn(i, 1000 + i as u16), None);
        }
        assert_eq!(maps.usage().maps, MAX_MAPS);
        assert_eq!(maps.usage().overflow, 3);
        // In another order than they came, so the last-used shortcut does
        // not answer.
        for i in (0..MAX_MAPS).rev() {
            let m = maps.get(&MapKey::of(&reply(i, 0))).expect("a bitmap");
            assert_eq!(m.users(1000 + i as u16), 1, "address {i}");
            assert_eq!(m.users(999), 0);
        }
        for i in MAX_MAPS..MAX_MAPS + 3 {
            assert!(maps.get(&MapKey::of(&reply(i, 0))).is_none());
        }
        // Another protocol or zone of a known address is another bitmap.
        let other = MapKey {
            proto: crate::tuple::IPPROTO_TCP,
            ..MapKey::of(&reply(0, 0))
        };
        assert!(maps.get(&other).is_none());
        let c = conn(7, 1007);
        maps.conn_removed(c.status, &c.tuples[1]);
        assert!(maps.get(&MapKey::of(&reply(7, 0))).unwrap().is_free(1007));
        assert_eq!(maps.usage().in_use, MAX_MAPS as u64 - 1);
    }

    #[test]
    fn a_leaving_connections_port_word_is_what_is_loaded_for_it() {
        use std::cell::RefCell;
        thread_local!(static LOADED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) });
        fn record(p: *const u8) {
            LOADED.with(|v| v.borrow_mut().push(p as usize));
        }
        // What an eviction loads of the connection it will remove.
        fn prefetch_conn(maps: &mut PortMaps, c: &Conn) {
            if let Some((key, port)) = tracked(c.status, &c.tuples[1]) {
                maps.prefetch_port(&key, port, record);
            }
        }
        let mut maps = PortMaps::default();
        let reply = |port: u16| Tuple {
            src: Addr::from_v4([198, 51, 100, 10]),
            dst: Addr::from_v4([203, 0, 113, 1]),
            src_port: 9,
            dst_port: port,
            proto: crate::tuple::IPPROTO_UDP,
            family: Family::V4,
            zone: 0,
        };
        let conn = |port: u16, status: u32| Conn {
            tuples: [reply(port).invert().unwrap(), reply(port)],
            status: Status(status),
            ..Conn::default()
        };
        maps.conn_added(&conn(40_000, Status::SRC_NAT), None);
        let c = conn(40_001, Status::SRC_NAT);
        prefetch_conn(&mut maps, &c);
        let i = maps.find(&MapKey::of(&reply(40_001))).unwrap();
        assert_eq!(
            LOADED.with(|v| v.borrow().clone()),
            vec![maps.at(i).word_of(40_001) as usize]
        );
        // Not source-NATed, or an address with no bitmap: nothing to load.
        let c = conn(40_001, 0);
        prefetch_conn(&mut maps, &c);
        let mut other = conn(7, Status::SRC_NAT);
        other.tuples[1].dst = Addr::from_v4([203, 0, 113, 2]);
        prefetch_conn(&mut maps, &other);
        assert_eq!(LOADED.with(|v| v.borrow().len()), 1);
    }

    #[test]
    fn a_port_at_the_most_users_stays_used() {
        let mut m = PortMap::default();
        for _ in 0..u32::from(u16::MAX) + 5 {
            m.acquire(9);
        }
        assert_eq!(m.users(9), u16::MAX);
        m.release(9);
        assert_eq!(m.users(9), u16::MAX);
        assert!(!m.is_free(9));
        assert_eq!(m.first_free(9, 9), None);
    }

    proptest! {
        /// Any sequence of acquires and releases leaves each port's count,
        /// its free bit and the count of unused ports as a plain count per
        /// port would (released below zero: nothing happens).
        #[test]
        fn counts_follow_a_model(ops in proptest::collection::vec((any::<bool>(), 60u16..200), 0..600)) {
            let mut m = PortMap::default();
            let mut model = std::collections::HashMap::<u16, u16>::new();
            for (add, port) in ops {
                let n = model.entry(port).or_default();
                if add {
                    prop_assert_eq!(m.acquire(port), *n == 0);
                    *n += 1;
                } else {
                    prop_assert_eq!(m.release(port), *n == 1);
                    *n = n.saturating_sub(1);
                }
            }
            for p in 0u16..=300 {
                let n = model.get(&p).copied().unwrap_or(0);
                prop_assert_eq!(m.users(p), n);
                prop_assert_eq!(m.first_free(p, p).is_some(), n == 0);
            }
            let busy = model.values().filter(|&&n| n > 0).count() as u32;
            prop_assert_eq!(m.unused, PORTS as u32 - busy);
        }
    }

    proptest! {
        /// The walk yields exactly the unused ports of the range,
        /// each once, starting at the first free one from `start`.
        #[test]
        fn free_from_is_the_unused_ports(
            used_ports in proptest::collection::vec(0u16..300, 0..250),
            lo in 0u16..300, span in 0u16..300, off in 0u16..300,
        ) {
            let hi = lo.saturating_add(span).min(299);
            let start = lo + off % (hi - lo + 1);
            let m = used(&used_ports);
            let got = walk(Some(&m), lo, hi, start);
            let want: Vec<u16> = (start..=hi).chain(lo..start)
                .filter(|p| !used_ports.contains(p)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
