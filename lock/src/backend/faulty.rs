//! A backend that injects faults into another one, for tests of failure paths
//! (feature `fault-injection`; not for production use).
//!
//! Each [`Op`] of the storage interface can be made to fail before it reaches
//! the store, to apply and then lose its answer (the case a client cannot tell
//! from a failure), to answer late, to hang until the request timeout, or to be
//! refused for good. Rules are consumed in order, per operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Ahead, Backend, BoxFuture, ChangeWatch, Enqueued, Granted, Listing, Read, Revisions};
use crate::error::{LockError, Result};

/// An operation of the storage interface a lock manager uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Granting a lease.
    Grant,
    /// One lease keep-alive.
    KeepAlive,
    /// Revoking a lease.
    Revoke,
    /// Asking a lease's remaining TTL.
    TimeToLive,
    /// The transaction that puts a contender key (or a multi-lock's keys)
    /// and reads the queue head.
    Enqueue,
    /// The read that confirms a key and finds the keys ahead of it.
    Position,
    /// Watching a key ahead for its deletion (or change).
    WaitDeleted,
    /// The fenced put that changes a held key's value in place (a
    /// semaphore's promotion, a write lock's downgrade).
    Update,
    /// A fenced delete (release, cleanup, force-unlock), or the one
    /// transaction deleting a multi-lock's keys.
    Delete,
    /// A range read (info, list).
    List,
    /// The keys-only range read that re-confirms held locks (after their
    /// deletion watch missed revisions).
    Revisions,
    /// Opening a watch of a prefix: the manager's watch of deleted keys,
    /// which tells held locks that their keys are gone, and an election
    /// observer's watch of its candidates. A fault makes the open fail (and
    /// be retried), or be refused for good.
    WatchDeletes,
}

/// What happens to an operation a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fails with a transient error without reaching the store.
    Fail,
    /// Reaches the store and applies, then the answer is lost: a transient
    /// error, as after a timeout on a request that did arrive.
    Lose,
    /// Answers after this delay.
    Delay(Duration),
    /// Never answers: fails transiently after the request timeout, without
    /// reaching the store.
    Stall,
    /// Fails with a permanent (not transient) backend error.
    Refuse,
    /// A stale request: the answer is lost at once (a transient error, as
    /// after a timeout), and the request reaches the store only after this
    /// delay, when the caller may have retried and moved on. For `Enqueue`
    /// and `Delete`; on reads it acts as `Fail`.
    Late(Duration),
    /// A request on the wire: it reaches the store after this delay and
    /// the caller gets its answer then — and it still reaches the store if
    /// the caller stopped waiting (dropped its future) meanwhile, as a
    /// request already sent does. For `Enqueue` and `Delete`; on reads it
    /// acts as `Delay`.
    Slow(Duration),
}

#[derive(Debug)]
struct Rule {
    op: Op,
    fault: Fault,
    /// How many more calls it applies to; `None` for all.
    remaining: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    calls: HashMap<Op, usize>,
    request_timeout: Option<Duration>,
}

