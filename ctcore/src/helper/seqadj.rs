//! TCP sequence adjustment after a helper changed a payload's length
//! (nf_conntrack_seqadj): per direction, the offset before and after the
//! last change and where it was, so that every later segment's sequence
//! number, the other direction's acknowledgements and SACK blocks are moved
//! by what the payloads grew or shrank.

/// One direction's adjustment (`struct nf_ct_seqadj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqAdj {
    /// Sequence number of the last segment whose length changed.
    pub correction_pos: u32,
    /// Offset for segments up to and including `correction_pos`.
    pub offset_before: i32,
    /// Offset for segments after it.
    pub offset_after: i32,
}

/// `after(a, b)`: a is later than b in sequence space (the kernel's macro).
#[inline]
pub fn after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

impl SeqAdj {
    /// nf_ct_seqadj_set: the segment starting at `seq` changed length by `off`.
    /// A segment older than the last change (a retransmission) moves nothing.
    pub fn set(&mut self, seq: u32, off: i32) {
        if off == 0 {
            return;
        }
        if self.offset_before == self.offset_after || after(seq, self.correction_pos) {
            self.correction_pos = seq;
            self.offset_before = self.offset_after;
            self.offset_after = self.offset_after.wrapping_add(off);
        }
    }

    /// The offset for a segment of this direction starting at `seq`.
    pub fn seq_offset(&self, seq: u32) -> i32 {
        if after(seq, self.correction_pos) {
            self.offset_after
        } else {
            self.offset_before
        }
    }

    /// The offset to take off an acknowledgement (or SACK edge) `ack` of
    /// the other direction for this direction's data (nf_ct_seq_adjust).
    pub fn ack_offset(&self, ack: u32) -> i32 {
        if after(
            ack.wrapping_sub(self.offset_before as u32),
            self.correction_pos,
        ) {
            self.offset_after
        } else {
            self.offset_before
        }
    }

    /// Whether this direction was ever adjusted.
    pub fn is_zero(&self) -> bool {
        self.offset_before == 0 && self.offset_after == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_segments_take_the_new_offset_retransmissions_the_old() {
        let mut a = SeqAdj::default();
        a.set(1000, 3);
        // The changed segment itself keeps the offset before the change.
        assert_eq!(a.seq_offset(1000), 0);
        assert_eq!(a.seq_offset(1020), 3);
        a.set(2000, -1);
        assert_eq!((a.offset_before, a.offset_after), (3, 2));
        assert_eq!(a.seq_offset(1500), 3);
        assert_eq!(a.seq_offset(2001), 2);
        // A retransmission of the first segment changes nothing.
        a.set(1000, 3);
        assert_eq!((a.correction_pos, a.offset_after), (2000, 2));
        // Acks of the other side: an ack up to the changed segment's
        // (moved) end is taken back by the old offset.
        assert_eq!(a.ack_offset(2000 + 3), 3);
        assert_eq!(a.ack_offset(2100), 2);
    }

    #[test]
    fn wraps_around_sequence_space() {
        let mut a = SeqAdj::default();
        a.set(u32::MAX - 5, 4);
        assert_eq!(a.seq_offset(10), 4);
        assert_eq!(a.seq_offset(u32::MAX - 100), 0);
    }
}
