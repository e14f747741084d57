//! [`Hold`]: the state of one held lock, shared by its guards — its key,
//! token, session, local slot — and how it is released and lost.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::debug;

use super::guard::LockGuard;
use super::lost::Lost;
use super::owner::{Frame, TaskOwner};
use super::registry::Holds;
use crate::error::{ErrorCode, LockError, Result};
use crate::lease::{Retry, Session};
use crate::metrics::LossCause;
use crate::queue::Metadata;
use crate::shared::{Shared, Slot};

/// One acquisition of a lock by one owner, shared by all of its (reentrant)
/// guards. The key is released with the last guard.
///
/// A hold runs no task of its own: the manager's [`Holds`] registry tells it
/// when it is lost.
pub(crate) struct Hold {
    pub(crate) name: Box<str>,
    /// Our key, shared with the manager's registry of holds. It starts with
    /// the hold's queue and owner key (see [`queue`](Hold::queue) and
    /// [`owner_key`](Hold::owner_key)), which are kept as lengths, not as
    /// copies: a held lock costs memory per hold (see docs/benchmarks.md).
    pub(super) key: Arc<str>,
    /// The length of the queue's prefix of `key`.
    queue_len: u32,
    /// The length of the owner key's prefix of `key`.
    owner_len: u32,
    /// The key's value, for changing it in place (a downgrade, a proclaim).
    value: Mutex<Box<[u8]>>,
    /// A write hold that was downgraded to a read hold in place.
    downgraded: std::sync::atomic::AtomicBool,
    pub(super) token: u64,
    pub(super) session: Arc<Session>,
    /// Whether the session's lease belongs to this hold alone (no auto-renew).
    pub(super) dedicated: bool,
    /// Cancelled when the lock is lost: the session is lost (a child of its
    /// token), or the key was deleted behind our back; and when released.
    pub(super) lost: Lost,
    /// Live guards; 0 once released.
    guards: Mutex<usize>,
    /// The name's local slot, freed once the key is deleted or the lock lost.
    pub(super) slot: Mutex<Option<Slot>>,
    /// The pause between attempts of the release.
    pub(super) retry_interval: Duration,
    pub(super) shared: Arc<Shared>,
    /// The manager's registry of holds, which this one is in.
    pub(super) holds: Arc<Holds>,
    /// The held gauge, hold time and loss count of this hold.
    pub(super) metrics: crate::metrics::Held,
    /// The task that owns the hold and may re-enter it (a plain `lock()`),
    /// or `None` for a hold owned by an owner scope (a locked call, a
    /// request), which only code inside that scope re-enters.
    pub(crate) owner: Option<TaskOwner>,
    /// An enqueue attempt of this acquisition got no answer: it may create
    /// the key again after the release deleted it (see `Session::sweep_later`).
    pub(super) unanswered: bool,
    /// The scope level that locked calls and requests in the owning task
    /// enter as child sections (made on first use).
    task_frame: OnceLock<Arc<Frame>>,
}

