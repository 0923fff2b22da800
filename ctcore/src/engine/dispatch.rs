//! Steering between workers: which worker's stripe a frame belongs to when
//! workers share a port without RSS ([`Engine::dispatch`]), and which NAT
//! reply tuples come back to the worker that chose them.

use super::general::quoted_tuple;
use super::track::{packet_tuple, tuple_ports};
use super::Engine;
use crate::table::Prefetch;
use crate::tuple::Tuple;
use crate::wire::{self, Parsed, L4};

/// Says whether a NAT reply tuple would reach this worker (RSS steering).
pub type ReplySteering = Box<dyn Fn(&Tuple) -> bool + Send>;

/// The worker of `workers` that owns table stripe `stripe`: stripes are
/// dealt to the workers round-robin (a table has a power of two of them, at
/// least one per worker), so worker `w` owns `w, w + workers, ...`.
pub fn stripe_owner(stripe: u32, workers: u32) -> u32 {
    stripe % workers.max(1)
}

impl<P: Prefetch> Engine<P> {
    /// Software dispatch, for several workers sharing a port without RSS:
    /// the stripe (one per worker) whose worker should process `frame`,
    /// from the frame alone. Both directions of a connection give the same
    /// stripe (the table's hash is symmetric), and so does a NATed reply
    /// when its port was chosen with [`Engine::reply_steering`]; an ICMP
    /// error goes where the connection it quotes is; all fragments of a
    /// datagram go to one stripe (source, destination, protocol and id:
    /// their reassembly state is per worker). Anything unparsable: stripe 0.
    pub fn dispatch(&self, frame: &[u8], zone: u16) -> u32 {
        if self.table.stripe_count() == 1 {
            return 0;
        }
        // Plain TCP/UDP frames (not fragments, not ICMP): the straight
        // parse `process_burst` itself takes, so the owner's key is the
        // stripe computed here.
        let mut plain = Parsed::default();
        if let Some(ports) = wire::parse_common_into(frame, false, &mut plain) {
            return self.table.key(&packet_tuple(&plain, ports, zone)).stripe;
        }
        let Ok(p) = wire::parse_ip_checked(frame).or_else(|_| wire::parse_l3_of_l4_error(frame))
        else {
            return 0;
        };
        let mut t = packet_tuple(&p, tuple_ports(&p), zone);
        match (p.frag, p.l4) {
            (Some(f), _) => {
                // The low half of the id on both sides: symmetric, like ports.
                t.src_port = f.id as u16;
                t.dst_port = f.id as u16;
            }
            (None, L4::Icmp(ic)) if ic.is_error => {
                if let Some(q) = ic.inner.and_then(|i| quoted_tuple(&i, zone).invert()) {
                    t = q;
                }
            }
            _ => {}
        }
        self.table.key(&t).stripe
    }

