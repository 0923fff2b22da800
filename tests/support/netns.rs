//! Network namespaces a test builds itself (hosts joined to ctgate's ports by
//! veth pairs, hosts joined to each other), the ctgate process between them,
//! and cleanup that also runs when the test fails.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{ctgate, run_for, sigterm, stats};

/// The hosts of one test: namespaces named `{prefix}-{host}`, ctgate's veth
/// ends named `{prefix}-{host}` in the root namespace. Dropping it kills what
/// runs in the namespaces and deletes them and the links.
pub struct Net {
    pub prefix: String,
    hosts: Vec<String>,
    children: Vec<Child>,
}

fn sh(args: &[&str]) -> Output {
    let out = run_for(Command::new(args[0]).args(&args[1..]), 30);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn offloads_off(ns: Option<&str>, dev: &str) {
    // Frames with partial checksums or GSO super-frames would reach af_packet.
    let mut pre: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        pre.extend(["ip", "netns", "exec", ns]);
    }
    let full = [
        "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
    ];
    let args: Vec<&str> = pre.iter().copied().chain(full).collect();
    let out = run_for(Command::new(args[0]).args(&args[1..]), 30);
    if !out.status.success() {
        let args: Vec<&str> = pre
            .iter()
            .copied()
            .chain(["ethtool", "-K", dev, "tx", "off"])
            .collect();
        sh(&args);
    }
}

impl Net {
    /// Removes leftovers of an earlier run with the same prefix.
    pub fn new(prefix: &str) -> Net {
        let n = Net {
            prefix: prefix.to_owned(),
            hosts: Vec::new(),
            children: Vec::new(),
        };
        n.sweep();
        n
    }

