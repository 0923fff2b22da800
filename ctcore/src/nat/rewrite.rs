//! Applying a translation to a frame: addresses, ports, ICMP ids, and for ICMP
//! errors the quoted header too, with incremental checksum updates (RFC 1624)
//! or, for TX checksum offload, with the L4 checksum left for the NIC.

use crate::checksum::{checksum, l4_checksum, update_addr, update_u16};
use crate::conn::{Conn, Status};
use crate::tuple::{
    Addr, Dir, Family, Tuple, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    IPPROTO_UDPLITE,
};
use crate::wire::{Parsed, L4};

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

impl Rewrite {
    /// The translation of a packet travelling in `dir` on `c` (nf_nat_packet):
    /// a source-NATed connection rewrites the source of original packets and the
    /// destination of replies; destination NAT the other way round. The target
    /// endpoint is the inverse of the other direction's tuple. None if `c` is
    /// not translated.
    pub fn for_packet(c: &Conn, dir: Dir, related: bool) -> Option<Rewrite> {
        let snat = c.status.has(Status::SRC_NAT);
        let dnat = c.status.has(Status::DST_NAT);
        if !snat && !dnat {
            return None;
        }
        let other = &c.tuples[dir.other().index()];
        // The tuple this direction's packets must carry after translation.
        let target = other.invert()?;
        let (change_src, change_dst) = match dir {
            Dir::Orig => (snat, dnat),
            Dir::Reply => (dnat, snat),
        };
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
            let (inner_src, inner_dst) = match dir.other() {
                Dir::Orig => (snat, dnat),
                Dir::Reply => (dnat, snat),
            };
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
pub fn apply(
    frame: &mut [u8],
    p: &Parsed,
    rw: &Rewrite,
    mode: ChecksumMode,
) -> Result<(), RewriteError> {
    let l3 = p.l3_offset as usize;
    let l4 = p.l4_offset as usize;
    let end = l3 + p.l3_len as usize;
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
                let old = get16(frame, l4);
                c = update_u16(c, old, port);
                put16(frame, l4, port);
            }
            if let Some((_, port)) = rw.dst {
                let old = get16(frame, l4 + 2);
                c = update_u16(c, old, port);
                put16(frame, l4 + 2, port);
            }
        }
        L4::Icmp(ic) if !ic.is_error => {
            // Echo-style messages: the id is the "port" (both tuples' src_port).
            if let Some(id) = rw.id {
                let old = get16(frame, l4 + 4);
                c = update_u16(c, old, id);
                put16(frame, l4 + 4, id);
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
                    c = update_u16(c, get16(f, il4), port);
                    put16(f, il4, port);
                }
                if let Some((_, port)) = rw.inner_dst {
                    c = update_u16(c, get16(f, il4 + 2), port);
                    put16(f, il4 + 2, port);
                }
                if has_csum {
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
                    c = update_u16(c, get16(f, il4 + 4), id);
                    put16(f, il4 + 4, id);
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