/// A set of fault rules shared by the tests and the managers made with
/// [`LockManager::with_faults`](crate::LockManager::with_faults).
///
/// ```
/// use distlock::testing::{Fault, Faults, Op};
/// use distlock::{LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let faults = Faults::new();
/// let manager = LockManager::in_memory().with_faults(&faults);
/// faults.inject(Op::Delete, Fault::Lose, 1); // the release applies, its answer is lost
/// let guard = manager.new_lock("a", LockOptions::default())?.lock().await?;
/// guard.unlock().await?;
/// assert_eq!(faults.calls(Op::Delete), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl Faults {
    /// No faults yet.
    ///
    /// ```
    /// let faults = distlock::testing::Faults::new();
    /// assert_eq!(faults.calls(distlock::testing::Op::Grant), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `fault` to the next `times` calls of `op` (after the rules
    /// already queued for it).
    ///
    /// ```
    /// # use distlock::testing::{Fault, Faults, Op};
    /// Faults::new().inject(Op::Enqueue, Fault::Fail, 3);
    /// ```
    pub fn inject(&self, op: Op, fault: Fault, times: usize) -> &Self {
        self.state().rules.push(Rule {
            op,
            fault,
            remaining: Some(times),
        });
        self
    }

    /// Applies `fault` to every later call of `op`, until healed.
    ///
    /// ```
    /// # use distlock::testing::{Fault, Faults, Op};
    /// Faults::new().always(Op::KeepAlive, Fault::Stall);
    /// ```
    pub fn always(&self, op: Op, fault: Fault) -> &Self {
        self.state().rules.push(Rule {
            op,
            fault,
            remaining: None,
        });
        self
    }

    /// Sets the request timeout the faulty backend reports (and
    /// [`Fault::Stall`] waits for) instead of the wrapped backend's.
    ///
    /// ```
    /// # use distlock::testing::Faults; use std::time::Duration;
    /// Faults::new().request_timeout(Duration::from_millis(500));
    /// ```
    pub fn request_timeout(&self, timeout: Duration) -> &Self {
        self.state().request_timeout = Some(timeout);
        self
    }

    /// Removes every rule for `op`.
    ///
    /// ```
    /// # use distlock::testing::{Fault, Faults, Op};
    /// let faults = Faults::new();
    /// faults.always(Op::Delete, Fault::Fail).heal_op(Op::Delete);
    /// ```
    pub fn heal_op(&self, op: Op) -> &Self {
        self.state().rules.retain(|r| r.op != op);
        self
    }

    /// Removes every rule.
    ///
    /// ```
    /// # use distlock::testing::{Fault, Faults, Op};
    /// let faults = Faults::new();
    /// faults.always(Op::Delete, Fault::Fail);
    /// faults.heal();
    /// ```
    pub fn heal(&self) {
        self.state().rules.clear();
    }

    /// How many calls of `op` were made so far, faulty or not.
    ///
    /// ```
    /// # use distlock::testing::{Faults, Op};
    /// assert_eq!(Faults::new().calls(Op::List), 0);
    /// ```
    pub fn calls(&self, op: Op) -> usize {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// Counts a call of `op` and takes the fault that applies to it.
    fn next(&self, op: Op) -> Option<Fault> {
        let mut state = self.state();
        *state.calls.entry(op).or_default() += 1;
        let i = state.rules.iter().position(|r| r.op == op)?;
        let rule = &mut state.rules[i];
        let fault = rule.fault;
        if let Some(n) = rule.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.rules.remove(i);
            }
        }
        Some(fault)
    }
}

/// [`Backend`] wrapper applying [`Faults`].
pub(crate) struct FaultyBackend {
    inner: Arc<dyn Backend>,
    faults: Faults,
}

impl FaultyBackend {
    pub(crate) fn new(inner: Arc<dyn Backend>, faults: Faults) -> Self {
        FaultyBackend { inner, faults }
    }

    async fn run<'a, T: Send + 'static>(
        &'a self,
        op: Op,
        call: BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        self.run_late(op, call, None).await
    }

    /// [`run`](Self::run) for a write: `detached` is the same request, owning
    /// its inputs, for [`Fault::Late`] and [`Fault::Slow`] to send after
    /// their delay, whatever becomes of the caller.
    async fn run_late<'a, T: Send + 'static>(
        &'a self,
        op: Op,
        call: BoxFuture<'a, Result<T>>,
        detached: Option<BoxFuture<'static, Result<T>>>,
    ) -> Result<T> {
        let injected = |what: &str, transient: bool| {
            LockError::backend(
                format!("injected fault: {op:?} {what}"),
                std::io::Error::other("fault injection"),
                transient,
            )
        };
        match self.faults.next(op) {
            None => call.await,
            Some(Fault::Fail) => Err(injected("failed", true)),
            Some(Fault::Refuse) => Err(injected("refused", false)),
            Some(Fault::Stall) => {
                tokio::time::sleep(self.request_timeout()).await;
                Err(injected("got no answer", true))
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Some(Fault::Lose) => {
                let _applied = call.await;
                Err(injected("answer lost", true))
            }
            Some(Fault::Late(delay)) => {
                if let Some(stale) = detached {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = stale.await;
                    });
                }
                Err(injected("answer lost; the request lands later", true))
            }
            Some(Fault::Slow(delay)) => {
                let Some(request) = detached else {
                    tokio::time::sleep(delay).await;
                    return call.await;
                };
                let (answer, answered) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = answer.send(request.await);
                });
                answered
                    .await
                    .unwrap_or_else(|_| Err(injected("answer lost", true)))
            }
        }
    }
}

impl Backend for FaultyBackend {
    fn request_timeout(&self) -> Duration {
        let set = self.faults.state().request_timeout;
        set.unwrap_or_else(|| self.inner.request_timeout())
    }

