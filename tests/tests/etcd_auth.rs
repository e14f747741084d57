//! etcd with authentication on and auth tokens that expire every 2 s
//! (`--auth-token-ttl 2`): a user whose role may read and write only its
//! manager's namespace locks, waits, renews and lists there across many token
//! lifetimes, and gets `PermissionDenied` (not a panic, not a hang) outside it.

mod support;

use std::time::Duration;

use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};
use distlock_tests::{etcdctl_async, Etcd, EtcdSettings};
use support::init_tracing;
use tokio::time::{sleep, timeout, Instant};

const ROOT_PASSWORD: &str = "root-pw";
const APP_PASSWORD: &str = "app-pw";
/// Longer than `--auth-token-ttl 2`: a token idle this long has expired.
const PAST_TOKEN_TTL: Duration = Duration::from_millis(3_000);
/// Bound on every single call in these tests: an auth failure must surface as
/// an error, not a hang.
const CALL_BOUND: Duration = Duration::from_secs(15);

/// Runs `etcdctl` (as root once auth is on) and panics with its output on failure.
async fn etcdctl(etcd: &Etcd, root: bool, args: &[&str]) {
    let mut cmd = etcdctl_async(&etcd.endpoints());
    if root {
        cmd.arg(format!("--user=root:{ROOT_PASSWORD}"));
    }
    let out = cmd.args(args).output().await.expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An etcd whose auth tokens live 2 s, with auth on, a `root` user and a user
/// `app` whose role grants read-write on `{ns}/` only, plus `read_only`
/// prefixes it may read but not write.
async fn etcd_with_auth(ns: &str, read_only: &[&str]) -> Etcd {
    let etcd = Etcd::start_with(EtcdSettings::default().arg("--auth-token-ttl").arg("2")).await;
    let root = format!("root:{ROOT_PASSWORD}");
    let app = format!("app:{APP_PASSWORD}");
    etcdctl(&etcd, false, &["user", "add", &root, "--interactive=false"]).await;
    etcdctl(&etcd, false, &["role", "add", "app"]).await;
    let prefix = format!("{ns}/");
    etcdctl(
        &etcd,
        false,
        &[
            "role",
            "grant-permission",
            "app",
            "--prefix=true",
            "readwrite",
            &prefix,
        ],
    )
    .await;
    for other in read_only {
        let other = format!("{other}/");
        etcdctl(
            &etcd,
            false,
            &[
                "role",
                "grant-permission",
                "app",
                "--prefix=true",
                "read",
                &other,
            ],
        )
        .await;
    }
    etcdctl(&etcd, false, &["user", "add", &app, "--interactive=false"]).await;
    etcdctl(&etcd, false, &["user", "grant-role", "app", "app"]).await;
    etcdctl(&etcd, false, &["auth", "enable"]).await;
    etcd
}

fn config(etcd: &Etcd, user: &str, password: &str) -> EtcdConfig {
    EtcdConfig::new(etcd.endpoints())
        .credentials(user, password)
        .request_timeout(Duration::from_secs(2))
}

async fn connect_as(etcd: &Etcd, user: &str, password: &str, ns: &str) -> LockManager {
    timeout(
        CALL_BOUND,
        LockManager::connect(config(etcd, user, password), ns),
    )
    .await
    .expect("connect hung")
    .unwrap_or_else(|e| panic!("{user} cannot connect to {ns}: {e:?}"))
}

/// Two managers of the restricted user hand a lock back and forth, renew it
/// and list it, with a pause longer than the token TTL before every step so
/// that each step starts with an expired token: unary requests, lease
/// keep-alives and the shared watch stream all have to re-authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_user_locks_renews_and_lists_across_token_expiry() {
    init_tracing();
    let ns = distlock_tests::unique_namespace("auth");
    let etcd = etcd_with_auth(&ns, &[]).await;
    let a = connect_as(&etcd, "app", APP_PASSWORD, &ns).await;
    let b = connect_as(&etcd, "app", APP_PASSWORD, &ns).await;
    let opts = LockOptions::default();
    let lock_a = a.new_lock("job", opts.clone()).unwrap();
    let started = Instant::now();

    for round in 0..3 {
        sleep(PAST_TOKEN_TTL).await;
        let held = timeout(CALL_BOUND, lock_a.lock())
            .await
            .expect("lock hung")
            .unwrap_or_else(|e| panic!("round {round}: lock after token expiry: {e:?}"));

        // B queues behind A: its wait is a watch on the shared stream.
        let waiter = {
            let lock_b = b.new_lock("job", opts.clone()).unwrap();
            tokio::spawn(async move { lock_b.lock_timeout(Duration::from_secs(30)).await })
        };
        sleep(PAST_TOKEN_TTL).await;
        timeout(CALL_BOUND, held.renew())
            .await
            .expect("renew hung")
            .unwrap_or_else(|e| panic!("round {round}: renew after token expiry: {e:?}"));
        sleep(PAST_TOKEN_TTL).await;
        let listed = timeout(CALL_BOUND, a.list_locks(""))
            .await
            .expect("list hung")
            .unwrap_or_else(|e| panic!("round {round}: list after token expiry: {e:?}"));
        assert_eq!(
            listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["job"]
        );
        assert_eq!(listed[0].waiters, 1, "B waits behind A: {listed:?}");
        let info = timeout(CALL_BOUND, a.lock_info("job"))
            .await
            .expect("info hung")
            .unwrap()
            .expect("job is held");
        assert_eq!(info.fencing_token, held.fencing_token());

        // A releases after B's watch has sat through an expiry: B must hear it.
        sleep(PAST_TOKEN_TTL).await;
        let released = Instant::now();
        timeout(CALL_BOUND, held.unlock())
            .await
            .expect("unlock hung")
            .unwrap_or_else(|e| panic!("round {round}: unlock after token expiry: {e:?}"));
        let got = timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap_or_else(|_| panic!("round {round}: B never heard of the release"))
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: B's wait failed: {e:?}"));
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "round {round}: B took {:?} to take over",
            released.elapsed()
        );
        assert!(got.is_held());
        sleep(PAST_TOKEN_TTL).await;
        timeout(CALL_BOUND, got.unlock())
            .await
            .expect("unlock hung")
            .unwrap();
    }
    assert!(
        started.elapsed() > Duration::from_secs(10),
        "spanned several token lifetimes"
    );
    // Each wait costs a few watch messages (create, cancel, re-creates after
    // an expired token, progress requests), not a loop of refused creates.
    let watch_messages = etcd
        .metric("grpc_server_msg_received_total", &["grpc_method=\"Watch\""])
        .await;
    assert!(
        (1.0..200.0).contains(&watch_messages),
        "etcd received {watch_messages} watch messages for 3 hand-offs"
    );
    timeout(CALL_BOUND, a.close()).await.expect("close hung");
    timeout(CALL_BOUND, b.close()).await.expect("close hung");
}

