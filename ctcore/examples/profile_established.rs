//! A fixed workload for instruction-level profiling (valgrind --tool=callgrind):
//! 100k established UDP connections (replied and ASSURED, as the bench's),
//! 200 bursts of 32 packets in random order.
//! `profile_established N BURSTS snat`: the same through a masquerade rule,
//! each packet rewritten as the appliance does. `... new`: bursts of 32 new
//! connections instead (deleted again one by one outside `process_burst`:
//! read the inclusive cost of `process_burst`); `... new-snat`: the same through the
//! masquerade rule. `... new-evict` / `new-evict-snat`: a full table of
//! unreplied connections, so that every new connection evicts one through
//! early drop (as the bench's new-connection table does once full); prints
//! the time per new connection.
use ctcore::engine::{CtResult, Decision, Egress, EngineConfig, Pkt, Tunables};
use ctcore::nat::rewrite::{apply_translation, ChecksumMode};
use ctcore::nat::{Action, Match, Nat, Rule};
use ctcore::tuple::{Addr, Family};
use ctcore::wire::build::{frame, L4Spec};

#[path = "../benches/support/platform.rs"]
mod platform;
use platform::huge::TablePages;
use platform::HwPrefetch;

/// The engine as the appliance runs it: real prefetches, huge pages.
type Engine = ctcore::engine::Engine<HwPrefetch>;

fn flow(i: u32, reply: bool) -> Vec<u8> {
    let c = Addr::from_v4([192, 0, 2, (i % 250) as u8 + 1]);
    let s = Addr::from_v4([198, 51, 100, ((i / 250) % 250) as u8 + 1]);
    let sport = 1024 + (i / 62_500) as u16;
    let (src, dst, sp, dp) = if reply {
        (s, c, 80, sport)
    } else {
        (c, s, sport, 80)
    };
    frame(
        Family::V4,
        src,
        dst,
        64,
        L4Spec::Udp {
            src_port: sp,
            dst_port: dp,
            payload: &[0u8; 18],
        },
    )
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let bursts: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mode = std::env::args().nth(3).unwrap_or_default();
    let snat = mode.ends_with("snat");
    let evict = mode.starts_with("new-evict");
    let nat = snat.then(|| Nat {
        rules: vec![Rule::new(
            "masq".into(),
            Match::default(),
            Action::Masquerade {
                ports: None,
                random: false,
            },
        )],
        pools: vec![],
    });
    let egress = Egress {
        port: 1,
        addr: Some(Addr::from_v4([203, 0, 113, 1])),
        mark: None,
        helper: ctcore::helper::Helper::None,
        cache: 0,
    };
    let e = Engine::build(
        EngineConfig {
            capacity_conns: if evict { n } else { n + n / 8 },
            seed: 1,
            tunables: Tunables::default(),
        },
        nat,
        1,
        &mut TablePages::new(false),
    );
    let mut w = e.worker(0);
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| flow(((i as u64 * 2_654_435_761) % n as u64) as u32, false))
        .collect();
    let mut out = [CtResult::default(); 32];
    let mut feed = |w: &mut ctcore::engine::Worker, now_ms: u64, frames: &[Vec<u8>]| {
        for ch in frames.chunks(32) {
            let pkts: Vec<Pkt<'_>> = ch.iter().map(|f| Pkt::new(f, 0, 0)).collect();
            e.process_burst(w, now_ms, &pkts, &mut out[..pkts.len()], |_, _| {
                Decision::Accept(egress)
            });
        }
    };
    feed(&mut w, 0, &frames);
    if !mode.starts_with("new") {
        // Established as the bench's flows are: replied, and past the
        // kernel's 2 s stream mark (one more packet makes each ASSURED).
        // Each reply is built from its connection's reply tuple (with SNAT:
        // to the address and port the masquerade chose).
        let mut replies: Vec<Vec<u8>> = vec![];
        e.snapshot(0, |c| {
            let t = c.tuples[1];
            replies.push(frame(
                Family::V4,
                t.src,
                t.dst,
                64,
                L4Spec::Udp {
                    src_port: t.src_port,
                    dst_port: t.dst_port,
                    payload: &[0u8; 18],
                },
            ))
        });
        feed(&mut w, 1, &replies);
        feed(&mut w, 2_500, &frames);
    }
    if evict {
        // Fresh flows every burst: each new connection evicts an unreplied one.
        let fresh: Vec<Vec<u8>> = (0..bursts as u32 * 32)
            .map(|i| flow(n * 2 + i, false))
            .collect();
        let before = w.stats.insert;
        let t = std::time::Instant::now();
        measured_new(&e, &mut w, &fresh, egress);
        let ns = t.elapsed().as_nanos() as f64 / fresh.len() as f64;
        eprintln!(
            "{} new connections, {:.1} ns each, early drops {}",
            w.stats.insert - before,
            ns,
            w.stats.early_drop
        );
        return;
    }
    if mode.starts_with("new") {
        let fresh: Vec<Vec<u8>> = (0..32).map(|i| flow(n * 2 + i, false)).collect();
        let mut w2 = e.worker(0);
        for _ in 0..bursts {
            let pkts: [Pkt<'_>; 32] = std::array::from_fn(|k| Pkt::new(&fresh[k], 0, 0));
            e.process_burst(&mut w, 1, &pkts, &mut out, |_, _| Decision::Accept(egress));
            // Deleted one by one (cheap beside the burst: a profile of this
            // mode is mostly the new connections' path).
            for r in &out {
                if let Some(t) = r.conn.and_then(|h| e.with_conn(h, |c| c.tuples[0])) {
                    e.delete_tuple(&mut w2, 1, &t);
                }
            }
        }
        eprintln!("{} new connections", w.stats.insert - n as u64);
        return;
    }
    let t = std::time::Instant::now();
    measured(&e, &mut w, &frames, bursts, egress);
    let ns = t.elapsed().as_nanos() as f64 / (bursts * 32) as f64;
    eprintln!(
        "{} connections, {:.1} ns/packet, found {}",
        e.table().len(),
        ns,
        w.stats.found
    );
}

