//! The conntrack engine: nf_conntrack_in for bursts of frames.
//!
//! Per packet, as the kernel: parse (L3 errors are dropped before conntrack, as
//! ip_rcv does), validate the L4 header and checksum (INVALID), find the
//! connection (expired entries count as absent and are reclaimed), or build an
//! unconfirmed one; run the protocol tracker; derive ctinfo; then the caller's
//! verdict (routing + policy) decides whether a new connection is confirmed into
//! the table — a dropped first packet leaves nothing behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::checksum;
use crate::conn::{Conn, CtInfo, Ext, Listed, ProtoState, Status};
use crate::event::{EventBuf, EventKind};
use crate::helper::{Helper, HelperStats, MasterRef, PacketFix};
use crate::nat::alloc::{self, Rng};
use crate::nat::rewrite::Rewrite;
use crate::nat::Nat;
use crate::proto::sctp::{SctpOutcome, SctpState};
use crate::proto::tcp::{TcpConfig, TcpOutcome, TcpSegment, TcpState};
use crate::proto::{generic, icmp, udp, Outcome};
use crate::stats::CtStats;
use crate::table::{Clash, Guard, InsertError, Key, Local, NoPrefetch, Prefetch, Ref, Table};
use crate::timeout::Timeouts;
use crate::tuple::{Dir, Family, Tuple, IPPROTO_GRE, IPPROTO_UDP, IPPROTO_UDPLITE};
use crate::wire::{self, Frag, InnerTuple, ParseError, Parsed, L4};

mod helpers;
pub use helpers::expect_max;

/// Settings that may change at runtime (like the nf_conntrack sysctls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    pub timeouts: Timeouts,
    pub tcp: TcpConfig,
    /// nf_conntrack_checksum: verify L4 checksums, bad ones are INVALID.
    pub checksum: bool,
    /// nf_conntrack_acct and nf_conntrack_timestamp: per-connection packet
    /// and byte counters and the start time ([`crate::conn::Ext`]). Read
    /// when the engine is built (the table reserves room for them then);
    /// changing it later changes nothing.
    pub accounting: bool,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            timeouts: Timeouts::default(),
            tcp: TcpConfig::default(),
            checksum: true,
            accounting: false,
        }
    }
}

/// Engine construction parameters.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Table capacity (nf_conntrack_max).
    pub capacity_conns: u32,
    /// Hash seed; use a random one outside tests.
    pub seed: u64,
    pub tunables: Tunables,
}

/// What the receiving NIC said about a frame's L4 checksum (DPDK's
/// `RTE_MBUF_F_RX_L4_CKSUM_*`), as the kernel uses `skb->ip_summed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxCsum {
    /// Not checked by the NIC: conntrack verifies it in software (when
    /// `Tunables::checksum` is on).
    #[default]
    Unknown,
    /// Verified good (CHECKSUM_UNNECESSARY): no software check.
    Good,
    /// Verified bad: INVALID, as the software check would find it.
    Bad,
}

/// One frame offered to the engine.
#[derive(Debug, Clone, Copy)]
pub struct Pkt<'a> {
    pub frame: &'a [u8],
    /// The conntrack zone of the frame's lookup (the kernel's ct zone).
    pub zone: u16,
    /// The zone of the reply direction: `zone` (the default), or another
    /// for a directional zone (nft `ct original zone set`): a new
    /// connection's reply tuple takes it, and a frame not found in `zone`
    /// is looked up in it as well (resolve_normal_ct's second lookup).
    pub reply_zone: u16,
    /// The ingress port (NAT and policy rules match on it).
    pub in_port: u16,
    /// The NIC's verdict on the L4 checksum.
    pub rx_csum: RxCsum,
    /// The caller checked the IPv4 header (version, lengths, checksum) as
    /// `ip_rcv` does: conntrack does not sum it again.
    pub ip_checked: bool,
}

impl<'a> Pkt<'a> {
    /// A frame whose checksum no NIC checked.
    pub fn new(frame: &'a [u8], zone: u16, in_port: u16) -> Pkt<'a> {
        Pkt {
            frame,
            zone,
            reply_zone: zone,
            in_port,
            rx_csum: RxCsum::Unknown,
            ip_checked: false,
        }
    }
}

/// A reference to a connection that stays valid while the connection lives:
/// its place in the table plus its id (checked on use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnHandle {
    pub stripe: u32,
    pub local: Local,
    pub id: u32,
}

/// What the engine decided for one packet.
#[derive(Debug, Clone, Copy)]
pub struct CtResult {
    pub parsed: Result<Parsed, ParseError>,
    pub ctinfo: CtInfo,
    pub dir: Dir,
    /// The connection (after confirm for new ones); None for INVALID/UNTRACKED.
    pub conn: Option<ConnHandle>,
    /// Why the packet is INVALID, if it is.
    pub invalid_reason: Option<&'static str>,
    /// Set when conntrack itself dropped the packet (table full, clash, no NAT port).
    pub ct_drop: Option<&'static str>,
    /// The translation to apply to this packet, if its connection is NATed.
    pub rewrite: Option<Rewrite>,
    /// Its connection's mark (nft `ct mark`; 0 for a new connection and
    /// for packets without one).
    pub mark: u32,
    /// The zone of its connection's original direction (the packet's own
    /// zone when it has no connection): where its route is looked up.
    pub zone: u16,
    /// What a conntrack helper changes in the packet, to apply after
    /// `rewrite` ([`crate::helper::apply_fix`]).
    pub fix: Option<PacketFix>,
}

impl CtResult {
    /// Everything but `parsed` back to its default.
    #[inline]
    fn reset_verdict(&mut self) {
        self.ctinfo = CtInfo::Invalid;
        self.dir = Dir::Orig;
        self.conn = None;
        self.mark = 0;
        self.invalid_reason = None;
        self.ct_drop = None;
        self.rewrite = None;
        self.fix = None;
    }

    /// Whether this packet's destination is being translated in its original
    /// direction (nft `ct status dnat` for the policy).
    pub fn dnat(&self) -> bool {
        self.dir == Dir::Orig && self.rewrite.is_some_and(|w| w.dst.is_some())
    }

    /// The destination the packet will have after translation: what routing
    /// uses. Borrowed in place (a copy of the address right after the engine
    /// wrote it costs a store-forwarding stall).
    pub fn route_dst(&self) -> Option<&wire::Addr> {
        let p = self.parsed.as_ref().ok()?;
        Some(match &self.rewrite {
            Some(Rewrite {
                dst: Some((a, _)), ..
            }) => a,
            _ => &p.dst,
        })
    }
}

/// The verdict fields of a [`CtResult`], borrowed apart from its parse, so
/// that the engine reads the parse in place while it writes the verdict
/// (copying the ~100-byte `Parsed` out first was 11 % of the stage's time in
/// the appliance).
struct Verdict<'a> {
    ctinfo: &'a mut CtInfo,
    dir: &'a mut Dir,
    conn: &'a mut Option<ConnHandle>,
    invalid_reason: &'a mut Option<&'static str>,
    rewrite: &'a mut Option<Rewrite>,
    mark: &'a mut u32,
    zone: &'a mut u16,
}

impl CtResult {
    /// The parse, and the verdict to fill in.
    fn split(&mut self) -> (&Result<Parsed, ParseError>, Verdict<'_>) {
        (
            &self.parsed,
            Verdict {
                ctinfo: &mut self.ctinfo,
                dir: &mut self.dir,
                conn: &mut self.conn,
                invalid_reason: &mut self.invalid_reason,
                rewrite: &mut self.rewrite,
                mark: &mut self.mark,
                zone: &mut self.zone,
            },
        )
    }
}

impl Default for CtResult {
    fn default() -> Self {
        CtResult {
            parsed: Err(ParseError::TruncatedEthernet),
            ctinfo: CtInfo::Invalid,
            dir: Dir::Orig,
            conn: None,
            invalid_reason: None,
            ct_drop: None,
            rewrite: None,
            mark: 0,
            zone: 0,
            fix: None,
        }
    }
}

/// Where an accepted packet leaves: the egress port and its address of the
/// packet's family (what MASQUERADE translates to). The engine reads it
/// only for a new connection's source NAT (ctinfo NEW): deciders may leave
/// it out for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub port: u16,
    pub addr: Option<wire::Addr>,
    /// Set the connection's mark to this (nft `ct mark set`): a new
    /// connection is confirmed with it; a known one changes (an UPDATE event).
    pub mark: Option<u32>,
    /// Assign this helper to the packet's new connection (nft `ct helper
    /// set`); only when helpers are on ([`Engine::with_helpers`]).
    pub helper: Helper,
}

impl Egress {
    /// Port 0, no address: for callers without ports (tests, NAT-less replay).
    pub const NONE: Egress = Egress {
        port: 0,
        addr: None,
        mark: None,
        helper: Helper::None,
    };
}

/// Packets per processing stage (a burst).
const STAGE: usize = 32;

/// The tuple of packet `p` in `zone` with ports (or what stands for them)
/// `ports`.
#[inline(always)]
fn packet_tuple(p: &Parsed, (src_port, dst_port): (u16, u16), zone: u16) -> Tuple {
    Tuple {
        src: p.src,
        dst: p.dst,
        src_port,
        dst_port,
        proto: p.proto,
        family: p.family,
        zone,
    }
}

/// The tuple of the datagram an ICMP error quotes, in `zone`.
fn quoted_tuple(i: &InnerTuple, zone: u16) -> Tuple {
    Tuple {
        src: i.src,
        dst: i.dst,
        src_port: i.src_port,
        dst_port: i.dst_port,
        proto: i.proto,
        family: i.family,
        zone,
    }
}

/// Conntrack's verdict on a packet's L4 checksum: the NIC's where it
/// checked (counted), else `software()`, unless checking is off
/// (nf_conntrack_checksum=0).
#[inline(always)]
fn l4_checksum_verdict(w: &mut Worker, rx: RxCsum, software: impl FnOnce() -> bool) -> bool {
    match rx {
        RxCsum::Good => {
            w.stats.csum_offloaded += 1;
            true
        }
        RxCsum::Bad => !w.tun.checksum,
        RxCsum::Unknown => !w.tun.checksum || software(),
    }
}

/// The tuple of a plain (unfragmented TCP/UDP) packet, for stage 1; anything
/// else is worked out in stage 3.
#[inline]
fn simple_tuple(p: &Parsed, zone: u16) -> Option<Tuple> {
    if p.frag.is_some() {
        return None;
    }
    let ports = match p.l4 {
        L4::Tcp(t) => (t.src_port, t.dst_port),
        L4::Udp { src_port, dst_port } if p.proto == IPPROTO_UDP => (src_port, dst_port),
        _ => return None,
    };
    Some(packet_tuple(p, ports, zone))
}

/// The caller's verdict on a packet before confirmation (routing + policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward it out of `Egress` (source NAT rules apply: POSTROUTING).
    Accept(Egress),
    /// Deliver it to the appliance itself (INPUT: confirmed, no source NAT).
    Local,
    Drop,
}

const FRAG_SLOTS: usize = 1024;
/// How long a first fragment's translation is remembered (ipfrag_time).
const FRAG_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FragKey {
    family: Family,
    src: wire::Addr,
    dst: wire::Addr,
    proto: u8,
    id: u32,
    zone: u16,
}

/// Virtual reassembly of one datagram: which connection its fragments follow,
/// and how many of its bytes have passed. As the kernel (which defragments before
/// conntrack) creates a connection only from a complete datagram, a connection
/// started by a first fragment waits here, unconfirmed, until the set completes.
#[derive(Debug, Clone, Copy, Default)]
struct FragEntry {
    key: FragKey,
    /// The tuple the first fragment carried, once seen.
    tuple: Option<Tuple>,
    /// The unconfirmed connection the first fragment started, with its counters.
    pending: Option<(Conn, Ext)>,
    /// Fragment payload bytes seen.
    bytes: u32,
    /// The datagram's payload length, once the last fragment was seen.
    total: Option<u32>,
    expires_ms: u64,
}

impl FragEntry {
    fn complete(&self) -> bool {
        self.total.is_some_and(|t| self.bytes >= t)
    }
}

/// The unconfirmed connection a packet started, if any: one slot per
/// burst, reused packet after packet. A new connection is written into it
/// field by field (building a 208-byte `Conn` and moving it in waited on
/// store forwarding: most of `new_conn`'s time).
struct Pending {
    conn: Conn,
    /// Its counters and start time, for the table's extensions.
    ext: Ext,
    live: bool,
}

