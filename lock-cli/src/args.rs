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
  distlock -n /shop info --semaphore crawl      a semaphore's permits, holders, waiters
  distlock -n /shop force-unlock --semaphore crawl 1234
                                                remove the permit holder with token 1234
  distlock -n /shop watch                       live acquisitions, releases, hand-offs
  distlock -n /ops hold nightly --wait 0 ./backup.sh
                                                run backup.sh on one machine at a time;
                                                exit 75 at once if another runs it
  distlock -n /ops elect scheduler ./scheduler  run the scheduler on the elected leader only;
                                                the next candidate takes over when it ends
  distlock -n /ops leader scheduler --watch     who leads, and every change
  distlock completions bash > /etc/bash_completion.d/distlock

Environment: DISTLOCK_ENDPOINTS, DISTLOCK_NAMESPACE, DISTLOCK_USER, DISTLOCK_PASSWORD,
DISTLOCK_CACERT, DISTLOCK_CERT, DISTLOCK_KEY, DISTLOCK_TIMEOUT stand in for the flags.

Exit status: 0 ok; 1 not held (info, force-unlock), no leader (leader) or failure;
2 bad input; 69 etcd unreachable; hold and elect: the command's status, 75 busy
(another leads) past --wait, 76 lock (leadership) lost while the command ran,
126/127 command not executable/not found, 128+N command killed by signal N (or
signal N while waiting for the lock or to lead).";

