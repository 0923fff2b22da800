//! The CLI's contract: --version names DPDK, check-config accepts good files
//! and rejects bad ones in one line, and `run` fails in one line (no panic, no
//! backtrace, non-zero exit) when a port cannot be probed.

mod support;

use std::process::Command;

use support::*;

fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected failure: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ctgate: error:"))
        .collect();
    assert_eq!(ours.len(), 1, "exactly one error line: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    ours[0].to_owned()
}

#[test]
fn version_names_dpdk() {
    let out = Command::new(ctgate()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("ctgate 0."), "{v}");
    assert!(v.contains("DPDK 2"), "{v}");
}

#[test]
fn check_config_accepts_the_default_and_rejects_errors() {
    let dir = TempDir::new("cli");
    let out = Command::new(ctgate())
        .arg("default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(dir.path("good.toml"), &out.stdout).unwrap();
    let out = Command::new(ctgate())
        .arg("check-config")
        .arg(dir.path("good.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "port cli: net_af_packet0,iface=ctgw-cli-gw [192.0.2.1/24, 2001:db8:1::1/64]"
        ),
        "{text}"
    );

    let cases = [
        ("workers = [1]\n[[port]]\ndevargs = 7\n", "line 3"),
        ("[[port]]\ndevargs = \"net_null0\"\nipv4 = \"192.0.2.1/24\"\n[[route]]\nprefix = \"203.0.113.0/24\"\nport = \"nope\"\n", "no port named \"nope\""),
        ("[[port]]\ndevargs = \"net_null0\"\nipv4 = \"192.0.2.300/24\"\n", "not an IP address"),
    ];
    for (text, want) in cases {
        std::fs::write(dir.path("bad.toml"), text).unwrap();
        let out = Command::new(ctgate())
            .arg("check-config")
            .arg(dir.path("bad.toml"))
            .output()
            .unwrap();
        let line = one_line_error(&out);
        assert!(line.contains(want), "{line}");
    }
    let out = Command::new(ctgate())
        .args(["check-config", "/nonexistent/ctgate.toml"])
        .output()
        .unwrap();
    assert!(one_line_error(&out).contains("cannot read config"));
}

#[test]
fn run_without_the_port_interface_fails_in_one_line() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("cli-run");
    let config = format!(
        "{}\nmempool_mbufs = 2047\n[[port]]\ndevargs = \"net_af_packet0,iface=ctgt-missing0\"\nipv4 = \"192.0.2.1/24\"\n",
        eal_args_toml()
    );
    std::fs::write(dir.path("c.toml"), config).unwrap();
    let out = run_for(
        Command::new(ctgate())
            .args(["run", "--duration", "5", "--config"])
            .arg(dir.path("c.toml")),
        60,
    );
    let line = one_line_error(&out);
    assert!(
        line.contains("no port") || line.contains("probed no port"),
        "{line}"
    );
}

/// A pool the ports' RX rings take whole at start (net_tap fills every
/// descriptor: two ports x two queues x 1024 > 4095) is refused in one line
/// that says what to change, instead of a gateway that forwards nothing.
#[test]
fn a_pool_the_rx_rings_take_whole_is_refused_in_one_line() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("cli-pool");
    let config = format!(
        "workers = [1, 2]\nworker_cpus = [1, 1]\n{}\nmempool_mbufs = 4095\n\
         [[port]]\nname = \"a\"\ndevargs = \"net_tap0,iface=ctgt-pool0\"\nipv4 = \"192.0.2.1/24\"\n\
         [[port]]\nname = \"b\"\ndevargs = \"net_tap1,iface=ctgt-pool1\"\nipv4 = \"198.51.100.1/24\"\n",
        eal_args_toml()
    );
    std::fs::write(dir.path("c.toml"), config).unwrap();
    let out = run_for(
        Command::new(ctgate())
            .args(["run", "--duration", "5", "--config"])
            .arg(dir.path("c.toml")),
        60,
    );
    let line = one_line_error(&out);
    assert!(
        line.contains("mempool_mbufs = 4095 is too small") && line.contains("raise mempool_mbufs"),
        "{line}"
    );
}

/// A table of a million connections has its large regions on the hugetlb
/// pools (2 MiB pages here, or 1 GiB ones where that pool has free pages),
/// as the startup log says; with `--no-huge` they are on transparent huge
/// pages.
#[test]
fn a_large_table_is_on_hugepages_unless_dpdk_runs_without_them() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("cli-table-pages");
    let eal = eal_args_toml();
    if eal.contains("--no-huge") {
        eprintln!("no hugepages on this machine: nothing to place the table on");
        return;
    }
    // The table (about 180 MB) and the EAL's own, beside what the pool has.
    let nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    let before: u64 = std::fs::read_to_string(nr).unwrap().trim().parse().unwrap();
    let want = 400;
    if free_hugepages() < want {
        let _ = std::fs::write(nr, format!("{}", before + want - free_hugepages()));
    }
    let run = |eal: &str| {
        let config = format!(
            "workers = [1]\n{eal}\nmempool_mbufs = 8191\n\
             [[port]]\nname = \"a\"\ndevargs = \"net_null0\"\nipv4 = \"192.0.2.1/24\"\n\
             [conntrack]\nmax_connections = 1000000\n"
        );
        std::fs::write(dir.path("c.toml"), config).unwrap();
        let out = run_for(
            Command::new(ctgate())
                .args(["run", "--log", "info", "--duration", "2", "--config"])
                .arg(dir.path("c.toml")),
            60,
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let line = text
            .lines()
            .find(|l| l.contains("conntrack table:"))
            .unwrap_or_else(|| panic!("no table line in:\n{text}"))
            .to_owned();
        // "... N MiB on 1 GiB pages, M MiB on 2 MiB pages, T MiB advised ..."
        let mib = |what: &str| -> u64 {
            let end = line.find(what).unwrap_or_else(|| panic!("{what}: {line}"));
            line[..end]
                .split_whitespace()
                .next_back()
                .unwrap()
                .parse()
                .unwrap()
        };
        (
            mib(" MiB on 1 GiB pages") + mib(" MiB on 2 MiB pages"),
            mib(" MiB advised"),
            line,
        )
    };
    // Regions of 32 MiB and more are placed: the records' hot lines (64
    // bytes each, 61 MiB) and their cold ones at least.
    let (pools, transparent, line) = run(&eal);
    assert!(pools >= 120, "on the pools: {line}");
    // (--no-huge is DPDK's legacy memory mode, which --in-memory refuses.)
    let no_huge = r#"eal_args = ["--no-huge", "-m", "256", "--file-prefix=ctgt-pages"]"#;
    let (none, all, line) = run(no_huge);
    assert_eq!(none, 0, "{line}");
    assert!(all >= pools + transparent, "{line}");
    let _ = std::fs::write(nr, format!("{before}"));
    let _ = std::fs::remove_dir_all("/var/run/dpdk/ctgt-pages");
}
