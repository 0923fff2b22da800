//! THE PIPELINE SLOT: the per-burst stage between parsing and L3 forwarding,
//! where connection tracking, policy and NAT plug in (DESIGN.md section 2).
//!
//! Contract, per worker and per burst:
//! - [`Pipeline::process_burst`] gets the IPv4 / IPv6 packets of one RX burst
//!   (at most [`crate::worker::BURST`]) that passed the forwarder's header
//!   checks (`net::classify`), from one input port. ARP and neighbour discovery
//!   never reach it (the forwarder answers those itself).
//! - It may rewrite packet bytes in place (NAT: addresses, ports, checksums;
//!   the IPv4 header checksum must be right when it returns), and sets one
//!   [`Verdict`] per packet. The forwarder then re-classifies rewritten
//!   packets (`Verdict::ForwardRewritten`), routes on the (possibly translated)
//!   destination, decrements TTL, resolves the next hop and transmits.
//! - `now_ms` is the worker's coarse clock (milliseconds since start, from the
//!   TSC): inject it into `ctcore`, never read a clock inside.
//! - It must not allocate, block, or make system calls. State shared across
//!   workers lives in [`Shared`] (built once before the workers start); per-worker
//!   state lives in [`Pipeline`].
//!
//! Today the stage passes every packet unchanged: the appliance is a plain router.

use crate::config::Config;
use crate::dpdk::Mbuf;
use crate::net::Meta;
use crate::stats::DropReason;

/// What the stage decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Continue to L3 forwarding with the headers as classified.
    Forward,
    /// Continue to L3 forwarding; the stage changed L3 addresses, so the
    /// forwarder classifies the packet again before routing.
    ForwardRewritten,
    /// Free the packet, counted under this reason.
    Drop(DropReason),
}

/// State shared by every worker's stage (the connection table, NAT rules, ...),
/// built once from the config before the workers start.
#[derive(Debug, Default)]
pub struct Shared {}

impl Shared {
    pub fn new(_cfg: &Config) -> Shared {
        Shared {}
    }
}

/// One worker's stage.
#[derive(Debug)]
pub struct Pipeline<'a> {
    pub shared: &'a Shared,
    /// The worker's index (0..workers), e.g. for per-lcore NAT port ranges.
    pub worker: usize,
}

impl<'a> Pipeline<'a> {
    pub fn new(shared: &'a Shared, worker: usize) -> Pipeline<'a> {
        Pipeline { shared, worker }
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
        let _ = (now_ms, in_port);
    }
}
