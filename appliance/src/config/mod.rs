//! The appliance configuration (TOML). See README.md "Configuration reference".
//! Every section's types are here (`[conntrack]`, `[[policy]]`, `[[nat]]`,
//! `[[pool]]` in [`conntrack`], `[rest]` in [`rest`], `[sync]` in [`sync`]):
//! this module imports nothing else of the appliance.
//!
//! ```toml
//! workers = [1]                # worker lcores, one pinned worker each
//! main_lcore = 0               # the control lcore
//! mempool_mbufs = 8191
//! eal_args = ["--in-memory"]
//!
//! [[port]]
//! name = "cli"
//! devargs = "net_af_packet0,iface=ctgw-cli-gw"
//! ipv4 = "192.0.2.1/24"
//! ipv6 = "2001:db8:1::1/64"
//!
//! [[route]]
//! prefix = "203.0.113.0/24"
//! via = "198.51.100.2"
//! port = "srv"
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod conntrack;
pub mod rest;
pub mod sync;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Most ports the appliance handles.
pub const MAX_PORTS: usize = 16;

/// A configuration problem, said in one line with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config {path}, line {line}: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// An address with a prefix length, e.g. `192.0.2.1/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The network bits as a u128 (IPv4 in the low 32 bits) and the mask.
    pub fn network_u128(&self) -> (u128, u128) {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                ((u32::from(a) & mask) as u128, mask as u128)
            }
            IpAddr::V6(a) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                (u128::from(a) & mask, mask)
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, mask) = self.network_u128();
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(b)) => (u32::from(b) as u128) & mask == net,
            (IpAddr::V6(_), IpAddr::V6(b)) => u128::from(b) & mask == net,
            _ => false,
        }
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not address/prefix-length (e.g. 192.0.2.1/24)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{l:?} is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("prefix length {len} > {max} in {s:?}"));
        }
        Ok(Prefix { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(m)
}

pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// One port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// A name used in routes and logs (default `port<N>`).
    #[serde(default)]
    pub name: String,
    /// DPDK devargs: a PCI address (`0000:01:00.0`) or a vdev string
    /// (`net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`, `net_af_packet0,iface=veth0`, ...).
    /// Empty for a VLAN sub-port.
    #[serde(default)]
    pub devargs: String,
    /// A VLAN sub-port (802.1Q, like Linux's `eth0.100`) names the physical
    /// port it rides on: it receives the frames tagged with `vlan` there
    /// (untagged before anything else looks at them) and sends tagged ones
    /// through it. It has its own addresses, zone, neighbours and routes,
    /// and the parent's MAC address; it is a port everywhere else.
    #[serde(default)]
    pub parent: Option<String>,
    /// The VLAN id (1..=4094) of a sub-port.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// The port's IPv4 address and the connected prefix.
    #[serde(default)]
    pub ipv4: Option<Prefix>,
    /// The port's IPv6 address and the connected prefix.
    #[serde(default)]
    pub ipv6: Option<Prefix>,
    /// Set this MAC address on the port (default: the PMD's).
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default = "default_rx_desc")]
    pub rx_desc: u16,
    #[serde(default = "default_tx_desc")]
    pub tx_desc: u16,
    /// The conntrack zone of connections that start on this port (nft `ct
    /// original zone set`): their original tuple is in it, their reply in
    /// zone 0, so answers arriving on any other port find them; the
    /// port's connected prefix is a route of this zone only (see `[[route]]
    /// zone`). Two ports in two zones may hold the same addresses.
    #[serde(default)]
    pub zone: u16,
}

fn default_rx_desc() -> u16 {
    1024
}
fn default_tx_desc() -> u16 {
    1024
}

impl PortConfig {
    /// The device name DPDK gives the port: the vdev name (before the first
    /// comma), or the PCI address with the domain added when missing.
    pub fn device_name(&self) -> String {
        let name = self
            .devargs
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if self.is_pci() && name.matches(':').count() == 1 {
            format!("0000:{name}")
        } else {
            name
        }
    }

