//! Connection events, like ctnetlink's (`conntrack -E`): NEW on confirm, UPDATE
//! when the state or status changes, DESTROY when a connection leaves the table.

use crate::conn::Listed;
use crate::tuple::{Addr, Family, Tuple};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    New,
    Update,
    Destroy,
}

impl EventKind {
    /// The tag `conntrack -E` prints.
    pub fn tag(self) -> &'static str {
        match self {
            EventKind::New => "[NEW]",
            EventKind::Update => "[UPDATE]",
            EventKind::Destroy => "[DESTROY]",
        }
    }
}

/// One event with a snapshot of the connection at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub at_ms: u64,
    /// The connection, with its counters when accounting is on.
    pub conn: Listed,
}

/// A bounded event buffer owned by one worker: pushing never allocates; when
/// full, events are counted as dropped.
///
/// While nobody needs the snapshots ([`EventBuf::keep_snapshots`] off), the
/// buffer keeps only what is counted from them: each NEW connection's
/// original source ([`EventBuf::note_new`]): 17 bytes instead of a
/// snapshot of over 200, taken without building one.
#[derive(Debug)]
pub struct EventBuf {
    events: Vec<Event>,
    /// NEW connections' original sources, while snapshots are off.
    sources: Vec<(Family, Addr)>,
    capacity: usize,
    snapshots: bool,
    pub dropped: u64,
}

impl EventBuf {
    /// A buffer for `capacity` events; capacity 0 disables events. It keeps
    /// snapshots until told otherwise.
    pub fn new(capacity: usize) -> EventBuf {
        EventBuf {
            events: Vec::with_capacity(capacity),
            sources: Vec::with_capacity(capacity),
            capacity,
            snapshots: true,
            dropped: 0,
        }
    }
    /// Whether events are kept as snapshots (capacity above 0 and
    /// snapshots on): callers build a connection's snapshot only then.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.snapshots && self.capacity > 0
    }
    /// Snapshots on (every event kept whole) or off (only NEW connections'
    /// sources, see [`EventBuf::note_new`]).
    #[inline]
    pub fn keep_snapshots(&mut self, on: bool) {
        self.snapshots = on;
    }

    pub fn push(&mut self, kind: EventKind, at_ms: u64, conn: &Listed) {
        if !self.enabled() {
            if kind == EventKind::New {
                self.note_new(&conn.tuples[0]);
            }
            return;
        }
        if self.events.len() < self.capacity {
            self.events.push(Event {
                kind,
                at_ms,
                conn: *conn,
            });
        } else {
            self.dropped += 1;
        }
    }
    /// A NEW connection whose snapshot was not built (snapshots off): its
    /// original tuple's source is kept.
    #[inline]
    pub fn note_new(&mut self, orig: &Tuple) {
        if self.capacity > 0 && !self.snapshots && self.sources.len() < self.capacity {
            self.sources.push((orig.family, orig.src));
        }
    }
    /// Hands every buffered event to `f`, oldest first, and empties the buffer.
    pub fn drain(&mut self, f: impl FnMut(Event)) {
        self.events.drain(..).for_each(f);
    }
    /// Hands the kept NEW sources to `f` (see [`EventBuf::note_new`]) and
    /// empties them.
    pub fn drain_sources(&mut self, mut f: impl FnMut(Family, Addr)) {
        for (family, addr) in self.sources.drain(..) {
            f(family, addr);
        }
    }
    pub fn len(&self) -> usize {
        self.events.len()
    }
    /// No events and no sources kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.sources.is_empty()
    }
}
