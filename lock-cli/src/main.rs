//! `distlock`: the operator's command for distlock locks on etcd.
//!
//! `list`, `info`, `force-unlock` and `watch` show and manage the locks,
//! read-write locks and semaphores that services take with
//! `distlock::LockManager`; `hold` runs a command under a fleet-wide lock,
//! like `flock(1)` across machines (or under a read lock, or one of N
//! permits); `elect` runs one while leading an election, and `leader` shows
//! who leads. See `distlock --help` and docs/cli.md.
//!
//! Exit statuses are in [`exit`]; they are part of the command's interface.

mod args;
mod child;
mod claim;
mod connect;
mod elect;
mod exec;
mod exit;
mod hold;
mod inspect;
mod keys;
mod leader;
mod show;
mod unlock;
mod watch;

use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};
use crate::exit::Failure;

fn main() {
    // `hold` and `elect` start their command as `distlock __exec ...`: that process
    // becomes the command here and never returns.
    exec::run_if_helper();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "distlock", &mut std::io::stdout());
            0
        }
        command => run(cli.global, command),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Runs one subcommand on a fresh runtime and turns its outcome into an exit
/// status. The runtime is shut down with a bound, so a stuck background task
/// (say, a release to an etcd that went away) cannot keep the command alive.
fn run(global: args::Global, command: Command) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("distlock: cannot start the async runtime: {err}");
            return exit::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            Command::List { prefix, json } => inspect::list(&global, &prefix, json).await,
            Command::Info {
                name,
                semaphore,
                json,
            } => inspect::info(&global, &name, semaphore, json).await,
            Command::ForceUnlock {
                name,
                token,
                semaphore,
                yes,
            } => {
                let request = unlock::Request {
                    name: &name,
                    token,
                    semaphore,
                    yes,
                };
                unlock::force_unlock(&global, request).await
            }
            Command::Watch { prefix } => watch::run(&global, &prefix).await,
            Command::Hold(hold) => hold::run(&global, hold).await,
            Command::Elect(elect) => elect::run(&global, elect).await,
            Command::Leader { name, watch, json } => leader::run(&global, &name, watch, json).await,
            Command::Completions { .. } => Ok(exit::SUCCESS),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            eprintln!("distlock: {message}");
            code
        }
    }
}
