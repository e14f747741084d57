//! The holds of one manager, and how a held lock hears that it was lost —
//! with per-manager cost, not per-hold cost.
//!
//! Every [`Hold`] registers here when it is made and leaves when it is
//! released. A hold is lost when:
//!
//! - **its session is lost** (lease gone, or the manager closed): the
//!   session's keeper calls [`Holds::session_lost`], which loses every hold
//!   on that lease at once;
//! - **its key is deleted** behind its back (force-unlock, a lease revoked by
//!   hand): one task per manager, the driver, keeps **one** etcd watch of the
//!   deletions under the manager's namespace (`NoPut`: deletes only) and
//!   hands each delete to the hold with that key and an older create revision.
//!
//! A hold shorter than [`WATCH_AFTER`] costs etcd nothing: the watch is open
//! only while the manager has a hold older than that (holds turn old in
//! rounds, so a hold is watched from between 1 and 1.5 × `WATCH_AFTER` on). **Trade-off:** while it
//! is open, every delete in the namespace — every release of every process
//! sharing it — reaches this manager, to be looked up and dropped. Waiters do
//! not use this watch: each keeps its targeted watch of the one key ahead of
//! it, so a hand-off still wakes one waiter.
//!
//! # Coverage
//!
//! A watch started after a key's deletion misses it. Each hold therefore
//! carries a *confirmed* revision at which its key was known to exist (the
//! read that won it), and the watch must report every delete after it:
//!
//! - a watch is opened at the lowest `confirmed + 1` of all registered holds;
//! - a hold that turns [`WATCH_AFTER`] old with `confirmed + 1` below the open
//!   watch's start is confirmed again by a read, at a revision at or after
//!   the start;
//! - a broken watch resumes from the revision after the last one it reported
//!   (a delete, not a progress notification: see
//!   [`deletions`](crate::backend)'s note on etcd-io/etcd#15220), so nothing
//!   falls in between;
//! - a watch that fell behind a compaction cannot resume: one keys-only range
//!   read of the namespace confirms every hold again (a hold whose key is
//!   missing is lost), and a new watch starts after that read.
//!
//! A watch or read refused for good (not transient) ends the holds it was
//! for with [`LossCause::WatchFailed`]: the lock is reported lost, but its key
//! may still exist, so its local slot is kept until the release deletes it
//! (see [`cleanup`](crate::queue)).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::owner_key::OwnerKey;
use crate::backend::{Backend, ChangeWatch, Changes};
use crate::error::LockError;
use crate::hold::Hold;
use crate::metrics::LossCause;

/// How long a hold lasts before its key is watched for deletion.
pub(crate) const WATCH_AFTER: Duration = Duration::from_millis(100);

/// The pause before the driver tries again after a failed watch or read.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A hold by its key and its key's create revision.
type Id = (Arc<str>, i64);

/// A registered hold.
struct Entry {
    hold: Weak<Hold>,
    /// The lease of its key (a session's loss scans by it).
    lease: i64,
    /// A revision at which the hold's key was known to exist.
    confirmed: i64,
    /// Older than [`WATCH_AFTER`]: its key must be watched.
    watched: bool,
}

#[derive(Default)]
struct State {
    /// Every live hold of the manager.
    holds: BTreeMap<Id, Entry>,
    /// Holds younger than [`WATCH_AFTER`], with when they turn old, in order.
    young: VecDeque<(Instant, Id)>,
    /// How many holds are `watched`.
    watched: usize,
    /// Lives as long as the driver task: gone when it stopped, or when the
    /// runtime that ran it shut down (the next hold starts another on its own
    /// runtime).
    driver: Weak<()>,
}

/// The latest hold of each owner key (a queue, or a queue's readers), for
/// re-entry by the task that owns it.
#[derive(Default)]
struct Owners {
    by_key: HashMap<OwnerKey, Weak<Hold>>,
    /// Forget released names once the map is this large (amortized O(1)).
    prune_at: usize,
}

/// The registry of one manager's holds.
pub(crate) struct Holds {
    state: Mutex<State>,
    owners: Mutex<Owners>,
    /// Wakes the driver: a first young hold, or no watched hold left.
    wake: Notify,
    backend: Arc<dyn Backend>,
    /// The namespace's key prefix, which the watch covers.
    root: String,
    closed: CancellationToken,
}

