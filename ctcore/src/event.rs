//! Connection events, like ctnetlink's (`conntrack -E`): NEW on confirm, UPDATE
//! when the state or status changes, DESTROY when a connection leaves the table.

use crate::conn::Listed;

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
#[derive(Debug)]
pub struct EventBuf {
    events: Vec<Event>,
    enabled: bool,
    pub dropped: u64,
}

impl EventBuf {
    /// A buffer for `capacity` events; capacity 0 disables events.
    pub fn new(capacity: usize) -> EventBuf {
        EventBuf {
            events: Vec::with_capacity(capacity),
            enabled: capacity > 0,
            dropped: 0,
        }
    }
    /// Whether events are kept (capacity above 0).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn push(&mut self, kind: EventKind, at_ms: u64, conn: &Listed) {
        if !self.enabled {
            return;
        }
        if self.events.len() < self.events.capacity() {
            self.events.push(Event {
                kind,
                at_ms,
                conn: *conn,
            });
        } else {
            self.dropped += 1;
        }
    }
    /// Hands every buffered event to `f`, oldest first, and empties the buffer.
    pub fn drain(&mut self, f: impl FnMut(Event)) {
        self.events.drain(..).for_each(f);
    }
    pub fn len(&self) -> usize {
        self.events.len()
    }
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}
