//! One worker per lcore: RX burst -> classify -> pipeline stage -> L3
//! forwarding (routes, TTL, neighbours) -> TX, plus the ARP / ND / echo
//! answers of the appliance's own addresses. Every mbuf a worker receives or
//! creates is transmitted or freed under a [`DropReason`].
//!
//! Nothing here allocates from the heap, takes a lock, or makes a system call:
//! buffers are fixed arrays or vectors sized at start, time is the TSC, the
//! neighbour table is read lock-free, counters are per-lcore. One exception:
//! on a port with fewer TX queues than workers, the workers sharing a queue
//! take its lock around each TX burst (logged at start).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrayvec::ArrayVec;

use crate::config::MAX_PORTS;
use crate::dpdk::{self, Mbuf, Mempool, PortId, QueueId, RingRx, RingTx};
use crate::neigh::{NeighKey, NeighTable};
use crate::net::{self, Mac, Meta};
use crate::pipeline::{self, Pipeline, Reassembled, Verdict, BURST};
use crate::route::{RouteId, Routes};
use crate::stats::{DropReason, LcoreStats, SharedStats, Stage};
use ctcore::defrag::{self, refragment, Datagram, Place, Push};

/// Packets buffered per TX port before a tx_burst.
const TX_BUF: usize = 64;
/// How often waiting packets are re-checked for expiry / re-solicitation.
const MAINTENANCE_MS: u64 = 10;
/// How often an unanswered ARP / NS is repeated.
const RESOLICIT_MS: u64 = 1000;

/// What a held fragment costs against the reassembly memory bound (like an
/// skb's truesize): its mbuf's data room, headroom and header.
const FRAG_TRUESIZE: usize = 2048 + 128 + 128;

/// A port as a worker sees it.
#[derive(Debug, Clone, Copy)]
pub struct PortCtx {
    pub id: PortId,
    pub mac: Mac,
    /// The RX queue this worker polls on the port (None if the port has fewer queues than workers).
    pub rxq: Option<QueueId>,
    /// This worker's TX queue on the port: its own, or one it shares with
    /// other workers (the port has fewer TX queues than workers), then
    /// `tx_lock` is the index of that queue's lock in `WorkerArgs::tx_locks`.
    pub txq: QueueId,
    pub tx_lock: Option<u16>,
    pub v4: Option<u32>,
    pub v6: Option<u128>,
    /// A VLAN sub-port's id, 0 for a physical port. A sub-port shares its
    /// parent's `id`, `mac`, `txq` and `tx_lock`, polls nothing (`rxq`
    /// None: its frames arrive tagged on the parent), and sends tagged.
    pub vlan: u16,
    /// A sub-port's parent (port index); a physical port's own index.
    pub parent: u8,
    /// A physical port with sub-ports: its receive counts go to the
    /// sub-port each tagged frame is for.
    pub trunk: bool,
}

/// Everything a worker needs; moved onto its lcore.
pub struct WorkerArgs {
    pub index: usize,
    pub ports: ArrayVec<PortCtx, MAX_PORTS>,
    pub routes: Arc<Routes>,
    pub neigh: Arc<NeighTable>,
    pub pool: Arc<Mempool>,
    pub stats: Arc<SharedStats>,
    pub stop: Arc<AtomicBool>,
    pub pipeline: Arc<pipeline::Shared>,
    pub tsc_hz: u64,
    pub neigh_queue: usize,
    pub neigh_timeout_ms: u64,
    /// `neighbour_reachable_ms`: how long a learned neighbour is fresh.
    pub neigh_reachable_ms: u64,
    /// Software dispatch (see [`crate::pipeline::Steering::Dispatch`]): this
    /// worker's ends of the handoff rings; None when the hardware steers.
    pub handoff: Option<HandoffRings>,
    /// The locks of TX queues several workers share (see `PortCtx::tx_lock`).
    pub tx_locks: Arc<[Mutex<()>]>,
    /// Count the cycles of each stage (`ctgate run --profile-stages`).
    pub profile_stages: bool,
}

/// The cycles of one poll-loop iteration's stages (`--profile-stages`),
/// added to the worker's [`Stage`] counters when the iteration turns out
/// busy and not stalled.
#[derive(Debug, Default)]
struct StageClock {
    rx: u64,
    /// `handle_burst`, the stage and the forwarder included.
    handled: u64,
    /// The pipeline's stage (the engine's stages and what follows them).
    ct: u64,
    forward: u64,
    tx: u64,
}

/// Slots of each handoff ring (one ring per ordered pair of workers); it
/// holds one less.
pub const HANDOFF_RING: u32 = 1024;

/// A worker's ends of the handoff rings.
pub struct HandoffRings {
    /// To each worker, by worker index (None for itself).
    pub to: Vec<Option<RingTx>>,
    /// From each other worker.
    pub from: Vec<RingRx>,
    /// Workers that have stopped receiving. A stopping worker waits (bounded)
    /// until all have, then drains its rings: nothing more can arrive, and
    /// no packet is left in a ring.
    pub stopped: Arc<AtomicUsize>,
}

/// How long a worker waits for room in a ring to a worker that makes no
/// progress before it drops what waits (`handoff_full`).
const HANDOFF_STALL_MS: u64 = 100;

/// A worker's software dispatch state.
struct Handoff {
    rings: HandoffRings,
    /// Per destination worker: this burst's packets for it, and what its
    /// ring had no room for (the backlog).
    out: Vec<ArrayVec<Mbuf, BURST>>,
    /// While a backlog waits: when a ring last took some of it. The worker
    /// receives nothing meanwhile (backpressure: the packets wait in the
    /// port's queue, not in the appliance).
    backlog_since: Option<u64>,
}

struct Pending {
    mbuf: Mbuf,
    port: u8,
    key: NeighKey,
    deadline: u64,
    solicited_at: u64,
}

struct Worker<'a> {
    ports: &'a [PortCtx],
    routes: &'a Routes,
    neigh: &'a NeighTable,
    pool: &'a Mempool,
    stats: &'a LcoreStats,
    pipeline: Pipeline<'a>,
    tx: [ArrayVec<Mbuf, TX_BUF>; MAX_PORTS],
    tx_locks: &'a [Mutex<()>],
    pending: Vec<Pending>,
    pending_cap: usize,
    neigh_gen: u64,
    /// The last next hop resolved, valid while the table's generation is
    /// `cache_gen`: consecutive packets to one next hop skip the table.
    cache_key: NeighKey,
    cache_mac: Mac,
    cache_gen: u64,
    /// TSC until which the cached neighbour is fresh.
    cache_fresh: u64,
    /// TSC ticks a learned neighbour stays fresh.
    neigh_reachable: u64,
    /// Packets forwarded since the last flush (added to the counter per burst).
    forwarded: u64,
    tsc_per_ms: u64,
    start_tsc: u64,
    now: u64,
    neigh_timeout: u64,
    /// This worker's index, and its handoff rings under software dispatch.
    index: usize,
    handoff: Option<Handoff>,
    /// The takeover announcements (first worker only): the last
    /// `Shared::announce` seen, how many rounds are left, when the next is due.
    announced: u64,
    announce_left: u32,
    next_announce: u64,
    /// Reassembly's scratch: the datagram being tracked, its fragments, and
    /// fragments a dropped datagram gave back (reserved once: nothing is
    /// allocated per fragment).
    reasm: Vec<u8>,
    reasm_frags: Vec<(Mbuf, Place)>,
    frag_released: Vec<(Mbuf, defrag::Cause)>,
    /// This iteration's stage cycles, when profiling.
    stages: Option<StageClock>,
}

