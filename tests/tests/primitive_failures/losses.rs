//! Holds lost behind their backs — renewals stopped, keys deleted, a lease
//! revoked, a thread blocked past the TTL — each noticed on the holder's own
//! clock, freeing the name in its process.

use std::sync::Arc;
use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, LockManager, LockOptions};
use tokio::time::{sleep, timeout};

use super::nothing_left_within;
use super::support::prim::{for_each_prim, Prim};
use super::support::{faulty, raw_client, raw_keys, short_ttl, Fixture};

/// DESIGN §7, loss: a holder whose renewals stop (keep-alives and the revoke
/// fail; the server expires the lease at its TTL) decides it lost on its own
/// clock before a rival can get in: at the moment the rival holds, the
/// holder's `is_held()` is already false and its `lost()` is ready. Its
/// release then says `Expired`.
pub(crate) async fn a_lost_lease_is_noticed_before_a_rival_gets_in(fx: &Fixture) {
    let rivals = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("renew");
        let faults = Faults::new();
        let cut = faulty(fx, &faults).await;
        let held = prim
            .handle(&cut, name, short_ttl(2))
            .acquire()
            .await
            .unwrap();
        let held = Arc::new(held);
        let rival = prim.rival().handle(rivals, name, short_ttl(2));
        let watched = Arc::clone(&held);
        let waiting = tokio::spawn(async move {
            let taken = rival.acquire_timeout(Duration::from_secs(10)).await;
            // The holder's view, the moment the rival holds.
            let seen = (watched.is_held(), watched.lost_now());
            (taken, seen)
        });
        sleep(Duration::from_millis(200)).await;
        faults.always(Op::KeepAlive, Fault::Fail);
        faults.always(Op::Revoke, Fault::Fail);
        timeout(Duration::from_secs(5), held.lost())
            .await
            .unwrap_or_else(|_| panic!("{prim:?}: the holder never heard"));
        let (taken, (held_then, lost_then)) = timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        let taken = taken.unwrap_or_else(|e| panic!("{prim:?}: the rival never got in: {e}"));
        assert!(!held_then, "{prim:?}: a rival got in while the holder held");
        assert!(
            lost_then,
            "{prim:?}: lost() was not ready when a rival got in"
        );
        let held = Arc::try_unwrap(held).unwrap();
        let err = held.release().await.expect_err("it was lost");
        assert_eq!(err.code(), ErrorCode::Expired, "{prim:?}: {err}");
        assert!(
            taken.is_held(),
            "{prim:?}: the lost release took the rival's key"
        );
        taken.release().await.unwrap();
        faults.heal();
    })
    .await;
}

