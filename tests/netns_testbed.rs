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

#[test]
fn hosts_talk_through_ctgate() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("netns");
    let mut bed = Bed::up(P);

    let config = format!(
        r#"
workers = [1]
mempool_mbufs = 4095
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
"#,
        eal = eal_args_toml()
    );
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
    // Wait for "forwarding" on its log, bounded.
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
}
