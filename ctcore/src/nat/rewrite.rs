//! Applying a translation to a frame: addresses, ports, ICMP ids, and for ICMP
//! errors the quoted header too, with incremental checksum updates (RFC 1624)
//! or, for TX checksum offload, with the L4 checksum left for the NIC.

use crate::checksum::{checksum, combine, l4_checksum, update_addr, update_u16};
use crate::conn::{Conn, NatCsum, Status};
use crate::table::record::{self, Hot, RecMut};
use crate::tuple::{
    Addr, Dir, Family, Tuple, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    IPPROTO_UDPLITE,
};
use crate::wire::{Parsed, L4};

/// A packet's translation, as the engine hands it out: the common case
/// compact, every other case as a [`Rewrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// A packet of a translated IPv4 TCP / UDP connection that carries
    /// checksum deltas, not an ICMP error: see [`V4Nat`].
    V4(V4Nat),
    /// Anything else (ICMP, ICMP errors, IPv6, no deltas).
    General(Rewrite),
}

/// The common translation: the endpoints an IPv4 TCP / UDP packet of its
/// connection leaves with (both, the unchanged one too: what it already
/// carries) and what they add to its checksums. Applying it is stores and
/// two additions, without a test per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V4Nat {
    /// Source and destination address after translation (IPv4 in the first
    /// 4 bytes, as in the tuples).
    pub src: Addr,
    pub dst: Addr,
    /// Source and destination port after translation, in network order.
    pub ports: [u8; 4],
    pub csum: NatCsum,
    /// Which endpoints change (bit 0 the source, bit 1 the destination):
    /// what [`Translation::src`] / [`Translation::dst`] report.
    pub changes: u8,
}

/// What to change in one packet: the new source and/or destination endpoint.
/// For an ICMP error (`related`), the outer addresses change and the quoted
/// datagram is translated back with `inner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub src: Option<(Addr, u16)>,
    pub dst: Option<(Addr, u16)>,
    pub related: bool,
    pub inner_src: Option<(Addr, u16)>,
    pub inner_dst: Option<(Addr, u16)>,
    /// ICMP / ICMPv6 echo id after translation (the tuples' `src_port`).
    pub id: Option<u16>,
    /// The quoted ICMP echo's id after translation back.
    pub inner_id: Option<u16>,
}

const CHANGES_SRC: u8 = 1;
const CHANGES_DST: u8 = 2;

impl Translation {
    /// The translation of a packet travelling in `dir` on `c` (nf_nat_packet):
    /// a source-NATed connection rewrites the source of original packets and
    /// the destination of replies; destination NAT the other way round. None
    /// if `c` is not translated.
    pub fn for_packet(c: &Conn, dir: Dir, related: bool) -> Option<Translation> {
        let mut out = None;
        Translation::write_for_packet(&mut out, c, dir, related);
        out
    }

    /// `*out = Translation::for_packet(c, dir, related)`, written in place:
    /// the per-packet form (a returned value is copied with wide loads of
    /// what was just stored narrowly, which stalls store forwarding).
    /// Untranslated connections, most of them, are answered inline.
    #[inline(always)]
    pub fn write_for_packet(out: &mut Option<Translation>, c: &Conn, dir: Dir, related: bool) {
        if c.status.0 & (Status::SRC_NAT | Status::DST_NAT) == 0 {
            *out = None;
            return;
        }
        Translation::write_translated(out, c, dir, related);
    }

    /// [`Translation::write_for_packet`] for a packet (not related) of a
    /// record in the table: the common translations from its hot line
    /// alone (IPv4 addresses, ports and checksum deltas are there).
    #[inline(always)]
    pub fn write_for_record(out: &mut Option<Translation>, c: &RecMut<'_>, dir: Dir) {
        if !Self::write_for_hot(out, c.hot, dir) {
            Translation::write_translated(out, &c.conn(), dir, false);
        }
    }

    /// [`Translation::write_for_record`] from the record's hot line alone:
    /// false (nothing written) for a translated connection without
    /// checksum deltas, whose translation needs the whole connection.
    #[inline(always)]
    pub fn write_for_hot(out: &mut Option<Translation>, hot: &Hot, dir: Dir) -> bool {
        let status = hot.status;
        if status.0 & (Status::SRC_NAT | Status::DST_NAT) == 0 {
            *out = None;
            return true;
        }
        if status.0 & record::CSUM == 0 {
            return false;
        }
        let other = &hot.tuples[dir.other().index()];
        let (change_src, change_dst) = Rewrite::changes_of(status, dir);
        let mut ports = [0u8; 4];
        ports[..2].copy_from_slice(&other.dst_port().to_be_bytes());
        ports[2..].copy_from_slice(&other.src_port().to_be_bytes());
        *out = Some(Translation::V4(V4Nat {
            src: Addr::from_v4(other.dst_v4()),
            dst: Addr::from_v4(other.src_v4()),
            ports,
            csum: hot.nat_csum[dir.index()],
            changes: u8::from(change_src) * CHANGES_SRC + u8::from(change_dst) * CHANGES_DST,
        }));
        true
    }

    #[inline]
    fn write_translated(out: &mut Option<Translation>, c: &Conn, dir: Dir, related: bool) {
        match &c.nat_csum {
            // Deltas mean an IPv4 TCP / UDP connection: the packet leaves
            // with the other tuple's endpoints swapped (what
            // Rewrite::for_packet gives for the ends that change; the others
            // it already carries, since it matched its direction's tuple).
            Some(d) if !related => {
                let other = &c.tuples[dir.other().index()];
                let (change_src, change_dst) = Rewrite::changes(c, dir);
                let mut ports = [0u8; 4];
                ports[..2].copy_from_slice(&other.dst_port.to_be_bytes());
                ports[2..].copy_from_slice(&other.src_port.to_be_bytes());
                *out = Some(Translation::V4(V4Nat {
                    // The IPv4 words alone: copying the tuples' 16-byte
                    // addresses whole measured slower (a stall at the load).
                    src: Addr::from_v4_whole(other.dst.v4_octets()),
                    dst: Addr::from_v4_whole(other.src.v4_octets()),
                    ports,
                    csum: d[dir.index()],
                    changes: u8::from(change_src) * CHANGES_SRC
                        + u8::from(change_dst) * CHANGES_DST,
                }));
            }
            _ => *out = Rewrite::for_packet(c, dir, related).map(Translation::General),
        }
    }