/// Inspect, watch and force-unlock distlock locks on etcd, run commands
/// under a fleet-wide lock or on an elected leader, and show who leads.
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
    /// under `{NS}/locks/`, semaphores under `{NS}/semaphores/`, elections
    /// under `{NS}/elections/`. Empty (the default) means `/locks/`,
    /// `/semaphores/` and `/elections/`.
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
    /// List held locks, semaphores in use and elections with candidates:
    /// name, kind, holders, owner (an election's: its leader's value),
    /// fencing token, held for, expires in, waiters.
    List {
        /// Only locks, semaphores and elections whose name starts with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Print a JSON array: an object per lock (the `LockInfo` fields,
        /// `"kind": "lock"`), per semaphore (`"kind": "semaphore"`) and per
        /// election (`"kind": "election"`).
        #[arg(long)]
        json: bool,
    },
    /// Show one lock: its holder (every reader when readers hold it) and the
    /// owners of its waiters; with --semaphore, a semaphore's permits,
    /// holders and waiters. Exit 1 when nobody holds it.
    Info {
        /// The lock name, as passed to `manager.new_lock(NAME, ..)` or
        /// `new_rw_lock` (or `new_semaphore`, with --semaphore).
        name: String,
        /// The semaphore NAME, not the lock (a semaphore and a lock of one
        /// name are unrelated).
        #[arg(long)]
        semaphore: bool,
        /// Print a JSON object (`null` when not held).
        #[arg(long)]
        json: bool,
    },
    /// Remove a holder of a lock (or, with --semaphore, a permit's holder), so
    /// the next waiter proceeds; the holder's guard reports the lock lost.
    /// Asks on a terminal unless --yes.
    #[command(name = "force-unlock")]
    ForceUnlock {
        /// The lock name.
        name: String,
        /// The fencing token of the holder to remove, as `info` shows it:
        /// needed when several hold (readers, a semaphore's permits); a
        /// holder with another token is left alone.
        token: Option<u64>,
        /// Remove a holder of the semaphore NAME, not of the lock.
        #[arg(long)]
        semaphore: bool,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Print acquisitions, waits, releases, hand-offs and force-unlocks of
    /// locks, readers and semaphores' permits as they happen, until Ctrl-C.
    Watch {
        /// Only locks and semaphores whose name starts with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Run a command while holding a lock (a fleet-wide flock(1)); exits with
    /// the command's status.
    Hold(Hold),
    /// Campaign in an election and run a command while leading it; resign
    /// when it exits, and exit with its status.
    Elect(Elect),
    /// Show who leads an election (value, fencing token, expiry); with
    /// --watch, every change as it happens. Exit 1 when nobody leads.
    Leader {
        /// The election name, as passed to `manager.new_election(NAME, ..)`
        /// (`etcdctl elect {NS}/elections/NAME`).
        name: String,
        /// Print the current leader, then every change (a new leader, a new
        /// value, no leader) once each, until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Print a JSON object (with --watch, one per line).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `distlock hold`.
#[derive(Debug, Args)]
#[command(after_help = "\
Options go between NAME and CMD; the first word that is not an option starts
the command, and every word from there on is the command's (`--` before CMD
also ends distlock's options). Durations are seconds when a bare number
(`--wait 5`, `--grace 2.5`; `--ttl` takes whole seconds) or `500ms`, `30s`, `5m`.

--permits N holds one of N permits of the semaphore NAME (at most N copies of the
command run at once, fleet-wide); --read holds the read side of NAME's read-write
lock (readers run together, `hold NAME` without flags excludes them and is
excluded by them). Everything else is the same for all three.

The command runs with DISTLOCK_LOCK (the name), DISTLOCK_FENCING_TOKEN and
DISTLOCK_KIND (`lock`, `read` or `permit`) in its environment; pass the token with
writes to storage that checks it. Only a `lock` token is held by one holder at a
time: readers and permits hold theirs together with others.

If the lock is lost while the command runs (its lease could not be renewed in
time, or someone force-unlocked it), the command gets SIGTERM, then SIGKILL after
--grace, and distlock exits 76. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT sent to
distlock are passed on to the command; the lock is released when it exits (on a
terminal, Ctrl-C also reaches the command directly: it shares distlock's process
group, as with flock). While distlock still waits for the lock, they end it with
status 128+N and the command does not run. Signals go to the command's process
only: a shell script should `exec` its last step or pass signals on.

If distlock itself dies (SIGKILL, the OOM killer, a crash), the kernel sends the
command SIGKILL at once (Linux PR_SET_PDEATHSIG): left running, it would go on
unlocked once the lease lapses, next to a second copy on another machine. SIGKILL
rather than SIGTERM, because no distlock is left to enforce --grace. The kernel
drops this for set-user-ID commands (run `sudo distlock hold NAME CMD`, not
`distlock hold NAME sudo CMD`), and it reaches the command's process only.

Examples:
  distlock hold deploy ./deploy.sh prod
  distlock hold nightly --wait 0 ./backup.sh; [ $? -eq 75 ] && echo \"another machine runs it\"
  distlock hold report -- ./report.sh --wait 5      (--wait 5 is report.sh's)
  distlock hold crawl --permits 4 ./crawl.sh        (at most 4 crawlers, fleet-wide)
  distlock hold catalog --read ./export.sh          (exports run together; `hold catalog`
                                                    ./import.sh waits for them, and they for it)")]
pub struct Hold {
    /// The lock name: the same lock as `manager.new_lock(NAME, ..)` in a
    /// service and `etcdctl lock {NS}/locks/NAME` (with --permits, the
    /// semaphore `manager.new_semaphore(NAME, N, ..)`).
    pub name: String,
    /// Hold one of N permits of the semaphore NAME instead of its lock: at
    /// most N copies run at once, fleet-wide. Every user of the semaphore
    /// must give the same N (1 to 1024); a semaphore and a lock of one name
    /// are unrelated.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(distlock::MAX_PERMITS)),
        conflicts_with = "read"
    )]
    pub permits: Option<u32>,
    /// Hold the read side of NAME's read-write lock: read holders run
    /// together; `hold NAME` (and a service's write lock or lock of NAME)
    /// excludes them, and a writer queued first goes first.
    #[arg(long)]
    pub read: bool,
    /// Wait at most this long for a busy lock, then exit 75 without running
    /// the command; `0` tries once. Default: wait as long as it takes.
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub wait: Option<Duration>,
    /// Lease TTL (whole seconds, at least 1): how long the lock outlives a
    /// distlock that was killed or cut off. Renewed every TTL/3.
    #[arg(long, value_parser = ttl, default_value = "30s", value_name = "DUR")]
    pub ttl: Duration,
    /// After a lost lock, how long the command has between SIGTERM and SIGKILL.
    #[arg(long, value_parser = duration, default_value = "10s", value_name = "DUR")]
    pub grace: Duration,
    /// The command and its arguments: every word from the first one that is
    /// not a distlock option (or from after `--`) on.
    // `trailing_var_arg` without `allow_hyphen_values`: a misspelt option
    // before CMD (`--wiat 5`) is an error, not a command named `--wiat`.
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `distlock elect`.
#[derive(Debug, Args)]
#[command(after_help = "\
Options go between NAME and CMD, as for `hold`: the first word that is not an
option starts the command (`--` before CMD also ends distlock's options).

elect campaigns in the election NAME with --value (default HOST:PID of this
distlock), waits until it leads (at most --wait), runs the command while it
leads, and resigns when the command exits: the next candidate leads at once.
It is the same election as `manager.new_election(NAME, ..)` in a service and
`etcdctl elect {NS}/elections/NAME`; `distlock leader NAME` shows who leads.

The command runs with DISTLOCK_ELECTION (the name), DISTLOCK_VALUE (the value it
leads with), DISTLOCK_FENCING_TOKEN (strictly increasing from one leader to the
next; pass it with writes to storage that checks it) and DISTLOCK_KIND=leader.

Everything else is as for `hold`: if the leadership is lost while the command
runs (its lease could not be renewed in time, or its key was deleted), the
command gets SIGTERM, then SIGKILL after --grace, and distlock exits 76. Ctrl-C,
SIGTERM, SIGHUP and SIGQUIT are passed on to the command; while distlock still
campaigns they end it with 128+N and the command does not run. If distlock dies,
the kernel kills the command (Linux PR_SET_PDEATHSIG) and the next candidate
leads once the lease lapses (--ttl).

Examples:
  distlock elect scheduler ./scheduler.sh       every host runs this; one schedules
  distlock elect scheduler --value 10.0.0.7:8080 -- ./serve.sh
                                                others see the value: `distlock leader scheduler`
  distlock elect report --wait 0 ./report.sh; [ $? -eq 75 ] && echo \"another host leads\"")]
pub struct Elect {
    /// The election name: the same election as `manager.new_election(NAME,
    /// ..)` in a service and `etcdctl elect {NS}/elections/NAME` (for a name
    /// with `/` or `%`, etcdctl needs it escaped: `%2F`, `%25`).
    pub name: String,
    /// The value to lead with, which `distlock leader`, `etcdctl elect -l`
    /// and services' `Election::leader` show: 1 byte to 64 KiB. Default:
    /// HOST:PID of this distlock.
    #[arg(long, value_name = "V", value_parser = proclaimed_value)]
    pub value: Option<String>,
    /// Wait at most this long to lead, then exit 75 without running the
    /// command; `0` tries once. Default: wait as long as it takes.
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub wait: Option<Duration>,
    /// Lease TTL (whole seconds, at least 1): how long the leadership
    /// outlives a distlock that was killed or cut off. Renewed every TTL/3.
    #[arg(long, value_parser = ttl, default_value = "30s", value_name = "DUR")]
    pub ttl: Duration,
    /// After a lost leadership, how long the command has between SIGTERM and
    /// SIGKILL.
    #[arg(long, value_parser = duration, default_value = "10s", value_name = "DUR")]
    pub grace: Duration,
    /// The command and its arguments: every word from the first one that is
    /// not a distlock option (or from after `--`) on.
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Parses a value to proclaim: 1 byte to [`distlock::MAX_VALUE_LEN`] (the
/// library refuses others too; checked here so that bad input is exit 2
/// before etcd is asked).
fn proclaimed_value(text: &str) -> Result<String, String> {
    distlock::Election::check_value(text.as_bytes()).map_err(|e| e.message().to_owned())?;
    Ok(text.to_owned())
}

/// Parses a bare number of seconds (`5`, `0`, `2.5`) or a duration with
/// units (`500ms`, `30s`, `5m`, `1h 30m`).
fn duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let bare_seconds =
        !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if bare_seconds {
        humantime::parse_duration(&format!("{trimmed}s"))
    } else {
        humantime::parse_duration(text)
    };
    parsed.map_err(|e| {
        format!("{e} (durations look like `5` or `2.5` (seconds), `500ms`, `30s`, `5m`)")
    })
}

/// Parses a lease TTL: a [`duration`] of whole seconds, at least one (etcd
/// leases have whole-second TTLs; a fraction would be rounded up unseen).
fn ttl(text: &str) -> Result<Duration, String> {
    let ttl = duration(text)?;
    if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
        return Err("the TTL is whole seconds, at least 1 (`2`, `30s`, `1m`)".into());
    }
    Ok(ttl)
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
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["soon", "", "-1", ".5", "5.", "1.2.3", "5 parsecs"] {
            let err = duration(bad).unwrap_err();
            assert!(err.contains("durations look like"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(duration(" 7 "), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn a_ttl_is_whole_seconds_at_least_one() {
        assert_eq!(ttl("2"), Ok(Duration::from_secs(2)));
        assert_eq!(ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(ttl("1m"), Ok(Duration::from_secs(60)));
        for bad in ["0", "0s", "2.5", "1500ms", "500ms"] {
            let err = ttl(bad).unwrap_err();
            assert!(err.contains("whole seconds"), "{bad:?}: {err}");
        }
        assert!(ttl("soon").unwrap_err().contains("durations look like"));
    }

    /// Parses `distlock ARGS` into its `hold` arguments.
    fn hold(args: &[&str]) -> Result<Hold, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("distlock").chain(args.iter().copied()))?;
        match cli.command {
            Command::Hold(hold) => Ok(hold),
            other => panic!("not hold: {other:?}"),
        }
    }

    fn command(hold: &Hold) -> Vec<&str> {
        hold.command.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn hold_takes_the_command_with_or_without_a_double_dash() {
        let h = hold(&["hold", "job", "cmd", "a", "-x", "--wait", "3"]).unwrap();
        assert_eq!(command(&h), ["cmd", "a", "-x", "--wait", "3"]);
        assert_eq!(h.wait, None, "options after CMD are the command's");

        let h = hold(&["hold", "job", "--wait", "5", "--ttl", "2", "cmd", "-x"]).unwrap();
        assert_eq!(command(&h), ["cmd", "-x"]);
        assert_eq!(h.wait, Some(Duration::from_secs(5)));
        assert_eq!(h.ttl, Duration::from_secs(2));

        let h = hold(&["hold", "job", "--", "cmd", "--wait", "x"]).unwrap();
        assert_eq!(command(&h), ["cmd", "--wait", "x"]);
        assert_eq!(h.wait, None);

        let h = hold(&["hold", "job", "--grace", "0.5", "--", "--odd-name"]).unwrap();
        assert_eq!(command(&h), ["--odd-name"]);
        assert_eq!(h.grace, Duration::from_millis(500));

        // A later `--` belongs to the command, as with flock.
        let h = hold(&["hold", "job", "cmd", "--", "x"]).unwrap();
        assert_eq!(command(&h), ["cmd", "--", "x"]);

        // Global flags between NAME and CMD are distlock's; after CMD, the command's.
        let cli = Cli::try_parse_from(["distlock", "hold", "job", "-n", "/ops", "cmd", "-n", "x"])
            .unwrap();
        assert_eq!(cli.global.namespace, "/ops");
        let Command::Hold(h) = cli.command else {
            panic!("not hold")
        };
        assert_eq!(command(&h), ["cmd", "-n", "x"]);
    }

    #[test]
    fn hold_rejects_a_misspelt_option_instead_of_running_it() {
        let err = hold(&["hold", "job", "--wiat", "5", "cmd"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        let err = hold(&["hold", "job"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = hold(&["hold", "job", "--wait", "soon", "cmd"]).unwrap_err();
        assert!(err.to_string().contains("durations look like"), "{err}");
        let err = hold(&["hold", "job", "--ttl", "2.5", "cmd"]).unwrap_err();
        assert!(err.to_string().contains("whole seconds"), "{err}");
    }

    #[test]
    fn hold_takes_permits_or_read_but_not_both() {
        let h = hold(&["hold", "crawl", "--permits", "3", "cmd"]).unwrap();
        assert_eq!((h.permits, h.read), (Some(3), false));
        let h = hold(&["hold", "doc", "--read", "cmd", "--permits", "2"]).unwrap();
        assert_eq!(
            (h.permits, h.read),
            (None, true),
            "options after CMD are the command's"
        );
        let h = hold(&["hold", "job", "cmd"]).unwrap();
        assert_eq!((h.permits, h.read), (None, false));

        let err = hold(&["hold", "x", "--permits", "2", "--read", "cmd"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(hold(&["hold", "x", "--permits", "-1", "cmd"]).is_err());
        for bad in ["0", "1025", "two"] {
            let err = hold(&["hold", "x", "--permits", bad, "cmd"]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        assert!(hold(&["hold", "x", "--permits", "1024", "cmd"]).is_ok());
    }

    /// Parses `distlock ARGS` into its `elect` arguments.
    fn elect(args: &[&str]) -> Result<Elect, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("distlock").chain(args.iter().copied()))?;
        match cli.command {
            Command::Elect(elect) => Ok(elect),
            other => panic!("not elect: {other:?}"),
        }
    }

    #[test]
    fn elect_takes_its_command_as_hold_does_and_checks_the_value() {
        let e = elect(&[
            "elect", "s", "--value", "v", "--wait", "2", "cmd", "--value", "x",
        ])
        .unwrap();
        assert_eq!(e.value.as_deref(), Some("v"));
        assert_eq!(e.wait, Some(Duration::from_secs(2)));
        let command: Vec<&str> = e.command.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            command,
            ["cmd", "--value", "x"],
            "options after CMD are the command's"
        );
        let e = elect(&["elect", "s", "--", "--odd"]).unwrap();
        assert_eq!((e.value, e.command.len()), (None, 1));

        let err = elect(&["elect", "s", "--value", "", "cmd"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let longest = "x".repeat(distlock::MAX_VALUE_LEN);
        assert!(elect(&["elect", "s", "--value", &longest, "cmd"]).is_ok());
        let over = format!("{longest}x");
        let err = elect(&["elect", "s", "--value", &over, "cmd"]).unwrap_err();
        assert!(err.to_string().contains("1 to 65536 bytes"), "{err}");
        let err = elect(&["elect", "s"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = elect(&["elect", "s", "--ttl", "0", "cmd"]).unwrap_err();
        assert!(err.to_string().contains("whole seconds"), "{err}");
    }
}
