//! Expiry and the control plane: the timer wheels' garbage collection, and
//! what listings, deletions and flushes (conntrack -L / -D / -F) do to the
//! table from outside the packet path.

use super::packet::ConnHandle;
use super::{Engine, Worker};
use crate::conn::{Conn, Listed};
use crate::event::EventKind;
use crate::table::Prefetch;
use crate::tuple::Tuple;

impl<P: Prefetch> Engine<P> {
    /// Runs `f` on a live connection by handle (None if it is gone).
    pub fn with_conn<R>(&self, h: ConnHandle, f: impl FnOnce(&mut Conn) -> R) -> Option<R> {
        let mut g = self.table.guard();
        let r = g.get(h.stripe, h.local, h.id)?;
        let old_deadline = g.hot(r).deadline_ms;
        let out = g.update(r, f);
        g.deadline_changed(r, old_deadline);
        Some(out)
    }

    /// Expires what is due at `now_ms` in `stripe`'s timer wheel (every
    /// stripe's with None): connections past their deadline are removed, with
    /// their DESTROY events; at most `budget` records are visited per stripe
    /// (the rest waits for the next call). Returns how many were removed.
    pub fn expire(&self, w: &mut Worker, now_ms: u64, stripe: Option<u32>, budget: usize) -> usize {
        self.expire_some(w, now_ms, stripe, budget).0
    }

    /// [`Engine::expire`], also saying whether a stripe's budget ran out
    /// before all that is due was removed (call again soon).
    pub fn expire_some(
        &self,
        w: &mut Worker,
        now_ms: u64,
        stripe: Option<u32>,
        budget: usize,
    ) -> (usize, bool) {
        let stripes = match stripe {
            Some(s) => s..s + 1,
            None => 0..self.table.stripe_count(),
        };
        let (mut reclaimed, mut more) = (0, false);
        for s in stripes {
            let (n, m) = self.table.expire(s, now_ms, budget, |dead| {
                w.events.push(EventKind::Destroy, now_ms, &dead);
            });
            self.reap_expects(w, s, now_ms);
            reclaimed += n;
            more |= m;
        }
        w.stats.expired += reclaimed as u64;
        (reclaimed, more)
    }

    /// A snapshot of every live connection (for listings), stripe by stripe:
    /// each stripe is locked only while it is copied.
    pub fn snapshot(&self, now_ms: u64, mut f: impl FnMut(&Listed)) {
        for s in 0..self.table.stripe_count() {
            self.table.for_each(s, |_, c| {
                if !c.is_expired(now_ms) {
                    f(c)
                }
            });
        }
    }

    /// Removes the connection holding tuple `t` (either direction); true if one was.
    pub fn delete_tuple(&self, w: &mut Worker, now_ms: u64, t: &Tuple) -> bool {
        let mut g = self.table.guard();
        let Some((r, _)) = g.lookup(self.table.key(t), t) else {
            return false;
        };
        match g.remove(r) {
            Some(dead) => {
                w.events.push(EventKind::Destroy, now_ms, &dead);
                true
            }
            None => false,
        }
    }

    /// Removes the connections `pred` selects (conntrack -D / -F); returns them.
    pub fn delete_where(
        &self,
        w: &mut Worker,
        now_ms: u64,
        mut pred: impl FnMut(&Conn) -> bool,
    ) -> usize {
        let mut n = 0;
        for s in 0..self.table.stripe_count() {
            let mut victims = Vec::new();
            self.table.for_each(s, |local, c| {
                if pred(c) {
                    victims.push((local, c.id))
                }
            });
            for (local, id) in victims {
                if let Some(dead) = self.table.remove_id(s, local, id) {
                    w.events.push(EventKind::Destroy, now_ms, &dead);
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;

    #[test]
    fn expiry_and_gc() {
        let e = engine(1000);
        let mut w = e.worker(16);
        let udp = udp_query(5000);
        run(&e, &mut w, 0, &udp, Decision::Accept(Egress::NONE));
        assert_eq!(e.expire(&mut w, 29_999, None, 1 << 20), 0);
        assert_eq!(e.expire(&mut w, 30_000, None, 1 << 20), 1);
        assert!(e.table().is_empty());
        // An expired entry found by lookup is replaced by a new connection.
        run(&e, &mut w, 40_000, &udp, Decision::Accept(Egress::NONE));
        let r = run(&e, &mut w, 80_000, &udp, Decision::Accept(Egress::NONE));
        assert_eq!(r.ctinfo, CtInfo::New);
        assert_eq!(w.stats.expired, 2);
    }

    #[test]
    fn expiry_in_budgeted_slices_says_when_more_is_due() {
        let e = engine(1000);
        let mut w = e.worker(0);
        for sport in 0..10u16 {
            let f = udp_query(5000 + sport);
            run(&e, &mut w, 0, &f, Decision::Accept(Egress::NONE));
        }
        assert_eq!(e.expire_some(&mut w, 10_000, None, 4), (0, false));
        assert_eq!(e.expire_some(&mut w, 30_000, None, 4), (4, true));
        assert_eq!(e.expire_some(&mut w, 30_000, None, 4), (4, true));
        assert_eq!(e.expire_some(&mut w, 30_000, None, 4), (2, false));
        assert!(e.table().is_empty());
        assert_eq!(w.stats.expired, 10);
    }
}
