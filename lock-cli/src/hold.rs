//! `distlock hold NAME [OPTIONS] CMD...`: run a command under a fleet-wide lock,
//! the read side of a read-write lock (`--read`), or one of N permits of a
//! semaphore (`--permits N`).
//!
//! Signals go to the command with `nix::sys::signal::kill`, a safe wrapper
//! over kill(2): no extra process per signal (unlike running `kill(1)`), no
//! dependence on `PATH`, and a typed error when the process is already gone.
//!
//! The command is started through the [`exec`] helper, so that it
//! gets SIGKILL from the kernel if distlock dies without stopping it.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::Duration;

use distlock::{
    ErrorCode, Lock, LockGuard, LockManager, LockOptions, Permit, ReadGuard, RwLock, Semaphore,
};
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
    let target = match Target::new(&manager, &hold, options) {
        Ok(target) => target,
        Err(err) => {
            manager.close().await;
            return Err(Failure::lock("bad lock", &err));
        }
    };
    let acquired = tokio::select! {
        acquired = target.acquire(&hold.name, hold.wait) => acquired,
        signal = signals.recv() => Err(Signals::ended_waiting(signal)),
    };
    let held = match acquired {
        Ok(Some(held)) => held,
        Ok(None) => {
            let holders = target.busy_because(&manager, &hold.name).await;
            manager.close().await;
            let waited = match hold.wait {
                Some(w) if !w.is_zero() => format!(" after waiting {}", show::short(w)),
                _ => String::new(),
            };
            eprintln!(
                "distlock: {} is busy{holders}{waited}; not running the command",
                target.what(&hold.name)
            );
            return Ok(exit::BUSY);
        }
        Err(failure) => {
            manager.close().await;
            return Err(failure);
        }
    };
    let outcome = supervise(&hold, &target, &held, &mut signals).await;
    if outcome.as_ref().is_ok_and(|o| o.lost) {
        manager.close().await;
    } else {
        release(&manager, held).await;
    }
    outcome.map(|o| o.code)
}

/// What `hold` takes: a lock, the read side of a read-write lock, or one
/// permit of a semaphore.
enum Target {
    Lock(Lock),
    Read(RwLock),
    Permit(Semaphore),
}

/// What `hold` holds while the command runs.
enum Held {
    Lock(LockGuard),
    Read(ReadGuard),
    Permit(Permit),
}

impl Target {
    /// The handle the flags ask for (`--permits`, `--read`, or neither).
    fn new(manager: &LockManager, hold: &Hold, options: LockOptions) -> distlock::Result<Target> {
        let name = hold.name.clone();
        Ok(match (hold.permits, hold.read) {
            (Some(permits), _) => Target::Permit(manager.new_semaphore(name, permits, options)?),
            (None, true) => Target::Read(manager.new_rw_lock(name, options)?),
            (None, false) => Target::Lock(manager.new_lock(name, options)?),
        })
    }

