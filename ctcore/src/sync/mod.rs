//! HA state sync in conntrackd's wire format, so that ctgate pairs with
//! itself or with a Linux firewall running conntrackd (conntrack-tools).
//!
//! - [`wire`]: the messages (`struct nethdr`, `NTA_*` attributes), encoded
//!   and decoded; decoding never panics and never reads out of bounds.
//! - [`ftfw`]: the FTFW and NOTRACK reliability protocols as pure logic
//!   (sequence numbers, ACK/NACK, resend queue, ALIVE, RESYNC), with the
//!   time passed in.
//!
//! The socket, the table walk for a resync and the external cache are the
//! caller's (the appliance's control thread). See docs/ha-sync.md.

pub mod ftfw;
pub mod wire;

pub use ftfw::{Config, Counters, Endpoint, Event, Mode};
pub use wire::{messages, Body, CtEvent, L4State, Message, NatBinding, SyncConn, WireError};

/// `before(seq1, seq2)` of conntrack-tools' network.h (from the kernel's
/// net/tcp.h): `a` comes before `b` in wrapping sequence space.
pub fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `after(a, b)`: `a` comes after `b`.
pub fn seq_after(a: u32, b: u32) -> bool {
    seq_before(b, a)
}
