//! The express way (packets of settled IPv4 UDP connections tracked from
//! their record's hot line) against the whole way: the same packets through
//! two engines, one with it and one without ([`Engine::set_express`]), give
//! the same result for every packet, the same events, counters and table.
//! Every capture under tests/pcaps, and generated UDP traffic that walks a
//! connection through each case the express way must hand back (replies to
//! an unreplied connection, marks, expiry, shorter timeouts, bad checksums,
//! translations).

use std::path::{Path, PathBuf};

use ctcore::conn::Listed;
use ctcore::engine::{
    CtResult, Decision, Egress, Engine, EngineConfig, Pkt, RxCsum, Tunables, Worker,
};
use ctcore::nat::{Action, Match, Nat, Prefix, Rule};
use ctcore::timeout::Timeouts;
use ctcore::tuple::{Addr, Dir, Family};
use ctcore::wire::build::{frame, L4Spec};

const BURST: usize = 32;

/// One engine and its worker.
struct Side {
    engine: Engine,
    worker: Worker,
    out: Vec<CtResult>,
}

/// The engine with the express way and the one without.
struct Pair {
    sides: [Side; 2],
    packets: u64,
}

impl Pair {
    fn new(nat: bool, accounting: bool) -> Pair {
        let side = |express: bool| {
            let cfg = EngineConfig {
                capacity_conns: 256,
                seed: 11,
                tunables: Tunables {
                    accounting,
                    ..Tunables::default()
                },
            };
            let rules = nat.then(|| Nat {
                rules: vec![
                    Rule::new(
                        "dnat".into(),
                        Match {
                            dst: Some(Prefix::parse("198.51.100.7").expect("a prefix")),
                            ..Match::default()
                        },
                        Action::parse("dnat to 198.51.100.70:8080", &[]).expect("a rule"),
                    ),
                    Rule::new(
                        "masq".into(),
                        Match::default(),
                        Action::parse("masquerade to :20000-20100", &[]).expect("a rule"),
                    ),
                ],
                pools: vec![],
            });
            let mut engine: Engine = Engine::with_nat(cfg, rules);
            engine.set_express(express);
            let worker = engine.worker(1024);
            Side {
                engine,
                worker,
                out: vec![CtResult::default(); BURST],
            }
        };
        Pair {
            sides: [side(true), side(false)],
            packets: 0,
        }
    }

    /// One burst through both engines: `decide` answers for packet `i`
    /// (the same for both); results and events must agree.
    fn burst(&mut self, now_ms: u64, pkts: &[Pkt<'_>], decide: impl Fn(usize) -> Decision) {
        for s in &mut self.sides {
            s.engine.process_burst(
                &mut s.worker,
                now_ms,
                pkts,
                &mut s.out[..pkts.len()],
                |i, _| decide(i),
            );
        }
        let [a, b] = &mut self.sides;
        for i in 0..pkts.len() {
            assert_eq!(
                format!("{:?}", a.out[i]),
                format!("{:?}", b.out[i]),
                "packet {} (burst packet {i}): the express way's result differs",
                self.packets + i as u64
            );
        }
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.worker.events.drain(|e| ea.push(e));
        b.worker.events.drain(|e| eb.push(e));
        assert_eq!(ea, eb, "the express way's events differ");
        self.packets += pkts.len() as u64;
    }

    /// `frames` as one burst (the NIC's checksum verdicts taken in turn
    /// from `csum`, starting at burst `b`'s place), with [`verdict`]'s
    /// answers from `seed`.
    fn frames<F: AsRef<[u8]>>(
        &mut self,
        now_ms: u64,
        frames: &[F],
        b: usize,
        csum: &[RxCsum],
        seed: u64,
    ) {
        let pkts: Vec<Pkt<'_>> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| Pkt {
                rx_csum: csum[(i + b) % csum.len()],
                ..Pkt::new(f.as_ref(), 0, 0)
            })
            .collect();
        self.burst(now_ms, &pkts, |i| verdict(seed, b * BURST + i));
    }

    fn expire(&mut self, now_ms: u64) {
        for s in &mut self.sides {
            s.engine.expire(&mut s.worker, now_ms, None, 64);
        }
    }

    fn set_tunables(&mut self, t: Tunables) {
        for s in &self.sides {
            s.engine.set_tunables(t);
        }
    }

    fn table(&self, i: usize, now_ms: u64) -> Vec<Listed> {
        let mut v = Vec::new();
        self.sides[i].engine.snapshot(now_ms, |c| v.push(*c));
        v
    }

    /// Counters and tables agree.
    fn finish(&self, now_ms: u64) {
        let [a, b] = &self.sides;
        assert_eq!(a.worker.stats, b.worker.stats, "counters differ");
        assert_eq!(
            self.table(0, now_ms),
            self.table(1, now_ms),
            "tables differ"
        );
    }
}