/// A held lock with auto-renew whose renewals are each more than a token TTL
/// apart stays held: keep-alives re-authenticate too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_renewal_survives_token_expiry() {
    init_tracing();
    let ns = distlock_tests::unique_namespace("auth");
    let etcd = etcd_with_auth(&ns, &[]).await;
    let manager = connect_as(&etcd, "app", APP_PASSWORD, &ns).await;
    let opts = LockOptions::default()
        .ttl(Duration::from_secs(5))
        .renew_interval(Duration::from_millis(2_500));
    let guard = timeout(CALL_BOUND, manager.new_lock("held", opts).unwrap().lock())
        .await
        .expect("lock hung")
        .unwrap();
    // Four TTLs of the lease, a dozen token lifetimes.
    tokio::select! {
        _ = guard.lost() => panic!("the lock was lost while its renewals re-authenticated"),
        _ = sleep(Duration::from_secs(20)) => {}
    }
    assert!(guard.is_held());
    // Still ours on the server: a second manager finds it busy.
    let other = connect_as(&etcd, "app", APP_PASSWORD, &ns).await;
    let busy = timeout(
        CALL_BOUND,
        other
            .new_lock("held", LockOptions::default())
            .unwrap()
            .try_lock(),
    )
    .await
    .expect("try_lock hung")
    .unwrap();
    assert!(busy.is_none(), "the renewed lock is still held on etcd");
    timeout(CALL_BOUND, guard.unlock())
        .await
        .expect("unlock hung")
        .unwrap();
    timeout(CALL_BOUND, manager.close())
        .await
        .expect("close hung");
    timeout(CALL_BOUND, other.close())
        .await
        .expect("close hung");
}

