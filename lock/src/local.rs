//! The per-name local FIFO in front of the backend.
//!
//! Within one manager, at most one contender per lock name is in the backend's
//! queue at a time: the others wait here, in FIFO order. That keeps two
//! [`Lock`](crate::Lock) handles of one process from sharing a key (they
//! would share the session lease, hence the key) and makes N local waiters cost
//! the backend one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as FairMutex, OwnedMutexGuard};

/// The right to use a lock name's backend key; held from enqueueing until the
/// key is deleted.
pub(crate) type Slot = OwnedMutexGuard<()>;

/// One fair mutex per lock name, dropped when nobody uses it.
#[derive(Default)]
pub(crate) struct LocalQueues {
    names: Mutex<HashMap<String, Weak<FairMutex<()>>>>,
}

impl LocalQueues {
    fn mutex(&self, name: &str) -> Arc<FairMutex<()>> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = names.get(name).and_then(Weak::upgrade) {
            return existing;
        }
        // Forget names nobody waits for any more, so the map stays small.
        names.retain(|_, m| m.strong_count() > 0);
        let fresh = Arc::new(FairMutex::new(()));
        names.insert(name.to_owned(), Arc::downgrade(&fresh));
        fresh
    }

    /// Waits for the name's slot, first come first served. Dropping the future
    /// leaves the queue.
    pub(crate) async fn acquire(&self, name: &str) -> Slot {
        self.mutex(name).lock_owned().await
    }

    /// The name's slot if it is free now.
    pub(crate) fn try_acquire(&self, name: &str) -> Option<Slot> {
        self.mutex(name).try_lock_owned().ok()
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
}
