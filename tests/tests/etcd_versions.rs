//! Which etcd the suites run on. `scripts/test.sh` runs the etcd suites on
//! Debian's etcd 3.4 and again on etcd 3.5 (`DISTLOCK_ETCD_BIN`), setting
//! `DISTLOCK_EXPECT_ETCD_VERSION` so that a run silently falling back to the
//! wrong binary fails here.

mod support;

use std::time::Duration;

use distlock::{ErrorCode, LockOptions};
use distlock_tests::Etcd;
use support::{connect, init_tracing, raw_client};
use tokio::time::timeout;

#[tokio::test]
async fn the_suite_runs_on_the_etcd_it_was_asked_for() {
    init_tracing();
    let etcd = Etcd::start().await;
    let version = etcd.version().await;
    eprintln!("etcd server version {version}");
    if let Ok(expected) = std::env::var("DISTLOCK_EXPECT_ETCD_VERSION") {
        assert!(
            version.starts_with(&expected),
            "expected etcd {expected}, the harness started {version}"
        );
    }
    // connect checks the server version (3.4+): it passes on supported ones.
    let manager = connect(&etcd, &etcd.namespace()).await;
    manager.close().await;
}

/// A lease revoked behind a holder's back: `renew` answers `Expired` (not
/// `Backend`) and the guard is lost at once, on every supported etcd.
#[tokio::test]
async fn renew_after_a_revoke_says_expired() {
    init_tracing();
    let etcd = Etcd::start().await;
    let manager = connect(&etcd, &etcd.namespace()).await;
    let guard = manager
        .new_lock("batch", LockOptions::default().auto_renew(false))
        .unwrap()
        .lock()
        .await
        .unwrap();
    let key = manager.lock_info("batch").await.unwrap().unwrap().key;
    let lease = i64::from_str_radix(key.rsplit('/').next().unwrap(), 16).unwrap();
    raw_client(&etcd).await.lease_revoke(lease).await.unwrap();

    let err = timeout(Duration::from_secs(5), guard.renew())
        .await
        .expect("renew hung")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Expired, "{err:?}");
    timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("the guard was not lost");
    assert!(!guard.is_held());
    manager.close().await;
}
