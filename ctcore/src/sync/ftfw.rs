//! conntrackd's reliability protocols as pure logic: FTFW (`src/sync-ftfw.c`)
//! and NOTRACK (`src/sync-notrack.c`). No sockets and no clock: the caller
//! feeds received datagrams and the time in milliseconds, and sends what
//! [`Endpoint::poll_transmit`] fills in.
//!
//! FTFW, as conntrackd runs it:
//! - Every message (state or control) takes the next sequence number.
//!   State messages and ACK/NACK/RESYNC go to the resend queue once sent;
//!   ALIVE does not.
//! - The receiver tracks the peer's sequence. In order: every
//!   `ack_window` messages it sends `ACK(first..=last)`. A gap: it ACKs what
//!   came before, sends `NACK(expected..=seq-1)` and goes on from `seq`
//!   (there is no reordering: state messages are idempotent, the latest wins).
//!   An older sequence number is dropped (a duplicate or a late message).
//! - ACK removes the range from the resend queue; NACK moves it to the
//!   transmit queue, where a connection is sent again with its current state
//!   under a new sequence number.
//! - A connection is in the queues at most once: a new state for one already
//!   waiting to go out replaces it; one awaiting an ACK leaves the resend
//!   queue for the transmit queue.
//! - When nothing was sent for `alive_interval_ms` (conntrackd: 1 s), an
//!   `ACK` of what was received since the last one goes out, or an `ALIVE`.
//! - HELLO: a sender flags its messages HELLO until a message from the peer
//!   carries HELLO_BACK; a receiver that sees HELLO takes the sequence as is
//!   (a restarted peer), empties its resend queue (the peer knows nothing of
//!   it) and flags its next message HELLO_BACK.
//! - RESYNC asks the peer for its whole table ([`Event::ResyncRequested`]:
//!   the caller answers with [`Endpoint::send_table`]).
//!
//! NOTRACK sends state and ALIVE messages without ACKs or a resend queue; a
//! receiver still tracks the sequence (counting gaps) and answers RESYNC.

use std::collections::{HashMap, VecDeque};

use super::wire::{flags, messages, Body, CtEvent, Message, SyncConn, MAX_CT_MSG_LEN};
use super::{seq_after, seq_before};
use crate::tuple::Tuple;

/// Reliability protocol (conntrackd's `Sync { Mode ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ftfw,
    Notrack,
}

/// Settings of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Messages received in order between two ACKs (`ACKWindowSize`, 300).
    pub ack_window: u32,
    /// Entries the resend queue holds (`ResendQueueSize`, 131072); when full
    /// the oldest is dropped and counted lost.
    pub resend_queue_entries: usize,
    /// Idle time after which an ACK or ALIVE goes out (conntrackd: 1 s).
    pub alive_interval_ms: u64,
    /// Silence from the peer after which it is taken for dead.
    pub alive_timeout_ms: u64,
    /// Largest datagram payload [`Endpoint::poll_transmit`] fills (1472 for
    /// a 1500-byte MTU under IPv4 and UDP headers).
    pub max_datagram_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Ftfw,
            ack_window: 300,
            resend_queue_entries: 131_072,
            alive_interval_ms: 1000,
            alive_timeout_ms: 3000,
            max_datagram_bytes: 1472,
        }
    }
}

/// Counters of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Messages sent (state and control, retransmissions included).
    pub sent: u64,
    /// Datagrams [`Endpoint::poll_transmit`] filled.
    pub datagrams_sent: u64,
    /// Messages received and accepted (state and control).
    pub received: u64,
    /// Messages sent again on a NACK.
    pub retransmitted: u64,
    /// State messages that can no longer be retransmitted: dropped unacked
    /// from a full resend queue (only a resync recovers them).
    pub lost: u64,
    /// Sequence numbers the peer skipped (NACKed in FTFW).
    pub gaps: u64,
    /// Messages dropped for an old sequence number (duplicates, late).
    pub duplicates: u64,
    /// Resync requests received from the peer.
    pub resyncs: u64,
    /// Resync requests sent to the peer.
    pub resyncs_requested: u64,
    /// Messages that failed to decode or made no sense in this mode.
    pub malformed: u64,
    /// Times the peer fell silent for `alive_timeout_ms`.
    pub alive_timeouts: u64,
}

