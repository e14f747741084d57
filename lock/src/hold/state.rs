//! [`Hold`]: the state of one held lock, shared by its guards — its key,
//! token, session, local slot — and how it is released and lost.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::guard::LockGuard;
use super::owner::{Frame, TaskOwner};
use super::registry::Holds;
use crate::error::{ErrorCode, LockError, Result};
use crate::lease::{Retry, Session};
use crate::metrics::LossCause;
use crate::queue::{log_removal, remove_key, Metadata, Removal};
use crate::shared::{Shared, Slot};

/// One acquisition of a lock by one owner, shared by all of its (reentrant)
/// guards. The key is released with the last guard.
///
/// A hold runs no task of its own: the manager's [`Holds`] registry tells it
/// when it is lost.
pub(crate) struct Hold {
    pub(crate) name: String,
    /// The queue the key is in (a lock's, or a semaphore's): what an owner
    /// scope on this hold covers.
    pub(crate) queue: String,
    /// Where the manager's registry finds this hold for re-entry by its
    /// owner: the queue, or the queue's readers' prefix for a read hold.
    pub(crate) owner_key: String,
    /// The key's value, for changing it in place (a downgrade).
    value: Vec<u8>,
    /// A write hold that was downgraded to a read hold in place.
    downgraded: std::sync::atomic::AtomicBool,
    /// Our key, shared with the manager's registry of holds.
    key: Arc<str>,
    pub(super) token: u64,
    pub(super) session: Arc<Session>,
    /// Whether the session's lease belongs to this hold alone (no auto-renew).
    dedicated: bool,
    /// Cancelled when the lock is lost: the session is lost (a child of its
    /// token), or the key was deleted behind our back.
    pub(super) lost: CancellationToken,
    /// Live guards; 0 once released.
    guards: Mutex<usize>,
    /// The name's local slot, freed once the key is deleted or the lock lost.
    slot: Mutex<Option<Slot>>,
    /// The pause between attempts of the release.
    retry_interval: Duration,
    pub(super) shared: Arc<Shared>,
    /// The manager's registry of holds, which this one is in.
    holds: Arc<Holds>,
    /// The held gauge, hold time and loss count of this hold.
    metrics: crate::metrics::Held,
    /// The task that owns the hold and may re-enter it (a plain `lock()`),
    /// or `None` for a hold owned by an owner scope (a locked call, a
    /// request), which only code inside that scope re-enters.
    pub(crate) owner: Option<TaskOwner>,
    /// An enqueue attempt of this acquisition got no answer: it may create
    /// the key again after the release deleted it (see `Session::sweep_later`).
    unanswered: bool,
    /// The scope level that locked calls and requests in the owning task
    /// enter as child sections (made on first use).
    task_frame: OnceLock<Arc<Frame>>,
}

/// What [`Hold::new`] needs.
pub(crate) struct HoldParts {
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) owner_key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) key: String,
    pub(crate) rev: i64,
    /// A revision at which the key was known to exist (the read that won it).
    pub(crate) confirmed: i64,
    /// The name's local slot (an exclusive entry's); `None` for a key that
    /// is unique to its acquisition (a reader's, a permit's).
    pub(crate) slot: Option<Slot>,
    pub(crate) session: Arc<Session>,
    pub(crate) dedicated: bool,
    pub(crate) retry: Retry,
    pub(crate) shared: Arc<Shared>,
    pub(crate) holds: Arc<Holds>,
    pub(crate) metrics: crate::metrics::Labels,
    pub(crate) owner: Option<TaskOwner>,
    pub(crate) unanswered: bool,
}

impl Hold {
    /// A hold with one guard, registered with the manager's
    /// [`Holds`], which watches its key once the hold has lasted
    /// [`WATCH_AFTER`](super::registry::WATCH_AFTER) (a short hold
    /// costs etcd nothing) and reports a loss through [`lose`](Hold::lose).
    pub(crate) fn new(p: HoldParts) -> Arc<Self> {
        let hold = Arc::new(Hold {
            metrics: crate::metrics::Held::start(p.metrics),
            lost: p.session.lost().child_token(),
            name: p.name,
            queue: p.queue,
            owner_key: p.owner_key,
            value: p.value,
            downgraded: Default::default(),
            key: p.key.into(),
            token: p.rev as u64,
            session: p.session,
            dedicated: p.dedicated,
            guards: Mutex::new(1),
            slot: Mutex::new(p.slot),
            retry_interval: p.retry.interval(),
            shared: p.shared,
            holds: p.holds,
            owner: p.owner,
            unanswered: p.unanswered,
            task_frame: OnceLock::new(),
        });
        hold.holds.add(&hold, p.confirmed);
        if hold.session.is_lost() {
            // Lost before it was registered: the session's report may have
            // missed it.
            hold.holds.remove(&hold);
            hold.lose(hold.loss_cause());
        }
        hold
    }

