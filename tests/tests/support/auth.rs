//! etcd with authentication on, and a user whose role may only read a
//! namespace: its locks there are refused with `PermissionDenied` (a
//! configuration fault the Tower layer answers 500 / `INTERNAL`).

use std::time::Duration;

use distlock::{EtcdConfig, LockManager};
use distlock_tests::{etcdctl_async, Etcd, EtcdSettings};

const ROOT_PASSWORD: &str = "root-pw";
const READER_PASSWORD: &str = "reader-pw";

/// Runs `etcdctl` and panics with its output on failure.
async fn etcdctl(etcd: &Etcd, args: &[&str]) {
    let out = etcdctl_async(&etcd.endpoints())
        .args(args)
        .output()
        .await
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// etcd with auth on, and a manager of a user `reader` whose role may read
/// `namespace` but not write it: it connects, and every lock it tries there
/// is refused with `PermissionDenied`.
pub async fn read_only_manager(namespace: &str) -> (Etcd, LockManager) {
    // Always one of our own (never DISTLOCK_ETCD_ENDPOINTS): auth is turned on.
    let etcd = Etcd::start_with(EtcdSettings::default()).await;
    let prefix = format!("{namespace}/");
    let root = format!("root:{ROOT_PASSWORD}");
    let reader = format!("reader:{READER_PASSWORD}");
    etcdctl(&etcd, &["user", "add", &root, "--interactive=false"]).await;
    etcdctl(&etcd, &["role", "add", "reader"]).await;
    etcdctl(
        &etcd,
        &[
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "read",
            &prefix,
        ],
    )
    .await;
    etcdctl(&etcd, &["user", "add", &reader, "--interactive=false"]).await;
    etcdctl(&etcd, &["user", "grant-role", "reader", "reader"]).await;
    etcdctl(&etcd, &["auth", "enable"]).await;
    let config = EtcdConfig::new(etcd.endpoints())
        .credentials("reader", READER_PASSWORD)
        .request_timeout(Duration::from_secs(2));
    let manager = tokio::time::timeout(
        Duration::from_secs(15),
        LockManager::connect(config, namespace),
    )
    .await
    .expect("connect hung")
    .expect("the reader connects to the namespace it may read");
    (etcd, manager)
}