    /// `DISTLOCK_KIND` for the command: `lock`, `read` or `permit`.
    fn kind(&self) -> &'static str {
        match self {
            Target::Lock(_) => "lock",
            Target::Read(_) => "read",
            Target::Permit(_) => "permit",
        }
    }

    /// What is taken, for messages: ``lock `x` ``, ``read lock `x` ``,
    /// ``semaphore `x` ``.
    fn what(&self, name: &str) -> String {
        match self {
            Target::Lock(_) => format!("lock `{name}`"),
            Target::Read(_) => format!("read lock `{name}`"),
            Target::Permit(_) => format!("semaphore `{name}`"),
        }
    }

    /// Takes it: `None` when it stayed busy past `wait` (`0` tries once,
    /// `None` waits as long as it takes).
    async fn acquire(&self, name: &str, wait: Option<Duration>) -> Result<Option<Held>, Failure> {
        let taken = match self {
            Target::Lock(lock) => match wait {
                None => lock.lock().await.map(Some),
                Some(Duration::ZERO) => lock.try_lock().await,
                Some(wait) => timed_out(lock.lock_timeout(wait).await),
            }
            .map(|g| g.map(Held::Lock)),
            Target::Read(rw) => match wait {
                None => rw.read().await.map(Some),
                Some(Duration::ZERO) => rw.try_read().await,
                Some(wait) => timed_out(rw.read_timeout(wait).await),
            }
            .map(|g| g.map(Held::Read)),
            Target::Permit(sem) => match wait {
                None => sem.acquire().await.map(Some),
                Some(Duration::ZERO) => sem.try_acquire().await,
                Some(wait) => timed_out(sem.acquire_timeout(wait).await),
            }
            .map(|p| p.map(Held::Permit)),
        };
        taken.map_err(|e| Failure::lock(&format!("cannot take {}", self.what(name)), &e))
    }

    /// Who keeps it busy, for the exit-75 message: ` (held by ..., token N)`,
    /// or nothing when that cannot be read.
    async fn busy_because(&self, manager: &LockManager, name: &str) -> String {
        if let Target::Permit(sem) = self {
            let Ok(Some(info)) = manager.semaphore_info(name).await else {
                return String::new();
            };
            let holders: Vec<String> = info
                .holders
                .iter()
                .map(|h| format!("{} token {}", show::owner(&h.owner), h.fencing_token))
                .collect();
            let waiting = match info.waiters {
                0 => String::new(),
                n => format!("; {n} waiting"),
            };
            return format!(
                " ({} of {} permits held: {}{waiting})",
                info.holders.len(),
                sem.permits(),
                holders.join(", ")
            );
        }
        let Ok(Some(info)) = manager.lock_info(name).await else {
            return String::new();
        };
        let holder = format!("{}, token {}", show::owner(&info.owner), info.fencing_token);
        match (self, info.readers) {
            (_, 0) => format!(" (held by {holder})"),
            (Target::Read(_), readers) => format!(
                " ({readers} reading, oldest {holder}; a writer waits ahead of new readers)"
            ),
            (_, readers) => format!(" (held by {readers} readers, oldest {holder})"),
        }
    }
}

/// A bounded wait's timeout is a busy lock (`None`), not an error.
fn timed_out<G>(taken: distlock::Result<G>) -> distlock::Result<Option<G>> {
    match taken {
        Err(e) if e.code() == ErrorCode::Timeout => Ok(None),
        other => other.map(Some),
    }
}

impl Held {
    fn fencing_token(&self) -> u64 {
        match self {
            Held::Lock(g) => g.fencing_token(),
            Held::Read(g) => g.fencing_token(),
            Held::Permit(p) => p.fencing_token(),
        }
    }

    /// Resolves when it is lost (or released).
    fn lost(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        match self {
            Held::Lock(g) => Box::pin(g.lost()),
            Held::Read(g) => Box::pin(g.lost()),
            Held::Permit(p) => Box::pin(p.lost()),
        }
    }

    async fn release(self) -> distlock::Result<()> {
        match self {
            Held::Lock(g) => g.unlock().await,
            Held::Read(g) => g.release().await,
            Held::Permit(p) => p.release().await,
        }
    }
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
    target: &Target,
    held: &Held,
    signals: &mut Signals,
) -> Result<Outcome, Failure> {
    let mut child = spawn(hold, target, held)?;
    let Some(pid) = child.id().map(|id| Pid::from_raw(id as i32)) else {
        // Already reaped: it ran and ended.
        let status = child.wait().await.map_err(waiting)?;
        return Ok(Outcome {
            code: status_code(status),
            lost: false,
        });
    };
    let mut lost = held.lost();
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
                let what = match target {
                    Target::Permit(_) => format!("the permit of semaphore `{}`", hold.name),
                    other => other.what(&hold.name),
                };
                eprintln!(
                    "distlock: {what} was lost (lease not renewed in time, or force-unlocked); \
                     stopping the command (SIGTERM, SIGKILL after {})",
                    show::short(hold.grace)
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

/// Starts the command with the lock's name, fencing token and kind in its
/// environment, through the [`exec`] helper: the command gets SIGKILL if
/// distlock dies without stopping it.
fn spawn(hold: &Hold, target: &Target, held: &Held) -> Result<Child, Failure> {
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
        .env("DISTLOCK_FENCING_TOKEN", held.fencing_token().to_string())
        .env("DISTLOCK_KIND", target.kind())
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
async fn release(manager: &LockManager, held: Held) {
    if let Err(err) = held.release().await {
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
