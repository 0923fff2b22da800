//! The engine's tests that run a packet's whole way through a burst, and
//! the frames and engines the engine's tests share (the tests of one part
//! sit beside it, in its module).

use super::*;
// What the tests beside each part of the engine share (`use super::super::tests::*`).
pub(super) use super::{CtResult, Decision, Egress, Engine, EngineConfig, Pkt, Tunables, Worker};
pub(super) use crate::checksum;
pub(super) use crate::conn::{CtInfo, Listed, ProtoState, Status};
pub(super) use crate::event::EventKind;
pub(super) use crate::helper::Helper;
pub(super) use crate::nat::Nat;
pub(super) use crate::proto::tcp::TcpConntrack;
pub(super) use crate::tuple::Addr;
pub(super) use crate::tuple::Family;
pub(super) use crate::wire::build::{frame, L4Spec};
pub(super) use crate::wire::tcp_flags::{ACK, FIN, SYN};
pub(super) use crate::wire::{ParseError, L4};

pub(super) const C: [u8; 4] = [192, 0, 2, 10];
pub(super) const S: [u8; 4] = [198, 51, 100, 20];

/// An engine with accounting on (its tests check the counters too).
pub(super) fn engine(cap: u32) -> Engine {
    Engine::new(EngineConfig {
        capacity_conns: cap,
        seed: 1,
        tunables: Tunables {
            accounting: true,
            ..Tunables::default()
        },
    })
}

pub(super) fn tcp(from_client: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let (s, d, sp, dp) = if from_client {
        (C, S, 40000, 80)
    } else {
        (S, C, 80, 40000)
    };
    frame(
        Family::V4,
        Addr::from_v4(s),
        Addr::from_v4(d),
        64,
        L4Spec::Tcp {
            src_port: sp,
            dst_port: dp,
            seq,
            ack,
            flags,
            window: 65535,
            payload,
        },
    )
}

/// A UDP datagram `src`:`sport` -> `dst`:`dport` carrying `payload`.
pub(super) fn udp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    frame(
        Family::V4,
        Addr::from_v4(src),
        Addr::from_v4(dst),
        64,
        L4Spec::Udp {
            src_port: sport,
            dst_port: dport,
            payload,
        },
    )
}

/// A UDP query C:`sport` -> S:53.
pub(super) fn udp_query(sport: u16) -> Vec<u8> {
    udp_frame(C, S, sport, 53, b"q")
}

pub(super) fn run(e: &Engine, w: &mut Worker, now: u64, f: &[u8], d: Decision) -> CtResult {
    let mut out = [CtResult::default()];
    e.process_burst(w, now, &[Pkt::new(f, 0, 0)], &mut out, |_, _| d);
    out[0]
}

pub(super) fn only_conn(e: &Engine) -> Listed {
    let mut v = vec![];
    e.snapshot(0, |c| v.push(*c));
    assert_eq!(v.len(), 1, "exactly one connection");
    v[0]
}

pub(super) fn nat_engine(rules: Vec<crate::nat::Rule>) -> Engine {
    let cfg = EngineConfig {
        capacity_conns: 1000,
        seed: 5,
        tunables: Tunables::default(),
    };
    Engine::with_nat(
        cfg,
        Some(Nat {
            rules,
            pools: vec![],
        }),
    )
}

pub(super) fn masq_rule(ports: Option<(u16, u16)>) -> crate::nat::Rule {
    crate::nat::Rule::new(
        "masq".into(),
        crate::nat::Match::default(),
        crate::nat::Action::Masquerade {
            ports,
            random: false,
        },
    )
}

pub(super) fn out(addr: [u8; 4]) -> Decision {
    Decision::Accept(Egress {
        port: 1,
        addr: Some(Addr::from_v4(addr)),
        mark: None,
        helper: Helper::None,
        cache: 0,
    })
}

/// An ICMP port unreachable from the server S to the client C quoting
/// `quoted` (an IP header and the first 8 bytes after it).
pub(super) fn port_unreachable(quoted: &[u8]) -> Vec<u8> {
    port_unreachable_to(C, quoted)
}

/// The same from S to `dst`.
pub(super) fn port_unreachable_to(dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    frame(
        Family::V4,
        Addr::from_v4(S),
        Addr::from_v4(dst),
        64,
        L4Spec::Icmp {
            icmp_type: 3,
            code: 3,
            id: 0,
            seq: 0,
            payload: quoted,
        },
    )
}

pub(super) fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    udp_frame(src, dst, sport, dport, &[7; 40])
}

/// `f` (IPv4) cut into fragments of 8-byte multiples at `cuts` (payload
/// offsets), each with its header checksum.
pub(super) fn fragments(f: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let (hdr, payload) = (&f[..34], &f[34..]);
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(payload.len());
    bounds
        .windows(2)
        .map(|b| {
            let mut g = hdr.to_vec();
            g.extend_from_slice(&payload[b[0]..b[1]]);
            let more = u16::from(b[1] < payload.len()) << 13;
            g[16..18].copy_from_slice(&((20 + b[1] - b[0]) as u16).to_be_bytes());
            g[20..22].copy_from_slice(&(more | (b[0] / 8) as u16).to_be_bytes());
            g[24..26].fill(0);
            let c = checksum::checksum(&g[14..34]);
            g[24..26].copy_from_slice(&c.to_be_bytes());
            g
        })
        .collect()
}

