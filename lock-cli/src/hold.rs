//! `distlock hold NAME [OPTIONS] CMD...`: run a command under a fleet-wide lock.
//!
//! Signals go to the command with `nix::sys::signal::kill`, a safe wrapper
//! over kill(2): no extra process per signal (unlike running `kill(1)`), no
//! dependence on `PATH`, and a typed error when the process is already gone.
//!
//! The command is started through the [`exec`] helper, so that it
//! gets SIGKILL from the kernel if distlock dies without stopping it.

use std::process::ExitStatus;
use std::time::Duration;

use distlock::{ErrorCode, LockGuard, LockManager, LockOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::{Global, Hold};
use crate::connect;
use crate::exec;
use crate::exit::{self, Failure};
use crate::show;

/// Runs `hold`; the exit status is the command's, or one of [`exit`]'s.
pub async fn run(global: &Global, hold: Hold) -> Result<i32, Failure> {
    // Listen before anything else, so that Ctrl-C never kills distlock
    // between taking the lock and starting the command.
    let mut signals = Signals::listen()?;

    let manager = connect::manager(global).await?;
    let options = LockOptions::default()
        .ttl(hold.ttl)
        .renew_interval(hold.ttl / 3);
    let lock = manager
        .new_lock(hold.name.clone(), options)
        .map_err(|e| Failure::lock("bad lock", &e));
    let lock = match lock {
        Ok(lock) => lock,
        Err(failure) => {
            manager.close().await;
            return Err(failure);
        }
    };
    let acquired = tokio::select! {
        acquired = acquire(&lock, hold.wait) => acquired,
        signal = signals.recv() => Err(Signals::ended_waiting(signal)),
    };
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let holder = match manager.lock_info(&hold.name).await {
                Ok(Some(info)) => format!(
                    " (held by {}, token {})",
                    show::owner(&info.owner),
                    info.fencing_token
                ),
                _ => String::new(),
            };
            manager.close().await;
            let waited = match hold.wait {
                Some(w) if !w.is_zero() => format!(" after waiting {}", show::short(w)),
                _ => String::new(),
            };
            eprintln!(
                "distlock: lock `{}` is busy{holder}{waited}; not running the command",
                hold.name
            );
            return Ok(exit::BUSY);
        }
        Err(failure) => {
            manager.close().await;
            return Err(failure);
        }
    };
    let outcome = supervise(&hold, &guard, &mut signals).await;
    if outcome.as_ref().is_ok_and(|o| o.lost) {
        manager.close().await;
    } else {
        release(&manager, guard).await;
    }
    outcome.map(|o| o.code)
}

/// The signals distlock passes on to the command (and ends on while it
/// waits for the lock): Ctrl-C, SIGTERM, and SIGHUP and SIGQUIT, whose default
/// action would kill distlock and leave the command running unsupervised.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching them: from here on they no longer kill distlock.
    fn listen() -> Result<Signals, Failure> {
        let listen = |kind| {
            signal(kind)
                .map_err(|e| Failure::new(exit::FAILURE, format!("cannot listen for signals: {e}")))
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
            quit: listen(SignalKind::quit())?,
        })
    }

    /// The next signal that arrives.
    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
            _ = self.hangup.recv() => Signal::SIGHUP,
            _ = self.quit.recv() => Signal::SIGQUIT,
        }
    }

    /// The failure for `signal` arriving while waiting for the lock: exit
    /// 128 + its number, as a shell reports a command killed by it.
    fn ended_waiting(signal: Signal) -> Failure {
        let what = match signal {
            Signal::SIGINT => "interrupted",
            Signal::SIGTERM => "terminated",
            Signal::SIGHUP => "hung up",
            _ => "quit",
        };
        Failure::new(
            128 + signal as i32,
            format!("{what} while waiting for the lock"),
        )
    }
}

/// Takes the lock: `None` when it stayed busy past `wait`.
async fn acquire(
    lock: &distlock::Lock,
    wait: Option<Duration>,
) -> Result<Option<LockGuard>, Failure> {
    let taken = match wait {
        None => lock.lock().await.map(Some),
        Some(Duration::ZERO) => lock.try_lock().await,
        Some(wait) => match lock.lock_timeout(wait).await {
            Err(e) if e.code() == ErrorCode::Timeout => Ok(None),
            other => other.map(Some),
        },
    };
    taken.map_err(|e| Failure::lock("cannot take the lock", &e))
}

