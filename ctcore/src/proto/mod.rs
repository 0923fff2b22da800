//! Per-protocol trackers (the kernel's l4proto `new` / `packet` methods).

pub mod generic;
pub mod icmp;
pub mod sctp;
pub mod tcp;
pub mod udp;

/// What a stateless tracker decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accept; the connection expires `timeout_ms` from now.
    Accept { timeout_ms: u64 },
    /// INVALID (the kernel's -NF_ACCEPT): no connection is attached.
    Invalid(&'static str),
}
