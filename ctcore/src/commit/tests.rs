//! Committing learnt connections: what the backup of an HA pair does at
//! takeover, checked by the packets that follow it.

use super::*;
use crate::conn::CtInfo;
use crate::engine::{CtResult, Decision, Egress, EngineConfig, Pkt, Tunables};
use crate::nat::{Action, Match, Nat, Rule};
use crate::tuple::{Addr, Dir, Family, IPPROTO_UDP};
use crate::wire::build::{frame, L4Spec};
use crate::wire::tcp_flags::{ACK, PSH};

const C: [u8; 4] = [192, 0, 2, 10];
const S: [u8; 4] = [198, 51, 100, 20];
const N: [u8; 4] = [203, 0, 113, 1];

fn masq_engine() -> Engine {
    Engine::with_nat(
        EngineConfig {
            capacity_conns: 1000,
            seed: 3,
            tunables: Tunables::default(),
        },
        Some(Nat {
            rules: vec![Rule::new(
                "masq".into(),
                Match::default(),
                Action::Masquerade {
                    ports: Some((40000, 40001)),
                    random: false,
                },
            )],
            pools: vec![],
        }),
    )
}

fn out(addr: [u8; 4]) -> Decision {
    Decision::Accept(Egress {
        port: 1,
        addr: Some(Addr::from_v4(addr)),
        mark: None,
        helper: crate::helper::Helper::None,
        cache: 0,
    })
}

fn run(e: &Engine, w: &mut Worker, now: u64, f: &[u8], d: Decision) -> CtResult {
    let mut res = [CtResult::default()];
    e.process_burst(w, now, &[Pkt::new(f, 0, 0)], &mut res, |_, _| d);
    res[0]
}

fn tuple(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> Tuple {
    Tuple {
        src: Addr::from_v4(src),
        dst: Addr::from_v4(dst),
        src_port: sport,
        dst_port: dport,
        proto,
        family: Family::V4,
        zone: 0,
    }
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
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
}

fn tcp(from_client: bool, seq: u32, ack: u32, window: u16) -> Vec<u8> {
    let (s, d, sp, dp) = if from_client {
        (C, S, 33000, 80)
    } else {
        (S, N, 80, 40000)
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
            flags: ACK | PSH,
            window,
            payload: &[1; 100],
        },
    )
}

/// C:5000 -> S:53 masqueraded to N:40000, as the active box reported it.
fn snat_udp() -> Learnt {
    Learnt {
        orig: tuple(C, S, 5000, 53, IPPROTO_UDP),
        reply: tuple(S, N, 53, 40000, IPPROTO_UDP),
        status: Status::SEEN_REPLY | Status::ASSURED | Status::SRC_NAT | Status::SRC_NAT_DONE,
        mark: 7,
        timeout_ms: 120_000,
        state: LearntState::None,
    }
}

#[test]
fn a_committed_snat_connection_carries_both_directions_and_holds_its_port() {
    let e = masq_engine();
    let mut w = e.worker(16);
    e.commit(&mut w, 1000, &snat_udp()).expect("committed");
    let mut events = vec![];
    w.events.drain(|ev| events.push(ev));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::New);
    let c = events[0].conn;
    assert!(c.status.has(Status::CONFIRMED) && c.status.has(Status::ASSURED));
    assert_eq!(c.mark, 7);
    assert_eq!(c.deadline_ms, 121_000);

    // The server's answer to the NAT address is the connection's reply,
    // translated back to the client.
    let r = run(&e, &mut w, 2000, &udp(S, N, 53, 40000), out(C));
    assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
    assert_eq!(r.rewrite.unwrap().dst(), Some((Addr::from_v4(C), 5000)));
    // The client's next datagram leaves with the committed binding.
    let r = run(&e, &mut w, 2001, &udp(C, S, 5000, 53), out(N));
    assert_eq!(r.ctinfo, CtInfo::Established);
    assert_eq!(r.rewrite.unwrap().src(), Some((Addr::from_v4(N), 40000)));

    // Another client's connection to the same server and port may not take
    // port 40000: the pool's other port is what is left.
    let other = [192, 0, 2, 11];
    let r = run(&e, &mut w, 2002, &udp(other, S, 5000, 53), out(N));
    assert_eq!(r.ctinfo, CtInfo::New);
    assert_eq!(r.rewrite.unwrap().src(), Some((Addr::from_v4(N), 40001)));
    // And a third finds the pool used up rather than a clash.
    let third = [192, 0, 2, 12];
    let r = run(&e, &mut w, 2003, &udp(third, S, 5000, 53), out(N));
    assert!(r.ct_drop.is_some(), "no port left: {r:?}");
}

