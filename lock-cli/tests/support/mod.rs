//! What the `distlock` binary's tests share: a throwaway etcd with a fresh
//! namespace and the command pointed at it ([`Env`]), output helpers, and
//! bounded waits for lines, pid files and processes. Each test file uses
//! part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use distlock::LockManager;
use distlock_tests::Etcd;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::time::{sleep, timeout};

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(20);

pub const BIN: &str = env!("CARGO_BIN_EXE_distlock");

/// One etcd and one namespace, and the `distlock` command pointed at them.
pub struct Env {
    pub etcd: Etcd,
    pub ns: String,
}

impl Env {
    pub async fn start() -> Env {
        let etcd = Etcd::start().await;
        let ns = etcd.namespace();
        Env { etcd, ns }
    }

    /// `distlock` with this etcd and namespace in its environment (so that a
    /// `distlock` the held command runs finds them too).
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(BIN);
        for var in [
            "DISTLOCK_USER",
            "DISTLOCK_PASSWORD",
            "DISTLOCK_CACERT",
            "DISTLOCK_CERT",
            "DISTLOCK_KEY",
            "DISTLOCK_TIMEOUT",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DISTLOCK_ENDPOINTS", self.etcd.endpoints().join(","))
            .env("DISTLOCK_NAMESPACE", &self.ns)
            .env("DISTLOCK_BIN", BIN)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `distlock ARGS` to completion (bounded by [`STEP`]).
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.args(args).kill_on_drop(true);
        timeout(STEP, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("distlock {args:?} did not finish in {STEP:?}"))
            .expect("run distlock")
    }

    /// Starts `distlock ARGS` with piped stdout and stderr.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn().expect("start distlock")
    }

    pub async fn manager(&self) -> LockManager {
        LockManager::connect(distlock::EtcdConfig::new(self.etcd.endpoints()), &self.ns)
            .await
            .expect("connect")
    }

    pub async fn wait_held(&self, manager: &LockManager, name: &str) -> distlock::LockInfo {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(info) = manager.lock_info(name).await.unwrap() {
                return info;
            }
            assert!(Instant::now() < deadline, "{name} never got held");
            sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

pub fn pid_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Reads lines until one contains every needle; returns it. Bounded by [`STEP`].
pub async fn expect_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    seen: &mut Vec<String>,
    needles: &[&str],
) -> String {
    let found = timeout(STEP, async {
        while let Some(line) = lines.next_line().await.expect("read watch output") {
            seen.push(line.clone());
            if needles.iter().all(|n| line.contains(n)) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no line with {needles:?}; saw:\n{}", seen.join("\n")),
    }
}

pub async fn wait_pidfile(path: &Path) -> i32 {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a running process. A zombie (killed, not yet reaped by
/// the parent it was handed to) does not count: `kill(pid, 0)` would.
pub fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Waits (bounded) until `pid` no longer runs; whether it stopped in time.
pub async fn gone_within(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while running(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10)).await;
    }
    true
}

/// A command's process that the test kills when it ends, if it still runs:
/// a failed assertion must not leave it behind (distlock would not, but the
/// test is there for the case where distlock does).
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if running(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

/// Waits (bounded) until `check` is true.
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + STEP;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// The most commands that ran at once, by the log's start and stop lines.
pub fn most_at_once(log: &str) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for line in log.lines() {
        if line.starts_with("start") {
            now += 1;
            most = most.max(now);
        } else if line.starts_with("stop") {
            now -= 1;
        }
    }
    most
}
