//! The `[conntrack]`, `[[policy]]`, `[[nat]]` and `[[pool]]` sections of the
//! config, and how they become the engine, the policy and the NAT rules.

use serde::{Deserialize, Serialize};

use ctcore::engine::{EngineConfig, Tunables};
use ctcore::helper::Helper;
use ctcore::nat::{self, Action as NatAction, Backend, Nat, Pool, Prefix};
use ctcore::policy::{Action, Policy, Rule, StateSet};
use ctcore::timeout::Timeouts;
use ctcore::tuple::{
    Addr, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

use super::{Config, ConfigError};

/// `[conntrack]`: the table and the tracker switches (like the nf_conntrack sysctls).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConntrackConfig {
    /// false: no connection tracking, policy or NAT; the appliance only routes
    /// (the baseline of `scripts/bench.sh`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Table capacity, reserved at start (nf_conntrack_max).
    #[serde(default = "default_max")]
    pub max_connections: u32,
    /// Verify L4 checksums; bad ones are INVALID (nf_conntrack_checksum).
    #[serde(default = "yes")]
    pub checksum: bool,
    /// Pick up TCP connections mid-stream (nf_conntrack_tcp_loose).
    #[serde(default = "yes")]
    pub tcp_loose: bool,
    /// Only out-of-window RSTs are INVALID (nf_conntrack_tcp_be_liberal).
    #[serde(default)]
    pub tcp_be_liberal: bool,
    /// Per-connection packet and byte counters and start time
    /// (nf_conntrack_acct and nf_conntrack_timestamp; off by default, as in
    /// the kernel): `packets=` / `bytes=` in listings, counters and age in
    /// the REST API. 40 bytes more per connection of capacity.
    #[serde(default)]
    pub accounting: bool,
    /// What the policy does when no `[[policy]]` rule matches: "accept" or "drop".
    #[serde(default = "default_policy")]
    pub policy_default: String,
    /// Timeouts in seconds, by the sysctl's name without `nf_conntrack_`
    /// (e.g. `tcp_timeout_established = 3600`, `udp_timeout = 30`).
    #[serde(default)]
    pub timeouts: std::collections::BTreeMap<String, u64>,
}

fn default_max() -> u32 {
    262_144
}
fn yes() -> bool {
    true
}
fn default_policy() -> String {
    "accept".into()
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            enabled: true,
            max_connections: default_max(),
            checksum: true,
            tcp_loose: true,
            tcp_be_liberal: false,
            accounting: false,
            policy_default: default_policy(),
            timeouts: Default::default(),
        }
    }
}

/// A `[[policy]]` rule: nftables `ct state` in a forward chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub name: String,
    /// Ingress port name; absent = any.
    #[serde(default)]
    pub in_port: Option<String>,
    /// Egress port name; absent = any.
    #[serde(default)]
    pub out_port: Option<String>,
    /// ct states, comma-separated: new, established, related, invalid, untracked.
    pub states: String,
    /// "dnat": only connections whose destination ctgate translates (nft
    /// `ct status dnat`): port forwards, pools, endpoint-independent filtering.
    #[serde(default)]
    pub status: Option<String>,
    /// Only connections with this mark: "VALUE" or "VALUE/MASK", decimal or
    /// 0x hex (nft `ct mark and MASK == VALUE`).
    #[serde(default)]
    pub mark: Option<String>,
    /// Set the connection's mark when the rule matches (nft `ct mark set`).
    #[serde(default)]
    pub set_mark: Option<u32>,
    /// Only packets of this protocol: tcp, udp, udplite, sctp, icmp, icmpv6
    /// or a number (nft `meta l4proto`).
    #[serde(default)]
    pub proto: Option<String>,
    /// Only packets to this destination port or range ("21", "8000-8080").
    #[serde(default)]
    pub dport: Option<String>,
    /// Assign a conntrack helper, "ftp" or "tftp", to the new connections
    /// the rule accepts (nft `ct helper set`).
    #[serde(default)]
    pub helper: Option<String>,
    /// "accept" or "drop".
    pub action: String,
}

