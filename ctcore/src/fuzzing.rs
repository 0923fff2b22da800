//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs` call them; the
//! `fuzz_corpus` test replays every committed corpus file through them, so
//! CI catches a regression on any input the fuzzer ever kept, without a
//! nightly toolchain). Each takes arbitrary bytes and must not panic; the
//! assertions are the invariants callers index frames with.

use crate::checksum;
use crate::engine::{CtResult, Decision, Egress, Engine, EngineConfig, Pkt, Tunables};
use crate::nat::rewrite::{apply, apply_translation, ChecksumMode, Rewrite};
use crate::nat::{Action, Match, Nat, Rule};
use crate::tuple::{Addr, Dir, Family};
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
    ("nat_round_trip", nat_round_trip),
    ("sync_decode", sync_decode),
    ("ftp", ftp),
    ("defrag", defrag),
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
    let nat = || Nat {
        rules: vec![
            n("dnat", "dnat to 198.51.100.7:8080"),
            n("masq", "masquerade to :20000-20010"),
        ],
        pools: vec![],
    };
    let cfg = EngineConfig {
        capacity_conns: 64,
        seed: 7,
        tunables: Tunables {
            accounting: true,
            ..Tunables::default()
        },
    };
    let e: Engine = Engine::with_nat(cfg, Some(nat()));
    let mut w = e.worker(16);
    // The same packets through an engine without the express way: every
    // result, event and counter must be the same.
    let mut whole: Engine = Engine::with_nat(cfg, Some(nat()));
    whole.set_express(false);
    let mut w2 = whole.worker(16);
    let mut rest = data;
    let mut now = 0u64;
    let mut out = [CtResult::default()];
    let mut out2 = [CtResult::default()];
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
                // Sometimes a policy sets the connection's mark.
                mark: (ctl & 1 == 1).then_some(u32::from(ctl >> 1 & 3)),
                helper: crate::helper::Helper::None,
                // Sometimes it caches a verdict for the connection.
                cache: u16::from(ctl & 8),
            }),
        };
        let zone = (ctl >> 4) as u16 & 1;
        let pkt = Pkt {
            frame: &frame,
            zone,
            // Sometimes a directional zone (the reply in zone 0).
            reply_zone: if ctl & 0x20 != 0 { 0 } else { zone },
            in_port: 0,
            ..Pkt::new(&frame, 0, 0)
        };
        e.process_burst(&mut w, now, &[pkt], &mut out, |_, _| decision);
        whole.process_burst(&mut w2, now, &[pkt], &mut out2, |_, _| decision);
        assert_eq!(
            format!("{:?}", out[0]),
            format!("{:?}", out2[0]),
            "the express way's result differs from the whole way's"
        );
        if let (Ok(p), Some(rw)) = (out[0].parsed, out[0].rewrite) {
            let mode = if ctl & 0x10 != 0 {
                ChecksumMode::Offload
            } else {
                ChecksumMode::Incremental
            };
            if apply_translation(&mut frame, &p, &rw, mode).is_ok() {
                assert!(
                    wire::parse(&frame).is_ok() || p.frag.is_some_and(|f| f.offset != 0),
                    "a rewritten frame no longer parses"
                );
            }
        }
        let (mut ev, mut ev2) = (Vec::new(), Vec::new());
        w.events.drain(|x| ev.push(x));
        w2.events.drain(|x| ev2.push(x));
        assert_eq!(ev, ev2, "the express way's events differ");
        if ctl & 0x20 != 0 {
            e.expire(&mut w, now, None, 16);
            whole.expire(&mut w2, now, None, 16);
        }
    }
    assert_eq!(w.stats, w2.stats);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    e.snapshot(now, |c| a.push(*c));
    whole.snapshot(now, |c| b.push(*c));
    assert_eq!(a, b);
    assert!(a.len() <= 64);
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

/// GRE headers (with the keys of PPTP's enhanced GRE).
pub fn gre(seg: &[u8]) {
    let _ = wire::gre::parse(seg);
}

