//! The NAT hooks of a new connection: destination NAT before routing
//! (PREROUTING), source NAT after it (POSTROUTING), the port search steered
//! to the worker the replies will reach.

use super::packet::{CtResult, Egress};
use super::{Engine, Worker};
use crate::conn::{Conn, Listed, Status};
use crate::event::EventKind;
use crate::nat::alloc;
use crate::nat::rewrite::Translation;
use crate::stats::CounterSlot;
use crate::table::{Guard, Prefetch};
use crate::tuple::{Dir, Tuple};

impl<P: Prefetch> Engine<P> {
    /// Destination NAT for a new connection (before routing).
    pub(super) fn nat_prerouting(
        &self,
        g: &mut Guard<'_>,
        now_ms: u64,
        c: &mut Conn,
        in_port: u16,
        slot: CounterSlot,
        res: &mut CtResult,
    ) {
        let Some(nat) = &self.nat else { return };
        if c.status.has(Status::DST_NAT_DONE) {
            return;
        }
        if self.nat_prerouting {
            nat.prerouting(g, c, in_port, now_ms, slot);
        }
        c.status.set(Status::DST_NAT_DONE);
        res.rewrite = Translation::for_packet(c, Dir::Orig, false);
    }

    /// Source NAT for a new connection (after routing). False if the packet must
    /// be dropped (no free port).
    #[cold]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn nat_postrouting(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        c: &mut Conn,
        in_port: u16,
        egress: &Egress,
        looked_up: Option<crate::table::Key>,
        res: &mut CtResult,
    ) -> bool {
        let (home, seed) = (looked_up.map(|k| k.stripe), looked_up.map(|k| k.hash));
        let Some(nat) = &self.nat else { return true };
        if c.status.has(Status::SRC_NAT_DONE) {
            return true;
        }
        c.status.set(Status::SRC_NAT_DONE);
        // The rule the loads ahead found first for this packet's tuple, if
        // the tuple and ports are the ones they matched; and its binding,
        // if the egress address is the one it bound.
        let mut none = alloc::Loaded::default();
        let (ahead, matched) = match w.ahead.take_current() {
            Some((l, guess)) => {
                let matched = guess.filter(|m| {
                    m.in_port == in_port
                        && m.out_port == egress.port
                        && !c.status.has(Status::DST_NAT)
                });
                // The candidates' keys are of the reply tuple with the
                // original's zone (a directional zone gives it another).
                if matched.is_none_or(|m| m.out_addr != egress.addr)
                    || c.tuples[1].zone != c.tuples[0].zone
                {
                    *l = alloc::Loaded::default();
                }
                (l, matched)
            }
            None => (&mut none, None),
        };
        let index = match matched {
            Some(m) => m.rule,
            None => match nat.postrouting_index(c, in_port, egress.port) {
                Some(i) => i,
                None => return true,
            },
        };
        debug_assert_eq!(Some(index), nat.postrouting_index(c, in_port, egress.port));
        let rule = &nat.rules[index];
        let steer = w.reply_steering.take();
        let accept = |t: &Tuple| steer.as_ref().is_none_or(|f| f(t));
        let (events, stats) = (&mut w.events, &mut w.stats);
        let mut reclaimed = |dead: Listed| {
            stats.expired += 1;
            events.push(EventKind::Destroy, now_ms, &dead);
        };
        let mut search = alloc::Search {
            table: g,
            home,
            now_ms,
            rng: &mut w.rng,
            accept: &accept,
            reclaimed: &mut reclaimed,
            claimed: None,
            map: None,
            slot: w.slot,
            prefetch: P::read,
            ahead,
            seed,
        };
        let r = alloc::snat(&mut search, c, rule, egress.addr);
        w.claimed = search.claimed;
        w.reply_steering = steer;
        match r {
            Ok(()) => {
                rule.hits.add(w.slot, 1);
                let memo = Some(super::SnatMemo {
                    rule: index,
                    in_port,
                    out_port: egress.port,
                    out_addr: egress.addr,
                });
                w.ahead.memo = memo;
                // The translation is complete: its checksum deltas serve
                // this first packet's rewrite too (not only the next ones').
                c.nat_csum = crate::nat::rewrite::csum_deltas(c);
                Translation::write_for_packet(&mut res.rewrite, c, Dir::Orig, false);
                true
            }
            Err(_) => {
                w.nat_out_of_ports += 1;
                res.ct_drop = Some("nat_out_of_ports");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    #[test]
    fn expired_connections_free_their_nat_ports() {
        use crate::nat::{self, Action, Nat, Rule};
        // masquerade to :20000-20001: two ports; UDP flows unreplied live 30 s.
        let rule = Rule::new(
            "tiny".into(),
            nat::Match::default(),
            Action::Masquerade {
                ports: Some((20000, 20001)),
                random: false,
            },
        );
        let e = Engine::with_nat(
            EngineConfig {
                capacity_conns: 1000,
                seed: 1,
                tunables: Tunables::default(),
            },
            Some(Nat {
                rules: vec![rule],
                pools: vec![],
            }),
        );
        let mut w = e.worker(16);
        let out = Decision::Accept(Egress {
            port: 1,
            addr: Some(Addr::from_v4([198, 51, 100, 1])),
            mark: None,
            helper: Helper::None,
            cache: 0,
        });
        let udp = udp_query;
        for sport in [1000, 1001] {
            let r = run(&e, &mut w, 0, &udp(sport), out);
            assert!(r.ct_drop.is_none() && r.rewrite.is_some());
        }
        let r = run(&e, &mut w, 1000, &udp(1002), out);
        assert_eq!(r.ct_drop, Some("nat_out_of_ports"));
        // No GC ran: the two expired connections still sit in the table, and
        // the search reclaims one as the kernel's tuple_taken does.
        let r = run(&e, &mut w, 30_000, &udp(1003), out);
        assert!(r.ct_drop.is_none(), "{:?}", r.ct_drop);
        let port = r.rewrite.unwrap().src().unwrap().1;
        assert!((20000..=20001).contains(&port));
        assert_eq!(w.stats.expired, 1);
        assert_eq!(e.table().len(), 2);
        assert_eq!(w.nat_out_of_ports, 1);
    }

    /// An engine of `capacity` connections with one masquerade rule.
    fn masq_engine<P: Prefetch>(capacity: u32, seed: u64) -> Engine<P> {
        Engine::<P>::build(
            EngineConfig {
                capacity_conns: capacity,
                seed,
                tunables: Tunables::default(),
            },
            Some(crate::nat::Nat {
                rules: vec![masq_rule(None)],
                pools: vec![],
            }),
            1,
            &mut (),
        )
    }

    #[test]
    fn the_next_candidate_prefetched_in_a_large_table_changes_no_choice() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFETCHES: AtomicU64 = AtomicU64::new(0);
        /// Counts prefetches.
        struct Counting;
        impl Prefetch for Counting {
            fn read(_: *const u8) {
                PREFETCHES.fetch_add(1, Ordering::Relaxed);
            }
        }
        // 64 clients, all from source port 5000, to one server: every
        // client after the first finds the original port taken. The same
        // traffic through a table beyond a last-level cache (the search
        // prefetches its next candidate there: 400k records are 77 MB) and
        // through a small one (it does not)
        // gets the same ports: the search's start is the connection's hash.
        fn ports<P: Prefetch>(capacity: u32) -> Vec<u16> {
            let e = masq_engine::<P>(capacity, 5);
            let mut w = e.worker(0);
            (1..=64u8)
                .map(|i| {
                    let f = udp_frame([192, 0, 2, i], S, 5000, 53, b"q");
                    let mut res = [CtResult::default()];
                    e.process_burst(&mut w, 0, &[Pkt::new(&f, 0, 0)], &mut res, |_, _| {
                        out([198, 51, 100, 1])
                    });
                    assert!(res[0].ct_drop.is_none());
                    res[0].rewrite.unwrap().src().unwrap().1
                })
                .collect()
        }
        let small = ports::<crate::table::NoPrefetch>(1000);
        PREFETCHES.store(0, Ordering::Relaxed);
        let large = ports::<Counting>(400_000);
        assert_eq!(large, small);
        assert_eq!(small[0], 5000);
        assert!(small[1..].iter().all(|&p| p >= 1024 && p != 5000));
        // Two per search that found the original port taken, besides the
        // burst's bucket and record prefetches (one and up to three per
        // packet).
        let n = PREFETCHES.load(Ordering::Relaxed);
        assert!(n >= 64 + 2 * 63, "{n} prefetches");
    }

    /// What stage 3 loads ahead for a new connection's source NAT search
    /// (`alloc::anticipate`, from the rule the last connection took) is
    /// what the search then reads: the candidate its bitmap word offers is
    /// the port the connection gets whenever its original port is taken.
    /// And a burst whose new connections are all begun ahead (in two stages
    /// of 32) gets the ports the same packets get one by one.
    #[test]
    fn the_searches_begun_ahead_are_the_searches_that_run() {
        use crate::nat::alloc;
        use crate::table::NoPrefetch;
        let build = || masq_engine::<NoPrefetch>(400_000, 11);
        let nat_addr = Addr::from_v4([198, 51, 100, 1]);
        let frames: Vec<Vec<u8>> = (1..=64u8)
            .map(|i| udp_frame([192, 0, 2, i], S, 5000, 53, b"q"))
            .collect();
        let e = build();
        assert!(e.table().guard().beyond_llc());
        let mut w = e.worker(0);
        let mut one_by_one = Vec::new();
        let mut foreseen = 0;
        for (i, f) in frames.iter().enumerate() {
            let pkt = Pkt::new(f, 0, 0);
            let mut res = [CtResult::default()];
            let guess = {
                let mut g = e.table().guard();
                let Ok(p) = crate::wire::parse(f) else {
                    panic!()
                };
                let t = super::super::track::simple_tuple(&p, 0).unwrap();
                let k = e.table().key(&t);
                let rule = &e.nat.as_ref().unwrap().rules[0];
                alloc::anticipate::<NoPrefetch>(&mut g, rule, Some(nat_addr), &t, k.hash, k.stripe)
                    .map(|a| alloc::anticipate_next::<NoPrefetch>(&mut g, &a, k.stripe))
            };
            e.process_burst(&mut w, 0, &[pkt], &mut res, |_, _| out([198, 51, 100, 1]));
            let port = res[0].rewrite.unwrap().src().unwrap().1;
            if i > 0 {
                // Taken by the first client: the bitmap's choice.
                let loaded = guess.expect("a bitmap once the first port is in use");
                // The original port's candidate (taken), then the bitmap's:
                // their keys are those of the reply tuple with those ports.
                let mut reply = crate::tuple::Tuple {
                    dst: nat_addr,
                    ..super::super::track::simple_tuple(&crate::wire::parse(f).unwrap(), 0)
                        .unwrap()
                        .invert()
                        .unwrap()
                };
                reply.dst_port = 5000;
                let first = loaded.first.expect("the original port");
                assert_eq!(first, e.table().key(&reply));
                let (next, key) = (loaded.next_port, loaded.next.expect("a free port"));
                assert_eq!(next, port, "packet {i}");
                reply.dst_port = port;
                assert_eq!(key, e.table().key(&reply));
                foreseen += 1;
            }
            one_by_one.push(port);
        }
        assert_eq!(foreseen, 63);
        let e = build();
        let mut w = e.worker(0);
        // The first one alone (the rule is not known before), then 63 in a
        // burst.
        let pkts: Vec<Pkt<'_>> = frames.iter().map(|f| Pkt::new(f, 0, 0)).collect();
        let mut res = vec![CtResult::default(); 64];
        e.process_burst(&mut w, 0, &pkts[..1], &mut res[..1], |_, _| {
            out([198, 51, 100, 1])
        });
        e.process_burst(&mut w, 0, &pkts[1..], &mut res[1..], |_, _| {
            out([198, 51, 100, 1])
        });
        let burst: Vec<u16> = res
            .iter()
            .map(|r| r.rewrite.unwrap().src().unwrap().1)
            .collect();
        assert_eq!(burst, one_by_one);
    }

    /// Two source NAT rules, the first for part of the clients: a burst
    /// whose new connections alternate between them, through a table
    /// beyond a last-level cache (their searches begun ahead on the last
    /// connection's rule, the rule and binding taken up from there when
    /// that rule is the first the packet matches) gets each connection the
    /// address and port it gets one by one in a small table.
    #[test]
    fn searches_begun_on_another_rule_take_their_own() {
        use crate::nat::{Match, Prefix};
        let low = Match {
            src: Some(Prefix::parse("192.0.2.0/26").unwrap()),
            ..Match::default()
        };
        let build = |capacity: u32| {
            rules_engine(
                vec![snat_rule(low.clone(), [203, 0, 113, 1]), masq_rule(None)],
                capacity,
                3,
            )
        };
        // Even packets from 192.0.2.1-32 (the first rule), odd ones from
        // 192.0.2.101-132 (only the second); all from port 5000.
        let frames: Vec<Vec<u8>> = (0..64u8)
            .map(|i| {
                let c = if i % 2 == 0 { 1 + i / 2 } else { 101 + i / 2 };
                udp_frame([192, 0, 2, c], S, 5000, 53, b"q")
            })
            .collect();
        let (one_by_one, burst) = one_by_one_and_begun_ahead(&build, &frames);
        // Each gets its own rule's address; the ports are the free ones in
        // the order the connections came (the burst's order differs by the
        // one packet sent first).
        assert_alternating(&one_by_one, &burst, [203, 0, 113, 1], [198, 51, 100, 1]);
        let ports = |v: &[(Addr, u16)]| {
            let mut p: Vec<(Addr, u16)> = v.to_vec();
            p.sort();
            p
        };
        assert_eq!(ports(&burst), ports(&one_by_one));
    }

    /// `snat to ADDR` for what `m` matches.
    fn snat_rule(m: crate::nat::Match, addr: [u8; 4]) -> crate::nat::Rule {
        crate::nat::Rule::new(
            "snat".into(),
            m,
            crate::nat::Action::Snat {
                family: Family::V4,
                addrs: (Addr::from_v4(addr), Addr::from_v4(addr)),
                ports: None,
                random: false,
                persistent: false,
            },
        )
    }

    /// An engine of `capacity` connections with `rules`.
    fn rules_engine(
        rules: Vec<crate::nat::Rule>,
        capacity: u32,
        seed: u64,
    ) -> Engine<crate::table::NoPrefetch> {
        Engine::build(
            EngineConfig {
                capacity_conns: capacity,
                seed,
                tunables: Tunables::default(),
            },
            Some(crate::nat::Nat {
                rules,
                pools: vec![],
            }),
            1,
            &mut (),
        )
    }

    /// Source bindings, one per packet: (address, port).
    type Bindings = Vec<(Addr, u16)>;

    /// One by one, the even packets are bound to `even` and the odd ones to
    /// `odd`; in the burst, each packet to the address it got one by one.
    fn assert_alternating(one_by_one: &Bindings, burst: &Bindings, even: [u8; 4], odd: [u8; 4]) {
        for (i, (addr, _)) in one_by_one.iter().enumerate() {
            let want = if i % 2 == 0 { even } else { odd };
            assert_eq!(*addr, Addr::from_v4(want), "packet {i}");
        }
        let wrong: Vec<usize> = (0..one_by_one.len())
            .filter(|&i| burst[i].0 != one_by_one[i].0)
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
    }

    /// The source bindings `frames` (new UDP connections from the "in"
    /// port) get one by one in a table of 1,000 built by `build`, and in a
    /// table of 400,000 (beyond a last-level cache: their searches begun
    /// ahead), where frame 1 goes first, alone (its rule is then the
    /// guess), and the others after it in one burst.
    fn one_by_one_and_begun_ahead(
        build: &dyn Fn(u32) -> Engine<crate::table::NoPrefetch>,
        frames: &[Vec<u8>],
    ) -> (Bindings, Bindings) {
        let pkts: Vec<Pkt<'_>> = frames.iter().map(|f| Pkt::new(f, 0, 0)).collect();
        let bound = |r: &CtResult| r.rewrite.unwrap().src().unwrap();
        let small = build(1000);
        let mut w = small.worker(0);
        let one_by_one: Vec<(Addr, u16)> = pkts
            .iter()
            .map(|p| {
                let mut res = [CtResult::default()];
                small.process_burst(&mut w, 0, std::slice::from_ref(p), &mut res, |_, _| {
                    out([198, 51, 100, 1])
                });
                bound(&res[0])
            })
            .collect();
        let large = build(400_000);
        assert!(large.table().guard().beyond_llc());
        let mut w = large.worker(0);
        let mut res = [CtResult::default()];
        large.process_burst(&mut w, 0, &pkts[1..2], &mut res, |_, _| {
            out([198, 51, 100, 1])
        });
        let mut burst = vec![bound(&res[0]); pkts.len()];
        let order: Vec<usize> = [0].into_iter().chain(2..pkts.len()).collect();
        let rest: Vec<Pkt<'_>> = order.iter().map(|&i| pkts[i]).collect();
        let mut res = vec![CtResult::default(); rest.len()];
        large.process_burst(&mut w, 0, &rest, &mut res, |_, _| out([198, 51, 100, 1]));
        for (&i, r) in order.iter().zip(&res) {
            burst[i] = bound(r);
        }
        (one_by_one, burst)
    }

    /// Destination NAT before the source NAT rules: a connection whose
    /// destination PREROUTING changed is matched by POSTROUTING on its new
    /// destination, not on the tuple the loads ahead matched. A burst
    /// beyond a last-level cache whose new connections alternate between a
    /// forwarded address and a plain server gets each the rule and
    /// address it gets one by one in a small table.
    #[test]
    fn a_destination_translated_connection_is_matched_on_its_new_destination() {
        use crate::nat::{Action, Match, Prefix, Rule};
        const VIP: [u8; 4] = [198, 51, 100, 80];
        const BACKEND: [u8; 4] = [198, 51, 100, 200];
        let build = |capacity: u32| {
            let fwd = Rule::new(
                "fwd".into(),
                Match {
                    dst: Some(Prefix::parse("198.51.100.80/32").unwrap()),
                    ..Match::default()
                },
                Action::Dnat {
                    family: Family::V4,
                    addr: Addr::from_v4(BACKEND),
                    port: None,
                },
            );
            // Only what goes to the backend (after destination NAT).
            let backend = Match {
                dst: Some(Prefix::parse("198.51.100.200/32").unwrap()),
                ..Match::default()
            };
            rules_engine(
                vec![fwd, snat_rule(backend, [203, 0, 113, 5]), masq_rule(None)],
                capacity,
                4,
            )
        };
        // Even packets to the forwarded address, odd ones to S.
        let frames: Vec<Vec<u8>> = (0..64u8)
            .map(|i| {
                let server = if i % 2 == 0 { VIP } else { S };
                udp_frame([192, 0, 2, 1 + i], server, 5000, 53, b"q")
            })
            .collect();
        let (one_by_one, burst) = one_by_one_and_begun_ahead(&build, &frames);
        // (Packet 1, to S, goes first: the burst's guess is the
        // masquerade rule, which every packet's own tuple matches.)
        assert_alternating(&one_by_one, &burst, [203, 0, 113, 5], [198, 51, 100, 1]);
    }

    /// A directional zone (the original direction in zone 5, replies in
    /// zone 0) beside an undirected one (both in zone 5): the searches of
    /// the first begun ahead in the original's zone find the second's
    /// bitmap and key their candidates there, while the search's are in
    /// the reply's zone. Through a table beyond a last-level cache, every
    /// connection still gets a binding of its own, which its replies reach.
    #[test]
    fn searches_begun_ahead_in_a_directional_zone_claim_findable_replies() {
        use crate::table::NoPrefetch;
        let e = masq_engine::<NoPrefetch>(400_000, 13);
        assert!(e.table().guard().beyond_llc());
        let mut w = e.worker(0);
        // All from port 5000: every one after the first searches.
        let frames: Vec<Vec<u8>> = (1..=33u8)
            .map(|i| udp_frame([192, 0, 2, i], S, 5000, 53, b"q"))
            .collect();
        let mut res = vec![CtResult::default(); 33];
        // The first in zone 5 both ways (a bitmap of zone 5, and the rule
        // to begin the others on), then a burst in zone 5 replied in 0.
        let first = Pkt::new(&frames[0], 5, 0);
        e.process_burst(&mut w, 0, &[first], &mut res[..1], |_, _| {
            out([198, 51, 100, 1])
        });
        let pkts: Vec<Pkt<'_>> = frames[1..]
            .iter()
            .map(|f| Pkt {
                reply_zone: 0,
                ..Pkt::new(f, 5, 0)
            })
            .collect();
        e.process_burst(&mut w, 0, &pkts, &mut res[1..], |_, _| {
            out([198, 51, 100, 1])
        });
        let mut bindings = std::collections::HashSet::new();
        for (i, r) in res.iter().enumerate().skip(1) {
            let (addr, port) = r.rewrite.unwrap().src().unwrap();
            assert!(
                bindings.insert((addr, port)),
                "packet {i}: {addr:?}:{port} twice"
            );
            // The reply reaches its own connection: back to its client.
            let reply = udp_frame(S, addr.v4_octets(), 53, port, b"a");
            let mut back = [CtResult::default()];
            e.process_burst(&mut w, 1, &[Pkt::new(&reply, 0, 1)], &mut back, |_, _| {
                out([192, 0, 2, 1])
            });
            assert_eq!(back[0].ctinfo, CtInfo::EstablishedReply, "packet {i}");
            let client = Addr::from_v4([192, 0, 2, i as u8 + 1]);
            assert_eq!(
                back[0].rewrite.unwrap().dst(),
                Some((client, 5000)),
                "packet {i}"
            );
        }
    }

    #[test]
    fn a_pool_fills_to_its_last_port_and_reuses_what_leaves() {
        use crate::nat::ports::MapKey;
        let e = nat_engine(vec![masq_rule(Some((20000, 20499)))]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let udp = |i: u32, server: [u8; 4]| {
            frame(
                Family::V4,
                Addr::from_v4([192, 0, 2, (i % 250) as u8 + 1]),
                Addr::from_v4(server),
                64,
                L4Spec::Udp {
                    src_port: 1024 + (i / 250) as u16,
                    dst_port: 53,
                    payload: b"q",
                },
            )
        };
        // (The table holds 1000 connections: no early drop here.) Every one
        // of the 500 ports is handed out, the last ones as easily as the
        // first (no search that gives up while a port is free).
        let mut ports = std::collections::HashSet::new();
        for i in 0..500 {
            let r = run(&e, &mut w, 0, &udp(i, S), out(n));
            assert!(r.ct_drop.is_none(), "connection {i}: {:?}", r.ct_drop);
            assert!(ports.insert(r.rewrite.unwrap().src().unwrap().1));
        }
        assert_eq!(w.nat_out_of_ports, 0);
        let key = MapKey {
            family: Family::V4,
            addr: Addr::from_v4(n),
            proto: crate::tuple::IPPROTO_UDP,
            zone: 0,
        };
        let free = |e: &Engine| {
            let mut g = e.table().guard();
            let m = g.ports(0).get(&key).map(|m| m.first_free(20000, 20499));
            m.flatten()
        };
        assert_eq!(free(&e), None, "the bitmap has every port in use");
        // The pool is full towards S: the next connection to S has no port.
        let r = run(&e, &mut w, 0, &udp(500, S), out(n));
        assert_eq!(r.ct_drop, Some("nat_out_of_ports"));
        // Towards another server every port is still usable (only the whole
        // reply tuple must be unique): the kernel's search finds one.
        let r = run(&e, &mut w, 0, &udp(501, [198, 51, 100, 99]), out(n));
        assert!(r.ct_drop.is_none(), "{:?}", r.ct_drop);
        // A connection that leaves gives its port back, and the next new
        // connection gets exactly that port.
        let t = Tuple {
            src: Addr::from_v4([192, 0, 2, 18]),
            dst: Addr::from_v4(S),
            src_port: 1024,
            dst_port: 53,
            proto: crate::tuple::IPPROTO_UDP,
            family: Family::V4,
            zone: 0,
        };
        assert!(e.delete_tuple(&mut w, 0, &t));
        let port = free(&e).expect("the deleted connection's port is free");
        // 500 ports of the pool, and the one towards the other server, which
        // shares one of them: still 500 ports in use, less the deleted one.
        assert_eq!(e.table().nat_ports(0).in_use, 499);
        let r = run(&e, &mut w, 0, &udp(502, S), out(n));
        assert_eq!(r.rewrite.unwrap().src().unwrap().1, port);
        assert_eq!(free(&e), None);
        let used = e.table().nat_ports(0);
        assert_eq!((used.in_use, used.maps, used.overflow), (500, 1, 0));
    }

    #[test]
    fn two_zones_with_the_same_addresses_share_an_outside_port() {
        // Like nft `ct original zone set` on two inside ports: the same
        // client address and port in zones 1 and 2, the replies arriving on
        // an outside port in zone 0.
        let e = nat_engine(vec![masq_rule(None)]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let query = udp(C, S, 5000, 53);
        let mut ports = vec![];
        for zone in [1u16, 2] {
            let mut res = [CtResult::default()];
            let pkt = Pkt {
                reply_zone: 0,
                ..Pkt::new(&query, zone, 0)
            };
            e.process_burst(&mut w, 0, &[pkt], &mut res, |_, _| out(n));
            assert_eq!((res[0].ctinfo, res[0].zone), (CtInfo::New, zone));
            ports.push(res[0].rewrite.unwrap().src().unwrap().1);
        }
        assert_eq!(e.table().len(), 2, "one connection per zone");
        assert_ne!(ports[0], ports[1], "the replies (zone 0) must differ");
        for (zone, port) in [1u16, 2].into_iter().zip(&ports) {
            // The reply, in zone 0, finds its connection and says its zone.
            let reply = udp(S, n, 53, *port);
            let r = run(&e, &mut w, 1, &reply, out(C));
            assert_eq!((r.ctinfo, r.zone), (CtInfo::EstablishedReply, zone));
            assert_eq!(r.rewrite.unwrap().dst(), Some((Addr::from_v4(C), 5000)));
            // And the client's next datagram, in its zone, the same one.
            let mut res = [CtResult::default()];
            let pkt = Pkt {
                reply_zone: 0,
                ..Pkt::new(&query, zone, 0)
            };
            e.process_burst(&mut w, 2, &[pkt], &mut res, |_, _| out(n));
            assert_eq!((res[0].ctinfo, res[0].zone), (CtInfo::Established, zone));
        }
        let mut zones = vec![];
        e.snapshot(3, |c| zones.push((c.tuples[0].zone, c.tuples[1].zone)));
        zones.sort();
        assert_eq!(zones, [(1, 0), (2, 0)]);

        // A connection from the outside (zone 0) to an inside host: its
        // answer, arriving in zone 1, is found by the second lookup, in
        // the reply direction's zone.
        let e = engine(100);
        let mut w = e.worker(0);
        run(
            &e,
            &mut w,
            0,
            &udp(S, C, 6000, 7000),
            Decision::Accept(Egress::NONE),
        );
        let answer = udp(C, S, 7000, 6000);
        let mut res = [CtResult::default()];
        let pkt = Pkt {
            reply_zone: 0,
            ..Pkt::new(&answer, 1, 0)
        };
        e.process_burst(&mut w, 1, &[pkt], &mut res, |_, _| {
            Decision::Accept(Egress::NONE)
        });
        assert_eq!((res[0].ctinfo, res[0].zone), (CtInfo::EstablishedReply, 0));
        assert_eq!(e.table().len(), 1);
    }

    #[test]
    fn masquerade_keeps_the_port_when_free_and_picks_another_on_a_clash() {
        let e = nat_engine(vec![masq_rule(None)]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        // Two clients using the same source port to the same server.
        let a = frame(
            Family::V4,
            Addr::from_v4([192, 0, 2, 10]),
            Addr::from_v4(S),
            64,
            L4Spec::Udp {
                src_port: 5000,
                dst_port: 53,
                payload: b"q",
            },
        );
        let b = frame(
            Family::V4,
            Addr::from_v4([192, 0, 2, 11]),
            Addr::from_v4(S),
            64,
            L4Spec::Udp {
                src_port: 5000,
                dst_port: 53,
                payload: b"q",
            },
        );
        let ra = run(&e, &mut w, 0, &a, out(n));
        let rb = run(&e, &mut w, 0, &b, out(n));
        let pa = ra.rewrite.unwrap().src().unwrap();
        let pb = rb.rewrite.unwrap().src().unwrap();
        assert_eq!(pa, (Addr::from_v4(n), 5000), "the first keeps its port");
        assert_eq!(pb.0, Addr::from_v4(n));
        assert_ne!(pb.1, 5000, "the second gets another");
        assert!(pb.1 >= 1024);
        // The reply to the second comes back to it.
        let reply = frame(
            Family::V4,
            Addr::from_v4(S),
            Addr::from_v4(n),
            64,
            L4Spec::Udp {
                src_port: 53,
                dst_port: pb.1,
                payload: b"a",
            },
        );
        let r = run(&e, &mut w, 1, &reply, out(C));
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        assert_eq!(
            r.rewrite.unwrap().dst(),
            Some((Addr::from_v4([192, 0, 2, 11]), 5000))
        );
    }

    #[test]
    fn dnat_pool_sticks_to_its_backend() {
        use crate::nat::{Action, Backend, Match, Pool, Rule};
        let backends = (0..3)
            .map(|i| {
                Backend::new(
                    Family::V4,
                    Addr::from_v4([198, 51, 100, 10 + i]),
                    Some(8080),
                    1,
                )
            })
            .collect();
        let rule = Rule::new(
            "lb".into(),
            Match {
                dports: Some((80, 80)),
                ..Match::default()
            },
            Action::DnatPool { pool: 0 },
        );
        let cfg = EngineConfig {
            capacity_conns: 10_000,
            seed: 5,
            tunables: Tunables::default(),
        };
        let e = Engine::with_nat(
            cfg,
            Some(Nat {
                rules: vec![rule],
                pools: vec![Pool::new("web".into(), backends)],
            }),
        );
        let mut w = e.worker(0);
        let vip = Addr::from_v4([203, 0, 113, 80]);
        let mut per_backend = [0u32; 3];
        for i in 0..3000u16 {
            let syn = frame(
                Family::V4,
                Addr::from_v4(C),
                vip,
                64,
                L4Spec::Tcp {
                    src_port: 10_000 + i,
                    dst_port: 80,
                    seq: 1,
                    ack: 0,
                    flags: SYN,
                    window: 1000,
                    payload: b"",
                },
            );
            let r = run(&e, &mut w, 0, &syn, out([192, 0, 2, 1]));
            let (b, port) = r.rewrite.unwrap().dst().unwrap();
            assert_eq!(port, 8080);
            per_backend[(b.0[3] - 10) as usize] += 1;
            // A retransmitted SYN of the same connection goes to the same backend.
            let again = run(&e, &mut w, 1, &syn, out([192, 0, 2, 1]));
            assert_eq!(again.rewrite.unwrap().dst().unwrap().0, b);
        }
        for n in per_backend {
            assert!((800..=1200).contains(&n), "{per_backend:?}");
        }
    }

    #[test]
    fn endpoint_independent_mapping_and_filtering() {
        let mut rule = masq_rule(None);
        rule.m.out_port = Some(1);
        rule.endpoint_independent = true;
        let inward = Decision::Accept(Egress {
            port: 0,
            addr: Some(Addr::from_v4([192, 0, 2, 1])),
            mark: None,
            helper: Helper::None,
            cache: 0,
        });
        let e = nat_engine(vec![rule]);
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let udp = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16| {
            frame(
                Family::V4,
                Addr::from_v4(src),
                Addr::from_v4(dst),
                64,
                L4Spec::Udp {
                    src_port: sport,
                    dst_port: dport,
                    payload: b"x",
                },
            )
        };
        let inside_e = [192, 0, 2, 10];
        let inside_f = [192, 0, 2, 11];
        let r = run(
            &e,
            &mut w,
            0,
            &udp(inside_e, 5000, [198, 51, 100, 20], 53),
            out(n),
        );
        assert_eq!(
            r.rewrite.unwrap().src(),
            Some((Addr::from_v4(n), 5000)),
            "port preserved"
        );
        // Another inside endpoint may not take the mapped port, even to another server.
        let r = run(
            &e,
            &mut w,
            0,
            &udp(inside_f, 5000, [198, 51, 100, 21], 53),
            out(n),
        );
        let f_port = r.rewrite.unwrap().src().unwrap().1;
        assert_ne!(f_port, 5000);
        // The same inside endpoint keeps its outside port for every destination.
        let r = run(
            &e,
            &mut w,
            1,
            &udp(inside_e, 5000, [198, 51, 100, 21], 53),
            out(n),
        );
        assert_eq!(r.rewrite.unwrap().src(), Some((Addr::from_v4(n), 5000)));
        // Any outside host may send to the mapping (endpoint-independent filtering).
        let r = run(
            &e,
            &mut w,
            2,
            &udp([198, 51, 100, 99], 7777, n, 5000),
            inward,
        );
        assert_eq!(r.ctinfo, CtInfo::New);
        assert!(r.dnat());
        assert_eq!(
            r.rewrite.unwrap().dst(),
            Some((Addr::from_v4(inside_e), 5000))
        );
        // A port nobody maps stays untranslated.
        let r = run(
            &e,
            &mut w,
            2,
            &udp([198, 51, 100, 99], 7777, n, 6000),
            inward,
        );
        assert!(r.rewrite.is_none());
        // The mapping lives while a connection through it does, however long:
        // inside_e keeps talking to one server for longer than EIM_TIMEOUT_MS.
        let timeout = crate::nat::EIM_TIMEOUT_MS;
        let mut now = 2;
        while now < timeout + 100_000 {
            now += 20_000;
            e.expire(&mut w, now, None, usize::MAX);
            let r = run(
                &e,
                &mut w,
                now,
                &udp(inside_e, 5000, [198, 51, 100, 20], 53),
                out(n),
            );
            assert_eq!(r.rewrite.unwrap().src(), Some((Addr::from_v4(n), 5000)));
        }
        let r = run(
            &e,
            &mut w,
            now,
            &udp([198, 51, 100, 97], 7777, n, 5000),
            inward,
        );
        assert_eq!(
            r.rewrite.unwrap().dst(),
            Some((Addr::from_v4(inside_e), 5000)),
            "still mapped after {now} ms: a connection holds it"
        );
        // Each expiry sweeps SWEEP slots of the mappings: enough more
        // calls (at this time, which keeps inside_e's connection) to pass
        // every slot, wherever the hash put inside_f's.
        for _ in 0..1024 {
            e.expire(&mut w, now, None, usize::MAX);
        }
        let held = |e: &Engine| e.table().eim_usage(0).mappings;
        assert_eq!(
            held(&e),
            1,
            "inside_e's; inside_f's lapsed EIM_TIMEOUT_MS after its one connection"
        );
        // Once the last connection through it is gone (expired at about
        // now + 30 s, UDP's stream timeout), it lasts EIM_TIMEOUT_MS more.
        let gone = now + 190_000;
        e.expire(&mut w, gone, None, usize::MAX);
        assert_eq!(e.table().len(), 0);
        let r = run(
            &e,
            &mut w,
            gone,
            &udp([198, 51, 100, 96], 7777, n, 5000),
            inward,
        );
        assert!(r.dnat(), "within EIM_TIMEOUT_MS of the last connection");
        let lapsed = gone + 30_000 + timeout + 1;
        for _ in 0..64 {
            e.expire(&mut w, lapsed, None, usize::MAX);
        }
        assert_eq!(held(&e), 0, "lapsed mappings are swept");
        let r = run(
            &e,
            &mut w,
            lapsed,
            &udp([198, 51, 100, 98], 7777, n, 5000),
            inward,
        );
        assert!(r.rewrite.is_none(), "lapsed");
        assert_eq!(e.table().eim_usage(0).full, 0);
    }

    #[test]
    fn endpoint_independent_mappings_are_bounded() {
        let mut rule = masq_rule(None);
        rule.m.out_port = Some(1);
        rule.endpoint_independent = true;
        let e = nat_engine(vec![rule]);
        let limit = e.table().eim_limit() as u64;
        assert_eq!(limit, 256, "a quarter of 1000 connections, at least 256");
        let mut w = e.worker(0);
        let n = [203, 0, 113, 1];
        let mut translated = 0;
        for i in 0..400u16 {
            let f = frame(
                Family::V4,
                Addr::from_v4([192, 0, 2, 10]),
                Addr::from_v4([198, 51, 100, 20]),
                64,
                L4Spec::Udp {
                    src_port: 10_000 + i,
                    dst_port: 53,
                    payload: b"x",
                },
            );
            let r = run(&e, &mut w, 0, &f, out(n));
            translated += u64::from(r.rewrite.is_some_and(|rw| rw.src().is_some()));
        }
        assert_eq!(translated, 400, "every connection is translated");
        let u = e.table().eim_usage(0);
        assert_eq!(u.mappings, limit);
        assert_eq!(u.full, 400 - limit, "each refusal counted");
        // Connections without a mapping hold none: removing all leaves the
        // mappings idle (not negative), and they lapse.
        e.expire(&mut w, 31_000, None, usize::MAX);
        assert_eq!(e.table().len(), 0);
        let later = 31_000 + crate::nat::EIM_TIMEOUT_MS;
        for _ in 0..64 {
            e.expire(&mut w, later, None, usize::MAX);
        }
        assert_eq!(e.table().eim_usage(0).mappings, 0);
    }
}
