//! Receive-side scaling as NICs compute it: the Toeplitz hash (Microsoft RSS
//! specification) over the tuple fields, and the redirection table mapping a
//! hash to an RX queue. NAT uses it to pick ports whose reply tuple lands on
//! the queue (and so the worker) of the original direction.

use crate::tuple::{Family, Tuple, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// The Toeplitz hash of `input` under `key` (`key` at least `input.len() + 4` bytes).
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let mut hash = 0u32;
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            let next = key.get(i + 4).map_or(0, |k| (k >> (7 - bit)) & 1);
            window = (window << 1) | next as u32;
        }
    }
    hash
}

/// A port's RSS set-up: its key and redirection table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    pub key: Vec<u8>,
    /// Redirection table: `reta[hash % reta.len()]` is the queue.
    pub reta: Vec<u16>,
}

impl Rss {
    /// The default redirection table DPDK PMDs install: entry i -> queue i % queues.
    pub fn new(key: &[u8], reta_size: usize, queues: u16) -> Rss {
        let q = queues.max(1);
        Rss {
            key: key.to_vec(),
            reta: (0..reta_size.max(1))
                .map(|i| (i % q as usize) as u16)
                .collect(),
        }
    }

    /// The RSS hash of a tuple: addresses, then ports for TCP/UDP/SCTP (the
    /// fields and order NICs use); addresses only for other protocols.
    pub fn hash(&self, t: &Tuple) -> u32 {
        let mut input = [0u8; 36];
        let w = if t.family == Family::V4 { 4 } else { 16 };
        input[..w].copy_from_slice(&t.src.0[..w]);
        input[w..2 * w].copy_from_slice(&t.dst.0[..w]);
        let mut n = 2 * w;
        if matches!(t.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
            input[n..n + 2].copy_from_slice(&t.src_port.to_be_bytes());
            input[n + 2..n + 4].copy_from_slice(&t.dst_port.to_be_bytes());
            n += 4;
        }
        toeplitz(&self.key, &input[..n])
    }

    /// The RX queue a packet with this tuple arrives on.
    pub fn queue(&self, t: &Tuple) -> u16 {
        self.reta[self.hash(t) as usize % self.reta.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::Addr;

    #[test]
    fn microsoft_test_vector() {
        let ms_key: [u8; 40] = [
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
            0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
        ];
        let rss = Rss::new(&ms_key, 128, 4);
        let t = Tuple {
            src: Addr::from_v4([66, 9, 149, 187]),
            dst: Addr::from_v4([161, 142, 100, 80]),
            src_port: 2794,
            dst_port: 1766,
            proto: IPPROTO_TCP,
            family: Family::V4,
            zone: 0,
        };
        assert_eq!(rss.hash(&t), 0x51cc_c178);
        let l3 = Tuple { proto: 1, ..t };
        assert_eq!(rss.hash(&l3), 0x323e_8fc2, "addresses only (spec vector)");
    }

    #[test]
    fn symmetric_key_sends_both_directions_to_one_queue() {
        let key: Vec<u8> = (0..52)
            .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
            .collect();
        let rss = Rss::new(&key, 128, 4);
        for i in 0..500u32 {
            let t = Tuple {
                src: Addr::from_v4([192, 0, 2, i as u8]),
                dst: Addr::from_v4([198, 51, 100, (i >> 8) as u8]),
                src_port: 1000 + i as u16,
                dst_port: 80,
                proto: IPPROTO_UDP,
                family: Family::V4,
                zone: 0,
            };
            assert_eq!(rss.queue(&t), rss.queue(&t.invert().unwrap()));
        }
    }
}
