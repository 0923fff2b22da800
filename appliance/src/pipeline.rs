//! THE PIPELINE STAGE: connection tracking, stateful policy and NAT, between
//! parsing and L3 forwarding (DESIGN.md section 2).
//!
//! Contract, per worker and per burst:
//! - [`Pipeline::process_burst`] gets the IPv4 / IPv6 packets of one RX burst
//!   (at most [`BURST`]) that passed the forwarder's header
//!   checks (`net::classify`), from one input port. ARP and neighbour discovery
//!   never reach it (the forwarder answers those itself).
//! - Per packet, in order, as the kernel's hooks would: conntrack (lookup or a
//!   new unconfirmed connection), destination NAT for a new connection, the
//!   route of the (translated) destination, the `[[policy]]` rules on the
//!   ct state, source NAT, confirmation; then the translation is written into
//!   the packet (incremental checksums) and the forwarder sends it by the
//!   route found here (one route lookup per packet).
//! - `now_ms` is the worker's coarse clock (milliseconds since start, from the
//!   TSC), injected into `ctcore`.
//! - Nothing here allocates, blocks or makes system calls on the packet path:
//!   the table is lock-striped and preallocated; the counters a worker
//!   publishes for the control thread sit behind a per-worker lock taken with
//!   `try_lock` (a busy reader only delays the copy). A burst only marks them
//!   changed: [`Pipeline::maintain`], about once a millisecond, publishes
//!   them, so the control thread sees counters at most about a millisecond
//!   old and the packet path pays no copy per burst.
//! - Connection events (NEW / UPDATE / DESTROY) collect in the worker's
//!   preallocated `EventBuf`; after each burst they feed the worker's top
//!   sources of new connections and, while someone subscribes, move into the
//!   worker's bounded lock-free queue, which the REST side drains. A full queue
//!   loses the event, counted (`events_dropped`); the worker never waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;

use crossbeam_utils::CachePadded;
use ctcore::conn::CtInfo;
use ctcore::engine::{CtResult, Decision, Egress, Engine, Pkt, Worker};
use ctcore::event::{Event, EventKind};
use ctcore::forward::{classify_addrs, RouteClass};
use ctcore::listing::format_conn;
use ctcore::nat::rewrite::{apply_translation, ChecksumMode};
use ctcore::policy::{Action, Policy};
use ctcore::stats::CtStats;
use ctcore::tuple::{Addr, Family};

use crate::config::Config;
use crate::dpdk::Mbuf;
use crate::net::Meta;
use crate::route::{RouteId, Routes};
use crate::stats::DropReason;
use crate::top_sources::{TopSource, TopSources, TOP_SOURCES};
use crate::verdicts::{Cached, Tokens, VerdictCache};
use ctcore::defrag::{self, Defrag};

/// Packets per RX burst: the most the stage gets at once. A queue that is
/// backlogged hands over this many at a time, so the per-burst costs (the
/// poll, the stripe lock, the burst's arrays) are shared by twice the
/// packets of DPDK's usual 32; conntrack works them in stages of 32
/// (`ctcore::engine::process_burst`). An idle queue gives what it has.
pub const BURST: usize = 64;

/// What the stage decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Continue to L3 forwarding. NAT may have changed the packet
    /// (addresses, ports, checksums; the classification's lengths, TTL and
    /// protocol still hold, and the forwarder reads the addresses from the
    /// frame). `Some(route)`: the route of the (translated) destination,
    /// which the stage looked up for the policy and is not local: the
    /// forwarder does not look it up again. None: the forwarder routes the
    /// packet.
    Forward(Option<RouteId>),
    /// Free the packet, counted under this reason.
    Drop(DropReason),
}

/// Events a worker buffers between bursts: a packet makes up to three (an
/// expired or reopened connection's DESTROY, an eviction's DESTROY, a NEW),
/// a GC slice one DESTROY per entry it reclaims.
pub const EVENT_BUF: usize = 4 * BURST + GC_BUDGET;
/// Events a worker's queue holds for the REST side.
pub const EVENT_QUEUE: usize = 8192;
/// What one worker has published for the control thread.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The worker's counters; `events_dropped` includes events its queue had no room for.
    pub ct: CtStats,
    /// Conntrack helper counters (all 0 without helpers).
    pub helpers: ctcore::helper::HelperStats,
    pub nat_out_of_ports: u64,
    /// Fragments held for reassembly now.
    pub frags_held: u64,
    /// Per policy rule (then the default), packets decided.
    pub policy_hits: Vec<u64>,
    /// Of those, packets answered from a cached verdict (`verdicts`).
    pub verdicts_answered: u64,
    pub now_ms: u64,
    /// The sources that opened the most connections on this worker since start.
    pub top_sources: [TopSource; TOP_SOURCES],
}

