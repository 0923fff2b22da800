//! Faults as an operator meets them, with the real appliance between real
//! Linux hosts (net_af_packet on veth pairs, each test its own network
//! namespaces): a link that goes down and comes back under traffic, a host
//! that vanishes mid-connection, a mempool that runs dry, hugepages missing
//! at start, SIGTERM at full load. Each checks that ctgate keeps running (or
//! stops cleanly) and says what happened in a counter or a log line.
//!
//! TEST-NET addresses only, no default route anywhere, every loop bounded.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::netns::{Gate, Net};
use support::*;

const TOKEN: &str = "faults-test-token-0123456789";

fn hosts_py() -> String {
    repo()
        .join("tests/support/fault_hosts.py")
        .display()
        .to_string()
}

/// ctgate's config: one af_packet port per `(host, address)` (named after
/// the host), the REST API on `api`, `top` among the top-level keys (4095
/// mbufs unless it sets mempool_mbufs) and `tail` at the end.
fn config(net: &Net, ports: &[(&str, &str)], api: &str, top: &str, tail: &str) -> String {
    let mut c = format!("workers = [1]\n{}\n{top}\n", eal_args_toml());
    if !top.contains("mempool_mbufs") {
        c += "mempool_mbufs = 4095\n";
    }
    for (i, (host, addr)) in ports.iter().enumerate() {
        c += &format!(
            "\n[[port]]\nname = \"{host}\"\ndevargs = \"net_af_packet{i},iface={}\"\nipv4 = \"{addr}\"\n",
            net.gw_if(host)
        );
    }
    c += &format!("\n[rest]\nbind = \"{api}\"\ntoken = \"{TOKEN}\"\n{tail}\n");
    c
}

/// The sum of the samples of metric `name` whose labels include `labels`
/// (None if there is none), from ctgate's /metrics.
fn metric(api: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = ureq::get(&format!("http://{api}/metrics"))
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .into_string()
        .unwrap();
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            continue;
        }
        let l: Vec<&str> = l.trim_end_matches('}').split(',').collect();
        if want.iter().all(|w| l.contains(&w.as_str())) {
            *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    sum
}