/// Outside its prefix the user gets typed errors: a namespace it may only
/// read cannot be locked or force-unlocked; one it may not read cannot even
/// be connected to; a wrong password is refused at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_its_prefix_the_user_gets_permission_denied() {
    init_tracing();
    let ns = distlock_tests::unique_namespace("auth");
    let readable = distlock_tests::unique_namespace("auth-ro");
    let forbidden = distlock_tests::unique_namespace("auth-no");
    let etcd = etcd_with_auth(&ns, &[&readable]).await;

    // root holds a lock in the namespace the app may only read.
    let root = connect_as(&etcd, "root", ROOT_PASSWORD, &readable).await;
    let held = root
        .new_lock("theirs", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();

    let app = connect_as(&etcd, "app", APP_PASSWORD, &readable).await;
    // Reading works...
    let info = timeout(CALL_BOUND, app.lock_info("theirs"))
        .await
        .expect("info hung")
        .unwrap()
        .expect("held by root");
    assert_eq!(info.fencing_token, held.fencing_token());
    // ...writing is refused, once and for all (no retries until a timeout).
    let lock = app
        .new_lock("mine", LockOptions::default().max_retries(0))
        .unwrap();
    let err = timeout(CALL_BOUND, lock.lock())
        .await
        .expect("lock outside the prefix hung")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err:?}");
    let err = timeout(CALL_BOUND, app.force_unlock("theirs"))
        .await
        .expect("force_unlock outside the prefix hung")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err:?}");
    assert!(held.is_held(), "the refused force-unlock did nothing");
    // Past a token lifetime the answer is the same (not an auth-token error).
    sleep(PAST_TOKEN_TTL).await;
    let err = timeout(CALL_BOUND, lock.try_lock())
        .await
        .expect("try_lock outside the prefix hung")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err:?}");

    // A namespace it cannot read: refused at connect.
    let err = timeout(
        CALL_BOUND,
        LockManager::connect(config(&etcd, "app", APP_PASSWORD), &forbidden),
    )
    .await
    .expect("connect hung")
    .map(drop)
    .expect_err("connect to a forbidden namespace succeeded");
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err:?}");

    // A wrong password: refused at connect.
    let err = timeout(
        CALL_BOUND,
        LockManager::connect(config(&etcd, "app", "wrong"), &ns),
    )
    .await
    .expect("connect hung")
    .map(drop)
    .expect_err("connect with a wrong password succeeded");
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err:?}");

    timeout(CALL_BOUND, held.unlock())
        .await
        .expect("unlock hung")
        .unwrap();
    timeout(CALL_BOUND, root.close()).await.expect("close hung");
    timeout(CALL_BOUND, app.close()).await.expect("close hung");
}

/// The user's password changes while one of its managers waits (etcd drops
/// the user's tokens): once the lock is released, the waiter's next request
/// cannot re-authenticate and the wait ends with `PermissionDenied` instead of
/// retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_ends_a_wait_with_permission_denied() {
    init_tracing();
    let ns = distlock_tests::unique_namespace("auth");
    let etcd = etcd_with_auth(&ns, &[]).await;
    let root = connect_as(&etcd, "root", ROOT_PASSWORD, &ns).await;
    let app = connect_as(&etcd, "app", APP_PASSWORD, &ns).await;
    let held = root
        .new_lock("job", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter = {
        let lock = app.new_lock("job", LockOptions::default()).unwrap();
        tokio::spawn(async move { lock.lock_timeout(Duration::from_secs(60)).await })
    };
    let deadline = Instant::now() + CALL_BOUND;
    while root.lock_info("job").await.unwrap().unwrap().waiters == 0 {
        assert!(Instant::now() < deadline, "the app never queued");
        sleep(Duration::from_millis(20)).await;
    }

    let mut passwd = etcdctl_async(&etcd.endpoints());
    passwd
        .arg(format!("--user=root:{ROOT_PASSWORD}"))
        .args(["user", "passwd", "app", "--interactive=false"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = passwd.spawn().expect("run etcdctl user passwd");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"changed-pw\n").await.unwrap();
    }
    assert!(child.wait().await.unwrap().success(), "passwd failed");

    timeout(CALL_BOUND, held.unlock())
        .await
        .expect("unlock hung")
        .unwrap();
    let released = Instant::now();
    let result = timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter hung after its password changed")
        .unwrap();
    let err = result
        .map(drop)
        .expect_err("took the lock with a stale password");
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err:?}");
    assert!(
        released.elapsed() < Duration::from_secs(10),
        "took {:?}",
        released.elapsed()
    );
    timeout(CALL_BOUND, root.close()).await.expect("close hung");
}

/// A manager on a client built without token refresh (`LockManager::new`
/// with `ConnectOptions::with_user` only): once its token expires, calls fail
/// with a typed error instead of retrying "invalid auth token" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_refreshes_fails_instead_of_hanging() {
    init_tracing();
    let ns = distlock_tests::unique_namespace("auth");
    let etcd = etcd_with_auth(&ns, &[]).await;
    let options = etcd_client::ConnectOptions::new().with_user("app", APP_PASSWORD);
    let client = etcd_client::Client::connect(etcd.endpoints(), Some(options))
        .await
        .unwrap();
    let manager = timeout(CALL_BOUND, LockManager::new(client, &ns))
        .await
        .expect("new hung")
        .unwrap();
    let guard = timeout(
        CALL_BOUND,
        manager
            .new_lock("job", LockOptions::default())
            .unwrap()
            .lock(),
    )
    .await
    .expect("lock hung")
    .unwrap();
    sleep(PAST_TOKEN_TTL).await;
    let err = timeout(CALL_BOUND, guard.unlock())
        .await
        .expect("unlock retried an expired token forever")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend, "{err:?}");
    assert!(format!("{err:?}").contains("invalid auth token"), "{err:?}");
}
