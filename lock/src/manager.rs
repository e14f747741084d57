//! [`LockManager`]: the entry point, owning the backend connection, the
//! sessions and the local queues.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::backend::etcd::{EtcdBackend, DEFAULT_REQUEST_TIMEOUT};
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Entry};
use crate::config::EtcdConfig;
use crate::error::{LockError, Result};
use crate::info::{LockInfo, Metadata};
use crate::key::{validate_name, Keyspace};
use crate::local::LocalQueues;
use crate::lock::Lock;
use crate::options::LockOptions;
use crate::session::Session;

/// Sessions that auto-renewing locks with the same settings share.
type SessionKey = (i64, Duration, Duration);

/// State shared by a manager, its locks and their guards.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) keys: Keyspace,
    pub(crate) local: LocalQueues,
    /// Cancelled by `close()` or when the last handle goes; every session's
    /// `lost` token is its child.
    pub(crate) closed: CancellationToken,
    shared_sessions: tokio::sync::Mutex<HashMap<SessionKey, Arc<Session>>>,
    all_sessions: Mutex<Vec<Weak<Session>>>,
    /// `host/pid/manager-id`; each lock handle appends its own id.
    process_owner: String,
    runtime: OnceLock<Handle>,
}

impl Shared {
    fn new(backend: Arc<dyn Backend>, namespace: &str) -> Arc<Self> {
        let manager_id = uuid::Uuid::new_v4().simple().to_string();
        let shared = Shared {
            backend,
            keys: Keyspace::new(namespace),
            local: LocalQueues::default(),
            closed: CancellationToken::new(),
            shared_sessions: tokio::sync::Mutex::new(HashMap::new()),
            all_sessions: Mutex::new(Vec::new()),
            process_owner: format!("{}/{}/{}", hostname(), std::process::id(), &manager_id[..8]),
            runtime: OnceLock::new(),
        };
        if let Ok(handle) = Handle::try_current() {
            let _ = shared.runtime.set(handle);
        }
        Arc::new(shared)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(LockError::closed());
        }
        if let Ok(handle) = Handle::try_current() {
            let _ = self.runtime.set(handle);
        }
        Ok(())
    }

    /// The runtime to run background releases on.
    pub(crate) fn runtime(&self) -> Option<Handle> {
        Handle::try_current()
            .ok()
            .or_else(|| self.runtime.get().cloned())
    }

    /// A fresh owner id for a lock handle.
    pub(crate) fn owner_id(&self) -> String {
        let handle = uuid::Uuid::new_v4().simple().to_string();
        format!("{}/{}", self.process_owner, &handle[..8])
    }

    /// The session a lock with `opts` should use, and whether it is the
    /// lock's alone. Auto-renewing locks with equal settings share one lease;
    /// a lock without auto-renew gets a lease of its own that simply runs out.
    pub(crate) async fn session_for(&self, opts: &LockOptions) -> Result<(Arc<Session>, bool)> {
        if !opts.auto_renew {
            let session = self.start_session(opts).await?;
            return Ok((session, true));
        }
        let key = (opts.ttl_secs(), opts.renew_interval, opts.retry_interval);
        let mut sessions = self.shared_sessions.lock().await;
        if let Some(live) = sessions.get(&key).filter(|s| !s.is_lost()) {
            return Ok((Arc::clone(live), false));
        }
        let session = self.start_session(opts).await?;
        sessions.insert(key, Arc::clone(&session));
        Ok((session, false))
    }

    async fn start_session(&self, opts: &LockOptions) -> Result<Arc<Session>> {
        self.ensure_open()?;
        let session = Session::start(Arc::clone(&self.backend), opts, &self.closed).await?;
        let mut all = self.all_sessions.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|s| s.strong_count() > 0);
        all.push(Arc::downgrade(&session));
        Ok(session)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Stops every keeper: leases are no longer renewed and run out.
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
    /// A manager on an existing etcd client. It checks that etcd answers.
    ///
    /// Prefer [`connect`](LockManager::connect), which also sets
    /// `require_leader`, so that a member cut off from its cluster cannot
    /// pretend all is well.
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

    fn with_backend(backend: Arc<dyn Backend>, namespace: &str) -> Self {
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

    /// Whether `other` is a clone of this manager (not merely a peer).
    #[allow(dead_code)] // owner scopes (owner.rs) compare the shared state directly
    pub(crate) fn same_as(&self, other: &LockManager) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
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
        match entries.first() {
            None => Ok(None),
            Some(holder) => Ok(Some(self.describe(name, holder, entries.len() - 1).await?)),
        }
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
            if let Some(name) = self.shared.keys.name_of(&entry.key) {
                if name.starts_with(prefix) {
                    queues.entry(name).or_default().push(entry);
                }
            }
        }
        let mut out = Vec::with_capacity(queues.len());
        for (name, mut queue) in queues {
            queue.sort_by_key(|e| e.create_rev);
            out.push(self.describe(&name, &queue[0], queue.len() - 1).await?);
        }
        Ok(out)
    }

    async fn describe(&self, name: &str, holder: &Entry, waiters: usize) -> Result<LockInfo> {
        let meta = Metadata::decode(&holder.value);
        let expire_time = if holder.lease == 0 {
            None
        } else {
            let remaining = self.shared.backend.time_to_live(holder.lease).await?;
            (remaining > 0).then(|| SystemTime::now() + Duration::from_secs(remaining as u64))
        };
        Ok(LockInfo {
            name: name.to_owned(),
            owner: meta.owner.clone(),
            key: holder.key.clone(),
            create_time: meta.create_time(),
            expire_time,
            fencing_token: holder.create_rev as u64,
            waiters,
        })
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
        validate_name(name)?;
        self.shared.ensure_open()?;
        let queue = self
            .shared
            .backend
            .list(&self.shared.keys.queue(name))
            .await?;
        let Some(holder) = queue.first() else {
            return Ok(false);
        };
        let deleted = self
            .shared
            .backend
            .delete(&holder.key, Some(holder.create_rev))
            .await?;
        info!(name, key = %holder.key, deleted, "force unlock");
        Ok(deleted)
    }

    /// Closes the manager: every lock it holds is released (its leases are
    /// revoked), every guard reports the lock lost, and every later call fails
    /// with [`ErrorCode::Closed`](crate::ErrorCode::Closed).
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
        self.shared.closed.cancel();
        let sessions: Vec<Arc<Session>> = {
            let all = self
                .shared
                .all_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for session in sessions {
            session.close().await;
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
