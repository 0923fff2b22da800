//! The control side: checks the machine, brings up the EAL, the mempool and
//! the ports, launches one pinned worker per lcore, aggregates the per-lcore
//! counters while they run, and on SIGINT / SIGTERM (or after a set duration)
//! stops them, drains, prints the final statistics and releases DPDK.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use crate::config::{format_mac, parse_mac, v4_u32, v6_u128, Config};
use crate::dpdk::{DpdkError, Eal, LcoreId, Mempool, Port, PortConf, PortStats, QueueId};
use crate::neigh::{NeighKey, NeighTable};
use crate::pipeline;
use crate::route::Routes;
use crate::stats::{self, Totals};
use crate::worker::{self, PortCtx, WorkerArgs};

/// Why the appliance could not run; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
    #[error("{0}")]
    Preflight(String),
    #[error("DPDK probed no port: check the devargs of every [[port]] (for net_af_packet the interface must exist: scripts/testbed.sh up)")]
    NoPorts,
    #[error("cannot install the signal handlers: {0}")]
    Signal(std::io::Error),
    #[error("worker on lcore {0} failed (returned {1})")]
    Worker(u32, i32),
    #[error(transparent)]
    Rest(#[from] crate::rest::RestError),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error(
        "mempool_mbufs = {mbufs} is too small: the ports' RX rings took {taken} of them at start, \
         leaving {free} (at least {need} are needed to forward); raise mempool_mbufs or lower rx_desc"
    )]
    PoolTooSmall {
        mbufs: u32,
        taken: u32,
        free: u32,
        need: u32,
    },
}

/// How `run` behaves besides the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop by itself after this long (else on SIGINT / SIGTERM).
    pub duration: Option<Duration>,
    /// Print a stats line this often.
    pub stats_interval: Option<Duration>,
    /// Write the final counters as JSON here.
    pub stats_json: Option<PathBuf>,
    /// Print the ports' non-zero xstats at the end.
    pub xstats: bool,
    /// Count the cycles of each stage of the workers' loop (a few TSC reads
    /// per burst more): reported at the end, in the stats JSON and metrics.
    pub profile_stages: bool,
}

/// How the packets of a connection reach one worker (logged): the
/// hardware's RSS when every port spreads over all the workers' queues with
/// one redirection table that could be read back, software dispatch
/// otherwise (ports without RSS, with fewer queues than workers, or whose
/// table is unknown).
fn steering(workers: usize, ports: &[(&str, &crate::dpdk::PortInfo)]) -> pipeline::Steering {
    if workers == 1 {
        return pipeline::Steering::Single;
    }
    let first = &ports[0].1.reta;
    let hardware = |i: &crate::dpdk::PortInfo| {
        i.rss_hf != 0 && i.rx_queues as usize == workers && !i.reta.is_empty()
    };
    if ports.iter().all(|(_, i)| hardware(i) && i.reta == *first) {
        tracing::info!(
            workers,
            reta_size = first.len(),
            reta = ?&first[..first.len().min(16)],
            "steering: symmetric RSS on every port (redirection table read back from the devices)"
        );
        return pipeline::Steering::Rss(ctcore::rss::Rss {
            key: crate::dpdk::SYMMETRIC_RSS_KEY.to_vec(),
            reta: first.clone(),
        });
    }
    let why: Vec<String> = ports
        .iter()
        .filter(|(_, i)| !hardware(i))
        .map(|(name, i)| {
            format!(
                "{name} ({}: {} RX queue(s), {})",
                i.driver,
                i.rx_queues,
                if i.rss_hf == 0 {
                    "no RSS"
                } else if i.reta.is_empty() {
                    "redirection table not readable"
                } else {
                    "RSS"
                }
            )
        })
        .collect();
    tracing::info!(
        workers,
        ports = %if why.is_empty() { "redirection tables differ".to_owned() } else { why.join(", ") },
        "steering: software dispatch (the receiving worker hands each packet to its connection's owner over a ring)"
    );
    pipeline::Steering::Dispatch
}

/// The handoff rings of `workers` workers, one per ordered pair: each
/// worker's ends, in worker order.
fn handoff_rings(workers: usize, socket: i32) -> Result<Vec<worker::HandoffRings>, RunError> {
    let stopped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut rings: Vec<worker::HandoffRings> = (0..workers)
        .map(|_| worker::HandoffRings {
            to: (0..workers).map(|_| None).collect(),
            from: Vec::new(),
            stopped: stopped.clone(),
        })
        .collect();
    for from in 0..workers {
        for to in 0..workers {
            if from == to {
                continue;
            }
            let (tx, rx) = crate::dpdk::handoff_ring(
                &format!("ctgate_handoff_{from}_{to}"),
                worker::HANDOFF_RING,
                socket,
            )?;
            rings[from].to[to] = Some(tx);
            rings[to].from.push(rx);
        }
    }
    Ok(rings)
}

