//! The `distlock` binary, run as a process against a real etcd.
//!
//! Every test starts its own throwaway etcd (the harness stops it on drop,
//! also on panic) and uses a fresh namespace; every wait is bounded.
//! `elect` and `leader` are in `elect.rs`; the helpers both use in `support`.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::assert::OutputAssertExt;
use distlock::{LockGuard, LockManager, LockOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::time::{sleep, timeout};

use support::{
    expect_line, gone_within, json, most_at_once, pid_alive, running, stderr, stdout, until,
    wait_pidfile, Env, KillOnDrop, STEP,
};

async fn hold(manager: &LockManager, name: &str) -> (distlock::Lock, LockGuard) {
    let lock = manager.new_lock(name, LockOptions::default()).unwrap();
    let guard = timeout(STEP, lock.lock()).await.unwrap().unwrap();
    (lock, guard)
}

/// Waits (bounded) until `name` has `n` waiters behind its holder.
async fn wait_waiters(manager: &LockManager, name: &str, n: usize) {
    let deadline = Instant::now() + STEP;
    while manager.lock_info(name).await.unwrap().map(|i| i.waiters) != Some(n) {
        assert!(Instant::now() < deadline, "{name} never had {n} waiters");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_a_table_and_json_with_the_lock_info_fields() {
    let env = Env::start().await;
    let a = env.manager().await;
    let b = env.manager().await;
    let (lock1, order) = hold(&a, "order:1").await;
    let (_lock2, job) = hold(&a, "jobs/nightly").await;
    let queued = b.new_lock("order:1", LockOptions::default()).unwrap();
    let waiter = tokio::spawn(async move { queued.lock_timeout(STEP).await.map(drop) });
    wait_waiters(&a, "order:1", 1).await;

    let out = env.run(&["list", "--json"]).await;
    out.clone().assert().success();
    let all = json(&out);
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 2, "{all:?}");
    let (nightly, first) = (&all[0], &all[1]); // ordered by name
    assert_eq!(nightly["name"], "jobs/nightly");
    assert_eq!(nightly["fencing_token"], job.fencing_token());
    assert_eq!(nightly["waiters"], 0);
    assert!(nightly["key"]
        .as_str()
        .unwrap()
        .contains("/locks/jobs%2Fnightly/"));
    assert_eq!(first["name"], "order:1");
    assert_eq!(first["owner"], lock1.owner());
    assert_eq!(first["fencing_token"], order.fencing_token());
    assert_eq!(first["waiters"], 1);
    assert_eq!(
        (&first["kind"], &first["readers"]),
        (&json!("lock"), &json!(0))
    );
    for field in ["create_time", "expire_time"] {
        let t = first[field].as_str().expect(field);
        humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{field} {t}: {e}"));
    }
    let expires = humantime::parse_rfc3339(first["expire_time"].as_str().unwrap()).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left <= Duration::from_secs(30) && left > Duration::from_secs(15),
        "{left:?}"
    );

    let out = env.run(&["list", "order:"]).await;
    out.clone().assert().success();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for column in [
        "NAME",
        "KIND",
        "HOLDERS",
        "OWNER",
        "TOKEN",
        "HELD FOR",
        "EXPIRES IN",
        "WAITERS",
    ] {
        assert!(lines[0].contains(column), "{text}");
    }
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..3], ["order:1", "lock", "1"], "{text}");
    assert_eq!(row[3], lock1.owner());
    assert_eq!(row[4], order.fencing_token().to_string());
    assert_eq!(row.last(), Some(&"1"), "{text}");

    order.unlock().await.unwrap();
    timeout(STEP, waiter).await.unwrap().unwrap().unwrap();
    let out = env.run(&["-n", "/nothing-here", "list"]).await;
    out.clone().assert().success();
    assert!(stdout(&out).contains("no locks held"), "{}", stdout(&out));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_shows_the_holder_and_its_waiters_owners() {
    let env = Env::start().await;
    let (a, b, c) = (
        env.manager().await,
        env.manager().await,
        env.manager().await,
    );
    let (_lock, guard) = hold(&a, "report").await;
    let lock_b = b.new_lock("report", LockOptions::default()).unwrap();
    let lock_c = c.new_lock("report", LockOptions::default()).unwrap();
    let (owner_b, owner_c) = (lock_b.owner().to_owned(), lock_c.owner().to_owned());
    let wait_b = tokio::spawn(async move { lock_b.lock_timeout(STEP).await.map(drop) });
    wait_waiters(&a, "report", 1).await;
    let wait_c = tokio::spawn(async move { lock_c.lock_timeout(STEP).await.map(drop) });
    wait_waiters(&a, "report", 2).await;

    let out = env.run(&["info", "report", "--json"]).await;
    out.clone().assert().success();
    let info = json(&out);
    assert_eq!(info["name"], "report");
    assert_eq!(info["fencing_token"], guard.fencing_token());
    assert_eq!(info["waiters"], 2);
    let waiting: Vec<&str> = info["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["owner"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, [owner_b.as_str(), owner_c.as_str()], "queue order");

    let out = env.run(&["info", "report"]).await;
    out.clone().assert().success();
    let text = stdout(&out);
    assert!(
        text.contains(&format!("token:       {}", guard.fencing_token())),
        "{text}"
    );
    let pos_b = text.find(&format!("1. {owner_b}")).expect(&text);
    let pos_c = text.find(&format!("2. {owner_c}")).expect(&text);
    assert!(pos_b < pos_c);

    let out = env.run(&["info", "free", "--json"]).await;
    out.clone().assert().code(1);
    assert_eq!(json(&out), Value::Null);
    env.run(&["info", "free"]).await.assert().code(1);

    guard.unlock().await.unwrap();
    timeout(STEP, wait_b).await.unwrap().unwrap().unwrap();
    timeout(STEP, wait_c).await.unwrap().unwrap().unwrap();
    for m in [a, b, c] {
        m.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_unlock_asks_for_yes_off_a_terminal_and_removes_only_the_holder() {
    let env = Env::start().await;
    let (a, b) = (env.manager().await, env.manager().await);
    let (_stuck, guard) = hold(&a, "stuck").await;
    let (_other, other) = hold(&a, "other").await;
    let queued = b.new_lock("stuck", LockOptions::default()).unwrap();
    let next = tokio::spawn(async move { queued.lock_timeout(STEP).await });
    wait_waiters(&a, "stuck", 1).await;

    // stdin is not a terminal: without --yes nothing happens.
    let out = env.run(&["force-unlock", "stuck"]).await;
    out.clone().assert().code(2);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(guard.is_held());
    assert_eq!(
        a.lock_info("stuck").await.unwrap().unwrap().fencing_token,
        guard.fencing_token()
    );

    let out = env.run(&["force-unlock", "stuck", "--yes"]).await;
    out.clone().assert().success();
    assert!(
        stdout(&out).contains(&format!("token {}", guard.fencing_token())),
        "{}",
        stdout(&out)
    );
    timeout(STEP, guard.lost())
        .await
        .expect("the holder hears it lost the lock");
    let next = timeout(STEP, next)
        .await
        .unwrap()
        .unwrap()
        .expect("the waiter proceeds");
    assert!(next.fencing_token() > guard.fencing_token());
    assert!(other.is_held(), "the holder's other lock stays held");

    next.unlock().await.unwrap();
    env.run(&["force-unlock", "stuck", "-y"])
        .await
        .assert()
        .code(1);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_acquisitions_waits_releases_hand_offs_and_force_unlocks() {
    let env = Env::start().await;
    let (a, b, c) = (
        env.manager().await,
        env.manager().await,
        env.manager().await,
    );
    let (_held, before) = hold(&a, "w-before").await;

    let mut watch = env.spawn(&["watch", "w-"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    expect_line(&mut lines, &mut seen, &["watching", "/locks/w-*"]).await;
    let token = before.fencing_token().to_string();
    expect_line(
        &mut lines,
        &mut seen,
        &["held", "w-before", &format!("token={token}")],
    )
    .await;

    // Outside the prefix: never shown.
    let (_x, outside) = hold(&a, "x-other").await;
    let (lock_a, first) = hold(&a, "w-job").await;
    expect_line(
        &mut lines,
        &mut seen,
        &[
            "acquired",
            "w-job",
            lock_a.owner(),
            &format!("token={}", first.fencing_token()),
        ],
    )
    .await;
    let lock_b = b.new_lock("w-job", LockOptions::default()).unwrap();
    let owner_b = lock_b.owner().to_owned();
    let second = tokio::spawn(async move {
        let g = lock_b.lock_timeout(STEP).await;
        (lock_b, g)
    });
    expect_line(
        &mut lines,
        &mut seen,
        &["waiting", "w-job", &owner_b, "1 ahead"],
    )
    .await;

    first.unlock().await.unwrap();
    expect_line(
        &mut lines,
        &mut seen,
        &["released", "w-job", lock_a.owner()],
    )
    .await;
    let (_lock_b, second) = timeout(STEP, second).await.unwrap().unwrap();
    let second = second.unwrap();
    let handed = expect_line(&mut lines, &mut seen, &["handed off", "w-job", &owner_b]).await;
    assert!(
        handed.contains(&format!("token={}", second.fencing_token())),
        "{handed}"
    );

    env.run(&["force-unlock", "w-job", "--yes"])
        .await
        .assert()
        .success();
    expect_line(
        &mut lines,
        &mut seen,
        &["force-unlocked", "w-job", &owner_b],
    )
    .await;
    timeout(STEP, second.lost()).await.unwrap();

    // A waiter that gives up, and a holder whose lease ends (its manager closes).
    let (_lock_c, held_c) = hold(&c, "w-lease").await;
    expect_line(&mut lines, &mut seen, &["acquired", "w-lease"]).await;
    let lock_b2 = b.new_lock("w-lease", LockOptions::default()).unwrap();
    let gave_up = lock_b2.lock_timeout(Duration::from_millis(300)).await;
    assert!(gave_up.is_err());
    expect_line(&mut lines, &mut seen, &["gave up", "w-lease"]).await;
    c.close().await;
    assert!(!held_c.is_held());
    expect_line(
        &mut lines,
        &mut seen,
        &["released", "w-lease", "lease gone"],
    )
    .await;

    // Ctrl-C ends the watch with status 0.
    let pid = watch.id().unwrap() as i32;
    kill(Pid::from_raw(pid), Signal::SIGINT).unwrap();
    let status = timeout(STEP, watch.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    assert!(seen.iter().all(|l| !l.contains("x-other")), "{seen:#?}");
    drop((outside, before));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_runs_the_command_under_the_lock_and_exits_with_its_status() {
    let env = Env::start().await;
    let admin = env.manager().await;
    // The command inspects its own lock with a nested distlock, then fails with 7.
    let script = r#"echo "token=$DISTLOCK_FENCING_TOKEN lock=$DISTLOCK_LOCK"; "$DISTLOCK_BIN" info deploy --json; exit 7"#;
    let out = env.run(&["hold", "deploy", "--", "sh", "-c", script]).await;
    out.clone().assert().code(7);
    let text = stdout(&out);
    let (first, rest) = text.split_once('\n').unwrap();
    let info: Value = serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(info["name"], "deploy");
    assert_eq!(
        first,
        format!("token={} lock=deploy", info["fencing_token"])
    );
    assert!(
        admin.lock_info("deploy").await.unwrap().is_none(),
        "released after the command"
    );

    // Killed by a signal: 128 + N, like a shell.
    let out = env
        .run(&["hold", "deploy", "--", "sh", "-c", "kill -9 $$"])
        .await;
    out.clone().assert().code(137);
    // Success, and the lock is the one services use: a service can take it after.
    env.run(&["hold", "deploy", "--wait", "0s", "--", "true"])
        .await
        .assert()
        .success();
    let (_l, g) = hold(&admin, "deploy").await;
    g.unlock().await.unwrap();
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_exits_75_without_running_the_command_when_busy() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let (_lock, guard) = hold(&admin, "busy").await;
    let marker = tempfile::tempdir().unwrap();
    let file = marker.path().join("ran");
    let file = file.to_str().unwrap();

    let out = env
        .run(&["hold", "busy", "--wait", "0s", "--", "touch", file])
        .await;
    out.clone().assert().code(75);
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    assert!(!Path::new(file).exists(), "the command must not run");

    let started = Instant::now();
    let out = env
        .run(&["hold", "busy", "--wait", "600ms", "--", "touch", file])
        .await;
    out.clone().assert().code(75);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(!Path::new(file).exists());
    assert!(guard.is_held());
    assert_eq!(
        admin.lock_info("busy").await.unwrap().unwrap().waiters,
        0,
        "no waiter left behind"
    );

    // Released while `hold` waits: the command runs.
    let release = tokio::spawn(async move {
        sleep(Duration::from_millis(500)).await;
        guard.unlock().await
    });
    let out = env
        .run(&["hold", "busy", "--wait", "15s", "--", "touch", file])
        .await;
    out.clone().assert().success();
    assert!(Path::new(file).exists());
    release.await.unwrap().unwrap();
    admin.close().await;
}

/// Issue #17.8: a `--wait` that ends while etcd does not answer is an
/// outage, not a busy lock: exit 69 (unavailable), not 75 (busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_exits_69_when_etcd_fails_during_the_wait() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let (_lock, guard) = hold(&admin, "outage").await;
    let proxy = distlock_tests::TcpProxy::start_for(&env.etcd.endpoints()[0]).await;
    let mut cmd = tokio::process::Command::from(env.command());
    cmd.env("DISTLOCK_ENDPOINTS", proxy.endpoint())
        .args(["--timeout", "1s", "hold", "outage", "--wait", "4s", "true"])
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let waiting = cmd.spawn().unwrap();
    wait_waiters(&admin, "outage", 1).await;
    proxy.blackhole();
    let out = timeout(STEP, waiting.wait_with_output())
        .await
        .expect("hold did not end")
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(guard.is_held());
    proxy.restore();
    guard.unlock().await.unwrap();
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_is_the_same_lock_as_etcdctl_lock() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let mut etcdctl = distlock_tests::etcdctl_async(&env.etcd.endpoints())
        .args(["lock", &format!("{}/locks/shared", env.ns), "sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("etcdctl");
    let info = env.wait_held(&admin, "shared").await;
    assert_eq!(info.owner, "", "etcdctl writes no metadata");
    let out = env.run(&["list"]).await;
    let text = stdout(&out);
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["shared", "lock", "1", "-"], "{text}");
    env.run(&["hold", "shared", "--wait", "0s", "--", "true"])
        .await
        .assert()
        .code(75);
    etcdctl.kill().await.unwrap();
    let _ = etcdctl.wait().await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_stops_the_command_when_the_lock_is_lost() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let dir = tempfile::tempdir().unwrap();

    // A command that ignores SIGTERM: SIGKILL after --grace.
    let pidfile = dir.path().join("stubborn.pid");
    let script = format!(
        "echo $$ > {}; trap '' TERM; exec sleep 60",
        pidfile.display()
    );
    let mut stubborn = env.spawn(&[
        "hold", "stubborn", "--grace", "1s", "--", "sh", "-c", &script,
    ]);
    env.wait_held(&admin, "stubborn").await;
    let pid = wait_pidfile(&pidfile).await;
    assert!(pid_alive(pid));
    assert!(admin.force_unlock("stubborn").await.unwrap());
    let started = Instant::now();
    let out = timeout(STEP, async { stubborn.wait().await })
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.code(), Some(76), "lost lock status");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(!pid_alive(pid), "the command was killed");

    // A command that obeys SIGTERM stops at once, well before --grace.
    let pidfile = dir.path().join("polite.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let polite = env.spawn(&[
        "hold", "polite", "--grace", "30s", "--", "sh", "-c", &script,
    ]);
    env.wait_held(&admin, "polite").await;
    let pid = wait_pidfile(&pidfile).await;
    assert!(admin.force_unlock("polite").await.unwrap());
    let started = Instant::now();
    let out = timeout(STEP, polite.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(76));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!pid_alive(pid));
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_passes_ctrl_c_to_the_command_and_releases() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let holder = env.spawn(&["hold", "interactive", "--", "sh", "-c", &script]);
    env.wait_held(&admin, "interactive").await;
    let child = wait_pidfile(&pidfile).await;
    // SIGINT to distlock only (not its process group): it must pass it on.
    kill(Pid::from_raw(holder.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let out = timeout(STEP, holder.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(!pid_alive(child));
    assert!(
        admin.lock_info("interactive").await.unwrap().is_none(),
        "released"
    );
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_takes_the_command_down_when_distlock_is_killed() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let mut holder = env.spawn(&["hold", "doomed", "--ttl", "2s", "--", "sh", "-c", &script]);
    env.wait_held(&admin, "doomed").await;
    let command = KillOnDrop(wait_pidfile(&pidfile).await);
    assert!(running(command.0));

    // SIGKILL, as the OOM killer would: distlock cannot stop the command itself.
    holder.start_kill().unwrap();
    let status = timeout(STEP, holder.wait()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(
        gone_within(command.0, Duration::from_secs(1)).await,
        "the command runs on after distlock was killed, while its lock lapses"
    );
    // The lock frees when its lease lapses (two seconds), and nothing runs under it.
    let lock = admin.new_lock("doomed", LockOptions::default()).unwrap();
    let next = timeout(STEP, lock.lock()).await.unwrap().unwrap();
    next.unlock().await.unwrap();
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_passes_sighup_and_sigquit_to_the_command_and_releases() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let dir = tempfile::tempdir().unwrap();
    for (signal, name, code) in [(Signal::SIGHUP, "HUP", 11), (Signal::SIGQUIT, "QUIT", 12)] {
        let pidfile = dir.path().join(name);
        // The command exits `code` on `signal` only. Its output goes to
        // /dev/null, so that distlock's pipes close when distlock exits.
        let script = format!(
            "exec >/dev/null 2>&1; echo $$ > {}; trap 'exit {code}' {name}; \
             while :; do sleep 0.05; done",
            pidfile.display()
        );
        let holder = env.spawn(&["hold", name, "--", "sh", "-c", &script]);
        env.wait_held(&admin, name).await;
        let command = KillOnDrop(wait_pidfile(&pidfile).await);
        // To distlock only (not its process group): it must pass the signal on.
        kill(Pid::from_raw(holder.id().unwrap() as i32), signal).unwrap();
        let out = timeout(STEP, holder.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{signal}: {}", stderr(&out));
        assert!(gone_within(command.0, Duration::from_secs(1)).await);
        let lock = admin.new_lock(name, LockOptions::default()).unwrap();
        let next = lock.try_lock().await.unwrap();
        next.expect("released: another manager takes it at once")
            .unlock()
            .await
            .unwrap();
    }

    // While waiting for the lock: exit 128 + N without running the command,
    // and leave the queue.
    let (_lock, guard) = hold(&admin, "queue").await;
    let marker = dir.path().join("ran");
    let marker = marker.to_str().unwrap();
    for (signal, code) in [(Signal::SIGHUP, 129), (Signal::SIGQUIT, 131)] {
        let waiter = env.spawn(&["hold", "queue", "--", "touch", marker]);
        wait_waiters(&admin, "queue", 1).await;
        kill(Pid::from_raw(waiter.id().unwrap() as i32), signal).unwrap();
        let out = timeout(STEP, waiter.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{signal}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("while waiting for the lock"),
            "{}",
            stderr(&out)
        );
        wait_waiters(&admin, "queue", 0).await;
    }
    assert!(!Path::new(marker).exists(), "the command must not run");
    guard.unlock().await.unwrap();
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_takes_the_command_with_or_without_a_double_dash() {
    let env = Env::start().await;
    // Prints its arguments, each followed by `|`.
    let print_args = r#"printf '%s|' "$@""#;
    let out = env
        .run(&[
            "hold", "plain", "sh", "-c", print_args, "sh", "a", "-b", "--wait", "x",
        ])
        .await;
    out.clone().assert().success();
    assert_eq!(stdout(&out), "a|-b|--wait|x|", "{}", stderr(&out));

    let out = env
        .run(&[
            "hold", "plain", "--", "sh", "-c", print_args, "sh", "--flag", "--wait", "x",
        ])
        .await;
    out.clone().assert().success();
    assert_eq!(stdout(&out), "--flag|--wait|x|", "{}", stderr(&out));

    // Options between NAME and CMD are distlock's, also without `--`.
    let out = env
        .run(&[
            "hold",
            "plain",
            "--wait",
            "5",
            "sh",
            "-c",
            "echo $DISTLOCK_LOCK",
        ])
        .await;
    out.clone().assert().success();
    assert_eq!(stdout(&out), "plain\n");
    // A misspelt option is an error, not a command named `--wiat`.
    let out = env.run(&["hold", "plain", "--wiat", "5", "true"]).await;
    out.clone().assert().code(2);
    assert!(stderr(&out).contains("--wait"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_takes_bare_seconds_for_wait_and_ttl() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let (_lock, guard) = hold(&admin, "busy").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ran");
    let file = file.to_str().unwrap();

    let started = Instant::now();
    let out = env
        .run(&["hold", "busy", "--wait", "0", "touch", file])
        .await;
    out.clone().assert().code(75);
    assert!(started.elapsed() < Duration::from_secs(5), "tries once");
    let started = Instant::now();
    let out = env
        .run(&["hold", "busy", "--wait", "1", "touch", file])
        .await;
    out.clone().assert().code(75);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(!Path::new(file).exists(), "the command must not run");
    guard.unlock().await.unwrap();

    // `--ttl 2`: a two-second lease (the command looks at its own lock).
    let out = env
        .run(&[
            "hold",
            "short",
            "--ttl",
            "2",
            "sh",
            "-c",
            r#""$DISTLOCK_BIN" info short --json"#,
        ])
        .await;
    out.clone().assert().success();
    let expires = json(&out)["expire_time"].as_str().unwrap().to_owned();
    let expires = humantime::parse_rfc3339(&expires).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(left <= Duration::from_secs(2), "{left:?}");

    for (args, message) in [
        (&["--wait", "soon"][..], "durations look like"),
        (&["--grace", "1.5.0"], "durations look like"),
        (&["--ttl", "2.5"], "whole seconds"),
        (&["--ttl", "0"], "whole seconds"),
    ] {
        let out = env
            .run(&[&["hold", "x"], args, &["touch", file]].concat())
            .await;
        out.clone().assert().code(2);
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(args[0]), "{args:?}: {}", stderr(&out));
    }
    assert!(!Path::new(file).exists());
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_reports_a_command_it_cannot_run_and_releases() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start().await;
    let admin = env.manager().await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = script.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["hold", "x", "--", "/nonexistent/command"],
            127,
            "distlock: cannot run /nonexistent/command: No such file or directory (os error 2)\n",
        ),
        (
            &["hold", "x", "/nonexistent/command", "--flag"],
            127,
            "distlock: cannot run /nonexistent/command: No such file or directory (os error 2)\n",
        ),
        (
            &["hold", "x", "distlock-test-no-such-command"],
            127,
            "distlock: cannot run distlock-test-no-such-command: No such file or directory (os error 2)\n",
        ),
        (
            &["hold", "x", script],
            126,
            &format!("distlock: cannot run {script}: Permission denied (os error 13)\n"),
        ),
    ];
    for (args, code, message) in cases {
        let out = env.run(args).await;
        out.clone().assert().code(*code);
        // Said once, by the helper that tried to run it; the parent only
        // passes its status on.
        assert_eq!(stderr(&out), *message, "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(
            admin.lock_info("x").await.unwrap().is_none(),
            "{args:?}: released"
        );
    }

    // The helper runs nothing when its parent is not the distlock that
    // started it (that distlock died before the death signal was set).
    let marker = dir.path().join("ran");
    let out = env
        .command()
        .args(["__exec", "1", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not running it"), "{}", stderr(&out));
    assert!(!marker.exists(), "the command must not run");
    // With the right parent it runs the command, with its arguments.
    let out = env
        .command()
        .args(["__exec", &std::process::id().to_string(), "sh", "-c"])
        .args([r#"printf '%s|' "$@""#, "sh", "--wait", "x"])
        .output()
        .unwrap();
    out.clone().assert().success();
    assert_eq!(stdout(&out), "--wait|x|");
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_unreachable_etcd_fail_clearly() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["hold", "x", "--wait", "soon", "--", "true"],
            2,
            "durations look like",
        ),
        (&["hold", "x", "--ttl", "500ms", "--", "true"], 2, "ttl"),
        (&["hold", "x"], 2, "CMD"),
        (&["info", ""], 2, "empty"),
        (&["--user", "u", "list"], 2, "--password"),
        (
            &["hold", "x", "--", "/nonexistent/command"],
            127,
            "cannot run",
        ),
        (&["frobnicate"], 2, "unrecognized subcommand"),
    ];
    for (args, code, message) in cases {
        let out = env.run(args).await;
        out.clone().assert().code(*code);
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(
        admin.lock_info("x").await.unwrap().is_none(),
        "released after 127"
    );

    // A closed port: refused at once. Status 69, the endpoint named.
    let started = Instant::now();
    for args in [
        &["list"][..],
        &["info", "a"],
        &["watch"],
        &["hold", "a", "--", "true"],
    ] {
        let out = env
            .run(
                &[
                    &["--endpoints", "http://127.0.0.1:1", "--timeout", "2s"],
                    args,
                ]
                .concat(),
            )
            .await;
        out.clone().assert().code(69);
        assert!(
            stderr(&out).contains("127.0.0.1:1"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_has_examples_and_completions_are_generated() {
    let env = Env::start().await;
    let out = env.run(&["--help"]).await;
    out.clone().assert().success();
    for text in [
        "Examples:",
        "force-unlock",
        "hold",
        "DISTLOCK_ENDPOINTS",
        "75",
    ] {
        assert!(stdout(&out).contains(text), "{text}: {}", stdout(&out));
    }
    let out = env.run(&["hold", "--help"]).await;
    assert!(stdout(&out).contains("DISTLOCK_FENCING_TOKEN"));
    assert!(stdout(&out).contains("--grace"));
    assert!(stdout(&out).contains("PR_SET_PDEATHSIG"));
    assert!(stdout(&out).contains("SIGHUP"));
    for text in ["--permits <N>", "--read", "DISTLOCK_KIND"] {
        assert!(stdout(&out).contains(text), "{text}: {}", stdout(&out));
    }
    let out = env.run(&["force-unlock", "--help"]).await;
    assert!(stdout(&out).contains("[TOKEN]"), "{}", stdout(&out));
    assert!(stdout(&out).contains("--semaphore"), "{}", stdout(&out));
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]).await;
        out.clone().assert().success();
        assert!(stdout(&out).contains("force-unlock"), "{shell}");
    }
    let bash = stdout(&env.run(&["completions", "bash"]).await);
    let check = std::process::Command::new("bash")
        .args(["-n", "-c", &bash])
        .status()
        .unwrap();
    assert!(check.success(), "the bash completion script parses");
}

/// A shell script for `hold`: appends `start PID KIND TOKEN` to the log
/// (`$1`), waits (at most 10 s) until the log has `$2` starts — so the
/// commands meant to run together must run together, or fail with 3 — then
/// for `$3` seconds, and appends `stop PID`.
const TOGETHER: &str = r#"
echo "start $$ $DISTLOCK_KIND $DISTLOCK_FENCING_TOKEN" >> "$1"
i=0
while [ "$(grep -c '^start' "$1")" -lt "$2" ]; do
  i=$((i + 1)); [ $i -gt 200 ] && { echo "stop $$ alone" >> "$1"; exit 3; }
  sleep 0.05
done
sleep "$3"
echo "stop $$" >> "$1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_permits_runs_at_most_n_copies_at_once() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log = log.to_str().unwrap();

    // Three at once on two permits: two run together, the third after one of them.
    let copies: Vec<Child> = (0..3)
        .map(|_| {
            env.spawn(&[
                "hold",
                "crawl",
                "--permits",
                "2",
                "--",
                "sh",
                "-c",
                TOGETHER,
                "sh",
                log,
                "2",
                "0.5",
            ])
        })
        .collect();
    for copy in copies {
        let out = timeout(STEP, copy.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(most_at_once(&text), 2, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[..2].iter().all(|l| l.starts_with("start")) && lines[2].starts_with("stop"),
        "the third waits for a permit: {text}"
    );
    for start in lines.iter().filter(|l| l.starts_with("start")) {
        assert_eq!(
            start.split(' ').nth(2),
            Some("permit"),
            "DISTLOCK_KIND: {text}"
        );
    }
    assert!(admin.semaphore_info("crawl").await.unwrap().is_none());

    // Both permits held: `--wait 0` exits 75 at once, naming the holders.
    std::fs::remove_file(log).unwrap();
    let go = dir.path().join("go");
    let wait_go = format!(
        r#"echo "start $$" >> "$1"; i=0; while [ ! -e {} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done"#,
        go.display()
    );
    let holders: Vec<Child> = (0..2)
        .map(|_| {
            env.spawn(&[
                "hold",
                "crawl",
                "--permits",
                "2",
                "--",
                "sh",
                "-c",
                &wait_go,
                "sh",
                log,
            ])
        })
        .collect();
    until("two permits held", || async {
        admin
            .semaphore_info("crawl")
            .await
            .unwrap()
            .is_some_and(|i| i.holders.len() == 2)
    })
    .await;
    let ran = dir.path().join("ran");
    let ran = ran.to_str().unwrap();
    let out = env
        .run(&[
            "hold",
            "crawl",
            "--permits",
            "2",
            "--wait",
            "0",
            "--",
            "touch",
            ran,
        ])
        .await;
    out.clone().assert().code(75);
    let info = admin.semaphore_info("crawl").await.unwrap().unwrap();
    let said = stderr(&out);
    assert!(said.contains("semaphore `crawl` is busy"), "{said}");
    assert!(said.contains("2 of 2 permits held"), "{said}");
    for holder in &info.holders {
        assert!(
            said.contains(&format!("token {}", holder.fencing_token)),
            "{said}"
        );
    }
    // A bounded wait that ends busy: 75 too, and no waiter is left behind.
    let out = env
        .run(&[
            "hold",
            "crawl",
            "--permits",
            "2",
            "--wait",
            "300ms",
            "touch",
            ran,
        ])
        .await;
    out.clone().assert().code(75);
    // A different count for the same semaphore is refused: bad input.
    let out = env
        .run(&[
            "hold",
            "crawl",
            "--permits",
            "3",
            "--wait",
            "0",
            "touch",
            ran,
        ])
        .await;
    out.clone().assert().code(2);
    assert!(stderr(&out).contains("permits"), "{}", stderr(&out));
    assert!(!Path::new(ran).exists(), "the command must not run");
    let info = admin.semaphore_info("crawl").await.unwrap().unwrap();
    assert_eq!((info.holders.len(), info.waiters), (2, 0), "{info:?}");

    std::fs::write(&go, "").unwrap();
    for holder in holders {
        let out = timeout(STEP, holder.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert!(admin.semaphore_info("crawl").await.unwrap().is_none());
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_read_runs_readers_together_and_excludes_writers() {
    let env = Env::start().await;
    let admin = env.manager().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log = log.to_str().unwrap();

    // Two readers at once: each waits for the other to start.
    let readers: Vec<Child> = (0..2)
        .map(|_| {
            env.spawn(&[
                "hold", "doc", "--read", "--", "sh", "-c", TOGETHER, "sh", log, "2", "0",
            ])
        })
        .collect();
    for reader in readers {
        let out = timeout(STEP, reader.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "readers must run together: {}{}",
            stderr(&out),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(most_at_once(&text), 2, "{text}");
    assert!(text.contains(" read "), "DISTLOCK_KIND: {text}");

    // A service's write lock excludes readers, and `hold NAME` too.
    let rw = admin.new_rw_lock("doc", LockOptions::default()).unwrap();
    let write = timeout(STEP, rw.write()).await.unwrap().unwrap();
    let ran = dir.path().join("ran");
    let ran = ran.to_str().unwrap();
    let out = env
        .run(&["hold", "doc", "--read", "--wait", "0", "--", "touch", ran])
        .await;
    out.clone().assert().code(75);
    assert!(
        stderr(&out).contains(&format!(
            "read lock `doc` is busy (held by {}",
            rw_owner(&admin).await
        )),
        "{}",
        stderr(&out)
    );
    env.run(&["hold", "doc", "--wait", "0", "--", "touch", ran])
        .await
        .assert()
        .code(75);
    let waiting = env.spawn(&["hold", "doc", "--read", "--wait", "15s", "--", "touch", ran]);
    wait_waiters(&admin, "doc", 1).await;
    sleep(Duration::from_millis(200)).await;
    assert!(
        !Path::new(ran).exists(),
        "a reader must wait for the writer"
    );
    write.release().await.unwrap();
    let out = timeout(STEP, waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(Path::new(ran).exists());

    // Readers exclude a service's writer and `hold NAME`.
    let go = dir.path().join("go");
    let wait_go = format!(
        "i=0; while [ ! -e {} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
        go.display()
    );
    let readers: Vec<Child> = (0..2)
        .map(|_| env.spawn(&["hold", "doc", "--read", "--", "sh", "-c", &wait_go]))
        .collect();
    until("two readers", || async {
        admin
            .lock_info("doc")
            .await
            .unwrap()
            .is_some_and(|i| i.readers == 2)
    })
    .await;
    assert!(timeout(STEP, rw.try_write())
        .await
        .unwrap()
        .unwrap()
        .is_none());
    let out = env.run(&["hold", "doc", "--wait", "0", "--", "true"]).await;
    out.clone().assert().code(75);
    assert!(
        stderr(&out).contains("lock `doc` is busy (held by 2 readers"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&go, "").unwrap();
    for reader in readers {
        let out = timeout(STEP, reader.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let write = timeout(STEP, rw.write()).await.unwrap().unwrap();
    write.release().await.unwrap();
    admin.close().await;
}

/// The owner of `doc`'s current holder.
async fn rw_owner(manager: &LockManager) -> String {
    manager.lock_info("doc").await.unwrap().unwrap().owner
}

/// Waits (bounded) until `info` of `name` reports `n` waiters.
async fn wait_semaphore_waiters(manager: &LockManager, name: &str, n: usize) {
    until(&format!("{name} has {n} waiting for a permit"), || async {
        manager
            .semaphore_info(name)
            .await
            .unwrap()
            .is_some_and(|i| i.waiters == n)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_info_show_readers_and_semaphores() {
    let env = Env::start().await;
    let [a, b, c, d] = [
        env.manager().await,
        env.manager().await,
        env.manager().await,
        env.manager().await,
    ];
    let opts = LockOptions::default;
    let (_job, job) = hold(&a, "job").await;
    // `doc`: two readers, a writer waiting, a reader waiting behind it.
    let r1 = a.new_rw_lock("doc", opts()).unwrap().read().await.unwrap();
    let r2 = b.new_rw_lock("doc", opts()).unwrap().read().await.unwrap();
    let writer = c.new_rw_lock("doc", opts()).unwrap();
    let write = tokio::spawn(async move { writer.write_timeout(STEP).await.map(drop) });
    wait_waiters(&a, "doc", 1).await;
    let reader = d.new_rw_lock("doc", opts()).unwrap();
    let read = tokio::spawn(async move { reader.read_timeout(STEP).await.map(drop) });
    wait_waiters(&a, "doc", 2).await;
    // `pool`: two permits held, one waiter.
    let p1 = a
        .new_semaphore("pool", 2, opts())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let p2 = b
        .new_semaphore("pool", 2, opts())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let sem = c.new_semaphore("pool", 2, opts()).unwrap();
    let permit = tokio::spawn(async move { sem.acquire_timeout(STEP).await.map(drop) });
    wait_semaphore_waiters(&a, "pool", 1).await;

    // list --json: locks and semaphores by name, each with its kind.
    let out = env.run(&["list", "--json"]).await;
    out.clone().assert().success();
    let all = json(&out);
    let names: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("doc", "lock"), ("job", "lock"), ("pool", "semaphore")]
    );
    let (doc, job_json, pool) = (&all[0], &all[1], &all[2]);
    assert_eq!(doc["readers"], 2);
    assert_eq!(doc["waiters"], 2);
    assert_eq!(
        doc["fencing_token"],
        r1.fencing_token(),
        "the oldest reader"
    );
    assert!(
        doc["key"].as_str().unwrap().contains("/locks/doc/r/"),
        "{doc}"
    );
    assert_eq!(
        (&job_json["readers"], &job_json["fencing_token"]),
        (&json!(0), &json!(job.fencing_token()))
    );
    assert_eq!((&pool["permits"], &pool["waiters"]), (&json!(2), &json!(1)));
    let holders = pool["holders"].as_array().unwrap();
    let tokens: Vec<u64> = holders
        .iter()
        .map(|h| h["fencing_token"].as_u64().unwrap())
        .collect();
    assert_eq!(tokens, [p1.fencing_token(), p2.fencing_token()]);
    for h in holders {
        assert_eq!(h["mode"], "permit");
        assert!(
            h["key"].as_str().unwrap().contains("/semaphores/pool/"),
            "{h}"
        );
        assert!(!h["owner"].as_str().unwrap().is_empty());
        for field in ["create_time", "expire_time"] {
            humantime::parse_rfc3339(h[field].as_str().unwrap()).unwrap();
        }
    }

    // The table: one row per lock or semaphore, its oldest holder's details.
    let out = env.run(&["list"]).await;
    out.clone().assert().success();
    let text = stdout(&out);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(rows[0][..3], ["doc", "read", "2"], "{text}");
    assert_eq!(rows[0][4], r1.fencing_token().to_string(), "{text}");
    assert_eq!(rows[0].last(), Some(&"2"), "{text}");
    assert_eq!(rows[1][..3], ["job", "lock", "1"], "{text}");
    assert_eq!(rows[2][..3], ["pool", "semaphore", "2/2"], "{text}");
    assert_eq!(rows[2][4], p1.fencing_token().to_string(), "{text}");
    assert_eq!(rows[2].last(), Some(&"1"), "{text}");
    let out = env.run(&["list", "po", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{}", stdout(&out));

    // info of a lock held by readers: every reader, and the waiters' modes.
    let out = env.run(&["info", "doc", "--json"]).await;
    out.clone().assert().success();
    let info = json(&out);
    assert_eq!(
        (&info["kind"], &info["readers"]),
        (&json!("lock"), &json!(2))
    );
    let holders: Vec<(u64, &str)> = info["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["fencing_token"].as_u64().unwrap(),
                h["mode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        holders,
        [(r1.fencing_token(), "read"), (r2.fencing_token(), "read")]
    );
    let modes: Vec<&str> = info["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["exclusive", "read"]);
    let out = env.run(&["info", "doc"]).await;
    out.clone().assert().success();
    let text = stdout(&out);
    assert!(text.contains("readers:     2"), "{text}");
    assert!(
        text.contains(&format!("token {}", r2.fencing_token())),
        "{text}"
    );
    assert!(text.contains("to read"), "{text}");
    // info of an exclusive lock: one holder, mode exclusive.
    let out = env.run(&["info", "job", "--json"]).await;
    let info = json(&out);
    assert_eq!(info["holders"].as_array().unwrap().len(), 1);
    assert_eq!(info["holders"][0]["mode"], "exclusive");
    assert_eq!(info["holders"][0]["expire_time"], info["expire_time"]);

    // info --semaphore: permits, holders, waiters.
    let out = env.run(&["info", "--semaphore", "pool", "--json"]).await;
    out.clone().assert().success();
    let info = json(&out);
    assert_eq!(
        (&info["kind"], &info["permits"]),
        (&json!("semaphore"), &json!(2))
    );
    assert_eq!(info["holders"].as_array().unwrap().len(), 2);
    assert_eq!(info["waiting"].as_array().unwrap().len(), 1);
    assert_eq!(info["waiting"][0]["mode"], "permit");
    let out = env.run(&["info", "--semaphore", "pool"]).await;
    out.clone().assert().success();
    let text = stdout(&out);
    assert!(text.contains("permits:     2 of 2 held"), "{text}");
    assert!(
        text.contains(&format!("token {}", p2.fencing_token())),
        "{text}"
    );
    assert!(text.contains("waiters:     1"), "{text}");
    // A semaphore and a lock of one name are unrelated; each points at the other.
    let out = env.run(&["info", "pool"]).await;
    out.clone().assert().code(1);
    assert!(
        stdout(&out).contains("info --semaphore pool"),
        "{}",
        stdout(&out)
    );
    let out = env.run(&["info", "--semaphore", "job", "--json"]).await;
    out.clone().assert().code(1);
    assert_eq!(json(&out), Value::Null);

    drop((r1, r2, p1, p2, job));
    for waiter in [write, read, permit] {
        timeout(STEP, waiter).await.unwrap().unwrap().unwrap();
    }
    for m in [a, b, c, d] {
        m.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_readers_downgrades_and_permits() {
    let env = Env::start().await;
    let [a, b, c, d] = [
        env.manager().await,
        env.manager().await,
        env.manager().await,
        env.manager().await,
    ];
    let opts = LockOptions::default;
    let mut watch = env.spawn(&["watch", "w-"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    expect_line(
        &mut lines,
        &mut seen,
        &["watching", "/locks/w-*", "/semaphores/w-*"],
    )
    .await;

    // Readers share; a writer waits for both.
    let r1 = a
        .new_rw_lock("w-doc", opts())
        .unwrap()
        .read()
        .await
        .unwrap();
    let t1 = format!("token={}", r1.fencing_token());
    expect_line(
        &mut lines,
        &mut seen,
        &["acquired", "w-doc  read owner=", &t1, "readers=1"],
    )
    .await;
    let r2 = b
        .new_rw_lock("w-doc", opts())
        .unwrap()
        .read()
        .await
        .unwrap();
    let t2 = format!("token={}", r2.fencing_token());
    expect_line(
        &mut lines,
        &mut seen,
        &["acquired", "w-doc  read owner=", &t2, "readers=2"],
    )
    .await;
    let writer = c.new_rw_lock("w-doc", opts()).unwrap();
    let write = tokio::spawn(async move { writer.write_timeout(STEP).await });
    expect_line(
        &mut lines,
        &mut seen,
        &["waiting", "w-doc  owner=", "(2 ahead)"],
    )
    .await;
    r1.release().await.unwrap();
    expect_line(
        &mut lines,
        &mut seen,
        &["released", "w-doc  read", &t1, "readers=1"],
    )
    .await;
    r2.release().await.unwrap();
    expect_line(
        &mut lines,
        &mut seen,
        &["released", "w-doc  read", &t2, "readers=0"],
    )
    .await;
    let write = timeout(STEP, write).await.unwrap().unwrap().unwrap();
    let tw = format!("token={}", write.fencing_token());
    let handed = expect_line(
        &mut lines,
        &mut seen,
        &["handed off", "w-doc  to owner=", &tw],
    )
    .await;
    assert!(!handed.contains("w-doc  read"), "{handed}");

    // A reader waits for the writer; the writer downgrades and lets it in.
    let reader = d.new_rw_lock("w-doc", opts()).unwrap();
    let read = tokio::spawn(async move { reader.read_timeout(STEP).await });
    expect_line(
        &mut lines,
        &mut seen,
        &["waiting", "w-doc  read owner=", "(1 ahead)"],
    )
    .await;
    let downgraded = write.downgrade().await.unwrap();
    expect_line(
        &mut lines,
        &mut seen,
        &["downgraded", "w-doc", &tw, "readers=1"],
    )
    .await;
    let r3 = timeout(STEP, read).await.unwrap().unwrap().unwrap();
    let t3 = format!("token={}", r3.fencing_token());
    expect_line(
        &mut lines,
        &mut seen,
        &["handed off", "w-doc  read to owner=", &t3, "readers=2"],
    )
    .await;
    downgraded.release().await.unwrap();
    expect_line(
        &mut lines,
        &mut seen,
        &["released", "w-doc  read", &tw, "readers=1"],
    )
    .await;
    r3.release().await.unwrap();
    expect_line(
        &mut lines,
        &mut seen,
        &["released", "w-doc  read", &t3, "readers=0"],
    )
    .await;

    // A semaphore of one permit, and a lock of the same name beside it.
    let p1 = a
        .new_semaphore("w-pool", 1, opts())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let tp1 = format!("token={}", p1.fencing_token());
    expect_line(
        &mut lines,
        &mut seen,
        &["acquired", "w-pool  permit owner=", &tp1, "permits=1/1"],
    )
    .await;
    let (_l, lock) = hold(&c, "w-pool").await;
    let tl = format!("token={}", lock.fencing_token());
    let line = expect_line(&mut lines, &mut seen, &["acquired", "w-pool  owner=", &tl]).await;
    assert!(!line.contains("w-pool  permit"), "{line}");
    let sem = b.new_semaphore("w-pool", 1, opts()).unwrap();
    let permit = tokio::spawn(async move { sem.acquire_timeout(STEP).await });
    expect_line(
        &mut lines,
        &mut seen,
        &["waiting", "w-pool  permit owner=", "(1 ahead)"],
    )
    .await;
    env.run(&[
        "force-unlock",
        "--semaphore",
        "w-pool",
        &p1.fencing_token().to_string(),
        "--yes",
    ])
    .await
    .assert()
    .success();
    expect_line(
        &mut lines,
        &mut seen,
        &["force-unlocked", "w-pool  permit", &tp1, "permits=0/1"],
    )
    .await;
    timeout(STEP, p1.lost())
        .await
        .expect("the permit's holder hears it lost it");
    let p2 = timeout(STEP, permit).await.unwrap().unwrap().unwrap();
    let tp2 = format!("token={}", p2.fencing_token());
    expect_line(
        &mut lines,
        &mut seen,
        &[
            "handed off",
            "w-pool  permit to owner=",
            &tp2,
            "permits=1/1",
        ],
    )
    .await;
    assert!(lock.is_held(), "the lock of the same name is another thing");
    lock.unlock().await.unwrap();
    expect_line(&mut lines, &mut seen, &["released", "w-pool  owner=", &tl]).await;

    let pid = watch.id().unwrap() as i32;
    kill(Pid::from_raw(pid), Signal::SIGINT).unwrap();
    let status = timeout(STEP, watch.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    // Every event names `w-doc` or `w-pool`: a reader's key `.../w-doc/r/...`
    // is never a lock of its own (`r`, `w-doc/r`).
    for line in &seen[1..] {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        let name = if line.contains("handed off") || line.contains("gave up") {
            line.split_whitespace().nth(3).unwrap_or_default()
        } else {
            name
        };
        assert!(["w-doc", "w-pool"].contains(&name), "{line}\n{seen:#?}");
    }
    drop(p2);
    for m in [a, b, c, d] {
        m.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_unlock_takes_a_token_to_remove_one_of_several_holders() {
    let env = Env::start().await;
    let (a, b) = (env.manager().await, env.manager().await);
    let opts = LockOptions::default;
    let r1 = a.new_rw_lock("doc", opts()).unwrap().read().await.unwrap();
    let r2 = b.new_rw_lock("doc", opts()).unwrap().read().await.unwrap();

    // Two readers: which one?
    let out = env.run(&["force-unlock", "doc", "--yes"]).await;
    out.clone().assert().code(2);
    let said = stderr(&out);
    assert!(said.contains("2 holders"), "{said}");
    assert!(said.contains(&r2.fencing_token().to_string()), "{said}");
    let out = env.run(&["force-unlock", "doc", "999999", "--yes"]).await;
    out.clone().assert().code(1);
    assert!(
        stdout(&out).contains("no holder has token 999999"),
        "{}",
        stdout(&out)
    );
    assert!(r1.is_held() && r2.is_held());

    // The younger reader (not at the head of the queue), by its token.
    let out = env
        .run(&[
            "force-unlock",
            "doc",
            &r2.fencing_token().to_string(),
            "--yes",
        ])
        .await;
    out.clone().assert().success();
    assert!(
        stdout(&out).contains("a read lock of doc"),
        "{}",
        stdout(&out)
    );
    timeout(STEP, r2.lost())
        .await
        .expect("the reader hears it lost the lock");
    assert!(r1.is_held(), "the other reader reads on");
    // The one left needs no token.
    env.run(&["force-unlock", "doc", "--yes"])
        .await
        .assert()
        .success();
    timeout(STEP, r1.lost()).await.unwrap();
    assert!(a.lock_info("doc").await.unwrap().is_none());

    // A permit held by `hold --permits`: its command is stopped (76); the
    // other permit stays held.
    let dir = tempfile::tempdir().unwrap();
    let tokenfile = dir.path().join("token");
    let script = format!(
        "echo $DISTLOCK_FENCING_TOKEN > {}; exec sleep 60",
        tokenfile.display()
    );
    let kept = a
        .new_semaphore("pool", 2, opts())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let holder = env.spawn(&["hold", "pool", "--permits", "2", "--", "sh", "-c", &script]);
    let token = wait_pidfile(&tokenfile).await;
    let out = env
        .run(&["force-unlock", "--semaphore", "pool", "--yes"])
        .await;
    out.clone().assert().code(2);
    assert!(
        stderr(&out).contains("--semaphore pool"),
        "{}",
        stderr(&out)
    );
    let out = env
        .run(&[
            "force-unlock",
            "--semaphore",
            "pool",
            &token.to_string(),
            "--yes",
        ])
        .await;
    out.clone().assert().success();
    assert!(
        stdout(&out).contains("a permit of semaphore pool"),
        "{}",
        stdout(&out)
    );
    let out = timeout(STEP, holder.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(76), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permit of semaphore `pool` was lost"),
        "{}",
        stderr(&out)
    );
    assert!(kept.is_held());
    let info = a.semaphore_info("pool").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].fencing_token, kept.fencing_token());
    // Without --semaphore it is the lock `pool`, which nobody holds.
    env.run(&["force-unlock", "pool", "--yes"])
        .await
        .assert()
        .code(1);
    kept.release().await.unwrap();
    env.run(&["force-unlock", "--semaphore", "pool", "--yes"])
        .await
        .assert()
        .code(1);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_quietly_when_nobody_reads_its_output() {
    // `distlock watch | head -1`: once the reader is gone, the next line
    // the watch prints finds a closed pipe. It must end with status 0, not
    // panic (as `println!` does) nor go on watching.
    let env = Env::start().await;
    let manager = env.manager().await;
    let mut watch = env.spawn(&["watch", "p-"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    expect_line(&mut lines, &mut seen, &["watching", "/locks/p-*"]).await;
    drop(lines); // the pipe's only reader
    let deadline = Instant::now() + STEP;
    let status = loop {
        // Each cycle is a line or two the watch tries to print.
        let (_lock, guard) = hold(&manager, "p-1").await;
        guard.unlock().await.unwrap();
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the watch goes on with nobody reading"
        );
        sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let err = stderr(&watch.wait_with_output().await.unwrap());
    assert!(!err.contains("panicked"), "{err}");
    manager.close().await;
}