/// The verdict for packet `i` of a run: mostly accept, sometimes caching
/// a verdict, setting a mark, dropping or delivering locally.
fn verdict(seed: u64, i: usize) -> Decision {
    let x = (seed ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    match x % 16 {
        0 => Decision::Drop,
        1 => Decision::Local,
        2 => Decision::Accept(Egress {
            mark: Some((x >> 8) as u32 % 3),
            addr: Some(Addr::from_v4([203, 0, 113, 1])),
            ..Egress::NONE
        }),
        _ => Decision::Accept(Egress {
            port: 1,
            addr: Some(Addr::from_v4([203, 0, 113, 1])),
            cache: if x.is_multiple_of(4) {
                0
            } else {
                1 + (x >> 4) as u16 % 3
            },
            ..Egress::NONE
        }),
    }
}

/// A xorshift generator from `seed` (not 0).
fn rng(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// The frames of a classic pcap file with their times in ms.
fn read_pcap(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let buf = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(buf[..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => panic!("{}: not a pcap (magic {m:#x})", path.display()),
    };
    let word = |o: usize| {
        let b: [u8; 4] = buf[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut at = 24;
    let mut frames = Vec::new();
    while at + 16 <= buf.len() {
        let (sec, frac, len) = (word(at) as u64, word(at + 4) as u64, word(at + 8) as usize);
        let ms = sec * 1000 + if nanos { frac / 1_000_000 } else { frac / 1000 };
        let end = (at + 16 + len).min(buf.len());
        frames.push((ms, buf[at + 16..end].to_vec()));
        at = end;
    }
    frames
}

fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            captures(&p, out);
        } else if p.extension().is_some_and(|x| x == "pcap") {
            out.push(p);
        }
    }
}

#[test]
fn every_capture_gives_the_same_results_both_ways() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pcaps");
    let mut files = Vec::new();
    captures(&root, &mut files);
    files.sort();
    assert!(files.len() >= 20, "the captures are there");
    for (k, path) in files.iter().enumerate() {
        let frames = read_pcap(path);
        for (nat, accounting) in [(false, false), (true, true)] {
            let mut pair = Pair::new(nat, accounting);
            let t0 = frames.first().map_or(0, |f| f.0);
            let mut now = 0;
            for (b, chunk) in frames.chunks(BURST).enumerate() {
                now = chunk[0].0.saturating_sub(t0);
                let burst: Vec<&[u8]> = chunk.iter().map(|(_, f)| f.as_slice()).collect();
                pair.frames(now, &burst, b, &[RxCsum::Unknown, RxCsum::Good], k as u64);
            }
            pair.finish(now);
        }
    }
}

/// UDP flow `f` of the generated traffic: its original endpoints.
fn endpoints(f: u32) -> (Addr, u16, Addr, u16) {
    let dst = if f.is_multiple_of(5) {
        7
    } else {
        10 + (f % 3) as u8
    };
    (
        Addr::from_v4([192, 0, 2, 10 + (f % 40) as u8]),
        1024 + f as u16,
        Addr::from_v4([198, 51, 100, dst]),
        53,
    )
}

fn udp(src: Addr, sport: u16, dst: Addr, dport: u16, bad_sum: bool) -> Vec<u8> {
    let mut f = frame(
        Family::V4,
        src,
        dst,
        64,
        L4Spec::Udp {
            src_port: sport,
            dst_port: dport,
            payload: b"express",
        },
    );
    if bad_sum {
        // The UDP checksum (after 14 + 20 + 6 bytes), off by one.
        f[40] ^= 1;
    }
    f
}

#[test]
fn generated_udp_traffic_gives_the_same_results_both_ways() {
    for (nat, accounting) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut pair = Pair::new(nat, accounting);
        let mut next = rng(0x2545_f491_4f6c_dd1du64 ^ u64::from(nat) ^ u64::from(accounting) << 1);
        let mut now = 0u64;
        for b in 0..600usize {
            // Mostly small steps; now and then past the unreplied timeout
            // (30 s), rarely past the stream timeout (120 s).
            now += match next() % 64 {
                0 => 35_000,
                1 if b % 7 == 0 => 125_000,
                x => x * 97,
            };
            if b == 300 {
                // Shorter timeouts: a packet's new deadline comes before
                // its old one (the wheel must hear of it).
                let mut t = Tunables::default();
                t.timeouts = Timeouts {
                    udp_stream_ms: 20_000,
                    udp_unreplied_ms: 5_000,
                    ..t.timeouts
                };
                pair.set_tunables(t);
            }
            // Replies go to what the original direction's reply tuple says
            // (translated under NAT): read from the table.
            let table = pair.table(1, now);
            let n = 1 + next() as usize % BURST;
            let frames: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let x = next();
                    let f = (x % 48) as u32;
                    let (src, sport, dst, dport) = endpoints(f);
                    let bad = x >> 8 & 63 == 0;
                    let reply = x >> 16 & 1 == 1;
                    let conn = table.iter().find(|c| {
                        let t = &c.tuples[Dir::Orig.index()];
                        t.src == src && t.src_port == sport
                    });
                    match conn {
                        Some(c) if reply => {
                            let r = &c.tuples[Dir::Reply.index()];
                            udp(r.src, r.src_port, r.dst, r.dst_port, bad)
                        }
                        _ => udp(src, sport, dst, dport, bad),
                    }
                })
                .collect();
            let csum = [RxCsum::Unknown, RxCsum::Good, RxCsum::Unknown];
            pair.frames(now, &frames, b, &csum, b as u64);
            if b % 4 == 3 {
                pair.expire(now);
            }
        }
        pair.finish(now);
        let found = pair.sides[0].worker.stats.found;
        assert!(
            found > 5_000,
            "the traffic had settled connections: {found} found"
        );
    }
}