    /// True for a PCI address (`[dddd:]bb:dd.f`), false for a vdev.
    pub fn is_pci(&self) -> bool {
        let name = self.devargs.split(',').next().unwrap_or("");
        !name.starts_with("net_") && name.contains(':') && name.contains('.')
    }

    /// True for a VLAN sub-port (no device of its own).
    pub fn is_vlan(&self) -> bool {
        self.parent.is_some()
    }

    pub fn mac_addr(&self) -> Option<Mac> {
        self.mac
            .as_deref()
            .map(|m| parse_mac(m).expect("validated"))
    }
}

/// A static route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: Prefix,
    /// The next hop; absent means the destination is on the port's link.
    #[serde(default)]
    pub via: Option<IpAddr>,
    /// The port name.
    pub port: String,
    /// Only for connections of this zone (they also see zone 0's routes;
    /// zone 0's packets see only zone 0's). Default 0.
    #[serde(default)]
    pub zone: u16,
}

/// A permanent neighbour entry (like `ip neigh add ... nud permanent`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfig {
    pub ip: IpAddr,
    pub mac: String,
    pub port: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The lcore of the control thread (EAL main lcore).
    #[serde(default)]
    pub main_lcore: u32,
    /// Worker lcores; one pinned worker per lcore, each polling one RX queue per port.
    #[serde(default = "default_workers")]
    pub workers: Vec<u32>,
    /// The CPU each worker lcore runs on, in `workers` order (default: the
    /// CPU numbered like the lcore). Several workers may share a CPU (tests
    /// on a small machine: EAL `--lcores`); on real hardware give each
    /// worker a core of its own.
    #[serde(default)]
    pub worker_cpus: Vec<u32>,
    /// Mbufs in the packet pool (2 KiB each; 2^n - 1 is the most memory-efficient).
    #[serde(default = "default_mempool")]
    pub mempool_mbufs: u32,
    /// Extra EAL arguments, e.g. `["--in-memory"]`, `["--no-huge", "-m", "512"]`.
    #[serde(default)]
    pub eal_args: Vec<String>,
    /// Most packets waiting for neighbour resolution per worker (more are dropped as no_neighbour).
    #[serde(default = "default_neigh_queue")]
    pub neighbour_queue: usize,
    /// How long a packet may wait for neighbour resolution.
    #[serde(default = "default_neigh_timeout")]
    pub neighbour_timeout_ms: u64,
    /// How long a neighbour learned from ARP / ND is trusted before it is
    /// asked again (Linux's base_reachable_time, 30 s); unanswered, it is
    /// dropped `neigh::STALE_GRACE_MS` later.
    #[serde(default = "default_neigh_reachable")]
    pub neighbour_reachable_ms: u64,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "neighbour")]
    pub neighbours: Vec<NeighbourConfig>,
    /// Connection tracking (`[conntrack]`).
    #[serde(default)]
    pub conntrack: conntrack::ConntrackConfig,
    /// Stateful filtering rules, in order (`[[policy]]`).
    #[serde(default)]
    pub policy: Vec<conntrack::PolicyConfig>,
    /// NAT rules, in order (`[[nat]]`).
    #[serde(default)]
    pub nat: Vec<conntrack::NatConfig>,
    /// Load-balancing backend pools (`[[pool]]`).
    #[serde(default, rename = "pool")]
    pub pools: Vec<conntrack::PoolConfig>,
    /// The REST API (`[rest]`).
    #[serde(default)]
    pub rest: rest::RestConfig,
    /// State sync with the other box of an HA pair (`[sync]`).
    #[serde(default)]
    pub sync: sync::SyncConfig,
}

fn default_workers() -> Vec<u32> {
    vec![1]
}
fn default_mempool() -> u32 {
    8191
}
fn default_neigh_queue() -> usize {
    256
}
fn default_neigh_timeout() -> u64 {
    3000
}
fn default_neigh_reachable() -> u64 {
    30_000
}

