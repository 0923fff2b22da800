//! The `[sync]` section: state sync with the other box of an HA pair (the
//! peer, the role, the takeover and the sync's bounds).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

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