/// A generated TCP connection: its client port, the next sequence number
/// each side sends, and how far its life has gone.
struct TcpFlow {
    f: u32,
    seq: [u32; 2],
    step: u32,
}

#[test]
fn generated_tcp_traffic_gives_the_same_results_both_ways() {
    use ctcore::wire::tcp_flags::{ACK, FIN, PSH, RST, SYN};
    for (nat, accounting) in [(false, false), (true, true)] {
        let mut pair = Pair::new(nat, accounting);
        let mut next = rng(0x9e37_79b9_7f4a_7c15u64 ^ u64::from(nat));
        let mut flows: Vec<TcpFlow> = (0..24)
            .map(|f| TcpFlow {
                f,
                seq: [1000 * f, 7_000_000 + 1000 * f],
                step: 0,
            })
            .collect();
        let mut now = 0u64;
        for b in 0..500usize {
            now += next() % 400;
            let table = pair.table(1, now);
            let n = 1 + next() as usize % BURST;
            let mut frames = Vec::new();
            for _ in 0..n {
                let x = next();
                let fl = &mut flows[(x % 24) as usize];
                let (src, sport) = (
                    Addr::from_v4([192, 0, 2, 20 + (fl.f % 8) as u8]),
                    30_000 + fl.f as u16,
                );
                let (dst, dport) = (Addr::from_v4([198, 51, 100, 10 + (fl.f % 3) as u8]), 80);
                // Which side sends, with what flags and how many bytes.
                let (side, flags, len) = match fl.step {
                    0 => (0, SYN, 0),
                    1 => (1, SYN | ACK, 0),
                    2 => (0, ACK, 0),
                    s if s < 60 => match x >> 8 & 7 {
                        0..=2 => (0, ACK | PSH, 1 + (x >> 12) as u16 % 200),
                        3..=4 => (1, ACK | PSH, 1 + (x >> 12) as u16 % 200),
                        5 => (1, ACK, 0),
                        6 => (0, ACK, 0),
                        _ => (0, ACK | PSH, 0),
                    },
                    60 => (0, FIN | ACK, 0),
                    61 => (1, FIN | ACK, 0),
                    62 => (0, ACK, 0),
                    _ => (0, if x >> 20 & 1 == 0 { SYN } else { RST }, 0),
                };
                // Now and then a retransmission (an old sequence number) or
                // a segment far out of the window.
                let skew = match x >> 24 & 31 {
                    0 => 0u32.wrapping_sub(300),
                    1 => 3_000_000,
                    _ => 0,
                };
                let seq = fl.seq[side].wrapping_add(skew);
                let ack = if flags & ACK != 0 {
                    fl.seq[1 - side]
                } else {
                    0
                };
                let advance = u32::from(len) + u32::from(flags & (SYN | FIN) != 0);
                fl.seq[side] = fl.seq[side].wrapping_add(advance);
                fl.step = if fl.step >= 63 { 0 } else { fl.step + 1 };
                let payload = vec![0x5a; len as usize];
                let reply = table
                    .iter()
                    .find(|c| {
                        let t = &c.tuples[Dir::Orig.index()];
                        t.src == src && t.src_port == sport
                    })
                    .map(|c| c.tuples[Dir::Reply.index()]);
                let (s, sp, d, dp) = match (side, reply) {
                    (1, Some(r)) => (r.src, r.src_port, r.dst, r.dst_port),
                    (1, None) => (dst, dport, src, sport),
                    _ => (src, sport, dst, dport),
                };
                frames.push(frame(
                    Family::V4,
                    s,
                    d,
                    64,
                    L4Spec::Tcp {
                        src_port: sp,
                        dst_port: dp,
                        seq,
                        ack,
                        flags,
                        window: 4096 + (x >> 32) as u16 % 60_000,
                        payload: &payload,
                    },
                ));
            }
            let csum = [RxCsum::Unknown, RxCsum::Good];
            pair.frames(now, &frames, b, &csum, b as u64 ^ 0x55);
            if b % 8 == 7 {
                pair.expire(now);
            }
        }
        pair.finish(now);
        let found = pair.sides[0].worker.stats.found;
        assert!(
            found > 2_000,
            "the traffic had known connections: {found} found"
        );
    }
}
