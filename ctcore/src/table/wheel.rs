//! A stripe's timer wheel: connections expire by their deadline, at a cost
//! that follows the number of connections due, not the table's size (the
//! slab sweep it replaces visited every record whatever expired).
//!
//! Every live record is linked, through its [`Link`], into the slot of one
//! tick (`TICK_MS` of time) no later than its deadline. A packet that
//! extends the deadline changes nothing here (the record is looked at again
//! when its slot comes due and moved on then); one that shortens it below
//! the slot's tick moves it earlier ([`super::Guard::deadline_changed`]).
//! `SLOTS` ticks are ahead at any time; a deadline further out waits in the
//! last slot and is moved on when that comes due. So a connection is found
//! within one tick of its deadline, and an idle long-lived one is looked at
//! once per wheel turn (`SLOTS * TICK_MS`).

/// The wheel's time step.
pub const TICK_MS: u64 = 64;
/// Slots in a turn (4096 x 64 ms: 262 s ahead).
pub const SLOTS: usize = 4096;
/// No record (end of a list).
pub const NIL: u32 = u32::MAX;
/// A record's place in its slot's list, in one word: the next and the
/// previous record (25 bits each: a stripe's slab index), and the slot that
/// holds it (13 bits). Its tick is the one of the turn ahead with that slot
/// ([`Wheel::tick_of_slot`]): a record's tick is never one already fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link(u64);

/// Bits of a record index in a link (a stripe's slab index:
/// `LOCAL_BITS`); all ones is NIL there.
const INDEX_BITS: u32 = 25;
const INDEX_NIL: u64 = (1 << INDEX_BITS) - 1;
/// Bits of a slot in a link; all ones: not in the wheel.
const SLOT_NIL: u64 = (1 << 13) - 1;
const _: () = assert!(SLOTS as u64 <= SLOT_NIL);

/// The largest record index a link holds (a stripe's capacity is below it).
pub const MAX_INDEX: u32 = INDEX_NIL as u32 - 1;

#[inline(always)]
fn pack_index(i: u32) -> u64 {
    if i == NIL {
        INDEX_NIL
    } else {
        debug_assert!(i <= MAX_INDEX, "record index {i}");
        u64::from(i)
    }
}

#[inline(always)]
fn unpack_index(v: u64) -> u32 {
    let v = v & INDEX_NIL;
    if v == INDEX_NIL {
        NIL
    } else {
        v as u32
    }
}

impl Default for Link {
    fn default() -> Self {
        Link(INDEX_NIL | INDEX_NIL << INDEX_BITS | SLOT_NIL << (2 * INDEX_BITS))
    }
}

impl Link {
    /// A link into `slot` between `prev` and `next` (NIL: none).
    pub fn new(next: u32, prev: u32, slot: usize) -> Link {
        Link(pack_index(next) | pack_index(prev) << INDEX_BITS | (slot as u64) << (2 * INDEX_BITS))
    }
    #[inline(always)]
    pub fn next(self) -> u32 {
        unpack_index(self.0)
    }
    #[inline(always)]
    pub fn prev(self) -> u32 {
        unpack_index(self.0 >> INDEX_BITS)
    }
    /// The slot holding the record (None: not in the wheel).
    #[inline(always)]
    pub fn slot(self) -> Option<usize> {
        let s = self.0 >> (2 * INDEX_BITS);
        (s != SLOT_NIL).then_some(s as usize)
    }
    #[inline(always)]
    pub fn set_next(&mut self, next: u32) {
        self.0 = (self.0 & !INDEX_NIL) | pack_index(next);
    }
    #[inline(always)]
    pub fn set_prev(&mut self, prev: u32) {
        self.0 = (self.0 & !(INDEX_NIL << INDEX_BITS)) | pack_index(prev) << INDEX_BITS;
    }
    pub fn is_linked(self) -> bool {
        self.slot().is_some()
    }
}

/// The slots' list heads and the next tick to fire.
pub struct Wheel {
    pub heads: Box<[u32]>,
    /// Ticks before this one have been fired: their records are gone or moved.
    pub next_tick: u64,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel {
            heads: vec![NIL; SLOTS].into_boxed_slice(),
            next_tick: 0,
        }
    }
}

pub fn tick_of(ms: u64) -> u64 {
    ms / TICK_MS
}

pub fn slot_of(tick: u64) -> usize {
    (tick % SLOTS as u64) as usize
}

impl Wheel {
    /// The tick a record with `deadline_ms` goes to: its own, but not one
    /// already fired and not beyond the turn.
    pub fn place(&self, deadline_ms: u64) -> u64 {
        tick_of(deadline_ms).clamp(self.next_tick, self.next_tick + SLOTS as u64 - 1)
    }

    /// The tick a linked record in `slot` waits for: the first not yet
    /// fired with that slot.
    pub fn tick_of_slot(&self, slot: usize) -> u64 {
        let ahead = (slot as u64).wrapping_sub(self.next_tick) % SLOTS as u64;
        self.next_tick + ahead
    }

    /// Catching up after a long pause: the ticks more than a turn back hold
    /// nothing a later tick's slot does not (a slot is reused every turn), so
    /// firing starts at most one turn before `now_tick`.
    pub fn catch_up(&mut self, now_tick: u64) {
        if now_tick >= self.next_tick + SLOTS as u64 {
            self.next_tick = now_tick + 1 - SLOTS as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_clamped_to_the_turn_ahead() {
        let mut w = Wheel {
            next_tick: 100,
            ..Wheel::default()
        };
        assert_eq!(w.place(0), 100, "an overdue deadline fires next");
        assert_eq!(w.place(200 * TICK_MS + 5), 200);
        assert_eq!(w.place(u64::MAX), 100 + SLOTS as u64 - 1);
        w.catch_up(100 + 10 * SLOTS as u64);
        assert_eq!(w.next_tick, 100 + 9 * SLOTS as u64 + 1);
        assert_eq!(
            slot_of(w.next_tick + SLOTS as u64 - 1),
            slot_of(w.next_tick - 1)
        );
        for ahead in [0, 1, 77, SLOTS as u64 - 1] {
            let t = w.next_tick + ahead;
            assert_eq!(w.tick_of_slot(slot_of(t)), t);
        }
        let mut l = Link::new(MAX_INDEX, NIL, SLOTS - 1);
        assert_eq!(
            (l.next(), l.prev(), l.slot()),
            (MAX_INDEX, NIL, Some(SLOTS - 1))
        );
        l.set_prev(0);
        l.set_next(NIL);
        assert_eq!((l.next(), l.prev(), l.slot()), (NIL, 0, Some(SLOTS - 1)));
        assert!(!Link::default().is_linked());
        assert_eq!(Link::default().next(), NIL);
    }
}