impl Pending {
    fn get_mut(&mut self) -> Option<&mut Conn> {
        self.live.then_some(&mut self.conn)
    }

    fn is_some(&self) -> bool {
        self.live
    }

    fn clear(&mut self) {
        self.live = false;
    }

    fn set(&mut self, c: Option<(Conn, Ext)>) {
        match c {
            Some((c, ext)) => {
                self.conn = c;
                self.ext = ext;
                self.live = true;
            }
            None => self.live = false,
        }
    }

    /// A new connection: tuples `t` and `reply`, created `now_ms`, with
    /// protocol state `proto`; every other field as `Conn::default()`.
    #[inline(always)]
    fn start(&mut self, t: &Tuple, reply: &Tuple, now_ms: u64, proto: ProtoState) -> &mut Conn {
        let c = &mut self.conn;
        c.tuples[0] = *t;
        c.tuples[1] = *reply;
        c.deadline_ms = 0;
        c.status = Status::default();
        c.id = 0;
        c.proto = proto;
        c.mark = 0;
        c.nat_csum = None;
        c.helper = Helper::None;
        debug_assert_eq!(
            *c,
            Conn {
                tuples: [*t, *reply],
                proto,
                ..Conn::default()
            },
            "Pending::start sets every field"
        );
        self.ext = Ext {
            counters: Default::default(),
            start_ms: now_ms,
        };
        self.live = true;
        &mut self.conn
    }
}

/// Says whether a NAT reply tuple would reach this worker (RSS steering).
pub type ReplySteering = Box<dyn Fn(&Tuple) -> bool + Send>;

/// Per-worker state: counters, events, and the fragment memory. Owned by one
/// lcore; nothing in it is shared.
pub struct Worker {
    pub stats: CtStats,
    pub events: EventBuf,
    /// New connections dropped because NAT found no free port / id.
    pub nat_out_of_ports: u64,
    /// RSS steering for NAT: a reply tuple is acceptable only if this says it
    /// reaches this worker (the appliance installs its Toeplitz key and RETA).
    pub reply_steering: Option<ReplySteering>,
    rng: Rng,
    /// The key of the reply tuple source NAT just claimed for the
    /// connection being confirmed (see [`Clash::Neither`]).
    claimed: Option<Key>,
    tun: Tunables,
    tun_gen: u64,
    frags: Box<[FragEntry]>,
    /// Conntrack helper counters.
    pub helpers: HelperStats,
    /// The master of the expected connection being made, until it is confirmed.
    helper_master: Option<MasterRef>,
}

/// The engine: the table plus the runtime tunables; shared by all workers.
/// `P` issues the burst's prefetches (see [`crate::table::prefetch`]).
pub struct Engine<P: Prefetch = NoPrefetch> {
    table: Table,
    tunables: Mutex<Tunables>,
    tunables_gen: AtomicU64,
    nat: Option<Nat>,
    /// Whether a NAT rule acts before routing (destination NAT, or the
    /// filtering of endpoint-independent mappings): worked out once, so that
    /// new connections under source NAT alone do not walk the rules for it.
    nat_prerouting: bool,
    seed: u64,
    workers: AtomicU64,
    /// Whether the table keeps counters and start times (see `Tunables::accounting`).
    accounting: bool,
    /// Conntrack helpers, when on ([`Engine::with_helpers`]).
    helpers: Option<Box<helpers::Helpers>>,
    _prefetch: std::marker::PhantomData<fn() -> P>,
}

fn frag_key(p: &Parsed, f: &Frag, zone: u16) -> FragKey {
    FragKey {
        family: p.family,
        src: p.src,
        dst: p.dst,
        proto: p.proto,
        id: f.id,
        zone,
    }
}

fn frag_slot(k: &FragKey) -> usize {
    let t = Tuple {
        src: k.src,
        dst: k.dst,
        src_port: k.id as u16,
        dst_port: (k.id >> 16) as u16,
        proto: k.proto,
        family: k.family,
        zone: k.zone,
    };
    (t.hash(0x5eed) as usize) % FRAG_SLOTS
}

/// The worker of `workers` that owns table stripe `stripe`: stripes are
/// dealt to the workers round-robin (a table has a power of two of them, at
/// least one per worker), so worker `w` owns `w, w + workers, ...`.
pub fn stripe_owner(stripe: u32, workers: u32) -> u32 {
    stripe % workers.max(1)
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine::with_nat(cfg, None)
    }

    /// An engine that also translates, by `nat`'s rules (one table stripe,
    /// no prefetch hints: tools and tests).
    pub fn with_nat(cfg: EngineConfig, nat: Option<Nat>) -> Engine {
        Engine::build(cfg, nat, 1, &mut |_, _| {})
    }
}