/// Polls [`metric`] (bounded) until `ok` holds for it; returns the value.
fn wait_metric(
    api: &str,
    name: &str,
    labels: &[(&str, &str)],
    secs: u64,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = metric(api, name, labels).unwrap_or(f64::NAN);
        if ok(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {v} after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many connections match the `conntrack -L` filter `query` now.
fn conn_count(api: &str, query: &str) -> u64 {
    let v: serde_json::Value = ureq::get(&format!("http://{api}/api/v1/conntrack/count?{query}"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap_or_else(|e| panic!("GET count?{query}: {e}"))
        .into_json()
        .unwrap();
    v["count"].as_u64().unwrap()
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A program of fault_hosts.py on a host, talked to through its stdin and
/// stdout; killed on drop.
struct HostProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl HostProc {
    /// Starts `fault_hosts.py ARGS` in `host`; returns once it printed
    /// `ready` (bounded).
    fn start(net: &Net, host: &str, args: &[&str], ready: &str) -> HostProc {
        let py = hosts_py();
        let mut a = vec!["python3", py.as_str()];
        a.extend_from_slice(args);
        let mut child = net
            .cmd(host, &a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = HostProc {
            child,
            stdin,
            lines,
        };
        let got = p.line(20);
        assert!(got.contains(ready), "{host}: {args:?} said {got:?}");
        p
    }

    /// The next line it prints (bounded).
    fn line(&mut self, secs: u64) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("no output in {secs} s"))
    }

    /// Writes `text` and a newline to its stdin.
    fn say(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server of fault_hosts.py on `host` (udp-echo / tcp-echo), up to `secs`.
fn serve(net: &mut Net, host: &str, what: &str, addr: &str, port: u16, secs: u32) {
    let (py, port, secs) = (hosts_py(), port.to_string(), secs.to_string());
    net.spawn(
        host,
        &["python3", &py, what, addr, &port, &secs],
        Some("listening"),
    );
}

/// `n` datagrams from `host` to `addr:port`'s echo server, each answered
/// within a second (three tries each); returns how many were echoed.
fn udp_echoed(net: &Net, host: &str, addr: &str, port: u16, n: u32) -> u32 {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(1.0)\n\
         ok = 0\n\
         for i in range({n}):\n\
         \x20   msg = b'check %d' % i\n\
         \x20   for _ in range(3):\n\
         \x20       s.sendto(msg, ('{addr}', {port}))\n\
         \x20       try:\n\
         \x20           if s.recv(2048) == msg:\n\
         \x20               ok += 1\n\
         \x20               break\n\
         \x20       except socket.timeout:\n\
         \x20           pass\n\
         print(ok)\n"
    );
    net.check(host, &["python3", "-c", &script], 60)
        .trim()
        .parse()
        .unwrap()
}

fn ip(args: &[&str]) {
    let out = run_for(Command::new("ip").args(args), 30);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test bed of the link and SIGTERM tests: hosts cli (192.0.2.2) and
/// srv (198.51.100.2) in namespaces named after `prefix`, each routed to
/// the other through ctgate, and ctgate's ports on their links.
fn two_hosts(prefix: &str) -> (Net, [(&'static str, &'static str); 2]) {
    let mut net = Net::new(prefix);
    net.host(
        "cli",
        &["192.0.2.2/24"],
        &[("198.51.100.0/24", "192.0.2.1")],
    );
    net.host(
        "srv",
        &["198.51.100.2/24"],
        &[("192.0.2.0/24", "198.51.100.1")],
    );
    (net, [("cli", "192.0.2.1/24"), ("srv", "198.51.100.1/24")])
}

/// A port's link goes down and comes back under traffic, once on ctgate's
/// side of the veth (the interface its af_packet port opened) and once on
/// the host's side: ctgate keeps running, /metrics shows the link down while
/// it is down, a log line says so each way, and forwarding resumes: an
/// open TCP connection carries a line again and the UDP stream that ran
/// all along is echoed again after the link came back.
#[test]
fn link_down_and_up_under_traffic() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    const API: &str = "127.0.0.1:18211";
    let dir = TempDir::new("faults-link");
    let (mut net, ports) = two_hosts("ctfa");
    let mut gate = Gate::start(&dir.0, &config(&net, &ports, API, "", ""));

    serve(&mut net, "srv", "udp-echo", "198.51.100.2", 7000, 60);
    serve(&mut net, "srv", "tcp-echo", "198.51.100.2", 7001, 60);
    let mut chat = HostProc::start(
        &net,
        "cli",
        &["tcp-chat", "198.51.100.2", "7001", "60"],
        "connected",
    );
    chat.say("before");
    assert_eq!(chat.line(20), "echo before");
    let mut stream = HostProc::start(
        &net,
        "cli",
        &["udp-stream", "198.51.100.2", "7000", "200", "40"],
        "streaming",
    );
    let link = |port: &str| metric(API, "ctgate_port_link_up", &[("port", port)]);
    assert_eq!((link("cli"), link("srv")), (Some(1.0), Some(1.0)));

    // ctgate's own end of the srv link, then the cli host's end of its link.
    let srv_if = net.gw_if("srv");
    let cli_ns = net.ns("cli");
    let flaps: [(&str, Vec<&str>, Vec<&str>); 2] = [
        (
            "srv",
            vec!["link", "set", &srv_if, "down"],
            vec!["link", "set", &srv_if, "up"],
        ),
        (
            "cli",
            vec!["-n", &cli_ns, "link", "set", "eth0", "down"],
            vec!["-n", &cli_ns, "link", "set", "eth0", "up"],
        ),
    ];
    let mut back_at = 0.0;
    for (port, down, up) in &flaps {
        let other = if *port == "cli" { "srv" } else { "cli" };
        ip(down);
        wait_metric(API, "ctgate_port_link_up", &[("port", port)], 10, |v| {
            v == 0.0
        });
        gate.wait_log(&["link down", &format!("port={port}")], 10);
        assert_eq!(link(other), Some(1.0), "the other port stays up");
        // Traffic keeps coming at the link while it is down.
        std::thread::sleep(Duration::from_millis(500));
        assert!(gate.exited().is_none(), "ctgate stopped with {port} down");
        ip(up);
        if *port == "cli" {
            // Linux drops the routes through a link that goes down.
            ip(&[
                "-n",
                &cli_ns,
                "route",
                "replace",
                "198.51.100.0/24",
                "via",
                "192.0.2.1",
            ]);
        }
        wait_metric(API, "ctgate_port_link_up", &[("port", port)], 10, |v| {
            v == 1.0
        });
        gate.wait_log(&["link up", &format!("port={port}")], 10);
        back_at = now_epoch();
    }

    // The connection opened before the flaps carries a line again (TCP
    // retransmits what the down links lost), new traffic flows, and the
    // stream that ran all along is echoed again after the last flap.
    chat.say("after");
    assert_eq!(chat.line(30), "echo after");
    assert_eq!(udp_echoed(&net, "cli", "198.51.100.2", 7000, 20), 20);
    std::thread::sleep(Duration::from_millis(500));
    stream.say("stop");
    let report: serde_json::Value = serde_json::from_str(&stream.line(10)).unwrap();
    let times: Vec<f64> = report["echo_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert!(
        times.iter().any(|t| *t > back_at),
        "no echo of the stream after the links came back: {report}"
    );
    let (sent, echoed) = (report["sent"].as_u64().unwrap(), times.len() as u64);
    assert!(
        echoed < sent,
        "nothing was lost while a link was down: {report}"
    );

    drop(chat);
    let s = gate.stop();
    s.assert_balanced();
}

/// A host vanishes mid-connection (its address removed while a TCP
/// connection to it is open and a UDP stream flows to it): ctgate keeps
/// forwarding the other traffic, its unanswered solicitations and the
/// packets it could not deliver are counted (neighbour refreshes, no_neighbour
/// drops), the dead connections leave the table when their timeouts say so,
/// and it stops cleanly.
#[test]
fn host_vanishes_mid_connection() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    const API: &str = "127.0.0.1:18212";
    const TCP_TIMEOUT_S: f64 = 10.0;
    const UDP_TIMEOUT_S: f64 = 5.0;
    let dir = TempDir::new("faults-host");
    let mut net = Net::new("ctfb");
    net.host(
        "cli",
        &["192.0.2.2/24"],
        &[
            ("198.51.100.0/24", "192.0.2.1"),
            ("203.0.113.0/24", "192.0.2.1"),
        ],
    );
    net.host(
        "srv",
        &["198.51.100.2/24"],
        &[("192.0.2.0/24", "198.51.100.1")],
    );
    net.host(
        "oth",
        &["203.0.113.2/24"],
        &[("192.0.2.0/24", "203.0.113.1")],
    );
    let ports = [
        ("cli", "192.0.2.1/24"),
        ("srv", "198.51.100.1/24"),
        ("oth", "203.0.113.1/24"),
    ];
    // Neighbours go stale after 1 s and are forgotten 5 s later unanswered
    // (neigh::STALE_GRACE_MS); a packet waits 1 s for one.
    let top = "neighbour_reachable_ms = 1000\nneighbour_timeout_ms = 1000";
    let tail = format!(
        "\n[conntrack.timeouts]\ntcp_timeout_established = {TCP_TIMEOUT_S}\nudp_timeout = {UDP_TIMEOUT_S}\nudp_timeout_stream = {UDP_TIMEOUT_S}\n"
    );
    let gate = Gate::start(&dir.0, &config(&net, &ports, API, top, &tail));

    serve(&mut net, "srv", "udp-echo", "198.51.100.2", 7000, 60);
    serve(&mut net, "srv", "tcp-echo", "198.51.100.2", 7001, 60);
    serve(&mut net, "oth", "udp-echo", "203.0.113.2", 7000, 60);
    let mut chat = HostProc::start(
        &net,
        "cli",
        &["tcp-chat", "198.51.100.2", "7001", "60"],
        "connected",
    );
    chat.say("hello");
    assert_eq!(chat.line(20), "echo hello");
    let tcp_idle_since = Instant::now();
    assert_eq!(udp_echoed(&net, "cli", "198.51.100.2", 7000, 5), 5);
    assert_eq!(udp_echoed(&net, "cli", "203.0.113.2", 7000, 5), 5);
    const TCP_SRV: &str = "proto=tcp&dst=198.51.100.2";
    const UDP_SRV: &str = "proto=udp&dst=198.51.100.2";
    assert_eq!(conn_count(API, TCP_SRV), 1);

    // srv vanishes: its address goes (its MAC stays on the link and answers
    // nothing), while cli keeps streaming to it.
    ip(&["-n", &net.ns("srv"), "addr", "flush", "dev", "eth0"]);
    let mut stream = HostProc::start(
        &net,
        "cli",
        &["udp-stream", "198.51.100.2", "7000", "100", "30"],
        "streaming",
    );
    // The other host is served all along.
    assert_eq!(udp_echoed(&net, "cli", "203.0.113.2", 7000, 30), 30);
    let no_neigh = [("reason", "no_neighbour")];
    wait_metric(API, "ctgate_dropped_packets_total", &no_neigh, 20, |v| {
        v > 0.0
    });
    let refresh = [("event", "refresh")];
    assert!(metric(API, "ctgate_neighbour_events_total", &refresh).unwrap() >= 1.0);
    assert_eq!(udp_echoed(&net, "cli", "203.0.113.2", 7000, 10), 10);
    stream.say("stop");
    let report: serde_json::Value = serde_json::from_str(&stream.line(10)).unwrap();
    let stream_end = Instant::now();
    assert_eq!(report["echoed"], 0, "srv is gone: {report}");

    // The idle TCP connection stays for its established timeout, then goes.
    let left = |since: Instant, query: &str, timeout_s: f64| -> f64 {
        let deadline = since + Duration::from_secs_f64(timeout_s + 4.0);
        while conn_count(API, query) > 0 {
            assert!(
                Instant::now() < deadline,
                "{query}: still in the table {:.1} s after its last packet",
                since.elapsed().as_secs_f64()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        since.elapsed().as_secs_f64()
    };
    let tcp_gone = left(tcp_idle_since, TCP_SRV, TCP_TIMEOUT_S);
    assert!(
        tcp_gone > TCP_TIMEOUT_S - 1.0,
        "the TCP connection left {tcp_gone:.1} s after its last packet, before its {TCP_TIMEOUT_S} s"
    );
    let udp_gone = left(stream_end, UDP_SRV, UDP_TIMEOUT_S);
    assert!(
        udp_gone > UDP_TIMEOUT_S - 1.5,
        "the UDP flows left {udp_gone:.1} s after their last packet, before their {UDP_TIMEOUT_S} s"
    );
    assert_eq!(udp_echoed(&net, "cli", "203.0.113.2", 7000, 5), 5);

    drop(chat);
    let log = gate.log_lines();
    let s = gate.stop();
    s.assert_balanced();
    let t = &s.stats["totals"];
    assert!(t["drops"]["no_neighbour"].as_u64().unwrap() > 0, "{t:#}");
    assert!(t["neigh_refreshes"].as_u64().unwrap() >= 1, "{t:#}");
    // ... and the resolution given up, once it waited neighbour_timeout_ms.
    assert!(t["neigh_failed"].as_u64().unwrap() >= 1, "{t:#}");
    assert!(
        !log.iter().any(|l| l.contains("panicked")),
        "{}",
        log.join("\n")
    );
}

/// `n` UDP datagrams from `src` to `dst` port 9 (IPv4, no UDP checksum;
/// 64 source ports in turn), addressed to `dst_mac`, as a pcap file.
fn write_udp_pcap(path: &std::path::Path, n: usize, dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) {
    let mut f = Vec::new();
    for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.extend_from_slice(&w.to_le_bytes());
    }
    let payload = [b'x'; 64];
    for i in 0..n {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = dst_mac.to_vec();
        frame.extend_from_slice(&[0x02, 0, 0x5e, 0, 0x53, 0x01, 0x08, 0x00]);
        frame.extend_from_slice(&ip);
        let sport = 40000 + (i % 64) as u16;
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&9u16.to_be_bytes());
        frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&payload);
        for w in [0u32, i as u32, frame.len() as u32, frame.len() as u32] {
            f.extend_from_slice(&w.to_le_bytes());
        }
        f.extend_from_slice(&frame);
    }
    std::fs::write(path, f).unwrap();
}

/// The mempool runs dry: the smallest pool ctgate allows (1024 mbufs) and
/// bursts larger than it, all routed to a next hop that never answers, so
/// that every packet holds its mbuf in the neighbour queue until
/// neighbour_timeout_ms. ctgate logs that the pool ran dry and that it has
/// buffers again, the held packets are counted as no_neighbour drops, and it
/// forwards again afterwards.
///
/// Two sources of the burst, because net_af_packet (DPDK 22.11) counts
/// nothing when the pool is dry: its RX stops at the failed allocation and
/// leaves the frames in the kernel's ring, which drops what no longer fits
/// without telling DPDK (the socket's PACKET_STATISTICS are not read), so
/// rx_nombuf stays 0 and the loss shows only in ctgate's log. A net_pcap
/// port reading a capture stands for a NIC whose PMD counts: each packet it
/// reads while the pool is dry is lost and counted in rx_nombuf
/// (ctgate_port_rx_nombuf_total). The capture is read at start; then the cli
/// host sends a burst through its af_packet port.
#[test]
fn mempool_runs_dry_and_recovers() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    const API: &str = "127.0.0.1:18213";
    const BURST: usize = 3000;
    let dir = TempDir::new("faults-pool");
    let mut net = Net::new("ctfc");
    net.host(
        "cli",
        &["192.0.2.2/25"],
        &[
            ("198.51.100.0/24", "192.0.2.1"),
            ("203.0.113.0/24", "192.0.2.1"),
        ],
    );
    net.host(
        "srv",
        &["198.51.100.2/24"],
        &[("192.0.2.0/25", "198.51.100.1")],
    );
    let burst = dir.path("burst.pcap");
    let inj_mac = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x81];
    write_udp_pcap(&burst, BURST, inj_mac, [192, 0, 2, 130], [203, 0, 113, 9]);
    let ports = [("cli", "192.0.2.1/25"), ("srv", "198.51.100.1/24")];
    let top = "mempool_mbufs = 1024\nneighbour_queue = 1024\nneighbour_timeout_ms = 3000";
    let tail = format!(
        r#"
[[port]]
name = "inj"
devargs = "net_pcap0,rx_pcap={},tx_pcap={}"
ipv4 = "192.0.2.129/25"
mac = "02:00:5e:00:53:81"

[[route]]
prefix = "203.0.113.0/24"
via = "198.51.100.99"
port = "srv"
"#,
        burst.display(),
        dir.path("inj-out.pcap").display()
    );
    let mut gate = Gate::start(&dir.0, &config(&net, &ports, API, top, &tail));
    serve(&mut net, "srv", "udp-echo", "198.51.100.2", 7000, 60);

    // The capture, read at start.
    gate.wait_log(&["mbuf pool ran dry"], 10);
    gate.wait_log(&["free buffers again"], 10);
    let nombuf = metric(API, "ctgate_port_rx_nombuf_total", &[("port", "inj")]).unwrap();
    assert!(nombuf > 0.0, "rx_nombuf of the pcap port: {nombuf}");
    let no_neigh = [("reason", "no_neighbour")];
    // What the pool held is dropped as its waits end (not all at once): the
    // burst, less a few packets in flight, is lost for lack of an mbuf or
    // dropped waiting for the neighbour.
    let held = wait_metric(API, "ctgate_dropped_packets_total", &no_neigh, 10, |v| {
        v + nombuf >= BURST as f64 - 64.0
    });
    assert_eq!(udp_echoed(&net, "cli", "198.51.100.2", 7000, 20), 20);

    // A burst from the cli host, through af_packet.
    let send = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range({BURST}):\n\
         \x20   s.sendto(b'x' * 64, ('203.0.113.9', 9))\n"
    );
    net.check("cli", &["python3", "-c", &send], 30);
    gate.wait_log(&["mbuf pool ran dry"], 10);
    gate.wait_log(&["free buffers again"], 10);
    wait_metric(API, "ctgate_dropped_packets_total", &no_neigh, 10, |v| {
        v >= held + 1000.0
    });
    assert_eq!(udp_echoed(&net, "cli", "198.51.100.2", 7000, 20), 20);
    assert_eq!(
        metric(API, "ctgate_mempool_dry_total", &[]),
        Some(2.0),
        "two dry episodes counted"
    );

    let s = gate.stop();
    s.assert_balanced();
    let inj = s.stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "inj")
        .unwrap();
    assert!(inj["rx_nombuf"].as_u64().unwrap() > 0, "{inj:#}");
}