/// State shared by every worker's stage, built once before the workers start.
pub struct Shared {
    /// `[conntrack] enabled`: false makes the stage pass every packet (routing only).
    pub enabled: bool,
    pub engine: Engine<crate::dpdk::HwPrefetch>,
    pub policy: Policy,
    routes: Routes,
    /// Per port: its IPv4 and IPv6 address (masquerade's source), indexed
    /// by `family == V6`.
    port_addrs: Vec<[Option<Addr>; 2]>,
    /// Per port: the zone of the connections that start on it (`[[port]] zone`).
    port_zones: Vec<u16>,
    /// Each worker's reassembly bounds.
    pub defrag_limits: defrag::Limits,
    published: Vec<CachePadded<Mutex<Published>>>,
    /// Per worker: its events waiting for the REST side (see the module contract).
    pub events: Vec<CachePadded<ArrayQueue<Event>>>,
    /// Set while at least one event subscriber listens; the workers queue
    /// events only then.
    pub events_wanted: AtomicBool,
    /// Per worker: the TSC when its clock started (its `now_ms` 0), so the
    /// control side can read the workers' clock without them.
    pub clock_start_tsc: Vec<AtomicU64>,
    /// How packets reach the worker that owns their connection.
    pub steering: Steering,
    /// The table-pressure watch ([`Shared::check_pressure`]).
    pressure: Mutex<Pressure>,
    /// Times the control thread found the mbuf pool dry (each episode once).
    pub pool_dry: AtomicU64,
    /// The standby box of an HA pair: every packet received is dropped
    /// (`standby`), ARP and ND go unanswered, until the takeover.
    pub standby: AtomicBool,
    /// Raised to make the first worker announce the ports' addresses
    /// (gratuitous ARP, unsolicited neighbour advertisements) at a takeover.
    pub announce: AtomicU64,
    /// What routing and policy answered established connections
    /// (their records keep tokens for it).
    pub verdicts: VerdictCache,
    /// Where the table's memory went (hugetlb pools or transparent huge
    /// pages; `dpdk::huge`).
    pub table_memory: crate::dpdk::huge::TablePages,
}

/// How long after early_drop / insert_failed last rose /healthz still warns.
pub const PRESSURE_RECENT: std::time::Duration = std::time::Duration::from_secs(60);
/// At most one table-pressure log line per this interval.
const PRESSURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the table-pressure watch remembers between looks.
#[derive(Debug, Default)]
struct Pressure {
    early_drop: u64,
    insert_failed: u64,
    last_rise: Option<std::time::Instant>,
    last_log: Option<std::time::Instant>,
    logged_early_drop: u64,
    logged_insert_failed: u64,
}

/// How the packets of a connection, both directions, reach one worker.
#[derive(Debug, Clone)]
pub enum Steering {
    /// One worker: it owns everything.
    Single,
    /// Every port spreads packets over the workers' RX queues by the same
    /// symmetric RSS (key and redirection table as read back from the
    /// devices): the hardware delivers both directions of a connection to
    /// one queue, and NAT picks reply ports that hash there too.
    Rss(ctcore::rss::Rss),
    /// Software dispatch: the worker that receives a packet computes its
    /// owner from the table's symmetric hash ([`ctcore::engine::Engine::dispatch`])
    /// and hands it over a ring; NAT picks reply ports whose replies are
    /// dispatched to the same owner.
    Dispatch,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.engine.table().len())
            .finish()
    }
}

impl Shared {
    /// Builds the engine, policy and NAT from a validated config; packets
    /// reach their owners by `steering`.
    pub fn new(cfg: &Config, steering: Steering) -> Shared {
        let seed = random_seed();
        let ecfg = crate::config::conntrack::engine_config(cfg, seed).expect("validated config");
        let nat = crate::config::conntrack::nat(cfg).expect("validated config");
        let policy = crate::config::conntrack::policy(cfg).expect("validated config");
        let rules = policy.rules.len() + 1;
        // One table stripe per worker, its large regions on the
        // hugetlb pool's pages unless DPDK runs without them.
        let mut pages = crate::dpdk::huge::TablePages::new(!cfg.no_huge());
        let mut engine = Engine::build(ecfg, nat, cfg.workers.len() as u32, &mut pages);
        if policy.uses_helpers() {
            // A rule assigns conntrack helpers: their data and
            // expectations are reserved now.
            engine = engine.with_helpers();
        }
        if cfg.conntrack.enabled {
            tracing::info!(
                "conntrack table: {} connections, {} stripe(s), {} bytes/connection; {} MiB on 1 GiB pages, {} MiB on 2 MiB pages, {} MiB advised for transparent huge pages",
                engine.table().capacity(),
                engine.table().stripe_count(),
                engine.table().bytes_per_conn(),
                pages.on_1g >> 20,
                pages.on_2m >> 20,
                pages.transparent >> 20
            );
            if pages.refused > 0 {
                tracing::warn!(
                    "conntrack table: the hugetlb pool had no room for {} of its regions (transparent huge pages instead, slower): reserve more hugepages (scripts/setup.sh)",
                    pages.refused
                );
            }
        } else {
            tracing::info!(
                "conntrack off ([conntrack] enabled = false): routing only, no table reserved"
            );
        }
        Shared {
            verdicts: VerdictCache::default(),
            enabled: cfg.conntrack.enabled,
            engine,
            table_memory: pages,
            policy,
            routes: Routes::from_config(cfg),
            port_zones: cfg.ports.iter().map(|p| p.zone).collect(),
            defrag_limits: defrag::Limits {
                // Held fragments hold mbufs: a worker holds at most a
                // quarter of its share of the pool.
                max_fragments: ((cfg.mempool_mbufs as usize / 4) / cfg.workers.len().max(1))
                    .clamp(64, defrag::Limits::default().max_fragments),
                ..defrag::Limits::default()
            },
            port_addrs: (0..cfg.ports.len())
                .map(|i| {
                    [
                        crate::config::conntrack::port_addr(cfg, i, false),
                        crate::config::conntrack::port_addr(cfg, i, true),
                    ]
                })
                .collect(),
            steering,
            published: (0..cfg.workers.len())
                .map(|_| {
                    CachePadded::new(Mutex::new(Published {
                        policy_hits: vec![0; rules],
                        ..Published::default()
                    }))
                })
                .collect(),
            events: (0..cfg.workers.len())
                .map(|_| CachePadded::new(ArrayQueue::new(EVENT_QUEUE)))
                .collect(),
            events_wanted: AtomicBool::new(false),
            pool_dry: AtomicU64::new(0),
            standby: AtomicBool::new(
                cfg.sync.enabled && cfg.sync.role == crate::config::sync::Role::Backup,
            ),
            announce: AtomicU64::new(0),
            clock_start_tsc: (0..cfg.workers.len()).map(|_| AtomicU64::new(0)).collect(),
            pressure: Mutex::new(Pressure::default()),
        }
    }

