//! Test harness for distlock: runs real etcd members, drives `etcdctl`, and puts a
//! controllable TCP proxy in front of etcd to simulate partitions.
//!
//! - [`Etcd::start`] starts one member, [`Etcd::start_cluster`] several; dropping the
//!   [`Etcd`] stops them (also when the test panics).
//! - [`etcdctl`] / [`etcdctl_async`] build `etcdctl` commands for given endpoints.
//! - [`TcpProxy`] forwards to one member and can [blackhole](TcpProxy::blackhole) traffic.
//! - [`unique_namespace`] gives each test its own key prefix.
//!
//! Environment variables:
//! - `DISTLOCK_ETCD_ENDPOINTS`: comma-separated client URLs of an existing etcd;
//!   [`Etcd::start`] then starts nothing and uses it ([`Etcd::start_cluster`] ignores it).
//! - `DISTLOCK_ETCD_LOG`: when set, etcd's output goes to the test's stdout/stderr
//!   instead of a log file (whose tail is shown when startup fails).
//! - `DISTLOCK_ETCD_BIN`, `DISTLOCK_ETCDCTL_BIN`: the binaries to run (default: from `PATH`);
//!   `scripts/test.sh` points them at etcd 3.5 for its second round of suites.
//!
//! Everything listens on 127.0.0.1 only.

mod etcd;
mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use etcd::{Etcd, EtcdSettings, ServerTls};
pub use proxy::{ProxyMode, TcpProxy};

/// Overrides the `etcdctl` binary (default: `etcdctl` from `PATH`).
const ETCDCTL_BIN_ENV: &str = "DISTLOCK_ETCDCTL_BIN";

/// `etcdctl` (v3 API) pointed at `endpoints`, ready for more arguments.
///
/// ```no_run
/// # let endpoints = vec!["http://127.0.0.1:2379".to_owned()];
/// let out = distlock_tests::etcdctl(&endpoints).args(["get", "key"]).output().unwrap();
/// ```
pub fn etcdctl(endpoints: &[String]) -> std::process::Command {
    let mut cmd = std::process::Command::new(etcdctl_bin());
    cmd.env("ETCDCTL_API", "3")
        // etcdctl refuses to run when both the flag and this variable are set.
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={}", endpoints.join(",")));
    cmd
}

/// Like [`etcdctl`], as a [`tokio::process::Command`] that kills `etcdctl` when dropped.
pub fn etcdctl_async(endpoints: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(etcdctl(endpoints));
    cmd.kill_on_drop(true);
    cmd
}

/// A key prefix unique to this call, `/<label>-<pid>-<counter>-<nanos>`, so that tests
/// (and test runs) sharing one etcd don't collide. It has no trailing `/`.
pub fn unique_namespace(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/{label}-{}-{count}-{nanos}", std::process::id())
}

fn etcdctl_bin() -> String {
    std::env::var(ETCDCTL_BIN_ENV).unwrap_or_else(|_| "etcdctl".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `etcdctl get --print-value-only key` and returns its trimmed stdout.
    async fn get(endpoints: &[String], key: &str, extra: &[&str]) -> std::io::Result<String> {
        let out = etcdctl_async(endpoints)
            .args(extra)
            .args(["get", "--print-value-only", key])
            .output()
            .await?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }

    #[test]
    fn namespaces_are_unique() {
        let a = unique_namespace("x");
        let b = unique_namespace("x");
        assert_ne!(a, b);
        assert!(a.starts_with("/x-"), "{a}");
    }

    #[tokio::test]
    async fn single_member_serves_health_and_etcdctl() {
        let etcd = Etcd::start().await;
        assert!(etcd::is_healthy(&etcd.member_endpoint(0)).await);
        let key = format!("{}/k", etcd.namespace());

        let put = etcdctl(&etcd.endpoints())
            .args(["put", &key, "hello"])
            .output()
            .unwrap();
        assert!(
            put.status.success(),
            "put failed: {}",
            String::from_utf8_lossy(&put.stderr)
        );
        assert_eq!(get(&etcd.endpoints(), &key, &[]).await.unwrap(), "hello");
    }

    #[tokio::test]
    async fn cluster_elects_new_leader_after_leader_is_killed() {
        let mut etcd = Etcd::start_cluster(3).await;
        assert!(etcd.is_managed());
        assert_eq!(etcd.endpoints().len(), 3);
        let old = etcd.leader().await;

        etcd.kill_member(old);
        assert_eq!(etcd.live_endpoints().len(), 2);
        let new = etcd.leader().await;
        assert_ne!(new, old);

        // The surviving majority still serves writes.
        let key = format!("{}/k", etcd.namespace());
        let put = etcdctl(&etcd.live_endpoints())
            .args(["put", &key, "v"])
            .output()
            .unwrap();
        assert!(
            put.status.success(),
            "put failed: {}",
            String::from_utf8_lossy(&put.stderr)
        );
    }

    #[tokio::test]
    async fn proxy_forwards_blackholes_and_restores() {
        let etcd = Etcd::start().await;
        let key = format!("{}/k", etcd.namespace());
        let put = etcdctl(&etcd.endpoints())
            .args(["put", &key, "v1"])
            .output()
            .unwrap();
        assert!(put.status.success());

        let proxy = TcpProxy::start_for(&etcd.member_endpoint(0)).await;
        let via_proxy = vec![proxy.endpoint()];
        let timeouts = ["--dial-timeout=1s", "--command-timeout=1s"];
        assert_eq!(get(&via_proxy, &key, &timeouts).await.unwrap(), "v1");

        proxy.blackhole();
        assert!(proxy.is_blackholed());
        let blocked =
            tokio::time::timeout(Duration::from_secs(10), get(&via_proxy, &key, &timeouts))
                .await
                .expect("etcdctl did not give up on its own");
        assert!(
            blocked.is_err(),
            "get through a blackholed proxy succeeded: {blocked:?}"
        );

        proxy.restore();
        assert_eq!(get(&via_proxy, &key, &timeouts).await.unwrap(), "v1");
    }
}