/// Rounds of gratuitous ARP / unsolicited advertisements at a takeover, one
/// second apart (keepalived sends 5 by default; a neighbour that missed the
/// first takes a later one).
const ANNOUNCE_ROUNDS: u32 = 3;

/// The worker's main loop; returns when `args.stop` is set, after draining.
pub fn run(args: WorkerArgs) -> i32 {
    let tsc_per_ms = (args.tsc_hz / 1000).max(1);
    let start = dpdk::tsc();
    let mut w = Worker {
        ports: &args.ports,
        routes: &args.routes,
        neigh: &args.neigh,
        pool: &args.pool,
        stats: &args.stats[args.index],
        pipeline: Pipeline::new(&args.pipeline, args.index),
        tx: Default::default(),
        tx_locks: &args.tx_locks,
        pending: Vec::with_capacity(args.neigh_queue),
        pending_cap: args.neigh_queue,
        neigh_gen: args.neigh.generation(),
        cache_key: NeighKey {
            port: u8::MAX,
            v6: false,
            ip: 0,
        },
        cache_mac: [0; 6],
        cache_gen: u64::MAX,
        cache_fresh: 0,
        neigh_reachable: args.neigh_reachable_ms * tsc_per_ms,
        forwarded: 0,
        tsc_per_ms,
        start_tsc: start,
        now: start,
        neigh_timeout: args.neigh_timeout_ms * tsc_per_ms,
        index: args.index,
        handoff: args.handoff.map(|rings| Handoff {
            out: (0..rings.to.len()).map(|_| ArrayVec::new()).collect(),
            rings,
            backlog_since: None,
        }),
        announced: 0,
        announce_left: 0,
        next_announce: 0,
        reasm: Vec::with_capacity(65_536 + 128),
        reasm_frags: Vec::with_capacity(args.pipeline.defrag_limits.max_fragments),
        frag_released: Vec::with_capacity(args.pipeline.defrag_limits.max_fragments),
        stages: args.profile_stages.then(StageClock::default),
    };
    if args.profile_stages {
        w.pipeline.time_stages();
    }
    let mut rx: ArrayVec<Mbuf, BURST> = ArrayVec::new();
    let mut next_maintenance = start;
    let mut next_expiry = start;
    // One TSC read per loop iteration (it can be slow under virtualisation):
    // it dates the packets of this iteration, and an iteration that received
    // packets counts as busy from its start to the next one's.
    let mut prev = start;
    let mut prev_packets = 0u64;
    let mut prev_busy = false;
    let stall_cycles = args.tsc_hz / 1_000_000 * crate::stats::STALL_US;
    while !args.stop.load(Ordering::Relaxed) {
        let now = dpdk::tsc();
        if prev_busy {
            // Cycles of iterations that received packets or took handed-off
            // ones; packets count where they were received, so that the sum
            // over workers is cycles per packet of the whole appliance.
            let cycles = now - prev;
            w.stats.busy_cycles.add(cycles);
            w.stats.busy_packets.add(prev_packets);
            w.stats.burst_hist.0[crate::stats::hist_bucket(cycles)].add(1);
            if cycles > stall_cycles {
                w.stats.stall_iterations.add(1);
                w.stats.stall_cycles.add(cycles);
                w.stats.stall_packets.add(prev_packets);
            } else {
                w.count_stages(cycles, prev_packets);
            }
            prev_packets = 0;
            prev_busy = false;
        }
        w.reset_stages();
        prev = now;
        w.now = now;
        for pi in 0..w.ports.len() {
            if w.handoff_backlog() {
                // An owner's ring is full: receive nothing until it has room.
                break;
            }
            let port = w.ports[pi];
            let Some(q) = port.rxq else { continue };
            let t = w.stamp();
            let n = dpdk::rx_burst(port.id, q, &mut rx);
            if let Some(c) = &mut w.stages {
                c.rx += dpdk::tsc() - t;
            }
            if n == 0 {
                continue;
            }
            prev_packets += n as u64;
            prev_busy = true;
            if port.trunk {
                w.count_trunk_rx(pi, &rx);
            } else {
                w.stats.rx[pi].add(n as u64);
            }
            if w.pipeline.shared.standby.load(Ordering::Relaxed) {
                for m in rx.drain(..) {
                    w.drop_pkt(m, DropReason::Standby);
                }
                continue;
            }
            if w.handoff.is_some() {
                w.hand_off(pi, &mut rx);
                if rx.is_empty() {
                    continue;
                }
            }
            w.handle_burst(pi as u8, &mut rx);
            let t = w.stamp();
            w.flush_all();
            if let Some(c) = &mut w.stages {
                c.tx += dpdk::tsc() - t;
            }
        }
        if w.handoff.is_some() && w.take_handoffs(&mut rx) > 0 {
            prev_busy = true;
        }
        // Expiry runs whether packets came or not (an idle worker's
        // connections still time out), looked at once a millisecond.
        if now >= next_expiry {
            next_expiry = now + w.tsc_per_ms;
            w.stats.heartbeats.add(1);
            let now_ms = w.now_ms();
            w.pipeline.maintain(now_ms);
            w.expire_fragments(now_ms);
        }
        if now >= next_maintenance {
            if !w.pending.is_empty() {
                w.maintain();
                w.flush_all();
            }
            if w.index == 0 {
                w.announce();
            }
            next_maintenance = now + MAINTENANCE_MS * w.tsc_per_ms;
        }
    }
    // Handed-off packets are all processed: the backlog goes out (or is
    // dropped after the stall bound), then, once every worker has stopped
    // receiving (bounded wait), nothing more is handed over and the rings
    // are drained. Meanwhile each takes what it is handed, so that no
    // worker waits for room in a ring whose owner waits for it.
    if let Some(h) = &w.handoff {
        let stopped = h.rings.stopped.clone();
        let workers = h.rings.to.len();
        loop {
            w.now = dpdk::tsc();
            w.take_handoffs(&mut rx);
            if !w.handoff_backlog() {
                break;
            }
        }
        stopped.fetch_add(1, Ordering::AcqRel);
        let deadline = dpdk::tsc() + args.tsc_hz;
        while stopped.load(Ordering::Acquire) < workers && dpdk::tsc() < deadline {
            w.now = dpdk::tsc();
            w.take_handoffs(&mut rx);
        }
        w.now = dpdk::tsc();
        while w.take_handoffs(&mut rx) > 0 {}
    }
    // Drain: what is buffered goes out, what waits for a neighbour is freed.
    w.now = dpdk::tsc();
    w.maintain();
    w.flush_all();
    for p in w.pending.drain(..) {
        w.stats.drop(DropReason::Shutdown);
        drop(p.mbuf);
    }
    let stats = w.stats;
    w.pipeline.defrag.clear(|m| {
        stats.drop(DropReason::Shutdown);
        drop(m);
    });
    let now_ms = w.now_ms();
    w.pipeline.publish_last(now_ms);
    0
}

