//! Tracking a packet of a connection: the lookup (an expired entry counts
//! as absent and is reclaimed), the protocol tracker and what its outcome
//! makes of the connection and the packet's ctinfo. Plain packets (TCP / UDP,
//! not fragments: stage 1 found their tuple) take the straight way here; the
//! others go through [`super::general`] first. Before either, a packet of a
//! settled IPv4 connection that its packet leaves as it is (but for the
//! deadline and TCP's window) takes the express way ([`Engine::express`]):
//! the same result from the record's hot line alone.

use super::new_conn::Pending;
use super::packet::{ConnHandle, CtResult, Pkt, RxCsum, Verdict};
use super::{Engine, Tunables, Worker};
use crate::checksum;
use crate::conn::{Conn, CtInfo, Status};
use crate::event::EventKind;
use crate::nat::rewrite::Translation;
use crate::proto::sctp::SctpOutcome;
use crate::proto::tcp::{TcpOutcome, TcpSegment};
use crate::proto::{generic, icmp, udp, Outcome};
use crate::table::record::{self, Compact, ProtoMut, RecMut};
use crate::table::{Guard, Hint, Key, Prefetch, Ref};
use crate::tuple::{Dir, Family, Tuple, IPPROTO_GRE, IPPROTO_UDP, IPPROTO_UDPLITE};
use crate::wire::{self, Parsed, L4};

/// The tuple of packet `p` in `zone` with ports (or what stands for them)
/// `ports`.
#[inline(always)]
pub(super) fn packet_tuple(p: &Parsed, (src_port, dst_port): (u16, u16), zone: u16) -> Tuple {
    Tuple {
        src: p.src,
        dst: p.dst,
        src_port,
        dst_port,
        proto: p.proto,
        family: p.family,
        zone,
    }
}

/// The tuple of a plain (unfragmented TCP/UDP) packet, for stage 1; anything
/// else is worked out in stage 3.
#[inline]
pub(super) fn simple_tuple(p: &Parsed, zone: u16) -> Option<Tuple> {
    if p.frag.is_some() {
        return None;
    }
    let ports = match p.l4 {
        L4::Tcp(t) => (t.src_port, t.dst_port),
        L4::Udp { src_port, dst_port } if p.proto == IPPROTO_UDP => (src_port, dst_port),
        _ => return None,
    };
    Some(packet_tuple(p, ports, zone))
}

/// The ports of a packet's tuple (nf_ct_get_tuple): TCP / UDP / UDP-Lite /
/// SCTP ports (DCCP is generic: 0, as in kernels without its tracker); for ICMP the echo id and `(type << 8) | code`; for
/// GRE version 1 (PPTP) the call id as the destination key (without the
/// helper's key map the source key is 0: gre_keymap_lookup); 0 otherwise.
pub(super) fn tuple_ports(p: &Parsed) -> (u16, u16) {
    match p.l4 {
        L4::Tcp(info) => (info.src_port, info.dst_port),
        L4::Udp { src_port, dst_port }
        | L4::Sctp {
            src_port, dst_port, ..
        } => (src_port, dst_port),
        L4::Icmp(ic) => (ic.id, ((ic.icmp_type as u16) << 8) | ic.code as u16),
        L4::Gre {
            version: 1,
            call_id,
            ..
        } => (0, call_id),
        L4::Gre { .. } | L4::Other | L4::None => (0, 0),
    }
}

/// Conntrack's verdict on a packet's L4 checksum: the NIC's where it
/// checked (counted), else `software()`, unless checking is off
/// (nf_conntrack_checksum=0).
#[inline(always)]
pub(super) fn l4_checksum_verdict(
    w: &mut Worker,
    rx: RxCsum,
    software: impl FnOnce() -> bool,
) -> bool {
    count_checksum(w, rx);
    l4_checksum_ok(&w.tun, rx, software)
}