    /// The zone of the connections that start on port `port` (and of the
    /// datagrams reassembled from its fragments).
    pub fn port_zone(&self, port: u8) -> u16 {
        self.port_zones.get(port as usize).copied().unwrap_or(0)
    }

    /// Notes rises of early_drop / insert_failed, logging at most one line
    /// per PRESSURE_LOG_EVERY. The control thread calls it every second
    /// (so the warning comes with or without the REST API); /healthz too.
    /// Returns whether they rose within PRESSURE_RECENT and how long ago (s).
    pub fn check_pressure(&self) -> (bool, Option<f64>) {
        let ct = self.totals().ct;
        let now = std::time::Instant::now();
        let mut p = self.pressure.lock().unwrap_or_else(|e| e.into_inner());
        if ct.early_drop > p.early_drop || ct.insert_failed > p.insert_failed {
            p.last_rise = Some(now);
        }
        p.early_drop = ct.early_drop;
        p.insert_failed = ct.insert_failed;
        let unlogged =
            ct.early_drop > p.logged_early_drop || ct.insert_failed > p.logged_insert_failed;
        if unlogged && p.last_log.is_none_or(|t| now - t >= PRESSURE_LOG_EVERY) {
            let table = self.engine.table();
            tracing::warn!(
                early_drop = ct.early_drop - p.logged_early_drop,
                insert_failed = ct.insert_failed - p.logged_insert_failed,
                connections = table.len(),
                capacity = table.capacity(),
                "conntrack table pressure: connections evicted (early_drop) or not inserted \
                 (insert_failed); raise [conntrack] max_connections or lower the timeouts (PUT /api/v1/timeouts)"
            );
            p.last_log = Some(now);
            p.logged_early_drop = ct.early_drop;
            p.logged_insert_failed = ct.insert_failed;
        }
        let ago = p.last_rise.map(|t| (now - t).as_secs_f64());
        (ago.is_some_and(|a| a < PRESSURE_RECENT.as_secs_f64()), ago)
    }

    /// What each worker published (a copy per worker, in worker order).
    pub fn per_worker(&self) -> Vec<Published> {
        self.published
            .iter()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// The workers' clock (ms since the first worker started), read from the
    /// TSC: valid also while no packet arrives. `tsc_hz` is the EAL's.
    pub fn now_ms(&self, tsc_hz: u64) -> u64 {
        let start = self
            .clock_start_tsc
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .min();
        match start {
            Some(s) => crate::dpdk::tsc().saturating_sub(s) / (tsc_hz / 1000).max(1),
            None => self.totals().now_ms,
        }
    }

    /// Sums what the workers published.
    pub fn totals(&self) -> Published {
        let mut t = Published {
            policy_hits: vec![0; self.policy.rules.len() + 1],
            ..Published::default()
        };
        for p in &self.published {
            let p = p.lock().unwrap_or_else(|e| e.into_inner());
            t.ct.add(&p.ct);
            t.helpers.add(&p.helpers);
            t.nat_out_of_ports += p.nat_out_of_ports;
            t.verdicts_answered += p.verdicts_answered;
            t.frags_held += p.frags_held;
            for (a, b) in t.policy_hits.iter_mut().zip(&p.policy_hits) {
                *a += b;
            }
            t.now_ms = t.now_ms.max(p.now_ms);
        }
        t
    }

    /// The table stripes worker `w` owns, `w, w + workers, ...` (the table
    /// may have more stripes than workers: a power of two); all with None.
    pub fn stripes_of(&self, worker: Option<usize>) -> impl Iterator<Item = u32> {
        let (first, step) = match worker {
            Some(w) => (w as u32, self.published.len().max(1)),
            None => (0, 1),
        };
        (first..self.engine.table().stripe_count()).step_by(step)
    }

    /// The worker that owns the connection of `frame` under software
    /// dispatch (see [`Steering::Dispatch`]).
    #[inline]
    pub fn owner(&self, frame: &[u8]) -> usize {
        let stripe = self.engine.dispatch(frame, 0);
        ctcore::engine::stripe_owner(stripe, self.published.len() as u32) as usize
    }

    /// Connections in worker `w`'s stripes (all with None).
    pub fn connections(&self, worker: Option<usize>) -> u64 {
        self.stripes_of(worker)
            .map(|s| self.engine.table().stripe_len(s) as u64)
            .sum()
    }

    /// What source NAT's port bitmaps hold: of worker `w`'s stripes, or of
    /// all with None.
    pub fn nat_ports(&self, worker: Option<usize>) -> ctcore::nat::ports::PortUse {
        let mut u = ctcore::nat::ports::PortUse::default();
        for s in self.stripes_of(worker) {
            let p = self.engine.table().nat_ports(s);
            u.in_use += p.in_use;
            u.maps += p.maps;
            u.overflow += p.overflow;
        }
        u
    }

    /// What the endpoint-independent mapping maps hold, over all stripes.
    pub fn eim(&self) -> ctcore::table::eim::EimUse {
        let t = self.engine.table();
        (0..t.stripe_count()).fold(Default::default(), |mut u, s| {
            let e = t.eim_usage(s);
            u.mappings += e.mappings;
            u.full += e.full;
            u.limit += e.limit;
            u
        })
    }

    /// The table as `conntrack -L -o extended` lines, at the workers' clock.
    pub fn listing(&self) -> Vec<String> {
        let now = self.totals().now_ms;
        let mut conns: Vec<ctcore::conn::Listed> = Vec::new();
        self.engine.snapshot(now, |c| conns.push(*c));
        let mut lines: Vec<String> = conns.iter().map(|c| format_conn(c, now)).collect();
        lines.sort();
        lines
    }

    /// Routing + policy for one packet (the verdict before confirmation).
    /// `policy_drop` is set when the policy (not routing) refused it.
    /// A known connection's answer for this direction and ctinfo is cached
    /// in its record (all that differs per packet is the TTL, see
    /// `verdicts`): read here, in the engine's stage; everything else is
    /// worked out in [`Shared::decide_anew`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn decide(
        &self,
        in_port: u8,
        r: &CtResult,
        hits: &mut [u64],
        tokens: &mut Tokens,
        policy_drop: &mut bool,
        expiring: &mut bool,
        route: &mut Option<RouteId>,
    ) -> Decision {
        if r.cached != 0 && r.ct_drop.is_none() {
            if let Ok(p) = &r.parsed {
                let cached = (p.ttl > 1)
                    .then(|| self.verdicts.answer(r.cached, in_port, r.ctinfo, p.family))
                    .flatten();
                if let Some(c) = cached {
                    let rule = usize::from(c.rule);
                    hits[rule] += 1;
                    tokens.answered += 1;
                    *route = Some(c.route);
                    return Decision::Accept(Egress {
                        port: u16::from(c.out_port),
                        addr: None,
                        mark: self.policy.set_mark(rule),
                        helper: self.policy.helper(rule),
                        cache: r.cached,
                    });
                }
            }
        }
        self.decide_anew(in_port, r, hits, tokens, policy_drop, expiring, route)
    }