/// Deletes the keys of `prim`'s holder of `name` with fencing token `token`
/// (a multi-lock's: every name's) behind its back: on etcd directly, in
/// memory by `force_unlock_token` where the holder heads a lock's queue.
/// `false` when that cannot be done here (a permit's or a candidate's key in
/// memory, which the API cannot remove).
async fn delete_keys_of(
    fx: &Fixture,
    admin: &LockManager,
    prim: Prim,
    name: &str,
    token: u64,
) -> bool {
    let Some(etcd) = &fx.etcd else {
        let names = prim.lock_names(name);
        for lock in &names {
            assert!(
                admin.force_unlock_token(lock, token).await.unwrap(),
                "{prim:?}"
            );
        }
        return !names.is_empty();
    };
    let mut client = raw_client(etcd).await;
    for prefix in prim.queue_prefixes(&fx.namespace, name) {
        let listed = client
            .get(
                prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        let key = listed
            .kvs()
            .iter()
            .find(|kv| kv.create_revision() as u64 == token)
            .map(|kv| kv.key().to_vec())
            .unwrap_or_else(|| panic!("{prim:?}: no key with token {token} in {prefix}"));
        assert_eq!(client.delete(key, None).await.unwrap().deleted(), 1);
    }
    true
}

/// #8.8 for every primitive: a hold whose keys are deleted behind its back
/// hears of it (`lost()`, `is_held()` false), and frees the name in its own
/// process at once: another task of the same manager gets in; the lost
/// guard's release says `Expired` and spares the new holder's key.
pub(crate) async fn a_deleted_key_is_noticed_and_frees_the_process(fx: &Fixture) {
    let manager = &fx.manager();
    let admin = &fx.another().await;
    let outsiders = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = prim.name("deleted");
        let held = prim.handle(manager, &name, LockOptions::default());
        let held = held.acquire().await.unwrap();
        let rival = prim.rival().handle(manager, &name, LockOptions::default());
        // Another task of the holder's process waits for the name.
        let waiting = tokio::spawn(async move {
            let taken = rival.acquire_timeout(Duration::from_secs(8)).await;
            (rival, taken)
        });
        sleep(Duration::from_millis(300)).await; // queued, and old enough to be watched
        if !delete_keys_of(fx, admin, prim, &name, held.token()).await {
            assert!(
                fx.etcd.is_none(),
                "{prim:?}: the key must be deletable on etcd"
            );
            waiting.abort();
            return held.release().await.unwrap();
        }
        timeout(Duration::from_secs(3), held.lost())
            .await
            .unwrap_or_else(|_| panic!("{prim:?}: the holder never heard"));
        assert!(!held.is_held(), "{prim:?}");
        let (_rival, taken) = timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        let taken = taken.unwrap_or_else(|e| panic!("{prim:?}: the process kept the name: {e}"));
        let err = held.release().await.expect_err("it was lost");
        assert_eq!(err.code(), ErrorCode::Expired, "{prim:?}: {err}");
        assert!(
            taken.is_held(),
            "{prim:?}: the lost release took the new key"
        );
        let outsider = prim
            .rival()
            .handle(outsiders, &name, LockOptions::default());
        let busy = outsider.try_acquire().await.unwrap();
        assert!(
            busy.is_none(),
            "{prim:?}: the lost release deleted the new key"
        );
        taken.release().await.unwrap();
        nothing_left_within(fx, admin, prim, &name, Duration::from_secs(3)).await;
    })
    .await;
}

/// A multi-lock that loses one name (its key force-unlocked) is lost as a
/// whole (`is_held()` false, `lost()` ready) and frees that name in its
/// process at once; the names it still has keys for stay its own until its
/// guard goes (DESIGN §7: whoever created a key deletes it), then its
/// release says `Expired`, frees them, and spares the lost name's new holder.
pub(crate) async fn a_multi_lock_that_loses_one_name_keeps_the_others_until_released(fx: &Fixture) {
    let (manager, admin) = (fx.manager(), fx.another().await);
    let opts = LockOptions::default;
    let multi = manager
        .new_multi_lock(["part.a", "part.b"], opts())
        .unwrap();
    let held = multi.lock().await.unwrap();
    sleep(Duration::from_millis(300)).await; // old enough to be watched
    let token = held.fencing_token("part.b").unwrap();
    assert!(admin.force_unlock_token("part.b", token).await.unwrap());
    timeout(Duration::from_secs(3), held.lost())
        .await
        .expect("the multi-lock never heard");
    assert!(!held.is_held());
    let b = manager.new_lock("part.b", opts()).unwrap();
    let taken = tokio::spawn(async move { (b.lock_timeout(Duration::from_secs(3)).await, b) });
    let (taken, _b) = taken.await.unwrap();
    let taken = taken.expect("the lost name was not freed in its process");
    let a = admin.new_lock("part.a", opts()).unwrap();
    assert!(
        a.try_lock().await.unwrap().is_none(),
        "a name it still has went"
    );
    let err = held.release().await.expect_err("it was lost");
    assert_eq!(err.code(), ErrorCode::Expired, "{err}");
    let a = a
        .try_lock()
        .await
        .unwrap()
        .expect("the release freed the other name");
    assert!(
        taken.is_held(),
        "the lost release took the new holder's key"
    );
    let other_b = admin.new_lock("part.b", opts()).unwrap();
    assert!(other_b.try_lock().await.unwrap().is_none());
    a.unlock().await.unwrap();
    taken.unlock().await.unwrap();
}