    fn sweep(&self) {
        let out = run_for(Command::new("ip").args(["netns", "list"]), 30);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let ns = line.split_whitespace().next().unwrap_or("");
            if ns.starts_with(&format!("{}-", self.prefix)) {
                kill_ns_pids(ns);
                let _ = run_for(Command::new("ip").args(["netns", "del", ns]), 30);
            }
        }
        let out = run_for(Command::new("ip").args(["-o", "link", "show"]), 30);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or("");
            if name.starts_with(&format!("{}-", self.prefix)) {
                let _ = run_for(Command::new("ip").args(["link", "del", name]), 30);
            }
        }
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The root-side veth end of `host`'s link to ctgate (what its port opens).
    pub fn gw_if(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// A host joined to ctgate: its `eth0` gets `addrs`; `routes` are
    /// (prefix, via) pairs. IPv6 DAD and router advertisements are off.
    pub fn host(&mut self, host: &str, addrs: &[&str], routes: &[(&str, &str)]) {
        let ns = self.ns(host);
        let gw = self.gw_if(host);
        assert!(gw.len() <= 15, "interface name {gw} too long");
        sh(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        sh(&[
            "ip", "link", "add", &gw, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{gw}.disable_ipv6=1"),
        ]);
        sh(&["ip", "link", "set", &gw, "up"]);
        offloads_off(None, &gw);
        self.setup_ns(&ns);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        offloads_off(Some(&ns), "eth0");
        self.addrs(&ns, "eth0", addrs);
        for (prefix, via) in routes {
            sh(&["ip", "-n", &ns, "route", "add", prefix, "via", via]);
        }
    }

    fn setup_ns(&self, ns: &str) {
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        for k in [
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            // Routers and hosts answer every probe (no ICMP rate limit).
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv6.icmp.ratelimit=0",
        ] {
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", k]);
        }
    }

    fn addrs(&self, ns: &str, dev: &str, addrs: &[&str]) {
        for a in addrs {
            if a.contains(':') {
                sh(&["ip", "-n", ns, "-6", "addr", "add", a, "dev", dev, "nodad"]);
            } else {
                sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
            }
        }
    }

    /// A host joined to ctgate by a TAP device that ctgate's net_tap port
    /// created (`iface={prefix}-{host}`, in the root namespace while ctgate
    /// starts): the device moves into the host's namespace, where its kernel
    /// side is the host's `eth0`. Call it after ctgate started.
    pub fn tap_host(&mut self, host: &str, addrs: &[&str], routes: &[(&str, &str)]) {
        let ns = self.ns(host);
        let tap = self.gw_if(host);
        sh(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        sh(&["ip", "link", "set", &tap, "netns", &ns]);
        sh(&["ip", "-n", &ns, "link", "set", &tap, "name", "eth0"]);
        self.setup_ns(&ns);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        self.addrs(&ns, "eth0", addrs);
        for (prefix, via) in routes {
            sh(&["ip", "-n", &ns, "route", "add", prefix, "via", via]);
        }
    }

    /// A host behind `via_host` (not joined to ctgate): a veth between the two
    /// namespaces, `via_host` forwarding. `near` are the addresses on
    /// `via_host`'s side, `far` this host's; `routes` are this host's.
    pub fn host_behind(
        &mut self,
        host: &str,
        via_host: &str,
        near: &[&str],
        far: &[&str],
        routes: &[(&str, &str)],
    ) {
        let ns = self.ns(host);
        let via = self.ns(via_host);
        sh(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        self.setup_ns(&ns);
        sh(&[
            "ip", "link", "add", "eth1", "netns", &via, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        for (n, dev) in [(&via, "eth1"), (&ns, "eth0")] {
            sh(&["ip", "-n", n, "link", "set", dev, "up"]);
            offloads_off(Some(n), dev);
        }
        self.addrs(&via, "eth1", near);
        self.addrs(&ns, "eth0", far);
        for (prefix, gw) in routes {
            sh(&["ip", "-n", &ns, "route", "add", prefix, "via", gw]);
        }
        for k in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            sh(&["ip", "netns", "exec", &via, "sysctl", "-qw", k]);
        }
    }

    /// A command run in `host`'s namespace.
    pub fn cmd(&self, host: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)]).args(args);
        c
    }

    /// Runs a command in `host` to completion (bounded); returns stdout, panics
    /// with its output if it failed.
    pub fn check(&self, host: &str, args: &[&str], secs: u64) -> String {
        let out = run_for(&mut self.cmd(host, args), secs);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{host}: {args:?} failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Starts a program in `host` (killed on drop); waits until it prints a
    /// line containing `ready` (bounded), when given.
    pub fn spawn(&mut self, host: &str, args: &[&str], ready: Option<&str>) {
        let mut child = self
            .cmd(host, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        if let Some(word) = ready {
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let word = word.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.contains(&word) {
                        let _ = tx.send(());
                    }
                }
            });
            let r = rx.recv_timeout(Duration::from_secs(20));
            if r.is_err() {
                let _ = child.kill();
                panic!("{host}: {args:?} did not get ready");
            }
        }
        self.children.push(child);
    }

    /// Every program this test started in the namespaces is killed.
    pub fn stop_programs(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

fn kill_ns_pids(ns: &str) {
    let out = run_for(Command::new("ip").args(["netns", "pids", ns]), 30);
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop_programs();
        for ns in &self.hosts {
            kill_ns_pids(ns);
        }
        self.sweep();
    }
}

/// The running appliance; stopped (SIGKILL) on drop if the test did not stop it.
pub struct Gate {
    child: Option<Child>,
    pub stats_path: PathBuf,
    log: std::sync::mpsc::Receiver<String>,
    /// The lines read while waiting for the start, not looked at yet:
    /// what a task logs before the data path is up (an HA peer heard at
    /// once) is among them.
    early: std::cell::RefCell<std::collections::VecDeque<String>>,
}

/// What ctgate left when it stopped.
pub struct Stopped {
    pub stdout: String,
    pub stats: serde_json::Value,
}

impl Stopped {
    /// The final accounting balances (every mbuf ctgate received or made was
    /// transmitted or freed under a drop reason) and no packet failed the
    /// forwarder's header checks (nothing ctgate rewrote, for one).
    pub fn assert_balanced(&self) {
        let t = &self.stats["totals"];
        let n = |k: &str| t[k].as_u64().unwrap();
        assert_eq!(
            n("rx") + n("generated"),
            n("tx") + n("dropped"),
            "every mbuf transmitted or freed: {:#}",
            self.stats
        );
        assert_eq!(
            t["drops"]["bad_header"], 0,
            "no packet may fail the forwarder's header checks: {:#}",
            self.stats
        );
    }
}

impl Gate {
    /// Writes `config` into `dir` and starts `ctgate run` with it; returns
    /// once it logs "forwarding;" (bounded).
    pub fn start(dir: &Path, config: &str) -> Gate {
        let cfg = dir.join("ctgate.toml");
        std::fs::write(&cfg, config).unwrap();
        let stats_path = dir.join("stats.json");
        let _ = std::fs::remove_file(&stats_path);
        let mut child = Command::new(ctgate())
            .args(["run", "--duration", "300", "--config"])
            .arg(&cfg)
            .arg("--stats-json")
            .arg(&stats_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut g = Gate {
            child: Some(child),
            stats_path,
            log: rx,
            early: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = Vec::new();
        loop {
            match g.log.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let ready = line.contains("forwarding;");
                    log.push(line);
                    if ready {
                        g.early = std::cell::RefCell::new(log.into());
                        break;
                    }
                }
                Err(_) => {
                    if let Some(status) = g.child.as_mut().unwrap().try_wait().unwrap() {
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
        g
    }

    /// Waits (bounded) for a log line containing every one of `words`,
    /// the lines of the start included; returns it. The lines before it
    /// are consumed; panics with them and the exit status if none came or
    /// ctgate stopped.
    pub fn wait_log(&mut self, words: &[&str], secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let next = match self.early.get_mut().pop_front() {
                Some(line) => Ok(line),
                None => self.log.recv_timeout(Duration::from_millis(100)),
            };
            match next {
                Ok(line) => {
                    if words.iter().all(|w| line.contains(w)) {
                        return line;
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().unwrap());
                    assert!(
                        status.is_none() && Instant::now() < deadline,
                        "no log line with {words:?} (ctgate {}):\n{}",
                        status.map_or("running".to_owned(), |s| s.to_string()),
                        seen.join("\n")
                    );
                }
            }
        }
    }

    /// The log lines ctgate wrote since the last look (the first look
    /// includes those of the start).
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.early.borrow_mut().drain(..).collect();
        lines.extend(self.log.try_iter());
        lines
    }

    /// ctgate's exit status, if it has stopped.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// SIGTERM, wait (bounded), check the exit status; the final stats.
    pub fn stop(mut self) -> Stopped {
        let mut child = self.child.take().unwrap();
        sigterm(&child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ctgate did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let log: Vec<String> = self.log.try_iter().collect();
        assert!(
            status.success(),
            "ctgate exit {status}:\n{stdout}\n{}",
            log.join("\n")
        );
        Stopped {
            stats: stats(&self.stats_path),
            stdout,
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
