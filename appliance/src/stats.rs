//! Per-lcore counters (one cache-padded block per worker, written only by its
//! worker, read by the control thread) and the named reasons a packet is freed.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use serde::Serialize;

use crate::config::MAX_PORTS;

/// Why a packet was freed instead of transmitted. Each variant is a counter
/// and a label (`name()`). Every mbuf a worker frees is counted under one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Malformed Ethernet / ARP / IPv4 / IPv6 header (length, version, checksum), or a multi-segment mbuf
    /// (or, leaving by a VLAN sub-port, no headroom for the tag).
    BadHeader,
    /// Unicast to another MAC address (seen in promiscuous mode).
    OtherHost,
    /// An EtherType the gateway does not handle (LLDP, QinQ, ...).
    Unsupported,
    /// No route to the destination.
    NoRoute,
    /// Not forwardable: multicast / broadcast / link-local / loopback / unspecified addresses.
    NotRoutable,
    /// TTL or hop limit would reach zero (an ICMP time exceeded was sent).
    TtlExceeded,
    /// The next hop did not answer ARP / ND in time, or the wait queue was full.
    NoNeighbour,
    /// The TX queue was full.
    TxFull,
    /// Addressed to the appliance but not something it answers (only echo is).
    LocalUnhandled,
    /// ARP that needs no answer (a reply, a request for another address): learned from, then freed.
    ArpConsumed,
    /// Neighbour discovery that needs no answer (NA, RS, RA, redirect, NS for another address).
    NdConsumed,
    /// Refused by a `[[policy]]` rule or the policy default.
    Policy,
    /// Dropped by conntrack itself: table full with nothing to evict, an insert
    /// clash, or no free NAT port.
    Conntrack,
    /// Still queued (waiting for a neighbour) when the appliance stopped.
    Shutdown,
    /// Software dispatch: the ring to the owning worker took nothing for
    /// 100 ms (the owner stalled); until then the receiving worker waits
    /// and receives nothing (the packets wait in the port's queue).
    HandoffFull,
    /// Received while the appliance is the standby box of an HA pair
    /// (`[sync] role = "backup"`, before its takeover).
    Standby,
    /// Fragments reassembly dropped, by the kernel's rules (see
    /// `ctcore::defrag`): one that overlapped its datagram's others (the
    /// datagram with it: `frag_datagram_dropped`), a duplicate, inconsistent
    /// lengths, a datagram over 65,535 bytes, a datagram not complete in
    /// time, fragment memory full.
    FragOverlap,
    FragDuplicate,
    FragCorrupt,
    FragTooBig,
    FragTimeout,
    FragMemory,
    FragDatagramDropped,
    /// 802.1Q-tagged on a port with no sub-port of that VLAN id (or with
    /// a second tag behind the first: stacked VLANs are not handled).
    UnknownVlan,
}

impl From<ctcore::defrag::Cause> for DropReason {
    fn from(c: ctcore::defrag::Cause) -> DropReason {
        use ctcore::defrag::Cause;
        match c {
            Cause::Overlap => DropReason::FragOverlap,
            Cause::Duplicate => DropReason::FragDuplicate,
            Cause::Corrupt => DropReason::FragCorrupt,
            Cause::TooBig => DropReason::FragTooBig,
            Cause::Timeout => DropReason::FragTimeout,
            Cause::Memory => DropReason::FragMemory,
            Cause::DatagramDropped => DropReason::FragDatagramDropped,
        }
    }
}

impl DropReason {
    pub const COUNT: usize = 24;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::BadHeader,
        DropReason::OtherHost,
        DropReason::Unsupported,
        DropReason::NoRoute,
        DropReason::NotRoutable,
        DropReason::TtlExceeded,
        DropReason::NoNeighbour,
        DropReason::TxFull,
        DropReason::LocalUnhandled,
        DropReason::ArpConsumed,
        DropReason::NdConsumed,
        DropReason::Policy,
        DropReason::Conntrack,
        DropReason::Shutdown,
        DropReason::HandoffFull,
        DropReason::Standby,
        DropReason::FragOverlap,
        DropReason::FragDuplicate,
        DropReason::FragCorrupt,
        DropReason::FragTooBig,
        DropReason::FragTimeout,
        DropReason::FragMemory,
        DropReason::FragDatagramDropped,
        DropReason::UnknownVlan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::BadHeader => "bad_header",
            DropReason::OtherHost => "other_host",
            DropReason::Unsupported => "unsupported",
            DropReason::NoRoute => "no_route",
            DropReason::NotRoutable => "not_routable",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::TxFull => "tx_full",
            DropReason::LocalUnhandled => "local_unhandled",
            DropReason::ArpConsumed => "arp_consumed",
            DropReason::NdConsumed => "nd_consumed",
            DropReason::Policy => "policy",
            DropReason::Conntrack => "conntrack",
            DropReason::Shutdown => "shutdown",
            DropReason::HandoffFull => "handoff_full",
            DropReason::Standby => "standby",
            DropReason::UnknownVlan => "unknown_vlan",
            DropReason::FragOverlap
            | DropReason::FragDuplicate
            | DropReason::FragCorrupt
            | DropReason::FragTooBig
            | DropReason::FragTimeout
            | DropReason::FragMemory
            | DropReason::FragDatagramDropped => self.cause().map_or("", |c| c.name()),
        }
    }

    fn cause(self) -> Option<ctcore::defrag::Cause> {
        use ctcore::defrag::Cause;
        Some(match self {
            DropReason::FragOverlap => Cause::Overlap,
            DropReason::FragDuplicate => Cause::Duplicate,
            DropReason::FragCorrupt => Cause::Corrupt,
            DropReason::FragTooBig => Cause::TooBig,
            DropReason::FragTimeout => Cause::Timeout,
            DropReason::FragMemory => Cause::Memory,
            DropReason::FragDatagramDropped => Cause::DatagramDropped,
            _ => return None,
        })
    }
}

