//! An HA pair of real appliances between real hosts: a long TCP download and
//! a UDP stream go through the active ctgate, which is killed (SIGKILL); the
//! backup, which stood by answering nothing (`[sync] role = "backup"`),
//! takes over (`ctgate ha takeover`, or by itself when the active one falls
//! silent) and announces the shared addresses with gratuitous ARP, the way
//! keepalived moves a VRRP address: the hosts change nothing.
//!
//! With state sync the transfers go on: no reset, the same TCP connection,
//! the server sees the same masquerade address and port before and after.
//! The same run without it (the active box syncs nothing; the backup takes
//! over the addresses all the same) shows what the sync is for: the download
//! stalls and the UDP stream comes out of another port.
//!
//! Layout (namespaces `ctha-cli` and `ctha-srv`, each a bridge over its
//! links to both appliances; both appliances have 192.0.2.1 inside and
//! 198.51.100.1 outside, like a VRRP pair's virtual addresses):
//!
//! ```text
//!   cli 192.0.2.10 on br0 { eth0 -- ctha-cli  [A] ctha-srv  -- eth0 } br0 198.51.100.2 srv
//!                        { eth1 -- ctha-bcli [B] ctha-bsrv -- eth1 }
//! ```
//! The sync runs over loopback between the two processes. TEST-NET addresses
//! only, no default route anywhere, every wait bounded.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::hosts::{last_number, lines, wait_for, wait_listening, Programs};
use support::netns::{Gate, Net};
use support::*;

const TOKEN: &str = "ha-test-token-0123456789abcdef";
const PREFIX: &str = "ctha";
/// How long the hosts' programs run at most.
const PROGRAM_SECS: &str = "90";

fn sh(args: &[&str]) {
    let out = run_for(Command::new(args[0]).args(&args[1..]), 30);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Frames with partial checksums or GSO super-frames must not reach af_packet.
fn offloads_off(ns: Option<&str>, dev: &str) {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["ip", "netns", "exec", ns]);
    }
    args.extend([
        "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
    ]);
    let _ = run_for(Command::new(args[0]).args(&args[1..]), 30);
}

/// The two hosts, each with a link to A (eth0) and one to B (eth1) under
/// one bridge: one Ethernet segment per side, as a VRRP pair's.
fn hosts(net: &mut Net) {
    net.host("cli", &[], &[]);
    net.host("srv", &[], &[]);
    // DPDK's af_packet joins each port's sockets to fanout group
    // (pid ^ ifindex) & 0xffff; two processes whose pids are close and whose
    // interfaces' indexes are close can land on the same group, which the
    // kernel refuses (EINVAL). B's interfaces get indexes far from A's.
    let far = 40_000 + (std::process::id() % 10_000) * 2;
    for (i, host) in ["cli", "srv"].into_iter().enumerate() {
        let ns = net.ns(host);
        let b = format!("{PREFIX}-b{host}");
        let index = (far + i as u32).to_string();
        sh(&[
            "ip", "link", "add", &b, "index", &index, "type", "veth", "peer", "name", "eth1",
            "netns", &ns,
        ]);
        sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{b}.disable_ipv6=1"),
        ]);
        sh(&["ip", "link", "set", &b, "up"]);
        offloads_off(None, &b);
        offloads_off(Some(&ns), "eth1");
        sh(&["ip", "-n", &ns, "link", "add", "br0", "type", "bridge"]);
        for dev in ["eth0", "eth1"] {
            sh(&["ip", "-n", &ns, "link", "set", dev, "master", "br0"]);
            sh(&["ip", "-n", &ns, "link", "set", dev, "up"]);
        }
        sh(&["ip", "-n", &ns, "link", "set", "br0", "up"]);
    }
    let (cli, srv) = (net.ns("cli"), net.ns("srv"));
    sh(&[
        "ip",
        "-n",
        &cli,
        "addr",
        "add",
        "192.0.2.10/24",
        "dev",
        "br0",
    ]);
    sh(&[
        "ip",
        "-n",
        &cli,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.1",
    ]);
    sh(&[
        "ip",
        "-n",
        &srv,
        "addr",
        "add",
        "198.51.100.2/24",
        "dev",
        "br0",
    ]);
}

/// The MAC address `host` uses for `ip` (its neighbour entry), if any.
fn neighbour_mac(net: &Net, host: &str, ip: &str) -> Option<String> {
    let out = net.check(host, &["ip", "neigh", "show", ip], 10);
    let mut w = out.split_whitespace();
    w.by_ref().find(|t| *t == "lladdr")?;
    w.next().map(str::to_owned)
}

