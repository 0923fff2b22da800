//! The real appliance between real Linux hosts: scripts/testbed.sh builds two
//! network namespaces joined to ctgate by veth pairs (net_af_packet), and the
//! test sends ping (v4/v6), a TCP transfer (content checked) and UDP through it.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Namespace prefix of this test's test bed (the demo uses "ctgw").
const P: &str = "ctgt";

fn in_ns(ns: &str, args: &[&str]) -> Command {
    support::in_ns(P, ns, args)
}

fn check(cmd: &mut Command, secs: u64, what: &str) -> String {
    let out = run_for(cmd, secs);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// The test bed's config: `top` among the top-level keys, `tail` at the end.
fn config(top: &str, tail: &str) -> String {
    format!(
        r#"
workers = [1]
mempool_mbufs = 4095
{top}
{eal}

[[port]]
name = "cli"
devargs = "net_af_packet0,iface={P}-cli-gw"
ipv4 = "192.0.2.1/24"
ipv6 = "2001:db8:1::1/64"

[[port]]
name = "srv"
devargs = "net_af_packet1,iface={P}-srv-gw"
ipv4 = "198.51.100.1/24"
ipv6 = "2001:db8:2::1/64"
{tail}
"#,
        eal = eal_args_toml()
    )
}

/// Starts ctgate with `config` (its stats to `dir`/stats.json), waits for
/// "forwarding" on its log (bounded); the gate goes into `bed`, its pid out.
fn start_gate(bed: &mut Bed, dir: &TempDir, config: &str) -> u32 {
    std::fs::write(dir.path("ctgate.toml"), config).unwrap();
    let mut gate = Command::new(ctgate())
        .args(["run", "--duration", "120", "--config"])
        .arg(dir.path("ctgate.toml"))
        .arg("--stats-json")
        .arg(dir.path("stats.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = gate.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let ready = line.contains("forwarding;");
                log.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                if let Some(status) = gate.try_wait().unwrap() {
                    panic!("ctgate exited early ({status}):\n{}", log.join("\n"));
                }
                assert!(
                    Instant::now() < deadline,
                    "ctgate did not start:\n{}",
                    log.join("\n")
                );
            }
        }
    }
    let pid = gate.id();
    bed.children.push(gate);
    pid
}

#[test]
fn hosts_talk_through_ctgate() {
    talk_through("");
}

/// The same traffic with conntrack off (a router): its IP packets take the
/// forwarder's direct way (`Worker::forward_routed`), ARP and neighbour
/// discovery in the same bursts the general one.
#[test]
fn hosts_talk_through_ctgate_routing_only() {
    talk_through("\n[conntrack]\nenabled = false\n");
}

/// ICMP, TCP and UDP between the namespaces through ctgate and to it, both
/// families; `tail` ends the config.
fn talk_through(tail: &str) {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("netns");
    let mut bed = Bed::up(P);

    let pid = start_gate(&mut bed, &dir, &config("", tail));

    // ICMP echo through the gateway and to the gateway, both families.
    check(
        &mut in_ns(
            "cli",
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.2"],
        ),
        30,
        "ping v4",
    );
    check(
        &mut in_ns(
            "cli",
            &[
                "ping",
                "-6",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                "2001:db8:2::2",
            ],
        ),
        30,
        "ping v6",
    );
    check(
        &mut in_ns(
            "srv",
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.1"],
        ),
        30,
        "ping the gateway v4",
    );
    check(
        &mut in_ns(
            "srv",
            &[
                "ping",
                "-6",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "2001:db8:2::1",
            ],
        ),
        30,
        "ping the gateway v6",
    );
    let te = run_for(
        &mut in_ns(
            "cli",
            &["ping", "-c", "1", "-t", "1", "-W", "2", "198.51.100.2"],
        ),
        30,
    );
    assert!(
        String::from_utf8_lossy(&te.stdout).contains("From 192.0.2.1"),
        "TTL 1 gets time exceeded from the gateway: {te:?}"
    );

    // TCP: http.server in srv, curl in cli, 2 MiB of pseudo-random bytes.
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let blob: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(www.join("blob.bin"), &blob).unwrap();
    let http = in_ns(
        "srv",
        &[
            "timeout",
            "90",
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "::",
            "--directory",
        ],
    )
    .arg(&www)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    bed.children.push(http);
    for url in [
        "http://198.51.100.2:8080/blob.bin",
        "http://[2001:db8:2::2]:8080/blob.bin",
    ] {
        let got = dir.path("got.bin");
        let _ = std::fs::remove_file(&got);
        let mut ok = false;
        for _ in 0..50 {
            let out = run_for(
                in_ns("cli", &["curl", "-sS", "--max-time", "30", "-o"])
                    .arg(&got)
                    .arg(url),
                40,
            );
            if out.status.success() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ok, "curl {url} never succeeded");
        let body = std::fs::read(&got).unwrap();
        assert_eq!(body.len(), blob.len(), "{url}: length");
        assert!(body == blob, "{url}: content differs");
    }

    // UDP: echo server in srv, 30 datagrams from cli, each answer checked.
    let udp = repo().join("scripts/udp_check.py");
    for addr in ["198.51.100.2", "2001:db8:2::2"] {
        let server = in_ns("srv", &["timeout", "60", "python3"])
            .arg(&udp)
            .args(["serve", addr, "5353", "30"])
            .spawn()
            .unwrap();
        bed.children.push(server);
        std::thread::sleep(Duration::from_millis(500));
        let text = check(
            in_ns("cli", &["python3"])
                .arg(&udp)
                .args(["send", addr, "5353", "30"]),
            60,
            "udp",
        );
        assert!(text.contains("30/30 datagrams echoed correctly"), "{text}");
    }

    // Stop with SIGTERM: ctgate drains, prints its stats and exits 0.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let gate = bed.children.iter_mut().find(|c| c.id() == pid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = gate.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ctgate did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(gate.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "ctgate exit {status}: {stdout}");
    assert!(stdout.contains("ctgate stats after"), "{stdout}");

    let s = stats(&dir.path("stats.json"));
    let t = &s["totals"];
    let n = |k: &str| t[k].as_u64().unwrap();
    // 2 transfers of 2 MiB need > 2 * 1450 data segments, plus their ACKs.
    assert!(n("forwarded") > 3000, "{s:#}");
    assert!(n("echo_replies_sent") >= 4, "{s:#}");
    assert!(
        n("arp_replies_sent") >= 1 && n("nd_adverts_sent") >= 1,
        "{s:#}"
    );
    assert!(n("icmp_errors_sent") >= 1, "{s:#}");
    assert_eq!(t["drops"]["ttl_exceeded"], 1);
    assert_eq!(
        t["drops"]["bad_header"], 0,
        "veth offloads must be off: {s:#}"
    );
    assert_eq!(
        n("rx") + n("generated"),
        n("tx") + n("dropped"),
        "every mbuf transmitted or freed: {s:#}"
    );
    // Tracked, or (routing only) not at all.
    let inserted = s["conntrack"]["counters"]["insert"].as_u64().unwrap_or(0);
    assert_eq!(inserted == 0, tail.contains("enabled = false"), "{s:#}");
}