/// Hugepages missing at start, three ways an operator meets it: no hugetlbfs
/// mounted at all, `--huge-dir` naming a directory that is not one, and a
/// hugetlbfs mount whose size= limit leaves no pages. Each run is in a
/// private mount namespace (the machine's mounts and its hugepage
/// reservation, which other tests use, stay as they are): ctgate exits
/// non-zero at once with one error line that says what to do.
#[test]
fn hugepages_missing_at_start() {
    require_root();
    let dir = TempDir::new("faults-huge");
    let plain = dir.path("plain");
    let limited = dir.path("limited");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::create_dir_all(&limited).unwrap();
    let cases = [
        (
            "no hugetlbfs mounted",
            r#"["--in-memory"]"#.to_owned(),
            "awk '$3 == \"hugetlbfs\" { print $2 }' /proc/mounts | xargs -r -n1 umount -l"
                .to_owned(),
            vec!["no hugetlbfs is mounted", "mount -t hugetlbfs", "--no-huge"],
        ),
        (
            "--huge-dir not a hugetlbfs",
            format!(
                r#"["--file-prefix=ctfd", "--huge-dir={}"]"#,
                plain.display()
            ),
            "true".to_owned(),
            vec!["is not a mounted hugetlbfs", "mount -t hugetlbfs nodev"],
        ),
        (
            "a hugetlbfs without pages",
            format!(
                r#"["--file-prefix=ctfd", "--huge-dir", "{}"]"#,
                limited.display()
            ),
            format!(
                "mount -t hugetlbfs -o pagesize=2M,size=0 nodev {}",
                limited.display()
            ),
            vec!["is limited to 0 MiB", "remount it larger"],
        ),
    ];
    for (what, eal, setup, hints) in &cases {
        let cfg = dir.path("huge.toml");
        std::fs::write(
            &cfg,
            format!(
                "workers = [1]\nmempool_mbufs = 1024\neal_args = {eal}\n\n\
                 [[port]]\nname = \"a\"\ndevargs = \"net_null0\"\nipv4 = \"192.0.2.1/24\"\n\n\
                 [[port]]\nname = \"b\"\ndevargs = \"net_null1\"\nipv4 = \"198.51.100.1/24\"\n\n\
                 [rest]\nenabled = false\n"
            ),
        )
        .unwrap();
        let script = format!(
            "{setup} && exec {} run --duration 5 --config {}",
            ctgate(),
            cfg.display()
        );
        let out = run_for(
            Command::new("unshare").args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ]),
            30,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let all = format!("{what}: {}\n{stdout}{stderr}", out.status);
        assert!(
            !out.status.success() && out.status.code() != Some(124),
            "{all}"
        );
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("ctgate: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {all}");
        for h in hints {
            assert!(errors[0].contains(h), "{h:?} missing: {all}");
        }
        assert!(
            !stderr.contains("panicked") && !stdout.contains("ctgate stats"),
            "{all}"
        );
    }
}

