//! ctcore's sync protocol against the real conntrackd (Debian's, installed
//! by scripts/setup.sh), both ways, over UDP between two network namespaces
//! of the test's own (`ctsync-<pid>-<role>-a|b`, 192.0.2.1 and 192.0.2.2 on a
//! veth pair, no route out):
//!
//! - `conntrackd_to_ctcore`: conntrackd runs in namespace a over that
//!   namespace's kernel conntrack table; connections are made there with
//!   `conntrack -I` and with traffic through nftables SNAT/DNAT. Our FTFW
//!   endpoint in namespace b asks for a resync, decodes what conntrackd
//!   sends and ACKs it: every kernel entry must come out equal (tuples, NAT
//!   binding, TCP state, mark, ASSURED / seen-reply), and conntrackd's resend
//!   queue must hold no connection (all acknowledged).
//! - `ctcore_to_conntrackd`: our endpoint sends NEW messages (TCP with SNAT,
//!   UDP with DNAT, ICMP, IPv6 TCP with SNAT); `conntrackd -e` must list
//!   them, conntrackd must ACK them and count no malformed message, and after
//!   `conntrackd -c` the kernel table must hold them with the same tuples, NAT
//!   and mark.
//!
//! The half in namespace b runs in a child process (`ip netns exec b` of
//! this test binary, filtered to `conntrackd_peer`), because a socket is
//! opened in the namespace of the process. Both tests skip with a reason
//! when not root or a tool is missing. Every wait is bounded; the
//! namespaces, conntrackd and the child go on every exit (a Drop guard).

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ctcore::conn::Status;
use ctcore::sync::{Config, CtEvent, Endpoint, Event, L4State, SyncConn};
use ctcore::tuple::{Addr, Family, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

const ADDR_A: &str = "192.0.2.1";
const ADDR_B: &str = "192.0.2.2";
const PORT: u16 = 3780;

fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!("needs root for network namespaces (euid {uid})"));
    }
    for tool in ["conntrackd", "conntrack", "nft", "ip"] {
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is missing: scripts/setup.sh installs it"));
        }
    }
    None
}