/// A `[[nat]]` rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub in_port: Option<String>,
    /// Egress port (source NAT rules only).
    #[serde(default)]
    pub out_port: Option<String>,
    /// Source prefix, e.g. "192.0.2.0/24".
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default)]
    pub dst: Option<String>,
    /// tcp, udp, udplite, sctp, icmp, icmpv6 or a number.
    #[serde(default)]
    pub proto: Option<String>,
    /// Destination port or range ("80", "8000-8080").
    #[serde(default)]
    pub dport: Option<String>,
    #[serde(default)]
    pub zone: Option<u16>,
    /// masquerade | snat to ADDR[-ADDR][:PORT-PORT] [random] [persistent] |
    /// dnat to ADDR[:PORT] | dnat to pool NAME
    pub action: String,
    /// RFC 4787 endpoint-independent mapping and filtering for UDP (snat and
    /// masquerade rules): an inside endpoint keeps one outside port for all
    /// destinations, and outside hosts may send to it (allow them with a
    /// `[[policy]]` rule with `status = "dnat"`).
    #[serde(default)]
    pub endpoint_independent: bool,
}

/// A `[[pool]]` of load-balancing backends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    /// "ADDR[:PORT] [weight=N]", IPv6 in brackets when a port is given.
    pub backends: Vec<String>,
}

fn bad(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

fn port_ref(cfg: &Config, what: &str, name: &Option<String>) -> Result<Option<u16>, ConfigError> {
    name.as_ref()
        .map(|n| {
            cfg.port_index(n)
                .map(|i| i as u16)
                .ok_or_else(|| bad(format!("{what}: no port named {n:?}")))
        })
        .transpose()
}

fn proto_number(s: &str) -> Result<u8, String> {
    Ok(match s {
        "tcp" => IPPROTO_TCP,
        "udp" => IPPROTO_UDP,
        "udplite" => IPPROTO_UDPLITE,
        "sctp" => IPPROTO_SCTP,
        "icmp" => IPPROTO_ICMP,
        "icmpv6" => IPPROTO_ICMPV6,
        n => n.parse().map_err(|_| format!("unknown protocol {n:?}"))?,
    })
}

/// A rule's `proto` match (a name or a number), as `[[policy]]` and `[[nat]]`
/// spell it.
fn proto_match(what: &str, proto: &Option<String>) -> Result<Option<u8>, ConfigError> {
    proto
        .as_deref()
        .map(proto_number)
        .transpose()
        .map_err(|e| bad(format!("{what}: {e}")))
}

/// A rule's `dport` match ("21", "8000-8080"), as nft `th dport`.
fn dport_match(what: &str, dport: &Option<String>) -> Result<Option<(u16, u16)>, ConfigError> {
    dport
        .as_deref()
        .map(nat::parse_port_range)
        .transpose()
        .map_err(|e| bad(format!("{what}: {e}")))
}

/// The timeout names (the sysctls' without `nf_conntrack_`), as the config's
/// `[conntrack.timeouts]` and the REST API's /api/v1/timeouts use them.
pub const TIMEOUT_NAMES: [&str; 18] = [
    "generic_timeout",
    "tcp_timeout_syn_sent",
    "tcp_timeout_syn_recv",
    "tcp_timeout_established",
    "tcp_timeout_fin_wait",
    "tcp_timeout_close_wait",
    "tcp_timeout_last_ack",
    "tcp_timeout_time_wait",
    "tcp_timeout_close",
    "tcp_timeout_max_retrans",
    "tcp_timeout_unacknowledged",
    "udp_timeout",
    "udp_timeout_stream",
    "icmp_timeout",
    "icmpv6_timeout",
    "gre_timeout",
    "gre_timeout_stream",
    "nat_eim_timeout",
];

/// The field of `t` (milliseconds) a timeout name (see [`TIMEOUT_NAMES`]) sets.
pub fn timeout_slot<'a>(t: &'a mut Timeouts, name: &str) -> Option<&'a mut u64> {
    Some(match name {
        "generic_timeout" => &mut t.generic_ms,
        "tcp_timeout_syn_sent" => &mut t.tcp_syn_sent_ms,
        "tcp_timeout_syn_recv" => &mut t.tcp_syn_recv_ms,
        "tcp_timeout_established" => &mut t.tcp_established_ms,
        "tcp_timeout_fin_wait" => &mut t.tcp_fin_wait_ms,
        "tcp_timeout_close_wait" => &mut t.tcp_close_wait_ms,
        "tcp_timeout_last_ack" => &mut t.tcp_last_ack_ms,
        "tcp_timeout_time_wait" => &mut t.tcp_time_wait_ms,
        "tcp_timeout_close" => &mut t.tcp_close_ms,
        "tcp_timeout_max_retrans" => &mut t.tcp_retrans_ms,
        "tcp_timeout_unacknowledged" => &mut t.tcp_unack_ms,
        "udp_timeout" => &mut t.udp_unreplied_ms,
        "udp_timeout_stream" => &mut t.udp_stream_ms,
        "icmp_timeout" => &mut t.icmp_ms,
        "icmpv6_timeout" => &mut t.icmpv6_ms,
        "gre_timeout" => &mut t.gre_unreplied_ms,
        "gre_timeout_stream" => &mut t.gre_stream_ms,
        // Not a kernel sysctl: how long an endpoint-independent NAT mapping
        // outlives its last connection.
        "nat_eim_timeout" => &mut t.nat_eim_ms,
        _ => return None,
    })
}

