//! The per-name local FIFO in front of the backend.
//!
//! Within one manager, at most one contender per lock name is in the backend's
//! queue at a time: the others wait here, in FIFO order. That keeps two owners
//! in one process from sharing a key (they would share the session lease,
//! hence the key) and makes N local waiters cost the backend one.
//!
//! A slot is held by an owner (a contender, then its hold) or by a cleanup
//! (a release or an abandoned contender deleting its key): a cleanup is not
//! contention, so a try may wait for it (see [`LocalQueues::try_acquire_after_cleanup`]).
//! Keys that no slot guards (a reader's, a permit's: unique to their
//! acquisition) have their background deletes counted per queue instead,
//! for the same reason (see [`LocalQueues::after_cleanups`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// One name's local queue.
struct Name {
    /// The slot: one permit, handed out first come first served (a fair
    /// mutex, kept inline: one allocation per name in use, not two).
    turn: Semaphore,
    /// Acquisitions waiting for the slot.
    waiting: AtomicUsize,
    /// The slot is held by a cleanup, not by an owner.
    cleaning: AtomicBool,
}

impl Default for Name {
    fn default() -> Self {
        Name {
            turn: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
            cleaning: AtomicBool::new(false),
        }
    }
}

/// The right to use a lock name's backend key; held from enqueueing until the
/// key is deleted (or the lock lost).
pub(crate) struct Slot {
    /// Holds the name's permit, which it gives back when dropped.
    name: Arc<Name>,
}

impl Slot {
    /// The slot of `name`, whose permit was just taken.
    fn taken(name: Arc<Name>, permit: SemaphorePermit<'_>) -> Self {
        permit.forget(); // given back by `drop`
        Slot { name }
    }

    /// From now on the slot is held by a cleanup of its key, not by an owner.
    pub(crate) fn cleaning(&self) {
        self.name.cleaning.store(true, Ordering::SeqCst);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.name.cleaning.store(false, Ordering::SeqCst);
        self.name.turn.add_permits(1);
    }
}

impl Name {
    /// Waits for the slot's permit, first come first served.
    async fn take(self: Arc<Self>) -> Slot {
        let permit = match self.turn.acquire().await {
            Ok(permit) => permit,
            // As tokio's own `Mutex` says: a semaphore that is never closed
            // (nothing closes this one) never refuses.
            Err(_) => unreachable!("a name's semaphore is never closed"),
        };
        Slot::taken(Arc::clone(&self), permit)
    }

    /// The slot's permit, if it is free now.
    fn try_take(self: Arc<Self>) -> Option<Slot> {
        let permit = self.turn.try_acquire().ok()?;
        Some(Slot::taken(Arc::clone(&self), permit))
    }
}

/// Counts an acquisition as waiting while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The names in use; names nobody uses any more are forgotten in rounds, so
/// that a stream of new names costs amortized O(1) each.
struct Names {
    map: HashMap<String, Weak<Name>>,
    /// Forget unused names once the map is this large.
    prune_at: usize,
}

/// The smallest map size at which unused names are forgotten.
const MIN_PRUNE: usize = 64;

impl Default for Names {
    fn default() -> Self {
        Names {
            map: HashMap::new(),
            prune_at: MIN_PRUNE,
        }
    }
}

/// One fair mutex per lock name, dropped when nobody uses it; and the
/// background deletes of keys no slot guards, per queue.
#[derive(Default)]
pub(crate) struct LocalQueues {
    names: Mutex<Names>,
    cleanups: Arc<Cleanups>,
}

/// How many background deletes of keys that no slot guards run, per queue.
#[derive(Default)]
struct Cleanups {
    running: Mutex<HashMap<String, usize>>,
    /// Told whenever one ends.
    ended: tokio::sync::Notify,
}

impl Cleanups {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One background delete of a key of a queue that no slot guards, counted
/// until dropped (see [`LocalQueues::cleaning`]).
pub(crate) struct Cleaning {
    cleanups: Arc<Cleanups>,
    queue: String,
}

impl Drop for Cleaning {
    fn drop(&mut self) {
        let mut running = self.cleanups.running();
        if let Some(n) = running.get_mut(&self.queue) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.queue);
            }
        }
        drop(running);
        self.cleanups.ended.notify_waiters();
    }
}

