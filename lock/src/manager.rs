//! [`LockManager`]: the entry point, owning the backend connection, the
//! sessions and the local queues.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use std::future::Future;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::backend::etcd::{check_server_version, EtcdBackend, DEFAULT_REQUEST_TIMEOUT};
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Entry};
use crate::config::EtcdConfig;
use crate::error::{ErrorCode, LockError, Result};
use crate::holds::Holds;
use crate::info::{LockInfo, Metadata};
use crate::key::{validate_name, Keyspace};
use crate::local::LocalQueues;
use crate::lock::Lock;
use crate::options::LockOptions;
use crate::retry::{Health, Retry};
use crate::session::Session;

/// Sessions that auto-renewing locks with the same settings share.
type SessionKey = (i64, Duration, Duration);

/// State shared by a manager, its locks and their guards.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) keys: Keyspace,
    pub(crate) local: LocalQueues,
    /// Every hold of this manager: how each hears it is lost.
    pub(crate) holds: Arc<Holds>,
    /// Cancelled by `close()` or when the last handle goes; every session's
    /// `lost` token is its child.
    pub(crate) closed: CancellationToken,
    /// The shared session per setting; its keeper task keeps it alive.
    shared_sessions: tokio::sync::Mutex<HashMap<SessionKey, Weak<Session>>>,
    /// Every live session by lease: a session leaves when it is lost.
    all_sessions: Mutex<HashMap<i64, Weak<Session>>>,
    /// Background releases and cleanups, which `close()` waits for.
    background: TaskTracker,
    /// `host/pid/manager-id`; each lock handle appends its own id.
    process_owner: String,
    /// The runtime the manager was last used on, for background releases
    /// started where there is none (a guard dropped outside a runtime).
    runtime: Mutex<Option<Handle>>,
    /// What the backend last said to any acquisition or keep-alive of this
    /// manager (see [`Health`]).
    pub(crate) health: Arc<Health>,
    /// Whether metrics carry a `name` label (`LockManager::with_metric_names`).
    metric_names: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn new(backend: Arc<dyn Backend>, namespace: &str) -> Arc<Self> {
        let manager_id = uuid::Uuid::new_v4().simple().to_string();
        let keys = Keyspace::new(namespace);
        let closed = CancellationToken::new();
        let holds = Holds::new(Arc::clone(&backend), keys.root().to_owned(), closed.clone());
        let shared = Shared {
            backend,
            keys,
            local: LocalQueues::default(),
            holds,
            closed,
            shared_sessions: tokio::sync::Mutex::new(HashMap::new()),
            all_sessions: Mutex::new(HashMap::new()),
            background: TaskTracker::new(),
            process_owner: format!("{}/{}/{}", hostname(), std::process::id(), &manager_id[..8]),
            runtime: Mutex::new(Handle::try_current().ok()),
            health: Arc::default(),
            metric_names: Default::default(),
        };
        Arc::new(shared)
    }

    pub(crate) fn metric_names(&self) -> bool {
        self.metric_names.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

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
    pub(crate) fn runtime(&self) -> Option<Handle> {
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
    /// [`close`](LockManager::close) waits for these.
    pub(crate) fn spawn_background(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self.runtime() {
            Some(runtime) => {
                runtime.spawn(self.background.track_future(task));
            }
            None => debug!("no runtime for a background release; the lease will expire"),
        }
    }

    /// The session a lock with `opts` should use, and whether it is the
    /// lock's alone. Auto-renewing locks with equal settings share one lease;
    /// a lock without auto-renew gets a lease of its own that simply runs out.
    /// Lease grants are retried as `retry` allows.
    pub(crate) async fn session_for(
        self: &Arc<Self>,
        opts: &LockOptions,
        retry: &Retry,
    ) -> Result<(Arc<Session>, bool)> {
        if !opts.auto_renew {
            let session = self.start_session(opts, retry).await?;
            return Ok((session, true));
        }
        let key = (opts.ttl_secs(), opts.renew_interval, opts.retry_interval);
        let mut sessions = self.shared_sessions.lock().await;
        if let Some(live) = sessions
            .get(&key)
            .and_then(Weak::upgrade)
            .filter(|s| s.is_usable())
        {
            return Ok((live, false));
        }
        let session = self.start_session(opts, retry).await?;
        sessions.retain(|_, s| s.strong_count() > 0);
        sessions.insert(key, Arc::downgrade(&session));
        Ok((session, false))
    }

    async fn start_session(
        self: &Arc<Self>,
        opts: &LockOptions,
        retry: &Retry,
    ) -> Result<Arc<Session>> {
        self.ensure_open()?;
        let (holds, sessions) = (Arc::downgrade(&self.holds), Arc::downgrade(self));
        let on_lost = move |lease| {
            if let Some(holds) = holds.upgrade() {
                holds.session_lost(lease);
            }
            if let Some(shared) = sessions.upgrade() {
                shared.all_sessions().remove(&lease);
            }
        };
        let backend = Arc::clone(&self.backend);
        let health = Arc::clone(&self.health);
        let session = Session::start(backend, opts, &self.closed, retry, health, on_lost).await?;
        let mut all = self.all_sessions();
        if session.is_lost() {
            return Ok(session); // already gone: `on_lost` may have run
        }
        all.insert(session.lease(), Arc::downgrade(&session));
        Ok(session)
    }

    fn all_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Weak<Session>>> {
        self.all_sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `lease` is the lease of one of this manager's live sessions.
    pub(crate) fn owns_lease(&self, lease: i64) -> bool {
        let all = self.all_sessions();
        all.get(&lease).is_some_and(|s| s.strong_count() > 0)
    }

    fn sessions(&self) -> Vec<Arc<Session>> {
        let all = self.all_sessions();
        all.values().filter_map(Weak::upgrade).collect()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Stops every keeper: leases are no longer renewed and run out.
        self.closed.cancel();
    }
}

/// A queue's holder as [`LockInfo`], with its lease's expiry from `expiries`.
fn describe(
    name: &str,
    holder: &Entry,
    waiters: usize,
    expiries: &HashMap<i64, Option<SystemTime>>,
) -> LockInfo {
    let meta = Metadata::decode(&holder.value);
    LockInfo {
        name: name.to_owned(),
        create_time: meta.create_time(),
        owner: meta.owner,
        key: crate::key::shown(&holder.key).into_owned(),
        expire_time: expiries.get(&holder.lease).copied().flatten(),
        fencing_token: holder.create_rev as u64,
        waiters,
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

/// Makes locks and manages them: the entry point of distlock.
///
/// A manager owns a backend connection (etcd, or in-memory) and a namespace;
/// locks of managers with the same namespace on the same etcd exclude each
/// other. Cloning is cheap and shares everything. Dropping the last clone
/// stops renewing its leases; [`close`](LockManager::close) also releases
/// what it holds at once.
///
/// # Example
///
/// ```no_run
/// use distlock::{EtcdConfig, LockManager, LockOptions};
///
/// # #[tokio::main] async fn main() -> distlock::Result<()> {
/// let config = EtcdConfig::new(["http://127.0.0.1:2379"]);
/// let manager = LockManager::connect(config, "/aio").await?;
/// let lock = manager.new_lock("my-resource", LockOptions::default())?;
/// let guard = lock.lock().await?;
/// // ... only one process in the fleet runs this at a time ...
/// guard.unlock().await?;
/// manager.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LockManager {
    shared: Arc<Shared>,
    namespace: Arc<str>,
}

impl LockManager {
    /// A manager on an existing etcd client. It checks that etcd answers and
    /// is version 3.4 or later.
    ///
    /// Prefer [`connect`](LockManager::connect), which also sets
    /// `require_leader`, so that a member cut off from its cluster cannot
    /// pretend all is well. A client with credentials needs
    /// `ConnectOptions::with_auto_token_refresh(true)`: without it, requests
    /// fail with `PermissionDenied` once etcd's auth token expires.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
    /// let manager = distlock::LockManager::new(client, "/aio").await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(client: etcd_client::Client, namespace: impl AsRef<str>) -> Result<Self> {
        Self::on_etcd(client, namespace.as_ref(), DEFAULT_REQUEST_TIMEOUT).await
    }

    /// Connects to etcd with `config` and makes a manager for `namespace`.
    ///
    /// ```no_run
    /// use distlock::{EtcdConfig, LockManager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main] async fn main() -> distlock::Result<()> {
    /// let config = EtcdConfig::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
    ///     .dial_timeout(Duration::from_secs(3))
    ///     .credentials("locker", "secret");
    /// let manager = LockManager::connect(config, "/aio").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: EtcdConfig, namespace: impl AsRef<str>) -> Result<Self> {
        let request_timeout = config.request_timeout;
        let client = config.connect().await?;
        Self::on_etcd(client, namespace.as_ref(), request_timeout).await
    }

    async fn on_etcd(
        client: etcd_client::Client,
        namespace: &str,
        request_timeout: Duration,
    ) -> Result<Self> {
        check_server_version(&client, request_timeout).await?;
        let backend = EtcdBackend::new(client, request_timeout);
        // Fails early, with a clear error, when etcd is unreachable.
        backend
            .list(&Keyspace::new(namespace).queue("\u{1}probe"))
            .await?;
        info!(namespace, "lock manager on etcd");
        Ok(Self::with_backend(Arc::new(backend), namespace))
    }

    /// A manager whose locks live in this process: the same semantics (FIFO,
    /// TTL and renewal, reentrancy, fencing, loss, info and force-unlock),
    /// without etcd. For tests and single-process use.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = distlock::LockManager::in_memory();
    /// let lock = manager.new_lock("a", distlock::LockOptions::default())?;
    /// lock.lock().await?.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub fn in_memory() -> Self {
        Self::with_backend(Arc::new(MemoryBackend::new()), "/memory")
    }

    pub(crate) fn with_backend(backend: Arc<dyn Backend>, namespace: &str) -> Self {
        LockManager {
            shared: Shared::new(backend, namespace),
            namespace: namespace.into(),
        }
    }

    /// Another manager on the same backend and namespace that behaves like a
    /// separate process: its own leases, sessions and local queues, so its
    /// locks contend with this manager's through the backend. With
    /// [`in_memory`](LockManager::in_memory) this is how several "processes"
    /// share one in-memory store.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let a = LockManager::in_memory();
    /// let b = a.peer();
    /// let _held = a.new_lock("job", LockOptions::default())?.lock().await?;
    /// assert!(b.new_lock("job", LockOptions::default())?.try_lock().await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn peer(&self) -> LockManager {
        Self::with_backend(Arc::clone(&self.shared.backend), &self.namespace)
    }

    /// A peer of this manager (see [`peer`](LockManager::peer)) whose backend
    /// calls go through `faults`: for tests of failure paths. Feature
    /// `fault-injection`.
    ///
    /// ```
    /// use distlock::testing::{Fault, Faults, Op};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let faults = Faults::new();
    /// let manager = distlock::LockManager::in_memory().with_faults(&faults);
    /// faults.inject(Op::Grant, Fault::Fail, 2); // two transient failures, then success
    /// let lock = manager.new_lock("a", distlock::LockOptions::default())?;
    /// lock.lock().await?.unlock().await?;
    /// assert_eq!(faults.calls(Op::Grant), 3);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "fault-injection")]
    pub fn with_faults(&self, faults: &crate::testing::Faults) -> LockManager {
        let backend = crate::backend::faulty::FaultyBackend::new(
            Arc::clone(&self.shared.backend),
            faults.clone(),
        );
        Self::with_backend(Arc::new(backend), &self.namespace)
    }

    /// Adds each lock's name as a `name` label to the [metrics](crate::metrics)
    /// recorded from now on by this manager's locks (every clone of the
    /// manager shares the setting).
    /// Off by default: every distinct name makes new time series, so opt in
    /// only when the names are few and fixed (e.g. `"nightly-report"`), never
    /// for names built from ids (`"order:42"`).
    ///
    /// ```
    /// let manager = distlock::LockManager::in_memory().with_metric_names(true);
    /// # let _ = manager;
    /// ```
    pub fn with_metric_names(self, enabled: bool) -> Self {
        let on = std::sync::atomic::Ordering::Relaxed;
        self.shared.metric_names.store(enabled, on);
        self
    }

    /// The namespace this manager's locks live in.
    ///
    /// ```
    /// assert_eq!(distlock::LockManager::in_memory().namespace(), "/memory");
    /// ```
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A handle on the lock `name`. Any UTF-8 name up to 1 KiB without NUL is
    /// valid, `/` included (lock `a` and lock `a/b` are independent).
    ///
    /// Fails with `InvalidKey` for a bad name, `InvalidOptions` for
    /// inconsistent options, `Closed` after [`close`](LockManager::close).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let lock = manager.new_lock("order:42", LockOptions::default())?;
    /// let err = manager.new_lock("a\0b", LockOptions::default()).unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::InvalidKey);
    /// # Ok(()) }
    /// ```
    pub fn new_lock(&self, name: impl Into<String>, options: LockOptions) -> Result<Lock> {
        let name = name.into();
        validate_name(&name)?;
        options.validate()?;
        self.shared.ensure_open()?;
        Ok(Lock::new(Arc::clone(&self.shared), name, options))
    }

    /// The holder of lock `name`, or `None` when nobody holds it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// assert!(manager.lock_info("free").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn lock_info(&self, name: &str) -> Result<Option<LockInfo>> {
        validate_name(name)?;
        self.shared.ensure_open()?;
        let entries = self
            .shared
            .backend
            .list(&self.shared.keys.queue(name))
            .await?;
        let Some(holder) = entries.first() else {
            return Ok(None);
        };
        let expiries = self.expiries([holder.lease]).await?;
        Ok(Some(describe(name, holder, entries.len() - 1, &expiries)))
    }

    /// Every held lock whose *name* starts with `prefix` (`""` lists all),
    /// ordered by name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let _a = manager.new_lock("user-1", LockOptions::default())?.lock().await?;
    /// let _b = manager.new_lock("order-1", LockOptions::default())?.lock().await?;
    /// let users = manager.list_locks("user-").await?;
    /// assert_eq!(users.len(), 1);
    /// assert_eq!(users[0].name, "user-1");
    /// assert_eq!(manager.list_locks("").await?.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn list_locks(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.shared.ensure_open()?;
        // Escaping keeps name order within a segment but not across `/` and
        // `%`, so read the namespace and match on decoded names.
        let entries = self.shared.backend.list(self.shared.keys.root()).await?;
        let mut queues: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in entries {
            if let Some(name) = self.shared.keys.name_of_key(&entry.key) {
                if name.starts_with(prefix) {
                    queues.entry(name).or_default().push(entry);
                }
            }
        }
        for queue in queues.values_mut() {
            queue.sort_by_key(|e| e.create_rev);
        }
        // A manager's locks share a lease: one TTL query per distinct lease.
        let expiries = self.expiries(queues.values().map(|q| q[0].lease)).await?;
        Ok(queues
            .iter()
            .map(|(name, queue)| describe(name, &queue[0], queue.len() - 1, &expiries))
            .collect())
    }

    /// When each of `leases` expires (`None` when it is gone), asking each
    /// distinct lease once, several at a time.
    async fn expiries(
        &self,
        leases: impl IntoIterator<Item = i64>,
    ) -> Result<HashMap<i64, Option<SystemTime>>> {
        const AT_ONCE: usize = 16;
        let mut pending: Vec<i64> = leases.into_iter().filter(|&l| l != 0).collect();
        pending.sort_unstable();
        pending.dedup();
        let mut out = HashMap::with_capacity(pending.len());
        let mut asking = tokio::task::JoinSet::new();
        let mut pending = pending.into_iter();
        loop {
            while asking.len() < AT_ONCE {
                let Some(lease) = pending.next() else { break };
                let backend = Arc::clone(&self.shared.backend);
                asking.spawn(async move { (lease, backend.time_to_live(lease).await) });
            }
            let Some(answer) = asking.join_next().await else {
                return Ok(out);
            };
            let (lease, remaining) = answer.map_err(|e| {
                LockError::with_source(ErrorCode::Backend, "lease query task failed", e)
            })?;
            let remaining = remaining?;
            // The server's answer: checked, never a panic on a huge value.
            let expiry = (remaining > 0)
                .then(|| SystemTime::now().checked_add(Duration::from_secs(remaining as u64)))
                .flatten();
            out.insert(lease, expiry);
        }
    }

    /// Removes the current holder of lock `name` — an administrator's tool.
    /// Exactly the holder's key is deleted, fenced by its create revision, so
    /// the next waiter proceeds and the holder's other locks stay held; the
    /// holder's guard reports the lock lost. `false` when nobody held it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("stuck", LockOptions::default())?.lock().await?;
    /// assert!(manager.force_unlock("stuck").await?);
    /// guard.lost().await; // the holder hears about it
    /// assert!(!guard.is_held());
    /// # Ok(()) }
    /// ```
    pub async fn force_unlock(&self, name: &str) -> Result<bool> {
        self.remove_holder(name, None).await
    }

    /// Removes the holder of lock `name` only if it is the one with fencing
    /// token `token` — what an operator saw in [`lock_info`](Self::lock_info)
    /// before deciding. If the lock changed hands meanwhile, the new holder
    /// keeps it and this returns `false`, as when nobody holds the lock.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("stuck", LockOptions::default())?.lock().await?;
    /// let seen = manager.lock_info("stuck").await?.unwrap().fencing_token;
    /// assert!(!manager.force_unlock_token("stuck", seen + 1).await?); // not that holder
    /// assert!(guard.is_held());
    /// assert!(manager.force_unlock_token("stuck", seen).await?);
    /// guard.lost().await;
    /// # Ok(()) }
    /// ```
    pub async fn force_unlock_token(&self, name: &str, token: u64) -> Result<bool> {
        self.remove_holder(name, Some(token)).await
    }

    /// Deletes the head key of `name`'s queue (if its token is `token`),
    /// fenced by its create revision.
    async fn remove_holder(&self, name: &str, token: Option<u64>) -> Result<bool> {
        validate_name(name)?;
        self.shared.ensure_open()?;
        let queue = self
            .shared
            .backend
            .list(&self.shared.keys.queue(name))
            .await?;
        let Some(holder) = queue
            .first()
            .filter(|h| token.is_none_or(|t| h.create_rev as u64 == t))
        else {
            return Ok(false);
        };
        let deleted = self
            .shared
            .backend
            .delete(&holder.key, Some(holder.create_rev))
            .await?;
        let key = crate::key::shown(&holder.key);
        info!(name, %key, token = holder.create_rev, deleted, "force unlock");
        Ok(deleted)
    }

    /// Closes the manager: every lock it holds is released (its leases are
    /// revoked), every guard reports the lock lost, and every later call fails
    /// with [`ErrorCode::Closed`].
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let lock = manager.new_lock("a", LockOptions::default())?;
    /// let guard = lock.lock().await?;
    /// manager.close().await;
    /// assert!(!guard.is_held());
    /// assert_eq!(lock.lock().await.unwrap_err().code(), ErrorCode::Closed);
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        if self.shared.is_closed() {
            return;
        }
        // Every session of the manager, before closing ends them (a lost
        // session leaves the list).
        let sessions = self.shared.sessions();
        self.shared.closed.cancel();
        // Revoke every lease at once: each revoke is bounded by the request
        // timeout, so closing takes one timeout at most even when etcd is down.
        let mut revokes = tokio::task::JoinSet::new();
        for session in sessions {
            revokes.spawn(async move {
                let _ = session.close().await;
            });
        }
        while revokes.join_next().await.is_some() {}
        // Background releases and cleanups end once their sessions are lost.
        self.shared.background.close();
        let timeout = self.shared.backend.request_timeout();
        if tokio::time::timeout(timeout, self.shared.background.wait())
            .await
            .is_err()
        {
            debug!("background releases still running after close");
        }
        info!(namespace = %self.namespace, "lock manager closed");
    }

    /// Whether [`close`](LockManager::close) was called.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = distlock::LockManager::in_memory();
    /// manager.close().await;
    /// assert!(manager.is_closed());
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl std::fmt::Debug for LockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockManager")
            .field("namespace", &self.namespace)
            .field("closed", &self.is_closed())
            .finish()
    }
}
