//! The engine's side of conntrack helpers ([`crate::helper`]): finding the
//! expectation a new connection fulfils (init_conntrack's
//! nf_ct_find_expectation, with nf_nat_follow_master's NAT binding), and
//! running a connection's helper on its accepted packets (the kernel's
//! helper hook at POSTROUTING / INPUT), with nf_nat_ftp / nf_nat_tftp when
//! the connection is translated. Everything here is off the path of
//! connections without a helper: the engine calls in only when helpers are
//! on, and a packet of a connection without one costs a look at its status.

use std::sync::atomic::{AtomicU64, Ordering};

use super::new_conn::Pending;
use super::{CtResult, Engine, Worker};
use crate::conn::{Conn, CtInfo, Status};
use crate::helper::expect::{wildcard, ExpectError};
use crate::helper::{
    ftp, Expect, HelpState, Helper, Mangle, MasterRef, PacketFix, SeqAdj, MANGLE_MAX,
};
use crate::nat::alloc;
use crate::nat::rewrite::Translation;
use crate::table::{Guard, Key, Prefetch, Ref};
use crate::tuple::{Dir, Tuple, IPPROTO_TCP, IPPROTO_UDP};
use crate::wire::{Parsed, TcpInfo, L4};

/// What the engine keeps when helpers are on.
pub(super) struct Helpers {
    /// Expectations in all stripes (lapsed ones until reaped): a new
    /// connection looks for one only while this is not 0, as the kernel
    /// looks only while `net->ct.expect_count` is.
    live: AtomicU64,
    /// The source NAT of an expected connection (nf_nat_follow_master):
    /// to one address, its port kept when free.
    follow: crate::nat::Rule,
    seed: u64,
}

/// The TFTP opcodes that start a transfer (RRQ, WRQ).
const TFTP_OPCODE_READ: u16 = 1;
const TFTP_OPCODE_WRITE: u16 = 2;

/// nf_nat_exp_find_port's attempts.
const MAX_PORT_ATTEMPTS: u32 = 128;

/// Expectations the table has room for: the kernel's nf_ct_expect_max is
/// four per expectation hash bucket, one bucket per 256 of the conntrack
/// hash (about a 64th of the connections); at least 256.
pub fn expect_max(capacity_conns: u32) -> u32 {
    (capacity_conns / 64).max(256)
}

impl Helpers {
    fn adjust(&self, before: u32, after: u32) {
        if after > before {
            self.live
                .fetch_add(u64::from(after - before), Ordering::Relaxed);
        } else if before > after {
            self.live
                .fetch_sub(u64::from(before - after), Ordering::Relaxed);
        }
    }
}

impl<P: Prefetch> Engine<P> {
    /// Turns conntrack helpers on (before traffic): helper data beside
    /// every record and room for [`expect_max`] expectations. Rules assign
    /// helpers through [`super::Egress::helper`].
    pub fn with_helpers(mut self) -> Self {
        self.table
            .reserve_helpers(expect_max(self.table.capacity()), &mut ());
        self.helpers = Some(Box::new(Helpers {
            live: AtomicU64::new(0),
            follow: crate::nat::Rule::new(
                "helper-follow-master".into(),
                crate::nat::Match::default(),
                crate::nat::Action::Masquerade {
                    ports: None,
                    random: false,
                },
            ),
            seed: self.seed ^ 0xe4be_c7ed,
        }));
        self
    }

    /// Whether helpers are on.
    pub fn helpers_enabled(&self) -> bool {
        self.helpers.is_some()
    }

    /// The live expectations (`conntrack -L expect`).
    pub fn expectations(&self, now_ms: u64) -> Vec<Expect> {
        let mut v = Vec::new();
        if self.helpers.is_some() {
            self.table.for_each_expect(now_ms, |e| v.push(*e));
        }
        v
    }

    /// The helper data of a live connection (None when helpers are off or
    /// the connection is gone).
    pub fn help_state(&self, h: super::ConnHandle) -> Option<HelpState> {
        let mut g = self.table.guard();
        let r = g.get(h.stripe, h.local, h.id)?;
        g.help_mut(r).copied()
    }

    /// Where expectations of (wildcarded) tuple `t` are kept: stripe and hash.
    fn expect_place(&self, t: &Tuple) -> (u32, u64) {
        let seed = self.helpers.as_ref().map_or(0, |h| h.seed);
        let h = t.hash(seed);
        ((h >> 40) as u32 % self.table.stripe_count(), h)
    }

    /// GC: reaps the lapsed expectations of `stripe`.
    pub(super) fn reap_expects(&self, w: &mut Worker, stripe: u32, now_ms: u64) {
        if let Some(hs) = &self.helpers {
            if hs.live.load(Ordering::Relaxed) != 0 {
                let n = self.table.reap_expects(stripe, now_ms);
                hs.live.fetch_sub(n, Ordering::Relaxed);
                w.helpers.expect_delete += n;
            }
        }
    }

    /// init_conntrack's expectation lookup for the new connection in
    /// `pending`: a match is consumed; the connection becomes EXPECTED
    /// (RELATED), takes its master's mark, and under NAT its binding from
    /// the master (nf_nat_follow_master).
    #[cold]
    pub(super) fn expected(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pending: &mut Pending,
        looked_up: Option<Key>,
        out: &mut CtResult,
    ) {
        w.helper_master = None;
        let Some(hs) = &self.helpers else { return };
        if hs.live.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(c) = pending.get_mut() else { return };
        let t = wildcard(&c.tuples[0]);
        let (stripe, hash) = self.expect_place(&t);
        let x = g.expects(stripe);
        let before = x.live;
        let mut reaped = 0;
        let e = x.take_match(hash, &t, now_ms, &mut reaped);
        hs.adjust(before, x.live);
        w.helpers.expect_delete += reaped;
        let Some(e) = e else { return };
        let m = e.master;
        let master = match g.get(m.stripe, m.local, m.id) {
            Some(r) if !g.hot(r).is_expired(now_ms) => {
                if let Some(h) = g.help_mut(r) {
                    if h.expecting
                        .is_some_and(|x| x.stripe == stripe && x.gen == e.gen)
                    {
                        h.expecting = None;
                    }
                }
                g.conn(r)
            }
            _ => {
                // The master is gone: its expectations went with it.
                w.helpers.expect_delete += 1;
                return;
            }
        };
        w.helpers.expect_new += 1;
        c.status.set(Status::EXPECTED);
        c.mark = master.mark;
        out.mark = master.mark;
        out.ctinfo = CtInfo::Related;
        w.helper_master = Some(m);
        if let Some((dir, port)) = e.nat {
            if !self.follow_master(g, w, now_ms, c, &master, dir, port, looked_up, out) {
                pending.clear();
            }
        }
    }

