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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::backend::Backend;
use crate::error::{ErrorCode, LockError, Result};
use crate::options::LockOptions;
use crate::retry::Retry;

/// How long before the client-side expiry estimate a session is declared
/// lost: a tenth of the TTL, at most one second.
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(1))
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
        let session = Arc::new(Session {
            lease: granted.id,
            ttl,
            auto_renew: opts.auto_renew,
            backend,
            lost: parent.child_token(),
            deadline: Mutex::new(sent + ttl - safety_margin(ttl)),
            retired: AtomicBool::new(false),
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
        tokio::spawn(async move {
            let _live = live; // counted as live until its keeper ends
                              // The keeper may be busy (a keep-alive, a revoke) when the
                              // session is lost: `on_lost` does not wait for it.
            tokio::pin!(keep);
            let kept = tokio::select! {
                _ = &mut keep => true,
                _ = lost.cancelled() => false,
            };
            on_lost(lease);
            if !kept {
                keep.await
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

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Whether new keys may go under this session: not lost, not retired.
    pub(crate) fn is_usable(&self) -> bool {
        !self.is_lost() && !self.retired.load(Ordering::SeqCst)
    }

    /// Takes the session out of use because a key of ours may exist under its
    /// lease that we cannot delete (a request whose outcome is unknown, a
    /// release that kept failing). Its holds keep it alive; once the last user
    /// is gone it is revoked, and such a key with it.
    pub(crate) fn retire(&self, why: &str) {
        if !self.retired.swap(true, Ordering::SeqCst) {
            warn!(
                lease = format_args!("{:x}", self.lease),
                why, "session retired; its lease is revoked when its last lock is released"
            );
        }
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares the session lost. For a session without auto-renew this is its
    /// planned end; the lease is then revoked so the lock frees at its TTL
    /// rather than when the server gets round to expiring it.
    pub(crate) fn expire(self: &Arc<Self>, reason: &str) {
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
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _ = this.backend.revoke(this.lease).await;
        });
    }

    /// The server reports the lease gone. Before the client-side deadline
    /// that means someone revoked it — an operator, or a resuming etcd leader
    /// that missed the renewals sent during its pause (etcd-io/etcd#15247,
    /// fixed in etcd 3.4.28 and 3.5.11) — so say so: the locks on it may have
    /// gone to someone else already, and only their fencing tokens protect.
    fn gone_on_server(self: &Arc<Self>) {
        let early = self.deadline().saturating_duration_since(Instant::now());
        if !early.is_zero() && !self.is_lost() {
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
    pub(crate) async fn close(&self) {
        self.lost.cancel();
        if let Err(err) = self.backend.revoke(self.lease).await {
            debug!(lease = format_args!("{:x}", self.lease), %err, "revoke on close failed; the lease will expire");
        }
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
        let answer = tokio::time::timeout_at(self.deadline(), self.backend.keep_alive(self.lease));
        let span = tracing::debug_span!(
            "distlock.renew",
            lease = format_args!("{:x}", self.lease),
            outcome = tracing::field::Empty,
        );
        let renewed = match answer.instrument(span.clone()).await {
            Ok(Ok(ttl)) if ttl > 0 => {
                let ttl = Duration::from_secs(ttl as u64).min(self.ttl);
                let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
                *deadline = (*deadline).max(sent + ttl - safety_margin(ttl));
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
            if self.retired.load(Ordering::SeqCst) && Arc::strong_count(&self) == 1 {
                debug!(
                    lease = format_args!("{:x}", self.lease),
                    "retired session unused; revoking"
                );
                self.close().await;
                return;
            }
            let deadline = self.deadline();
            // A retired session is checked for users at least once a second.
            let check_retired = Instant::now() + Duration::from_secs(1);
            tokio::select! {
                _ = self.lost.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if self.deadline() <= Instant::now() {
                        self.expire("no successful keep-alive before the deadline");
                        return;
                    }
                }
                _ = tokio::time::sleep_until(check_retired), if self.retired.load(Ordering::SeqCst) => {}
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
