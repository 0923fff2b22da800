//! High availability: state sync with a peer in conntrackd's protocol, the
//! external cache of what the peer reported, and the takeover that commits
//! it into the table (`conntrackd -c`).
//!
//! Everything here runs on the control side (the REST runtime's thread, on
//! the control lcore's CPU), never on a worker: the sync socket is a kernel
//! UDP socket on a management interface; the local connections' changes come
//! from the workers' event queues (the same ones `conntrack -E` reads); the
//! commit inserts through the table's guard like the REST API's deletes.

pub mod task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use ctcore::commit::{CommitError, Learnt};
use ctcore::engine::Worker;
use ctcore::tuple::Tuple;
use serde::{Deserialize, Serialize};

use crate::pipeline::Shared;
use crate::rest::events::Hub;

/// `[sync]`: state sync with the other box of an HA pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default)]
    pub enabled: bool,
    /// "ftfw" (reliable: sequence numbers, acknowledgements, retransmission,
    /// resync) or "notrack" (best effort), as conntrackd's `Sync { Mode }`.
    #[serde(default = "default_mode")]
    pub mode: SyncMode,
    /// The local address and UDP port (conntrackd's `IPv4_address` and `Port`;
    /// default port 3780). Use a management network, not a data port.
    pub bind: Option<String>,
    /// Where messages go: the peer's address and port (unicast), or a
    /// multicast group (conntrackd's `Multicast { IPv4_address }`).
    pub peer: Option<String>,
    /// For a multicast `peer`: the local interface's address to join on.
    #[serde(default)]
    pub multicast_interface: Option<String>,
    /// "active": forwards from the start; "backup": starts as the standby
    /// box, dropping what it receives and answering no ARP / ND for the
    /// ports' addresses, until its takeover.
    #[serde(default)]
    pub role: Role,
    /// "manual": the backup commits on `ctgate ha takeover` (or POST
    /// /api/v1/ha/commit); "auto": also when it stops hearing the peer for
    /// `alive_timeout_ms`.
    #[serde(default)]
    pub takeover: Takeover,
    /// How often an idle sender says it is alive (conntrackd's ALIVE
    /// messages, its `ACKWindowSize`-independent keepalive).
    #[serde(default = "default_alive_interval")]
    pub alive_interval_ms: u64,
    /// Silence after which the peer counts as gone.
    #[serde(default = "default_alive_timeout")]
    pub alive_timeout_ms: u64,
    /// Most messages sent per second (new connections beyond it wait in the
    /// queue; the data plane never waits for sync).
    #[serde(default = "default_rate")]
    pub max_messages_per_second: u64,
    /// Most messages kept for retransmission (FTFW); the oldest beyond it are
    /// lost, counted, and the peer resyncs.
    #[serde(default = "default_resend_queue")]
    pub resend_queue: usize,
    /// Most connections held in the external cache (default: the table's
    /// `max_connections`).
    #[serde(default)]
    pub cache_limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    #[default]
    Ftfw,
    Notrack,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Active,
    Backup,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Takeover {
    #[default]
    Manual,
    Auto,
}

fn default_mode() -> SyncMode {
    SyncMode::Ftfw
}
fn default_alive_interval() -> u64 {
    1000
}
fn default_alive_timeout() -> u64 {
    3000
}
fn default_rate() -> u64 {
    100_000
}
fn default_resend_queue() -> usize {
    131_072
}

/// The commit's NEW events buffered between two hand-overs to the event hub.
const COMMIT_EVENTS: usize = 1024;

/// conntrackd's default port.
pub const DEFAULT_PORT: u16 = 3780;

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: false,
            mode: SyncMode::Ftfw,
            bind: None,
            peer: None,
            multicast_interface: None,
            role: Role::Active,
            takeover: Takeover::Manual,
            alive_interval_ms: default_alive_interval(),
            alive_timeout_ms: default_alive_timeout(),
            max_messages_per_second: default_rate(),
            resend_queue: default_resend_queue(),
            cache_limit: None,
        }
    }
}

/// An address with conntrackd's port when none is given.
fn socket_addr(what: &str, s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        .map_err(|_| {
            format!("[sync] {what} = {s:?} is not an address (\"192.0.2.1\" or \"192.0.2.1:3780\")")
        })
}

