//! [`LockManager`]: the entry point, owning the backend connection, the
//! sessions, the local queues and the registry of holds.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::config::EtcdConfig;
use super::election::{Election, Observers};
use super::lock::Lock;
use super::multi_lock::MultiLock;
use super::rwlock::RwLock;
use super::semaphore::Semaphore;
use crate::backend::etcd::{check_server_version, EtcdBackend, DEFAULT_REQUEST_TIMEOUT};
use crate::backend::memory::MemoryBackend;
use crate::backend::Backend;
use crate::error::Result;
use crate::hold::Holds;
use crate::key::{validate_name, Keyspace};
use crate::lease::{one_shot, LockOptions};
use crate::metrics::Source;
use crate::queue::Kind;
use crate::shared::Shared;

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
    pub(super) shared: Arc<Shared>,
    /// Every hold of this manager: how each hears it is lost.
    pub(super) holds: Arc<Holds>,
    /// The shared watches of its elections' observers.
    observers: Arc<Observers>,
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
        let backend = EtcdBackend::new(client.clone(), request_timeout);
        let probe = Keyspace::new(namespace).queue("\u{1}probe");
        // Fails early, with a clear error, when etcd is unreachable; a
        // transient failure (a connection reset as the client connects) is
        // tried again, a few times, so that one blip does not fail a start
        // (an etcd that refuses fails in ~0.2 s).
        let (checked, listed, probe) = (&client, &backend, &probe);
        one_shot("connecting to etcd", || async move {
            check_server_version(checked, request_timeout).await?;
            listed.list(probe).await.map(drop)
        })
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
        let keys = Keyspace::new(namespace);
        let closed = CancellationToken::new();
        let holds = Holds::new(
            Arc::clone(&backend),
            keys.namespace().to_owned(),
            closed.clone(),
        );
        // A lost session loses every hold on its lease.
        let registry = Arc::downgrade(&holds);
        let on_lost = Arc::new(move |lease| {
            if let Some(holds) = registry.upgrade() {
                holds.session_lost(lease);
            }
        });
        LockManager {
            shared: Shared::new(backend, keys, closed, on_lost),
            holds,
            observers: Arc::default(),
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
        self.shared.set_metric_names(enabled);
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
        let queue = self.shared.keys.queue(&name);
        self.handle(name, queue, Kind::Exclusive, options)
    }

    /// A handle on the semaphore `name`: at most `permits` holders at once
    /// (1 to [`MAX_PERMITS`](crate::MAX_PERMITS)). Names as for
    /// [`new_lock`](Self::new_lock); a semaphore and a lock of one name are
    /// unrelated.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let sem = manager.new_semaphore("crawl:example.com", 3, LockOptions::default())?;
    /// sem.acquire().await?.release().await?;
    /// assert!(manager.new_semaphore("x", 0, LockOptions::default()).is_err());
    /// # Ok(()) }
    /// ```
    pub fn new_semaphore(
        &self,
        name: impl Into<String>,
        permits: u32,
        options: LockOptions,
    ) -> Result<Semaphore> {
        Semaphore::validate(permits)?;
        let name = name.into();
        let queue = self.shared.keys.semaphore(&name);
        let lock = self.handle(name, queue, Kind::Permit(permits), options)?;
        Ok(Semaphore::new(lock, permits))
    }

    /// A handle on the read-write lock `name`: many readers or one writer.
    /// Its writers and the locks of [`new_lock`](Self::new_lock) (and
    /// `etcdctl lock`) of the same name exclude each other.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let rw = LockManager::in_memory().new_rw_lock("doc:7", LockOptions::default())?;
    /// rw.read().await?.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn new_rw_lock(&self, name: impl Into<String>, options: LockOptions) -> Result<RwLock> {
        let name = name.into();
        let queue = self.shared.keys.queue(&name);
        let read = self.handle(name.clone(), queue.clone(), Kind::Shared, options.clone())?;
        let write = self.handle(name, queue, Kind::Exclusive, options)?;
        Ok(RwLock::new(read, write))
    }

    /// A handle on several names at once (all or none), in name order
    /// without duplicates; 1 to [`MAX_NAMES`](crate::MAX_NAMES) names.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let ml = LockManager::in_memory().new_multi_lock(["acct:1", "acct:2"], LockOptions::default())?;
    /// ml.lock().await?.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn new_multi_lock<I, S>(&self, names: I, options: LockOptions) -> Result<MultiLock>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: std::collections::BTreeSet<String> = names.into_iter().map(Into::into).collect();
        let locks = names
            .into_iter()
            .map(|name| self.new_lock(name, options.clone()))
            .collect::<Result<Vec<Lock>>>()?;
        MultiLock::new(locks)
    }

    /// A handle on the election `name`: candidates campaign, the oldest
    /// leads. etcd's own layout (`{ns}/elections/{name}/{lease hex}`
    /// holding the proclaimed value), so `etcdctl elect {ns}/elections/NAME`
    /// and Go's `concurrency.Election` take part in the same election. A
    /// task campaigns once at a time per election (`reentrant` does not
    /// apply).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// e.campaign("10.0.0.7:8080").await?.resign().await?;
    /// # Ok(()) }
    /// ```
    pub fn new_election(&self, name: impl Into<String>, options: LockOptions) -> Result<Election> {
        let name = name.into();
        let queue = self.shared.keys.election(&name);
        let options = options.reentrant(false);
        let lock = self
            .handle(name, queue, Kind::Exclusive, options)?
            .with_metrics_source(Source::Election);
        Ok(Election::new(lock, Arc::clone(&self.observers)))
    }

    /// A handle whose entries are of `kind`, in `queue`.
    fn handle(
        &self,
        name: String,
        queue: String,
        kind: Kind,
        options: LockOptions,
    ) -> Result<Lock> {
        validate_name(&name)?;
        options.validate()?;
        self.shared.ensure_open()?;
        let (shared, holds) = (Arc::clone(&self.shared), Arc::clone(&self.holds));
        Ok(Lock::of_kind(shared, holds, name, queue, kind, options))
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
        // Every session of the manager, before closing ends them (a lost
        // session leaves the list).
        let sessions = self.shared.sessions.live();
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