fn output(cmd: &[&str]) -> Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn run(cmd: &[&str]) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The namespaces, conntrackd and the peer process of one test; all go on drop.
struct Bed {
    ns_a: String,
    ns_b: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Bed {
    fn new(role: &str) -> Bed {
        let pid = std::process::id();
        let bed = Bed {
            ns_a: format!("ctsync-{pid}-{role}-a"),
            ns_b: format!("ctsync-{pid}-{role}-b"),
            dir: std::env::temp_dir().join(format!("ctsync-{pid}-{role}")),
            children: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&bed.dir);
        std::fs::create_dir_all(&bed.dir).unwrap();
        let (va, vb) = (
            format!("cts{}{role}a", pid % 100_000),
            format!("cts{}{role}b", pid % 100_000),
        );
        run(&["ip", "netns", "add", &bed.ns_a]);
        run(&["ip", "netns", "add", &bed.ns_b]);
        run(&[
            "ip", "link", "add", &va, "netns", &bed.ns_a, "type", "veth", "peer", "name", &vb,
            "netns", &bed.ns_b,
        ]);
        for (ns, dev, addr) in [(&bed.ns_a, &va, ADDR_A), (&bed.ns_b, &vb, ADDR_B)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // NAT in namespace a: UDP to port 9 gets a source port of
        // 61000-61010, UDP to 192.0.2.77:7777 goes to 192.0.2.2:9. The table
        // also loads nf_nat, which `conntrackd -c` needs for NAT bindings.
        let rules = "table ip ctsync {
            chain post { type nat hook postrouting priority 100; udp dport 9 snat to 192.0.2.1:61000-61010; }
            chain out { type nat hook output priority -100; ip daddr 192.0.2.77 udp dport 7777 dnat to 192.0.2.2:9; }
        }";
        let rules_path = bed.dir.join("nat.nft");
        std::fs::write(&rules_path, rules).unwrap();
        run(&[
            "ip",
            "netns",
            "exec",
            &bed.ns_a,
            "nft",
            "-f",
            rules_path.to_str().unwrap(),
        ]);
        let conf = format!(
            "Sync {{
    Mode FTFW {{
    }}
    UDP {{
        IPv4_address {ADDR_A}
        IPv4_Destination_Address {ADDR_B}
        Port {PORT}
        Interface {va}
        Checksum on
    }}
}}
General {{
    HashSize 1024
    HashLimit 8192
    LogFile {dir}/conntrackd.log
    Syslog off
    LockFile {dir}/conntrackd.lock
    UNIX {{
        Path {dir}/conntrackd.ctl
    }}
}}
",
            dir = bed.dir.display()
        );
        std::fs::write(bed.conf(), conf).unwrap();
        bed
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("conntrackd.conf")
    }

    fn in_a(&self, cmd: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.ns_a];
        full.extend_from_slice(cmd);
        run(&full)
    }

    /// conntrackd in the foreground in namespace a, once its socket is up.
    fn start_conntrackd(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_a, "conntrackd", "-C"])
            .arg(self.conf())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start conntrackd");
        self.children.push(child);
        let sock = self.dir.join("conntrackd.ctl");
        wait_for("conntrackd's UNIX socket", Duration::from_secs(5), || {
            sock.exists()
        });
    }

    /// This binary's `conntrackd_peer` in namespace b, in `role`.
    fn start_peer(&mut self, role: &str) {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_b])
            .arg(exe)
            .args([
                "conntrackd_peer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("CTSYNC_ROLE", role)
            .env("CTSYNC_DIR", &self.dir)
            .env("CTSYNC_NS_A", &self.ns_a)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the peer");
        self.children.push(child);
    }

    /// Waits for the peer (the last child) and fails with its output if it failed.
    fn finish_peer(&mut self, timeout: Duration) {
        let mut child = self.children.pop().unwrap();
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > end {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("--- peer in {} ---\n{text}", self.ns_b);
        match status {
            Some(s) => assert!(s.success(), "the peer failed ({s})"),
            None => panic!("the peer did not finish within {timeout:?}"),
        }
        assert!(
            text.contains("peer: passed"),
            "the peer did not run its checks"
        );
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = output(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn conntrackd_to_ctcore() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut bed = Bed::new("r");
    // Made before conntrackd starts: it comes over only with the resync
    // the peer asks for.
    bed.in_a(&[
        "conntrack",
        "-I",
        "-p",
        "tcp",
        "-s",
        "198.51.100.10",
        "-d",
        "203.0.113.20",
        "--sport",
        "40000",
        "--dport",
        "80",
        "--state",
        "ESTABLISHED",
        "-u",
        "ASSURED",
        "-t",
        "300",
        "--mark",
        "7",
    ]);
    bed.start_conntrackd();
    bed.start_peer("recv");
    let ready = bed.dir.join("ready");
    wait_for("the peer's socket", Duration::from_secs(5), || {
        ready.exists()
    });
    bed.in_a(&[
        "conntrack",
        "-I",
        "-p",
        "tcp",
        "-s",
        "198.51.100.13",
        "-d",
        "203.0.113.23",
        "--sport",
        "41000",
        "--dport",
        "443",
        "--state",
        "ESTABLISHED",
        "-t",
        "300",
        "--mark",
        "9",
        "--src-nat",
        ADDR_A,
    ]);
    bed.in_a(&[
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        "198.51.100.11",
        "-d",
        "203.0.113.21",
        "--sport",
        "5000",
        "--dport",
        "53",
        "-t",
        "60",
    ]);
    bed.in_a(&["ping", "-c", "1", "-W", "2", ADDR_B]);
    // Through the nftables NAT: a masqueraded source port, and DNAT.
    bed.in_a(&[
        "bash",
        "-c",
        "echo x > /dev/udp/192.0.2.2/9; echo y > /dev/udp/192.0.2.77/7777",
    ]);
    std::fs::write(bed.dir.join("go"), "").unwrap();
    bed.finish_peer(Duration::from_secs(20));
}

#[test]
fn ctcore_to_conntrackd() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut bed = Bed::new("s");
    bed.start_conntrackd();
    bed.start_peer("send");
    bed.finish_peer(Duration::from_secs(20));
}

// --- the half in namespace b ----------------------------------------------

/// One entry of `conntrack -L`.
#[derive(Debug, Clone, PartialEq)]
struct KernelEntry {
    orig: Tuple,
    reply: Tuple,
    mark: u32,
    tcp_state: Option<u8>,
    assured: bool,
    unreplied: bool,
}

/// The kernel's `enum tcp_conntrack`, by the names conntrack prints.
const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

fn parse_entry(line: &str) -> Option<KernelEntry> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let proto: u8 = words.get(1)?.parse().ok()?;
    let mut sides = [Tuple::default(); 2];
    let mut side = None::<usize>;
    let (mut icmp, mut mark, mut tcp_state) = ([(0u16, 0u16); 2], 0, None);
    for w in &words[2..] {
        if let Some(i) = TCP_STATES.iter().position(|s| s == w) {
            tcp_state = Some(i as u8);
        }
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        if k == "src" {
            side = Some(side.map_or(0, |s| s + 1));
        }
        let Some(s) = side.filter(|&s| s < 2) else {
            continue;
        };
        let t = &mut sides[s];
        match k {
            "src" | "dst" => {
                let (a, fam) = Addr::from_ip(v.parse::<IpAddr>().ok()?);
                t.family = fam;
                t.proto = proto;
                if k == "src" {
                    t.src = a
                } else {
                    t.dst = a
                }
            }
            "sport" => t.src_port = v.parse().ok()?,
            "dport" => t.dst_port = v.parse().ok()?,
            "type" => icmp[s].0 = v.parse().ok()?,
            "code" => icmp[s].1 = v.parse().ok()?,
            "id" => t.src_port = v.parse().ok()?,
            "mark" => mark = v.parse().ok()?,
            _ => {}
        }
    }
    for (t, (ty, code)) in sides.iter_mut().zip(icmp) {
        if t.is_icmp() {
            t.dst_port = (ty << 8) | code;
        }
    }
    Some(KernelEntry {
        orig: sides[0],
        reply: sides[1],
        mark,
        tcp_state: if proto == IPPROTO_TCP {
            tcp_state
        } else {
            None
        },
        assured: line.contains("[ASSURED]"),
        unreplied: line.contains("[UNREPLIED]"),
    })
}

fn kernel_table(ns_a: &str) -> Vec<KernelEntry> {
    let mut v = Vec::new();
    for fam in ["ipv4", "ipv6"] {
        let o = output(&["ip", "netns", "exec", ns_a, "conntrack", "-L", "-f", fam]);
        v.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(parse_entry),
        );
    }
    v
}

