//! Fixtures shared by the integration tests: a backend (real etcd or in
//! memory) and managers on it that behave like separate processes.

#![allow(dead_code)] // each test binary uses a different part

pub mod auth;
pub mod http;
pub mod log;
pub mod prim;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distlock::{EtcdConfig, LockGuard, LockManager, LockOptions};
use distlock_tests::{Etcd, TcpProxy};

/// Logs with `RUST_LOG=distlock=debug` when asked.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Turns each listed `async fn(&Fixture)` into two tests: `etcd::name` on a
/// real etcd started for it, `memory::name` in memory.
#[allow(unused_macros)] // not every test binary runs on both backends
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Fixture::etcd().await).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Fixture::memory().await).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

/// A backend to run the behaviour suite on.
pub struct Fixture {
    pub etcd: Option<Etcd>,
    pub namespace: String,
    first: LockManager,
}

impl Fixture {
    pub async fn memory() -> Fixture {
        init_tracing();
        Fixture {
            etcd: None,
            namespace: "/memory".into(),
            first: LockManager::in_memory(),
        }
    }

    pub async fn etcd() -> Fixture {
        init_tracing();
        let etcd = Etcd::start().await;
        let namespace = etcd.namespace();
        let first = connect(&etcd, &namespace).await;
        Fixture {
            etcd: Some(etcd),
            namespace,
            first,
        }
    }

    /// The first manager.
    pub fn manager(&self) -> LockManager {
        self.first.clone()
    }

    /// Another manager, as another process would have: on etcd its own
    /// connection, in memory a peer on the same store.
    pub async fn another(&self) -> LockManager {
        match &self.etcd {
            Some(etcd) => connect(etcd, &self.namespace).await,
            None => self.first.peer(),
        }
    }

    /// Raw keys under the namespace (etcd only; `None` in memory).
    pub async fn raw_keys(&self) -> Option<Vec<String>> {
        let etcd = self.etcd.as_ref()?;
        Some(raw_keys(etcd, &self.namespace).await)
    }
}

/// A manager of `fx` whose backend calls go through `faults`, with a short
/// request timeout (800 ms) so that stalls are quick.
pub async fn faulty(fx: &Fixture, faults: &distlock::testing::Faults) -> LockManager {
    faults.request_timeout(Duration::from_millis(800));
    fx.another().await.with_faults(faults)
}

pub async fn connect(etcd: &Etcd, namespace: &str) -> LockManager {
    LockManager::connect(EtcdConfig::new(etcd.endpoints()), namespace)
        .await
        .expect("connect to the test etcd")
}

/// A fresh etcd with a fault proxy in front of it: a manager connected
/// directly, and one that reaches etcd only through the proxy (its requests
/// time out after `request_timeout`), both in one namespace.
pub struct Proxied {
    pub etcd: Etcd,
    pub proxy: TcpProxy,
    pub direct: LockManager,
    pub behind: LockManager,
}

pub async fn proxied(request_timeout: Duration) -> Proxied {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let proxy = TcpProxy::start_for(&etcd.endpoints()[0]).await;
    let direct = connect(&etcd, &ns).await;
    let config = EtcdConfig::new([proxy.endpoint()]).request_timeout(request_timeout);
    let behind = LockManager::connect(config, &ns)
        .await
        .expect("connect through the proxy");
    Proxied {
        etcd,
        proxy,
        direct,
        behind,
    }
}

/// After a delete that must have spared it (a stale one, a lost guard's
/// release): `guard`'s key still holds `name`, as another manager,
/// `observer`, sees it, and the guard still holds; then releases it.
pub async fn still_holds(observer: &LockManager, name: &str, guard: LockGuard) {
    let holder = observer.lock_info(name).await.unwrap();
    assert_eq!(
        holder.map(|info| info.fencing_token),
        Some(guard.fencing_token()),
        "a delete took the key of `{name}`'s holder"
    );
    assert!(guard.is_held());
    guard.unlock().await.unwrap();
}

pub async fn raw_client(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("raw etcd client")
}

pub async fn raw_keys(etcd: &Etcd, prefix: &str) -> Vec<String> {
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    raw_client(etcd)
        .await
        .get(prefix, Some(options))
        .await
        .expect("raw get")
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Short TTL with fast renewal, for tests that wait for expiry.
pub fn short_ttl(secs: u64) -> LockOptions {
    LockOptions::default()
        .ttl(Duration::from_secs(secs))
        .renew_interval(Duration::from_millis(secs * 1000 / 4))
}

/// Counts the holders inside a critical section; records the most ever seen.
#[derive(Default, Clone)]
pub struct OverlapDetector {
    inside: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    entries: Arc<AtomicUsize>,
}

impl OverlapDetector {
    pub fn enter(&self) -> OverlapScope<'_> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::SeqCst);
        OverlapScope(self)
    }

    /// The largest number of holders seen inside at once.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::SeqCst)
    }
}

pub struct OverlapScope<'a>(&'a OverlapDetector);

impl Drop for OverlapScope<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Who is inside a read-write lock's sections now, and whether a writer was
/// ever inside with anyone, or readers together.
#[derive(Default, Clone)]
pub struct RwDetector {
    readers: Arc<AtomicUsize>,
    writers: Arc<AtomicUsize>,
    pub most_readers: Arc<AtomicUsize>,
    pub violations: Arc<AtomicUsize>,
}

impl RwDetector {
    pub fn reader(&self) -> impl Drop + '_ {
        let now = self.readers.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_readers.fetch_max(now, Ordering::SeqCst);
        if self.writers.load(Ordering::SeqCst) > 0 {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        Leave(&self.readers)
    }

    pub fn writer(&self) -> impl Drop + '_ {
        let writers = self.writers.fetch_add(1, Ordering::SeqCst) + 1;
        if writers > 1 || self.readers.load(Ordering::SeqCst) > 0 {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        Leave(&self.writers)
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
