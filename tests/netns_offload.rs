//! RX checksum offload with a real PMD that has it: net_tap verifies TCP and
//! UDP checksums and marks each mbuf GOOD or BAD. ctgate enables the offload
//! (and says so at start), conntrack skips its software check for GOOD
//! packets (counted: `csum_offloaded`) and finds BAD ones INVALID, as the
//! kernel does with CHECKSUM_UNNECESSARY.
//!
//! Hosts: `cli` behind ctgate's net_tap port (the TAP device moved into the
//! host's namespace), `srv` behind a net_af_packet port.

mod support;

use std::time::Duration;

use support::netns::{Gate, Net};
use support::*;

const P: &str = "ctof";

const UDP_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.2", 9999))
print("ready", flush=True)
with open(sys.argv[1], "a") as log:
    while True:
        data, _ = s.recvfrom(2048)
        log.write(data.decode() + "\n")
        log.flush()
"#;

/// Three datagrams with a wrong UDP checksum (raw socket: the kernel leaves
/// the UDP header as given), then three ordinary ones.
const UDP_CLIENT: &str = r#"
import socket, struct, time
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
for i in range(3):
    payload = b"bad%d" % i
    raw.sendto(struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0x1234) + payload, ("198.51.100.2", 0))
    time.sleep(0.05)
good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3):
    good.sendto(b"good%d" % i, ("198.51.100.2", 9999))
    time.sleep(0.05)
"#;

#[test]
fn checksums_the_nic_verified_are_not_verified_again() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("offload");
    let mut net = Net::new(P);
    net.host(
        "srv",
        &["198.51.100.2/24"],
        &[("192.0.2.0/24", "198.51.100.1")],
    );
    let config = format!(
        r#"workers = [1]
mempool_mbufs = 4095
{eal}

[[port]]
name = "cli"
devargs = "net_tap0,iface={tap}"
ipv4 = "192.0.2.1/24"

[[port]]
name = "srv"
devargs = "net_af_packet1,iface={srv}"
ipv4 = "198.51.100.1/24"
"#,
        eal = eal_args_toml(),
        tap = net.gw_if("cli"),
        srv = net.gw_if("srv"),
    );
    let gate = Gate::start(&dir.0, &config);
    net.tap_host(
        "cli",
        &["192.0.2.2/24"],
        &[("198.51.100.0/24", "192.0.2.1")],
    );

    // TCP: an HTTP transfer through the TAP port, its checksums verified by
    // the PMD.
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let body: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(www.join("f.txt"), &body).unwrap();
    let www = www.to_string_lossy().into_owned();
    net.spawn(
        "srv",
        &[
            "python3",
            "-u",
            "-m",
            "http.server",
            "--bind",
            "198.51.100.2",
            "--directory",
            &www,
            "8080",
        ],
        Some("Serving HTTP"),
    );
    let got = net.check(
        "cli",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://198.51.100.2:8080/f.txt",
        ],
        20,
    );
    assert_eq!(got, body, "the transfer arrives whole");

    // UDP: datagrams with a bad checksum are INVALID (dropped by the default
    // policy), good ones pass.
    let log = dir.path("udp.log");
    let log_s = log.to_string_lossy().into_owned();
    net.spawn(
        "srv",
        &["python3", "-u", "-c", UDP_SERVER, &log_s],
        Some("ready"),
    );
    net.check("cli", &["python3", "-c", UDP_CLIENT], 20);
    std::thread::sleep(Duration::from_millis(500));
    let received = std::fs::read_to_string(&log).unwrap_or_default();
    net.stop_programs();
    let stopped = gate.stop();

    let mut lines: Vec<&str> = received.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["good0", "good1", "good2"],
        "only the good datagrams pass"
    );
    let ct = &stopped.stats["conntrack"]["counters"];
    let offloaded = ct["csum_offloaded"].as_u64().unwrap();
    let invalid = ct["invalid"].as_u64().unwrap();
    // The client's TCP segments (handshake, request, ACKs) and its 3 good
    // datagrams came in through the TAP port with a GOOD mark.
    assert!(offloaded >= 8, "csum_offloaded {offloaded}\n{ct}");
    assert!(invalid >= 3, "the bad datagrams are INVALID: {ct}");
    assert!(
        stopped.stats["ports"][0]["driver"] == "net_tap",
        "{}",
        stopped.stats["ports"]
    );
}
