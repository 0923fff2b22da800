//! `/metrics`: every counter in the Prometheus text format (`ctgate_*`, units
//! in the names, `_total` for counters, labels for lcore / port / reason /
//! rule). A scrape builds a fresh registry from the current counters, so
//! concurrent scrapes share nothing.

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::{Snapshot, State};

struct Out {
    registry: Registry,
}

impl Out {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
        self.registry
            .register(Box::new(c.clone()))
            .expect("each metric registered once");
        c
    }
    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name");
        self.registry
            .register(Box::new(g.clone()))
            .expect("each metric registered once");
        g
    }
}

/// The text exposition of every metric.
pub fn render(state: &State, snap: &Snapshot) -> String {
    let out = Out {
        registry: Registry::new(),
    };
    let lcores: Vec<String> = state.ctx.workers.iter().map(|l| l.to_string()).collect();
    let names = &state.ctx.port_names;

    out.gauge(
        "ctgate_uptime_seconds",
        "Seconds since the appliance started.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(state.started.elapsed().as_secs() as i64);

    // Per lcore forwarding counters.
    let rx = out.counter(
        "ctgate_rx_packets_total",
        "Packets received by the workers, per port and lcore.",
        &["port", "lcore"],
    );
    let tx = out.counter(
        "ctgate_tx_packets_total",
        "Packets transmitted by the workers, per port and lcore.",
        &["port", "lcore"],
    );
    let fwd = out.counter(
        "ctgate_forwarded_packets_total",
        "Packets routed to an egress port.",
        &["lcore"],
    );
    let drops = out.counter(
        "ctgate_dropped_packets_total",
        "Packets freed instead of transmitted, by reason.",
        &["reason", "lcore"],
    );
    let sent = out.counter(
        "ctgate_generated_packets_total",
        "Packets the appliance created or answered itself, by kind.",
        &["kind", "lcore"],
    );
    let handoff = out.counter(
        "ctgate_handoff_packets_total",
        "Software dispatch: packets a worker handed to their connection's owner (direction=out) or took over from another worker (direction=in), per lcore.",
        &["direction", "lcore"],
    );
    let neigh = out.counter(
        "ctgate_neighbour_events_total",
        "Neighbour table: stale entries refreshed by a new solicitation (event=refresh), ARP replies / neighbour advertisements ignored because ctgate did not ask (event=unsolicited), resolutions given up after neighbour_timeout_ms unanswered (event=failed).",
        &["event", "lcore"],
    );
    let heartbeats = out.counter(
        "ctgate_worker_heartbeats_total",
        "A worker's heartbeat: one a millisecond while its poll loop runs, traffic or not (a stalled worker's rate falls to 0).",
        &["lcore"],
    );
    let busy = out.counter(
        "ctgate_busy_cycles_total",
        "TSC cycles the workers spent on poll-loop iterations that received packets or took handed-over ones.",
        &["lcore"],
    );
    let busy_pkts = out.counter(
        "ctgate_busy_packets_total",
        "Packets of the bursts counted in ctgate_busy_cycles_total.",
        &["lcore"],
    );
    let stage_cycles = out.counter(
        "ctgate_stage_cycles_total",
        "ctgate run --profile-stages: TSC cycles of the workers' busy poll-loop iterations up to 100 us, by stage (rx, classify, ct_parse, ct_prefetch, ct_track, ct_rewrite, forward, tx, other).",
        &["stage", "lcore"],
    );
    let stage_pkts = out.counter(
        "ctgate_stage_packets_total",
        "Packets of the iterations counted in ctgate_stage_cycles_total.",
        &["lcore"],
    );
    for (i, t) in snap.lcores.iter().enumerate() {
        let l = lcores[i].as_str();
        for (p, name) in names.iter().enumerate() {
            rx.with_label_values(&[name.as_str(), l])
                .inc_by(t.rx_per_port[p]);
            tx.with_label_values(&[name.as_str(), l])
                .inc_by(t.tx_per_port[p]);
        }
        fwd.with_label_values(&[l]).inc_by(t.forwarded);
        for (reason, v) in &t.drops {
            drops.with_label_values(&[*reason, l]).inc_by(*v);
        }
        for (kind, v) in [
            ("arp_request", t.arp_requests_sent),
            ("arp_reply", t.arp_replies_sent),
            ("nd_solicit", t.nd_solicits_sent),
            ("nd_advert", t.nd_adverts_sent),
            ("echo_reply", t.echo_replies_sent),
            ("icmp_error", t.icmp_errors_sent),
        ] {
            sent.with_label_values(&[kind, l]).inc_by(v);
        }
        handoff.with_label_values(&["out", l]).inc_by(t.handoff_out);
        handoff.with_label_values(&["in", l]).inc_by(t.handoff_in);
        heartbeats.with_label_values(&[l]).inc_by(t.heartbeats);
        neigh
            .with_label_values(&["refresh", l])
            .inc_by(t.neigh_refreshes);
        neigh
            .with_label_values(&["unsolicited", l])
            .inc_by(t.neigh_unsolicited);
        neigh
            .with_label_values(&["failed", l])
            .inc_by(t.neigh_failed);
        busy.with_label_values(&[l]).inc_by(t.busy_cycles);
        busy_pkts.with_label_values(&[l]).inc_by(t.busy_packets);
        if t.stage_packets > 0 {
            for (stage, v) in &t.stage_cycles {
                stage_cycles.with_label_values(&[*stage, l]).inc_by(*v);
            }
            stage_pkts.with_label_values(&[l]).inc_by(t.stage_packets);
        }
    }

    // Conntrack: the /proc/net/stat/nf_conntrack counters, per lcore.
    if let Some(first) = snap.ct.first() {
        // events_dropped is ctgate_conntrack_events_dropped_total{stage="worker"}.
        for (field, _) in first
            .ct
            .fields()
            .into_iter()
            .filter(|(f, _)| *f != "events_dropped")
        {
            let c = out.counter(
                &format!("ctgate_conntrack_{field}_total"),
                &format!("Conntrack counter {field} (as /proc/net/stat/nf_conntrack), per lcore."),
                &["lcore"],
            );
            for (i, p) in snap.ct.iter().enumerate() {
                let v =
                    p.ct.fields()
                        .iter()
                        .find(|(f, _)| *f == field)
                        .map_or(0, |(_, v)| *v);
                c.with_label_values(&[lcores[i].as_str()]).inc_by(v);
            }
        }
    }
    // Conntrack helpers (only when a rule assigns one): expectations as
    // /proc/net/stat/nf_conntrack's expect_* fields, and what helpers did.
    if state.ctx.shared.engine.helpers_enabled() {
        if let Some(first) = snap.ct.first() {
            for (field, _) in first.helpers.fields() {
                let name = field.strip_prefix("helper_").unwrap_or(field);
                let c = out.counter(
                    &format!("ctgate_conntrack_helper_{name}_total"),
                    &format!("Conntrack helper counter {field}, per lcore."),
                    &["lcore"],
                );
                for (i, p) in snap.ct.iter().enumerate() {
                    let v = p
                        .helpers
                        .fields()
                        .iter()
                        .find(|(f, _)| *f == field)
                        .map_or(0, |(_, v)| *v);
                    c.with_label_values(&[lcores[i].as_str()]).inc_by(v);
                }
            }
        }
    }
    let held = out.gauge(
        "ctgate_frag_held_fragments",
        "Fragments held for reassembly now, per lcore.",
        &["lcore"],
    );
    for (i, p) in snap.ct.iter().enumerate() {
        held.with_label_values(&[lcores[i].as_str()])
            .set(p.frags_held as i64);
    }
    let table = &state.ctx.shared.engine.table();
    out.gauge(
        "ctgate_conntrack_connections",
        "Connections in the table.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(table.len() as i64);
    out.gauge(
        "ctgate_conntrack_capacity_connections",
        "Table capacity (nf_conntrack_max).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(table.capacity() as i64);
    let mem = out.gauge(
        "ctgate_conntrack_table_bytes",
        "The table's large regions by the pages they are on: 1g and 2m (hugetlb pools), transparent (transparent huge pages advised).",
        &["pages"],
    );
    let placed = &state.ctx.shared.table_memory;
    for (pages, bytes) in [
        ("1g", placed.on_1g),
        ("2m", placed.on_2m),
        ("transparent", placed.transparent),
    ] {
        mem.with_label_values(&[pages]).set(bytes as i64);
    }
    let ports = out.gauge(
        "ctgate_nat_ports_in_use",
        "Source NAT ports (and ICMP ids) some connection uses, per lcore (its table stripes).",
        &["lcore"],
    );
    let eim = state.ctx.shared.eim();
    out.gauge(
        "ctgate_nat_eim_mappings",
        "Endpoint-independent NAT mappings held (live, and lapsed ones not yet swept).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(eim.mappings as i64);
    out.gauge(
        "ctgate_nat_eim_capacity_mappings",
        "The most endpoint-independent NAT mappings the table holds (0: no rule makes them).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(eim.limit as i64);
    out.counter(
        "ctgate_nat_eim_full_total",
        "New endpoint-independent mappings refused because the maps were full (the connection was translated without one).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(eim.full);
    let verdicts = &state.ctx.shared.verdicts;
    out.gauge(
        "ctgate_verdict_cache_entries",
        "Routing + policy answers cached for known connections (at most 65535).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(verdicts.entries() as i64);
    out.counter(
        "ctgate_verdict_cache_full_total",
        "Answers the verdict cache had no room for (their connections are decided per packet).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(verdicts.full());
    out.counter(
        "ctgate_verdict_cache_answered_total",
        "Packets routing and policy answered from their connection's cached verdict.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(snap.ct_total.verdicts_answered);
    let owned = out.gauge(
        "ctgate_worker_connections",
        "Connections in the table stripes a worker owns, per lcore.",
        &["lcore"],
    );
    for (i, l) in lcores.iter().enumerate() {
        ports
            .with_label_values(&[l.as_str()])
            .set(state.ctx.shared.nat_ports(Some(i)).in_use as i64);
        owned
            .with_label_values(&[l.as_str()])
            .set(state.ctx.shared.connections(Some(i)) as i64);
    }
    out.gauge(
        "ctgate_conntrack_table_pressure",
        "1 while early_drop or insert_failed rose within the last minute.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(snap.pressure_recent as i64);
    let ev = out.counter(
        "ctgate_conntrack_events_dropped_total",
        "Connection events lost: in a worker (its queue full) or for a slow subscriber.",
        &["stage"],
    );
    ev.with_label_values(&["worker"])
        .inc_by(snap.worker_events_dropped);
    ev.with_label_values(&["subscriber"])
        .inc_by(state.events.subscriber_dropped());
    out.gauge(
        "ctgate_conntrack_event_subscribers",
        "Clients listening to /api/v1/conntrack/events.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(state.events.subscribers() as i64);

    // What a long run must give back: mbufs, neighbours, API connections
    // (scripts/soak.sh watches them).
    if let Some(pool) = state.ctx.pool.upgrade() {
        out.gauge(
            "ctgate_mempool_mbufs_in_use",
            "Packet buffers taken from the mempool and not returned (RX/TX rings, in flight, waiting for a neighbour); the per-lcore caches count as free.",
            &[],
        )
        .with_label_values::<&str>(&[])
        .set(i64::from(pool.in_use()));
        out.gauge(
            "ctgate_mempool_capacity_mbufs",
            "Packet buffers in the mempool (mempool_mbufs).",
            &[],
        )
        .with_label_values::<&str>(&[])
        .set(i64::from(pool.size()));
        out.counter(
            "ctgate_mempool_dry_total",
            "Times the mbuf pool ran dry (fewer free buffers than a receive burst per worker; logged too): the ports drop what they receive meanwhile.",
            &[],
        )
        .with_label_values::<&str>(&[])
        .inc_by(state.ctx.shared.pool_dry.load(std::sync::atomic::Ordering::Relaxed));
    }
    let grace = crate::neigh::STALE_GRACE_MS * (state.ctx.tsc_hz / 1000);
    let n = state.ctx.neigh.count(crate::dpdk::tsc(), grace);
    let neigh_entries = out.gauge(
        "ctgate_neighbour_entries",
        "Neighbour table entries: state=fresh (learned within neighbour_reachable_ms, or configured), stale (used while asked again), incomplete (asked for, no answer yet).",
        &["state"],
    );
    for (s, v) in [
        ("fresh", n.fresh),
        ("stale", n.stale),
        ("incomplete", n.incomplete),
    ] {
        neigh_entries.with_label_values(&[s]).set(v as i64);
    }
    out.counter(
        "ctgate_neighbour_evictions_total",
        "Neighbour entries replaced to make room for another (their probe window of the fixed table was full).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(state.ctx.neigh.evicted());
    out.gauge(
        "ctgate_rest_connections",
        "Client connections the REST API holds open (event streams and this scrape included).",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(state.open_connections() as i64);
    let refused = out.counter(
        "ctgate_rest_refused_total",
        "Clients the REST API turned away at a bound: connections beyond its 512 (reason=connections, closed at accept), event streams beyond [rest] max_subscribers (reason=subscribers, 429).",
        &["reason"],
    );
    let (connections, subscribers) = state.refusals();
    refused
        .with_label_values(&["connections"])
        .inc_by(connections);
    refused
        .with_label_values(&["subscribers"])
        .inc_by(subscribers);

    if let Some(ha) = &state.ctx.ha {
        sync_metrics(&out, ha);
    }

    // Policy and NAT.
    let pol = out.counter(
        "ctgate_policy_packets_total",
        "Packets decided by each [[policy]] rule (and the default).",
        &["rule"],
    );
    for (rule, v) in state
        .ctx
        .shared
        .policy
        .labels()
        .iter()
        .zip(&snap.policy_hits)
    {
        pol.with_label_values(&[rule.as_str()]).inc_by(*v);
    }
    if let Some(nat) = state.ctx.shared.engine.nat() {
        let tr = out.counter(
            "ctgate_nat_translations_total",
            "Connections each [[nat]] rule translated.",
            &["rule"],
        );
        let oop = out.counter(
            "ctgate_nat_out_of_ports_total",
            "New connections dropped because the rule had no free port or id.",
            &["rule"],
        );
        for r in &nat.rules {
            tr.with_label_values(&[r.name.as_str()])
                .inc_by(r.hits.get());
            oop.with_label_values(&[r.name.as_str()])
                .inc_by(r.out_of_ports.get());
        }
        let h = out.gauge(
            "ctgate_nat_backend_healthy",
            "1 if a pool backend takes new connections.",
            &["pool", "backend"],
        );
        for p in &nat.pools {
            for b in &p.backends {
                let name = super::backend_name(b);
                h.with_label_values(&[p.name.as_str(), name.as_str()])
                    .set(b.healthy.load(std::sync::atomic::Ordering::Relaxed) as i64);
            }
        }
    }

    // Ports, as the NIC counts.
    let up = out.gauge(
        "ctgate_port_link_up",
        "1 if the port's link is up.",
        &["port"],
    );
    let speed = out.gauge(
        "ctgate_port_link_speed_bytes_per_second",
        "The port's link speed, in bytes per second (Prometheus's base unit; x 8 for bits); 0 if the PMD does not know it.",
        &["port"],
    );
    let nic = [
        (
            "ctgate_port_rx_packets_total",
            "Packets the port received (NIC counter).",
        ),
        (
            "ctgate_port_tx_packets_total",
            "Packets the port sent (NIC counter).",
        ),
        (
            "ctgate_port_rx_bytes_total",
            "Bytes the port received (NIC counter).",
        ),
        (
            "ctgate_port_tx_bytes_total",
            "Bytes the port sent (NIC counter).",
        ),
        (
            "ctgate_port_rx_missed_packets_total",
            "Packets the NIC dropped: no RX descriptor free.",
        ),
        ("ctgate_port_rx_errors_total", "Erroneous packets received."),
        (
            "ctgate_port_tx_errors_total",
            "Packets the port failed to send.",
        ),
        (
            "ctgate_port_rx_nombuf_total",
            "RX mbuf allocation failures.",
        ),
    ]
    .map(|(n, h)| out.counter(n, h, &["port"]));
    for p in &snap.ports {
        let l = [p.name.as_str()];
        up.with_label_values(&l).set(p.link_up as i64);
        speed
            .with_label_values(&l)
            // (DPDK's RTE_ETH_SPEED_NUM_UNKNOWN, all ones: 0.)
            .set(if p.speed_mbps == u32::MAX {
                0
            } else {
                i64::from(p.speed_mbps) * 1_000_000 / 8
            });
        if p.vlan != 0 {
            // A VLAN sub-port: its frames are in its parent's NIC counters.
            continue;
        }
        let s = &p.stats;
        for (c, v) in nic.iter().zip([
            s.ipackets,
            s.opackets,
            s.ibytes,
            s.obytes,
            s.imissed,
            s.ierrors,
            s.oerrors,
            s.rx_nombuf,
        ]) {
            c.with_label_values(&l).inc_by(v);
        }
    }

    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&out.registry.gather(), &mut buf)
        .expect("text encoding of plain metrics");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

/// `[sync]`: the state sync with the HA peer.
fn sync_metrics(out: &Out, ha: &crate::ha::Ha) {
    use std::sync::atomic::Ordering::Relaxed;
    let p = *ha.protocol.lock().unwrap_or_else(|e| e.into_inner());
    let c = &p.counters;
    let msgs = out.counter(
        "ctgate_sync_messages_total",
        "conntrackd protocol messages sent to and received from the HA peer (state and control; retransmissions included in sent).",
        &["direction"],
    );
    msgs.with_label_values(&["sent"]).inc_by(c.sent);
    msgs.with_label_values(&["received"]).inc_by(c.received);
    let dg = out.counter(
        "ctgate_sync_datagrams_total",
        "UDP datagrams of the sync (several messages each).",
        &["direction"],
    );
    dg.with_label_values(&["sent"]).inc_by(c.datagrams_sent);
    dg.with_label_values(&["received"])
        .inc_by(ha.counters.datagrams_received.load(Relaxed));
    let single = |name: &str, help: &str, v: u64| {
        out.counter(name, help, &[])
            .with_label_values::<&str>(&[])
            .inc_by(v)
    };
    single(
        "ctgate_sync_retransmitted_total",
        "Messages sent again because the peer asked (NACK).",
        c.retransmitted,
    );
    single(
        "ctgate_sync_lost_total",
        "Connection messages dropped unacknowledged from the full resend queue (a resync recovers them).",
        c.lost,
    );
    single(
        "ctgate_sync_gaps_total",
        "Sequence numbers the peer skipped (asked again with a NACK).",
        c.gaps,
    );
    single(
        "ctgate_sync_malformed_total",
        "Sync messages that could not be decoded, or connections conntrackd's format cannot carry.",
        c.malformed,
    );
    let rs = out.counter(
        "ctgate_sync_resyncs_total",
        "Whole-table resyncs: asked by the peer (answered) or asked of it (requested).",
        &["direction"],
    );
    rs.with_label_values(&["answered"]).inc_by(c.resyncs);
    rs.with_label_values(&["requested"])
        .inc_by(c.resyncs_requested);
    single(
        "ctgate_sync_events_lost_total",
        "Local connection changes that never reached the sync (its event queue overflowed; the whole table was sent again).",
        ha.counters.events_lost.load(Relaxed),
    );
    single(
        "ctgate_sync_cache_full_total",
        "Connections the peer reported that the external cache had no room for ([sync] cache_limit).",
        ha.counters.cache_full.load(Relaxed),
    );
    single(
        "ctgate_sync_rate_limited_total",
        "Times messages waited for [sync] max_messages_per_second.",
        ha.counters.rate_limited.load(Relaxed),
    );
    single(
        "ctgate_sync_send_errors_total",
        "Datagrams the socket refused to send.",
        ha.counters.send_errors.load(Relaxed),
    );
    single(
        "ctgate_sync_takeovers_total",
        "Commits of the external cache into the table (manual and automatic).",
        ha.takeovers.load(Relaxed),
    );
    single(
        "ctgate_sync_committed_total",
        "Connections committed into the table at takeovers.",
        ha.committed_total.load(Relaxed),
    );
    let gauge = |name: &str, help: &str, v: i64| {
        out.gauge(name, help, &[])
            .with_label_values::<&str>(&[])
            .set(v)
    };
    let cache = ha
        .cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entries
        .len();
    gauge(
        "ctgate_sync_external_cache_connections",
        "Connections the peer reported, held for a takeover.",
        cache as i64,
    );
    gauge(
        "ctgate_sync_peer_alive",
        "1 while the peer is heard (within [sync] alive_timeout_ms).",
        i64::from(ha.peer_alive.load(Relaxed)),
    );
    gauge(
        "ctgate_sync_resend_queue_messages",
        "Messages sent and not yet acknowledged by the peer (FTFW).",
        p.resend_queue as i64,
    );
    gauge(
        "ctgate_sync_unacked_connections",
        "Connections sent and not yet acknowledged by the peer (FTFW).",
        p.unacked_conns as i64,
    );
    gauge(
        "ctgate_sync_transmit_queue_messages",
        "Messages waiting to be sent.",
        p.transmit_queue as i64,
    );
}
