//! `distlock elect NAME [OPTIONS] CMD...`: campaign in an election and run a
//! command while leading it, through the flow `hold` uses ([`hold::run_under`]):
//! the same waiting, exit statuses, signals and supervision, with the
//! leadership ([`Target::Leader`]) in place of a lock. The leader resigns when
//! the command exits, so the next candidate leads at once.

use crate::args::{Elect, Global};
use crate::claim::Target;
use crate::exit::Failure;
use crate::hold::{self, Job};

/// Runs `elect`; the exit status is the command's, or one of [`crate::exit`]'s.
pub async fn run(global: &Global, elect: Elect) -> Result<i32, Failure> {
    let job = Job {
        wait: elect.wait,
        ttl: elect.ttl,
        grace: elect.grace,
        command: &elect.command,
    };
    let value = elect.value.unwrap_or_else(default_value).into_bytes();
    hold::run_under(global, &job, |manager, options| {
        let election = manager
            .new_election(elect.name.clone(), options)
            .map_err(|e| Failure::lock("bad election", &e))?;
        Ok(Target::Leader { election, value })
    })
    .await
}

/// `HOST:PID` of this process: which distlock leads, for whoever looks.
fn default_value() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}:{}", std::process::id())
}
