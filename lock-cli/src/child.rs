//! The command `hold` and `elect` run, and its supervision: started through
//! the [`exec`] helper (so that it gets SIGKILL if distlock dies without
//! stopping it), stopped with SIGTERM and then SIGKILL after the grace period
//! when what it runs under is lost, and sent the signals distlock catches.
//!
//! Signals go to the command with `nix::sys::signal::kill`, a safe wrapper
//! over kill(2): no extra process per signal (unlike running `kill(1)`), no
//! dependence on `PATH`, and a typed error when the process is already gone.

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};

use crate::exec;
use crate::exit::{self, Failure};
use crate::show;

/// The signals distlock passes on to the command (and ends on while it
/// waits for the lock or to lead): Ctrl-C, SIGTERM, and SIGHUP and SIGQUIT,
/// whose default action would kill distlock and leave the command running
/// unsupervised.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching them: from here on they no longer kill distlock.
    pub fn listen() -> Result<Signals, Failure> {
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
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
            _ = self.hangup.recv() => Signal::SIGHUP,
            _ = self.quit.recv() => Signal::SIGQUIT,
        }
    }

    /// The failure for `signal` arriving while waiting (`waiting` says for
    /// what: `for the lock`, `to lead`): exit 128 + its number, as a shell
    /// reports a command killed by it.
    pub fn ended_waiting(signal: Signal, waiting: &str) -> Failure {
        let what = match signal {
            Signal::SIGINT => "interrupted",
            Signal::SIGTERM => "terminated",
            Signal::SIGHUP => "hung up",
            _ => "quit",
        };
        Failure::new(
            128 + signal as i32,
            format!("{what} while waiting {waiting}"),
        )
    }
}

/// The command to run, and what it is told.
pub struct Command<'a> {
    /// The program and its arguments.
    pub argv: &'a [OsString],
    /// Variables added to its environment.
    pub env: Vec<(&'static str, String)>,
    /// After a loss, how long it has between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// How the command ended.
pub struct Outcome {
    /// The exit status for distlock.
    pub code: i32,
    /// Whether what it ran under was lost (the command was stopped for it).
    pub lost: bool,
}

/// Runs the command until it exits. When `lost` resolves first, says so on
/// stderr (`lost_why`: ``lock `x` was lost (..)``), stops the command
/// (SIGTERM, then SIGKILL after the grace period) and reports exit 76; the
/// signals distlock catches meanwhile are passed on to the command.
pub async fn supervise(
    command: Command<'_>,
    lost: impl Future<Output = ()>,
    lost_why: &str,
    signals: &mut Signals,
) -> Result<Outcome, Failure> {
    let grace = command.grace;
    let mut child = spawn(command)?;
    let Some(pid) = child.id().map(|id| Pid::from_raw(id as i32)) else {
        // Already reaped: it ran and ended.
        let status = child.wait().await.map_err(waiting)?;
        return Ok(Outcome {
            code: status_code(status),
            lost: false,
        });
    };
    tokio::pin!(lost);
    let mut lost_at: Option<tokio::time::Instant> = None;
    let mut killed = false;
    loop {
        let kill_at = lost_at.map(|t| t + grace);
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
                    "distlock: {lost_why}; stopping the command (SIGTERM, SIGKILL after {})",
                    show::short(grace)
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

/// Starts the command with its environment through the [`exec`] helper: the
/// command gets SIGKILL if distlock dies without stopping it.
fn spawn(command: Command<'_>) -> Result<Child, Failure> {
    let (program, args) = command
        .argv
        .split_first()
        .ok_or_else(|| Failure::new(exit::USAGE, "no command given"))?;
    // The kernel sends the death signal when the *thread* that forked the
    // child ends, not the process. The command is started from the future
    // `block_on` polls on the main thread, which lives until distlock exits;
    // on a `spawn_blocking` thread (which ends when idle) the command would
    // be killed at random.
    debug_assert_eq!(
        std::thread::current().name(),
        Some("main"),
        "the command must be started on the main thread (PR_SET_PDEATHSIG)"
    );
    exec::command(program, args)
        .envs(command.env)
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