/// NAT rewrite round trip: a frame (after 40 control bytes: which fields
/// change, new addresses, ports and id) translated by a rewrite, then
/// translated back by the rewrite that restores what it read, is the frame
/// it was. Checksums are updated incrementally (RFC 1624), so a checksum
/// field may come back only as the other ones'-complement zero (0x0000 <->
/// 0xffff); an ICMP error's own checksum is recomputed, so it may also come
/// back corrected where it was wrong.
pub fn nat_round_trip(data: &[u8]) {
    let Some((ctl, frame)) = data.split_first_chunk::<40>() else {
        return;
    };
    let Ok(p) = wire::parse(frame) else { return };
    let w = if p.family == Family::V4 { 4 } else { 16 };
    let addr = |b: &[u8]| {
        let mut a = [0u8; 16];
        a[..w].copy_from_slice(&b[..w]);
        Addr(a)
    };
    let be = |i: usize| u16::from_be_bytes([ctl[i], ctl[i + 1]]);
    // What the frame holds at `off` (0 past its end: nothing is written there).
    let word = |off: usize| {
        frame
            .get(off..off + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    let at = |off: usize, w: usize| frame.get(off..off + w).map_or(Addr::default(), addr);
    let (flags, l3, l4) = (ctl[0], usize::from(p.l3_offset), usize::from(p.l4_offset));
    let on = |bit: u8| flags & bit != 0;
    let related = matches!(p.l4, L4::Icmp(IcmpInfo { inner: Some(_), .. }));
    let mut rw = Rewrite {
        src: on(1).then(|| (addr(&ctl[1..17]), be(33))),
        dst: on(2).then(|| (addr(&ctl[17..33]), be(35))),
        id: on(4).then(|| be(37)),
        related,
        ..Rewrite::default()
    };
    let mut back = Rewrite {
        src: rw.src.map(|_| (p.src, word(l4))),
        dst: rw.dst.map(|_| (p.dst, word(l4 + 2))),
        id: rw.id.map(|_| word(l4 + 4)),
        related,
        ..Rewrite::default()
    };
    // Checksum fields: (offset, may come back corrected).
    let mut sums = checksum_fields(p.family, l3, p.proto, l4);
    if related {
        sums.retain(|(o, _)| *o != l4 + 2);
        sums.push((l4 + 2, true));
    }
    if let L4::Icmp(IcmpInfo {
        inner: Some(inner), ..
    }) = p.l4
    {
        let (il3, il4) = (usize::from(inner.l3_offset), usize::from(inner.l4_offset));
        let iw = if inner.family == Family::V4 { 4 } else { 16 };
        let (iso, idof) = match inner.family {
            Family::V4 => (il3 + 12, il3 + 16),
            Family::V6 => (il3 + 8, il3 + 24),
        };
        rw.inner_src = on(8).then(|| (addr(&ctl[1..17]), be(33)));
        rw.inner_dst = on(16).then(|| (addr(&ctl[17..33]), be(35)));
        rw.inner_id = on(32).then(|| be(37));
        back.inner_src = rw.inner_src.map(|_| (at(iso, iw), word(il4)));
        back.inner_dst = rw.inner_dst.map(|_| (at(idof, iw), word(il4 + 2)));
        back.inner_id = rw.inner_id.map(|_| word(il4 + 4));
        sums.extend(checksum_fields(inner.family, il3, inner.proto, il4));
        // A quoted IPv4 address is written as 4 bytes: what the rewrite
        // gets must be an IPv4 address (the IPv6 part zero), as NAT's are.
        if inner.family == Family::V4 {
            for e in [&mut rw.inner_src, &mut rw.inner_dst].into_iter().flatten() {
                e.0 .0[4..].fill(0);
            }
        }
    }
    let mut f = frame.to_vec();
    if apply(&mut f, &p, &rw, ChecksumMode::Incremental).is_err() {
        return;
    }
    // The layout is unchanged: the first parse still describes the frame.
    apply(&mut f, &p, &back, ChecksumMode::Incremental).expect("the way back applies too");
    let icmp_was_wrong = related && !crate::checksum::l4_checksum_ok(frame, &p);
    let mut i = 0;
    while i < f.len() {
        if f[i] == frame[i] {
            i += 1;
            continue;
        }
        let field = sums.iter().find(|(o, _)| (*o..*o + 2).contains(&i));
        let Some(&(o, corrected)) = field else {
            panic!("byte {i} changed: {:#04x} -> {:#04x}", frame[i], f[i]);
        };
        let (was, now) = (word(o), u16::from_be_bytes([f[o], f[o + 1]]));
        assert!(
            matches!((was, now), (0, 0xffff) | (0xffff, 0)) || (corrected && icmp_was_wrong),
            "checksum at {o} changed: {was:#06x} -> {now:#06x}"
        );
        i = o + 2;
    }
}

/// Where the checksums of an IP header at `l3` and its `proto` header at
/// `l4` are: (offset, false).
fn checksum_fields(family: Family, l3: usize, proto: u8, l4: usize) -> Vec<(usize, bool)> {
    use crate::tuple::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE};
    let mut v = Vec::new();
    if family == Family::V4 {
        v.push((l3 + 10, false));
    }
    match proto {
        IPPROTO_TCP => v.push((l4 + 16, false)),
        IPPROTO_UDP | IPPROTO_UDPLITE => v.push((l4 + 6, false)),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => v.push((l4 + 2, false)),
        _ => {}
    }
    v
}

/// A datagram from an HA peer (conntrackd's protocol): decoding never
/// panics; a message that decodes and encodes again decodes to the same
/// message; an FTFW endpoint takes the datagram, runs its timers and answers
/// without panicking.
pub fn sync_decode(data: &[u8]) {
    use crate::sync::{messages, Config, Endpoint};
    for m in messages(data).flatten() {
        let mut out = Vec::new();
        if m.emit(&mut out).is_err() {
            continue;
        }
        let again: Vec<_> = messages(&out).collect();
        assert_eq!(again.len(), 1, "one message re-encoded: {m:?}");
        match &again[0] {
            Ok(m2) => assert_eq!(m2, &m, "re-encoded and decoded again"),
            Err(e) => panic!("{m:?} re-encoded does not decode: {e:?}"),
        }
    }
    let mut ep = Endpoint::new(Config::default(), 1, 0);
    let mut events = Vec::new();
    ep.on_datagram(0, data, &mut events);
    let mut out = Vec::new();
    for now in [0, 1_500, 5_000] {
        ep.tick(now);
        while ep.poll_transmit(now, &mut out) {}
    }
}

/// The FTP helper: the first byte chooses direction and family, the rest
/// goes through `helper::ftp::find` (a match's numbers lie within the
/// data and format back within the buffer); then the same bytes, cut into
/// segments by their length bytes, run as payloads of an FTP control
/// connection through masquerade, each way, with the helper's rewrite and
/// sequence adjustment applied: every packet not dropped must parse with a
/// sound checksum.
pub fn ftp(data: &[u8]) {
    use crate::helper::{apply_fix, ftp, Helper};
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let dir = if ctl & 1 == 0 { Dir::Orig } else { Dir::Reply };
    let family = if ctl & 2 == 0 { Family::V4 } else { Family::V6 };
    if let ftp::Found::Match(m) = ftp::find(dir, family, rest, Addr::default()) {
        assert!(m.off + m.len <= rest.len(), "a match within the data");
        let mut buf = [0u8; ftp::MAX_TEXT];
        let n = ftp::format(m.ftp_type, family, &Addr([0xff; 16]), u16::MAX, &mut buf);
        assert!(n > 0 && n <= buf.len());
    }
    let nat = Nat {
        rules: vec![Rule::new(
            "masq".into(),
            Match::default(),
            Action::parse("masquerade", &[]).expect("a valid rule"),
        )],
        pools: vec![],
    };
    let cfg = EngineConfig {
        capacity_conns: 64,
        seed: 11,
        tunables: Tunables::default(),
    };
    let e: Engine = Engine::with_nat(cfg, Some(nat)).with_helpers();
    let mut w = e.worker(16);
    let (c, s, p) = (
        Addr::from_v4([192, 0, 2, 10]),
        Addr::from_v4([198, 51, 100, 20]),
        Addr::from_v4([203, 0, 113, 1]),
    );
    let seg = |from_client: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]| {
        let (src, dst, sp, dp) = if from_client {
            (c, s, 40000, 21)
        } else {
            (s, p, 21, 40000)
        };
        wire::build::frame(
            Family::V4,
            src,
            dst,
            64,
            wire::build::L4Spec::Tcp {
                src_port: sp,
                dst_port: dp,
                seq,
                ack,
                flags,
                window: 65535,
                payload,
            },
        )
    };
    let egress = Decision::Accept(Egress {
        port: 1,
        addr: Some(p),
        mark: None,
        helper: Helper::Ftp,
        cache: 0,
    });
    let mut out = [CtResult::default()];
    let mut step = |now: u64, f: Vec<u8>| {
        e.process_burst(&mut w, now, &[Pkt::new(&f, 0, 0)], &mut out, |_, _| egress);
        let r = out[0];
        let (Ok(parsed), None) = (r.parsed, r.ct_drop) else {
            return false;
        };
        let mut f = f;
        if let Some(rw) = &r.rewrite {
            apply_translation(&mut f, &parsed, rw, ChecksumMode::Incremental).expect("a rewrite");
        }
        if let Some(fix) = &r.fix {
            let len = fix.frame_len(&parsed, f.len());
            f.resize(len.max(f.len()), 0);
            let n = apply_fix(&mut f, &parsed, fix, ChecksumMode::Incremental).expect("a fix");
            f.truncate(n);
        }
        let q = wire::parse(&f).expect("a fixed frame parses");
        assert!(crate::checksum::l4_checksum_ok(&f, &q), "a sound checksum");
        true
    };
    use crate::wire::tcp_flags::{ACK, SYN};
    step(0, seg(true, SYN, 1000, 0, b""));
    step(1, seg(false, SYN | ACK, 5000, 1001, b""));
    step(2, seg(true, ACK, 1001, 5001, b""));
    let (mut cseq, mut sseq) = (1001u32, 5001u32);
    let mut rest = rest;
    let mut now = 3;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len & 0x7f).min(tail.len());
        let (payload, tail) = tail.split_at(take);
        rest = tail;
        now += 1;
        let client = len & 0x80 == 0;
        let f = if client {
            seg(true, ACK, cseq, sseq, payload)
        } else {
            seg(false, ACK, sseq, cseq, payload)
        };
        if step(now, f) {
            if client {
                cseq = cseq.wrapping_add(take as u32);
            } else {
                sseq = sseq.wrapping_add(take as u32);
            }
        }
    }
}

