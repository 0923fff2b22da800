//! The event stream (`conntrack -E`): a task drains the workers' event queues
//! into a broadcast ring; each subscriber reads the ring at its own pace and
//! can fall at most `subscriber_queue` events behind. A subscriber that falls
//! further loses the oldest events, counted (its own stream gets a `dropped`
//! event, and `ctgate_conntrack_events_dropped_total{stage="subscriber"}`
//! rises); neither the workers nor the other subscribers wait for it.
//! The REST API's stream and the HA sync both read from it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ctcore::event::Event;
use tokio::sync::broadcast;

use crate::pipeline::Shared;

/// How often the workers' queues are drained.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// The fan-out point.
pub struct Hub {
    tx: broadcast::Sender<Event>,
    subscribers: Arc<AtomicUsize>,
    /// ctgate's own subscribers (state sync): not counted against
    /// `max_subscribers`, but they keep the workers queueing events.
    internal: Arc<AtomicUsize>,
    subscriber_dropped: Arc<AtomicU64>,
}

/// Held by a subscriber's stream; dropping it unsubscribes.
pub struct Subscription {
    subscribers: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Counts `n` events this subscriber lost.
    pub fn lost(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

/// Held by an internal subscriber; dropping it unsubscribes.
pub struct Internal {
    count: Arc<AtomicUsize>,
}

impl Drop for Internal {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    pub fn new(capacity: usize) -> Hub {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Hub {
            tx,
            subscribers: Arc::new(AtomicUsize::new(0)),
            internal: Arc::new(AtomicUsize::new(0)),
            subscriber_dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A new subscriber: the workers queue events from now on (the pump
    /// turns that off again once nobody listens).
    /// None if `max` subscribers are there already.
    pub fn subscribe(
        &self,
        shared: &Shared,
        max: usize,
    ) -> Option<(broadcast::Receiver<Event>, Subscription)> {
        self.subscribers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        let rx = self.tx.subscribe();
        shared.events_wanted.store(true, Ordering::Relaxed);
        Some((
            rx,
            Subscription {
                subscribers: self.subscribers.clone(),
                dropped: self.subscriber_dropped.clone(),
            },
        ))
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// A subscription of ctgate's own (state sync). Its receiver reports a
    /// lag like any other (the events it lost); the REST metrics do not
    /// count it.
    pub fn subscribe_internal(&self, shared: &Shared) -> (broadcast::Receiver<Event>, Internal) {
        self.internal.fetch_add(1, Ordering::Relaxed);
        let rx = self.tx.subscribe();
        shared.events_wanted.store(true, Ordering::Relaxed);
        (
            rx,
            Internal {
                count: self.internal.clone(),
            },
        )
    }

    /// Whether anyone (a REST client or ctgate itself) listens.
    fn listening(&self) -> bool {
        self.subscribers() > 0 || self.internal.load(Ordering::Relaxed) > 0
    }

    /// Events subscribers lost by falling behind, summed.
    pub fn subscriber_dropped(&self) -> u64 {
        self.subscriber_dropped.load(Ordering::Relaxed)
    }

    /// Counts `n` events the subscribers never got (a delete that produced
    /// more DESTROY events than the ring holds).
    pub fn lost(&self, n: u64) {
        if self.subscribers() > 0 {
            self.subscriber_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Hands an event to the subscribers (none listening: it is discarded).
    pub fn publish(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    /// Moves the workers' queued events to the subscribers, and tells the
    /// workers whether anyone listens. Runs until the runtime stops.
    pub async fn pump(self: Arc<Self>, shared: Arc<Shared>) {
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut listening = self.listening();
            if !listening {
                shared.events_wanted.store(false, Ordering::Relaxed);
                // A subscriber that came in between turned it on before this
                // store: look again (subscribe counts first, then turns on).
                listening = self.listening();
                if listening {
                    shared.events_wanted.store(true, Ordering::Relaxed);
                }
            }
            for q in &shared.events {
                while let Some(e) = q.pop() {
                    if listening {
                        self.publish(e);
                    }
                }
            }
        }
    }
}