    /// The lock is lost (its key deleted, its session lost, or its key no
    /// longer watchable): `lost()` resolves, and the name's local slot is
    /// freed at once, so the process's other waiters for the name need not
    /// wait for the lost guard to be dropped — unless the key may still
    /// exist (`WatchFailed`): then the slot waits for the release to delete
    /// it. Reported once; a no-op after the release began.
    pub(crate) fn lose(&self, cause: LossCause) {
        self.metrics.lost(cause, &self.name, self.token);
        if cause != LossCause::WatchFailed {
            // Before `lost()` resolves: whoever hears of the loss finds the
            // name free in this process.
            debug!(key = %self.key, "lock lost; freeing its local slot");
            free(&self.slot);
        }
        self.lost.cancel();
    }

    /// Our key.
    pub(crate) fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// The lease our key is attached to.
    pub(crate) fn lease(&self) -> i64 {
        self.session.lease()
    }

    fn guards(&self) -> std::sync::MutexGuard<'_, usize> {
        self.guards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live guards (0 once released).
    pub(crate) fn count(&self) -> usize {
        *self.guards()
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Whether the hold still has its name's local slot: until it is
    /// released, unless a loss freed it (see [`lose`](Hold::lose)).
    pub(crate) fn keeps_slot(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether this write hold was downgraded to a read hold.
    pub(crate) fn is_downgraded(&self) -> bool {
        self.downgraded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Downgrades this exclusive hold to a shared one in place: its key
    /// keeps its place in the queue (so no writer gets in between) and says
    /// it is shared now, so readers behind it go ahead.
    pub(crate) async fn downgrade(&self) -> Result<()> {
        self.shared.ensure_open()?;
        if !self.is_held() {
            return Err(LockError::new(
                ErrorCode::Expired,
                format!("lock `{}` was lost", self.name),
            ));
        }
        let mut meta = Metadata::decode(&self.value);
        meta.shared = true;
        let (backend, key) = (&self.shared.backend, &self.key);
        let (rev, lease, value) = (self.token as i64, self.session.lease(), meta.encode());
        let retry = crate::lease::Retry::new(&crate::lease::LockOptions::default());
        let updated = retry
            .run("downgrade", || {
                backend.update(key, rev, lease, value.clone())
            })
            .await?;
        if !updated {
            return Err(LockError::new(
                ErrorCode::Expired,
                format!("lock `{}` was lost before it was downgraded", self.name),
            ));
        }
        self.downgraded
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Whether the calling task owns this hold (see [`TaskOwner`]).
    pub(crate) fn owned_by_caller(&self) -> bool {
        self.owner
            .is_some_and(|owner| owner == TaskOwner::current())
    }

    /// The scope level of this hold for child sections entered by locked
    /// calls and requests of the owning task.
    pub(crate) fn task_frame(self: &Arc<Self>) -> &Arc<Frame> {
        self.task_frame
            .get_or_init(|| Arc::new(Frame::for_hold(self)))
    }

    /// Adds a guard if the hold is live and not lost.
    pub(crate) fn reenter(self: &Arc<Self>) -> Result<LockGuard> {
        let mut guards = self.guards();
        if *guards == 0 {
            return Err(LockError::new(
                ErrorCode::NotHeld,
                "the lock is being released",
            ));
        }
        if !self.is_held() {
            return Err(LockError::new(
                ErrorCode::Expired,
                format!(
                    "lock `{}` was lost; drop its guards before locking again",
                    self.name
                ),
            ));
        }
        *guards += 1;
        Ok(LockGuard::first(Arc::clone(self)))
    }

    // --- owner scopes (owner.rs): additive hook ---
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Neither lost nor on a lost session. The session's deadline is checked
    /// here, on the caller's clock, not only by its keeper task.
    pub(crate) fn is_held(&self) -> bool {
        !self.is_lost() && !self.session.is_lost()
    }

    /// Resolves when the hold is lost or released, or its session's deadline
    /// passes (see [`Session::until_lost`]).
    pub(crate) fn until_lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.session.until_lost(self.lost.clone())
    }
    // --- end of owner-scope hook ---

    /// Why this (lost) hold was lost, for the metrics.
    pub(crate) fn loss_cause(&self) -> LossCause {
        if self.shared.is_closed() {
            LossCause::Closed
        } else if self.session.is_lost() {
            LossCause::LeaseLost
        } else {
            LossCause::Deleted
        }
    }

    /// Drops one guard; true when it was the last.
    pub(super) fn leave(&self) -> bool {
        let mut guards = self.guards();
        *guards -= 1;
        *guards == 0
    }

    /// Runs [`release`](Hold::release) on the runtime, for when nobody can
    /// await it.
    pub(super) fn release_in_background(self: Arc<Self>) {
        let shared = Arc::clone(&self.shared);
        shared.spawn_background(async move {
            if let Err(err) = self.release().await {
                debug!(%err, "background release");
            }
        });
    }

    /// Deletes the key (fenced by its create revision if the local slot was
    /// freed by a loss), retrying until it is gone or the session is lost
    /// (see [`remove_key`]), then frees the local slot. `Expired` when the
    /// lock had been lost.
    pub(super) async fn release(self: Arc<Self>) -> Result<()> {
        let span = tracing::debug_span!(
            "distlock.release",
            name = %self.name,
            key = %self.key,
            token = self.token,
            outcome = tracing::field::Empty,
        );
        let lost = self.is_lost().then(|| self.loss_cause());
        self.metrics.release_started(lost, &self.name, self.token);
        let this = Arc::clone(&self);
        let released = self.release_inner().instrument(span.clone()).await;
        this.metrics.released(&span, &released);
        released
    }

    async fn release_inner(self: Arc<Self>) -> Result<()> {
        self.holds.remove(&self);
        // The release keeps the name's local slot until the key is gone
        // (it stays in the hold, so a release whose future is dropped midway
        // still has it when it runs again in the background). A loss can no
        // longer free it, so while we have it no other key of this name and
        // lease can appear (see `cleanup`): the delete needs no fence. A loss
        // that freed it already may have let the next acquisition make the
        // key again: then only our revision is deleted.
        let fence = {
            let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slot.as_ref() {
                slot.cleaning();
            }
            slot.is_none().then_some(self.token as i64)
        };
        let was_lost = self.is_lost();
        let released = if self.shared.is_closed() {
            Err(LockError::closed()) // close() revoked the leases
        } else if self.dedicated {
            // The lease is this hold's alone: revoking it deletes the key.
            // Should the revoke keep failing, the lease is no longer renewed
            // and the key goes at its TTL: reported, as for a delete.
            revoke_dedicated(&self.session, self.retry_interval).await
        } else {
            // Should this future be dropped while an unfenced delete is on
            // its way, that delete may still land after the slot is freed
            // and the name's next key made: the session is retired, so that
            // key goes under another lease (another key name).
            let mut retire = RetireOnDrop(fence.is_none().then_some(&self.session));
            let removed = remove_key(
                self.shared.backend.as_ref(),
                &self.session,
                &self.key,
                fence,
                self.retry_interval,
            )
            .await;
            retire.0 = None; // answered: nothing of ours is on its way
            log_removal(&self.key, "release", &removed);
            removed
        };
        if self.unanswered {
            // A late enqueue attempt of ours may still create the key.
            self.session.sweep_later(&self.key);
        }
        self.lost.cancel(); // stops anyone still waiting on `lost()`
        free(&self.slot);
        debug!(key = %self.key, token = self.token, ?released, "released");
        match released {
            Ok(Removal::Deleted) if !was_lost => Ok(()),
            Ok(_) => Err(LockError::new(
                ErrorCode::Expired,
                format!("lock `{}` had been lost before it was unlocked", self.name),
            )),
            Err(err) => Err(err),
        }
    }
}

/// Retires a session when dropped, unless disarmed (set to `None`): a delete
/// of ours that was cut off may still land.
struct RetireOnDrop<'a>(Option<&'a Arc<Session>>);

impl Drop for RetireOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.0 {
            session.retire("a release was dropped while its delete was on its way");
        }
    }
}

/// Revokes a hold's own lease, retrying transient failures as a delete is
/// retried (until the lease's deadline); `Backend` if it never succeeded.
async fn revoke_dedicated(session: &Arc<Session>, interval: Duration) -> Result<Removal> {
    let mut last = match session.close().await {
        Ok(()) => return Ok(Removal::Deleted),
        Err(err) => err,
    };
    while last.is_transient() && tokio::time::Instant::now() + interval < session.deadline() {
        tokio::time::sleep(interval).await;
        last = match session.close().await {
            Ok(()) => return Ok(Removal::Deleted),
            Err(err) => err,
        };
    }
    Err(LockError::with_source(
        ErrorCode::Backend,
        "could not revoke the lock's own lease; the lock frees when its TTL runs out",
        last,
    ))
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Released already, unless its release could not run (no runtime).
        self.holds.remove(self);
    }
}

/// Takes a hold's local slot, if not yet freed.
fn take(slot: &Mutex<Option<Slot>>) -> Option<Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Frees a hold's local slot, if not yet freed.
fn free(slot: &Mutex<Option<Slot>>) {
    drop(take(slot));
}
