//! Whole-frame tests: real captures from `tests/pcaps/shared`,
//! hand-built frames, and no-panic properties.

use super::*;
use crate::checksum::l4_checksum_ok;

/// Reads a classic pcap (24-byte global header, 16-byte record headers; either
/// byte order, micro- or nanosecond magic) into its frames.
pub(crate) fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 24, "pcap global header");
    let magic: [u8; 4] = bytes[..4].try_into().unwrap();
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a classic pcap: magic {magic:02x?}"),
    };
    let u32_at = |off: usize| {
        let b: [u8; 4] = bytes[off..off + 4].try_into().unwrap();
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "link type Ethernet");
    let mut frames = vec![];
    let mut off = 24;
    while off < bytes.len() {
        let caplen = u32_at(off + 8) as usize;
        frames.push(bytes[off + 16..off + 16 + caplen].to_vec());
        off += 16 + caplen;
    }
    frames
}

/// The shared captures, committed in the repository (tests/pcaps/shared).
fn pcap_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pcaps/shared");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    Some(dir)
}

/// The frames of one capture.
fn capture(dir: &std::path::Path, name: &str) -> Vec<Vec<u8>> {
    read_pcap(&std::fs::read(dir.join(name)).unwrap())
}

/// Every capture in the shared directory, or none where it is not installed
/// (the frames under `fuzz/corpus` cover the same cases hermetically).
fn all_captures() -> Vec<(String, Vec<Vec<u8>>)> {
    let Some(dir) = pcap_dir() else {
        eprintln!("shared/pcaps not found: capture-wide checks skipped");
        return vec![];
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| (n.clone(), capture(&dir, &n)))
        .collect()
}

/// A frame of the seed corpus, extracted from `<capture>.pcap`, frame `<n>` (1-based).
macro_rules! frame {
    ($name:literal) => {
        include_bytes!(concat!("../../../fuzz/corpus/parse/", $name, ".bin")) as &[u8]
    };
}

/// Every seed-corpus frame, for the property tests.
const CORPUS: &[&[u8]] = &[
    frame!("vlan-qinq-http-1"),
    frame!("vlan-tcp-same-tuple-6"),
    frame!("vlan-icmp-echo-arp-5"),
    frame!("ipv6-ext-headers-http-4"),
    frame!("ipv6-ext-headers-http-13"),
    frame!("ipv6-ext-headers-http-23"),
    frame!("ipv6-ext-headers-http-33"),
    frame!("ipv6-frag-dns-6"),
    frame!("ipv6-frag-dns-7"),
    frame!("icmp-errors-quoted-1"),
    frame!("icmp-errors-quoted-3"),
    frame!("icmpv6-errors-quoted-2"),
    frame!("icmpv6-errors-quoted-3"),
    frame!("icmpv6-traceroute-errors-11"),
    frame!("checksums-good-bad-3"),
    frame!("checksums-good-bad-14"),
    frame!("checksums-good-bad-22"),
    frame!("sctp-association-1"),
    frame!("pptp-control-gre-16"),
    frame!("gre-ipv4-tunnel-1"),
    frame!("ipv4-frag-overlap-tcp-2"),
    frame!("tcp-smtp-icmp-frag-needed-26"),
    frame!("dns-mixed-v4v6-frag-53"),
    frame!("malformed-truncated-14"),
];

/// Invariants of a successful parse that the engine indexes the frame with.
fn check_invariants(frame: &[u8], p: &Parsed) {
    let l3_end = usize::from(p.l3_offset) + usize::from(p.l3_len);
    assert!(l3_end <= frame.len());
    assert!(p.l3_offset < p.l4_offset && usize::from(p.l4_offset) <= l3_end);
    assert_eq!(usize::from(p.vlan_count) * 4 + 14, usize::from(p.l3_offset));
    match p.l4 {
        L4::Tcp(t) => {
            let (start, end) = (usize::from(t.options.0), usize::from(t.options.1));
            assert!(start == usize::from(p.l4_offset) + 20 && start <= end && end <= l3_end);
            assert_eq!(end + usize::from(t.payload_len), l3_end);
        }
        L4::Icmp(IcmpInfo {
            inner: Some(inner),
            is_error,
            ..
        }) => {
            assert!(is_error);
            assert_eq!(usize::from(inner.l3_offset), usize::from(p.l4_offset) + 8);
            assert!(inner.l3_offset < inner.l4_offset && usize::from(inner.l4_offset) <= l3_end);
        }
        L4::None => assert!(p.frag.is_some_and(|f| f.offset != 0)),
        _ => {}
    }
}

#[test]
fn qinq_http() {
    let f = frame!("vlan-qinq-http-1");
    let p = parse(f).unwrap();
    assert_eq!(
        (p.vlan_count, p.vlan_ids, p.l3_offset, p.l4_offset),
        (2, [0, 0], 22, 42)
    );
    assert_eq!(
        (p.family, p.proto, p.ttl, p.frag),
        (Family::V4, 6, 64, None)
    );
    let L4::Tcp(t) = p.l4 else {
        panic!("{:?}", p.l4)
    };
    assert_eq!(
        (t.src_port, t.dst_port, t.seq, t.ack),
        (59856, 80, 4263588410, 0)
    );
    assert_eq!(
        (t.flags, t.window, t.header_len, t.options),
        (tcp_flags::SYN, 65535, 44, (62, 86))
    );
    assert!(l4_checksum_ok(f, &p));
    check_invariants(f, &p);

    let p = parse(frame!("vlan-qinq-http-4")).unwrap();
    let L4::Tcp(t) = p.l4 else { panic!() };
    assert_eq!(
        (t.flags, t.payload_len),
        (tcp_flags::PSH | tcp_flags::ACK, 136)
    );
}