    /// nf_nat_follow_master: the source becomes where the master's `!dir`
    /// direction goes to (its port kept when free), the destination that
    /// direction's source with the announced port. False if no port was free.
    #[allow(clippy::too_many_arguments)]
    fn follow_master(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        c: &mut Conn,
        master: &Conn,
        dir: Dir,
        saved_port: u16,
        looked_up: Option<Key>,
        out: &mut CtResult,
    ) -> bool {
        let other = &master.tuples[dir.other().index()];
        let (src_to, dst_to) = (other.dst, other.src);
        c.status.set(Status::SRC_NAT_DONE | Status::DST_NAT_DONE);
        let orig = c.tuples[0];
        if dst_to != orig.dst || saved_port != orig.dst_port {
            c.tuples[1].src = dst_to;
            c.tuples[1].src_port = saved_port;
            c.status.set(Status::DST_NAT);
        }
        if src_to != orig.src {
            let Some(hs) = &self.helpers else {
                return false;
            };
            let steer = w.reply_steering.take();
            let accept = |t: &Tuple| steer.as_ref().is_none_or(|f| f(t));
            let (events, stats) = (&mut w.events, &mut w.stats);
            let mut reclaimed = |dead: crate::conn::Listed| {
                stats.expired += 1;
                events.push(crate::event::EventKind::Destroy, now_ms, &dead);
            };
            let mut search = alloc::Search {
                table: g,
                home: looked_up.map(|k| k.stripe),
                now_ms,
                rng: &mut w.rng,
                accept: &accept,
                reclaimed: &mut reclaimed,
                claimed: None,
                map: None,
                slot: w.slot,
                prefetch: P::read,
                ahead: &mut alloc::Loaded::default(),
                seed: looked_up.map(|k| k.hash),
            };
            let r = alloc::snat(&mut search, c, &hs.follow, Some(src_to));
            w.claimed = search.claimed;
            w.reply_steering = steer;
            if r.is_err() {
                w.nat_out_of_ports += 1;
                out.ct_drop = Some("nat_out_of_ports");
                return false;
            }
        }
        out.rewrite = Translation::for_packet(c, Dir::Orig, false);
        true
    }

    /// The packet as the TCP tracker must see it on a connection whose
    /// payloads changed length: its acknowledgement and SACK edges taken
    /// back by the other direction's offset (tcp_in_window's
    /// `receiver_offset`). The options are copied into the returned header
    /// bytes (at offset 20, as in a TCP header), where the view's option
    /// offsets point: the tracker reads them from there (as `Pkt::frame`).
    #[cold]
    pub(super) fn tracker_view(
        &self,
        g: &mut Guard<'_>,
        r: Ref,
        frame: &[u8],
        p: &Parsed,
        dir: Dir,
    ) -> (Parsed, [u8; 60]) {
        let mut v = *p;
        let mut hdr = [0u8; 60];
        if let (L4::Tcp(t), Some(st)) = (&mut v.l4, g.help_mut(r)) {
            let other = st.seqadj[dir.other().index()];
            let off = other.seq_offset(t.ack.wrapping_sub(1));
            t.ack = t.ack.wrapping_sub(off as u32);
            let (a, b) = (usize::from(t.options.0), usize::from(t.options.1));
            let opts = frame.get(a..b).unwrap_or(&[]);
            let n = opts.len().min(40);
            hdr[20..20 + n].copy_from_slice(&opts[..n]);
            let taken_back = SeqAdj {
                correction_pos: 0,
                offset_before: off,
                offset_after: off,
            };
            crate::helper::sack_adjust(&mut hdr[20..20 + n], &taken_back);
            t.options = (20, 20 + n as u16);
        }
        (v, hdr)
    }

    /// The helper hook for an accepted packet of connection `out.conn`
    /// (`fresh`: this packet created it). Sets `out.fix` with what to change
    /// in the packet, or `out.ct_drop` when the helper drops it.
    #[cold]
    pub(super) fn help(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        frame: &[u8],
        fresh: bool,
        out: &mut CtResult,
    ) {
        let Some(h) = out.conn else { return };
        let Some(r) = g.get(h.stripe, h.local, h.id) else {
            return;
        };
        if fresh {
            if let Some(st) = g.help_mut(r) {
                *st = HelpState {
                    master: w.helper_master.take(),
                    ..HelpState::default()
                };
            }
        }
        let (helper, status) = {
            let h = g.hot(r);
            (h.helper(), h.status)
        };
        if helper == Helper::None && !status.has(Status::SEQ_ADJUST) {
            return;
        }
        let Ok(p) = out.parsed else { return };
        let mut fix = PacketFix::default();
        match (helper, p.l4) {
            (Helper::Ftp, L4::Tcp(t)) => {
                self.ftp_help(g, w, now_ms, frame, &p, &t, r, out, &mut fix)
            }
            (Helper::Tftp, L4::Udp { .. }) if p.proto == IPPROTO_UDP => {
                self.tftp_help(g, w, now_ms, frame, &p, r, out)
            }
            _ => {}
        }
        if out.ct_drop.is_some() {
            w.helpers.dropped += 1;
            return;
        }
        if g.hot(r).status.has(Status::SEQ_ADJUST) && matches!(p.l4, L4::Tcp(_)) {
            if let Some(st) = g.help_mut(r) {
                let d = out.dir;
                fix.seqadj = Some([st.seqadj[d.index()], st.seqadj[d.other().index()]]);
            }
        }
        if fix != PacketFix::default() {
            out.fix = Some(fix);
        }
    }

    /// nf_nat_exp_find_port / nf_ct_expect_related for expectation `e` of
    /// the master at `r`: the expectation placed, this master's earlier one
    /// evicted (max_expected is 1 for both helpers). Under NAT (`find_port`)
    /// the announced port is kept when no other master expects it, else up to
    /// 128 random others above it are tried. The port placed, or None.
    #[allow(clippy::too_many_arguments)]
    fn expect_related(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        r: Ref,
        mut e: Expect,
        find_port: bool,
    ) -> Option<u16> {
        let hs = self.helpers.as_ref()?;
        let min = e.tuple.dst_port;
        let range = u32::from(u16::MAX - min);
        let mut attempts = if find_port {
            range.min(MAX_PORT_ATTEMPTS) as i64
        } else {
            0
        };
        loop {
            let (stripe, hash) = self.expect_place(&e.tuple);
            if g.expects(stripe).busy(hash, &e.tuple, &e.master, now_ms) {
                attempts -= 1;
                if attempts < 0 || range == 0 {
                    return None;
                }
                e.tuple.dst_port = min + (w.rng.next_u32() % range) as u16;
                continue;
            }
            // evict_oldest_expect: this master's earlier expectation goes.
            if let Some(old) = g.help_mut(r).and_then(|st| st.expecting.take()) {
                let x = g.expects(old.stripe);
                let before = x.live;
                if x.remove(old) {
                    w.helpers.expect_delete += 1;
                }
                hs.adjust(before, x.live);
            }
            let x = g.expects(stripe);
            let before = x.live;
            let mut reaped = 0;
            let placed = x.insert(stripe, hash, e, now_ms, &mut reaped);
            hs.adjust(before, x.live);
            w.helpers.expect_delete += reaped;
            return match placed {
                Ok(er) => {
                    w.helpers.expect_create += 1;
                    if let Some(st) = g.help_mut(r) {
                        st.expecting = Some(er);
                    }
                    Some(e.tuple.dst_port)
                }
                Err(ExpectError::Full) => {
                    w.helpers.expect_full += 1;
                    w.helpers.expect_delete += 1;
                    None
                }
                Err(ExpectError::Busy) => None,
            };
        }
    }

