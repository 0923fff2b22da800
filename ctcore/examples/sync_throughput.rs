//! How many conntrackd messages one thread sends, and one receives, over a
//! real UDP socket on loopback: what a resync of a full table costs the
//! control side.
//!
//! `cargo run --release -p ctcore --example sync_throughput [CONNECTIONS] [ftfw|notrack]`
//!
//! The sender walks an engine's table (as the appliance answers a resync:
//! every connection as conntrackd's message, FTFW sequence numbers, resend
//! queue, the receiver's ACKs read back); the receiver decodes every
//! datagram, keeps each connection in its external cache and acknowledges.
//! Both run as fast as they can (the appliance's rate limit is not applied).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ctcore::commit::{Learnt, LearntState};
use ctcore::conn::Status;
use ctcore::engine::{Engine, EngineConfig, Tunables};
use ctcore::proto::tcp::TcpConntrack;
use ctcore::sync::{self, Endpoint, Event};
use ctcore::tuple::{Addr, Family, Tuple, IPPROTO_TCP};

fn tuple(i: u32, reply: bool) -> Tuple {
    let client = Addr::from_v4([192, 0, 2, (i % 250) as u8 + 1]);
    let server = Addr::from_v4([198, 51, 100, ((i / 250) % 250) as u8 + 1]);
    let nat = Addr::from_v4([203, 0, 113, 1]);
    let cport = 1024 + (i / 62_500) as u16;
    let nport = 1024 + (i % 60_000) as u16;
    if reply {
        Tuple {
            src: server,
            dst: nat,
            src_port: 443,
            dst_port: nport,
            proto: IPPROTO_TCP,
            family: Family::V4,
            zone: 0,
        }
    } else {
        Tuple {
            src: client,
            dst: server,
            src_port: cport,
            dst_port: 443,
            proto: IPPROTO_TCP,
            family: Family::V4,
            zone: 0,
        }
    }
}

fn now_ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mode = match std::env::args().nth(2).as_deref() {
        Some("notrack") => sync::Mode::Notrack,
        _ => sync::Mode::Ftfw,
    };
    // A table of source-NATed established TCP connections.
    let e = Engine::new(EngineConfig {
        capacity_conns: n + n / 4,
        seed: 7,
        tunables: Tunables::default(),
    });
    let mut w = e.worker(0);
    for i in 0..n {
        let l = Learnt {
            orig: tuple(i, false),
            reply: tuple(i, true),
            status: Status::SEEN_REPLY | Status::ASSURED | Status::SRC_NAT | Status::SRC_NAT_DONE,
            mark: 0,
            timeout_ms: 432_000_000,
            state: LearntState::Tcp {
                state: TcpConntrack::Established,
                wscale: [7, 7],
            },
        };
        e.commit(&mut w, 0, &l).expect("committed");
    }
    let cfg = sync::Config {
        mode,
        resend_queue_entries: 131_072,
        ..sync::Config::default()
    };
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(8 << 20);
    let (tx_addr, rx_addr) = (tx.local_addr().unwrap(), rx.local_addr().unwrap());
    tx.set_nonblocking(true).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let t0 = Instant::now();
    let receiver = std::thread::spawn(move || {
        let mut ep = Endpoint::new(cfg, 1, now_ms(t0));
        let mut cache: HashMap<Tuple, Learnt> = HashMap::with_capacity(n as usize);
        let (mut buf, mut out, mut events) = (vec![0u8; 65536], Vec::new(), Vec::new());
        let mut first = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while cache.len() < n as usize && Instant::now() < deadline {
            if let Ok((len, _)) = rx.recv_from(&mut buf) {
                first.get_or_insert_with(Instant::now);
                ep.on_datagram(now_ms(t0), &buf[..len], &mut events);
                for ev in events.drain(..) {
                    if let Event::Ct { conn, .. } = ev {
                        cache.insert(conn.orig, Learnt::from_sync(&conn));
                    }
                }
            }
            ep.tick(now_ms(t0));
            while ep.poll_transmit(now_ms(t0), &mut out) {
                let _ = rx.send_to(&out, tx_addr);
            }
        }
        let took = first.map_or(Duration::ZERO, |f| f.elapsed());
        (cache.len(), took, *ep.counters())
    });

    let mut ep = Endpoint::new(cfg, 1_000_000, now_ms(t0));
    let start = Instant::now();
    let mut conns = Vec::with_capacity(n as usize);
    e.snapshot(0, |c| conns.push(Learnt::of(c, 0).to_sync()));
    let walked = start.elapsed();
    ep.send_table(conns);
    let (mut out, mut buf, mut events) = (Vec::new(), vec![0u8; 65536], Vec::new());
    let mut datagrams = 0u64;
    while ep.transmit_queue_len() > 0 {
        while let Ok((len, _)) = tx.recv_from(&mut buf) {
            ep.on_datagram(now_ms(t0), &buf[..len], &mut events);
        }
        if ep.poll_transmit(now_ms(t0), &mut out) {
            loop {
                match tx.send_to(&out, rx_addr) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::yield_now()
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
            datagrams += 1;
        }
    }
    let sent_in = start.elapsed() - walked;
    // The last ACKs and any retransmission the receiver asks for.
    let (received, took, rc) = loop {
        while let Ok((len, _)) = tx.recv_from(&mut buf) {
            ep.on_datagram(now_ms(t0), &buf[..len], &mut events);
        }
        ep.tick(now_ms(t0));
        while ep.poll_transmit(now_ms(t0), &mut out) {
            let _ = tx.send_to(&out, rx_addr);
        }
        if receiver.is_finished() {
            break receiver.join().unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let c = ep.counters();
    println!(
        "{n} connections, {mode:?}: table walked and encoded into messages in {:.1} ms",
        walked.as_secs_f64() * 1e3
    );
    println!(
        "sender:   {} messages in {} datagrams in {:.1} ms: {:.0} messages/s ({} retransmitted, {} lost)",
        c.sent,
        datagrams,
        sent_in.as_secs_f64() * 1e3,
        c.sent as f64 / sent_in.as_secs_f64(),
        c.retransmitted,
        c.lost
    );
    println!(
        "receiver: {received} connections in its cache in {:.1} ms: {:.0} messages/s ({} gaps NACKed, {} malformed)",
        took.as_secs_f64() * 1e3,
        received as f64 / took.as_secs_f64().max(1e-9),
        rc.gaps,
        rc.malformed
    );
}
