//! A 64-byte bucket: eight 16-bit signatures and eight entry words, compared
//! without touching the connection records (DPDK `rte_hash`'s layout).

/// Entries per bucket.
pub const SLOTS: usize = 8;

/// One cache line of the index. Signature `i` is the 16-bit lane `i % 4` of
/// `sig[i / 4]` (0 marks the slot free), so eight compare at once as two
/// 64-bit words; `entry[i]` is an entry word (home stripe, slab index, direction). `overflow`
/// counts the entries placed past this bucket by linear probing, so a lookup
/// knows whether to go on.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct Bucket {
    sig: [u64; 2],
    pub entry: [u32; SLOTS],
    pub overflow: u32,
    _pad: [u32; 3],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

const LANES_LOW: u64 = 0x7fff_7fff_7fff_7fff;
const LANES_ONE: u64 = 0x0001_0001_0001_0001;

/// A bit per 16-bit lane of `w` equal to `sig` (bits 0-3): exact zero-lane
/// detection (no borrow between lanes), then the four high bits gathered by
/// one multiply whose partial products never overlap.
#[inline(always)]
fn lanes_equal(w: u64, sig: u16) -> u32 {
    let x = w ^ (sig as u64).wrapping_mul(LANES_ONE);
    let zero_hi = !(((x & LANES_LOW).wrapping_add(LANES_LOW)) | x | LANES_LOW);
    let bits = zero_hi >> 15; // bits 0, 16, 32, 48
    ((bits.wrapping_mul(1 | 1 << 15 | 1 << 30 | 1 << 45) >> 45) & 0xf) as u32
}

impl Bucket {
    /// A bit per slot whose signature is `sig`.
    #[inline(always)]
    pub fn matches(&self, sig: u16) -> u32 {
        lanes_equal(self.sig[0], sig) | (lanes_equal(self.sig[1], sig) << 4)
    }

    #[inline(always)]
    pub fn sig(&self, i: usize) -> u16 {
        (self.sig[i / 4] >> (16 * (i % 4))) as u16
    }

    #[inline(always)]
    pub fn set_sig(&mut self, i: usize, sig: u16) {
        let shift = 16 * (i % 4);
        let w = &mut self.sig[i / 4];
        *w = (*w & !(0xffff << shift)) | ((sig as u64) << shift);
    }

    /// Frees the slot holding entry `word` (signature `sig`); false if
    /// this bucket has none.
    #[inline(always)]
    pub fn take(&mut self, sig: u16, word: u32) -> bool {
        let mut m = self.matches(sig);
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            if self.entry[i] == word {
                self.set_sig(i, 0);
                self.entry[i] = 0;
                return true;
            }
        }
        false
    }

    /// The first free slot.
    #[inline]
    pub fn free_slot(&self) -> Option<usize> {
        let m = self.matches(0);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_and_free_slots() {
        let mut b = Bucket::default();
        assert_eq!(b.free_slot(), Some(0));
        b.set_sig(0, 7);
        b.set_sig(3, 7);
        b.set_sig(5, 9);
        assert_eq!(b.matches(7), 0b1001);
        assert_eq!(b.matches(9), 0b10_0000);
        assert_eq!(b.free_slot(), Some(1));
        for i in 0..SLOTS {
            b.set_sig(i, 1);
        }
        assert_eq!(b.free_slot(), None);
        assert_eq!(b.sig(5), 1);
    }

    #[test]
    fn lane_compare_is_exact() {
        // Against the plain loop, for signatures that provoke borrows
        // between lanes (0, 1, 0x8000, 0xffff next to each other).
        let vals = [0u16, 1, 2, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff];
        let mut b = Bucket::default();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut plain = [0u16; SLOTS];
            for (i, p) in plain.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *p = if x & 1 == 0 {
                    vals[(x >> 8) as usize % 8]
                } else {
                    (x >> 16) as u16
                };
                b.set_sig(i, *p);
            }
            for probe in vals.iter().copied().chain([plain[3], (x >> 40) as u16]) {
                let want = (0..SLOTS).fold(0, |m, i| m | (((plain[i] == probe) as u32) << i));
                assert_eq!(b.matches(probe), want, "{plain:?} {probe}");
            }
        }
    }
}