#[test]
fn same_tuple_in_three_vlan_settings() {
    let untagged = parse(frame!("vlan-tcp-same-tuple-1")).unwrap();
    let single = parse(frame!("vlan-tcp-same-tuple-2")).unwrap();
    let qinq = parse(frame!("vlan-tcp-same-tuple-6")).unwrap();
    assert_eq!(
        (untagged.vlan_count, untagged.vlan_ids, untagged.l3_offset),
        (0, [0, 0], 14)
    );
    assert_eq!(
        (single.vlan_count, single.vlan_ids, single.l3_offset),
        (1, [42, 0], 18)
    );
    assert_eq!(
        (qinq.vlan_count, qinq.vlan_ids, qinq.l3_offset),
        (2, [10, 20], 22)
    );
    for p in [&single, &qinq] {
        assert_eq!(
            (p.src, p.dst, p.proto),
            (untagged.src, untagged.dst, untagged.proto)
        );
    }
}

#[test]
fn vlan_arp_is_not_ip_and_vlan_ping_parses() {
    assert_eq!(
        parse(frame!("vlan-icmp-echo-arp-1")),
        Err(ParseError::NotIp)
    );
    assert_eq!(
        parse(frame!("mixed-web-browsing-4")),
        Err(ParseError::NotIp)
    );
    let p = parse(frame!("vlan-icmp-echo-arp-5")).unwrap();
    assert_eq!(p.vlan_count, 1);
    let L4::Icmp(i) = p.l4 else { panic!() };
    assert_eq!(
        (i.icmp_type, i.code, i.id, i.is_error, i.inner),
        (8, 0, 1, false, None)
    );
}

#[test]
fn ipv6_extension_headers() {
    // Destination options, hop-by-hop, routing (segments left 0) before TCP.
    for (f, first) in [
        (frame!("ipv6-ext-headers-http-4"), 60),
        (frame!("ipv6-ext-headers-http-23"), 0),
        (frame!("ipv6-ext-headers-http-33"), 43),
    ] {
        let p = parse(f).unwrap();
        assert_eq!(f[14 + 6], first);
        assert_eq!((p.family, p.proto, p.frag), (Family::V6, 6, None));
        assert!(p.l4_offset > 54, "extension headers skipped");
        assert!(matches!(p.l4, L4::Tcp(_)));
        assert!(l4_checksum_ok(f, &p));
        check_invariants(f, &p);
    }
    // An atomic fragment: a fragment header with offset 0 and M clear is a whole
    // datagram, so its checksum is checked (and this SYN's is good).
    let f = frame!("ipv6-ext-headers-http-13");
    let p = parse(f).unwrap();
    assert_eq!(
        p.frag,
        Some(Frag {
            id: 0,
            offset: 0,
            more: false
        })
    );
    let L4::Tcp(t) = p.l4 else { panic!() };
    assert_eq!(
        (t.src_port, t.dst_port, t.flags),
        (59694, 80, tcp_flags::SYN)
    );
    assert_eq!(p.l4_offset, 14 + 40 + 8);
    assert!(l4_checksum_ok(f, &p));
    // A data segment with a bad checksum (tshark agrees).
    let f = frame!("ipv6-ext-headers-http-7");
    assert!(!l4_checksum_ok(f, &parse(f).unwrap()));
}

#[test]
fn ipv6_fragmented_dns() {
    let f = frame!("ipv6-frag-dns-6");
    let p = parse(f).unwrap();
    assert_eq!(
        p.frag,
        Some(Frag {
            id: 2,
            offset: 0,
            more: true
        })
    );
    assert_eq!(
        (p.proto, p.l4),
        (
            17,
            L4::Udp {
                src_port: 53,
                dst_port: 51851
            }
        )
    );
    assert!(
        l4_checksum_ok(f, &p),
        "a first fragment cannot be checked alone"
    );

    let p = parse(frame!("ipv6-frag-dns-7")).unwrap();
    assert_eq!(
        p.frag,
        Some(Frag {
            id: 2,
            offset: 1432,
            more: true
        })
    );
    assert_eq!((p.proto, p.l4, p.l4_offset), (17, L4::None, 14 + 40 + 8));

    let p = parse(frame!("ipv6-frag-dns-4")).unwrap();
    assert_eq!(
        (p.frag, p.l4),
        (
            Some(Frag {
                id: 1,
                offset: 2896,
                more: false
            }),
            L4::None
        )
    );
}

