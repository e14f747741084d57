//! The command line: global connection flags and the subcommands.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  distlock list                                 held locks in the root namespace
  distlock -n /shop list order: --json          locks of /shop whose name starts with `order:`
  distlock -n /shop info order:42               holder, fencing token, expiry and waiters
  distlock -n /shop force-unlock order:42       remove a stuck holder (asks first)
  distlock -n /shop watch                       live acquisitions, releases, hand-offs
  distlock -n /ops hold nightly --wait 0s -- ./backup.sh
                                                run backup.sh on one machine at a time;
                                                exit 75 at once if another runs it
  distlock completions bash > /etc/bash_completion.d/distlock

Environment: DISTLOCK_ENDPOINTS, DISTLOCK_NAMESPACE, DISTLOCK_USER, DISTLOCK_PASSWORD,
DISTLOCK_CACERT, DISTLOCK_CERT, DISTLOCK_KEY, DISTLOCK_TIMEOUT stand in for the flags.

Exit status: 0 ok; 1 not held (info, force-unlock) or failure; 2 bad input;
69 etcd unreachable; hold: the command's status, 75 busy past --wait,
76 lock lost while the command ran, 126/127 command not executable/not found,
128+N command killed by signal N.";

/// Inspect, watch and force-unlock distlock locks on etcd, and run commands
/// under a fleet-wide lock.
#[derive(Debug, Parser)]
#[command(name = "distlock", version, after_help = EXAMPLES)]
pub struct Cli {
    /// How to reach etcd.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        global = true,
        env = "DISTLOCK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        value_name = "URL[,URL]"
    )]
    pub endpoints: Vec<String>,
    /// The namespace the services pass to `LockManager::connect`: locks live
    /// under `{NS}/locks/`. Empty (the default) means `/locks/`.
    #[arg(
        short,
        long,
        global = true,
        env = "DISTLOCK_NAMESPACE",
        default_value = "",
        value_name = "NS"
    )]
    pub namespace: String,
    /// etcd user name (needs --password).
    #[arg(long, global = true, env = "DISTLOCK_USER")]
    pub user: Option<String>,
    /// etcd password (prefer the environment variable to the flag).
    #[arg(long, global = true, env = "DISTLOCK_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify etcd's certificate; enables TLS.
    #[arg(long, global = true, env = "DISTLOCK_CACERT", value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate authentication.
    #[arg(
        long,
        global = true,
        env = "DISTLOCK_CERT",
        value_name = "PEM",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) belonging to --cert.
    #[arg(
        long,
        global = true,
        env = "DISTLOCK_KEY",
        value_name = "PEM",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// How long connecting, and each etcd request, may take.
    #[arg(
        long,
        global = true,
        env = "DISTLOCK_TIMEOUT",
        default_value = "5s",
        value_parser = duration,
        value_name = "DUR"
    )]
    pub timeout: Duration,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List held locks: name, owner, fencing token, held for, expires in, waiters.
    List {
        /// Only locks whose name starts with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Print a JSON array of objects with the `LockInfo` fields.
        #[arg(long)]
        json: bool,
    },
    /// Show one lock: its holder and the owners of its waiters. Exit 1 when
    /// nobody holds it.
    Info {
        /// The lock name, as passed to `manager.new_lock(NAME, ..)`.
        name: String,
        /// Print a JSON object (`null` when not held).
        #[arg(long)]
        json: bool,
    },
    /// Remove the current holder of a lock, so the next waiter proceeds; the
    /// holder's guard reports the lock lost. Asks on a terminal unless --yes.
    #[command(name = "force-unlock")]
    ForceUnlock {
        /// The lock name.
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Print acquisitions, waits, releases, hand-offs and force-unlocks as
    /// they happen, until Ctrl-C.
    Watch {
        /// Only locks whose name starts with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Run a command while holding a lock (a fleet-wide flock(1)); exits with
    /// the command's status.
    Hold(Hold),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `distlock hold`.
#[derive(Debug, Args)]
#[command(after_help = "\
The command runs with DISTLOCK_LOCK (the name) and DISTLOCK_FENCING_TOKEN in its
environment; pass the token with writes to storage that checks it.

If the lock is lost while the command runs (its lease could not be renewed in
time, or someone force-unlocked it), the command gets SIGTERM, then SIGKILL after
--grace, and distlock exits 76. Ctrl-C and SIGTERM sent to distlock are passed on
to the command; the lock is released when it exits (on a terminal, Ctrl-C also
reaches the command directly: it shares distlock's process group, as with flock).
Signals go to the command's process only: a shell script should `exec` its last
step or pass signals on.

Examples:
  distlock hold deploy -- ./deploy.sh prod
  distlock hold nightly --wait 0s -- ./backup.sh; [ $? -eq 75 ] && echo \"another machine runs it\"")]
pub struct Hold {
    /// The lock name: the same lock as `manager.new_lock(NAME, ..)` in a
    /// service and `etcdctl lock {NS}/locks/NAME`.
    pub name: String,
    /// Wait at most this long for a busy lock, then exit 75 without running
    /// the command; `0s` tries once. Default: wait as long as it takes.
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub wait: Option<Duration>,
    /// Lease TTL (whole seconds, at least 1s): how long the lock outlives a
    /// distlock that was killed or cut off. Renewed every TTL/3.
    #[arg(long, value_parser = duration, default_value = "30s", value_name = "DUR")]
    pub ttl: Duration,
    /// After a lost lock, how long the command has between SIGTERM and SIGKILL.
    #[arg(long, value_parser = duration, default_value = "10s", value_name = "DUR")]
    pub grace: Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Parses `500ms`, `30s`, `5m`, `1h 30m`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (durations look like `500ms`, `30s`, `5m`)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_and_bad_ones_explain() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert!(duration("soon").unwrap_err().contains("30s"));
    }
}