    fn grant(&self, ttl_secs: i64) -> BoxFuture<'_, Result<Granted>> {
        Box::pin(self.run(Op::Grant, self.inner.grant(ttl_secs)))
    }

    fn keep_alive(&self, lease: i64) -> BoxFuture<'_, Result<i64>> {
        Box::pin(self.run(Op::KeepAlive, self.inner.keep_alive(lease)))
    }

    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.run(Op::Revoke, self.inner.revoke(lease)))
    }

    fn time_to_live(&self, lease: i64) -> BoxFuture<'_, Result<i64>> {
        Box::pin(self.run(Op::TimeToLive, self.inner.time_to_live(lease)))
    }

    fn enqueue<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
        lease: i64,
        value: Vec<u8>,
        read: Read,
    ) -> BoxFuture<'a, Result<Enqueued>> {
        let inner = Arc::clone(&self.inner);
        let (q, k, v) = (queue.to_owned(), key.to_owned(), value.clone());
        let stale: BoxFuture<'static, _> =
            Box::pin(async move { inner.enqueue(&q, &k, lease, v, read).await });
        let call = self.inner.enqueue(queue, key, lease, value, read);
        Box::pin(self.run_late(Op::Enqueue, call, Some(stale)))
    }

    fn enqueue_all<'a>(
        &'a self,
        entries: &'a [(String, String)],
        lease: i64,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<Enqueued>>> {
        let (inner, e, v) = (Arc::clone(&self.inner), entries.to_vec(), value.clone());
        let stale: BoxFuture<'static, _> =
            Box::pin(async move { inner.enqueue_all(&e, lease, v).await });
        let call = self.inner.enqueue_all(entries, lease, value);
        Box::pin(self.run_late(Op::Enqueue, call, Some(stale)))
    }

    fn ahead<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
        rev: i64,
        read: Read,
    ) -> BoxFuture<'a, Result<Ahead>> {
        Box::pin(self.run(Op::Position, self.inner.ahead(queue, key, rev, read)))
    }

    /// Counted and failed as [`Op::Position`]: a shared read fails for
    /// every reader it answers for.
    fn aheads<'a>(
        &'a self,
        queue: &'a str,
        keys: &'a [(String, i64)],
        read: Read,
    ) -> BoxFuture<'a, Result<Vec<Ahead>>> {
        Box::pin(self.run(Op::Position, self.inner.aheads(queue, keys, read)))
    }

    // `wait_then` is the trait's: no read at the wake-up, so that each read
    // a waiter makes meets the faults of `Op::Position`.
    fn wait_deleted<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(Op::WaitDeleted, self.inner.wait_deleted(key, from)))
    }

    fn wait_changed<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(Op::WaitDeleted, self.inner.wait_changed(key, from)))
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        rev: i64,
        lease: i64,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<bool>> {
        let (inner, k, v) = (Arc::clone(&self.inner), key.to_owned(), value.clone());
        let stale: BoxFuture<'static, _> =
            Box::pin(async move { inner.update(&k, rev, lease, v).await });
        let call = self.inner.update(key, rev, lease, value);
        Box::pin(self.run_late(Op::Update, call, Some(stale)))
    }

    fn delete<'a>(&'a self, key: &'a [u8], rev: Option<i64>) -> BoxFuture<'a, Result<bool>> {
        let (inner, k) = (Arc::clone(&self.inner), key.to_owned());
        let stale: BoxFuture<'static, _> = Box::pin(async move { inner.delete(&k, rev).await });
        Box::pin(self.run_late(Op::Delete, self.inner.delete(key, rev), Some(stale)))
    }

    fn delete_all<'a>(
        &'a self,
        keys: &'a [(String, Option<i64>)],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        let (inner, k) = (Arc::clone(&self.inner), keys.to_vec());
        let stale: BoxFuture<'static, _> = Box::pin(async move { inner.delete_all(&k).await });
        Box::pin(self.run_late(Op::Delete, self.inner.delete_all(keys), Some(stale)))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        Box::pin(self.run(Op::List, self.inner.list(prefix)))
    }

    fn revisions<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Revisions>> {
        Box::pin(self.run(Op::Revisions, self.inner.revisions(prefix)))
    }

    fn watch_prefix<'a>(
        &'a self,
        prefix: &'a str,
        from: i64,
        puts: bool,
    ) -> BoxFuture<'a, Result<ChangeWatch>> {
        let watch = self.inner.watch_prefix(prefix, from, puts);
        Box::pin(self.run(Op::WatchDeletes, watch))
    }
}
