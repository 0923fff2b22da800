//! The conntrack engine: nf_conntrack_in for bursts of frames.
//!
//! Per packet, as the kernel: parse (L3 errors are dropped before conntrack, as
//! ip_rcv does), validate the L4 header and checksum (INVALID), find the
//! connection (expired entries count as absent and are reclaimed), or build an
//! unconfirmed one; run the protocol tracker; derive ctinfo; then the caller's
//! verdict (routing + policy) decides whether a new connection is confirmed into
//! the table — a dropped first packet leaves nothing behind.
//!
//! A burst's way through the modules here: `burst` (stages 1 to 3), `track`
//! for a plain packet or `general` (with `frag`) for the others, `new_conn`
//! for a connection not found, `nat`'s hooks around the caller's verdict,
//! then `new_conn`'s confirm; `packet` holds what goes in and comes out.
//! Off the packet path: `dispatch` (steering between workers), `control`
//! (expiry, listing, deletion) and `helpers` (conntrack helpers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::event::EventBuf;
use crate::helper::{HelperStats, MasterRef};
use crate::nat::alloc::Rng;
use crate::nat::Nat;
use crate::proto::tcp::TcpConfig;
use crate::stats::CtStats;
use crate::table::{Claimed, NoPrefetch, Prefetch, Table};
use crate::timeout::Timeouts;

mod burst;
mod control;
mod dispatch;
mod frag;
mod general;
mod helpers;
mod nat;
mod new_conn;
mod packet;
mod track;

pub use dispatch::{stripe_owner, ReplySteering};
pub use helpers::expect_max;
pub use packet::{ConnHandle, CtResult, Decision, Egress, Pkt, RxCsum};

use frag::{FragEntry, FRAG_SLOTS};

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

/// Per-worker state: counters, events, and the fragment memory. Owned by one
/// lcore; nothing in it is shared.
pub struct Worker {
    pub stats: CtStats,
    /// Cycles spent in each stage of the burst pipeline, summed over the
    /// bursts since the caller last took them; None (the default) times
    /// nothing.
    pub stage_cycles: Option<StageCycles>,
    pub events: EventBuf,
    /// New connections dropped because NAT found no free port / id.
    pub nat_out_of_ports: u64,
    /// This worker's slot of the shared counters (NAT rules').
    pub(crate) slot: crate::stats::CounterSlot,
    /// RSS steering for NAT: a reply tuple is acceptable only if this says it
    /// reaches this worker (the appliance installs its Toeplitz key and RETA).
    pub reply_steering: Option<ReplySteering>,
    rng: Rng,
    /// The key of the reply tuple source NAT just claimed for the
    /// connection being confirmed (see [`Clash::Neither`]).
    claimed: Option<Claimed>,
    /// New connections' source NAT searches begun ahead of stage 3 (in a
    /// box: the packet path reads the fields around it).
    ahead: Box<SnatAhead>,
    tun: Tunables,
    tun_gen: u64,
    frags: Box<[FragEntry]>,
    /// Conntrack helper counters.
    pub helpers: HelperStats,
    /// The master of the expected connection being made, until it is confirmed.
    helper_master: Option<MasterRef>,
}

/// A worker's source NAT searches begun ahead of stage 3.
#[derive(Default)]
struct SnatAhead {
    /// How this worker's last source NAT went: the guess the searches are
    /// begun on.
    memo: Option<SnatMemo>,
    /// The guess the stage's searches were begun on (`memo` when it began).
    guess: Option<SnatMemo>,
    /// Per packet of the stage (`burst::STAGE`): the search begun, then
    /// the candidates it loaded.
    begun: [Option<crate::nat::alloc::Anticipated>; burst::STAGE],
    loaded: [crate::nat::alloc::Loaded; burst::STAGE],
    /// Bit j: the guess's rule is the first source NAT rule packet j's
    /// tuple matches (from the guess's ingress to its egress).
    matched: u32,
    /// The packet in stage 3's hands (its index in the stage), while its
    /// loads were begun ahead.
    current: Option<usize>,
}

impl SnatAhead {
    /// The candidates loaded for the packet in stage 3's hands, and the
    /// guess if its rule is the first that packet's tuple matches (the
    /// rule its POSTROUTING search finds, when the egress is the guess's
    /// and no destination NAT changed the tuple). Taken: once per packet.
    /// (The guess by reference: a copy of it, whose fields lie at odd
    /// offsets, was read back with store-forwarding stalls.)
    fn take_current(&mut self) -> Option<(&mut crate::nat::alloc::Loaded, Option<&SnatMemo>)> {
        let j = self.current.take()?;
        let guess = self.guess.as_ref().filter(|_| self.matched & (1 << j) != 0);
        Some((self.loaded.get_mut(j)?, guess))
    }
}

/// The source NAT rule (its index), ingress and egress of the last new
/// connection a worker translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SnatMemo {
    rule: usize,
    in_port: u16,
    out_port: u16,
    out_addr: Option<crate::tuple::Addr>,
}

/// Cycles (the platform's [`Prefetch::cycles`]) of the burst pipeline's
/// stages: parsing and hashing with the buckets' prefetch (stage 1), the
/// records' prefetch (stage 2), and tracking with NAT, the caller's
/// verdict and the confirm (stage 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCycles {
    pub parse: u64,
    pub prefetch: u64,
    pub track: u64,
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
    /// Whether settled connections' packets take the express way
    /// ([`Engine::set_express`]).
    express: bool,
    _prefetch: std::marker::PhantomData<fn() -> P>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine::with_nat(cfg, None)
    }

    /// An engine that also translates, by `nat`'s rules (one table stripe,
    /// no prefetch hints: tools and tests).
    pub fn with_nat(cfg: EngineConfig, nat: Option<Nat>) -> Engine {
        Engine::build(cfg, nat, 1, &mut ())
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
        advise: &mut dyn crate::table::Memory,
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
            express: true,
            _prefetch: std::marker::PhantomData,
        }
    }

    /// Whether packets of settled IPv4 UDP and TCP connections take the
    /// express way (on by default): tracked from their record's hot line
    /// (and TCP's state line), with the result the whole way gives (the
    /// differential tests run both).
    pub fn set_express(&mut self, on: bool) {
        self.express = on;
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
            slot: crate::stats::CounterSlot::of_worker(n as usize),
            reply_steering: None,
            claimed: None,
            ahead: Box::default(),
            stage_cycles: None,
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

    pub fn nat(&self) -> Option<&Nat> {
        self.nat.as_ref()
    }
}

#[cfg(test)]
mod tests;