#[test]
fn a_committed_tcp_connection_takes_segments_from_the_middle_of_the_stream() {
    let e = masq_engine();
    let mut w = e.worker(0);
    let learnt = Learnt {
        orig: tuple(C, S, 33000, 80, IPPROTO_TCP),
        reply: tuple(S, N, 80, 40000, IPPROTO_TCP),
        status: Status::SEEN_REPLY | Status::ASSURED | Status::SRC_NAT | Status::SRC_NAT_DONE,
        mark: 0,
        timeout_ms: 432_000_000,
        state: LearntState::Tcp {
            state: TcpConntrack::Established,
            wscale: [7, 7],
        },
    };
    e.commit(&mut w, 0, &learnt).unwrap();
    // Sequence numbers the backup never saw, in both directions, with
    // scaled windows: all in window.
    for i in 0..20u32 {
        let r = run(
            &e,
            &mut w,
            10 + u64::from(i),
            &tcp(false, 5_000_000 + i * 100, 9_000_000, 500),
            out(C),
        );
        assert_eq!(
            r.ctinfo,
            CtInfo::EstablishedReply,
            "reply segment {i}: {r:?}"
        );
        let r = run(
            &e,
            &mut w,
            10 + u64::from(i),
            &tcp(true, 9_000_000, 5_000_000 + (i + 1) * 100, 500),
            out(N),
        );
        assert_eq!(r.ctinfo, CtInfo::Established, "original segment {i}: {r:?}");
        assert_eq!(r.rewrite.unwrap().src(), Some((Addr::from_v4(N), 40000)));
    }
    // Liberal, as conntrackd commits: a segment far outside what the
    // backup has seen since is not INVALID either (a window the active box
    // knew and the backup never learnt).
    let r = run(
        &e,
        &mut w,
        50,
        &tcp(false, 900_000_000, 9_000_000, 500),
        out(C),
    );
    assert_eq!(r.ctinfo, CtInfo::EstablishedReply, "{r:?}");
    let mut state = None;
    e.snapshot(100, |c| state = c.state_name());
    assert_eq!(state, Some("ESTABLISHED"));
}

#[test]
fn a_live_holder_of_a_tuple_refuses_the_commit_and_an_expired_one_gives_way() {
    let e = masq_engine();
    let mut w = e.worker(16);
    e.commit(&mut w, 0, &snat_udp()).unwrap();
    assert_eq!(e.commit(&mut w, 1, &snat_udp()), Err(CommitError::Exists));
    // The same reply tuple under another original: still a clash.
    let mut other = snat_udp();
    other.orig.src_port = 5001;
    assert_eq!(e.commit(&mut w, 1, &other), Err(CommitError::Exists));
    // Once the first has expired, the second takes its place.
    e.commit(&mut w, 200_000, &other)
        .expect("the expired holder gives way");
    assert_eq!(e.table().len(), 1);
    let mut events = vec![];
    w.events.drain(|ev| events.push(ev.kind));
    assert_eq!(events, [EventKind::New, EventKind::Destroy, EventKind::New]);
}