/// A counter with one writer: the add is a plain load + store (no locked
/// instruction); readers on other threads see a recent value.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct LcoreStats {
    pub rx: [Counter; MAX_PORTS],
    pub tx: [Counter; MAX_PORTS],
    /// Packets routed to another port (the rest of tx is locally generated).
    pub forwarded: Counter,
    /// Mbufs the appliance allocated for packets of its own: ARP requests,
    /// neighbour solicitations, ICMP errors. (ARP replies, neighbour adverts
    /// and echo replies reuse the request's mbuf: they are not counted here.)
    pub generated: Counter,
    pub arp_requests_sent: Counter,
    pub arp_replies_sent: Counter,
    pub nd_solicits_sent: Counter,
    pub nd_adverts_sent: Counter,
    pub echo_replies_sent: Counter,
    pub icmp_errors_sent: Counter,
    /// Mbuf allocations that failed (an ARP / ND / ICMP error not sent).
    pub alloc_failed: Counter,
    /// Packets queued to wait for a neighbour.
    pub neigh_queued: Counter,
    /// Solicitations sent to refresh a stale neighbour (still in use).
    pub neigh_refreshes: Counter,
    /// ARP replies / neighbour advertisements for nothing ctgate asked
    /// about (no entry, not being resolved): ignored.
    pub neigh_unsolicited: Counter,
    /// Resolutions given up: the last packet waiting for a neighbour
    /// reached `neighbour_timeout_ms` unanswered.
    pub neigh_failed: Counter,
    pub drops: [Counter; DropReason::COUNT],
    /// Software dispatch: packets this worker received and handed to their
    /// owner, and packets other workers handed to it.
    pub handoff_out: Counter,
    pub handoff_in: Counter,
    /// TSC cycles spent on non-empty bursts, and those bursts' packet count.
    pub busy_cycles: Counter,
    pub busy_packets: Counter,
    /// Busy poll-loop iterations (rx bursts of every port, the stage, the
    /// forwarder, tx, a GC slice when due) by their length in TSC cycles, in
    /// [`hist_bucket`] buckets: the per-burst latency figures of `scripts/bench.sh`.
    pub burst_hist: Hist,
    /// The busy iterations longer than [`STALL_US`] (the vCPU was not running,
    /// or an interrupt ran), their cycles and their packets: subtracted from
    /// the busy figures they give the stall-free cycles/packet.
    pub stall_iterations: Counter,
    pub stall_cycles: Counter,
    pub stall_packets: Counter,
    /// The worker's heartbeat: one a millisecond while its loop runs (the
    /// expiry pass, packets or not). A worker that stopped polling stops it.
    pub heartbeats: Counter,
    /// With `ctgate run --profile-stages`: the cycles of the busy
    /// iterations up to [`STALL_US`] by [`Stage`], and those iterations'
    /// packets (their sum is the stall-free cycles/packet).
    pub stage_cycles: [Counter; Stage::COUNT],
    pub stage_packets: Counter,
}

/// Where a worker's busy poll-loop iteration spends its cycles (`ctgate run
/// --profile-stages`), in the order a packet passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The RX bursts of every port (empty polls included).
    Rx,
    /// The worker's classification (Ethernet, IP header checks) and the
    /// packets that leave the fast path (ARP, ND, fragments, VLANs).
    Classify,
    /// Conntrack stage 1: parse, hash, the buckets' prefetch.
    CtParse,
    /// Conntrack stage 2: signatures, the records' prefetch.
    CtPrefetch,
    /// Conntrack stage 3: lookup, tracker, NAT, the policy and route
    /// verdict, the new connections' confirm.
    CtTrack,
    /// The rest of the conntrack stage: results to verdicts, the NAT
    /// rewrite, events.
    CtRewrite,
    /// TTL, next hop, neighbour, MACs, TX buffering.
    Forward,
    /// TX bursts.
    Tx,
    /// The loop around them: expiry, maintenance, handoff rings.
    Other,
}