impl<P: Prefetch> Engine<P> {
    /// An engine whose table has `stripes` stripes (one per worker) and whose
    /// large allocations are first shown to `advise` (see
    /// [`Table::with_advice`]).
    pub fn build(
        cfg: EngineConfig,
        nat: Option<Nat>,
        stripes: u32,
        advise: &mut dyn FnMut(usize, usize),
    ) -> Engine<P> {
        // Endpoint-independent mappings: at most one per inside endpoint,
        // reserved for a quarter of the table's connections.
        let eim = match &nat {
            Some(n) if n.has_eim() => (cfg.capacity_conns / 4).max(256),
            _ => 0,
        };
        let nat_prerouting = nat.as_ref().is_some_and(|n| {
            n.rules
                .iter()
                .any(|r| r.action.is_dnat() || r.endpoint_independent)
        });
        let table = Table::with_advice(
            cfg.capacity_conns,
            stripes,
            cfg.seed,
            eim,
            cfg.tunables.accounting,
            advise,
        );
        table.set_eim_timeout_ms(cfg.tunables.timeouts.nat_eim_ms);
        Engine {
            table,
            tunables: Mutex::new(cfg.tunables),
            tunables_gen: AtomicU64::new(0),
            nat,
            nat_prerouting,
            seed: cfg.seed,
            workers: AtomicU64::new(0),
            accounting: cfg.tunables.accounting,
            helpers: None,
            _prefetch: std::marker::PhantomData,
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn tunables(&self) -> Tunables {
        *self.tunables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the tunables; workers pick them up at their next burst.
    pub fn set_tunables(&self, t: Tunables) {
        self.table.set_eim_timeout_ms(t.timeouts.nat_eim_ms);
        let mut cur = self.tunables.lock().unwrap_or_else(|e| e.into_inner());
        // Accounting stays as the table was made.
        *cur = Tunables {
            accounting: cur.accounting,
            ..t
        };
        drop(cur);
        self.tunables_gen.fetch_add(1, Ordering::Release);
    }

    /// A worker context with room for `event_capacity` buffered events.
    pub fn worker(&self, event_capacity: usize) -> Worker {
        let n = self.workers.fetch_add(1, Ordering::Relaxed);
        Worker {
            stats: CtStats::default(),
            events: EventBuf::new(event_capacity),
            nat_out_of_ports: 0,
            reply_steering: None,
            claimed: None,
            rng: Rng::new(self.seed ^ (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            tun: self.tunables(),
            tun_gen: self.tunables_gen.load(Ordering::Acquire),
            frags: vec![FragEntry::default(); FRAG_SLOTS].into_boxed_slice(),
            helpers: HelperStats::default(),
            helper_master: None,
        }
    }

    fn refresh_tunables(&self, w: &mut Worker) {
        let g = self.tunables_gen.load(Ordering::Acquire);
        if g != w.tun_gen {
            w.tun = self.tunables();
            w.tun_gen = g;
        }
    }

    /// Runs conntrack over a burst. For each packet, in order, the engine looks
    /// up / creates its connection, asks `decide(i, &result)` for the verdict
    /// (routing and policy), and confirms a new connection only if the verdict
    /// is `Accept`. `results[i]` gets the outcome; `ct_drop` is set if conntrack
    /// itself had to drop an accepted packet (table full).
    pub fn process_burst<F>(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkts: &[Pkt<'_>],
        results: &mut [CtResult],
        mut decide: F,
    ) where
        F: FnMut(usize, &CtResult) -> Decision,
    {
        self.refresh_tunables(w);
        // The stripes this burst uses, locked once for the whole burst.
        let mut g = self.table.guard();
        let helpers = self.helpers.is_some();
        let mut pending = Pending {
            conn: Conn::default(),
            ext: Ext::default(),
            live: false,
        };
        for (c, chunk) in pkts.chunks(STAGE).enumerate() {
            // Stage 1: parse and hash every packet, prefetching its bucket;
            // stage 2: prefetch the records whose signatures match. The misses
            // of the burst overlap instead of adding up; stage 3 then finds
            // them in cache.
            // Each packet is parsed straight into its result.
            let out = &mut results[c * STAGE..c * STAGE + chunk.len()];
            let mut keys: [Option<Key>; STAGE] = [None; STAGE];
            for (i, pkt) in chunk.iter().enumerate() {
                // The common frames are parsed in place, their tuple taken
                // from the parse; the others fully, the tuple read from it.
                let parsed = &mut out[i].parsed;
                if parsed.is_err() {
                    *parsed = Ok(Parsed::default());
                }
                let fast = match parsed {
                    Ok(p) => wire::parse_common_into(pkt.frame, !pkt.ip_checked, p)
                        .map(|ports| packet_tuple(p, ports, pkt.zone)),
                    Err(_) => None,
                };
                let t = match fast {
                    Some(t) => Some(t),
                    None => {
                        *parsed = if pkt.ip_checked {
                            wire::parse_ip_checked(pkt.frame)
                        } else {
                            wire::parse(pkt.frame)
                        };
                        parsed.as_ref().ok().and_then(|p| simple_tuple(p, pkt.zone))
                    }
                };
                if let Some(t) = t {
                    let k = self.table.key(&t);
                    g.prefetch_bucket::<P>(k);
                    keys[i] = Some(k);
                }
            }
            let mut evicting = 0u64;
            for (j, (k, r)) in keys[..chunk.len()].iter().zip(out.iter()).enumerate() {
                if let Some(k) = k {
                    // TCP also reads its window state, in the third line.
                    let tcp = matches!(r.parsed, Ok(Parsed { l4: L4::Tcp(_), .. }));
                    if g.prefetch_records::<P>(*k, if tcp { 3 } else { 2 }) {
                        evicting |= 1 << j;
                    }
                }
            }
            // A new connection in a full stripe evicts one: what its removal
            // writes besides the record (loading since just above) is loaded
            // now.
            while evicting != 0 {
                let j = evicting.trailing_zeros() as usize;
                evicting &= evicting - 1;
                if let Some(k) = keys[j] {
                    g.prefetch_eviction::<P>(k);
                }
            }
            for (j, pkt) in chunk.iter().enumerate() {
                let i = c * STAGE + j;
                // Without helpers, stage 3 has no helper hook at all.
                if helpers {
                    self.stage3::<true, F>(
                        &mut g,
                        w,
                        now_ms,
                        pkt,
                        keys[j],
                        i,
                        &mut results[i],
                        &mut pending,
                        &mut decide,
                    );
                } else {
                    self.stage3::<false, F>(
                        &mut g,
                        w,
                        now_ms,
                        pkt,
                        keys[j],
                        i,
                        &mut results[i],
                        &mut pending,
                        &mut decide,
                    );
                }
            }
        }
    }

    /// Stage 3 of `process_burst` for one packet: track, NAT, decide, confirm
    /// (and, with `HELPERS`, the conntrack helpers' hooks).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn stage3<const HELPERS: bool, F>(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: Option<Key>,
        i: usize,
        out: &mut CtResult,
        pending: &mut Pending,
        decide: &mut F,
    ) where
        F: FnMut(usize, &CtResult) -> Decision,
    {
        // `out.parsed` is this packet's (stage 1); the rest is reset here.
        out.reset_verdict();
        out.zone = pkt.zone;
        pending.clear();
        let mut looked_up = key;
        let park = self.track(g, w, now_ms, pkt, &mut looked_up, out, pending);
        if HELPERS && pending.is_some() {
            self.expected(g, w, now_ms, pending, looked_up, out);
        }
        if let Some(c) = pending.get_mut() {
            self.nat_prerouting(g, now_ms, c, pkt.in_port, out);
        }
        let d = decide(i, out);
        let egress = match d {
            Decision::Accept(e) => Some(e),
            Decision::Local | Decision::Drop => None,
        };
        if d == Decision::Drop {
            return;
        }
        if let Some(m) = egress.and_then(|e| e.mark) {
            self.set_mark(g, w, now_ms, m, out, pending);
        }
        if HELPERS {
            if let (Some(e), Some(c)) = (egress, pending.get_mut()) {
                // nft `ct helper set`: on a new connection of the helper's protocol.
                if e.helper.proto() == Some(c.tuples[0].proto) {
                    c.helper = e.helper;
                    c.status.set(Status::HELPER);
                }
            }
        }
        if pending.is_some() {
            let (conn, ext) = (&mut pending.conn, &pending.ext);
            let home = looked_up.map(|k| k.stripe);
            if egress
                .is_none_or(|e| self.nat_postrouting(g, w, now_ms, conn, pkt.in_port, e, home, out))
            {
                match park {
                    Some(slot) => {
                        w.claimed = None;
                        w.frags[slot].pending = Some((*conn, *ext));
                    }
                    None => {
                        if conn.status.0 & (Status::SRC_NAT | Status::DST_NAT) != 0 {
                            conn.nat_csum = crate::nat::rewrite::csum_deltas(conn);
                        }
                        self.confirm(g, w, now_ms, conn, ext, looked_up, out)
                    }
                }
            }
        }
        if HELPERS && out.ct_drop.is_none() {
            self.help(g, w, now_ms, pkt.frame, pending.is_some(), out);
        }
    }

    /// nft `ct mark set`: on the packet's new connection before it is
    /// confirmed, or on its known one (an UPDATE event if the mark changed,
    /// the kernel's IPCT_MARK).
    #[cold]
    fn set_mark(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        mark: u32,
        out: &mut CtResult,
        pending: &mut Pending,
    ) {
        out.mark = mark;
        if let Some(c) = pending.get_mut() {
            c.mark = mark;
            return;
        }
        let Some(h) = out.conn else { return };
        let Some(r) = g.get(h.stripe, h.local, h.id) else {
            return;
        };
        let c = g.conn_mut(r);
        if c.mark != mark {
            c.mark = mark;
            if w.events.enabled() {
                let l = g.listed(r);
                w.events.push(EventKind::Update, now_ms, &l);
            }
        }
    }

    /// Destination NAT for a new connection (before routing).
    fn nat_prerouting(
        &self,
        g: &mut Guard<'_>,
        now_ms: u64,
        c: &mut Conn,
        in_port: u16,
        res: &mut CtResult,
    ) {
        let Some(nat) = &self.nat else { return };
        if c.status.has(Status::DST_NAT_DONE) {
            return;
        }
        if self.nat_prerouting {
            nat.prerouting(g, c, in_port, now_ms);
        }
        c.status.set(Status::DST_NAT_DONE);
        res.rewrite = Rewrite::for_packet(c, Dir::Orig, false);
    }

    /// Source NAT for a new connection (after routing). False if the packet must
    /// be dropped (no free port).
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn nat_postrouting(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        c: &mut Conn,
        in_port: u16,
        egress: Egress,
        home: Option<u32>,
        res: &mut CtResult,
    ) -> bool {
        let Some(nat) = &self.nat else { return true };
        if c.status.has(Status::SRC_NAT_DONE) {
            return true;
        }
        c.status.set(Status::SRC_NAT_DONE);
        let Some(rule) = nat.postrouting_rule(c, in_port, egress.port) else {
            return true;
        };
        let steer = w.reply_steering.take();
        let accept = |t: &Tuple| steer.as_ref().is_none_or(|f| f(t));
        let (events, stats) = (&mut w.events, &mut w.stats);
        let mut reclaimed = |dead: Listed| {
            stats.expired += 1;
            events.push(EventKind::Destroy, now_ms, &dead);
        };
        let mut search = alloc::Search {
            table: g,
            home,
            now_ms,
            rng: &mut w.rng,
            accept: &accept,
            reclaimed: &mut reclaimed,
            claimed: None,
        };
        let r = alloc::snat(&mut search, c, rule, egress.addr);
        w.claimed = search.claimed;
        w.reply_steering = steer;
        match r {
            Ok(()) => {
                rule.hits.fetch_add(1, Ordering::Relaxed);
                res.rewrite = Rewrite::for_packet(c, Dir::Orig, false);
                true
            }
            Err(_) => {
                w.nat_out_of_ports += 1;
                res.ct_drop = Some("nat_out_of_ports");
                false
            }
        }
    }

    pub fn nat(&self) -> Option<&Nat> {
        self.nat.as_ref()
    }

    /// Software dispatch, for several workers sharing a port without RSS:
    /// the stripe (one per worker) whose worker should process `frame`,
    /// from the frame alone. Both directions of a connection give the same
    /// stripe (the table's hash is symmetric), and so does a NATed reply
    /// when its port was chosen with [`Engine::reply_steering`]; an ICMP
    /// error goes where the connection it quotes is; all fragments of a
    /// datagram go to one stripe (source, destination, protocol and id:
    /// their reassembly state is per worker). Anything unparsable: stripe 0.
    pub fn dispatch(&self, frame: &[u8], zone: u16) -> u32 {
        if self.table.stripe_count() == 1 {
            return 0;
        }
        // Plain TCP/UDP frames (not fragments, not ICMP): the straight
        // parse `process_burst` itself takes, so the owner's key is the
        // stripe computed here.
        let mut plain = Parsed::default();
        if let Some(ports) = wire::parse_common_into(frame, false, &mut plain) {
            return self.table.key(&packet_tuple(&plain, ports, zone)).stripe;
        }
        let Ok(p) = wire::parse_ip_checked(frame).or_else(|_| wire::parse_l3_of_l4_error(frame))
        else {
            return 0;
        };
        let mut t = packet_tuple(&p, tuple_ports(&p), zone);
        match (p.frag, p.l4) {
            (Some(f), _) => {
                // The low half of the id on both sides: symmetric, like ports.
                t.src_port = f.id as u16;
                t.dst_port = f.id as u16;
            }
            (None, L4::Icmp(ic)) if ic.is_error => {
                if let Some(q) = ic.inner.and_then(|i| quoted_tuple(&i, zone).invert()) {
                    t = q;
                }
            }
            _ => {}
        }
        self.table.key(&t).stripe
    }

    /// The reply steering of worker `worker` of `workers` under
    /// [`Engine::dispatch`] and [`stripe_owner`]: a source-NAT reply tuple
    /// is acceptable only if its replies are dispatched to that worker too.
    pub fn reply_steering(&self, worker: u32, workers: u32) -> ReplySteering {
        let stripes = self.table.stripe_of_fn();
        Box::new(move |t: &Tuple| stripe_owner(stripes(t), workers) == worker)
    }

    /// Notes a fragment's bytes in its datagram's reassembly entry; returns the slot.
    fn frag_note(&self, w: &mut Worker, now_ms: u64, p: &Parsed, f: &Frag, zone: u16) -> usize {
        let k = frag_key(p, f, zone);
        let slot = frag_slot(&k);
        let e = &mut w.frags[slot];
        if e.key != k || now_ms >= e.expires_ms {
            if now_ms < e.expires_ms && !e.complete() {
                w.stats.frag_evicted += 1;
            }
            *e = FragEntry {
                key: k,
                expires_ms: now_ms + FRAG_TIMEOUT_MS,
                ..FragEntry::default()
            };
        }
        let payload = (p.l3_offset as u32 + p.l3_len as u32).saturating_sub(p.l4_offset as u32);
        e.bytes += payload;
        if !f.more {
            e.total = Some(f.offset as u32 + payload);
        }
        slot
    }

    /// One packet: lookup or create. Fills `res` and, for a new connection,
    /// `pending`: the unconfirmed connection to confirm if the packet is
    /// accepted, or, for a first fragment of an incomplete datagram, to park
    /// until the datagram completes (the slot returned). `key` comes in as
    /// stage 1's key (plain packets) and leaves as the key of the tuple
    /// looked up and not found under this guard (its confirm need not look
    /// again).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: &mut Option<Key>,
        res: &mut CtResult,
        pending: &mut Pending,
    ) -> Option<usize> {
        // Plain packets (stage 1 found their tuple) inline; the rest apart.
        if key.is_some() {
            if let (Ok(p), mut v) = res.split() {
                self.track_plain(g, w, now_ms, pkt, p, key, &mut v, pending);
                return None;
            }
        }
        self.track_other(g, w, now_ms, pkt, key, res, pending)
    }

    /// [`Engine::track`] for what is not a plain packet: parse errors,
    /// fragments, ICMP, other protocols.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn track_other(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: &mut Option<Key>,
        res: &mut CtResult,
        pending: &mut Pending,
    ) -> Option<usize> {
        if let Err(e) = res.parsed {
            // L3 errors never reach conntrack (ip_rcv / ipv6_rcv drop them);
            // a malformed L4 header is INVALID.
            if matches!(
                e,
                ParseError::TruncatedL4
                    | ParseError::BadTcpHeaderLen
                    | ParseError::BadUdpLen
                    | ParseError::BadIpv6ExtHeader
            ) {
                w.stats.invalid += 1;
                res.invalid_reason = Some(e.name());
                // The IP header is sound: the packet is routed and
                // filtered as INVALID (`ct state invalid`), as in the
                // kernel, not dropped unseen by the policy.
                if let Ok(l3) = wire::parse_l3_of_l4_error(pkt.frame) {
                    res.parsed = Ok(l3);
                }
            }
            return None;
        }
        // The parse is read in place while the verdict is written.
        let (parsed, mut v) = res.split();
        let Ok(p) = parsed else { return None };
        let frag_slot = p
            .frag
            .map(|f| (self.frag_note(w, now_ms, p, &f, pkt.zone), f));
        if let Some((slot, f)) = frag_slot {
            if f.offset != 0 {
                pending.set(self.follow_fragment(g, w, now_ms, p, slot, &mut v));
                return None;
            }
        }
        if !l4_checksum_verdict(w, pkt.rx_csum, || {
            checksum::l4_checksum_ok_conntrack(pkt.frame, p)
        }) {
            invalid(w, &mut v, "bad L4 checksum");
            return None;
        }
        let tuple = self.tuple_of(g, w, now_ms, pkt, p, &mut v)?;
        self.track_tuple(g, w, now_ms, pkt, p, tuple, key, &mut v, pending);
        if let Some((slot, _)) = frag_slot {
            if v.conn.is_some() || pending.is_some() {
                // A first fragment: the rest of the datagram follows this connection.
                w.frags[slot].tuple = Some(tuple);
                if pending.is_some() && !w.frags[slot].complete() {
                    return Some(slot);
                }
            }
        }
        None
    }

    /// `track` for a plain packet (stage 1 found its tuple: parsed, not a
    /// fragment, TCP or UDP): the checks that apply to it, then the lookup.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track_plain(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        key: &mut Option<Key>,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        if !l4_checksum_verdict(w, pkt.rx_csum, || checksum::tcp_udp_ok(pkt.frame, p)) {
            return invalid(w, res, "bad L4 checksum");
        }
        let ports = match p.l4 {
            L4::Tcp(info) if !crate::proto::tcp::tcp_error_flags_ok(info.flags) => {
                return invalid(w, res, "tcp: invalid flag combination");
            }
            _ => tuple_ports(p),
        };
        let t = packet_tuple(p, ports, pkt.zone);
        self.track_tuple(g, w, now_ms, pkt, p, t, key, res, pending)
    }

    /// The tuple of a packet, or None (with `res` filled in) for packets that are
    /// INVALID, UNTRACKED or RELATED (ICMP errors) and need no lookup of their own.
    #[inline]
    fn tuple_of(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        res: &mut Verdict<'_>,
    ) -> Option<Tuple> {
        match p.l4 {
            L4::Tcp(info) if !crate::proto::tcp::tcp_error_flags_ok(info.flags) => {
                invalid(w, res, "tcp: invalid flag combination");
                return None;
            }
            L4::Icmp(ic) => {
                if ic.is_error {
                    self.related(g, w, now_ms, pkt, p, ic.inner, res);
                    return None;
                }
                if p.family == Family::V6 && icmp::icmpv6_untracked(ic.icmp_type) {
                    w.stats.ignore += 1;
                    *res.ctinfo = CtInfo::Untracked;
                    return None;
                }
                if p.family == Family::V4 && ic.icmp_type > icmp::NR_ICMP_TYPES {
                    invalid(w, res, "icmp: invalid type");
                    return None;
                }
            }
            _ => {}
        }
        Some(packet_tuple(p, tuple_ports(p), pkt.zone))
    }

    /// Lookup + tracker for a packet with tuple `t`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track_tuple(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        key_io: &mut Option<Key>,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let key = *key_io.get_or_insert_with(|| self.table.key(&t));
        let found = match self.find_live(g, w, now_ms, key, &t) {
            None if pkt.reply_zone != t.zone => {
                // A directional zone: the reply direction's tuples are in
                // the other zone (resolve_normal_ct's second lookup).
                let t2 = Tuple {
                    zone: pkt.reply_zone,
                    ..t
                };
                self.find_live(g, w, now_ms, self.table.key(&t2), &t2)
            }
            found => found,
        };
        let Some((r, dir)) = found else {
            self.new_conn(w, now_ms, pkt, p, t, res, pending);
            return;
        };
        w.stats.found += 1;
        if self.helpers.is_some() && g.conn(r).status.has(Status::SEQ_ADJUST) {
            return self.track_found_seqadj(g, w, now_ms, pkt, p, t, r, dir, res, pending);
        }
        self.track_found(g, w, now_ms, pkt, p, t, r, dir, res, pending);
    }

