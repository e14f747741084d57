//! What only a real etcd can show: leases revoked or starved behind the
//! manager's back, keys deleted by others, `etcdctl lock` interoperation, and
//! a leader failover in a three-member cluster.

mod support;

use std::process::Stdio;
use std::time::Duration;

use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};
use distlock_tests::{etcdctl_async, Etcd, TcpProxy};
use support::{connect, init_tracing, raw_client, raw_keys, short_ttl};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::{sleep, timeout, Instant};

/// The lease id in a holder key `{queue}{lease hex}`.
fn lease_of(key: &str) -> i64 {
    i64::from_str_radix(key.rsplit('/').next().unwrap(), 16).unwrap()
}

#[tokio::test]
async fn revoking_the_lease_behind_the_managers_back_loses_its_locks() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let manager = connect(&etcd, &ns).await;
    let a = manager
        .new_lock("a", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let b = manager
        .new_lock("b", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let key = manager.lock_info("a").await.unwrap().unwrap().key;

    raw_client(&etcd)
        .await
        .lease_revoke(lease_of(&key))
        .await
        .unwrap();

    // Both locks were on the manager's one session lease.
    timeout(Duration::from_secs(5), a.lost())
        .await
        .expect("a not lost");
    timeout(Duration::from_secs(5), b.lost())
        .await
        .expect("b not lost");
    assert!(!a.is_held() && !b.is_held());
    assert_eq!(a.unlock().await.unwrap_err().code(), ErrorCode::Expired);
    drop(b);
    // The manager recovers with a fresh lease.
    let again = manager.new_lock("a", LockOptions::default()).unwrap();
    let g = again.lock_timeout(Duration::from_secs(5)).await.unwrap();
    assert!(g.is_held());
    assert_ne!(
        lease_of(&manager.lock_info("a").await.unwrap().unwrap().key),
        lease_of(&key)
    );
    g.unlock().await.unwrap();
}

/// A holder whose keep-alives stop getting through (its connection
/// blackholed) decides it lost the lock before etcd expires the lease and
/// hands the lock to a manager connected directly.
#[tokio::test]
async fn a_partitioned_holder_hears_of_its_loss_before_the_takeover() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let proxy = TcpProxy::start_for(&etcd.endpoints()[0]).await;
    let config = EtcdConfig::new([proxy.endpoint()]).request_timeout(Duration::from_millis(500));
    let partitioned = LockManager::connect(config, &ns).await.unwrap();
    let direct = connect(&etcd, &ns).await;

    let opts = short_ttl(2);
    let guard = partitioned
        .new_lock("job", opts.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let holder_lost = guard.lost();
    let waiter = direct.new_lock("job", opts).unwrap();
    let takeover = tokio::spawn(async move {
        let g = waiter.lock_timeout(Duration::from_secs(15)).await.unwrap();
        let told = timeout(Duration::ZERO, holder_lost).await.is_ok();
        (g, told, Instant::now())
    });
    sleep(Duration::from_millis(300)).await;
    let cut = Instant::now();
    proxy.blackhole();

    let (g, told, taken_at) = takeover.await.unwrap();
    assert!(
        told,
        "the lock was handed over before its partitioned holder knew"
    );
    assert!(!guard.is_held());
    assert!(
        taken_at - cut >= Duration::from_secs(1),
        "taken over too early"
    );
    assert!(g.fencing_token() > guard.fencing_token());
    g.unlock().await.unwrap();
    drop(guard);
}

/// A waiter whose own queue key disappears fails with `Expired` instead of
/// waiting on a key that no longer exists.
#[tokio::test]
async fn a_waiter_whose_key_is_deleted_fails_with_expired() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let holder = connect(&etcd, &ns).await;
    let guard = holder
        .new_lock("q", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter = connect(&etcd, &ns)
        .await
        .new_lock("q", LockOptions::default())
        .unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });

    let holder_key = holder.lock_info("q").await.unwrap().unwrap().key;
    let deadline = Instant::now() + Duration::from_secs(5);
    let waiter_key = loop {
        let keys = raw_keys(&etcd, &ns).await;
        if let Some(k) = keys.into_iter().find(|k| *k != holder_key) {
            break k;
        }
        assert!(Instant::now() < deadline, "waiter never queued");
        sleep(Duration::from_millis(10)).await;
    };
    raw_client(&etcd)
        .await
        .delete(waiter_key, None)
        .await
        .unwrap();

    let err = timeout(Duration::from_secs(5), waiting)
        .await
        .expect("waiter hangs")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Expired);
    assert!(guard.is_held());
    guard.unlock().await.unwrap();
}