fn mac_of(dev: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/address"))
        .unwrap()
        .trim()
        .to_owned()
}

/// One appliance: ports `cli_if` / `srv_if`, masquerade to a port range,
/// the inside may open connections and the outside only answer; REST on
/// `api`; `sync` is its `[sync]` section (empty: none).
fn config(cli_if: &str, srv_if: &str, api: &str, sync: &str) -> String {
    format!(
        r#"workers = [1]
{eal}
mempool_mbufs = 4095

[[port]]
name = "cli"
devargs = "net_af_packet0,iface={cli_if}"
ipv4 = "192.0.2.1/24"

[[port]]
name = "srv"
devargs = "net_af_packet1,iface={srv_if}"
ipv4 = "198.51.100.1/24"

[conntrack]
max_connections = 4096
policy_default = "drop"

[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "new-from-inside"
in_port = "cli"
states = "new"
action = "accept"

[[nat]]
name = "masquerade"
out_port = "srv"
src = "192.0.2.0/24"
action = "masquerade to :40000-60000 random"

[rest]
bind = "{api}"
token = "{TOKEN}"

{sync}
"#,
        eal = eal_args_toml(),
    )
}

fn sync_section(bind: &str, peer: &str, role: &str, takeover: &str) -> String {
    format!(
        "[sync]\nenabled = true\nmode = \"ftfw\"\nbind = \"{bind}\"\npeer = \"{peer}\"\nalive_interval_ms = 200\nalive_timeout_ms = 1000\nrole = \"{role}\"\ntakeover = \"{takeover}\"\n"
    )
}

/// How the backup takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// `ctgate ha takeover`, then the next hop moves.
    Manual,
    /// By itself when the active one falls silent (`takeover = "auto"`).
    Auto,
    /// The active box syncs nothing (the backup, standing by, learns
    /// nothing), and the backup takes over as in `Manual`.
    NoSync,
}

/// The last value of a `bytes N` progress line.
fn bytes(log: &Path) -> u64 {
    last_number(log, "bytes ")
}

/// The last `udp sent N answered M`: M.
fn answered(log: &Path) -> u64 {
    last_number(log, "answered ")
}