    /// The new source endpoint, if the source changes.
    pub fn src(&self) -> Option<(Addr, u16)> {
        match self {
            Translation::V4(n) => (n.changes & CHANGES_SRC != 0)
                .then(|| (n.src, u16::from_be_bytes([n.ports[0], n.ports[1]]))),
            Translation::General(rw) => rw.src,
        }
    }

    /// The new destination endpoint, if the destination changes.
    pub fn dst(&self) -> Option<(Addr, u16)> {
        match self {
            Translation::V4(n) => (n.changes & CHANGES_DST != 0)
                .then(|| (n.dst, u16::from_be_bytes([n.ports[2], n.ports[3]]))),
            Translation::General(rw) => rw.dst,
        }
    }

    /// The destination address the packet leaves with, if the translation
    /// names it (a compact one always does), borrowed in place.
    pub fn dst_addr(&self) -> Option<&Addr> {
        match self {
            Translation::V4(n) => Some(&n.dst),
            Translation::General(rw) => rw.dst.as_ref().map(|(a, _)| a),
        }
    }

    /// The same translation as a [`Rewrite`] (the ends that change).
    pub fn general(&self) -> Rewrite {
        match self {
            Translation::V4(_) => Rewrite {
                src: self.src(),
                dst: self.dst(),
                ..Rewrite::default()
            },
            Translation::General(rw) => *rw,
        }
    }
}

impl Rewrite {
    /// The translation of a packet travelling in `dir` on `c`, in the general
    /// form (see [`Translation::for_packet`]): the target endpoint is the
    /// inverse of the other direction's tuple. None if `c` is not translated.
    pub fn for_packet(c: &Conn, dir: Dir, related: bool) -> Option<Rewrite> {
        if c.status.0 & (Status::SRC_NAT | Status::DST_NAT) == 0 {
            return None;
        }
        let other = &c.tuples[dir.other().index()];
        if related || other.is_icmp() {
            return Rewrite::via_inverted(c, dir, related);
        }
        // Without building the inverted tuple: this direction's packets must
        // carry the other tuple's endpoints swapped (what via_inverted
        // gives; a test compares the two).
        let (change_src, change_dst) = Rewrite::changes(c, dir);
        Some(Rewrite {
            src: change_src.then_some((other.dst, other.dst_port)),
            dst: change_dst.then_some((other.src, other.src_port)),
            ..Rewrite::default()
        })
    }

    /// Which endpoints a packet in `dir` has translated: (source, destination).
    fn changes(c: &Conn, dir: Dir) -> (bool, bool) {
        Rewrite::changes_of(c.status, dir)
    }

    /// [`Rewrite::changes`] of a connection with `status`.
    #[inline(always)]
    fn changes_of(status: Status, dir: Dir) -> (bool, bool) {
        let snat = status.has(Status::SRC_NAT);
        let dnat = status.has(Status::DST_NAT);
        match dir {
            Dir::Orig => (snat, dnat),
            Dir::Reply => (dnat, snat),
        }
    }

    /// The translation worked out through the inverse of the other
    /// direction's tuple: any packet (ICMP ids, ICMP errors' quoted datagram).
    fn via_inverted(c: &Conn, dir: Dir, related: bool) -> Option<Rewrite> {
        let other = &c.tuples[dir.other().index()];
        let (change_src, change_dst) = Rewrite::changes(c, dir);
        // The tuple this direction's packets must carry after translation.
        let target = other.invert()?;
        let mut rw = Rewrite {
            related,
            ..Rewrite::default()
        };
        if change_src {
            rw.src = Some((target.src, target.src_port));
        }
        if change_dst {
            rw.dst = Some((target.dst, target.dst_port));
        }
        if target.is_icmp() {
            rw.id = Some(target.src_port);
        }
        if related {
            // The quoted datagram travelled the other way: make it look as it
            // did before translation (nf_nat_icmp_reply_translation).
            let (inner_src, inner_dst) = Rewrite::changes(c, dir.other());
            if inner_src {
                rw.inner_src = Some((other.src, other.src_port));
            }
            if inner_dst {
                rw.inner_dst = Some((other.dst, other.dst_port));
            }
            if other.is_icmp() {
                rw.inner_id = Some(other.src_port);
            }
        }
        Some(rw)
    }
}

/// The checksum deltas of a translated IPv4 TCP / UDP connection, per
/// direction (what [`apply`]'s common case would add up for each packet:
/// the same terms, so the same checksums); None for anything else.
pub fn csum_deltas(c: &Conn) -> Option<[NatCsum; 2]> {
    let o = &c.tuples[0];
    if o.family != Family::V4
        || !matches!(o.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE)
        || c.status.0 & (Status::SRC_NAT | Status::DST_NAT) == 0
    {
        return None;
    }
    let (o, r) = (&c.tuples[0], &c.tuples[1]);
    // The two ends a translation swaps: the original source and the
    // reply's destination under source NAT, the original destination and
    // the reply's source under destination NAT. Each end's terms are those
    // [`apply_v4_ports`] adds for it (its address only if it changes), so
    // the deltas are the same sums.
    let word = |a: &Addr| u32::from_ne_bytes(a.v4_octets());
    let port = |p: u16| u32::from(u16::from_ne_bytes(p.to_be_bytes()));
    let not = |x: u32| u32::from(!(x as u16));
    let sum = |x: u32| u32::from(combine(x as u16, (x >> 16) as u16));
    // (ip terms, port terms) of an end changing from `old` to `new`, and
    // of the same end changing back.
    let end = |old: (&Addr, u16), new: (&Addr, u16)| {
        let (a, b) = (word(old.0), word(new.0));
        let (pa, pb) = (port(old.1), port(new.1));
        let (sa, sb) = if a != b { (sum(a), sum(b)) } else { (0, 0) };
        let ip = |from: u32, to: u32| if a != b { not(from) + to } else { 0 };
        ((ip(sa, sb), not(pa) + pb), (ip(sb, sa), not(pb) + pa))
    };
    let none = ((0, 0), (0, 0));
    // Source NAT: the original packets' source, the replies' destination.
    let (s_orig, s_reply) = if c.status.has(Status::SRC_NAT) {
        end((&o.src, o.src_port), (&r.dst, r.dst_port))
    } else {
        none
    };
    // Destination NAT: the original packets' destination, the replies' source.
    let (d_orig, d_reply) = if c.status.has(Status::DST_NAT) {
        end((&o.dst, o.dst_port), (&r.src, r.src_port))
    } else {
        none
    };
    let delta = |x: (u32, u32), y: (u32, u32)| NatCsum {
        ip: fold32(x.0 + y.0),
        l4: fold32(x.0 + y.0 + x.1 + y.1),
    };
    let out = [delta(s_orig, d_orig), delta(s_reply, d_reply)];
    Some(out)
}