/// Reassembly (`crate::defrag`): the input cuts one of two UDP datagrams
/// (IPv4 or IPv6, by the first byte) into fragments — offsets, lengths,
/// flags and order as it says, overlaps and repeats included — and mixes in
/// raw frames and time passing. Never panics; a datagram that completes
/// holds exactly its source's bytes (each byte held once); refragmenting it
/// fits every fragment's frame; tight limits hold; and once cleared nothing
/// is held and no memory is counted.
pub fn defrag(data: &[u8]) {
    use crate::defrag::{read, refragment, Defrag, Limits, Push};
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let v6 = first & 1 != 0;
    let limits = Limits {
        high_thresh: 16 * 1024,
        max_datagrams: 3,
        max_fragments: 12,
        ..Limits::default()
    };
    let mut d: Defrag<usize> = Defrag::new(limits);
    // The two datagrams' fragmentable parts (UDP header and payload).
    let sources: [Vec<u8>; 2] = std::array::from_fn(|k| {
        (0..1200 + 400 * k)
            .map(|i| (i * 13 + k * 7 + 1) as u8)
            .collect()
    });
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    let mut now = 0u64;
    let mut chunks = ops.chunks_exact(4);
    for op in chunks.by_ref() {
        now += u64::from(op[3] >> 2) * 500;
        let frame = if op[0] % 5 == 4 {
            // A raw frame: the op's bytes behind an Ethernet header.
            let mut f = vec![0u8; 12];
            f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            f.extend_from_slice(op);
            f.extend(std::iter::repeat_n(op[1], usize::from(op[2])));
            f
        } else {
            let k = usize::from(op[3] & 1);
            let src = &sources[k];
            let off = (usize::from(op[1]) * 8) % src.len();
            let n = (usize::from(op[2]) * 8 + 8).min(src.len() - off);
            let more = op[3] & 2 != 0;
            fragment_frame(v6, k as u32 + 1, off, &src[off..off + n], more)
        };
        frames.push(frame);
        let h = frames.len() - 1;
        let r = read(&frames[h], 0);
        let mut release = |_: usize, _| {};
        match d.push(now, r, frames[h].len(), h, &mut release) {
            Push::Complete(dg) => {
                let at = d.assemble(dg, |h: &usize| frames[*h].as_slice(), &mut out);
                let mut back = Vec::new();
                d.finish(dg, |h, place| back.push((h, place)));
                let Ok(at) = at else { continue };
                // The datagram's id says its source.
                let k = if v6 {
                    frames[back[0].0][14 + 40 + 7] as usize - 1
                } else {
                    frames[back[0].0][14 + 5] as usize - 1
                };
                let got = &out[at.data_offset..];
                assert_eq!(got, &sources[k][..got.len()], "reassembled bytes");
                for (h, place) in back {
                    refragment(&out, &at, &mut frames[h], &place);
                }
            }
            Push::Whole(_) | Push::Held | Push::Dropped(..) => {}
        }
        assert!(d.fragments_held() <= limits.max_fragments);
        assert!(d.datagrams() <= limits.max_datagrams);
        d.expire(now, &mut release);
    }
    d.clear(|_| {});
    assert_eq!((d.fragments_held(), d.datagrams(), d.memory()), (0, 0, 0));
}

/// An Ethernet frame holding one fragment (`data` at `off`) of datagram
/// `id` from 192.0.2.10 / 2001:db8::10 to 198.51.100.20 / 2001:db8::20.
fn fragment_frame(v6: bool, id: u32, off: usize, data: &[u8], more: bool) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        for last in [0x10, 0x20] {
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            f.extend_from_slice(&[0; 11]);
            f.push(last);
        }
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&((off as u16 & 0xfff8) | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    } else {
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&(id as u16).to_be_bytes());
        let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        ip.extend_from_slice(&fo.to_be_bytes());
        ip.extend_from_slice(&[64, 17, 0, 0, 192, 0, 2, 10, 198, 51, 100, 20]);
        let c = checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(data);
    f
}
