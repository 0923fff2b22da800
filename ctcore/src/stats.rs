//! Counters, named like /proc/net/stat/nf_conntrack. One `CtStats` per worker
//! (the appliance keeps each in its own cache line); the control thread sums them.

/// Per-worker conntrack counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtStats {
    /// Packets that matched a connection in the table.
    pub found: u64,
    /// Connections created (unconfirmed) for a first packet.
    pub new: u64,
    /// Packets conntrack could not track (INVALID).
    pub invalid: u64,
    /// Packets conntrack was not asked to track (UNTRACKED: e.g. IPv6 ND).
    pub ignore: u64,
    /// Connections confirmed into the table.
    pub insert: u64,
    /// Confirms that failed: the tuple was already there (a clash) or no room.
    pub insert_failed: u64,
    /// Packets dropped by conntrack itself (table full and nothing to evict).
    pub drop: u64,
    /// Connections evicted to make room (the kernel's early_drop).
    pub early_drop: u64,
    /// Lookups restarted (a TCP SYN reopening a closed connection: -NF_REPEAT).
    pub search_restart: u64,
    /// Connections removed because they expired (found on lookup or by GC).
    pub expired: u64,
    /// Events lost because the event buffer was full.
    pub events_dropped: u64,
    /// Packets that followed their datagram's first fragment.
    pub frag_followed: u64,
    /// Non-first fragments whose first fragment was not seen (INVALID).
    pub frag_orphan: u64,
    /// Packets whose L4 checksum the NIC verified (RX offload: no software check).
    pub csum_offloaded: u64,
    /// Fragment-tracking entries of unfinished datagrams taken over by
    /// another datagram's fragment (the worker's fixed table of fragment
    /// slots is full at that place): the evicted datagram's later fragments
    /// are orphans.
    pub frag_evicted: u64,
    /// Reassembly's counters, where the caller reassembles
    /// ([`crate::defrag`]; the engine's own `frag_*` above count the
    /// fragments that reach it unreassembled).
    pub defrag: crate::defrag::DefragStats,
}

impl CtStats {
    pub fn add(&mut self, o: &CtStats) {
        self.found += o.found;
        self.new += o.new;
        self.invalid += o.invalid;
        self.ignore += o.ignore;
        self.insert += o.insert;
        self.insert_failed += o.insert_failed;
        self.drop += o.drop;
        self.early_drop += o.early_drop;
        self.search_restart += o.search_restart;
        self.expired += o.expired;
        self.events_dropped += o.events_dropped;
        self.frag_followed += o.frag_followed;
        self.frag_orphan += o.frag_orphan;
        self.csum_offloaded += o.csum_offloaded;
        self.frag_evicted += o.frag_evicted;
        self.defrag.add(&o.defrag);
    }

    /// (name, value) pairs in a fixed order, for printing and metrics.
    pub fn fields(&self) -> [(&'static str, u64); 25] {
        let d = self.defrag.fields();
        [
            ("found", self.found),
            ("new", self.new),
            ("invalid", self.invalid),
            ("ignore", self.ignore),
            ("insert", self.insert),
            ("insert_failed", self.insert_failed),
            ("drop", self.drop),
            ("early_drop", self.early_drop),
            ("search_restart", self.search_restart),
            ("expired", self.expired),
            ("events_dropped", self.events_dropped),
            ("frag_followed", self.frag_followed),
            ("frag_orphan", self.frag_orphan),
            ("csum_offloaded", self.csum_offloaded),
            ("frag_evicted", self.frag_evicted),
            d[0],
            d[1],
            d[2],
            d[3],
            d[4],
            d[5],
            d[6],
            d[7],
            d[8],
            d[9],
        ]
    }
}

/// Worker slots of a [`SlotCounter`]: one per worker up to the table's
/// most stripes (one worker each), and one more all others share.
const COUNTER_SLOTS: usize = crate::table::MAX_STRIPES as usize;

/// Which slot of a [`SlotCounter`] a worker adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterSlot {
    /// The worker's own: only it writes there.
    Own(usize),
    /// The shared one (workers beyond [`COUNTER_SLOTS`]): a locked add.
    Shared,
}

impl CounterSlot {
    /// The slot of the `n`th worker made.
    pub fn of_worker(n: usize) -> CounterSlot {
        if n < COUNTER_SLOTS {
            CounterSlot::Own(n)
        } else {
            CounterSlot::Shared
        }
    }
}

/// A counter of a shared object (a NAT rule) that every worker adds to on
/// the packet path: one cache line per worker, written by that worker alone
/// with a plain load and store, summed by readers. A locked add on one
/// shared word serialises the workers on its line and drains the store
/// buffer (about 40 cycles per new source NAT connection, measured).
#[derive(Debug)]
pub struct SlotCounter {
    slots: Box<[crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>]>,
}

impl Default for SlotCounter {
    fn default() -> Self {
        SlotCounter {
            slots: (0..=COUNTER_SLOTS).map(|_| Default::default()).collect(),
        }
    }
}

impl SlotCounter {
    #[inline]
    pub fn add(&self, slot: CounterSlot, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        match slot {
            CounterSlot::Own(i) => {
                let s = &self.slots[i];
                s.store(s.load(Relaxed) + n, Relaxed);
            }
            CounterSlot::Shared => {
                self.slots[COUNTER_SLOTS].fetch_add(n, Relaxed);
            }
        }
    }

    /// The sum over all workers.
    pub fn get(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod slot_counter_tests {
    use super::*;

    #[test]
    fn workers_adding_at_once_lose_nothing() {
        let c = SlotCounter::default();
        std::thread::scope(|s| {
            // Own slots, and more workers than slots sharing the last one.
            for n in [0, 1, 2, COUNTER_SLOTS, COUNTER_SLOTS + 1, COUNTER_SLOTS + 7] {
                let c = &c;
                s.spawn(move || {
                    for _ in 0..100_000 {
                        c.add(CounterSlot::of_worker(n), 1);
                    }
                });
            }
        });
        assert_eq!(c.get(), 600_000);
        assert_eq!(CounterSlot::of_worker(3), CounterSlot::Own(3));
        assert_eq!(CounterSlot::of_worker(COUNTER_SLOTS), CounterSlot::Shared);
    }
}
