//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs` call them; the
//! `fuzz_corpus` test replays every committed corpus file through them, so
//! CI catches a regression on any input the fuzzer ever kept, without a
//! nightly toolchain). Each takes arbitrary bytes and must not panic; the
//! assertions are the invariants callers index frames with.

use crate::engine::{CtResult, Decision, Egress, Engine, EngineConfig, Pkt, Tunables};
use crate::nat::rewrite::{apply, ChecksumMode};
use crate::nat::{Action, Match, Nat, Rule};
use crate::tuple::{Addr, Dir};
use crate::wire::{self, IcmpInfo, L4};

/// A target's body: arbitrary bytes in, a panic if an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets by name (the corpus directories under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("parse", parse),
    ("l4_checksum_ok", l4_checksum_ok),
    ("engine", engine),
    ("ethernet", ethernet),
    ("ipv4", ipv4),
    ("ipv6", ipv6),
    ("tcp", tcp),
    ("udp", udp),
    ("icmp", icmp),
    ("sctp", sctp),
    ("gre", gre),
];

/// `wire::parse` on a frame: never panics, and what it returns indexes the
/// frame safely.
pub fn parse(frame: &[u8]) {
    let Ok(p) = wire::parse(frame) else { return };
    let l3_end = usize::from(p.l3_offset) + usize::from(p.l3_len);
    assert!(l3_end <= frame.len());
    assert!(p.l3_offset < p.l4_offset && usize::from(p.l4_offset) <= l3_end);
    match p.l4 {
        L4::Tcp(t) => {
            let options = &frame[usize::from(t.options.0)..usize::from(t.options.1)];
            assert_eq!(options.len() + 20, usize::from(t.header_len));
            assert_eq!(
                usize::from(t.options.1) + usize::from(t.payload_len),
                l3_end
            );
        }
        L4::Icmp(IcmpInfo {
            inner: Some(inner),
            is_error,
            ..
        }) => {
            assert!(is_error);
            assert!(inner.l3_offset < inner.l4_offset && usize::from(inner.l4_offset) <= l3_end);
        }
        L4::None => assert!(p.frag.is_some_and(|f| f.offset != 0)),
        _ => {}
    }
}

/// `checksum::l4_checksum_ok` with the frame's own parse, and with that
/// parse applied to a shortened frame (a caller bug must give false, not a
/// panic).
pub fn l4_checksum_ok(frame: &[u8]) {
    let Ok(p) = wire::parse(frame) else { return };
    let _ = crate::checksum::l4_checksum_ok(frame, &p);
    let cut = usize::from(frame[frame.len() - 1]) % (frame.len() + 1);
    let _ = crate::checksum::l4_checksum_ok(&frame[..cut], &p);
}

/// The whole engine on a sequence of frames (each: a 2-byte length, a
/// control byte choosing the verdict, the clock step, the zone, the
/// checksum mode and a GC step, then the frame) through conntrack with
/// destination NAT and masquerade; every translation is applied and the
/// rewritten frame must still parse; the table never holds more than its
/// capacity.
pub fn engine(data: &[u8]) {
    let n = |a: &str, r: &str| {
        Rule::new(
            a.into(),
            Match::default(),
            Action::parse(r, &[]).expect("a valid rule"),
        )
    };
    let nat = Nat {
        rules: vec![
            n("dnat", "dnat to 198.51.100.7:8080"),
            n("masq", "masquerade to :20000-20010"),
        ],
        pools: vec![],
    };
    let cfg = EngineConfig {
        capacity_conns: 64,
        seed: 7,
        tunables: Tunables::default(),
    };
    let e: Engine = Engine::with_nat(cfg, Some(nat));
    let mut w = e.worker(16);
    let mut rest = data;
    let mut now = 0u64;
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
            _ => Decision::Accept(Egress {
                port: 1,
                addr: Some(Addr::from_v4([203, 0, 113, 1])),
            }),
        };
        let pkt = Pkt {
            frame: &frame,
            zone: (ctl >> 4) as u16 & 1,
            in_port: 0,
            ..Pkt::new(&frame, 0, 0)
        };
        e.process_burst(&mut w, now, &[pkt], &mut out, |_, _| decision);
        if let (Ok(p), Some(rw)) = (out[0].parsed, out[0].rewrite) {
            let mode = if ctl & 0x10 != 0 {
                ChecksumMode::Offload
            } else {
                ChecksumMode::Incremental
            };
            if apply(&mut frame, &p, &rw, mode).is_ok() {
                assert!(
                    wire::parse(&frame).is_ok() || p.frag.is_some_and(|f| f.offset != 0),
                    "a rewritten frame no longer parses"
                );
            }
        }
        w.events.drain(|_| {});
        if ctl & 0x20 != 0 {
            e.expire(&mut w, now, None, 16);
        }
    }
    let mut n = 0;
    e.snapshot(now, |_| n += 1);
    assert!(n <= 64);
}

