//! THE PIPELINE STAGE: connection tracking, stateful policy and NAT, between
//! parsing and L3 forwarding (DESIGN.md section 2).
//!
//! Contract, per worker and per burst:
//! - [`Pipeline::process_burst`] gets the IPv4 / IPv6 packets of one RX burst
//!   (at most [`crate::worker::BURST`]) that passed the forwarder's header
//!   checks (`net::classify`), from one input port. ARP and neighbour discovery
//!   never reach it (the forwarder answers those itself).
//! - Per packet, in order, as the kernel's hooks would: conntrack (lookup or a
//!   new unconfirmed connection), destination NAT for a new connection, the
//!   route of the (translated) destination, the `[[policy]]` rules on the
//!   ct state, source NAT, confirmation; then the translation is written into
//!   the packet (incremental checksums) and the forwarder routes it again.
//! - `now_ms` is the worker's coarse clock (milliseconds since start, from the
//!   TSC), injected into `ctcore`.
//! - Nothing here allocates, blocks or makes system calls on the packet path:
//!   the table is lock-striped and preallocated; the counters a worker
//!   publishes for the control thread sit behind a per-worker lock taken with
//!   `try_lock` (a busy reader only delays the copy to the next burst).

use std::sync::Mutex;

use crossbeam_utils::CachePadded;
use ctcore::conn::Conn;
use ctcore::engine::{CtResult, Decision, Egress, Engine, Pkt, Worker};
use ctcore::forward::{classify, RouteClass};
use ctcore::listing::format_conn;
use ctcore::nat::rewrite::{apply, ChecksumMode};
use ctcore::policy::{Action, Policy};
use ctcore::stats::CtStats;
use ctcore::tuple::{Addr, Family};

use crate::config::Config;
use crate::dpdk::Mbuf;
use crate::net::Meta;
use crate::route::Routes;
use crate::stats::DropReason;
use crate::worker::BURST;

/// What the stage decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Continue to L3 forwarding with the headers as classified.
    Forward,
    /// Continue to L3 forwarding; the stage changed the packet (NAT), so the
    /// forwarder classifies it again before routing.
    ForwardRewritten,
    /// Free the packet, counted under this reason.
    Drop(DropReason),
}

/// What one worker has published for the control thread.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub ct: CtStats,
    pub nat_out_of_ports: u64,
    /// Per policy rule (then the default), packets decided.
    pub policy_hits: Vec<u64>,
    pub now_ms: u64,
}

/// State shared by every worker's stage, built once before the workers start.
pub struct Shared {
    /// `[conntrack] enabled`: false makes the stage pass every packet (routing only).
    pub enabled: bool,
    pub engine: Engine,
    pub policy: Policy,
    routes: Routes,
    /// Per port: its IPv4 and IPv6 address (masquerade's source).
    port_addrs: Vec<(Option<Addr>, Option<Addr>)>,
    published: Vec<CachePadded<Mutex<Published>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.engine.table().len())
            .finish()
    }
}

impl Shared {
    /// Builds the engine, policy and NAT from a validated config.
    pub fn new(cfg: &Config) -> Shared {
        let seed = random_seed();
        let ecfg = crate::ctconfig::engine_config(cfg, seed).expect("validated config");
        let nat = crate::ctconfig::nat(cfg).expect("validated config");
        let policy = crate::ctconfig::policy(cfg).expect("validated config");
        let rules = policy.rules.len() + 1;
        Shared {
            enabled: cfg.conntrack.enabled,
            engine: Engine::with_nat(ecfg, nat),
            policy,
            routes: Routes::from_config(cfg),
            port_addrs: (0..cfg.ports.len())
                .map(|i| {
                    (
                        crate::ctconfig::port_addr(cfg, i, false),
                        crate::ctconfig::port_addr(cfg, i, true),
                    )
                })
                .collect(),
            published: (0..cfg.workers.len())
                .map(|_| {
                    CachePadded::new(Mutex::new(Published {
                        policy_hits: vec![0; rules],
                        ..Published::default()
                    }))
                })
                .collect(),
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
            t.nat_out_of_ports += p.nat_out_of_ports;
            for (a, b) in t.policy_hits.iter_mut().zip(&p.policy_hits) {
                *a += b;
            }
            t.now_ms = t.now_ms.max(p.now_ms);
        }
        t
    }

    /// The table as `conntrack -L -o extended` lines, at the workers' clock.
    pub fn listing(&self) -> Vec<String> {
        let now = self.totals().now_ms;
        let mut conns: Vec<Conn> = Vec::new();
        self.engine.snapshot(now, |c| conns.push(*c));
        let mut lines: Vec<String> = conns.iter().map(|c| format_conn(c, now)).collect();
        lines.sort();
        lines
    }

