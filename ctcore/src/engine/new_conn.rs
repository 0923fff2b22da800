//! A new connection: built unconfirmed, in place, by its first packet
//! (init_conntrack and the tracker's first look), and confirmed into the
//! table once that packet is accepted (__nf_conntrack_confirm).

use super::packet::{ConnHandle, CtResult, Pkt, Verdict};
use super::track::{invalid, l4_bytes, options, Tracked};
use super::{Engine, Worker};
use crate::conn::{Conn, CtInfo, Ext, ProtoState, Status};
use crate::event::EventKind;
use crate::helper::Helper;
use crate::proto::sctp::SctpState;
use crate::proto::tcp::{TcpSegment, TcpState};
use crate::proto::udp;
use crate::table::{Clash, Eviction, Guard, InsertError, Key, Prefetch};
use crate::tuple::{Dir, Tuple};
use crate::wire::{Parsed, L4};

/// The unconfirmed connection a packet started, if any: one slot per
/// burst, reused packet after packet. A new connection is written into it
/// field by field (building a 208-byte `Conn` and moving it in waited on
/// store forwarding: most of `new_conn`'s time).
pub(super) struct Pending {
    pub(super) conn: Conn,
    /// Its counters and start time, for the table's extensions.
    pub(super) ext: Ext,
    pub(super) live: bool,
}

impl Pending {
    pub(super) fn get_mut(&mut self) -> Option<&mut Conn> {
        self.live.then_some(&mut self.conn)
    }

    pub(super) fn is_some(&self) -> bool {
        self.live
    }

    pub(super) fn clear(&mut self) {
        self.live = false;
    }

    pub(super) fn set(&mut self, c: Option<(Conn, Ext)>) {
        match c {
            Some((c, ext)) => {
                self.conn = c;
                self.ext = ext;
                self.live = true;
            }
            None => self.live = false,
        }
    }

    /// A new connection: tuples `t` and `reply`, created `now_ms`, with
    /// protocol state `proto`; every other field as `Conn::default()`.
    #[inline(always)]
    pub(super) fn start(
        &mut self,
        t: &Tuple,
        reply: &Tuple,
        now_ms: u64,
        proto: ProtoState,
    ) -> &mut Conn {
        let c = &mut self.conn;
        c.tuples[0] = *t;
        c.tuples[1] = *reply;
        c.deadline_ms = 0;
        c.status = Status::default();
        c.id = 0;
        c.proto = proto;
        c.mark = 0;
        c.nat_csum = None;
        c.helper = Helper::None;
        debug_assert_eq!(
            *c,
            Conn {
                tuples: [*t, *reply],
                proto,
                ..Conn::default()
            },
            "Pending::start sets every field"
        );
        self.ext = Ext {
            counters: Default::default(),
            start_ms: now_ms,
        };
        self.live = true;
        &mut self.conn
    }
}

