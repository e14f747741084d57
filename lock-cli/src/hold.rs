//! `distlock hold NAME [OPTIONS] CMD...`: run a command under a fleet-wide lock,
//! the read side of a read-write lock (`--read`), or one of N permits of a
//! semaphore (`--permits N`); and [`run_under`], the flow that `hold` and
//! `elect` share: take the [`Target`], run the command under it
//! ([`child::supervise`]), give it back.

use std::ffi::OsString;
use std::time::Duration;

use distlock::{LockManager, LockOptions};

use crate::args::{Global, Hold};
use crate::child::{self, Signals};
use crate::claim::{Held, Target};
use crate::connect;
use crate::exit::{self, Failure};
use crate::show;

/// What `hold` and `elect` share: how long to wait, the lease TTL, the
/// grace after a loss, and the command.
pub struct Job<'a> {
    pub wait: Option<Duration>,
    pub ttl: Duration,
    pub grace: Duration,
    pub command: &'a [OsString],
}

/// Runs `hold`; the exit status is the command's, or one of [`exit`]'s.
pub async fn run(global: &Global, hold: Hold) -> Result<i32, Failure> {
    let job = Job {
        wait: hold.wait,
        ttl: hold.ttl,
        grace: hold.grace,
        command: &hold.command,
    };
    run_under(global, &job, |manager, options| {
        let name = hold.name.clone();
        match (hold.permits, hold.read) {
            (Some(permits), _) => manager
                .new_semaphore(name, permits, options)
                .map(Target::Permit),
            (None, true) => manager.new_rw_lock(name, options).map(Target::Read),
            (None, false) => manager.new_lock(name, options).map(Target::Lock),
        }
        .map_err(|e| Failure::lock("bad lock", &e))
    })
    .await
}

/// Connects, makes the target with `target` (given the manager and the
/// job's lease options), takes it within the job's wait (exit 75 past it),
/// runs the command under it and gives it back; the exit status is the
/// command's, or one of [`exit`]'s.
pub async fn run_under(
    global: &Global,
    job: &Job<'_>,
    target: impl FnOnce(&LockManager, LockOptions) -> Result<Target, Failure>,
) -> Result<i32, Failure> {
    // Listen before anything else, so that Ctrl-C never kills distlock
    // between taking the lock and starting the command.
    let mut signals = Signals::listen()?;

    let manager = connect::manager(global).await?;
    let options = LockOptions::default()
        .ttl(job.ttl)
        .renew_interval(job.ttl / 3);
    let target = match target(&manager, options) {
        Ok(target) => target,
        Err(failure) => {
            manager.close().await;
            return Err(failure);
        }
    };
    let acquired = tokio::select! {
        acquired = target.acquire(job.wait) => acquired,
        signal = signals.recv() => Err(Signals::ended_waiting(signal, target.waiting_for())),
    };
    let held = match acquired {
        Ok(Some(held)) => held,
        Ok(None) => {
            let busy = target.busy(&manager).await;
            manager.close().await;
            let waited = match job.wait {
                Some(w) if !w.is_zero() => format!(" after waiting {}", show::short(w)),
                _ => String::new(),
            };
            eprintln!("distlock: {busy}{waited}; not running the command");
            return Ok(exit::BUSY);
        }
        Err(failure) => {
            manager.close().await;
            return Err(failure);
        }
    };
    let command = child::Command {
        argv: job.command,
        env: target.env(&held),
        grace: job.grace,
    };
    let outcome = child::supervise(command, held.lost(), &target.lost_why(), &mut signals).await;
    if outcome.as_ref().is_ok_and(|o| o.lost) {
        manager.close().await;
    } else {
        release(&manager, held).await;
    }
    outcome.map(|o| o.code)
}

/// Releases what was held and closes the manager; a failed release is
/// reported (it then frees when its lease runs out).
async fn release(manager: &LockManager, held: Held) {
    if let Err(err) = held.release().await {
        eprintln!(
            "distlock: warning: {}; it frees when its lease runs out",
            crate::exit::chain(&err)
        );
    }
    manager.close().await;
}