    /// The reply steering of worker `worker` of `workers` under
    /// [`Engine::dispatch`] and [`stripe_owner`]: a source-NAT reply tuple
    /// is acceptable only if its replies are dispatched to that worker too.
    pub fn reply_steering(&self, worker: u32, workers: u32) -> ReplySteering {
        let stripes = self.table.stripe_of_fn();
        Box::new(move |t: &Tuple| stripe_owner(stripes(t), workers) == worker)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    /// Software dispatch keeps what belongs together on one stripe: both
    /// directions, ICMP echo and its reply, an ICMP error and the connection
    /// it quotes, every fragment of a datagram; and it spreads connections.
    #[test]
    fn dispatch_keeps_a_connection_on_one_stripe() {
        let e: Engine = Engine::build(
            EngineConfig {
                capacity_conns: 1000,
                seed: 3,
                tunables: Tunables::default(),
            },
            None,
            4,
            &mut (),
        );
        let mut used = [0; 4];
        for sport in 1000..1200u16 {
            let q = udp(C, S, sport, 53);
            let a = udp(S, C, 53, sport);
            let d = e.dispatch(&q, 0);
            assert_eq!(d, e.dispatch(&a, 0), "both directions");
            // The straight parse's stripe is the full parse's.
            let p = wire::parse(&q).unwrap();
            assert_eq!(e.table.key(&packet_tuple(&p, tuple_ports(&p), 0)).stripe, d);
            used[d as usize] += 1;
            let err = port_unreachable(&q[14..14 + 28]);
            assert_eq!(
                e.dispatch(&err, 0),
                d,
                "an ICMP error goes to its connection"
            );
            let echo = |t, src, dst| {
                frame(
                    Family::V4,
                    Addr::from_v4(src),
                    Addr::from_v4(dst),
                    64,
                    L4Spec::Icmp {
                        icmp_type: t,
                        code: 0,
                        id: sport,
                        seq: 1,
                        payload: b"ping",
                    },
                )
            };
            assert_eq!(e.dispatch(&echo(8, C, S), 0), e.dispatch(&echo(0, S, C), 0));
            let mut q = q;
            q[18..20].copy_from_slice(&sport.to_be_bytes());
            let frags: Vec<u32> = fragments(&q, &[16, 32])
                .iter()
                .map(|f| e.dispatch(f, 0))
                .collect();
            assert!(frags.iter().all(|&s| s == frags[0]), "fragments: {frags:?}");
        }
        assert!(used.iter().all(|&n| n > 20), "spread: {used:?}");
        assert_eq!(e.dispatch(&[0u8; 10], 0), 0, "a runt: stripe 0");
    }

    /// With 4 workers over 4 stripes, and with 3 over 4 (worker 0 owns two),
    /// masquerade picks ports whose replies are dispatched back to the
    /// connection's own worker, and the replies find their connections; a
    /// protocol without ports is translated anyway.
    #[test]
    fn steered_masquerade_replies_come_back_to_their_worker() {
        for nw in [4u32, 3] {
            let e: Engine = Engine::build(
                EngineConfig {
                    capacity_conns: 4000,
                    seed: 9,
                    tunables: Tunables::default(),
                },
                Some(Nat {
                    rules: vec![masq_rule(None)],
                    pools: vec![],
                }),
                nw,
                &mut (),
            );
            assert_eq!(e.table().stripe_count(), 4);
            let mut workers: Vec<Worker> = (0..nw)
                .map(|w| {
                    let mut ct = e.worker(0);
                    ct.reply_steering = Some(e.reply_steering(w, nw));
                    ct
                })
                .collect();
            let owner = |f: &[u8]| stripe_owner(e.dispatch(f, 0), nw) as usize;
            let n = [203, 0, 113, 1];
            let mut used = vec![0; nw as usize];
            for sport in 2000..2300u16 {
                let q = udp(C, S, sport, 53);
                let d = owner(&q);
                used[d] += 1;
                let r = run(&e, &mut workers[d], 0, &q, out(n));
                let (a, port) = r.rewrite.unwrap().src().unwrap();
                assert_eq!(a, Addr::from_v4(n));
                let reply = udp(S, n, 53, port);
                assert_eq!(owner(&reply), d, "{nw} workers: port {port} steered");
                let r = run(&e, &mut workers[d], 1, &reply, out(n));
                assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
            }
            assert!(
                used.iter().all(|&u| u > 40),
                "{nw} workers: spread {used:?}"
            );
            // Protocol 253 (experimental: no ports): address-only, not refused.
            let mut g = udp(C, S, 1, 2);
            g[23] = 253;
            g[24..26].fill(0);
            let c = checksum::checksum(&g[14..34]);
            g[24..26].copy_from_slice(&c.to_be_bytes());
            let d = owner(&g);
            let r = run(&e, &mut workers[d], 2, &g, out(n));
            assert!(r.ct_drop.is_none(), "{:?}", r.ct_drop);
            assert_eq!(r.rewrite.unwrap().src().unwrap().0, Addr::from_v4(n));
            assert_eq!(workers.iter().map(|w| w.nat_out_of_ports).sum::<u64>(), 0);
        }
    }

    #[test]
    fn nat_ports_steer_replies_to_the_workers_queue() {
        let key: Vec<u8> = (0..52)
            .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
            .collect();
        let rss = crate::rss::Rss::new(&key, 128, 4);
        let e = nat_engine(vec![masq_rule(None)]);
        for queue in 0..4u16 {
            let mut w = e.worker(0);
            let r2 = rss.clone();
            w.reply_steering = Some(Box::new(move |t: &Tuple| r2.queue(t) == queue));
            for i in 0..50u16 {
                let f = udp_query(3000 + queue * 100 + i);
                let r = run(&e, &mut w, 0, &f, out([203, 0, 113, 1]));
                let (addr, port) = r.rewrite.unwrap().src().unwrap();
                let reply = Tuple {
                    src: Addr::from_v4(S),
                    dst: addr,
                    src_port: 53,
                    dst_port: port,
                    proto: 17,
                    family: Family::V4,
                    zone: 0,
                };
                assert_eq!(
                    rss.queue(&reply),
                    queue,
                    "the reply reaches the worker that saw the original"
                );
            }
        }
    }
}