/// The Ethernet header and its VLAN tags: the L3 offset is within the frame.
pub fn ethernet(frame: &[u8]) {
    let (mut ids, mut count) = ([0u16; 2], 0u8);
    if let Ok((_, l3)) = wire::ethernet::walk(frame, &mut ids, &mut count) {
        assert!(l3 <= frame.len());
        assert!(usize::from(count) <= ids.len());
    }
}

/// The IPv4 header (with options), checked and unchecked: the L4 offset and
/// the length it gives are within the bytes present.
pub fn ipv4(l3: &[u8]) {
    for checksum in [true, false] {
        if let Ok(h) = wire::ipv4::parse_header(l3, checksum) {
            assert!(h.l4_rel <= h.l3_len && h.l3_len <= l3.len());
        }
    }
}

/// The IPv6 header and its extension-header chain.
pub fn ipv6(l3: &[u8]) {
    if let Ok(h) = wire::ipv6::parse_header(l3) {
        assert!(h.l4_rel <= h.l3_len && h.l3_len <= l3.len());
    }
    if let Ok(w) = wire::ipv6::walk_ext(l3) {
        assert!(w.l4_rel <= l3.len());
    }
}

/// A TCP header with its options, then the options through the tracker's
/// walk (a SYN opening a connection, every option read).
pub fn tcp(seg: &[u8]) {
    let Ok(L4::Tcp(info)) = wire::tcp::parse(seg, 0) else {
        return;
    };
    let (a, b) = (usize::from(info.options.0), usize::from(info.options.1));
    assert!(a <= b && b <= seg.len());
    assert_eq!(b - a + 20, usize::from(info.header_len));
    let segment = crate::proto::tcp::TcpSegment {
        info,
        options: &seg[a..b],
    };
    let mut state = crate::proto::tcp::TcpState::default();
    let mut status = crate::conn::Status::default();
    let tun = Tunables::default();
    for dir in [Dir::Orig, Dir::Reply, Dir::Orig] {
        let _ = state.packet(dir, &segment, &mut status, &tun.tcp, &tun.timeouts);
    }
}

/// UDP and UDP-Lite headers, whole and partial (a fragment's start).
pub fn udp(seg: &[u8]) {
    for partial in [false, true] {
        let _ = wire::udp::parse(seg, partial);
        let _ = wire::udp::parse_lite(seg, partial);
    }
}

/// ICMP and ICMPv6 messages, with the datagram an error quotes.
pub fn icmp(seg: &[u8]) {
    let end = seg.len();
    for off in [0, 8.min(end)] {
        let _ = wire::icmp::parse_v4(seg, off, end);
        let _ = wire::icmpv6::parse(seg, off, end);
        let _ = wire::icmp::quoted_v4(seg, off, end);
        let _ = wire::icmp::quoted_v6(seg, off, end);
    }
}

/// An SCTP packet's chunks: the header parse, then the tracker's walk of
/// every chunk in both directions.
pub fn sctp(seg: &[u8]) {
    let _ = wire::sctp::parse(seg);
    let mut state = crate::proto::sctp::SctpState::default();
    let mut status = crate::conn::Status::default();
    let tun = Tunables::default();
    for dir in [Dir::Orig, Dir::Reply, Dir::Orig] {
        let _ = state.packet(dir, seg, &mut status, &tun.timeouts);
    }
}

/// GRE (keys of PPTP's enhanced GRE) and DCCP headers.
pub fn gre(seg: &[u8]) {
    let _ = wire::gre::parse(seg);
    let _ = wire::dccp::parse(seg);
}
