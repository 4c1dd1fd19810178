//! The bus itself: bounded history, bounded subscribers, publication that never waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;

use super::Event;

/// Events kept for `since` (dockerd keeps the same number).
pub const HISTORY_LIMIT: usize = 256;
/// Events a subscriber may have queued before it is dropped (dockerd's per-subscriber buffer
/// has this size too; dockerd then makes the publisher wait up to 100 ms per event).
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// A subscriber that fell [`SUBSCRIBER_BUFFER`] events behind and was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

type Wants = Box<dyn Fn(&Event) -> bool + Send>;

struct Subscriber {
    id: u64,
    wants: Wants,
    sender: mpsc::Sender<Arc<Event>>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    history: VecDeque<Arc<Event>>,
    subscribers: Vec<Subscriber>,
    next_id: u64,
}

/// The bus. Share it as `Arc<EventBus>`; [`publish`](EventBus::publish) is cheap and never
/// blocks on a subscriber, so it may be called from any thread, async or not.
pub struct EventBus {
    state: Mutex<State>,
    buffer: usize,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::with_buffer(SUBSCRIBER_BUFFER)
    }
}

impl EventBus {
    pub fn new() -> Arc<EventBus> {
        Arc::new(EventBus::default())
    }

    /// A bus whose subscribers may queue `buffer` events (tests use small ones).
    pub fn with_buffer(buffer: usize) -> EventBus {
        EventBus {
            state: Mutex::new(State::default()),
            buffer: buffer.max(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can be left half-done by a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the event and hands it to every subscriber that wants it. A subscriber whose
    /// buffer is full is dropped on the spot.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        let mut state = self.state();
        if state.history.len() == HISTORY_LIMIT {
            state.history.pop_front();
        }
        state.history.push_back(event.clone());
        state.subscribers.retain(|s| {
            if !(s.wants)(&event) {
                return !s.sender.is_closed();
            }
            match s.sender.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lagged.store(true, Ordering::SeqCst);
                    log::warn!(
                        "events: dropping a subscriber that fell {} events behind",
                        self.buffer
                    );
                    false
                }
            }
        });
    }

    /// Subscribes to what `wants` accepts. With a `since` or `until` (nanoseconds since the
    /// epoch), the recorded events of that window come back first, oldest first, as dockerd
    /// selects them: from the newest back to the first older than `since`, skipping those
    /// after `until` (an `until` of 0 or less skips nothing). Taken under the same lock as the
    /// registration, so no event is missed or seen twice in between.
    pub fn subscribe(
        self: &Arc<Self>,
        since: Option<i64>,
        until: Option<i64>,
        wants: impl Fn(&Event) -> bool + Send + 'static,
    ) -> (Vec<Arc<Event>>, Subscription) {
        let (sender, receiver) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut state = self.state();
        let mut past = Vec::new();
        if since.is_some() || until.is_some() {
            let since = since.unwrap_or(0);
            let until = until.unwrap_or(0);
            for event in state.history.iter().rev() {
                let at = event.message.time_nano;
                if at < since {
                    break;
                }
                if (until > 0 && at > until) || !wants(event) {
                    continue;
                }
                past.push(event.clone());
            }
            past.reverse();
        }
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.push(Subscriber {
            id,
            wants: Box::new(wants),
            sender,
            lagged: lagged.clone(),
        });
        drop(state);
        let subscription = Subscription {
            bus: self.clone(),
            id,
            receiver,
            lagged,
        };
        (past, subscription)
    }

    /// Streams currently subscribed (`NEventsListener` in `/info`).
    pub fn subscribers(&self) -> usize {
        self.state()
            .subscribers
            .iter()
            .filter(|s| !s.sender.is_closed())
            .count()
    }
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    bus: Arc<EventBus>,
    id: u64,
    receiver: mpsc::Receiver<Arc<Event>>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// The next event; after the events it had queued, `Some(Err(Lagged))` once the
    /// subscriber has been dropped for falling behind, `None` once it was cancelled.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        match self.receiver.recv().await {
            Some(event) => Some(Ok(event)),
            // The bus drops the sender only when the subscriber lagged or was cancelled (it
            // lives as long as this subscription otherwise).
            None if self.lagged() => Some(Err(Lagged)),
            None => None,
        }
    }

    /// Whether the subscriber was dropped for falling behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::SeqCst)
    }

    /// A handle that ends this subscription from elsewhere (its reader then sees the end).
    pub fn canceller(&self) -> Canceller {
        Canceller {
            bus: Arc::downgrade(&self.bus),
            id: self.id,
        }
    }
}

