//! `distlock leader NAME [--watch] [--json]`: who leads an election.
//!
//! The leader (its value and fencing token) is the public API's
//! ([`Election::leader`]); its key, lease expiry and the number of
//! candidates come from one read of the election's keys ([`keys::read_election`]),
//! where the leader is found by its token. Should another candidate lead by
//! the time of that read, the key and expiry show as unknown rather than
//! another candidate's.
//!
//! `--watch` follows [`Election::observe`]: the current leader, then each
//! change once, in order. A line repeating the one before it (the same
//! token and value) is never printed, so each change appears exactly once
//! even where the observation resumes at the current leader.

use std::time::{Duration, Instant, SystemTime};

use distlock::{Election, Leader, LockOptions};
use serde_json::{json, Value};

use crate::args::Global;
use crate::connect;
use crate::exit::{self, Failure};
use crate::inspect::pretty;
use crate::keys;
use crate::show;

/// Runs `leader`: exit 1 when nobody leads (without `--watch`).
pub async fn run(global: &Global, name: &str, watch: bool, json: bool) -> Result<i32, Failure> {
    let manager = connect::manager(global).await?;
    let outcome = match manager.new_election(name, LockOptions::default()) {
        Err(err) => Err(Failure::lock("bad election", &err)),
        Ok(election) if watch => follow(global, &election, json).await,
        Ok(election) => current(global, &election, json).await,
    };
    manager.close().await;
    outcome
}

/// Prints the current leader, or that nobody leads (exit 1).
async fn current(global: &Global, election: &Election, json: bool) -> Result<i32, Failure> {
    let name = election.name();
    let leader = election.leader().await;
    let leader = leader.map_err(|e| Failure::lock("reading the election", &e))?;
    let Some(leader) = leader else {
        if json {
            println!("{}", pretty(&show::election_json(name, None, 0)));
        } else {
            println!("{name}: no leader");
        }
        return Ok(exit::FAILURE);
    };
    let mut client = connect::client(global).await?;
    let candidates = keys::read_election(&mut client, &global.namespace, name).await?;
    let entry = candidates
        .iter()
        .find(|c| c.create_revision as u64 == leader.fencing_token);
    let expiry = match entry {
        Some(entry) => keys::expiries(&mut client, [entry.lease])
            .await?
            .remove(&entry.lease)
            .flatten(),
        None => None,
    };
    let key = entry.map(|e| e.key.as_str());
    if json {
        let object = show::leader_key_json(&leader.value, leader.fencing_token, key, expiry);
        let all = show::election_json(name, Some(object), candidates.len());
        println!("{}", pretty(&all));
        return Ok(exit::SUCCESS);
    }
    let at = show::timestamp(expiry);
    println!("election:    {name}");
    println!("value:       {}", show::value(&leader.value));
    println!("token:       {}", leader.fencing_token);
    println!("key:         {}", key.unwrap_or("-"));
    println!(
        "expires in:  {} (at {}, unless renewed)",
        show::until(expiry),
        at.as_str().unwrap_or("-")
    );
    println!(
        "candidates:  {} (the leader and {} waiting)",
        candidates.len(),
        candidates.len().saturating_sub(1)
    );
    Ok(exit::SUCCESS)
}

/// What a change is, after the leader before it: `leader` (a new leader, or
/// the leader when the watch starts), `proclaimed` (the same leader, a new
/// value) or `none` (nobody leads).
fn change(before: Option<&Option<Leader>>, now: &Option<Leader>) -> &'static str {
    match (before, now) {
        (_, None) => "none",
        (Some(Some(was)), Some(is)) if was.fencing_token == is.fencing_token => "proclaimed",
        _ => "leader",
    }
}

/// While the observation keeps failing (it retries every 200 ms while etcd
/// is away), how often to say so.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Prints the leader and each change until Ctrl-C, or until nobody reads
/// the output any more (exit 0).
async fn follow(global: &Global, election: &Election, json: bool) -> Result<i32, Failure> {
    let name = election.name();
    let mut changes = election.observe();
    let watching = format!(
        "watching election {name} ({}) (Ctrl-C to stop)",
        distlock::layout::Keyspace::new(&global.namespace).election(name)
    );
    if !json && !show::emit(&watching) {
        return Ok(exit::SUCCESS);
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut last: Option<Option<Leader>> = None;
    let mut warned: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            _ = &mut interrupted => return Ok(exit::SUCCESS),
            next = changes.next() => next,
        };
        let leader = match next {
            Some(Ok(leader)) => leader,
            Some(Err(err)) => {
                // The observation retries on its own: say so once, and again
                // every WARN_EVERY while it lasts.
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    eprintln!("distlock: warning: {}; still watching", exit::chain(&err));
                    warned = Some(Instant::now());
                }
                continue;
            }
            None => {
                return Err(Failure::new(
                    exit::UNAVAILABLE,
                    "the observation of the election ended",
                ))
            }
        };
        warned = None;
        if last.as_ref() == Some(&leader) {
            continue;
        }
        if !show::emit(&change_line(name, last.as_ref(), &leader, json)) {
            return Ok(exit::SUCCESS);
        }
        last = Some(leader);
    }
}

/// The line for `leader`, after `before`: a *change* object with `json`,
/// else `TIME  WORD  NAME  value=".." token=N`.
fn change_line(
    name: &str,
    before: Option<&Option<Leader>>,
    leader: &Option<Leader>,
    json: bool,
) -> String {
    let kind = change(before, leader);
    let now = SystemTime::now();
    if json {
        let leader = leader.as_ref().map_or(Value::Null, |l| {
            show::leader_json(&l.value, l.fencing_token)
        });
        let line = json!({
            "time": show::timestamp(Some(now)),
            "name": name,
            "change": kind,
            "leader": leader,
        });
        return line.to_string();
    }
    let detail = leader.as_ref().map_or(String::new(), |l| {
        format!(
            "  value={} token={}",
            show::value(&l.value),
            l.fencing_token
        )
    });
    let word = if kind == "none" { "no leader" } else { kind };
    format!("{}  {word:<10}  {name}{detail}", show::clock(now))
}

/// Prints a line (flushed: a reader sees each change as it happens);
/// whether stdout still takes it (false: the reader is gone, as after
/// `| head -1`, and there is nobody left to watch for).
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_named_after_what_came_before() -> distlock::Result<()> {
        let manager = distlock::LockManager::in_memory();
        let election = manager.new_election("e", LockOptions::default())?;
        let leading = election.campaign("a").await?;
        let a = election.leader().await?;
        leading.proclaim("a2").await?;
        let a2 = election.leader().await?;
        leading.resign().await?;
        let nobody = election.leader().await?;
        let next = election.campaign("b").await?;
        let b = election.leader().await?;
        assert_eq!(change(None, &a), "leader", "the leader at start");
        assert_eq!(change(None, &nobody), "none");
        assert_eq!(change(Some(&a), &a2), "proclaimed");
        assert_eq!(change(Some(&a2), &nobody), "none");
        assert_eq!(change(Some(&nobody), &b), "leader");
        assert_eq!(
            change(Some(&a2), &b),
            "leader",
            "a new token is a new leader"
        );
        next.resign().await
    }
}