/// What [`Hold::new`] needs.
pub(crate) struct HoldParts {
    pub(crate) name: String,
    pub(crate) value: Vec<u8>,
    /// `{queue}{suffix}`: every key of a queue starts with the queue.
    pub(crate) key: String,
    /// The length of the key's queue prefix.
    pub(crate) queue_len: usize,
    /// A read hold: its owner key is the queue's readers' prefix
    /// (`{queue}r/`, which its key starts with), not the queue.
    pub(crate) reader: bool,
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
        let owner_len = p.queue_len + if p.reader { READERS.len() } else { 0 };
        debug_assert!(!p.reader || p.key[p.queue_len..].starts_with(READERS));
        let hold = Arc::new(Hold {
            metrics: crate::metrics::Held::start(p.metrics),
            lost: Lost::default(),
            name: p.name.into_boxed_str(),
            queue_len: prefix_len(&p.key, p.queue_len),
            owner_len: prefix_len(&p.key, owner_len),
            value: Mutex::new(p.value.into_boxed_slice()),
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

    /// The queue the key is in (a lock's, or a semaphore's): what an owner
    /// scope on this hold covers.
    pub(crate) fn queue(&self) -> &str {
        prefix(&self.key, self.queue_len)
    }

    /// Where the manager's registry finds this hold for re-entry by its
    /// owner: the queue, or the queue's readers' prefix for a read hold.
    pub(crate) fn owner_key(&self) -> &str {
        prefix(&self.key, self.owner_len)
    }

    /// Where the registry finds a read hold of `queue` (see
    /// [`owner_key`](Hold::owner_key)).
    pub(crate) fn readers_key(queue: &str) -> String {
        format!("{queue}{READERS}")
    }

    /// The length of [`owner_key`](Hold::owner_key), a prefix of the key.
    pub(super) fn owner_len(&self) -> u32 {
        self.owner_len
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
        self.lost.is_cancelled(self.session.lost())
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

    /// Whether this is a shared hold: a read hold (registered under its
    /// queue's readers, not the queue), or a write hold downgraded to one.
    pub(crate) fn is_shared(&self) -> bool {
        self.owner_len != self.queue_len || self.is_downgraded()
    }

    /// Downgrades this exclusive hold to a shared one in place: its key
    /// keeps its place in the queue (so no writer gets in between) and says
    /// it is shared now, so readers behind it go ahead.
    pub(crate) async fn downgrade(&self) -> Result<()> {
        let mut meta = Metadata::decode(&self.value());
        meta.shared = true;
        self.rewrite(meta.encode(), "downgraded").await?;
        self.downgraded
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Puts `value` into this hold's key, in place (the key keeps its place
    /// and create revision, hence the fencing token), if the hold is still
    /// held; `what` says what was asked. Bounded as a release is: transient
    /// failures are retried every retry interval until the update applies,
    /// the hold is lost — `Expired` at once, the loss decided on the
    /// client's clock, so a partition ends the call by the lease's deadline
    /// — or one TTL has passed (`Backend`). Unchanged on an error.
    pub(crate) async fn rewrite(&self, value: Vec<u8>, what: &str) -> Result<()> {
        self.shared.ensure_open()?;
        let lost = || {
            if self.shared.is_closed() {
                return LockError::closed();
            }
            LockError::new(
                ErrorCode::Expired,
                format!("lock `{}` was lost; it was not {what}", self.name),
            )
        };
        if !self.is_held() {
            return Err(lost());
        }
        let (backend, key) = (&self.shared.backend, &self.key);
        let (rev, lease) = (self.token as i64, self.session.lease());
        let give_up_at = tokio::time::Instant::now() + self.session.ttl();
        let until_lost = self.until_lost();
        tokio::pin!(until_lost);
        loop {
            // Should the hold be lost meanwhile, an update still on its way
            // is harmless: it is fenced by our key's create revision.
            let attempt = tokio::select! {
                biased;
                () = &mut until_lost => return Err(lost()),
                updated = backend.update(key, rev, lease, value.clone()) => updated,
            };
            let err = match attempt {
                Ok(true) => break,
                Ok(false) => return Err(lost()),
                Err(err) if err.is_transient() => err,
                Err(err) => return Err(err),
            };
            if tokio::time::Instant::now() + self.retry_interval >= give_up_at {
                return Err(LockError::with_source(
                    ErrorCode::Backend,
                    format!(
                        "lock `{}` could not be {what} within its lease TTL",
                        self.name
                    ),
                    err,
                ));
            }
            debug!(key = %self.key, %err, "{what}: update failed; retrying");
            tokio::select! {
                () = &mut until_lost => return Err(lost()),
                () = tokio::time::sleep(self.retry_interval) => {}
            }
        }
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = value.into_boxed_slice();
        Ok(())
    }

    /// The key's value now.
    pub(crate) fn value(&self) -> Vec<u8> {
        self.value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_vec()
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
        self.session
            .until_lost(self.lost.token(self.session.lost()))
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
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Released already, unless its release could not run (no runtime).
        self.holds.remove(self);
    }
}

/// What a reader's key has after its queue: the readers' prefix `r/` (see
/// `Keyspace::reader`).
const READERS: &str = "r/";

/// `len` as a prefix length of `key`. A key etcd accepted is far shorter
/// than 4 GiB; a length that does not fit stands for the whole key.
fn prefix_len(key: &str, len: usize) -> u32 {
    u32::try_from(len.min(key.len())).unwrap_or(u32::MAX)
}

/// The first `len` bytes of `key` (all of it if `len` is not a boundary).
pub(super) fn prefix(key: &str, len: u32) -> &str {
    key.get(..len as usize).unwrap_or(key)
}

/// Takes a hold's local slot, if not yet freed.
fn take(slot: &Mutex<Option<Slot>>) -> Option<Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Frees a hold's local slot, if not yet freed.
pub(super) fn free(slot: &Mutex<Option<Slot>>) {
    drop(take(slot));
}