    /// [`Shared::decide`] without a cached answer.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn decide_anew(
        &self,
        in_port: u8,
        r: &CtResult,
        hits: &mut [u64],
        tokens: &mut Tokens,
        policy_drop: &mut bool,
        expiring: &mut bool,
        route: &mut Option<RouteId>,
    ) -> Decision {
        let Ok(p) = &r.parsed else {
            return Decision::Drop;
        };
        if r.ct_drop.is_some() {
            return Decision::Drop;
        }
        let dst = r.route_dst().unwrap_or(&p.dst);
        match classify_addrs(p.family, &p.src, dst, p.ttl) {
            RouteClass::Drop(why) => {
                // ip_forward's TTL check comes before FORWARD and POSTROUTING: the
                // packet leaves no connection and is not source-NATed; the time
                // exceeded the forwarder sends quotes it as its sender sent it.
                *expiring = why == "ttl_exceeded";
                return Decision::Drop;
            }
            RouteClass::Local => return Decision::Local,
            RouteClass::Forward => {}
        }
        let out = match p.family {
            Family::V4 => {
                let d = u32::from_be_bytes(dst.v4_octets());
                if self.routes.local_v4(d).is_some() {
                    // Addressed to the appliance: its input, not the forward chain.
                    return Decision::Accept(Egress {
                        port: in_port as u16,
                        addr: None,
                        mark: None,
                        helper: ctcore::helper::Helper::None,
                        cache: 0,
                    });
                }
                self.routes
                    .find_v4(r.zone, d)
                    .map(|id| (id, self.routes.hop_v4(id)))
            }
            Family::V6 => {
                let d = u128::from_be_bytes(dst.0);
                if self.routes.local_v6(d).is_some() {
                    return Decision::Accept(Egress {
                        port: in_port as u16,
                        addr: None,
                        mark: None,
                        helper: ctcore::helper::Helper::None,
                        cache: 0,
                    });
                }
                self.routes
                    .find_v6(r.zone, d)
                    .map(|id| (id, self.routes.hop_v6(id)))
            }
        };
        let Some((id, hop)) = out else {
            return Decision::Drop;
        };
        let (action, rule) = self.policy.evaluate(
            in_port as u16,
            hop.port as u16,
            r.ctinfo,
            r.dnat(),
            r.mark,
            ctcore::policy::packet_l4(p),
        );
        hits[rule] += 1;
        match action {
            Action::Drop => {
                *policy_drop = true;
                Decision::Drop
            }
            Action::Accept => {
                // Read in place: a copy of the pair, then of one half, was a
                // store-forwarding stall per packet.
                // Masquerade's source, needed only to translate a new
                // connection (see `Egress`; an expected one is RELATED):
                // not loaded for the others.
                let addr = if matches!(r.ctinfo, CtInfo::New | CtInfo::Related) {
                    self.port_addrs
                        .get(hop.port as usize)
                        .and_then(|a| a[(p.family == Family::V6) as usize])
                } else {
                    None
                };
                *route = Some(id);
                let cache = match u16::try_from(rule) {
                    Ok(rule) if r.conn.is_some() => self.verdicts.token(
                        tokens,
                        Cached {
                            in_port,
                            ctinfo: r.ctinfo,
                            v6: p.family == Family::V6,
                            route: id,
                            rule,
                            out_port: hop.port,
                        },
                    ),
                    _ => 0,
                };
                Decision::Accept(Egress {
                    port: hop.port as u16,
                    addr,
                    mark: self.policy.set_mark(rule),
                    helper: self.policy.helper(rule),
                    cache,
                })
            }
        }
    }
}

