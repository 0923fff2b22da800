//! What the integration tests that start the real appliance share: the
//! environment checks (root, hugepages; set up here when missing), the
//! binary, and a guard that stops a running ctgate.
#![allow(dead_code)]

pub mod frames;
pub mod hosts;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;

/// Tests that start ctgate take this lock: each pins a worker to lcore 1, and
/// two busy-polling workers on one core only slow each other down.
pub static APPLIANCE: Mutex<()> = Mutex::new(());

pub fn ctgate() -> &'static str {
    env!("CARGO_BIN_EXE_ctgate")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        uid, "0",
        "this test starts DPDK and needs root: run it with sudo (scripts/test.sh does)"
    );
}

/// The pages of the 2 MiB hugetlb pool (the one the tests' DPDK and
/// `eal_args` use) a new mapping can still have: free, less those other
/// mappings have reserved and not touched yet.
pub fn free_hugepages() -> u64 {
    let read = |f: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{f}"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    read("free_hugepages").saturating_sub(read("resv_hugepages"))
}

/// EAL arguments for a test run: `--in-memory` on hugepages, mounting
/// hugetlbfs and reserving pages when they are missing, or `--no-huge` when
/// the kernel cannot give them.
pub fn eal_args() -> Vec<String> {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    if !mounted {
        std::fs::create_dir_all("/dev/hugepages").unwrap();
        let _ = Command::new("mount")
            .args([
                "-t",
                "hugetlbfs",
                "-o",
                "pagesize=2M",
                "nodev",
                "/dev/hugepages",
            ])
            .status();
    }
    let nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    if free_hugepages() < 128 {
        if let Ok(cur) = std::fs::read_to_string(nr) {
            let cur: u64 = cur.trim().parse().unwrap_or(0);
            let _ = std::fs::write(nr, format!("{}", cur + 128 - free_hugepages()));
        }
    }
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    if mounted && free_hugepages() >= 128 && std::env::var_os("CTGATE_TEST_NO_HUGE").is_none() {
        vec!["--in-memory".into()]
    } else {
        // --no-huge is DPDK's legacy memory mode, which --in-memory refuses:
        // the run's files go under a prefix of its own instead.
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        vec![
            "--no-huge".into(),
            "-m".into(),
            "256".into(),
            format!("--file-prefix=ctgt-{}-{run}", std::process::id()),
        ]
    }
}

/// `eal_args = [...]` as a TOML line.
pub fn eal_args_toml() -> String {
    let quoted: Vec<String> = eal_args().iter().map(|a| format!("{a:?}")).collect();
    format!("eal_args = [{}]", quoted.join(", "))
}

/// A fresh scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ctgate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to completion, with a time limit.
pub fn run_for(cmd: &mut Command, secs: u64) -> Output {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

/// Sends SIGTERM to a child (std's kill() is SIGKILL, which skips the drain).
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// The final counters ctgate wrote with --stats-json.
pub fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The netns test bed of `scripts/testbed.sh` under its own prefix, torn down
/// (with what the test started) when dropped, also on failure.
pub struct Bed {
    prefix: &'static str,
    pub children: Vec<Child>,
}

impl Bed {
    pub fn up(prefix: &'static str) -> Bed {
        let out = run_for(
            Command::new(repo().join("scripts/testbed.sh"))
                .arg("up")
                .env("CTGW_PREFIX", prefix),
            60,
        );
        assert!(
            out.status.success(),
            "testbed up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bed {
            prefix,
            children: Vec::new(),
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run_for(
            Command::new(repo().join("scripts/testbed.sh"))
                .arg("down")
                .env("CTGW_PREFIX", self.prefix),
            60,
        );
    }
}

/// A command run in test bed namespace `{prefix}-{ns}`.
pub fn in_ns(prefix: &str, ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{prefix}-{ns}")])
        .args(args);
    c
}