#[test]
fn handshake_data_teardown() {
    let e = engine(1000);
    let mut w = e.worker(64);
    let r = run(
        &e,
        &mut w,
        0,
        &tcp(true, SYN, 100, 0, b""),
        Decision::Accept(Egress::NONE),
    );
    assert_eq!(r.ctinfo, CtInfo::New);
    assert!(r.conn.is_some());
    let r = run(
        &e,
        &mut w,
        1,
        &tcp(false, SYN | ACK, 500, 101, b""),
        Decision::Accept(Egress::NONE),
    );
    assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
    let r = run(
        &e,
        &mut w,
        2,
        &tcp(true, ACK, 101, 501, b""),
        Decision::Accept(Egress::NONE),
    );
    assert_eq!(r.ctinfo, CtInfo::Established);
    let c = only_conn(&e);
    assert!(c.status.has(Status::ASSURED) && c.status.has(Status::SEEN_REPLY));
    assert!(matches!(c.proto, ProtoState::Tcp(t) if t.state == TcpConntrack::Established));
    run(
        &e,
        &mut w,
        3,
        &tcp(true, FIN | ACK, 101, 501, b""),
        Decision::Accept(Egress::NONE),
    );
    run(
        &e,
        &mut w,
        4,
        &tcp(false, FIN | ACK, 501, 102, b""),
        Decision::Accept(Egress::NONE),
    );
    run(
        &e,
        &mut w,
        5,
        &tcp(true, ACK, 102, 502, b""),
        Decision::Accept(Egress::NONE),
    );
    let c = only_conn(&e);
    assert!(matches!(c.proto, ProtoState::Tcp(t) if t.state == TcpConntrack::TimeWait));
    assert_eq!(c.deadline_ms, 5 + 120_000);
    let ext = c.ext.expect("accounting is on");
    assert_eq!(ext.counters[0].packets, 4);
    assert_eq!(ext.counters[1].packets, 2);
    assert_eq!(ext.counters[0].bytes, 4 * 40);
    assert_eq!(ext.start_ms, 0);
    let mut kinds = vec![];
    let mut states = vec![];
    w.events.drain(|ev| {
        kinds.push(ev.kind);
        states.push(ev.conn.state_name().unwrap());
    });
    assert_eq!(kinds.first(), Some(&EventKind::New));
    assert!(kinds.iter().skip(1).all(|k| *k == EventKind::Update));
    // One UPDATE per state change (and status change), in order.
    assert_eq!(
        states,
        [
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "LAST_ACK",
            "TIME_WAIT"
        ],
        "{kinds:?}"
    );
}

#[test]
fn a_mark_set_by_the_decision_is_the_connections() {
    let e = engine(100);
    let mut w = e.worker(64);
    let marked = |m| {
        Decision::Accept(Egress {
            mark: Some(m),
            ..Egress::NONE
        })
    };
    // Set on the new connection: confirmed with it, its NEW event too.
    let r = run(&e, &mut w, 0, &udp_query(5000), marked(7));
    assert_eq!((r.ctinfo, r.mark), (CtInfo::New, 7));
    assert_eq!(only_conn(&e).mark, 7);
    // The next packets carry it.
    let r = run(
        &e,
        &mut w,
        1,
        &udp_query(5000),
        Decision::Accept(Egress::NONE),
    );
    assert_eq!(r.mark, 7);
    // Set again to the same value: no event; to another: an UPDATE.
    run(&e, &mut w, 2, &udp_query(5000), marked(7));
    run(&e, &mut w, 3, &udp_query(5000), marked(9));
    assert_eq!(only_conn(&e).mark, 9);
    let mut events = vec![];
    w.events.drain(|ev| events.push((ev.kind, ev.conn.mark)));
    assert_eq!(events, [(EventKind::New, 7), (EventKind::Update, 9)]);
    // A dropped packet sets nothing.
    let r = run(&e, &mut w, 4, &udp_query(5001), Decision::Drop);
    assert_eq!(r.mark, 0);
    assert_eq!(e.table().len(), 1);
}

#[test]
fn dropped_first_packet_leaves_nothing() {
    let e = engine(1000);
    let mut w = e.worker(0);
    let r = run(&e, &mut w, 0, &tcp(true, SYN, 100, 0, b""), Decision::Drop);
    assert_eq!(r.ctinfo, CtInfo::New);
    assert!(r.conn.is_none());
    assert!(e.table().is_empty());
    // The server's answer to a SYN nobody saw is INVALID (SYN/ACK cannot start a connection).
    let r = run(
        &e,
        &mut w,
        0,
        &tcp(false, SYN | ACK, 500, 101, b""),
        Decision::Accept(Egress::NONE),
    );
    assert_eq!(r.ctinfo, CtInfo::Invalid);
    assert!(e.table().is_empty());
}