/// How the command ended.
struct Outcome {
    /// The exit status for distlock.
    code: i32,
    /// Whether the lock was lost (the command was stopped for it).
    lost: bool,
}

/// Runs the command while the lock is held; stops it if the lock is lost.
async fn supervise(
    hold: &Hold,
    guard: &LockGuard,
    signals: &mut Signals,
) -> Result<Outcome, Failure> {
    let mut child = spawn(hold, guard)?;
    let Some(pid) = child.id().map(|id| Pid::from_raw(id as i32)) else {
        // Already reaped: it ran and ended.
        let status = child.wait().await.map_err(waiting)?;
        return Ok(Outcome {
            code: status_code(status),
            lost: false,
        });
    };
    let lost = guard.lost();
    tokio::pin!(lost);
    let mut lost_at: Option<tokio::time::Instant> = None;
    let mut killed = false;
    loop {
        let kill_at = lost_at.map(|t| t + hold.grace);
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(waiting)?;
                return Ok(match lost_at {
                    Some(_) => Outcome { code: exit::LOST, lost: true },
                    None => Outcome { code: status_code(status), lost: false },
                });
            }
            _ = &mut lost, if lost_at.is_none() => {
                eprintln!(
                    "distlock: lock `{}` was lost (lease not renewed in time, or force-unlocked); \
                     stopping the command (SIGTERM, SIGKILL after {})",
                    hold.name, show::short(hold.grace)
                );
                send(pid, Signal::SIGTERM);
                lost_at = Some(tokio::time::Instant::now());
            }
            _ = sleep_until(kill_at), if kill_at.is_some() && !killed => {
                eprintln!("distlock: the command outlived --grace; SIGKILL");
                send(pid, Signal::SIGKILL);
                killed = true;
            }
            signal = signals.recv() => send(pid, signal),
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts the command with the lock's name and fencing token in its
/// environment, through the [`exec`] helper: the command gets SIGKILL if
/// distlock dies without stopping it.
fn spawn(hold: &Hold, guard: &LockGuard) -> Result<Child, Failure> {
    let (program, args) = hold
        .command
        .split_first()
        .ok_or_else(|| Failure::new(exit::USAGE, "no command given"))?;
    // The kernel sends the death signal when the *thread* that forked the
    // child ends, not the process. `run` is polled by `block_on` on the main
    // thread, which lives until distlock exits; on a `spawn_blocking` thread
    // (which ends when idle) the command would be killed at random.
    debug_assert_eq!(
        std::thread::current().name(),
        Some("main"),
        "hold must start its command on the main thread (PR_SET_PDEATHSIG)"
    );
    exec::command(program, args)
        .env("DISTLOCK_LOCK", &hold.name)
        .env("DISTLOCK_FENCING_TOKEN", guard.fencing_token().to_string())
        // If distlock itself fails, the command must not outlive it
        // unsupervised: on an error return this kills it, and where distlock
        // gets no chance to (SIGKILL, OOM), the death signal does.
        .kill_on_drop(true)
        .spawn()
        // The helper reports a command that is not found (127) or cannot
        // be executed (126) itself, with its exit status; this is the
        // helper (distlock's own binary) failing to start.
        .map_err(|e| {
            Failure::new(
                exit::CANNOT_EXECUTE,
                format!(
                    "cannot run {}: cannot start distlock's exec helper: {e}",
                    program.to_string_lossy()
                ),
            )
        })
}

/// Sends `signal` to the command; a command that already exited is fine.
fn send(pid: Pid, signal: Signal) {
    if let Err(err) = kill(pid, signal) {
        if err != nix::errno::Errno::ESRCH {
            eprintln!("distlock: cannot send {signal} to the command: {err}");
        }
    }
}

/// Releases the lock and closes the manager; a failed release is reported
/// (the lock then frees when its lease runs out).
async fn release(manager: &LockManager, guard: LockGuard) {
    if let Err(err) = guard.unlock().await {
        eprintln!(
            "distlock: warning: {}; the lock frees when its lease runs out",
            crate::exit::chain(&err)
        );
    }
    manager.close().await;
}

/// A shell-style status: the exit code, or 128 + the signal that killed it.
fn status_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(exit::FAILURE)
}

fn waiting(e: std::io::Error) -> Failure {
    Failure::new(
        exit::FAILURE,
        format!("waiting for the command failed: {e}"),
    )
}