/// SIGTERM under full load: tcpreplay sends UDP from the cli host as fast
/// as it can, most of it to a sink on the srv host that never answers, a
/// tenth to a next hop that never answers (so that packets always wait for
/// a neighbour), and while it still does, ctgate gets SIGTERM: it stops,
/// drains (what waits for a neighbour is freed as `shutdown`) and exits 0
/// within a bound, and its final counters balance (every mbuf it received
/// or made was transmitted or freed under a reason).
#[test]
fn sigterm_under_full_load() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    const API: &str = "127.0.0.1:18215";
    let dir = TempDir::new("faults-term");
    let (mut net, ports) = two_hosts("ctfe");
    let tail = "[[route]]\nprefix = \"203.0.113.0/24\"\nvia = \"198.51.100.99\"\nport = \"srv\"\n";
    let gate = Gate::start(&dir.0, &config(&net, &ports, API, "", tail));
    serve(&mut net, "srv", "udp-sink", "198.51.100.2", 9, 60);
    // ctgate learns srv's address before the flood.
    net.check("cli", &["ping", "-c", "1", "-W", "2", "198.51.100.2"], 30);

    // The frames go to ctgate's cli port: the MAC of its veth end.
    let mac =
        std::fs::read_to_string(format!("/sys/class/net/{}/address", net.gw_if("cli"))).unwrap();
    let mac: Vec<u8> = mac
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let mac: [u8; 6] = mac.try_into().unwrap();
    let (to_srv, to_nowhere) = (dir.path("srv.pcap"), dir.path("nowhere.pcap"));
    write_udp_pcap(&to_srv, 900, mac, [192, 0, 2, 2], [198, 51, 100, 2]);
    write_udp_pcap(&to_nowhere, 100, mac, [192, 0, 2, 2], [203, 0, 113, 9]);
    let (to_srv, to_nowhere) = (
        to_srv.display().to_string(),
        to_nowhere.display().to_string(),
    );
    let mut replay = Bg(net
        .cmd(
            "cli",
            &[
                "timeout",
                "30",
                "tcpreplay",
                "-q",
                "-i",
                "eth0",
                "--topspeed",
                "--loop=0",
                &to_srv,
                &to_nowhere,
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    let fwd = wait_metric(API, "ctgate_forwarded_packets_total", &[], 20, |v| {
        v >= 100_000.0
    });
    assert!(
        replay.0.try_wait().unwrap().is_none(),
        "tcpreplay stopped before the signal"
    );

    let signalled = Instant::now();
    let s = gate.stop();
    let stopped_in = signalled.elapsed();
    assert!(
        stopped_in < Duration::from_secs(10),
        "ctgate took {stopped_in:?} to stop"
    );
    assert!(
        replay.0.try_wait().unwrap().is_none(),
        "the load ended before ctgate did"
    );
    assert!(s.stdout.contains("ctgate stats after"), "{}", s.stdout);
    s.assert_balanced();
    let t = &s.stats["totals"];
    assert!(t["forwarded"].as_u64().unwrap() as f64 >= fwd, "{t:#}");
    assert!(t["drops"]["shutdown"].as_u64().unwrap() > 0, "{t:#}");
}

/// A background program, killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
