//! A 64-byte bucket: eight 16-bit signatures and eight entry words, compared
//! without touching the connection records (DPDK `rte_hash`'s layout).

/// Entries per bucket.
pub const SLOTS: usize = 8;

/// One cache line of the index. `sig[i] == 0` marks slot `i` free; `entry[i]`
/// is an [`super::EntryRef`] word. `overflow` counts the entries placed past
/// this bucket by linear probing, so a lookup knows whether to go on.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct Bucket {
    pub sig: [u16; SLOTS],
    pub entry: [u32; SLOTS],
    pub overflow: u32,
    _pad: [u32; 3],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    /// A bit per slot whose signature is `sig` (the loop compiles to one
    /// vector compare).
    #[inline(always)]
    pub fn matches(&self, sig: u16) -> u32 {
        let mut m = 0u32;
        for (i, s) in self.sig.iter().enumerate() {
            m |= ((*s == sig) as u32) << i;
        }
        m
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
        b.sig[0] = 7;
        b.sig[3] = 7;
        b.sig[5] = 9;
        assert_eq!(b.matches(7), 0b1001);
        assert_eq!(b.matches(9), 0b10_0000);
        assert_eq!(b.free_slot(), Some(1));
        b.sig = [1; SLOTS];
        assert_eq!(b.free_slot(), None);
    }
}