/// The timeouts table with `[conntrack.timeouts]` applied.
pub fn timeouts(c: &ConntrackConfig) -> Result<Timeouts, ConfigError> {
    let mut t = Timeouts::default();
    for (k, &secs) in &c.timeouts {
        let slot = timeout_slot(&mut t, k).ok_or_else(|| bad(format!("[conntrack.timeouts]: unknown timeout {k:?} (use the sysctl names, e.g. tcp_timeout_established)")))?;
        *slot = secs.saturating_mul(1000);
    }
    Ok(t)
}

/// The engine settings from `[conntrack]`.
pub fn engine_config(cfg: &Config, seed: u64) -> Result<EngineConfig, ConfigError> {
    let c = &cfg.conntrack;
    if c.max_connections == 0 {
        return Err(bad("[conntrack] max_connections must be at least 1".into()));
    }
    let mut tun = Tunables {
        timeouts: timeouts(c)?,
        checksum: c.checksum,
        accounting: c.accounting,
        ..Tunables::default()
    };
    tun.tcp.loose = c.tcp_loose;
    tun.tcp.be_liberal = c.tcp_be_liberal;
    Ok(EngineConfig {
        // Conntrack off: no packet is tracked, so no table is reserved for
        // them (the smallest one stands in for the listings and counters).
        capacity_conns: if c.enabled { c.max_connections } else { 1 },
        seed,
        tunables: tun,
    })
}