impl Stage {
    pub const COUNT: usize = 9;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Rx,
        Stage::Classify,
        Stage::CtParse,
        Stage::CtPrefetch,
        Stage::CtTrack,
        Stage::CtRewrite,
        Stage::Forward,
        Stage::Tx,
        Stage::Other,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Rx => "rx",
            Stage::Classify => "classify",
            Stage::CtParse => "ct_parse",
            Stage::CtPrefetch => "ct_prefetch",
            Stage::CtTrack => "ct_track",
            Stage::CtRewrite => "ct_rewrite",
            Stage::Forward => "forward",
            Stage::Tx => "tx",
            Stage::Other => "other",
        }
    }
}

/// A busy iteration longer than this (in microseconds) counts as a stall.
pub const STALL_US: u64 = 100;

/// A histogram of counters (single writer, like [`Counter`]).
#[derive(Debug)]
pub struct Hist(pub [Counter; HIST_BUCKETS]);

impl Default for Hist {
    fn default() -> Self {
        Hist(std::array::from_fn(|_| Counter::default()))
    }
}

/// Buckets of the iteration-length histogram: 8 per power of two (at most
/// 12.5 % wide), from 0 to 2^33 cycles; longer iterations land in the last.
pub const HIST_BUCKETS: usize = 256;

/// The histogram bucket of `cycles`.
#[inline(always)]
pub fn hist_bucket(cycles: u64) -> usize {
    if cycles < 8 {
        return cycles as usize;
    }
    let e = 63 - cycles.leading_zeros() as usize; // >= 3
    let sub = ((cycles >> (e - 3)) & 7) as usize;
    ((e - 2) * 8 + sub).min(HIST_BUCKETS - 1)
}

/// The smallest value of bucket `b` (its lower bound).
pub fn hist_lower(b: usize) -> u64 {
    if b < 8 {
        return b as u64;
    }
    let e = b / 8 + 2;
    let sub = (b % 8) as u64;
    (8 + sub) << (e - 3)
}

/// The percentile `p` (0..=100) of a histogram, as the upper bound of the
/// bucket it falls in (None when empty); p = 100 gives the maximum's bucket.
pub fn hist_percentile(h: &[u64], p: f64) -> Option<u64> {
    let n: u64 = h.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, c) in h.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(hist_lower(b + 1).saturating_sub(1).max(hist_lower(b)));
        }
    }
    None
}

impl LcoreStats {
    #[inline(always)]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
    }
}

/// Per-lcore counters, one padded block per worker so no two workers write a
/// cache line in common.
pub type SharedStats = Box<[CachePadded<LcoreStats>]>;

pub fn new_shared(workers: usize) -> SharedStats {
    (0..workers)
        .map(|_| CachePadded::new(LcoreStats::default()))
        .collect()
}

/// A snapshot summed over all workers (control thread only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub rx: u64,
    pub tx: u64,
    pub rx_per_port: Vec<u64>,
    pub tx_per_port: Vec<u64>,
    pub forwarded: u64,
    pub generated: u64,
    pub arp_requests_sent: u64,
    pub arp_replies_sent: u64,
    pub nd_solicits_sent: u64,
    pub nd_adverts_sent: u64,
    pub echo_replies_sent: u64,
    pub icmp_errors_sent: u64,
    pub alloc_failed: u64,
    pub neigh_queued: u64,
    pub neigh_refreshes: u64,
    pub neigh_unsolicited: u64,
    pub neigh_failed: u64,
    /// Packets handed to their owning worker, and received so (equal once
    /// the workers have drained their rings).
    pub handoff_out: u64,
    pub handoff_in: u64,
    pub dropped: u64,
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    pub busy_cycles: u64,
    pub busy_packets: u64,
    /// Busy iterations by length (see [`LcoreStats::burst_hist`]).
    pub burst_hist: Vec<u64>,
    /// Busy iterations over [`STALL_US`], their cycles and packets.
    pub stall_iterations: u64,
    pub stall_cycles: u64,
    pub stall_packets: u64,
    pub heartbeats: u64,
    /// `--profile-stages`: cycles by [`Stage`] name, and the packets of
    /// the iterations they were counted over (0: not profiled).
    pub stage_cycles: std::collections::BTreeMap<&'static str, u64>,
    pub stage_packets: u64,
}