    /// nf_conntrack_ftp's help(), with nf_nat_ftp when the connection is
    /// translated.
    #[allow(clippy::too_many_arguments)]
    fn ftp_help(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        frame: &[u8],
        p: &Parsed,
        t: &TcpInfo,
        r: Ref,
        out: &mut CtResult,
        fix: &mut PacketFix,
    ) {
        // Until there has been traffic both ways, payloads are not looked at.
        if !matches!(out.ctinfo, CtInfo::Established | CtInfo::EstablishedReply) {
            return;
        }
        let start = p.l4_offset as usize + t.header_len as usize;
        let end = (p.l3_offset as usize + p.l3_len as usize).min(frame.len());
        let Some(data) = frame.get(start..end).filter(|d| !d.is_empty()) else {
            return;
        };
        let dir = out.dir;
        let seq = t.seq;
        let ends_in_nl = data.last() == Some(&b'\n');
        let nl_seq = seq.wrapping_add(data.len() as u32);
        let c = g.conn(r);
        let at_line_start = g
            .help_mut(r)
            .is_some_and(|st| st.ftp.at_line_start(dir, seq));
        if at_line_start {
            let this = &c.tuples[dir.index()];
            match ftp::find(dir, p.family, data, this.src) {
                ftp::Found::None => {}
                ftp::Found::Partial(why) => {
                    // nf_ct_helper_log "partial matching": dropped, and the
                    // line start is not moved on.
                    out.ct_drop = Some(why);
                    return;
                }
                ftp::Found::Match(m) => {
                    // An address other than the sender's (a DMZ host opening
                    // a hole elsewhere) is not expected (loose=0).
                    if m.addr == this.src {
                        self.ftp_expect(g, w, now_ms, p, seq, r, &c, dir, &m, out, fix);
                    }
                }
            }
        }
        if ends_in_nl {
            if let Some(st) = g.help_mut(r) {
                st.ftp.note_line_end(dir, nl_seq);
            }
        }
    }

    /// The expectation an FTP announcement `m` makes, and under NAT its
    /// rewrite (nf_nat_ftp).
    #[allow(clippy::too_many_arguments)]
    fn ftp_expect(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        p: &Parsed,
        seq: u32,
        r: Ref,
        c: &Conn,
        dir: Dir,
        m: &ftp::Match,
        out: &mut CtResult,
        fix: &mut PacketFix,
    ) {
        // The data connection runs the other way round: from the peer's
        // address to where this side's packets are seen to come from.
        let other = &c.tuples[dir.other().index()];
        let natted = c.status.0 & (Status::SRC_NAT | Status::DST_NAT) != 0;
        let e = Expect {
            tuple: Tuple {
                src: other.src,
                dst: other.dst,
                src_port: 0,
                dst_port: m.port,
                proto: IPPROTO_TCP,
                family: other.family,
                zone: other.zone,
            },
            master: MasterRef {
                stripe: r.stripe,
                local: r.local,
                id: c.id,
            },
            helper: Helper::Ftp,
            expires_ms: now_ms + Helper::Ftp.expect_policy().1,
            nat: natted.then_some((dir.other(), m.port)),
            ..Expect::default()
        };
        if !natted {
            if self.expect_related(g, w, now_ms, r, e, false).is_none() {
                out.ct_drop = Some("ftp: cannot add expectation");
            }
            return;
        }
        let port = match self.expect_related(g, w, now_ms, r, e, true) {
            Some(p) if p != 0 => p,
            _ => {
                out.ct_drop = Some("ftp: all ports in use");
                return;
            }
        };
        let mut bytes = [0u8; MANGLE_MAX];
        let len = ftp::format(m.ftp_type, p.family, &other.dst, port, &mut bytes);
        let mangle = Mangle {
            at: m.off as u16,
            old_len: m.len as u16,
            len: len as u8,
            bytes,
        };
        if len == 0 || i64::from(p.l3_len) + i64::from(mangle.delta()) > i64::from(u16::MAX) {
            // nf_ct_unexpect_related and drop: "cannot mangle packet".
            if let Some(old) = g.help_mut(r).and_then(|st| st.expecting.take()) {
                if let Some(hs) = &self.helpers {
                    let x = g.expects(old.stripe);
                    let before = x.live;
                    x.remove(old);
                    hs.adjust(before, x.live);
                }
                w.helpers.expect_delete += 1;
            }
            out.ct_drop = Some("ftp: cannot mangle packet");
            return;
        }
        w.helpers.mangled += 1;
        if mangle.delta() != 0 {
            if let Some(st) = g.help_mut(r) {
                st.seqadj[dir.index()].set(seq, mangle.delta());
            }
            g.rec_mut(r).hot.status.set(Status::SEQ_ADJUST);
        }
        fix.mangle = Some(mangle);
    }

