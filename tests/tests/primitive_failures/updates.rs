//! In-place updates of a held key under faults: a write lock's downgrade,
//! a leader's proclaim.

use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, LockManager};
use tokio::time::{timeout, Instant};

use super::support::{faulty, short_ttl, Fixture};

/// `WriteGuard::downgrade` is bounded like every other call: while the
/// backend stalls its updates (the session healthy) it gives up with
/// `Backend` within about a TTL, and the write lock is released; during a
/// partition (renewals fail too) it ends with `Expired` once the lock is
/// lost; after a loss it says `Expired` at once. One whose answer was lost
/// succeeds (readers get in).
pub(crate) async fn a_downgrade_is_bounded_and_reports_a_loss(fx: &Fixture) {
    let rivals = &fx.another().await;
    let write = |m: &LockManager, name: &str| m.new_rw_lock(name, short_ttl(2)).unwrap();
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;

    let w = write(&manager, "dg-stall").write().await.unwrap();
    faults.always(Op::Update, Fault::Stall);
    let started = Instant::now();
    let err = timeout(Duration::from_secs(8), w.downgrade())
        .await
        .expect("a downgrade hung while updates stalled")
        .expect_err("no update got through");
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    faults.heal();
    let taken = write(rivals, "dg-stall")
        .write_timeout(Duration::from_secs(3))
        .await;
    taken
        .expect("the failed downgrade's write lock was not released")
        .release()
        .await
        .unwrap();

    let w = write(&manager, "dg-partition").write().await.unwrap();
    faults.always(Op::Update, Fault::Fail);
    faults.always(Op::KeepAlive, Fault::Fail);
    faults.always(Op::Revoke, Fault::Fail);
    let err = timeout(Duration::from_secs(8), w.downgrade())
        .await
        .expect("a downgrade hung in a partition")
        .expect_err("partitioned");
    assert_eq!(err.code(), ErrorCode::Expired, "{err}");
    faults.heal();

    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let w = write(&manager, "dg-lost").write().await.unwrap();
    faults.always(Op::KeepAlive, Fault::Fail);
    faults.always(Op::Revoke, Fault::Fail);
    timeout(Duration::from_secs(5), w.lost())
        .await
        .expect("never lost");
    let started = Instant::now();
    let err = w.downgrade().await.expect_err("lost");
    assert_eq!(err.code(), ErrorCode::Expired, "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));
    faults.heal();

    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let w = write(&manager, "dg-lose").write().await.unwrap();
    faults.inject(Op::Update, Fault::Lose, 1);
    let r = w.downgrade().await.expect("the update applied");
    assert!(r.is_held());
    let reader = write(rivals, "dg-lose").try_read().await.unwrap();
    reader
        .expect("a reader is let in after the downgrade")
        .release()
        .await
        .unwrap();
    r.release().await.unwrap();
}

/// `Leadership::proclaim` (the same in-place update) is bounded as a
/// downgrade is: `Backend` within about a TTL while updates stall, still
/// leading; `Expired` during a partition.
pub(crate) async fn a_proclaim_is_bounded_and_reports_a_loss(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let election = manager.new_election("proclaim", short_ttl(2)).unwrap();
    let leading = election.campaign("v1").await.unwrap();
    faults.always(Op::Update, Fault::Stall);
    let started = Instant::now();
    let err = timeout(Duration::from_secs(8), leading.proclaim("v2"))
        .await
        .expect("a proclaim hung while updates stalled")
        .expect_err("no update got through");
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(leading.is_held());
    assert_eq!(leading.value(), b"v1");
    faults.always(Op::KeepAlive, Fault::Fail);
    faults.always(Op::Revoke, Fault::Fail);
    let err = timeout(Duration::from_secs(8), leading.proclaim("v3"))
        .await
        .expect("a proclaim hung in a partition")
        .expect_err("partitioned");
    assert_eq!(err.code(), ErrorCode::Expired, "{err}");
    faults.heal();
}
