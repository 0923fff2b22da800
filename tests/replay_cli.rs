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

/// Conntrack helpers on real captures: the FTP helper (assigned by a rule
/// on tcp dport 21) makes the data connections announced by EPSV replies
/// RELATED, so a policy that lets in only established and related traffic
/// besides the control connection forwards them; without the helper they
/// are dropped. EPRT commands whose address is not the client's (the
/// capture was anonymised) expect nothing, as in the kernel (loose=0). The
/// TFTP helper does the same for a read request's answer.
#[test]
fn helpers_make_announced_data_connections_related() {
    let dir = TempDir::new("replay-helpers");
    let policy = |helpers: bool| {
        let h = |name: &str| {
            if helpers {
                format!("helper = \"{name}\"\n")
            } else {
                String::new()
            }
        };
        format!(
            "[conntrack]\npolicy_default = \"drop\"\n\n[[policy]]\nstates = \"established,related\"\naction = \"accept\"\n\n\
             [[policy]]\nproto = \"tcp\"\ndport = \"21\"\nstates = \"new\"\n{}action = \"accept\"\n\n\
             [[policy]]\nproto = \"udp\"\ndport = \"69\"\nstates = \"new\"\n{}action = \"accept\"\n",
            h("ftp"),
            h("tftp")
        )
    };
    let run = |helpers: bool, capture: &str| {
        let cfg = dir.path(if helpers { "on.toml" } else { "off.toml" });
        std::fs::write(&cfg, policy(helpers)).unwrap();
        let out = Command::new(ctgate())
            .args(["replay", "--config"])
            .arg(&cfg)
            .arg(format!("tests/pcaps/shared/{capture}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (table, stderr) = run(true, "ipv6-ftp-eprt-epsv.pcap");
    assert!(stderr.contains("expect_new=3 expect_create=3"), "{stderr}");
    assert!(
        table.contains("dport=21 ") && table.contains(" helper=ftp use=1"),
        "{table}"
    );
    for port in [57086, 57087, 57088] {
        assert!(table.contains(&format!("dport={port} ")), "{port}: {table}");
    }
    assert!(
        !table.contains("sport=55785"),
        "an anonymised EPRT: {table}"
    );
    let (table, stderr) = run(false, "ipv6-ftp-eprt-epsv.pcap");
    assert!(!stderr.contains("expect_"), "{stderr}");
    assert!(
        !table.contains("dport=57086 ") && !table.contains("helper="),
        "{table}"
    );

    let (table, stderr) = run(true, "udp-tftp-rrq.pcap");
    assert!(stderr.contains("expect_new=1"), "{stderr}");
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains("dport=69 ") && table.contains("helper=tftp"),
        "{table}"
    );
    let (table, _) = run(false, "udp-tftp-rrq.pcap");
    assert_eq!(table.lines().count(), 1, "{table}");
}

/// Active FTP through SNAT, frames in and out: the client's PORT command
/// leaves with the outside address (one byte longer, so the frame grows),
/// the server's acknowledgement comes back moved by that byte, and the
/// server's data connection to the announced port is RELATED and goes to
/// the client.
#[test]
fn replay_rewrites_ftp_port_commands_through_snat() {
    let dir = TempDir::new("replay-ftp-nat");
    let c = Addr::from_v4([192, 0, 2, 10]);
    let s = Addr::from_v4([198, 51, 100, 20]);
    let p = Addr::from_v4([203, 0, 113, 7]);
    let tcp =
        |src: Addr, dst: Addr, ports: (u16, u16), flags: u8, seq: u32, ack: u32, payload: &[u8]| {
            frame(
                Family::V4,
                src,
                dst,
                64,
                L4Spec::Tcp {
                    src_port: ports.0,
                    dst_port: ports.1,
                    seq,
                    ack,
                    flags,
                    window: 1000,
                    payload,
                },
            )
        };
    let (syn, ack, psh) = (0x02, 0x10, 0x18);
    let cmd = b"PORT 192,0,2,10,19,137\r\n";
    let frames = vec![
        tcp(c, s, (40000, 21), syn, 1000, 0, b""),
        tcp(s, p, (21, 40000), syn | ack, 5000, 1001, b""),
        tcp(c, s, (40000, 21), ack, 1001, 5001, b""),
        tcp(s, p, (21, 40000), psh, 5001, 1001, b"220 hi\r\n"),
        tcp(c, s, (40000, 21), psh, 1001, 5009, b"USER a\r\n"),
        tcp(c, s, (40000, 21), psh, 1009, 5009, cmd),
        tcp(s, p, (21, 40000), psh, 5009, 1009 + 25, b"200 ok\r\n"),
        tcp(s, p, (20, 5001), syn, 7000, 0, b""),
    ];
    write_capture(&dir.path("in.pcap"), &frames);
    std::fs::write(
        dir.path("ftp.toml"),
        "[conntrack]\npolicy_default = \"drop\"\n\n[[policy]]\nstates = \"established,related\"\naction = \"accept\"\n\n\
         [[policy]]\nproto = \"tcp\"\ndport = \"21\"\nstates = \"new\"\nhelper = \"ftp\"\naction = \"accept\"\n\n\
         [[nat]]\nname = \"out\"\nsrc = \"192.0.2.0/24\"\naction = \"snat to 203.0.113.7\"\n",
    )
    .unwrap();
    let out = Command::new(ctgate())
        .args(["replay", "--topspeed", "--config"])
        .arg(dir.path("ftp.toml"))
        .arg("--out")
        .arg(dir.path("out.pcap"))
        .arg(dir.path("in.pcap"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("8 packets read, 8 forwarded"), "{stderr}");
    assert!(
        stderr.contains("expect_new=1") && stderr.contains("helper_mangled=1"),
        "{stderr}"
    );
    let written = pcap::parse(&std::fs::read(dir.path("out.pcap")).unwrap()).unwrap();
    assert_eq!(written.len(), 8);
    let tcp_of = |data: &[u8]| {
        let parsed = parse(data).unwrap();
        assert!(ctcore::checksum::l4_checksum_ok(data, &parsed), "checksum");
        let L4::Tcp(t) = parsed.l4 else { panic!("tcp") };
        let start = parsed.l4_offset as usize + t.header_len as usize;
        let end = parsed.l3_offset as usize + parsed.l3_len as usize;
        (parsed, t, data[start..end].to_vec())
    };
    let (ip, t, payload) = tcp_of(&written[5].data);
    assert_eq!(ip.src, p);
    assert_eq!(payload, b"PORT 203,0,113,7,19,137\r\n".to_vec());
    assert_eq!(t.seq, 1009);
    assert_eq!(written[5].data.len(), frames[5].len() + 1, "the frame grew");
    let (_, t, _) = tcp_of(&written[6].data);
    assert_eq!(t.ack, 1009 + 24, "the ack moved back by the byte");
    let (ip, t, _) = tcp_of(&written[7].data);
    assert_eq!(
        (ip.dst, t.dst_port),
        (c, 5001),
        "the data connection goes to the client"
    );
}