fn matches_kernel(c: &SyncConn, k: &KernelEntry) -> bool {
    let tcp_state = match c.l4 {
        L4State::Tcp { state, .. } => Some(state),
        _ => None,
    };
    c.orig == k.orig
        && c.reply == k.reply
        && c.mark.unwrap_or(0) == k.mark
        && tcp_state == k.tcp_state
        && (c.status & Status::ASSURED != 0) == k.assured
        && (c.status & Status::SEEN_REPLY == 0) == k.unreplied
}

struct Peer {
    sock: UdpSocket,
    ep: Endpoint,
    start: Instant,
    buf: Vec<u8>,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind((ADDR_B, PORT)).expect("bind the sync port in namespace b");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        Peer {
            sock,
            ep: Endpoint::new(Config::default(), seq, 0),
            start: Instant::now(),
            buf: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Sends what is queued, takes in what arrives for ~50 ms, runs the timers.
    fn step(&mut self, events: &mut Vec<Event>) {
        let now = self.now_ms();
        self.ep.tick(now);
        while self.ep.poll_transmit(now, &mut self.buf) {
            // conntrackd sends from another socket (an ephemeral port) than
            // the one it receives on: no connect().
            self.sock
                .send_to(&self.buf, (ADDR_A, PORT))
                .expect("send to conntrackd");
        }
        let mut d = [0u8; 65536];
        if let Ok((n, _)) = self.sock.recv_from(&mut d) {
            let now = self.now_ms();
            self.ep.on_datagram(now, &d[..n], events);
        }
    }
}

fn conntrackd(ns_a: &str, dir: &Path, args: &[&str]) -> String {
    let conf = dir.join("conntrackd.conf");
    let mut cmd = vec![
        "ip",
        "netns",
        "exec",
        ns_a,
        "conntrackd",
        "-C",
        conf.to_str().unwrap(),
    ];
    cmd.extend_from_slice(args);
    run(&cmd)
}

/// The in-namespace half of the tests above, which start it with
/// `ip netns exec`; on its own (no `CTSYNC_ROLE`) it has nothing to check.
#[test]
#[ignore = "run by conntrackd_to_ctcore / ctcore_to_conntrackd inside a namespace"]
fn conntrackd_peer() {
    let Ok(role) = std::env::var("CTSYNC_ROLE") else {
        eprintln!("conntrackd_peer: started outside its tests, nothing to do");
        return;
    };
    let dir = PathBuf::from(std::env::var("CTSYNC_DIR").unwrap());
    let ns_a = std::env::var("CTSYNC_NS_A").unwrap();
    match role.as_str() {
        "recv" => peer_receives(&dir, &ns_a),
        "send" => peer_sends(&dir, &ns_a),
        r => panic!("unknown role {r}"),
    }
    println!("peer: passed");
}

fn peer_receives(dir: &Path, ns_a: &str) {
    let mut peer = Peer::new();
    peer.ep.request_resync();
    std::fs::write(dir.join("ready"), "").unwrap();
    let mut cache: HashMap<Tuple, SyncConn> = HashMap::new();
    let mut events = Vec::new();
    let end = Instant::now() + Duration::from_secs(12);
    let mut last_check = Instant::now();
    let mut report = String::new();
    loop {
        peer.step(&mut events);
        for e in events.drain(..) {
            match e {
                Event::Ct {
                    event: CtEvent::Destroy,
                    conn,
                } => {
                    cache.remove(&conn.orig);
                }
                Event::Ct { conn, .. } => {
                    cache.insert(conn.orig, conn);
                }
                Event::ResyncRequested | Event::PeerSilent => {}
            }
        }
        if last_check.elapsed() >= Duration::from_millis(500) && dir.join("go").exists() {
            last_check = Instant::now();
            let kernel = kernel_table(ns_a);
            let missing: Vec<_> = kernel
                .iter()
                .filter(|k| !cache.get(&k.orig).is_some_and(|c| matches_kernel(c, k)))
                .collect();
            let extra: Vec<_> = cache
                .values()
                .filter(|c| !kernel.iter().any(|k| k.orig == c.orig))
                .collect();
            let rsqueue = conntrackd(ns_a, dir, &["-s", "rsqueue"]);
            let unacked = rsqueue.lines().filter(|l| l.contains("object ->")).count();
            let nat = kernel
                .iter()
                .filter(|k| k.reply != k.orig.invert().unwrap())
                .count();
            report = format!(
                "kernel {} entries ({nat} with NAT), decoded {}, not matched {missing:#?}, not in the kernel {extra:#?}, \
                 conntrackd's unacknowledged connections {unacked}, counters {:?}",
                kernel.len(),
                cache.len(),
                peer.ep.counters()
            );
            // The pre-made TCP, the SNAT one, UDP, ICMP, two through nftables
            // and the sync channel's own flow.
            if kernel.len() >= 7 && missing.is_empty() && extra.is_empty() && unacked == 0 {
                assert!(nat >= 3, "{report}");
                break;
            }
        }
        assert!(
            Instant::now() < end,
            "conntrackd's state did not come over: {report}"
        );
    }
    let c = peer.ep.counters();
    assert_eq!(c.malformed, 0, "{c:?}");
    assert!(c.received > 0 && c.sent > 0, "{c:?}");
    println!("{report}");
    for conn in cache.values() {
        println!("  {conn:?}");
    }
}

fn v4(a: [u8; 4]) -> Addr {
    Addr::from_v4(a)
}

fn conns_to_send() -> Vec<SyncConn> {
    let tcp = L4State::Tcp {
        state: 3,
        wscale_orig: None,
        wscale_reply: None,
    };
    let seen = Status::CONFIRMED | Status::SEEN_REPLY | Status::ASSURED;
    let t = |src, dst, sp, dp, proto| Tuple {
        src: v4(src),
        dst: v4(dst),
        src_port: sp,
        dst_port: dp,
        proto,
        family: Family::V4,
        zone: 0,
    };
    // TCP, SNAT to 192.0.2.1:61020.
    let o1 = t(
        [198, 51, 100, 20],
        [203, 0, 113, 30],
        40001,
        443,
        IPPROTO_TCP,
    );
    let mut r1 = o1.invert().unwrap();
    r1.dst = v4([192, 0, 2, 1]);
    r1.dst_port = 61020;
    // UDP, DNAT to 192.0.2.2:5300.
    let o2 = t([198, 51, 100, 21], [203, 0, 113, 31], 5353, 53, IPPROTO_UDP);
    let mut r2 = o2.invert().unwrap();
    r2.src = v4([192, 0, 2, 2]);
    r2.src_port = 5300;
    // ICMP echo, id 4660.
    let o3 = t(
        [198, 51, 100, 22],
        [203, 0, 113, 32],
        4660,
        8 << 8,
        IPPROTO_ICMP,
    );
    // IPv6 TCP, SNAT to 2001:db8::1 port 61021.
    let v6 = |s: &str| Addr(s.parse::<std::net::Ipv6Addr>().unwrap().octets());
    let o4 = Tuple {
        src: v6("2001:db8:1::10"),
        dst: v6("2001:db8:2::20"),
        src_port: 40002,
        dst_port: 80,
        proto: IPPROTO_TCP,
        family: Family::V6,
        zone: 0,
    };
    let mut r4 = o4.invert().unwrap();
    r4.dst = v6("2001:db8::1");
    r4.dst_port = 61021;
    vec![
        SyncConn::new(o1, r1, seen, Some(600), Some(3), tcp),
        SyncConn::new(
            o2,
            r2,
            Status::CONFIRMED | Status::SEEN_REPLY,
            Some(120),
            Some(4),
            L4State::None,
        ),
        SyncConn::new(
            o3,
            o3.invert().unwrap(),
            Status::CONFIRMED | Status::SEEN_REPLY,
            Some(30),
            None,
            L4State::None,
        ),
        SyncConn::new(o4, r4, seen, Some(600), Some(5), tcp),
    ]
}

fn peer_sends(dir: &Path, ns_a: &str) {
    let mut peer = Peer::new();
    let conns = conns_to_send();
    for c in &conns {
        peer.ep.send(CtEvent::New, *c);
    }
    let mut events = Vec::new();
    let end = Instant::now() + Duration::from_secs(8);
    // conntrackd ACKs at its next idle second.
    loop {
        peer.step(&mut events);
        if peer.ep.counters().sent >= conns.len() as u64 && peer.ep.unacked_conns() == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "conntrackd did not acknowledge: {} unacked, {:?}",
            peer.ep.unacked_conns(),
            peer.ep.counters()
        );
    }
    let external = conntrackd(ns_a, dir, &["-e"]);
    println!("conntrackd -e:\n{external}");
    let listed: Vec<KernelEntry> = external.lines().filter_map(parse_entry).collect();
    for c in &conns {
        assert!(
            listed.iter().any(|k| k.orig == c.orig),
            "conntrackd's external cache lacks {:?}",
            c.orig
        );
    }
    assert_eq!(listed.len(), conns.len(), "{external}");
    let stats = conntrackd(ns_a, dir, &["-s", "network"]);
    let malformed = stats
        .lines()
        .find(|l| l.contains("Malformed messages"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("?");
    assert_eq!(malformed, "0", "{stats}");
    // Committed to the kernel, the entries show their NAT in the reply tuple.
    conntrackd(ns_a, dir, &["-c"]);
    let kernel = kernel_table(ns_a);
    println!("conntrack -L after conntrackd -c:");
    for k in &kernel {
        println!("  {k:?}");
    }
    for c in &conns {
        let k = kernel
            .iter()
            .find(|k| k.orig == c.orig)
            .unwrap_or_else(|| panic!("the kernel lacks {:?} after the commit", c.orig));
        assert_eq!(k.reply, c.reply, "{:?}", c.orig);
        assert_eq!(k.mark, c.mark.unwrap_or(0), "{:?}", c.orig);
        if let L4State::Tcp { state, .. } = c.l4 {
            assert_eq!(k.tcp_state, Some(state), "{:?}", c.orig);
        }
    }
    // Our messages went out once: nothing was NACKed.
    let cnt = peer.ep.counters();
    assert_eq!((cnt.retransmitted, cnt.malformed), (0, 0), "{cnt:?}");
}