impl Holds {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        root: String,
        closed: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Holds {
            state: Mutex::default(),
            owners: Mutex::default(),
            wake: Notify::new(),
            backend,
            root,
            closed,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owners(&self) -> MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hold under `owner_key` (see [`Hold::owner_key`]) that the
    /// calling task owns (a plain `lock()` of this task, with guards alive),
    /// if any.
    pub(crate) fn owned_by_caller(&self, owner_key: &str) -> Option<Arc<Hold>> {
        let hold = self
            .owners()
            .by_key
            .get(owner_key)
            .and_then(Weak::upgrade)?;
        (hold.count() > 0 && hold.owned_by_caller()).then_some(hold)
    }

    /// Registers a new hold whose key existed at revision `confirmed`.
    pub(crate) fn add(self: &Arc<Self>, hold: &Arc<Hold>, confirmed: i64) {
        let id = (Arc::clone(hold.key()), hold.token() as i64);
        let mut state = self.state();
        let entry = Entry {
            hold: Arc::downgrade(hold),
            lease: hold.lease(),
            confirmed,
            watched: false,
        };
        state.holds.insert(id.clone(), entry);
        let first = state.young.is_empty();
        state.young.push_back((Instant::now() + WATCH_AFTER, id));
        if state.driver.strong_count() == 0 {
            let alive = Arc::new(());
            state.driver = Arc::downgrade(&alive);
            tokio::spawn(Driver::new(Arc::clone(self), alive).run());
        } else if first {
            self.wake.notify_one();
        }
        drop(state);
        let mut owners = self.owners();
        if owners.by_key.len() >= owners.prune_at {
            owners.by_key.retain(|_, h| h.strong_count() > 0);
            owners.prune_at = (owners.by_key.len() * 2).max(64);
        }
        if hold.owner.is_some() {
            owners
                .by_key
                .insert(OwnerKey::of(hold), Arc::downgrade(hold));
        }
    }

    /// Unregisters a hold (its release began).
    pub(crate) fn remove(&self, hold: &Hold) {
        {
            let mut owners = self.owners();
            let latest = owners.by_key.get(hold.owner_key());
            if latest.is_some_and(|h| std::ptr::eq(h.as_ptr(), hold)) {
                owners.by_key.remove(hold.owner_key());
            }
        }
        let id = (Arc::clone(hold.key()), hold.token() as i64);
        let mut state = self.state();
        if let Some(entry) = state.holds.remove(&id) {
            if entry.watched {
                state.watched -= 1;
                if state.watched == 0 {
                    self.wake.notify_one(); // the watch can close
                }
            }
        }
    }

    /// Every hold on `lease` is lost: its session is.
    pub(crate) fn session_lost(&self, lease: i64) {
        let lost: Vec<Arc<Hold>> = {
            let state = self.state();
            state
                .holds
                .values()
                .filter(|e| e.lease == lease)
                .filter_map(|e| e.hold.upgrade())
                .collect()
        };
        for hold in lost {
            self.remove(&hold);
            hold.lose(hold.loss_cause());
        }
    }

    /// The holds `pick` selects.
    fn select(&self, mut pick: impl FnMut(&Id, &Entry) -> bool) -> Vec<Id> {
        let state = self.state();
        let picked = state.holds.iter().filter(|(id, e)| pick(id, e));
        picked.map(|(id, _)| id.clone()).collect()
    }

    /// Takes the holds `ids` out of the registry.
    fn take(&self, ids: impl IntoIterator<Item = Id>) -> Vec<Arc<Hold>> {
        let mut state = self.state();
        let mut taken = Vec::new();
        for id in ids {
            if let Some(entry) = state.holds.remove(&id) {
                if entry.watched {
                    state.watched -= 1;
                }
                taken.extend(entry.hold.upgrade());
            }
        }
        taken
    }
}

/// How far the deletion watch reports.
#[derive(Debug, Clone, Copy)]
struct Coverage {
    /// Every delete at this revision or later is reported (once the watch
    /// is open again after a break).
    from: i64,
    /// The latest revision through which every delete has been reported.
    seen: i64,
}

/// The one task per manager that keeps the deletion watch.
struct Driver {
    holds: Arc<Holds>,
    /// Tells [`Holds::add`] that this task runs.
    _alive: Arc<()>,
    watch: Option<ChangeWatch>,
    coverage: Option<Coverage>,
    /// Old holds whose confirmed revision the watch does not cover.
    unconfirmed: Vec<Id>,
    /// Every hold must be confirmed again (the watch fell behind a compaction).
    resync: bool,
    /// No new attempt at a failed watch or read before this.
    retry_at: Option<Instant>,
}

/// What the driver does next.
enum Next {
    Resync,
    Confirm,
    Open,
    Wait(Option<Instant>),
    Stop,
}

impl Driver {
    fn new(holds: Arc<Holds>, alive: Arc<()>) -> Self {
        Driver {
            holds,
            _alive: alive,
            watch: None,
            coverage: None,
            unconfirmed: Vec::new(),
            resync: false,
            retry_at: None,
        }
    }

