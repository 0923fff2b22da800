//! The sync task: one UDP socket, the local connections' events out, the
//! peer's messages into the external cache, FTFW's timers, the automatic
//! takeover. Runs on the REST runtime (the control lcore's CPU).

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ctcore::commit::Learnt;
use ctcore::event::{Event, EventKind};
use ctcore::sync::{self, CtEvent, Endpoint, SyncConn};
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;

use super::Ha;
use crate::config::sync::{SyncMode, Takeover};
use crate::events::Hub;
use crate::pipeline::Shared;

/// How often the timers run when nothing else wakes the task.
const TICK: Duration = Duration::from_millis(10);
/// Largest datagram payload sent (a 1500-byte MTU under IPv4 and UDP).
const MAX_DATAGRAM: usize = 1472;

/// The socket: bound to `[sync] bind`; for a multicast peer, bound to the
/// group's address and port instead, the group joined on the configured
/// interface, sent from it, and its own messages not looped back.
fn open(
    bind: SocketAddr,
    peer: SocketAddr,
    iface: Option<std::net::Ipv4Addr>,
) -> std::io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    sock.set_reuse_address(true)?;
    if let (SocketAddr::V4(group), Some(ifa)) = (peer, iface) {
        // Multicast: bound to the group and its port, so that only the
        // group's datagrams come (bound to 0.0.0.0, the socket would also
        // take any unicast datagram to the port, and those of every group
        // any socket of the host joined, IP_MULTICAST_ALL: all of them
        // taken as the peer's, since a multicast peer's are accepted from
        // any source). The source address of what it sends is the
        // interface's.
        sock.bind(&SocketAddr::V4(group).into())?;
        sock.join_multicast_v4(group.ip(), &ifa)?;
        sock.set_multicast_if_v4(&ifa)?;
        sock.set_multicast_loop_v4(false)?;
    } else {
        sock.bind(&bind.into())?;
    }
    sock.set_nonblocking(true)?;
    // Room for a resync's burst from the peer.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    UdpSocket::from_std(StdUdpSocket::from(sock))
}

/// The whole table as this box reports it (a resync).
fn table(shared: &Shared, now_ms: u64) -> Vec<SyncConn> {
    let mut v = Vec::new();
    shared.engine.snapshot(now_ms, |c| {
        let s = Learnt::of(c, now_ms).to_sync();
        if s.nat_binding().is_ok() {
            v.push(s);
        }
    });
    v
}

/// A token bucket of messages per second (a tenth of a second's worth of burst).
struct Rate {
    per_s: u64,
    tokens: f64,
    at_ms: u64,
}

impl Rate {
    fn refill(&mut self, now_ms: u64) {
        let per_ms = self.per_s as f64 / 1000.0;
        self.tokens = (self.tokens + (now_ms.saturating_sub(self.at_ms)) as f64 * per_ms)
            .min((self.per_s as f64 / 10.0).max(1.0));
        self.at_ms = now_ms;
    }
}

