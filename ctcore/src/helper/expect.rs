//! Expectations (nf_conntrack_expect): a connection a helper announced,
//! waiting for its first packet. Each table stripe keeps the expectations
//! whose tuples hash to it in a fixed array reserved at start (the
//! kernel's nf_ct_expect_max bounds the whole table the same way), probed
//! linearly from the tuple's hash over a short window: no allocation, and
//! an expectation that finds no free slot in its window is refused
//! ("expectation table full", counted).
//!
//! The expected tuple's source port is a wildcard (both helpers leave it
//! open, as the kernel's masks do): a tuple is hashed and compared without it.

use crate::tuple::{Dir, Tuple};

use super::Helper;

/// Slots an expectation may take from its home slot on.
pub const PROBE: usize = 8;

/// A master connection, by place and id (an `engine::ConnHandle`'s parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MasterRef {
    pub stripe: u32,
    pub local: u32,
    pub id: u32,
}

/// One expectation (`struct nf_conntrack_expect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expect {
    /// The expected connection's original tuple, source port 0 (any).
    pub tuple: Tuple,
    pub master: MasterRef,
    /// The helper that made it.
    pub helper: Helper,
    /// When it lapses (the helper's expectation timeout after it was made).
    pub expires_ms: u64,
    /// Under NAT, nf_nat_follow_master's inputs: the master's direction the
    /// expected connection runs in (`exp->dir`) and the port its
    /// destination is translated to (`exp->saved_proto`).
    pub nat: Option<(Dir, u16)>,
    /// Told apart from the slot's earlier and later occupants.
    pub gen: u32,
    pub live: bool,
}

impl Expect {
    fn matches(&self, t: &Tuple) -> bool {
        let e = &self.tuple;
        e.src == t.src
            && e.dst == t.dst
            && e.dst_port == t.dst_port
            && e.proto == t.proto
            && e.family == t.family
            && e.zone == t.zone
    }

    fn usable(&self, now_ms: u64) -> bool {
        self.live && now_ms < self.expires_ms
    }
}

/// A placed expectation: its stripe, slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpRef {
    pub stripe: u32,
    pub slot: u32,
    pub gen: u32,
}

/// Why an expectation was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectError {
    /// Another master expects the same tuple (-EBUSY: NAT tries another port).
    Busy,
    /// No free slot (-EMFILE).
    Full,
}

/// One stripe's expectations.
#[derive(Debug, Default)]
pub struct Expects {
    slots: Box<[Expect]>,
    /// Slots holding an expectation (lapsed ones included until reaped).
    pub live: u32,
    next_gen: u32,
}

/// The tuple as expectations hash and compare it: no source port.
pub fn wildcard(t: &Tuple) -> Tuple {
    Tuple { src_port: 0, ..*t }
}