    /// [`Engine::track_found`] for a connection whose sequence numbers a
    /// helper adjusts: the tracker sees the acknowledgement and SACK edges
    /// as the receiver's sequence space has them (seqadj). Out of the way
    /// of every other packet.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn track_found_seqadj(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        r: Ref,
        dir: Dir,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let (adjusted, hdr) = self.tracker_view(g, r, pkt.frame, p, dir);
        let view = Pkt {
            frame: &hdr,
            ..*pkt
        };
        self.track_found(g, w, now_ms, &view, &adjusted, t, r, dir, res, pending);
    }

    /// The tracker and its outcome for a packet of known connection `r`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track_found(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        r: Ref,
        dir: Dir,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let c = g.conn_mut(r);
        *res.mark = c.mark;
        *res.zone = c.tuples[0].zone;
        let before = (c.status, c.state_tag());
        let old_deadline = c.deadline_ms;
        let outcome = self.run_tracker(w, now_ms, pkt, p, c, dir);
        let handle = |c: &Conn| ConnHandle {
            stripe: r.stripe,
            local: r.local,
            id: c.id,
        };
        match outcome {
            Tracked::Accept { timeout_ms, kill } => {
                c.deadline_ms = now_ms + timeout_ms;
                *res.ctinfo = ctinfo_for(c, dir);
                *res.dir = dir;
                if dir == Dir::Reply {
                    c.status.set(Status::SEEN_REPLY);
                }
                Rewrite::write_for_packet(res.rewrite, c, dir, false);
                let changed = (c.status, c.state_tag()) != before;
                let shortened = c.deadline_ms < old_deadline;
                let h = handle(c);
                if self.accounting {
                    g.account(r, dir, u64::from(p.l3_len));
                }
                if kill {
                    if let Some(dead) = g.remove(r) {
                        w.events.push(EventKind::Destroy, now_ms, &dead);
                    }
                } else {
                    *res.conn = Some(h);
                    if changed && w.events.enabled() {
                        let l = g.listed(r);
                        w.events.push(EventKind::Update, now_ms, &l);
                    }
                    if shortened {
                        g.deadline_changed(r, old_deadline);
                    }
                }
            }
            Tracked::Ignore => {
                *res.ctinfo = ctinfo_for(c, dir);
                if dir == Dir::Reply {
                    c.status.set(Status::SEEN_REPLY);
                }
                *res.dir = dir;
                Rewrite::write_for_packet(res.rewrite, c, dir, false);
                *res.conn = Some(handle(c));
            }
            Tracked::Invalid(why) => {
                // (nf_tcp_handle_invalid may have shortened the deadline.)
                g.deadline_changed(r, old_deadline);
                invalid(w, res, why);
            }
            Tracked::Repeat => {
                // A SYN reopening a closed connection: kill it, track as new.
                w.stats.search_restart += 1;
                if let Some(dead) = g.remove(r) {
                    w.events.push(EventKind::Destroy, now_ms, &dead);
                }
                self.new_conn(w, now_ms, pkt, p, t, res, pending);
            }
        }
    }

    /// Finds a live connection; an expired one is reclaimed on the spot.
    #[inline(always)]
    fn find_live(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        key: Key,
        t: &Tuple,
    ) -> Option<(Ref, Dir)> {
        let (r, dir) = g.lookup(key, t)?;
        if g.conn(r).is_expired(now_ms) {
            if let Some(dead) = g.remove(r) {
                w.stats.expired += 1;
                w.events.push(EventKind::Destroy, now_ms, &dead);
            }
            return None;
        }
        Some((r, dir))
    }

    /// init_conntrack + the tracker's first packet: an unconfirmed connection
    /// (into `pending`).
    #[allow(clippy::too_many_arguments)]
    fn new_conn(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let Some(mut reply) = t.invert() else {
            invalid(w, res, "cannot invert tuple");
            return;
        };
        reply.zone = pkt.reply_zone;
        let proto = match p.l4 {
            L4::Tcp(info) => match TcpState::new(
                &TcpSegment {
                    info,
                    options: options(pkt.frame, &info),
                },
                &w.tun.tcp,
            ) {
                Ok(s) => ProtoState::Tcp(s),
                Err(why) => {
                    invalid(w, res, why);
                    return;
                }
            },
            L4::Udp { .. } => ProtoState::Stream {
                stream_ts_ms: now_ms + udp::STREAM_AFTER_MS,
            },
            L4::Icmp(_) => ProtoState::Icmp,
            L4::Sctp { .. } => match SctpState::new(l4_bytes(pkt.frame, p)) {
                Ok(s) => ProtoState::Sctp(s),
                Err(why) => {
                    invalid(w, res, why);
                    return;
                }
            },
            _ => ProtoState::Generic,
        };
        // Built where it is kept (no 208-byte copy), and taken back if the
        // tracker keeps nothing.
        let conn = pending.start(&t, &reply, now_ms, proto);
        match self.run_tracker(w, now_ms, pkt, p, conn, Dir::Orig) {
            Tracked::Accept { timeout_ms, kill } => {
                if kill {
                    // Accepted, but nothing to keep.
                    *res.ctinfo = CtInfo::New;
                    pending.clear();
                    return;
                }
                w.stats.new += 1;
                conn.deadline_ms = now_ms + timeout_ms;
                account(&mut pending.ext, Dir::Orig, p);
                *res.ctinfo = CtInfo::New;
                *res.dir = Dir::Orig;
            }
            Tracked::Ignore => {
                *res.ctinfo = CtInfo::New;
                pending.clear();
            }
            Tracked::Invalid(why) => {
                invalid(w, res, why);
                pending.clear();
            }
            Tracked::Repeat => {
                invalid(w, res, "tcp: repeat on a new connection");
                pending.clear();
            }
        }
    }

    /// __nf_conntrack_confirm: insert a new connection, evicting a non-assured
    /// one if the table is full (early_drop).
    #[allow(clippy::too_many_arguments)]
    fn confirm(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        conn: &Conn,
        ext: &Ext,
        looked_up: Option<Key>,
        res: &mut CtResult,
    ) {
        // An expired connection still holding a tuple gives way (the kernel's
        // lookups never see expired entries). The packet's lookup already
        // cleared the original tuple, and with it the reply tuple unless NAT
        // changed it; source NAT's port search clears the one it picks. Left:
        // a reply tuple only destination NAT changed.
        if conn.status.has(Status::DST_NAT) && !conn.status.has(Status::SRC_NAT) {
            g.taken(&conn.tuples[1], now_ms, &mut |dead| {
                w.stats.expired += 1;
                w.events.push(EventKind::Destroy, now_ms, &dead);
            });
        }
        // Source NAT's port search looked the reply tuple up under this
        // guard too (its key is left in `claimed`).
        let claimed = if conn.status.has(Status::SRC_NAT) {
            w.claimed.take()
        } else {
            None
        };
        let clash_check = match (looked_up, claimed) {
            (Some(key), Some(reply)) => Clash::Neither(key, reply),
            (Some(key), None) => Clash::ReplyOnly(key),
            (None, _) => Clash::Both,
        };
        let mut evicted = None;
        match g.insert(conn, clash_check, true, &mut evicted) {
            Ok((r, id)) => {
                if let Some(dead) = evicted {
                    w.stats.early_drop += 1;
                    w.events.push(EventKind::Destroy, now_ms, &dead);
                }
                w.stats.insert += 1;
                if self.accounting {
                    g.set_ext(r, *ext);
                }
                res.conn = Some(ConnHandle {
                    stripe: r.stripe,
                    local: r.local,
                    id,
                });
                if w.events.enabled() {
                    let l = g.listed(r);
                    w.events.push(EventKind::New, now_ms, &l);
                }
            }
            Err(InsertError::Full) => {
                w.stats.drop += 1;
                w.stats.insert_failed += 1;
                res.ct_drop = Some("table_full");
            }
            Err(InsertError::Clash) => {
                w.stats.insert_failed += 1;
                res.ct_drop = Some("insert_clash");
            }
        }
    }

    /// The protocol tracker's verdict on a packet of connection `c`.
    #[inline(always)]
    fn run_tracker(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        c: &mut Conn,
        dir: Dir,
    ) -> Tracked {
        let tun = &w.tun;
        if c.status.has(Status::ASSURED)
            && c.status.has(Status::SEEN_REPLY)
            && matches!(c.tuples[0].proto, IPPROTO_UDP | IPPROTO_UDPLITE)
        {
            // An assured UDP stream: udp::packet would find `now` past
            // stream_ts (it was when ASSURED was set, and time only moves
            // on) and give the stream timeout. Answered without reading the
            // protocol state, which lives in the record's third line.
            return Tracked::Accept {
                timeout_ms: tun.timeouts.udp_stream_ms,
                kill: false,
            };
        }
        self.run_protocol_tracker(w, now_ms, pkt, p, c, dir)
    }

    /// [`Engine::run_tracker`] past the assured-UDP shortcut: the protocol's tracker.
    #[inline(never)]
    fn run_protocol_tracker(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        c: &mut Conn,
        dir: Dir,
    ) -> Tracked {
        let tun = &w.tun;
        let from = |o: Outcome| match o {
            Outcome::Accept { timeout_ms } => Tracked::Accept {
                timeout_ms,
                kill: false,
            },
            Outcome::Invalid(why) => Tracked::Invalid(why),
        };
        match (&mut c.proto, p.l4) {
            (ProtoState::Tcp(s), L4::Tcp(info)) => {
                let seg = TcpSegment {
                    info,
                    options: options(pkt.frame, &info),
                };
                match s.packet(dir, &seg, &mut c.status, &tun.tcp, &tun.timeouts) {
                    TcpOutcome::Accept { timeout_ms } => Tracked::Accept {
                        timeout_ms,
                        kill: false,
                    },
                    TcpOutcome::AcceptAndKill => Tracked::Accept {
                        timeout_ms: 0,
                        kill: true,
                    },
                    TcpOutcome::Ignore => Tracked::Ignore,
                    TcpOutcome::Invalid(why) => Tracked::Invalid(why),
                    TcpOutcome::InvalidLowerTimeout { reason, timeout_ms } => {
                        // nf_tcp_handle_invalid: shorten a long-lived entry's life.
                        let remaining = c.deadline_ms.saturating_sub(now_ms);
                        if remaining >= crate::proto::tcp::INVALID_LOWER_MIN_REMAINING_MS
                            && remaining > timeout_ms
                        {
                            c.deadline_ms = now_ms + timeout_ms;
                        }
                        Tracked::Invalid(reason)
                    }
                    TcpOutcome::Repeat => Tracked::Repeat,
                }
            }
            (ProtoState::Stream { stream_ts_ms }, _) if c.tuples[0].proto == IPPROTO_GRE => {
                let _ = stream_ts_ms;
                from(generic::gre_packet(&mut c.status, &tun.timeouts))
            }
            (ProtoState::Stream { stream_ts_ms }, _) => from(udp::packet(
                now_ms,
                *stream_ts_ms,
                &mut c.status,
                &tun.timeouts,
            )),
            (ProtoState::Icmp, _) => from(icmp::packet(&c.tuples[0], &tun.timeouts)),
            (ProtoState::Sctp(s), _) => {
                match s.packet(dir, l4_bytes(pkt.frame, p), &mut c.status, &tun.timeouts) {
                    SctpOutcome::Accept { timeout_ms } => Tracked::Accept {
                        timeout_ms,
                        kill: false,
                    },
                    SctpOutcome::Ignore => Tracked::Ignore,
                    SctpOutcome::Invalid(why) => Tracked::Invalid(why),
                }
            }
            (ProtoState::Generic, _) if c.tuples[0].proto == IPPROTO_GRE => {
                from(generic::gre_packet(&mut c.status, &tun.timeouts))
            }
            (ProtoState::Generic, _) => from(generic::packet(&tun.timeouts)),
            // A packet whose L4 does not fit the connection's protocol state
            // (cannot happen: the tuple carries the protocol).
            (ProtoState::Tcp(_), _) => Tracked::Invalid("tcp: not a tcp segment"),
        }
    }

    /// ICMP errors: RELATED to the connection of the quoted datagram
    /// (nf_conntrack_inet_error), INVALID when none matches.
    #[allow(clippy::too_many_arguments)]
    fn related(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        inner: Option<InnerTuple>,
        res: &mut Verdict<'_>,
    ) {
        let Some(inner) = inner else {
            invalid(w, res, "icmp: error quotes no parseable datagram");
            return;
        };
        let Some(lookup) = quoted_tuple(&inner, pkt.zone).invert() else {
            invalid(w, res, "icmp: quoted tuple cannot be inverted");
            return;
        };
        let key = self.table.key(&lookup);
        let Some((r, dir)) = self.find_live(g, w, now_ms, key, &lookup) else {
            invalid(w, res, "icmp: error for no known connection");
            return;
        };
        let c = g.conn(r);
        // The error must go to the host that sent the quoted datagram.
        if c.tuples[dir.index()].dst != p.dst {
            invalid(w, res, "icmp: outer destination is not the quoted source");
            return;
        }
        w.stats.found += 1;
        *res.ctinfo = if dir == Dir::Reply {
            CtInfo::RelatedReply
        } else {
            CtInfo::Related
        };
        *res.dir = dir;
        *res.mark = c.mark;
        *res.rewrite = Rewrite::for_packet(c, dir, true);
        *res.conn = Some(ConnHandle {
            stripe: r.stripe,
            local: r.local,
            id: c.id,
        });
    }

    /// A non-first fragment follows its first fragment's connection. If it
    /// completes a datagram whose first fragment started a connection, that
    /// connection is returned for confirmation.
    fn follow_fragment(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        p: &Parsed,
        slot: usize,
        res: &mut Verdict<'_>,
    ) -> Option<(Conn, Ext)> {
        let e = w.frags[slot];
        let Some(tuple) = e.tuple else {
            w.stats.frag_orphan += 1;
            invalid(w, res, "fragment before its first fragment");
            return None;
        };
        w.stats.frag_followed += 1;
        if let Some((conn, mut ext)) = e.pending {
            let dir = if conn.tuples[0] == tuple {
                Dir::Orig
            } else {
                Dir::Reply
            };
            account(&mut ext, dir, p);
            *res.ctinfo = CtInfo::New;
            *res.dir = dir;
            *res.rewrite = Rewrite::for_packet(&conn, dir, false);
            if e.complete() {
                w.frags[slot].pending = None;
                return Some((conn, ext));
            }
            w.frags[slot].pending = Some((conn, ext));
            return None;
        }
        let key = self.table.key(&tuple);
        match self.find_live(g, w, now_ms, key, &tuple) {
            Some((r, dir)) => {
                if self.accounting {
                    g.account(r, dir, u64::from(p.l3_len));
                }
                let c = g.conn_mut(r);
                *res.mark = c.mark;
                *res.ctinfo = ctinfo_for(c, dir);
                *res.dir = dir;
                Rewrite::write_for_packet(res.rewrite, c, dir, false);
                *res.conn = Some(ConnHandle {
                    stripe: r.stripe,
                    local: r.local,
                    id: c.id,
                });
            }
            None => {
                w.stats.frag_orphan += 1;
                invalid(w, res, "fragment of a datagram whose connection is gone");
            }
        }
        None
    }

    /// Runs `f` on a live connection by handle (None if it is gone).
    pub fn with_conn<R>(&self, h: ConnHandle, f: impl FnOnce(&mut Conn) -> R) -> Option<R> {
        let mut g = self.table.guard();
        let r = g.get(h.stripe, h.local, h.id)?;
        let old_deadline = g.conn(r).deadline_ms;
        let out = f(g.conn_mut(r));
        g.deadline_changed(r, old_deadline);
        Some(out)
    }

    /// Expires what is due at `now_ms` in `stripe`'s timer wheel (every
    /// stripe's with None): connections past their deadline are removed, with
    /// their DESTROY events; at most `budget` records are visited per stripe
    /// (the rest waits for the next call). Returns how many were removed.
    pub fn expire(&self, w: &mut Worker, now_ms: u64, stripe: Option<u32>, budget: usize) -> usize {
        self.expire_some(w, now_ms, stripe, budget).0
    }

    /// [`Engine::expire`], also saying whether a stripe's budget ran out
    /// before all that is due was removed (call again soon).
    pub fn expire_some(
        &self,
        w: &mut Worker,
        now_ms: u64,
        stripe: Option<u32>,
        budget: usize,
    ) -> (usize, bool) {
        let stripes = match stripe {
            Some(s) => s..s + 1,
            None => 0..self.table.stripe_count(),
        };
        let (mut reclaimed, mut more) = (0, false);
        for s in stripes {
            let (n, m) = self.table.expire(s, now_ms, budget, |dead| {
                w.events.push(EventKind::Destroy, now_ms, &dead);
            });
            self.reap_expects(w, s, now_ms);
            reclaimed += n;
            more |= m;
        }
        w.stats.expired += reclaimed as u64;
        (reclaimed, more)
    }

    /// A snapshot of every live connection (for listings), stripe by stripe:
    /// each stripe is locked only while it is copied.
    pub fn snapshot(&self, now_ms: u64, mut f: impl FnMut(&Listed)) {
        for s in 0..self.table.stripe_count() {
            self.table.for_each(s, |_, c| {
                if !c.is_expired(now_ms) {
                    f(c)
                }
            });
        }
    }

    /// Removes the connection holding tuple `t` (either direction); true if one was.
    pub fn delete_tuple(&self, w: &mut Worker, now_ms: u64, t: &Tuple) -> bool {
        let mut g = self.table.guard();
        let Some((r, _)) = g.lookup(self.table.key(t), t) else {
            return false;
        };
        match g.remove(r) {
            Some(dead) => {
                w.events.push(EventKind::Destroy, now_ms, &dead);
                true
            }
            None => false,
        }
    }

    /// Removes the connections `pred` selects (conntrack -D / -F); returns them.
    pub fn delete_where(
        &self,
        w: &mut Worker,
        now_ms: u64,
        mut pred: impl FnMut(&Conn) -> bool,
    ) -> usize {
        let mut n = 0;
        for s in 0..self.table.stripe_count() {
            let mut victims = Vec::new();
            self.table.for_each(s, |local, c| {
                if pred(c) {
                    victims.push((local, c.id))
                }
            });
            for (local, id) in victims {
                if let Some(dead) = self.table.remove_id(s, local, id) {
                    w.events.push(EventKind::Destroy, now_ms, &dead);
                    n += 1;
                }
            }
        }
        n
    }
}