/// Neighbours age and answers are taken only when asked for: a host that
/// changes its MAC is reached again once its entry goes stale and ctgate
/// asks anew (ARP and ND, `neighbour_reachable_ms = 1000`); an ARP reply
/// and a neighbour advertisement nobody asked for teach ctgate nothing
/// (packets to those addresses wait for resolution and are dropped as
/// no_neighbour), and are counted.
#[test]
fn neighbours_age_and_only_asked_answers_are_learned() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("netns-neigh");
    let mut bed = Bed::up(P);
    let pid = start_gate(
        &mut bed,
        &dir,
        &config("neighbour_reachable_ms = 1000", "\n[rest]\nenabled = false"),
    );

    let answered = |args: &[&str]| -> usize {
        let out = run_for(&mut in_ns("cli", args), 60);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("bytes from"))
            .count()
    };
    assert_eq!(
        answered(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.2"]),
        2
    );
    assert_eq!(
        answered(&[
            "ping",
            "-6",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "2001:db8:2::2"
        ]),
        2
    );

    // srv takes another MAC (and says nothing). Once its entries are stale,
    // ctgate still uses them, asks again, and learns the new one: most of
    // the pings after the change come back (none would without aging).
    check(
        &mut in_ns(
            "srv",
            &[
                "ip",
                "link",
                "set",
                "dev",
                "eth0",
                "address",
                "02:00:5e:00:53:42",
            ],
        ),
        10,
        "srv changes its MAC",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let v4 = answered(&["ping", "-c", "12", "-i", "0.25", "-W", "1", "198.51.100.2"]);
    let v6 = answered(&[
        "ping",
        "-6",
        "-c",
        "12",
        "-i",
        "0.25",
        "-W",
        "1",
        "2001:db8:2::2",
    ]);
    assert!(
        v4 >= 8 && v6 >= 8,
        "after the MAC change: {v4}/12 and {v6}/12 answered"
    );

    // An ARP reply and a neighbour advertisement nobody asked for.
    let lie = r#"
from scapy.all import ARP, Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, sendp
fake = "02:00:5e:00:53:77"
sendp(Ether(dst="ff:ff:ff:ff:ff:ff", src=fake) / ARP(op=2, hwsrc=fake, psrc="198.51.100.77", hwdst="ff:ff:ff:ff:ff:ff", pdst="198.51.100.1"), iface="eth0", verbose=0)
sendp(Ether(dst="33:33:00:00:00:01", src=fake) / IPv6(src="2001:db8:2::77", dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt="2001:db8:2::77", R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=fake), iface="eth0", verbose=0)
"#;
    // Debian's python, with python3-scapy (scripts/setup.sh).
    check(
        &mut in_ns("srv", &["/usr/bin/python3", "-c", lie]),
        60,
        "unsolicited ARP reply and NA",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        answered(&["ping", "-c", "1", "-W", "1", "198.51.100.77"]),
        0
    );
    assert_eq!(
        answered(&["ping", "-6", "-c", "1", "-W", "1", "2001:db8:2::77"]),
        0
    );
    // (The packets wait neighbour_timeout_ms, 3 s, for an answer.)
    std::thread::sleep(Duration::from_millis(3500));

    let i = bed.children.iter().position(|c| c.id() == pid).unwrap();
    let mut gate = bed.children.remove(i);
    sigterm(&gate);
    assert!(gate.wait().unwrap().success());
    let s = stats(&dir.path("stats.json"));
    let t = &s["totals"];
    assert!(t["neigh_unsolicited"].as_u64().unwrap() >= 2, "{t:#}");
    assert!(t["neigh_refreshes"].as_u64().unwrap() >= 2, "{t:#}");
    assert!(t["drops"]["no_neighbour"].as_u64().unwrap() >= 2, "{t:#}");
}
