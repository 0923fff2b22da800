//! `ctgate replay` as a user runs it: a capture in, the table out (in
//! `conntrack -L -o extended` format), translated frames in `--out`, and
//! one-line errors for bad input.

mod support;

use std::process::Command;

use appliance::pcap;
use ctcore::tuple::{Addr, Family};
use ctcore::wire::build::{frame, L4Spec};
use ctcore::wire::{parse, L4};
use support::{ctgate, TempDir};

fn write_capture(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut w = pcap::Writer::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(
            1_700_000_000_000_000_000 + i as u64 * 1_000_000,
            f.len() as u32,
            f,
        )
        .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn replay_with_snat_prints_the_table_and_writes_translated_frames() {
    let dir = TempDir::new("replay");
    let c = Addr::from_v4([192, 0, 2, 10]);
    let s = Addr::from_v4([198, 51, 100, 20]);
    let frames = vec![
        frame(
            Family::V4,
            c,
            s,
            64,
            L4Spec::Udp {
                src_port: 5000,
                dst_port: 53,
                payload: b"query",
            },
        ),
        frame(
            Family::V4,
            c,
            s,
            64,
            L4Spec::Tcp {
                src_port: 40000,
                dst_port: 80,
                seq: 1,
                ack: 0,
                flags: 0x02,
                window: 1000,
                payload: b"",
            },
        ),
    ];
    write_capture(&dir.path("in.pcap"), &frames);
    std::fs::write(
        dir.path("nat.toml"),
        "[conntrack]\naccounting = true\n\n[[nat]]\nname = \"out\"\naction = \"snat to 203.0.113.7\"\n",
    )
    .unwrap();
    let out = Command::new(ctgate())
        .args(["replay", "--topspeed", "--config"])
        .arg(dir.path("nat.toml"))
        .arg("--out")
        .arg(dir.path("out.pcap"))
        .arg(dir.path("in.pcap"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines.iter().any(|l| l.starts_with("ipv4     2 tcp      6 120 SYN_SENT src=192.0.2.10 dst=198.51.100.20 sport=40000 dport=80 packets=1 bytes=40 [UNREPLIED] src=198.51.100.20 dst=203.0.113.7 sport=80 dport=40000")), "{table}");
    assert!(lines.iter().any(|l| l.starts_with("ipv4     2 udp      17 30 src=192.0.2.10 dst=198.51.100.20 sport=5000 dport=53 packets=1 bytes=33 [UNREPLIED] src=198.51.100.20 dst=203.0.113.7 sport=53 dport=5000")), "{table}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 packets read, 2 forwarded"), "{stderr}");
    assert!(stderr.contains("insert=2"), "{stderr}");

    let written = pcap::parse(&std::fs::read(dir.path("out.pcap")).unwrap()).unwrap();
    assert_eq!(written.len(), 2);
    for (rec, orig) in written.iter().zip(&frames) {
        let p = parse(&rec.data).unwrap();
        assert_eq!(p.src, Addr::from_v4([203, 0, 113, 7]), "source translated");
        assert_eq!(p.dst, s);
        assert!(
            ctcore::checksum::l4_checksum_ok(&rec.data, &p),
            "checksum recomputed"
        );
        let o = parse(orig).unwrap();
        let ports = |l4: L4| match l4 {
            L4::Udp { src_port, dst_port } => (src_port, dst_port),
            L4::Tcp(t) => (t.src_port, t.dst_port),
            _ => unreachable!(),
        };
        assert_eq!(ports(p.l4), ports(o.l4), "ports kept (free)");
    }
}

#[test]
fn replay_errors_are_one_line() {
    let dir = TempDir::new("replay-bad");
    std::fs::write(dir.path("bad.toml"), "[[nat]]\naction = \"teleport\"\n").unwrap();
    std::fs::write(dir.path("x.pcap"), b"not a capture at all, clearly").unwrap();
    for args in [
        vec![
            "replay".to_string(),
            dir.path("missing.pcap").display().to_string(),
        ],
        vec!["replay".into(), dir.path("x.pcap").display().to_string()],
        vec![
            "replay".into(),
            "--config".into(),
            dir.path("bad.toml").display().to_string(),
            dir.path("x.pcap").display().to_string(),
        ],
    ] {
        let out = Command::new(ctgate()).args(&args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("ctgate: error: "), "{err}");
    }
}

/// Packets whose L4 header is malformed are INVALID and meet the policy like
/// any INVALID packet (nft `ct state invalid drop`): forwarded without such a
/// rule (as the kernel forwards them), dropped by one.
#[test]
fn malformed_l4_headers_meet_the_invalid_policy() {
    let dir = TempDir::new("replay-invalid");
    let pcap = support::repo().join("tests/pcaps/scenarios/truncated-headers.pcap");
    let cfg = dir.path("drop-invalid.toml");
    std::fs::write(
        &cfg,
        "[[policy]]\nname = \"no-invalid\"\nstates = \"invalid\"\naction = \"drop\"\n",
    )
    .unwrap();
    let run = |config: Option<&std::path::Path>| {
        let mut c = Command::new(ctgate());
        c.args(["replay", "--topspeed"]);
        if let Some(p) = config {
            c.arg("--config").arg(p);
        }
        let out = c.arg(&pcap).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The kernel on this capture (tests/kernel-ref): 7 of 9 frames reach
    // forwarding (2 fail ip_rcv), 6 of them INVALID.
    let open = run(None);
    assert!(
        open.contains("9 packets read, 7 forwarded") && open.contains("invalid=6"),
        "{open}"
    );
    let strict = run(Some(&cfg));
    assert!(
        strict.contains("9 packets read, 1 forwarded") && strict.contains("6 by policy"),
        "{strict}"
    );
}

/// Conntrack's checksum check is the kernel's, IPv6 pseudo-header included:
/// on this capture the kernel counts `invalid` 11 + `error` 4
/// (tests/kernel-ref/shared__checksums-good-bad.pcap.stderr.txt).
#[test]
fn invalid_count_is_the_kernels_on_checksums_good_bad() {
    let pcap = support::repo().join("tests/pcaps/shared/checksums-good-bad.pcap");
    let out = Command::new(ctgate())
        .args(["replay", "--topspeed"])
        .arg(&pcap)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(" invalid=15 "), "{stderr}");
}

/// `ct mark set` and `ct mark` in the policy, as a replay shows them: a
/// rule marks each connection at its first packet, an earlier one drops
/// the packets of marked connections (their later ones); the listing prints
/// the marks.
#[test]
fn policy_rules_set_and_match_connection_marks() {
    let dir = TempDir::new("replay-marks");
    let c = Addr::from_v4([192, 0, 2, 10]);
    let s = Addr::from_v4([198, 51, 100, 20]);
    let udp = |sport: u16, dport: u16| {
        frame(
            Family::V4,
            c,
            s,
            64,
            L4Spec::Udp {
                src_port: sport,
                dst_port: dport,
                payload: b"q",
            },
        )
    };
    // Two datagrams of each of two flows (no answer: all NEW, as in the kernel).
    let frames = vec![udp(5000, 53), udp(5001, 123), udp(5000, 53), udp(5001, 123)];
    write_capture(&dir.path("in.pcap"), &frames);
    std::fs::write(
        dir.path("marks.toml"),
        r#"[[policy]]
name = "marked"
states = "new,established"
mark = "0x20/0xf0"
action = "drop"

[[policy]]
name = "mark-new"
states = "new"
mark = "0"
set_mark = 0x2a
action = "accept"

[[policy]]
name = "the-rest"
states = "new,established"
action = "accept"
"#,
    )
    .unwrap();
    let out = Command::new(ctgate())
        .args(["replay", "--topspeed", "--config"])
        .arg(dir.path("marks.toml"))
        .arg(dir.path("in.pcap"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let table = String::from_utf8(out.stdout).unwrap();
    // Both flows' first datagram marked its connection 0x2a (42) ...
    assert_eq!(table.matches(" mark=42 ").count(), 2, "{table}");
    // ... so both second datagrams matched the drop rule (0x2a & 0xf0 == 0x20).
    assert!(stderr.contains("4 packets read, 2 forwarded"), "{stderr}");
    assert!(stderr.contains("2 by policy"), "{stderr}");
}