/// `ctgate ha ...` against the appliance at `api`; its stdout.
fn ha_cli(api: &str, args: &[&str]) -> String {
    let out = run_for(
        Command::new(ctgate())
            .args(["ha", "--api", &format!("http://{api}"), "--token", TOKEN])
            .args(args),
        30,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctgate ha {args:?} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// What one run saw.
struct Outcome {
    bytes_before: u64,
    bytes_after: u64,
    answered_before: u64,
    answered_after: u64,
    /// The download client's lines that report a failure.
    client_errors: Vec<String>,
    /// Connections the download server accepted, and its "closed" lines.
    accepted: Vec<String>,
    closed: Vec<String>,
    /// The UDP sources (address port) the server saw.
    udp_sources: Vec<String>,
    /// The backup's `ha cache` before the takeover and its takeover line.
    cache: String,
    takeover: String,
    /// The backup's table after the transfers went on (`ct list`).
    table: String,
    /// What `ctgate ct events` on the backup printed around the takeover.
    events: String,
}

/// The failover run.
fn failover(run: Run) -> Outcome {
    let with_sync = run != Run::NoSync;
    let tag = format!("{run:?}").to_lowercase();
    let dir = TempDir::new(&format!("ha-{tag}"));
    let mut net = Net::new(PREFIX);
    hosts(&mut net);
    let (api_a, api_b) = ("127.0.0.1:18301", "127.0.0.1:18302");
    let (sync_a, sync_b) = ("127.0.0.1:37801", "127.0.0.1:37802");
    let takeover = if run == Run::Auto { "auto" } else { "manual" };
    let a_sync = if with_sync {
        sync_section(sync_a, sync_b, "active", "manual")
    } else {
        String::new()
    };
    // Without sync the backup still stands by (and takes the addresses
    // over); its peer address is one nothing sends from.
    let b_peer = if with_sync { sync_a } else { "127.0.0.1:37899" };
    let b_sync = sync_section(sync_b, b_peer, "backup", takeover);
    let dir_a = dir.path("a");
    let dir_b = dir.path("b");
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let gate_a = Gate::start(
        &dir_a,
        &config(&net.gw_if("cli"), &net.gw_if("srv"), api_a, &a_sync),
    );
    let mut gate_b = Gate::start(
        &dir_b,
        &config(
            &format!("{PREFIX}-bcli"),
            &format!("{PREFIX}-bsrv"),
            api_b,
            &b_sync,
        ),
    );
    if with_sync {
        gate_b.wait_log(&["sync: peer heard"], 20);
    }
    let status = ha_cli(api_b, &["status"]);
    assert!(status.starts_with("standby (backup)"), "{status}");

    let mut progs = Programs::default();
    let (srv_log, udps_log) = (dir.path("download-server"), dir.path("udp-server"));
    let (cli_log, udpc_log) = (dir.path("download-client"), dir.path("udp-client"));
    progs.start(
        &net.ns("srv"),
        &srv_log,
        &["download-server", "198.51.100.2", "8080", PROGRAM_SECS],
    );
    progs.start(
        &net.ns("srv"),
        &udps_log,
        &["udp-server", "198.51.100.2", "5353", PROGRAM_SECS],
    );
    wait_listening(&srv_log);
    wait_listening(&udps_log);
    progs.start(
        &net.ns("cli"),
        &cli_log,
        &[
            "download-client",
            "192.0.2.10",
            "33000",
            "198.51.100.2",
            "8080",
            PROGRAM_SECS,
        ],
    );
    progs.start(
        &net.ns("cli"),
        &udpc_log,
        &[
            "udp-client",
            "192.0.2.10",
            "5000",
            "198.51.100.2",
            "5353",
            PROGRAM_SECS,
        ],
    );
    assert!(
        wait_for(20, || bytes(&cli_log) > 1_000_000
            && answered(&udpc_log) > 50),
        "no traffic through the active appliance: {:?} {:?}",
        lines(&cli_log).last(),
        lines(&udpc_log).last()
    );

    // The hosts send to A: the backup answered no ARP.
    let mac_a = mac_of(&net.gw_if("cli"));
    let mac_b = mac_of(&format!("{PREFIX}-bcli"));
    assert_eq!(
        neighbour_mac(&net, "cli", "192.0.2.1").as_deref(),
        Some(mac_a.as_str())
    );

    // What the backup learnt, before the active one dies.
    let cache = if with_sync {
        let mut cache = String::new();
        let learnt = wait_for(10, || {
            cache = ha_cli(api_b, &["cache"]);
            cache.contains("dport=8080") && cache.contains("dport=5353")
        });
        assert!(
            learnt,
            "the backup's external cache lacks the two flows:\n{cache}"
        );
        cache
    } else {
        String::new()
    };

    // The active appliance dies.
    drop(gate_a);
    let bytes_before = bytes(&cli_log);
    let answered_before = answered(&udpc_log);
    // Someone watching the backup's events (`ctgate ct events`) sees the
    // committed connections arrive.
    let events_log = dir.path("events");
    let mut events = Command::new(ctgate())
        .args([
            "ct",
            "--api",
            &format!("http://{api_b}"),
            "--token",
            TOKEN,
            "events",
        ])
        .stdout(std::fs::File::create(&events_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The backup commits what it learnt, then takes the addresses over.
    let takeover = match run {
        Run::Manual | Run::NoSync => ha_cli(api_b, &["takeover"]),
        Run::Auto => gate_b.wait_log(&["sync: external cache committed"], 20),
    };
    // Enough for TCP's retransmission timer to fire a few times.
    std::thread::sleep(Duration::from_secs(6));
    let _ = events.kill();
    let _ = events.wait();
    let events = std::fs::read_to_string(&events_log).unwrap_or_default();
    let bytes_after = bytes(&cli_log);
    let answered_after = answered(&udpc_log);
    // Its gratuitous ARP moved the client's next hop.
    assert_eq!(
        neighbour_mac(&net, "cli", "192.0.2.1").as_deref(),
        Some(mac_b.as_str()),
        "the client still sends to A"
    );
    let table = run_for(
        Command::new(ctgate()).args([
            "ct",
            "--api",
            &format!("http://{api_b}"),
            "--token",
            TOKEN,
            "list",
        ]),
        30,
    );
    let srv = lines(&srv_log);
    let out = Outcome {
        bytes_before,
        bytes_after,
        answered_before,
        answered_after,
        client_errors: lines(&cli_log)
            .into_iter()
            .filter(|l| l.starts_with("error"))
            .collect(),
        accepted: srv
            .iter()
            .filter(|l| l.starts_with("accepted"))
            .cloned()
            .collect(),
        closed: srv
            .iter()
            .filter(|l| l.starts_with("closed"))
            .cloned()
            .collect(),
        udp_sources: lines(&udps_log)
            .into_iter()
            .filter_map(|l| l.strip_prefix("from ").map(str::to_owned))
            .collect(),
        cache,
        takeover,
        table: String::from_utf8_lossy(&table.stdout).into_owned(),
        events,
    };
    drop(progs);
    let stopped = gate_b.stop();
    stopped.assert_balanced();
    println!(
        "failover {tag}: download {} bytes before the takeover, {} after {} s; UDP answers {} -> {}; server saw TCP {:?} UDP {:?}",
        out.bytes_before,
        out.bytes_after,
        6,
        out.answered_before,
        out.answered_after,
        out.accepted,
        out.udp_sources
    );
    out
}

#[test]
fn a_backup_with_sync_keeps_every_connection_and_binding_and_one_without_loses_them() {
    require_root();
    let _one = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());

    let with = failover(Run::Manual);
    assert!(with.takeover.starts_with("committed "), "{}", with.takeover);
    assert!(
        !with.takeover.starts_with("committed 0 "),
        "the takeover committed nothing: {}",
        with.takeover
    );
    kept(&with);

    // The same, the backup taking over by itself when the active one falls
    // silent (the next hop moves after its alive timeout, as keepalived's
    // would after its own).
    let auto = failover(Run::Auto);
    assert!(
        auto.takeover.contains("committed=") && !auto.takeover.contains("committed=0 "),
        "{}",
        auto.takeover
    );
    kept(&auto);

    let without = failover(Run::NoSync);
    assert!(
        without.takeover.starts_with("committed 0 "),
        "{}",
        without.takeover
    );
    lost(&without);
}

/// The checks of a run with sync: every connection and binding kept.
fn kept(with: &Outcome) {
    assert!(
        with.events
            .lines()
            .any(|l| l.contains("[NEW]") && l.contains("dport=8080") && l.contains("ESTABLISHED")),
        "the committed download's NEW event:\n{}",
        with.events
    );
    assert!(with
        .cache
        .contains("src=192.0.2.10 dst=198.51.100.2 sport=33000 dport=8080"));
    assert!(
        with.cache.contains("dst=198.51.100.1"),
        "the NAT binding: {}",
        with.cache
    );
    // The download goes on, on the same connection.
    assert!(
        with.bytes_after > with.bytes_before + 1_000_000,
        "the download did not go on through the backup: {} -> {}",
        with.bytes_before,
        with.bytes_after
    );
    assert!(with.client_errors.is_empty(), "{:?}", with.client_errors);
    assert_eq!(
        with.accepted.len(),
        1,
        "one TCP connection: {:?}",
        with.accepted
    );
    assert!(with.closed.is_empty(), "{:?}", with.closed);
    assert!(with.accepted[0].starts_with("accepted 198.51.100.1 "));
    // The UDP stream too, from the same masquerade address and port.
    assert!(
        with.answered_after > with.answered_before + 100,
        "UDP answers stopped: {} -> {}",
        with.answered_before,
        with.answered_after
    );
    assert_eq!(
        with.udp_sources.len(),
        1,
        "the server saw the UDP stream from one address and port: {:?}",
        with.udp_sources
    );
    assert!(with.udp_sources[0].starts_with("198.51.100.1 "));
    // The backup's table holds the download, translated as before.
    let port = with.accepted[0].rsplit(' ').next().unwrap();
    assert!(
        with.table.lines().any(|l| l.contains("dport=8080")
            && l.contains(&format!("dport={port} "))
            && l.contains("ESTABLISHED")),
        "the backup's table:\n{}",
        with.table
    );
}

fn lost(without: &Outcome) {
    // The download stalls: the backup drops the server's segments to a
    // masquerade port it knows nothing of.
    assert!(
        without.bytes_after < without.bytes_before + 200_000,
        "without sync the download should stall: {} -> {}",
        without.bytes_before,
        without.bytes_after
    );
    // The client's datagrams leave from another masquerade port: the
    // server's stream from the first one is gone.
    assert_eq!(
        without.udp_sources.len(),
        2,
        "without sync the UDP stream should come from a second port: {:?}",
        without.udp_sources
    );
}