/// Applies a conntrack helper's change to a packet (after its NAT
/// rewrite): a payload that grows takes the mbuf's tailroom, one that
/// shrinks is trimmed. False if the packet cannot take it (segmented, no
/// tailroom): it is dropped, as the kernel drops what it cannot mangle.
#[cold]
fn apply_helper_fix<F: Frame>(
    m: &mut F,
    p: &ctcore::wire::Parsed,
    fix: &ctcore::helper::PacketFix,
) -> bool {
    let cur = m.data().len();
    let want = fix.frame_len(p, cur);
    if want > cur && !m.set_len(want) {
        return false;
    }
    match ctcore::helper::apply_fix(m.data_mut(), p, fix, ChecksumMode::Incremental) {
        Ok(len) => len == m.data().len() || m.set_len(len),
        Err(_) => false,
    }
}

fn random_seed() -> u64 {
    // The hash seed keeps crafted tuples from flooding one bucket: take it from
    // the OS once at start (not on the packet path).
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u64::from_ne_bytes(b) ^ std::process::id() as u64
}

/// One worker's stage.
pub struct Pipeline<'a> {
    pub shared: &'a Shared,
    /// The worker's index (0..workers).
    pub worker: usize,
    ct: Worker,
    hits: Vec<u64>,
    /// The cached verdicts' tokens this worker has met.
    tokens: Tokens,
    top_sources: TopSources,
    /// Events the queue had no room for.
    events_dropped: u64,
    /// Counters changed since they were last published.
    unpublished: bool,
    next_gc_ms: u64,
    /// The engine's results for the burst in hand.
    results: Box<[CtResult; BURST]>,
    /// Fragments held until their datagram completes (conntrack on: the
    /// kernel's nf_defrag comes with conntrack).
    pub defrag: Defrag<Mbuf>,
}

/// A frame the stage can track and rewrite: an mbuf, or a datagram
/// reassembled from fragments.
pub trait Frame {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// What the port's RX checksum offload said of the L4 checksum.
    fn rx_l4_csum(&self) -> ctcore::engine::RxCsum;
    /// Grows or shrinks the frame to `len` bytes (a conntrack helper's
    /// payload change); false if it cannot.
    fn set_len(&mut self, len: usize) -> bool;
}

impl Frame for Mbuf {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
    #[inline(always)]
    fn rx_l4_csum(&self) -> ctcore::engine::RxCsum {
        Mbuf::rx_l4_csum(self)
    }
    /// Into the tailroom, or trimmed; a segmented mbuf cannot.
    fn set_len(&mut self, len: usize) -> bool {
        let cur = Mbuf::data(self).len();
        if !self.is_contiguous() {
            return false;
        }
        if len > cur {
            return u16::try_from(len - cur).is_ok_and(|n| self.append(n).is_some());
        }
        self.truncate(len);
        true
    }
}

/// A datagram [`Defrag::assemble`] wrote: its L4 checksum is verified in
/// software (no port saw it whole).
pub struct Reassembled<'a>(pub &'a mut [u8]);

impl Frame for Reassembled<'_> {
    fn data(&self) -> &[u8] {
        self.0
    }
    fn data_mut(&mut self) -> &mut [u8] {
        self.0
    }
    fn rx_l4_csum(&self) -> ctcore::engine::RxCsum {
        ctcore::engine::RxCsum::Unknown
    }
    /// Its fragments carry it as it is: no other length.
    fn set_len(&mut self, len: usize) -> bool {
        len == self.0.len()
    }
}

/// How often a worker fires its stripes' timer wheels, and how many records
/// one call may visit (about 0.3 ms of work at most); while more is due it
/// comes back after `GC_BACKLOG_MS` (up to ~1M expiries a second) instead.
const GC_INTERVAL_MS: u64 = 10;
const GC_BACKLOG_MS: u64 = 1;
const GC_BUDGET: usize = 1024;

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("worker", &self.worker)
            .finish()
    }
}

