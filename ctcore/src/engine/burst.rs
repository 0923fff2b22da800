//! The staged burst pipeline ([`Engine::process_burst`]): stage 1 parses
//! and hashes every packet of a stage and prefetches its bucket, stage 2
//! prefetches the records whose signatures match, stage 3 tracks each
//! packet, runs the NAT hooks, asks the caller's verdict and confirms.

use super::new_conn::Pending;
use super::packet::{CtResult, Decision, Pkt};
use super::track::{packet_tuple, simple_tuple};
use super::{Engine, SnatMemo, Worker};
use crate::conn::{Conn, Ext, Status};
use crate::event::EventKind;
use crate::nat::alloc;
use crate::table::{Guard, Hint, Key, Prefetch, Probe};
use crate::tuple::{IPPROTO_SCTP, IPPROTO_TCP};
use crate::wire::{self, Parsed};

/// Packets per processing stage (a burst).
pub(super) const STAGE: usize = 32;

/// How many packets ahead of stage 3 a new connection's first loads are
/// issued (in a table beyond the caches), and its second ones (which need
/// what the first ones load): each step has the time stage 3 takes over
/// that many packets (hundreds of cycles for a new connection) to arrive.
const FIRST_AHEAD: usize = 4;
const SECOND_AHEAD: usize = 2;
/// How many packets ahead stage 3 starts loading a TCP or SCTP record's
/// state line (its address is in the record's hot line, loaded in stage 2).
const STATE_AHEAD: usize = 4;

/// A stage's new connections in a table beyond the caches, whose loads
/// stage 3 issues ahead of itself.
#[derive(Default)]
struct Ahead {
    /// Bit j: packet j most likely opens a connection.
    new: u32,
    /// Bit j: ... and evicts one (a full stripe).
    evicting: u32,
    /// How the worker's last source NAT went (its rule is in the table).
    snat: Option<SnatMemo>,
}

impl Ahead {
    /// Packet `j`'s key, if it is one of the stage's new connections.
    #[inline]
    fn new_key(&self, keys: &[Option<Key>; STAGE], j: usize) -> Option<Key> {
        if j < STAGE && self.new & (1 << j) != 0 {
            keys[j]
        } else {
            None
        }
    }

    fn evicts(&self, j: usize) -> bool {
        self.evicting & (1 << j) != 0
    }
}

