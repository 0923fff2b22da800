use super::*;
use crate::wire::{self, L4};

const ETH: [u8; 14] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];

/// An IPv4 UDP datagram 192.0.2.10:1000 -> 198.51.100.20:53 with `n` bytes
/// of payload, checksums right, in an Ethernet frame.
fn udp4(n: usize) -> Vec<u8> {
    let mut udp = vec![0u8; 8 + n];
    udp[0..2].copy_from_slice(&1000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&53u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    ip4(17, &udp, [192, 0, 2, 10], [198, 51, 100, 20])
}

fn ip4(proto: u8, l4: &[u8], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let mut l4 = l4.to_vec();
    let sa = wire::Addr::from_v4(src);
    let da = wire::Addr::from_v4(dst);
    let at = if proto == 6 { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let c = checksum::l4_checksum(wire::Family::V4, &sa, &da, proto, &l4);
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let hc = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&hc.to_be_bytes());
    let mut f = ETH.to_vec();
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

/// The fragments of IPv4 frame `whole` with data ranges `cuts`
/// ((offset, len), the last one without MF if it reaches the end).
fn frag4(whole: &[u8], cuts: &[(usize, usize)]) -> Vec<Vec<u8>> {
    let data = &whole[34..];
    cuts.iter()
        .map(|&(off, len)| {
            let mut f = whole[..34].to_vec();
            f.extend_from_slice(&data[off..off + len]);
            let more = off + len < data.len();
            let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
            f[14 + 2..14 + 4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
            f[14 + 6..14 + 8].copy_from_slice(&fo.to_be_bytes());
            f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&f[14..34]);
            f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
            f
        })
        .collect()
}

/// An IPv6 UDP datagram 2001:db8::1 -> 2001:db8::2, and its fragments
/// (a Fragment header right after the fixed header, id 0x01020304).
fn udp6(n: usize) -> Vec<u8> {
    let mut udp = vec![0u8; 8 + n];
    udp[0..2].copy_from_slice(&1000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&53u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = (i * 5 + 1) as u8;
    }
    let (s, d) = (a6(1), a6(2));
    let c = checksum::l4_checksum(wire::Family::V6, &s, &d, 17, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = ETH.to_vec();
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&s.0);
    f.extend_from_slice(&d.0);
    f.extend_from_slice(&udp);
    f
}

fn a6(last: u8) -> wire::Addr {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = last;
    wire::Addr(a)
}

fn frag6(whole: &[u8], cuts: &[(usize, usize)]) -> Vec<Vec<u8>> {
    let data = &whole[54..];
    cuts.iter()
        .map(|&(off, len)| {
            let mut f = whole[..54].to_vec();
            f[14 + 6] = NEXTHDR_FRAGMENT;
            f[14 + 4..14 + 6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
            let more = off + len < data.len();
            let fo = off as u16 | u16::from(more);
            f.extend_from_slice(&[whole[14 + 6], 0]);
            f.extend_from_slice(&fo.to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            f.extend_from_slice(&data[off..off + len]);
            f
        })
        .collect()
}

/// Pushes `frames` in order; returns each outcome's name and, when a
/// datagram completed, the assembled frame.
fn run(
    d: &mut Defrag<usize>,
    frames: &[Vec<u8>],
    now: u64,
) -> (Vec<String>, Option<Vec<u8>>, Vec<usize>) {
    let mut names = vec![];
    let mut whole = None;
    let mut released = vec![];
    for (i, f) in frames.iter().enumerate() {
        let mut rel = |h: usize, _c: Cause| released.push(h);
        match d.push(now, read(f, 0), f.len(), i, &mut rel) {
            Push::Whole(h) => names.push(format!("whole {h}")),
            Push::Held => names.push("held".into()),
            Push::Dropped(h, c) => names.push(format!("dropped {h} {}", c.name())),
            Push::Complete(dg) => {
                names.push("complete".into());
                let mut out = Vec::new();
                d.assemble(dg, |h: &usize| frames[*h].as_slice(), &mut out)
                    .unwrap();
                let mut order = vec![];
                d.finish(dg, |h, _| order.push(h));
                names.push(format!("order {order:?}"));
                whole = Some(out);
            }
        }
    }
    (names, whole, released)
}

#[test]
fn ipv4_in_order_and_reversed_reassemble_to_the_datagram() {
    let dg = udp4(3000);
    let frags = frag4(&dg, &[(0, 1480), (1480, 1480), (2960, 48)]);
    let mut d = Defrag::new(Limits::default());
    let (names, whole, _) = run(&mut d, &frags, 0);
    assert_eq!(names, ["held", "held", "complete", "order [0, 1, 2]"]);
    assert_eq!(whole.unwrap(), dg);
    let rev: Vec<_> = frags.iter().rev().cloned().collect();
    let (names, whole, _) = run(&mut d, &rev, 0);
    assert_eq!(names, ["held", "held", "complete", "order [2, 1, 0]"]);
    assert_eq!(whole.unwrap(), dg);
    assert_eq!((d.stats.held, d.stats.reassembled), (6, 2));
    assert_eq!((d.fragments_held(), d.datagrams(), d.memory()), (0, 0, 0));
}

#[test]
fn a_tiny_first_fragment_still_gives_the_whole_header() {
    // A TCP SYN whose first fragment holds only 8 bytes of its header.
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&8192u16.to_be_bytes());
    let dg = ip4(6, &tcp, [192, 0, 2, 10], [198, 51, 100, 20]);
    let frags = frag4(&dg, &[(0, 8), (8, 12)]);
    assert!(
        wire::parse(&frags[0]).is_err(),
        "the first fragment alone cannot be parsed"
    );
    let mut d = Defrag::new(Limits::default());
    let (_, whole, _) = run(&mut d, &frags, 0);
    let whole = whole.unwrap();
    assert_eq!(whole, dg);
    let p = wire::parse(&whole).unwrap();
    assert!(matches!(p.l4, L4::Tcp(t) if t.flags == 0x02 && t.dst_port == 80));
    assert_eq!(p.frag, None);
}

#[test]
fn overlapping_fragments_drop_the_datagram() {
    let dg = udp4(3000);
    // The second overlaps the first by 8 bytes.
    let frags = frag4(&dg, &[(0, 1480), (1472, 1488), (2960, 48)]);
    let mut d = Defrag::new(Limits::default());
    let (names, whole, released) = run(&mut d, &frags, 0);
    assert_eq!(names, ["held", "dropped 1 frag_overlap", "held"]);
    assert!(whole.is_none());
    assert_eq!(released, [0]);
    assert_eq!((d.stats.overlap, d.stats.datagram_dropped), (1, 1));
    // The third started a new datagram, which never completes.
    assert_eq!(d.fragments_held(), 1);
    let mut rel = vec![];
    d.expire(30_000, &mut |h, c| rel.push((h, c)));
    assert_eq!(rel, [(2, Cause::Timeout)]);
    assert_eq!((d.fragments_held(), d.datagrams(), d.memory()), (0, 0, 0));
}

#[test]
fn ipv6_overlap_drops_the_datagram_too() {
    let dg = udp6(2000);
    let frags = frag6(&dg, &[(0, 1232), (1224, 784)]);
    let mut d = Defrag::new(Limits::default());
    let (names, whole, released) = run(&mut d, &frags, 0);
    assert_eq!(names, ["held", "dropped 1 frag_overlap"]);
    assert!(whole.is_none());
    assert_eq!(released, [0]);
}

#[test]
fn duplicates_are_dropped_and_never_complete_a_datagram() {
    let dg = udp4(3000);
    let f = frag4(&dg, &[(0, 1480), (1480, 1480), (2960, 48)]);
    // First and last, the last again: still two-thirds.
    let frames = vec![f[0].clone(), f[2].clone(), f[2].clone()];
    let mut d = Defrag::new(Limits::default());
    let (names, whole, _) = run(&mut d, &frames, 0);
    assert_eq!(names, ["held", "held", "dropped 2 frag_duplicate"]);
    assert!(whole.is_none());
    // The missing middle completes it.
    let mut frames2 = frames.clone();
    frames2.push(f[1].clone());
    let mut d = Defrag::new(Limits::default());
    let (names, whole, _) = run(&mut d, &frames2, 0);
    assert_eq!(
        names[3..],
        ["complete".to_string(), "order [0, 3, 1]".to_string()]
    );
    assert_eq!(whole.unwrap(), dg);
}

#[test]
fn a_fragment_across_two_runs_overlaps() {
    // Runs as the kernel makes them: [0,8) then [16,24) then [8,16) in the
    // middle are three runs; [0,16) again is not within one run: overlap.
    let dg = udp4(40 - 8);
    let f = frag4(&dg, &[(0, 8), (16, 8), (8, 8), (0, 16), (24, 16)]);
    let mut d = Defrag::new(Limits::default());
    let (names, _, _) = run(&mut d, &f, 0);
    assert_eq!(
        names,
        ["held", "held", "held", "dropped 3 frag_overlap", "held"]
    );
}

#[test]
fn ipv4_corrupt_ends_drop_the_datagram_ipv6_only_the_fragment() {
    let dg = udp4(3000);
    let f = frag4(&dg, &[(0, 1480), (2960, 48)]);
    // A second last fragment with a different end.
    let mut other_end = f[1].clone();
    let l = other_end.len();
    other_end.truncate(l - 8);
    other_end[16..18].copy_from_slice(&((20 + 40) as u16).to_be_bytes());
    other_end[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&other_end[14..34]);
    other_end[24..26].copy_from_slice(&c.to_be_bytes());
    let mut d = Defrag::new(Limits::default());
    let (names, _, released) = run(&mut d, &[f[0].clone(), f[1].clone(), other_end], 0);
    assert_eq!(names, ["held", "held", "dropped 2 frag_corrupt"]);
    assert_eq!(released, [0, 1]);

    let dg6 = udp6(2000);
    let f6 = frag6(&dg6, &[(0, 1232), (1232, 776)]);
    let mut short = f6[1].clone();
    let l = short.len();
    short.truncate(l - 8);
    short[18..20].copy_from_slice(&((8 + 768) as u16).to_be_bytes());
    let mut d = Defrag::new(Limits::default());
    let (names, whole, released) = run(&mut d, &[f6[1].clone(), short, f6[0].clone()], 0);
    assert_eq!(names[..3], ["held", "dropped 1 frag_corrupt", "complete"]);
    assert!(released.is_empty());
    assert_eq!(whole.unwrap().len(), dg6.len());
}

#[test]
fn ipv6_reassembly_removes_the_fragment_header() {
    let dg = udp6(3000);
    let frags = frag6(&dg, &[(1232, 1232), (0, 1232), (2464, 544)]);
    let mut d = Defrag::new(Limits::default());
    let (names, whole, _) = run(&mut d, &frags, 0);
    assert_eq!(names, ["held", "held", "complete", "order [1, 0, 2]"]);
    let whole = whole.unwrap();
    assert_eq!(whole, dg);
    let p = wire::parse(&whole).unwrap();
    assert!(crate::checksum::l4_checksum_ok(&whole, &p));
}

#[test]
fn ipv6_truncated_first_fragments_and_atomic_fragments_pass() {
    let dg = udp6(100);
    // The first fragment holds 0 bytes of the UDP header... 8 is the
    // minimum fragment size; make the UDP header start after a
    // destination options header that fills the first fragment.
    let mut with_opts = dg[..54].to_vec();
    with_opts[14 + 6] = NEXTHDR_DEST;
    let mut data = vec![17, 0, 1, 4, 0, 0, 0, 0];
    data.extend_from_slice(&dg[54..]);
    with_opts[14 + 4..14 + 6].copy_from_slice(&(data.len() as u16).to_be_bytes());
    with_opts.extend_from_slice(&data);
    let f = frag6(&with_opts, &[(0, 8), (8, data.len() - 8)]);
    let mut d = Defrag::new(Limits::default());
    let (names, _, _) = run(&mut d, &f, 0);
    assert_eq!(names[0], "whole 0");
    assert_eq!(d.stats.passed, 1);
    let atomic = frag6(&dg, &[(0, dg.len() - 54)]);
    assert_eq!(run(&mut d, &atomic, 0).0, ["whole 0"]);
    // A non-last fragment not a multiple of 8 long: the datagram goes, it passes.
    let odd = frag6(&dg, &[(0, 12)]);
    assert_eq!(run(&mut d, &odd, 0).0, ["whole 0"]);
}

#[test]
fn datagrams_time_out_and_memory_is_bounded() {
    let dg = udp4(3000);
    let f = frag4(&dg, &[(0, 1480), (1480, 1480), (2960, 48)]);
    let mut d = Defrag::new(Limits {
        high_thresh: 2000,
        ..Limits::default()
    });
    let released = std::cell::RefCell::new(vec![]);
    let mut rel = |h: usize, c: Cause| released.borrow_mut().push((h, c));
    assert!(matches!(
        d.push(0, read(&f[0], 0), 1500, 0, &mut rel),
        Push::Held
    ));
    assert!(matches!(
        d.push(0, read(&f[1], 0), 1500, 1, &mut rel),
        Push::Held
    ));
    // Over the threshold now: the next is dropped.
    assert!(matches!(
        d.push(0, read(&f[2], 0), 1500, 2, &mut rel),
        Push::Dropped(2, Cause::Memory)
    ));
    assert_eq!(d.expire(29_999, &mut rel), 0);
    assert!(released.borrow().is_empty());
    assert_eq!(d.expire(30_000, &mut rel), 1, "one datagram");
    assert_eq!(
        *released.borrow(),
        [(0, Cause::Timeout), (1, Cause::Timeout)]
    );
    // A fragment of an expired datagram starts a new one.
    let mut d = Defrag::new(Limits::default());
    let mut rel = |_: usize, _: Cause| {};
    assert!(matches!(
        d.push(0, read(&f[0], 0), 100, 0, &mut rel),
        Push::Held
    ));
    assert!(matches!(
        d.push(30_000, read(&f[1], 0), 100, 1, &mut rel),
        Push::Held
    ));
    assert_eq!((d.stats.timeout, d.fragments_held()), (1, 1));
    // Zones keep datagrams apart.
    assert!(matches!(
        d.push(30_000, read(&f[0], 7), 100, 2, &mut rel),
        Push::Held
    ));
    assert_eq!(d.datagrams(), 2);
}

#[test]
fn refragmenting_a_translated_datagram_keeps_the_fragment_sizes() {
    let dg = udp4(3000);
    let frags = frag4(&dg, &[(0, 1480), (1480, 1480), (2960, 48)]);
    let mut d = Defrag::new(Limits::default());
    let mut rel = |_: usize, _: Cause| {};
    let mut done = None;
    for (i, f) in frags.iter().enumerate() {
        if let Push::Complete(x) = d.push(0, read(f, 0), f.len(), i, &mut rel) {
            done = Some(x);
        }
    }
    let dgm = done.unwrap();
    let mut whole = Vec::new();
    let at = d
        .assemble(dgm, |h: &usize| frags[*h].as_slice(), &mut whole)
        .unwrap();
    // Translate it as source NAT would: new source address and port.
    let translated = {
        let udp = whole[34..].to_vec();
        let mut u = udp.clone();
        u[0..2].copy_from_slice(&61000u16.to_be_bytes());
        ip4(17, &u, [203, 0, 113, 5], [198, 51, 100, 20])
    };
    let mut out = frags.clone();
    d.finish(dgm, |h, place| {
        refragment(&translated, &at, &mut out[h], &place)
    });
    for (o, f) in out.iter().zip(&frags) {
        assert_eq!(o.len(), f.len());
        assert_eq!(checksum::checksum(&o[14..34]), 0, "IPv4 header checksum");
        assert_eq!(&o[14 + 12..14 + 16], &[203, 0, 113, 5]);
    }
    // Reassembled again, the fragments are the translated datagram.
    let mut d2 = Defrag::new(Limits::default());
    let (_, again, _) = run(&mut d2, &out, 0);
    assert_eq!(again.unwrap(), translated);
}

#[test]
fn any_order_with_repeats_reassembles_the_datagram_exactly() {
    // Random cuts at multiples of 8, random order, some fragments twice:
    // every set completes, to the exact datagram, whatever the order.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for round in 0..300 {
        let v6 = round % 2 == 1;
        let dg = if v6 {
            udp6(1000 + rnd(3000))
        } else {
            udp4(1000 + rnd(3000))
        };
        let data_len = dg.len() - if v6 { 54 } else { 34 };
        let mut cuts = vec![];
        let mut off = 0;
        while off < data_len {
            let n = (8 * (1 + rnd(180))).min(data_len - off);
            cuts.push((off, n));
            off += n;
        }
        let frags = if v6 {
            frag6(&dg, &cuts)
        } else {
            frag4(&dg, &cuts)
        };
        let mut order: Vec<usize> = (0..frags.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rnd(i + 1));
        }
        for _ in 0..rnd(3) {
            let i = rnd(order.len());
            let at = rnd(order.len() + 1);
            order.insert(at, order[i]);
        }
        let frames: Vec<Vec<u8>> = order.iter().map(|&i| frags[i].clone()).collect();
        let mut d = Defrag::new(Limits::default());
        let (names, whole, released) = run(&mut d, &frames, 0);
        assert!(released.is_empty(), "round {round}: {names:?}");
        let completes = names.iter().filter(|n| *n == "complete").count();
        if frags.len() == 1 {
            // One piece with no more fragments: no fragment at all (IPv4),
            // an atomic fragment (IPv6).
            assert_eq!(completes, 0);
            continue;
        }
        // A repeat after the set completed starts a new datagram (as in
        // the kernel); repeats of all of it complete it again.
        assert!(completes >= 1, "round {round}: {names:?}");
        assert_eq!(whole.unwrap(), dg, "round {round}");
    }
}

#[test]
fn each_datagram_expires_at_its_own_time() {
    // Datagrams started at 0 and at 10 s: the first goes at 30 s, the
    // second at 40 s, not before (the scan waits for the earliest deadline).
    let a = frag4(&udp4(3000), &[(0, 1480), (1480, 1528)]);
    let mut b = a.clone();
    // Another datagram id for b.
    b[0][18..20].copy_from_slice(&[0x56, 0x78]);
    b[0][24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&b[0][14..34]);
    b[0][24..26].copy_from_slice(&c.to_be_bytes());
    let mut d = Defrag::new(Limits::default());
    let released = std::cell::RefCell::new(vec![]);
    let mut rel = |h: usize, c: Cause| released.borrow_mut().push((h, c));
    assert!(matches!(
        d.push(0, read(&a[0], 0), 100, 0, &mut rel),
        Push::Held
    ));
    assert!(matches!(
        d.push(10_000, read(&b[0], 0), 100, 1, &mut rel),
        Push::Held
    ));
    assert_eq!(d.datagrams(), 2);
    assert_eq!(d.expire(29_999, &mut rel), 0);
    assert_eq!(d.expire(30_000, &mut rel), 1);
    assert_eq!(*released.borrow(), [(0, Cause::Timeout)]);
    assert_eq!(d.expire(39_999, &mut rel), 0);
    assert_eq!(d.expire(40_000, &mut rel), 1);
    assert_eq!(d.datagrams(), 0);
}