/// Runs until the runtime stops. A socket that cannot be opened is logged
/// and ends the task (forwarding goes on without sync).
pub async fn run(ha: Arc<Ha>, shared: Arc<Shared>, hub: Arc<Hub>, tsc_hz: u64) {
    let now = || shared.now_ms(tsc_hz);
    let (bind, peer, iface) = match ha.cfg.addrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "sync: not started");
            return;
        }
    };
    let sock = match open(bind, peer, iface) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%bind, error = %e, "sync: cannot open its socket ([sync] bind must be a local address); running without sync");
            return;
        }
    };
    let (mut local, _held) = hub.subscribe_internal(&shared);
    let mode = match ha.cfg.mode {
        SyncMode::Ftfw => sync::Mode::Ftfw,
        SyncMode::Notrack => sync::Mode::Notrack,
    };
    let t0 = now();
    // conntrackd starts its sequence from the time of day (a restarted
    // peer is told apart by HELLO, not by the number).
    let seq0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let mut ep = Endpoint::new(
        sync::Config {
            mode,
            ack_window: 300,
            resend_queue_entries: ha.cfg.resend_queue,
            alive_interval_ms: ha.cfg.alive_interval_ms,
            alive_timeout_ms: ha.cfg.alive_timeout_ms,
            max_datagram_bytes: MAX_DATAGRAM,
        },
        seq0,
        t0,
    );
    // At start: learn what the peer holds, and tell it what this box holds.
    ep.request_resync();
    ep.send_table(table(&shared, t0));
    tracing::info!(%bind, %peer, mode = ?ha.cfg.mode, takeover = ?ha.cfg.takeover, "sync: running");

    let mut rate = Rate {
        per_s: ha.cfg.max_messages_per_second,
        tokens: 1.0,
        at_ms: t0,
    };
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let mut events = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An automatic takeover happens once per silence of the peer.
    let mut taken_over = false;
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    if peer.ip().is_multicast() || from.ip() == peer.ip() {
                        let t = now();
                        ha.counters.datagrams_received.fetch_add(1, Relaxed);
                        ha.last_heard_ms.store(t.max(1), Relaxed);
                        if !ha.peer_alive.swap(true, Relaxed) {
                            tracing::info!(%from, "sync: peer heard");
                        }
                        taken_over = false;
                        ep.on_datagram(t, &buf[..n], &mut events);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "sync: receive failed"),
            },
            e = local.recv() => match e {
                Ok(e) => local_event(&mut ep, &e),
                Err(RecvError::Lagged(n)) => {
                    // Changes lost on the way: tell the peer everything again.
                    ha.counters.events_lost.fetch_add(n, Relaxed);
                    ep.send_table(table(&shared, now()));
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {}
        }
        // Everything else that is ready, without waiting.
        loop {
            match local.try_recv() {
                Ok(e) => local_event(&mut ep, &e),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    ha.counters.events_lost.fetch_add(n, Relaxed);
                    ep.send_table(table(&shared, now()));
                }
                Err(_) => break,
            }
        }
        let t = now();
        if ha.resync_wanted.swap(false, Relaxed) {
            ep.request_resync();
        }
        if let Some(ev) = ep.tick(t) {
            events.push(ev);
        }
        for ev in events.drain(..) {
            match ev {
                sync::Event::Ct { event, conn } => peer_event(&ha, t, event, &conn),
                sync::Event::ResyncRequested => ep.send_table(table(&shared, t)),
                sync::Event::PeerSilent => {
                    ha.peer_alive.store(false, Relaxed);
                    tracing::warn!(
                        silent_ms = ha.cfg.alive_timeout_ms,
                        "sync: the peer fell silent"
                    );
                    if ha.cfg.takeover == Takeover::Auto && !taken_over {
                        taken_over = true;
                        let ha = ha.clone();
                        let shared = shared.clone();
                        let hub = hub.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || ha.commit(&shared, &hub, t)).await;
                    }
                }
            }
        }
        rate.refill(t);
        while rate.tokens >= 1.0 {
            let before = ep.counters().sent;
            if !ep.poll_transmit(t, &mut out) {
                break;
            }
            rate.tokens -= (ep.counters().sent - before) as f64;
            match sock.send_to(&out, peer).await {
                Ok(_) => {}
                Err(e) => {
                    if ha.counters.send_errors.fetch_add(1, Relaxed) == 0 {
                        tracing::warn!(%peer, error = %e, "sync: send failed (counted from now on)");
                    }
                }
            }
        }
        if ep.transmit_queue_len() > 0 && rate.tokens < 1.0 {
            ha.counters.rate_limited.fetch_add(1, Relaxed);
        }
        ha.publish(&ep);
    }
}

/// One of this box's connections changed: the peer hears of it.
fn local_event(ep: &mut Endpoint, e: &Event) {
    let conn = Learnt::of(&e.conn, e.at_ms).to_sync();
    let event = match e.kind {
        EventKind::New => CtEvent::New,
        EventKind::Update => CtEvent::Update,
        EventKind::Destroy => CtEvent::Destroy,
    };
    ep.send(event, conn);
}

/// One of the peer's connections changed: the external cache follows.
fn peer_event(ha: &Ha, now_ms: u64, event: CtEvent, conn: &SyncConn) {
    let mut cache = ha.cache.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        CtEvent::New | CtEvent::Update => {
            if !cache.put(Learnt::from_sync(conn), now_ms) {
                ha.counters.cache_full.fetch_add(1, Relaxed);
            }
        }
        CtEvent::Destroy => {
            cache.remove(&conn.orig);
        }
    }
}