/// [`l4_checksum_verdict`] without counting.
#[inline(always)]
fn l4_checksum_ok(tun: &Tunables, rx: RxCsum, software: impl FnOnce() -> bool) -> bool {
    match rx {
        RxCsum::Good => true,
        RxCsum::Bad => !tun.checksum,
        RxCsum::Unknown => !tun.checksum || software(),
    }
}

/// Counts a checksum the NIC verified.
#[inline(always)]
fn count_checksum(w: &mut Worker, rx: RxCsum) {
    if rx == RxCsum::Good {
        w.stats.csum_offloaded += 1;
    }
}

impl<P: Prefetch> Engine<P> {
    /// One packet: lookup or create. Fills `res` and, for a new connection,
    /// `pending`: the unconfirmed connection to confirm if the packet is
    /// accepted, or, for a first fragment of an incomplete datagram, to park
    /// until the datagram completes (the slot returned). `key` comes in as
    /// stage 1's key (plain packets) and leaves as the key of the tuple
    /// looked up and not found under this guard (its confirm need not look
    /// again); `hint` is the entry stage 2 saw its signature name.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn track(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: &mut Option<Key>,
        hint: Option<Hint>,
        res: &mut CtResult,
        pending: &mut Pending,
    ) -> Option<usize> {
        // Plain packets (stage 1 found their tuple) inline; the rest apart.
        if key.is_some() {
            if let (Ok(p), mut v) = res.split() {
                self.track_plain(g, w, now_ms, pkt, p, key, hint, &mut v, pending);
                return None;
            }
        }
        self.track_other(g, w, now_ms, pkt, key, res, pending)
    }

    /// The express way for a packet of a settled IPv4 connection, UDP or
    /// TCP, whose record stage 2's hint names: live, without a mark or
    /// helpers, and whose packet changes nothing but the deadline (and
    /// TCP's window edges): an assured UDP stream, or an unreplied one in
    /// its original direction ([`Engine::run_tracker`]'s UDP shortcut); a
    /// TCP segment the tracker accepts without changing the state or the
    /// status. It is tracked from the hot line (and TCP's state line),
    /// with the result the whole way gives. False for every other packet,
    /// with nothing changed (TCP's tracker ran on a copy): the whole way
    /// then tracks it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn express(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: Key,
        hint: Hint,
        res: &mut CtResult,
    ) -> bool {
        let Ok(p) = &res.parsed else { return false };
        let (ports, tcp) = match &p.l4 {
            L4::Udp { src_port, dst_port } if p.proto == IPPROTO_UDP => {
                ((*src_port, *dst_port), None)
            }
            L4::Tcp(info) if crate::proto::tcp::tcp_error_flags_ok(info.flags) => {
                ((info.src_port, info.dst_port), Some(info))
            }
            _ => return false,
        };
        if p.family != Family::V4 {
            return false;
        }
        let ct = Compact::of_v4(&p.src, &p.dst, ports, p.proto, pkt.zone);
        let Some((r, dir, hot)) = g.hinted_v4(key, &ct, hint) else {
            return false;
        };
        let tun = &w.tun;
        let status = hot.status;
        let old_deadline = hot.deadline_ms;
        if status.0 & (record::MARKED | Status::SEQ_ADJUST) != 0
            || hot.is_expired(now_ms)
            // (A reply's first packet sets SEEN_REPLY: a change.)
            || (dir == Dir::Reply && status.0 & Status::SEEN_REPLY == 0)
        {
            return false;
        }
        let replied = status.0 & Status::SEEN_REPLY != 0;
        if tcp.is_none() && replied && status.0 & Status::ASSURED == 0 {
            // Replied, not yet assured: udp::packet reads the stream time.
            return false;
        }
        if !Translation::write_for_hot(&mut res.rewrite, hot, dir) {
            return false;
        }
        if !l4_checksum_ok(tun, pkt.rx_csum, || checksum::tcp_udp_ok(pkt.frame, p)) {
            // (The whole way finds it INVALID.)
            return false;
        }
        let (hot, timeout_ms) = match tcp {
            None if replied => (hot, tun.timeouts.udp_stream_ms),
            None => (hot, tun.timeouts.udp_unreplied_ms),
            Some(info) => {
                let seg = TcpSegment {
                    info: *info,
                    options: options(pkt.frame, info),
                };
                match express_tcp(&mut g.rec_mut(r), tun, now_ms, dir, &seg) {
                    Some(t) => (g.hot_mut(r), t),
                    None => return false,
                }
            }
        };
        let deadline = now_ms + timeout_ms;
        if deadline < old_deadline {
            // Shortened (the tunables changed): the wheel must hear of it.
            // (TCP's tracker checked this before it kept its changes.)
            return false;
        }
        hot.deadline_ms = deadline;
        res.ctinfo = ctinfo_for(status, dir);
        res.dir = dir;
        res.conn = Some(ConnHandle {
            stripe: r.stripe,
            local: r.local,
            id: hot.id,
        });
        res.cached = hot.verdicts[dir.index()];
        res.zone = hot.tuples[0].zone();
        res.mark = 0;
        res.invalid_reason = None;
        res.ct_drop = None;
        res.fix = None;
        count_checksum(w, pkt.rx_csum);
        w.stats.found += 1;
        if self.accounting {
            g.account(r, dir, u64::from(p.l3_len));
        }
        true
    }

    /// `track` for a plain packet (stage 1 found its tuple: parsed, not a
    /// fragment, TCP or UDP): the checks that apply to it, then the lookup.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track_plain(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        key: &mut Option<Key>,
        hint: Option<Hint>,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        if !l4_checksum_verdict(w, pkt.rx_csum, || checksum::tcp_udp_ok(pkt.frame, p)) {
            return invalid(w, res, "bad L4 checksum");
        }
        let ports = match p.l4 {
            L4::Tcp(info) if !crate::proto::tcp::tcp_error_flags_ok(info.flags) => {
                return invalid(w, res, "tcp: invalid flag combination");
            }
            _ => tuple_ports(p),
        };
        let t = packet_tuple(p, ports, pkt.zone);
        self.track_tuple(g, w, now_ms, pkt, p, t, key, hint, res, pending)
    }

    /// Lookup + tracker for a packet with tuple `t` (`hint`: see
    /// [`Guard::lookup_hinted`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn track_tuple(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        key_io: &mut Option<Key>,
        hint: Option<Hint>,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let key = *key_io.get_or_insert_with(|| self.table.key(&t));
        let found = match self.find_live(g, w, now_ms, key, hint, &t) {
            None if pkt.reply_zone != t.zone => {
                // A directional zone: the reply direction's tuples are in
                // the other zone (resolve_normal_ct's second lookup).
                let t2 = Tuple {
                    zone: pkt.reply_zone,
                    ..t
                };
                self.find_live(g, w, now_ms, self.table.key(&t2), None, &t2)
            }
            found => found,
        };
        let Some((r, dir)) = found else {
            self.new_conn(w, now_ms, pkt, p, t, res, pending);
            return;
        };
        w.stats.found += 1;
        if self.helpers.is_some() && g.hot(r).status.has(Status::SEQ_ADJUST) {
            return self.track_found_seqadj(g, w, now_ms, pkt, p, t, r, dir, res, pending);
        }
        self.track_found(g, w, now_ms, pkt, p, t, r, dir, res, pending);
    }

    /// [`Engine::track_found`] for a connection whose sequence numbers a
    /// helper adjusts: the tracker sees the acknowledgement and SACK edges
    /// as the receiver's sequence space has them (seqadj). Out of the way
    /// of every other packet.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn track_found_seqadj(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        r: Ref,
        dir: Dir,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let (adjusted, hdr) = self.tracker_view(g, r, pkt.frame, p, dir);
        let view = Pkt {
            frame: &hdr,
            ..*pkt
        };
        self.track_found(g, w, now_ms, &view, &adjusted, t, r, dir, res, pending);
    }

    /// The tracker and its outcome for a packet of known connection `r`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track_found(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        r: Ref,
        dir: Dir,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let mut c = g.rec_mut(r);
        *res.mark = c.mark();
        *res.zone = c.hot.tuples[0].zone();
        let before = (c.hot.status, c.state_tag());
        let old_deadline = c.hot.deadline_ms;
        let outcome = self.run_tracker(w, now_ms, pkt, p, &mut c, dir);
        let handle = |c: &RecMut<'_>| ConnHandle {
            stripe: r.stripe,
            local: r.local,
            id: c.hot.id,
        };
        match outcome {
            Tracked::Accept { timeout_ms, kill } => {
                c.hot.deadline_ms = now_ms + timeout_ms;
                *res.ctinfo = ctinfo_for(c.hot.status, dir);
                *res.dir = dir;
                *res.cached = c.hot.verdicts[dir.index()];
                if dir == Dir::Reply {
                    c.hot.status.set(Status::SEEN_REPLY);
                }
                Translation::write_for_record(res.rewrite, &c, dir);
                let changed = (c.hot.status, c.state_tag()) != before;
                let shortened = c.hot.deadline_ms < old_deadline;
                let h = handle(&c);
                if self.accounting {
                    g.account(r, dir, u64::from(p.l3_len));
                }
                if kill {
                    if let Some(dead) = g.remove(r) {
                        w.events.push(EventKind::Destroy, now_ms, &dead);
                    }
                } else {
                    *res.conn = Some(h);
                    if changed && w.events.enabled() {
                        let l = g.listed(r);
                        w.events.push(EventKind::Update, now_ms, &l);
                    }
                    if shortened {
                        g.deadline_changed(r, old_deadline);
                    }
                }
            }
            Tracked::Ignore => {
                *res.ctinfo = ctinfo_for(c.hot.status, dir);
                if dir == Dir::Reply {
                    c.hot.status.set(Status::SEEN_REPLY);
                }
                *res.dir = dir;
                *res.cached = c.hot.verdicts[dir.index()];
                Translation::write_for_record(res.rewrite, &c, dir);
                *res.conn = Some(handle(&c));
            }
            Tracked::Invalid(why) => {
                // (nf_tcp_handle_invalid may have shortened the deadline.)
                g.deadline_changed(r, old_deadline);
                invalid(w, res, why);
            }
            Tracked::Repeat => {
                // A SYN reopening a closed connection: kill it, track as new.
                w.stats.search_restart += 1;
                if let Some(dead) = g.remove(r) {
                    w.events.push(EventKind::Destroy, now_ms, &dead);
                }
                self.new_conn(w, now_ms, pkt, p, t, res, pending);
            }
        }
    }

    /// Finds a live connection (`hint`: see [`Guard::lookup_hinted`]); an
    /// expired one is reclaimed on the spot.
    #[inline(always)]
    pub(super) fn find_live(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        key: Key,
        hint: Option<Hint>,
        t: &Tuple,
    ) -> Option<(Ref, Dir)> {
        let (r, dir) = g.lookup_hinted(key, t, hint)?;
        if g.hot(r).is_expired(now_ms) {
            if let Some(dead) = g.remove(r) {
                w.stats.expired += 1;
                w.events.push(EventKind::Destroy, now_ms, &dead);
            }
            return None;
        }
        Some((r, dir))
    }

    /// The protocol tracker's verdict on a packet of connection `c`.
    #[inline(always)]
    pub(super) fn run_tracker(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        c: &mut impl Tracks,
        dir: Dir,
    ) -> Tracked {
        let tun = &w.tun;
        if matches!(c.proto_number(), IPPROTO_UDP | IPPROTO_UDPLITE) {
            // udp::packet's two common answers, without a call and without
            // reading the protocol state (its stream time):
            // - unreplied: the unreplied timeout, whatever the time;
            // - an assured stream: `now` is past stream_ts (it was when
            //   ASSURED was set, and time only moves on): the stream timeout.
            // A replied connection not yet assured goes the whole way.
            let status = c.status();
            let replied = status.has(Status::SEEN_REPLY);
            if !replied || status.has(Status::ASSURED) {
                return Tracked::Accept {
                    timeout_ms: if replied {
                        tun.timeouts.udp_stream_ms
                    } else {
                        tun.timeouts.udp_unreplied_ms
                    },
                    kill: false,
                };
            }
        }
        self.run_protocol_tracker(w, now_ms, pkt, p, c, dir)
    }

    /// [`Engine::run_tracker`] past the assured-UDP shortcut: the protocol's tracker.
    #[inline(never)]
    fn run_protocol_tracker(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        c: &mut impl Tracks,
        dir: Dir,
    ) -> Tracked {
        let tun = &w.tun;
        let proto = c.proto_number();
        let orig = c.orig();
        let (status, deadline_ms, state) = c.parts();
        let from = |o: Outcome| match o {
            Outcome::Accept { timeout_ms } => Tracked::Accept {
                timeout_ms,
                kill: false,
            },
            Outcome::Invalid(why) => Tracked::Invalid(why),
        };
        match (state, p.l4) {
            (ProtoMut::Tcp(s), L4::Tcp(info)) => {
                let seg = TcpSegment {
                    info,
                    options: options(pkt.frame, &info),
                };
                match s.packet(dir, &seg, status, &tun.tcp, &tun.timeouts) {
                    TcpOutcome::Accept { timeout_ms } => Tracked::Accept {
                        timeout_ms,
                        kill: false,
                    },
                    TcpOutcome::AcceptAndKill => Tracked::Accept {
                        timeout_ms: 0,
                        kill: true,
                    },
                    TcpOutcome::Ignore => Tracked::Ignore,
                    TcpOutcome::Invalid(why) => Tracked::Invalid(why),
                    TcpOutcome::InvalidLowerTimeout { reason, timeout_ms } => {
                        // nf_tcp_handle_invalid: shorten a long-lived entry's life.
                        let remaining = deadline_ms.saturating_sub(now_ms);
                        if remaining >= crate::proto::tcp::INVALID_LOWER_MIN_REMAINING_MS
                            && remaining > timeout_ms
                        {
                            *deadline_ms = now_ms + timeout_ms;
                        }
                        Tracked::Invalid(reason)
                    }
                    TcpOutcome::Repeat => Tracked::Repeat,
                }
            }
            (ProtoMut::Stream(_), _) if proto == IPPROTO_GRE => {
                from(generic::gre_packet(status, &tun.timeouts))
            }
            (ProtoMut::Stream(stream_ts_ms), _) => from(udp::packet(
                now_ms,
                stream_ts_ms.get(),
                status,
                &tun.timeouts,
            )),
            (ProtoMut::Icmp, _) => from(icmp::packet(&orig, &tun.timeouts)),
            (ProtoMut::Sctp(s), _) => {
                match s.packet(dir, l4_bytes(pkt.frame, p), status, &tun.timeouts) {
                    SctpOutcome::Accept { timeout_ms } => Tracked::Accept {
                        timeout_ms,
                        kill: false,
                    },
                    SctpOutcome::Ignore => Tracked::Ignore,
                    SctpOutcome::Invalid(why) => Tracked::Invalid(why),
                }
            }
            (ProtoMut::Generic, _) if proto == IPPROTO_GRE => {
                from(generic::gre_packet(status, &tun.timeouts))
            }
            (ProtoMut::Generic, _) => from(generic::packet(&tun.timeouts)),
            // A packet whose L4 does not fit the connection's protocol state
            // (cannot happen: the tuple carries the protocol).
            (ProtoMut::Tcp(_), _) => Tracked::Invalid("tcp: not a tcp segment"),
        }
    }
}

