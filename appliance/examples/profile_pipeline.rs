//! A worker's conntrack stage without DPDK, for instruction-level profiling
//! (valgrind --tool=callgrind) and cycle counts: `Pipeline::process_burst`
//! (ctcore, routing + policy, the NAT rewrite) over the frames
//! `scripts/bench-forward.sh` replays (64-byte UDP, FLOWS flows from the
//! "in" port, unreplied), in bursts of 32, with bench-forward's config.
//!
//! `profile_pipeline FLOWS BURSTS [conntrack|snat]` prints the TSC cycles
//! per packet of the measured bursts (after two warm-up passes). Under
//! callgrind, collect `--toggle-collect='*measured*'` and divide by
//! BURSTS x 32. `... new` / `new-snat`: every packet a new flow, into a
//! table of FLOWS connections (once full, each evicts one: the bench's
//! new-connection cell, with its source NAT to 64 addresses). `tcp` /
//! `tcp-snat`: the flows are TCP, one ACK segment each, picked up
//! mid-stream (as `bench-established.py --tcp` sends them).
use appliance::config::Config;
use appliance::net::classify;
use appliance::pipeline::{Pipeline, Reassembled, Shared, Steering, Verdict};
use ctcore::tuple::{Addr, Family};
use ctcore::wire::build::{frame, L4Spec};

/// The table's large regions on the hugetlb pools, as in `ctgate`.
#[global_allocator]
static ALLOC: appliance::dpdk::huge::HugeAlloc<std::alloc::System> =
    appliance::dpdk::huge::HugeAlloc(std::alloc::System);

const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const BURST: usize = 32;

/// Flow `i` as scripts/bench_frames.py makes it (60 bytes without the
/// FCS): UDP, or with `tcp` one TCP ACK segment.
fn flow(i: u32, tcp: bool) -> Vec<u8> {
    let (src_port, dst_port) = (1024 + (i / 240) as u16, 9);
    let l4 = if tcp {
        L4Spec::Tcp {
            src_port,
            dst_port,
            seq: 1000,
            ack: 2000,
            flags: 0x10,
            window: 8192,
            payload: &[0u8; 6],
        }
    } else {
        L4Spec::Udp {
            src_port,
            dst_port,
            payload: &[0u8; 18],
        }
    };
    let mut f = frame(
        Family::V4,
        Addr::from_v4([192, 0, 2, 10 + (i % 240) as u8]),
        Addr::from_v4([198, 51, 100, 10]),
        64,
        l4,
    );
    f[..6].copy_from_slice(&GW_MAC);
    if !tcp {
        // bench_frames.py sends them without a UDP checksum.
        f[40..42].copy_from_slice(&[0, 0]);
    }
    f
}

/// bench-forward's config (masquerade for `snat`), or with `new`,
/// bench.py's new-connection cell's (source NAT to its 64 addresses).
fn config(snat: bool, new: bool, capacity: u32) -> Config {
    let action = if new {
        "snat to 203.0.113.1-203.0.113.64"
    } else {
        "masquerade"
    };
    let nat = if snat {
        format!("[[nat]]\nname = \"snat\"\nout_port = \"out\"\naction = \"{action}\"\n")
    } else {
        String::new()
    };
    let text = format!(
        r#"workers = [1]
[conntrack]
max_connections = {capacity}

[[port]]
name = "in"
devargs = "net_null0"
ipv4 = "192.0.2.1/24"
mac = "02:00:00:00:00:01"

[[port]]
name = "out"
devargs = "net_null1"
ipv4 = "198.51.100.1/24"

[[neighbour]]
ip = "198.51.100.10"
mac = "02:00:00:00:00:0b"
port = "out"

{nat}"#
    );
    Config::parse(&text, "profile_pipeline").expect("a valid config")
}