impl SyncConfig {
    /// The checked addresses: (bind, peer, multicast interface).
    pub fn addrs(&self) -> Result<(SocketAddr, SocketAddr, Option<std::net::Ipv4Addr>), String> {
        let bind = socket_addr(
            "bind",
            self.bind
                .as_deref()
                .ok_or("[sync] enabled needs bind = \"<local address>[:port]\"")?,
        )?;
        let peer = socket_addr(
            "peer",
            self.peer.as_deref().ok_or(
                "[sync] enabled needs peer = \"<peer address or multicast group>[:port]\"",
            )?,
        )?;
        if bind.is_ipv4() != peer.is_ipv4() {
            return Err("[sync] bind and peer must be of one IP version".into());
        }
        let iface =
            match (&self.multicast_interface, peer.ip().is_multicast()) {
                (Some(s), true) => Some(s.parse().map_err(|_| {
                    format!("[sync] multicast_interface = {s:?} is not an IPv4 address")
                })?),
                (Some(_), false) => {
                    return Err("[sync] multicast_interface is only for a multicast peer".into())
                }
                (None, true) if peer.is_ipv4() => return Err(
                    "[sync] a multicast peer needs multicast_interface = \"<local IPv4 address>\""
                        .into(),
                ),
                (None, _) => None,
            };
        Ok((bind, peer, iface))
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        self.addrs()?;
        if self.alive_interval_ms == 0 || self.alive_timeout_ms <= self.alive_interval_ms {
            return Err(format!(
                "[sync] alive_timeout_ms ({}) must be above alive_interval_ms ({}), which must be above 0",
                self.alive_timeout_ms, self.alive_interval_ms
            ));
        }
        if self.max_messages_per_second == 0 || self.resend_queue == 0 {
            return Err("[sync] max_messages_per_second and resend_queue must be above 0".into());
        }
        Ok(())
    }
}

/// One connection the peer reported.
#[derive(Debug, Clone, Copy)]
pub struct Cached {
    pub learnt: Learnt,
    /// When it was last reported (ms, the control clock).
    pub at_ms: u64,
}

/// What the peer reported, keyed by original tuple (conntrackd's external cache).
#[derive(Debug, Default)]
pub struct ExternalCache {
    pub entries: HashMap<Tuple, Cached>,
    pub limit: usize,
}

impl ExternalCache {
    /// NEW or UPDATE from the peer; false if the cache is full.
    pub fn put(&mut self, learnt: Learnt, at_ms: u64) -> bool {
        if self.entries.len() >= self.limit && !self.entries.contains_key(&learnt.orig) {
            return false;
        }
        self.entries.insert(learnt.orig, Cached { learnt, at_ms });
        true
    }

    /// DESTROY from the peer.
    pub fn remove(&mut self, orig: &Tuple) -> bool {
        self.entries.remove(orig).is_some()
    }
}

/// The task's own counters (the protocol's are in [`Protocol`]).
#[derive(Debug, Default)]
pub struct Counters {
    /// Local changes that never reached the sync (the event queue was
    /// full): the whole table is sent again instead.
    pub events_lost: AtomicU64,
    /// Reports the external cache had no room for.
    pub cache_full: AtomicU64,
    /// Times messages waited for `max_messages_per_second`.
    pub rate_limited: AtomicU64,
    /// Datagrams received from the peer.
    pub datagrams_received: AtomicU64,
    pub send_errors: AtomicU64,
}

/// The protocol's counters and queues, as the task last published them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Protocol {
    pub counters: ctcore::sync::Counters,
    pub resend_queue: usize,
    /// Connections sent and not yet acknowledged by the peer (FTFW; the
    /// resend queue also holds the control messages awaiting an ACK).
    pub unacked_conns: usize,
    pub transmit_queue: usize,
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommitReport {
    pub committed: u64,
    /// Already in the table (a connection this box tracks itself).
    pub exists: u64,
    pub table_full: u64,
    pub invalid: u64,
}