impl Worker<'_> {
    #[inline(always)]
    fn drop_pkt(&self, m: Mbuf, reason: DropReason) {
        self.stats.drop(reason);
        drop(m);
    }

    #[inline(always)]
    fn now_ms(&self) -> u64 {
        (self.now - self.start_tsc) / self.tsc_per_ms
    }

    /// Software dispatch: keeps in `rx` the packets this worker owns and
    /// hands the others, received on port `pi`, to their owners' rings (a
    /// full ring drops them as `handoff_full`).
    #[inline]
    fn hand_off(&mut self, pi: usize, rx: &mut ArrayVec<Mbuf, BURST>) {
        let Some(h) = &mut self.handoff else { return };
        let shared = self.pipeline.shared;
        let port = self.ports[pi].id;
        for m in rx.iter() {
            m.prefetch();
        }
        let mut mine: ArrayVec<Mbuf, BURST> = ArrayVec::new();
        for mut m in rx.drain(..) {
            let owner = shared.owner(m.data());
            if owner == self.index {
                mine.push(m);
            } else {
                // The owner learns the input port from the mbuf (some PMDs
                // leave the field unset).
                m.set_port(port);
                h.out[owner].push(m);
            }
        }
        *rx = mine;
        for (out, to) in h.out.iter_mut().zip(h.rings.to.iter_mut()) {
            if let Some(to) = to {
                let n = to.enqueue(out);
                self.stats.handoff_out.add(n as u64);
                if !out.is_empty() && h.backlog_since.is_none() {
                    h.backlog_since = Some(self.now);
                }
            }
        }
    }

    /// Retries the handoff backlog; true while some of it still waits. If an
    /// owner's ring takes nothing for [`HANDOFF_STALL_MS`], what waits for
    /// it is dropped (`handoff_full`).
    #[inline]
    fn handoff_backlog(&mut self) -> bool {
        let Some(h) = &mut self.handoff else {
            return false;
        };
        let Some(since) = h.backlog_since else {
            return false;
        };
        let (mut moved, mut left) = (0, 0);
        for (out, to) in h.out.iter_mut().zip(h.rings.to.iter_mut()) {
            if let (Some(to), false) = (to, out.is_empty()) {
                moved += to.enqueue(out);
                left += out.len();
            }
        }
        self.stats.handoff_out.add(moved as u64);
        if left == 0 {
            h.backlog_since = None;
            return false;
        }
        if moved > 0 {
            h.backlog_since = Some(self.now);
        } else if self.now - since > HANDOFF_STALL_MS * self.tsc_per_ms {
            for out in h.out.iter_mut() {
                self.stats.drops[DropReason::HandoffFull as usize].add(out.len() as u64);
                out.clear();
            }
            h.backlog_since = None;
            return false;
        }
        true
    }

    /// Processes what the other workers handed over; returns how many packets.
    #[inline]
    fn take_handoffs(&mut self, buf: &mut ArrayVec<Mbuf, BURST>) -> usize {
        let mut total = 0;
        let rings = match &self.handoff {
            Some(h) => h.rings.from.len(),
            None => return 0,
        };
        for r in 0..rings {
            let n = match &mut self.handoff {
                Some(h) => h.rings.from[r].dequeue(buf),
                None => 0,
            };
            if n == 0 {
                continue;
            }
            total += n;
            self.stats.handoff_in.add(n as u64);
            // One stage call per run of packets from one input port.
            while !buf.is_empty() {
                let port = buf[0].port();
                let run = buf.iter().take_while(|m| m.port() == port).count();
                let pi = self
                    .ports
                    .iter()
                    .position(|p| p.id == port && p.vlan == 0)
                    .unwrap_or(0) as u8;
                if run == buf.len() {
                    self.handle_burst(pi, buf);
                } else {
                    let mut part: ArrayVec<Mbuf, BURST> = buf.drain(..run).collect();
                    self.handle_burst(pi, &mut part);
                }
            }
            self.flush_all();
        }
        total
    }

    /// A port's RX burst: classified, then through the stage and the
    /// forwarder (timed as a whole when profiling).
    fn handle_burst(&mut self, in_port: u8, rx: &mut ArrayVec<Mbuf, BURST>) {
        let t = self.stamp();
        self.classify_and_stage(in_port, rx);
        if let Some(c) = &mut self.stages {
            c.handled += dpdk::tsc() - t;
        }
    }

    /// The TSC when profiling the stages, else 0 (no read).
    #[inline(always)]
    fn stamp(&self) -> u64 {
        if self.stages.is_some() {
            dpdk::tsc()
        } else {
            0
        }
    }

    /// Adds the stage cycles of a busy, unstalled iteration of `cycles`
    /// that received `packets` to the worker's counters.
    #[cold]
    fn count_stages(&mut self, cycles: u64, packets: u64) {
        let Some(c) = &self.stages else { return };
        let e = self.pipeline.take_stage_cycles();
        let engine = e.parse + e.prefetch + e.track;
        let s = &self.stats.stage_cycles;
        for (stage, v) in [
            (Stage::Rx, c.rx),
            (Stage::Classify, c.handled.saturating_sub(c.ct + c.forward)),
            (Stage::CtParse, e.parse),
            (Stage::CtPrefetch, e.prefetch),
            (Stage::CtTrack, e.track),
            (Stage::CtRewrite, c.ct.saturating_sub(engine)),
            (Stage::Forward, c.forward),
            (Stage::Tx, c.tx),
            (Stage::Other, cycles.saturating_sub(c.rx + c.handled + c.tx)),
        ] {
            s[stage as usize].add(v);
        }
        self.stats.stage_packets.add(packets);
    }

    /// Starts a new iteration's stage cycles (what an idle or stalled one
    /// had is dropped).
    #[inline(always)]
    fn reset_stages(&mut self) {
        if let Some(c) = &mut self.stages {
            *c = StageClock::default();
            self.pipeline.take_stage_cycles();
        }
    }

    fn classify_and_stage(&mut self, in_port: u8, rx: &mut ArrayVec<Mbuf, BURST>) {
        let mac = self.ports[in_port as usize].mac;
        for m in rx.iter() {
            m.prefetch();
        }
        let defrag = self.pipeline.shared.enabled;
        if !defrag && self.forward_routed(in_port, rx) {
            return;
        }
        // Fast path: a burst of IP packets only (the common case) goes to the
        // stage and the forwarder as it is, without being moved.
        let mut ip_meta: ArrayVec<Meta, BURST> = ArrayVec::new();
        for m in rx.iter() {
            if !m.is_contiguous() {
                break;
            }
            match net::classify(m.data(), &mac) {
                Ok(meta @ Meta::Ipv4 { .. })
                    if !(defrag && net::maybe_fragment(&meta, m.data())) =>
                {
                    ip_meta.push(meta)
                }
                Ok(meta @ Meta::Ipv6 { .. })
                    if meta.nd_type(m.data()).is_none()
                        && !(defrag && net::maybe_fragment(&meta, m.data())) =>
                {
                    ip_meta.push(meta)
                }
                _ => break,
            }
        }
        if ip_meta.len() == rx.len() {
            return self.stage_and_forward(in_port, rx, &ip_meta);
        }
        ip_meta.clear();
        let mut ip_pkts: ArrayVec<Mbuf, BURST> = ArrayVec::new();
        // Frames of VLAN sub-ports, untagged, with their sub-port.
        let mut untagged: ArrayVec<(u8, Mbuf), BURST> = ArrayVec::new();
        for m in rx.drain(..) {
            if !m.is_contiguous() {
                self.drop_pkt(m, DropReason::BadHeader);
                continue;
            }
            match net::classify(m.data(), &mac) {
                Err(DropReason::Unsupported) => match net::vlan_id(m.data()) {
                    Some(vid) => {
                        if let Some(sub) = self.untag(in_port, vid, m) {
                            untagged.push(sub);
                        }
                    }
                    None => self.drop_pkt(m, DropReason::Unsupported),
                },
                Err(reason) => self.drop_pkt(m, reason),
                Ok(Meta::Arp) => self.handle_arp(in_port, m),
                Ok(meta) => {
                    if let Some(t) = meta.nd_type(m.data()) {
                        self.handle_nd(in_port, m, t);
                    } else if defrag && net::maybe_fragment(&meta, m.data()) {
                        // What came before it leaves first: a datagram it
                        // completes is forwarded right away.
                        if !ip_pkts.is_empty() {
                            self.stage_and_forward(in_port, &mut ip_pkts, &ip_meta);
                            ip_meta.clear();
                        }
                        if let Some(m) = self.reassemble(in_port, m) {
                            ip_pkts.push(m);
                            ip_meta.push(meta);
                        }
                    } else {
                        ip_pkts.push(m);
                        ip_meta.push(meta);
                    }
                }
            }
        }
        if !ip_pkts.is_empty() {
            self.stage_and_forward(in_port, &mut ip_pkts, &ip_meta);
        }
        if !untagged.is_empty() {
            self.handle_sub_ports(&mut untagged);
        }
    }

    /// Routing only (conntrack off: no stage, no reassembly): each IP packet
    /// goes from its classification straight to the forwarder, one at a
    /// time, without the burst's arrays of classifications and verdicts.
    /// The first frame of another kind (ARP, neighbour discovery, a VLAN
    /// tag, a bad header) leaves it and the rest of the burst in `rx` for
    /// the general path, so the order of the burst is kept. True if the
    /// whole burst was forwarded here. (`--profile-stages` counts its
    /// classification in `forward`.)
    #[inline]
    fn forward_routed(&mut self, in_port: u8, rx: &mut ArrayVec<Mbuf, BURST>) -> bool {
        let t = self.stamp();
        let mac = self.ports[in_port as usize].mac;
        let mut burst = std::mem::take(rx).into_iter();
        while let Some(m) = burst.next() {
            let meta = if m.is_contiguous() {
                net::classify(m.data(), &mac).ok()
            } else {
                None
            };
            match meta {
                Some(meta @ Meta::Ipv4 { .. }) => self.forward(in_port, m, &meta, None),
                Some(meta @ Meta::Ipv6 { .. }) if meta.nd_type(m.data()).is_none() => {
                    self.forward(in_port, m, &meta, None)
                }
                _ => {
                    rx.push(m);
                    rx.extend(burst);
                    break;
                }
            }
        }
        if let Some(c) = &mut self.stages {
            c.forward += dpdk::tsc() - t;
        }
        rx.is_empty()
    }

    /// Receive counts of a burst of trunk port `pi`: each tagged frame
    /// counts for its sub-port, the others (and unknown VLANs) for `pi`.
    #[inline(never)]
    fn count_trunk_rx(&self, pi: usize, rx: &[Mbuf]) {
        for m in rx {
            let port = match net::vlan_id(m.data()) {
                Some(vid) if vid != 0 => self.sub_port(pi as u8, vid).unwrap_or(pi as u8),
                _ => pi as u8,
            };
            self.stats.rx[port as usize].add(1);
        }
    }

    /// The sub-port of `parent` with VLAN id `vid`.
    #[inline]
    fn sub_port(&self, parent: u8, vid: u16) -> Option<u8> {
        self.ports
            .iter()
            .position(|p| p.vlan == vid && p.parent == parent)
            .map(|i| i as u8)
    }

    /// An 802.1Q-tagged frame (VLAN `vid`) received on `in_port`: removes the tag (the
    /// MACs move over it, the front is trimmed) and returns the port it is
    /// for, the sub-port of its VLAN id (a priority tag, VLAN 0, stays on
    /// `in_port`). None (dropped as `unknown_vlan`) if no sub-port has the
    /// id, or if a second tag follows (stacked VLANs are not handled).
    #[cold]
    fn untag(&mut self, in_port: u8, vid: u16, mut m: Mbuf) -> Option<(u8, Mbuf)> {
        let port = if vid == 0 {
            Some(in_port)
        } else {
            self.sub_port(in_port, vid)
        };
        let Some(port) = port else {
            self.drop_pkt(m, DropReason::UnknownVlan);
            return None;
        };
        net::untag_in_place(m.data_mut());
        if !m.adj(net::VLAN_HLEN as u16) || net::vlan_id(m.data()).is_some() {
            self.drop_pkt(m, DropReason::UnknownVlan);
            return None;
        }
        Some((port, m))
    }

    /// Handles untagged frames of sub-ports as bursts received on them.
    #[cold]
    fn handle_sub_ports(&mut self, untagged: &mut ArrayVec<(u8, Mbuf), BURST>) {
        while let Some(&(port, _)) = untagged.first() {
            let mut burst: ArrayVec<Mbuf, BURST> = ArrayVec::new();
            let mut rest: ArrayVec<(u8, Mbuf), BURST> = ArrayVec::new();
            for (p, m) in untagged.drain(..) {
                if p == port {
                    burst.push(m);
                } else {
                    rest.push((p, m));
                }
            }
            *untagged = rest;
            // Untagged now: this finds no tag, so goes no deeper.
            self.classify_and_stage(port, &mut burst);
        }
    }

    /// Runs the pipeline stage over `pkts` (all IP, classified as `meta`),
    /// then forwards or drops each by its verdict. Leaves `pkts` empty.
    #[inline(always)]
    fn stage_and_forward(&mut self, in_port: u8, pkts: &mut ArrayVec<Mbuf, BURST>, meta: &[Meta]) {
        let mut verdicts = [Verdict::Forward(None); BURST];
        let n = pkts.len();
        let now_ms = self.now_ms();
        let t0 = self.stamp();
        self.pipeline
            .process_burst(now_ms, in_port, pkts, meta, &mut verdicts[..n]);
        let t1 = self.stamp();
        // `meta` by reference: a copy of a Meta right after the burst's
        // classification wrote it field by field is a store-forwarding stall.
        for ((m, meta), v) in pkts.drain(..).zip(meta.iter()).zip(verdicts) {
            match v {
                // NAT changes addresses, ports and checksums, none of what
                // `meta` holds (lengths, TTL / hop limit, protocol): the
                // forwarder reads the addresses from the frame.
                Verdict::Forward(route) => self.forward(in_port, m, meta, route),
                Verdict::Drop(r) => self.drop_pkt(m, r),
            }
        }
        if let Some(c) = &mut self.stages {
            c.ct += t1 - t0;
            c.forward += dpdk::tsc() - t1;
        }
    }

    /// A fragment (conntrack on): held until its datagram completes, as the
    /// kernel's nf_defrag does before conntrack. A complete datagram is
    /// tracked whole and leaves as its fragments, translated. Returns `m`
    /// if it is not a fragment to reassemble.
    #[cold]
    fn reassemble(&mut self, in_port: u8, m: Mbuf) -> Option<Mbuf> {
        let now_ms = self.now_ms();
        let read = defrag::read(m.data(), self.pipeline.shared.port_zone(in_port));
        let mut released = std::mem::take(&mut self.frag_released);
        let pushed = self
            .pipeline
            .defrag
            .push(now_ms, read, FRAG_TRUESIZE, m, &mut |h, c| {
                released.push((h, c))
            });
        for (h, c) in released.drain(..) {
            self.drop_pkt(h, c.into());
        }
        self.frag_released = released;
        match pushed {
            Push::Whole(m) => return Some(m),
            Push::Held => self.pipeline.publish(now_ms),
            Push::Dropped(m, c) => {
                self.drop_pkt(m, c.into());
                self.pipeline.publish(now_ms);
            }
            Push::Complete(d) => self.forward_datagram(in_port, now_ms, d),
        }
        None
    }

    /// Tracks datagram `d` whole (conntrack, policy, NAT), then forwards or
    /// drops its fragments by the verdict, each rewritten from the
    /// translated datagram (`ctcore::defrag::refragment`).
    #[cold]
    fn forward_datagram(&mut self, in_port: u8, now_ms: u64, d: Datagram) {
        let mut whole = std::mem::take(&mut self.reasm);
        let mut frags = std::mem::take(&mut self.reasm_frags);
        let at = self
            .pipeline
            .defrag
            .assemble(d, |m: &Mbuf| m.data(), &mut whole);
        self.pipeline
            .defrag
            .finish(d, |m, place| frags.push((m, place)));
        let mac = self.ports[in_port as usize].mac;
        let verdict = match at {
            Err(c) => Verdict::Drop(c.into()),
            Ok(_) => match net::classify(&whole, &mac) {
                Err(r) => Verdict::Drop(r),
                Ok(meta) => {
                    let mut v = [Verdict::Forward(None)];
                    let mut frame = [Reassembled(&mut whole[..])];
                    self.pipeline
                        .process_burst(now_ms, in_port, &mut frame, &[meta], &mut v);
                    match v[0] {
                        // The appliance answers only whole echo requests.
                        Verdict::Forward(None) if self.is_local(&meta, &whole) => {
                            Verdict::Drop(DropReason::LocalUnhandled)
                        }
                        v => v,
                    }
                }
            },
        };
        for (mut m, place) in frags.drain(..) {
            match (verdict, &at) {
                (Verdict::Forward(route), Ok(at)) => {
                    refragment(&whole, at, m.data_mut(), &place);
                    match net::classify(m.data(), &mac) {
                        Ok(meta) => self.forward(in_port, m, &meta, route),
                        Err(r) => self.drop_pkt(m, r),
                    }
                }
                (Verdict::Drop(r), _) => self.drop_pkt(m, r),
                (Verdict::Forward(_), Err(c)) => self.drop_pkt(m, (*c).into()),
            }
        }
        self.reasm = whole;
        self.reasm_frags = frags;
    }

    /// Whether an IP frame classified as `meta` is addressed to the appliance.
    fn is_local(&self, meta: &Meta, frame: &[u8]) -> bool {
        match *meta {
            Meta::Ipv4 { dst, .. } => self.routes.local_v4(dst).is_some(),
            Meta::Ipv6 { .. } => self.routes.local_v6(net::ipv6_dst(frame)).is_some(),
            Meta::Arp => false,
        }
    }

    /// Fragments whose datagram did not complete in time are dropped.
    fn expire_fragments(&mut self, now_ms: u64) {
        let mut released = std::mem::take(&mut self.frag_released);
        self.pipeline
            .expire_fragments(now_ms, &mut |h, c| released.push((h, c)));
        for (h, c) in released.drain(..) {
            self.drop_pkt(h, c.into());
        }
        self.frag_released = released;
    }

    #[inline(always)]
    /// Routes `m` (classified as `meta`) and sends it towards its next hop;
    /// `route`: the route the stage already found (not local; see
    /// [`Verdict::Forward`]).
    fn forward(&mut self, in_port: u8, mut m: Mbuf, meta: &Meta, route: Option<RouteId>) {
        match *meta {
            Meta::Ipv4 { ihl, total_len, .. } => {
                // The header fields are read again from the frame (in L1 by
                // now) rather than from `meta`: cheaper than reloading the
                // per-burst array, and right after a rewriting stage.
                let (ttl, proto, src, dst) = {
                    let ip = &m.data()[net::ETH_HLEN..net::ETH_HLEN + 20];
                    (
                        ip[8],
                        ip[9],
                        u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]),
                        u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]),
                    )
                };
                if route.is_none() && self.routes.local_v4(dst).is_some() {
                    let ihl = ihl as usize;
                    let d = m.data();
                    if proto == net::IPPROTO_ICMP
                        && total_len as usize >= ihl + 8
                        && d[net::ETH_HLEN + ihl] == net::ICMP_ECHO_REQUEST
                        && d[net::ETH_HLEN + ihl + 1] == 0
                    {
                        let mac = self.ports[in_port as usize].mac;
                        net::ipv4_echo_reply_in_place(m.data_mut(), ihl, total_len as usize, &mac);
                        self.stats.echo_replies_sent.add(1);
                        self.push_tx(in_port, m);
                    } else {
                        self.drop_pkt(m, DropReason::LocalUnhandled);
                    }
                    return;
                }
                if !v4_forwardable(src, dst) {
                    return self.drop_pkt(m, DropReason::NotRoutable);
                }
                let hop = match route {
                    Some(r) => Some(self.routes.hop_v4(r)),
                    None => self.routes.lookup_v4(dst),
                };
                let Some(hop) = hop else {
                    return self.drop_pkt(m, DropReason::NoRoute);
                };
                if ttl <= 1 {
                    self.time_exceeded(in_port, &m, *meta);
                    return self.drop_pkt(m, DropReason::TtlExceeded);
                }
                net::ipv4_dec_ttl(&mut m.data_mut()[net::ETH_HLEN..]);
                let nh = hop.gateway.unwrap_or(dst as u128) as u32;
                self.send_to_neighbour(m, hop.port, NeighKey::v4(hop.port, nh));
            }
            Meta::Ipv6 {
                payload_len,
                hop_limit,
                next_header,
            } => {
                let (src, dst) = (net::ipv6_src(m.data()), net::ipv6_dst(m.data()));
                if route.is_none() && self.routes.local_v6(dst).is_some() {
                    let d = m.data();
                    let icmp = net::ETH_HLEN + 40;
                    if next_header == net::IPPROTO_ICMPV6
                        && payload_len >= 8
                        && d[icmp] == net::ICMPV6_ECHO_REQUEST
                        && d[icmp + 1] == 0
                    {
                        let mac = self.ports[in_port as usize].mac;
                        net::ipv6_echo_reply_in_place(m.data_mut(), payload_len as usize, &mac);
                        self.stats.echo_replies_sent.add(1);
                        self.push_tx(in_port, m);
                    } else {
                        self.drop_pkt(m, DropReason::LocalUnhandled);
                    }
                    return;
                }
                if !v6_forwardable(src, dst) {
                    return self.drop_pkt(m, DropReason::NotRoutable);
                }
                let hop = match route {
                    Some(r) => Some(self.routes.hop_v6(r)),
                    None => self.routes.lookup_v6(dst),
                };
                let Some(hop) = hop else {
                    return self.drop_pkt(m, DropReason::NoRoute);
                };
                if hop_limit <= 1 {
                    self.time_exceeded(in_port, &m, *meta);
                    return self.drop_pkt(m, DropReason::TtlExceeded);
                }
                m.data_mut()[net::ETH_HLEN + 7] -= 1;
                let nh = hop.gateway.unwrap_or(dst);
                self.send_to_neighbour(m, hop.port, NeighKey::v6(hop.port, nh));
            }
            Meta::Arp => self.drop_pkt(m, DropReason::BadHeader),
        }
    }

    #[inline(always)]
    fn send_to_neighbour(&mut self, mut m: Mbuf, port: u8, key: NeighKey) {
        let generation = self.neigh.generation();
        let mac =
            if generation == self.cache_gen && key == self.cache_key && self.now < self.cache_fresh
            {
                self.cache_mac
            } else {
                match self.neighbour_mac(key, generation) {
                    Some(mac) => mac,
                    None => return self.enqueue_pending(m, port, key),
                }
            };
        let src = self.ports[port as usize].mac;
        let d = m.data_mut();
        d[0..6].copy_from_slice(&mac);
        d[6..12].copy_from_slice(&src);
        self.forwarded += 1;
        self.push_tx(port, m);
    }

    /// The MAC to send to `key` by, from the table: a fresh entry (cached),
    /// or a stale one within its grace (its refresh solicited, once a second
    /// whichever worker asks); None if unknown, being resolved, or stale for
    /// too long (the packet then waits for resolution).
    #[inline(never)]
    fn neighbour_mac(&mut self, key: NeighKey, generation: u64) -> Option<Mac> {
        let n = self.usable_neighbour(&key)?;
        if self.now < n.fresh_until {
            (
                self.cache_key,
                self.cache_mac,
                self.cache_gen,
                self.cache_fresh,
            ) = (key, n.mac, generation, n.fresh_until);
        } else if self
            .neigh
            .claim_probe(&key, self.now, RESOLICIT_MS * self.tsc_per_ms)
        {
            self.stats.neigh_refreshes.add(1);
            self.solicit(key);
        }
        Some(n.mac)
    }

    /// `key`'s entry unless it is stale beyond its grace.
    fn usable_neighbour(&self, key: &NeighKey) -> Option<crate::neigh::Neighbour> {
        self.neigh.lookup(key).filter(|n| {
            self.now
                < n.fresh_until
                    .saturating_add(crate::neigh::STALE_GRACE_MS * self.tsc_per_ms)
        })
    }

    #[cold]
    fn enqueue_pending(&mut self, m: Mbuf, port: u8, key: NeighKey) {
        if self.pending.len() >= self.pending_cap {
            return self.drop_pkt(m, DropReason::NoNeighbour);
        }
        let earlier = self
            .pending
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.solicited_at);
        let solicited_at = match earlier {
            Some(t) => t,
            None => {
                self.solicit(key);
                self.now
            }
        };
        self.stats.neigh_queued.add(1);
        self.pending.push(Pending {
            mbuf: m,
            port,
            key,
            deadline: self.now + self.neigh_timeout,
            solicited_at,
        });
    }

    /// Sends what became resolvable, expires what waited too long, repeats
    /// unanswered solicitations.
    #[cold]
    fn maintain(&mut self) {
        let generation = self.neigh.generation();
        let learned = generation != self.neigh_gen;
        self.neigh_gen = generation;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            if learned {
                if let Some(mac) = self.usable_neighbour(&p.key).map(|n| n.mac) {
                    let p = self.pending.remove(i);
                    let mut m = p.mbuf;
                    let src = self.ports[p.port as usize].mac;
                    let d = m.data_mut();
                    d[0..6].copy_from_slice(&mac);
                    d[6..12].copy_from_slice(&src);
                    self.forwarded += 1;
                    self.push_tx(p.port, m);
                    continue;
                }
            }
            if self.now >= p.deadline {
                let p = self.pending.remove(i);
                if !self.pending.iter().any(|q| q.key == p.key) {
                    self.stats.neigh_failed.add(1);
                }
                self.drop_pkt(p.mbuf, DropReason::NoNeighbour);
                continue;
            }
            if self.now - p.solicited_at >= RESOLICIT_MS * self.tsc_per_ms {
                let key = p.key;
                self.solicit(key);
                let now = self.now;
                for q in self.pending.iter_mut().filter(|q| q.key == key) {
                    q.solicited_at = now;
                }
            }
            i += 1;
        }
    }

    /// Sends an ARP request or an IPv6 neighbour solicitation for `key`.
    #[cold]
    fn solicit(&mut self, key: NeighKey) {
        let port = self.ports[key.port as usize];
        let Some(mut m) = self.pool.alloc() else {
            self.stats.alloc_failed.add(1);
            return;
        };
        // Counted as created now, so that a failure below is a counted drop.
        self.stats.generated.add(1);
        // Its answer is to be learned (an unasked one is not).
        self.neigh
            .mark_incomplete(&key, self.now + self.neigh_timeout);
        if key.v6 {
            let Some(src) = port.v6 else {
                return self.drop_pkt(m, DropReason::NoNeighbour);
            };
            let Some(buf) = m.append(net::ND_FRAME_LEN as u16) else {
                return self.drop_pkt(m, DropReason::NoNeighbour);
            };
            net::write_neighbor_solicit(buf, &port.mac, src, key.ip);
            self.stats.nd_solicits_sent.add(1);
        } else {
            let Some(src) = port.v4 else {
                return self.drop_pkt(m, DropReason::NoNeighbour);
            };
            // 60 bytes: the Ethernet minimum, zero padded.
            let Some(buf) = m.append(60) else {
                return self.drop_pkt(m, DropReason::NoNeighbour);
            };
            buf.fill(0);
            net::write_arp(
                buf,
                &net::BROADCAST,
                net::ARP_REQUEST,
                &port.mac,
                src,
                &[0; 6],
                key.ip as u32,
            );
            self.stats.arp_requests_sent.add(1);
        }
        self.push_tx(key.port, m);
    }

    /// At a takeover (and twice more, a second apart): a gratuitous ARP for
    /// every port's IPv4 address and an unsolicited neighbour advertisement
    /// for every IPv6 one, so that the neighbours send to this box now.
    #[cold]
    fn announce(&mut self) {
        let wanted = self.pipeline.shared.announce.load(Ordering::Relaxed);
        if wanted != self.announced {
            self.announced = wanted;
            self.announce_left = ANNOUNCE_ROUNDS;
            self.next_announce = self.now;
        }
        if self.announce_left == 0 || self.now < self.next_announce {
            return;
        }
        self.announce_left -= 1;
        self.next_announce = self.now + 1000 * self.tsc_per_ms;
        for pi in 0..self.ports.len() {
            let port = self.ports[pi];
            if let Some(ip) = port.v4 {
                let Some(mut m) = self.pool.alloc() else {
                    self.stats.alloc_failed.add(1);
                    return;
                };
                self.stats.generated.add(1);
                let Some(buf) = m.append(60) else {
                    return self.drop_pkt(m, DropReason::NoNeighbour);
                };
                buf.fill(0);
                net::write_arp(
                    buf,
                    &net::BROADCAST,
                    net::ARP_REQUEST,
                    &port.mac,
                    ip,
                    &[0; 6],
                    ip,
                );
                self.stats.arp_requests_sent.add(1);
                self.push_tx(pi as u8, m);
            }
            if let Some(ip) = port.v6 {
                let Some(mut m) = self.pool.alloc() else {
                    self.stats.alloc_failed.add(1);
                    return;
                };
                self.stats.generated.add(1);
                let Some(buf) = m.append(net::ND_FRAME_LEN as u16) else {
                    return self.drop_pkt(m, DropReason::NoNeighbour);
                };
                net::write_unsolicited_advert(buf, &port.mac, ip);
                self.stats.nd_adverts_sent.add(1);
                self.push_tx(pi as u8, m);
            }
        }
        self.flush_all();
    }

    #[cold]
    fn handle_arp(&mut self, in_port: u8, mut m: Mbuf) {
        let Some(arp) = net::parse_arp(m.data()) else {
            return self.drop_pkt(m, DropReason::BadHeader);
        };
        let port = self.ports[in_port as usize];
        let Some(mine) = port.v4 else {
            return self.drop_pkt(m, DropReason::ArpConsumed);
        };
        let sender_ok = arp.spa != 0 && arp.sha[0] & 1 == 0;
        let fresh_until = self.now + self.neigh_reachable;
        let sender = NeighKey::v4(in_port, arp.spa);
        if arp.tpa == mine {
            // A request for us adds / updates the sender (RFC 826, as Linux
            // does); a reply only answers what we asked (arp_accept = 0).
            if sender_ok {
                if arp.op == net::ARP_REQUEST {
                    self.neigh.learn(&sender, &arp.sha, fresh_until);
                } else if !self.neigh.update(&sender, &arp.sha, fresh_until, self.now) {
                    self.stats.neigh_unsolicited.add(1);
                }
            }
            if arp.op == net::ARP_REQUEST && sender_ok {
                net::write_arp(
                    m.data_mut(),
                    &arp.sha,
                    net::ARP_REPLY,
                    &port.mac,
                    mine,
                    &arp.sha,
                    arp.spa,
                );
                self.stats.arp_replies_sent.add(1);
                return self.push_tx(in_port, m);
            }
        } else if sender_ok && arp.spa == arp.tpa {
            // Gratuitous ARP refreshes an entry we already have, no other.
            if !self.neigh.update(&sender, &arp.sha, fresh_until, self.now) {
                self.stats.neigh_unsolicited.add(1);
            }
        }
        self.drop_pkt(m, DropReason::ArpConsumed)
    }

    #[cold]
    fn handle_nd(&mut self, in_port: u8, mut m: Mbuf, nd_type: u8) {
        if nd_type != net::ND_NEIGHBOR_SOLICIT && nd_type != net::ND_NEIGHBOR_ADVERT {
            return self.drop_pkt(m, DropReason::NdConsumed);
        }
        let Some(nd) = net::parse_nd(m.data()) else {
            return self.drop_pkt(m, DropReason::BadHeader);
        };
        let src = net::ipv6_src(m.data());
        let port = self.ports[in_port as usize];
        let fresh_until = self.now + self.neigh_reachable;
        if nd_type == net::ND_NEIGHBOR_ADVERT {
            // RFC 4861 7.2.5: an advertisement for a target with no entry
            // (one we did not solicit) is discarded.
            if let Some(ll) = nd.lladdr {
                if !self.neigh.update(
                    &NeighKey::v6(in_port, nd.target),
                    &ll,
                    fresh_until,
                    self.now,
                ) {
                    self.stats.neigh_unsolicited.add(1);
                }
            }
            return self.drop_pkt(m, DropReason::NdConsumed);
        }
        // A solicitation: answer it if it asks for our address and is not
        // duplicate address detection (unspecified source).
        if port.v6 != Some(nd.target) || src == 0 {
            return self.drop_pkt(m, DropReason::NdConsumed);
        }
        if let Some(ll) = nd.lladdr {
            self.neigh
                .learn(&NeighKey::v6(in_port, src), &ll, fresh_until);
        }
        let mut eth_src = [0u8; 6];
        eth_src.copy_from_slice(&m.data()[6..12]);
        let dst_mac = nd.lladdr.unwrap_or(eth_src);
        let len = m.data().len();
        if len < net::ND_FRAME_LEN && m.append((net::ND_FRAME_LEN - len) as u16).is_none() {
            return self.drop_pkt(m, DropReason::NdConsumed);
        }
        m.truncate(net::ND_FRAME_LEN);
        net::write_neighbor_advert(m.data_mut(), &port.mac, &dst_mac, nd.target, src);
        self.stats.nd_adverts_sent.add(1);
        self.push_tx(in_port, m);
    }

    /// Sends ICMP / ICMPv6 time exceeded for `orig` back out of its input port.
    #[cold]
    fn time_exceeded(&mut self, in_port: u8, orig: &Mbuf, meta: Meta) {
        let port = self.ports[in_port as usize];
        let src4 = port
            .v4
            .or_else(|| self.routes.ports.iter().find_map(|p| p.v4));
        let src6 = port
            .v6
            .or_else(|| self.routes.ports.iter().find_map(|p| p.v6));
        let Some(mut m) = self.pool.alloc() else {
            self.stats.alloc_failed.add(1);
            return;
        };
        self.stats.generated.add(1);
        let len = match meta {
            Meta::Ipv4 { ihl, total_len, .. } => {
                let Some(src) = src4 else {
                    return self.drop_pkt(m, DropReason::TtlExceeded);
                };
                let Some(buf) = m.append(14 + 20 + 8 + 60 + 8) else {
                    return self.drop_pkt(m, DropReason::TtlExceeded);
                };
                net::write_icmp4_time_exceeded(
                    buf,
                    orig.data(),
                    ihl as usize,
                    total_len as usize,
                    &port.mac,
                    src,
                )
            }
            Meta::Ipv6 { payload_len, .. } => {
                let Some(src) = src6 else {
                    return self.drop_pkt(m, DropReason::TtlExceeded);
                };
                let Some(buf) = m.append(14 + 48 + 1232) else {
                    return self.drop_pkt(m, DropReason::TtlExceeded);
                };
                net::write_icmp6_time_exceeded(
                    buf,
                    orig.data(),
                    payload_len as usize,
                    &port.mac,
                    src,
                )
            }
            Meta::Arp => return self.drop_pkt(m, DropReason::BadHeader),
        };
        m.truncate(len);
        self.stats.icmp_errors_sent.add(1);
        self.push_tx(in_port, m);
    }

    #[inline(always)]
    fn push_tx(&mut self, port: u8, m: Mbuf) {
        let p = port as usize;
        if self.tx[p].is_full() {
            self.flush(p);
        }
        // flush() leaves the buffer empty.
        self.tx[p].push(m);
    }

    #[inline]
    fn flush(&mut self, p: usize) {
        if self.tx[p].is_empty() {
            return;
        }
        let port = self.ports[p];
        if port.vlan != 0 {
            self.tag_all(p, port.vlan);
        }
        let sent = match port.tx_lock {
            None => dpdk::tx_burst(port.id, port.txq, &mut self.tx[p]),
            Some(l) => {
                // A queue shared with other workers: one burst at a time.
                let _g = self.tx_locks[l as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                dpdk::tx_burst(port.id, port.txq, &mut self.tx[p])
            }
        };
        self.stats.tx[p].add(sent as u64);
        let unsent = self.tx[p].len();
        if unsent > 0 {
            self.stats.drops[DropReason::TxFull as usize].add(unsent as u64);
            self.tx[p].clear();
        }
    }

    /// Tags what waits to leave by sub-port `p` with its VLAN id (802.1Q:
    /// 4 bytes in front, the MACs moved into them); a frame without the
    /// headroom for it is dropped as `bad_header`.
    #[inline(never)]
    fn tag_all(&mut self, p: usize, vid: u16) {
        let stats = self.stats;
        self.tx[p].retain(|m| {
            if m.prepend(net::VLAN_HLEN as u16) {
                net::tag_in_place(m.data_mut(), vid);
                true
            } else {
                stats.drop(DropReason::BadHeader);
                false
            }
        });
    }

    #[inline]
    fn flush_all(&mut self) {
        for p in 0..self.ports.len() {
            self.flush(p);
        }
        self.stats.forwarded.add(self.forwarded);
        self.forwarded = 0;
    }
}

