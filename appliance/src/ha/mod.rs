//! High availability: state sync with a peer in conntrackd's protocol, the
//! external cache of what the peer reported, and the takeover that commits
//! it into the table (`conntrackd -c`).
//!
//! Everything here runs on the control side (the REST runtime's thread, on
//! the control lcore's CPU), never on a worker: the sync socket is a kernel
//! UDP socket on a management interface; the local connections' changes come
//! from the workers' event queues (the same ones `conntrack -E` reads); the
//! commit inserts through the table's guard like the REST API's deletes.

pub mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use ctcore::commit::{CommitError, Learnt};
use ctcore::engine::Worker;
use ctcore::tuple::Tuple;
use serde::Serialize;

use crate::config::sync::SyncConfig;
use crate::events::Hub;
use crate::pipeline::Shared;

/// The commit's NEW events buffered between two hand-overs to the event hub.
const COMMIT_EVENTS: usize = 1024;

/// One connection the peer reported.
#[derive(Debug, Clone, Copy)]
pub struct Cached {
    pub learnt: Learnt,
    /// When it was last reported (ms, the control clock).
    pub at_ms: u64,
}

/// What the peer reported, keyed by original tuple (conntrackd's external cache).
#[derive(Debug, Default)]
pub struct ExternalCache {
    pub entries: HashMap<Tuple, Cached>,
    pub limit: usize,
}

impl ExternalCache {
    /// NEW or UPDATE from the peer; false if the cache is full.
    pub fn put(&mut self, learnt: Learnt, at_ms: u64) -> bool {
        if self.entries.len() >= self.limit && !self.entries.contains_key(&learnt.orig) {
            return false;
        }
        self.entries.insert(learnt.orig, Cached { learnt, at_ms });
        true
    }

    /// DESTROY from the peer.
    pub fn remove(&mut self, orig: &Tuple) -> bool {
        self.entries.remove(orig).is_some()
    }
}

/// The task's own counters (the protocol's are in [`Protocol`]).
#[derive(Debug, Default)]
pub struct Counters {
    /// Local changes that never reached the sync (the event queue was
    /// full): the whole table is sent again instead.
    pub events_lost: AtomicU64,
    /// Reports the external cache had no room for.
    pub cache_full: AtomicU64,
    /// Times messages waited for `max_messages_per_second`.
    pub rate_limited: AtomicU64,
    /// Datagrams received from the peer.
    pub datagrams_received: AtomicU64,
    pub send_errors: AtomicU64,
}

/// The protocol's counters and queues, as the task last published them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Protocol {
    pub counters: ctcore::sync::Counters,
    pub resend_queue: usize,
    /// Connections sent and not yet acknowledged by the peer (FTFW; the
    /// resend queue also holds the control messages awaiting an ACK).
    pub unacked_conns: usize,
    pub transmit_queue: usize,
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommitReport {
    pub committed: u64,
    /// Already in the table (a connection this box tracks itself).
    pub exists: u64,
    pub table_full: u64,
    pub invalid: u64,
}

/// The HA state shared by the sync task, the REST API and the metrics.
pub struct Ha {
    pub cfg: SyncConfig,
    pub cache: Mutex<ExternalCache>,
    pub counters: Counters,
    pub protocol: Mutex<Protocol>,
    /// When the peer was last heard (control clock, ms); 0: never.
    pub last_heard_ms: AtomicU64,
    /// The peer is being heard (set on each datagram, cleared by the alive timeout).
    pub peer_alive: AtomicBool,
    /// Commits done (manual and automatic).
    pub takeovers: AtomicU64,
    pub committed_total: AtomicU64,
    /// Set by POST /api/v1/ha/resync: the task asks the peer for its table.
    pub resync_wanted: AtomicBool,
    /// The conntrack worker context commits run in (their NEW events).
    committer: Mutex<Worker>,
}

impl Ha {
    pub fn new(cfg: SyncConfig, shared: &Shared, default_limit: usize) -> Ha {
        let limit = cfg.cache_limit.unwrap_or(default_limit);
        Ha {
            cfg,
            cache: Mutex::new(ExternalCache {
                entries: HashMap::new(),
                limit,
            }),
            counters: Counters::default(),
            protocol: Mutex::default(),
            last_heard_ms: AtomicU64::new(0),
            peer_alive: AtomicBool::new(false),
            takeovers: AtomicU64::new(0),
            committed_total: AtomicU64::new(0),
            resync_wanted: AtomicBool::new(false),
            committer: Mutex::new(shared.engine.worker(COMMIT_EVENTS)),
        }
    }

    /// The task's view of the protocol, for the API and metrics.
    pub fn publish(&self, ep: &ctcore::sync::Endpoint) {
        *self.protocol.lock().unwrap_or_else(|e| e.into_inner()) = Protocol {
            counters: *ep.counters(),
            resend_queue: ep.resend_queue_len(),
            unacked_conns: ep.unacked_conns(),
            transmit_queue: ep.transmit_queue_len(),
        };
    }

    /// Back to standby (keepalived's notify_backup / notify_fault): the
    /// packets that still come are dropped, ARP / ND unanswered; the
    /// table is kept (the peer's resync brings it up to date).
    pub fn standby(&self, shared: &Shared) {
        if !shared.standby.swap(true, Ordering::Relaxed) {
            tracing::info!("sync: standby");
        }
    }

    /// Commits the external cache into the table (`conntrackd -c`), then
    /// leaves standby and has the ports' addresses announced. Each
    /// connection gets the timeout the peer last reported, less the time
    /// since. The cache is kept: the peer, if it comes back, goes on
    /// reporting, and a second commit finds what is already in the table.
    pub fn commit(&self, shared: &Shared, hub: &Hub, now_ms: u64) -> CommitReport {
        let entries: Vec<Cached> = {
            let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.entries.values().copied().collect()
        };
        let mut w = self.committer.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = CommitReport::default();
        for e in entries {
            let mut l = e.learnt;
            let waited = now_ms.saturating_sub(e.at_ms);
            // A connection whose timeout ran out since gets one second: the
            // peer kept it (no DESTROY came), so a packet may still be due.
            l.timeout_ms = l.timeout_ms.saturating_sub(waited).max(1000);
            // (A commit adds at most three: two expired holders, its NEW.)
            if w.events.len() + 3 > COMMIT_EVENTS {
                w.events.drain(|e| hub.publish(e));
            }
            match shared.engine.commit(&mut w, now_ms, &l) {
                Ok(_) => r.committed += 1,
                Err(CommitError::Exists) => r.exists += 1,
                Err(CommitError::Full) => r.table_full += 1,
                Err(CommitError::Invalid(why)) => {
                    tracing::debug!(why, "sync: a cached connection cannot be committed");
                    r.invalid += 1
                }
            }
        }
        // The committed connections are this box's now: their NEW events go
        // to the event streams and, like conntrackd's after `-c` (the
        // kernel's events), to the peer.
        w.events.drain(|e| hub.publish(e));
        hub.lost(std::mem::take(&mut w.events.dropped));
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        self.committed_total
            .fetch_add(r.committed, Ordering::Relaxed);
        // Then the traffic may come: forward, and tell the neighbours.
        if shared.standby.swap(false, Ordering::Relaxed) {
            tracing::info!("sync: active (left standby)");
        }
        shared.announce.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            committed = r.committed,
            exists = r.exists,
            table_full = r.table_full,
            invalid = r.invalid,
            "sync: external cache committed"
        );
        r
    }
}
