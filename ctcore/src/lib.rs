//! ctcore — ctgate's connection-tracking engine: what the kernel's nf_conntrack
//! does, in pure Rust, with no DPDK, no I/O and no clock of its own (the caller
//! injects `now` in milliseconds).
#![forbid(unsafe_code)]

pub mod checksum;
pub mod commit;
pub mod conn;
pub mod defrag;
pub mod engine;
pub mod event;
pub mod forward;
pub mod fuzzing;
pub mod helper;
pub mod listing;
pub mod nat;
pub mod policy;
pub mod proto;
pub mod rss;
pub mod stats;
pub mod sync;
pub mod table;
pub mod timeout;
pub mod tuple;
pub mod wire;