/// What the trackers read and write of a connection: a whole one (a new
/// connection before its confirm) or a record in the table.
pub(super) trait Tracks {
    /// The protocol number (the original tuple's).
    fn proto_number(&self) -> u8;
    fn status(&self) -> Status;
    /// The original tuple (ICMP's tracker reads its type).
    fn orig(&self) -> Tuple;
    /// The status, the deadline and the protocol state, borrowed together.
    fn parts(&mut self) -> (&mut Status, &mut u64, ProtoMut<'_>);
}

impl Tracks for Conn {
    #[inline(always)]
    fn proto_number(&self) -> u8 {
        self.tuples[0].proto
    }
    #[inline(always)]
    fn status(&self) -> Status {
        self.status
    }
    #[inline(always)]
    fn orig(&self) -> Tuple {
        self.tuples[0]
    }
    #[inline(always)]
    fn parts(&mut self) -> (&mut Status, &mut u64, ProtoMut<'_>) {
        (
            &mut self.status,
            &mut self.deadline_ms,
            ProtoMut::of(&mut self.proto),
        )
    }
}

impl Tracks for RecMut<'_> {
    #[inline(always)]
    fn proto_number(&self) -> u8 {
        self.hot.tuples[0].proto()
    }
    #[inline(always)]
    fn status(&self) -> Status {
        self.hot.status
    }
    #[inline(always)]
    fn orig(&self) -> Tuple {
        self.tuple(Dir::Orig)
    }
    #[inline(always)]
    fn parts(&mut self) -> (&mut Status, &mut u64, ProtoMut<'_>) {
        RecMut::parts(self)
    }
}