impl<P: Prefetch> Engine<P> {
    /// Runs conntrack over a burst. For each packet, in order, the engine looks
    /// up / creates its connection, asks `decide(i, &result)` for the verdict
    /// (routing and policy), and confirms a new connection only if the verdict
    /// is `Accept`. `results[i]` gets the outcome; `ct_drop` is set if conntrack
    /// itself had to drop an accepted packet (table full).
    pub fn process_burst<F>(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkts: &[Pkt<'_>],
        results: &mut [CtResult],
        mut decide: F,
    ) where
        F: FnMut(usize, &CtResult) -> Decision,
    {
        self.refresh_tunables(w);
        // The stripes this burst uses, locked once for the whole burst.
        let mut g = self.table.guard();
        let helpers = self.helpers.is_some();
        // (Read once: the engine's fields are behind shared references the
        // loop's stores could alias.)
        let express = !helpers && self.express;
        let mut pending = Pending {
            conn: Conn::default(),
            ext: Ext::default(),
            live: false,
        };
        let timed = w.stage_cycles.is_some();
        let stamp = || if timed { P::cycles() } else { 0 };
        let mut t = [0u64; 4];
        for (c, chunk) in pkts.chunks(STAGE).enumerate() {
            t[0] = stamp();
            // Stage 1: parse and hash every packet, prefetching its bucket;
            // stage 2: prefetch the records whose signatures match. The misses
            // of the burst overlap instead of adding up; stage 3 then finds
            // them in cache.
            // Each packet is parsed straight into its result.
            let out = &mut results[c * STAGE..c * STAGE + chunk.len()];
            let mut keys: [Option<Key>; STAGE] = [None; STAGE];
            // A record's hot line is all a packet reads, but for TCP's
            // and SCTP's state line: its loads follow once the hot lines
            // are in (`stated`, in stage 3 a few packets ahead).
            let mut stated = 0u32;
            for (i, pkt) in chunk.iter().enumerate() {
                // The common frames are parsed in place, their tuple taken
                // from the parse; the others fully, the tuple read from it.
                let parsed = &mut out[i].parsed;
                if parsed.is_err() {
                    *parsed = Ok(Parsed::default());
                }
                let fast = match parsed {
                    Ok(p) => wire::parse_common_into(pkt.frame, !pkt.ip_checked, p)
                        .map(|ports| packet_tuple(p, ports, pkt.zone)),
                    Err(_) => None,
                };
                let t = match fast {
                    Some(t) => Some(t),
                    None => {
                        *parsed = if pkt.ip_checked {
                            wire::parse_ip_checked(pkt.frame)
                        } else {
                            wire::parse(pkt.frame)
                        };
                        parsed.as_ref().ok().and_then(|p| simple_tuple(p, pkt.zone))
                    }
                };
                if let Some(t) = t {
                    let k = self.table.key(&t);
                    g.prefetch_bucket::<P>(k);
                    keys[i] = Some(k);
                    stated |= u32::from(matches!(t.proto, IPPROTO_TCP | IPPROTO_SCTP)) << i;
                }
            }
            t[1] = stamp();
            let mut ahead = Ahead::default();
            let mut hints: [Option<Hint>; STAGE] = [None; STAGE];
            for (j, k) in keys[..chunk.len()].iter().enumerate() {
                if let Some(k) = k {
                    match g.prefetch_records::<P>(*k) {
                        Probe::Known(hint) => hints[j] = hint,
                        Probe::New => {}
                        Probe::NewFar { evicts } => {
                            ahead.new |= 1 << j;
                            ahead.evicting |= u32::from(evicts) << j;
                        }
                    }
                }
            }
            if ahead.new != 0 {
                ahead.snat = self.snat_guess(w);
                if ahead.snat.is_none() && ahead.evicting == 0 {
                    // Nothing to begin ahead but each one's reply bucket:
                    // loaded now, for the whole stage (the loads-ahead
                    // loop costs more than it hides here).
                    let mut m = ahead.new;
                    while m != 0 {
                        let j = m.trailing_zeros() as usize;
                        m &= m - 1;
                        if let Some(k) = keys[j] {
                            g.prefetch_new::<P>(k, true, false);
                        }
                    }
                    ahead.new = 0;
                }
            }
            if ahead.new != 0 {
                w.ahead.matched = 0;
                w.ahead.guess = ahead.snat;
                for j in 0..FIRST_AHEAD {
                    self.load_first(&mut g, w, chunk, out, &keys, &ahead, j);
                }
                for j in 0..SECOND_AHEAD {
                    self.load_second(&mut g, w, &keys, &ahead, j);
                }
            }
            t[2] = stamp();
            let state_ahead = |g: &mut Guard<'_>, j: usize| {
                if stated & (1 << j) != 0 {
                    if let (Some(k), Some(h)) = (keys[j], hints[j]) {
                        g.prefetch_state::<P>(k, h);
                    }
                }
            };
            if stated != 0 {
                for j in 0..STATE_AHEAD.min(chunk.len()) {
                    state_ahead(&mut g, j);
                }
            }
            if ahead.new == 0 {
                for (j, pkt) in chunk.iter().enumerate() {
                    if stated != 0 && j + STATE_AHEAD < chunk.len() {
                        state_ahead(&mut g, j + STATE_AHEAD);
                    }
                    let i = c * STAGE + j;
                    self.stage3_any(
                        express,
                        helpers,
                        &mut g,
                        w,
                        now_ms,
                        pkt,
                        keys[j],
                        hints[j],
                        i,
                        results,
                        &mut pending,
                        &mut decide,
                    );
                }
            } else {
                for (j, pkt) in chunk.iter().enumerate() {
                    if stated != 0 && j + STATE_AHEAD < chunk.len() {
                        state_ahead(&mut g, j + STATE_AHEAD);
                    }
                    let i = c * STAGE + j;
                    let out = &results[c * STAGE..c * STAGE + chunk.len()];
                    self.load_first(&mut g, w, chunk, out, &keys, &ahead, j + FIRST_AHEAD);
                    self.load_second(&mut g, w, &keys, &ahead, j + SECOND_AHEAD);
                    w.ahead.current = Some(j);
                    self.stage3_any(
                        express,
                        helpers,
                        &mut g,
                        w,
                        now_ms,
                        pkt,
                        keys[j],
                        hints[j],
                        i,
                        results,
                        &mut pending,
                        &mut decide,
                    );
                }
                w.ahead.current = None;
            }
            if let Some(sc) = &mut w.stage_cycles {
                t[3] = P::cycles();
                sc.parse += t[1] - t[0];
                sc.prefetch += t[2] - t[1];
                sc.track += t[3] - t[2];
            }
        }
    }