/// What a run leaves behind: the counters summed over the workers, and each port's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub totals: Totals,
    /// Per worker, in worker order.
    pub workers: Vec<WorkerReport>,
    pub conntrack: CtReport,
    pub ports: Vec<PortReport>,
    pub seconds: f64,
    pub tsc_hz: u64,
}

/// One worker's share of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerReport {
    pub lcore: u32,
    /// Packets it received from its RX queues.
    pub rx: u64,
    pub tx: u64,
    /// Software dispatch: received and handed to their owner / handed to it.
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// Packets its stage and forwarder processed: rx - handed off (and
    /// dropped for a full ring) + taken over.
    pub processed: u64,
    /// Connections it created, and those in its stripes at the end.
    pub new_connections: u64,
    pub connections: u64,
    pub nat_ports_in_use: u64,
}

impl WorkerReport {
    fn collect(
        lcores: &[u32],
        stats: &stats::SharedStats,
        shared: &pipeline::Shared,
        ports: usize,
    ) -> Vec<WorkerReport> {
        let ct = shared.per_worker();
        lcores
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let t = Totals::sum(&stats[i..=i], ports);
                WorkerReport {
                    lcore: *l,
                    rx: t.rx,
                    tx: t.tx,
                    handoff_out: t.handoff_out,
                    handoff_in: t.handoff_in,
                    processed: (t.rx + t.handoff_in)
                        .saturating_sub(t.handoff_out + t.drops["handoff_full"]),
                    new_connections: ct.get(i).map_or(0, |p| p.ct.new),
                    connections: shared.connections(Some(i)),
                    nat_ports_in_use: shared.nat_ports(Some(i)).in_use,
                }
            })
            .collect()
    }
}

/// Connection tracking at the end of a run: counters, policy and NAT rule
/// figures, and the table in `conntrack -L -o extended` format.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CtReport {
    /// False for a router (`[conntrack] enabled = false`): no table.
    pub enabled: bool,
    pub counters: std::collections::BTreeMap<String, u64>,
    pub connections: u32,
    pub capacity: u32,
    /// (rule, packets), the default last.
    pub policy: Vec<(String, u64)>,
    /// (rule, connections translated, dropped for lack of a port).
    pub nat: Vec<(String, u64, u64)>,
    pub nat_out_of_ports: u64,
    /// Source NAT ports (and ICMP ids) in use at the end.
    pub nat_ports_in_use: u64,
    /// Endpoint-independent mappings held at the end, and those refused
    /// because the maps were full.
    pub nat_eim_mappings: u64,
    pub nat_eim_full: u64,
    pub table: Vec<String>,
}

/// Above this many connections the final report leaves the table listing out.
pub const LISTING_MAX: u32 = 65_536;

