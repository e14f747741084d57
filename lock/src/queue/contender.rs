//! One contender in a queue: enqueue, wait for the key(s) ahead, win —
//! etcd's `concurrency.Mutex`, cancellation-safe, for every [`Kind`] of entry.
//!
//! 1. **Enqueue**: one transaction creates our key (if absent) and reads the
//!    queue's oldest keys; the [`Kind`] says whether that makes us a holder.
//! 2. **Wait**: watch only the key(s) the kind says we wait for (no
//!    thundering herd), starting at the revision *after* the read, and watch
//!    our own key: if it disappears (lease expired, force-unlocked) we fail
//!    with `Expired` instead of waiting on.
//! 3. **Win**: when what we waited for is gone, one linearizable read, sent
//!    after the wake-up, confirms our key still exists and that we hold. On
//!    etcd the watch stream sends it as the event arrives, one read for
//!    every wait of the manager that the event wakes
//!    ([`Backend::wait_then`]); readers that read at one time otherwise
//!    share their reads (see [`SharedReads`](crate::shared::SharedReads)).
//!    A permit that won after waiting touches its key (in the background,
//!    after the win), which wakes the waiter just behind it.
//!
//! A [`Contender`] that is dropped before it wins — a timeout, a lost
//! `try_lock`, a `lock()` future dropped mid-await, an error — removes its key
//! in the background while it still owns the lock name's local slot, so no
//! ghost key is left blocking the queue (see [`cleanup`](crate::queue) for
//! the invariant).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::{debug, warn};

use super::cleanup::{log_removal, remove_key};
use super::kind::{Kind, Standing};
use super::metadata::unique;
use super::waits::{any_deleted, promoted, watch_gone};
use crate::backend::{Ahead, Backend, BoxFuture, Enqueued, ReadAfter, Woken};
use crate::error::{ErrorCode, LockError, Result};
use crate::key::Keyspace;
use crate::lease::{Retry, Session};
use crate::shared::{Shared, Slot};

/// Whether to wait for a busy lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Wait,
    Try,
}

/// How an acquisition ended, short of an error.
pub(crate) enum Outcome {
    /// The lock is ours.
    Won(Won),
    /// `Mode::Try` found the lock busy.
    Busy,
    /// The session's lease no longer exists, so no key of ours does now. The
    /// caller may retry with a fresh session. `unheard`: an earlier attempt
    /// got no answer, so it may have made our key, which then went with the
    /// lease — and meanwhile it may have stood in the queue, at its head
    /// even, where observers of an election saw it lead.
    LeaseGone { unheard: bool },
}

/// A won entry: the key's create revision (the fencing token) and, for an
/// exclusive entry, the name's local slot.
pub(crate) struct Won {
    pub(crate) rev: i64,
    /// A revision at which the key was read to exist (and to hold).
    pub(crate) confirmed: i64,
    pub(crate) slot: Option<Slot>,
    /// When the watch event that woke this waiter arrived (the hand-off
    /// metric); `None` when it won without waiting.
    pub(crate) woke: Option<std::time::Instant>,
    /// An enqueue attempt got no answer: it may still create the key after
    /// the hold deleted it (its session is retired; see `Session::sweep_later`).
    pub(crate) unanswered: bool,
}

/// An enqueue with its retries, owning everything it needs.
type EnqueueFuture = Pin<Box<dyn Future<Output = Result<Enqueued>> + Send>>;

/// What a contender may have left in the backend.
enum Written {
    /// Nothing.
    Nothing,
    /// The enqueue transaction is in flight. If we are dropped now, the
    /// cleanup task takes this future over and drives it to its end first,
    /// so a request already sent cannot land after the cleanup.
    InFlight(EnqueueFuture),
    /// Perhaps a key, with an unknown revision (the enqueue failed in a way
    /// that does not say whether it applied).
    Unknown,
    /// Our key, with this create revision.
    Key(i64),
}

/// How many leftover keys of ours one acquisition deletes from its own place
/// before it gives up (each one needs a request that applied unheard).
const MAX_LEFTOVERS: usize = 3;

