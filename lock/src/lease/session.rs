//! A session: one lease, kept alive (or not) by the manager, and the client-side
//! decision that it is lost.
//!
//! Every lock key is attached to a session's lease. The session knows the
//! latest moment at which the server could still consider the lease alive
//! *from the client's point of view*: the send time of the last successful
//! keep-alive plus its TTL, minus a safety margin. When that moment passes
//! without a newer successful keep-alive, or a keep-alive reports the lease
//! gone, the session is lost and every guard on it hears so — before the
//! server can expire the lease and hand the locks to someone else.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use super::options::{safety_margin, LockOptions};
use super::retry::{Health, Retry};
use crate::backend::Backend;
use crate::error::{ErrorCode, LockError, Result};

/// When a lease whose keep-alive was sent at `sent` and answered with `ttl`
/// must be presumed gone: `sent + ttl - margin`. `ttl` is at most the lock's
/// TTL, which [`LockOptions::validate`] bounds, so this cannot overflow.
fn deadline_after(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - safety_margin(ttl)
}

/// One lease and its keeper.
pub(crate) struct Session {
    lease: i64,
    ttl: Duration,
    auto_renew: bool,
    backend: Arc<dyn Backend>,
    /// Cancelled when the lease is (or must be presumed) gone.
    lost: CancellationToken,
    /// The client-side expiry estimate, minus the safety margin.
    deadline: Mutex<Instant>,
    /// No new keys go under a retired session: a key of ours may exist under
    /// it that nobody can delete. It is revoked once nobody uses it.
    retired: AtomicBool,
    /// Keys of ours that a request sent earlier may still create (an
    /// enqueue attempt that got no answer), after their acquisition ended:
    /// the keeper of the (retired) session deletes them as long as the
    /// lease lives.
    strays: Mutex<Vec<String>>,
    /// Lives as long as the keeper task: gone when the runtime that ran it
    /// shut down, and then nobody renews the lease.
    keeper: Weak<()>,
    /// Set once the lease was revoked on purpose (`close`). Shared with the
    /// task that revokes the lease after the keeper ends, which outlives
    /// the session when its last handle went.
    revoked: Arc<AtomicBool>,
    /// The manager's record of what the backend says; keep-alives report to it.
    health: Arc<Health>,
    /// Wakes the keeper when the session is retired.
    wake: tokio::sync::Notify,
}

impl Session {
    /// Grants a lease for `opts` (retrying transient failures as `retry`
    /// allows) and starts its keeper task: renewing every `renew_interval`
    /// when `auto_renew`, and declaring the session lost at its deadline.
    /// The session is also lost when `parent` is cancelled (the manager closes).
    /// `on_lost` runs as soon as the session is lost, whichever way.
    pub(crate) async fn start(
        backend: Arc<dyn Backend>,
        opts: &LockOptions,
        parent: &CancellationToken,
        retry: &Retry,
        health: Arc<Health>,
        on_lost: impl FnOnce(i64) + Send + 'static,
    ) -> Result<Arc<Self>> {
        let (sent, granted) = retry
            .run("lease grant", || async {
                let sent = Instant::now();
                backend.grant(opts.ttl_secs()).await.map(|g| (sent, g))
            })
            .await?;
        // The server may grant more than asked (its minimum TTL); the lock
        // promises the asked TTL, so the client counts with the smaller one.
        let ttl = granted.ttl.min(Duration::from_secs(opts.ttl_secs() as u64));
        let alive = Arc::new(());
        let session = Arc::new(Session {
            lease: granted.id,
            ttl,
            auto_renew: opts.auto_renew,
            backend,
            lost: parent.child_token(),
            deadline: Mutex::new(deadline_after(sent, ttl)),
            retired: AtomicBool::new(false),
            strays: Mutex::new(Vec::new()),
            keeper: Arc::downgrade(&alive),
            revoked: Arc::default(),
            health,
            wake: tokio::sync::Notify::new(),
        });
        debug!(
            lease = format_args!("{:x}", session.lease),
            ?ttl,
            auto_renew = opts.auto_renew,
            "session started"
        );
        let (live, keep) = (
            crate::metrics::LiveSession::start(),
            Arc::clone(&session).keep(opts.renew_interval, opts.retry_interval),
        );
        let (lost, lease) = (session.lost.clone(), session.lease);
        let (backend, revoked) = (Arc::clone(&session.backend), Arc::clone(&session.revoked));
        tokio::spawn(async move {
            // Both are dropped with this task, also when its runtime shuts down.
            let (_alive, _live) = (alive, live);
            // The keeper may be busy (a keep-alive) when the session is lost
            // (by a caller that saw the deadline pass): `on_lost` does not
            // wait for it.
            tokio::pin!(keep);
            let kept = tokio::select! {
                _ = &mut keep => true,
                _ = lost.cancelled() => false,
            };
            on_lost(lease);
            if !kept {
                keep.await
            }
            // A lost session's lease is revoked, so its locks free now rather
            // than when the server gets round to expiring it — also when the
            // manager closes or its last handle goes (`close` may not have
            // seen a session that started as it closed), even though nothing
            // holds the session any more: a key a late request made under
            // it goes too. Unless `close` revoked it already.
            if !revoked.load(Ordering::SeqCst) {
                let _ = backend.revoke(lease).await;
            }
        });
        Ok(session)
    }