enum Tracked {
    Accept { timeout_ms: u64, kill: bool },
    Ignore,
    Invalid(&'static str),
    Repeat,
}

/// The ports of a packet's tuple (nf_ct_get_tuple): TCP / UDP / UDP-Lite /
/// SCTP ports (DCCP is generic: 0, as in kernels without its tracker); for ICMP the echo id and `(type << 8) | code`; for
/// GRE version 1 (PPTP) the call id as the destination key (without the
/// helper's key map the source key is 0: gre_keymap_lookup); 0 otherwise.
fn tuple_ports(p: &Parsed) -> (u16, u16) {
    match p.l4 {
        L4::Tcp(info) => (info.src_port, info.dst_port),
        L4::Udp { src_port, dst_port }
        | L4::Sctp {
            src_port, dst_port, ..
        } => (src_port, dst_port),
        L4::Icmp(ic) => (ic.id, ((ic.icmp_type as u16) << 8) | ic.code as u16),
        L4::Gre {
            version: 1,
            call_id,
            ..
        } => (0, call_id),
        L4::Gre { .. } | L4::Other | L4::None => (0, 0),
    }
}

fn invalid(w: &mut Worker, res: &mut Verdict<'_>, why: &'static str) {
    w.stats.invalid += 1;
    *res.ctinfo = CtInfo::Invalid;
    *res.conn = None;
    *res.rewrite = None;
    *res.invalid_reason = Some(why);
}

/// The L4 header and payload of a packet, within its L3 length.
fn l4_bytes<'a>(frame: &'a [u8], p: &Parsed) -> &'a [u8] {
    let end = (p.l3_offset as usize + p.l3_len as usize).min(frame.len());
    frame.get(p.l4_offset as usize..end).unwrap_or(&[])
}

fn options<'a>(frame: &'a [u8], info: &wire::TcpInfo) -> &'a [u8] {
    frame
        .get(info.options.0 as usize..info.options.1 as usize)
        .unwrap_or(&[])
}

/// nf_ct_acct_update: packets and L3 bytes per direction, of a connection
/// not yet in the table.
fn account(e: &mut Ext, dir: Dir, p: &Parsed) {
    let ctr = &mut e.counters[dir.index()];
    ctr.packets += 1;
    ctr.bytes += p.l3_len as u64;
}

