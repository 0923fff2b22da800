//! Conntrack helpers proven with real Linux hosts: an FTP server (pyftpdlib)
//! and a TFTP server (tftpy) outside, their clients (ftplib, tftpy) inside,
//! ctgate between them masquerading, with a policy that lets nothing new in
//! from outside and, from inside, only new control connections (TCP 21, UDP
//! 69: the rules that assign the helpers) and a helper-less FTP port 2121.
//!
//! ```text
//!   cli 192.0.2.2/24 --[cli 192.0.2.1]  ctgate  [srv 198.51.100.1]-- srv 198.51.100.2/24
//! ```
//!
//! Every data connection must be RELATED to get through: passive (PASV,
//! EPSV) from inside, active (PORT, EPRT) from outside, whose announcements
//! ctgate rewrites to its outside address (the server refuses data
//! connections to any other address than its control peer's, and the
//! rewrite changes the command's length, so the control connection lives on
//! only with its sequence numbers adjusted). On port 2121, without the
//! helper, neither kind gets through. The outside host has no route to the
//! inside prefix. TEST-NET addresses only, no default route anywhere.

mod support;

use std::process::Command;

use support::netns::{Gate, Net};
use support::*;

const P: &str = "ctfp";

fn hosts_py() -> String {
    repo()
        .join("tests/support/ftp_hosts.py")
        .display()
        .to_string()
}

/// pyftpdlib and tftpy (PyPI), installed when missing.
fn need_python_modules() {
    let have = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if have(Command::new("python3").args(["-c", "import pyftpdlib, tftpy"])) {
        return;
    }
    let out = run_for(
        Command::new("python3").args(["-m", "pip", "install", "-q", "pyftpdlib", "tftpy"]),
        300,
    );
    assert!(
        out.status.success(),
        "cannot install pyftpdlib and tftpy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(net: &Net) -> String {
    let mut c = format!(
        "workers = [1]\nworker_cpus = [1]\nmempool_mbufs = 8191\n{}\n",
        eal_args_toml()
    );
    for (i, (name, addr)) in [("cli", "192.0.2.1/24"), ("srv", "198.51.100.1/24")]
        .iter()
        .enumerate()
    {
        c += &format!(
            "\n[[port]]\nname = \"{name}\"\ndevargs = \"net_af_packet{i},iface={}\"\nipv4 = \"{addr}\"\n",
            net.gw_if(name)
        );
    }
    c += r#"
[conntrack]
policy_default = "drop"

[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "invalid"
states = "invalid"
action = "drop"

[[policy]]
name = "ftp"
in_port = "cli"
proto = "tcp"
dport = "21"
states = "new"
helper = "ftp"
action = "accept"

[[policy]]
name = "tftp"
in_port = "cli"
proto = "udp"
dport = "69"
states = "new"
helper = "tftp"
action = "accept"

[[policy]]
name = "ftp-without-helper"
in_port = "cli"
proto = "tcp"
dport = "2121"
states = "new"
action = "accept"

[[nat]]
name = "masq"
out_port = "srv"
src = "192.0.2.0/24"
action = "masquerade"
"#;
    c
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn ftp_and_tftp_through_masquerade_with_only_related_data_let_in() {
    require_root();
    need_python_modules();
    let dir = TempDir::new("netns-ftp");
    let root = dir.path("files");
    std::fs::create_dir_all(&root).unwrap();
    // 300 kB that are not all alike: a transfer cut short or mixed up shows.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("file.bin"), &data).unwrap();
    let sha = {
        let out = run_for(Command::new("sha256sum").arg(root.join("file.bin")), 30);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };

    let mut net = Net::new(P);
    net.host(
        "cli",
        &["192.0.2.2/24"],
        &[("198.51.100.0/24", "192.0.2.1")],
    );
    net.host("srv", &["198.51.100.2/24"], &[]);
    let gate = Gate::start(&dir.0, &config(&net));
    let (py, root_s) = (hosts_py(), root.display().to_string());
    let ftp_log = dir.path("ftp.log").display().to_string();
    let plain_log = dir.path("ftp2121.log").display().to_string();
    for (port, log) in [("21", &ftp_log), ("2121", &plain_log)] {
        net.spawn(
            "srv",
            &[
                "timeout",
                "180",
                "python3",
                &py,
                "ftp-serve",
                &root_s,
                port,
                log,
            ],
            Some("listening"),
        );
    }
    net.spawn(
        "srv",
        &[
            "timeout",
            "180",
            "python3",
            &py,
            "tftp-serve",
            &root_s,
            "69",
        ],
        Some("listening"),
    );

    let get = |port: &str, mode: &str| {
        json(&net.check(
            "cli",
            &[
                "timeout",
                "40",
                "python3",
                &py,
                "ftp-get",
                "198.51.100.2",
                port,
                "file.bin",
                mode,
            ],
            60,
        ))
    };
    for mode in ["pasv", "port", "epsv", "eprt", "port"] {
        let r = get("21", mode);
        assert_eq!(r["ok"], true, "{mode} through the helper: {r}");
        assert_eq!(r["sha256"], sha.as_str(), "{mode}: {r}");
    }
    // Without the helper: the passive data connection is new and refused by
    // the policy; the active one is announced with the inside address,
    // which the server refuses (it is not its control peer).
    for mode in ["pasv", "port"] {
        let r = get("2121", mode);
        assert_eq!(r["ok"], false, "{mode} without a helper must fail: {r}");
    }
    let out = dir.path("got.bin").display().to_string();
    let r = json(&net.check(
        "cli",
        &[
            "timeout",
            "40",
            "python3",
            &py,
            "tftp-get",
            "198.51.100.2",
            "69",
            "file.bin",
            &out,
        ],
        60,
    ));
    assert_eq!(r["ok"], true, "tftp through the helper: {r}");
    assert_eq!(r["sha256"], sha.as_str(), "{r}");

    // The server saw only ctgate's outside address.
    let log = std::fs::read_to_string(&ftp_log).unwrap();
    assert!(log.contains("198.51.100.1:"), "{log}");
    assert!(
        !log.contains("192.0.2."),
        "an inside address reached the server: {log}"
    );

    net.stop_programs();
    let s = gate.stop();
    s.assert_balanced();
    let c = &s.stats["conntrack"]["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c:#}"));
    // Five FTP transfers and the TFTP answer were expected; PORT and EPRT
    // rewritten (longer: 198.51.100.1 for 192.0.2.2), PASV and EPSV
    // rewritten to what they were (the server's address is not translated).
    assert_eq!(n("expect_new"), 6, "{c:#}");
    assert!(n("expect_create") >= 6, "{c:#}");
    assert!(n("helper_mangled") >= 5, "{c:#}");
    assert_eq!(n("helper_dropped"), 0, "{c:#}");
    let table: Vec<String> = s.stats["conntrack"]["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert!(
        table
            .iter()
            .any(|l| l.contains("dport=21 ") && l.contains("helper=ftp")),
        "{table:#?}"
    );
    assert!(
        table
            .iter()
            .any(|l| l.contains("dport=69 ") && l.contains("helper=tftp")),
        "{table:#?}"
    );
    assert!(
        !table
            .iter()
            .any(|l| l.contains("dport=2121 ") && l.contains("helper=")),
        "{table:#?}"
    );
}