    /// The lease id.
    pub(crate) fn lease(&self) -> i64 {
        self.lease
    }

    /// The TTL the client counts with.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Cancelled when the session is lost.
    pub(crate) fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Whether the session is lost. Decided here too, not only by the
    /// keeper task: past the deadline (a caller may run while the keeper
    /// cannot, on a blocked thread or a busy runtime), or with the keeper
    /// gone (its runtime shut down), the session is lost at once.
    pub(crate) fn is_lost(&self) -> bool {
        if self.lost.is_cancelled() {
            return true;
        }
        if self.deadline() <= Instant::now() {
            self.declare_lost("no successful keep-alive before the deadline");
            return true;
        }
        if self.keeper.strong_count() == 0 {
            self.declare_lost("its keeper task is gone (its runtime shut down)");
            return true;
        }
        false
    }

    /// Whether new keys may go under this session: not lost, not retired.
    pub(crate) fn is_usable(&self) -> bool {
        !self.is_lost() && !self.retired.load(Ordering::SeqCst)
    }

    /// Resolves once `token` (the session's or a child of it) is cancelled,
    /// or the session is lost, whichever the caller sees first: the deadline
    /// is checked at every poll, and a timer fires at it, so the future is
    /// ready as soon as it is polled past the deadline even if the keeper
    /// task has not run. It does not keep the session alive.
    pub(crate) fn until_lost(
        self: &Arc<Self>,
        token: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let session = Arc::downgrade(self);
        async move {
            loop {
                let Some(deadline) = session
                    .upgrade()
                    .filter(|s| !s.is_lost())
                    .map(|s| s.deadline())
                else {
                    return;
                };
                if token.is_cancelled() {
                    return;
                }
                if tokio::runtime::Handle::try_current().is_err() {
                    // No timer here (polled outside a runtime): the token alone.
                    return token.cancelled().await;
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }

    /// Takes the session out of use because a key of ours may exist under its
    /// lease that we cannot delete (a request whose outcome is unknown, a
    /// release that kept failing). Its holds keep it alive; once the last user
    /// is gone it is revoked, and such a key with it.
    pub(crate) fn retire(&self, why: &str) {
        if !self.retired.swap(true, Ordering::SeqCst) {
            self.wake.notify_one();
            warn!(
                lease = format_args!("{:x}", self.lease),
                why, "session retired; its lease is revoked when its last lock is released"
            );
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares the session lost, from any thread, without awaiting: its
    /// keeper task then tells the holds on it and revokes the lease (so the
    /// locks free now rather than when the server expires it). For a
    /// session without auto-renew this is its planned end.
    pub(crate) fn expire(&self, reason: &str) {
        self.declare_lost(reason);
    }

    fn declare_lost(&self, reason: &str) {
        if self.lost.is_cancelled() {
            return;
        }
        if self.auto_renew {
            warn!(
                lease = format_args!("{:x}", self.lease),
                reason, "session lost"
            );
        } else {
            debug!(
                lease = format_args!("{:x}", self.lease),
                reason, "session ended"
            );
        }
        self.lost.cancel();
    }

    /// `key`, whose acquisition has ended (its key deleted), may be created
    /// again by a request of ours that got no answer and lands late: the
    /// session is retired, and its keeper deletes such a key every second
    /// until the lease is revoked.
    pub(crate) fn sweep_later(&self, key: &str) {
        self.strays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.to_owned());
        self.retire("a request that may still create a key of ours got no answer");
    }

    /// Deletes the stray keys `sweep_later` named, if they appeared.
    async fn sweep(&self) {
        let strays = self
            .strays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for key in strays {
            match self.backend.delete(key.as_bytes(), None).await {
                Ok(true) => {
                    warn!(%key, "deleted a key of ours created late by a request that got no answer")
                }
                Ok(false) => {}
                Err(err) => debug!(%key, %err, "stray key sweep failed; next round"),
            }
        }
    }

    /// The server reports the lease gone. Before the client-side deadline
    /// that means someone revoked it — an operator, or a resuming etcd leader
    /// that missed the renewals sent during its pause (etcd-io/etcd#15247,
    /// fixed in etcd 3.4.28 and 3.5.11) — so say so: the locks on it may have
    /// gone to someone else already, and only their fencing tokens protect.
    fn gone_on_server(&self) {
        let early = self.deadline().saturating_duration_since(Instant::now());
        if !early.is_zero() && !self.lost.is_cancelled() {
            warn!(
                lease = format_args!("{:x}", self.lease),
                early_ms = early.as_millis() as u64,
                "the server revoked the lease before its TTL ran out (an explicit revoke, \
                 or etcd-io/etcd#15247 on etcd before 3.4.28 / 3.5.11)"
            );
        }
        self.expire("the server reports the lease gone");
    }

    /// Ends the session on purpose: revokes its lease (deleting its keys) and
    /// marks it lost.
    pub(crate) async fn close(&self) -> Result<()> {
        self.revoked.store(true, Ordering::SeqCst);
        self.lost.cancel();
        let revoked = self.backend.revoke(self.lease).await;
        if let Err(err) = &revoked {
            debug!(lease = format_args!("{:x}", self.lease), %err, "revoke on close failed; the lease will expire");
        }
        revoked
    }

    /// One keep-alive, bounded by the deadline: on success the deadline moves
    /// to `send time + TTL - margin`.
    pub(crate) async fn renew(self: &Arc<Self>) -> Result<()> {
        if self.is_lost() {
            return Err(LockError::new(
                ErrorCode::Expired,
                "the lock's lease is gone",
            ));
        }
        let sent = Instant::now();
        let span = tracing::debug_span!(
            "distlock.renew",
            lease = format_args!("{:x}", self.lease),
            outcome = tracing::field::Empty,
        );
        let keep_alive = self.backend.keep_alive(self.lease).instrument(span.clone());
        let answer = tokio::time::timeout_at(self.deadline(), keep_alive);
        self.health.asked();
        let answer = answer.await;
        match &answer {
            Ok(answered) => self.health.heard(answered),
            Err(_) => self.health.heard::<()>(&Err(LockError::new(
                ErrorCode::Backend,
                "no keep-alive answer before the lease's deadline",
            ))),
        }
        let renewed = match answer {
            Ok(Ok(ttl)) if ttl > 0 => {
                let ttl = Duration::from_secs(ttl as u64).min(self.ttl);
                let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
                *deadline = (*deadline).max(deadline_after(sent, ttl));
                Ok(())
            }
            Ok(Ok(_)) => {
                self.gone_on_server();
                Err(LockError::new(
                    ErrorCode::Expired,
                    "the lock's lease expired on the server",
                ))
            }
            Ok(Err(err)) if err.code() == ErrorCode::Expired => {
                self.gone_on_server();
                Err(err)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(LockError::new(
                ErrorCode::Backend,
                "no keep-alive answer before the lease's deadline",
            )),
        };
        crate::metrics::renewed(&span, &renewed);
        renewed
    }

    /// The keeper task: renews on schedule, watches the deadline, and ends a
    /// retired session once the keeper is its only user.
    async fn keep(self: Arc<Self>, renew_interval: Duration, retry_interval: Duration) {
        let mut next_renew = Instant::now() + renew_interval;
        loop {
            let retired = self.retired.load(Ordering::SeqCst);
            if retired && Arc::strong_count(&self) == 1 {
                debug!(
                    lease = format_args!("{:x}", self.lease),
                    "retired session unused; revoking"
                );
                let _ = self.close().await;
                return;
            }
            if retired {
                self.sweep().await;
            }
            let deadline = self.deadline();
            // A retired session is checked for users at least once a second.
            let check_retired = Instant::now() + Duration::from_secs(1);
            tokio::select! {
                _ = self.lost.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if self.is_lost() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(check_retired), if retired => {}
                _ = self.wake.notified(), if !retired => {}
                _ = tokio::time::sleep_until(next_renew), if self.auto_renew => {
                    next_renew = match self.renew().await {
                        Ok(()) => Instant::now() + renew_interval,
                        Err(err) if err.code() == ErrorCode::Expired => return,
                        Err(err) => {
                            debug!(lease = format_args!("{:x}", self.lease), %err, "keep-alive failed; retrying");
                            Instant::now() + retry_interval
                        }
                    };
                }
            }
        }
    }
}