    /// nf_conntrack_tftp's tftp_help, with nf_nat_tftp: a read or write
    /// request expects the server's answer, from any port, at the client's.
    #[allow(clippy::too_many_arguments)]
    fn tftp_help(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        frame: &[u8],
        p: &Parsed,
        r: Ref,
        out: &mut CtResult,
    ) {
        let at = p.l4_offset as usize + 8;
        let Some(op) = frame.get(at..at + 2) else {
            return;
        };
        if at + 2 > p.l3_offset as usize + p.l3_len as usize {
            return;
        }
        let opcode = u16::from_be_bytes([op[0], op[1]]);
        if opcode != TFTP_OPCODE_READ && opcode != TFTP_OPCODE_WRITE {
            return;
        }
        let c = g.conn(r);
        let reply = &c.tuples[1];
        let natted = c.status.0 & (Status::SRC_NAT | Status::DST_NAT) != 0;
        let e = Expect {
            tuple: Tuple {
                src_port: 0,
                proto: IPPROTO_UDP,
                ..*reply
            },
            master: MasterRef {
                stripe: r.stripe,
                local: r.local,
                id: c.id,
            },
            helper: Helper::Tftp,
            expires_ms: now_ms + Helper::Tftp.expect_policy().1,
            nat: natted.then_some((Dir::Reply, c.tuples[0].src_port)),
            ..Expect::default()
        };
        if self.expect_related(g, w, now_ms, r, e, false).is_none() {
            out.ct_drop = Some("tftp: cannot add expectation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Decision, Egress, EngineConfig, Pkt, Tunables};
    use super::*;
    use crate::checksum;
    use crate::helper::apply_fix;
    use crate::nat::rewrite::{apply_translation, ChecksumMode};
    use crate::nat::Nat;
    use crate::tuple::{Addr, Family};
    use crate::wire::build::{frame, L4Spec};
    use crate::wire::tcp_flags::{ACK, PSH, SYN};

    const C: [u8; 4] = [192, 0, 2, 10];
    const S: [u8; 4] = [198, 51, 100, 20];
    const P: [u8; 4] = [203, 0, 113, 1];

    fn engine(masquerade: bool) -> Engine {
        let cfg = EngineConfig {
            capacity_conns: 1000,
            seed: 9,
            tunables: Tunables::default(),
        };
        let rules = if masquerade {
            vec![crate::nat::Rule::new(
                "masq".into(),
                crate::nat::Match::default(),
                crate::nat::Action::Masquerade {
                    ports: None,
                    random: false,
                },
            )]
        } else {
            vec![]
        };
        Engine::with_nat(
            cfg,
            Some(Nat {
                rules,
                pools: vec![],
            }),
        )
        .with_helpers()
    }

    /// Out of port 1 (masquerading as P), assigning `helper`.
    fn out(helper: Helper) -> Decision {
        Decision::Accept(Egress {
            port: 1,
            addr: Some(Addr::from_v4(P)),
            mark: None,
            helper,
            cache: 0,
        })
    }

    fn tcp(
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        frame(
            Family::V4,
            Addr::from_v4(src.0),
            Addr::from_v4(dst.0),
            64,
            L4Spec::Tcp {
                src_port: src.1,
                dst_port: dst.1,
                seq,
                ack,
                flags,
                window: 65535,
                payload,
            },
        )
    }

    fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
        frame(
            Family::V4,
            Addr::from_v4(src.0),
            Addr::from_v4(dst.0),
            64,
            L4Spec::Udp {
                src_port: src.1,
                dst_port: dst.1,
                payload,
            },
        )
    }

    /// One packet through the engine; the frame as it leaves (NAT rewrite
    /// and the helper's fix applied).
    fn run(e: &Engine, w: &mut Worker, now: u64, f: &[u8], d: Decision) -> (CtResult, Vec<u8>) {
        let mut res = [CtResult::default()];
        e.process_burst(w, now, &[Pkt::new(f, 0, 0)], &mut res, |_, _| d);
        let r = res[0];
        let mut f = f.to_vec();
        if let Ok(p) = &r.parsed {
            if let Some(rw) = &r.rewrite {
                apply_translation(&mut f, p, rw, ChecksumMode::Incremental).unwrap();
            }
            if let Some(fix) = &r.fix {
                let len = fix.frame_len(p, f.len());
                if len > f.len() {
                    f.resize(len, 0);
                }
                let n = apply_fix(&mut f, p, fix, ChecksumMode::Incremental).unwrap();
                f.truncate(n);
            }
        }
        (r, f)
    }

    /// The frame parses, its IP header and L4 checksums hold.
    fn sound(f: &[u8]) -> crate::wire::Parsed {
        let p = crate::wire::parse(f).expect("a sound frame");
        assert!(checksum::l4_checksum_ok(f, &p), "L4 checksum");
        p
    }

    fn payload(f: &[u8]) -> &[u8] {
        let p = sound(f);
        let L4::Tcp(t) = p.l4 else { panic!("tcp") };
        &f[p.l4_offset as usize + t.header_len as usize..p.l3_offset as usize + p.l3_len as usize]
    }

    fn seq_ack(f: &[u8]) -> (u32, u32) {
        let L4::Tcp(t) = sound(f).l4 else {
            panic!("tcp")
        };
        (t.seq, t.ack)
    }

    const ANY: Decision = Decision::Accept(Egress::NONE);

    /// An FTP control connection C:40000 -> S:21 through masquerade (or
    /// not), handshake, greeting and a USER line done. Client sequence
    /// numbers continue at 1009, the server's at 5009. The outside address
    /// the server sees.
    fn control(e: &Engine, w: &mut Worker) -> ([u8; 4], u16) {
        let cl = (C, 40000);
        let (r, f) = run(
            e,
            w,
            0,
            &tcp(cl, (S, 21), SYN, 1000, 0, b""),
            out(Helper::Ftp),
        );
        assert_eq!(r.ctinfo, CtInfo::New);
        let p = sound(&f);
        let seen = (
            p.src.v4_octets(),
            match p.l4 {
                L4::Tcp(t) => t.src_port,
                _ => unreachable!(),
            },
        );
        let (r, _) = run(
            e,
            w,
            1,
            &tcp((S, 21), seen, SYN | ACK, 5000, 1001, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        run(e, w, 2, &tcp(cl, (S, 21), ACK, 1001, 5001, b""), ANY);
        let (r, f) = run(
            e,
            w,
            3,
            &tcp((S, 21), seen, PSH | ACK, 5001, 1001, b"220 hi\r\n"),
            ANY,
        );
        assert!(r.fix.is_none() && r.ct_drop.is_none());
        assert_eq!(payload(&f), b"220 hi\r\n");
        run(
            e,
            w,
            4,
            &tcp(cl, (S, 21), PSH | ACK, 1001, 5009, b"USER a\r\n"),
            ANY,
        );
        seen
    }

    #[test]
    fn active_ftp_through_masquerade() {
        let e = engine(true);
        let mut w = e.worker(64);
        let seen = control(&e, &mut w);
        assert_eq!(seen.0, P);
        let mut listing = vec![];
        e.snapshot(5, |c| listing.push(crate::listing::format_conn(c, 5)));
        assert!(listing[0].contains(" helper=ftp use=1"), "{}", listing[0]);

        // PORT: the client's address becomes the outside one; one byte longer.
        let cmd = b"PORT 192,0,2,10,19,137\r\n";
        let (r, f) = run(
            &e,
            &mut w,
            10,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1009, 5009, cmd),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Established);
        assert_eq!(payload(&f), b"PORT 203,0,113,1,19,137\r\n");
        assert_eq!(
            seq_ack(&f),
            (1009, 5009),
            "the mangled segment keeps its seq"
        );
        assert_eq!(w.helpers.mangled, 1);
        let exp = e.expectations(10);
        assert_eq!(exp.len(), 1);
        let x = exp[0];
        assert_eq!(
            (x.tuple.src, x.tuple.dst),
            (Addr::from_v4(S), Addr::from_v4(P))
        );
        assert_eq!(
            (x.tuple.dst_port, x.tuple.proto, x.nat),
            (5001, 6, Some((Dir::Reply, 5001)))
        );
        assert_eq!(x.expires_ms, 10 + FTP_TIMEOUT);

        // The server acknowledges the grown stream: its ack is taken back.
        let (_, f) = run(
            &e,
            &mut w,
            11,
            &tcp((S, 21), seen, PSH | ACK, 5009, 1009 + 25, b"200 ok\r\n"),
            ANY,
        );
        assert_eq!(seq_ack(&f), (5009, 1009 + 24));
        // The client's next segment is moved on by one.
        let (r, f) = run(
            &e,
            &mut w,
            12,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1033, 5017, b"LIST\r\n"),
            ANY,
        );
        assert!(r.fix.is_some_and(|x| x.mangle.is_none()));
        assert_eq!(seq_ack(&f), (1034, 5017));
        assert_eq!(payload(&f), b"LIST\r\n");

        // The data connection from the server's port 20 to the announced
        // port: RELATED, translated to the client's own port.
        let (r, f) = run(
            &e,
            &mut w,
            13,
            &tcp((S, 20), (P, 5001), SYN, 7000, 0, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Related);
        let p = sound(&f);
        assert_eq!(p.dst, Addr::from_v4(C));
        assert!(matches!(p.l4, L4::Tcp(t) if t.dst_port == 5001 && t.src_port == 20));
        assert!(e.expectations(13).is_empty(), "consumed");
        assert_eq!(w.helpers.expect_new, 1);
        let h = r.conn.expect("confirmed");
        let data = e.with_conn(h, |c| *c).unwrap();
        assert!(data.status.has(Status::EXPECTED) && data.status.has(Status::DST_NAT));
        assert!(!data.status.has(Status::SRC_NAT));
        assert_eq!(data.tuples[1].src, Addr::from_v4(C));
        assert_eq!(data.tuples[1].src_port, 5001);
        assert_eq!(data.helper, Helper::None);
        let master = e.help_state(h).and_then(|s| s.master).expect("master");
        assert_eq!(master.id, e.with_conn(first_conn(&e), |c| c.id).unwrap());
        // Its reply from the client goes back out as P:5001.
        let (r, f) = run(
            &e,
            &mut w,
            14,
            &tcp((C, 5001), (S, 20), SYN | ACK, 9000, 7001, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        let p = sound(&f);
        assert_eq!(p.src, Addr::from_v4(P));
        // A second SYN to the same port finds no expectation: NEW.
        let (r, _) = run(
            &e,
            &mut w,
            15,
            &tcp((S, 20), (P, 5001), SYN, 7000, 0, b""),
            ANY,
        );
        assert_ne!(r.ctinfo, CtInfo::Related);
    }

    const FTP_TIMEOUT: u64 = crate::helper::FTP_EXPECT_TIMEOUT_MS;

    fn first_conn(e: &Engine) -> super::super::ConnHandle {
        let mut h = None;
        let mut g = e.table().guard();
        e.snapshot(0, |c| {
            if c.tuples[0].dst_port == 21 {
                h = Some(c.id);
            }
        });
        let id = h.unwrap();
        for local in 0..1000 {
            if let Some(r) = g.get(0, local, id) {
                return super::super::ConnHandle {
                    stripe: r.stripe,
                    local: r.local,
                    id,
                };
            }
        }
        panic!("the control connection")
    }

    #[test]
    fn passive_ftp_through_masquerade() {
        let e = engine(true);
        let mut w = e.worker(64);
        let seen = control(&e, &mut w);
        run(
            &e,
            &mut w,
            10,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1009, 5009, b"PASV\r\n"),
            ANY,
        );
        let reply = b"227 Entering Passive Mode (198,51,100,20,195,80).\r\n";
        let (r, f) = run(
            &e,
            &mut w,
            11,
            &tcp((S, 21), seen, PSH | ACK, 5009, 1015, reply),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        // The server's address is not translated: the same text, same length.
        assert_eq!(payload(&f), reply);
        assert!(r.fix.is_some_and(|x| x.seqadj.is_none()));
        let x = e.expectations(11)[0];
        assert_eq!(
            (x.tuple.src, x.tuple.dst, x.tuple.dst_port),
            (Addr::from_v4(C), Addr::from_v4(S), 50000)
        );
        assert_eq!(x.nat, Some((Dir::Orig, 50000)));
        // The client's data connection: RELATED, masqueraded like its master.
        let (r, f) = run(
            &e,
            &mut w,
            12,
            &tcp((C, 40001), (S, 50000), SYN, 100, 0, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Related);
        let p = sound(&f);
        assert_eq!((p.src, p.dst), (Addr::from_v4(P), Addr::from_v4(S)));
        let data = e.with_conn(r.conn.unwrap(), |c| *c).unwrap();
        assert!(data.status.has(Status::SRC_NAT) && !data.status.has(Status::DST_NAT));
        assert_eq!(
            (data.tuples[1].dst, data.tuples[1].dst_port),
            (Addr::from_v4(P), 40001)
        );
        // Before the server answers, more client packets are RELATED too.
        let (r, _) = run(
            &e,
            &mut w,
            13,
            &tcp((C, 40001), (S, 50000), SYN, 100, 0, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Related);
        let (r, _) = run(
            &e,
            &mut w,
            14,
            &tcp((S, 50000), (P, 40001), SYN | ACK, 300, 101, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);

        // EPSV: "|||port|" expects the server's address.
        run(
            &e,
            &mut w,
            20,
            &tcp(
                (C, 40000),
                (S, 21),
                PSH | ACK,
                1015,
                5009 + reply.len() as u32,
                b"EPSV\r\n",
            ),
            ANY,
        );
        let epsv = b"229 Entering Extended Passive Mode (|||50001|)\r\n";
        let (_, f) = run(
            &e,
            &mut w,
            21,
            &tcp(
                (S, 21),
                seen,
                PSH | ACK,
                5009 + reply.len() as u32,
                1021,
                epsv,
            ),
            ANY,
        );
        assert_eq!(payload(&f), epsv);
        let x = e.expectations(21);
        assert_eq!(x.len(), 1);
        assert_eq!(
            (x[0].tuple.dst, x[0].tuple.dst_port),
            (Addr::from_v4(S), 50001)
        );
    }

    #[test]
    fn changes_add_up_and_both_directions_stay_in_step() {
        let e = engine(true);
        let mut w = e.worker(64);
        let seen = control(&e, &mut w);
        // EPRT: 203.0.113.1 is one character longer than 192.0.2.10.
        let cmd = b"EPRT |1|192.0.2.10|5001|\r\n";
        let (_, f) = run(
            &e,
            &mut w,
            10,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1009, 5009, cmd),
            ANY,
        );
        assert_eq!(payload(&f), b"EPRT |1|203.0.113.1|5001|\r\n");
        let (r, f) = run(
            &e,
            &mut w,
            11,
            &tcp((S, 21), seen, PSH | ACK, 5009, 1009 + 27, b"200 ok\r\n"),
            ANY,
        );
        assert_eq!(
            r.ctinfo,
            CtInfo::EstablishedReply,
            "in window once moved back"
        );
        assert_eq!(seq_ack(&f).1, 1009 + 26);
        // A second announcement: the first expectation is evicted
        // (max_expected 1) and the offsets add up.
        let cmd = b"PORT 192,0,2,10,19,138\r\n";
        let (_, f) = run(
            &e,
            &mut w,
            12,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1035, 5017, cmd),
            ANY,
        );
        assert_eq!(seq_ack(&f), (1036, 5017));
        assert_eq!(payload(&f), b"PORT 203,0,113,1,19,138\r\n");
        let x = e.expectations(12);
        assert_eq!(x.len(), 1, "one per master");
        assert_eq!(x[0].tuple.dst_port, 5002);
        assert_eq!(w.helpers.expect_delete, 1);
        let (_, f) = run(
            &e,
            &mut w,
            13,
            &tcp(
                (S, 21),
                seen,
                PSH | ACK,
                5017,
                1009 + 27 + 25,
                b"200 ok\r\n",
            ),
            ANY,
        );
        assert_eq!(seq_ack(&f).1, 1035 + 24);
        // A retransmission of the last command keeps the offset before it,
        // is rewritten again and replaces its own expectation.
        let (_, f) = run(
            &e,
            &mut w,
            14,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1035, 5017, cmd),
            ANY,
        );
        assert_eq!(seq_ack(&f).0, 1036);
        assert_eq!(payload(&f), b"PORT 203,0,113,1,19,138\r\n");
        assert_eq!(e.expectations(14).len(), 1);
        let (r, f) = run(
            &e,
            &mut w,
            15,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1059, 5025, b"QUIT\r\n"),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Established);
        assert_eq!(seq_ack(&f), (1061, 5025));
        // Two line starts are remembered per direction: a retransmission
        // from before them is not looked at (as in the kernel).
        let (r, f) = run(
            &e,
            &mut w,
            16,
            &tcp(
                (C, 40000),
                (S, 21),
                PSH | ACK,
                1009,
                5009,
                b"EPRT |1|192.0.2.10|5001|\r\n",
            ),
            ANY,
        );
        assert!(r.fix.is_some_and(|x| x.mangle.is_none()));
        assert_eq!(payload(&f), b"EPRT |1|192.0.2.10|5001|\r\n");
        let (_, f) = run(
            &e,
            &mut w,
            17,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1065, 5025, b"NOOP\r\n"),
            ANY,
        );
        assert_eq!(seq_ack(&f).0, 1067);
    }

    /// An FTP server behind a port forward: the outside client talks to
    /// V:21, translated to the inside server S:21. The server's PASV reply
    /// names S; the client must see V, and its data connection to V is
    /// RELATED and forwarded to S (nf_nat_follow_master's DST half).
    #[test]
    fn passive_ftp_to_a_server_behind_dnat() {
        const V: [u8; 4] = [203, 0, 113, 80];
        const O: [u8; 4] = [203, 0, 113, 9];
        let cfg = EngineConfig {
            capacity_conns: 1000,
            seed: 3,
            tunables: Tunables::default(),
        };
        let fwd = crate::nat::Rule::new(
            "fwd".into(),
            crate::nat::Match {
                dst: Some(crate::nat::Prefix::parse("203.0.113.80/32").unwrap()),
                ..crate::nat::Match::default()
            },
            crate::nat::Action::Dnat {
                family: Family::V4,
                addr: Addr::from_v4(S),
                port: None,
            },
        );
        let e = Engine::with_nat(
            cfg,
            Some(Nat {
                rules: vec![fwd],
                pools: vec![],
            }),
        )
        .with_helpers();
        let mut w = e.worker(64);
        let cl = (O, 41000);
        let (r, f) = run(
            &e,
            &mut w,
            0,
            &tcp(cl, (V, 21), SYN, 100, 0, b""),
            out(Helper::Ftp),
        );
        assert_eq!(sound(&f).dst, Addr::from_v4(S));
        assert!(r.rewrite.is_some());
        run(
            &e,
            &mut w,
            1,
            &tcp((S, 21), cl, SYN | ACK, 900, 101, b""),
            ANY,
        );
        run(&e, &mut w, 2, &tcp(cl, (V, 21), ACK, 101, 901, b""), ANY);
        run(
            &e,
            &mut w,
            3,
            &tcp((S, 21), cl, PSH | ACK, 901, 101, b"220 hi\r\n"),
            ANY,
        );
        run(
            &e,
            &mut w,
            4,
            &tcp(cl, (V, 21), PSH | ACK, 101, 909, b"PASV\r\n"),
            ANY,
        );
        let reply = b"227 Entering Passive Mode (198,51,100,20,195,80).\r\n";
        let (r, f) = run(
            &e,
            &mut w,
            5,
            &tcp((S, 21), cl, PSH | ACK, 909, 107, reply),
            ANY,
        );
        assert_eq!(sound(&f).src, Addr::from_v4(V));
        assert_eq!(
            payload(&f),
            b"227 Entering Passive Mode (203,0,113,80,195,80).\r\n"
        );
        // One character shorter: the server's later segments move back by one.
        assert!(r
            .fix
            .is_some_and(|x| x.mangle.is_some_and(|m| m.delta() == -1)));
        let next = 909 + reply.len() as u32;
        let (_, f) = run(
            &e,
            &mut w,
            5,
            &tcp((S, 21), cl, PSH | ACK, next, 107, b"150 ok\r\n"),
            ANY,
        );
        assert_eq!(seq_ack(&f).0, next - 1);
        let (r, f) = run(
            &e,
            &mut w,
            5,
            &tcp(cl, (V, 21), ACK, 107, next - 1 + 8, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Established);
        assert_eq!(seq_ack(&f).1, next + 8);
        let x = e.expectations(5)[0];
        assert_eq!(
            (x.tuple.src, x.tuple.dst, x.tuple.dst_port),
            (Addr::from_v4(O), Addr::from_v4(V), 50000)
        );
        let (r, f) = run(
            &e,
            &mut w,
            6,
            &tcp((O, 41001), (V, 50000), SYN, 5, 0, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Related);
        let p = sound(&f);
        assert_eq!((p.src, p.dst), (Addr::from_v4(O), Addr::from_v4(S)));
        let (r, f) = run(
            &e,
            &mut w,
            7,
            &tcp((S, 50000), (O, 41001), SYN | ACK, 70, 6, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        assert_eq!(sound(&f).src, Addr::from_v4(V));
    }

    /// EPRT with an IPv6 address through masquerade (NAT66): rewritten with
    /// the outside address, the data connection translated back.
    #[test]
    fn eprt_over_ipv6_through_masquerade() {
        let c6: Addr = Addr(
            "2001:db8:1::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let s6: Addr = Addr(
            "2001:db8:2::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let p6: Addr = Addr(
            "2001:db8:2::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let e = engine(true);
        let mut w = e.worker(64);
        let t6 = |src: (Addr, u16), dst: (Addr, u16), flags: u8, seq: u32, ack: u32, pl: &[u8]| {
            frame(
                Family::V6,
                src.0,
                dst.0,
                64,
                L4Spec::Tcp {
                    src_port: src.1,
                    dst_port: dst.1,
                    seq,
                    ack,
                    flags,
                    window: 65535,
                    payload: pl,
                },
            )
        };
        let egress = Decision::Accept(Egress {
            port: 1,
            addr: Some(p6),
            mark: None,
            helper: Helper::Ftp,
            cache: 0,
        });
        let cl = (c6, 40000);
        let (_, f) = run(&e, &mut w, 0, &t6(cl, (s6, 21), SYN, 10, 0, b""), egress);
        assert_eq!(sound(&f).src, p6);
        let seen = (p6, 40000);
        run(
            &e,
            &mut w,
            1,
            &t6((s6, 21), seen, SYN | ACK, 50, 11, b""),
            ANY,
        );
        run(&e, &mut w, 2, &t6(cl, (s6, 21), ACK, 11, 51, b""), ANY);
        run(
            &e,
            &mut w,
            3,
            &t6((s6, 21), seen, PSH | ACK, 51, 11, b"220 hi\r\n"),
            ANY,
        );
        run(
            &e,
            &mut w,
            4,
            &t6(cl, (s6, 21), PSH | ACK, 11, 59, b"USER a\r\n"),
            ANY,
        );
        let cmd = b"EPRT |2|2001:db8:1::2|6000|\r\n";
        let (r, f) = run(
            &e,
            &mut w,
            5,
            &t6(cl, (s6, 21), PSH | ACK, 19, 59, cmd),
            ANY,
        );
        assert!(r.ct_drop.is_none());
        assert_eq!(payload(&f), b"EPRT |2|2001:db8:2::1|6000|\r\n");
        let (r, f) = run(
            &e,
            &mut w,
            6,
            &t6((s6, 20), (p6, 6000), SYN, 7, 0, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Related);
        assert_eq!(sound(&f).dst, c6);
    }

    #[test]
    fn without_nat_the_expectation_is_the_announced_endpoint() {
        let e = engine(false);
        let mut w = e.worker(64);
        let seen = control(&e, &mut w);
        assert_eq!(seen, (C, 40000));
        let cmd = b"PORT 192,0,2,10,19,137\r\n";
        let (r, f) = run(
            &e,
            &mut w,
            10,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1009, 5009, cmd),
            ANY,
        );
        assert!(r.fix.is_none());
        assert_eq!(payload(&f), cmd);
        let x = e.expectations(10)[0];
        assert_eq!(
            (x.tuple.src, x.tuple.dst, x.tuple.dst_port, x.nat),
            (Addr::from_v4(S), Addr::from_v4(C), 5001, None)
        );
        let (r, f) = run(
            &e,
            &mut w,
            11,
            &tcp((S, 20), (C, 5001), SYN, 7000, 0, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Related);
        assert!(r.rewrite.is_none());
        sound(&f);
    }

    #[test]
    fn expectations_lapse_after_the_helpers_timeout() {
        let e = engine(false);
        let mut w = e.worker(64);
        control(&e, &mut w);
        let cmd = b"PORT 192,0,2,10,19,137\r\n";
        run(
            &e,
            &mut w,
            10,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1009, 5009, cmd),
            ANY,
        );
        assert_eq!(e.expectations(10 + FTP_TIMEOUT - 1).len(), 1);
        assert!(e.expectations(10 + FTP_TIMEOUT).is_empty());
        let (r, _) = run(
            &e,
            &mut w,
            10 + FTP_TIMEOUT,
            &tcp((S, 20), (C, 5001), SYN, 7000, 0, b""),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::New);
        assert_eq!(w.helpers.expect_new, 0);
        assert!(w.helpers.expect_delete >= 1);
    }

    #[test]
    fn commands_count_only_at_line_starts_and_partial_ones_are_dropped() {
        let e = engine(true);
        let mut w = e.worker(64);
        let seen = control(&e, &mut w);
        // A line whose end is in a later segment: the first half is
        // dropped as a partial command, as the kernel does ...
        let (r, _) = run(
            &e,
            &mut w,
            10,
            &tcp(
                (C, 40000),
                (S, 21),
                PSH | ACK,
                1009,
                5009,
                b"PORT 192,0,2,10,",
            ),
            ANY,
        );
        assert_eq!(r.ct_drop, Some("ftp: malformed or partial command"));
        assert_eq!(w.helpers.dropped, 1);
        // ... and text in the middle of a line is never looked at.
        let (r, _) = run(
            &e,
            &mut w,
            11,
            &tcp((C, 40000), (S, 21), PSH | ACK, 1009, 5009, b"NOOP "),
            ANY,
        );
        assert!(r.ct_drop.is_none());
        let (r, f) = run(
            &e,
            &mut w,
            12,
            &tcp(
                (C, 40000),
                (S, 21),
                PSH | ACK,
                1014,
                5009,
                b"PORT 192,0,2,10,19,137\r\n",
            ),
            ANY,
        );
        assert!(r.ct_drop.is_none() && r.fix.is_none());
        assert!(e.expectations(12).is_empty());
        assert_eq!(payload(&f), b"PORT 192,0,2,10,19,137\r\n");
        // An address other than the client's is not expected.
        let (r, _) = run(
            &e,
            &mut w,
            13,
            &tcp(
                (C, 40000),
                (S, 21),
                PSH | ACK,
                1038,
                5009,
                b"PORT 10,0,0,1,19,137\r\n",
            ),
            ANY,
        );
        assert!(r.ct_drop.is_none() && r.fix.is_none());
        assert!(e.expectations(13).is_empty());
        // Garbage never panics.
        let mut x = 0x9e37_79b9u32;
        let mut seq = 1060u32;
        for n in 0..3000u32 {
            let mut buf = [0u8; 48];
            let len = (n % 48) as usize;
            for b in buf.iter_mut().take(len) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = b"PORTEPRT227 229 (|,.):0123456789\r\n\xff"[(x % 35) as usize];
            }
            let from_client = n % 2 == 0;
            let f = if from_client {
                tcp((C, 40000), (S, 21), PSH | ACK, seq, 5009, &buf[..len])
            } else {
                tcp((S, 21), seen, PSH | ACK, 5009, seq, &buf[..len])
            };
            let (r, f) = run(&e, &mut w, 20 + u64::from(n), &f, ANY);
            if r.ct_drop.is_none() {
                sound(&f);
            }
            if from_client && r.ct_drop.is_none() {
                seq = seq.wrapping_add(len as u32);
            }
        }
    }

    #[test]
    fn tftp_read_request_through_masquerade() {
        let e = engine(true);
        let mut w = e.worker(64);
        let rrq = b"\x00\x01boot.img\x00octet\x00";
        let (r, f) = run(
            &e,
            &mut w,
            0,
            &udp((C, 3000), (S, 69), rrq),
            out(Helper::Tftp),
        );
        assert_eq!(r.ctinfo, CtInfo::New);
        assert!(r.ct_drop.is_none());
        let p = sound(&f);
        assert_eq!(p.src, Addr::from_v4(P));
        let x = e.expectations(0);
        assert_eq!(x.len(), 1);
        assert_eq!(
            (
                x[0].tuple.src,
                x[0].tuple.dst,
                x[0].tuple.dst_port,
                x[0].tuple.proto
            ),
            (Addr::from_v4(S), Addr::from_v4(P), 3000, 17)
        );
        assert_eq!(x[0].nat, Some((Dir::Reply, 3000)));
        assert_eq!(x[0].expires_ms, crate::helper::TFTP_EXPECT_TIMEOUT_MS);
        // The server answers from another port: RELATED, to the client.
        let (r, f) = run(
            &e,
            &mut w,
            1,
            &udp((S, 4711), (P, 3000), b"\x00\x03\x00\x01data"),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::Related);
        let p = sound(&f);
        assert_eq!(p.dst, Addr::from_v4(C));
        assert!(matches!(
            p.l4,
            L4::Udp {
                dst_port: 3000,
                src_port: 4711
            }
        ));
        let (r, f) = run(
            &e,
            &mut w,
            2,
            &udp((C, 3000), (S, 4711), b"\x00\x04\x00\x01"),
            ANY,
        );
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply);
        assert_eq!(sound(&f).src, Addr::from_v4(P));
        let mut listing = vec![];
        e.snapshot(2, |c| listing.push(crate::listing::format_conn(c, 2)));
        assert_eq!(
            listing.iter().filter(|l| l.contains("helper=tftp")).count(),
            1
        );
        // Other opcodes expect nothing.
        run(
            &e,
            &mut w,
            3,
            &udp((C, 3000), (S, 69), b"\x00\x05\x00\x00x\x00"),
            ANY,
        );
        assert!(e.expectations(3).is_empty());
    }

    #[test]
    fn a_helper_is_only_for_its_protocol_and_only_when_helpers_are_on() {
        let e = engine(false);
        let mut w = e.worker(64);
        // TFTP on a TCP connection: not assigned.
        let (r, _) = run(
            &e,
            &mut w,
            0,
            &tcp((C, 1), (S, 69), SYN, 1, 0, b""),
            out(Helper::Tftp),
        );
        assert_eq!(
            e.with_conn(r.conn.unwrap(), |c| c.helper),
            Some(Helper::None)
        );
        let off = Engine::with_nat(
            EngineConfig {
                capacity_conns: 100,
                seed: 1,
                tunables: Tunables::default(),
            },
            None,
        );
        let mut w = off.worker(8);
        let (r, _) = run(
            &off,
            &mut w,
            0,
            &tcp((C, 1), (S, 21), SYN, 1, 0, b""),
            out(Helper::Ftp),
        );
        assert_eq!(
            off.with_conn(r.conn.unwrap(), |c| c.helper),
            Some(Helper::None)
        );
    }

    /// `f` (an IPv4 TCP frame from [`tcp`], no options) with TCP options
    /// `opts` (a multiple of 4 bytes), lengths and checksums fixed.
    fn with_options(mut f: Vec<u8>, opts: &[u8]) -> Vec<u8> {
        let l4 = 14 + 20;
        f.splice(l4 + 20..l4 + 20, opts.iter().copied());
        f[l4 + 12] = (((20 + opts.len()) / 4) << 4) as u8;
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let (src, dst) = (
            Addr::from_v4(f[26..30].try_into().unwrap()),
            Addr::from_v4(f[30..34].try_into().unwrap()),
        );
        let c = checksum::l4_checksum(Family::V4, &src, &dst, 6, &f[l4..]);
        f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn sack_opt(left: u32, right: u32) -> Vec<u8> {
        let mut o = vec![1u8, 1, 5, 10];
        o.extend_from_slice(&left.to_be_bytes());
        o.extend_from_slice(&right.to_be_bytes());
        o
    }

    /// With SACK on, the server's selective acknowledgement of client data
    /// past a grown PORT command is in window for the tracker (its edges
    /// taken back as the kernel's tcp_in_window does) and leaves moved
    /// back for the client.
    #[test]
    fn sack_past_a_grown_command_stays_in_window() {
        let e = engine(true);
        let mut w = e.worker(64);
        let cl = (C, 40000);
        let sack_perm = [1u8, 1, 4, 2];
        run(
            &e,
            &mut w,
            0,
            &with_options(tcp(cl, (S, 21), SYN, 1000, 0, b""), &sack_perm),
            out(Helper::Ftp),
        );
        let seen = (P, 40000);
        run(
            &e,
            &mut w,
            1,
            &with_options(tcp((S, 21), seen, SYN | ACK, 5000, 1001, b""), &sack_perm),
            ANY,
        );
        run(&e, &mut w, 2, &tcp(cl, (S, 21), ACK, 1001, 5001, b""), ANY);
        run(
            &e,
            &mut w,
            3,
            &tcp((S, 21), seen, PSH | ACK, 5001, 1001, b"220 hi\r\n"),
            ANY,
        );
        run(
            &e,
            &mut w,
            4,
            &tcp(cl, (S, 21), PSH | ACK, 1001, 5009, b"USER a\r\n"),
            ANY,
        );
        let cmd = b"PORT 192,0,2,10,19,137\r\n";
        let (_, f) = run(
            &e,
            &mut w,
            5,
            &tcp(cl, (S, 21), PSH | ACK, 1009, 5009, cmd),
            ANY,
        );
        assert_eq!(payload(&f).len(), cmd.len() + 1);
        // LIST (client 1033..1039) reaches the server as 1034..1040; the
        // server acknowledges up to the PORT command and SACKs the LIST.
        run(
            &e,
            &mut w,
            6,
            &tcp(cl, (S, 21), PSH | ACK, 1033, 5009, b"LIST\r\n"),
            ANY,
        );
        let f = with_options(
            tcp((S, 21), seen, ACK, 5009, 1034, b""),
            &sack_opt(1034, 1040),
        );
        let (r, f) = run(&e, &mut w, 7, &f, ANY);
        assert_eq!(r.ctinfo, CtInfo::EstablishedReply, "{:?}", r.invalid_reason);
        assert_eq!(seq_ack(&f), (5009, 1033));
        let l4 = 14 + 20;
        let edge = |o: usize| u32::from_be_bytes(f[l4 + 24 + o..l4 + 28 + o].try_into().unwrap());
        assert_eq!((edge(0), edge(4)), (1033, 1039));
    }

    #[test]
    fn sack_blocks_of_the_other_direction_move_back() {
        // A server segment with a SACK option acknowledging client data
        // past a grown PORT command.
        let f = tcp((P, 40000), (C, 21), ACK, 5000, 2000, b"");
        let mut f = with_options(f, &sack_opt(2100, 2200));
        let l4 = 14 + 20;
        let p = sound(&f);
        let mut other = crate::helper::SeqAdj::default();
        other.set(1500, 3);
        let fix = PacketFix {
            seqadj: Some([crate::helper::SeqAdj::default(), other]),
            mangle: None,
        };
        let n = apply_fix(&mut f, &p, &fix, ChecksumMode::Incremental).unwrap();
        assert_eq!(n, f.len());
        sound(&f);
        assert_eq!(seq_ack(&f), (5000, 1997));
        let edge = |o: usize| u32::from_be_bytes(f[l4 + 24 + o..l4 + 28 + o].try_into().unwrap());
        assert_eq!((edge(0), edge(4)), (2097, 2197));
    }
}