/// New connections through `process_burst`, on their own for a profile
/// (`--toggle-collect='*measured_new*'`).
#[inline(never)]
fn measured_new(e: &Engine, w: &mut ctcore::engine::Worker, fresh: &[Vec<u8>], egress: Egress) {
    let mut out = [CtResult::default(); 32];
    for ch in fresh.chunks(32) {
        let pkts: Vec<Pkt<'_>> = ch.iter().map(|f| Pkt::new(f, 0, 0)).collect();
        e.process_burst(w, 1, &pkts, &mut out[..pkts.len()], |_, _| {
            Decision::Accept(egress)
        });
    }
}

/// The measured loop, on its own so that a profile can collect it alone
/// (`valgrind --tool=callgrind --toggle-collect='*measured*'`).
#[inline(never)]
fn measured(
    e: &Engine,
    w: &mut ctcore::engine::Worker,
    frames: &[Vec<u8>],
    bursts: usize,
    egress: Egress,
) {
    let mut out = [CtResult::default(); 32];
    let mut bufs: Vec<Vec<u8>> = frames[..32].to_vec();
    for b in 0..bursts {
        let base = (b * 32) % (frames.len() - 32);
        for (k, buf) in bufs.iter_mut().enumerate() {
            buf.copy_from_slice(&frames[base + k]);
        }
        let pkts: [Pkt<'_>; 32] = std::array::from_fn(|k| Pkt::new(&bufs[k], 0, 0));
        e.process_burst(w, 2_600, &pkts, &mut out, |_, _| Decision::Accept(egress));
        for (k, r) in out.iter().enumerate() {
            if let (Ok(p), Some(rw)) = (&r.parsed, &r.rewrite) {
                let _ = apply_translation(&mut bufs[k], p, rw, ChecksumMode::Incremental);
            }
        }
    }
}