#[test]
fn ipv4_fragments() {
    // First fragment of an overlapping-fragment evasion: holds the TCP header.
    let f = frame!("ipv4-frag-overlap-tcp-2");
    let p = parse(f).unwrap();
    assert_eq!(
        p.frag,
        Some(Frag {
            id: 0,
            offset: 0,
            more: true
        })
    );
    let L4::Tcp(t) = p.l4 else { panic!() };
    assert_eq!((t.src_port, t.dst_port, t.payload_len), (7790, 80, 4));
    assert!(l4_checksum_ok(f, &p));
    let p = parse(frame!("ipv4-frag-overlap-tcp-3")).unwrap();
    assert_eq!(
        (p.frag, p.l4, p.proto),
        (
            Some(Frag {
                id: 0,
                offset: 48,
                more: true
            }),
            L4::None,
            6
        )
    );

    let p = parse(frame!("dns-mixed-v4v6-frag-53")).unwrap();
    assert_eq!(
        p.frag,
        Some(Frag {
            id: 53502,
            offset: 0,
            more: true
        })
    );
    assert_eq!(
        p.l4,
        L4::Udp {
            src_port: 53,
            dst_port: 56680
        }
    );
    let p = parse(frame!("dns-mixed-v4v6-frag-54")).unwrap();
    assert_eq!(
        (p.frag, p.l4),
        (
            Some(Frag {
                id: 53502,
                offset: 1480,
                more: false
            }),
            L4::None
        )
    );
}

fn icmp_of(f: &[u8]) -> IcmpInfo {
    let p = parse(f).unwrap();
    check_invariants(f, &p);
    assert!(l4_checksum_ok(f, &p));
    match p.l4 {
        L4::Icmp(i) => i,
        other => panic!("{other:?}"),
    }
}

#[test]
fn icmp_errors_quoted() {
    let v4 = |a, b, c, d| Addr::from_v4([a, b, c, d]);
    // Port unreachable quoting a DNS reply.
    let i = icmp_of(frame!("icmp-errors-quoted-1"));
    assert_eq!((i.icmp_type, i.code, i.is_error), (3, 3, true));
    let inner = i.inner.unwrap();
    assert_eq!(
        (inner.family, inner.proto, inner.src_port, inner.dst_port),
        (Family::V4, 17, 53, 59207)
    );
    assert_eq!(
        (inner.src, inner.dst),
        (v4(192, 0, 2, 1), v4(192, 0, 2, 102))
    );
    assert_eq!((inner.l3_offset, inner.l4_offset), (42, 62));
    // TTL exceeded quoting UDP.
    let inner = icmp_of(frame!("icmp-errors-quoted-2")).inner.unwrap();
    assert_eq!(
        (inner.proto, inner.src_port, inner.dst_port),
        (17, 30000, 13000)
    );
    assert_eq!(
        (inner.src, inner.dst),
        (v4(198, 51, 100, 2), v4(198, 51, 100, 1))
    );
    // Net unreachable quoting a bare IP header of protocol 0: a portless tuple,
    // as the kernel's generic tracker would look up.
    let inner = icmp_of(frame!("icmp-errors-quoted-3")).inner.unwrap();
    assert_eq!(
        (inner.proto, inner.src_port, inner.dst_port, inner.l4_offset),
        (0, 0, 0, 62)
    );
    // Unreachable with nothing quoted.
    let i = icmp_of(frame!("icmp-errors-quoted-4"));
    assert_eq!((i.icmp_type, i.is_error, i.inner), (3, true, None));
    // Fragmentation needed quoting an SMTP segment.
    let i = icmp_of(frame!("tcp-smtp-icmp-frag-needed-26"));
    let inner = i.inner.unwrap();
    assert_eq!((i.icmp_type, i.code), (3, 4));
    assert_eq!((inner.proto, inner.src_port, inner.dst_port), (6, 1470, 25));
    assert_eq!(
        (inner.src, inner.dst),
        (v4(192, 0, 2, 4), v4(198, 51, 100, 153))
    );
}

#[test]
fn icmpv6_errors_quoted() {
    let ll = |last: [u8; 2]| {
        let mut a = [0u8; 16];
        a[0] = 0xfe;
        a[1] = 0x80;
        a[14..].copy_from_slice(&last);
        Addr(a)
    };
    // Quoting a packet whose extension headers end in No Next Header: no tuple.
    let i = icmp_of(frame!("icmpv6-errors-quoted-1"));
    assert_eq!((i.icmp_type, i.is_error, i.inner), (1, true, None));
    // Quoting UDP behind extension headers.
    let inner = icmp_of(frame!("icmpv6-errors-quoted-2")).inner.unwrap();
    assert_eq!(
        (inner.family, inner.proto, inner.src_port, inner.dst_port),
        (Family::V6, 17, 30000, 13000)
    );
    assert_eq!((inner.src, inner.dst), (ll([0xbe, 0xef]), ll([0xde, 0xad])));
    assert_eq!(inner.l3_offset, 62);
    // Quoted extension header cut short; nothing quoted at all.
    for f in [
        frame!("icmpv6-errors-quoted-3"),
        frame!("icmpv6-errors-quoted-4"),
    ] {
        let i = icmp_of(f);
        assert_eq!((i.icmp_type, i.is_error, i.inner), (1, true, None));
    }
    // Packet too big, time exceeded, parameter problem, each quoting UDP.
    for (f, t) in [
        (frame!("icmpv6-errors-quoted-5"), 2),
        (frame!("icmpv6-errors-quoted-6"), 3),
        (frame!("icmpv6-errors-quoted-7"), 4),
    ] {
        let i = icmp_of(f);
        let inner = i.inner.unwrap();
        assert_eq!(
            (i.icmp_type, inner.proto, inner.src_port, inner.dst_port),
            (t, 17, 30000, 13000)
        );
    }
    // traceroute6: port unreachable quoting the UDP probe.
    let inner = icmp_of(frame!("icmpv6-traceroute-errors-11"))
        .inner
        .unwrap();
    assert_eq!(
        (inner.proto, inner.src_port, inner.dst_port, inner.l4_offset),
        (17, 41077, 33435, 102)
    );
}