    async fn run(mut self) {
        loop {
            match self.next() {
                Next::Stop => return,
                Next::Resync => self.resync().await,
                Next::Confirm => self.confirm().await,
                Next::Open => self.open().await,
                Next::Wait(due) => self.wait(due).await,
            }
        }
    }

    /// Turns due holds old, and decides the next step.
    fn next(&mut self) -> Next {
        let now = Instant::now();
        let mut state = self.holds.state();
        if self.holds.closed.is_cancelled() || (state.holds.is_empty() && state.young.is_empty()) {
            // Losses on close come from the sessions; the watch goes with us.
            state.driver = Weak::new();
            return Next::Stop;
        }
        while let Some((due, _)) = state.young.front() {
            if *due > now {
                break;
            }
            let (_, id) = state.young.pop_front().expect("just seen");
            let Some(entry) = state.holds.get_mut(&id) else {
                continue; // released
            };
            entry.watched = true;
            let confirmed = entry.confirmed;
            state.watched += 1;
            if self.coverage.is_some_and(|c| confirmed + 1 < c.from) {
                self.unconfirmed.push(id);
            }
        }
        // Holds turn old in rounds, at most one per half WATCH_AFTER: under
        // a stream of short holds the driver does not wake for each one.
        let due = state
            .young
            .front()
            .map(|(due, _)| (*due).max(now + WATCH_AFTER / 2));
        if state.watched == 0 {
            // No old hold: no watch (a later one starts afresh).
            self.watch = None;
            self.coverage = None;
            self.unconfirmed.clear();
            self.resync = false;
            return Next::Wait(due);
        }
        if let Some(at) = self.retry_at.filter(|at| *at > now) {
            return Next::Wait(Some(due.map_or(at, |due| due.min(at))));
        }
        self.retry_at = None;
        if self.resync {
            Next::Resync
        } else if self.watch.is_none() {
            Next::Open
        } else if !self.unconfirmed.is_empty() {
            Next::Confirm
        } else {
            Next::Wait(due)
        }
    }

    /// Opens the watch: resuming after the last reported revision, or
    /// afresh from the lowest confirmed revision of every hold.
    async fn open(&mut self) {
        let from = match self.coverage {
            Some(c) => c.seen + 1,
            None => {
                let state = self.holds.state();
                let Some(min) = state.holds.values().map(|e| e.confirmed).min() else {
                    return;
                };
                self.unconfirmed.clear();
                self.coverage = Some(Coverage {
                    from: min + 1,
                    seen: min,
                });
                min + 1
            }
        };
        match self
            .holds
            .backend
            .watch_prefix(&self.holds.root, from, false)
            .await
        {
            Ok(watch) => {
                debug!(prefix = %self.holds.root, from, "watching deletions for held locks");
                self.watch = Some(watch);
            }
            Err(err) => self.failed(err, |_, e| e.watched),
        }
    }

    /// After a failed watch or read: a transient failure is retried after a
    /// pause; a permanent one ends the holds `of` selects with `WatchFailed`.
    fn failed(&mut self, err: LockError, of: impl FnMut(&Id, &Entry) -> bool) {
        self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
        if err.is_transient() {
            debug!(%err, "deletion watch or read failed; retrying");
            return;
        }
        for hold in self.holds.take(self.holds.select(of)) {
            warn!(key = %hold.key(), %err, "lock lost: its key can no longer be watched");
            hold.lose(LossCause::WatchFailed);
        }
    }

    /// Confirms the holds the watch does not cover with one read.
    async fn confirm(&mut self) {
        let Some(coverage) = self.coverage else {
            return;
        };
        let ids: HashSet<Id> = self.unconfirmed.drain(..).collect();
        match self.read(&ids).await {
            Ok(header) => debug!(
                holds = ids.len(),
                header,
                from = coverage.from,
                "held locks confirmed"
            ),
            Err(err) => {
                if err.is_transient() {
                    self.unconfirmed.extend(ids.iter().cloned());
                }
                self.failed(err, |id, _| ids.contains(id));
            }
        }
    }

    /// Confirms every hold again with one read, then watches anew after it.
    async fn resync(&mut self) {
        self.watch = None;
        self.coverage = None;
        self.unconfirmed.clear();
        let ids: HashSet<Id> = self.holds.state().holds.keys().cloned().collect();
        match self.read(&ids).await {
            Ok(header) => {
                debug!(
                    holds = ids.len(),
                    header, "held locks confirmed after a compaction"
                );
                self.resync = false;
            }
            Err(err) => self.failed(err, |id, _| ids.contains(id)),
        }
    }