/// `etcdctl lock {ns}/locks/{name}` and distlock exclude each other, both ways.
#[tokio::test]
async fn etcdctl_lock_and_distlock_exclude_each_other() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let manager = connect(&etcd, &ns).await;
    let lock = manager.new_lock("shared", LockOptions::default()).unwrap();
    let etcd_name = format!("{ns}/locks/shared");

    // etcdctl holds: distlock waits until it lets go.
    let mut ctl = etcdctl_async(&etcd.endpoints())
        .args([
            "lock",
            &etcd_name,
            "--",
            "sh",
            "-c",
            "echo acquired; sleep 1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(ctl.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("acquired")
    );
    assert!(
        lock.try_lock().await.unwrap().is_none(),
        "etcdctl's lock ignored"
    );
    let info = manager
        .lock_info("shared")
        .await
        .unwrap()
        .expect("etcdctl's key seen");
    assert_eq!(info.owner, "", "etcdctl writes no metadata");
    let g = lock.lock_timeout(Duration::from_secs(10)).await.unwrap();
    assert!(ctl.wait().await.unwrap().success());

    // distlock holds: etcdctl waits until it lets go.
    let mut ctl = etcdctl_async(&etcd.endpoints())
        .args(["lock", &etcd_name, "--", "echo", "acquired"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(ctl.stdout.take().unwrap()).lines();
    let early = timeout(Duration::from_millis(800), lines.next_line()).await;
    assert!(
        early.is_err(),
        "etcdctl got the lock while distlock held it: {early:?}"
    );
    let released = Instant::now();
    g.unlock().await.unwrap();
    let line = timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("etcdctl never got it");
    assert_eq!(line.unwrap().as_deref(), Some("acquired"));
    assert!(released.elapsed() < Duration::from_secs(5));
    assert!(ctl.wait().await.unwrap().success());
}

/// A lock survives the loss of the cluster's leader: the session's lease is
/// renewed through the new leader, nobody else gets in, and the queue works
/// on afterwards.
#[tokio::test]
async fn a_held_lock_survives_a_leader_failover() {
    init_tracing();
    let mut cluster = Etcd::start_cluster(3).await;
    let ns = distlock_tests::unique_namespace("failover");
    let config = || EtcdConfig::new(cluster.endpoints()).request_timeout(Duration::from_secs(1));
    let holder = LockManager::connect(config(), &ns).await.unwrap();
    let other = LockManager::connect(config(), &ns).await.unwrap();
    let opts = short_ttl(4);
    let guard = holder
        .new_lock("ha", opts.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter = other.new_lock("ha", opts).unwrap();
    let waiting = tokio::spawn(async move { waiter.lock_timeout(Duration::from_secs(30)).await });

    let leader = cluster.leader().await;
    cluster.kill_member(leader);
    sleep(Duration::from_secs(6)).await; // longer than the TTL

    assert!(guard.is_held(), "lock lost across a failover");
    assert!(
        !waiting.is_finished(),
        "the waiter got in while the lock was held"
    );
    let token = guard.fencing_token();
    guard.unlock().await.unwrap();
    let next = waiting
        .await
        .unwrap()
        .expect("waiter proceeds after failover");
    assert!(next.fencing_token() > token);
    next.unlock().await.unwrap();
}

/// A waiter survives losing the cluster member it talks to: its watches and
/// keep-alives move to another member, and it gets the lock when released.
#[tokio::test]
async fn a_waiter_survives_losing_the_member_it_talks_to() {
    init_tracing();
    let mut cluster = Etcd::start_cluster(3).await;
    let ns = distlock_tests::unique_namespace("member-loss");
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (doomed, survivor) = (followers[0], followers[1]);
    let config = |members: &[usize]| {
        EtcdConfig::new(members.iter().map(|&i| cluster.member_endpoint(i)))
            .request_timeout(Duration::from_secs(1))
    };
    let holder = LockManager::connect(config(&[survivor, leader]), &ns)
        .await
        .unwrap();
    let waiter = LockManager::connect(config(&[doomed, survivor]), &ns)
        .await
        .unwrap();
    let opts = short_ttl(5);
    let guard = holder
        .new_lock("m", opts.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let lock = waiter.new_lock("m", opts).unwrap();
    let waiting = tokio::spawn(async move { lock.lock_timeout(Duration::from_secs(20)).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while holder.lock_info("m").await.unwrap().unwrap().waiters == 0 {
        assert!(Instant::now() < deadline, "the waiter never queued");
        sleep(Duration::from_millis(10)).await;
    }

    cluster.kill_member(doomed);
    sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "the waiter gave up: {:?}",
        waiting.await
    );
    let token = guard.fencing_token();
    guard.unlock().await.unwrap();
    let next = timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiter never got the lock")
        .unwrap()
        .expect("the waiter failed instead of moving to another member");
    assert!(next.is_held());
    assert!(next.fencing_token() > token);
    next.unlock().await.unwrap();
}

/// Managers sharing one etcd connection (peers) share its write batches: two
/// contenders of one lock must never land in one batch, where they would tie
/// for the same place and the same fencing token. Found by the scale bench's
/// 100-manager herd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_sharing_a_connection_never_tie() {
    init_tracing();
    let etcd = Etcd::start().await;
    let base = connect(&etcd, &etcd.namespace()).await;
    let detector = support::OverlapDetector::default();
    let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (peer, detector, tokens) = (base.peer(), detector.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let lock = peer.new_lock("tie", LockOptions::default()).unwrap();
            for _ in 0..8 {
                let guard = lock.lock().await.unwrap();
                tokens.lock().unwrap().push(guard.fencing_token());
                {
                    let _inside = detector.enter();
                    sleep(Duration::from_millis(1)).await;
                }
                guard.unlock().await.unwrap();
            }
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
    assert_eq!(detector.most_at_once(), 1, "two holders at once");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 24 * 8);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not strictly increasing in acquisition order: {tokens:?}"
    );
}

/// A manager's concurrent readers of one name may be enqueued in one batch
/// and share a create revision (a place and a token, which readers share
/// anyway); a writer's enqueue never shares a batch with another entry of
/// its name: no reader or writer ever has a writer's token, and a writer
/// overlaps no section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_may_share_a_batch_but_never_with_a_writer() {
    init_tracing();
    let etcd = Etcd::start().await;
    let manager = connect(&etcd, &etcd.namespace()).await;
    let rw = manager.new_rw_lock("doc", LockOptions::default()).unwrap();
    // A burst of readers behind a writer: all but the first are enqueued
    // while the first's write is on its way, so they form one batch.
    let held = rw.write().await.unwrap();
    let burst: Vec<_> = (0..16)
        .map(|_| {
            let rw = manager.new_rw_lock("doc", LockOptions::default()).unwrap();
            tokio::spawn(async move { rw.read().await.unwrap() })
        })
        .collect();
    sleep(Duration::from_millis(300)).await;
    held.release().await.unwrap();
    let mut tokens = Vec::new();
    for reader in burst {
        let guard = timeout(Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap();
        tokens.push(guard.fencing_token());
        guard.release().await.unwrap();
    }
    tokens.sort();
    tokens.dedup();
    assert!(
        tokens.len() < 16,
        "no two readers shared a batch: {tokens:?}"
    );

    // Readers and writers of one manager, in bursts that start together.
    let detector = support::RwDetector::default();
    let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (detector, seen, start) = (detector.clone(), seen.clone(), start.clone());
        let rw = manager.new_rw_lock("doc", LockOptions::default()).unwrap();
        tasks.push(tokio::spawn(async move {
            for round in 0..6 {
                start.wait().await;
                if (t + round) % 4 == 0 {
                    let w = rw.write().await.unwrap();
                    seen.lock().unwrap().0.push(w.fencing_token());
                    {
                        let _inside = detector.writer();
                        sleep(Duration::from_millis(2)).await;
                    }
                    w.release().await.unwrap();
                } else {
                    let r = rw.read().await.unwrap();
                    seen.lock().unwrap().1.push(r.fencing_token());
                    {
                        let _inside = detector.reader();
                        sleep(Duration::from_millis(4)).await;
                    }
                    r.release().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
    let violations = detector
        .violations
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(violations, 0, "a writer overlapped another section");
    let (writers, readers) = seen.lock().unwrap().clone();
    assert_eq!(writers.len() + readers.len(), 16 * 6);
    let mut distinct = writers.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        writers.len(),
        "two writers tied: {writers:?}"
    );
    let shared: Vec<_> = writers.iter().filter(|w| readers.contains(w)).collect();
    assert!(
        shared.is_empty(),
        "a reader tied with a writer at {shared:?}"
    );
}

/// Writes of managers sharing a connection travel in shared batches; etcd
/// refuses a batch whole when one member's lease is gone. Only that member
/// may hear so: a healthy manager in the same batch keeps its session (and
/// the locks on it), while the one whose lease was revoked recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_members_lost_lease_does_not_fail_its_batch() {
    init_tracing();
    let etcd = Etcd::start().await;
    let base = connect(&etcd, &etcd.namespace()).await;
    let (revoked, healthy) = (base.peer(), base.peer());
    let doomed = revoked
        .new_lock("doomed", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let kept = healthy
        .new_lock("kept", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let key = base.lock_info("doomed").await.unwrap().unwrap().key;
    raw_client(&etcd)
        .await
        .lease_revoke(lease_of(&key))
        .await
        .unwrap();
    // A burst from both managers at once, so that their enqueues share batches.
    let mut burst = Vec::new();
    for i in 0..32 {
        let m = if i % 2 == 0 {
            revoked.clone()
        } else {
            healthy.clone()
        };
        burst.push(tokio::spawn(async move {
            let lock = m
                .new_lock(format!("burst-{i}"), LockOptions::default())
                .unwrap();
            let g = lock.lock_timeout(Duration::from_secs(10)).await;
            (i, g.map(|g| g.is_held()))
        }));
    }
    for t in burst {
        let (i, held) = t.await.unwrap();
        assert!(held.expect("every lock of the burst is taken"), "burst-{i}");
    }
    assert!(kept.is_held(), "the healthy manager lost its session");
    timeout(Duration::from_secs(5), doomed.lost())
        .await
        .expect("the revoked lease's lock is lost");
}

/// Issue #17.6: a key under a lock's prefix that is not UTF-8 (put by another
/// client) is a contender like any other: a waiter behind it watches exactly
/// that key and proceeds when it goes (it used to watch a lossily decoded key
/// that never exists, and hang), `lock_info` and `list_locks` show it, and
/// `force_unlock` deletes exactly it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_utf8_is_a_contender_like_any_other() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let manager = connect(&etcd, &ns).await;
    let mut raw = raw_client(&etcd).await;
    let queue = distlock::layout::Keyspace::new(&ns).queue("bin");
    let foreign = [queue.as_bytes(), b"\xff\xfe-go"].concat();
    raw.put(foreign.clone(), "", None).await.unwrap();

    // A waiter behind it proceeds once it is deleted.
    let lock = manager.new_lock("bin", LockOptions::default()).unwrap();
    let waiter = tokio::spawn(async move { lock.lock_timeout(Duration::from_secs(10)).await });
    sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "took a lock held by another client");
    let info = manager.lock_info("bin").await.unwrap().expect("held");
    assert!(info.key.starts_with(&queue), "{}", info.key);
    assert_eq!(info.waiters, 1);
    assert_eq!(manager.list_locks("bin").await.unwrap().len(), 1);
    raw.delete(foreign.clone(), None).await.unwrap();
    let guard = timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the waiter did not hear the foreign key's delete")
        .unwrap()
        .unwrap();
    guard.unlock().await.unwrap();

    // force_unlock deletes exactly the foreign holder's key.
    raw.put(foreign.clone(), "", None).await.unwrap();
    assert!(manager.force_unlock("bin").await.unwrap());
    let left = raw.get(foreign, None).await.unwrap();
    assert!(left.kvs().is_empty(), "force_unlock missed the foreign key");
    let lock = manager.new_lock("bin", LockOptions::default()).unwrap();
    lock.try_lock()
        .await
        .unwrap()
        .expect("free")
        .unlock()
        .await
        .unwrap();
}

/// A connection reset as the manager connects is tried again: etcd's
/// connections are closed as they are accepted until 150 ms in, and
/// `connect` still succeeds (it tries its first requests three times,
/// 100 ms apart); one that stays refused fails, with `Backend`, promptly.
#[tokio::test]
async fn a_connection_reset_as_the_manager_connects_is_tried_again() {
    let etcd = Etcd::start().await;
    let proxy = TcpProxy::start_for(&etcd.endpoints()[0]).await;
    let config = || EtcdConfig::new([proxy.endpoint()]);

    proxy.drop_traffic();
    let started = Instant::now();
    let Err(err) = LockManager::connect(config(), "/reset").await else {
        panic!("connected while every connection was closed");
    };
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    proxy.drop_traffic();
    let restore = async {
        sleep(Duration::from_millis(150)).await;
        proxy.restore();
    };
    let (connected, ()) = tokio::join!(LockManager::connect(config(), "/reset"), restore);
    let manager = connected.expect("one reset failed the start");
    let lock = manager.new_lock("r", LockOptions::default()).unwrap();
    lock.lock().await.unwrap().unlock().await.unwrap();
    manager.close().await;
}

/// The last handle of a manager dropped without `close()`: its sessions'
/// leases are revoked at once (not left to expire a TTL later), so a key
/// a late request of it made under one goes too. Here a lock's key is made
/// under the manager's session by hand, as a late enqueue would make it,
/// after its lock was released.
#[tokio::test]
async fn dropping_a_managers_last_handle_revokes_its_leases() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let manager = connect(&etcd, &ns).await;
    let lock = manager.new_lock("late", LockOptions::default()).unwrap();
    let g = lock.lock().await.unwrap();
    let key = manager.lock_info("late").await.unwrap().unwrap().key;
    g.unlock().await.unwrap();
    let lease = lease_of(&key);
    let mut raw = raw_client(&etcd).await;
    let late = etcd_client::PutOptions::new().with_lease(lease);
    raw.put(key.as_str(), "late", Some(late)).await.unwrap();
    drop((lock, manager));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let ttl = raw.lease_time_to_live(lease, None).await.unwrap().ttl();
        if ttl <= 0 && raw_keys(&etcd, &ns).await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lease {lease:x} still there (TTL {ttl} s), keys {:?}",
            raw_keys(&etcd, &ns).await
        );
        sleep(Duration::from_millis(50)).await;
    }
}