/// Upper bound for `neighbour_queue` (the worker's queue is a fixed array).
pub const MAX_NEIGH_QUEUE: usize = 1024;

/// The built-in default: ctgate between the two test hosts of `scripts/testbed.sh`.
pub const TESTBED_DEFAULT: &str = r#"# ctgate between the network namespaces of scripts/testbed.sh
workers = [1]
main_lcore = 0
mempool_mbufs = 8191
eal_args = ["--in-memory"]

[[port]]
name = "cli"
devargs = "net_af_packet0,iface=ctgw-cli-gw"
ipv4 = "192.0.2.1/24"
ipv6 = "2001:db8:1::1/64"

[[port]]
name = "srv"
devargs = "net_af_packet1,iface=ctgw-srv-gw"
ipv4 = "198.51.100.1/24"
ipv6 = "2001:db8:2::1/64"

# Connection tracking and a stateful policy: the inside (cli) may open
# connections, the outside (srv) only answers them.
[conntrack]
max_connections = 65536
policy_default = "drop"
accounting = true               # packets and bytes per connection (off unless said, as in the kernel)

[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "invalid"
states = "invalid"
action = "drop"

[[policy]]
name = "new-from-inside"
in_port = "cli"
states = "new"
action = "accept"

# Masquerade: what leaves by srv carries ctgate's srv address (v4 and v6).
[[nat]]
name = "masquerade-v4"
out_port = "srv"
src = "192.0.2.0/24"
action = "masquerade"

[[nat]]
name = "masquerade-v6"
out_port = "srv"
src = "2001:db8:1::/64"
action = "masquerade"
"#;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::parse_syntax(text, origin)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a config for offline use (`ctgate replay`): only the conntrack,
    /// policy, NAT and pool sections are checked; ports are optional.
    pub fn load_engine_only(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let cfg = Config::parse_syntax(&text, &path.display().to_string())?;
        conntrack::check(&cfg)?;
        Ok(cfg)
    }

    fn parse_syntax(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0);
            ConfigError::Syntax {
                path: origin.to_owned(),
                line,
                reason: e.message().replace('\n', " "),
            }
        })
    }

    /// The built-in default (the netns test bed).
    pub fn testbed_default() -> Config {
        Config::parse(TESTBED_DEFAULT, "<built-in>").expect("the built-in config is valid")
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        self.rest.validate().map_err(invalid)?;
        self.sync.validate().map_err(invalid)?;
        if self.sync.enabled && !self.rest.enabled {
            return Err(invalid(
                "[sync] runs beside the REST API (the takeover is POST /api/v1/ha/commit): set [rest] enabled = true",
            ));
        }
        if !self.conntrack.enabled && (!self.nat.is_empty() || !self.policy.is_empty()) {
            // Both run on conntrack (as the kernel's NAT and ct state
            // matches do): without it they would silently not apply.
            let what = if self.nat.is_empty() {
                "[[policy]]"
            } else {
                "[[nat]]"
            };
            return Err(invalid(format!(
                "{what} rules need conntrack, which [conntrack] enabled = false turns off: remove that line or the rules"
            )));
        }
        if self.ports.is_empty() {
            return Err(invalid(
                "no [[port]]: add at least one (see README, Configuration reference)",
            ));
        }
        if self.ports.len() > MAX_PORTS {
            return Err(invalid(format!(
                "{} ports configured, at most {MAX_PORTS} are supported",
                self.ports.len()
            )));
        }
        if self.workers.is_empty() {
            return Err(invalid(
                "workers is empty: list at least one worker lcore, e.g. workers = [1]",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for w in &self.workers {
            if *w == self.main_lcore {
                return Err(invalid(format!(
                    "lcore {w} is both main_lcore and a worker: give workers other lcores"
                )));
            }
            if !seen.insert(*w) {
                return Err(invalid(format!("lcore {w} is listed twice in workers")));
            }
            if *w >= 128 {
                return Err(invalid(format!(
                    "lcore {w} is out of range (DPDK's RTE_MAX_LCORE is 128)"
                )));
            }
        }
        if !self.worker_cpus.is_empty() && self.worker_cpus.len() != self.workers.len() {
            return Err(invalid(format!(
                "worker_cpus has {} entries for {} workers: give one CPU per worker lcore, or leave it out",
                self.worker_cpus.len(),
                self.workers.len()
            )));
        }
        if self.mempool_mbufs < 1024 {
            return Err(invalid(format!(
                "mempool_mbufs = {} is too small: use at least 1024",
                self.mempool_mbufs
            )));
        }
        if self.neighbour_queue == 0 || self.neighbour_queue > MAX_NEIGH_QUEUE {
            return Err(invalid(format!(
                "neighbour_queue must be 1..={MAX_NEIGH_QUEUE}"
            )));
        }
        for a in &self.eal_args {
            if a == "-l"
                || a.starts_with("--lcores")
                || a == "-c"
                || a.starts_with("--main-lcore")
                || a == "--vdev"
            {
                return Err(invalid(format!(
                    "eal_args must not contain {a:?}: ctgate derives lcores from workers/main_lcore and vdevs from [[port]] devargs"
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.ports.iter_mut().enumerate() {
            if p.name.is_empty() {
                p.name = format!("port{i}");
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(format!("two ports are named {:?}", p.name)));
            }
            if p.parent.is_some() || p.vlan.is_some() {
                check_vlan_port(p)?;
            } else if p.devargs.trim().is_empty() {
                return Err(invalid(format!("port {:?}: devargs is empty (e.g. \"net_pcap0,rx_pcap=in.pcap\" or \"0000:01:00.0\")", p.name)));
            }
            if !p.is_vlan() && !p.is_pci() && !p.devargs.starts_with("net_") {
                return Err(invalid(format!(
                    "port {:?}: devargs {:?} is neither a PCI address (0000:01:00.0) nor a vdev (net_pcap0,..., net_af_packet0,...)",
                    p.name, p.devargs
                )));
            }
            if p.ipv4.is_none() && p.ipv6.is_none() {
                return Err(invalid(format!(
                    "port {:?}: give it an ipv4 and/or ipv6 address/prefix",
                    p.name
                )));
            }
            if let Some(v4) = p.ipv4 {
                if !v4.addr.is_ipv4() {
                    return Err(invalid(format!(
                        "port {:?}: ipv4 = {v4} is not IPv4",
                        p.name
                    )));
                }
            }
            if let Some(v6) = p.ipv6 {
                if !v6.addr.is_ipv6() {
                    return Err(invalid(format!(
                        "port {:?}: ipv6 = {v6} is not IPv6",
                        p.name
                    )));
                }
            }
            if let Some(m) = &p.mac {
                let mac = parse_mac(m).map_err(|e| invalid(format!("port {:?}: {e}", p.name)))?;
                if mac[0] & 1 != 0 {
                    return Err(invalid(format!(
                        "port {:?}: mac {m} is a multicast address",
                        p.name
                    )));
                }
            }
        }
        let mut devs = std::collections::HashSet::new();
        let mut vlans = std::collections::HashSet::new();
        for p in &self.ports {
            if let (Some(parent), Some(vlan)) = (&p.parent, p.vlan) {
                match self.ports.iter().find(|q| q.name == *parent) {
                    None => {
                        return Err(invalid(format!(
                            "port {:?}: parent {parent:?} is not a port name",
                            p.name
                        )))
                    }
                    Some(q) if q.is_vlan() => {
                        return Err(invalid(format!(
                            "port {:?}: parent {parent:?} is itself a VLAN sub-port: name a physical port (one with devargs)",
                            p.name
                        )))
                    }
                    Some(_) => {}
                }
                if !vlans.insert((parent.clone(), vlan)) {
                    return Err(invalid(format!(
                        "port {:?}: vlan {vlan} is already a sub-port of {parent:?}: give each sub-port of a parent its own vlan",
                        p.name
                    )));
                }
                continue;
            }
            if !devs.insert(p.device_name()) {
                return Err(invalid(format!("two ports use the device {:?}: give each vdev its own name (net_pcap0, net_pcap1, ...)", p.device_name())));
            }
        }
        for r in &self.routes {
            let Some(port) = self.ports.iter().find(|p| p.name == r.port) else {
                return Err(invalid(format!(
                    "route {}: no port named {:?}",
                    r.prefix, r.port
                )));
            };
            if let Some(via) = r.via {
                if via.is_ipv4() != r.prefix.addr.is_ipv4() {
                    return Err(invalid(format!(
                        "route {}: via {via} is another address family",
                        r.prefix
                    )));
                }
                let connected = [port.ipv4, port.ipv6]
                    .into_iter()
                    .flatten()
                    .any(|p| p.contains(via));
                if !connected {
                    return Err(invalid(format!(
                        "route {}: next hop {via} is not in a prefix of port {:?}: the next hop must be on the port's link",
                        r.prefix, r.port
                    )));
                }
            }
        }
        for n in &self.neighbours {
            if !self.ports.iter().any(|p| p.name == n.port) {
                return Err(invalid(format!(
                    "neighbour {}: no port named {:?}",
                    n.ip, n.port
                )));
            }
            parse_mac(&n.mac).map_err(|e| invalid(format!("neighbour {}: {e}", n.ip)))?;
        }
        conntrack::check(self)
    }

    /// The indexes of the physical ports (those with a device, not VLAN
    /// sub-ports), in port order: what DPDK probes.
    pub fn physical_ports(&self) -> Vec<usize> {
        (0..self.ports.len())
            .filter(|&i| !self.ports[i].is_vlan())
            .collect()
    }

    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// The EAL arguments: core list, main lcore, one `--vdev` per virtual port,
    /// `-a` per PCI port (or `--no-pci` without one), then `eal_args`.
    pub fn eal_argv(&self) -> Vec<String> {
        let mut v = if self.worker_cpus.is_empty() {
            let mut lcores = vec![self.main_lcore];
            lcores.extend(&self.workers);
            vec![
                "-l".to_owned(),
                lcores
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        } else {
            // lcore@cpu for each: workers may share a CPU.
            let mut map = vec![format!("{0}@{0}", self.main_lcore)];
            map.extend(
                self.workers
                    .iter()
                    .zip(&self.worker_cpus)
                    .map(|(l, c)| format!("{l}@{c}")),
            );
            vec![format!("--lcores={}", map.join(","))]
        };
        v.push(format!("--main-lcore={}", self.main_lcore));
        let mut any_pci = false;
        for p in self.ports.iter().filter(|p| !p.is_vlan()) {
            if p.is_pci() {
                any_pci = true;
                v.push("-a".to_owned());
            } else {
                v.push("--vdev".to_owned());
            }
            v.push(p.devargs.clone());
        }
        if !any_pci {
            v.push("--no-pci".to_owned());
        }
        if !self.eal_args.iter().any(|a| a.starts_with("--log-level")) {
            v.push("--log-level=*:error".to_owned());
        }
        v.extend(self.eal_args.iter().cloned());
        v
    }

    /// The CPUs the EAL pins its lcores to: the main lcore's, then each worker's.
    pub fn cpus(&self) -> Vec<u32> {
        let mut c = vec![self.main_lcore];
        if self.worker_cpus.is_empty() {
            c.extend(&self.workers);
        } else {
            c.extend(&self.worker_cpus);
        }
        c
    }

    /// True if EAL runs without hugepages.
    pub fn no_huge(&self) -> bool {
        self.eal_args.iter().any(|a| a == "--no-huge")
    }

    /// Hugepage memory the mempool needs, in bytes, with room for the EAL's own.
    pub fn hugepage_bytes_needed(&self) -> u64 {
        // ~2.5 KiB per mbuf (2176 data room + 128 header + mempool overhead) plus
        // 64 MiB for the EAL, rings and the PMDs.
        self.mempool_mbufs as u64 * 2560 + (64 << 20)
    }
}

/// The fields of a VLAN sub-port on their own (the parent is checked once
/// every port has its name).
fn check_vlan_port(p: &PortConfig) -> Result<(), ConfigError> {
    let (Some(_), Some(vlan)) = (&p.parent, p.vlan) else {
        return Err(invalid(format!(
            "port {:?}: a VLAN sub-port needs both parent (the physical port's name) and vlan (1..4094)",
            p.name
        )));
    };
    if !(1..=4094).contains(&vlan) {
        return Err(invalid(format!(
            "port {:?}: vlan {vlan} is out of range: use 1..4094 (0 is untagged, 4095 reserved)",
            p.name
        )));
    }
    if !p.devargs.trim().is_empty() {
        return Err(invalid(format!(
            "port {:?}: a VLAN sub-port has no devargs (it sends and receives through its parent): remove devargs",
            p.name
        )));
    }
    if p.mac.is_some() {
        return Err(invalid(format!(
            "port {:?}: a VLAN sub-port has its parent's MAC address: remove mac",
            p.name
        )));
    }
    Ok(())
}

/// The IPv4 address of a prefix, as u32.
pub fn v4_u32(p: &Prefix) -> Option<u32> {
    match p.addr {
        IpAddr::V4(a) => Some(u32::from(a)),
        IpAddr::V6(_) => None,
    }
}

/// The IPv6 address of a prefix, as u128.
pub fn v6_u128(p: &Prefix) -> Option<u128> {
    match p.addr {
        IpAddr::V6(a) => Some(u128::from(a)),
        IpAddr::V4(_) => None,
    }
}

pub fn ip_from_u32(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

pub fn ip_from_u128(a: u128) -> Ipv6Addr {
    Ipv6Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_is_valid() {
        let c = Config::testbed_default();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.workers, vec![1]);
        let argv = c.eal_argv();
        assert_eq!(&argv[..3], &["-l", "0,1", "--main-lcore=0"]);
        assert!(argv.contains(&"--no-pci".to_owned()));
        assert!(argv.contains(&"net_af_packet0,iface=ctgw-cli-gw".to_owned()));
    }

    #[test]
    fn workers_sharing_a_cpu_map_lcores_onto_it() {
        let base = "[[port]]\nname=\"a\"\ndevargs=\"net_null0\"\nipv4=\"192.0.2.1/24\"\n";
        let c = Config::parse(
            &format!("workers = [1, 2, 3]\nworker_cpus = [1, 1, 0]\n{base}"),
            "t",
        )
        .unwrap();
        let argv = c.eal_argv();
        assert_eq!(&argv[..2], &["--lcores=0@0,1@1,2@1,3@0", "--main-lcore=0"]);
        assert_eq!(c.cpus(), vec![0, 1, 1, 0]);
        let c = Config::parse(&format!("workers = [1, 2]\n{base}"), "t").unwrap();
        assert_eq!(&c.eal_argv()[..3], &["-l", "0,1,2", "--main-lcore=0"]);
        assert_eq!(c.cpus(), vec![0, 1, 2]);
    }

    #[test]
    fn policy_rules_assign_helpers_to_new_connections() {
        let base = "[[port]]\nname=\"a\"\ndevargs=\"net_null0\"\nipv4=\"192.0.2.1/24\"\n";
        let rule = |extra: &str| {
            format!("{base}[[policy]]\nname=\"ftp\"\nstates=\"new\"\naction=\"accept\"\n{extra}\n")
        };
        let c = Config::parse(
            &rule("proto = \"tcp\"\ndport = \"21\"\nhelper = \"ftp\""),
            "t",
        )
        .unwrap();
        let p = conntrack::policy(&c).unwrap();
        assert_eq!(p.helper(0), ctcore::helper::Helper::Ftp);
        assert_eq!(
            (p.rules[0].proto, p.rules[0].dports),
            (Some(6), Some((21, 21)))
        );
        assert!(p.uses_helpers());
        let c = Config::parse(&rule("helper = \"tftp\""), "t").unwrap();
        assert_eq!(
            conntrack::policy(&c).unwrap().helper(0),
            ctcore::helper::Helper::Tftp
        );
        let e = Config::parse(&rule("helper = \"sip\""), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown helper \"sip\""), "{e}");
        let e = Config::parse(
            &format!(
                "{base}[[policy]]\nstates=\"established\"\naction=\"accept\"\nhelper=\"ftp\"\n"
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must include \"new\""), "{e}");
        let e = Config::parse(
            &format!("{base}[[policy]]\nstates=\"new\"\naction=\"drop\"\nhelper=\"ftp\"\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("accept"), "{e}");
        let c = Config::parse(&rule(""), "t").unwrap();
        assert!(!conntrack::policy(&c).unwrap().uses_helpers());
    }

    /// NAT and policy rules run on conntrack: with it off they are an
    /// error (they would silently not apply), and a plain router is fine.
    #[test]
    fn rules_need_conntrack() {
        let base = "[[port]]\nname=\"a\"\ndevargs=\"net_null0\"\nipv4=\"192.0.2.1/24\"\n[conntrack]\nenabled = false\n";
        let c = Config::parse(base, "t").unwrap();
        assert!(!c.conntrack.enabled);
        for (rules, what) in [
            (
                "[[nat]]\nout_port=\"a\"\naction=\"masquerade\"\n",
                "[[nat]]",
            ),
            (
                "[[policy]]\nstates=\"new\"\naction=\"drop\"\n",
                "[[policy]]",
            ),
        ] {
            let e = Config::parse(&format!("{base}{rules}"), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(what) && e.contains("enabled = false"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = Config::parse("workers = [1]\n[[port]]\ndevargs = 3\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config x.toml, line 3:"), "{e}");
        assert!(!e.contains('\n'));
        let e = Config::parse("bogus = 1\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn rejects_bad_configs() {
        let base = "[[port]]\nname=\"a\"\ndevargs=\"net_null0\"\nipv4=\"192.0.2.1/24\"\n";
        assert!(Config::parse(base, "t").is_ok());
        let cases = [
            ("workers = []\n", "workers is empty"),
            ("workers = [0]\n", "both main_lcore and a worker"),
            ("mempool_mbufs = 10\n", "too small"),
            ("eal_args = [\"-l\", \"0\"]\n", "must not contain"),
            (
                "workers = [1, 2]\nworker_cpus = [1]\n",
                "worker_cpus has 1 entries for 2 workers",
            ),
        ];
        for (pre, want) in cases {
            let e = Config::parse(&format!("{pre}{base}"), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{pre}: {e}");
        }
        let e = Config::parse("[[port]]\ndevargs=\"net_null0\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ipv4 and/or ipv6"), "{e}");
        let e = Config::parse(
            &format!(
                "{base}[[route]]\nprefix=\"203.0.113.0/24\"\nvia=\"198.51.100.2\"\nport=\"a\"\n"
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not in a prefix"), "{e}");
        let e = Config::parse(
            &format!("{base}[[route]]\nprefix=\"203.0.113.0/24\"\nport=\"b\"\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no port named"), "{e}");
        let e = Config::parse("[[port]]\ndevargs=\"eth0\"\nipv4=\"192.0.2.1/24\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither a PCI address"), "{e}");
        let e = Config::parse(
            "[[port]]\ndevargs=\"net_null0\"\nipv4=\"192.0.2.1/33\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("prefix length 33"), "{e}");
    }

    #[test]
    fn pci_names() {
        let p = PortConfig {
            name: "a".into(),
            devargs: "01:00.0,rxq=2".into(),
            ipv4: None,
            ipv6: None,
            mac: None,
            rx_desc: 1,
            tx_desc: 1,
            zone: 0,
            parent: None,
            vlan: None,
        };
        assert!(p.is_pci());
        assert_eq!(p.device_name(), "0000:01:00.0");
        let v = PortConfig {
            devargs: "net_pcap0,rx_pcap=a:b.pcap".into(),
            ..p
        };
        assert!(!v.is_pci());
        assert_eq!(v.device_name(), "net_pcap0");
    }

    #[test]
    fn vlan_sub_ports() {
        let trunk = "[[port]]\nname=\"trunk\"\ndevargs=\"net_null0\"\nipv4=\"203.0.113.1/24\"\n";
        let sub = |name: &str, extra: &str| {
            format!("[[port]]\nname=\"{name}\"\nipv4=\"192.0.2.1/24\"\n{extra}\n")
        };
        let c = Config::parse(
            &format!(
                "{trunk}{}{}",
                sub("v100", "parent=\"trunk\"\nvlan=100\nzone=1"),
                sub("v200", "parent=\"trunk\"\nvlan=200\nzone=2")
            ),
            "t",
        )
        .unwrap();
        assert_eq!(c.physical_ports(), vec![0]);
        assert!(c.ports[1].is_vlan() && c.ports[2].is_vlan());
        // Only the physical port is a device.
        let argv = c.eal_argv();
        assert_eq!(argv.iter().filter(|a| *a == "--vdev").count(), 1);
        let cases = [
            ("parent=\"trunk\"", "needs both parent"),
            ("vlan=100", "needs both parent"),
            ("parent=\"trunk\"\nvlan=0", "vlan 0 is out of range"),
            ("parent=\"trunk\"\nvlan=4095", "vlan 4095 is out of range"),
            (
                "parent=\"nope\"\nvlan=100",
                "parent \"nope\" is not a port name",
            ),
            (
                "parent=\"trunk\"\nvlan=100\ndevargs=\"net_null1\"",
                "remove devargs",
            ),
            (
                "parent=\"trunk\"\nvlan=100\nmac=\"02:00:00:00:00:05\"",
                "remove mac",
            ),
        ];
        for (extra, want) in cases {
            let e = Config::parse(&format!("{trunk}{}", sub("v", extra)), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
            assert!(!e.contains('\n'));
        }
        let e = Config::parse(
            &format!(
                "{trunk}{}{}",
                sub("v1", "parent=\"trunk\"\nvlan=7"),
                sub("v2", "parent=\"trunk\"\nvlan=7")
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("vlan 7 is already a sub-port of \"trunk\""),
            "{e}"
        );
        let e = Config::parse(
            &format!(
                "{trunk}{}{}",
                sub("v1", "parent=\"trunk\"\nvlan=7"),
                sub("v2", "parent=\"v1\"\nvlan=8")
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is itself a VLAN sub-port"), "{e}");
        // A route may name a sub-port, its next hop on the sub-port's prefix.
        assert!(Config::parse(
            &format!(
                "{trunk}{}[[route]]\nprefix=\"198.51.100.0/24\"\nvia=\"192.0.2.9\"\nport=\"v1\"\n",
                sub("v1", "parent=\"trunk\"\nvlan=7")
            ),
            "t"
        )
        .is_ok());
    }

    #[test]
    fn prefix_contains() {
        let p: Prefix = "198.51.100.1/24".parse().unwrap();
        assert!(p.contains("198.51.100.200".parse().unwrap()));
        assert!(!p.contains("198.51.101.1".parse().unwrap()));
        let p: Prefix = "2001:db8:1::1/64".parse().unwrap();
        assert!(p.contains("2001:db8:1::ffff".parse().unwrap()));
        assert!(!p.contains("2001:db8:2::1".parse().unwrap()));
        assert!(!p.contains("192.0.2.1".parse().unwrap()));
    }
}
