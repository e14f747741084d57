//! Leader election (issue #20), on a real etcd (`etcd::`) and in memory
//! (`memory::`), plus what only etcd can show: a cut-off leader, a watch
//! break across a compaction, and interoperation with `etcdctl elect`.

mod support;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, EtcdConfig, Leader, LockManager, LockOptions};
use distlock_tests::{etcdctl_async, Etcd, TcpProxy};
use support::{
    connect, init_tracing, on_both_backends, raw_client, short_ttl, Fixture, OverlapDetector,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    one_leader_at_a_time,
    a_resign_hands_over_in_campaign_order,
    observers_see_every_change_once,
    a_leader_that_stops_renewing_hears_it_before_the_next_leads,
    run_while_leader_cancels_the_work_on_loss_and_resigns_after,
    bad_values_and_names_are_typed_errors,
    a_campaign_never_leads_with_a_token_other_than_the_one_seen,
);

/// 3 managers × 3 campaigners × 3 terms: never two leaders' sections at once,
/// tokens growing from one leader to the next.
async fn one_leader_at_a_time(fx: &Fixture) {
    let detector = OverlapDetector::default();
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for m in 0..3 {
        let manager = fx.another().await;
        for c in 0..3 {
            let (manager, detector, tokens) = (manager.clone(), detector.clone(), tokens.clone());
            tasks.push(tokio::spawn(async move {
                let election = manager.new_election("one", LockOptions::default()).unwrap();
                for term in 0..3 {
                    let leading = election.campaign(format!("{m}.{c}.{term}")).await.unwrap();
                    {
                        let _inside = detector.enter();
                        tokens.lock().unwrap().push(leading.fencing_token());
                        sleep(Duration::from_millis(5)).await;
                    }
                    leading.resign().await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
    assert_eq!(detector.entries(), 27);
    assert_eq!(detector.most_at_once(), 1, "two leaders at once");
    let tokens = tokens.lock().unwrap().clone();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

async fn wait_candidates(fx: &Fixture, observer: &LockManager, name: &str, n: usize) {
    // A waiting candidate's key is in the election's queue: count them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let prefix = distlock::layout::Keyspace::new(&fx.namespace).election(name);
    loop {
        let count = match fx.raw_keys().await {
            Some(keys) => keys.iter().filter(|k| k.starts_with(&prefix)).count(),
            None => {
                // In memory: the leader plus the waiters are seen by trying.
                let _ = observer;
                n
            }
        };
        if count == n {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never had {n} candidates");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Candidates lead in the order they campaigned; each resign hands over at
/// once to the next.
async fn a_resign_hands_over_in_campaign_order(fx: &Fixture) {
    let first = fx
        .manager()
        .new_election("order", LockOptions::default())
        .unwrap();
    let leading = first.campaign("0").await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 1..=3 {
        let manager = fx.another().await;
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let e = manager
                .new_election("order", LockOptions::default())
                .unwrap();
            let leading = e.campaign(i.to_string()).await.unwrap();
            order.lock().unwrap().push(i);
            sleep(Duration::from_millis(20)).await;
            leading.resign().await.unwrap();
        }));
        wait_candidates(fx, &fx.manager(), "order", i + 1).await;
        sleep(Duration::from_millis(50)).await;
    }
    let resigned = Instant::now();
    leading.resign().await.unwrap();
    for t in tasks {
        timeout(Duration::from_secs(10), t).await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
    assert!(resigned.elapsed() < Duration::from_secs(3));
}

/// Two observers on one manager (one shared watch) and one on another see
/// exactly: nobody, A, A's new value, B, nobody.
async fn observers_see_every_change_once(fx: &Fixture) {
    let (a, b) = (fx.manager(), fx.another().await);
    let watcher = fx.another().await;
    let election = |m: &LockManager| m.new_election("watched", LockOptions::default()).unwrap();
    let (ea, eb, ew) = (election(&a), election(&b), election(&watcher));
    let mut observers = [ew.observe(), ew.observe(), ea.observe()];
    for o in observers.iter_mut() {
        assert_eq!(next(o).await, None, "nobody leads yet");
    }
    let la = ea.campaign("a").await.unwrap();
    la.proclaim("a2").await.unwrap();
    let waiting_b = tokio::spawn(async move { eb.campaign("b").await.unwrap() });
    sleep(Duration::from_millis(200)).await;
    la.resign().await.unwrap();
    let lb = timeout(Duration::from_secs(5), waiting_b)
        .await
        .unwrap()
        .unwrap();
    let b_token = lb.fencing_token();
    lb.resign().await.unwrap();
    for o in observers.iter_mut() {
        let seen = [next(o).await, next(o).await, next(o).await, next(o).await];
        let values: Vec<Option<Vec<u8>>> = seen
            .iter()
            .map(|l| l.as_ref().map(|l| l.value.clone()))
            .collect();
        assert_eq!(
            values,
            [
                Some(b"a".to_vec()),
                Some(b"a2".to_vec()),
                Some(b"b".to_vec()),
                None
            ]
        );
        assert_eq!(seen[2].as_ref().unwrap().fencing_token, b_token);
        // Nothing more: no change that did not happen.
        assert!(timeout(Duration::from_millis(300), o.next()).await.is_err());
    }
}

async fn next(changes: &mut distlock::LeaderChanges) -> Option<Leader> {
    timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("no change came")
        .expect("the stream ended")
        .expect("the watch failed")
}

/// A leader whose process stops renewing hears `lost()` on its own clock
/// before the next candidate leads (etcd expires the lease only at its TTL).
async fn a_leader_that_stops_renewing_hears_it_before_the_next_leads(fx: &Fixture) {
    let faults = Faults::new();
    let cut = fx.another().await.with_faults(&faults);
    let opts = short_ttl(2);
    let leading = cut
        .new_election("cut", opts.clone())
        .unwrap()
        .campaign("old")
        .await
        .unwrap();
    let next = fx.another().await.new_election("cut", opts).unwrap();
    let waiting = tokio::spawn(async move {
        let leading = next.campaign("new").await.unwrap();
        (Instant::now(), leading)
    });
    sleep(Duration::from_millis(200)).await;
    faults.always(Op::KeepAlive, Fault::Fail);
    faults.always(Op::Revoke, Fault::Fail);
    timeout(Duration::from_secs(5), leading.lost())
        .await
        .expect("the cut-off leader never heard");
    let heard = Instant::now();
    let (led, new) = timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(heard <= led, "the next leader led before the old one heard");
    assert!(!leading.is_held());
    new.resign().await.unwrap();
    faults.heal();
}

/// The chaos run's seed 4 (docs/chaos.md): a campaign's first enqueue
/// applies but its answer is lost, and the candidate's lease goes (its
/// renewals fail past the TTL) before the retry lands. Meanwhile its key
/// led: an observer saw its value lead with that key's token. The campaign
/// must not then lead with a fresh key under the same value, a second token
/// for what observers took for one leadership: it fails with `Expired`, as
/// when a waiting candidate's key vanishes, or leads with the token seen.
async fn a_campaign_never_leads_with_a_token_other_than_the_one_seen(fx: &Fixture) {
    let faults = Faults::new();
    let cut = fx.another().await.with_faults(&faults);
    let election = cut.new_election("unheard", short_ttl(1)).unwrap();
    let watcher = fx.another().await;
    let watched = watcher
        .new_election("unheard", LockOptions::default())
        .unwrap();
    let mut changes = watched.observe();
    assert_eq!(next(&mut changes).await, None, "nobody leads yet");
    faults.always(Op::KeepAlive, Fault::Fail);
    faults.inject(Op::Enqueue, Fault::Lose, 1);
    // The retry reaches the store after the lease is gone.
    faults.inject(Op::Enqueue, Fault::Slow(Duration::from_millis(2500)), 1);
    let campaign = timeout(Duration::from_secs(10), election.campaign("stalled"))
        .await
        .expect("the campaign is bounded");
    let seen = next(&mut changes).await.expect("its first key led");
    assert_eq!(seen.value, b"stalled");
    match campaign {
        Ok(leading) => {
            assert_eq!(
                leading.fencing_token(),
                seen.fencing_token,
                "led with another token than observers saw it lead with"
            );
            leading.resign().await.unwrap();
        }
        Err(err) => assert_eq!(err.code(), ErrorCode::Expired, "{err}"),
    }
    faults.heal();
    // Its key went with its lease: nobody leads now.
    let deadline = Instant::now() + Duration::from_secs(5);
    while watched.leader().await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "a key of the failed campaign leads"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

async fn run_while_leader_cancels_the_work_on_loss_and_resigns_after(fx: &Fixture) {
    let election = fx
        .manager()
        .new_election("run", LockOptions::default())
        .unwrap();
    let token = election
        .run_while_leader("me", |leading| async move { leading.fencing_token() })
        .await
        .unwrap();
    assert!(token > 0);
    assert!(election.leader().await.unwrap().is_none(), "not resigned");

    let faults = Faults::new();
    let cut = fx.another().await.with_faults(&faults);
    let election = cut.new_election("run-lost", short_ttl(2)).unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let seen = reached.clone();
    let faulting = faults.clone();
    let err = timeout(
        Duration::from_secs(10),
        election.run_while_leader("me", |_| async move {
            faulting.always(Op::KeepAlive, Fault::Fail);
            sleep(Duration::from_secs(30)).await;
            seen.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .await
    .expect("the work was not cancelled on loss")
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Expired, "{err}");
    assert_eq!(reached.load(Ordering::SeqCst), 0);
    faults.heal();
}

async fn bad_values_and_names_are_typed_errors(fx: &Fixture) {
    let m = fx.manager();
    assert_eq!(
        m.new_election("", LockOptions::default())
            .unwrap_err()
            .code(),
        ErrorCode::InvalidKey
    );
    let e = m.new_election("bad", LockOptions::default()).unwrap();
    for value in [Vec::new(), vec![b'x'; distlock::MAX_VALUE_LEN + 1]] {
        let err = e.try_campaign(value).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidOptions, "{err}");
    }
    let leading = e.campaign(vec![0xff, 0x00, 0xfe]).await.unwrap(); // any bytes
    assert_eq!(leading.value(), [0xff, 0x00, 0xfe]);
    assert_eq!(
        leading.proclaim(Vec::new()).await.unwrap_err().code(),
        ErrorCode::InvalidOptions
    );
    let second = e.try_campaign("again").await.unwrap_err();
    assert_eq!(second.code(), ErrorCode::AlreadyHeld, "{second}");
}

/// An observer whose watch breaks (a blackholed proxy) while the leader
/// changes and etcd compacts its history sees the new leader once when the
/// network heals, and nothing that did not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_resumes_across_a_break_and_a_compaction() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let proxy = TcpProxy::start_for(&etcd.endpoints()[0]).await;
    let config = EtcdConfig::new([proxy.endpoint()]).request_timeout(Duration::from_millis(500));
    let behind = LockManager::connect(config, &ns).await.unwrap();
    let direct = connect(&etcd, &ns).await;
    let mut changes = behind
        .new_election("e", LockOptions::default())
        .unwrap()
        .observe();
    assert_eq!(next(&mut changes).await, None);
    let election = direct.new_election("e", LockOptions::default()).unwrap();
    let a = election.campaign("a").await.unwrap();
    assert_eq!(next(&mut changes).await.unwrap().value, b"a");

    proxy.blackhole();
    a.resign().await.unwrap();
    let b = election.campaign("b").await.unwrap();
    let mut raw = raw_client(&etcd).await;
    let now = raw
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(now, None).await.unwrap();
    sleep(Duration::from_millis(1500)).await; // the observer's watch is deemed broken
    proxy.restore();

    // Either a failure item (the watch broke) then b, or b: never "nobody".
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match timeout(Duration::from_secs(2), changes.next()).await {
            Ok(Some(Ok(leader))) => {
                seen.push(leader.map(|l| l.value));
                if seen.last() == Some(&Some(b"b".to_vec())) {
                    break;
                }
            }
            Ok(Some(Err(err))) => {
                // The code is said once: "backend error: observing the
                // election: ...", not the inner error's code again.
                let text = err.to_string();
                assert_eq!(text.matches(&err.code().to_string()).count(), 1, "{text}");
            }
            _ => continue,
        }
    }
    assert_eq!(seen, [Some(b"b".to_vec())], "changes after the heal");
    assert!(
        timeout(Duration::from_millis(500), changes.next())
            .await
            .is_err(),
        "a change that did not happen"
    );
    b.resign().await.unwrap();
}

/// distlock and `etcdctl elect` are one election, both ways, on etcd's layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_and_distlock_are_one_election() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let manager = connect(&etcd, &ns).await;
    let election = manager
        .new_election("sched", LockOptions::default())
        .unwrap();
    let etcd_name = format!("{ns}/elections/sched");

    // distlock leads: etcdctl elect -l shows its value.
    let leading = election.campaign("distlock-a").await.unwrap();
    let out = etcdctl_async(&etcd.endpoints())
        .args(["elect", "-l", &etcd_name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(out.stdout.unwrap()).lines();
    let mut shown = Vec::new();
    while let Ok(Ok(Some(line))) = timeout(Duration::from_secs(3), lines.next_line()).await {
        shown.push(line);
        if shown.iter().any(|l| l == "distlock-a") {
            break;
        }
    }
    assert!(
        shown.iter().any(|l| l == "distlock-a"),
        "etcdctl saw {shown:?}"
    );
    leading.resign().await.unwrap();

    // etcdctl leads: distlock observes its value and waits behind it.
    let mut ctl = etcdctl_async(&etcd.endpoints())
        .args(["elect", &etcd_name, "from-etcdctl"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(ctl.stdout.take().unwrap()).lines();
    // etcdctl prints the key it won with, then the value.
    let mut printed = Vec::new();
    while let Ok(Ok(Some(line))) = timeout(Duration::from_secs(5), lines.next_line()).await {
        printed.push(line);
        if printed.iter().any(|l| l == "from-etcdctl") {
            break;
        }
    }
    assert!(
        printed.iter().any(|l| l == "from-etcdctl"),
        "etcdctl printed {printed:?}"
    );
    assert!(
        printed[0].starts_with(&etcd_name),
        "the key is under the election: {printed:?}"
    );
    let leader = election.leader().await.unwrap().expect("etcdctl leads");
    assert_eq!(leader.value, b"from-etcdctl");
    let mut changes = election.observe();
    assert_eq!(next(&mut changes).await.unwrap().value, b"from-etcdctl");
    assert!(election.try_campaign("distlock-b").await.unwrap().is_none());
    ctl.kill().await.unwrap(); // its lease runs out (etcdctl's TTL: 60 s) unless revoked
    let _ = ctl.wait().await;
}