#[test]
fn what_is_not_a_connection_is_refused_with_its_reason() {
    let e = masq_engine();
    let mut w = e.worker(0);
    // A reply tuple that is not the original's inversion, with no NAT said.
    let mut bad = snat_udp();
    bad.status = Status::ASSURED;
    assert!(matches!(
        e.commit(&mut w, 0, &bad),
        Err(CommitError::Invalid(_))
    ));
    // Tuples of two protocols.
    let mut bad = snat_udp();
    bad.reply.proto = IPPROTO_TCP;
    assert!(matches!(
        e.commit(&mut w, 0, &bad),
        Err(CommitError::Invalid(_))
    ));
    // TCP state on UDP.
    let mut bad = snat_udp();
    bad.state = LearntState::Tcp {
        state: TcpConntrack::Established,
        wscale: [0, 0],
    };
    assert!(matches!(
        e.commit(&mut w, 0, &bad),
        Err(CommitError::Invalid(_))
    ));
    assert_eq!(e.table().len(), 0);
}

#[test]
fn status_bits_a_create_may_not_set_are_dropped_and_nat_bits_follow_the_tuples() {
    let mut l = snat_udp();
    l.reply = l.orig.invert().unwrap();
    l.status = u32::MAX;
    let c = l.to_conn(0).unwrap();
    assert_eq!(
        c.status.0,
        (LEARNT_STATUS | Status::CONFIRMED)
            & !(Status::SRC_NAT | Status::DST_NAT | Status::SRC_NAT_DONE | Status::DST_NAT_DONE)
    );
    assert!(!c.status.has(Status::EIM | Status::DYING));
    assert_eq!(c.tuple(Dir::Reply), &l.reply);
}

#[test]
fn what_a_box_reports_of_a_connection_commits_to_the_same_connection() {
    let e = masq_engine();
    let mut w = e.worker(0);
    e.commit(&mut w, 0, &snat_udp()).unwrap();
    let mut conns = vec![];
    e.snapshot(500, |c| conns.push(*c));
    let reported = Learnt::of(&conns[0], 500);
    assert_eq!(
        reported,
        Learnt {
            timeout_ms: 119_500,
            ..snat_udp()
        }
    );
    let again = reported.to_conn(500).unwrap();
    assert_eq!(again.tuples, conns[0].tuples);
    assert_eq!(again.deadline_ms, conns[0].deadline_ms);
    assert_eq!(again.status, conns[0].status);
}

#[test]
fn kernel_state_numbers_name_the_same_states() {
    for n in 0..=9u8 {
        assert_eq!(TcpConntrack::from_number(n).map(|s| s as u8), Some(n));
    }
    assert_eq!(TcpConntrack::from_number(10), None);
    assert_eq!(
        TcpConntrack::from_number(3),
        Some(TcpConntrack::Established)
    );
    for n in 0..=8u8 {
        assert_eq!(SctpConntrack::from_number(n).map(|s| s as u8), Some(n));
    }
    assert_eq!(SctpConntrack::from_number(9), None);
}

#[test]
fn a_connection_goes_through_conntrackds_format_and_commits_unchanged() {
    for l in [
        snat_udp(),
        Learnt {
            orig: tuple(C, S, 33000, 80, IPPROTO_TCP),
            reply: tuple(S, N, 80, 40000, IPPROTO_TCP),
            status: Status::SEEN_REPLY | Status::ASSURED | Status::SRC_NAT | Status::SRC_NAT_DONE,
            mark: 0,
            timeout_ms: 431_999_000,
            state: LearntState::Tcp {
                state: TcpConntrack::TimeWait,
                wscale: [7, 2],
            },
        },
    ] {
        let mut bytes = Vec::new();
        crate::sync::Message {
            seq: 1,
            hello: 0,
            body: crate::sync::Body::Ct {
                event: crate::sync::CtEvent::New,
                conn: l.to_sync(),
            },
        }
        .emit(&mut bytes)
        .unwrap();
        let got: Vec<_> = crate::sync::messages(&bytes).collect();
        let Ok(crate::sync::Message {
            body: crate::sync::Body::Ct { conn, .. },
            ..
        }) = got[0]
        else {
            panic!("{got:?}")
        };
        assert_eq!(Learnt::from_sync(&conn), l);
    }
}