impl Totals {
    /// Cycles per packet of the busy iterations, stalls included.
    pub fn cycles_per_packet(&self) -> Option<f64> {
        (self.busy_packets > 0).then(|| self.busy_cycles as f64 / self.busy_packets as f64)
    }

    /// Cycles per packet of the busy iterations up to [`STALL_US`]: the
    /// code's cost, not the host's pauses.
    pub fn stall_free_cycles_per_packet(&self) -> Option<f64> {
        let packets = self.busy_packets.saturating_sub(self.stall_packets);
        (packets > 0)
            .then(|| self.busy_cycles.saturating_sub(self.stall_cycles) as f64 / packets as f64)
    }
}

impl Totals {
    pub fn sum(stats: &[CachePadded<LcoreStats>], ports: usize) -> Totals {
        let mut t = Totals {
            rx_per_port: vec![0; ports],
            tx_per_port: vec![0; ports],
            burst_hist: vec![0; HIST_BUCKETS],
            ..Default::default()
        };
        for r in DropReason::ALL {
            t.drops.insert(r.name(), 0);
        }
        for s in stats {
            for p in 0..ports {
                t.rx_per_port[p] += s.rx[p].get();
                t.tx_per_port[p] += s.tx[p].get();
            }
            t.forwarded += s.forwarded.get();
            t.generated += s.generated.get();
            t.arp_requests_sent += s.arp_requests_sent.get();
            t.arp_replies_sent += s.arp_replies_sent.get();
            t.nd_solicits_sent += s.nd_solicits_sent.get();
            t.nd_adverts_sent += s.nd_adverts_sent.get();
            t.echo_replies_sent += s.echo_replies_sent.get();
            t.icmp_errors_sent += s.icmp_errors_sent.get();
            t.alloc_failed += s.alloc_failed.get();
            t.neigh_queued += s.neigh_queued.get();
            t.neigh_refreshes += s.neigh_refreshes.get();
            t.neigh_unsolicited += s.neigh_unsolicited.get();
            t.neigh_failed += s.neigh_failed.get();
            t.handoff_out += s.handoff_out.get();
            t.handoff_in += s.handoff_in.get();
            t.busy_cycles += s.busy_cycles.get();
            t.busy_packets += s.busy_packets.get();
            t.stall_iterations += s.stall_iterations.get();
            t.stall_cycles += s.stall_cycles.get();
            t.stall_packets += s.stall_packets.get();
            t.heartbeats += s.heartbeats.get();
            t.stage_packets += s.stage_packets.get();
            for st in Stage::ALL {
                *t.stage_cycles.entry(st.name()).or_default() += s.stage_cycles[st as usize].get();
            }
            for (a, c) in t.burst_hist.iter_mut().zip(&s.burst_hist.0) {
                *a += c.get();
            }
            for r in DropReason::ALL {
                *t.drops.get_mut(r.name()).expect("inserted above") += s.drops[r as usize].get();
            }
        }
        t.rx = t.rx_per_port.iter().sum();
        t.tx = t.tx_per_port.iter().sum();
        t.dropped = t.drops.values().sum();
        t
    }

    /// Packets received or created that are neither transmitted nor freed
    /// (in flight; 0 once the workers stopped and drained).
    pub fn unaccounted(&self) -> i64 {
        (self.rx + self.generated) as i64 - (self.tx + self.dropped) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_are_complete_and_distinct() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn histogram_buckets() {
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            12345,
            1 << 20,
            (1 << 33) - 1,
        ] {
            let b = hist_bucket(v);
            assert!(hist_lower(b) <= v, "{v} below bucket {b}");
            assert!(v < hist_lower(b + 1), "{v} above bucket {b}");
        }
        let mut h = vec![0u64; HIST_BUCKETS];
        for v in 1..=100u64 {
            h[hist_bucket(v * 10)] += 1;
        }
        let p50 = hist_percentile(&h, 50.0).unwrap();
        assert!((500..=575).contains(&p50), "{p50}");
        let max = hist_percentile(&h, 100.0).unwrap();
        assert!((1000..=1151).contains(&max), "{max}");
        assert_eq!(hist_percentile(&[0; 4], 50.0), None);
    }

    #[test]
    fn totals_sum_workers() {
        let s = new_shared(2);
        s[0].rx[0].add(5);
        s[1].rx[1].add(3);
        s[0].tx[1].add(4);
        s[1].drop(DropReason::NoRoute);
        s[0].drop(DropReason::NoRoute);
        s[0].generated.add(1);
        s[1].drop(DropReason::BadHeader);
        let t = Totals::sum(&s, 2);
        assert_eq!((t.rx, t.tx, t.dropped), (8, 4, 3));
        assert_eq!(t.drops["no_route"], 2);
        assert_eq!(t.unaccounted(), 2);
    }
}
