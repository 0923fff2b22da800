//! The NAT rewrite's two checksum paths against an independent full
//! computation, over random packets and translations: the incremental update
//! (RFC 1624) and TX checksum offload (the L4 field seeded with the
//! pseudo-header sum, then finished as a NIC does) must both give exactly the
//! frame that rebuilding every checksum from scratch gives.

use ctcore::nat::rewrite::{apply, ChecksumMode, Rewrite};
use ctcore::tuple::{Addr, Family};
use ctcore::wire::build::{frame, L4Spec};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn addr(&mut self, family: Family) -> Addr {
        let mut a = [0u8; 16];
        let n = if family == Family::V4 { 4 } else { 16 };
        for b in a.iter_mut().take(n) {
            *b = self.next() as u8;
        }
        Addr(a)
    }
}

// RFC 1071, written out again here.
fn sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| (c[0] as u32) << 8 | *c.get(1).unwrap_or(&0) as u32)
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(v6: bool, l3: &[u8], proto: u8, len: usize) -> u32 {
    let (s, d) = if v6 {
        (&l3[8..24], &l3[24..40])
    } else {
        (&l3[12..16], &l3[16..20])
    };
    sum(s) + sum(d) + proto as u32 + len as u32
}

/// Sets every address / port / id the translation names and recomputes every
/// checksum from scratch.
fn expected(orig: &[u8], v6: bool, proto: u8, rw: &Rewrite) -> Vec<u8> {
    let mut f = orig.to_vec();
    let l3 = 14;
    let (l4, so, dof, w) = if v6 {
        (l3 + 40, l3 + 8, l3 + 24, 16)
    } else {
        (l3 + 20, l3 + 12, l3 + 16, 4)
    };
    if let Some((a, p)) = rw.src {
        f[so..so + w].copy_from_slice(&a.0[..w]);
        if proto != 1 && proto != 58 {
            f[l4..l4 + 2].copy_from_slice(&p.to_be_bytes());
        }
    }
    if let Some((a, p)) = rw.dst {
        f[dof..dof + w].copy_from_slice(&a.0[..w]);
        if proto != 1 && proto != 58 {
            f[l4 + 2..l4 + 4].copy_from_slice(&p.to_be_bytes());
        }
    }
    if let Some(id) = rw.id {
        f[l4 + 4..l4 + 6].copy_from_slice(&id.to_be_bytes());
    }
    if !v6 {
        f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = !fold(sum(&f[l3..l3 + 20]));
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let at = l4
        + match proto {
            6 => 16,
            17 => 6,
            _ => 2,
        };
    if proto == 17 && !v6 && orig[at..at + 2] == [0, 0] {
        return f; // no UDP checksum: stays none
    }
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let seg = &f[l4..l3_end(&f, v6)];
    let mut s = sum(seg);
    if proto != 1 {
        s += pseudo(v6, &f[l3..], proto, seg.len());
    }
    let mut c = !fold(s);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

/// Where the IP packet ends (frames are padded to 60 bytes).
fn l3_end(f: &[u8], v6: bool) -> usize {
    let len = u16::from_be_bytes([f[14 + 2 + 2 * v6 as usize], f[14 + 3 + 2 * v6 as usize]]);
    14 + len as usize + if v6 { 40 } else { 0 }
}

/// What a NIC does with an offloaded TCP/UDP checksum: sum the segment, the
/// field holding the pseudo-header sum, and store the complement.
fn nic_finish(f: &mut [u8], v6: bool, proto: u8) {
    let l4 = if v6 { 14 + 40 } else { 14 + 20 };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    let mut c = !fold(sum(&f[l4..l3_end(f, v6)]));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn incremental_and_offload_match_full_recomputation() {
    let mut rng = Rng(0x243f_6a88_85a3_08d3);
    for case in 0..5000 {
        let family = if rng.below(2) == 0 {
            Family::V4
        } else {
            Family::V6
        };
        let v6 = family == Family::V6;
        let payload: Vec<u8> = (0..rng.below(80)).map(|_| rng.next() as u8).collect();
        let (sp, dp) = (rng.next() as u16, rng.next() as u16);
        let kind = rng.below(3);
        let l4 = match kind {
            0 => L4Spec::Tcp {
                src_port: sp,
                dst_port: dp,
                seq: rng.next() as u32,
                ack: rng.next() as u32,
                flags: 0x10,
                window: rng.next() as u16,
                payload: &payload,
            },
            1 => L4Spec::Udp {
                src_port: sp,
                dst_port: dp,
                payload: &payload,
            },
            _ => L4Spec::Icmp {
                icmp_type: if v6 { 128 } else { 8 },
                code: 0,
                id: sp,
                seq: dp,
                payload: &payload,
            },
        };
        let (src, dst) = (rng.addr(family), rng.addr(family));
        let mut orig = frame(family, src, dst, 64, l4);
        let proto = match kind {
            0 => 6,
            1 => 17,
            _ if v6 => 58,
            _ => 1,
        };
        if proto == 17 && !v6 && rng.below(8) == 0 {
            orig[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
        }
        let mut rw = Rewrite::default();
        match rng.below(3) {
            0 => rw.src = Some((rng.addr(family), rng.next() as u16)),
            1 => rw.dst = Some((rng.addr(family), rng.next() as u16)),
            _ => {
                rw.src = Some((rng.addr(family), rng.next() as u16));
                rw.dst = Some((rng.addr(family), rng.next() as u16));
            }
        }
        if proto == 1 || proto == 58 {
            rw.id = Some(rng.next() as u16);
        }
        let want = expected(&orig, v6, proto, &rw);
        let p = ctcore::wire::parse(&orig).unwrap();

        let mut inc = orig.clone();
        apply(&mut inc, &p, &rw, ChecksumMode::Incremental).unwrap();
        assert_eq!(inc, want, "case {case}: incremental, {rw:?}");

        let mut off = orig.clone();
        apply(&mut off, &p, &rw, ChecksumMode::Offload).unwrap();
        // A UDP datagram without checksum asks the NIC for none.
        let no_udp_csum = proto == 17 && !v6 && orig[14 + 26..14 + 28] == [0, 0];
        if (proto == 6 || proto == 17) && !no_udp_csum {
            nic_finish(&mut off, v6, proto);
        }
        assert_eq!(off, want, "case {case}: offload, {rw:?}");
    }
}