    /// Routing + policy for one packet (the verdict before confirmation).
    /// `policy_drop` is set when the policy (not routing) refused it.
    fn decide(
        &self,
        in_port: u8,
        r: &CtResult,
        hits: &mut [u64],
        policy_drop: &mut bool,
    ) -> Decision {
        let Ok(p) = &r.parsed else {
            return Decision::Drop;
        };
        if r.ct_drop.is_some() {
            return Decision::Drop;
        }
        let dst = r.route_dst().unwrap_or(p.dst);
        let mut routed = *p;
        routed.dst = dst;
        match classify(&routed) {
            RouteClass::Drop(_) => return Decision::Drop,
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
                    });
                }
                self.routes.lookup_v4(d)
            }
            Family::V6 => {
                let d = u128::from_be_bytes(dst.0);
                if self.routes.local_v6(d).is_some() {
                    return Decision::Accept(Egress {
                        port: in_port as u16,
                        addr: None,
                    });
                }
                self.routes.lookup_v6(d)
            }
        };
        let Some(hop) = out else {
            return Decision::Drop;
        };
        let (action, rule) = self
            .policy
            .evaluate(in_port as u16, hop.port as u16, r.ctinfo);
        hits[rule] += 1;
        match action {
            Action::Drop => {
                *policy_drop = true;
                Decision::Drop
            }
            Action::Accept => {
                let addrs = self
                    .port_addrs
                    .get(hop.port as usize)
                    .copied()
                    .unwrap_or_default();
                let addr = if p.family == Family::V4 {
                    addrs.0
                } else {
                    addrs.1
                };
                Decision::Accept(Egress {
                    port: hop.port as u16,
                    addr,
                })
            }
        }
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
    gc_cursor: u32,
    next_gc_ms: u64,
}

/// How often a worker runs a GC slice, and how many table entries one visits.
const GC_INTERVAL_MS: u64 = 10;
const GC_BUDGET: usize = 1024;

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("worker", &self.worker)
            .finish()
    }
}

impl<'a> Pipeline<'a> {
    pub fn new(shared: &'a Shared, worker: usize) -> Pipeline<'a> {
        Pipeline {
            shared,
            worker,
            ct: shared.engine.worker(0),
            hits: vec![0; shared.policy.rules.len() + 1],
            gc_cursor: worker as u32,
            next_gc_ms: 0,
        }
    }

    /// Decides `verdicts[i]` for `pkts[i]` (see the module contract).
    /// `verdicts` arrives filled with `Verdict::Forward`.
    #[inline]
    pub fn process_burst(
        &mut self,
        now_ms: u64,
        in_port: u8,
        pkts: &mut [Mbuf],
        meta: &[Meta],
        verdicts: &mut [Verdict],
    ) {
        debug_assert_eq!(pkts.len(), meta.len());
        debug_assert_eq!(pkts.len(), verdicts.len());
        if !self.shared.enabled {
            return;
        }
        let n = pkts.len().min(BURST);
        let mut results = [CtResult::default(); BURST];
        let mut policy_drop = [false; BURST];
        {
            let frames: [Pkt<'_>; BURST] = std::array::from_fn(|i| Pkt {
                frame: if i < n { pkts[i].data() } else { &[] },
                zone: 0,
                in_port: in_port as u16,
            });
            let shared = self.shared;
            let hits = &mut self.hits;
            let drops = &mut policy_drop;
            shared.engine.process_burst(
                &mut self.ct,
                now_ms,
                &frames[..n],
                &mut results[..n],
                |i, r| shared.decide(in_port, r, hits, &mut drops[i]),
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
            if let Some(rw) = &r.rewrite {
                verdicts[i] = match apply(pkts[i].data_mut(), p, rw, ChecksumMode::Incremental) {
                    Ok(()) => Verdict::ForwardRewritten,
                    Err(_) => Verdict::Drop(DropReason::BadHeader),
                };
            }
        }
        if now_ms >= self.next_gc_ms {
            // The kernel's gc worker: reclaim expired connections a slice at a
            // time (lookups and NAT port searches reclaim them too).
            self.next_gc_ms = now_ms + GC_INTERVAL_MS;
            let shared = self.shared;
            shared
                .engine
                .gc_step(&mut self.ct, now_ms, &mut self.gc_cursor, GC_BUDGET);
        }
        self.publish(now_ms);
    }

    fn publish(&mut self, now_ms: u64) {
        if let Ok(mut p) = self.shared.published[self.worker].try_lock() {
            p.ct = self.ct.stats;
            p.nat_out_of_ports = self.ct.nat_out_of_ports;
            p.policy_hits.copy_from_slice(&self.hits);
            p.now_ms = now_ms;
        }
    }
}
