//! NAT rewrites, byte for byte: pcap in -> pcap out through the real
//! appliance (net_pcap vdevs) with SNAT, DNAT and full NAT rules, IPv4 and
//! IPv6, TCP, UDP, ICMP echo, and ICMP / ICMPv6 errors quoting translated
//! datagrams. Every expected frame is built from its fields here, with every
//! checksum computed in full (RFC 1071) — never with the appliance's
//! incremental code.
//!
//! Port a (inside, 192.0.2.1, 2001:db8:1::1) gets the connections' first
//! packets, port b (outside, 198.51.100.1, 2001:db8:2::1) the answers: ctgate
//! polls a before b, and each capture fits one RX burst, so the answers are
//! processed after the packets they answer.

mod support;

use std::process::Command;

use appliance::pcap;
use support::frames::*;
use support::*;

const GW_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GW_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const HOST_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const HOST_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn icmp4(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

fn icmp6(src: &[u8], dst: &[u8], ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    with_l4_csum(src, dst, 58, m, 2)
}

/// One IPv4 fragment of a datagram (`offset` in bytes, a multiple of 8).
fn ipv4_frag(src: [u8; 4], dst: [u8; 4], ttl: u8, mf: bool, offset: usize, part: &[u8]) -> Vec<u8> {
    let mut p = ipv4(src, dst, ttl, 0x6666, 17, part);
    let field = (u16::from(mf) << 13) | (offset / 8) as u16;
    p[6..8].copy_from_slice(&field.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = csum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// An IPv4 UDP packet, fully built.
fn udp4(src: &str, dst: &str, sport: u16, dport: u16, ttl: u8, data: &[u8]) -> Vec<u8> {
    let (s, d) = (a4(src), a4(dst));
    ipv4(s, d, ttl, 0x1111, 17, &udp(&s, &d, sport, dport, data))
}

#[allow(clippy::too_many_arguments)]
fn tcp4(
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    ttl: u8,
    seq: u32,
    ack: u32,
    fl: u8,
) -> Vec<u8> {
    let (s, d) = (a4(src), a4(dst));
    ipv4(
        s,
        d,
        ttl,
        0x2222,
        6,
        &tcp(&s, &d, sport, dport, seq, ack, fl),
    )
}

fn echo4(src: &str, dst: &str, ty: u8, id: u16, seq: u16, ttl: u8) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&id.to_be_bytes());
    rest[2..].copy_from_slice(&seq.to_be_bytes());
    ipv4(
        a4(src),
        a4(dst),
        ttl,
        0x3333,
        1,
        &icmp4(ty, 0, rest, b"ping-data"),
    )
}

fn udp6(src: &str, dst: &str, sport: u16, dport: u16, hops: u8, data: &[u8]) -> Vec<u8> {
    let (s, d) = (a6(src), a6(dst));
    ipv6(s, d, hops, 17, &udp(&s, &d, sport, dport, data))
}

fn echo6(src: &str, dst: &str, ty: u8, id: u16, seq: u16, hops: u8) -> Vec<u8> {
    let (s, d) = (a6(src), a6(dst));
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&id.to_be_bytes());
    rest[2..].copy_from_slice(&seq.to_be_bytes());
    ipv6(s, d, hops, 58, &icmp6(&s, &d, ty, 0, rest, b"ping6-data"))
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

#[test]
fn nat_rewrites_byte_exact() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("natpcap");

    let (h4, h6) = ("192.0.2.10", "2001:db8:1::10");
    let (s4, s6) = ("198.51.100.10", "2001:db8:2::10");
    let q = b"query";
    let r = b"answer!";

    // Inside -> outside, the first packets (IP packets; Ethernet added below).
    let f1 = udp4(h4, s4, 5000, 53, 64, q); // snat-udp: 198.51.100.100:40000
    let f2 = tcp4(h4, s4, 6000, 80, 64, 1000, 0, SYN); // snat-tcp: 198.51.100.101:41000
    let f3 = echo4(h4, s4, 8, 0x1234, 1, 64); // snat-icmp: 198.51.100.102, id 7
    let f4 = tcp4(h4, "203.0.113.80", 6001, 80, 64, 5000, 0, SYN); // dnat + snat
    let f5 = udp6(h6, s6, 5000, 53, 64, q); // snat6: [2001:db8:2::100]:40000
                                            // What must leave by b: built from the translated fields, TTL - 1.
    let f1_out = udp4("198.51.100.100", s4, 40000, 53, 63, q);
    let f2_out = tcp4("198.51.100.101", s4, 41000, 80, 63, 1000, 0, SYN);
    let f3_out = echo4("198.51.100.102", s4, 8, 7, 1, 63);
    let f4_out = tcp4(
        "198.51.100.101",
        "198.51.100.20",
        41000,
        8080,
        63,
        5000,
        0,
        SYN,
    );
    let f5_out = udp6("2001:db8:2::100", s6, 40000, 53, 63, q);

    // Checksum corner cases: a UDP datagram without checksum (0 stays 0); one
    // whose translated checksum computes to 0 (sent as 0xffff, RFC 768); a TCP
    // segment whose translated checksum is 0x0000.
    let no_csum = |src: &str, sport: u16| {
        let (s, t) = (a4(src), a4(s4));
        let mut seg = udp(&s, &t, sport, 54, q);
        seg[6..8].copy_from_slice(&[0, 0]);
        seg
    };
    let f6 = ipv4(a4(h4), a4(s4), 64, 0x1111, 17, &no_csum(h4, 5001));
    let f6_out = ipv4(
        a4("198.51.100.100"),
        a4(s4),
        63,
        0x1111,
        17,
        &no_csum("198.51.100.100", 40000),
    );
    let zero_data = (0..=u16::MAX)
        .map(|x| x.to_be_bytes())
        .find(|d| {
            let (s, t) = (a4("198.51.100.100"), a4(s4));
            let mut seg = udp(&s, &t, 40000, 55, d);
            seg[6..8].copy_from_slice(&[0, 0]);
            l4_csum(&s, &t, 17, &seg) == 0
        })
        .unwrap();
    let f7 = udp4(h4, s4, 5002, 55, 64, &zero_data);
    let f7_out = udp4("198.51.100.100", s4, 40000, 55, 63, &zero_data);
    assert_eq!(&f7_out[26..28], &[0xff, 0xff]);
    let zero_seq = (0..=u32::MAX)
        .find(|&seq| {
            let (s, t) = (a4("198.51.100.101"), a4(s4));
            let seg = tcp(&s, &t, 41000, 81, seq, 0, SYN);
            seg[16..18] == [0, 0]
        })
        .unwrap();
    let f8 = tcp4(h4, s4, 6002, 81, 64, zero_seq, 0, SYN);
    let f8_out = tcp4("198.51.100.101", s4, 41000, 81, 63, zero_seq, 0, SYN);

    // A fragmented UDP datagram: the first fragment carries the UDP header
    // (ports and a checksum over the whole datagram), the second only follows
    // its translation (addresses).
    let big: Vec<u8> = (0..1200u32).map(|i| (i * 7 + 3) as u8).collect();
    let frags = |src: &str, sport: u16, ttl: u8| {
        let seg = udp(&a4(src), &a4(s4), sport, 56, &big);
        let (one, two) = seg.split_at(808);
        [
            ipv4_frag(a4(src), a4(s4), ttl, true, 0, one),
            ipv4_frag(a4(src), a4(s4), ttl, false, 808, two),
        ]
    };
    let [f9a, f9b] = frags(h4, 5003, 64);
    let [f9a_out, f9b_out] = frags("198.51.100.100", 40000, 63);

    // An ICMPv6 echo request: its id is translated like a port.
    let f10 = echo6(h6, s6, 128, 0x4321, 1, 64);
    let f10_out = echo6("2001:db8:2::100", s6, 128, 40000, 1, 63);

    // Outside -> inside: answers and errors, addressed to the translated side.
    let r1 = udp4(s4, "198.51.100.100", 53, 40000, 64, r);
    let r2 = tcp4(s4, "198.51.100.101", 80, 41000, 64, 9000, 1001, SYN | ACK);
    let r3 = echo4(s4, "198.51.100.102", 0, 7, 1, 64);
    let r4 = tcp4(
        "198.51.100.20",
        "198.51.100.101",
        8080,
        41000,
        64,
        7000,
        5001,
        SYN | ACK,
    );
    let r5 = udp6(s6, "2001:db8:2::100", 53, 40000, 64, r);
    // Port unreachable quoting the whole translated UDP datagram.
    let e1 = ipv4(
        a4(s4),
        a4("198.51.100.100"),
        64,
        0x4444,
        1,
        &icmp4(3, 3, [0; 4], &f1_out),
    );
    // Fragmentation needed (path MTU 1400) quoting IP header + 8 bytes of the
    // translated SYN, as routers do: the quoted TCP checksum is not there.
    let e2 = ipv4(
        a4("203.0.113.1"),
        a4("198.51.100.101"),
        64,
        0x5555,
        1,
        &icmp4(3, 4, [0, 0, 0x05, 0x78], &f2_out[..28]),
    );
    // The full-NAT connection's backend sends fragmentation needed quoting
    // the SYN as it received it (both sides translated).
    let e4 = ipv4(
        a4("198.51.100.20"),
        a4("198.51.100.101"),
        64,
        0x7777,
        1,
        &icmp4(3, 4, [0, 0, 0x05, 0x00], &f4_out[..28]),
    );
    // ICMPv6 port unreachable quoting the translated datagram.
    let e5 = ipv6(
        a6(s6),
        a6("2001:db8:2::100"),
        64,
        58,
        &icmp6(&a6(s6), &a6("2001:db8:2::100"), 1, 4, [0; 4], &f5_out),
    );
    let r1_out = udp4(s4, h4, 53, 5000, 63, r);
    let r2_out = tcp4(s4, h4, 80, 6000, 63, 9000, 1001, SYN | ACK);
    let r3_out = echo4(s4, h4, 0, 0x1234, 1, 63);
    let r4_out = tcp4("203.0.113.80", h4, 80, 6001, 63, 7000, 5001, SYN | ACK);
    let r5_out = udp6(s6, h6, 53, 5000, 63, r);
    // The errors reach the client quoting its own datagrams as they left
    // ctgate (TTL 63, the client's addresses and ports).
    let f1_seen = udp4(h4, s4, 5000, 53, 63, q);
    let e1_out = ipv4(
        a4(s4),
        a4(h4),
        63,
        0x4444,
        1,
        &icmp4(3, 3, [0; 4], &f1_seen),
    );
    let f2_seen = tcp4(h4, s4, 6000, 80, 63, 1000, 0, SYN);
    let e2_out = ipv4(
        a4("203.0.113.1"),
        a4(h4),
        63,
        0x5555,
        1,
        &icmp4(3, 4, [0, 0, 0x05, 0x78], &f2_seen[..28]),
    );
    // A router beyond sends time exceeded for the echo request; the client
    // gets it quoting its own request (addresses, id and the quoted ICMPv6
    // checksum, which covers the addresses, restored).
    let rtr6 = "2001:db8:2::fe";
    let e10 = ipv6(
        a6(rtr6),
        a6("2001:db8:2::100"),
        64,
        58,
        &icmp6(&a6(rtr6), &a6("2001:db8:2::100"), 3, 0, [0; 4], &f10_out),
    );
    let f10_seen = echo6(h6, s6, 128, 0x4321, 1, 63);
    let e10_out = ipv6(
        a6(rtr6),
        a6(h6),
        63,
        58,
        &icmp6(&a6(rtr6), &a6(h6), 3, 0, [0; 4], &f10_seen),
    );
    // The client sees it from the address it connected to (the VIP), quoting
    // its own SYN.
    let f4_seen = tcp4(h4, "203.0.113.80", 6001, 80, 63, 5000, 0, SYN);
    let e4_out = ipv4(
        a4("203.0.113.80"),
        a4(h4),
        63,
        0x7777,
        1,
        &icmp4(3, 4, [0, 0, 0x05, 0x00], &f4_seen[..28]),
    );
    let f5_seen = udp6(h6, s6, 5000, 53, 63, q);
    let e5_out = ipv6(
        a6(s6),
        a6(h6),
        63,
        58,
        &icmp6(&a6(s6), &a6(h6), 1, 4, [0; 4], &f5_seen),
    );

    let v4 = |p: &[u8], dst, src| eth(dst, src, 0x0800, p);
    let v6 = |p: &[u8], dst, src| eth(dst, src, 0x86dd, p);
    let in_a = [
        v4(&f1, GW_A, HOST_A),
        v4(&f2, GW_A, HOST_A),
        v4(&f3, GW_A, HOST_A),
        v4(&f4, GW_A, HOST_A),
        v6(&f5, GW_A, HOST_A),
        v4(&f6, GW_A, HOST_A),
        v4(&f7, GW_A, HOST_A),
        v4(&f8, GW_A, HOST_A),
        v4(&f9a, GW_A, HOST_A),
        v4(&f9b, GW_A, HOST_A),
        v6(&f10, GW_A, HOST_A),
    ];
    let in_b = [
        v4(&r1, GW_B, HOST_B),
        v4(&r2, GW_B, HOST_B),
        v4(&r3, GW_B, HOST_B),
        v4(&r4, GW_B, HOST_B),
        v4(&e1, GW_B, HOST_B),
        v4(&e2, GW_B, HOST_B),
        v4(&e4, GW_B, HOST_B),
        v6(&r5, GW_B, HOST_B),
        v6(&e5, GW_B, HOST_B),
        v6(&e10, GW_B, HOST_B),
    ];
    let want_b = [
        v4(&f1_out, HOST_B, GW_B),
        v4(&f2_out, HOST_B, GW_B),
        v4(&f3_out, HOST_B, GW_B),
        v4(&f4_out, HOST_B, GW_B),
        v6(&f5_out, HOST_B, GW_B),
        v4(&f6_out, HOST_B, GW_B),
        v4(&f7_out, HOST_B, GW_B),
        v4(&f8_out, HOST_B, GW_B),
        v4(&f9a_out, HOST_B, GW_B),
        v4(&f9b_out, HOST_B, GW_B),
        v6(&f10_out, HOST_B, GW_B),
    ];
    let want_a = [
        v4(&r1_out, HOST_A, GW_A),
        v4(&r2_out, HOST_A, GW_A),
        v4(&r3_out, HOST_A, GW_A),
        v4(&r4_out, HOST_A, GW_A),
        v4(&e1_out, HOST_A, GW_A),
        v4(&e2_out, HOST_A, GW_A),
        v4(&e4_out, HOST_A, GW_A),
        v6(&r5_out, HOST_A, GW_A),
        v6(&e5_out, HOST_A, GW_A),
        v6(&e10_out, HOST_A, GW_A),
    ];
    let write = |name: &str, frames: &[Vec<u8>]| {
        let mut w = pcap::Writer::new(Vec::new()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write(i as u64 * 1000, f.len() as u32, f).unwrap();
        }
        std::fs::write(dir.path(name), w.finish().unwrap()).unwrap();
    };
    write("in_a.pcap", &in_a);
    write("in_b.pcap", &in_b);

    let config = format!(
        r#"
workers = [1]
mempool_mbufs = 4095
{eal}

[[port]]
name = "a"
devargs = "net_pcap0,rx_pcap={d}/in_a.pcap,tx_pcap={d}/out_a.pcap"
ipv4 = "192.0.2.1/24"
ipv6 = "2001:db8:1::1/64"
mac = "02:00:00:00:00:01"

[[port]]
name = "b"
devargs = "net_pcap1,rx_pcap={d}/in_b.pcap,tx_pcap={d}/out_b.pcap"
ipv4 = "198.51.100.1/24"
ipv6 = "2001:db8:2::1/64"
mac = "02:00:00:00:00:02"

[[neighbour]]
ip = "192.0.2.10"
mac = "02:00:00:00:00:0a"
port = "a"

[[neighbour]]
ip = "2001:db8:1::10"
mac = "02:00:00:00:00:0a"
port = "a"

[[neighbour]]
ip = "198.51.100.10"
mac = "02:00:00:00:00:0b"
port = "b"

[[neighbour]]
ip = "198.51.100.20"
mac = "02:00:00:00:00:0b"
port = "b"

[[neighbour]]
ip = "2001:db8:2::10"
mac = "02:00:00:00:00:0b"
port = "b"

[[nat]]
name = "vip"
in_port = "a"
dst = "203.0.113.80"
proto = "tcp"
dport = "80"
action = "dnat to 198.51.100.20:8080"

[[nat]]
name = "snat-udp"
out_port = "b"
src = "192.0.2.0/24"
proto = "udp"
action = "snat to 198.51.100.100:40000-40000"

[[nat]]
name = "snat-tcp"
out_port = "b"
src = "192.0.2.0/24"
proto = "tcp"
action = "snat to 198.51.100.101:41000-41000"

[[nat]]
name = "snat-icmp"
out_port = "b"
src = "192.0.2.0/24"
proto = "icmp"
action = "snat to 198.51.100.102:7-7"

[[nat]]
name = "snat6"
out_port = "b"
src = "2001:db8:1::/64"
action = "snat to [2001:db8:2::100]:40000-40000"
"#,
        eal = eal_args_toml(),
        d = dir.0.display()
    );
    std::fs::write(dir.path("ctgate.toml"), config).unwrap();
    let out = run_for(
        Command::new(ctgate())
            .args(["run", "--config"])
            .arg(dir.path("ctgate.toml"))
            .args(["--duration", "1.5", "--stats-json"])
            .arg(dir.path("stats.json")),
        60,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctgate failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| -> Vec<Vec<u8>> {
        pcap::parse(&std::fs::read(dir.path(name)).unwrap())
            .unwrap()
            .into_iter()
            .map(|r| r.data)
            .collect()
    };
    let (out_a, out_b) = (read("out_a.pcap"), read("out_b.pcap"));
    let names_b = [
        "udp snat",
        "tcp snat",
        "icmp echo id",
        "full nat",
        "udp nat66",
        "udp without checksum",
        "udp checksum computing to 0",
        "tcp checksum 0",
        "first fragment",
        "second fragment",
        "icmpv6 echo id",
    ];
    let names_a = [
        "udp reply",
        "tcp reply",
        "echo reply",
        "full nat reply",
        "port unreachable quoting udp",
        "frag needed quoting tcp (28 bytes)",
        "frag needed from the full-NAT backend",
        "udp reply v6",
        "icmpv6 port unreachable quoting udp",
        "icmpv6 time exceeded quoting an echo request",
    ];
    for (out, want, names, port) in [
        (&out_b, &want_b[..], &names_b[..], "b"),
        (&out_a, &want_a[..], &names_a[..], "a"),
    ] {
        for (i, w) in want.iter().enumerate() {
            let got = out.get(i).unwrap_or_else(|| {
                panic!(
                    "port {port} sent {} frames: {out:02x?}\n{stdout}",
                    out.len()
                )
            });
            assert_eq!(
                format!("{got:02x?}"),
                format!("{w:02x?}"),
                "port {port}, frame {i} ({})",
                names[i]
            );
        }
        assert_eq!(out.len(), want.len(), "port {port}: {out:02x?}");
    }

    let s = stats(&dir.path("stats.json"));
    let nat: Vec<(String, u64, u64)> =
        serde_json::from_value(s["conntrack"]["nat"].clone()).unwrap();
    let hits = |n: &str| nat.iter().find(|r| r.0 == n).unwrap().1;
    assert_eq!(hits("vip"), 1);
    assert_eq!(hits("snat-udp"), 4);
    assert_eq!(hits("snat-tcp"), 3);
    assert_eq!(hits("snat-icmp"), 1);
    assert_eq!(hits("snat6"), 2);
    let t = &s["totals"];
    assert_eq!(t["forwarded"], 21, "{s:#}");
    assert_eq!(t["dropped"], 0, "{s:#}");
}
