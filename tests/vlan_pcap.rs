//! VLAN sub-ports, pcap in -> pcap out through the real appliance (net_pcap
//! vdevs; this machine's kernel has no 802.1Q driver for a netns test).
//!
//! Port `trunk` carries VLAN 100 (sub-port `v100`, zone 1) and VLAN 200
//! (sub-port `v200`, zone 2), both with the client 192.0.2.10 behind the
//! gateway address 192.0.2.1; port `srv` (untagged) is the outside, where
//! one masquerade (ports 40000-40007) translates both. The client of each
//! VLAN asks ARP for the gateway, then sends the same UDP datagram and the
//! same TCP SYN to 198.51.100.2: only the zones keep them two connections,
//! which the masquerade must give two ports. The server answers both
//! ports; each answer must leave by the trunk tagged with the VLAN its
//! connection came from, untranslated, byte for byte (the answers to the
//! ports no connection took are refused). Besides: an ARP
//! answer per VLAN (tagged), an ICMP time exceeded on VLAN 200 (tagged), a
//! priority-tagged (VLAN 0) echo request to the trunk's own address
//! (answered untagged), and a frame of an unknown VLAN (counted).
//!
//! The trunk's capture fits one RX burst and is polled before srv's, so the
//! answers are processed after what they answer. With one worker, and with
//! two (net_pcap has one queue: software dispatch hands the frames, tagged,
//! to their connection's worker).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use appliance::pcap;
use support::frames::*;
use support::*;

const GW: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GW_SRV: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

const CLIENT: [u8; 4] = [192, 0, 2, 10];
const CLIENT_GW: [u8; 4] = [192, 0, 2, 1];
const SERVER_IP: [u8; 4] = [198, 51, 100, 2];
const SRV_GW: [u8; 4] = [198, 51, 100, 1];
const TRUNK_IP: [u8; 4] = [203, 0, 113, 1];
const TRUNK_HOST: [u8; 4] = [203, 0, 113, 10];

#[allow(clippy::too_many_arguments)]
fn udp4(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    ttl: u8,
    id: u16,
    data: &[u8],
) -> Vec<u8> {
    ipv4(src, dst, ttl, id, 17, &udp(&src, &dst, sport, dport, data))
}

#[allow(clippy::too_many_arguments)]
fn tcp4(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    ttl: u8,
    id: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    ipv4(
        src,
        dst,
        ttl,
        id,
        6,
        &tcp(&src, &dst, sport, dport, seq, ack, flags),
    )
}

fn echo4(src: [u8; 4], dst: [u8; 4], ty: u8, ttl: u8) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0, 0x12, 0x34, 0, 1];
    m.extend_from_slice(b"ping-data");
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, ttl, 0x3333, 1, &m)
}

/// A neighbour solicitation from `src` (with its link-layer address) for
/// `target`, to the solicited-node group, ICMPv6 checksum computed in full.
fn neighbor_solicit(src: [u8; 16], src_mac: [u8; 6], target: [u8; 16]) -> Vec<u8> {
    let mut dst = [0u8; 16];
    dst[..2].copy_from_slice(&[0xff, 0x02]);
    dst[11..13].copy_from_slice(&[0x01, 0xff]);
    dst[13..].copy_from_slice(&target[13..]);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac);
    ipv6(src, dst, 255, 58, &with_l4_csum(&src, &dst, 58, icmp, 2))
}

/// An Ethernet frame with an 802.1Q tag (priority `pcp`, VLAN `vid`).
fn tagged(
    dst: [u8; 6],
    src: [u8; 6],
    pcp: u8,
    vid: u16,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x8100u16.to_be_bytes());
    f.extend_from_slice(&((pcp as u16) << 13 | vid).to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The VLAN id of a tagged frame, None if untagged.
fn vid(f: &[u8]) -> Option<u16> {
    (f[12..14] == [0x81, 0x00]).then(|| u16::from_be_bytes([f[14], f[15]]) & 0xfff)
}

fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut w = pcap::Writer::new(Vec::new()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(i as u64 * 1000, f.len() as u32, f).unwrap();
    }
    std::fs::write(path, w.finish().unwrap()).unwrap();
}