    /// The source NAT rule this worker's last translated connection took,
    /// with its ingress and egress: the guess new connections' searches
    /// are begun on (checked by the search itself, which only finds its
    /// reads loaded).
    #[inline]
    fn snat_guess(&self, w: &Worker) -> Option<SnatMemo> {
        let memo = w.ahead.memo?;
        (memo.rule < self.nat.as_ref()?.rules.len()).then_some(memo)
    }

    /// The first loads for new connection `j` (if it is one), a few
    /// packets before stage 3 tracks it: the record its eviction removes,
    /// and either its source NAT search's first reads (the original-port
    /// candidate's bucket and the bitmap word: [`alloc::anticipate`]; only
    /// in a table beyond a last-level cache, [`Guard::beyond_llc`]) or,
    /// without source NAT, its inverted tuple's bucket.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn load_first(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        chunk: &[Pkt<'_>],
        out: &[CtResult],
        keys: &[Option<Key>; STAGE],
        ahead: &Ahead,
        j: usize,
    ) {
        let Some(k) = ahead.new_key(keys, j) else {
            return;
        };
        let mut begun = None;
        // (By reference: a copy of the memo, whose fields lie at odd
        // offsets, was a store-forwarding stall per new connection.)
        let guess = ahead.snat.as_ref().filter(|_| g.beyond_llc());
        if let (Some(memo), Some(nat), Ok(p)) = (guess, &self.nat, &out[j].parsed) {
            if chunk[j].in_port == memo.in_port {
                if let Some(t) = simple_tuple(p, chunk[j].zone) {
                    // The first rule it matches (the guess's ingress and
                    // egress) is the guess's: POSTROUTING will find it.
                    let rule = &nat.rules[memo.rule];
                    let matches =
                        |r: &crate::nat::Rule| r.postrouting_match(&t, memo.in_port, memo.out_port);
                    if matches(rule) {
                        if memo.rule == 0 || !nat.rules[..memo.rule].iter().any(matches) {
                            w.ahead.matched |= 1 << j;
                        }
                        begun =
                            alloc::anticipate::<P>(g, rule, memo.out_addr, &t, k.hash, k.stripe);
                    }
                }
            }
        }
        g.prefetch_new::<P>(k, begun.is_none(), ahead.evicts(j));
        w.ahead.begun[j] = begun;
    }

    /// The second loads for new connection `j`, what the first ones tell:
    /// what its eviction writes besides the record
    /// ([`Guard::prefetch_eviction`]); the record holding its search's
    /// original-port candidate and the bucket of the port its bitmap word
    /// offers ([`alloc::anticipate_next`], left for the search).
    #[inline]
    fn load_second(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        keys: &[Option<Key>; STAGE],
        ahead: &Ahead,
        j: usize,
    ) {
        let Some(k) = ahead.new_key(keys, j) else {
            return;
        };
        if ahead.evicts(j) {
            g.prefetch_eviction::<P>(k);
        }
        // (Written whether begun or not: what an earlier stage left here
        // is not this packet's. The search begun is read in place: moved
        // out, its copy, in parts at odd offsets, was read back with
        // store-forwarding stalls.)
        w.ahead.loaded[j] = match &w.ahead.begun[j] {
            Some(a) => alloc::anticipate_next::<P>(g, a, k.stripe),
            None => alloc::Loaded::default(),
        };
        w.ahead.begun[j] = None;
    }

    /// Stage 3 for packet `i` of the burst: the express way for a known
    /// connection's packet (if `express`: the engine takes it and there
    /// are no helpers), else [`Engine::stage3`], with the helpers' hooks
    /// only if there are helpers.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn stage3_any<F>(
        &self,
        express: bool,
        helpers: bool,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: Option<Key>,
        hint: Option<Hint>,
        i: usize,
        results: &mut [CtResult],
        pending: &mut Pending,
        decide: &mut F,
    ) where
        F: FnMut(usize, &CtResult) -> Decision,
    {
        let out = &mut results[i];
        pending.clear();
        if express {
            if let (Some(k), Some(h)) = (key, hint) {
                if self.express(g, w, now_ms, pkt, k, h, out) {
                    let d = decide(i, out);
                    if let Decision::Accept(e) = &d {
                        if let Some(m) = e.mark {
                            self.set_mark(g, w, now_ms, m, out, pending);
                        }
                        if e.cache != out.cached {
                            Self::cache_verdict(g, e.cache, out);
                        }
                    }
                    return;
                }
            }
        }
        if helpers {
            self.stage3::<true, F>(g, w, now_ms, pkt, key, hint, i, out, pending, decide);
        } else {
            self.stage3::<false, F>(g, w, now_ms, pkt, key, hint, i, out, pending, decide);
        }
    }

    /// Stage 3 of `process_burst` for one packet the express way did not
    /// take: track, NAT, decide, confirm (and, with `HELPERS`, the
    /// conntrack helpers' hooks). Out of line, so that the express way's
    /// loop keeps its registers.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn stage3<const HELPERS: bool, F>(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: Option<Key>,
        hint: Option<Hint>,
        i: usize,
        out: &mut CtResult,
        pending: &mut Pending,
        decide: &mut F,
    ) where
        F: FnMut(usize, &CtResult) -> Decision,
    {
        // `out.parsed` is this packet's (stage 1); the rest is reset here.
        out.reset_verdict();
        out.zone = pkt.zone;
        let mut looked_up = key;
        let park = self.track(g, w, now_ms, pkt, &mut looked_up, hint, out, pending);
        if HELPERS && pending.is_some() {
            self.expected(g, w, now_ms, pending, looked_up, out);
        }
        if let Some(c) = pending.get_mut() {
            self.nat_prerouting(g, now_ms, c, pkt.in_port, w.slot, out);
        }
        let d = decide(i, out);
        // (Borrowed, not copied out of the decision.)
        let egress = match &d {
            Decision::Accept(e) => Some(e),
            Decision::Local => None,
            Decision::Drop => return,
        };
        if let Some(e) = egress {
            if let Some(m) = e.mark {
                self.set_mark(g, w, now_ms, m, out, pending);
            }
            if e.cache != out.cached && !pending.is_some() {
                Self::cache_verdict(g, e.cache, out);
            }
        }
        if HELPERS {
            if let (Some(e), Some(c)) = (egress, pending.get_mut()) {
                // nft `ct helper set`: on a new connection of the helper's protocol.
                if e.helper.proto() == Some(c.tuples[0].proto) {
                    c.helper = e.helper;
                    c.status.set(Status::HELPER);
                }
            }
        }
        if pending.is_some() {
            let (conn, ext) = (&mut pending.conn, &pending.ext);
            // (Without NAT rules, no call: it would accept.)
            if egress.is_none_or(|e| {
                self.nat.is_none()
                    || self.nat_postrouting(g, w, now_ms, conn, pkt.in_port, e, looked_up, out)
            }) {
                match park {
                    Some(slot) => {
                        w.claimed = None;
                        w.frags[slot].pending = Some((*conn, *ext));
                    }
                    None => {
                        // (Source NAT worked them out already.)
                        if conn.status.0 & (Status::SRC_NAT | Status::DST_NAT) != 0
                            && conn.nat_csum.is_none()
                        {
                            conn.nat_csum = crate::nat::rewrite::csum_deltas(conn);
                        }
                        self.confirm(g, w, now_ms, conn, ext, looked_up, out)
                    }
                }
            }
        }
        if HELPERS && out.ct_drop.is_none() {
            self.help(g, w, now_ms, pkt.frame, pending.is_some(), out);
        }
    }

    /// Keeps `cache` as the cached verdict of the packet's direction of its
    /// known connection (once per connection and direction: cold).
    #[cold]
    fn cache_verdict(g: &mut Guard<'_>, cache: u16, out: &mut CtResult) {
        let Some(h) = out.conn else { return };
        let Some(r) = g.get(h.stripe, h.local, h.id) else {
            return;
        };
        g.rec_mut(r).hot.verdicts[out.dir.index()] = cache;
        out.cached = cache;
    }

    /// nft `ct mark set`: on the packet's new connection before it is
    /// confirmed, or on its known one (an UPDATE event if the mark changed,
    /// the kernel's IPCT_MARK).
    #[cold]
    fn set_mark(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        mark: u32,
        out: &mut CtResult,
        pending: &mut Pending,
    ) {
        out.mark = mark;
        if let Some(c) = pending.get_mut() {
            c.mark = mark;
            return;
        }
        let Some(h) = out.conn else { return };
        let Some(r) = g.get(h.stripe, h.local, h.id) else {
            return;
        };
        let mut c = g.rec_mut(r);
        if c.mark() != mark {
            c.set_mark(mark);
            // The cached verdicts were decided with the old mark.
            c.hot.verdicts = [0; 2];
            out.cached = 0;
            if w.events.enabled() {
                let l = g.listed(r);
                w.events.push(EventKind::Update, now_ms, &l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::super::tests::{out, udp_query};
    use super::super::{EngineConfig, StageCycles, Tunables};
    use super::*;

    static CLOCK: AtomicU64 = AtomicU64::new(0);

    /// A clock that moves 10 cycles a read.
    struct Ticks;

    impl Prefetch for Ticks {
        fn read(_: *const u8) {}
        fn cycles() -> u64 {
            CLOCK.fetch_add(10, Ordering::Relaxed)
        }
    }

    /// A call of several stages tracks each packet as one by one does: a
    /// packet whose connection an earlier stage creates, answers or evicts
    /// finds what it finds one by one. UDP queries, their
    /// replies and repeats, and a TCP handshake straddling the stages, in a
    /// table whose stripes fill (early drops), one of room, and one beyond
    /// a last-level cache (new connections' loads begun ahead).
    #[test]
    fn a_burst_of_several_stages_is_tracked_as_its_packets_one_by_one() {
        use super::super::tests::{engine, tcp, udp_frame};
        use crate::wire::tcp_flags::{ACK, SYN};
        let (c, s) = ([192, 0, 2, 1], [198, 51, 100, 1]);
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for i in 0..40 {
            frames.push(udp_frame(c, s, 2000 + i, 53, b"q"));
            if i == 28 {
                frames.push(tcp(true, SYN, 100, 0, b""));
            }
            if i == 31 {
                frames.push(tcp(false, SYN | ACK, 500, 101, b""));
            }
            if i == 35 {
                frames.push(tcp(true, ACK, 101, 501, b""));
            }
        }
        for i in (0..40).rev() {
            frames.push(udp_frame(s, c, 53, 2000 + i, b"a"));
        }
        for i in 0..40 {
            frames.push(udp_frame(c, s, 2000 + i, 53, b"q"));
        }
        let pkts: Vec<Pkt<'_>> = frames.iter().map(|f| Pkt::new(f, 0, 0)).collect();
        let seen = |r: &CtResult| {
            (
                r.ctinfo,
                r.dir,
                r.invalid_reason,
                r.ct_drop,
                r.conn.is_some(),
            )
        };
        for cap in [24, 1000, 400_000] {
            let (one, burst) = (engine(cap), engine(cap));
            assert_eq!(burst.table().guard().beyond_llc(), cap == 400_000);
            let mut w = one.worker(0);
            let one_by_one: Vec<_> = pkts
                .iter()
                .map(|p| {
                    let mut res = [CtResult::default()];
                    one.process_burst(&mut w, 0, std::slice::from_ref(p), &mut res, |_, _| out(s));
                    seen(&res[0])
                })
                .collect();
            let mut w = burst.worker(0);
            let mut res = vec![CtResult::default(); pkts.len()];
            burst.process_burst(&mut w, 0, &pkts, &mut res, |_, _| out(s));
            let in_burst: Vec<_> = res.iter().map(seen).collect();
            for (i, (a, b)) in one_by_one.iter().zip(&in_burst).enumerate() {
                assert_eq!(a, b, "capacity {cap}, packet {i}");
            }
            assert_eq!(one.table().len(), burst.table().len(), "capacity {cap}");
        }
    }

    #[test]
    fn a_cached_verdict_is_kept_per_direction_and_cleared_by_a_mark_change() {
        use super::super::tests::{engine, udp_frame};
        use crate::engine::{Decision, Egress};
        let e = engine(100);
        let mut w = e.worker(0);
        let (c, s) = ([192, 0, 2, 1], [198, 51, 100, 1]);
        let q = udp_frame(c, s, 1000, 53, b"q");
        let a = udp_frame(s, c, 53, 1000, b"a");
        // Each packet: what `decide` was handed, and what it answers.
        let mut step = |now: u64, f: &[u8], cache: u16, mark: Option<u32>| {
            let mut out = [CtResult::default()];
            let mut seen = None;
            e.process_burst(&mut w, now, &[Pkt::new(f, 0, 0)], &mut out, |_, r| {
                seen = Some(r.cached);
                Decision::Accept(Egress {
                    mark,
                    cache,
                    ..Egress::NONE
                })
            });
            (seen.expect("decided"), out[0].cached)
        };
        // A new connection keeps none (it is not confirmed when decided).
        assert_eq!(step(1, &q, 9, None), (0, 0));
        assert_eq!(step(2, &a, 5, None), (0, 5));
        assert_eq!(step(3, &q, 9, None), (0, 9));
        // Handed back per direction.
        assert_eq!(step(4, &q, 9, None), (9, 9));
        assert_eq!(step(5, &a, 5, None), (5, 5));
        // A new mark: both directions' verdicts were decided with the old one.
        assert_eq!(step(6, &q, 0, Some(7)), (9, 0));
        assert_eq!(step(7, &a, 5, None), (0, 5));
        // The same mark again changes nothing.
        assert_eq!(step(8, &q, 9, Some(7)), (0, 9));
        assert_eq!(step(9, &q, 9, Some(7)), (9, 9));
        // A decider that stops caching clears it.
        assert_eq!(step(10, &q, 0, None), (9, 0));
        assert_eq!(step(11, &q, 0, None), (0, 0));
    }

    #[test]
    fn without_snapshots_only_new_sources_are_kept_and_with_them_every_event() {
        use super::super::tests::{engine, udp_frame};
        use crate::tuple::{Addr, Family};
        // A full table of 2: each further new connection evicts one.
        let e = engine(2);
        let mut w = e.worker(64);
        let frame = |i: u8| udp_frame([192, 0, 2, i], [198, 51, 100, 1], 1000, 53, b"q");
        let burst = |w: &mut Worker, now: u64, from: u8, to: u8| {
            let frames: Vec<Vec<u8>> = (from..to).map(frame).collect();
            let pkts: Vec<Pkt<'_>> = frames.iter().map(|f| Pkt::new(f, 0, 0)).collect();
            let mut res = vec![CtResult::default(); pkts.len()];
            e.process_burst(w, now, &pkts, &mut res, |_, _| out([198, 51, 100, 1]));
            assert!(res.iter().all(|r| r.ct_drop.is_none()));
        };
        w.events.keep_snapshots(false);
        assert!(!w.events.enabled());
        burst(&mut w, 1, 1, 5);
        assert_eq!(w.stats.insert, 4);
        assert_eq!(w.stats.early_drop, 2);
        // No snapshot (NEW or DESTROY), only the NEW connections' sources.
        assert_eq!(w.events.len(), 0);
        assert!(!w.events.is_empty());
        let mut sources = Vec::new();
        w.events.drain_sources(|f, a| sources.push((f, a)));
        let want: Vec<(Family, Addr)> = (1..5)
            .map(|i| (Family::V4, Addr::from_v4([192, 0, 2, i])))
            .collect();
        assert_eq!(sources, want);
        assert!(w.events.is_empty());
        // Snapshots on: every event whole, and no sources kept beside them.
        w.events.keep_snapshots(true);
        burst(&mut w, 2, 5, 7);
        let mut kinds = Vec::new();
        w.events
            .drain(|ev| kinds.push((ev.kind, ev.conn.tuples[0].src)));
        let src = |i: u8| Addr::from_v4([192, 0, 2, i]);
        // Each NEW after the DESTROY of the connection it evicted (which
        // one early drop picks depends on the buckets).
        assert_eq!(kinds.len(), 4);
        assert_eq!(
            (kinds[1], kinds[3]),
            ((EventKind::New, src(5)), (EventKind::New, src(6)))
        );
        // The first makes room among 1-4; the second may also take 5,
        // confirmed just before (unreplied, so early drop may pick it).
        for (kind, gone, last) in [(kinds[0].0, kinds[0].1, 4), (kinds[2].0, kinds[2].1, 5)] {
            assert_eq!(kind, EventKind::Destroy);
            assert!((1..=last).any(|i| gone == src(i)), "{gone:?}");
        }
        w.events
            .drain_sources(|_, _| panic!("no sources while snapshots are on"));
        // A worker without an event buffer keeps neither.
        let mut quiet = e.worker(0);
        quiet.events.keep_snapshots(false);
        burst(&mut quiet, 3, 7, 9);
        assert!(quiet.events.is_empty());
    }

    #[test]
    fn stages_are_timed_only_when_asked() {
        let e = Engine::<Ticks>::build(
            EngineConfig {
                capacity_conns: 100,
                seed: 1,
                tunables: Tunables::default(),
            },
            None,
            1,
            &mut (),
        );
        let mut w = e.worker(0);
        let frames: Vec<Vec<u8>> = (0..40).map(|i| udp_query(1000 + i)).collect();
        let pkts: Vec<Pkt<'_>> = frames.iter().map(|f| Pkt::new(f, 0, 0)).collect();
        let mut res = vec![CtResult::default(); pkts.len()];
        e.process_burst(&mut w, 0, &pkts, &mut res, |_, _| out([198, 51, 100, 1]));
        assert_eq!(
            CLOCK.load(Ordering::Relaxed),
            0,
            "no clock read while untimed"
        );
        w.stage_cycles = Some(StageCycles::default());
        e.process_burst(&mut w, 0, &pkts, &mut res, |_, _| out([198, 51, 100, 1]));
        // 40 packets: two stages of the pipeline, each stamped four times.
        assert_eq!(
            w.stage_cycles,
            Some(StageCycles {
                parse: 20,
                prefetch: 20,
                track: 20
            })
        );
        assert_eq!(w.stats.found, 40);
    }
}
