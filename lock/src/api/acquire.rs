//! How a [`Lock`] is acquired: the call's span, metrics and bound; owner
//! scopes and re-entry by the owning task; the name's local slot; the
//! session; the contender; the hold.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, Instrument};

use super::lock::Lock;
use crate::error::{ErrorCode, LockError, Result};
use crate::hold::{acquire_in_scope, Hold, HoldParts, LockGuard, TaskOwner};
use crate::lease::{Health, Retry, Session};
use crate::metrics::Attempt;
use crate::queue::{Contender, Kind, Metadata, Mode, Outcome, Won};
use crate::shared::Slot;

impl Lock {
    /// One acquisition call, bounded by `wait` if given: its span and metrics.
    pub(super) async fn attempt(
        &self,
        mode: Mode,
        wait: Option<Duration>,
    ) -> Result<Option<LockGuard>> {
        self.attempt_with(mode, wait, None).await
    }

    /// [`attempt`](Self::attempt) whose key holds `value` (a candidate's
    /// proclaimed value), if given, instead of our metadata.
    pub(super) async fn attempt_with(
        &self,
        mode: Mode,
        wait: Option<Duration>,
        value: Option<Vec<u8>>,
    ) -> Result<Option<LockGuard>> {
        let span = tracing::debug_span!(
            "distlock.acquire",
            name = %self.name,
            ?mode,
            source = self.labels().source(),
            token = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let attempt = Attempt::start(self.labels(), mode == Mode::Wait);
        // What the backend said to this acquisition: a wait that runs out
        // while it was failing is an outage (`Backend`), not a busy lock.
        let health = Health::child(&self.shared.health);
        // Boxed: the acquisition's future is large, and nested locked calls
        // (owner scopes, the macro, the layer) poll one inside another.
        let acquire = Box::pin(self.acquire(mode, &health, value).instrument(span.clone()));
        let result = match wait {
            None => acquire.await,
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .unwrap_or_else(|_| Err(health.verdict(&self.described(), wait))),
        };
        let token = result
            .as_ref()
            .map(|g| g.as_ref().map(LockGuard::fencing_token));
        attempt.finish(&span, token);
        result
    }

    async fn acquire(
        &self,
        mode: Mode,
        health: &Arc<Health>,
        value: Option<Vec<u8>>,
    ) -> Result<Option<LockGuard>> {
        self.shared.ensure_open()?;
        if self.kind != Kind::Exclusive && self.kind != Kind::Shared {
            // A permit: every acquisition is a permit of its own.
            return tokio::select! {
                won = self.contend(mode, health, value.clone()) => won,
                _ = self.shared.closed.cancelled() => Err(LockError::closed()),
            };
        }
        // Inside an owner scope that holds this name through this manager
        // (owner.rs): a child section of its hold.
        let in_scope = acquire_in_scope(
            &self.shared,
            &self.queue,
            &self.owner,
            self.opts.reentrant,
            self.kind == Kind::Exclusive,
            mode,
        );
        if let Some(section) = in_scope.await {
            return section;
        }
        // The calling task holds this name through this manager already: a
        // write (or plain) hold, which a read re-enters too, or a read hold.
        let readers = Hold::readers_key(&self.queue);
        if let Some(hold) = self.holds.owned_by_caller(&self.queue) {
            if self.kind == Kind::Exclusive && hold.is_downgraded() {
                return Err(upgrade_refused(&self.name));
            }
            if let Some(reentered) = self.reenter(&hold, mode).await {
                return reentered;
            }
            // Its last guard went meanwhile: acquire anew, behind its release.
        } else if let Some(hold) = self.holds.owned_by_caller(&readers) {
            if self.kind == Kind::Exclusive {
                return Err(upgrade_refused(&self.name));
            }
            if let Some(reentered) = self.reenter(&hold, mode).await {
                return reentered;
            }
        }
        tokio::select! {
            won = self.contend(mode, health, value.clone()) => won,
            _ = self.shared.closed.cancelled() => Err(LockError::closed()),
        }
    }

    /// Re-enters `hold`, which the calling task owns: a second guard, or for
    /// a scoped handle a child section of it; `None` when the hold was
    /// released meanwhile.
    async fn reenter(&self, hold: &Arc<Hold>, mode: Mode) -> Option<Result<Option<LockGuard>>> {
        let reentered = if self.scoped {
            let frame = hold.task_frame();
            frame
                .enter_section(
                    &self.owner,
                    self.opts.reentrant,
                    self.kind == Kind::Exclusive,
                    mode,
                )
                .await
        } else if !self.opts.reentrant {
            Err(LockError::new(
                ErrorCode::AlreadyHeld,
                format!("lock `{}` is already held by this task", self.name),
            ))
        } else {
            hold.reenter().map(Some)
        };
        match reentered {
            Err(err) if err.code() == ErrorCode::NotHeld => None,
            // Lost, and its slot freed: acquire anew (the lost guards only
            // report the loss). A lost hold that keeps its slot (its key may
            // still exist) is reported: acquiring would wait for ourselves.
            Err(err) if err.code() == ErrorCode::Expired && !hold.keeps_slot() => None,
            other => Some(other),
        }
    }

    /// Takes the name's local slot, then competes in the backend's queue.
    ///
    /// A try is one attempt, bounded by the backend's request timeout from
    /// when it has the slot (lease grant and backend retries included); a
    /// wait is bounded by its caller.
    /// What this handle's keys hold: who, since when, which acquisition,
    /// and a permit's count of permits.
    pub(super) fn value(&self) -> Vec<u8> {
        let mut meta = Metadata::new(&self.owner);
        if let Kind::Permit(n) = self.kind {
            meta.permits = Some(n);
        }
        meta.encode()
    }

    async fn contend(
        &self,
        mode: Mode,
        health: &Arc<Health>,
        value: Option<Vec<u8>>,
    ) -> Result<Option<LockGuard>> {
        let timeout = self.shared.backend.request_timeout();
        let mut retry = Retry::new(&self.opts).reporting(Arc::clone(health));
        let mut deadline = None;
        let candidate = value.is_some();
        // A shared session can vanish unnoticed between keep-alives (its lease
        // revoked); then etcd refuses the enqueue and we retry once on a fresh one.
        for attempt in 0..2 {
            if mode == Mode::Try {
                // Our own deletes of keys no slot guards (readers', permits')
                // in this queue are not contention: wait for them, bounded.
                let local = &self.shared.local;
                local.after_cleanups(&self.queue, timeout).await;
            }
            let (slot, slot_woke) = match self.kind {
                Kind::Exclusive => match self.take_slot(mode).await {
                    Some((slot, woke)) => (Some(slot), woke),
                    None => return Ok(None),
                },
                // Its key is its own: no local slot to share.
                _ => (None, None),
            };
            if mode == Mode::Try && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + timeout);
                retry = retry.within(timeout);
            }
            let compete = self.compete(slot, mode, &retry, value.clone());
            let (outcome, key, value, session, dedicated) = match deadline {
                None => compete.await?,
                Some(at) => tokio::time::timeout_at(at, compete)
                    .await
                    .unwrap_or_else(|_| {
                        Err(LockError::new(
                            ErrorCode::Backend,
                            format!(
                                "no answer from the backend within {timeout:?} for lock `{}`",
                                self.name
                            ),
                        ))
                    })?,
            };
            let won = match outcome {
                Outcome::Won(won) => won,
                Outcome::Busy => return Ok(None),
                Outcome::LeaseGone { unheard } => {
                    session.expire("the server no longer knows the lease");
                    if unheard && candidate {
                        // A candidate's key may have led unheard (observers
                        // saw its value lead with that key's token): a
                        // campaign on a fresh key would lead with another
                        // token under the same value. It failed, as when
                        // its key vanishes while it waits.
                        return Err(campaign_key_gone(&self.name));
                    }
                    if attempt == 0 {
                        continue;
                    }
                    return Err(lease_gone());
                }
            };
            crate::metrics::handoff(&self.labels(), won.woke.or(slot_woke));
            return Ok(Some(self.hold(key, value, won, session, dedicated, retry)));
        }
        Err(lease_gone())
    }

    /// One round in the backend's queue with the name's `slot`: a session,
    /// then a contender; the contender's key, its session, and whether the
    /// session is the lock's own. A lease of its own that did not win is
    /// revoked at once, so a storm of busy tries leaves no leases behind.
    async fn compete(
        &self,
        slot: Option<Slot>,
        mode: Mode,
        retry: &Retry,
        value: Option<Vec<u8>>,
    ) -> Result<(Outcome, String, Vec<u8>, Arc<Session>, bool)> {
        let (session, dedicated) = self.shared.sessions.session_for(&self.opts, retry).await?;
        // The caller's value (a candidate's proclaimed value, exactly), or
        // our metadata, unique to this acquisition.
        let unique = value.is_none();
        let value = value.unwrap_or_else(|| self.value());
        let contender = Contender::new(
            Arc::clone(&self.shared),
            Arc::clone(&session),
            self.kind,
            self.queue.clone(),
            value.clone(),
            slot,
            retry.clone(),
        )
        .with_unique_value(unique);
        let key = contender.key().to_owned();
        let outcome = contender.acquire(mode).await;
        if dedicated && !matches!(outcome, Ok(Outcome::Won(_))) {
            let unused = Arc::clone(&session);
            self.shared.spawn_background(async move {
                let _ = unused.close().await;
            });
        }
        Ok((outcome?, key, value, session, dedicated))
    }

    /// The name's local slot, and when it was handed to us if we had to
    /// wait for it (a local hand-off). A try takes it if no other owner of
    /// this process holds or waits for it (a cleanup of ours is waited for).
    async fn take_slot(&self, mode: Mode) -> Option<(Slot, Option<std::time::Instant>)> {
        let local = &self.shared.local;
        match mode {
            Mode::Try => {
                let bound = self.shared.backend.request_timeout();
                let slot = local.try_acquire_after_cleanup(&self.name, bound).await?;
                Some((slot, None))
            }
            Mode::Wait => match local.try_acquire(&self.name) {
                Some(slot) => Some((slot, None)),
                None => {
                    let slot = local.acquire(&self.name).await;
                    Some((slot, Some(std::time::Instant::now())))
                }
            },
        }
    }

    pub(super) fn hold(
        &self,
        key: String,
        value: Vec<u8>,
        won: Won,
        session: Arc<Session>,
        dedicated: bool,
        retry: Retry,
    ) -> LockGuard {
        debug!(%key, token = won.rev, "acquired");
        // A permit is never re-entered: each acquisition is one permit.
        let owned = !self.scoped && !matches!(self.kind, Kind::Permit(_));
        let hold = Hold::new(HoldParts {
            name: self.name.clone(),
            value,
            // Its key is in our queue: `{queue}{lease}`, a reader's
            // `{queue}r/{lease}.{n}` (see `Keyspace`).
            queue_len: self.queue.len(),
            reader: self.kind == Kind::Shared,
            key,
            rev: won.rev,
            confirmed: won.confirmed,
            slot: won.slot,
            session,
            dedicated,
            retry,
            shared: Arc::clone(&self.shared),
            holds: Arc::clone(&self.holds),
            metrics: self.labels(),
            owner: owned.then(TaskOwner::current),
            unanswered: won.unanswered,
        });
        LockGuard::first(hold)
    }
}

/// A task that holds a read lock (or a downgraded write lock) asks for the
/// write lock: it would wait for itself.
fn upgrade_refused(name: &str) -> LockError {
    LockError::new(
        ErrorCode::AlreadyHeld,
        format!(
            "this task holds `{name}` for reading: a write lock would wait for it; release the \
             read lock first"
        ),
    )
}

fn campaign_key_gone(name: &str) -> LockError {
    LockError::new(
        ErrorCode::Expired,
        format!(
            "the campaign for `{name}` lost its lease while a request of it went unanswered: \
             its key may have led meanwhile; campaign again"
        ),
    )
}

fn lease_gone() -> LockError {
    LockError::new(
        ErrorCode::Expired,
        "the session lease vanished while enqueueing",
    )
}
