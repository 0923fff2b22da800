//! ctgate's DPDK application as a library: configuration, the EAL and ports
//! (`dpdk`), the per-lcore workers (`worker`) with the pipeline slot for
//! conntrack / policy / NAT (`pipeline`), ARP / ND (`neigh`), routing
//! (`route`), counters (`stats`), the control side (`control`), the REST
//! API with its metrics and event stream (`rest`), and state sync with an HA
//! peer (`ha`).
//!
//! Unsafe code is confined to `dpdk`; the rest of the crate denies it.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod control;
pub mod ctconfig;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod ha;
pub mod neigh;
pub mod net;
pub mod pcap;
pub mod pipeline;
pub mod rest;
pub mod route;
pub mod stats;
pub mod worker;

pub use config::Config;
pub use control::{run, Report, RunError, RunOptions};
