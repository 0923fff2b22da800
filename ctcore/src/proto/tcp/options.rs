//! TCP options as conntrack reads them: window scale and SACK-permitted
//! from a SYN (`tcp_options`), the highest SACK edge (`tcp_sack`).

use super::window::after;
use super::{TcpPeer, TcpSegment};

/// The option area as `skb_header_pointer` would give it: `None` when there
/// is none or it cannot be read.
fn option_bytes<'a>(seg: &TcpSegment<'a>) -> Option<&'a [u8]> {
    let len = usize::from(seg.info.header_len).checked_sub(20)?;
    if len == 0 {
        return None;
    }
    seg.options.get(..len)
}

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;
const TCPOPT_SACK_PERM: u8 = 4;
const TCPOPT_SACK: u8 = 5;
const TCPOPT_TIMESTAMP: u8 = 8;
const TCP_MAX_WSCALE: u8 = 14;

/// Walks TCP options as the kernel's option loops do, calling `f(kind, body)`
/// for each well-formed option until EOL or a malformed one.
#[inline]
fn walk_options(opts: &[u8], mut f: impl FnMut(u8, &[u8]) -> bool) {
    let mut i = 0;
    while i < opts.len() {
        let kind = opts[i];
        match kind {
            TCPOPT_EOL => return,
            TCPOPT_NOP => i += 1,
            _ => {
                let left = opts.len() - i;
                if left < 2 {
                    return;
                }
                let size = usize::from(opts[i + 1]);
                if size < 2 || size > left {
                    return;
                }
                if !f(kind, &opts[i + 2..i + size]) {
                    return;
                }
                i += size;
            }
        }
    }
}

/// `tcp_options`: window scale and SACK-permitted into `peer`.
pub(super) fn tcp_options(seg: &TcpSegment<'_>, peer: &mut TcpPeer) {
    let Some(opts) = option_bytes(seg) else {
        return;
    };
    peer.td_scale = 0;
    peer.flags &= TcpPeer::FLAG_BE_LIBERAL;
    walk_options(opts, |kind, body| {
        if kind == TCPOPT_SACK_PERM && body.is_empty() {
            peer.flags |= TcpPeer::FLAG_SACK_PERM;
        } else if kind == TCPOPT_WINDOW && body.len() == 1 {
            peer.td_scale = body[0].min(TCP_MAX_WSCALE);
            peer.flags |= TcpPeer::FLAG_WINDOW_SCALE;
        }
        true
    });
}

/// `tcp_sack`: raises `sack` to the highest right edge of the first SACK option.
#[inline]
pub(super) fn tcp_sack(seg: &TcpSegment<'_>, sack: &mut u32) {
    let Some(opts) = option_bytes(seg) else {
        return;
    };
    // Timestamp-only fast path: NOP NOP TIMESTAMP(10).
    if opts.len() == 12 && opts[..4] == [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10] {
        return;
    }
    walk_options(opts, |kind, body| {
        if kind == TCPOPT_SACK && body.len() >= 8 && body.len() % 8 == 0 {
            for block in body.chunks_exact(8) {
                let right = u32::from_be_bytes([block[4], block[5], block[6], block[7]]);
                if after(right, *sack) {
                    *sack = right;
                }
            }
            return false;
        }
        true
    });
}