/// #17.3 for every primitive: a task that blocks its thread past the TTL on
/// a `current_thread` runtime (where its keeper cannot run) holds every
/// primitive; once rivals in another process got in, each hold reads as lost
/// on the blocked thread's own clock (`is_held()` false, `lost()` ready),
/// and its release says `Expired`.
pub(crate) async fn a_blocked_thread_sees_its_holds_lost_on_its_own_clock(fx: &Fixture) {
    let victim = fx.another().await;
    let rivals = &fx.another().await;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
    let blocked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut holds = Vec::new();
            for prim in Prim::ALL {
                let handle = prim.handle(&victim, &prim.name("blocked"), short_ttl(2));
                holds.push((prim, handle.acquire().await.unwrap()));
            }
            ready_tx.send(()).unwrap();
            // CPU work or a blocking call: nothing else runs on this thread.
            taken_rx.recv_timeout(Duration::from_secs(15)).unwrap();
            for (prim, held) in holds {
                assert!(!held.is_held(), "{prim:?}: held after a rival got in");
                assert!(held.lost_now(), "{prim:?}: lost() not ready");
                let err = held.release().await.expect_err("lost");
                assert_eq!(err.code(), ErrorCode::Expired, "{prim:?}: {err}");
            }
        });
    });
    ready_rx.await.unwrap();
    let taken = for_each_prim(|prim| {
        let rival = prim
            .rival()
            .handle(rivals, &prim.name("blocked"), short_ttl(2));
        async move {
            let got = rival.acquire_timeout(Duration::from_secs(8)).await;
            got.unwrap_or_else(|e| {
                panic!("{prim:?}: the blocked holder's lease never ran out: {e}")
            })
        }
    })
    .await;
    taken_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || blocked.join())
        .await
        .unwrap()
        .unwrap();
    for held in taken {
        held.release().await.unwrap();
    }
}

/// A lease revoked behind the holders' backs (an operator's `etcdctl lease
/// revoke`) is heard by every primitive on it: `lost()`, `is_held()` false,
/// a release that says `Expired`; rivals get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_noticed() {
    let fx = &Fixture::etcd().await;
    let etcd = fx.etcd.as_ref().unwrap();
    let manager = &fx.another().await;
    let rivals = &fx.another().await;
    let mut holds = Vec::new();
    for prim in Prim::ALL {
        let handle = prim.handle(manager, &prim.name("revoked"), short_ttl(3));
        holds.push((prim, handle.acquire().await.unwrap()));
    }
    let keys = raw_client(etcd)
        .await
        .get(
            fx.namespace.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let lease = keys.kvs()[0].lease();
    assert!(
        keys.kvs().iter().all(|kv| kv.lease() == lease),
        "one session"
    );
    raw_client(etcd).await.lease_revoke(lease).await.unwrap();
    for (prim, held) in holds {
        timeout(Duration::from_secs(3), held.lost())
            .await
            .unwrap_or_else(|_| panic!("{prim:?}: never heard of the revoke"));
        assert!(!held.is_held(), "{prim:?}");
        let err = held.release().await.expect_err("revoked");
        assert_eq!(err.code(), ErrorCode::Expired, "{prim:?}: {err}");
    }
    for_each_prim(|prim| async move {
        let rival = prim
            .rival()
            .handle(rivals, &prim.name("revoked"), short_ttl(3));
        let taken = rival.try_acquire().await.unwrap();
        taken
            .unwrap_or_else(|| panic!("{prim:?}: busy"))
            .release()
            .await
            .unwrap();
    })
    .await;
    assert!(raw_keys(etcd, &fx.namespace).await.is_empty());
}