impl CtReport {
    pub fn from_shared(shared: &pipeline::Shared) -> CtReport {
        let t = shared.totals();
        let helper_fields = t.helpers.fields();
        let eim = shared.eim();
        let nat = shared
            .engine
            .nat()
            .map(|n| {
                n.rules
                    .iter()
                    .map(|r| (r.name.clone(), r.hits.get(), r.out_of_ports.get()))
                    .collect()
            })
            .unwrap_or_default();
        CtReport {
            counters: t
                .ct
                .fields()
                .iter()
                .chain(
                    helper_fields
                        .iter()
                        .filter(|_| shared.engine.helpers_enabled()),
                )
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            enabled: shared.enabled,
            connections: shared.engine.table().len(),
            capacity: shared.engine.table().capacity(),
            policy: shared
                .policy
                .labels()
                .into_iter()
                .zip(t.policy_hits.iter().copied())
                .collect(),
            nat,
            nat_out_of_ports: t.nat_out_of_ports,
            nat_ports_in_use: shared.nat_ports(None).in_use,
            nat_eim_mappings: eim.mappings,
            nat_eim_full: eim.full,
            // A million formatted lines help nobody and take seconds.
            table: if shared.engine.table().len() <= LISTING_MAX {
                shared.listing()
            } else {
                Vec::new()
            },
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PortReport {
    pub name: String,
    pub driver: String,
    pub mac: String,
    pub ipackets: u64,
    pub opackets: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

fn preflight(cfg: &Config) -> Result<(), RunError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("0");
    if uid != "0" {
        return Err(RunError::Preflight(
            "ctgate needs root for DPDK (hugepages, raw sockets, devices): run it with sudo".into(),
        ));
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let cpus = parse_cpu_list(online.trim());
    if !cpus.is_empty() {
        for c in cfg.cpus() {
            if !cpus.contains(&c) {
                return Err(RunError::Preflight(format!(
                    "CPU {c} does not exist: this machine's CPUs are {}: change workers / main_lcore, or map the worker lcores onto existing CPUs with worker_cpus",
                    online.trim()
                )));
            }
        }
    }
    if cfg.no_huge() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    {
        return Err(RunError::Preflight(
            "no hugetlbfs is mounted: run `sudo scripts/setup.sh` (or `mount -t hugetlbfs nodev /dev/hugepages`), or add \"--no-huge\" to eal_args".into(),
        ));
    }
    if let Some(msg) = huge_dir_problem(cfg, &mounts) {
        return Err(RunError::Preflight(msg));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let free = field("HugePages_Free:") * field("Hugepagesize:") * 1024;
    let need = cfg.hugepage_bytes_needed();
    if free < need {
        return Err(RunError::Preflight(format!(
            "only {} MiB of hugepages are free, ctgate needs about {} MiB (mempool_mbufs = {}): run `sudo scripts/setup.sh` \
             (or `echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`), lower mempool_mbufs, or add \"--no-huge\" to eal_args",
            free >> 20,
            need.div_ceil(1 << 20),
            cfg.mempool_mbufs
        )));
    }
    Ok(())
}

/// Logs each port whose link went down or came back since `up` (the last
/// states seen), and updates it. `ports` are the devices of the physical
/// ports `phys` (indexes into the config's ports).
fn watch_links(cfg: &Config, phys: &[usize], ports: &[Port], up: &mut [bool]) {
    for ((p, port), was) in phys
        .iter()
        .map(|&i| &cfg.ports[i])
        .zip(ports)
        .zip(up.iter_mut())
    {
        let link = port.link();
        if link.up == *was {
            continue;
        }
        *was = link.up;
        if link.up {
            tracing::info!(port = %p.name, speed_mbps = link.speed_mbps, "link up: the port receives and sends again");
        } else {
            tracing::warn!(port = %p.name, "link down: nothing is received on this port, what is sent out of it is lost, until the link comes back");
        }
    }
}

/// The mbuf pool, as the control thread sees it: while it is empty the
/// ports drop what they receive (counted as rx_nombuf only by PMDs that
/// count it; net_af_packet leaves the frames to the kernel, which drops them
/// silently), so running dry and recovering are logged.
struct PoolWatch {
    /// Fewer free mbufs than this: dry (a receive burst per worker).
    low: u32,
    dry: bool,
}

impl PoolWatch {
    fn check(&mut self, pool: &Mempool, shared: &pipeline::Shared) {
        let free = pool.available();
        if !self.dry && free < self.low {
            self.dry = true;
            shared.pool_dry.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                free,
                "the mbuf pool ran dry: the ports drop what they receive until buffers come back; raise mempool_mbufs (or lower neighbour_queue if packets wait for a neighbour)"
            );
        } else if self.dry && free >= 4 * self.low {
            self.dry = false;
            tracing::info!(free, "the mbuf pool has free buffers again");
        }
    }
}

/// What is wrong with the hugetlbfs `--huge-dir` names in `eal_args`, if
/// anything: DPDK takes its pages from that mount only (unless
/// `--in-memory`), and would fail with a bare errno ("Permission denied"
/// when it is not a hugetlbfs, "Cannot allocate memory" when its size=
/// limit is too small). `mounts` is /proc/mounts.
fn huge_dir_problem(cfg: &Config, mounts: &str) -> Option<String> {
    let mut args = cfg.eal_args.iter();
    let mut dir = None;
    while let Some(a) = args.next() {
        if let Some(d) = a.strip_prefix("--huge-dir=") {
            dir = Some(d.to_owned());
        } else if a == "--huge-dir" {
            dir = args.next().cloned();
        }
    }
    let dir = dir?;
    if cfg.eal_args.iter().any(|a| a == "--in-memory") {
        return None;
    }
    let path = std::fs::canonicalize(&dir).unwrap_or_else(|_| PathBuf::from(&dir));
    let Some(options) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "hugetlbfs" && std::path::Path::new(f[1]) == path).then(|| f[3])
    }) else {
        return Some(format!(
            "eal_args: --huge-dir {dir} is not a mounted hugetlbfs: mount one there (`mount -t hugetlbfs nodev {dir}`), or remove --huge-dir (DPDK then uses /dev/hugepages)"
        ));
    };
    // size=N[KMG]: the mount's own limit, whatever the system reserved.
    let option = |name: &str| {
        options.split(',').find_map(|o| {
            let v = o.strip_prefix(name)?.strip_prefix('=')?;
            let (num, unit) = match v.char_indices().last()? {
                (i, 'K' | 'k') => (&v[..i], 1u64 << 10),
                (i, 'M' | 'm') => (&v[..i], 1 << 20),
                (i, 'G' | 'g') => (&v[..i], 1 << 30),
                _ => (v, 1),
            };
            num.parse::<u64>().ok().map(|n| n * unit)
        })
    };
    let limit = option("size")?;
    let page = option("pagesize").unwrap_or(2 << 20).max(1);
    let need = cfg.hugepage_bytes_needed().div_ceil(page) * page;
    (limit < need).then(|| {
        format!(
            "eal_args: the hugetlbfs at --huge-dir {dir} is limited to {} MiB (its size= option), ctgate needs about {} MiB (mempool_mbufs = {}): remount it larger (`mount -o remount,size={}M {dir}`), lower mempool_mbufs, or remove --huge-dir",
            limit >> 20,
            need >> 20,
            cfg.mempool_mbufs,
            need >> 20
        )
    })
}

/// Parses a CPU list like `0-3,6`.
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<u32>().ok()),
        }
    }
    v
}