/// The ctinfo of a packet on a known connection (resolve_normal_ct).
fn ctinfo_for(c: &Conn, dir: Dir) -> CtInfo {
    match dir {
        Dir::Reply => CtInfo::EstablishedReply,
        Dir::Orig if c.status.0 & (Status::SEEN_REPLY | Status::EXPECTED) == 0 => CtInfo::New,
        Dir::Orig if c.status.has(Status::SEEN_REPLY) => CtInfo::Established,
        // An expected connection before its reply (resolve_normal_ct).
        Dir::Orig => CtInfo::Related,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::proto::tcp::TcpConntrack;
    use crate::tuple::Addr;
    use crate::tuple::Family;
    use crate::wire::build::{frame, L4Spec};
    use crate::wire::tcp_flags::{ACK, FIN, SYN};

    const C: [u8; 4] = [192, 0, 2, 10];
    const S: [u8; 4] = [198, 51, 100, 20];

    /// An engine with accounting on (its tests check the counters too).
    fn engine(cap: u32) -> Engine {
        Engine::new(EngineConfig {
            capacity_conns: cap,
            seed: 1,
            tunables: Tunables {
                accounting: true,
                ..Tunables::default()
            },
        })
    }

    fn tcp(from_client: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let (s, d, sp, dp) = if from_client {
            (C, S, 40000, 80)
        } else {
            (S, C, 80, 40000)
        };
        frame(
            Family::V4,
            Addr::from_v4(s),
            Addr::from_v4(d),
            64,
            L4Spec::Tcp {
                src_port: sp,
                dst_port: dp,
                seq,
                ack,
                flags,
                window: 65535,
                payload,
            },
        )
    }

    /// A UDP datagram `src`:`sport` -> `dst`:`dport` carrying `payload`.
    fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        frame(
            Family::V4,
            Addr::from_v4(src),
            Addr::from_v4(dst),
            64,
            L4Spec::Udp {
                src_port: sport,
                dst_port: dport,
                payload,
            },
        )
    }

    /// A UDP query C:`sport` -> S:53.
    fn udp_query(sport: u16) -> Vec<u8> {
        udp_frame(C, S, sport, 53, b"q")
    }

    fn run(e: &Engine, w: &mut Worker, now: u64, f: &[u8], d: Decision) -> CtResult {
        let mut out = [CtResult::default()];
        e.process_burst(w, now, &[Pkt::new(f, 0, 0)], &mut out, |_, _| d);
        out[0]
    }

    fn only_conn(e: &Engine) -> Listed {
        let mut v = vec![];
        e.snapshot(0, |c| v.push(*c));
        assert_eq!(v.len(), 1, "exactly one connection");
        v[0]
    }

    #[test]
    fn handshake_data_teardown() {
        let e = engine(1000);
        let mut w = e.worker(64);
        let r = run(
            &e,
            &mut w,
            0,
            &tcp(true, SYN, 100, 0, b""),
            Decision::Accept(Egress::NONE),
        );
        assert_eq!(r.ctinfo, CtInfo::New);
        assert!(r.conn.is_some());
        let r = run(
            &e,
            &mut w,
            1,
            &tcp(false, SYN | ACK, 500, 101, b""),
            Decision::Accept(Egress::NONE),
        );
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        let r = run(
            &e,
            &mut w,
            2,
            &tcp(true, ACK, 101, 501, b""),
            Decision::Accept(Egress::NONE),
        );
        assert_eq!(r.ctinfo, CtInfo::Established);
        let c = only_conn(&e);
        assert!(c.status.has(Status::ASSURED) && c.status.has(Status::SEEN_REPLY));
        assert!(matches!(c.proto, ProtoState::Tcp(t) if t.state == TcpConntrack::Established));
        run(
            &e,
            &mut w,
            3,
            &tcp(true, FIN | ACK, 101, 501, b""),
            Decision::Accept(Egress::NONE),
        );
        run(
            &e,
            &mut w,
            4,
            &tcp(false, FIN | ACK, 501, 102, b""),
            Decision::Accept(Egress::NONE),
        );
        run(
            &e,
            &mut w,
            5,
            &tcp(true, ACK, 102, 502, b""),
            Decision::Accept(Egress::NONE),
        );
        let c = only_conn(&e);
        assert!(matches!(c.proto, ProtoState::Tcp(t) if t.state == TcpConntrack::TimeWait));
        assert_eq!(c.deadline_ms, 5 + 120_000);
        let ext = c.ext.expect("accounting is on");
        assert_eq!(ext.counters[0].packets, 4);
        assert_eq!(ext.counters[1].packets, 2);
        assert_eq!(ext.counters[0].bytes, 4 * 40);
        assert_eq!(ext.start_ms, 0);
        let mut kinds = vec![];
        let mut states = vec![];
        w.events.drain(|ev| {
            kinds.push(ev.kind);
            states.push(ev.conn.state_name().unwrap());
        });
        assert_eq!(kinds.first(), Some(&EventKind::New));
        assert!(kinds.iter().skip(1).all(|k| *k == EventKind::Update));
        // One UPDATE per state change (and status change), in order.
        assert_eq!(
            states,
            [
                "SYN_SENT",
                "SYN_RECV",
                "ESTABLISHED",
                "FIN_WAIT",
                "LAST_ACK",
                "TIME_WAIT"
            ],
            "{kinds:?}"
        );
    }

    #[test]
    fn a_mark_set_by_the_decision_is_the_connections() {
        let e = engine(100);
        let mut w = e.worker(64);
        let marked = |m| {
            Decision::Accept(Egress {
                mark: Some(m),
                ..Egress::NONE
            })
        };
        // Set on the new connection: confirmed with it, its NEW event too.
        let r = run(&e, &mut w, 0, &udp_query(5000), marked(7));
        assert_eq!((r.ctinfo, r.mark), (CtInfo::New, 7));
        assert_eq!(only_conn(&e).mark, 7);
        // The next packets carry it.
        let r = run(
            &e,
            &mut w,
            1,
            &udp_query(5000),
            Decision::Accept(Egress::NONE),
        );
        assert_eq!(r.mark, 7);
        // Set again to the same value: no event; to another: an UPDATE.
        run(&e, &mut w, 2, &udp_query(5000), marked(7));
        run(&e, &mut w, 3, &udp_query(5000), marked(9));
        assert_eq!(only_conn(&e).mark, 9);
        let mut events = vec![];
        w.events.drain(|ev| events.push((ev.kind, ev.conn.mark)));
        assert_eq!(events, [(EventKind::New, 7), (EventKind::Update, 9)]);
        // A dropped packet sets nothing.
        let r = run(&e, &mut w, 4, &udp_query(5001), Decision::Drop);
        assert_eq!(r.mark, 0);
        assert_eq!(e.table().len(), 1);
    }

    #[test]
    fn dropped_first_packet_leaves_nothing() {
        let e = engine(1000);
        let mut w = e.worker(0);
        let r = run(&e, &mut w, 0, &tcp(true, SYN, 100, 0, b""), Decision::Drop);
        assert_eq!(r.ctinfo, CtInfo::New);
        assert!(r.conn.is_none());
        assert!(e.table().is_empty());
        // The server's answer to a SYN nobody saw is INVALID (SYN/ACK cannot start a connection).
        let r = run(
            &e,
            &mut w,
            0,
            &tcp(false, SYN | ACK, 500, 101, b""),
            Decision::Accept(Egress::NONE),
        );
        assert_eq!(r.ctinfo, CtInfo::Invalid);
        assert!(e.table().is_empty());
    }

    #[test]
    fn icmp_error_is_related_to_its_connection() {
        let e = engine(1000);
        let mut w = e.worker(0);
        let udp = udp_query(5000);
        run(&e, &mut w, 0, &udp, Decision::Accept(Egress::NONE));
        let quoted = &udp[14..14 + 28];
        let err = port_unreachable(quoted);
        let r = run(&e, &mut w, 1, &err, Decision::Accept(Egress::NONE));
        assert_eq!(r.ctinfo, CtInfo::RelatedReply);
        // The same error to a third host is INVALID.
        let stray = port_unreachable_to([203, 0, 113, 9], quoted);
        assert_eq!(
            run(&e, &mut w, 1, &stray, Decision::Accept(Egress::NONE)).ctinfo,
            CtInfo::Invalid
        );
        assert_eq!(e.table().len(), 1);
    }

    #[test]
    fn expiry_and_gc() {
        let e = engine(1000);
        let mut w = e.worker(16);
        let udp = udp_query(5000);
        run(&e, &mut w, 0, &udp, Decision::Accept(Egress::NONE));
        assert_eq!(e.expire(&mut w, 29_999, None, 1 << 20), 0);
        assert_eq!(e.expire(&mut w, 30_000, None, 1 << 20), 1);
        assert!(e.table().is_empty());
        // An expired entry found by lookup is replaced by a new connection.
        run(&e, &mut w, 40_000, &udp, Decision::Accept(Egress::NONE));
        let r = run(&e, &mut w, 80_000, &udp, Decision::Accept(Egress::NONE));
        assert_eq!(r.ctinfo, CtInfo::New);
        assert_eq!(w.stats.expired, 2);
    }

    #[test]
    fn expiry_in_budgeted_slices_says_when_more_is_due() {
        let e = engine(1000);
        let mut w = e.worker(0);
        for sport in 0..10u16 {
            let f = udp_query(5000 + sport);
            run(&e, &mut w, 0, &f, Decision::Accept(Egress::NONE));
        }
        assert_eq!(e.expire_some(&mut w, 10_000, None, 4), (0, false));
        assert_eq!(e.expire_some(&mut w, 30_000, None, 4), (4, true));
        assert_eq!(e.expire_some(&mut w, 30_000, None, 4), (4, true));
        assert_eq!(e.expire_some(&mut w, 30_000, None, 4), (2, false));
        assert!(e.table().is_empty());
        assert_eq!(w.stats.expired, 10);
    }

    #[test]
    fn full_table_early_drops_unassured() {
        let e = engine(16);
        let mut w = e.worker(0);
        for i in 0..40u16 {
            let udp = udp_query(1000 + i);
            let r = run(&e, &mut w, 0, &udp, Decision::Accept(Egress::NONE));
            assert!(r.ct_drop.is_none(), "packet {i} dropped: {:?}", r.ct_drop);
        }
        assert_eq!(e.table().len(), 16);
        assert_eq!(w.stats.early_drop, 24);
    }

    #[test]
    fn expired_connections_free_their_nat_ports() {
        use crate::nat::{self, Action, Nat, Rule};
        // masquerade to :20000-20001: two ports; UDP flows unreplied live 30 s.
        let rule = Rule::new(
            "tiny".into(),
            nat::Match::default(),
            Action::Masquerade {
                ports: Some((20000, 20001)),
                random: false,
            },
        );
        let e = Engine::with_nat(
            EngineConfig {
                capacity_conns: 1000,
                seed: 1,
                tunables: Tunables::default(),
            },
            Some(Nat {
                rules: vec![rule],
                pools: vec![],
            }),
        );
        let mut w = e.worker(16);
        let out = Decision::Accept(Egress {
            port: 1,
            addr: Some(Addr::from_v4([198, 51, 100, 1])),
            mark: None,
            helper: Helper::None,
        });
        let udp = udp_query;
        for sport in [1000, 1001] {
            let r = run(&e, &mut w, 0, &udp(sport), out);
            assert!(r.ct_drop.is_none() && r.rewrite.is_some());
        }
        let r = run(&e, &mut w, 1000, &udp(1002), out);
        assert_eq!(r.ct_drop, Some("nat_out_of_ports"));
        // No GC ran: the two expired connections still sit in the table, and
        // the search reclaims one as the kernel's tuple_taken does.
        let r = run(&e, &mut w, 30_000, &udp(1003), out);
        assert!(r.ct_drop.is_none(), "{:?}", r.ct_drop);
        let port = r.rewrite.unwrap().src.unwrap().1;
        assert!((20000..=20001).contains(&port));
        assert_eq!(w.stats.expired, 1);
        assert_eq!(e.table().len(), 2);
        assert_eq!(w.nat_out_of_ports, 1);
    }

    #[test]
    fn a_pool_fills_to_its_last_port_and_reuses_what_leaves() {
        use crate::nat::ports::MapKey;
        let e = nat_engine(vec![masq_rule(Some((20000, 20499)))]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let udp = |i: u32, server: [u8; 4]| {
            frame(
                Family::V4,
                Addr::from_v4([192, 0, 2, (i % 250) as u8 + 1]),
                Addr::from_v4(server),
                64,
                L4Spec::Udp {
                    src_port: 1024 + (i / 250) as u16,
                    dst_port: 53,
                    payload: b"q",
                },
            )
        };
        // (The table holds 1000 connections: no early drop here.) Every one
        // of the 500 ports is handed out, the last ones as easily as the
        // first (no search that gives up while a port is free).
        let mut ports = std::collections::HashSet::new();
        for i in 0..500 {
            let r = run(&e, &mut w, 0, &udp(i, S), out(n));
            assert!(r.ct_drop.is_none(), "connection {i}: {:?}", r.ct_drop);
            assert!(ports.insert(r.rewrite.unwrap().src.unwrap().1));
        }
        assert_eq!(w.nat_out_of_ports, 0);
        let key = MapKey {
            family: Family::V4,
            addr: Addr::from_v4(n),
            proto: crate::tuple::IPPROTO_UDP,
            zone: 0,
        };
        let free = |e: &Engine| {
            let mut g = e.table().guard();
            let m = g.ports(0).get(&key).map(|m| m.first_free(20000, 20499));
            m.flatten()
        };
        assert_eq!(free(&e), None, "the bitmap has every port in use");
        // The pool is full towards S: the next connection to S has no port.
        let r = run(&e, &mut w, 0, &udp(500, S), out(n));
        assert_eq!(r.ct_drop, Some("nat_out_of_ports"));
        // Towards another server every port is still usable (only the whole
        // reply tuple must be unique): the kernel's search finds one.
        let r = run(&e, &mut w, 0, &udp(501, [198, 51, 100, 99]), out(n));
        assert!(r.ct_drop.is_none(), "{:?}", r.ct_drop);
        // A connection that leaves gives its port back, and the next new
        // connection gets exactly that port.
        let t = Tuple {
            src: Addr::from_v4([192, 0, 2, 18]),
            dst: Addr::from_v4(S),
            src_port: 1024,
            dst_port: 53,
            proto: crate::tuple::IPPROTO_UDP,
            family: Family::V4,
            zone: 0,
        };
        assert!(e.delete_tuple(&mut w, 0, &t));
        let port = free(&e).expect("the deleted connection's port is free");
        // 500 ports of the pool, and the one towards the other server, which
        // shares one of them: still 500 ports in use, less the deleted one.
        assert_eq!(e.table().nat_ports(0).in_use, 499);
        let r = run(&e, &mut w, 0, &udp(502, S), out(n));
        assert_eq!(r.rewrite.unwrap().src.unwrap().1, port);
        assert_eq!(free(&e), None);
        let used = e.table().nat_ports(0);
        assert_eq!((used.in_use, used.maps, used.overflow), (500, 1, 0));
    }

    #[test]
    fn the_nics_checksum_verdict_stands_in_for_the_software_check() {
        let good = tcp(true, SYN, 100, 0, b"x");
        let mut bad = good.clone();
        bad[14 + 20 + 20] ^= 0xff; // the payload byte changed, the checksum not
        let verdict = |f: &[u8], rx_csum: RxCsum, checksum: bool| {
            let e = Engine::new(EngineConfig {
                capacity_conns: 16,
                seed: 1,
                tunables: Tunables {
                    checksum,
                    ..Tunables::default()
                },
            });
            let mut w = e.worker(0);
            let mut out = [CtResult::default()];
            let pkt = Pkt {
                rx_csum,
                ..Pkt::new(f, 0, 0)
            };
            e.process_burst(&mut w, 0, &[pkt], &mut out, |_, _| {
                Decision::Accept(Egress::NONE)
            });
            (out[0].ctinfo, out[0].invalid_reason)
        };
        let invalid = (CtInfo::Invalid, Some("bad L4 checksum"));
        assert_eq!(verdict(&good, RxCsum::Unknown, true), (CtInfo::New, None));
        assert_eq!(verdict(&bad, RxCsum::Unknown, true), invalid);
        // CHECKSUM_UNNECESSARY: the NIC checked it, conntrack does not again.
        assert_eq!(verdict(&bad, RxCsum::Good, true), (CtInfo::New, None));
        assert_eq!(verdict(&good, RxCsum::Bad, true), invalid);
        // nf_conntrack_checksum = 0: nothing is checked, whatever the NIC says.
        assert_eq!(verdict(&bad, RxCsum::Unknown, false), (CtInfo::New, None));
        assert_eq!(verdict(&bad, RxCsum::Bad, false), (CtInfo::New, None));
    }

    #[test]
    fn a_malformed_l4_header_is_invalid_but_routed_and_filtered() {
        let e = engine(16);
        let mut w = e.worker(0);
        // A TCP segment cut to 12 bytes of header (IP total length says so).
        let mut f = tcp(true, SYN, 1, 0, b"");
        let total = 20 + 12;
        f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = crate::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.truncate(14 + total);
        assert_eq!(crate::wire::parse(&f).err(), Some(ParseError::TruncatedL4));
        let mut seen = None;
        let mut out = [CtResult::default()];
        e.process_burst(&mut w, 0, &[Pkt::new(&f, 0, 0)], &mut out, |_, r| {
            seen = Some((r.ctinfo, r.parsed.as_ref().map(|p| (p.dst, p.l4)).ok()));
            Decision::Accept(Egress::NONE)
        });
        // The policy is asked (as nft sees `ct state invalid`), with the IP
        // layer to route by; nothing is tracked.
        let (ctinfo, l3) = seen.expect("the policy was asked");
        assert_eq!(ctinfo, CtInfo::Invalid);
        assert_eq!(l3, Some((Addr::from_v4(S), L4::None)));
        assert!(out[0].invalid_reason.is_some());
        assert!(out[0].conn.is_none());
        assert!(e.table().is_empty());
        assert_eq!(w.stats.invalid, 1);
    }

    #[test]
    fn garbage_never_panics() {
        let e = engine(64);
        let mut w = e.worker(0);
        let mut x: u64 = 0x1234_5678;
        for len in 0..400usize {
            let mut f = tcp(true, SYN, 1, 0, &[0u8; 40]);
            f.truncate(len.min(f.len()));
            for b in f.iter_mut().skip(14) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(7) {
                    *b = x as u8;
                }
            }
            run(&e, &mut w, len as u64, &f, Decision::Accept(Egress::NONE));
        }
    }

    fn nat_engine(rules: Vec<crate::nat::Rule>) -> Engine {
        let cfg = EngineConfig {
            capacity_conns: 1000,
            seed: 5,
            tunables: Tunables::default(),
        };
        Engine::with_nat(
            cfg,
            Some(Nat {
                rules,
                pools: vec![],
            }),
        )
    }

    fn masq_rule(ports: Option<(u16, u16)>) -> crate::nat::Rule {
        crate::nat::Rule::new(
            "masq".into(),
            crate::nat::Match::default(),
            crate::nat::Action::Masquerade {
                ports,
                random: false,
            },
        )
    }

    fn out(addr: [u8; 4]) -> Decision {
        Decision::Accept(Egress {
            port: 1,
            addr: Some(Addr::from_v4(addr)),
            mark: None,
            helper: Helper::None,
        })
    }

    /// An ICMP port unreachable from the server S to the client C quoting
    /// `quoted` (an IP header and the first 8 bytes after it).
    fn port_unreachable(quoted: &[u8]) -> Vec<u8> {
        port_unreachable_to(C, quoted)
    }

    /// The same from S to `dst`.
    fn port_unreachable_to(dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        frame(
            Family::V4,
            Addr::from_v4(S),
            Addr::from_v4(dst),
            64,
            L4Spec::Icmp {
                icmp_type: 3,
                code: 3,
                id: 0,
                seq: 0,
                payload: quoted,
            },
        )
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        udp_frame(src, dst, sport, dport, &[7; 40])
    }

    /// `f` (IPv4) cut into fragments of 8-byte multiples at `cuts` (payload
    /// offsets), each with its header checksum.
    fn fragments(f: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let (hdr, payload) = (&f[..34], &f[34..]);
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(payload.len());
        bounds
            .windows(2)
            .map(|b| {
                let mut g = hdr.to_vec();
                g.extend_from_slice(&payload[b[0]..b[1]]);
                let more = u16::from(b[1] < payload.len()) << 13;
                g[16..18].copy_from_slice(&((20 + b[1] - b[0]) as u16).to_be_bytes());
                g[20..22].copy_from_slice(&(more | (b[0] / 8) as u16).to_be_bytes());
                g[24..26].fill(0);
                let c = checksum::checksum(&g[14..34]);
                g[24..26].copy_from_slice(&c.to_be_bytes());
                g
            })
            .collect()
    }

    /// The fragment slots are a fixed table: an unfinished datagram whose
    /// slot another datagram's fragment takes is counted, and its later
    /// fragments are orphans (INVALID), as the count says.
    #[test]
    fn a_fragment_slot_taken_over_is_counted() {
        let e = engine(1000);
        let mut w = e.worker(0);
        let with_id = |id: u16| {
            let mut q = udp(C, S, 4000 + id, 53);
            q[18..20].copy_from_slice(&id.to_be_bytes());
            fragments(&q, &[16])
        };
        let slot = |f: &[u8]| {
            let p = wire::parse(f).unwrap();
            frag_slot(&frag_key(&p, &p.frag.unwrap(), 0))
        };
        let a = with_id(1);
        let b = (2..u16::MAX)
            .map(with_id)
            .find(|b| slot(&b[0]) == slot(&a[0]))
            .expect("two datagrams sharing a slot");
        let accept = Decision::Accept(Egress::NONE);
        assert_eq!(run(&e, &mut w, 0, &a[0], accept).ctinfo, CtInfo::New);
        assert_eq!(w.stats.frag_evicted, 0);
        assert_eq!(run(&e, &mut w, 1, &b[0], accept).ctinfo, CtInfo::New);
        assert_eq!(w.stats.frag_evicted, 1, "a's entry taken over");
        assert_ne!(run(&e, &mut w, 2, &b[1], accept).ctinfo, CtInfo::Invalid);
        // a's rest is an orphan; it takes over b's finished entry uncounted.
        assert_eq!(run(&e, &mut w, 3, &a[1], accept).ctinfo, CtInfo::Invalid);
        assert_eq!(w.stats.frag_orphan, 1);
        assert_eq!(w.stats.frag_evicted, 1);
    }

    /// Software dispatch keeps what belongs together on one stripe: both
    /// directions, ICMP echo and its reply, an ICMP error and the connection
    /// it quotes, every fragment of a datagram; and it spreads connections.
    #[test]
    fn dispatch_keeps_a_connection_on_one_stripe() {
        let e: Engine = Engine::build(
            EngineConfig {
                capacity_conns: 1000,
                seed: 3,
                tunables: Tunables::default(),
            },
            None,
            4,
            &mut |_, _| {},
        );
        let mut used = [0; 4];
        for sport in 1000..1200u16 {
            let q = udp(C, S, sport, 53);
            let a = udp(S, C, 53, sport);
            let d = e.dispatch(&q, 0);
            assert_eq!(d, e.dispatch(&a, 0), "both directions");
            // The straight parse's stripe is the full parse's.
            let p = wire::parse(&q).unwrap();
            assert_eq!(e.table.key(&packet_tuple(&p, tuple_ports(&p), 0)).stripe, d);
            used[d as usize] += 1;
            let err = port_unreachable(&q[14..14 + 28]);
            assert_eq!(
                e.dispatch(&err, 0),
                d,
                "an ICMP error goes to its connection"
            );
            let echo = |t, src, dst| {
                frame(
                    Family::V4,
                    Addr::from_v4(src),
                    Addr::from_v4(dst),
                    64,
                    L4Spec::Icmp {
                        icmp_type: t,
                        code: 0,
                        id: sport,
                        seq: 1,
                        payload: b"ping",
                    },
                )
            };
            assert_eq!(e.dispatch(&echo(8, C, S), 0), e.dispatch(&echo(0, S, C), 0));
            let mut q = q;
            q[18..20].copy_from_slice(&sport.to_be_bytes());
            let frags: Vec<u32> = fragments(&q, &[16, 32])
                .iter()
                .map(|f| e.dispatch(f, 0))
                .collect();
            assert!(frags.iter().all(|&s| s == frags[0]), "fragments: {frags:?}");
        }
        assert!(used.iter().all(|&n| n > 20), "spread: {used:?}");
        assert_eq!(e.dispatch(&[0u8; 10], 0), 0, "a runt: stripe 0");
    }

    /// With 4 workers over 4 stripes, and with 3 over 4 (worker 0 owns two),
    /// masquerade picks ports whose replies are dispatched back to the
    /// connection's own worker, and the replies find their connections; a
    /// protocol without ports is translated anyway.
    #[test]
    fn steered_masquerade_replies_come_back_to_their_worker() {
        for nw in [4u32, 3] {
            let e: Engine = Engine::build(
                EngineConfig {
                    capacity_conns: 4000,
                    seed: 9,
                    tunables: Tunables::default(),
                },
                Some(Nat {
                    rules: vec![masq_rule(None)],
                    pools: vec![],
                }),
                nw,
                &mut |_, _| {},
            );
            assert_eq!(e.table().stripe_count(), 4);
            let mut workers: Vec<Worker> = (0..nw)
                .map(|w| {
                    let mut ct = e.worker(0);
                    ct.reply_steering = Some(e.reply_steering(w, nw));
                    ct
                })
                .collect();
            let owner = |f: &[u8]| stripe_owner(e.dispatch(f, 0), nw) as usize;
            let n = [203, 0, 113, 1];
            let mut used = vec![0; nw as usize];
            for sport in 2000..2300u16 {
                let q = udp(C, S, sport, 53);
                let d = owner(&q);
                used[d] += 1;
                let r = run(&e, &mut workers[d], 0, &q, out(n));
                let (a, port) = r.rewrite.unwrap().src.unwrap();
                assert_eq!(a, Addr::from_v4(n));
                let reply = udp(S, n, 53, port);
                assert_eq!(owner(&reply), d, "{nw} workers: port {port} steered");
                let r = run(&e, &mut workers[d], 1, &reply, out(n));
                assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
            }
            assert!(
                used.iter().all(|&u| u > 40),
                "{nw} workers: spread {used:?}"
            );
            // Protocol 253 (experimental: no ports): address-only, not refused.
            let mut g = udp(C, S, 1, 2);
            g[23] = 253;
            g[24..26].fill(0);
            let c = checksum::checksum(&g[14..34]);
            g[24..26].copy_from_slice(&c.to_be_bytes());
            let d = owner(&g);
            let r = run(&e, &mut workers[d], 2, &g, out(n));
            assert!(r.ct_drop.is_none(), "{:?}", r.ct_drop);
            assert_eq!(r.rewrite.unwrap().src.unwrap().0, Addr::from_v4(n));
            assert_eq!(workers.iter().map(|w| w.nat_out_of_ports).sum::<u64>(), 0);
        }
    }

    #[test]
    fn two_zones_with_the_same_addresses_share_an_outside_port() {
        // Like nft `ct original zone set` on two inside ports: the same
        // client address and port in zones 1 and 2, the replies arriving on
        // an outside port in zone 0.
        let e = nat_engine(vec![masq_rule(None)]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let query = udp(C, S, 5000, 53);
        let mut ports = vec![];
        for zone in [1u16, 2] {
            let mut res = [CtResult::default()];
            let pkt = Pkt {
                reply_zone: 0,
                ..Pkt::new(&query, zone, 0)
            };
            e.process_burst(&mut w, 0, &[pkt], &mut res, |_, _| out(n));
            assert_eq!((res[0].ctinfo, res[0].zone), (CtInfo::New, zone));
            ports.push(res[0].rewrite.unwrap().src.unwrap().1);
        }
        assert_eq!(e.table().len(), 2, "one connection per zone");
        assert_ne!(ports[0], ports[1], "the replies (zone 0) must differ");
        for (zone, port) in [1u16, 2].into_iter().zip(&ports) {
            // The reply, in zone 0, finds its connection and says its zone.
            let reply = udp(S, n, 53, *port);
            let r = run(&e, &mut w, 1, &reply, out(C));
            assert_eq!((r.ctinfo, r.zone), (CtInfo::EstablishedReply, zone));
            assert_eq!(r.rewrite.unwrap().dst, Some((Addr::from_v4(C), 5000)));
            // And the client's next datagram, in its zone, the same one.
            let mut res = [CtResult::default()];
            let pkt = Pkt {
                reply_zone: 0,
                ..Pkt::new(&query, zone, 0)
            };
            e.process_burst(&mut w, 2, &[pkt], &mut res, |_, _| out(n));
            assert_eq!((res[0].ctinfo, res[0].zone), (CtInfo::Established, zone));
        }
        let mut zones = vec![];
        e.snapshot(3, |c| zones.push((c.tuples[0].zone, c.tuples[1].zone)));
        zones.sort();
        assert_eq!(zones, [(1, 0), (2, 0)]);

        // A connection from the outside (zone 0) to an inside host: its
        // answer, arriving in zone 1, is found by the second lookup, in
        // the reply direction's zone.
        let e = engine(100);
        let mut w = e.worker(0);
        run(
            &e,
            &mut w,
            0,
            &udp(S, C, 6000, 7000),
            Decision::Accept(Egress::NONE),
        );
        let answer = udp(C, S, 7000, 6000);
        let mut res = [CtResult::default()];
        let pkt = Pkt {
            reply_zone: 0,
            ..Pkt::new(&answer, 1, 0)
        };
        e.process_burst(&mut w, 1, &[pkt], &mut res, |_, _| {
            Decision::Accept(Egress::NONE)
        });
        assert_eq!((res[0].ctinfo, res[0].zone), (CtInfo::EstablishedReply, 0));
        assert_eq!(e.table().len(), 1);
    }

    #[test]
    fn masquerade_keeps_the_port_when_free_and_picks_another_on_a_clash() {
        let e = nat_engine(vec![masq_rule(None)]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        // Two clients using the same source port to the same server.
        let a = frame(
            Family::V4,
            Addr::from_v4([192, 0, 2, 10]),
            Addr::from_v4(S),
            64,
            L4Spec::Udp {
                src_port: 5000,
                dst_port: 53,
                payload: b"q",
            },
        );
        let b = frame(
            Family::V4,
            Addr::from_v4([192, 0, 2, 11]),
            Addr::from_v4(S),
            64,
            L4Spec::Udp {
                src_port: 5000,
                dst_port: 53,
                payload: b"q",
            },
        );
        let ra = run(&e, &mut w, 0, &a, out(n));
        let rb = run(&e, &mut w, 0, &b, out(n));
        let pa = ra.rewrite.unwrap().src.unwrap();
        let pb = rb.rewrite.unwrap().src.unwrap();
        assert_eq!(pa, (Addr::from_v4(n), 5000), "the first keeps its port");
        assert_eq!(pb.0, Addr::from_v4(n));
        assert_ne!(pb.1, 5000, "the second gets another");
        assert!(pb.1 >= 1024);
        // The reply to the second comes back to it.
        let reply = frame(
            Family::V4,
            Addr::from_v4(S),
            Addr::from_v4(n),
            64,
            L4Spec::Udp {
                src_port: 53,
                dst_port: pb.1,
                payload: b"a",
            },
        );
        let r = run(&e, &mut w, 1, &reply, out(C));
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        assert_eq!(
            r.rewrite.unwrap().dst,
            Some((Addr::from_v4([192, 0, 2, 11]), 5000))
        );
    }

    #[test]
    fn dnat_pool_sticks_to_its_backend() {
        use crate::nat::{Action, Backend, Match, Pool, Rule};
        let backends = (0..3)
            .map(|i| {
                Backend::new(
                    Family::V4,
                    Addr::from_v4([198, 51, 100, 10 + i]),
                    Some(8080),
                    1,
                )
            })
            .collect();
        let rule = Rule::new(
            "lb".into(),
            Match {
                dports: Some((80, 80)),
                ..Match::default()
            },
            Action::DnatPool { pool: 0 },
        );
        let cfg = EngineConfig {
            capacity_conns: 10_000,
            seed: 5,
            tunables: Tunables::default(),
        };
        let e = Engine::with_nat(
            cfg,
            Some(Nat {
                rules: vec![rule],
                pools: vec![Pool::new("web".into(), backends)],
            }),
        );
        let mut w = e.worker(0);
        let vip = Addr::from_v4([203, 0, 113, 80]);
        let mut per_backend = [0u32; 3];
        for i in 0..3000u16 {
            let syn = frame(
                Family::V4,
                Addr::from_v4(C),
                vip,
                64,
                L4Spec::Tcp {
                    src_port: 10_000 + i,
                    dst_port: 80,
                    seq: 1,
                    ack: 0,
                    flags: SYN,
                    window: 1000,
                    payload: b"",
                },
            );
            let r = run(&e, &mut w, 0, &syn, out([192, 0, 2, 1]));
            let (b, port) = r.rewrite.unwrap().dst.unwrap();
            assert_eq!(port, 8080);
            per_backend[(b.0[3] - 10) as usize] += 1;
            // A retransmitted SYN of the same connection goes to the same backend.
            let again = run(&e, &mut w, 1, &syn, out([192, 0, 2, 1]));
            assert_eq!(again.rewrite.unwrap().dst.unwrap().0, b);
        }
        for n in per_backend {
            assert!((800..=1200).contains(&n), "{per_backend:?}");
        }
    }

    #[test]
    fn nat_ports_steer_replies_to_the_workers_queue() {
        let key: Vec<u8> = (0..52)
            .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
            .collect();
        let rss = crate::rss::Rss::new(&key, 128, 4);
        let e = nat_engine(vec![masq_rule(None)]);
        for queue in 0..4u16 {
            let mut w = e.worker(0);
            let r2 = rss.clone();
            w.reply_steering = Some(Box::new(move |t: &Tuple| r2.queue(t) == queue));
            for i in 0..50u16 {
                let f = udp_query(3000 + queue * 100 + i);
                let r = run(&e, &mut w, 0, &f, out([203, 0, 113, 1]));
                let (addr, port) = r.rewrite.unwrap().src.unwrap();
                let reply = Tuple {
                    src: Addr::from_v4(S),
                    dst: addr,
                    src_port: 53,
                    dst_port: port,
                    proto: 17,
                    family: Family::V4,
                    zone: 0,
                };
                assert_eq!(
                    rss.queue(&reply),
                    queue,
                    "the reply reaches the worker that saw the original"
                );
            }
        }
    }

    #[test]
    fn endpoint_independent_mapping_and_filtering() {
        let mut rule = masq_rule(None);
        rule.m.out_port = Some(1);
        rule.endpoint_independent = true;
        let inward = Decision::Accept(Egress {
            port: 0,
            addr: Some(Addr::from_v4([192, 0, 2, 1])),
            mark: None,
            helper: Helper::None,
        });
        let e = nat_engine(vec![rule]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let udp = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16| {
            frame(
                Family::V4,
                Addr::from_v4(src),
                Addr::from_v4(dst),
                64,
                L4Spec::Udp {
                    src_port: sport,
                    dst_port: dport,
                    payload: b"x",
                },
            )
        };
        let inside_e = [192, 0, 2, 10];
        let inside_f = [192, 0, 2, 11];
        let r = run(
            &e,
            &mut w,
            0,
            &udp(inside_e, 5000, [198, 51, 100, 20], 53),
            out(n),
        );
        assert_eq!(
            r.rewrite.unwrap().src,
            Some((Addr::from_v4(n), 5000)),
            "port preserved"
        );
        // Another inside endpoint may not take the mapped port, even to another server.
        let r = run(
            &e,
            &mut w,
            0,
            &udp(inside_f, 5000, [198, 51, 100, 21], 53),
            out(n),
        );
        let f_port = r.rewrite.unwrap().src.unwrap().1;
        assert_ne!(f_port, 5000);
        // The same inside endpoint keeps its outside port for every destination.
        let r = run(
            &e,
            &mut w,
            1,
            &udp(inside_e, 5000, [198, 51, 100, 21], 53),
            out(n),
        );
        assert_eq!(r.rewrite.unwrap().src, Some((Addr::from_v4(n), 5000)));
        // Any outside host may send to the mapping (endpoint-independent filtering).
        let r = run(
            &e,
            &mut w,
            2,
            &udp([198, 51, 100, 99], 7777, n, 5000),
            inward,
        );
        assert_eq!(r.ctinfo, CtInfo::New);
        assert!(r.dnat());
        assert_eq!(
            r.rewrite.unwrap().dst,
            Some((Addr::from_v4(inside_e), 5000))
        );
        // A port nobody maps stays untranslated.
        let r = run(
            &e,
            &mut w,
            2,
            &udp([198, 51, 100, 99], 7777, n, 6000),
            inward,
        );
        assert!(r.rewrite.is_none());
        // The mapping lives while a connection through it does, however long:
        // inside_e keeps talking to one server for longer than EIM_TIMEOUT_MS.
        let timeout = crate::nat::EIM_TIMEOUT_MS;
        let mut now = 2;
        while now < timeout + 100_000 {
            now += 20_000;
            e.expire(&mut w, now, None, usize::MAX);
            let r = run(
                &e,
                &mut w,
                now,
                &udp(inside_e, 5000, [198, 51, 100, 20], 53),
                out(n),
            );
            assert_eq!(r.rewrite.unwrap().src, Some((Addr::from_v4(n), 5000)));
        }
        let r = run(
            &e,
            &mut w,
            now,
            &udp([198, 51, 100, 97], 7777, n, 5000),
            inward,
        );
        assert_eq!(
            r.rewrite.unwrap().dst,
            Some((Addr::from_v4(inside_e), 5000)),
            "still mapped after {now} ms: a connection holds it"
        );
        let held = |e: &Engine| e.table().eim_usage(0).mappings;
        assert_eq!(
            held(&e),
            1,
            "inside_e's; inside_f's lapsed EIM_TIMEOUT_MS after its one connection"
        );
        // Once the last connection through it is gone (expired at about
        // now + 30 s, UDP's stream timeout), it lasts EIM_TIMEOUT_MS more.
        let gone = now + 190_000;
        e.expire(&mut w, gone, None, usize::MAX);
        assert_eq!(e.table().len(), 0);
        let r = run(
            &e,
            &mut w,
            gone,
            &udp([198, 51, 100, 96], 7777, n, 5000),
            inward,
        );
        assert!(r.dnat(), "within EIM_TIMEOUT_MS of the last connection");
        let lapsed = gone + 30_000 + timeout + 1;
        for _ in 0..64 {
            e.expire(&mut w, lapsed, None, usize::MAX);
        }
        assert_eq!(held(&e), 0, "lapsed mappings are swept");
        let r = run(
            &e,
            &mut w,
            lapsed,
            &udp([198, 51, 100, 98], 7777, n, 5000),
            inward,
        );
        assert!(r.rewrite.is_none(), "lapsed");
        assert_eq!(e.table().eim_usage(0).full, 0);
    }

    #[test]
    fn endpoint_independent_mappings_are_bounded() {
        let mut rule = masq_rule(None);
        rule.m.out_port = Some(1);
        rule.endpoint_independent = true;
        let e = nat_engine(vec![rule]);
        let limit = e.table().eim_limit() as u64;
        assert_eq!(limit, 256, "a quarter of 1000 connections, at least 256");
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let mut translated = 0;
        for i in 0..400u16 {
            let f = frame(
                Family::V4,
                Addr::from_v4([192, 0, 2, 10]),
                Addr::from_v4([198, 51, 100, 20]),
                64,
                L4Spec::Udp {
                    src_port: 10_000 + i,
                    dst_port: 53,
                    payload: b"x",
                },
            );
            let r = run(&e, &mut w, 0, &f, out(n));
            translated += u64::from(r.rewrite.is_some_and(|rw| rw.src.is_some()));
        }
        assert_eq!(translated, 400, "every connection is translated");
        let u = e.table().eim_usage(0);
        assert_eq!(u.mappings, limit);
        assert_eq!(u.full, 400 - limit, "each refusal counted");
        // Connections without a mapping hold none: removing all leaves the
        // mappings idle (not negative), and they lapse.
        e.expire(&mut w, 31_000, None, usize::MAX);
        assert_eq!(e.table().len(), 0);
        let later = 31_000 + crate::nat::EIM_TIMEOUT_MS;
        for _ in 0..64 {
            e.expire(&mut w, later, None, usize::MAX);
        }
        assert_eq!(e.table().eim_usage(0).mappings, 0);
    }
}
