//! DPDK telemetry commands (`dpdk-telemetry.py`, `--file-prefix` runs only):
//! `/ctgate/stats` (forwarding totals, drops by reason, the nf_conntrack
//! counters, table fill) and `/ctgate/ct_count` (connections, capacity).

use std::sync::Arc;

use crate::dpdk::{DpdkError, Eal};
use crate::pipeline::Shared;
use crate::stats::{SharedStats, Totals};

/// `/ctgate/stats` as (name, value) pairs.
pub fn stats_pairs(shared: &Shared, stats: &SharedStats, ports: usize) -> Vec<(String, u64)> {
    let t = Totals::sum(stats, ports);
    let mut v: Vec<(String, u64)> = vec![
        ("rx".into(), t.rx),
        ("tx".into(), t.tx),
        ("forwarded".into(), t.forwarded),
        ("dropped".into(), t.dropped),
    ];
    v.extend(t.drops.iter().map(|(k, n)| (format!("drop_{k}"), *n)));
    v.extend(
        shared
            .totals()
            .ct
            .fields()
            .iter()
            .map(|(k, n)| (format!("ct_{k}"), *n)),
    );
    v.push(("ct_connections".into(), shared.engine.table().len() as u64));
    v.push((
        "ct_capacity".into(),
        shared.engine.table().capacity() as u64,
    ));
    v
}

/// Registers the commands.
pub fn register(
    eal: &Eal,
    shared: &Arc<Shared>,
    stats: &Arc<SharedStats>,
    ports: usize,
) -> Result<(), DpdkError> {
    let (sh, st) = (shared.clone(), stats.clone());
    eal.register_telemetry(
        "/ctgate/stats",
        "ctgate counters: forwarding, drops by reason, conntrack (nf_conntrack names), table fill. No parameters",
        Box::new(move || stats_pairs(&sh, &st, ports)),
    )?;
    let sh = shared.clone();
    eal.register_telemetry(
        "/ctgate/ct_count",
        "Connections in ctgate's table, and its capacity. No parameters",
        Box::new(move || {
            vec![
                ("connections".into(), sh.engine.table().len() as u64),
                ("capacity".into(), sh.engine.table().capacity() as u64),
            ]
        }),
    )
}
