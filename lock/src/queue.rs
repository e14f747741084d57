//! The contender queue of one lock: enqueue, wait for the predecessor, win —
//! etcd's `concurrency.Mutex`, cancellation-safe.
//!
//! 1. **Enqueue**: one transaction creates our key (if absent) and reads the
//!    queue's head. The oldest key (lowest create revision) holds the lock.
//! 2. **Wait**: watch only the key just older than ours (no thundering herd),
//!    starting at the revision *after* the read, and watch our own key: if it
//!    disappears (lease expired, force-unlocked) we fail with `Expired` instead
//!    of waiting on.
//! 3. **Win**: when the predecessor is gone, one linearizable read confirms our
//!    key still exists and nothing older remains.
//!
//! A [`Contender`] that is dropped before it wins — a timeout, a lost
//! `try_lock`, a `lock()` future dropped mid-await, an error — removes its key
//! in the background while it still owns the lock name's local slot, so no
//! ghost key is left blocking the queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backend::{Backend, Enqueued, Position};
use crate::error::{ErrorCode, LockError, Result};
use crate::local::Slot;
use crate::retry::Retry;

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
    /// The session's lease no longer exists; nothing was written. The caller
    /// may retry with a fresh session.
    LeaseGone,
}

/// A won lock: the key's create revision (the fencing token), the revision it
/// was confirmed at, and the name's local slot.
pub(crate) struct Won {
    pub(crate) rev: i64,
    pub(crate) header: i64,
    pub(crate) slot: Slot,
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

/// One attempt to take a lock with one key.
pub(crate) struct Contender {
    backend: Arc<dyn Backend>,
    queue: String,
    key: String,
    retry: Retry,
    /// What we may have written, hence what the cleanup must delete.
    written: Written,
    slot: Option<Slot>,
    runtime: Handle,
}

impl Contender {
    /// A contender for `key` in `queue`, owning the name's local `slot`.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        queue: String,
        key: String,
        slot: Slot,
        retry: Retry,
    ) -> Self {
        Contender {
            backend,
            queue,
            key,
            retry,
            written: Written::Nothing,
            slot: Some(slot),
            runtime: Handle::current(),
        }
    }

    /// Takes the lock, or finds it busy (`Mode::Try`) or the lease gone.
    /// Fails with `Expired` when our key or session disappears while waiting.
    pub(crate) async fn acquire(
        mut self,
        lease: i64,
        value: Vec<u8>,
        mode: Mode,
        session_lost: &CancellationToken,
    ) -> Result<Outcome> {
        let enqueued = match self.enqueue(lease, value).await {
            Ok(enqueued) => enqueued,
            // etcd refused the whole transaction: nothing to clean up.
            Err(err) if err.code() == ErrorCode::Expired => {
                self.written = Written::Nothing;
                return Ok(Outcome::LeaseGone);
            }
            Err(err) => return Err(err),
        };
        if enqueued.head {
            return Ok(Outcome::Won(self.win(enqueued.rev, enqueued.header)));
        }
        if mode == Mode::Try {
            self.withdraw().await;
            return Ok(Outcome::Busy);
        }
        self.wait(enqueued, session_lost).await.map(Outcome::Won)
    }