impl<P: Prefetch> Engine<P> {
    /// init_conntrack + the tracker's first packet: an unconfirmed connection
    /// (into `pending`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_conn(
        &self,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        t: Tuple,
        res: &mut Verdict<'_>,
        pending: &mut Pending,
    ) {
        let Some(mut reply) = t.invert() else {
            invalid(w, res, "cannot invert tuple");
            return;
        };
        reply.zone = pkt.reply_zone;
        let proto = match p.l4 {
            L4::Tcp(info) => match TcpState::new(
                &TcpSegment {
                    info,
                    options: options(pkt.frame, &info),
                },
                &w.tun.tcp,
            ) {
                Ok(s) => ProtoState::Tcp(s),
                Err(why) => {
                    invalid(w, res, why);
                    return;
                }
            },
            L4::Udp { .. } => ProtoState::Stream {
                stream_ts_ms: crate::conn::Ms4::new(now_ms + udp::STREAM_AFTER_MS),
            },
            L4::Icmp(_) => ProtoState::Icmp,
            L4::Sctp { .. } => match SctpState::new(l4_bytes(pkt.frame, p)) {
                Ok(s) => ProtoState::Sctp(s),
                Err(why) => {
                    invalid(w, res, why);
                    return;
                }
            },
            _ => ProtoState::Generic,
        };
        // Built where it is kept (no 208-byte copy), and taken back if the
        // tracker keeps nothing.
        let conn = pending.start(&t, &reply, now_ms, proto);
        match self.run_tracker(w, now_ms, pkt, p, conn, Dir::Orig) {
            Tracked::Accept { timeout_ms, kill } => {
                if kill {
                    // Accepted, but nothing to keep.
                    *res.ctinfo = CtInfo::New;
                    pending.clear();
                    return;
                }
                w.stats.new += 1;
                conn.deadline_ms = now_ms + timeout_ms;
                account(&mut pending.ext, Dir::Orig, p);
                *res.ctinfo = CtInfo::New;
                *res.dir = Dir::Orig;
            }
            Tracked::Ignore => {
                *res.ctinfo = CtInfo::New;
                pending.clear();
            }
            Tracked::Invalid(why) => {
                invalid(w, res, why);
                pending.clear();
            }
            Tracked::Repeat => {
                invalid(w, res, "tcp: repeat on a new connection");
                pending.clear();
            }
        }
    }

    /// __nf_conntrack_confirm: insert a new connection, evicting a non-assured
    /// one if the table is full (early_drop).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn confirm(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        conn: &Conn,
        ext: &Ext,
        looked_up: Option<Key>,
        res: &mut CtResult,
    ) {
        // An expired connection still holding a tuple gives way (the kernel's
        // lookups never see expired entries). The packet's lookup already
        // cleared the original tuple, and with it the reply tuple unless NAT
        // changed it; source NAT's port search clears the one it picks. Left:
        // a reply tuple only destination NAT changed.
        if conn.status.has(Status::DST_NAT) && !conn.status.has(Status::SRC_NAT) {
            g.taken(&conn.tuples[1], now_ms, &mut |dead| {
                w.stats.expired += 1;
                w.events.push(EventKind::Destroy, now_ms, &dead);
            });
        }
        // Source NAT's port search looked the reply tuple up under this
        // guard too (its key is left in `claimed`).
        let claimed = if conn.status.has(Status::SRC_NAT) {
            w.claimed.take()
        } else {
            None
        };
        let clash_check = match (looked_up, claimed) {
            (Some(key), Some(reply)) => Clash::Neither(key, reply),
            (Some(key), None) => Clash::ReplyOnly(key),
            (None, _) => Clash::Both,
        };
        // The evicted connection is copied out only for an event.
        let mut evicted = Eviction {
            snapshot: w.events.enabled(),
            ..Eviction::default()
        };
        match g.insert(conn, clash_check, true, &mut evicted) {
            Ok((r, id)) => {
                if evicted.evicted {
                    w.stats.early_drop += 1;
                }
                if let Some(dead) = evicted.dead {
                    w.events.push(EventKind::Destroy, now_ms, &dead);
                }
                w.stats.insert += 1;
                if self.accounting {
                    g.set_ext(r, *ext);
                }
                res.conn = Some(ConnHandle {
                    stripe: r.stripe,
                    local: r.local,
                    id,
                });
                if w.events.enabled() {
                    let l = g.listed(r);
                    w.events.push(EventKind::New, now_ms, &l);
                } else {
                    w.events.note_new(&conn.tuples[0]);
                }
            }
            Err(InsertError::Full) => {
                w.stats.drop += 1;
                w.stats.insert_failed += 1;
                res.ct_drop = Some("table_full");
            }
            Err(InsertError::Clash) => {
                w.stats.insert_failed += 1;
                res.ct_drop = Some("insert_clash");
            }
        }
    }
}

/// nf_ct_acct_update: packets and L3 bytes per direction, of a connection
/// not yet in the table.
pub(super) fn account(e: &mut Ext, dir: Dir, p: &Parsed) {
    let ctr = &mut e.counters[dir.index()];
    ctr.packets += 1;
    ctr.bytes += p.l3_len as u64;
}