/// One attempt to take a lock with one key.
pub(crate) struct Contender {
    shared: Arc<Shared>,
    session: Arc<Session>,
    kind: Kind,
    queue: String,
    key: String,
    /// Our key's value; it also identifies this acquisition (see
    /// [`Metadata`](crate::api)), telling our own earlier attempt
    /// from a leftover.
    value: Vec<u8>,
    retry: Retry,
    /// What we may have written, hence what the cleanup must delete.
    written: Written,
    /// Set when an enqueue attempt got no answer: it may land late, creating
    /// our key again after we deleted it.
    unanswered: Arc<AtomicBool>,
    /// Whether our value is ours alone (our metadata, with an acquisition
    /// id), so that a key found with it is our own earlier attempt's; a
    /// caller's value (a candidate's) may equal a leftover's.
    unique_value: bool,
    /// The name's local slot: an exclusive entry's key is one per (name,
    /// lease), which only the slot's owner may make; other kinds of entry
    /// have keys of their own (see [`Keyspace::reader`]).
    slot: Option<Slot>,
}

impl Contender {
    /// A contender of `kind` for `queue` under `session`; an exclusive one
    /// owns the name's local `slot`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        session: Arc<Session>,
        kind: Kind,
        queue: String,
        value: Vec<u8>,
        slot: Option<Slot>,
        retry: Retry,
    ) -> Self {
        let lease = session.lease();
        let key = match kind {
            Kind::Exclusive => Keyspace::contender(&queue, lease),
            Kind::Shared => Keyspace::reader(&queue, lease, unique()),
            Kind::Permit(_) => Keyspace::permit(&queue, lease, unique()),
        };
        debug_assert_eq!(slot.is_some(), kind == Kind::Exclusive);
        Contender {
            key,
            shared,
            session,
            kind,
            queue,
            value,
            retry,
            written: Written::Nothing,
            unanswered: Arc::default(),
            unique_value: true,
            slot,
        }
    }

    /// Says whether our value is ours alone (see `unique_value`).
    pub(crate) fn with_unique_value(mut self, unique: bool) -> Self {
        self.unique_value = unique;
        self
    }

    /// Whether a key of ours that the enqueue found (with `value`) is a
    /// leftover of an earlier acquisition rather than our own attempt that
    /// applied unheard: its value is not ours, or — when values are not
    /// unique — none of our attempts went unanswered.
    fn is_leftover_value(&self, value: &[u8]) -> bool {
        value != self.value.as_slice()
            || (!self.unique_value && !self.unanswered.load(Ordering::SeqCst))
    }

    /// Our key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.backend
    }

    /// Takes the lock, or finds it busy (`Mode::Try`) or the lease gone.
    /// Fails with `Expired` when our key or session disappears while waiting.
    pub(crate) async fn acquire(mut self, mode: Mode) -> Result<Outcome> {
        let mut leftovers = 0;
        let enqueued = loop {
            let enqueued = match self.enqueue().await {
                Ok(enqueued) => enqueued,
                // etcd refused the whole transaction: nothing to clean up.
                Err(err) if err.code() == ErrorCode::Expired => {
                    self.written = Written::Nothing;
                    let unheard = self.unanswered.load(Ordering::SeqCst);
                    return Ok(Outcome::LeaseGone { unheard });
                }
                Err(err) => return Err(err),
            };
            match &enqueued.existing {
                Some(value) if self.is_leftover_value(value) && leftovers < MAX_LEFTOVERS => {
                    // A key of ours that outlived its acquisition: never adopt
                    // it (its token would repeat); delete it and enqueue anew.
                    leftovers += 1;
                    warn!(key = %self.key, rev = enqueued.rev, "deleting a leftover key of ours");
                    let (backend, key, rev) = (self.backend(), self.key.as_bytes(), enqueued.rev);
                    self.retry
                        .run("leftover delete", || backend.delete(key, Some(rev)))
                        .await?;
                    self.written = Written::Nothing;
                }
                Some(value) if self.is_leftover_value(value) => {
                    return Err(LockError::new(
                        ErrorCode::Backend,
                        format!("key `{}` keeps reappearing", self.key),
                    ))
                }
                _ => break enqueued,
            }
        };
        self.settle(enqueued, mode).await
    }

    /// After the enqueue: holds at once, or (`Mode::Try`) leaves the queue
    /// as busy, or waits its turn.
    pub(crate) async fn settle(mut self, enqueued: Enqueued, mode: Mode) -> Result<Outcome> {
        let holds = match self.kind.holds_at_enqueue(&enqueued.oldest, enqueued.rev) {
            Ok(holds) => holds,
            Err(refused) => {
                self.withdraw().await;
                return Err(refused);
            }
        };
        if holds {
            return self.win(enqueued.rev, enqueued.header).map(Outcome::Won);
        }
        if mode == Mode::Try {
            self.withdraw().await;
            return Ok(Outcome::Busy);
        }
        self.wait(enqueued).await.map(Outcome::Won)
    }

    /// Whether the enqueue's read already shows this contender holding.
    pub(crate) fn holds_at_enqueue(&self, enqueued: &Enqueued) -> Result<bool> {
        self.kind.holds_at_enqueue(&enqueued.oldest, enqueued.rev)
    }

    /// The queue this contender is in.
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    /// This contender's key was sent to the backend in a request made for
    /// several contenders at once, whose outcome is not known yet: if it is
    /// dropped now, its cleanup deletes the key whatever its revision, and
    /// watches for it to reappear.
    pub(crate) fn sent_elsewhere(&mut self, unanswered: bool) {
        self.written = Written::Unknown;
        if unanswered {
            self.unanswered.store(true, Ordering::SeqCst);
        }
    }

    /// The request made for several contenders answered: this key exists
    /// with this create revision (`None`: it was not made).
    pub(crate) fn answered_elsewhere(&mut self, rev: Option<i64>) {
        self.written = rev.map_or(Written::Nothing, Written::Key);
    }

    /// An enqueue attempt made for several contenders got no answer: it
    /// may create our key again after we deleted it.
    pub(crate) fn unanswered(&self) {
        self.unanswered.store(true, Ordering::SeqCst);
    }

    /// Our key's value.
    pub(crate) fn value(&self) -> &[u8] {
        &self.value
    }

    /// The lease our key goes under.
    pub(crate) fn lease(&self) -> i64 {
        self.session.lease()
    }

    async fn enqueue(&mut self) -> Result<Enqueued> {
        let (backend, queue, key, lease, value, retry) = (
            Arc::clone(self.backend()),
            self.queue.clone(),
            self.key.clone(),
            self.session.lease(),
            self.value.clone(),
            self.retry.clone(),
        );
        let read = self.kind.enqueue_read();
        let unanswered = Arc::clone(&self.unanswered);
        self.written = Written::InFlight(Box::pin(async move {
            retry
                .run("enqueue", || {
                    let attempt = backend.enqueue(&queue, &key, lease, value.clone(), read);
                    let unanswered = &unanswered;
                    async move {
                        let outcome = attempt.await;
                        if outcome.as_ref().is_err_and(LockError::is_transient) {
                            // It may have applied, or still apply later.
                            unanswered.store(true, Ordering::SeqCst);
                        }
                        outcome
                    }
                })
                .await
        }));
        let Written::InFlight(in_flight) = &mut self.written else {
            unreachable!("just set")
        };
        let outcome = in_flight.await;
        self.written = Written::Unknown;
        let enqueued = outcome?;
        self.written = Written::Key(enqueued.rev);
        debug!(key = %self.key, rev = enqueued.rev, "enqueued");
        Ok(enqueued)
    }

    async fn wait(mut self, enqueued: Enqueued) -> Result<Won> {
        let rev = enqueued.rev;
        let mut own_key_gone: Pin<Box<dyn Future<Output = Result<()>> + Send>> =
            Box::pin(watch_gone(
                Arc::clone(self.backend()),
                self.queue.clone(),
                self.key.clone(),
                rev,
                Some(enqueued.header + 1),
                self.retry.clone(),
            ));
        let session_lost = self.session.lost().clone();
        let backend = Arc::clone(self.backend());
        let read = self.kind.ahead_read();
        let mut woke = None;
        // The read the wake-up brought, made after it (see `Backend::wait_then`).
        let mut read_after: Option<Ahead> = None;
        loop {
            let (queue, key, reads) = (&self.queue, &self.key, &self.shared.reads);
            let ahead = match read_after.take() {
                Some(ahead) => ahead,
                None => {
                    self.retry
                        .run("queue read", || -> BoxFuture<'_, Result<Ahead>> {
                            match self.kind {
                                // Readers reading at one time share their reads.
                                Kind::Shared => Box::pin(reads.ahead(queue, key, rev, read)),
                                _ => backend.ahead(queue, key, rev, read),
                            }
                        })
                        .await?
                }
            };
            if ahead.gone {
                return Err(vanished());
            }
            let from = ahead.header + 1;
            let standing = match self.kind.standing(&ahead.keys) {
                Ok(standing) => standing,
                Err(refused) => {
                    self.withdraw().await;
                    return Err(refused);
                }
            };
            let wake = match standing {
                Standing::Holds => {
                    if woke.is_some() && matches!(self.kind, Kind::Permit(_)) {
                        // In the background: the win is confirmed, and the
                        // touch only wakes the next waiter; fenced by `rev`,
                        // it cannot bring back a key released meanwhile.
                        let (backend, key) = (Arc::clone(&backend), self.key.clone());
                        let (lease, value) = (self.session.lease(), self.value.clone());
                        self.shared.spawn_background(async move {
                            promoted(&backend, &key, rev, lease, value).await;
                        });
                    }
                    let won = self.win(rev, ahead.header);
                    return won.map(|won| Won { woke, ..won });
                }
                Standing::Behind { key, rev, .. } if self.is_leftover(&key) => {
                    // We hold this name's slot, so a key of ours ahead of us is a
                    // leftover (a lost hold's, or a request that applied unheard).
                    // Fenced: should this delete land late (a stale retry), a
                    // new key of that name and lease must survive it.
                    let shown = crate::key::shown(&key);
                    warn!(key = %shown, "deleting a leftover key of ours ahead of us");
                    self.retry
                        .run("leftover delete", || backend.delete(&key, Some(rev)))
                        .await?;
                    continue;
                }
                Standing::Behind { key, changes, .. } => {
                    let shown = crate::key::shown(&key);
                    debug!(key = %self.key, predecessor = %shown, "waiting");
                    let backend = Arc::clone(&backend);
                    let then = ReadAfter {
                        queue: self.queue.clone(),
                        key: self.key.clone(),
                        rev,
                        read,
                    };
                    Box::pin(async move { backend.wait_then(&key, from, changes, then).await })
                        as Pin<Box<dyn Future<Output = Result<Woken>> + Send>>
                }
                Standing::BehindAll(keys) => {
                    debug!(key = %self.key, ahead = keys.len(), "waiting for a holder to go");
                    let any = any_deleted(Arc::clone(&backend), keys, from);
                    Box::pin(async move { any.await.map(Woken::now) })
                }
            };
            tokio::select! {
                woken = wake => {
                    self.retry.heard(&woken);
                    woke = woken.as_ref().ok().map(|woken| woken.at);
                    match woken {
                        Ok(woken) => read_after = woken.read,
                        Err(err) if !err.is_transient() => return Err(err),
                        Err(_) => tokio::time::sleep(self.retry.interval()).await,
                    }
                }
                gone = &mut own_key_gone => {
                    gone?;
                    return Err(vanished());
                }
                _ = session_lost.cancelled() => return Err(session_lost_error()),
            }
        }
    }

    /// Whether `key` in our queue is one of this manager's exclusive keys
    /// (not ours) while we own the name's slot: a leftover.
    fn is_leftover(&self, key: &[u8]) -> bool {
        self.slot.is_some()
            && Keyspace::lease_of(&self.queue, key)
                .is_some_and(|lease| self.shared.sessions.owns_lease(lease))
    }

    /// Leaves the queue (a try that found it busy, a contender refused),
    /// waiting for its key's delete; on failure, the drop cleanup tries again
    /// in the background.
    pub(crate) async fn leave(mut self) {
        self.withdraw().await;
    }

    /// Leaves the queue after a lost `try_lock`; on failure, the drop cleanup
    /// tries again in the background.
    async fn withdraw(&mut self) {
        let Written::Key(rev) = self.written else {
            return;
        };
        match self.backend().delete(self.key.as_bytes(), Some(rev)).await {
            Ok(_) => {
                self.sweep_if_unanswered();
                self.disarm()
            }
            Err(err) => {
                debug!(key = %self.key, %err, "withdraw failed; cleaning up in the background")
            }
        }
    }

    /// Our key holds the lock; it is ours unless the session was lost
    /// meanwhile (then the key goes with the lease, and the drop cleanup sees
    /// to it).
    fn win(mut self, rev: i64, confirmed: i64) -> Result<Won> {
        if self.session.is_lost() {
            return Err(session_lost_error());
        }
        let slot = self.slot.take();
        self.disarm();
        Ok(Won {
            rev,
            confirmed,
            slot,
            woke: None,
            unanswered: self.unanswered.load(Ordering::SeqCst),
        })
    }

    /// After our key was deleted: if an enqueue attempt of ours got no
    /// answer, it may still create the key; the session sees to it.
    fn sweep_if_unanswered(&self) {
        if self.unanswered.load(Ordering::SeqCst) {
            self.session.sweep_later(&self.key);
        }
    }

    /// Marks the key as needing no cleanup.
    fn disarm(&mut self) {
        self.written = Written::Nothing;
        self.slot = None;
    }
}