fn read_pcap(path: &std::path::Path) -> Vec<Vec<u8>> {
    pcap::parse(&std::fs::read(path).unwrap())
        .unwrap()
        .into_iter()
        .map(|r| r.data)
        .collect()
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const ISN: u32 = 1000;
const SERVER_ISN: u32 = 9000;
const VLANS: [u16; 2] = [100, 200];

/// The IP id that tells the two VLANs' packets apart (NAT keeps it).
fn ip_id(vlan: u16, tcp: bool) -> u16 {
    vlan << 4 | tcp as u16
}

/// The masquerade's ports. Sixteen: with two workers, a connection may
/// take only the ports whose reply tuple the dispatch (seeded at random per
/// run) sends to its own worker; with eight, a worker was left one port or
/// none in about 3.5 % of runs, and a connection went without one (the
/// test failed once so, "dropped for lack of a port"); with sixteen, in
/// about 0.03 %.
const NAT_PORTS: std::ops::RangeInclusive<u16> = 40000..=40015;

#[test]
fn vlan_sub_ports_keep_their_zones_through_one_masquerade() {
    vlan_sub_ports(1);
}

#[test]
fn vlan_sub_ports_with_software_dispatch() {
    vlan_sub_ports(2);
}

fn vlan_sub_ports(workers: usize) {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(&format!("vlanpcap{workers}"));

    let mut trunk_in = Vec::new();
    for v in VLANS {
        trunk_in.push(tagged(
            [0xff; 6],
            HOST,
            0,
            v,
            0x0806,
            &arp(1, HOST, CLIENT, [0; 6], CLIENT_GW),
        ));
    }
    for v in VLANS {
        // A priority (PCP 3) on VLAN 100: the tag goes whatever its priority.
        let pcp = if v == 100 { 3 } else { 0 };
        trunk_in.push(tagged(
            GW,
            HOST,
            pcp,
            v,
            0x0800,
            &udp4(CLIENT, SERVER_IP, 5000, 53, 64, ip_id(v, false), b"query"),
        ));
        trunk_in.push(tagged(
            GW,
            HOST,
            0,
            v,
            0x0800,
            &tcp4(CLIENT, SERVER_IP, 6000, 80, 64, ip_id(v, true), ISN, 0, SYN),
        ));
    }
    // Neighbour discovery on VLAN 100: answered there, tagged.
    trunk_in.push(tagged(
        [0x33, 0x33, 0xff, 0, 0, 0x01],
        HOST,
        0,
        100,
        0x86dd,
        &neighbor_solicit(a6("2001:db8:1::10"), HOST, a6("2001:db8:1::1")),
    ));
    let ttl1 = udp4(CLIENT, SERVER_IP, 5001, 53, 1, 0x7777, b"expires");
    trunk_in.push(tagged(GW, HOST, 0, 200, 0x0800, &ttl1));
    // Priority-tagged (VLAN 0): the trunk's own, answered untagged.
    trunk_in.push(tagged(
        GW,
        HOST,
        5,
        0,
        0x0800,
        &echo4(TRUNK_HOST, TRUNK_IP, 8, 64),
    ));
    // VLAN 300 has no sub-port.
    trunk_in.push(tagged(
        GW,
        HOST,
        0,
        300,
        0x0800,
        &udp4(CLIENT, SERVER_IP, 5000, 53, 64, 1, b"lost"),
    ));

    // The server answers both masquerade ports, each answer told apart by
    // its IP id (0x5000 / 0x6000 + the port's place in the range).
    let mut srv_in = Vec::new();
    for port in NAT_PORTS {
        srv_in.push(eth(
            GW_SRV,
            SERVER,
            0x0800,
            &udp4(
                SERVER_IP,
                SRV_GW,
                53,
                port,
                64,
                0x5000 + (port - NAT_PORTS.start()),
                b"answer",
            ),
        ));
        srv_in.push(eth(
            GW_SRV,
            SERVER,
            0x0800,
            &tcp4(
                SERVER_IP,
                SRV_GW,
                80,
                port,
                64,
                0x6000 + (port - NAT_PORTS.start()),
                SERVER_ISN,
                ISN + 1,
                SYN | ACK,
            ),
        ));
    }
    write_pcap(&dir.path("trunk.pcap"), &trunk_in);
    write_pcap(&dir.path("srv.pcap"), &srv_in);

    let rest = format!("127.0.0.1:{}", 18190 + workers);
    let config = format!(
        r#"
workers = [{lcores}]
worker_cpus = [{cpus}]
mempool_mbufs = 4095
{eal}

[[port]]
name = "trunk"
devargs = "net_pcap0,rx_pcap={d}/trunk.pcap,tx_pcap={d}/out_trunk.pcap"
ipv4 = "203.0.113.1/24"
mac = "02:00:00:00:00:01"

[[port]]
name = "v100"
parent = "trunk"
vlan = 100
ipv4 = "192.0.2.1/24"
ipv6 = "2001:db8:1::1/64"
zone = 1

[[port]]
name = "v200"
parent = "trunk"
vlan = 200
ipv4 = "192.0.2.1/24"
zone = 2

[[port]]
name = "srv"
devargs = "net_pcap1,rx_pcap={d}/srv.pcap,tx_pcap={d}/out_srv.pcap"
ipv4 = "198.51.100.1/24"
mac = "02:00:00:00:00:02"

[rest]
bind = "{rest}"
token = "vlan-test"

[[neighbour]]
ip = "198.51.100.2"
mac = "02:00:00:00:00:0b"
port = "srv"

[conntrack]
max_connections = 1024
policy_default = "drop"

[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "from-v100"
in_port = "v100"
states = "new"
action = "accept"

[[policy]]
name = "from-trunk"
in_port = "trunk"
states = "new"
action = "accept"

[[policy]]
name = "from-v200"
in_port = "v200"
states = "new"
action = "accept"

[[nat]]
name = "masquerade"
out_port = "srv"
src = "192.0.2.0/24"
action = "masquerade to :{nat_lo}-{nat_hi}"
"#,
        eal = eal_args_toml(),
        rest = rest,
        lcores = (1..=workers)
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cpus = vec!["1"; workers].join(", "),
        d = dir.0.display(),
        nat_lo = NAT_PORTS.start(),
        nat_hi = NAT_PORTS.end(),
    );
    std::fs::write(dir.path("ctgate.toml"), config).unwrap();
    let child = Command::new("timeout")
        .arg("60")
        .arg(ctgate())
        .args(["run", "--config"])
        .arg(dir.path("ctgate.toml"))
        .args(["--duration", "4", "--stats-json"])
        .arg(dir.path("stats.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The REST API while it runs: the sub-ports are ports, with their own
    // counters, on their parent's device.
    let answers = 2 * NAT_PORTS.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let api_ports = loop {
        let got = ureq::get(&format!("http://{rest}/api/v1/ports"))
            .set("Authorization", "Bearer vlan-test")
            .timeout(Duration::from_secs(2))
            .call()
            .ok()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.into_string().ok()?).ok());
        if let Some(v) = got.as_ref().filter(|v| v[3]["rx_packets"] == answers) {
            break v.clone();
        }
        assert!(Instant::now() < deadline, "no /api/v1/ports: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ctgate failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    let s = stats(&dir.path("stats.json"));
    let out_trunk = read_pcap(&dir.path("out_trunk.pcap"));
    let out_srv = read_pcap(&dir.path("out_srv.pcap"));

    // Outside: four translated packets, untagged; the two VLANs' UDP
    // datagrams (and TCP SYNs) got the two masquerade ports.
    assert_eq!(out_srv.len(), 4, "{stdout}");
    let mut port_of = std::collections::HashMap::new();
    for f in &out_srv {
        assert_eq!(vid(f), None);
        let id = u16::from_be_bytes([f[18], f[19]]);
        let (vlan, tcp) = (id >> 4, id & 1 == 1);
        let sport = u16::from_be_bytes([f[34], f[35]]);
        assert!(NAT_PORTS.contains(&sport), "{sport}");
        let want = if tcp {
            tcp4(SRV_GW, SERVER_IP, sport, 80, 63, id, ISN, 0, SYN)
        } else {
            udp4(SRV_GW, SERVER_IP, sport, 53, 63, id, b"query")
        };
        assert_eq!(*f, eth(SERVER, GW_SRV, 0x0800, &want), "vlan {vlan}");
        assert!(port_of.insert((vlan, tcp), sport).is_none());
    }
    for tcp in [false, true] {
        assert_ne!(
            port_of[&(100, tcp)],
            port_of[&(200, tcp)],
            "two zones, two connections, two ports"
        );
    }

    // Inside: ARP answers and the server's answers carry their VLAN's tag.
    let mut want = Vec::new();
    for v in VLANS {
        want.push(tagged(
            HOST,
            GW,
            0,
            v,
            0x0806,
            &arp(2, GW, CLIENT_GW, HOST, CLIENT),
        ));
    }
    for port in NAT_PORTS {
        for tcp in [false, true] {
            // An answer to a port no connection took is refused.
            let Some(v) = VLANS.into_iter().find(|&v| port_of[&(v, tcp)] == port) else {
                continue;
            };
            let ip = if tcp {
                tcp4(
                    SERVER_IP,
                    CLIENT,
                    80,
                    6000,
                    63,
                    0x6000 + (port - NAT_PORTS.start()),
                    SERVER_ISN,
                    ISN + 1,
                    SYN | ACK,
                )
            } else {
                udp4(
                    SERVER_IP,
                    CLIENT,
                    53,
                    5000,
                    63,
                    0x5000 + (port - NAT_PORTS.start()),
                    b"answer",
                )
            };
            want.push(tagged(HOST, GW, 0, v, 0x0800, &ip));
        }
    }
    let want_echo = eth(HOST, GW, 0x0800, &echo4(TRUNK_IP, TRUNK_HOST, 0, 64));
    // The ICMP error: tagged 200, from the sub-port's address.
    let errors: Vec<&Vec<u8>> = out_trunk
        .iter()
        .filter(|f| f.len() > 18 && f[16..18] == [8, 0] && f[18 + 9] == 1 && f[18 + 20] == 11)
        .collect();
    assert_eq!(errors.len(), 1, "one time exceeded");
    let te = errors[0];
    assert_eq!(vid(te), Some(200));
    assert_eq!(&te[0..12], &[HOST, GW].concat()[..]);
    assert_eq!(&te[18 + 12..18 + 20], &[CLIENT_GW, CLIENT].concat()[..]);
    assert_eq!(&te[18 + 28..], &ttl1[..28], "quotes the header and 8 bytes");

    // The neighbour advertisement: tagged 100, to the client, for the target.
    let adverts: Vec<&Vec<u8>> = out_trunk
        .iter()
        .filter(|f| f.len() > 18 + 40 && f[16..18] == [0x86, 0xdd] && f[18 + 40] == 136)
        .collect();
    assert_eq!(adverts.len(), 1, "one neighbour advertisement");
    let na = adverts[0];
    assert_eq!(vid(na), Some(100));
    assert_eq!(&na[0..12], &[HOST, GW].concat()[..]);
    assert_eq!(
        &na[18 + 8..18 + 24],
        &a6("2001:db8:1::1"),
        "from the target"
    );
    assert_eq!(&na[18 + 24..18 + 40], &a6("2001:db8:1::10"));
    assert_eq!(&na[18 + 48..18 + 64], &a6("2001:db8:1::1"), "target");

    let rest: Vec<&Vec<u8>> = out_trunk
        .iter()
        .filter(|f| !std::ptr::eq(*f, te) && !std::ptr::eq(*f, na))
        .collect();
    assert_eq!(rest.len(), want.len() + 1, "{stdout}");
    for w in &want {
        assert!(rest.contains(&w), "missing {w:02x?}\nin {rest:02x?}");
    }
    assert_eq!(rest.iter().filter(|f| vid(f).is_none()).count(), 1);
    assert!(rest.contains(&&want_echo), "the echo reply, untagged");

    // The table: each connection in its VLAN's zone, both answered.
    let table: Vec<String> = s["conntrack"]["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        table.iter().filter(|l| l.contains(" zone=")).count(),
        4,
        "{table:#?}"
    );
    for (zone, v) in [(1, 100), (2, 200)] {
        for (proto, sport, dport) in [("udp", 5000, 53), ("tcp", 6000, 80)] {
            let nat = port_of[&(v, proto == "tcp")];
            let line = table
                .iter()
                .find(|l| {
                    l.contains(&format!(" {proto} "))
                        && l.contains(&format!("zone={zone} "))
                        && l.contains(&format!("dport={nat} "))
                })
                .unwrap_or_else(|| panic!("zone {zone} {proto}: {table:#?}"));
            assert!(
                line.contains(&format!(
                    "src=192.0.2.10 dst=198.51.100.2 sport={sport} dport={dport} "
                )),
                "{line}"
            );
            assert!(!line.contains("[UNREPLIED]"), "{line}");
        }
    }

    // Counters: per port, and the unknown VLAN.
    let t = &s["totals"];
    let per_port = |k: &str| -> Vec<u64> {
        t[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    // trunk: the priority-tagged echo and VLAN 300; v100: ARP, ND, UDP,
    // TCP; v200: ARP, UDP, TCP and the expiring datagram; srv: the answers.
    assert_eq!(per_port("rx_per_port"), vec![2, 4, 4, answers], "{s:#}");
    // trunk: the echo reply; v100, v200: ARP answer, UDP and TCP answers
    // (+ v100's neighbour advertisement, v200's time exceeded); srv: four
    // requests.
    assert_eq!(per_port("tx_per_port"), vec![1, 4, 4, 4], "{s:#}");
    assert_eq!(t["nd_adverts_sent"], 1);
    assert_eq!(t["drops"]["unknown_vlan"], 1, "{s:#}");
    if workers > 1 {
        assert!(t["handoff_out"].as_u64().unwrap() > 0, "{s:#}");
    }
    assert_eq!(t["drops"]["ttl_exceeded"], 1, "{s:#}");
    assert_eq!(t["arp_replies_sent"], 2);
    assert_eq!(
        t["rx"].as_u64().unwrap() + t["generated"].as_u64().unwrap(),
        t["tx"].as_u64().unwrap() + t["dropped"].as_u64().unwrap(),
        "{s:#}"
    );
    assert!(stdout.contains("port v100   vlan 100"), "{stdout}");
    let api: Vec<(&str, &str, u64)> = api_ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["driver"].as_str().unwrap(),
                p["rx_packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        api,
        vec![
            ("trunk", "net_pcap", 2),
            ("v100", "vlan 100", 4),
            ("v200", "vlan 200", 4),
            ("srv", "net_pcap", answers)
        ],
        "{api_ports:#}"
    );
}