/// The HA state shared by the sync task, the REST API and the metrics.
pub struct Ha {
    pub cfg: SyncConfig,
    pub cache: Mutex<ExternalCache>,
    pub counters: Counters,
    pub protocol: Mutex<Protocol>,
    /// When the peer was last heard (control clock, ms); 0: never.
    pub last_heard_ms: AtomicU64,
    /// The peer is being heard (set on each datagram, cleared by the alive timeout).
    pub peer_alive: AtomicBool,
    /// Commits done (manual and automatic).
    pub takeovers: AtomicU64,
    pub committed_total: AtomicU64,
    /// Set by POST /api/v1/ha/resync: the task asks the peer for its table.
    pub resync_wanted: AtomicBool,
    /// The conntrack worker context commits run in (their NEW events).
    committer: Mutex<Worker>,
}

impl Ha {
    pub fn new(cfg: SyncConfig, shared: &Shared, default_limit: usize) -> Ha {
        let limit = cfg.cache_limit.unwrap_or(default_limit);
        Ha {
            cfg,
            cache: Mutex::new(ExternalCache {
                entries: HashMap::new(),
                limit,
            }),
            counters: Counters::default(),
            protocol: Mutex::default(),
            last_heard_ms: AtomicU64::new(0),
            peer_alive: AtomicBool::new(false),
            takeovers: AtomicU64::new(0),
            committed_total: AtomicU64::new(0),
            resync_wanted: AtomicBool::new(false),
            committer: Mutex::new(shared.engine.worker(COMMIT_EVENTS)),
        }
    }

    /// The task's view of the protocol, for the API and metrics.
    pub fn publish(&self, ep: &ctcore::sync::Endpoint) {
        *self.protocol.lock().unwrap_or_else(|e| e.into_inner()) = Protocol {
            counters: *ep.counters(),
            resend_queue: ep.resend_queue_len(),
            unacked_conns: ep.unacked_conns(),
            transmit_queue: ep.transmit_queue_len(),
        };
    }

    /// Back to standby (keepalived's notify_backup / notify_fault): the
    /// packets that still come are dropped, ARP / ND unanswered; the
    /// table is kept (the peer's resync brings it up to date).
    pub fn standby(&self, shared: &Shared) {
        if !shared.standby.swap(true, Ordering::Relaxed) {
            tracing::info!("sync: standby");
        }
    }

    /// Commits the external cache into the table (`conntrackd -c`), then
    /// leaves standby and has the ports' addresses announced. Each
    /// connection gets the timeout the peer last reported, less the time
    /// since. The cache is kept: the peer, if it comes back, goes on
    /// reporting, and a second commit finds what is already in the table.
    pub fn commit(&self, shared: &Shared, hub: &Hub, now_ms: u64) -> CommitReport {
        let entries: Vec<Cached> = {
            let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.entries.values().copied().collect()
        };
        let mut w = self.committer.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = CommitReport::default();
        for e in entries {
            let mut l = e.learnt;
            let waited = now_ms.saturating_sub(e.at_ms);
            // A connection whose timeout ran out since gets one second: the
            // peer kept it (no DESTROY came), so a packet may still be due.
            l.timeout_ms = l.timeout_ms.saturating_sub(waited).max(1000);
            // (A commit adds at most three: two expired holders, its NEW.)
            if w.events.len() + 3 > COMMIT_EVENTS {
                w.events.drain(|e| hub.publish(e));
            }
            match shared.engine.commit(&mut w, now_ms, &l) {
                Ok(_) => r.committed += 1,
                Err(CommitError::Exists) => r.exists += 1,
                Err(CommitError::Full) => r.table_full += 1,
                Err(CommitError::Invalid(why)) => {
                    tracing::debug!(why, "sync: a cached connection cannot be committed");
                    r.invalid += 1
                }
            }
        }
        // The committed connections are this box's now: their NEW events go
        // to the event streams and, like conntrackd's after `-c` (the
        // kernel's events), to the peer.
        w.events.drain(|e| hub.publish(e));
        hub.lost(std::mem::take(&mut w.events.dropped));
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        self.committed_total
            .fetch_add(r.committed, Ordering::Relaxed);
        // Then the traffic may come: forward, and tell the neighbours.
        if shared.standby.swap(false, Ordering::Relaxed) {
            tracing::info!("sync: active (left standby)");
        }
        shared.announce.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            committed = r.committed,
            exists = r.exists,
            table_full = r.table_full,
            invalid = r.invalid,
            "sync: external cache committed"
        );
        r
    }
}
