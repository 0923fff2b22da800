//! Fragments through the appliance, as real hosts send them: ctgate
//! reassembles like the kernel's nf_defrag before conntrack, tracks and
//! translates the whole datagram, and sends the original fragments on,
//! rewritten. Through masquerade, with a policy that lets nothing new in
//! from outside:
//! - a 4000-byte UDP datagram the client's kernel fragments (IPv4 and
//!   IPv6) reaches the server from the masquerade address, and its echo,
//!   fragmented by the server's kernel, comes back whole;
//! - hand-made IPv4 fragment sets from a raw socket: last fragment first
//!   and a first fragment of 8 bytes get through; overlapping fragments
//!   (RFC 5722) and an incomplete set with a duplicate never reach the
//!   server, each fragment counted under its drop reason.
//!
//! The hosts sit behind net_tap ports (see the test for why not af_packet).
//!
//! TEST-NET addresses only, no default route anywhere, every wait bounded.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::hosts::{lines, wait_for};
use support::netns::{Gate, Net};
use support::*;

fn config(net: &Net, workers: usize) -> String {
    format!(
        r#"workers = [{lcores}]
worker_cpus = [{cpus}]
{eal}
mempool_mbufs = 8191

[[port]]
name = "in"
devargs = "net_tap0,iface={cli}"
ipv4 = "192.0.2.1/24"
ipv6 = "2001:db8:1::1/64"

[[port]]
name = "out"
devargs = "net_tap1,iface={srv}"
ipv4 = "198.51.100.1/24"
ipv6 = "2001:db8:2::1/64"

[conntrack]
max_connections = 4096
policy_default = "drop"

[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "new-from-inside"
in_port = "in"
states = "new"
action = "accept"

[[nat]]
name = "masquerade"
out_port = "out"
action = "masquerade"
"#,
        eal = eal_args_toml(),
        lcores = (1..=workers)
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cpus = vec!["1"; workers].join(", "),
        cli = net.gw_if("cli"),
        srv = net.gw_if("srv"),
    )
}

fn script() -> String {
    repo()
        .join("tests/support/frag_hosts.py")
        .to_string_lossy()
        .into_owned()
}

fn spawn(net: &Net, host: &str, log: &Path, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &net.ns(host), "python3", &script()])
        .args(args)
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs a client in `host`; its output.
fn client(net: &Net, host: &str, args: &[&str]) -> String {
    let out = run_for(
        Command::new("ip")
            .args(["netns", "exec", &net.ns(host), "python3", &script()])
            .args(args),
        20,
    );
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn fragments_are_reassembled_tracked_translated_and_forwarded() {
    fragments(1);
}

/// The same with two workers: a datagram's fragments all go to one worker
/// (software dispatch by addresses and id), whose connection may live in
/// the other's stripe.
#[test]
fn fragments_with_two_workers() {
    fragments(2);
}

fn fragments(workers: usize) {
    require_root();
    let _one = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(&format!("frag{workers}"));
    let mut net = Net::new(&format!("ctf{workers}"));
    // TAP ports: DPDK's net_af_packet asks the kernel to defragment what its
    // packet socket receives (PACKET_FANOUT_FLAG_DEFRAG), so it would never
    // hand ctgate a fragment.
    let gate = Gate::start(&dir.0, &config(&net, workers));
    net.tap_host(
        "cli",
        &["192.0.2.10/24", "2001:db8:1::10/64"],
        &[
            ("198.51.100.0/24", "192.0.2.1"),
            ("2001:db8:2::/64", "2001:db8:1::1"),
        ],
    );
    net.tap_host("srv", &["198.51.100.2/24", "2001:db8:2::2/64"], &[]);

    let (log4, log6) = (dir.path("echo4"), dir.path("echo6"));
    let mut servers = [
        spawn(
            &net,
            "srv",
            &log4,
            &["echo-server", "198.51.100.2", "7000", "60"],
        ),
        spawn(
            &net,
            "srv",
            &log6,
            &["echo-server", "2001:db8:2::2", "7000", "60"],
        ),
    ];
    assert!(wait_for(20, || lines(&log4).contains(&"listening".into())
        && lines(&log6).contains(&"listening".into())));

    // Datagrams the kernels fragment, both ways.
    let v4 = client(
        &net,
        "cli",
        &["big-client", "192.0.2.10", "198.51.100.2", "7000", "4000"],
    );
    if !v4.contains("echo 4000 ok") {
        let st = gate.stop();
        panic!(
            "IPv4: {v4}; server {:?}; stats {:#}",
            lines(&log4),
            st.stats
        );
    }
    let v6 = client(
        &net,
        "cli",
        &[
            "big-client",
            "2001:db8:1::10",
            "2001:db8:2::2",
            "7000",
            "4000",
        ],
    );
    assert!(v6.contains("echo 4000 ok"), "IPv6: {v6}");

    // Hand-made fragment sets.
    let shapes = [
        ("reverse", "5601", "echo 3000 ok"),
        ("tiny", "5602", "echo 3000 ok"),
        ("overlap", "5603", "no echo"),
        ("dup", "5604", "no echo"),
    ];
    for (shape, sport, want) in shapes {
        let out = client(
            &net,
            "cli",
            &[
                "raw-fragments",
                "192.0.2.10",
                sport,
                "198.51.100.2",
                "7000",
                "3000",
                shape,
            ],
        );
        assert!(out.contains(want), "{shape}: {out}");
    }

    // The server saw four whole IPv4 datagrams and one IPv6 one, all from
    // the masquerade addresses.
    let got4: Vec<String> = lines(&log4)
        .into_iter()
        .filter(|l| l.starts_with("got"))
        .collect();
    let got6: Vec<String> = lines(&log6)
        .into_iter()
        .filter(|l| l.starts_with("got"))
        .collect();
    assert_eq!(got4.len(), 3, "{got4:?}");
    assert!(
        got4[0].starts_with("got 4000 from 198.51.100.1 "),
        "{got4:?}"
    );
    assert!(got4[1..]
        .iter()
        .all(|l| l.starts_with("got 3000 from 198.51.100.1 ")));
    assert_eq!(got6.len(), 1, "{got6:?}");
    assert!(
        got6[0].starts_with("got 4000 from 2001:db8:2::1 "),
        "{got6:?}"
    );

    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let stopped = gate.stop();
    stopped.assert_balanced();
    let drops = &stopped.stats["totals"]["drops"];
    let counters = &stopped.stats["conntrack"]["counters"];
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    // Overlap: the second fragment, and the first with its datagram.
    assert_eq!(n(drops, "frag_overlap"), 1, "{drops:#}");
    assert_eq!(n(drops, "frag_datagram_dropped"), 1, "{drops:#}");
    // The incomplete set: its duplicate dropped; its two others held
    // until ctgate stopped (the datagram's 30 s had not passed).
    assert_eq!(n(drops, "frag_duplicate"), 1, "{drops:#}");
    assert!(n(drops, "shutdown") >= 2, "{drops:#}");
    // Whole datagrams tracked: 2 x 4000 each way, 2 x 3000 each way (the
    // echoes came back fragmented by the server's kernel).
    assert_eq!(n(counters, "frag_reassembled"), 8, "{counters:#}");
    println!(
        "frag ({workers} worker(s)): server saw {got4:?} {got6:?}; drops {drops}; reassembly {}",
        counters
            .as_object()
            .map(|o| o
                .iter()
                .filter(|(k, _)| k.starts_with("frag"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default()
    );
}
