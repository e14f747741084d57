//! How `hold` and `elect` start their command so that the command dies with
//! distlock.
//!
//! If distlock dies without stopping the command (SIGKILL, the OOM killer, a
//! crash), nobody renews the lease: it lapses after the TTL, another host
//! takes the lock and starts a second copy while this one still runs. So the
//! command gets a parent-death signal (Linux `PR_SET_PDEATHSIG`): the kernel
//! sends it SIGKILL the moment distlock dies, however it dies.
//!
//! The signal has to be set in the child, between fork and exec, and the
//! workspace forbids `unsafe` (`CommandExt::pre_exec` is unsafe). So distlock
//! starts its own binary as `distlock __exec PID CMD ARGS...`; that process
//! sets the death signal (a safe nix call), checks that distlock (PID) is
//! still its parent, and replaces itself with the command (execve, through
//! the safe `CommandExt::exec`). The command keeps the helper's pid, so
//! distlock's signals reach it directly and its exit status is distlock's to
//! report, as when distlock started it itself. The check matters: if distlock
//! died before the death signal was set, the signal never comes, and the
//! command must not start.
//!
//! Why SIGKILL and not SIGTERM: a command that ignores or is slow on SIGTERM
//! would run on unlocked, and there is no supervisor left to escalate after
//! `--grace` (the lost-lock path, where distlock is alive, does send SIGTERM
//! first).
//!
//! Limits, from the kernel: the death signal is cleared when the command is
//! a set-user-ID or set-group-ID program or has file capabilities (run `sudo
//! distlock hold NAME CMD`, not `distlock hold NAME sudo CMD`); it reaches the
//! command's process, not the processes that one starts (a shell script
//! should `exec` its last step); and it exists on Linux only (elsewhere the
//! helper runs the command without it, as distlock did before).

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use nix::unistd::{getppid, Pid};

use crate::exit;

/// The hidden first argument that makes `distlock` the helper. `main` looks
/// for it before parsing the command line, so clap, `--help` and the
/// completion scripts never see it.
const SUBCOMMAND: &str = "__exec";

/// The helper invocation that runs `program args...` tied to this process:
/// the caller adds the environment and spawns it.
pub fn command(program: &OsStr, args: &[OsString]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(own_binary());
    command
        .arg0("distlock")
        .arg(SUBCOMMAND)
        .arg(std::process::id().to_string())
        .arg(program)
        .args(args);
    command
}

/// This very binary. `/proc/self/exe` still opens it when the file was
/// replaced or deleted since distlock started (a package upgrade during a
/// long `--wait`), where the path `current_exe` gives would run a different
/// version, or nothing; `current_exe` is the fallback without /proc.
fn own_binary() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe;
    }
    std::env::current_exe().unwrap_or(proc_exe)
}

/// If this process was started as the helper, becomes the command and never
/// returns (on failure it exits with a status `hold` and `elect` pass through: 127 not
/// found, 126 not executable). Otherwise returns at once.
pub fn run_if_helper() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(SUBCOMMAND)) {
        return;
    }
    std::process::exit(become_command(args));
}

/// Sets the death signal, checks the parent and execs `program args...`;
/// returns only the exit status for a failure, having said why on stderr.
fn become_command(mut args: impl Iterator<Item = OsString>) -> i32 {
    let parent = args
        .next()
        .and_then(|pid| pid.into_string().ok()?.parse::<i32>().ok());
    let (Some(parent), Some(program)) = (parent, args.next()) else {
        eprintln!(
            "distlock: usage: distlock {SUBCOMMAND} PARENT_PID CMD [ARGS...] (run by `hold` and `elect`)"
        );
        return exit::USAGE;
    };
    if let Err(err) = die_with_parent() {
        eprintln!(
            "distlock: cannot tie the command to distlock (prctl PR_SET_PDEATHSIG): {err}; \
             not running it"
        );
        return exit::CANNOT_EXECUTE;
    }
    if getppid() != Pid::from_raw(parent) {
        // Our parent died before the death signal was set: it will never
        // come, and nobody holds the lock for us.
        eprintln!("distlock: distlock exited before the command started; not running it");
        return exit::FAILURE;
    }
    let err = std::process::Command::new(&program).args(args).exec();
    eprintln!("distlock: cannot run {}: {err}", program.to_string_lossy());
    match err.kind() {
        ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_EXECUTE,
    }
}

/// Asks the kernel for SIGKILL when the parent dies (see the module docs).
#[cfg(target_os = "linux")]
fn die_with_parent() -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
}

/// No parent-death signal outside Linux: the command runs as before.
#[cfg(not(target_os = "linux"))]
fn die_with_parent() -> nix::Result<()> {
    Ok(())
}