/// Runs the appliance until a signal (or `opts.duration`), then returns the report.
pub fn run(cfg: &Config, opts: &RunOptions) -> Result<Report, RunError> {
    preflight(cfg)?;
    let argv = cfg.eal_argv();
    tracing::info!(eal_args = %argv.join(" "), "starting the DPDK EAL");
    let eal = Eal::init(&argv)?;
    // DPDK tooling needs the multi-process runtime directory, which
    // --in-memory does without.
    let in_memory = argv.iter().any(|a| a == "--in-memory");
    let pdump = if in_memory {
        None
    } else {
        match eal.pdump_init() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "dpdk-dumpcap will not work");
                None
            }
        }
    };
    if eal.ports_available() == 0 {
        return Err(RunError::NoPorts);
    }
    // Devices are probed for the physical ports only; a VLAN sub-port uses
    // its parent's (`device[i]`: port i's index in `phys` and `ports`).
    let phys = cfg.physical_ports();
    let device: Vec<usize> = cfg
        .ports
        .iter()
        .map(|p| {
            let i = p
                .parent
                .as_deref()
                .and_then(|n| cfg.port_index(n))
                .unwrap_or_else(|| cfg.port_index(&p.name).expect("its own name"));
            phys.iter()
                .position(|&d| d == i)
                .expect("validated: a physical parent")
        })
        .collect();
    let mut ids = Vec::new();
    for p in phys.iter().map(|&i| &cfg.ports[i]) {
        ids.push(eal.port_by_name(&p.device_name(), &p.devargs)?);
    }
    let socket = eal.lcore_socket(LcoreId(cfg.workers[0]));
    let pool = Arc::new(Mempool::new(
        &eal,
        "ctgate_pool",
        cfg.mempool_mbufs,
        256,
        socket,
    )?);
    let nworkers = cfg.workers.len() as u16;
    let mut ports = Vec::new();
    for (p, id) in phys.iter().map(|&i| &cfg.ports[i]).zip(&ids) {
        let conf = PortConf {
            rx_queues: nworkers,
            tx_queues: nworkers,
            rx_desc: p.rx_desc,
            tx_desc: p.tx_desc,
            mac: p.mac.as_deref().map(|m| parse_mac(m).expect("validated")),
        };
        let port = Port::setup(&eal, *id, &conf, &pool)?;
        if conf.mac.is_some() && !port.info().mac_set {
            tracing::info!(port = %p.name, "the PMD cannot change its MAC address: the configured one is used in software");
        }
        let info = port.info();
        let link = port.link();
        tracing::info!(
            port = %p.name, id = id.0, driver = %info.driver, mac = %format_mac(&info.mac),
            rx_queues = info.rx_queues, tx_queues = info.tx_queues, rss_hf = info.rss_hf,
            rx_l4_checksum_offload = info.rx_l4_csum, link_up = link.up, speed_mbps = link.speed_mbps, "port started"
        );
        ports.push(port);
    }

    // Some PMDs fill every RX descriptor with an mbuf at start: what is
    // left must carry the traffic (bursts in flight, TX rings, neighbour
    // waits, held fragments), or nothing is ever forwarded.
    let free = pool.available();
    let need = 256 * cfg.workers.len() as u32;
    if free < need {
        return Err(RunError::PoolTooSmall {
            mbufs: cfg.mempool_mbufs,
            taken: cfg.mempool_mbufs.saturating_sub(free),
            free,
            need,
        });
    }
    let routes = Arc::new(Routes::from_config(cfg));
    let neigh = Arc::new(NeighTable::new(4096));
    for n in &cfg.neighbours {
        let port = cfg.port_index(&n.port).expect("validated") as u8;
        let mac = parse_mac(&n.mac).expect("validated");
        let key = match n.ip {
            std::net::IpAddr::V4(a) => NeighKey::v4(port, u32::from(a)),
            std::net::IpAddr::V6(a) => NeighKey::v6(port, u128::from(a)),
        };
        neigh.learn(&key, &mac, crate::neigh::PERMANENT);
    }
    let stats = Arc::new(stats::new_shared(cfg.workers.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let infos: Vec<(&str, &crate::dpdk::PortInfo)> = phys
        .iter()
        .zip(&ports)
        .map(|(&c, p)| (cfg.ports[c].name.as_str(), p.info()))
        .collect();
    let steering = steering(cfg.workers.len(), &infos);
    let mut handoff = match steering {
        pipeline::Steering::Dispatch => handoff_rings(cfg.workers.len(), socket)?
            .into_iter()
            .map(Some)
            .collect(),
        _ => Vec::new(),
    };
    let shared = Arc::new(pipeline::Shared::new(cfg, steering));
    if !in_memory {
        if let Err(e) = crate::rest::telemetry::register(&eal, &shared, &stats, cfg.ports.len()) {
            tracing::warn!(error = %e, "no /ctgate telemetry commands");
        }
    }
    // The REST API reads the ports too; control takes them back to close them.
    let rest_ports = Arc::new(RwLock::new(ports));
    let ports = rest_ports.read().unwrap_or_else(|e| e.into_inner());
    let rest = crate::rest::start(
        &cfg.rest,
        crate::rest::Context {
            shared: shared.clone(),
            stats: stats.clone(),
            ports: rest_ports.clone(),
            port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
            port_devices: cfg
                .ports
                .iter()
                .zip(&device)
                .map(|(p, &d)| (d, p.vlan.unwrap_or(0)))
                .collect(),
            workers: cfg.workers.clone(),
            tsc_hz: eal.tsc_hz(),
            pool: Arc::downgrade(&pool),
            neigh: neigh.clone(),
            ha: cfg.sync.enabled.then(|| {
                Arc::new(crate::ha::Ha::new(
                    cfg.sync.clone(),
                    &shared,
                    cfg.conntrack.max_connections as usize,
                ))
            }),
        },
    )?;

    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, term.clone())
            .map_err(RunError::Signal)?;
        signal_hook::flag::register(sig, term.clone()).map_err(RunError::Signal)?;
    }

    // Ports with fewer TX queues than workers: their queues are shared, one
    // lock each (numbered port by port).
    let mut tx_lock_base = Vec::new();
    let mut n_locks = 0u16;
    for port in ports.iter() {
        let q = port.info().tx_queues;
        tx_lock_base.push((q < nworkers).then_some(n_locks));
        if q < nworkers {
            n_locks += q;
        }
    }
    let tx_locks: Arc<[std::sync::Mutex<()>]> =
        (0..n_locks).map(|_| std::sync::Mutex::new(())).collect();
    for ((p, port), base) in phys
        .iter()
        .map(|&i| &cfg.ports[i])
        .zip(ports.iter())
        .zip(&tx_lock_base)
    {
        if base.is_some() {
            tracing::info!(
                port = %p.name,
                tx_queues = port.info().tx_queues,
                workers = nworkers,
                "fewer TX queues than workers: the workers share them (one burst at a time per queue)"
            );
        }
    }

    let tsc_hz = eal.tsc_hz();
    let started = Instant::now();
    let mut launched = Vec::new();
    let mut launch_err = None;
    for (wi, lcore) in cfg.workers.iter().enumerate() {
        let mut pctx = ArrayVec::new();
        for (pi, p) in cfg.ports.iter().enumerate() {
            let d = device[pi];
            let info = ports[d].info();
            // A sub-port: its parent's device, MAC and TX queue, no RX queue.
            let parent = phys[d];
            pctx.push(PortCtx {
                id: info.id,
                mac: cfg.ports[parent].mac_addr().unwrap_or(info.mac),
                rxq: (wi < info.rx_queues as usize && !p.is_vlan()).then_some(QueueId(wi as u16)),
                txq: QueueId(wi as u16 % info.tx_queues),
                tx_lock: tx_lock_base[d].map(|b| b + wi as u16 % info.tx_queues),
                v4: p.ipv4.as_ref().and_then(v4_u32),
                v6: p.ipv6.as_ref().and_then(v6_u128),
                vlan: p.vlan.unwrap_or(0),
                parent: parent as u8,
                trunk: cfg
                    .ports
                    .iter()
                    .any(|q| q.parent.as_deref() == Some(p.name.as_str())),
            });
        }
        let args = WorkerArgs {
            index: wi,
            ports: pctx,
            routes: routes.clone(),
            neigh: neigh.clone(),
            pool: pool.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            pipeline: shared.clone(),
            tsc_hz,
            neigh_queue: cfg.neighbour_queue,
            neigh_timeout_ms: cfg.neighbour_timeout_ms,
            neigh_reachable_ms: cfg.neighbour_reachable_ms,
            handoff: handoff.get_mut(wi).and_then(Option::take),
            tx_locks: tx_locks.clone(),
            profile_stages: opts.profile_stages,
        };
        match eal.launch(LcoreId(*lcore), Box::new(move || worker::run(args))) {
            Ok(()) => launched.push(*lcore),
            Err(e) => {
                launch_err = Some(e);
                break;
            }
        }
    }
    if launch_err.is_none() {
        tracing::info!(workers = ?cfg.workers, "forwarding; SIGINT or SIGTERM stops");
        let mut next_print = opts.stats_interval.map(|i| Instant::now() + i);
        let mut last = (Instant::now(), 0u64);
        let mut last_hist = vec![0u64; stats::HIST_BUCKETS];
        let mut next_pressure_check = Instant::now();
        let mut links: Vec<bool> = ports.iter().map(|p| p.link().up).collect();
        let mut pool_watch = PoolWatch {
            low: (pipeline::BURST * cfg.workers.len()) as u32,
            dry: false,
        };
        while !term.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            pool_watch.check(&pool, &shared);
            if Instant::now() >= next_pressure_check {
                // The table-full warning, with or without the REST API.
                shared.check_pressure();
                watch_links(cfg, &phys, &ports, &mut links);
                next_pressure_check = Instant::now() + Duration::from_secs(1);
            }
            if opts.duration.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
            if let (Some(at), Some(interval)) = (next_print, opts.stats_interval) {
                if Instant::now() >= at {
                    let t = Totals::sum(&stats, cfg.ports.len());
                    let now = Instant::now();
                    let rate = (t.tx - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                    last = (now, t.tx);
                    println!(
                        "[{:>6.1}s] rate {:.0} pps tx, rx {} tx {} forwarded {} dropped {} (no_route {} no_neighbour {} ttl {} bad {})",
                        started.elapsed().as_secs_f64(),
                        rate,
                        t.rx,
                        t.tx,
                        t.forwarded,
                        t.dropped,
                        t.drops["no_route"],
                        t.drops["no_neighbour"],
                        t.drops["ttl_exceeded"],
                        t.drops["bad_header"]
                    );
                    {
                        // Conntrack and per-burst figures of the interval
                        // (scripts/bench.sh plots these).
                        let ct = shared.totals().ct;
                        let h: Vec<u64> = t
                            .burst_hist
                            .iter()
                            .zip(&last_hist)
                            .map(|(a, b)| a - b)
                            .collect();
                        let pct = |p| stats::hist_percentile(&h, p).unwrap_or(0);
                        println!(
                            "[{:>6.1}s] ct connections {} found {} new {} insert {} insert_failed {} drop {} early_drop {} expired {} conntrack_drops {}; burst cycles p50 {} p99 {} max {} bursts {} busy_cycles {} busy_packets {} stall_iterations {} stall_cycles {} stall_packets {}",
                            started.elapsed().as_secs_f64(),
                            shared.engine.table().len(),
                            ct.found,
                            ct.new,
                            ct.insert,
                            ct.insert_failed,
                            ct.drop,
                            ct.early_drop,
                            ct.expired,
                            t.drops["conntrack"],
                            pct(50.0),
                            pct(99.0),
                            pct(100.0),
                            h.iter().sum::<u64>(),
                            t.busy_cycles,
                            t.busy_packets,
                            t.stall_iterations,
                            t.stall_cycles,
                            t.stall_packets
                        );
                        last_hist = t.burst_hist.clone();
                    }
                    next_print = Some(at + interval);
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut worker_err = None;
    for l in &launched {
        let ret = eal.wait(LcoreId(*l));
        if ret != 0 {
            worker_err.get_or_insert(RunError::Worker(*l, ret));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let totals = Totals::sum(&stats, cfg.ports.len());
    let mut port_reports = Vec::new();
    for (p, &d) in cfg.ports.iter().zip(&device) {
        let port = &ports[d];
        let mac = format_mac(&cfg.ports[phys[d]].mac_addr().unwrap_or(port.info().mac));
        if let Some(vlan) = p.vlan {
            // The NIC counters are the parent's.
            port_reports.push(PortReport {
                name: p.name.clone(),
                driver: format!("vlan {vlan}"),
                mac,
                ipackets: 0,
                opackets: 0,
                imissed: 0,
                ierrors: 0,
                oerrors: 0,
                rx_nombuf: 0,
            });
            continue;
        }
        let s: PortStats = port.stats();
        port_reports.push(PortReport {
            name: p.name.clone(),
            driver: port.info().driver.clone(),
            mac,
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        });
        if opts.xstats {
            for (name, v) in port.xstats().into_iter().filter(|(_, v)| *v != 0) {
                println!("xstat {} {name} {v}", p.name);
            }
        }
    }
    // Release in order: ports (stop flushes PMD output such as tx_pcap files),
    // then the pool, then the EAL.
    drop(ports);
    drop(rest);
    let ports = std::mem::take(&mut *rest_ports.write().unwrap_or_else(|e| e.into_inner()));
    drop(ports);
    drop(pool);
    drop(pdump);
    drop(eal);
    if let Some(e) = launch_err {
        return Err(e.into());
    }
    if let Some(e) = worker_err {
        return Err(e);
    }
    let report = Report {
        totals,
        workers: WorkerReport::collect(&cfg.workers, &stats, &shared, cfg.ports.len()),
        conntrack: CtReport::from_shared(&shared),
        ports: port_reports,
        seconds,
        tsc_hz,
    };
    if let Some(path) = &opts.stats_json {
        let json = serde_json::to_string_pretty(&report).expect("plain data serialises");
        std::fs::write(path, json).map_err(|e| RunError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(report)
}

impl Report {
    /// The final statistics, for people.
    pub fn render(&self, cfg: &Config) -> String {
        use std::fmt::Write;
        let t = &self.totals;
        let mut s = String::new();
        let _ = writeln!(s, "ctgate stats after {:.1} s", self.seconds);
        for (i, p) in self.ports.iter().enumerate() {
            let _ = writeln!(
                s,
                "  port {:<6} {:<14} {}  rx {:>10}  tx {:>10}  (nic: in {} out {} missed {} errors {}/{})",
                p.name, p.driver, p.mac, t.rx_per_port[i], t.tx_per_port[i], p.ipackets, p.opackets, p.imissed, p.ierrors, p.oerrors
            );
        }
        let _ = writeln!(
            s,
            "  forwarded {}   echo replies {}   icmp errors {}",
            t.forwarded, t.echo_replies_sent, t.icmp_errors_sent
        );
        let _ = writeln!(
            s,
            "  arp: requests sent {} replies sent {}   nd: solicits sent {} adverts sent {}   queued for a neighbour {}   stale refreshed {}   unsolicited ignored {}",
            t.arp_requests_sent, t.arp_replies_sent, t.nd_solicits_sent, t.nd_adverts_sent, t.neigh_queued, t.neigh_refreshes, t.neigh_unsolicited
        );
        let drops: Vec<String> = t
            .drops
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  dropped {} ({})",
            t.dropped,
            if drops.is_empty() {
                "none".into()
            } else {
                drops.join(", ")
            }
        );
        if let (Some(cpp), Some(free)) = (t.cycles_per_packet(), t.stall_free_cycles_per_packet()) {
            let _ = writeln!(
                s,
                "  cycles/packet {:.1} (busy cycles over packets, {} workers); stall-free {:.1} ({} iterations over {} us left out)",
                cpp,
                cfg.workers.len(),
                free,
                t.stall_iterations,
                crate::stats::STALL_US
            );
        }
        if t.stage_packets > 0 {
            let per = |c: u64| c as f64 / t.stage_packets as f64;
            let stages: Vec<String> = crate::stats::Stage::ALL
                .iter()
                .map(|st| format!("{} {:.1}", st.name(), per(t.stage_cycles[st.name()])))
                .collect();
            let _ = writeln!(
                s,
                "  stages, cycles/packet of the stall-free busy iterations ({} packets): {}; total {:.1}",
                t.stage_packets,
                stages.join(", "),
                per(t.stage_cycles.values().sum())
            );
        }
        if self.workers.len() > 1 {
            for (i, w) in self.workers.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  worker {i} (lcore {}): rx {} handed off {} taken over {} processed {} tx {}; connections {} (new {}), NAT ports in use {}",
                    w.lcore, w.rx, w.handoff_out, w.handoff_in, w.processed, w.tx, w.connections, w.new_connections, w.nat_ports_in_use
                );
            }
        }
        let ct = &self.conntrack;
        let counters: Vec<String> = ct
            .counters
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if ct.enabled {
            let _ = writeln!(
                s,
                "  conntrack: {} of {} connections; {}",
                ct.connections,
                ct.capacity,
                counters.join(", ")
            );
        } else {
            let _ = writeln!(s, "  conntrack: off (routing only)");
        }
        if ct.policy.len() > 1 {
            let p: Vec<String> = ct.policy.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "  policy: {}", p.join(", "));
        }
        for (name, hits, oop) in &ct.nat {
            let _ = writeln!(
                s,
                "  nat {name}: {hits} connections translated, {oop} dropped for lack of a port"
            );
        }
        const SHOWN: usize = 40;
        for line in ct.table.iter().take(SHOWN) {
            let _ = writeln!(s, "    {line}");
        }
        if ct.table.len() > SHOWN {
            let _ = writeln!(s, "    ... {} more", ct.table.len() - SHOWN);
        }
        let _ = write!(
            s,
            "  accounting: rx {} + created {} = tx {} + freed {} (+ {} unaccounted)",
            t.rx,
            t.generated,
            t.tx,
            t.dropped,
            t.unaccounted()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(rx_queues: u16, rss_hf: u64, reta: Vec<u16>) -> crate::dpdk::PortInfo {
        crate::dpdk::PortInfo {
            id: crate::dpdk::PortId(0),
            driver: "x".into(),
            mac: [2, 0, 0, 0, 0, 1],
            rx_queues,
            tx_queues: rx_queues,
            rss_hf,
            reta,
            rx_l4_csum: false,
            socket: 0,
            mac_set: false,
            kernel_if: None,
        }
    }

    #[test]
    fn steering_follows_the_hardware_only_where_every_port_has_a_known_table() {
        let reta: Vec<u16> = (0..128).map(|i| i % 2).collect();
        let rss = info(2, 1, reta.clone());
        let rss2 = info(2, 1, reta.clone());
        let kind = |s: pipeline::Steering| match s {
            pipeline::Steering::Single => "single",
            pipeline::Steering::Rss(r) => {
                assert_eq!(r.reta, reta);
                "rss"
            }
            pipeline::Steering::Dispatch => "dispatch",
        };
        assert_eq!(kind(steering(1, &[("a", &info(1, 0, vec![]))])), "single");
        assert_eq!(kind(steering(2, &[("a", &rss), ("b", &rss2)])), "rss");
        // No RSS, one queue, an unreadable or a different table: software.
        for other in [
            info(2, 0, vec![]),
            info(1, 1, vec![0; 128]),
            info(2, 1, vec![]),
            info(2, 1, (0..128).map(|i| (i + 1) % 2).collect()),
        ] {
            assert_eq!(kind(steering(2, &[("a", &rss), ("b", &other)])), "dispatch");
        }
        // Three workers over ports with two queues: software.
        assert_eq!(kind(steering(3, &[("a", &rss), ("b", &rss2)])), "dispatch");
    }

    #[test]
    fn huge_dir_must_be_a_hugetlbfs_with_room() {
        let mounts = "nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
                      nodev /mnt/small hugetlbfs rw,relatime,pagesize=2M,size=2M 0 0\n\
                      tmpfs /tmp tmpfs rw 0 0\n";
        let problem = |args: &str| {
            let mut cfg = Config::testbed_default();
            cfg.eal_args = args.split(' ').map(str::to_owned).collect();
            huge_dir_problem(&cfg, mounts)
        };
        assert_eq!(problem("--in-memory"), None);
        assert_eq!(problem("--huge-dir=/dev/hugepages"), None);
        assert_eq!(problem("--huge-dir /dev/hugepages"), None);
        let msg = problem("--huge-dir=/tmp").unwrap();
        assert!(
            msg.contains("--huge-dir /tmp is not a mounted hugetlbfs"),
            "{msg}"
        );
        assert!(problem("--huge-dir /nonexistent").is_some());
        let msg = problem("--huge-dir=/mnt/small").unwrap();
        assert!(msg.contains("limited to 2 MiB"), "{msg}");
        // --in-memory takes its pages without the mount.
        assert_eq!(problem("--in-memory --huge-dir=/tmp"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7"), vec![0, 2, 3, 4, 7]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }
}