    /// One keys-only read of the namespace: of the holds `ids`, those whose
    /// key is gone (or was made again) are lost, the others confirmed at the
    /// read's revision, which is returned.
    async fn read(&mut self, ids: &HashSet<Id>) -> crate::error::Result<i64> {
        let read = self.holds.backend.revisions(&self.holds.root).await?;
        let present: HashSet<(&[u8], i64)> = read
            .keys
            .iter()
            .map(|(k, rev)| (k.as_slice(), *rev))
            .collect();
        let gone = |id: &Id| !present.contains(&(id.0.as_bytes(), id.1));
        {
            let mut state = self.holds.state();
            for id in ids.iter().filter(|id| !gone(id)) {
                if let Some(entry) = state.holds.get_mut(id) {
                    entry.confirmed = entry.confirmed.max(read.header);
                }
            }
        }
        for hold in self.holds.take(ids.iter().filter(|id| gone(id)).cloned()) {
            warn!(key = %hold.key(), "lock lost: its key was deleted");
            hold.lose(LossCause::Deleted);
        }
        Ok(read.header)
    }

    /// Waits for the watch, a hold turning old, a wake-up or the close.
    async fn wait(&mut self, due: Option<Instant>) {
        let holds = Arc::clone(&self.holds);
        let report = tokio::select! {
            _ = holds.wake.notified() => return,
            _ = holds.closed.cancelled() => return,
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => return,
            report = async { self.watch.as_mut()?.recv().await }, if self.watch.is_some() => report,
        };
        match report {
            Some(Ok(Changes::Changed { changes, through })) => {
                for change in changes.into_iter().filter(|c| c.value.is_none()) {
                    self.deleted(change.key, change.rev);
                }
                if let Some(c) = self.coverage.as_mut() {
                    c.seen = c.seen.max(through);
                }
            }
            Some(Ok(Changes::Compacted)) => {
                debug!("deletion watch fell behind a compaction; confirming every hold");
                self.watch = None;
                self.resync = true;
            }
            Some(Err(err)) => {
                self.watch = None;
                self.failed(err, |_, e| e.watched);
            }
            None => {
                debug!("deletion watch broke; resuming");
                self.watch = None;
            }
        }
    }

    /// `key` was deleted at revision `rev`: a hold on it made before that is
    /// lost. (A key that is not UTF-8 is not ours: another client's.)
    fn deleted(&mut self, key: Vec<u8>, rev: i64) {
        let Ok(key) = String::from_utf8(key) else {
            return;
        };
        let key: Arc<str> = key.into();
        let ids: Vec<Id> = {
            let state = self.holds.state();
            let made_before = (Arc::clone(&key), i64::MIN)..(Arc::clone(&key), rev);
            state
                .holds
                .range(made_before)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for hold in self.holds.take(ids) {
            warn!(key = %hold.key(), "lock lost: its key was deleted");
            hold.lose(LossCause::Deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::backend::memory::MemoryBackend;
    use crate::{LockManager, LockOptions};

    /// In memory, with a history of one delete: a held key is deleted, and
    /// its delete forgotten, before the hold is watched. The watch finds its
    /// start compacted; one read finds the key gone (the hold is lost) and
    /// the other key there (that hold stays), and the new watch still hears
    /// later deletes.
    #[tokio::test]
    async fn a_deletion_forgotten_before_the_watch_opens_is_found_by_a_read() {
        let manager = LockManager::with_backend(Arc::new(MemoryBackend::with_history(1)), "/m");
        let admin = manager.peer();
        let lock = |name: &str| manager.new_lock(name, LockOptions::default()).unwrap();
        let (victim, bystander) = (lock("victim"), lock("bystander"));
        let (victim, bystander) = (
            victim.lock().await.unwrap(),
            bystander.lock().await.unwrap(),
        );
        assert!(admin.force_unlock("victim").await.unwrap());
        for name in ["x", "y"] {
            let other = admin.new_lock(name, LockOptions::default()).unwrap();
            other.lock().await.unwrap().unlock().await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(2), victim.lost())
            .await
            .expect("the read found the key gone");
        assert!(bystander.is_held());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(admin.force_unlock("bystander").await.unwrap());
        tokio::time::timeout(Duration::from_secs(2), bystander.lost())
            .await
            .expect("the new watch heard the delete");
    }
}
