//! `distlock elect` and `distlock leader` (and elections in `list`), run as
//! processes against a real etcd: one leader's command at a time, resigning
//! when it ends, a leader whose key is deleted stopped with 76, a killed
//! `distlock elect` taking its command down, interop with `etcdctl elect`,
//! `leader --watch` printing each change once (also across an etcd outage),
//! and bad input.
//!
//! Every test starts its own throwaway etcd and uses a fresh namespace;
//! every wait is bounded.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::assert::OutputAssertExt;
use distlock::LockOptions;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::time::timeout;

use support::{
    expect_line, gone_within, json, most_at_once, stderr, stdout, until, wait_pidfile, Env,
    KillOnDrop, STEP,
};

/// A command for `elect`: appends `start PID KIND ELECTION TOKEN VALUE` to
/// the log (`$1`), waits (at most 20 s) for the file `$2`, appends `stop PID`.
const TURN: &str = r#"
echo "start $$ $DISTLOCK_KIND $DISTLOCK_ELECTION $DISTLOCK_FENCING_TOKEN $DISTLOCK_VALUE" >> "$1"
i=0; while [ ! -e "$2" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
echo "stop $$" >> "$1"
"#;

/// `distlock leader NAME --json`, parsed; the exit status must say whether
/// someone leads.
async fn leader(env: &Env, name: &str) -> Value {
    let out = env.run(&["leader", name, "--json"]).await;
    let object = json(&out);
    let expected = if object["leader"].is_null() { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(expected), "{}", stderr(&out));
    object
}

/// Waits (bounded) until election `name` has `n` candidates.
async fn wait_candidates(env: &Env, name: &str, n: u64) {
    until(&format!("{name} has {n} candidates"), || async {
        leader(env, name).await["candidates"] == n
    })
    .await;
}

/// The log's lines, once it has `starts` start lines (bounded wait).
async fn wait_starts(log: &Path, starts: usize) -> Vec<String> {
    let mut text = String::new();
    until(&format!("{starts} commands started"), || {
        text = std::fs::read_to_string(log).unwrap_or_default();
        let started = text.lines().filter(|l| l.starts_with("start")).count();
        std::future::ready(started >= starts)
    })
    .await;
    text.lines().map(str::to_owned).collect()
}

async fn exits(child: Child) -> std::process::Output {
    timeout(STEP, child.wait_with_output())
        .await
        .expect("distlock elect ends in time")
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_run_their_commands_one_at_a_time_in_turn() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (go_a, go_b) = (dir.path().join("go-a"), dir.path().join("go-b"));
    let elect = |value: &'static str, go: &Path| {
        env.spawn(&[
            "elect",
            "turns",
            "--value",
            value,
            "--",
            "sh",
            "-c",
            TURN,
            "sh",
            path(&log),
            path(go),
        ])
    };
    let a = elect("a", &go_a);
    wait_starts(&log, 1).await;
    let b = elect("b", &go_b);
    wait_candidates(&env, "turns", 2).await;
    let now = leader(&env, "turns").await;
    assert_eq!(now["leader"]["value"], "a", "{now}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        1,
        "b campaigns but must not run while a leads"
    );

    // a's command ends: a resigns, and b leads at once, not when a's
    // lease (30 s) would have run out.
    std::fs::write(&go_a, "").unwrap();
    let ended = Instant::now();
    wait_starts(&log, 2).await;
    assert!(
        ended.elapsed() < Duration::from_secs(10),
        "b waited for a's lease"
    );
    let out = exits(a).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&go_b, "").unwrap();
    let out = exits(b).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        most_at_once(&text),
        1,
        "two leaders' commands at once:\n{text}"
    );
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    let (start_a, stop_a, start_b, stop_b) = (&lines[0], &lines[1], &lines[2], &lines[3]);
    assert_eq!(
        (start_a[0], stop_a[0], start_b[0], stop_b[0]),
        ("start", "stop", "start", "stop"),
        "b starts after a's command exits:\n{text}"
    );
    assert_eq!((start_a[1], start_b[1]), (stop_a[1], stop_b[1]), "{text}");
    assert_eq!(
        start_a[2..4],
        ["leader", "turns"],
        "DISTLOCK_KIND, _ELECTION"
    );
    assert_eq!((start_a[5], start_b[5]), ("a", "b"), "DISTLOCK_VALUE");
    let token = |l: &Vec<&str>| l[4].parse::<u64>().expect("DISTLOCK_FENCING_TOKEN");
    assert!(token(start_a) < token(start_b), "tokens grow: {text}");
    assert!(
        leader(&env, "turns").await["leader"].is_null(),
        "b resigned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_is_deleted_is_stopped_with_76_and_the_next_leads() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_a = dir.path().join("a.pid");
    let (started_b, go_b) = (dir.path().join("b-started"), dir.path().join("go-b"));
    let a = env.spawn(&[
        "elect",
        "deleted",
        "--value",
        "a",
        "--grace",
        "5s",
        "--",
        "sh",
        "-c",
        &format!("echo $$ > {}; exec sleep 60", pid_a.display()),
    ]);
    let command_a = KillOnDrop(wait_pidfile(&pid_a).await);
    let b = env.spawn(&[
        "elect",
        "deleted",
        "--value",
        "b",
        "--",
        "sh",
        "-c",
        &format!(
            "echo $DISTLOCK_FENCING_TOKEN > {}; while [ ! -e {} ]; do sleep 0.05; done",
            started_b.display(),
            go_b.display()
        ),
    ]);
    wait_candidates(&env, "deleted", 2).await;
    let before = leader(&env, "deleted").await;
    assert_eq!(before["leader"]["value"], "a", "{before}");
    let key = before["leader"]["key"].as_str().unwrap().to_owned();

    // Behind a's back, as an operator with etcdctl would.
    let deleted = distlock_tests::etcdctl(&env.etcd.endpoints())
        .args(["del", &key])
        .output()
        .unwrap();
    assert_eq!(stdout_of(&deleted).trim(), "1", "{deleted:?}");

    let out = exits(a).await;
    assert_eq!(out.status.code(), Some(76), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the leadership of election `deleted` was lost"),
        "{}",
        stderr(&out)
    );
    assert!(
        gone_within(command_a.0, Duration::from_secs(1)).await,
        "a's command was stopped"
    );
    until("b's command runs", || {
        std::future::ready(std::fs::read_to_string(&started_b).is_ok_and(|t| t.ends_with('\n')))
    })
    .await;
    let now = leader(&env, "deleted").await;
    assert_eq!(now["leader"]["value"], "b", "{now}");
    let token_b: u64 = std::fs::read_to_string(&started_b)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(now["leader"]["fencing_token"], token_b);
    assert!(token_b > before["leader"]["fencing_token"].as_u64().unwrap());
    std::fs::write(&go_b, "").unwrap();
    let out = exits(b).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_elect_takes_its_command_down_and_the_next_leads_within_the_ttl() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_a = dir.path().join("a.pid");
    let (started_b, go_b) = (dir.path().join("b-started"), dir.path().join("go-b"));
    let ttl = Duration::from_secs(2);
    let mut a = env.spawn(&[
        "elect",
        "doomed",
        "--value",
        "a",
        "--ttl",
        "2",
        "--",
        "sh",
        "-c",
        &format!("echo $$ > {}; exec sleep 60", pid_a.display()),
    ]);
    let command_a = KillOnDrop(wait_pidfile(&pid_a).await);
    let b = env.spawn(&[
        "elect",
        "doomed",
        "--value",
        "b",
        "--",
        "sh",
        "-c",
        &format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
            started_b.display(),
            go_b.display()
        ),
    ]);
    wait_candidates(&env, "doomed", 2).await;

    // SIGKILL, as the OOM killer would: distlock cannot stop the command itself.
    let killed = Instant::now();
    a.start_kill().unwrap();
    let status = timeout(STEP, a.wait()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(
        gone_within(command_a.0, Duration::from_secs(1)).await,
        "a's command runs on after distlock was killed"
    );
    assert!(
        !started_b.exists(),
        "b ran while a's command still ran (its lease had not lapsed)"
    );
    until("b's command runs", || {
        std::future::ready(started_b.exists())
    })
    .await;
    let took = killed.elapsed();
    // The lease lapses at most a TTL after its last renewal; the rest is
    // slack for a busy machine (b would otherwise wait forever).
    assert!(
        took < ttl + Duration::from_secs(6),
        "b took over after {took:?}"
    );
    assert_eq!(leader(&env, "doomed").await["leader"]["value"], "b");
    std::fs::write(&go_b, "").unwrap();
    let out = exits(b).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Reads (bounded) the next line of a process's output.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    timeout(STEP, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read the output")
        .expect("the output goes on")
}

