//! Fragments without reassembly: one datagram's fragments follow the
//! connection of its first fragment, and a connection a first fragment
//! starts waits, unconfirmed, until its datagram is complete.

use super::new_conn::account;
use super::packet::{ConnHandle, Verdict};
use super::track::{ctinfo_for, invalid};
use super::{Engine, Worker};
use crate::conn::{Conn, CtInfo, Ext};
use crate::nat::rewrite::Translation;
use crate::table::{Guard, Prefetch};
use crate::tuple::{Dir, Family, Tuple};
use crate::wire::{self, Frag, Parsed};

pub(super) const FRAG_SLOTS: usize = 1024;
/// How long a first fragment's translation is remembered (ipfrag_time).
const FRAG_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FragKey {
    family: Family,
    src: wire::Addr,
    dst: wire::Addr,
    proto: u8,
    id: u32,
    zone: u16,
}

/// Virtual reassembly of one datagram: which connection its fragments follow,
/// and how many of its bytes have passed. As the kernel (which defragments before
/// conntrack) creates a connection only from a complete datagram, a connection
/// started by a first fragment waits here, unconfirmed, until the set completes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FragEntry {
    key: FragKey,
    /// The tuple the first fragment carried, once seen.
    pub(super) tuple: Option<Tuple>,
    /// The unconfirmed connection the first fragment started, with its counters.
    pub(super) pending: Option<(Conn, Ext)>,
    /// Fragment payload bytes seen.
    bytes: u32,
    /// The datagram's payload length, once the last fragment was seen.
    total: Option<u32>,
    expires_ms: u64,
}

impl FragEntry {
    pub(super) fn complete(&self) -> bool {
        self.total.is_some_and(|t| self.bytes >= t)
    }
}

fn frag_key(p: &Parsed, f: &Frag, zone: u16) -> FragKey {
    FragKey {
        family: p.family,
        src: p.src,
        dst: p.dst,
        proto: p.proto,
        id: f.id,
        zone,
    }
}

fn frag_slot(k: &FragKey) -> usize {
    let t = Tuple {
        src: k.src,
        dst: k.dst,
        src_port: k.id as u16,
        dst_port: (k.id >> 16) as u16,
        proto: k.proto,
        family: k.family,
        zone: k.zone,
    };
    (t.hash(0x5eed) as usize) % FRAG_SLOTS
}

impl<P: Prefetch> Engine<P> {
    /// Notes a fragment's bytes in its datagram's reassembly entry; returns the slot.
    pub(super) fn frag_note(
        &self,
        w: &mut Worker,
        now_ms: u64,
        p: &Parsed,
        f: &Frag,
        zone: u16,
    ) -> usize {
        let k = frag_key(p, f, zone);
        let slot = frag_slot(&k);
        let e = &mut w.frags[slot];
        if e.key != k || now_ms >= e.expires_ms {
            if now_ms < e.expires_ms && !e.complete() {
                w.stats.frag_evicted += 1;
            }
            *e = FragEntry {
                key: k,
                expires_ms: now_ms + FRAG_TIMEOUT_MS,
                ..FragEntry::default()
            };
        }
        let payload = (p.l3_offset as u32 + p.l3_len as u32).saturating_sub(p.l4_offset as u32);
        e.bytes += payload;
        if !f.more {
            e.total = Some(f.offset as u32 + payload);
        }
        slot
    }

    /// A non-first fragment follows its first fragment's connection. If it
    /// completes a datagram whose first fragment started a connection, that
    /// connection is returned for confirmation.
    pub(super) fn follow_fragment(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        p: &Parsed,
        slot: usize,
        res: &mut Verdict<'_>,
    ) -> Option<(Conn, Ext)> {
        let e = w.frags[slot];
        let Some(tuple) = e.tuple else {
            w.stats.frag_orphan += 1;
            invalid(w, res, "fragment before its first fragment");
            return None;
        };
        w.stats.frag_followed += 1;
        if let Some((conn, mut ext)) = e.pending {
            let dir = if conn.tuples[0] == tuple {
                Dir::Orig
            } else {
                Dir::Reply
            };
            account(&mut ext, dir, p);
            *res.ctinfo = CtInfo::New;
            *res.dir = dir;
            *res.rewrite = Translation::for_packet(&conn, dir, false);
            if e.complete() {
                w.frags[slot].pending = None;
                return Some((conn, ext));
            }
            w.frags[slot].pending = Some((conn, ext));
            return None;
        }
        let key = self.table.key(&tuple);
        match self.find_live(g, w, now_ms, key, None, &tuple) {
            Some((r, dir)) => {
                if self.accounting {
                    g.account(r, dir, u64::from(p.l3_len));
                }
                let c = g.conn(r);
                *res.mark = c.mark;
                *res.ctinfo = ctinfo_for(c.status, dir);
                *res.dir = dir;
                Translation::write_for_packet(res.rewrite, &c, dir, false);
                *res.conn = Some(ConnHandle {
                    stripe: r.stripe,
                    local: r.local,
                    id: c.id,
                });
            }
            None => {
                w.stats.frag_orphan += 1;
                invalid(w, res, "fragment of a datagram whose connection is gone");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    /// The fragment slots are a fixed table: an unfinished datagram whose
    /// slot another datagram's fragment takes is counted, and its later
    /// fragments are orphans (INVALID), as the count says.
    #[test]
    fn a_fragment_slot_taken_over_is_counted() {
        let e = engine(1000);
        let mut w = e.worker(0);
        let with_id = |id: u16| {
            let mut q = udp(C, S, 4000 + id, 53);
            q[18..20].copy_from_slice(&id.to_be_bytes());
            fragments(&q, &[16])
        };
        let slot = |f: &[u8]| {
            let p = wire::parse(f).unwrap();
            frag_slot(&frag_key(&p, &p.frag.unwrap(), 0))
        };
        let a = with_id(1);
        let b = (2..u16::MAX)
            .map(with_id)
            .find(|b| slot(&b[0]) == slot(&a[0]))
            .expect("two datagrams sharing a slot");
        let accept = Decision::Accept(Egress::NONE);
        assert_eq!(run(&e, &mut w, 0, &a[0], accept).ctinfo, CtInfo::New);
        assert_eq!(w.stats.frag_evicted, 0);
        assert_eq!(run(&e, &mut w, 1, &b[0], accept).ctinfo, CtInfo::New);
        assert_eq!(w.stats.frag_evicted, 1, "a's entry taken over");
        assert_ne!(run(&e, &mut w, 2, &b[1], accept).ctinfo, CtInfo::Invalid);
        // a's rest is an orphan; it takes over b's finished entry uncounted.
        assert_eq!(run(&e, &mut w, 3, &a[1], accept).ctinfo, CtInfo::Invalid);
        assert_eq!(w.stats.frag_orphan, 1);
        assert_eq!(w.stats.frag_evicted, 1);
    }
}
