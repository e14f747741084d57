//! The sessions of one manager: which lease a lock goes under, and which
//! leases are ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::options::LockOptions;
use super::retry::{Health, Retry};
use super::session::Session;
use crate::backend::Backend;
use crate::error::{LockError, Result};

/// Sessions that auto-renewing locks with the same settings share.
type SessionKey = (i64, Duration, Duration);

/// What a session's loss is reported to (the manager's registry of holds,
/// a layer above this one).
pub(crate) type OnLost = Arc<dyn Fn(i64) + Send + Sync>;

/// Every session of one manager.
pub(crate) struct Sessions {
    backend: Arc<dyn Backend>,
    /// The manager's: cancelled when it closes; every session's `lost` token
    /// is its child.
    closed: CancellationToken,
    /// The manager's record of what the backend says.
    health: Arc<Health>,
    on_lost: OnLost,
    /// The shared session per setting; its keeper task keeps it alive.
    shared: tokio::sync::Mutex<HashMap<SessionKey, Weak<Session>>>,
    /// Every live session by lease: a session leaves when it is lost.
    all: Arc<Mutex<HashMap<i64, Weak<Session>>>>,
}

impl Sessions {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        closed: CancellationToken,
        health: Arc<Health>,
        on_lost: OnLost,
    ) -> Self {
        Sessions {
            backend,
            closed,
            health,
            on_lost,
            shared: tokio::sync::Mutex::new(HashMap::new()),
            all: Arc::default(),
        }
    }

    /// The session a lock with `opts` should use, and whether it is the
    /// lock's alone. Auto-renewing locks with equal settings share one lease;
    /// a lock without auto-renew gets a lease of its own that simply runs out.
    /// Lease grants are retried as `retry` allows.
    pub(crate) async fn session_for(
        &self,
        opts: &LockOptions,
        retry: &Retry,
    ) -> Result<(Arc<Session>, bool)> {
        if !opts.auto_renew {
            let session = self.start(opts, retry).await?;
            return Ok((session, true));
        }
        let key = (opts.ttl_secs(), opts.renew_interval, opts.retry_interval);
        let mut sessions = self.shared.lock().await;
        if let Some(live) = sessions
            .get(&key)
            .and_then(Weak::upgrade)
            .filter(|s| s.is_usable())
        {
            return Ok((live, false));
        }
        let session = self.start(opts, retry).await?;
        sessions.retain(|_, s| s.strong_count() > 0);
        sessions.insert(key, Arc::downgrade(&session));
        Ok((session, false))
    }

    async fn start(&self, opts: &LockOptions, retry: &Retry) -> Result<Arc<Session>> {
        if self.closed.is_cancelled() {
            return Err(LockError::closed());
        }
        let (on_lost, all) = (Arc::clone(&self.on_lost), Arc::downgrade(&self.all));
        let lost = move |lease| {
            on_lost(lease);
            if let Some(all) = all.upgrade() {
                lock(&all).remove(&lease);
            }
        };
        let (backend, health) = (Arc::clone(&self.backend), Arc::clone(&self.health));
        let session = Session::start(backend, opts, &self.closed, retry, health, lost).await?;
        let mut all = lock(&self.all);
        if session.is_lost() {
            return Ok(session); // already gone: `lost` may have run
        }
        all.insert(session.lease(), Arc::downgrade(&session));
        Ok(session)
    }

    /// Whether `lease` is the lease of one of this manager's live sessions.
    pub(crate) fn owns_lease(&self, lease: i64) -> bool {
        lock(&self.all)
            .get(&lease)
            .is_some_and(|s| s.strong_count() > 0)
    }

    /// Every live session.
    pub(crate) fn live(&self) -> Vec<Arc<Session>> {
        lock(&self.all).values().filter_map(Weak::upgrade).collect()
    }
}

fn lock(all: &Mutex<HashMap<i64, Weak<Session>>>) -> MutexGuard<'_, HashMap<i64, Weak<Session>>> {
    all.lock().unwrap_or_else(|e| e.into_inner())
}