/// RFC 1812 section 5.3.7 / 5.2.1: never forward to or from these.
#[inline]
pub fn v4_forwardable(src: u32, dst: u32) -> bool {
    let bad = |a: u32| {
        let first = a >> 24;
        first == 0 || first == 127 || first >= 224
    };
    !bad(dst) && !bad(src)
}

/// RFC 4291: multicast, loopback, unspecified and link-local addresses stay on their link.
#[inline]
pub fn v6_forwardable(src: u128, dst: u128) -> bool {
    let link_scoped = |a: u128| a >> 118 == 0x3fa; // fe80::/10
    let multicast = |a: u128| a >> 120 == 0xff;
    !(dst == 0
        || dst == 1
        || multicast(dst)
        || link_scoped(dst)
        || src == 0
        || src == 1
        || multicast(src)
        || link_scoped(src))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwardable_addresses() {
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        assert!(v4_forwardable(ip("192.0.2.10"), ip("198.51.100.10")));
        assert!(!v4_forwardable(ip("192.0.2.10"), ip("224.0.0.1")));
        assert!(!v4_forwardable(ip("192.0.2.10"), ip("255.255.255.255")));
        assert!(!v4_forwardable(ip("127.0.0.1"), ip("198.51.100.10")));
        assert!(!v4_forwardable(ip("0.0.0.0"), ip("198.51.100.10")));
        let ip6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert!(v6_forwardable(ip6("2001:db8:1::10"), ip6("2001:db8:2::10")));
        assert!(!v6_forwardable(ip6("fe80::1"), ip6("2001:db8:2::10")));
        assert!(!v6_forwardable(ip6("2001:db8:1::10"), ip6("febf::1")));
        assert!(!v6_forwardable(ip6("2001:db8:1::10"), ip6("ff02::1")));
        assert!(!v6_forwardable(ip6("::"), ip6("2001:db8:2::10")));
        assert!(!v6_forwardable(ip6("2001:db8:1::10"), ip6("::1")));
    }
}