/// How L4 checksums are produced after a rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// Update in place (RFC 1624).
    Incremental,
    /// The NIC computes TCP/UDP checksums (TX offload): leave them, but seeded
    /// with the pseudo-header checksum as NICs expect.
    Offload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("the frame is shorter than its headers")]
    Truncated,
}

fn get16(f: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([f[o], f[o + 1]])
}
fn put16(f: &mut [u8], o: usize, v: u16) {
    f[o..o + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a 16-bit field (a port, an ICMP id) covered by checksum `c`,
/// updating `c` (RFC 1624).
#[inline(always)]
fn set16(f: &mut [u8], o: usize, v: u16, c: &mut u16) {
    *c = update_u16(*c, get16(f, o), v);
    put16(f, o, v);
}

/// Offsets of the address fields of an IP header at `l3` and their width.
fn addr_offsets(family: Family, l3: usize) -> (usize, usize, usize) {
    match family {
        Family::V4 => (l3 + 12, l3 + 16, 4),
        Family::V6 => (l3 + 8, l3 + 24, 16),
    }
}

/// Where an L4 checksum lives for `proto`, if the packet has one to keep up.
fn l4_csum_offset(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP | IPPROTO_UDPLITE => Some(6),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => Some(2),
        _ => None,
    }
}

/// Rewrites one IP header's addresses (and the IPv4 header checksum); returns the
/// old and new addresses for pseudo-header checksum updates.
fn rewrite_l3(f: &mut [u8], family: Family, l3: usize, src: Option<Addr>, dst: Option<Addr>) {
    let (so, dof, w) = addr_offsets(family, l3);
    for (off, new) in [(so, src), (dof, dst)] {
        let Some(new) = new else { continue };
        if family == Family::V4 {
            let c = update_addr(get16(f, l3 + 10), &f[off..off + w], &new.0[..w]);
            put16(f, l3 + 10, c);
        }
        f[off..off + w].copy_from_slice(&new.0[..w]);
    }
}

/// Applies `rw` to `frame` (parsed as `p`). Non-first fragments get the L3 part
/// only. With `Offload`, TCP/UDP checksums are left to the NIC (set to the
/// pseudo-header sum); ICMP checksums are always updated here.
///
/// The common case (an unfragmented IPv4 TCP or UDP packet, checksums
/// updated here) is inline in the caller; the rest is [`apply_general`].
#[inline]
pub fn apply(
    frame: &mut [u8],
    p: &Parsed,
    rw: &Rewrite,
    mode: ChecksumMode,
) -> Result<(), RewriteError> {
    match v4_shape(frame.len(), p, mode) {
        Some(at) if !rw.related => apply_v4_ports(frame, at, rw),
        _ => apply_general(frame, p, rw, mode)?,
    }
    Ok(())
}

/// [`apply`] for the engine's form: a compact translation on an
/// unfragmented TCP or UDP packet, checksums updated here, is its stores
/// and deltas; anything else goes the general way.
#[inline]
pub fn apply_translation(
    frame: &mut [u8],
    p: &Parsed,
    t: &Translation,
    mode: ChecksumMode,
) -> Result<(), RewriteError> {
    match t {
        Translation::General(rw) => apply(frame, p, rw, mode),
        Translation::V4(n) => {
            match v4_shape(frame.len(), p, mode) {
                Some(at) => apply_v4_nat(frame, at, n),
                None => apply_general(frame, p, &t.general(), mode)?,
            }
            Ok(())
        }
    }
}

/// Where the fast paths write in an IPv4 packet: its IP header, its L4
/// header, its L4 checksum, and whether it is UDP (a zero checksum: none).
#[derive(Clone, Copy)]
struct V4At {
    l3: usize,
    l4: usize,
    csum_off: usize,
    udp: bool,
}

/// The common case of both apply functions: an unfragmented IPv4 TCP or
/// UDP packet, whole in the frame, checksums updated here. None for the
/// rest, which goes the general way.
#[inline(always)]
fn v4_shape(frame_len: usize, p: &Parsed, mode: ChecksumMode) -> Option<V4At> {
    let (l3, l4, end) = spans(p);
    if p.family != Family::V4
        || mode != ChecksumMode::Incremental
        || !matches!(p.l4, L4::Tcp(_) | L4::Udp { .. })
        || p.frag.is_some()
        || frame_len < end
    {
        return None;
    }
    let tcp = p.proto == IPPROTO_TCP;
    let csum_off = l4 + if tcp { 16 } else { 6 };
    (csum_off + 2 <= end).then_some(V4At {
        l3,
        l4,
        csum_off,
        udp: !tcp,
    })
}

/// Where a parsed packet's IP header, L4 header and IP payload end are.
#[inline(always)]
fn spans(p: &Parsed) -> (usize, usize, usize) {
    let l3 = p.l3_offset as usize;
    (l3, p.l4_offset as usize, l3 + p.l3_len as usize)
}

/// [`apply`] for every other packet.
#[inline(never)]
fn apply_general(
    frame: &mut [u8],
    p: &Parsed,
    rw: &Rewrite,
    mode: ChecksumMode,
) -> Result<(), RewriteError> {
    let (l3, l4, end) = spans(p);
    if frame.len() < end || end < l4 {
        return Err(RewriteError::Truncated);
    }
    let (so, dof, w) = addr_offsets(p.family, l3);
    let old_src: Addr = addr_at(frame, so, w);
    let old_dst: Addr = addr_at(frame, dof, w);
    let new_src = rw.src.map(|(a, _)| a).filter(|a| *a != old_src);
    let new_dst = rw.dst.map(|(a, _)| a).filter(|a| *a != old_dst);
    rewrite_l3(frame, p.family, l3, new_src, new_dst);
    if rw.related {
        return rewrite_icmp_error(frame, p, rw);
    }
    let csum_off = l4_csum_offset(p.proto).map(|o| l4 + o);
    let has_l4 = !matches!(p.l4, L4::None | L4::Other) && csum_off.is_some_and(|o| o + 2 <= end);
    if !has_l4 {
        return Ok(());
    }
    let csum_off = csum_off.unwrap_or(0);
    let udp_no_csum =
        p.family == Family::V4 && p.proto == IPPROTO_UDP && get16(frame, csum_off) == 0;
    let pseudo_covered = p.proto != IPPROTO_ICMP;
    let mut c = get16(frame, csum_off);
    if pseudo_covered {
        if let Some(a) = new_src {
            c = update_addr(c, &old_src.0[..w], &a.0[..w]);
        }
        if let Some(a) = new_dst {
            c = update_addr(c, &old_dst.0[..w], &a.0[..w]);
        }
    }
    match p.l4 {
        L4::Tcp(_) | L4::Udp { .. } => {
            if let Some((_, port)) = rw.src {
                set16(frame, l4, port, &mut c);
            }
            if let Some((_, port)) = rw.dst {
                set16(frame, l4 + 2, port, &mut c);
            }
        }
        L4::Icmp(ic) if !ic.is_error => {
            // Echo-style messages: the id is the "port" (both tuples' src_port).
            if let Some(id) = rw.id {
                set16(frame, l4 + 4, id, &mut c);
            }
        }
        _ => {}
    }
    if udp_no_csum {
        return Ok(());
    }
    if mode == ChecksumMode::Offload
        && matches!(p.l4, L4::Tcp(_) | L4::Udp { .. })
        && p.frag.is_none()
    {
        // NICs want the pseudo-header sum (not complemented) in the field.
        let (s, d) = (addr_at(frame, so, w), addr_at(frame, dof, w));
        let seed = crate::checksum::pseudo_header(p.family, &s, &d, p.proto, (end - l4) as u32);
        put16(frame, csum_off, seed);
        return Ok(());
    }
    if p.proto == IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    put16(frame, csum_off, c);
    Ok(())
}

/// One end (source or destination) of [`apply_v4_ports`]: its address and
/// port rewritten in place, their checksum terms added to the IP header's
/// and the L4 checksum's accumulators (machine byte order, see there).
#[inline(always)]
fn translate_end(
    addr: &mut [u8; 4],
    port: &mut [u8; 2],
    a: &Addr,
    p: u16,
    ip_acc: &mut u32,
    l4_acc: &mut u32,
) {
    let sum32 = |x: u32| combine(x as u16, (x >> 16) as u16);
    let old = u32::from_ne_bytes(*addr);
    let new = u32::from_ne_bytes(a.v4_octets());
    if old != new {
        let terms = u32::from(!sum32(old)) + u32::from(sum32(new));
        *ip_acc += terms;
        *l4_acc += terms;
        *addr = new.to_ne_bytes();
    }
    let new = u16::from_ne_bytes(p.to_be_bytes());
    *l4_acc += u32::from(!u16::from_ne_bytes(*port)) + u32::from(new);
    *port = new.to_ne_bytes();
}

/// The common case of [`apply`]: an unfragmented IPv4 TCP or UDP packet
/// (bounds checked by the caller), checksums updated in place. The same
/// updates as the general path, on whole words instead of 16-byte
/// addresses and slices, so the bytes are the same (a test compares the
/// two).
#[inline(always)]
fn apply_v4_ports(f: &mut [u8], at: V4At, rw: &Rewrite) {
    let udp = at.udp;
    // RFC 1624 eqn. 3 for all changes at once: each checksum's complement
    // plus the terms of every change (!old, new; an address as its folded
    // sum, as update_summed takes it), folded once at the end. The same
    // result as one update per change (a folded sum is congruent to its
    // terms and zero only when they all are), without their chain of
    // dependent folds.
    //
    // In the machine's byte order throughout (RFC 1071 2.B: a ones'-complement
    // sum of byte-swapped words is the byte-swapped sum, and swapping keeps
    // zero and 0xffff apart), so fields are loaded and stored as words,
    // without byte swaps; only the new ports are turned to network order.
    //
    let Some((ip, ports, csum)) = v4_fields(f, at) else {
        return;
    };
    let w16 = |b: &[u8]| u16::from_ne_bytes([b[0], b[1]]);
    let c = w16(csum);
    let no_csum = udp && c == 0;
    let mut ip_acc = u32::from(!w16(&ip[10..12]));
    let mut l4_acc = u32::from(!c);
    if let Some((a, p)) = &rw.src {
        translate_end(
            (&mut ip[12..16]).try_into().expect("4 bytes"),
            (&mut ports[0..2]).try_into().expect("2 bytes"),
            a,
            *p,
            &mut ip_acc,
            &mut l4_acc,
        );
    }
    if let Some((a, p)) = &rw.dst {
        translate_end(
            (&mut ip[16..20]).try_into().expect("4 bytes"),
            (&mut ports[2..4]).try_into().expect("2 bytes"),
            a,
            *p,
            &mut ip_acc,
            &mut l4_acc,
        );
    }
    ip[10..12].copy_from_slice(&(!fold32(ip_acc)).to_ne_bytes());
    if !no_csum {
        let c = !fold32(l4_acc);
        csum.copy_from_slice(&(if udp && c == 0 { 0xffff } else { c }).to_ne_bytes());
    }
}

/// The IPv4 header, the L4 ports and the L4 checksum of a frame as slices:
/// one bounds check each, none per field. IPv4 has l3 + 20 <= l4 and the
/// checksum is after the ports (the caller checked csum_off + 2 <= end).
#[inline(always)]
fn v4_fields(f: &mut [u8], at: V4At) -> Option<(&mut [u8], &mut [u8], &mut [u8])> {
    let V4At {
        l3, l4, csum_off, ..
    } = at;
    let (head, tail) = f.split_at_mut_checked(l4)?;
    let ip = head.get_mut(l3..l3 + 20)?;
    let (ports, rest) = tail.split_at_mut_checked(4)?;
    let off = csum_off.saturating_sub(l4 + 4);
    let csum = rest.get_mut(off..off + 2)?;
    Some((ip, ports, csum))
}

/// A compact translation on an IPv4 TCP / UDP packet (bounds checked by
/// the caller): both addresses and both ports stored (an unchanged one
/// with what it holds), each checksum updated by one addition.
#[inline(always)]
fn apply_v4_nat(f: &mut [u8], at: V4At, n: &V4Nat) {
    let udp = at.udp;
    let Some((ip, ports, csum)) = v4_fields(f, at) else {
        return;
    };
    ip[12..16].copy_from_slice(&n.src.0[..4]);
    ip[16..20].copy_from_slice(&n.dst.0[..4]);
    ports.copy_from_slice(&n.ports);
    let w16 = |b: &[u8]| u16::from_ne_bytes([b[0], b[1]]);
    let hc = u32::from(!w16(&ip[10..12])) + u32::from(n.csum.ip);
    ip[10..12].copy_from_slice(&(!fold32(hc)).to_ne_bytes());
    let c = w16(csum);
    if !(udp && c == 0) {
        let c = !fold32(u32::from(!c) + u32::from(n.csum.l4));
        csum.copy_from_slice(&(if udp && c == 0 { 0xffff } else { c }).to_ne_bytes());
    }
}

/// A one's-complement sum of at most 2^16 16-bit terms, folded to 16 bits.
#[inline(always)]
fn fold32(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

fn addr_at(f: &[u8], off: usize, w: usize) -> Addr {
    let mut a = [0u8; 16];
    a[..w].copy_from_slice(&f[off..off + w]);
    Addr(a)
}

/// An ICMP error: translate the quoted header back (addresses, ports or id,
/// its IPv4 header checksum, its UDP checksum when present, as
/// nf_nat_ipv4_manip_pkt does for inner headers), then recompute the ICMP
/// checksum over the whole message, as the kernel does.
fn rewrite_icmp_error(f: &mut [u8], p: &Parsed, rw: &Rewrite) -> Result<(), RewriteError> {
    let L4::Icmp(ic) = p.l4 else { return Ok(()) };
    let Some(inner) = ic.inner else { return Ok(()) };
    let end = p.l3_offset as usize + p.l3_len as usize;
    let il3 = inner.l3_offset as usize;
    let il4 = inner.l4_offset as usize;
    let (so, dof, w) = addr_offsets(inner.family, il3);
    if dof + w > end {
        return Err(RewriteError::Truncated);
    }
    let old_isrc = addr_at(f, so, w);
    let old_idst = addr_at(f, dof, w);
    let new_isrc = rw.inner_src.map(|(a, _)| a).filter(|a| *a != old_isrc);
    let new_idst = rw.inner_dst.map(|(a, _)| a).filter(|a| *a != old_idst);
    // The quoted IPv4 header's checksum is kept up to date only if it is there.
    if inner.family == Family::V4 && il3 + 12 <= end {
        rewrite_l3(f, inner.family, il3, new_isrc, new_idst);
    } else {
        if let Some(a) = new_isrc {
            f[so..so + w].copy_from_slice(&a.0[..w]);
        }
        if let Some(a) = new_idst {
            f[dof..dof + w].copy_from_slice(&a.0[..w]);
        }
    }
    if il4 + 8 <= end {
        match inner.proto {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE => {
                let csum_off = il4 + if inner.proto == IPPROTO_TCP { 16 } else { 6 };
                let has_csum =
                    csum_off + 2 <= end && !(inner.proto == IPPROTO_UDP && get16(f, csum_off) == 0);
                let mut c = if has_csum { get16(f, csum_off) } else { 0 };
                for (new, old) in [(new_isrc, old_isrc), (new_idst, old_idst)] {
                    if let Some(a) = new {
                        c = update_addr(c, &old.0[..w], &a.0[..w]);
                    }
                }
                if let Some((_, port)) = rw.inner_src {
                    set16(f, il4, port, &mut c);
                }
                if let Some((_, port)) = rw.inner_dst {
                    set16(f, il4 + 2, port, &mut c);
                }
                if has_csum {
                    // A UDP checksum that comes out zero is sent as 0xffff
                    // (0 says "none": the kernel's CSUM_MANGLED_0).
                    if inner.proto == IPPROTO_UDP && c == 0 {
                        c = 0xffff;
                    }
                    put16(f, csum_off, c);
                }
            }
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                let mut c = get16(f, il4 + 2);
                if inner.proto == IPPROTO_ICMPV6 {
                    // The ICMPv6 checksum covers the pseudo-header: follow
                    // the quoted addresses too (icmpv6_manip_pkt's nf_csum_update).
                    for (new, old) in [(new_isrc, old_isrc), (new_idst, old_idst)] {
                        if let Some(a) = new {
                            c = update_addr(c, &old.0[..w], &a.0[..w]);
                        }
                    }
                }
                if let Some(id) = rw.inner_id {
                    set16(f, il4 + 4, id, &mut c);
                }
                put16(f, il4 + 2, c);
            }
            _ => {}
        }
    }
    let l4 = p.l4_offset as usize;
    put16(f, l4 + 2, 0);
    let c = match p.family {
        Family::V4 => checksum(&f[l4..end]),
        Family::V6 => {
            let (so, dof, w) = addr_offsets(p.family, p.l3_offset as usize);
            l4_checksum(
                p.family,
                &addr_at(f, so, w),
                &addr_at(f, dof, w),
                IPPROTO_ICMPV6,
                &f[l4..end],
            )
        }
    };
    put16(f, l4 + 2, c);
    Ok(())
}

/// The tuple a packet carries after `rw` (for tests and for routing on the
/// translated destination).
pub fn translated(t: &Tuple, rw: &Rewrite) -> Tuple {
    let mut n = *t;
    if let Some((a, port)) = rw.src {
        n.src = a;
        if !t.is_icmp() {
            n.src_port = port;
        }
    }
    if let Some((a, port)) = rw.dst {
        n.dst = a;
        if !t.is_icmp() {
            n.dst_port = port;
        }
    }
    if let Some(id) = rw.id {
        n.src_port = id;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{sum, verify_l4};
    use crate::wire::build::{frame, L4Spec};
    use crate::wire::parse;
    use proptest::prelude::*;

    const C: [u8; 4] = [192, 0, 2, 10];
    const S: [u8; 4] = [198, 51, 100, 20];
    const N: [u8; 4] = [203, 0, 113, 1];

    fn v4(a: [u8; 4]) -> Addr {
        Addr::from_v4(a)
    }

    /// A source-NATed connection C:cport -> S:80 seen as N:nport.
    fn snat_conn(proto: u8, cport: u16, nport: u16) -> Conn {
        let orig = Tuple {
            src: v4(C),
            dst: v4(S),
            src_port: cport,
            dst_port: 80,
            proto,
            family: Family::V4,
            zone: 0,
        };
        let mut reply = orig.invert().unwrap();
        reply.dst = v4(N);
        reply.dst_port = nport;
        let mut c = Conn {
            tuples: [orig, reply],
            ..Conn::default()
        };
        c.status.set(Status::SRC_NAT);
        c
    }

    /// Every checksum of a frame verified from scratch (not incrementally).
    fn assert_checksums_valid(f: &[u8]) {
        let p = parse(f).expect("still parses");
        let l3 = p.l3_offset as usize;
        if p.family == Family::V4 {
            assert_eq!(sum(&f[l3..l3 + 20]), 0xffff, "IPv4 header checksum");
        }
        assert!(crate::checksum::l4_checksum_ok(f, &p), "L4 checksum");
    }

    #[test]
    fn snat_tcp_both_directions() {
        let c = snat_conn(IPPROTO_TCP, 40000, 61000);
        let mut f = frame(
            Family::V4,
            v4(C),
            v4(S),
            64,
            L4Spec::Tcp {
                src_port: 40000,
                dst_port: 80,
                seq: 1,
                ack: 0,
                flags: 2,
                window: 1000,
                payload: b"hello",
            },
        );
        let p = parse(&f).unwrap();
        let rw = Rewrite::for_packet(&c, Dir::Orig, false).unwrap();
        apply(&mut f, &p, &rw, ChecksumMode::Incremental).unwrap();
        let want = frame(
            Family::V4,
            v4(N),
            v4(S),
            64,
            L4Spec::Tcp {
                src_port: 61000,
                dst_port: 80,
                seq: 1,
                ack: 0,
                flags: 2,
                window: 1000,
                payload: b"hello",
            },
        );
        assert_eq!(f, want, "byte-exact against a frame built from scratch");

        let mut r = frame(
            Family::V4,
            v4(S),
            v4(N),
            64,
            L4Spec::Tcp {
                src_port: 80,
                dst_port: 61000,
                seq: 9,
                ack: 2,
                flags: 0x12,
                window: 1000,
                payload: b"",
            },
        );
        let p = parse(&r).unwrap();
        let rw = Rewrite::for_packet(&c, Dir::Reply, false).unwrap();
        apply(&mut r, &p, &rw, ChecksumMode::Incremental).unwrap();
        let want = frame(
            Family::V4,
            v4(S),
            v4(C),
            64,
            L4Spec::Tcp {
                src_port: 80,
                dst_port: 40000,
                seq: 9,
                ack: 2,
                flags: 0x12,
                window: 1000,
                payload: b"",
            },
        );
        assert_eq!(r, want);
    }

    #[test]
    fn dnat_udp_and_icmp_echo_ids() {
        // DNAT: client -> V:53 becomes client -> B:5353.
        let orig = Tuple {
            src: v4(C),
            dst: v4(N),
            src_port: 5000,
            dst_port: 53,
            proto: IPPROTO_UDP,
            family: Family::V4,
            zone: 0,
        };
        let mut reply = orig.invert().unwrap();
        reply.src = v4(S);
        reply.src_port = 5353;
        let mut c = Conn {
            tuples: [orig, reply],
            ..Conn::default()
        };
        c.status.set(Status::DST_NAT);
        let mut f = frame(
            Family::V4,
            v4(C),
            v4(N),
            64,
            L4Spec::Udp {
                src_port: 5000,
                dst_port: 53,
                payload: b"q",
            },
        );
        let p = parse(&f).unwrap();
        apply(
            &mut f,
            &p,
            &Rewrite::for_packet(&c, Dir::Orig, false).unwrap(),
            ChecksumMode::Incremental,
        )
        .unwrap();
        assert_eq!(
            f,
            frame(
                Family::V4,
                v4(C),
                v4(S),
                64,
                L4Spec::Udp {
                    src_port: 5000,
                    dst_port: 5353,
                    payload: b"q"
                }
            )
        );

        // SNAT of an echo: the id is the port.
        let c = snat_conn(IPPROTO_ICMP, 77, 1234);
        let mut c = c;
        c.tuples[0].dst_port = 8 << 8;
        c.tuples[1] = Tuple {
            src: v4(S),
            dst: v4(N),
            src_port: 1234,
            dst_port: 0,
            proto: IPPROTO_ICMP,
            family: Family::V4,
            zone: 0,
        };
        let mut f = frame(
            Family::V4,
            v4(C),
            v4(S),
            64,
            L4Spec::Icmp {
                icmp_type: 8,
                code: 0,
                id: 77,
                seq: 3,
                payload: b"ping",
            },
        );
        let p = parse(&f).unwrap();
        apply(
            &mut f,
            &p,
            &Rewrite::for_packet(&c, Dir::Orig, false).unwrap(),
            ChecksumMode::Incremental,
        )
        .unwrap();
        assert_eq!(
            f,
            frame(
                Family::V4,
                v4(N),
                v4(S),
                64,
                L4Spec::Icmp {
                    icmp_type: 8,
                    code: 0,
                    id: 1234,
                    seq: 3,
                    payload: b"ping"
                }
            )
        );
        let mut r = frame(
            Family::V4,
            v4(S),
            v4(N),
            64,
            L4Spec::Icmp {
                icmp_type: 0,
                code: 0,
                id: 1234,
                seq: 3,
                payload: b"ping",
            },
        );
        let p = parse(&r).unwrap();
        apply(
            &mut r,
            &p,
            &Rewrite::for_packet(&c, Dir::Reply, false).unwrap(),
            ChecksumMode::Incremental,
        )
        .unwrap();
        assert_eq!(
            r,
            frame(
                Family::V4,
                v4(S),
                v4(C),
                64,
                L4Spec::Icmp {
                    icmp_type: 0,
                    code: 0,
                    id: 77,
                    seq: 3,
                    payload: b"ping"
                }
            )
        );
    }

    #[test]
    fn icmp_error_translates_the_quoted_datagram_back() {
        let c = snat_conn(IPPROTO_UDP, 40000, 61000);
        // What left ctgate: N:61000 -> S:80; a router R answers time exceeded to N.
        let sent = frame(
            Family::V4,
            v4(N),
            v4(S),
            1,
            L4Spec::Udp {
                src_port: 61000,
                dst_port: 80,
                payload: b"probe",
            },
        );
        let quoted = sent[14..14 + 28].to_vec();
        let router = v4([198, 51, 100, 254]);
        let mut err = frame(
            Family::V4,
            router,
            v4(N),
            64,
            L4Spec::Icmp {
                icmp_type: 11,
                code: 0,
                id: 0,
                seq: 0,
                payload: &quoted,
            },
        );
        let p = parse(&err).unwrap();
        let rw = Rewrite::for_packet(&c, Dir::Reply, true).unwrap();
        apply(&mut err, &p, &rw, ChecksumMode::Incremental).unwrap();
        // The client must see the error addressed to it, quoting its own datagram.
        let orig_sent = frame(
            Family::V4,
            v4(C),
            v4(S),
            1,
            L4Spec::Udp {
                src_port: 40000,
                dst_port: 80,
                payload: b"probe",
            },
        );
        let want = frame(
            Family::V4,
            router,
            v4(C),
            64,
            L4Spec::Icmp {
                icmp_type: 11,
                code: 0,
                id: 0,
                seq: 0,
                payload: &orig_sent[14..14 + 28],
            },
        );
        assert_eq!(err, want);
        assert_checksums_valid(&err);
    }

    #[test]
    fn nat66_udp() {
        let a = |s: &str| Addr(s.parse::<std::net::Ipv6Addr>().unwrap().octets());
        let orig = Tuple {
            src: a("2001:db8:1::2"),
            dst: a("2001:db8:2::2"),
            src_port: 7000,
            dst_port: 53,
            proto: IPPROTO_UDP,
            family: Family::V6,
            zone: 0,
        };
        let mut reply = orig.invert().unwrap();
        reply.dst = a("2001:db8:2::1");
        let mut c = Conn {
            tuples: [orig, reply],
            ..Conn::default()
        };
        c.status.set(Status::SRC_NAT);
        let mut f = frame(
            Family::V6,
            orig.src,
            orig.dst,
            64,
            L4Spec::Udp {
                src_port: 7000,
                dst_port: 53,
                payload: b"v6",
            },
        );
        let p = parse(&f).unwrap();
        apply(
            &mut f,
            &p,
            &Rewrite::for_packet(&c, Dir::Orig, false).unwrap(),
            ChecksumMode::Incremental,
        )
        .unwrap();
        assert_eq!(
            f,
            frame(
                Family::V6,
                a("2001:db8:2::1"),
                orig.dst,
                64,
                L4Spec::Udp {
                    src_port: 7000,
                    dst_port: 53,
                    payload: b"v6"
                }
            )
        );
    }

    /// What a NIC with TX checksum offload does with the pseudo-header seed.
    fn nic_finish(f: &mut [u8]) {
        let p = parse(f).unwrap();
        let l4 = p.l4_offset as usize;
        let end = p.l3_offset as usize + p.l3_len as usize;
        let off = l4 + if p.proto == IPPROTO_TCP { 16 } else { 6 };
        let c = !sum(&f[l4..end]);
        let c = if p.proto == IPPROTO_UDP && c == 0 {
            0xffff
        } else {
            c
        };
        f[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// Checksums including the values where one's-complement zero has two
    /// forms (0x0000 / 0xffff), often.
    fn edge_u16() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(0u16),
            Just(0xffff),
            Just(0xfffe),
            Just(1),
            any::<u16>()
        ]
    }

    /// Addresses including ones whose sum is 0 or 0xffff, often.
    fn edge_addr() -> impl Strategy<Value = [u8; 4]> {
        prop_oneof![
            Just([0u8, 0, 0, 0]),
            Just([255u8, 255, 255, 255]),
            Just([0u8, 0, 255, 255]),
            Just([255u8, 255, 0, 0]),
            any::<[u8; 4]>(),
        ]
    }

    proptest! {
        /// The IPv4 TCP/UDP fast path writes the same bytes as the general
        /// path, for SNAT, DNAT and both, whatever checksum the packet came
        /// with (zero UDP checksums and wrong ones included).
        #[test]
        fn the_connections_deltas_give_the_checksums_the_sums_give(
            snat in any::<bool>(), dnat in any::<bool>(), reply in any::<bool>(),
            c_addr in edge_addr(), s_addr in edge_addr(), n_addr in edge_addr(), b_addr in edge_addr(),
            cport in edge_u16(), sport in edge_u16(), nport in edge_u16(), bport in edge_u16(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            tcp in any::<bool>(), csum in edge_u16(), ip_csum in edge_u16(),
        ) {
            prop_assume!(snat || dnat);
            let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
            let orig = Tuple { src: v4(c_addr), dst: v4(s_addr), src_port: cport, dst_port: sport, proto, family: Family::V4, zone: 0 };
            let mut r = orig.invert().unwrap();
            let mut c = Conn::default();
            if snat {
                r.dst = v4(n_addr);
                r.dst_port = nport;
                c.status.set(Status::SRC_NAT);
            }
            if dnat {
                r.src = v4(b_addr);
                r.src_port = bport;
                c.status.set(Status::DST_NAT);
            }
            c.tuples = [orig, r];
            c.nat_csum = csum_deltas(&c);
            prop_assert!(c.nat_csum.is_some());
            let dir = if reply { Dir::Reply } else { Dir::Orig };
            let t = c.tuples[dir.index()];
            let l4 = if tcp {
                L4Spec::Tcp { src_port: t.src_port, dst_port: t.dst_port, seq: 5, ack: 6, flags: 0x18, window: 512, payload: &payload }
            } else {
                L4Spec::Udp { src_port: t.src_port, dst_port: t.dst_port, payload: &payload }
            };
            let mut original = frame(Family::V4, t.src, t.dst, 64, l4);
            let off = 34 + if tcp { 16 } else { 6 };
            original[off..off + 2].copy_from_slice(&csum.to_be_bytes());
            let p = parse(&original).unwrap();
            original[24..26].copy_from_slice(&ip_csum.to_be_bytes());
            let with = Translation::for_packet(&c, dir, false).unwrap();
            prop_assert!(matches!(with, Translation::V4(_)));
            let without = Rewrite::for_packet(&c, dir, false).unwrap();
            prop_assert_eq!(with.general(), without);
            let (mut a, mut b) = (original.clone(), original.clone());
            apply_translation(&mut a, &p, &with, ChecksumMode::Incremental).unwrap();
            apply(&mut b, &p, &without, ChecksumMode::Incremental).unwrap();
            prop_assert_eq!(&a, &b);
            // A shape the compact form leaves to the general path (here the
            // offload mode) gives what the general form gives.
            let (mut a, mut b) = (original.clone(), original.clone());
            apply_translation(&mut a, &p, &with, ChecksumMode::Offload).unwrap();
            apply(&mut b, &p, &without, ChecksumMode::Offload).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn v4_fast_path_equals_the_general_path(
            src in proptest::option::of((edge_addr(), any::<u16>())),
            dst in proptest::option::of((edge_addr(), any::<u16>())),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            tcp in any::<bool>(), csum in edge_u16(), ip_csum in edge_u16(),
            orig_src in edge_addr(), orig_dst in edge_addr(),
        ) {
            let l4 = if tcp {
                L4Spec::Tcp { src_port: 1234, dst_port: 80, seq: 5, ack: 6, flags: 0x18, window: 512, payload: &payload }
            } else {
                L4Spec::Udp { src_port: 1234, dst_port: 80, payload: &payload }
            };
            let mut original = frame(Family::V4, v4(orig_src), v4(orig_dst), 64, l4);
            let off = 34 + if tcp { 16 } else { 6 };
            original[off..off + 2].copy_from_slice(&csum.to_be_bytes());
            // Parsed first: parse checks the IPv4 header checksum, which
            // then takes any value (apply trusts what parse said).
            let p = parse(&original).unwrap();
            original[24..26].copy_from_slice(&ip_csum.to_be_bytes());
            let rw = Rewrite {
                src: src.map(|(a, port)| (v4(a), port)),
                dst: dst.map(|(a, port)| (v4(a), port)),
                ..Rewrite::default()
            };
            let mut fast = original.clone();
            apply(&mut fast, &p, &rw, ChecksumMode::Incremental).unwrap();
            let mut general = original.clone();
            // The general path, as for a packet the fast path does not take.
            let mut p_general = p;
            p_general.frag = Some(crate::wire::Frag { id: 0, offset: 0, more: false });
            apply(&mut general, &p_general, &rw, ChecksumMode::Incremental).unwrap();
            prop_assert_eq!(fast, general);
        }

        /// The in-place form, common case included, writes what the
        /// derivation through the inverted tuple gives, whatever the slot
        /// held: SNAT, DNAT or both, TCP / UDP / ICMP, both directions,
        /// related or not; nothing for an untranslated connection.
        #[test]
        fn write_for_packet_is_for_packet(
            nat in 0u32..4, proto in prop::sample::select(vec![IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]),
            cport in any::<u16>(), nport in any::<u16>(), reply in any::<bool>(), related in any::<bool>(),
            held in any::<bool>(), deltas in any::<bool>(),
        ) {
            let mut c = snat_conn(proto, cport, nport);
            c.status = Status(0);
            if nat & 1 != 0 {
                c.status.set(Status::SRC_NAT);
            }
            if nat & 2 != 0 {
                c.status.set(Status::DST_NAT);
            }
            if deltas {
                c.nat_csum = csum_deltas(&c);
            }
            let dir = if reply { Dir::Reply } else { Dir::Orig };
            let mut out = held.then(|| Translation::General(Rewrite { related: true, id: Some(9), inner_id: Some(3), ..Rewrite::default() }));
            Translation::write_for_packet(&mut out, &c, dir, related);
            let expected = if nat == 0 { None } else { Rewrite::via_inverted(&c, dir, related) };
            prop_assert_eq!(out.map(|t| t.general()), expected);
            prop_assert_eq!(Rewrite::for_packet(&c, dir, related), expected);
            // The compact form exactly where the connection has deltas.
            let compact = matches!(out, Some(Translation::V4(_)));
            prop_assert_eq!(compact, c.nat_csum.is_some() && !related);
        }

        /// Incremental updates give the bytes a full recomputation gives, and the
        /// offload path (seed + NIC) gives the same bytes on the wire.
        #[test]
        fn incremental_equals_full_and_offload(cport in 1u16.., nport in 1u16.., n in any::<[u8; 4]>(), payload in proptest::collection::vec(any::<u8>(), 0..64), tcp in any::<bool>()) {
            let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
            let mut c = snat_conn(proto, cport, nport);
            c.tuples[1].dst = v4(n);
            let l4 = |sp: u16| if tcp {
                L4Spec::Tcp { src_port: sp, dst_port: 80, seq: 5, ack: 6, flags: 0x18, window: 512, payload: &payload }
            } else {
                L4Spec::Udp { src_port: sp, dst_port: 80, payload: &payload }
            };
            let original = frame(Family::V4, v4(C), v4(S), 64, l4(cport));
            let want = frame(Family::V4, v4(n), v4(S), 64, l4(nport));
            let p = parse(&original).unwrap();
            let rw = Rewrite::for_packet(&c, Dir::Orig, false).unwrap();
            let mut inc = original.clone();
            apply(&mut inc, &p, &rw, ChecksumMode::Incremental).unwrap();
            prop_assert_eq!(&inc, &want);
            let mut off = original.clone();
            apply(&mut off, &p, &rw, ChecksumMode::Offload).unwrap();
            nic_finish(&mut off);
            prop_assert_eq!(&off, &want);
            let pp = parse(&inc).unwrap();
            prop_assert!(verify_l4(Family::V4, &pp.src, &pp.dst, proto, &inc[34..34 + pp.l3_len as usize - 20]));
        }
    }
}