#[test]
fn other_protocols() {
    let p = parse(frame!("sctp-association-1")).unwrap();
    let want = L4::Sctp {
        src_port: 7,
        dst_port: 7,
        vtag: 0,
        chunk_map: 1 << 1,
        first_chunk: 1,
        first_flags: 0,
    };
    assert_eq!(p.l4, want, "INIT");
    let p = parse(frame!("sctp-association-5")).unwrap();
    assert!(matches!(
        p.l4,
        L4::Sctp {
            vtag: 3760,
            chunk_map: 1,
            first_chunk: 0,
            first_flags: 7,
            ..
        }
    ));

    let f = frame!("pptp-control-gre-16");
    let p = parse(f).unwrap();
    assert_eq!(
        (p.proto, p.l4),
        (
            47,
            L4::Gre {
                version: 1,
                protocol: 0x880b,
                call_id: 0
            }
        )
    );
    assert!(l4_checksum_ok(f, &p));
    let p = parse(frame!("gre-ipv4-tunnel-1")).unwrap();
    assert_eq!(
        p.l4,
        L4::Gre {
            version: 0,
            protocol: 0x0800,
            call_id: 0
        }
    );
    let p = parse(frame!("esp-ipv4-1")).unwrap();
    assert_eq!((p.proto, p.l4), (50, L4::Other));
}

/// What conntrack checks differs from the RFC only where the kernel's does,
/// on the IPv6 frames with a Routing header or a Home Address: the kernel's
/// `nf_ip6_checksum` sums over the fixed header's addresses, RFC 8200 /
/// RFC 6275 (and tshark) over the final destination / home address. Of this
/// capture's variants, 5 are good only to the RFC and 2 only to the kernel
/// (their checksums were made over the fixed header); IPv4 has one
/// pseudo-header. `ctgate replay` then counts 15 INVALID, the kernel's
/// `invalid` 11 + `error` 4 (tests/kernel-ref).
#[test]
fn conntrack_checksums_are_the_kernels_on_routing_and_home_address_frames() {
    let frames = all_captures()
        .into_iter()
        .find(|(name, _)| name.ends_with("checksums-good-bad.pcap"))
        .expect("the capture")
        .1;
    let (mut rfc_only, mut kernel_only) = (0, 0);
    for f in &frames {
        let Ok(p) = parse(f) else { continue };
        let rfc = l4_checksum_ok(f, &p);
        let kernel = crate::checksum::l4_checksum_ok_conntrack(f, &p);
        if p.family == crate::tuple::Family::V4 {
            assert_eq!(rfc, kernel, "IPv4 has one pseudo-header");
        }
        rfc_only += usize::from(rfc && !kernel);
        kernel_only += usize::from(kernel && !rfc);
    }
    assert_eq!((rfc_only, kernel_only), (5, 2));
}

#[test]
fn checksums_good_bad_match_tshark() {
    // tshark's verdicts (-o ip/tcp/udp.check_checksum:TRUE) for the 24 frames:
    // Some(true) good, Some(false) bad, None: dropped for a bad IPv4 header checksum.
    #[rustfmt::skip]
    let want = [
        Some(true), Some(false), Some(true), Some(false), Some(true), Some(false), // v6 udp, v6 route0 udp, v4 tcp
        Some(true), Some(false), None, Some(true), Some(false), Some(false),      // v4 udp, bad ip, route0 tcp, v6 tcp
        Some(true), Some(true), Some(false), Some(true), Some(false), Some(true), // v6 tcp, hoa udp, hoa tcp, icmp6
        Some(false), Some(true), Some(false), Some(true), Some(false), Some(false), // icmp6, route0 icmp6, icmp, syn-bad
    ];
    let frames: [&[u8]; 24] = [
        frame!("checksums-good-bad-1"),
        frame!("checksums-good-bad-2"),
        frame!("checksums-good-bad-3"),
        frame!("checksums-good-bad-4"),
        frame!("checksums-good-bad-5"),
        frame!("checksums-good-bad-6"),
        frame!("checksums-good-bad-7"),
        frame!("checksums-good-bad-8"),
        frame!("checksums-good-bad-9"),
        frame!("checksums-good-bad-10"),
        frame!("checksums-good-bad-11"),
        frame!("checksums-good-bad-12"),
        frame!("checksums-good-bad-13"),
        frame!("checksums-good-bad-14"),
        frame!("checksums-good-bad-15"),
        frame!("checksums-good-bad-16"),
        frame!("checksums-good-bad-17"),
        frame!("checksums-good-bad-18"),
        frame!("checksums-good-bad-19"),
        frame!("checksums-good-bad-20"),
        frame!("checksums-good-bad-21"),
        frame!("checksums-good-bad-22"),
        frame!("checksums-good-bad-23"),
        frame!("checksums-good-bad-24"),
    ];
    for (n, (f, want)) in frames.iter().zip(want).enumerate() {
        let got = match parse(f) {
            Ok(p) => Some(l4_checksum_ok(f, &p)),
            Err(e) => {
                assert_eq!(e, ParseError::BadIpChecksum, "frame {}", n + 1);
                None
            }
        };
        assert_eq!(got, want, "frame {}", n + 1);
    }
    // SNMP requests carry offload-style bad UDP checksums, the replies good ones.
    for (f, want) in [
        (frame!("udp-snmp-walk-stream-1"), false),
        (frame!("udp-snmp-walk-stream-2"), true),
    ] {
        assert_eq!(l4_checksum_ok(f, &parse(f).unwrap()), want);
    }
    let f = frame!("dns-mixed-v4v6-frag-3");
    assert!(!l4_checksum_ok(f, &parse(f).unwrap()));
}