impl Expects {
    /// Room for `slots` expectations.
    pub fn new(slots: usize) -> Expects {
        Expects {
            slots: vec![Expect::default(); slots].into_boxed_slice(),
            live: 0,
            next_gen: 1,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn window(&self, hash: u64) -> impl Iterator<Item = usize> {
        let n = self.slots.len();
        let home = if n == 0 {
            0
        } else {
            (hash % n as u64) as usize
        };
        (0..PROBE.min(n)).map(move |i| (home + i) % n)
    }

    /// Takes a lapsed expectation out; true if it was there.
    fn reap_slot(&mut self, i: usize, now_ms: u64) -> bool {
        let e = &mut self.slots[i];
        if e.live && now_ms >= e.expires_ms {
            e.live = false;
            self.live -= 1;
            return true;
        }
        false
    }

    /// nf_ct_find_expectation: the live expectation `t` (any source port)
    /// matches, taken out (consumed). Lapsed ones met on the way are reaped
    /// (counted in `reaped`).
    pub fn take_match(
        &mut self,
        hash: u64,
        t: &Tuple,
        now_ms: u64,
        reaped: &mut u64,
    ) -> Option<Expect> {
        let mut found = None;
        for i in self.window(hash) {
            if self.reap_slot(i, now_ms) {
                *reaped += 1;
                continue;
            }
            if self.slots[i].live && self.slots[i].matches(t) {
                found = Some(i);
                break;
            }
        }
        let i = found?;
        self.slots[i].live = false;
        self.live -= 1;
        Some(self.slots[i])
    }

    /// nf_ct_expect_related: places `e` (its `tuple` already wildcarded).
    /// An expectation of the same tuple by the same master is replaced;
    /// by another master it is a clash.
    pub fn insert(
        &mut self,
        stripe: u32,
        hash: u64,
        mut e: Expect,
        now_ms: u64,
        reaped: &mut u64,
    ) -> Result<ExpRef, ExpectError> {
        let mut free = None;
        for i in self.window(hash) {
            if self.reap_slot(i, now_ms) {
                *reaped += 1;
            }
            let s = &self.slots[i];
            if !s.live {
                free.get_or_insert(i);
                continue;
            }
            if s.matches(&e.tuple) {
                if s.master != e.master {
                    return Err(ExpectError::Busy);
                }
                // The same announcement again: it replaces the old one.
                free = Some(i);
                self.slots[i].live = false;
                self.live -= 1;
                break;
            }
        }
        let i = free.ok_or(ExpectError::Full)?;
        e.gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        e.live = true;
        self.slots[i] = e;
        self.live += 1;
        Ok(ExpRef {
            stripe,
            slot: i as u32,
            gen: e.gen,
        })
    }

    /// Whether a live expectation of another master holds `t` (a NAT port
    /// search's clash test, before it places its own).
    pub fn busy(&self, hash: u64, t: &Tuple, master: &MasterRef, now_ms: u64) -> bool {
        self.window(hash).any(|i| {
            let s = &self.slots[i];
            s.usable(now_ms) && s.matches(t) && s.master != *master
        })
    }

    /// Removes the expectation `r` names, if it is still that one; true if
    /// it was live (nf_ct_unexpect_related, or eviction of the oldest).
    pub fn remove(&mut self, r: ExpRef) -> bool {
        match self.slots.get_mut(r.slot as usize) {
            Some(s) if s.live && s.gen == r.gen => {
                s.live = false;
                self.live -= 1;
                true
            }
            _ => false,
        }
    }

    /// Reaps every lapsed expectation; returns how many.
    pub fn reap(&mut self, now_ms: u64) -> u64 {
        if self.live == 0 {
            return 0;
        }
        let mut n = 0;
        for i in 0..self.slots.len() {
            if self.reap_slot(i, now_ms) {
                n += 1;
            }
        }
        n
    }

    /// The live expectations (for listings: `conntrack -L expect`).
    pub fn for_each(&self, now_ms: u64, mut f: impl FnMut(&Expect)) {
        for s in self.slots.iter().filter(|s| s.usable(now_ms)) {
            f(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::{Addr, Family};

    fn t(dport: u16) -> Tuple {
        Tuple {
            src: Addr::from_v4([198, 51, 100, 20]),
            dst: Addr::from_v4([203, 0, 113, 1]),
            src_port: 0,
            dst_port: dport,
            proto: 6,
            family: Family::V4,
            zone: 0,
        }
    }

    fn exp(dport: u16, master: u32, expires_ms: u64) -> Expect {
        Expect {
            tuple: t(dport),
            master: MasterRef {
                id: master,
                ..MasterRef::default()
            },
            helper: Helper::Ftp,
            expires_ms,
            ..Expect::default()
        }
    }

    #[test]
    fn an_expectation_is_matched_once_from_any_source_port() {
        let mut x = Expects::new(16);
        let mut reaped = 0;
        x.insert(0, 7, exp(5001, 1, 1000), 0, &mut reaped).unwrap();
        assert_eq!(x.live, 1);
        let probe = Tuple {
            src_port: 20,
            ..t(5001)
        };
        assert!(x.take_match(7, &t(5002), 10, &mut reaped).is_none());
        let e = x.take_match(7, &probe, 10, &mut reaped).expect("matches");
        assert_eq!(e.master.id, 1);
        assert!(
            x.take_match(7, &probe, 10, &mut reaped).is_none(),
            "consumed"
        );
        assert_eq!(x.live, 0);
    }

    #[test]
    fn lapsed_expectations_match_nothing_and_are_reaped() {
        let mut x = Expects::new(16);
        let mut reaped = 0;
        x.insert(0, 3, exp(5001, 1, 1000), 0, &mut reaped).unwrap();
        assert!(x.take_match(3, &t(5001), 1000, &mut reaped).is_none());
        assert_eq!((reaped, x.live), (1, 0));
        x.insert(0, 3, exp(5001, 1, 2000), 0, &mut reaped).unwrap();
        assert_eq!(x.reap(2000), 1);
    }

    #[test]
    fn clashes_replacements_and_a_full_window() {
        let mut x = Expects::new(PROBE);
        let mut reaped = 0;
        let a = x.insert(0, 0, exp(5001, 1, 1000), 0, &mut reaped).unwrap();
        // The same master again: replaced, still one.
        let b = x.insert(0, 0, exp(5001, 1, 1000), 0, &mut reaped).unwrap();
        assert_eq!(x.live, 1);
        assert!(!x.remove(a), "the old one is gone");
        assert!(x.busy(0, &t(5001), &MasterRef::default(), 0));
        assert_eq!(
            x.insert(0, 0, exp(5001, 2, 1000), 0, &mut reaped),
            Err(ExpectError::Busy)
        );
        for p in 1..PROBE as u16 {
            x.insert(0, 0, exp(6000 + p, 3, 1000), 0, &mut reaped)
                .unwrap();
        }
        assert_eq!(
            x.insert(0, 0, exp(7000, 3, 1000), 0, &mut reaped),
            Err(ExpectError::Full)
        );
        assert!(x.remove(b));
        x.insert(0, 0, exp(7000, 3, 1000), 0, &mut reaped).unwrap();
        let mut n = 0;
        x.for_each(0, |_| n += 1);
        assert_eq!(n, PROBE);
    }
}