/// One burst through the stage (the frames are copied fresh: SNAT rewrites
/// them, as the appliance's mbufs).
#[inline(never)]
fn burst(
    pl: &mut Pipeline<'_>,
    now_ms: u64,
    frames: &[Vec<u8>],
    bufs: &mut [Vec<u8>],
    warm_up: bool,
) -> usize {
    for (b, f) in bufs.iter_mut().zip(frames) {
        b.clear();
        b.extend_from_slice(f);
    }
    let meta: Vec<_> = bufs
        .iter()
        .map(|b| classify(b, &GW_MAC).expect("a frame for the gateway"))
        .collect();
    let mut verdicts = [Verdict::Forward(None); BURST];
    let n = bufs.len();
    let mut pkts: Vec<Reassembled<'_>> = bufs.iter_mut().map(|b| Reassembled(b)).collect();
    if warm_up {
        warm_up_stage(pl, now_ms, &mut pkts, &meta, &mut verdicts[..n]);
    } else {
        measured(pl, now_ms, &mut pkts, &meta, &mut verdicts[..n]);
    }
    verdicts[..n]
        .iter()
        .filter(|v| matches!(v, Verdict::Forward(_)))
        .count()
}

/// The warm-up's stage, apart from `measured` (which callgrind collects;
/// the `black_box` keeps the two from being merged into one function).
#[inline(never)]
fn warm_up_stage(
    pl: &mut Pipeline<'_>,
    now_ms: u64,
    pkts: &mut [Reassembled<'_>],
    meta: &[appliance::net::Meta],
    verdicts: &mut [Verdict],
) {
    pl.process_burst(std::hint::black_box(now_ms), 0, pkts, meta, verdicts);
}

/// What callgrind collects: the stage alone (after the warm-up).
#[inline(never)]
fn measured(
    pl: &mut Pipeline<'_>,
    now_ms: u64,
    pkts: &mut [Reassembled<'_>],
    meta: &[appliance::net::Meta],
    verdicts: &mut [Verdict],
) {
    pl.process_burst(now_ms, 0, pkts, meta, verdicts);
}

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let flows: u32 = arg(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let bursts: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mode = arg(3).unwrap_or_default();
    let snat = mode.ends_with("snat");
    let new = mode.starts_with("new");
    let tcp = mode.starts_with("tcp");
    let shared = Shared::new(
        &config(snat, new, if new { flows } else { 262_144 }),
        Steering::Single,
    );
    let mut pl = Pipeline::new(&shared, 0);
    // New connections: as many distinct flows as the run's packets, after
    // the ones that fill the table.
    let count = if new {
        flows + (bursts * BURST) as u32
    } else {
        flows
    };
    let frames: Vec<Vec<u8>> = (0..count).map(|i| flow(i, tcp)).collect();
    let mut bufs: Vec<Vec<u8>> = (0..BURST).map(|_| Vec::with_capacity(128)).collect();
    let mut next = 0usize;
    let mut take = || {
        let b: Vec<Vec<u8>> = (0..BURST)
            .map(|k| frames[(next + k) % frames.len()].clone())
            .collect();
        next = (next + BURST) % frames.len();
        b
    };
    // Warm up: every flow's connection made, and (a second pass, for
    // established flows) its verdict cached in its record, as in a run
    // that sends each flow many times.
    let passes = if new { 1 } else { 2 };
    for _ in 0..passes * ((flows as usize).div_ceil(BURST) + 1) {
        let b = take();
        burst(&mut pl, 1, &b, &mut bufs, true);
    }
    let work: Vec<Vec<Vec<u8>>> = (0..if new { bursts } else { bursts.min(4096) })
        .map(|_| take())
        .collect();
    let mut forwarded = 0;
    let t0 = appliance::dpdk::tsc();
    for i in 0..bursts {
        forwarded += burst(&mut pl, 2, &work[i % work.len()], &mut bufs, false);
    }
    let cycles = appliance::dpdk::tsc() - t0;
    let pkts = bursts * BURST;
    assert_eq!(forwarded, pkts, "every packet forwarded");
    println!(
        "{} {}, {}: {:.1} TSC cycles per packet over {} packets (copies and classification included)",
        flows,
        if new { "connections' table, new flows" } else { "flows" },
        match (tcp, snat) {
            (false, false) => "conntrack",
            (false, true) => "conntrack + SNAT",
            (true, false) => "conntrack, TCP",
            (true, true) => "conntrack + SNAT, TCP",
        },
        cycles as f64 / pkts as f64,
        pkts
    );
}