#[test]
fn malformed_truncated() {
    use ParseError::*;
    // Checked against tshark's dissection of each frame.
    let want = [
        BadIpTotalLen, // IPv4 total length 65535, caplen 42
        BadIpTotalLen, // IPv6 payload length 20, nothing after the header
        TruncatedIp,   // IPv6 header cut at 34 bytes
        TruncatedIp,   // 6 bytes of IPv4 header
        BadIpTotalLen, // ICMP echo, caplen 80 < 98 (x6)
        BadIpTotalLen,
        BadIpTotalLen,
        BadIpTotalLen,
        BadIpTotalLen,
        BadIpTotalLen,
        TruncatedEthernet, // 8 bytes
        TruncatedIp,       // IHL 15 with 20 bytes present
        TruncatedIp,       // IHL 15, cut at 20
        BadIpChecksum,     // ICMP with a bad IPv4 header checksum
    ];
    let frames: [&[u8]; 14] = [
        frame!("malformed-truncated-1"),
        frame!("malformed-truncated-2"),
        frame!("malformed-truncated-3"),
        frame!("malformed-truncated-4"),
        frame!("malformed-truncated-5"),
        frame!("malformed-truncated-6"),
        frame!("malformed-truncated-7"),
        frame!("malformed-truncated-8"),
        frame!("malformed-truncated-9"),
        frame!("malformed-truncated-10"),
        frame!("malformed-truncated-11"),
        frame!("malformed-truncated-12"),
        frame!("malformed-truncated-13"),
        frame!("malformed-truncated-14"),
    ];
    for (n, (f, want)) in frames.iter().zip(want).enumerate() {
        assert_eq!(parse(f), Err(want), "frame {}", n + 1);
    }
    // A snaplen-truncated TCP segment: the IP total length exceeds the capture.
    assert_eq!(parse(frame!("tcp-truncated-snaplen-1")), Err(BadIpTotalLen));
}

/// Frames where tshark finds a bad TCP/UDP/ICMP/ICMPv6 checksum, over all the
/// shared captures (non-first fragments excluded: tshark judges the reassembly).
fn tshark_bad_checksums(name: &str, n: usize) -> bool {
    match name {
        "checksums-good-bad.pcap" => [2, 4, 6, 8, 11, 12, 15, 17, 19, 21, 23, 24].contains(&n),
        "dns-mixed-v4v6-frag.pcap" => [
            3, 5, 6, 7, 13, 16, 44, 61, 65, 66, 68, 70, 72, 74, 76, 77, 79, 81, 82, 83, 88,
        ]
        .contains(&n),
        "ipv6-ext-headers-http.pcap" => [7, 18, 28, 38].contains(&n),
        "tcp-retrans-ooo-gaps.pcap" => [9, 16, 20, 31, 64, 68, 79, 91, 97, 112].contains(&n),
        "udp-snmp-walk-stream.pcap" => n % 2 == 1,
        _ => false,
    }
}

#[test]
fn all_captures_parse_or_fail_cleanly_and_checksums_match_tshark() {
    let mut frames_seen = 0;
    let mut errors = std::collections::BTreeMap::<&str, usize>::new();
    for (name, frames) in all_captures() {
        for (i, f) in frames.iter().enumerate() {
            frames_seen += 1;
            match parse(f) {
                Ok(p) => {
                    check_invariants(f, &p);
                    let ok = l4_checksum_ok(f, &p);
                    if p.frag.is_some_and(|fr| fr.more || fr.offset != 0) {
                        assert!(ok, "{name} frame {}: fragments are not checked", i + 1);
                    } else {
                        assert_eq!(
                            !ok,
                            tshark_bad_checksums(&name, i + 1),
                            "{name} frame {}",
                            i + 1
                        );
                    }
                }
                Err(e) => *errors.entry(e.name()).or_default() += 1,
            }
        }
    }
    if frames_seen == 0 {
        return;
    }
    assert_eq!(frames_seen, 2915, "README: 36 files, 2915 packets");
    let want = [
        ("bad_ip_checksum", 2),
        ("bad_ip_total_len", 25),
        ("not_ip", 519),
        ("truncated_ethernet", 1),
        ("truncated_ip", 4),
    ];
    assert_eq!(errors.into_iter().collect::<Vec<_>>(), want);
}

