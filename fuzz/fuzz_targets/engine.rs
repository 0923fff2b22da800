//! The whole engine on raw frames: a sequence of frames (split from the input
//! by a length prefix) through conntrack with source and destination NAT, the
//! rewrite applied to every forwarded frame, GC and deletes in between. No
//! input may panic, and every rewritten frame must still parse.
#![no_main]

use ctcore::engine::{CtResult, Decision, Egress, Engine, EngineConfig, Pkt, Tunables};
use ctcore::nat::rewrite::{apply, ChecksumMode};
use ctcore::nat::{Action, Match, Nat, Rule};
use ctcore::tuple::Addr;
use libfuzzer_sys::fuzz_target;

fn engine() -> Engine {
    let n = |a: &str, r: &str| Rule::new(a.into(), Match::default(), Action::parse(r, &[]).unwrap());
    let nat = Nat { rules: vec![n("dnat", "dnat to 198.51.100.7:8080"), n("masq", "masquerade to :20000-20010")], pools: vec![] };
    let cfg = EngineConfig { capacity_conns: 64, seed: 7, tunables: Tunables::default() };
    Engine::with_nat(cfg, Some(nat))
}

fuzz_target!(|data: &[u8]| {
    let e = engine();
    let mut w = e.worker(16);
    let mut rest = data;
    let mut now = 0u64;
    let mut cursor = 0;
    let mut out = [CtResult::default()];
    while rest.len() >= 3 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize % 1600;
        let ctl = rest[2];
        rest = &rest[3..];
        let take = len.min(rest.len());
        let mut frame = rest[..take].to_vec();
        rest = &rest[take..];
        now += (ctl & 0x0f) as u64 * 1000;
        let decision = match ctl >> 6 {
            0 => Decision::Drop,
            1 => Decision::Local,
            _ => Decision::Accept(Egress { port: 1, addr: Some(Addr::from_v4([203, 0, 113, 1])) }),
        };
        e.process_burst(&mut w, now, &[Pkt { frame: &frame, zone: (ctl >> 4) as u16 & 1, in_port: 0 }], &mut out, |_, _| decision);
        if let (Ok(p), Some(rw)) = (out[0].parsed, out[0].rewrite) {
            let mode = if ctl & 0x10 != 0 { ChecksumMode::Offload } else { ChecksumMode::Incremental };
            if apply(&mut frame, &p, &rw, mode).is_ok() {
                assert!(ctcore::wire::parse(&frame).is_ok() || p.frag.is_some_and(|f| f.offset != 0), "a rewritten frame no longer parses");
            }
        }
        w.events.drain(|_| {});
        if ctl & 0x20 != 0 {
            e.gc_step(&mut w, now, &mut cursor, 16);
        }
    }
    let mut n = 0;
    e.snapshot(now, |_| n += 1);
    assert!(n <= 64);
});
