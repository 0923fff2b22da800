//! A stripe: one worker's share of the table — its bucket index, its slab of
//! records and their free list — all reserved when the table is made.

use super::bucket::Bucket;
use super::eim::EimMaps;
use super::record::Records;
use super::wheel::{slot_of, Link, Wheel, NIL};
use crate::conn::Ext;
use crate::nat::ports::PortMaps;

/// Record memory from which evictions are prefetched (about an L2 cache and
/// a share of L3: below it the records stay cached).
const EVICTION_PREFETCH_BYTES: usize = 2 << 20;

/// A record's hot line and cold part.
pub const RECORD_BYTES: usize =
    std::mem::size_of::<super::record::Hot>() + std::mem::size_of::<super::record::Cold>();

pub struct Stripe {
    pub buckets: Box<[Bucket]>,
    pub records: Records,
    /// Each record's counters and start time, when accounting is on (else
    /// empty).
    pub ext: Box<[Ext]>,
    pub live: u32,
    /// Whether a full stripe's evictions are prefetched a stage ahead
    /// (`Guard::prefetch_eviction`): only where the records outgrow the
    /// caches, since the prefetch costs ~200 instructions per new
    /// connection and saves only misses.
    pub prefetch_evictions: bool,
    /// Where early drop's look through the slab starts next.
    pub scan_cursor: u32,
    /// Expiry: every live record is in one of its slots.
    pub wheel: Wheel,
    /// Source NAT ports the stripe's connections use (added on insert,
    /// released on remove).
    pub ports: PortMaps,
    /// Endpoint-independent mappings whose endpoints hash here.
    pub eim: EimMaps,
    /// Each record's helper data, when helpers are on (else empty).
    pub help: Box<[crate::helper::HelpState]>,
    /// Expectations whose tuples hash here (none when helpers are off).
    pub expects: crate::helper::Expects,
    /// Ids handed out: `next * MAX_STRIPES + index` keeps them unique across stripes.
    id_next: u32,
    index: u32,
}

/// A boxed slice of `n` default values, its memory placed by `advise`
/// (told before it is reserved, and after, before the first writes fault
/// the pages in).
pub(super) fn reserve<T: Default + Clone>(n: usize, advise: &mut dyn super::Memory) -> Box<[T]> {
    let len = n * std::mem::size_of::<T>();
    advise.placing(len);
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise.reserved(v.as_ptr() as usize, len);
    v.resize(n, T::default());
    v.into_boxed_slice()
}

impl Stripe {
    /// Stripe `index` with room for `capacity` connections and `eim_limit`
    /// endpoint-independent mappings.
    pub fn new(
        index: u32,
        capacity: u32,
        eim_limit: u32,
        extensions: bool,
        advise: &mut dyn super::Memory,
    ) -> Stripe {
        // Two entries per connection, 8 per bucket: at most 50% of the slots
        // in use when full (short probe chains), at least 2 buckets. Any
        // count (buckets are chosen by multiply-shift): 32 bytes of index
        // per connection, not up to 64 after rounding to a power of two.
        let nbuckets = (capacity as usize / 2).max(2);
        // What every packet reads (the records' hot lines and the buckets)
        // is reserved first: where only part of the table fits on 1 GiB
        // pages, it is these regions that get them.
        let hot = reserve(capacity as usize, advise);
        let buckets = reserve(nbuckets, advise);
        let records = Records::new(hot, advise);
        Stripe {
            buckets,
            records,
            ext: reserve(if extensions { capacity as usize } else { 0 }, advise),
            live: 0,
            prefetch_evictions: capacity as usize * RECORD_BYTES >= EVICTION_PREFETCH_BYTES,
            scan_cursor: 0,
            wheel: Wheel::default(),
            ports: PortMaps::default(),
            eim: EimMaps::new(eim_limit, advise),
            help: Box::default(),
            expects: crate::helper::Expects::default(),
            id_next: 1,
            index,
        }
    }

    /// A connection id unique in the table (wraps like the kernel's).
    pub fn next_id(&mut self) -> u32 {
        let id = self
            .id_next
            .wrapping_mul(super::MAX_STRIPES)
            .wrapping_add(self.index);
        self.id_next = self.id_next.wrapping_add(1);
        id
    }

    /// Puts record `local` into the wheel slot for `deadline_ms`.
    pub fn link(&mut self, local: u32, deadline_ms: u64) {
        let tick = self.wheel.place(deadline_ms);
        let slot = slot_of(tick);
        let head = self.wheel.heads[slot];
        let cold = &mut self.records.cold;
        cold[local as usize].link = Link::new(head, NIL, slot);
        if head != NIL {
            cold[head as usize].link.set_prev(local);
        }
        self.wheel.heads[slot] = local;
    }

    /// Takes record `local` out of the wheel (if it is in).
    pub fn unlink(&mut self, local: u32) {
        let cold = &mut self.records.cold;
        let l = cold[local as usize].link;
        let Some(slot) = l.slot() else {
            return;
        };
        if l.prev() != NIL {
            cold[l.prev() as usize].link.set_next(l.next());
        } else {
            self.wheel.heads[slot] = l.next();
        }
        if l.next() != NIL {
            cold[l.next() as usize].link.set_prev(l.prev());
        }
        cold[local as usize].link = Link::default();
    }

    /// Bytes of the stripe's memory in use: what was reserved at start
    /// (records, index, wheel, mappings, extensions) and the state lines and
    /// IPv6 addresses handed out (their pools' memory is touched only as
    /// they are).
    pub fn reserved_bytes(&self) -> usize {
        self.records.reserved_bytes()
            + self.records.pool_bytes()
            + self.ext.len() * std::mem::size_of::<Ext>()
            + self.buckets.len() * std::mem::size_of::<Bucket>()
            + self.wheel.heads.len() * 4
            + self.eim.reserved_bytes()
            + self.help.len() * std::mem::size_of::<crate::helper::HelpState>()
            + self.expects.capacity() * std::mem::size_of::<crate::helper::Expect>()
    }
}