/// What a received datagram or the passing of time asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The peer's connection changed: apply it to the external cache.
    Ct { event: CtEvent, conn: SyncConn },
    /// The peer wants the whole table: call [`Endpoint::send_table`].
    ResyncRequested,
    /// Nothing heard from the peer for `alive_timeout_ms`.
    PeerSilent,
}

/// A control message waiting to go out or awaiting its ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctl {
    Ack { from: u32, to: u32 },
    Nack { from: u32, to: u32 },
    Resync,
    Alive,
}

impl Ctl {
    fn body(self) -> Body {
        match self {
            Ctl::Ack { from, to } => Body::Ack { from, to },
            Ctl::Nack { from, to } => Body::Nack { from, to },
            Ctl::Resync => Body::Resync,
            Ctl::Alive => Body::Alive,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum TxItem {
    /// A connection; its state is in `Endpoint::tx_conns`.
    Conn(Tuple),
    Ctl(Ctl),
}

#[derive(Debug, Clone, Copy)]
enum RsItem {
    Conn(CtEvent, SyncConn),
    Ctl(Ctl),
}

#[derive(Debug, Clone, Copy)]
struct RsEntry {
    seq: u32,
    item: RsItem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hello {
    Init,
    Say,
    Done,
}

/// One side of a sync channel: sender and receiver at once, as conntrackd is
/// (ACKs and NACKs travel back on the same channel, with sequence numbers of
/// their own).
#[derive(Debug)]
pub struct Endpoint {
    cfg: Config,
    next_seq: u32,
    tx: VecDeque<TxItem>,
    /// The state to send for each connection in `tx`.
    tx_conns: HashMap<Tuple, (CtEvent, SyncConn)>,
    /// Sent, awaiting an ACK, in sending (sequence) order. A connection's
    /// entry is live while `rs_conns` maps it to the entry's sequence number.
    rs: VecDeque<RsEntry>,
    rs_conns: HashMap<Tuple, u32>,
    rs_live: usize,
    hello: Hello,
    say_hello_back: bool,
    last_tx_ms: u64,
    // Receiver.
    last_seq_recv: u32,
    seq_set: bool,
    window: u32,
    ack_from: u32,
    ack_from_set: bool,
    last_rx_ms: u64,
    silent: bool,
    counters: Counters,
}

enum SeqCheck {
    Unset,
    InSync,
    After,
    Before,
}

impl Endpoint {
    /// An endpoint whose first message takes sequence number `initial_seq`
    /// (conntrackd starts from the time of day in seconds); `now_ms` starts
    /// the alive timers.
    pub fn new(cfg: Config, initial_seq: u32, now_ms: u64) -> Endpoint {
        let cfg = Config {
            ack_window: cfg.ack_window.max(1),
            resend_queue_entries: cfg.resend_queue_entries.max(1),
            max_datagram_bytes: cfg.max_datagram_bytes.max(MAX_CT_MSG_LEN),
            ..cfg
        };
        Endpoint {
            cfg,
            next_seq: initial_seq,
            tx: VecDeque::new(),
            tx_conns: HashMap::new(),
            rs: VecDeque::new(),
            rs_conns: HashMap::new(),
            rs_live: 0,
            hello: Hello::Init,
            say_hello_back: false,
            last_tx_ms: now_ms,
            last_seq_recv: 0,
            seq_set: false,
            window: cfg.ack_window.max(1),
            ack_from: 0,
            ack_from_set: false,
            last_rx_ms: now_ms,
            silent: false,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Entries awaiting an ACK (always 0 in NOTRACK).
    pub fn resend_queue_len(&self) -> usize {
        self.rs_live
    }

    /// Connections sent and not yet acknowledged (always 0 in NOTRACK).
    pub fn unacked_conns(&self) -> usize {
        self.rs_conns.len()
    }

    /// Messages waiting for [`Endpoint::poll_transmit`].
    pub fn transmit_queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Whether the peer has been silent for `alive_timeout_ms`.
    pub fn peer_silent(&self) -> bool {
        self.silent
    }

    /// Queues a connection's change for the peer. A connection already
    /// waiting to go out is sent once, with this state (a NEW not yet sent
    /// stays a NEW); one awaiting its ACK is sent again.
    pub fn send(&mut self, event: CtEvent, conn: SyncConn) {
        let key = conn.orig;
        if self.rs_conns.remove(&key).is_some() {
            self.rs_live -= 1;
        }
        match self.tx_conns.get_mut(&key) {
            Some(pending) => {
                let event = match (pending.0, event) {
                    (CtEvent::New, CtEvent::Update) => CtEvent::New,
                    (_, e) => e,
                };
                *pending = (event, conn);
            }
            None => {
                self.tx_conns.insert(key, (event, conn));
                self.tx.push_back(TxItem::Conn(key));
            }
        }
    }

    /// Answers a resync request: every connection of the table, as updates.
    pub fn send_table(&mut self, conns: impl IntoIterator<Item = SyncConn>) {
        for c in conns {
            self.send(CtEvent::Update, c);
        }
    }

    /// Asks the peer for its whole table (`conntrackd -n`).
    pub fn request_resync(&mut self) {
        self.counters.resyncs_requested += 1;
        self.tx.push_back(TxItem::Ctl(Ctl::Resync));
    }

    /// Runs the timers: queues an ACK or ALIVE when nothing went out for
    /// `alive_interval_ms`, and reports the peer silent once per silence.
    pub fn tick(&mut self, now_ms: u64) -> Option<Event> {
        if self.tx.is_empty()
            && now_ms.saturating_sub(self.last_tx_ms) >= self.cfg.alive_interval_ms
        {
            // do_alive_alarm: acknowledge what came since the last ACK, or
            // say we are alive.
            let ctl = if self.cfg.mode == Mode::Ftfw && self.ack_from_set && self.seq_set {
                self.ack_from_set = false;
                Ctl::Ack {
                    from: self.ack_from,
                    to: self.last_seq_recv,
                }
            } else {
                Ctl::Alive
            };
            self.tx.push_back(TxItem::Ctl(ctl));
            self.last_tx_ms = now_ms;
        }
        if !self.silent && now_ms.saturating_sub(self.last_rx_ms) >= self.cfg.alive_timeout_ms {
            self.silent = true;
            self.counters.alive_timeouts += 1;
            return Some(Event::PeerSilent);
        }
        None
    }

    fn hello_flags(&mut self) -> u8 {
        if self.cfg.mode == Mode::Notrack {
            return 0;
        }
        let mut f = 0;
        if self.hello == Hello::Init {
            self.hello = Hello::Say;
        }
        if self.hello == Hello::Say {
            f |= flags::HELLO;
        }
        if self.say_hello_back {
            f |= flags::HELLO_BACK;
            self.say_hello_back = false;
        }
        f
    }

    /// Fills `out` (cleared first) with the next datagram: queued messages
    /// back to back up to `max_datagram_bytes`. Returns false, with `out`
    /// empty, when there is nothing to send. Call until it returns false, at
    /// the rate the channel may take.
    pub fn poll_transmit(&mut self, now_ms: u64, out: &mut Vec<u8>) -> bool {
        out.clear();
        while let Some(item) = self.tx.front().copied() {
            if !out.is_empty() && out.len() + MAX_CT_MSG_LEN > self.cfg.max_datagram_bytes {
                break;
            }
            self.tx.pop_front();
            let (body, rs_item) = match item {
                TxItem::Conn(key) => {
                    let Some((event, conn)) = self.tx_conns.remove(&key) else {
                        continue;
                    };
                    (Body::Ct { event, conn }, Some(RsItem::Conn(event, conn)))
                }
                TxItem::Ctl(ctl) => {
                    let keep = !matches!(ctl, Ctl::Alive);
                    (ctl.body(), keep.then_some(RsItem::Ctl(ctl)))
                }
            };
            let seq = self.next_seq;
            let msg = Message {
                seq,
                hello: self.hello_flags(),
                body,
            };
            if msg.emit(out).is_err() {
                // A connection whose reply tuple conntrackd cannot express.
                self.counters.malformed += 1;
                continue;
            }
            self.next_seq = seq.wrapping_add(1);
            self.counters.sent += 1;
            if let (Mode::Ftfw, Some(item)) = (self.cfg.mode, rs_item) {
                self.rs_push(RsEntry { seq, item });
            }
        }
        if out.is_empty() {
            return false;
        }
        self.counters.datagrams_sent += 1;
        self.last_tx_ms = now_ms;
        true
    }

    fn rs_push(&mut self, e: RsEntry) {
        while self.rs_live >= self.cfg.resend_queue_entries {
            // rs_queue_purge_full: the oldest goes, unacknowledged.
            let Some(old) = self.rs.pop_front() else {
                break;
            };
            if self.rs_is_live(&old) {
                self.rs_unlink(&old);
                if matches!(old.item, RsItem::Conn(..)) {
                    self.counters.lost += 1;
                }
            }
        }
        if let RsItem::Conn(_, c) = e.item {
            self.rs_conns.insert(c.orig, e.seq);
        }
        self.rs_live += 1;
        self.rs.push_back(e);
        if self.rs.len() > 2 * self.cfg.resend_queue_entries + 64 {
            let conns = &self.rs_conns;
            self.rs.retain(|e| match e.item {
                RsItem::Conn(_, c) => conns.get(&c.orig) == Some(&e.seq),
                RsItem::Ctl(_) => true,
            });
        }
    }

    fn rs_is_live(&self, e: &RsEntry) -> bool {
        match e.item {
            RsItem::Conn(_, c) => self.rs_conns.get(&c.orig) == Some(&e.seq),
            RsItem::Ctl(_) => true,
        }
    }

    fn rs_unlink(&mut self, e: &RsEntry) {
        if let RsItem::Conn(_, c) = e.item {
            self.rs_conns.remove(&c.orig);
        }
        self.rs_live -= 1;
    }

    /// Takes the entries with a sequence number in `from..=to` out of the
    /// resend queue (stale entries go too).
    fn rs_take(&mut self, from: u32, to: u32) -> Vec<RsEntry> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.rs.len());
        for e in std::mem::take(&mut self.rs) {
            if !self.rs_is_live(&e) {
                continue;
            }
            if seq_before(e.seq, from) || seq_after(e.seq, to) {
                kept.push_back(e);
            } else {
                self.rs_unlink(&e);
                taken.push(e);
            }
        }
        self.rs = kept;
        taken
    }

    fn rs_clear(&mut self) {
        self.rs.clear();
        self.rs_conns.clear();
        self.rs_live = 0;
    }

    /// Takes in one datagram from the peer; the connections and requests in
    /// it are appended to `events`, in order.
    pub fn on_datagram(&mut self, now_ms: u64, datagram: &[u8], events: &mut Vec<Event>) {
        for m in messages(datagram) {
            match m {
                Ok(m) => self.on_message(now_ms, m, events),
                Err(_) => self.counters.malformed += 1,
            }
        }
    }

    fn track_seq(&mut self, seq: u32) -> (SeqCheck, u32) {
        let exp = self.last_seq_recv.wrapping_add(1);
        if !self.seq_set {
            (SeqCheck::Unset, exp)
        } else if seq == exp {
            (SeqCheck::InSync, exp)
        } else if seq_after(seq, exp) {
            (SeqCheck::After, exp)
        } else {
            (SeqCheck::Before, exp)
        }
    }

    fn queue_ctl(&mut self, ctl: Ctl) {
        self.tx.push_back(TxItem::Ctl(ctl));
    }

    fn on_message(&mut self, now_ms: u64, m: Message, events: &mut Vec<Event>) {
        let accepted = match self.cfg.mode {
            Mode::Ftfw => self.on_message_ftfw(m, events),
            Mode::Notrack => self.on_message_notrack(m, events),
        };
        if accepted {
            self.last_rx_ms = now_ms;
            self.silent = false;
        }
    }

    /// Acts on a message's body (`digest_msg`); false if it makes no sense
    /// in this mode.
    fn digest(&mut self, m: &Message, events: &mut Vec<Event>) -> bool {
        match m.body {
            Body::Ct { event, conn } => events.push(Event::Ct { event, conn }),
            Body::Expectation { .. } => {}
            Body::Ack { from, to } if self.cfg.mode == Mode::Ftfw => {
                self.rs_take(from, to);
            }
            Body::Nack { from, to } if self.cfg.mode == Mode::Ftfw => {
                // Taken in sending order, sent again in that order.
                for e in self.rs_take(from, to) {
                    self.counters.retransmitted += 1;
                    match e.item {
                        RsItem::Conn(event, conn) => {
                            // A newer state already queued wins.
                            if !self.tx_conns.contains_key(&conn.orig) {
                                self.send(event, conn);
                            }
                        }
                        RsItem::Ctl(ctl) => self.queue_ctl(ctl),
                    }
                }
            }
            Body::Ack { .. } | Body::Nack { .. } => return false,
            Body::Resync => {
                self.counters.resyncs += 1;
                events.push(Event::ResyncRequested);
            }
            Body::Alive => {}
        }
        true
    }

    fn update_seq(&mut self, seq: u32) {
        self.seq_set = true;
        self.last_seq_recv = seq;
    }

    /// `ftfw_recv`; true if the message was accepted.
    fn on_message_ftfw(&mut self, m: Message, events: &mut Vec<Event>) -> bool {
        let w = self.cfg.ack_window;
        if m.hello & flags::HELLO_BACK != 0 && self.hello == Hello::Say {
            self.hello = Hello::Done;
        }
        let check = if m.hello & flags::HELLO != 0 {
            // digest_hello: a (re)started peer.
            self.say_hello_back = true;
            if self.ack_from_set && seq_before(m.seq, self.ack_from) {
                self.window = w;
                self.ack_from_set = false;
            }
            self.rs_clear();
            SeqCheck::InSync
        } else {
            self.track_seq(m.seq).0
        };
        match check {
            SeqCheck::After => {
                let exp = self.last_seq_recv.wrapping_add(1);
                if !self.digest(&m, events) {
                    self.counters.malformed += 1;
                    return false;
                }
                self.counters.gaps += u64::from(m.seq.wrapping_sub(exp));
                if self.ack_from_set {
                    self.queue_ctl(Ctl::Ack {
                        from: self.ack_from,
                        to: exp.wrapping_sub(1),
                    });
                }
                self.queue_ctl(Ctl::Nack {
                    from: exp,
                    to: m.seq.wrapping_sub(1),
                });
                // This message opens the next window.
                self.ack_from = m.seq;
                self.ack_from_set = true;
                self.window = w;
                self.count_in_window(m.seq);
            }
            SeqCheck::Before => {
                self.counters.duplicates += 1;
                return false;
            }
            SeqCheck::Unset | SeqCheck::InSync => {
                if !self.digest(&m, events) {
                    self.counters.malformed += 1;
                    return false;
                }
                if !self.ack_from_set {
                    self.ack_from = m.seq;
                    self.ack_from_set = true;
                }
                self.count_in_window(m.seq);
            }
        }
        self.counters.received += 1;
        self.update_seq(m.seq);
        true
    }

    /// One more message of the current window; a full window is ACKed.
    fn count_in_window(&mut self, seq: u32) {
        self.window -= 1;
        if self.window == 0 {
            self.queue_ctl(Ctl::Ack {
                from: self.ack_from,
                to: seq,
            });
            self.window = self.cfg.ack_window;
            self.ack_from_set = false;
        }
    }

    /// `notrack_recv`; true if the message was accepted.
    fn on_message_notrack(&mut self, m: Message, events: &mut Vec<Event>) -> bool {
        match self.track_seq(m.seq) {
            (SeqCheck::After, exp) => self.counters.gaps += u64::from(m.seq.wrapping_sub(exp)),
            (SeqCheck::Before, _) => self.counters.duplicates += 1,
            _ => {}
        }
        // notrack_recv takes every message that makes sense, in any order.
        if !self.digest(&m, events) {
            self.counters.malformed += 1;
            return false;
        }
        self.counters.received += 1;
        self.update_seq(m.seq);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::L4State;
    use crate::tuple::{Addr, Family, IPPROTO_UDP};

    fn conn(n: u8) -> SyncConn {
        let orig = Tuple {
            src: Addr::from_v4([192, 0, 2, n]),
            dst: Addr::from_v4([198, 51, 100, 1]),
            src_port: 1000 + u16::from(n),
            dst_port: 53,
            proto: IPPROTO_UDP,
            family: Family::V4,
            zone: 0,
        };
        SyncConn::new(
            orig,
            orig.invert().unwrap(),
            8,
            Some(30),
            None,
            L4State::None,
        )
    }

    fn cfg() -> Config {
        Config {
            ack_window: 300,
            alive_interval_ms: 1000,
            alive_timeout_ms: 3000,
            ..Config::default()
        }
    }

    /// Every datagram `from` has to send.
    fn drain(from: &mut Endpoint, now: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut d = Vec::new();
        while from.poll_transmit(now, &mut d) {
            out.push(d.clone());
        }
        out
    }

    fn deliver(to: &mut Endpoint, now: u64, datagrams: &[Vec<u8>]) -> Vec<Event> {
        let mut ev = Vec::new();
        for d in datagrams {
            to.on_datagram(now, d, &mut ev);
        }
        ev
    }

    fn conns(ev: &[Event]) -> Vec<SyncConn> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Ct { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect()
    }

    /// Two endpoints past the HELLO handshake at t = 2000 ms (while a peer
    /// says HELLO its sequence is taken as it comes, without gap
    /// detection). `a`'s next message takes `seq_a`; `a` holds its one
    /// handshake ACK in its resend queue, `b` none.
    fn pair(c: Config, seq_a: u32) -> (Endpoint, Endpoint) {
        let (mut a, mut b) = (
            Endpoint::new(c, seq_a.wrapping_sub(2), 0),
            Endpoint::new(c, 7, 0),
        );
        a.tick(1000);
        deliver(&mut b, 1000, &drain(&mut a, 1000));
        b.tick(1000);
        deliver(&mut a, 1000, &drain(&mut b, 1000));
        a.tick(2000);
        deliver(&mut b, 2000, &drain(&mut a, 2000));
        assert_eq!((a.hello, b.hello), (Hello::Done, Hello::Done));
        assert_eq!((a.resend_queue_len(), b.resend_queue_len()), (1, 0));
        (a, b)
    }

    fn bodies(d: &[u8]) -> Vec<Body> {
        messages(d).map(|m| m.unwrap().body).collect()
    }

    #[test]
    fn lost_datagram_is_nacked_and_retransmitted() {
        let (mut a, mut b) = pair(cfg(), 100);
        let mut sent = Vec::new();
        for n in 1..=3 {
            a.send(CtEvent::New, conn(n));
            sent.extend(drain(&mut a, 2010));
        }
        assert_eq!(sent.len(), 3);
        // The handshake ACK and three connections await their ACK.
        assert_eq!((a.resend_queue_len(), a.unacked_conns()), (4, 3));
        // The datagram with conn 2 (seq 101) is lost.
        let ev = deliver(&mut b, 2020, &[sent[0].clone(), sent[2].clone()]);
        assert_eq!(conns(&ev), [conn(1), conn(3)]);
        assert_eq!(b.counters().gaps, 1);
        let back = drain(&mut b, 2020);
        assert_eq!(back.len(), 1);
        // What came before the gap (a's handshake ACK, 99, and 100) is
        // acknowledged, the gap NACKed.
        assert_eq!(
            bodies(&back[0]),
            [
                Body::Ack { from: 99, to: 100 },
                Body::Nack { from: 101, to: 101 }
            ]
        );
        // a sends conn 2 again, under a new sequence number.
        assert_eq!(a.resend_queue_len(), 4);
        assert!(deliver(&mut a, 2030, &back).is_empty());
        assert_eq!(a.counters().retransmitted, 1);
        assert_eq!(a.resend_queue_len(), 1);
        // conn 3 awaits its ACK; conn 2 waits to go out again.
        assert_eq!(a.unacked_conns(), 1);
        let again = drain(&mut a, 2030);
        assert_eq!(a.unacked_conns(), 2);
        let m: Vec<Message> = messages(&again[0]).map(|m| m.unwrap()).collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].seq, 103);
        let ev = deliver(&mut b, 2040, &again);
        assert_eq!(conns(&ev), [conn(2)]);
        // b now holds all three; its next ACK covers 102..=103 and empties
        // a's resend queue.
        assert_eq!(b.tick(3100), None);
        let ack = drain(&mut b, 3100);
        assert_eq!(bodies(&ack[0]), [Body::Ack { from: 102, to: 103 }]);
        deliver(&mut a, 3110, &ack);
        assert_eq!(a.resend_queue_len(), 0);
        assert_eq!(a.unacked_conns(), 0);
        assert_eq!(a.counters().lost, 0);
    }

    #[test]
    fn duplicates_are_dropped() {
        let (mut a, mut b) = pair(cfg(), 1);
        a.send(CtEvent::New, conn(1));
        let d = drain(&mut a, 2000);
        let received = b.counters().received;
        assert_eq!(conns(&deliver(&mut b, 2000, &d)), [conn(1)]);
        assert!(deliver(&mut b, 2000, &d).is_empty());
        assert_eq!(b.counters().duplicates, 1);
        assert_eq!(b.counters().received, received + 1);
    }

    #[test]
    fn a_full_window_is_acked_and_trims_the_resend_queue() {
        let c = Config {
            ack_window: 4,
            ..cfg()
        };
        let (mut a, mut b) = pair(c, 0xffff_fffe);
        for n in 1..=6 {
            a.send(CtEvent::Update, conn(n));
        }
        // Six small messages in one datagram; the sequence wraps.
        let d = drain(&mut a, 2000);
        assert_eq!(d.len(), 1);
        assert_eq!(a.resend_queue_len(), 7);
        assert_eq!(conns(&deliver(&mut b, 2000, &d)).len(), 6);
        // b's window of 4 counts on from the handshake (its idle-time ACK
        // does not restart it): one ends at 0xffffffff, the next at 3.
        let back = drain(&mut b, 2000);
        assert_eq!(
            bodies(&back[0]),
            [
                Body::Ack {
                    from: 0xffff_fffd,
                    to: 0xffff_ffff
                },
                Body::Ack { from: 0, to: 3 }
            ]
        );
        deliver(&mut a, 2000, &back);
        assert_eq!(a.resend_queue_len(), 0);
        // Nothing left to acknowledge: b's idle tick says ALIVE.
        assert_eq!(b.tick(2999), None);
        assert!(drain(&mut b, 2999).is_empty());
        b.tick(3000);
        assert_eq!(bodies(&drain(&mut b, 3000)[0]), [Body::Alive]);
        // b's ACKs are acknowledged in turn at a's next idle tick.
        a.tick(4000);
        let back = drain(&mut a, 4000);
        assert!(matches!(bodies(&back[0])[..], [Body::Ack { .. }]));
        deliver(&mut b, 4000, &back);
        assert_eq!(b.resend_queue_len(), 0);
    }

    #[test]
    fn one_message_per_connection_in_the_queues() {
        let (mut a, mut b) = (Endpoint::new(cfg(), 1, 0), Endpoint::new(cfg(), 1, 0));
        let mut c = conn(1);
        a.send(CtEvent::New, c);
        c.timeout_s = Some(29);
        a.send(CtEvent::Update, c);
        assert_eq!(a.transmit_queue_len(), 1);
        let d = drain(&mut a, 0);
        let ev = deliver(&mut b, 0, &d);
        assert_eq!(
            ev,
            [Event::Ct {
                event: CtEvent::New,
                conn: c
            }]
        );
        // Updated while awaiting its ACK: leaves the resend queue.
        a.send(CtEvent::Destroy, c);
        assert_eq!(a.resend_queue_len(), 0);
        assert_eq!(a.transmit_queue_len(), 1);
    }

    #[test]
    fn a_full_resend_queue_drops_the_oldest_as_lost() {
        let c = Config {
            resend_queue_entries: 2,
            ..cfg()
        };
        let mut a = Endpoint::new(c, 1, 0);
        for n in 1..=3 {
            a.send(CtEvent::New, conn(n));
        }
        drain(&mut a, 0);
        assert_eq!(a.resend_queue_len(), 2);
        assert_eq!(a.counters().lost, 1);
        // A NACK for the lost one finds nothing to send.
        let mut nack = Vec::new();
        Message {
            seq: 50,
            hello: 0,
            body: Body::Nack { from: 1, to: 1 },
        }
        .emit(&mut nack)
        .unwrap();
        deliver(&mut a, 0, &[nack]);
        assert_eq!(a.counters().retransmitted, 0);
    }

    #[test]
    fn idle_sends_alive_and_silence_is_reported_once() {
        let (mut a, mut b) = (Endpoint::new(cfg(), 1, 0), Endpoint::new(cfg(), 1, 0));
        assert_eq!(a.tick(1000), None);
        let d = drain(&mut a, 1000);
        assert_eq!(bodies(&d[0]), [Body::Alive]);
        assert!(deliver(&mut b, 1000, &d).is_empty());
        assert_eq!(b.counters().received, 1);
        // b hears nothing more.
        assert_eq!(b.tick(3999), None);
        assert_eq!(b.tick(4000), Some(Event::PeerSilent));
        assert_eq!(b.tick(5000), None);
        assert!(b.peer_silent());
        assert_eq!(b.counters().alive_timeouts, 1);
        a.tick(5000);
        let d = drain(&mut a, 5000);
        deliver(&mut b, 5000, &d);
        assert!(!b.peer_silent());
    }

    #[test]
    fn resync_request_is_answered_with_the_table() {
        let (mut a, mut b) = (Endpoint::new(cfg(), 1, 0), Endpoint::new(cfg(), 1, 0));
        b.request_resync();
        let d = drain(&mut b, 0);
        assert_eq!(deliver(&mut a, 0, &d), [Event::ResyncRequested]);
        assert_eq!(a.counters().resyncs, 1);
        a.send_table((1..=40).map(conn));
        let d = drain(&mut a, 0);
        assert!(d.len() > 1, "40 connections fill more than one datagram");
        assert!(d.iter().all(|d| d.len() <= 1472));
        let got = conns(&deliver(&mut b, 0, &d));
        assert_eq!(got, (1..=40).map(conn).collect::<Vec<_>>());
    }

    #[test]
    fn hello_until_the_peer_answers() {
        let (mut a, mut b) = (Endpoint::new(cfg(), 1, 0), Endpoint::new(cfg(), 1, 0));
        a.send(CtEvent::New, conn(1));
        let d = drain(&mut a, 0);
        assert_eq!(messages(&d[0]).next().unwrap().unwrap().hello, flags::HELLO);
        deliver(&mut b, 0, &d);
        b.tick(1000);
        let back = drain(&mut b, 1000);
        let m = messages(&back[0]).next().unwrap().unwrap();
        assert_eq!(m.hello, flags::HELLO | flags::HELLO_BACK);
        // a restarted peer: b's HELLO makes a take its sequence as it comes
        // and forget what it was waiting for (b's ACK came with it).
        deliver(&mut a, 1000, &back);
        a.send(CtEvent::New, conn(2));
        let d = drain(&mut a, 1000);
        assert_eq!(
            messages(&d[0]).next().unwrap().unwrap().hello,
            flags::HELLO_BACK
        );
    }

    #[test]
    fn notrack_sends_without_acks() {
        let c = Config {
            mode: Mode::Notrack,
            ..cfg()
        };
        let (mut a, mut b) = (Endpoint::new(c, 1, 0), Endpoint::new(c, 1, 0));
        for n in 1..=3 {
            a.send(CtEvent::New, conn(n));
        }
        let d = drain(&mut a, 0);
        assert_eq!(a.resend_queue_len(), 0);
        assert_eq!(messages(&d[0]).next().unwrap().unwrap().hello, 0);
        assert_eq!(conns(&deliver(&mut b, 0, &d)).len(), 3);
        b.tick(1000);
        let back = drain(&mut b, 1000);
        assert_eq!(bodies(&back[0]), [Body::Alive]);
        // An ACK makes no sense here.
        let mut ack = Vec::new();
        Message {
            seq: 2,
            hello: 0,
            body: Body::Ack { from: 1, to: 1 },
        }
        .emit(&mut ack)
        .unwrap();
        deliver(&mut a, 1000, &back);
        deliver(&mut a, 1000, &[ack]);
        assert_eq!(a.counters().malformed, 1);
        assert_eq!(a.counters().received, 1);
    }

    #[test]
    fn malformed_datagrams_are_counted() {
        let mut a = Endpoint::new(cfg(), 1, 0);
        let mut ev = Vec::new();
        a.on_datagram(0, &[0x1a, 0x30, 0x00], &mut ev);
        a.on_datagram(0, &[0xff; 40], &mut ev);
        assert!(ev.is_empty());
        assert_eq!(a.counters().malformed, 2);
        assert_eq!(a.counters().received, 0);
    }
}