/// Ends a [`Subscription`] from outside its reader (a watcher that saw its client leave).
pub struct Canceller {
    bus: Weak<EventBus>,
    id: u64,
}

impl Canceller {
    pub fn cancel(self) {
        if let Some(bus) = self.bus.upgrade() {
            let id = self.id;
            bus.state().subscribers.retain(|s| s.id != id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let id = self.id;
        self.bus.state().subscribers.retain(|s| s.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    fn event_at(name: &str, nanos: i64) -> Event {
        Event::at(
            EventType::Volume,
            "create",
            name,
            [("driver", "local")],
            nanos,
        )
    }

    fn names(events: &[Arc<Event>]) -> Vec<String> {
        events.iter().map(|e| e.message.actor.id.clone()).collect()
    }

    #[test]
    fn history_is_bounded_and_windows_select_like_dockerd() {
        let bus = EventBus::new();
        for i in 0..(HISTORY_LIMIT as i64 + 10) {
            bus.publish(event_at(&format!("v{i}"), 1000 + i));
        }
        let (all, _s) = bus.subscribe(Some(0), None, |_| true);
        assert_eq!(all.len(), HISTORY_LIMIT);
        assert_eq!(all[0].message.actor.id, "v10");
        let (none, _s) = bus.subscribe(None, None, |_| true);
        assert!(none.is_empty(), "no window, no history");
        let (window, _s) = bus.subscribe(Some(1200), Some(1202), |_| true);
        assert_eq!(names(&window), ["v200", "v201", "v202"]);
        // An until of 0 (the epoch) filters nothing, as in dockerd.
        let (zero, _s) = bus.subscribe(None, Some(0), |_| true);
        assert_eq!(zero.len(), HISTORY_LIMIT);
        let (only, _s) = bus.subscribe(Some(1200), None, |e| e.message.actor.id == "v201");
        assert_eq!(names(&only), ["v201"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn subscribers_get_what_they_want_in_order() {
        let bus = EventBus::new();
        let (_, mut odd) = bus.subscribe(None, None, |e| e.message.actor.id.ends_with('1'));
        let (_, mut all) = bus.subscribe(None, None, |_| true);
        for name in ["a0", "a1", "b1"] {
            bus.publish(event_at(name, 1));
        }
        let id =
            |e: Option<Result<Arc<Event>, Lagged>>| e.unwrap().unwrap().message.actor.id.clone();
        assert_eq!(id(odd.next().await), "a1");
        assert_eq!(id(odd.next().await), "b1");
        for expected in ["a0", "a1", "b1"] {
            assert_eq!(id(all.next().await), expected);
        }
        assert_eq!(bus.subscribers(), 2);
        drop(odd);
        assert_eq!(bus.subscribers(), 1);
        // Cancelled from elsewhere: the reader sees the end, not a lag.
        all.canceller().cancel();
        assert_eq!(bus.subscribers(), 0);
        assert!(all.next().await.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_subscriber_that_falls_behind_is_dropped_not_waited_for() {
        let bus = Arc::new(EventBus::with_buffer(4));
        let (_, mut slow) = bus.subscribe(None, None, |_| true);
        let (_, mut other) = bus.subscribe(None, None, |e| e.message.actor.id == "last");
        for i in 0..10 {
            bus.publish(event_at(&format!("v{i}"), i));
        }
        bus.publish(event_at("last", 10));
        assert!(slow.lagged());
        assert_eq!(bus.subscribers(), 1);
        for i in 0..4 {
            let event = slow.next().await.unwrap().unwrap();
            assert_eq!(event.message.actor.id, format!("v{i}"));
        }
        assert_eq!(slow.next().await.unwrap().unwrap_err(), Lagged);
        let last = other.next().await.unwrap().unwrap();
        assert_eq!(last.message.actor.id, "last");
    }
}