#[test]
fn icmp_error_is_related_to_its_connection() {
    let e = engine(1000);
    let mut w = e.worker(0);
    let udp = udp_query(5000);
    run(&e, &mut w, 0, &udp, Decision::Accept(Egress::NONE));
    let quoted = &udp[14..14 + 28];
    let err = port_unreachable(quoted);
    let r = run(&e, &mut w, 1, &err, Decision::Accept(Egress::NONE));
    assert_eq!(r.ctinfo, CtInfo::RelatedReply);
    // The same error to a third host is INVALID.
    let stray = port_unreachable_to([203, 0, 113, 9], quoted);
    assert_eq!(
        run(&e, &mut w, 1, &stray, Decision::Accept(Egress::NONE)).ctinfo,
        CtInfo::Invalid
    );
    assert_eq!(e.table().len(), 1);
}

#[test]
fn full_table_early_drops_unassured() {
    let e = engine(16);
    let mut w = e.worker(0);
    for i in 0..40u16 {
        let udp = udp_query(1000 + i);
        let r = run(&e, &mut w, 0, &udp, Decision::Accept(Egress::NONE));
        assert!(r.ct_drop.is_none(), "packet {i} dropped: {:?}", r.ct_drop);
    }
    assert_eq!(e.table().len(), 16);
    assert_eq!(w.stats.early_drop, 24);
}

#[test]
fn the_nics_checksum_verdict_stands_in_for_the_software_check() {
    let good = tcp(true, SYN, 100, 0, b"x");
    let mut bad = good.clone();
    bad[14 + 20 + 20] ^= 0xff; // the payload byte changed, the checksum not
    let verdict = |f: &[u8], rx_csum: RxCsum, checksum: bool| {
        let e = Engine::new(EngineConfig {
            capacity_conns: 16,
            seed: 1,
            tunables: Tunables {
                checksum,
                ..Tunables::default()
            },
        });
        let mut w = e.worker(0);
        let mut out = [CtResult::default()];
        let pkt = Pkt {
            rx_csum,
            ..Pkt::new(f, 0, 0)
        };
        e.process_burst(&mut w, 0, &[pkt], &mut out, |_, _| {
            Decision::Accept(Egress::NONE)
        });
        (out[0].ctinfo, out[0].invalid_reason)
    };
    let invalid = (CtInfo::Invalid, Some("bad L4 checksum"));
    assert_eq!(verdict(&good, RxCsum::Unknown, true), (CtInfo::New, None));
    assert_eq!(verdict(&bad, RxCsum::Unknown, true), invalid);
    // CHECKSUM_UNNECESSARY: the NIC checked it, conntrack does not again.
    assert_eq!(verdict(&bad, RxCsum::Good, true), (CtInfo::New, None));
    assert_eq!(verdict(&good, RxCsum::Bad, true), invalid);
    // nf_conntrack_checksum = 0: nothing is checked, whatever the NIC says.
    assert_eq!(verdict(&bad, RxCsum::Unknown, false), (CtInfo::New, None));
    assert_eq!(verdict(&bad, RxCsum::Bad, false), (CtInfo::New, None));
}

#[test]
fn a_malformed_l4_header_is_invalid_but_routed_and_filtered() {
    let e = engine(16);
    let mut w = e.worker(0);
    // A TCP segment cut to 12 bytes of header (IP total length says so).
    let mut f = tcp(true, SYN, 1, 0, b"");
    let total = 20 + 12;
    f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = crate::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.truncate(14 + total);
    assert_eq!(crate::wire::parse(&f).err(), Some(ParseError::TruncatedL4));
    let mut seen = None;
    let mut out = [CtResult::default()];
    e.process_burst(&mut w, 0, &[Pkt::new(&f, 0, 0)], &mut out, |_, r| {
        seen = Some((r.ctinfo, r.parsed.as_ref().map(|p| (p.dst, p.l4)).ok()));
        Decision::Accept(Egress::NONE)
    });
    // The policy is asked (as nft sees `ct state invalid`), with the IP
    // layer to route by; nothing is tracked.
    let (ctinfo, l3) = seen.expect("the policy was asked");
    assert_eq!(ctinfo, CtInfo::Invalid);
    assert_eq!(l3, Some((Addr::from_v4(S), L4::None)));
    assert!(out[0].invalid_reason.is_some());
    assert!(out[0].conn.is_none());
    assert!(e.table().is_empty());
    assert_eq!(w.stats.invalid, 1);
}

#[test]
fn garbage_never_panics() {
    let e = engine(64);
    let mut w = e.worker(0);
    let mut x: u64 = 0x1234_5678;
    for len in 0..400usize {
        let mut f = tcp(true, SYN, 1, 0, &[0u8; 40]);
        f.truncate(len.min(f.len()));
        for b in f.iter_mut().skip(14) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(7) {
                *b = x as u8;
            }
        }
        run(&e, &mut w, len as u64, &f, Decision::Accept(Egress::NONE));
    }
}