impl<'a> Pipeline<'a> {
    /// The stage of worker `worker`; its clock starts now (see [`Shared::now_ms`]).
    pub fn new(shared: &'a Shared, worker: usize) -> Pipeline<'a> {
        shared.clock_start_tsc[worker].store(crate::dpdk::tsc(), Ordering::Relaxed);
        let mut ct = shared.engine.worker(EVENT_BUF);
        match &shared.steering {
            Steering::Single => {}
            Steering::Rss(rss) => {
                let (rss, queue) = (rss.clone(), worker as u16);
                ct.reply_steering = Some(Box::new(move |t: &ctcore::tuple::Tuple| {
                    rss.queue(t) == queue
                }));
            }
            Steering::Dispatch => {
                let workers = shared.published.len() as u32;
                ct.reply_steering = Some(shared.engine.reply_steering(worker as u32, workers));
            }
        }
        Pipeline {
            shared,
            worker,
            ct,
            hits: vec![0; shared.policy.rules.len() + 1],
            tokens: Tokens::default(),
            top_sources: TopSources::default(),
            events_dropped: 0,
            unpublished: false,
            next_gc_ms: 0,
            results: Box::new([CtResult::default(); BURST]),
            defrag: Defrag::new(shared.defrag_limits),
        }
    }

    /// Times the engine's burst stages from now on (`ctgate run
    /// --profile-stages`; see [`Pipeline::take_stage_cycles`]).
    pub fn time_stages(&mut self) {
        self.ct.stage_cycles = Some(ctcore::engine::StageCycles::default());
    }

    /// The engine's stage cycles since the last call (zero when untimed).
    #[inline]
    pub fn take_stage_cycles(&mut self) -> ctcore::engine::StageCycles {
        self.ct
            .stage_cycles
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Decides `verdicts[i]` for `pkts[i]` (see the module contract).
    /// `verdicts` arrives filled with `Verdict::Forward(None)`.
    #[inline]
    pub fn process_burst<F: Frame>(
        &mut self,
        now_ms: u64,
        in_port: u8,
        pkts: &mut [F],
        meta: &[Meta],
        verdicts: &mut [Verdict],
    ) {
        debug_assert_eq!(pkts.len(), meta.len());
        debug_assert_eq!(pkts.len(), verdicts.len());
        if !self.shared.enabled {
            return;
        }
        let n = pkts.len().min(BURST);
        self.want_events();
        // The engine fills each result it is given (no clearing per burst).
        let results = &mut self.results;
        let mut policy_drop = [false; BURST];
        let mut expiring = [false; BURST];
        let mut routes: [Option<RouteId>; BURST] = [None; BURST];
        {
            // A port's zone is directional (nft `ct original zone set`):
            // replies are in zone 0.
            let zone = self.shared.port_zone(in_port);
            // Only the packets received (a burst of a few need not fill
            // 64), pushed in place (collected, the whole array would be
            // copied out of the iterator).
            let mut frames: ArrayVec<Pkt<'_>, BURST> = ArrayVec::new();
            for m in &pkts[..n] {
                frames.push(Pkt {
                    // The worker's classification checked the IPv4 header.
                    rx_csum: m.rx_l4_csum(),
                    ip_checked: true,
                    reply_zone: 0,
                    ..Pkt::new(m.data(), zone, in_port as u16)
                });
            }
            let shared = self.shared;
            let hits = &mut self.hits;
            let tokens = &mut self.tokens;
            let drops = &mut policy_drop;
            let exp = &mut expiring;
            let rts = &mut routes;
            shared.engine.process_burst(
                &mut self.ct,
                now_ms,
                &frames,
                &mut results[..n],
                #[inline(always)]
                |i, r| {
                    shared.decide(
                        in_port,
                        r,
                        hits,
                        tokens,
                        &mut drops[i],
                        &mut exp[i],
                        &mut rts[i],
                    )
                },
            );
        }
        for i in 0..n {
            let r = &results[i];
            let Ok(p) = &r.parsed else { continue };
            if r.ct_drop.is_some() {
                verdicts[i] = Verdict::Drop(DropReason::Conntrack);
                continue;
            }
            if policy_drop[i] {
                verdicts[i] = Verdict::Drop(DropReason::Policy);
                continue;
            }
            if expiring[i] {
                // Untranslated, so that the forwarder's time exceeded goes to
                // the sender and quotes what it sent (traceroute through NAT).
                continue;
            }
            verdicts[i] = Verdict::Forward(routes[i]);
            if let Some(rw) = &r.rewrite {
                if apply_translation(pkts[i].data_mut(), p, rw, ChecksumMode::Incremental).is_err()
                {
                    verdicts[i] = Verdict::Drop(DropReason::BadHeader);
                    continue;
                }
            }
            if let Some(fix) = &r.fix {
                if !apply_helper_fix(&mut pkts[i], p, fix) {
                    verdicts[i] = Verdict::Drop(DropReason::BadHeader);
                }
            }
        }
        self.move_events();
        self.unpublished = true;
    }

    /// Between bursts, whether packets came or not (the worker calls it
    /// about every millisecond): every `GC_INTERVAL_MS`, the connections of
    /// this worker's stripes ([`Shared::stripes_of`]) whose deadline passed
    /// are removed (the kernel's gc worker; lookups and NAT port searches
    /// reclaim expired ones too), so every stripe expires on time even when
    /// no packet comes. First, it publishes the counters if a burst
    /// changed them.
    pub fn maintain(&mut self, now_ms: u64) {
        if self.unpublished {
            self.publish(now_ms);
        }
        if now_ms < self.next_gc_ms {
            return;
        }
        let shared = self.shared;
        self.want_events();
        let (mut expired, mut more) = (0, false);
        for s in shared.stripes_of(Some(self.worker)) {
            let (n, m) = shared
                .engine
                .expire_some(&mut self.ct, now_ms, Some(s), GC_BUDGET);
            expired += n;
            more |= m;
            // The event buffer holds one slice's DESTROY events.
            self.move_events();
        }
        self.next_gc_ms = now_ms + if more { GC_BACKLOG_MS } else { GC_INTERVAL_MS };
        if expired > 0 {
            self.publish(now_ms);
        }
    }

    /// Whole events (snapshots of the connection) only while someone
    /// listens: otherwise the engine keeps only NEW connections' sources,
    /// which is all `move_events` uses then.
    #[inline]
    fn want_events(&mut self) {
        let wanted = self.shared.events_wanted.load(Ordering::Relaxed);
        self.ct.events.keep_snapshots(wanted);
    }

    /// Empties the burst's events: counts NEW ones by source, and queues them
    /// for the REST side while someone listens.
    fn move_events(&mut self) {
        if self.ct.events.is_empty() {
            return;
        }
        let wanted = self.shared.events_wanted.load(Ordering::Relaxed);
        let queue = &self.shared.events[self.worker];
        let top = &mut self.top_sources;
        let dropped = &mut self.events_dropped;
        self.ct
            .events
            .drain_sources(|family, addr| top.note(family, addr));
        self.ct.events.drain(|e| {
            if e.kind == EventKind::New {
                let t = &e.conn.tuples[0];
                top.note(t.family, t.src);
            }
            if wanted && queue.push(e).is_err() {
                *dropped += 1;
            }
        });
    }

    /// Drops the datagrams whose reassembly time is up; their fragments go
    /// to `release`.
    pub fn expire_fragments(&mut self, now_ms: u64, release: &mut dyn FnMut(Mbuf, defrag::Cause)) {
        if self.defrag.expire(now_ms, release) > 0 {
            self.publish(now_ms);
        }
    }

    /// Makes this worker's counters visible to the control side (from
    /// `maintain`, and after a fragment was held or dropped). A reader
    /// holding the lock leaves them unpublished until the next call.
    pub(crate) fn publish(&mut self, now_ms: u64) {
        if let Ok(mut p) = self.shared.published[self.worker].try_lock() {
            self.publish_into(&mut p, now_ms);
        }
    }

    /// `publish` for the last time, when the worker stops: waits for a
    /// reader, so that the final counters are all there.
    pub(crate) fn publish_last(&mut self, now_ms: u64) {
        let lock = &self.shared.published[self.worker];
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.publish_into(&mut p, now_ms);
    }

    fn publish_into(&mut self, p: &mut Published, now_ms: u64) {
        self.unpublished = false;
        p.ct = self.ct.stats;
        p.ct.defrag = self.defrag.stats;
        p.frags_held = self.defrag.fragments_held() as u64;
        p.ct.events_dropped += self.ct.events.dropped + self.events_dropped;
        p.top_sources = self.top_sources.entries();
        p.nat_out_of_ports = self.ct.nat_out_of_ports;
        p.verdicts_answered = self.tokens.answered;
        p.helpers = self.ct.helpers;
        p.policy_hits.copy_from_slice(&self.hits);
        p.now_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    /// An Ethernet + IPv4 + UDP frame to MAC, checksums right.
    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
        let mut f = ctcore::wire::build::frame(
            Family::V4,
            Addr::from_v4(src),
            Addr::from_v4(dst),
            ttl,
            ctcore::wire::build::L4Spec::Udp {
                src_port: sport,
                dst_port: dport,
                payload: &[1, 2, 3, 4],
            },
        );
        f[..6].copy_from_slice(&MAC);
        f
    }

    /// Ports "cli" (192.0.2.1/24) and "srv" (198.51.100.1/24), one worker,
    /// a table of 1024; `conntrack` goes on in the `[conntrack]` table.
    fn two_ports(conntrack: &str) -> Config {
        Config::parse(
            &format!(
                r#"
workers = [1]
[[port]]
name = "cli"
devargs = "net_null0"
ipv4 = "192.0.2.1/24"
[[port]]
name = "srv"
devargs = "net_null1"
ipv4 = "198.51.100.1/24"
[conntrack]
max_connections = 1024
{conntrack}
"#
            ),
            "t",
        )
        .expect("a valid config")
    }

    /// One packet through the stage: its verdict and the engine's result.
    fn one(
        pl: &mut Pipeline<'_>,
        now_ms: u64,
        in_port: u8,
        mut f: Vec<u8>,
    ) -> (Verdict, CtResult, Vec<u8>) {
        let meta = [crate::net::classify(&f, &MAC).expect("a frame for us")];
        let mut v = [Verdict::Forward(None)];
        pl.process_burst(now_ms, in_port, &mut [Reassembled(&mut f)], &meta, &mut v);
        (v[0], pl.results[0], f)
    }

    /// A router (conntrack off) reserves no table for the connections it
    /// never tracks, and its packets pass the stage untouched.
    #[test]
    fn conntrack_off_reserves_no_table() {
        let on = Shared::new(&two_ports(""), Steering::Single);
        let off = Shared::new(&two_ports("enabled = false"), Steering::Single);
        let bytes = |s: &Shared| s.engine.table().reserved_bytes();
        assert_eq!(on.engine.table().capacity(), 1024);
        assert_eq!(off.engine.table().capacity(), 1);
        // (The timer wheel's slots, 16 KiB, are all that is left.)
        assert!(
            bytes(&off) < 32 << 10 && bytes(&on) > 1024 * 128,
            "{} {}",
            bytes(&off),
            bytes(&on)
        );
        let mut pl = Pipeline::new(&off, 0);
        let f = udp([192, 0, 2, 10], 1000, [198, 51, 100, 10], 53, 64);
        let (v, _, out) = one(&mut pl, 1, 0, f.clone());
        assert!(matches!(v, Verdict::Forward(None)));
        assert_eq!(out, f);
        assert!(off.engine.table().is_empty());
    }

    /// A burst's counters reach the control side with the next `maintain`
    /// (about a millisecond later), not from the burst itself; a reader
    /// holding the lock delays them to the call after.
    #[test]
    fn counters_are_published_by_maintain_and_a_busy_reader_only_delays_them() {
        let shared = Shared::new(&two_ports(""), Steering::Single);
        let mut pl = Pipeline::new(&shared, 0);
        let q = |sport| udp([192, 0, 2, 10], sport, [198, 51, 100, 10], 53, 64);
        one(&mut pl, 1, 0, q(1000));
        one(&mut pl, 1, 0, q(1001));
        assert_eq!(shared.totals().ct.insert, 0, "not published by the burst");
        pl.maintain(1);
        let t = shared.totals();
        assert_eq!((t.ct.insert, t.now_ms), (2, 1));
        assert_eq!(t.policy_hits.iter().sum::<u64>(), 2);
        // A reader holds the lock: the next maintain leaves them for later.
        one(&mut pl, 2, 0, q(1002));
        {
            let _reader = shared.published[0].lock().expect("the lock");
            pl.maintain(2);
        }
        assert_eq!(shared.totals().ct.insert, 2);
        pl.maintain(3);
        assert_eq!(shared.totals().ct.insert, 3);
        // Nothing new: nothing published (the clock it shows stays).
        pl.maintain(4);
        assert_eq!(shared.totals().now_ms, 3);
        // The worker's last publish waits for the reader instead.
        one(&mut pl, 5, 0, q(1003));
        pl.publish_last(5);
        assert_eq!(shared.totals().ct.insert, 4);
    }

    #[test]
    fn new_sources_are_counted_whether_or_not_anyone_listens_and_only_listeners_get_events() {
        let cfg = two_ports("");
        let shared = Shared::new(&cfg, Steering::Single);
        let mut pl = Pipeline::new(&shared, 0);
        let count = |pl: &Pipeline<'_>, a: [u8; 4]| {
            pl.top_sources
                .entries()
                .iter()
                .find(|t| t.new_conns > 0 && t.addr == Addr::from_v4(a))
                .map_or(0, |t| t.new_conns)
        };
        let (heavy, light) = ([192, 0, 2, 7], [192, 0, 2, 8]);
        // Nobody listens: the engine keeps no snapshots, the sources count.
        for port in 1000..1003 {
            one(&mut pl, 1, 0, udp(heavy, port, [198, 51, 100, 9], 53, 64));
        }
        one(&mut pl, 1, 0, udp(light, 1000, [198, 51, 100, 9], 53, 64));
        assert_eq!((count(&pl, heavy), count(&pl, light)), (3, 1));
        assert!(shared.events[0].pop().is_none());
        // A listener: whole events queue up, and the sources still count.
        shared.events_wanted.store(true, Ordering::Relaxed);
        one(&mut pl, 2, 0, udp(heavy, 1003, [198, 51, 100, 9], 53, 64));
        assert_eq!(count(&pl, heavy), 4);
        let e = shared.events[0].pop().expect("a NEW event");
        assert_eq!(e.kind, EventKind::New);
        assert_eq!(e.conn.tuples[0].src_port, 1003);
        assert!(shared.events[0].pop().is_none());
    }

    #[test]
    fn an_established_direction_is_answered_from_its_cached_verdict_while_it_holds() {
        let cfg = two_ports(
            r#"policy_default = "drop"
[[policy]]
name = "no-established-from-srv-to-srv-port-53"
in_port = "srv"
states = "established"
dport = "53"
action = "drop"
[[policy]]
name = "established"
states = "established,related"
action = "accept"
[[policy]]
name = "new-from-inside"
in_port = "cli"
states = "new"
action = "accept"
"#,
        );
        let shared = Shared::new(&cfg, Steering::Single);
        let mut pl = Pipeline::new(&shared, 0);
        let (cli, srv) = ([192, 0, 2, 10], [198, 51, 100, 10]);
        let q = |ttl| udp(cli, 1000, srv, 53, ttl);
        let forward = |v: Verdict| matches!(v, Verdict::Forward(Some(_)));
        // The first packet: its connection is not in the table when decided.
        let (v, r, _) = one(&mut pl, 1, 0, q(64));
        assert!(forward(v) && r.ctinfo == CtInfo::New && r.cached == 0);
        // Unreplied, still NEW: cached, and answered from the cache.
        let (v, r, _) = one(&mut pl, 1, 0, q(64));
        assert!(forward(v) && r.ctinfo == CtInfo::New && r.cached != 0);
        let new_token = r.cached;
        let (v, r, _) = one(&mut pl, 1, 0, q(64));
        assert!(forward(v) && r.ctinfo == CtInfo::New && r.cached == new_token);
        assert_eq!(pl.hits[2], 3, "new-from-inside");
        // The reply: ESTABLISHED both ways, each direction's answer cached
        // when first decided (the NEW one no longer holds).
        let (v, r, _) = one(&mut pl, 2, 1, udp(srv, 53, cli, 1000, 64));
        assert!(forward(v) && r.ctinfo == CtInfo::EstablishedReply);
        assert_ne!(r.cached, 0, "kept as it was decided");
        let (v, first, _) = one(&mut pl, 3, 0, q(64));
        assert!(forward(v) && first.ctinfo == CtInfo::Established);
        assert_ne!(first.cached, new_token);
        assert_eq!(pl.hits[2], 3, "NEW's rule no longer answers");
        assert_eq!(
            shared.verdicts.entries(),
            3,
            "one answer per direction and ctinfo"
        );
        let hits = pl.hits.clone();
        let answered = pl.tokens.answered;
        assert_eq!(answered, 1, "the second NEW packet only");
        // Now from the cache: the same verdict, the rule counted.
        for t in 4..8 {
            let (v2, r, _) = one(&mut pl, t, 0, q(64));
            assert_ne!(r.cached, 0);
            assert_eq!(
                shared.verdicts.get(r.cached).map(|c| (c.in_port, c.ctinfo)),
                Some((0, CtInfo::Established))
            );
            assert!(matches!((v, v2), (Verdict::Forward(a), Verdict::Forward(b)) if a == b));
        }
        assert_eq!(
            pl.hits[1],
            hits[1] + 4,
            "the accepting rule counts cached packets"
        );
        assert_eq!(pl.tokens.answered, answered + 4, "answered from the cache");
        assert_eq!(shared.verdicts.entries(), 3);
        // The TTL is the packet's: an expiring one is decided anew (the
        // forwarder sends time exceeded).
        let (v, r, f) = one(&mut pl, 9, 0, q(1));
        assert_ne!(r.cached, 0);
        assert!(matches!(v, Verdict::Forward(None)), "{v:?}");
        assert_eq!(f, q(1), "untranslated");
        assert_eq!(pl.tokens.answered, answered + 4, "decided in full");
        // The same direction received on the other port: the cached answer
        // was for the first port; the policy drops this one.
        let (v, _, _) = one(&mut pl, 10, 1, q(64));
        assert!(matches!(v, Verdict::Drop(DropReason::Policy)), "{v:?}");
        assert_eq!(pl.tokens.answered, answered + 4, "decided in full");
        let (v, _, _) = one(&mut pl, 11, 0, q(64));
        assert!(forward(v));
        assert_eq!(pl.tokens.answered, answered + 5);
        pl.publish(11);
        assert_eq!(shared.totals().verdicts_answered, answered + 5);
    }
}