// Hand-built frames for what the captures do not show.

fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn v4_frame(proto: u8, flags_frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut ip = super::ipv4::tests::header((20 + l4.len()) as u16, proto, flags_frag, &[]);
    ip.extend_from_slice(l4);
    eth(0x0800, &ip)
}

fn v6_frame(next: u8, payload: &[u8]) -> Vec<u8> {
    eth(0x86dd, &super::ipv6::tests::packet(next, payload))
}

/// Fills in the L4 checksum at `at` (offset in the L4 header) of a frame.
fn with_l4_checksum(mut f: Vec<u8>, at: usize) -> Vec<u8> {
    let p = parse(&f).unwrap();
    let l4 = usize::from(p.l4_offset);
    let end = usize::from(p.l3_offset) + usize::from(p.l3_len);
    f[l4 + at..l4 + at + 2].copy_from_slice(&[0, 0]);
    let c = match p.l4 {
        L4::Icmp(_) if p.family == Family::V4 => crate::checksum::checksum(&f[l4..end]),
        // UDP-Lite: the whole length in the pseudo-header, the sum over the
        // coverage, and UDP's protocol number (17) in the pseudo-header, as
        // Linux's conntrack checks it (see checksum.rs).
        L4::Udp { .. } if p.proto == 136 => {
            use crate::checksum::{combine, pseudo_header, sum};
            let coverage = match usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]])) {
                0 => end - l4,
                c => c,
            };
            let pseudo = pseudo_header(p.family, &p.src, &p.dst, 17, (end - l4) as u32);
            !combine(pseudo, sum(&f[l4..l4 + coverage]))
        }
        _ => crate::checksum::l4_checksum(p.family, &p.src, &p.dst, p.proto, &f[l4..end]),
    };
    f[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

const UDP: [u8; 12] = [
    0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd',
];

#[test]
fn udp_zero_checksum_is_no_checksum_for_v4_and_v6() {
    // udp_error accepts checksum 0 as "no checksum" over IPv6 too (the kernel's
    // conntrack, unlike its IPv6 stack: scenarios/bad-checksums.pcap).
    let f = v4_frame(17, 0, &UDP);
    assert!(l4_checksum_ok(&f, &parse(&f).unwrap()));
    let f = v6_frame(17, &UDP);
    assert!(l4_checksum_ok(&f, &parse(&f).unwrap()));
    let f = with_l4_checksum(v6_frame(17, &UDP), 6);
    assert!(l4_checksum_ok(&f, &parse(&f).unwrap()));
}

#[test]
fn checksum_ignores_ethernet_padding() {
    let mut f = with_l4_checksum(v4_frame(17, 0, &UDP), 6);
    f.extend_from_slice(&[0x55; 18]);
    let p = parse(&f).unwrap();
    assert_eq!(p.l3_len, 32);
    assert!(l4_checksum_ok(&f, &p));
    let last = f.len() - 19;
    f[last] ^= 1;
    assert!(
        !l4_checksum_ok(&f, &parse(&f).unwrap()),
        "the payload is covered"
    );
}

#[test]
fn udplite_checksum_covers_its_coverage() {
    let mut seg = UDP.to_vec();
    seg[5] = 8; // coverage: the header only
    let f = with_l4_checksum(v6_frame(136, &seg), 6);
    let p = parse(&f).unwrap();
    assert_eq!(
        (p.proto, p.l4),
        (
            136,
            L4::Udp {
                src_port: 12345,
                dst_port: 53
            }
        )
    );
    assert!(l4_checksum_ok(&f, &p));
    let mut g = f.clone();
    *g.last_mut().unwrap() ^= 0xff;
    assert!(
        l4_checksum_ok(&g, &parse(&g).unwrap()),
        "payload outside the coverage"
    );
    let mut g = f.clone();
    g[14 + 40] ^= 1;
    assert!(!l4_checksum_ok(&g, &parse(&g).unwrap()));
    // The checksum RFC 3828 gives (UDP-Lite's 136 in the pseudo-header) is
    // not the one conntrack accepts.
    let mut rfc = seg.clone();
    rfc[6..8].fill(0);
    let f_rfc = v6_frame(136, &rfc);
    let p_rfc = parse(&f_rfc).unwrap();
    let c = !crate::checksum::combine(
        crate::checksum::pseudo_header(Family::V6, &p_rfc.src, &p_rfc.dst, 136, 12),
        crate::checksum::sum(&rfc[..8]),
    );
    rfc[6..8].copy_from_slice(&c.to_be_bytes());
    let f_rfc = v6_frame(136, &rfc);
    assert!(!l4_checksum_ok(&f_rfc, &parse(&f_rfc).unwrap()));
    // A zero checksum is invalid for UDP-Lite.
    let f = v4_frame(136, 0, &seg);
    assert!(!l4_checksum_ok(&f, &parse(&f).unwrap()));
    seg[5] = 13;
    assert_eq!(parse(&v4_frame(136, 0, &seg)), Err(ParseError::BadUdpLen));
}

#[test]
fn icmp_checksums() {
    let echo = [8, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3];
    let f = with_l4_checksum(v4_frame(1, 0, &echo), 2);
    assert!(l4_checksum_ok(&f, &parse(&f).unwrap()));
    let mut g = f.clone();
    *g.last_mut().unwrap() ^= 0x80;
    assert!(!l4_checksum_ok(&g, &parse(&g).unwrap()));
    // ICMPv6 covers the pseudo-header: the same bytes without it are wrong.
    let echo6 = [128, 0, 0, 0, 0x12, 0x34, 0, 1];
    let f = with_l4_checksum(v6_frame(58, &echo6), 2);
    assert!(l4_checksum_ok(&f, &parse(&f).unwrap()));
    let mut g = f.clone();
    g[14 + 8] ^= 1; // source address
    assert!(!l4_checksum_ok(&g, &parse(&g).unwrap()));
}

#[test]
fn l4_needs_by_protocol() {
    use ParseError::*;
    assert_eq!(parse(&v4_frame(6, 0, &[0; 19])), Err(TruncatedL4));
    let mut tcp = [0u8; 24];
    tcp[12] = 0x70; // data offset 7 > 24 bytes
    assert_eq!(parse(&v4_frame(6, 0, &tcp)), Err(BadTcpHeaderLen));
    tcp[12] = 0x40;
    assert_eq!(parse(&v4_frame(6, 0, &tcp)), Err(BadTcpHeaderLen));
    assert_eq!(parse(&v4_frame(17, 0, &UDP[..7])), Err(TruncatedL4));
    assert_eq!(parse(&v4_frame(17, 0, &UDP[..10])), Err(BadUdpLen));
    assert_eq!(
        parse(&v4_frame(1, 0, &[8, 0, 0, 0, 0, 1, 0])),
        Err(TruncatedL4)
    );
    assert_eq!(
        parse(&v6_frame(58, &[128, 0, 0, 0, 0, 1, 0])),
        Err(TruncatedL4)
    );
    assert_eq!(parse(&v4_frame(132, 0, &[0; 11])), Err(TruncatedL4));
    assert_eq!(parse(&v4_frame(47, 0, &[0; 3])), Err(TruncatedL4));
    assert_eq!(
        parse(&v4_frame(47, 0, &[0x30, 0x01, 0x88, 0x0b, 0, 0, 0])),
        Err(TruncatedL4)
    );
    assert_eq!(parse(&v4_frame(89, 0, &[])).map(|p| p.l4), Ok(L4::Other)); // OSPF
                                                                           // DCCP is a generic protocol to this kernel (no tracker since 6.16):
                                                                           // any bytes, even too few for a DCCP header.
    let dccp = [0x9c, 0x40, 0x13, 0x89, 0x07, 0x00, 0, 0, 0x01, 0, 0, 0];
    assert_eq!(parse(&v6_frame(33, &dccp)).map(|p| p.l4), Ok(L4::Other));
    assert_eq!(
        parse(&v4_frame(33, 0, &[0; 3])).map(|p| p.l4),
        Ok(L4::Other)
    );
}

#[test]
fn first_fragment_must_hold_the_l4_header() {
    // MF set, 12 bytes of a TCP header.
    assert_eq!(
        parse(&v4_frame(6, 0x2000, &[0; 12])),
        Err(ParseError::TruncatedL4)
    );
    // A non-first fragment needs no L4 bytes at all.
    let p = parse(&v4_frame(6, 0x2001, &[])).unwrap();
    assert_eq!(
        (p.frag, p.l4),
        (
            Some(Frag {
                id: 0x1234,
                offset: 8,
                more: true
            }),
            L4::None
        )
    );
    // A first fragment's UDP length field is that of the whole datagram.
    let mut udp = UDP;
    udp[5] = 200;
    let p = parse(&v4_frame(17, 0x2000, &udp)).unwrap();
    assert_eq!(
        p.l4,
        L4::Udp {
            src_port: 12345,
            dst_port: 53
        }
    );
    assert_eq!(parse(&v4_frame(17, 0, &udp)), Err(ParseError::BadUdpLen));
}

#[test]
fn frame_level_errors() {
    use ParseError::*;
    assert_eq!(parse(&[]), Err(TruncatedEthernet));
    assert_eq!(parse(&eth(0x0806, &[0; 28])), Err(NotIp));
    assert_eq!(parse(&eth(0x0800, &[0x45; 10])), Err(TruncatedIp));
    assert_eq!(
        parse(&eth(0x86dd, &super::ipv4::tests::header(20, 6, 0, &[]))),
        Err(TruncatedIp)
    );
    let mut v6_in_v4 = v4_frame(17, 0, &UDP);
    v6_in_v4[14] = 0x65;
    assert_eq!(parse(&v6_in_v4), Err(BadIpVersion));
    let mut three_tags = eth(
        0x8100,
        &[0, 1, 0x88, 0xa8, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00],
    );
    three_tags.extend_from_slice(&v4_frame(17, 0, &UDP)[14..]);
    assert_eq!(parse(&three_tags), Err(BadVlan));
}

#[test]
fn offsets_beyond_u16_are_rejected() {
    let payload = vec![0u8; 65535];
    let mut ip = super::ipv6::tests::packet(59, &payload);
    ip[4..6].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(parse(&eth(0x86dd, &ip)), Err(ParseError::BadIpTotalLen));
    // 65535 - 14 - 40 bytes of payload still fit.
    let ok = super::ipv6::tests::packet(59, &payload[..65535 - 54]);
    assert_eq!(parse(&eth(0x86dd, &ok)).map(|p| p.l3_len), Ok(65535 - 14));
}

/// `parse_common_into` over a slot that held another frame's parse (a
/// VLAN-tagged first fragment: every field set), so that a field it forgot
/// to write would show.
fn parse_common(frame: &[u8], ipv4_checksum: bool) -> Option<Parsed> {
    let mut p = Parsed {
        vlan_ids: [7, 9],
        vlan_count: 2,
        l3_offset: 22,
        family: Family::V6,
        src: Addr([0xaa; 16]),
        dst: Addr([0xbb; 16]),
        ttl: 3,
        l3_len: 999,
        proto: 99,
        l4_offset: 62,
        frag: Some(Frag {
            id: 5,
            offset: 0,
            more: true,
        }),
        l4: L4::Sctp {
            src_port: 1,
            dst_port: 2,
            vtag: 3,
            chunk_map: 4,
            first_chunk: 5,
            first_flags: 6,
        },
    };
    let ports = parse_common_into(frame, ipv4_checksum, &mut p)?;
    let l4_ports = match p.l4 {
        L4::Tcp(t) => (t.src_port, t.dst_port),
        L4::Udp { src_port, dst_port } => (src_port, dst_port),
        _ => panic!("parse_common_into answered for {:?}", p.l4),
    };
    assert_eq!(ports, l4_ports, "the ports returned are the parse's");
    Some(p)
}

/// `parse_common_into` answers only where the full parse does, with its
/// answer (with and without the IPv4 header checksum); true if it answered.
fn common_agrees(frame: &[u8]) -> bool {
    let fast = parse_common(frame, true);
    if let Some(p) = fast {
        assert_eq!(Ok(p), parse(frame), "parse_common_into on {frame:02x?}");
        // The engine's check for these frames is conntrack's.
        assert_eq!(
            crate::checksum::tcp_udp_ok(frame, &p),
            crate::checksum::l4_checksum_ok_conntrack(frame, &p)
        );
    }
    if let Some(p) = parse_common(frame, false) {
        assert_eq!(
            Ok(p),
            parse_ip_checked(frame),
            "parse_common_into unchecked on {frame:02x?}"
        );
    }
    fast.is_some()
}

#[test]
fn parse_common_is_the_full_parse_where_it_answers() {
    let (mut answered, mut tcp_udp) = (0, 0);
    for (name, frames) in all_captures() {
        for f in &frames {
            let common = common_agrees(f);
            answered += usize::from(common);
            // Every plain TCP / UDP frame is one it must answer.
            if let Ok(p) = parse(f) {
                let plain = p.vlan_count == 0
                    && p.frag.is_none()
                    && matches!(p.l4, L4::Tcp(_) | L4::Udp { .. })
                    && p.proto != IPPROTO_UDPLITE
                    && usize::from(p.l4_offset - p.l3_offset)
                        == if p.family == Family::V4 {
                            usize::from(f[14] & 0x0f) * 4
                        } else {
                            40
                        };
                if plain {
                    tcp_udp += 1;
                    assert!(common, "{name}: a plain TCP/UDP frame took the slow parse");
                }
            }
        }
    }
    assert!(answered > 1000, "only {answered} frames answered");
    assert_eq!(answered, tcp_udp);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            common_agrees(&frame);
            if let Ok(p) = parse(&frame) {
                check_invariants(&frame, &p);
                let _ = l4_checksum_ok(&frame, &p);
            }
        }

        /// Random bytes behind a valid Ethernet + IPv4/IPv6 start reach deeper.
        #[test]
        fn random_l3_never_panics(v6 in any::<bool>(), tags in 0usize..3, body in proptest::collection::vec(any::<u8>(), 0..160)) {
            let mut f = vec![0u8; 12];
            for _ in 0..tags {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            }
            f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            f.extend_from_slice(&body);
            common_agrees(&f);
            if let Ok(p) = parse(&f) {
                check_invariants(&f, &p);
                let _ = l4_checksum_ok(&f, &p);
            }
        }

        #[test]
        fn mutated_captures_never_panic(
            which in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = CORPUS[which.index(CORPUS.len())].to_vec();
            for (at, byte) in edits {
                let i = at.index(f.len());
                f[i] = byte;
            }
            f.truncate(cut.index(f.len() + 1));
            common_agrees(&f);
            if let Ok(p) = parse(&f) {
                check_invariants(&f, &p);
                let _ = l4_checksum_ok(&f, &p);
            }
        }

        /// `l4_checksum_ok` on a `Parsed` that does not belong to the frame.
        #[test]
        fn checksum_with_foreign_parse_never_panics(a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
            let fa = CORPUS[a.index(CORPUS.len())];
            let fb = CORPUS[b.index(CORPUS.len())];
            if let Ok(p) = parse(fa) {
                let _ = l4_checksum_ok(&fb[..cut.index(fb.len() + 1)], &p);
            }
        }
    }
}