impl LocalQueues {
    fn name(&self, name: &str) -> Arc<Name> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = names.map.get(name).and_then(Weak::upgrade) {
            return existing;
        }
        if names.map.len() >= names.prune_at {
            names.map.retain(|_, n| n.strong_count() > 0);
            names.prune_at = (names.map.len() * 2).max(MIN_PRUNE);
        }
        let fresh = Arc::new(Name::default());
        names.map.insert(name.to_owned(), Arc::downgrade(&fresh));
        fresh
    }

    /// Waits for the name's slot, first come first served. Dropping the future
    /// leaves the queue.
    pub(crate) async fn acquire(&self, name: &str) -> Slot {
        let name = self.name(name);
        let _waiting = Waiting::new(&name.waiting);
        Arc::clone(&name).take().await
    }

    /// The name's slot if it is free now.
    pub(crate) fn try_acquire(&self, name: &str) -> Option<Slot> {
        self.name(name).try_take()
    }

    /// The name's slot if no owner holds or waits for it: free now, or held
    /// by a cleanup of ours that ends within `bound` while nobody else waits
    /// (so a try right after our own release or timeout does not report our
    /// cleanup as contention).
    pub(crate) async fn try_acquire_after_cleanup(
        &self,
        name: &str,
        bound: Duration,
    ) -> Option<Slot> {
        let name = self.name(name);
        if let Some(slot) = Arc::clone(&name).try_take() {
            return Some(slot);
        }
        if !name.cleaning.load(Ordering::SeqCst) || name.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let _waiting = Waiting::new(&name.waiting);
        tokio::time::timeout(bound, Arc::clone(&name).take())
            .await
            .ok()
    }

    /// Counts a background delete of a key of `queue` that no slot guards
    /// (an abandoned reader's or permit's, a dropped guard's) until the
    /// returned value is dropped.
    pub(crate) fn cleaning(&self, queue: &str) -> Cleaning {
        *self.cleanups.running().entry(queue.to_owned()).or_default() += 1;
        Cleaning {
            cleanups: Arc::clone(&self.cleanups),
            queue: queue.to_owned(),
        }
    }

    /// Waits, for at most `bound`, until no background delete counted by
    /// [`cleaning`](Self::cleaning) runs for `queue`: a try right after our
    /// own timed-out wait or dropped guard then does not count the key we
    /// are deleting as contention.
    pub(crate) async fn after_cleanups(&self, queue: &str, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Registered before the check, so an end in between is heard.
            let ended = self.cleanups.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !self.cleanups.running().contains_key(queue) {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return;
            }
        }
    }

    /// How many names are remembered (for tests of the pruning).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.names.lock().unwrap().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_exclude_per_name_and_free_on_drop() {
        let q = LocalQueues::default();
        let a = q.acquire("a").await;
        assert!(q.try_acquire("a").is_none());
        let b = q.try_acquire("b").expect("other names are independent");
        drop(a);
        assert!(q.try_acquire("a").is_some());
        drop(b);
    }

    #[tokio::test]
    async fn waiters_are_served_in_order() {
        let q = Arc::new(LocalQueues::default());
        let first = q.acquire("n").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (q, order) = (q.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = q.acquire("n").await;
                order.lock().unwrap().push(i);
            }));
            tokio::task::yield_now().await; // enqueue in order
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_waits_for_a_cleanup_but_not_for_an_owner() {
        let q = Arc::new(LocalQueues::default());
        let bound = Duration::from_secs(1);
        // An owner holds: busy at once.
        let owner = q.acquire("n").await;
        assert!(q.try_acquire_after_cleanup("n", bound).await.is_none());
        // A cleanup holds and ends soon: the try waits for it.
        owner.cleaning();
        let q2 = Arc::clone(&q);
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(owner);
            drop(q2);
        });
        let slot = q.try_acquire_after_cleanup("n", bound).await;
        assert!(slot.is_some(), "our own cleanup reported as contention");
        ends.await.unwrap();
        // A cleanup with an owner queued behind it: that owner waits, so busy.
        let cleanup = slot.unwrap();
        cleanup.cleaning();
        let q3 = Arc::clone(&q);
        let waiter = tokio::spawn(async move { drop(q3.acquire("n").await) });
        tokio::task::yield_now().await;
        assert!(q.try_acquire_after_cleanup("n", bound).await.is_none());
        drop(cleanup);
        waiter.await.unwrap();
        // A cleanup that outlasts the bound: busy after the bound.
        let stuck = q.acquire("n").await;
        stuck.cleaning();
        assert!(q.try_acquire_after_cleanup("n", bound).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_waits_for_cleanups_of_keys_without_a_slot() {
        let q = Arc::new(LocalQueues::default());
        let bound = Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        q.after_cleanups("q/", bound).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "waited with nothing running"
        );
        let (a, b) = (q.cleaning("q/"), q.cleaning("q/"));
        let other = q.cleaning("other/");
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(a);
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(b);
        });
        q.after_cleanups("q/", bound).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200),
            "not after both"
        );
        ends.await.unwrap();
        // One that outlasts the bound: the wait ends at the bound.
        q.after_cleanups("other/", bound).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1200));
        drop(other);
        assert!(
            q.cleanups.running().is_empty(),
            "an ended queue was remembered"
        );
    }

    #[tokio::test]
    async fn unused_names_are_forgotten_in_rounds() {
        let q = LocalQueues::default();
        for i in 0..10_000 {
            drop(q.try_acquire(&i.to_string()));
        }
        assert!(q.remembered() <= 2 * MIN_PRUNE, "{}", q.remembered());
        let held: Vec<Slot> = (0..1_000)
            .map(|i| q.try_acquire(&format!("h{i}")).unwrap())
            .collect();
        for i in 0..10_000 {
            drop(q.try_acquire(&i.to_string()));
        }
        assert!(q.remembered() <= 2 * (held.len() + MIN_PRUNE));
        assert!(q.try_acquire("h7").is_none(), "a name in use was forgotten");
    }
}