/// The stateful policy from `[[policy]]` and `[conntrack] policy_default`.
pub fn policy(cfg: &Config) -> Result<Policy, ConfigError> {
    let default_action = Action::parse(&cfg.conntrack.policy_default).ok_or_else(|| {
        bad(format!(
            "[conntrack] policy_default = {:?}: use \"accept\" or \"drop\"",
            cfg.conntrack.policy_default
        ))
    })?;
    let mut rules = Vec::new();
    for (i, r) in cfg.policy.iter().enumerate() {
        let name = if r.name.is_empty() {
            format!("rule{i}")
        } else {
            r.name.clone()
        };
        let what = format!("[[policy]] {name}");
        let dnat_only = match r.status.as_deref() {
            None => false,
            Some("dnat") => true,
            Some(other) => {
                return Err(bad(format!(
                    "{what}: status {other:?}: only \"dnat\" is supported"
                )))
            }
        };
        let helper = match r.helper.as_deref() {
            None => Helper::None,
            Some(h) => Helper::parse(h).map_err(|e| bad(format!("{what}: {e}")))?,
        };
        let states = StateSet::parse(&r.states).map_err(|e| bad(format!("{what}: {e}")))?;
        if helper != Helper::None && !states.contains(ctcore::conn::CtState::New) {
            return Err(bad(format!(
                "{what}: helper {:?} is assigned to new connections: the rule's states must include \"new\"",
                r.helper.as_deref().unwrap_or_default()
            )));
        }
        if helper != Helper::None && r.action != "accept" {
            return Err(bad(format!(
                "{what}: a helper is assigned by a rule that accepts (action = \"accept\")"
            )));
        }
        rules.push(Rule {
            helper,
            proto: proto_match(&what, &r.proto)?,
            dports: dport_match(&what, &r.dport)?,
            dnat_only,
            states,
            action: Action::parse(&r.action).ok_or_else(|| {
                bad(format!(
                    "{what}: action {:?}: use \"accept\" or \"drop\"",
                    r.action
                ))
            })?,
            in_port: port_ref(cfg, &what, &r.in_port)?,
            out_port: port_ref(cfg, &what, &r.out_port)?,
            mark: r
                .mark
                .as_deref()
                .map(ctcore::policy::parse_mark)
                .transpose()
                .map_err(|e| bad(format!("{what}: {e}")))?,
            set_mark: r.set_mark,
            name,
        });
    }
    Ok(Policy {
        rules,
        default_action,
    })
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    let mut words = s.split_whitespace();
    let target = words.next().ok_or("empty backend")?;
    let mut weight = 1;
    for w in words {
        weight = w
            .strip_prefix("weight=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("backend {s:?}: expected weight=N, got {w:?}"))?;
    }
    // Reuse the action parser for ADDR[:PORT] forms.
    match NatAction::parse(&format!("dnat to {target}"), &[]) {
        Ok(NatAction::Dnat { family, addr, port }) => Ok(Backend::new(family, addr, port, weight)),
        Ok(_) => Err(format!("backend {s:?}: expected ADDR[:PORT]")),
        Err(e) => Err(format!("backend {s:?}: {e}")),
    }
}

/// The NAT rules and pools from `[[nat]]` and `[[pool]]`, or None without rules.
pub fn nat(cfg: &Config) -> Result<Option<Nat>, ConfigError> {
    if cfg.nat.is_empty() {
        return Ok(None);
    }
    let mut pools = Vec::new();
    for p in &cfg.pools {
        let backends = p
            .backends
            .iter()
            .map(|b| parse_backend(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("[[pool]] {}: {e}", p.name)))?;
        if backends.is_empty() {
            return Err(bad(format!("[[pool]] {}: no backends", p.name)));
        }
        pools.push(Pool::new(p.name.clone(), backends));
    }
    let names: Vec<&str> = cfg.pools.iter().map(|p| p.name.as_str()).collect();
    let mut rules = Vec::new();
    for (i, r) in cfg.nat.iter().enumerate() {
        let name = if r.name.is_empty() {
            format!("nat{i}")
        } else {
            r.name.clone()
        };
        let what = format!("[[nat]] {name}");
        let action =
            NatAction::parse(&r.action, &names).map_err(|e| bad(format!("{what}: {e}")))?;
        let prefix = |p: &Option<String>| {
            p.as_deref()
                .map(Prefix::parse)
                .transpose()
                .map_err(|e| bad(format!("{what}: {e}")))
        };
        let m = nat::Match {
            in_port: port_ref(cfg, &what, &r.in_port)?,
            out_port: port_ref(cfg, &what, &r.out_port)?,
            src: prefix(&r.src)?,
            dst: prefix(&r.dst)?,
            proto: proto_match(&what, &r.proto)?,
            dports: dport_match(&what, &r.dport)?,
            zone: r.zone,
        };
        if action.is_dnat() && m.out_port.is_some() {
            return Err(bad(format!(
                "{what}: a dnat rule cannot match out_port (the egress is chosen after it)"
            )));
        }
        if r.endpoint_independent && action.is_dnat() {
            return Err(bad(format!(
                "{what}: endpoint_independent applies to snat and masquerade rules"
            )));
        }
        let mut rule = nat::Rule::new(name, m, action);
        rule.endpoint_independent = r.endpoint_independent;
        rules.push(rule);
    }
    Ok(Some(Nat { rules, pools }))
}

/// The address of `port` of `family` (what masquerade uses).
pub fn port_addr(cfg: &Config, port: usize, v6: bool) -> Option<Addr> {
    let p = cfg.ports.get(port)?;
    let pre = if v6 { p.ipv6 } else { p.ipv4 }?;
    Some(Addr::from_ip(pre.addr).0)
}

/// Checks every section (called from `Config::validate`).
pub fn check(cfg: &Config) -> Result<(), ConfigError> {
    engine_config(cfg, 0)?;
    policy(cfg)?;
    nat(cfg)?;
    Ok(())
}
