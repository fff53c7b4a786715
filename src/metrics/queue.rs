//! The work queue as far as it can be seen from outside kube-runtime, whose `Controller` keeps
//! its queue to itself: the triggers its event streams hand it, and the reconciles that start.
//! A trigger waits from the moment a stream yields it until a reconcile of that object starts
//! (for a worker under the concurrency limit, or for the object's running reconcile to end).
//! Timer requeues (`Action::requeue`) are not triggers here: their due time is kube-runtime's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A trigger older than this has lost its object (deleted before its reconcile started, which
/// kube-runtime then skips) and is dropped, so the map stays as small as the queue.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Triggers handed to a controller whose reconcile has not started yet: the earliest one per
/// object, keyed by controller, namespace and name.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<(&'static str, String, String), Instant>>,
}

impl Pending {
    /// Notes a trigger of an object; returns true when the object was not queued yet.
    pub fn push(&self, controller: &'static str, namespace: &str, name: &str, now: Instant) -> bool {
        let mut waiting = self.waiting.lock().expect("pending triggers lock");
        let key = (controller, namespace.to_owned(), name.to_owned());
        if waiting.contains_key(&key) {
            return false;
        }
        waiting.insert(key, now);
        true
    }

    /// Takes an object's trigger as its reconcile starts: how long it waited, if it was queued.
    pub fn take(
        &self,
        controller: &'static str,
        namespace: &str,
        name: &str,
        now: Instant,
    ) -> Option<Duration> {
        let mut waiting = self.waiting.lock().expect("pending triggers lock");
        let key = (controller, namespace.to_owned(), name.to_owned());
        waiting
            .remove(&key)
            .map(|since| now.saturating_duration_since(since))
    }

    /// Drops abandoned triggers; returns how many each controller lost.
    pub fn drop_abandoned(&self, now: Instant) -> Vec<&'static str> {
        let mut waiting = self.waiting.lock().expect("pending triggers lock");
        let mut dropped = Vec::new();
        waiting.retain(|(controller, _, _), since| {
            let keep = now.saturating_duration_since(*since) < ABANDONED_AFTER;
            if !keep {
                dropped.push(*controller);
            }
            keep
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_trigger_of_an_object_counts_until_its_reconcile_starts() {
        let pending = Pending::default();
        let t0 = Instant::now();
        assert!(pending.push("vpnpeer", "ns", "a", t0));
        assert!(!pending.push("vpnpeer", "ns", "a", t0 + Duration::from_secs(2)));
        assert!(pending.push("vpninstance", "ns", "a", t0));
        assert_eq!(
            pending.take("vpnpeer", "ns", "a", t0 + Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        // A reconcile started by a timer requeue alone has no trigger to take.
        assert_eq!(
            pending.take("vpnpeer", "ns", "a", t0 + Duration::from_secs(6)),
            None
        );
        assert_eq!(
            pending.drop_abandoned(t0 + Duration::from_secs(60)),
            Vec::<&str>::new()
        );
        assert_eq!(pending.drop_abandoned(t0 + ABANDONED_AFTER), vec!["vpninstance"]);
        assert_eq!(pending.take("vpninstance", "ns", "a", t0 + ABANDONED_AFTER), None);
    }
}
