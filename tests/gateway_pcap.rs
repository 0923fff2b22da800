//! pcap in -> pcap out through the real appliance (net_pcap vdevs): the test
//! writes the input capture, runs `ctgate run`, and checks the output
//! captures byte for byte and the drop counters.

mod support;

use std::process::Command;

use appliance::pcap;
use support::frames::arp;
use support::*;

const GW_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GW_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const HOST_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const HOST_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

// An independent Internet checksum (RFC 1071), so the test does not trust the
// appliance's own.
fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += (c[0] as u32) << 8 | *c.get(1).unwrap_or(&0) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut h = vec![
        0x45,
        0,
        (len >> 8) as u8,
        len as u8,
        0x12,
        0x34,
        0x40,
        0,
        ttl,
        proto,
        0,
        0,
    ];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv6(src: u128, dst: u128, hops: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.push(next);
    h.push(hops);
    h.extend_from_slice(&src.to_be_bytes());
    h.extend_from_slice(&dst.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    // Checksum 0 (none) is legal for IPv4; the forwarder never looks at it.
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

fn icmp_echo(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

fn read_pcap(path: &std::path::Path) -> Vec<pcap::Record> {
    pcap::parse(&std::fs::read(path).unwrap()).unwrap()
}

fn v6(s: &str) -> u128 {
    u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
}

/// What the forwarder must make of a routed IPv4 frame: new MACs, TTL - 1, a
/// header checksum recomputed from scratch, every other byte the same.
fn routed_v4(input: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = input.to_vec();
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[14 + 8] -= 1;
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = csum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f
}

fn routed_v6(input: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = input.to_vec();
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[14 + 7] -= 1;
    f
}

/// What one run of the gateway left: its report and the two output captures.
struct Run {
    stdout: String,
    out_a: Vec<Vec<u8>>,
    out_b: Vec<Vec<u8>>,
    stats: serde_json::Value,
}

/// Runs ctgate with `input` arriving on port a (net_pcap) and returns what
/// ports a and b sent. Port b's next hops 198.51.100.10 and 2001:db8:2::10
/// are static neighbours; 203.0.113.0/24 goes via 198.51.100.20, which never answers.
/// `extra`: more arguments of `ctgate run`.
fn run_gateway(dir: &TempDir, input: &[&Vec<u8>], extra: &[&str]) -> Run {
    let mut w = pcap::Writer::new(Vec::new()).unwrap();
    for (i, f) in input.iter().enumerate() {
        w.write(i as u64 * 1000, f.len() as u32, f).unwrap();
    }
    std::fs::write(dir.path("in.pcap"), w.finish().unwrap()).unwrap();
    std::fs::write(
        dir.path("empty.pcap"),
        pcap::Writer::new(Vec::new()).unwrap().finish().unwrap(),
    )
    .unwrap();

    let config = format!(
        r#"
workers = [1]
mempool_mbufs = 4095
neighbour_timeout_ms = 300
{eal}

[[port]]
name = "a"
devargs = "net_pcap0,rx_pcap={d}/in.pcap,tx_pcap={d}/out_a.pcap"
ipv4 = "192.0.2.1/24"
ipv6 = "2001:db8:1::1/64"
mac = "02:00:00:00:00:01"

[[port]]
name = "b"
devargs = "net_pcap1,rx_pcap={d}/empty.pcap,tx_pcap={d}/out_b.pcap"
ipv4 = "198.51.100.1/24"
ipv6 = "2001:db8:2::1/64"
mac = "02:00:00:00:00:02"

[[route]]
prefix = "203.0.113.0/24"
via = "198.51.100.20"
port = "b"

[[neighbour]]
ip = "198.51.100.10"
mac = "02:00:00:00:00:0b"
port = "b"

[[neighbour]]
ip = "2001:db8:2::10"
mac = "02:00:00:00:00:0b"
port = "b"
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
            .arg(dir.path("stats.json"))
            .args(extra),
        60,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ctgate failed: {}\n{stdout}\n{stderr}",
        out.status
    );

    let frames = |name: &str| -> Vec<Vec<u8>> {
        read_pcap(&dir.path(name))
            .into_iter()
            .map(|f| f.data)
            .collect()
    };
    Run {
        out_a: frames("out_a.pcap"),
        out_b: frames("out_b.pcap"),
        stats: stats(&dir.path("stats.json")),
        stdout,
    }
}

#[test]
fn pcap_in_pcap_out() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("pcap");

    let h_a = [192, 0, 2, 10];
    let gw_a = [192, 0, 2, 1];
    let h_b = [198, 51, 100, 10];
    let payload = b"ctgate forwards this";

    let udp4 = eth(
        GW_A,
        HOST_A,
        0x0800,
        &ipv4(h_a, h_b, 64, 17, &udp(1000, 2000, payload)),
    );
    let tcp4 = {
        // A TCP SYN (checksum left as built: the forwarder must not touch L4).
        let mut t = vec![
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0xab, 0xcd, 0, 0,
        ];
        t.extend_from_slice(b"");
        eth(GW_A, HOST_A, 0x0800, &ipv4(h_a, h_b, 5, 6, &t))
    };
    let udp6 = eth(
        GW_A,
        HOST_A,
        0x86dd,
        &ipv6(
            v6("2001:db8:1::10"),
            v6("2001:db8:2::10"),
            64,
            17,
            &udp(1, 2, payload),
        ),
    );
    let bad_csum = {
        let mut f = udp4.clone();
        f[14 + 10] ^= 0x55;
        f
    };
    let truncated = {
        let mut f = udp4.clone();
        f[14 + 3] = 200; // total length past the frame
        let c = {
            let mut h = f[14..34].to_vec();
            h[10..12].copy_from_slice(&[0, 0]);
            csum(&h)
        };
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        f
    };
    let ttl1 = eth(
        GW_A,
        HOST_A,
        0x0800,
        &ipv4(h_a, h_b, 1, 17, &udp(1000, 2000, payload)),
    );
    let ping = eth(
        GW_A,
        HOST_A,
        0x0800,
        &ipv4(h_a, gw_a, 64, 1, &icmp_echo(0x77, 1, b"abcdefgh")),
    );
    let no_route = eth(
        GW_A,
        HOST_A,
        0x0800,
        &ipv4(h_a, [10, 9, 9, 9], 64, 17, &udp(1, 2, payload)),
    );
    let other_host = eth(
        OTHER,
        HOST_A,
        0x0800,
        &ipv4(h_a, h_b, 64, 17, &udp(1, 2, payload)),
    );
    let arp_req = eth(
        [0xff; 6],
        HOST_A,
        0x0806,
        &arp(1, HOST_A, h_a, [0; 6], gw_a),
    );
    let unresolved = eth(
        GW_A,
        HOST_A,
        0x0800,
        &ipv4(h_a, [203, 0, 113, 5], 64, 17, &udp(1, 2, payload)),
    );
    let hop1_v6 = eth(
        GW_A,
        HOST_A,
        0x86dd,
        &ipv6(
            v6("2001:db8:1::10"),
            v6("2001:db8:2::10"),
            1,
            17,
            &udp(1, 2, payload),
        ),
    );
    let lldp = eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], HOST_A, 0x88cc, &[0u8; 46]);

    let input = [
        &udp4,
        &tcp4,
        &udp6,
        &bad_csum,
        &truncated,
        &ttl1,
        &ping,
        &no_route,
        &other_host,
        &arp_req,
        &unresolved,
        &hop1_v6,
        &lldp,
    ];
    let Run {
        stdout,
        out_a,
        out_b,
        stats: s,
    } = run_gateway(&dir, &input, &[]);

    // Port B: the three routed packets, then the ARP request for the unresolved next hop.
    assert_eq!(out_b.len(), 4, "port b sent {out_b:02x?}");
    assert_eq!(out_b[0], routed_v4(&udp4, HOST_B, GW_B));
    assert_eq!(out_b[1], routed_v4(&tcp4, HOST_B, GW_B));
    assert_eq!(out_b[1][14 + 8], 4, "TTL 5 -> 4");
    assert_eq!(csum(&out_b[0][14..34]), 0, "IPv4 header checksum verifies");
    assert_eq!(out_b[2], routed_v6(&udp6, HOST_B, GW_B));
    let mut want_arp = eth(
        [0xff; 6],
        GW_B,
        0x0806,
        &arp(1, GW_B, [198, 51, 100, 1], [0; 6], [198, 51, 100, 20]),
    );
    want_arp.resize(60, 0);
    assert_eq!(out_b[3], want_arp);

    // Port A: the ARP reply (ARP is answered while the burst is classified,
    // before the IP packets go through the pipeline), then time exceeded for
    // the TTL 1 packet, the echo reply, and ICMPv6 time exceeded.
    assert_eq!(out_a.len(), 4, "port a sent {out_a:02x?}");
    let te = &out_a[1];
    assert_eq!(&te[0..12], &[HOST_A, GW_A].concat()[..]);
    assert_eq!(&te[14 + 12..14 + 20], &[gw_a, h_a].concat()[..]);
    assert_eq!(csum(&te[14..34]), 0);
    assert_eq!(
        (te[34], te[35]),
        (11, 0),
        "ICMP time exceeded, TTL exceeded in transit"
    );
    assert_eq!(csum(&te[34..]), 0, "ICMP checksum verifies");
    assert_eq!(
        &te[42..],
        &ttl1[14..14 + 28],
        "quotes the IP header and 8 bytes"
    );

    let mut want_reply = eth(
        HOST_A,
        GW_A,
        0x0800,
        &ipv4(gw_a, h_a, 64, 1, &icmp_echo(0x77, 1, b"abcdefgh")),
    );
    want_reply[34] = 0; // ICMP type 0: echo reply
    let c = {
        let mut m = want_reply[34..].to_vec();
        m[2..4].copy_from_slice(&[0, 0]);
        csum(&m)
    };
    want_reply[36..38].copy_from_slice(&c.to_be_bytes());
    assert_eq!(out_a[2], want_reply);

    let want_arp_reply = eth(HOST_A, GW_A, 0x0806, &arp(2, GW_A, gw_a, HOST_A, h_a));
    assert_eq!(out_a[0], want_arp_reply);

    let te6 = &out_a[3];
    assert_eq!(&te6[0..14], &eth(HOST_A, GW_A, 0x86dd, &[])[..]);
    assert_eq!(te6[14 + 6], 58);
    assert_eq!(&te6[14 + 8..14 + 24], &v6("2001:db8:1::1").to_be_bytes());
    assert_eq!(te6[54], 3, "ICMPv6 time exceeded");
    assert_eq!(
        &te6[62..],
        &hop1_v6[14..],
        "quotes the whole (small) packet"
    );

    // The counters: every packet accounted for under its reason.
    let t = &s["totals"];
    let d = &t["drops"];
    assert_eq!(t["rx"], 13, "{s:#}");
    assert_eq!(t["forwarded"], 3);
    assert_eq!(t["echo_replies_sent"], 1);
    assert_eq!(t["arp_replies_sent"], 1);
    assert_eq!(t["arp_requests_sent"], 1);
    assert_eq!(t["icmp_errors_sent"], 2);
    assert_eq!(d["bad_header"], 2);
    assert_eq!(d["ttl_exceeded"], 2);
    assert_eq!(d["no_route"], 1);
    assert_eq!(d["other_host"], 1);
    assert_eq!(d["unsupported"], 1);
    assert_eq!(d["no_neighbour"], 1);
    assert_eq!(t["tx"], 8);
    assert_eq!(
        t["rx"].as_u64().unwrap() + t["generated"].as_u64().unwrap(),
        t["tx"].as_u64().unwrap() + t["dropped"].as_u64().unwrap()
    );
    assert!(
        stdout.contains("accounting: rx 13 + created 3 = tx 8 + freed 8 (+ 0 unaccounted)"),
        "{stdout}"
    );
}