    async fn enqueue(&mut self, lease: i64, value: Vec<u8>) -> Result<Enqueued> {
        let (backend, queue, key, retry) = (
            Arc::clone(&self.backend),
            self.queue.clone(),
            self.key.clone(),
            self.retry,
        );
        self.written = Written::InFlight(Box::pin(async move {
            retry
                .run("enqueue", || {
                    backend.enqueue(&queue, &key, lease, value.clone())
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
        debug!(key = %self.key, rev = enqueued.rev, head = enqueued.head, "enqueued");
        Ok(enqueued)
    }

    async fn wait(self, enqueued: Enqueued, session_lost: &CancellationToken) -> Result<Won> {
        let rev = enqueued.rev;
        let mut own_key_gone: Pin<Box<dyn Future<Output = Result<()>> + Send>> =
            Box::pin(watch_gone(
                Arc::clone(&self.backend),
                self.queue.clone(),
                self.key.clone(),
                rev,
                enqueued.header + 1,
                self.retry,
            ));
        loop {
            let positioned = self
                .retry
                .run("queue read", || {
                    self.backend.position(&self.queue, &self.key, rev)
                })
                .await?;
            let predecessor = match positioned.position {
                Position::Head => return Ok(self.win(rev, positioned.header)),
                Position::Gone => return Err(vanished()),
                Position::Behind { predecessor } => predecessor,
            };
            debug!(key = %self.key, %predecessor, "waiting for predecessor");
            tokio::select! {
                deleted = self.backend.wait_deleted(&predecessor, positioned.header + 1) => {
                    if let Err(err) = deleted {
                        if !err.is_transient() {
                            return Err(err);
                        }
                        tokio::time::sleep(self.retry.interval()).await;
                    }
                }
                gone = &mut own_key_gone => {
                    gone?;
                    return Err(vanished());
                }
                _ = session_lost.cancelled() => {
                    return Err(LockError::new(
                        ErrorCode::Expired,
                        "the session lease was lost while waiting for the lock",
                    ));
                }
            }
        }
    }

    /// Leaves the queue after a lost `try_lock`; on failure, the drop cleanup
    /// tries again in the background.
    async fn withdraw(&mut self) {
        let Written::Key(rev) = self.written else {
            return;
        };
        match self.backend.delete(&self.key, Some(rev)).await {
            Ok(_) => self.disarm(),
            Err(err) => {
                debug!(key = %self.key, %err, "withdraw failed; cleaning up in the background")
            }
        }
    }

    fn win(mut self, rev: i64, header: i64) -> Won {
        let slot = self
            .slot
            .take()
            .expect("a contender owns its slot until it wins");
        self.disarm();
        Won { rev, header, slot }
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

impl Drop for Contender {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return; // won, or withdrawn
        };
        let written = std::mem::replace(&mut self.written, Written::Nothing);
        if matches!(written, Written::Nothing) {
            return; // nothing reached the backend; the slot frees now
        }
        let (backend, key, retry) = (Arc::clone(&self.backend), self.key.clone(), self.retry);
        self.runtime.spawn(async move {
            // Wait for an in-flight enqueue. If the outcome is unknown, the key
            // may exist with any revision; it is ours alone while we hold the
            // slot, so delete it whatever its revision.
            let rev = match written {
                Written::Key(rev) => Some(rev),
                Written::InFlight(in_flight) => match in_flight.await {
                    Ok(enqueued) => Some(enqueued.rev),
                    Err(err) if err.code() == ErrorCode::Expired => return,
                    Err(_) => None,
                },
                Written::Unknown | Written::Nothing => None,
            };
            let removed = retry.run("cleanup", || backend.delete(&key, rev)).await;
            match removed {
                Ok(_) => debug!(%key, "abandoned queue key removed"),
                Err(err) => {
                    warn!(%key, %err, "could not remove an abandoned queue key; its lease will")
                }
            }
            drop(slot);
        });
    }
}

/// Resolves once `key` (created at `rev`) is confirmed gone, watching from
/// revision `from`. Transient failures are retried without limit; the caller
/// bounds the wait (a session that is lost, a guard that is released).
pub(crate) async fn watch_gone(
    backend: Arc<dyn Backend>,
    queue: String,
    key: String,
    rev: i64,
    mut from: i64,
    retry: Retry,
) -> Result<()> {
    loop {
        match backend.wait_deleted(&key, from).await {
            Ok(()) => {}
            Err(err) if err.is_transient() => tokio::time::sleep(retry.interval()).await,
            Err(err) => return Err(err),
        }
        match backend.position(&queue, &key, rev).await {
            Ok(p) if p.position == Position::Gone => return Ok(()),
            Ok(p) => from = p.header + 1,
            Err(err) if err.is_transient() => tokio::time::sleep(retry.interval()).await,
            Err(err) => return Err(err),
        }
    }
}
