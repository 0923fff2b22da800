//! Backend pools with Maglev consistent hashing (Eisenbud et al., NSDI 2016):
//! a lookup table of prime size where each backend fills slots in its own
//! permutation order, weighted; removing a backend moves only the flows that
//! hashed to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use crate::tuple::{Addr, Family};

/// Lookup table size: a prime well above 100 x the backends a pool may hold.
pub const TABLE_SIZE: usize = 65_537;

#[derive(Debug)]
pub struct Backend {
    pub family: Family,
    pub addr: Addr,
    /// New destination port; None keeps the original.
    pub port: Option<u16>,
    pub weight: u32,
    pub healthy: AtomicBool,
}

impl Backend {
    pub fn new(family: Family, addr: Addr, port: Option<u16>, weight: u32) -> Backend {
        Backend {
            family,
            addr,
            port,
            weight: weight.max(1),
            healthy: AtomicBool::new(true),
        }
    }

    fn seeds(&self) -> (u64, u64) {
        let t = crate::tuple::Tuple {
            src: self.addr,
            dst: Addr::default(),
            src_port: self.port.unwrap_or(0),
            dst_port: 0,
            proto: 0,
            family: self.family,
            zone: 0,
        };
        (t.hash(0x6d61_676c_6576_0001), t.hash(0x6d61_676c_6576_0002))
    }
}

/// A named pool of backends and its lookup table.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Backend>,
    table: RwLock<Vec<u16>>,
}

/// Builds the Maglev table over the healthy backends; empty if none is.
fn populate(backends: &[Backend]) -> Vec<u16> {
    let live: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].healthy.load(Ordering::Relaxed))
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let m = TABLE_SIZE as u64;
    let perm: Vec<(u64, u64)> = live
        .iter()
        .map(|&i| {
            let (h1, h2) = backends[i].seeds();
            (h1 % m, h2 % (m - 1) + 1)
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut table = vec![u16::MAX; TABLE_SIZE];
    let mut filled = 0;
    'outer: loop {
        for (j, &i) in live.iter().enumerate() {
            for _ in 0..backends[i].weight {
                let (offset, skip) = perm[j];
                let mut c = ((offset + next[j] * skip) % m) as usize;
                while table[c] != u16::MAX {
                    next[j] += 1;
                    c = ((offset + next[j] * skip) % m) as usize;
                }
                table[c] = i as u16;
                next[j] += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'outer;
                }
            }
        }
    }
    table
}

impl Pool {
    pub fn new(name: String, backends: Vec<Backend>) -> Pool {
        let table = RwLock::new(populate(&backends));
        Pool {
            name,
            backends,
            table,
        }
    }

    /// The backend for a flow hash, or None if no backend is healthy.
    pub fn pick(&self, flow_hash: u64) -> Option<&Backend> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let i = *t.get((flow_hash % TABLE_SIZE as u64) as usize)?;
        self.backends.get(i as usize)
    }

    /// Marks a backend up or down and rebuilds the table. Existing connections
    /// keep their backend (the binding lives in the connection).
    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        let Some(b) = self.backends.get(index) else {
            return false;
        };
        b.healthy.store(healthy, Ordering::Relaxed);
        let t = populate(&self.backends);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = t;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u8) -> Pool {
        Pool::new(
            "p".into(),
            (0..n)
                .map(|i| {
                    Backend::new(
                        Family::V4,
                        Addr::from_v4([198, 51, 100, 10 + i]),
                        Some(80),
                        1,
                    )
                })
                .collect(),
        )
    }

    fn spread(p: &Pool, flows: u64) -> Vec<usize> {
        let mut count = vec![0usize; p.backends.len()];
        for f in 0..flows {
            let b = p.pick(f.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
            count[p.backends.iter().position(|x| std::ptr::eq(x, b)).unwrap()] += 1;
        }
        count
    }

    #[test]
    fn balanced_within_five_percent() {
        let p = pool(3);
        for c in spread(&p, 30_000) {
            assert!((9_500..=10_500).contains(&c), "{c}");
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_flows() {
        let p = pool(3);
        let before: Vec<u16> = p.table.read().unwrap().clone();
        p.set_healthy(1, false);
        let after: Vec<u16> = p.table.read().unwrap().clone();
        let moved_others = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 1 && b != a)
            .count();
        // Maglev: a few percent of the survivors' slots may move; none must go to the dead one.
        assert!(moved_others < TABLE_SIZE / 50, "{moved_others}");
        assert!(after.iter().all(|&i| i != 1));
        p.set_healthy(0, false);
        p.set_healthy(2, false);
        assert!(p.pick(7).is_none());
    }

    #[test]
    fn weights_count() {
        let mut b: Vec<Backend> = (0..2)
            .map(|i| Backend::new(Family::V4, Addr::from_v4([198, 51, 100, 10 + i]), None, 1))
            .collect();
        b[1] = Backend::new(Family::V4, Addr::from_v4([198, 51, 100, 11]), None, 3);
        let p = Pool::new("w".into(), b);
        let c = spread(&p, 40_000);
        assert!((9_000..=11_000).contains(&c[0]), "{c:?}");
    }
}