/// Bursts of IP packets only take the worker's fast path (no staging): 40
/// frames, v4 and v6, one with TTL 1 and one without a route, arrive as a
/// burst of 32 and one of 8.
#[test]
fn ip_only_bursts_forward_exactly() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("pcap-fast");
    let (h_a, h_b) = ([192, 0, 2, 10], [198, 51, 100, 10]);
    let mut input: Vec<Vec<u8>> = Vec::new();
    for i in 0..40u16 {
        let data = format!("packet {i}");
        input.push(match i {
            7 => eth(
                GW_A,
                HOST_A,
                0x0800,
                &ipv4(h_a, h_b, 1, 17, &udp(i, 53, data.as_bytes())),
            ),
            19 => eth(
                GW_A,
                HOST_A,
                0x0800,
                &ipv4(h_a, [10, 0, 0, 1], 64, 17, &udp(i, 53, data.as_bytes())),
            ),
            _ if i % 3 == 0 => eth(
                GW_A,
                HOST_A,
                0x86dd,
                &ipv6(
                    v6("2001:db8:1::10"),
                    v6("2001:db8:2::10"),
                    64,
                    17,
                    &udp(i, 53, data.as_bytes()),
                ),
            ),
            _ => eth(
                GW_A,
                HOST_A,
                0x0800,
                &ipv4(h_a, h_b, 64 - i as u8, 17, &udp(i, 53, data.as_bytes())),
            ),
        });
    }
    let refs: Vec<&Vec<u8>> = input.iter().collect();
    // Profiled: timing the stages changes nothing of what is forwarded.
    let run = run_gateway(&dir, &refs, &["--profile-stages"]);
    let want: Vec<Vec<u8>> = input
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 7 && *i != 19)
        .map(|(i, f)| {
            if i % 3 == 0 {
                routed_v6(f, HOST_B, GW_B)
            } else {
                routed_v4(f, HOST_B, GW_B)
            }
        })
        .collect();
    assert_eq!(run.out_b.len(), want.len());
    for (i, (got, want)) in run.out_b.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "forwarded frame {i}");
    }
    assert_eq!(run.out_a.len(), 1, "one ICMP time exceeded");
    assert_eq!(run.out_a[0][34], 11);
    let t = &run.stats["totals"];
    assert_eq!(t["forwarded"], 38);
    assert_eq!(t["drops"]["ttl_exceeded"], 1);
    assert_eq!(t["drops"]["no_route"], 1);
    assert!(run.stdout.contains("(+ 0 unaccounted)"), "{}", run.stdout);
    // The stages split the busy iterations that did not stall, exactly.
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let stages = t["stage_cycles"].as_object().unwrap();
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    for want in [
        "rx",
        "classify",
        "ct_parse",
        "ct_prefetch",
        "ct_track",
        "ct_rewrite",
        "forward",
        "tx",
        "other",
    ] {
        assert!(names.contains(&want), "stage {want} in {names:?}");
    }
    let sum: u64 = stages.values().map(n).sum();
    assert_eq!(
        sum,
        n(&t["busy_cycles"]) - n(&t["stall_cycles"]),
        "{stages:?}"
    );
    assert_eq!(
        n(&t["stage_packets"]),
        n(&t["busy_packets"]) - n(&t["stall_packets"])
    );
    if n(&t["stage_packets"]) > 0 {
        assert!(
            n(&stages["ct_track"]) > 0 && n(&stages["forward"]) > 0,
            "{stages:?}"
        );
        assert!(
            run.stdout.contains("stages, cycles/packet"),
            "{}",
            run.stdout
        );
    }
}
