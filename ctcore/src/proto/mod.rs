//! Per-protocol trackers (the kernel's l4proto `packet` / `new` methods).

pub mod sctp;
pub mod tcp;