pub(super) enum Tracked {
    Accept { timeout_ms: u64, kill: bool },
    Ignore,
    Invalid(&'static str),
    Repeat,
}

/// The express way's TCP tracking ([`Engine::express`]): the tracker on a
/// copy of the state and status; the copy kept, and the timeout returned,
/// only if the segment is accepted without a change of state or status and
/// without shortening the deadline. None: nothing changed.
#[inline]
fn express_tcp(
    c: &mut RecMut<'_>,
    tun: &Tunables,
    now_ms: u64,
    dir: Dir,
    seg: &TcpSegment<'_>,
) -> Option<u64> {
    let (status, old_deadline) = (c.hot.status, c.hot.deadline_ms);
    let st = c.tcp()?;
    let mut copy = *st;
    let mut after = status;
    match copy.packet(dir, seg, &mut after, &tun.tcp, &tun.timeouts) {
        TcpOutcome::Accept { timeout_ms }
            if after == status && copy.state == st.state && now_ms + timeout_ms >= old_deadline =>
        {
            *st = copy;
            Some(timeout_ms)
        }
        _ => None,
    }
}

pub(super) fn invalid(w: &mut Worker, res: &mut Verdict<'_>, why: &'static str) {
    w.stats.invalid += 1;
    *res.ctinfo = CtInfo::Invalid;
    *res.conn = None;
    *res.rewrite = None;
    *res.invalid_reason = Some(why);
}

/// The L4 header and payload of a packet, within its L3 length.
pub(super) fn l4_bytes<'a>(frame: &'a [u8], p: &Parsed) -> &'a [u8] {
    let end = (p.l3_offset as usize + p.l3_len as usize).min(frame.len());
    frame.get(p.l4_offset as usize..end).unwrap_or(&[])
}

pub(super) fn options<'a>(frame: &'a [u8], info: &wire::TcpInfo) -> &'a [u8] {
    frame
        .get(info.options.0 as usize..info.options.1 as usize)
        .unwrap_or(&[])
}

/// The ctinfo of a packet on a known connection (resolve_normal_ct).
pub(super) fn ctinfo_for(status: Status, dir: Dir) -> CtInfo {
    match dir {
        Dir::Reply => CtInfo::EstablishedReply,
        Dir::Orig if status.0 & (Status::SEEN_REPLY | Status::EXPECTED) == 0 => CtInfo::New,
        Dir::Orig if status.has(Status::SEEN_REPLY) => CtInfo::Established,
        // An expected connection before its reply (resolve_normal_ct).
        Dir::Orig => CtInfo::Related,
    }
}