fn lines_of(child: &mut Child) -> Lines<BufReader<ChildStdout>> {
    BufReader::new(child.stdout.take().unwrap()).lines()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_etcdctl_elect_see_each_others_leaders() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let election = format!("{}/elections/interop", env.ns);
    let etcdctl = |args: &[&str]| {
        let mut cmd = distlock_tests::etcdctl_async(&env.etcd.endpoints());
        cmd.arg("elect")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.spawn().expect("etcdctl")
    };
    let stop = |child: &Child| {
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    };

    // etcdctl leads: distlock shows it and does not lead meanwhile.
    let mut theirs = etcdctl(&[&election, "from-etcdctl"]);
    let mut their_lines = lines_of(&mut theirs);
    let mut seen = Vec::new();
    expect_line(&mut their_lines, &mut seen, &["from-etcdctl"]).await;
    let now = leader(&env, "interop").await;
    assert_eq!(now["leader"]["value"], "from-etcdctl", "{now}");
    assert_eq!(now["candidates"], 1);
    let key = now["leader"]["key"].as_str().unwrap();
    assert!(key.starts_with(&format!("{election}/")), "{key}");
    assert!(!now["leader"]["expire_time"].is_null(), "{now}");
    let out = env.run(&["leader", "interop"]).await;
    out.clone().assert().success();
    assert!(
        stdout(&out).contains("value:       \"from-etcdctl\""),
        "{}",
        stdout(&out)
    );
    let ran = dir.path().join("ran");
    let out = env
        .run(&["elect", "interop", "--wait", "0", "touch", path(&ran)])
        .await;
    out.clone().assert().code(75);
    assert!(
        stderr(&out).contains("election `interop` is led by \"from-etcdctl\""),
        "{}",
        stderr(&out)
    );
    assert!(!ran.exists(), "the command must not run");
    stop(&theirs);
    timeout(STEP, theirs.wait()).await.unwrap().unwrap();
    until("etcdctl resigned", || async {
        leader(&env, "interop").await["leader"].is_null()
    })
    .await;

    // distlock leads: `etcdctl elect -l` shows it; an etcdctl candidate
    // leads as soon as distlock's command ends.
    let go = dir.path().join("go");
    let ours = env.spawn(&[
        "elect",
        "interop",
        "--value",
        "from-distlock",
        "--",
        "sh",
        "-c",
        &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
    ]);
    wait_candidates(&env, "interop", 1).await;
    let mut observer = etcdctl(&["-l", &election]);
    let mut observed = lines_of(&mut observer);
    expect_line(&mut observed, &mut seen, &["from-distlock"]).await;
    stop(&observer);
    timeout(STEP, observer.wait()).await.unwrap().unwrap();

    let mut next = etcdctl(&[&election, "next-from-etcdctl"]);
    let mut next_lines = lines_of(&mut next);
    wait_candidates(&env, "interop", 2).await;
    std::fs::write(&go, "").unwrap();
    let out = exits(ours).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    expect_line(&mut next_lines, &mut seen, &["next-from-etcdctl"]).await;
    assert_eq!(
        leader(&env, "interop").await["leader"]["value"],
        "next-from-etcdctl"
    );
    stop(&next);
    timeout(STEP, next.wait()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_watch_prints_each_change_exactly_once() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut watch_json = env.spawn(&["leader", "w", "--watch", "--json"]);
    let watch_text = env.spawn(&["leader", "w", "--watch"]);
    let mut lines = lines_of(&mut watch_json);
    let mut expected: Vec<(&str, Option<&str>)> = Vec::new();
    let mut tokens = Vec::new();
    let mut expect = |line: String, change: &'static str, value: Option<&'static str>| {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["name"], "w", "{line}");
        assert_eq!(v["change"], change, "{line}");
        humantime::parse_rfc3339(v["time"].as_str().unwrap()).unwrap();
        match value {
            None => assert!(v["leader"].is_null(), "{line}"),
            Some(value) => {
                assert_eq!(v["leader"]["value"], value, "{line}");
                tokens.push(v["leader"]["fencing_token"].as_u64().unwrap());
            }
        }
        expected.push((change, value));
    };
    expect(next_line(&mut lines).await, "none", None);

    let turn = |value: &'static str, go: &Path| {
        env.spawn(&[
            "elect",
            "w",
            "--value",
            value,
            "--",
            "sh",
            "-c",
            TURN,
            "sh",
            path(&dir.path().join("log")),
            path(go),
        ])
    };
    let (go_a, go_b) = (dir.path().join("go-a"), dir.path().join("go-b"));
    let a = turn("a", &go_a);
    expect(next_line(&mut lines).await, "leader", Some("a"));
    let b = turn("b", &go_b); // a candidate that waits is no change
    wait_candidates(&env, "w", 2).await;
    std::fs::write(&go_a, "").unwrap();
    expect(next_line(&mut lines).await, "leader", Some("b"));
    std::fs::write(&go_b, "").unwrap();
    expect(next_line(&mut lines).await, "none", None);
    for elect in [a, b] {
        assert_eq!(exits(elect).await.status.code(), Some(0));
    }

    // A service proclaims a new value: the same leader, a new value.
    let manager = env.manager().await;
    let election = manager.new_election("w", LockOptions::default()).unwrap();
    let leading = election.campaign("svc").await.unwrap();
    expect(next_line(&mut lines).await, "leader", Some("svc"));
    leading.proclaim("svc, v2").await.unwrap();
    expect(next_line(&mut lines).await, "proclaimed", Some("svc, v2"));
    leading.resign().await.unwrap();
    expect(next_line(&mut lines).await, "none", None);
    manager.close().await;

    // Nothing else: no change twice, none that did not happen.
    let extra = timeout(Duration::from_secs(1), lines.next_line()).await;
    assert!(extra.is_err(), "an extra line: {extra:?}");
    assert!(tokens[0] < tokens[1] && tokens[1] < tokens[2], "{tokens:?}");
    assert_eq!(tokens[2], tokens[3], "a proclamation keeps the token");

    for watcher in [&watch_json, &watch_text] {
        kill(Pid::from_raw(watcher.id().unwrap() as i32), Signal::SIGINT).unwrap();
    }
    let status = timeout(STEP, watch_json.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(lines.next_line().await.unwrap(), None, "no more lines");
    let out = timeout(STEP, watch_text.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let text_lines: Vec<&str> = text.lines().collect();
    assert!(text_lines[0].starts_with("watching election w ("), "{text}");
    assert_eq!(text_lines.len(), expected.len() + 1, "{text}");
    for (line, (change, value)) in text_lines[1..].iter().zip(&expected) {
        let word = if *change == "none" {
            "no leader"
        } else {
            change
        };
        assert!(line.contains(&format!("  {word} ")), "{change}: {line}");
        match value {
            Some(value) => assert!(line.contains(&format!("value=\"{value}\"")), "{line}"),
            None => assert!(!line.contains("value="), "{line}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_watch_goes_on_after_an_outage_with_each_change_once() {
    let env = Env::start().await;
    let proxy = distlock_tests::TcpProxy::start_for(&env.etcd.endpoints()[0]).await;
    let mut watcher = env.spawn(&[
        "--endpoints",
        &proxy.endpoint(),
        "leader",
        "o",
        "--watch",
        "--json",
    ]);
    let mut lines = lines_of(&mut watcher);
    let change = |line: &str| {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        (
            v["change"].as_str().unwrap().to_owned(),
            v["leader"]["value"].clone(),
        )
    };
    assert_eq!(
        change(&next_line(&mut lines).await),
        ("none".into(), Value::Null)
    );

    // The watcher is cut off from etcd; meanwhile the leader changes four
    // times (through a manager that reaches etcd directly).
    proxy.drop_traffic();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let manager = env.manager().await;
    let election = manager.new_election("o", LockOptions::default()).unwrap();
    let first = election.campaign("a").await.unwrap();
    first.proclaim("a2").await.unwrap();
    first.resign().await.unwrap();
    let second = election.campaign("b").await.unwrap();
    proxy.restore();

    // Back in touch, it prints each of them once, in order.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(change(&next_line(&mut lines).await));
    }
    let expected = [
        ("leader", Value::from("a")),
        ("proclaimed", Value::from("a2")),
        ("none", Value::Null),
        ("leader", Value::from("b")),
    ];
    let expected: Vec<(String, Value)> = expected
        .into_iter()
        .map(|(c, v)| (c.to_owned(), v))
        .collect();
    assert_eq!(seen, expected);
    let extra = timeout(Duration::from_secs(1), lines.next_line()).await;
    assert!(extra.is_err(), "an extra line: {extra:?}");

    kill(Pid::from_raw(watcher.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let out = exits(watcher).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warnings = stderr(&out)
        .lines()
        .filter(|l| l.contains("warning"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "the outage is told, once per 10 s: {}",
        stderr(&out)
    );
    second.resign().await.unwrap();
    manager.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_passes_the_status_on_exits_75_past_wait_and_lists_the_election() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");

    // The command's status, and a resignation after it.
    env.run(&["elect", "s", "--", "sh", "-c", "exit 3"])
        .await
        .assert()
        .code(3);
    assert!(leader(&env, "s").await["leader"].is_null(), "resigned");
    // The default value: HOST:PID of distlock.
    let elect = env.spawn(&["elect", "s", "sh", "-c", "echo $DISTLOCK_VALUE"]);
    let pid = elect.id().unwrap();
    let out = exits(elect).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let value = stdout(&out);
    assert!(value.trim().ends_with(&format!(":{pid}")), "{value}");
    assert!(
        value.len() > format!(":{pid}\n").len(),
        "a host name: {value}"
    );

    // Another leads: `--wait 0` and a bounded wait exit 75, naming the leader.
    let manager = env.manager().await;
    let election = manager.new_election("s", LockOptions::default()).unwrap();
    let leading = election.campaign("svc").await.unwrap();
    let token = leading.fencing_token();
    for wait in ["0", "300ms"] {
        let out = env
            .run(&["elect", "s", "--wait", wait, "touch", path(&ran)])
            .await;
        out.clone().assert().code(75);
        let said = stderr(&out);
        assert!(
            said.contains(&format!("election `s` is led by \"svc\" (token {token})")),
            "{said}"
        );
        assert_eq!(
            leader(&env, "s").await["candidates"],
            1,
            "no candidate left behind"
        );
    }
    // A signal while campaigning: 128+N, and the candidacy goes.
    let waiting = env.spawn(&["elect", "s", "touch", path(&ran)]);
    wait_candidates(&env, "s", 2).await;

    // `list` shows the election: its leader's value, token and expiry, and
    // the candidate waiting.
    let out = env.run(&["list"]).await;
    out.clone().assert().success();
    let text = stdout(&out);
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..6],
        ["s", "election", "1", "\"svc\"", &token.to_string(), "-"],
        "{text}"
    );
    assert_eq!(row.last(), Some(&"1"), "{text}");
    let out = env.run(&["list", "--json"]).await;
    let all = json(&out);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    let listed = &all[0];
    assert_eq!(
        (&listed["kind"], &listed["name"], &listed["candidates"]),
        (&Value::from("election"), &Value::from("s"), &Value::from(2)),
        "{listed}"
    );
    assert_eq!(listed["leader"]["value"], "svc");
    assert_eq!(listed["leader"]["fencing_token"], token);
    let expires = humantime::parse_rfc3339(listed["leader"]["expire_time"].as_str().unwrap());
    let left = expires
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(15) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    // `list` and `leader` agree (but for the expiry, computed at each read).
    let mut listed = listed.clone();
    let mut shown = leader(&env, "s").await;
    for object in [&mut listed, &mut shown] {
        object["leader"]
            .as_object_mut()
            .unwrap()
            .remove("expire_time");
    }
    assert_eq!(listed, shown, "list and leader agree");

    kill(Pid::from_raw(waiting.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let out = exits(waiting).await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted while waiting to lead"),
        "{}",
        stderr(&out)
    );
    wait_candidates(&env, "s", 1).await;
    assert!(!ran.exists(), "the command must not run");
    leading.resign().await.unwrap();
    manager.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_a_clear_message() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let ran = path(&ran);
    let oversize = "x".repeat(distlock::MAX_VALUE_LEN + 1);
    let long_name = "n".repeat(1025);
    // (arguments, what stderr must say)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["elect", "e", "--value", "", "touch", ran],
            "a candidate's value is 1 to 65536 bytes, not 0",
        ),
        (
            vec!["elect", "e", "--value", &oversize, "touch", ran],
            "not 65537",
        ),
        (vec!["elect", "", "touch", ran], "name is empty"),
        (vec!["elect", &long_name, "touch", ran], "1025 bytes long"),
        (vec!["elect", "e"], "<CMD>"),
        (vec!["elect", "e", "--wiat", "5", "touch", ran], "--wait"),
        (
            vec!["elect", "e", "--ttl", "0.5", "touch", ran],
            "whole seconds",
        ),
        (vec!["leader", ""], "name is empty"),
        (vec!["leader", &long_name, "--watch"], "1025 bytes long"),
        (vec!["leader", "e", "--bogus"], "--bogus"),
    ];
    for (args, says) in &cases {
        let out = env.run(args).await;
        let shown: Vec<&str> = args.iter().map(|a| &a[..a.len().min(20)]).collect();
        assert_eq!(out.status.code(), Some(2), "{shown:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{shown:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    // A bad value is refused before etcd is asked: no etcd needed.
    let out = env
        .run(&[
            "--endpoints",
            "http://127.0.0.1:1",
            "elect",
            "e",
            "--value",
            "",
            "touch",
            ran,
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!Path::new(ran).exists(), "the command must not run");
    assert!(leader(&env, "e").await["leader"].is_null());
}