fn vanished() -> LockError {
    LockError::new(
        ErrorCode::Expired,
        "our queue key disappeared while waiting (lease expired or force-unlocked)",
    )
}

fn session_lost_error() -> LockError {
    LockError::new(
        ErrorCode::Expired,
        "the session lease was lost while acquiring the lock",
    )
}

impl Drop for Contender {
    fn drop(&mut self) {
        let written = std::mem::replace(&mut self.written, Written::Nothing);
        let slot = self.slot.take();
        if matches!(written, Written::Nothing) {
            return; // won, withdrawn, or nothing reached the backend: the slot frees now
        }
        let (shared, session, key, unanswered) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.session),
            self.key.clone(),
            Arc::clone(&self.unanswered),
        );
        let interval = self.retry.interval();
        // Until its key is gone, a try of ours waits for this cleanup (the
        // slot's, or counted per queue for a key no slot guards).
        let cleaning = match &slot {
            Some(slot) => {
                slot.cleaning();
                None
            }
            None => Some(self.shared.local.cleaning(&self.queue)),
        };
        self.shared.spawn_background(async move {
            // Wait for an in-flight enqueue (or the session's end). If the
            // outcome is unknown, the key may exist with any revision; it is
            // ours alone while we hold the slot, so delete it whatever its
            // revision — and since the request may still apply later, retire
            // the session so that such a key goes with its lease.
            let rev = match written {
                Written::Key(rev) => Some(rev),
                Written::InFlight(in_flight) => tokio::select! {
                    outcome = in_flight => match outcome {
                        Ok(enqueued) => Some(enqueued.rev),
                        Err(err) if err.code() == ErrorCode::Expired => return,
                        Err(_) => None,
                    },
                    _ = session.lost().cancelled() => return,
                },
                Written::Unknown | Written::Nothing => None,
            };
            if rev.is_none() {
                session.retire("an enqueue's outcome is unknown");
            }
            let removed = remove_key(shared.backend.as_ref(), &session, &key, rev, interval).await;
            log_removal(&key, "abandoned contender", &removed);
            if rev.is_none() || unanswered.load(Ordering::SeqCst) {
                // A request of ours may still create the key.
                session.sweep_later(&key);
            }
            drop((slot, cleaning));
        });
    }
}
