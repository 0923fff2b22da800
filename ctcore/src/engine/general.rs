//! The packets off the plain path: parse errors (a malformed L4 header is
//! INVALID), fragments, ICMP (an error is RELATED to the connection of the
//! datagram it quotes), and the protocols other than TCP and UDP.

use super::new_conn::Pending;
use super::packet::{ConnHandle, CtResult, Pkt, Verdict};
use super::track::{invalid, l4_checksum_verdict, packet_tuple, tuple_ports};
use super::{Engine, Worker};
use crate::checksum;
use crate::conn::CtInfo;
use crate::nat::rewrite::Translation;
use crate::proto::icmp;
use crate::table::{Guard, Key, Prefetch};
use crate::tuple::{Dir, Family, Tuple};
use crate::wire::{self, InnerTuple, ParseError, Parsed, L4};

/// The tuple of the datagram an ICMP error quotes, in `zone`.
pub(super) fn quoted_tuple(i: &InnerTuple, zone: u16) -> Tuple {
    Tuple {
        src: i.src,
        dst: i.dst,
        src_port: i.src_port,
        dst_port: i.dst_port,
        proto: i.proto,
        family: i.family,
        zone,
    }
}

impl<P: Prefetch> Engine<P> {
    /// [`Engine::track`] for what is not a plain packet: parse errors,
    /// fragments, ICMP, other protocols.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn track_other(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        key: &mut Option<Key>,
        res: &mut CtResult,
        pending: &mut Pending,
    ) -> Option<usize> {
        if let Err(e) = res.parsed {
            // L3 errors never reach conntrack (ip_rcv / ipv6_rcv drop them);
            // a malformed L4 header is INVALID.
            if matches!(
                e,
                ParseError::TruncatedL4
                    | ParseError::BadTcpHeaderLen
                    | ParseError::BadUdpLen
                    | ParseError::BadIpv6ExtHeader
            ) {
                w.stats.invalid += 1;
                res.invalid_reason = Some(e.name());
                // The IP header is sound: the packet is routed and
                // filtered as INVALID (`ct state invalid`), as in the
                // kernel, not dropped unseen by the policy.
                if let Ok(l3) = wire::parse_l3_of_l4_error(pkt.frame) {
                    res.parsed = Ok(l3);
                }
            }
            return None;
        }
        // The parse is read in place while the verdict is written.
        let (parsed, mut v) = res.split();
        let Ok(p) = parsed else { return None };
        let frag_slot = p
            .frag
            .map(|f| (self.frag_note(w, now_ms, p, &f, pkt.zone), f));
        if let Some((slot, f)) = frag_slot {
            if f.offset != 0 {
                pending.set(self.follow_fragment(g, w, now_ms, p, slot, &mut v));
                return None;
            }
        }
        if !l4_checksum_verdict(w, pkt.rx_csum, || {
            checksum::l4_checksum_ok_conntrack(pkt.frame, p)
        }) {
            invalid(w, &mut v, "bad L4 checksum");
            return None;
        }
        let tuple = self.tuple_of(g, w, now_ms, pkt, p, &mut v)?;
        self.track_tuple(g, w, now_ms, pkt, p, tuple, key, None, &mut v, pending);
        if let Some((slot, _)) = frag_slot {
            if v.conn.is_some() || pending.is_some() {
                // A first fragment: the rest of the datagram follows this connection.
                w.frags[slot].tuple = Some(tuple);
                if pending.is_some() && !w.frags[slot].complete() {
                    return Some(slot);
                }
            }
        }
        None
    }

    /// The tuple of a packet, or None (with `res` filled in) for packets that are
    /// INVALID, UNTRACKED or RELATED (ICMP errors) and need no lookup of their own.
    #[inline]
    fn tuple_of(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        res: &mut Verdict<'_>,
    ) -> Option<Tuple> {
        match p.l4 {
            L4::Tcp(info) if !crate::proto::tcp::tcp_error_flags_ok(info.flags) => {
                invalid(w, res, "tcp: invalid flag combination");
                return None;
            }
            L4::Icmp(ic) => {
                if ic.is_error {
                    self.related(g, w, now_ms, pkt, p, ic.inner, res);
                    return None;
                }
                if p.family == Family::V6 && icmp::icmpv6_untracked(ic.icmp_type) {
                    w.stats.ignore += 1;
                    *res.ctinfo = CtInfo::Untracked;
                    return None;
                }
                if p.family == Family::V4 && ic.icmp_type > icmp::NR_ICMP_TYPES {
                    invalid(w, res, "icmp: invalid type");
                    return None;
                }
            }
            _ => {}
        }
        Some(packet_tuple(p, tuple_ports(p), pkt.zone))
    }

    /// ICMP errors: RELATED to the connection of the quoted datagram
    /// (nf_conntrack_inet_error), INVALID when none matches.
    #[allow(clippy::too_many_arguments)]
    fn related(
        &self,
        g: &mut Guard<'_>,
        w: &mut Worker,
        now_ms: u64,
        pkt: &Pkt<'_>,
        p: &Parsed,
        inner: Option<InnerTuple>,
        res: &mut Verdict<'_>,
    ) {
        let Some(inner) = inner else {
            invalid(w, res, "icmp: error quotes no parseable datagram");
            return;
        };
        let Some(lookup) = quoted_tuple(&inner, pkt.zone).invert() else {
            invalid(w, res, "icmp: quoted tuple cannot be inverted");
            return;
        };
        let key = self.table.key(&lookup);
        let Some((r, dir)) = self.find_live(g, w, now_ms, key, None, &lookup) else {
            invalid(w, res, "icmp: error for no known connection");
            return;
        };
        let c = g.conn(r);
        // The error must go to the host that sent the quoted datagram.
        if c.tuples[dir.index()].dst != p.dst {
            invalid(w, res, "icmp: outer destination is not the quoted source");
            return;
        }
        w.stats.found += 1;
        *res.ctinfo = if dir == Dir::Reply {
            CtInfo::RelatedReply
        } else {
            CtInfo::Related
        };
        *res.dir = dir;
        *res.mark = c.mark;
        *res.rewrite = Translation::for_packet(&c, dir, true);
        *res.conn = Some(ConnHandle {
            stripe: r.stripe,
            local: r.local,
            id: c.id,
        });
    }
}
