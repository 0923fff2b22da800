//! ctgate's DPDK application as a library: the configuration, every section
//! of it (`config`, which imports nothing else of the crate), the EAL and
//! ports (`dpdk`), the per-lcore workers (`worker`: rx, classify, then the
//! pipeline slot for conntrack / policy / NAT in `pipeline`, then forward and
//! tx), ARP / ND (`neigh`), routing (`route`), counters (`stats`), the
//! control side (`control`), the workers' conntrack events fanned out
//! (`events`), the REST API with its metrics and event stream (`rest`), and
//! state sync with an HA peer (`ha`). Imports point one way: `config` is
//! below everything, `control` above everything.
//!
//! Unsafe code is confined to `dpdk`; the rest of the crate denies it.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod control;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod events;
pub mod ha;
pub mod neigh;
pub mod net;
pub mod pcap;
pub mod pipeline;
pub mod rest;
pub mod route;
pub mod stats;
pub mod top_sources;
pub mod verdicts;
pub mod worker;

pub use config::Config;
pub use control::{run, Report, RunError, RunOptions};
