//! The state every layer above leases needs of one manager: the backend
//! handle, the namespace's key layout, the per-name local queues, the
//! sessions, the runtime and the background tasks. It sits low in the stack
//! so that no layer below the API imports the manager.
//!
//! Uses the storage and lease layers and the base modules.

mod local;
mod reads;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::backend::Backend;
use crate::error::{LockError, Result};
use crate::key::Keyspace;
use crate::lease::{Health, OnLost, Sessions};

pub(crate) use local::{LocalQueues, Slot};
pub(crate) use reads::SharedReads;

/// State shared by a manager, its locks and their guards. Its identity is
/// the manager's (clones of a manager share one; peers do not).
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) keys: Keyspace,
    pub(crate) local: LocalQueues,
    /// Position reads shared by the readers waiting in one queue.
    pub(crate) reads: SharedReads,
    pub(crate) sessions: Sessions,
    /// Cancelled by `close()` or when the last handle goes; every session's
    /// `lost` token is its child.
    pub(crate) closed: CancellationToken,
    /// What the backend last said to any acquisition or keep-alive of this
    /// manager (see [`Health`]).
    pub(crate) health: Arc<Health>,
    /// Background releases and cleanups, which `close()` waits for.
    pub(crate) background: TaskTracker,
    /// `host/pid/manager-id`; each lock handle appends its own id.
    process_owner: String,
    /// The runtime the manager was last used on, for background releases
    /// started where there is none (a guard dropped outside a runtime).
    runtime: Mutex<Option<Handle>>,
    /// Whether metrics carry a `name` label (`LockManager::with_metric_names`).
    metric_names: AtomicBool,
}

impl Shared {
    /// The state of a manager of `keys` on `backend`, closed by `closed`;
    /// a lost session is reported to `on_lost`.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        keys: Keyspace,
        closed: CancellationToken,
        on_lost: OnLost,
    ) -> Arc<Self> {
        let manager_id = uuid::Uuid::new_v4().simple().to_string();
        let health = Arc::<Health>::default();
        let sessions = Sessions::new(
            Arc::clone(&backend),
            closed.clone(),
            Arc::clone(&health),
            on_lost,
        );
        Arc::new(Shared {
            reads: SharedReads::new(Arc::clone(&backend)),
            backend,
            keys,
            local: LocalQueues::default(),
            sessions,
            closed,
            health,
            background: TaskTracker::new(),
            process_owner: format!("{}/{}/{}", hostname(), std::process::id(), &manager_id[..8]),
            runtime: Mutex::new(Handle::try_current().ok()),
            metric_names: AtomicBool::new(false),
        })
    }

    pub(crate) fn metric_names(&self) -> bool {
        self.metric_names.load(Ordering::Relaxed)
    }

    pub(crate) fn set_metric_names(&self, on: bool) {
        self.metric_names.store(on, Ordering::Relaxed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// `Closed` after `close()`; otherwise remembers the current runtime.
    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(LockError::closed());
        }
        if let Ok(handle) = Handle::try_current() {
            *self.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        Ok(())
    }

    /// The runtime to run background releases on: the current one, else the
    /// one the manager was last used on.
    fn runtime(&self) -> Option<Handle> {
        Handle::try_current().ok().or_else(|| {
            let last = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
            last.clone()
        })
    }

    /// A fresh owner id for a lock handle.
    pub(crate) fn owner_id(&self) -> String {
        let handle = uuid::Uuid::new_v4().simple().to_string();
        format!("{}/{}", self.process_owner, &handle[..8])
    }

    /// Runs a release or cleanup in the background, on the manager's runtime;
    /// `close()` waits for these.
    pub(crate) fn spawn_background(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self.runtime() {
            Some(runtime) => {
                runtime.spawn(self.background.track_future(task));
            }
            None => debug!("no runtime for a background release; the lease will expire"),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Ends every session: their keepers revoke their leases.
        self.closed.cancel();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}
